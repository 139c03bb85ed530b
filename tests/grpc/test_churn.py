"""Zero failed requests while a model's versions churn, through a real server.

1. A server serves model ``live``; two clients keep 1-row load on it, one unary
   Predict after another and one PredictStream, a message at a time.
2. Meanwhile, 50 rounds of four steps each: a version is added, a version's
   artifact replaced, the ``[traffic]`` section changed (a split, a split and a
   shadow, none, a shadow alone), a version removed — on disk, atomically, then
   loaded by the server's own repository watch (``--poll-interval-s``: two polls,
   the second acts) in even rounds and by LoadModel in odd ones. After each step
   the clients answer at least twice more before the next (counted, not timed).
3. Result: every request succeeded, and every answer came from an artifact that
   took traffic just before the request was sent, or in a state reached before its
   answer came back (or the one being loaded then: a version answers until its
   replacement is ready).

Each artifact answers its own serial number, so an answer names the file it came
from; ``S[k]``, the artifacts that take the traffic after step k, is computed from
what the test wrote, not from the server.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from scorewire.grpc._codec import array_to_tensor
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2 as pb
from scorewire.grpc._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from scorewire.repository import ModelRepository
from scorewire.settings import Settings

from ..servers import InProcessServer
from ..traffic import FEATURES, linear_json, publish, publish_version

ROUNDS = 50
#: answers each client gives after a step before the next step starts
ANSWERS_PER_STEP = 2
ROW = array_to_tensor(np.zeros((1, FEATURES)), raw=True)


@dataclass
class Disk:
    """What the test has written: version → the serial its artifact answers."""

    root: Path
    serial: dict[int, int] = field(default_factory=dict)
    split: dict[int, int] = field(default_factory=dict)
    shadow: int | None = None
    published: int = 0  # artifacts written: the serial of the last
    next_version: int = 1  # versions are never reused
    steps: int = 0  # model.toml files written

    @property
    def model_dir(self) -> Path:
        return self.root / "live"

    def artifact(self, version: int) -> str:
        self.published += 1
        self.serial[version] = self.published
        return linear_json(self.published)

    def add(self) -> None:
        v, self.next_version = self.next_version, self.next_version + 1
        publish_version(self.model_dir, v, self.artifact(v))

    def replace(self, rng: random.Random) -> None:
        v = rng.choice(sorted(self.serial))
        publish(self.model_dir / str(v) / "model.json", self.artifact(v))

    def remove(self, newest: bool) -> None:
        candidates = [v for v in sorted(self.serial) if v not in self.split and v != self.shadow]
        assert len(self.serial) > 2 and candidates, "every step changes the repository"
        v = candidates[-1] if newest else candidates[0]
        os.rename(self.model_dir / str(v), self.model_dir / f".{v}.old")  # gone from the repository at once
        shutil.rmtree(self.model_dir / f".{v}.old")
        del self.serial[v]

    def traffic(self, pattern: int, rng: random.Random) -> None:
        versions = sorted(self.serial)
        self.split, self.shadow = {}, None
        if pattern == 0:  # a split of two versions
            self.split = {v: rng.randint(1, 99) for v in rng.sample(versions, 2)}
        elif pattern == 1:  # a split and a shadow, leaving a version to remove
            self.split = {v: rng.randint(1, 99) for v in rng.sample(versions, rng.randint(1, len(versions) - 2))}
            self.shadow = rng.choice([v for v in versions if v not in self.split])
        elif pattern == 3:  # a shadow alone: the newest shadows, the newest other version serves
            self.shadow = versions[-1]
        self.write_toml()

    def write_toml(self) -> None:
        self.steps += 1
        lines = [f'description = "step {self.steps}"']
        if self.split or self.shadow is not None:
            lines.append("[traffic]")
        if self.split:
            lines.append("split = { " + ", ".join(f"{v} = {w}" for v, w in sorted(self.split.items())) + " }")
            lines.append('key_header = "x-caller"')
        if self.shadow is not None:
            lines.append(f"shadow = {self.shadow}")
        publish(self.model_dir / "model.toml", "\n".join(lines) + "\n")

    def serving(self) -> frozenset[int]:
        """The serials that take the traffic once this state is loaded."""
        if self.split:
            return frozenset(self.serial[v] for v in self.split)
        newest = max(v for v in self.serial if v != self.shadow)
        return frozenset({self.serial[newest]})

    def served_versions(self) -> list[int]:
        """The versions the server loads: the newest that is not the shadow (the
        default version policy), the split's and the shadow."""
        newest = max(v for v in self.serial if v != self.shadow)
        return sorted({newest, *self.split, *([self.shadow] if self.shadow is not None else [])})


