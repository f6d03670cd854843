/*
 * topk / bottomk selection exactly as Prometheus v3.9.1 makes it (promql/engine.go aggregationK,
 * promql/functions.go vectorByValueHeap / vectorByReverseValueHeap, Go's container/heap and
 * sort.Sort).
 *
 * Prometheus does not pick "the k largest values, ties to the earlier series": per step and per
 * group it walks the input series in order and keeps a k-element min-heap (topk; a max-heap for
 * bottomk). A series that ties with the heap's root does not replace it, but which of several tied
 * series ends up at the root depends on the heap's shape, so the survivors of a tie at the k-th
 * place are the heap's, not the first ones. The heap walk is reproduced step for step here:
 *
 *   k = min(int64(param), number of input series)  (the caller passes it per step; k < 1 -> none)
 *   group's first sample:      heap.Push
 *   len(heap) < k:             heap.Push
 *   topk:    heap[0].F < F || (isNaN(heap[0].F) && !isNaN(F))  -> heap[0] = s; if k > 1 heap.Fix(0)
 *   bottomk: heap[0].F > F || (isNaN(heap[0].F) && !isNaN(F))  -> same on the reverse heap
 *   Less(i, j) = isNaN(vi) || vi < vj   (reverse heap: isNaN(vi) || vi > vj)
 *
 * For single-step calls the output order is also reproduced: each group's heap is sorted with
 * sort.Sort(sort.Reverse(heap)) -- Go's pdqsort (sort/zsortinterface.go, insertion sort up to 12
 * elements, deterministic xorshift in breakPatterns) -- and groups follow in the order of their
 * first series in the input.
 *
 * select(V, P, gid, G, k, bottom, sel_out, order_out) -> number of rows written to order_out
 *   V      float64 [N x S] C-contiguous values
 *   P      uint8   [N x S] 1 where the series has a sample at the step
 *   gid    int64   [N]     group of each series, 0 <= gid < G, groups numbered by first appearance
 *   k      int64   [S]     k per step (already int64(param))
 *   bottom int             0 topk, 1 bottomk
 *   sel_out   uint8 [N x S] writable, zeroed by the caller; 1 where the series is kept
 *   order_out int64 [N]     writable; with S == 1 the kept rows in Prometheus' output order
 *
 * Only the CPython C API and the buffer protocol are used (no numpy headers). The GIL is released
 * for large inputs. Blocks of columns are walked row by row, so the input is read in memory order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define GIL_RELEASE_SAMPLES 8192
#define BLOCK_BYTES (1 << 21)

typedef struct {
    double v;
    int64_t r;
} Ent;

/* vectorByValueHeap.Less (bot = 0) / vectorByReverseValueHeap.Less (bot = 1). */
static inline int less(const Ent *a, const Ent *b, int bot) {
    if (isnan(a->v)) return 1;
    return bot ? a->v > b->v : a->v < b->v;
}

static inline void swap(Ent *h, Py_ssize_t i, Py_ssize_t j) {
    Ent t = h[i];
    h[i] = h[j];
    h[j] = t;
}

/* --- container/heap ------------------------------------------------------------------------ */

static void heap_up(Ent *h, Py_ssize_t j, int bot) {
    for (;;) {
        Py_ssize_t i = (j - 1) / 2; /* parent; Go and C both truncate toward zero, so j = 0 -> 0 */
        if (i == j || !less(&h[j], &h[i], bot)) break;
        swap(h, i, j);
        j = i;
    }
}

static int heap_down(Ent *h, Py_ssize_t i0, Py_ssize_t n, int bot) {
    Py_ssize_t i = i0;
    for (;;) {
        Py_ssize_t j1 = 2 * i + 1;
        if (j1 >= n || j1 < 0) break;
        Py_ssize_t j = j1;
        Py_ssize_t j2 = j1 + 1;
        if (j2 < n && less(&h[j2], &h[j1], bot)) j = j2;
        if (!less(&h[j], &h[i], bot)) break;
        swap(h, i, j);
        i = j;
    }
    return i > i0;
}

