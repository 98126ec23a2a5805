"""The `cftrec` command line. Thin: parse, call the library, print.

Each command group lives in its own section below; bad input raises CftrecError, which `main`
turns into one line on stderr and exit status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .decoding import DEFAULT_BEAMS, GROUNDING_BEAMS, default_beams
from .errors import CftrecError

# Plain click help (rich_markup_mode=None): it wraps option names and help text to the
# terminal's width, where rich's panels cut long option names short at 80 columns.
app = typer.Typer(
    help="Counterfactual fine-tuning (CFT) for LLM-based sequential recommendation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Fetch, prepare, inspect and export datasets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(data_app, name="data")

_state = {"debug": False}

# Options shared by several commands.
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an output folder written by another cftrec command (a folder cftrec "
        "did not write is never replaced; the same command's previous output always is).",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="CPU threads for torch. [default: $OMP_NUM_THREADS, else the cores other work "
        "leaves free]",
        show_default=False,
    ),
]
_BEAMS_HELP = (
    f"LLM runs: number of beams. [default: {DEFAULT_BEAMS}, where search error was rare on "
    f"MovieLens-100k; grounding: {GROUNDING_BEAMS}]"
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


# ---------------------------------------------------------------- data


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset to fetch: movielens-100k.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the files.")],
    overwrite: Overwrite = False,
) -> None:
    """Place an embedded dataset's raw files (MovieLens-100k from the recbole wheel, offline)."""
    from .assets import fetch_movielens_100k

    if name != "movielens-100k":
        raise CftrecError(f"unknown dataset '{name}'; available: movielens-100k")
    for path in fetch_movielens_100k(out, overwrite):
        print(path)
    print(f"next: cftrec data prepare recbole {out} -o DIR")


