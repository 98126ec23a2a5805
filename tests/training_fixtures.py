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


def run_cli(args: list[str]):
    """`cftrec ARGS` in this process -> its exit status (0 when it returns normally)."""
    from cftrec.cli import main

    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def save_untrained_llm_run(run_dir: Path, model, tokenizer, dataset) -> Path:
    """An `llm` run of `model` (an untrained tiny model) on `dataset`, as evaluate loads it."""
    from cftrec.prompts import PromptEncoder
    from cftrec.runs.llm import save_llm_run

    info = {"method": "sft", "prompt": PromptEncoder(tokenizer).config(), "max_history": 10,
            "dtype": "float32", "lora": None, "base_model": "tiny"}  # fmt: skip
    save_llm_run(run_dir, model=model, tokenizer=tokenizer, info=info, dataset=dataset,
                 config={}, metrics=[])  # fmt: skip
    return run_dir
