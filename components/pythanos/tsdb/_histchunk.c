/* Native histogram chunks (chunk encodings 2 "histogram" and 3 "float histogram"), byte for byte
 * as Prometheus 3.9.1 writes them (tsdb/chunkenc/histogram.go, float_histogram.go,
 * histogram_meta.go, varbit.go; tsdb/docs/format/chunks.md), and the head's histogram series.
 *
 * Chunk: 2 bytes big-endian sample count, 1 header byte (top two bits: counter reset 0b10, not
 * a counter reset 0b01, gauge 0b11, unknown 0b00), then a bit stream: the layout (zero
 * threshold, schema, positive and negative spans, custom bounds for schema -53) and the samples.
 * Integer chunks: t, count, zero count as varbit ints (raw, then delta of delta), the sum
 * Gorilla-XOR'd, each bucket (delta-encoded across buckets as on the wire) as varbit
 * delta-of-delta. Float chunks: t as above, count, zero count, sum and each bucket XOR'd.
 *
 * The appender follows Prometheus' rules: a chunk holds one schema, zero threshold and custom
 * bounds; a counter reset (count, zero count or any bucket going down, a bucket disappearing
 * while in use, an explicit reset hint) cuts a new chunk with the reset header; new buckets
 * re-code the chunk into the wider layout (and a histogram missing empty buckets of the chunk is
 * widened); gauge histograms merge layouts both ways; after a stale marker only stale markers.
 *
 * Decoding never reads past the chunk: every read is bounds-checked, and every allocation is
 * bounded by the chunk's size in bits (each span, bound or bucket value takes at least a bit).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define STALE_NAN_BITS 0x7ff0000000000002ULL
#define CUSTOM_SCHEMA (-53)
#define HDR_RESET 0x80
#define HDR_NOT_RESET 0x40
#define HDR_GAUGE 0xC0
#define HDR_UNKNOWN 0x00
/* reset hints as on the wire (prompb Histogram.ResetHint) and in Prometheus' model */
#define HINT_UNKNOWN 0
#define HINT_YES 1
#define HINT_NO 2
#define HINT_GAUGE 3

/* head statuses, as pythanos.tsdb.head */
#define ST_OK 0
#define ST_DUP_OK 1
#define ST_OUT_OF_ORDER 2
#define ST_DUPLICATE 3
#define ST_OUT_OF_BOUNDS 4
#define ST_TOO_OLD 5
#define ST_OOO_OK 6
#define ST_BAD_REF 7
#define ST_INVALID 8
#define ST_AT_COMMIT 0x80

#define TARGET_BYTES 1024 /* chunkenc.TargetBytesPerHistogramChunk */
#define MIN_SAMPLES 10    /* chunkenc.MinSamplesPerHistogramChunk */

INLINE uint64_t ld64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return x; }
INLINE void st64(uint8_t *p, uint64_t x) { memcpy(p, &x, 8); }
INLINE uint64_t f2u(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }
INLINE double u2f(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }
INLINE int is_stale(double f) { return f2u(f) == STALE_NAN_BITS; }
INLINE int64_t wadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
INLINE int64_t wsub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

typedef struct { int32_t off; uint32_t len; } span_t;

/* ----------------------------------------------------------------- bit writer */

typedef struct { uint8_t *b; size_t cap; uint64_t nbits; } bw_t;

static int bw_reserve(bw_t *w, uint64_t more_bits) {
    size_t need = (size_t)((w->nbits + more_bits + 7) >> 3) + 8;
    if (need <= w->cap) return 0;
    size_t nc = w->cap ? w->cap : 64;
    while (nc < need) nc *= 2;
    uint8_t *nb = realloc(w->b, nc);
    if (!nb) return -1;
    memset(nb + w->cap, 0, nc - w->cap);
    w->b = nb;
    w->cap = nc;
    return 0;
}

/* callers reserve first (bw_reserve) */
INLINE void bw_bits(bw_t *w, uint64_t v, int n) {
    if (n < 64) v &= (1ULL << n) - 1;
    while (n > 0) {
        uint64_t byte = w->nbits >> 3;
        int free_ = 8 - (int)(w->nbits & 7);
        int take = n < free_ ? n : free_;
        uint8_t part = (uint8_t)((v >> (n - take)) & ((1u << take) - 1));
        w->b[byte] |= (uint8_t)(part << (free_ - take));
        w->nbits += (uint64_t)take;
        n -= take;
    }
}
INLINE size_t bw_len(const bw_t *w) { return (size_t)((w->nbits + 7) >> 3); }

INLINE int bit_range(int64_t x, int n) { return -((1LL << (n - 1)) - 1) <= x && x <= (1LL << (n - 1)); }

static void put_varbit_int(bw_t *w, int64_t v) {
    if (v == 0) bw_bits(w, 0, 1);
    else if (bit_range(v, 3)) { bw_bits(w, 0x2, 2); bw_bits(w, (uint64_t)v, 3); }
    else if (bit_range(v, 6)) { bw_bits(w, 0x6, 3); bw_bits(w, (uint64_t)v, 6); }
    else if (bit_range(v, 9)) { bw_bits(w, 0xE, 4); bw_bits(w, (uint64_t)v, 9); }
    else if (bit_range(v, 12)) { bw_bits(w, 0x1E, 5); bw_bits(w, (uint64_t)v, 12); }
    else if (bit_range(v, 18)) { bw_bits(w, 0x3E, 6); bw_bits(w, (uint64_t)v, 18); }
    else if (bit_range(v, 25)) { bw_bits(w, 0x7E, 7); bw_bits(w, (uint64_t)v, 25); }
    else if (bit_range(v, 56)) { bw_bits(w, 0xFE, 8); bw_bits(w, (uint64_t)v, 56); }
    else { bw_bits(w, 0xFF, 8); bw_bits(w, (uint64_t)v, 64); }
}

static void put_varbit_uint(bw_t *w, uint64_t v) {
    if (v == 0) bw_bits(w, 0, 1);
    else if (v < (1ULL << 3)) { bw_bits(w, 0x2, 2); bw_bits(w, v, 3); }
    else if (v < (1ULL << 6)) { bw_bits(w, 0x6, 3); bw_bits(w, v, 6); }
    else if (v < (1ULL << 9)) { bw_bits(w, 0xE, 4); bw_bits(w, v, 9); }
    else if (v < (1ULL << 12)) { bw_bits(w, 0x1E, 5); bw_bits(w, v, 12); }
    else if (v < (1ULL << 18)) { bw_bits(w, 0x3E, 6); bw_bits(w, v, 18); }
    else if (v < (1ULL << 25)) { bw_bits(w, 0x7E, 7); bw_bits(w, v, 25); }
    else if (v < (1ULL << 56)) { bw_bits(w, 0xFE, 8); bw_bits(w, v, 56); }
    else { bw_bits(w, 0xFF, 8); bw_bits(w, v, 64); }
}

/* Gorilla XOR of a value against the previous one; leading 0xff: none chosen yet */
static void xor_write(bw_t *w, uint64_t nv, uint64_t cur, uint8_t *lead, uint8_t *trail) {
    uint64_t d = nv ^ cur;
    if (d == 0) { bw_bits(w, 0, 1); return; }
    bw_bits(w, 1, 1);
    uint8_t nl = (uint8_t)__builtin_clzll(d), nt = (uint8_t)__builtin_ctzll(d);
    if (nl >= 32) nl = 31;
    if (*lead != 0xff && nl >= *lead && nt >= *trail) {
        bw_bits(w, 0, 1);
        bw_bits(w, d >> *trail, 64 - *lead - *trail);
        return;
    }
    *lead = nl;
    *trail = nt;
    bw_bits(w, 1, 1);
    bw_bits(w, nl, 5);
    int sig = 64 - nl - nt;
    bw_bits(w, (uint64_t)sig, 6);
    bw_bits(w, d >> nt, sig);
}

static void put_zero_threshold(bw_t *w, double zt) {
    if (zt == 0) { bw_bits(w, 0, 8); return; }
    int exp;
    double frac = frexp(zt, &exp);
    if (frac != 0.5 || exp < -242 || exp > 11) {
        bw_bits(w, 255, 8);
        bw_bits(w, f2u(zt), 64);
        return;
    }
    bw_bits(w, (uint64_t)(exp + 243), 8);
}

static void put_custom_bound(bw_t *w, double f) {
    double tf = f * 1000;
    /* isWholeWhenMultiplied: uint(math.Round(f*1000)) / 1000 == f */
    int whole = 0;
    if (tf >= 0 && tf <= 33554430) {
        double r = round(tf);
        whole = ((double)(uint64_t)r / 1000) == f;
    }
    if (!whole) {
        bw_bits(w, 0, 1);
        bw_bits(w, f2u(f), 64);
        return;
    }
    put_varbit_uint(w, (uint64_t)round(tf) + 1);
}

/* ----------------------------------------------------------------- bit reader */

typedef struct { const uint8_t *b; uint64_t nbits, pos; int err; } br_t;

INLINE uint64_t br_bits(br_t *r, int n) {
    if (r->err || (uint64_t)n > r->nbits - r->pos) { r->err = 1; return 0; }
    uint64_t v = 0;
    while (n > 0) {
        uint64_t byte = r->pos >> 3;
        int avail = 8 - (int)(r->pos & 7);
        int take = n < avail ? n : avail;
        uint8_t part = (uint8_t)((r->b[byte] >> (avail - take)) & ((1u << take) - 1));
        v = (take == 64 ? 0 : v << take) | part;
        r->pos += (uint64_t)take;
        n -= take;
    }
    return v;
}
INLINE uint64_t br_left(const br_t *r) { return r->err ? 0 : r->nbits - r->pos; }

static int varbit_prefix(br_t *r) {
    int d = 0, i;
    for (i = 0; i < 8; i++) {
        uint64_t bit = br_bits(r, 1);
        if (r->err) return -1;
        d <<= 1;
        if (!bit) break;
        d |= 1;
    }
    switch (d) {
    case 0x0: return 0;
    case 0x2: return 3;
    case 0x6: return 6;
    case 0xE: return 9;
    case 0x1E: return 12;
    case 0x3E: return 18;
    case 0x7E: return 25;
    case 0xFE: return 56;
    case 0xFF: return 64;
    default: r->err = 2; return -1;  /* invalid bit pattern */
    }
}

static int64_t read_varbit_int(br_t *r) {
    int sz = varbit_prefix(r);
    if (sz <= 0) return 0;
    uint64_t bits = br_bits(r, sz);
    if (sz == 64) return (int64_t)bits;
    if (bits > (1ULL << (sz - 1))) bits -= (1ULL << sz);
    return (int64_t)bits;
}

static uint64_t read_varbit_uint(br_t *r) {
    int sz = varbit_prefix(r);
    if (sz <= 0) return 0;
    return br_bits(r, sz);
}

static void xor_read(br_t *r, uint64_t *val, uint8_t *lead, uint8_t *trail) {
    if (!br_bits(r, 1)) return;
    uint8_t nl, nt, mb;
    if (!br_bits(r, 1)) {
        nl = *lead;
        nt = *trail;
        if (nl + nt >= 64) { r->err = 3; return; }  /* reuse before any window was set */
        mb = (uint8_t)(64 - nl - nt);
    } else {
        nl = (uint8_t)br_bits(r, 5);
        mb = (uint8_t)br_bits(r, 6);
        if (mb == 0) mb = 64;
        if (nl + mb > 64) { r->err = 3; return; }
        nt = (uint8_t)(64 - nl - mb);
        *lead = nl;
        *trail = nt;
    }
    uint64_t bits = br_bits(r, mb);
    if (r->err) return;
    *val ^= bits << nt;
}

static double read_zero_threshold(br_t *r) {
    uint64_t b = br_bits(r, 8);
    if (b == 0) return 0;
    if (b == 255) return u2f(br_bits(r, 64));
    return ldexp(0.5, (int)b - 243);
}

static double read_custom_bound(br_t *r) {
    uint64_t b = read_varbit_uint(r);
    if (b == 0) return u2f(br_bits(r, 64));
    return (double)(b - 1) / 1000;
}

/* ------------------------------------------------------------------- samples */

/* One histogram: integer (cnt, zcnt as counts; buckets int64 deltas across buckets, as on the
 * wire) or float (fcnt, fzcnt; buckets absolute doubles). Pointers are views or owned by the
 * caller; bucket values are 8-byte words (int64 or double bits). */
typedef struct {
    uint8_t hint;
    int32_t schema;
    double zt;
    uint64_t cnt, zcnt;     /* integer: counts; float: the doubles' bits */
    double sum;
    const span_t *ps, *ns;
    uint32_t nps, nns;
    const uint64_t *pb, *nb;
    uint32_t npb, nnb;
    const double *cv;
    uint32_t ncv;
} hist_t;

