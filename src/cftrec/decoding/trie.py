"""The catalogue as a prefix tree over the token ids of every distinct title's response.

Stored as flat tensors so that decoding steps are pure tensor operations:

  child_ptr   [N+1]  children of node n are entries child_ptr[n] .. child_ptr[n+1]-1 (CSR)
  child_token [E]    token id on the edge to each child
  child_node  [E]    node id of each child
  leaf_title  [N]    title index of a finished response (node reached by its EOS), else -1
  title_lo/hi [N]    the titles below node n are leaf_order[title_lo[n]:title_hi[n]]
  leaf_order  [T]    title indices in depth-first order (contiguous per subtree)

Node 0 is the root (empty prefix). Node ids follow depth-first preorder, so every subtree's
titles form one contiguous range: subtree sums are differences of a cumulative sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import CftrecError


class TitleTrie:
    def __init__(self, sequences: Sequence[Sequence[int]], titles: Sequence[str] | None = None):
        """`sequences[i]`: the response token ids of title i (EOS included)."""
        names = list(titles) if titles is not None else [str(i) for i in range(len(sequences))]
        if not sequences:
            raise CftrecError("cannot build a decoding trie over an empty catalogue")
        # Nested dicts first (token -> subtree); "leaf" marks where a response ends.
        root: dict = {}
        for index, ids in enumerate(sequences):
            node = root
            for token in ids:
                if "leaf" in node:
                    raise CftrecError(
                        f"title {names[index]!r} continues past the end of {names[node['leaf']]!r}"
                    )
                node = node.setdefault(int(token), {})
            if "leaf" in node or len(node) > 0:
                other = names[node["leaf"]] if "leaf" in node else "another title"
                raise CftrecError(
                    f"titles {names[index]!r} and {other!r} have the same response tokens"
                )
            node["leaf"] = index

        ptr, tokens, children, leaf_title, lo, hi, leaf_order = [0], [], [], [], [], [], []
        # Iterative preorder traversal; node ids are assigned in visiting order.
        stack = [root]
        order: list[dict] = []
        while stack:
            node = stack.pop()
            order.append(node)
            keys = sorted(k for k in node if k != "leaf")
            stack.extend(node[k] for k in reversed(keys))
        node_id = {id(node): n for n, node in enumerate(order)}
        for node in order:
            keys = sorted(k for k in node if k != "leaf")
            tokens.extend(keys)
            children.extend(node_id[id(node[k])] for k in keys)
            ptr.append(len(tokens))
            leaf_title.append(node.get("leaf", -1))
        # Title ranges: leaves in preorder, then each node's range spans its subtree.
        count = len(order)
        position = [0] * count
        for n in range(count):
            if leaf_title[n] >= 0:
                position[n] = len(leaf_order)
                leaf_order.append(leaf_title[n])
        lo = [len(leaf_order)] * count
        hi = [0] * count
        for n in reversed(range(count)):  # children have larger ids than their parent
            if leaf_title[n] >= 0:
                lo[n], hi[n] = position[n], position[n] + 1
            for e in range(ptr[n], ptr[n + 1]):
                child = children[e]
                lo[n], hi[n] = min(lo[n], lo[child]), max(hi[n], hi[child])

        self.num_titles = len(sequences)
        self.num_nodes = count
        self.max_length = max(len(s) for s in sequences)
        self.child_ptr = torch.tensor(ptr, dtype=torch.long)
        self.child_count = self.child_ptr[1:] - self.child_ptr[:-1]
        self.child_token = torch.tensor(tokens, dtype=torch.long)
        self.child_node = torch.tensor(children, dtype=torch.long)
        self.leaf_title = torch.tensor(leaf_title, dtype=torch.long)
        self.title_lo = torch.tensor(lo, dtype=torch.long)
        self.title_hi = torch.tensor(hi, dtype=torch.long)
        self.leaf_order = torch.tensor(leaf_order, dtype=torch.long)
        # A node without children (any title's end): where search rows that hold no prefix
        # point, so they add no candidates (the root would add its whole fan-out).
        self.dead_end = int((self.child_count == 0).nonzero()[0])

    def to(self, device) -> TitleTrie:
        for name in (
            "child_ptr", "child_count", "child_token", "child_node", "leaf_title",
            "title_lo", "title_hi", "leaf_order",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name).to(device))
        return self

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Children of each node in `nodes` [...], padded to the widest one.

        Returns (tokens [..., D], child nodes [..., D], valid [..., D]); padding entries are
        invalid and point at edge 0.
        """
        count = self.child_count[nodes]
        width = max(int(count.max()), 1) if count.numel() else 1
        offsets = torch.arange(width, device=nodes.device)
        valid = offsets < count.unsqueeze(-1)
        edges = torch.where(valid, self.child_ptr[nodes].unsqueeze(-1) + offsets, 0)
        return self.child_token[edges], self.child_node[edges], valid

    def walk(self, ids: Sequence[int]) -> int | None:
        """The node reached by following `ids` from the root, or None if it leaves the trie."""
        node = 0
        for token in ids:
            start, end = int(self.child_ptr[node]), int(self.child_ptr[node + 1])
            match = (self.child_token[start:end] == int(token)).nonzero()
            if len(match) == 0:
                return None
            node = int(self.child_node[start + int(match[0])])
        return node
