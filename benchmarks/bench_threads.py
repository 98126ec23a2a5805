"""CPU threads and evaluation speed: users/s of `cftrec evaluate` with 1, 2 and the default
number of torch threads (`cftrec.threads.default_threads`), on the machine as it is and with one
busy-loop process per usable core ("loaded").

The run is an untrained LoRA adapter over the bundled SmolLM2-135M (decoding costs the same as
for a trained one) on MovieLens-100k; every configuration evaluates the same first test users
with constrained beam search, through the real command line (`--threads N`, or none for the
default), and results.json reports the decoding time (cases_per_s) and the threads used.

    .venv/bin/python benchmarks/bench_threads.py [--users 4] [--beams 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BUSY_LOOP = "while True: pass"


def make_run(work: Path) -> tuple[Path, Path]:
    """MovieLens-100k prepared, and an LLM run: an untrained LoRA adapter over the bundled model."""
    from cftrec.assets import movielens_100k_cache
    from cftrec.data.dataset import Dataset
    from cftrec.data.prepare import prepare
    from cftrec.modeling import LoraSettings, load_model, load_tokenizer
    from cftrec.prompts import PromptEncoder
    from cftrec.runs.llm import save_llm_run

    data = work / "data"
    prepare("recbole", movielens_100k_cache(), data)
    tokenizer = load_tokenizer("bundled:smollm2-135m")
    lora = LoraSettings()
    info = {
        "method": "sft",
        "prompt": PromptEncoder(tokenizer).config(),
        "max_history": 10,
        "dtype": "float32",
        "lora": asdict(lora),
        "base_model": "bundled:smollm2-135m",
    }
    run = save_llm_run(
        work / "run",
        model=load_model("bundled:smollm2-135m", lora=lora),
        tokenizer=tokenizer,
        info=info,
        dataset=Dataset.load(data),
        config={},
        metrics=[],
    )
    return data, run


def evaluate(run: Path, data: Path, out: Path, users: int, beams: int, threads: int | None):
    """One `cftrec evaluate` through the command line -> (results.json, wall seconds)."""
    command = [
        sys.executable, "-m", "cftrec", "evaluate", "--run", str(run), "--data", str(data),
        "--limit", str(users), "--batch-size", str(users), "--beams", str(beams), "-o", str(out),
    ]  # fmt: skip
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    subprocess.run(command, env={**env, "TQDM_DISABLE": "1"}, check=True, capture_output=True)
    wall = time.perf_counter() - start
    return json.loads((out / "results.json").read_text()), wall


def main() -> None:
    from cftrec.threads import busy_cores, usable_cores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument(
        "--report", action="store_true", help="only rewrite threads.md from threads.json"
    )
    args = parser.parse_args()
    if args.report:
        report = json.loads((RESULTS / "threads.json").read_text())
        (RESULTS / "threads.md").write_text(markdown(report))
        return
    cores = usable_cores()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data, run = make_run(work)
        for condition in ("as is", "loaded"):
            loops = []
            if condition == "loaded":
                loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in cores]
                time.sleep(1.0)
            try:
                for threads in (1, 2, None):
                    busy = busy_cores(cores, seconds=0.5)  # just before, without our process
                    out = work / f"out-{condition}-{threads}"
                    results, wall = evaluate(run, data, out, args.users, args.beams, threads)
                    rows.append(
                        {
                            "condition": condition,
                            "threads_option": threads if threads is not None else "default",
                            "threads_used": results["threads"],
                            "busy_cores_before": round(busy, 2),
                            "load_average_1min": round(os.getloadavg()[0], 2),
                            "users": results["num_cases"],
                            "users_per_s": results["cases_per_s"],
                            "decode_s": results["elapsed_s"],
                            "wall_s_with_startup": round(wall, 1),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                for loop in loops:
                    loop.kill()
                    loop.wait()
    report = {
        "date": date.today().isoformat(),
        "cores": len(cores),
        "model": "bundled:smollm2-135m (untrained LoRA adapter), float32",
        "data": "MovieLens-100k, first test users",
        "beams": args.beams,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "threads.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "threads.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    """threads.md: the settings, the table, and each configuration's speed relative to one
    thread under the same condition."""
    lines = [
        "# CPU threads and evaluation speed",
        "",
        f"`benchmarks/bench_threads.py`, {report['date']}, {report['cores']} usable cores; "
        f"`cftrec evaluate` of {report['model']} on {report['data']}, {report['beams']} beams. "
        '"as is": the machine with whatever else ran on it (busy cores: the CPU use of other '
        'processes measured just before each run); "loaded": plus one busy-loop process per '
        "core. Raw numbers: `threads.json`.",
        "",
        "| machine | --threads | threads used | busy cores before | users/s | decode s | vs 1 thread |",
        "|---|---|---|---|---|---|---|",
    ]
    one_thread = {
        row["condition"]: row["users_per_s"] for row in report["rows"] if row["threads_option"] == 1
    }
    for row in report["rows"]:
        ratio = row["users_per_s"] / one_thread[row["condition"]]
        lines.append(
            f"| {row['condition']} | {row['threads_option']} | {row['threads_used']} | "
            f"{row['busy_cores_before']} | {row['users_per_s']:.3f} | {row['decode_s']:.1f} | "
            f"{ratio:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
