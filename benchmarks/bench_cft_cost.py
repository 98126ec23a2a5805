"""CFT's extra training cost: time per training step of cft / sft, per counterfactual pass.

Methods, interleaved round by round so that machine noise hits all of them alike:
  sft              factual pass only (BIGRec)
  cft-padded       the reference implementation's cost: counterfactual padded to the factual
                   length, a second full pass
  cft-separate     counterfactual padded only to the longest counterfactual sequence
  cft-shared       shared prefix run once per batch, its KV cache reused (cftrec's default)
Each step = forward + backward + optimizer step on the same batches (MovieLens-100k train samples
with 10 history items). Reported: median seconds per step, ratio to sft, tokens/s (tokens the
model processes, padding excluded), memory (on CPU the bytes of activations saved for backward,
unique storages; on CUDA the peak allocated memory) and, on a GPU with a known bf16 peak, the
model FLOPs utilisation: achieved FLOP/s over the card's dense bf16 peak, with the usual count
of (6 N + 12 L d T) FLOPs per processed token for full fine-tuning (N parameters, L layers, width
d, mean sequence length T; Chowdhery et al. 2022, PaLM, appendix B) and 4 N + 12 L d T with LoRA
(no weight gradients for the frozen matrices).

    .venv/bin/python benchmarks/bench_cft_cost.py                      # CPU, SmolLM2-135M, LoRA
    .venv/bin/python benchmarks/bench_cft_cost.py --device cuda --batch-size 32 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from cftrec.data.dataset import Dataset
from cftrec.modeling import LoraSettings, load_model, load_tokenizer
from cftrec.prompts import PromptEncoder
from cftrec.training.collator import CFTCollator, encode_samples
from cftrec.training.trainer import CFTConfig, batch_loss, batch_tokens

METHODS = {  # name -> (method, counterfactual_pass)
    "sft": ("sft", "auto"),
    "cft-padded": ("cft", "padded"),
    "cft-separate": ("cft", "separate"),
    "cft-shared": ("cft", "shared_prefix"),
}


def movielens(data: str | None) -> Dataset:
    """A prepared MovieLens-100k: the given folder, or prepared from the cached RecBole files."""
    if data:
        return Dataset.load(data)
    from cftrec.assets import movielens_100k_cache
    from cftrec.data.prepare import prepare

    out = Path(tempfile.mkdtemp(prefix="bench-ml100k-")) / "ml100k"
    prepare("recbole", movielens_100k_cache(), out)
    return Dataset.load(out)


class SavedActivations:
    """Bytes of distinct tensor storages autograd keeps for backward during a forward pass."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def megabytes(self) -> float:
        return sum(self.storages.values()) / 2**20


# Dense bf16 peak TFLOP/s (no sparsity), by a substring of torch.cuda.get_device_name().
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


def bf16_peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def flops_per_token(model, mean_tokens: float, full: bool) -> float:
    """Training FLOPs per processed token: (6 or 4) N + 12 L d T (see the module docstring)."""
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    attention = 12 * config.num_hidden_layers * config.hidden_size * mean_tokens
    return (6 if full else 4) * parameters + attention


