"""`evaluate --reuse-lists EARLIER`: score the beam lists of an earlier evaluation again, under
this evaluation's protocol, without decoding.

`--exclude-history` removes the history's titles from a beam list after the search, so the
beam search itself is the same with and without it; on Amazon Toys a 10-beam row of 2,000 users
takes hours on a CPU, and both protocols are reported. The lists are taken only from an
evaluation of the same run (its run.json unchanged), data, cases and decoding settings (the
assistant's run.json unchanged too).
"""

from __future__ import annotations

from pathlib import Path

from ..data.dataset import Dataset
from ..errors import CftrecError
from ..runs.info import run_json_digest
from .report import read_results

# settings that do not change a beam list (only how it is filtered or checked afterwards)
NOT_DECODING = ("exclude_history", "batch_size", "check_search", "reuse_lists")
SUMMARY_FIELDS = ("target_title", "rank", "cold", "search_check")  # recomputed, or not reused


def _decoding_settings(settings: dict) -> dict:
    """The settings that shape a beam list, the assistant named by its resolved path (the same
    run however the command spelled it)."""
    kept = {k: v for k, v in settings.items() if k not in NOT_DECODING}
    if kept.get("assistant"):
        kept["assistant"] = str(Path(kept["assistant"]).resolve())
    return kept


def reused_records(
    source: str | Path,
    run_dir: str | Path,
    dataset: Dataset,
    case_ids: list[str],
    applied: dict,
    max_history: int,
) -> list[dict]:
    """The per-case records of the evaluation in `source`, checked to be this evaluation's
    lists (`applied`: this evaluation's applied settings), unfiltered by any protocol."""
    earlier, records = read_results(source)
    decoding = earlier.get("decoding") or {}
    if decoding.get("method") != "beam":
        raise CftrecError(f"{source}: --reuse-lists takes the output of a beam evaluation")
    same = {
        "run": Path(earlier["run"]["path"]).resolve() == Path(run_dir).resolve(),
        "run.json": earlier["run"].get("run_json_sha256") == run_json_digest(run_dir),
        "assistant's run.json": earlier["run"].get("assistant_json_sha256")
        == (run_json_digest(applied["assistant"]) if "assistant" in applied else None),
        "data": earlier["data"]["fingerprint"] == dataset.fingerprint,
        "max_history": earlier["data"]["max_history"] == max_history,
        "cases": earlier.get("case_ids") == case_ids,
    }
    mine, theirs = _decoding_settings(applied), _decoding_settings(earlier.get("settings", {}))
    same |= {name: mine.get(name) == theirs.get(name) for name in set(mine) | set(theirs)}
    differ = sorted(name for name, equal in same.items() if not equal)
    if differ:
        raise CftrecError(
            f"{source}: not an evaluation of the same lists (differs in {', '.join(differ)}); "
            "decode instead"
        )
    if [r.get("case_id") for r in records] != case_ids:
        raise CftrecError(f"{source}: cases.jsonl does not hold the cases results.json names")
    if earlier.get("settings", {}).get("exclude_history") and not applied["exclude_history"]:
        raise CftrecError(
            f"{source}: its lists lost the history's titles (--exclude-history); "
            "a history-kept evaluation must decode"
        )
    return [{k: v for k, v in r.items() if k not in SUMMARY_FIELDS} for r in records]
