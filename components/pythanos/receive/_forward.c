/* The series frames a receiver forwards to another receiver, built in one pass per request part.
 *
 * frames_v1(body, ranges, positions) -> bytes
 *     The field-1 frames (0x0a uvarint(len) bytes) of the TimeSeries messages at `positions` of a
 *     remote-write 1.0 body, their bytes copied as the sender wrote them. `ranges` holds int64
 *     (offset, length) pairs, one per series of the body; `positions` int64 series indices.
 * frames_v2(blobs, blob_offsets, sample_offsets, sample_ts, sample_values, positions
 *           [, body, ranges, n_histograms[, n_exemplars, symbol_ranges]]) -> bytes
 *     The same frames for series decoded from a remote-write 2.0 body (which has no TimeSeries a
 *     1.0 peer could read): Label messages from the canonical label blob (uvarint count, then
 *     uvarint-length-prefixed name and value), one Sample message per sample. Fields holding
 *     their zero value are left out as Go's protobuf encoder leaves them out (a value whose bits
 *     are not all zero, -0.0 included, is written). Given the 2.0 body, its TimeSeries ranges and
 *     the histogram count of every series, native histograms are copied in too: a 2.0 Histogram
 *     and a 1.0 one share fields 1..16, so each is carried over field by field, without 2.0's
 *     start timestamp (17). Given also the exemplar counts and the symbol ranges, exemplars are
 *     converted too (label refs resolved through the symbols; one whose refs do not resolve is left
 *     out, as Prometheus leaves it out).
 *
 * split_write_request(raw) -> (frames: bytes, tenant: bytes, replica: int)
 *     A serialized thanos.WriteRequest{timeseries = 1, tenant = 2, replica = 3} taken apart without
 *     decoding its series: the field-1 frames as they came (a prometheus.WriteRequest body holding
 *     the same series), the tenant and the replica (last occurrence wins, unknown fields skipped).
 *
 * Every offset and length comes from a decoder of network input: each is checked against the
 * buffer it points into, and a bad one raises ValueError naming the position, the series and the
 * values. Sizes are computed in a first pass, the output allocated once, then filled; both passes
 * run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static size_t vlen(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_uvarint(uint8_t *o, uint64_t v) {
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

/* A uvarint of at most 10 bytes inside [*p, end); -1 when it runs past the end or is too long. */
static int get_uvarint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    const uint8_t *q = *p;
    for (int shift = 0; shift < 70; shift += 7) {
        if (q >= end) return -1;
        uint8_t b = *q++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) {
            *p = q;
            *out = v;
            return 0;
        }
    }
    return -1;
}

typedef struct {
    char msg[256];
} err_t;

/* Skips one field value of wire type wt at *p; -1 when it runs past end or is a group. */
static int skip_field(const uint8_t **p, const uint8_t *end, unsigned wt) {
    uint64_t v;
    switch (wt) {
    case 0:
        return get_uvarint(p, end, &v);
    case 1:
        if (end - *p < 8) return -1;
        *p += 8;
        return 0;
    case 2:
        if (get_uvarint(p, end, &v) || v > (uint64_t)(end - *p)) return -1;
        *p += v;
        return 0;
    case 5:
        if (end - *p < 4) return -1;
        *p += 4;
        return 0;
    default:
        return -1;
    }
}


/* ---------------------------------------------------------------- v1: slices of the body */

