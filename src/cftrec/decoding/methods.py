"""The decoding methods, in one place: their names, what they do and their default beams.
Every command, the server and the Python API resolve beams through `resolve_beams`; a new
method is one entry here plus its search in this package.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CftrecError

# Beams of constrained beam search unless told otherwise (it returns at most this many titles).
# Measured on MovieLens-100k (BENCHMARKS.md, "Search error"): 10 beams miss the model's best
# title in 68-70% of cases, 50 beams in 4 of 60, at 2.5x the cost of 10. The accuracy suite
# keeps 10, the protocol of the published tables it is set beside.
DEFAULT_BEAMS = 50
# Grounding (BIGRec) generates this many free sequences and maps each to the catalogue; there is
# no trie search to get wrong, and every extra sequence costs a full generation.
GROUNDING_BEAMS = 10


@dataclass(frozen=True)
class DecodingMethod:
    name: str
    summary: str  # one line for --help
    default_beams: int | None  # None: the method takes no beams
    guidance: bool  # can mix in an assistant's title probabilities (D3)


DECODING_METHODS: dict[str, DecodingMethod] = {
    method.name: method
    for method in (
        DecodingMethod("beam", "constrained beam search over the title trie (D3)", DEFAULT_BEAMS, True),
        DecodingMethod("exact", "the model's exact top-k by branch and bound over the trie", None, True),
        DecodingMethod("exhaustive", "likelihood of every title (exact, slow)", None, False),
        DecodingMethod("grounding", "free generation mapped to the nearest titles (BIGRec)", GROUNDING_BEAMS, False),
    )
}  # fmt: skip
METHOD_NAMES = tuple(DECODING_METHODS)


def decoding_method(name: str) -> DecodingMethod:
    """The method called `name`, or a CftrecError listing the methods."""
    if name not in DECODING_METHODS:
        raise CftrecError(f"unknown decoding method '{name}'; use one of {', '.join(METHOD_NAMES)}")
    return DECODING_METHODS[name]


def default_beams(method: str) -> int:
    """The beam count decoding `method` uses when none is given (methods without beams report
    the beam search's, as results.json always has)."""
    return decoding_method(method).default_beams or DEFAULT_BEAMS


def resolve_beams(method: str, beams: int | None, k: int = 0) -> int:
    """Beams to use: the ones asked for, else the method's default raised to `k` (a beam list
    holds at most as many titles as beams, so a request for k titles gets k)."""
    if beams is not None:
        return beams
    return max(default_beams(method), k)


def check_exact_applies(length_penalty: float, guidance_scale: float | None) -> None:
    """The bound needs scores that only fall along a path; refuse options that break it."""
    if length_penalty != 0:
        raise CftrecError(
            "--decoding exact needs --length-penalty 0 (a length penalty lets a longer title "
            "outscore its own prefix, so no prefix bounds its titles)"
        )
    if guidance_scale is not None and not 0 <= guidance_scale <= 1:
        raise CftrecError(
            "--decoding exact needs --guidance-scale in [0, 1] (outside it a mixed token score "
            "can be positive, so no prefix bounds its titles)"
        )


def methods_help(prefix: str = "LLM runs: ") -> str:
    return prefix + "; ".join(f"{m.name} ({m.summary})" for m in DECODING_METHODS.values()) + "."
