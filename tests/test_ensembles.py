"""Ensembles without a server: model.toml's [ensemble], what each combiner
computes, which ensembles fold into one linear model (and that those score with one
kernel call and equal their members' combination), one pass over the members per
batch, and how an ensemble follows its members through the repository."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from scorewire import ModelRepository, NativeLinearModel, State, reference_statistics
from scorewire.backends.ensemble import EnsembleModel, FoldedEnsemble, Member, build_ensemble
from scorewire.errors import InvalidInput, ModelLoadError, Unavailable
from scorewire.formats.ensemble import EnsembleConfig, EnsembleMember, ensemble_toml, parse_ensemble
from scorewire.formats.linear_spec import LinearSpec
from scorewire.formats.model_toml import BatchConfig, ModelConfig, parse_model_config
from scorewire.service import ScoringService
from scorewire.types import EXPLANATIONS, PredictRequest

from .ensembles import (
    CLASSES,
    Recording,
    linear_doc,
    members_toml,
    write_ensemble,
    write_json_model,
)
from .parity import decision_scale

ROOT = Path(__file__).resolve().parent.parent
D = 4


def logistic(rng, k=3, classes=CLASSES, dtype="float64", names=None) -> NativeLinearModel:
    link = "logistic" if k == 1 else "softmax"
    return NativeLinearModel(LinearSpec("classification", link, rng.normal(size=(k, D)), rng.normal(size=k),
                                        classes=classes, dtype=dtype, feature_names=names))  # fmt: skip


def regressor(rng, t=1) -> NativeLinearModel:
    return NativeLinearModel(LinearSpec("regression", "identity", rng.normal(size=(t, D)) * 3, rng.normal(size=t) * 5))


def config(combiner, n, weights=None, outputs=None, passthrough=False, final=None) -> EnsembleConfig:
    weights = weights or [1.0] * n
    outputs = outputs or [""] * n
    return EnsembleConfig(combiner, tuple(EnsembleMember(f"m{i}", None, float(w), o)
                                          for i, (w, o) in enumerate(zip(weights, outputs, strict=True))),
                          passthrough, final)  # fmt: skip


def members(cfg: EnsembleConfig, models) -> list[Member]:
    return [Member(m.model, 1, model, m) for m, model in zip(cfg.members, models, strict=True)]


# ------------------------------------------------------------------ model.toml
def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- ensemble-example -->\n```toml\n(.*?)```\n<!-- /ensemble-example -->", text, re.S)
    assert block, "the README lost its ensemble example"
    return block.group(1)


def test_the_readme_example_loads_and_soft_votes(tmp_path, rng):
    """The README's model.toml, as written, over the members it names (credit-lr
    at version 2, the newest of the others): a soft-voting ensemble whose
    probabilities are the weighted mean of its members'."""
    toml = readme_example()
    cfg = parse_model_config(toml.encode()).ensemble
    assert cfg is not None and cfg.combiner == "soft_vote"
    for m in cfg.members:
        for version in (1, 2):
            write_json_model(tmp_path, m.model, linear_doc("multinomial", rng.normal(size=(3, D)), rng.normal(size=3), CLASSES), version)  # fmt: skip
    write_ensemble(tmp_path, "credit-ensemble", toml)
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    mv = repo.resolve("credit-ensemble")
    assert mv.model.backend == "ensemble" and "mean of probabilities" in mv.model.native_reason
    assert [(p.name, p.version) for p in mv.members] == [
        (m.model, m.version or 2) for m in cfg.members
    ]
    X = rng.normal(size=(20, D))
    got = mv.model.predict(X)
    parts = [(m.weight, repo.resolve(m.model, m.version).model.predict(X)["probabilities"]) for m in cfg.members]
    want = sum(w * p for w, p in parts) / sum(w for w, _ in parts)
    np.testing.assert_allclose(got["probabilities"], want, rtol=1e-14)
    np.testing.assert_array_equal(got["label"], np.asarray(CLASSES, dtype=object)[want.argmax(axis=1)])


