"""`cftrec evaluate --exclude-history`: the titles of each case's history are removed from its
ranking, as if they had left the catalogue. Full rankings (popularity, SASRec, exhaustive
scoring) against a brute-force ranking with the history titles masked; beam lists against the
plain beam search on a trie without them; metrics recomputed from the brute-force ranks."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from cftrec.decoding.recommender import LLMRecommender
from conftest import make_tiny_llama
from training_fixtures import TITLES, one_thread, save_untrained_llm_run  # noqa: F401 (autouse)
from training_fixtures import run_cli as run

CUTOFFS = (1, 3, 5, 10, 20, 50)


def write_dataset_with_repeats(out_dir):
    """Users walk 9 items in a cycle (item 8 shares the title of item 0); sequences of 6 to 10
    items, so the targets of the longest ones repeat a history title."""
    from cftrec.data.dataset import write_dataset

    items = pd.DataFrame({"item_id": [str(i) for i in range(9)], "title": TITLES + [TITLES[0]]})
    rows = []
    for user in range(12):
        length = 6 + user % 5
        for position in range(length):
            split = (
                "test" if position == length - 1 else "valid" if position == length - 2 else "train"
            )
            rows.append((f"u{user}", str((user + position) % 9), position, split))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    return write_dataset(out_dir, items, interactions, {"source": "synthetic"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    from cftrec.data.dataset import Dataset

    base = tmp_path_factory.mktemp("exclude-history")
    data = write_dataset_with_repeats(base / "data")
    dataset = Dataset.load(data)
    save_untrained_llm_run(base / "llm", make_tiny_llama(tokenizer, seed=2), tokenizer, dataset)
    assert run(["baseline", "pop", "--data", str(data), "-o", str(base / "pop")]) == 0
    assert run(["baseline", "sasrec", "--data", str(data), "-o", str(base / "sasrec"),
                "--epochs", "2", "--hidden-size", "16", "--threads", "1"]) == 0  # fmt: skip
    return base, data, dataset


def evaluate(base, data, run_name, name, *extra):
    out = base / "results" / name
    args = ["evaluate", "--run", str(base / run_name), "--data", str(data), "-o", str(out), *extra]
    assert run(args) == 0
    results = json.loads((out / "results.json").read_text())
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    return results, cases, out


def masked_ranking(scores: dict[str, float], history_titles: set[str]) -> list[str]:
    """Titles by score, best first (ties: catalogue order), without the history's titles."""
    kept = [t for t in TITLES if t not in history_titles]
    return sorted(kept, key=lambda t: (-scores[t], TITLES.index(t)))


def assert_metrics(results, ranks):
    """HR/NDCG from brute-force ranks (None: a miss) for every cutoff reported."""
    for k in results["cutoffs"]:
        hits = [r is not None and r <= k for r in ranks]
        gains = [1 / math.log2(r + 1) if hit else 0.0 for r, hit in zip(ranks, hits, strict=True)]
        assert results["metrics"][f"hr@{k}"] == pytest.approx(sum(hits) / len(ranks))
        assert results["metrics"][f"ndcg@{k}"] == pytest.approx(sum(gains) / len(ranks))


def assert_full_ranking_masked(results, cases, dataset, scores_of):
    """Each list is the brute-force masked ranking; every cutoff is decided."""
    catalog = dataset.catalog
    ranks, repeats = [], 0
    for case in cases:
        history = set(catalog.titles_for(case["history"]))
        expected = masked_ranking(scores_of(case), history)
        assert case["titles"] == expected
        target = catalog.title(case["target"])
        repeats += target in history
        ranks.append(expected.index(target) + 1 if target in expected else None)
        assert case["rank"] == ranks[-1]
    assert results["settings"]["exclude_history"] is True
    assert results["exclude_history"]["targets_in_history"] == repeats > 0
    assert "as if they had left the catalogue" in results["exclude_history"]["note"]
    assert results["cutoffs"] == list(CUTOFFS)  # lists hold every title left to rank
    assert_metrics(results, ranks)


def test_popularity_masks_history_titles(setup):
    base, data, dataset = setup
    results, cases, out = evaluate(base, data, "pop", "pop", "--exclude-history")
    counts = dataset.train_popularity()
    # popularity ties break by title (alphabetical), not catalogue order
    alphabetical = {t: -sorted(TITLES).index(t) / 100 for t in TITLES}
    assert_full_ranking_masked(
        results,
        cases,
        dataset,
        lambda case: {t: counts.get(t, 0) + alphabetical[t] for t in TITLES},
    )
    assert "history excluded" in (out / "results.md").read_text()


def test_sasrec_masks_history_titles(setup):
    from cftrec.runs import load_recommender

    base, data, dataset = setup
    results, cases, _ = evaluate(base, data, "sasrec", "sasrec", "--exclude-history")
    sasrec = load_recommender(base / "sasrec")
    titles = sasrec.catalog.titles

    def scores_of(case):
        row = sasrec.title_scores([case["history"]])[0].tolist()
        return dict(zip(titles, row, strict=True))

    assert_full_ranking_masked(results, cases, dataset, scores_of)