def train_step(model, optimizer, batch, args, measure_memory: bool) -> tuple[float, float]:
    """One optimizer step; returns (seconds, memory in MiB or nan)."""
    device_is_cuda = batch["input_ids"].is_cuda
    if device_is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if measure_memory and not device_is_cuda:
        with SavedActivations() as saved:
            loss = batch_loss(model, batch, args)
        memory = saved.megabytes
    else:
        loss = batch_loss(model, batch, args)
        memory = float("nan")
    loss.total.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device_is_cuda:
        torch.cuda.synchronize()
        memory = torch.cuda.max_memory_allocated() / 2**20
    return time.perf_counter() - start, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared MovieLens-100k (default: prepare from cache)")
    parser.add_argument("--model", default="bundled:smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (shared machine)")
    parser.add_argument("--out", default="benchmarks/results/training_cft_cost.json")
    parser.add_argument("--peak-tflops", type=float, help="bf16 peak of the card (MFU)")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    torch.manual_seed(0)

    dataset = movielens(options.data)
    tokenizer = load_tokenizer(options.model)
    encoder = PromptEncoder(tokenizer)
    samples = [s for s in dataset.samples("train", 10) if len(s.history) == 10]
    batches_needed = options.rounds + options.warmup
    samples = samples[:: max(1, len(samples) // (batches_needed * options.batch_size))]
    examples, _ = encode_samples(samples, dataset.catalog, encoder, progress=False)
    examples = examples[: batches_needed * options.batch_size]
    lora = None if options.full else LoraSettings(r=16, alpha=32, dropout=0.0)
    model = load_model(options.model, dtype=options.dtype, lora=lora).to(options.device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    prompt_tokens = statistics.mean(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    response_tokens = statistics.mean(len(e.response_ids) for e in examples)
    counterfactual_tokens = len(examples[0].counterfactual_ids) + response_tokens
    print(
        f"{len(examples)} examples: factual {prompt_tokens:.0f} tokens, counterfactual "
        f"{counterfactual_tokens:.0f}, response {response_tokens:.1f}; batch {options.batch_size}"
    )
    results = {name: {"seconds": [], "tokens": 0, "memory_mib": []} for name in METHODS}
    for round_index in range(batches_needed):
        chunk = examples[round_index * options.batch_size : (round_index + 1) * options.batch_size]
        for name, (method, counterfactual_pass) in METHODS.items():
            args = CFTConfig(
                output_dir=tempfile.gettempdir(),
                method=method,
                counterfactual_pass=counterfactual_pass,
                report_to=[],
            )
            collate = CFTCollator(tokenizer.pad_token_id, method == "cft", counterfactual_pass)
            batch = {k: v.to(options.device) for k, v in collate(chunk).items()}
            seconds, memory = train_step(model, optimizer, batch, args, round_index == 0)
            if round_index >= options.warmup:
                results[name]["seconds"].append(seconds)
                results[name]["tokens"] += batch_tokens(batch, method)
            if memory == memory:  # not nan
                results[name]["memory_mib"].append(memory)
        print(f"round {round_index + 1}/{batches_needed} done", flush=True)

    sft = statistics.median(results["sft"]["seconds"])
    peak = options.peak_tflops
    if peak is None and options.device.startswith("cuda"):
        peak = bf16_peak_tflops(torch.cuda.get_device_name())
    per_token = flops_per_token(model, prompt_tokens, options.full)
    table = []
    for name, result in results.items():
        median = statistics.median(result["seconds"])
        tokens_per_second = result["tokens"] / sum(result["seconds"])
        table.append(
            {
                "method": name,
                "seconds_per_step": round(median, 4),
                "ratio_to_sft": round(median / sft, 3),
                "tokens_per_second": round(tokens_per_second),
                "achieved_tflops": round(tokens_per_second * per_token / 1e12, 3),
                "mfu": round(tokens_per_second * per_token / (peak * 1e12), 4) if peak else None,
                "memory_mib": round(max(result["memory_mib"]), 1) if result["memory_mib"] else None,
            }
        )
    memory_kind = (
        "peak CUDA allocated" if options.device.startswith("cuda") else "saved activations"
    )
    print(
        f"\n| method | s/step | x sft | tokens/s | TFLOP/s | MFU | {memory_kind} MiB |\n"
        "|---|---|---|---|---|---|---|"
    )
    for row in table:
        print(
            f"| {row['method']} | {row['seconds_per_step']:.3f} | {row['ratio_to_sft']:.2f} | "
            f"{row['tokens_per_second']} | {row['achieved_tflops']} | {row['mfu']} | "
            f"{row['memory_mib']} |"
        )
    floor = 1 + response_tokens / prompt_tokens
    print(f"floor 1 + response/factual tokens = {floor:.3f}")
    if options.device.startswith("cuda"):
        machine = f"{torch.cuda.get_device_name()} GPU"
    else:
        machine = f"{os.cpu_count()}-core CPU, shared, {options.threads} torch thread(s)"
    report = {
        "benchmark": "cft_cost",
        "date": date.today().isoformat(),
        "machine": machine,
        "model": options.model,
        "lora": not options.full,
        "dtype": options.dtype,
        "batch_size": options.batch_size,
        "rounds": options.rounds,
        "factual_tokens": round(prompt_tokens, 1),
        "counterfactual_tokens": round(counterfactual_tokens, 1),
        "response_tokens": round(response_tokens, 1),
        "floor_ratio": round(floor, 3),
        "flops_per_token": round(per_token),
        "bf16_peak_tflops": peak,
        "memory": memory_kind,
        "results": table,
    }
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    Path(options.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
