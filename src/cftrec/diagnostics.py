"""`cftrec diagnose`: how much does an LLM run's output depend on the user's history?

For every case (history h, target title y = y_1..y_R, EOS included) and response position t:
  KL_t     = KL( p(. | x_h, y_<t) || p(. | x_0, y_<t) )    factual vs counterfactual next token
  effect_t = log p(y_t | x_h, y_<t) - log p(y_t | x_0, y_<t) causal effect on the true token
with x_h the factual prompt and x_0 the counterfactual one (the run's own prompt encoder).
Averaged per position over the cases whose response is that long. Plus the share of cases whose
top-1 recommendation changes when the history is removed (the run's recommender with the
history vs with an empty one). CFT is built on the history's influence fading over an item's
tokens; this shows that curve and whether training strengthened it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .decoding.methods import resolve_beams
from .errors import CftrecError


@torch.inference_mode()
def history_effects(
    model,
    encoder,
    cases: Sequence[tuple[Sequence[str], str]],
    batch_size: int = 8,
    progress: bool = False,
) -> list[tuple[list[float], list[float]]]:
    """Per case (history titles, target title): (KL_t list, effect_t list) over the response.

    Factual and counterfactual sequences of a batch run in one left-padded forward pass; only
    the logits of the last R_max columns (the response predictions) are computed.
    """
    from .decoding.lm import left_pad, model_device

    pad_id = encoder.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    counterfactual = encoder.counterfactual_ids()
    device = model_device(model)
    results = []
    starts = range(0, len(cases), batch_size)
    for start in tqdm(starts, desc="history effect", disable=not progress, unit="batch"):
        batch = cases[start : start + batch_size]
        responses = [encoder.response_ids(target) for _, target in batch]
        factual = [encoder.factual_ids(list(history))[0] for history, _ in batch]
        # Input = prompt + response without its last token: every row then ends with the
        # column that predicts its last response token, so response predictions are the
        # last R_i columns of row i.
        sequences = [p + r[:-1] for p, r in zip(factual, responses, strict=True)]
        sequences += [counterfactual + r[:-1] for r in responses]
        ids, mask = left_pad(sequences, pad_id, device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        keep = max(len(r) for r in responses)
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            logits_to_keep=keep,
        ).logits[:, -keep:]  # [2B, keep, V]
        log_probs = logits.float().log_softmax(-1)
        n = len(batch)
        for i, response in enumerate(responses):
            length = len(response)
            factual_lp = log_probs[i, keep - length :]  # [R, V]
            counter_lp = log_probs[n + i, keep - length :]  # [R, V]
            kl = (factual_lp.exp() * (factual_lp - counter_lp)).sum(-1)  # [R]
            target = torch.tensor(response, device=device).unsqueeze(-1)  # [R, 1]
            effect = (factual_lp.gather(-1, target) - counter_lp.gather(-1, target)).squeeze(-1)
            results.append((kl.tolist(), effect.tolist()))
    return results


def per_position(values: Sequence[Sequence[float]]) -> list[dict[str, float]]:
    """Mean and standard error per position (1-based) over the sequences that reach it."""
    longest = max((len(v) for v in values), default=0)
    rows = []
    for t in range(longest):
        column = [v[t] for v in values if len(v) > t]
        n = len(column)
        mean = sum(column) / n
        var = sum((x - mean) ** 2 for x in column) / (n - 1) if n > 1 else 0.0
        rows.append({"position": t + 1, "n": n, "mean": mean, "se": math.sqrt(var / n)})
    return rows


def diagnose_run(
    run_dir: str | Path,
    dataset,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
    method: str = "beam",
    num_beams: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """All diagnostics of one LLM run on `dataset`'s `split` (the first `limit` cases)."""
    from .decoding.recommender import LLMRecommender
    from .runs.info import load_run_catalog, read_run_info
    from .runs.llm import load_llm_run

    info = read_run_info(run_dir)
    if info["kind"] != "llm":
        raise CftrecError(
            f"{run_dir}: a '{info['kind']}' run; diagnose needs an LLM run (it compares the "
            "model's token distributions with and without the history)"
        )
    catalog = load_run_catalog(run_dir)
    samples = dataset.samples(split, max_history=int(info.get("max_history") or 10))
    samples = samples[:limit] if limit else samples
    if not samples:
        raise CftrecError(f"{dataset.path}: no '{split}' cases to diagnose")
    missing = {i for s in samples for i in (*s.history, s.target) if i not in catalog}
    if missing:
        raise CftrecError(
            f"{dataset.path}: items not in the catalogue of run {run_dir} "
            f"(e.g. {sorted(missing)[:3]}); diagnose a run on the dataset it was trained on"
        )
    if info.get("data_fingerprint") != dataset.fingerprint:
        print(
            f"warning: {run_dir} was trained on other data ({info.get('data_fingerprint')}) "
            f"than {dataset.path} ({dataset.fingerprint})",
            file=sys.stderr,
        )
    run = load_llm_run(run_dir)
    cases = [(catalog.titles_for(s.history), catalog.title(s.target)) for s in samples]
    effects = history_effects(run.model, run.encoder, cases, batch_size, progress)
    kl_rows = per_position([kl for kl, _ in effects])
    effect_rows = per_position([effect for _, effect in effects])

    recommender = LLMRecommender(
        run.model, run.tokenizer, catalog, run.encoder, batch_size=batch_size,
        embedding_cache_dir=run_dir,
    )  # fmt: skip
    num_beams = resolve_beams(method, num_beams)
    # the model's own top title, history titles included: what the history changes
    options = {"k": 1, "method": method, "num_beams": num_beams, "exclude_history": False}
    histories = [list(s.history) for s in samples]
    with_history = recommender.recommend(histories, progress=progress, **options)
    without_history = recommender.recommend([[]], **options)[0]
    cold_title = without_history[0].title if without_history else None
    changed = [(recs[0].title if recs else None) != cold_title for recs in with_history]

    tokens = sum(len(kl) for kl, _ in effects)
    return {
        "run": str(run_dir),
        "method": info.get("method"),
        "split": split,
        "cases": len(samples),
        "data_fingerprint": dataset.fingerprint,
        "run_data_fingerprint": info.get("data_fingerprint"),
        "decoding": {"method": method, "num_beams": num_beams},
        "positions": [
            {
                "position": k["position"],
                "n": k["n"],
                "kl": k["mean"],
                "kl_se": k["se"],
                "effect": e["mean"],
                "effect_se": e["se"],
            }
            for k, e in zip(kl_rows, effect_rows, strict=True)
        ],
        "mean_kl": sum(sum(kl) for kl, _ in effects) / tokens,
        "mean_effect": sum(sum(effect) for _, effect in effects) / tokens,
        "top1_changed": sum(changed) / len(changed),
        "counterfactual_top1": cold_title,
    }


