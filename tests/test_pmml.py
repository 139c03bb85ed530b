"""PMML RegressionModel → LinearSpec → native kernel.

1. Hand-written documents, scored by the kernel and compared with the PMML
   Regression chapter's formulas evaluated here with NumPy (1e-12).
2. Documents nyoka writes for scikit-learn models trained here, compared with
   scikit-learn (tolerance derived from the 16 decimals nyoka writes).
3. Hostile and unsupported documents: each is a one-line ModelLoadError naming
   the file.

Documents that are scored run on both of the kernel's paths (the ``simd`` fixture).
"""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from nyoka import skl_to_pmml
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from scorewire.backends.native import NativeLinearModel
from scorewire.errors import Code, ModelLoadError
from scorewire.formats.pmml import load_pmml, parse_pmml

from .parity import (
    assert_decisions_close,
    assert_labels_equal,
    assert_proba_close,
    decision_bound,
    decision_scale,
)

FEATURES = ("age", "income", "debt", "score")


def pmml_doc(
    tables,
    *,
    function="classification",
    method=None,
    target_values=None,
    version="4.4",
    namespace=True,
    target_optype="categorical",
):
    """A PMML document: ``tables`` is a list of (targetCategory, intercept, {field: coef}).

    Numbers are written with repr, so the document holds exactly these doubles.
    DataDictionary: the four FEATURES, a supplementary "id" and the target "y";
    MiningSchema lists them in the order id, FEATURES, y.
    """
    ns = f' xmlns="http://www.dmg.org/PMML-{version.replace(".", "_")[:3]}"' if namespace else ""
    values = "".join(f'<Value value="{v}"/>' for v in target_values or ())
    target_type = "double" if function == "regression" else "string"
    target_op = "continuous" if function == "regression" else target_optype
    fields = "".join(f'<DataField name="{f}" optype="continuous" dataType="double"/>' for f in FEATURES)
    mining = "".join(f'<MiningField name="{f}"/>' for f in FEATURES)
    body = []
    for category, intercept, coefs in tables:
        cat = f' targetCategory="{category}"' if category is not None else ""
        preds = "".join(
            f'<NumericPredictor name="{f}" exponent="1" coefficient="{c!r}"/>' for f, c in coefs.items()
        )
        body.append(f'<RegressionTable intercept="{intercept!r}"{cat}>{preds}</RegressionTable>')
    norm = f' normalizationMethod="{method}"' if method else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<PMML{ns} version="{version}">
  <Header description="hand-written"/>
  <DataDictionary>
    <DataField name="id" optype="continuous" dataType="integer"/>
    {fields}
    <DataField name="y" optype="{target_op}" dataType="{target_type}">{values}</DataField>
  </DataDictionary>
  <RegressionModel functionName="{function}"{norm}>
    <MiningSchema>
      <MiningField name="id" usageType="supplementary"/>
      {mining}
      <MiningField name="y" usageType="target"/>
    </MiningSchema>
    {"".join(body)}
  </RegressionModel>
