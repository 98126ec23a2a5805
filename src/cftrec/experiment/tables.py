"""Markdown tables of an experiment's summary: metrics per method, differences to sft."""

from __future__ import annotations

from .pipeline import METRIC_COLUMNS


def _format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def summary_table(summary: dict) -> str:
    """Markdown: one row per method with its metrics, and each metric's difference to the
    reference (sft) with the paired 95% interval and p-value."""
    reference = summary["reference"]
    header = [
        "method",
        "cases",
        *METRIC_COLUMNS,
        "coverage@10",
        "mean pop@10",
        f"ndcg@10 vs {reference} (95% CI, p)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, results in summary["metrics"].items():
        metrics = results["metrics"]
        cells = [method, str(results["num_cases"])]
        cells += [f"{metrics[name]:.4f}" if name in metrics else "n/a" for name in METRIC_COLUMNS]
        cells += [f"{results['coverage@10']:.3f}", f"{results['mean_popularity@10']:.0f}"]
        comparison = summary["comparisons"].get(method)
        if comparison is None:
            cells.append("reference")
        else:
            cells.append(_difference(comparison["metrics"].get("ndcg@10")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _difference(row: dict | None) -> str:
    """B - A [95% CI], p; "n/a" for a metric that was not compared (lists too short)."""
    if row is None:
        return "n/a"
    low, high = row["ci95"]
    return f"{row['diff']:+.4f} [{low:+.4f}, {high:+.4f}], p={_format_p(row['p_value'])}"
