"""`cftrec catalogue add|remove`: change an LLM run's live catalogue, in bulk.

    cftrec catalogue add new.tsv --run runs/cft            # the run folder's journal, at once
    cftrec catalogue add new.jsonl --server http://host:8000   # a running server, in chunks
    cftrec catalogue remove gone.txt --run runs/cft        # one item id per line

Against a run folder the whole file is one change (all or nothing); a server holding the run
refuses it (send it to the server instead). Against a server the file goes in chunks of at most
--chunk items (the server's POST /items limit), and the first refused chunk stops the load with
one line naming the file's line; the chunks before it stay added.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from ..errors import CftrecError
from .common import Threads, app

catalogue_app = typer.Typer(
    help="Add or remove catalogue items of an LLM run (a run folder or a running server).",
    no_args_is_help=True,
)
app.add_typer(catalogue_app, name="catalogue")

Run = Annotated[
    Path | None, typer.Option("--run", help="Change this run folder's catalogue directly.")
]
Server = Annotated[
    str | None,
    typer.Option("--server", help="Send the change to this running server (http://host:port)."),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", help="The server's API key. [default: $CFTREC_API_KEY]"),
]
CHUNK_ITEMS = 1000  # the server's default POST /items limit


def _target(run: Path | None, server: str | None) -> None:
    if (run is None) == (server is None):
        raise CftrecError("give either --run RUN or --server URL")


def _service(run: Path, threads: int | None):
    from ..serving.service import RecommendService
    from ..threads import use_threads

    use_threads(threads)
    return RecommendService.load(run, hold_catalogue=True)


def _request(method: str, url: str, api_key: str | None, body: dict | None = None):
    """(status, parsed JSON body) of one HTTP request (stdlib only)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    key = api_key if api_key is not None else os.environ.get("CFTREC_API_KEY")
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except json.JSONDecodeError:
            return error.code, None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CftrecError(f"{url}: cannot reach the server ({reason})") from None


def _line_named(message: str, items, lines, start: int = 0) -> int:
    """The line of the first item (from `start`) whose id or title `message` names."""
    for n, (item_id, title) in enumerate(items[start:], start):
        if repr(item_id) in message or repr(title) in message:
            return lines[n]
    return lines[start]


def _detail(payload) -> str:
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return " ".join(str(detail).split())


@catalogue_app.command("add")
def add_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="New items: .tsv (item_id<TAB>title), .csv (item_id,title header) or .jsonl."
        ),
    ],  # fmt: skip
    run: Run = None,
    server: Server = None,
    api_key: ApiKey = None,
    chunk: Annotated[int, typer.Option(min=1, help="Items per request to a server.")] = CHUNK_ITEMS,
    threads: Threads = None,
) -> None:
    """Add items: recommendable at once, no retraining (LLM runs)."""
    from ..data.catalog_changes import read_items_lines

    _target(run, server)
    items, lines = read_items_lines(file)  # every record checked before anything is sent
    if run is not None:
        service = _service(run, threads)
        try:
            service.add_items(items)
        except CftrecError as error:
            if type(error) is not CftrecError:  # busy, not saved: about the run, not a record
                raise
            raise CftrecError(f"{file}:{_line_named(str(error), items, lines)}: {error}") from None
        finally:
            service.close()
        print(f"added {len(items)} items to {run} ({len(service.catalog)} items now)")
        return
    url = server.rstrip("/") + "/items"
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        body = {"items": [{"item_id": i, "title": t} for i, t in part]}
        status, payload = _request("POST", url, api_key, body)
        if status != 200:
            where = _line_named(_detail(payload), items[: start + len(part)], lines, start)
            raise CftrecError(
                f"{file}:{where}: the server refused items {start + 1}-{start + len(part)} "
                f"(HTTP {status}: {_detail(payload)}); the {start} before them were added"
            )
        print(f"added {start + len(part)}/{len(items)} items", file=sys.stderr)
    print(f"added {len(items)} items to {server}")


@catalogue_app.command("remove")
def remove_command(
    entries: Annotated[
        list[str],
        typer.Argument(metavar="ITEM_ID_OR_FILE", help="Item ids, or a file of one id per line."),
    ],
    run: Run = None,
    server: Server = None,
    api_key: ApiKey = None,
    chunk: Annotated[int, typer.Option(min=1, help="Ids per request to a server.")] = CHUNK_ITEMS,
    threads: Threads = None,
) -> None:
    """Stop recommending items (LLM runs)."""
    _target(run, server)
    item_ids = []
    for entry in entries:
        path = Path(entry)
        if path.is_file():
            item_ids += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        else:
            item_ids.append(entry)
    if run is not None:
        service = _service(run, threads)
        try:
            service.remove_items(item_ids)
        finally:
            service.close()
        print(f"removed {len(item_ids)} items from {run} ({len(service.catalog)} items now)")
        return
    url = server.rstrip("/") + "/items/remove"
    for start in range(0, len(item_ids), chunk):
        part = item_ids[start : start + chunk]
        status, payload = _request("POST", url, api_key, {"item_ids": part})
        if status != 200:
            detail = _detail(payload)
            named = next((i for i in part if repr(i) in detail), part[0])
            raise CftrecError(
                f"item id {named!r}: the server refused ids {start + 1}-{start + len(part)} "
                f"(HTTP {status}: {detail}); the {start} before them were removed"
            )
        print(f"removed {start + len(part)}/{len(item_ids)} items", file=sys.stderr)
    print(f"removed {len(item_ids)} items from {server}")
