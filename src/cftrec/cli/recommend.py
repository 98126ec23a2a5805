"""`cftrec recommend`: top-k titles for one history, from any run kind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..decoding.methods import DEFAULT_BEAMS, GROUNDING_BEAMS, resolve_beams
from .common import DECODING_HELP, KeepHistory, Threads, app


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
    decoding: Annotated[str, typer.Option(help=DECODING_HELP)] = "beam",
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
    keep_history: KeepHistory = False,
    threads: Threads = None,
) -> None:
    """Top-k recommendations for one history, from any run kind.

    Example: cftrec recommend --run runs/cft --history "Toy Story (1995)" "Heat (1995)" -k 10
    """
    import json

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..serving.service import RecommendService
    from ..threads import use_threads

    use_threads(threads)
    console = Console(stderr=True)
    with console.status(f"loading {run}"):
        service = RecommendService.load(
            run, dtype=dtype, exclude_history=not keep_history, method=decoding,
            num_beams=resolve_beams(decoding, beams, k),
        )  # fmt: skip
    if extra_items is not None:
        from ..data.catalog_changes import read_items_file

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
