/* Prometheus remote-read STREAMED_XOR_CHUNKS frames -> Thanos ``Series`` wire pieces (C kernel).
 *
 * transcode(msg, base=0, cls=None, wire=False) -> list
 *     ``msg`` is one (or several concatenated) ``prometheus.ChunkedReadResponse`` message(s).
 * transcode_frames(buf, base=0, max_frame=50000000, cls=None, wire=False) -> (consumed, list)
 *     ``buf`` holds frames (uvarint length, CRC32C big-endian, message); every complete frame is
 *     checked and transcoded; ``consumed`` is the number of bytes they took (the caller drops
 *     them; an incomplete trailing frame is left for later). ``base`` is the stream offset of
 *     ``buf[0]`` (error messages).
 *
 * The list holds one item per series: ``cls((labels, chunks))`` built directly as a tuple
 * subclass of size 2 (``cls`` a NamedTuple such as ``RawSeries``) or a plain 2-tuple; with
 * ``wire=True`` a third item, the whole ``thanos.Series`` message with these labels unchanged. ``labels``
 * is a tuple of ``(name, value)`` str pairs, ``chunks`` the ``chunks`` fields of a
 * ``thanos.Series`` (for each prometheus Chunk: 0x12 len AggrChunk{min_time = 1, max_time = 2,
 * raw = 3 Chunk{type = 1 (prometheus type - 1), data = 2}}, zero values left out, ``raw``
 * always present), byte for byte what ``sidecar.store.ChunkTranscoder`` writes. Consecutive
 * series with equal labels (Prometheus splits big series over frames) are merged.
 *
 * Malformed input raises ValueError (attributes ``what`` and ``offset``, the stream byte offset);
 * every read is bounds-checked. The parse runs without the GIL; only the Python objects are
 * built with it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../_crc32c.h"

/* ------------------------------------------------------------------------------ state */

typedef struct {
    const uint8_t *n, *v;
    size_t nl, vl;
} Lbl;

typedef struct {
    size_t lbl0, nlbl; /* labels[lbl0 : lbl0 + nlbl] */
    size_t off, len;   /* out[off : off + len] */
} Ser;

typedef struct {
    const uint8_t *start; /* buffer start; offsets are start-relative + base */
    long long base;
    Lbl *lbls;
    size_t nl, capl;
    Ser *sers;
    size_t ns, caps;
    uint8_t *out;
    size_t on, capo;
    int err; /* 0 none, 1 frame error, 2 message error, 3 out of memory */
    char what[160];
    long long erroff;
} St;

static void st_free(St *s) {
    free(s->lbls);
    free(s->sers);
    free(s->out);
}

static int fail(St *s, int kind, const uint8_t *at, const char *what) {
    s->err = kind;
    snprintf(s->what, sizeof s->what, "%s", what);
    s->erroff = s->base + (long long)(at - s->start);
    return -1;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > ((size_t)-1) / 4 / elem) return -1;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

#define NOMEM(s) ((s)->err = 3, -1)

/* ------------------------------------------------------------------------------ protobuf */

/* 0 ok; -1 truncated; -2 longer than 10 bytes */
static inline int rd_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v) {
    const uint8_t *p = *pp;
    uint64_t r = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) return -1;
        uint8_t b = *p++;
        r |= (uint64_t)(b & 0x7F) << (7 * i);
        if (b < 0x80) {
            *v = r;
            *pp = p;
            return 0;
        }
    }
    return -2;
}