@data_app.command("prepare")
def data_prepare(
    source: Annotated[
        str, typer.Argument(help="amazon2018 | amazon2023 | movielens | recbole | sequences | d3")
    ],
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Input file or folder.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Dataset folder to write.")],
    split: Annotated[
        str | None,
        typer.Option(
            help="loo | temporal | given (default: given if the input has a split, "
            "temporal for amazon, else loo)"
        ),
    ] = None,
    max_history: Annotated[int, typer.Option(min=1, help="History items per sample.")] = 10,
    kcore: Annotated[
        int | None, typer.Option(help="Iterative k-core (default: 5 for amazon, else off).")
    ] = None,
    window: Annotated[
        bool,
        typer.Option(
            "--window/--no-window",
            help="--no-window: no time window at all (amazon's default is D3's window).",
        ),
    ] = True,
    start: Annotated[
        str | None,
        typer.Option(help="Time window's first day, YYYY-MM-DD (amazon: 2017-10-01)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="Time window's last day, inclusive (amazon: 2018-11-01)."),
    ] = None,
    min_items: Annotated[
        int | None,
        typer.Option(
            help="Move --start back a year at a time until this many items "
            "(amazon: 10000; 0 = never)."
        ),
    ] = None,
    clean_titles: Annotated[
        bool | None,
        typer.Option(
            "--clean-titles/--no-clean-titles",
            help="Unescape HTML, drop items without a usable title and their interactions "
            "(default: on, except d3, whose given split is kept row for row).",
        ),
    ] = None,
    max_title_words: Annotated[
        int | None, typer.Option(help="Drop longer titles (default: 20 for amazon, else off).")
    ] = None,
    min_rating: Annotated[
        float | None, typer.Option(help="movielens/recbole: keep ratings >= this.")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="sequences: the items.tsv file.")] = None,
    meta: Annotated[Path | None, typer.Option(help="amazon: the metadata file.")] = None,
    name: Annotated[
        str | None, typer.Option(help="d3/recbole: which dataset of the folder.")
    ] = None,
    title_field: Annotated[str | None, typer.Option(help="recbole: the title field.")] = None,
    cold_items: Annotated[
        float | None,
        typer.Option(
            help="Hold this fraction of the titles out of training (cold-start evaluation)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed choosing the --cold-items.")] = 42,
    json_out: Annotated[bool, typer.Option("--json", help="Print meta.json content.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Turn a raw interaction log into a canonical dataset (atomic: all or nothing)."""
    import json

    from .data.prepare import PrepareOptions, prepare, summary

    options = PrepareOptions(
        split=split,
        max_history=max_history,
        kcore=kcore,
        window=window,
        start=start,
        end=end,
        min_items=min_items,
        clean_titles=clean_titles,
        max_title_words=max_title_words,
        min_rating=min_rating,
        cold_items=cold_items,
        seed=seed,
        items=str(items) if items else None,
        meta=str(meta) if meta else None,
        name=name,
        title_field=title_field,
    )
    result = prepare(source, input_path, out, options, overwrite)
    if json_out:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(f"wrote {out}: {summary(result)}")


@data_app.command("stats")
def data_stats(
    path: Annotated[Path, typer.Argument(help="A prepared dataset folder.")],
    max_history: Annotated[
        int | None, typer.Option(help="History length for the average (default: the dataset's).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Users, items, interactions, samples per split, titles, drops."""
    import json

    from rich.console import Console

    from .data.dataset import Dataset
    from .data.stats import dataset_stats, stats_table

    stats = dataset_stats(Dataset.load(path), max_history)
    if json_out:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        Console().print(stats_table(stats))


@data_app.command("export")
def data_export(
    path: Annotated[Path, typer.Argument(help="A prepared dataset folder.")],
    fmt: Annotated[str, typer.Option("--format", help="recbole | d3")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to write.")],
    name: Annotated[str | None, typer.Option(help="File name stem (default: folder name).")] = None,
    max_history: Annotated[int, typer.Option(min=1, help="d3: history items per row.")] = 10,
    overwrite: Overwrite = False,
) -> None:
    """Write a prepared dataset as RecBole atomic files or D3/BIGRec CSV files."""
    from .data.dataset import Dataset
    from .data.export import export

    for file in export(Dataset.load(path), fmt, out, name, max_history, overwrite):
        print(file)


# ---------------------------------------------------------------- train


@app.command("train")
def train_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory to write.")],
    data: Annotated[Path | None, typer.Option(help="Prepared dataset directory.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Hub id, local path or bundled:smollm2-135m.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="sft (BIGRec) or cft. [default: cft]")] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Counterfactual loss weight. [default: 0.1]")
    ] = None,
    beta: Annotated[
        float | None, typer.Option(help="Weight of the last response token. [default: 0.25]")
    ] = None,
    weighting: Annotated[
        str | None,
        typer.Option(help="Token weights: linear|none. [default: linear for cft, none for sft]"),
    ] = None,
    weight_rec_loss: Annotated[
        bool | None,
        typer.Option(help="Apply the token weights to the recommendation loss. [default: yes]"),
    ] = None,
    counterfactual_style: Annotated[
        str | None, typer.Option(help="remove|placeholder. [default: remove]")
    ] = None,
    counterfactual_pass: Annotated[
        str | None, typer.Option(help="auto|shared_prefix|separate|padded. [default: auto]")
    ] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template: alpaca|chat.")] = None,
    max_history: Annotated[
        int | None, typer.Option(help="History items per prompt. [default: 10]")
    ] = None,
    max_prompt_tokens: Annotated[
        int | None, typer.Option(help="Drop oldest history items above this many prompt tokens.")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="float32|bfloat16. [default: float32]")] = None,
    lora: Annotated[
        bool | None,
        typer.Option("--lora/--full", help="LoRA (peft) or full fine-tuning. [default: full]"),
    ] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank. [default: 16]")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha. [default: 32]")] = None,
    lora_dropout: Annotated[
        float | None, typer.Option(help="LoRA dropout. [default: 0.05]")
    ] = None,
    lora_target_modules: Annotated[
        str | None,
        typer.Option(help="Comma-separated module names or all-linear. [default: q,k,v,o_proj]"),
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs. [default: 1]")] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many steps (overrides epochs).")
    ] = None,
    max_train_samples: Annotated[
        int | None, typer.Option(help="Random subset of the train samples.")
    ] = None,
    max_eval_samples: Annotated[
        int | None,
        typer.Option(
            help="Validation samples for the validation loss; 0 = all. "
            "[default: a quarter of the train samples, at most 256]"
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Per-device batch size. [default: 8]")
    ] = None,
    gradient_accumulation_steps: Annotated[int | None, typer.Option(help="[default: 1]")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help="Recompute activations in the backward pass: less memory, slower (cft: the "
            "counterfactual prompt then runs per example). [default: off]",
        ),
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="[default: 1e-4]")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    eval_steps: Annotated[
        int | None,
        typer.Option(help="Validate and checkpoint every N steps. [default: min(50, steps/epoch)]"),
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early-stopping patience in evaluations. [default: 3]")
    ] = None,
    logging_steps: Annotated[int | None, typer.Option(help="[default: 10]")] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 42]")] = None,
    threads: Threads = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML preset (e.g. configs/cft.yaml); flags override it."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune an LLM recommender with sft (BIGRec) or cft; writes the run directory."""
    # every option left unset (None) falls back to the preset, then to the defaults
    overrides = {
        name: value
        for name, value in locals().items()
        if name not in ("output", "config", "resume", "json_output", "overwrite")
    }
    import json

    from .training.pipeline import load_settings, resume_settings, train

    if overrides["data"] is not None:
        overrides["data"] = str(overrides["data"])
    if lora_target_modules is not None and lora_target_modules != "all-linear":
        overrides["lora_target_modules"] = [m.strip() for m in lora_target_modules.split(",")]
    if config is None and resume:
        config = resume_settings(output)  # the interrupted run's own settings
    settings = load_settings(config, overrides)
    summary = train(settings, output, resume=resume, overwrite=overwrite)
    if json_output:
        print(json.dumps(summary))


# ---------------------------------------------------------------- evaluate / compare


@app.command("evaluate")
def evaluate_command(
    run: Annotated[Path, typer.Option("--run", help="Run directory (llm, sasrec or pop).")],
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset directory.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder to write.")],
    split: Annotated[str, typer.Option(help="Split to evaluate: test or valid.")] = "test",
    decoding: Annotated[
        str, typer.Option(help="LLM runs: beam (constrained, D3), exhaustive or grounding.")
    ] = "beam",
    beams: Annotated[int | None, typer.Option(min=1, help=_BEAMS_HELP, show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N cases.")] = None,
    sample: Annotated[
        int | None, typer.Option(help="A seeded random sample of N users (all their cases).")
    ] = None,
    sample_seed: Annotated[int, typer.Option(help="Seed of --sample and --check-search.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Cases decoded together.")] = 8,
    exclude_history: Annotated[
        bool,
        typer.Option(
            "--exclude-history",
            help="Remove each case's history titles from its ranking before the metrics "
            "(beam lists are filtered, so they may hold fewer than --beams titles).",
        ),
    ] = False,
    check_search: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Beam decoding: also rank the whole catalogue exactly (exhaustive scoring, "
            "about 80 CPU-seconds per case on MovieLens-100k with SmolLM2-135M) for N seeded "
            "cases; report how often the beam's top-K differs, its recall and the score gap.",
        ),
    ] = None,
    assistant: Annotated[
        Path | None, typer.Option(help="D3 guidance: a sasrec/pop run on the same data.")
    ] = None,
    guidance_scale: Annotated[
        float, typer.Option(help="g in g * (llm - assistant) + assistant (1 = plain LLM).")
    ] = 1.0,
    length_penalty: Annotated[
        float, typer.Option(help="LLM runs: beam score / length**p (0 = sum, as D3).")
    ] = 0.0,
    max_history: Annotated[
        int | None, typer.Option(min=1, help="History window (default: the run's).")
    ] = None,
    allow_data_mismatch: Annotated[
        bool, typer.Option(help="Evaluate on data other than the run was trained on (warns).")
    ] = False,
    dtype: Annotated[str | None, typer.Option(help="LLM runs: float32/bfloat16/float16.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print results.json, not the table.")
    ] = False,
    threads: Threads = None,
    overwrite: Overwrite = False,
) -> None:
    """Rank the catalogue for every case of a split; NDCG@K and HR@K, coverage, popularity.

    Under `accelerate launch` the cases are split across processes and gathered.
    """
    import json

    from rich.console import Console

    from .evaluation.evaluate import EvaluationSettings, evaluate
    from .evaluation.report import metrics_table
    from .threads import use_threads

    use_threads(threads)
    settings = EvaluationSettings(
        split=split, decoding=decoding, beams=beams, limit=limit, sample=sample,
        sample_seed=sample_seed, batch_size=batch_size,
        assistant=str(assistant) if assistant else None, guidance_scale=guidance_scale,
        length_penalty=length_penalty, max_history=max_history,
        allow_data_mismatch=allow_data_mismatch, dtype=dtype, exclude_history=exclude_history,
        check_search=check_search,
    )  # fmt: skip
    results = evaluate(run, data, out, settings, overwrite=overwrite)
    if results is None:  # not the main process
        return
    if as_json:
        print(json.dumps(results, indent=2))
        return
    console = Console()
    console.print(metrics_table(results, results["name"]))
    console.print(
        f"{results['num_cases']} cases in {results['elapsed_s']:.1f} s -> {out}/results.json"
    )


@app.command("compare")
def compare_command(
    results: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[A B]",
            help="Two evaluation outputs: A (baseline), then B (compared to A).",
            show_default=False,
        ),
    ] = None,
    side_a: Annotated[
        list[Path] | None,
        typer.Option("-a", "--a", help="An evaluation output of side A; repeat for several runs."),
    ] = None,
    side_b: Annotated[
        list[Path] | None,
        typer.Option("-b", "--b", help="An evaluation output of side B; repeat for several runs."),
    ] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not the table.")] = False,
    resamples: Annotated[
        int, typer.Option(min=1, help="Bootstrap resamples / permutations.")
    ] = 10_000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the resampling.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing -o file.")
    ] = False,
) -> None:
    """Paired comparison per metric: B - A, bootstrap 95% interval, permutation p-value.

    Several runs per side (e.g. seeds: -a sft-1 -a sft-2 -b cft-1 -b cft-2): each case's metric
    is averaged over its side's runs, then the same paired test runs over the cases.
    """
    import json

    from rich.console import Console

    from .evaluation.report import comparison_table, read_results
    from .evaluation.significance import compare_runs
    from .io import check_output_file, write_json

    if results and (side_a or side_b):
        raise CftrecError("give either A B, or -a ... -b ..., not both")
    if results:
        if len(results) != 2:
            raise CftrecError(f"compare takes two evaluation outputs (A B), got {len(results)}")
        side_a, side_b = [results[0]], [results[1]]
    if not side_a or not side_b:
        raise CftrecError("compare needs A B, or at least one -a and one -b")
    if out is not None:
        check_output_file(out, [*side_a, *side_b], overwrite)
    runs_a = [read_results(path) for path in side_a]
    runs_b = [read_results(path) for path in side_b]
    comparison = compare_runs(runs_a, runs_b, resamples, seed)
    comparison["paths"] = {"a": [str(p) for p in side_a], "b": [str(p) for p in side_b]}
    if out is not None:
        write_json(out, comparison)
    if as_json:
        print(json.dumps(comparison, indent=2))
    else:
        Console().print(comparison_table(comparison))


