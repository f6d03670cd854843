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
} buf;

static int grow(buf *b, size_t need) {
    if (b->n + need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + need) cap *= 2;
    char *np = PyMem_Realloc(b->p, cap);
    if (!np) return -1;
    b->p = np;
    b->cap = cap;
    return 0;
}

static int put(buf *b, const char *s, size_t n) {
    if (grow(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int put_ts(buf *b, int64_t t) {
    char tmp[40];
    int neg = t < 0;
    /* |INT64_MIN| does not fit: work on unsigned */
    uint64_t a = neg ? (uint64_t)(-(t + 1)) + 1 : (uint64_t)t;
    uint64_t s = a / 1000, ms = a % 1000;
    int n = ms ? snprintf(tmp, sizeof tmp, "%s%llu.%03llu", neg ? "-" : "", (unsigned long long)s,
                          (unsigned long long)ms)
               : snprintf(tmp, sizeof tmp, "%s%llu", neg ? "-" : "", (unsigned long long)s);
    return put(b, tmp, (size_t)n);
}

/* Go's value text for f into out (at least 64 bytes); returns its length or -1. */
static int go_float(double f, char *out) {
    if (isnan(f)) return (int)(memcpy(out, "NaN", 3), 3);
    if (isinf(f)) return f > 0 ? (int)(memcpy(out, "+Inf", 4), 4) : (int)(memcpy(out, "-Inf", 4), 4);
    if (f == 0) return signbit(f) ? (int)(memcpy(out, "-0", 2), 2) : (int)(memcpy(out, "0", 1), 1);
    char *r = PyOS_double_to_string(f, 'r', 0, 0, NULL);
    if (!r) return -1;
    size_t rn = strlen(r);
    double a = fabs(f);
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
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &v[i], 8);
        if (!have_prev || bits != prev_bits) { /* a repeated value (same bits) reuses its text */
            vl = go_float(v[i], val);
            if (vl < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "cannot format value");
                PyMem_Free(b.p);
                goto done;
            }
            prev_bits = bits;
            have_prev = 1;
        }
        if ((i && put(&b, ",", 1)) || put(&b, "[", 1) || put_ts(&b, t[i]) || put(&b, ",\"", 2) ||
            put(&b, val, (size_t)vl) || put(&b, "\"]", 2)) {
            PyMem_Free(b.p);
            PyErr_NoMemory();
            goto done;
        }
    }
    res = PyUnicode_DecodeASCII(b.p ? b.p : "", (Py_ssize_t)b.n, NULL);
    PyMem_Free(b.p);
done:
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    return res;
}

static PyMethodDef methods[] = {
    {"points", py_points, METH_VARARGS, "points(t int64, v float64) -> '[t,\"v\"],...' as Prometheus' JSON"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_jsonfmt", "Prometheus JSON number formatting (C kernel).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jsonfmt(void) { return PyModule_Create(&moddef); }
