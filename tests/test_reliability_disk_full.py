"""A full disk on every write path: prepare, train (a checkpoint, the final weights), evaluate,
data export and the served catalogue's overlay. ENOSPC is injected into the writer each one
uses (in the form that writer reports it); every command then ends with exit status 2 and one
line naming the folder and the space free, leaves nothing half-written for a later run to
trust, and succeeds, or resumes, once the writer works again."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import httpx
import pytest
from safetensors import SafetensorError

from cftrec.errors import CftrecError
from cftrec.files import DiskFull, atomic_directory, is_disk_full
from cftrec.runs.llm import load_llm_run
from cftrec.serving.app import create_app
from cftrec.serving.service import JOURNAL_FILE, OVERLAY_FILE, CatalogueNotSaved, RecommendService
from hardening_fixtures import assert_one_line_error, leftover_temporaries, run_main
from serving_fixtures import make_dataset, make_llm_run, running_server
from training_fixtures import one_thread, write_tiny_dataset  # noqa: F401 (fixture)

NO_SPACE = "No space left on device"
# how safetensors words it (its own error type, no errno)
SAFETENSORS_NO_SPACE = f"Error while serializing: I/O error: {NO_SPACE} (os error 28)"


def no_space() -> OSError:
    return OSError(errno.ENOSPC, NO_SPACE)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp_path/raw (RecBole files, the input of `data prepare`), data (a dataset), pop (a
    popularity run over it)."""
    from cftrec.baselines.popularity import train_popularity
    from cftrec.data.dataset import Dataset
    from cftrec.data.export import export

    monkeypatch.chdir(tmp_path)
    data = write_tiny_dataset(tmp_path / "data")
    export(Dataset.load(data), "recbole", tmp_path / "raw", name="tiny")
    train_popularity(data, tmp_path / "pop")
    return {"raw": tmp_path / "raw", "data": data, "pop": tmp_path / "pop"}


def _assert_disk_full_line(code: int, err: str, folder: Path, *fragments: str) -> None:
    """Exit status 2 and one error line (after the command's progress lines, if any)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]), err
    assert_one_line_error(
        code, errors[0], f"{folder}: no space left on device (", " free", *fragments
    )


# ------------------------------------------------------------------ recognising a full disk


@pytest.mark.parametrize(
    "error",
    [
        no_space(),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        SafetensorError(SAFETENSORS_NO_SPACE),
        # pyarrow: an OSError whose message carries the errno
        OSError(f"Error writing bytes to file. Detail: [errno 28] {NO_SPACE}"),
    ],
)
def test_disk_full_is_recognised_however_the_writer_reports_it(error, tmp_path):
    assert is_disk_full(error, tmp_path)


def test_a_writer_that_gives_no_reason_counts_as_disk_full_only_on_a_full_disk(
    tmp_path, monkeypatch
):
    # torch.save on a full disk: a RuntimeError that does not say why
    silent = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert not is_disk_full(silent, tmp_path)
    assert not is_disk_full(ValueError("bad value"), tmp_path)
    monkeypatch.setattr("cftrec.files.free_bytes", lambda path: 4096)
    assert is_disk_full(silent, tmp_path)
    assert not is_disk_full(ValueError("bad value"), tmp_path)  # not a write error
    assert not is_disk_full(CftrecError(NO_SPACE), tmp_path)  # already one line
    assert not is_disk_full(KeyboardInterrupt(), tmp_path)


def test_atomic_directory_leaves_nothing_and_names_the_target(tmp_path):
    target = tmp_path / "out"
    with (
        pytest.raises(DiskFull) as raised,
        atomic_directory(target, "test", needed_bytes=3 << 20) as tmp,
    ):
        (tmp / "part").write_bytes(b"x" * 100)
        raise no_space()
    message = str(raised.value)
    assert message.startswith(f"{target}: no space left on device (")
    assert message.endswith(" free, at least 3.0 MiB needed); nothing was changed")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the commands


def test_prepare(tree, capsys, monkeypatch):
    out = tree["data"].parent / "prepared"

    def half_written_parquet(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1")  # what pyarrow had written when the disk filled
        raise OSError(errno.ENOSPC, f"Error writing bytes to file. Detail: [errno 28] {NO_SPACE}")

    args = ["data", "prepare", "recbole", tree["raw"], "-o", out]
    with monkeypatch.context() as patch:
        patch.setattr("pandas.DataFrame.to_parquet", half_written_parquet)
        code, _, err = run_main(args, capsys)
    _assert_disk_full_line(code, err, out, "nothing was changed")
    assert not out.exists() and leftover_temporaries(out.parent) == []
    assert run_main(args, capsys)[0] == 0 and (out / "meta.json").exists()


def test_export(tree, capsys, monkeypatch):
    out = tree["data"].parent / "exported"

    def full_after_a_line(path, mode="r", **kwargs):
        with open(path, mode, **kwargs) as handle:
            handle.write("partial\n")
        raise no_space()

    args = ["data", "export", tree["data"], "--format", "d3", "-o", out]
    with monkeypatch.context() as patch:
        patch.setattr("cftrec.data.export.open", full_after_a_line, raising=False)
        code, _, err = run_main(args, capsys)
    _assert_disk_full_line(code, err, out)
    assert not out.exists() and leftover_temporaries(out.parent) == []
    assert run_main(args, capsys)[0] == 0 and any(out.glob("*.csv"))


def test_evaluate(tree, capsys, monkeypatch):
    out = tree["data"].parent / "eval"
    from cftrec.evaluation import summary as evaluation
    from cftrec.evaluation.progress import progress_folder

    def half_written_cases(path, records):
        Path(path).write_text('{"case_id": ', encoding="utf-8")
        raise no_space()

    args = ["evaluate", "--run", tree["pop"], "--data", tree["data"], "-o", out]
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "write_cases", half_written_cases)
        code, _, err = run_main(args, capsys)
    _assert_disk_full_line(code, err, out)
    assert not out.exists() and leftover_temporaries(out.parent) == []
    # the decoded cases are kept: once there is space, --resume only writes the output
    assert progress_folder(out).exists()
    assert run_main([*args, "--resume"], capsys)[0] == 0 and (out / "results.json").exists()
    assert json.loads((out / "results.json").read_text())["resumed"]["cases"] > 0
    assert not progress_folder(out).exists()


class FullDiskSafetensors:
    """transformers' safetensors writer, failing as safetensors does on a full disk (a partial
    file, then its own error type) for the files `failing(path)` picks."""

    def __init__(self, failing):
        from transformers import modeling_utils

        self.real = modeling_utils.safe_save_file
        self.failing = failing

    def __call__(self, tensors, filename, metadata=None):
        if not self.failing(Path(filename)):
            return self.real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 64)
        raise SafetensorError(SAFETENSORS_NO_SPACE)


@pytest.mark.slow
def test_train_checkpoint_then_final_weights_then_resume(tmp_path, tiny_model_dir, capsys):
    data = write_tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    # one epoch of 9 steps, a checkpoint every 3
    args = ["train", "--data", data, "--model", tiny_model_dir, "--batch-size", "4",
            "--method", "cft", "--epochs", "1", "--eval-steps", "3", "-o", run]  # fmt: skip
    safetensors_writer = "transformers.modeling_utils.safe_save_file"

    # 1. the second checkpoint does not fit: it is removed, the first one is kept
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(safetensors_writer, FullDiskSafetensors(lambda p: "checkpoint-6" in p.parts))
        code, _, err = run_main(args, capsys)
    _assert_disk_full_line(code, err, checkpoints, "checkpoint-3 took ", "--resume")
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (run / "run.json").exists() and leftover_temporaries(tmp_path) == []

    # 2. resumed, training ends, but the finished run does not fit: RUN keeps its checkpoints
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            safetensors_writer, FullDiskSafetensors(lambda p: "checkpoints" not in p.parts)
        )
        code, out, err = run_main([*args, "--resume"], capsys)
    assert "resuming from checkpoint-3" in out
    _assert_disk_full_line(code, err, run.resolve(), "at least ", "needed", "--resume")
    assert not (run / "run.json").exists() and not (run / "model").exists()
    assert (checkpoints / "checkpoint-9" / "trainer_state.json").exists()
    assert leftover_temporaries(tmp_path) == []

    # 3. with room again, --resume finishes the run
    code, out, err = run_main([*args, "--resume"], capsys)
    assert code == 0, err
    assert "resuming from checkpoint-9" in out
    info = json.loads((run / "run.json").read_text())
    assert info["summary"]["steps"] == 9 and not checkpoints.exists()
    assert load_llm_run(run).model is not None


# ------------------------------------------------------------------ the served catalogue


class FullDiskFile:
    """A file opened by cftrec's atomic writer on a full disk: a few bytes go in, then ENOSPC."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, text):
        self.handle.write(text[:8])
        self.handle.flush()
        raise no_space()


