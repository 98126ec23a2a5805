"""How popular the recommended titles are, against the users' histories and targets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def mean_popularity(
    ranked_lists: Iterable[Sequence[str]], popularity: Mapping[str, int], k: int = 10
) -> float:
    """Mean train-interaction count of the titles in the top-k lists (every slot counts)."""
    counts = [popularity.get(title, 0) for titles in ranked_lists for title in titles[:k]]
    return sum(counts) / len(counts) if counts else 0.0


def plot_popularity(
    path: str | Path,
    popularity: Mapping[str, int],
    recommended: Sequence[str],
    histories: Sequence[str],
    targets: Sequence[str],
    title: str = "",
) -> None:
    """PNG: distribution of log10(1 + train count) of recommended, history and target titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = {"recommended (top-10)": recommended, "histories": histories, "targets": targets}
    values = {name: np.log10(1 + np.array([popularity.get(t, 0) for t in titles], dtype=float))
              for name, titles in groups.items() if len(titles)}  # fmt: skip
    top = max((v.max() for v in values.values()), default=1.0)
    bins = np.linspace(0, max(top, 1e-6), 31)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, data in values.items():
        ax.hist(data, bins=bins, density=True, histtype="step", linewidth=1.6, label=name)
    ax.set_xlabel("log10(1 + train interactions of the title)")
    ax.set_ylabel("density")
    ax.set_title(title or "Popularity of recommended titles vs histories and targets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
