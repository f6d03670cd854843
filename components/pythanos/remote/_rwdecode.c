/* Remote-write request bodies (already snappy-decoded) into columns, in one walk over the bytes.
 *
 * decode_v1(body, tenant: bytes, max_label_bytes: int, hash_as_sent=True, require_name=True) -> dict
 *                                                                   prometheus.WriteRequest
 * decode_v2(body, tenant: bytes, max_label_bytes: int, hash_as_sent=True, require_name=True) -> dict
 *                                                                   io.prometheus.write.v2.Request
 * decode_thanos(body, b"", max_label_bytes, hash_as_sent=True, require_name=True)
 *                                   -> (dict, tenant: bytes, replica: int)
 *                                                                   thanos.WriteRequest (gRPC, receiver to receiver)
 * encode_v1(mode, body, blobs, ...) -> bytes   remote-write 1.0 TimeSeries frames from the columns (below)
 * xxh64(data: bytes) -> int                                         (the routing hash's xxHash, for tests)
 *
 * The dict holds raw little-endian arrays as bytes (numpy views them without a copy); n = series,
 * m = samples:
 *   n_series, n_samples           ints
 *   blobs, blob_offsets (int64 n+1)  each series' canonical label blob: labels sorted by name,
 *                                    empty-valued labels left out (Prometheus' head drops them),
 *                                    uvarint count then uvarint-length-prefixed name and value;
 *                                    the WAL Series record body after its ref
 *   status  uint8 n                  0 ok, else why Prometheus' receiver refuses the series (ST_*);
 *                                    without require_name only a series with no label at all is
 *                                    refused for a missing __name__ (Thanos' writer stores the rest)
 *   flags   uint8 n                  FL_UNSORTED: the sender's order was not sorted;
 *                                    FL_EMPTY_VALUE: empty-valued labels were left out
 *   label_counts uint32 n            labels as sent (the limit on labels per series counts these)
 *   hashes  uint64 n                 Thanos' routing hash: xxHash64 (seed 0) of
 *                                    tenant 0xff (name 0xff value 0xff)*, over the labels as sent
 *                                    (hash_as_sent, Thanos' labelpb.HashWithPrefix on the request)
 *                                    or over the canonical labels; the same for every series Thanos
 *                                    accepts (sorted, no empty values)
 *   sample_offsets int64 n+1, sample_series int64 m, sample_ts int64 m, sample_values float64 m
 *   (v2) sample_start_ts int64 m
 *   n_exemplars, n_histograms uint32 n   counted here, decoded by the caller from the series' bytes
 *   series_ranges int64 2n           (offset, length) of each TimeSeries message in the body
 *   (v1) metadata_ranges int64 2k    (offset, length) of each MetricMetadata message
 *   (v2) symbol_ranges int64 2s, metadata_type int32 n, help_ref uint32 n, unit_ref uint32 n
 *
 * Series are never dropped here: refused series keep their index, samples and status, so the
 * caller decides (RW 1.0: skip and answer 2xx; RW 2.0: skip and answer 400 for them).
 * Malformed protobuf raises ValueError("proto: <field path>: <problem> at byte <offset>").
 * Every length is checked against the body; memory grows only with what the body holds, except
 * RW 2.0 label blobs (symbols may be referenced many times), which max_label_bytes bounds
 * (OverflowError). The walk runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_OK = 0,
    ST_NO_METRIC_NAME = 1,   /* no __name__ label */
    ST_EMPTY_LABEL_NAME = 2, /* a label with an empty name */
    ST_INVALID_UTF8 = 3,     /* a name or value that is not valid UTF-8 */
    ST_EMPTY_METRIC_NAME = 4,/* __name__="" */
    ST_DUPLICATE_LABEL = 5,  /* the same label name twice */
    ST_BAD_LABEL_REFS = 6,   /* v2: odd count of label refs or a ref outside the symbols */
    ST_BAD_METADATA_REFS = 7,/* v2: help or unit ref outside the symbols */
    ST_NO_SAMPLES = 8,       /* v2: neither samples nor histograms */
};
enum { FL_UNSORTED = 1, FL_EMPTY_VALUE = 2 };

/* ---- growable byte vectors ---- */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} vec;

static int vgrow(vec *v, size_t extra) {
    if (v->len + extra <= v->cap) return 0;
    size_t nc = v->cap ? v->cap : 256;
    while (nc < v->len + extra) {
        if (nc > SIZE_MAX / 2) return -1;
        nc *= 2;
    }
    uint8_t *np = realloc(v->p, nc);
    if (!np) return -1;
    v->p = np;
    v->cap = nc;
    return 0;
}
static inline int vput(vec *v, const void *src, size_t n) {
    if (vgrow(v, n)) return -1;
    memcpy(v->p + v->len, src, n);
    v->len += n;
    return 0;
}
#define VPUT(v, type, x)                                                                           \
    do {                                                                                           \
        type _t = (x);                                                                             \
        if (vput((v), &_t, sizeof(_t))) return oom(c);                                             \
    } while (0)

/* ---- xxHash64 (seed 0): one-shot over a contiguous buffer ---- */
#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL
static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t ld64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian hosts only (x86-64, arm64) */
}
static inline uint32_t ld32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t xround(uint64_t acc, uint64_t in) { return rotl(acc + in * P2, 31) * P1; }
static inline uint64_t xmerge(uint64_t acc, uint64_t v) { return (acc ^ xround(0, v)) * P1 + P4; }

static uint64_t xxh64(const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = (uint64_t)0 - P1;
        const uint8_t *lim = end - 32;
        do {
            v1 = xround(v1, ld64(p));
            v2 = xround(v2, ld64(p + 8));
            v3 = xround(v3, ld64(p + 16));
            v4 = xround(v4, ld64(p + 24));
            p += 32;
        } while (p <= lim);
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = xmerge(h, v1);
        h = xmerge(h, v2);
        h = xmerge(h, v3);
        h = xmerge(h, v4);
    } else {
        h = P5;
    }
    h += (uint64_t)n;
    while (end - p >= 8) {
        h ^= xround(0, ld64(p));
        h = rotl(h, 27) * P1 + P4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)ld32(p) * P1;
        h = rotl(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p++) * P5;
        h = rotl(h, 11) * P1;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* ---- UTF-8 as Go's utf8.ValidString: no overlongs, no surrogates, nothing above U+10FFFF ---- */
static int utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n && (ld64(s + i) & 0x8080808080808080ULL) == 0) {
            i += 8;
            continue;
        }
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        uint8_t lo = 0x80, hi = 0xBF;
        size_t need;
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0) lo = 0xA0;
            else if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0) lo = 0x90;
            else if (b == 0xF4) hi = 0x8F;
        } else return 0;
        if (i + need >= n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += need + 1;
    }
    return 1;
}

static inline int ascii(const uint8_t *s, size_t n) {
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) acc |= ld64(s + i);
    for (; i < n; i++) acc |= s[i];
    return (acc & 0x8080808080808080ULL) == 0;
}

/* ---- decoder state ---- */
typedef struct {
    const uint8_t *name, *val;
    uint32_t nlen, vlen;
    uint8_t bad_utf8;
} lab;

