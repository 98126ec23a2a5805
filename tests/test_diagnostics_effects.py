"""`cftrec diagnose`: per-position KL and causal effect, top-1 changes, outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cftrec.cli import main
from cftrec.data.dataset import Dataset
from cftrec.diagnostics import diagnose, history_effects, per_position
from cftrec.prompts import PromptEncoder
from cftrec.runs.llm import load_llm_run
from conftest import make_tiny_llama
from serving_fixtures import make_dataset, make_llm_run, make_pop_run


def _direct(model, encoder, history, target):
    """One case without batching or padding: full logits of each prompt + response."""
    response = encoder.response_ids(target)
    out = []
    for prompt in (encoder.factual_ids(history)[0], encoder.counterfactual_ids()):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
        out.append(logits[len(prompt) - 1 : -1].log_softmax(-1))  # [R, V] predicting response
    factual, counter = out
    p = factual.exp()
    kl = (p * (factual - counter)).sum(-1)
    target_ids = torch.tensor(response)
    effect = (
        factual[torch.arange(len(response)), target_ids]
        - counter[torch.arange(len(response)), target_ids]
    )
    return kl.tolist(), effect.tolist()


@pytest.mark.parametrize("style", ["remove", "placeholder"])
def test_batched_effects_match_direct_computation(tokenizer, style):
    model = make_tiny_llama(tokenizer, seed=5)
    encoder = PromptEncoder(tokenizer, counterfactual_style=style)
    cases = [
        (["Toy Story (1995)"], "Heat (1995)"),
        (["Heat (1995)", "Casino (1995)", "Babe (1995)"], "Fargo (1996)"),
        (["Scream (1996)", "Contact (1997)"], "The Shawshank Redemption (1994)"),
        (["Titanic (1997)"], "Se7en (1995)"),
        ([], "Heat (1995)"),  # empty history: factual == counterfactual for "remove"
    ]
    got = history_effects(model, encoder, cases, batch_size=3)
    assert len(got) == len(cases)
    for (history, target), (kl, effect) in zip(cases, got, strict=True):
        want_kl, want_effect = _direct(model, encoder, history, target)
        assert len(kl) == len(encoder.response_ids(target))
        assert kl == pytest.approx(want_kl, abs=2e-4)
        assert effect == pytest.approx(want_effect, abs=2e-4)
        assert min(kl) >= -1e-5  # a KL divergence is never negative
    if style == "remove":
        assert max(abs(x) for x in got[-1][0] + got[-1][1]) < 1e-4
    else:
        assert max(got[-1][0]) > 1e-4  # "Unknown" placeholder prompt differs from no input


def test_per_position_means_and_standard_errors():
    rows = per_position([[1.0, 2.0, 3.0], [3.0, 4.0], [5.0]])
    assert [r["n"] for r in rows] == [3, 2, 1]
    assert [r["mean"] for r in rows] == [3.0, 3.0, 3.0]
    assert rows[0]["se"] == pytest.approx(2.0 / math.sqrt(3))  # sample sd 2 over 3 cases
    assert rows[1]["se"] == pytest.approx(1.0)  # [2, 4]: sample sd sqrt(2) over 2 cases
    assert rows[2]["se"] == 0.0


def _top_title(model, encoder, titles, history_titles):
    prompt = encoder.factual_ids(history_titles)[0]
    best = None
    for title in titles:
        response = encoder.response_ids(title)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
        lp = logits[len(prompt) - 1 : -1].log_softmax(-1)
        score = lp[torch.arange(len(response)), torch.tensor(response)].sum().item()
        if best is None or score > best[0]:
            best = (score, title)
    return best[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("diagnose")
    data = make_dataset(root)
    return {
        "root": root,
        "data": data,
        "a": make_llm_run(root, data, tokenizer, seed=1, name="sft"),
        "b": make_llm_run(root, data, tokenizer, seed=2, name="cft"),
        "pop": make_pop_run(root, data),
    }


def test_diagnose_two_runs_matches_direct_top1_and_effects(runs):
    result = diagnose([runs["a"], runs["b"]], runs["data"], "test", limit=4, method="exhaustive")
    dataset = Dataset.load(runs["data"])
    samples = dataset.samples("test")[:4]
    catalog = dataset.catalog
    assert [r["run"] for r in result["runs"]] == [str(runs["a"]), str(runs["b"])]
    for entry, run_dir in zip(result["runs"], (runs["a"], runs["b"]), strict=True):
        run = load_llm_run(run_dir)
        assert entry["cases"] == 4
        cold = _top_title(run.model, run.encoder, catalog.titles, [])
        changed = [
            _top_title(run.model, run.encoder, catalog.titles, catalog.titles_for(s.history))
            != cold
            for s in samples
        ]
        assert entry["counterfactual_top1"] == cold
        assert entry["top1_changed"] == pytest.approx(sum(changed) / 4)
        direct = [
            _direct(run.model, run.encoder, catalog.titles_for(s.history), catalog.title(s.target))
            for s in samples
        ]
        first = entry["positions"][0]
        assert first["n"] == 4
        assert first["kl"] == pytest.approx(sum(kl[0] for kl, _ in direct) / 4, abs=1e-4)
        assert first["effect"] == pytest.approx(sum(e[0] for _, e in direct) / 4, abs=1e-4)
        tokens = sum(len(kl) for kl, _ in direct)
        assert entry["mean_kl"] == pytest.approx(
            sum(sum(kl) for kl, _ in direct) / tokens, abs=1e-4
        )


def test_diagnose_cli_writes_json_and_png(runs, capsys):
    out = runs["root"] / "diag"
    argv = ["diagnose", "--run", str(runs["a"]), "--compare-run", str(runs["b"]),
            "--data", str(runs["data"]), "--limit", "4", "--beams", "4", "-o", str(out)]  # fmt: skip
    main(argv)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps to the terminal width
    assert "top-1 changes without history" in printed and "diagnose.png" in printed
    saved = json.loads((out / "diagnose.json").read_text())
    assert len(saved["runs"]) == 2 and saved["runs"][0]["decoding"]["num_beams"] == 4
    assert (out / "diagnose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diagnose_rejects_non_llm_runs(runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", "--run", str(runs["pop"]), "--data", str(runs["data"]),
              "-o", str(runs["root"] / "never")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "needs an LLM run" in capsys.readouterr().err
    assert not (runs["root"] / "never").exists()
