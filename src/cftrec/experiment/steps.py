"""The steps of an experiment: each a real `cftrec` command in a subprocess, printed first, and
skipped when its output already exists."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..errors import CftrecError
from ..files import read_json
from .settings import ExperimentSettings


def _cftrec() -> list[str]:
    return [sys.executable, "-m", "cftrec"]


def _model_flags(settings: ExperimentSettings) -> list[str]:
    """What every step that runs a model is given besides its own options."""
    return ["--threads", str(settings.threads)] if settings.threads else []


def run_step(
    title: str,
    args: list[str],
    output: Path | None = None,
    force: bool = False,
    launcher: tuple[str, ...] = (),
) -> float | None:
    """Print and run one `cftrec` command and return its wall seconds; skip it (None) when
    `output` (the file that marks the step complete: a run's run.json, an evaluation's
    results.json) already exists."""
    shown = "cftrec " + " ".join(shlex.quote(a) for a in args)
    print(f"\n==> {title}\n$ {shown}", flush=True)
    if output is not None and output.exists() and not force:
        print(f"    (already done: {output} exists; skipping)", flush=True)
        return None
    start = time.perf_counter()
    command = [*launcher, "-m", "cftrec", *args] if launcher else [*_cftrec(), *args]
    result = subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise CftrecError(f"step '{title}' failed (exit {result.returncode}): {shown}")
    elapsed = time.perf_counter() - start
    print(f"    done in {elapsed:.0f} s", flush=True)
    return elapsed


def evaluate_step(
    settings: ExperimentSettings,
    data: Path,
    run: Path,
    out: Path,
    title: str,
    decoding_args: list[str],
    split: str = "test",
) -> float | None:
    """`cftrec evaluate` of `run` on `split` into `out`. On the test split the experiment's user
    sample, case limit and protocol apply. An evaluation interrupted in an earlier session
    continues."""
    options = []
    # The validation cases of a guidance choice are chosen by the caller, and ranked under the
    # history-kept protocol: the scale is part of the model, shared by both protocols' rows.
    if split == "test":
        if settings.eval_sample:
            options += ["--sample", str(settings.eval_sample),
                        "--sample-seed", str(settings.eval_sample_seed)]  # fmt: skip
        if settings.eval_limit:
            options += ["--limit", str(settings.eval_limit)]
    if settings.exclude_history and split == "test":
        options.append("--exclude-history")
    args = ["evaluate", "--run", str(run), "--data", str(data), "--split", split,
            *decoding_args, *options, "--batch-size", str(settings.eval_batch_size),
            *_model_flags(settings), "--resume", "-o", str(out)]  # fmt: skip
    return run_step(title, args, out / "results.json", settings.force, settings.launcher)


def compare_step(results: Path, reference: str, name: str, force: bool) -> dict:
    """`cftrec compare` of two rows' results; -> the comparison."""
    target = results / f"compare-{reference}-vs-{name}.json"
    again = force or outdated(target, [results / reference, results / name])
    run_step(
        f"Paired significance: {name} vs {reference}",
        ["compare", str(results / reference), str(results / name), "-o", str(target)]
        + (["--overwrite"] if again else []),  # the file this experiment wrote before
        target,
        again,
    )
    return read_json(target)


def outdated(comparison: Path, rows: list[Path]) -> bool:
    """Whether a comparison this experiment wrote is older than one of its rows' results (a row
    evaluated again since): it is then compared again, never read as it stands."""
    if not comparison.exists():
        return False
    written = comparison.stat().st_mtime
    results = [row / "results.json" for row in rows]
    return any(path.exists() and path.stat().st_mtime > written for path in results)
