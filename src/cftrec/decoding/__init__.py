"""Decoding: constrained beam search, exhaustive scoring, grounding, guidance."""

# Beams of constrained beam search unless told otherwise (it returns at most this many titles).
# Measured on MovieLens-100k (BENCHMARKS.md, "Search error"): 10 beams miss the model's best
# title in 68-70% of cases, 50 beams in 4 of 60, at 2.5x the cost of 10. The accuracy suite
# keeps 10, the protocol of the published tables it is set beside.
DEFAULT_BEAMS = 50
# Grounding (BIGRec) generates this many free sequences and maps each to the catalogue; there is
# no trie search to get wrong, and every extra sequence costs a full generation.
GROUNDING_BEAMS = 10


def default_beams(method: str) -> int:
    """The beam count decoding `method` uses when none is given."""
    return GROUNDING_BEAMS if method == "grounding" else DEFAULT_BEAMS