/* --- sort.Sort(sort.Reverse(heap)): Go's pdqsort with Less'(i, j) = Less(j, i) ----------------- */

#define RLESS(i, j) less(&d[(j)], &d[(i)], bot)

enum { UNKNOWN_HINT = 0, INCREASING_HINT = 1, DECREASING_HINT = 2 };

static int bits_len(uint64_t x) {
    int n = 0;
    while (x) {
        n++;
        x >>= 1;
    }
    return n;
}

static void insertion_sort(Ent *d, Py_ssize_t a, Py_ssize_t b, int bot) {
    for (Py_ssize_t i = a + 1; i < b; i++)
        for (Py_ssize_t j = i; j > a && RLESS(j, j - 1); j--) swap(d, j, j - 1);
}

static void sift_down(Ent *d, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t first, int bot) {
    Py_ssize_t root = lo;
    for (;;) {
        Py_ssize_t child = 2 * root + 1;
        if (child >= hi) break;
        if (child + 1 < hi && RLESS(first + child, first + child + 1)) child++;
        if (!RLESS(first + root, first + child)) return;
        swap(d, first + root, first + child);
        root = child;
    }
}

static void heap_sort(Ent *d, Py_ssize_t a, Py_ssize_t b, int bot) {
    Py_ssize_t first = a, lo = 0, hi = b - a;
    for (Py_ssize_t i = (hi - 1) / 2; i >= 0; i--) sift_down(d, i, hi, first, bot);
    for (Py_ssize_t i = hi - 1; i >= 0; i--) {
        swap(d, first, first + i);
        sift_down(d, lo, i, first, bot);
    }
}

static Py_ssize_t partition(Ent *d, Py_ssize_t a, Py_ssize_t b, Py_ssize_t pivot, int *already, int bot) {
    swap(d, a, pivot);
    Py_ssize_t i = a + 1, j = b - 1;
    while (i <= j && RLESS(i, a)) i++;
    while (i <= j && !RLESS(j, a)) j--;
    if (i > j) {
        swap(d, j, a);
        *already = 1;
        return j;
    }
    swap(d, i, j);
    i++;
    j--;
    for (;;) {
        while (i <= j && RLESS(i, a)) i++;
        while (i <= j && !RLESS(j, a)) j--;
        if (i > j) break;
        swap(d, i, j);
        i++;
        j--;
    }
    swap(d, j, a);
    *already = 0;
    return j;
}

static Py_ssize_t partition_equal(Ent *d, Py_ssize_t a, Py_ssize_t b, Py_ssize_t pivot, int bot) {
    swap(d, a, pivot);
    Py_ssize_t i = a + 1, j = b - 1;
    for (;;) {
        while (i <= j && !RLESS(a, i)) i++;
        while (i <= j && RLESS(a, j)) j--;
        if (i > j) break;
        swap(d, i, j);
        i++;
        j--;
    }
    return i;
}

static int partial_insertion_sort(Ent *d, Py_ssize_t a, Py_ssize_t b, int bot) {
    const int maxSteps = 5;
    const Py_ssize_t shortestShifting = 50;
    Py_ssize_t i = a + 1;
    for (int step = 0; step < maxSteps; step++) {
        while (i < b && !RLESS(i, i - 1)) i++;
        if (i == b) return 1;
        if (b - a < shortestShifting) return 0;
        swap(d, i, i - 1);
        if (i - a >= 2) {
            for (Py_ssize_t j = i - 1; j >= 1; j--) {
                if (!RLESS(j, j - 1)) break;
                swap(d, j, j - 1);
            }
        }
        if (b - i >= 2) {
            for (Py_ssize_t j = i + 1; j < b; j++) {
                if (!RLESS(j, j - 1)) break;
                swap(d, j, j - 1);
            }
        }
    }
    return 0;
}

