/*
 * rate / increase / delta over range windows, as Prometheus v3.9.1 computes them
 * (promql/functions.go extrapolatedRate), for every series and step of a batch at once.
 *
 * The numpy path in functions.py (_batched_chunk) costs some thirty array operations per batch,
 * which for a dashboard's few dozen series is most of the function's time. This kernel does the
 * same arithmetic, operation for operation and in the same order, so its answers are bit for bit
 * the numpy path's (and Prometheus'):
 *
 *   first = V[lo], result = V[last] - first
 *   rate/increase: result += V[i] for each i in [lo, last) with V[i+1] < V[i], in time order
 *   dstart = (double)(T[lo] - (te - range)) / 1000, dend = (double)(te - T[last]) / 1000
 *   sampled = (double)(T[last] - T[lo]) / 1000, avg = sampled / (cnt - 1)
 *   dstart >= avg * 1.1 -> avg / 2
 *   rate/increase: dz = first / result * sampled; result > 0 && first >= 0 && dz < dstart -> dz
 *   dend >= avg * 1.1 -> avg / 2
 *   factor = (sampled + dstart + dend) / sampled; rate: factor /= range seconds
 *   out = result * factor, present where the window holds at least two samples
 *
 * extrapolated(T, V, off, lens, lo, hi, te, range_ms, kind, range_s, out, ok)
 *   T     int64   [M]      timestamps of the batch's series, concatenated
 *   V     float64 [M]      their values
 *   off   int64   [N]      where each series starts in T/V
 *   lens  int64   [N]      its number of samples
 *   lo,hi int64   [N x S]  each step's window [lo, hi) as indices into the series
 *   te    int64   [S]      each step's window end (ms)
 *   kind  int              0 rate, 1 increase, 2 delta
 *   out   float64 [N x S]  written; NaN where not present
 *   ok    uint8   [N x S]  written; 1 where present
 *
 * Every index is checked against its series before use (a ValueError names the first bad one),
 * so no input reads outside the arrays. The GIL is released for large batches.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define GIL_RELEASE_CELLS 8192

typedef struct {
    Py_buffer b;
    int held;
} Buf;

static int get_buf(PyObject *o, Buf *x, Py_ssize_t item, int writable, const char *what) {
    if (PyObject_GetBuffer(o, &x->b, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    x->held = 1;
    if (x->b.itemsize != item || x->b.len % item) {
        PyErr_Format(PyExc_ValueError, "%s: items of %zd bytes expected", what, item);
        return -1;
    }
    return 0;
}

static void rel(Buf *x) {
    if (x->held) PyBuffer_Release(&x->b);
    x->held = 0;
}

typedef struct {
    const int64_t *T, *off, *lens, *lo, *hi, *te;
    const double *V;
    double *out;
    uint8_t *ok;
    Py_ssize_t N, S;
    int64_t range_ms;
    int kind;
    double range_s;
} Work;

static void run(const Work *w) {
    const double *V = w->V;
    const int64_t *T = w->T;
    for (Py_ssize_t i = 0; i < w->N; i++) {
        const int64_t base = w->off[i];
        for (Py_ssize_t j = 0; j < w->S; j++) {
            const Py_ssize_t c = i * w->S + j;
            const int64_t cnt = w->hi[c] - w->lo[c];
            if (cnt < 2) {
                w->out[c] = NAN;
                w->ok[c] = 0;
                continue;
            }
            const int64_t ilo = base + w->lo[c], ilast = base + w->hi[c] - 1;
            const double first = V[ilo];
            double result = V[ilast];
            result -= first;
            if (w->kind != 2) {
                for (int64_t k = ilo; k < ilast; k++) {
                    if (V[k + 1] < V[k]) result += V[k];
                }
            }
            const int64_t ft = T[ilo], lt = T[ilast], te = w->te[j];
            double dstart = (double)(ft - (te - w->range_ms));
            dstart /= 1000.0;
            double dend = (double)(te - lt);
            dend /= 1000.0;
            double sampled = (double)(lt - ft);
            sampled /= 1000.0;
            const double avg = sampled / (double)(cnt - 1);
            const double half = avg / 2;
            const double thr = avg * 1.1;
            if (dstart >= thr) dstart = half;
            if (w->kind != 2) {
                double dz = first / result;
                dz *= sampled;
                if (result > 0 && first >= 0 && dz < dstart) dstart = dz;
            }
            if (dend >= thr) dend = half;
            double factor = sampled + dstart;
            factor += dend;
            factor /= sampled;
            if (w->kind == 0) factor /= w->range_s;
            w->out[c] = result * factor;
            w->ok[c] = 1;
        }
    }
}

static PyObject *py_extrapolated(PyObject *self, PyObject *args) {
    PyObject *T, *V, *off, *lens, *lo, *hi, *te, *out, *ok;
    long long range_ms;
    int kind;
    double range_s;
    if (!PyArg_ParseTuple(args, "OOOOOOOLidOO", &T, &V, &off, &lens, &lo, &hi, &te, &range_ms, &kind, &range_s,
                          &out, &ok))
        return NULL;
    Buf bT = {0}, bV = {0}, boff = {0}, blens = {0}, blo = {0}, bhi = {0}, bte = {0}, bout = {0}, bok = {0};
    PyObject *ret = NULL;
    if (get_buf(T, &bT, 8, 0, "T") < 0 || get_buf(V, &bV, 8, 0, "V") < 0 || get_buf(off, &boff, 8, 0, "off") < 0 ||
        get_buf(lens, &blens, 8, 0, "lens") < 0 || get_buf(lo, &blo, 8, 0, "lo") < 0 ||
        get_buf(hi, &bhi, 8, 0, "hi") < 0 || get_buf(te, &bte, 8, 0, "te") < 0 ||
        get_buf(out, &bout, 8, 1, "out") < 0 || get_buf(ok, &bok, 1, 1, "ok") < 0)
        goto done;
    if (kind < 0 || kind > 2) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0 (rate), 1 (increase) or 2 (delta)");
        goto done;
    }
    const Py_ssize_t M = bT.b.len / 8, N = boff.b.len / 8, S = bte.b.len / 8;
    if (bV.b.len / 8 != M || blens.b.len / 8 != N || (S > 0 && N > PY_SSIZE_T_MAX / 8 / S) ||
        blo.b.len / 8 != N * S || bhi.b.len / 8 != N * S || bout.b.len / 8 != N * S || bok.b.len != N * S) {
        PyErr_SetString(PyExc_ValueError, "T and V of one length; off and lens of N; lo, hi, out, ok of N x S, te of S");
        goto done;
    }
    Work w = {bT.b.buf, boff.b.buf, blens.b.buf, blo.b.buf, bhi.b.buf, bte.b.buf, bV.b.buf, bout.b.buf, bok.b.buf,
              N, S, (int64_t)range_ms, kind, range_s};
    for (Py_ssize_t i = 0; i < N; i++) {
        if (w.off[i] < 0 || w.lens[i] < 0 || w.off[i] > M - w.lens[i]) {
            PyErr_Format(PyExc_ValueError, "series %zd: samples [%lld, +%lld) outside the %zd given", i,
                         (long long)w.off[i], (long long)w.lens[i], M);
            goto done;
        }
        for (Py_ssize_t j = 0; j < S; j++) {
            const int64_t a = w.lo[i * S + j], b = w.hi[i * S + j];
            if (a < 0 || b < a || b > w.lens[i]) {
                PyErr_Format(PyExc_ValueError, "series %zd step %zd: window [%lld, %lld) outside its %lld samples", i,
                             j, (long long)a, (long long)b, (long long)w.lens[i]);
                goto done;
            }
        }
    }
    if (N * S >= GIL_RELEASE_CELLS) {
        Py_BEGIN_ALLOW_THREADS
        run(&w);
        Py_END_ALLOW_THREADS
    } else {
        run(&w);
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel(&bT); rel(&bV); rel(&boff); rel(&blens); rel(&blo); rel(&bhi); rel(&bte); rel(&bout); rel(&bok);
    return ret;
}

static PyMethodDef methods[] = {
    {"extrapolated", py_extrapolated, METH_VARARGS,
     "extrapolated(T, V, off, lens, lo, hi, te, range_ms, kind, range_s, out, ok): Prometheus' "
     "extrapolatedRate for every series and step (kind 0 rate, 1 increase, 2 delta)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rate", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rate(void) { return PyModule_Create(&module); }
