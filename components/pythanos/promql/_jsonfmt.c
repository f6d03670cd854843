/* The ``[t,"v"],...`` body of one matrix series, as Prometheus' JSON API writes it (C kernel).
 *
 * points(t, v) -> str
 *     ``t``: int64 milliseconds, ``v``: float64, equal lengths (buffer protocol).
 *
 * Timestamps as ``jsonutil.MarshalTimestamp``: seconds, then '.' and exactly three digits when
 * the millisecond part is not zero, '-' for negative times. Values as ``jsonutil.MarshalFloat``
 * (Go ``strconv.AppendFloat(f, fmt, -1, 64)``, fmt 'e' when |f| < 1e-6 or |f| >= 1e21, else
 * 'f'): "NaN", "+Inf", "-Inf", "-0"; the shortest round-trip digits come from CPython's repr
 * (``PyOS_double_to_string(f, 'r', ...)``), which in the 'e' ranges already is Go's form and in
 * the 'f' range is expanded where repr chose an exponent (1e-6 <= |f| < 1e-4, 1e16 <= |f| < 1e21).
 * For 1e-6 <= |f| < 2^53 the same shortest digits are found without dtoa first: the smallest k
 * for which the decimal nearest |f| x 10^k reads back as |f| (a double test for k <= 3, then an
 * exact 128-bit test, binary-searched); undecidable cases (ties, interval edges, powers of two)
 * go to dtoa.
 *
 * point(t, v) -> str: ``[t,"v"]`` of one instant-vector sample, same rules.
 *
 * series(items, lo, hi, vector) -> Buf: ``{"metric":{...},"values":[...]},...`` (``"value":[t,"v"]``
 * when ``vector``) of items[lo:hi], each with ``labels`` (tuple of (name, value) str pairs), ``t``
 * and ``v``; label strings escaped as the Python formatter does (json.dumps without ASCII escaping,
 * then <>& as \u003c \u003e \u0026). The Python objects are read first; the writing runs without
 * the GIL (it is taken back only for dtoa's rare cases), so two threads can each write half of one
 * result. The Buf exposes its bytes through the buffer protocol: it is written to the socket as
 * it is, never copied into a str.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char *p;
    size_t n, cap;
} buf; /* malloc-backed, so it can grow without the GIL */

static int grow(buf *b, size_t need) {
    if (b->n + need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + need) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) return -1;
    b->p = np;
    b->cap = cap;
    return 0;
}

/* MarshalTimestamp text of t into out (at least 24 bytes); returns its length. */
static inline int ts_text(int64_t t, char *out) {
    char tmp[24];
    int neg = t < 0;
    /* |INT64_MIN| does not fit: work on unsigned */
    uint64_t a = neg ? (uint64_t)(-(t + 1)) + 1 : (uint64_t)t;
    uint64_t s = a / 1000;
    unsigned ms = (unsigned)(a % 1000);
    char *o = out;
    if (neg) *o++ = '-';
    int k = 0;
    do {
        tmp[k++] = (char)('0' + s % 10);
        s /= 10;
    } while (s);
    while (k) *o++ = tmp[--k];
    if (ms) {
        *o++ = '.';
        *o++ = (char)('0' + ms / 100);
        *o++ = (char)('0' + ms / 10 % 10);
        *o++ = (char)('0' + ms % 10);
    }
    return (int)(o - out);
}

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
#define FAST_LIMIT 1125899906842624.0 /* 2^50 */

/* Fast exact path for values with few decimals (counters, gauges rounded to a few digits):
 * the smallest k such that m = round(a * 10^k) < 2^50 and m / 10^k == a (both IEEE-exact
 * roundings, so the decimal m x 10^-k reads back as a). Below 2^50 the error of a * 10^k is far
 * under 0.5, so any k-digit decimal that reads back as a is m, and no other k-digit decimal does
 * (the doubles near a are less than 10^-k / 4 apart): m x 10^-k with the smallest such k is the
 * shortest round-trip decimal, the one repr and Go choose. Returns the length written to out, or
 * 0 when a has no such form (then dtoa decides). Requires 1e-6 <= a < 2^50. */
