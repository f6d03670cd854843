/* Encoding many index series entries and chunk records in one call (the compactor's and the
 * downsampler's bulk writes).
 *
 * series(pos0, nlabels, syms, nchunks, mint, maxt, ref) -> (bytes, refs)
 *
 *   pos0     file offset the bytes will be written at (entries are 16-byte aligned, so the
 *            padding depends on it)
 *   nlabels  int64[n]    label pairs per series
 *   syms     uint32[2L]  (name symbol index, value symbol index) pairs, series after series
 *   nchunks  int64[n]    chunks per series
 *   mint, maxt, ref  int64[m]  chunk metas, series after series
 *
 * Each entry: zero padding to a multiple of 16, then uvarint(len(body)), body, CRC32C(body) as
 * big-endian uint32; body = uvarint(#labels) {uvarint(name) uvarint(value)} uvarint(#chunks),
 * first chunk varint(mint) uvarint(maxt-mint) uvarint(ref), next ones uvarint(mint - prev maxt)
 * uvarint(maxt-mint) varint(ref - prev ref). refs[i] = entry offset / 16.
 *
 * Every count is checked against the array sizes and every chunk meta against the index's rules
 * (maxt >= mint, mint > previous maxt, refs not decreasing), so bad input is an error, never a
 * read out of bounds. The GIL is released while encoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../_crc32c.h"

static size_t put_uv(uint8_t *b, uint64_t v) {
    size_t i = 0;
    while (v >= 0x80) {
        b[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[i++] = (uint8_t)v;
    return i;
}

static size_t put_v(uint8_t *b, int64_t v) {
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    return put_uv(b, u);
}

static PyObject *py_series(PyObject *self, PyObject *args) {
    long long pos0;
    Py_buffer nl, sy, nc, mi, ma, rf;
    if (!PyArg_ParseTuple(args, "Ly*y*y*y*y*y*", &pos0, &nl, &sy, &nc, &mi, &ma, &rf)) return NULL;
    PyObject *result = NULL;
    uint8_t *out = NULL;
    int64_t *refs = NULL;
    uint8_t *body = NULL;
    Py_ssize_t n = nl.len / 8, L2 = sy.len / 4, m = mi.len / 8;
    const int64_t *nlabels = nl.buf, *nchunks = nc.buf, *mint = mi.buf, *maxt = ma.buf, *ref = rf.buf;
    const uint32_t *syms = sy.buf;
    const char *err = NULL;
    Py_ssize_t bad = -1;
    if (nc.len / 8 != n || ma.len / 8 != m || rf.len / 8 != m || pos0 < 0) {
        PyErr_SetString(PyExc_ValueError, "series: array sizes disagree or pos0 is negative");
        goto done;
    }
    /* sizes first: worst case per entry */
    Py_ssize_t tl = 0, tc = 0;
    size_t cap = 0, maxbody = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (nlabels[i] < 0 || nchunks[i] < 0 || nlabels[i] > L2 / 2 - tl || nchunks[i] > m - tc) {
            PyErr_Format(PyExc_ValueError, "series %zd: label or chunk count out of range", i);
            goto done;
        }
        size_t b = 10 + (size_t)nlabels[i] * 10 + 10 + (size_t)nchunks[i] * 30;
        if (b > maxbody) maxbody = b;
        cap += 16 + 10 + b + 4;
        tl += nlabels[i];
        tc += nchunks[i];
    }
    if (tl * 2 != L2 || tc != m) {
        PyErr_SetString(PyExc_ValueError, "series: label or chunk arrays longer than the counts say");
        goto done;
    }
    if ((uint64_t)pos0 > (uint64_t)INT64_MAX - cap) { /* entry offsets and refs must not overflow */
        PyErr_SetString(PyExc_ValueError, "series: pos0 too large for the entries after it");
        goto done;
    }
    out = PyMem_RawMalloc(cap ? cap : 1);
    refs = PyMem_RawMalloc(n ? (size_t)n * 8 : 8);
    body = PyMem_RawMalloc(maxbody ? maxbody : 1);
    if (!out || !refs || !body) {
        PyErr_NoMemory();
        goto done;
    }
    size_t w = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t li = 0, ci = 0;
    for (Py_ssize_t i = 0; i < n && !err; i++) {
        int64_t pos = pos0 + (int64_t)w;
        size_t pad = (size_t)((16 - pos % 16) % 16);
        memset(out + w, 0, pad);
        w += pad;
        refs[i] = (pos0 + (int64_t)w) / 16;
        size_t b = put_uv(body, (uint64_t)nlabels[i]);
        for (int64_t k = 0; k < nlabels[i]; k++, li++) {
            b += put_uv(body + b, syms[2 * li]);
            b += put_uv(body + b, syms[2 * li + 1]);
        }
        b += put_uv(body + b, (uint64_t)nchunks[i]);
        int64_t t0 = 0, r0 = 0;
        for (int64_t k = 0; k < nchunks[i]; k++, ci++) {
            int64_t a = mint[ci], z = maxt[ci], r = ref[ci];
            if (z < a) { err = "chunk maxt before mint"; bad = i; break; }
            if (k == 0) {
                b += put_v(body + b, a);
                b += put_uv(body + b, (uint64_t)(z - a));
                b += put_uv(body + b, (uint64_t)r);
            } else {
                if (a <= t0) { err = "chunk overlaps the previous one"; bad = i; break; }
                if (r < r0) { err = "chunk ref before the previous one"; bad = i; break; }
                b += put_uv(body + b, (uint64_t)(a - t0));
                b += put_uv(body + b, (uint64_t)(z - a));
                b += put_v(body + b, r - r0);
            }
            t0 = z;
            r0 = r;
        }
        if (err) break;
        w += put_uv(out + w, b);
        memcpy(out + w, body, b);
        w += b;
        uint32_t c = crc32c_value(body, b);
        out[w++] = (uint8_t)(c >> 24);
        out[w++] = (uint8_t)(c >> 16);
        out[w++] = (uint8_t)(c >> 8);
        out[w++] = (uint8_t)c;
    }
    Py_END_ALLOW_THREADS
    if (err) {
        PyErr_Format(PyExc_ValueError, "series %zd: %s", bad, err);
        goto done;
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)w);
    PyObject *rb = PyBytes_FromStringAndSize((const char *)refs, n * 8);
    if (bytes && rb) result = PyTuple_Pack(2, bytes, rb);
    Py_XDECREF(bytes);
    Py_XDECREF(rb);
