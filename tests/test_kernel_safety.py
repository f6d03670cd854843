"""The C kernels against hostile arguments: sizes that would overflow, callers' containers that
change while a kernel reads them (Python code run from a kernel: a property, a set member's
__eq__), deep recursion, and only public CPython API. Each case crashed or misbehaved before;
the crashing ones run in a child process (with the debug allocator, which fills freed memory,
so a use after free fails at once) and must end cleanly there."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pythanos.tsdb.encoding import encode_uvarint

KERNELS = sorted((Path(__file__).resolve().parent.parent / "components" / "pythanos").glob("*/_*.c"))


def _child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONMALLOC="debug", OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def _ok(p: subprocess.CompletedProcess, want: str) -> None:
    assert p.returncode == 0, (p.returncode, p.stdout[-1000:], p.stderr[-2000:])
    assert want in p.stdout, p.stdout[-1000:]


def test_kernels_use_no_private_cpython_api():
    assert len(KERNELS) >= 9
    for path in KERNELS:
        used = set(re.findall(r"\b_Py[A-Za-z]\w*", path.read_text()))
        assert not used, f"{path.name} uses private CPython API: {sorted(used)}"


def test_topk_group_count_that_would_overflow_is_an_error():
    """G (groups) is a plain argument: G * 8 bytes wrapped to a tiny allocation before, and the
    kernel wrote past it (a crash)."""
    p = _child(r"""
import numpy as np
from pythanos.promql import _topk
N, S = 3, 2
V, P = np.zeros((N, S)), np.ones((N, S), np.uint8)
gid, k = np.zeros(N, np.int64), np.ones(S, np.int64)
for G in (2**61, 2**62 + 1, 4):
    try:
        _topk.select(V, P, gid, G, k, False, np.zeros((N, S), np.uint8), np.empty(N, np.int64), N)
    except ValueError as e:
        print("ValueError:", e)
""")
    _ok(p, "ValueError: bad group count\nValueError: bad group count\nValueError: bad group count")


_JSONFMT = r"""
import numpy as np
from pythanos.promql import _jsonfmt

class Item:
    def __init__(self, i, items):
        self.i, self.items, self.t, self.v = i, items, np.arange(3, dtype=np.int64) * 1000, np.ones(3)

    @property
    def labels(self):
        if self.i == 0:
            self.items.clear()  # the list being written drops every item, and its storage
            [object() for _ in range(1000)]
        return (("a", str(self.i)),)

items = []
items.extend(Item(i, items) for i in range(50))
out = bytes(memoryview(_jsonfmt.series(items, 0, 50, False)))
print("series:", out.count(b'"metric"'), out.count(b'[2,"1"]'))
"""


def test_jsonfmt_series_survives_items_changing_under_it():
    """series() walked the caller's list through a borrowed pointer to its storage while reading
    attributes (a property runs Python code): clearing the list freed what it walked."""
    _ok(_child(_JSONFMT), "series: 50 50")


_SERIES = r"""
import struct
import numpy as np
import google_crc32c
from pythanos.tsdb import _series

body = b"\x01\x00\x01\x00"  # one label (symbol 0 = symbol 1), no chunks
entry = bytes([len(body)]) + body + struct.pack(">I", google_crc32c.value(body))
starts = np.zeros(1, np.int64)
syms = ["".join(["name-", str(12345)]), "".join(["value-", str(67890)])]

class Evil:  # a member of ``remove`` whose __eq__ empties the symbol list during the lookup
    def __hash__(self):
        return hash(syms[0])
    def __eq__(self, other):
        syms.clear()
        [str(i) * 3 for i in range(1000)]
        return False

print("remove:", _series.decode(entry, starts, len(entry), syms, (), {Evil()})[0])
for ext in ((["a", "b"],), (("a",),), (("a", 1),), "ab"):
    try:
        _series.decode(entry, starts, len(entry), ["n", "v"], ext, None)
    except TypeError as e:
        print("TypeError:", e)
try:
    _series.decode(entry, starts, len(entry), [b"n", "v"], (), None)
except TypeError as e:
    print("TypeError:", e)