class Load:
    """The clients' side: counts, problems, and what S[k] was at each step."""

    def __init__(self, states: list[frozenset[int]]) -> None:
        self.states = states  # appended to by the changer: S[0], S[1], ...
        self.completed = 0  # steps done (read by the clients, written by the changer)
        self.answers = {"unary": 0, "stream": 0}
        self.problems: list[str] = []
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def check(self, client: str, sent: int, received: int, version: int, value: float) -> None:
        allowed = frozenset().union(*self.states[sent : received + 2])
        serial = int(value)
        if serial != value or serial not in allowed:
            self.problems.append(f"{client}: answered by serial {value} (version {version}) outside the states "
                                 f"{sent}..{received + 1}: {sorted(allowed)}")  # fmt: skip
        with self.progress:
            self.answers[client] += 1
            self.progress.notify_all()

    def failed(self, client: str, what: str) -> None:
        with self.progress:
            self.problems.append(f"{client}: {what}")
            self.stop.set()
            self.progress.notify_all()

    def wait_answers(self, since: dict[str, int]) -> bool:
        """Each client answered ANSWERS_PER_STEP more than ``since`` (or failed)."""
        with self.progress:
            return self.progress.wait_for(
                lambda: self.stop.is_set() or all(self.answers[c] >= since[c] + ANSWERS_PER_STEP for c in since),
                timeout=120,  # bounds a hang only
            )


def unary_client(channel: grpc.Channel, load: Load) -> None:
    stub = pb_grpc.PredictServiceStub(channel)
    i = 0
    while not load.stop.is_set():
        i += 1
        sent = load.completed
        try:
            r = stub.Predict(pb.PredictRequest(model="live", request_id=f"u{i}", input=ROW),
                             metadata=[("x-caller", f"caller-{i % 97}")], timeout=60)  # fmt: skip
        except grpc.RpcError as exc:
            load.failed("unary", f"request {i}: {exc.code().name}: {exc.details()}")
            return
        load.check("unary", sent, load.completed, r.version, np.frombuffer(r.outputs["value"].raw, "<f8")[0])


def stream_client(channel: grpc.Channel, load: Load) -> None:
    stub = pb_grpc.PredictServiceStub(channel)
    outbox: queue.Queue[pb.PredictRequest | None] = queue.Queue()

    def messages():
        while (m := outbox.get()) is not None:
            yield m

    responses = stub.PredictStream(messages(), metadata=[("x-caller", "the-stream")], timeout=600)
    i = 0
    try:
        while not load.stop.is_set():
            i += 1
            sent = load.completed
            outbox.put(pb.PredictRequest(model="live", request_id=f"s{i}", input=ROW))
            r = next(responses)
            if r.HasField("error"):
                load.failed("stream", f"message {i}: {r.error.code}: {r.error.message}")
                return
            value = np.frombuffer(r.response.outputs["value"].raw, "<f8")[0]
            load.check("stream", sent, load.completed, r.response.version, value)
    except grpc.RpcError as exc:
        load.failed("stream", f"message {i}: the stream ended: {exc.code().name}: {exc.details()}")
    finally:
        outbox.put(None)
        with contextlib.suppress(grpc.RpcError):  # already reported
            for _ in responses:  # the server ends the stream once the client has
                pass


def test_no_request_fails_while_versions_and_the_split_change(tmp_path):
    rng = random.Random(20261203)
    disk = Disk(tmp_path)
    for _ in range(3):
        disk.add()
    disk.write_toml()
    server = InProcessServer(
        # NOTE: the watch the server makes is driven here, one poll at a time: the
        # interval only keeps its own loop from polling during the test
        Settings(port=0, poll_interval_s=3600.0),
        ModelRepository(tmp_path, n_threads=1),
    )
    watch = server.server.watch
    assert watch is not None
    load = Load([disk.serving()])
    steps = {"poll": 0, "LoadModel": 0}
    with grpc.insecure_channel(server.addr) as channel:
        models = pb_grpc.ModelServiceStub(channel)
        clients = [threading.Thread(target=c, args=(channel, load)) for c in (unary_client, stream_client)]
        for c in clients:
            c.start()
        try:
            assert load.wait_answers({"unary": 0, "stream": 0})
            for r in range(ROUNDS):
                how = "poll" if r % 2 == 0 else "LoadModel"
                for change in ("add", "replace", "traffic", "remove"):
                    if change == "add":
                        disk.add()
                    elif change == "replace":
                        disk.replace(rng)
                    elif change == "traffic":
                        disk.traffic(r % 4, rng)
                    else:
                        disk.remove(newest=r % 3 == 0)
                    load.states.append(disk.serving())  # S[k+1], before the server may reach it
                    if how == "poll":
                        polls = [server.call(watch.poll()), server.call(watch.poll())]
                        assert polls == [[], ["live"]], (r, change, polls)
                    else:
                        models.LoadModel(pb.LoadModelRequest(name="live"), timeout=60)
                    steps[how] += 1
                    info = models.GetModel(pb.GetModelRequest(name="live"), timeout=60)
                    assert [v.version for v in info.versions if v.state == pb.READY] == disk.served_versions()
                    assert len(info.versions) == len(disk.served_versions()), (r, change, info)
                    since = dict(load.answers)
                    load.completed += 1
                    assert load.wait_answers(since), "the clients stopped answering"
                    assert not load.problems, load.problems[:5]
        finally:
            load.stop.set()
            for c in clients:
                c.join(60)
    server.stop()
    assert not load.problems, load.problems[:5]
    assert steps == {"poll": 2 * ROUNDS, "LoadModel": 2 * ROUNDS}
    assert min(load.answers.values()) >= ANSWERS_PER_STEP * 4 * ROUNDS
