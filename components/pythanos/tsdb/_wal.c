/*
 * Kernels of Prometheus' write-ahead log (pythanos/tsdb/wal.py, walrecords.py): page framing of
 * whole record batches, parsing of whole segments, and the array codecs of the record bodies.
 *
 * Layout facts (Prometheus tsdb/wlog, tsdb/record): 32 KiB pages; a fragment is a 7-byte header
 * (type byte: kind in bits 0-2, 0x08 snappy, 0x10 zstd; BE uint16 length; BE uint32 CRC-32C of
 * the fragment bytes) and its bytes; a page with fewer than 7 free bytes is zero-filled; kind 0
 * means "the rest of the page is zeros". Record bodies use Go's varints (zigzag for signed).
 *
 * Every input (a segment from disk, a record from a segment) is checked against its length
 * before it is read; counts in a record never size an allocation beyond what the record's bytes
 * can hold. Errors are ValueError(message, offset) with the offset inside the record or segment.
 * Sequences from Python are copied to tuples first: a conversion that runs Python code cannot
 * change them under the kernel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../_crc32c.h"

#define PAGE 32768
#define HDR 7

/* ---------------------------------------------------------------- growable output buffer */

typedef struct {
    uint8_t *v;
    size_t n, cap;
} Buf;

static int grow(Buf *w, size_t need) {
    if (w->n + need <= w->cap) return 0;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->n + need) {
        if (cap > ((size_t)PY_SSIZE_T_MAX) / 2) return -1;
        cap *= 2;
    }
    uint8_t *v = realloc(w->v, cap);
    if (!v) return -1;
    w->v = v;
    w->cap = cap;
    return 0;
}

static inline void put_raw(Buf *w, const void *p, size_t n) {
    memcpy(w->v + w->n, p, n);
    w->n += n;
}

static inline void put_be64(Buf *w, uint64_t x) {
    for (int i = 7; i >= 0; i--) w->v[w->n++] = (uint8_t)(x >> (8 * i));
}

static inline void put_uvarint(Buf *w, uint64_t x) {
    while (x >= 0x80) {
        w->v[w->n++] = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    w->v[w->n++] = (uint8_t)x;
}

static inline void put_varint(Buf *w, int64_t x) {
    put_uvarint(w, ((uint64_t)x << 1) ^ (uint64_t)(x >> 63));
}

static PyObject *buf_bytes(Buf *w) { return PyBytes_FromStringAndSize((const char *)w->v, (Py_ssize_t)w->n); }

/* *b cut to its first n bytes (a copy: only public API). */
static int shrink(PyObject **b, Py_ssize_t n) {
    if (PyBytes_GET_SIZE(*b) == n) return 0;
    PyObject *c = PyBytes_FromStringAndSize(PyBytes_AS_STRING(*b), n);
    if (!c) return -1;
    Py_DECREF(*b);
    *b = c;
    return 0;
}

/* ---------------------------------------------------------------- bounded reading */

typedef struct {
    const uint8_t *b;
    size_t n, p;
    const char *err; /* first error; p then points at the place */
    size_t err_at;
} Rd;

static inline void fail(Rd *r, const char *msg) {
    if (!r->err) {
        r->err = msg;
        r->err_at = r->p;
    }
}

static inline uint8_t get_byte(Rd *r) {
    if (r->err) return 0;
    if (r->p >= r->n) { fail(r, "unexpected end of record"); return 0; }
    return r->b[r->p++];
}

static inline uint64_t get_be64(Rd *r) {
    if (r->err) return 0;
    if (r->n - r->p < 8) { fail(r, "unexpected end of record"); return 0; }
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = (x << 8) | r->b[r->p + i];
    r->p += 8;
    return x;
}

/* Go's binary.Uvarint: at most 10 bytes, the 10th at most 1. */
static inline uint64_t get_uvarint(Rd *r) {
    if (r->err) return 0;
    uint64_t x = 0;
    unsigned s = 0;
    size_t start = r->p;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->n) { r->p = start; fail(r, "unexpected end of record in varint"); return 0; }
        uint8_t c = r->b[r->p++];
        if (c < 0x80) {
            if (i == 9 && c > 1) { r->p = start; fail(r, "varint overflows 64 bits"); return 0; }
            return x | ((uint64_t)c << s);
        }
        x |= (uint64_t)(c & 0x7f) << s;
        s += 7;
    }
    r->p = start;
    fail(r, "varint overflows 64 bits");
    return 0;
}

