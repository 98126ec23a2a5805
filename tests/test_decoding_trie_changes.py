"""A trie changed in place (titles inserted and removed at random) against a trie built afresh
from the same titles and against brute force: same children for every prefix, same titles at
the leaves, same guidance mass, same max length; a refused insert changes nothing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cftrec.decoding.guidance import node_log_mass
from cftrec.decoding.trie import TitleTrie
from cftrec.errors import CftrecError

EOS = 99


def random_sequence(rng: random.Random) -> tuple[int, ...]:
    return tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 6))) + (EOS,)


def assert_same_as_fresh(trie: TitleTrie, live: list[tuple[int, ...]]) -> None:
    """`trie` (changed in place) decodes like a fresh build over `live` (title index order)."""
    fresh = TitleTrie([list(s) for s in live], [str(s) for s in live])
    assert trie.num_titles == fresh.num_titles == len(live)
    assert trie.max_length == fresh.max_length == max(len(s) for s in live)
    prefixes = {s[:d] for s in live for d in range(len(s) + 1)}
    reached = {}
    for prefix in prefixes:
        node, reference = trie.walk(prefix), fresh.walk(prefix)
        assert node is not None and reference is not None
        reached[prefix] = node
        tokens, _, valid = trie.children(torch.tensor([node]))
        expected, _, expected_valid = fresh.children(torch.tensor([reference]))
        got = [int(t) for t, ok in zip(tokens[0], valid[0], strict=True) if ok]
        assert got == [int(t) for t, ok in zip(expected[0], expected_valid[0], strict=True) if ok]
        brute = sorted({s[len(prefix)] for s in live if len(s) > len(prefix) and s[: len(prefix)] == prefix})  # fmt: skip
        assert got == brute
        leaf = live.index(prefix) if prefix in live else -1
        assert int(trie.leaf_title[node]) == int(fresh.leaf_title[reference]) == leaf
    # no node outside the live titles' prefixes is reachable: a walk off them falls out
    for prefix in prefixes:
        for token in (1, 2, 3, 4, EOS):
            if prefix + (token,) not in prefixes:
                assert trie.walk(prefix + (token,)) is None
    assert int(trie.child_count[trie.dead_end]) == 0
    # guidance: the mass below every prefix is the sum over the titles that start with it
    log_probs = torch.randn(2, len(live), generator=torch.Generator().manual_seed(len(live)))
    mass, fresh_mass = node_log_mass(trie, log_probs), node_log_mass(fresh, log_probs)
    probs = log_probs.double().softmax(-1)
    for prefix, node in reached.items():
        below = [i for i, s in enumerate(live) if s[: len(prefix)] == prefix]
        brute = probs[:, below].sum(1).log().float()
        torch.testing.assert_close(mass[:, node], brute, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mass[:, node], fresh_mass[:, fresh.walk(prefix)])
    # excluded titles: the nodes a search must not enter are those with only them below
    excluded = [list(range(0, len(live), 2)), [len(live) - 1]]
    blocked = trie.blocked_nodes(excluded)
    assert blocked.shape == (2, trie.num_nodes)
    for prefix, node in reached.items():
        below = {i for i, s in enumerate(live) if s[: len(prefix)] == prefix}
        for row, titles in enumerate(excluded):
            assert bool(blocked[row, node]) == below.issubset(titles), (prefix, row)


@pytest.mark.parametrize(("seed", "mirrored"), [(s, s % 2 == 1) for s in range(6)])
def test_random_inserts_and_removals_match_a_fresh_build(seed, mirrored):
    """`mirrored`: decoding reads copies of the arrays, as on an accelerator (here on the CPU:
    the copies are only brought up to date by what each change touched)."""
    rng = random.Random(seed)
    live: list[tuple[int, ...]] = []
    while len(live) < 8:
        candidate = random_sequence(rng)
        if candidate not in live:
            live.append(candidate)
    trie = TitleTrie([list(s) for s in live], [str(s) for s in live])
    if mirrored:
        trie.device = torch.device("cpu")  # what `to(accelerator)` sets
    assert_same_as_fresh(trie, live)
    if mirrored:
        assert trie.mirrors and trie.child_node.data_ptr() != trie.child_node_.ctypes.data
    for _ in range(60):
        if live and (rng.random() < 0.45 or len(live) > 30) and len(live) > 1:
            index = rng.randrange(len(live))
            moved = trie.remove(index)
            last = live.pop()  # the last title takes the removed one's index
            if index < len(live):
                assert moved == len(live)
                live[index] = last
            else:
                assert moved is None
        else:
            candidate = random_sequence(rng)
            if candidate in live:
                continue
            assert trie.insert(list(candidate), str(candidate)) == len(live)
            live.append(candidate)
        assert_same_as_fresh(trie, live)


def test_a_refused_insert_changes_nothing():
    trie = TitleTrie([[1, 2, EOS], [1, 3, EOS]], ["A", "B"])
    before = {
        name: getattr(trie, name).clone()
        for name in ("child_start", "child_count", "child_token", "child_node", "leaf_title")
    }
    with pytest.raises(CftrecError, match="'C' and 'A' have the same response tokens"):
        trie.insert([1, 2, EOS], "C")
    with pytest.raises(CftrecError, match="'D' continues past the end of 'B'"):
        trie.insert([1, 3, EOS, 4], "D")
    with pytest.raises(CftrecError, match="same response tokens"):  # a prefix of A's
        trie.insert([1, 2], "E")
    for name, tensor in before.items():
        assert torch.equal(getattr(trie, name), tensor), name
    assert trie.num_titles == 2 and trie.names == ["A", "B"]


def test_removed_nodes_are_reused_so_churn_does_not_grow_the_arrays():
    rng = random.Random(7)
    base = sorted({random_sequence(rng) for _ in range(30)})
    trie = TitleTrie([list(s) for s in base])
    sizes = []
    for round_ in range(40):
        extra = (5, 5, round_ % 4 + 1, EOS)
        trie.insert(list(extra), "extra")
        trie.remove(trie.num_titles - 1)
        sizes.append((trie.num_nodes, trie.edge_top))
    assert len(set(sizes[2:])) == 1  # after the first rounds grew the slabs, nothing grows
    assert np.all(trie.depth_[trie.free] == -1)
