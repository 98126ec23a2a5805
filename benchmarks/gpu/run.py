"""The accuracy claim on one lent GPU, in two calls (the machine stays warm 30 s between them).

    call 1  python benchmarks/gpu/run.py smoke --stash /root/stash --out $OUT
            CUDA smoke test of `cftrec train` (cft, 60 steps, bf16, batch 64, full fine-tuning)
            and `cftrec evaluate` (128 users, 10 beams) with a randomly initialised model of
            SmolLM2-135M's exact shape and the real tokenizer; bench_cft_cost.py on the GPU;
            measured step, encoding and decoding times -> sizing.json (in $OUT and the stash).
    call 2  python benchmarks/gpu/run.py main --stash /root/stash --out $OUT --budget-s 540
            joins the bundled GGUF's two halves, checks its sha256, converts it, sizes the
            training from call 1's measurements so that the call ends with `--spare-s` to spare,
            trains sft and cft (same seed, same samples) side by side on the one GPU, evaluates
            both on the same test users (10-beam constrained decoding; optionally D3 guidance by
            a carried SASRec run, its scale chosen on validation users) and compares them.
    report  python benchmarks/gpu/run.py report --out DIR --name accuracy-gpu
            (here, on the fetched files) -> benchmarks/results/NAME.{json,md}, with the CPU
            baselines evaluated on the same users beside the LLM rows.

Every finished step writes its result under --out at once (progress.json lists the steps), so a
call stopped at its limit still returns what it finished. The two shell wrappers call1.sh and
call2.sh put the carried files in place; README.md (this folder) is the whole procedure.
The same path runs at tiny size on a CPU (`--tiny`): that is how it is tested.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ASSISTANT = "assistant"  # a carried SASRec run on the same data, for D3 guidance
METHODS = ("sft", "cft")


# ---------------------------------------------------------------- sizing (pure, unit-tested)


@dataclass(frozen=True)
class Measurements:
    """What call 1 measured, per method, on the GPU (seconds)."""

    train_s_per_sample: dict[str, float]  # training loop only, per train sample
    encode_s_per_sample: float  # tokenising one train sample (CPU, in the training process)
    train_fixed_s: float  # process start, model load, validation: a training's wall - loop
    eval_s_per_case: float  # constrained beam search, per test case
    eval_fixed_s: float  # process start, model load, trie: an evaluation's wall - loop


@dataclass(frozen=True)
class Plan:
    train_samples: int
    expected_train_s: float
    expected_eval_s: float
    left_s: float  # budget - spare - spent - expected work: what the plan keeps unused


def plan_training(
    m: Measurements,
    budget_s: float,
    spent_s: float,
    spare_s: float,
    eval_cases: int,
    available_samples: int,
    min_samples: int = 64,
) -> Plan:
    """How many train samples fit so that both trainings and all evaluations end with `spare_s`.

    Conservative on purpose: the two trainings (and the evaluations) run side by side on the one
    GPU, but are sized as if they ran one after the other, so contention can only end the call
    earlier, never past its limit.
    """
    eval_s = eval_cases * m.eval_s_per_case + len(METHODS) * m.eval_fixed_s
    fixed_s = len(METHODS) * m.train_fixed_s
    per_sample = sum(m.train_s_per_sample[method] for method in METHODS)
    per_sample += len(METHODS) * m.encode_s_per_sample
    room = budget_s - spare_s - spent_s - eval_s - fixed_s
    samples = min(available_samples, int(room / per_sample)) if room > 0 else 0
    if samples < min_samples:
        raise SystemExit(
            f"the budget leaves room for {samples} train samples (< {min_samples}): "
            f"budget {budget_s:.0f} s, spent {spent_s:.0f} s, evaluation {eval_s:.0f} s"
        )
    train_s = fixed_s + samples * per_sample
    return Plan(samples, round(train_s, 1), round(eval_s, 1), round(room - train_s + fixed_s, 1))


# ---------------------------------------------------------------- running steps


class Progress:
    """progress.json under --out: every finished step, written at once."""

    def __init__(self, out: Path, phase: str):
        self.out = out
        self.path = out / f"progress-{phase}.json"
        self.started = time.monotonic()
        self.steps: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def done(self, step: str, **facts) -> None:
        self.steps.append({"step": step, "at_s": round(self.elapsed(), 1), **facts})
        self.path.write_text(json.dumps(self.steps, indent=2) + "\n")
        print(f"[{self.elapsed():6.1f} s] {step}: {json.dumps(facts)[:300]}", flush=True)


def cftrec_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "cftrec", *map(str, args)]


def start(args: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    return subprocess.Popen(cftrec_command(args), stdout=handle, stderr=subprocess.STDOUT)


def finish(processes: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    """Wait for every process; a failure stops the call with the log's tail."""
    for name, process in processes.items():
        if process.wait() != 0:
            tail = logs[name].read_text()[-3000:]
            raise SystemExit(f"{name} failed (exit {process.returncode}):\n{tail}")


