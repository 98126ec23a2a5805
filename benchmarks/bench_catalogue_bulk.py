"""A bulk load of new items with `cftrec catalogue add`, into a run folder and into a running
server (chunks of 1,000 through POST /items), as a user runs it.

    .venv/bin/python benchmarks/bench_catalogue_bulk.py [--items 100000]

Writes a TSV of `--items` synthetic items (bench_catalogue.py's titles), builds the test
suite's tiny LLM run twice and loads the file into each: once with `--run` (one change, all or
nothing), once with `--server` against `cftrec serve --threads 1`. Then checks that every item
is in the catalogue the run folder replays (and, for the server, after a restart). Wall times
include the commands' start (Python, torch and the model). Results:
benchmarks/results/catalogue-bulk.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_catalogue import synthetic_titles  # noqa: E402
from soak import _free_port, build_run, start_server  # noqa: E402


def cftrec(*args: str) -> float:
    """Seconds one `cftrec` command takes (it must succeed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cftrec", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


def replayed_items(run: Path) -> int:
    from cftrec.serving.service import RecommendService

    return len(RecommendService.load(run).catalog)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "catalogue-bulk")
    args = parser.parse_args()
    from cftrec.files import write_json

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        items = work / "new.tsv"
        titles = synthetic_titles(args.items, seed=7)
        items.write_text("".join(f"bulk{i}\t{t}\n" for i, t in enumerate(titles)))
        for target in ("run", "server"):
            (work / target).mkdir()
            run = build_run(work / target)
            before = replayed_items(run)
            if target == "run":
                seconds = cftrec("catalogue", "add", str(items), "--run", str(run),
                                 "--threads", "1")  # fmt: skip
            else:
                port = _free_port()
                server = start_server(run, port, work / "server.log")
                try:
                    seconds = cftrec("catalogue", "add", str(items), "--server",
                                     f"http://127.0.0.1:{port}")  # fmt: skip
                finally:
                    server.send_signal(signal.SIGTERM)  # a clean stop folds the journal
                    server.wait(timeout=300)
            after = replayed_items(run)
            rows[target] = {
                "seconds": round(seconds, 1),
                "items_per_s": round(args.items / seconds),
                "all_present_after_restart": after == before + args.items,
                "catalogue_items": after,
            }
            print(target, rows[target], flush=True)
    summary = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{os.cpu_count()}-core CPU shared with other benchmarks "
        f"({platform.machine()}), no GPU; 1 torch thread; load {os.getloadavg()[0]:.1f}",
        "items": args.items,
        "rows": rows,
    }
    write_json(args.out.with_suffix(".json"), summary)
    run, server = rows["run"], rows["server"]
    text = f"""# Bulk load: {args.items:,} new items with `cftrec catalogue add`

{summary["date"]}, commit {commit}, {summary["machine"]}. The test suite's tiny LLM run
(8 items), SmolLM2 tokenizer; wall time of the whole command, start included.

| target | seconds | items/s | every item present after restart |
|---|---:|---:|---|
| `--run RUN` (one change) | {run["seconds"]} | {run["items_per_s"]:,} | {run["all_present_after_restart"]} |
| `--server URL` (chunks of 1,000) | {server["seconds"]} | {server["items_per_s"]:,} | {server["all_present_after_restart"]} |
"""  # noqa: E501
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
