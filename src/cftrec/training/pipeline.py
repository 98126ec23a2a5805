"""`cftrec train` as a library call: settings (YAML preset + overrides) -> a run directory.

settings = load_settings("configs/cft.yaml", {"data": "data/ml100k", "epochs": 1})
summary = train(settings, "runs/cft")

Experiment trackers (`report_to`: tensorboard, wandb, mlflow) get every logged line: train/loss,
train/rec, train/cf (the CFT loss terms), eval/loss. They write into RUN/checkpoints/logs while
training (kept with the checkpoints for --resume) and end up in RUN/logs: tensorboard/ (event
files), wandb/ (an offline run unless WANDB_MODE says otherwise; `wandb sync` uploads it),
mlruns/ (an MLflow file store). An environment variable the user set (TENSORBOARD_LOGGING_DIR,
WANDB_DIR, WANDB_MODE, WANDB_PROJECT, MLFLOW_TRACKING_URI, MLFLOW_ALLOW_FILE_STORE) wins over
these defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

from ..errors import CftrecError
from ..files import (
    TMP_SUFFIX,
    DiskFull,
    check_output,
    format_bytes,
    is_disk_full,
    mark_output,
    tree_size,
)
from ..runs.llm import CHECKPOINTS_DIR, TRAIN_COMMAND
from ..threads import use_threads
from .settings import TrainSettings, load_settings

# the library call of `cftrec train` (TrainSettings and load_settings live in .settings)
__all__ = ["TrainSettings", "load_settings", "resume_settings", "train"]

SETTINGS_FILE = "settings.yaml"  # inside RUN/checkpoints: what --resume continues with
LOGS_DIR = "logs"  # the trackers' files: RUN/checkpoints/logs while training, then RUN/logs


def _subset(samples: list, limit: int | None, seed: int) -> list:
    """A seeded random subset (the whole list when `limit` is None or large enough)."""
    if limit is None or limit >= len(samples):
        return samples
    return random.Random(seed).sample(samples, limit)


def _stored_base_model(spec: str) -> str:
    """A local path is stored absolute so the run loads from anywhere."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def train(
    settings: TrainSettings,
    output: str | Path,
    resume: bool = False,
    log=print,
    overwrite: bool = False,
) -> dict:
    """Train and write the run directory `output`; returns the summary (also in run.json).
    `overwrite`: see cftrec.io.check_output (a previous or interrupted train run in `output`
    is replaced, or continued with `resume`, without it)."""
    import torch
    import yaml
    from transformers import EarlyStoppingCallback, set_seed

    from ..compat import checkpointing_kwargs
    from ..data.dataset import Dataset
    from ..modeling import LoraSettings, load_model, load_tokenizer
    from ..prompts import PromptEncoder
    from ..runs.llm import save_llm_run
    from .collator import CFTCollator, encode_samples
    from .trainer import CFTConfig, CFTTrainer

    # Library log levels are left to the caller: the CLI keeps transformers quiet unless
    # --debug (its load-time notices, e.g. "layers were not sharded", concern tensor
    # parallelism, which cftrec does not use).
    settings.validate()
    trackers = requested_trackers(settings.report_to)
    model_path = settings.model if Path(settings.model).exists() else None
    output = Path(output)
    check_output(output, TRAIN_COMMAND, (settings.data, model_path), overwrite)
    use_threads(settings.threads)
    checkpoints = output / CHECKPOINTS_DIR
    dataset = Dataset.load(settings.data)
    set_seed(settings.seed)  # before the model: LoRA initialisation is random
    tokenizer = load_tokenizer(settings.model)
    lora = None
    if settings.lora:
        lora = LoraSettings(
            settings.lora_r,
            settings.lora_alpha,
            settings.lora_dropout,
            settings.lora_target_modules,
        )
    model = load_model(settings.model, dtype=settings.dtype, lora=lora)
    encoder = PromptEncoder(
        tokenizer, settings.template, settings.counterfactual_style, settings.max_prompt_tokens
    )
    catalog = dataset.catalog
    train_samples = _subset(
        dataset.samples("train", settings.max_history), settings.max_train_samples, settings.seed
    )
    if not train_samples:
        raise CftrecError(f"{settings.data}: no training samples")
    eval_samples = _subset(
        dataset.samples("valid", settings.max_history),
        settings.validation_size(len(train_samples)),
        settings.seed,
    )
    train_examples, truncated = encode_samples(train_samples, catalog, encoder)
    eval_examples, _ = encode_samples(eval_samples, catalog, encoder)

    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    steps_per_epoch = math.ceil(
        len(train_examples) / (settings.batch_size * settings.gradient_accumulation_steps * world)
    )
    eval_steps = settings.eval_steps or max(1, min(50, steps_per_epoch))
    has_eval = bool(eval_examples)
    args = CFTConfig(
        output_dir=str(checkpoints),
        method=settings.method,
        alpha=settings.alpha,
        beta=settings.beta,
        weighting=settings.resolved_weighting(),
        weight_rec_loss=settings.weight_rec_loss,
        counterfactual_style=settings.counterfactual_style,
        counterfactual_pass=settings.counterfactual_pass,
        template=settings.template,
        max_history=settings.max_history,
        max_prompt_tokens=settings.max_prompt_tokens,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size or settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        **checkpointing_kwargs(settings.gradient_checkpointing),
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,  # with load_best_model_at_end: the best and the latest
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=settings.logging_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=settings.dtype == "bfloat16",
        report_to=trackers,
        run_name=output.name,  # the trackers' name of the run
        save_only_model=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # several processes without a GPU: DDP over gloo (accelerate's default state would
        # start the process group but leave DDP off)
        use_cpu=world > 1 and not torch.cuda.is_available(),
    )
    # the tracker callbacks read their environment when built and when training begins
    with tracker_environment(trackers, checkpoints / LOGS_DIR), resumable_on_disk_full(checkpoints):
        trainer = CFTTrainer(
            model=model,
            args=args,
            train_dataset=train_examples,
            eval_dataset=eval_examples or None,
            processing_class=tokenizer,
            data_collator=CFTCollator(
                tokenizer.pad_token_id, settings.method == "cft", settings.counterfactual_pass
            ),
            callbacks=[_log_boundaries()]
            + ([EarlyStoppingCallback(settings.patience)] if has_eval else []),
        )
        main_process = trainer.is_world_process_zero()
        last_checkpoint = _last_checkpoint(checkpoints) if resume else None
        if main_process:
            if resume and last_checkpoint is None:
                log(f"no checkpoint in {checkpoints}: starting from scratch")
            mark_output(output, TRAIN_COMMAND)  # resumable: recognisably this command's folder
            if not resume and checkpoints.exists():
                shutil.rmtree(checkpoints)  # a fresh run does not continue an old one
            checkpoints.mkdir(parents=True, exist_ok=True)
            if trackers:
                (checkpoints / LOGS_DIR).mkdir(exist_ok=True)  # W&B needs it to exist
            (checkpoints / SETTINGS_FILE).write_text(yaml.safe_dump(settings.to_dict()))
        (log if main_process else _quiet)(
            f"training {settings.method} on {len(train_examples)} samples "
            f"({len(eval_examples)} validation, {truncated} prompts truncated), "
            f"{steps_per_epoch} steps per epoch"
            + (f", resuming from {last_checkpoint.name}" if last_checkpoint else "")
        )
        trainer.train(resume_from_checkpoint=str(last_checkpoint) if last_checkpoint else None)
        if "wandb" in trackers:
            import wandb

            wandb.finish()  # Trainer leaves the W&B run open: close its files before they move

    state = trainer.state
    losses = [line["loss"] for line in state.log_history if "loss" in line]
    validation_seconds = sum(line.get("eval_runtime", 0.0) for line in state.log_history)
    summary = {
        "train_samples": len(train_examples),
        "eval_samples": len(eval_examples),
        "truncated_prompts": truncated,
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "tokens": trainer.tokens_seen * world,
        "seconds": round(trainer.train_seconds, 2),
        "validation_seconds": round(validation_seconds, 2),  # part of "seconds"
        "tokens_per_second": round(trainer.tokens_seen * world / max(trainer.train_seconds, 1e-9)),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "best_eval_loss": state.best_metric,
        "best_checkpoint_step": _step_of(state.best_model_checkpoint),
    }
    trainer.accelerator.wait_for_everyone()  # every process is done with the checkpoints
    if main_process:
        info = {
            "kind": "llm",
            "method": settings.method,
            "base_model": _stored_base_model(settings.model),
            "lora": dataclasses.asdict(lora) if lora else None,
            "dtype": settings.dtype,
            "prompt": encoder.config(),
            "max_history": settings.max_history,
            "seed": settings.seed,
            "alpha": settings.alpha,
            "beta": settings.beta,
            "weighting": settings.resolved_weighting(),
            "weight_rec_loss": settings.weight_rec_loss,
            "summary": summary,
        }
        with resumable_on_disk_full(checkpoints), logs_kept_through_replacement(output):
            save_llm_run(
                output,
                model=trainer.model,
                tokenizer=tokenizer,
                info=info,
                dataset=dataset,
                config=settings.resolved(len(eval_examples), eval_steps).to_dict(),
                metrics=state.log_history,
            )
        log(
            f"done: {summary['train_samples']} samples, {summary['tokens']} tokens in "
            f"{summary['seconds']} s ({summary['tokens_per_second']} tokens/s; validation on "
            f"{summary['eval_samples']} samples took {summary['validation_seconds']} s), "
            f"best validation loss {_fmt(summary['best_eval_loss'])} -> {output}"
        )
    trainer.accelerator.wait_for_everyone()
    return summary