static inline size_t vlen(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *wr_varint(uint8_t *o, uint64_t v) {
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

/* read a key; 0 ok, -1 error (set) */
static int rd_key(St *s, const uint8_t **pp, const uint8_t *end, uint64_t *field, int *wt, const char *msg) {
    const uint8_t *at = *pp;
    uint64_t k;
    int r = rd_varint(pp, end, &k);
    if (r) {
        char w[120];
        snprintf(w, sizeof w, "%s: %s field key", msg, r == -1 ? "truncated" : "over-long");
        return fail(s, 2, at, w);
    }
    *field = k >> 3;
    *wt = (int)(k & 7);
    if (*field == 0 || *field > 0x1FFFFFFF) {
        char w[120];
        snprintf(w, sizeof w, "%s: invalid field number %llu", msg, (unsigned long long)*field);
        return fail(s, 2, at, w);
    }
    return 0;
}

/* value of wire type wt: varint -> *v; length-delimited -> *d, *dl; others skipped. */
static int rd_value(St *s, const uint8_t **pp, const uint8_t *end, int wt, uint64_t *v, const uint8_t **d,
                    size_t *dl, const char *msg) {
    const uint8_t *at = *pp;
    char w[120];
    int r;
    switch (wt) {
    case 0:
        r = rd_varint(pp, end, v);
        if (r) {
            snprintf(w, sizeof w, "%s: %s varint", msg, r == -1 ? "truncated" : "over-long");
            return fail(s, 2, at, w);
        }
        return 0;
    case 1:
        if ((size_t)(end - *pp) < 8) goto trunc;
        *pp += 8;
        return 0;
    case 5:
        if ((size_t)(end - *pp) < 4) goto trunc;
        *pp += 4;
        return 0;
    case 2: {
        uint64_t n;
        r = rd_varint(pp, end, &n);
        if (r) {
            snprintf(w, sizeof w, "%s: %s length", msg, r == -1 ? "truncated" : "over-long");
            return fail(s, 2, at, w);
        }
        if (n > (uint64_t)(end - *pp)) goto trunc;
        *d = *pp;
        *dl = (size_t)n;
        *pp += n;
        return 0;
    }
    default:
        snprintf(w, sizeof w, "%s: unsupported wire type %d", msg, wt);
        return fail(s, 2, at, w);
    }
trunc:
    snprintf(w, sizeof w, "%s: truncated field (wire type %d)", msg, wt);
    return fail(s, 2, at, w);
}

/* prometheus.Chunk -> 0x12 len AggrChunk appended to out */
static int do_chunk(St *s, const uint8_t *p, const uint8_t *end) {
    uint64_t mint = 0, maxt = 0, typ = 0;
    const uint8_t *data = NULL;
    size_t dlen = 0;
    while (p < end) {
        uint64_t f, v = 0;
        int wt;
        const uint8_t *d = NULL;
        size_t dl = 0;
        if (rd_key(s, &p, end, &f, &wt, "Chunk") || rd_value(s, &p, end, wt, &v, &d, &dl, "Chunk")) return -1;
        if (wt == 0) {
            if (f == 1) mint = v;
            else if (f == 2) maxt = v;
            else if (f == 3) typ = v;
        } else if (wt == 2 && f == 4) {
            data = d;
            dlen = dl;
        }
    }
    int32_t t = (int32_t)(uint32_t)typ; /* enum: int32 */
    uint64_t tv = (uint64_t)((int64_t)t - 1);
    size_t rawlen = (t != 1 ? 1 + vlen(tv) : 0) + (dlen ? 1 + vlen(dlen) + dlen : 0);
    size_t aclen = (mint ? 1 + vlen(mint) : 0) + (maxt ? 1 + vlen(maxt) : 0) + 1 + vlen(rawlen) + rawlen;
    size_t total = 1 + vlen(aclen) + aclen;
    if (grow((void **)&s->out, &s->capo, s->on + total, 1)) return NOMEM(s);
    uint8_t *o = s->out + s->on;
    *o++ = 0x12;
    o = wr_varint(o, aclen);
    if (mint) {
        *o++ = 0x08;
        o = wr_varint(o, mint);
    }
    if (maxt) {
        *o++ = 0x10;
        o = wr_varint(o, maxt);
    }
    *o++ = 0x1a;
    o = wr_varint(o, rawlen);
    if (t != 1) {
        *o++ = 0x08;
        o = wr_varint(o, tv);
    }
    if (dlen) {
        *o++ = 0x12;
        o = wr_varint(o, dlen);
        memcpy(o, data, dlen);
        o += dlen;
    }
    s->on += total;
    return 0;
}

static int do_label(St *s, const uint8_t *p, const uint8_t *end) {
    Lbl l = {(const uint8_t *)"", (const uint8_t *)"", 0, 0};
    while (p < end) {
        uint64_t f, v = 0;
        int wt;
        const uint8_t *d = NULL;
        size_t dl = 0;
        if (rd_key(s, &p, end, &f, &wt, "Label") || rd_value(s, &p, end, wt, &v, &d, &dl, "Label")) return -1;
        if (wt == 2) {
            if (f == 1) {
                l.n = d;
                l.nl = dl;
            } else if (f == 2) {
                l.v = d;
                l.vl = dl;
            }
        }
    }
    if (grow((void **)&s->lbls, &s->capl, s->nl + 1, sizeof(Lbl))) return NOMEM(s);
    s->lbls[s->nl++] = l;
    return 0;
}

static int same_labels(const Lbl *a, const Lbl *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (a[i].nl != b[i].nl || a[i].vl != b[i].vl || memcmp(a[i].n, b[i].n, a[i].nl) ||
            memcmp(a[i].v, b[i].v, a[i].vl))
            return 0;
    }
    return 1;
}

static int do_series(St *s, const uint8_t *p, const uint8_t *end) {
    size_t lbl0 = s->nl, off = s->on;
    while (p < end) {
        uint64_t f, v = 0;
        int wt;
        const uint8_t *d = NULL;
        size_t dl = 0;
        if (rd_key(s, &p, end, &f, &wt, "ChunkedSeries") || rd_value(s, &p, end, wt, &v, &d, &dl, "ChunkedSeries"))
            return -1;
        if (wt == 2) {
            if (f == 1) {
                if (do_label(s, d, d + dl)) return -1;
            } else if (f == 2) {
                if (do_chunk(s, d, d + dl)) return -1;
            }
        }
    }
    size_t nlbl = s->nl - lbl0;
    if (s->ns) {
        Ser *prev = &s->sers[s->ns - 1];
        /* nlbl == 0: lbls may still be NULL (no pointer arithmetic on it) */
        if (prev->nlbl == nlbl && (nlbl == 0 || same_labels(s->lbls + prev->lbl0, s->lbls + lbl0, nlbl))) {
            prev->len += s->on - off; /* out is contiguous: the previous series' bytes end at off */
            s->nl = lbl0;
            return 0;
        }
    }
    if (grow((void **)&s->sers, &s->caps, s->ns + 1, sizeof(Ser))) return NOMEM(s);
    Ser *x = &s->sers[s->ns++];
    x->lbl0 = lbl0;
    x->nlbl = nlbl;
    x->off = off;
    x->len = s->on - off;
    return 0;
}

static int do_response(St *s, const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        uint64_t f, v = 0;
        int wt;
        const uint8_t *d = NULL;
        size_t dl = 0;
        if (rd_key(s, &p, end, &f, &wt, "ChunkedReadResponse") ||
            rd_value(s, &p, end, wt, &v, &d, &dl, "ChunkedReadResponse"))
            return -1;
        if (wt == 2 && f == 1 && do_series(s, d, d + dl)) return -1;
    }
    return 0;
}

