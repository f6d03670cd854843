/*
 * Prometheus XOR chunk codec (tsdb/chunkenc/xor.go), batched.
 *
 * Only the CPython C API and the buffer protocol are used (no numpy headers).
 * Arguments must be 1-D C-contiguous int64/float64 buffers (TypeError
 * otherwise: the Python wrapper in chunkenc.py then normalises and retries);
 * everything else (bounds, offsets, lengths) is validated here. Bad chunk
 * *data* never raises here: the (code, chunk index, sample index, byte offset)
 * of the failure is returned and chunkenc.py raises CorruptChunkError.
 *
 * Bit layout (see prometheus-formats.md section 5):
 *   u16 BE count | varint t0 | 64 raw bits v0 | uvarint dt1 | xor(v1) |
 *   { dod bucket | xor(vn) }*  | zero padding [| 0x00 in 2.x quirk mode]
 *
 * Safety: the reader treats bytes past the end of a chunk as zeros and checks
 * the bit position once per sample, so it never reads outside the buffer, and
 * every loop is bounded by the 16-bit sample count. Output is sized from the
 * counts in the chunk headers only after checking them against what the input
 * can hold (xor_max_samples): per chunk against its length, and in a batch the
 * sum against the whole buffer, so overlapping chunk ranges cannot multiply it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define BSWAP64(x) __builtin_bswap64(x)
#define CLZ64(x) ((unsigned)__builtin_clzll(x))
#define CTZ64(x) ((unsigned)__builtin_ctzll(x))
#define INLINE static inline __attribute__((always_inline))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define INLINE static inline
static inline uint64_t BSWAP64(uint64_t x) {
    x = ((x & 0x00000000FFFFFFFFULL) << 32) | (x >> 32);
    x = ((x & 0x0000FFFF0000FFFFULL) << 16) | ((x >> 16) & 0x0000FFFF0000FFFFULL);
    return ((x & 0x00FF00FF00FF00FFULL) << 8) | ((x >> 8) & 0x00FF00FF00FF00FFULL);
}
static inline unsigned CLZ64(uint64_t x) { unsigned n = 0; while (!(x & 0x8000000000000000ULL)) { x <<= 1; n++; } return n; }
static inline unsigned CTZ64(uint64_t x) { unsigned n = 0; while (!(x & 1)) { x >>= 1; n++; } return n; }
#endif

/* Error codes; mirrored in chunkenc.py. */
enum {
    XOR_OK = 0,
    XOR_ERR_SHORT = 1,    /* fewer than 2 bytes: no sample-count header */
    XOR_ERR_TRUNC = 2,    /* the bitstream ends before the announced sample count */
    XOR_ERR_VARINT = 3,   /* varint / uvarint overflows 64 bits */
    XOR_ERR_WINDOW = 4,   /* value window with leading + significant bits > 64 */
    XOR_ERR_RANGE = 5,    /* chunk (offset, length) lies outside the buffer */
    XOR_ERR_TOOMANY = 6,  /* sample count cannot fit in the chunk's length */
    XOR_ERR_OVERLAP = 7   /* the counts of a batch cannot fit in the whole buffer */
};

/* Work (samples) above which the GIL is released. Below it, dropping and
 * re-taking the GIL costs more than the work and risks a convoy wait of up to
 * the interpreter's switch interval behind another thread. */
#define GIL_RELEASE_SAMPLES 8192

INLINE uint64_t load_be64(const uint8_t *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return BSWAP64(x);
}

INLINE void store_be64(uint8_t *p, uint64_t x) {
    x = BSWAP64(x);
    memcpy(p, &x, 8);
}

INLINE uint64_t ld_u64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return x; }
INLINE void st_u64(uint8_t *p, uint64_t x) { memcpy(p, &x, 8); }

/* ------------------------------------------------------------------ reader */

