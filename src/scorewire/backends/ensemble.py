"""Ensembles: loaded models combined into one :class:`~scorewire.backends.loader.Model`.

:func:`build_ensemble` checks that the members fit together (one input: dtype,
feature count, feature names; one set of classes for voting; the outputs the
combiner needs) and returns

- a :class:`FoldedEnsemble` — one :class:`~.native.NativeLinearModel`, one kernel
  call per batch — when the combination is itself a linear model of the input:

  * ``mean`` of linear regressors: sum_i w_i (X W_i' + b_i) / sum w
    = X (sum_i w_i W_i / sum w)' + sum_i w_i b_i / sum w;
  * ``stack`` whose members are all linear and each feed a linear output (their
    decision or value, never their probabilities): the final model's input
    [X W_1' + b_1, ..., X] is linear in X, so its decision F [.]' + c is too:
    X (F M)' + (F beta + c), with M the members' weights stacked (and the identity
    for ``passthrough``).

  Nothing else folds: a mean of probabilities is not the probability of a mean
  decision (sigmoid(z1) + sigmoid(z2) != 2 sigmoid((z1 + z2) / 2)), and a vote of
  labels is not linear at all;

- otherwise an :class:`EnsembleModel`, which scores each member once per batch,
  asking it only for the output the combiner needs, and combines in float64.

The members are model objects the caller resolved (the repository, which also
decides what happens when one of them goes away).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InternalError, InvalidInput, ModelLoadError
from ..formats.ensemble import EnsembleConfig, EnsembleMember
from ..formats.linear_spec import LinearSpec, classes_array
from ..types import Inputs, Signature, TensorSpec, requested_outputs
from .loader import Model
from .native import NativeLinearModel


@dataclass(frozen=True)
class Member:
    """One resolved member: the model of ``name`` version ``version``."""

    name: str
    version: int
    model: Model
    spec: EnsembleMember

    def describe(self) -> str:
        return f"{self.name!r} v{self.version} ({self.model.backend})"


@dataclass(frozen=True)
class _Feed:
    """What the ensemble takes from one member: the output ``output`` (role
    ``role``), ``width`` columns of it (from column ``first``)."""

    member: Member
    output: str
    role: str
    width: int
    first: int = 0


def build_ensemble(
    config: EnsembleConfig,
    members: Sequence[Member],
    final: LinearSpec | None = None,
    n_threads: int | None = None,
    fold: bool = True,
    baseline: np.ndarray | None = None,
) -> Model:
    """The model of an ensemble over resolved ``members`` (in ``config.members``'
    order); ``final``: a stacking ensemble's final model (default: the config's
    inline one). ModelLoadError, naming the member, when they do not fit together.
    ``fold=False``: never fold (to compare a folded ensemble with its members'
    combination). ``baseline``: what a folded ensemble's explanations are
    measured from (its reference means; None: zeros)."""
    final = final if final is not None else config.final
    if len(members) != len(config.members) or not members:
        raise ModelLoadError("an ensemble needs its members")
    first = members[0]
    sig0 = first.model.signature
    feature_names = None
    for m in members:
        sig = m.model.signature
        if not sig.tabular:
            raise ModelLoadError(
                f"member {m.describe()} takes other inputs than one [rows, features] float matrix: "
                "the members of an ensemble take one such matrix"
            )
        if sig.input.dtype != sig0.input.dtype:
            raise ModelLoadError(
                f"member {m.describe()} takes {sig.input.dtype} input, member {first.describe()} "
                f"{sig0.input.dtype}: the members of an ensemble take the same input"
            )
        if sig.n_features != sig0.n_features:
            raise ModelLoadError(
                f"member {m.describe()} takes {sig.n_features} features, member {first.describe()} "
                f"{sig0.n_features}: the members of an ensemble take the same input"
            )
        if sig.feature_names is not None:
            if feature_names is not None and tuple(sig.feature_names) != feature_names:
                raise ModelLoadError(f"member {m.describe()} names its features differently from the others")
            feature_names = tuple(sig.feature_names)
    dtype = sig0.input.dtype
    input_spec = TensorSpec(sig0.input.name, dtype, (-1, sig0.n_features))
    combiner = config.combiner
    if combiner in ("soft_vote", "hard_vote"):
        role = "probabilities" if combiner == "soft_vote" else "label"
        classes = _common_classes(members)
        feeds = [_feed(m, role, len(classes)) for m in members]
        for f in feeds:
            if role == "probabilities" and f.width != len(classes):
                raise ModelLoadError(f"member {f.member.describe()} gives {f.width} probability columns for {len(classes)} classes")
        outputs = [_label_spec("label", classes)]
        if combiner == "soft_vote":
            outputs.append(TensorSpec("probabilities", dtype, (-1, len(classes)), "probabilities"))
        signature = Signature(input_spec, tuple(outputs), feature_names, "classification", classes)
    elif combiner == "mean":
        feeds = []
        for m in members:
            if m.model.signature.task != "regression":
                raise ModelLoadError(f"member {m.describe()} is a classifier: combiner \"mean\" averages regressors")
            feeds.append(_feed(m, "value", None))
        widths = {f.width for f in feeds}
        if len(widths) != 1:
            raise ModelLoadError("the members of a \"mean\" ensemble predict different numbers of targets")
        t = widths.pop()
        signature = Signature(input_spec, (TensorSpec("value", dtype, (-1,) if t == 1 else (-1, t), "value"),),
                              feature_names, "regression")  # fmt: skip
    elif combiner == "stack":
        if final is None:
            raise ModelLoadError("a stacking ensemble needs its final model (model.json, or [ensemble.final])")
        feeds = []
        for m in members:
            f = _feed(m, m.spec.output or _default_feed(m), None)
            if f.role == "probabilities" and f.width == 2:  # binary: P(classes[1]) only, as scikit-learn
                f = dataclasses.replace(f, width=1, first=1)
            feeds.append(f)
        width = sum(f.width for f in feeds) + (sig0.n_features if config.passthrough else 0)
        if final.n_features != width:
            raise ModelLoadError(
                f"the final model takes {final.n_features} features, the members give {width}"
                + (" (and the input's features: passthrough)" if config.passthrough else "")
            )
        final = dataclasses.replace(final, dtype="float64", feature_names=None)
        stacked = tuple(dataclasses.replace(o, dtype=dtype if o.dtype in ("float32", "float64") else o.dtype)
                        for o in final.signature().outputs)  # fmt: skip
        signature = Signature(input_spec, stacked, feature_names, final.task, final.classes)
    else:  # pragma: no cover - parse_ensemble allows no other
        raise ModelLoadError(f"unknown combiner {combiner!r}")

    listed = ", ".join(m.describe() for m in members)
    why_not = _why_not_linear(config, feeds)
    if fold and why_not is None:
        spec = _fold(config, feeds, final, dtype, feature_names, sig0.input.name)
        reason = f"{combiner} of {len(members)} linear members, folded into one linear model: {listed}"
        return FoldedEnsemble(spec, tuple(members), reason, n_threads, baseline)
    reason = f"{combiner} of {len(members)} members, each scored once per batch ({why_not or 'not folded'}): {listed}"
    return EnsembleModel(config, feeds, signature, reason, final, n_threads)


def _common_classes(members: Sequence[Member]) -> tuple[object, ...]:
    classes = None
    for m in members:
        sig = m.model.signature
        if sig.task != "classification":
            raise ModelLoadError(f"member {m.describe()} is a regressor: voting combines classifiers")
        if not sig.classes:
            raise ModelLoadError(f"member {m.describe()} names no classes: voting needs them")
        mine = tuple(sig.classes)
        if classes is not None and mine != classes:
            raise ModelLoadError(f"member {m.describe()} has other classes than {members[0].describe()}: voting needs the same classes in the same order")
        classes = mine
    assert classes is not None
    return classes


def _default_feed(m: Member) -> str:
    """What a member feeds a stacking ensemble unless told: as scikit-learn's
    ``stack_method="auto"``: its probabilities, else its decision, else its value."""
    sig = m.model.signature
    for role in ("probabilities", "decision", "value"):
        if sig.output_for(role) is not None:
            return role
    raise ModelLoadError(f"member {m.describe()} has no output that can feed a final model")


def _feed(m: Member, role: str, n_classes: int | None) -> _Feed:
    sig = m.model.signature
    name = sig.output_for(role)
    if name is None:
        raise ModelLoadError(f"member {m.describe()} has no {role} output")
    spec = next(o for o in sig.outputs if o.name == name)
    if role == "label":
        return _Feed(m, name, role, 1)
    if len(spec.shape) == 1:
        width = 1
    elif len(spec.shape) == 2 and spec.shape[1] > 0:
        width = spec.shape[1]
    elif role == "probabilities" and sig.classes:
        width = len(sig.classes)
    else:
        raise ModelLoadError(f"member {m.describe()}: its {role} output has no fixed number of columns")
    return _Feed(m, name, role, width)


def _label_spec(name: str, classes: tuple[object, ...]) -> TensorSpec:
    kind = classes_array(classes).dtype.kind
    return TensorSpec(name, "int64" if kind == "i" else "object", (-1,), "label")


def _why_not_linear(config: EnsembleConfig, feeds: Sequence[_Feed]) -> str | None:
    """Why the ensemble is not one linear model of its input; None when it is."""
    if config.combiner == "soft_vote":
        return "a mean of probabilities is not one linear model"
    if config.combiner == "hard_vote":
        return "a vote of labels is not one linear model"
    for f in feeds:
        if not isinstance(f.member.model, NativeLinearModel):
            return f"member {f.member.describe()} is not linear"
        if f.role not in ("decision", "value"):
            return f"member {f.member.describe()} feeds its {f.role}, which are not linear in the input"
    return None


def _fold(
    config: EnsembleConfig,
    feeds: Sequence[_Feed],
    final: LinearSpec | None,
    dtype: str,
    feature_names: tuple[str, ...] | None,
    input_name: str,
) -> LinearSpec:
    specs = []
    for f in feeds:
        model = f.member.model
        assert isinstance(model, NativeLinearModel)
        specs.append(model.spec)
    if config.combiner == "mean":
        total = sum(f.member.spec.weight for f in feeds)
        coef = sum(f.member.spec.weight / total * s.coef for f, s in zip(feeds, specs, strict=True))
        intercept = sum(f.member.spec.weight / total * s.intercept for f, s in zip(feeds, specs, strict=True))
        return LinearSpec("regression", "identity", np.asarray(coef), np.asarray(intercept), None, feature_names,
                          dtype, {"value": "value"}, input_name)  # fmt: skip
    assert final is not None
    d = specs[0].n_features
    rows = [s.coef for s in specs]
    offsets = [s.intercept for s in specs]
    if config.passthrough:
        rows.append(np.eye(d))
        offsets.append(np.zeros(d))
    M, beta = np.vstack(rows), np.concatenate(offsets)
    return LinearSpec(final.task, final.link, final.coef @ M, final.coef @ beta + final.intercept, final.classes,
                      feature_names, dtype, dict(final.outputs), input_name, final.value_2d)  # fmt: skip


class FoldedEnsemble(NativeLinearModel):
    """An ensemble that is one linear model: scored by one kernel call per batch."""

    def __init__(
        self,
        spec: LinearSpec,
        members: tuple[Member, ...],
        reason: str,
        n_threads: int | None,
        baseline: np.ndarray | None = None,
    ) -> None:
        super().__init__(spec, n_threads=n_threads, baseline=baseline)
        self.members = members
        #: what it is made of (GetModel's backend_reason)
        self.native_reason = reason


class EnsembleModel:
    """Members scored on the same batch, once each, and combined (see the module
    docstring); the Model protocol, so that the service serves it as any model."""

    backend = "ensemble"

    def __init__(
        self,
        config: EnsembleConfig,
        feeds: Sequence[_Feed],
        signature: Signature,
        reason: str,
        final: LinearSpec | None = None,
        n_threads: int | None = None,
    ) -> None:
        self.config = config
        self.members = tuple(f.member for f in feeds)
        self.signature = signature
        #: how it is scored, and why it is not one linear model (GetModel's backend_reason)
        self.native_reason = reason
        self._combiner = config.combiner
        self._feeds = tuple(feeds)
        #: (predict, (output,), output, columns it gives, weight) per member
        self._calls = tuple(
            (f.member.model.predict, (f.output,), f.output, f.first + f.width, f.member.spec.weight) for f in feeds
        )
        self._total = float(sum(f.member.spec.weight for f in feeds))
        self._weighted = config.weighted
        self._dtype = signature.input.np_dtype
        self._d = signature.n_features
        self._all = signature.output_names
        self._roles = {o.name: o.role for o in signature.outputs}
        self._classes = classes_array(signature.classes) if signature.classes is not None else None
        if self._classes is not None:
            self._sorter = np.argsort(self._classes, kind="stable")
            self._sorted = self._classes[self._sorter]
        self._final = NativeLinearModel(final, n_threads=n_threads) if final is not None else None

    def output_names(self, requested: Iterable[str] | None) -> tuple[str, ...]:
        return requested_outputs(requested, self._all, self._roles, "is an ensemble of several models")

    def predict(self, X: Inputs, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Score X (n, d) with every member once and combine (an ensemble is
        tabular: one matrix, never inputs by name)."""
        names = self.output_names(outputs)
        if X.__class__ is not np.ndarray:
            if isinstance(X, Mapping):
                raise InvalidInput("this model takes one matrix, not inputs by name")
            X = np.asarray(X)
        if X.ndim != 2:
            raise InvalidInput(f"input must be a 2-D (rows, features) array, got {X.ndim} dimensions")
        if X.shape[1] != self._d:
            raise InvalidInput(f"expected {self._d} features, got {X.shape[1]}")
        if X.dtype.char not in "fd":
            raise InvalidInput(f"input dtype must be float32 or float64, got {X.dtype}")
        combiner = self._combiner
        if combiner == "stack":
            return self._stack(X, names)
        if combiner == "hard_vote":
            return {"label": self._vote(X)}
        acc = self._mean(X)
        if combiner == "mean":
            value = acc[:, 0] if self.signature.outputs[0].shape == (-1,) else acc
            return {"value": self._float(value)}
        out: dict[str, np.ndarray] = {}
        for name in names:
            if self._roles[name] == "label":
                assert self._classes is not None
                out[name] = self._classes[np.argmax(acc, axis=1)]
            else:
                out[name] = self._float(acc)
        return out

    def _float(self, a: np.ndarray) -> np.ndarray:
        return a if self._dtype == a.dtype else a.astype(self._dtype)

    def _mean(self, X: np.ndarray) -> np.ndarray:
        """sum_i w_i out_i / sum w (float64, rows x columns), members in order, as
        numpy.average over the members (what scikit-learn's voting computes)."""
        n = X.shape[0]
        parts = []
        for predict, want, name, columns, weight in self._calls:
            part = np.asarray(predict(X, want)[name], dtype=np.float64).reshape(n, columns)
            parts.append(part * weight if self._weighted else part)
        acc = parts[0].copy()
        for part in parts[1:]:
            acc += part
        acc /= self._total
        return acc

    def _vote(self, X: np.ndarray) -> np.ndarray:
        """The class with the most (weighted) votes, the first in class order on a
        tie: argmax of the counts, as scikit-learn's ``np.argmax(np.bincount(...))``."""
        assert self._classes is not None
        n = X.shape[0]
        counts = np.zeros((n, len(self._classes)))
        rows = np.arange(n)
        for predict, want, name, _, weight in self._calls:
            counts[rows, self._class_index(predict(X, want)[name])] += weight
        return self._classes[np.argmax(counts, axis=1)]

    def _class_index(self, labels: np.ndarray) -> np.ndarray:
        """Each label's position in the ensemble's classes."""
        labels = np.asarray(labels).reshape(-1)
        if self._sorted.dtype == object:
            labels = labels.astype(object)
        pos = np.searchsorted(self._sorted, labels)
        pos = np.minimum(pos, len(self._sorted) - 1)
        if not np.array_equal(self._sorted[pos], labels):
            raise InternalError("a member gave a label that is not one of the ensemble's classes")
        return self._sorter[pos]

    def _stack(self, X: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The final model on the members' outputs side by side (and X: passthrough)."""
        assert self._final is not None
        n = X.shape[0]
        meta = np.empty((n, self._final.spec.n_features))
        col = 0
        for (predict, want, name, columns, _), feed in zip(self._calls, self._feeds, strict=True):
            part = np.asarray(predict(X, want)[name]).reshape(n, columns)
            meta[:, col : col + feed.width] = part[:, feed.first : feed.first + feed.width]
            col += feed.width
        if col < meta.shape[1]:
            meta[:, col:] = X
        result = self._final.predict(meta, names)
        return {k: self._float(v) if v.dtype.kind == "f" else v for k, v in result.items()}
