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
from cftrec.decoding.beam import constrained_beam_search
from cftrec.decoding.lm import forward, left_pad, prefill
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


class ForwardSplit:
    """Wall and CPU seconds spent inside the model's forward passes, split into prefill (more
    than one new token per row) and search steps (one new token per row); the rest of a call
    is the search's own work (trie lookups, top-k, cache reordering, Python)."""

    def __init__(self, model):
        self.model, self.original = model, model.forward
        self.seconds = {"prefill": [0.0, 0.0], "steps": [0.0, 0.0]}  # [wall, cpu]

    def __enter__(self):
        def forward(*args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            start, cpu_start = time.perf_counter(), time.process_time()
            out = self.original(*args, **kwargs)
            part = self.seconds["prefill" if ids is not None and ids.shape[1] > 1 else "steps"]
            part[0] += time.perf_counter() - start
            part[1] += time.process_time() - cpu_start
            return out

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.forward  # back to the class's method


@torch.inference_mode()
def floor_pass(model, recommender: LLMRecommender, prompt, titles: list[str]):
    """The work no constrained search can avoid for one user: one forward pass over the user's
    own prompt tokens (on the prompt head's keys/values) and one over the response tokens of
    the titles it returns (teacher-forced, all titles as rows of one pass, right-padded to the
    longest; copying the prompt's keys/values to those rows is not timed). -> (wall, CPU,
    own prompt tokens, response tokens)."""
    head = recommender.prompt_head
    index = recommender.catalog.index_of_title
    responses = [recommender.responses[index[t]] for t in titles]
    start, cpu_start = time.perf_counter(), time.process_time()
    _, cache, _, _ = prefill(model, [prompt], recommender.pad_id, head)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    cache.batch_repeat_interleave(len(responses))
    width = max(map(len, responses))
    ids = torch.tensor([r + [recommender.pad_id] * (width - len(r)) for r in responses])
    mask = torch.cat(
        [torch.ones((len(responses), len(prompt)), dtype=torch.long),
         torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in responses])], 1,
    )  # fmt: skip
    positions = (len(prompt) + torch.arange(width)).expand(len(responses), -1)
    start, cpu_start = time.perf_counter(), time.process_time()
    forward(model, ids, mask, positions, cache)
    wall += time.perf_counter() - start
    cpu += time.process_time() - cpu_start
    own = len(prompt) - (len(head) if head and head.applies([prompt]) else 0)
    return wall, cpu, own, sum(map(len, responses))


