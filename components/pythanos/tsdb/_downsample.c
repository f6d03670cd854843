/*
 * Thanos' downsampling of float series (pkg/compact/downsample), batched: one call
 * aggregates many series. The XOR bit work is not here: chunkenc.decode_xor_many
 * decodes the input, chunkenc.encode_xor_many encodes the sub-chunks this module
 * lays out, and assemble() wraps them into AggrChunks.
 *
 * raw(t, v, chunk_counts, series_nchunks, resolution)
 *     raw samples -> aggregate chunks (DownsampleRaw). Series i owns the next
 *     series_nchunks[i] input chunks, chunk j the next chunk_counts[j] samples.
 * aggr(t, v, ranges, chunk_mint, chunk_maxt, chunk_nsamples, series_nchunks, in_res, out_res)
 *     aggregate chunks -> coarser aggregate chunks along input chunk boundaries
 *     (downsampleAggr). ranges[j][a] = (start, end) of aggregate a of input chunk j
 *     in t/v, start -1 when the chunk lacks that aggregate.
 * Both return (code, series, out_t, out_v, bounds, mint, maxt, present, series_nout):
 *     output chunk k has five sub-chunks (count, sum, min, max, counter); sub-chunk
 *     s = 5k + a holds samples bounds[s]:bounds[s+1] of out_t/out_v and present[s]
 *     says whether it exists; mint/maxt are the output chunks' time ranges and
 *     series_nout[i] how many output chunks series i got. code 1: an output
 *     sub-chunk would exceed 65535 samples (series = the series' index).
 * assemble(xor_buf, xor_offsets, present) -> (aggr_buf, aggr_offsets)
 * entries(buf, offsets, lengths) -> int64 [k][5][3] (length | 0 absent | -1 invalid,
 *     data offset, encoding byte), parsed as AggrChunk.Get does.
 *
 * Floats: plain double adds and compares in Go's order; build with
 * -ffp-contract=off so that no multiply-add is fused. Every size and index that
 * comes from the caller is validated (and index arrays copied) before the GIL is
 * released; output grows on the heap, so nothing a bucket holds can make this read
 * or write out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STALE_NAN_BITS 0x7ff0000000000002ULL
#define MAX_CHUNK_SAMPLES 65535
#define NAGGR 5
#define RAW_RES_ASSUMED 60000 /* DownsampleRaw assumes 1m raw resolution */
#define GIL_RELEASE_SAMPLES 4096

enum { DS_OK = 0, DS_TOOMANY = 1, DS_NOMEM = 2 };
enum { EMIT_ALL, EMIT_SUM, EMIT_MIN, EMIT_MAX, EMIT_COUNTER };

/* ------------------------------------------------------------ growable vectors */

typedef struct {
    int64_t *t;
    double *v;
    size_t n, cap;
} svec;

typedef struct {
    int64_t *p;
    size_t n, cap;
} ivec;

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bvec;

typedef struct {
    svec out;
    ivec bounds, mint, maxt, nout;
    bvec present;
    svec tmp[NAGGR];
    int err;
} ctx_t;

static size_t next_cap(size_t cap, size_t need) {
    size_t c = cap ? cap : 256;
    while (c < need) {
        if (c > ((size_t)PY_SSIZE_T_MAX >> 4)) return 0;
        c *= 2;
    }
    return c;
}

static int sv_reserve(ctx_t *c, svec *s, size_t need) {
    if (need <= s->cap) return 0;
    size_t nc = next_cap(s->cap, need);
    if (!nc) { c->err = DS_NOMEM; return -1; }
    int64_t *nt = realloc(s->t, nc * sizeof(int64_t));
    if (!nt) { c->err = DS_NOMEM; return -1; }
    s->t = nt;
    double *nv = realloc(s->v, nc * sizeof(double));
    if (!nv) { c->err = DS_NOMEM; return -1; }
    s->v = nv;
    s->cap = nc;
    return 0;
}

static inline void sv_push(ctx_t *c, svec *s, int64_t t, double v) {
    if (s->n == s->cap && sv_reserve(c, s, s->n + 1) < 0) return;
    s->t[s->n] = t;
    s->v[s->n] = v;
    s->n++;
}

static inline void iv_push(ctx_t *c, ivec *s, int64_t x) {
    if (s->n == s->cap) {
        size_t nc = next_cap(s->cap, s->n + 1);
        int64_t *np_ = nc ? realloc(s->p, nc * sizeof(int64_t)) : NULL;
        if (!np_) { c->err = DS_NOMEM; return; }
        s->p = np_;
        s->cap = nc;
    }
    s->p[s->n++] = x;
}