@pytest.mark.parametrize(
    "section, words",
    [
        ('members = ["a"]', '"combiner" must be one of'),
        ('combiner = "median"\nmembers = ["a"]', '"combiner" must be one of'),
        ('combiner = "mean"\nmembers = []', '"members" must be a non-empty list'),
        ('combiner = "mean"\nmembers = [{model = "a", weight = -1}]', '"weight" must be a finite number'),
        ('combiner = "mean"\nmembers = [{model = "a", weight = 0}]', "must not all be 0"),
        ('combiner = "mean"\nmembers = [{model = "a", version = 0}]', '"version" must be a positive integer'),
        ('combiner = "mean"\nmembers = [{model = "a", colour = 1}]', "unknown key(s) 'colour'"),
        ('combiner = "mean"\nmembers = [{model = "a", output = "value"}]', '"output" is for combiner "stack"'),
        ('combiner = "mean"\npassthrough = true\nmembers = ["a"]', '"passthrough" is for combiner "stack"'),
        ('combiner = "stack"\nmembers = [{model = "a", weight = 2}]', '"weight" is for mean and voting'),
        ('combiner = "stack"\nmembers = [{model = "a", output = "label"}]', '"output" must be one of'),
        ('combiner = "stack"\nmembers = ["a"]\nfinal = {kind = "tree"}', "final:"),
        ('combiner = "stack"\nmembers = [1]', "a model name or a table"),
        ('combiner = "soft_vote"\nmembers = ["a"]\nvoting = "soft"', "unknown key(s) 'voting'"),
    ],
)
def test_ensemble_section_errors_name_the_file_and_the_problem(section, words):
    with pytest.raises(ModelLoadError) as info:
        parse_model_config(f"[ensemble]\n{section}\n".encode(), source="models/e/model.toml")
    assert info.value.message.startswith("models/e/model.toml: [ensemble] ")
    assert words in info.value.message


def test_the_toml_export_writes_reads_back_the_same():
    cfg = EnsembleConfig("stack", (EnsembleMember("a-lr", 3, 1.0, "decision"), EnsembleMember("a-mlp", 1, 1.0, "probabilities")), True)
    back = parse_model_config(ensemble_toml(cfg, 'a "quoted" description').encode())
    assert back.ensemble == cfg and back.description == 'a "quoted" description'
    cfg = EnsembleConfig("soft_vote", (EnsembleMember("x", None, 0.1), EnsembleMember("y", 2, 2.5)))
    assert parse_model_config(ensemble_toml(cfg).encode()).ensemble == cfg


def test_an_inline_final_model_reads_as_model_json():
    cfg = parse_ensemble({"combiner": "stack", "members": ["a", "b"],
                          "final": {"kind": "logistic", "coefficients": [[1.0, -2.0]], "intercepts": [0.5], "classes": [0, 1]}},
                         "m.toml")  # fmt: skip
    assert cfg.final is not None and cfg.final.link == "logistic" and cfg.final.n_features == 2


# ------------------------------------------------------------------ combiners
def test_soft_vote_is_the_weighted_mean_of_probabilities(rng):
    models = [logistic(rng) for _ in range(3)]
    cfg = config("soft_vote", 3, weights=[2, 0.5, 1])
    ens = build_ensemble(cfg, members(cfg, models))
    assert isinstance(ens, EnsembleModel)
    assert [(o.name, o.role, o.shape) for o in ens.signature.outputs] == [("label", "label", (-1,)), ("probabilities", "probabilities", (-1, 3))]
    X = rng.normal(size=(50, D))
    got = ens.predict(X)
    want = (2 * models[0].predict(X)["probabilities"] + 0.5 * models[1].predict(X)["probabilities"]
            + models[2].predict(X)["probabilities"]) / 3.5  # fmt: skip
    np.testing.assert_allclose(got["probabilities"], want, rtol=1e-15, atol=1e-17)
    top = np.sort(want, axis=1)
    decided = top[:, -1] - top[:, -2] > 1e-12
    assert decided.mean() > 0.9
    np.testing.assert_array_equal(got["label"][decided], np.asarray(CLASSES, dtype=object)[want.argmax(axis=1)][decided])