static uint64_t count_spans(const span_t *s, uint32_t n) {
    uint64_t c = 0;
    for (uint32_t i = 0; i < n; i++) c += s[i].len;
    return c;
}

/* the Appender state (HistogramAppender / FloatHistogramAppender) with its chunk */
typedef struct { uint64_t v; uint8_t lead, trail; } xv_t;

typedef struct {
    bw_t w;
    uint8_t is_float;
    int32_t schema;
    double zt;
    span_t *ps, *ns;
    uint32_t nps, nns;
    double *cv;
    uint32_t ncv;
    int64_t t, tdelta;
    /* integer */
    uint64_t cnt, zcnt;
    int64_t cntd, zcntd;
    uint64_t sum;
    uint8_t lead, trail;
    /* float */
    xv_t fcnt, fzcnt, fsum;
    /* buckets: integer: value (delta across buckets) and its delta over time; float: xor state */
    uint32_t npb, nnb;
    int64_t *pb, *nb, *pbd, *nbd;
    xv_t *pbx, *nbx;
} app_t;

static void app_free(app_t *a) {
    free(a->w.b); free(a->ps); free(a->ns); free(a->cv);
    free(a->pb); free(a->nb); free(a->pbd); free(a->nbd); free(a->pbx); free(a->nbx);
    memset(a, 0, sizeof(*a));
}

/* a fresh chunk: Chunk.Appender() of an empty chunk */
static int app_init(app_t *a, int is_float) {
    memset(a, 0, sizeof(*a));
    a->is_float = (uint8_t)is_float;
    if (bw_reserve(&a->w, 24)) return -1;
    a->w.nbits = 24;
    a->t = INT64_MIN;
    a->lead = 0xff;
    a->fcnt.lead = a->fzcnt.lead = a->fsum.lead = 0xff;
    return 0;
}

INLINE uint16_t app_num(const app_t *a) { return (uint16_t)((a->w.b[0] << 8) | a->w.b[1]); }
INLINE uint8_t app_header(const app_t *a) { return a->w.b[2] & 0xC0; }
INLINE void app_set_header(app_t *a, uint8_t h) { a->w.b[2] = (uint8_t)((a->w.b[2] & 0x3F) | (h & 0xC0)); }

static void *dupmem(const void *p, size_t n) {
    if (n == 0) return NULL;
    void *q = malloc(n);
    if (q) memcpy(q, p, n);
    return q;
}

/* upper bound of the bits one sample takes */
static uint64_t sample_bits(const hist_t *h, int first) {
    uint64_t b = 3 * 72 + 64 + 2 * (uint64_t)(h->npb + h->nnb) * 78 + 64;
    if (first) b += 8 + 64 + 72 + 2 * 72 + (uint64_t)(h->nps + h->nns) * 144 + 72 + (uint64_t)h->ncv * 72;
    return b;
}

/* appendHistogram / appendFloatHistogram: -1 out of memory */
static int app_append_raw(app_t *a, int64_t t, const hist_t *hin) {
    hist_t stale;
    const hist_t *h = hin;
    if (is_stale(hin->sum)) {
        memset(&stale, 0, sizeof(stale));
        stale.sum = hin->sum;
        h = &stale;
    }
    uint16_t num = app_num(a);
    if (bw_reserve(&a->w, sample_bits(h, num == 0))) return -1;
    bw_t *w = &a->w;
    int64_t tdelta = 0;
    if (num == 0) {
        put_zero_threshold(w, h->zt);
        put_varbit_int(w, h->schema);
        put_varbit_uint(w, h->nps);
        for (uint32_t i = 0; i < h->nps; i++) { put_varbit_uint(w, h->ps[i].len); put_varbit_int(w, h->ps[i].off); }
        put_varbit_uint(w, h->nns);
        for (uint32_t i = 0; i < h->nns; i++) { put_varbit_uint(w, h->ns[i].len); put_varbit_int(w, h->ns[i].off); }
        if (h->schema == CUSTOM_SCHEMA) {
            put_varbit_uint(w, h->ncv);
            for (uint32_t i = 0; i < h->ncv; i++) put_custom_bound(w, h->cv[i]);
        }
        a->schema = h->schema;
        a->zt = h->zt;
        free(a->ps); free(a->ns); free(a->cv);
        a->ps = dupmem(h->ps, h->nps * sizeof(span_t)); a->nps = h->nps;
        a->ns = dupmem(h->ns, h->nns * sizeof(span_t)); a->nns = h->nns;
        a->cv = dupmem(h->cv, h->ncv * sizeof(double)); a->ncv = h->ncv;
        if ((h->nps && !a->ps) || (h->nns && !a->ns) || (h->ncv && !a->cv)) return -1;
        uint32_t np = (uint32_t)count_spans(h->ps, h->nps), nn = (uint32_t)count_spans(h->ns, h->nns);
        free(a->pb); free(a->nb); free(a->pbd); free(a->nbd); free(a->pbx); free(a->nbx);
        a->pb = a->nb = a->pbd = a->nbd = NULL;
        a->pbx = a->nbx = NULL;
        a->npb = np;
        a->nnb = nn;
        if (a->is_float) {
            if (np && !(a->pbx = calloc(np, sizeof(xv_t)))) return -1;
            if (nn && !(a->nbx = calloc(nn, sizeof(xv_t)))) return -1;
            for (uint32_t i = 0; i < np; i++) { a->pbx[i].v = h->pb[i]; a->pbx[i].lead = 0xff; }
            for (uint32_t i = 0; i < nn; i++) { a->nbx[i].v = h->nb[i]; a->nbx[i].lead = 0xff; }
            put_varbit_int(w, t);
            bw_bits(w, h->cnt, 64);
            bw_bits(w, h->zcnt, 64);
            bw_bits(w, f2u(h->sum), 64);
            a->fcnt.v = h->cnt;
            a->fzcnt.v = h->zcnt;
            a->fsum.v = f2u(h->sum);
            for (uint32_t i = 0; i < h->npb; i++) bw_bits(w, h->pb[i], 64);
            for (uint32_t i = 0; i < h->nnb; i++) bw_bits(w, h->nb[i], 64);
        } else {
            if (np && (!(a->pb = calloc(np, 8)) || !(a->pbd = calloc(np, 8)))) return -1;
            if (nn && (!(a->nb = calloc(nn, 8)) || !(a->nbd = calloc(nn, 8)))) return -1;
            put_varbit_int(w, t);
            put_varbit_uint(w, h->cnt);
            put_varbit_uint(w, h->zcnt);
            bw_bits(w, f2u(h->sum), 64);
            for (uint32_t i = 0; i < h->npb; i++) put_varbit_int(w, (int64_t)h->pb[i]);
            for (uint32_t i = 0; i < h->nnb; i++) put_varbit_int(w, (int64_t)h->nb[i]);
        }
    } else {
        tdelta = wsub(t, a->t);
        put_varbit_int(w, wsub(tdelta, a->tdelta));
        if (a->is_float) {
            xor_write(w, h->cnt, a->fcnt.v, &a->fcnt.lead, &a->fcnt.trail); a->fcnt.v = h->cnt;
            xor_write(w, h->zcnt, a->fzcnt.v, &a->fzcnt.lead, &a->fzcnt.trail); a->fzcnt.v = h->zcnt;
            xor_write(w, f2u(h->sum), a->fsum.v, &a->fsum.lead, &a->fsum.trail); a->fsum.v = f2u(h->sum);
            for (uint32_t i = 0; i < h->npb && i < a->npb; i++) {
                xor_write(w, h->pb[i], a->pbx[i].v, &a->pbx[i].lead, &a->pbx[i].trail); a->pbx[i].v = h->pb[i];
            }
            for (uint32_t i = 0; i < h->nnb && i < a->nnb; i++) {
                xor_write(w, h->nb[i], a->nbx[i].v, &a->nbx[i].lead, &a->nbx[i].trail); a->nbx[i].v = h->nb[i];
            }
        } else {
            int64_t cntd = wsub((int64_t)h->cnt, (int64_t)a->cnt), zcntd = wsub((int64_t)h->zcnt, (int64_t)a->zcnt);
            int64_t cntdod = wsub(cntd, a->cntd), zcntdod = wsub(zcntd, a->zcntd);
            if (is_stale(h->sum)) cntdod = zcntdod = 0;
            put_varbit_int(w, cntdod);
            put_varbit_int(w, zcntdod);
            xor_write(w, f2u(h->sum), a->sum, &a->lead, &a->trail);
            for (uint32_t i = 0; i < h->npb && i < a->npb; i++) {
                int64_t d = wsub((int64_t)h->pb[i], a->pb[i]);
                put_varbit_int(w, wsub(d, a->pbd[i]));
                a->pbd[i] = d;
            }
            for (uint32_t i = 0; i < h->nnb && i < a->nnb; i++) {
                int64_t d = wsub((int64_t)h->nb[i], a->nb[i]);
                put_varbit_int(w, wsub(d, a->nbd[i]));
                a->nbd[i] = d;
            }
            a->cntd = cntd;
            a->zcntd = zcntd;
        }
    }
    num++;
    w->b[0] = (uint8_t)(num >> 8);
    w->b[1] = (uint8_t)num;
    a->t = t;
    a->tdelta = tdelta;
    if (!a->is_float) {
        a->cnt = h->cnt;
        a->zcnt = h->zcnt;
        for (uint32_t i = 0; i < h->npb && i < a->npb; i++) a->pb[i] = (int64_t)h->pb[i];
        for (uint32_t i = 0; i < h->nnb && i < a->nnb; i++) a->nb[i] = (int64_t)h->nb[i];
        a->sum = f2u(h->sum);
    }
    return 0;
}

/* ---------------------------------------------------------- layout arithmetic */

typedef struct { int pos, num, bidx; } ins_t;
typedef struct { ins_t *v; int n, cap; } insv_t;

static int insv_push(insv_t *s, ins_t x) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 8;
        ins_t *nv = realloc(s->v, (size_t)nc * sizeof(ins_t));
        if (!nv) return -1;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = x;
    return 0;
}

typedef struct { const span_t *s; uint32_t n; uint32_t span; int64_t bucket, idx; } bit_t;

static void bit_init(bit_t *it, const span_t *s, uint32_t n) {
    it->s = s; it->n = n; it->span = 0; it->bucket = -1; it->idx = -1;
    if (n > 0) it->idx += s[0].off;
}

static int bit_next(bit_t *it, int64_t *out) {
    if (it->span >= it->n) return 0;
    if (it->bucket < (int64_t)it->s[it->span].len - 1) {
        it->bucket++;
        it->idx++;
        *out = it->idx;
        return 1;
    }
    while (it->span + 1 < it->n) {
        it->span++;
        it->idx += (int64_t)it->s[it->span].off + 1;
        it->bucket = 0;
        if (it->s[it->span].len == 0) { it->idx--; continue; }
        *out = it->idx;
        return 1;
    }
    return 0;
}

/* expand{Int,Float}SpansAndBuckets: inserts making a's layout cover b's (forward) and b's
 * cover a's empty buckets (backward); 0 when b lost a used bucket or one went down (a reset),
 * 1 ok, -1 out of memory. Counts: integer buckets are deltas (summed), float absolute. */
static int expand_spans_and_buckets(const span_t *as, uint32_t an, const span_t *bs, uint32_t bn,
                                    const int64_t *ab_i, const xv_t *ab_f, const uint64_t *bb, int is_float,
                                    insv_t *fwd, insv_t *bwd) {
    bit_t ai, bi;
    bit_init(&ai, as, an);
    bit_init(&bi, bs, bn);
    ins_t aint = {0, 0, 0}, bint = {0, 0, 0};
    int64_t aidx = 0, bidx = 0;
    int aok = bit_next(&ai, &aidx), bok = bit_next(&bi, &bidx);
    double acf = 0, bcf = 0;
    int64_t aci = 0, bci = 0;
    uint32_t acx = 0, bcx = 0;
#define A_LOAD() do { if (is_float) acf = u2f(ab_f[acx].v); else aci = wadd(aci, ab_i[acx]); } while (0)
#define B_LOAD() do { if (is_float) bcf = u2f(bb[bcx]); else bci = wadd(bci, (int64_t)bb[bcx]); } while (0)
    if (aok) A_LOAD();
    if (bok) B_LOAD();
#define ADD_INSERT(vec, ins, other) do {                                             \
        if ((ins).num == 0) (ins).bidx = (int)(other);                               \
        else if ((ins).bidx + (ins).num != (int)(other)) {                           \
            if (insv_push(vec, ins)) return -1;                                      \
            (ins).num = 0; (ins).bidx = (int)(other);                                \
        }                                                                            \
        (ins).num++;                                                                 \
    } while (0)
