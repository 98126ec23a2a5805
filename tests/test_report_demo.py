"""`cftrec demo` ends with `cftrec report` over every result, the reference (sft) first, with
its diagnose output, and prints the report's path last. The steps themselves are recorded, not
run: the commands they run are tested on their own."""

from __future__ import annotations

from cftrec.experiment import ExperimentSettings, demo


def test_demo_writes_the_report_last_and_prints_its_path(tmp_path, monkeypatch, capsys):
    methods = ("pop", "sft", "cft")
    summary = {"data": "data", "reference": "sft",
               "metrics": {name: {"num_cases": 3} for name in methods}}  # fmt: skip
    steps = []
    monkeypatch.setattr(demo, "run_experiment", lambda settings, out: summary)
    monkeypatch.setattr(demo, "run_step", lambda title, args, *rest: steps.append(args))
    monkeypatch.setattr(demo, "summary_table", lambda summary: "the table")

    demo.run_demo(ExperimentSettings(methods=methods), tmp_path)

    results = [str(tmp_path / "results" / name) for name in ("sft", "pop", "cft")]
    report = tmp_path / "report.html"
    assert steps[-1] == ["report", *results, "-o", str(report), "--diagnose",
                         str(tmp_path / "diagnose")]  # fmt: skip
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {report} (open it in a browser)"
