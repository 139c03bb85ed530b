"""Feedback for a model with several versions: each item to the version that
answered its request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._store import FeedbackStore
from ._types import FeedbackItem, ItemResult, Outcome


def route_feedback(
    stores: Mapping[int, FeedbackStore], items: Sequence[FeedbackItem], count_unknown: bool = True
) -> list[tuple[int | None, ItemResult]]:
    """Feedback for a model with several versions: each item goes to the version
    that answered its request (one still holding the prediction first, else one
    that remembers it as expired or answered); an id no version knows is UNKNOWN,
    counted on the newest version — or, with ``count_unknown=False``, neither
    counted nor given a version (another process may know it: the caller asks
    there, and counts what nobody knew). Returns (version, result) per item, in
    order.
    """
    if not stores:
        return [(None, ItemResult(item.request_id, Outcome.UNKNOWN)) for item in items]
    newest = max(stores)
    targets: dict[int, list[int]] = {}
    results: list[tuple[int | None, ItemResult] | None] = [None] * len(items)
    for i, item in enumerate(items):
        statuses = {v: s.status(item.request_id) for v, s in stores.items()} if item.request_id else {}
        live = [v for v, st in statuses.items() if st == "live"]
        seen = [v for v, st in statuses.items() if st is not None]
        if not seen and not count_unknown:
            results[i] = (None, ItemResult(item.request_id, Outcome.UNKNOWN))
            continue
        target = max(live) if live else max(seen) if seen else newest
        targets.setdefault(target, []).append(i)
    for version, positions in targets.items():
        for pos, result in zip(positions, stores[version].feedback([items[p] for p in positions]), strict=True):
            results[pos] = (version, result)
    return [r for r in results if r is not None]