#define ADV_A() do { if (aint.num > 0) { if (insv_push(fwd, aint)) return -1; aint.num = 0; } \
        aok = bit_next(&ai, &aidx); aint.pos++; acx++; if (aok) A_LOAD(); } while (0)
#define ADV_B() do { if (bint.num > 0) { if (insv_push(bwd, bint)) return -1; bint.num = 0; } \
        bok = bit_next(&bi, &bidx); bint.pos++; bcx++; if (bok) B_LOAD(); } while (0)
#define A_ZERO() (is_float ? acf == 0 : aci == 0)
#define A_GT_B() (is_float ? acf > bcf : aci > bci)
    for (;;) {
        if (aok && bok) {
            if (aidx == bidx) {
                if (A_GT_B()) return 0;
                ADV_A();
                ADV_B();
            } else if (aidx < bidx) {
                if (A_ZERO()) { ADD_INSERT(bwd, bint, aidx); ADV_A(); continue; }
                return 0;
            } else {
                ADD_INSERT(fwd, aint, bidx);
                ADV_B();
            }
        } else if (aok) {
            if (A_ZERO()) { ADD_INSERT(bwd, bint, aidx); ADV_A(); continue; }
            return 0;
        } else if (bok) {
            ADD_INSERT(fwd, aint, bidx);
            ADV_B();
        } else {
            if (aint.num > 0 && insv_push(fwd, aint)) return -1;
            if (bint.num > 0 && insv_push(bwd, bint)) return -1;
            return 1;
        }
    }
#undef A_LOAD
#undef B_LOAD
#undef ADV_A
#undef ADV_B
#undef A_ZERO
#undef A_GT_B
}

typedef struct { span_t *v; uint32_t n, cap; int64_t last; } spanv_t;

static int spanv_add_bucket(spanv_t *m, int64_t b) {
    int64_t off = b - m->last - 1;
    if (off == 0 && m->n > 0) {
        m->v[m->n - 1].len++;
    } else {
        if (m->n == 0) off++;
        if (m->n == m->cap) {
            uint32_t nc = m->cap ? m->cap * 2 : 8;
            span_t *nv = realloc(m->v, nc * sizeof(span_t));
            if (!nv) return -1;
            m->v = nv;
            m->cap = nc;
        }
        m->v[m->n].off = (int32_t)off;
        m->v[m->n].len = 1;
        m->n++;
    }
    m->last = b;
    return 0;
}

/* expandSpansBothWays (gauge histograms): forward and backward inserts and the merged layout */
static int expand_both_ways(const span_t *as, uint32_t an, const span_t *bs, uint32_t bn, insv_t *fwd, insv_t *bwd,
                            spanv_t *merged) {
    bit_t ai, bi;
    bit_init(&ai, as, an);
    bit_init(&bi, bs, bn);
    ins_t fi = {0, 0, 0}, bi_ = {0, 0, 0};
    int64_t av = 0, bv = 0;
    int aok = bit_next(&ai, &av), bok = bit_next(&bi, &bv);
    merged->n = 0;
    merged->last = 0;
    for (;;) {
        if (aok && bok) {
            if (av == bv) {
                if (fi.num > 0) { if (insv_push(fwd, fi)) return -1; fi.num = 0; }
                if (bi_.num > 0) { if (insv_push(bwd, bi_)) return -1; bi_.num = 0; }
                if (spanv_add_bucket(merged, av)) return -1;
                aok = bit_next(&ai, &av);
                bok = bit_next(&bi, &bv);
                fi.pos++;
                bi_.pos++;
            } else if (av < bv) {
                bi_.num++;
                if (fi.num > 0) { if (insv_push(fwd, fi)) return -1; fi.num = 0; }
                if (spanv_add_bucket(merged, av)) return -1;
                fi.pos++;
                aok = bit_next(&ai, &av);
            } else {
                fi.num++;
                if (bi_.num > 0) { if (insv_push(bwd, bi_)) return -1; bi_.num = 0; }
                if (spanv_add_bucket(merged, bv)) return -1;
                bi_.pos++;
                bok = bit_next(&bi, &bv);
            }
        } else if (aok) {
            bi_.num++;
            if (spanv_add_bucket(merged, av)) return -1;
            aok = bit_next(&ai, &av);
        } else if (bok) {
            fi.num++;
            if (spanv_add_bucket(merged, bv)) return -1;
            bok = bit_next(&bi, &bv);
        } else {
            if (fi.num > 0 && insv_push(fwd, fi)) return -1;
            if (bi_.num > 0 && insv_push(bwd, bi_)) return -1;
            return 0;
        }
    }
}

/* adjustForInserts: the spans with the inserted buckets added */
static int adjust_for_inserts(const span_t *s, uint32_t n, const insv_t *ins, spanv_t *out) {
    out->n = 0;
    out->last = 0;
    if (ins->n == 0) {
        for (uint32_t i = 0; i < n; i++) {
            if (out->n == out->cap) {
                uint32_t nc = out->cap ? out->cap * 2 : 8;
                span_t *nv = realloc(out->v, nc * sizeof(span_t));
                if (!nv) return -1;
                out->v = nv;
                out->cap = nc;
            }
            out->v[out->n++] = s[i];
        }
        return 0;
    }
    bit_t it;
    bit_init(&it, s, n);
    int i = 0;
    int64_t iidx = ins->v[0].bidx, inum = ins->v[0].num, b = 0;
#define CONSUME() do { if (--inum == 0) { i++; if (i < ins->n) { iidx = ins->v[i].bidx; inum = ins->v[i].num; } } \
        else iidx++; } while (0)
    int ok = bit_next(&it, &b);
    while (ok) {
        if (i < ins->n && iidx < b) {
            if (spanv_add_bucket(out, iidx)) return -1;
            CONSUME();
        } else {
            if (spanv_add_bucket(out, b)) return -1;
            ok = bit_next(&it, &b);
        }
    }
    while (i < ins->n) {
        if (spanv_add_bucket(out, iidx)) return -1;
        CONSUME();
    }
#undef CONSUME
    return 0;
}

/* insert(): bucket values widened by the inserts (deltas: integer buckets keep their running sum) */
static void insert_buckets(const uint64_t *in, uint32_t nin, uint64_t *out, const insv_t *ins, int deltas) {
    uint32_t oi = 0;
    int64_t v = 0;
    int ii = 0;
    for (uint32_t i = 0; i < nin; i++) {
        int64_t d = (int64_t)in[i];
        if (ii >= ins->n || (int)i != ins->v[ii].pos) {
            out[oi++] = in[i];
            v = wadd(v, d);
            continue;
        }
        int first = 1;
        while (ii < ins->n && (int)i == ins->v[ii].pos) {
            if (deltas && first) { out[oi++] = (uint64_t)wsub(0, v); first = 0; }
            else out[oi++] = 0;
            for (int x = 1; x < ins->v[ii].num; x++) out[oi++] = 0;
            ii++;
        }
        out[oi++] = deltas ? (uint64_t)wadd(d, v) : in[i];
        v = wadd(v, d);
    }
    while (ii < ins->n) {
        out[oi++] = deltas ? (uint64_t)wsub(0, v) : 0;
        for (int x = 1; x < ins->v[ii].num; x++) out[oi++] = 0;
        ii++;
        v = 0;
    }
}

static int cv_match(const double *a, uint32_t na, const double *b, uint32_t nb) {
    if (na != nb) return 0;
    for (uint32_t i = 0; i < na; i++) if (a[i] != b[i]) return 0;
    return 1;
}

/* ------------------------------------------------------------------ decoding */

/* A decoded chunk: layout once, samples as columns; bucket words per non-stale sample. */
typedef struct {
    uint8_t header, is_float;
    int32_t schema;
    double zt;
    span_t *ps, *ns;
    uint32_t nps, nns, npb, nnb;
    double *cv;
    uint32_t ncv;
    uint32_t n;
    int64_t *t;
    uint64_t *cnt, *zcnt, *sum;
    uint8_t *stale;
    uint64_t *buckets;  /* (npb + nnb) words per sample, zeros for stale ones */
    const char *why;
    uint64_t err_bit;
} dec_t;

static void dec_free(dec_t *d) {
    free(d->ps); free(d->ns); free(d->cv); free(d->t); free(d->cnt); free(d->zcnt); free(d->sum);
    free(d->stale); free(d->buckets);
    memset(d, 0, sizeof(*d));
}

static int read_spans(br_t *r, span_t **out, uint32_t *n, uint64_t *nb) {
    uint64_t k = read_varbit_uint(r);
    if (r->err) return -1;
    if (k > br_left(r) / 2) { r->err = 4; return -1; }  /* each span takes >= 2 bits */
    *n = (uint32_t)k;
    *out = k ? malloc(k * sizeof(span_t)) : NULL;
    if (k && !*out) return -2;
    uint64_t tot = 0;
    for (uint64_t i = 0; i < k; i++) {
        uint64_t len = read_varbit_uint(r);
        int64_t off = read_varbit_int(r);
        if (r->err) return -1;
        if (len > UINT32_MAX || off < INT32_MIN || off > INT32_MAX) { r->err = 5; return -1; }
        (*out)[i].len = (uint32_t)len;
        (*out)[i].off = (int32_t)off;
        tot += len;
        if (tot > r->nbits) { r->err = 6; return -1; }
    }
    *nb = tot;
    return 0;
}

