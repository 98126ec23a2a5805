"""A live catalogue: items added and removed without retraining, through the Python API
(`Recommender.add_items` / `remove_items`), the service (overlay saved beside the run) and the
HTTP API (`POST /items`, `DELETE /items/{id}`), also under concurrent load."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import torch

from cftrec.baselines.popularity import PopularityRecommender
from cftrec.baselines.sasrec import SASRec, SASRecConfig, SASRecRecommender
from cftrec.data.catalog_changes import CatalogChangeUnsupported, read_items_file
from cftrec.data.dataset import Catalog
from cftrec.decoding.recommender import LLMRecommender
from cftrec.errors import CftrecError
from cftrec.serving.app import create_app
from cftrec.serving.service import JOURNAL_FILE, OVERLAY_FILE, RecommendService
from conftest import make_tiny_llama
from serving_fixtures import (
    brute_force_ranking,
    make_dataset,
    make_llm_run,
    make_pop_run,
    running_server,
)
from training_fixtures import TITLES, one_thread  # noqa: F401 (fixture)

NEW = [("n1", "The Matrix (1999)"), ("n2", "Amélie (2001)")]


@pytest.fixture
def recommender(tokenizer):
    catalog = Catalog([str(i) for i in range(len(TITLES))], TITLES)
    return LLMRecommender(make_tiny_llama(tokenizer, seed=1), tokenizer, catalog)


def _titles_and_scores(recommendations):
    return [(r.title, r.score) for r in recommendations]


def _assert_exact(recommender, history, method):
    """Every title, ranked as one forward pass per title ranks it (beams >= titles: beam
    search keeps every prefix, so it is exact too)."""
    catalog = recommender.catalog
    expected = brute_force_ranking(recommender.model, recommender.encoder, catalog, history)
    got = recommender.recommend(
        [history],
        k=len(catalog.titles),
        num_beams=len(catalog.titles),
        method=method,
        exclude_history=False,
    )[0]
    assert [t for t, _ in _titles_and_scores(got)] == [t for t, _ in expected]
    for (_, score), (_, reference) in zip(_titles_and_scores(got), expected, strict=True):
        assert score == pytest.approx(reference, abs=1e-3)


@pytest.mark.parametrize("method", ["exhaustive", "beam"])
def test_added_items_are_ranked_exactly_and_removed_ones_never(recommender, method):
    recommender.add_items(NEW)
    assert recommender.catalog.titles[-2:] == ["The Matrix (1999)", "Amélie (2001)"]
    assert recommender.trie.num_titles == len(TITLES) + 2
    _assert_exact(recommender, ["0", "n1"], method)  # histories may name new items too
    recommender.remove_items(["n1", "3"])
    assert "The Matrix (1999)" not in recommender.catalog.titles
    assert TITLES[3] not in recommender.catalog.titles
    assert recommender.trie.num_titles == len(TITLES)
    _assert_exact(recommender, ["n2", "0"], method)
    with pytest.raises(CftrecError, match="unknown item id 'n1'"):
        recommender.recommend([["n1"]], method=method)


def test_a_title_stays_while_another_item_carries_it(recommender):
    recommender.add_items({"x9": "Heat (1995)"})
    assert recommender.catalog.items_of_title["Heat (1995)"] == ["1", "x9"]
    assert len(recommender.catalog.titles) == len(TITLES)
    recommender.remove_items(["1"])
    recs = recommender.recommend([[]], k=len(TITLES), method="exhaustive")[0]
    assert {r.title: r.item_ids for r in recs}["Heat (1995)"] == ("x9",)


def test_titles_are_cleaned_like_a_prepared_dataset(recommender):
    recommender.add_items([("n3", '"Tom &amp; Jerry"  ')])
    assert recommender.catalog.title_of["n3"] == "Tom & Jerry"


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ([("n1", "")], "empty or a placeholder"),
        ([("n1", "   ")], "empty or a placeholder"),
        ([("n1", "unknown")], "empty or a placeholder"),
        ([("n1", "<b>Bold</b> (2001)")], "HTML leftovers"),
        ([("n1", "Bad \ud800 (2001)")], "lone surrogate"),
        ([("n1", 5)], "title must be a string"),
        ([("", "Fine (2001)")], "empty or has surrounding spaces"),
        ([(" n1", "Fine (2001)")], "empty or has surrounding spaces"),
        ([("n1", "A (2001)"), ("n2", "B (2002)"), ("n1", "C (2003)")], "new item 3: .*twice"),
        ([("n1", "A (2001)"), ("0", "Again (2001)")], "'0' is already in the catalogue"),
        ([("n1",)], "new item 1"),
        ([], "no items"),
        # its response tokens run on past the end of "Heat (1995)"'s (EOS inside the title)
        ([("n1", 'Heat (1995)"<|im_end|>x')], "continues past the end"),
    ],
)
def test_bad_new_items_change_nothing(recommender, items, problem):
    catalog, trie = recommender.catalog, recommender.trie
    with pytest.raises(CftrecError, match=problem):
        recommender.add_items(items)
    assert recommender.catalog is catalog and recommender.trie is trie


@pytest.mark.parametrize(
    ("item_ids", "problem"),
    [(["nope"], "unknown item id 'nope'"), ([str(i) for i in range(8)], "every item")],
)
def test_bad_removals_change_nothing(recommender, item_ids, problem):
    catalog = recommender.catalog
    with pytest.raises(CftrecError, match=problem):
        recommender.remove_items(item_ids)
    assert recommender.catalog is catalog


def test_grounding_embeds_only_the_new_titles(recommender):
    before = recommender.title_embeddings().clone()
    recommender.add_items(NEW)
    recommender.remove_items(["2"])
    after = recommender.title_embeddings()
    titles = recommender.catalog.titles
    assert after.shape[0] == len(titles)
    for row, title in zip(after, titles, strict=True):
        if title in TITLES:
            torch.testing.assert_close(row, before[TITLES.index(title)], rtol=0, atol=0)
        else:  # the last-layer hidden state at the title's last token, computed here
            ids = torch.tensor([recommender.encoder.response_ids(title)[:-1]])
            with torch.no_grad():
                out = recommender.model(input_ids=ids, output_hidden_states=True)
            torch.testing.assert_close(row, out.hidden_states[-1][0, -1], atol=1e-4, rtol=1e-4)
    recs = recommender.recommend(
        [["n1"]], k=len(titles), num_beams=2, method="grounding", exclude_history=False
    )[0]
    assert {r.title for r in recs} == set(titles)


def test_id_based_baselines_refuse_new_items():
    catalog = Catalog(["0", "1"], ["Heat (1995)", "Fargo (1996)"])
    popularity = PopularityRecommender(catalog, {"Heat (1995)": 3})
    sasrec = SASRecRecommender(SASRec(2, SASRecConfig()), catalog)
    for baseline, name in ((popularity, "popularity"), (sasrec, "SASRec")):
        with pytest.raises(CatalogChangeUnsupported, match=f"a {name} run .* cannot rank new"):
            baseline.add_items([("2", "Casino (1995)")])


# ---------------------------------------------------------------- service and overlay


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("catalog-data"))


@pytest.fixture
def llm_run(tmp_path, data, tokenizer):
    return make_llm_run(tmp_path, data, tokenizer)


def test_changes_persist_as_an_overlay_beside_the_run(llm_run):
    items_file = (llm_run / "items.parquet").read_bytes()
    service = RecommendService.load(llm_run, method="exhaustive")
    service.add_items(NEW)
    service.remove_items(["n2", "5"])
    service.add_items([("5", "Scream 2 (1997)")])  # a removed item retitled
    journal = [json.loads(line) for line in (llm_run / JOURNAL_FILE).read_text().splitlines()]
    assert journal == [
        {"seq": 1, "add": [["n1", "The Matrix (1999)"], ["n2", "Amélie (2001)"]]},
        {"seq": 2, "remove": ["n2", "5"]},
        {"seq": 3, "add": [["5", "Scream 2 (1997)"]]},
    ]
    assert not (llm_run / OVERLAY_FILE).exists()
    journaled = RecommendService.load(llm_run, method="exhaustive")
    assert journaled.catalog.title_of == service.catalog.title_of
    service.close()  # a clean shutdown folds the journal into the overlay
    overlay = json.loads((llm_run / OVERLAY_FILE).read_text())
    assert overlay == {
        "added": [{"item_id": "n1", "title": "The Matrix (1999)"},
                  {"item_id": "5", "title": "Scream 2 (1997)"}],
        "removed": ["5"],
        "seq": 3,
    }  # fmt: skip
    assert not (llm_run / JOURNAL_FILE).exists()
    assert (llm_run / "items.parquet").read_bytes() == items_file
    restarted = RecommendService.load(llm_run, method="exhaustive")
    assert restarted.catalog.title_of == service.catalog.title_of
    assert restarted.catalog.item_ids == service.catalog.item_ids
    assert sorted(restarted.catalog.titles) == sorted(service.catalog.titles)
    assert restarted.base_catalog.title_of["5"] == "Scream (1996)"
    recs = restarted.recommend([restarted.resolve(["The Matrix (1999)"])], k=20)[0]
    # every title but the history's own (left out by default)
    assert {r.title for r in recs} == set(restarted.catalog.titles) - {"The Matrix (1999)"}


def test_unsaved_changes_and_failed_saves_leave_no_trace(llm_run, monkeypatch):
    service = RecommendService.load(llm_run, method="exhaustive")
    service.add_items(NEW, persist=False)
    assert not (llm_run / OVERLAY_FILE).exists()
    catalog = service.catalog

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cftrec.serving.journal.append_durable", full_disk)
    with pytest.raises(CftrecError, match="cannot save the catalogue change .*nothing changed"):
        service.remove_items(["n1"])
    assert service.catalog is catalog and "n1" in service.catalog
    assert service.overlay["added"][0]["item_id"] == "n1"


@pytest.mark.parametrize(
    ("overlay", "problem"),
    [
        ("{not json", "bad JSON"),
        ('{"added": {}, "removed": []}', "must be lists"),
        ('{"removed": ["nope"]}', "unknown item id 'nope'"),
        ('{"added": [{"item_id": "0", "title": "X (2000)"}]}', "already in the catalogue"),
        ('{"added": [{"item_id": "n1"}]}', "added item 1: title must be a string"),
        ('{"removed": [5]}', "removed item ids must be strings"),
        ('{"added": [], "removed": [], "seq": -1}', "'seq' must be a whole number"),
    ],
)
def test_a_bad_overlay_is_named(llm_run, overlay, problem):
    (llm_run / OVERLAY_FILE).write_text(overlay)
    with pytest.raises(CftrecError, match=problem) as error:
        RecommendService.load(llm_run)
    assert OVERLAY_FILE in str(error.value)


def test_pop_service_refuses_changes(tmp_path, data):
    service = RecommendService.load(make_pop_run(tmp_path, data))
    with pytest.raises(CatalogChangeUnsupported):
        service.add_items(NEW)
    with pytest.raises(CatalogChangeUnsupported):  # said first, whatever the items
        service.add_items([("n1", "")])
    with pytest.raises(CatalogChangeUnsupported):
        service.remove_items(["0"])


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("new.txt", "", "use a .csv"),
        ("missing.csv", None, "no such file"),
        ("new.csv", "id,name\nn1,X (2000)\n", "must name item_id and title"),
        ("new.csv", "item_id,title\n", "no items"),
        ("new.csv", "item_id,title\nn1,A (2000)\nn1,B (2001)\n", r"new.csv:3: .*twice"),
        ("new.jsonl", '{"item_id": "n1", "title": "A"}\n{oops\n', r"new.jsonl:2: bad JSON"),
        ("new.jsonl", '["n1", "A"]\n', r"new.jsonl:1: expected"),
        ("new.jsonl", '{"item_id": "n1", "title": ""}\n', r"new.jsonl:1: title '' is empty"),
    ],
)
def test_item_files_errors_name_file_and_line(tmp_path, name, text, problem):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(CftrecError, match=problem):
        read_items_file(tmp_path / name)


def test_item_files(tmp_path):
    (tmp_path / "a.csv").write_text('item_id,title\nn1,"Heat 2, the sequel (2026)"\n')
    assert read_items_file(tmp_path / "a.csv") == [("n1", "Heat 2, the sequel (2026)")]
    (tmp_path / "b.jsonl").write_text('{"item_id": "n1", "title": "Amélie (2001)"}\n\n')
    assert read_items_file(tmp_path / "b.jsonl") == [("n1", "Amélie (2001)")]


# ---------------------------------------------------------------- HTTP


def test_http_catalogue_endpoints(llm_run):
    service = RecommendService.load(llm_run, method="exhaustive")
    app = create_app(service, api_key="k", max_k=20)
    key = {"X-API-Key": "k"}
    with running_server(app) as url:
        health = httpx.get(f"{url}/health").json()["catalogue"]
        assert health == {"items": 8, "titles": 8, "trained_items": 8, "added": 0,
                          "removed": 0, "overlay": None}  # fmt: skip
        body = {"items": [{"item_id": i, "title": t} for i, t in NEW]}
        assert httpx.post(f"{url}/items", json=body).status_code == 401
        added = httpx.post(f"{url}/items", json=body, headers=key)
        assert added.status_code == 200, added.text
        assert added.json()["added"] == body["items"]
        recs = httpx.post(
            f"{url}/recommend", json={"history": ["The Matrix (1999)"], "k": 20}, headers=key
        ).json()["recommendations"]
        assert {r["title"] for r in recs} == {*TITLES, "Amélie (2001)"}  # not the history's
        for bad in (
            {"items": [{"item_id": "n9", "title": ""}]},
            {"items": [{"item_id": "n9", "title": "   "}]},
            {"items": [{"item_id": "n9", "title": "x" * 501}]},
            {"items": [{"item_id": "n9", "title": "A (1)"}, {"item_id": "n9", "title": "B (2)"}]},
            {"items": [{"item_id": "n1", "title": "Again (2001)"}]},
            {"items": [{"item_id": 9, "title": "Number (2001)"}]},
            {"items": []},
            {"items": [{"item_id": "n9", "title": "Extra (2001)", "year": 2001}]},
        ):
            response = httpx.post(f"{url}/items", json=bad, headers=key)
            assert response.status_code == 422, (bad, response.text)
        surrogate = '{"items": [{"item_id": "n9", "title": "\\ud800"}]}'
        response = httpx.post(
            f"{url}/items", content=surrogate, headers={**key, "content-type": "application/json"}
        )
        assert response.status_code == 422
        assert httpx.delete(f"{url}/items/n1").status_code == 401
        removed = httpx.delete(f"{url}/items/n1", headers=key)
        assert removed.status_code == 200 and removed.json()["removed"] == ["n1"]
        assert httpx.delete(f"{url}/items/n1", headers=key).status_code == 404
        slash = {"items": [{"item_id": "shelf/7", "title": "Slash (2001)"}]}
        assert httpx.post(f"{url}/items", json=slash, headers=key).status_code == 200
        assert httpx.delete(f"{url}/items/shelf/7", headers=key).json()["removed"] == ["shelf/7"]
        gone = httpx.post(f"{url}/recommend", json={"history": ["n1"]}, headers=key)
        assert gone.status_code == 422
        health = httpx.get(f"{url}/health").json()["catalogue"]
    assert health == {"items": 9, "titles": 9, "trained_items": 8, "added": 1, "removed": 0,
                      "overlay": str(llm_run / OVERLAY_FILE)}  # fmt: skip


def test_http_baselines_say_they_cannot_rank_unseen_items(tmp_path, data):
    app = create_app(RecommendService.load(make_pop_run(tmp_path, data)))
    with running_server(app) as url:
        body = {"items": [{"item_id": "n1", "title": "The Matrix (1999)"}]}
        added = httpx.post(f"{url}/items", json=body)
        assert added.status_code == 409
        assert "popularity run ranks only the items it was trained on" in added.json()["detail"]
        assert httpx.delete(f"{url}/items/0").status_code == 409
        assert httpx.post(f"{url}/recommend", json={"history": ["0"]}).status_code == 200


def test_changes_under_load_are_atomic_and_never_lost(llm_run):
    """20 clients ask for every title (exhaustive, k = all) while items are added and removed:
    no error; a request sent after an add returned lists the new item, one sent after a
    removal returned never lists the removed one; no batch sees a change halfway."""
    service = RecommendService.load(llm_run, method="exhaustive")
    batches = []
    recommend = service.recommend

    def checked(histories, k):  # the catalogue changes in place: compare what it holds
        before = dict(service.catalog.title_of)
        result = recommend(histories, k)
        batches.append(service.catalog.title_of == before)
        return result

    service.recommend = checked
    app = create_app(service, max_k=50, max_batch_size=20, max_wait_ms=2)
    answers = []  # (sent, received, titles answered)
    events = []  # (started, returned, title, listed from then on)
    changes = [("POST", 0), ("POST", 1), ("DELETE", 0), ("POST", 2), ("DELETE", 2), ("POST", 3)]

    async def scenario(url: str, http: httpx.AsyncClient) -> None:
        stop = asyncio.Event()

        async def client(index: int) -> None:
            while not stop.is_set():
                sent = time.monotonic()
                body = {"history": [str(index % 8)], "k": 50}
                response = await http.post(f"{url}/recommend", json=body)
                assert response.status_code == 200, response.text
                titles = {r["title"] for r in response.json()["recommendations"]}
                answers.append((sent, time.monotonic(), titles))

        clients = [asyncio.create_task(client(i)) for i in range(20)]
        for method, number in changes:
            title = f"Live Item {number} (2026)"
            started = time.monotonic()
            if method == "POST":
                item = {"item_id": f"live{number}", "title": title}
                response = await http.post(f"{url}/items", json={"items": [item]})
            else:
                response = await http.delete(f"{url}/items/live{number}")
            assert response.status_code == 200, response.text
            returned = time.monotonic()
            events.append((started, returned, title, method == "POST"))
            # let a round of requests sent after the change come back
            while sum(sent > returned for sent, _, _ in answers) < 20:
                assert time.monotonic() < returned + 60 and not any(c.done() for c in clients)
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*clients)

    async def run(url: str) -> None:
        limits = httpx.Limits(max_connections=21)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            await scenario(url, http)

    with running_server(app) as url:
        asyncio.run(run(url))
        final = httpx.get(f"{url}/health").json()["catalogue"]

    assert batches and all(batches)
    for index, (_, returned, title, listed) in enumerate(events):
        # Requests sent after this change returned and answered before the next change to the
        # same title started all reflect it.
        following = [start for start, _, other, _ in events[index + 1 :] if other == title]
        until = min(following, default=float("inf"))
        seen = [
            titles for sent, received, titles in answers if returned < sent and received < until
        ]
        assert seen, title
        assert all((title in titles) == listed for titles in seen), title
    assert final["items"] == 8 + 2 and final["added"] == 2
    restarted = RecommendService.load(llm_run)
    assert sorted(restarted.catalog.titles) == sorted(
        [*TITLES, "Live Item 1 (2026)", "Live Item 3 (2026)"]
    )
