"""Every source fed random bytes, truncated files or truncated archives: `prepare` either writes
a dataset that loads or fails with a one-line CftrecError naming the input; never another
exception, and the input files are byte-identical afterwards."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cftrec.data.dataset import SPLITS, Dataset
from cftrec.data.sources import amazon2018
from cftrec.data.sources._common import ReadOptions
from cftrec.errors import CftrecError, InputError
from test_data_readers import SOURCES, file_cases, prepare_fixture, write_fixture

# Text that looks like the formats: separators, quotes, brackets, digits, braces, bad bytes.
ALPHABET = st.sampled_from(list("0123456789abc \t\n,|:\"'[]{}()<>&;.-e") + ["::", "\\", "é"])
garbage_text = st.lists(ALPHABET, max_size=80).map("".join)
garbage_bytes = st.one_of(garbage_text.map(str.encode), st.binary(max_size=60))


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """Random bytes, the valid content cut anywhere, or garbage spliced into it."""
    kind = draw(st.sampled_from(["garbage", "cut", "splice"]))
    if kind == "garbage":
        return draw(garbage_bytes)
    at = draw(st.integers(0, len(valid)))
    if kind == "cut":
        return valid[:at]
    return valid[:at] + draw(garbage_bytes) + valid[at:]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def check(key: str, name: str, content: bytes, packing: str) -> None:
    """Write fixture `key` with `name` replaced by `content`; `packing`: plain, gz (every file
    gzipped) or cut-gz (and the archive of `name` truncated); then prepare it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        input_path = write_fixture(folder, key, gz=packing != "plain")
        target = folder / (name if packing == "plain" else f"{name}.gz")
        packed = content if packing == "plain" else gzip.compress(content)
        target.write_bytes(packed[: len(packed) // 2] if packing == "cut-gz" else packed)
        before = snapshot(folder)
        out = Path(tmp) / "out"
        try:
            prepare_fixture(key, input_path, out)
        except CftrecError as error:
            message = str(error)
            assert "\n" not in message and str(folder) in message, message
            assert not out.exists()
        else:
            dataset = Dataset.load(out)
            for split in SPLITS:
                for sample in dataset.samples(split):
                    assert sample.history and sample.target in dataset.catalog
        assert snapshot(folder) == before


@pytest.mark.parametrize(("key", "name"), file_cases())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), packing=st.sampled_from(["plain", "gz", "cut-gz"]))
def test_damaged_input_gives_a_dataset_or_one_line_error(key, name, data, packing):
    valid = SOURCES[key].files[name].encode()
    check(key, name, data.draw(damaged(valid)), packing)


@settings(max_examples=30, deadline=None)
@given(content=garbage_bytes)
def test_corrupt_gzip_is_input_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "r.json.gz").write_bytes(gzip.compress(b'{"reviewerID": "u"')[:10] + content)
        (folder / "meta_r.json.gz").write_bytes(gzip.compress(b""))
        with pytest.raises(InputError):
            amazon2018.read(folder / "r.json.gz", ReadOptions())
