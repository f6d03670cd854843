/*
 * The in-memory TSDB head's hot state (head.py is the Python side).
 *
 * One object, _head.Head, owns:
 *   - the series table: a slot per live series (append state and its open XOR chunk), refs
 *     handed out densely from 1 and never reused, ref -> slot through a uint32 array;
 *   - a hash table from a series' canonical label blob (sorted labels as a WAL Series record
 *     encodes them: uvarint count, then uvarint-length-prefixed name and value bytes) to its
 *     slot: seeded 64-bit hash, linear probing, stored hashes, collisions settled by comparing
 *     the bytes kept in a blob arena;
 *   - the completed chunks: bytes in 1 MiB pages (a chunk never spans two), metadata in one
 *     growing array, each series' chunks linked newest to oldest.
 *
 * Appending follows Prometheus v3.9.1 (tsdb/head_append.go): memSeries.appendable for the
 * error cases, appendPreprocessor + computeChunkEndTime for chunk cutting, xorAppender for the
 * bits. A batch behaves like one Prometheus appender (checked at Append against the state
 * before the batch, re-checked at Commit in batch order): see the STATUS_* codes.
 *
 * Every method runs its work with the GIL released under the object's own lock (taken only
 * without the GIL, so no lock-order deadlock). All caller buffers are read once per element and
 * checked; label blobs are validated when a series is created. Memory grows with the data kept,
 * never with a count read from the input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

enum {
    ST_OK = 0,           /* appended */
    ST_DUP_OK = 1,       /* same timestamp and same value bits as the last sample: ignored */
    ST_OUT_OF_ORDER = 2, /* "out of order sample" */
    ST_DUPLICATE = 3,    /* "duplicate sample for timestamp" (different value) */
    ST_OUT_OF_BOUNDS = 4,/* "out of bounds" (t < min valid time) */
    ST_TOO_OLD = 5,      /* "too old sample" (out-of-order window on, sample before it) */
    ST_OOO_OK = 6,       /* appended to the series' out-of-order samples */
    ST_BAD_REF = 7,      /* no live series has this ref */
    ST_AT_COMMIT = 0x80  /* flag: passed the Append check against the state before the batch and
                            was dropped only at Commit (Prometheus reports such a sample accepted) */
};

#define PAGE_BITS 20
#define PAGE_SIZE ((uint64_t)1 << PAGE_BITS)
#define MAX_SAMPLE_BYTES 19          /* worst case of one XOR sample after the first */
#define XOR_SOFT_LIMIT (1024 - 19)    /* chunkenc.MaxBytesPerXORChunk - 19 */
#define NO_CHUNK (-1)

INLINE uint64_t load_be64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return __builtin_bswap64(x); }
INLINE void store_be64(uint8_t *p, uint64_t x) { x = __builtin_bswap64(x); memcpy(p, &x, 8); }
INLINE uint64_t ld64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return x; }
INLINE void st64(uint8_t *p, uint64_t x) { memcpy(p, &x, 8); }

typedef struct {
    /* identity */
    int64_t ref;            /* 0: free slot */
    uint64_t hash;
    uint64_t blob_off;
    uint32_t blob_len;
    /* open chunk: an XOR bit stream; bytes past nbits are zero */
    uint32_t cap;
    uint8_t *cbuf;
    uint32_t nbits;
    uint16_t n;             /* samples in the open chunk (0: none) */
    uint8_t lead, trail;
    uint8_t has_data;       /* the series has a sample (so t_last, v_last are valid); 2: the last
                             * one is a native histogram (kept by _histchunk, see hist_mark) */
    uint8_t has0;           /* has_data when this batch first touched the series */
    int64_t t_last;
    uint64_t v_last;
    int64_t tdelta;
    int64_t cmint;          /* open chunk's min time */
    int64_t next_at;        /* Prometheus' nextAt */
    int64_t last_chunk;     /* newest completed chunk, NO_CHUNK if none */
    uint64_t epoch;         /* batch that last touched the series */
    int64_t maxt0;
    uint64_t v0;
    /* out-of-order samples, sorted by time, unique times */
    int64_t *ooo_t;
    uint64_t *ooo_v;
    uint32_t ooo_n, ooo_cap;
    uint8_t hold;           /* out-of-order native histograms (in _histchunk) keep the series */
} series_t;

typedef struct {
    int64_t mint, maxt;
    uint64_t off;           /* page << PAGE_BITS | offset in page */
    uint32_t len;
    uint32_t slot;
    int64_t prev;           /* the series' previous chunk, NO_CHUNK if none */
} cmeta_t;

typedef struct {
    uint64_t hash;
    uint32_t slot;          /* 0: empty */
    uint32_t pad;
} hentry_t;

typedef struct {
    int64_t ref;            /* 0: empty */
    uint32_t slot;
    uint32_t pad;
} rentry_t;

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int64_t chunk_range;
    int samples_per_chunk;
    uint64_t seed, hash_mask;
    uint64_t epoch;
    /* series */
    series_t *slots; uint32_t nslots, slots_cap;    /* slot 0 unused */
    uint32_t *free_slots; uint32_t nfree, free_cap;
    rentry_t *rtab; uint64_t rtab_cap;                /* ref -> slot, open addressing */
    int64_t next_ref;                                 /* above every ref handed out or replayed */
    uint64_t live;
    /* label blobs */
    uint8_t *blobs; uint64_t blobs_len, blobs_cap;
    /* hash table */
    hentry_t *table; uint64_t table_cap;
    /* completed chunks */
    uint8_t **pages; uint64_t npages, pages_cap, page_fill;
    cmeta_t *chunks; int64_t nchunks, chunks_cap;
    uint64_t open_bytes;    /* sum of open chunk buffer capacities */
    uint64_t series_created, series_removed, chunks_created, chunks_removed; /* totals */
    uint64_t ooo_samples;   /* out-of-order samples held */
} HeadObject;

/* ------------------------------------------------------------------ hashing */

INLINE uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
INLINE uint64_t fmix(uint64_t k) {
    k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53ULL; k ^= k >> 33;
    return k;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n, uint64_t seed) {
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t w = ld64(p);
        w *= 0x87c37b91114253d5ULL; w = rotl(w, 31); w *= 0x4cf5ad432745937fULL;
        h ^= w; h = rotl(h, 27) * 5 + 0x52dce729;
        p += 8; n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        w *= 0x87c37b91114253d5ULL; w = rotl(w, 31); w *= 0x4cf5ad432745937fULL;
        h ^= w;
    }
    return fmix(h);
}

INLINE uint64_t blob_hash(HeadObject *self, const uint8_t *p, size_t n) {
    return hash_bytes(p, n, self->seed) & self->hash_mask;
}

static int table_find(HeadObject *self, uint64_t h, const uint8_t *p, size_t n) {
    uint64_t m = self->table_cap - 1;
    for (uint64_t i = h & m;; i = (i + 1) & m) {
        hentry_t *e = &self->table[i];
        if (!e->slot) return 0;
        if (e->hash == h) {
            series_t *s = &self->slots[e->slot];
            if (s->blob_len == n && memcmp(self->blobs + s->blob_off, p, n) == 0) return (int)e->slot;
        }
    }
}

static void table_put(hentry_t *t, uint64_t cap, uint64_t h, uint32_t slot) {
    uint64_t m = cap - 1;
    uint64_t i = h & m;
    while (t[i].slot) i = (i + 1) & m;
    t[i].hash = h;
    t[i].slot = slot;
}

/* Rebuild the table for the live slots with capacity `cap` (a power of two). */
static int table_rebuild(HeadObject *self, uint64_t cap) {
    while (cap < 16 || (double)self->live > 0.7 * (double)cap) cap <<= 1;
    hentry_t *t = calloc(cap, sizeof(hentry_t));
    if (!t) return -1;
    for (uint32_t sl = 1; sl < self->nslots; sl++)
        if (self->slots[sl].ref) table_put(t, cap, self->slots[sl].hash, sl);
    free(self->table);
    self->table = t;
    self->table_cap = cap;
    return 0;
}

/* The ref -> slot table: refs are sparse over time (never reused, and a replayed WAL brings
 * its own), so a hash table rather than an array indexed by ref. Load factor <= 1/2. */
static uint32_t rtab_find(HeadObject *self, int64_t ref) {
    if (ref <= 0) return 0;
    uint64_t m = self->rtab_cap - 1;
    for (uint64_t i = fmix((uint64_t)ref) & m;; i = (i + 1) & m) {
        rentry_t *e = &self->rtab[i];
        if (e->ref == ref) return e->slot;
        if (!e->ref) return 0;
    }
}

static void rtab_put(rentry_t *t, uint64_t cap, int64_t ref, uint32_t slot) {
    uint64_t m = cap - 1;
    uint64_t i = fmix((uint64_t)ref) & m;
    while (t[i].ref) i = (i + 1) & m;
    t[i].ref = ref;
    t[i].slot = slot;
}

