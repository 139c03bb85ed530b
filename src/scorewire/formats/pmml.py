"""``model.pmml``: a PMML 4.1 to 4.4 ``RegressionModel`` read into a :class:`LinearSpec`.

The XML is parsed by defusedxml with DTDs forbidden (so no entity expansion and no
external references); every problem with a document — malformed or hostile XML, a
construct we do not support — is a :class:`ModelLoadError` of one line naming the
file: ``model.pmml: PMML RegressionModel: <what is wrong>``.

What is read, and how it maps (the formulas are the PMML Regression chapter's)::

    functionName    normalizationMethod  tables  ->  task / link        classes
    regression      none                 1           regression/identity
    classification  softmax              K > 2       softmax            table order
    classification  softmax              2           logistic, z = y_pos - y_neg
    classification  logit                2           logistic, z = y_1  [2nd, 1st]
    classification  logit (PMML 4.1/4.2) K > 2       sigmoid (p_j = 1/(1+exp(-y_j)))
    classification  none                 K >= 2      identity (p_j = y_j, j < K;
                                                               p_K = 1 - sum p_j)

Binary models are reduced to one decision column whose logistic is the
probability of ``classes[1]``. With ``logit`` the spec computes
``P(first) = 1/(1+exp(-y_1))`` and ``P(second) = 1 - P(first)``, so the second
table is the reference category and comes first in ``classes``; with ``softmax`` the
reference is the second table when it is the trivial one (intercept 0, no non-zero
coefficient, as nyoka and JPMML write it), else the first. A table whose value the
spec ignores (the second under binary ``logit``, the last under ``none``) must be
trivial: producers disagree about what a non-trivial one means, so it is rejected.
Multi-class ``logit`` is only defined by PMML 4.1/4.2 (each ``p_j`` on its own, not
normalised); PMML 4.3+ restricts ``logit`` to two categories, so such a 4.3/4.4
document is rejected rather than guessed at (JPMML normalises, one-vs-rest).

Features are the active ``MiningField``s, in MiningSchema order; a field a table
does not mention has coefficient 0 there. Only ``NumericPredictor`` with exponent 1
is supported. Class labels are the ``targetCategory`` values (integers when they
all are). Not applied, because scorewire inputs are dense finite floats: missing
and invalid value treatment (``missingValueReplacement``, ``invalidValueTreatment``,
``Interval``). Rejected: transformations the model uses (``DerivedField``s),
``outliers`` other than ``asIs``, ``Targets`` that rescale, cast or clip.
"""

from __future__ import annotations

import math
import os
import re
from xml.etree.ElementTree import Element, ParseError

import numpy as np
from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.ElementTree import fromstring

from ..errors import ModelLoadError
from .files import DEFAULT, ModelFiles
from .linear_spec import LinearSpec

__all__ = ["load_pmml", "parse_pmml"]

_NAMESPACE = re.compile(r"http://www\.dmg\.org/PMML-4_([1-4])")
_VERSION = re.compile(r"4\.([1-4])(?:\.\d+)?")
# xs:double without INF/NaN (non-finite numbers are rejected anyway)
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d{1,19}")  # short: int() of a huge string raises
_ONE = re.compile(r"\+?0*1")
#: children of <PMML> that are not models
_NOT_MODELS = frozenset(
    {"Header", "MiningBuildTask", "DataDictionary", "TransformationDictionary", "Extension"}
)
_NUMERIC_TYPES = frozenset({"double", "float", "integer"})
_SUPPORTED = "regression/none, classification/softmax, logit or none"


#: DataField name -> (optype, dataType, valid values)
_Fields = dict[str, tuple[str | None, str | None, tuple[str, ...]]]


class _Invalid(Exception):
    """A problem with the document; parse_pmml adds the source and re-raises."""


#: the parsed tree takes about this many bytes per element, at the least: a document
#: may have at most ``max_bytes / ELEMENT_BYTES`` elements (counted before parsing)
ELEMENT_BYTES = 64