/* 0 ok; -1 malformed (d->why, d->err_bit); -2 out of memory */
static int decode_chunk(const uint8_t *p, size_t len, int is_float, dec_t *d) {
    memset(d, 0, sizeof(*d));
    d->is_float = (uint8_t)is_float;
    if (len < 3) { d->why = "chunk shorter than its 3-byte header"; return -1; }
    uint32_t n = (uint32_t)((p[0] << 8) | p[1]);
    d->header = p[2] & 0xC0;
    br_t r = {p + 3, (uint64_t)(len - 3) * 8, 0, 0};
    if (n == 0) return 0;
    uint64_t np = 0, nn = 0;
    d->zt = read_zero_threshold(&r);
    d->schema = (int32_t)read_varbit_int(&r);
    if (r.err) goto bad;
    int rc = read_spans(&r, &d->ps, &d->nps, &np);
    if (rc == -2) return -2;
    if (rc) goto bad;
    rc = read_spans(&r, &d->ns, &d->nns, &nn);
    if (rc == -2) return -2;
    if (rc) goto bad;
    if (d->schema == CUSTOM_SCHEMA) {
        uint64_t k = read_varbit_uint(&r);
        if (r.err) goto bad;
        if (k > br_left(&r)) { r.err = 4; goto bad; }
        d->ncv = (uint32_t)k;
        if (k && !(d->cv = malloc(k * 8))) return -2;
        for (uint64_t i = 0; i < k; i++) d->cv[i] = read_custom_bound(&r);
        if (r.err) goto bad;
    } else if (!(d->schema >= -9 && d->schema <= 52)) {
        d->why = "unknown histogram schema";
        d->err_bit = 24 + r.pos;
        return -1;
    }
    if (np + nn > br_left(&r)) { r.err = 6; goto bad; }  /* the first sample has >= 1 bit per bucket */
    d->npb = (uint32_t)np;
    d->nnb = (uint32_t)nn;
    uint64_t nbk = np + nn;
    /* every sample after the first takes >= 4 bits (t, count, zero count, sum): bound n */
    if (n > 1 && (uint64_t)(n - 1) * 4 > br_left(&r)) { d->why = "sample count exceeds the chunk's bits"; d->err_bit = 0; return -1; }
    d->t = malloc((size_t)n * 8); d->cnt = malloc((size_t)n * 8); d->zcnt = malloc((size_t)n * 8);
    d->sum = malloc((size_t)n * 8); d->stale = calloc(n, 1);
    if (!d->t || !d->cnt || !d->zcnt || !d->sum || !d->stale) return -2;
    /* buckets of all samples: each non-stale sample takes >= 1 bit per bucket, so n * nbk is
     * bounded by the chunk's bits plus the stale ones, which we store as zeros: cap them too */
    if (nbk && (uint64_t)n * nbk > r.nbits + nbk) { d->why = "bucket values exceed the chunk's bits"; return -1; }
    if (nbk && !(d->buckets = calloc((size_t)n * nbk, 8))) return -2;
    int64_t *ib = NULL, *ibd = NULL;
    xv_t *xb = NULL;
    xv_t xc = {0, 0, 0}, xz = {0, 0, 0}, xs = {0, 0, 0};
    int64_t t = 0, td = 0, cntd = 0, zcntd = 0;
    uint64_t cnt = 0, zcnt = 0, sum = 0;
    uint8_t lead = 0, trail = 0;
    if (nbk) {
        if (is_float) { if (!(xb = calloc(nbk, sizeof(xv_t)))) return -2; }
        else if (!(ib = calloc(nbk, 8)) || !(ibd = calloc(nbk, 8))) { free(ib); return -2; }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t *bk = d->buckets ? d->buckets + (size_t)i * nbk : NULL;
        if (i == 0) {
            t = read_varbit_int(&r);
            if (is_float) {
                xc.v = br_bits(&r, 64); xz.v = br_bits(&r, 64); xs.v = br_bits(&r, 64);
                for (uint64_t j = 0; j < nbk; j++) xb[j].v = br_bits(&r, 64);
            } else {
                cnt = read_varbit_uint(&r); zcnt = read_varbit_uint(&r); sum = br_bits(&r, 64);
                for (uint64_t j = 0; j < nbk; j++) ib[j] = read_varbit_int(&r);
            }
        } else {
            td = wadd(td, read_varbit_int(&r));
            t = wadd(t, td);
            if (is_float) {
                xor_read(&r, &xc.v, &xc.lead, &xc.trail);
                xor_read(&r, &xz.v, &xz.lead, &xz.trail);
                xor_read(&r, &xs.v, &xs.lead, &xs.trail);
                if (!r.err && xs.v != STALE_NAN_BITS)
                    for (uint64_t j = 0; j < nbk; j++) xor_read(&r, &xb[j].v, &xb[j].lead, &xb[j].trail);
            } else {
                cntd = wadd(cntd, read_varbit_int(&r));
                cnt = (uint64_t)wadd((int64_t)cnt, cntd);
                zcntd = wadd(zcntd, read_varbit_int(&r));
                zcnt = (uint64_t)wadd((int64_t)zcnt, zcntd);
                xor_read(&r, &sum, &lead, &trail);
                if (!r.err && sum != STALE_NAN_BITS)
                    for (uint64_t j = 0; j < nbk; j++) {
                        ibd[j] = wadd(ibd[j], read_varbit_int(&r));
                        ib[j] = wadd(ib[j], ibd[j]);
                    }
            }
        }
        if (r.err) { free(ib); free(ibd); free(xb); goto bad; }
        d->t[i] = t;
        uint64_t s = is_float ? xs.v : sum;
        d->sum[i] = s;
        if (s == STALE_NAN_BITS) {
            d->stale[i] = 1;
            d->cnt[i] = d->zcnt[i] = 0;
        } else {
            d->cnt[i] = is_float ? xc.v : cnt;
            d->zcnt[i] = is_float ? xz.v : zcnt;
            for (uint64_t j = 0; j < nbk; j++) bk[j] = is_float ? xb[j].v : (uint64_t)ib[j];
        }
        d->n = i + 1;
    }
    free(ib); free(ibd); free(xb);
    return 0;
bad:
    d->err_bit = 24 + r.pos;
    d->why = r.err == 2 ? "invalid varbit prefix" : r.err == 3 ? "invalid XOR value" :
             r.err == 4 ? "span or bound count exceeds the chunk" : r.err == 5 ? "span out of range" :
             r.err == 6 ? "bucket count exceeds the chunk" : "chunk ends inside a sample";
    return -1;
}

/* hist_t view of decoded sample i, with layout spans given */
static void dec_sample(const dec_t *d, uint32_t i, hist_t *h) {
    memset(h, 0, sizeof(*h));
    h->sum = u2f(d->sum[i]);
    if (d->stale[i]) return;
    h->schema = d->schema; h->zt = d->zt; h->cnt = d->cnt[i]; h->zcnt = d->zcnt[i];
    h->ps = d->ps; h->nps = d->nps; h->ns = d->ns; h->nns = d->nns;
    h->cv = d->cv; h->ncv = d->ncv;
    uint64_t nbk = (uint64_t)d->npb + d->nnb;
    h->pb = d->buckets ? d->buckets + (size_t)i * nbk : NULL;
    h->npb = d->npb;
    h->nb = h->pb ? h->pb + d->npb : NULL;
    h->nnb = d->nnb;
}

/* recode: the chunk re-encoded with inserted buckets under the new spans; the appender is
 * replaced by the new chunk's. -1 out of memory. */
static int app_recode(app_t *a, const insv_t *pf, const insv_t *nf, const span_t *ps, uint32_t nps,
                      const span_t *ns, uint32_t nns) {
    dec_t d;
    int rc = decode_chunk(a->w.b, bw_len(&a->w), a->is_float, &d);
    if (rc) { dec_free(&d); return -1; }  /* our own chunk decodes; only memory can fail here */
    uint8_t header = app_header(a);
    uint32_t np = (uint32_t)count_spans(ps, nps), nn = (uint32_t)count_spans(ns, nns);
    uint64_t *pbuf = np ? malloc((size_t)np * 8) : NULL, *nbuf = nn ? malloc((size_t)nn * 8) : NULL;
    app_t b;
    if ((np && !pbuf) || (nn && !nbuf) || app_init(&b, a->is_float)) { free(pbuf); free(nbuf); dec_free(&d); return -1; }
    for (uint32_t i = 0; i < d.n; i++) {
        hist_t h;
        dec_sample(&d, i, &h);
        if (!d.stale[i]) {
            h.ps = ps; h.nps = nps; h.ns = ns; h.nns = nns;
            if (pf->n) { memset(pbuf, 0, (size_t)np * 8); insert_buckets(h.pb, h.npb, pbuf, pf, !a->is_float); h.pb = pbuf; h.npb = np; }
            if (nf->n) { memset(nbuf, 0, (size_t)nn * 8); insert_buckets(h.nb, h.nnb, nbuf, nf, !a->is_float); h.nb = nbuf; h.nnb = nn; }
        }
        if (app_append_raw(&b, d.t[i], &h)) { app_free(&b); free(pbuf); free(nbuf); dec_free(&d); return -1; }
    }
    app_set_header(&b, header);
    free(pbuf); free(nbuf); dec_free(&d);
    app_free(a);
    *a = b;
    return 0;
}

/* appendable (counter histograms): fills forward/backward inserts; returns okToAppend and sets
 * *hint (for floats only reset/not matters) */
static int app_appendable(const app_t *a, const hist_t *h, insv_t *pf, insv_t *nf, insv_t *pb, insv_t *nb,
                          uint8_t *hdr, int *nomem) {
    *hdr = HDR_NOT_RESET;
    pf->n = nf->n = pb->n = nb->n = 0;
    if (app_num(a) > 0 && app_header(a) == HDR_GAUGE) return 0;
    if (h->hint == HINT_YES) { *hdr = HDR_RESET; return 0; }
    if (is_stale(h->sum)) return 1;
    uint64_t asum = a->is_float ? a->fsum.v : a->sum;
    if (asum == STALE_NAN_BITS) { *hdr = HDR_UNKNOWN; return 0; }
    int lt_cnt = a->is_float ? u2f(h->cnt) < u2f(a->fcnt.v) : h->cnt < a->cnt;
    if (lt_cnt) { *hdr = HDR_RESET; return 0; }
    if (h->schema != a->schema || h->zt != a->zt) { *hdr = HDR_UNKNOWN; return 0; }
    if (h->schema == CUSTOM_SCHEMA && !cv_match(h->cv, h->ncv, a->cv, a->ncv)) { *hdr = HDR_RESET; return 0; }
    int lt_z = a->is_float ? u2f(h->zcnt) < u2f(a->fzcnt.v) : h->zcnt < a->zcnt;
    if (lt_z) { *hdr = HDR_RESET; return 0; }
    int r = expand_spans_and_buckets(a->ps, a->nps, h->ps, h->nps, a->pb, a->pbx, h->pb, a->is_float, pf, pb);
    if (r < 0) { *nomem = 1; return 0; }
    if (r == 0) { *hdr = HDR_RESET; return 0; }
    r = expand_spans_and_buckets(a->ns, a->nns, h->ns, h->nns, a->nb, a->nbx, h->nb, a->is_float, nf, nb);
    if (r < 0) { *nomem = 1; return 0; }
    if (r == 0) { *hdr = HDR_RESET; return 0; }
    return 1;
}

typedef struct {
    insv_t pf, nf, pb, nb;
    spanv_t sp, sn;
    uint64_t *wb; size_t wb_cap;  /* widened buckets of the appended histogram */
} scratch_t;

static void scratch_free(scratch_t *s) {
    free(s->pf.v); free(s->nf.v); free(s->pb.v); free(s->nb.v); free(s->sp.v); free(s->sn.v); free(s->wb);
    memset(s, 0, sizeof(*s));
}

static int widen_hist(scratch_t *sc, hist_t *h, const span_t *ps, uint32_t nps, const span_t *ns, uint32_t nns,
                      int is_float) {
    uint64_t np = count_spans(ps, nps), nn = count_spans(ns, nns);
    if (np + nn > sc->wb_cap) {
        uint64_t *nb = realloc(sc->wb, (size_t)(np + nn) * 8);
        if (!nb) return -1;
        sc->wb = nb;
        sc->wb_cap = (size_t)(np + nn);
    }
    memset(sc->wb, 0, (size_t)(np + nn) * 8);
    if (sc->pb.n) { insert_buckets(h->pb, h->npb, sc->wb, &sc->pb, !is_float); h->pb = sc->wb; h->npb = (uint32_t)np; }
    else if (h->npb) { memcpy(sc->wb, h->pb, h->npb * 8ULL); h->pb = sc->wb; }
    if (sc->nb.n) { insert_buckets(h->nb, h->nnb, sc->wb + np, &sc->nb, !is_float); h->nb = sc->wb + np; h->nnb = (uint32_t)nn; }
    else if (h->nnb) { memcpy(sc->wb + np, h->nb, h->nnb * 8ULL); h->nb = sc->wb + np; }
    h->ps = ps; h->nps = nps; h->ns = ns; h->nns = nns;
    return 0;
}

/* AppendHistogram / AppendFloatHistogram (appendOnly false). *a is the open chunk's appender
 * (never empty here: the caller appends a first sample with app_first). Returns 0 appended in
 * place (possibly re-coded: *recoded), 1 a new chunk is needed (*hdr its header), -1 OOM.
 * h may be widened in place (its buckets then point into sc). */
static int app_append(app_t *a, scratch_t *sc, int64_t t, hist_t *h, int *recoded, uint8_t *hdr) {
    int nomem = 0;
    *recoded = 0;
    if (h->hint != HINT_GAUGE) {
        uint8_t crh;
        int ok = app_appendable(a, h, &sc->pf, &sc->nf, &sc->pb, &sc->nb, &crh, &nomem);
        if (nomem) return -1;
        if (!ok || crh != HDR_NOT_RESET) {
            if (a->is_float) *hdr = crh == HDR_RESET ? HDR_RESET : HDR_UNKNOWN;
            else *hdr = crh;
            return 1;
        }
        if (sc->pb.n || sc->nb.n) {
            if (sc->pf.n == 0 && sc->nf.n == 0) {
                if (widen_hist(sc, h, a->ps, a->nps, a->ns, a->nns, a->is_float)) return -1;
            } else {
                if (adjust_for_inserts(h->ps, h->nps, &sc->pb, &sc->sp) ||
                    adjust_for_inserts(h->ns, h->nns, &sc->nb, &sc->sn)) return -1;
                if (widen_hist(sc, h, sc->sp.v, sc->sp.n, sc->sn.v, sc->sn.n, a->is_float)) return -1;
            }
        }
        if (sc->pf.n || sc->nf.n) {
            if (app_recode(a, &sc->pf, &sc->nf, h->ps, h->nps, h->ns, h->nns)) return -1;
            *recoded = 1;
        }
        return app_append_raw(a, t, h);
    }
    /* gauge */
    sc->pf.n = sc->nf.n = sc->pb.n = sc->nb.n = 0;
    int ok = 1;
    if (app_num(a) > 0 && app_header(a) != HDR_GAUGE) ok = 0;
    else if (is_stale(h->sum)) ok = 2;
    else if ((a->is_float ? a->fsum.v : a->sum) == STALE_NAN_BITS) ok = 0;
    else if (h->schema != a->schema || h->zt != a->zt) ok = 0;
    else if (h->schema == CUSTOM_SCHEMA && !cv_match(h->cv, h->ncv, a->cv, a->ncv)) ok = 0;
    if (!ok) { *hdr = HDR_GAUGE; return 1; }
    if (ok == 1) {
        if (expand_both_ways(a->ps, a->nps, h->ps, h->nps, &sc->pf, &sc->pb, &sc->sp) ||
            expand_both_ways(a->ns, a->nns, h->ns, h->nns, &sc->nf, &sc->nb, &sc->sn)) return -1;
        if (sc->pb.n || sc->nb.n) {
            if (widen_hist(sc, h, sc->sp.v, sc->sp.n, sc->sn.v, sc->sn.n, a->is_float)) return -1;
        }
        if (sc->pf.n || sc->nf.n) {
            if (app_recode(a, &sc->pf, &sc->nf, h->ps, h->nps, h->ns, h->nns)) return -1;
            *recoded = 1;
        }
    }
    return app_append_raw(a, t, h);
}