# ---------------------------------------------------------------- baselines

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
    from .baselines.popularity import train_popularity

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
    threads: Threads = None,
    overwrite: Overwrite = False,
) -> None:
    """SASRec (Kang & McAuley 2018) trained on the train split, early stopping on valid NDCG@10."""
    from .baselines.sasrec import SASRecConfig, train_sasrec
    from .threads import use_threads

    use_threads(threads)
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


_DECODING_HELP = "LLM runs: beam (constrained, D3), exhaustive or grounding."


@app.command("recommend")
def recommend_command(
    run: Annotated[Path, typer.Option("--run", help="Run directory (llm, sasrec or pop).")],
    entries: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ENTRY",
            help="History, oldest first: catalogue titles or item ids (none = cold start; "
            "put -- before an entry that starts with '-').",
            show_default=False,
        ),
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help='Optional marker before the entries: --history "Toy Story (1995)" "Heat (1995)".',
        ),
    ] = False,
    item_ids: Annotated[
        bool, typer.Option("--item-ids", help="The entries are item ids (not titles).")
    ] = False,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many titles.")] = 10,
    decoding: Annotated[str, typer.Option(help=_DECODING_HELP)] = "beam",
    beams: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"LLM runs: number of beams. [default: max({DEFAULT_BEAMS}, k); grounding: "
            f"max({GROUNDING_BEAMS}, k)]",
        ),
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="LLM runs: float32/bfloat16/float16.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not the table.")] = False,
    extra_items: Annotated[
        Path | None,
        typer.Option(
            help="LLM runs: also consider these new items (CSV with item_id,title columns, or "
            "JSON lines), for this call only.",
            show_default=False,
        ),
    ] = None,
    threads: Threads = None,
) -> None:
    """Top-k recommendations for one history, from any run kind.

    Example: cftrec recommend --run runs/cft --history "Toy Story (1995)" "Heat (1995)" -k 10
    """
    import json

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .serving.service import RecommendService
    from .threads import use_threads

    use_threads(threads)
    console = Console(stderr=True)
    with console.status(f"loading {run}"):
        service = RecommendService.load(
            run, dtype=dtype, method=decoding, num_beams=beams or max(default_beams(decoding), k)
        )
    if extra_items is not None:
        from .data.catalog_changes import read_items_file

        service.add_items(read_items_file(extra_items), persist=False)
    resolved = service.resolve(entries or [], item_ids_only=item_ids)
    recommendations = service.recommend([resolved], k)[0]
    if as_json:
        payload = {
            "run": str(run),
            "history": [{"item_id": i, "title": service.catalog.title(i)} for i in resolved],
            "decoding": service.decoding,
            "recommendations": [r.to_dict() for r in recommendations],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    # One title per line: titles contain commas (and brackets, which rich would read as markup).
    if resolved:
        print(f"{run} ({service.kind}), history, oldest first:")
        for number, item_id in enumerate(resolved, 1):
            print(f"  {number}. {service.catalog.title(item_id)}")
    else:
        print(f"{run} ({service.kind}), history: none (cold start)")
    table = Table()
    for column in ("rank", "title", "score", "item ids"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, rec in enumerate(recommendations, 1):
        table.add_row(str(rank), Text(rec.title), f"{rec.score:.3f}", Text(", ".join(rec.item_ids)))
    Console().print(table)


@app.command("serve")
def serve_command(
    run: Annotated[Path, typer.Option("--run", help="Run directory (llm, sasrec or pop).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require this key in the X-API-Key header (default: env CFTREC_API_KEY; an "
            "empty key is an error).",
            show_default=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Serve a non-loopback --host without an API key (on purpose)."
        ),
    ] = False,
    body_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds a client gets to send its request body (else 408)."),
    ] = 30.0,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most requests decoded together (1 = one at a time).")
    ] = 16,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="Longest a request waits for its batch to fill.")
    ] = 5.0,
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = 50,
    max_history_entries: Annotated[
        int, typer.Option(min=1, help="Longest history a request may send.")
    ] = 100,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Larger request bodies get 413.")
    ] = 65536,
    decoding: Annotated[str, typer.Option(help=_DECODING_HELP)] = "beam",
    beams: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=_BEAMS_HELP + " Beam search returns at most this many titles.",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="LLM runs: float32/bfloat16/float16.")] = None,
    graceful_timeout: Annotated[
        float, typer.Option(help="Seconds in-flight requests get to finish on SIGTERM.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    threads: Threads = None,
) -> None:
    """Serve a run over HTTP: POST /recommend, POST /recommend/batch, GET /items, GET /health,
    POST /items and DELETE /items/{item_id} (catalogue changes, LLM runs), docs at /docs.
    Concurrent requests are micro-batched; SIGTERM drains in-flight requests."""
    import os

    from .serving.app import API_KEY_ENV, serve
    from .threads import use_threads

    use_threads(threads)
    serve(
        run, host=host, port=port, no_auth=no_auth,
        api_key=api_key if api_key is not None else os.environ.get(API_KEY_ENV),
        graceful_timeout_s=graceful_timeout, log_level=log_level,
        decoding={"method": decoding, "num_beams": beams or default_beams(decoding)}, dtype=dtype,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_k=max_k,
        max_history_entries=max_history_entries, max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout,
    )  # fmt: skip


@app.command("diagnose")
def diagnose_command(
    run: Annotated[Path, typer.Option("--run", help="LLM run directory.")],
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset directory.")],
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Output folder to write: JSON and PNG.")
    ] = Path("diagnose"),
    compare_run: Annotated[
        Path | None, typer.Option(help="A second LLM run (e.g. sft vs cft), side by side.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split: test, valid or train.")] = "test",
    limit: Annotated[int, typer.Option(min=0, help="Use the first N cases (0 = all).")] = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="Cases per forward pass.")] = 8,
    decoding: Annotated[str, typer.Option(help=_DECODING_HELP + " (for top-1 changes)")] = "beam",
    beams: Annotated[int | None, typer.Option(min=1, help=_BEAMS_HELP, show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not the table.")] = False,
    threads: Threads = None,
    overwrite: Overwrite = False,
) -> None:
    """How much the output depends on the history: per response-token position, mean
    KL(factual || counterfactual) and causal effect on the true token, and the share of cases
    whose top-1 recommendation changes when the history is removed."""
    import json

    from rich.console import Console
    from rich.table import Table

    from .diagnostics import diagnose, run_label, write_outputs
    from .io import check_output
    from .threads import use_threads

    runs = [run] if compare_run is None else [run, compare_run]
    inputs = (*runs, data)
    check_output(out, "diagnose", inputs, overwrite)
    use_threads(threads)
    result = diagnose(runs, data, split, limit or None, batch_size, decoding, beams)
    write_outputs(result, out, inputs, overwrite)
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"history effect per response token ({split}, {data})")
    table.add_column("position", justify="right")
    table.add_column("n", justify="right")
    for entry in result["runs"]:
        table.add_column(f"KL {run_label(entry)}", justify="right")
        table.add_column(f"effect {run_label(entry)}", justify="right")
    longest = max(result["runs"], key=lambda entry: len(entry["positions"]))["positions"]
    for t, row in enumerate(longest):  # runs with different tokenizers may differ in length
        cells = [str(row["position"]), str(row["n"])]
        for entry in result["runs"]:
            p = entry["positions"][t] if t < len(entry["positions"]) else None
            cells += [f"{p['kl']:.4f}", f"{p['effect']:+.4f}"] if p else ["", ""]
        table.add_row(*cells)
    console = Console()
    console.print(table)
    for entry in result["runs"]:
        console.print(
            f"{run_label(entry)}: {entry['cases']} cases, mean KL {entry['mean_kl']:.4f}, "
            f"mean effect {entry['mean_effect']:+.4f}, top-1 changes without history "
            f"{entry['top1_changed']:.1%}"
        )
    console.print(f"-> {out}/diagnose.json, {out}/diagnose.png")


