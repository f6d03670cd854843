/*
 * Series entries of a Prometheus index (format v2, tsdb/docs/format/index.md), decoded in bulk.
 *
 *   uvarint len | uvarint nlabels | (uvarint name_ref, uvarint value_ref)* | uvarint nchunks
 *   | varint mint0 | uvarint maxt0-mint0 | uvarint ref0 | (uvarint mint-prev_maxt, uvarint maxt-mint,
 *   varint ref-prev_ref)* | CRC32C(BE) over the len bytes after the length
 *
 * decode(buf, starts, limit, symbols, ext, remove) reads the entry at every position of `starts`
 * (int64, positions in `buf`), checks its CRC and symbol references, and returns
 *
 *   (labels, ends, nchunks, chunks, error)
 *
 * labels   list of tuples of (name, value) pairs: the series' labels merged with the sorted pairs
 *          `ext` (ext wins on equal names: Thanos' ExtendSortedLabels), minus names in `remove`
 *          (a set, or None), pairs with an empty value left out;
 * ends     bytes holding int64[n]: the position after each entry (its CRC), -1 when `buf` ends
 *          before the entry does (the caller reads that entry again with more bytes);
 * nchunks  bytes holding int64[n]; chunks: bytes holding int64[3 * sum(nchunks)] as (mint, maxt, ref);
 * error    None, or (index, position, message) of the first malformed entry (nothing after it is
 *          decoded); positions are relative to `buf`. `limit` is the end of the series section
 *          relative to buf (it may lie beyond the buffer): no entry may cross it.
 *
 * With a true seventh argument a sixth item follows: per series the ``labels`` fields of its
 * thanos.Series message (protobuf bytes; None where a string is not valid UTF-8).
 *
 * Everything is bounded by the buffer: no count read from the data allocates more than the bytes
 * that hold it could describe.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>

#include "../_crc32c.h"

/* 0 ok, -1 past `end`, -2 overflow */
static int uvarint(const uint8_t *b, Py_ssize_t *pos, Py_ssize_t end, uint64_t *out) {
    uint64_t x = 0;
    unsigned s = 0;
    for (int i = 0; i < 10; i++) {
        if (*pos >= end) return -1;
        uint8_t c = b[(*pos)++];
        if (c < 0x80) {
            if (i == 9 && c > 1) return -2;
            *out = x | ((uint64_t)c << s);
            return 0;
        }
        x |= (uint64_t)(c & 0x7F) << s;
        s += 7;
    }
    return -2;
}

static int varint(const uint8_t *b, Py_ssize_t *pos, Py_ssize_t end, int64_t *out) {
    uint64_t u;
    int r = uvarint(b, pos, end, &u);
    if (r) return r;
    *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return 0;
}

typedef struct {
    int64_t *v;
    Py_ssize_t n, cap;
} Vec;