def load_pmml(path: str | os.PathLike[str], files: ModelFiles = DEFAULT) -> LinearSpec:
    """Read a PMML file holding one RegressionModel; ModelLoadError naming it if not
    (see :class:`~scorewire.formats.files.ModelFiles`)."""
    return parse_pmml(files.read_file(path), source=os.fsdecode(path), files=files)


def parse_pmml(data: bytes, source: str = "<bytes>", files: ModelFiles = DEFAULT) -> LinearSpec:
    """Parse a PMML document (bytes) into a LinearSpec; see the module docstring.
    A document whose tree or coefficients would take more than ``files.max_bytes``
    is refused before they are allocated."""
    try:
        # every element starts with "<": an upper bound of the elements, read at memchr speed
        elements = data.count(b"<")
        if elements * ELEMENT_BYTES > files.max_bytes:
            raise _Invalid(files.too_large(f"{elements} XML elements would take", elements * ELEMENT_BYTES).message)
        return _read(_parse_xml(data), files)
    except (_Invalid, ModelLoadError) as exc:
        # LinearSpec's own checks raise ModelLoadError without the source
        message = " ".join(str(exc).split())
        raise ModelLoadError(f"{source}: PMML RegressionModel: {message}") from None


def _parse_xml(data: bytes) -> Element:
    try:
        return fromstring(data, forbid_dtd=True)
    except DTDForbidden:
        reason = "a DTD (<!DOCTYPE>) is not allowed"
    except EntitiesForbidden:
        reason = "XML entity declarations are not allowed"
    except ExternalReferenceForbidden:
        reason = "external XML references are not allowed"
    except DefusedXmlException:
        reason = "a forbidden XML construct"
    except ParseError as exc:
        reason = f"malformed XML ({exc})"
    except LookupError:  # <?xml encoding="..."?> names no codec Python knows
        reason = "unknown character encoding"
    except ValueError:
        reason = "unreadable XML"
    raise _Invalid(reason)


def _show(text: str | None) -> str:
    """A name from the document, quoted and cut short for a message."""
    return repr(text if text is None or len(text) <= 64 else text[:61] + "...")


class _Doc:
    """Element lookups in the document's PMML namespace (or none)."""

    def __init__(self, root: Element) -> None:
        ns, local = _split(root.tag)
        if local != "PMML":
            raise _Invalid(f"the root element is <{local[:64]}>, not <PMML>")
        ns_match = _NAMESPACE.fullmatch(ns) if ns else None
        if ns and ns_match is None:
            raise _Invalid(f"unsupported namespace {_show(ns)} (expected PMML 4.1 to 4.4)")
        version = (root.get("version") or "").strip()
        if version:
            v_match = _VERSION.fullmatch(version)
            if v_match is None:
                raise _Invalid(f"unsupported PMML version {_show(version)} (expected 4.1 to 4.4)")
            self.minor = int(v_match.group(1))
        elif ns_match is not None:
            self.minor = int(ns_match.group(1))
        else:
            raise _Invalid("no PMML version (neither a version attribute nor a namespace)")
        self.ns = ns
        self.q = f"{{{ns}}}" if ns else ""

    def all(self, parent: Element, name: str) -> list[Element]:
        return parent.findall(self.q + name)

    def optional(self, parent: Element, name: str) -> Element | None:
        found = self.all(parent, name)
        if len(found) > 1:
            raise _Invalid(f"more than one <{name}> in <{_split(parent.tag)[1]}>")
        return found[0] if found else None

    def need(self, parent: Element, name: str) -> Element:
        found = self.optional(parent, name)
        if found is None:
            raise _Invalid(f"no <{name}> in <{_split(parent.tag)[1]}>")
        return found

    def local(self, el: Element) -> str | None:
        """The element's name if it is in the PMML namespace, else None."""
        ns, local = _split(el.tag)
        return local if ns == self.ns else None


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _name(el: Element, what: str) -> str:
    name = el.get("name")
    if not name:
        raise _Invalid(f"a {what} has no name")
    return name