/* the first sample of a new chunk; prev: the previous chunk's appender of the same kind when
 * the chunk was cut from one (its header then says whether h resets it), else NULL */
static int app_first(app_t *a, app_t *prev, scratch_t *sc, int64_t t, const hist_t *h, uint8_t forced) {
    if (app_append_raw(a, t, h)) return -1;
    if (h->hint == HINT_GAUGE) { app_set_header(a, HDR_GAUGE); return 0; }
    if (h->hint == HINT_YES) { app_set_header(a, HDR_RESET); return 0; }
    if (forced != 0xff) { app_set_header(a, forced); return 0; }
    if (prev) {
        uint8_t crh;
        int nomem = 0;
        app_appendable(prev, h, &sc->pf, &sc->nf, &sc->pb, &sc->nb, &crh, &nomem);
        if (nomem) return -1;
        if (a->is_float) crh = crh == HDR_RESET ? HDR_RESET : HDR_NOT_RESET;
        app_set_header(a, crh);
    }
    return 0;
}

/* ------------------------------------------------------------- validation */

/* Histogram.Validate / FloatHistogram.Validate: NULL when valid, else Prometheus' reason. */
static const char *validate(const hist_t *h, int is_float) {
    if (h->schema == CUSTOM_SCHEMA) {
        double prev = -INFINITY;
        for (uint32_t i = 0; i < h->ncv; i++) {
            if (isnan(h->cv[i])) return "custom buckets: histogram custom bounds must not be NaN";
            if (i > 0 && h->cv[i] <= prev) return "custom buckets: histogram custom bounds must be in strictly increasing order";
            prev = h->cv[i];
        }
        if (prev == INFINITY) return "custom buckets: histogram custom bounds must be finite";
        uint64_t nb = 0, tot = 0;
        for (uint32_t i = 0; i < h->nps; i++) {
            if (h->ps[i].off < 0) return "custom buckets: span with negative offset";
            nb += h->ps[i].len;
            tot += h->ps[i].len + (uint64_t)h->ps[i].off;
        }
        if (nb != h->npb) return "custom buckets: spans need a different number of buckets";
        if ((uint64_t)h->ncv + 1 < tot) return "custom buckets: histogram custom bounds are too few";
        if (is_float ? u2f(h->zcnt) != 0 : h->zcnt != 0) return "custom buckets: must have zero count of 0";
        if (h->zt != 0) return "custom buckets: must have zero threshold of 0";
        if (h->nns) return "custom buckets: must not have negative spans";
        if (h->nnb) return "custom buckets: must not have negative buckets";
    } else if (h->schema >= -4 && h->schema <= 8) {
        const span_t *sp[2] = {h->ps, h->ns};
        uint32_t ns[2] = {h->nps, h->nns}, nbk[2] = {h->npb, h->nnb};
        for (int side = 0; side < 2; side++) {
            uint64_t nb = 0;
            for (uint32_t i = 0; i < ns[side]; i++) {
                if (i > 0 && sp[side][i].off < 0) return side ? "negative side: span with negative offset" : "positive side: span with negative offset";
                nb += sp[side][i].len;
            }
            if (nb != nbk[side]) return side ? "negative side: spans need a different number of buckets" :
                                               "positive side: spans need a different number of buckets";
        }
        if (h->ncv) return "histogram with exponential schema must not have custom bounds";
        if (is_float && u2f(h->zcnt) < 0) return "zero bucket has a negative observation count";
    } else {
        return "histogram has an invalid schema, which must be between -4 and 8 for exponential buckets, or -53 for custom buckets";
    }
    if (is_float) {
        if (u2f(h->cnt) < 0) return "observation count is negative";
        for (uint32_t i = 0; i < h->npb; i++) if (u2f(h->pb[i]) < 0) return "positive side: bucket has a negative observation count";
        for (uint32_t i = 0; i < h->nnb; i++) if (u2f(h->nb[i]) < 0) return "negative side: bucket has a negative observation count";
        return NULL;
    }
    uint64_t tot = h->zcnt;
    const uint64_t *bs[2] = {h->pb, h->nb};
    uint32_t nb[2] = {h->npb, h->nnb};
    for (int side = 0; side < 2; side++) {
        int64_t last = 0;
        for (uint32_t i = 0; i < nb[side]; i++) {
            int64_t c = wadd(last, (int64_t)bs[side][i]);
            if (c < 0) return side ? "negative side: bucket has a negative observation count" :
                                     "positive side: bucket has a negative observation count";
            last = c;
            tot += (uint64_t)c;
        }
    }
    if (isnan(h->sum) ? tot > h->cnt : tot != h->cnt) return "observations found in buckets do not match the Count field";
    return NULL;
}

/* ------------------------------------------------------------ the head's series */

typedef struct { int64_t mint, maxt; uint8_t *data; uint32_t len; uint8_t enc; } hchunk_t;

/* an owned copy of the last appended histogram (duplicate detection: Histogram.Equals); its
 * buffers are reused while they are large enough (one copy per appended sample) */
typedef struct {
    int valid;
    uint8_t is_float;
    hist_t h;
    span_t *ps, *ns; uint64_t *b; double *cv;
    uint32_t cap_ps, cap_ns, cap_b, cap_cv;
} lasth_t;

static void lasth_free(lasth_t *l) { free(l->ps); free(l->ns); free(l->b); free(l->cv); memset(l, 0, sizeof(*l)); }

static int grow_buf(void **p, uint32_t *cap, uint32_t need, size_t item) {
    if (need <= *cap) return 0;
    void *n = malloc((size_t)need * item);
    if (!n) return -1;
    free(*p);
    *p = n;
    *cap = need;
    return 0;
}

static int lasth_set(lasth_t *l, const hist_t *h, int is_float) {
    if (grow_buf((void **)&l->ps, &l->cap_ps, h->nps, sizeof(span_t)) ||
        grow_buf((void **)&l->ns, &l->cap_ns, h->nns, sizeof(span_t)) ||
        grow_buf((void **)&l->b, &l->cap_b, h->npb + h->nnb, 8) ||
        grow_buf((void **)&l->cv, &l->cap_cv, h->ncv, sizeof(double))) {
        l->valid = 0;
        return -1;
    }
    if (h->nps) memcpy(l->ps, h->ps, h->nps * sizeof(span_t));
    if (h->nns) memcpy(l->ns, h->ns, h->nns * sizeof(span_t));
    if (h->npb) memcpy(l->b, h->pb, h->npb * 8ULL);
    if (h->nnb) memcpy(l->b + h->npb, h->nb, h->nnb * 8ULL);
    if (h->ncv) memcpy(l->cv, h->cv, h->ncv * sizeof(double));
    l->valid = 1;
    l->is_float = (uint8_t)is_float;
    l->h = *h;
    l->h.ps = l->ps; l->h.ns = l->ns; l->h.pb = l->b; l->h.nb = l->b ? l->b + h->npb : NULL; l->h.cv = l->cv;
    return 0;
}

static int all_empty(const span_t *s, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) if (s[i].len) return 0;
    return 1;
}

/* spansMatch: equal layouts, zero-length spans folded into the next */
static int spans_match(const span_t *s1, uint32_t n1, const span_t *s2, uint32_t n2) {
    if (n1 == 0 && n2 == 0) return 1;
    uint32_t i = 0, j = 0;
    for (;;) {
        if (i >= n1) return all_empty(s2 + j, n2 - j);
        if (j >= n2) return all_empty(s1 + i, n1 - i);
        span_t a = s1[i++], b = s2[j++];
        if (a.len == 0) {
            for (; i < n1 && s1[i].len == 0; i++) a.off += s1[i].off;
            if (i < n1) { a.off += s1[i].off; a.len = s1[i].len; i++; }
        }
        if (b.len == 0) {
            for (; j < n2 && s2[j].len == 0; j++) b.off += s2[j].off;
            if (j < n2) { b.off += s2[j].off; b.len = s2[j].len; j++; }
        }
        if (a.len == 0 && b.len == 0) return 1;
        if (a.off != b.off || a.len != b.len) return 0;
    }
}

static int hist_equals(const hist_t *a, const hist_t *b, int is_float) {
    if (a->schema != b->schema || a->cnt != b->cnt || f2u(a->sum) != f2u(b->sum)) return 0;
    if (a->schema == CUSTOM_SCHEMA && !cv_match(a->cv, a->ncv, b->cv, b->ncv)) return 0;
    if (a->zt != b->zt || a->zcnt != b->zcnt) return 0;
    if (!spans_match(a->ns, a->nns, b->ns, b->nns) || a->nnb != b->nnb) return 0;
    if (!spans_match(a->ps, a->nps, b->ps, b->nps) || a->npb != b->npb) return 0;
    for (uint32_t i = 0; i < a->nnb; i++)
        if (is_float ? u2f(a->nb[i]) != u2f(b->nb[i]) : a->nb[i] != b->nb[i]) return 0;
    for (uint32_t i = 0; i < a->npb; i++)
        if (is_float ? u2f(a->pb[i]) != u2f(b->pb[i]) : a->pb[i] != b->pb[i]) return 0;
    return 1;
}

typedef struct {
    int64_t ref;
    int open;               /* an open (head) histogram chunk */
    app_t app;
    int64_t cmint, cmaxt;
    int64_t next_at;
    uint8_t computed;       /* histogramChunkHasComputedEndTime */
    uint8_t has_data;
    int64_t last_t;         /* last in-order histogram time */
    lasth_t last;
    hchunk_t *chunks; uint32_t nch, chcap;
    /* out-of-order samples, sorted by time, unique times (OOOChunk) */
    struct oooh { int64_t t; lasth_t h; } *ooo;
    uint32_t nooo, ooocap;
} hseries_t;

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int64_t chunk_range;
    hseries_t **ser; uint64_t nser, sercap;      /* dense */
    int64_t *tab_ref; uint32_t *tab_idx; uint64_t tabcap;  /* ref -> index + 1 */
    uint64_t chunks_created, chunks_removed, chunk_bytes;
    uint64_t ooo_samples;
} HistHeadObject;

INLINE uint64_t fmix(uint64_t k) {
    k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53ULL; k ^= k >> 33;
    return k;
}

static hseries_t *hh_find(HistHeadObject *hh, int64_t ref) {
    if (!hh->tabcap) return NULL;
    uint64_t m = hh->tabcap - 1;
    for (uint64_t i = fmix((uint64_t)ref) & m;; i = (i + 1) & m) {
        if (hh->tab_idx[i] == 0) return NULL;
        if (hh->tab_ref[i] == ref) return hh->ser[hh->tab_idx[i] - 1];
    }
}

static int hh_rebuild(HistHeadObject *hh, uint64_t cap) {
    int64_t *tr = calloc(cap, 8);
    uint32_t *ti = calloc(cap, 4);
    if (!tr || !ti) { free(tr); free(ti); return -1; }
    for (uint64_t k = 0; k < hh->nser; k++) {
        uint64_t m = cap - 1, i = fmix((uint64_t)hh->ser[k]->ref) & m;
        while (ti[i]) i = (i + 1) & m;
        tr[i] = hh->ser[k]->ref;
        ti[i] = (uint32_t)(k + 1);
    }
    free(hh->tab_ref); free(hh->tab_idx);
    hh->tab_ref = tr; hh->tab_idx = ti; hh->tabcap = cap;
    return 0;
}

static hseries_t *hh_get(HistHeadObject *hh, int64_t ref) {
    hseries_t *s = hh_find(hh, ref);
    if (s) return s;
    if (hh->nser == hh->sercap) {
        uint64_t nc = hh->sercap ? hh->sercap * 2 : 64;
        hseries_t **ns = realloc(hh->ser, nc * sizeof(*ns));
        if (!ns) return NULL;
        hh->ser = ns;
        hh->sercap = nc;
    }
    s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->ref = ref;
    hh->ser[hh->nser++] = s;
    if ((hh->nser + 1) * 2 > hh->tabcap) {
        if (hh_rebuild(hh, hh->tabcap ? hh->tabcap * 2 : 128)) { free(s); hh->nser--; return NULL; }
    } else {
        uint64_t m = hh->tabcap - 1, i = fmix((uint64_t)ref) & m;
        while (hh->tab_idx[i]) i = (i + 1) & m;
        hh->tab_ref[i] = ref;
        hh->tab_idx[i] = (uint32_t)hh->nser;
    }
    return s;
}

