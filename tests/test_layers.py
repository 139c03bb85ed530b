"""The package's layers, read from its imports (no module is imported here):

    errors  →  types, settings, evaluate  →  formats, tensors  →  backends, observability
    →  batching, monitoring  →  repository  →  service, export  →  grpc  →  cli

Each part imports only parts to its left; only ``scorewire.grpc`` imports grpc;
and no module imports another module's private name (``_x``) except a private
module of its own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "scorewire"

#: each part of the package (its top-level module or subpackage) and its layer
LAYER = {
    "errors": 0,
    "types": 1, "settings": 1, "evaluate": 1,
    "formats": 2, "tensors": 2,
    "backends": 3, "observability": 3,
    "batching": 4, "monitoring": 4,
    "repository": 5,
    "service": 6, "export": 6,
    "grpc": 7,
    "cli": 8, "__init__": 8,
}  # fmt: skip
#: names the package's __init__ defines, importable from any layer
PACKAGE_ATTRIBUTES = {"__version__", "demo_repository"}
GRPC = ("grpc", "grpc_health", "grpc_reflection")


def modules() -> list[tuple[str, str, ast.Module]]:
    """(module name, its package's name, its syntax tree) of every module but the
    generated stubs."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_gen" in path.parts:
            continue
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        out.append((name, name if is_package else name.rpartition(".")[0], ast.parse(path.read_text())))
    return out


def imports(package: str, tree: ast.Module) -> list[tuple[str, str | None]]:
    """(absolute module, imported name or None) of every import in a module."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.extend((module, a.name) for a in node.names)
    return out


def is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or any(
        path.parent.glob(path.name + ".*.so")
    ) or path.with_suffix(".pyi").is_file()


def part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def private(segment: str) -> bool:
    return segment.startswith("_") and not segment.startswith("__")


def layer_violations(mods: list[tuple[str, str, ast.Module]]) -> list[str]:
    wrong = []
    for name, package, tree in mods:
        for module, imported in imports(package, tree):
            if module.split(".")[0] != "scorewire":
                continue
            if module == "scorewire" and imported in PACKAGE_ATTRIBUTES:
                continue
            target = f"{module}.{imported}" if module == "scorewire" and imported else module
            here, there = part(name), part(target)
            if here != there and LAYER[there] >= LAYER[here]:
                wrong.append(f"{name} imports {target}")
    return wrong


def grpc_violations(mods: list[tuple[str, str, ast.Module]]) -> list[str]:
    return [
        f"{name} imports {module}"
        for name, package, tree in mods
        if not name.startswith("scorewire.grpc")
        for module, _ in imports(package, tree)
        if module.split(".")[0] in GRPC
    ]


def private_violations(mods: list[tuple[str, str, ast.Module]]) -> list[str]:
    wrong = []
    for name, package, tree in mods:
        for module, imported in imports(package, tree):
            if module.split(".")[0] != "scorewire":
                continue
            segments = module.split(".")
            for i, segment in enumerate(segments):
                if private(segment) and ".".join(segments[:i]) != package:
                    wrong.append(f"{name} imports {module} (private to {'.'.join(segments[:i])})")
                    break
            if imported and private(imported):
                full = f"{module}.{imported}"
                if not is_module(full):
                    wrong.append(f"{name} imports the private name {full}")
                elif module != package:
                    wrong.append(f"{name} imports {full} (private to {module})")
    return wrong


def test_every_part_has_a_layer():
    parts = {part(name) for name, _, _ in modules()}
    assert parts == set(LAYER), "give each new part of the package its layer here"


def test_each_layer_imports_only_the_layers_before_it():
    assert not layer_violations(modules())


def test_only_the_grpc_package_imports_grpc():
    assert not grpc_violations(modules())


def test_no_module_imports_another_modules_private_names():
    assert not private_violations(modules())


def test_the_rules_catch_what_they_forbid():
    """Each check finds its rule broken in a module written to break it, and lets a
    module of its own package import its private modules."""
    bad = [("scorewire.formats.x", "scorewire.formats", ast.parse(
        "import grpc\nfrom ..batching._batcher import X\nfrom ..evaluate import _number\nfrom ..service import S\n"
    ))]  # fmt: skip
    assert layer_violations(bad) == ["scorewire.formats.x imports scorewire.batching._batcher",
                                     "scorewire.formats.x imports scorewire.service"]  # fmt: skip
    assert grpc_violations(bad) == ["scorewire.formats.x imports grpc"]
    assert private_violations(bad) == [
        "scorewire.formats.x imports scorewire.batching._batcher (private to scorewire.batching)",
        "scorewire.formats.x imports the private name scorewire.evaluate._number",
    ]
    good = [("scorewire.grpc.server", "scorewire.grpc", ast.parse("import grpc\nfrom ._handlers import MethodTable\n"))]
    assert not (layer_violations(good) or grpc_violations(good) or private_violations(good))