def test_hard_vote_counts_weighted_votes_and_ties_go_to_the_first_class(rng):
    """Members that always say one class (their weights are zero, their intercepts
    pick it): the label is the class with the largest sum of weights; a tie goes to
    the first of the tied classes in class order, whatever the members' order."""
    def says(label: str) -> NativeLinearModel:
        b = np.where(np.array(CLASSES) == label, 1.0, -1.0)
        return NativeLinearModel(LinearSpec("classification", "softmax", np.zeros((3, D)), b, classes=CLASSES))

    X = rng.normal(size=(5, D))
    cases = [
        (["cat", "bee", "ant"], [1, 1, 1], "ant"),  # three-way tie: the first class
        (["cat", "bee"], [1, 1], "bee"),  # bee before cat
        (["cat", "bee", "cat"], [1, 1, 1], "cat"),
        (["cat", "bee", "ant"], [1, 2, 1], "bee"),
        (["cat", "bee", "bee"], [2.5, 1, 1.5], "bee"),  # 2.5 == 1 + 1.5: a tie, exact
        (["cat", "ant", "ant"], [2.5, 1, 1.25], "cat"),
        (["ant", "cat"], [0, 1], "cat"),
    ]
    for labels, weights, want in cases:
        cfg = config("hard_vote", len(labels), weights=weights)
        ens = build_ensemble(cfg, members(cfg, [says(x) for x in labels]))
        assert [o.name for o in ens.signature.outputs] == ["label"]
        assert ens.predict(X)["label"].tolist() == [want] * 5, (labels, weights)


def test_mean_of_regressors_is_the_weighted_mean_of_values(rng):
    models = [regressor(rng, t=2) for _ in range(3)]
    cfg = config("mean", 3, weights=[1, 2, 3])
    ens = build_ensemble(cfg, members(cfg, models), fold=False)
    assert ens.signature.outputs[0].shape == (-1, 2)
    X = rng.normal(size=(40, D))
    want = sum(w * m.predict(X)["value"] for w, m in zip([1, 2, 3], models, strict=True)) / 6
    np.testing.assert_allclose(ens.predict(X)["value"], want, rtol=1e-14)


def test_stacking_feeds_the_final_model_the_members_outputs(rng):
    """Two binary members feed P(classes[1]) (one column each, as scikit-learn's
    StackingClassifier), a third its decision, then the input (passthrough)."""
    models = [logistic(rng, k=1, classes=(0, 1)) for _ in range(3)]
    final = LinearSpec("classification", "logistic", rng.normal(size=(1, 3 + D)), [0.3], classes=(0, 1))
    cfg = config("stack", 3, outputs=["", "probabilities", "decision"], passthrough=True, final=final)
    ens = build_ensemble(cfg, members(cfg, models))
    assert isinstance(ens, EnsembleModel)
    X = rng.normal(size=(30, D))
    meta = np.column_stack([models[0].predict(X)["probabilities"][:, 1], models[1].predict(X)["probabilities"][:, 1],
                            models[2].predict(X)["decision"][:, 0], X])  # fmt: skip
    want = NativeLinearModel(final).predict(meta)
    got = ens.predict(X)
    assert list(got) == ["label", "probabilities", "decision"]
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-15)
    np.testing.assert_allclose(got["decision"], want["decision"], rtol=1e-15)
    np.testing.assert_array_equal(got["label"], want["label"])


@pytest.mark.parametrize("combiner", ["soft_vote", "hard_vote", "mean", "stack"])
def test_zero_rows_give_zero_row_outputs(combiner, rng):
    models = [regressor(rng) for _ in range(2)] if combiner == "mean" else [logistic(rng) for _ in range(2)]
    final = LinearSpec("regression", "identity", rng.normal(size=(1, 6)), [0.0]) if combiner == "stack" else None
    cfg = config(combiner, 2, final=final)
    ens = build_ensemble(cfg, members(cfg, models), fold=False)
    out = ens.predict(np.empty((0, D)))
    for spec in ens.signature.outputs:
        assert out[spec.name].shape == tuple(0 if s == -1 else s for s in spec.shape)