typedef struct {
    const uint8_t *buf;
    size_t n;
    int v2;
    const char *top; /* the request message's name in error paths */
    /* outputs */
    vec blobs, blob_off, status, flags, nlabels, hashes;
    vec s_series, s_ts, s_val, s_st, s_off;
    vec n_ex, n_hist, ser_rng, meta_rng;
    vec sym_rng, mtype, help, unit;
    /* scratch */
    lab *labs, *tmp;
    size_t nlabs, caplabs;
    uint32_t *refs;
    size_t nrefs, caprefs;
    vec hbuf;
    const uint8_t *tenant;
    size_t tenant_len;
    size_t max_label_bytes;
    int hash_as_sent; /* 1: Thanos' order (as sent, all labels); 0: the canonical labels */
    int require_name; /* 1: a series without __name__ is refused (Prometheus); 0: only an empty one (Thanos) */
    /* v2 symbols */
    size_t nsym;
    const int64_t *sym;  /* (offset, length) pairs, in sym_rng */
    uint8_t *sym_ok;
    size_t n_hint; /* series count known before the walk (thanos) */
    /* error */
    int err; /* 1 malformed, 2 out of memory, 3 label bytes over the bound */
    char msg[320];
} ctx;

static int oom(ctx *c) {
    c->err = 2;
    return -1;
}

static int fail(ctx *c, size_t off, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char what[240];
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(c->msg, sizeof c->msg, "proto: %s at byte %zu", what, off);
    c->err = 1;
    return -1;
}

/* Errors inside a series are first named relative to it ("@.samples[3].value"); each enclosing
 * level puts its own name in place of the leading "@", so the path is only formatted on failure. */
static int repath(ctx *c, const char *fmt, ...) {
    if (c->err != 1 || strncmp(c->msg, "proto: @", 8) != 0) return -1;
    char prefix[160], rest[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(rest, sizeof rest, "%s", c->msg + 8);
    snprintf(c->msg, sizeof c->msg, "proto: %.150s%.160s", prefix, rest);
    return -1;
}

/* Reads a varint at *pos (< end); 0 ok, -1 truncated or longer than 10 bytes. */
static inline int rd_varint(const uint8_t *b, size_t end, size_t *pos, uint64_t *out) {
    size_t p = *pos;
    *out = 0;
    if (p < end && b[p] < 0x80) { /* the common one-byte case */
        *out = b[p];
        *pos = p + 1;
        return 0;
    }
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end) return -1;
        uint8_t x = b[p++];
        v |= (uint64_t)(x & 0x7f) << shift;
        if (!(x & 0x80)) {
            *out = v;
            *pos = p;
            return 0;
        }
    }
    return -1;
}

static const char *WT_NAMES[8] = {"varint", "fixed64", "length-delimited", "start-group",
                                  "end-group", "fixed32", "invalid (6)", "invalid (7)"};

/* One field key; errors name the message. */
static inline int rd_key(ctx *c, size_t end, size_t *pos, uint32_t *field, int *wt, const char *where) {
    uint64_t key;
    size_t at = *pos;
    if (rd_varint(c->buf, end, pos, &key)) return fail(c, at, "%s: truncated or overlong field key", where);
    *wt = (int)(key & 7);
    if (key >> 3 == 0 || key >> 3 > 0x1FFFFFFF) return fail(c, at, "%s: illegal field number %llu", where, (unsigned long long)(key >> 3));
    *field = (uint32_t)(key >> 3);
    if (*wt > 5) return fail(c, at, "%s: illegal wire type %d (field %u)", where, *wt, *field);
    return 0;
}

static inline int want_wt(ctx *c, size_t at, int wt, int want, const char *where, const char *fname) {
    if (wt != want)
        return fail(c, at, "%s.%s: wrong wire type %s, want %s", where, fname, WT_NAMES[wt], WT_NAMES[want]);
    return 0;
}

/* Length prefix at *pos: checks it fits in [*pos, end). */
static inline int rd_len(ctx *c, size_t end, size_t *pos, size_t *len, const char *where, const char *fname) {
    uint64_t v;
    size_t at = *pos;
    if (rd_varint(c->buf, end, pos, &v)) return fail(c, at, "%s.%s: truncated or overlong length", where, fname);
    if (v > end - *pos)
        return fail(c, at, "%s.%s: length %llu exceeds the %zu bytes left", where, fname, (unsigned long long)v, end - *pos);
    *len = (size_t)v;
    return 0;
}

static inline int rd_fixed64(ctx *c, size_t end, size_t *pos, uint64_t *out, const char *where, const char *fname) {
    if (end - *pos < 8) return fail(c, *pos, "%s.%s: truncated fixed64", where, fname);
    *out = ld64(c->buf + *pos);
    *pos += 8;
    return 0;
}

static inline int rd_vfield(ctx *c, size_t end, size_t *pos, uint64_t *out, const char *where, const char *fname) {
    size_t at = *pos;
    if (rd_varint(c->buf, end, pos, out)) return fail(c, at, "%s.%s: truncated or overlong varint", where, fname);
    return 0;
}

/* Skips an unknown field's value (groups by their matching end key). */
static int skip(ctx *c, size_t end, size_t *pos, uint32_t field, int wt, const char *where) {
    size_t at = *pos, len = 0;
    uint64_t v;
    switch (wt) {
    case 0:
        if (rd_varint(c->buf, end, pos, &v)) return fail(c, at, "%s: field %u: truncated or overlong varint", where, field);
        return 0;
    case 1:
        if (end - *pos < 8) return fail(c, at, "%s: field %u: truncated fixed64", where, field);
        *pos += 8;
        return 0;
    case 5:
        if (end - *pos < 4) return fail(c, at, "%s: field %u: truncated fixed32", where, field);
        *pos += 4;
        return 0;
    case 2: {
        char fn[24];
        snprintf(fn, sizeof fn, "<field %u>", field);
        if (rd_len(c, end, pos, &len, where, fn)) return -1;
        *pos += len;
        return 0;
    }
    case 3: {
        /* a group: skip nested fields until the end-group key of this field; depth is bounded by
         * the bytes, and the loop always advances */
        size_t depth = 1;
        while (depth) {
            uint32_t f = 0;
            int w = 0;
            if (*pos >= end) return fail(c, at, "%s: field %u: unterminated group", where, field);
            if (rd_key(c, end, pos, &f, &w, where)) return -1;
            if (w == 3) depth++;
            else if (w == 4) depth--;
            else if (skip(c, end, pos, f, w, where)) return -1;
        }
        return 0;
    }
    default:
        return fail(c, at, "%s: field %u: unexpected end-group", where, field);
    }
}

/* ---- canonical labels of one series ---- */
static inline int name_cmp(const lab *a, const lab *b) {
    size_t m = a->nlen < b->nlen ? a->nlen : b->nlen;
    for (size_t i = 0; i < m; i++) /* names are short and mostly differ early */
        if (a->name[i] != b->name[i]) return a->name[i] < b->name[i] ? -1 : 1;
    return (a->nlen > b->nlen) - (a->nlen < b->nlen);
}

/* Stable merge sort by name (insertion sort for short runs). */
static void sort_labs(lab *a, lab *tmp, size_t n) {
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            lab x = a[i];
            size_t j = i;
            while (j > 0 && name_cmp(&a[j - 1], &x) > 0) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = x;
        }
        return;
    }
    size_t h = n / 2;
    sort_labs(a, tmp, h);
    sort_labs(a + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = name_cmp(&a[j], &a[i]) < 0 ? a[j++] : a[i++];
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof(lab));
}

/* Label names and values are short: a call to memcpy per piece costs more than the copy. */
static inline void cpy(uint8_t *d, const uint8_t *s, size_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t a = ld64(s), b = ld64(s + n - 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a = ld32(s), b = ld32(s + n - 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++) d[i] = s[i];
    } else
        memcpy(d, s, n);
}

