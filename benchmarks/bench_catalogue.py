"""Time per catalogue change of a live LLM recommender: the full rebuild (before) against the
change in place (after), at two catalogue sizes, in one run on one thread.

    .venv/bin/python benchmarks/bench_catalogue.py [--sizes 12000 1000000] [--repeats 5]

Synthetic distinct titles ("Adjective Noun Thing 123 (1987)") tokenised with the bundled
SmolLM2 tokenizer; the model is a tiny random Llama, since adding an item needs only the
tokenizer, the trie and the catalogue (grounding's title embeddings are not in use, as in beam
or exact serving). Per size and batch (1 and 1,000 new items):

  before  `set_catalog(with_items(catalog, items))`: a new Catalog and a trie built afresh, as
          every POST /items did before the catalogue changed in place (the old service also
          rewrote the whole overlay file; not counted here)
  after   `add_items(items)` (catalogue, responses and trie changed in place) and, apart, the
          journal append the service adds (one fsync'd line)

Each add is followed by removing the same items (not timed) so every repetition starts from the
same catalogue. The before path at 1M titles takes long: `--before-repeats` bounds it.
Results: benchmarks/results/catalogue.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ADJECTIVES = [
    "Red",
    "Blue",
    "Quiet",
    "Golden",
    "Wild",
    "Little",
    "Hidden",
    "Bright",
    "Broken",
    "Silver",
    "Iron",
    "Paper",
]
NOUNS = [
    "Garden",
    "River",
    "Engine",
    "Castle",
    "Forest",
    "Puzzle",
    "Robot",
    "Dragon",
    "Lantern",
    "Harbor",
    "Rocket",
]
THINGS = [
    "Set",
    "Kit",
    "Box",
    "Game",
    "Book",
    "Doll",
    "Train",
    "Blocks",
    "Figure",
    "Car",
    "Plane",
    "Ship",
    "Tower",
    "Deck",
]


def synthetic_titles(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    titles: dict[str, None] = {}
    while len(titles) < count:
        title = (
            f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(THINGS)} "
            f"{rng.randrange(10_000)} ({rng.randrange(1950, 2026)})"
        )
        titles[title] = None
    return list(titles)


def build(size: int, tokenizer, model):
    from cftrec.data.dataset import Catalog
    from cftrec.decoding.recommender import LLMRecommender

    titles = synthetic_titles(size, seed=0)
    rec = LLMRecommender(model, tokenizer, Catalog([f"i{i}" for i in range(size)], titles))
    started = time.perf_counter()
    rec.responses  # noqa: B018 (tokenised here, once)
    assert rec.responses[:50] == [rec.encoder.response_ids(t) for t in titles[:50]]
    tokenised = time.perf_counter() - started
    started = time.perf_counter()
    rec.trie  # noqa: B018 (built here, once)
    return rec, tokenised, time.perf_counter() - started


def new_items(count: int, round_: int) -> list[tuple[str, str]]:
    titles = synthetic_titles(count, seed=1000 + round_)
    return [(f"new{round_}-{i}", f"{t} Edition") for i, t in enumerate(titles)]


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure(rec, batch: int, repeats: int, before_repeats: int, journal: Path) -> dict:
    from cftrec.data.catalog_changes import new_items as clean
    from cftrec.data.catalog_changes import with_items
    from cftrec.serving.journal import CatalogueStore

    journal.mkdir()
    store = CatalogueStore(journal)
    store.read()
    after, appends, before = [], [], []
    for round_ in range(repeats):
        items = clean(new_items(batch, round_))
        after.append(timed(lambda items=items: rec.add_items(items)))
        appends.append(timed(lambda items=items: store.append({"add": [list(p) for p in items]})))
        rec.remove_items([i for i, _ in items])
    for round_ in range(before_repeats):
        items = clean(new_items(batch, round_))
        original = rec.catalog
        before.append(timed(lambda o=original, i=items: rec.set_catalog(with_items(o, i))))
        rec.set_catalog(original)  # the same catalogue object as before, rebuilt (not timed)
    store.release()
    return {
        "batch": batch,
        "before_s": statistics.median(before) if before else None,
        "before_repeats": len(before),
        "after_s": statistics.median(after),
        "after_repeats": len(after),
        "journal_append_s": statistics.median(appends),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before-repeats", type=int, nargs="+", default=[5, 1],
                        help="repetitions of the full rebuild per size (it is slow at 1M)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "catalogue")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "tests"))
    from cftrec.files import write_json
    from cftrec.modeling import load_tokenizer
    from conftest import make_tiny_llama

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()  # the code measured
    tokenizer = load_tokenizer("bundled:smollm2-135m")
    model = make_tiny_llama(tokenizer)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for size, before_repeats in zip(args.sizes, args.before_repeats, strict=False):
            rec, tokenised, built = build(size, tokenizer, model)
            print(f"{size} titles: tokenised in {tokenised:.1f} s, trie in {built:.1f} s")
            for batch in (1, 1000):
                folder = Path(work) / f"{size}-{batch}"
                row = measure(rec, batch, args.repeats, before_repeats, folder)
                row.update(titles=size, trie_nodes=rec.trie.num_nodes)
                rows.append(row)
                print(row, flush=True)
            del rec
    summary = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{os.cpu_count()}-core CPU, shared with other benchmarks "
        f"({platform.machine()}), no GPU; 1 torch thread; load {os.getloadavg()[0]:.1f}",
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "measured": "LLMRecommender catalogue change: Catalog + responses + trie (tokenizer "
        "included; no title embeddings); journal append apart",
        "rows": rows,
    }
    write_json(args.out.with_suffix(".json"), summary)
    lines = [
        "# Catalogue changes: full rebuild (before) vs in place (after)",
        "",
        f"{summary['date']}, commit {commit}, {summary['machine']}. {summary['measured']}. "
        "Medians; seconds per change.",
        "",
        "| titles | items per add | before (rebuild) | after (in place) | + journal append "
        "| speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        before = row["before_s"]
        speedup = f"{before / row['after_s']:,.0f}x" if before else "n/a"
        before_text = f"{before:.3f} (n={row['before_repeats']})" if before else "not run"
        lines.append(
            f"| {row['titles']:,} | {row['batch']:,} | {before_text} | "
            f"{row['after_s']:.4f} (n={row['after_repeats']}) | {row['journal_append_s']:.4f} "
            f"| {speedup} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