def test_float32_members_give_float32_outputs(rng):
    models = [logistic(rng, dtype="float32") for _ in range(2)]
    cfg = config("soft_vote", 2)
    ens = build_ensemble(cfg, members(cfg, models))
    assert ens.signature.input.dtype == "float32"
    out = ens.predict(rng.normal(size=(3, D)).astype(np.float32))
    assert out["probabilities"].dtype == np.float32


@pytest.mark.parametrize(
    "combiner, second, words",
    [
        ("soft_vote", lambda rng: logistic(rng, dtype="float32"), "takes float32 input, member 'm0' v1 (native) float64"),
        ("soft_vote", lambda rng: NativeLinearModel(LinearSpec("classification", "softmax", rng.normal(size=(3, 5)), np.zeros(3), classes=CLASSES)), "takes 5 features"),
        ("soft_vote", lambda rng: logistic(rng, names=("a", "b", "c", "d")), None),  # names on one side only: fine
        ("soft_vote", lambda rng: logistic(rng, classes=("ant", "cat", "bee")), "other classes than"),
        ("soft_vote", lambda rng: logistic(rng, k=1, classes=("ant", "bee")), "other classes than"),
        ("hard_vote", lambda rng: regressor(rng), "is a regressor: voting combines classifiers"),
        ("mean", lambda rng: logistic(rng), "is a classifier"),
        ("soft_vote", lambda rng: NativeLinearModel(LinearSpec("classification", "identity", rng.normal(size=(3, D)), np.zeros(3), classes=CLASSES, outputs={"label": "label"})), "has no probabilities output"),
    ],
)
def test_members_that_do_not_fit_together_are_named(combiner, second, words, rng):
    first = regressor(rng) if combiner == "mean" else logistic(rng)
    cfg = config(combiner, 2)
    if words is None:
        build_ensemble(cfg, members(cfg, [first, second(rng)]))
        return
    with pytest.raises(ModelLoadError) as info:
        build_ensemble(cfg, members(cfg, [first, second(rng)]))
    assert "member 'm1' v1 (native)" in info.value.message and words in info.value.message


def test_members_naming_their_features_differently_are_refused(rng):
    cfg = config("soft_vote", 2)
    with pytest.raises(ModelLoadError, match=r"member 'm1' v1 .* names its features differently"):
        build_ensemble(cfg, members(cfg, [logistic(rng, names=("a", "b", "c", "d")), logistic(rng, names=("a", "b", "c", "e"))]))


def test_a_final_model_of_the_wrong_width_is_refused(rng):
    final = LinearSpec("regression", "identity", rng.normal(size=(1, 3)), [0.0])
    cfg = config("stack", 2, outputs=["decision", "decision"], final=final)
    with pytest.raises(ModelLoadError, match="the final model takes 3 features, the members give 6"):
        build_ensemble(cfg, members(cfg, [logistic(rng), logistic(rng)]))


# --------------------------------------------------------------------- folding
def count_kernel_calls(model: NativeLinearModel) -> list[int]:
    """Count the kernel calls of ``model`` (its batch-1 fast path and its checked path)."""
    calls = [0]
    fast, checked = model._try_predict, model._kernel_predict

    def try_predict(*a):
        calls[0] += 1
        return fast(*a)

    def kernel_predict(*a):
        calls[0] += 1
        return checked(*a)

    model._try_predict, model._kernel_predict = try_predict, kernel_predict
    return calls


def same_scores(folded, unfolded) -> bool:
    """A folded ensemble's signature is the unfolded one's, plus the explanations
    every model on the kernel offers (measured from zeros: an ensemble built in
    memory has no reference.json)."""
    scores = tuple(o for o in folded.outputs if o.role not in EXPLANATIONS)
    explained = tuple(o.role for o in folded.outputs if o.role in EXPLANATIONS)
    plain = dataclasses.replace(folded, outputs=scores, explanation_baseline="")
    return plain == unfolded and explained == EXPLANATIONS and folded.explanation_baseline == "zeros"


