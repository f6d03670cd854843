/*
 * Replica de-duplication kernels (Thanos pkg/dedup/iter.go, Prometheus
 * storage/merge.go, Thanos pkg/compact/downsample ApplyCounterResets).
 *
 * The penalty walk is inherently sequential (each pick depends on the last),
 * so it lives here rather than in numpy. It reproduces Thanos' *iterator
 * tree* exactly: replicas r0..rk-1 become dedup(dedup(dedup(r0,r1),r2)...),
 * where an inner node's Seek is a loop of its own Next. A flat k-way walk
 * would give different answers for three or more replicas, and the counter
 * error adjustment is applied to both children of every node, so the tree is
 * needed for bit-exact results.
 *
 * Only the CPython C API and the buffer protocol are used (no numpy headers).
 * The Python wrapper (pythanos/dedup/__init__.py) passes contiguous int64 /
 * float64 buffers and preallocated outputs; every function returns the
 * number of samples written. The GIL is released for large inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define GIL_RELEASE_SAMPLES 8192

/* Go int64 arithmetic wraps; C signed overflow is undefined, so go unsigned. */
static inline int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

/* ---------------------------------------------------------------------------------------------
 * Penalty iterator tree.
 *
 * Nodes 0..k-1 are replica leaves (a plain sample iterator; with counter=1 the
 * counterErrAdjustSeriesIterator wrapper: At() = v + err). Nodes k..2k-2 are
 * dedupSeriesIterators: node k+m has a = (m ? k+m-1 : 0), b = m+1.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    /* leaf */
    const int64_t *t;
    const double *v;
    Py_ssize_t n, i;
    double err;
    /* node */
    int leaf;
    int a, b, last;
    int aval, bval, useA;
    int64_t lastT, penA, penB;
} It;

typedef struct {
    It *it;
    int counter;
} Tree;

static int it_next(Tree *tr, int id);

static int64_t it_att(Tree *tr, int id) {
    It *x = &tr->it[id];
    while (!x->leaf) x = &tr->it[x->useA ? x->a : x->b];
    return x->t[x->i];
}

/* At(): the sample of the last picked leaf (value plus its error adjustment). */
static void it_at(Tree *tr, int id, int64_t *t, double *v) {
    It *x = &tr->it[id];
    while (!x->leaf) x = &tr->it[x->last];
    *t = x->t[x->i];
    /* Only the counter wrapper adds: v + 0.0 would turn -0.0 into +0.0 and quiet a
     * signalling NaN such as the stale marker 0x7ff0000000000002. */
    *v = tr->counter ? x->v[x->i] + x->err : x->v[x->i];
}

static void it_adjust(Tree *tr, int id, double last) {
    It *x = &tr->it[id];
    if (x->leaf) {
        if (tr->counter) {
            double cur = x->v[x->i] + x->err;
            if (last > cur) x->err += last - cur;
        }
        return;
    }
    if (x->aval) it_adjust(tr, x->a, last);
    if (x->bval) it_adjust(tr, x->b, last);
}

static int it_seek(Tree *tr, int id, int64_t ts) {
    It *x = &tr->it[id];
    if (x->leaf) {
        if (x->i < 0) x->i = 0;
        while (x->i < x->n && x->t[x->i] < ts) x->i++;
        return x->i < x->n;
    }
    /* dedupSeriesIterator.Seek: repeated Next so that gaps are not skipped. */
    for (;;) {
        int64_t cur = it_att(tr, id);
        if (cur >= ts) return it_seek(tr, x->useA ? x->a : x->b, cur);
        if (!it_next(tr, id)) return 0;
    }
}

#define INITIAL_PENALTY 5000

