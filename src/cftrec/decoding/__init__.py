"""Decoding: constrained beam search, exhaustive scoring, grounding, guidance."""

# The beam count every command and API uses unless told otherwise (beam search returns at
# most this many titles). Chosen from measured search error: BENCHMARKS.md, "Search error".
DEFAULT_BEAMS = 10