static void ooo_free(hseries_t *s) {
    for (uint32_t i = 0; i < s->nooo; i++) lasth_free(&s->ooo[i].h);
    free(s->ooo);
    s->ooo = NULL;
    s->nooo = s->ooocap = 0;
}

/* OOOChunk.Insert: 1 inserted, 0 the time is there (*equal: same histogram), -1 OOM */
static int ooo_insert(hseries_t *s, int64_t t, const hist_t *h, int is_float, int *equal) {
    uint32_t lo = 0, hi = s->nooo;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->ooo[mid].t < t) lo = mid + 1; else hi = mid;
    }
    if (lo < s->nooo && s->ooo[lo].t == t) {
        *equal = s->ooo[lo].h.is_float == is_float && hist_equals(h, &s->ooo[lo].h.h, is_float);
        return 0;
    }
    if (s->nooo == s->ooocap) {
        uint32_t nc = s->ooocap ? s->ooocap * 2 : 4;
        struct oooh *n = realloc(s->ooo, nc * sizeof(*n));
        if (!n) return -1;
        s->ooo = n;
        s->ooocap = nc;
    }
    lasth_t l;
    memset(&l, 0, sizeof(l));
    if (lasth_set(&l, h, is_float)) { lasth_free(&l); return -1; }
    memmove(s->ooo + lo + 1, s->ooo + lo, (s->nooo - lo) * sizeof(*s->ooo));
    s->ooo[lo].t = t;
    s->ooo[lo].h = l;
    s->nooo++;
    return 1;
}

static void series_free(hseries_t *s) {
    app_free(&s->app);
    lasth_free(&s->last);
    ooo_free(s);
    for (uint32_t i = 0; i < s->nch; i++) free(s->chunks[i].data);
    free(s->chunks);
    free(s);
}

/* the open chunk joins the completed ones */
static int complete_open(HistHeadObject *hh, hseries_t *s) {
    if (!s->open) return 0;
    if (s->nch == s->chcap) {
        uint32_t nc = s->chcap ? s->chcap * 2 : 4;
        hchunk_t *n = realloc(s->chunks, nc * sizeof(hchunk_t));
        if (!n) return -1;
        s->chunks = n;
        s->chcap = nc;
    }
    size_t len = bw_len(&s->app.w);
    uint8_t *d = malloc(len);
    if (!d) return -1;
    memcpy(d, s->app.w.b, len);
    hchunk_t *c = &s->chunks[s->nch++];
    c->mint = s->cmint; c->maxt = s->cmaxt; c->data = d; c->len = (uint32_t)len; c->enc = s->app.is_float ? 3 : 2;
    hh->chunk_bytes += len;
    s->open = 0;
    return 0;
}

INLINE int64_t range_for_timestamp(int64_t t, int64_t width) { return wadd((t / width) * width, width); }

INLINE int64_t go_f2i(double f) {
    if (!(f >= -9223372036854775808.0 && f < 9223372036854775808.0)) return INT64_MIN;
    return (int64_t)f;
}

static int64_t compute_chunk_end_time(int64_t start, int64_t cur, int64_t maxt, double ratio) {
    double n = (double)wsub(maxt, start) / ((double)wadd(wsub(cur, start), 1) * ratio);
    if (n <= 1) return maxt;
    return go_f2i((double)start + (double)wsub(maxt, start) / floor(n));
}

/* memSeries.appendHistogram / appendFloatHistogram for an in-order sample; fenced: a float
 * sample came after the open chunk (the head chunk is a float one). Returns 1 chunk created,
 * 0 not, -1 OOM. */
static int series_append(HistHeadObject *hh, hseries_t *s, scratch_t *sc, int64_t t, hist_t *h, int is_float,
                         int fenced) {
    int created = 0;
    app_t prev;
    int have_prev = 0;
    /* histogramsAppendPreprocessor */
    int cut = !s->open || fenced || s->app.is_float != is_float;
    int samekind_prev = s->open && !fenced && s->app.is_float == is_float;
    if (!cut) {
        uint16_t ns = app_num(&s->app);
        size_t nb = bw_len(&s->app.w);
        int64_t nrs = s->computed ? range_for_timestamp(s->cmint, hh->chunk_range) : s->next_at;
        if (!s->computed && nb >= TARGET_BYTES / 4) {
            s->next_at = compute_chunk_end_time(s->cmint, s->cmaxt, s->next_at, (double)TARGET_BYTES / (double)nb);
            s->computed = 1;
        }
        if ((t >= s->next_at || nb >= TARGET_BYTES * 2) && (ns >= MIN_SAMPLES || t >= nrs)) cut = 1;
    }
    if (cut) {
        if (complete_open(hh, s)) return -1;
        if (samekind_prev) { prev = s->app; have_prev = 1; memset(&s->app, 0, sizeof(s->app)); }
        else app_free(&s->app);
        if (app_init(&s->app, is_float)) goto oom_restore;
        s->open = 1;
        s->cmint = t;
        s->next_at = range_for_timestamp(t, hh->chunk_range);
        s->computed = 0;
        created = 1;
        hh->chunks_created++;
        /* s.app of the previous chunk is the prev appender only when of the same kind */
        int rc = app_first(&s->app, have_prev ? &prev : NULL, sc, t, h, 0xff);
        if (have_prev) app_free(&prev);
        if (rc) return -1;
    } else {
        int recoded = 0;
        uint8_t hdr = 0;
        int rc = app_append(&s->app, sc, t, h, &recoded, &hdr);
        if (rc < 0) return -1;
        if (rc == 1) {
            /* the appender asks for a new chunk (reset, layout change, gauge switch): not through
             * the preprocessor, so histogramChunkHasComputedEndTime stays as it is */
            if (complete_open(hh, s)) return -1;
            app_free(&s->app);
            if (app_init(&s->app, is_float)) return -1;
            s->open = 1;
            s->cmint = t;
            s->next_at = range_for_timestamp(t, hh->chunk_range);
            created = 1;
            hh->chunks_created++;
            if (app_first(&s->app, NULL, sc, t, h, hdr)) return -1;
        }
    }
    s->cmaxt = t;
    s->last_t = t;
    s->has_data = 1;
    if (lasth_set(&s->last, h, is_float)) return -1;
    return created;
oom_restore:
    if (have_prev) app_free(&prev);
    return -1;
}

/* ------------------------------------------------------------ Python glue */

typedef struct { Py_buffer b; int ok; } view;

static int get_view(PyObject *o, view *v, int writable, int itemsize, const char *what) {
    if (PyObject_GetBuffer(o, &v->b, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS : PyBUF_C_CONTIGUOUS)) {
        v->ok = 0;
        return -1;
    }
    v->ok = 1;
    if (itemsize > 1 && v->b.len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: length %zd is not a multiple of %d", what, v->b.len, itemsize);
        return -1;
    }
    return 0;
}
static void rel(view *v) { if (v->ok) PyBuffer_Release(&v->b); v->ok = 0; }

#define LOCKED_BEGIN(self) Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock((self)->lock, WAIT_LOCK);
#define LOCKED_END(self) PyThread_release_lock((self)->lock); Py_END_ALLOW_THREADS

