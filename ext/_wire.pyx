# cython: language_level=3
"""The scorewire.v1 wire format for the hot path: ``scorewire.grpc._wire``.

Each function handles the common case only and returns None for anything else,
so that the caller takes the general path (which raises every error with its
message, or handles the rarer encodings):

- ``decode_predict(blob)`` / ``decode_infer(blob)``: a serialized
  ``scorewire.v1.PredictRequest`` / OIP ``ModelInferRequest``, as grpc received it,
  into a :class:`Request` (its fields and its input matrix) in one pass; protobuf's parse, the Python
  wrappers of each field and a re-serialization of the tensor cost several times
  more.
- The matrix (FLOAT32 or FLOAT64, as raw bytes or as packed
  ``float_values``/``double_values``, ``fp32_contents``/``fp64_contents``) becomes a
  new aligned, native-order ndarray of shape (rows, features): one memcpy, where
  protobuf's Python API makes one Python float per value.
- ``encode_response(model, version, request_id, outputs, raw)``: a serialized
  ``scorewire.v1.PredictResponse`` straight from the output arrays: float outputs as
  raw bytes or packed values (the same little-endian bytes behind a different tag),
  integer outputs as raw bytes or packed varints (``encode_infer_response`` and
  ``stream_response`` likewise). Building the message through the protobuf API and
  serializing it costs several times more.

Wire format facts used (protobuf encoding spec): a key is ``field << 3 | wire type``
as a varint; wire type 0 is a varint, 1 a fixed 64-bit value, 2 a length-delimited
record, 5 a fixed 32-bit value; proto3 writes repeated scalars packed (one type-2
record); a map field is a repeated message of (key = 1, value = 2) entries; negative
int32/int64 values are written as 10-byte varints of their 64-bit two's complement.
Fields are written in field-number order; empty and zero scalars are omitted, as
protobuf does. Only little-endian hosts take these paths.
"""

cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memcpy

import sys

cnp.import_array()

cdef bint _LITTLE = sys.byteorder == "little"

# scorewire.v1.DataType
DEF DT_FLOAT32 = 1
DEF DT_FLOAT64 = 2
DEF DT_INT32 = 3
DEF DT_INT64 = 4

#: the largest tensor a request may describe (elements): it limits allocation from a
#: hostile shape before any byte-length check. Declared here once; the general
#: decoders (``_codec``) read ``MAX_ELEMENTS``.
cdef int64_t _MAX_ELEMENTS = 1LL << 34
MAX_ELEMENTS = _MAX_ELEMENTS


# ---------------------------------------------------------------------------
# a request, as read
# ---------------------------------------------------------------------------

cdef class Request:
    """A scoring request as read from its bytes — a scorewire.v1 ``PredictRequest``
    or an OIP ``ModelInferRequest`` — whichever path read it: the decoders here (the
    common encoding) or the protocol's protobuf reader (the rest). One
    representation, so the code that answers it has one path.

    ``model``; ``version`` (v1: an int, 0 for the newest; OIP: the
    ``model_version`` text); ``request_id``; ``outputs`` (a tuple of names);
    ``input_name`` (OIP's one input's; "" for v1, and for several inputs); ``X``
    (the input matrix — or, read by protobuf, one input of another rank, or a dict of
    several by name — None when it could not be read); ``raw`` (v1: the input came as raw bytes, so the answer does too);
    ``error`` (what reading the input raised: the request's handler raises it, so it
    is answered and counted under the request's model).
    """

    cdef readonly str model
    cdef readonly object version
    cdef readonly str request_id
    cdef readonly tuple outputs
    cdef readonly str input_name
    cdef readonly object X
    cdef readonly bint raw
    cdef readonly object error

    def __init__(self, str model, version, str request_id, tuple outputs, str input_name, X,
                 bint raw=False, error=None):
        self.model, self.version, self.request_id, self.outputs = model, version, request_id, outputs
        self.input_name, self.X, self.raw, self.error = input_name, X, raw, error

    def __repr__(self):
        shape = None if self.X is None else self.X.shape
        return f"Request(model={self.model!r}, version={self.version!r}, shape={shape})"