/* m x 10^-k in fixed notation (m < 10^19, no trailing zero dropped unless defensive). */
static inline int write_fixed(uint64_t m, int k, char *out) {
    uint64_t ip, fp;
    if (k >= 19) {
        ip = 0;
        fp = m;
    } else {
        uint64_t p10 = 1;
        for (int i = 0; i < k; i++) p10 *= 10;
        ip = m / p10;
        fp = m % p10;
    }
    char tmp[24];
    char *o = out;
    int n = 0;
    do {
        tmp[n++] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip);
    while (n) *o++ = tmp[--n];
    int nd = k;
    while (nd && fp % 10 == 0) { /* defensive: the smallest k leaves no trailing zero */
        fp /= 10;
        nd--;
    }
    if (nd) {
        *o++ = '.';
        for (int i = nd - 1; i >= 0; i--) {
            o[i] = (char)('0' + fp % 10);
            fp /= 10;
        }
        o += nd;
    }
    return (int)(o - out);
}

static inline int fast_fixed(double a, char *out, int *kstop) {
    int k = 0;
    for (; k <= 3; k++) {
        double p = a * POW10[k];
        if (p >= FAST_LIMIT) break;
        double mr = nearbyint(p);
        if (mr / POW10[k] != a) continue;
        return write_fixed((uint64_t)mr, k, out);
    }
    *kstop = k;
    return 0;
}

#if defined(__SIZEOF_INT128__)
#define HAVE_EXACT 1
static const uint64_t POW5[23] = {1ULL, 5ULL, 25ULL, 125ULL, 625ULL, 3125ULL, 15625ULL, 78125ULL,
                                  390625ULL, 1953125ULL, 9765625ULL, 48828125ULL, 244140625ULL,
                                  1220703125ULL, 6103515625ULL, 30517578125ULL, 152587890625ULL,
                                  762939453125ULL, 3814697265625ULL, 19073486328125ULL,
                                  95367431640625ULL, 476837158203125ULL, 2384185791015625ULL};

/* Exact version of the search for 1e-6 <= a < 2^53 (up to 17 digits), from k = k0 on: with
 * a = M 2^q, x = a 10^k = M 5^k 2^(k+q) is exact in 128 bits; the decimal nearest x (the only
 * candidate: an integer within the round-trip interval is the nearest one) reads back as a iff
 * |m - x| < ulp(a) 10^k / 2 = 5^k 2^(k+q-1). Ties, interval edges and powers of two (asymmetric
 * interval) are left to dtoa (returns 0). */
/* 1: m x 10^-k reads back as a; 0: no k-digit decimal does; -1: undecided here (dtoa). */
static inline int try_k(uint64_t M, int q, int k, uint64_t *mout) {
    unsigned __int128 N = (unsigned __int128)M * POW5[k];
    int s = -(k + q);
    if (s <= 0) {
        if (s < -10) return -1;
        unsigned __int128 x = N << -s;
        if (x >= (unsigned __int128)10000000000000000000ULL) return -1;
        *mout = (uint64_t)x;
        return 1;
    }
    if (s >= 120) return -1;
    unsigned __int128 one = (unsigned __int128)1 << s, half = one >> 1;
    unsigned __int128 fl = N >> s, rem = N & (one - 1), dist;
    if (rem == half) return -1;
    if (rem > half) {
        fl += 1;
        dist = one - rem;
    } else {
        dist = rem;
    }
    unsigned __int128 d2 = dist * 2;
    if (d2 == (unsigned __int128)POW5[k]) return -1;
    if (d2 > (unsigned __int128)POW5[k]) return 0;
    if (fl >= (unsigned __int128)10000000000000000000ULL) return -1;
    *mout = (uint64_t)fl;
    return 1;
}

static int exact_fixed(double a, int k0, char *out) {
    uint64_t bits;
    memcpy(&bits, &a, 8);
    int E = (int)((bits >> 52) & 0x7ff);
    uint64_t M = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    if (E == 0 || M == (1ULL << 52)) return 0;
    int q = E - 1075;
    /* round-tripping is monotone in k (a k-digit decimal is also a (k+1)-digit one), and 17
     * significant digits always round-trip: binary search for the smallest k */
    int hi = 18 - (int)floor(log10(a));
    if (hi > 22) hi = 22;
    if (hi < k0) return 0;
    uint64_t m, mh;
    int r = try_k(M, q, hi, &mh);
    if (r != 1) return 0;
    int lo = k0; /* invariant: every k < lo fails, hi succeeds */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        r = try_k(M, q, mid, &m);
        if (r < 0) return 0;
        if (r) {
            hi = mid;
            mh = m;
        } else {
            lo = mid + 1;
        }
    }
    return write_fixed(mh, hi, out);
}
#endif