static inline int64_t get_varint(Rd *r) {
    uint64_t u = get_uvarint(r);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

/* A label set as the WAL writes it: uvarint count, then (uvarint len, bytes) for name and value. */
static void skip_labels(Rd *r) {
    uint64_t cnt = get_uvarint(r);
    if (r->err) return;
    if (cnt > (r->n - r->p) / 2) { fail(r, "label count larger than the record"); return; }
    for (uint64_t i = 0; i < 2 * cnt && !r->err; i++) {
        uint64_t l = get_uvarint(r);
        if (r->err) return;
        if (l > r->n - r->p) { fail(r, "label string past the end of the record"); return; }
        r->p += (size_t)l;
    }
}

static PyObject *rec_error(const char *msg, size_t at) {
    PyObject *e = Py_BuildValue("(sn)", msg, (Py_ssize_t)at);
    if (e) {
        PyErr_SetObject(PyExc_ValueError, e);
        Py_DECREF(e);
    }
    return NULL;
}

/* ---------------------------------------------------------------- framing */

/* Simulates (out == NULL) or writes the fragments of records [0, n) from page position
 * (*alloc, *done) on. Stops before a record that needs a new segment (unless it is the first
 * and `force`); returns how many were framed. */
static Py_ssize_t frame_run(Py_buffer *recs, const uint8_t *cflags, Py_ssize_t n, int force, Py_ssize_t pps,
                            Py_ssize_t *alloc, Py_ssize_t *done, uint8_t *out, size_t *outn, Py_ssize_t *frags) {
    Py_ssize_t a = *alloc, d = *done, f = 0;
    size_t o = 0;
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        if (PAGE - a < HDR) { /* page full: zero its tail */
            if (out) memset(out + o, 0, (size_t)(PAGE - a));
            o += (size_t)(PAGE - a);
            a = 0;
            d++;
        }
        const uint8_t *p = recs[i].buf;
        size_t len = (size_t)recs[i].len;
        long long left = (long long)(PAGE - a - HDR) + (long long)(PAGE - HDR) * (long long)(pps - d - 1);
        if ((long long)len > left && !(i == 0 && force)) break;
        for (int k = 0; k == 0 || len > 0; k++) {
            size_t room = (size_t)(PAGE - a - HDR);
            size_t l = len < room ? len : room;
            uint8_t typ = (k == 0 && l == len) ? 1 : (l == len) ? 4 : (k == 0) ? 2 : 3;
            typ |= cflags[i];
            if (out) {
                uint8_t *h = out + o;
                uint32_t c = crc32c_value(p, l);
                h[0] = typ;
                h[1] = (uint8_t)(l >> 8);
                h[2] = (uint8_t)l;
                h[3] = (uint8_t)(c >> 24);
                h[4] = (uint8_t)(c >> 16);
                h[5] = (uint8_t)(c >> 8);
                h[6] = (uint8_t)c;
                memcpy(h + HDR, p, l);
            }
            o += HDR + l;
            f++;
            a += (Py_ssize_t)(HDR + l);
            if (PAGE - a < HDR) {
                if (out) memset(out + o, 0, (size_t)(PAGE - a));
                o += (size_t)(PAGE - a);
                a = 0;
                d++;
            }
            p += l;
            len -= l;
        }
    }
    *alloc = a;
    *done = d;
    *outn = o;
    *frags = f;
    return i;
}

/* frame(records, cflags, alloc, done_pages, pages_per_segment, force) ->
 *   (bytes, framed, alloc, done_pages, fragments): the bytes to append to the segment file for
 *   the first `framed` records (the next one needs a new segment). */
static PyObject *py_frame(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_buffer fl;
    Py_ssize_t alloc, done, pps;
    int force;
    if (!PyArg_ParseTuple(args, "Oy*nnnp", &seq, &fl, &alloc, &done, &pps, &force)) return NULL;
    PyObject *fast = PySequence_Tuple(seq);
    if (!fast) { PyBuffer_Release(&fl); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), got = 0;
    PyObject *res = NULL;
    Py_buffer *bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (!bufs) { PyErr_NoMemory(); goto end; }
    if (fl.len != n) { PyErr_SetString(PyExc_ValueError, "frame: one compression flag per record"); goto end; }
    if (alloc < 0 || alloc > PAGE || pps < 1) { PyErr_SetString(PyExc_ValueError, "frame: bad page state"); goto end; }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, got), &bufs[got], PyBUF_SIMPLE) < 0) goto end;
    }
    Py_ssize_t a = alloc, d = done, frags = 0;
    size_t total;
    Py_ssize_t k = frame_run(bufs, fl.buf, n, force, pps, &a, &d, NULL, &total, &frags);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out) goto end;
    a = alloc;
    d = done;
    Py_BEGIN_ALLOW_THREADS
    frame_run(bufs, fl.buf, k, force, pps, &a, &d, (uint8_t *)PyBytes_AS_STRING(out), &total, &frags);
    Py_END_ALLOW_THREADS
    res = Py_BuildValue("(Nnnnn)", out, k, a, d, frags);
end:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    Py_DECREF(fast);
    PyBuffer_Release(&fl);
    return res;
}

/* ---------------------------------------------------------------- segment parsing */

typedef struct {
    Buf out;       /* record bytes, concatenated */
    Buf ends;      /* int64 end offset of each record in out */
    Buf offs;      /* int64 segment offset just past each record's last fragment */
    Buf flags;     /* compression flags of each record */
    size_t pos;    /* where parsing stopped (a record boundary or the error) */
    const char *err;
    size_t err_at;
    int oom;
} Parse;

