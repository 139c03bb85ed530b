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
than by grpc's own limit, which would refuse health checks too: a busy server would
look unhealthy to Envoy's health checks and Kubernetes' probes, which would take it
out and move its load onto the others. Health checks (:data:`UNLIMITED`) are never
refused for load, and do not count towards the limit.
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

#: what a call over ``--max-concurrent-rpcs`` is told (with RESOURCE_EXHAUSTED)
OVERLOADED = "too many calls in flight (the server's --max-concurrent-rpcs)"

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


def overload(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers RESOURCE_EXHAUSTED at
    once (over ``--max-concurrent-rpcs``)."""
    return answering(handler, grpc.StatusCode.RESOURCE_EXHAUSTED, OVERLOADED)


class Calls:
    """The calls in flight (their tasks), and whether new ones are refused.
    ``limit``: the most calls admitted at once (health checks aside), or None."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        #: calls in flight, standing ones aside
        self.in_flight: set[asyncio.Future[Any]] = set()
        #: calls admitted under ``limit`` and still in flight
        self.admitted: set[asyncio.Future[Any]] = set()
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
        calls = self.standing if method in STANDING else self.in_flight
        calls.add(task)
        task.add_done_callback(calls.discard)

    def admit(self, method: str) -> bool:
        """Whether the current call (of ``method``) may run: False when ``limit``
        calls are already in flight (health checks are always admitted, and not
        counted). An admitted call counts until its task ends."""
        if self.limit is None or method in UNLIMITED:
            return True
        if len(self.admitted) >= self.limit:
            return False
        task = asyncio.current_task()
        if task is not None:
            self.admitted.add(task)
            task.add_done_callback(self.admitted.discard)
        return True

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
