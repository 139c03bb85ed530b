"""Protobuf messages written byte by byte from a fuzzer's choices, for the wire
targets (fuzz_predict, fuzz_infer).

Random bytes rarely make a request whose tensor has as many values as its shape
needs, so half of each wire target's inputs are read as choices instead: which
fields to write, in which order, how often, with which values, and in which
encoding — canonical mostly, sometimes non-minimal varints (keys and lengths
padded with redundant continuation bytes), packed or unpacked repeated fields,
unknown fields, wrong wire types, truncated records. The values are aimed at the
decoders' edges: value counts equal to what the shape needs or off by one, dims
at 0, 1 and the element limit, strings that are not UTF-8, digits that are not
ASCII.
"""

from __future__ import annotations

import struct

try:
    from .harness import Choices
except ImportError:  # run from a target that runs as a script
    from harness import Choices  # type: ignore[no-redef]

#: strings a request's text fields get (as UTF-8 bytes, or not UTF-8 at all)
STRINGS = [
    b"", b"m", b"input", b"wine", b"1", b"2", b"01", b"0", b"-1", b"9" * 19, b"9" * 4301,
    "²".encode(), "١".encode(), "é".encode(), b"\x00", b"\xff", b"\xed\xa0\x80", b"\xc0\x80",
    b"\xe2\x82", b"label", b"probabilities", b"FP32", b"FP64", b"INT64", b"BYTES",
]  # fmt: skip
#: dims of a shape
DIMS = [0, 1, 1, 2, 3, 4, 7, 30, 1 << 20, (1 << 34) - 1, 1 << 34, (1 << 34) + 1, (1 << 63) - 1, -1, -(1 << 63)]


def varint(n: int, pad: int = 0) -> bytes:
    """``n`` (taken mod 2**64) as a varint, followed by ``pad`` redundant bytes (a
    non-minimal encoding of the same number; longer than 10 bytes in all is
    malformed)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    if pad:
        out[-1] |= 0x80
        out.extend(b"\x80" * (pad - 1) + b"\x00")
    return bytes(out)


class Writer:
    """Writes one message's records as the choices say."""

    def __init__(self, c: Choices) -> None:
        self.c = c
        self.out = bytearray()

    def pad(self) -> int:
        """Mostly 0; sometimes a few redundant varint bytes (up to 7: past 10 bytes
        a key or length is malformed)."""
        return self.c.below(8) if self.c.chance(12) else 0

    def key(self, number: int, wire: int) -> None:
        self.out += varint(number << 3 | wire, self.pad())

    def length_delimited(self, number: int, payload: bytes) -> None:
        self.key(number, 2)
        length = len(payload)
        if self.c.chance(40):  # a length that lies
            length += self.c.pick([-1, 1, 2, 1 << 20])
        self.out += varint(length, self.pad()) + payload

    def varint_field(self, number: int, value: int) -> None:
        self.key(number, 0)
        self.out += varint(value, self.pad())

    def string(self) -> bytes:
        if self.c.chance(6):
            return self.c.take(self.c.below(12))
        return self.c.pick(STRINGS)  # type: ignore[no-any-return]

    def noise(self) -> None:
        """An unknown field, or a known one with the wrong wire type, or junk."""
        kind = self.c.below(5)
        number = self.c.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 100, (1 << 29) - 1, 1 << 29])
        if kind == 0:
            self.varint_field(number, self.c.int(2))
        elif kind == 1:
            self.key(number, 1)
            self.out += self.c.take(8)
        elif kind == 2:
            self.key(number, 5)
            self.out += self.c.take(4)
        elif kind == 3:
            self.length_delimited(number, self.c.take(self.c.below(6)))
        else:
            self.key(number, self.c.pick([3, 4, 6, 7]))  # groups, invalid wire types

    def finish(self) -> bytes:
        if self.c.chance(30):  # truncated
            return bytes(self.out[: max(0, len(self.out) - 1 - self.c.below(4))])
        return bytes(self.out)


def shape(c: Choices) -> list[int]:
    rank = c.pick([2, 2, 2, 2, 1, 0, 3, 65])
    if rank == 65:
        return [1] * 64 + [c.pick(DIMS)]
    small = c.chance(2)
    return [c.below(5) if small else c.pick(DIMS) for _ in range(rank)]


def count(c: Choices, dims: list[int]) -> int:
    """How many values to write for a shape: what it needs (when that is few), or
    one off, or a few."""
    need = 1
    for d in dims:
        need *= d
    if not 0 <= need <= 64 or c.chance(6):
        return c.below(6)
    return max(0, need + c.pick([0, 0, 0, 0, 0, -1, 1]))


def packed_int64(w: Writer, number: int, dims: list[int]) -> None:
    """A repeated int64 field: packed (proto3's way) or one record per value."""
    if w.c.chance(8):
        for d in dims:
            w.varint_field(number, d)
    else:
        w.length_delimited(number, b"".join(varint(d) for d in dims))


def floats(c: Choices, n: int, size: int) -> bytes:
    """``n`` values of ``size`` bytes: the input's bytes (any bit pattern: NaN
    payloads, subnormals) or small whole numbers."""
    if c.chance(2):
        fmt = "<f" if size == 4 else "<d"
        return b"".join(struct.pack(fmt, c.below(7) - 3) for _ in range(n))
    data = c.take(n * size)
    return data + b"\x00" * (n * size - len(data))


