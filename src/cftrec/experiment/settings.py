"""What an experiment runs: `ExperimentSettings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..training.settings import DEFAULT_ALPHA, DEFAULT_BETA

# The metrics the CFT/D3 papers report (10-beam lists decide K <= 10 only; "n/a" where the
# lists are shorter than K).
METRIC_COLUMNS = ("ndcg@5", "ndcg@10", "hr@5", "hr@10")
# How far an exact row ranks: the tables' deepest cutoff (a deeper exact search costs more)
TABLE_DEPTH = max(int(column.split("@")[1]) for column in METRIC_COLUMNS)


@dataclass
class ExperimentSettings:
    """What to run. Defaults are the demo's budget on MovieLens-100k with the bundled model."""

    data_source: str = "movielens-100k"  # "movielens-100k" (fetched) or "prepared:PATH"
    model: str = "bundled:smollm2-135m"
    methods: tuple[str, ...] = ("pop", "sasrec", "sft", "cft")
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    lora: bool = True
    max_train_samples: int | None = 256
    max_eval_samples: int | None = None  # validation samples (None: cftrec train's default)
    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 1e-3
    eval_limit: int | None = 200
    eval_sample: int | None = None  # the test cases of a seeded sample of this many users
    eval_sample_seed: int = 0
    # Every test row ranks without the case's history titles, into its own results folder and
    # summary; the runs and the guidance choice are shared with the history-kept protocol.
    exclude_history: bool = False
    beams: int = 10  # the published D3/CFT protocol the suite is set beside (not DEFAULT_BEAMS)
    eval_batch_size: int = 8  # test cases decoded together
    decoding: str = "beam"
    sasrec_epochs: int = 30
    cft_run_name: str = "cft"  # folder/row name of the cft run (a sweep names each point)
    seed: int = 42
    dtype: str = "float32"
    extra_train_args: tuple[str, ...] = ()
    diagnose_limit: int | None = 50
    sample_history: tuple[str, ...] = ("Toy Story (1995)", "Heat (1995)", "Fargo (1996)")
    force: bool = False
    launcher: tuple[str, ...] = field(default_factory=tuple)  # e.g. ("accelerate", "launch")
    threads: int | None = None  # --threads of every step that runs a model (None: its default)
    # More rows of the LLM runs (experiment/variants.py): D3 guidance by the SASRec run, its
    # scale chosen on validation users; and other decodings ("beam:50", "exact").
    guided: bool = False
    guidance_scales: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)  # ties: the first wins
    guidance_valid_users: int = 300
    extra_decodings: tuple[str, ...] = ()
    extra_decodings_rows: str = "all"  # "guided": only the guided rows get the extra decodings

    def protocol(self) -> str:
        """The suffix of this protocol's results folders and summaries."""
        return "-history-excluded" if self.exclude_history else ""

    def results_dir(self, out: Path) -> Path:
        """Where an experiment in `out` writes this protocol's evaluations."""
        return out / f"results{self.protocol()}"