def _number(el: Element, attr: str, what: str, default: float | None = None) -> float:
    text = el.get(attr)
    if text is None:
        if default is None:
            raise _Invalid(f"{what} has no {attr}")
        return default
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        raise _Invalid(f"{what}: {attr} {_show(text)} is not a finite number")
    value = float(text)
    if math.isinf(value):  # e.g. 1e999
        raise _Invalid(f"{what}: {attr} {_show(text)} is not a finite number")
    return value


def _read(root: Element, files: ModelFiles = DEFAULT) -> LinearSpec:
    doc = _Doc(root)
    fields = _data_fields(doc, root)
    derived = _derived_names(doc, root)
    model = _the_model(doc, root)
    derived |= _derived_names(doc, model)
    if derived & set(fields):
        raise _Invalid(f"field {_show(min(derived & set(fields)))} is defined twice")
    features, target, target_optype = _mining_schema(doc, model, fields, derived)
    _check_targets(doc, model)
    coef, intercept, labels = _tables(doc, model, features, fields, target, derived, files)
    function = model.get("functionName")
    method = model.get("normalizationMethod", "none")
    if function == "regression":
        if coef.shape[0] != 1:
            raise _Invalid(f"a regression model needs 1 RegressionTable, got {coef.shape[0]}")
        if method != "none":
            raise _Invalid(
                f"normalizationMethod {_show(method)} is not supported for regression (only 'none')"
            )
        task, link, classes = "regression", "identity", None
    elif function == "classification":
        if target_optype not in (None, "categorical"):
            raise _Invalid(
                f"target optype {_show(target_optype)} is not supported (only categorical)"
            )
        task = "classification"
        link, coef, intercept, order = _classification(method, coef, intercept, doc.minor)
        classes = _class_labels([labels[i] for i in order])
    else:
        raise _Invalid(
            f"functionName {_show(function)} is not supported (regression or classification)"
        )
    return LinearSpec(
        task=task,
        link=link,
        coef=coef,
        intercept=intercept,
        classes=classes,
        feature_names=tuple(features),
        dtype="float64",
        input_name="input",
    )


def _data_fields(doc: _Doc, root: Element) -> _Fields:
    """DataField name -> (optype, dataType, valid values)."""
    fields: _Fields = {}
    dictionary = doc.need(root, "DataDictionary")
    for field in doc.all(dictionary, "DataField"):
        name = _name(field, "DataField")
        if name in fields:
            raise _Invalid(f"DataField {_show(name)} is defined twice")
        values = []
        for value in doc.all(field, "Value"):
            text = value.get("value")
            if text is None:
                raise _Invalid(f"a Value of DataField {_show(name)} has no value")
            if value.get("property", "valid") == "valid":
                values.append(text)
        fields[name] = (field.get("optype"), field.get("dataType"), tuple(values))
    return fields


def _derived_names(doc: _Doc, parent: Element) -> set[str]:
    """Names of the DerivedFields in a TransformationDictionary / LocalTransformations."""
    names: set[str] = set()
    for holder in ("TransformationDictionary", "LocalTransformations"):
        for block in doc.all(parent, holder):
            for field in doc.all(block, "DerivedField"):
                name = _name(field, "DerivedField")
                if name in names:
                    raise _Invalid(f"DerivedField {_show(name)} is defined twice")
                names.add(name)
    return names


def _the_model(doc: _Doc, root: Element) -> Element:
    models = [el for el in root if doc.local(el) not in (None, *_NOT_MODELS)]
    if not models:
        raise _Invalid("no RegressionModel in the document")
    if len(models) > 1:
        kinds = ", ".join(str(doc.local(m))[:64] for m in models[:5])
        raise _Invalid(
            f"the document holds {len(models)} models ({kinds}); exactly one RegressionModel is supported"
        )
    model = models[0]
    if doc.local(model) != "RegressionModel":
        raise _Invalid(f"{str(doc.local(model))[:64]} is not supported (only RegressionModel)")
    if model.get("isScorable", "true").strip() in ("false", "0"):
        raise _Invalid("the model is marked isScorable='false'")
    return model