def forbid_predict(models) -> None:
    def refuse(*a, **k):
        raise AssertionError("a folded ensemble called a member")

    for m in models:
        m.predict = refuse


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_a_weighted_mean_of_linear_regressors_folds_into_one_kernel_call(rows, rng):
    models = [regressor(rng, t=1) for _ in range(3)]
    cfg = config("mean", 3, weights=[1, 2, 0.5])
    unfolded = build_ensemble(cfg, members(cfg, models), fold=False)
    folded = build_ensemble(cfg, members(cfg, models))
    assert isinstance(folded, FoldedEnsemble) and folded.backend == "native"
    assert "folded into one linear model" in folded.native_reason and "'m2' v1 (native)" in folded.native_reason
    assert same_scores(folded.signature, unfolded.signature)
    X = rng.normal(size=(rows, D))
    want = unfolded.predict(X)["value"]
    calls = count_kernel_calls(folded)
    forbid_predict(models)
    got = folded.predict(X)["value"]
    assert calls == [1]
    scale = sum(w * np.abs(m.spec.coef @ np.abs(X).T).ravel() + w * np.abs(m.spec.intercept)
                for w, m in zip([1, 2, 0.5], models, strict=True)) / 3.5  # fmt: skip
    assert np.all(np.abs(got - want) <= 1e-12 * np.maximum(np.abs(want), scale))


@pytest.mark.usefixtures("simd")
@pytest.mark.parametrize("passthrough", [False, True])
def test_stacking_linear_decisions_folds_into_one_kernel_call(passthrough, rng):
    """Members' decisions (linear in the input), then a logistic final model: one
    logistic model. Its decision, probabilities and labels equal the stack's."""
    models = [logistic(rng, k=3), logistic(rng, k=1, classes=("ant", "bee")), regressor(rng, t=2)]
    width = 3 + 1 + 2 + (D if passthrough else 0)
    final = LinearSpec("classification", "softmax", rng.normal(size=(3, width)), rng.normal(size=3), classes=CLASSES)
    cfg = config("stack", 3, outputs=["decision", "decision", "value"], passthrough=passthrough, final=final)
    unfolded = build_ensemble(cfg, members(cfg, models), fold=False)
    folded = build_ensemble(cfg, members(cfg, models))
    assert isinstance(folded, FoldedEnsemble) and same_scores(folded.signature, unfolded.signature)
    X = rng.normal(size=(200, D))
    want = unfolded.predict(X)
    calls = count_kernel_calls(folded)
    forbid_predict(models)
    got = folded.predict(X)
    assert calls == [1]
    # the decision's scale: the final model's terms, each a member decision at its own scale
    meta_scale = np.column_stack([decision_scale(X, m.spec.coef, m.spec.intercept) for m in models]
                                 + ([np.abs(X)] if passthrough else []))  # fmt: skip
    scale = meta_scale @ np.abs(final.coef).T + np.abs(final.intercept)
    bound = 1e-12 * np.maximum(np.abs(want["decision"]), scale)
    assert np.all(np.abs(got["decision"] - want["decision"]) <= bound)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-10, atol=1e-15)
    from .parity import assert_labels_equal

    assert_labels_equal(got["label"], want["label"], want["decision"], bound)


@pytest.mark.parametrize(
    "combiner, outputs, words",
    [
        ("soft_vote", None, "a mean of probabilities is not one linear model"),
        ("hard_vote", None, "a vote of labels is not one linear model"),
        ("stack", ["decision", "probabilities"], "feeds its probabilities, which are not linear in the input"),
    ],
)
def test_what_does_not_fold_says_why(combiner, outputs, words, rng):
    models = [logistic(rng), logistic(rng)]
    final = LinearSpec("regression", "identity", rng.normal(size=(1, 6)), [0.0]) if combiner == "stack" else None
    cfg = config(combiner, 2, outputs=outputs, final=final)
    ens = build_ensemble(cfg, members(cfg, models))
    assert ens.backend == "ensemble" and words in ens.native_reason


def test_a_mean_with_a_member_that_is_not_linear_does_not_fold(rng):
    models = [regressor(rng), Recording(regressor(rng))]  # not a NativeLinearModel: opaque
    cfg = config("mean", 2)
    ens = build_ensemble(cfg, members(cfg, models))
    assert ens.backend == "ensemble" and "member 'm1' v1 (native) is not linear" in ens.native_reason


