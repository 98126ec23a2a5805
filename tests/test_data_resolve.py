"""What a person types (titles or item ids) -> item ids, never guessing; evaluation and the
Python API take item ids only."""

from __future__ import annotations

import pandas as pd
import pytest

from cftrec.cli import main
from cftrec.data.dataset import Catalog, resolve_history, write_dataset
from cftrec.errors import CftrecError

# item "1" is titled "Heat & Dust"; item "2" is TITLED "1"; item "Up" is titled "Up" (its own
# id); item "4"'s title came from a raw file as "&ldquo;Quoted&rdquo; Name"
ITEMS = {"1": "Heat & Dust", "2": "1", "Up": "Up", "4": "\u201cQuoted\u201d Name", "5": "Other"}
CATALOG = Catalog(list(ITEMS), list(ITEMS.values()))


def test_an_id_that_is_another_items_title_is_an_error_naming_both():
    with pytest.raises(CftrecError) as error:
        resolve_history(CATALOG, ["1"])
    assert str(error.value) == (
        "ambiguous item '1': it is item id 1 (titled 'Heat & Dust') and the title of item 2; "
        "type item 1's title or item 2's id instead"
    )
    assert resolve_history(CATALOG, ["Heat & Dust", "2"]) == ["1", "2"]


def test_ids_titles_and_raw_titles():
    assert resolve_history(CATALOG, ["Up", "5", "Other"]) == ["Up", "5", "5"]
    # titles as the raw file wrote them (HTML entities, surrounding quotes) are accepted too
    assert resolve_history(CATALOG, ["Heat &amp; Dust", "&ldquo;Quoted&rdquo; Name"]) == ["1", "4"]
    assert resolve_history(CATALOG, ['"Heat &amp;amp; Dust"']) == ["1"]
    with pytest.raises(CftrecError, match="unknown item 'Heat and Dust'.*did you mean"):
        resolve_history(CATALOG, ["Heat and Dust"])


def test_the_python_api_takes_item_ids_only(tiny_model, tokenizer):
    from cftrec.decoding.recommender import LLMRecommender

    # item "b" is titled "B", and item "c" is titled "b": the id must win, always
    recommender = LLMRecommender(tiny_model, tokenizer, Catalog(["a", "b", "c"], ["A", "B", "b"]))
    expected, _ = recommender.encoder.factual_ids(["A", "B"])
    assert recommender.prompts([["a", "b"]]) == [expected]
    with pytest.raises(CftrecError, match="unknown item id 'A'"):
        recommender.prompts([["A"]])


@pytest.fixture
def pop_run(tmp_path):
    items = pd.DataFrame({"item_id": list(ITEMS), "title": list(ITEMS.values())})
    rows = [("u", item, time, "train") for time, item in enumerate(ITEMS)]
    rows += [("v", "5", 0, "train"), ("v", "1", 1, "test")]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    write_dataset(tmp_path / "data", items, interactions, {"source": "hand"})
    run(["baseline", "pop", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "pop")])
    return tmp_path / "pop"


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as error:
        return error.code or 0
    return 0


def test_command_line_and_service_never_guess(pop_run, capsys):
    from cftrec.serving.service import RecommendService

    capsys.readouterr()
    assert run(["recommend", "--run", str(pop_run), "--json", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ambiguous item '1'" in err and "item 2" in err
    assert (
        run(["recommend", "--run", str(pop_run), "--json", "--", "&ldquo;Quoted&rdquo; Name"]) == 0
    )
    assert '"item_id": "4"' in capsys.readouterr().out
    service = RecommendService.load(pop_run)  # what the HTTP API resolves with
    with pytest.raises(CftrecError, match="ambiguous item '1'"):
        service.resolve(["1"])
    assert service.resolve(["Heat &amp; Dust"]) == ["1"]
