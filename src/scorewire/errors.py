"""scorewire's errors: one tree, one transport-neutral code each.

Every error the core raises on purpose is a :class:`ScorewireError` carrying a
:class:`Code`. The gRPC edge maps each code to a status in one table
(``scorewire.grpc._status``); nothing else in the core knows about gRPC.

::

    ScorewireError
     ├── InvalidInput      INVALID_INPUT  the caller's request is malformed
     ├── NotFound          NOT_FOUND      unknown model or version
     ├── Unavailable       UNAVAILABLE    the model is loading, failed, or the server drains
     ├── Overloaded        OVERLOADED     over a size or row limit, or a queue is full
     ├── DeadlineExceeded  DEADLINE       the caller's deadline passed
     ├── ModelLoadError    LOAD_ERROR     an artifact cannot be loaded (names its file)
     ├── ConfigurationError CONFIG        a setting, or a file it names, cannot be used
     └── InternalError     INTERNAL       a bug; the client sees a generic message

Messages name the problem (``expected 30 features, got 29``) and never echo the
caller's data.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Transport-neutral error codes."""

    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"
    OVERLOADED = "OVERLOADED"
    DEADLINE = "DEADLINE"
    LOAD_ERROR = "LOAD_ERROR"
    CONFIG = "CONFIG"
    INTERNAL = "INTERNAL"


class ScorewireError(Exception):
    """Base class of every error scorewire raises on purpose."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ScorewireError):
    """The request is malformed: wrong dtype, shape, feature count, values, …"""

    code = Code.INVALID_INPUT


class NotFound(ScorewireError):
    """No such model, or no such version of it."""

    code = Code.NOT_FOUND


class Unavailable(ScorewireError):
    """The model exists but cannot answer now (loading, failed, draining)."""

    code = Code.UNAVAILABLE


class Overloaded(ScorewireError):
    """Over a configured limit (rows, bytes, concurrency, queue)."""

    code = Code.OVERLOADED


class DeadlineExceeded(ScorewireError):
    """The caller's deadline passed before the work could be done."""

    code = Code.DEADLINE


class ModelLoadError(ScorewireError):
    """A model artifact is missing, malformed or unsupported."""

    code = Code.LOAD_ERROR


class ConfigurationError(ScorewireError):
    """A setting, or a file a setting names, cannot be used (the message names it);
    the server refuses to start."""

    code = Code.CONFIG


class InternalError(ScorewireError):
    """An unexpected failure inside scorewire."""

    code = Code.INTERNAL