static int it_next(Tree *tr, int id) {
    It *x = &tr->it[id];
    if (x->leaf) {
        x->i++;
        return x->i < x->n;
    }
    /* The value emitted last, read before stepping (lastFloatVal). */
    int have_last = x->useA ? x->aval : x->bval;
    double last = 0;
    if (have_last) {
        int64_t t_;
        it_at(tr, x->last, &t_, &last);
    }
    int lastUseA = x->useA;
    int ret;

    if (x->aval) x->aval = it_seek(tr, x->a, wrap_add(wrap_add(x->lastT, 1), x->penA));
    if (x->bval) x->bval = it_seek(tr, x->b, wrap_add(wrap_add(x->lastT, 1), x->penB));

    if (!x->aval) {
        x->useA = 0;
        if (x->bval) {
            x->lastT = it_att(tr, x->b);
            x->last = x->b;
            x->penB = 0;
        }
        ret = x->bval;
    } else if (!x->bval) {
        x->useA = 1;
        x->lastT = it_att(tr, x->a);
        x->last = x->a;
        x->penA = 0;
        ret = x->aval;
    } else {
        int64_t ta = it_att(tr, x->a), tb = it_att(tr, x->b);
        x->useA = ta <= tb;
        if (x->useA) {
            x->penB = x->lastT != INT64_MIN ? wrap_add(wrap_sub(ta, x->lastT), wrap_sub(ta, x->lastT)) : INITIAL_PENALTY;
            x->penA = 0;
            x->lastT = ta;
            x->last = x->a;
        } else {
            x->penA = x->lastT != INT64_MIN ? wrap_add(wrap_sub(tb, x->lastT), wrap_sub(tb, x->lastT)) : INITIAL_PENALTY;
            x->penB = 0;
            x->lastT = tb;
            x->last = x->b;
        }
        ret = 1;
    }
    /* Switched replicas: let the counter wrappers catch up with the last value. */
    if (x->useA != lastUseA && have_last) it_adjust(tr, id, last);
    return ret;
}

static Py_ssize_t penalty_run(It *it, int k, int counter, int64_t *to, double *vo) {
    Tree tr = {it, counter};
    for (int m = 0; m + 1 < k; m++) {
        It *x = &it[k + m];
        memset(x, 0, sizeof(*x));
        x->a = m ? k + m - 1 : 0;
        x->b = m + 1;
        x->last = x->a;
        x->useA = 1;
        x->lastT = INT64_MIN;
        x->aval = it_next(&tr, x->a);
        x->bval = it_next(&tr, x->b);
    }
    int root = k == 1 ? 0 : 2 * k - 2;
    Py_ssize_t n = 0;
    while (it_next(&tr, root)) {
        it_at(&tr, root, &to[n], &vo[n]);
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Prometheus chainSampleIterator.Next (ChainedSeriesMerge), including Go's container/heap
 * so that the sample kept among equal timestamps is the one Prometheus keeps.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    const int64_t *t;
    const double *v;
    Py_ssize_t n, i;
} Leaf;

static inline int64_t lt(const Leaf *l) { return l->t[l->i]; }

static void heap_up(Leaf **h, int j) {
    for (;;) {
        int i = (j - 1) / 2;
        if (i == j || !(lt(h[j]) < lt(h[i]))) break;
        Leaf *s = h[i]; h[i] = h[j]; h[j] = s;
        j = i;
    }
}

static void heap_down(Leaf **h, int i, int n) {
    for (;;) {
        int j1 = 2 * i + 1;
        if (j1 >= n || j1 < 0) break;
        int j = j1, j2 = j1 + 1;
        if (j2 < n && lt(h[j2]) < lt(h[j1])) j = j2;
        if (!(lt(h[j]) < lt(h[i]))) break;
        Leaf *s = h[i]; h[i] = h[j]; h[j] = s;
        i = j;
    }
}

static void heap_push(Leaf **h, int *len, Leaf *x) { h[(*len)++] = x; heap_up(h, *len - 1); }

static Leaf *heap_pop(Leaf **h, int *len) {
    int n = *len - 1;
    Leaf *s = h[0]; h[0] = h[n]; h[n] = s;
    heap_down(h, 0, n);
    *len = n;
    return h[n];
}

static Py_ssize_t chain_run(Leaf *ls, Leaf **h, int k, int64_t *to, double *vo) {
    int hl = 0;
    Leaf *curr = &ls[0];
    for (int r = 1; r < k; r++) {
        ls[r].i++;
        if (ls[r].i < ls[r].n) heap_push(h, &hl, &ls[r]);
    }
    int64_t lastT = INT64_MIN;
    Py_ssize_t n = 0;
    for (;;) {
        int64_t currT = 0;
        for (;;) {
            curr->i++;
            if (curr->i >= curr->n) {
                if (hl == 0) return n;
            } else {
                currT = lt(curr);
                if (currT == lastT) continue;
                if (hl == 0) break;
                if (currT < lt(h[0])) break;
                heap_push(h, &hl, curr);
            }
            curr = heap_pop(h, &hl);
            currT = lt(curr);
            if (currT != lastT) break;
        }
        lastT = currT;
        to[n] = currT;
        vo[n] = curr->v[curr->i];
        n++;
    }
}

/* ---------------------------------------------------------------------------------------------
 * ApplyCounterResetsSeriesIterator over one replica: NaNs (stale markers too) are dropped,
 * values become a running total that never decreases, a repeated timestamp only updates the
 * reference value and a sample that goes back in time is skipped.
 * ------------------------------------------------------------------------------------------- */

static Py_ssize_t resets_run(const int64_t *t, const double *v, Py_ssize_t n, int64_t *to, double *vo) {
    Py_ssize_t m = 0;
    int64_t lastT = 0;
    double lastV = 0, total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = v[i];
        if (x != x) continue;
        if (m == 0) {
            lastT = t[i]; lastV = x; total = x;
        } else if (t[i] > lastT) {
            if (x >= lastV) total += x - lastV;
            else total += x;
            lastT = t[i]; lastV = x;
        } else {
            if (t[i] == lastT) lastV = x;
            continue;
        }
        to[m] = lastT;
        vo[m] = total;
        m++;
    }
    return m;
}

