"""Feedback joined wherever it lands: a process asks the others for the items it
holds no prediction for.

A prediction is recorded by the process that answered it, but a Feedback call
lands on whichever process its connection reaches: another worker of
``--workers N`` (the kernel spreads connections), another replica behind a
balancer. So the process that gets a Feedback call (the *origin*) joins what it
can, sends the items it knows nothing about to the processes that may know them,
and counts as UNKNOWN_ID only what none of them knew:

* the other workers of its supervisor (hop ``worker``), over their private unix
  sockets in ``--sibling-dir`` (one per worker, named by its pid; the supervisor
  makes the directory, mode 0700, and removes a dead worker's socket);
* the replicas of ``--peers`` (hop ``replica``), each address a name resolves to
  (a headless service), re-resolved every :data:`RESOLVE_EVERY_S`; at most
  :data:`MAX_PEERS` of them.

No loops: a forwarded call says so in its metadata (``scorewire-forwarded``). A
``worker`` hop is answered from the process's own stores only; a ``replica`` hop
is answered from the process's stores and those of its own workers (one more
hop, ``worker``), never from other replicas. So a call makes at most two hops.
A ``replica`` hop that reaches the replica it came from (``--peers`` may list the
replica itself; the answer's metadata names the replica) is answered at once
with nothing, and that address is not asked again.

Bounded cost, on the Feedback path only: one concurrent call per worker and peer,
carrying only the unknown items; waiting at most ``--peer-timeout-s``, and at
most :data:`SHARE_OF_DEADLINE` of the time the caller has left (so the Feedback
call is answered within its deadline). A peer that is down, slow or hung leaves
its items UNKNOWN_ID; the call never fails for it. Once every item is MATCHED or
INVALID (answers only the holder of its prediction gives), calls still running
are cancelled: a hung peer delays only calls with items nobody else holds. A forwarded call carries its
wall-clock deadline (``scorewire-forward-deadline``): a process that reads it
too late (it was stopped, say) does not join the items, which the origin has
reported UNKNOWN_ID by then — so the client may send them again. That needs
clocks that agree to well within ``--peer-timeout-s`` (NTP). Predict never
forwards anything.

Outcomes merge by how much an answer says: MATCHED, then INVALID, DUPLICATE,
EXPIRED; an item answered by none stays UNKNOWN_ID. Each outcome is counted by
the process that decided it (the one holding the prediction), an UNKNOWN_ID by
the origin only: counters summed over the fleet count each item once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ..monitoring.feedback import ItemResult, Outcome
from ..observability import metrics as _metrics
from ._gen.scorewire.v1 import scorewire_pb2 as pb
from ._gen.scorewire.v1 import scorewire_pb2_grpc as pb_grpc
from .workers import socket_path

log = logging.getLogger("scorewire.peers")

#: request metadata of a forwarded call: its hop (WORKER or REPLICA) …
FORWARDED = "scorewire-forwarded"
#: … the replica id of the process the client called …
ORIGIN = "scorewire-origin"
#: … and when (seconds since the epoch) the caller stops waiting for the answer
FORWARD_DEADLINE = "scorewire-forward-deadline"
#: response metadata of a forwarded call: the replica id of the process that answered
ANSWERED_BY = "scorewire-replica"

WORKER = "worker"
REPLICA = "replica"

#: the most --peers addresses one call is forwarded to
MAX_PEERS = 64
#: a resolved --peers name is used this long, then resolved again
RESOLVE_EVERY_S = 30.0
#: a forwarded call waits at most this share of the time its caller has left
SHARE_OF_DEADLINE = 0.8
#: with less time than this left, nothing is forwarded
MIN_WAIT_S = 0.01

_OUTCOMES = {
    pb.MATCHED: Outcome.MATCHED,
    pb.INVALID: Outcome.INVALID,
    pb.DUPLICATE: Outcome.DUPLICATE,
    pb.EXPIRED: Outcome.EXPIRED,
    pb.UNKNOWN_ID: Outcome.UNKNOWN,
}
#: answers only the process holding the prediction gives: nobody else can say more
_FINAL = (Outcome.MATCHED, Outcome.INVALID)
#: the better answer for an item wins
_RANK = {Outcome.MATCHED: 4, Outcome.INVALID: 3, Outcome.DUPLICATE: 2, Outcome.EXPIRED: 1, Outcome.UNKNOWN: 0}


@dataclass(frozen=True)
class Hop:
    """What a Feedback call is, read from its metadata."""

    #: None: a client's call; WORKER or REPLICA: forwarded by another process
    scope: str | None = None
    #: the replica id of the process the client called (forwarded calls)
    origin: str = ""
    #: seconds since the epoch after which the forwarding process no longer waits
    deadline: float | None = None

    @classmethod
    def of(cls, metadata: Iterable[tuple[str, Any]] | None) -> Hop:
        values = {k: v for k, v in metadata or () if isinstance(v, str)}
        scope = values.get(FORWARDED)
        if scope not in (WORKER, REPLICA):
            return cls()
        try:
            deadline: float | None = float(values.get(FORWARD_DEADLINE, ""))
        except ValueError:
            deadline = None
        return cls(scope, values.get(ORIGIN, ""), deadline)


class Forwarder:
    """Asks the other workers and replicas about feedback items (see the module
    docstring). Lives on the server's event loop."""

    def __init__(
        self,
        replica_id: str,
        peers: Sequence[tuple[str, int]] = (),
        sibling_dir: str = "",
        timeout_s: float = 1.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        metrics: bool = False,
    ) -> None:
        self.replica_id = replica_id
        self.peers = tuple(peers)
        self.sibling_dir = sibling_dir
        self.timeout_s = timeout_s
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._metrics = metrics
        self._channels: dict[str, tuple[grpc.aio.Channel, pb_grpc.PredictServiceStub]] = {}
        #: each --peers entry's addresses (as gRPC targets), when last resolved
        self._resolved: dict[tuple[str, int], list[str]] = {}
        self._resolve_at = 0.0
        #: --peers addresses that turned out to be this replica
        self._self: set[str] = set()

    @property
    def own_socket(self) -> str:
        """The private address this process listens on for its sibling workers ("": none)."""
        return f"unix:{socket_path(self.sibling_dir)}" if self.sibling_dir else ""

    def forwards(self, hop: Hop) -> bool:
        """Whether a Feedback call of this hop asks anyone: a client's call asks
        the workers and the peers; a ``replica`` hop the workers; a ``worker``
        hop nobody."""
        if hop.scope == WORKER:
            return False
        return bool(self.sibling_dir) or (hop.scope is None and bool(self.peers))

    # ------------------------------------------------------------ asking
    async def ask(
        self, model: str, items: Sequence[pb.FeedbackItem], hop: Hop, deadline: float | None
    ) -> dict[int, tuple[int | None, ItemResult]]:
        """Send ``items`` (the ones this process does not know) to the workers and
        peers this hop may ask, concurrently; {position in items: (version, result)}
        of each item some process answered with more than UNKNOWN_ID. Waits at most
        ``timeout_s``, and at most a share of the time left before ``deadline``
        (time.monotonic()); never raises for a peer's failure."""
        wait = self.timeout_s
        if deadline is not None:
            wait = min(wait, (deadline - time.monotonic()) * SHARE_OF_DEADLINE)
        if hop.deadline is not None:  # a replica hop asking its workers: within its caller's wait
            wait = min(wait, hop.deadline - time.time())
        if wait < MIN_WAIT_S or not items:
            return {}
        end = time.monotonic() + wait
        targets = [(t, WORKER) for t in await self._siblings()]
        if hop.scope is None:
            targets += [(t, REPLICA) for t in await self._peer_targets(wait)]
            wait = end - time.monotonic()  # what resolving the peers' names left
        if not targets or wait < MIN_WAIT_S:
            return {}
        request = pb.FeedbackRequest(model=model, items=items)
        until = repr(time.time() + wait)
        best: dict[int, tuple[int | None, ItemResult]] = {}
        calls = {
            asyncio.ensure_future(self._call(target, scope, request, until, wait)): scope for target, scope in targets
        }
        pending = set(calls)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    response = task.result()
                    if response is not None:
                        _merge(best, response)
                if len(best) == len(items) and all(r.outcome in _FINAL for _, r in best.values()):
                    break  # every item joined (or refused) where its prediction is: no need to wait
        finally:
            for task in pending:
                task.cancel()
                self._count(calls[task], "CANCELLED")
        return best

    async def _call(
        self, target: str, scope: str, request: pb.FeedbackRequest, until: str, wait: float
    ) -> pb.FeedbackResponse | None:
        """One forwarded call; None when it failed or said nothing useful."""
        stub = self._stub(target)
        metadata = ((FORWARDED, scope), (ORIGIN, self.replica_id), (FORWARD_DEADLINE, until))
        call = stub.Feedback(request, timeout=wait, metadata=metadata)
        try:
            response = await call
            answered_by = dict(await call.initial_metadata() or ()).get(ANSWERED_BY)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            log.debug("forwarded feedback to %s: %s", target, code.name)
            self._count(scope, code.name)
            return None
        except Exception:  # never the Feedback call's failure
            log.exception("forwarding feedback to %s failed", target)
            self._count(scope, "UNKNOWN")
            return None
        self._count(scope, "OK")
        if scope == REPLICA and answered_by == self.replica_id:
            log.info("peer address %s is this replica: not asking it again", target)
            self._self.add(target)
            return None
        if [r.request_id for r in response.results] != [i.request_id for i in request.items]:
            return None  # not an answer to these items
        return response

    def _count(self, scope: str, code: str) -> None:
        if self._metrics:
            _metrics.FEEDBACK_FORWARDS.labels(scope, code).inc()

    def _stub(self, target: str) -> pb_grpc.PredictServiceStub:
        held = self._channels.get(target)
        if held is None:
            channel = grpc.aio.insecure_channel(target, options=self._options)
            held = self._channels[target] = (channel, pb_grpc.PredictServiceStub(channel))
        return held[1]

    # ----------------------------------------------------------- targets
    async def _siblings(self) -> list[str]:
        """The private sockets of the other workers, as gRPC targets."""
        if not self.sibling_dir:
            return []
        try:
            names = os.listdir(self.sibling_dir)
        except OSError:
            names = []
        own = os.path.basename(socket_path(self.sibling_dir))
        targets = [f"unix:{os.path.join(self.sibling_dir, n)}" for n in sorted(names) if n.endswith(".sock") and n != own]
        await self._drop_channels(lambda t: t.startswith("unix:") and t not in targets)
        return targets

    async def _peer_targets(self, wait: float) -> list[str]:
        """Every address of every --peers entry (resolved every RESOLVE_EVERY_S; an
        entry that does not resolve keeps its last addresses), but this replica's."""
        if not self.peers:
            return []
        now = time.monotonic()
        if now >= self._resolve_at:
            self._resolve_at = now + RESOLVE_EVERY_S  # also after a failure: no lookup per call
            await asyncio.gather(*(self._resolve(host, port, wait) for host, port in self.peers))
            everyone = {t for ts in self._resolved.values() for t in ts}
            await self._drop_channels(lambda t: not t.startswith("unix:") and t not in everyone)
        targets = sorted({t for ts in self._resolved.values() for t in ts} - self._self)
        return targets[:MAX_PEERS]

    async def _resolve(self, host: str, port: int, wait: float) -> None:
        """Resolve one --peers entry (within ``wait``); on failure keep its last addresses."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), wait)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("cannot resolve peer %s:%d (%s): using its last addresses", host, port, type(exc).__name__)
            return
        self._resolved[(host, port)] = sorted({_target(info[4]) for info in infos})

    async def _drop_channels(self, gone: Any) -> None:
        for target in [t for t in self._channels if gone(t)]:
            channel, _ = self._channels.pop(target)
            await channel.close()

    async def close(self) -> None:
        """Close every channel (at shutdown)."""
        channels, self._channels = list(self._channels.values()), {}
        for channel, _ in channels:
            with contextlib.suppress(Exception):
                await channel.close()


def _target(sockaddr: tuple[Any, ...]) -> str:
    """A resolved socket address as a gRPC target that needs no resolving."""
    host, port = sockaddr[0], sockaddr[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _merge(best: dict[int, tuple[int | None, ItemResult]], response: pb.FeedbackResponse) -> None:
    """Keep, per item, the best answer so far (UNKNOWN_ID is no answer)."""
    for i, r in enumerate(response.results):
        outcome = _OUTCOMES.get(r.outcome, Outcome.UNKNOWN)
        if outcome is Outcome.UNKNOWN:
            continue
        held = best.get(i)
        if held is None or _RANK[outcome] > _RANK[held[1].outcome]:
            best[i] = (r.version or None, ItemResult(r.request_id, outcome, r.message))