/* Go's value text for f into out (at least 64 bytes); returns its length or -1. */
static int go_float(double f, char *out) {
    if (isnan(f)) return (int)(memcpy(out, "NaN", 3), 3);
    if (isinf(f)) return f > 0 ? (int)(memcpy(out, "+Inf", 4), 4) : (int)(memcpy(out, "-Inf", 4), 4);
    if (f == 0) return signbit(f) ? (int)(memcpy(out, "-0", 2), 2) : (int)(memcpy(out, "0", 1), 1);
    double a = fabs(f);
    if (a >= 1e-6 && a < 9007199254740992.0 /* 2^53 */) {
        int kstop = 0;
        int n0 = a < FAST_LIMIT ? fast_fixed(a, out + (f < 0), &kstop) : 0;
#ifdef HAVE_EXACT
        if (!n0) n0 = exact_fixed(a, kstop, out + (f < 0));
#endif
        if (n0) {
            if (f < 0) out[0] = '-';
            return n0 + (f < 0);
        }
    }
    char *r = PyOS_double_to_string(f, 'r', 0, 0, NULL);
    if (!r) return -1;
    size_t rn = strlen(r);
    char *e = strchr(r, 'e');
    int n;
    if (a < 1e-6 || a >= 1e21 || !e) {
        /* repr's exponent form is Go's ('1e-07', '1.5e+21'); without an exponent it is Go's 'f'
         * form apart from a trailing ".0" on integral values */
        if (!e && rn >= 2 && r[rn - 2] == '.' && r[rn - 1] == '0') rn -= 2;
        if (rn > 63) {
            PyMem_Free(r);
            return -1;
        }
        memcpy(out, r, rn);
        n = (int)rn;
    } else {
        /* expand d[.ddd]e±X into fixed notation */
        int neg = r[0] == '-';
        const char *m = r + neg;
        char digits[32];
        int nd = 0;
        for (const char *q = m; q < e && nd < 31; q++)
            if (*q != '.') digits[nd++] = *q;
        int exp10 = atoi(e + 1); /* value = d.ddd x 10^exp10 */
        char *o = out;
        if (neg) *o++ = '-';
        if (exp10 >= 0) {
            int intlen = exp10 + 1;
            for (int i = 0; i < intlen; i++) *o++ = i < nd ? digits[i] : '0';
            if (nd > intlen) {
                *o++ = '.';
                for (int i = intlen; i < nd; i++) *o++ = digits[i];
            }
        } else {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -exp10 - 1; i++) *o++ = '0';
            for (int i = 0; i < nd; i++) *o++ = digits[i];
        }
        n = (int)(o - out);
    }
    PyMem_Free(r);
    return n;
}

#define POINT_MAX (1 + 21 + 4 + 2 + 64 + 2 + 1) /* ,[ ts ," value "] */

static PyObject *py_points(PyObject *self, PyObject *args) {
    Py_buffer tb, vb;
    if (!PyArg_ParseTuple(args, "y*y*", &tb, &vb)) return NULL;
    PyObject *res = NULL;
    if (tb.len % 8 || vb.len % 8 || tb.len != vb.len) {
        PyErr_SetString(PyExc_ValueError, "t (int64) and v (float64) must have the same length");
        goto done;
    }
    Py_ssize_t n = tb.len / 8;
    const int64_t *t = tb.buf;
    const double *v = vb.buf;
    buf b = {0};
    char val[64];
    int vl = 0;
    uint64_t prev_bits = 0;
    int have_prev = 0;
    if (grow(&b, (size_t)(n ? n : 1) * 32)) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &v[i], 8);
        if (!have_prev || bits != prev_bits) { /* a repeated value (same bits) reuses its text */
            vl = go_float(v[i], val);
            if (vl < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "cannot format value");
                free(b.p);
                goto done;
            }
            prev_bits = bits;
            have_prev = 1;
        }
        if (grow(&b, POINT_MAX)) {
            free(b.p);
            PyErr_NoMemory();
            goto done;
        }
        char *o = b.p + b.n;
        if (i) *o++ = ',';
        *o++ = '[';
        o += ts_text(t[i], o);
        *o++ = ',';
        *o++ = '"';
        memcpy(o, val, (size_t)vl);
        o += vl;
        *o++ = '"';
        *o++ = ']';
        b.n = (size_t)(o - b.p);
    }
    res = PyUnicode_New((Py_ssize_t)b.n, 127);
    if (res && b.n) memcpy(PyUnicode_DATA(res), b.p, b.n);
    free(b.p);