static inline void bv_push(ctx_t *c, bvec *s, uint8_t x) {
    if (s->n == s->cap) {
        size_t nc = next_cap(s->cap, s->n + 1);
        uint8_t *np_ = nc ? realloc(s->p, nc) : NULL;
        if (!np_) { c->err = DS_NOMEM; return; }
        s->p = np_;
        s->cap = nc;
    }
    s->p[s->n++] = x;
}

static void ctx_free(ctx_t *c) {
    free(c->out.t); free(c->out.v);
    free(c->bounds.p); free(c->mint.p); free(c->maxt.p); free(c->nout.p);
    free(c->present.p);
    for (int a = 0; a < NAGGR; a++) { free(c->tmp[a].t); free(c->tmp[a].v); }
    memset(c, 0, sizeof(*c));
}

/* Close the output chunk built in tmp[]: its sub-chunks go to out, in AggrType order. */
static void flush_chunk(ctx_t *c, int64_t mint, int64_t maxt, unsigned mask) {
    for (int a = 0; a < NAGGR; a++) {
        if (c->tmp[a].n > MAX_CHUNK_SAMPLES) { c->err = DS_TOOMANY; return; }
    }
    for (int a = 0; a < NAGGR; a++) {
        svec *s = &c->tmp[a];
        int on = (mask >> a) & 1;
        if (on && s->n) {
            if (sv_reserve(c, &c->out, c->out.n + s->n) < 0) return;
            memcpy(c->out.t + c->out.n, s->t, s->n * sizeof(int64_t));
            memcpy(c->out.v + c->out.n, s->v, s->n * sizeof(double));
            c->out.n += s->n;
        }
        iv_push(c, &c->bounds, (int64_t)c->out.n);
        bv_push(c, &c->present, (uint8_t)on);
        s->n = 0;
    }
    iv_push(c, &c->mint, mint);
    iv_push(c, &c->maxt, maxt);
}

/* ------------------------------------------------------------ the aggregation */

typedef struct {
    int64_t total, count;
    double sum, min, max, counter, last;
} agg_t;

static inline void agg_reset(agg_t *a) {
    a->count = 0;
    a->sum = 0;
    a->min = DBL_MAX;
    a->max = -DBL_MAX;
}

static inline void agg_add(agg_t *a, double v) {
    if (a->total > 0) {
        if (v < a->last)
            a->counter += v; /* a reset: the new value is the increase */
        else
            a->counter += v - a->last;
    } else {
        a->counter = v;
    }
    a->last = v;
    a->sum += v;
    a->count++;
    a->total++;
    if (v < a->min) a->min = v;
    if (v > a->max) a->max = v;
}

static inline int64_t wadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wsub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

/* The inclusive end of the resolution window holding t. */
static inline int64_t window_end(int64_t t, int64_t r) { return wsub(wadd(wsub(t, t % r), r), 1); }

static inline int is_stale(double v) {
    uint64_t b;
    memcpy(&b, &v, 8);
    return b == STALE_NAN_BITS;
}

/* How many chunks a series' output is cut into: enough that each holds at most ~140
 * samples, estimating the output from the span and how densely the input fills it. */
static int64_t target_chunks(int64_t mint, int64_t maxt, int64_t in_res, int64_t out_res, int64_t count) {
    int64_t span = wsub(maxt, mint);
    double most = (double)(span / out_res);
    double full = (double)count / ((double)span / (double)in_res);
    if (full > 1) full = 1;
    double e = most * full;
    /* Go's float->int gives INT64_MIN for NaN or out of range: one chunk then. */
    if (!(e > -9.2e18 && e < 9.2e18)) return 1;
    int64_t expected = (int64_t)e + 1;
    if (expected <= 140) return 1;
    return expected / 141 + 1;
}

static inline void emit(ctx_t *c, const agg_t *a, int64_t t, int mode, svec *dst, int64_t *mint, int64_t *maxt) {
    if (t < *mint) *mint = t;
    if (t > *maxt) *maxt = t;
    switch (mode) {
    case EMIT_ALL:
        sv_push(c, &c->tmp[0], t, (double)a->count);
        sv_push(c, &c->tmp[1], t, a->sum);
        sv_push(c, &c->tmp[2], t, a->min);
        sv_push(c, &c->tmp[3], t, a->max);
        sv_push(c, &c->tmp[4], t, a->counter);
        break;
    case EMIT_SUM: sv_push(c, dst, t, a->sum); break;
    case EMIT_MIN: sv_push(c, dst, t, a->min); break;
    case EMIT_MAX: sv_push(c, dst, t, a->max); break;
    default: sv_push(c, dst, t, a->counter); break;
    }
}

