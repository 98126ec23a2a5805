"""Tiny synthetic datasets for the training tests (not a test module itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

TITLES = [
    "Toy Story (1995)",
    "Heat (1995)",
    "Casino (1995)",
    "Babe (1995)",
    "Fargo (1996)",
    "Scream (1996)",
    "Contact (1997)",
    "Titanic (1997)",
]


def write_tiny_dataset(out_dir: Path, users: int = 12, length: int = 6) -> Path:
    """Users walk the catalogue in a fixed cycle (learnable), leave-one-out split."""
    import pandas as pd

    from cftrec.data.dataset import write_dataset

    items = pd.DataFrame({"item_id": [str(i) for i in range(len(TITLES))], "title": TITLES})
    rows = []
    for user in range(users):
        for position in range(length):
            split = (
                "test" if position == length - 1 else "valid" if position == length - 2 else "train"
            )
            item = (user + position) % len(TITLES)
            rows.append((f"u{user}", str(item), position, split))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    return write_dataset(out_dir, items, interactions, {"source": "synthetic"})


@pytest.fixture(autouse=True)
def one_thread():
    """Two torch threads on a shared 2-core machine are ~10x slower than one for tiny models."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
