"""Load test of `cftrec serve` on loopback: concurrent clients against the bundled model.

    .venv/bin/python benchmarks/bench_serving.py [--clients 50] [--duration 30] [--rounds 1]
    .venv/bin/python benchmarks/bench_serving.py --clients 20 --duration 60 \
        --configs micro-batched --out benchmarks/results/serving-llm
    .venv/bin/python benchmarks/bench_serving.py --mode backpressure --clients 50 \
        --duration 120 --queue-timeout 10 --request-timeout 60

Builds an LLM run over MovieLens-100k with `cftrec train` on bundled:smollm2-135m (LoRA,
`--train-steps` steps: barely trained, as the cost of serving does not depend on training),
then, per round, serves it in a fresh `cftrec serve` process per configuration
(`--configs`): micro-batched (`--max-batch`) and one at a time (max batch 1), in alternating
order. `--clients` asyncio clients post
test-split histories to 127.0.0.1 for `--duration` seconds; requests still unanswered when
the window closes are abandoned and counted as unfinished (not as errors). Reports
p50/p95/p99 latency, requests/s, errors, and the batching gain. On a loaded 2-core CPU one
16-history beam batch takes tens of seconds: pass a longer `--duration` so that each window
holds several batches. These servers run without backpressure (queue and time limits beyond
the window), as throughput is what is measured.

`--mode backpressure` serves the micro-batched configuration with the server's backpressure on
(`--max-queue`, `--queue-timeout`, `--request-timeout`): each client sends at most
`--requests-per-client` requests and, answered 503, waits what Retry-After says (within the
window) before its next one. Reports p50/p95/p99 of the served requests, the share of 503s and
how fast they came, 504s, other errors and the queue depth that /health reported meanwhile.
Loopback only; bounded in time and count. Results: benchmarks/results/serving.{md,json}
(backpressure: benchmarks/results/serving-backpressure.json).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cftrec.files import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def build_run(work: Path, train_steps: int) -> tuple[Path, list[list[str]]]:
    """Prepare MovieLens-100k and train an LLM run on the bundled model for a few steps
    (`cftrec train`, as a user would); test histories."""
    from cftrec.assets import movielens_100k_cache
    from cftrec.data.dataset import Dataset

    data, run = work / "ml100k", work / "run"
    for command in (
        ["data", "prepare", "recbole", str(movielens_100k_cache()), "-o", str(data)],
        ["train", "--data", str(data), "--model", "bundled:smollm2-135m", "--method", "sft",
         "--lora", "--max-steps", str(train_steps), "--batch-size", "4",
         "--max-eval-samples", "8", "-o", str(run)],
    ):  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "cftrec", *command], check=True, stdout=subprocess.DEVNULL
        )
    histories = [list(s.history) for s in Dataset.load(data).samples("test")]
    return run, histories


def start_server(
    run: Path, port: int, max_batch: int, beams: int, limits: dict[str, float]
) -> subprocess.Popen:
    """`cftrec serve` with backpressure `limits` (max_queue, queue_timeout, request_timeout)."""
    command = [
        sys.executable, "-m", "cftrec", "serve", "--run", str(run), "--host", "127.0.0.1",
        "--port", str(port), "--max-batch-size", str(max_batch), "--max-wait-ms", "5",
        "--beams", str(beams), "--log-level", "warning",
        "--max-queue", str(limits["max_queue"]), "--queue-timeout", str(limits["queue_timeout"]),
        "--request-timeout", str(limits["request_timeout"]),
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("server did not start in 180 s")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:  # requests cut off at the end of the window are not waited for
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of sorted `values` (0 for none)."""
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def load(url: str, histories, clients: int, duration: float, k: int, seed: int) -> dict:
    rng = random.Random(seed)
    stop_at = time.monotonic() + duration

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors, unfinished
        while (remaining := stop_at - time.monotonic()) > 0:
            body = {"history": rng.choice(histories), "k": k}
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    http.post(f"{url}/recommend", json=body), remaining
                )
                ok = response.status_code == 200 and len(response.json()["recommendations"]) == k
            except TimeoutError:  # still queued or running when the window closed
                unfinished += 1
                return
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.monotonic() - started)
            else:
                errors += 1

    latencies, errors, unfinished = [], 0, 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=duration + 60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    # The event loop stays responsive while inference runs: /health answers at once.
    batching = httpx.get(f"{url}/health", timeout=30).json()["batching"]
    elapsed = duration
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "unfinished_at_end": unfinished,
        "requests_per_s": round(len(latencies) / elapsed, 3),
        "p50_s": round(quantile(latencies, 0.50), 3),
        "p95_s": round(quantile(latencies, 0.95), 3),
        "p99_s": round(quantile(latencies, 0.99), 3),
        "mean_s": round(statistics.fmean(latencies), 3) if latencies else 0.0,
        "recommend_calls": batching["recommend_calls"],
        "mean_batch": round(batching["requests"] / max(1, batching["recommend_calls"]), 2),
    }


