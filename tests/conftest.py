"""Shared fixtures: the real SmolLM2 tokenizer (from the cached bundled model) and a tiny,
randomly initialised Llama so that model tests run in seconds on 2 CPU cores."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

# A background job of a non-interactive shell starts with SIGINT ignored, and the commands the
# tests start would inherit that (then Ctrl-C tests hang); give them a terminal's default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test when it is absent."""
    path = (SHARED_DATA / name).resolve()
    if not path.exists():
        pytest.skip(f"../shared/data/{name} not available")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from cftrec.modeling import load_tokenizer

    return load_tokenizer("bundled:smollm2-135m")


def make_tiny_llama(tokenizer, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


@pytest.fixture
def tiny_model(tokenizer):
    return make_tiny_llama(tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama saved with the real tokenizer: usable as `--model PATH` in CLI tests."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(tokenizer).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
