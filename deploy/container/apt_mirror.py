"""Print the Debian mirror this machine's apt uses for a suite (default: bookworm).

`make test` builds the container image's test base with debootstrap from the same
mirror apt already uses here, so that no mirror is named in the project. Reads the
deb822 ``*.sources`` files and the one-line ``*.list`` format; exits 1 when no
``deb`` entry carries the suite.

    python3 deploy/container/apt_mirror.py [SUITE] [APT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path


def entries(apt_dir: Path):
    """(types, uris, suites) of every enabled entry, in apt's reading order."""
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) > 1 and words[1].startswith("["):  # options: [arch=amd64 signed-by=...]
                while len(words) > 1 and not words[1].endswith("]"):
                    words.pop(1)
                words[1:2] = []
            if len(words) >= 3 and words[0] in ("deb", "deb-src"):
                yield [words[0]], [words[1]], [words[2]]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            yield fields.get("types", "").split(), fields.get("uris", "").split(), fields.get("suites", "").split()


def mirror(suite: str, apt_dir: Path) -> str | None:
    for types, uris, suites in entries(apt_dir):
        if "deb" in types and suite in suites and uris:
            return uris[0]
    return None


if __name__ == "__main__":
    suite = sys.argv[1] if len(sys.argv) > 1 else "bookworm"
    found = mirror(suite, Path(sys.argv[2] if len(sys.argv) > 2 else "/etc/apt"))
    if found is None:
        sys.exit(f"no 'deb' source for {suite} in apt's sources")
    print(found)
