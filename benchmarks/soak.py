"""Soak test of `cftrec serve` with a live catalogue: a long mixed run, then kill -9 and restart.

    .venv/bin/python benchmarks/soak.py [--minutes 20] [--clients 4] [--out benchmarks/results/soak]

Serves a tiny random-Llama LLM run (the test suite's, built here with the bundled SmolLM2
tokenizer) with `cftrec serve --threads 1` in a subprocess, and runs `--clients` loopback clients
for `--minutes`: each request is a recommendation (beam search, 70%), an add of one new item
(15%) or the removal of an item an earlier add put in (15%). Every few seconds it samples the
server's resident memory and open file descriptors (/proc). Then the server gets SIGKILL
mid-traffic, is started again on the same run folder, and every acknowledged add must be
present and every acknowledged removal absent (a change in flight at the kill may land either
way, so it is not checked). Reports resident memory growth after warm-up (the first
`--warmup` share of the run), file descriptors, request counts and errors.
Results: benchmarks/results/soak.{json,md}. tests/test_soak.py runs a few seconds of it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORDS = [
    "Red",
    "Blue",
    "Quiet",
    "Golden",
    "Wild",
    "Little",
    "Hidden",
    "Garden",
    "River",
    "Engine",
    "Castle",
    "Robot",
]


def build_run(work: Path) -> Path:
    """The test suite's tiny LLM run (random weights: serving cost, not quality)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from cftrec.modeling import load_tokenizer
    from serving_fixtures import make_dataset, make_llm_run

    tokenizer = load_tokenizer("bundled:smollm2-135m")
    return make_llm_run(work, make_dataset(work), tokenizer)