static void break_patterns(Ent *d, Py_ssize_t a, Py_ssize_t b, int bot) {
    Py_ssize_t length = b - a;
    if (length >= 8) {
        uint64_t random = (uint64_t)length;
        uint64_t modulus = (uint64_t)1 << bits_len((uint64_t)length);
        for (Py_ssize_t idx = a + (length / 4) * 2 - 1; idx <= a + (length / 4) * 2 + 1; idx++) {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            Py_ssize_t other = (Py_ssize_t)(random & (modulus - 1));
            if (other >= length) other -= length;
            swap(d, idx, a + other);
        }
    }
}

static void order2(Ent *d, Py_ssize_t *a, Py_ssize_t *b, int *swaps, int bot) {
    if (RLESS(*b, *a)) {
        Py_ssize_t t = *a;
        *a = *b;
        *b = t;
        (*swaps)++;
    }
}

static Py_ssize_t median(Ent *d, Py_ssize_t a, Py_ssize_t b, Py_ssize_t c, int *swaps, int bot) {
    order2(d, &a, &b, swaps, bot);
    order2(d, &b, &c, swaps, bot);
    order2(d, &a, &b, swaps, bot);
    return b;
}

static Py_ssize_t choose_pivot(Ent *d, Py_ssize_t a, Py_ssize_t b, int *hint, int bot) {
    const Py_ssize_t shortestNinther = 50;
    const int maxSwaps = 4 * 3;
    Py_ssize_t l = b - a;
    int swaps = 0;
    Py_ssize_t i = a + l / 4 * 1, j = a + l / 4 * 2, k = a + l / 4 * 3;
    if (l >= 8) {
        if (l >= shortestNinther) {
            i = median(d, i - 1, i, i + 1, &swaps, bot);
            j = median(d, j - 1, j, j + 1, &swaps, bot);
            k = median(d, k - 1, k, k + 1, &swaps, bot);
        }
        j = median(d, i, j, k, &swaps, bot);
    }
    *hint = swaps == 0 ? INCREASING_HINT : swaps == maxSwaps ? DECREASING_HINT : UNKNOWN_HINT;
    return j;
}

static void reverse_range(Ent *d, Py_ssize_t a, Py_ssize_t b) {
    Py_ssize_t i = a, j = b - 1;
    while (i < j) {
        swap(d, i, j);
        i++;
        j--;
    }
}

static void pdqsort(Ent *d, Py_ssize_t a, Py_ssize_t b, int limit, int bot) {
    const Py_ssize_t maxInsertion = 12;
    int wasBalanced = 1, wasPartitioned = 1;
    for (;;) {
        Py_ssize_t length = b - a;
        if (length <= maxInsertion) {
            insertion_sort(d, a, b, bot);
            return;
        }
        if (limit == 0) {
            heap_sort(d, a, b, bot);
            return;
        }
        if (!wasBalanced) {
            break_patterns(d, a, b, bot);
            limit--;
        }
        int hint;
        Py_ssize_t pivot = choose_pivot(d, a, b, &hint, bot);
        if (hint == DECREASING_HINT) {
            reverse_range(d, a, b);
            pivot = (b - 1) - (pivot - a);
            hint = INCREASING_HINT;
        }
        if (wasBalanced && wasPartitioned && hint == INCREASING_HINT) {
            if (partial_insertion_sort(d, a, b, bot)) return;
        }
        if (a > 0 && !RLESS(a - 1, pivot)) {
            a = partition_equal(d, a, b, pivot, bot);
            continue;
        }
        int already;
        Py_ssize_t mid = partition(d, a, b, pivot, &already, bot);
        wasPartitioned = already;
        Py_ssize_t leftLen = mid - a, rightLen = b - mid;
        Py_ssize_t balanceThreshold = length / 8;
        if (leftLen < rightLen) {
            wasBalanced = leftLen >= balanceThreshold;
            pdqsort(d, a, mid, limit, bot);
            a = mid + 1;
        } else {
            wasBalanced = rightLen >= balanceThreshold;
            pdqsort(d, mid + 1, b, limit, bot);
            b = mid;
        }
    }
}

