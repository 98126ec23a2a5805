"""Acceptance checks on the real data in ../shared/data (skipped when it is absent) and on
MovieLens-100k from the cached recbole wheel."""

from __future__ import annotations

import json

import pytest

from cftrec.cli import main
from cftrec.data.dataset import Dataset
from cftrec.paths import cache_home
from conftest import shared_data


def cli(args: list[str], capsys) -> str:
    try:
        main(args)
    except SystemExit as error:  # typer may exit 0 explicitly
        assert error.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def test_amazon_toys_loo(tmp_path, capsys):
    source = shared_data("amazon-toys")
    cli(
        ["data", "prepare", "sequences", str(source), "-o", str(tmp_path / "x"), "--split", "loo"],
        capsys,
    )
    stats = json.loads(cli(["data", "stats", str(tmp_path / "x"), "--json"], capsys))
    assert (stats["users"], stats["items"], stats["interactions"]) == (19412, 11924, 167597)
    assert stats["samples"]["test"] == stats["samples"]["valid"] == 19412
    for key in ("distinct_titles", "shared_titles", "dropped_items", "avg_history_length"):
        assert key in stats


def test_amazon_video_games_given(tmp_path, capsys):
    source = shared_data("amazon-video-games")
    cli(
        [
            "data",
            "prepare",
            "sequences",
            str(source),
            "-o",
            str(tmp_path / "x"),
            "--split",
            "given",
        ],
        capsys,
    )
    stats = json.loads(cli(["data", "stats", str(tmp_path / "x"), "--json"], capsys))
    meta = Dataset.load(tmp_path / "x").meta
    assert meta["read"]["users"] == 49156
    # 4 users had a single interaction, with a title-less item: they have nothing left
    assert stats["users"] + stats["dropped_users"] == 49156
    assert stats["dropped_items"] == 19 and stats["dropped_items_by_reason"] == {"no_title": 19}
    assert stats["items"] == 17332 - 19
    dataset = Dataset.load(tmp_path / "x")
    assert not any("&amp;" in t or "&quot;" in t for t in dataset.catalog.titles)
    assert dataset.catalog.title("9794") == 'N64 Retro Bit Controller "Solid Black"'
    assert stats["items_with_shared_title"] > 800


def csv_cases(path) -> list[tuple[tuple[str, ...], str]]:
    """(history item ids, target item id) of every row of a D3 CSV, read independently."""
    import ast

    import pandas as pd

    rows = pd.read_csv(path)
    return [
        (tuple(str(i) for i in ast.literal_eval(history)), str(target))
        for history, target in zip(rows["history_item_id"], rows["item_id"], strict=True)
    ]


@pytest.mark.parametrize("name", ["CDs", "Industrial_and_Scientific"])
def test_d3_csvs_keep_the_given_split_exactly(tmp_path, capsys, name):
    source = shared_data("d3-format")
    out = cli(
        ["data", "prepare", "d3", str(source), "--name", name, "-o", str(tmp_path / "x")], capsys
    )
    dataset = Dataset.load(tmp_path / "x")
    for split in ("valid", "test"):
        # every CSV row is one case, with the CSV's own history and target
        expected = csv_cases(source / f"{split}_{name}.csv")
        got = [(s.history, s.target) for s in dataset.samples(split)]
        assert sorted(got) == sorted(expected)
    if name == "Industrial_and_Scientific":
        assert len(dataset.samples("test")) == 4533
    assert "given samples kept: " in out and "dropped 0 items" in out


def test_d3_title_cleaning_is_opt_in_and_reported(tmp_path, capsys):
    source = shared_data("d3-format")
    args = ["data", "prepare", "d3", str(source), "--name", "CDs", "--clean-titles"]
    out = cli([*args, "-o", str(tmp_path / "x")], capsys)
    dataset = Dataset.load(tmp_path / "x")
    assert not any("<span" in t for t in dataset.catalog.titles)
    meta = dataset.meta
    kept, given = meta["counts"]["samples"]["test"], meta["read"]["samples"]["test"]
    assert given == len(csv_cases(source / "test_CDs.csv")) and 0.9 * given < kept < given
    assert meta["counts"]["dropped_items_by_reason"]["html_leftovers"] > 0
    assert f"test {kept:,} of {given:,}" in out


def test_movielens_latest_small(tmp_path, capsys):
    source = shared_data("movielens-latest-small")
    cli(["data", "prepare", "movielens", str(source), "-o", str(tmp_path / "x")], capsys)
    stats = json.loads(cli(["data", "stats", str(tmp_path / "x"), "--json"], capsys))
    assert (stats["users"], stats["interactions"]) == (610, 100836)
    assert "Toy Story (1995)" in Dataset.load(tmp_path / "x").catalog.items_of_title


def test_movielens_100k_demo_command(tmp_path, capsys):
    if (
        not (cache_home() / "wheels").exists()
        and not (cache_home() / "datasets" / "ml-100k").exists()
    ):
        pytest.skip("recbole wheel not cached")
    cli(["data", "fetch", "movielens-100k", "-o", str(tmp_path / "raw")], capsys)
    cli(
        [
            "data",
            "prepare",
            "recbole",
            str(tmp_path / "raw"),
            "-o",
            str(tmp_path / "ml"),
            "--split",
            "loo",
        ],
        capsys,
    )
    stats = json.loads(cli(["data", "stats", str(tmp_path / "ml"), "--json"], capsys))
    # 943 users, 100000 interactions over 1682 items, less item 267 ("unkonwn") and its 9
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1681, 100000 - 9)
    assert stats["dropped_items"] == 1
    catalog = Dataset.load(tmp_path / "ml").catalog
    assert catalog.title("1") == "Toy Story (1995)"
    assert catalog.title("12") == "Usual Suspects, The (1995)"
    assert "267" not in catalog
