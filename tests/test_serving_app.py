"""The HTTP API against real servers on 127.0.0.1 with a real HTTP client (httpx)."""

from __future__ import annotations

import concurrent.futures
from types import SimpleNamespace

import httpx
import pytest

from cftrec.data.dataset import Dataset
from cftrec.decoding import methods
from cftrec.serving.app import create_app
from cftrec.serving.service import RecommendService
from serving_fixtures import (
    brute_force_ranking,
    make_dataset,
    make_llm_run,
    make_pop_run,
    running_server,
)
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("serving")
    data = make_dataset(root)
    return {
        "data": data,
        "pop": make_pop_run(root, data),
        "llm": make_llm_run(root, data, tokenizer),
    }


@pytest.fixture(scope="module")
def pop_server(runs):
    app = create_app(RecommendService.load(runs["pop"]), max_body_bytes=2000, max_k=5)
    with running_server(app) as url:
        yield url


def _brute_force_popularity(data) -> list[str]:
    """Titles by train interactions, ties by title, counted straight from the parquet files."""
    dataset = Dataset.load(data)
    train = dataset.interactions[dataset.interactions["split"] == "train"]
    counts = {title: 0 for title in dataset.items["title"]}
    for item in train["item_id"]:
        counts[dataset.catalog.title_of[item]] += 1
    return sorted(counts, key=lambda t: (-counts[t], t))


def test_recommend_happy_path_and_history_forms(pop_server, runs):
    expected = _brute_force_popularity(runs["data"])
    for history in (["Toy Story (1995)", "Heat (1995)"], ["0", "1"], []):
        response = httpx.post(f"{pop_server}/recommend", json={"history": history, "k": 3})
        assert response.status_code == 200, response.text
        recs = response.json()["recommendations"]
        assert [r["title"] for r in recs] == expected[:3]
        assert all(set(r) == {"title", "item_ids", "score"} for r in recs)
    default_k = httpx.post(f"{pop_server}/recommend", json={"history": ["Heat (1995)"]})
    assert len(default_k.json()["recommendations"]) == 5  # min(10, max_k)


def test_batch_endpoint(pop_server, runs):
    body = {"requests": [{"history": ["Heat (1995)"], "k": 1}, {"history": ["2"], "k": 4}]}
    response = httpx.post(f"{pop_server}/recommend/batch", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    ranking = _brute_force_popularity(runs["data"])
    catalog = Dataset.load(runs["data"]).catalog
    # a history's own titles are left out: what comes next
    expected = [
        [t for t in ranking if t not in gone] for gone in ({"Heat (1995)"}, {catalog.title("2")})
    ]
    assert [[r["title"] for r in res["recommendations"]] for res in results] == [
        expected[0][:1],
        expected[1][:4],
    ]


def test_validation_errors_are_422_with_suggestions(pop_server):
    response = httpx.post(f"{pop_server}/recommend", json={"history": ["Heat (1995)", "toy stroy"]})
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "history", 1]
    assert problem["suggestions"][0] == "Toy Story (1995)"
    batch = httpx.post(
        f"{pop_server}/recommend/batch",
        json={"requests": [{"history": ["Heat (1995)"]}, {"history": ["Fargo"]}]},
    )
    assert batch.status_code == 422
    assert batch.json()["detail"][0]["loc"] == ["body", "requests", 1, "history", 0]
    assert batch.json()["detail"][0]["suggestions"] == ["Fargo (1996)"]
    for bad in ({"history": [], "k": 6}, {"history": [], "k": 0}, {"history": "Heat (1995)"},
                {"history": [""]}, {"k": 3}, {"history": [], "extra": 1}):  # fmt: skip
        assert httpx.post(f"{pop_server}/recommend", json=bad).status_code == 422, bad


