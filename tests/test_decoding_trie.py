"""The catalogue trie and the grounding helpers against brute-force computations."""

from __future__ import annotations

import random

import pytest
import torch

from cftrec.decoding.grounding import ground, round_robin
from cftrec.decoding.trie import TitleTrie
from cftrec.errors import CftrecError

EOS = 99


def random_sequences(seed=0, count=40):
    rng = random.Random(seed)
    seqs = set()
    while len(seqs) < count:
        seqs.add(tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 5))) + (EOS,))
    return [list(s) for s in sorted(seqs)]


def test_children_and_leaves_match_brute_force():
    seqs = random_sequences()
    trie = TitleTrie(seqs)
    prefixes = {tuple(s[:d]) for s in seqs for d in range(len(s) + 1)}
    assert trie.num_nodes == len(prefixes) + 1  # and the dead end
    assert int(trie.child_count[trie.dead_end]) == 0
    for prefix in prefixes:
        node = trie.walk(prefix)
        tokens, children, valid = trie.children(torch.tensor([node]))
        got = sorted(int(t) for t, ok in zip(tokens[0], valid[0], strict=True) if ok)
        expected = sorted(
            {
                s[len(prefix)]
                for s in seqs
                if len(s) > len(prefix) and tuple(s[: len(prefix)]) == prefix
            }
        )
        assert got == expected
        leaf = int(trie.leaf_title[node])
        assert leaf == (seqs.index(list(prefix)) if list(prefix) in seqs else -1)
    assert trie.walk([5]) is None


def test_duplicate_or_nested_responses_are_refused():
    with pytest.raises(CftrecError, match="same response tokens"):
        TitleTrie([[1, EOS], [1, EOS]], ["A", "B"])
    with pytest.raises(CftrecError, match="continues past the end"):
        TitleTrie([[1, EOS], [1, EOS, 2]], ["A", "B"])


def test_round_robin_merge_by_hand():
    rankings = torch.tensor([[3, 1, 2, 0], [3, 2, 0, 1], [0, 1, 2, 3]])
    # rank 1: 3, (3 dup), 0; rank 2: 1, 2, (1 dup); ...
    assert round_robin(rankings, 10) == [3, 0, 1, 2]
    assert round_robin(rankings, 2) == [3, 0]


def test_ground_ranks_titles_by_l2_distance():
    titles = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    generations = torch.tensor([[0.9, 0.1], [0.0, 1.9]])
    # beam 1 nearest: 1, 0, 2, 3; beam 2 nearest: 2, 0, 1, 3
    assert ground(generations, titles, 4) == [1, 2, 0, 3]


def test_title_embeddings_cached_and_read_only_dir_still_works(tmp_path, tiny_model, tokenizer):
    from cftrec.decoding.recommender import LLMRecommender

    titles = ["Up", "Heat (1995)", "Toy Story (1995)"]
    rec = LLMRecommender(tiny_model, tokenizer, titles, embedding_cache_dir=tmp_path)
    first = rec.title_embeddings()
    cached = list(tmp_path.glob("title_embeddings-*.safetensors"))
    assert len(cached) == 1 and first.shape[0] == 3
    again = LLMRecommender(tiny_model, tokenizer, titles, embedding_cache_dir=tmp_path)
    assert torch.equal(again.title_embeddings(), first)

    # A cache location that cannot be written (its parent is a file): computed, not cached.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    rec = LLMRecommender(tiny_model, tokenizer, titles, embedding_cache_dir=blocker / "run")
    assert torch.allclose(rec.title_embeddings(), first, atol=1e-5)


def test_grounding_reports_raw_generations(tiny_model, tokenizer):
    from cftrec.decoding.recommender import LLMRecommender

    rec = LLMRecommender(tiny_model, tokenizer, ["Up", "Heat (1995)", "Toy Story (1995)"])
    decoded = rec.decode([["Up"], []], k=3, num_beams=2, method="grounding")
    assert [len(g) for g in decoded.generations] == [2, 2]
    assert all(
        isinstance(text, str) and valid is False for g in decoded.generations for text, valid in g
    )
    assert all(len({r.title for r in recs}) == 3 for recs in decoded.recommendations)