cdef Request _request(str model, object version, str request_id, tuple outputs, str input_name, object X,
                      bint raw):
    """A Request without __init__'s argument parsing (the decoders' hot path)."""
    cdef Request r = Request.__new__(Request)
    r.model, r.version, r.request_id, r.outputs = model, version, request_id, outputs
    r.input_name, r.X, r.raw = input_name, X, raw
    return r


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _read_varint(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
                                    uint64_t* out) noexcept nogil:
    """Read a varint at pos; the position after it, or -1 if malformed/truncated."""
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef uint8_t b
    while pos < end and shift < 64:
        b = buf[pos]
        pos += 1
        result |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            out[0] = result
            return pos
        shift += 7
    return -1


cdef inline Py_ssize_t _read_tag(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
                                 uint64_t* key) noexcept nogil:
    """Read a field's key (its tag) at pos; the position after it, or -1 when
    malformed. protobuf reads a tag as a 32-bit varint: more than 5 bytes, or a
    value past 2**32 - 1, is a malformed message to it (though a valid varint), so
    it is -1 here too and protobuf names the error."""
    cdef Py_ssize_t start = pos
    pos = _read_varint(buf, pos, end, key)
    if pos < 0 or pos - start > 5 or key[0] > 0xFFFFFFFFULL:
        return -1
    return pos


cdef inline Py_ssize_t _read_key(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
                                 uint64_t* field, uint64_t* wire) noexcept nogil:
    """Read a field's key at pos into its number and wire type; the position after
    it, or -1 when malformed (see ``_read_tag``)."""
    cdef uint64_t key = 0
    pos = _read_tag(buf, pos, end, &key)
    field[0] = key >> 3
    wire[0] = key & 7
    return pos


cdef inline Py_ssize_t _read_len(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
                                 Py_ssize_t* length) noexcept nogil:
    """Read a length-delimited record's length at pos; the position of its payload,
    or -1 when malformed or longer than what is left before ``end``."""
    cdef uint64_t value
    pos = _read_varint(buf, pos, end, &value)
    if pos < 0 or value > <uint64_t>(end - pos):
        return -1
    length[0] = <Py_ssize_t>value
    return pos


cdef int _read_dims(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end, int64_t* dims) noexcept nogil:
    """Read a packed shape record, buf[pos:end], of at most two dims into ``dims``;
    the number of dims, or -1 when it is malformed, longer, or a dim is absurd."""
    cdef int ndim = 0
    cdef uint64_t value
    while pos < end:
        pos = _read_varint(buf, pos, end, &value)
        if pos < 0 or ndim == 2 or value > <uint64_t>_MAX_ELEMENTS:
            return -1
        dims[ndim] = <int64_t>value
        ndim += 1
    return ndim


cdef object _matrix(const int64_t* dims, int dtype, const uint8_t* data, Py_ssize_t data_len):
    """A new C-ordered (dims[0], dims[1]) float32/float64 array holding ``data``
    (NULL: no values were sent), or None unless ``data_len`` is its exact size."""
    if dims[0] != 0 and dims[1] > _MAX_ELEMENTS // dims[0]:
        return None
    cdef Py_ssize_t itemsize = 4 if dtype == DT_FLOAT32 else 8
    cdef Py_ssize_t nbytes = <Py_ssize_t>(dims[0] * dims[1]) * itemsize
    if (data_len if data != NULL else 0) != nbytes:
        return None
    cdef cnp.npy_intp shape[2]
    shape[0] = <cnp.npy_intp>dims[0]
    shape[1] = <cnp.npy_intp>dims[1]
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(
        2, shape, cnp.NPY_FLOAT32 if dtype == DT_FLOAT32 else cnp.NPY_FLOAT64, 0
    )
    if nbytes:
        memcpy(cnp.PyArray_DATA(out), data, nbytes)
    return out


