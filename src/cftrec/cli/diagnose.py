"""`cftrec diagnose`: how much each response token depends on the history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import BEAMS_HELP, DECODING_HELP, Overwrite, Threads, app


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
    decoding: Annotated[str, typer.Option(help=DECODING_HELP + " (for top-1 changes)")] = "beam",
    beams: Annotated[int | None, typer.Option(min=1, help=BEAMS_HELP, show_default=False)] = None,
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

    from ..diagnostics import diagnose, run_label, write_outputs
    from ..files import check_output
    from ..threads import use_threads

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
