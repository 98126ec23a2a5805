"""Each reader on a small fixture in its real format, with hand-computed expectations, and the
one-line errors on malformed records (exit status 2, no output directory)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cftrec.cli import main
from cftrec.data.dataset import Dataset
from cftrec.data.prepare import PrepareOptions, prepare


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def sequences_of(dataset: Dataset) -> dict[str, list[str]]:
    return {user: items for user, (items, _, _) in dataset.user_sequences.items()}


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def test_sequences_loo(tmp_path):
    write(tmp_path / "in/sequential_data.txt", "1 10 11 12 13\n2 11 12\n3 13\n")
    write(
        tmp_path / "in/items.tsv",
        'item_id\ttitle\tcategories\n10\tA &amp; B\tx\n11\t"Quoted ""Name"""\ty\n'
        "12\tC\tz\n13\tC\tw\n",
    )
    meta = prepare("sequences", tmp_path / "in", tmp_path / "out", PrepareOptions(split="loo"))
    dataset = Dataset.load(tmp_path / "out")
    assert sequences_of(dataset) == {"1": ["10", "11", "12", "13"], "2": ["11", "12"], "3": ["13"]}
    assert dataset.catalog.title("10") == "A & B"
    assert dataset.catalog.title("11") == 'Quoted "Name"'
    assert dataset.catalog.items_of_title["C"] == ["12", "13"]
    assert meta["counts"]["shared_titles"] == 1
    # user 1: 10 11 train, 12 valid, 13 test; user 2: 11 train, 12 test; user 3: one item, no sample
    splits = dataset.interactions.groupby("user_id")["split"].apply(list).to_dict()
    assert splits == {
        "1": ["train", "train", "valid", "test"],
        "2": ["train", "test"],
        "3": ["train"],
    }
    test = dataset.samples("test", max_history=2)
    assert [(s.user_id, s.history, s.target) for s in test] == [
        ("1", ("11", "12"), "13"),
        ("2", ("11",), "12"),
    ]
    assert meta["counts"]["samples"] == {"train": 1, "valid": 1, "test": 2}


def test_sequences_presplit_given(tmp_path):
    write(tmp_path / "in/sequential_train.txt", "1 1 2\n2 3\n3 1\n")
    write(tmp_path / "in/sequential_valid.txt", "1 3\n2\n3\n")
    write(tmp_path / "in/sequential_test.txt", "1 4\n2 1\n3\n")
    write(
        tmp_path / "in/items.tsv",
        "item_id\tasin\ttitle\n1\ta\tOne\n2\tb\tTwo\n3\tc\t\n4\td\tFour\n",
    )
    meta = prepare("sequences", tmp_path / "in", tmp_path / "out")  # default: the given split
    dataset = Dataset.load(tmp_path / "out")
    # item 3 has no title: dropped with its interactions (user 2 keeps 1 only: no sample)
    assert meta["options"]["split"] == "given"
    assert meta["counts"]["dropped_items"] == 1 and meta["counts"]["dropped_interactions"] == 2
    assert sequences_of(dataset) == {"1": ["1", "2", "4"], "2": ["1"], "3": ["1"]}
    assert [(s.history, s.target) for s in dataset.samples("test")] == [(("1", "2"), "4")]
    assert dataset.samples("valid") == []
    assert "asin" in dataset.items.columns


def test_recbole_year_and_placeholder(tmp_path):
    write(
        tmp_path / "ml/ml.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\n"
        "1\tToy Story\t1995\n2\tunkonwn\tunkonwn\n3\tLand Before Time III (1995)\tV\n",
    )
    write(
        tmp_path / "ml/ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "7\t3\t4\t300\n7\t1\t5\t100\n7\t2\t1\t200\n8\t1\t2\t50\n8\t3\t3\t60\n",
    )
    meta = prepare("recbole", tmp_path / "ml", tmp_path / "out")
    dataset = Dataset.load(tmp_path / "out")
    assert dataset.catalog.title("1") == "Toy Story (1995)"
    assert dataset.catalog.title("3") == "Land Before Time III (1995) (V)"
    assert "2" not in dataset.catalog
    assert sequences_of(dataset) == {"7": ["1", "3"], "8": ["1", "3"]}  # sorted by time
    assert meta["counts"]["dropped_items"] == 1 and meta["counts"]["dropped_interactions"] == 1
    prepare("recbole", tmp_path / "ml", tmp_path / "out2", PrepareOptions(min_rating=3))
    assert sequences_of(Dataset.load(tmp_path / "out2")) == {"7": ["1", "3"], "8": ["3"]}