/* One aggregated sample per window of the batch (downsampleBatch); a window's sample
 * is stamped with its end, but never later than the batch's last sample. Returns the
 * last window's stamp. */
static int64_t windows(ctx_t *c, const int64_t *t, const double *v, size_t n, int64_t res, int mode, svec *dst,
                       int64_t *mint, int64_t *maxt) {
    agg_t a;
    memset(&a, 0, sizeof(a));
    int64_t next = -1, last = t[n - 1];
    for (size_t i = 0; i < n; i++) {
        if (t[i] > next) {
            if (next != -1) emit(c, &a, next, mode, dst, mint, maxt);
            agg_reset(&a);
            int64_t w = window_end(t[i], res);
            next = w < last ? w : last;
        }
        agg_add(&a, v[i]);
    }
    if (a.total > 0) emit(c, &a, next, mode, dst, mint, maxt);
    return next;
}

/* One chunk's samples as the downsampler expands them: stale markers dropped, and
 * samples going back in time (the first must be at t >= 0) skipped. */
static size_t expand(const int64_t *t, const double *v, size_t n, int64_t *ot, double *ov) {
    int64_t last = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_stale(v[i])) continue;
        if (t[i] >= last) {
            ot[k] = t[i];
            ov[k] = v[i];
            k++;
            last = t[i];
        }
    }
    return k;
}

/* A raw batch -> one aggregate chunk (downsampleFloatBatch). The counter sub-chunk
 * starts with the batch's first raw sample and ends with its last raw value repeated
 * at the last window's stamp, so that readers can detect resets across chunks. */
static void raw_batch(ctx_t *c, const int64_t *t, const double *v, size_t n, int64_t res) {
    int64_t mint = INT64_MAX, maxt = INT64_MIN;
    sv_push(c, &c->tmp[4], t[0], v[0]);
    int64_t last = windows(c, t, v, n, res, EMIT_ALL, NULL, &mint, &maxt);
    sv_push(c, &c->tmp[4], last, v[n - 1]);
    if (!c->err) flush_chunk(c, mint, maxt, 0x1f);
}

/* DownsampleRaw over n expanded samples (st/sv); bt/bv: scratch of n samples. */
static void raw_samples(ctx_t *c, const int64_t *st, const double *sv, size_t n, int64_t res, int64_t *bt,
                        double *bv) {
    if (n == 0) return;
    int64_t nchunks = target_chunks(st[0], st[n - 1], RAW_RES_ASSUMED, res, (int64_t)n);
    size_t size = n / (size_t)nchunks + 1;
    size_t i = 0;
    while (i < n && !c->err) {
        size_t j = i + (size < n - i ? size : n - i);
        /* finish the window the batch's last sample is in */
        int64_t w = window_end(st[j - 1], res);
        while (j < n && st[j] <= w) j++;
        size_t m = 0;
        for (size_t k = i; k < j; k++) {
            if (isnan(sv[k])) continue;
            bt[m] = st[k];
            bv[m] = sv[k];
            m++;
        }
        i = j;
        if (m) raw_batch(c, bt, bv, m, res);
    }
}

typedef struct {
    const int64_t *t;
    const double *v;
    size_t N;
    size_t C, S;
    int64_t *ccounts;  /* raw: samples per input chunk */
    int64_t *ranges;   /* aggr: [C][5][2] */
    int64_t *cmint, *cmaxt, *cns;
    int64_t *snch;     /* input chunks per series */
    int64_t res, in_res;
    int64_t *st, *bt;  /* scratch */
    double *sv, *bv;
    int64_t err_series;
} job_t;

static void run_raw(ctx_t *c, job_t *j) {
    size_t pos = 0, ch = 0;
    for (size_t s = 0; s < j->S && !c->err; s++) {
        size_t before = c->mint.n, n = 0;
        for (int64_t k = 0; k < j->snch[s]; k++, ch++) {
            size_t cnt = (size_t)j->ccounts[ch];
            n += expand(j->t + pos, j->v + pos, cnt, j->st + n, j->sv + n);
            pos += cnt;
        }
        raw_samples(c, j->st, j->sv, n, j->res, j->bt, j->bv);
        if (c->err) { j->err_series = (int64_t)s; break; }
        iv_push(c, &c->nout, (int64_t)(c->mint.n - before));
    }
}