static int vec_push(Vec *a, int64_t x) {
    if (a->n == a->cap) {
        Py_ssize_t cap = a->cap ? a->cap * 2 : 1024;
        int64_t *v = PyMem_Realloc(a->v, (size_t)cap * sizeof(int64_t));
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

static PyObject *vec_bytes(Vec *a) {
    return PyBytes_FromStringAndSize((const char *)a->v, a->n * (Py_ssize_t)sizeof(int64_t));
}

/* Append pair to list unless its name is removed or its value empty. Steals nothing. */
static int emit(PyObject *out, PyObject *name, PyObject *value, PyObject *remove) {
    if (PyUnicode_GET_LENGTH(value) == 0) return 0;
    if (remove != NULL) {
        int r = PySet_Contains(remove, name);
        if (r < 0) return -1;
        if (r) return 0;
    }
    PyObject *t = PyTuple_Pack(2, name, value);
    if (!t) return -1;
    int r = PyList_Append(out, t);
    Py_DECREF(t);
    return r;
}

typedef struct {
    uint8_t *v;
    Py_ssize_t n, cap;
} Buf;

static int put(Buf *b, const void *p, Py_ssize_t n) {
    if (b->n + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *v = PyMem_Realloc(b->v, (size_t)cap);
        if (!v) { PyErr_NoMemory(); return -1; }
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, p, (size_t)n);
    b->n += n;
    return 0;
}

static int put_uvarint(Buf *vb, uint64_t x) {
    uint8_t t[10];
    int n = 0;
    while (x >= 0x80) { t[n++] = (uint8_t)(x | 0x80); x >>= 7; }
    t[n++] = (uint8_t)x;
    return put(vb, t, n);
}

static int uvarint_len(uint64_t x) {
    int n = 1;
    while (x >= 0x80) { x >>= 7; n++; }
    return n;
}

/* The ``labels`` fields of a thanos.Series (field 1, Label{name = 1, value = 2}) for pairs, or None
 * when a string is not valid UTF-8 (the caller then encodes it the slow way). */
static PyObject *encode_labels(PyObject *pairs, Buf *vb) {
    Buf *b = vb;
    b->n = 0;
    Py_ssize_t n = PyList_GET_SIZE(pairs);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(pairs, i);
        Py_ssize_t ln, lv;
        const char *nm = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(p, 0), &ln);
        const char *vl = nm ? PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(p, 1), &lv) : NULL;
        if (!nm || !vl) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        uint64_t inner = (ln ? 1 + (uint64_t)uvarint_len((uint64_t)ln) + (uint64_t)ln : 0)
                       + (lv ? 1 + (uint64_t)uvarint_len((uint64_t)lv) + (uint64_t)lv : 0);
        uint8_t t1 = 0x0a, t2 = 0x12;
        if (put(vb, &t1, 1) || put_uvarint(vb, inner)) return NULL;
        if (ln && (put(vb, &t1, 1) || put_uvarint(vb, (uint64_t)ln) || put(vb, nm, ln))) return NULL;
        if (lv && (put(vb, &t2, 1) || put_uvarint(vb, (uint64_t)lv) || put(vb, vl, lv))) return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)b->v, b->n);
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer buf, st;
    Py_ssize_t limit;
    PyObject *syms, *ext, *remove;
    int want_wire = 0;
    if (!PyArg_ParseTuple(args, "y*y*nO!O!O|p", &buf, &st, &limit, &PyList_Type, &syms, &PyTuple_Type, &ext, &remove,
                          &want_wire))
        return NULL;
    PyObject *result = NULL, *labels = NULL, *wires = NULL, *err = Py_None;
    Buf wb = {0};
    Vec ends = {0}, nch = {0}, chk = {0};
    Py_INCREF(err);
    if (remove == Py_None) remove = NULL;
    else if (!PyAnySet_Check(remove)) {
        PyErr_SetString(PyExc_TypeError, "remove must be a set or None");
        goto done;
    }
    if (st.len % 8) {
        PyErr_SetString(PyExc_ValueError, "starts must be int64");
        goto done;
    }
    const uint8_t *b = buf.buf;
    Py_ssize_t blen = buf.len;
    const int64_t *starts = st.buf;
    Py_ssize_t n = st.len / 8, nsym = PyList_GET_SIZE(syms), next = PyTuple_GET_SIZE(ext);
    /* ext is a tuple (immutable): checked once, then read without further checks */
    for (Py_ssize_t j = 0; j < next; j++) {
        PyObject *ep = PyTuple_GET_ITEM(ext, j);
        if (!PyTuple_Check(ep) || PyTuple_GET_SIZE(ep) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(ep, 0)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(ep, 1))) {
            PyErr_SetString(PyExc_TypeError, "ext must be a tuple of (name, value) str pairs");
            goto done;
        }
    }
    labels = PyList_New(0);
    if (!labels) goto done;
    if (want_wire && !(wires = PyList_New(0))) goto done;
    PyObject *pairs = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t pos = (Py_ssize_t)starts[i];
        const char *what = NULL;
        if (pos < 0 || pos > blen) { what = "series entry position outside the read"; goto bad; }
        uint64_t ln;
        int r = uvarint(b, &pos, blen, &ln);
        if (r == -2 || (r == -1 && blen >= limit)) { what = "invalid entry length"; goto bad; }
        /* ln comes from the file: bounded before any arithmetic on it */
        if (r == 0 && (ln > (uint64_t)PY_SSIZE_T_MAX - 4 || ln + 4 > (uint64_t)(limit > pos ? limit - pos : 0))) {
            what = "entry runs past the series section";
            goto bad;
        }
        if (r == -1 || ln + 4 > (uint64_t)(blen - pos)) {
            /* the read ends first: the caller fetches this one again */
            if (vec_push(&ends, -1) || vec_push(&nch, 0)) goto nomem;
            if (PyList_Append(labels, Py_None)) goto done;
            if (wires && PyList_Append(wires, Py_None)) goto done;
            continue;
        }
        Py_ssize_t body = pos, bend = pos + (Py_ssize_t)ln;
        uint32_t want = ((uint32_t)b[bend] << 24) | ((uint32_t)b[bend + 1] << 16) | ((uint32_t)b[bend + 2] << 8) | b[bend + 3];
        if (crc32c_value(b + body, (size_t)ln) != want) { pos = bend; what = "CRC32C mismatch"; goto bad; }
        uint64_t nl;
        if (uvarint(b, &pos, bend, &nl)) { what = "bad label count"; goto bad; }
        if (nl > (uint64_t)(bend - pos) / 2) { what = "label count cannot fit in the entry"; goto bad; }
        pairs = PyList_New(0);
        if (!pairs) goto done;
        Py_ssize_t j = 0;
        for (uint64_t k = 0; k < nl; k++) {
            uint64_t ni, vi;
            Py_ssize_t at = pos;
            if (uvarint(b, &pos, bend, &ni) || uvarint(b, &pos, bend, &vi)) { pos = at; what = "bad label reference"; goto badp; }
            /* the symbols list is the caller's: its size is read now (the set lookups in emit()
             * can run Python code) and the two strings are held while they are used */
            nsym = PyList_GET_SIZE(syms);
            if (ni >= (uint64_t)nsym || vi >= (uint64_t)nsym) { pos = at; what = "symbol reference out of range"; goto badp; }
            PyObject *name = PyList_GET_ITEM(syms, (Py_ssize_t)ni), *value = PyList_GET_ITEM(syms, (Py_ssize_t)vi);
            if (!PyUnicode_Check(name) || !PyUnicode_Check(value)) {
                PyErr_SetString(PyExc_TypeError, "symbols must be a list of str");
                goto donep;
            }
            Py_INCREF(name);
            Py_INCREF(value);
            /* ext pairs sorting before this name first; an equal ext name replaces this pair */
            int replaced = 0, failed = 0;
            while (j < next) {
                PyObject *ep = PyTuple_GET_ITEM(ext, j);
                PyObject *en = PyTuple_GET_ITEM(ep, 0);
                int c = PyUnicode_Compare(en, name);
                if (c == -1 && PyErr_Occurred()) { failed = 1; break; }
                if (c > 0) break;
                if (emit(pairs, en, PyTuple_GET_ITEM(ep, 1), remove)) { failed = 1; break; }
                j++;
                if (c == 0) { replaced = 1; break; }
            }
            if (!failed && !replaced && emit(pairs, name, value, remove)) failed = 1;
            Py_DECREF(name);
            Py_DECREF(value);
            if (failed) goto donep;
        }
        for (; j < next; j++) {
            PyObject *ep = PyTuple_GET_ITEM(ext, j);
            if (emit(pairs, PyTuple_GET_ITEM(ep, 0), PyTuple_GET_ITEM(ep, 1), remove)) goto donep;
        }
        uint64_t nc;
        if (uvarint(b, &pos, bend, &nc)) { what = "bad chunk count"; goto badp; }
        if (nc > (uint64_t)(bend - pos) / 3) { what = "chunk count cannot fit in the entry"; goto badp; }
        int64_t mint = 0, maxt = 0;
        uint64_t ref = 0;
        for (uint64_t k = 0; k < nc; k++) {
            uint64_t d, d2;
            if (k == 0) {
                if (varint(b, &pos, bend, &mint) || uvarint(b, &pos, bend, &d) || uvarint(b, &pos, bend, &ref)) { what = "bad chunk meta"; goto badp; }
                maxt = (int64_t)((uint64_t)mint + d); /* Go: wraps */
            } else {
                int64_t dr;
                if (uvarint(b, &pos, bend, &d) || uvarint(b, &pos, bend, &d2) || varint(b, &pos, bend, &dr)) { what = "bad chunk meta"; goto badp; }
                mint = (int64_t)((uint64_t)maxt + d);
                maxt = (int64_t)((uint64_t)mint + d2);
                ref += (uint64_t)dr;
            }
            if (vec_push(&chk, mint) || vec_push(&chk, maxt) || vec_push(&chk, (int64_t)ref)) goto nomemp;
        }
        if (pos != bend) { what = "trailing bytes in entry"; goto badp; }
        if (wires) {
            PyObject *w = encode_labels(pairs, &wb);
            if (!w) goto donep;
            int ar = PyList_Append(wires, w);
            Py_DECREF(w);
            if (ar) goto donep;
        }
        PyObject *t = PyList_AsTuple(pairs);
        Py_CLEAR(pairs);
        if (!t) goto done;
        if (PyList_Append(labels, t)) { Py_DECREF(t); goto done; }
        Py_DECREF(t);
        if (vec_push(&ends, bend + 4) || vec_push(&nch, (int64_t)nc)) goto nomem;
        continue;
    badp:
        Py_CLEAR(pairs);
    bad:
        Py_DECREF(err);
        err = Py_BuildValue("(nns)", i, pos, what);
        if (!err) goto done;
        break;
    nomemp:
        Py_CLEAR(pairs);
    nomem:
        PyErr_NoMemory();
        goto done;
    donep:
        Py_CLEAR(pairs);
        goto done;
    }
    {
        PyObject *e = vec_bytes(&ends), *c = vec_bytes(&nch), *k = vec_bytes(&chk);
        if (e && c && k) result = wires ? PyTuple_Pack(6, labels, e, c, k, err, wires)
                                        : PyTuple_Pack(5, labels, e, c, k, err);
        Py_XDECREF(e);
        Py_XDECREF(c);
        Py_XDECREF(k);
    }