cdef object _tensor(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end, bint* raw):
    """The Tensor serialized in buf[pos:end] as a new (rows, features)
    float32/float64 ndarray, or None when it is anything but a well-formed 2-D
    FLOAT32/FLOAT64 tensor whose values are all there, carried in exactly one of raw
    / the matching packed field; sets ``raw`` when its values came as raw bytes."""
    cdef Py_ssize_t data_pos = -1, data_len = 0
    cdef uint64_t value, field, wire
    cdef Py_ssize_t length
    cdef int64_t dims[2]
    cdef int ndim = 0
    cdef int dtype = 0
    cdef int data_field = 0
    cdef bint seen_dtype = False, seen_shape = False
    while pos < end:
        pos = _read_key(buf, pos, end, &field, &wire)
        if pos < 0:
            return None
        if field == 1 and wire == 0:  # dtype
            if seen_dtype:
                return None
            pos = _read_varint(buf, pos, end, &value)
            if pos < 0:
                return None
            dtype = <int>value if value <= 8 else -1
            seen_dtype = True
        elif wire == 2:
            pos = _read_len(buf, pos, end, &length)
            if pos < 0:
                return None
            if field == 2:  # shape, packed
                if seen_shape:
                    return None
                seen_shape = True
                ndim = _read_dims(buf, pos, pos + length, dims)
                if ndim < 0:
                    return None
                pos += length
            elif field == 3 or field == 4 or field == 5:  # raw, float_values, double_values
                if data_field != 0:
                    return None
                data_field = <int>field
                data_pos = pos
                data_len = length
                pos += length
            else:
                return None
        else:
            return None
    if ndim != 2 or (dtype != DT_FLOAT32 and dtype != DT_FLOAT64):
        return None
    if data_field == 4 and dtype != DT_FLOAT32 or data_field == 5 and dtype != DT_FLOAT64:
        return None
    # an empty raw record is no raw at all to protobuf (proto3 cannot tell it from an
    # absent one): the answer is then typed, as protobuf's reading makes it
    raw[0] = data_field == 3 and data_len > 0
    return _matrix(dims, dtype, buf + data_pos if data_field else NULL, data_len)


cdef inline object _utf8(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t length):
    """buf[pos:pos+length] as str; raises UnicodeDecodeError as protobuf would
    refuse the field."""
    return PyUnicode_DecodeUTF8(<const char*>(buf + pos), length, NULL)


def decode_predict(bytes blob):
    """A serialized PredictRequest → a :class:`Request`, or None for anything but the
    common case: the five known fields, each singular one at most once, with an
    input that ``_tensor`` reads (anything else, unknown fields included, is left to
    protobuf). A malformed message gives None too: the caller's protobuf parse then
    names the error."""
    if not _LITTLE:
        return None
    cdef const uint8_t* buf = <const uint8_t*>PyBytes_AS_STRING(blob)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(blob)
    cdef Py_ssize_t pos = 0, sub_end, length
    cdef uint64_t value, field, wire
    cdef int64_t version = 0
    cdef bint raw = False, seen_version = False
    model = request_id = None
    X = None
    outputs = []
    try:
        while pos < end:
            pos = _read_key(buf, pos, end, &field, &wire)
            if pos < 0:
                return None
            if field == 2 and wire == 0:  # version
                if seen_version:
                    return None
                pos = _read_varint(buf, pos, end, &value)
                if pos < 0:
                    return None
                version = <int64_t>value
                seen_version = True
                continue
            if wire != 2 or field < 1 or field > 5 or field == 2:  # rare: protobuf's job
                return None
            pos = _read_len(buf, pos, end, &length)
            if pos < 0:
                return None
            sub_end = pos + length
            if field == 1:  # model
                if model is not None:
                    return None
                model = _utf8(buf, pos, length)
            elif field == 3:  # input
                if X is not None:
                    return None
                X = _tensor(buf, pos, sub_end, &raw)
                if X is None:
                    return None
            elif field == 4:  # outputs
                outputs.append(_utf8(buf, pos, length))
            else:  # request_id
                if request_id is not None:
                    return None
                request_id = _utf8(buf, pos, length)
            pos = sub_end
    except UnicodeDecodeError:
        return None
    if X is None:
        return None
    return _request(model or "", version, request_id or "", tuple(outputs), "", X, raw)


# ---------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline Py_ssize_t _put_varint(uint8_t* out, Py_ssize_t pos, uint64_t v) noexcept nogil:
    while v >= 0x80:
        out[pos] = <uint8_t>((v & 0x7F) | 0x80)
        v >>= 7
        pos += 1
    out[pos] = <uint8_t>v
    return pos + 1


cdef inline Py_ssize_t _len_field_size(Py_ssize_t payload) noexcept nogil:
    """Key (one byte: fields 1-15) + length varint + payload."""
    return 1 + _varint_size(<uint64_t>payload) + payload