/* --- argument plumbing ----------------------------------------------------------------------- */

typedef struct {
    Py_buffer b;
    int ok;
} Buf;

static int get_buf(PyObject *o, Buf *x, Py_ssize_t item, int writable, const char *what) {
    if (PyObject_GetBuffer(o, &x->b, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    x->ok = 1;
    if (x->b.len % item) {
        PyErr_Format(PyExc_TypeError, "%s: buffer length %zd is not a multiple of %zd", what, x->b.len, item);
        return -1;
    }
    return 0;
}

static void rel(Buf *x) {
    if (x->ok) PyBuffer_Release(&x->b);
    x->ok = 0;
}

/* Reads the replica tuples ts, vs into bufs[0..2k); returns k or -1. */
static int get_replicas(PyObject *ts, PyObject *vs, Buf **bufs_out, Py_ssize_t *total) {
    if (!PyTuple_Check(ts) || !PyTuple_Check(vs) || PyTuple_GET_SIZE(ts) != PyTuple_GET_SIZE(vs)) {
        PyErr_SetString(PyExc_TypeError, "ts and vs must be tuples of equal length");
        return -1;
    }
    Py_ssize_t k = PyTuple_GET_SIZE(ts);
    if (k < 1 || k > 100000) {
        PyErr_SetString(PyExc_ValueError, "need 1..100000 replicas");
        return -1;
    }
    Buf *bufs = PyMem_Calloc((size_t)(2 * k), sizeof(Buf));
    if (!bufs) { PyErr_NoMemory(); return -1; }
    *bufs_out = bufs;
    *total = 0;
    for (Py_ssize_t r = 0; r < k; r++) {
        if (get_buf(PyTuple_GET_ITEM(ts, r), &bufs[2 * r], 8, 0, "t") < 0) return -1;
        if (get_buf(PyTuple_GET_ITEM(vs, r), &bufs[2 * r + 1], 8, 0, "v") < 0) return -1;
        if (bufs[2 * r].b.len != bufs[2 * r + 1].b.len) {
            PyErr_Format(PyExc_ValueError, "replica %zd: t and v lengths differ", r);
            return -1;
        }
        *total += bufs[2 * r].b.len / 8;
    }
    return (int)k;
}

static void free_replicas(Buf *bufs, Py_ssize_t k) {
    if (!bufs) return;
    for (Py_ssize_t i = 0; i < 2 * k; i++) rel(&bufs[i]);
    PyMem_Free(bufs);
}

static PyObject *merge(PyObject *args, int chain) {
    PyObject *ts, *vs, *tout, *vout;
    int counter = 0;
    if (chain) {
        if (!PyArg_ParseTuple(args, "OOOO", &ts, &vs, &tout, &vout)) return NULL;
    } else {
        if (!PyArg_ParseTuple(args, "OOpOO", &ts, &vs, &counter, &tout, &vout)) return NULL;
    }
    Buf *bufs = NULL, ot = {0}, ov = {0};
    Py_ssize_t total = 0, n = -1;
    int k = get_replicas(ts, vs, &bufs, &total);
    Py_ssize_t kk = k < 0 ? (bufs ? PyTuple_GET_SIZE(ts) : 0) : k;
    if (k < 0) goto done;
    if (get_buf(tout, &ot, 8, 1, "t_out") < 0 || get_buf(vout, &ov, 8, 1, "v_out") < 0) goto done;
    if (ot.b.len / 8 < total || ov.b.len / 8 < total) {
        PyErr_Format(PyExc_ValueError, "outputs hold fewer than %zd samples", total);
        goto done;
    }
    if (chain) {
        Leaf *ls = PyMem_Calloc((size_t)k, sizeof(Leaf));
        Leaf **h = PyMem_Calloc((size_t)k, sizeof(Leaf *));
        if (!ls || !h) { PyMem_Free(ls); PyMem_Free(h); PyErr_NoMemory(); goto done; }
        for (int r = 0; r < k; r++) {
            ls[r].t = bufs[2 * r].b.buf; ls[r].v = bufs[2 * r + 1].b.buf;
            ls[r].n = bufs[2 * r].b.len / 8; ls[r].i = -1;
        }
        if (total >= GIL_RELEASE_SAMPLES) {
            Py_BEGIN_ALLOW_THREADS
            n = chain_run(ls, h, k, ot.b.buf, ov.b.buf);
            Py_END_ALLOW_THREADS
        } else {
            n = chain_run(ls, h, k, ot.b.buf, ov.b.buf);
        }
        PyMem_Free(ls); PyMem_Free(h);
    } else {
        It *it = PyMem_Calloc((size_t)(2 * k), sizeof(It));
        if (!it) { PyErr_NoMemory(); goto done; }
        for (int r = 0; r < k; r++) {
            it[r].leaf = 1;
            it[r].t = bufs[2 * r].b.buf; it[r].v = bufs[2 * r + 1].b.buf;
            it[r].n = bufs[2 * r].b.len / 8; it[r].i = -1;
        }
        if (total >= GIL_RELEASE_SAMPLES) {
            Py_BEGIN_ALLOW_THREADS
            n = penalty_run(it, k, counter, ot.b.buf, ov.b.buf);
            Py_END_ALLOW_THREADS
        } else {
            n = penalty_run(it, k, counter, ot.b.buf, ov.b.buf);
        }
        PyMem_Free(it);
    }
done:
    free_replicas(bufs, kk);
    rel(&ot); rel(&ov);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyObject *py_penalty(PyObject *self, PyObject *args) { return merge(args, 0); }
static PyObject *py_chain(PyObject *self, PyObject *args) { return merge(args, 1); }

static PyObject *py_counter_resets(PyObject *self, PyObject *args) {
    PyObject *t, *v, *tout, *vout;
    if (!PyArg_ParseTuple(args, "OOOO", &t, &v, &tout, &vout)) return NULL;
    Buf bt = {0}, bv = {0}, ot = {0}, ov = {0};
    Py_ssize_t n = -1;
    if (get_buf(t, &bt, 8, 0, "t") < 0 || get_buf(v, &bv, 8, 0, "v") < 0 ||
        get_buf(tout, &ot, 8, 1, "t_out") < 0 || get_buf(vout, &ov, 8, 1, "v_out") < 0) goto done;
    Py_ssize_t len = bt.b.len / 8;
    if (bv.b.len / 8 != len || ot.b.len / 8 < len || ov.b.len / 8 < len) {
        PyErr_SetString(PyExc_ValueError, "t/v lengths differ or outputs too small");
        goto done;
    }
    if (len >= GIL_RELEASE_SAMPLES) {
        Py_BEGIN_ALLOW_THREADS
        n = resets_run(bt.b.buf, bv.b.buf, len, ot.b.buf, ov.b.buf);
        Py_END_ALLOW_THREADS
    } else {
        n = resets_run(bt.b.buf, bv.b.buf, len, ot.b.buf, ov.b.buf);
    }
done:
    rel(&bt); rel(&bv); rel(&ot); rel(&ov);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

/* ---------------------------------------------------------------------------------------------
 * batch: the querier's whole per-label-set path for many label sets in one call.
 *
 * t, v hold the decoded samples of every replica of every series, replica r in
 * [rb[r], rb[r+1]), series s owning replicas [sr[s], sr[s+1]). Each replica is read as
 * Thanos reads it (never back in time across chunks; with resets, as a running total),
 * cut to [mint, maxt], then the replicas of a series are merged (penalty or chain) into
 * t_out, v_out; series s gets [ob[s], ob[s+1]). t and v are rewritten in place.
 * ------------------------------------------------------------------------------------------- */

static Py_ssize_t monotone_run(int64_t *t, double *v, Py_ssize_t n) {
    if (n == 0) return 0;
    Py_ssize_t m = 1;
    int64_t mx = t[0];
    for (Py_ssize_t i = 1; i < n; i++) {
        if (t[i] > mx) {
            mx = t[i];
            t[m] = t[i];
            v[m] = v[i];
            m++;
        }
    }
    return m;
}

static Py_ssize_t batch_run(int64_t *t, double *v, const int64_t *rb, const int64_t *sr, Py_ssize_t S,
                            int chain, int counter, int resets, int64_t mint, int64_t maxt,
                            int64_t *to, double *vo, int64_t *ob, It *it, Leaf *ls, Leaf **h) {
    Py_ssize_t n = 0;
    for (Py_ssize_t s = 0; s < S; s++) {
        ob[s] = n;
        int k = 0;
        for (int64_t r = sr[s]; r < sr[s + 1]; r++) {
            int64_t *rt = t + rb[r];
            double *rv = v + rb[r];
            Py_ssize_t len = monotone_run(rt, rv, (Py_ssize_t)(rb[r + 1] - rb[r]));
            if (resets) len = resets_run(rt, rv, len, rt, rv);
            Py_ssize_t lo = 0, hi = len;
            while (lo < hi && rt[lo] < mint) lo++;
            while (hi > lo && rt[hi - 1] > maxt) hi--;
            if (chain) {
                ls[k].t = rt + lo; ls[k].v = rv + lo; ls[k].n = hi - lo; ls[k].i = -1;
            } else {
                memset(&it[k], 0, sizeof(It));
                it[k].leaf = 1; it[k].t = rt + lo; it[k].v = rv + lo; it[k].n = hi - lo; it[k].i = -1;
            }
            k++;
        }
        if (k == 1) {  /* a lone replica passes through untouched */
            Py_ssize_t m = chain ? ls[0].n : it[0].n;
            const int64_t *st = chain ? ls[0].t : it[0].t;
            const double *sv = chain ? ls[0].v : it[0].v;
            memcpy(to + n, st, (size_t)m * sizeof(int64_t));
            memcpy(vo + n, sv, (size_t)m * sizeof(double));
            n += m;
        } else if (k > 1) {
            n += chain ? chain_run(ls, h, k, to + n, vo + n) : penalty_run(it, k, counter, to + n, vo + n);
        }
    }
    ob[S] = n;
    return n;
}

static PyObject *py_batch(PyObject *self, PyObject *args) {
    PyObject *t, *v, *rbo, *sro, *tout, *vout, *obo;
    int chain, counter, resets;
    long long mint, maxt;
    if (!PyArg_ParseTuple(args, "OOOOpppLLOOO", &t, &v, &rbo, &sro, &chain, &counter, &resets, &mint, &maxt,
                          &tout, &vout, &obo)) return NULL;
    Buf bt = {0}, bv = {0}, brb = {0}, bsr = {0}, ot = {0}, ov = {0}, bob = {0};
    Py_ssize_t n = -1;
    It *it = NULL;
    Leaf *ls = NULL, **h = NULL;
    if (get_buf(t, &bt, 8, 1, "t") < 0 || get_buf(v, &bv, 8, 1, "v") < 0 || get_buf(rbo, &brb, 8, 0, "rep_bounds") < 0 ||
        get_buf(sro, &bsr, 8, 0, "series_reps") < 0 || get_buf(tout, &ot, 8, 1, "t_out") < 0 ||
        get_buf(vout, &ov, 8, 1, "v_out") < 0 || get_buf(obo, &bob, 8, 1, "out_bounds") < 0) goto done;
    Py_ssize_t N = bt.b.len / 8, R = brb.b.len / 8 - 1, S = bsr.b.len / 8 - 1;
    const int64_t *rb = brb.b.buf, *sr = bsr.b.buf;
    if (bv.b.len / 8 != N || ot.b.len / 8 < N || ov.b.len / 8 < N || R < 0 || S < 0 || bob.b.len / 8 < S + 1) {
        PyErr_SetString(PyExc_ValueError, "batch: buffer sizes do not agree");
        goto done;
    }
    /* every bound checked before any is used: replica spans inside t, series spans inside the replicas */
    if (rb[0] != 0 || rb[R] > N || sr[0] != 0 || sr[S] > R) {
        PyErr_SetString(PyExc_ValueError, "batch: bounds out of range");
        goto done;
    }
    for (Py_ssize_t r = 0; r < R; r++) {
        if (rb[r + 1] < rb[r]) { PyErr_SetString(PyExc_ValueError, "batch: replica bounds decrease"); goto done; }
    }
    int64_t kmax = 1;
    for (Py_ssize_t s = 0; s < S; s++) {
        int64_t k = sr[s + 1] - sr[s];
        if (k < 0) { PyErr_SetString(PyExc_ValueError, "batch: series bounds decrease"); goto done; }
        if (k > kmax) kmax = k;
    }
    if (kmax > 100000) { PyErr_SetString(PyExc_ValueError, "batch: more than 100000 replicas of one series"); goto done; }
    it = PyMem_Calloc((size_t)(2 * kmax), sizeof(It));
    ls = PyMem_Calloc((size_t)kmax, sizeof(Leaf));
    h = PyMem_Calloc((size_t)kmax, sizeof(Leaf *));
    if (!it || !ls || !h) { PyErr_NoMemory(); goto done; }
    if (N >= GIL_RELEASE_SAMPLES) {
        Py_BEGIN_ALLOW_THREADS
        n = batch_run(bt.b.buf, bv.b.buf, rb, sr, S, chain, counter, resets, mint, maxt, ot.b.buf, ov.b.buf,
                      bob.b.buf, it, ls, h);
        Py_END_ALLOW_THREADS
    } else {
        n = batch_run(bt.b.buf, bv.b.buf, rb, sr, S, chain, counter, resets, mint, maxt, ot.b.buf, ov.b.buf,
                      bob.b.buf, it, ls, h);
    }
done:
    PyMem_Free(it); PyMem_Free(ls); PyMem_Free(h);
    rel(&bt); rel(&bv); rel(&brb); rel(&bsr); rel(&ot); rel(&ov); rel(&bob);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"batch", py_batch, METH_VARARGS,
     "batch(t, v, rep_bounds, series_reps, chain, counter, resets, mint, maxt, t_out, v_out, out_bounds) -> n"},
    {"penalty", py_penalty, METH_VARARGS,
     "penalty(ts: tuple, vs: tuple, counter: bool, t_out, v_out) -> n  (Thanos penalty dedup)"},
    {"chain", py_chain, METH_VARARGS, "chain(ts: tuple, vs: tuple, t_out, v_out) -> n  (ChainedSeriesMerge)"},
    {"counter_resets", py_counter_resets, METH_VARARGS,
     "counter_resets(t, v, t_out, v_out) -> n  (ApplyCounterResetsSeriesIterator)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_dedup", "Replica de-duplication kernels (see _dedup.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__dedup(void) { return PyModule_Create(&moddef); }
