"""Constrained decoding: cftrec's beam search vs the D3 approach (transformers `generate` with
`prefix_allowed_tokens_fn` over the same trie), SmolLM2-135M on CPU, MovieLens-100k titles,
prompts with 10 history items, 10 beams, length_penalty 0.

Both methods run on the same batches, interleaved (the CPU is shared and noisy). Reported:
users/s and process CPU seconds per user (robust to other jobs), their ratios, peak extra
memory (RSS sampled during each call), whether the top-10 lists
are identical, and how cftrec's cost grows with catalogue size and beams.

    .venv/bin/python benchmarks/bench_decoding.py [--users 8] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from datetime import date
from pathlib import Path

import torch

from cftrec.data.dataset import Catalog
from cftrec.decoding.lm import left_pad
from cftrec.decoding.recommender import LLMRecommender
from cftrec.modeling import load_model, load_tokenizer

RESULTS = Path(__file__).parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakMemory:
    """Peak RSS above the starting RSS while the block runs (sampled every 2 ms)."""

    def __enter__(self):
        self.start = self.peak = rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss())
        self.extra_mb = (self.peak - self.start) / 2**20


def movielens_titles() -> list[str]:
    from cftrec.assets import movielens_100k_cache

    path = Path(movielens_100k_cache()) / "ml-100k.item"
    titles = []
    with open(path, encoding="latin-1") as handle:
        next(handle)
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            title, year = fields[1].strip(), fields[2].strip()
            titles.append(f"{title} ({year})" if year else title)
    return list(dict.fromkeys(titles))  # distinct, first-appearance order


def d3_generate(model, recommender: LLMRecommender, prompts, num_beams: int):
    """The D3 reference approach: HF beam search, allowed tokens from a prefix dict per beam."""
    allowed: dict[tuple, list[int]] = {}
    for ids in recommender.responses:
        for depth in range(len(ids)):
            allowed.setdefault(tuple(ids[:depth]), []).append(ids[depth])
    allowed = {k: sorted(set(v)) for k, v in allowed.items()}
    title_of = {
        tuple(ids): t
        for ids, t in zip(recommender.responses, recommender.catalog.titles, strict=True)
    }
    ids, mask = left_pad(prompts, recommender.pad_id)
    width = ids.shape[1]
    eos = recommender.eos_id

    def prefix_allowed_tokens_fn(batch_id, sequence):
        return allowed.get(tuple(sequence[width:].tolist()), [eos])

    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask, num_beams=num_beams,
            num_return_sequences=num_beams, do_sample=False, length_penalty=0.0,
            early_stopping=False, max_new_tokens=max(len(r) for r in recommender.responses),
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, pad_token_id=recommender.pad_id,
            eos_token_id=eos, output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
    lists = []
    for p in range(len(prompts)):
        titles = []
        for row in out.sequences[p * num_beams : (p + 1) * num_beams, width:].tolist():
            row = row[: row.index(eos) + 1] if eos in row else row
            titles.append(title_of.get(tuple(row)))
        lists.append(titles)
    return lists, out.sequences_scores.view(len(prompts), num_beams).tolist()


def timed(fn, *args, **kwargs):
    """-> (result, wall seconds, process CPU seconds, peak extra RSS in MB). CPU time counts
    only this process's cycles, so it is far less disturbed by other jobs on a shared CPU."""
    with PeakMemory() as memory:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return result, elapsed, cpu, memory.extra_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--scaling-users", type=int, default=4)
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = load_tokenizer("bundled:smollm2-135m")
    model = load_model("bundled:smollm2-135m").eval()
    titles = movielens_titles()
    rng = random.Random(0)
    histories = [rng.sample(titles, 10) for _ in range(args.users)]
    full = LLMRecommender(model, tokenizer, Catalog(titles, titles), batch_size=args.batch_size)
    prompts = full.prompts(histories)
    print(f"{len(titles)} titles, trie of {full.trie.num_nodes} nodes, "
          f"prompt length {sum(map(len, prompts)) / len(prompts):.0f} tokens")  # fmt: skip

    # --- head to head, interleaved per batch
    ours_time = d3_time = ours_cpu = d3_cpu = 0.0
    ours_mem, d3_mem, same, score_gap = [], [], 0, 0.0
    for start in range(0, args.users, args.batch_size):
        batch = histories[start : start + args.batch_size]
        ours, t, c, m = timed(full.recommend, batch, k=args.beams, num_beams=args.beams)
        ours_time, ours_cpu = ours_time + t, ours_cpu + c
        ours_mem.append(m)
        batch_prompts = prompts[start : start + args.batch_size]
        (d3_lists, d3_scores), t, c, m = timed(d3_generate, model, full, batch_prompts, args.beams)
        d3_time, d3_cpu = d3_time + t, d3_cpu + c
        d3_mem.append(m)
        for mine, theirs, their_scores in zip(ours, d3_lists, d3_scores, strict=True):
            same += [r.title for r in mine] == theirs
            score_gap = max(
                score_gap, *(abs(r.score - s) for r, s in zip(mine, their_scores, strict=True))
            )
        print(
            f"users {start + len(batch)}/{args.users}: cftrec {ours_time:.1f}s, D3 {d3_time:.1f}s"
        )
    head = {
        "users": args.users,
        "batch_size": args.batch_size,
        "beams": args.beams,
        "titles": len(titles),
        "cftrec_users_per_s": args.users / ours_time,
        "d3_users_per_s": args.users / d3_time,
        "speedup_wall": d3_time / ours_time,
        "cftrec_cpu_s_per_user": ours_cpu / args.users,
        "d3_cpu_s_per_user": d3_cpu / args.users,
        "speedup_cpu_time": d3_cpu / ours_cpu,
        "identical_top10_lists": same,
        "max_score_difference": score_gap,
        "cftrec_peak_extra_mb": max(ours_mem),
        "d3_peak_extra_mb": max(d3_mem),
    }
    print(json.dumps(head, indent=2))

    # --- scaling of cftrec's beam search: catalogue size and beams
    users = histories[: args.scaling_users]
    scaling = []
    for size in (200, 400, 800, len(titles)):
        subset = titles[:size]
        rec = LLMRecommender(model, tokenizer, Catalog(subset, subset), batch_size=args.batch_size)
        _ = rec.trie  # built once per catalogue, not part of the per-user cost
        sampler = random.Random(size)
        hist = [sampler.sample(subset, 10) for _ in users]
        _, t, c, _ = timed(rec.recommend, hist, k=10, num_beams=10)
        scaling.append({"titles": size, "beams": 10, "cpu_s_per_user": c / len(hist)})
        print(scaling[-1])
    for beams in (1, 5, 10, 20):
        _, t, c, _ = timed(full.recommend, users, k=10, num_beams=beams)
        scaling.append({"titles": len(titles), "beams": beams, "cpu_s_per_user": c / len(users)})
        print(scaling[-1])

    machine = "2-core CPU, shared"
    record = {"date": date.today().isoformat(), "machine": machine, "model": "SmolLM2-135M-Instruct",
              "head_to_head": head, "scaling": scaling}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decoding.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS / 'decoding.json'}")


if __name__ == "__main__":
    main()