static inline size_t put_uvarint(uint8_t *p, uint64_t v) {
    size_t i = 0;
    while (v >= 0x80) {
        p[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (uint8_t)v;
    return i;
}

static int push_lab(ctx *c, const uint8_t *name, size_t nlen, const uint8_t *val, size_t vlen, int bad) {
    if (c->nlabs == c->caplabs) {
        size_t nc = c->caplabs ? c->caplabs * 2 : 64;
        lab *np = realloc(c->labs, nc * sizeof(lab));
        if (!np) return oom(c);
        c->labs = np;
        lab *nt = realloc(c->tmp, nc * sizeof(lab));
        if (!nt) return oom(c);
        c->tmp = nt;
        c->caplabs = nc;
    }
    lab *l = &c->labs[c->nlabs++];
    l->name = name;
    l->nlen = (uint32_t)nlen;
    l->val = val;
    l->vlen = (uint32_t)vlen;
    l->bad_utf8 = (uint8_t)bad;
    return 0;
}

/* Thanos' routing hash over L[0..n) in the given order: xxHash64 of tenant 0xff (name 0xff value 0xff)*,
 * empty-valued labels left out when skip_empty. */
static int route_hash(ctx *c, const lab *L, size_t n, int skip_empty, uint64_t *out) {
    size_t len = c->tenant_len + 1;
    for (size_t i = 0; i < n; i++) len += L[i].nlen + L[i].vlen + 2;
    c->hbuf.len = 0;
    if (vgrow(&c->hbuf, len)) return oom(c);
    uint8_t *h = c->hbuf.p;
    if (c->tenant_len) memcpy(h, c->tenant, c->tenant_len);
    h += c->tenant_len;
    *h++ = 0xff;
    for (size_t i = 0; i < n; i++) {
        if (skip_empty && L[i].vlen == 0) continue;
        cpy(h, L[i].name, L[i].nlen);
        h += L[i].nlen;
        *h++ = 0xff;
        cpy(h, L[i].val, L[i].vlen);
        h += L[i].vlen;
        *h++ = 0xff;
    }
    *out = xxh64(c->hbuf.p, (size_t)(h - c->hbuf.p));
    return 0;
}

/* Sorts and checks the series' labels, appends its blob, status, flags and hash. `pre` is a
 * status already decided (v2 ref errors), which wins as in Prometheus' order of checks. */
static int finish_labels(ctx *c, uint8_t pre) {
    lab *L = c->labs;
    size_t n = c->nlabs;
    uint8_t flags = 0, st = pre;
    uint64_t hv = 0;
    /* the bound first: in RW 2.0 a few ref bytes can name a long symbol many times */
    size_t raw = 0;
    for (size_t i = 0; i < n; i++) raw += (size_t)L[i].nlen + L[i].vlen;
    if (raw > c->max_label_bytes || c->blobs.len > c->max_label_bytes - raw) goto too_big;
    /* as Thanos: the labels as the request carries them, before any sorting */
    if (c->hash_as_sent && route_hash(c, L, n, 0, &hv)) return -1;
    for (size_t i = 1; i < n; i++)
        if (name_cmp(&L[i - 1], &L[i]) > 0) {
            flags |= FL_UNSORTED;
            sort_labs(L, c->tmp, n);
            break;
        }
    int has_name = 0, empty_name = 0, bad = 0, empty_metric = 0, dup = 0;
    size_t kept = 0, blob_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (L[i].nlen == 0) empty_name = 1;
        if (L[i].bad_utf8) bad = 1;
        if (L[i].nlen == 8 && memcmp(L[i].name, "__name__", 8) == 0) {
            has_name = 1;
            if (L[i].vlen == 0) empty_metric = 1;
        }
        if (i && name_cmp(&L[i - 1], &L[i]) == 0) dup = 1;
        if (L[i].vlen == 0) {
            flags |= FL_EMPTY_VALUE;
            continue;
        }
        kept++;
        blob_len += 20 + L[i].nlen + L[i].vlen;
    }
    if (st == ST_OK) {
        if (!has_name && (c->require_name || kept == 0)) st = ST_NO_METRIC_NAME;
        else if (empty_name) st = ST_EMPTY_LABEL_NAME;
        else if (bad) st = ST_INVALID_UTF8;
        else if (empty_metric) st = ST_EMPTY_METRIC_NAME;
        else if (dup) st = ST_DUPLICATE_LABEL;
    }
    /* blob */
    if (vgrow(&c->blobs, blob_len + 10)) return oom(c);
    uint8_t *o = c->blobs.p + c->blobs.len, *o0 = o;
    o += put_uvarint(o, kept);
    for (size_t i = 0; i < n; i++) {
        if (L[i].vlen == 0) continue;
        o += put_uvarint(o, L[i].nlen);
        cpy(o, L[i].name, L[i].nlen);
        o += L[i].nlen;
        o += put_uvarint(o, L[i].vlen);
        cpy(o, L[i].val, L[i].vlen);
        o += L[i].vlen;
    }
    c->blobs.len += (size_t)(o - o0);
    if (c->blobs.len > c->max_label_bytes) goto too_big;
    VPUT(&c->blob_off, int64_t, (int64_t)c->blobs.len);
    VPUT(&c->status, uint8_t, st);
    VPUT(&c->flags, uint8_t, flags);
    VPUT(&c->nlabels, uint32_t, (uint32_t)n);
    if (!c->hash_as_sent && route_hash(c, L, n, 1, &hv)) return -1;
    VPUT(&c->hashes, uint64_t, hv);
    return 0;
too_big:
    c->err = 3;
    snprintf(c->msg, sizeof c->msg, "the label sets of the request exceed %zu bytes", c->max_label_bytes);
    return -1;
}

/* Sample{value=1 double, timestamp=2 int64, start_timestamp=3 int64 (v2)} */
static int parse_sample(ctx *c, size_t pos, size_t end, int64_t series, size_t si) {
    uint64_t val = 0, ts = 0, st = 0;
    const char *where = "@";
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        size_t at = pos;
        if (rd_key(c, end, &pos, &f, &wt, where)) goto bad;
        if (f == 1) {
            if (want_wt(c, at, wt, 1, where, "value") || rd_fixed64(c, end, &pos, &val, where, "value")) goto bad;
        } else if (f == 2) {
            if (want_wt(c, at, wt, 0, where, "timestamp") || rd_vfield(c, end, &pos, &ts, where, "timestamp")) goto bad;
        } else if (f == 3 && c->v2) {
            if (want_wt(c, at, wt, 0, where, "start_timestamp") || rd_vfield(c, end, &pos, &st, where, "start_timestamp"))
                goto bad;
        } else if (skip(c, end, &pos, f, wt, where)) goto bad;
    }
    double d;
    memcpy(&d, &val, 8);
    VPUT(&c->s_series, int64_t, series);
    VPUT(&c->s_ts, int64_t, (int64_t)ts);
    VPUT(&c->s_val, double, d);
    if (c->v2) VPUT(&c->s_st, int64_t, (int64_t)st);
    return 0;
bad:
    return repath(c, "@.samples[%zu]", si);
}

/* Label{name=1, value=2} */
static int parse_label(ctx *c, size_t pos, size_t end, int64_t series, size_t li) {
    size_t start = pos;
    const uint8_t *name = c->buf, *val = c->buf;
    size_t nlen = 0, vlen = 0;
    const char *where = "@";
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        size_t at = pos, len = 0;
        if (rd_key(c, end, &pos, &f, &wt, where)) goto bad;
        if (f == 1 || f == 2) {
            const char *fn = f == 1 ? "name" : "value";
            if (want_wt(c, at, wt, 2, where, fn) || rd_len(c, end, &pos, &len, where, fn)) goto bad;
            if (len > 0xFFFFFFFFu) {
                fail(c, at, "%s.%s: too long", where, fn);
                goto bad;
            }
            if (f == 1) name = c->buf + pos, nlen = len;
            else val = c->buf + pos, vlen = len;
            pos += len;
        } else if (skip(c, end, &pos, f, wt, where)) goto bad;
    }
    /* the whole Label message ASCII (keys and short lengths are) means name and value are UTF-8 */
    int bad = !ascii(c->buf + start, end - start) && (!utf8_ok(name, nlen) || !utf8_ok(val, vlen));
    return push_lab(c, name, nlen, val, vlen, bad);