/* frames: returns bytes consumed or -1 */
static long long do_frames(St *s, const uint8_t *p, size_t n, unsigned long long max_frame) {
    const uint8_t *end = p + n, *pos = p;
    char w[160];
    while (pos < end) {
        const uint8_t *q = pos;
        uint64_t size = 0;
        int shift = 0;
        for (;;) {
            if (q >= end) return (long long)(pos - p);
            uint8_t b = *q++;
            size |= (uint64_t)(b & 0x7F) << shift;
            if (b < 0x80) break;
            shift += 7;
            if (shift > 63) return fail(s, 1, pos, "frame length varint overflows 64 bits");
        }
        if (size > max_frame) {
            snprintf(w, sizeof w, "frame of %llu bytes exceeds the limit of %llu bytes", (unsigned long long)size,
                     max_frame);
            return fail(s, 1, pos, w);
        }
        if ((uint64_t)(end - q) < 4 || size > (uint64_t)(end - q) - 4) return (long long)(pos - p);
        uint32_t want = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | (uint32_t)q[3];
        const uint8_t *m = q + 4;
        uint32_t got = crc32c_value(m, (size_t)size);
        if (got != want) {
            snprintf(w, sizeof w, "CRC32C mismatch: frame says %08x, message has %08x", want, got);
            return fail(s, 1, pos, w);
        }
        if (do_response(s, m, m + size)) return -1;
        pos = m + size;
    }
    return (long long)(pos - p);
}

