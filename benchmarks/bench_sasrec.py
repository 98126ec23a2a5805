"""SASRec on real data: accuracy on Amazon Toys (leave-one-out, full ranking) and training time on
Amazon Video Games (given split), on this machine's CPU.

    .venv/bin/python benchmarks/bench_sasrec.py [--only toys|games] [--epochs 30] [--threads 1]

Datasets come from ../shared/data (skipped when absent) and are prepared with the real
`cftrec data prepare` command into a scratch folder. Test metrics are full ranking over all
titles (the cftrec evaluation, best item per title) and, for comparison with the literature,
over all items. Results: benchmarks/results/baselines.json (the .md is written by hand from it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cftrec.baselines.sasrec import (
    SASRecConfig,
    evaluate_titles,
    fit_sasrec,
    length_batches,
    title_ranks,
)
from cftrec.data.dataset import Dataset
from cftrec.evaluation.metrics import mean_metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "baselines.json"

DATASETS = {
    "toys": ("amazon-toys", "loo"),
    "games": ("amazon-video-games", "given"),
}


def prepare(name: str, scratch: Path) -> Path | None:
    folder, split = DATASETS[name]
    source = SHARED / folder
    if not source.exists():
        print(f"skip {name}: {source} not available")
        return None
    out = scratch / name
    command = [sys.executable, "-m", "cftrec", "data", "prepare", "sequences", str(source)]
    subprocess.run([*command, "-o", str(out), "--split", split], check=True)
    return out


def item_level(recommender, samples, exclude_history=False, ks=(5, 10, 20)) -> dict[str, float]:
    """Full ranking over all items (the classic SASRec protocol), ties: lower item index first.
    `exclude_history` drops the history's items from the ranking, as the S3-Rec/RecBole-style
    evaluation code behind most published numbers does (cftrec does not)."""
    index_of = recommender.index_of_item
    histories = [s.history for s in samples]
    ranks = []
    for rows in length_batches(histories, 1024):
        scores = recommender.item_log_probs([histories[r] for r in rows])  # [b, items]
        targets = torch.tensor([index_of[samples[r].target] - 1 for r in rows])
        if exclude_history:
            for row, r in enumerate(rows):
                seen = [index_of[i] - 1 for i in histories[r] if i != samples[r].target]
                scores[row, seen] = -torch.inf
        ranks += title_ranks(scores, targets).tolist()
    result = {}
    for k in ks:
        result.update(mean_metrics(ranks, (k,)))
    return result


def title_level(recommender, samples, ks=(5, 10, 20)) -> dict[str, float]:
    result = {}
    for k in ks:
        result.update(evaluate_titles(recommender, samples, k))
    return result


def run(name: str, data: Path, config: SASRecConfig, histories: tuple[int, ...]) -> dict:
    dataset = Dataset.load(data)
    print(f"\n== {name}: SASRec {config}")
    result = fit_sasrec(dataset, config, device="cpu", log=print)
    summary = {
        "dataset": DATASETS[name][0],
        "split": DATASETS[name][1],
        "items": len(dataset.catalog),
        "titles": len(dataset.catalog.titles),
        "users": len(dataset.user_sequences),
        "config": vars(config),
        "epochs_run": len(result.metrics),
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        "seconds_per_epoch": round(result.seconds / len(result.metrics), 1),
        "best_valid": result.best_valid,
        "metrics": result.metrics,
        "test": {},
    }
    for max_history in histories:
        result.recommender.max_history = max_history
        test = dataset.samples("test", max_history)
        started = time.perf_counter()
        summary["test"][f"history_{max_history}"] = {
            "cases": len(test),
            "title_level": title_level(result.recommender, test),
            "item_level": item_level(result.recommender, test),
            "item_level_history_excluded": item_level(result.recommender, test, True),
            "eval_seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(summary["test"][f"history_{max_history}"]))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DATASETS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared CPU")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to update")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = dict(hidden_size=64, num_blocks=2, num_heads=1, max_length=50)
    config |= dict(
        batch_size=args.batch_size, epochs=args.epochs, patience=args.patience, dropout=args.dropout
    )
    config |= dict(learning_rate=args.lr, max_eval_samples=5000, seed=42)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["machine"] = f"2-core CPU, shared ({platform.processor() or platform.machine()})"
    report["torch_threads"] = args.threads
    with tempfile.TemporaryDirectory(prefix="cftrec-bench-sasrec-") as scratch:
        for name in [args.only] if args.only else sorted(DATASETS, reverse=True):
            data = prepare(name, Path(scratch))
            if data is None:
                continue
            histories = (50, 10) if name == "toys" else (50,)
            report[name] = run(name, data, SASRecConfig(**config), histories)
            report[name]["date"] = datetime.date.today().isoformat()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