static void parse_run(const uint8_t *b, size_t n, size_t pos, size_t max_out, Parse *s) {
    size_t rec_start = s->out.n; /* start of the record being assembled in out */
    int frag = 0;                /* fragments of the current record so far */
    int last_kind = 1;
    size_t rec_pos = pos;        /* segment offset where the current record began */
    while (pos < n) {
        uint8_t t = b[pos];
        int kind = t & 7;
        if (kind == 0) {
            /* a record continues on a new page with a middle or last fragment, never padding */
            if (frag && pos % PAGE == 0) {
                s->err = "zeroed page inside a record";
                s->err_at = pos;
                goto stop;
            }
            size_t end = (pos / PAGE + 1) * PAGE;
            if (end > n) end = n; /* a short last page reads as zero-padded */
            for (size_t q = pos + 1; q < end; q++) {
                if (b[q]) {
                    s->err = "unexpected non-zero byte in padded page";
                    s->err_at = q;
                    goto stop;
                }
            }
            pos = end;
            continue;
        }
        if (n - pos < HDR) {
            s->err = "fragment header past the end of the segment";
            s->err_at = pos;
            goto stop;
        }
        size_t len = ((size_t)b[pos + 1] << 8) | b[pos + 2];
        uint32_t want = ((uint32_t)b[pos + 3] << 24) | ((uint32_t)b[pos + 4] << 16) | ((uint32_t)b[pos + 5] << 8) | b[pos + 6];
        if (len > PAGE - HDR) {
            s->err = "invalid fragment length";
            s->err_at = pos;
            goto stop;
        }
        if (n - pos - HDR < len) {
            s->err = "fragment past the end of the segment (truncated)";
            s->err_at = pos;
            goto stop;
        }
        const uint8_t *d = b + pos + HDR;
        if (crc32c_value(d, len) != want) {
            s->err = "fragment checksum mismatch";
            s->err_at = pos;
            goto stop;
        }
        switch (kind) {
        case 1: if (frag) { s->err = "unexpected full fragment inside a record"; } break;
        case 2: if (frag) { s->err = "unexpected first fragment inside a record"; } break;
        case 3: if (!frag) { s->err = "unexpected middle fragment without a first"; } break;
        case 4: if (!frag) { s->err = "unexpected last fragment without a first"; } break;
        default: s->err = "unknown fragment type"; break;
        }
        if (s->err) { s->err_at = pos; goto stop; }
        if (!frag) rec_pos = pos;
        if (grow(&s->out, len)) { s->oom = 1; goto stop; }
        put_raw(&s->out, d, len);
        pos += HDR + len;
        frag++;
        last_kind = kind;
        if (kind == 1 || kind == 4) {
            if (grow(&s->ends, 8) || grow(&s->offs, 8) || grow(&s->flags, 1)) { s->oom = 1; goto stop; }
            int64_t e = (int64_t)s->out.n, o = (int64_t)pos;
            put_raw(&s->ends, &e, 8);
            put_raw(&s->offs, &o, 8);
            uint8_t f = t & 0x18;
            put_raw(&s->flags, &f, 1);
            frag = 0;
            rec_start = s->out.n;
            s->pos = pos;
            if (s->out.n >= max_out) return;
        }
    }
    if (frag && (last_kind == 2 || last_kind == 3)) {
        s->err = "last record is torn";
        s->err_at = rec_pos;
        goto stop;
    }
    s->pos = pos;
    return;
stop:
    s->out.n = rec_start; /* drop the incomplete record */
    (void)rec_pos;
}

/* parse(segment, start, max_out) -> (payload, ends, offsets, flags, pos, error): the records of
 * the segment bytes from offset `start` (a record boundary) on, until at least max_out payload
 * bytes are out or the end. ends/offsets: int64 arrays (record end in payload, segment offset past
 * the record); flags: compression bits per record; error: None or (offset, message). */
static PyObject *py_parse(PyObject *self, PyObject *args) {
    Py_buffer seg;
    Py_ssize_t start, max_out;
    if (!PyArg_ParseTuple(args, "y*nn", &seg, &start, &max_out)) return NULL;
    if (start < 0 || start > seg.len || max_out < 0) {
        PyBuffer_Release(&seg);
        PyErr_SetString(PyExc_ValueError, "parse: start outside the segment");
        return NULL;
    }
    Parse s;
    memset(&s, 0, sizeof s);
    s.pos = (size_t)start;
    Py_BEGIN_ALLOW_THREADS
    parse_run(seg.buf, (size_t)seg.len, (size_t)start, (size_t)max_out, &s);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&seg);
    PyObject *res = NULL;
    if (s.oom) {
        PyErr_NoMemory();
    } else {
        PyObject *err;
        if (s.err) err = Py_BuildValue("(ns)", (Py_ssize_t)s.err_at, s.err);
        else { err = Py_None; Py_INCREF(err); }
        if (err)
            res = Py_BuildValue("(y#y#y#y#nN)", s.out.v ? (const char *)s.out.v : "", (Py_ssize_t)s.out.n,
                                s.ends.v ? (const char *)s.ends.v : "", (Py_ssize_t)s.ends.n,
                                s.offs.v ? (const char *)s.offs.v : "", (Py_ssize_t)s.offs.n,
                                s.flags.v ? (const char *)s.flags.v : "", (Py_ssize_t)s.flags.n,
                                (Py_ssize_t)(s.err ? s.err_at : s.pos), err);
    }
    free(s.out.v); free(s.ends.v); free(s.offs.v); free(s.flags.v);
    return res;
}