def test_exhaustive_llm_scoring_masks_history_titles(setup):
    base, data, dataset = setup
    results, cases, _ = evaluate(
        base, data, "llm", "exhaustive", "--decoding", "exhaustive", "--exclude-history"
    )
    recommender = LLMRecommender.from_run(base / "llm")
    model = recommender.model

    def scores_of(case):  # brute force: one uncached forward pass of prompt + title per title
        prompt = recommender.prompts([case["history"]])[0]
        scores = {}
        for title, response in zip(recommender.catalog.titles, recommender.responses, strict=True):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
            log_probs = logits.double().log_softmax(-1)
            scores[title] = sum(
                log_probs[len(prompt) - 1 + i, token].item() for i, token in enumerate(response)
            )
        return scores

    assert_full_ranking_masked(results, cases, dataset, scores_of)


@pytest.mark.parametrize("guided", [False, True])
def test_beam_lists_skip_history_titles_and_stay_full(setup, guided):
    """Each beam list is the plain beam search's list on a trie built without the case's
    history titles (guided: with SASRec's probabilities over the titles left), so it holds
    `beams` titles (or every title left) and every cutoff up to `beams` is decided."""
    from cftrec.decoding.beam import constrained_beam_search
    from cftrec.decoding.guidance import node_log_mass
    from cftrec.decoding.trie import TitleTrie
    from cftrec.runs import load_recommender

    base, data, dataset = setup
    beams, scale = 2, 0.5  # histories hold 5 to 8 of the 8 titles
    guidance = ["--assistant", str(base / "sasrec"), "--guidance-scale", str(scale)]
    extra = ["--beams", str(beams), "--exclude-history", *(guidance if guided else [])]
    name = "beam-excluded" + ("-guided" if guided else "")
    results, cases, out = evaluate(base, data, "llm", name, *extra)
    recommender = load_recommender(base / "llm")
    assistant = load_recommender(base / "sasrec")
    catalog = dataset.catalog
    ranks, narrowed, lefts = [], 0, []
    for case in cases:
        history = set(catalog.titles_for(case["history"]))
        kept = [t for t, title in enumerate(catalog.titles) if title not in history]
        lefts.append(len(kept))
        if not kept:  # the history holds every title: nothing is left to recommend
            assert case["titles"] == [] and case["rank"] is None
            ranks.append(None)
            continue
        trie = TitleTrie([recommender.responses[t] for t in kept])
        options = {}
        if guided:
            log_probs = torch.as_tensor(assistant.title_log_probs([case["history"]]))
            options = {"assistant_log_mass": node_log_mass(trie, log_probs[:, kept]),
                       "guidance_scale": scale}  # fmt: skip
        titles, _ = constrained_beam_search(
            recommender.model, recommender.prompts([case["history"]]), trie, beams,
            recommender.pad_id, **options,
        )  # fmt: skip
        expected = [catalog.titles[kept[t]] for t in titles[0].tolist() if t >= 0]
        assert case["titles"] == expected and len(expected) == min(beams, len(kept))
        narrowed += len(kept) > beams  # the search had to choose among the titles left
        target = catalog.title(case["target"])
        ranks.append(expected.index(target) + 1 if target in expected else None)
    assert narrowed > 0
    assert results["list_length"] == min(len(case["titles"]) for case in cases)
    # decided where every list holds K titles or every title left
    holds = [(len(c["titles"]), left) for c, left in zip(cases, lefts, strict=True)]
    assert results["cutoffs"] == [k for k in CUTOFFS if all(n >= k or n == m for n, m in holds)]
    assert "as if they had left the catalogue" in results["exclude_history"]["note"]
    assert_metrics(results, ranks)
    assert "history excluded" in (out / "results.md").read_text()


def test_masked_lists_keep_their_full_length(setup):
    """A ranked list of --list-length titles stays that long once the history titles are gone
    (shorter than the catalogue here: the lists hold the top 2 of the masked ranking)."""
    base, data, dataset = setup
    results, cases, _ = evaluate(
        base, data, "pop", "pop-short", "--exclude-history", "--list-length", "2"
    )
    counts = dataset.train_popularity()
    ranking = sorted(TITLES, key=lambda t: (-counts.get(t, 0), t))
    for case in cases:
        history = set(dataset.catalog.titles_for(case["history"]))
        assert case["titles"] == [t for t in ranking if t not in history][:2]
    # @3 is decided only where a list holds every title left to rank: not everywhere here
    assert any(len(TITLES) - len(set(dataset.catalog.titles_for(c["history"]))) > 2 for c in cases)
    assert results["cutoffs"] == [1]


def test_compare_refuses_mixing_protocols(setup, capsys):
    base, data, _ = setup
    _, _, plain = evaluate(base, data, "pop", "pop-plain")
    _, _, excluded = evaluate(base, data, "pop", "pop-excluded", "--exclude-history")
    capsys.readouterr()  # the evaluations' progress
    assert run(["compare", str(plain), str(excluded)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--exclude-history" in err and len(err.splitlines()) == 1
    assert run(["compare", str(excluded), str(excluded)]) == 0
