"""The pipeline behind `cftrec demo` and the accuracy suite, end to end at tiny size: every step
runs the real CLI, a second run of the same configuration gives the same metrics, and a rerun
into the same folder skips what is complete."""

from __future__ import annotations

from cftrec.experiment import ExperimentSettings, run_experiment, summary_table


def _settings(model_dir) -> ExperimentSettings:
    return ExperimentSettings(
        model=str(model_dir),
        methods=("pop", "sft", "cft"),
        max_train_samples=8,
        max_eval_samples=4,
        batch_size=4,
        eval_limit=6,
        beams=3,
    )


def test_pipeline_is_reproducible_and_resumable(tmp_path, tiny_model_dir):
    first = run_experiment(_settings(tiny_model_dir), tmp_path / "a")
    second = run_experiment(_settings(tiny_model_dir), tmp_path / "b")

    for method in ("pop", "sft", "cft"):
        assert first["metrics"][method]["num_cases"] == 6
        assert first["metrics"][method]["metrics"] == second["metrics"][method]["metrics"]
    assert set(first["comparisons"]) == {"pop", "cft"}  # each against the sft reference
    table = summary_table(first)
    assert table.count("\n") == 1 + 3  # header, separator, one row per method
    assert "| sft | 6 |" in table and "reference" in table

    rerun = run_experiment(_settings(tiny_model_dir), tmp_path / "a")
    assert rerun["timings_s"]["train cft"] == 0.0  # complete steps are skipped
    assert rerun["metrics"]["cft"]["metrics"] == first["metrics"]["cft"]["metrics"]