static PyObject *py_frames_v1(PyObject *self, PyObject *args) {
    Py_buffer body, ranges, pos;
    if (!PyArg_ParseTuple(args, "y*y*y*", &body, &ranges, &pos)) return NULL;
    PyObject *out = NULL;
    err_t e = {{0}};
    int bad = 0;
    if (ranges.len % 16 || pos.len % 8) {
        PyErr_SetString(PyExc_ValueError, "frames_v1: ranges must be int64 pairs and positions int64");
        goto done;
    }
    size_t nser = (size_t)ranges.len / 16, npos = (size_t)pos.len / 8;
    const int64_t *rg = (const int64_t *)ranges.buf, *ps = (const int64_t *)pos.buf;
    size_t total = 0;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < npos; i++) {
        int64_t p = ps[i];
        if (p < 0 || (uint64_t)p >= nser) {
            snprintf(e.msg, sizeof e.msg, "frames_v1: position %zu: series %lld outside the %zu series", i,
                     (long long)p, nser);
            bad = 1;
            break;
        }
        int64_t off = rg[2 * p], len = rg[2 * p + 1];
        if (off < 0 || len < 0 || off > (int64_t)body.len || len > (int64_t)body.len - off) {
            snprintf(e.msg, sizeof e.msg,
                     "frames_v1: position %zu (series %lld): range offset %lld length %lld outside the body of %zd bytes",
                     i, (long long)p, (long long)off, (long long)len, body.len);
            bad = 1;
            break;
        }
        size_t add = 1 + vlen((uint64_t)len) + (size_t)len;
        if (total > (size_t)PY_SSIZE_T_MAX - add) {
            snprintf(e.msg, sizeof e.msg, "frames_v1: output larger than %zd bytes", PY_SSIZE_T_MAX);
            bad = 1;
            break;
        }
        total += add;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, e.msg);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out) goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    const uint8_t *b = (const uint8_t *)body.buf;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < npos; i++) {
        int64_t p = ps[i], off = rg[2 * p], len = rg[2 * p + 1];
        *o++ = 0x0a;
        o = put_uvarint(o, (uint64_t)len);
        memcpy(o, b + off, (size_t)len);
        o += len;
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&body);
    PyBuffer_Release(&ranges);
    PyBuffer_Release(&pos);
    return out;
}

/* ---------------------------------------------------------------- v2: encoded from columns */

typedef struct {
    const uint8_t *blobs;
    size_t blobs_len;
    const int64_t *boff; /* n + 1 */
    size_t nser;
    const int64_t *soff; /* n + 1 */
    const int64_t *ts;
    const uint64_t *val; /* the float64 bits */
    size_t nsamp;
    /* optional (histograms copied from the 2.0 body): NULL when not given */
    const uint8_t *body;
    size_t body_len;
    const int64_t *ranges; /* 2n: each TimeSeries' (offset, length) in body */
    const uint32_t *nhist; /* n */
    const uint32_t *nexm;  /* n */
    const int64_t *syms;   /* 2s: each symbol's (offset, length) in body */
    size_t nsym;
} cols_t;

static size_t label_msg_len(uint64_t nl, uint64_t vl) {
    return (nl ? 1 + vlen(nl) + nl : 0) + (vl ? 1 + vlen(vl) + vl : 0);
}

static size_t sample_msg_len(uint64_t bits, int64_t t) {
    return (bits ? 9 : 0) + (t ? 1 + vlen((uint64_t)t) : 0);
}

/* One 2.0 Exemplar {labels_refs = 1, value = 2, timestamp = 3} as a 1.0 one {labels = 1 (Label
 * messages), value = 2, timestamp = 3}: labels resolved through the symbols in the sender's order,
 * value and timestamp carried as their last occurrence's bytes. Returns 1 with the 1.0 body length
 * in *len (written at o unless o is NULL), 0 when the refs do not resolve (the exemplar is left out,
 * as Prometheus leaves it out), -1 when malformed (*bad_at: where). */