static uint64_t peek64_slow(const uint8_t *p, size_t len, size_t k, unsigned s) {
    uint8_t tmp[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (k < len) {
        size_t n = len - k;
        if (n > 9) n = 9;
        memcpy(tmp, p + k, n);
    }
    return (load_be64(tmp) << s) | (uint64_t)(tmp[8] >> (8 - s));
}

/* The 64 bits starting at bit `pos` (MSB first); bits past `len` read as 0. */
INLINE uint64_t peek64(const uint8_t *p, size_t len, uint64_t pos) {
    size_t k = (size_t)(pos >> 3);
    unsigned s = (unsigned)(pos & 7);
    if (LIKELY(k + 9 <= len))
        return (load_be64(p + k) << s) | (uint64_t)(p[k + 8] >> (8 - s));
    return peek64_slow(p, len, k, s);
}

/* Go's binary.ReadUvarint over whole bytes starting at byte *i. */
INLINE int read_uvarint(const uint8_t *p, size_t len, size_t *i, uint64_t *out) {
    uint64_t x = 0;
    unsigned s = 0;
    for (int j = 0; j < 10; j++) {
        if (*i >= len) return XOR_ERR_TRUNC;
        uint8_t b = p[(*i)++];
        if (b < 0x80) {
            if (j == 9 && b > 1) return XOR_ERR_VARINT;
            *out = x | ((uint64_t)b << s);
            return XOR_OK;
        }
        x |= (uint64_t)(b & 0x7f) << s;
        s += 7;
    }
    return XOR_ERR_VARINT;
}

/* The most samples `len` bytes of XOR chunk can hold. The 2-byte header; sample 0 takes at
 * least 9 bytes (a 1-byte varint time and the 64-bit value), sample 1 at least 1 byte (uvarint
 * time delta) and 1 bit (value unchanged), every later one at least 2 bits (delta of delta 0,
 * value unchanged): 8 len >= 16 + 72 + 8 + 1 + 2 (n - 2) bits for n >= 2. Several chunks side
 * by side never hold more than one chunk of their total length, so this bounds a batch too. */
INLINE uint64_t xor_max_samples(uint64_t len) {
    if (len < 11) return 0;
    if (len < 13) return 1;
    if (len > ((uint64_t)1 << 60)) return (uint64_t)1 << 62;
    return (8 * len - 93) / 2;
}

INLINE int count_plausible(unsigned n, size_t len) {
    return (uint64_t)n <= xor_max_samples((uint64_t)len);
}

/*
 * Decode one chunk into tout/vout (n * 8 bytes each, native int64 / float64).
 * n is the header's sample count as read (once) by the caller, who sized the
 * outputs from it: the header is not re-read here, so a buffer mutated by
 * another thread meanwhile cannot make us write past the outputs.
 * On error returns the code and sets *esample (sample being decoded) and
 * *eoff (byte offset inside the chunk where that sample starts).
 *
 * Samples >= 2 are decoded from one 64-bit peek when the dod and the value
 * fit in it (the common case), and runs of "00" (same dod, same value) are
 * consumed up to 32 samples per peek with clz.
 */
static int decode_chunk(const uint8_t *p, size_t len, unsigned n, uint8_t *tout,
                        uint8_t *vout, int64_t *esample, int64_t *eoff) {
    *esample = 0;
    *eoff = 0;
    if (len < 2) return XOR_ERR_SHORT;
    if (n == 0) return XOR_OK;
    if (!count_plausible(n, len)) return XOR_ERR_TOOMANY;

    /* sample 0: varint t, raw 64-bit v (byte aligned) */
    size_t i = 2;
    uint64_t ux;
    *eoff = 2;
    int rc = read_uvarint(p, len, &i, &ux);
    if (rc) return rc;
    uint64_t t = ux >> 1;
    if (ux & 1) t = ~t;
    if (i + 8 > len) return XOR_ERR_TRUNC;
    uint64_t vbits = load_be64(p + i);
    i += 8;
    st_u64(tout, t);
    st_u64(vout, vbits);
    if (n == 1) return XOR_OK;

    /* sample 1: uvarint dt (byte aligned), then the xor value */
    *esample = 1;
    *eoff = (int64_t)i;
    uint64_t tdelta;
    rc = read_uvarint(p, len, &i, &tdelta);
    if (rc) return rc;
    t += tdelta;

    const uint64_t nbits = (uint64_t)len * 8;
    uint64_t pos = (uint64_t)i * 8;
    unsigned lead = 0, trail = 0; /* decoder starts at 0/0, not the 0xff sentinel */
    unsigned s = 1;
    uint64_t spos = (uint64_t)*eoff * 8; /* where sample s starts */

    /* Value per 5.3 from x = the next bits at pos + c, of which `avail` are real;
     * falls back to a fresh peek when the value does not fit. */
#define READ_VALUE(x, avail)                                                   \
    do {                                                                       \
        if (!((x) >> 63)) {                                                    \
            c += 1;                                                            \
        } else if (!((x) & (1ULL << 62))) {                                    \
            unsigned mb_ = 64 - lead - trail;                                  \
            uint64_t b_;                                                       \
            if (2 + mb_ <= (avail)) b_ = ((x) << 2) >> (64 - mb_);             \
            else b_ = peek64(p, len, pos + c + 2) >> (64 - mb_);               \
            c += 2 + mb_;                                                      \
            vbits ^= b_ << trail;                                              \
        } else {                                                               \
            unsigned ld_ = (unsigned)((x) >> 57) & 31;                         \
            unsigned sg_ = (unsigned)((x) >> 51) & 63;                         \
            uint64_t b_;                                                       \
            if (sg_ == 0) sg_ = 64;                                            \
            if (UNLIKELY(ld_ + sg_ > 64)) goto window_error;                   \
            lead = ld_;                                                        \
            trail = 64 - ld_ - sg_;                                            \
            if (13 + sg_ <= (avail)) b_ = ((x) << 13) >> (64 - sg_);           \
            else b_ = peek64(p, len, pos + c + 13) >> (64 - sg_);              \
            c += 13 + sg_;                                                     \
            vbits ^= b_ << trail;                                              \
        }                                                                      \
    } while (0)

    {
        unsigned c = 0;
        uint64_t x = peek64(p, len, pos);
        READ_VALUE(x, 64);
        pos += c;
    }
    if (UNLIKELY(pos > nbits)) goto trunc_error;
    st_u64(tout + 8, t);
    st_u64(vout + 8, vbits);

    for (s = 2; s < n;) {
        spos = pos;
        uint64_t w = peek64(p, len, pos);
        if (!(w >> 62)) {
            /* "00": dod 0 and value unchanged; take the whole run of them */
            unsigned m = (w ? CLZ64(w) : 64) >> 1;
            if (m > n - s) m = n - s;
            if (UNLIKELY(pos + 2 * (uint64_t)m > nbits)) {
                s += (unsigned)((nbits - pos) >> 1);
                spos = pos + ((nbits - pos) & ~(uint64_t)1);
                goto trunc_error;
            }
            for (unsigned j = 0; j < m; j++) {
                t += tdelta;
                st_u64(tout + 8 * (size_t)(s + j), t);
                st_u64(vout + 8 * (size_t)(s + j), vbits);
            }
            pos += 2 * (uint64_t)m;
            s += m;
            continue;
        }
        /* Each dod bucket continues with a constant bit count so that the
         * value's bits come from `w` at a known shift (no second load) and
         * the compiler cannot turn the bucket choice into a cmov chain that
         * would serialise the next load behind this one. */
#define VALUE_AT(K)                                                            \
        do {                                                                   \
            unsigned c = (K);                                                  \
            uint64_t x = w << (K);                                             \
            READ_VALUE(x, 64 - (K));                                           \
            pos += c;                                                          \
        } while (0)
        if (!(w >> 63)) {
            t += tdelta;
            VALUE_AT(1);
        } else if (!(w & (1ULL << 62))) {         /* 10 + 14 bits */
            uint64_t b = (w << 2) >> 50;
            tdelta += b > 8192 ? b - 16384 : b;
            t += tdelta;
            VALUE_AT(16);
        } else if (!(w & (1ULL << 61))) {         /* 110 + 17 bits */
            uint64_t b = (w << 3) >> 47;
            tdelta += b > 65536 ? b - 131072 : b;
            t += tdelta;
            VALUE_AT(20);
        } else if (!(w & (1ULL << 60))) {         /* 1110 + 20 bits */
            uint64_t b = (w << 4) >> 44;
            tdelta += b > 524288 ? b - 1048576 : b;
            t += tdelta;
            VALUE_AT(24);
        } else {                                  /* 1111 + 64 bits */
            tdelta += peek64(p, len, pos + 4);
            t += tdelta;
            pos += 68;
            unsigned c = 0;
            uint64_t x = peek64(p, len, pos);
            READ_VALUE(x, 64);
            pos += c;
        }
#undef VALUE_AT
        if (UNLIKELY(pos > nbits)) goto trunc_error;
        st_u64(tout + 8 * (size_t)s, t);
        st_u64(vout + 8 * (size_t)s, vbits);
        s++;
    }
#undef READ_VALUE
    return XOR_OK;

trunc_error:
    *esample = s;
    *eoff = (int64_t)(spos >> 3);
    return XOR_ERR_TRUNC;
window_error:
    *esample = s;
    *eoff = (int64_t)(spos >> 3);
    return XOR_ERR_WINDOW;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    uint8_t *p;     /* next whole 8 bytes go here */
    uint64_t acc;   /* pending bits in the low `nacc` bits (bits above are junk) */
    unsigned nacc;  /* 0..63 */
} bitw;

/* Append the low n bits of v (1 <= n <= 64; v must have no bits above n). */
INLINE void bw_put(bitw *w, uint64_t v, unsigned n) {
    unsigned tot = w->nacc + n;
    if (tot < 64) {
        w->acc = (w->acc << n) | v;
        w->nacc = tot;
    } else {
        unsigned r = tot - 64;
        uint64_t out = w->nacc ? ((w->acc << (64 - w->nacc)) | (v >> r)) : v;
        store_be64(w->p, out);
        w->p += 8;
        w->acc = v;
        w->nacc = r;
    }
}

INLINE void bw_flush(bitw *w) {
    if (w->nacc) {
        uint64_t out = w->acc << (64 - w->nacc);
        unsigned nb = (w->nacc + 7) >> 3;
        for (unsigned j = 0; j < nb; j++) w->p[j] = (uint8_t)(out >> (56 - 8 * j));
        w->p += nb;
        w->nacc = 0;
    }
}

INLINE unsigned put_uvarint(uint8_t *buf, uint64_t x) {
    unsigned k = 0;
    while (x >= 0x80) {
        buf[k++] = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    buf[k++] = (uint8_t)x;
    return k;
}

/* Maximum size of one encoded chunk of n samples: 2 header bytes, <= 18 bytes
 * for sample 0, <= 20 for sample 1, <= 145 bits for later ones, padding and
 * the 2.x extra byte. */
#define CHUNK_BOUND(n) (24 + 19 * (size_t)(n))

/*
 * Encode n samples (t: native int64, v: native float64 bit patterns) into out,
 * which has at least CHUNK_BOUND(n) bytes. Returns the chunk size in bytes.
 * quirk != 0 reproduces Prometheus <= 2.55's bstream.writeByte extra byte:
 * Go's writeBits emits whole bytes first via writeByte, then single bits; a
 * stream that ends byte-aligned right after a writeByte carries one more 0x00.
 * The last primitive of every sample is its value write, so only that decides.
 */
static size_t encode_chunk(const uint8_t *tp, const uint8_t *vp, size_t n, uint8_t *out, int quirk) {
    out[0] = (uint8_t)(n >> 8);
    out[1] = (uint8_t)n;
    if (n == 0) return 2;

    bitw w = {out + 2, 0, 0};
    uint8_t vb[10];
    int lastbyte;

    uint64_t t0 = ld_u64(tp);
    uint64_t v0 = ld_u64(vp);
    /* zig-zag varint of t0 */
    uint64_t zz = (t0 << 1) ^ (uint64_t)((int64_t)t0 >> 63);
    unsigned k = put_uvarint(vb, zz);
    for (unsigned j = 0; j < k; j++) bw_put(&w, vb[j], 8);
    bw_put(&w, v0, 64);
    lastbyte = 1;

    if (n >= 2) {
        uint64_t tprev = ld_u64(tp + 8);
        uint64_t tdelta = tprev - t0;
        k = put_uvarint(vb, tdelta);
        for (unsigned j = 0; j < k; j++) bw_put(&w, vb[j], 8);

        uint64_t vprev = v0;
        unsigned lead = 0xff, trail = 0;

#define WRITE_VALUE(cur)                                                       \
    do {                                                                       \
        uint64_t d_ = (cur) ^ vprev;                                           \
        if (d_ == 0) {                                                         \
            bw_put(&w, 0, 1);                                                  \
            lastbyte = 0;                                                      \
        } else {                                                               \
            unsigned ld_ = CLZ64(d_), tr_ = CTZ64(d_);                         \
            if (ld_ >= 32) ld_ = 31;                                           \
            if (lead != 0xff && ld_ >= lead && tr_ >= trail) {                 \
                unsigned mb_ = 64 - lead - trail;                              \
                uint64_t x_ = d_ >> trail;                                     \
                if (mb_ <= 62) {                                               \
                    bw_put(&w, (2ULL << mb_) | x_, mb_ + 2);                   \
                } else {                                                       \
                    bw_put(&w, 2, 2);                                          \
                    bw_put(&w, x_, mb_);                                       \
                }                                                              \
                lastbyte = (mb_ & 7) == 0;                                     \
            } else {                                                           \
                unsigned sg_ = 64 - ld_ - tr_;                                 \
                lead = ld_;                                                    \
                trail = tr_;                                                   \
                bw_put(&w, (3ULL << 11) | ((uint64_t)ld_ << 6) | (sg_ & 63), 13); \
                bw_put(&w, d_ >> tr_, sg_);                                    \
                lastbyte = (sg_ & 7) == 0;                                     \
            }                                                                  \
        }                                                                      \
        vprev = (cur);                                                         \
    } while (0)

        WRITE_VALUE(ld_u64(vp + 8));

        for (size_t s = 2; s < n; s++) {
            uint64_t ts = ld_u64(tp + 8 * s);
            uint64_t td = ts - tprev;
            int64_t dod = (int64_t)(td - tdelta);
            if (dod == 0) {
                bw_put(&w, 0, 1);
            } else if (dod >= -8191 && dod <= 8192) {
                bw_put(&w, (2ULL << 14) | ((uint64_t)dod & 0x3fffULL), 16);
            } else if (dod >= -65535 && dod <= 65536) {
                bw_put(&w, (6ULL << 17) | ((uint64_t)dod & 0x1ffffULL), 20);
            } else if (dod >= -524287 && dod <= 524288) {
                bw_put(&w, (14ULL << 20) | ((uint64_t)dod & 0xfffffULL), 24);
            } else {
                bw_put(&w, 15, 4);
                bw_put(&w, (uint64_t)dod, 64);
            }
            tdelta = td;
            tprev = ts;
            WRITE_VALUE(ld_u64(vp + 8 * s));
        }
#undef WRITE_VALUE
    }
    int aligned = (w.nacc & 7) == 0;
    bw_flush(&w);
    size_t size = (size_t)(w.p - out);
    if (quirk && aligned && lastbyte) out[size++] = 0;
    return size;
}

/* ------------------------------------------------------------ Python glue */

typedef struct {
    Py_buffer b;
    int ok;
} view;

/* kind: 0 = any C-contiguous bytes; 'i' = 1-D int64; 'f' = 1-D float64 (native order).
 * Failure is a TypeError, on which the Python wrapper normalises its arguments and retries. */
static int get_view(PyObject *o, view *v, int writable, int kind, const char *what) {
    v->ok = 0;
    int flags = kind ? (PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) : PyBUF_SIMPLE;
    if (writable) flags |= PyBUF_WRITABLE;
    if (PyObject_GetBuffer(o, &v->b, flags) < 0) goto bad;
    v->ok = 1;
    if (kind) {
        const char *f = v->b.format ? v->b.format : "B";
        if (*f == '@' || *f == '=') f++;
#if PY_LITTLE_ENDIAN
        else if (*f == '<') f++;
#else
        else if (*f == '>' || *f == '!') f++;
#endif
        int fmt_ok = kind == 'i' ? ((f[0] == 'l' || f[0] == 'q') && f[1] == 0) : (f[0] == 'd' && f[1] == 0);
        if (!fmt_ok || v->b.itemsize != 8 || v->b.ndim != 1) {
            PyBuffer_Release(&v->b);
            v->ok = 0;
            goto bad;
        }
    }
    return 0;
bad:
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s: expected a %s%s buffer", what,
                 kind == 'i' ? "1-D C-contiguous int64" : kind == 'f' ? "1-D C-contiguous float64" : "C-contiguous bytes",
                 writable ? " writable" : "");
    return -1;
}

static void rel(view *v) {
    if (v->ok) PyBuffer_Release(&v->b);
    v->ok = 0;
}

/* encode(t, v, quirk) -> bytes */
static PyObject *py_encode(PyObject *self, PyObject *args) {
    PyObject *to, *vo;
    int quirk;
    view tv, vv;
    if (!PyArg_ParseTuple(args, "OOp", &to, &vo, &quirk)) return NULL;
    if (get_view(to, &tv, 0, 'i', "t") < 0) return NULL;
    if (get_view(vo, &vv, 0, 'f', "v") < 0) { rel(&tv); return NULL; }
    PyObject *res = NULL;
    size_t n = (size_t)tv.b.len / 8;
    if (tv.b.len % 8 || vv.b.len != tv.b.len) {
        PyErr_SetString(PyExc_ValueError, "t and v must be int64/float64 buffers of equal length");
        goto done;
    }
    if (n > 65535) {
        PyErr_SetString(PyExc_ValueError, "an XOR chunk holds at most 65535 samples");
        goto done;
    }
    {
        /* encoded into scratch memory, then copied into a bytes object of the exact size */
        uint8_t *out = PyMem_RawMalloc(CHUNK_BOUND(n));
        if (!out) {
            PyErr_NoMemory();
            goto done;
        }
        size_t size;
        if (n >= GIL_RELEASE_SAMPLES) {
            Py_BEGIN_ALLOW_THREADS
            size = encode_chunk(tv.b.buf, vv.b.buf, n, out, quirk);
            Py_END_ALLOW_THREADS
        } else {
            size = encode_chunk(tv.b.buf, vv.b.buf, n, out, quirk);
        }
        res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)size);
        PyMem_RawFree(out);
    }
