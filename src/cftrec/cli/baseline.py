"""`cftrec baseline pop|sasrec`: classic baselines as run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Overwrite, Threads, app

baseline_app = typer.Typer(
    help="Classic baselines (popularity, SASRec) as run directories for evaluate/recommend.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(baseline_app, name="baseline")


def _quoted(titles) -> str:
    """Titles for a one-line summary, each quoted (titles contain commas)."""
    import json

    return ", ".join(json.dumps(title, ensure_ascii=False) for title in titles)


def _print_run_summary(info: dict, out: Path, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(info))
    else:
        print(f"wrote {info['kind']} run to {out}")


@baseline_app.command("pop")
def baseline_pop(
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset folder.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder to write.")],
    max_history: Annotated[
        int, typer.Option(min=1, help="History items per evaluation case.")
    ] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run info as JSON.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Most-popular titles by train interactions (ties by title), the same list for everyone."""
    from ..baselines.popularity import train_popularity

    info = train_popularity(data, out, max_history, overwrite)
    if not as_json:
        top = _quoted(info["top_titles"][:3])
        print(
            f"popularity over {info['titles']} titles from {info['train_interactions']} "
            f"train interactions; top: {top}"
        )
    _print_run_summary(info, out, as_json)


@baseline_app.command("sasrec")
def baseline_sasrec(
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset folder.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder to write.")],
    hidden_size: Annotated[int, typer.Option(help="Embedding / hidden size.")] = 64,
    blocks: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 1,
    dropout: Annotated[float, typer.Option(help="Dropout rate.")] = 0.2,
    max_length: Annotated[int, typer.Option(help="Most recent items the model reads.")] = 50,
    loss: Annotated[
        str, typer.Option(help="ce (full softmax) | bce (one sampled negative per position).")
    ] = "ce",
    epochs: Annotated[int, typer.Option(help="Most training epochs.")] = 50,
    batch_size: Annotated[int, typer.Option(help="Training windows per batch.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(help="Adam weight decay.")] = 0.0,
    patience: Annotated[
        int, typer.Option(help="Stop after this many epochs without a better valid NDCG@10.")
    ] = 5,
    max_eval_samples: Annotated[
        int, typer.Option(help="Validation cases per epoch (seeded subset; 0 = all).")
    ] = 5000,
    max_history: Annotated[
        int | None,
        typer.Option(help="History items per evaluation case.", show_default="--max-length"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    device: Annotated[
        str | None, typer.Option(help="cpu | cuda | cuda:N.", show_default="cuda if available")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run info as JSON.")] = False,
    threads: Threads = None,  # taken as by every model command; SASRec uses its own count
    overwrite: Overwrite = False,
) -> None:
    """SASRec (Kang & McAuley 2018) trained on the train split, early stopping on valid NDCG@10.
    It computes on one CPU thread whatever --threads says, so a seed gives the same run whatever
    the number of cores."""
    from ..baselines.sasrec import SASRecConfig, train_sasrec

    config = SASRecConfig(
        hidden_size=hidden_size,
        num_blocks=blocks,
        num_heads=heads,
        dropout=dropout,
        max_length=max_length,
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        patience=patience,
        max_eval_samples=max_eval_samples or None,
        seed=seed,
    )
    info = train_sasrec(data, out, config, device, max_history, log=print, overwrite=overwrite)
    if not as_json:
        valid = info["best_valid"]
        scores = ", ".join(f"{k} {v:.4f}" for k, v in valid.items()) or "no validation cases"
        print(
            f"SASRec: {info['epochs_run']} epochs in {info['train_seconds']:.1f}s, best epoch "
            f"{info['best_epoch']} (valid {scores})"
        )
    _print_run_summary(info, out, as_json)


# ---------------------------------------------------------------- recommend / serve / diagnose / demo
