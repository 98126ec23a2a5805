"""Real run directories for the recommend/serve/diagnose tests (not a test module itself):
a popularity run and a tiny random-Llama LLM run, both over the training tests' tiny dataset."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from conftest import make_tiny_llama
from training_fixtures import write_tiny_dataset


def make_dataset(root: Path) -> Path:
    return write_tiny_dataset(root / "data")


def make_pop_run(root: Path, data: Path) -> Path:
    from cftrec.baselines.popularity import train_popularity

    train_popularity(data, root / "pop")
    return root / "pop"


def make_llm_run(root: Path, data: Path, tokenizer, seed: int = 0, name: str = "llm") -> Path:
    """An "llm" run (full weights) as `cftrec train` writes it, with an untrained tiny model."""
    from cftrec.data.dataset import Dataset
    from cftrec.prompts import PromptEncoder
    from cftrec.runs.llm import save_llm_run

    info = {
        "method": "sft",
        "base_model": "tiny-llama",
        "dtype": "float32",
        "lora": None,
        "max_history": 10,
        "prompt": PromptEncoder(tokenizer).config(),
    }
    return save_llm_run(
        root / name,
        model=make_tiny_llama(tokenizer, seed=seed),
        tokenizer=tokenizer,
        info=info,
        dataset=Dataset.load(data),
        config={"method": "sft"},
        metrics=[],
    )


def brute_force_ranking(model, encoder, catalog, history_ids) -> list[tuple[str, float]]:
    """(title, log-likelihood) of every catalogue title, best first: one unpadded forward pass
    per title, independent of the decoders."""
    import torch

    prompt, _ = encoder.factual_ids(catalog.titles_for(history_ids))
    scores = {}
    with torch.no_grad():
        for title in catalog.titles:
            response = encoder.response_ids(title)
            ids = torch.tensor([prompt + response])
            log_probs = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
            scores[title] = log_probs.gather(-1, torch.tensor(response)[:, None]).sum().item()
    return sorted(scores.items(), key=lambda kv: -kv[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, what: str, timeout_s: float = 30) -> None:
    """Poll `condition()` until it holds. The timeout only turns a hang into a failure: nothing
    is asserted about how long it took."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@contextlib.contextmanager
def running_server(app, port: int | None = None):
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1; yields the base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
