"""`cftrec compare` on broken evaluation folders: one line, exit 2, never a traceback."""

from __future__ import annotations

import pytest

from hardening_fixtures import assert_one_line_error, run_main


@pytest.mark.parametrize(
    ("results", "cases", "message"),
    [
        ("[]", '{"case_id": "1#0"}\n', "results.json"),
        ("{}", '{"case_id": "1#0"}\n[1, 2]\n', "cases.jsonl:2: not a JSON object"),
        ("{}", b'{"case_id": "1#0"}\n{"title": "\xff"}\n', "cases.jsonl:2: not UTF-8 text"),
        ("{}", '{"case_id": "1#0"}\n{oops\n', "cases.jsonl:2: bad JSON"),
    ],
)
def test_a_broken_results_folder_is_one_line(tmp_path, capsys, results, cases, message):
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(results)
        data = cases if isinstance(cases, bytes) else cases.encode()
        (folder / "cases.jsonl").write_bytes(data)
        folders.append(str(folder))
    code, _, err = run_main(["compare", *folders], capsys)
    assert_one_line_error(code, err, message)
