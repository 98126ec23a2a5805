"""Popularity baseline: ranking against a hand count, title-level probabilities, run round trip,
LLM options refused."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from cftrec.baselines.popularity import PopularityRecommender
from cftrec.cli import main
from cftrec.data.dataset import Dataset, write_dataset
from cftrec.errors import CftrecError
from cftrec.runs import load_recommender
from cftrec.runs.protocol import Assistant, Recommender


@pytest.fixture
def tiny(tmp_path):
    """Items a..e; "Bee" is the title of b AND c. Train counts by hand (valid/test not counted):
    Bee: b x2 + c x1 = 3, Apple (a): 3, Dog (d): 1, Echo (e): 0 (only in test)."""
    items = pd.DataFrame(
        {"item_id": ["a", "b", "c", "d", "e"], "title": ["Apple", "Bee", "Bee", "Dog", "Echo"]}
    )
    sequences = {  # user: (items, splits: t = train, v = valid, x = test)
        "u1": ("abde", "ttvx"),
        "u2": ("acde", "tttx"),
        "u3": ("bada", "ttvx"),
    }
    labels = {"t": "train", "v": "valid", "x": "test"}
    rows = [
        (user, item, time, labels[split])
        for user, (items, splits) in sequences.items()
        for time, (item, split) in enumerate(zip(items, splits, strict=True))
    ]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    path = tmp_path / "data"
    write_dataset(path, items, interactions, {"source": "hand"})
    return path


HAND_RANKING = ["Apple", "Bee", "Dog", "Echo"]  # Apple and Bee tie at 3: alphabetical
HAND_COUNTS = {"Apple": 3, "Bee": 3, "Dog": 1, "Echo": 0}


def test_ranking_matches_hand_count(tiny):
    recommender = PopularityRecommender.from_dataset(Dataset.load(tiny))
    lists = recommender.recommend([["a"], ["d", "e"], []], k=10, exclude_history=False)
    for top in lists:  # the same list for everyone, history items included
        assert [r.title for r in top] == HAND_RANKING
        assert [r.score for r in top] == [HAND_COUNTS[t] for t in HAND_RANKING]
    assert lists[0][1].item_ids == ("b", "c")
    top_two = recommender.recommend([["a"]], k=2, exclude_history=False)[0]
    assert [r.title for r in top_two] == ["Apple", "Bee"]


def test_history_titles_are_left_out_by_default(tiny):
    """What comes next: the ranking without each history's own titles, still k long."""
    recommender = PopularityRecommender.from_dataset(Dataset.load(tiny))
    lists = recommender.recommend([["a"], ["d", "e"], []], k=2)
    assert [[r.title for r in top] for top in lists] == [
        ["Bee", "Dog"],  # Apple (item a) left out
        ["Apple", "Bee"],
        ["Apple", "Bee"],
    ]


def test_title_log_probs_are_normalised_counts(tiny):
    recommender = PopularityRecommender.from_dataset(Dataset.load(tiny))
    scores = recommender.title_log_probs([["a"], ["b"]])
    titles = recommender.catalog.titles
    assert scores.shape == (2, len(titles))
    for column, title in enumerate(titles):
        expected = math.log(HAND_COUNTS[title] / 7) if HAND_COUNTS[title] else -math.inf
        assert scores[0, column].item() == pytest.approx(expected)
    assert torch.equal(scores[0], scores[1])


def test_cli_round_trip(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    main(["baseline", "pop", "--data", str(tiny), "-o", str(run), "--json"])
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["kind"] == "pop" and info["train_interactions"] == 7
    stored = json.loads((run / "run.json").read_text())
    assert stored["data_fingerprint"] == Dataset.load(tiny).fingerprint
    loaded = load_recommender(run)
    assert isinstance(loaded, PopularityRecommender)
    assert [r.title for r in loaded.recommend([["a"]], exclude_history=False)[0]] == HAND_RANKING
    assert loaded.counts == HAND_COUNTS


def test_llm_options_are_refused(tiny, tmp_path):
    run = tmp_path / "run"
    main(["baseline", "pop", "--data", str(tiny), "-o", str(run)])
    for option in ({"num_beams": 10}, {"method": "beam"}):
        with pytest.raises(CftrecError, match=next(iter(option))):
            load_recommender(run, **option)
    recommender = load_recommender(run, num_beams=None)  # None counts as not given
    assert isinstance(recommender, Recommender) and isinstance(recommender, Assistant)
    with pytest.raises(CftrecError, match="method, num_beams") as error:
        recommender.recommend([["a"]], num_beams=10, method="beam")
    assert "\n" not in str(error.value)


def test_cli_missing_dataset_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["baseline", "pop", "--data", str(tmp_path / "nothing"), "-o", str(run)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing" in err
    assert not run.exists()