done:
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    return res;
}

/* point(t, v) -> '[ts,"v"]' for one sample (instant vectors). */
static PyObject *py_point(PyObject *self, PyObject *args) {
    long long t;
    double f;
    if (!PyArg_ParseTuple(args, "Ld", &t, &f)) return NULL;
    char out[POINT_MAX];
    char *o = out;
    *o++ = '[';
    o += ts_text((int64_t)t, o);
    *o++ = ',';
    *o++ = '"';
    int vl = go_float(f, o);
    if (vl < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "cannot format value");
        return NULL;
    }
    o += vl;
    *o++ = '"';
    *o++ = ']';
    return PyUnicode_DecodeASCII(out, (Py_ssize_t)(o - out), NULL);
}

/* ---- whole results ---- */

typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t n;
} BufObject;

static void buf_dealloc(BufObject *self) {
    free(self->p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int buf_getbuffer(BufObject *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->p, self->n, 1, flags);
}

static Py_ssize_t buf_len(BufObject *self) { return self->n; }

static PyBufferProcs buf_as_buffer = {(getbufferproc)buf_getbuffer, NULL};
static PySequenceMethods buf_as_seq = {.sq_length = (lenfunc)buf_len};

static PyTypeObject BufType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pythanos.promql._jsonfmt.Buf",
    .tp_basicsize = sizeof(BufObject),
    .tp_dealloc = (destructor)buf_dealloc,
    .tp_as_buffer = &buf_as_buffer,
    .tp_as_sequence = &buf_as_seq,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes written by series(), readable through the buffer protocol (memoryview, socket writes).",
};


typedef struct {
    const char *s;
    Py_ssize_t n;
} str_ref;

typedef struct {
    Py_ssize_t first_label, nlabels; /* into the label table */
    const int64_t *t;
    const double *v;
    Py_ssize_t n;
    int64_t t1; /* vector mode */
    double v1;
} item_ref;

static const char HEX[] = "0123456789abcdef";

/* A JSON string as _jstr writes it: json.dumps(s, ensure_ascii=False) (\" \\ \b \f \n \r \t,
 * other control characters as \u00xx, everything else as UTF-8) then <>& as \u003c \u003e \u0026. */
static int put_jstr(buf *b, const char *s, Py_ssize_t n) {
    if (grow(b, (size_t)n * 6 + 2)) return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = HEX[c >> 4];
            *o++ = HEX[c & 15];
        }
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
    return 0;
}