def start_server(run: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "cftrec", "serve", "--run", str(run), "--port", str(port),
               "--threads", "1", "--log-level", "warning", "--beams", "4"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server did not start; see {log}")


def sample(pid: int) -> tuple[float, int]:
    """(resident MiB, open file descriptors) of process `pid`."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Ledger:
    """What the server acknowledged, shared by the clients."""

    def __init__(self, item_ids: list[str]):
        self.lock = threading.Lock()
        self.base = list(item_ids)
        self.present: set[str] = set()  # acknowledged adds not removed since
        self.removed: set[str] = set()  # acknowledged removals
        self.in_flight: set[str] = set()  # sent, not acknowledged (unknown at a kill)
        self.counts = {"recommend": 0, "add": 0, "remove": 0, "errors": 0}
        self.next_id = 0

    def new_id(self) -> str:
        with self.lock:
            self.next_id += 1
            return f"soak{self.next_id}"


def client(url: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=120) as http:
        while not stop.is_set():
            roll = rng.random()
            try:
                if roll < 0.70:
                    with ledger.lock:
                        pool = ledger.base + sorted(ledger.present)[-50:]
                    history = [rng.choice(pool)]
                    response = http.post(f"{url}/recommend", json={"history": history, "k": 4})
                    ok = response.status_code in (200, 422)  # 422: removed meanwhile
                    kind = "recommend"
                elif roll < 0.85 or not ledger.present:
                    item_id = ledger.new_id()
                    title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {item_id} ({rng.randrange(1950, 2026)})"  # fmt: skip
                    with ledger.lock:
                        ledger.in_flight.add(item_id)
                    body = {"items": [{"item_id": item_id, "title": title}]}
                    response = http.post(f"{url}/items", json=body)
                    ok = response.status_code == 200
                    with ledger.lock:
                        ledger.in_flight.discard(item_id)
                        if ok:
                            ledger.present.add(item_id)
                    kind = "add"
                else:
                    with ledger.lock:
                        item_id = rng.choice(sorted(ledger.present)) if ledger.present else None
                        if item_id is None:
                            continue
                        ledger.present.discard(item_id)
                        ledger.in_flight.add(item_id)
                    response = http.delete(f"{url}/items/{item_id}")
                    ok = response.status_code == 200
                    with ledger.lock:
                        ledger.in_flight.discard(item_id)
                        (ledger.removed.add if ok else ledger.present.add)(item_id)
                    kind = "remove"
            except httpx.HTTPError:
                if stop.is_set():
                    return  # the kill: whatever was in flight stays in `in_flight`
                ok, kind = False, "errors"
            with ledger.lock:
                ledger.counts[kind if ok else "errors"] += 1


def soak(run: Path, seconds: float, clients: int, warmup: float, work: Path) -> dict:
    """The whole soak against `run`; returns the summary (no files written)."""
    from cftrec.serving.service import RecommendService

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "server.log"
    server = start_server(run, port, log)
    ledger = Ledger(RecommendService.load(run).catalog.item_ids)
    stop = threading.Event()
    threads = [
        threading.Thread(target=client, args=(url, ledger, stop, seed), daemon=True)
        for seed in range(clients)
    ]
    for thread in threads:
        thread.start()
    samples, loads = [], []
    started = time.monotonic()
    every = max(0.5, min(10.0, seconds / 60))
    while (elapsed := time.monotonic() - started) < seconds:
        rss, fds = sample(server.pid)
        samples.append({"t_s": round(elapsed, 1), "rss_mib": round(rss, 1), "fds": fds})
        loads.append(os.getloadavg()[0])
        time.sleep(every)
    os.kill(server.pid, signal.SIGKILL)  # mid-traffic
    stop.set()
    server.wait()
    for thread in threads:
        thread.join(timeout=150)
    with ledger.lock:
        present, removed = set(ledger.present), set(ledger.removed)
        unknown = set(ledger.in_flight)
    restarted = start_server(run, port, log)
    try:
        health = httpx.get(f"{url}/health", timeout=30).json()["catalogue"]
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=120)
    catalog = RecommendService.load(run).catalog
    lost = sorted(present - unknown - set(catalog.item_ids))
    revived = sorted((removed - unknown) & set(catalog.item_ids))
    after = [s for s in samples if s["t_s"] >= warmup * seconds] or samples
    first, last = after[: max(1, len(after) // 10)], after[-max(1, len(after) // 10) :]
    rss_start = statistics.median(s["rss_mib"] for s in first)
    rss_end = statistics.median(s["rss_mib"] for s in last)
    return {
        "seconds": seconds,
        "clients": clients,
        "requests": dict(ledger.counts),
        "acknowledged_present": len(present),
        "acknowledged_removed": len(removed),
        "in_flight_at_kill": len(unknown),
        "lost_adds": lost,
        "revived_removals": revived,
        "consistent": not lost and not revived,
        "restarted_items": health["items"],
        "items_on_disk": len(catalog),
        "rss_mib_after_warmup": rss_start,
        "rss_mib_end": rss_end,
        "rss_growth": round(rss_end / rss_start - 1, 4),
        "fds_after_warmup": first[0]["fds"],
        "fds_end": last[-1]["fds"],
        "fds_max": max(s["fds"] for s in after),
        "load_avg_mean": round(statistics.mean(loads), 2),
        "samples": samples,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the run")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak")
    args = parser.parse_args()
    from cftrec.files import write_json

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()  # the code served
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        summary = soak(build_run(work), args.minutes * 60, args.clients, args.warmup, work)
    summary = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": f"{os.cpu_count()}-core CPU shared with other benchmarks "
        f"({platform.machine()}), no GPU; server on 1 torch thread",
        "model": "tiny random Llama (2 layers, hidden 64), SmolLM2 tokenizer; beam search, 4 beams",
        **summary,
    }
    write_json(args.out.with_suffix(".json"), summary)
    counts = summary["requests"]
    text = f"""# Soak: mixed traffic on the live catalogue, then kill -9 and restart

{summary["date"]}, commit {commit}, {summary["machine"]}, mean load {summary["load_avg_mean"]}.
{summary["model"]}. {args.clients} loopback clients for {args.minutes:g} min: 70% recommend,
15% add one item, 15% remove an added one.

| measure | value |
|---|---|
| requests (recommend / add / remove / errors) | {counts["recommend"]} / {counts["add"]} / {counts["remove"]} / {counts["errors"]} |
| resident memory after warm-up -> end (MiB) | {summary["rss_mib_after_warmup"]:.1f} -> {summary["rss_mib_end"]:.1f} ({summary["rss_growth"]:+.1%}) |
| open file descriptors after warm-up -> end (max) | {summary["fds_after_warmup"]} -> {summary["fds_end"]} ({summary["fds_max"]}) |
| acknowledged adds present after kill -9 + restart | {summary["acknowledged_present"] - len(summary["lost_adds"])} of {summary["acknowledged_present"]} |
| acknowledged removals absent after restart | {summary["acknowledged_removed"] - len(summary["revived_removals"])} of {summary["acknowledged_removed"]} |
| changes in flight at the kill (not checked) | {summary["in_flight_at_kill"]} |
"""  # noqa: E501
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
