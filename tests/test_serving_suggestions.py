"""Suggestions for unknown titles: the same as difflib where difflib is affordable, bounded work
on large catalogues (difflib compared every title: seconds per entry), and never on the server's
event loop."""

from __future__ import annotations

import concurrent.futures
import csv
import difflib
import random
import threading

import httpx
import pytest

from cftrec.data.close_matches import CANDIDATES, CloseMatches
from cftrec.data.dataset import Catalog, close_titles
from cftrec.serving.app import MAX_PROBLEMS, create_app
from cftrec.serving.service import RecommendService
from conftest import shared_data
from serving_fixtures import make_dataset, make_pop_run, running_server


def _typo(rng: random.Random, title: str) -> str:
    """One character dropped, doubled or swapped with its neighbour."""
    i = rng.randrange(len(title) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return title[:i] + title[i + 1 :]
    if kind == 1:
        return title[:i] + title[i] + title[i:]
    return title[:i] + title[i + 1] + title[i] + title[i + 2 :]


def _synthetic_titles(count: int, seed: int = 0) -> list[str]:
    """Titles made of shared common words and rarer ones, like product titles (the case where
    difflib's quick filters pass often and a full scan is slow)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    common = ["the", "of", "edition", "deluxe", "game", "set", "for", "and", "kids", "(2004)"]
    titles = (
        " ".join(
            rng.choice(common) if rng.random() < 0.4 else rng.choice(words)
            for _ in range(rng.randint(3, 12))
        )
        for _ in range(count)
    )
    return list(dict.fromkeys(titles))


def test_small_catalogues_match_difflib_exactly():
    rng = random.Random(1)
    titles = _synthetic_titles(CANDIDATES, seed=2)
    matches = CloseMatches(titles)
    for _ in range(50):
        query = _typo(rng, rng.choice(titles)) if rng.random() < 0.7 else "the deluxe game"
        expected = difflib.get_close_matches(query.lower(), [t.lower() for t in titles], 3, 0.5)
        assert [t.lower() for t in matches.find(query, 3, 0.5)] == expected


def test_case_is_ignored_and_the_first_spelling_stands_for_the_others():
    matches = CloseMatches(["Heat (1995)", "HEAT (1995)", "Fargo (1996)"])
    assert matches.find("heat (1995", n=1) == ["Heat (1995)"]
    assert matches.find("zzzzzz") == []


@pytest.fixture
def ranked(monkeypatch) -> list[int]:
    """How many strings each difflib ranking compares its query with (the costly part)."""
    sizes = []
    rank = difflib.get_close_matches

    def counting(word, possibilities, n, cutoff):
        sizes.append(len(possibilities))
        return rank(word, possibilities, n, cutoff)

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    return sizes


def test_large_catalogues_rank_a_few_candidates_and_find_the_title(ranked):
    titles = _synthetic_titles(20_000)
    catalog = Catalog([str(i) for i in range(len(titles))], titles)
    rng = random.Random(3)
    cases = [(title, _typo(rng, title)) for title in rng.sample(titles, 10)]
    found = [close_titles(catalog, query) for _, query in cases]
    assert [f[0] for f in found] == [title for title, _ in cases]
    # one ranking per query, of a few candidates: not a scan of 20,000 titles
    assert len(ranked) == len(cases) and max(ranked) <= CANDIDATES


def test_real_amazon_titles_are_found_among_a_few_candidates(ranked):
    titles = []
    for folder, column in (("amazon-toys", 1), ("amazon-video-games", 2)):
        with open(shared_data(folder) / "items.tsv", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            next(reader)
            titles += [row[column] for row in reader if row[column].strip()]
    titles = list(dict.fromkeys(titles))
    catalog = Catalog([str(i) for i in range(len(titles))], titles)
    rng = random.Random(4)
    cases = [(t, _typo(rng, t)) for t in rng.sample([t for t in titles if len(t) > 8], 20)]
    found = [close_titles(catalog, query) for _, query in cases]
    assert all(f and f[0].lower() == t.lower() for (t, _), f in zip(cases, found, strict=True))
    assert len(ranked) == len(cases) and max(ranked) <= CANDIDATES < len(titles)


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("suggestions")
    return make_pop_run(root, make_dataset(root))


def test_suggestions_never_block_the_event_loop(pop_run):
    service = RecommendService.load(pop_run)
    suggesting, health_answered = threading.Event(), threading.Event()

    def blocking_close_titles(entry, n=3):
        suggesting.set()
        # Held until /health has been answered: were suggestions found on the event loop,
        # /health could not be answered and the test would fail on its timeout.
        health_answered.wait(timeout=60)
        return ["Heat (1995)"]

    service.close_titles = blocking_close_titles
    app = create_app(service)
    with running_server(app) as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
        unknown = {"history": ["zz 1", "zz 2", "zz 3", "zz 4"], "k": 2}
        pending = pool.submit(httpx.post, f"{url}/recommend", json=unknown, timeout=60)
        assert suggesting.wait(timeout=30)
        try:
            health = httpx.get(f"{url}/health", timeout=30)
        finally:
            health_answered.set()
        response = pending.result()
    assert health.status_code == 200
    assert response.status_code == 422
    assert [p["suggestions"] for p in response.json()["detail"]] == [["Heat (1995)"]] * 4


def test_unknown_entries_reported_per_request_are_bounded(pop_run):
    app = create_app(RecommendService.load(pop_run), max_batch_requests=20)
    with running_server(app) as url:
        body = {
            "requests": [{"history": [f"nope {i}", "Heat (1995)", f"nix {i}"]} for i in range(8)]
        }
        response = httpx.post(f"{url}/recommend/batch", json=body, timeout=30)
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert len(problems) == MAX_PROBLEMS
    assert problems[0]["loc"] == ["body", "requests", 0, "history", 0]
    assert problems[1]["loc"] == ["body", "requests", 0, "history", 2]
    assert problems[1]["msg"].startswith("unknown item 'nix 0'")
