"""cftrec: counterfactual fine-tuning (CFT) for LLM-based sequential recommendation."""

__version__ = "0.1.0"
