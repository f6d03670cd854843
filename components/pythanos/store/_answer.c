/* The store gateway's answer assembled in C: per-series chunk fields joined, and whole
 * SeriesResponse frames built from the series' encoded labels and chunks.
 *
 * Why: a 100k-series answer went through four per-series Python steps (tuples, merge, named
 * tuples, framing) that together cost more than decoding the index. Here each series costs a
 * memcpy. Inputs come from our own decoder, but every length is still checked against overflow
 * and every item's type before it is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int varint_len(uint64_t v) {
    int n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static char *put_varint(char *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (char)((v & 0x7F) | 0x80); v >>= 7; }
    *p++ = (char)v;
    return p;
}

/* a + b, or -1 when it would pass PY_SSIZE_T_MAX */
static Py_ssize_t add_size(Py_ssize_t a, Py_ssize_t b) {
    if (a < 0 || b < 0 || a > PY_SSIZE_T_MAX - b) return -1;
    return a + b;
}

/* join_groups(parts, counts) -> list[bytes]: parts[0:c0] joined, then the next c1, ...; counts is
 * a buffer of int64 summing to len(parts). */
static PyObject *py_join_groups(PyObject *self, PyObject *args) {
    PyObject *parts;
    Py_buffer cb;
    if (!PyArg_ParseTuple(args, "O!y*", &PyList_Type, &parts, &cb)) return NULL;
    PyObject *out = NULL;
    if (cb.len % 8) {
        PyErr_SetString(PyExc_ValueError, "join_groups: counts must be int64");
        goto end;
    }
    const int64_t *counts = cb.buf;
    Py_ssize_t ng = cb.len / 8, np = PyList_GET_SIZE(parts), k = 0;
    for (Py_ssize_t g = 0; g < ng; g++) {
        if (counts[g] < 0 || counts[g] > np - k) {
            PyErr_Format(PyExc_ValueError, "join_groups: group %zd's count %lld runs past the %zd parts",
                         g, (long long)counts[g], np);
            goto end;
        }
        k += (Py_ssize_t)counts[g];
    }
    if (k != np) {
        PyErr_Format(PyExc_ValueError, "join_groups: counts sum to %zd, not %zd parts", k, np);
        goto end;
    }
    out = PyList_New(ng);
    if (!out) goto end;
    k = 0;
    for (Py_ssize_t g = 0; g < ng; g++) {
        Py_ssize_t c = (Py_ssize_t)counts[g], size = 0;
        for (Py_ssize_t i = k; i < k + c; i++) {
            PyObject *b = PyList_GET_ITEM(parts, i);
            if (!PyBytes_Check(b)) {
                PyErr_Format(PyExc_TypeError, "join_groups: part %zd is %.50s, not bytes", i, Py_TYPE(b)->tp_name);
                Py_CLEAR(out);
                goto end;
            }
            if ((size = add_size(size, PyBytes_GET_SIZE(b))) < 0) {
                PyErr_SetString(PyExc_OverflowError, "join_groups: group too large");
                Py_CLEAR(out);
                goto end;
            }
        }
        PyObject *r = PyBytes_FromStringAndSize(NULL, size);
        if (!r) { Py_CLEAR(out); goto end; }
        char *p = PyBytes_AS_STRING(r);
        for (Py_ssize_t i = k; i < k + c; i++) {
            PyObject *b = PyList_GET_ITEM(parts, i);
            memcpy(p, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
            p += PyBytes_GET_SIZE(b);
        }
        PyList_SET_ITEM(out, g, r);
        k += c;
    }
end:
    PyBuffer_Release(&cb);
    return out;
}

/* item i of a list of bytes, or NULL with TypeError */
static PyObject *bytes_at(PyObject *list, Py_ssize_t i, const char *what) {
    PyObject *b = PyList_GET_ITEM(list, i);
    if (!PyBytes_Check(b)) {
        PyErr_Format(PyExc_TypeError, "frames: %s[%zd] is %.50s, not bytes", what, i, Py_TYPE(b)->tp_name);
        return NULL;
    }
    return b;
}

/* frames(labels, chunks, batch) -> list[bytes]: serialized SeriesResponse messages for the series
 * whose thanos.Series bytes are labels[i] + chunks[i] (chunks may be None: labels only). With
 * batch <= 1 one frame per series (``series`` = field 1); else frames of ``batch`` series each in a
 * SeriesBatch (field 4 holding repeated field 1), the last one shorter: as Thanos batches. */
static PyObject *py_frames(PyObject *self, PyObject *args) {
    PyObject *labels, *chunks;
    Py_ssize_t batch;
    if (!PyArg_ParseTuple(args, "O!On", &PyList_Type, &labels, &chunks, &batch)) return NULL;
    if (chunks != Py_None && !PyList_Check(chunks)) {
        PyErr_SetString(PyExc_TypeError, "frames: chunks must be a list or None");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(labels);
    if (chunks != Py_None && PyList_GET_SIZE(chunks) != n) {
        PyErr_SetString(PyExc_ValueError, "frames: labels and chunks differ in length");
        return NULL;
    }
    if (batch < 1) batch = 1;
    Py_ssize_t nf = batch == 1 ? n : (n + batch - 1) / batch;
    PyObject *out = PyList_New(nf);
    if (!out) return NULL;
    for (Py_ssize_t f = 0; f < nf; f++) {
        Py_ssize_t lo = batch == 1 ? f : f * batch;
        Py_ssize_t hi = lo + batch < n ? lo + batch : n;
        Py_ssize_t inner = 0;  /* the bytes of the repeated ``series`` fields */
        for (Py_ssize_t i = lo; i < hi; i++) {
            PyObject *l = bytes_at(labels, i, "labels"), *c = NULL;
            if (!l) goto fail;
            Py_ssize_t s = PyBytes_GET_SIZE(l);
            if (chunks != Py_None) {
                if (!(c = bytes_at(chunks, i, "chunks"))) goto fail;
                s = add_size(s, PyBytes_GET_SIZE(c));
            }
            if (s < 0 || (inner = add_size(inner, add_size(s, 1 + varint_len((uint64_t)s)))) < 0) goto too_large;
        }
        Py_ssize_t total = batch == 1 ? inner : add_size(inner, 1 + varint_len((uint64_t)inner));
        if (total < 0) goto too_large;
        PyObject *r = PyBytes_FromStringAndSize(NULL, total);
        if (!r) goto fail;
        char *p = PyBytes_AS_STRING(r);
        if (batch != 1) { *p++ = 0x22; p = put_varint(p, (uint64_t)inner); }
        for (Py_ssize_t i = lo; i < hi; i++) {
            PyObject *l = PyList_GET_ITEM(labels, i), *c = chunks == Py_None ? NULL : PyList_GET_ITEM(chunks, i);
            Py_ssize_t ls = PyBytes_GET_SIZE(l), cs = c ? PyBytes_GET_SIZE(c) : 0;
            *p++ = 0x0a;
            p = put_varint(p, (uint64_t)(ls + cs));
            memcpy(p, PyBytes_AS_STRING(l), (size_t)ls);
            p += ls;
            if (cs) { memcpy(p, PyBytes_AS_STRING(c), (size_t)cs); p += cs; }
        }
        PyList_SET_ITEM(out, f, r);
    }
    return out;
too_large:
    PyErr_SetString(PyExc_OverflowError, "frames: answer too large");
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"join_groups", py_join_groups, METH_VARARGS,
     "join_groups(parts, counts) -> list[bytes]: consecutive parts joined, counts (int64) per group"},
    {"frames", py_frames, METH_VARARGS,
     "frames(labels, chunks, batch) -> list[bytes]: SeriesResponse frames of Series labels[i] + chunks[i]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_answer", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__answer(void) { return PyModule_Create(&module); }
