"""A few seconds of benchmarks/soak.py: mixed recommend/add/remove traffic against a served
tiny LLM run, then kill -9 and restart: every acknowledged add present, every acknowledged
removal absent. (Memory growth is measured by the 20-minute run, not here.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from serving_fixtures import make_dataset, make_llm_run

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def test_a_short_soak_loses_no_acknowledged_change(tmp_path, tokenizer):
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    run = make_llm_run(tmp_path, make_dataset(tmp_path), tokenizer)
    summary = soak.soak(run, seconds=8, clients=3, warmup=0.1, work=tmp_path)
    assert summary["requests"]["add"] > 0 and summary["requests"]["recommend"] > 0
    assert summary["lost_adds"] == [] and summary["revived_removals"] == []
    assert summary["restarted_items"] == summary["items_on_disk"]
    assert summary["samples"] and all(s["fds"] > 0 for s in summary["samples"])