</PMML>
"""


def _load(tmp_path, text, name="model.pmml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_pmml(path)


def _y(X, table):
    """y_j = intercept_j + sum_i coefficient_ji * x_i, straight from a table."""
    _, intercept, coefs = table
    return intercept + sum(c * X[:, FEATURES.index(f)] for f, c in coefs.items())


def _sigmoid(y):
    return 1.0 / (1.0 + np.exp(-y))


@pytest.fixture
def X(rng):
    return rng.normal(size=(257, len(FEATURES))) * np.array([10.0, 1000.0, 5.0, 1.0])


# NumericPredictors in another order than the MiningSchema, one field left out
REGRESSION = [(None, 3.25, {"debt": -1.25, "age": 0.5, "income": 2.5e-3})]
BINARY = [("yes", 0.3, {"age": 0.08, "debt": -0.4, "score": 1.5}), ("no", 0.0, {})]
MULTI = [
    ("1", 0.5, {"age": 0.05, "income": -1e-3}),
    ("2", -0.25, {"debt": 0.3, "score": -0.7}),
    ("3", 0.0, {"age": -0.02, "income": 5e-4, "debt": -0.1, "score": 0.9}),
]


# 1. hand-written documents ------------------------------------------------------
@pytest.mark.usefixtures("simd")
def test_regression(tmp_path, X):
    spec = _load(tmp_path, pmml_doc(REGRESSION, function="regression", method="none"))
    assert (spec.task, spec.link, spec.feature_names) == ("regression", "identity", FEATURES)
    assert spec.coef[0, FEATURES.index("score")] == 0.0
    out = NativeLinearModel(spec).predict(X)
    assert set(out) == {"value"} and out["value"].shape == (len(X),)
    assert_decisions_close(out["value"], _y(X, REGRESSION[0]), decision_scale(X, spec.coef, spec.intercept), "float64")


@pytest.mark.parametrize("version", ["4.1", "4.2", "4.3", "4.4", "4.4.1"])
@pytest.mark.parametrize("namespace", [True, False])
def test_every_4x_version_with_or_without_namespace(tmp_path, X, version, namespace):
    text = pmml_doc(REGRESSION, function="regression", version=version, namespace=namespace)
    spec = _load(tmp_path, text)
    out = NativeLinearModel(spec).predict(X)
    # relative to the sum's scale, as test_regression: a value that cancels to near 0
    # (1.4e-4 from terms of ~10) differs from NumPy's sum in its last bits
    assert_decisions_close(out["value"], _y(X, REGRESSION[0]), decision_scale(X, spec.coef, spec.intercept), "float64")


@pytest.mark.usefixtures("simd")
def test_binary_logit(tmp_path, X):
    # spec: P(first) = 1 / (1 + exp(-y_1)), P(second) = 1 - P(first)
    spec = _load(tmp_path, pmml_doc(BINARY, method="logit", target_values=["no", "yes"]))
    assert (spec.link, spec.classes) == ("logistic", ("no", "yes"))
    p_yes = _sigmoid(_y(X, BINARY[0]))
    out = NativeLinearModel(spec).predict(X)
    assert_proba_close(out["probabilities"], np.column_stack([1.0 - p_yes, p_yes]), "float64")
    y, scale = _y(X, BINARY[0]), decision_scale(X, spec.coef, spec.intercept)
    assert_decisions_close(out["decision"][:, 0], y, scale, "float64")
    assert_labels_equal(out["label"], np.where(p_yes > 0.5, "yes", "no"), y, decision_bound(y, scale, "float64"))


@pytest.mark.usefixtures("simd")
def test_binary_softmax_is_reduced_to_one_logistic_column(tmp_path, X):
    # spec: p_j = exp(y_j) / sum_i exp(y_i); neither table is the trivial one
    tables = [("a", 0.2, {"age": 0.03, "score": -0.5}), ("b", -0.1, {"debt": 0.2, "score": 0.4})]
    spec = _load(tmp_path, pmml_doc(tables, method="softmax"))
    assert (spec.link, spec.classes, spec.n_decisions) == ("logistic", ("a", "b"), 1)
    e = np.exp(np.column_stack([_y(X, t) for t in tables]))
    out = NativeLinearModel(spec).predict(X)
    assert_proba_close(out["probabilities"], e / e.sum(axis=1, keepdims=True), "float64")
    # the trivial (reference) table second, as nyoka writes it: it becomes classes[0]
    spec = _load(tmp_path, pmml_doc(BINARY, method="softmax"))
    assert spec.classes == ("no", "yes")
    p_yes = _sigmoid(_y(X, BINARY[0]))
    assert_proba_close(NativeLinearModel(spec).predict(X)["probabilities"][:, 1], p_yes, "float64")


@pytest.mark.usefixtures("simd")
def test_multiclass_softmax(tmp_path, X):
    spec = _load(tmp_path, pmml_doc(MULTI, method="softmax", target_values=["1", "2", "3"]))
    assert (spec.link, spec.classes) == ("softmax", (1, 2, 3))
    y = np.column_stack([_y(X, t) for t in MULTI])
    e = np.exp(y - y.max(axis=1, keepdims=True))
    out = NativeLinearModel(spec).predict(X)
    assert_proba_close(out["probabilities"], e / e.sum(axis=1, keepdims=True), "float64")
    assert out["label"].dtype == np.int64
    bound = decision_bound(y, decision_scale(X, spec.coef, spec.intercept), "float64")
    assert_labels_equal(out["label"], np.array([1, 2, 3])[y.argmax(axis=1)], y, bound)


@pytest.mark.usefixtures("simd")
def test_multiclass_logit_pmml42_is_per_class_sigmoid(tmp_path, X):
    # PMML 4.1/4.2: p_j = 1 / (1 + exp(-y_j)) for each category, not normalised
    spec = _load(tmp_path, pmml_doc(MULTI, method="logit", version="4.2"))
    assert spec.link == "sigmoid"
    y = np.column_stack([_y(X, t) for t in MULTI])
    out = NativeLinearModel(spec).predict(X)
    assert_proba_close(out["probabilities"], _sigmoid(y), "float64")
    bound = decision_bound(y, decision_scale(X, spec.coef, spec.intercept), "float64")
    assert_labels_equal(out["label"], np.array([1, 2, 3])[y.argmax(axis=1)], y, bound)


def test_multiclass_logit_is_undefined_in_pmml43_and_later(tmp_path):
    for version in ("4.3", "4.4"):
        with pytest.raises(ModelLoadError, match=r"'logit' with 3 categories is undefined in PMML 4\.3\+"):
            _load(tmp_path, pmml_doc(MULTI, method="logit", version=version))


@pytest.mark.usefixtures("simd")
def test_classification_none(tmp_path, X):
    # spec: p_j = y_j for j < K, p_K = 1 - sum_{j<K} p_j (the last table is not used)
    tables = [*MULTI[:2], ("3", 0.0, {})]
    spec = _load(tmp_path, pmml_doc(tables, method="none"))
    assert spec.link == "identity"
    y1, y2 = _y(X, tables[0]), _y(X, tables[1])
    p = np.column_stack([y1, y2, 1.0 - y1 - y2])
    out = NativeLinearModel(spec).predict(X)
    scale = np.abs(X) @ np.abs(spec.coef).T + np.abs(spec.intercept) + 1.0
    assert np.all(np.abs(out["probabilities"] - p) <= 1e-12 * scale)
    assert_labels_equal(out["label"], np.array([1, 2, 3])[p.argmax(axis=1)], p, 1e-12 * scale)


def test_labels_stay_strings_unless_all_are_short_integers(tmp_path):
    big = "9" * 5000
    spec = _load(tmp_path, pmml_doc([(big, 0.5, {"age": 1.0}), ("2", 0.0, {})], method="logit"))
    assert spec.classes == ("2", big)
    spec = _load(tmp_path, pmml_doc([("-3", 0.5, {"age": 1.0}), ("+7", 0.0, {})], method="logit"))
    assert spec.classes == (7, -3)


def test_exponent_one_spelled_differently(tmp_path):
    spec = _load(tmp_path, REG.replace('exponent="1"', 'exponent="+01"'))
    assert spec.coef[0, FEATURES.index("debt")] == -1.25


def test_parse_pmml_from_bytes():
    spec = parse_pmml(pmml_doc(REGRESSION, function="regression").encode())
    assert spec.n_features == len(FEATURES)
    with pytest.raises(ModelLoadError, match=r"^<bytes>: PMML RegressionModel: "):
        parse_pmml(b"<PMML")


# 2. nyoka exports of scikit-learn models -------------------------------------------
# nyoka 5.5 writes every coefficient as "{:.16f}": 16 decimals, not 16 significant
# digits. So each coefficient (and the intercept) is off by at most 0.5e-16 in
# absolute terms, and a decision by at most 0.5e-16 * (1 + sum|x_j|) on top of the
# rounding any two summation orders differ by (tests/parity.py's 1e-12 of the scale).


def _nyoka_export(pipeline, names, path):
    # NOTE: nyoka 5.5's skl_to_pmml passes open(path, "w") to export() and never
    # closes it; CPython closes it when the call returns, with a ResourceWarning the
    # suite would turn into an error. Not ours to fix: silence it for this call only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        skl_to_pmml(pipeline, names, "y", str(path))
        gc.collect()
    return path


def _decimal_slack(X):
    return 0.5e-16 * (1.0 + np.abs(X).sum(axis=1))


def _nyoka_bound(want, X, spec):
    """How far a decision of the nyoka document may be from scikit-learn's ``want``."""
    scale = decision_scale(X, spec.coef, spec.intercept)
    return decision_bound(want, scale, "float64") + _decimal_slack(X)[:, None]