/* A batch of input aggregate chunks [c0, c1) -> one output aggregate chunk
 * (downsampleFloatAggrBatch). */
static void aggr_batch(ctx_t *c, job_t *j, size_t c0, size_t c1) {
    int64_t mint = INT64_MAX, maxt = INT64_MIN;
    unsigned mask = 0;
    for (int a = 0; a < 4; a++) {
        size_t n = 0;
        for (size_t ch = c0; ch < c1; ch++) {
            int64_t s = j->ranges[(ch * NAGGR + a) * 2], e = j->ranges[(ch * NAGGR + a) * 2 + 1];
            if (s < 0) continue;
            n += expand(j->t + s, j->v + s, (size_t)(e - s), j->st + n, j->sv + n);
        }
        /* Thanos' genericAggregate reports the range (0, 0) for an absent aggregate. */
        int64_t am = 0, aM = 0;
        if (n) {
            am = INT64_MAX;
            aM = INT64_MIN;
            int mode = a == 2 ? EMIT_MIN : a == 3 ? EMIT_MAX : EMIT_SUM;
            windows(c, j->st, j->sv, n, j->res, mode, &c->tmp[a], &am, &aM);
            mask |= 1u << a;
        }
        if (am < mint) mint = am;
        if (aM > maxt) maxt = aM;
    }
    /* The counter: input counter sub-chunks chained with resets applied
     * (ApplyCounterResetsSeriesIterator), then expanded like a chunk. */
    size_t n = 0;
    int64_t total = 0, lt = 0, elast = 0;
    double lv = 0, acc = 0;
    for (size_t ch = c0; ch < c1; ch++) {
        int64_t s = j->ranges[(ch * NAGGR + 4) * 2], e = j->ranges[(ch * NAGGR + 4) * 2 + 1];
        if (s < 0) continue;
        for (int64_t i = s; i < e; i++) {
            int64_t tt = j->t[i];
            double x = j->v[i];
            if (isnan(x)) continue;
            if (total == 0) {
                total = 1;
                lt = tt;
                lv = x;
                acc = x;
            } else if (tt > lt) {
                if (x >= lv)
                    acc += x - lv;
                else
                    acc += x;
                lt = tt;
                lv = x;
                total++;
            } else {
                /* the same stamp again carries the true last raw value */
                if (tt == lt) lv = x;
                continue;
            }
            if (!is_stale(acc) && lt >= elast) {
                j->st[n] = lt;
                j->sv[n] = acc;
                n++;
                elast = lt;
            }
        }
        /* the iterator seeks to lastT+1 between chunks: it stops when that wraps */
        if (lt == INT64_MAX) break;
    }
    if (n) {
        sv_push(c, &c->tmp[4], j->st[0], j->sv[0]);
        int64_t last = windows(c, j->st, j->sv, n, j->res, EMIT_COUNTER, &c->tmp[4], &mint, &maxt);
        sv_push(c, &c->tmp[4], last, lv);
        mask |= 1u << 4;
    }
    if (!c->err) flush_chunk(c, mint, maxt, mask);
}

static void run_aggr(ctx_t *c, job_t *j) {
    size_t ch = 0;
    for (size_t s = 0; s < j->S && !c->err; s++) {
        size_t before = c->mint.n, k = (size_t)j->snch[s];
        if (k) {
            int64_t ns = 0;
            for (size_t x = ch; x < ch + k; x++) ns += j->cns[x];
            int64_t nchunks = target_chunks(j->cmint[ch], j->cmaxt[ch + k - 1], j->in_res, j->res, ns);
            /* Thanos takes len/nchunks input chunks per output chunk and never ends when
             * that is 0; at least one here. */
            size_t size = k / (size_t)nchunks;
            if (size < 1) size = 1;
            for (size_t x = 0; x < k && !c->err; x += size)
                aggr_batch(c, j, ch + x, ch + (size < k - x ? x + size : k));
        }
        ch += k;
        if (c->err) { j->err_series = (int64_t)s; break; }
        iv_push(c, &c->nout, (int64_t)(c->mint.n - before));
    }
}

/* ------------------------------------------------------------ Python glue */

typedef struct {
    Py_buffer b;
    int ok;
} view;