bad:
    return repath(c, "@.labels[%zu]", li);
}

static int series_tail(ctx *c, size_t start, size_t end, uint32_t nex, uint32_t nh) {
    VPUT(&c->s_off, int64_t, (int64_t)(c->s_ts.len / 8));
    VPUT(&c->n_ex, uint32_t, nex);
    VPUT(&c->n_hist, uint32_t, nh);
    VPUT(&c->ser_rng, int64_t, (int64_t)start);
    VPUT(&c->ser_rng, int64_t, (int64_t)(end - start));
    return 0;
}

/* prometheus.TimeSeries{labels=1, samples=2, exemplars=3, histograms=4} */
static int series_v1(ctx *c, size_t start, size_t end, int64_t idx) {
    size_t pos = start, nlab = 0, nsmp = 0;
    uint32_t nex = 0, nh = 0;
    const char *where = "@";
    c->nlabs = 0;
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        size_t at = pos, len = 0;
        if (rd_key(c, end, &pos, &f, &wt, where)) return -1;
        if (f >= 1 && f <= 4) {
            static const char *names[5] = {"", "labels", "samples", "exemplars", "histograms"};
            if (want_wt(c, at, wt, 2, where, names[f]) || rd_len(c, end, &pos, &len, where, names[f])) return -1;
            if (f == 1) {
                if (parse_label(c, pos, pos + len, idx, nlab++)) return -1;
            } else if (f == 2) {
                if (parse_sample(c, pos, pos + len, idx, nsmp++)) return -1;
            } else if (f == 3) nex++;
            else nh++;
            pos += len;
        } else if (skip(c, end, &pos, f, wt, where)) return -1;
    }
    if (finish_labels(c, ST_OK)) return -1;
    return series_tail(c, start, end, nex, nh);
}

static int parse_series_v1(ctx *c, size_t start, size_t end, int64_t idx) {
    if (series_v1(c, start, end, idx)) return repath(c, "%s.timeseries[%lld]", c->top, (long long)idx);
    return 0;
}

static int push_ref(ctx *c, uint64_t v) {
    if (c->nrefs == c->caprefs) {
        size_t nc = c->caprefs ? c->caprefs * 2 : 64;
        uint32_t *np = realloc(c->refs, nc * sizeof(uint32_t));
        if (!np) return oom(c);
        c->refs = np;
        c->caprefs = nc;
    }
    c->refs[c->nrefs++] = (uint32_t)v; /* uint32 fields keep the low 32 bits, as protobuf says */
    return 0;
}

/* io.prometheus.write.v2.TimeSeries{labels_refs=1, samples=2, histograms=3, exemplars=4, metadata=5} */
static int series_v2(ctx *c, size_t start, size_t end, int64_t idx) {
    size_t pos = start, nsmp = 0;
    uint32_t nex = 0, nh = 0;
    uint64_t mtype = 0, help = 0, unit = 0;
    const char *where = "@";
    c->nlabs = 0;
    c->nrefs = 0;
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        size_t at = pos, len = 0;
        uint64_t v = 0;
        if (rd_key(c, end, &pos, &f, &wt, where)) return -1;
        if (f == 1) {
            if (wt == 0) {
                if (rd_vfield(c, end, &pos, &v, where, "labels_refs") || push_ref(c, v)) return -1;
            } else if (wt == 2) { /* packed */
                if (rd_len(c, end, &pos, &len, where, "labels_refs")) return -1;
                size_t pend = pos + len;
                while (pos < pend)
                    if (rd_vfield(c, pend, &pos, &v, where, "labels_refs") || push_ref(c, v)) return -1;
            } else return fail(c, at, "%s.labels_refs: wrong wire type %s, want varint or length-delimited", where, WT_NAMES[wt]);
        } else if (f >= 2 && f <= 5) {
            static const char *names[6] = {"", "", "samples", "histograms", "exemplars", "metadata"};
            if (want_wt(c, at, wt, 2, where, names[f]) || rd_len(c, end, &pos, &len, where, names[f])) return -1;
            size_t mend = pos + len;
            if (f == 2) {
                if (parse_sample(c, pos, mend, idx, nsmp++)) return -1;
            } else if (f == 3) nh++;
            else if (f == 4) nex++;
            else {
                /* Metadata{type=1 enum, help_ref=3, unit_ref=4}; repeated occurrences merge */
                const char *mw = "@.metadata";
                size_t p = pos;
                while (p < mend) {
                    uint32_t g = 0;
                    int w = 0;
                    size_t a2 = p;
                    if (rd_key(c, mend, &p, &g, &w, mw)) return -1;
                    if (g == 1 || g == 3 || g == 4) {
                        const char *fn = g == 1 ? "type" : g == 3 ? "help_ref" : "unit_ref";
                        if (want_wt(c, a2, w, 0, mw, fn) || rd_vfield(c, mend, &p, &v, mw, fn)) return -1;
                        if (g == 1) mtype = v;
                        else if (g == 3) help = v;
                        else unit = v;
                    } else if (skip(c, mend, &p, g, w, mw)) return -1;
                }
            }
            pos = mend;
        } else if (skip(c, end, &pos, f, wt, where)) return -1;
    }
    uint8_t pre = ST_OK;
    if (c->nrefs % 2) pre = ST_BAD_LABEL_REFS;
    else
        for (size_t i = 0; i < c->nrefs; i++)
            if (c->refs[i] >= c->nsym) {
                pre = ST_BAD_LABEL_REFS;
                break;
            }
    if (pre == ST_OK) {
        for (size_t i = 0; i < c->nrefs; i += 2) {
            uint32_t a = c->refs[i], b = c->refs[i + 1];
            const int64_t *sa = c->sym + 2 * a, *sb = c->sym + 2 * b;
            if (push_lab(c, c->buf + sa[0], (size_t)sa[1], c->buf + sb[0], (size_t)sb[1], !c->sym_ok[a] || !c->sym_ok[b]))
                return -1;
        }
        if ((uint32_t)help >= c->nsym || (uint32_t)unit >= c->nsym) pre = ST_BAD_METADATA_REFS;
    }
    if (finish_labels(c, pre)) return -1;
    if (c->status.p[c->status.len - 1] == ST_OK && nsmp == 0 && nh == 0) c->status.p[c->status.len - 1] = ST_NO_SAMPLES;
    VPUT(&c->mtype, int32_t, (int32_t)mtype);
    VPUT(&c->help, uint32_t, (uint32_t)help);
    VPUT(&c->unit, uint32_t, (uint32_t)unit);
    return series_tail(c, start, end, nex, nh);
}

static int parse_series_v2(ctx *c, size_t start, size_t end, int64_t idx) {
    if (series_v2(c, start, end, idx)) return repath(c, "Request.timeseries[%lld]", (long long)idx);
    return 0;
}

/* Sizes the outputs once for `ns` series, so they seldom grow; every figure is bounded by the
 * body's size. */
static int reserve(ctx *c, size_t ns, size_t blob_bytes) {
    vec *per8[] = {&c->blob_off, &c->hashes, &c->s_series, &c->s_ts, &c->s_val, &c->s_off};
    for (size_t i = 0; i < sizeof per8 / sizeof per8[0]; i++)
        if (vgrow(per8[i], 8 * (ns + 1))) return oom(c);
    if ((c->v2 && vgrow(&c->s_st, 8 * ns)) || vgrow(&c->ser_rng, 16 * ns) || vgrow(&c->status, ns) ||
        vgrow(&c->flags, ns) || vgrow(&c->nlabels, 4 * ns) || vgrow(&c->n_ex, 4 * ns) || vgrow(&c->n_hist, 4 * ns) ||
        vgrow(&c->blobs, blob_bytes))
        return oom(c);
    if (c->v2 && (vgrow(&c->mtype, 4 * ns) || vgrow(&c->help, 4 * ns) || vgrow(&c->unit, 4 * ns))) return oom(c);
    return 0;
}

