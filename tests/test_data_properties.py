"""Readers fed random garbage either parse it or fail with a one-line InputError naming the
file: never another exception."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cftrec.data.sources import amazon2018, d3, movielens, recbole, sequences
from cftrec.data.sources._common import ReadOptions
from cftrec.errors import InputError

VALID = {
    "sequences": {"seq.txt": "1 1 2\n", "items.tsv": "item_id\ttitle\n1\tA\n2\tB\n"},
    "movielens": {"u.data": "1\t1\t5\t10\n", "u.item": "1|A (1990)|x\n"},
    "recbole": {
        "x.inter": "user_id:token\titem_id:token\ttimestamp:float\n1\t1\t5\n",
        "x.item": "item_id:token\ttitle:token_seq\n1\tA\n",
    },
    "d3": {"test.csv": 'user_id,history_item_id,item_id\nu,"[1]",2\n', "info.txt": "A\t1\nB\t2\n"},
    "amazon2018": {
        "r.json": '{"reviewerID": "u", "asin": "a", "unixReviewTime": 5}\n',
        "meta_r.json": '{"asin": "a", "title": "A"}\n',
    },
}
READERS = {
    "sequences": (sequences, "seq.txt"),
    "movielens": (movielens, "."),
    "recbole": (recbole, "."),
    "d3": (d3, "."),
    "amazon2018": (amazon2018, "r.json"),
}

# Text that looks like the formats: separators, quotes, brackets, digits, braces, bad bytes.
ALPHABET = st.sampled_from(list("0123456789abc \t\n,|:\"'[]{}()<>&;.-e") + ["::", "\\", "é"])
garbage_text = st.lists(ALPHABET, max_size=80).map("".join)
garbage_bytes = st.one_of(garbage_text.map(str.encode), st.binary(max_size=60))


def _check(source: str, file_name: str, content: bytes, compress: bool) -> None:
    module, input_name = READERS[source]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, text in VALID[source].items():
            (folder / name).write_text(text, encoding="utf-8")
        target = folder / file_name
        target.write_bytes(content)
        if compress and source == "amazon2018":
            for name in VALID[source]:
                data = (folder / name).read_bytes()
                (folder / name).unlink()
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            input_name = "r.json.gz"
        try:
            module.read(folder / input_name if input_name != "." else folder, ReadOptions())
        except InputError as error:
            assert "\n" not in str(error)
            assert str(folder) in str(error)


@pytest.mark.parametrize(
    ("source", "file_name"),
    [(s, f) for s, files in VALID.items() for f in files],
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=garbage_bytes, compress=st.booleans())
def test_garbage_parses_or_input_error(source, file_name, content, compress):
    _check(source, file_name, content, compress)


@settings(max_examples=30, deadline=None)
@given(content=garbage_bytes)
def test_corrupt_gzip_is_input_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "r.json.gz").write_bytes(gzip.compress(b'{"reviewerID": "u"')[:10] + content)
        (folder / "meta_r.json.gz").write_bytes(gzip.compress(b""))
        with pytest.raises(InputError):
            amazon2018.read(folder / "r.json.gz", ReadOptions())