/* A ref table of capacity cap (power of two) holding the live slots' refs; NULL if out of memory. */
static rentry_t *rtab_build(HeadObject *self, uint64_t cap) {
    rentry_t *t = calloc(cap, sizeof(rentry_t));
    if (!t) return NULL;
    for (uint32_t sl = 1; sl < self->nslots; sl++)
        if (self->slots[sl].ref) rtab_put(t, cap, self->slots[sl].ref, sl);
    return t;
}

INLINE uint64_t rtab_cap_for(uint64_t live) {
    uint64_t cap = 16;
    while (cap < 2 * live) cap <<= 1;
    return cap;
}

/* --------------------------------------------------------------- blob checks */

INLINE int read_uvarint(const uint8_t *p, size_t len, size_t *i, uint64_t *out) {
    uint64_t x = 0;
    unsigned s = 0;
    for (int j = 0; j < 10; j++) {
        if (*i >= len) return -1;
        uint8_t b = p[(*i)++];
        if (b < 0x80) {
            if (j == 9 && b > 1) return -1;
            *out = x | ((uint64_t)b << s);
            return 0;
        }
        x |= (uint64_t)(b & 0x7f) << s;
        s += 7;
    }
    return -1;
}

/* Whether p[0:n] is valid UTF-8 as Go's utf8.Valid sees it (no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static int valid_utf8(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; }
        else return 0;
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* 0 if p[0:n] is a well-formed label blob with strictly ascending names; else the byte offset
 * of the problem + 1, and *why says what. */
static int64_t blob_check(const uint8_t *p, size_t n, const char **why) {
    size_t i = 0;
    uint64_t cnt, ln;
    const uint8_t *prev = NULL;
    size_t prevlen = 0;
    if (read_uvarint(p, n, &i, &cnt)) { *why = "bad label count"; return 1; }
    if (cnt > n) { *why = "label count larger than the blob"; return 1; }
    for (uint64_t k = 0; k < cnt; k++) {
        size_t at = i;
        if (read_uvarint(p, n, &i, &ln) || ln > n - i) { *why = "label name runs past the blob"; return (int64_t)at + 1; }
        const uint8_t *name = p + i;
        if (!valid_utf8(name, ln)) { *why = "label name is not valid UTF-8"; return (int64_t)at + 1; }
        i += ln;
        if (prev) {
            size_t mn = prevlen < ln ? prevlen : ln;
            int c = memcmp(prev, name, mn);
            if (c > 0 || (c == 0 && prevlen >= ln)) {
                *why = c == 0 && prevlen == ln ? "duplicate label name" : "label names not sorted";
                return (int64_t)at + 1;
            }
        }
        prev = name;
        prevlen = ln;
        at = i;
        if (read_uvarint(p, n, &i, &ln) || ln > n - i) { *why = "label value runs past the blob"; return (int64_t)at + 1; }
        if (!valid_utf8(p + i, ln)) { *why = "label value is not valid UTF-8"; return (int64_t)at + 1; }
        i += ln;
    }
    if (i != n) { *why = "trailing bytes after the labels"; return (int64_t)i + 1; }
    return 0;
}

/* ---------------------------------------------------------------- XOR bits */

/* Make room for `extra` more bytes (plus 9 of slack for the 64-bit writes) in the open chunk. */
static int chunk_reserve(HeadObject *self, series_t *s, uint32_t extra) {
    uint64_t need = (uint64_t)((s->nbits + 7) >> 3) + extra + 9;
    if (need <= s->cap) return 0;
    /* as Prometheus: 128 bytes first, then growth; a chunk is cut past 1005 bytes, so the
     * buffer tops out near 1024 + one sample + slack */
    uint64_t cap = s->cap ? s->cap : 128;
    while (cap < need) cap = cap < 512 ? cap * 2 : cap < 768 ? 768 : cap < 1088 ? 1088 : cap * 2;
    uint8_t *b = realloc(s->cbuf, cap);
    if (!b) return -1;
    memset(b + s->cap, 0, cap - s->cap);
    self->open_bytes += cap - s->cap;
    s->cbuf = b;
    s->cap = (uint32_t)cap;
    return 0;
}

/* Append the low n bits of v (1 <= n <= 64, no bits above n). */
INLINE void put_bits(series_t *s, uint64_t v, unsigned n) {
    uint8_t *p = s->cbuf + (s->nbits >> 3);
    unsigned o = s->nbits & 7;
    if (o + n <= 64) {
        store_be64(p, load_be64(p) | (v << (64 - o - n)));
    } else {
        unsigned lo = o + n - 64; /* 1..7 */
        store_be64(p, load_be64(p) | (v >> lo));
        p[8] |= (uint8_t)(v << (8 - lo));
    }
    s->nbits += n;
}

INLINE void put_byte(series_t *s, uint8_t b) { put_bits(s, b, 8); }

static void put_vdelta(series_t *s, uint64_t vbits) {
    uint64_t d = vbits ^ s->v_last;
    if (d == 0) {
        put_bits(s, 0, 1);
        return;
    }
    unsigned ld = (unsigned)__builtin_clzll(d), tr = (unsigned)__builtin_ctzll(d);
    if (ld >= 32) ld = 31;
    if (s->lead != 0xff && ld >= s->lead && tr >= s->trail) {
        unsigned mb = 64 - s->lead - s->trail;
        uint64_t x = d >> s->trail;
        if (mb <= 62) {
            put_bits(s, (2ULL << mb) | x, mb + 2);
        } else {
            put_bits(s, 2, 2);
            put_bits(s, x, mb);
        }
    } else {
        unsigned sg = 64 - ld - tr;
        s->lead = (uint8_t)ld;
        s->trail = (uint8_t)tr;
        put_bits(s, (3ULL << 11) | ((uint64_t)ld << 6) | (sg & 63), 13);
        put_bits(s, d >> tr, sg);
    }
}

INLINE uint64_t zigzag(int64_t t) { return ((uint64_t)t << 1) ^ (uint64_t)(t >> 63); }

static void put_uvarint_bytes(series_t *s, uint64_t x) {
    while (x >= 0x80) {
        put_byte(s, (uint8_t)(x | 0x80));
        x >>= 7;
    }
    put_byte(s, (uint8_t)x);
}

/* Encode one sample into the open chunk (room already reserved). */
static void xor_append(series_t *s, int64_t t, uint64_t vbits) {
    if (s->n == 0) {
        s->nbits = 16;
        put_uvarint_bytes(s, zigzag(t));
        put_bits(s, vbits, 64);
        s->lead = 0xff;
        s->trail = 0;
        s->tdelta = 0;
    } else if (s->n == 1) {
        uint64_t td = (uint64_t)t - (uint64_t)s->t_last;
        put_uvarint_bytes(s, td);
        put_vdelta(s, vbits);
        s->tdelta = (int64_t)td;
    } else {
        uint64_t td = (uint64_t)t - (uint64_t)s->t_last;
        int64_t dod = (int64_t)(td - (uint64_t)s->tdelta);
        if (dod == 0) {
            put_bits(s, 0, 1);
        } else if (dod >= -8191 && dod <= 8192) {
            put_bits(s, (2ULL << 14) | ((uint64_t)dod & 0x3fffULL), 16);
        } else if (dod >= -65535 && dod <= 65536) {
            put_bits(s, (6ULL << 17) | ((uint64_t)dod & 0x1ffffULL), 20);
        } else if (dod >= -524287 && dod <= 524288) {
            put_bits(s, (14ULL << 20) | ((uint64_t)dod & 0xfffffULL), 24);
        } else {
            put_bits(s, 15, 4);
            put_bits(s, (uint64_t)dod, 64);
        }
        s->tdelta = (int64_t)td;
        put_vdelta(s, vbits);
    }
    s->n++;
    s->cbuf[0] = (uint8_t)(s->n >> 8);
    s->cbuf[1] = (uint8_t)s->n;
}

INLINE uint32_t chunk_len(const series_t *s) { return (s->nbits + 7) >> 3; }

/* ------------------------------------------------------------ chunk store */

INLINE uint8_t *chunk_data(HeadObject *self, const cmeta_t *c) {
    return self->pages[c->off >> PAGE_BITS] + (c->off & (PAGE_SIZE - 1));
}

/* Copy `len` bytes into the page store; *off gets the position. */
static int store_bytes(HeadObject *self, const uint8_t *p, uint32_t len, uint64_t *off) {
    if (self->npages == 0 || self->page_fill + len > PAGE_SIZE) {
        if (self->npages == self->pages_cap) {
            uint64_t cap = self->pages_cap ? self->pages_cap * 2 : 16;
            uint8_t **pp = realloc(self->pages, cap * sizeof(uint8_t *));
            if (!pp) return -1;
            self->pages = pp;
            self->pages_cap = cap;
        }
        uint8_t *pg = malloc(PAGE_SIZE);
        if (!pg) return -1;
        self->pages[self->npages++] = pg;
        self->page_fill = 0;
    }
    memcpy(self->pages[self->npages - 1] + self->page_fill, p, len);
    *off = ((self->npages - 1) << PAGE_BITS) | self->page_fill;
    self->page_fill += len;
    return 0;
}