"""


def test_series_decode_holds_what_it_reads():
    """decode() kept borrowed symbol strings across a set lookup that runs Python code, read
    ``ext`` items as 2-tuples of str without checking, and symbols as str without checking."""
    p = _child(_SERIES)
    _ok(p, "remove: [(('name-12345', 'value-67890'),)]")
    assert p.stdout.count("TypeError: ext must be a tuple of (name, value) str pairs") == 3, p.stdout
    assert "TypeError: symbols must be a list of str" in p.stdout or "TypeError: decode() argument" in p.stdout


def test_indexenc_series_offset_that_would_overflow_is_an_error():
    from pythanos.tsdb import _indexenc

    one = np.ones(1, np.int64)
    args = (one, np.zeros(2, np.uint32), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros(0, np.int64))
    entries, refs = _indexenc.series(16, *args)
    assert np.frombuffer(refs, np.int64).tolist() == [1]
    with pytest.raises(ValueError, match="pos0 too large"):
        _indexenc.series(2**63 - 20, *args)


def test_downsample_aggr_ranges_cannot_overlap():
    """The aggregate ranges index the decoded sub-chunks, which lie side by side: overlapping
    ones made the kernel's scratch as large as their sum (any size) before."""
    from pythanos.tsdb import _downsample

    t = np.arange(100, dtype=np.int64) * 300_000
    v = np.ones(100)
    k = 1000
    ranges = np.tile(np.array([[0, 100], [-1, -1], [-1, -1], [-1, -1], [-1, -1]], np.int64), (k, 1))
    mint, maxt, ns = np.zeros(k, np.int64), np.full(k, t[-1], np.int64), np.full(k, 100, np.int64)
    with pytest.raises(ValueError, match="inconsistent"):
        _downsample.aggr(t, v, ranges, mint, maxt, ns, np.array([k], np.int64), 300_000, 3_600_000)
    ok = _downsample.aggr(t, v, ranges[:5], mint[:1], maxt[:1], ns[:1], np.array([1], np.int64), 300_000, 3_600_000)
    assert ok[0] == 0


def test_dedup_many_replicas_on_a_small_thread_stack():
    """Thanos' iterator tree recurses once per replica; the kernel did too, and 100,000 replicas
    overflowed a 1 MiB thread stack. The walk now keeps its own stack."""
    p = _child(r"""
import threading
import numpy as np
from pythanos.dedup import dedup_samples
k = 100_000
reps = [(np.array([k - r, 10**9 + r], np.int64), np.ones(2)) for r in range(k)]
out = {}
def run():
    out["t"] = dedup_samples(reps)[0].tolist()
threading.stack_size(1 << 20)
th = threading.Thread(target=run)
th.start()
th.join()
print("merged:", out["t"])
""", timeout=300)
    _ok(p, "merged: [1, 1000000000]")


def test_series_records_length_that_would_overflow_is_an_error():
    """A chunk record (segment file) or index series entry whose length varint is near 2^64:
    ``len + 5`` wrapped and the checksum ran over 2^64 bytes (a crash of the store gateway on a
    crafted bucket object)."""
    p = _child(r"""
import numpy as np
from pythanos.tsdb import _series
def uv(x):
    out = bytearray()
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80); x >>= 7
    out.append(x); return bytes(out)
rec = uv(2**64 - 3) + b"\x01" + bytes(40)
print("records:", _series.records(rec, np.zeros(1, np.int64), 0, len(rec))[3])
ent = uv(2**64 - 2) + bytes(40)
print("decode:", _series.decode(ent, np.zeros(1, np.int64), len(ent), ["a"], (), None)[4])
""")
    _ok(p, "records: (0, 0, 'truncated chunk record: data past the end of the file')\n"
           "decode: (0, 10, 'entry runs past the series section')")


def test_frames_aggregate_length_that_would_overflow_is_an_error():
    """An aggregate chunk whose count sub-chunk claims 2^64-1 bytes: ``len + 1`` wrapped to 0,
    the length went to Py_BuildValue as -1 (read up to a NUL) and the frame was accepted."""
    from pythanos.query import _frames

    def fld(tag: int, b: bytes) -> bytes:
        return bytes([tag]) + encode_uvarint(len(b)) + b

    data = encode_uvarint(2**64 - 1) + b"\x00" * 4
    chunk = b"\x08" + encode_uvarint(255) + fld(0x12, data)  # thanos.Chunk{type = 0xFF (aggregate), data}
    with pytest.raises(ValueError, match="aggregate chunk encoding"):
        _frames.parse(fld(0x0a, fld(0x12, fld(0x1a, chunk))), None, {})
