"""The accuracy suite's extra rows (guided by the suite's SASRec, wider beams, exact decoding):
which commands run, which guidance scale is chosen on validation users, how rows pair up.
The cftrec commands are recorded instead of run; evaluations "score" from a table here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cftrec.errors import CftrecError
from cftrec.experiment import steps
from cftrec.experiment.settings import ExperimentSettings
from cftrec.experiment.variants import best_llm_row, counterpart, variant_rows

# validation NDCG@10 per (run, guidance scale): cft peaks at 0.5, sft ties at 1.0 and 0.25
VALIDATION = {("cft", "1"): 0.01, ("cft", "0.5"): 0.03, ("cft", "0.25"): 0.02,
              ("sft", "1"): 0.02, ("sft", "0.5"): 0.01, ("sft", "0.25"): 0.02}  # fmt: skip


def write_runs(out: Path, sasrec_window: int = 50) -> None:
    """The run.json files the variants read: LLM runs with a 10-item window, SASRec's own."""
    for run, info in {"sft": {"kind": "llm", "max_history": 10},
                      "cft": {"kind": "llm", "max_history": 10},
                      "sasrec": {"kind": "sasrec", "max_history": sasrec_window}}.items():  # fmt: skip
        (out / "runs" / run).mkdir(parents=True, exist_ok=True)
        (out / "runs" / run / "run.json").write_text(json.dumps(info))


@pytest.fixture
def commands(monkeypatch, tmp_path):
    """Every cftrec command the variants run; an evaluation writes results.json."""
    seen: list[list[str]] = []

    def fake_run_step(title, args, output=None, force=False, launcher=()):
        seen.append(args)
        if args[0] == "evaluate":
            option = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
            run = Path(option["--run"]).name
            scale = option.get("--guidance-scale", "1")
            ndcg = VALIDATION[(run, scale)] if option["--split"] == "valid" else 0.5
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps({"metrics": {"ndcg@10": ndcg}}))
        return 1.0

    monkeypatch.setattr(steps, "run_step", fake_run_step)
    write_runs(tmp_path)
    return seen


def settings(**changes) -> ExperimentSettings:
    return ExperimentSettings(
        guided=True, guidance_scales=(1.0, 0.5, 0.25), guidance_valid_users=30,
        extra_decodings=("beam:50", "exact"), seed=3, **changes,
    )  # fmt: skip


NAMES = {"pop": "pop", "sasrec": "sasrec", "sft": "sft", "cft": "cft"}


def test_scales_are_chosen_on_validation_users_and_every_row_is_evaluated(tmp_path, commands):
    rows, guidance = variant_rows(settings(), tmp_path / "data", NAMES, tmp_path, {})
    assert guidance["cft"]["chosen"] == 0.5
    assert guidance["sft"]["chosen"] == 1.0  # a tie: the first of the grid
    assert guidance["cft"]["scores"] == {"1": 0.01, "0.5": 0.03, "0.25": 0.02}
    assert rows == [
        "sasrec-h10",  # the control: SASRec given the LLM's window, as guidance gives it
        "sft@50", "sft exact", "sft+g", "sft+g@50", "sft+g exact",
        "cft@50", "cft exact", "cft+g", "cft+g@50", "cft+g exact",
    ]  # fmt: skip
    control = next(c for c in commands if c[-1] == str(tmp_path / "results" / "sasrec-h10"))
    assert control[control.index("--run") + 1] == str(tmp_path / "runs" / "sasrec")
    assert control[control.index("--max-history") + 1] == "10" and "test" in control
    selection = [c for c in commands if "valid" in c]
    assert len(selection) == 6
    for command in selection:  # the validation sample, seeded like the run
        assert command[command.index("--sample") + 1] == "30"
        assert command[command.index("--sample-seed") + 1] == "3"
        assert command[command.index("--beams") + 1] == "10"  # the suite's own beams
    tests = {c[-1]: c for c in commands if "valid" not in c}
    guided_exact = tests[str(tmp_path / "results" / "cft+g exact")]
    assert guided_exact[guided_exact.index("--guidance-scale") + 1] == "0.5"
    assert guided_exact[guided_exact.index("--assistant") + 1] == str(tmp_path / "runs" / "sasrec")
    assert (
        "--beams" not in guided_exact
        and guided_exact[guided_exact.index("--decoding") + 1] == "exact"
        and guided_exact[guided_exact.index("--list-length") + 1] == "10"  # the tables' depth
    )
    wide = tests[str(tmp_path / "results" / "sft@50")]
    assert wide[wide.index("--beams") + 1] == "50" and "--assistant" not in wide


def test_guided_rows_need_the_suites_sasrec(tmp_path, commands):
    names = {"pop": "pop", "sft": "sft", "cft": "cft"}
    with pytest.raises(CftrecError, match="add 'sasrec'"):
        variant_rows(settings(), tmp_path, names, tmp_path, {})


def test_cft_rows_pair_with_the_sft_row_of_the_same_guidance_and_decoding():
    rows = ["sft", "cft", "sft+g", "cft+g", "cft exact", "sasrec"]
    assert counterpart("cft+g", NAMES, rows) == "sft+g"
    assert counterpart("cft exact", NAMES, rows) is None  # no "sft exact" row
    assert counterpart("sft+g", NAMES, rows) is None
    sweep = {"sft": "sft", "cft": "cft-a0.2"}
    assert counterpart("cft-a0.2+g", sweep, ["sft+g", "cft-a0.2+g"]) == "sft+g"