static int chunks_reserve(HeadObject *self, int64_t more) {
    if (self->nchunks + more <= self->chunks_cap) return 0;
    int64_t cap = self->chunks_cap ? self->chunks_cap : 1024;
    while (cap < self->nchunks + more) cap *= 2;
    cmeta_t *c = realloc(self->chunks, (size_t)cap * sizeof(cmeta_t));
    if (!c) return -1;
    self->chunks = c;
    self->chunks_cap = cap;
    return 0;
}

/* Move the open chunk of slot sl into the completed store. */
static int complete_chunk(HeadObject *self, uint32_t sl) {
    series_t *s = &self->slots[sl];
    if (s->n == 0) return 0;
    if (chunks_reserve(self, 1)) return -1;
    uint32_t len = chunk_len(s);
    uint64_t off;
    if (store_bytes(self, s->cbuf, len, &off)) return -1;
    cmeta_t *c = &self->chunks[self->nchunks];
    c->mint = s->cmint;
    c->maxt = s->t_last;
    c->off = off;
    c->len = len;
    c->slot = sl;
    c->prev = s->last_chunk;
    s->last_chunk = self->nchunks++;
    if (s->cap > 128) {
        /* the next chunk starts small again (most series are compressible) */
        free(s->cbuf);
        self->open_bytes -= s->cap;
        s->cbuf = NULL;
        s->cap = 0;
    } else {
        memset(s->cbuf, 0, (s->nbits + 7) >> 3);
    }
    s->nbits = 0;
    s->n = 0;
    return 0;
}

/* int64 arithmetic that wraps as Go's does (signed overflow is undefined in C) */
INLINE int64_t wadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
INLINE int64_t wsub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

/* Go's int64(f) on amd64: out of range (or NaN) gives math.MinInt64 */
INLINE int64_t go_f2i(double f) {
    if (!(f >= -9223372036854775808.0 && f < 9223372036854775808.0)) return INT64_MIN;
    return (int64_t)f;
}

INLINE int64_t range_for_timestamp(int64_t t, int64_t width) {
    /* (t / width) * width + width with Go's truncating division */
    return wadd((t / width) * width, width);
}

static int64_t compute_chunk_end_time(int64_t start, int64_t cur, int64_t maxt, double ratio) {
    double n = (double)wsub(maxt, start) / ((double)wadd(wsub(cur, start), 1) * ratio);
    if (n <= 1) return maxt;
    return go_f2i((double)start + (double)wsub(maxt, start) / floor(n));
}

/* memSeries.appendPreprocessor + append for an in-order sample. */
static int series_append(HeadObject *self, uint32_t sl, int64_t t, uint64_t vbits) {
    series_t *s = &self->slots[sl];
    int cut = 0;
    if (s->n == 0) {
        cut = 1;
    } else if (chunk_len(s) > XOR_SOFT_LIMIT) {
        cut = 2;
    } else {
        if (s->n == self->samples_per_chunk / 4)
            s->next_at = compute_chunk_end_time(s->cmint, s->t_last, s->next_at, 4.0);
        if (t >= s->next_at || s->n >= self->samples_per_chunk * 2) cut = 2;
    }
    if (cut == 2 && complete_chunk(self, sl)) return -1;
    s = &self->slots[sl];
    if (cut) {
        self->chunks_created++;
        s->cmint = t;
        s->next_at = range_for_timestamp(t, self->chunk_range);
    }
    if (chunk_reserve(self, s, s->n == 0 ? 2 + 10 + 8 + 1 : MAX_SAMPLE_BYTES + 1)) return -1;
    xor_append(s, t, vbits);
    s->t_last = t;
    s->v_last = vbits;
    s->has_data = 1;
    return 0;
}

/* ------------------------------------------------------------ Python glue */

typedef struct {
    Py_buffer b;
    int ok;
} view;