async def load_with_backpressure(
    url: str, histories, clients: int, duration: float, k: int, per_client: int
) -> dict:
    """`clients` bounded loops (at most `per_client` requests each, within `duration`) that
    wait Retry-After seconds after a 503; /health's queue depth sampled every 0.5 s."""
    rng = random.Random(0)
    stop_at = time.monotonic() + duration
    served, refused, retry_after, depths = [], [], [], []
    counts = {"504": 0, "errors": 0, "unfinished_at_end": 0}

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            remaining = stop_at - time.monotonic()
            if remaining <= 0:
                return
            body = {"history": rng.choice(histories), "k": k}
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    http.post(f"{url}/recommend", json=body), remaining
                )
            except TimeoutError:  # still queued or decoding when the window closed
                counts["unfinished_at_end"] += 1
                return
            except httpx.HTTPError:
                counts["errors"] += 1
                continue
            took = time.monotonic() - started
            if response.status_code == 200 and len(response.json()["recommendations"]) == k:
                served.append(took)
            elif response.status_code == 503 and "Retry-After" in response.headers:
                refused.append(took)
                retry_after.append(float(response.headers["Retry-After"]))
                await asyncio.sleep(min(retry_after[-1], max(0.0, stop_at - time.monotonic())))
            elif response.status_code == 504:
                counts["504"] += 1
            else:
                counts["errors"] += 1

    async def watch_queue(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            depths.append((await http.get(f"{url}/health")).json()["batching"]["queue_depth"])
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(timeout=duration + 60, limits=limits) as http:
        await asyncio.gather(watch_queue(http), *(client(http) for _ in range(clients)))
    batching = httpx.get(f"{url}/health", timeout=30).json()["batching"]
    served.sort()
    refused.sort()
    answered = len(served) + len(refused) + counts["504"]
    return {
        "served": len(served),
        "refused_503": len(refused),
        "share_503": round(len(refused) / max(1, answered), 3),
        **counts,
        "served_p50_s": round(quantile(served, 0.50), 3),
        "served_p95_s": round(quantile(served, 0.95), 3),
        "served_p99_s": round(quantile(served, 0.99), 3),
        "refused_p50_s": round(quantile(refused, 0.50), 3),
        "refused_p99_s": round(quantile(refused, 0.99), 3),
        "retry_after_median_s": statistics.median(retry_after) if retry_after else None,
        "queue_depth_max": max(depths, default=0),
        "queue_depth_mean": round(statistics.fmean(depths), 1) if depths else 0.0,
        "server": {
            key: batching[key]
            for key in (
                "recommend_calls",
                "requests",
                "rejected_queue_full",
                "expired_in_queue",
                "deadline_exceeded",
            )
        },  # fmt: skip
    }


def run_backpressure(args, run: Path, histories) -> None:
    limits = {"max_queue": args.max_queue, "queue_timeout": args.queue_timeout,
              "request_timeout": args.request_timeout}  # fmt: skip
    load_average = os.getloadavg()[0]
    server = start_server(run, args.port, args.max_batch, args.beams, limits)
    try:
        url = f"http://127.0.0.1:{args.port}"
        httpx.post(f"{url}/recommend", json={"history": histories[0], "k": args.k}, timeout=600)
        result = asyncio.run(
            load_with_backpressure(
                url, histories, args.clients, args.duration, args.k, args.requests_per_client
            )
        )
    finally:
        stop_server(server)
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU, shared ({platform.machine()}), no GPU; "
        f"load average {load_average:.1f} before the server started",
        "model": f"bundled:smollm2-135m (float32, LoRA sft run from `cftrec train`, "
        f"{args.train_steps} steps), MovieLens-100k catalogue",
        "settings": {
            "clients": args.clients,
            "duration_s": args.duration,
            "requests_per_client": args.requests_per_client,
            "beams": args.beams,
            "k": args.k,
            "max_batch": args.max_batch,
            **limits,
        },  # fmt: skip
        **result,
    }
    print(json.dumps(summary, indent=2))
    write_json(args.out.with_name(args.out.name + "-backpressure.json"), summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["throughput", "backpressure"], default="throughput")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per config/round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=16, help="micro-batched config")
    parser.add_argument(
        "--configs", default="micro-batched,one-at-a-time", help="comma-separated: which ones"
    )
    parser.add_argument("--train-steps", type=int, default=4, help="of the served LLM run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving")
    parser.add_argument("--max-queue", type=int, default=64, help="backpressure mode")
    parser.add_argument("--queue-timeout", type=float, default=10.0, help="backpressure mode")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="backpressure mode")
    parser.add_argument("--requests-per-client", type=int, default=20, help="backpressure mode")
    args = parser.parse_args()
    known = {"micro-batched": args.max_batch, "one-at-a-time": 1}
    names = [name.strip() for name in args.configs.split(",")]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        parser.error(f"unknown --configs {unknown}; choose from {', '.join(known)}")
    configs = {name: known[name] for name in names}

    with tempfile.TemporaryDirectory(prefix="cftrec-bench-serving-") as tmp:
        print("building the run (MovieLens-100k, bundled:smollm2-135m) ...", flush=True)
        run, histories = build_run(Path(tmp), args.train_steps)
        if args.mode == "backpressure":
            run_backpressure(args, run, histories)
            return
        # no backpressure: every request waits for its answer, however long the queue
        unbounded = {"max_queue": 100_000, "queue_timeout": 86_400, "request_timeout": 86_400}
        rows = []
        for round_index in range(args.rounds):
            order = list(configs) if round_index % 2 == 0 else list(configs)[::-1]
            for name in order:
                server = start_server(run, args.port, configs[name], args.beams, unbounded)
                try:
                    url = f"http://127.0.0.1:{args.port}"
                    warm = {"history": histories[0], "k": args.k}
                    httpx.post(f"{url}/recommend", json=warm, timeout=600)
                    result = asyncio.run(
                        load(url, histories, args.clients, args.duration, args.k, round_index)
                    )
                finally:
                    stop_server(server)
                result = {"config": name, "max_batch_size": configs[name], "round": round_index,
                          **result}  # fmt: skip
                rows.append(result)
                print(json.dumps(result), flush=True)

    def total(name: str, key: str) -> float:
        picked = [r for r in rows if r["config"] == name]
        return sum(r[key] for r in picked) / len(picked)

    gain = None
    if set(configs) == set(known):
        gain = round(
            total("micro-batched", "requests_per_s")
            / max(1e-9, total("one-at-a-time", "requests_per_s")),
            2,
        )
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU, shared ({platform.machine()}), no GPU; "
        f"load average {os.getloadavg()[0]:.1f} when the load started",
        "model": f"bundled:smollm2-135m (float32, LoRA sft run from `cftrec train`, "
        f"{args.train_steps} steps), MovieLens-100k catalogue",
        "settings": {
            "configs": list(configs),
            "train_steps": args.train_steps,
            "clients": args.clients,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "beams": args.beams,
            "k": args.k,
            "max_batch": args.max_batch,
            "max_wait_ms": 5,
            "decoding": "beam",
        },
        "rows": rows,
        "throughput_gain": gain,
        "errors": sum(r["errors"] for r in rows),
    }
    write_results(summary, args.out)
    print(f"micro-batching gain {gain}x requests/s" if gain else "", f"errors {summary['errors']}")


