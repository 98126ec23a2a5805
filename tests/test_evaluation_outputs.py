"""Evaluation outputs that cannot be misread: only the cutoffs a list length decides (reported
and compared), null ranks for misses, only the settings that applied, warm vs cold targets,
several runs per side in `compare`, and titles with commas in CLI summaries. A 60-title
catalogue, so that 10-beam lists are shorter than the catalogue."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from conftest import make_tiny_llama
from training_fixtures import run_cli, save_untrained_llm_run

NUM_TITLES = 60
COLD = {"55", "56", "57", "58", "59"}  # never trained on; the test targets of u0, u1, u2
SPECIAL = {0: "Good, the Bad and the Ugly, The (1966)", 1: "[REC] (2007)", 2: "[b]Bold (2001)"}


def _title(i: int) -> str:
    return SPECIAL.get(i, f"Film {i}, Part {i % 3} ({1950 + i})")


def write_catalogue_dataset(out_dir, cold: bool):
    """8 users, 5 interactions each (3 train, 1 valid, 1 test); with `cold`, items 55-59 carry
    a `cold` column and are the test targets of users u0-u2 only."""
    from cftrec.data.dataset import write_dataset

    items = pd.DataFrame(
        {"item_id": [str(i) for i in range(NUM_TITLES)], "title": [_title(i) for i in range(60)]}
    )
    if cold:
        items["cold"] = items["item_id"].isin(COLD)
    rows = []
    for user in range(8):
        for position in range(5):
            item = (user * 7 + position * 3) % 55
            if cold and position == 4 and user < 3:
                item = 55 + user
            split = ("train", "train", "train", "valid", "test")[position]
            rows.append((f"u{user}", str(item), position, split))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    return write_dataset(out_dir, items, interactions, {"source": "synthetic"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    from cftrec.data.dataset import Dataset

    base = tmp_path_factory.mktemp("outputs")
    data = write_catalogue_dataset(base / "data", cold=False)
    dataset = Dataset.load(data)
    save_untrained_llm_run(base / "llm", make_tiny_llama(tokenizer, seed=3), tokenizer, dataset)
    assert run_cli(["baseline", "pop", "--data", str(data), "-o", str(base / "pop")]) == 0
    return base, data, dataset


def evaluate(base, data, run, name, *extra):
    out = base / "results" / name
    args = ["evaluate", "--run", str(base / run), "--data", str(data), "-o", str(out), *extra]
    assert run_cli(args) == 0
    results = json.loads((out / "results.json").read_text())
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    return out, results, cases


def by_hand(cases, title_of, cutoffs):
    """HR/NDCG from the raw title lists, independently of the code."""
    metrics = {}
    for k in cutoffs:
        hits = [case["titles"][:k].index(title_of[case["target"]]) + 1
                if title_of[case["target"]] in case["titles"][:k] else None
                for case in cases]  # fmt: skip
        metrics[f"hr@{k}"] = sum(h is not None for h in hits) / len(cases)
        metrics[f"ndcg@{k}"] = sum(1 / math.log2(h + 1) for h in hits if h) / len(cases)
    return metrics


def test_ten_beams_report_and_compare_only_the_cutoffs_they_decide(setup, capsys):
    base, data, dataset = setup
    title_of = dataset.catalog.title_of
    capsys.readouterr()
    out, beam, beam_cases = evaluate(base, data, "llm", "beam", "--beams", "10", "--limit", "4")
    printed = capsys.readouterr().out
    assert beam["cutoffs"] == [1, 3, 5, 10] and beam["unavailable_cutoffs"] == [20, 50]
    assert beam["list_length"] == 10
    assert beam["metrics"] == pytest.approx(by_hand(beam_cases, title_of, (1, 3, 5, 10)))
    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| metric"))
    assert header == "| metric | @1 | @3 | @5 | @10 |"
    assert "@20, @50 not available: lists hold 10 titles" in table
    header = next(line for line in printed.splitlines() if "metric" in line and "@10" in line)
    assert "@20" not in header and "@20, @50 not available" in " ".join(printed.split())
    for case in beam_cases:  # rank: 1-based position, null (None) for a miss
        target = title_of[case["target"]]
        expected = case["titles"].index(target) + 1 if target in case["titles"] else None
        assert case["rank"] == expected

    _, full, full_cases = evaluate(base, data, "llm", "full", "--decoding", "exhaustive",
                                   "--limit", "4")  # fmt: skip
    assert full["cutoffs"] == [1, 3, 5, 10, 20, 50] and full["unavailable_cutoffs"] == []
    assert full["metrics"] == pytest.approx(by_hand(full_cases, title_of, (1, 3, 5, 10, 20, 50)))

    # compare never compares @20/@50 of 10-title lists with a full ranking's
    report = base / "compare.json"
    assert run_cli(["compare", str(out), str(base / "results" / "full"), "-o", str(report)]) == 0
    printed = capsys.readouterr().out
    comparison = json.loads(report.read_text())
    assert set(comparison["metrics"]) == {f"{m}@{k}" for m in ("ndcg", "hr") for k in (1, 3, 5, 10)}
    assert comparison["unavailable_cutoffs"] == [20, 50]
    assert "hr@50" not in printed and "hr@20" not in printed and "hr@10" in printed

    # settings: only those that applied
    assert beam["settings"]["beams"] == 10 and "guidance_scale" not in beam["settings"]
    assert beam["decoding"] == {"method": "beam", "beams": 10, "length_penalty": 0.0}
    assert "beams" not in full["settings"] and "beams" not in full["decoding"]


def test_several_runs_per_side(setup, capsys):
    base, data, _ = setup
    runs = {name: evaluate(base, data, run, name, *extra, "--limit", "4")
            for name, run, extra in (("pop-1", "pop", ()), ("pop-2", "pop", ()),
                                     ("llm-3", "llm", ("--beams", "10")),
                                     ("llm-5", "llm", ("--beams", "5")))}  # fmt: skip
    report = base / "pooled.json"
    args = ["compare", "-a", str(runs["pop-1"][0]), "-a", str(runs["pop-2"][0]),
            "-b", str(runs["llm-3"][0]), "-b", str(runs["llm-5"][0]), "-o", str(report)]  # fmt: skip
    assert run_cli(args) == 0
    assert "A runs" in capsys.readouterr().out
    pooled = json.loads(report.read_text())
    assert pooled["runs"] == {"a": 2, "b": 2} and pooled["num_cases"] == 4
    assert set(pooled["metrics"]) == {f"{m}@{k}" for m in ("ndcg", "hr") for k in (1, 3, 5)}
    row = pooled["metrics"]["hr@5"]
    b_means = [runs[n][1]["metrics"]["hr@5"] for n in ("llm-3", "llm-5")]
    assert row["b_runs"] == pytest.approx(b_means)
    assert row["diff"] == pytest.approx(sum(b_means) / 2 - runs["pop-1"][1]["metrics"]["hr@5"])
    assert pooled["paths"]["b"] == [str(runs["llm-3"][0]), str(runs["llm-5"][0])]
    # one way of naming the sides at a time; two outputs with A B
    assert run_cli(["compare", str(runs["pop-1"][0]), "-b", str(runs["llm-3"][0])]) == 2
    assert run_cli(["compare", str(runs["pop-1"][0])]) == 2
    assert "two evaluation outputs" in capsys.readouterr().err


def test_pop_run_records_no_decoding_and_cold_targets_apart(setup, tmp_path, capsys):
    base, _, _ = setup
    from cftrec.data.dataset import Dataset

    data = write_catalogue_dataset(tmp_path / "cold-data", cold=True)
    dataset = Dataset.load(data)
    assert dataset.cold_items == COLD
    assert run_cli(["baseline", "pop", "--data", str(data), "-o", str(tmp_path / "pop")]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert run_cli(["evaluate", "--run", str(tmp_path / "pop"), "--data", str(data),
                    "-o", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]

    assert results["decoding"] is None
    assert not {
        "decoding",
        "beams",
        "length_penalty",
        "dtype",
        "assistant",
        "guidance_scale",
    } & set(results["settings"])
    assert [c["cold"] for c in cases] == [c["target"] in COLD for c in cases]
    assert sum(c["cold"] for c in cases) == 3
    # cold items have no train interactions: popularity ranks them last, beyond its 50 titles
    assert all(c["rank"] is None for c in cases if c["cold"])
    title_of = dataset.catalog.title_of
    groups = results["by_target"]
    cutoffs = results["cutoffs"]
    for name, cold in (("warm", False), ("cold", True)):
        group = [c for c in cases if c["cold"] == cold]
        assert groups[name]["num_cases"] == len(group)
        assert groups[name]["metrics"] == pytest.approx(by_hand(group, title_of, cutoffs))
    assert results["metrics"] == pytest.approx(by_hand(cases, title_of, cutoffs))
    table = (out / "results.md").read_text()
    assert "| HR cold |" in table and "cases: 8 (warm targets 5, cold targets 3)" in table
    assert "NDCG warm" in printed and "cold targets 3" in " ".join(printed.split())

    # without cold items there is no warm/cold breakdown
    _, plain, _ = evaluate(base, setup[1], "pop", "plain-pop")
    assert "by_target" not in plain and "HR cold" not in (base / "results" / "plain-pop" /
                                                          "results.md").read_text()  # fmt: skip


def test_titles_with_commas_are_unambiguous_in_summaries(setup, capsys):
    base, data, dataset = setup
    capsys.readouterr()
    history = [SPECIAL[0], SPECIAL[1], SPECIAL[2]]
    assert run_cli(["recommend", "--run", str(base / "pop"), "-k", "3", "--history", *history]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("history, oldest first:")
    assert lines[1:4] == [f"  {n}. {title}" for n, title in enumerate(history, 1)]

    assert run_cli(["baseline", "pop", "--data", str(data), "-o", str(base / "pop-again")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "; top: " in x)
    top = json.loads("[" + line.split("; top: ", 1)[1] + "]")
    info = json.loads((base / "pop-again" / "run.json").read_text())
    assert top == info["top_titles"][:3]


def test_default_beams_follow_the_decoding(setup):
    """Without --beams: beam search uses the measured default (lists of 50 titles here, so
    every cutoff up to @50 is decided); grounding generates its own default of 10 sequences."""
    from cftrec.decoding import DEFAULT_BEAMS, GROUNDING_BEAMS

    base, data, _ = setup
    _, beam, cases = evaluate(base, data, "llm", "default-beam", "--limit", "2")
    assert beam["settings"]["beams"] == DEFAULT_BEAMS == 50
    assert beam["list_length"] == 50 and beam["unavailable_cutoffs"] == []
    assert [len(case["titles"]) for case in cases] == [50, 50]
    _, grounded, _ = evaluate(
        base, data, "llm", "default-grounding", "--decoding", "grounding", "--limit", "2"
    )
    assert grounded["settings"]["beams"] == GROUNDING_BEAMS == 10


def test_exact_decoding_ranks_like_exhaustive_scoring_and_takes_no_beams(setup):
    """`evaluate --decoding exact`: the exhaustive ranking's first 50 titles (every cutoff
    decided), no beams recorded."""
    base, data, _ = setup
    _, exact, exact_cases = evaluate(base, data, "llm", "exact", "--decoding", "exact",
                                     "--limit", "3")  # fmt: skip
    _, full, full_cases = evaluate(base, data, "llm", "exhaustive-3", "--decoding", "exhaustive",
                                   "--limit", "3")  # fmt: skip
    assert "beams" not in exact["settings"] and exact["decoding"]["method"] == "exact"
    assert exact["unavailable_cutoffs"] == []
    assert [c["titles"] for c in exact_cases] == [c["titles"] for c in full_cases]
    assert exact["metrics"] == full["metrics"]


def test_list_length_asks_each_decoding_for_that_many_titles(setup):
    """`--list-length 5`: an exact search returns the exhaustive ranking's first 5 titles,
    every run kind's lists hold 5, only @1..@5 are reported, and the setting is recorded; the
    default length (50) is not, as in every evaluation written before the option."""
    base, data, dataset = setup
    _, full, full_cases = evaluate(base, data, "llm", "exhaustive-full", "--decoding",
                                   "exhaustive", "--limit", "3")  # fmt: skip
    assert "list_length" not in full["settings"]
    _, exact, exact_cases = evaluate(base, data, "llm", "exact-5", "--decoding", "exact",
                                     "--limit", "3", "--list-length", "5")  # fmt: skip
    assert [c["titles"] for c in exact_cases] == [c["titles"][:5] for c in full_cases]
    assert exact["settings"]["list_length"] == 5 and exact["list_length"] == 5
    assert exact["cutoffs"] == [1, 3, 5]
    for name in ("ndcg@1", "hr@3", "ndcg@5"):
        assert exact["metrics"][name] == pytest.approx(full["metrics"][name])
    _, pop, pop_cases = evaluate(base, data, "pop", "pop-5", "--list-length", "5")
    counts = dataset.train_popularity()
    ranking = sorted(dataset.catalog.titles, key=lambda t: (-counts.get(t, 0), t))
    assert all(case["titles"] == ranking[:5] for case in pop_cases)
    assert pop["cutoffs"] == [1, 3, 5]