done:
    rel(&tv);
    rel(&vv);
    return res;
}

/* encode_many(t, v, bounds, offsets_out, quirk) -> bytes */
static PyObject *py_encode_many(PyObject *self, PyObject *args) {
    PyObject *to, *vo, *bo, *oo;
    int quirk;
    view tv, vv, bv, ov;
    tv.ok = vv.ok = bv.ok = ov.ok = 0;
    if (!PyArg_ParseTuple(args, "OOOOp", &to, &vo, &bo, &oo, &quirk)) return NULL;
    PyObject *res = NULL;
    if (get_view(to, &tv, 0, 'i', "t") < 0 || get_view(vo, &vv, 0, 'f', "v") < 0 ||
        get_view(bo, &bv, 0, 'i', "bounds") < 0 || get_view(oo, &ov, 1, 'i', "offsets") < 0)
        goto done;
    if (tv.b.len % 8 || vv.b.len != tv.b.len) {
        PyErr_SetString(PyExc_ValueError, "t and v must be int64/float64 buffers of equal length");
        goto done;
    }
    if (bv.b.len % 8 || bv.b.len < 8 || ov.b.len != bv.b.len) {
        PyErr_SetString(PyExc_ValueError, "bounds and offsets must be int64 buffers of equal length >= 1");
        goto done;
    }
    {
        size_t N = (size_t)tv.b.len / 8;
        size_t k = (size_t)bv.b.len / 8 - 1;
        const uint8_t *bp = bv.b.buf;
        uint64_t total = 0;
        for (size_t c = 0; c < k; c++) {
            int64_t a = (int64_t)ld_u64(bp + 8 * c), b = (int64_t)ld_u64(bp + 8 * c + 8);
            if (a < 0 || b < a || (uint64_t)b > N || b - a > 65535) {
                PyErr_Format(PyExc_ValueError, "bounds[%zd:%zd] = %lld:%lld is not a valid chunk of at most 65535 samples",
                             (Py_ssize_t)c, (Py_ssize_t)c + 2, (long long)a, (long long)b);
                goto done;
            }
            total += CHUNK_BOUND(b - a);
        }
        if (total > (uint64_t)PY_SSIZE_T_MAX) { PyErr_NoMemory(); goto done; }
        /* encoded into scratch memory (worst case size), then copied into bytes of the exact size */
        uint8_t *out = PyMem_RawMalloc(total ? (size_t)total : 1);
        if (!out) { PyErr_NoMemory(); goto done; }
        const uint8_t *tp = tv.b.buf, *vp = vv.b.buf;
        uint8_t *op = ov.b.buf;
        size_t pos = 0;
        int release = (uint64_t)(ld_u64(bp + 8 * k) - ld_u64(bp)) >= GIL_RELEASE_SAMPLES;
        PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
        int changed = 0;
        for (size_t c = 0; c < k; c++) {
            size_t a = (size_t)ld_u64(bp + 8 * c), b = (size_t)ld_u64(bp + 8 * c + 8);
            /* bounds are caller-owned: re-check, they may have changed meanwhile */
            if (b < a || b > N || b - a > 65535 || pos + CHUNK_BOUND(b - a) > total) { changed = 1; break; }
            st_u64(op + 8 * c, (uint64_t)pos);
            pos += encode_chunk(tp + 8 * a, vp + 8 * a, b - a, out + pos, quirk);
        }
        st_u64(op + 8 * k, (uint64_t)pos);
        if (release) PyEval_RestoreThread(ts);
        if (changed)
            PyErr_SetString(PyExc_RuntimeError, "bounds changed during encode_many");
        else
            res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)pos);
        PyMem_RawFree(out);
    }
