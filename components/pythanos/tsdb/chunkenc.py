"""Prometheus XOR chunk encoding (``tsdb/chunkenc/xor.go``), whole chunks and batches at once.

The bit work happens in the C extension :mod:`pythanos.tsdb._xor` (CPython API + buffer
protocol only; it releases the GIL for large batches). This module normalises arguments to
contiguous numpy arrays and turns the extension's error codes into
:class:`~pythanos.tsdb.errors.CorruptChunkError`.

``data`` is what Prometheus calls the chunk bytes: a big-endian uint16 sample count followed
by the bitstream, *without* the segment file's length, encoding byte and CRC.

* :func:`encode_xor` writes exactly what Prometheus 3.x writes; ``prom2_quirk=True`` adds the
  extra trailing ``0x00`` that Prometheus <= 2.55 writes when the stream ends byte-aligned right
  after a whole-byte write (prometheus-formats.md 5.4), for byte parity with promtool 2.42.
* The decoders accept both forms (trailing bytes after the last sample are ignored, as in Go).
* Value bit patterns are preserved exactly (NaN payloads, StaleNaN ``0x7ff0000000000002``,
  ``-0.0``).
* Output is bounded by the input: a header's sample count is checked against what the chunk's
  length can hold (:func:`xor_max_samples`: every sample after the first two takes at least two
  bits) and, in a batch, the sum of the counts against what the whole buffer can hold, so
  overlapping chunk ranges cannot multiply the output either; both raise
  :class:`CorruptChunkError` before anything is allocated.
"""
from __future__ import annotations

import numpy as np

from . import _xor
from .errors import CorruptChunkError

__all__ = [
    "ENCODING_XOR",
    "MAX_SAMPLES",
    "STALE_NAN_BITS",
    "encode_xor",
    "xor_max_samples",
    "decode_xor",
    "encode_xor_many",
    "decode_xor_many",
    "decode_xor_many_into",
    "xor_num_samples",
]

ENCODING_XOR = 1
MAX_SAMPLES = 65535
STALE_NAN_BITS = 0x7FF0000000000002

# Error codes returned by the C kernels (keep in sync with _xor.c).
_ERR_WHAT = {
    1: "chunk shorter than its 2-byte sample-count header",
    2: "bitstream truncated",
    3: "varint overflows 64 bits",
    4: "invalid XOR value window (leading + significant bits > 64)",
    5: "chunk range outside the buffer",
    6: "sample count larger than the chunk can hold",
    7: "the chunks claim more samples than the bytes they share can hold (overlapping chunk ranges)",
}


def xor_max_samples(nbytes: int) -> int:
    """The most samples ``nbytes`` of XOR chunk data (header included) can hold: the 2-byte
    header, sample 0 at least 9 bytes (1-byte varint time, 64-bit value), sample 1 at least a
    byte (time delta) and a bit (value unchanged), every later sample at least 2 bits (delta of
    delta 0, value unchanged). Chunks side by side never hold more than one of their total size."""
    if nbytes < 11:
        return 0
    if nbytes < 13:
        return 1
    return (8 * nbytes - 93) // 2

_I8 = np.dtype(np.int64)
_F8 = np.dtype(np.float64)
_xor.set_allocator(np.empty, _I8, _F8)  # the C side allocates its output arrays with np.empty


def _corrupt(code: int, chunk: int | None, sample: int, offset: int, base: int, length: int | None,
             buf_len: int | None = None):
    what = _ERR_WHAT.get(code, f"error code {code}")
    where = "XOR chunk" if chunk is None else f"XOR chunk {chunk}"
    detail = f"{where}: {what}"
    if code in (2, 3, 4):
        detail += f" at sample {sample} (byte {offset} of the chunk"
        detail += ")" if length is None else f", chunk length {length})"
    elif code == 6 and length is not None:
        detail = (f"{where}: header claims {sample} samples, more than the chunk can hold "
                  f"(at most {xor_max_samples(length)} in {length} bytes)")
    elif code == 7 and buf_len is not None:
        detail = (f"{where}: the chunks up to this one claim {sample} samples, more than the {buf_len} bytes "
                  f"they share can hold (at most {xor_max_samples(buf_len)}): overlapping chunk ranges")
    if code == 6:
        sample = 0
    err = CorruptChunkError(offset=base + offset, what=detail)
    err.chunk_index = chunk
    err.sample_index = sample
    err.chunk_offset = offset
    return err


