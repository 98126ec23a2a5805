"""Decoding: constrained beam search, exhaustive scoring, grounding, guidance.
The methods and their default beams are registered in `methods.py`."""

from .methods import (
    DECODING_METHODS,
    DEFAULT_BEAMS,
    GROUNDING_BEAMS,
    decoding_method,
    default_beams,
    resolve_beams,
)

__all__ = [
    "DECODING_METHODS",
    "DEFAULT_BEAMS",
    "GROUNDING_BEAMS",
    "decoding_method",
    "default_beams",
    "resolve_beams",
]