done:
    rel(&tv);
    rel(&vv);
    rel(&bv);
    rel(&ov);
    return res;
}

/* Output arrays come from numpy.empty (installed by set_allocator from chunkenc.py): no numpy
 * headers at build time, and numpy's allocator (huge pages for big arrays, a cache for small
 * ones) avoids the page-fault storm of fresh malloc'd multi-megabyte buffers. */
static PyObject *g_empty = NULL, *g_i8 = NULL, *g_f8 = NULL;

static PyObject *py_set_allocator(PyObject *self, PyObject *args) {
    PyObject *e, *i8, *f8;
    if (!PyArg_ParseTuple(args, "OOO", &e, &i8, &f8)) return NULL;
    Py_INCREF(e); Py_INCREF(i8); Py_INCREF(f8);
    Py_XSETREF(g_empty, e);
    Py_XSETREF(g_i8, i8);
    Py_XSETREF(g_f8, f8);
    Py_RETURN_NONE;
}

/* A new 1-D array of n 8-byte items; *data points at its memory, exported through *hold until
 * the caller releases it (so nothing can resize or free it meanwhile: allocating the next array
 * runs Python code). */
static PyObject *new_array(Py_ssize_t n, PyObject *dtype, uint8_t **data, view *hold) {
    hold->ok = 0;
    if (n < 0 || n > PY_SSIZE_T_MAX / 8) {
        PyErr_NoMemory();
        return NULL;
    }
    if (!g_empty) {
        PyErr_SetString(PyExc_RuntimeError, "_xor.set_allocator() was not called");
        return NULL;
    }
    PyObject *pn = PyLong_FromSsize_t(n);
    if (!pn) return NULL;
    PyObject *argv[2] = {pn, dtype};
    PyObject *a = PyObject_Vectorcall(g_empty, argv, 2, NULL);
    Py_DECREF(pn);
    if (!a) return NULL;
    if (PyObject_GetBuffer(a, &hold->b, PyBUF_SIMPLE | PyBUF_WRITABLE) < 0) { Py_DECREF(a); return NULL; }
    hold->ok = 1;
    if (hold->b.len != n * 8) {
        rel(hold);
        Py_DECREF(a);
        PyErr_SetString(PyExc_RuntimeError, "allocator returned a buffer of the wrong size");
        return NULL;
    }
    *data = hold->b.buf;
    return a;
}

