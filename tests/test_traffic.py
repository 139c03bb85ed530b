"""Traffic between versions in the core (repository and service, no server): a
[traffic] split places requests by key (sticky), only READY versions take any, a
request naming a version bypasses it; a shadow scores copies after the answer and
reports how far it disagrees; reloads never hand a request to a retired version."""

from __future__ import annotations

import asyncio
import collections
import functools
import random
import threading
from pathlib import Path

import numpy as np
import pytest

import scorewire
from scorewire import service as service_module
from scorewire.errors import ModelLoadError
from scorewire.monitoring.feedback import FeedbackItem, Outcome
from scorewire.repository import ModelRepository, State
from scorewire.service import ScoringService
from scorewire.types import PredictRequest

from .traffic import FEATURES, classifier_json, linear_json, publish, readme_block

X1 = np.zeros((1, FEATURES))


def make_model(root: Path, versions: dict[int, str], toml: str | None = None, name: str = "m") -> Path:
    model_dir = root / name
    for v, text in versions.items():
        (model_dir / str(v)).mkdir(parents=True, exist_ok=True)
        (model_dir / str(v) / "model.json").write_text(text)
    if toml is not None:
        (model_dir / "model.toml").write_text(toml)
    return model_dir


def values(versions) -> dict[int, str]:
    """Versions whose answer is their own number."""
    return {v: linear_json(v) for v in versions}


async def answer(service: ScoringService, key: str = "", request_id: str = "", version: int | None = None,
                 X: np.ndarray = X1, model: str = "m"):  # fmt: skip
    r = await service.predict(PredictRequest(model, X, version, request_id=request_id, route_key=key))
    if "value" in r.outputs:  # the models of values() answer with their own version
        assert r.outputs["value"][0] == r.version
    return r


async def drained(service: ScoringService, model: str, version: int, requests: int):
    """The shadow's stats once it has dealt with ``requests`` copies (scored,
    failed or dropped): counted, not timed (the copies are scored on the
    monitoring thread)."""
    for _ in range(100_000):
        stats = {s.version: s for s in await service.model_stats(model)}[version].shadow
        if sum(s.compared + s.failed + s.dropped for s in stats) >= requests:
            return stats
        await asyncio.sleep(0.002)
    raise AssertionError(f"the shadow dealt with fewer than {requests} copies: {stats}")


# ------------------------------------------------------------------ the split
def test_the_readme_example_splits_by_key_and_sticks(tmp_path):
    """The README's [traffic] example over versions 1, 2, 3: 95/5 between 1 and 2
    by key, the same key meeting the same version every time (whichever request id
    comes with it; a request id alone is a key); the shadow answers nothing."""
    make_model(tmp_path, values([1, 2, 3]), readme_block("traffic-example", "toml"))
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    entry = repo.entry("m")
    assert entry.state is State.READY and sorted(entry.ready_versions()) == [1, 2, 3]
    assert entry.traffic is not None and entry.traffic.shares == pytest.approx({1: 0.95, 2: 0.05})
    assert entry.traffic.shadow is entry.versions[3] and entry.traffic.fraction == 0.5
    assert repo.key_headers == {"m": "x-user-id"}

    async def main() -> collections.Counter[int]:
        service = ScoringService(repo)
        placed: collections.Counter[int] = collections.Counter()
        for i in range(4000):
            key = f"user-{i}"
            first = await answer(service, key=key, request_id=f"a-{i}")
            again = await answer(service, key=key, request_id=f"b-{i}")
            by_id = await answer(service, request_id=key)  # no key header: the request id is the key
            assert first.version == again.version == by_id.version, key
            placed[first.version] += 1
        unkeyed = {(await answer(service)).version for _ in range(400)}
        assert unkeyed == {1, 2}  # weighted random: both, never the shadow
        await service.aclose()
        service.close()
        return placed

    placed = asyncio.run(main())
    assert set(placed) == {1, 2}
    assert 0.03 < placed[2] / 4000 < 0.07, placed  # 5% ± 6 standard deviations of 4000 draws


