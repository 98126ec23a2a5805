"""`cftrec report`: evaluation folders (and `diagnose` outputs) -> one self-contained HTML page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..errors import CftrecError
from ..files import atomic_write_text, check_output_file
from . import sections
from .analysis import case_groups
from .figures import colours
from .inputs import dataset_facts, read_diagnosis, read_result_folder, unique_labels
from .page import page


def build_report(
    results_dirs: Sequence[str | Path],
    data_dirs: Sequence[str | Path] = (),
    diagnose_dirs: Sequence[str | Path] = (),
    resamples: int = 10_000,
    seed: int = 0,
) -> str:
    """The report's HTML. Every results folder is read and checked first (a CftrecError names
    the first bad one); results on different cases are never compared pairwise."""
    from .. import __version__

    if not results_dirs:
        raise CftrecError("report needs at least one evaluation output folder")
    resolved = [Path(p).resolve() for p in results_dirs]
    repeated = {str(p) for p in results_dirs if resolved.count(Path(p).resolve()) > 1}
    if repeated:
        raise CftrecError(f"{sorted(repeated)[0]}: given more than once")
    folders = [read_result_folder(path) for path in results_dirs]
    diagnoses = [read_diagnosis(path) for path in diagnose_dirs]
    unique_labels(folders)
    facts = dataset_facts(folders, [Path(p) for p in data_dirs])
    groups = case_groups(folders, resamples, seed)
    colour = colours([f.label for f in folders])

    parts = [
        sections.results_section(folders, groups),
        sections.cutoff_section(folders, colour),
        sections.comparison_section(groups),
        sections.history_section(folders, facts, colour),
        sections.popularity_bucket_section(folders, facts, colour),
        sections.recommended_popularity_section(folders, facts, colour),
        sections.training_section(folders),
        *([sections.diagnose_section(diagnoses)] if diagnoses else []),
        sections.provenance_section(folders),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"{len(folders)} evaluation{'s' if len(folders) > 1 else ''}: "
        f"{', '.join(f.label for f in folders)}. Made by cftrec {__version__} on {generated}."
    )
    return page("cftrec report", subtitle, parts)


def write_report(
    out: str | Path,
    results_dirs: Sequence[str | Path],
    data_dirs: Sequence[str | Path] = (),
    diagnose_dirs: Sequence[str | Path] = (),
    resamples: int = 10_000,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Build the report and write it to `out` atomically (an existing file only with
    `overwrite`, never inside an input folder)."""
    inputs = [*results_dirs, *data_dirs, *diagnose_dirs]
    out = check_output_file(out, inputs, overwrite)
    atomic_write_text(out, build_report(results_dirs, data_dirs, diagnose_dirs, resamples, seed))
    return out