static int get_view(PyObject *o, view *v, int writable, int itemsize, const char *what) {
    v->ok = 0;
    if (PyObject_GetBuffer(o, &v->b, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous%s buffer", what, writable ? " writable" : "");
        return -1;
    }
    v->ok = 1;
    if (itemsize > 1 && v->b.len % itemsize) {
        PyBuffer_Release(&v->b);
        v->ok = 0;
        PyErr_Format(PyExc_ValueError, "%s: length %zd is not a multiple of %d", what, v->b.len, itemsize);
        return -1;
    }
    return 0;
}

static void rel(view *v) {
    if (v->ok) PyBuffer_Release(&v->b);
    v->ok = 0;
}

/* Methods of an object whose __init__ did not run (or failed) refuse to work. */
#define REQUIRE_READY(self)                                                              \
    do {                                                                                 \
        if (!(self)->lock || !(self)->table || !(self)->rtab || !(self)->slots) {        \
            PyErr_SetString(PyExc_RuntimeError, "_head.Head is not initialised");         \
            return NULL;                                                                 \
        }                                                                                \
    } while (0)

#define LOCKED_BEGIN(self) Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock((self)->lock, WAIT_LOCK);
#define LOCKED_END(self) PyThread_release_lock((self)->lock); Py_END_ALLOW_THREADS

static void Head_dealloc(HeadObject *self) {
    if (self->slots)
        for (uint32_t i = 1; i < self->nslots; i++) {
            free(self->slots[i].cbuf);
            free(self->slots[i].ooo_t);
            free(self->slots[i].ooo_v);
        }
    free(self->slots);
    free(self->free_slots);
    free(self->rtab);
    free(self->blobs);
    free(self->table);
    for (uint64_t i = 0; i < self->npages; i++) free(self->pages[i]);
    free(self->pages);
    free(self->chunks);
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Head_init(HeadObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"chunk_range", "samples_per_chunk", "capacity", "seed", "hash_mask", NULL};
    long long chunk_range = 2 * 3600 * 1000;
    int spc = 120;
    Py_ssize_t capacity = 1024;
    unsigned long long seed = 0, mask = ~0ULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|LinKK", kwlist, &chunk_range, &spc, &capacity, &seed, &mask))
        return -1;
    if (chunk_range <= 0 || spc < 1 || spc > 30000 || capacity < 1) {
        PyErr_SetString(PyExc_ValueError, "chunk_range and samples_per_chunk must be positive, capacity >= 1");
        return -1;
    }
    if (self->lock) {
        PyErr_SetString(PyExc_RuntimeError, "Head is already initialised");
        return -1;
    }
    self->lock = PyThread_allocate_lock();
    if (!self->lock) { PyErr_NoMemory(); return -1; }
    self->chunk_range = chunk_range;
    self->samples_per_chunk = spc;
    self->seed = seed;
    self->hash_mask = mask;
    self->next_ref = 1;
    self->nslots = 1;
    uint64_t cap = 16;
    while (cap < (uint64_t)capacity) cap <<= 1;
    self->table = calloc(cap, sizeof(hentry_t));
    self->slots_cap = 16;
    self->slots = calloc(self->slots_cap, sizeof(series_t));
    self->rtab_cap = 16;
    self->rtab = calloc(self->rtab_cap, sizeof(rentry_t));
    if (!self->table || !self->slots || !self->rtab) { PyErr_NoMemory(); return -1; }
    self->table_cap = cap;
    return 0;
}

/* lookup(buf, offsets, refs_out): refs_out[i] = ref of blob buf[offsets[i]:offsets[i+1]] or 0. */
static PyObject *Head_lookup(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    PyObject *bo, *oo, *ro;
    view bv, ov, rv;
    bv.ok = ov.ok = rv.ok = 0;
    if (!PyArg_ParseTuple(args, "OOO", &bo, &oo, &ro)) return NULL;
    PyObject *res = NULL;
    if (get_view(bo, &bv, 0, 1, "buf") || get_view(oo, &ov, 0, 8, "offsets") || get_view(ro, &rv, 1, 8, "refs"))
        goto done;
    {
        int64_t k = ov.b.len / 8 - 1;
        if (k < 0 || rv.b.len / 8 != k) {
            PyErr_SetString(PyExc_ValueError, "offsets must have one more entry than refs");
            goto done;
        }
        const uint8_t *buf = bv.b.buf, *op = ov.b.buf;
        uint8_t *rp = rv.b.buf;
        int64_t bad = -1;
        LOCKED_BEGIN(self)
        for (int64_t i = 0; i < k; i++) {
            int64_t a = (int64_t)ld64(op + 8 * i), b = (int64_t)ld64(op + 8 * i + 8);
            if (a < 0 || b < a || (uint64_t)b > (uint64_t)bv.b.len) { bad = i; break; }
            size_t n = (size_t)(b - a);
            int sl = table_find(self, blob_hash(self, buf + a, n), buf + a, n);
            st64(rp + 8 * i, sl ? (uint64_t)self->slots[sl].ref : 0);
        }
        LOCKED_END(self)
        if (bad >= 0) {
            PyErr_Format(PyExc_ValueError, "offsets[%lld:%lld] is not a range inside the %zd-byte buffer",
                         (long long)bad, (long long)bad + 2, bv.b.len);
            goto done;
        }
        res = Py_NewRef(Py_None);
    }
done:
    rel(&bv); rel(&ov); rel(&rv);
    return res;
}

static int grow_u32(uint32_t **p, uint32_t *cap, uint32_t need) {
    if (need <= *cap) return 0;
    uint64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    if (c > 0xFFFFFFFFULL) return -1;
    uint32_t *q = realloc(*p, c * sizeof(uint32_t));
    if (!q) return -1;
    *p = q;
    *cap = (uint32_t)c;
    return 0;
}

/* Create the series for one blob (not present). Returns the slot, 0 on allocation failure
 * (nothing changed then). */
static uint32_t create_one(HeadObject *self, const uint8_t *p, size_t n, uint64_t h, int64_t ref) {
    if (!self->nfree) {
        if (self->nslots == 0xFFFFFFFFu) return 0;
        if (self->nslots == self->slots_cap) {
            uint64_t c = (uint64_t)self->slots_cap * 2;
            if (c > 0xFFFFFFFFULL) c = 0xFFFFFFFFULL;
            series_t *q = realloc(self->slots, c * sizeof(series_t));
            if (!q) return 0;
            self->slots = q;
            self->slots_cap = (uint32_t)c;
        }
    }
    if (2 * (self->live + 1) > self->rtab_cap) {
        uint64_t c = rtab_cap_for(self->live + 1);
        rentry_t *q = rtab_build(self, c);
        if (!q) return 0;
        free(self->rtab);
        self->rtab = q;
        self->rtab_cap = c;
    }
    if (self->blobs_len + n > self->blobs_cap) {
        uint64_t c = self->blobs_cap ? self->blobs_cap : 4096;
        while (c < self->blobs_len + n) c *= 2;
        uint8_t *q = realloc(self->blobs, c);
        if (!q) return 0;
        self->blobs = q;
        self->blobs_cap = c;
    }
    if ((double)(self->live + 1) > 0.7 * (double)self->table_cap && table_rebuild(self, self->table_cap * 2))
        return 0;
    uint32_t sl = self->nfree ? self->free_slots[--self->nfree] : self->nslots++;
    series_t *s = &self->slots[sl];
    memset(s, 0, sizeof(*s));
    s->ref = ref > 0 ? ref : self->next_ref;
    if (s->ref >= self->next_ref) self->next_ref = s->ref + 1;
    s->hash = h;
    s->blob_off = self->blobs_len;
    s->blob_len = (uint32_t)n;
    s->last_chunk = NO_CHUNK;
    memcpy(self->blobs + self->blobs_len, p, n);
    self->blobs_len += n;
    rtab_put(self->rtab, self->rtab_cap, s->ref, sl);
    table_put(self->table, self->table_cap, h, sl);
    self->live++;
    self->series_created++;
    return sl;
}

/* create(buf, offsets, refs, new, given) -> (first bad blob index or -1, its problem or None):
 * the refs of the blobs, creating the missing series. new[i]: 0 the series existed (refs[i]
 * is its ref), 1 created, 2 (given refs only) the wanted ref belongs to another series or is
 * not positive, 3 the blob (or its offsets) is invalid (refs[i] = 0). With given = 1, refs[i]
 * is the ref a new series gets (WAL replay); else new series get fresh refs. */
static PyObject *Head_create(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    PyObject *bo, *oo, *ro, *no;
    int given = 0;
    view bv, ov, rv, nv;
    bv.ok = ov.ok = rv.ok = nv.ok = 0;
    if (!PyArg_ParseTuple(args, "OOOO|p", &bo, &oo, &ro, &no, &given)) return NULL;
    PyObject *res = NULL;
    if (get_view(bo, &bv, 0, 1, "buf") || get_view(oo, &ov, 0, 8, "offsets") || get_view(ro, &rv, 1, 8, "refs") ||
        get_view(no, &nv, 1, 1, "new"))
        goto done;
    {
        int64_t k = ov.b.len / 8 - 1;
        if (k < 0 || rv.b.len / 8 != k || nv.b.len != k) {
            PyErr_SetString(PyExc_ValueError, "offsets must have one more entry than refs and new");
            goto done;
        }
        const uint8_t *buf = bv.b.buf, *op = ov.b.buf;
        uint8_t *rp = rv.b.buf, *np_ = nv.b.buf;
        int64_t bad = -1, badat = 0;
        const char *badwhy = NULL;
        int nomem = 0;
        LOCKED_BEGIN(self)
        for (int64_t i = 0; i < k; i++) {
            int64_t a = (int64_t)ld64(op + 8 * i), b = (int64_t)ld64(op + 8 * i + 8);
            const char *why = NULL;
            int64_t e = 0;
            if (a < 0 || b < a || (uint64_t)b > (uint64_t)bv.b.len) {
                why = "offsets outside the buffer";
            } else if ((uint64_t)(b - a) > 0xFFFFFFFFu) {
                why = "label blob larger than 4 GiB";
            }
            if (why) {
            invalid:
                np_[i] = 3;
                st64(rp + 8 * i, 0);
                if (bad < 0) { bad = i; badat = e; badwhy = why; }
                continue;
            }
            size_t n = (size_t)(b - a);
            const uint8_t *p = buf + a;
            uint64_t h = blob_hash(self, p, n);
            int sl = table_find(self, h, p, n);
            if (sl) {
                st64(rp + 8 * i, (uint64_t)self->slots[sl].ref);
                np_[i] = 0;
                continue;
            }
            e = blob_check(p, n, &why);
            if (e) { e--; goto invalid; }
            int64_t want = 0;
            if (given) {
                want = (int64_t)ld64(rp + 8 * i);
                if (want <= 0 || rtab_find(self, want)) { np_[i] = 2; continue; }
            }
            uint32_t ns = create_one(self, p, n, h, want);
            if (!ns) {
                nomem = 1;
                for (int64_t j = i; j < k; j++) { np_[j] = 3; st64(rp + 8 * j, 0); }
                break;
            }
            st64(rp + 8 * i, (uint64_t)self->slots[ns].ref);
            np_[i] = 1;
        }
        LOCKED_END(self)
        if (nomem) {
            /* what was created stays consistent: report it, the caller indexes it */
            res = Py_BuildValue("(Ls)", (long long)-2, "out of memory");
        } else if (bad >= 0) {
            res = Py_BuildValue("(LN)", (long long)bad,
                                PyUnicode_FromFormat("label blob %lld: %s at byte %lld", (long long)bad, badwhy,
                                                     (long long)badat));
        } else {
            res = Py_BuildValue("(LO)", (long long)-1, Py_None);
        }
    }
done:
    rel(&bv); rel(&ov); rel(&rv); rel(&nv);
    return res;
}

INLINE uint32_t slot_of(HeadObject *self, int64_t ref) {
    return rtab_find(self, ref);
}

/* Prometheus' memSeries.appendable, given the series' state. */
INLINE int appendable(int has, int64_t maxt, uint64_t vlast, int64_t t, uint64_t vbits, int64_t minvalid,
                      int64_t ooo_window, int64_t head_maxt) {
    if (t >= minvalid) {
        if (!has || t > maxt) return ST_OK;
        /* after a histogram at the same time: duplicate (NewDuplicateHistogramToFloatErr) */
        if (t == maxt) return has != 2 && vlast == vbits ? ST_DUP_OK : ST_DUPLICATE;
    }
    if (ooo_window > 0) {
        /* head_maxt - ooo_window without overflow */
        if (head_maxt < INT64_MIN + ooo_window || t >= head_maxt - ooo_window) return ST_OOO_OK;
        return ST_TOO_OLD;
    }
    if (t < minvalid) return ST_OUT_OF_BOUNDS;
    return ST_OUT_OF_ORDER;
}

/* Insert into the series' out-of-order samples (OOOChunk.Insert): a time already there is not
 * inserted. Returns 1 inserted, 0 time present (*dupv = its value), -1 out of memory. */
static int ooo_insert(HeadObject *self, series_t *s, int64_t t, uint64_t vbits, uint64_t *dupv) {
    uint32_t lo = 0, hi = s->ooo_n;
    if (hi && s->ooo_t[hi - 1] < t) {
        lo = hi;  /* appending at the end is the common case */
    } else {
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (s->ooo_t[mid] < t) lo = mid + 1; else hi = mid;
        }
        if (lo < s->ooo_n && s->ooo_t[lo] == t) { *dupv = s->ooo_v[lo]; return 0; }
    }
    if (s->ooo_n == s->ooo_cap) {
        uint32_t cap = s->ooo_cap ? s->ooo_cap * 2 : 8;
        if (cap < s->ooo_cap) return -1;
        int64_t *nt = realloc(s->ooo_t, (size_t)cap * 8);
        if (!nt) return -1;
        s->ooo_t = nt;
        uint64_t *nv = realloc(s->ooo_v, (size_t)cap * 8);
        if (!nv) return -1;
        s->ooo_v = nv;
        s->ooo_cap = cap;
    }
    memmove(s->ooo_t + lo + 1, s->ooo_t + lo, (size_t)(s->ooo_n - lo) * 8);
    memmove(s->ooo_v + lo + 1, s->ooo_v + lo, (size_t)(s->ooo_n - lo) * 8);
    s->ooo_t[lo] = t;
    s->ooo_v[lo] = vbits;
    s->ooo_n++;
    self->ooo_samples++;
    return 1;
}

