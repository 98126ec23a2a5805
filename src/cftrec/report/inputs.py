"""What a report reads: evaluation folders (checked), their runs' training logs, the datasets'
train popularity and `diagnose` outputs.

A folder that cannot be read as this cftrec's evaluation output (missing or corrupt files,
another version's layout) is a CftrecError naming the file; what only enriches the report (a
run folder, a dataset, a training log that is gone) becomes a note in the report instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import CftrecError
from ..evaluation.report import CASES_FILE, RESULTS_FILE, read_results
from ..files import read_json

# What the report uses of results.json and of each cases.jsonl record (evaluate.py writes them)
RESULTS_KEYS = {
    "name": str,
    "metrics": dict,
    "num_cases": int,
    "data": dict,
    "run": dict,
    "coverage@10": (int, float),
    "mean_popularity@10": (int, float),
}
DATA_KEYS = ("path", "fingerprint", "split")
RUN_KEYS = ("path", "kind")
CASE_KEYS = ("case_id", "history", "target_title", "titles", "rank")
DIAGNOSE_FILE, DIAGNOSE_PLOT = "diagnose.json", "diagnose.png"


@dataclass
class ResultFolder:
    """One evaluation output and what the report found around it."""

    path: Path
    results: dict[str, Any]
    cases: list[dict[str, Any]]
    written: str  # when results.json was written (its modification time, UTC)
    label: str = ""  # the name shown in tables and plots (unique in the report)
    run_info: dict[str, Any] | None = None  # the run's run.json, when the run folder is there
    training_log: list[dict[str, Any]] = field(default_factory=list)  # an LLM run's metrics.jsonl
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why

    @property
    def data_key(self) -> tuple:
        """Results with the same key were made on the same cases under the same protocol:
        only those are compared pairwise (what `compare_runs` requires)."""
        data = self.results["data"]
        exclude = bool(self.results.get("settings", {}).get("exclude_history", False))
        return (
            data["fingerprint"],
            data["split"],
            exclude,
            tuple(c["case_id"] for c in self.cases),
        )


def _version_problem(path: Path, problem: str, command: str = "evaluate") -> CftrecError:
    return CftrecError(
        f"{path}: {problem}; not a `cftrec {command}` output of this cftrec version (run it again)"
    )


def read_result_folder(folder: str | Path) -> ResultFolder:
    """An evaluation output folder, checked for everything the report uses."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CftrecError(f"{folder}: not a folder (give the output folder of `cftrec evaluate`)")
    # a CftrecError for missing files, bad JSON or text, and results.json not an object
    results, cases = read_results(folder)
    results_path = folder / RESULTS_FILE
    for key, kind in RESULTS_KEYS.items():
        if not isinstance(results.get(key), kind):
            raise _version_problem(results_path, f"no valid '{key}'")
    for section, keys in (("data", DATA_KEYS), ("run", RUN_KEYS)):
        missing = [key for key in keys if key not in results[section]]
        if missing:
            raise _version_problem(results_path, f"'{section}' lacks {', '.join(missing)}")
    for number, case in enumerate(cases, start=1):
        missing = [key for key in CASE_KEYS if key not in case] if isinstance(case, dict) else []
        if missing or not isinstance(case, dict):
            problem = f"lacks {', '.join(missing)}" if missing else "is not an object"
            raise _version_problem(folder / CASES_FILE, f"line {number} {problem}")
    if len(cases) != results["num_cases"]:
        raise CftrecError(
            f"{folder}: cases.jsonl holds {len(cases)} cases, results.json says "
            f"{results['num_cases']} (an interrupted or mixed folder)"
        )
    written = datetime.fromtimestamp(results_path.stat().st_mtime, UTC)
    result = ResultFolder(folder, results, cases, written.strftime("%Y-%m-%d %H:%M UTC"))
    _read_run(result)
    return result


