"""cftrec: counterfactual fine-tuning (CFT) for LLM-based sequential recommendation.

The public API is imported lazily so that `import cftrec` (and the CLI) start fast:

    from cftrec import cft_loss, token_weights, CFTConfig, CFTTrainer, LLMRecommender, Dataset
"""

import warnings
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Dataset": "cftrec.data.dataset",
    "Catalog": "cftrec.data.dataset",
    "Sample": "cftrec.data.dataset",
    "PromptEncoder": "cftrec.prompts",
    "PromptTemplate": "cftrec.prompts",
    "Recommendation": "cftrec.recommendation",
    "load_recommender": "cftrec.runs.registry",
    "cft_loss": "cftrec.training.loss",
    "token_weights": "cftrec.training.loss",
    "CFTLoss": "cftrec.training.loss",
    "CFTConfig": "cftrec.training.trainer",
    "CFTTrainer": "cftrec.training.trainer",
    "LLMRecommender": "cftrec.decoding.recommender",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name == "Recommender":
        # cftrec 0.1 exported the LLM recommender under this name; kept for one release.
        warnings.warn(
            "cftrec.Recommender is the LLM recommender, renamed cftrec.LLMRecommender; "
            "cftrec.Recommender will become the protocol every recommender implements "
            "(cftrec.runs.protocol.Recommender) in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        name = "LLMRecommender"
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cftrec' has no attribute {name!r}")