static void ooo_free(HeadObject *self, series_t *s) {
    self->ooo_samples -= s->ooo_n;
    free(s->ooo_t);
    free(s->ooo_v);
    s->ooo_t = NULL;
    s->ooo_v = NULL;
    s->ooo_n = s->ooo_cap = 0;
}

/* append(refs, ts, vs, status_out, min_valid_time, ooo_window=0, head_maxt=0)
 *   -> (appended in order, mint, maxt, appended out of order, ooo mint, ooo maxt) */
static PyObject *Head_append(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    PyObject *ro, *to, *vo, *so;
    long long minvalid, ooo_window = 0, head_maxt = 0;
    view rv, tv, vv, sv;
    rv.ok = tv.ok = vv.ok = sv.ok = 0;
    if (!PyArg_ParseTuple(args, "OOOOL|LL", &ro, &to, &vo, &so, &minvalid, &ooo_window, &head_maxt)) return NULL;
    PyObject *res = NULL;
    if (get_view(ro, &rv, 0, 8, "refs") || get_view(to, &tv, 0, 8, "ts") || get_view(vo, &vv, 0, 8, "vs") ||
        get_view(so, &sv, 1, 1, "status"))
        goto done;
    {
        int64_t n = rv.b.len / 8;
        if (tv.b.len / 8 != n || vv.b.len / 8 != n || sv.b.len != n) {
            PyErr_SetString(PyExc_ValueError, "refs, ts, vs and status must have the same length");
            goto done;
        }
        const uint8_t *rp = rv.b.buf, *tp = tv.b.buf, *vp = vv.b.buf;
        uint8_t *sp = sv.b.buf;
        int64_t appended = 0, mint = INT64_MAX, maxt = INT64_MIN;
        int64_t oappended = 0, omint = INT64_MAX, omaxt = INT64_MIN;
        int nomem = 0;
        LOCKED_BEGIN(self)
        uint64_t epoch = ++self->epoch;
        /* Software pipeline for batches in random series order (each sample is three dependent
         * cache misses: ref table, slot, chunk bytes): the ref-table bucket is fetched PF_A
         * samples ahead, the slot looked up and fetched PF_B ahead (kept in a ring; the ref ->
         * slot mapping cannot change during the call), the chunk's tail PF_C ahead. */
        enum { PF_A = 16, PF_B = 8, PF_C = 3, RING = 16 };
        uint32_t ring[RING];
        const uint64_t rmask = self->rtab_cap - 1;
        for (int64_t j = 0; j < PF_B && j < n; j++) {
            ring[j % RING] = slot_of(self, (int64_t)ld64(rp + 8 * j));
        }
        for (int64_t i = 0; i < n; i++) {
            if (i + PF_A < n) {
                int64_t ra = (int64_t)ld64(rp + 8 * (i + PF_A));
                __builtin_prefetch(&self->rtab[fmix((uint64_t)ra) & rmask]);
            }
            if (i + PF_B < n) {
                uint32_t sb = slot_of(self, (int64_t)ld64(rp + 8 * (i + PF_B)));
                ring[(i + PF_B) % RING] = sb;
                if (sb) __builtin_prefetch(&self->slots[sb]);
            }
            if (i + PF_C < n) {
                uint32_t sc_ = ring[(i + PF_C) % RING];
                if (sc_ && self->slots[sc_].cbuf) __builtin_prefetch(self->slots[sc_].cbuf + (self->slots[sc_].nbits >> 3), 1);
            }
            int64_t ref = (int64_t)ld64(rp + 8 * i), t = (int64_t)ld64(tp + 8 * i);
            uint64_t vbits = ld64(vp + 8 * i);
            uint32_t sl = ring[i % RING];
            (void)ref;
            if (!sl) { sp[i] = ST_BAD_REF; continue; }
            if (ooo_window <= 0 && t < minvalid) { sp[i] = ST_OUT_OF_BOUNDS; continue; }
            series_t *s = &self->slots[sl];
            if (s->epoch != epoch) {
                s->epoch = epoch;
                s->has0 = s->has_data;
                s->maxt0 = s->t_last;
                s->v0 = s->v_last;
            }
            int a = appendable(s->has0, s->maxt0, s->v0, t, vbits, minvalid, ooo_window, head_maxt);
            if (a != ST_OK && a != ST_DUP_OK && a != ST_OOO_OK) { sp[i] = (uint8_t)a; continue; }
            int c = appendable(s->has_data, s->t_last, s->v_last, t, vbits, minvalid, ooo_window, head_maxt);
            if (c == ST_OOO_OK) {
                uint64_t dv = 0;
                int r = ooo_insert(self, s, t, vbits, &dv);
                if (r < 0) { nomem = 1; for (int64_t j = i; j < n; j++) sp[j] = ST_BAD_REF; break; }
                if (r == 0) {
                    /* a time already held out of order: dropped silently, as Prometheus */
                    sp[i] = (uint8_t)((dv == vbits ? ST_DUP_OK : ST_DUPLICATE) | ST_AT_COMMIT);
                    continue;
                }
                sp[i] = ST_OOO_OK;
                oappended++;
                if (t < omint) omint = t;
                if (t > omaxt) omaxt = t;
                continue;
            }
            if (c != ST_OK) {
                sp[i] = (uint8_t)(c == ST_DUP_OK && a == ST_DUP_OK ? ST_DUP_OK : (c | ST_AT_COMMIT));
                continue;
            }
            if (series_append(self, sl, t, vbits)) {
                nomem = 1;
                for (int64_t j = i; j < n; j++) sp[j] = ST_BAD_REF;
                break;
            }
            sp[i] = ST_OK;
            appended++;
            if (t < mint) mint = t;
            if (t > maxt) maxt = t;
        }
        LOCKED_END(self)
        if (nomem) { PyErr_NoMemory(); goto done; }
        res = Py_BuildValue("(LLLLLL)", (long long)appended, (long long)mint, (long long)maxt, (long long)oappended,
                            (long long)omint, (long long)omaxt);
    }
done:
    rel(&rv); rel(&tv); rel(&vv); rel(&sv);
    return res;
}

/* Output built without the GIL: malloc'd, handed to Python as bytes afterwards. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} obuf;

static int ob_reserve(obuf *o, size_t more) {
    if (o->len + more <= o->cap) return 0;
    size_t c = o->cap ? o->cap : 256;
    while (c < o->len + more) c *= 2;
    uint8_t *q = realloc(o->p, c);
    if (!q) return -1;
    o->p = q;
    o->cap = c;
    return 0;
}

static int ob_put(obuf *o, const void *p, size_t n) {
    if (ob_reserve(o, n)) return -1;
    memcpy(o->p + o->len, p, n);
    o->len += n;
    return 0;
}

INLINE int ob_i64(obuf *o, int64_t x) { return ob_put(o, &x, 8); }

static PyObject *ob_bytes(obuf *o) {
    PyObject *b = PyBytes_FromStringAndSize(o->p ? (const char *)o->p : "", (Py_ssize_t)o->len);
    free(o->p);
    o->p = NULL;
    return b;
}

/* select(refs, mint, maxt) -> (counts, cmint, cmaxt, offsets, data) as bytes (int64 columns):
 * for each ref its chunks overlapping [mint, maxt] oldest first (the open one copied last). */
