"""How far a shadow version disagrees with the versions that answered.

A shadow version (``[traffic] shadow`` in model.toml) scores a copy of requests
after they have been answered by the serving version; the service hands each batch
of such copies here, with what the serving version answered. A
:class:`ShadowMonitor` (one per shadow version, on its
:class:`~scorewire.monitoring.monitor.VersionMonitor`) keeps, per serving version:
requests mirrored, dropped (the shadow's queue was full), compared and failed
(the shadow could not score them); and per output of the serving version, matched
to the shadow's output of the same role (else of the same name):

* a label output: rows compared and rows whose labels differ;
* any other output (probabilities, values, decisions): values compared, the sum
  and the largest of their absolute differences (NaN and infinite differences left
  out).

Counts only go up while the shadow version is loaded; a reloaded shadow starts
afresh. With metrics on, each comparison is also added to the Prometheus counters
(``scorewire.observability.add_shadow``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..types import Signature


@dataclass(frozen=True)
class OutputDisagreement:
    """One output of the serving version against the shadow's."""

    name: str  # the serving version's output
    kind: str  # "label" or "numeric"
    rows: int  # rows compared
    differing_rows: int  # label: rows whose labels differ
    values: int  # numeric: finite differences compared
    abs_diff_sum: float
    abs_diff_max: float  # NaN before any value

    @property
    def differing_share(self) -> float:
        return self.differing_rows / self.rows if self.kind == "label" and self.rows else math.nan

    @property
    def mean_abs_diff(self) -> float:
        return self.abs_diff_sum / self.values if self.kind == "numeric" and self.values else math.nan


@dataclass(frozen=True)
class ShadowSnapshot:
    """A shadow version against one serving version."""

    serving_version: int
    mirrored: int  # copies queued for the shadow
    dropped: int  # copies refused: the shadow's queue was full
    compared: int  # copies scored by the shadow and compared
    compared_rows: int
    failed: int  # copies the shadow failed to score
    outputs: tuple[OutputDisagreement, ...]


class _Output:
    __slots__ = ("abs_max", "abs_sum", "differing", "kind", "rows", "values")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows = self.differing = self.values = 0
        self.abs_sum = 0.0
        self.abs_max = math.nan


class _Against:
    """Counts against one serving version (mirrored and dropped: on the event loop;
    the rest: on the thread that compares)."""

    __slots__ = ("compared", "compared_rows", "dropped", "failed", "mirrored", "outputs")

    def __init__(self) -> None:
        self.mirrored = self.dropped = self.compared = self.compared_rows = self.failed = 0
        self.outputs: dict[str, _Output] = {}


class ShadowMonitor:
    """One shadow version's disagreement with the versions that served."""

    def __init__(self, model: str, version: int, signature: Signature, metrics: bool = False) -> None:
        self.model = model
        self.version = version
        self.signature = signature
        self.metrics = metrics
        self._against: dict[int, _Against] = {}
        self._lock = threading.Lock()  # snapshot() against a comparison in progress

    def against(self, serving_version: int) -> _Against:
        got = self._against.get(serving_version)
        if got is None:
            with self._lock:
                got = self._against.setdefault(serving_version, _Against())
        return got

    def dropped(self, serving_version: int) -> None:
        """A copy was refused (the queue was full)."""
        self.against(serving_version).dropped += 1
        if self.metrics:
            from ..observability import add_shadow_requests

            add_shadow_requests(self.model, self.version, serving_version, "dropped", 1)

    def failed(self, serving_version: int, requests: int) -> None:
        """The shadow could not score ``requests`` copies."""
        self.against(serving_version).failed += requests
        if self.metrics:
            from ..observability import add_shadow_requests

            add_shadow_requests(self.model, self.version, serving_version, "failed", requests)

    def output_pairs(self, served: Signature, names: Sequence[str]) -> list[tuple[str, str, str]]:
        """(served output, shadow output, kind) for each of ``names`` (outputs of a
        version with signature ``served``) that the shadow has: the shadow's output
        of the same role, else of the same name."""
        mine = {o.name: o for o in self.signature.outputs}
        roles = {o.name: o.role for o in served.outputs}
        pairs = []
        for name in names:
            role = roles.get(name, "")
            other = self.signature.output_for(role) if role else None
            if other is None and name in mine:
                other = name
            if other is not None:
                pairs.append((name, other, "label" if role == "label" or mine[other].role == "label" else "numeric"))
        return pairs

    def compare(
        self,
        serving_version: int,
        served_signature: Signature,
        requests: int,
        served: Mapping[str, np.ndarray],
        shadow: Mapping[str, np.ndarray],
    ) -> None:
        """Add one comparison: ``requests`` copies (their rows stacked) that the
        serving version answered with ``served`` and the shadow with ``shadow``."""
        rows = next((len(a) for a in served.values()), 0)
        results = []
        for name, other, kind in self.output_pairs(served_signature, list(served)):
            a, b = served[name], shadow.get(other)
            if b is None or np.shape(a) != np.shape(b) or not len(a):
                continue
            if kind == "label":
                if a.dtype != b.dtype:  # e.g. integer labels against string ones: compared as objects
                    a, b = a.astype(object), b.astype(object)
                differs = np.asarray(a != b).reshape(len(a), -1).any(axis=1)
                results.append((name, kind, len(a), int(np.count_nonzero(differs)), 0, 0.0, math.nan))
            else:
                diff = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).ravel()
                diff = diff[np.isfinite(diff)]
                results.append((name, kind, len(a), 0, diff.size, float(diff.sum()),
                                float(diff.max()) if diff.size else math.nan))  # fmt: skip
        against = self.against(serving_version)
        with self._lock:
            against.compared += requests
            against.compared_rows += rows
            for name, kind, n, differing, values, total, largest in results:
                out = against.outputs.get(name)
                if out is None:
                    out = against.outputs[name] = _Output(kind)
                out.rows += n
                out.differing += differing
                out.values += values
                out.abs_sum += total
                if not math.isnan(largest) and (math.isnan(out.abs_max) or largest > out.abs_max):
                    out.abs_max = largest
        if self.metrics:
            from ..observability import add_shadow_comparison, add_shadow_requests

            add_shadow_requests(self.model, self.version, serving_version, "compared", requests)
            for name, kind, n, differing, values, total, largest in results:
                add_shadow_comparison(self.model, self.version, serving_version, name, kind, n, differing, values,
                                      total, largest)  # fmt: skip

    def snapshot(self) -> tuple[ShadowSnapshot, ...]:
        """Everything so far, by serving version."""
        with self._lock:
            return tuple(
                ShadowSnapshot(
                    v,
                    a.mirrored,
                    a.dropped,
                    a.compared,
                    a.compared_rows,
                    a.failed,
                    tuple(
                        OutputDisagreement(n, o.kind, o.rows, o.differing, o.values, o.abs_sum, o.abs_max)
                        for n, o in sorted(a.outputs.items())
                    ),
                )
                for v, a in sorted(self._against.items())
            )
