"""The catalogue as a prefix tree over the token ids of every distinct title's response, built
once and then changed in place: adding or removing a title touches only its own path.

Stored as flat arrays so that decoding steps are pure tensor operations:

  child_start [N]  the children of node n are edges child_start[n] .. + child_count[n] - 1
  child_count [N]  (sorted by token, as a fresh build sorts them)
  child_token [E]  token id on the edge to each child
  child_node  [E]  node id of each child
  leaf_title  [N]  title index of a finished response (node reached by its EOS), else -1
  parent, depth    [N] (host arrays: guidance sums title mass up the tree level by level)

Node 0 is the root (empty prefix); `dead_end` is a node that never has children (where search
rows that hold no prefix point, so they add no candidates). Every node owns a slab of edges
with spare capacity; a full slab moves to the end of the edge arena at twice its size, so
growth is amortised O(1) per edge. A removed title's leaf and the nodes that only led to it
are unlinked from their parents and reused by later titles. Title indices stay dense: the
last title takes a removed title's index (`remove` returns which one moved), as the catalogue
and the recommender's responses and embeddings do.

Arrays live on the host (numpy; the CPU tensors are views of them). On an accelerator each
array is mirrored there once, and a change copies only the entries it touched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import CftrecError

_NODE_ARRAYS = ("child_start", "child_count", "leaf_title", "parent", "depth", "in_token", "cap")
_EDGE_ARRAYS = ("child_token", "child_node")
_DEVICE_ARRAYS = ("child_start", "child_count", "leaf_title", "child_token", "child_node")


def _grown(array: np.ndarray, needed: int) -> np.ndarray:
    if needed <= len(array):
        return array
    bigger = np.zeros(max(needed, 2 * len(array), 16), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


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
        # Preorder traversal; node ids are assigned in visiting order (children sorted).
        order: list[dict] = []
        depth_of: list[int] = []
        stack = [(root, 0)]
        while stack:
            node, depth = stack.pop()
            order.append(node)
            depth_of.append(depth)
            keys = sorted(k for k in node if k != "leaf")
            stack.extend((node[k], depth + 1) for k in reversed(keys))
        node_id = {id(node): n for n, node in enumerate(order)}
        count = len(order) + 1  # + the dead end
        tokens, children, counts, leaves = [], [], [], []
        for node in order:
            keys = sorted(k for k in node if k != "leaf")
            tokens.extend(keys)
            children.extend(node_id[id(node[k])] for k in keys)
            counts.append(len(keys))
            leaves.append(node.get("leaf", -1))
        counts.append(0)
        leaves.append(-1)
        self.child_count_ = np.array(counts, dtype=np.int64)
        self.child_start_ = np.concatenate([[0], np.cumsum(self.child_count_)[:-1]])
        self.cap_ = self.child_count_.copy()
        self.leaf_title_ = np.array(leaves, dtype=np.int64)
        self.depth_ = np.array([*depth_of, -1], dtype=np.int64)
        self.child_token_ = np.array(tokens or [0], dtype=np.int64)
        self.child_node_ = np.array(children or [0], dtype=np.int64)
        self.parent_ = np.full(count, -1, dtype=np.int64)
        self.in_token_ = np.full(count, -1, dtype=np.int64)
        self.parent_[self.child_node_[: len(children)]] = np.repeat(
            np.arange(count), self.child_count_
        )
        self.in_token_[self.child_node_[: len(children)]] = self.child_token_[: len(children)]
        self.title_leaf_ = np.full(len(sequences), -1, dtype=np.int64)
        leaf_nodes = np.flatnonzero(self.leaf_title_ >= 0)
        self.title_leaf_[self.leaf_title_[leaf_nodes]] = leaf_nodes
        self.names = names
        self.num_titles = len(sequences)
        self.num_nodes = count
        self.edge_top = len(tokens)
        self.dead_end = count - 1
        self.free: list[int] = []  # unlinked node ids, reused first
        self.lengths = Counter(len(s) for s in sequences)
        self.device: torch.device | None = None  # None: the host arrays themselves
        self.mirrors: dict[str, torch.Tensor] = {}
        self.touched: dict[str, set[int]] = {"node": set(), "edge": set()}
        self.version = 0  # bumped by every change (derived data is cached per version)
        self.levels_cache: tuple[int, list] = (-1, [])
        self.below_cache: tuple[int, np.ndarray] = (-1, np.zeros(0, dtype=np.int64))

    # ---------------------------------------------------------------- tensors for decoding
    @property
    def max_length(self) -> int:
        return max(self.lengths)

    def _tensor(self, name: str) -> torch.Tensor:
        group = "edge" if name in _EDGE_ARRAYS else "node"
        host = getattr(self, name + "_")
        size = max(self.edge_top, 1) if group == "edge" else self.num_nodes
        if self.device is None:
            return torch.from_numpy(host[:size])
        mirror = self.mirrors.get(name)
        if mirror is None or len(mirror) != len(host):
            mirror = self.mirrors[name] = torch.from_numpy(host).to(self.device, copy=True)
        elif self.touched[group]:
            index = np.fromiter(self.touched[group], dtype=np.int64)
            mirror[torch.from_numpy(index).to(self.device)] = torch.from_numpy(host[index]).to(
                self.device
            )
        return mirror[:size]

    def _synced(self) -> None:
        """Bring every mirror up to date, then forget what was touched."""
        if self.device is not None:
            for name in _DEVICE_ARRAYS:
                self._tensor(name)
        for group in self.touched.values():
            group.clear()

    child_start = property(lambda self: self._tensor("child_start"))
    child_count = property(lambda self: self._tensor("child_count"))
    child_token = property(lambda self: self._tensor("child_token"))
    child_node = property(lambda self: self._tensor("child_node"))
    leaf_title = property(lambda self: self._tensor("leaf_title"))

    def to(self, device) -> TitleTrie:
        device = torch.device(device)
        self.device = None if device.type == "cpu" else device
        self.mirrors.clear()
        self._synced()
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
        edges = torch.where(valid, self.child_start[nodes].unsqueeze(-1) + offsets, 0)
        return self.child_token[edges], self.child_node[edges], valid

    def levels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(node ids, their parents) of every linked node but the root, one pair per depth,
        deepest first (computed once per version of the trie)."""
        if self.levels_cache[0] != self.version:
            linked = np.flatnonzero(self.depth_[: self.num_nodes] > 0)
            depth = self.depth_[linked]
            order = np.argsort(-depth, kind="stable")
            linked, depth = linked[order], depth[order]
            groups = np.split(linked, np.flatnonzero(np.diff(depth)) + 1) if len(linked) else []
            self.levels_cache = (self.version, [(g, self.parent_[g]) for g in groups])
        return self.levels_cache[1]

    def titles_below(self) -> np.ndarray:
        """[N]: how many titles lie below each node (computed once per version of the trie)."""
        if self.below_cache[0] != self.version:
            count = (self.leaf_title_[: self.num_nodes] >= 0).astype(np.int64)
            for nodes, parents in self.levels():
                np.add.at(count, parents, count[nodes])
            self.below_cache = (self.version, count)
        return self.below_cache[1]

    def blocked_nodes(self, excluded: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, N] bool: the nodes below which every title is one of `excluded[b]` (title
        indices), i.e. the prefixes the trie would lack for user b had those titles been
        removed from it. A search that never enters them skips those titles while it fills
        its beams."""
        below = self.titles_below()
        blocked = np.zeros((len(excluded), self.num_nodes), dtype=bool)
        for row, titles in enumerate(excluded):
            hits: Counter = Counter()
            for title in set(titles):
                node = int(self.title_leaf_[title])
                while node >= 0:  # up to the root, whose parent is -1
                    hits[node] += 1
                    node = int(self.parent_[node])
            blocked[row, [node for node, n in hits.items() if n == below[node]]] = True
        return torch.from_numpy(blocked).to(self.device or "cpu")

    # ---------------------------------------------------------------- host-side navigation
    def _find(self, node: int, token: int) -> tuple[int, int]:
        """(child of `node` by `token` or -1, its position in the node's sorted slab)."""
        start, count = int(self.child_start_[node]), int(self.child_count_[node])
        slab = self.child_token_[start : start + count]
        position = int(np.searchsorted(slab, token))
        if position < count and slab[position] == token:
            return int(self.child_node_[start + position]), position
        return -1, position

    def walk(self, ids: Sequence[int]) -> int | None:
        """The node reached by following `ids` from the root, or None if it leaves the trie."""
        node = 0
        for token in ids:
            node, _ = self._find(node, int(token))
            if node < 0:
                return None
        return node

    # ---------------------------------------------------------------- changes
    def check(self, ids: Sequence[int], name: str) -> tuple[int, int]:
        """CftrecError if title `name` with response `ids` cannot join the trie (another
        title's tokens are a prefix of these, or the same); else (the deepest existing node on
        its path, its depth)."""
        node, depth = 0, 0
        while depth < len(ids):
            if self.leaf_title_[node] >= 0:
                other = self.names[self.leaf_title_[node]]
                raise CftrecError(f"title {name!r} continues past the end of {other!r}")
            child, _ = self._find(node, int(ids[depth]))
            if child < 0:
                break
            node, depth = child, depth + 1
        if depth == len(ids) and (self.leaf_title_[node] >= 0 or self.child_count_[node] > 0):
            leaf = self.leaf_title_[node]
            other = self.names[leaf] if leaf >= 0 else "another title"
            raise CftrecError(f"titles {name!r} and {other!r} have the same response tokens")
        return node, depth

    def insert(self, ids: Sequence[int], name: str) -> int:
        """Add a title with response `ids` as title index `num_titles`; returns that index. A
        CftrecError (see `check`) changes nothing: nothing is written before the path is
        known to be free."""
        node, depth = self.check(ids, name)
        for token in ids[depth:]:
            node = self._add_child(node, int(token))
        index = self.num_titles
        self.title_leaf_ = _grown(self.title_leaf_, index + 1)
        self.title_leaf_[index] = node
        self.leaf_title_[node] = index
        self.touched["node"].add(node)
        self.names.append(name)
        self.num_titles += 1
        self.lengths[len(ids)] += 1
        self._changed()
        return index

    def remove(self, index: int) -> int | None:
        """Remove title `index`: its leaf and the nodes that led only to it are unlinked. The
        last title takes index `index`; returns its former index (None when it was the last)."""
        node = int(self.title_leaf_[index])
        length = int(self.depth_[node])
        self.leaf_title_[node] = -1
        self.touched["node"].add(node)
        while node != 0 and self.child_count_[node] == 0 and self.leaf_title_[node] < 0:
            parent = int(self.parent_[node])
            self._unlink(parent, int(self.in_token_[node]))
            self.depth_[node] = self.parent_[node] = -1
            self.free.append(node)
            node = parent
        last = self.num_titles - 1
        moved = None
        if index != last:
            leaf = int(self.title_leaf_[last])
            self.leaf_title_[leaf] = index
            self.title_leaf_[index] = leaf
            self.names[index] = self.names[last]
            self.touched["node"].add(leaf)
            moved = last
        self.names.pop()
        self.num_titles = last
        self.lengths[length] -= 1
        if not self.lengths[length]:
            del self.lengths[length]
        self._changed()
        return moved

    def _changed(self) -> None:
        self.version += 1
        if self.device is None:
            for group in self.touched.values():
                group.clear()
        else:
            self._synced()

    def _new_node(self, parent: int, token: int) -> int:
        if self.free:
            node = self.free.pop()  # keeps its slab (start, capacity) for its own children
        else:
            node = self.num_nodes
            for name in _NODE_ARRAYS:
                setattr(self, name + "_", _grown(getattr(self, name + "_"), node + 1))
            self.num_nodes += 1
            self.child_start_[node] = self.cap_[node] = 0
        self.child_count_[node] = 0
        self.leaf_title_[node] = -1
        self.parent_[node] = parent
        self.in_token_[node] = token
        self.depth_[node] = self.depth_[parent] + 1
        self.touched["node"].add(node)
        return node

    def _add_child(self, node: int, token: int) -> int:
        """A new child of `node` by `token`, kept in token order in the node's slab."""
        _, position = self._find(node, token)
        count = int(self.child_count_[node])
        if count == self.cap_[node]:  # move the slab to the arena's end, twice as large
            capacity = max(2 * count, 2)
            start, new = int(self.child_start_[node]), self.edge_top
            for name in _EDGE_ARRAYS:
                array = _grown(getattr(self, name + "_"), new + capacity)
                array[new : new + count] = array[start : start + count]
                setattr(self, name + "_", array)
            self.child_start_[node], self.cap_[node] = new, capacity
            self.edge_top += capacity
            self.touched["edge"].update(range(new, new + count))
        child = self._new_node(node, token)
        start = int(self.child_start_[node])
        for name, value in (("child_token", token), ("child_node", child)):
            array = getattr(self, name + "_")
            array[start + position + 1 : start + count + 1] = array[
                start + position : start + count
            ].copy()
            array[start + position] = value
        self.child_count_[node] = count + 1
        self.touched["edge"].update(range(start + position, start + count + 1))
        self.touched["node"].add(node)
        return child

    def _unlink(self, node: int, token: int) -> None:
        """Drop `node`'s edge by `token` (its slab keeps its capacity)."""
        _, position = self._find(node, token)
        start, count = int(self.child_start_[node]), int(self.child_count_[node])
        for name in _EDGE_ARRAYS:
            array = getattr(self, name + "_")
            array[start + position : start + count - 1] = array[
                start + position + 1 : start + count
            ].copy()
        self.child_count_[node] = count - 1
        self.touched["edge"].update(range(start + position, start + count))
        self.touched["node"].add(node)
