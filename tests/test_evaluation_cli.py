"""`cftrec evaluate` / `cftrec compare` end to end on a tiny dataset, a tiny LLM run and a
popularity run; metrics recomputed independently from the written cases."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cftrec.files import OUTPUT_MARKER
from conftest import make_tiny_llama
from training_fixtures import TITLES, run_cli, save_untrained_llm_run, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    from cftrec.data.dataset import Dataset

    base = tmp_path_factory.mktemp("evaluation")
    data = write_tiny_dataset(base / "data", users=10)
    dataset = Dataset.load(data)
    save_untrained_llm_run(base / "llm", make_tiny_llama(tokenizer, seed=2), tokenizer, dataset)
    run_cli(["baseline", "pop", "--data", str(data), "-o", str(base / "pop")])
    return base, data, dataset


def evaluate(base, data, run, name, *extra):
    out = base / "results" / name
    code = run_cli(["evaluate", "--run", str(base / run), "--data", str(data), "-o", str(out),
                    *extra])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    return out, results, cases


def check_metrics_from_cases(results, cases, dataset):
    """Recompute HR/NDCG from the raw per-case title lists, independently of the code."""
    for k in (1, 3, 5, 10, 20, 50):
        hits, gains = 0.0, 0.0
        for case in cases:
            target = dataset.catalog.title(case["target"])
            top = case["titles"][:k]
            if target in top:
                hits += 1
                gains += 1 / math.log2(top.index(target) + 2)
        assert results["metrics"][f"hr@{k}"] == pytest.approx(hits / len(cases))
        assert results["metrics"][f"ndcg@{k}"] == pytest.approx(gains / len(cases))


def test_evaluate_llm_beam_and_exhaustive(setup):
    base, data, dataset = setup
    n = len(TITLES)
    out, beam, cases = evaluate(base, data, "llm", "beam", "--beams", str(n), "--batch-size", "3")
    assert {p.name for p in out.iterdir()} == {
        "results.json", "results.md", "cases.jsonl", "popularity.png", OUTPUT_MARKER
    }  # fmt: skip
    assert beam["num_cases"] == len(dataset.samples("test")) == len(cases) == 10
    assert beam["invalid_rate"] == 0.0
    assert beam["case_ids"] == [c["case_id"] for c in cases]
    assert beam["data"]["fingerprint"] == dataset.fingerprint == beam["run"]["data_fingerprint"]
    assert beam["decoding"]["method"] == "beam" and beam["decoding"]["beams"] == n
    check_metrics_from_cases(beam, cases, dataset)
    assert all(len(c["titles"]) == n and len(set(c["titles"])) == n for c in cases)
    # exhaustive is the same full ranking when beams >= titles
    _, exhaustive, ex_cases = evaluate(base, data, "llm", "exhaustive", "--decoding", "exhaustive")
    assert [c["titles"] for c in ex_cases] == [c["titles"] for c in cases]
    assert exhaustive["metrics"] == pytest.approx(beam["metrics"])
    # coverage and popularity from the lists, by hand
    seen = {t for c in cases for t in c["titles"][:10]}
    assert beam["coverage@10"] == pytest.approx(len(seen) / n)
    popularity = dataset.train_popularity()
    slots = [popularity.get(t, 0) for c in cases for t in c["titles"][:10]]
    assert beam["mean_popularity@10"] == pytest.approx(sum(slots) / len(slots))


def test_evaluate_grounding_limit_and_valid_split(setup):
    base, data, dataset = setup
    _, results, cases = evaluate(
        base, data, "llm", "ground", "--decoding", "grounding", "--beams", "2", "--limit", "4",
        "--split", "valid",
    )  # fmt: skip
    assert results["num_cases"] == 4 and results["data"]["split"] == "valid"
    expected = [f"{s.user_id}#0" for s in dataset.samples("valid")[:4]]
    assert results["case_ids"] == expected
    generations = [g for c in cases for g in c["generations"]]
    assert len(generations) == 8
    invalid = sum(not g["valid"] for g in generations) / 8
    assert results["invalid_rate"] == pytest.approx(invalid)
    check_metrics_from_cases(results, cases, dataset)


def test_evaluate_pop_run_and_compare(setup, capsys):
    base, data, dataset = setup
    _, pop, pop_cases = evaluate(base, data, "pop", "pop")
    counts = dataset.train_popularity()
    expected = sorted(dataset.catalog.titles, key=lambda t: (-counts.get(t, 0), t))
    assert all(c["titles"] == expected for c in pop_cases)
    assert pop["decoding"] is None
    check_metrics_from_cases(pop, pop_cases, dataset)

    out_llm, _, _ = evaluate(base, data, "llm", "for-compare", "--beams", "4")
    report = base / "compare.json"
    code = run_cli(["compare", str(base / "results" / "pop"), str(out_llm), "-o", str(report)])
    assert code == 0
    comparison = json.loads(report.read_text())
    assert comparison["num_cases"] == 10
    for name, row in comparison["metrics"].items():
        assert row["diff"] == pytest.approx(row["b"] - row["a"])
        assert row["ci95"][0] <= row["diff"] + 1e-12 and row["diff"] <= row["ci95"][1] + 1e-12
        assert 0 < row["p_value"] <= 1, name
    assert "B - A" in capsys.readouterr().out

    # different cases: refused with one line, exit 2
    limited, _, _ = evaluate(base, data, "pop", "pop-limited", "--limit", "3")
    assert run_cli(["compare", str(base / "results" / "pop"), str(limited)]) == 2
    assert "different cases" in capsys.readouterr().err


def test_guidance_from_the_cli(setup):
    base, data, dataset = setup
    pop = str(base / "pop")
    _, plain, plain_cases = evaluate(base, data, "llm", "plain", "--beams", "3", "--limit", "4")
    _, same, same_cases = evaluate(
        base, data, "llm", "g1", "--beams", "3", "--limit", "4", "--assistant", pop
    )
    assert [c["titles"] for c in same_cases] == [c["titles"] for c in plain_cases]
    n = str(len(TITLES))
    _, mixed, mixed_cases = evaluate(base, data, "llm", "g0", "--beams", n, "--limit", "4",
                                     "--assistant", pop, "--guidance-scale", "0")  # fmt: skip
    assert mixed["decoding"]["assistant"] == pop and mixed["decoding"]["guidance_scale"] == 0
    # g = 0 with no pruning scores every title by the assistant alone: log(count / total)
    counts = dataset.train_popularity()
    total = sum(counts.values())
    for case in mixed_cases:
        assert len(case["titles"]) == len(TITLES)
        for title, score in zip(case["titles"], case["scores"], strict=True):
            assert score == pytest.approx(math.log(counts[title] / total), abs=1e-4)


def test_bad_input_is_one_line_and_nothing_written(setup, tmp_path, capsys):
    from cftrec.data.dataset import write_dataset

    base, data, dataset = setup
    other = write_dataset(tmp_path / "other", dataset.items, dataset.interactions.iloc[:-1], {})
    out = tmp_path / "out"
    args = ["evaluate", "--run", str(base / "pop"), "--data", str(other), "-o", str(out)]
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert "fingerprint" in err and len(err.splitlines()) == 1 and not out.exists()
    assert run_cli([*args, "--allow-data-mismatch"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["warnings"] and "fingerprint" in results["warnings"][0]
    assert run_cli(["evaluate", "--run", str(base / "llm"), "--data", str(data), "-o",
                    str(tmp_path / "bad"), "--decoding", "magic"]) == 2  # fmt: skip
    assert not (tmp_path / "bad").exists()


def test_two_processes_give_the_single_process_results(setup, tmp_path):
    """Two CPU processes split the cases and gather them. (`accelerate launch --cpu` starts
    several processes only through mpirun; `--multi_gpu` uses torch's launcher, and on a
    machine without a GPU the processes form a CPU/gloo group.)"""
    base, data, _ = setup
    _, single, single_cases = evaluate(base, data, "llm", "single", "--beams", "3", "--limit", "5")
    out = tmp_path / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "cftrec", "evaluate", "--run", str(base / "llm"), "--data", str(data),
        "-o", str(out), "--beams", "3", "--limit", "5", "--batch-size", "2",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    multi = json.loads((out / "results.json").read_text())
    multi_cases = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    assert multi["num_processes"] == 2
    assert multi["case_ids"] == single["case_ids"]
    assert multi["metrics"] == pytest.approx(single["metrics"])
    assert [c["titles"] for c in multi_cases] == [c["titles"] for c in single_cases]