def _mining_schema(
    doc: _Doc, model: Element, fields: _Fields, derived: set[str]
) -> tuple[list[str], str | None, str | None]:
    """The active fields (features, in order), the target field and its optype."""
    schema = doc.need(model, "MiningSchema")
    seen: set[str] = set()
    features: list[str] = []
    target = target_optype = None
    for mf in doc.all(schema, "MiningField"):
        name = _name(mf, "MiningField")
        if name in seen:
            raise _Invalid(f"MiningField {_show(name)} is listed twice")
        seen.add(name)
        if name not in fields:
            if name in derived:
                raise _Invalid(
                    f"MiningField {_show(name)} is a derived field (transformations are not supported)"
                )
            raise _Invalid(f"MiningField {_show(name)} is not in the DataDictionary")
        usage = mf.get("usageType", "active")
        if usage in ("target", "predicted"):
            if target is not None:
                raise _Invalid("more than one target field (only one is supported)")
            target = name
            target_optype = mf.get("optype") or fields[name][0]
        elif usage == "active":
            optype, data_type, _ = fields[name]
            optype = mf.get("optype") or optype
            if optype != "continuous" or data_type not in _NUMERIC_TYPES:
                raise _Invalid(
                    f"active field {_show(name)} is {optype}/{data_type}; only continuous numeric fields are supported"
                )
            if mf.get("outliers", "asIs") != "asIs":
                raise _Invalid(
                    f"MiningField {_show(name)}: outlier treatment {_show(mf.get('outliers'))} is not supported"
                )
            features.append(name)
    if not features:
        raise _Invalid("the MiningSchema has no active field")
    return features, target, target_optype


def _check_targets(doc: _Doc, model: Element) -> None:
    """Reject Targets that change the prediction (priors alone are harmless)."""
    targets = doc.optional(model, "Targets")
    for t in doc.all(targets, "Target") if targets is not None else ():
        what = f"Target {_show(t.get('field'))}"
        if any(t.get(a) is not None for a in ("castInteger", "min", "max")):
            raise _Invalid(f"{what}: castInteger/min/max are not supported")
        factor = _number(t, "rescaleFactor", what, default=1.0)
        constant = _number(t, "rescaleConstant", what, default=0.0)
        if factor != 1.0 or constant != 0.0:
            raise _Invalid(f"{what}: rescaleFactor/rescaleConstant are not supported")


