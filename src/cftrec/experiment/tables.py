"""Markdown tables of an experiment's summary: metrics per method, differences to sft."""

from __future__ import annotations

from .settings import METRIC_COLUMNS


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
    pairs = summary.get("pairs") or {}
    if pairs:  # cft vs sft under the same guidance and decoding; the best LLM row vs SASRec
        lines += ["", "| comparison | ndcg@10 (95% CI, p) | hr@10 (95% CI, p) |", "|---|---|---|"]
        for pair, comparison in pairs.items():
            cells = [_difference(comparison["metrics"].get(m)) for m in ("ndcg@10", "hr@10")]
            lines.append(f"| {pair} | {cells[0]} | {cells[1]} |")
    for name, chosen in (summary.get("guidance") or {}).items():
        grid = ", ".join(f"{scale}: {value:.4f}" for scale, value in chosen["scores"].items())
        lines.append(
            f"\nGuidance scale of {name}+g: {chosen['chosen']:g}, the best {chosen['metric']} "
            f"on {chosen['validation_users']} validation users ({grid})."
        )
    return "\n".join(lines)


def _difference(row: dict | None) -> str:
    """B - A [95% CI], p; "n/a" for a metric that was not compared (lists too short)."""
    if row is None:
        return "n/a"
    low, high = row["ci95"]
    return f"{row['diff']:+.4f} [{low:+.4f}, {high:+.4f}], p={_format_p(row['p_value'])}"