done:
    Py_XDECREF(labels);
    Py_XDECREF(wires);
    PyMem_Free(wb.v);
    Py_XDECREF(err);
    PyMem_Free(ends.v);
    PyMem_Free(nch.v);
    PyMem_Free(chk.v);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&st);
    return result;
}

/* ---- XXH64 (seed 0), as Thanos hashes chunk data (cespare/xxhash) ---- */
#define P1 11400714785074694791ULL
#define P2 14029467366897019727ULL
#define P3 1609587929392839161ULL
#define P4 9650029242287828579ULL
#define P5 2870177450012600261ULL

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; } /* little-endian hosts */
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t xround(uint64_t acc, uint64_t in) { acc += in * P2; acc = rotl(acc, 31); return acc * P1; }
static inline uint64_t xmerge(uint64_t acc, uint64_t v) { acc ^= xround(0, v); return acc * P1 + P4; }

static uint64_t xxh64(const uint8_t *p, Py_ssize_t n) {
    const uint8_t *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = (uint64_t)0 - P1;
        const uint8_t *lim = end - 32;
        do {
            v1 = xround(v1, rd64(p)); v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16)); v4 = xround(v4, rd64(p + 24));
            p += 32;
        } while (p <= lim);
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = xmerge(h, v1); h = xmerge(h, v2); h = xmerge(h, v3); h = xmerge(h, v4);
    } else {
        h = P5;
    }
    h += (uint64_t)n;
    while (p + 8 <= end) { h ^= xround(0, rd64(p)); h = rotl(h, 27) * P1 + P4; p += 8; }
    if (p + 4 <= end) { h ^= (uint64_t)rd32(p) * P1; h = rotl(h, 23) * P2 + P3; p += 4; }
    while (p < end) { h ^= (uint64_t)(*p) * P5; h = rotl(h, 11) * P1; p++; }
    h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
    return h;
}