def test_seeds_pool_the_pairs_cft_vs_sft_and_best_llm_row_vs_sasrec(tmp_path, monkeypatch):
    """Over seeds, cft+g is compared with sft+g (not only with sft) and the LLM row with the
    best mean NDCG@10 with SASRec, each per seed and pooled."""
    from cftrec.experiment import seeds

    rows = ["sasrec", "sft", "cft", "sft+g", "cft+g"]
    ndcg = {"sasrec": 0.04, "sft": 0.01, "cft": 0.02, "sft+g": 0.03, "cft+g": 0.05}

    def fake_experiment(settings, out):
        return {"reference": "sft", "timings_s": {},
                "metrics": {r: {"num_cases": 5, "metrics": {"ndcg@10": ndcg[r] + settings.seed / 1000}}
                            for r in rows}}  # fmt: skip

    def difference(a, b):
        return {"metrics": {"ndcg@10": {"diff": ndcg[b] - ndcg[a], "ci95": [0, 0], "p_value": 0.5}}}

    compared = []

    def fake_compare(results, a, b, force):
        compared.append((results.parent.name, a, b))
        return difference(a, b)

    pooled_files = []

    def fake_run_step(title, args, output=None, force=False, launcher=()):
        a, b = Path(args[args.index("-a") + 1]).name, Path(args[args.index("-b") + 1]).name
        output.write_text(json.dumps(difference(a, b)))
        pooled_files.append(output.name)

    monkeypatch.setattr(seeds, "run_experiment", fake_experiment)
    monkeypatch.setattr(seeds, "prepare_data", lambda settings, out, timings: tmp_path / "data")
    monkeypatch.setattr(seeds, "compare_step", fake_compare)
    monkeypatch.setattr(seeds, "run_step", fake_run_step)
    summary = seeds.run_seeds(settings(methods=("sasrec", "sft", "cft")), tmp_path / "w", [1, 2])
    assert set(summary["pairs"]) == {"cft+g vs sft+g", "cft+g vs sasrec"}
    pair = summary["pairs"]["cft+g vs sft+g"]
    assert pair["pooled"]["metrics"]["ndcg@10"]["diff"] == pytest.approx(0.02)
    assert [c for c in compared if c[1:] == ("sft+g", "cft+g")] == [
        ("seed-1", "sft+g", "cft+g"),
        ("seed-2", "sft+g", "cft+g"),
    ]
    assert "| cft+g - sft+g | ndcg@10 |" in seeds.seeds_table(summary)
    # a pooled comparison names its seeds: one over seed 1 alone is never taken for it
    assert "compare-sft+g-vs-cft+g-pooled-seeds-1-2.json" in pooled_files


def test_a_user_sample_and_the_history_excluded_protocol_reach_every_evaluation(tmp_path, commands):
    """Amazon Toys' protocol: the test rows score a seeded sample of users; with history
    excluded every test row ranks without the history's titles, in a folder of its own, so both
    protocols share the runs and the guidance choice without overwriting each other."""
    kept = settings(eval_sample=2000, eval_sample_seed=0)
    variant_rows(kept, tmp_path / "data", NAMES, tmp_path, {})
    assert not any("--exclude-history" in c for c in commands)
    assert {Path(c[-1]).parent for c in commands if "valid" not in c} == {tmp_path / "results"}

    commands.clear()
    chosen = settings(eval_sample=2000, eval_sample_seed=0, exclude_history=True)
    variant_rows(chosen, tmp_path / "data", NAMES, tmp_path, {})
    tests = [c for c in commands if "valid" not in c]
    selection = [c for c in commands if "valid" in c]
    assert tests and selection
    for command in tests:
        assert command[command.index("--sample") + 1] == "2000"
        assert command[command.index("--sample-seed") + 1] == "0"
        assert Path(command[-1]).parent == tmp_path / "results-history-excluded"
    for command in selection:  # its own validation sample, the history-kept protocol's choice
        assert command[command.index("--sample") + 1] == "30"
        assert Path(command[-1]).parent.parent == tmp_path / "guidance-selection"
        assert "--exclude-history" not in command
    assert all("--exclude-history" in c and "--resume" in c for c in tests)


def test_extra_decodings_for_the_guided_rows_only(tmp_path, commands):
    rows, _ = variant_rows(
        settings(extra_decodings_rows="guided"), tmp_path / "data", NAMES, tmp_path, {}
    )
    assert rows == [
        "sasrec-h10", "sft+g", "sft+g@50", "sft+g exact", "cft+g", "cft+g@50", "cft+g exact"
    ]  # fmt: skip


def test_no_window_control_when_sasrec_reads_the_llms_window(tmp_path, commands):
    write_runs(tmp_path, sasrec_window=10)
    rows, _ = variant_rows(settings(), tmp_path / "data", NAMES, tmp_path, {})
    assert not any(r.startswith("sasrec") for r in rows)


def test_best_llm_row_is_chosen_among_rows_that_decide_the_metric():
    """Under --exclude-history a beam list may lose titles and leave NDCG@10 undecided (None):
    such a row cannot be the best, and with no decided row there is no best to compare."""
    assert best_llm_row({"sft": None, "cft": 0.021, "sft+g": 0.034, "cft+g": None}) == "sft+g"
    assert best_llm_row({"sft": 0.02, "cft": 0.02}) == "sft"  # a tie: the first row
    assert best_llm_row({"sft": None, "cft": None}) is None