def _read_run(result: ResultFolder) -> None:
    """The run's run.json and, for an LLM run, its training log; a note when they are gone."""
    from ..runs.info import read_run_info
    from ..runs.llm import read_metrics

    run = Path(result.results["run"]["path"])
    try:
        result.run_info = read_run_info(run)
        if result.run_info["kind"] == "llm":
            result.training_log = read_metrics(run)
    except CftrecError as error:
        result.notes.append(f"run folder not read ({error}): no training settings or curves")


def unique_labels(folders: list[ResultFolder]) -> None:
    """Each result's label: its folder's name, with as many parent folders as it takes to tell
    results of the same name apart (seed-1/sft, seed-2/sft)."""
    parts = [folder.path.resolve().parts for folder in folders]
    for depth in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            break
    for folder, label in zip(folders, labels, strict=True):
        folder.label = label


@dataclass
class DatasetFacts:
    """What the report needs of a dataset the results were made on."""

    popularity: dict[str, int]  # train interactions per title
    history_lengths: dict[str, dict[str, int]]  # split -> case id -> interactions before it


def history_lengths(dataset, split: str) -> dict[str, int]:
    """Case id ("user#n", numbered as `evaluate` numbers them) -> the user's interactions
    before that case: the whole history, not only the window a prompt holds."""
    lengths = {}
    for user, (_, _, splits) in dataset.user_sequences.items():
        positions = [p for p in range(1, len(splits)) if splits[p] == split]
        lengths |= {f"{user}#{n}": position for n, position in enumerate(positions)}
    return lengths


def dataset_facts(folders: list[ResultFolder], data_dirs: list[Path]) -> dict[str, DatasetFacts]:
    """Dataset fingerprint -> its facts, for every dataset the results were made on that can be
    found: a `data_dirs` folder with that fingerprint, else the path the evaluation recorded.
    A dataset not found adds a note to its results."""
    from ..data.dataset import Dataset

    given = {}
    for path in data_dirs:
        dataset = Dataset.load(path)  # a --data folder that is not a dataset is an error
        given[dataset.fingerprint] = dataset
    found: dict[str, Dataset] = {}
    for folder in folders:
        fingerprint = folder.results["data"]["fingerprint"]
        recorded = Path(folder.results["data"]["path"])
        dataset = found.get(fingerprint, given.get(fingerprint))
        if dataset is None:
            try:
                dataset = Dataset.load(recorded)
            except CftrecError as error:
                folder.notes.append(f"dataset not read ({error}); pass --data DIR")
                continue
        if dataset.fingerprint != fingerprint:
            folder.notes.append(
                f"the dataset at {recorded} has changed (fingerprint {dataset.fingerprint}, the "
                f"results were made on {fingerprint}); pass --data DIR"
            )
            continue
        found[fingerprint] = dataset
    facts = {}
    for fingerprint, dataset in found.items():
        data = [f.results["data"] for f in folders]
        splits = {d["split"] for d in data if d["fingerprint"] == fingerprint}
        lengths = {split: history_lengths(dataset, split) for split in splits}
        facts[fingerprint] = DatasetFacts(dataset.train_popularity(), lengths)
    return facts


@dataclass
class Diagnosis:
    """A `cftrec diagnose` output: its JSON and its plot (PNG bytes, when there)."""

    path: Path
    result: dict[str, Any]
    plot: bytes | None


def read_diagnosis(folder: str | Path) -> Diagnosis:
    folder = Path(folder)
    result = read_json(folder / DIAGNOSE_FILE, expect=dict)
    runs = result.get("runs")
    keys = ("run", "cases", "mean_kl", "mean_effect", "top1_changed")
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and all(k in r for k in keys) for r in runs
    ):
        raise _version_problem(folder / DIAGNOSE_FILE, "no valid 'runs'", "diagnose")
    plot = folder / DIAGNOSE_PLOT
    return Diagnosis(folder, result, plot.read_bytes() if plot.is_file() else None)