@pytest.mark.parametrize("layout", ["ml-100k", "ml-1m", "ml-latest"])
def test_movielens_layouts(tmp_path, layout):
    rows = [(1, 10, 4, 30), (1, 20, 2, 10), (2, 10, 5, 5), (1, 30, 3, 20)]
    titles = {10: "Café (1995)", 20: "Heat, The (1995)", 30: "Up (2009)"}
    folder = tmp_path / layout
    if layout == "ml-100k":
        write(folder / "u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
        item_lines = "".join(f"{i}|{t}|01-Jan-1995||http://x|0|1\n" for i, t in titles.items())
        write(folder / "u.item", item_lines, "latin-1")
    elif layout == "ml-1m":
        write(folder / "ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
        write(
            folder / "movies.dat",
            "".join(f"{i}::{t}::Drama\n" for i, t in titles.items()),
            "latin-1",
        )
    else:
        write(
            folder / "ratings.csv",
            "userId,movieId,rating,timestamp\n"
            + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in rows),
        )
        write(
            folder / "movies.csv",
            "movieId,title,genres\n" + "".join(f'{i},"{t}",Drama\n' for i, t in titles.items()),
        )
    prepare("movielens", folder, tmp_path / "out", PrepareOptions(min_rating=3))
    dataset = Dataset.load(tmp_path / "out")
    assert sequences_of(dataset) == {"1": ["30", "10"], "2": ["10"]}
    assert dataset.catalog.title("10") == "Café (1995)"
    assert dataset.catalog.title("30") == "Up (2009)"


def test_d3_rebuilds_sequences(tmp_path):
    write(tmp_path / "d3/info_X.txt", "Alpha\t0\nBeta\t1\nGamma\t2\n<span class=\t3\n")
    header = "user_id,history_item_id,item_id,history_timestamp,timestamp\n"
    write(tmp_path / "d3/valid_X.csv", header + 'u1,"[0, 1]",2,"[1, 2]",3\n')
    write(tmp_path / "d3/test_X.csv", header + 'u1,"[1, 2]",0,"[2, 3]",4\nu2,"[\'2\']",1,"[5]",6\n')
    meta = prepare("d3", tmp_path / "d3", tmp_path / "out", PrepareOptions(clean_titles=True))
    dataset = Dataset.load(tmp_path / "out")
    assert sequences_of(dataset) == {"u1": ["0", "1", "2", "0"], "u2": ["2", "1"]}
    splits = dataset.interactions.groupby("user_id")["split"].apply(list).to_dict()
    assert splits == {"u1": ["train", "train", "valid", "test"], "u2": ["train", "test"]}
    # item 3 (an HTML leftover) is no one's: cleaning drops it, unused anyway
    assert meta["counts"]["unused_items"] == 0 and meta["counts"]["dropped_items"] == 1
    assert [(s.history, s.target) for s in dataset.samples("test")] == [
        (("0", "1", "2"), "0"),
        (("2",), "1"),
    ]


def _amazon_fixture(folder: Path, year: int, gz: bool) -> None:
    if year == 2018:
        review = lambda u, i, t: {"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 5}  # noqa: E731
        meta = lambda i, t: {"asin": i, "title": t}  # noqa: E731
        name = "Toys.json"
    else:
        review = lambda u, i, t: {"user_id": u, "parent_asin": i, "timestamp": t * 1000}  # noqa: E731
        meta = lambda i, t: {"parent_asin": i, "title": t}  # noqa: E731
        name = "Toys.jsonl"
    day = 86400
    log = [
        ("A", "x", 1),
        ("A", "y", 2),
        ("B", "x", 3),
        ("B", "y", 4),
        ("C", "z", 5),
        ("A", "z", 6),
        ("B", "z", 7),
    ]
    reviews = [review(u, i, t * day) for u, i, t in log]
    metas = [
        meta("x", "X &amp; Co"),
        meta("y", "Y " + "word " * 25),
        meta("z", "Zed"),
        meta("w", "Unused"),
    ]
    for file_name, records in ((name, reviews), (f"meta_{name}", metas)):
        text = "".join(json.dumps(r) + "\n" for r in records)
        if gz:
            (folder / f"{file_name}.gz").write_bytes(gzip.compress(text.encode()))
        else:
            write(folder / file_name, text)


@pytest.mark.parametrize(("year", "gz"), [(2018, True), (2023, False)])
def test_amazon_d3_recipe(tmp_path, year, gz):
    folder = tmp_path / "raw"
    folder.mkdir()
    _amazon_fixture(folder, year, gz)
    meta = prepare(f"amazon{year}", folder, tmp_path / "out", PrepareOptions(kcore=2))
    dataset = Dataset.load(tmp_path / "out")
    # y (26 words > 20) goes; 2-core then removes C (one review); x and z keep 2 each.
    assert meta["counts"]["dropped_items_by_reason"] == {"too_long": 1}
    assert sequences_of(dataset) == {"A": ["x", "z"], "B": ["x", "z"]}
    assert dataset.catalog.title("x") == "X & Co"
    # temporal 8:1:1 over the two samples (A z day 6, B z day 7): int(1.6)=1 train, 0 valid
    splits = dataset.interactions.groupby("user_id")["split"].apply(list).to_dict()
    assert splits == {"A": ["train", "train"], "B": ["train", "test"]}
    assert dataset.interactions["timestamp"].max() == 7 * 86400


def test_amazon_window_extends_back_a_year(tmp_path, capsys):
    folder = tmp_path / "raw"
    folder.mkdir()
    _amazon_fixture(folder, 2018, gz=False)
    # From day 3 only B keeps 2 reviews, and x then has one: the 2-core is empty.
    args = [
        "data",
        "prepare",
        "amazon2018",
        str(folder),
        "-o",
        str(tmp_path / "o"),
        "--kcore",
        "2",
        "--start",
        "1970-01-04",
        "--min-items",
        "0",
    ]
    code, err = run_cli(args, capsys)
    assert code == 2 and "2-core" in err
    options = PrepareOptions(kcore=2, start="1970-01-04", end="1970-01-09", min_items=2)
    meta = prepare("amazon2018", folder, tmp_path / "out", options)
    assert meta["window"] == {"start": "1969-01-04", "end": "1970-01-09"}
    assert meta["counts"]["items"] == 2 and meta["counts"]["users"] == 2


def test_bad_input_one_line_exit_2(tmp_path, capsys):
    folder = tmp_path / "in"
    write(folder / "sequential_data.txt", "1 10 11\n2 x 12\n")
    write(folder / "items.tsv", "item_id\ttitle\n10\tA\n11\tB\n12\tC\n")
    code, err = run_cli(
        ["data", "prepare", "sequences", str(folder), "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {folder / 'sequential_data.txt'}:2: item id is not an integer: 'x'"
    ]
    assert not (tmp_path / "o").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".o")] == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"u.data": "1\t2\t3\n", "u.item": "2|T (1990)|x\n"}, "u.data:1: expected 4"),
        (
            {"u.data": "1\t2\t3\tnoon\n", "u.item": "2|T (1990)|x\n"},
            "u.data:1: timestamp is not a number",
        ),
        (
            {
                "ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,4\n",
                "movies.csv": "movieId,genres\n2,x\n",
            },
            "movies.csv:1: missing title column",
        ),
    ],
)
def test_movielens_malformed(tmp_path, capsys, files, message):
    for name, text in files.items():
        write(tmp_path / "ml" / name, text)
    code, err = run_cli(
        ["data", "prepare", "movielens", str(tmp_path / "ml"), "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_broken_json_and_bad_bytes(tmp_path, capsys):
    folder = tmp_path / "raw"
    folder.mkdir()
    _amazon_fixture(folder, 2018, gz=False)
    with open(folder / "Toys.json", "a") as handle:
        handle.write('{"reviewerID": "A", "asin": \n')
    code, err = run_cli(
        ["data", "prepare", "amazon2018", str(folder), "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "Toys.json:8: broken JSON" in err
    (folder / "Toys.json").write_bytes(b'{"reviewerID": "\xff"}\n')
    code, err = run_cli(
        ["data", "prepare", "amazon2018", str(folder), "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "Toys.json:1: undecodable bytes" in err
    assert not (tmp_path / "o").exists()


def test_emptied_by_filter_names_it(tmp_path, capsys):
    folder = tmp_path / "in"
    write(folder / "sequential_data.txt", "1 10 11\n2 11\n")
    write(folder / "items.tsv", "item_id\ttitle\n10\tA\n11\tB\n")
    code, err = run_cli(
        ["data", "prepare", "sequences", str(folder), "-o", str(tmp_path / "o"), "--kcore", "3"],
        capsys,
    )
    assert code == 2 and "3-core" in err
    assert not (tmp_path / "o").exists()


def _amazon_dated(folder: Path, stamps: dict[str, str]) -> None:
    """Amazon 2023 files: user u<n> reviews item `name` and item `common` at the given UTC time."""
    import datetime as dt

    reviews, metas = [], []
    for n, (item, when) in enumerate(stamps.items()):
        ms = int(dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC).timestamp() * 1000)
        for target in (item, "common"):
            reviews.append({"user_id": f"u{n}", "parent_asin": target, "timestamp": ms})
        metas.append({"parent_asin": item, "title": item.title()})
    metas.append({"parent_asin": "common", "title": "Common"})
    write(folder / "R.jsonl", "".join(json.dumps(r) + "\n" for r in reviews))
    write(folder / "meta_R.jsonl", "".join(json.dumps(m) + "\n" for m in metas))


WINDOW_STAMPS = {
    "before": "2017-09-30T23:59:59",
    "first": "2017-10-01T00:00:00",
    "lastday": "2018-11-01T23:59:59",  # D3 keeps its end date: the window end is inclusive
    "after": "2018-11-02T00:00:00",
}


def test_amazon_default_window_is_d3s_with_inclusive_end(tmp_path):
    _amazon_dated(tmp_path / "raw", WINDOW_STAMPS)
    options = PrepareOptions(kcore=1, min_items=0)
    meta = prepare("amazon2023", tmp_path / "raw", tmp_path / "out", options)
    assert meta["window"] == {"start": "2017-10-01", "end": "2018-11-01"}
    dataset = Dataset.load(tmp_path / "out")
    assert set(dataset.catalog.item_ids) == {"first", "lastday", "common"}
    assert meta["options"]["start"] == "2017-10-01" and meta["options"]["end"] == "2018-11-01"


def test_amazon_default_window_extends_back_to_min_items(tmp_path, capsys):
    # 10,000 items (D3's default) are out of reach: the start moves back a year at a time
    # until the window holds the first review
    _amazon_dated(tmp_path / "raw", {"old": "2015-06-01T00:00:00", **WINDOW_STAMPS})
    code = None
    try:
        main(
            ["data", "prepare", "amazon2023", str(tmp_path / "raw"), "-o", str(tmp_path / "o")]
            + ["--kcore", "1"]
        )
    except SystemExit as error:
        code = error.code
    assert code in (None, 0)
    meta = Dataset.load(tmp_path / "o").meta
    assert meta["options"]["min_items"] == 10000 and meta["options"]["split"] == "temporal"
    assert meta["window"] == {"start": "2014-10-01", "end": "2018-11-01"}
    assert "time window 2014-10-01 .. 2018-11-01" in capsys.readouterr().out
    # with a reachable --min-items the first year back is enough
    options = PrepareOptions(kcore=1, min_items=4)
    meta = prepare("amazon2023", tmp_path / "raw", tmp_path / "out2", options)
    assert meta["window"]["start"] == "2016-10-01" and meta["counts"]["items"] == 4


def test_amazon_no_window(tmp_path, capsys):
    _amazon_dated(tmp_path / "raw", WINDOW_STAMPS)
    meta = prepare(
        "amazon2023", tmp_path / "raw", tmp_path / "out", PrepareOptions(kcore=1, window=False)
    )
    assert meta["window"] == {} and meta["options"]["window"] is False
    assert meta["options"]["start"] is meta["options"]["min_items"] is None
    assert meta["counts"]["items"] == 5
    capsys.readouterr()
    code, err = run_cli(
        ["data", "prepare", "amazon2023", str(tmp_path / "raw"), "-o", str(tmp_path / "o")]
        + ["--no-window", "--start", "2017-01-01"],
        capsys,
    )
    assert code == 2 and "--no-window" in err and len(err.strip().splitlines()) == 1


def test_d3_keeps_every_row_and_title_by_default(tmp_path, capsys):
    # item 3's title is an HTML leftover and item 2's has an entity: cleaning would drop item 3
    # (and with it u2's test row) and unescape item 2; by default both stay as given
    write(tmp_path / "d3/info_X.txt", "Alpha\t0\nB &amp; C\t1\nGamma\t2\n<span class=x>\t3\n")
    header = "user_id,history_item_id,item_id\n"
    write(tmp_path / "d3/valid_X.csv", header + 'u1,"[0, 1]",2\n')
    write(tmp_path / "d3/test_X.csv", header + 'u1,"[0, 1, 2]",3\nu2,"[3]",1\n')
    meta = prepare("d3", tmp_path / "d3", tmp_path / "out")
    dataset = Dataset.load(tmp_path / "out")
    assert meta["options"]["clean_titles"] is False and meta["counts"]["dropped_items"] == 0
    assert [(s.history, s.target) for s in dataset.samples("test")] == [
        (("0", "1", "2"), "3"),
        (("3",), "1"),
    ]
    assert dataset.catalog.title("3") == "<span class=x>"
    assert dataset.catalog.title("1") == "B &amp; C"
    assert meta["read"]["samples"] == meta["counts"]["samples"]
    cleaned = prepare("d3", tmp_path / "d3", tmp_path / "c", PrepareOptions(clean_titles=True))
    # both test rows involve item 3: cleaning leaves none of them
    assert cleaned["counts"]["samples"]["test"] == 0 and cleaned["read"]["samples"]["test"] == 2
    assert Dataset.load(tmp_path / "c").catalog.title("1") == "B & C"


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ("Alpha\t0\nBeta\t1\n", "1 item ids of the interactions are missing here (e.g. '2')"),
        ("Alpha\t0\n \t1\nGamma\t2\n", "1 items have an empty title (e.g. item '1')"),
    ],
)
def test_d3_without_cleaning_refuses_items_without_a_title(tmp_path, capsys, info, message):
    write(tmp_path / "d3/info.txt", info)
    write(tmp_path / "d3/test.csv", 'user_id,history_item_id,item_id\nu1,"[0, 1]",2\n')
    code, err = run_cli(
        ["data", "prepare", "d3", str(tmp_path / "d3"), "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2 and err.count("error:") == 1  # (after the progress line)
    assert f"error: {tmp_path / 'd3' / 'info.txt'}: {message}; --clean-titles drops" in err
    args = ["data", "prepare", "d3", str(tmp_path / "d3"), "-o", str(tmp_path / "o")]
    code, err = run_cli([*args, "--max-title-words", "5"], capsys)
    assert code == 2 and "--max-title-words is part of title cleaning" in err
