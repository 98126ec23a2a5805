"""SASRec: learns a predictable pattern, scores at title level, is causal and padding-invariant,
validates with the evaluation's metrics, reloads from its run directory as it was trained, gives
the same run whatever the thread count, refuses LLM options, and the CLI writes a complete run."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
import torch

from cftrec.baselines.sasrec import (
    SASRec,
    SASRecConfig,
    SASRecRecommender,
    fit_sasrec,
    title_ranks,
    training_windows,
    write_sasrec_run,
)
from cftrec.cli import main
from cftrec.data.dataset import Catalog, Dataset, write_dataset
from cftrec.errors import CftrecError
from cftrec.evaluation.metrics import mean_metrics, target_rank
from cftrec.runs import load_recommender
from cftrec.runs.protocol import Assistant, Recommender

NUM_ITEMS = 20


def cycle_dataset(path, users=60, length=12, shared_title=True):
    """Every user walks the cycle 0 -> 1 -> ... -> 19 -> 0 from a random start: the next item is
    a function of the last one. Leave-one-out split. Items 18 and 19 share a title."""
    rng = random.Random(0)
    titles = [f"Item {i}" for i in range(NUM_ITEMS)]
    if shared_title:
        titles[19] = titles[18]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(NUM_ITEMS)], "title": titles})
    rows = []
    for user in range(users):
        start = rng.randrange(NUM_ITEMS)
        for t in range(length):
            split = "test" if t == length - 1 else "valid" if t == length - 2 else "train"
            rows.append((f"u{user}", f"i{(start + t) % NUM_ITEMS}", t, split))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    write_dataset(path, items, interactions, {"source": "synthetic-cycle", "split": "loo"})
    return Dataset.load(path)


def small_config(**overrides):
    settings = dict(hidden_size=32, num_blocks=1, num_heads=2, dropout=0.0, max_length=8)
    settings |= dict(epochs=40, batch_size=32, learning_rate=5e-3, patience=3, seed=1)
    return SASRecConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    path = tmp_path_factory.mktemp("cycle") / "data"
    dataset = cycle_dataset(path)
    return dataset, fit_sasrec(dataset, small_config())


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """SASRec after one epoch (its rankings still far from perfect) and its run folder."""
    root = tmp_path_factory.mktemp("one_epoch")
    dataset = cycle_dataset(root / "data")
    result = fit_sasrec(dataset, small_config(epochs=1))
    write_sasrec_run(root / "run", root / "data", dataset, result)
    return dataset, result, root / "run"


def random_recommender(catalog, seed=0, max_length=8):
    torch.manual_seed(seed)
    model = SASRec(len(catalog), small_config(max_length=max_length, num_blocks=2)).eval()
    return SASRecRecommender(model, catalog)


def test_learns_deterministic_cycle(cycle):
    dataset, result = cycle
    recommender = result.recommender
    test = dataset.samples("test", max_history=8)
    hits = 0
    for sample, top in zip(
        test,
        recommender.recommend([s.history for s in test], k=1, exclude_history=False),
        strict=True,
    ):
        hits += dataset.catalog.title(sample.target) == top[0].title
    assert hits / len(test) >= 0.95
    assert result.best_valid["ndcg@10"] >= 0.95
    assert result.metrics[0]["loss"] > result.metrics[result.best_epoch - 1]["loss"]


def test_bce_variant_learns_too(tmp_path):
    dataset = cycle_dataset(tmp_path / "data")
    result = fit_sasrec(dataset, small_config(loss="bce", epochs=40, patience=6))
    assert result.best_valid["ndcg@10"] >= 0.95


def test_title_log_probs_sum_item_probabilities(tmp_path):
    dataset = cycle_dataset(tmp_path / "data")
    recommender = random_recommender(dataset.catalog)
    histories = [["i3", "i4"], ["i19"], ["i0", "i18", "i2", "i7"]]
    # brute force: softmax over all item logits of the last position, summed per title in Python
    model = recommender.model
    for history, row in zip(histories, recommender.title_log_probs(histories), strict=True):
        ids = torch.tensor([[int(i[1:]) + 1 for i in history]])
        with torch.no_grad():
            logits = model.item_logits(model(ids)[0, -1])
        probs = logits.double().softmax(-1).tolist()
        expected = {}
        for item_id, p in zip(dataset.catalog.item_ids, probs, strict=True):
            title = dataset.catalog.title(item_id)
            expected[title] = expected.get(title, 0.0) + p
        for title, p in expected.items():
            assert row[dataset.catalog.index_of_title[title]].item() == pytest.approx(
                math.log(p), abs=1e-5
            )
        # ranking scores use the best item of each title
        best = recommender.title_scores([history])[0]
        shared = dataset.catalog.index_of_title["Item 18"]
        assert best[shared].item() == pytest.approx(math.log(max(probs[18], probs[19])), abs=1e-5)
    assert recommender.title_log_probs(histories).shape == (3, NUM_ITEMS - 1)


def test_causal_future_items_do_not_change_earlier_outputs():
    catalog = Catalog([f"i{i}" for i in range(NUM_ITEMS)], [f"Item {i}" for i in range(NUM_ITEMS)])
    model = random_recommender(catalog).model
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = torch.tensor([[1, 2, 3, 9, 12, 15]])  # differs from position 3 on
    with torch.no_grad():
        ha, hb = model(a), model(b)
        shorter = model(a[:, :3])
    torch.testing.assert_close(ha[:, :3], hb[:, :3])
    torch.testing.assert_close(ha[:, :3], shorter)
    assert not torch.allclose(ha[:, 3:], hb[:, 3:])


def test_batching_and_padding_do_not_change_scores():
    catalog = Catalog([f"i{i}" for i in range(NUM_ITEMS)], [f"Item {i}" for i in range(NUM_ITEMS)])
    recommender = random_recommender(catalog)
    histories = [["i1"], ["i2", "i3", "i4", "i5", "i6"], ["i7", "i8"]]
    together = recommender.title_scores(histories)
    for row, history in enumerate(histories):
        torch.testing.assert_close(together[row], recommender.title_scores([history])[0])
    # histories longer than max_length read only the most recent items
    long = [f"i{i % NUM_ITEMS}" for i in range(30)]
    torch.testing.assert_close(
        recommender.title_scores([long]), recommender.title_scores([long[-8:]])
    )


def test_recommend_distinct_titles_with_all_item_ids(tmp_path):
    dataset = cycle_dataset(tmp_path / "data")
    recommender = random_recommender(dataset.catalog)
    top = recommender.recommend([["i1", "i2"]], k=NUM_ITEMS, exclude_history=False)[0]
    assert len(top) == NUM_ITEMS - 1 == len({r.title for r in top})
    assert [r.score for r in top] == sorted((r.score for r in top), reverse=True)
    shared = next(r for r in top if r.title == "Item 18")
    assert shared.item_ids == ("i18", "i19")


def test_title_ranks_are_target_rank_in_the_stable_sort():
    scores = torch.tensor([[0.1, 0.5, 0.5, -1.0], [2.0, 2.0, 2.0, 2.0]])
    for target in range(4):
        targets = torch.tensor([target, target])
        ranks = title_ranks(scores, targets).tolist()
        for row in range(2):
            order = sorted(range(4), key=lambda t: (-scores[row, t].item(), t))
            assert ranks[row] == target_rank(order, target)


def test_validation_metrics_are_the_evaluation_metrics(one_epoch):
    """What early stopping reads is what cftrec.evaluation.metrics gives for the ranks of the
    validation targets in the recommended lists (one epoch: the model validated is the one
    kept, and its ranks vary)."""
    dataset, result, _ = one_epoch
    recommender, catalog = result.recommender, dataset.catalog
    valid = dataset.samples("valid", recommender.max_history)
    lists = recommender.recommend(
        [s.history for s in valid], k=len(catalog.titles), exclude_history=False
    )
    ranks = [
        target_rank([r.title for r in recs], catalog.title(s.target))
        for s, recs in zip(valid, lists, strict=True)
    ]
    assert result.best_valid == mean_metrics(ranks, (10,))
    assert 0 < result.best_valid["ndcg@10"] < 1
    assert result.metrics[0]["valid_ndcg@10"] == result.best_valid["ndcg@10"]


def test_reloaded_run_scores_as_the_model_trained(one_epoch):
    dataset, result, run = one_epoch
    loaded = load_recommender(run)
    histories = [s.history for s in dataset.samples("test", 8)]
    trained = result.recommender
    torch.testing.assert_close(
        loaded.title_scores(histories), trained.title_scores(histories), rtol=0, atol=0
    )
    assert loaded.max_history == trained.max_history


def test_same_run_whatever_the_thread_count(tmp_path):
    """Training and scoring use a fixed thread count, whatever the caller set (which they give
    back): float sums split between threads would round differently."""
    dataset = cycle_dataset(tmp_path / "data")
    histories = [s.history for s in dataset.samples("test", 8)]
    callers = torch.get_num_threads()
    weights, scores = [], []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            recommender = fit_sasrec(dataset, small_config(epochs=2)).recommender
            scores.append(recommender.title_log_probs(histories))
            assert torch.get_num_threads() == threads
            weights.append(recommender.model.state_dict())
    finally:
        torch.set_num_threads(callers)
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    assert torch.equal(*scores)


def test_llm_options_are_refused(one_epoch):
    _, _, run = one_epoch
    for option in ({"num_beams": 10}, {"method": "beam"}):
        with pytest.raises(CftrecError, match=next(iter(option))):
            load_recommender(run, **option)
    # its own options are taken; None counts as not given
    recommender = load_recommender(run, device="cpu", batch_size=8, num_beams=None)
    assert isinstance(recommender, Recommender) and isinstance(recommender, Assistant)
    with pytest.raises(CftrecError, match="method, num_beams") as error:
        recommender.recommend([["i1"]], num_beams=10, method="beam")
    assert "\n" not in str(error.value)


def test_training_windows_cover_every_target_once():
    sequence = list(range(1, 24))  # 23 items -> 22 targets
    windows = training_windows([sequence, [5], [7, 8]], max_length=5)
    targets = [t for w in windows for t in w[1:]]
    assert sorted(targets) == sorted([*range(2, 24), 8])
    assert all(2 <= len(w) <= 6 for w in windows)
    for w in windows:  # windows are contiguous slices of their sequence
        assert w == list(range(w[0], w[0] + len(w)))


def test_unknown_item_and_empty_history_are_user_errors(tmp_path):
    dataset = cycle_dataset(tmp_path / "data")
    recommender = random_recommender(dataset.catalog)
    with pytest.raises(CftrecError, match="nope"):
        recommender.recommend([["nope"]])
    with pytest.raises(CftrecError, match="at least one"):
        recommender.recommend([[]])


def test_cli_round_trip_and_same_seed_same_run(tmp_path, capsys):
    data = tmp_path / "data"
    dataset = cycle_dataset(data)
    run = tmp_path / "run"
    options = "--hidden-size 16 --blocks 1 --heads 1 --max-length 8 --epochs 3 --batch-size 64"
    options = [*options.split(), "--seed", "3", "--json"]
    main(["baseline", "sasrec", "--data", str(data), "-o", str(run), *options])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["kind"] == "sasrec" and summary["epochs_run"] == 3
    assert {p.name for p in run.iterdir()} >= {
        "run.json",
        "config.json",
        "model.safetensors",
        "metrics.jsonl",
        "items.parquet",
    }
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3] and all("valid_ndcg@10" in x for x in lines)
    histories = [s.history for s in dataset.samples("test", 8)]
    first = load_recommender(run).title_scores(histories)
    # same seed, same result: a second training run scores identically
    main(["baseline", "sasrec", "--data", str(data), "-o", str(tmp_path / "run2"), *options])
    second = load_recommender(tmp_path / "run2").title_scores(histories)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    cycle_dataset(data)
    run = tmp_path / "run"
    for data_path, options in (
        (tmp_path / "missing", ""),
        (data, "--hidden-size 30 --heads 4"),
        (data, "--loss hinge"),
        (data, "--epochs 0"),
    ):
        argv = ["baseline", "sasrec", "--data", str(data_path), "-o", str(run), *options.split()]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not run.exists()
