"""`cftrec evaluate --check-search N`: the beam's search error against the exact ranking,
checked against a brute-force computation (a full forward pass of prompt + title for every
title) on a tiny model whose search errs with one beam and cannot err with a beam per title."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from cftrec.decoding.recommender import LLMRecommender
from cftrec.evaluation.search_check import checked_case_ids
from conftest import make_tiny_llama
from training_fixtures import (  # noqa: F401 (one_thread: autouse)
    TITLES,
    one_thread,
    save_untrained_llm_run,
    write_tiny_dataset,
)
from training_fixtures import run_cli as run

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    from cftrec.data.dataset import Dataset

    base = tmp_path_factory.mktemp("search-check")
    data = write_tiny_dataset(base / "data", users=10)
    dataset = Dataset.load(data)
    model = make_tiny_llama(tokenizer, seed=0)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)  # peaked next-token distributions: greedy search errs
    save_untrained_llm_run(base / "llm", model, tokenizer, dataset)
    assert run(["baseline", "pop", "--data", str(data), "-o", str(base / "pop")]) == 0
    return base, data, dataset


def evaluate(base, data, name, *extra):
    out = base / "results" / name
    args = ["evaluate", "--run", str(base / "llm"), "--data", str(data), "-o", str(out), *extra]
    assert run(args) == 0
    results = json.loads((out / "results.json").read_text())
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    return results, cases


def brute_force(run_dir, dataset, cases, guidance=None, length_penalty=0.0):
    """{case_id: {title: exact score}}: one uncached forward pass of prompt + title per title;
    with guidance (scale, counts), g * llm + (1 - g) * log(count / total)."""
    recommender = LLMRecommender.from_run(run_dir)
    model, titles = recommender.model, recommender.catalog.titles
    exact = {}
    for case in cases:
        prompt = recommender.prompts([case["history"]])[0]
        scores = {}
        for title, response in zip(titles, recommender.responses, strict=True):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
            log_probs = logits.double().log_softmax(-1)
            llm = sum(
                log_probs[len(prompt) - 1 + i, token].item() for i, token in enumerate(response)
            )
            if guidance is not None:
                scale, counts = guidance
                llm = scale * llm + (1 - scale) * math.log(counts[title] / sum(counts.values()))
            scores[title] = llm / len(response) ** length_penalty
        exact[case["case_id"]] = scores
    return exact


def expected_check(cases, exact, cutoffs) -> dict:
    """The check's figures from the brute-force scores and the beam lists in cases.jsonl."""
    differs = {k: 0 for k in cutoffs}
    recall = {k: 0.0 for k in cutoffs}
    gaps = []
    for case in cases:
        scores = exact[case["case_id"]]
        ranked = sorted(scores, key=scores.get, reverse=True)
        beam = case["titles"]
        for k in cutoffs:
            differs[k] += set(beam[:k]) != set(ranked[:k])
            recall[k] += len(set(ranked[:k]) & set(beam)) / k
        gaps.append(scores[ranked[0]] - scores[beam[0]])
    n = len(cases)
    return {
        **{f"differs@{k}": differs[k] / n for k in cutoffs},
        **{f"recall@{k}": recall[k] / n for k in cutoffs},
        "score_gap_mean": sum(gaps) / n,
        "score_gap_max": max(gaps),
    }


def checked(results, cases):
    ids = set(results["search_check"]["case_ids"])
    return [c for c in cases if c["case_id"] in ids]


def assert_check(results, cases, exact, cutoffs):
    check = results["search_check"]
    assert check["cutoffs"] == list(cutoffs)
    assert check["num_cases"] == len(checked(results, cases))
    for name, value in expected_check(checked(results, cases), exact, cutoffs).items():
        assert check[name] == pytest.approx(value, abs=TOLERANCE), name
    for case in checked(results, cases):  # the exact top titles, best first
        scores = exact[case["case_id"]]
        top = case["search_check"]["exact_top"]
        assert top == sorted(scores, key=scores.get, reverse=True)[: len(top)]


def test_one_beam_errs_and_the_check_equals_brute_force(setup, capsys):
    base, data, dataset = setup
    results, cases = evaluate(base, data, "one-beam", "--beams", "1", "--check-search", "10")
    assert "search error: 10 cases ranked exactly; beam top-K differs @1" in capsys.readouterr().out
    exact = brute_force(base / "llm", dataset, checked(results, cases))
    assert_check(results, cases, exact, cutoffs=(1,))
    check = results["search_check"]
    assert check["num_cases"] == 10 and results["settings"]["check_search"] == 10
    assert check["differs@1"] > 0 and check["score_gap_max"] > 0.01  # greedy search errs here
    assert "search error" in (base / "results" / "one-beam" / "results.md").read_text()