static PyObject *Head_select(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    PyObject *ro;
    long long mint, maxt;
    view rv;
    rv.ok = 0;
    if (!PyArg_ParseTuple(args, "OLL", &ro, &mint, &maxt)) return NULL;
    if (get_view(ro, &rv, 0, 8, "refs")) return NULL;
    obuf cnt = {0}, mi = {0}, ma = {0}, of = {0}, da = {0}, tmp = {0};
    int nomem = 0;
    int64_t n = rv.b.len / 8;
    const uint8_t *rp = rv.b.buf;
    LOCKED_BEGIN(self)
    if (ob_i64(&of, 0)) nomem = 1;
    for (int64_t i = 0; i < n && !nomem; i++) {
        uint32_t sl = slot_of(self, (int64_t)ld64(rp + 8 * i));
        int64_t k = 0;
        if (sl) {
            series_t *s = &self->slots[sl];
            /* completed chunks newest first into tmp, then emitted oldest first */
            tmp.len = 0;
            for (int64_t c = s->last_chunk; c != NO_CHUNK; c = self->chunks[c].prev) {
                cmeta_t *m = &self->chunks[c];
                if (m->maxt < mint) break;
                if (m->mint <= maxt && ob_i64(&tmp, c)) { nomem = 1; break; }
            }
            for (size_t j = tmp.len / 8; j-- > 0 && !nomem;) {
                cmeta_t *m = &self->chunks[(int64_t)ld64(tmp.p + 8 * j)];
                if (ob_i64(&mi, m->mint) || ob_i64(&ma, m->maxt) || ob_put(&da, chunk_data(self, m), m->len) ||
                    ob_i64(&of, (int64_t)da.len))
                    nomem = 1;
                k++;
            }
            if (!nomem && s->n && s->t_last >= mint && s->cmint <= maxt) {
                if (ob_i64(&mi, s->cmint) || ob_i64(&ma, s->t_last) || ob_put(&da, s->cbuf, chunk_len(s)) ||
                    ob_i64(&of, (int64_t)da.len))
                    nomem = 1;
                k++;
            }
        }
        if (!nomem && ob_i64(&cnt, k)) nomem = 1;
    }
    LOCKED_END(self)
    rel(&rv);
    free(tmp.p);
    PyObject *res = NULL;
    if (!nomem) {
        PyObject *a = ob_bytes(&cnt), *b = ob_bytes(&mi), *c = ob_bytes(&ma), *d = ob_bytes(&of), *e = ob_bytes(&da);
        if (a && b && c && d && e) res = PyTuple_Pack(5, a, b, c, d, e);
        Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(c); Py_XDECREF(d); Py_XDECREF(e);
        return res;
    }
    free(cnt.p); free(mi.p); free(ma.p); free(of.p); free(da.p);
    return PyErr_NoMemory();
}

/* blobs(refs) -> (buf, offsets int64 bytes); unknown refs give empty blobs. */
static PyObject *Head_blobs(HeadObject *self, PyObject *arg) {
    REQUIRE_READY(self);
    view rv;
    if (get_view(arg, &rv, 0, 8, "refs")) return NULL;
    obuf da = {0}, of = {0};
    int nomem = 0;
    int64_t n = rv.b.len / 8;
    const uint8_t *rp = rv.b.buf;
    LOCKED_BEGIN(self)
    nomem = ob_i64(&of, 0);
    for (int64_t i = 0; i < n && !nomem; i++) {
        uint32_t sl = slot_of(self, (int64_t)ld64(rp + 8 * i));
        if (sl) {
            series_t *s = &self->slots[sl];
            if (ob_put(&da, self->blobs + s->blob_off, s->blob_len)) { nomem = 1; break; }
        }
        nomem = ob_i64(&of, (int64_t)da.len);
    }
    LOCKED_END(self)
    rel(&rv);
    if (nomem) { free(da.p); free(of.p); return PyErr_NoMemory(); }
    PyObject *a = ob_bytes(&da), *b = ob_bytes(&of), *res = NULL;
    if (a && b) res = PyTuple_Pack(2, a, b);
    Py_XDECREF(a); Py_XDECREF(b);
    return res;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    return (x > y) - (x < y);
}

/* refs() -> int64 bytes of the live refs, ascending. */
static PyObject *Head_refs(HeadObject *self, PyObject *unused) {
    REQUIRE_READY(self);
    obuf o = {0};
    int nomem = 0;
    LOCKED_BEGIN(self)
    if (ob_reserve(&o, self->live * 8 + 8)) nomem = 1;
    for (uint32_t sl = 1; sl < self->nslots && !nomem; sl++)
        if (self->slots[sl].ref) ob_i64(&o, self->slots[sl].ref);
    if (!nomem) qsort(o.p, o.len / 8, 8, cmp_i64);
    LOCKED_END(self)
    if (nomem) { free(o.p); return PyErr_NoMemory(); }
    return ob_bytes(&o);
}

/* series_range(refs) -> (mint bytes, maxt bytes): each series' first and last sample time
 * (INT64_MAX / INT64_MIN for unknown refs or series without samples). */
static PyObject *Head_series_range(HeadObject *self, PyObject *arg) {
    REQUIRE_READY(self);
    view rv;
    if (get_view(arg, &rv, 0, 8, "refs")) return NULL;
    int64_t n = rv.b.len / 8;
    PyObject *a = PyBytes_FromStringAndSize(NULL, n * 8), *b = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!a || !b) { Py_XDECREF(a); Py_XDECREF(b); rel(&rv); return NULL; }
    uint8_t *ap = (uint8_t *)PyBytes_AS_STRING(a), *bp = (uint8_t *)PyBytes_AS_STRING(b);
    const uint8_t *rp = rv.b.buf;
    LOCKED_BEGIN(self)
    for (int64_t i = 0; i < n; i++) {
        uint32_t sl = slot_of(self, (int64_t)ld64(rp + 8 * i));
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        if (sl && self->slots[sl].has_data) {
            series_t *s = &self->slots[sl];
            hi = s->t_last;
            lo = s->n ? s->cmint : hi;
            for (int64_t c = s->last_chunk; c != NO_CHUNK; c = self->chunks[c].prev) lo = self->chunks[c].mint;
        }
        st64(ap + 8 * i, (uint64_t)lo);
        st64(bp + 8 * i, (uint64_t)hi);
    }
    LOCKED_END(self)
    rel(&rv);
    PyObject *res = PyTuple_Pack(2, a, b);
    Py_DECREF(a); Py_DECREF(b);
    return res;
}

/* truncate(mint) -> (removed refs bytes, removed blobs buf, offsets bytes, chunks removed,
 * actual min time): drops the chunks entirely before mint (memSeries.truncateChunksBefore) and
 * the series left without data (stripeSeries.gc), then compacts the chunk store, the blob arena
 * and the hash table. Everything new is allocated before anything changes: on MemoryError the
 * head is as it was. */
