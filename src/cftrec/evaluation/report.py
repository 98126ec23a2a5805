"""Evaluation outputs: files in an output directory, markdown and terminal tables."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CftrecError
from ..io import read_json
from .metrics import CUTOFFS, METRICS

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
    results = read_json(out_dir / RESULTS_FILE)
    cases = []
    with open(out_dir / CASES_FILE, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                cases.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise CftrecError(
                    f"{out_dir / CASES_FILE}:{number}: bad JSON ({error.msg})"
                ) from None
    return results, cases


def write_cases(path: Path, cases: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case, ensure_ascii=False) + "\n")


def summary_rows(results: dict) -> list[tuple[str, str]]:
    """The non-ranking figures shown under the metric table."""
    rows = [
        ("cases", str(results["num_cases"])),
        ("invalid rate", f"{results['invalid_rate']:.4f}"),
    ]
    rows.append(("coverage@10", f"{results['coverage@10']:.4f}"))
    rows.append(("mean popularity@10", f"{results['mean_popularity@10']:.1f}"))
    return rows


def metrics_markdown(results: dict, name: str = "") -> str:
    metrics = results["metrics"]
    cutoffs = [k for k in CUTOFFS if f"hr@{k}" in metrics]
    lines = [f"## {name}" if name else "## Evaluation", ""]
    lines.append("| metric | " + " | ".join(f"@{k}" for k in cutoffs) + " |")
    lines.append("|---|" + "---|" * len(cutoffs))
    for metric in METRICS:
        values = " | ".join(f"{metrics[f'{metric}@{k}']:.4f}" for k in cutoffs)
        lines.append(f"| {METRIC_LABELS[metric]} | {values} |")
    lines.append("")
    lines += [f"- {label}: {value}" for label, value in summary_rows(results)]
    decoding = results.get("decoding")
    if decoding:
        lines.append("- decoding: " + ", ".join(f"{k}={v}" for k, v in decoding.items()))
    return "\n".join(lines) + "\n"


def metrics_table(results: dict, name: str = ""):
    from rich.table import Table

    metrics = results["metrics"]
    cutoffs = [k for k in CUTOFFS if f"hr@{k}" in metrics]
    table = Table(title=name or None)
    table.add_column("metric")
    for k in cutoffs:
        table.add_column(f"@{k}", justify="right")
    for metric in METRICS:
        table.add_row(METRIC_LABELS[metric], *(f"{metrics[f'{metric}@{k}']:.4f}" for k in cutoffs))
    caption = ", ".join(f"{label} {value}" for label, value in summary_rows(results))
    table.caption = caption
    return table


def comparison_table(comparison: dict):
    from rich.table import Table

    table = Table(
        title=f"{comparison['b'] or 'B'} - {comparison['a'] or 'A'} over "
        f"{comparison['num_cases']} paired cases",
        caption=comparison["test"],
    )
    for column in ("metric", "A", "B", "B - A", "95% CI", "p"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, row in comparison["metrics"].items():
        low, high = row["ci95"]
        table.add_row(
            name, f"{row['a']:.4f}", f"{row['b']:.4f}", f"{row['diff']:+.4f}",
            f"[{low:+.4f}, {high:+.4f}]", f"{row['p_value']:.4f}",
        )  # fmt: skip
    return table