static int decode_v1(ctx *c) {
    size_t pos = 0, end = c->n;
    int64_t idx = 0;
    /* RW 1.0 blobs are never longer than the labels' protobuf bytes; a series takes 100 bytes or more
     * in practice (the arrays grow past that guess if need be) */
    if (reserve(c, c->n / 100, c->n < c->max_label_bytes ? c->n : c->max_label_bytes)) return -1;
    VPUT(&c->blob_off, int64_t, 0);
    VPUT(&c->s_off, int64_t, 0);
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        size_t at = pos, len = 0;
        if (rd_key(c, end, &pos, &f, &wt, "WriteRequest")) return -1;
        if (f == 1) {
            if (want_wt(c, at, wt, 2, "WriteRequest", "timeseries") || rd_len(c, end, &pos, &len, "WriteRequest", "timeseries"))
                return -1;
            if (parse_series_v1(c, pos, pos + len, idx++)) return -1;
            pos += len;
        } else if (f == 3) {
            if (want_wt(c, at, wt, 2, "WriteRequest", "metadata") || rd_len(c, end, &pos, &len, "WriteRequest", "metadata"))
                return -1;
            VPUT(&c->meta_rng, int64_t, (int64_t)pos);
            VPUT(&c->meta_rng, int64_t, (int64_t)len);
            pos += len;
        } else if (skip(c, end, &pos, f, wt, "WriteRequest")) return -1;
    }
    return 0;
}

/* thanos.WriteRequest{timeseries=1 (prometheus_copy.TimeSeries, the layout of prometheus.TimeSeries),
 * tenant=2 string, replica=3 int64}. Field 3 is a varint here where prometheus.WriteRequest has its
 * metadata messages: each decoder refuses the other's field 3 by its wire type. The tenant
 * prefixes every routing hash, and Go writes it after the series, so a skim over the top-level
 * keys (two varints per series, no payload read) finds it before the decoding walk. */
static int thanos_header(ctx *c, size_t *tenant_off, size_t *tenant_len, int64_t *replica, size_t *nser) {
    size_t pos = 0, end = c->n, len = 0;
    const char *w = "thanos.WriteRequest";
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        size_t at = pos;
        uint64_t v = 0;
        if (rd_key(c, end, &pos, &f, &wt, w)) return -1;
        if (f == 1 || f == 2) {
            const char *fn = f == 1 ? "timeseries" : "tenant";
            if (want_wt(c, at, wt, 2, w, fn) || rd_len(c, end, &pos, &len, w, fn)) return -1;
            if (f == 2) *tenant_off = pos, *tenant_len = len; /* the last occurrence wins, as protobuf says */
            else (*nser)++;
            pos += len;
        } else if (f == 3) {
            if (want_wt(c, at, wt, 0, w, "replica") || rd_vfield(c, end, &pos, &v, w, "replica")) return -1;
            *replica = (int64_t)v;
        } else if (skip(c, end, &pos, f, wt, w)) return -1;
    }
    return 0;
}

static int decode_thanos(ctx *c) {
    size_t pos = 0, end = c->n, len = 0;
    int64_t idx = 0;
    /* the header skim has checked every top-level key and length */
    if (reserve(c, c->n_hint, c->n < c->max_label_bytes ? c->n : c->max_label_bytes)) return -1;
    VPUT(&c->blob_off, int64_t, 0);
    VPUT(&c->s_off, int64_t, 0);
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        if (rd_key(c, end, &pos, &f, &wt, c->top)) return -1;
        if (f == 1) {
            if (rd_len(c, end, &pos, &len, c->top, "timeseries")) return -1;
            if (parse_series_v1(c, pos, pos + len, idx++)) return -1;
            pos += len;
        } else if (skip(c, end, &pos, f, wt, c->top)) return -1;
    }
    return 0;
}

static int decode_v2(ctx *c) {
    size_t pos = 0, end = c->n, len = 0, nser = 0;
    int64_t idx = 0;
    VPUT(&c->blob_off, int64_t, 0);
    VPUT(&c->s_off, int64_t, 0);
    /* first the symbols, wherever they are in the body (senders put them first, but any
     * order is valid protobuf); series are only skipped here */
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        size_t at = pos;
        if (rd_key(c, end, &pos, &f, &wt, "Request")) return -1;
        if (f == 4 || f == 5) {
            const char *fn = f == 4 ? "symbols" : "timeseries";
            if (want_wt(c, at, wt, 2, "Request", fn) || rd_len(c, end, &pos, &len, "Request", fn)) return -1;
            nser += f == 5;
            if (f == 4) {
                if (len > 0xFFFFFFFFu) return fail(c, at, "Request.symbols[%zu]: too long", c->sym_rng.len / 16);
                VPUT(&c->sym_rng, int64_t, (int64_t)pos);
                VPUT(&c->sym_rng, int64_t, (int64_t)len);
            }
            pos += len;
        } else if (skip(c, end, &pos, f, wt, "Request")) return -1;
    }
    if (reserve(c, nser, c->n < c->max_label_bytes ? c->n : c->max_label_bytes)) return -1;
    c->nsym = c->sym_rng.len / 16;
    c->sym = (const int64_t *)c->sym_rng.p;
    c->sym_ok = malloc(c->nsym ? c->nsym : 1);
    if (!c->sym_ok) return oom(c);
    for (size_t i = 0; i < c->nsym; i++) c->sym_ok[i] = (uint8_t)utf8_ok(c->buf + c->sym[2 * i], (size_t)c->sym[2 * i + 1]);
    pos = 0;
    while (pos < end) {
        uint32_t f = 0;
        int wt = 0;
        if (rd_key(c, end, &pos, &f, &wt, "Request")) return -1;
        if (f == 5) {
            if (rd_len(c, end, &pos, &len, "Request", "timeseries")) return -1;
            if (parse_series_v2(c, pos, pos + len, idx++)) return -1;
            pos += len;
        } else if (skip(c, end, &pos, f, wt, "Request")) return -1;
    }
    return 0;
}

static void ctx_free(ctx *c) {
    vec *vs[] = {&c->blobs, &c->blob_off, &c->status, &c->flags, &c->nlabels, &c->hashes, &c->s_series, &c->s_ts,
                 &c->s_val, &c->s_st, &c->s_off, &c->n_ex, &c->n_hist, &c->ser_rng, &c->meta_rng, &c->sym_rng,
                 &c->mtype, &c->help, &c->unit, &c->hbuf};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) free(vs[i]->p);
    free(c->labs);
    free(c->tmp);
    free(c->refs);
    free(c->sym_ok);
}

static int put(PyObject *d, const char *key, vec *v) {
    PyObject *b = PyBytes_FromStringAndSize(v->len ? (const char *)v->p : "", (Py_ssize_t)v->len);
    if (!b) return -1;
    int r = PyDict_SetItemString(d, key, b);
    Py_DECREF(b);
    return r;
}