static void go_sort_reverse(Ent *d, Py_ssize_t n, int bot) {
    if (n <= 1) return;
    pdqsort(d, 0, n, bits_len((uint64_t)n), bot);
}

/* --- the walk ------------------------------------------------------------------------------- */

/* Columns are walked in blocks, row by row: the series' values are read in memory order and each
 * (step, group) keeps its own heap. top[] caches each heap's root once the heap is full (NaN while it
 * is filling, +-Inf for a step with k < 1), so the common case -- a sample that does not beat the
 * root -- is one comparison. */
typedef struct {
    const double *V;
    const uint8_t *P;
    const int64_t *gid;
    const int64_t *k;
    Py_ssize_t N, S, G;
    int bot;
    uint8_t *sel;
    int64_t *order;
    /* scratch */
    Py_ssize_t Bmax;   /* columns per block */
    Py_ssize_t hcap;   /* heap entries available per block (>= N) */
    Ent *heap;         /* [hcap] */
    Py_ssize_t *size;  /* [G] series per group */
    int64_t *kk;       /* [Bmax] k of each column of the block, capped at N */
    Py_ssize_t *off;   /* [G x Bmax] heap of (group, column) at heap[off] */
    Py_ssize_t *cnt;   /* [G x Bmax] its length */
    double *top;       /* [G x Bmax] its root when full, else NaN; +-Inf when the column has k < 1 */
} Work;

static void slow(Work *w, Py_ssize_t gb, int64_t k, double v, int64_t r) {
    const int bot = w->bot;
    Ent *h = w->heap + w->off[gb];
    Py_ssize_t n = w->cnt[gb];
    if ((int64_t)n < k) { /* includes the group's first sample */
        h[n].v = v;
        h[n].r = r;
        w->cnt[gb] = ++n;
        heap_up(h, n - 1, bot);
        w->top[gb] = (int64_t)n == k ? h[0].v : NAN;
        return;
    }
    double top = h[0].v;
    int better = bot ? top > v : top < v;
    if (better || (isnan(top) && !isnan(v))) {
        h[0].v = v;
        h[0].r = r;
        if (k > 1) heap_down(h, 0, n, bot); /* heap.Fix(0): down, else up (a no-op at the root) */
    }
    w->top[gb] = h[0].v;
}