def tensor(c: Choices) -> bytes:
    """A scorewire.v1 Tensor."""
    w = Writer(c)
    dims = shape(c)
    dtype = c.pick([1, 2, 1, 2, 0, 3, 4, 5, 6, 7, 8, 10, 13, 14, 1 << 31, -1])
    n = count(c, dims)
    order = [0, 1, 2]
    if c.chance(4):
        order = [c.below(3), c.below(3), c.below(3), c.below(3)]
    for part in order:
        if part == 0 and not c.chance(10):
            w.varint_field(1, dtype)
        elif part == 1 and not c.chance(10):
            packed_int64(w, 2, dims)
        elif part == 2:
            field = c.pick([3, 3, 4, 5, 6, 7, 8, 9, 10, 11])
            size = 4 if field == 4 or (field == 3 and dtype == 1) else 8
            if field == 3 and dtype in (6, 8, 10):  # BOOL, INT8, UINT8: one byte each
                data = c.take(n)
                w.length_delimited(field, data + b"\x00" * (n - len(data)))
            elif field in (3, 4, 5):
                w.length_delimited(field, floats(c, n, size))
            elif field in (6, 7, 9, 10, 11):
                w.length_delimited(field, b"".join(varint(c.below(5)) for _ in range(n)))
            else:
                for _ in range(min(n, 4)):
                    w.length_delimited(8, w.string())
        if c.chance(10):
            w.noise()
    return w.finish()


def named_tensor(c: Choices) -> bytes:
    """A scorewire.v1 NamedTensor: a name (often one of a few) and a Tensor."""
    w = Writer(c)
    if not c.chance(10):
        w.length_delimited(1, c.pick([b"a", b"b", b"input"]) if c.chance(2) else w.string())
    if not c.chance(10):
        w.length_delimited(2, tensor(c))
    return w.finish()


def predict_request(c: Choices) -> bytes:
    """A scorewire.v1 PredictRequest."""
    w = Writer(c)
    for _ in range(1 + c.below(7)):
        field = c.pick([1, 2, 3, 3, 4, 5, 6, 0])
        if field == 0:
            w.noise()
        elif field == 2:
            w.varint_field(2, c.pick([0, 1, 2, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, c.int(8)]))
        elif field == 3:
            w.length_delimited(3, tensor(c))
        elif field == 6:
            w.length_delimited(6, named_tensor(c))
        else:
            w.length_delimited(field, w.string())
    return w.finish()


def infer_contents(c: Choices, n: int, datatype: bytes) -> bytes:
    """An OIP InferTensorContents with ``n`` values (or a few) in one or two fields."""
    w = Writer(c)
    for _ in range(1 if c.chance(2) else c.below(3)):
        field = {b"FP32": 6, b"FP64": 7}.get(datatype, 3) if c.chance(2) else c.pick([1, 2, 3, 4, 5, 6, 7, 8])
        if field in (6, 7):
            values = floats(c, n, 4 if field == 6 else 8)
            if c.chance(8):  # unpacked: one fixed-width record per value
                size = 4 if field == 6 else 8
                for i in range(0, len(values), size):
                    w.key(field, 5 if size == 4 else 1)
                    w.out += values[i : i + size]
                continue
            w.length_delimited(field, values)
        elif field == 8:
            for _ in range(min(n, 4)):
                w.length_delimited(8, w.string())
        else:
            w.length_delimited(field, b"".join(varint(c.below(5)) for _ in range(n)))
        if c.chance(10):
            w.noise()
    return w.finish()


def parameters(c: Choices) -> bytes:
    """A map<string, InferParameter> entry."""
    w = Writer(c)
    w.length_delimited(1, w.string())
    value = Writer(c)
    value.varint_field(c.pick([1, 2]), c.below(3))
    w.length_delimited(2, value.finish())
    return w.finish()


def infer_input(c: Choices) -> tuple[bytes, bytes | None]:
    """An OIP InferInputTensor, and raw contents for it (None: none)."""
    w = Writer(c)
    dims = shape(c)
    datatype = c.pick([b"FP32", b"FP64", b"FP32", b"FP64", b"INT64", b"INT32", b"BYTES", b"FP16", b"",
                       b"BOOL", b"UINT8", b"INT8", b"UINT64"])
    n = count(c, dims)
    raw = c.chance(2)
    order = [0, 1, 2, 3] if c.chance(2) else [c.below(5) for _ in range(c.below(6))]
    for part in order:
        if part == 0:
            w.length_delimited(1, w.string())
        elif part == 1:
            w.length_delimited(2, w.string() if c.chance(8) else datatype)
        elif part == 2:
            packed_int64(w, 3, dims)
        elif part == 3 and (not raw or c.chance(6)):
            w.length_delimited(5, infer_contents(c, n, datatype))
        elif part == 4:
            w.length_delimited(4, parameters(c))
        if c.chance(12):
            w.noise()
    contents = None
    if raw:
        contents = floats(c, n, 4 if datatype == b"FP32" else 8)
    return w.finish(), contents


def infer_request(c: Choices) -> bytes:
    """An OIP ModelInferRequest."""
    w = Writer(c)
    raws: list[bytes] = []
    for _ in range(1 + c.below(8)):
        field = c.pick([1, 2, 3, 5, 5, 6, 7, 4, 0])
        if field == 0:
            w.noise()
        elif field in (1, 2, 3):
            w.length_delimited(field, w.string())
        elif field == 5:
            inp, raw = infer_input(c)
            w.length_delimited(5, inp)
            if raw is not None:
                raws.append(raw)
        elif field == 6:
            out = Writer(c)
            if not c.chance(8):
                out.length_delimited(1, out.string())
            if c.chance(10):
                out.length_delimited(2, parameters(c))
            w.length_delimited(6, out.finish())
        elif field == 7:
            raws.append(c.take(c.below(9)))
        else:
            w.length_delimited(4, parameters(c))
    for raw in raws:
        w.length_delimited(7, raw)
    return w.finish()
