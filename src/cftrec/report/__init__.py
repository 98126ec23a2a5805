"""`cftrec report`: one self-contained HTML page of any set of evaluations.

The page holds the results table, NDCG@K and HR@K against K, the paired comparisons (what
`cftrec compare` prints), metrics by history length and by target popularity, the popularity
of what each method recommends, each LLM run's training and validation loss, `diagnose`'s
history-reliance plot when given, and the settings, data fingerprint and date of each result.
It needs no network and no other file: CSS inline, plots as SVG (or PNG) data URIs, no script.
Results made on other cases are never compared pairwise.
"""

from .build import build_report, write_report

__all__ = ["build_report", "write_report"]