static int get_buf(PyObject *o, view *v, const char *what, size_t item) {
    v->ok = 0;
    if (PyObject_GetBuffer(o, &v->b, PyBUF_SIMPLE) < 0) return -1;
    v->ok = 1;
    if (item > 1 && ((size_t)v->b.len % item || ((uintptr_t)v->b.buf & (item - 1)))) {
        PyErr_Format(PyExc_ValueError, "%s: expected an aligned buffer of %zu-byte items", what, item);
        return -1;
    }
    return 0;
}

static void rel(view *v) {
    if (v->ok) PyBuffer_Release(&v->b);
    v->ok = 0;
}

/* A private, validated copy of a caller's int64 array (they may change while the GIL
 * is released). */
static int64_t *copy_i64(const view *v, size_t *n) {
    *n = (size_t)v->b.len / 8;
    int64_t *p = malloc(*n ? *n * 8 : 8);
    if (!p) { PyErr_NoMemory(); return NULL; }
    memcpy(p, v->b.buf, *n * 8);
    return p;
}

static PyObject *bytes_of(const void *p, size_t n) {
    return PyBytes_FromStringAndSize(n ? (const char *)p : NULL, (Py_ssize_t)n);
}

static PyObject *result(ctx_t *c, int64_t err_series) {
    if (c->err == DS_NOMEM) return PyErr_NoMemory();
    if (c->err == DS_TOOMANY)
        return Py_BuildValue("iLOOOOOOO", DS_TOOMANY, (long long)err_series, Py_None, Py_None, Py_None, Py_None,
                             Py_None, Py_None, Py_None);
    if (c->bounds.n == 0) {
        iv_push(c, &c->bounds, 0);
        if (c->err) return PyErr_NoMemory();
    }
    PyObject *o[8];
    o[0] = bytes_of(c->out.t, c->out.n * 8);
    o[1] = bytes_of(c->out.v, c->out.n * 8);
    o[2] = bytes_of(c->bounds.p, c->bounds.n * 8);
    o[3] = bytes_of(c->mint.p, c->mint.n * 8);
    o[4] = bytes_of(c->maxt.p, c->maxt.n * 8);
    o[5] = bytes_of(c->present.p, c->present.n);
    o[6] = bytes_of(c->nout.p, c->nout.n * 8);
    PyObject *res = NULL;
    int ok = 1;
    for (int i = 0; i < 7; i++) ok &= o[i] != NULL;
    if (ok) res = Py_BuildValue("iLNNNNNNN", DS_OK, -1LL, o[0], o[1], o[2], o[3], o[4], o[5], o[6]);
    else
        for (int i = 0; i < 7; i++) Py_XDECREF(o[i]);
    return res;
}