/* ------------------------------------------------------------------------------ Python objects */

static PyObject *raise_err(St *s) {
    if (s->err == 3) return PyErr_NoMemory();
    PyObject *msg;
    if (s->err == 1)
        msg = PyUnicode_FromFormat("%s (frame at byte %lld)", s->what, s->erroff);
    else
        msg = PyUnicode_FromFormat("malformed ChunkedReadResponse: %s at byte offset %lld", s->what, s->erroff);
    if (!msg) return NULL;
    PyObject *exc = PyObject_CallOneArg(PyExc_ValueError, msg);
    Py_DECREF(msg);
    if (!exc) return NULL;
    PyObject *what = PyUnicode_FromString(s->what);
    PyObject *off = PyLong_FromLongLong(s->erroff);
    if (what && off) {
        PyObject_SetAttrString(exc, "what", what);
        PyObject_SetAttrString(exc, "offset", off);
    }
    Py_XDECREF(what);
    Py_XDECREF(off);
    PyErr_SetObject(PyExc_ValueError, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *mkstr(St *s, const uint8_t *p, size_t n) {
    if (n == 0) return PyUnicode_New(0, 0);
    PyObject *u = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, NULL);
    if (!u) {
        PyErr_Clear();
        s->err = 2;
        snprintf(s->what, sizeof s->what, "Label: invalid UTF-8 in a string field");
        s->erroff = s->base + (long long)(p - s->start);
        raise_err(s);
    }
    return u;
}

/* ``thanos.Series`` bytes with the labels as they came (Label{name = 1, value = 2} in field 1,
 * empty strings left out as protobuf does) followed by the chunk fields: what the server base
 * sends when it keeps a series' labels unchanged, so it need not encode them again. */
static size_t varint_len(size_t n) {
    size_t k = 1;
    while (n >= 0x80) {
        n >>= 7;
        k++;
    }
    return k;
}

static uint8_t *put_varint(uint8_t *p, size_t n) {
    while (n >= 0x80) {
        *p++ = (uint8_t)(n | 0x80);
        n >>= 7;
    }
    *p++ = (uint8_t)n;
    return p;
}

static size_t label_inner_len(const Lbl *l) {
    return (l->nl ? 1 + varint_len(l->nl) + l->nl : 0) + (l->vl ? 1 + varint_len(l->vl) + l->vl : 0);
}

static PyObject *wire_bytes(const Lbl *L, size_t n, const uint8_t *chunks, size_t clen) {
    size_t total = clen;
    for (size_t j = 0; j < n; j++) {
        size_t in = label_inner_len(&L[j]);
        total += 1 + varint_len(in) + in;
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!b) return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(b);
    for (size_t j = 0; j < n; j++) {
        const Lbl *l = &L[j];
        *p++ = 0x0a;
        p = put_varint(p, label_inner_len(l));
        if (l->nl) {
            *p++ = 0x0a;
            p = put_varint(p, l->nl);
            memcpy(p, l->n, l->nl);
            p += l->nl;
        }
        if (l->vl) {
            *p++ = 0x12;
            p = put_varint(p, l->vl);
            memcpy(p, l->v, l->vl);
            p += l->vl;
        }
    }
    if (clen) memcpy(p, chunks, clen);
    return b;
}

static PyObject *build(St *s, PyTypeObject *cls, int wire) {
    /* a NamedTuple with a third field gets one (empty bytes unless ``wire``) */
    Py_ssize_t k = wire ? 3 : 2;
    if (cls) {
        PyObject *fields = PyObject_GetAttrString((PyObject *)cls, "_fields");
        Py_ssize_t nf = fields && PyTuple_Check(fields) ? PyTuple_GET_SIZE(fields) : -1;
        Py_XDECREF(fields);
        if (nf != 2 && nf != 3) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "cls must be a NamedTuple of (labels, chunks[, wire])");
            return NULL;
        }
        if (nf < k) {
            PyErr_SetString(PyExc_TypeError, "wire=True needs a cls with a third field");
            return NULL;
        }
        k = nf;
    }
    allocfunc alloc = cls ? (allocfunc)PyType_GetSlot(cls, Py_tp_alloc) : NULL;
    if (cls && !alloc) return NULL;
    PyObject *list = PyList_New((Py_ssize_t)s->ns);
    if (!list) return NULL;
    /* the previous series' pairs (and their strings), reused where the bytes are equal */
    PyObject **prev = NULL;
    size_t nprev = 0, capprev = 0;
    const Lbl *prevl = NULL;
    for (size_t i = 0; i < s->ns; i++) {
        Ser *x = &s->sers[i];
        /* no label / no chunk seen at all leaves lbls / out NULL: no pointer arithmetic on NULL (UB) */
        const Lbl *L = x->nlbl ? s->lbls + x->lbl0 : NULL;
        const uint8_t *chunks = x->len ? s->out + x->off : (const uint8_t *)"";
        PyObject *lt = PyTuple_New((Py_ssize_t)x->nlbl);
        if (!lt) goto fail;
        PyObject **cur = NULL;
        if (x->nlbl) {
            cur = malloc(x->nlbl * sizeof(PyObject *));
            if (!cur) {
                Py_DECREF(lt);
                PyErr_NoMemory();
                goto fail;
            }
        }
        for (size_t j = 0; j < x->nlbl; j++) {
            const Lbl *l = &L[j];
            PyObject *pair = NULL;
            if (j < nprev) {
                const Lbl *pl = &prevl[j];
                int nsame = pl->nl == l->nl && memcmp(pl->n, l->n, l->nl) == 0;
                int vsame = pl->vl == l->vl && memcmp(pl->v, l->v, l->vl) == 0;
                if (nsame && vsame) {
                    pair = prev[j];
                    Py_INCREF(pair);
                } else if (nsame) {
                    PyObject *nm = PyTuple_GET_ITEM(prev[j], 0), *vs = mkstr(s, l->v, l->vl);
                    if (!vs) goto fail_lbl;
                    Py_INCREF(nm);
                    pair = PyTuple_Pack(2, nm, vs);
                    Py_DECREF(nm);
                    Py_DECREF(vs);
                }
            }
            if (!pair) {
                if (PyErr_Occurred()) goto fail_lbl;
                PyObject *nm = mkstr(s, l->n, l->nl);
                if (!nm) goto fail_lbl;
                PyObject *vs = mkstr(s, l->v, l->vl);
                if (!vs) {
                    Py_DECREF(nm);
                    goto fail_lbl;
                }
                pair = PyTuple_Pack(2, nm, vs);
                Py_DECREF(nm);
                Py_DECREF(vs);
            }
            if (!pair) goto fail_lbl;
            PyTuple_SET_ITEM(lt, (Py_ssize_t)j, pair);
            cur[j] = pair;
            continue;
        fail_lbl:
            /* cur[0:j] are owned by lt */
            Py_DECREF(lt);
            free(cur);
            goto fail;
        }
        free(prev);
        prev = cur;
        nprev = x->nlbl;
        capprev = nprev;
        prevl = L; /* pairs in prev are borrowed from lt, which the list keeps alive */
        PyObject *ch = PyBytes_FromStringAndSize((const char *)chunks, (Py_ssize_t)x->len);
        if (!ch) {
            Py_DECREF(lt);
            goto fail;
        }
        PyObject *wb = NULL;
        if (k == 3) {
            wb = wire ? wire_bytes(L, x->nlbl, chunks, x->len) : PyBytes_FromStringAndSize(NULL, 0);
            if (!wb) {
                Py_DECREF(lt);
                Py_DECREF(ch);
                goto fail;
            }
        }
        PyObject *item = cls ? alloc(cls, k) : PyTuple_New(k);
        if (!item) {
            Py_DECREF(lt);
            Py_DECREF(ch);
            Py_XDECREF(wb);
            goto fail;
        }
        PyTuple_SET_ITEM(item, 0, lt);
        PyTuple_SET_ITEM(item, 1, ch);
        if (k == 3) PyTuple_SET_ITEM(item, 2, wb);
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    (void)capprev;
    free(prev);
    return list;
fail:
    free(prev);
    Py_DECREF(list);
    return NULL;
}