def diagnose(
    run_dirs: Sequence[str | Path],
    data: str | Path,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
    method: str = "beam",
    num_beams: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Diagnostics of one or more runs on the same cases: {"data", "split", "runs": [...]}."""
    from .data.dataset import Dataset

    dataset = Dataset.load(data)
    runs = [
        diagnose_run(r, dataset, split, limit, batch_size, method, num_beams, progress)
        for r in run_dirs
    ]
    return {"data": str(data), "split": split, "limit": limit, "runs": runs}


def run_label(run: dict[str, Any]) -> str:
    name = Path(run["run"]).name
    return f"{name} ({run['method']})" if run.get("method") else name


def plot(result: dict[str, Any], path: str | Path) -> None:
    """KL and causal effect per response position (one line per run, +-1 s.e.) and the share
    of changed top-1 recommendations, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), width_ratios=[1, 1, 0.55])
    for run in result["runs"]:
        rows = run["positions"]
        x = [r["position"] for r in rows]
        for ax, key in zip(axes[:2], ("kl", "effect"), strict=True):
            mean = [r[key] for r in rows]
            se = [r[f"{key}_se"] for r in rows]
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=run_label(run))
            ax.fill_between(
                x, [m - s for m, s in zip(mean, se, strict=True)],
                [m + s for m, s in zip(mean, se, strict=True)], color=line.get_color(), alpha=0.2,
            )  # fmt: skip
    axes[0].set(
        title="KL(factual || counterfactual)", xlabel="response token position", ylabel="nats"
    )
    axes[1].set(
        title="causal effect on the true token",
        xlabel="response token position",
        ylabel="log p_f(y_t) - log p_c(y_t)",
    )
    axes[1].axhline(0, color="grey", linewidth=0.8)
    labels = [run_label(run) for run in result["runs"]]
    shares = [run["top1_changed"] for run in result["runs"]]
    bars = axes[2].bar(range(len(shares)), shares, color=[f"C{i}" for i in range(len(shares))])
    axes[2].bar_label(bars, labels=[f"{share:.0%}" for share in shares])
    axes[2].set_xticks(range(len(shares)), labels, rotation=15)
    axes[2].set(title="top-1 changes without history", ylabel="share of cases", ylim=(0, 1))
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"history effect on {result['split']} ({result['runs'][0]['cases']} cases)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    result: dict[str, Any], out_dir: str | Path, inputs=(), overwrite: bool = False
) -> Path:
    """OUT/diagnose.json and OUT/diagnose.png, written atomically (`inputs`, `overwrite`: the
    output policy of cftrec.io.check_output)."""
    from .files import atomic_directory, write_json

    with atomic_directory(out_dir, "diagnose", inputs, overwrite) as tmp:
        write_json(tmp / "diagnose.json", result)
        plot(result, tmp / "diagnose.png")
    return Path(out_dir)
