"""The calls this server is serving, counted by scorewire itself.

Every scorewire method is served from one :class:`~scorewire.grpc._handlers.MethodTable`;
grpc.aio asks it for a handler (``service()``) as the first step of each call's task,
before the request is read. That is where :class:`Calls` counts the call in (its
task) and where the task's end counts it out: a count of calls in flight that needs
no knowledge of how grpc names its tasks, and includes calls still reading their
request.

Shutdown (see ``server.py``) uses it to stop without losing a request:

- :meth:`Calls.refuse_new_calls`: from then on every new call is answered
  UNAVAILABLE at once by scorewire, before its request is read — never left for gRPC
  core to cancel, which a client sees as CANCELLED (its own cancellation: no
  balancer retries it). Open streams answer the messages they have received and
  end with UNAVAILABLE.
- :meth:`Calls.wait_quiet`: until nothing is in flight and no call has arrived for
  :data:`QUIET_S`, so that when gRPC core stops (and cancels what it holds), it holds
  nothing.
- :meth:`Calls.abandon`: what is still running when the grace period ends is
  cancelled with :data:`ABANDONED` as the reason, and the handler answers
  UNAVAILABLE instead of CANCELLED (see :func:`answer_abandoned`).

It is also where ``--max-concurrent-rpcs`` is applied (:meth:`Calls.admit`), rather
than by grpc's own limit, which counts a call from its first byte (clients that send
half a request and stall would use it up) and refuses health checks too (a busy
server would look unhealthy to Envoy's health checks and Kubernetes' probes, which
would take it out and move its load onto the others). Health checks
(:data:`UNLIMITED`) are never refused for load, and do not count towards the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import grpc

#: what a call refused or abandoned at shutdown is told (with UNAVAILABLE)
SHUTTING_DOWN = "the server is shutting down"

#: the cancellation message of a call abandoned at the end of the grace period
ABANDONED = "scorewire: abandoned at shutdown"

#: the cancellation message of a call whose request did not arrive in time
STALLED = "scorewire: the request did not arrive in time"

#: what a call over the limit of calls served at once is told (RESOURCE_EXHAUSTED)
OVER_LIMIT = "the server is serving as many calls as it may at once (--max-concurrent-rpcs); retry later"

#: calls that never end by themselves (health Watch): not counted as work in flight,
#: ended last
STANDING = frozenset({"/grpc.health.v1.Health/Watch"})

#: health checks of both protocols: never refused for load, not counted towards
#: ``--max-concurrent-rpcs`` (a balancer that saw them refused would eject a replica
#: that is only busy)
UNLIMITED = frozenset({
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
    "/inference.GRPCInferenceService/ModelReady",
})

#: shutdown waits for this long without a new call before gRPC core stops
QUIET_S = 0.1

#: how often the waits here look again
POLL_S = 0.01

#: put into an idle stream's read-ahead queue to wake it when new calls are refused
DRAIN: Any = object()


def abandoned(exc: BaseException) -> bool:
    """True for the cancellation :meth:`Calls.abandon` caused."""
    return isinstance(exc, asyncio.CancelledError) and ABANDONED in exc.args


async def answer_abandoned(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """In a handler's ``except CancelledError``: answer UNAVAILABLE when the call
    was abandoned at shutdown (re-raise otherwise: the client cancelled)."""
    if abandoned(exc):
        await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)


def answering(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers ``code`` at once (its
    request is never parsed)."""

    async def answer(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(answer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(answer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(answer)
    return grpc.unary_unary_rpc_method_handler(answer)


def refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAVAILABLE at once."""
    return answering(handler, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)


class Calls:
    """The calls in flight (their tasks), whether new ones are refused, and how many
    are being served at once.

    A call is *served* from the moment its handler starts — its request has arrived
    — until the handler ends: at most ``max_served`` at once (:meth:`admit`), beyond
    which a call is answered RESOURCE_EXHAUSTED. A call still waiting for its request
    holds no such place, so clients that send half a request and stall cannot keep
    others out; one that has waited ``receive_timeout_s`` is cancelled
    (:meth:`expire_stalled`)."""

    def __init__(self, max_served: int | None = None, receive_timeout_s: float = 0.0) -> None:
        self.max_served = max_served
        self.receive_timeout_s = receive_timeout_s
        #: calls whose handler runs now
        self.served = 0
        #: calls counted in whose request has not arrived: task → time.monotonic() then
        self.receiving: dict[asyncio.Future[Any], float] = {}
        #: calls in flight, standing ones aside
        self.in_flight: set[asyncio.Future[Any]] = set()
        #: open health Watch streams
        self.standing: set[asyncio.Future[Any]] = set()
        #: the read-ahead queues of open scoring streams
        self.streams: set[asyncio.Queue[Any]] = set()
        self.refusing = False
        #: time.monotonic() of the last call refused
        self.last_refused = 0.0

    def count_in(self, method: str) -> None:
        """Count the current call (of ``method``) in until its task ends."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - grpc.aio runs every call in a task
            return
        if method in STANDING:
            self.standing.add(task)
            task.add_done_callback(self.standing.discard)
            return
        self.in_flight.add(task)
        self.receiving[task] = time.monotonic()
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Future[Any]) -> None:
        self.in_flight.discard(task)
        self.receiving.pop(task, None)

    def admit(self) -> bool:
        """The current call's handler starts (its request has arrived): True when it
        may be served, False when ``max_served`` calls are served already."""
        self.receiving.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        if self.max_served is not None and self.served >= self.max_served:
            return False
        self.served += 1
        return True

    def release(self) -> None:
        """The handler :meth:`admit` let in has ended."""
        self.served -= 1

    async def expire_stalled(self, poll_s: float = 1.0) -> None:
        """Until cancelled: every ``poll_s``, cancel the calls whose request has not
        arrived within ``receive_timeout_s`` (gRPC then resets their streams)."""
        while True:
            await asyncio.sleep(poll_s)
            cutoff = time.monotonic() - self.receive_timeout_s
            for task, since in list(self.receiving.items()):
                if since < cutoff:
                    del self.receiving[task]
                    task.cancel(STALLED)

    def refuse_new_calls(self) -> None:
        """From now on, answer every new call UNAVAILABLE; wake idle streams so
        they end."""
        self.refusing = True
        self.last_refused = time.monotonic()
        for queue in self.streams:
            if queue.empty():  # a stream with messages to answer sees ``refusing`` after them
                queue.put_nowait(DRAIN)

    async def wait_quiet(self, deadline: float) -> bool:
        """Wait until no call is in flight and none was refused for QUIET_S (True),
        or until ``deadline`` (time.monotonic(); False)."""
        while True:
            now = time.monotonic()
            if not self.in_flight and now - self.last_refused >= QUIET_S:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    async def abandon(self, calls: Iterable[asyncio.Future[Any]], timeout: float = 5.0) -> None:
        """Cancel ``calls`` as :data:`ABANDONED` (their handlers answer UNAVAILABLE)
        and wait, at most ``timeout`` seconds, for them to end."""
        tasks = list(calls)
        for task in tasks:
            task.cancel(ABANDONED)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
