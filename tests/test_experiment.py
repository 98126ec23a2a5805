"""The pipeline behind `cftrec demo` and the accuracy suite, end to end at tiny size: every step
runs the real CLI, a second run of the same configuration gives the same metrics, and a rerun
into the same folder skips what is complete; with seeds, the report matches the per-seed runs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cftrec.evaluation.significance import paired_permutation_pvalue
from cftrec.experiment import ExperimentSettings, run_experiment, seeds_table, summary_table
from training_fixtures import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


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
    # complete steps are skipped, and keep the time they took when they ran
    assert rerun["timings_s"]["train cft"] == first["timings_s"]["train cft"] > 0
    assert rerun["metrics"]["cft"]["metrics"] == first["metrics"]["cft"]["metrics"]


def test_accuracy_suite_with_seeds(tmp_path, tiny_model_dir):
    """`benchmarks/accuracy/run.py tiny --seeds 1 2`: every method trains and evaluates once per
    seed; the report's mean, spread and paired differences match the per-seed outputs."""
    data = write_tiny_dataset(tmp_path / "data")
    out, reports = tmp_path / "work", tmp_path / "reports"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "accuracy" / "run.py"), "tiny",
        "--seeds", "1", "2", "--methods", "sft", "cft", "--model", str(tiny_model_dir),
        "--data", str(data), "--out", str(out), "--results-dir", str(reports),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((reports / "accuracy-tiny-seeds.json").read_text())
    assert report["seeds"] == [1, 2]
    assert "seeds: 1, 2" in (reports / "accuracy-tiny-seeds.md").read_text()

    def seed_output(seed, method, name):
        folder = out / f"seed-{seed}"
        if name == "run.json":
            return json.loads((folder / "runs" / method / name).read_text())
        results = folder / "results" / method
        cases = (results / "cases.jsonl").read_text().splitlines()
        return json.loads((results / "results.json").read_text()), [json.loads(c) for c in cases]

    for seed in (1, 2):
        assert seed_output(seed, "cft", "run.json")["seed"] == seed
    runs = {(s, m): seed_output(s, m, "results") for s in (1, 2) for m in ("sft", "cft")}
    for method in ("sft", "cft"):
        for name, spread in report["metrics"][method].items():
            if name == "num_cases":
                continue
            values = [runs[(s, method)][0]["metrics"][name] for s in (1, 2)]
            assert spread["values"] == values
            assert spread["mean"] == pytest.approx(sum(values) / 2)
            assert spread["std"] == pytest.approx(statistics.stdev(values))
    comparison = report["comparisons"]["cft"]
    for name, pooled in comparison["pooled"]["metrics"].items():
        diffs = [runs[(s, "cft")][0]["metrics"][name] - runs[(s, "sft")][0]["metrics"][name]
                 for s in (1, 2)]  # fmt: skip
        assert [row[name]["diff"] for row in comparison["per_seed"]] == pytest.approx(diffs)
        assert pooled["diff"] == pytest.approx(sum(diffs) / 2)
        assert comparison["same_sign"][name] == (len({np.sign(d) for d in diffs}) == 1)
    # pooled test: each case's hit averaged over the seeds, cases resampled
    k = 3
    hits = {m: np.mean([[1.0 if c["rank"] and c["rank"] <= k else 0.0 for c in runs[(s, m)][1]]
                        for s in (1, 2)], axis=0) for m in ("sft", "cft")}  # fmt: skip
    pooled = comparison["pooled"]
    assert pooled["runs"] == {"a": 2, "b": 2}
    assert pooled["metrics"][f"hr@{k}"]["p_value"] == paired_permutation_pvalue(
        hits["sft"], hits["cft"], pooled["resamples"], seed=pooled["seed"]
    )


def test_seeds_table_shows_each_seed_with_its_p_value_and_whether_the_signs_agree():
    def row(diff, p):
        return {"diff": diff, "ci95": [diff - 0.01, diff + 0.01], "p_value": p}

    per_seed = [
        {"ndcg@10": row(0.0053, 0.003), "hr@10": row(0.0074, 0.04)},
        {"ndcg@10": row(-0.0012, 0.61), "hr@10": row(0.0021, 0.5)},
    ]
    summary = {
        "seeds": [1, 2],
        "reference": "sft",
        "metrics": {
            "sft": {"num_cases": 943, "ndcg@10": {"mean": 0.006, "std": 0.001}},
            "cft": {"num_cases": 943, "ndcg@10": {"mean": 0.008, "std": None}},
        },
        "comparisons": {
            "cft": {
                "per_seed": per_seed,
                "pooled": {"metrics": {"ndcg@10": row(0.002, 0.2), "hr@10": row(0.005, 0.1)}},
                "same_sign": {"ndcg@10": False, "hr@10": True},
            }
        },
    }
    lines = seeds_table(summary).splitlines()
    assert lines[2].startswith("| sft | 943 | n/a | 0.0060 ± 0.0010 |")  # no ndcg@5 here
    assert lines[3].startswith("| cft | 943 | n/a | 0.0080 |")  # no spread given
    ndcg, hr = (line for line in lines if line.startswith("| cft - sft"))
    assert ndcg == (
        "| cft - sft | ndcg@10 | +0.0053 (p=0.003) | -0.0012 (p=0.610) "
        "| +0.0020 [-0.0080, +0.0120], p=0.200 | no |"
    )
    assert hr.endswith("| yes |")


def test_a_comparison_is_redone_once_a_row_is_evaluated_again(tmp_path, monkeypatch):
    """A comparison file is reused only while it is newer than both rows' results; a row
    evaluated again since (another protocol, a fixed run) makes the step compare again,
    overwriting the file it wrote before."""
    from cftrec.experiment import steps

    for row in ("sft", "cft"):
        (tmp_path / row).mkdir()
        (tmp_path / row / "results.json").write_text("{}")
    target = tmp_path / "compare-sft-vs-cft.json"
    calls = []

    def fake_run_step(title, args, output, force=False, launcher=()):
        calls.append((force, "--overwrite" in args))
        output.write_text(json.dumps({"metrics": {}}))

    monkeypatch.setattr(steps, "run_step", fake_run_step)
    steps.compare_step(tmp_path, "sft", "cft", force=False)
    assert calls[-1] == (False, False)  # nothing to redo: no comparison yet
    os.utime(target, (1e9, 1e9))  # older than both rows
    steps.compare_step(tmp_path, "sft", "cft", force=False)
    assert calls[-1] == (True, True)
    os.utime(tmp_path / "sft" / "results.json", (1e9 - 10, 1e9 - 10))
    os.utime(tmp_path / "cft" / "results.json", (1e9 - 10, 1e9 - 10))
    os.utime(target, (1e9, 1e9))  # newer than both: reused as it stands
    steps.compare_step(tmp_path, "sft", "cft", force=False)
    assert calls[-1] == (False, False)
    assert not steps.outdated(tmp_path / "missing.json", [tmp_path / "sft"])