static void HH_dealloc(HistHeadObject *self) {
    for (uint64_t i = 0; i < self->nser; i++) series_free(self->ser[i]);
    free(self->ser); free(self->tab_ref); free(self->tab_idx);
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int HH_init(HistHeadObject *self, PyObject *args, PyObject *kw) {
    long long cr;
    if (!PyArg_ParseTuple(args, "L", &cr)) return -1;
    if (cr <= 0) { PyErr_SetString(PyExc_ValueError, "chunk_range must be positive"); return -1; }
    self->chunk_range = cr;
    if (!self->lock && !(self->lock = PyThread_allocate_lock())) { PyErr_NoMemory(); return -1; }
    return 0;
}

/* the columns of a histogram batch */
enum { C_REFS, C_TS, C_OTHER, C_FLOAT, C_CNT, C_ZCNT, C_SUM, C_SCHEMA, C_ZT, C_HINT, C_PSOFF, C_NSOFF, C_SPANS,
       C_PBOFF, C_NBOFF, C_BUCKETS, C_CVOFF, C_CVALS, C_STATUS, NCOL };
static const char *col_names[NCOL] = {"refs", "ts", "other_last", "is_float", "count", "zero_count", "sum", "schema",
                                      "zero_threshold", "reset_hint", "pspan_off", "nspan_off", "spans", "pbucket_off",
                                      "nbucket_off", "buckets", "cv_off", "custom_values", "status"};
static const int col_size[NCOL] = {8, 8, 8, 1, 8, 8, 8, 8, 8, 1, 8, 8, 8, 8, 8, 8, 8, 8, 1};

typedef struct { const uint8_t *p[NCOL]; int64_t len[NCOL]; } cols_t;

/* sample i as a hist_t (views into the columns, spans copied into sp); NULL why when fine */
static const char *load_sample(const cols_t *c, int64_t i, int64_t n, hist_t *h, span_t **sp, size_t *spcap) {
    memset(h, 0, sizeof(*h));
    const int64_t *pso = (const int64_t *)c->p[C_PSOFF], *nso = (const int64_t *)c->p[C_NSOFF];
    const int64_t *pbo = (const int64_t *)c->p[C_PBOFF], *nbo = (const int64_t *)c->p[C_NBOFF];
    const int64_t *cvo = (const int64_t *)c->p[C_CVOFF];
    int64_t nspans = c->len[C_SPANS] / 2, nbk = c->len[C_BUCKETS], ncv = c->len[C_CVALS];
    (void)n;
    int64_t ps0 = pso[i], ps1 = pso[i + 1], ns0 = nso[i], ns1 = nso[i + 1];
    int64_t pb0 = pbo[i], pb1 = pbo[i + 1], nb0 = nbo[i], nb1 = nbo[i + 1], cv0 = cvo[i], cv1 = cvo[i + 1];
    if (ps0 < 0 || ps1 < ps0 || ps1 > nspans || ns0 < 0 || ns1 < ns0 || ns1 > nspans)
        return "span offsets out of range";
    if (pb0 < 0 || pb1 < pb0 || pb1 > nbk || nb0 < 0 || nb1 < nb0 || nb1 > nbk) return "bucket offsets out of range";
    if (cv0 < 0 || cv1 < cv0 || cv1 > ncv) return "custom value offsets out of range";
    if (ps1 - ps0 + ns1 - ns0 > UINT32_MAX / 2 || pb1 - pb0 > UINT32_MAX || nb1 - nb0 > UINT32_MAX) return "too many spans or buckets";
    size_t need = (size_t)(ps1 - ps0 + ns1 - ns0);
    if (need > *spcap) {
        span_t *nsp = realloc(*sp, need * sizeof(span_t));
        if (!nsp) return "out of memory";
        *sp = nsp;
        *spcap = need;
    }
    const int64_t *spans = (const int64_t *)c->p[C_SPANS];
    for (int64_t k = 0; k < ps1 - ps0 + ns1 - ns0; k++) {
        int64_t j = k < ps1 - ps0 ? ps0 + k : ns0 + (k - (ps1 - ps0));
        int64_t off = spans[2 * j], len = spans[2 * j + 1];
        if (off < INT32_MIN || off > INT32_MAX || len < 0 || len > UINT32_MAX) return "span out of range";
        (*sp)[k].off = (int32_t)off;
        (*sp)[k].len = (uint32_t)len;
    }
    h->ps = *sp; h->nps = (uint32_t)(ps1 - ps0);
    h->ns = *sp + (ps1 - ps0); h->nns = (uint32_t)(ns1 - ns0);
    const uint64_t *bk = (const uint64_t *)c->p[C_BUCKETS];
    h->pb = bk + pb0; h->npb = (uint32_t)(pb1 - pb0);
    h->nb = bk + nb0; h->nnb = (uint32_t)(nb1 - nb0);
    h->cv = (const double *)c->p[C_CVALS] + cv0; h->ncv = (uint32_t)(cv1 - cv0);
    h->cnt = ((const uint64_t *)c->p[C_CNT])[i];
    h->zcnt = ((const uint64_t *)c->p[C_ZCNT])[i];
    h->sum = ((const double *)c->p[C_SUM])[i];
    int64_t schema = ((const int64_t *)c->p[C_SCHEMA])[i];
    h->schema = schema < INT32_MIN || schema > INT32_MAX ? INT32_MAX : (int32_t)schema;
    h->zt = ((const double *)c->p[C_ZT])[i];
    h->hint = c->p[C_HINT][i];
    return NULL;
}

/* appendableHistogram: status of t against a series state */
static int h_appendable(const hseries_t *s, int64_t other, const hist_t *h, int is_float, int64_t t,
                        int64_t minvalid, int64_t ooo_window, int64_t head_maxt) {
    if (t >= minvalid) {
        int has = (s && s->has_data) || other != INT64_MIN;
        int64_t mx = s && s->has_data ? s->last_t : INT64_MIN;
        int hist_last = s && s->has_data && s->last_t >= other;
        if (other > mx) mx = other;
        if (!has || t > mx) return ST_OK;
        if (t == mx) {
            if (hist_last && s->last.valid && s->last.is_float == is_float && hist_equals(h, &s->last.h, is_float))
                return ST_DUP_OK;
            return ST_DUPLICATE;
        }
    }
    if (ooo_window > 0) {
        if (head_maxt < INT64_MIN + ooo_window || t >= head_maxt - ooo_window) return ST_OOO_OK;
        return ST_TOO_OLD;
    }
    if (t < minvalid) return ST_OUT_OF_BOUNDS;
    return ST_OUT_OF_ORDER;
}

static PyObject *HH_append(HistHeadObject *self, PyObject *args) {
    PyObject *o[NCOL];
    long long minvalid, ooo_window, head_maxt;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOOOOOLLL", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8],
                          &o[9], &o[10], &o[11], &o[12], &o[13], &o[14], &o[15], &o[16], &o[17], &o[18], &minvalid,
                          &ooo_window, &head_maxt))
        return NULL;
    view v[NCOL];
    cols_t c;
    PyObject *res = NULL;
    for (int k = 0; k < NCOL; k++) v[k].ok = 0;
    for (int k = 0; k < NCOL; k++) {
        if (get_view(o[k], &v[k], k == C_STATUS, col_size[k], col_names[k])) goto done;
        c.p[k] = v[k].b.buf;
        c.len[k] = v[k].b.len / col_size[k];
    }
    int64_t n = c.len[C_REFS];
    for (int k = 0; k < NCOL; k++) {
        int64_t want = (k == C_PSOFF || k == C_NSOFF || k == C_PBOFF || k == C_NBOFF || k == C_CVOFF) ? n + 1 :
                       (k == C_SPANS || k == C_BUCKETS || k == C_CVALS) ? -1 : n;
        if (want >= 0 && c.len[k] != want) {
            PyErr_Format(PyExc_ValueError, "%s: length %lld, expected %lld", col_names[k], (long long)c.len[k], (long long)want);
            goto done;
        }
    }
    if (c.len[C_SPANS] % 2) { PyErr_SetString(PyExc_ValueError, "spans: (offset, length) pairs expected"); goto done; }
    {
        uint8_t *st = (uint8_t *)c.p[C_STATUS];
        int64_t appended = 0, mint = INT64_MAX, maxt = INT64_MIN, created = 0;
        int64_t oappended = 0, omint = INT64_MAX, omaxt = INT64_MIN;
        int nomem = 0;
        const char *first_err = NULL;
        int64_t first_err_i = -1;
        span_t *sp = NULL;
        size_t spcap = 0;
        scratch_t sc;
        memset(&sc, 0, sizeof(sc));
        LOCKED_BEGIN(self)
        /* Append: each sample against the state before the batch */
        for (int64_t i = 0; i < n; i++) {
            hist_t h;
            int is_float = c.p[C_FLOAT][i] != 0;
            int64_t t = ((const int64_t *)c.p[C_TS])[i], ref = ((const int64_t *)c.p[C_REFS])[i];
            int64_t other = ((const int64_t *)c.p[C_OTHER])[i];
            const char *why = load_sample(&c, i, n, &h, &sp, &spcap);
            if (!why) why = validate(&h, is_float);
            if (why) {
                st[i] = ST_INVALID;
                if (!first_err) { first_err = why; first_err_i = i; }
                continue;
            }
            if (ref <= 0) { st[i] = ST_BAD_REF; continue; }
            if (ooo_window <= 0 && t < minvalid) { st[i] = ST_OUT_OF_BOUNDS; continue; }
            st[i] = (uint8_t)h_appendable(hh_find(self, ref), other, &h, is_float, t, minvalid, ooo_window, head_maxt);
        }
        /* Commit: in batch order against the state as it changes */
        for (int64_t i = 0; i < n && !nomem; i++) {
            if (st[i] != ST_OK && st[i] != ST_DUP_OK && st[i] != ST_OOO_OK) continue;
            hist_t h;
            int is_float = c.p[C_FLOAT][i] != 0;
            int64_t t = ((const int64_t *)c.p[C_TS])[i], ref = ((const int64_t *)c.p[C_REFS])[i];
            int64_t other = ((const int64_t *)c.p[C_OTHER])[i];
            load_sample(&c, i, n, &h, &sp, &spcap);
            hseries_t *s = hh_find(self, ref);
            int a = h_appendable(s, other, &h, is_float, t, minvalid, ooo_window, head_maxt);
            if (a == ST_OOO_OK) {
                if (!s && !(s = hh_get(self, ref))) { nomem = 1; break; }
                int eq = 0, r = ooo_insert(s, t, &h, is_float, &eq);
                if (r < 0) { nomem = 1; break; }
                if (r == 0) {  /* a time already held out of order: dropped silently, as Prometheus */
                    st[i] = (uint8_t)((eq ? ST_DUP_OK : ST_DUPLICATE) | ST_AT_COMMIT);
                    continue;
                }
                st[i] = ST_OOO_OK;
                self->ooo_samples++;
                oappended++;
                if (t < omint) omint = t;
                if (t > omaxt) omaxt = t;
                continue;
            }
            if (a != ST_OK) {
                st[i] = (uint8_t)(a == ST_DUP_OK && st[i] == ST_DUP_OK ? ST_DUP_OK : (a | ST_AT_COMMIT));
                continue;
            }
            if (!s && !(s = hh_get(self, ref))) { nomem = 1; break; }
            int fenced = other != INT64_MIN && (!s->has_data || other > s->last_t);
            int r = series_append(self, s, &sc, t, &h, is_float, fenced);
            if (r < 0) { nomem = 1; break; }
            created += r;
            st[i] = ST_OK;
            appended++;
            if (t < mint) mint = t;
            if (t > maxt) maxt = t;
        }
        LOCKED_END(self)
        free(sp);
        scratch_free(&sc);
        if (nomem) { PyErr_NoMemory(); goto done; }
        res = Py_BuildValue("(LLLLLsLLL)", (long long)appended, (long long)mint, (long long)maxt, (long long)created,
                            (long long)first_err_i, first_err ? first_err : "", (long long)oappended, (long long)omint,
                            (long long)omaxt);
    }
done:
    for (int k = 0; k < NCOL; k++) rel(&v[k]);
    return res;
}

typedef struct { uint8_t *p; size_t len, cap; } obuf;
static int ob_put(obuf *o, const void *p, size_t n) {
    if (o->len + n > o->cap) {
        size_t nc = o->cap ? o->cap : 256;
        while (nc < o->len + n) nc *= 2;
        uint8_t *np = realloc(o->p, nc);
        if (!np) return -1;
        o->p = np;
        o->cap = nc;
    }
    if (n) memcpy(o->p + o->len, p, n);
    o->len += n;
    return 0;
}
static PyObject *ob_bytes(obuf *o) {
    PyObject *b = PyBytes_FromStringAndSize((const char *)o->p, (Py_ssize_t)o->len);
    free(o->p);
    o->p = NULL;
    return b;
}

/* select(refs, mint, maxt) -> (counts, mint, maxt, encodings, offsets, data): each series'
 * histogram chunks overlapping [mint, maxt], oldest first, the open one as a copy */
static PyObject *HH_select(HistHeadObject *self, PyObject *args) {
    PyObject *ro;
    long long lo, hi;
    if (!PyArg_ParseTuple(args, "OLL", &ro, &lo, &hi)) return NULL;
    view rv;
    rv.ok = 0;
    if (get_view(ro, &rv, 0, 8, "refs")) { rel(&rv); return NULL; }
    int64_t n = rv.b.len / 8;
    obuf cnt = {0}, mn = {0}, mx = {0}, enc = {0}, off = {0}, data = {0};
    int nomem = 0;
    int64_t z = 0;
    LOCKED_BEGIN(self)
    nomem |= ob_put(&off, &z, 8);
    for (int64_t i = 0; i < n && !nomem; i++) {
        int64_t ref;
        memcpy(&ref, (const uint8_t *)rv.b.buf + 8 * i, 8);
        hseries_t *s = hh_find(self, ref);
        int64_t k = 0;
        if (s) {
            for (uint32_t j = 0; j <= s->nch && !nomem; j++) {
                int64_t a, b;
                const uint8_t *p;
                size_t len;
                uint8_t e;
                if (j < s->nch) { a = s->chunks[j].mint; b = s->chunks[j].maxt; p = s->chunks[j].data; len = s->chunks[j].len; e = s->chunks[j].enc; }
                else if (s->open) { a = s->cmint; b = s->cmaxt; p = s->app.w.b; len = bw_len(&s->app.w); e = s->app.is_float ? 3 : 2; }
                else break;
                if (b < lo || a > hi) continue;
                int64_t end = (int64_t)(data.len + len);
                nomem |= ob_put(&mn, &a, 8) | ob_put(&mx, &b, 8) | ob_put(&enc, &e, 1) | ob_put(&data, p, len) |
                         ob_put(&off, &end, 8);
                k++;
            }
        }
        nomem |= ob_put(&cnt, &k, 8);
    }
    LOCKED_END(self)
    rel(&rv);
    if (nomem) { free(cnt.p); free(mn.p); free(mx.p); free(enc.p); free(off.p); free(data.p); return PyErr_NoMemory(); }
    PyObject *t[6] = {ob_bytes(&cnt), ob_bytes(&mn), ob_bytes(&mx), ob_bytes(&enc), ob_bytes(&off), ob_bytes(&data)};
    PyObject *res = NULL;
    if (t[0] && t[1] && t[2] && t[3] && t[4] && t[5]) res = PyTuple_Pack(6, t[0], t[1], t[2], t[3], t[4], t[5]);
    for (int k = 0; k < 6; k++) Py_XDECREF(t[k]);
    return res;
}

/* ooo_select(refs, mint, maxt) -> as select: each series' out-of-order samples within [mint, maxt]
 * encoded as OOOChunk.ToEncodedChunks does (a chunk per run of one encoding, a new one whenever
 * the appender asks: reset, layout change; no size limit) */