/* decode(buf) -> (code, sample, offset, t, v); t/v are None on error */
static PyObject *py_decode(PyObject *self, PyObject *arg) {
    view bv, th = {.ok = 0}, vh = {.ok = 0};
    if (get_view(arg, &bv, 0, 0, "data") < 0) return NULL;
    const uint8_t *p = bv.b.buf;
    size_t len = (size_t)bv.b.len;
    int64_t es = 0, eo = 0;
    int rc = XOR_OK;
    PyObject *ta = NULL, *va = NULL;
    if (len < 2) {
        rc = XOR_ERR_SHORT;
    } else {
        unsigned n = ((unsigned)p[0] << 8) | p[1];
        if (!count_plausible(n, len)) {
            rc = XOR_ERR_TOOMANY;
            es = n;
        } else {
            uint8_t *tp, *vp;
            ta = new_array((Py_ssize_t)n, g_i8, &tp, &th);
            if (ta) va = new_array((Py_ssize_t)n, g_f8, &vp, &vh);
            if (!va) { rel(&th); Py_XDECREF(ta); rel(&bv); return NULL; }
            if (n >= GIL_RELEASE_SAMPLES) {
                Py_BEGIN_ALLOW_THREADS
                rc = decode_chunk(p, len, n, tp, vp, &es, &eo);
                Py_END_ALLOW_THREADS
            } else {
                rc = decode_chunk(p, len, n, tp, vp, &es, &eo);
            }
        }
    }
    rel(&th);
    rel(&vh);
    rel(&bv);
    if (rc != XOR_OK) {
        Py_XDECREF(ta);
        Py_XDECREF(va);
        return Py_BuildValue("(iLLOO)", rc, (long long)es, (long long)eo, Py_None, Py_None);
    }
    if (!ta) { /* header-only paths never get here with rc == OK */
        PyErr_SetString(PyExc_SystemError, "decode: no output");
        return NULL;
    }
    return Py_BuildValue("(iLLNN)", rc, 0LL, 0LL, ta, va);
}

