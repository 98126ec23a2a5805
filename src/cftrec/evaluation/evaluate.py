"""The evaluation runner behind `cftrec evaluate`: any run kind, full ranking at title level.

Cases are the `split` samples of the dataset in a fixed order (optionally those of a seeded
sample of `sample` users, and then the first `limit`).

With `exclude_history` the titles of a case's history are left out of its ranking (the protocol
of most published SASRec/TIGER evaluations; a target that repeats a history title then counts as
a miss), as if they had left the catalogue: lists that rank as far as asked (popularity,
SASRec, exhaustive scoring, grounding) are asked for that many more titles and lose them; beam
and exact search skip them while they search, so a beam list still holds `beams` titles.
`check_search` N measures the search error of beam decoding on a seeded sample
of N cases against the exact ranking (search_check.py).
Under `accelerate launch` (or torchrun) the cases are split across processes in contiguous
shards and gathered on the main process, which computes the metrics and writes the output
directory. (On a CPU-only machine, `accelerate launch --cpu --num_processes N` starts N processes
only through mpirun; `accelerate launch --multi_gpu --num_processes N` uses torch's launcher and
works there too, the processes then joining a gloo group.)
Finished cases are kept beside the output as the evaluation goes, so a stopped one continues
(`resume`, progress.py).

  results.json    metrics (ndcg@K, hr@K for the cutoffs K the lists decide: K up to the list
                  length, every K for lists of the whole catalogue; the others are listed under
                  unavailable_cutoffs), num_cases, invalid_rate, coverage, popularity, run and
                  data fingerprints, the settings that applied, case ids; with cold items in
                  the dataset, by_target: the metrics of warm and of cold test targets;
                  with check_search, search_check
  results.md      the metric table
  cases.jsonl     one line per case (fields in README, "Evaluation outputs")
  popularity.png  popularity of recommended titles vs histories and targets
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..data.dataset import DEFAULT_MAX_HISTORY, Dataset, Sample
from ..decoding.methods import (
    DECODING_METHODS,
    check_exact_applies,
    decoding_method,
    resolve_beams,
)
from ..errors import CftrecError
from ..files import check_output
from .metrics import LIST_LENGTH
from .progress import EvaluationProgress, evaluation_identity
from .report import COMMAND
from .search_check import case_check, checked_case_ids, exact_scores, search_cutoffs
from .summary import applied_settings, summarise, write_outputs

log = logging.getLogger(__name__)


@dataclass
class EvaluationSettings:
    split: str = "test"
    decoding: str = "beam"
    beams: int | None = None  # None: the decoding's default (cftrec.decoding.methods)
    limit: int | None = None
    sample: int | None = None  # a seeded sample of this many users (all their cases)
    sample_seed: int = 0
    batch_size: int = 8
    assistant: str | None = None
    guidance_scale: float = 1.0
    length_penalty: float = 0.0
    max_history: int | None = None
    allow_data_mismatch: bool = False
    dtype: str | None = None
    exclude_history: bool = False  # remove the history's titles from each ranking
    check_search: int | None = None  # measure beam search error on this many seeded cases
    list_length: int = LIST_LENGTH  # titles per list: NDCG/HR up to @list_length


def evaluation_cases(
    dataset: Dataset,
    split: str,
    max_history: int,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
) -> list[tuple[str, Sample]]:
    """(case id, sample) in the dataset's fixed order; a case id is "user#n" (the user's n-th
    sample of this split), stable for a given dataset. `sample` keeps the cases of a seeded
    random sample of users (the same users for every run on the same dataset and seed)."""
    import random

    seen: dict[str, int] = {}
    cases = []
    for case in dataset.samples(split, max_history):
        n = seen.get(case.user_id, 0)
        seen[case.user_id] = n + 1
        cases.append((f"{case.user_id}#{n}", case))
    if sample is not None and sample < len(seen):
        chosen = set(random.Random(sample_seed).sample(sorted(seen), sample))
        cases = [(case_id, case) for case_id, case in cases if case.user_id in chosen]
    return cases[:limit] if limit is not None else cases


def _check_settings(settings: EvaluationSettings, kind: str) -> None:
    method = decoding_method(settings.decoding)  # a CftrecError when unknown
    if settings.beams < 1 or settings.batch_size < 1 or settings.list_length < 1:
        raise CftrecError("--beams, --batch-size and --list-length must be at least 1")
    if settings.limit is not None and settings.limit < 1:
        raise CftrecError("--limit must be at least 1")
    if settings.sample is not None and settings.sample < 1:
        raise CftrecError("--sample must be at least 1")
    if settings.assistant and kind != "llm":
        raise CftrecError(f"--assistant guides LLM decoding; this run is a '{kind}' run")
    if settings.assistant and not method.guidance:
        guided = " or ".join(m.name for m in DECODING_METHODS.values() if m.guidance)
        raise CftrecError(f"--assistant works with --decoding {guided} only")
    if kind == "llm" and settings.decoding == "exact":
        check_exact_applies(
            settings.length_penalty, settings.guidance_scale if settings.assistant else None
        )
    if settings.check_search is not None:
        if settings.check_search < 1:
            raise CftrecError("--check-search must be at least 1")
        if kind != "llm" or settings.decoding != "beam":
            raise CftrecError(
                "--check-search measures the search error of beam decoding: use it with an "
                f"LLM run and --decoding beam (this is a '{kind}' run"
                + (f" with --decoding {settings.decoding})" if kind == "llm" else ")")
            )


def _decode_cases(
    recommender, kind, cases, settings, assistant, checked, progress, on_batch=None
) -> list[dict]:
    """Recommend for `cases` in batches -> one record per case (not yet ranked); the cases
    whose id is in `checked` get a "search_check" (their beam list against the exact one).
    `on_batch(seconds, records)` is called with each finished batch."""
    from tqdm.auto import tqdm

    catalog = recommender.catalog
    cutoffs = search_cutoffs(settings.beams, len(catalog.titles))
    records = []
    starts = range(0, len(cases), settings.batch_size)
    for start in tqdm(starts, desc="evaluating", unit="batch", disable=not progress):
        began_batch = time.perf_counter()
        batch = cases[start : start + settings.batch_size]
        histories = [list(sample.history) for _, sample in batch]
        excluded = [
            set(catalog.titles_for(history)) if settings.exclude_history else set()
            for history in histories
        ]
        generations = None
        if kind == "llm":  # the LLM's decoding leaves the excluded titles out itself
            decoded = recommender.decode(
                histories, k=settings.list_length, num_beams=settings.beams,
                method=settings.decoding, batch_size=settings.batch_size, assistant=assistant,
                guidance_scale=settings.guidance_scale, exclude_history=settings.exclude_history,
            )  # fmt: skip
            lists, generations = decoded.recommendations, decoded.generations or None
        else:  # ranked further, so list_length titles are left once the excluded are removed
            k = settings.list_length + max(map(len, excluded))
            lists = recommender.recommend(histories, k=k, exclude_history=False)
        for row, ((case_id, sample), recs) in enumerate(zip(batch, lists, strict=True)):
            kept = [r for r in recs if r.title not in excluded[row]][: settings.list_length]
            record = {
                "case_id": case_id,
                "user_id": sample.user_id,
                "history": list(sample.history),
                "target": sample.target,
                "titles": [r.title for r in kept],
                "scores": [round(r.score, 6) for r in kept],
            }
            if generations is not None:
                record["generations"] = [
                    {"text": text, "valid": valid} for text, valid in generations[row]
                ]
            records.append(record)
        rows = [row for row, (case_id, _) in enumerate(batch) if case_id in checked]
        if rows:
            began = time.perf_counter()
            exact = exact_scores(
                recommender, [histories[r] for r in rows], assistant, settings.guidance_scale
            )
            seconds = (time.perf_counter() - began) / len(rows)
            for row, scores in zip(rows, exact, strict=True):
                found = [catalog.index_of_title[r.title] for r in lists[row]]
                # the exact ranking of the titles this protocol leaves in the catalogue
                scores[[catalog.index_of_title[t] for t in excluded[row]]] = float("-inf")
                check = case_check(found, scores, cutoffs)
                check["exact_top"] = [catalog.titles[t] for t in check["exact_top"]]
                check["exact_s"] = round(seconds, 3)
                records[len(records) - len(batch) + row]["search_check"] = check
        if on_batch is not None:
            on_batch(time.perf_counter() - began_batch, records[len(records) - len(batch) :])
    return records


def evaluate(
    run_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path | None,
    settings: EvaluationSettings | None = None,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
) -> dict | None:
    """Evaluate a run; returns results.json's content on the main process (None elsewhere).
    `out_dir=None` writes nothing; `overwrite`: see cftrec.files.check_output (it also discards
    an unfinished evaluation's progress); `resume`: continue an unfinished evaluation into
    `out_dir` (progress.py)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from ..runs import load_recommender
    from ..runs.info import read_run_info

    settings = settings or EvaluationSettings()
    if settings.beams is None:
        settings = replace(settings, beams=resolve_beams(settings.decoding, None))
    inputs = (run_dir, data_dir, settings.assistant)
    if out_dir is not None:
        check_output(out_dir, COMMAND, inputs, overwrite)
        EvaluationProgress(out_dir).check(resume, overwrite)
    elif resume:
        raise CftrecError("resuming an evaluation needs its output folder")
    # Without a GPU, processes started by a launcher (accelerate launch --multi_gpu, torchrun)
    # join a CPU (gloo) group only when PartialState is told to use the CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    info = read_run_info(run_dir)
    kind = info["kind"]
    _check_settings(settings, kind)
    dataset = Dataset.load(data_dir)
    warnings = []
    if info.get("data_fingerprint") != dataset.fingerprint:
        message = (
            f"{run_dir} was trained on data with fingerprint {info.get('data_fingerprint')}, "
            f"but {data_dir} has fingerprint {dataset.fingerprint}"
        )
        if not settings.allow_data_mismatch:
            raise CftrecError(message + " (pass --allow-data-mismatch to evaluate anyway)")
        warnings.append(message)
        log.warning(message)
    max_history = settings.max_history or info.get("max_history") or DEFAULT_MAX_HISTORY
    cases = evaluation_cases(
        dataset, settings.split, max_history, settings.limit, settings.sample, settings.sample_seed
    )
    if not cases:
        raise CftrecError(f"{data_dir}: no '{settings.split}' cases to evaluate")

    options = {}
    if kind == "llm":
        options = {"batch_size": settings.batch_size, "length_penalty": settings.length_penalty,
                   "dtype": settings.dtype, "device": state.device}  # fmt: skip
    recommender = load_recommender(run_dir, **options)
    assistant = None
    if settings.assistant:
        assistant_info = read_run_info(settings.assistant)
        if assistant_info.get("data_fingerprint") != info.get("data_fingerprint"):
            raise CftrecError(
                f"the assistant {settings.assistant} was trained on other data than {run_dir}"
            )
        assistant = load_recommender(settings.assistant)
        if not hasattr(assistant, "title_log_probs"):
            raise CftrecError(f"{settings.assistant}: this run kind cannot act as an assistant")

    checked = set()
    if settings.check_search is not None:
        # the same seed as --sample: one seed for every choice of cases
        ids = [case_id for case_id, _ in cases]
        checked = checked_case_ids(ids, settings.check_search, settings.sample_seed)
    saved = None
    if out_dir is not None:
        saved = EvaluationProgress(out_dir, state.process_index)
        if state.is_main_process:
            identity = evaluation_identity(
                run_dir, dataset.fingerprint, recommender.catalog.titles, settings.assistant,
                applied_settings(settings, kind),
            )  # fmt: skip
            saved.prepare(identity, resume, overwrite)
        state.wait_for_everyone()
    try:
        earlier = saved.finished_batches() if saved else []
        done = {r["case_id"]: r for batch in earlier for r in batch["records"]}
        todo = [case for case in cases if case[0] not in done]
        start = time.perf_counter()
        with state.split_between_processes(todo) as shard:
            records = _decode_cases(
                recommender, kind, shard, settings, assistant, checked,
                progress and state.is_main_process, saved.record if saved else None,
            )  # fmt: skip
        records = gather_object(records) if state.num_processes > 1 else records
        elapsed = time.perf_counter() - start
        if not state.is_main_process:
            return None
        done.update((r["case_id"], r) for r in records)
        if len(done) != len(cases) or len(records) != len(todo):
            raise RuntimeError("gathered cases are incomplete")
        records = [done[case_id] for case_id, _ in cases]
        results = summarise(records, dataset, info, run_dir, data_dir, settings, max_history)
        results.update(
            elapsed_s=round(elapsed, 3),
            cases_per_s=round(len(todo) / elapsed, 3) if elapsed > 0 and todo else None,
            num_processes=state.num_processes,
            threads=torch.get_num_threads(),  # CPU threads per process (cftrec.threads)
            warnings=warnings,
        )
        if earlier:  # decoded by earlier, interrupted sessions (elapsed_s is this session's)
            results["resumed"] = {
                "cases": len(cases) - len(todo),
                "seconds": round(sum(batch["seconds"] for batch in earlier), 3),
            }
        if out_dir is not None:
            write_outputs(out_dir, results, records, dataset, inputs, overwrite)
    except BaseException:  # interrupted or failed: what was finished stays, for --resume
        if saved is not None:
            saved.abandon()
        raise
    if saved is not None:
        saved.remove()  # its cases are in the output now
    return results