static PyObject *py_xxh64(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    uint64_t h = xxh64(b.buf, b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(h);
}

/* raw_chunks(buf, mint, maxt, enc, offs, lens) -> list of ``chunks`` fields of a thanos.Series
 * (tag 0x12, length, AggrChunk message) with the chunk in ``raw`` (Chunk{type = encoding - 1, data, hash = xxh64(data)}), as the generated
 * serializer writes them; all but buf are int64 buffers of one length. Encodings other than 1..3
 * give None (the caller builds those: downsampled aggregate chunks). */
static PyObject *py_raw_chunks(PyObject *self, PyObject *args) {
    Py_buffer buf, a, z, e, o, l;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*", &buf, &a, &z, &e, &o, &l)) return NULL;
    PyObject *out = NULL;
    Buf w = {0};
    Py_ssize_t n = a.len / 8;
    if (a.len % 8 || z.len != a.len || e.len != a.len || o.len != a.len || l.len != a.len) {
        PyErr_SetString(PyExc_ValueError, "raw_chunks: int64 arrays of one length expected");
        goto end;
    }
    const int64_t *mi = a.buf, *ma = z.buf, *en = e.buf, *of = o.buf, *ln = l.buf;
    out = PyList_New(n);
    if (!out) goto end;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (en[i] < 1 || en[i] > 3) { Py_INCREF(Py_None); PyList_SET_ITEM(out, i, Py_None); continue; }
        if (of[i] < 0 || ln[i] < 0 || of[i] > buf.len - ln[i]) {
            PyErr_SetString(PyExc_ValueError, "raw_chunks: chunk outside the buffer");
            Py_CLEAR(out);
            goto end;
        }
        const uint8_t *d = (const uint8_t *)buf.buf + of[i];
        uint64_t h = xxh64(d, ln[i]);
        /* proto3: an empty data field is left out, as the generated serializer does */
        uint64_t inner = (ln[i] ? (uint64_t)(1 + uvarint_len((uint64_t)ln[i]) + ln[i]) : 0)
                       + (h ? (uint64_t)(1 + uvarint_len(h)) : 0) + (en[i] > 1 ? 2 : 0);
        uint64_t msg = (mi[i] ? (uint64_t)(1 + uvarint_len((uint64_t)mi[i])) : 0)
                     + (ma[i] ? (uint64_t)(1 + uvarint_len((uint64_t)ma[i])) : 0)
                     + 1 + (uint64_t)uvarint_len(inner) + inner;
        uint8_t t = 0x12;  /* the message as the ``chunks`` field (2) of a thanos.Series */
        w.n = 0;
        int bad = put(&w, &t, 1) || put_uvarint(&w, msg);
        if (mi[i]) { t = 0x08; bad |= put(&w, &t, 1) || put_uvarint(&w, (uint64_t)mi[i]); }
        if (ma[i]) { t = 0x10; bad |= put(&w, &t, 1) || put_uvarint(&w, (uint64_t)ma[i]); }
        t = 0x1a; bad |= put(&w, &t, 1) || put_uvarint(&w, inner);
        if (en[i] > 1) { uint8_t ty[2] = {0x08, (uint8_t)(en[i] - 1)}; bad |= put(&w, ty, 2); }
        if (ln[i]) { t = 0x12; bad |= put(&w, &t, 1) || put_uvarint(&w, (uint64_t)ln[i]) || put(&w, d, ln[i]); }
        if (h) { t = 0x18; bad |= put(&w, &t, 1) || put_uvarint(&w, h); }
        if (bad) { Py_CLEAR(out); goto end; }
        PyObject *bb = PyBytes_FromStringAndSize((const char *)w.v, w.n);
        if (!bb) { Py_CLEAR(out); goto end; }
        PyList_SET_ITEM(out, i, bb);
    }
end:
    PyMem_Free(w.v);
    PyBuffer_Release(&buf); PyBuffer_Release(&a); PyBuffer_Release(&z);
    PyBuffer_Release(&e); PyBuffer_Release(&o); PyBuffer_Release(&l);
    return out;
}