def test_body_size_limit_is_413(pop_server):
    big = {"history": ["Heat (1995)"] * 200}  # about 3 kB > 2000 bytes
    assert httpx.post(f"{pop_server}/recommend", json=big).status_code == 413

    def chunks():  # no Content-Length: the bytes received are counted
        for _ in range(30):
            yield b" " * 100

    chunked = httpx.post(
        f"{pop_server}/recommend", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413


def test_health_items_and_docs(pop_server, runs):
    health = httpx.get(f"{pop_server}/health").json()
    assert health["status"] == "ok" and health["kind"] == "pop"
    assert health["data_fingerprint"] == Dataset.load(runs["data"]).fingerprint
    assert health["uptime_s"] >= 0 and health["titles"] == 8
    items = httpx.get(f"{pop_server}/items", params={"query": "(1995)"}).json()["items"]
    assert {i["title"] for i in items} == {
        "Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Babe (1995)",
    }  # fmt: skip
    fuzzy = httpx.get(f"{pop_server}/items", params={"query": "fargo 1996", "limit": 1})
    assert fuzzy.json()["items"] == [{"title": "Fargo (1996)", "item_ids": ["4"]}]
    assert httpx.get(f"{pop_server}/items", params={"query": ""}).status_code == 422
    assert httpx.get(f"{pop_server}/docs").status_code == 200
    paths = httpx.get(f"{pop_server}/openapi.json").json()["paths"]
    assert {"/recommend", "/recommend/batch", "/items", "/health"} <= set(paths)


def test_api_key(runs):
    app = create_app(RecommendService.load(runs["pop"]), api_key="s3cret")
    with running_server(app) as url:
        body = {"history": ["Heat (1995)"], "k": 2}
        assert httpx.post(f"{url}/recommend", json=body).status_code == 401
        wrong = httpx.post(f"{url}/recommend", json=body, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        assert httpx.get(f"{url}/items", params={"query": "heat"}).status_code == 401
        right = httpx.post(f"{url}/recommend", json=body, headers={"X-API-Key": "s3cret"})
        assert right.status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200  # liveness probes need no key


def test_concurrent_requests_are_micro_batched_and_correct(runs):
    from cftrec.runs.llm import load_llm_run

    service = RecommendService.load(runs["llm"], method="exhaustive")
    histories = [["0"], ["1", "2"], ["3", "4", "5"], ["6"], ["7", "0"], ["2", "5"]]
    # The batch is sent when full, however long its requests take to come: one call for all.
    app = create_app(service, max_batch_size=len(histories), max_wait_ms=120_000)
    with running_server(app) as url:

        def ask(history):
            return httpx.post(f"{url}/recommend", json={"history": history, "k": 4}, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(len(histories)) as pool:
            responses = list(pool.map(ask, histories))
        batching = httpx.get(f"{url}/health").json()["batching"]
    assert all(r.status_code == 200 for r in responses)
    assert batching["requests"] == len(histories)
    assert batching["recommend_calls"] == 1
    assert batching["largest_batch"] == len(histories)
    run = load_llm_run(runs["llm"])
    for history, response in zip(histories, responses, strict=True):
        ranking = brute_force_ranking(run.model, run.encoder, service.catalog, history)
        gone = set(service.catalog.titles_for(history))  # left out by default
        expected = [(title, score) for title, score in ranking if title not in gone][:4]
        got = response.json()["recommendations"]
        assert [r["title"] for r in got] == [title for title, _ in expected]
        for rec, (_, score) in zip(got, expected, strict=True):
            assert rec["score"] == pytest.approx(score, abs=1e-3)


def test_beam_runs_bound_k_by_beams(runs):
    app = create_app(RecommendService.load(runs["llm"], method="beam", num_beams=3))
    with running_server(app) as url:
        ok = httpx.post(f"{url}/recommend", json={"history": ["Heat (1995)"], "k": 3}, timeout=60)
        assert ok.status_code == 200 and len(ok.json()["recommendations"]) == 3
        too_many = httpx.post(f"{url}/recommend", json={"history": [], "k": 4})
        assert too_many.status_code == 422


@pytest.mark.parametrize(
    ("default_beams", "num_beams", "k_limit"), [(None, 20, None), (7, None, 7), (7, 3, 3)]
)
def test_a_method_new_to_the_registry_is_served_with_its_beam_limit(
    monkeypatch, default_beams, num_beams, k_limit
):
    """Serving knows methods only through the decoding registry: k is bounded by the beams of
    a method that has some, and free for one that has none."""
    new = methods.DecodingMethod("exact", "a method added later", default_beams, False)
    monkeypatch.setitem(methods.DECODING_METHODS, "exact", new)
    recommender = SimpleNamespace(catalog=None)
    service = RecommendService(
        recommender, {"kind": "llm"}, "run", method="exact", num_beams=num_beams
    )
    assert service.k_limit == k_limit