/* ---------------------------------------------------------------- samples and exemplars */

/* encode_samples(type, refs, ts, vs, blobs) -> record: type byte, first ref and time (BE64), then
 * per sample zigzag varint deltas of ref and time against the FIRST sample and the value bits
 * (BE64); exemplars (blobs not None) add each one's label blob. refs/ts int64, vs float64. */
static PyObject *py_encode_samples(PyObject *self, PyObject *args) {
    int typ;
    Py_buffer r, t, v;
    PyObject *blobs;
    if (!PyArg_ParseTuple(args, "iy*y*y*O", &typ, &r, &t, &v, &blobs)) return NULL;
    PyObject *res = NULL, *fast = NULL;
    Buf w = {0};
    Py_ssize_t n = r.len / 8;
    if (r.len % 8 || t.len != r.len || v.len != r.len) {
        PyErr_SetString(PyExc_ValueError, "encode_samples: arrays of one length expected");
        goto end;
    }
    if (blobs != Py_None) {
        fast = PySequence_Tuple(blobs);
        if (!fast) goto end;
        if (PySequence_Fast_GET_SIZE(fast) != n) {
            PyErr_SetString(PyExc_ValueError, "encode_samples: one label blob per exemplar");
            goto end;
        }
    }
    const int64_t *R = r.buf, *T = t.buf;
    const uint64_t *V = v.buf;
    size_t extra = 0;
    if (fast) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
            if (!PyBytes_Check(o)) { PyErr_SetString(PyExc_TypeError, "encode_samples: label blobs must be bytes"); goto end; }
            extra += (size_t)PyBytes_GET_SIZE(o);
        }
    }
    if (grow(&w, 1 + 16 + (size_t)n * 28 + extra)) { PyErr_NoMemory(); goto end; }
    w.v[w.n++] = (uint8_t)typ;
    if (n) {
        put_be64(&w, (uint64_t)R[0]);
        put_be64(&w, (uint64_t)T[0]);
        if (!fast) {
            Py_BEGIN_ALLOW_THREADS
            for (Py_ssize_t i = 0; i < n; i++) {
                put_varint(&w, (int64_t)((uint64_t)R[i] - (uint64_t)R[0]));
                put_varint(&w, (int64_t)((uint64_t)T[i] - (uint64_t)T[0]));
                put_be64(&w, V[i]);
            }
            Py_END_ALLOW_THREADS
        } else {
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
                put_varint(&w, (int64_t)((uint64_t)R[i] - (uint64_t)R[0]));
                put_varint(&w, (int64_t)((uint64_t)T[i] - (uint64_t)T[0]));
                put_be64(&w, V[i]);
                put_raw(&w, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
            }
        }
    }
    res = buf_bytes(&w);
end:
    free(w.v);
    Py_XDECREF(fast);
    PyBuffer_Release(&r); PyBuffer_Release(&t); PyBuffer_Release(&v);
    return res;
}

