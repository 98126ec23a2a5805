"""`cftrec report` on real evaluations (a popularity run and a tiny CFT run, trained and
evaluated by the command line): one self-contained, well-formed page holding every section,
the comparison `compare_runs` makes, no pairwise comparison of results on other cases, and
bad input as one line with exit status 2 and nothing written."""

from __future__ import annotations

import base64
import json
import shutil
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cftrec.evaluation.report import read_results
from cftrec.evaluation.significance import compare_runs
from hardening_fixtures import assert_one_line_error, run_main
from training_fixtures import one_thread, run_cli, write_tiny_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
SECTIONS = ["results", "cutoffs", "comparison", "history", "target-popularity",
            "recommended-popularity", "training", "diagnose", "provenance"]  # fmt: skip
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


class PageCheck(HTMLParser):
    """Reads a page and records what would make it broken or not self-contained."""

    def __init__(self, text: str):
        super().__init__()
        self.doctype, self.open, self.problems = None, [], []
        self.ids, self.images, self.metas, self.words = [], [], [], []
        self.tags: set[str] = set()
        self.feed(text)
        self.close()
        self.problems += [f"<{tag}> never closed" for tag, _ in self.open]

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.ids += [attrs["id"]] if "id" in attrs else []
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if value and not value.startswith(("data:", "#")):
                self.problems.append(f"<{tag} {name}='{value[:60]}'> needs the network or a file")
        if tag == "img":
            self.images.append(attrs)
        if tag == "meta":
            self.metas.append(attrs)
        if tag == "table" and self.open[-1:] != [("div", "scroll")]:
            self.problems.append("a table outside a sideways-scrolling box")
        if tag not in VOID:
            self.open.append((tag, attrs.get("class")))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.open or self.open[-1][0] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data):
        self.words.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.words).split())


def check_page(path: Path) -> PageCheck:
    """Everything a page must be, whatever it reports."""
    page = PageCheck(path.read_text(encoding="utf-8"))
    assert page.problems == []
    assert page.doctype == "DOCTYPE html" and len(page.ids) == len(set(page.ids))
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.metas
    assert not page.tags & {"script", "link", "iframe", "object"}
    for attrs in page.images:
        assert attrs.get("alt")
        kind, data = attrs["src"].split(";base64,")
        if kind == "data:image/svg+xml":
            assert ElementTree.fromstring(base64.b64decode(data)).tag.endswith("svg")
        else:
            assert kind == "data:image/png" and base64.b64decode(data).startswith(b"\x89PNG")
    return page


def _cli(*args) -> None:
    assert run_cli([str(a) for a in args]) == 0


def pop_results(root: Path, data: Path, name: str = "pop") -> Path:
    _cli("baseline", "pop", "--data", data, "-o", root / "runs" / name)
    _cli("evaluate", "--run", root / "runs" / name, "--data", data, "-o", root / "results" / name)
    return root / "results" / name


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir):
    """Real outputs: pop and a 4-step cft run on a tiny dataset, both evaluated, a diagnose."""
    root = tmp_path_factory.mktemp("report")
    data = write_tiny_dataset(root / "data")
    pop_results(root, data)
    cft = root / "runs" / "cft"
    _cli("train", "--data", data, "--model", tiny_model_dir, "--method", "cft", "--max-steps",
         "4", "--batch-size", "4", "--logging-steps", "1", "--eval-steps", "2",
         "-o", cft)  # fmt: skip
    _cli("evaluate", "--run", cft, "--data", data, "--beams", "4", "-o", root / "results" / "cft")
    _cli("diagnose", "--run", cft, "--data", data, "--limit", "4", "--beams", "2", "-o",
         root / "diagnose")  # fmt: skip
    return root


def test_a_report_is_one_self_contained_page_with_every_section(work, tmp_path, capsys):
    out = tmp_path / "report.html"
    results = [work / "results" / "pop", work / "results" / "cft"]
    args = ["report", *results, "--diagnose", work / "diagnose", "-o", out, "--resamples", "500"]
    code, printed, err = run_main(args, capsys)
    assert code == 0, err
    assert printed.startswith(f"wrote {out}")
    page = check_page(out)
    assert [i for i in page.ids if i in SECTIONS] == SECTIONS
    text = page.text
    # the comparison is compare_runs' (what `cftrec compare pop cft` prints)
    comparison = compare_runs(*([read_results(r)] for r in results), resamples=500)
    for name, row in comparison["metrics"].items():
        low, high = row["ci95"]
        cells = [name, f"{row['a']:.4f}", f"{row['b']:.4f}", f"{row['diff']:+.4f}",
                 f"[{low:+.4f}, {high:+.4f}]", f"{row['p_value']:.4f}"]  # fmt: skip
        assert " ".join(cells) in text
    assert "@5, @10, @20, @50 not compared" in text  # 4-beam lists decide K <= 3 only
    # breakdowns (the fold-out tables): every test case follows 5 interactions of its user, and
    # each title has 6 train interactions
    assert "3-5 pop 12" in text and "3-5 cft 12" in text
    assert "1-9 pop 12" in text
    alts = [image["alt"] for image in page.images]
    assert "training and validation loss of cft" in alts  # from the run's metrics.jsonl
    assert "history reliance per response token" in alts  # diagnose.png
    assert sum(alt.startswith(("NDCG", "HR")) for alt in alts) == 6  # @K, history, popularity
    fingerprint = json.loads((work / "data" / "meta.json").read_text())["fingerprint"]
    assert f"fingerprint {fingerprint}" in text and "written" in text
    made = json.loads((work / "results" / "cft" / "results.json").read_text())["provenance"]
    assert made["created"] in text and f"{made['cftrec']}, commit" in text
    assert "different sets of cases" not in text and "note" not in page.tags


