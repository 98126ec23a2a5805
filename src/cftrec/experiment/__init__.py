"""The whole job end to end: prepare data, train pop / SASRec / sft / cft, evaluate all on the
same test cases, compare against sft with paired significance, diagnose, recommend.

One pipeline serves `cftrec demo` (small, about 15 minutes on 2 CPU cores) and the accuracy
suite in benchmarks/accuracy/ (larger budgets, GPU). Every step runs the real `cftrec` command
in a subprocess and prints it first, so the output doubles as a tutorial; a step whose output
already exists is skipped (delete the folder or pass force=True to redo it).
"""

from .demo import run_demo
from .pipeline import ExperimentSettings, run_experiment
from .seeds import run_seeds, seeds_table
from .tables import summary_table

__all__ = [
    "ExperimentSettings",
    "run_demo",
    "run_experiment",
    "run_seeds",
    "seeds_table",
    "summary_table",
]