@pytest.fixture
def llm_run(tmp_path, tokenizer):
    return make_llm_run(tmp_path, make_dataset(tmp_path), tokenizer)


def _full_disk(patch) -> None:
    real_fdopen = os.fdopen
    patch.setattr("cftrec.files.os.fdopen", lambda *a, **k: FullDiskFile(real_fdopen(*a, **k)))


def test_an_overlay_that_cannot_be_saved_changes_nothing(llm_run):
    service = RecommendService.load(llm_run, method="exhaustive")
    catalog = service.catalog
    with pytest.MonkeyPatch.context() as patch:
        _full_disk(patch)
        with pytest.raises(CatalogueNotSaved) as raised:
            service.add_items([("n1", "The Matrix (1999)")])
    assert str(raised.value) == (
        f"{llm_run / JOURNAL_FILE}: cannot save the catalogue change (no space left on "
        "device); nothing changed"
    )
    assert service.catalog is catalog and "n1" not in service.catalog
    assert service.overlay == {"added": [], "removed": []}
    assert not (llm_run / OVERLAY_FILE).exists() and not (llm_run / JOURNAL_FILE).exists()
    assert leftover_temporaries(llm_run) == []


def test_http_answers_507_and_serves_the_catalogue_unchanged(llm_run):
    service = RecommendService.load(llm_run, method="exhaustive")
    items = len(service.catalog)
    new = {"items": [{"item_id": "n1", "title": "The Matrix (1999)"}]}
    with running_server(create_app(service)) as url:
        with pytest.MonkeyPatch.context() as patch:
            _full_disk(patch)
            refused = httpx.post(f"{url}/items", json=new, timeout=60)
        assert refused.status_code == 507
        detail = refused.json()["detail"]
        assert "no space left on device" in detail and "nothing changed" in detail
        assert "\n" not in detail
        health = httpx.get(f"{url}/health").json()
        assert health["catalogue"]["items"] == items and health["catalogue"]["added"] == 0
        found = httpx.get(f"{url}/items", params={"query": "Matrix"}).json()["items"]
        assert found == []
        assert not (llm_run / OVERLAY_FILE).exists() and leftover_temporaries(llm_run) == []
        # with room again the same change is made and saved
        assert httpx.post(f"{url}/items", json=new, timeout=60).status_code == 200
    assert json.loads((llm_run / OVERLAY_FILE).read_text())["added"][0]["item_id"] == "n1"