done:
    PyMem_RawFree(out);
    PyMem_RawFree(refs);
    PyMem_RawFree(body);
    PyBuffer_Release(&nl);
    PyBuffer_Release(&sy);
    PyBuffer_Release(&nc);
    PyBuffer_Release(&mi);
    PyBuffer_Release(&ma);
    PyBuffer_Release(&rf);
    return result;
}

/* chunk_records(buf, offs, encs) -> (records bytes, record lengths int64 bytes): chunk i is
 * buf[offs[i]:offs[i+1]] with encoding byte encs[i] (encs: bytes of k, or one byte for all);
 * each record is uvarint(len(data)) | encoding | data | CRC32C(encoding + data) big-endian. */
static PyObject *py_chunk_records(PyObject *self, PyObject *args) {
    Py_buffer b, o, e;
    if (!PyArg_ParseTuple(args, "y*y*y*", &b, &o, &e)) return NULL;
    PyObject *result = NULL;
    uint8_t *out = NULL;
    int64_t *lens = NULL;
    Py_ssize_t k = o.len / 8 - 1;
    const int64_t *offs = o.buf;
    const uint8_t *data = b.buf, *encs = e.buf;
    if (k < 0 || (e.len != k && e.len != 1)) {
        PyErr_SetString(PyExc_ValueError, "chunk_records: want k+1 offsets and k (or 1) encodings");
        goto done;
    }
    size_t cap = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (offs[i] < 0 || offs[i + 1] < offs[i] || offs[i + 1] > b.len) {
            PyErr_Format(PyExc_ValueError, "chunk_records: chunk %zd outside the buffer", i);
            goto done;
        }
        cap += (size_t)(offs[i + 1] - offs[i]) + 10 + 1 + 4;
    }
    out = PyMem_RawMalloc(cap ? cap : 1);
    lens = PyMem_RawMalloc(k ? (size_t)k * 8 : 8);
    if (!out || !lens) {
        PyErr_NoMemory();
        goto done;
    }
    size_t w = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        size_t n = (size_t)(offs[i + 1] - offs[i]), w0 = w;
        uint8_t enc = encs[e.len == 1 ? 0 : i];
        w += put_uv(out + w, n);
        out[w++] = enc;
        memcpy(out + w, data + offs[i], n);
        w += n;
        uint32_t c = crc32c_extend(crc32c_extend(0, &enc, 1), data + offs[i], n);
        out[w++] = (uint8_t)(c >> 24);
        out[w++] = (uint8_t)(c >> 16);
        out[w++] = (uint8_t)(c >> 8);
        out[w++] = (uint8_t)c;
        lens[i] = (int64_t)(w - w0);
    }
    Py_END_ALLOW_THREADS
    PyObject *rb = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)w);
    PyObject *lb = PyBytes_FromStringAndSize((const char *)lens, k * 8);
    if (rb && lb) result = PyTuple_Pack(2, rb, lb);
    Py_XDECREF(rb);
    Py_XDECREF(lb);