static Py_ssize_t run(Work *w) {
    const Py_ssize_t N = w->N, S = w->S, G = w->G, Bm = w->Bmax;
    const int bot = w->bot;
    const double never = bot ? -INFINITY : INFINITY; /* a root nothing beats */
    Py_ssize_t nout = 0;
    for (Py_ssize_t g = 0; g < G; g++) w->size[g] = 0;
    for (Py_ssize_t r = 0; r < N; r++) w->size[w->gid[r]]++;

    for (Py_ssize_t c0 = 0; c0 < S;) {
        /* Lay out the block's heaps: capacity min(k, group size) per (group, column). */
        Py_ssize_t nb = 0, used = 0;
        while (c0 + nb < S && nb < Bm) {
            int64_t k = w->k[c0 + nb];
            if (k > (int64_t)N) k = (int64_t)N;
            Py_ssize_t need = 0;
            if (k >= 1)
                for (Py_ssize_t g = 0; g < G; g++) need += (int64_t)w->size[g] < k ? w->size[g] : (Py_ssize_t)k;
            if (nb > 0 && used + need > w->hcap) break;
            w->kk[nb] = k;
            for (Py_ssize_t g = 0; g < G; g++) {
                Py_ssize_t gb = g * Bm + nb;
                w->off[gb] = used;
                w->cnt[gb] = 0;
                w->top[gb] = k >= 1 ? NAN : never;
                if (k >= 1) used += (int64_t)w->size[g] < k ? w->size[g] : (Py_ssize_t)k;
            }
            nb++;
        }
        for (Py_ssize_t r = 0; r < N; r++) {
            const double *vr = w->V + r * S + c0;
            const uint8_t *pr = w->P + r * S + c0;
            Py_ssize_t g0 = w->gid[r] * Bm;
            const double *tp = w->top + g0;
            if (bot) {
                for (Py_ssize_t b = 0; b < nb; b++) {
                    double t = tp[b], v = vr[b];
                    if (pr[b] && (t > v || t != t)) slow(w, g0 + b, w->kk[b], v, r);
                }
            } else {
                for (Py_ssize_t b = 0; b < nb; b++) {
                    double t = tp[b], v = vr[b];
                    if (pr[b] && (t < v || t != t)) slow(w, g0 + b, w->kk[b], v, r);
                }
            }
        }
        for (Py_ssize_t b = 0; b < nb; b++) {
            Py_ssize_t c = c0 + b;
            for (Py_ssize_t g = 0; g < G; g++) {
                Py_ssize_t gb = g * Bm + b;
                Ent *h = w->heap + w->off[gb];
                Py_ssize_t n = w->cnt[gb];
                if (!n) continue;
                if (S == 1) {
                    go_sort_reverse(h, n, bot);
                    for (Py_ssize_t i = 0; i < n; i++) w->order[nout++] = h[i].r;
                }
                for (Py_ssize_t i = 0; i < n; i++) w->sel[h[i].r * S + c] = 1;
            }
        }
        c0 += nb;
    }
    return nout;
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

static PyObject *py_select(PyObject *self, PyObject *args) {
    PyObject *V, *P, *gid, *k, *sel, *order;
    Py_ssize_t N, S, G;
    int bot;
    if (!PyArg_ParseTuple(args, "OOOnOpOOn", &V, &P, &gid, &G, &k, &bot, &sel, &order, &N)) return NULL;
    Buf bv = {0}, bp = {0}, bg = {0}, bk = {0}, bs = {0}, bo = {0};
    Work w;
    memset(&w, 0, sizeof w);
    Py_ssize_t nout = -1;
    if (get_buf(V, &bv, 8, 0, "V") < 0 || get_buf(P, &bp, 1, 0, "P") < 0 || get_buf(gid, &bg, 8, 0, "gid") < 0 ||
        get_buf(k, &bk, 8, 0, "k") < 0 || get_buf(sel, &bs, 1, 1, "sel_out") < 0 ||
        get_buf(order, &bo, 8, 1, "order_out") < 0)
        goto done;
    if (N < 0 || bg.b.len / 8 != N) {
        PyErr_SetString(PyExc_ValueError, "gid must hold N entries");
        goto done;
    }
    S = bk.b.len / 8;
    /* N * S and every size below must not overflow: checked before use */
    if ((S > 0 && N > PY_SSIZE_T_MAX / 8 / S) || bv.b.len / 8 != N * S || bp.b.len != N * S || bs.b.len != N * S ||
        bo.b.len / 8 < N) {
        PyErr_SetString(PyExc_ValueError, "V, P, sel_out must be N x S, k of length S, order_out of length >= N");
        goto done;
    }
    /* a group per series at most (groups are numbered by first appearance) */
    if (G < 0 || (N > 0 && G < 1) || G > (N > 0 ? N : 1)) {
        PyErr_SetString(PyExc_ValueError, "bad group count");
        goto done;
    }
    const int64_t *gp = bg.b.buf;
    for (Py_ssize_t r = 0; r < N; r++) {
        if (gp[r] < 0 || gp[r] >= G) {
            PyErr_Format(PyExc_ValueError, "gid[%zd] = %lld out of range", r, (long long)gp[r]);
            goto done;
        }
    }
    if (N == 0 || S == 0) {
        nout = 0;
        goto done;
    }
    w.V = bv.b.buf; w.P = bp.b.buf; w.gid = gp; w.k = bk.b.buf;
    w.N = N; w.S = S; w.G = G; w.bot = bot;
    w.sel = bs.b.buf; w.order = bo.b.buf;
    /* Block: per-(group, column) state of ~24 bytes and heaps of at most N entries per column. */
    w.Bmax = BLOCK_BYTES / (G * 3 * 8 + 8);
    if (w.Bmax < 1) w.Bmax = 1;
    if (w.Bmax > S) w.Bmax = S;
    w.hcap = BLOCK_BYTES / (Py_ssize_t)sizeof(Ent);
    if (w.hcap < N) w.hcap = N;
    w.heap = PyMem_Malloc((size_t)w.hcap * sizeof(Ent));
    w.size = PyMem_Malloc((size_t)G * sizeof(Py_ssize_t));
    w.kk = PyMem_Malloc((size_t)w.Bmax * sizeof(int64_t));
    w.off = PyMem_Malloc((size_t)(G * w.Bmax) * sizeof(Py_ssize_t));
    w.cnt = PyMem_Malloc((size_t)(G * w.Bmax) * sizeof(Py_ssize_t));
    w.top = PyMem_Malloc((size_t)(G * w.Bmax) * sizeof(double));
    if (!w.heap || !w.size || !w.kk || !w.off || !w.cnt || !w.top) {
        PyErr_NoMemory();
        goto done;
    }
    if (N * S >= GIL_RELEASE_SAMPLES) {
        Py_BEGIN_ALLOW_THREADS
        nout = run(&w);
        Py_END_ALLOW_THREADS
    } else {
        nout = run(&w);
    }
done:
    PyMem_Free(w.heap); PyMem_Free(w.size); PyMem_Free(w.kk);
    PyMem_Free(w.off); PyMem_Free(w.cnt); PyMem_Free(w.top);
    rel(&bv); rel(&bp); rel(&bg); rel(&bk); rel(&bs); rel(&bo);
    return nout < 0 ? NULL : PyLong_FromSsize_t(nout);
}

/* go_sort_reverse(values, bottom, perm_out): the permutation sort.Sort(sort.Reverse(h)) applies to
 * h = values (a heap or not), written to perm_out (int64, len(values)). For the tests. */
static PyObject *py_sort_reverse(PyObject *self, PyObject *args) {
    PyObject *V, *perm;
    int bot;
    if (!PyArg_ParseTuple(args, "OpO", &V, &bot, &perm)) return NULL;
    Buf bv = {0}, bo = {0};
    PyObject *ret = NULL;
    if (get_buf(V, &bv, 8, 0, "values") < 0 || get_buf(perm, &bo, 8, 1, "perm_out") < 0) goto done;
    Py_ssize_t n = bv.b.len / 8;
    if (bo.b.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "perm_out must have len(values) entries");
        goto done;
    }
    Ent *d = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Ent));
    if (!d) { PyErr_NoMemory(); goto done; }
    const double *v = bv.b.buf;
    for (Py_ssize_t i = 0; i < n; i++) { d[i].v = v[i]; d[i].r = i; }
    go_sort_reverse(d, n, bot);
    int64_t *o = bo.b.buf;
    for (Py_ssize_t i = 0; i < n; i++) o[i] = d[i].r;
    PyMem_Free(d);
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel(&bv); rel(&bo);
    return ret;
}

static PyMethodDef methods[] = {
    {"select", py_select, METH_VARARGS,
     "select(V, P, gid, G, k, bottom, sel_out, order_out, N) -> n_order  (Prometheus topk/bottomk heap walk)"},
    {"sort_reverse", py_sort_reverse, METH_VARARGS,
     "sort_reverse(values, bottom, perm_out)  (Go sort.Sort(sort.Reverse(vectorBy[Reverse]ValueHeap)))"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_topk", "Prometheus topk/bottomk selection kernel (see _topk.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__topk(void) { return PyModule_Create(&moddef); }