static int alloc_scratch(job_t *j, size_t n, int both) {
    size_t m = n ? n : 1;
    j->st = malloc(m * 8);
    j->sv = malloc(m * 8);
    j->bt = both ? malloc(m * 8) : NULL;
    j->bv = both ? malloc(m * 8) : NULL;
    if (!j->st || !j->sv || (both && (!j->bt || !j->bv))) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void free_job(job_t *j) {
    free(j->ccounts); free(j->ranges); free(j->cmint); free(j->cmaxt); free(j->cns); free(j->snch);
    free(j->st); free(j->sv); free(j->bt); free(j->bv);
}

/* The first ctx (c->bounds) entry is 0: bounds has 5k+1 entries. */
static void ctx_init(ctx_t *c) {
    memset(c, 0, sizeof(*c));
    iv_push(c, &c->bounds, 0);
}

static PyObject *py_raw(PyObject *self, PyObject *args) {
    PyObject *to, *vo, *co, *so;
    long long res;
    if (!PyArg_ParseTuple(args, "OOOOL", &to, &vo, &co, &so, &res)) return NULL;
    view tv = {0}, vv = {0}, cv = {0}, sv_ = {0};
    job_t j;
    memset(&j, 0, sizeof(j));
    ctx_t c;
    ctx_init(&c);
    PyObject *out = NULL;
    if (get_buf(to, &tv, "t", 8) < 0 || get_buf(vo, &vv, "v", 8) < 0 || get_buf(co, &cv, "chunk_counts", 8) < 0 ||
        get_buf(so, &sv_, "series_nchunks", 8) < 0)
        goto done;
    if (tv.b.len != vv.b.len) { PyErr_SetString(PyExc_ValueError, "t and v differ in length"); goto done; }
    if (res <= 0) { PyErr_SetString(PyExc_ValueError, "resolution must be positive"); goto done; }
    if (c.err) { PyErr_NoMemory(); goto done; }
    j.t = tv.b.buf;
    j.v = vv.b.buf;
    j.N = (size_t)tv.b.len / 8;
    j.res = res;
    if (!(j.ccounts = copy_i64(&cv, &j.C)) || !(j.snch = copy_i64(&sv_, &j.S))) goto done;
    {
        uint64_t tot = 0, chs = 0, most = 0;
        for (size_t i = 0; i < j.C; i++) {
            if (j.ccounts[i] < 0 || (uint64_t)j.ccounts[i] > j.N) goto bad;
            tot += (uint64_t)j.ccounts[i];
            if (tot > j.N) goto bad;
        }
        if (tot != j.N) goto bad;
        size_t ch = 0;
        for (size_t s = 0; s < j.S; s++) {
            if (j.snch[s] < 0 || (uint64_t)j.snch[s] > j.C - chs) goto bad;
            uint64_t n = 0;
            for (int64_t k = 0; k < j.snch[s]; k++) n += (uint64_t)j.ccounts[ch++];
            chs += (uint64_t)j.snch[s];
            if (n > most) most = n;
        }
        if (chs != j.C) goto bad;
        if (alloc_scratch(&j, (size_t)most, 1) < 0) goto done;
    }
    {
        int release = j.N >= GIL_RELEASE_SAMPLES;
        PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
        run_raw(&c, &j);
        if (release) PyEval_RestoreThread(ts);
    }
    out = result(&c, j.err_series);
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError, "chunk_counts / series_nchunks do not partition the samples");
done:
    free_job(&j);
    ctx_free(&c);
    rel(&tv); rel(&vv); rel(&cv); rel(&sv_);
    return out;
}

static PyObject *py_aggr(PyObject *self, PyObject *args) {
    PyObject *to, *vo, *ro, *mo, *xo, *no, *so;
    long long in_res, out_res;
    if (!PyArg_ParseTuple(args, "OOOOOOOLL", &to, &vo, &ro, &mo, &xo, &no, &so, &in_res, &out_res)) return NULL;
    view tv = {0}, vv = {0}, rv = {0}, mv = {0}, xv = {0}, nv = {0}, sv_ = {0};
    job_t j;
    memset(&j, 0, sizeof(j));
    ctx_t c;
    ctx_init(&c);
    PyObject *out = NULL;
    if (get_buf(to, &tv, "t", 8) < 0 || get_buf(vo, &vv, "v", 8) < 0 || get_buf(ro, &rv, "ranges", 8) < 0 ||
        get_buf(mo, &mv, "chunk_mint", 8) < 0 || get_buf(xo, &xv, "chunk_maxt", 8) < 0 ||
        get_buf(no, &nv, "chunk_nsamples", 8) < 0 || get_buf(so, &sv_, "series_nchunks", 8) < 0)
        goto done;
    if (tv.b.len != vv.b.len) { PyErr_SetString(PyExc_ValueError, "t and v differ in length"); goto done; }
    if (in_res <= 0 || out_res <= 0) { PyErr_SetString(PyExc_ValueError, "resolutions must be positive"); goto done; }
    if (c.err) { PyErr_NoMemory(); goto done; }
    j.t = tv.b.buf;
    j.v = vv.b.buf;
    j.N = (size_t)tv.b.len / 8;
    j.res = out_res;
    j.in_res = in_res;
    size_t nr, nm, nx, nn;
    if (!(j.ranges = copy_i64(&rv, &nr)) || !(j.cmint = copy_i64(&mv, &nm)) || !(j.cmaxt = copy_i64(&xv, &nx)) ||
        !(j.cns = copy_i64(&nv, &nn)) || !(j.snch = copy_i64(&sv_, &j.S)))
        goto done;
    j.C = nm;
    if (nx != j.C || nn != j.C || nr != j.C * NAGGR * 2) goto bad;
    {
        /* the aggregates' samples lie side by side in t/v: ranges inside it whose lengths add up
         * to no more than it holds (overlapping ranges could make the scratch arbitrarily large) */
        uint64_t sum = 0;
        for (size_t i = 0; i < j.C * NAGGR; i++) {
            int64_t s = j.ranges[2 * i], e = j.ranges[2 * i + 1];
            if (s == -1) continue;
            if (s < 0 || e < s || (uint64_t)e > j.N) goto bad;
            sum += (uint64_t)(e - s);
            if (sum > j.N) goto bad;
        }
        uint64_t chs = 0, most = 0;
        size_t ch = 0;
        for (size_t s = 0; s < j.S; s++) {
            if (j.snch[s] < 0 || (uint64_t)j.snch[s] > j.C - chs) goto bad;
            uint64_t n = 0;
            for (int64_t k = 0; k < j.snch[s]; k++, ch++) {
                uint64_t m = 0;
                for (int a = 0; a < NAGGR; a++) {
                    int64_t b = j.ranges[(ch * NAGGR + a) * 2];
                    if (b >= 0) m += (uint64_t)(j.ranges[(ch * NAGGR + a) * 2 + 1] - b);
                }
                n += m;
            }
            chs += (uint64_t)j.snch[s];
            if (n > most) most = n;
        }
        if (chs != j.C) goto bad;
        if (alloc_scratch(&j, (size_t)most, 0) < 0) goto done;
    }
    {
        int release = j.N >= GIL_RELEASE_SAMPLES;
        PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
        run_aggr(&c, &j);
        if (release) PyEval_RestoreThread(ts);
    }
    out = result(&c, j.err_series);
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError, "ranges / chunk arrays / series_nchunks are inconsistent");
done:
    free_job(&j);
    ctx_free(&c);
    rel(&tv); rel(&vv); rel(&rv); rel(&mv); rel(&xv); rel(&nv); rel(&sv_);
    return out;
}