def _i8(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != _I8 or not a.flags.c_contiguous:
        if a.dtype.kind not in "iu" and a.size:
            raise TypeError(f"expected an integer array, got {a.dtype}")
        a = np.ascontiguousarray(a, dtype=_I8)
    return a


def _f8(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != _F8 or not a.flags.c_contiguous:
        # float32 -> float64 keeps NaN-ness; bit-exactness is only promised for float64 input.
        a = np.ascontiguousarray(a, dtype=_F8)
    return a


def _nbytes(data) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return -1


def _buf(data):
    """Something the C side can take a contiguous byte buffer of."""
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        return data.reshape(-1).view(np.uint8)
    mv = memoryview(data)
    if not mv.c_contiguous:
        return mv.tobytes()
    return mv if mv.format in ("B", "b", "c") and mv.ndim == 1 else mv.cast("B")


def encode_xor(t: np.ndarray, v: np.ndarray, *, prom2_quirk: bool = False) -> bytes:
    """Encode one chunk (at most 65535 samples) and return its ``data`` bytes."""
    try:  # fast path: 1-D contiguous int64 / float64 arrays go straight to C
        return _xor.encode(t, v, prom2_quirk)
    except TypeError:
        pass
    t = _i8(t)
    v = _f8(v)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValueError(f"t and v must be 1-D and of equal length, got {t.shape} and {v.shape}")
    return _xor.encode(t, v, prom2_quirk)


def encode_xor_many(
    t: np.ndarray, v: np.ndarray, bounds: np.ndarray, *, prom2_quirk: bool = False
) -> tuple[bytes, np.ndarray]:
    """Encode chunk ``i`` from samples ``bounds[i]:bounds[i+1]``, all chunks in one C call.

    Returns ``(buf, offsets)``: the chunk datas back to back and ``offsets`` (int64, ``k+1``)
    so that chunk ``i`` is ``buf[offsets[i]:offsets[i+1]]``.
    """
    # The C side validates bounds (0 <= b[i] <= b[i+1] <= len(t), at most MAX_SAMPLES each).
    offsets = np.empty(max(np.size(bounds), 1), dtype=np.int64)
    try:
        return _xor.encode_many(t, v, bounds, offsets, prom2_quirk), offsets
    except TypeError:
        pass
    t = _i8(t)
    v = _f8(v)
    bounds = _i8(bounds)
    if t.ndim != 1 or t.shape != v.shape:
        raise ValueError(f"t and v must be 1-D and of equal length, got {t.shape} and {v.shape}")
    if bounds.ndim != 1 or bounds.size < 1:
        raise ValueError("bounds must be a 1-D array of k+1 sample indices")
    offsets = np.empty(bounds.size, dtype=np.int64)
    return _xor.encode_many(t, v, bounds, offsets, prom2_quirk), offsets


def decode_xor(data: bytes | memoryview) -> tuple[np.ndarray, np.ndarray]:
    """Decode one chunk's ``data``; returns ``(t int64, v float64)``."""
    try:
        code, sample, offset, t, v = _xor.decode(data)
    except TypeError:
        data = _buf(data)
        code, sample, offset, t, v = _xor.decode(data)
    if code:
        raise _corrupt(code, None, sample, offset, 0, memoryview(data).nbytes)
    return t, v


def decode_xor_many(buf, offsets: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode chunk ``i`` = ``buf[offsets[i]:offsets[i]+lengths[i]]`` for all ``i`` in one C call.

    Returns ``(counts int64[k], t int64[sum(counts)], v float64[sum(counts)])``. A bad chunk
    raises :class:`CorruptChunkError` whose ``offset`` is the byte offset in ``buf`` where the
    failing sample starts, with ``chunk_index``, ``sample_index`` and ``chunk_offset`` set.
    """
    try:
        code, chunk, sample, off, counts, t, v = _xor.decode_many(buf, offsets, lengths)
    except TypeError:
        offsets = _i8(offsets)
        lengths = _i8(lengths)
        if offsets.shape != lengths.shape or offsets.ndim != 1:
            raise ValueError("offsets and lengths must be 1-D and of equal length") from None
        code, chunk, sample, off, counts, t, v = _xor.decode_many(_buf(buf), offsets, lengths)
    if code:
        base = int(offsets[chunk]) if code != 5 else 0
        raise _corrupt(code, chunk, sample, off, base, int(lengths[chunk]), _nbytes(buf))
    return counts, t, v


def decode_xor_many_into(
    buf, offsets: np.ndarray, lengths: np.ndarray, t_out: np.ndarray, v_out: np.ndarray
) -> tuple[np.ndarray, int]:
    """Like :func:`decode_xor_many`, but into caller-owned arrays (reused across calls).

    ``t_out`` (int64) and ``v_out`` (float64) must be C-contiguous and hold at least the total
    sample count; samples go to ``[:total]``. Returns ``(counts, total)``. Reusing outputs
    avoids fresh-page faults, which cost more than the decoding itself on some machines.
    """
    offsets = _i8(offsets)
    lengths = _i8(lengths)
    if offsets.shape != lengths.shape or offsets.ndim != 1:
        raise ValueError("offsets and lengths must be 1-D and of equal length")
    for name, a, dt in (("t_out", t_out, _I8), ("v_out", v_out, _F8)):
        if not isinstance(a, np.ndarray) or a.dtype != dt or not a.flags.c_contiguous or not a.flags.writeable:
            raise TypeError(f"{name} must be a writable C-contiguous {dt} ndarray")
    code, chunk, sample, off, counts, total = _xor.decode_many_into(_buf(buf), offsets, lengths, t_out, v_out)
    if code == -1:
        raise ValueError(f"outputs hold {min(t_out.size, v_out.size)} samples, the chunks have {total}")
    if code:
        base = int(offsets[chunk]) if code != 5 else 0
        raise _corrupt(code, chunk, sample, off, base, int(lengths[chunk]), _nbytes(buf))
    return counts, total


def xor_num_samples(data) -> int:
    """The sample count from a chunk's 2-byte big-endian header."""
    if isinstance(data, (bytes, bytearray)):
        head = data[:2]
    else:
        head = bytes(memoryview(_buf(data))[:2])
    if len(head) < 2:
        raise CorruptChunkError(offset=0, what=f"XOR chunk: {_ERR_WHAT[1]}")
    return (head[0] << 8) | head[1]
