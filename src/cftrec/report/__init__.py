"""`cftrec report`: one self-contained HTML page of any set of evaluations.

The page holds the paired comparisons (what `cftrec compare` prints), NDCG@K and HR@K against K,
metrics by history length and by target popularity, the popularity of what each method
recommends, each LLM run's training and validation loss, `diagnose`'s history-reliance plot
when given, and the settings, data fingerprint and date of each result. It needs no network
and no other file: CSS inline, plots as SVG (or PNG) data URIs, no script.
"""

from .build import build_report, write_report

__all__ = ["build_report", "write_report"]