def _tables(
    doc: _Doc,
    model: Element,
    features: list[str],
    fields: _Fields,
    target: str | None,
    derived: set[str],
    files: ModelFiles = DEFAULT,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Coefficients (tables, features), intercepts and targetCategory per table."""
    tables = doc.all(model, "RegressionTable")
    if not tables:
        raise _Invalid("no RegressionTable")
    n = len(tables) * len(features)  # the coefficient matrix: checked before it is allocated
    if 8 * n > files.max_bytes:
        raise _Invalid(
            files.too_large(f"{len(tables)} RegressionTables x {len(features)} features would take", 8 * n).message
        )
    column = {name: j for j, name in enumerate(features)}
    coef = np.zeros((len(tables), len(features)))
    intercept = np.zeros(len(tables))
    labels: list[str] = []
    for i, table in enumerate(tables):
        what = f"RegressionTable {i + 1}"
        intercept[i] = _number(table, "intercept", what)
        labels.append(table.get("targetCategory") or "")
        seen: set[str] = set()
        for child in table:
            kind = doc.local(child)
            if kind in ("CategoricalPredictor", "PredictorTerm"):
                raise _Invalid(f"{what}: {kind} is not supported (only NumericPredictor)")
            if kind != "NumericPredictor":
                continue  # Extension, or another namespace
            name = _name(child, "NumericPredictor")
            where = f"{what}, NumericPredictor {_show(name)}"
            if name in seen:
                raise _Invalid(f"{where} is listed twice")
            seen.add(name)
            if name not in column:
                if name in derived:
                    raise _Invalid(
                        f"{where} uses a derived field (transformations are not supported)"
                    )
                if name in fields:
                    raise _Invalid(f"{where} is not an active MiningField")
                raise _Invalid(f"{where} is not a field of the model")
            exponent = (child.get("exponent") or "1").strip()
            if not _ONE.fullmatch(exponent):
                raise _Invalid(f"{where}: exponent {_show(exponent)} is not supported (only 1)")
            coef[i, column[name]] = _number(child, "coefficient", where)
    if model.get("functionName") == "classification":
        _check_categories(labels, fields, target)
    return coef, intercept, labels


def _check_categories(labels: list[str], fields: _Fields, target: str | None) -> None:
    if not all(labels):
        raise _Invalid(f"RegressionTable {labels.index('') + 1} has no targetCategory")
    if len(set(labels)) != len(labels):
        raise _Invalid("two RegressionTables have the same targetCategory")
    values = fields[target][2] if target is not None else ()
    if values and len(values) != len(labels):
        raise _Invalid(f"{len(labels)} RegressionTables for {len(values)} target categories")
    if values and sorted(values) != sorted(labels):
        raise _Invalid("the targetCategory values are not the target field's values")


def _classification(
    method: str, coef: np.ndarray, intercept: np.ndarray, minor: int
) -> tuple[str, np.ndarray, np.ndarray, list[int]]:
    """(link, coef, intercept, table index of each class) for a classifier."""
    k = coef.shape[0]
    if k < 2:
        raise _Invalid(f"a classification model needs 2 or more RegressionTables, got {k}")
    trivial = [not coef[i].any() and intercept[i] == 0.0 for i in range(k)]
    # NOTE: folding tables together can overflow to inf; LinearSpec then rejects it
    with np.errstate(over="ignore", invalid="ignore"):
        return _fold(method, coef, intercept, trivial, minor)


def _fold(
    method: str, coef: np.ndarray, intercept: np.ndarray, trivial: list[bool], minor: int
) -> tuple[str, np.ndarray, np.ndarray, list[int]]:
    """The normalizationMethod's formula as a link over (possibly combined) tables."""
    k = coef.shape[0]
    if method == "softmax":
        if k > 2:
            return "softmax", coef, intercept, list(range(k))
        # P(pos) = exp(y_pos) / (exp(y_neg) + exp(y_pos)) = sigmoid(y_pos - y_neg)
        neg, pos = (1, 0) if trivial[1] and not trivial[0] else (0, 1)
        return "logistic", coef[pos] - coef[neg], intercept[[pos]] - intercept[[neg]], [neg, pos]
    if method == "logit":
        if k == 2:
            # P(first) = sigmoid(y_1), P(second) = 1 - P(first); y_2 is ignored
            if not trivial[1]:
                hint = " (here the first one is: put it last)" if trivial[0] else ""
                raise _Invalid(
                    "binary 'logit': the second RegressionTable must be the reference table "
                    f"(intercept 0, no non-zero coefficient){hint}"
                )
            return "logistic", coef[0], intercept[[0]], [1, 0]
        if minor >= 3:
            raise _Invalid(
                f"'logit' with {k} categories is undefined in PMML 4.3+ (only 2); "
                "use 'softmax', or a PMML 4.1/4.2 document for per-class sigmoids"
            )
        return "sigmoid", coef, intercept, list(range(k))  # p_j = sigmoid(y_j), not normalised
    if method == "none":
        # p_j = y_j for j < K, p_K = 1 - sum_{j<K} y_j: linear, so fold it into row K
        if not trivial[-1]:
            raise _Invalid(
                "'none': the last RegressionTable must be trivial (intercept 0, no non-zero coefficient)"
            )
        coef = coef.copy()
        intercept = intercept.copy()
        coef[-1] = -coef[:-1].sum(axis=0)
        intercept[-1] = 1.0 - intercept[:-1].sum()
        return "identity", coef, intercept, list(range(k))
    raise _Invalid(f"normalizationMethod {_show(method)} is not supported ({_SUPPORTED})")


def _class_labels(labels: list[str]) -> tuple[object, ...]:
    """Integers when every label is an integer string (and they stay distinct)."""
    if all(_INTEGER.fullmatch(s.strip()) for s in labels):
        ints = [int(s) for s in labels]
        if len(set(ints)) == len(ints) and all(-(2**63) <= i < 2**63 for i in ints):
            return tuple(ints)
    return tuple(labels)
