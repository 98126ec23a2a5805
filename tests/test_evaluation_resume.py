"""An interrupted evaluation continues with `--resume`: it decodes only the cases not finished,
and ends with the output an uninterrupted evaluation writes. Progress is never thrown away
silently, nor reused for other settings or another catalogue."""

from __future__ import annotations

import fcntl
import json
import shutil

import pytest

from conftest import make_tiny_llama
from test_evaluation_outputs import write_catalogue_dataset
from training_fixtures import run_cli, save_untrained_llm_run


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    from cftrec.data.dataset import Dataset

    base = tmp_path_factory.mktemp("resume")
    data = write_catalogue_dataset(base / "data", cold=False)
    dataset = Dataset.load(data)
    save_untrained_llm_run(base / "llm", make_tiny_llama(tokenizer, seed=5), tokenizer, dataset)
    # the reference: one uninterrupted evaluation
    reference = base / "reference"
    assert run_cli(_args(base, data, reference)) == 0
    return base, data, reference


def _args(base, data, out, *extra, batch_size=2):
    return ["evaluate", "--run", str(base / "llm"), "--data", str(data), "--beams", "4",
            "--batch-size", str(batch_size), "-o", str(out), *extra]  # fmt: skip


def _cases(out):
    return [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]


def _interrupt_after(monkeypatch, batches: int, flush_each: bool = True):
    """The evaluation is interrupted (Ctrl-C) after `batches` batches; with `flush_each`, every
    batch goes to disk at once."""
    from cftrec.evaluation import progress

    if flush_each:
        monkeypatch.setattr(progress, "FLUSH_SECONDS", 0.0)
    original = progress.EvaluationProgress.record
    seen = []

    def record(self, seconds, records):
        original(self, seconds, records)
        seen.append(len(records))
        if len(seen) == batches:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.EvaluationProgress, "record", record)


def _interrupted(setup, monkeypatch, name, batches=2, flush_each=True):
    from cftrec.evaluation.evaluate import EvaluationSettings, evaluate
    from cftrec.evaluation.progress import progress_folder

    base, data, _ = setup
    out = base / name
    _interrupt_after(monkeypatch, batches, flush_each)
    with pytest.raises(KeyboardInterrupt):
        evaluate(base / "llm", data, out, EvaluationSettings(beams=4, batch_size=2), False)
    monkeypatch.undo()
    assert not out.exists()  # nothing half-written where the output goes
    return out, progress_folder(out)


def test_resume_decodes_only_the_rest_and_matches_an_uninterrupted_run(setup, monkeypatch):
    base, data, reference = setup
    out, folder = _interrupted(setup, monkeypatch, "resumed")
    saved = [json.loads(line) for line in (folder / "batches-0.jsonl").read_text().splitlines()]
    assert [len(batch["records"]) for batch in saved] == [2, 2]
    # Mark one finished case: if resume decodes it again, the mark disappears.
    saved[0]["records"][0]["scores"][0] = 123.0
    (folder / "batches-0.jsonl").write_text("".join(json.dumps(b) + "\n" for b in saved))

    assert run_cli(_args(base, data, out, "--resume", batch_size=3)) == 0  # batch size may change
    results = json.loads((out / "results.json").read_text())
    assert results["resumed"]["cases"] == 4
    assert results["resumed"]["seconds"] == pytest.approx(sum(b["seconds"] for b in saved))
    assert not folder.exists()  # the progress is in the output now
    cases, expected = _cases(out), _cases(reference)
    assert cases[0]["scores"][0] == 123.0  # kept, not decoded again
    cases[0]["scores"][0] = expected[0]["scores"][0]
    assert [c["case_id"] for c in cases] == [c["case_id"] for c in expected]
    for got, want in zip(cases, expected, strict=True):
        assert got["titles"] == want["titles"]
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-4)
    assert results["metrics"] == json.loads((reference / "results.json").read_text())["metrics"]


