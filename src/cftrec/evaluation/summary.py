"""results.json from the per-case records of an evaluation, and the output folder written at once
(see evaluate.py for the files)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.dataset import Dataset
from ..decoding.methods import decoding_method
from ..files import atomic_directory, write_json
from ..provenance import provenance
from ..runs.info import run_json_digest
from .metrics import CUTOFFS, LIST_LENGTH, coverage, decided_cutoffs, mean_metrics, target_rank
from .popularity_bias import mean_popularity, plot_popularity
from .report import (
    CASES_FILE,
    COMMAND,
    PLOT_FILE,
    RESULTS_FILE,
    TABLE_FILE,
    metrics_markdown,
    write_cases,
)
from .search_check import search_cutoffs, summarise_checks

if TYPE_CHECKING:
    from .evaluate import EvaluationSettings


def applied_settings(settings: EvaluationSettings, kind: str) -> dict:
    """The settings that shaped this evaluation: decoding options only for LLM runs (beams
    not for exhaustive scoring), guidance only with an assistant, the sample seed only with a
    sample or a search check, the search check only when asked for, the list length only when
    not the default."""
    applied = asdict(settings)
    unused = set()
    if kind != "llm":
        unused |= {"decoding", "beams", "length_penalty", "dtype", "assistant", "guidance_scale"}
    if decoding_method(settings.decoding).default_beams is None:
        unused.add("beams")  # exact and exhaustive take no beams
    if not settings.assistant:
        unused |= {"assistant", "guidance_scale"}
    if settings.sample is None and settings.check_search is None:
        unused.add("sample_seed")
    if settings.check_search is None:
        unused.add("check_search")
    if settings.list_length == LIST_LENGTH:
        unused.add("list_length")  # the length of every evaluation before the option existed
    return {name: value for name, value in applied.items() if name not in unused}


def _by_target(records: list[dict], cutoffs) -> dict:
    """Metrics of the cases whose target is a warm (trained-on) item and of those whose target
    is a cold item (held out of training); None for a group without cases."""
    groups = {}
    for name, cold in (("warm", False), ("cold", True)):
        ranks = [r["rank"] for r in records if r["cold"] == cold]
        groups[name] = {
            "num_cases": len(ranks),
            "metrics": mean_metrics(ranks, cutoffs) if ranks else None,
        }
    return groups


def summarise(records, dataset, info, run_dir, data_dir, settings, max_history) -> dict:
    """Ranks, metrics and settings from the per-case records (adds "target_title", "rank"
    (None for a miss) and "cold" to each record)."""
    catalog = dataset.catalog
    cold_items = dataset.cold_items
    for record in records:
        record["target_title"] = catalog.title(record["target"])
        record["rank"] = target_rank(record["titles"], record["target_title"])
        record["cold"] = record["target"] in cold_items
    ranked = [r["titles"] for r in records]
    generations = [g for r in records for g in r.get("generations", [])]
    invalid = sum(not g["valid"] for g in generations) / len(generations) if generations else 0.0
    popularity = dataset.train_popularity()
    # Metrics at K are decided only where every list holds K titles (or every title it may
    # rank: the catalogue, less the history's titles when they are excluded): HR@50 of
    # 10-title beam lists would equal HR@10, not a full ranking's HR@50.
    num_titles = len(catalog.titles)
    excluded = [
        set(catalog.titles_for(r["history"])) if settings.exclude_history else set()
        for r in records
    ]
    list_length = min(len(t) for t in ranked)
    cutoffs = decided_cutoffs(
        (len(r["titles"]), num_titles - len(gone))
        for r, gone in zip(records, excluded, strict=True)
    )
    applied = applied_settings(settings, info["kind"])
    decoding = None
    if info["kind"] == "llm":
        names = ("beams", "length_penalty", "assistant", "guidance_scale")
        decoding = {"method": settings.decoding} | {n: applied[n] for n in names if n in applied}
    results = {
        "name": Path(run_dir).name,
        "metrics": mean_metrics([r["rank"] for r in records], cutoffs),
        "cutoffs": list(cutoffs),
        "unavailable_cutoffs": [k for k in CUTOFFS if k not in cutoffs],
        **({"by_target": _by_target(records, cutoffs)} if cold_items else {}),
        "num_cases": len(records),
        "invalid_rate": invalid,
        "coverage@10": coverage(ranked, len(catalog.titles), 10),
        "mean_popularity@10": mean_popularity(ranked, popularity, 10),
        "mean_popularity_history": mean_popularity(
            [catalog.titles_for(r["history"]) for r in records], popularity, k=10**9
        ),
        "mean_popularity_target": mean_popularity(
            [[r["target_title"]] for r in records], popularity, 1
        ),
        "list_length": list_length,
        "run": {
            "path": str(run_dir),
            "kind": info["kind"],
            "data_fingerprint": info.get("data_fingerprint"),
            "run_json_sha256": run_json_digest(run_dir),  # a retrained run differs
        },  # fmt: skip
        "data": {
            "path": str(data_dir),
            "fingerprint": dataset.fingerprint,
            "split": settings.split,
            "max_history": max_history,
            "limit": settings.limit,
            "sample": settings.sample,
            "sample_seed": settings.sample_seed,
        },  # fmt: skip
        "decoding": decoding,
        "settings": applied,
        "provenance": provenance(),
        "case_ids": [r["case_id"] for r in records],
    }
    if "assistant" in applied:  # a retrained assistant guides other lists
        results["run"]["assistant_json_sha256"] = run_json_digest(settings.assistant)
    if settings.exclude_history:
        results["exclude_history"] = {
            "note": "the titles of each case's history are left out of its ranking, as if they "
            "had left the catalogue (a search skips them while it fills its list)",
            "targets_in_history": sum(
                r["target_title"] in gone for r, gone in zip(records, excluded, strict=True)
            ),  # misses by this protocol
        }
    checked = [r for r in records if "search_check" in r]
    if checked:
        checks = [r["search_check"] for r in checked]
        results["search_check"] = summarise_checks(
            checks, search_cutoffs(settings.beams, num_titles)
        ) | {
            "seed": settings.sample_seed,
            "exact_s": round(sum(c["exact_s"] for c in checks), 3),
            "case_ids": [r["case_id"] for r in checked],
        }
    return results


def write_outputs(
    out_dir, results: dict, records: list[dict], dataset: Dataset, inputs=(), overwrite=False
) -> None:
    """All output files at once (temporary directory, then rename; `inputs`, `overwrite`: the
    output policy of cftrec.io.check_output)."""
    catalog = dataset.catalog
    popularity = dataset.train_popularity()
    with atomic_directory(out_dir, COMMAND, inputs, overwrite) as tmp:
        write_json(tmp / RESULTS_FILE, results)
        (tmp / TABLE_FILE).write_text(metrics_markdown(results, results["name"]), encoding="utf-8")
        write_cases(tmp / CASES_FILE, records)
        plot_popularity(
            tmp / PLOT_FILE,
            popularity,
            recommended=[t for r in records for t in r["titles"][:10]],
            histories=[t for r in records for t in catalog.titles_for(r["history"])],
            targets=[r["target_title"] for r in records],
            title=f"{results['name']}: popularity of recommended titles",
        )
