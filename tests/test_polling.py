"""Polling the repository (``--poll-interval-s``), one poll at a time: what changes on
disk is loaded once it looks the same twice in a row, never while it is being
written; new and removed versions and models come and go; a changed split moves
traffic without reading a version again."""

from __future__ import annotations

import asyncio
import os

import pytest

from scorewire.errors import NotFound
from scorewire.repository import ModelRepository, State
from scorewire.service import RepositoryWatch, ScoringService
from scorewire.types import PredictRequest

from .test_traffic import X1, make_model, values
from .traffic import linear_json, publish, publish_version


async def watching(root):
    repo = ModelRepository(root, n_threads=1)
    repo.load_all()
    service = ScoringService(repo)
    changed: list[str] = []
    service.on_change(changed.append)
    watch = RepositoryWatch(service)
    assert await watch.poll() == []  # the first look: what is loaded
    return repo, service, watch, changed


def test_a_version_directory_being_written_is_never_loaded(tmp_path):
    """Version 2's model.json is written a piece per poll: no poll reads it while
    it grows (GetModel would show version 2 FAILED); the poll after the one that
    first saw it complete loads it, READY."""
    model_dir = make_model(tmp_path, values([1]), "[version_policy]\npolicy = 'all'\n")
    text = linear_json(2)
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]

    async def main():
        repo, service, watch, changed = await watching(tmp_path)
        (model_dir / "2").mkdir()
        path = model_dir / "2" / "model.json"
        seen = []
        for piece in pieces:
            with open(path, "a") as f:
                f.write(piece)
            seen.append((await watch.poll(), sorted(repo.entry("m").versions)))
        complete = (await watch.poll(), sorted(repo.entry("m").versions))  # the same as the last look: loaded
        r = await service.predict(PredictRequest("m", X1))
        service.close()
        return seen, complete, r.version, repo.entry("m").versions[2].state, changed

    seen, complete, answered, state, changed = asyncio.run(main())
    assert len(seen) == len(pieces) > 10
    assert seen == [([], [1])] * len(pieces)
    assert complete == (["m"], [1, 2]) and state is State.READY and answered == 2 and changed == ["m"]


def test_versions_and_models_come_and_go(tmp_path):
    """Each change is acted on by the second poll that sees it, through the
    service's load (its listeners hear of it): a published version, a changed split
    (the same version records go on serving), a version renamed away, a new model,
    a removed model. A repository that does not change is left alone."""
    model_dir = make_model(tmp_path, values([1]), "[version_policy]\npolicy = 'all'\n")

    async def main():
        repo, service, watch, changed = await watching(tmp_path)
        steps = {}

        async def two_polls(name: str) -> None:
            steps[name] = [await watch.poll(), await watch.poll()]

        await two_polls("nothing")
        publish_version(model_dir, 2, linear_json(2))
        await two_polls("version added")
        v1, v2 = repo.entry("m").versions[1], repo.entry("m").versions[2]
        publish(model_dir / "model.toml", "[version_policy]\npolicy = 'all'\n[traffic]\nsplit = { 1 = 1 }\n")
        await two_polls("split")
        kept = repo.entry("m").versions[1] is v1 and repo.entry("m").versions[2] is v2
        split_answer = (await service.predict(PredictRequest("m", X1, request_id="a"))).version
        os.rename(model_dir / "2", model_dir / ".2.old")
        await two_polls("version removed")
        versions_after_removal = sorted(repo.entry("m").versions)
        make_model(tmp_path, values([1]), name=".n.tmp")
        os.rename(tmp_path / ".n.tmp", tmp_path / "n")
        await two_polls("model added")
        n_state = repo.entry("n").state
        os.rename(tmp_path / "n", tmp_path / ".n.old")
        await two_polls("model removed")
        with pytest.raises(NotFound):
            repo.entry("n")
        await two_polls("nothing again")
        service.close()
        return steps, kept, split_answer, versions_after_removal, n_state, v2.retired, changed

    steps, kept, split_answer, versions_after_removal, n_state, v2_retired, changed = asyncio.run(main())
    assert steps == {
        "nothing": [[], []],
        "version added": [[], ["m"]],
        "split": [[], ["m"]],
        "version removed": [[], ["m"]],
        "model added": [[], ["n"]],
        "model removed": [[], ["n"]],
        "nothing again": [[], []],
    }
    assert kept and split_answer == 1 and versions_after_removal == [1] and v2_retired
    assert n_state is State.READY and changed == ["m", "m", "m", "n", "n"]