cdef struct _Out:
    # one output tensor, measured in the first pass
    int dtype
    int ndim
    Py_ssize_t shape_payload
    Py_ssize_t values_payload
    Py_ssize_t tensor_size
    Py_ssize_t n
    bint varints          # integer values as packed varints (typed, not raw)
    const char* data


cdef int _dtype_code(cnp.ndarray a) noexcept:
    """The v1 DataType of a, by kind and size (int64 is NPY_LONG or NPY_LONGLONG)."""
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(a)
    if cnp.PyArray_ISFLOAT(a):
        return DT_FLOAT32 if size == 4 else (DT_FLOAT64 if size == 8 else 0)
    if cnp.PyArray_ISSIGNED(a):
        return DT_INT32 if size == 4 else (DT_INT64 if size == 8 else 0)
    return 0


def encode_response(str model, long long version, str request_id, dict outputs, bint raw):
    """A serialized PredictResponse for ``outputs`` (name → ndarray), or None when
    an output is not a C-contiguous, native-order float32/float64/int32/int64 array
    (the caller then builds the message the general way)."""
    if not _LITTLE or len(outputs) > 64:
        return None
    cdef bytes model_b = model.encode("utf-8")
    cdef bytes rid_b = request_id.encode("utf-8")
    cdef list names = []
    cdef list arrays = []
    cdef _Out outs[64]
    cdef _Out* o
    cdef cnp.ndarray a
    cdef Py_ssize_t total = 0, i, j, k, pos, entry_payload
    cdef int64_t* i64
    cdef int* i32
    cdef bytes name_b
    for i, (name, value) in enumerate(outputs.items()):
        if type(value) is not cnp.ndarray:
            return None
        a = <cnp.ndarray>value
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a):
            return None
        o = &outs[i]
        o.dtype = _dtype_code(a)
        if o.dtype == 0:
            return None
        name_b = (<str?>name).encode("utf-8")
        names.append(name_b)
        arrays.append(a)
        o.ndim = cnp.PyArray_NDIM(a)
        o.n = cnp.PyArray_SIZE(a)
        o.data = <const char*>cnp.PyArray_DATA(a)
        o.shape_payload = 0
        for j in range(o.ndim):
            o.shape_payload += _varint_size(<uint64_t>cnp.PyArray_DIM(a, j))
        o.varints = not raw and (o.dtype == DT_INT32 or o.dtype == DT_INT64)
        if o.varints:
            o.values_payload = 0
            if o.dtype == DT_INT64:
                i64 = <int64_t*>o.data
                for k in range(o.n):
                    o.values_payload += _varint_size(<uint64_t>i64[k])
            else:
                i32 = <int*>o.data
                for k in range(o.n):
                    o.values_payload += _varint_size(<uint64_t>(<int64_t>i32[k]))
        else:
            o.values_payload = o.n * cnp.PyArray_ITEMSIZE(a)
        o.tensor_size = 2  # dtype key + one-byte code
        if o.shape_payload:
            o.tensor_size += _len_field_size(o.shape_payload)
        if o.values_payload:
            o.tensor_size += _len_field_size(o.values_payload)
        entry_payload = _len_field_size(len(name_b)) + _len_field_size(o.tensor_size)
        total += _len_field_size(entry_payload)
    if model_b:
        total += _len_field_size(len(model_b))
    if version:
        total += 1 + _varint_size(<uint64_t>version)
    if rid_b:
        total += _len_field_size(len(rid_b))

    cdef bytes result = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* out = <uint8_t*>PyBytes_AS_STRING(result)
    pos = 0
    if model_b:
        out[pos] = 0x0A  # model = 1
        pos = _put_varint(out, pos + 1, len(model_b))
        memcpy(out + pos, PyBytes_AS_STRING(model_b), len(model_b))
        pos += len(model_b)
    if version:
        out[pos] = 0x10  # version = 2
        pos = _put_varint(out, pos + 1, <uint64_t>version)
    if rid_b:
        out[pos] = 0x1A  # request_id = 3
        pos = _put_varint(out, pos + 1, len(rid_b))
        memcpy(out + pos, PyBytes_AS_STRING(rid_b), len(rid_b))
        pos += len(rid_b)
    for i in range(len(names)):
        o = &outs[i]
        name_b = names[i]
        entry_payload = _len_field_size(len(name_b)) + _len_field_size(o.tensor_size)
        out[pos] = 0x22  # outputs = 4 (a map entry)
        pos = _put_varint(out, pos + 1, <uint64_t>entry_payload)
        out[pos] = 0x0A  # key = 1
        pos = _put_varint(out, pos + 1, len(name_b))
        memcpy(out + pos, PyBytes_AS_STRING(name_b), len(name_b))
        pos += len(name_b)
        out[pos] = 0x12  # value = 2: the Tensor
        pos = _put_varint(out, pos + 1, <uint64_t>o.tensor_size)
        out[pos] = 0x08  # dtype = 1
        out[pos + 1] = <uint8_t>o.dtype
        pos += 2
        if o.shape_payload:
            out[pos] = 0x12  # shape = 2, packed
            pos = _put_varint(out, pos + 1, <uint64_t>o.shape_payload)
            a = <cnp.ndarray>arrays[i]
            for j in range(o.ndim):
                pos = _put_varint(out, pos, <uint64_t>cnp.PyArray_DIM(a, j))
        if o.values_payload:
            if raw:
                out[pos] = 0x1A  # raw = 3
            elif o.dtype == DT_FLOAT32:
                out[pos] = 0x22  # float_values = 4
            elif o.dtype == DT_FLOAT64:
                out[pos] = 0x2A  # double_values = 5
            elif o.dtype == DT_INT32:
                out[pos] = 0x32  # int32_values = 6
            else:
                out[pos] = 0x3A  # int64_values = 7
            pos = _put_varint(out, pos + 1, <uint64_t>o.values_payload)
            if o.varints:
                if o.dtype == DT_INT64:
                    i64 = <int64_t*>o.data
                    for k in range(o.n):
                        pos = _put_varint(out, pos, <uint64_t>i64[k])
                else:
                    i32 = <int*>o.data
                    for k in range(o.n):
                        pos = _put_varint(out, pos, <uint64_t>(<int64_t>i32[k]))
            else:
                memcpy(out + pos, o.data, o.values_payload)
                pos += o.values_payload
    if pos != total:  # pragma: no cover - a sizing bug; never send a broken message
        raise AssertionError(f"encode_response wrote {pos} of {total} bytes")
    return result


