"""Evaluation outputs: files in an output directory, markdown and terminal tables."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CftrecError
from ..files import read_json
from .metrics import CUTOFFS, METRICS, metric_names

COMMAND = "evaluate"  # what the marker of an evaluation's output folders names
RESULTS_FILE = "results.json"
CASES_FILE = "cases.jsonl"
TABLE_FILE = "results.md"
PLOT_FILE = "popularity.png"
METRIC_LABELS = {"ndcg": "NDCG", "hr": "HR"}


def read_results(out_dir: str | Path) -> tuple[dict, list[dict]]:
    """results.json and the per-case records of an evaluation output directory."""
    out_dir = Path(out_dir)
    for name in (RESULTS_FILE, CASES_FILE):
        if not (out_dir / name).exists():
            raise CftrecError(f"{out_dir}: not a cftrec evaluation output (missing {name})")
    results = read_json(out_dir / RESULTS_FILE, expect=dict)
    cases = []
    with open(out_dir / CASES_FILE, "rb") as handle:  # bytes: a bad line is named exactly
        for number, raw in enumerate(handle, start=1):
            where = f"{out_dir / CASES_FILE}:{number}"
            try:
                case = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise CftrecError(f"{where}: not UTF-8 text") from None
            except json.JSONDecodeError as error:
                raise CftrecError(f"{where}: bad JSON ({error.msg})") from None
            if not isinstance(case, dict):
                raise CftrecError(f"{where}: not a JSON object")
            cases.append(case)
    return results, cases


def write_cases(path: Path, cases: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")


def available_cutoffs(results: dict) -> list[int]:
    """The cutoffs an evaluation decides. results.json files written before `cutoffs` was
    recorded hold every cutoff: there only K up to the list length is trusted."""
    if "cutoffs" in results:
        return list(results["cutoffs"])
    return [k for k in CUTOFFS if k <= results.get("list_length", max(CUTOFFS))]


def available_metrics(results: dict) -> list[str]:
    """Names of the metrics an evaluation decides ("ndcg@10", ...)."""
    return [name for name in metric_names(available_cutoffs(results)) if name in results["metrics"]]


def _not_available(results: dict) -> str | None:
    missing = [k for k in CUTOFFS if k not in available_cutoffs(results)]
    if not missing:
        return None
    return (
        ", ".join(f"@{k}" for k in missing)
        + f" not available: lists hold {results['list_length']} titles"
    )


def summary_rows(results: dict) -> list[tuple[str, str]]:
    """The non-ranking figures shown under the metric table, then the protocol notes."""
    return _figure_rows(results) + protocol_rows(results)


def _figure_rows(results: dict) -> list[tuple[str, str]]:
    cases = str(results["num_cases"])
    groups = results.get("by_target")
    if groups:
        cases += " (" + ", ".join(f"{g} targets {v['num_cases']}" for g, v in groups.items()) + ")"
    rows = [("cases", cases), ("invalid rate", f"{results['invalid_rate']:.4f}")]
    rows.append(("coverage@10", f"{results['coverage@10']:.4f}"))
    rows.append(("mean popularity@10", f"{results['mean_popularity@10']:.1f}"))
    note = _not_available(results)
    if note:
        rows.append(("metrics", note))
    return rows


def protocol_rows(results: dict) -> list[tuple[str, str]]:
    """History exclusion and search check, when they applied (long: a line each)."""
    rows = []
    exclusion = results.get("exclude_history")
    if exclusion:
        rows.append(
            ("history excluded", f"{exclusion['note']}; {exclusion['targets_in_history']} "
             "targets were history titles (misses)")
        )  # fmt: skip
    check = results.get("search_check")
    if check:
        rows.append(("search error", _search_error(check)))
    return rows


def _search_error(check: dict) -> str:
    """One line: how often beam search missed the exact top K, its recall, the score gap."""
    cutoffs = check["cutoffs"]
    differs = ", ".join(f"@{k} {check[f'differs@{k}']:.0%}" for k in cutoffs)
    recall = ", ".join(f"@{k} {check[f'recall@{k}']:.3f}" for k in cutoffs)
    return (
        f"{check['num_cases']} cases ranked exactly; beam top-K differs {differs}; "
        f"exact top-K recall {recall}; score gap mean {check['score_gap_mean']:.4f}, "
        f"max {check['score_gap_max']:.4f}"
    )


def metric_rows(results: dict) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """(cutoffs, [(row label, cells)]): every metric over all cases, then, when the dataset has
    cold items, over the warm and over the cold test targets ("n/a" for a group without cases)."""
    cutoffs = available_cutoffs(results)
    groups = {"": results["metrics"]}
    groups |= {f" {g}": v["metrics"] for g, v in results.get("by_target", {}).items()}
    rows = []
    for metric in METRICS:
        for suffix, values in groups.items():
            cells = [f"{values[f'{metric}@{k}']:.4f}" if values else "n/a" for k in cutoffs]
            rows.append((METRIC_LABELS[metric] + suffix, cells))
    return cutoffs, rows


def metrics_markdown(results: dict, name: str = "") -> str:
    cutoffs, rows = metric_rows(results)
    lines = [f"## {name}" if name else "## Evaluation", ""]
    lines.append("| metric | " + " | ".join(f"@{k}" for k in cutoffs) + " |")
    lines.append("|---|" + "---|" * len(cutoffs))
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    lines.append("")
    lines += [f"- {label}: {value}" for label, value in summary_rows(results)]
    decoding = results.get("decoding")
    if decoding:
        lines.append("- decoding: " + ", ".join(f"{k}={v}" for k, v in decoding.items()))
    return "\n".join(lines) + "\n"


def metrics_table(results: dict, name: str = ""):
    from rich.table import Table

    cutoffs, rows = metric_rows(results)
    table = Table(title=name or None)
    table.add_column("metric")
    for k in cutoffs:
        table.add_column(f"@{k}", justify="right")
    for label, cells in rows:
        table.add_row(label, *cells)
    table.caption = "; ".join(f"{label} {value}" for label, value in _figure_rows(results))
    protocol = protocol_rows(results)
    if not protocol:
        return table
    from rich.console import Group
    from rich.text import Text

    return Group(table, *(Text(f"{label}: {value}") for label, value in protocol))


def comparison_table(comparison: dict):
    from rich.table import Table

    runs = comparison["runs"]
    several = runs != {"a": 1, "b": 1}
    pooled = f", {runs['a']} runs of A and {runs['b']} of B" if several else ""
    caption = comparison["test"]
    if comparison["unavailable_cutoffs"]:
        cutoffs = ", ".join(f"@{k}" for k in comparison["unavailable_cutoffs"])
        caption += f"; {cutoffs} not compared (not decided by both sides' lists)"
    table = Table(
        title=f"{comparison['b'] or 'B'} - {comparison['a'] or 'A'} over "
        f"{comparison['num_cases']} paired cases{pooled}",
        caption=caption,
    )
    columns = ("metric", "A", "B", "B - A", "95% CI", "p") + (
        ("A runs", "B runs") if several else ()
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, row in comparison["metrics"].items():
        low, high = row["ci95"]
        cells = [
            name, f"{row['a']:.4f}", f"{row['b']:.4f}", f"{row['diff']:+.4f}",
            f"[{low:+.4f}, {high:+.4f}]", f"{row['p_value']:.4f}",
        ]  # fmt: skip
        if several:
            cells += [" ".join(f"{v:.4f}" for v in row[f"{side}_runs"]) for side in ("a", "b")]
        table.add_row(*cells)
    return table