static size_t put_uvarint(uint8_t *p, uint64_t x) {
    size_t n = 0;
    while (x >= 0x80) {
        p[n++] = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    p[n++] = (uint8_t)x;
    return n;
}

static size_t uvarint_len(uint64_t x) {
    size_t n = 1;
    while (x >= 0x80) { x >>= 7; n++; }
    return n;
}

/* assemble(xor_buf, xor_offsets[5k+1], present[5k]) -> (buf, offsets bytes of int64[k+1]) */
static PyObject *py_assemble(PyObject *self, PyObject *args) {
    PyObject *bo, *oo, *po;
    if (!PyArg_ParseTuple(args, "OOO", &bo, &oo, &po)) return NULL;
    view bv = {0}, ov = {0}, pv = {0};
    PyObject *res = NULL, *buf = NULL, *offs = NULL;
    int64_t *xo = NULL;
    size_t nx;
    if (get_buf(bo, &bv, "xor_buf", 1) < 0 || get_buf(oo, &ov, "xor_offsets", 8) < 0 ||
        get_buf(po, &pv, "present", 1) < 0)
        goto done;
    if (!(xo = copy_i64(&ov, &nx))) goto done;
    if (nx < 1 || (nx - 1) % NAGGR || (size_t)pv.b.len != nx - 1) {
        PyErr_SetString(PyExc_ValueError, "xor_offsets must have 5k+1 entries and present 5k");
        goto done;
    }
    size_t k = (nx - 1) / NAGGR;
    const uint8_t *pr = pv.b.buf, *src = bv.b.buf;
    uint64_t total = 0;
    for (size_t i = 0; i < nx; i++) {
        if (xo[i] < 0 || xo[i] > bv.b.len || (i && xo[i] < xo[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "xor_offsets out of order or outside the buffer");
            goto done;
        }
    }
    for (size_t i = 0; i + 1 < nx; i++) {
        uint64_t l = (uint64_t)(xo[i + 1] - xo[i]);
        total += pr[i] ? uvarint_len(l) + 1 + l : 1;
    }
    if (total > (uint64_t)PY_SSIZE_T_MAX) { PyErr_NoMemory(); goto done; }
    buf = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    offs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((k + 1) * 8));
    if (!buf || !offs) goto done;
    {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(buf);
        uint8_t *op = (uint8_t *)PyBytes_AS_STRING(offs);
        size_t pos = 0;
        for (size_t c = 0; c < k; c++) {
            int64_t o = (int64_t)pos;
            memcpy(op + 8 * c, &o, 8);
            for (int a = 0; a < NAGGR; a++) {
                size_t i = c * NAGGR + a;
                uint64_t l = (uint64_t)(xo[i + 1] - xo[i]);
                if (!pr[i]) {
                    out[pos++] = 0;
                    continue;
                }
                pos += put_uvarint(out + pos, l);
                out[pos++] = 1; /* XOR */
                memcpy(out + pos, src + xo[i], l);
                pos += l;
            }
        }
        int64_t o = (int64_t)pos;
        memcpy(op + 8 * k, &o, 8);
    }
    res = PyTuple_Pack(2, buf, offs);
done:
    Py_XDECREF(buf);
    Py_XDECREF(offs);
    free(xo);
    rel(&bv); rel(&ov); rel(&pv);
    return res;
}

/* Go's binary.Uvarint: n == 0 when the buffer ends, n < 0 on overflow. */
static int uvarint(const uint8_t *p, size_t len, uint64_t *x) {
    uint64_t r = 0;
    unsigned s = 0;
    for (size_t i = 0; i < len; i++) {
        if (i == 10) return -(int)(i + 1);
        uint8_t b = p[i];
        if (b < 0x80) {
            if (i == 9 && b > 1) return -(int)(i + 1);
            *x = r | (uint64_t)b << s;
            return (int)(i + 1);
        }
        r |= (uint64_t)(b & 0x7f) << s;
        s += 7;
    }
    return 0;
}

/* entries(buf, offsets, lengths) -> bytes of int64[k][5][3] */
static PyObject *py_entries(PyObject *self, PyObject *args) {
    PyObject *bo, *oo, *lo;
    if (!PyArg_ParseTuple(args, "OOO", &bo, &oo, &lo)) return NULL;
    view bv = {0}, ov = {0}, lv = {0};
    PyObject *res = NULL;
    int64_t *offs = NULL, *lens = NULL;
    size_t k, kl;
    if (get_buf(bo, &bv, "buf", 1) < 0 || get_buf(oo, &ov, "offsets", 8) < 0 || get_buf(lo, &lv, "lengths", 8) < 0)
        goto done;
    if (!(offs = copy_i64(&ov, &k)) || !(lens = copy_i64(&lv, &kl))) goto done;
    if (k != kl) { PyErr_SetString(PyExc_ValueError, "offsets and lengths differ in length"); goto done; }
    for (size_t i = 0; i < k; i++) {
        if (offs[i] < 0 || lens[i] < 0 || offs[i] > bv.b.len || lens[i] > bv.b.len - offs[i]) {
            PyErr_Format(PyExc_ValueError, "chunk %zu lies outside the buffer", i);
            goto done;
        }
    }
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(k * NAGGR * 3 * 8));
    if (!res) goto done;
    {
        int64_t *out = (int64_t *)PyBytes_AS_STRING(res);
        const uint8_t *base = bv.b.buf;
        for (size_t i = 0; i < k; i++) {
            size_t p = (size_t)offs[i], rem = (size_t)lens[i];
            int bad = 0;
            for (int a = 0; a < NAGGR; a++) {
                int64_t *e = out + (i * NAGGR + a) * 3;
                e[0] = -1; e[1] = 0; e[2] = 0;
                if (bad) continue;
                uint64_t l;
                int n = uvarint(base + p, rem, &l);
                /* AggrChunk.Get wants the length byte(s), then l + 1 bytes, even for l == 0 */
                if (n < 1 || l >= (uint64_t)(rem - (size_t)n)) { bad = 1; continue; }
                p += (size_t)n;
                rem -= (size_t)n;
                if (l == 0) { e[0] = 0; continue; }
                e[0] = (int64_t)l;
                e[1] = (int64_t)(p + 1);
                e[2] = base[p];
                p += (size_t)l + 1;
                rem -= (size_t)l + 1;
            }
        }
    }
done:
    free(offs);
    free(lens);
    rel(&bv); rel(&ov); rel(&lv);
    return res;
}

static PyMethodDef methods[] = {
    {"raw", py_raw, METH_VARARGS,
     "raw(t, v, chunk_counts, series_nchunks, resolution) -> (code, series, out_t, out_v, bounds, mint, maxt, present, "
     "series_nout)"},
    {"aggr", py_aggr, METH_VARARGS,
     "aggr(t, v, ranges, chunk_mint, chunk_maxt, chunk_nsamples, series_nchunks, in_res, out_res) -> like raw()"},
    {"assemble", py_assemble, METH_VARARGS, "assemble(xor_buf, xor_offsets, present) -> (buf, offsets)"},
    {"entries", py_entries, METH_VARARGS, "entries(buf, offsets, lengths) -> int64[k][5][3] as bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_downsample", "Thanos downsampling kernels (C).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__downsample(void) { return PyModule_Create(&moddef); }