# -------------------------------------------------------------------- one pass
@pytest.mark.parametrize(
    "combiner, wanted",
    [
        ("soft_vote", [("probabilities",)] * 3),
        ("hard_vote", [("label",)] * 3),
        ("mean", [("value",)] * 3),
        ("stack", [("probabilities",), ("decision",), ("probabilities",)]),
    ],
)
def test_each_member_is_scored_once_per_batch_for_only_what_the_combiner_needs(combiner, wanted, rng):
    models = [Recording(regressor(rng) if combiner == "mean" else logistic(rng)) for _ in range(3)]
    final = LinearSpec("classification", "softmax", rng.normal(size=(3, 9)), np.zeros(3), classes=CLASSES)
    cfg = config(combiner, 3, outputs=["", "decision", "probabilities"] if combiner == "stack" else None,
                 final=final if combiner == "stack" else None)  # fmt: skip
    ens = build_ensemble(cfg, members(cfg, models))
    for request in (None, ens.signature.output_names[:1]):
        for m in models:
            m.calls.clear()
        ens.predict(rng.normal(size=(11, D)), request)
        assert [m.calls for m in models] == [[(11, want)] for want in wanted]


def test_a_batched_ensemble_scores_its_members_once_per_batch(rng):
    """Through the service, with batching on: each member is called once per batch
    the ensemble scores, on that batch's rows, and every request is answered."""
    models = [Recording(logistic(rng)) for _ in range(2)]
    cfg = config("soft_vote", 2)
    ensemble = Recording(build_ensemble(cfg, members(cfg, models)))
    repo = ModelRepository(Path("unused"), n_threads=1)
    repo.add_model("ens", ensemble, config=ModelConfig(batching=BatchConfig(enabled=True, max_delay_us=20_000)))
    Xs = [rng.normal(size=(1 + i % 3, D)) for i in range(12)]

    async def main():
        service = ScoringService(repo)
        try:
            return await asyncio.gather(*(service.predict(PredictRequest("ens", X, request_id=f"r{i}"))
                                          for i, X in enumerate(Xs)))  # fmt: skip
        finally:
            await service.aclose()

    answers = asyncio.run(main())
    batches = [rows for rows, _ in ensemble.calls]
    assert sum(batches) == sum(len(X) for X in Xs)
    for m in models:
        assert [rows for rows, _ in m.calls] == batches
    for X, r in zip(Xs, answers, strict=True):
        np.testing.assert_allclose(r.outputs["probabilities"], ensemble.inner.predict(X)["probabilities"], rtol=1e-15)


# ------------------------------------------------------------------ repository
def classifier_repo(root: Path, rng, names=("lr", "sgd")) -> None:
    for name in names:
        write_json_model(root, name, linear_doc("multinomial", rng.normal(size=(3, D)), rng.normal(size=3), CLASSES))


def test_members_load_before_the_ensemble_whatever_their_names(tmp_path, rng):
    classifier_repo(tmp_path, rng, names=("z-lr", "z-sgd"))
    write_ensemble(tmp_path, "a-ens", members_toml("soft_vote", ["z-lr", "z-sgd"]))
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    assert repo.entry("a-ens").state is State.READY