def run_side_by_side(commands: dict[str, list[str]], logs_dir: Path) -> dict[str, float]:
    """Run cftrec commands at once (one GPU, small models); -> wall seconds of the whole group."""
    began = time.monotonic()
    logs = {name: logs_dir / f"{name}.log" for name in commands}
    processes = {name: start(args, logs[name]) for name, args in commands.items()}
    finish(processes, logs)
    return {"wall_s": round(time.monotonic() - began, 1)}


def timed_cftrec(args: list[str], log: Path) -> float:
    began = time.monotonic()
    finish({log.stem: start(args, log)}, {log.stem: log})
    return time.monotonic() - began


def environment() -> dict:
    import torch
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "device": device or f"{platform.machine()} CPU, {os.cpu_count()} cores (no GPU)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
    }


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return result.stdout.strip() or os.environ.get("CFTREC_COMMIT", "unknown")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------- the two scales


@dataclass(frozen=True)
class Scale:
    """Sizes of the smoke test and the evaluation; `tiny` is the CPU dry run of the same path."""

    smoke_steps: int = 60
    batch_size: int = 64
    smoke_eval_cases: int = 128
    beams: int = 10
    eval_batch_size: int = 64
    dtype: str = "bfloat16"
    bench_rounds: int = 20
    shape: dict | None = None  # model config overrides (tiny only)