done:
    PyMem_RawFree(out);
    PyMem_RawFree(lens);
    PyBuffer_Release(&b);
    PyBuffer_Release(&o);
    PyBuffer_Release(&e);
    return result;
}

/* gather(sources, which, starts, lens) -> bytes: sources[which[i]][starts[i]:starts[i]+lens[i]]
 * for every i, back to back (copying chunk records out of several segment files at once). */
static PyObject *py_gather(PyObject *self, PyObject *args) {
    PyObject *srcs;
    Py_buffer w, st, ln;
    if (!PyArg_ParseTuple(args, "O!y*y*y*", &PyTuple_Type, &srcs, &w, &st, &ln)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t ns = PyTuple_GET_SIZE(srcs), n = w.len / 8;
    Py_buffer *views = PyMem_Calloc(ns ? (size_t)ns : 1, sizeof(Py_buffer));
    Py_ssize_t got = 0;
    const int64_t *which = w.buf, *starts = st.buf, *lens = ln.buf;
    if (!views) { PyErr_NoMemory(); goto done; }
    if (st.len / 8 != n || ln.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "gather: which, starts and lens differ in length");
        goto done;
    }
    for (; got < ns; got++)
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(srcs, got), &views[got], PyBUF_SIMPLE) < 0) goto done;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (which[i] < 0 || which[i] >= ns || starts[i] < 0 || lens[i] < 0 ||
            starts[i] > views[which[i]].len - lens[i]) {
            PyErr_Format(PyExc_ValueError, "gather: range %zd outside its source", i);
            goto done;
        }
        if (lens[i] > PY_SSIZE_T_MAX - total) { /* ranges may repeat: their sum is checked too */
            PyErr_SetString(PyExc_OverflowError, "gather: the ranges add up to more than a bytes object holds");
            goto done;
        }
        total += (Py_ssize_t)lens[i];
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (!result) goto done;
    {
        char *out = PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            memcpy(out, (const char *)views[which[i]].buf + starts[i], (size_t)lens[i]);
            out += lens[i];
        }
        Py_END_ALLOW_THREADS
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyBuffer_Release(&w);
    PyBuffer_Release(&st);
    PyBuffer_Release(&ln);
    return result;
}

static PyMethodDef methods[] = {
    CRC32C_METHOD,
    {"gather", py_gather, METH_VARARGS, "gather(sources, which, starts, lens) -> bytes of the ranges, in order"},
    {"chunk_records", py_chunk_records, METH_VARARGS,
     "chunk_records(buf, offs, encs) -> (records bytes, record lengths int64 bytes)"},
    {"series", py_series, METH_VARARGS,
     "series(pos0, nlabels, syms, nchunks, mint, maxt, ref) -> (entries bytes, refs int64 bytes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_indexenc",
                                    "Bulk encoding of index series entries.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__indexenc(void) {
    crc32c_init();
    return PyModule_Create(&module);
}