static int exemplar_conv(const cols_t *c, const uint8_t *x, const uint8_t *xend, uint8_t *o, size_t *len,
                         const uint8_t **bad_at) {
    size_t total = 0;
    const uint8_t *val = NULL, *val_end = NULL, *tsf = NULL, *ts_end = NULL, *r = x;
    uint64_t pending = 0;
    int have_pending = 0, valid = 1;
    while (r < xend) {
        const uint8_t *fa = r;
        uint64_t k;
        *bad_at = fa;
        if (get_uvarint(&r, xend, &k) || (k >> 3) == 0) return -1;
        unsigned f = (unsigned)(k >> 3), wt = (unsigned)(k & 7);
        if (f == 1 && (wt == 0 || wt == 2)) {
            const uint8_t *q = r, *qend;
            if (wt == 0) {
                if (skip_field(&r, xend, 0)) return -1;
                qend = r;
            } else {
                uint64_t n;
                if (get_uvarint(&r, xend, &n) || n > (uint64_t)(xend - r)) return -1;
                q = r;
                qend = r + n;
                r = qend;
            }
            while (q < qend) {
                uint64_t ref;
                if (get_uvarint(&q, qend, &ref)) return -1;
                ref &= 0xffffffffu; /* a uint32 field */
                if (!have_pending) {
                    pending = ref;
                    have_pending = 1;
                    continue;
                }
                have_pending = 0;
                if (pending >= c->nsym || ref >= c->nsym) {
                    valid = 0;
                    continue;
                }
                int64_t no = c->syms[2 * pending], nl = c->syms[2 * pending + 1];
                int64_t vo = c->syms[2 * ref], vl = c->syms[2 * ref + 1];
                if (no < 0 || nl < 0 || (uint64_t)no > c->body_len || (uint64_t)nl > c->body_len - (uint64_t)no ||
                    vo < 0 || vl < 0 || (uint64_t)vo > c->body_len || (uint64_t)vl > c->body_len - (uint64_t)vo)
                    return -1;
                size_t m = label_msg_len((uint64_t)nl, (uint64_t)vl);
                total += 1 + vlen(m) + m;
                if (o) {
                    *o++ = 0x0a;
                    o = put_uvarint(o, m);
                    if (nl) {
                        *o++ = 0x0a;
                        o = put_uvarint(o, (uint64_t)nl);
                        memcpy(o, c->body + no, (size_t)nl);
                        o += nl;
                    }
                    if (vl) {
                        *o++ = 0x12;
                        o = put_uvarint(o, (uint64_t)vl);
                        memcpy(o, c->body + vo, (size_t)vl);
                        o += vl;
                    }
                }
            }
        } else if (f == 2 && wt == 1) {
            if (skip_field(&r, xend, 1)) return -1;
            val = fa;
            val_end = r;
        } else if (f == 3 && wt == 0) {
            if (skip_field(&r, xend, 0)) return -1;
            tsf = fa;
            ts_end = r;
        } else if (skip_field(&r, xend, wt)) {
            return -1;
        }
    }
    if (have_pending || !valid) return 0;
    if (val) {
        total += (size_t)(val_end - val);
        if (o) {
            memcpy(o, val, (size_t)(val_end - val));
            o += val_end - val;
        }
    }
    if (tsf) {
        total += (size_t)(ts_end - tsf);
        if (o) memcpy(o, tsf, (size_t)(ts_end - tsf));
    }
    *len = total;
    return 1;
}

/* Series p's exemplars (which == 4, 2.0's TimeSeries field) or native histograms (which == 3) as 1.0
 * ones. A 2.0 Histogram becomes a 1.0 Histogram (TimeSeries field 4) holding the fields numbered
 * 1..16 byte for byte (the two messages share them); 2.0's start_timestamp (17) and anything later
 * are left out. Exemplars: exemplar_conv, TimeSeries field 3. Gives the bytes this adds to the
 * TimeSeries in *out; writes them at o unless o is NULL. */
static int rare_walk(const cols_t *c, size_t i, int64_t p, unsigned which, uint8_t *o, size_t *out, err_t *e) {
    int64_t off = c->ranges[2 * p], len = c->ranges[2 * p + 1];
    if (off < 0 || len < 0 || (uint64_t)off > c->body_len || (uint64_t)len > c->body_len - (uint64_t)off) {
        snprintf(e->msg, sizeof e->msg,
                 "frames_v2: position %zu (series %lld): range offset %lld length %lld outside the body of %zu bytes",
                 i, (long long)p, (long long)off, (long long)len, c->body_len);
        return -1;
    }
    const uint8_t *q = c->body + off, *end = q + len, *at = q;
    size_t total = 0;
    while (q < end) {
        uint64_t key, n;
        at = q;
        if (get_uvarint(&q, end, &key)) goto bad;
        unsigned wt = (unsigned)(key & 7);
        if ((key >> 3) != which || wt != 2) {
            if (skip_field(&q, end, wt)) goto bad;
            continue;
        }
        if (get_uvarint(&q, end, &n) || n > (uint64_t)(end - q)) goto bad;
        const uint8_t *h = q, *hend = q + n;
        q = hend;
        size_t kept = 0;
        if (which == 4) {
            int ok = exemplar_conv(c, h, hend, NULL, &kept, &at);
            if (ok < 0) goto bad;
            if (ok == 0) continue;
            if (o) {
                *o++ = 0x1a;
                o = put_uvarint(o, kept);
                exemplar_conv(c, h, hend, o, &kept, &at);
                o += kept;
            }
            total += 1 + vlen(kept) + kept;
            continue;
        }
        for (int write = 0; write < (o ? 2 : 1); write++) {
            if (write) {
                *o++ = 0x22;
                o = put_uvarint(o, kept);
            }
            const uint8_t *r = h;
            while (r < hend) {
                const uint8_t *fa = r;
                uint64_t k2;
                at = r;
                if (get_uvarint(&r, hend, &k2) || (k2 >> 3) == 0 || skip_field(&r, hend, (unsigned)(k2 & 7))) goto bad;
                if ((k2 >> 3) <= 16) {
                    if (write) {
                        memcpy(o, fa, (size_t)(r - fa));
                        o += r - fa;
                    } else {
                        kept += (size_t)(r - fa);
                    }
                }
            }
        }
        total += 1 + vlen(kept) + kept;
    }
    *out = total;
    return 0;
bad:
    snprintf(e->msg, sizeof e->msg, "frames_v2: position %zu (series %lld): malformed %s at byte %lld of the body",
             i, (long long)p, which == 4 ? "exemplar" : "histogram", (long long)(at - c->body));
    return -1;
}

