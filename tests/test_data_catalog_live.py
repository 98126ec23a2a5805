"""A catalogue changed in place (Catalog.add / remove) against one built afresh from the same
items: the same items, titles and holders, dense title indices, and the same suggestions from
its close-match indexes, kept up to date rather than rebuilt."""

from __future__ import annotations

import difflib
import random

import pytest

from cftrec.data.close_matches import CloseMatches
from cftrec.data.dataset import Catalog
from cftrec.errors import CftrecError

WORDS = ["red", "blue", "heat", "night", "moon", "sun", "road", "king", "queen", "river"]


def _closeness(query: str, found: list[str]) -> list[float]:
    return [
        round(difflib.SequenceMatcher(None, query.lower(), f.lower()).ratio(), 6) for f in found
    ]


def _title(rng) -> str:
    return " ".join(rng.choice(WORDS).title() for _ in range(rng.randint(1, 3)))


@pytest.mark.parametrize("seed", range(4))
def test_random_changes_match_a_fresh_catalogue(seed):
    rng = random.Random(seed)
    catalog = Catalog([f"i{n}" for n in range(60)], [_title(rng) for _ in range(60)])
    catalog.title_matches.find("x")  # built now, so changes must keep it up to date
    catalog.item_id_matches.find("x")
    next_id = 1000
    for _ in range(80):
        if rng.random() < 0.5 and len(catalog) > 5:
            gone = rng.sample(catalog.item_ids, rng.randint(1, 4))
            before = list(catalog.titles)
            left = catalog.remove(gone)
            expected = list(before)  # replay the index moves the catalogue reports
            for index in left:
                last = expected.pop()
                if index < len(expected):
                    expected[index] = last
            assert catalog.titles == expected
        else:
            items = [(f"i{next_id + k}", _title(rng)) for k in range(rng.randint(1, 4))]
            next_id += len(items)
            catalog.add(items)
        fresh = Catalog(catalog.item_ids, catalog.titles_for(catalog.item_ids))
        assert catalog.title_of == fresh.title_of
        assert sorted(catalog.titles) == sorted(fresh.titles)
        assert {t: sorted(i) for t, i in catalog.items_of_title.items()} == {
            t: sorted(i) for t, i in fresh.items_of_title.items()
        }
        assert [catalog.index_of_title[t] for t in catalog.titles] == list(
            range(len(catalog.titles))
        )
        for query in ("Red Moon", "hea", "Queen River King", "i10", "i1003"):
            for matches, reference in (
                (catalog.title_matches, CloseMatches(catalog.titles)),
                (catalog.item_id_matches, CloseMatches(catalog.item_ids)),
            ):
                # equally close strings may be picked in either order: compare closeness
                got, expected = matches.find(query, 5, 0.3), reference.find(query, 5, 0.3)
                assert _closeness(query, got) == _closeness(query, expected)
                assert set(got) <= {o for _, o in matches.live()}
                assert sorted(o for _, o in matches.live()) == sorted(reference.originals)


def test_bad_changes_change_nothing():
    catalog = Catalog(["a", "b"], ["Heat", "Up"])
    with pytest.raises(CftrecError, match="'a' is already in the catalogue"):
        catalog.add([("c", "New"), ("a", "Again")])
    with pytest.raises(CftrecError, match="unknown item id 'z'"):
        catalog.remove(["a", "z"])
    with pytest.raises(CftrecError, match="every item"):
        catalog.remove(["a", "b"])
    assert catalog.title_of == {"a": "Heat", "b": "Up"} and catalog.titles == ["Heat", "Up"]
