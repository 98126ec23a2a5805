"""More rows for the LLM runs of an experiment: D3 guidance by the experiment's own SASRec (its
scale chosen on validation users) and other decodings (wider beams, exact top-K).

Row names: "sasrec-h10" (SASRec given the LLM's history window: the control of the guided rows),
"cft+g" (guided, the suite's beams), "cft@50" / "cft+g@50" (50 beams), "cft exact" /
"cft+g exact" (the exact top 10, the tables' deepest cutoff: no search error); with
`extra_decodings_rows` "guided", only the guided rows get the extra decodings. The guidance
scale of each LLM run is the one of `settings.guidance_scales` with the best validation NDCG@10
on `settings.guidance_valid_users` seeded users (beam search as the suite's rows, history kept),
then used for all its guided rows under either protocol: like SASRec's early stopping, the scale
is part of the model.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CftrecError
from ..files import read_json
from .settings import TABLE_DEPTH, ExperimentSettings
from .steps import evaluate_step

SELECTION_METRIC = "ndcg@10"


def decoding_label(decoding: str) -> str:
    """ "beam:50" -> "@50", "exact" -> " exact": the suffix of a row decoded that way."""
    if decoding.startswith("beam:"):
        return f"@{int(decoding.removeprefix('beam:'))}"
    if decoding == "exact":
        return " exact"
    raise CftrecError(f"unknown extra decoding {decoding!r}; use beam:N or exact")


def decoding_args(decoding: str, settings: ExperimentSettings) -> list[str]:
    if decoding.startswith("beam:"):
        return ["--decoding", "beam", "--beams", decoding.removeprefix("beam:")]
    if decoding == "exact":
        return ["--decoding", "exact", "--list-length", str(TABLE_DEPTH)]
    return ["--decoding", settings.decoding, "--beams", str(settings.beams)]


def choose_guidance_scale(
    settings: ExperimentSettings, data: Path, run: Path, assistant: Path, work: Path, timings
) -> dict:
    """Evaluate every scale of the grid on the validation sample; the best NDCG@10 wins (the
    first of the grid on a tie). -> {"chosen", "scores" (per scale), "validation_users"}."""
    scores = {}
    for scale in settings.guidance_scales:
        out = work / f"scale-{scale:g}"
        timings[f"select guidance {run.name} {scale:g}"] = evaluate_step(
            settings, data, run, out,
            f"Guidance scale {scale:g} for {run.name} on {settings.guidance_valid_users} "
            "validation users",
            ["--sample", str(settings.guidance_valid_users),
             "--sample-seed", str(settings.seed), "--assistant", str(assistant),
             "--guidance-scale", f"{scale:g}",
             *decoding_args(settings.decoding, settings)],
            split="valid",
        )  # fmt: skip
        scores[f"{scale:g}"] = read_json(out / "results.json")["metrics"][SELECTION_METRIC]
    chosen = max(settings.guidance_scales, key=lambda s: scores[f"{s:g}"])
    return {
        "chosen": chosen,
        "metric": SELECTION_METRIC,
        "scores": scores,
        "validation_users": settings.guidance_valid_users,
    }


def variant_rows(
    settings: ExperimentSettings, data: Path, names: dict[str, str], out: Path, timings
) -> tuple[list[str], dict]:
    """Evaluate the extra rows into out/results/ROW; -> (row names, the chosen guidance per LLM
    run)."""
    runs, results = out / "runs", settings.results_dir(out)
    llm_rows = [names[m] for m in ("sft", "cft") if m in names]
    guided = settings.guided and bool(llm_rows)
    if guided and "sasrec" not in names:
        raise CftrecError("guided rows need the experiment's SASRec run: add 'sasrec' to methods")
    rows, guidance = [], {}
    if guided:
        control = window_control(settings, data, names, out, timings)
        rows += [control] if control else []
    for name in llm_rows:
        variants = [(name, [])]
        if guided:
            guidance[name] = choose_guidance_scale(
                settings, data, runs / name, runs / names["sasrec"],
                out / "guidance-selection" / name, timings,
            )  # fmt: skip
            guided_args = ["--assistant", str(runs / names["sasrec"]),
                           "--guidance-scale", f"{guidance[name]['chosen']:g}"]  # fmt: skip
            variants.append((f"{name}+g", guided_args))
        for base, extra in variants:
            decodings = [None] if base != name else []
            if base != name or settings.extra_decodings_rows == "all":
                decodings += list(settings.extra_decodings)
            for decoding in decodings:
                row = base + (decoding_label(decoding) if decoding else "")
                timings[f"evaluate {row}"] = evaluate_step(
                    settings, data, runs / name, results / row,
                    f"Evaluate {row} on the test cases",
                    [*extra, *decoding_args(decoding or settings.decoding, settings)],
                )  # fmt: skip
                rows.append(row)
    return rows, guidance


def window_control(
    settings: ExperimentSettings, data: Path, names: dict[str, str], out: Path, timings
) -> str | None:
    """SASRec given the LLM's history window: a guided row hands its assistant the LLM prompt's
    last N items, while SASRec alone reads up to its own max_history (50), so "guidance beats
    SASRec" is only about the LLM against this row ("sasrec-h10"). None when the windows agree."""
    runs, results = out / "runs", settings.results_dir(out)
    llm = next(names[m] for m in ("sft", "cft") if m in names)
    window = read_json(runs / llm / "run.json").get("max_history")
    sasrec = names["sasrec"]
    if window is None or window == read_json(runs / sasrec / "run.json").get("max_history"):
        return None
    row = f"{sasrec}-h{window}"
    timings[f"evaluate {row}"] = evaluate_step(
        settings, data, runs / sasrec, results / row,
        f"Evaluate {sasrec} with the LLM's {window}-item history window",
        ["--max-history", str(window), *decoding_args(settings.decoding, settings)],
    )  # fmt: skip
    return row


def best_llm_row(scores: dict[str, float | None]) -> str | None:
    """The LLM row with the best SELECTION_METRIC among the rows that decide it, None when none
    does: under --exclude-history a beam list loses its history's titles, and when some list
    then holds fewer than 10 titles NDCG@10 is not decided (a missing title might have ranked
    there)."""
    decided = {row: score for row, score in scores.items() if score is not None}
    return max(decided, key=decided.__getitem__) if decided else None


def best_llm_row_pairs(rows: list[str], score, compare) -> dict:
    """The best LLM row (best_llm_row over `score(row)`) against each SASRec row:
    {"BEST vs SASREC": compare(SASREC, BEST)}; empty when no LLM row decides the metric."""
    sasrec_rows, llm_rows = sasrec_and_llm_rows(rows)
    best = best_llm_row({row: score(row) for row in llm_rows})
    return {f"{best} vs {sasrec}": compare(sasrec, best) for sasrec in sasrec_rows} if best else {}


def sasrec_and_llm_rows(rows: list[str]) -> tuple[list[str], list[str]]:
    """(the SASRec rows: SASRec and its window control, the LLM rows) among a table's rows."""
    sasrec = [r for r in rows if r.startswith("sasrec")]
    return sasrec, [r for r in rows if r != "pop" and r not in sasrec]


def counterpart(row: str, names: dict[str, str], rows: list[str]) -> str | None:
    """The sft row a cft row is compared with: the same guidance and decoding."""
    cft, sft = names.get("cft"), names.get("sft")
    if cft is None or sft is None or not row.startswith(cft):
        return None
    other = sft + row.removeprefix(cft)
    return other if other in rows else None
