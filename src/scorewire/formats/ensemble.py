"""``[ensemble]`` in ``model.toml``: a model made of other models of the repository.

Example (soft voting of two classifiers, the first counting twice)::

    [ensemble]
    combiner = "soft_vote"          # mean | soft_vote | hard_vote | stack

    [[ensemble.members]]
    model = "credit-lr"             # another model of the repository
    version = 3                     # optional: the newest ready version
    weight = 2.0                    # optional (1): mean and voting

    [[ensemble.members]]
    model = "credit-mlp"

Combiners:

``mean``
    Regressors: the (weighted) mean of the members' values.
``soft_vote``
    Classifiers: the (weighted) mean of the members' probabilities; the label is
    the class of the largest mean (the first in class order on a tie), as
    scikit-learn's ``VotingClassifier(voting="soft")``.
``hard_vote``
    Classifiers: each member's label is a vote (of its weight); the label is the
    class with the most votes, the first in class order on a tie, as
    ``VotingClassifier(voting="hard")`` (``argmax`` of the weighted counts).
``stack``
    The members' outputs, side by side (and the input after them with
    ``passthrough = true``), are the input of a final linear or logistic model:
    ``model.json`` in the version directory, or inline as ``[ensemble.final]``
    (model.json's fields). Each member feeds one output, named by its role
    (``output = "probabilities" | "decision" | "value"``; by default its
    probabilities when it has them, else its decision, else its value); of two
    probability columns only the second, P(classes[1]), as scikit-learn's
    ``StackingClassifier`` does.

Members must be models, not ensembles. Which versions an ensemble serves is its
version directories' business, as for any model: a version directory holds no
artifact (``stack``: at most the final model's ``model.json``), and may hold
``reference.json`` for drift. Unknown keys are errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ModelLoadError
from .files import DEFAULT, ModelFiles, quoted
from .linear_spec import LinearSpec

COMBINERS = ("mean", "soft_vote", "hard_vote", "stack")
#: the roles a member may feed to a stacking ensemble's final model
FEED_ROLES = ("probabilities", "decision", "value")

_KEYS = {"combiner", "members", "passthrough", "final"}
_MEMBER_KEYS = {"model", "version", "weight", "output"}


@dataclass(frozen=True)
class EnsembleMember:
    """One member: a model of the repository and how it counts."""

    model: str
    #: None: the newest ready version (at the time the ensemble loads)
    version: int | None = None
    weight: float = 1.0
    #: ``stack``: the role of the output it feeds to the final model ("": the default)
    output: str = ""

    def describe(self) -> str:
        return quoted(self.model) + ("" if self.version is None else f" version {self.version}")


@dataclass(frozen=True)
class EnsembleConfig:
    """What ``[ensemble]`` says."""

    combiner: str
    members: tuple[EnsembleMember, ...]
    #: ``stack``: the input features also feed the final model, after the members' outputs
    passthrough: bool = False
    #: ``stack``: the final model when given inline (else ``model.json`` in the version directory)
    final: LinearSpec | None = None

    @property
    def member_names(self) -> frozenset[str]:
        return frozenset(m.model for m in self.members)

    @property
    def weighted(self) -> bool:
        return any(m.weight != 1.0 for m in self.members)


def parse_ensemble(section: Any, source: str, files: ModelFiles = DEFAULT) -> EnsembleConfig:
    """``[ensemble]`` of a model.toml as read by tomllib; ModelLoadError naming
    ``source`` when it is not a valid ensemble."""

    def fail(msg: str) -> ModelLoadError:
        return ModelLoadError(f"{source}: [ensemble] {msg}")

    if not isinstance(section, dict):
        raise fail("must be a table")
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(quoted(k) for k in unknown[:5])}")
    combiner = section.get("combiner")
    if combiner not in COMBINERS:
        raise fail(f'"combiner" must be one of {list(COMBINERS)}')
    raw = section.get("members")
    if not isinstance(raw, list) or not raw:
        raise fail('"members" must be a non-empty list of models')
    if len(raw) > 64:
        raise fail(f"has {len(raw)} members, at most 64")
    members = tuple(_member(m, i, combiner, fail) for i, m in enumerate(raw))
    if combiner != "stack":
        if sum(m.weight for m in members) <= 0:
            raise fail("the weights must not all be 0")
        for key in ("passthrough", "final"):
            if key in section:
                raise fail(f'"{key}" is for combiner "stack" only')
    passthrough = section.get("passthrough", False)
    if not isinstance(passthrough, bool):
        raise fail('"passthrough" must be true or false')
    final = None
    if "final" in section:
        final = _final(section["final"], files, fail)
    return EnsembleConfig(combiner, members, passthrough, final)


def _member(raw: Any, i: int, combiner: str, fail: Any) -> EnsembleMember:
    if isinstance(raw, str):
        raw = {"model": raw}
    if not isinstance(raw, dict):
        raise fail(f"member {i + 1}: a model name or a table with \"model\"")
    unknown = sorted(set(raw) - _MEMBER_KEYS)
    if unknown:
        raise fail(f"member {i + 1}: unknown key(s) {', '.join(quoted(k) for k in unknown[:5])}")
    model = raw.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= 128:
        raise fail(f'member {i + 1}: "model" must be a model name')
    version = raw.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or not 0 < version < 2**63):
        raise fail(f'member {i + 1}: "version" must be a positive integer')
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise fail(f'member {i + 1}: "weight" must be a finite number, 0 or more')
    if "weight" in raw and combiner == "stack":
        raise fail(f'member {i + 1}: "weight" is for mean and voting; a stacking ensemble\'s final model weighs its members')
    output = raw.get("output", "")
    if output and combiner != "stack":
        raise fail(f'member {i + 1}: "output" is for combiner "stack" only')
    if output not in ("", *FEED_ROLES):
        raise fail(f'member {i + 1}: "output" must be one of {list(FEED_ROLES)}')
    return EnsembleMember(model, version, float(weight), output)


def _final(raw: Any, files: ModelFiles, fail: Any) -> LinearSpec:
    from .linear_json import FORMAT, FORMAT_VERSION, spec_from_document

    if not isinstance(raw, dict):
        raise fail('"final" must be a table (the fields of a model.json)')
    try:
        return spec_from_document({"format": FORMAT, "format_version": FORMAT_VERSION, **raw}, files)
    except ModelLoadError as exc:
        raise fail(f"final: {exc.message}") from None


def ensemble_toml(config: EnsembleConfig, description: str = "") -> str:
    """A model.toml holding ``config`` (what ``scorewire export`` writes; the final
    model of a stacking ensemble goes to its version directory, not here)."""
    import json

    def string(s: str) -> str:  # a TOML basic string: JSON's escapes are TOML's
        return json.dumps(s, ensure_ascii=True)

    lines = []
    if description:
        lines.append(f"description = {string(description)}")
        lines.append("")
    lines += ["[ensemble]", f"combiner = {string(config.combiner)}"]
    if config.combiner == "stack":
        lines.append(f"passthrough = {'true' if config.passthrough else 'false'}")
    for m in config.members:
        lines += ["", "[[ensemble.members]]", f"model = {string(m.model)}"]
        if m.version is not None:
            lines.append(f"version = {m.version}")
        if config.combiner != "stack":
            lines.append(f"weight = {m.weight!r}")
        if m.output:
            lines.append(f"output = {string(m.output)}")
    return "\n".join(lines) + "\n"
