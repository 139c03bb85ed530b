"""Who may call what.

Two groups of RPCs: the **data plane** (scoring, feedback, health, reflection,
metadata, statistics) and the **control plane** (loading and unloading models, the
repository RPCs). A listening port serves the data plane, the control plane or both
(see ``Server``: the control plane is off on a non-loopback address unless asked
for, and ``--admin-port`` gives it a port of its own).

With an access file (``--auth-tokens FILE``), every call but health checks must
carry a credential that maps to the call's group:

- a bearer token in the ``authorization`` metadata (``Bearer <token>``), compared
  in constant time with the file's tokens (or their SHA-256 digests); or
- a client certificate (mutual TLS) whose subject or a SAN the file maps to groups.

No credential, or a token the file does not hold: UNAUTHENTICATED. A credential
without the call's group: PERMISSION_DENIED. A token never appears in logs, spans,
metrics or error messages; the file's ``name`` of an entry does. The file is read
again when it changes (looked at once a second at most); a file that no longer
parses keeps the previous one in force, logged. Its format (TOML)::

    [[token]]
    name = "scoring-app"                  # what logs say instead of the token
    sha256 = "9f86d081884c7d65…"          # hex digest of the token (or: token = "…")
    groups = ["data"]

    [[identity]]
    name = "operator"
    subject = "CN=ops.example"            # the client certificate's subject, or:
    # san = "spiffe://cluster.local/ns/ops/sa/admin"
    groups = ["data", "control"]
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

from ..errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("scorewire.access")

DATA = "data"
CONTROL = "control"
GROUPS = (DATA, CONTROL)

#: the control plane's methods; every other method is the data plane's
CONTROL_METHODS = frozenset({
    "/scorewire.v1.ModelService/LoadModel",
    "/scorewire.v1.ModelService/UnloadModel",
    "/inference.GRPCInferenceService/RepositoryIndex",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
})  # fmt: skip
#: open to every caller when an access file is in force (probes carry no token)
HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})

#: how often the access file's modification time is looked at, seconds
RELOAD_CHECK_S = 1.0

NO_CREDENTIAL = "this server requires a credential: a bearer token in the authorization metadata, or a client certificate it knows"
BAD_TOKEN = "the bearer token is not valid"


def group_of(method: str) -> str:
    return CONTROL if method in CONTROL_METHODS else DATA


class AccessFileError(ConfigurationError):
    """An access file that cannot be used (names the file and the problem)."""


@dataclass(frozen=True)
class Entry:
    name: str
    groups: frozenset[str]


@dataclass(frozen=True)
class Rules:
    """One reading of the access file."""

    #: SHA-256 digests of the tokens, with their entries
    tokens: tuple[tuple[bytes, Entry], ...] = ()
    #: (field, value) → entry, field "subject" or "san"
    identities: tuple[tuple[str, str, Entry], ...] = ()


def parse_rules(data: bytes, source: str) -> Rules:
    """Read an access file; AccessFileError naming ``source`` and the problem."""

    def bad(msg: str) -> AccessFileError:
        return AccessFileError(f"{source}: {msg}")

    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise bad(f"not valid TOML ({str(exc).splitlines()[0][:120]})") from None
    unknown = set(doc) - {"token", "identity"}
    if unknown:
        raise bad(f"unknown table {sorted(unknown)[0]!r} (expected [[token]] and [[identity]])")
    tokens, identities = [], []
    for kind in ("token", "identity"):
        items = doc.get(kind, [])
        if not isinstance(items, list):
            raise bad(f"{kind} must be an array of tables ([[{kind}]])")
        for i, item in enumerate(items):
            where = f"[[{kind}]] {i + 1}"
            if not isinstance(item, dict):
                raise bad(f"{where}: expected a table")
            allowed = {"name", "groups", "token", "sha256"} if kind == "token" else {"name", "groups", "subject", "san"}
            extra = set(item) - allowed
            if extra:
                raise bad(f"{where}: unknown key {sorted(extra)[0]!r}")
            name = item.get("name", f"{kind}-{i + 1}")
            groups = item.get("groups")
            if not isinstance(name, str) or not name:
                raise bad(f"{where}: name must be a non-empty string")
            if not isinstance(groups, list) or not groups or not all(g in GROUPS for g in groups):
                raise bad(f"{where}: groups must be a non-empty list of {' and '.join(repr(g) for g in GROUPS)}")
            entry = Entry(name, frozenset(groups))
            if kind == "token":
                if ("token" in item) == ("sha256" in item):
                    raise bad(f"{where}: give exactly one of token or sha256")
                if "token" in item:
                    token = item["token"]
                    if not isinstance(token, str) or len(token) < 16:
                        raise bad(f"{where}: a token must be a string of at least 16 characters")
                    digest = hashlib.sha256(token.encode("utf-8")).digest()
                else:
                    try:
                        digest = bytes.fromhex(item["sha256"])
                    except (TypeError, ValueError):
                        digest = b""
                    if len(digest) != 32:
                        raise bad(f"{where}: sha256 must be 64 hex digits")
                tokens.append((digest, entry))
            else:
                keys = [k for k in ("subject", "san") if k in item]
                if len(keys) != 1 or not isinstance(item[keys[0]], str) or not item[keys[0]]:
                    raise bad(f"{where}: give exactly one of subject or san, a non-empty string")
                identities.append((keys[0], item[keys[0]], entry))
    if not tokens and not identities:
        raise bad("no [[token]] or [[identity]] entry")
    return Rules(tuple(tokens), tuple(identities))


def read_rules(path: Path) -> Rules:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AccessFileError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_rules(data, str(path))


class AccessFile:
    """The access file's rules, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rules = read_rules(path)  # at start: a bad file stops the server
        self._stamp = self._stat()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> Rules:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return self.rules
        with self._lock:
            if now - self._checked < RELOAD_CHECK_S:
                return self.rules
            self._checked = now
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.rules = read_rules(self.path)
                    log.info("access file %s read again: %d tokens, %d identities",
                             self.path, len(self.rules.tokens), len(self.rules.identities))  # fmt: skip
                except AccessFileError as exc:
                    log.error("%s; the previous rules stay in force", exc.message)
        return self.rules


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer …`` metadata entry, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""
    return None