def test_a_beam_per_title_never_errs(setup):
    base, data, dataset = setup
    n = len(TITLES)
    results, cases = evaluate(
        base, data, "all-beams", "--beams", str(n), "--check-search", "4", "--sample-seed", "3"
    )
    exact = brute_force(base / "llm", dataset, checked(results, cases))
    assert_check(results, cases, exact, cutoffs=(1, 5))
    check = results["search_check"]
    assert check["differs@1"] == check["differs@5"] == 0
    assert check["recall@5"] == 1 and check["score_gap_max"] == pytest.approx(0, abs=TOLERANCE)
    # only the checked cases carry a check; the others are untouched
    assert sum("search_check" in c for c in cases) == 4 < len(cases)


def test_guided_and_length_penalised_search_against_brute_force(setup):
    base, data, dataset = setup
    counts = dataset.train_popularity()
    assert set(counts) == set(TITLES)  # every title has a popularity (no zero probability)
    for beams, guidance, penalty in (("1", 0.5, 0.0), ("2", 2.0, 1.0)):
        results, cases = evaluate(
            base, data, f"guided-{beams}", "--beams", beams, "--check-search", "5",
            "--assistant", str(base / "pop"), "--guidance-scale", str(guidance),
            "--length-penalty", str(penalty),
        )  # fmt: skip
        exact = brute_force(
            base / "llm", dataset, checked(results, cases), (guidance, counts), penalty
        )
        assert_check(results, cases, exact, cutoffs=(1,))


def test_checked_cases_are_seeded_and_independent_of_case_order():
    ids = [f"u{i}#0" for i in range(30)]
    chosen = checked_case_ids(ids, 5, seed=7)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert checked_case_ids(shuffled, 5, seed=7) == chosen and len(chosen) == 5
    assert checked_case_ids(ids, 5, seed=8) != chosen
    assert checked_case_ids(ids[:3], 5, seed=7) == set(ids[:3])  # at most every case


def test_the_same_cases_are_checked_whatever_the_limit(setup):
    base, data, _ = setup
    full, _ = evaluate(base, data, "check-all", "--beams", "2", "--check-search", "3")
    limited, _ = evaluate(
        base, data, "check-limited", "--beams", "2", "--check-search", "3", "--limit", "9"
    )
    chosen = set(full["search_check"]["case_ids"])
    assert set(limited["search_check"]["case_ids"]) == checked_case_ids(
        limited["case_ids"], 3, seed=0
    )
    assert chosen == checked_case_ids(full["case_ids"], 3, seed=0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--decoding", "exhaustive"], "with --decoding exhaustive"),
        (["--run-pop"], "a 'pop' run"),
    ],
)
def test_check_search_needs_llm_beam_decoding(setup, tmp_path, capsys, extra, message):
    base, data, _ = setup
    run_dir = base / ("pop" if extra == ["--run-pop"] else "llm")
    extra = [] if extra == ["--run-pop"] else extra
    out = tmp_path / "out"
    args = ["evaluate", "--run", str(run_dir), "--data", str(data), "-o", str(out),
            "--check-search", "2", *extra]  # fmt: skip
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "--check-search" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_with_the_history_excluded_the_check_ranks_the_titles_left(setup):
    """--exclude-history: the beam list is checked against the exact ranking of the titles a
    case may get (its history's titles left out), against brute force; a beam per title still
    never errs, even where fewer titles are left than a cutoff."""
    base, data, dataset = setup
    catalog = dataset.catalog
    results, cases = evaluate(
        base, data, "excluded-one-beam", "--beams", "1", "--check-search", "10", "--exclude-history"
    )  # fmt: skip
    exact = brute_force(base / "llm", dataset, checked(results, cases))
    for case in checked(results, cases):
        for title in catalog.titles_for(case["history"]):
            exact[case["case_id"]].pop(title, None)
    assert_check(results, cases, exact, cutoffs=(1,))
    assert any(catalog.titles_for(c["history"]) for c in checked(results, cases))

    n = len(TITLES)
    results, cases = evaluate(
        base, data, "excluded-all-beams", "--beams", str(n), "--check-search", "10",
        "--exclude-history",
    )  # fmt: skip
    check = results["search_check"]
    assert check["cutoffs"] == [1, 5] and check["differs@1"] == check["differs@5"] == 0
    assert check["recall@5"] == 1 and check["score_gap_max"] == pytest.approx(0, abs=TOLERANCE)
    for case in checked(results, cases):
        history = set(catalog.titles_for(case["history"]))
        assert not history & set(case["search_check"]["exact_top"])