static PyObject *run(PyObject *args, int mode) {
    int v2 = mode == 1;
    Py_buffer body, tenant;
    Py_ssize_t max_label_bytes;
    int hash_as_sent = 1, require_name = 1;
    if (!PyArg_ParseTuple(args, "y*y*n|pp", &body, &tenant, &max_label_bytes, &hash_as_sent, &require_name))
        return NULL;
    ctx c;
    memset(&c, 0, sizeof c);
    c.buf = body.buf;
    c.n = (size_t)body.len;
    c.v2 = v2;
    c.top = mode == 2 ? "thanos.WriteRequest" : "WriteRequest";
    c.tenant = tenant.buf;
    c.tenant_len = (size_t)tenant.len;
    c.max_label_bytes = max_label_bytes < 0 ? 0 : (size_t)max_label_bytes;
    c.hash_as_sent = hash_as_sent;
    c.require_name = require_name;
    int rc;
    size_t t_off = 0, t_len = 0;
    int64_t replica = 0;
    Py_BEGIN_ALLOW_THREADS
    if (mode == 2) {
        rc = thanos_header(&c, &t_off, &t_len, &replica, &c.n_hint);
        if (!rc) {
            c.tenant = c.buf + t_off;
            c.tenant_len = t_len;
            rc = decode_thanos(&c);
        }
    } else rc = v2 ? decode_v2(&c) : decode_v1(&c);
    Py_END_ALLOW_THREADS
    PyObject *d = NULL;
    if (rc) {
        if (c.err == 2) PyErr_NoMemory();
        else PyErr_SetString(c.err == 3 ? PyExc_OverflowError : PyExc_ValueError, c.msg);
        goto done;
    }
    d = PyDict_New();
    if (!d) goto done;
    size_t nser = c.status.len;
    PyObject *ns = PyLong_FromSize_t(nser), *nm = PyLong_FromSize_t(c.s_ts.len / 8);
    int bad = !ns || !nm || PyDict_SetItemString(d, "n_series", ns) || PyDict_SetItemString(d, "n_samples", nm);
    Py_XDECREF(ns);
    Py_XDECREF(nm);
    if (bad || put(d, "blobs", &c.blobs) || put(d, "blob_offsets", &c.blob_off) || put(d, "status", &c.status) ||
        put(d, "flags", &c.flags) || put(d, "label_counts", &c.nlabels) || put(d, "hashes", &c.hashes) ||
        put(d, "sample_offsets", &c.s_off) || put(d, "sample_series", &c.s_series) || put(d, "sample_ts", &c.s_ts) ||
        put(d, "sample_values", &c.s_val) || put(d, "n_exemplars", &c.n_ex) || put(d, "n_histograms", &c.n_hist) ||
        put(d, "series_ranges", &c.ser_rng))
        goto fail;
    if (v2) {
        if (put(d, "sample_start_ts", &c.s_st) || put(d, "symbol_ranges", &c.sym_rng) || put(d, "metadata_type", &c.mtype) ||
            put(d, "help_ref", &c.help) || put(d, "unit_ref", &c.unit))
            goto fail;
    } else if (put(d, "metadata_ranges", &c.meta_rng))
        goto fail;
    if (mode == 2) {
        PyObject *tup = Py_BuildValue("(Ny#L)", d, (const char *)c.buf + t_off, (Py_ssize_t)t_len, (long long)replica);
        d = tup; /* Py_BuildValue's N took the dict's reference */
    }
    goto done;
fail:
    Py_CLEAR(d);
done:
    ctx_free(&c);
    PyBuffer_Release(&body);
    PyBuffer_Release(&tenant);
    return d;
}

static PyObject *py_decode_v1(PyObject *self, PyObject *args) { return run(args, 0); }
static PyObject *py_decode_v2(PyObject *self, PyObject *args) { return run(args, 1); }
static PyObject *py_decode_thanos(PyObject *self, PyObject *args) { return run(args, 2); }

