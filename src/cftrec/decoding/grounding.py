"""BIGRec grounding: free generation, then the nearest catalogue titles in hidden-state space.

Each of W free beam-search generations and every title are embedded by the model's last-layer
hidden state at their last token; titles are ranked by L2 distance to each generation, and the
W rankings are merged round-robin (best of beam 1, best of beam 2, ..., then second bests),
skipping titles already taken.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .lm import left_pad, model_device


@torch.inference_mode()
def free_beam_search(
    model,
    prompts: Sequence[Sequence[int]],
    num_beams: int,
    pad_id: int,
    eos_id: int,
    max_new_tokens: int,
    length_penalty: float = 0.0,
) -> list[list[list[int]]]:
    """Unconstrained beam search. -> per prompt, `num_beams` generated id lists (EOS removed)."""
    ids, mask = left_pad(prompts, pad_id, model_device(model))
    generated = model.generate(
        input_ids=ids,
        attention_mask=mask,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        length_penalty=length_penalty,
        early_stopping=False,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )[:, ids.shape[1] :].tolist()
    results = []
    for p in range(len(prompts)):
        beams = []
        for row in generated[p * num_beams : (p + 1) * num_beams]:
            beams.append(row[: row.index(eos_id)] if eos_id in row else row)
        results.append(beams)
    return results


@torch.inference_mode()
def embed_sequences(
    model, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = 64, progress=False
) -> torch.Tensor:
    """Last-layer hidden state at the last token of each sequence -> [n, H] (float32, CPU).
    An empty sequence is embedded as the pad token alone."""
    chunks = []
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="embedding titles", disable=not progress, leave=False):
        batch = [list(s) or [pad_id] for s in sequences[start : start + batch_size]]
        ids, mask = left_pad(batch, pad_id, model_device(model))
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            logits_to_keep=1,
            output_hidden_states=True,
        )
        chunks.append(out.hidden_states[-1][:, -1].float().cpu())
    return torch.cat(chunks)


def title_embeddings_key(model, titles: Sequence[str], responses: Sequence[Sequence[int]]) -> str:
    """A hex digest that names cached title embeddings: the titles and their token ids, and the
    model that embeds them: its class, configuration, dtype and a strided sample of every
    weight (cheap on any size; a fine-tuned or merged model differs everywhere), so embeddings
    cached for one model or dtype are never read for another."""
    config = json.loads(model.config.to_json_string())
    for volatile in ("transformers_version", "_name_or_path"):
        config.pop(volatile, None)
    digest = hashlib.sha256(
        json.dumps(
            [list(titles), [list(r) for r in responses], type(model).__name__, config]
        ).encode()
    )
    samples = []
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        samples.append(flat[:: max(1, flat.numel() // 64)][:64].float())
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype};".encode())
    digest.update(torch.cat(samples).cpu().numpy().tobytes())
    return digest.hexdigest()


def round_robin(rankings: torch.Tensor, k: int) -> list[int]:
    """Merge per-generation rankings [W, T] (title indices, best first) without duplicates."""
    merged: list[int] = []
    seen: set[int] = set()
    for column in rankings.t().tolist():  # rank r of every generation, in beam order
        for title in column:
            if title not in seen:
                seen.add(title)
                merged.append(title)
                if len(merged) == k:
                    return merged
    return merged


def ground(
    generation_embeddings: torch.Tensor, title_embeddings: torch.Tensor, k: int
) -> list[int]:
    """generation_embeddings [W, H], title_embeddings [T, H] -> top-k title indices."""
    distances = torch.cdist(generation_embeddings, title_embeddings)  # [W, T]
    return round_robin(distances.argsort(dim=1, stable=True), k)
