"""Corrupt or mismatched files and invalid numbers (issue 13, section 3): bad JSON, truncated or
foreign Parquet and safetensors, run.json without its keys, a SASRec config of the wrong shape,
--device tpu, negative counts and rates. Each: exit 2, one line naming the file and the
problem, no traceback, the files byte-identical afterwards, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cftrec.errors import CftrecError
from hardening_fixtures import assert_one_line_error, run_entry_point, run_main, snapshot
from serving_fixtures import make_llm_run
from training_fixtures import write_tiny_dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer, tiny_model_dir):
    """A dataset and one run of every kind (LoRA and full-weight LLM runs) to corrupt copies of."""
    import torch
    from transformers import AutoModelForCausalLM

    from cftrec.baselines.popularity import train_popularity
    from cftrec.baselines.sasrec import SASRecConfig, train_sasrec
    from cftrec.data.dataset import Dataset
    from cftrec.modeling import LoraSettings, add_lora
    from cftrec.prompts import PromptEncoder
    from cftrec.runs.llm import save_llm_run

    root = tmp_path_factory.mktemp("corrupt")
    data = write_tiny_dataset(root / "data")
    train_popularity(data, root / "pop")
    config = SASRecConfig(hidden_size=16, num_blocks=1, max_length=8, epochs=1, batch_size=8)
    train_sasrec(data, root / "sasrec", config, device="cpu")
    make_llm_run(root, data, tokenizer, name="full")
    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraSettings(r=4))
    info = {"method": "cft", "base_model": str(tiny_model_dir), "dtype": "float32",
            "lora": {"r": 4}, "prompt": PromptEncoder(tokenizer).config()}  # fmt: skip
    save_llm_run(root / "lora", model=model, tokenizer=tokenizer, info=info,
                 dataset=Dataset.load(data), config={}, metrics=[])  # fmt: skip
    return root


def _copy(runs: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(runs / name, tmp_path / name))


def _json_edit(change):
    def corrupt(path: Path) -> None:
        value = json.loads(path.read_text())
        change(value)
        path.write_text(json.dumps(value))

    return corrupt


def _bytes(data: bytes):
    return lambda path: path.write_bytes(data)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _remove_key(key):
    return _json_edit(lambda value: value.pop(key))


RECOMMEND = {  # how each run kind is asked for a recommendation
    "pop": ["-k", "3"],
    "sasrec": ["-k", "3", "--item-ids", "0", "1"],
    "full": ["-k", "2", "--beams", "2", "--item-ids", "0"],
    "lora": ["-k", "2", "--beams", "2", "--item-ids", "0"],
}

RUN_CASES = [
    ("pop", "run.json", _bytes(b'{"kind": "pop",'), "run.json:1: bad JSON"),
    ("pop", "run.json", _bytes(b"[1, 2]"), "run.json: expected an object of JSON, found list"),
    ("pop", "run.json", _bytes(b"\xff\xfe garbage"), "run.json: not UTF-8 text"),
    ("pop", "run.json", _remove_key("data_fingerprint"), "missing key(s) data_fingerprint"),
    ("pop", "run.json", _json_edit(lambda v: v.update(kind="knn")), "unknown run kind 'knn'"),
    ("full", "run.json", _remove_key("prompt"), "run.json: missing key(s) prompt"),
    ("lora", "run.json", _remove_key("base_model"), "run.json: missing key(s) base_model"),
    ("full", "run.json", _json_edit(lambda v: v.update(prompt={"bogus": 1})), "bad 'prompt'"),
    ("pop", "popularity.json", _bytes(b"{"), "popularity.json:1: bad JSON"),
    ("pop", "popularity.json", _bytes(b'{"Heat (1995)": "many"}'), "non-negative integers"),
    ("pop", "popularity.json", _bytes(b'{"Nope": 3}'), "popularity.json: popularity counts"),
    ("pop", "items.parquet", _truncate, "items.parquet: not a readable Parquet file"),
    ("pop", "items.parquet", _bytes(b"PAR1 garbage PAR1"), "items.parquet: not a readable"),
    ("sasrec", "model.safetensors", _truncate, "model.safetensors: not SASRec weights"),
    ("sasrec", "model.safetensors", _bytes(b"\x00" * 64), "model.safetensors: not SASRec weights"),
    ("sasrec", "config.json", _remove_key("num_blocks"), "config.json: missing key 'num_blocks'"),
    ("sasrec", "config.json", _json_edit(lambda v: v.update(hidden_size=64)), "matching config"),
    ("sasrec", "config.json", _json_edit(lambda v: v.update(num_items=3)), "bad SASRec config"),
    ("sasrec", "config.json", _json_edit(lambda v: v.update(dropout="x")), "bad SASRec config"),
    ("lora", "adapter/adapter_config.json", _bytes(b"{oops"), "cannot load the LoRA adapter"),
    ("lora", "adapter/adapter_model.safetensors", _truncate, "cannot load the LoRA adapter"),
    ("full", "model/model.safetensors", _bytes(b"garbage" * 9), "cannot load model"),
    ("full", "model/config.json", _bytes(b"{"), "cannot load model"),
    ("full", "tokenizer/tokenizer.json", _bytes(b"{"), "cannot load tokenizer"),
]


@pytest.mark.parametrize(
    "kind, name, corrupt, message",
    RUN_CASES,
    ids=[f"{kind}-{name}-{i}" for i, (kind, name, _, _) in enumerate(RUN_CASES)],
)
def test_corrupt_run_files(runs, tmp_path, capsys, kind, name, corrupt, message):
    run = _copy(runs, tmp_path, kind)
    corrupt(run / name)
    before = snapshot(tmp_path)
    code, out, err = run_main(["recommend", "--run", run, *RECOMMEND[kind]], capsys)
    assert_one_line_error(code, err, message)
    assert snapshot(tmp_path) == before


DATA_CASES = [
    ("meta.json", _bytes(b"not json"), "meta.json:1: bad JSON"),
    ("meta.json", _remove_key("fingerprint"), "meta.json: missing the dataset 'fingerprint'"),
    ("interactions.parquet", _truncate, "interactions.parquet: not a readable Parquet file"),
    ("items.parquet", _bytes(b""), "items.parquet: not a readable Parquet file"),
]


@pytest.mark.parametrize("name, corrupt, message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_corrupt_dataset_files(runs, tmp_path, capsys, name, corrupt, message):
    data = _copy(runs, tmp_path, "data")
    corrupt(data / name)
    before = snapshot(tmp_path)
    for args in (
        ["data", "stats", data],
        ["evaluate", "--run", runs / "pop", "--data", data, "-o", tmp_path / "out"],
    ):
        code, _, err = run_main(args, capsys)
        assert_one_line_error(code, err, name, message)
    assert snapshot(tmp_path) == before


def test_dataset_parquet_without_its_columns(runs, tmp_path, capsys):
    import pandas as pd

    data = _copy(runs, tmp_path, "data")
    pd.DataFrame({"id": ["1"], "name": ["x"]}).to_parquet(data / "items.parquet")
    code, _, err = run_main(["data", "stats", data], capsys)
    assert_one_line_error(code, err, "items.parquet: missing column(s) item_id, title")


def test_corrupt_results_for_compare(runs, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", "--run", runs / "pop", "--data", runs / "data", "-o", out]
    assert run_main(args, capsys)[0] == 0
    other = Path(shutil.copytree(out, tmp_path / "other"))
    (other / "results.json").write_text('{"metrics": ')
    before = snapshot(tmp_path)
    code, _, err = run_main(["compare", out, other], capsys)
    assert_one_line_error(code, err, "results.json:1: bad JSON")
    assert snapshot(tmp_path) == before


def test_device_tpu_is_refused_before_any_work(runs, tmp_path):
    args = ["baseline", "sasrec", "--data", runs / "data", "-o", tmp_path / "s", "--device", "tpu"]
    result = run_entry_point(args)
    assert_one_line_error(result.returncode, result.stderr, "--device 'tpu': not a torch device")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-train-samples", "-1"], "--max-train-samples must be an integer at least 1"),
        (["--learning-rate", "-1"], "--learning-rate must be a number greater than 0"),
        (["--learning-rate", "nan"], "--learning-rate must be a number greater than 0"),
        (["--epochs", "0"], "--epochs must be a number greater than 0"),
        (["--max-steps", "0"], "--max-steps must be an integer at least 1"),
        (["--lora-dropout", "1.5"], "--lora-dropout must be a number in [0, 1)"),
        (["--alpha", "-0.1"], "--alpha must be a number at least 0"),
        (["--warmup-steps", "-3"], "--warmup-steps must be an integer at least 0"),
    ],
)
def test_invalid_training_numbers_are_refused_before_any_work(
    runs, tmp_path, capsys, extra, message
):
    run = tmp_path / "run"
    args = ["train", "--data", runs / "data", "--model", "no-such-model", "-o", run, *extra]
    code, _, err = run_main(args, capsys)  # the model is never looked at
    assert_one_line_error(code, err, message)
    assert not run.exists()


def test_invalid_numbers_in_a_preset_are_refused(runs, tmp_path, capsys):
    preset = tmp_path / "preset.yaml"
    preset.write_text("epochs: many\n")
    args = ["train", "--config", preset, "--data", runs / "data", "-o", tmp_path / "run"]
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, "--epochs must be a number greater than 0, not 'many'")


def test_untrained_runs_are_impossible(runs, tmp_path):
    """--epochs 0 used to succeed with an untrained run; through the entry point it stops."""
    args = ["train", "--data", runs / "data", "-o", tmp_path / "run", "--epochs", "0"]
    result = run_entry_point(args)
    assert_one_line_error(result.returncode, result.stderr, "--epochs")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def scratch(runs, tmp_path_factory):
    """Copies of the pop run and the dataset whose files the property tests overwrite."""
    root = tmp_path_factory.mktemp("scratch")
    return {name: Path(shutil.copytree(runs / name, root / name)) for name in ("pop", "data")}


def _load_pop(folder: Path):
    from cftrec.runs import load_recommender

    return load_recommender(folder)


def _load_data(folder: Path):
    from cftrec.data.dataset import Dataset

    return Dataset.load(folder).catalog


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(
        [
            ("pop", "run.json", _load_pop),
            ("pop", "popularity.json", _load_pop),
            ("pop", "items.parquet", _load_pop),
            ("data", "meta.json", _load_data),
            ("data", "items.parquet", _load_data),
            ("data", "interactions.parquet", _load_data),
        ]
    ),
    cut=st.floats(0, 1),
    garbage=st.binary(max_size=64),
)
def test_random_truncations_and_bytes_load_or_fail_with_one_line(
    runs, scratch, target, cut, garbage
):
    """Every reader, given a truncated file with random bytes appended: it loads, or it raises
    a CftrecError naming the file on one line; never another exception."""
    folder, name, load = target
    original = (runs / folder / name).read_bytes()
    path = scratch[folder] / name
    path.write_bytes(original[: int(len(original) * cut)] + garbage)
    try:
        load(scratch[folder])
    except CftrecError as error:
        assert name in str(error) and "\n" not in str(error)
    finally:
        path.write_bytes(original)


def test_recommenders_do_not_import_the_run_loader():
    """The import circle runs -> recommenders -> runs is cut: the run-kind registry names the
    recommenders by module path and imports one only when a run of its kind is loaded."""
    code = (
        "import sys, cftrec.runs, cftrec.runs.info, cftrec.runs.llm; "
        "sys.exit(any(m in sys.modules for m in ('cftrec.decoding.recommender', "
        "'cftrec.baselines.sasrec', 'cftrec.baselines.popularity')))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
