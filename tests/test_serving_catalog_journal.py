"""The live catalogue changed in place, against a recommender built afresh over the same items,
and its journal on disk: replayed after a crash at every point, a torn last line ignored, one
writer at a time, compacted now and then."""

from __future__ import annotations

import contextlib
import json
import logging
import random

import pytest

from cftrec.data.dataset import Catalog
from cftrec.decoding.recommender import LLMRecommender
from cftrec.errors import CftrecError
from cftrec.serving import journal
from cftrec.serving.journal import CatalogueBusy
from cftrec.serving.service import JOURNAL_FILE, OVERLAY_FILE, RecommendService
from conftest import make_tiny_llama
from serving_fixtures import make_dataset, make_llm_run
from training_fixtures import TITLES, one_thread  # noqa: F401 (fixture)

WORDS = ["Red", "Blue", "Heat", "Night", "Moon", "Sun", "Road", "King"]


def _lists(recommender, method, history):
    recs = recommender.recommend([history], k=6, num_beams=6, method=method)[0]
    return [(r.title, tuple(sorted(r.item_ids)), round(r.score, 3)) for r in recs]


def test_random_changes_decode_like_a_fresh_recommender(tokenizer):
    rng = random.Random(3)
    model = make_tiny_llama(tokenizer, seed=2)
    live = LLMRecommender(model, tokenizer, Catalog([str(i) for i in range(len(TITLES))], TITLES))
    live.title_embeddings()  # grounding's embeddings are kept up to date too
    next_id = 100
    for step in range(14):
        catalog = live.catalog
        if rng.random() < 0.4 and len(catalog) > 3:
            live.remove_items(rng.sample(catalog.item_ids, rng.randint(1, 2)))
        else:
            count = rng.randint(1, 3)
            items = []
            for _ in range(count):  # new titles, or one already carried (a shared title)
                title = (
                    rng.choice(catalog.titles)
                    if rng.random() < 0.3
                    else f"{rng.choice(WORDS)} {rng.choice(WORDS)} ({1990 + step})"
                )
                items.append((f"n{next_id}", title))
                next_id += 1
            # two random titles alike: refused as a whole, nothing changed
            with contextlib.suppress(CftrecError):
                live.add_items(items)
        catalog = live.catalog
        fresh = LLMRecommender(
            model, tokenizer, Catalog(catalog.item_ids, catalog.titles_for(catalog.item_ids))
        )
        assert sorted(fresh.catalog.titles) == sorted(catalog.titles)
        assert [catalog.index_of_title[t] for t in catalog.titles] == list(
            range(len(catalog.titles))
        )
        assert live.responses == [live.encoder.response_ids(t) for t in catalog.titles]
        embeddings = fresh.title_embeddings()
        for index, title in enumerate(catalog.titles):
            row = embeddings[fresh.catalog.index_of_title[title]]
            assert live.title_embeddings()[index].allclose(row, atol=1e-4)
        history = [rng.choice(catalog.item_ids)]
        for method in ("beam", "exact"):
            assert _lists(live, method, history) == _lists(fresh, method, history), (step, method)


@pytest.fixture
def llm_run(tmp_path, tokenizer):
    return make_llm_run(tmp_path, make_dataset(tmp_path), tokenizer)


def _state(service):
    return dict(service.catalog.title_of)


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_change(llm_run, caplog):
    service = RecommendService.load(llm_run)
    service.add_items([("n1", "The Matrix (1999)")])
    service.remove_items(["2"])
    expected = _state(service)
    service.store.release()
    with (llm_run / JOURNAL_FILE).open("a") as handle:  # killed halfway through a write
        handle.write('{"seq": 3, "add": [["n2", "Half')
    with caplog.at_level(logging.WARNING):
        restarted = RecommendService.load(llm_run)
    assert "torn last line" in caplog.text
    assert _state(restarted) == expected
    restarted.add_items([("n3", "Heat 2 (2026)")])
    lines = (llm_run / JOURNAL_FILE).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    restarted.store.release()
    assert "n3" in RecommendService.load(llm_run).catalog


def test_a_bad_line_before_the_last_is_named(llm_run):
    service = RecommendService.load(llm_run)
    service.add_items([("n1", "The Matrix (1999)")])
    service.add_items([("n2", "Heat 2 (2026)")])
    lines = (llm_run / JOURNAL_FILE).read_text().splitlines()
    (llm_run / JOURNAL_FILE).write_text(f"{lines[0]}\n{{oops\n{lines[1]}\n")
    with pytest.raises(Exception, match=f"{JOURNAL_FILE}:2: not a journal entry"):
        RecommendService.load(llm_run)


def test_a_crash_between_the_overlay_and_the_journal_reset_loses_nothing(llm_run):
    service = RecommendService.load(llm_run)
    service.add_items([("n1", "The Matrix (1999)")])
    service.remove_items(["3"])
    journal_text = (llm_run / JOURNAL_FILE).read_text()
    service.close()
    (llm_run / JOURNAL_FILE).write_text(journal_text)  # the reset never happened
    restarted = RecommendService.load(llm_run)
    assert _state(restarted) == _state(service)
    restarted.add_items([("n2", "Heat 2 (2026)")])  # numbered after the overlay's last entry
    assert json.loads((llm_run / JOURNAL_FILE).read_text().splitlines()[-1])["seq"] == 3
    restarted.close()
    again = RecommendService.load(llm_run)
    assert _state(again) == {**_state(service), "n2": "Heat 2 (2026)"}


def test_an_old_overlay_without_seq_still_loads(llm_run):
    (llm_run / OVERLAY_FILE).write_text(
        '{"added": [{"item_id": "n1", "title": "The Matrix (1999)"}], "removed": ["0"]}'
    )
    service = RecommendService.load(llm_run)
    assert "n1" in service.catalog and "0" not in service.catalog
    service.add_items([("n2", "Heat 2 (2026)")])
    service.close()
    overlay = json.loads((llm_run / OVERLAY_FILE).read_text())
    assert overlay["seq"] == 1 and [a["item_id"] for a in overlay["added"]] == ["n1", "n2"]


def test_one_writer_at_a_time(llm_run):
    server = RecommendService.load(llm_run, hold_catalogue=True)
    other = RecommendService.load(llm_run)
    with pytest.raises(CatalogueBusy, match="another process"):
        other.add_items([("n1", "The Matrix (1999)")])
    assert "n1" not in other.catalog
    server.add_items([("n2", "Heat 2 (2026)")])
    server.close()
    with pytest.raises(CatalogueBusy, match="changed on disk since it was loaded"):
        other.add_items([("n1", "The Matrix (1999)")])


def test_the_journal_is_folded_into_the_overlay_when_it_grows(llm_run, monkeypatch):
    monkeypatch.setattr(journal, "COMPACT_MIN_BYTES", 200)
    service = RecommendService.load(llm_run)
    for number in range(12):
        service.add_items([(f"n{number}", f"Film Number {number} (2026)")])
        size = (llm_run / JOURNAL_FILE).stat().st_size if (llm_run / JOURNAL_FILE).exists() else 0
        overlay = (
            (llm_run / OVERLAY_FILE).stat().st_size if (llm_run / OVERLAY_FILE).exists() else 0
        )
        assert size < max(200, overlay) + 200  # never much past the threshold
    assert (llm_run / OVERLAY_FILE).exists()
    service.store.release()
    assert _state(RecommendService.load(llm_run)) == _state(service)