static PyObject *Head_truncate(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    long long mint;
    if (!PyArg_ParseTuple(args, "L", &mint)) return NULL;
    obuf rr = {0}, rb = {0}, ro = {0};
    int nomem = 0;
    int64_t removed_chunks = 0, actual = INT64_MAX;
    LOCKED_BEGIN(self)
    uint8_t *gone = calloc(self->nslots, 1);
    int64_t *map = malloc(((size_t)self->nchunks + 1) * sizeof(int64_t));
    uint8_t **npages = malloc((self->npages + 1) * sizeof(uint8_t *));
    cmeta_t *nchunks = NULL, *oldchunks = NULL;
    uint8_t *nblobs = NULL;
    hentry_t *ntable = NULL;
    rentry_t *nrtab = NULL;
    uint64_t nnpages = 0, fill = 0, nrem = 0, rbytes = 0, ncap = 16, nrcap = 16;
    int64_t nk = 0;
    if (!gone || !map || !npages) nomem = 1;
    if (!nomem) {
        /* 1. decide: a series goes when it has no sample or its open chunk ends before mint
         *    (then every older chunk does too); a chunk goes with its series or when it ends
         *    before mint */
        for (uint32_t sl = 1; sl < self->nslots; sl++) {
            series_t *s = &self->slots[sl];
            if (s->ref && (!s->has_data || s->t_last < mint)) {
                if (s->ooo_n || s->hold) {
                    gone[sl] = 2;  /* in-order data goes, the out-of-order samples keep the series */
                    continue;
                }
                gone[sl] = 1;
                nrem++;
                rbytes += s->blob_len;
            }
        }
        for (int64_t c = 0; c < self->nchunks; c++) {
            cmeta_t *m = &self->chunks[c];
            if (gone[m->slot] == 1 || m->maxt < mint) { map[c] = NO_CHUNK; removed_chunks++; }
            else map[c] = nk++;
        }
        /* 2. allocate and fill the new structures; the old ones stay valid */
        while ((double)(self->live - nrem) > 0.35 * (double)ncap) ncap <<= 1;
        ntable = calloc(ncap, sizeof(hentry_t));
        nrcap = rtab_cap_for(self->live - nrem);
        nrtab = calloc(nrcap, sizeof(rentry_t));
        nchunks = malloc(((size_t)nk + 1) * sizeof(cmeta_t));
        nblobs = malloc(self->blobs_len - rbytes + 1);
        if (!ntable || !nrtab || !nchunks || !nblobs || ob_reserve(&rr, nrem * 8) || ob_reserve(&rb, rbytes) ||
            ob_reserve(&ro, nrem * 8 + 8) || grow_u32(&self->free_slots, &self->free_cap, self->nfree + (uint32_t)nrem))
            nomem = 1;
        for (int64_t c = 0; c < self->nchunks && !nomem; c++) {
            if (map[c] == NO_CHUNK) continue;
            cmeta_t m = self->chunks[c];
            if (nnpages == 0 || fill + m.len > PAGE_SIZE) {
                /* next-fit packing of a subsequence never needs more pages than the original */
                uint8_t *pg = nnpages <= self->npages ? malloc(PAGE_SIZE) : NULL;
                if (!pg) { nomem = 1; break; }
                npages[nnpages++] = pg;
                fill = 0;
            }
            memcpy(npages[nnpages - 1] + fill, chunk_data(self, &m), m.len);
            m.off = ((nnpages - 1) << PAGE_BITS) | fill;
            fill += m.len;
            m.prev = m.prev == NO_CHUNK ? NO_CHUNK : map[m.prev];
            nchunks[map[c]] = m;
        }
    }
    if (!nomem) {
        /* 3. commit (cannot fail) */
        uint64_t blen = 0;
        ob_i64(&ro, 0);
        for (uint32_t sl = 1; sl < self->nslots; sl++) {
            series_t *s = &self->slots[sl];
            if (!s->ref) continue;
            if (gone[sl] == 1) {
                int s_had_open = s->n > 0;
                ob_i64(&rr, s->ref);
                ob_put(&rb, self->blobs + s->blob_off, s->blob_len);
                ob_i64(&ro, (int64_t)rb.len);
                free(s->cbuf);
                self->open_bytes -= s->cap;
                ooo_free(self, s);
                memset(s, 0, sizeof(*s));
                self->free_slots[self->nfree++] = sl;
                self->live--;
                self->series_removed++;
                if (s_had_open) self->chunks_removed++;
                continue;
            }
            memcpy(nblobs + blen, self->blobs + s->blob_off, s->blob_len);
            s->blob_off = blen;
            blen += s->blob_len;
            if (s->last_chunk != NO_CHUNK) s->last_chunk = map[s->last_chunk];
            table_put(ntable, ncap, s->hash, sl);
            rtab_put(nrtab, nrcap, s->ref, sl);
            if (gone[sl] == 2) {
                if (s->n) self->chunks_removed++;
                free(s->cbuf);
                self->open_bytes -= s->cap;
                s->cbuf = NULL;
                s->cap = s->nbits = 0;
                s->n = 0;
                s->has_data = 0;
                s->last_chunk = NO_CHUNK;
                continue;
            }
            int64_t lo = s->n ? s->cmint : INT64_MAX;  /* a histogram-only series has no float chunk */
            for (int64_t c = s->last_chunk; c != NO_CHUNK; c = nchunks[c].prev) lo = nchunks[c].mint;
            if (lo < actual) actual = lo;
        }
        free(self->blobs);
        self->blobs = nblobs;
        self->blobs_len = blen;
        self->blobs_cap = blen + 1; /* what nblobs holds */
        nblobs = NULL;
        free(self->table);
        self->table = ntable;
        self->table_cap = ncap;
        ntable = NULL;
        free(self->rtab);
        self->rtab = nrtab;
        self->rtab_cap = nrcap;
        nrtab = NULL;
        for (uint64_t i = 0; i < self->npages; i++) free(self->pages[i]);
        free(self->pages);
        self->pages = npages;
        self->npages = nnpages;
        self->pages_cap = self->npages + 1;
        self->page_fill = fill;
        npages = NULL;
        oldchunks = self->chunks;
        self->chunks = nchunks;
        self->chunks_cap = nk + 1;
        self->nchunks = nk;
        self->chunks_removed += (uint64_t)removed_chunks;
        nchunks = NULL;
        free(oldchunks);
        /* trailing free slots go, so the slot table stays short */
        while (self->nslots > 1 && !self->slots[self->nslots - 1].ref) self->nslots--;
        uint32_t k = 0;
        for (uint32_t i = 0; i < self->nfree; i++)
            if (self->free_slots[i] < self->nslots) self->free_slots[k++] = self->free_slots[i];
        self->nfree = k;
    } else if (npages) {
        for (uint64_t i = 0; i < nnpages; i++) free(npages[i]);
    }
    free(npages);
    free(nchunks);
    free(nblobs);
    free(ntable);
    free(nrtab);
    free(map);
    free(gone);
    LOCKED_END(self)
    if (nomem) {
        free(rr.p); free(rb.p); free(ro.p);
        return PyErr_NoMemory();
    }
    PyObject *a = ob_bytes(&rr), *b = ob_bytes(&rb), *c = ob_bytes(&ro);
    PyObject *res = NULL;
    if (a && b && c)
        res = Py_BuildValue("(OOOLL)", a, b, c, (long long)removed_chunks, (long long)actual);
    Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(c);
    return res;
}

/* hist_mark(refs, ts) -> refs not found: native histograms at ts were appended to these series
 * (by the _histchunk kernel). As one Prometheus memSeries holds both kinds in one chunk list, the
 * open float chunk ends there (the next float sample cuts a new one: an encoding change), the
 * series' last time moves to ts (a float at or before it is out of order or a duplicate) and the
 * series is kept by truncation while that time is in range. */
static PyObject *Head_hist_mark(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    PyObject *ro, *to;
    view rv, tv;
    rv.ok = tv.ok = 0;
    if (!PyArg_ParseTuple(args, "OO", &ro, &to)) return NULL;
    if (get_view(ro, &rv, 0, 8, "refs") || get_view(to, &tv, 0, 8, "ts")) { rel(&rv); rel(&tv); return NULL; }
    int64_t n = rv.b.len / 8, missing = 0;
    int nomem = 0;
    if (tv.b.len / 8 != n) {
        rel(&rv); rel(&tv);
        PyErr_SetString(PyExc_ValueError, "refs and ts must have the same length");
        return NULL;
    }
    const uint8_t *rp = rv.b.buf, *tp = tv.b.buf;
    LOCKED_BEGIN(self)
    for (int64_t i = 0; i < n; i++) {
        uint32_t sl = slot_of(self, (int64_t)ld64(rp + 8 * i));
        if (!sl) { missing++; continue; }
        int64_t t = (int64_t)ld64(tp + 8 * i);
        if (self->slots[sl].has_data && self->slots[sl].t_last >= t) continue;
        if (complete_chunk(self, sl)) { nomem = 1; break; }
        series_t *s = &self->slots[sl];
        s->t_last = t;
        s->has_data = 2;
    }
    LOCKED_END(self)
    rel(&rv); rel(&tv);
    if (nomem) return PyErr_NoMemory();
    return PyLong_FromLongLong((long long)missing);
}

/* hist_hold(refs, on): the series hold out-of-order native histograms (kept by _histchunk), so
 * truncation keeps them as it keeps series with out-of-order floats; on=0 releases them */
static PyObject *Head_hist_hold(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    PyObject *ro;
    int on;
    view rv;
    rv.ok = 0;
    if (!PyArg_ParseTuple(args, "Op", &ro, &on)) return NULL;
    if (get_view(ro, &rv, 0, 8, "refs")) { rel(&rv); return NULL; }
    int64_t n = rv.b.len / 8;
    const uint8_t *rp = rv.b.buf;
    LOCKED_BEGIN(self)
    for (int64_t i = 0; i < n; i++) {
        uint32_t sl = slot_of(self, (int64_t)ld64(rp + 8 * i));
        if (sl) self->slots[sl].hold = (uint8_t)on;
    }
    LOCKED_END(self)
    rel(&rv);
    Py_RETURN_NONE;
}

/* alive(refs) -> bytes: 1 where the ref is a live series, else 0 */
static PyObject *Head_alive(HeadObject *self, PyObject *arg) {
    REQUIRE_READY(self);
    view rv;
    if (get_view(arg, &rv, 0, 8, "refs")) return NULL;
    int64_t n = rv.b.len / 8;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) { rel(&rv); return NULL; }
    uint8_t *op = (uint8_t *)PyBytes_AS_STRING(out);
    const uint8_t *rp = rv.b.buf;
    LOCKED_BEGIN(self)
    for (int64_t i = 0; i < n; i++) op[i] = slot_of(self, (int64_t)ld64(rp + 8 * i)) != 0;
    LOCKED_END(self)
    rel(&rv);
    return out;
}

/* ooo_select(refs, mint, maxt) -> (counts, t, v) as int64 bytes: each series' out-of-order
 * samples in [mint, maxt], in time order (v as float64 bit patterns). */
static PyObject *Head_ooo_select(HeadObject *self, PyObject *args) {
    REQUIRE_READY(self);
    PyObject *ro;
    long long mint, maxt;
    view rv;
    rv.ok = 0;
    if (!PyArg_ParseTuple(args, "OLL", &ro, &mint, &maxt)) return NULL;
    if (get_view(ro, &rv, 0, 8, "refs")) return NULL;
    obuf cnt = {0}, to = {0}, vo = {0};
    int nomem = 0;
    int64_t n = rv.b.len / 8;
    const uint8_t *rp = rv.b.buf;
    LOCKED_BEGIN(self)
    for (int64_t i = 0; i < n && !nomem; i++) {
        uint32_t sl = slot_of(self, (int64_t)ld64(rp + 8 * i));
        int64_t k = 0;
        if (sl) {
            series_t *s = &self->slots[sl];
            for (uint32_t j = 0; j < s->ooo_n; j++) {
                if (s->ooo_t[j] < mint) continue;
                if (s->ooo_t[j] > maxt) break;
                if (ob_i64(&to, s->ooo_t[j]) || ob_i64(&vo, (int64_t)s->ooo_v[j])) { nomem = 1; break; }
                k++;
            }
        }
        if (!nomem && ob_i64(&cnt, k)) nomem = 1;
    }
    LOCKED_END(self)
    rel(&rv);
    if (nomem) { free(cnt.p); free(to.p); free(vo.p); return PyErr_NoMemory(); }
    PyObject *a = ob_bytes(&cnt), *b = ob_bytes(&to), *c = ob_bytes(&vo), *res = NULL;
    if (a && b && c) res = PyTuple_Pack(3, a, b, c);
    Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(c);
    return res;
}

