"""`LLMRecommender`: a fine-tuned LLM turned into ranked catalogue recommendations.

    rec = LLMRecommender(model, tokenizer, catalog_or_titles)
    rec.recommend([["item1", "item7"], []], k=10, num_beams=10, method="beam")

Methods (decoding/methods.py): "beam" (constrained beam search over the title trie, D3),
"exact" (the model's exact top-k, branch and bound over the trie), both with optional assistant
guidance; "exhaustive" (likelihood of every title) and "grounding" (BIGRec: free generation,
then nearest titles by hidden state).

The catalogue can change without retraining: `add_items` / `remove_items` change the catalogue,
the trie and grounding's title embeddings in place, in time proportional to the change.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.dataset import Catalog, require_item_ids
from ..errors import CftrecError
from ..prompts import PromptEncoder
from ..recommendation import Recommendation
from .methods import DECODING_METHODS, check_exact_applies, decoding_method, resolve_beams
from .prompt_head import PromptHead

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    """Recommendations per history, plus grounding's raw generations (text, is a title)."""

    recommendations: list[list[Recommendation]]
    generations: list[list[tuple[str, bool]]] = field(default_factory=list)


class LLMRecommender:
    """The LLM recommender of an "llm" run (cftrec.runs.protocol.Recommender)."""

    def __init__(
        self,
        model,
        tokenizer,
        titles_or_catalog: Catalog | Sequence[str],
        encoder: PromptEncoder | None = None,
        *,
        length_penalty: float = 0.0,
        batch_size: int = 8,
        embedding_cache_dir: str | Path | None = None,
        device=None,
        share_head: bool = True,
    ):
        if isinstance(titles_or_catalog, Catalog):
            self.catalog = titles_or_catalog
        else:
            titles = list(titles_or_catalog)
            self.catalog = Catalog(item_ids=titles, titles=titles)
        self.model = model.eval() if device is None else model.to(device).eval()
        self.tokenizer = tokenizer
        self.encoder = encoder or PromptEncoder(tokenizer)
        self.length_penalty = length_penalty
        self.batch_size = batch_size
        self.embedding_cache_dir = Path(embedding_cache_dir) if embedding_cache_dir else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.eos_token_id
        self._title_embeddings: torch.Tensor | None = None  # the first rows of:
        self._embedding_rows: torch.Tensor | None = None
        # The template's opening tokens, prefilled once and reused by every search
        # (`share_head=False`: every prompt prefilled in full; same results, slower).
        self.prompt_head = PromptHead(self.encoder.head_ids()) if share_head else None

    @classmethod
    def from_run(cls, run_dir: str | Path, dtype: str | None = None, **options) -> LLMRecommender:
        """Load an "llm" run directory (model, tokenizer, prompt settings, catalogue)."""
        from ..runs.info import load_run_catalog
        from ..runs.llm import load_llm_run

        run = load_llm_run(run_dir, dtype=dtype, merge_lora=True)
        options.setdefault("embedding_cache_dir", run_dir)
        return cls(run.model, run.tokenizer, load_run_catalog(run_dir), run.encoder, **options)

    # ---------------------------------------------------------------- shared pieces
    @cached_property
    def responses(self) -> list[list[int]]:
        """Response token ids of every distinct title, exactly as training used them."""
        return self.encoder.responses_ids(self.catalog.titles)

    @cached_property
    def trie(self):
        return self._build_trie(self.catalog.titles, self.responses)

    def _build_trie(self, titles: list[str], responses: list[list[int]]):
        from .lm import model_device
        from .trie import TitleTrie

        return TitleTrie(responses, titles).to(model_device(self.model))

    # ---------------------------------------------------------------- catalogue changes
    def add_items(self, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """Make new items recommendable without retraining: {item_id: title} or (item_id,
        title) pairs. Titles are cleaned like a prepared dataset's; an empty title, an id
        given twice or already in the catalogue is a CftrecError and changes nothing. Costs
        time proportional to the new titles, not the catalogue."""
        from ..data.catalog_changes import new_items

        pairs = new_items(items)
        self.apply_new_items(pairs, self.check_new_items(pairs))

    def apply_new_items(
        self, pairs: Sequence[tuple[str, str]], fresh: dict[str, list[int]]
    ) -> None:
        """Add cleaned `pairs` that `check_new_items` accepted (`fresh`: what it returned)."""
        embeddings = self._title_embeddings
        rows = self._embed(list(fresh.values())) if embeddings is not None and fresh else None
        for title, ids in fresh.items():
            self.trie.insert(ids, title)
        self.catalog.add(pairs)
        self.responses.extend(fresh.values())
        if rows is not None:
            self._set_embeddings(self._embedding_rows, len(embeddings), rows)

    def check_new_items(self, pairs: Sequence[tuple[str, str]]) -> dict[str, list[int]]:
        """CftrecError if cleaned `pairs` cannot join the catalogue (an id already in it, a
        title whose tokens clash with another's); else {new title: its response ids}."""
        from .trie import TitleTrie

        taken = [item_id for item_id, _ in pairs if item_id in self.catalog]
        if taken:
            raise CftrecError(f"item id {taken[0]!r} is already in the catalogue")
        titles = dict.fromkeys(t for _, t in pairs if t not in self.catalog.index_of_title)
        fresh = dict(zip(titles, self.encoder.responses_ids(list(titles)), strict=True))
        for title, ids in fresh.items():
            self.trie.check(ids, title)
        if len(fresh) > 1:  # the new titles among themselves
            TitleTrie(list(fresh.values()), list(fresh))
        return fresh

    def remove_items(self, item_ids: Iterable[str]) -> None:
        """Stop recommending these items (each must be in the catalogue; histories can no
        longer name them). A title stays while another item carries it; the last title takes
        the index of one that leaves (in the trie, responses and embeddings alike)."""
        trie, responses, embeddings = self.trie, self.responses, self._title_embeddings
        for index in self.catalog.remove(item_ids):
            trie.remove(index)
            last = responses.pop()
            if index < len(responses):
                responses[index] = last
            if embeddings is not None:
                size = len(embeddings) - 1
                embeddings = self._embedding_rows[:size]
                if index < size:
                    self._embedding_rows[index] = self._embedding_rows[size]
        if embeddings is not None:
            self._title_embeddings = embeddings

    def set_catalog(self, catalog: Catalog) -> None:
        """Switch to `catalog` with a full rebuild: the trie and (when grounding has used
        them) the title embeddings are built first, reusing what the current catalogue already
        computed, then swapped in at once; an error (e.g. two titles with the same tokens)
        changes nothing. Not safe while `recommend` runs in another thread: the server
        serialises the two."""
        known = dict(zip(self.catalog.titles, self.responses, strict=True))
        responses = [known.get(t) or self.encoder.response_ids(t) for t in catalog.titles]
        trie = self._build_trie(catalog.titles, responses)
        embeddings = self._title_embeddings
        if embeddings is not None:
            rows = dict(zip(self.catalog.titles, embeddings, strict=True))
            new = [i for i, title in enumerate(catalog.titles) if title not in rows]
            fresh = (
                dict(zip(new, self._embed([responses[i] for i in new]), strict=True)) if new else {}
            )
            embeddings = torch.stack(
                [rows[t] if t in rows else fresh[i] for i, t in enumerate(catalog.titles)]
            )
        self.catalog, self.responses, self.trie = catalog, responses, trie
        if embeddings is not None:
            self._set_embeddings(embeddings, len(embeddings))

    def _set_embeddings(self, buffer: torch.Tensor, used: int, more=None) -> None:
        """Title embeddings = the first `used` rows of `buffer`, then the rows `more`; the
        buffer doubles when full (amortised O(1) per added title)."""
        if buffer.is_inference():  # computed under inference_mode: rows are changed in place
            buffer = buffer.clone()
        if more is not None:
            needed = used + len(more)
            if needed > len(buffer):
                bigger = buffer.new_empty((max(needed, 2 * len(buffer)), buffer.shape[1]))
                bigger[:used] = buffer[:used]
                buffer = bigger
            buffer[used:needed] = more
            used = needed
        self._embedding_rows = buffer
        self._title_embeddings = buffer[:used]

    def prompts(self, histories: Sequence[Sequence[str]]) -> list[list[int]]:
        """Factual prompt ids; an empty history gives the counterfactual (cold-start) prompt."""
        prompts = []
        for history in histories:
            item_ids = require_item_ids(self.catalog, history)
            ids, _ = self.encoder.factual_ids(self.catalog.titles_for(item_ids))
            prompts.append(ids)
        return prompts

    def _title_indices(self, history: Sequence[str]) -> list[int]:
        """Indices of the distinct titles of a history's items."""
        return sorted({self.catalog.index_of_title[t] for t in self.catalog.titles_for(history)})

    def _recommendation(self, title_index: int, score: float) -> Recommendation:
        title = self.catalog.titles[title_index]
        return Recommendation(title, tuple(self.catalog.items_of_title[title]), float(score))

    # ---------------------------------------------------------------- public API
    def recommend(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        num_beams: int | None = None,
        method: str = "beam",
        batch_size: int | None = None,
        assistant=None,
        guidance_scale: float = 1.0,
        progress: bool = False,
        exclude_history: bool = True,
    ) -> list[list[Recommendation]]:
        """Top-k distinct catalogue titles per history (item ids, oldest first), best first.

        The history's own titles are left out unless `exclude_history=False` (domains with
        repeat purchases); the list still holds k titles where the method can find them (beam
        and exact search skip them while they search, as if they had left the catalogue).
        Beam search returns at most `num_beams` titles.
        `num_beams=None`: the method's default (cftrec.decoding.methods).
        """
        return self.decode(
            histories, k, num_beams, method, batch_size, assistant, guidance_scale, progress,
            exclude_history,
        ).recommendations  # fmt: skip

    def decode(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        num_beams: int | None = None,
        method: str = "beam",
        batch_size: int | None = None,
        assistant=None,
        guidance_scale: float = 1.0,
        progress: bool = False,
        exclude_history: bool = False,
    ) -> Decoded:
        """As `recommend`, with grounding's generations too; history titles stay unless
        `exclude_history`."""
        guided_methods = [m.name for m in DECODING_METHODS.values() if m.guidance]
        if assistant is not None and not decoding_method(method).guidance:
            raise CftrecError(
                f"assistant guidance works with --decoding {' or '.join(guided_methods)} only"
            )
        if method == "exact":
            check_exact_applies(self.length_penalty, guidance_scale if assistant else None)
        num_beams = resolve_beams(method, num_beams)
        if k < 1 or num_beams < 1:
            raise CftrecError("k and num_beams must be at least 1")
        histories = [list(h) for h in histories]
        prompts = self.prompts(histories)  # validates every history before any model work
        size = batch_size or self.batch_size
        result = Decoded([])
        starts = range(0, len(prompts), size)
        for start in tqdm(starts, desc=f"decoding ({method})", disable=not progress):
            batch = prompts[start : start + size]
            batch_histories = histories[start : start + size]
            excluded = [self._title_indices(h) if exclude_history else [] for h in batch_histories]
            extra = max(map(len, excluded))  # places the excluded titles may take in a list
            generations = []
            # beam and exact search skip the excluded titles; the others rank more and filter
            if method == "beam":
                recs = self._beam(batch, batch_histories, k, num_beams, assistant,
                                  guidance_scale, excluded)  # fmt: skip
            elif method == "exact":
                recs = self._exact(batch, batch_histories, k, assistant, guidance_scale, excluded)
            elif method == "exhaustive":
                recs = self._exhaustive(batch, k + extra)
            else:
                recs, generations = self._grounding(batch, k + extra, num_beams)
            gone = [{self.catalog.titles[t] for t in titles} for titles in excluded]
            result.recommendations += [
                [r for r in row if r.title not in gone[i]][:k] for i, row in enumerate(recs)
            ]
            result.generations += generations
        return result

    def title_scores(self, histories: Sequence[Sequence[str]], batch_size: int | None = None):
        """Exact log-likelihood of every distinct title per history -> [B, T]."""
        from .exhaustive import score_all_titles

        prompts = self.prompts(histories)
        size = batch_size or self.batch_size
        chunks = [
            score_all_titles(
                self.model, prompts[s : s + size], self.responses, self.pad_id,
                length_penalty=self.length_penalty, head=self.prompt_head,
            )
            for s in range(0, len(prompts), size)
        ]  # fmt: skip
        return torch.cat(chunks).cpu()

    # ---------------------------------------------------------------- methods
    def _beam(self, prompts, histories, k, num_beams, assistant, guidance_scale, excluded):
        from .beam import constrained_beam_search

        titles, scores = constrained_beam_search(
            self.model, prompts, self.trie, num_beams, self.pad_id,
            length_penalty=self.length_penalty,
            assistant_log_mass=self._assistant_mass(assistant, histories, excluded),
            guidance_scale=guidance_scale, head=self.prompt_head, excluded=excluded,
        )  # fmt: skip
        return self._lists(titles, scores, k)

    def _assistant_mass(self, assistant, histories, excluded):
        """D3 guidance: the assistant's log mass per trie node [B, N], or None without one.
        The excluded titles get no mass, as if they had left the catalogue, so a prefix is
        worth what it can still deliver (a title's score only shifts by a per-user constant)."""
        if assistant is None:
            return None
        from .guidance import assistant_title_log_probs, node_log_mass, without_titles

        title_log_probs = assistant_title_log_probs(assistant, self.catalog, histories)
        title_log_probs = without_titles(title_log_probs, excluded)
        return node_log_mass(self.trie, title_log_probs.to(self.trie.leaf_title.device))

    def _lists(self, titles, scores, k) -> list[list[Recommendation]]:
        """Search output (title indices and scores [B, W], -1 where empty) as ranked lists."""
        return [
            [self._recommendation(t, s) for t, s in zip(row_t, row_s, strict=True) if t >= 0][:k]
            for row_t, row_s in zip(titles.tolist(), scores.tolist(), strict=True)
        ]

    def _exact(self, prompts, histories, k, assistant, guidance_scale, excluded):
        from .exact import exact_top_k

        titles, scores = exact_top_k(
            self.model, prompts, self.trie, min(k, len(self.catalog.titles)), self.pad_id,
            assistant_log_mass=self._assistant_mass(assistant, histories, excluded),
            guidance_scale=guidance_scale, excluded=excluded, head=self.prompt_head,
        )  # fmt: skip
        return self._lists(titles, scores, k)

    def _exhaustive(self, prompts, k):
        from .exhaustive import score_all_titles

        scores = score_all_titles(
            self.model, prompts, self.responses, self.pad_id, length_penalty=self.length_penalty,
            head=self.prompt_head,
        ).cpu()  # fmt: skip
        # Stable sort over the catalogue order: ties keep catalogue order (deterministic).
        order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
        return [
            [self._recommendation(t, row_scores[t]) for t in row]
            for row, row_scores in zip(order.tolist(), scores.tolist(), strict=True)
        ]

    def _grounding(self, prompts, k, num_beams):
        from .grounding import embed_sequences, free_beam_search, ground

        generated = free_beam_search(
            self.model, prompts, num_beams, self.pad_id, self.eos_id,
            max_new_tokens=max(len(r) for r in self.responses) + 8,
            length_penalty=self.length_penalty,
        )  # fmt: skip
        flat = [ids for beams in generated for ids in beams]
        embeddings = embed_sequences(self.model, flat, self.pad_id, self.batch_size * num_beams)
        title_embeddings = self.title_embeddings()
        known = set(self.catalog.titles)
        recommendations, generations = [], []
        for p, beams in enumerate(generated):
            rows = embeddings[p * num_beams : (p + 1) * num_beams]
            ranked = ground(rows, title_embeddings, k)
            # Scores: the negated merged rank (round-robin merging has no common scale).
            recommendations.append(
                [self._recommendation(t, -(r + 1)) for r, t in enumerate(ranked)]
            )
            texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in beams]
            generations.append([(text, _unquote(text) in known) for text in texts])
        return recommendations, generations

    def title_embeddings(self) -> torch.Tensor:
        """[T, H] embeddings of every title's response text (without EOS), cached in the run
        directory under a hash of the titles, their token ids and the model (weights, dtype:
        grounding.title_embeddings_key); an unwritable directory only
        means the next run computes them again."""
        if self._title_embeddings is not None:
            return self._title_embeddings
        from safetensors.torch import load_file, save

        from .grounding import title_embeddings_key

        path = None
        if self.embedding_cache_dir is not None:
            key = title_embeddings_key(self.model, self.catalog.titles, self.responses)
            path = self.embedding_cache_dir / f"title_embeddings-{key[:16]}.safetensors"
        if path is not None and path.exists():
            embeddings = load_file(path)["embeddings"]
        else:
            embeddings = self._embed(self.responses)
            if path is not None:
                tmp = path.with_name(path.name + ".tmp")
                try:
                    tmp.write_bytes(save({"embeddings": embeddings.contiguous()}))
                    tmp.replace(path)
                except OSError as error:
                    log.warning("cannot cache title embeddings in %s: %s", path.parent, error)
                    with contextlib.suppress(OSError):
                        tmp.unlink(missing_ok=True)
        self._set_embeddings(embeddings, len(embeddings))
        return embeddings

    def _embed(self, responses: Sequence[Sequence[int]]) -> torch.Tensor:
        """[n, H] grounding embeddings of titles from their response ids (EOS left out)."""
        from .grounding import embed_sequences

        texts = [r[:-1] for r in responses]
        return embed_sequences(
            self.model, texts, self.pad_id, batch_size=64, progress=len(texts) > 500
        )


def _unquote(text: str) -> str:
    """The title inside a generated response: the text between its quotes."""
    text = text.strip()
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    return text