def write_results(summary: dict, out: Path) -> None:
    from cftrec.files import atomic_write_text

    write_json(out.with_suffix(".json"), summary)
    s = summary["settings"]
    lines = [
        "# Serving load benchmark (`benchmarks/bench_serving.py`)",
        "",
        f"{summary['date']}, {summary['machine']}; {summary['model']}; constrained beam "
        f"search ({s['beams']} beams, k = {s['k']}); {s['clients']} concurrent clients on "
        f"127.0.0.1 for {s['duration_s']:g} s per configuration, {s['rounds']} round(s).",
        "",
        "| config | max batch | done | errors | unfinished | req/s | p50 s | p95 s | p99 s "
        "| mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['config']} | {r['max_batch_size']} | {r['requests']} | {r['errors']} | "
            f"{r['unfinished_at_end']} | "
            f"{r['requests_per_s']:.2f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | "
            f"{r['p99_s']:.2f} | {r['mean_batch']:.1f} |"
        )
    lines.append("")
    if summary["throughput_gain"] is not None:
        lines.append(
            f"Micro-batching gain over one-at-a-time: **{summary['throughput_gain']:.2f}x** "
            "requests/s."
        )
    lines += [
        f"Total errors: {summary['errors']}.",
        "",
        "The clients form a closed loop, so latency is mostly queueing: about clients / "
        "throughput. Unfinished = requests still queued or decoding when the window closed "
        "(abandoned, not errors). Machine shared with other jobs while measuring: absolute "
        "figures are noisy"
        + (
            "; the ratio comes from one run with the configurations back to back."
            if summary["throughput_gain"] is not None
            else "."
        ),
        "",
        "Reproduce: `.venv/bin/python benchmarks/bench_serving.py --clients "
        f"{s['clients']} --duration {s['duration_s']:g} --rounds {s['rounds']} --configs "
        f"{','.join(s['configs'])} --train-steps {s['train_steps']} "
        f"--out {os.path.relpath(out, ROOT)}`.",
        "",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))


if __name__ == "__main__":
    main()
