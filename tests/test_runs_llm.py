"""The LLM run directory: written atomically, reloaded with the same weights and encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cftrec.data.dataset import Dataset
from cftrec.errors import CftrecError
from cftrec.modeling import LoraSettings, add_lora
from cftrec.prompts import PromptEncoder
from cftrec.runs.llm import load_llm_run, read_metrics, save_llm_run
from conftest import make_tiny_llama
from training_fixtures import write_tiny_dataset


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


@pytest.mark.parametrize("lora", [False, True])
def test_save_then_load_gives_same_model_and_encoder(tmp_path, tokenizer, tiny_model_dir, lora):
    dataset = Dataset.load(write_tiny_dataset(tmp_path / "data"))
    model = make_tiny_llama(tokenizer, seed=3)
    info = {"method": "cft", "base_model": str(tiny_model_dir), "dtype": "float32", "lora": None}
    if lora:
        # The adapter is saved over the base model recorded in run.json (tiny_model_dir, seed 0).
        from transformers import AutoModelForCausalLM

        model = add_lora(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraSettings(r=4, dropout=0.0)
        )
        with torch.no_grad():  # LoRA B starts at zero; make the adapter matter
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
        info["lora"] = {"r": 4, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj"]}
    encoder = PromptEncoder(tokenizer, counterfactual_style="placeholder", max_prompt_tokens=99)
    info["prompt"] = encoder.config()
    metrics = [{"step": 1, "loss": 2.0, "rec": 1.5, "cf": 5.0}]
    run = save_llm_run(
        tmp_path / "run",
        model=model,
        tokenizer=tokenizer,
        info=info,
        dataset=dataset,
        config={"method": "cft"},
        metrics=metrics,
    )
    expected_dir = "adapter" if lora else "model"
    assert (run / expected_dir).is_dir() and not (run / ("model" if lora else "adapter")).exists()
    assert list((run / expected_dir).glob("*.safetensors"))
    assert {"run.json", "items.parquet", "config.yaml", "tokenizer", "metrics.jsonl"} <= {
        p.name for p in run.iterdir()
    }
    assert read_metrics(run) == metrics

    loaded = load_llm_run(run)
    assert not loaded.model.training
    assert loaded.info["data_fingerprint"] == dataset.fingerprint
    assert loaded.encoder.config() == encoder.config()
    ids = encoder.factual_ids(["Heat (1995)"])[0] + encoder.response_ids("Fargo (1996)")
    model.eval()
    # merging LoRA into the weights changes float rounding only
    torch.testing.assert_close(
        _logits(loaded.model, ids), _logits(model, ids), atol=1e-4, rtol=1e-4
    )
    if lora:  # merged by default; kept as a PeftModel on request
        assert not hasattr(loaded.model, "peft_config")
        assert hasattr(load_llm_run(run, merge_lora=False).model, "peft_config")


def _rejected(run, message: str) -> None:
    """load_llm_run(run) fails with exactly `message` (a one-line CftrecError)."""
    with pytest.raises(CftrecError) as error:
        load_llm_run(run)
    assert str(error.value) == message


def test_load_rejects_non_llm_and_incomplete_runs(tmp_path, tokenizer):
    from cftrec.baselines.popularity import train_popularity
    from cftrec.baselines.sasrec import SASRecConfig, train_sasrec

    _rejected(tmp_path, f"{tmp_path}: not a cftrec run directory (missing run.json)")
    # the other run kinds: complete runs, refused by kind
    data = write_tiny_dataset(tmp_path / "data")
    train_popularity(data, tmp_path / "pop")
    _rejected(tmp_path / "pop", f"{tmp_path / 'pop'}: a 'pop' run, not an LLM run")
    config = SASRecConfig(hidden_size=16, num_blocks=1, max_length=8, epochs=1, batch_size=8)
    train_sasrec(data, tmp_path / "sasrec", config, device="cpu")
    _rejected(tmp_path / "sasrec", f"{tmp_path / 'sasrec'}: a 'sasrec' run, not an LLM run")

    # LLM runs with a part missing: a complete one (loads), then copies with one part taken out
    info = {"method": "sft", "base_model": "tiny", "dtype": "float32", "lora": None,
            "prompt": PromptEncoder(tokenizer).config()}  # fmt: skip
    complete = save_llm_run(
        tmp_path / "complete", model=make_tiny_llama(tokenizer), tokenizer=tokenizer, info=info,
        dataset=Dataset.load(data), config={}, metrics=[],
    )  # fmt: skip
    assert load_llm_run(complete).info["kind"] == "llm"

    def broken(name: str) -> Path:
        return Path(shutil.copytree(complete, tmp_path / name))

    run = broken("no-weights")
    shutil.rmtree(run / "model")
    _rejected(run, f"{run / 'model'}: missing model weights (config.json)")

    run = broken("no-adapter")  # run.json says LoRA; adapter/ was never written
    stored = json.loads((run / "run.json").read_text())
    stored["lora"] = {"r": 4}
    (run / "run.json").write_text(json.dumps(stored))
    _rejected(run, f"{run / 'adapter'}: missing LoRA adapter (adapter_config.json)")

    run = broken("no-prompt")
    stored = json.loads((run / "run.json").read_text())
    del stored["prompt"]
    (run / "run.json").write_text(json.dumps(stored))
    _rejected(run, f"{run / 'run.json'}: missing key(s) prompt")

    run = broken("no-tokenizer")
    shutil.rmtree(run / "tokenizer")
    with pytest.raises(CftrecError, match=r"^cannot load tokenizer '.*no-tokenizer/tokenizer': "):
        load_llm_run(run)