static int check_cls(PyObject *o, PyTypeObject **cls) {
    *cls = NULL;
    if (o == NULL || o == Py_None) return 0;
    int has_dict = 0;
    if (PyType_Check(o) && PyType_IsSubtype((PyTypeObject *)o, &PyTuple_Type)) {
        PyObject *off = PyObject_GetAttrString(o, "__dictoffset__");
        if (!off) return -1;
        has_dict = PyLong_AsSsize_t(off) != 0;
        Py_DECREF(off);
        if (PyErr_Occurred()) return -1;
    }
    if (!PyType_Check(o) || !PyType_IsSubtype((PyTypeObject *)o, &PyTuple_Type) || has_dict) {
        PyErr_SetString(PyExc_TypeError, "cls must be a tuple subclass without __dict__ (a NamedTuple)");
        return -1;
    }
    *cls = (PyTypeObject *)o;
    return 0;
}

static PyObject *py_transcode(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"msg", "base", "cls", "wire", NULL};
    Py_buffer b;
    long long base = 0;
    PyObject *clso = NULL;
    int wire = 0;
    PyTypeObject *cls;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|LOp", kwlist, &b, &base, &clso, &wire)) return NULL;
    if (check_cls(clso, &cls)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    St s;
    memset(&s, 0, sizeof s);
    s.start = b.buf;
    s.base = base;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = do_response(&s, b.buf, (const uint8_t *)b.buf + b.len);
    Py_END_ALLOW_THREADS
    PyObject *res = r ? raise_err(&s) : build(&s, cls, wire);
    st_free(&s);
    PyBuffer_Release(&b);
    return res;
}