def test_changing_the_weights_moves_only_the_callers_whose_band_moved(tmp_path):
    """95/5 → 90/10: every caller of version 2 stays; those that move go from 1 to 2,
    about 5% of them."""
    model_dir = make_model(tmp_path, values([1, 2]), "[traffic]\nsplit = { 1 = 95, 2 = 5 }\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    keys = [f"k{i}" for i in range(4000)]
    before = {k: repo.route("m", None, k)[0].version for k in keys}
    publish(model_dir / "model.toml", "[traffic]\nsplit = { 1 = 90, 2 = 10 }\n")
    repo.load("m", reuse=True)
    after = {k: repo.route("m", None, k)[0].version for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == 1 and after[k] == 2 for k in moved)
    assert 0.03 < len(moved) / len(keys) < 0.07, len(moved)


def test_a_request_naming_a_version_bypasses_the_split(tmp_path):
    make_model(tmp_path, values([1, 2, 3]), "[traffic]\nsplit = { 1 = 1, 2 = 1 }\nshadow = 3\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()

    async def main() -> None:
        service = ScoringService(repo)
        for i in range(50):
            for v in (1, 2, 3):
                assert (await answer(service, key=f"k{i}", version=v)).version == v
        service.close()

    asyncio.run(main())


def test_versions_that_are_not_ready_take_no_traffic(tmp_path):
    """Version 2 of a 50/50 split failed to load: every request goes to 1 (the
    callers of 1 stay on 1); once 2 loads, its callers come back, and the callers of
    1 never moved. With no version of the split ready, the newest ready version
    that is not the shadow answers."""
    model_dir = make_model(tmp_path, {1: linear_json(1), 2: "not json"}, "[traffic]\nsplit = { 1 = 50, 2 = 50 }\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    entry = repo.entry("m")
    assert entry.versions[2].state is State.FAILED and entry.traffic is not None
    assert entry.traffic.shares == {1: 1.0}
    keys = [f"k{i}" for i in range(1000)]
    down = {k: repo.route("m", None, k)[0].version for k in keys}
    assert set(down.values()) == {1}
    publish(model_dir / "2" / "model.json", linear_json(2))
    repo.load("m", reuse=True)
    assert repo.entry("m").traffic.shares == {1: 0.5, 2: 0.5}
    up = {k: repo.route("m", None, k)[0].version for k in keys}
    assert set(up.values()) == {1, 2}

    # none of the split ready: the newest ready version that is not the shadow
    make_model(tmp_path, {1: linear_json(1), 2: linear_json(2), 3: "not json", 4: linear_json(4)},
               "[version_policy]\npolicy = 'all'\n[traffic]\nsplit = { 3 = 1 }\nshadow = 4\n", name="fallback")  # fmt: skip
    repo.load("fallback")
    assert {repo.route("fallback", None, k)[0].version for k in keys[:50]} == {2}
    assert repo.entry("fallback").traffic.shares == {2: 1.0}


def test_the_versions_a_split_names_are_served_whatever_the_policy(tmp_path):
    """The default policy serves only the newest version; a split naming older ones
    serves them too, and the newest takes no traffic unless the split names it."""
    make_model(tmp_path, values([1, 2, 3]), "[traffic]\nsplit = { 1 = 60, 2 = 40 }\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    assert repo.entry("m").ready_versions() == [1, 2, 3]
    assert {repo.route("m", None, f"k{i}")[0].version for i in range(200)} == {1, 2}
    assert repo.resolve("m", 3).version == 3


@pytest.mark.parametrize(
    "toml, words",
    [
        ("[traffic]\nsplit = { 1 = 0 }", "the weight of version 1 must be a positive number"),
        ("[traffic]\nsplit = { 1 = -5, 2 = 5 }", "the weight of version 1 must be a positive number"),
        ("[traffic]\nsplit = { 1 = 'half' }", "the weight of version 1 must be a positive number"),
        ("[traffic]\nsplit = { 1 = nan }", "the weight of version 1 must be a positive number"),
        ("[traffic]\nsplit = { 1 = 50, 7 = 50 }", "traffic.split names version 7, which has no version directory"),
        ("[traffic]\nsplit = { 01 = 50 }", "'01' is not a version"),
        ("[traffic]\nsplit = {}", "traffic.split names no version"),
        ("[traffic]\nsplit = [1, 2]", "traffic.split must be a table"),
        ("[traffic]\nsplit = { 1 = 1 }\nshadow = 9", "traffic.shadow names version 9, which has no version directory"),
        ("[traffic]\nsplit = { 1 = 1 }\nshadow = 1", "version 1 is in traffic.split"),
        ("[version_policy]\npolicy = 'specific'\nversions = [2]\n[traffic]\nshadow = 2",
         "traffic.shadow is version 2 and no other version is served"),
        ("[traffic]\nshadow = 2\nshadow_fraction = 1.5", "traffic.shadow_fraction must be a number in (0, 1]"),
        ("[traffic]\nshadow_fraction = 0.5", "traffic.shadow_fraction needs traffic.shadow"),
        ("[traffic]\nsplit = { 1 = 1 }\nkey_header = 'X-User'", "traffic.key_header must be a metadata header name"),
        ("[traffic]\nsplit = { 1 = 1 }\nkey_header = 'grpc-timeout'", "traffic.key_header must be"),
        ("[traffic]\nkey_header = 'x-user'", "traffic.key_header needs traffic.split"),
        ("[traffic]\nweights = { 1 = 1 }", "unknown [traffic] key(s) 'weights'"),
        ("traffic = 'all to 2'", "[traffic] must be a table"),
    ],
)
def test_a_bad_traffic_section_is_a_load_error_naming_model_toml(tmp_path, toml, words):
    model_dir = make_model(tmp_path, values([1, 2]), toml)
    repo = ModelRepository(tmp_path, n_threads=1)
    entry = repo.load("m")
    assert entry.state is State.FAILED and not entry.versions
    assert entry.error.startswith(f"{model_dir / 'model.toml'}: ") and words in entry.error, entry.error
    assert len(entry.error) < 300


# ------------------------------------------------------------------ the shadow
def classifiers(rng: np.random.Generator) -> dict[int, str]:
    """Three 3-class classifiers that disagree on some rows: 1 and 2 serve, 3 shadows."""
    out = {}
    for v in (1, 2, 3):
        W = rng.normal(size=(3, FEATURES))
        out[v] = classifier_json(W.tolist(), rng.normal(size=3).tolist())
    return out


def test_the_shadow_never_changes_an_answer_and_reports_how_far_it_disagrees(tmp_path, rng):
    """Every answer is the serving version's own (as its model scores the same rows
    alone); the shadow's report per serving version equals what the models give
    on the rows that version served: share of differing labels, mean and largest
    absolute difference of the probabilities and decisions."""
    make_model(tmp_path, classifiers(rng), "[traffic]\nsplit = { 1 = 70, 2 = 30 }\nshadow = 3\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    models = {v: scorewire.load_model(tmp_path / "m" / str(v)) for v in (1, 2, 3)}
    rows = rng.normal(size=(600, FEATURES)) * 2

    async def main():
        service = ScoringService(repo)
        served: dict[int, list[np.ndarray]] = {1: [], 2: []}
        i = n = 0
        while i < len(rows):
            k = 1 + n % 3  # requests of 1, 2 and 3 rows
            X = rows[i : i + k]
            r = await answer(service, key=f"caller-{n}", X=X)
            alone = models[r.version].predict(X)
            assert set(r.outputs) == set(alone)
            for name in alone:
                np.testing.assert_array_equal(r.outputs[name], alone[name])
            served[r.version].append(X)
            i, n = i + k, n + 1
        stats = await drained(service, "m", 3, n)
        await service.aclose()
        service.close()
        return served, n, stats

    served, n, stats = asyncio.run(main())
    by_version = {s.serving_version: s for s in stats}
    assert set(by_version) == {1, 2} and sum(s.mirrored for s in stats) == n
    for v, parts in served.items():
        X = np.concatenate(parts)
        s = by_version[v]
        assert (s.mirrored, s.compared, s.compared_rows, s.failed, s.dropped) == (len(parts), len(parts), len(X), 0, 0)
        mine, shadow = models[v].predict(X), models[3].predict(X)
        outputs = {o.name: o for o in s.outputs}
        assert set(outputs) == {"label", "probabilities", "decision"}
        # labels: exactly what the models say, except rows so close to a tie that a
        # last bit could flip one (none are expected; allowed for all the same)
        close = sum(int((np.diff(np.sort(d, axis=1)[:, -2:], axis=1) < 1e-9).sum())
                    for d in (mine["decision"], shadow["decision"]))  # fmt: skip
        differing = int((mine["label"] != shadow["label"]).sum())
        label = outputs["label"]
        assert label.kind == "label" and label.rows == len(X) and abs(label.differing_rows - differing) <= close
        assert 0 < differing < len(X)  # the models do disagree, not always
        for name in ("probabilities", "decision"):
            o, diff = outputs[name], np.abs(mine[name] - shadow[name])
            assert (o.kind, o.rows, o.values) == ("numeric", len(X), diff.size)
            assert o.mean_abs_diff == pytest.approx(diff.mean(), rel=1e-9)
            assert o.abs_diff_max == pytest.approx(diff.max(), rel=1e-9)


def test_a_shadow_that_cannot_score_never_reaches_a_client(tmp_path):
    """A shadow taking 4 features behind versions taking 3: every request is
    answered by the serving version; each copy is counted as failed."""
    make_model(tmp_path, {1: linear_json(1), 2: linear_json(2, features=4)}, "[traffic]\nsplit = { 1 = 1 }\nshadow = 2\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()

    async def main():
        service = ScoringService(repo)
        for i in range(200):
            assert (await answer(service, key=f"k{i}")).version == 1
        stats = await drained(service, "m", 2, 200)
        service.close()
        return stats

    [s] = asyncio.run(main())
    assert (s.serving_version, s.mirrored, s.failed, s.compared, s.dropped) == (1, 200, 200, 0, 0)


def test_the_shadow_queue_is_bounded_and_counts_what_it_drops(tmp_path, monkeypatch):
    """With the monitoring thread busy, a queue of 10 copies takes 10 and drops (and
    counts) the other 15; the 10 are compared once the thread is free. Every
    request is answered meanwhile."""
    monkeypatch.setattr(service_module, "MIRROR_QUEUE_REQUESTS", 10)
    make_model(tmp_path, values([1, 2]), "[traffic]\nsplit = { 1 = 1 }\nshadow = 2\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()

    async def main():
        service = ScoringService(repo)
        busy, release = threading.Event(), threading.Event()

        def occupy() -> None:
            busy.set()
            release.wait(60)

        service._background(occupy)  # the monitoring thread: busy until released
        assert await asyncio.get_running_loop().run_in_executor(None, busy.wait, 60)
        for i in range(25):
            assert (await answer(service, key=f"k{i}")).version == 1
        [queued] = {s.version: s for s in await service.model_stats("m")}[2].shadow
        release.set()
        [done] = await drained(service, "m", 2, 25)
        service.close()
        return queued, done

    queued, done = asyncio.run(main())
    assert (queued.mirrored, queued.dropped, queued.compared) == (10, 15, 0)
    assert (done.mirrored, done.dropped, done.compared, done.failed) == (10, 15, 10, 0)
    [value] = done.outputs
    assert (value.name, value.values, value.mean_abs_diff, value.abs_diff_max) == ("value", 10, 1.0, 1.0)


def test_the_shadow_fraction_samples_the_copies(tmp_path):
    make_model(tmp_path, values([1, 2]), "[traffic]\nsplit = { 1 = 1 }\nshadow = 2\nshadow_fraction = 0.25\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    random.seed(20261127)

    async def main():
        service = ScoringService(repo)
        for i in range(2000):
            await answer(service, key=f"k{i}")
        [s] = (await drained(service, "m", 2, 1))
        for _ in range(100_000):  # every copy queued so far compared
            [s] = {x.version: x for x in await service.model_stats("m")}[2].shadow
            if s.compared == s.mirrored:
                break
            await asyncio.sleep(0.002)
        service.close()
        return s

    s = asyncio.run(main())
    assert s.compared == s.mirrored and 350 < s.mirrored < 650, s  # 500 ± 7 standard deviations


# ------------------------------------------------------------------ reloads
def test_a_retired_version_is_never_handed_a_request(tmp_path):
    """A request that picked a version just as a reload retired it (another thread)
    picks again and is answered by the version's new record; the retired record
    answers nothing."""
    model_dir = make_model(tmp_path, {1: linear_json(1)})
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()

    async def main():
        service = ScoringService(repo)
        await answer(service)
        old = repo.entry("m").versions[1]
        publish(model_dir / "1" / "model.json", linear_json(1))
        repo.load("m")  # a new record of version 1 replaces it: retired
        new = repo.entry("m").versions[1]
        assert old.retired and not new.retired and old is not new
        route, calls = repo.route, []

        def late(*args):  # the first pick is the one made before the reload
            calls.append(args)
            return (old, None) if len(calls) == 1 else route(*args)

        repo.route = late
        answered = await answer(service)
        service.close()
        return old.monitor.requests, new.monitor.requests, len(calls), answered.version

    old_requests, new_requests, picks, version = asyncio.run(main())
    assert (old_requests, new_requests, picks, version) == (1, 1, 2, 1)


def test_versions_answer_until_their_replacements_are_ready(tmp_path, monkeypatch):
    """Version 2 appears (policy: the newest): while it loads, version 1 answers and
    shows READY beside 2 LOADING; once 2 is ready it answers, and 1 is retired."""
    import scorewire.repository as repository_module

    model_dir = make_model(tmp_path, {1: linear_json(1)})
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    loading, release = threading.Event(), threading.Event()
    real_load = repository_module.load_model

    def slow_load(artifact, **kwargs):
        if Path(artifact).parent.name == "2":
            loading.set()
            release.wait(60)
        return real_load(artifact, **kwargs)

    monkeypatch.setattr(repository_module, "load_model", slow_load)
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.json").write_text(linear_json(2))

    async def main():
        loop = asyncio.get_running_loop()
        service = ScoringService(repo)
        old = repo.entry("m").versions[1]
        reload = loop.run_in_executor(None, repo.load, "m")
        assert await loop.run_in_executor(None, loading.wait, 60)
        during = [(await answer(service)).version for _ in range(100)]
        states = {v: mv.state for v, mv in repo.entry("m").versions.items()}
        release.set()
        await reload
        after = [(await answer(service)).version for _ in range(100)]
        service.close()
        return during, states, after, old.retired, sorted(repo.entry("m").versions)

    during, states, after, retired, versions = asyncio.run(main())
    assert set(during) == {1} and states == {1: State.READY, 2: State.LOADING}
    assert set(after) == {2} and retired and versions == [2]


def test_a_reload_that_only_moves_traffic_keeps_the_versions_and_their_feedback(tmp_path):
    """Through reuse (what polling does), a changed [traffic] alone reads no
    version again: the same records serve, and feedback for requests answered
    before the change is joined. LoadModel's reload (no reuse) reads them again."""
    model_dir = make_model(tmp_path, values([1, 2]), "[traffic]\nsplit = { 1 = 50, 2 = 50 }\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()

    async def main():
        service = ScoringService(repo)
        answered = {f"r{i}": (await answer(service, request_id=f"r{i}")).version for i in range(40)}
        before = dict(repo.entry("m").versions)
        publish(model_dir / "model.toml", "[traffic]\nsplit = { 1 = 10, 2 = 90 }\n")
        await service.load("m", reuse=True)
        kept = all(repo.entry("m").versions[v] is before[v] for v in (1, 2))
        truth = [FeedbackItem(rid, np.array([float(v)])) for rid, v in answered.items()]
        joined = await service.feedback("m", truth)
        await service.load("m")
        reread = not any(repo.entry("m").versions[v] is before[v] for v in (1, 2))
        service.close()
        return answered, kept, joined, reread

    answered, kept, joined, reread = asyncio.run(main())
    assert set(answered.values()) == {1, 2} and kept and reread
    assert [(v, r.outcome) for v, r in joined] == [(v, Outcome.MATCHED) for v in answered.values()]


def test_a_shadow_alone_leaves_the_newest_other_version_serving(tmp_path):
    """The version policy (latest 1) picks among the versions that are not the
    shadow: the newest version shadows, the one before it answers everything."""
    make_model(tmp_path, values([1, 2, 3]), "[traffic]\nshadow = 3\n")
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    entry = repo.entry("m")
    assert entry.ready_versions() == [2, 3] and entry.shares() == {2: 1.0}
    assert {repo.route("m", None, f"k{i}")[0].version for i in range(100)} == {2}


@pytest.mark.parametrize(
    "before, after, loading",
    [
        # a rollback: the split moves to a version not served until now (policy: the newest)
        ("[traffic]\nsplit = { 2 = 1 }\n", "[traffic]\nsplit = { 1 = 1 }\n", 1),
        # the newest version turns shadow: the one before it serves, once loaded
        ("", "[traffic]\nshadow = 3\n", 2),
        # the split is dropped and a new version published: the newest takes over, once loaded
        ("[version_policy]\npolicy = 'all'\n[traffic]\nsplit = { 1 = 1 }\n", "[version_policy]\npolicy = 'all'\n", 4),
    ],
    ids=["split-to-unloaded", "newest-turns-shadow", "split-dropped-new-newest"],
)
def test_during_a_load_the_versions_that_had_the_traffic_keep_it(tmp_path, monkeypatch, before, after, loading):
    """While the version a new configuration sends the traffic to loads, the ones
    that took it before keep it — never a version that took none (nor an error) —
    and they give it up once it is ready."""
    import scorewire.repository as repository_module

    model_dir = make_model(tmp_path, values([1, 2, 3]), before)
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    had = set(repo.entry("m").shares())
    publish(model_dir / "model.toml", after)
    if loading == 4:
        make_model(tmp_path, values([4]))
    loading_now, release = threading.Event(), threading.Event()
    real_load = repository_module.load_model

    def slow_load(artifact, **kwargs):
        if Path(artifact).parent.name == str(loading):
            loading_now.set()
            release.wait(60)
        return real_load(artifact, **kwargs)

    monkeypatch.setattr(repository_module, "load_model", slow_load)

    async def main():
        loop = asyncio.get_running_loop()
        service = ScoringService(repo)
        reload = loop.run_in_executor(None, functools.partial(repo.load, "m", reuse=True))
        try:
            assert await loop.run_in_executor(None, loading_now.wait, 60)
            during = {(await answer(service, key=f"k{i}")).version for i in range(100)}
            shares = repo.entry("m").shares()
        finally:
            release.set()
        await reload
        after = {(await answer(service, key=f"k{i}")).version for i in range(100)}
        service.close()
        return during, shares, after

    during, shares, after_load = asyncio.run(main())
    assert during == had and set(shares) == had and after_load == {loading}
    assert repo.entry("m").shares() == {loading: 1.0} and not repo.entry("m").previous


def test_loading_a_split_that_names_a_missing_version_is_a_load_error(tmp_path):
    """What LoadModel answers FAILED_PRECONDITION: the model fails, its error names
    model.toml (as any model.toml it cannot use)."""
    model_dir = make_model(tmp_path, values([1]))
    repo = ModelRepository(tmp_path, n_threads=1)
    repo.load_all()
    publish(model_dir / "model.toml", "[traffic]\nsplit = { 2 = 1 }\n")

    async def main():
        service = ScoringService(repo)
        with pytest.raises(ModelLoadError) as info:
            await service.load("m")
        service.close()
        return info.value.message

    message = asyncio.run(main())
    assert str(model_dir / "model.toml") in message and "names version 2, which has no version directory" in message