def stream_response(str request_id, bytes body):
    """A serialized PredictStreamResponse (request_id = 1, response = 2) around a
    serialized PredictResponse ``body``; with request_id "" it is also OIP's
    ModelStreamInferResponse (error_message = 1, infer_response = 2)."""
    cdef bytes rid_b = request_id.encode("utf-8")
    cdef Py_ssize_t n_rid = len(rid_b), n_body = len(body)
    cdef Py_ssize_t total = _len_field_size(n_body) + (_len_field_size(n_rid) if n_rid else 0)
    cdef bytes result = PyBytes_FromStringAndSize(NULL, total)
    cdef uint8_t* out = <uint8_t*>PyBytes_AS_STRING(result)
    cdef Py_ssize_t pos = 0
    if n_rid:
        out[pos] = 0x0A
        pos = _put_varint(out, pos + 1, <uint64_t>n_rid)
        memcpy(out + pos, PyBytes_AS_STRING(rid_b), n_rid)
        pos += n_rid
    out[pos] = 0x12
    pos = _put_varint(out, pos + 1, <uint64_t>n_body)
    memcpy(out + pos, PyBytes_AS_STRING(body), n_body)
    return result


# ---------------------------------------------------------------------------
# OIP v2 (inference.ModelInferResponse), every output as raw_output_contents
# ---------------------------------------------------------------------------

cdef bytes _str_field(int key, bytes value):
    """A length-delimited field (key byte, length, bytes); empty → nothing (proto3)."""
    cdef Py_ssize_t n = len(value)
    if n == 0:
        return b""
    cdef bytes result = PyBytes_FromStringAndSize(NULL, _len_field_size(n))
    cdef uint8_t* out = <uint8_t*>PyBytes_AS_STRING(result)
    out[0] = <uint8_t>key
    cdef Py_ssize_t pos = _put_varint(out, 1, <uint64_t>n)
    memcpy(out + pos, PyBytes_AS_STRING(value), n)
    return result


_OIP_NAMES = {DT_FLOAT32: b"FP32", DT_FLOAT64: b"FP64", DT_INT32: b"INT32", DT_INT64: b"INT64"}