# ---------------------------------------------------------------- demo (the main job, small)


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
    from .experiment import ExperimentSettings, run_demo

    settings = ExperimentSettings(
        model=model, max_train_samples=train_samples, eval_limit=eval_cases, force=force,
        threads=threads,
    )  # fmt: skip
    run_demo(settings, out)


def _quiet_libraries(debug: bool) -> None:
    """Keep library chatter (weight-loading bars, deprecation notices of dependencies) out of
    the command output; --debug shows it. Set before transformers is imported."""
    if debug:
        return
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")


def _click_exceptions():
    """The exceptions module of the click that typer runs on: recent typer vendors its own copy
    of click (typer._click), older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _unwind_on_sigterm(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C (temporary outputs are removed on the way out); `main`
    then ends the process by SIGTERM, as its sender expects."""
    _state["signal"] = signum
    raise KeyboardInterrupt


def _interrupted() -> None:
    import os
    import signal

    if _state.get("signal") == signal.SIGTERM:
        print("terminated", file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    print("interrupted", file=sys.stderr)
    sys.exit(130)


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return " ".join(str(error).split("\n"))


def main(argv: list[str] | None = None) -> None:
    """Entry point. Errors the user can fix (bad input, usage, files) print one line on stderr
    and exit with status 2 (`--debug` shows the traceback); Ctrl-C prints "interrupted" and
    exits with 130; SIGTERM unwinds the same way, then ends the process by SIGTERM."""
    import signal
    import threading

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    _quiet_libraries(debug)
    click_errors = _click_exceptions()
    _state["signal"] = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _unwind_on_sigterm) if in_main_thread else None
    try:
        code = app(args=args, standalone_mode=False, prog_name="cftrec")
    except (typer.Abort, KeyboardInterrupt):
        code = 130  # older click turns Ctrl-C into Abort; recent typer returns 130
    except click_errors.ClickException as error:
        if isinstance(error, getattr(click_errors, "NoArgsIsHelpError", ())):
            error.show()  # the help text
        else:
            context = getattr(error, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            print(f"error: {error.format_message()}{hint}", file=sys.stderr)
        code = error.exit_code
    except (CftrecError, OSError) as error:
        if debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        code = 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