/* decode_samples(record, with_labels) -> (refs, ts, vs, blobs|None) as bytes of int64/int64/float64. */
static PyObject *py_decode_samples(PyObject *self, PyObject *args) {
    Py_buffer rec;
    int with_labels;
    if (!PyArg_ParseTuple(args, "y*p", &rec, &with_labels)) return NULL;
    PyObject *res = NULL, *blobs = NULL, *pr = NULL, *pt = NULL, *pv = NULL;
    Rd r = {rec.buf, (size_t)rec.len, 1, NULL, 0};
    if (rec.len < 1) { rec_error("empty record", 0); goto end; }
    size_t body = (size_t)rec.len - 1;
    /* a sample takes at least 10 bytes (two 1-byte varints and the value): the bound of the count */
    size_t cap = body >= 16 ? (body - 16) / 10 : 0;
    pr = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap * 8);
    pt = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap * 8);
    pv = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap * 8);
    if (!pr || !pt || !pv) goto end;
    if (with_labels && !(blobs = PyList_New(0))) goto end;
    int64_t *R = (int64_t *)PyBytes_AS_STRING(pr), *T = (int64_t *)PyBytes_AS_STRING(pt);
    uint64_t *V = (uint64_t *)PyBytes_AS_STRING(pv);
    size_t k = 0;
    if (body > 0) {
        uint64_t r0 = get_be64(&r), t0 = get_be64(&r);
        if (!with_labels) {
            Py_BEGIN_ALLOW_THREADS
            while (r.p < r.n && !r.err) {
                int64_t dr = get_varint(&r), dt = get_varint(&r);
                uint64_t v = get_be64(&r);
                if (r.err) break;
                if (k >= cap) { fail(&r, "more samples than the record can hold"); break; } /* >= 10 bytes each */
                R[k] = (int64_t)(r0 + (uint64_t)dr);
                T[k] = (int64_t)(t0 + (uint64_t)dt);
                V[k] = v;
                k++;
            }
            Py_END_ALLOW_THREADS
        } else {
            while (r.p < r.n && !r.err) {
                int64_t dr = get_varint(&r), dt = get_varint(&r);
                uint64_t v = get_be64(&r);
                size_t ls = r.p;
                skip_labels(&r);
                if (r.err) break;
                if (k >= cap) { fail(&r, "more exemplars than the record can hold"); break; }
                PyObject *bl = PyBytes_FromStringAndSize((const char *)r.b + ls, (Py_ssize_t)(r.p - ls));
                if (!bl || PyList_Append(blobs, bl) < 0) { Py_XDECREF(bl); goto end; }
                Py_DECREF(bl);
                R[k] = (int64_t)(r0 + (uint64_t)dr);
                T[k] = (int64_t)(t0 + (uint64_t)dt);
                V[k] = v;
                k++;
            }
        }
        if (!r.err && r.p < r.n) fail(&r, "bytes left over after the last sample");
        if (r.err) { rec_error(r.err, r.err_at); goto end; }
    }
    if (shrink(&pr, (Py_ssize_t)k * 8) < 0 || shrink(&pt, (Py_ssize_t)k * 8) < 0 ||
        shrink(&pv, (Py_ssize_t)k * 8) < 0)
        goto end;
    res = PyTuple_Pack(4, pr, pt, pv, blobs ? blobs : Py_None);
end:
    Py_XDECREF(pr); Py_XDECREF(pt); Py_XDECREF(pv); Py_XDECREF(blobs);
    PyBuffer_Release(&rec);
    return res;
}

/* decode_samples_many(records) -> (refs, ts, vs, counts): many Samples records at once (replay
 * of a WAL of small commits), concatenated; counts: int64 samples per record. Errors are
 * ValueError(message, offset, record index). */
static PyObject *py_decode_samples_many(PyObject *self, PyObject *args) {
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "O", &seq)) return NULL;
    PyObject *fast = PySequence_Tuple(seq);
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), got = 0;
    PyObject *res = NULL, *pr = NULL, *pt = NULL, *pv = NULL, *pc = NULL;
    Py_buffer *bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (!bufs) { PyErr_NoMemory(); goto end; }
    size_t cap = 0;
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, got), &bufs[got], PyBUF_SIMPLE) < 0) goto end;
        size_t body = bufs[got].len > 0 ? (size_t)bufs[got].len - 1 : 0;
        cap += body >= 16 ? (body - 16) / 10 : 0;
    }
    pr = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap * 8);
    pt = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap * 8);
    pv = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap * 8);
    pc = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!pr || !pt || !pv || !pc) goto end;
    int64_t *R = (int64_t *)PyBytes_AS_STRING(pr), *T = (int64_t *)PyBytes_AS_STRING(pt);
    uint64_t *V = (uint64_t *)PyBytes_AS_STRING(pv);
    int64_t *C = (int64_t *)PyBytes_AS_STRING(pc);
    size_t k = 0;
    Py_ssize_t bad = -1;
    Rd r = {0};
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
        r = (Rd){bufs[i].buf, (size_t)bufs[i].len, 1, NULL, 0};
        size_t k0 = k;
        if (r.n < 1 || r.b[0] != 2) { r.p = 0; fail(&r, "not a samples record"); bad = i; break; }
        if (r.n > 1) {
            uint64_t r0 = get_be64(&r), t0 = get_be64(&r);
            while (r.p < r.n && !r.err) {
                int64_t dr = get_varint(&r), dt = get_varint(&r);
                uint64_t v = get_be64(&r);
                if (r.err) break;
                if (k >= cap) { fail(&r, "more samples than the record can hold"); break; } /* >= 10 bytes each */
                R[k] = (int64_t)(r0 + (uint64_t)dr);
                T[k] = (int64_t)(t0 + (uint64_t)dt);
                V[k] = v;
                k++;
            }
            if (!r.err && r.p < r.n) fail(&r, "bytes left over after the last sample");
            if (r.err) { bad = i; break; }
        }
        C[i] = (int64_t)(k - k0);
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        PyObject *e = Py_BuildValue("(snn)", r.err, (Py_ssize_t)r.err_at, bad);
        if (e) { PyErr_SetObject(PyExc_ValueError, e); Py_DECREF(e); }
        goto end;
    }
    if (shrink(&pr, (Py_ssize_t)k * 8) < 0 || shrink(&pt, (Py_ssize_t)k * 8) < 0 ||
        shrink(&pv, (Py_ssize_t)k * 8) < 0)
        goto end;
    res = PyTuple_Pack(4, pr, pt, pv, pc);
end:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    Py_XDECREF(pr); Py_XDECREF(pt); Py_XDECREF(pv); Py_XDECREF(pc);
    Py_DECREF(fast);
    return res;
}

