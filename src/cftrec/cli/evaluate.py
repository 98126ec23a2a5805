"""`cftrec evaluate` and `cftrec compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import CftrecError
from ..evaluation.metrics import LIST_LENGTH
from .common import BEAMS_HELP, DECODING_HELP, Overwrite, Threads, app


@app.command("evaluate")
def evaluate_command(
    run: Annotated[Path, typer.Option("--run", help="Run directory (llm, sasrec or pop).")],
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset directory.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder to write.")],
    split: Annotated[str, typer.Option(help="Split to evaluate: test or valid.")] = "test",
    decoding: Annotated[str, typer.Option(help=DECODING_HELP)] = "beam",
    beams: Annotated[int | None, typer.Option(min=1, help=BEAMS_HELP, show_default=False)] = None,
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
            help="Leave each case's history titles out of its ranking, as if they had left "
            "the catalogue (beam and exact search skip them while they search).",
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
    list_length: Annotated[
        int,
        typer.Option(
            min=1,
            help="Titles per list: NDCG/HR up to @this. An exact search for fewer is cheaper.",
        ),
    ] = LIST_LENGTH,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print results.json, not the table.")
    ] = False,
    threads: Threads = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted evaluation into the same -o folder: the cases it "
            "finished are not decoded again (the settings must be the same).",
        ),
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Rank the catalogue for every case of a split; NDCG@K and HR@K, coverage, popularity.

    Under `accelerate launch` the cases are split across processes and gathered. Finished
    cases are kept as the evaluation goes, so an interrupted one continues with --resume.
    """
    import json

    from rich.console import Console

    from ..evaluation.evaluate import EvaluationSettings, evaluate
    from ..evaluation.report import metrics_table
    from ..threads import use_threads

    use_threads(threads)
    settings = EvaluationSettings(
        split=split, decoding=decoding, beams=beams, limit=limit, sample=sample,
        sample_seed=sample_seed, batch_size=batch_size,
        assistant=str(assistant) if assistant else None, guidance_scale=guidance_scale,
        length_penalty=length_penalty, max_history=max_history,
        allow_data_mismatch=allow_data_mismatch, dtype=dtype, exclude_history=exclude_history,
        check_search=check_search, list_length=list_length,
    )  # fmt: skip
    results = evaluate(run, data, out, settings, overwrite=overwrite, resume=resume)
    if results is None:  # not the main process
        return
    if as_json:
        print(json.dumps(results, indent=2))
        return
    console = Console()
    console.print(metrics_table(results, results["name"]))
    resumed = results.get("resumed")
    earlier = f" ({resumed['cases']} of them decoded before)" if resumed else ""
    console.print(
        f"{results['num_cases']} cases{earlier} in {results['elapsed_s']:.1f} s "
        f"-> {out}/results.json"
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

    from ..evaluation.report import comparison_table, read_results
    from ..evaluation.significance import compare_runs
    from ..files import check_output_file, write_json

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
