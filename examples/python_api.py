"""The Python API in one screen. Run after `make demo`:

.venv/bin/python examples/python_api.py demo/data/ml100k demo/runs/cft
"""

import sys

import torch

from cftrec import Dataset, LLMRecommender, cft_loss, token_weights

data_dir, run_dir = sys.argv[1], sys.argv[2]

# 1. A prepared dataset: catalogue (distinct titles -> item ids) and history windows.
dataset = Dataset.load(data_dir)
sample = dataset.samples("test", max_history=10)[0]
history_titles = dataset.catalog.titles_for(sample.history)
print(f"user {sample.user_id}: {len(sample.history)} history items, last {history_titles[-1]!r}")
print(f"target: {dataset.catalog.title(sample.target)!r}")

# 2. Recommendations that are always catalogue titles (constrained beam search).
recommender = LLMRecommender.from_run(run_dir)
for rank, rec in enumerate(recommender.recommend([sample.history], k=5, num_beams=10)[0], 1):
    print(f"{rank}. {rec.title}  (score {rec.score:.2f}, items {', '.join(rec.item_ids)})")

# 3. The CFT loss for your own trainer: logits [B, T, V] aligned with labels [B, T].
torch.manual_seed(0)
labels = torch.tensor([[-100, 5, 7, 2], [-100, -100, 3, 2]])
factual = torch.randn(2, 4, 10, requires_grad=True)
counterfactual = torch.randn(2, 4, 10, requires_grad=True)
loss = cft_loss(factual, counterfactual, labels, alpha=0.1, beta=0.25)
loss.total.backward()
print("weights:", token_weights(labels, beta=0.25).tolist())
print(f"total {loss.total.item():.4f} = rec {loss.rec.item():.4f} + 0.1 * cf {loss.cf.item():.4f}")