/* ---------------------------------------------------------------- series */

/* encode_series(refs, blobs) -> record: type 1, per series ref (BE64) and its label blob. */
static PyObject *py_encode_series(PyObject *self, PyObject *args) {
    Py_buffer r;
    PyObject *blobs;
    if (!PyArg_ParseTuple(args, "y*O", &r, &blobs)) return NULL;
    PyObject *res = NULL, *fast = PySequence_Tuple(blobs);
    Buf w = {0};
    if (!fast) goto end;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (r.len != n * 8) { PyErr_SetString(PyExc_ValueError, "encode_series: one ref per blob"); goto end; }
    size_t total = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyBytes_Check(o)) { PyErr_SetString(PyExc_TypeError, "encode_series: label blobs must be bytes"); goto end; }
        total += 8 + (size_t)PyBytes_GET_SIZE(o);
    }
    if (grow(&w, total)) { PyErr_NoMemory(); goto end; }
    w.v[w.n++] = 1;
    const uint64_t *R = r.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        put_be64(&w, R[i]);
        put_raw(&w, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
    }
    res = buf_bytes(&w);
end:
    free(w.v);
    Py_XDECREF(fast);
    PyBuffer_Release(&r);
    return res;
}

/* decode_series(record) -> (refs bytes of uint64, list of label blobs). */
static PyObject *py_decode_series(PyObject *self, PyObject *args) {
    Py_buffer rec;
    if (!PyArg_ParseTuple(args, "y*", &rec)) return NULL;
    PyObject *res = NULL, *refs = NULL, *blobs = NULL;
    Rd r = {rec.buf, (size_t)rec.len, 1, NULL, 0};
    if (rec.len < 1) { rec_error("empty record", 0); goto end; }
    size_t cap = ((size_t)rec.len - 1) / 9; /* a series takes at least 9 bytes */
    refs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap * 8);
    blobs = PyList_New(0);
    if (!refs || !blobs) goto end;
    uint64_t *R = (uint64_t *)PyBytes_AS_STRING(refs);
    size_t k = 0;
    while (r.p < r.n && !r.err) {
        uint64_t ref = get_be64(&r);
        size_t ls = r.p;
        skip_labels(&r);
        if (r.err) break;
        if (k >= cap) { fail(&r, "more series than the record can hold"); break; } /* cannot happen: >= 9 bytes each */
        PyObject *bl = PyBytes_FromStringAndSize((const char *)r.b + ls, (Py_ssize_t)(r.p - ls));
        if (!bl || PyList_Append(blobs, bl) < 0) { Py_XDECREF(bl); goto end; }
        Py_DECREF(bl);
        R[k++] = ref;
    }
    if (!r.err && r.p < r.n) fail(&r, "bytes left over after the last series");
    if (r.err) { rec_error(r.err, r.err_at); goto end; }
    if (shrink(&refs, (Py_ssize_t)k * 8) < 0) goto end;
    res = PyTuple_Pack(2, refs, blobs);
end:
    Py_XDECREF(refs); Py_XDECREF(blobs);
    PyBuffer_Release(&rec);
    return res;
}

/* ---------------------------------------------------------------- histograms */

/* Reads n items of one kind into a new tuple: 0 = span (varint offset, uvarint length) pairs,
 * 1 = varints, 2 = BE64 floats. The count is bounded by the bytes left (each item >= 1 byte). */
static PyObject *read_list(Rd *r, int kind) {
    uint64_t cnt = get_uvarint(r);
    if (r->err) return NULL;
    size_t min = kind == 0 ? 2 : kind == 1 ? 1 : 8;
    if (cnt > (r->n - r->p) / min) { fail(r, "count larger than the record"); return NULL; }
    PyObject *t = PyTuple_New((Py_ssize_t)cnt);
    if (!t) return NULL;
    for (uint64_t i = 0; i < cnt; i++) {
        PyObject *o;
        if (kind == 0) {
            int64_t off = get_varint(r);
            uint64_t len = get_uvarint(r);
            if (!r->err && len > 0xFFFFFFFFull) fail(r, "span length overflows 32 bits");
            o = r->err ? NULL : Py_BuildValue("(LK)", (long long)off, (unsigned long long)len);
        } else if (kind == 1) {
            int64_t x = get_varint(r);
            o = r->err ? NULL : PyLong_FromLongLong(x);
        } else {
            uint64_t x = get_be64(r);
            double f;
            memcpy(&f, &x, 8);
            o = r->err ? NULL : PyFloat_FromDouble(f);
        }
        if (!o) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, o);
    }
    return t;
}

static inline double bits_f(uint64_t x) { double f; memcpy(&f, &x, 8); return f; }

/* decode_histograms(record, is_float) -> list of tuples
 *   (ref, t, hint, schema, zero_threshold, zero_count, count, sum, pos_spans, neg_spans,
 *    pos_buckets, neg_buckets, custom_values|None); buckets are ints (deltas) or floats. */
