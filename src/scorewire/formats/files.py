"""Reading the files of a model directory, which someone else may have written.

:class:`ModelFiles` is how every reader in ``scorewire.formats`` (and the loader)
opens a model's files: only regular files, never one larger than ``max_bytes``
(its size is checked before a byte is read), and — when ``root`` is set, as the
model repository sets it — only files and directories whose real location is
inside ``root``: a symbolic link that leads out of the repository is refused
(one that stays inside it is followed). Each refusal is a ModelLoadError naming
the path as the repository names it, never where a link points.

``max_bytes`` also bounds what a format allocates for what a file declares (a
model's weights, a PMML document's elements, an ONNX graph's tensors), checked on
the counts before anything that size is allocated.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

#: the default of ``--max-model-mb``: the largest file of a model directory, and the
#: most memory a model's declared weights and tensors may take, in MiB
DEFAULT_MAX_MODEL_MB = 256


def quoted(name: object, limit: int = 64) -> str:
    """A name read from a file, quoted for a message and cut short: an error names
    what is wrong, it does not echo the file."""
    text = str(name)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def mib(n: int) -> str:
    """A byte count in MiB, for messages."""
    return f"{n / (1 << 20):.4g} MiB"


@dataclass(frozen=True)
class ModelFiles:
    """How a model's files are read (see the module docstring)."""

    #: the largest file read, and the most a model's declared contents may take, bytes
    max_bytes: int = DEFAULT_MAX_MODEL_MB << 20
    #: when set, every path read or checked must really be inside this directory
    root: Path | None = None

    def check_inside(self, path: str | os.PathLike[str]) -> None:
        """ModelLoadError unless ``path`` (following every symbolic link) is inside
        ``root``; nothing to check without a root."""
        if self.root is None:
            return
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise ModelLoadError(
                f"{os.fspath(path)}: leads out of the model repository (a symbolic link to "
                "somewhere else?); refused"
            )

    def too_large(self, what: str, n_bytes: int) -> ModelLoadError:
        """The error for a file or a declared content over ``max_bytes``."""
        return ModelLoadError(f"{what} {mib(n_bytes)}, over the limit of {mib(self.max_bytes)} (--max-model-mb)")

    def check_size(self, source: str, what: str, n_bytes: int) -> None:
        """ModelLoadError naming ``source`` when ``n_bytes`` (what a file declares)
        is over ``max_bytes``."""
        if n_bytes > self.max_bytes:
            raise ModelLoadError(f"{source}: {self.too_large(what, n_bytes).message}")

    def read(self, path: str | os.PathLike[str], missing_ok: bool = False) -> bytes | None:
        """The bytes of a regular file; None when it does not exist and
        ``missing_ok``; ModelLoadError naming it when it is not inside the root, not
        a regular file, larger than ``max_bytes``, or cannot be read."""
        name = os.fspath(path)
        if missing_ok and not os.path.lexists(name):
            return None
        self.check_inside(name)
        try:
            # O_NONBLOCK: a FIFO put in a file's place must not block the open
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            if missing_ok:
                return None
            raise ModelLoadError(f"{name}: cannot read (no such file)") from None
        except OSError as exc:
            raise ModelLoadError(f"{name}: cannot read ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ModelLoadError(f"{name}: cannot read (not a regular file)")
            self.check_size(name, "the file has", st.st_size)
            chunks = []
            left = self.max_bytes + 1  # one more: a file that grew while it was read
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 24))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as exc:
            raise ModelLoadError(f"{name}: cannot read ({exc.strerror})") from None
        finally:
            os.close(fd)
        data = b"".join(chunks)
        self.check_size(name, "the file has", len(data))
        return data

    def read_file(self, path: str | os.PathLike[str]) -> bytes:
        """:meth:`read` of a file that must exist."""
        data = self.read(path)
        assert data is not None
        return data


#: what a reader uses when its caller gives no ModelFiles: the default limit, no root
DEFAULT = ModelFiles()