/* records(data, rels, base, size) -> (encodings, starts, lengths, error): the chunk records
 * ``uvarint(len) | encoding | data | CRC32C(BE) over encoding + data`` at positions ``rels``
 * (int64) of ``data``, which holds the segment file from offset ``base`` (file size ``size``).
 * Outputs are bytes holding int64[n]; a start of -1 means ``data`` ends before that record does
 * (the caller reads it alone). ``error``: None or (index, file offset, message). */
static PyObject *py_records(PyObject *self, PyObject *args) {
    Py_buffer d, r;
    Py_ssize_t base, size;
    if (!PyArg_ParseTuple(args, "y*y*nn", &d, &r, &base, &size)) return NULL;
    PyObject *res = NULL, *err = Py_None;
    Py_ssize_t n = r.len / 8, end = d.len;
    const uint8_t *b = d.buf;
    const int64_t *rel = r.buf;
    PyObject *e = PyBytes_FromStringAndSize(NULL, n * 8), *st = PyBytes_FromStringAndSize(NULL, n * 8),
             *ln = PyBytes_FromStringAndSize(NULL, n * 8);
    Py_INCREF(err);
    if (!e || !st || !ln) goto out;
    int64_t *E = (int64_t *)PyBytes_AS_STRING(e), *S = (int64_t *)PyBytes_AS_STRING(st), *L = (int64_t *)PyBytes_AS_STRING(ln);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t pos = (Py_ssize_t)rel[i], off = base + pos;
        uint64_t len;
        E[i] = 0; S[i] = -1; L[i] = 0;
        if (pos < 0 || pos > end) { Py_DECREF(err); err = Py_BuildValue("(nns)", i, off, "chunk position outside the read"); break; }
        Py_ssize_t p = pos;
        int u = uvarint(b, &p, end, &len);
        if (u) {
            Py_ssize_t lim = off + 5 < size ? off + 5 : size;
            if (u == -2 || base + end >= lim) {
                Py_DECREF(err);
                err = Py_BuildValue("(nns)", i, off, "truncated chunk record (length field)");
                break;
            }
            continue; /* needs more bytes */
        }
        if (len > (uint64_t)PY_SSIZE_T_MAX - 5 || size - base - p < 0 || (uint64_t)(size - base - p) < len + 5) {
            Py_DECREF(err);
            err = Py_BuildValue("(nns)", i, off, "truncated chunk record: data past the end of the file");
            break;
        }
        if ((uint64_t)(end - p) < len + 5) continue; /* needs more bytes */
        const uint8_t *q = b + p + 1 + len;
        uint32_t want = ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | q[3];
        uint32_t got = crc32c_value(b + p, (size_t)len + 1);
        if (got != want) {
            char msg[96];
            snprintf(msg, sizeof msg, "checksum mismatch: stored %08x, computed %08x", want, got);
            Py_DECREF(err);
            err = Py_BuildValue("(nns)", i, off, msg);
            break;
        }
        E[i] = b[p];
        S[i] = p + 1;
        L[i] = (int64_t)len;
    }
    if (err) res = PyTuple_Pack(4, e, st, ln, err);
out:
    Py_XDECREF(e); Py_XDECREF(st); Py_XDECREF(ln); Py_XDECREF(err);
    PyBuffer_Release(&d);
    PyBuffer_Release(&r);
    return res;
}

static PyMethodDef methods[] = {
    CRC32C_METHOD,
    {"records", py_records, METH_VARARGS,
     "records(data, rels, base, size) -> (encodings, starts, lengths, error) of chunk records"},
    {"xxh64", py_xxh64, METH_VARARGS, "xxh64(data) -> int: XXH64 with seed 0"},
    {"raw_chunks", py_raw_chunks, METH_VARARGS,
     "raw_chunks(buf, mint, maxt, encoding, offsets, lengths) -> list of Series.chunks fields (None: not raw)"},
    {"decode", py_decode, METH_VARARGS, "decode(buf, starts, limit, symbols, ext, remove) -> (labels, ends, nchunks, chunks, error)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_series", "Bulk decoding of index series entries.", -1, methods,
                                  NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__series(void) {
    crc32c_init();
    return PyModule_Create(&mod);
}