static PyObject *py_decode_histograms(PyObject *self, PyObject *args) {
    Py_buffer rec;
    int isf;
    if (!PyArg_ParseTuple(args, "y*p", &rec, &isf)) return NULL;
    PyObject *out = PyList_New(0);
    Rd r = {rec.buf, (size_t)rec.len, 1, NULL, 0};
    if (!out) goto end;
    if (rec.len < 1) { rec_error("empty record", 0); Py_CLEAR(out); goto end; }
    if (rec.len > 1) {
        uint64_t r0 = get_be64(&r), t0 = get_be64(&r);
        while (r.p < r.n && !r.err) {
            int64_t dr = get_varint(&r), dt = get_varint(&r);
            uint8_t hint = get_byte(&r);
            int64_t schema = get_varint(&r);
            double zt = bits_f(get_be64(&r));
            PyObject *zc, *cnt;
            if (isf) {
                double a = bits_f(get_be64(&r)), b = bits_f(get_be64(&r));
                zc = PyFloat_FromDouble(a);
                cnt = PyFloat_FromDouble(b);
            } else {
                uint64_t a = get_uvarint(&r), b = get_uvarint(&r);
                zc = PyLong_FromUnsignedLongLong(a);
                cnt = PyLong_FromUnsignedLongLong(b);
            }
            double sum = bits_f(get_be64(&r));
            PyObject *ps = NULL, *ns = NULL, *pb = NULL, *nb = NULL, *cv = NULL, *item = NULL;
            if (!r.err) ps = read_list(&r, 0);
            if (ps) ns = read_list(&r, 0);
            if (ns) pb = read_list(&r, isf ? 2 : 1);
            if (pb) nb = read_list(&r, isf ? 2 : 1);
            if (nb) {
                if (schema == -53) cv = read_list(&r, 2);
                else { cv = Py_None; Py_INCREF(cv); }
            }
            if (cv && zc && cnt)
                item = Py_BuildValue("(KLiLdOOdOOOOO)", (unsigned long long)(r0 + (uint64_t)dr), (long long)(t0 + (uint64_t)dt),
                                     (int)hint, (long long)schema, zt, zc, cnt, sum, ps, ns, pb, nb, cv);
            Py_XDECREF(zc); Py_XDECREF(cnt); Py_XDECREF(ps); Py_XDECREF(ns); Py_XDECREF(pb); Py_XDECREF(nb); Py_XDECREF(cv);
            if (!item) {
                if (!PyErr_Occurred() && !r.err) fail(&r, "bad histogram");
                break;
            }
            int bad = PyList_Append(out, item);
            Py_DECREF(item);
            if (bad < 0) break;
        }
    }
    if (PyErr_Occurred()) { Py_CLEAR(out); goto end; }
    if (r.err) { rec_error(r.err, r.err_at); Py_CLEAR(out); }
end:
    PyBuffer_Release(&rec);
    return out;
}

static int put_list(Buf *w, PyObject *seq, int kind) {
    PyObject *fast = PySequence_Tuple(seq);
    if (!fast) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (grow(w, 10 + (size_t)n * 20)) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
    put_uvarint(w, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        if (kind == 0) {
            long long off;
            unsigned long long len;
            if (!PyArg_ParseTuple(o, "LK", &off, &len)) { Py_DECREF(fast); return -1; }
            put_varint(w, off);
            put_uvarint(w, len & 0xFFFFFFFFull);
        } else if (kind == 1) {
            long long x = PyLong_AsLongLong(o);
            if (x == -1 && PyErr_Occurred()) { Py_DECREF(fast); return -1; }
            put_varint(w, x);
        } else {
            double f = PyFloat_AsDouble(o);
            if (f == -1.0 && PyErr_Occurred()) { Py_DECREF(fast); return -1; }
            uint64_t x;
            memcpy(&x, &f, 8);
            put_be64(w, x);
        }
    }
    Py_DECREF(fast);
    return 0;
}

static inline uint64_t f_bits(double f) { uint64_t x; memcpy(&x, &f, 8); return x; }