static PyObject *py_transcode_frames(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"buf", "base", "max_frame", "cls", "wire", NULL};
    Py_buffer b;
    long long base = 0;
    unsigned long long max_frame = 50000000ULL;
    PyObject *clso = NULL;
    int wire = 0;
    PyTypeObject *cls;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|LKOp", kwlist, &b, &base, &max_frame, &clso, &wire))
        return NULL;
    if (check_cls(clso, &cls)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    St s;
    memset(&s, 0, sizeof s);
    s.start = b.buf;
    s.base = base;
    long long used;
    Py_BEGIN_ALLOW_THREADS
    used = do_frames(&s, b.buf, (size_t)b.len, max_frame);
    Py_END_ALLOW_THREADS
    PyObject *res = NULL;
    if (used < 0) {
        raise_err(&s);
    } else {
        PyObject *list = build(&s, cls, wire);
        if (list) res = Py_BuildValue("(LN)", used, list);
    }
    st_free(&s);
    PyBuffer_Release(&b);
    return res;
}

static PyMethodDef methods[] = {
    CRC32C_METHOD,
    {"transcode", (PyCFunction)(void (*)(void))py_transcode, METH_VARARGS | METH_KEYWORDS,
     "transcode(msg, base=0, cls=None, wire=False) -> [cls((labels, chunks[, wire])), ...]"},
    {"transcode_frames", (PyCFunction)(void (*)(void))py_transcode_frames, METH_VARARGS | METH_KEYWORDS,
     "transcode_frames(buf, base=0, max_frame=50000000, cls=None, wire=False) -> (consumed, [cls((labels, chunks[, "
     "wire])), ...])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_transcode", "Remote-read chunked frames -> Thanos Series pieces (C kernel).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__transcode(void) {
    crc32c_init();
    return PyModule_Create(&moddef);
}
