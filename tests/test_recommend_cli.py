"""`cftrec recommend` on real pop and LLM runs: table, JSON, unknown titles, item ids."""

from __future__ import annotations

import json

import pytest
import torch

from cftrec.cli import main
from cftrec.data.dataset import Dataset
from cftrec.decoding import DEFAULT_BEAMS
from cftrec.runs.llm import load_llm_run
from serving_fixtures import make_dataset, make_llm_run, make_pop_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("recommend")
    data = make_dataset(root)
    return {
        "data": data,
        "pop": make_pop_run(root, data),
        "llm": make_llm_run(root, data, tokenizer),
    }


def _run(argv, capsys):
    main(argv)
    return capsys.readouterr().out


def test_pop_run_documented_form_and_positional_form(runs, capsys):
    dataset = Dataset.load(runs["data"])
    train = dataset.interactions[dataset.interactions["split"] == "train"]
    counts = train["item_id"].map(dataset.catalog.title_of).value_counts().to_dict()
    expected = sorted(dataset.catalog.titles, key=lambda t: (-counts.get(t, 0), t))[:3]
    for argv in (
        ["--history", "Toy Story (1995)", "Heat (1995)", "-k", "3", "--json"],
        ["Toy Story (1995)", "1", "--k", "3", "--json"],
    ):
        out = json.loads(_run(["recommend", "--run", str(runs["pop"]), *argv], capsys))
        assert [r["title"] for r in out["recommendations"]] == expected
        assert [h["item_id"] for h in out["history"]] == ["0", "1"]
        assert out["recommendations"][0]["score"] == counts[expected[0]]
    table = _run(["recommend", "--run", str(runs["pop"]), "--history", "Heat (1995)"], capsys)
    for column in ("rank", "title", "score", "item ids", expected[0]):
        assert column in table


def test_llm_run_exhaustive_matches_brute_force(runs, capsys):
    argv = ["recommend", "--run", str(runs["llm"]), "--item-ids", "3", "5",
            "--decoding", "exhaustive", "-k", "4", "--json"]  # fmt: skip
    out = json.loads(_run(argv, capsys))
    run = load_llm_run(runs["llm"])
    catalog = Dataset.load(runs["data"]).catalog
    prompt = run.encoder.factual_ids(["Babe (1995)", "Scream (1996)"])[0]
    scores = {}
    for title in catalog.titles:
        response = run.encoder.response_ids(title)
        with torch.no_grad():
            logits = run.model(input_ids=torch.tensor([prompt + response])).logits[0]
        lp = logits[len(prompt) - 1 : -1].log_softmax(-1)
        scores[title] = lp[torch.arange(len(response)), torch.tensor(response)].sum().item()
    ranking = sorted(scores, key=lambda t: -scores[t])
    history = {"Babe (1995)", "Scream (1996)"}  # left out by default: what comes next
    expected = [title for title in ranking if title not in history][:4]
    assert [r["title"] for r in out["recommendations"]] == expected
    assert out["recommendations"][0]["score"] == pytest.approx(scores[expected[0]], abs=1e-3)
    assert out["decoding"] == {"method": "exhaustive", "num_beams": DEFAULT_BEAMS}
    kept = json.loads(_run([*argv, "--keep-history"], capsys))
    assert [r["title"] for r in kept["recommendations"]] == ranking[:4]


def test_llm_run_exact_decoding_equals_exhaustive(runs, capsys):
    """`--decoding exact` through the command line: the exhaustive ranking's top k, the
    history's titles left out while searching (the list stays k long)."""
    argv = ["recommend", "--run", str(runs["llm"]), "--item-ids", "3", "5", "-k", "4", "--json"]
    exact = json.loads(_run([*argv, "--decoding", "exact"], capsys))
    exhaustive = json.loads(_run([*argv, "--decoding", "exhaustive"], capsys))
    assert len(exact["recommendations"]) == 4
    assert [r["title"] for r in exact["recommendations"]] == [
        r["title"] for r in exhaustive["recommendations"]
    ]
    for got, want in zip(exact["recommendations"], exhaustive["recommendations"], strict=True):
        assert got["score"] == pytest.approx(want["score"], abs=1e-3)


def test_long_history_keeps_the_most_recent_window(runs, capsys):
    entries = [str(i % 8) for i in range(13)]  # 13 entries; the run's window is 10
    out = json.loads(_run(["recommend", "--run", str(runs["pop"]), *entries, "--json"], capsys))
    assert [h["item_id"] for h in out["history"]] == entries[-10:]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--history", "Toy Stroy (1995)"], "did you mean 'Toy Story (1995)'"),
        (["--item-ids", "Heat (1995)"], "unknown item id 'Heat (1995)'"),
        (["--decoding", "greedy", "Heat (1995)"], "unknown decoding method"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, capsys, argv, message):
    run = runs["llm"] if "--decoding" in argv else runs["pop"]
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--run", str(run), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_extra_items_are_recommendable_for_this_call_only(runs, capsys, tmp_path):
    extra = tmp_path / "new.csv"
    extra.write_text('item_id,title\nn1,The Matrix (1999)\nn2,"Heat, the sequel (2026)"\n')
    argv = ["recommend", "--run", str(runs["llm"]), "--extra-items", str(extra),
            "--decoding", "exhaustive", "-k", "10", "--json", "--keep-history",
            "The Matrix (1999)"]  # fmt: skip
    out = json.loads(_run(argv, capsys))
    assert out["history"] == [{"item_id": "n1", "title": "The Matrix (1999)"}]
    titles = {r["title"] for r in out["recommendations"]}
    assert {"The Matrix (1999)", "Heat, the sequel (2026)"} <= titles and len(titles) == 10
    assert not (runs["llm"] / "catalog_overlay.json").exists()


@pytest.mark.parametrize(
    ("run", "text", "message"),
    [
        ("pop", "item_id,title\nn1,X (2000)\n", "popularity run ranks only the items"),
        ("llm", "item_id,title\nn1,\n", "new.csv:2: title '' is empty"),
        ("llm", "item_id,title\n0,Again (2000)\n", "'0' is already in the catalogue"),
    ],
)
def test_bad_extra_items_are_one_line_and_exit_2(runs, capsys, tmp_path, run, text, message):
    extra = tmp_path / "new.csv"
    extra.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--run", str(runs[run]), "--extra-items", str(extra), "Heat (1995)"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