/* encode_histograms(type, is_float, items) -> record; items as decode_histograms gives them. */
static PyObject *py_encode_histograms(PyObject *self, PyObject *args) {
    int typ, isf;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "ipO", &typ, &isf, &items)) return NULL;
    PyObject *fast = PySequence_Tuple(items);
    if (!fast) return NULL;
    Buf w = {0};
    PyObject *res = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (grow(&w, 17)) { PyErr_NoMemory(); goto end; }
    w.v[w.n++] = (uint8_t)typ;
    unsigned long long r0 = 0;
    long long t0 = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long ref;
        long long t, schema;
        int hint;
        double zt, sum;
        PyObject *zc, *cnt, *ps, *ns, *pb, *nb, *cv;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "KLiLdOOdOOOOO", &ref, &t, &hint, &schema, &zt, &zc,
                              &cnt, &sum, &ps, &ns, &pb, &nb, &cv))
            goto end;
        if (i == 0) {
            r0 = ref;
            t0 = t;
            put_be64(&w, (uint64_t)r0);
            put_be64(&w, (uint64_t)t0);
        }
        if (grow(&w, 80)) { PyErr_NoMemory(); goto end; }
        put_varint(&w, (int64_t)(ref - r0));
        put_varint(&w, (int64_t)((uint64_t)t - (uint64_t)t0));
        w.v[w.n++] = (uint8_t)hint;
        put_varint(&w, schema);
        put_be64(&w, f_bits(zt));
        if (isf) {
            double a = PyFloat_AsDouble(zc), b = PyFloat_AsDouble(cnt);
            if (PyErr_Occurred()) goto end;
            put_be64(&w, f_bits(a));
            put_be64(&w, f_bits(b));
        } else {
            unsigned long long a = PyLong_AsUnsignedLongLong(zc), b = PyLong_AsUnsignedLongLong(cnt);
            if (PyErr_Occurred()) goto end;
            put_uvarint(&w, a);
            put_uvarint(&w, b);
        }
        put_be64(&w, f_bits(sum));
        if (put_list(&w, ps, 0) || put_list(&w, ns, 0) || put_list(&w, pb, isf ? 2 : 1) || put_list(&w, nb, isf ? 2 : 1))
            goto end;
        if (schema == -53) {
            if (cv == Py_None) { PyErr_SetString(PyExc_ValueError, "custom-bucket histogram without custom values"); goto end; }
            if (put_list(&w, cv, 2)) goto end;
        }
    }
    res = buf_bytes(&w);
end:
    free(w.v);
    Py_DECREF(fast);
    return res;
}

/* ---------------------------------------------------------------- small helpers */

/* labels_blob(pairs) -> blob; blob_labels(blob) -> tuple of (name, value) str pairs. */
static PyObject *py_blob_labels(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    Rd r = {b.buf, (size_t)b.len, 0, NULL, 0};
    PyObject *out = NULL;
    uint64_t cnt = get_uvarint(&r);
    if (!r.err && cnt > (r.n - r.p) / 2) fail(&r, "label count larger than the blob");
    if (r.err) { rec_error(r.err, r.err_at); goto end; }
    out = PyTuple_New((Py_ssize_t)cnt);
    if (!out) goto end;
    for (uint64_t i = 0; i < cnt; i++) {
        PyObject *s[2] = {NULL, NULL};
        for (int j = 0; j < 2; j++) {
            uint64_t l = get_uvarint(&r);
            if (!r.err && l > r.n - r.p) fail(&r, "label string past the end of the blob");
            if (r.err) break;
            s[j] = PyUnicode_DecodeUTF8((const char *)r.b + r.p, (Py_ssize_t)l, "surrogateescape");
            r.p += (size_t)l;
            if (!s[j]) break;
        }
        if (!s[0] || !s[1]) {
            Py_XDECREF(s[0]); Py_XDECREF(s[1]);
            if (r.err) rec_error(r.err, r.err_at);
            Py_CLEAR(out);
            goto end;
        }
        PyTuple_SET_ITEM(out, (Py_ssize_t)i, PyTuple_Pack(2, s[0], s[1]));
        Py_DECREF(s[0]); Py_DECREF(s[1]);
        if (!PyTuple_GET_ITEM(out, (Py_ssize_t)i)) { Py_CLEAR(out); goto end; }
    }
    if (r.p != r.n) { rec_error("bytes left over after the labels", r.p); Py_CLEAR(out); }
end:
    PyBuffer_Release(&b);
    return out;
}

static PyMethodDef methods[] = {
    CRC32C_METHOD,
    {"frame", py_frame, METH_VARARGS,
     "frame(records, cflags, alloc, done_pages, pages_per_segment, force) -> (bytes, framed, alloc, done_pages, fragments)"},
    {"parse", py_parse, METH_VARARGS, "parse(segment, start, max_out) -> (payload, ends, offsets, flags, pos, error)"},
    {"encode_samples", py_encode_samples, METH_VARARGS, "encode_samples(type, refs, ts, vs, blobs|None) -> record"},
    {"decode_samples", py_decode_samples, METH_VARARGS, "decode_samples(record, with_labels) -> (refs, ts, vs, blobs|None)"},
    {"decode_samples_many", py_decode_samples_many, METH_VARARGS,
     "decode_samples_many(records) -> (refs, ts, vs, counts) of many Samples records"},
    {"encode_series", py_encode_series, METH_VARARGS, "encode_series(refs, blobs) -> record"},
    {"decode_series", py_decode_series, METH_VARARGS, "decode_series(record) -> (refs, blobs)"},
    {"decode_histograms", py_decode_histograms, METH_VARARGS, "decode_histograms(record, is_float) -> list of tuples"},
    {"encode_histograms", py_encode_histograms, METH_VARARGS, "encode_histograms(type, is_float, items) -> record"},
    {"blob_labels", py_blob_labels, METH_VARARGS, "blob_labels(blob) -> tuple of (name, value)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_wal", "Prometheus WAL framing and record codecs.", -1, methods,
                                  NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__wal(void) {
    crc32c_init();
    return PyModule_Create(&mod);
}