static inline int put(buf *b, const char *s, size_t n) {
    if (grow(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* go_float without the GIL: dtoa's cases take it back for the call. */
static int go_float_nogil(double f, char *out, PyThreadState **ts) {
    double a = fabs(f);
    if (isnan(f) || isinf(f) || f == 0) return go_float(f, out);
    if (a >= 1e-6 && a < 9007199254740992.0 /* 2^53, as go_float */) {
        int kstop = 0;
        int n0 = a < FAST_LIMIT ? fast_fixed(a, out + (f < 0), &kstop) : 0;
#ifdef HAVE_EXACT
        if (!n0) n0 = exact_fixed(a, kstop, out + (f < 0));
#endif
        if (n0) {
            if (f < 0) out[0] = '-';
            return n0 + (f < 0);
        }
    }
    PyEval_RestoreThread(*ts);
    int r = go_float(f, out);
    *ts = PyEval_SaveThread();
    return r;
}

static int write_items(buf *b, const item_ref *items, Py_ssize_t count, const str_ref *lab, int vector,
                       PyThreadState **ts) {
    char val[64];
    for (Py_ssize_t k = 0; k < count; k++) {
        const item_ref *it = &items[k];
        if (put(b, k ? ",{\"metric\":{" : "{\"metric\":{", k ? 12 : 11)) return -1;
        for (Py_ssize_t j = 0; j < it->nlabels; j++) {
            const str_ref *kv = &lab[2 * (it->first_label + j)];
            if (j && put(b, ",", 1)) return -1;
            if (put_jstr(b, kv[0].s, kv[0].n) || put(b, ":", 1) || put_jstr(b, kv[1].s, kv[1].n)) return -1;
        }
        if (vector) {
            if (put(b, "},\"value\":[", 11)) return -1;
            if (grow(b, POINT_MAX + 2)) return -1;
            char *o = b->p + b->n;
            o += ts_text(it->t1, o);
            *o++ = ',';
            *o++ = '"';
            int vl = go_float_nogil(it->v1, o, ts);
            if (vl < 0) return -2;
            o += vl;
            *o++ = '"';
            *o++ = ']';
            *o++ = '}';
            b->n = (size_t)(o - b->p);
            continue;
        }
        if (put(b, "},\"values\":[", 12)) return -1;
        uint64_t prev_bits = 0;
        int have_prev = 0, vl = 0;
        if (grow(b, (size_t)it->n * 24 + 2)) return -1;
        for (Py_ssize_t i = 0; i < it->n; i++) {
            uint64_t bits;
            memcpy(&bits, &it->v[i], 8);
            if (!have_prev || bits != prev_bits) {
                vl = go_float_nogil(it->v[i], val, ts);
                if (vl < 0) return -2;
                prev_bits = bits;
                have_prev = 1;
            }
            if (grow(b, POINT_MAX)) return -1;
            char *o = b->p + b->n;
            if (i) *o++ = ',';
            *o++ = '[';
            o += ts_text(it->t[i], o);
            *o++ = ',';
            *o++ = '"';
            memcpy(o, val, (size_t)vl);
            o += vl;
            *o++ = '"';
            *o++ = ']';
            b->n = (size_t)(o - b->p);
        }
        if (put(b, "]}", 2)) return -1;
    }
    return 0;
}

static int utf8_of(PyObject *o, str_ref *out) {
    if (!PyUnicode_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "label names and values must be str");
        return -1;
    }
    out->s = PyUnicode_AsUTF8AndSize(o, &out->n);
    return out->s ? 0 : -1;
}

static PyObject *py_series(PyObject *self, PyObject *args) {
    PyObject *seq;
    Py_ssize_t lo, hi;
    int vector;
    if (!PyArg_ParseTuple(args, "Onnp", &seq, &lo, &hi, &vector)) return NULL;
    /* A private tuple of items[lo:hi]: reading an item's attributes can run Python code, which
     * must not be able to change (or free) what the loop below walks. */
    PyObject *fast;
    if (PyList_Check(seq) || PyTuple_Check(seq)) {
        Py_ssize_t total = PySequence_Size(seq);
        if (lo < 0) lo = 0;
        if (hi > total) hi = total;
        if (hi < lo) hi = lo;
        PyObject *part = PySequence_GetSlice(seq, lo, hi);
        fast = part ? PySequence_Tuple(part) : NULL;
        Py_XDECREF(part);
    } else {
        PyObject *all = PySequence_Tuple(seq);
        if (!all) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_TypeError, "items must be a sequence");
            }
            return NULL;
        }
        Py_ssize_t total = PyTuple_GET_SIZE(all);
        if (lo < 0) lo = 0;
        if (hi > total) hi = total;
        if (hi < lo) hi = lo;
        fast = PyTuple_GetSlice(all, lo, hi);
        Py_DECREF(all);
    }
    if (!fast) return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(fast);
    item_ref *items = calloc((size_t)(count ? count : 1), sizeof(item_ref));
    Py_buffer *bufs = calloc((size_t)(count ? count : 1) * 2, sizeof(Py_buffer));
    PyObject **keep = calloc((size_t)(count ? count : 1), sizeof(PyObject *)); /* labels tuples */
    str_ref *lab = NULL;
    Py_ssize_t nlab = 0, caplab = 0, nbufs = 0;
    BufObject *res = NULL;
    buf b = {0};
    if (!items || !bufs || !keep) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *o = PyTuple_GET_ITEM(fast, k); /* the private tuple keeps it alive */
        PyObject *labels = PyObject_GetAttrString(o, "labels");
        if (!labels) goto done;
        keep[k] = labels;
        if (!PyTuple_Check(labels)) {
            PyErr_SetString(PyExc_TypeError, "labels must be a tuple of (name, value) pairs");
            goto done;
        }
        Py_ssize_t np_ = PyTuple_GET_SIZE(labels);
        if (nlab + np_ > caplab) {
            caplab = (nlab + np_) * 2 + 64;
            str_ref *nl = realloc(lab, (size_t)caplab * 2 * sizeof(str_ref));
            if (!nl) {
                PyErr_NoMemory();
                goto done;
            }
            lab = nl;
        }
        items[k].first_label = nlab;
        items[k].nlabels = np_;
        for (Py_ssize_t j = 0; j < np_; j++) {
            PyObject *pair = PyTuple_GET_ITEM(labels, j);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "labels must be a tuple of (name, value) pairs");
                goto done;
            }
            if (utf8_of(PyTuple_GET_ITEM(pair, 0), &lab[2 * nlab]) ||
                utf8_of(PyTuple_GET_ITEM(pair, 1), &lab[2 * nlab + 1]))
                goto done;
            nlab++;
        }
        PyObject *t = PyObject_GetAttrString(o, "t");
        if (!t) goto done;
        PyObject *v = PyObject_GetAttrString(o, "v");
        if (!v) {
            Py_DECREF(t);
            goto done;
        }
        int bad = 0;
        if (vector) {
            items[k].t1 = PyLong_AsLongLong(t);
            items[k].v1 = PyFloat_AsDouble(v);
            bad = PyErr_Occurred() != NULL;
        } else if (PyObject_GetBuffer(t, &bufs[2 * k], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0) {
            nbufs = 2 * k + 1;
            if (PyObject_GetBuffer(v, &bufs[2 * k + 1], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0) {
                nbufs = 2 * k + 2;
                Py_buffer *tb = &bufs[2 * k], *vb = &bufs[2 * k + 1];
                if (tb->itemsize != 8 || vb->itemsize != 8 || tb->len != vb->len || !tb->format ||
                    !vb->format || (strcmp(tb->format, "l") && strcmp(tb->format, "q")) || strcmp(vb->format, "d")) {
                    PyErr_SetString(PyExc_TypeError, "t must be int64 and v float64 arrays of the same length");
                    bad = 1;
                } else {
                    items[k].t = tb->buf;
                    items[k].v = vb->buf;
                    items[k].n = tb->len / 8;
                }
            } else {
                bad = 1;
            }
        } else {
            bad = 1;
        }
        Py_DECREF(t);
        Py_DECREF(v);
        if (bad) goto done;
    }
    {
        int rc;
        PyThreadState *ts = PyEval_SaveThread();
        rc = write_items(&b, items, count, lab, vector, &ts);
        PyEval_RestoreThread(ts);
        if (rc == -1) {
            PyErr_NoMemory();
            goto done;
        }
        if (rc == -2) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "cannot format value");
            goto done;
        }
    }
    res = PyObject_New(BufObject, &BufType);
    if (res) {
        res->p = b.p;
        res->n = (Py_ssize_t)b.n;
        b.p = NULL;
    }
done:
    free(b.p);
    for (Py_ssize_t i = 0; i < nbufs; i++)
        if (bufs && bufs[i].obj) PyBuffer_Release(&bufs[i]);
    if (keep)
        for (Py_ssize_t k = 0; k < count; k++) Py_XDECREF(keep[k]);
    free(keep);
    free(bufs);
    free(items);
    free(lab);
    Py_DECREF(fast);
    return (PyObject *)res;
}

static PyMethodDef methods[] = {
    {"points", py_points, METH_VARARGS, "points(t int64, v float64) -> '[t,\"v\"],...' as Prometheus' JSON"},
    {"point", py_point, METH_VARARGS, "point(t int, v float) -> '[t,\"v\"]' as Prometheus' JSON"},
    {"series", py_series, METH_VARARGS, "series(items, lo, hi, vector) -> Buf: items[lo:hi] as Prometheus' JSON"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_jsonfmt", "Prometheus JSON number formatting (C kernel).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jsonfmt(void) {
    if (PyType_Ready(&BufType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    Py_INCREF(&BufType);
    if (PyModule_AddObject(m, "Buf", (PyObject *)&BufType) < 0) {
        Py_DECREF(&BufType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