GPU = Scale()
TINY = Scale(
    smoke_steps=3,
    batch_size=4,
    smoke_eval_cases=6,
    beams=3,
    eval_batch_size=6,
    dtype="float32",
    bench_rounds=2,
    shape={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
)


def random_model(stash: Path, scale: Scale) -> Path:
    """A randomly initialised model of the carried shape (config.json + tokenizer files)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = stash / "random-model"
    if (target / "model.safetensors").exists():
        return target
    config = AutoConfig.from_pretrained(stash / "shape")
    for key, value in (scale.shape or {}).items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(stash / "shape").save_pretrained(target)
    return target


def training_args(data: Path, model: str, method: str, scale: Scale, out: Path) -> list:
    """The paper's setting: full fine-tuning, lr 1e-4, alpha 0.1, beta 0.25, one seed."""
    return [
        "train", "--data", data, "--model", model, "--method", method, "--full",
        "--dtype", scale.dtype, "--learning-rate", "1e-4", "--alpha", "0.1", "--beta", "0.25",
        "--batch-size", scale.batch_size, "--seed", "42", "-o", out, "--json",
    ]  # fmt: skip


def evaluation_args(run: Path, data: Path, scale: Scale, out: Path, cases: int | None) -> list:
    args = ["evaluate", "--run", run, "--data", data, "--beams", scale.beams, "--decoding", "beam"]
    args += ["--batch-size", scale.eval_batch_size, "-o", out, "--json"]
    return args + (["--sample", cases] if cases else [])


def read_summary(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["summary"]


def measure_encoding(data: Path, model: Path, samples: int = 2000) -> float:
    """Seconds to tokenise one train sample, as the training process does."""
    from cftrec.data.dataset import Dataset
    from cftrec.modeling import load_tokenizer
    from cftrec.prompts import PromptEncoder
    from cftrec.training.collator import encode_samples

    dataset = Dataset.load(data)
    chosen = list(dataset.samples("train", 10))[:samples]
    encoder = PromptEncoder(load_tokenizer(str(model)))
    began = time.perf_counter()
    encode_samples(chosen, dataset.catalog, encoder, progress=False)
    return (time.perf_counter() - began) / len(chosen)


def smoke(args, scale: Scale) -> None:
    stash, out = Path(args.stash), Path(args.out)
    progress = Progress(out, "smoke")
    env = environment()
    write_json(out / "environment.json", env)
    progress.done("environment", **env)
    data = stash / args.data
    model = random_model(stash, scale)
    progress.done("random model", path=str(model))

    run = stash / "smoke-cft"
    args_train = training_args(data, model, "cft", scale, run)
    args_train += ["--max-steps", scale.smoke_steps, "--max-eval-samples", 64]
    args_train += ["--max-train-samples", scale.smoke_steps * scale.batch_size]
    wall = timed_cftrec(args_train, out / "logs" / "smoke-train.log")
    summary = read_summary(run)
    write_json(out / "smoke-train.json", {"wall_s": round(wall, 1), **summary})
    progress.done("smoke train", wall_s=round(wall, 1), seconds=summary["seconds"])

    evaluated = stash / "smoke-eval"
    eval_args = evaluation_args(run, data, scale, evaluated, None)
    eval_args += ["--limit", scale.smoke_eval_cases]
    eval_wall = timed_cftrec(eval_args, out / "logs" / "smoke-eval.log")
    results = json.loads((evaluated / "results.json").read_text())
    write_json(out / "smoke-eval.json", {"wall_s": round(eval_wall, 1), **results})
    progress.done("smoke evaluate", wall_s=round(eval_wall, 1), elapsed_s=results["elapsed_s"])

    bench = out / "training_cft_cost_gpu.json"
    bench_args = [sys.executable, ROOT / "benchmarks" / "bench_cft_cost.py", "--data", data]
    bench_args += ["--model", model, "--dtype", scale.dtype, "--full", "--out", bench]
    bench_args += ["--batch-size", scale.batch_size, "--rounds", scale.bench_rounds]
    bench_args += ["--warmup", 2, "--device", "cuda" if _cuda() else "cpu"]
    with (out / "logs" / "bench-cft-cost.log").open("w") as log:
        subprocess.run(list(map(str, bench_args)), check=True, stdout=log, stderr=log)
    costs = {row["method"]: row for row in json.loads(bench.read_text())["results"]}
    progress.done("bench cft cost", ratio=costs["cft-shared"]["ratio_to_sft"])

    encode = measure_encoding(data, model)
    samples = summary["steps"] * scale.batch_size
    cft_per_sample = summary["seconds"] / samples
    # sft's loop cost per sample: cft's, scaled by the benchmark's sft / cft-shared step times.
    sft_per_sample = cft_per_sample / costs["cft-shared"]["ratio_to_sft"]
    measured = Measurements(
        train_s_per_sample={"sft": sft_per_sample, "cft": cft_per_sample},
        encode_s_per_sample=encode,
        train_fixed_s=max(0.0, wall - summary["seconds"] - encode * samples),
        eval_s_per_case=results["elapsed_s"] / results["num_cases"],
        eval_fixed_s=max(0.0, eval_wall - results["elapsed_s"]),
    )
    sizing = {**asdict(measured), "scale": asdict(scale), "device": env["device"]}
    write_json(out / "sizing.json", sizing)
    write_json(stash / "sizing.json", sizing)
    progress.done("sizing", **asdict(measured))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- call 2


def join_gguf(stash: Path) -> Path:
    """Join gguf.part-* (in name order) once and check the carried sha256."""
    target = stash / GGUF_NAME
    expected = (stash / "gguf.sha256").read_text().split()[0]
    if not target.exists():
        parts = sorted(stash.glob("gguf.part-*"))
        if len(parts) < 2:
            raise SystemExit(f"{stash}: expected two gguf.part-* halves, found {len(parts)}")
        partial = target.with_suffix(".joining")
        with partial.open("wb") as joined:
            for part in parts:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, joined)
        os.replace(partial, target)
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        target.unlink()
        raise SystemExit(f"{target}: sha256 {digest.hexdigest()} != carried {expected}")
    return target


def selection_score(results: dict) -> float:
    """NDCG@10, or at the largest cutoff the lists decide when they hold fewer than 10 titles."""
    cutoffs = [int(key.split("@")[1]) for key in results["metrics"] if key.startswith("ndcg@")]
    return results["metrics"][f"ndcg@{max(k for k in cutoffs if k <= 10)}"]


def evaluate_side_by_side(rows: dict, data, scale, split, cases, stash, out) -> dict[str, dict]:
    """rows: name -> (run, guidance scale or None). Every row on the same seeded cases."""
    commands, outputs = {}, {}
    for name, (run, guidance) in rows.items():
        outputs[name] = stash / "eval" / name
        commands[name] = evaluation_args(run, data, scale, outputs[name], cases)
        commands[name] += ["--split", split]
        if guidance is not None:
            commands[name] += ["--assistant", stash / ASSISTANT, "--guidance-scale", guidance]
    run_side_by_side(commands, out / "logs")
    for name, folder in outputs.items():
        copy_evaluation(folder, out / "eval" / name)
    return {name: json.loads((outputs[name] / "results.json").read_text()) for name in rows}


def main_call(args, scale: Scale) -> None:
    stash, out = Path(args.stash), Path(args.out)
    progress = Progress(out, "main")
    env = environment()
    write_json(out / "environment.json", env)
    sizing = json.loads((stash / "sizing.json").read_text())
    measured = Measurements(**{k: sizing[k] for k in Measurements.__dataclass_fields__})
    data = stash / args.data

    gguf = join_gguf(stash)
    progress.done("gguf joined and checked", path=str(gguf))
    if args.model:  # the CPU dry run: a tiny model instead of converting the real one
        model = args.model
    else:
        os.environ["CFTREC_GGUF"] = str(gguf)
        began = time.monotonic()
        from cftrec.modeling import resolve_model_path

        model = resolve_model_path("bundled:smollm2-135m")
        progress.done("converted", seconds=round(time.monotonic() - began, 1), path=model)

    from cftrec.data.dataset import Dataset

    dataset = Dataset.load(data)
    available = sum(1 for _ in dataset.samples("train", 10))
    test_users = args.eval_users or sum(1 for _ in dataset.samples("test", 10))
    guided = (stash / ASSISTANT).exists() and bool(args.guidance_grid)
    eval_cases = len(METHODS) * test_users * (2 if guided else 1)
    eval_cases += len(METHODS) * len(args.guidance_grid) * args.valid_users if guided else 0
    plan = plan_training(
        measured, args.budget_s, progress.elapsed(), args.spare_s, eval_cases, available
    )
    write_json(out / "plan.json", {**asdict(plan), "available_samples": available})
    progress.done("plan", **asdict(plan))

    runs = {method: stash / "runs" / method for method in METHODS}
    commands = {}
    for method in METHODS:
        commands[f"train-{method}"] = training_args(data, model, method, scale, runs[method])
        commands[f"train-{method}"] += ["--max-train-samples", plan.train_samples, "--epochs", 1]
    timing = run_side_by_side(commands, out / "logs")
    for method in METHODS:
        write_json(out / f"train-{method}.json", read_summary(runs[method]))
    progress.done("trained", **timing, samples=plan.train_samples)

    rows = {method: (runs[method], None) for method in METHODS}
    if guided:  # D3 guidance: the scale per method is chosen on validation users, never test users
        grid = {f"valid-{m}-g{g}": (runs[m], g) for m in METHODS for g in args.guidance_grid}
        valid = evaluate_side_by_side(grid, data, scale, "valid", args.valid_users, stash, out)
        for method in METHODS:
            scores = {g: selection_score(valid[f"valid-{method}-g{g}"]) for g in args.guidance_grid}
            chosen = max(scores, key=scores.get)
            rows[f"{method}-guided"] = (runs[method], chosen)
            progress.done(f"guidance {method}", valid_ndcg10=scores, chosen=chosen)
    began = time.monotonic()
    evaluate_side_by_side(rows, data, scale, "test", args.eval_users, stash, out)
    wall = round(time.monotonic() - began, 1)
    progress.done("evaluated", wall_s=wall, rows=list(rows), cases=test_users)

    outputs = {name: stash / "eval" / name for name in rows}
    pairs = [("sft", "cft")] + ([(m, f"{m}-guided") for m in METHODS] if guided else [])
    for a, b in pairs:
        target = out / f"compare-{b}-vs-{a}.json"
        command = ["compare", outputs[a], outputs[b], "-o", target, "--json"]
        timed_cftrec(command, out / "logs" / f"compare-{b}-vs-{a}.log")
        progress.done(f"compared {b} vs {a}", path=str(target.name))


def copy_evaluation(folder: Path, target: Path) -> None:
    """results.json and cases.jsonl come back in $OUT (both small)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "cases.jsonl", "results.md"):
        if (folder / name).exists():
            shutil.copyfile(folder / name, target / name)


# ---------------------------------------------------------------- report (here, on fetched files)


def report(args) -> None:
    """accuracy-gpu*.{json,md} from a finished call 2's $OUT and the CPU baselines."""
    sys.path.insert(0, str(ROOT / "src"))
    from cftrec.evaluation.report import read_results
    from cftrec.evaluation.significance import compare_results

    out = Path(args.out)
    rows = {}  # name -> (results, cases)
    for folder in sorted((out / "eval").iterdir()):
        if not folder.name.startswith("valid-"):
            rows[folder.name] = read_results(folder)
    for folder in args.baselines:
        results, cases = read_results(folder)
        rows[Path(folder).name] = (results, cases)
    llm = [name for name in rows if name.split("-")[0] in METHODS]
    best = max(llm, key=lambda name: selection_score(rows[name][0]))
    comparisons = {
        path.stem.removeprefix("compare-"): json.loads(path.read_text())
        for path in sorted(out.glob("compare-*.json"))
    }
    for baseline in (Path(folder).name for folder in args.baselines):
        a, b = rows[baseline], rows[best]
        comparisons[f"{best}-vs-{baseline}"] = compare_results(a[0], a[1], b[0], b[1])
    payload = {
        "environment": json.loads((out / "environment.json").read_text()),
        "sizing": json.loads((out / "sizing.json").read_text())
        if (out / "sizing.json").exists()
        else None,
        "plan": json.loads((out / "plan.json").read_text()),
        "training": {m: json.loads((out / f"train-{m}.json").read_text()) for m in METHODS},
        "metrics": {name: rows[name][0]["metrics"] for name in rows},
        "settings": {name: rows[name][0].get("settings") for name in rows},
        "num_cases": {name: rows[name][0]["num_cases"] for name in rows},
        "comparisons": comparisons,
        "progress": json.loads((out / "progress-main.json").read_text()),
    }
    results_dir = Path(args.results_dir)
    write_json(results_dir / f"{args.name}.json", payload)
    (results_dir / f"{args.name}.md").write_text(report_markdown(args.name, payload))
    print(f"wrote {results_dir / args.name}.json and .md")


def report_markdown(name: str, payload: dict) -> str:
    env, plan = payload["environment"], payload["plan"]
    lines = [
        f"# {name}",
        "",
        f"- device: {env['device']}; torch {env['torch']}, transformers {env['transformers']}",
        f"- date: {env['date']}, commit {env['commit']}",
        f"- training: {plan['train_samples']} of {plan['available_samples']} train samples, "
        "one epoch, full fine-tuning, bf16, lr 1e-4, seed 42; cft alpha 0.1, beta 0.25",
    ]
    for method, summary in payload["training"].items():
        lines.append(
            f"- {method}: {summary['steps']} steps, {summary['tokens_per_second']} tokens/s, "
            f"{summary['seconds']} s, last loss {summary['last_loss']}"
        )
    cutoffs = ("ndcg@5", "ndcg@10", "hr@5", "hr@10")
    lines += ["", "| row | cases | " + " | ".join(cutoffs) + " |", "|---" * 6 + "|"]
    for row, metrics in payload["metrics"].items():
        values = " | ".join(f"{metrics[k]:.4f}" if k in metrics else "n/a" for k in cutoffs)
        lines.append(f"| {row} | {payload['num_cases'][row]} | {values} |")
    lines += ["", "| comparison (B - A) | metric | diff | 95% CI | p |", "|---|---|---|---|---|"]
    for pair, comparison in payload["comparisons"].items():
        for metric in ("ndcg@10", "hr@10"):
            if metric in comparison["metrics"]:
                row = comparison["metrics"][metric]
                low, high = row["ci95"]
                lines.append(
                    f"| {pair} | {metric} | {row['diff']:+.4f} | [{low:+.4f}, {high:+.4f}] | "
                    f"{row['p_value']:.4f} |"
                )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    for phase in ("smoke", "main"):
        p = sub.add_parser(phase)
        p.add_argument("--stash", required=True, help="the carried files, moved out of the repo")
        p.add_argument("--out", required=True, help="results ($OUT on the device machine)")
        p.add_argument("--data", default="ml100k", help="a prepared dataset folder in the stash")
        p.add_argument("--tiny", action="store_true", help="CPU dry run at tiny size")
    main_parser = sub.choices["main"]
    main_parser.add_argument("--budget-s", type=float, default=540, help="this call's limit")
    main_parser.add_argument("--spare-s", type=float, default=120, help="left unused at the end")
    main_parser.add_argument("--model", default=None, help="instead of the carried GGUF")
    main_parser.add_argument("--eval-users", type=int, default=None, help="seeded test sample")
    main_parser.add_argument("--valid-users", type=int, default=200, help="for the guidance")
    main_parser.add_argument("--guidance-grid", type=float, nargs="*", default=[0.5, 0.75])
    report_parser = sub.add_parser("report")
    report_parser.add_argument("--out", required=True, help="a fetched $OUT of call 2")
    report_parser.add_argument("--name", default="accuracy-gpu", help="results file name")
    report_parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    report_parser.add_argument(
        "--baselines", nargs="*", default=[], help="evaluation outputs of pop/SASRec, same users"
    )
    args = parser.parse_args()
    if args.phase == "report":
        return report(args)
    sys.path.insert(0, str(ROOT / "src"))
    scale = TINY if args.tiny else GPU
    (smoke if args.phase == "smoke" else main_call)(args, scale)


if __name__ == "__main__":
    main()