/* Pass 1 of a batch: check every (offset, length) against the buffer and read
 * the sample counts into cp. Returns a code; *ec = failing chunk; *total = sum.
 * Each count must fit in its chunk's length and their sum in the whole buffer
 * (chunks side by side hold no more than one chunk of their total length), so
 * chunk ranges that overlap cannot claim more samples than the bytes hold.
 * On XOR_ERR_TOOMANY *es is the chunk's count, on XOR_ERR_OVERLAP the sum. */
static int headers_pass(const uint8_t *buf, uint64_t blen, const uint8_t *op, const uint8_t *lp,
                        size_t k, uint8_t *cp, int64_t *ec, int64_t *es, uint64_t *total) {
    uint64_t sum = 0;
    const uint64_t most = xor_max_samples(blen);
    for (size_t c = 0; c < k; c++) {
        int64_t off = (int64_t)ld_u64(op + 8 * c), ln = (int64_t)ld_u64(lp + 8 * c);
        *ec = (int64_t)c;
        if (off < 0 || ln < 0 || (uint64_t)off > blen || (uint64_t)ln > blen - (uint64_t)off)
            return XOR_ERR_RANGE;
        if (ln < 2) return XOR_ERR_SHORT;
        const uint8_t *p = buf + off;
        unsigned n = ((unsigned)p[0] << 8) | p[1];
        if (!count_plausible(n, (size_t)ln)) {
            *es = n;
            return XOR_ERR_TOOMANY;
        }
        st_u64(cp + 8 * c, n);
        sum += n;
        if (sum > most) {
            *es = (int64_t)sum;
            return XOR_ERR_OVERLAP;
        }
    }
    *ec = 0;
    *total = sum;
    return XOR_OK;
}

