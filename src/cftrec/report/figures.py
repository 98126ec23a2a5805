"""The report's plots, drawn by matplotlib into SVG images embedded as data URIs: the page needs
no network and no other file, and the plots stay sharp when a phone zooms in.

Each plot is small (about 5 x 3.3 inches, 10-point text) so that it stays legible at a phone's
width; a method keeps its colour in every plot (`colours`)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from .analysis import Breakdown

SIZE = (5.2, 3.3)  # inches


def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, layout="constrained")
    return figure, figure.subplots()


def svg_data_uri(figure) -> str:
    """The figure as an SVG data URI (no date in it: the same report gives the same bytes)."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "cftrec"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def colours(labels: Sequence[str]) -> dict[str, str]:
    """One colour per result label (matplotlib's tab10 cycle, then tab20)."""
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {
        label: matplotlib.colors.to_hex(palette(i % palette.N)) for i, label in enumerate(labels)
    }


def metric_at_cutoffs(
    metric: str, curves: dict[str, dict[int, float]], colour: dict[str, str]
) -> str:
    """One line per result: `metric`@K against K (the cutoffs each result decides)."""
    figure, ax = _figure()
    for label, values in curves.items():
        ks = sorted(values)
        ax.plot(ks, [values[k] for k in ks], marker="o", label=label, color=colour[label])
    all_ks = sorted({k for values in curves.values() for k in values})
    ax.set_xscale("log")
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.minorticks_off()
    ax.set(xlabel="K (length of the list read)", ylabel=f"{metric}@K", title=f"{metric}@K")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return svg_data_uri(figure)


def breakdown_bars(split: Breakdown, metric: str, xlabel: str, colour: dict[str, str]) -> str:
    """Grouped bars: `metric`@K ("NDCG" or "HR") per bucket, one bar per result."""
    figure, ax = _figure()
    index = {"NDCG": 1, "HR": 2}[metric]
    labels = list(split.values)
    width = 0.8 / max(len(labels), 1)
    for number, label in enumerate(labels):
        row = split.values[label]
        xs = [b + (number - (len(labels) - 1) / 2) * width for b in range(len(split.buckets))]
        heights = [row[bucket][index] if bucket in row else 0.0 for bucket in split.buckets]
        ax.bar(xs, heights, width, label=label, color=colour[label])
    ticks = []
    for bucket in split.buckets:  # the number of cases, where every result has the same
        counts = {row.get(bucket, (0,))[0] for row in split.values.values()}
        ticks.append(f"{bucket}\n({counts.pop()} cases)" if len(counts) == 1 else bucket)
    ax.set_xticks(range(len(split.buckets)), ticks, fontsize=8)
    ax.set(xlabel=xlabel, ylabel=f"{metric}@{split.cutoff}")
    ax.set_title(f"{metric}@{split.cutoff} by {xlabel}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return svg_data_uri(figure)


def popularity_distribution(
    recommended: dict[str, list[int]], targets: list[int], colour: dict[str, str]
) -> str:
    """Distribution of log10(1 + train interactions) of the recommended titles (top 10) of each
    result, beside the test targets'."""
    import numpy as np

    figure, ax = _figure()
    values = {label: np.log10(1 + np.array(counts, float)) for label, counts in recommended.items()}
    target_values = np.log10(1 + np.array(targets, float))
    top = max([v.max() for v in values.values() if v.size] + [target_values.max(initial=1.0)])
    bins = np.linspace(0, max(top, 1e-6), 26)
    for label, data in values.items():
        ax.hist(
            data,
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.6,
            label=label,
            color=colour[label],
        )
    ax.hist(
        target_values,
        bins=bins,
        density=True,
        histtype="stepfilled",
        alpha=0.2,
        color="grey",
        label="test targets",
    )
    ax.set(xlabel="log10(1 + train interactions of the title)", ylabel="density")
    ax.set_title("Popularity of the top-10 recommendations")
    ax.legend(fontsize=8)
    return svg_data_uri(figure)


def training_curves(label: str, log: list[dict]) -> str:
    """An LLM run's metrics.jsonl: training loss and its CFT terms (rec, cf) per step, and the
    validation loss (the recommendation loss on the validation samples)."""
    figure, ax = _figure()
    series = {
        "training loss": "loss",
        "rec (recommendation term)": "rec",
        "cf (counterfactual term)": "cf",
    }
    if not any(line.get("cf") for line in log):
        series = {"training loss": "loss"}  # sft: the loss is its recommendation term alone
    for name, key in series.items():
        points = [(line["step"], line[key]) for line in log if key in line and "step" in line]
        if points:
            ax.plot(*zip(*points, strict=True), label=name, linewidth=1.4)
    validation = [(line["step"], line["eval_loss"]) for line in log if "eval_loss" in line]
    if validation:
        ax.plot(
            *zip(*validation, strict=True),
            marker="o",
            linestyle="--",
            color="black",
            label="validation loss",
        )
    ax.set(xlabel="optimizer step", ylabel="loss", title=label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return svg_data_uri(figure)
