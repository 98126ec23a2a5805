"""Exhaustive scoring: the prompt shared in place (shared-prefix attention, as beam search uses)
vs the old path (a copy of the prompt's KV cache per title), on the same inputs.

SmolLM2-135M on CPU, the MovieLens-100k titles, prompts with 10 random history titles. Both
paths score every title for the same users, one after the other per user; reported: wall and
process CPU seconds per user (CPU time is far less disturbed by other jobs on a shared
machine), their ratios, peak extra memory, the largest score difference between the paths,
and each path's largest difference to a plain full forward pass of prompt + title (no cache)
for the first user's `--reference-titles` longest titles.

    .venv/bin/python benchmarks/bench_exhaustive.py [--users 2] [--threads 1] [--reference-titles 50]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from datetime import date
from pathlib import Path

import torch
from bench_decoding import movielens_titles, timed

from cftrec.data.dataset import Catalog
from cftrec.decoding.exhaustive import score_all_titles
from cftrec.decoding.recommender import LLMRecommender
from cftrec.modeling import load_model, load_tokenizer

RESULTS = Path(__file__).parent / "results"
PATHS = {"shared_prompt": True, "copied_cache": False}


@torch.inference_mode()
def full_forward_score(model, prompt: list[int], response: list[int]) -> float:
    """log P(response | prompt) from one uncached forward pass, summed in float64."""
    logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
    log_probs = logits.double().log_softmax(-1)
    return sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(response))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference-titles", type=int, default=50)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("bundled:smollm2-135m")
    model = load_model("bundled:smollm2-135m").eval()
    titles = movielens_titles()
    rng = random.Random(0)
    histories = [rng.sample(titles, 10) for _ in range(args.users)]
    recommender = LLMRecommender(model, tokenizer, Catalog(titles, titles))
    prompts = recommender.prompts(histories)
    responses = recommender.responses
    print(f"{len(titles)} titles ({sum(map(len, responses))} response tokens), "
          f"prompts of {sum(map(len, prompts)) / len(prompts):.0f} tokens")  # fmt: skip

    totals = {name: {"wall_s": 0.0, "cpu_s": 0.0, "peak_extra_mb": 0.0} for name in PATHS}
    max_difference, reference = 0.0, {}
    for user, prompt in enumerate(prompts):
        scores = {}
        for name, share in PATHS.items():
            scores[name], wall, cpu, memory = timed(
                score_all_titles, model, [prompt], responses, recommender.pad_id,
                share_prompt=share,
            )  # fmt: skip
            totals[name]["wall_s"] += wall
            totals[name]["cpu_s"] += cpu
            totals[name]["peak_extra_mb"] = max(totals[name]["peak_extra_mb"], memory)
            print(f"user {user + 1}/{args.users} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU")
        difference = (scores["shared_prompt"] - scores["copied_cache"]).abs().max().item()
        max_difference = max(max_difference, difference)
        if user == 0:
            longest = sorted(range(len(titles)), key=lambda t: -len(responses[t]))
            chosen = longest[: args.reference_titles]
            plain = [full_forward_score(model, prompt, responses[t]) for t in chosen]
            reference = {
                name: max(abs(row[0, t].item() - p) for t, p in zip(chosen, plain, strict=True))
                for name, row in scores.items()
            }
            print(f"largest difference to a full forward pass: {reference}")

    per_user = {
        name: {
            "wall_s_per_user": t["wall_s"] / args.users,
            "cpu_s_per_user": t["cpu_s"] / args.users,
            "peak_extra_mb": t["peak_extra_mb"],
        }
        for name, t in totals.items()
    }
    old, new = totals["copied_cache"], totals["shared_prompt"]
    record = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU, shared with other jobs",
        "threads": args.threads,
        "load_average_at_end": os.getloadavg()[0],
        "model": "SmolLM2-135M-Instruct (bundled, float32)",
        "titles": len(titles),
        "response_tokens": sum(map(len, responses)),
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "users": args.users,
        "paths": per_user,
        "speedup_wall": old["wall_s"] / new["wall_s"],
        "speedup_cpu_time": old["cpu_s"] / new["cpu_s"],
        "max_score_difference": max_difference,
        "reference_titles": args.reference_titles,
        "max_difference_to_full_forward": reference,
    }
    print(json.dumps(record, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exhaustive.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS / 'exhaustive.json'}")


if __name__ == "__main__":
    main()