def test_a_member_that_fails_to_load_fails_the_ensemble_naming_it(tmp_path, rng):
    classifier_repo(tmp_path, rng)
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.json").write_text("{")
    write_ensemble(tmp_path, "ens", members_toml("soft_vote", ["lr", "broken"]))
    write_ensemble(tmp_path, "ens2", members_toml("soft_vote", ["lr", "nowhere"]))
    write_ensemble(tmp_path, "ens3", members_toml("soft_vote", ["lr", {"model": "sgd", "version": 4}]))
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    for name, words in [("ens", "member 'broken' cannot be used: model 'broken' failed to load"),
                        ("ens2", "member 'nowhere' cannot be used: no model named 'nowhere'"),
                        ("ens3", "member 'sgd' version 4 cannot be used: model 'sgd' has no version 4")]:  # fmt: skip
        entry = repo.entry(name)
        assert entry.state is State.FAILED and words in entry.load_error(), entry.load_error()
        with pytest.raises(Unavailable):
            repo.resolve(name)


@pytest.mark.parametrize(
    "toml, files, words",
    [
        (members_toml("soft_vote", ["lr", "ens"]), {}, "member 'ens' cannot be used: it is an ensemble"),
        (members_toml("soft_vote", ["lr", "sgd"]), {"model.json": "{}"}, "the version directory of an ensemble holds no model.json"),
        (members_toml("stack", ["lr", "sgd"]), {}, "needs its final model"),
        (members_toml("mean", ["lr", "sgd"]), {}, "member 'lr' v1 (native) is a classifier"),
        ('backend = "native"\n' + members_toml("soft_vote", ["lr", "sgd"]), {}, '"backend" does not apply to an ensemble'),
    ],
)
def test_ensembles_that_cannot_be_built_fail_with_a_message(toml, files, words, tmp_path, rng):
    classifier_repo(tmp_path, rng)
    vdir = write_ensemble(tmp_path, "ens", toml) / "1"
    for name, text in files.items():
        (vdir / name).write_text(text)
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    assert repo.entry("ens").state is State.FAILED and words in repo.entry("ens").load_error()
    assert repo.entry("lr").state is State.READY


def test_a_stacking_ensembles_final_model_is_its_versions_model_json(tmp_path, rng):
    """Two versions of one stacking ensemble, each with its own final model.json;
    the same ensemble with the final model inline; both inline and in the version
    directory is an error."""
    classifier_repo(tmp_path, rng)
    ens = write_ensemble(tmp_path, "ens", '[version_policy]\npolicy = "all"\n' + members_toml("stack", ["lr", "sgd"]), versions=(1, 2))
    finals = {v: linear_doc("multinomial", rng.normal(size=(3, 6)), rng.normal(size=3), CLASSES) for v in (1, 2)}
    for v, doc in finals.items():
        (ens / str(v) / "model.json").write_text(json.dumps(doc))
    inline = members_toml("stack", ["lr", "sgd"]) + "\n[ensemble.final]\n" + "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in finals[2].items() if k not in ("format", "format_version"))
    write_ensemble(tmp_path, "inline", inline)
    write_ensemble(tmp_path, "both", inline)
    (tmp_path / "both" / "1" / "model.json").write_text(json.dumps(finals[1]))
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    X = rng.normal(size=(10, D))
    meta = np.column_stack([repo.resolve(m).model.predict(X)["probabilities"] for m in ("lr", "sgd")])
    for name, version in (("ens", 1), ("ens", 2), ("inline", 1)):
        final = NativeLinearModel(LinearSpec("classification", "softmax", finals[version if name == "ens" else 2]["coefficients"],
                                             finals[version if name == "ens" else 2]["intercepts"], classes=CLASSES))  # fmt: skip
        got = repo.resolve(name, version).model.predict(X)["probabilities"]
        np.testing.assert_allclose(got, final.predict(meta)["probabilities"], rtol=1e-15)
    assert "holds no model.json (its final model is in model.toml)" in repo.entry("both").load_error()


def test_an_unloaded_member_turns_the_ensemble_unavailable_until_it_is_back(tmp_path, rng):
    classifier_repo(tmp_path, rng)
    write_ensemble(tmp_path, "ens", members_toml("soft_vote", ["lr", "sgd"]))
    repo = ModelRepository(tmp_path, n_threads=1)
    retired = []
    repo.on_retire(lambda mv: retired.append((mv.name, mv.version)))
    repo.load_all()
    before = repo.resolve("ens")
    repo.unload("sgd")
    entry = repo.entry("ens")
    assert entry.state is State.FAILED and "member 'sgd' cannot be used" in entry.load_error()
    with pytest.raises(Unavailable):
        repo.resolve("ens")
    assert ("ens", 1) in retired  # the service drops its lane
    assert repo.ensembles_of("sgd") == ["ens"]
    repo.load("sgd")
    after = repo.resolve("ens")
    assert after is not before and after.members[1] is repo.resolve("sgd")
    X = rng.normal(size=(5, D))
    np.testing.assert_allclose(after.model.predict(X)["probabilities"], before.model.predict(X)["probabilities"], rtol=1e-15)


def test_a_reloaded_member_is_followed_at_once(tmp_path, rng):
    """A member reloaded with new weights: the (folded) ensemble is rebuilt on the new
    version as the old one is retired — it answers with the new weights, and is
    never unavailable in between."""
    for name in ("r1", "r2"):
        write_json_model(tmp_path, name, linear_doc("linear", rng.normal(size=(1, D)), [1.0]))
    write_ensemble(tmp_path, "ens", members_toml("mean", ["r1", "r2"]))
    repo = ModelRepository(tmp_path, n_threads=1)
    states = []
    repo.on_retire(lambda mv: states.append(repo.entry("ens").state) if mv.name == "r2" else None)
    repo.load_all()
    assert isinstance(repo.resolve("ens").model, FoldedEnsemble)
    new = rng.normal(size=(1, D))
    write_json_model(tmp_path, "r2", linear_doc("linear", new, [3.0]))
    repo.load("r2")
    X = rng.normal(size=(6, D))
    r1 = repo.resolve("r1").model.predict(X)["value"]
    np.testing.assert_allclose(repo.resolve("ens").model.predict(X)["value"], (r1 + X @ new[0] + 3.0) / 2, rtol=1e-12)
    assert states and State.READY in states


def test_an_ensemble_follows_its_members_newest_version_unless_pinned(tmp_path, rng):
    classifier_repo(tmp_path, rng)
    write_ensemble(tmp_path, "newest", members_toml("soft_vote", ["lr", "sgd"]))
    write_ensemble(tmp_path, "pinned", members_toml("soft_vote", ["lr", {"model": "sgd", "version": 1}]))
    (tmp_path / "sgd" / "model.toml").write_text('[version_policy]\npolicy = "all"\n')
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    write_json_model(tmp_path, "sgd", linear_doc("multinomial", rng.normal(size=(3, D)), rng.normal(size=3), CLASSES), 2)
    repo.load("sgd")
    assert [p.version for p in repo.resolve("newest").members] == [1, 2]
    assert [p.version for p in repo.resolve("pinned").members] == [1, 1]


def test_an_ensemble_of_several_models_refuses_explanations_by_name(rng):
    """Only a model on the kernel explains: an unfolded ensemble says why it does not
    (INVALID_ARGUMENT at the edge), a folded one explains like any native model."""
    models = [regressor(rng) for _ in range(2)]
    cfg = config("mean", 2)
    unfolded = build_ensemble(cfg, members(cfg, models), fold=False)
    X = rng.normal(size=(3, D))
    for name in ("contributions", "base_value"):
        with pytest.raises(InvalidInput, match=f"output '{name}': explanations are available for native models; "
                                               "this one is an ensemble of several models"):  # fmt: skip
            unfolded.predict(X, (name,))
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        unfolded.predict(X, ("nope",))
    folded = build_ensemble(cfg, members(cfg, models))
    out = folded.predict(X, ("value", "contributions", "base_value"))
    np.testing.assert_allclose(out["contributions"].sum(axis=-1) + out["base_value"], out["value"], rtol=1e-12)


def test_a_folded_ensemble_explains_from_its_own_reference_means(tmp_path, rng):
    """Loaded from the repository, a folded ensemble measures its explanations from
    the feature means of the ensemble version's reference.json, as any native model."""
    for name in ("r1", "r2"):
        write_json_model(tmp_path, name, linear_doc("linear", rng.normal(size=(1, D)), rng.normal(size=1)))
    vdir = write_ensemble(tmp_path, "avg", members_toml("mean", ["r1", "r2"])) / "1"
    X_ref = rng.normal(size=(200, D)) + 5
    (vdir / "reference.json").write_text(json.dumps(reference_statistics(X_ref)))
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    model = repo.resolve("avg").model
    assert model.backend == "native" and model.signature.explanation_baseline == "reference"
    X = rng.normal(size=(5, D))
    out = model.predict(X, ("value", "contributions", "base_value"))
    w = np.mean([repo.resolve(n).model.spec.coef[0] for n in ("r1", "r2")], axis=0)
    np.testing.assert_allclose(out["contributions"], w * (X - X_ref.mean(axis=0)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["contributions"].sum(axis=-1) + out["base_value"], out["value"], rtol=1e-12)