/* Pass 2: decode chunk c's n = cp[c] samples to tp/vp (capacity `cap` samples).
 * Everything caller-owned is re-checked, as it may change while the GIL is released. */
static int decode_pass(const uint8_t *buf, uint64_t blen, const uint8_t *op, const uint8_t *lp,
                       size_t k, const uint8_t *cp, uint8_t *tp, uint8_t *vp, uint64_t cap,
                       int64_t *ec, int64_t *es, int64_t *eo) {
    uint64_t at = 0;
    for (size_t c = 0; c < k; c++) {
        uint64_t off = ld_u64(op + 8 * c), ln = ld_u64(lp + 8 * c), n = ld_u64(cp + 8 * c);
        *ec = (int64_t)c;
        *es = *eo = 0;
        if (off > blen || ln > blen - off || n > 65535 || n > cap - at) return XOR_ERR_RANGE;
        int rc = decode_chunk(buf + off, (size_t)ln, (unsigned)n, tp + 8 * at, vp + 8 * at, es, eo);
        if (rc != XOR_OK) return rc;
        at += n;
    }
    return XOR_OK;
}

/* decode_many(buf, offsets, lengths) -> (code, chunk, sample, offset, counts, t, v);
 * the last three are None on error. */
static PyObject *py_decode_many(PyObject *self, PyObject *args) {
    PyObject *bo, *oo, *lo;
    view bv, ov, lv, ch = {.ok = 0}, th = {.ok = 0}, vh = {.ok = 0};
    bv.ok = ov.ok = lv.ok = 0;
    PyObject *cnt = NULL, *ta = NULL, *va = NULL, *res = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &bo, &oo, &lo)) return NULL;
    if (get_view(bo, &bv, 0, 0, "buf") < 0 || get_view(oo, &ov, 0, 'i', "offsets") < 0 ||
        get_view(lo, &lv, 0, 'i', "lengths") < 0)
        goto done;
    if (ov.b.len % 8 || lv.b.len != ov.b.len) {
        PyErr_SetString(PyExc_ValueError, "offsets and lengths must be int64 buffers of equal length");
        goto done;
    }
    {
        const uint8_t *buf = bv.b.buf;
        const uint64_t blen = (uint64_t)bv.b.len;
        size_t k = (size_t)ov.b.len / 8;
        int64_t ec = 0, es = 0, eo = 0;
        uint64_t total = 0;
        uint8_t *cp, *tp, *vp;
        cnt = new_array((Py_ssize_t)k, g_i8, &cp, &ch);
        if (!cnt) goto done;
        int rc = headers_pass(buf, blen, ov.b.buf, lv.b.buf, k, cp, &ec, &es, &total);
        if (rc == XOR_OK) {
            ta = new_array((Py_ssize_t)total, g_i8, &tp, &th);
            if (!ta) goto done;
            va = new_array((Py_ssize_t)total, g_f8, &vp, &vh);
            if (!va) goto done;
            if (total >= GIL_RELEASE_SAMPLES) {
                Py_BEGIN_ALLOW_THREADS
                rc = decode_pass(buf, blen, ov.b.buf, lv.b.buf, k, cp, tp, vp, total, &ec, &es, &eo);
                Py_END_ALLOW_THREADS
            } else {
                rc = decode_pass(buf, blen, ov.b.buf, lv.b.buf, k, cp, tp, vp, total, &ec, &es, &eo);
            }
        }
        if (rc != XOR_OK)
            res = Py_BuildValue("(iLLLOOO)", rc, (long long)ec, (long long)es, (long long)eo, Py_None, Py_None, Py_None);
        else
            res = Py_BuildValue("(iLLLOOO)", rc, 0LL, 0LL, 0LL, cnt, ta, va);
    }