def test_results_on_other_cases_are_never_compared_pairwise(work, tmp_path, capsys):
    other = pop_results(tmp_path, write_tiny_dataset(tmp_path / "other-data", users=9), "pop9")
    out = tmp_path / "report.html"
    code, _, err = run_main(["report", work / "results" / "pop", other, "-o", out], capsys)
    assert code == 0, err
    text = check_page(out).text
    assert "made on 2 different sets of cases" in text
    assert "Nothing to compare: no two results were made on the same cases." in text
    assert "B - A" not in text  # no comparison table
    assert text.count("reference") >= 2  # each set is its own reference


def test_a_missing_run_or_dataset_is_a_marked_note(work, tmp_path, capsys):
    moved = tmp_path / "cft"
    shutil.copytree(work / "results" / "cft", moved)
    results = json.loads((moved / "results.json").read_text())
    results["run"]["path"] = str(tmp_path / "gone-run")
    results["data"]["path"] = str(tmp_path / "gone-data")
    (moved / "results.json").write_text(json.dumps(results))
    out = tmp_path / "report.html"
    code, _, err = run_main(["report", moved, "-o", out], capsys)
    assert code == 0, err
    text = check_page(out).text
    assert "run folder not read" in text and "dataset not read" in text
    assert "Not shown for cft: the dataset was not found" in text

    code, _, err = run_main(["report", moved, "--data", work / "data", "-o", out, "--overwrite"],
                            capsys)  # fmt: skip
    assert code == 0, err
    assert "dataset not read" not in check_page(out).text

    results["data"]["path"] = str(write_tiny_dataset(tmp_path / "other-data", users=9))
    (moved / "results.json").write_text(json.dumps(results))
    code, _, err = run_main(["report", moved, "-o", out, "--overwrite"], capsys)
    assert code == 0, err
    assert "other-data has changed (fingerprint" in check_page(out).text


def _broken(folder: Path, problem: str) -> None:
    results, cases = folder / "results.json", folder / "cases.jsonl"
    if problem == "no results.json":
        results.unlink()
    elif problem == "corrupt results.json":
        results.write_text('{"metrics": {')
    elif problem == "results.json of a list":
        results.write_text("[]")
    elif problem == "another version's results.json":
        content = json.loads(results.read_text())
        del content["metrics"]
        results.write_text(json.dumps(content))
    elif problem == "another version's cases":
        lines = cases.read_text().splitlines()
        first = json.loads(lines[0])
        del first["rank"]
        cases.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    elif problem == "corrupt cases.jsonl":
        cases.write_bytes(b"\xff\xfe\x00garbage\n")
    elif problem == "cases cut short":
        cases.write_text(cases.read_text().splitlines()[0] + "\n")


@pytest.mark.parametrize(
    "problem, message",
    [
        ("no folder", "not a folder"),
        ("no results.json", "not a cftrec evaluation output (missing results.json)"),
        ("corrupt results.json", "results.json:1: bad JSON"),
        ("results.json of a list", "results.json: expected an object of JSON"),
        ("another version's results.json",
         "results.json: no valid 'metrics'; not a `cftrec evaluate` output of this cftrec version"),
        ("another version's cases", "cases.jsonl: line 1 lacks rank; not a `cftrec evaluate`"),
        ("corrupt cases.jsonl", "cases.jsonl:1: not UTF-8 text"),
        ("cases cut short", "cases.jsonl holds 1 cases, results.json says 12"),
        ("corrupt diagnose", "diagnose.json: missing"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_nothing_written(work, tmp_path, capsys, problem, message):
    folder = tmp_path / "pop"
    diagnose = tmp_path / "diagnose"
    diagnose.mkdir()
    if problem != "no folder":
        shutil.copytree(work / "results" / "pop", folder)
        _broken(folder, problem)
    out = tmp_path / "report.html"
    args = ["report", folder, "-o", out]
    code, _, err = run_main(args + (["--diagnose", diagnose] if "diagnose" in problem else []),
                            capsys)  # fmt: skip
    assert_one_line_error(code, err, message)
    assert not out.exists()


def test_an_existing_report_is_replaced_only_with_overwrite(work, tmp_path, capsys):
    out = tmp_path / "report.html"
    out.write_text("mine")
    code, _, err = run_main(["report", work / "results" / "pop", "-o", out], capsys)
    assert_one_line_error(code, err, "exists; pass --overwrite")
    assert out.read_text() == "mine"
    twice = ["report", work / "results" / "pop", work / "results" / "pop", "-o", tmp_path / "r2"]
    assert_one_line_error(*run_main(twice, capsys)[::2], "given more than once")
