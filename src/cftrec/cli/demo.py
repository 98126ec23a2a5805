"""`cftrec demo`: the whole path on the embedded default, small."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Threads, app


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("-o", "--out", help="Working folder.")] = Path("demo"),
    train_samples: Annotated[
        int, typer.Option(min=1, help="Train samples for each LLM run (sft, cft).")
    ] = 128,
    eval_cases: Annotated[
        int, typer.Option(min=1, help="Test cases evaluated for every method.")
    ] = 100,
    model: Annotated[str, typer.Option(help="Model to fine-tune.")] = "bundled:smollm2-135m",
    force: Annotated[bool, typer.Option(help="Redo steps whose outputs exist.")] = False,
    threads: Threads = None,
) -> None:
    """The whole path on MovieLens-100k with the bundled model, small enough for a laptop CPU:
    prepare, train pop / SASRec / sft / cft, evaluate, compare, diagnose, recommend."""
    from ..experiment import ExperimentSettings, run_demo

    settings = ExperimentSettings(
        model=model, max_train_samples=train_samples, eval_limit=eval_cases, force=force,
        threads=threads,
    )  # fmt: skip
    run_demo(settings, out)