/* The TimeSeries body length of series p (0 and an error text when its columns do not hold). */
static int series_len(const cols_t *c, size_t i, int64_t p, size_t *out, err_t *e) {
    if (p < 0 || (uint64_t)p >= c->nser) {
        snprintf(e->msg, sizeof e->msg, "frames_v2: position %zu: series %lld outside the %zu series", i,
                 (long long)p, c->nser);
        return -1;
    }
    int64_t b0 = c->boff[p], b1 = c->boff[p + 1];
    if (b0 < 0 || b1 < b0 || (uint64_t)b1 > c->blobs_len) {
        snprintf(e->msg, sizeof e->msg,
                 "frames_v2: position %zu (series %lld): blob offsets %lld..%lld outside the %zu blob bytes", i,
                 (long long)p, (long long)b0, (long long)b1, c->blobs_len);
        return -1;
    }
    const uint8_t *q = c->blobs + b0, *end = c->blobs + b1;
    uint64_t n;
    size_t total = 0;
    if (get_uvarint(&q, end, &n)) goto bad_blob;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t nl, vl;
        if (get_uvarint(&q, end, &nl) || nl > (uint64_t)(end - q)) goto bad_blob;
        q += nl;
        if (get_uvarint(&q, end, &vl) || vl > (uint64_t)(end - q)) goto bad_blob;
        q += vl;
        size_t m = label_msg_len(nl, vl);
        total += 1 + vlen(m) + m;
    }
    if (q != end) goto bad_blob;
    int64_t s0 = c->soff[p], s1 = c->soff[p + 1];
    if (s0 < 0 || s1 < s0 || (uint64_t)s1 > c->nsamp) {
        snprintf(e->msg, sizeof e->msg,
                 "frames_v2: position %zu (series %lld): sample offsets %lld..%lld outside the %zu samples", i,
                 (long long)p, (long long)s0, (long long)s1, c->nsamp);
        return -1;
    }
    for (int64_t s = s0; s < s1; s++) {
        size_t m = sample_msg_len(c->val[s], c->ts[s]);
        total += 1 + vlen(m) + m;
    }
    if (c->nexm && c->nexm[p]) {
        size_t x;
        if (rare_walk(c, i, p, 4, NULL, &x, e)) return -1;
        total += x;
    }
    if (c->nhist && c->nhist[p]) {
        size_t h;
        if (rare_walk(c, i, p, 3, NULL, &h, e)) return -1;
        total += h;
    }
    *out = total;
    return 0;
bad_blob:
    snprintf(e->msg, sizeof e->msg,
             "frames_v2: position %zu (series %lld): malformed label blob at byte %lld of %lld..%lld", i,
             (long long)p, (long long)(q - c->blobs), (long long)b0, (long long)b1);
    return -1;
}

static uint8_t *put_series(const cols_t *c, int64_t p, size_t len, uint8_t *o) {
    *o++ = 0x0a;
    o = put_uvarint(o, len);
    const uint8_t *q = c->blobs + c->boff[p], *end = c->blobs + c->boff[p + 1];
    uint64_t n = 0;
    get_uvarint(&q, end, &n); /* checked by series_len */
    for (uint64_t k = 0; k < n; k++) {
        uint64_t nl = 0, vl = 0;
        get_uvarint(&q, end, &nl);
        const uint8_t *name = q;
        q += nl;
        get_uvarint(&q, end, &vl);
        const uint8_t *value = q;
        q += vl;
        *o++ = 0x0a;
        o = put_uvarint(o, label_msg_len(nl, vl));
        if (nl) {
            *o++ = 0x0a;
            o = put_uvarint(o, nl);
            memcpy(o, name, nl);
            o += nl;
        }
        if (vl) {
            *o++ = 0x12;
            o = put_uvarint(o, vl);
            memcpy(o, value, vl);
            o += vl;
        }
    }
    for (int64_t s = c->soff[p]; s < c->soff[p + 1]; s++) {
        uint64_t bits = c->val[s];
        int64_t t = c->ts[s];
        *o++ = 0x12;
        o = put_uvarint(o, sample_msg_len(bits, t));
        if (bits) {
            *o++ = 0x09;
            for (int k = 0; k < 8; k++) *o++ = (uint8_t)(bits >> (8 * k));
        }
        if (t) {
            *o++ = 0x10;
            o = put_uvarint(o, (uint64_t)t);
        }
    }
    size_t h;
    err_t e;
    if (c->nexm && c->nexm[p]) { /* checked by series_len */
        rare_walk(c, 0, p, 4, o, &h, &e);
        o += h;
    }
    if (c->nhist && c->nhist[p]) {
        rare_walk(c, 0, p, 3, o, &h, &e);
        o += h;
    }
    return o;
}

