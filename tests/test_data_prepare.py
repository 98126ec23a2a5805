"""The shared pipeline against brute-force recomputations: k-core, splits, samples, stats,
title cleaning, and the d3/recbole export round trips."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from cftrec.data.dataset import Dataset
from cftrec.data.export import export
from cftrec.data.prepare import PrepareOptions, assign_split, chronological, kcore, prepare
from cftrec.data.stats import dataset_stats
from cftrec.data.titles import clean_title


def random_log(seed: int, users: int = 30, items: int = 15, rows: int = 250) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "user_id": [f"u{rng.randrange(users)}" for _ in range(rows)],
            "item_id": [f"i{rng.randrange(items)}" for _ in range(rows)],
            "timestamp": [rng.randrange(50) for _ in range(rows)],
        }
    )


def brute_kcore(rows: list[tuple], k: int) -> set[tuple]:
    rows = set(rows)
    while True:
        users, items = {}, {}
        for user, item, _row in rows:
            users[user] = users.get(user, 0) + 1
            items[item] = items.get(item, 0) + 1
        kept = {r for r in rows if users[r[0]] >= k and items[r[1]] >= k}
        if kept == rows:
            return rows
        rows = kept


@pytest.mark.parametrize("seed", range(5))
def test_kcore_matches_brute_force(seed):
    log = random_log(seed).reset_index(names="row")
    result = kcore(log, 4)
    expected = brute_kcore(list(zip(log["user_id"], log["item_id"], log["row"], strict=True)), 4)
    assert set(zip(result["user_id"], result["item_id"], result["row"], strict=True)) == expected
    assert (
        result["user_id"].value_counts().min() >= 4 and result["item_id"].value_counts().min() >= 4
    )


@pytest.mark.parametrize("seed", range(3))
def test_splits_match_definitions(seed):
    log = chronological(random_log(seed))
    # chronological: grouped by user, timestamps non-decreasing within a user
    for _, group in log.groupby("user_id", sort=False):
        assert group["timestamp"].is_monotonic_increasing
    per_user = log.groupby("user_id", sort=False).indices
    loo = assign_split(log, "loo")
    for rows in per_user.values():
        labels = [loo[r] for r in rows]
        n = len(labels)
        expected = ["train"] * n
        if n >= 2:
            expected[-1] = "test"
        if n >= 3:
            expected[-2] = "valid"
        assert labels == expected
    temporal = assign_split(log, "temporal")
    times = log["timestamp"].tolist()
    samples = [r for rows in per_user.values() for r in rows[1:]]
    ordered = sorted(samples, key=lambda r: (times[r], r))
    n = len(ordered)
    expected = ["train"] * int(n * 0.8) + ["valid"] * (int(n * 0.9) - int(n * 0.8))
    expected += ["test"] * (n - len(expected))
    assert [temporal[r] for r in ordered] == expected
    # a user's first interaction (no sample) falls in the period of its time
    train_end = max(times[r] for r in ordered[: int(n * 0.8)])
    valid_end = max(times[r] for r in ordered[: int(n * 0.9)])
    for rows in per_user.values():
        t = times[rows[0]]
        period = "train" if t <= train_end else "valid" if t <= valid_end else "test"
        assert temporal[rows[0]] == period
    # so the periods are ordered in time, first interactions included
    rank = {"train": 0, "valid": 1, "test": 2}
    by_time = sorted(range(len(log)), key=lambda r: times[r])
    for a, b in zip(by_time, by_time[1:], strict=False):
        assert times[a] == times[b] or rank[temporal[a]] <= rank[temporal[b]]
    # every row's label, from the two rules above: samples by their place in time, first
    # interactions by the period of their time
    by_rule = dict(zip(ordered, expected, strict=True))
    for rows in per_user.values():
        t = times[rows[0]]
        by_rule[rows[0]] = "train" if t <= train_end else "valid" if t <= valid_end else "test"
    assert sorted(by_rule) == list(range(len(log)))
    assert list(temporal) == [by_rule[r] for r in range(len(log))]
    for rows in per_user.values():  # and a user's labels never go back
        assert [rank[temporal[r]] for r in rows] == sorted(rank[temporal[r]] for r in rows)


def test_temporal_first_interaction_in_the_test_period_is_test():
    # 10 samples by time: u1@2..u1@9 train, u1@10 valid, u3@30 test. u2's only interaction
    # (time 20) is after the valid period: test; u3's first (time 10) is in it: valid.
    log = pd.DataFrame(
        {
            "user_id": ["u1"] * 10 + ["u2", "u3", "u3"],
            "item_id": [f"i{t}" for t in range(1, 11)] + ["x", "y", "z"],
            "timestamp": list(range(1, 11)) + [20, 10, 30],
        }
    )
    labels = list(assign_split(chronological(log), "temporal"))
    assert labels == ["train"] * 9 + ["valid"] + ["test"] + ["valid", "test"]


def _write_sequences(folder: Path, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    lines = []
    for user in range(1, 40):
        lines.append(
            " ".join(map(str, [user] + [rng.randrange(25) for _ in range(rng.randrange(1, 15))]))
        )
    (folder / "seq.txt").write_text("\n".join(lines) + "\n")
    titles = "".join(f"{i}\tTitle {i % 20}\n" for i in range(25))
    (folder / "items.tsv").write_text("item_id\ttitle\n" + titles)


@pytest.mark.parametrize("split", ["loo", "temporal"])
def test_d3_export_then_prepare_gives_same_samples(tmp_path, split):
    _write_sequences(tmp_path / "raw", 1)
    prepare("sequences", tmp_path / "raw" / "seq.txt", tmp_path / "ds", PrepareOptions(split=split))
    original = Dataset.load(tmp_path / "ds")
    export(original, "d3", tmp_path / "d3", name="toy")
    prepare("d3", tmp_path / "d3", tmp_path / "back")
    back = Dataset.load(tmp_path / "back")
    for name in ("train", "valid", "test"):
        assert len(original.samples(name)) > 0
        # same samples; users come in the order the CSV rows first name them
        assert sorted(back.samples(name), key=repr) == sorted(original.samples(name), key=repr)
    assert back.catalog.title_of == original.catalog.title_of


def test_recbole_export_then_prepare(tmp_path):
    _write_sequences(tmp_path / "raw", 2)
    prepare("sequences", tmp_path / "raw" / "seq.txt", tmp_path / "ds")
    original = Dataset.load(tmp_path / "ds")
    files = export(original, "recbole", tmp_path / "rb", name="toy")
    assert sorted(p.name for p in files) == ["toy.inter", "toy.item"]
    assert (tmp_path / "rb" / "toy.inter").read_text().splitlines()[0] == (
        "user_id:token\titem_id:token\ttimestamp:float"
    )
    prepare("recbole", tmp_path / "rb", tmp_path / "back", PrepareOptions(split="loo"))
    back = Dataset.load(tmp_path / "back")
    assert back.user_sequences == original.user_sequences


def test_stats_match_brute_force(tmp_path):
    _write_sequences(tmp_path / "raw", 3)
    meta = prepare("sequences", tmp_path / "raw" / "seq.txt", tmp_path / "ds")
    dataset = Dataset.load(tmp_path / "ds")
    stats = dataset_stats(dataset, max_history=3)
    sequences = [
        [int(t) for t in line.split()[1:]]
        for line in (tmp_path / "raw" / "seq.txt").read_text().splitlines()
    ]
    assert stats["users"] == len(sequences)
    assert stats["interactions"] == sum(map(len, sequences))
    # loo: one test sample per user with >= 2 items, one valid per user with >= 3
    assert stats["samples"]["test"] == sum(len(s) >= 2 for s in sequences)
    assert stats["samples"]["valid"] == sum(len(s) >= 3 for s in sequences)
    assert stats["samples"]["train"] == sum(max(0, len(s) - 3) for s in sequences)
    histories = [min(3, p) for s in sequences for p in range(1, len(s))]
    assert stats["avg_history_length"] == pytest.approx(sum(histories) / len(histories), abs=1e-4)
    used = {i for s in sequences for i in s}
    assert stats["items"] == len(used)
    assert stats["distinct_titles"] == len({i % 20 for i in used})
    assert stats["shared_titles"] == sum(1 for t in range(20) if {t, t + 20} <= used)
    assert meta["counts"]["samples"] == stats["samples"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Heat &amp; Dust ", "Heat & Dust"),
        ("&amp;amp;", None),  # unescaped twice: "&", still a title? no: it is "&"
        ('"Quoted"', "Quoted"),
        ("12'' Doll", "12'' Doll"),
        ('"Weird" Al - "Hits"', '"Weird" Al - "Hits"'),
        ("unkonwn", None),
        ("", None),
        ('<span class="a-size-medium', None),
        ("Best <b>Hits</b>", None),
        ("one " * 21, None),
    ],
)
def test_clean_title(raw, expected):
    title, reason = clean_title(raw, max_words=20)
    if raw == "&amp;amp;":
        assert (title, reason) == ("&", None)
        return
    assert title == expected
    assert (reason is None) == (expected is not None)


def test_prepare_is_atomic_on_error(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "seq.txt").write_text("1 1 2\n")
    (tmp_path / "raw" / "items.tsv").write_text("item_id\ttitle\n1\tA\n2\tB\n")
    prepare("sequences", tmp_path / "raw" / "seq.txt", tmp_path / "ds")
    before = (tmp_path / "ds" / "meta.json").read_text()
    (tmp_path / "raw" / "seq.txt").write_text("1 1 2\n2 1 zz\n")
    with pytest.raises(Exception, match="seq.txt:2"):
        prepare("sequences", tmp_path / "raw" / "seq.txt", tmp_path / "ds")
    assert (tmp_path / "ds" / "meta.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "raw"]


@pytest.mark.parametrize("name", ["../../x", "../x", "a/b", "..", ".", "a\\b", ""])
def test_export_name_stays_inside_the_output_folder(tmp_path, capsys, name):
    from cftrec.cli import main

    _write_sequences(tmp_path / "raw", 4)
    prepare("sequences", tmp_path / "raw" / "seq.txt", tmp_path / "deep" / "ds")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    args = ["data", "export", str(tmp_path / "deep" / "ds"), "--format", "d3"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "-o", str(tmp_path / "deep" / "out"), "--name", name])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "--name" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_d3_export_skips_a_split_without_samples(tmp_path):
    # one user, two items: loo gives a test sample and no valid one
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "seq.txt").write_text("1 1 2\n")
    (tmp_path / "raw" / "items.tsv").write_text("item_id\ttitle\n1\tA\n2\tB\n")
    prepare("sequences", tmp_path / "raw" / "seq.txt", tmp_path / "ds")
    files = export(Dataset.load(tmp_path / "ds"), "d3", tmp_path / "d3", name="x")
    assert sorted(p.name for p in files) == ["info_x.txt", "test_x.csv"]
    prepare("d3", tmp_path / "d3", tmp_path / "back")
    assert Dataset.load(tmp_path / "back").samples("test")[0].target == "2"
