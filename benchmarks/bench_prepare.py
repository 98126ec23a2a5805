"""Data-layer benchmark: wall time of `cftrec data prepare` on amazon-video-games, and peak
memory (RSS of a subprocess) preparing a synthetic 1M-review Amazon 2018 file.

    .venv/bin/python benchmarks/bench_prepare.py [--reviews 1000000] [--gz]

Writes benchmarks/results/data.json and prints a summary (paste into data.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cftrec"]


def run_timed(args: list[str]) -> float:
    """Wall seconds of one CLI run in a child process (process start included)."""
    start = time.perf_counter()
    subprocess.run(CLI + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def children_peak_rss_mib() -> float:
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far (KiB on Linux): read it right
    # after the first child, the one being measured.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def synthetic_amazon2018(folder: Path, reviews: int, gz: bool, seed: int = 0) -> Path:
    """Reviews with a skewed item popularity (so a 5-core keeps a real catalogue) + metadata."""
    rng = random.Random(seed)
    users, items = reviews // 8, reviews // 20

    def opener(path: Path):
        return gzip.open(path, "wt", compresslevel=1) if gz else open(path, "w")  # noqa: SIM115

    suffix = ".json.gz" if gz else ".json"
    path = folder / f"Synthetic{suffix}"
    start = 1_400_000_000
    with opener(path) as handle:
        for _ in range(reviews):
            item = int(items * rng.random() ** 2)
            record = {
                "overall": 5.0,
                "verified": True,
                "reviewerID": f"A{rng.randrange(users):09d}",
                "asin": f"B{item:09d}",
                "unixReviewTime": start + rng.randrange(4 * 365 * 86400),
                "reviewText": "good " * rng.randrange(5, 40),
            }
            handle.write(json.dumps(record) + "\n")
    with opener(folder / f"meta_Synthetic{suffix}") as handle:
        for item in range(items + items // 2):  # metadata also lists items nobody reviewed
            handle.write(
                json.dumps(
                    {
                        "asin": f"B{item:09d}",
                        "title": f"Product &amp; {item}",
                        "description": ["x" * 100],
                    }
                )
                + "\n"
            )
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=1_000_000)
    parser.add_argument("--gz", action="store_true")
    args = parser.parse_args()
    results = {"machine": "2-core CPU, shared", "date": dt.date.today().isoformat()}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        reviews = synthetic_amazon2018(tmp, args.reviews, args.gz)
        size = sum(p.stat().st_size for p in tmp.iterdir()) / 2**20
        print(
            f"generated {args.reviews:,} reviews ({size:.0f} MiB) in {time.perf_counter() - start:.0f} s"
        )
        seconds = run_timed(["data", "prepare", "amazon2018", str(reviews), "-o", str(tmp / "ds")])
        peak = children_peak_rss_mib()
        meta = json.loads((tmp / "ds" / "meta.json").read_text())
        results["synthetic_amazon2018"] = {
            "reviews": args.reviews,
            "gzip": args.gz,
            "input_mib": round(size, 1),
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak, 1),
            "users": meta["counts"]["users"],
            "items": meta["counts"]["items"],
            "interactions": meta["counts"]["interactions"],
        }
        print(f"synthetic amazon2018: {seconds:.1f} s, peak RSS {peak:.0f} MiB")
        games = ROOT / ".." / "shared" / "data" / "amazon-video-games"
        if games.exists():
            times = []
            for _ in range(3):
                seconds = run_timed(
                    [
                        "data",
                        "prepare",
                        "sequences",
                        str(games),
                        "-o",
                        str(tmp / "games"),
                        "--split",
                        "given",
                    ]
                )
                times.append(seconds)
            results["amazon_video_games"] = {
                "seconds_min": round(min(times), 2),
                "seconds_all": [round(t, 2) for t in times],
            }
            print(
                f"amazon-video-games: best {min(times):.2f} s of {len(times)} (CLI, process start included)"
            )
    out = ROOT / "benchmarks" / "results" / "data.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