def test_earlier_progress_is_never_discarded_silently(setup, monkeypatch, capsys):
    base, data, _ = setup
    out, folder = _interrupted(setup, monkeypatch, "refused")
    before = (folder / "batches-0.jsonl").read_bytes()
    capsys.readouterr()

    assert run_cli(_args(base, data, out)) == 2  # neither --resume nor --overwrite
    error = capsys.readouterr().err.strip()
    assert "4 cases" in error and "--resume" in error and "--overwrite" in error
    assert len(error.splitlines()) == 1
    assert (folder / "batches-0.jsonl").read_bytes() == before and not out.exists()

    # other settings: --resume refuses and names what differs
    assert run_cli(_args(base, data, out, "--resume", "--beams", "3")) == 2
    error = capsys.readouterr().err
    assert "beams" in error and "--overwrite" in error
    assert (folder / "batches-0.jsonl").read_bytes() == before

    # --overwrite starts over
    assert run_cli(_args(base, data, out, "--overwrite")) == 0
    assert "resumed" not in json.loads((out / "results.json").read_text())
    assert not folder.exists()


def test_another_catalogue_is_other_work(setup, monkeypatch, capsys):
    """A live catalogue changed between the sessions: the earlier lists ranked other titles."""
    base, data, _ = setup
    out, folder = _interrupted(setup, monkeypatch, "catalogue")
    settings = json.loads((folder / "settings.json").read_text())
    settings["catalogue_sha256"] = "0" * 64
    (folder / "settings.json").write_text(json.dumps(settings))
    capsys.readouterr()
    assert run_cli(_args(base, data, out, "--resume")) == 2
    assert "catalogue_sha256" in capsys.readouterr().err


def test_a_torn_last_batch_is_decoded_again(setup, monkeypatch):
    base, data, reference = setup
    out, folder = _interrupted(setup, monkeypatch, "torn", batches=3)
    batches = folder / "batches-0.jsonl"
    lines = batches.read_text().splitlines(keepends=True)
    batches.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    assert run_cli(_args(base, data, out, "--resume")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["resumed"]["cases"] == 4
    assert [c["titles"] for c in _cases(out)] == [c["titles"] for c in _cases(reference)]


def test_resume_without_progress_evaluates_everything(setup):
    base, data, reference = setup
    out = base / "fresh"
    assert run_cli(_args(base, data, out, "--resume")) == 0
    results = json.loads((out / "results.json").read_text())
    assert "resumed" not in results and results["num_cases"] == 8
    assert [c["titles"] for c in _cases(out)] == [c["titles"] for c in _cases(reference)]


def test_one_writer_and_only_its_own_folder(setup, monkeypatch, capsys):
    from cftrec.evaluation.progress import progress_folder

    base, data, _ = setup
    out, folder = _interrupted(setup, monkeypatch, "locked")
    with open(folder / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        capsys.readouterr()
        assert run_cli(_args(base, data, out, "--resume")) == 2
        assert "another `cftrec evaluate`" in capsys.readouterr().err
    shutil.rmtree(folder)

    foreign = progress_folder(base / "foreign")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert run_cli(_args(base, data, base / "foreign", "--resume")) == 2
    assert "not written by `cftrec evaluate`" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


def test_kept_batches_are_written_when_interrupted(setup, monkeypatch):
    """Batches wait in memory for FLUSH_SECONDS of work; an interruption writes them."""
    out, folder = _interrupted(setup, monkeypatch, "flushed", batches=3, flush_each=False)
    lines = (folder / "batches-0.jsonl").read_text().splitlines()
    assert sum(len(json.loads(line)["records"]) for line in lines) == 6


def test_a_damaged_progress_file_is_named(setup, monkeypatch, capsys):
    base, data, _ = setup
    out, folder = _interrupted(setup, monkeypatch, "damaged", batches=3)
    batches = folder / "batches-0.jsonl"
    lines = batches.read_text().splitlines(keepends=True)
    batches.write_text(lines[0] + "not json\n" + lines[2])
    capsys.readouterr()
    assert run_cli(_args(base, data, out, "--resume")) == 2
    assert f"{batches}:2: not a batch of evaluated cases" in capsys.readouterr().err