static PyObject *py_xxh64(PyObject *self, PyObject *args) {
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    uint64_t h = xxh64(b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(h);
}


/* ==== the reverse direction: remote-write 1.0 TimeSeries frames from decoded columns ====
 *
 * encode_v1(mode, body, blobs, blob_offsets, sample_offsets, sample_ts, sample_values, n_exemplars,
 *           n_histograms, series_ranges, symbol_ranges, positions) -> bytes
 * The field-1 frames (0x0a uvarint(len) TimeSeries) of the series at `positions`, in that order.
 *   mode 0 (the columns of an RW 1.0 body): labels from the canonical blob, samples from the
 *          columns, exemplars and histograms copied from the series' bytes in the body.
 *   mode 1 (RW 2.0): the same, exemplars translated (label refs into Label messages through the
 *          symbols; an exemplar whose refs do not resolve is left out, as the decoder's
 *          exemplars() leaves it out), histograms keeping fields 1..16 (the numbers, types and
 *          meanings of prometheus.Histogram) and dropping start_timestamp (17) and unknown fields.
 *   mode 2 (RW 1.0): the series' bytes as the sender wrote them, sliced from the body.
 * Fields at their zero value are left out as proto3 encoders do; a sample value is written when
 * its bits are not all zero (-0.0 keeps its sign). Every offset, length and count comes from a
 * decoder of network input and is checked against the buffer it points into; a bad one raises
 * ValueError naming the position, the series and the byte. Runs without the GIL. */

typedef struct {
    const uint8_t *body, *blobs;
    size_t body_len, blobs_len, nser, nsamp, nsym;
    const int64_t *boff, *soff, *ts, *rng, *sym;
    const uint64_t *val;
    const uint32_t *nex, *nh;
    vec ser, sub;
    char msg[320];
    int oom;
} enc;

static inline size_t vsize(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

static int eput(enc *e, vec *v, const void *p, size_t n) {
    if (vput(v, p, n)) {
        e->oom = 1;
        return -1;
    }
    return 0;
}

static int eput_uv(enc *e, vec *v, uint64_t x) {
    uint8_t b[10];
    return eput(e, v, b, put_uvarint(b, x));
}

/* key, length and the bytes of a length-delimited field */
static int eput_ld(enc *e, vec *v, uint8_t key, const void *p, size_t n) {
    return eput(e, v, &key, 1) || eput_uv(e, v, n) || eput(e, v, p, n);
}

static int eput_label(enc *e, vec *v, const uint8_t *name, size_t nl, const uint8_t *val, size_t vl) {
    size_t m = (nl ? 1 + vsize(nl) + nl : 0) + (vl ? 1 + vsize(vl) + vl : 0);
    uint8_t k = 0x0a;
    if (eput(e, v, &k, 1) || eput_uv(e, v, m)) return -1;
    if (nl && eput_ld(e, v, 0x0a, name, nl)) return -1;
    if (vl && eput_ld(e, v, 0x12, val, vl)) return -1;
    return 0;
}

static int efail(enc *e, size_t i, int64_t p, const char *fmt, ...) {
    char what[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(e->msg, sizeof e->msg, "encode_v1: position %zu (series %lld): %s", i, (long long)p, what);
    return -1;
}

/* A field of a message in body[*pos, end): its number, wire type, where its value starts and ends.
 * Checks every length; groups are refused (no remote-write message has one). */
static int efield(enc *e, size_t *pos, size_t end, uint32_t *f, int *wt, size_t *vs, size_t *ve) {
    uint64_t key, v;
    size_t p = *pos;
    if (rd_varint(e->body, end, &p, &key) || key >> 3 == 0 || key >> 3 > 0x1FFFFFFF) return -1;
    *f = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    *vs = p;
    switch (*wt) {
    case 0:
        if (rd_varint(e->body, end, &p, &v)) return -1;
        break;
    case 1:
        if (end - p < 8) return -1;
        p += 8;
        break;
    case 5:
        if (end - p < 4) return -1;
        p += 4;
        break;
    case 2:
        if (rd_varint(e->body, end, &p, &v) || v > end - p) return -1;
        *vs = p;
        p += (size_t)v;
        break;
    default:
        return -1;
    }
    *ve = p;
    *pos = p;
    return 0;
}

/* An RW 2.0 Exemplar{labels_refs=1, value=2 double, timestamp=3 int64} as prometheus.Exemplar
 * {labels=1 Label, value=2, timestamp=3} into e->sub; 1 when its refs do not resolve. */
static int ex_v2(enc *e, size_t i, int64_t p, size_t start, size_t end) {
    size_t pos = start, vs, ve;
    uint32_t f;
    int wt;
    uint64_t bits = 0, ts = 0, nrefs = 0;
    /* first pass: the refs, counted and checked */
    while (pos < end) {
        size_t at = pos;
        if (efield(e, &pos, end, &f, &wt, &vs, &ve))
            return efail(e, i, p, "malformed exemplar field at byte %zu", at);
        if (f == 1) {
            if (wt == 0) {
                uint64_t r;
                size_t q = vs;
                rd_varint(e->body, ve, &q, &r);
                if ((uint32_t)r >= e->nsym) return 1;
                nrefs++;
            } else if (wt == 2) {
                for (size_t q = vs; q < ve;) {
                    uint64_t r;
                    if (rd_varint(e->body, ve, &q, &r))
                        return efail(e, i, p, "malformed exemplar labels_refs at byte %zu", q);
                    if ((uint32_t)r >= e->nsym) return 1;
                    nrefs++;
                }
            } else return efail(e, i, p, "exemplar labels_refs of wire type %d at byte %zu", wt, at);
        } else if (f == 2 && wt == 1) bits = ld64(e->body + vs);
        else if (f == 3 && wt == 0) {
            size_t q = vs;
            rd_varint(e->body, ve, &q, &ts);
        }
    }
    if (nrefs % 2) return 1;
    /* second pass: the labels in the sender's order */
    int have = 0;
    uint32_t name = 0;
    for (pos = start; pos < end;) {
        efield(e, &pos, end, &f, &wt, &vs, &ve);
        if (f != 1) continue;
        size_t q = vs;
        while (q < ve) {
            uint64_t r;
            rd_varint(e->body, ve, &q, &r);
            if (!have) {
                name = (uint32_t)r;
                have = 1;
            } else {
                const int64_t *a = e->sym + 2 * name, *b = e->sym + 2 * (uint32_t)r;
                if (eput_label(e, &e->sub, e->body + a[0], (size_t)a[1], e->body + b[0], (size_t)b[1])) return -1;
                have = 0;
            }
            if (wt == 0) break;
        }
    }
    if (bits) {
        uint8_t k = 0x11;
        if (eput(e, &e->sub, &k, 1) || eput(e, &e->sub, &bits, 8)) return -1;
    }
    if (ts) {
        uint8_t k = 0x18;
        if (eput(e, &e->sub, &k, 1) || eput_uv(e, &e->sub, ts)) return -1;
    }
    return 0;
}

/* The exemplars and histograms of series p, from its bytes in the body, appended to e->ser. */
static int rare(enc *e, size_t i, int64_t p, int v2) {
    int64_t off = e->rng[2 * p], len = e->rng[2 * p + 1];
    if (off < 0 || len < 0 || (uint64_t)off > e->body_len || (uint64_t)len > e->body_len - (uint64_t)off)
        return efail(e, i, p, "series range %lld+%lld outside the body of %zu bytes", (long long)off, (long long)len,
                     e->body_len);
    size_t end = (size_t)(off + len), vs, ve;
    uint32_t f;
    int wt;
    uint32_t ex_f = v2 ? 4 : 3, h_f = v2 ? 3 : 4;
    for (int pass = 0; pass < 2; pass++) { /* exemplars (field 3 out), then histograms (field 4 out) */
        uint32_t want = pass ? h_f : ex_f;
        uint8_t key = pass ? 0x22 : 0x1a;
        for (size_t pos = (size_t)off; pos < end;) {
            size_t at = pos;
            if (efield(e, &pos, end, &f, &wt, &vs, &ve)) return efail(e, i, p, "malformed field at byte %zu", at);
            if (f != want) continue;
            if (wt != 2) return efail(e, i, p, "field %u of wire type %d at byte %zu", f, wt, at);
            if (!v2) {
                if (eput_ld(e, &e->ser, key, e->body + vs, ve - vs)) return -1;
                continue;
            }
            e->sub.len = 0;
            if (pass == 0) {
                int r = ex_v2(e, i, p, vs, ve);
                if (r < 0) return -1;
                if (r == 1) continue; /* refs outside the symbols: left out */
            } else {
                for (size_t q = vs; q < ve;) {
                    size_t a = q, hvs, hve;
                    uint32_t g;
                    int w;
                    if (efield(e, &q, ve, &g, &w, &hvs, &hve))
                        return efail(e, i, p, "malformed histogram field at byte %zu", a);
                    if (g >= 1 && g <= 16 && eput(e, &e->sub, e->body + a, q - a)) return -1;
                }
            }
            if (eput_ld(e, &e->ser, key, e->sub.p ? e->sub.p : (const uint8_t *)"", e->sub.len)) return -1;
        }
    }
    return 0;
}

static inline size_t sample_len(uint64_t bits, int64_t t) { /* a Sample message, at most 20 bytes */
    return (bits ? 9 : 0) + (t ? 1 + vsize((uint64_t)t) : 0);
}

/* First pass: checks series p's columns and sizes its TimeSeries body (*L, without the frame).
 * Exemplars and histograms (rare) are encoded into e->ser to learn their size. */
static int measure_one(enc *e, size_t i, int64_t p, int mode, size_t *L) {
    if (p < 0 || (uint64_t)p >= e->nser) {
        snprintf(e->msg, sizeof e->msg, "encode_v1: position %zu: series %lld outside the %zu series", i, (long long)p,
                 e->nser);
        return -1;
    }
    if (mode == 2) {
        int64_t off = e->rng[2 * p], len = e->rng[2 * p + 1];
        if (off < 0 || len < 0 || (uint64_t)off > e->body_len || (uint64_t)len > e->body_len - (uint64_t)off)
            return efail(e, i, p, "series range %lld+%lld outside the body of %zu bytes", (long long)off,
                         (long long)len, e->body_len);
        *L = (size_t)len;
        return 0;
    }
    int64_t b0 = e->boff[p], b1 = e->boff[p + 1], s0 = e->soff[p], s1 = e->soff[p + 1];
    if (b0 < 0 || b1 < b0 || (uint64_t)b1 > e->blobs_len)
        return efail(e, i, p, "blob offsets %lld..%lld outside the %zu blob bytes", (long long)b0, (long long)b1,
                     e->blobs_len);
    if (s0 < 0 || s1 < s0 || (uint64_t)s1 > e->nsamp)
        return efail(e, i, p, "sample offsets %lld..%lld outside the %zu samples", (long long)s0, (long long)s1,
                     e->nsamp);
    const uint8_t *bl = e->blobs;
    size_t q = (size_t)b0, bend = (size_t)b1, total = 0;
    uint64_t n;
    if (rd_varint(bl, bend, &q, &n)) goto bad_blob;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t nl, vl;
        if (rd_varint(bl, bend, &q, &nl) || nl > bend - q) goto bad_blob;
        q += (size_t)nl;
        if (rd_varint(bl, bend, &q, &vl) || vl > bend - q) goto bad_blob;
        q += (size_t)vl;
        size_t m = (nl ? 1 + vsize(nl) + nl : 0) + (vl ? 1 + vsize(vl) + vl : 0);
        total += 1 + vsize(m) + m; /* bounded by a few times the blob bytes: no overflow */
    }
    if (q != bend) goto bad_blob;
    for (int64_t s = s0; s < s1; s++) total += 2 + sample_len(e->val[s], e->ts[s]);
    if (e->nex[p] || e->nh[p]) {
        e->ser.len = 0;
        if (rare(e, i, p, mode == 1)) return -1;
        total += e->ser.len;
    }
    *L = total;
    return 0;
bad_blob:
    return efail(e, i, p, "malformed label blob at byte %zu of %lld..%lld", q, (long long)b0, (long long)b1);
}

static inline uint8_t *wr_ld(uint8_t *o, uint8_t key, const uint8_t *p, size_t n) {
    *o++ = key;
    o += put_uvarint(o, n);
    memcpy(o, p, n);
    return o + n;
}

/* Second pass: series p framed at o (its body length L from the first pass, every bound checked
 * there); returns the end. */
static uint8_t *write_one(enc *e, size_t i, int64_t p, int mode, size_t L, uint8_t *o) {
    *o++ = 0x0a;
    o += put_uvarint(o, L);
    uint8_t *start = o;
    if (mode == 2) {
        memcpy(o, e->body + e->rng[2 * p], L);
        return o + L;
    }
    const uint8_t *bl = e->blobs;
    size_t q = (size_t)e->boff[p], bend = (size_t)e->boff[p + 1];
    uint64_t n = 0;
    rd_varint(bl, bend, &q, &n);
    for (uint64_t k = 0; k < n; k++) {
        uint64_t nl = 0, vl = 0;
        rd_varint(bl, bend, &q, &nl);
        const uint8_t *name = bl + q;
        q += (size_t)nl;
        rd_varint(bl, bend, &q, &vl);
        *o++ = 0x0a;
        o += put_uvarint(o, (nl ? 1 + vsize(nl) + nl : 0) + (vl ? 1 + vsize(vl) + vl : 0));
        if (nl) o = wr_ld(o, 0x0a, name, (size_t)nl);
        if (vl) o = wr_ld(o, 0x12, bl + q, (size_t)vl);
        q += (size_t)vl;
    }
    for (int64_t s = e->soff[p]; s < e->soff[p + 1]; s++) {
        uint64_t bits = e->val[s];
        int64_t t = e->ts[s];
        *o++ = 0x12;
        *o++ = (uint8_t)sample_len(bits, t);
        if (bits) {
            *o++ = 0x09;
            memcpy(o, &bits, 8);
            o += 8;
        }
        if (t) {
            *o++ = 0x10;
            o += put_uvarint(o, (uint64_t)t);
        }
    }
    if (e->nex[p] || e->nh[p]) { /* encoded again: the first pass kept only the size */
        e->ser.len = 0;
        size_t used = (size_t)(o - start), room = L > used ? L - used : 0;
        if (rare(e, i, p, mode == 1) == 0 && e->ser.len) {
            size_t k = e->ser.len < room ? e->ser.len : room; /* never short: the caller checks the total */
            memcpy(o, e->ser.p, k);
            o += k;
        }
    }
    return o;
}

static PyObject *py_encode_v1(PyObject *self, PyObject *args) {
    int mode;
    Py_buffer b[11];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "iy*y*y*y*y*y*y*y*y*y*y*", &mode, &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6],
                          &b[7], &b[8], &b[9], &b[10]))
        return NULL;
    PyObject *res = NULL;
    enc e;
    memset(&e, 0, sizeof e);
    e.body = b[0].buf, e.body_len = (size_t)b[0].len;
    e.blobs = b[1].buf, e.blobs_len = (size_t)b[1].len;
    e.boff = b[2].buf, e.soff = b[3].buf, e.ts = b[4].buf, e.val = b[5].buf;
    e.nex = b[6].buf, e.nh = b[7].buf, e.rng = b[8].buf, e.sym = b[9].buf;
    e.nsym = (size_t)b[9].len / 16;
    const int64_t *ps = b[10].buf;
    size_t npos = (size_t)b[10].len / 8;
    e.nser = (size_t)b[8].len / 16;
    e.nsamp = (size_t)b[4].len / 8;
    if (mode < 0 || mode > 2 || b[8].len % 16 || b[9].len % 16 || b[10].len % 8 ||
        (mode != 2 && ((size_t)b[2].len != 8 * (e.nser + 1) || b[3].len != b[2].len || b[5].len != b[4].len ||
                       b[4].len % 8 || (size_t)b[6].len != 4 * e.nser || b[7].len != b[6].len))) {
        PyErr_SetString(PyExc_ValueError, "encode_v1: mode 0..2; series_ranges int64 (n, 2); blob and sample offsets "
                                          "int64 n+1; timestamps and values int64/float64 of one length; exemplar "
                                          "and histogram counts uint32 n; symbol ranges int64 (s, 2); positions int64");
        goto done;
    }
    int rc = 0;
    size_t total = 0, *lens = malloc((npos ? npos : 1) * sizeof *lens);
    if (!lens) rc = -1, e.oom = 1;
    Py_BEGIN_ALLOW_THREADS
    for (size_t k = 0; k < e.nsym && mode == 1 && !rc; k++) /* the symbols resolve exemplar refs */
        if (e.sym[2 * k] < 0 || e.sym[2 * k + 1] < 0 || (uint64_t)e.sym[2 * k] > e.body_len ||
            (uint64_t)e.sym[2 * k + 1] > e.body_len - (uint64_t)e.sym[2 * k]) {
            snprintf(e.msg, sizeof e.msg, "encode_v1: symbol %zu: range %lld+%lld outside the body of %zu bytes", k,
                     (long long)e.sym[2 * k], (long long)e.sym[2 * k + 1], e.body_len);
            rc = -1;
            break;
        }
    for (size_t i = 0; i < npos && !rc; i++) {
        rc = measure_one(&e, i, ps[i], mode, &lens[i]);
        if (!rc) {
            size_t add = 1 + vsize(lens[i]) + lens[i];
            if (total > (size_t)PY_SSIZE_T_MAX - add) {
                snprintf(e.msg, sizeof e.msg, "encode_v1: output larger than %zd bytes", PY_SSIZE_T_MAX);
                rc = -1;
            }
            total += add;
        }
    }
    Py_END_ALLOW_THREADS
    if (rc) {
        if (e.oom) PyErr_NoMemory();
        else PyErr_SetString(PyExc_ValueError, e.msg);
    } else if ((res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total))) {
        uint8_t *o = (uint8_t *)PyBytes_AS_STRING(res), *o0 = o;
        Py_BEGIN_ALLOW_THREADS
        for (size_t i = 0; i < npos; i++) o = write_one(&e, i, ps[i], mode, lens[i], o);
        Py_END_ALLOW_THREADS
        if ((size_t)(o - o0) != total) { /* never: both passes read the same bytes */
            Py_CLEAR(res);
            PyErr_SetString(PyExc_SystemError, "encode_v1: the two passes disagree");
        }
    }
    free(lens);
done:
    free(e.ser.p);
    free(e.sub.p);
    for (int k = 0; k < 11; k++) PyBuffer_Release(&b[k]);
    return res;
}

static PyMethodDef methods[] = {
    {"decode_v1", py_decode_v1, METH_VARARGS, "decode_v1(body, tenant, max_label_bytes) -> dict of columns"},
    {"decode_v2", py_decode_v2, METH_VARARGS, "decode_v2(body, tenant, max_label_bytes) -> dict of columns"},
    {"encode_v1", py_encode_v1, METH_VARARGS,
     "encode_v1(mode, body, blobs, blob_offsets, sample_offsets, sample_ts, sample_values, n_exemplars, n_histograms, "
     "series_ranges, symbol_ranges, positions) -> bytes: remote-write 1.0 TimeSeries frames"},
    {"decode_thanos", py_decode_thanos, METH_VARARGS,
     "decode_thanos(body, b'', max_label_bytes) -> (dict of columns, tenant bytes, replica)"},
    {"xxh64", py_xxh64, METH_VARARGS, "xxh64(data) -> int: xxHash64 with seed 0"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_rwdecode", "Remote-write request bodies into columns.", -1,
                                 methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rwdecode(void) { return PyModule_Create(&mod); }
