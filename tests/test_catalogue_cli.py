"""`cftrec catalogue add|remove` against a run folder (one change, all or nothing) and against a
running server (chunks; the first refused chunk stops the load, naming the file's line)."""

from __future__ import annotations

import httpx
import pytest

from cftrec.cli import main
from cftrec.serving.app import create_app
from cftrec.serving.service import RecommendService
from serving_fixtures import make_dataset, make_llm_run, running_server


@pytest.fixture
def llm_run(tmp_path, tokenizer):
    return make_llm_run(tmp_path, make_dataset(tmp_path), tokenizer)


def _fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]  # after any library progress


def test_bulk_add_and_remove_on_a_run_folder(llm_run, tmp_path, capsys):
    items = tmp_path / "new.tsv"
    lines = ["item_id\ttitle"] + [f"b{i}\tBulk Film {i} ({1900 + i % 100})" for i in range(300)]
    items.write_text("\n".join(lines) + "\n")
    main(["catalogue", "add", str(items), "--run", str(llm_run), "--threads", "1"])
    assert "added 300 items" in capsys.readouterr().out
    service = RecommendService.load(llm_run)
    assert service.catalog.title_of["b7"] == "Bulk Film 7 (1907)" and len(service.catalog) == 308
    gone = tmp_path / "gone.txt"
    gone.write_text("b1\nb2\n")
    main(["catalogue", "remove", str(gone), "0", "--run", str(llm_run)])
    service = RecommendService.load(llm_run)
    assert not {"b1", "b2", "0"} & set(service.catalog.item_ids) and len(service.catalog) == 305


def test_bad_records_name_the_line_and_change_nothing(llm_run, tmp_path, capsys):
    items = tmp_path / "new.tsv"
    items.write_text("n1\tFine (2001)\nn2 no tab here\n")
    err = _fails(["catalogue", "add", str(items), "--run", str(llm_run)], capsys)
    assert err == f"error: {items}:2: expected item_id<TAB>title"
    items.write_text("n1\tFine (2001)\n0\tAlready There (2001)\n")
    err = _fails(["catalogue", "add", str(items), "--run", str(llm_run)], capsys)
    assert err == f"error: {items}:2: item id '0' is already in the catalogue"
    assert len(RecommendService.load(llm_run).catalog) == 8
    err = _fails(["catalogue", "add", str(items)], capsys)
    assert "give either --run RUN or --server URL" in err


def test_a_server_holding_the_run_refuses_direct_changes(llm_run, tmp_path, capsys):
    server = RecommendService.load(llm_run, hold_catalogue=True)
    items = tmp_path / "new.jsonl"
    items.write_text('{"item_id": "n1", "title": "Fine (2001)"}\n')
    err = _fails(["catalogue", "add", str(items), "--run", str(llm_run)], capsys)
    assert "another process (a running server?)" in err and "--server URL" in err
    server.close()


def test_bulk_add_to_a_server_in_chunks(llm_run, tmp_path, capsys):
    service = RecommendService.load(llm_run, method="exhaustive")
    items = tmp_path / "new.tsv"
    items.write_text("".join(f"c{i}\tChunked Film {i} (2001)\n" for i in range(25)))
    app = create_app(service, max_new_items=10, max_body_bytes=1000, max_items_body_bytes=4000)
    with running_server(app) as url:
        main(["catalogue", "add", str(items), "--server", url, "--chunk", "10"])
        assert capsys.readouterr().out.strip() == f"added 25 items to {url}"
        assert len(service.catalog) == 33
        # a chunk over the server's limit: 413 naming the limit
        err = _fails(["catalogue", "add", str(items), "--server", url, "--chunk", "11"], capsys)
        assert f"{items}:1: the server refused items 1-11 (HTTP 413: too many items" in err
        assert "at most 10 items per request" in err
        # the second chunk holds an id the catalogue has: stopped there, naming its line
        again = tmp_path / "again.tsv"
        again.write_text(
            "".join(f"d{i}\tAgain {i} (2002)\n" for i in range(12)) + "c3\tDup (2002)\n"
        )
        err = _fails(["catalogue", "add", str(again), "--server", url, "--chunk", "10"], capsys)
        assert f"{again}:13: the server refused items 11-13 (HTTP 422" in err
        assert "the 10 before them were added" in err
        assert "d9" in service.catalog and "d10" not in service.catalog
        # a body over the byte limit: 413 before it is read, naming the chunk limit too
        big = {"items": [{"item_id": f"x{i}", "title": "t" * 400} for i in range(10)]}
        response = httpx.post(f"{url}/items", json=big)
        assert response.status_code == 413
        assert response.json()["detail"] == (
            "request body larger than 4000 bytes; POST /items and /items/remove take at most "
            "10 items per request: send larger loads in chunks (cftrec catalogue add|remove "
            "... --server URL does)"
        )
        main(["catalogue", "remove", "c1", "c2", "--server", url])
        assert "c1" not in service.catalog and "c2" not in service.catalog
        err = _fails(["catalogue", "remove", "c4", "c1", "--server", url], capsys)
        assert "item id 'c1': the server refused ids 1-2 (HTTP 422" in err
        assert "c4" in service.catalog  # all or none
        ids = [f"c{i}" for i in range(3, 25)]
        main(["catalogue", "remove", *ids, "--server", url, "--chunk", "10"])
        assert not set(ids) & set(service.catalog.item_ids)