def token_entry(rules: Rules, token: str) -> Entry | None:
    """The entry of ``token``: every digest is compared (constant time each), so the
    time taken does not tell which entry matched or how far a guess got."""
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    found = None
    for known, entry in rules.tokens:
        if hmac.compare_digest(digest, known) and found is None:
            found = entry
    return found


def identity_entry(rules: Rules, auth_context: dict[str, list[bytes]]) -> Entry | None:
    """The entry the client certificate (grpc's auth context) maps to, if any."""
    if not rules.identities:
        return None
    subjects = {v.decode("utf-8", "replace") for v in auth_context.get("x509_subject", ())}
    sans = {v.decode("utf-8", "replace") for v in auth_context.get("x509_subject_alternative_name", ())}
    for field, value, entry in rules.identities:
        if value in (subjects if field == "subject" else sans):
            return entry
    return None


class Access:
    """The decision for one call: None (go on) or (status, message)."""

    def __init__(self, access_file: AccessFile | None, health_open: bool = True) -> None:
        self.file = access_file
        self.health_open = health_open

    @property
    def enabled(self) -> bool:
        return self.file is not None

    def check_metadata(self, method: str, metadata: Any) -> tuple[grpc.StatusCode, str] | Literal[True] | None:
        """From the call's metadata alone: None (allowed), a denial, or True when only
        the client certificate can decide (no token was sent, identities exist)."""
        if self.file is None or (self.health_open and method in HEALTH_METHODS):
            return None
        rules = self.file.current()
        token = bearer_token(metadata)
        if token is None:
            return True if rules.identities else (grpc.StatusCode.UNAUTHENTICATED, NO_CREDENTIAL)
        entry = token_entry(rules, token) if token else None
        if entry is None:
            return grpc.StatusCode.UNAUTHENTICATED, BAD_TOKEN
        return self._allowed(entry, method)

    def check_identity(self, method: str, auth_context: dict[str, list[bytes]]) -> tuple[grpc.StatusCode, str] | None:
        assert self.file is not None
        entry = identity_entry(self.file.current(), auth_context)
        if entry is None:
            return grpc.StatusCode.UNAUTHENTICATED, NO_CREDENTIAL
        return self._allowed(entry, method)

    @staticmethod
    def _allowed(entry: Entry, method: str) -> tuple[grpc.StatusCode, str] | None:
        group = group_of(method)
        if group in entry.groups:
            return None
        rpc = method.rpartition("/")[2]
        log.info("%s denied: %s may not call the %s plane", rpc, entry.name, group)
        return grpc.StatusCode.PERMISSION_DENIED, f"this credential may not call the {group} plane ({rpc})"