static PyObject *py_frames_v2(PyObject *self, PyObject *args) {
    Py_buffer blobs, boff, soff, ts, val, pos, body = {0}, ranges = {0}, nhist = {0}, nexm = {0}, syms = {0};
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*|y*y*y*y*y*", &blobs, &boff, &soff, &ts, &val, &pos, &body, &ranges,
                          &nhist, &nexm, &syms))
        return NULL;
    PyObject *out = NULL;
    size_t *lens = NULL;
    err_t e = {{0}};
    int bad = 0;
    if (boff.len % 8 || soff.len % 8 || ts.len % 8 || val.len % 8 || pos.len % 8 || boff.len < 8 ||
        boff.len != soff.len || ts.len != val.len) {
        PyErr_SetString(PyExc_ValueError, "frames_v2: offsets must be int64 n+1 (blobs and samples alike), "
                                          "timestamps and values int64/float64 of one length, positions int64");
        goto done;
    }
    cols_t c = {(const uint8_t *)blobs.buf, (size_t)blobs.len, (const int64_t *)boff.buf, (size_t)boff.len / 8 - 1,
                (const int64_t *)soff.buf, (const int64_t *)ts.buf, (const uint64_t *)val.buf, (size_t)ts.len / 8,
                NULL, 0, NULL, NULL, NULL, NULL, 0};
    if (nhist.obj) {
        if (!body.obj || !ranges.obj || (size_t)ranges.len != 16 * c.nser || (size_t)nhist.len != 4 * c.nser ||
            (nexm.obj && ((size_t)nexm.len != 4 * c.nser || !syms.obj || syms.len % 16))) {
            PyErr_SetString(PyExc_ValueError, "frames_v2: histograms and exemplars need the body, int64 (offset, "
                                              "length) ranges, uint32 histogram and exemplar counts of every series "
                                              "and int64 (offset, length) symbol ranges");
            goto done;
        }
        c.body = (const uint8_t *)body.buf;
        c.body_len = (size_t)body.len;
        c.ranges = (const int64_t *)ranges.buf;
        c.nhist = (const uint32_t *)nhist.buf;
        if (nexm.obj) {
            c.nexm = (const uint32_t *)nexm.buf;
            c.syms = (const int64_t *)syms.buf;
            c.nsym = (size_t)syms.len / 16;
        }
    }
    size_t npos = (size_t)pos.len / 8;
    const int64_t *ps = (const int64_t *)pos.buf;
    lens = malloc((npos ? npos : 1) * sizeof *lens);
    if (!lens) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < npos; i++) {
        if (series_len(&c, i, ps[i], &lens[i], &e)) {
            bad = 1;
            break;
        }
        size_t add = 1 + vlen(lens[i]) + lens[i];
        if (total > (size_t)PY_SSIZE_T_MAX - add) {
            snprintf(e.msg, sizeof e.msg, "frames_v2: output larger than %zd bytes", PY_SSIZE_T_MAX);
            bad = 1;
            break;
        }
        total += add;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, e.msg);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out) goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < npos; i++) o = put_series(&c, ps[i], lens[i], o);
    Py_END_ALLOW_THREADS
done:
    free(lens);
    PyBuffer_Release(&blobs);
    PyBuffer_Release(&boff);
    PyBuffer_Release(&soff);
    PyBuffer_Release(&ts);
    PyBuffer_Release(&val);
    PyBuffer_Release(&pos);
    if (body.obj) PyBuffer_Release(&body);
    if (ranges.obj) PyBuffer_Release(&ranges);
    if (nhist.obj) PyBuffer_Release(&nhist);
    if (nexm.obj) PyBuffer_Release(&nexm);
    if (syms.obj) PyBuffer_Release(&syms);
    return out;
}