def encode_infer_response(str model_name, str model_version, str request_id, dict outputs):
    """A serialized ModelInferResponse: each output an InferOutputTensor (name,
    datatype, shape) and its little-endian bytes in raw_output_contents, as Triton
    answers. None when an output is not a C-contiguous, native-order
    float32/float64/int32/int64 array."""
    if not _LITTLE:
        return None
    cdef list parts = [
        _str_field(0x0A, model_name.encode("utf-8")),
        _str_field(0x12, model_version.encode("utf-8")),
        _str_field(0x1A, request_id.encode("utf-8")),
    ]
    cdef list raws = []
    cdef cnp.ndarray a
    cdef int code, j
    cdef Py_ssize_t shape_payload, tensor_size, pos, n
    cdef bytes name_b, dt_b, tensor, content
    cdef uint8_t* out
    for name, value in outputs.items():
        if type(value) is not cnp.ndarray:
            return None
        a = <cnp.ndarray>value
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISALIGNED(a):
            return None
        code = _dtype_code(a)
        if code == 0:
            return None
        name_b = (<str?>name).encode("utf-8")
        dt_b = _OIP_NAMES[code]
        shape_payload = 0
        for j in range(cnp.PyArray_NDIM(a)):
            shape_payload += _varint_size(<uint64_t>cnp.PyArray_DIM(a, j))
        tensor_size = (_len_field_size(len(name_b)) if name_b else 0) + _len_field_size(len(dt_b))
        if shape_payload:
            tensor_size += _len_field_size(shape_payload)
        tensor = PyBytes_FromStringAndSize(NULL, _len_field_size(tensor_size))
        out = <uint8_t*>PyBytes_AS_STRING(tensor)
        out[0] = 0x2A  # outputs = 5
        pos = _put_varint(out, 1, <uint64_t>tensor_size)
        if name_b:
            out[pos] = 0x0A  # name = 1
            pos = _put_varint(out, pos + 1, len(name_b))
            memcpy(out + pos, PyBytes_AS_STRING(name_b), len(name_b))
            pos += len(name_b)
        out[pos] = 0x12  # datatype = 2
        pos = _put_varint(out, pos + 1, len(dt_b))
        memcpy(out + pos, PyBytes_AS_STRING(dt_b), len(dt_b))
        pos += len(dt_b)
        if shape_payload:
            out[pos] = 0x1A  # shape = 3, packed
            pos = _put_varint(out, pos + 1, <uint64_t>shape_payload)
            for j in range(cnp.PyArray_NDIM(a)):
                pos = _put_varint(out, pos, <uint64_t>cnp.PyArray_DIM(a, j))
        parts.append(tensor)
        # raw_output_contents = 6: written even when empty, one entry per output
        n = cnp.PyArray_NBYTES(a)
        content = PyBytes_FromStringAndSize(NULL, _len_field_size(n))
        out = <uint8_t*>PyBytes_AS_STRING(content)
        out[0] = 0x32
        pos = _put_varint(out, 1, <uint64_t>n)
        memcpy(out + pos, cnp.PyArray_DATA(a), n)
        raws.append(content)
    return b"".join(parts + raws)


