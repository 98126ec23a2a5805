"""Run folders: what `cftrec train` and `cftrec baseline` write, and loading them back.

info.py      run.json and the catalogue copy every run carries (all kinds)
registry.py  the run kinds (one entry each) and `load_recommender` for any run
protocol.py  the Recommender contract every kind implements
llm.py       the LLM run folder (weights, tokenizer, metrics): saving and loading
"""

from .registry import RUN_KINDS, load_recommender

__all__ = ["RUN_KINDS", "load_recommender"]
