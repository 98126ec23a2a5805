"""`cftrec data stats`: the numbers that describe a prepared dataset."""

from __future__ import annotations

from typing import Any

from .dataset import SPLITS, Dataset


def dataset_stats(dataset: Dataset, max_history: int | None = None) -> dict[str, Any]:
    """Counts from the dataset's content; drop counts from meta.json (what prepare removed)."""
    max_history = max_history or dataset.meta.get("options", {}).get("max_history", 10)
    catalog = dataset.catalog
    samples = {split: dataset.samples(split, max_history) for split in SPLITS}
    histories = [len(s.history) for split in SPLITS for s in samples[split]]
    recorded = dataset.meta.get("counts", {})
    users = int(dataset.interactions["user_id"].nunique())
    cold = dataset.cold_items
    cold_options = dataset.meta.get("cold_items", {})
    return {
        "path": str(dataset.path),
        "source": dataset.meta.get("source"),
        "split": dataset.meta.get("options", {}).get("split"),
        "users": users,
        "items": len(catalog),
        "interactions": len(dataset.interactions),
        "samples": {split: len(samples[split]) for split in SPLITS},
        "distinct_titles": len(catalog.titles),
        "shared_titles": catalog.shared_titles,
        "items_with_shared_title": sum(
            len(ids) for ids in catalog.items_of_title.values() if len(ids) > 1
        ),
        "dropped_items": recorded.get("dropped_items", 0),
        "dropped_items_by_reason": recorded.get("dropped_items_by_reason", {}),
        "dropped_interactions": recorded.get("dropped_interactions", 0),
        "dropped_users": recorded.get("dropped_users", 0),
        "duplicate_item_rows": recorded.get("duplicate_item_rows", 0),
        "cold_items": len(cold),
        "cold_fraction": cold_options.get("fraction"),
        "cold_seed": cold_options.get("seed"),
        "cold_cases": {split: sum(s.target in cold for s in samples[split]) for split in SPLITS},
        "max_history": max_history,
        "avg_history_length": round(sum(histories) / len(histories), 4) if histories else 0.0,
        "avg_sequence_length": round(len(dataset.interactions) / users, 4) if users else 0.0,
        "fingerprint": dataset.fingerprint,
    }


def stats_table(stats: dict[str, Any]):
    """A rich table for people."""
    from rich.table import Table

    table = Table(title=f"{stats['path']} ({stats['source']}, split {stats['split']})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key in (
        "users",
        "items",
        "interactions",
        "distinct_titles",
        "shared_titles",
        "items_with_shared_title",
        "dropped_items",
        "dropped_interactions",
        "dropped_users",
        "duplicate_item_rows",
    ):
        table.add_row(key.replace("_", " "), f"{stats[key]:,}")
    for split, count in stats["samples"].items():
        table.add_row(f"{split} samples", f"{count:,}")
    if stats["cold_items"]:
        table.add_row(
            "cold items",
            f"{stats['cold_items']:,} (fraction {stats['cold_fraction']} of the titles, "
            f"seed {stats['cold_seed']})",
        )
        for split in ("valid", "test"):
            table.add_row(f"cold {split} cases", f"{stats['cold_cases'][split]:,}")
    table.add_row(
        f"avg history length (max {stats['max_history']})", f"{stats['avg_history_length']:.2f}"
    )
    table.add_row("avg sequence length", f"{stats['avg_sequence_length']:.2f}")
    return table