def head_to_head(model, tokenizer, titles, histories, args, threads: int) -> dict:
    """cftrec's constrained beam search (as shipped, and with the prompt head and the tail
    passes each turned off) and the D3 approach on the same batches, interleaved, at
    `threads` torch threads; and the floor per user."""
    torch.set_num_threads(threads)
    catalog = Catalog(titles, titles)
    ours = LLMRecommender(model, tokenizer, catalog, batch_size=args.batch_size)
    ours.recommend(histories[:1], k=args.beams, num_beams=args.beams)  # computes the head once
    prompts = ours.prompts(histories)
    # cftrec as it ships, and with each saving turned off (the last one: the code before them)
    variants = {
        "cftrec": {"head": ours.prompt_head, "score_tails": True},
        "cftrec_no_head": {"head": None, "score_tails": True},
        "cftrec_no_tails": {"head": ours.prompt_head, "score_tails": False},
        "cftrec_before": {"head": None, "score_tails": False},
    }
    totals = {name: {"wall": 0.0, "cpu": 0.0, "mem": [], "split": {}}
              for name in (*variants, "d3", "floor")}  # fmt: skip
    same = {name: 0 for name in variants}
    score_gap = 0.0
    tokens = {"own_prompt": 0, "response": 0}

    def run(name, fn, *fn_args, **fn_kwargs):
        with ForwardSplit(model) as split:
            result, t, c, m = timed(fn, *fn_args, **fn_kwargs)
        entry = totals[name]
        entry["wall"] += t
        entry["cpu"] += c
        entry["mem"].append(m)
        for part, (wall, cpu) in split.seconds.items():
            entry["split"][part] = [a + b for a, b in zip(entry["split"].get(part, [0, 0]),
                                                          (wall, cpu), strict=True)]  # fmt: skip
        entry["split"].setdefault("search", [0.0, 0.0])
        entry["split"]["search"][0] += t - split.seconds["prefill"][0] - split.seconds["steps"][0]
        entry["split"]["search"][1] += c - split.seconds["prefill"][1] - split.seconds["steps"][1]
        return result

    def search(batch_prompts, head, score_tails):
        titles, scores = constrained_beam_search(
            model, batch_prompts, ours.trie, args.beams, ours.pad_id, head=head,
            score_tails=score_tails,
        )  # fmt: skip
        names = [[ours.catalog.titles[t] for t in row if t >= 0] for row in titles.tolist()]
        return names, scores.tolist()

    for start in range(0, args.users, args.batch_size):
        batch_prompts = prompts[start : start + args.batch_size]
        lists = {name: run(name, search, batch_prompts, **options)
                 for name, options in variants.items()}  # fmt: skip
        d3_lists, d3_scores = run("d3", d3_generate, model, ours, batch_prompts, args.beams)
        mine, my_scores = lists["cftrec"]
        for name in variants:
            same[name] += sum(a == b for a, b in zip(lists[name][0], d3_lists, strict=True))
        for row, theirs in zip(my_scores, d3_scores, strict=True):
            score_gap = max(score_gap, *(abs(a - b) for a, b in zip(row, theirs, strict=True)))
        for prompt, row in zip(batch_prompts, mine, strict=True):
            wall, cpu, own, response = floor_pass(model, ours, prompt, row)
            totals["floor"]["wall"] += wall
            totals["floor"]["cpu"] += cpu
            tokens["own_prompt"] += own
            tokens["response"] += response
        print(
            f"  {threads} thread(s), users {start + len(batch_prompts)}/{args.users}: cftrec "
            f"{totals['cftrec']['cpu']:.1f} CPU s, D3 {totals['d3']['cpu']:.1f}",
            flush=True,
        )

    users = args.users
    per_user = {
        name: {
            "wall_s_per_user": entry["wall"] / users,
            "cpu_s_per_user": entry["cpu"] / users,
            **({"peak_extra_mb": max(entry["mem"])} if entry["mem"] else {}),
            **{f"{part}_{kind}_s_per_user": value / users
               for part, (wall, cpu) in entry["split"].items()
               for kind, value in (("wall", wall), ("cpu", cpu))},
        }
        for name, entry in totals.items()
    }  # fmt: skip
    ours_t, d3_t, floor_t = (totals[n] for n in ("cftrec", "d3", "floor"))
    return {
        "threads": threads,
        "users": users,
        "batch_size": args.batch_size,
        "beams": args.beams,
        "per_user": per_user,
        "vs_d3_wall": d3_t["wall"] / ours_t["wall"],
        "vs_d3_cpu": d3_t["cpu"] / ours_t["cpu"],
        "vs_floor_wall": ours_t["wall"] / floor_t["wall"],
        "vs_floor_cpu": ours_t["cpu"] / floor_t["cpu"],
        "saving_cpu_vs": {name: totals[name]["cpu"] / ours_t["cpu"] for name in variants},
        "floor_tokens_per_user": {k: v / users for k, v in tokens.items()},
        "identical_top10_lists_vs_d3": same,
        "max_score_difference_vs_d3": score_gap,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--scaling-users",
        type=int,
        default=0,
        help="users per point of the catalogue-size/beams scaling (0: skip)",
    )
    parser.add_argument("--note", default="", help="machine state to record (e.g. idle)")
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
          f"prompt length {sum(map(len, prompts)) / len(prompts):.0f} tokens, "
          f"shared head {len(full.prompt_head)} tokens")  # fmt: skip

    runs = [head_to_head(model, tokenizer, titles, histories, args, n) for n in args.threads]
    for entry in runs:
        print(json.dumps(entry, indent=2))

    # --- scaling of cftrec's beam search: catalogue size and beams
    scaling = []
    users = histories[: args.scaling_users]
    for size in (200, 400, 800, len(titles)) if users else ():
        subset = titles[:size]
        rec = LLMRecommender(model, tokenizer, Catalog(subset, subset), batch_size=args.batch_size)
        _ = rec.trie  # built once per catalogue, not part of the per-user cost
        sampler = random.Random(size)
        hist = [sampler.sample(subset, 10) for _ in users]
        _, t, c, _ = timed(rec.recommend, hist, k=10, num_beams=10)
        scaling.append({"titles": size, "beams": 10, "cpu_s_per_user": c / len(hist)})
        print(scaling[-1])
    for beams in (1, 5, 10, 20) if users else ():
        _, t, c, _ = timed(full.recommend, users, k=10, num_beams=beams)
        scaling.append({"titles": len(titles), "beams": beams, "cpu_s_per_user": c / len(users)})
        print(scaling[-1])

    record = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU" + (f", {args.note}" if args.note else ""),
        "load_average_at_start": os.getloadavg(),
        "model": "SmolLM2-135M-Instruct",
        "titles": len(titles),
        "prompt_tokens_per_user": sum(map(len, prompts)) / len(prompts),
        "shared_head_tokens": len(full.prompt_head),
        "runs": runs,
        **({"scaling": scaling} if scaling else {}),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decoding.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS / 'decoding.json'}")


if __name__ == "__main__":
    main()