def _assert_nyoka_decisions(got, want, X, spec):
    assert np.all(np.abs(got.reshape(want.shape) - want) <= _nyoka_bound(want, X, spec))


@pytest.mark.usefixtures("simd")
def test_nyoka_linear_regression(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    names = [f"x{j}" for j in range(X.shape[1])]
    est = LinearRegression().fit(X, y)
    spec = load_pmml(_nyoka_export(Pipeline([("model", est)]), names, tmp_path / "model.pmml"))
    assert spec.feature_names == tuple(names)
    got = NativeLinearModel(spec).predict(X)["value"]
    _assert_nyoka_decisions(got[:, None], est.predict(X)[:, None], X, spec)


def test_nyoka_scaler_pipeline_is_rejected(tmp_path):
    # nyoka writes the StandardScaler as TransformationDictionary DerivedFields,
    # which scorewire does not evaluate
    X, y = load_breast_cancer(return_X_y=True)
    names = [f"x{j}" for j in range(X.shape[1])]
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
    path = _nyoka_export(pipe, names, tmp_path / "model.pmml")
    with pytest.raises(ModelLoadError, match=r"uses a derived field \(transformations are not supported\)"):
        load_pmml(path)


@pytest.mark.usefixtures("simd")
def test_nyoka_binary_logistic_regression(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)  # scaled beforehand: see the test above
    names = [f"x{j}" for j in range(X.shape[1])]
    est = LogisticRegression(max_iter=5000).fit(X, y)
    spec = load_pmml(_nyoka_export(Pipeline([("model", est)]), names, tmp_path / "model.pmml"))
    assert (spec.link, spec.classes) == ("logistic", (0, 1))
    out = NativeLinearModel(spec).predict(X)
    dec = est.decision_function(X)[:, None]
    _assert_nyoka_decisions(out["decision"], dec, X, spec)
    # |dp| <= |dz| / 4, far inside 1e-12 relative; P(0) = 1 - P(1) in sklearn: 1e-15 absolute
    assert_proba_close(out["probabilities"], est.predict_proba(X), "float64")
    assert_labels_equal(out["label"], est.predict(X), dec, _nyoka_bound(dec, X, spec))


def test_nyoka_multiclass_logistic_regression_is_a_model_chain(tmp_path):
    # nyoka 5.5 writes a multi-class LogisticRegression as a MiningModel chaining one
    # 'logit' RegressionModel per class into a 'simplemax' one (one-vs-rest), which is
    # not what scikit-learn's (multinomial, softmax) predict_proba computes.
    X, y = load_iris(return_X_y=True)
    pipe = Pipeline([("model", LogisticRegression(max_iter=5000).fit(X, y))])
    path = _nyoka_export(pipe, [f"x{j}" for j in range(4)], tmp_path / "model.pmml")
    with pytest.raises(ModelLoadError, match="MiningModel is not supported"):
        load_pmml(path)


@pytest.mark.usefixtures("simd")
def test_nyoka_written_multinomial_softmax(tmp_path):
    # The softmax RegressionModel nyoka's exporter does not produce, built from nyoka's
    # own PMML 4.4 classes and written by its serializer, with its number format.
    import nyoka.PMML44 as pml

    X, y = load_iris(return_X_y=True)
    names = [f"x{j}" for j in range(4)]
    est = LogisticRegression(max_iter=5000).fit(X, y)
    tables = [
        pml.RegressionTable(
            intercept=f"{b:.16f}",
            targetCategory=str(c),
            NumericPredictor=[pml.NumericPredictor(name=n, coefficient=f"{w:.16f}") for n, w in zip(names, row, strict=True)],
        )
        for c, row, b in zip(est.classes_, est.coef_, est.intercept_, strict=True)
    ]
    doc = pml.PMML(
        version="4.4",
        Header=pml.Header(),
        DataDictionary=pml.DataDictionary(
            numberOfFields=5,
            DataField=[pml.DataField(name=n, optype="continuous", dataType="double") for n in names]
            + [pml.DataField(name="y", optype="categorical", dataType="integer", Value=[pml.Value(value=str(c)) for c in est.classes_])],
        ),
        RegressionModel=[
            pml.RegressionModel(
                functionName="classification",
                normalizationMethod="softmax",
                MiningSchema=pml.MiningSchema(
                    MiningField=[pml.MiningField(name=n) for n in names] + [pml.MiningField(name="y", usageType="target")]
                ),
                RegressionTable=tables,
            )
        ],
    )
    path = tmp_path / "model.pmml"
    with open(path, "w", encoding="utf-8") as fh:
        doc.export(fh, 0)
    assert 'xmlns="http://www.dmg.org/PMML-4_4"' in path.read_text()
    spec = load_pmml(path)
    assert (spec.link, spec.classes) == ("softmax", (0, 1, 2))
    out = NativeLinearModel(spec).predict(X)
    dec = est.decision_function(X)
    _assert_nyoka_decisions(out["decision"], dec, X, spec)
    assert_proba_close(out["probabilities"], est.predict_proba(X), "float64")
    assert_labels_equal(out["label"], est.predict(X), dec, _nyoka_bound(dec, X, spec))


# 3. hostile and unsupported documents -----------------------------------------------
BASE = pmml_doc(BINARY, method="logit", target_values=["no", "yes"])
REG = pmml_doc(REGRESSION, function="regression")
NS4 = 'xmlns="http://www.dmg.org/PMML-4_4" version="4.4"'

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE PMML [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<PMML version="4.4"><Header description="&lol9;"/></PMML>
"""
XXE = BASE.replace(
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<?xml version="1.0"?><!DOCTYPE PMML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
).replace('description="hand-written"/>', 'description="x">&xxe;</Header>')


def _swap(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


HOSTILE = {
    # XML-level attacks and damage
    "billion-laughs": (BILLION_LAUGHS, "a DTD (<!DOCTYPE>) is not allowed"),
    "xxe": (XXE, "a DTD (<!DOCTYPE>) is not allowed"),
    "external-dtd": ('<!DOCTYPE PMML SYSTEM "http://example.invalid/pmml.dtd">\n' + REG, "DTD"),
    "plain-dtd": (_swap(REG, "\n<PMML", "\n<!DOCTYPE PMML>\n<PMML"), "DTD"),
    "truncated": (BASE[: len(BASE) // 2], "malformed XML"),
    "empty": ("", "malformed XML"),
    "not-xml": ("PK\x03\x04 definitely a zip file", "malformed XML"),
    "unknown-encoding": ('<?xml version="1.0" encoding="x-bogus"?><PMML/>', "unknown character encoding"),
    # not (our) PMML
    "root": (f"<ModelDoc {NS4}/>", "not <PMML>"),
    "pmml-3": (_swap(REG, "PMML-4_4", "PMML-3_2"), "unsupported namespace"),
    "version-4.0": (_swap(REG, 'version="4.4"', 'version="4.0"'), "unsupported PMML version '4.0'"),
    "no-model": (f"<PMML {NS4}><DataDictionary/></PMML>", "no RegressionModel"),
    "two-models": (_swap(REG, "</PMML>", REG[REG.index("<RegressionModel") : REG.index("</PMML>")] + "</PMML>"), "2 models"),
    "tree-model": (f'<PMML {NS4}><DataDictionary/><TreeModel functionName="regression"/></PMML>', "TreeModel is not supported"),
    "not-scorable": (_swap(REG, "<RegressionModel ", '<RegressionModel isScorable="false" '), "isScorable"),
    "no-mining-schema": (_swap(REG, "<MiningSchema>", "<MiningSchemaX>").replace("</MiningSchema>", "</MiningSchemaX>"), "no <MiningSchema>"),
    # wrong counts
    "too-few-tables": (pmml_doc(BINARY, method="logit", target_values=["no", "yes", "maybe"]), "2 RegressionTables for 3 target categories"),
    "regression-two-tables": (pmml_doc(REGRESSION * 2, function="regression"), "needs 1 RegressionTable, got 2"),
    "classification-one-table": (pmml_doc(BINARY[:1], method="softmax"), "needs 2 or more RegressionTables"),
    "wrong-categories": (pmml_doc(BINARY, method="logit", target_values=["no", "si"]), "not the target field's values"),
    # normalisation
    "probit": (pmml_doc(BINARY, method="probit"), "normalizationMethod 'probit' is not supported"),
    "simplemax": (pmml_doc(MULTI, method="simplemax"), "normalizationMethod 'simplemax' is not supported"),
    "bogus-method": (pmml_doc(MULTI, method="Softmax"), "normalizationMethod 'Softmax' is not supported"),
    "regression-logit": (pmml_doc(REGRESSION, function="regression", method="logit"), "only 'none'"),
    "logit-second-not-reference": (pmml_doc([BINARY[0], ("no", 0.5, {})], method="logit"), "must be the reference table"),
    "logit-reference-first": (pmml_doc(BINARY[::-1], method="logit"), "put it last"),
    "none-last-not-trivial": (pmml_doc(MULTI, method="none"), "last RegressionTable must be trivial"),
    "ordinal-target": (pmml_doc(BINARY, method="logit", target_optype="ordinal"), "target optype 'ordinal' is not supported"),
    "clustering": (_swap(REG, 'functionName="regression"', 'functionName="clustering"'), "functionName 'clustering'"),
    # predictors
    "exponent-2": (_swap(REG, 'exponent="1"', 'exponent="2"'), "exponent '2' is not supported"),
    "exponent-huge": (_swap(REG, 'exponent="1"', f'exponent="{"1" * 5000}"'), "is not supported (only 1)"),
    "exponent-fraction": (_swap(REG, 'exponent="1"', 'exponent="0.5"'), "exponent '0.5' is not supported"),
    "categorical-predictor": (_swap(REG, "</RegressionTable>", '<CategoricalPredictor name="age" value="1" coefficient="1"/></RegressionTable>'), "CategoricalPredictor is not supported"),
    "predictor-term": (_swap(REG, "</RegressionTable>", '<PredictorTerm coefficient="1"><FieldRef field="age"/><FieldRef field="debt"/></PredictorTerm></RegressionTable>'), "PredictorTerm is not supported"),
    "unknown-field": (_swap(REG, 'name="debt" exponent', 'name="debts" exponent'), "'debts' is not a field of the model"),
    "target-as-predictor": (_swap(REG, 'name="debt" exponent', 'name="y" exponent'), "'y' is not an active MiningField"),
    "no-coefficient": (_swap(REG, ' coefficient="-1.25"', ""), "has no coefficient"),
    "no-intercept": (_swap(REG, ' intercept="3.25"', ""), "has no intercept"),
    "no-target-category": (_swap(BASE, ' targetCategory="no"', ""), "RegressionTable 2 has no targetCategory"),
    # numbers
    "inf": (_swap(REG, 'coefficient="-1.25"', 'coefficient="INF"'), "'INF' is not a finite number"),
    "nan": (_swap(REG, 'intercept="3.25"', 'intercept="NaN"'), "'NaN' is not a finite number"),
    "overflow": (_swap(REG, 'coefficient="-1.25"', 'coefficient="1e999"'), "'1e999' is not a finite number"),
    "underscore": (_swap(REG, 'coefficient="-1.25"', 'coefficient="1_000"'), "'1_000' is not a finite number"),
    "hex": (_swap(REG, 'coefficient="-1.25"', 'coefficient="0x1p3"'), "is not a finite number"),
    "folds-to-inf": (
        pmml_doc([("a", 0.0, {"age": 1.5e308}), ("b", 0.0, {"age": -1.5e308})], method="softmax"),
        "must be finite",
    ),
    "comma": (_swap(REG, 'coefficient="-1.25"', 'coefficient="1,25"'), "is not a finite number"),
    # duplicates
    "dup-datafield": (_swap(REG, '<DataField name="id"', '<DataField name="age" optype="continuous" dataType="double"/><DataField name="id"'), "DataField 'age' is defined twice"),
    "dup-miningfield": (_swap(REG, '<MiningField name="id" usageType="supplementary"/>', '<MiningField name="age"/>'), "MiningField 'age' is listed twice"),
    "dup-predictor": (_swap(REG, "</RegressionTable>", '<NumericPredictor name="age" coefficient="1"/></RegressionTable>'), "'age' is listed twice"),
    "dup-category": (pmml_doc([BINARY[0], ("yes", 0.0, {})], method="logit"), "same targetCategory"),
    "two-targets": (_swap(REG, 'usageType="supplementary"', 'usageType="target"'), "more than one target field"),
    # fields and transformations
    "derived-global": (
        _swap(REG, "</DataDictionary>", '</DataDictionary><TransformationDictionary><DerivedField name="d" optype="continuous" dataType="double"><FieldRef field="age"/></DerivedField></TransformationDictionary>')
        .replace('name="debt" exponent', 'name="d" exponent'),
        "'d' uses a derived field",
    ),
    "derived-local": (
        _swap(REG, "</MiningSchema>", '</MiningSchema><LocalTransformations><DerivedField name="d" optype="continuous" dataType="double"><Apply function="log"><FieldRef field="age"/></Apply></DerivedField></LocalTransformations>')
        .replace('name="debt" exponent', 'name="d" exponent'),
        "'d' uses a derived field",
    ),
    "derived-shadows-field": (_swap(REG, "</MiningSchema>", '</MiningSchema><LocalTransformations><DerivedField name="age" optype="continuous" dataType="double"/></LocalTransformations>'), "'age' is defined twice"),
    "categorical-feature": (_swap(REG, '<DataField name="debt" optype="continuous"', '<DataField name="debt" optype="categorical"'), "'debt' is categorical/double"),
    "string-feature": (_swap(REG, '<DataField name="debt" optype="continuous" dataType="double"', '<DataField name="debt" optype="continuous" dataType="string"'), "continuous/string"),
    "unknown-mining-field": (_swap(REG, '<MiningField name="id"', '<MiningField name="zz"/><MiningField name="id"'), "'zz' is not in the DataDictionary"),
    "outliers": (_swap(REG, '<MiningField name="age"/>', '<MiningField name="age" outliers="asExtremeValues" lowValue="0" highValue="1"/>'), "outlier treatment"),
    "no-active-field": (
        f'<PMML {NS4}><DataDictionary><DataField name="y" optype="continuous" dataType="double"/></DataDictionary>'
        '<RegressionModel functionName="regression"><MiningSchema><MiningField name="y" usageType="target"/></MiningSchema>'
        '<RegressionTable intercept="1"/></RegressionModel></PMML>',
        "no active field",
    ),
    "targets-rescale": (_swap(REG, "</MiningSchema>", '</MiningSchema><Targets><Target field="y" rescaleFactor="2"/></Targets>'), "rescaleFactor/rescaleConstant are not supported"),
    "targets-clip": (_swap(REG, "</MiningSchema>", '</MiningSchema><Targets><Target field="y" min="0"/></Targets>'), "castInteger/min/max"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_rejected_with_one_clear_line(tmp_path, case):
    text, reason = HOSTILE[case]
    path = tmp_path / f"{case}.pmml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ModelLoadError) as info:
        load_pmml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: PMML RegressionModel: "), message
    assert reason in message, message
    assert "\n" not in message and "Traceback" not in message, message
    assert info.value.code is Code.LOAD_ERROR
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_xxe_does_not_read_the_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    text = XXE.replace("file:///etc/passwd", secret.as_uri())
    with pytest.raises(ModelLoadError) as info:
        parse_pmml(text.encode(), source="xxe.pmml")
    assert "TOP-SECRET" not in str(info.value)


def test_unreadable_file(tmp_path):
    for path in (tmp_path / "missing.pmml", tmp_path):
        with pytest.raises(ModelLoadError, match=r"^.+: cannot read \(") as info:
            load_pmml(path)
        assert str(info.value).startswith(str(path))