def requested_trackers(report_to: list[str] | str) -> list[str]:
    """The trackers `report_to` names ("none" names none), each checked to be installed."""
    names = [report_to] if isinstance(report_to, str) else report_to  # a YAML preset's one name
    trackers = [name for name in dict.fromkeys(names) if name != "none"]
    for name in trackers:
        if importlib.util.find_spec(name) is None:
            raise CftrecError(
                f"--report-to {name}: {name} is not installed (pip install 'cftrec[tracking]')"
            )
    return trackers


@contextlib.contextmanager
def tracker_environment(trackers: list[str], folder: Path):
    """Environment defaults that keep the trackers' files in `folder`, W&B offline and MLflow
    on a local file store; a variable the user set is left alone. Restored afterwards."""
    defaults = {}
    if "tensorboard" in trackers:
        defaults["TENSORBOARD_LOGGING_DIR"] = str(folder / "tensorboard")
    if "wandb" in trackers:
        defaults |= {"WANDB_DIR": str(folder), "WANDB_MODE": "offline", "WANDB_PROJECT": "cftrec"}
    if "mlflow" in trackers:
        # a file store: the one local store mlflow-skinny writes (MLflow 3 asks for the opt-in)
        defaults["MLFLOW_TRACKING_URI"] = (folder / "mlruns").resolve().as_uri()
        defaults["MLFLOW_ALLOW_FILE_STORE"] = "true"
    added = {name: value for name, value in defaults.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def logs_kept_through_replacement(output: Path):
    """Carry RUN/checkpoints/logs (the trackers' files) over the finished run's replacement of
    RUN, to RUN/logs. Meanwhile they wait in a marked temporary folder next to RUN (swept by a
    later run if this one is killed then); if saving fails they go back to the checkpoints."""
    logs = output / CHECKPOINTS_DIR / LOGS_DIR
    if not logs.exists() or not any(logs.iterdir()):
        yield
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=TMP_SUFFIX, dir=output.parent))
    try:
        mark_output(aside, TRAIN_COMMAND)
        os.replace(logs, aside / LOGS_DIR)
        try:
            yield
        except BaseException:
            os.replace(aside / LOGS_DIR, logs)
            raise
        os.replace(aside / LOGS_DIR, output / LOGS_DIR)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def resumable_on_disk_full(checkpoints: Path):
    """A full disk while training or saving the run ends as one line naming the folder. The
    checkpoint being written is removed first (resume must not continue from it); --resume
    continues from the last complete one once there is room."""
    hint = "run again with --resume once there is room"
    try:
        yield
    except Exception as error:
        if not is_disk_full(error, checkpoints):
            raise
        if isinstance(error, DiskFull):  # the finished run (it names RUN and its size)
            raise DiskFull(error.where, error.needed, hint) from error
        for path in checkpoints.glob("checkpoint-*"):
            if not _complete(path):
                shutil.rmtree(path, ignore_errors=True)
        last = _last_checkpoint(checkpoints)
        needed = f"{last.name} took {format_bytes(tree_size(last))}" if last else ""
        raise DiskFull(checkpoints, needed, hint) from error


def _complete(checkpoint: Path) -> bool:
    """Trainer writes trainer_state.json last, so a checkpoint cut off while saving (killed,
    disk full) has no readable one."""
    import json

    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def _last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint."""
    complete = [
        (int(path.name.rsplit("-", 1)[1]), path)
        for path in checkpoints.glob("checkpoint-*")
        if _complete(path)
    ]
    return max(complete)[1] if complete else None


def _log_boundaries():
    """A callback that logs the first step, the last step and every validation step, whatever
    --logging-steps says: a run shorter than --logging-steps still records its losses, and
    the loss at the step early stopping ends on is not lost."""
    from transformers import TrainerCallback

    class LogBoundaries(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (1, state.max_steps) or control.should_evaluate:
                control.should_log = True
            return control

    return LogBoundaries()


def _quiet(*_args) -> None:
    """Processes other than the main one stay silent."""


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def resume_settings(output: str | Path) -> Path | None:
    """The settings file a resumable run left in RUN/checkpoints, if any."""
    path = Path(output) / CHECKPOINTS_DIR / SETTINGS_FILE
    return path if path.exists() else None