cdef object _infer_input(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t inp_end,
                         Py_ssize_t raw_pos, Py_ssize_t raw_len, int n_raw):
    """(name, ndarray) from the InferInputTensor in buf[pos:inp_end] and, when
    ``n_raw`` is 1, the raw contents at buf[raw_pos:raw_pos+raw_len]; None unless it
    is an FP32/FP64 input of shape (rows, features) whose values are all there, in
    the raw contents or in its packed fp32/fp64 contents (not both), without
    parameters. Raises UnicodeDecodeError for a name protobuf would refuse."""
    cdef Py_ssize_t name_pos = -1, name_len = 0, data_pos = -1, data_len = 0, sub_end, cpos, length
    cdef uint64_t key, field, wire
    cdef int ndim = 0, dtype = 0, content_field = 0
    cdef int64_t dims[2]
    while pos < inp_end:
        pos = _read_key(buf, pos, inp_end, &field, &wire)
        if pos < 0:
            return None
        if wire != 2:
            return None
        pos = _read_len(buf, pos, inp_end, &length)
        if pos < 0:
            return None
        sub_end = pos + length
        if field == 1:  # name (the last one counts, but protobuf refuses any that is not UTF-8)
            if name_pos >= 0:
                _utf8(buf, name_pos, name_len)
            name_pos, name_len = pos, length
        elif field == 2:  # datatype
            if length == 4 and buf[pos] == b'F' and buf[pos + 1] == b'P' and buf[pos + 2] == b'3' and buf[pos + 3] == b'2':
                dtype = DT_FLOAT32
            elif length == 4 and buf[pos] == b'F' and buf[pos + 1] == b'P' and buf[pos + 2] == b'6' and buf[pos + 3] == b'4':
                dtype = DT_FLOAT64
            else:
                return None
        elif field == 3:  # shape, packed
            if ndim:
                return None
            ndim = _read_dims(buf, pos, sub_end, dims)
            if ndim <= 0:
                return None
        elif field == 5:  # contents: only packed fp32 (6) or fp64 (7) values
            cpos = pos
            while cpos < sub_end:
                cpos = _read_tag(buf, cpos, sub_end, &key)
                if cpos < 0 or (key != 0x32 and key != 0x3A) or content_field != 0:
                    return None  # anything else (field 0 included, which protobuf refuses)
                content_field = <int>(key >> 3)
                cpos = _read_len(buf, cpos, sub_end, &length)
                if cpos < 0:
                    return None
                data_pos, data_len = cpos, length
                cpos += length
        else:  # parameters, or anything unknown
            return None
        pos = sub_end
    if ndim != 2 or dtype == 0:
        return None
    if content_field and n_raw:
        return None
    if content_field == 6 and dtype != DT_FLOAT32 or content_field == 7 and dtype != DT_FLOAT64:
        return None
    if n_raw:
        data_pos, data_len = raw_pos, raw_len
    out = _matrix(dims, dtype, buf + data_pos if data_pos >= 0 else NULL, data_len)
    if out is None:
        return None
    return _utf8(buf, name_pos, name_len) if name_pos >= 0 else "", out


def decode_infer(bytes blob):
    """A serialized ModelInferRequest → a :class:`Request` (``version``: the
    ``model_version`` text), or None for anything but the common case: no
    parameters (the request's, an input's or an output's), each singular string at
    most once, no unknown field, and one input ``_infer_input`` reads."""
    if not _LITTLE:
        return None
    cdef const uint8_t* buf = <const uint8_t*>PyBytes_AS_STRING(blob)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(blob)
    cdef Py_ssize_t pos = 0, sub_end, opos, inp_pos = -1, inp_end = 0, raw_pos = -1, raw_len = 0, length, olength
    cdef uint64_t key, field
    cdef int n_inputs = 0, n_raw = 0
    model = version = request_id = None
    outputs = []
    try:
        while pos < end:
            pos = _read_tag(buf, pos, end, &key)
            if pos < 0 or (key & 7) != 2:
                return None
            field = key >> 3
            pos = _read_len(buf, pos, end, &length)
            if pos < 0:
                return None
            sub_end = pos + length
            if field == 1:  # model_name
                if model is not None:
                    return None
                model = _utf8(buf, pos, length)
            elif field == 2:  # model_version
                if version is not None:
                    return None
                version = _utf8(buf, pos, length)
            elif field == 3:  # id
                if request_id is not None:
                    return None
                request_id = _utf8(buf, pos, length)
            elif field == 5:  # inputs
                n_inputs += 1
                inp_pos, inp_end = pos, sub_end
            elif field == 6:  # outputs: a name (1) and nothing else
                opos = pos
                if opos < sub_end:
                    opos = _read_tag(buf, opos, sub_end, &key)
                    if opos < 0 or key != 0x0A:
                        return None
                    opos = _read_len(buf, opos, sub_end, &olength)
                    if opos < 0 or olength != sub_end - opos:
                        return None
                    outputs.append(_utf8(buf, opos, olength))
                else:
                    outputs.append("")
            elif field == 7:  # raw_input_contents
                n_raw += 1
                raw_pos, raw_len = pos, length
            else:  # parameters, or anything unknown
                return None
            pos = sub_end
        if n_inputs != 1 or n_raw > 1:
            return None
        decoded = _infer_input(buf, inp_pos, inp_end, raw_pos, raw_len, n_raw)
    except UnicodeDecodeError:
        return None
    if decoded is None:
        return None
    return _request(model or "", version or "", request_id or "", tuple(outputs), decoded[0], decoded[1], False)