done:
    rel(&ch);
    rel(&th);
    rel(&vh);
    Py_XDECREF(cnt);
    Py_XDECREF(ta);
    Py_XDECREF(va);
    rel(&bv);
    rel(&ov);
    rel(&lv);
    return res;
}

/* decode_many_into(buf, offsets, lengths, t_out, v_out)
 *   -> (code, chunk, sample, offset, counts | None, total); total = samples needed. A code
 *   of -1 means the outputs are too small (nothing decoded). */
static PyObject *py_decode_many_into(PyObject *self, PyObject *args) {
    PyObject *bo, *oo, *lo, *to, *vo;
    view bv, ov, lv, tv, vv, ch = {.ok = 0};
    bv.ok = ov.ok = lv.ok = tv.ok = vv.ok = 0;
    PyObject *cnt = NULL, *res = NULL;
    if (!PyArg_ParseTuple(args, "OOOOO", &bo, &oo, &lo, &to, &vo)) return NULL;
    if (get_view(bo, &bv, 0, 0, "buf") < 0 || get_view(oo, &ov, 0, 'i', "offsets") < 0 ||
        get_view(lo, &lv, 0, 'i', "lengths") < 0 || get_view(to, &tv, 1, 'i', "t_out") < 0 ||
        get_view(vo, &vv, 1, 'f', "v_out") < 0)
        goto done;
    if (ov.b.len % 8 || lv.b.len != ov.b.len) {
        PyErr_SetString(PyExc_ValueError, "offsets and lengths must be int64 buffers of equal length");
        goto done;
    }
    {
        const uint8_t *buf = bv.b.buf;
        const uint64_t blen = (uint64_t)bv.b.len;
        size_t k = (size_t)ov.b.len / 8;
        int64_t ec = 0, es = 0, eo = 0;
        uint64_t total = 0;
        uint8_t *cp;
        cnt = new_array((Py_ssize_t)k, g_i8, &cp, &ch);
        if (!cnt) goto done;
        int rc = headers_pass(buf, blen, ov.b.buf, lv.b.buf, k, cp, &ec, &es, &total);
        uint64_t cap = (uint64_t)(tv.b.len < vv.b.len ? tv.b.len : vv.b.len) / 8;
        if (rc == XOR_OK && total > cap) {
            rc = -1;
        } else if (rc == XOR_OK) {
            uint8_t *tp = tv.b.buf, *vp = vv.b.buf;
            if (total >= GIL_RELEASE_SAMPLES) {
                Py_BEGIN_ALLOW_THREADS
                rc = decode_pass(buf, blen, ov.b.buf, lv.b.buf, k, cp, tp, vp, cap, &ec, &es, &eo);
                Py_END_ALLOW_THREADS
            } else {
                rc = decode_pass(buf, blen, ov.b.buf, lv.b.buf, k, cp, tp, vp, cap, &ec, &es, &eo);
            }
        }
        res = Py_BuildValue("(iLLLOL)", rc, (long long)ec, (long long)es, (long long)eo,
                            rc == XOR_OK ? cnt : Py_None, (long long)total);
    }
done:
    rel(&ch);
    Py_XDECREF(cnt);
    rel(&bv);
    rel(&ov);
    rel(&lv);
    rel(&tv);
    rel(&vv);
    return res;
}

static PyMethodDef methods[] = {
    {"encode", py_encode, METH_VARARGS, "encode(t, v, quirk) -> bytes"},
    {"encode_many", py_encode_many, METH_VARARGS, "encode_many(t, v, bounds, offsets_out, quirk) -> bytes"},
    {"set_allocator", py_set_allocator, METH_VARARGS, "set_allocator(numpy.empty, int64 dtype, float64 dtype)"},
    {"decode", py_decode, METH_O, "decode(data) -> (code, sample, offset, t | None, v | None)"},
    {"decode_many", py_decode_many, METH_VARARGS,
     "decode_many(buf, offsets, lengths) -> (code, chunk, sample, offset, counts, t, v)"},
    {"decode_many_into", py_decode_many_into, METH_VARARGS,
     "decode_many_into(buf, offsets, lengths, t_out, v_out) -> (code, chunk, sample, offset, counts, total)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_xor", "Prometheus XOR chunk codec (C kernels).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__xor(void) {
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "GIL_RELEASE_SAMPLES", GIL_RELEASE_SAMPLES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
