"""`prepare --cold-items FRACTION --seed N`: a seeded fraction of the titles held out of
training, checked against the same dataset prepared without it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from cftrec.cli import main
from cftrec.data.dataset import Dataset
from cftrec.data.prepare import PrepareOptions, hold_out, prepare
from cftrec.data.stats import dataset_stats
from cftrec.errors import CftrecError


def write_sequences(folder: Path, seed: int = 0, users: int = 60, items: int = 40) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    lines = [
        " ".join(map(str, [user] + [rng.randrange(items) for _ in range(rng.randrange(2, 12))]))
        for user in range(1, users + 1)
    ]
    (folder / "seq.txt").write_text("\n".join(lines) + "\n")
    # items i and i + 30 share a title: a title is cold or warm as a whole
    titles = "".join(f"{i}\tTitle {i % 30}\n" for i in range(items))
    (folder / "items.tsv").write_text("item_id\ttitle\n" + titles)
    return folder / "seq.txt"


def rows(dataset: Dataset) -> list[tuple[str, str, str]]:
    frame = dataset.interactions
    return list(zip(frame["user_id"], frame["item_id"], frame["split"], strict=True))


@pytest.mark.parametrize("split", ["loo", "temporal"])
def test_cold_items_are_held_out_of_training(tmp_path, split):
    source = write_sequences(tmp_path / "raw")
    prepare("sequences", source, tmp_path / "warm", PrepareOptions(split=split))
    options = PrepareOptions(split=split, cold_items=0.2, seed=7)
    meta = prepare("sequences", source, tmp_path / "cold", options)
    warm, cold = Dataset.load(tmp_path / "warm"), Dataset.load(tmp_path / "cold")
    held = cold.cold_items
    assert warm.cold_items == frozenset() and "cold" not in warm.items.columns
    assert held == frozenset(cold.items.loc[cold.items["cold"], "item_id"])

    # 20% of the distinct titles, every item of such a title, and no warm item shares one
    titles = warm.catalog.titles
    cold_titles = {cold.catalog.title(i) for i in held}
    assert len(cold_titles) == round(0.2 * len(titles))
    assert held == {i for t in cold_titles for i in warm.catalog.items_of_title[t]}
    # the catalogue keeps every item (a cold item must stay recommendable)
    assert cold.catalog.title_of == warm.catalog.title_of

    # interactions: those of the warm dataset less the train ones on cold items, same labels
    expected = [r for r in rows(warm) if not (r[2] == "train" and r[1] in held)]
    assert rows(cold) == expected
    for sample in cold.samples("train"):
        assert sample.target not in held and not held & set(sample.history)
    # valid/test cases: the same targets; the cold cases are those with a cold target
    for name in ("valid", "test"):
        targets = [(s.user_id, s.target) for s in cold.samples(name)]
        originals = [(s.user_id, s.target) for s in warm.samples(name)]
        assert set(targets) <= set(originals)
        dropped = [t for t in originals if t not in targets]  # lost their only history item
        assert all(
            len(s.history) == 1 for s in warm.samples(name) if (s.user_id, s.target) in dropped
        )
        assert meta["cold_items"]["cases"][name] == sum(t in held for _, t in targets)
    assert 0 < meta["cold_items"]["cases"]["test"] < len(cold.samples("test"))
    assert meta["cold_items"]["count"] == len(held)
    assert meta["cold_items"]["fraction"] == 0.2 and meta["cold_items"]["seed"] == 7
    assert meta["cold_items"]["dropped_train_interactions"] == len(rows(warm)) - len(rows(cold))

    stats = dataset_stats(cold)
    assert stats["cold_items"] == len(held) and stats["cold_seed"] == 7
    assert stats["cold_cases"]["test"] == meta["cold_items"]["cases"]["test"]
    assert stats["cold_cases"]["train"] == 0


def test_cold_items_follow_the_seed(tmp_path):
    source = write_sequences(tmp_path / "raw")
    chosen = []
    for n, seed in enumerate((1, 1, 2)):
        prepare("sequences", source, tmp_path / f"d{n}", PrepareOptions(cold_items=0.3, seed=seed))
        chosen.append(Dataset.load(tmp_path / f"d{n}").cold_items)
    assert chosen[0] == chosen[1] != chosen[2]


def test_cold_items_command_line_and_stats(tmp_path, capsys):
    source = write_sequences(tmp_path / "raw")
    args = ["data", "prepare", "sequences", str(source), "-o", str(tmp_path / "d")]
    try:
        main([*args, "--cold-items", "0.25", "--seed", "3"])
    except SystemExit as error:
        assert error.code in (0, None)
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    cold = meta["cold_items"]
    assert f"{cold['count']:,} cold items (fraction 0.25 of the titles, seed 3;" in out
    assert pd.read_parquet(tmp_path / "d" / "items.parquet")["cold"].sum() == cold["count"]
    try:
        main(["data", "stats", str(tmp_path / "d"), "--json"])
    except SystemExit as error:
        assert error.code in (0, None)
    stats = json.loads(capsys.readouterr().out)
    assert stats["cold_items"] == cold["count"] and stats["cold_fraction"] == 0.25
    assert stats["cold_cases"] == cold["cases"]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5, 0.001])
def test_cold_fraction_must_leave_both_sides(tmp_path, fraction):
    source = write_sequences(tmp_path / "raw")
    with pytest.raises(CftrecError, match="--cold-items"):
        prepare("sequences", source, tmp_path / "d", PrepareOptions(cold_items=fraction))
    assert not (tmp_path / "d").exists()


def test_cold_items_refuse_a_split_with_train_after_a_cold_item():
    # possible only in a given split: user v's train interaction c follows a test one on b
    frame = pd.DataFrame(
        {
            "user_id": ["v", "v", "v", "w"],
            "item_id": ["a", "b", "c", "b"],
            "timestamp": [1, 2, 3, 1],
            "split": ["train", "test", "train", "train"],
        }
    )
    with pytest.raises(CftrecError, match="train interactions after a cold item"):
        hold_out(frame, {"b"}, "in")
    kept = hold_out(frame, {"a"}, "in")
    assert kept["item_id"].tolist() == ["b", "c", "b"]