static PyObject *HH_ooo_select(HistHeadObject *self, PyObject *args) {
    PyObject *ro;
    long long lo, hi;
    if (!PyArg_ParseTuple(args, "OLL", &ro, &lo, &hi)) return NULL;
    view rv;
    rv.ok = 0;
    if (get_view(ro, &rv, 0, 8, "refs")) { rel(&rv); return NULL; }
    int64_t n = rv.b.len / 8;
    obuf cnt = {0}, mn = {0}, mx = {0}, enc = {0}, off = {0}, data = {0};
    int nomem = 0;
    int64_t z = 0;
    scratch_t sc;
    memset(&sc, 0, sizeof(sc));
    LOCKED_BEGIN(self)
    nomem |= ob_put(&off, &z, 8);
    for (int64_t i = 0; i < n && !nomem; i++) {
        int64_t ref, k = 0;
        memcpy(&ref, (const uint8_t *)rv.b.buf + 8 * i, 8);
        hseries_t *s = hh_find(self, ref);
        app_t a, prev;
        int have = 0, have_prev = 0;
        int64_t cmint = 0, cmaxt = 0;
        memset(&a, 0, sizeof(a));
        memset(&prev, 0, sizeof(prev));
#define FLUSH() do { size_t len_ = bw_len(&a.w); int64_t end_ = (int64_t)(data.len + len_); uint8_t e_ = a.is_float ? 3 : 2; \
        nomem |= ob_put(&mn, &cmint, 8) | ob_put(&mx, &cmaxt, 8) | ob_put(&enc, &e_, 1) | ob_put(&data, a.w.b, len_) | \
                 ob_put(&off, &end_, 8); k++; } while (0)
        for (uint32_t j = 0; s && j < s->nooo && !nomem; j++) {
            int64_t t = s->ooo[j].t;
            if (t < lo) continue;
            if (t > hi) break;
            hist_t h = s->ooo[j].h.h;
            int f = s->ooo[j].h.is_float;
            if (!have || a.is_float != f) {
                if (have) { FLUSH(); app_free(&prev); have_prev = 0; app_free(&a); }
                if (app_init(&a, f)) { nomem = 1; break; }
                have = 1;
                cmint = t;
                if (app_first(&a, NULL, &sc, t, &h, 0xff)) { nomem = 1; break; }
            } else {
                int recoded = 0;
                uint8_t hdr = 0;
                int rc = app_append(&a, &sc, t, &h, &recoded, &hdr);
                if (rc < 0) { nomem = 1; break; }
                if (rc == 1) {
                    FLUSH();
                    app_free(&prev);
                    prev = a;
                    have_prev = 1;
                    memset(&a, 0, sizeof(a));
                    if (app_init(&a, f)) { nomem = 1; break; }
                    cmint = t;
                    if (app_first(&a, NULL, &sc, t, &h, hdr)) { nomem = 1; break; }
                }
            }
            cmaxt = t;
        }
        if (have && !nomem) FLUSH();
#undef FLUSH
        (void)have_prev;
        app_free(&a);
        app_free(&prev);
        nomem |= ob_put(&cnt, &k, 8);
    }
    LOCKED_END(self)
    rel(&rv);
    scratch_free(&sc);
    if (nomem) { free(cnt.p); free(mn.p); free(mx.p); free(enc.p); free(off.p); free(data.p); return PyErr_NoMemory(); }
    PyObject *t[6] = {ob_bytes(&cnt), ob_bytes(&mn), ob_bytes(&mx), ob_bytes(&enc), ob_bytes(&off), ob_bytes(&data)};
    PyObject *res = NULL;
    if (t[0] && t[1] && t[2] && t[3] && t[4] && t[5]) res = PyTuple_Pack(6, t[0], t[1], t[2], t[3], t[4], t[5]);
    for (int k = 0; k < 6; k++) Py_XDECREF(t[k]);
    return res;
}

/* ooo_clear() -> (samples dropped, refs that held some as int64 bytes): after the out-of-order
 * blocks are written (Head.truncateOOO); series left without samples go */
static PyObject *HH_ooo_clear(HistHeadObject *self, PyObject *unused) {
    int64_t dropped = 0;
    obuf refs = {0};
    int nomem = 0;
    LOCKED_BEGIN(self)
    uint64_t k = 0;
    for (uint64_t i = 0; i < self->nser; i++) {
        hseries_t *s = self->ser[i];
        if (s->nooo) nomem |= ob_put(&refs, &s->ref, 8);
        dropped += s->nooo;
        ooo_free(s);
        if (!s->open && s->nch == 0) { series_free(s); continue; }
        self->ser[k++] = s;
    }
    self->nser = k;
    self->ooo_samples = 0;
    if (hh_rebuild(self, self->tabcap ? self->tabcap : 128)) nomem = 1;
    LOCKED_END(self)
    if (nomem) { free(refs.p); return PyErr_NoMemory(); }
    PyObject *r = ob_bytes(&refs);
    if (!r) return NULL;
    PyObject *res = Py_BuildValue("(LN)", (long long)dropped, r);
    return res;
}

/* truncate(mint) -> (chunks removed, series removed, min time left or INT64_MAX): drops the
 * chunks entirely before mint and the series left without any */
static PyObject *HH_truncate(HistHeadObject *self, PyObject *args) {
    long long mint;
    if (!PyArg_ParseTuple(args, "L", &mint)) return NULL;
    int64_t removed = 0, sremoved = 0, actual = INT64_MAX;
    int nomem = 0;
    LOCKED_BEGIN(self)
    uint64_t k = 0;
    for (uint64_t i = 0; i < self->nser; i++) {
        hseries_t *s = self->ser[i];
        uint32_t w = 0;
        for (uint32_t j = 0; j < s->nch; j++) {
            if (s->chunks[j].maxt < mint) { self->chunk_bytes -= s->chunks[j].len; free(s->chunks[j].data); removed++; }
            else s->chunks[w++] = s->chunks[j];
        }
        s->nch = w;
        if (s->open && s->cmaxt < mint) { app_free(&s->app); s->open = 0; removed++; }
        if (!s->open && s->nch == 0 && s->nooo == 0) { series_free(s); sremoved++; continue; }
        if (s->open || s->nch) {
            int64_t lo = s->nch ? s->chunks[0].mint : s->cmint;
            if (lo < actual) actual = lo;
        }
        self->ser[k++] = s;
    }
    self->nser = k;
    self->chunks_removed += (uint64_t)removed;
    if (hh_rebuild(self, self->tabcap ? self->tabcap : 128)) nomem = 1;
    LOCKED_END(self)
    if (nomem) return PyErr_NoMemory();
    return Py_BuildValue("(LLL)", (long long)removed, (long long)sremoved, (long long)actual);
}

static PyObject *HH_stats(HistHeadObject *self, PyObject *unused) {
    int64_t open = 0, chunks = 0, bytes = (int64_t)self->chunk_bytes;
    PyObject *d;
    LOCKED_BEGIN(self)
    for (uint64_t i = 0; i < self->nser; i++) {
        open += self->ser[i]->open;
        chunks += self->ser[i]->nch;
        if (self->ser[i]->open) bytes += (int64_t)self->ser[i]->app.w.cap;
    }
    LOCKED_END(self)
    d = Py_BuildValue("{s:L,s:L,s:L,s:L,s:K,s:K,s:K}", "series", (long long)self->nser, "chunks", (long long)chunks,
                      "open_chunks", (long long)open, "bytes", (long long)bytes, "chunks_created",
                      (unsigned long long)self->chunks_created, "chunks_removed", (unsigned long long)self->chunks_removed,
                      "ooo_samples", (unsigned long long)self->ooo_samples);
    return d;
}

static PyMethodDef HH_methods[] = {
    {"append", (PyCFunction)HH_append, METH_VARARGS,
     "append(refs, ts, other_last, is_float, count, zero_count, sum, schema, zero_threshold, reset_hint, pspan_off, "
     "nspan_off, spans, pbucket_off, nbucket_off, buckets, cv_off, custom_values, status_out, min_valid_time, "
     "ooo_window, head_maxt) -> (appended, mint, maxt, chunks created, first invalid index, its reason)"},
    {"select", (PyCFunction)HH_select, METH_VARARGS, "select(refs, mint, maxt) -> (counts, mint, maxt, encodings, offsets, data)"},
    {"truncate", (PyCFunction)HH_truncate, METH_VARARGS, "truncate(mint) -> (chunks removed, series removed, min time)"},
    {"stats", (PyCFunction)HH_stats, METH_NOARGS, "stats() -> dict"},
    {"ooo_select", (PyCFunction)HH_ooo_select, METH_VARARGS, "ooo_select(refs, mint, maxt) -> as select"},
    {"ooo_clear", (PyCFunction)HH_ooo_clear, METH_NOARGS, "ooo_clear() -> (dropped, refs bytes)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HistHeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pythanos.tsdb._histchunk.HistHead",
    .tp_basicsize = sizeof(HistHeadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The head's native histogram series and chunks (see _histchunk.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HH_init,
    .tp_dealloc = (destructor)HH_dealloc,
    .tp_methods = HH_methods,
};

static const char EMPTY_ = 0;
INLINE const char *nz(const void *p) { return p ? (const char *)p : &EMPTY_; }

/* decode(data, encoding) -> dict of columns (see pythanos.tsdb.histchunk) */
static PyObject *py_decode(PyObject *mod, PyObject *args) {
    Py_buffer b;
    int enc;
    if (!PyArg_ParseTuple(args, "y*i", &b, &enc)) return NULL;
    if (enc != 2 && enc != 3) { PyBuffer_Release(&b); PyErr_Format(PyExc_ValueError, "encoding %d is not a histogram encoding", enc); return NULL; }
    dec_t d;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = decode_chunk(b.buf, (size_t)b.len, enc == 3, &d);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    if (rc == -2) { dec_free(&d); return PyErr_NoMemory(); }
    if (rc == -1) {
        PyErr_Format(PyExc_ValueError, "histogram chunk (encoding %d): %s at bit %llu (byte %llu)", enc, d.why,
                     (unsigned long long)d.err_bit, (unsigned long long)(d.err_bit / 8));
        dec_free(&d);
        return NULL;
    }
    uint64_t nbk = (uint64_t)d.npb + d.nnb;
    PyObject *spans = PyBytes_FromStringAndSize(NULL, ((Py_ssize_t)d.nps + d.nns) * 16);
    if (spans) {
        int64_t *sp = (int64_t *)PyBytes_AS_STRING(spans);
        for (uint32_t i = 0; i < d.nps + d.nns; i++) {
            span_t s = i < d.nps ? d.ps[i] : d.ns[i - d.nps];
            sp[2 * i] = s.off;
            sp[2 * i + 1] = s.len;
        }
    }
    PyObject *res = Py_BuildValue(
        "{s:i,s:i,s:d,s:i,s:I,s:I,s:N,s:y#,s:y#,s:y#,s:y#,s:y#,s:y#,s:y#}", "header", d.header, "schema", d.schema,
        "zero_threshold", d.zt, "n", (int)d.n, "npos", d.npb, "nneg", d.nnb, "spans", spans,
        "t", nz(d.t), (Py_ssize_t)(d.n * 8), "count", nz(d.cnt), (Py_ssize_t)(d.n * 8),
        "zero_count", nz(d.zcnt), (Py_ssize_t)(d.n * 8), "sum", nz(d.sum), (Py_ssize_t)(d.n * 8),
        "stale", nz(d.stale), (Py_ssize_t)d.n, "buckets", nz(d.buckets),
        (Py_ssize_t)(d.n * nbk * 8), "custom_values", nz(d.cv), (Py_ssize_t)(d.ncv * 8));
    PyObject *np_ = res ? PyLong_FromUnsignedLong(d.nps) : NULL;
    if (np_) { PyDict_SetItemString(res, "npos_spans", np_); Py_DECREF(np_); }
    dec_free(&d);
    return res;
}

/* slice(data, encoding, mint, maxt) -> bytes or None: the chunk's samples within [mint, maxt]
 * as one chunk (same layout and header), for a block range cutting through a head chunk */
static PyObject *py_slice(PyObject *mod, PyObject *args) {
    Py_buffer b;
    int enc;
    long long lo, hi;
    if (!PyArg_ParseTuple(args, "y*iLL", &b, &enc, &lo, &hi)) return NULL;
    if (enc != 2 && enc != 3) { PyBuffer_Release(&b); PyErr_Format(PyExc_ValueError, "encoding %d is not a histogram encoding", enc); return NULL; }
    dec_t d;
    app_t a;
    int rc, any = 0;
    memset(&a, 0, sizeof(a));
    Py_BEGIN_ALLOW_THREADS
    rc = decode_chunk(b.buf, (size_t)b.len, enc == 3, &d);
    if (rc == 0) {
        if (app_init(&a, enc == 3)) rc = -2;
        for (uint32_t i = 0; i < d.n && rc == 0; i++) {
            if (d.t[i] < lo || d.t[i] > hi) continue;
            hist_t h;
            dec_sample(&d, i, &h);
            if (app_append_raw(&a, d.t[i], &h)) rc = -2;
            any = 1;
        }
        if (rc == 0 && any) app_set_header(&a, d.header);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    PyObject *res = NULL;
    if (rc == -2) PyErr_NoMemory();
    else if (rc == -1) PyErr_Format(PyExc_ValueError, "histogram chunk (encoding %d): %s at bit %llu", enc, d.why,
                                    (unsigned long long)d.err_bit);
    else if (!any) { res = Py_None; Py_INCREF(res); }
    else res = PyBytes_FromStringAndSize((const char *)a.w.b, (Py_ssize_t)bw_len(&a.w));
    app_free(&a);
    dec_free(&d);
    return res;
}

static PyMethodDef mod_methods[] = {
    {"decode", py_decode, METH_VARARGS, "decode(data, encoding) -> dict of columns"},
    {"slice", py_slice, METH_VARARGS, "slice(data, encoding, mint, maxt) -> chunk bytes or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_histchunk", "Native histogram chunks and head series.", -1,
                                    mod_methods};

PyMODINIT_FUNC PyInit__histchunk(void) {
    if (PyType_Ready(&HistHeadType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    Py_INCREF(&HistHeadType);
    if (PyModule_AddObject(m, "HistHead", (PyObject *)&HistHeadType) < 0) { Py_DECREF(&HistHeadType); Py_DECREF(m); return NULL; }
    return m;
}
