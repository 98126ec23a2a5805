"""The layering of docs/ARCHITECTURE.md, checked on the source: imports go down the stages only.

Every import statement of every module is read (at module level and inside functions, where
cftrec imports lazily), resolved to a cftrec module, and checked against the packages each
layer may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cftrec"
MAX_LINES = 450

# What each part of cftrec may import from cftrec, besides itself and the foundation
# (errors, files, paths, threads, compat, recommendation).
FOUNDATION = {"errors", "files", "paths", "threads", "compat", "recommendation", "assets",
              "provenance"}  # fmt: skip
ALLOWED = {
    "data": set(),
    "prompts": {"data"},
    "modeling": {"data"},
    "runs": {"data", "prompts", "modeling"},
    "training": {"data", "prompts", "modeling", "runs"},
    "decoding": {"data", "prompts", "modeling", "runs"},
    "baselines": {"data", "runs", "evaluation.metrics"},
    "evaluation": {"data", "prompts", "modeling", "runs", "decoding", "baselines"},
    "diagnostics": {"data", "prompts", "modeling", "runs", "decoding"},
    "serving": {"data", "prompts", "modeling", "runs", "decoding", "baselines"},
    "experiment": {"data", "training", "evaluation", "experiment"},
    "report": {"data", "runs", "evaluation"},
    "cli": {"*"},
}


def part_of(module: str) -> str:
    """'cftrec.decoding.beam' -> 'decoding'; 'cftrec.evaluation.metrics' stays whole where a
    rule names it."""
    parts = module.split(".")[1:]
    if not parts or parts[0].startswith("__"):
        return ""  # the package itself (cftrec.__version__)
    dotted = ".".join(parts[:2])
    return dotted if dotted in {"evaluation.metrics"} else parts[0]


def imports_of(path: Path) -> list[str]:
    """Every cftrec module `path` imports, resolved to absolute names."""
    package = ["cftrec", *path.relative_to(SRC).with_suffix("").parts]
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{a.name}" for a in node.names] if not node.module else [module]
            found += [n for n in names if n.startswith("cftrec")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("cftrec")]
    return found


SOURCES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_the_stages(path):
    own = part_of("cftrec." + ".".join(path.relative_to(SRC).with_suffix("").parts))
    if own in ("", "__init__", "__main__") or own in FOUNDATION:
        return
    allowed = ALLOWED[own.split(".")[0]]
    if "*" in allowed:
        return
    for module in imports_of(path):
        target = part_of(module)
        if target.split(".")[0] in ("", own.split(".")[0]) or target in FOUNDATION:
            continue
        assert target in allowed or target.split(".")[0] in allowed, (
            f"{path.relative_to(SRC)} imports {module}: {own} may use only "
            f"{sorted(allowed | FOUNDATION)}"
        )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_source_file_holds_more_than_one_concern(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(SRC)} has {lines} lines (split it by concern)"


def test_inference_never_imports_training():
    """Loading and serving a run must not need the training stack."""
    for part in ("decoding", "serving", "runs", "baselines", "evaluation"):
        for path in sorted((SRC / part).rglob("*.py")):
            assert not any(part_of(m) == "training" for m in imports_of(path)), path
    assert not any(part_of(m) == "training" for m in imports_of(SRC / "diagnostics.py"))


def test_the_old_public_name_still_works_for_one_release_and_warns():
    import cftrec

    with pytest.warns(DeprecationWarning, match="renamed cftrec.LLMRecommender"):
        old = cftrec.Recommender
    assert old is cftrec.LLMRecommender