def test_an_unload_by_the_operator_is_not_undone_by_polling(tmp_path):
    make_model(tmp_path, values([1]))

    async def main():
        repo, service, watch, _ = await watching(tmp_path)
        service.unload("m")
        acted = [await watch.poll() for _ in range(3)]
        service.close()
        return acted, [e.name for e in repo.entries()]

    acted, names = asyncio.run(main())
    assert acted == [[], [], []] and names == []


def test_the_readmes_canary_is_published_by_polling(tmp_path):
    """The README's example as a user runs it, against `scorewire serve
    --poll-interval-s`: model.toml pins the traffic to version 3; its commands
    publish version 4 (loaded, taking no traffic), then the split that sends it 10%
    of the callers (placed by their x-user-id); then 4 is promoted and 3 retired as
    the README says. Each state is waited for through GetModel, not timed."""
    import subprocess

    import grpc
    import numpy as np

    from scorewire.grpc._codec import array_to_tensor
    from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
    from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc

    from .observability.helpers import wait_for
    from .servers import server_process, wait_for_line
    from .traffic import FEATURES, readme_block

    make_model(tmp_path / "models", {3: linear_json(3)}, readme_block("poll-example", "toml"), name="credit")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "model.json").write_text(linear_json(4))
    script = readme_block("publish-example", "sh")
    first, second = script.split("# 2.")
    row = array_to_tensor(np.zeros((1, FEATURES)), raw=True)

    def run(commands: str) -> None:
        subprocess.run(["sh", "-ec", commands], cwd=tmp_path, check=True, timeout=60)

    with server_process("--repo", str(tmp_path / "models"), "--poll-interval-s", "0.1") as server, \
            grpc.insecure_channel(server.addr) as channel:  # fmt: skip
        wait_for_line(server, "watching the repository for changes every 0.1 s")
        models, predict = pb_grpc.ModelServiceStub(channel), pb_grpc.PredictServiceStub(channel)

        def state():
            info = models.GetModel(pb.GetModelRequest(name="credit"), timeout=30)
            return (sorted((v.version, pb.ModelState.Name(v.state), round(v.traffic_share, 6)) for v in info.versions),
                    sorted((w.version, w.weight) for w in info.traffic.weights), info.traffic.key_header)  # fmt: skip

        def reaches(expected, what):
            wait_for(lambda: state() == expected, timeout=120, what=what)

        def callers() -> dict[str, int]:
            out = {}
            for i in range(200):
                r = predict.Predict(pb.PredictRequest(model="credit", input=row),
                                    metadata=[("x-user-id", f"user-{i}")], timeout=30)  # fmt: skip
                assert np.frombuffer(r.outputs["value"].raw, "<f8")[0] == r.version
                out[f"user-{i}"] = r.version
            return out

        assert state() == ([(3, "READY", 1.0)], [(3, 100.0)], "")
        run(first)
        reaches(([(3, "READY", 1.0), (4, "READY", 0.0)], [(3, 100.0)], ""), "version 4 loaded, taking no traffic")
        assert set(callers().values()) == {3}
        run("# 2." + second)
        reaches(([(3, "READY", 0.9), (4, "READY", 0.1)], [(3, 90.0), (4, 10.0)], "x-user-id"), "the 90/10 split")
        placed = callers()
        assert set(placed.values()) == {3, 4} and placed == callers()  # sticky by x-user-id
        # promote 4: 3 is unloaded; then its directory goes (a reload that changes nothing served)
        run("cat > models/credit/.model.toml.tmp <<'TOML'\n[traffic]\nsplit = { 4 = 100 }\nTOML\n"
            "mv models/credit/.model.toml.tmp models/credit/model.toml\n")  # fmt: skip
        reaches(([(4, "READY", 1.0)], [(4, 100.0)], ""), "version 4 promoted, 3 unloaded")
        assert set(callers().values()) == {4}
        loads = sum("model credit changed in the repository" in line for line in list(server.output))
        run("mv models/credit/3 models/credit/.3.old && rm -r models/credit/.3.old")
        wait_for(lambda: sum("model credit changed in the repository" in line for line in list(server.output)) > loads,
                 timeout=120, what="the removal of version 3 seen")  # fmt: skip
        assert state() == ([(4, "READY", 1.0)], [(4, 100.0)], "") and set(callers().values()) == {4}