/* ---------------------------------------------------------------- thanos.WriteRequest */

static PyObject *py_split_write_request(PyObject *self, PyObject *args) {
    Py_buffer raw;
    if (!PyArg_ParseTuple(args, "y*", &raw)) return NULL;
    PyObject *frames = NULL, *out = NULL;
    const uint8_t *b = (const uint8_t *)raw.buf, *end = b + raw.len, *p = b;
    const uint8_t *tenant = NULL;
    uint64_t tenant_len = 0, replica = 0;
    size_t total = 0;
    const uint8_t *first = NULL, *last_end = NULL;
    int contiguous = 1;
    char msg[200];
    msg[0] = 0;
    /* pass 1: check every field, find the timeseries frames, the tenant and the replica */
    while (p < end) {
        const uint8_t *at = p;
        uint64_t key;
        if (get_uvarint(&p, end, &key)) {
            snprintf(msg, sizeof msg, "proto: WriteRequest: truncated field key at byte %zd", at - b);
            goto bad;
        }
        unsigned field = (unsigned)(key >> 3), wt = (unsigned)(key & 7);
        if (field == 0) {
            snprintf(msg, sizeof msg, "proto: WriteRequest: illegal field number 0 at byte %zd", at - b);
            goto bad;
        }
        if (field == 1 || field == 2) {
            uint64_t n;
            if (wt != 2) {
                snprintf(msg, sizeof msg, "proto: WriteRequest.%s: wrong wire type %u at byte %zd",
                         field == 1 ? "timeseries" : "tenant", wt, at - b);
                goto bad;
            }
            if (get_uvarint(&p, end, &n) || n > (uint64_t)(end - p)) {
                snprintf(msg, sizeof msg, "proto: WriteRequest.%s: length runs past the end at byte %zd",
                         field == 1 ? "timeseries" : "tenant", at - b);
                goto bad;
            }
            if (field == 1) {
                if (!first) first = at;
                else if (at != last_end) contiguous = 0;
                last_end = p + n;
                total += (size_t)(p + n - at);
            } else {
                tenant = p;
                tenant_len = n;
            }
            p += n;
        } else if (field == 3) {
            if (wt != 0 || get_uvarint(&p, end, &replica)) {
                snprintf(msg, sizeof msg, "proto: WriteRequest.replica: bad varint (wire type %u) at byte %zd", wt,
                         at - b);
                goto bad;
            }
        } else if (skip_field(&p, end, wt)) {
            snprintf(msg, sizeof msg, "proto: WriteRequest: field %u (wire type %u) runs past the end at byte %zd",
                     field, wt, at - b);
            goto bad;
        }
    }
    if (contiguous) {
        frames = PyBytes_FromStringAndSize((const char *)first, (Py_ssize_t)total);
    } else {
        /* pass 2 (rare: other fields between the frames): copy the frames together */
        frames = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (frames) {
            uint8_t *o = (uint8_t *)PyBytes_AS_STRING(frames);
            p = b;
            while (p < end) {
                const uint8_t *at = p;
                uint64_t key = 0, n = 0;
                get_uvarint(&p, end, &key);
                if ((key >> 3) == 1) {
                    get_uvarint(&p, end, &n);
                    memcpy(o, at, (size_t)(p + n - at));
                    o += p + n - at;
                    p += n;
                } else if ((key >> 3) == 3) {
                    get_uvarint(&p, end, &n);
                } else {
                    skip_field(&p, end, (unsigned)(key & 7));
                }
            }
        }
    }
    if (!frames) goto done;
    out = Py_BuildValue("(Ny#L)", frames, tenant ? (const char *)tenant : "", (Py_ssize_t)tenant_len,
                        (long long)(int64_t)replica);
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError, msg);
done:
    PyBuffer_Release(&raw);
    return out;
}

static PyMethodDef methods[] = {
    {"split_write_request", py_split_write_request, METH_VARARGS,
     "split_write_request(raw) -> (timeseries frames, tenant bytes, replica): a thanos.WriteRequest's parts"},
    {"frames_v1", py_frames_v1, METH_VARARGS,
     "frames_v1(body, ranges, positions) -> bytes: the field-1 frames of the TimeSeries at positions"},
    {"frames_v2", py_frames_v2, METH_VARARGS,
     "frames_v2(blobs, blob_offsets, sample_offsets, sample_ts, sample_values, positions) -> bytes: "
     "remote-write 1.0 TimeSeries frames encoded from decoded columns"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_forward", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__forward(void) { return PyModule_Create(&module); }
