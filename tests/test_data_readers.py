"""Every reader on the same small inputs: gzipped files, truncated archives, empty and
header-only files, repeated item ids and repeated users. Each error is one line naming the file.
`SOURCES` is shared with the property-based tests in test_data_properties.py."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cftrec.cli import main
from cftrec.data.dataset import Dataset
from cftrec.data.prepare import PrepareOptions, prepare
from cftrec.errors import CftrecError


@dataclass
class Fixture:
    """A valid input: file name -> text; `input` relative to the folder ("." = the folder);
    `headers`: the files whose first line is a header."""

    files: dict[str, str]
    input: str = "."
    headers: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)


SOURCES = {
    "sequences": Fixture(
        {"seq.txt": "1 1 2 3\n2 2 1\n", "items.tsv": "item_id\ttitle\n1\tA\n2\tB\n3\tC\n"},
        "seq.txt",
        ("items.tsv",),
    ),
    "sequences-presplit": Fixture(
        {
            "sequential_train.txt": "1 1 2\n2 2\n",
            "sequential_valid.txt": "1 3\n2 1\n",
            "sequential_test.txt": "1 1\n2 3\n",
            "items.tsv": "item_id\ttitle\n1\tA\n2\tB\n3\tC\n",
        },
        headers=("items.tsv",),
    ),
    "movielens": Fixture(
        {
            "u.data": "1\t1\t5\t10\n1\t2\t4\t11\n2\t2\t3\t12\n2\t1\t5\t13\n",
            "u.item": "1|A (1990)|x\n2|B (1991)|x\n",
        }
    ),
    "movielens-latest": Fixture(
        {
            "ratings.csv": "userId,movieId,rating,timestamp\n1,1,5,10\n1,2,4,11\n2,2,3,12\n",
            "movies.csv": 'movieId,title,genres\n1,"A, The (1990)",x\n2,B (1991),x\n',
        },
        headers=("ratings.csv", "movies.csv"),
    ),
    "recbole": Fixture(
        {
            "x.inter": "user_id:token\titem_id:token\ttimestamp:float\n1\t1\t5\n1\t2\t6\n2\t2\t7\n",
            "x.item": "item_id:token\ttitle:token_seq\n1\tA\n2\tB\n",
        },
        headers=("x.inter", "x.item"),
    ),
    "d3": Fixture(
        {
            "test.csv": 'user_id,history_item_id,item_id\nu,"[1]",2\nv,"[2, 1]",3\n',
            "info.txt": "A\t1\nB\t2\nC\t3\n",
        },
        headers=("test.csv",),
    ),
    "amazon2018": Fixture(
        {
            "r.json": '{"reviewerID": "u", "asin": "a", "unixReviewTime": 5}\n'
            '{"reviewerID": "u", "asin": "b", "unixReviewTime": 6}\n'
            '{"reviewerID": "v", "asin": "a", "unixReviewTime": 7}\n',
            "meta_r.json": '{"asin": "a", "title": "A"}\n{"asin": "b", "title": "B"}\n',
        },
        "r.json",
        options={"kcore": 1, "window": False},
    ),
    "amazon2023": Fixture(
        {
            "r.jsonl": '{"user_id": "u", "parent_asin": "a", "timestamp": 5000}\n'
            '{"user_id": "u", "parent_asin": "b", "timestamp": 6000}\n'
            '{"user_id": "v", "parent_asin": "a", "timestamp": 7000}\n',
            "meta_r.jsonl": '{"parent_asin": "a", "title": "A"}\n'
            '{"parent_asin": "b", "title": "B"}\n',
        },
        "r.jsonl",
        options={"kcore": 1, "window": False},
    ),
}
# the item file of each fixture, and a second row for its first item
REPEATED_ITEM = {
    "sequences": ("items.tsv", "1\tA again\n"),
    "sequences-presplit": ("items.tsv", "1\tA again\n"),
    "movielens": ("u.item", "1|A again (1990)|x\n"),
    "movielens-latest": ("movies.csv", "1,A again (1990),x\n"),
    "recbole": ("x.item", "1\tA again\n"),
    "d3": ("info.txt", "A again\t1\n"),
    "amazon2018": ("meta_r.json", '{"asin": "a", "title": "A again"}\n'),
    "amazon2023": ("meta_r.jsonl", '{"parent_asin": "a", "title": "A again"}\n'),
}


def source_name(key: str) -> str:
    return key.split("-")[0]


def write_fixture(folder: Path, key: str, gz: bool = False, **replaced: str) -> Path:
    """Write fixture `key` into `folder` (every file gzipped when `gz`); returns the input."""
    fixture = SOURCES[key]
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**fixture.files, **replaced}.items():
        data = text.encode("utf-8")
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    if fixture.input == ".":
        return folder
    return folder / (f"{fixture.input}.gz" if gz else fixture.input)


def prepare_fixture(key: str, input_path: Path, out: Path) -> dict:
    return prepare(source_name(key), input_path, out, PrepareOptions(**SOURCES[key].options))


def file_cases(with_header: bool = False) -> list[tuple[str, str]]:
    return [
        (key, name)
        for key, fixture in SOURCES.items()
        for name in fixture.files
        if not with_header or name in fixture.headers
    ]


@pytest.mark.parametrize("key", list(SOURCES))
def test_every_source_reads_gzip(tmp_path, key):
    plain = prepare_fixture(key, write_fixture(tmp_path / "plain", key), tmp_path / "a")
    packed = prepare_fixture(key, write_fixture(tmp_path / "gz", key, gz=True), tmp_path / "b")
    assert Dataset.load(tmp_path / "b").fingerprint == Dataset.load(tmp_path / "a").fingerprint
    assert packed["counts"] == plain["counts"] and plain["counts"]["samples"]["test"] > 0
    assert all(name.endswith(".gz") for name in packed["files"])


@pytest.mark.parametrize(("key", "name"), file_cases())
def test_truncated_gzip_names_the_file(tmp_path, key, name):
    input_path = write_fixture(tmp_path / "in", key, gz=True)
    archive = tmp_path / "in" / f"{name}.gz"
    archive.write_bytes(archive.read_bytes()[:-12])  # cut the deflate end and the trailer
    with pytest.raises(CftrecError) as error:
        prepare_fixture(key, input_path, tmp_path / "out")
    message = str(error.value)
    assert message.startswith(str(archive)) and "\n" not in message
    assert "gzip" in message


@pytest.mark.parametrize(("key", "name"), file_cases())
def test_empty_file_is_named(tmp_path, key, name):
    input_path = write_fixture(tmp_path / "in", key, **{name: ""})
    with pytest.raises(CftrecError) as error:
        prepare_fixture(key, input_path, tmp_path / "out")
    assert str(error.value).startswith(str(tmp_path / "in" / name))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("key", "name"), file_cases(with_header=True))
def test_header_only_file_is_named(tmp_path, key, name):
    header = SOURCES[key].files[name].splitlines(keepends=True)[0]
    input_path = write_fixture(tmp_path / "in", key, **{name: header})
    with pytest.raises(CftrecError) as error:
        prepare_fixture(key, input_path, tmp_path / "out")
    assert str(error.value) == f"{tmp_path / 'in' / name}: " + (
        "no records (the file is empty or holds only a header)"
    )


@pytest.mark.parametrize("key", list(SOURCES))
def test_repeated_item_id_keeps_the_first_row_and_counts(tmp_path, key, capsys):
    name, extra = REPEATED_ITEM[key]
    text = SOURCES[key].files[name] + extra
    input_path = write_fixture(tmp_path / "in", key, **{name: text})
    meta = prepare_fixture(key, input_path, tmp_path / "out")
    assert meta["counts"]["duplicate_item_rows"] == 1
    catalog = Dataset.load(tmp_path / "out").catalog
    first = catalog.item_ids[0] if key != "d3" else "1"
    assert "again" not in catalog.title(first)
    if key == "sequences":  # and the command line says so
        args = ["data", "prepare", "sequences", str(input_path), "-o", str(tmp_path / "o")]
        try:
            main(args)
        except SystemExit as exit_:
            assert exit_.code in (0, None)
        assert "1 repeated item rows ignored" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("key", "name", "text", "line"),
    [
        ("sequences", "seq.txt", "1 1 2\n2 2 1\n1 3\n", 3),
        ("sequences-presplit", "sequential_train.txt", "1 1 2\n1 2\n", 2),
    ],
)
def test_a_user_on_two_lines_is_an_error(tmp_path, key, name, text, line):
    input_path = write_fixture(tmp_path / "in", key, **{name: text})
    with pytest.raises(CftrecError) as error:
        prepare_fixture(key, input_path, tmp_path / "out")
    assert str(error.value) == (
        f"{tmp_path / 'in' / name}:{line}: user 1 already has line 1 (one line per user)"
    )
