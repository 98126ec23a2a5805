"""Interaction filters and splits for `cftrec data prepare`: per-user chronological order, the
time window and iterative k-core, the train/valid/test assignment, and held-out cold items."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..errors import CftrecError

if TYPE_CHECKING:
    from .prepare import PrepareOptions

TEMPORAL_FRACTIONS = (0.8, 0.1)  # train, valid; test takes the rest
DAY = 86_400


def _epoch(date: str, flag: str) -> int:
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise CftrecError(f"{flag} {date!r}: expected a date YYYY-MM-DD") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _year_before(date: str) -> str:
    day = dt.date.fromisoformat(date)
    return day.replace(year=day.year - 1, day=min(day.day, 28)).isoformat()


def _nonempty(frame, input_path, after: str):
    if len(frame) == 0:
        raise CftrecError(f"{input_path}: no interactions left after {after}; loosen that filter")
    return frame


def chronological(interactions):
    """Rows grouped by user (users in order of first appearance), stably by timestamp within a
    user so that equal timestamps keep the source's order."""
    import numpy as np
    import pandas as pd

    user_codes, _ = pd.factorize(interactions["user_id"])
    order = np.lexsort((interactions["timestamp"].to_numpy(), user_codes))
    return interactions.iloc[order].reset_index(drop=True)


def kcore(interactions, k: int):
    """Iteratively keep users and items with at least k interactions until both hold."""
    if not k or k <= 1:
        return interactions
    while True:
        user_counts = interactions.groupby("user_id", observed=True)["user_id"].transform("size")
        item_counts = interactions.groupby("item_id", observed=True)["item_id"].transform("size")
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return interactions
        interactions = interactions[keep.to_numpy()]


def window_and_kcore(interactions, options: PrepareOptions, input_path) -> tuple[Any, dict]:
    """Apply the time window [--start, --end] (whole days, both inclusive: D3 keeps a review
    stamped on its end date) and the k-core; extend --start back a year at a time until at
    least --min-items items remain (or the window reaches the first interaction)."""
    timestamps = interactions["timestamp"].to_numpy()
    first = int(timestamps.min())
    end = _epoch(options.end, "--end") + DAY if options.end else None
    start = options.start
    while True:
        keep = timestamps >= (_epoch(start, "--start") if start else first)
        if end is not None:
            keep &= timestamps < end
        windowed = interactions[keep]
        result = kcore(windowed, options.kcore)
        if (
            not options.min_items
            or result["item_id"].nunique() >= options.min_items
            or _epoch(start, "--start") <= first
        ):
            break
        start = _year_before(start)
    info = {"start": start, "end": options.end} if (options.start or options.end) else {}
    if info:
        window = f"the time window [{start or 'first'}, {options.end or 'last'}]"
        _nonempty(windowed, input_path, window)
    if options.kcore and options.kcore > 1:
        within = " within the time window" if info else ""
        _nonempty(result, input_path, f"the {options.kcore}-core filter (--kcore){within}")
    return result, info


def assign_split(interactions, method: str):
    """Split labels for per-user chronological rows."""
    import numpy as np

    users = interactions.groupby("user_id", observed=True, sort=False)["user_id"]
    position = users.cumcount().to_numpy()
    size = users.transform("size").to_numpy()
    if method == "given":
        return interactions["split"].astype(str).to_numpy()
    labels = np.full(len(interactions), "train", dtype=object)
    if method == "loo":
        # Per user: last item test, second-last valid; a user needs the earlier items as history.
        labels[(position == size - 1) & (size >= 2)] = "test"
        labels[(position == size - 2) & (size >= 3)] = "valid"
        return labels
    # temporal (D3): samples (interactions with at least one earlier item) sorted by time,
    # first 80% train, next 10% valid, the rest test; stable, so a user's labels stay in order.
    times = interactions["timestamp"].to_numpy()
    samples = np.flatnonzero(position >= 1)
    by_time = samples[np.argsort(times[samples], kind="stable")]
    n_train = int(len(by_time) * TEMPORAL_FRACTIONS[0])
    n_valid = int(len(by_time) * sum(TEMPORAL_FRACTIONS)) - n_train
    labels[by_time[n_train : n_train + n_valid]] = "valid"
    labels[by_time[n_train + n_valid :]] = "test"
    # A user's first interaction is no sample; it belongs to the period its time falls in:
    # train up to the last train sample's time, valid up to the last valid one's, then test.
    if len(by_time):
        train_end = times[by_time[n_train - 1]] if n_train else -np.inf
        valid_end = times[by_time[n_train + n_valid - 1]] if n_train + n_valid else -np.inf
        first = np.flatnonzero(position == 0)
        labels[first] = np.where(
            times[first] <= train_end, "train", np.where(times[first] <= valid_end, "valid", "test")
        )
    return labels


def choose_cold_items(items, fraction: float, seed: int, input_path) -> set[str]:
    """A seeded `fraction` of the distinct titles, as the ids of every item carrying one (by
    title, so that no cold item shares its title with an item the model trains on)."""
    import numpy as np

    titles = items["title"].drop_duplicates().tolist()  # in item order: deterministic
    count = round(fraction * len(titles))
    if not 0 < count < len(titles):
        raise CftrecError(
            f"{input_path}: --cold-items {fraction} of {len(titles):,} titles leaves "
            f"{count:,} cold; choose a fraction that keeps some titles on each side"
        )
    chosen = np.random.default_rng(seed).choice(len(titles), size=count, replace=False)
    cold_titles = {titles[i] for i in chosen}
    return set(items.loc[items["title"].isin(cold_titles), "item_id"])


def hold_out(interactions, cold: set[str], input_path):
    """Drop the train interactions on cold items; valid/test ones stay (their cases are the
    cold cases). Fails when a user's train interactions follow a valid/test one on a cold item
    (possible only in a given split): a train sample would then see the cold item."""
    is_cold = interactions["item_id"].isin(cold).to_numpy()
    is_train = (interactions["split"] == "train").to_numpy()
    kept = interactions[~(is_cold & is_train)].reset_index(drop=True)
    position = kept.groupby("user_id", sort=False).cumcount()
    first_cold = position.where(kept["item_id"].isin(cold)).groupby(kept["user_id"]).min()
    last_train = position.where(kept["split"] == "train").groupby(kept["user_id"]).max()
    if (last_train > first_cold.reindex(last_train.index)).any():
        raise CftrecError(
            f"{input_path}: --cold-items needs each user's train interactions before the "
            "valid/test ones; this split puts train interactions after a cold item"
        )
    return kept