/* ooo_clear() -> samples dropped: every series' out-of-order samples (after they went into
 * blocks; Head.truncateOOO). Series left empty go at the next truncate. */
static PyObject *Head_ooo_clear(HeadObject *self, PyObject *unused) {
    REQUIRE_READY(self);
    uint64_t before;
    LOCKED_BEGIN(self)
    before = self->ooo_samples;
    for (uint32_t sl = 1; sl < self->nslots; sl++)
        if (self->slots[sl].ref && self->slots[sl].ooo_cap) ooo_free(self, &self->slots[sl]);
    LOCKED_END(self)
    return PyLong_FromUnsignedLongLong(before);
}

/* stats() -> dict of counts and bytes held */
static PyObject *Head_stats(HeadObject *self, PyObject *unused) {
    REQUIRE_READY(self);
    uint64_t live, nchunks, slots, refs, table, blobs, pages, cmeta, open, chunk_bytes = 0, nopen = 0;
    uint64_t sc, sr, cc, cr, oo;
    LOCKED_BEGIN(self)
    live = self->live;
    nchunks = (uint64_t)self->nchunks;
    slots = (uint64_t)self->slots_cap * sizeof(series_t);
    refs = self->rtab_cap * sizeof(rentry_t) + (uint64_t)self->free_cap * 4;
    table = self->table_cap * sizeof(hentry_t);
    blobs = self->blobs_cap;
    pages = self->npages * PAGE_SIZE + self->pages_cap * sizeof(void *);
    cmeta = (uint64_t)self->chunks_cap * sizeof(cmeta_t);
    open = self->open_bytes;
    for (int64_t c = 0; c < self->nchunks; c++) chunk_bytes += self->chunks[c].len;
    for (uint32_t sl = 1; sl < self->nslots; sl++) nopen += self->slots[sl].n > 0;
    sc = self->series_created; sr = self->series_removed; cc = self->chunks_created; cr = self->chunks_removed;
    oo = self->ooo_samples;
    LOCKED_END(self)
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsK}", "ooo_samples", oo, "series_created", sc, "series_removed", sr,
                         "chunks_created", cc, "chunks_removed", cr, "open_chunks", nopen,
                         "series", live, "chunks", nchunks, "series_bytes", slots,
                         "ref_bytes", refs, "table_bytes", table, "blob_bytes", blobs, "page_bytes", pages,
                         "chunk_meta_bytes", cmeta, "open_chunk_bytes", open, "chunk_data_bytes", chunk_bytes);
}

static PyObject *Head_get_next_ref(HeadObject *self, void *c) { return PyLong_FromLongLong(self->next_ref); }

static PyGetSetDef Head_getset[] = {
    {"next_ref", (getter)Head_get_next_ref, NULL, "the ref the next new series gets", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Head_methods[] = {
    {"lookup", (PyCFunction)Head_lookup, METH_VARARGS, "lookup(buf, offsets, refs_out)"},
    {"create", (PyCFunction)Head_create, METH_VARARGS, "create(buf, offsets, refs, new, given=False) -> (bad, why)"},
    {"append", (PyCFunction)Head_append, METH_VARARGS,
     "append(refs, ts, vs, status_out, min_valid_time) -> (appended, mint, maxt)"},
    {"select", (PyCFunction)Head_select, METH_VARARGS, "select(refs, mint, maxt) -> (counts, mint, maxt, offsets, data)"},
    {"blobs", (PyCFunction)Head_blobs, METH_O, "blobs(refs) -> (buf, offsets)"},
    {"refs", (PyCFunction)Head_refs, METH_NOARGS, "refs() -> live refs as int64 bytes"},
    {"series_range", (PyCFunction)Head_series_range, METH_O, "series_range(refs) -> (mint, maxt) int64 bytes"},
    {"truncate", (PyCFunction)Head_truncate, METH_VARARGS,
     "truncate(mint) -> (removed refs, removed blobs, blob offsets, chunks removed, actual mint)"},
    {"stats", (PyCFunction)Head_stats, METH_NOARGS, "stats() -> dict"},
    {"ooo_select", (PyCFunction)Head_ooo_select, METH_VARARGS, "ooo_select(refs, mint, maxt) -> (counts, t, v)"},
    {"ooo_clear", (PyCFunction)Head_ooo_clear, METH_NOARGS, "ooo_clear() -> samples dropped"},
    {"alive", (PyCFunction)Head_alive, METH_O, "alive(refs) -> bytes of 0/1"},
    {"hist_mark", (PyCFunction)Head_hist_mark, METH_VARARGS, "hist_mark(refs, ts) -> refs not found"},
    {"hist_hold", (PyCFunction)Head_hist_hold, METH_VARARGS, "hist_hold(refs, on)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pythanos.tsdb._head.Head",
    .tp_basicsize = sizeof(HeadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "In-memory head state (see _head.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Head_init,
    .tp_dealloc = (destructor)Head_dealloc,
    .tp_methods = Head_methods,
    .tp_getset = Head_getset,
};

/* labels_of(buf, offsets, idx) -> list of label tuples ((name, value), ...) for the blobs
 * buf[offsets[i]:offsets[i+1]], i in idx (int64). Label names are interned. */
static PyObject *py_labels_of(PyObject *mod, PyObject *args) {
    PyObject *bo, *oo, *io;
    view bv, ov, iv;
    bv.ok = ov.ok = iv.ok = 0;
    if (!PyArg_ParseTuple(args, "OOO", &bo, &oo, &io)) return NULL;
    PyObject *res = NULL, *out = NULL;
    if (get_view(bo, &bv, 0, 1, "buf") || get_view(oo, &ov, 0, 8, "offsets") || get_view(io, &iv, 0, 8, "idx"))
        goto done;
    {
        const uint8_t *buf = bv.b.buf, *op = ov.b.buf, *ip = iv.b.buf;
        int64_t k = ov.b.len / 8 - 1, m = iv.b.len / 8;
        out = PyList_New(m);
        if (!out) goto done;
        for (int64_t j = 0; j < m; j++) {
            int64_t i = (int64_t)ld64(ip + 8 * j);
            if (i < 0 || i >= k) {
                PyErr_Format(PyExc_ValueError, "idx[%lld] = %lld is not a blob index", (long long)j, (long long)i);
                goto done;
            }
            int64_t a = (int64_t)ld64(op + 8 * i), b = (int64_t)ld64(op + 8 * i + 8);
            if (a < 0 || b < a || b > bv.b.len) {
                PyErr_Format(PyExc_ValueError, "offsets[%lld:%lld] is not a range inside the %zd-byte buffer",
                             (long long)i, (long long)i + 2, bv.b.len);
                goto done;
            }
            const uint8_t *p = buf + a;
            size_t n = (size_t)(b - a), pos = 0;
            uint64_t cnt, ln;
            if (read_uvarint(p, n, &pos, &cnt) || cnt > n) goto bad;
            PyObject *t = PyTuple_New((Py_ssize_t)cnt);
            if (!t) goto done;
            PyList_SET_ITEM(out, j, t);
            for (uint64_t c = 0; c < cnt; c++) {
                PyObject *kv[2];
                for (int w = 0; w < 2; w++) {
                    if (read_uvarint(p, n, &pos, &ln) || ln > n - pos) goto bad;
                    kv[w] = PyUnicode_DecodeUTF8((const char *)p + pos, (Py_ssize_t)ln, "strict");
                    if (!kv[w]) { if (w) Py_DECREF(kv[0]); goto done; }
                    if (w == 0) PyUnicode_InternInPlace(&kv[0]);
                    pos += ln;
                }
                PyObject *pair = PyTuple_Pack(2, kv[0], kv[1]);
                Py_DECREF(kv[0]);
                Py_DECREF(kv[1]);
                if (!pair) goto done;
                PyTuple_SET_ITEM(t, (Py_ssize_t)c, pair);
            }
            if (pos != n) goto bad;
            continue;
        bad:
            PyErr_Format(PyExc_ValueError, "label blob %lld is malformed", (long long)i);
            goto done;
        }
        res = out;
        out = NULL;
    }
done:
    Py_XDECREF(out);
    rel(&bv); rel(&ov); rel(&iv);
    return res;
}

static PyMethodDef mod_methods[] = {
    {"labels_of", py_labels_of, METH_VARARGS, "labels_of(buf, offsets, idx) -> list of label tuples"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_head", "In-memory TSDB head kernels.", -1, mod_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__head(void) {
    if (PyType_Ready(&HeadType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    Py_INCREF(&HeadType);
    if (PyModule_AddObject(m, "Head", (PyObject *)&HeadType) < 0) {
        Py_DECREF(&HeadType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
