/*
 * Replica de-duplication kernels (Thanos pkg/dedup/iter.go, Prometheus
 * storage/merge.go, Thanos pkg/compact/downsample ApplyCounterResets).
 *
 * Penalty merge. Thanos merges k replicas with the *iterator tree*
 * dedup(dedup(dedup(r0,r1),r2)...): node m = dedup(node m-1, replica m), where
 * an inner node's Seek is a loop of its own Next, and the counter error
 * adjustment reaches every live replica below the node that switched. A flat
 * k-way walk gives other answers for three or more replicas, so the answers
 * here are the tree's, sample for sample and bit for bit. Walking the tree as
 * Go does costs O(k) per sample and more (every At() walks down the spine,
 * every Seek re-runs Next), so 2,000 replicas of one series took minutes.
 *
 * What makes it cheap: a node that emitted its A side's sample ("steady") just
 * passes A's next sample on unless its own replica has a sample before it
 * (after its penalty seek). Consecutive steady nodes form a *chain* that moves in
 * lockstep: one sample of the chain's source goes through all of them, all of
 * them seek their replica to the same kind of target, and the first node whose
 * replica is earlier takes over. A segment tree over the nodes holds each steady
 * node's replica position and seek target, so one chain step costs O(log k) plus
 * O(log k) per replica that moves and per node that switches; nodes that follow
 * their own replica ("non-steady") cost O(1) per sample they emit. The whole
 * merge is O(n log k) for n samples. The counter adjustment (rate & co) costs
 * O(log k) per live replica whose value it raises (a second segment tree over
 * the leaves finds them); Thanos applies it to every live replica below the
 * switching node, so crafted counter data can still cost O(k log k) per switch,
 * which the deadline bounds. Nodes call each other through an explicit stack
 * (no C recursion k deep). Two replicas (the usual HA pair) take a plain loop,
 * and for a few replicas (up to 16) the trees are plain arrays, scanned.
 *
 * Timestamps must lie within +-2^60 ms (36 million years), so that no penalty
 * arithmetic wraps: Thanos' Go code wraps there and loops forever on a sample
 * at the int64 maximum; this kernel raises ValueError instead.
 *
 * Every entry point takes an optional deadline (time.monotonic() seconds); the
 * work stops when it passes and DeadlineExceeded (a TimeoutError) is raised.
 *
 * Only the public CPython API and the buffer protocol are used (no numpy
 * headers). The Python wrapper (pythanos/dedup/__init__.py) passes contiguous
 * int64 / float64 buffers and preallocated outputs; every function returns the
 * number of samples written. The GIL is released for large inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define GIL_RELEASE_SAMPLES 8192
#define MAX_REPLICAS 100000
#define TS_LIMIT ((int64_t)1 << 60)            /* |t| <= 2^60: no penalty arithmetic wraps */
#define KEY_INF ((int64_t)13 << 59)            /* > every seek target (< 5 * 2^60 + 2), and
                                                  KEY_INF - target fits in int64 */
#define INITIAL_PENALTY 5000
#define CHECK_EVERY 4096                       /* work units between deadline checks */
#define CTREE_MIN_REPLICAS 16                  /* fewer: the counter adjustment walks the leaves */
#define SMALL_TREE 16                          /* nodes tree of at most this size: arrays, scanned */

static PyObject *DeadlineExceeded;

/* ---------------------------------------------------------------------------------------------
 * Deadline
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    double at;      /* time.monotonic() seconds; <= 0: none */
    uint64_t work;  /* units since the last check */
    int passed;
} Deadline;

static double mono_now(void) {
#ifdef CLOCK_MONOTONIC
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#endif
    return 0.0;
}

/* 1 when the deadline has passed (checked every CHECK_EVERY units of work). */
static inline int dl_tick(Deadline *d, uint64_t units) {
    if (d->at <= 0) return 0;
    d->work += units;
    if (d->work < CHECK_EVERY) return d->passed;
    d->work = 0;
    if (mono_now() > d->at) d->passed = 1;
    return d->passed;
}

static inline int dl_now(Deadline *d) {
    if (d->at > 0 && mono_now() > d->at) d->passed = 1;
    return d->passed;
}

/* Go int64 arithmetic wraps; C signed overflow is undefined, so go unsigned where it matters. */
static inline int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

/* ---------------------------------------------------------------------------------------------
 * The penalty engine.
 *
 * Leaves 0..k-1 are the replicas (with counter=1 the counterErrAdjustSeriesIterator wrapper:
 * value = v + err). Node m (1..k-1) is dedupSeriesIterator(A = node m-1, or leaf 0 for m = 1;
 * B = leaf m); node k-1 is the root. Leaves hold strictly increasing timestamps (the callers
 * keep only samples later than every earlier one: the only ones a forward-only seek can land
 * on), so every node's output is strictly increasing too.
 *
 * A node is *steady* when it emitted its A side's current sample (useA, penA = 0). Its next Next
 * then takes exactly A's next sample, unless B, sought to lastT + 1 + penB, is earlier. Maximal
 * runs of steady nodes are chains [bottom, top]; the chain's current sample (time, leaf) is kept
 * at its top; the node below the bottom (non-steady, or leaf 0) is its source. Per steady node
 * the tree over nodes keeps key = B's current time (KEY_INF when B is exhausted) and tgt = the
 * target of B's next seek.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    const int64_t *t;
    const double *v;
    Py_ssize_t n, i;
    double err;
} Leaf;

typedef struct {
    int64_t lastT, penA, penB;
    int32_t cur; /* leaf of the node's current sample */
    uint8_t useA, aval, bval, steady;
} Node;

enum { F_NEXT = 0, F_SEEK = 1 };

typedef struct {
    int32_t z, x;
    uint8_t kind, state, have_last, last_useA;
    int64_t target, L;
    double last;
} Frame;

typedef struct {
    int k, counter;
    Leaf *leaf;     /* [k] */
    Node *node;     /* [k], node 0 unused */
    int32_t *bottom, *top, *topcur; /* [k] chain ends; topcur at a chain's top */
    int64_t *topL;  /* [k] chain's current time, at its top */
    /* tree over node positions p = z - 1, z = 1..k-1 */
    int sz;         /* leaves of the tree (power of two >= k - 1) */
    int64_t *mk, *md, *lz; /* [2 sz] min key, min key - tgt, lazy tgt */
    uint8_t *hz;    /* [2 sz] lazy tag present */
    int64_t *key, *tgt; /* [sz] */
    /* counter: tree over leaves of their current value (v + err; +inf when exhausted or NaN) */
    int csz;
    double *cv;     /* [2 csz] */
    Frame *stk;     /* [2 k + 4] */
    Deadline *dl;
} Eng;

static inline double leaf_value(const Eng *e, int j) {
    const Leaf *l = &e->leaf[j];
    /* Only the counter wrapper adds: v + 0.0 would turn -0.0 into +0.0 and quiet a
     * signalling NaN such as the stale marker 0x7ff0000000000002. */
    return e->counter ? l->v[l->i] + l->err : l->v[l->i];
}

/* --- counter tree ---------------------------------------------------------------------------- */

static inline double cval(const Eng *e, int j) {
    const Leaf *l = &e->leaf[j];
    if (l->i < 0 || l->i >= l->n) return INFINITY;
    double c = l->v[l->i] + l->err;
    return c != c ? INFINITY : c; /* last > NaN is false: never adjusted */
}

static void ctree_update(Eng *e, int j) {
    int nd = e->csz + j;
    e->cv[nd] = cval(e, j);
    for (nd >>= 1; nd; nd >>= 1) {
        double a = e->cv[2 * nd], b = e->cv[2 * nd + 1];
        e->cv[nd] = a < b ? a : b;
    }
}

/* counterErrAdjustSeriesIterator.adjustAtValue on every live leaf j <= z whose value is below
 * last: err += last - (v + err). */
static void cadjust(Eng *e, int nd, int nl, int nr, int z, double last) {
    if (nl > z || !(e->cv[nd] < last)) return;
    if (nd >= e->csz) {
        int j = nd - e->csz;
        Leaf *l = &e->leaf[j];
        double cur = l->v[l->i] + l->err;
        if (last > cur) l->err += last - cur;
        e->cv[nd] = cval(e, j);
        return;
    }
    int mid = (nl + nr) / 2;
    cadjust(e, 2 * nd, nl, mid, z, last);
    cadjust(e, 2 * nd + 1, mid + 1, nr, z, last);
    double a = e->cv[2 * nd], b = e->cv[2 * nd + 1];
    e->cv[nd] = a < b ? a : b;
}

static void adjust(Eng *e, int z, double last) {
    if (!e->counter || last != last) return;
    if (e->csz) {
        cadjust(e, 1, 0, e->csz - 1, z, last);
        return;
    }
    for (int j = 0; j <= z; j++) { /* few replicas: no tree */
        Leaf *l = &e->leaf[j];
        if (l->i < 0 || l->i >= l->n) continue;
        double cur = l->v[l->i] + l->err;
        if (last > cur) l->err += last - cur;
    }
}

/* --- leaves ---------------------------------------------------------------------------------- */

/* Seek: the first sample at or after the current one with t >= x (galloping search). */
static int leaf_seek(Eng *e, int j, int64_t x) {
    Leaf *l = &e->leaf[j];
    Py_ssize_t i = l->i < 0 ? 0 : l->i, n = l->n;
    if (i >= n) return 0;
    if (l->t[i] < x) {
        Py_ssize_t lo = i, step = 1; /* t[lo] < x */
        while (lo + step < n && l->t[lo + step] < x) {
            lo += step;
            step <<= 1;
        }
        Py_ssize_t hi = lo + step < n ? lo + step : n; /* t[hi] >= x or hi == n */
        while (hi - lo > 1) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (l->t[mid] < x) lo = mid;
            else hi = mid;
        }
        i = hi;
    }
    if (i != l->i) {
        l->i = i;
        if (e->csz) ctree_update(e, j);
    }
    return i < n;
}

static inline int64_t leaf_t(const Eng *e, int j) { return e->leaf[j].t[e->leaf[j].i]; }

/* --- tree over nodes ------------------------------------------------------------------------- */

static inline void t_apply(Eng *e, int nd, int64_t T) {
    e->md[nd] = e->mk[nd] < KEY_INF ? e->mk[nd] - T : KEY_INF;
    if (nd >= e->sz) {
        e->tgt[nd - e->sz] = T;
    } else {
        e->lz[nd] = T;
        e->hz[nd] = 1;
    }
}

static inline void t_push(Eng *e, int nd) {
    if (e->hz[nd]) {
        t_apply(e, 2 * nd, e->lz[nd]);
        t_apply(e, 2 * nd + 1, e->lz[nd]);
        e->hz[nd] = 0;
    }
}

static inline void t_pull(Eng *e, int nd) {
    int64_t a = e->mk[2 * nd], b = e->mk[2 * nd + 1];
    e->mk[nd] = a < b ? a : b;
    a = e->md[2 * nd];
    b = e->md[2 * nd + 1];
    e->md[nd] = a < b ? a : b;
}

static inline void t_leaf(Eng *e, int p, int64_t key, int64_t tgt, int active) {
    int nd = e->sz + p;
    e->key[p] = key;
    e->tgt[p] = tgt;
    e->mk[nd] = active && key < KEY_INF ? key : KEY_INF;
    e->md[nd] = e->mk[nd] < KEY_INF ? key - tgt : KEY_INF;
}

static void t_set(Eng *e, int nd, int nl, int nr, int p, int64_t key, int64_t tgt, int active) {
    if (e->sz <= SMALL_TREE) { /* few nodes: plain arrays, scanned */
        e->key[p] = active ? key : KEY_INF;
        e->tgt[p] = tgt;
        return;
    }
    if (nd >= e->sz) {
        t_leaf(e, p, key, tgt, active);
        return;
    }
    t_push(e, nd);
    int mid = (nl + nr) / 2;
    if (p <= mid) t_set(e, 2 * nd, nl, mid, p, key, tgt, active);
    else t_set(e, 2 * nd + 1, mid + 1, nr, p, key, tgt, active);
    t_pull(e, nd);
}

static void t_assign(Eng *e, int nd, int nl, int nr, int l, int r, int64_t T) {
    if (e->sz <= SMALL_TREE) {
        for (int p = l; p <= r; p++) e->tgt[p] = T;
        return;
    }
    if (r < nl || nr < l) return;
    if (l <= nl && nr <= r) {
        t_apply(e, nd, T);
        return;
    }
    t_push(e, nd);
    int mid = (nl + nr) / 2;
    t_assign(e, 2 * nd, nl, mid, l, r, T);
    t_assign(e, 2 * nd + 1, mid + 1, nr, l, r, T);
    t_pull(e, nd);
}

/* Every steady node in [l, r] whose B is before its target seeks it there. */
static void t_reseek(Eng *e, int nd, int nl, int nr, int l, int r) {
    if (e->sz <= SMALL_TREE) {
        for (int p = l; p <= r; p++) {
            if (e->key[p] < e->tgt[p]) { /* inactive nodes and exhausted B's hold KEY_INF */
                int ok = leaf_seek(e, p + 1, e->tgt[p]);
                e->node[p + 1].bval = (uint8_t)ok;
                e->key[p] = ok ? leaf_t(e, p + 1) : KEY_INF;
            }
        }
        return;
    }
    if (r < nl || nr < l || e->md[nd] >= 0) return;
    if (nd >= e->sz) {
        int p = nd - e->sz, z = p + 1;
        int ok = leaf_seek(e, z, e->tgt[p]);
        e->node[z].bval = (uint8_t)ok;
        t_leaf(e, p, ok ? leaf_t(e, z) : KEY_INF, e->tgt[p], 1);
        return;
    }
    t_push(e, nd);
    int mid = (nl + nr) / 2;
    t_reseek(e, 2 * nd, nl, mid, l, r);
    t_reseek(e, 2 * nd + 1, mid + 1, nr, l, r);
    t_pull(e, nd);
}

/* The lowest steady node position in [l, r] with key < x, or -1. */
static int t_first(Eng *e, int nd, int nl, int nr, int l, int r, int64_t x) {
    if (e->sz <= SMALL_TREE) {
        for (int p = l; p <= r; p++)
            if (e->key[p] < x) return p;
        return -1;
    }
    if (r < nl || nr < l || e->mk[nd] >= x) return -1;
    if (nd >= e->sz) return nd - e->sz;
    int mid = (nl + nr) / 2;
    int p = t_first(e, 2 * nd, nl, mid, l, r, x);
    return p >= 0 ? p : t_first(e, 2 * nd + 1, mid + 1, nr, l, r, x);
}

#define T_ROOT(e) 1, 0, (e)->sz - 1

/* --- nodes ----------------------------------------------------------------------------------- */

static inline int64_t node_t(const Eng *e, int m) { return e->node[m].steady ? e->topL[m] : e->node[m].lastT; }
static inline int node_cur(const Eng *e, int m) { return e->node[m].steady ? e->topcur[m] : e->node[m].cur; }

/* Node z chose its A side: it becomes steady and joins the chain below (the chain above, whose
 * source it is, joins at the end of that chain's step). */
static void join(Eng *e, int z) {
    Node *x = &e->node[z];
    x->steady = 1;
    t_set(e, T_ROOT(e), z - 1, x->bval ? leaf_t(e, z) : KEY_INF, x->lastT + 1 + x->penB, 1);
    int bot = z;
    if (z >= 2 && e->node[z - 1].steady) bot = e->bottom[z - 1];
    e->bottom[z] = bot;
    e->top[bot] = z;
    e->topL[z] = x->lastT;
    e->topcur[z] = x->cur;
}

static inline void leave(Eng *e, int z) {
    e->node[z].steady = 0;
    t_set(e, T_ROOT(e), z - 1, KEY_INF, 0, 0);
}

static inline void set_piece(Eng *e, int lo, int hi, int64_t t, int leaf) {
    e->bottom[hi] = lo;
    e->top[lo] = hi;
    e->topL[hi] = t;
    e->topcur[hi] = leaf;
}

/* dedupSeriesIterator.Next of a non-steady node, after its A side was sought (aval updated). */
static int ns_finish(Eng *e, const Frame *f) {
    int z = f->z;
    Node *x = &e->node[z];
    if (x->bval) x->bval = (uint8_t)leaf_seek(e, z, x->lastT + 1 + x->penB);
    int64_t ta = 0, tb = 0;
    int ca = 0, ret;
    if (x->aval) {
        ta = z == 1 ? leaf_t(e, 0) : node_t(e, z - 1);
        ca = z == 1 ? 0 : node_cur(e, z - 1);
    }
    if (x->bval) tb = leaf_t(e, z);
    if (!x->aval) {
        x->useA = 0;
        if (x->bval) {
            x->lastT = tb;
            x->cur = z;
            x->penB = 0;
        }
        ret = x->bval;
    } else if (!x->bval) {
        x->useA = 1;
        x->lastT = ta;
        x->cur = ca;
        x->penA = 0;
        ret = 1;
    } else if (ta <= tb) {
        x->penB = x->lastT != INT64_MIN ? 2 * (ta - x->lastT) : INITIAL_PENALTY;
        x->penA = 0;
        x->lastT = ta;
        x->cur = ca;
        x->useA = 1;
        ret = 1;
    } else {
        x->penA = x->lastT != INT64_MIN ? 2 * (tb - x->lastT) : INITIAL_PENALTY;
        x->penB = 0;
        x->lastT = tb;
        x->cur = z;
        x->useA = 0;
        ret = 1;
    }
    /* switched replicas: let the counter wrappers catch up with the last value */
    if (x->useA != f->last_useA && f->have_last) adjust(e, z, f->last);
    if (x->useA) join(e, z);
    return ret;
}

/* One step of chain [x, y] (Next of its top y) after its source was sought to L + 1: ok says
 * whether it has a sample (et, eleaf). Every node of the chain emitted L and reads the same last
 * value; each passes the sample on unless its B is earlier (it switches and its B sample goes
 * on) or no sample comes (it falls back to B). Returns the top's result. */
static int chain_finish(Eng *e, const Frame *f, int ok, int64_t et, int eleaf) {
    const int x = f->x, y = f->z;
    const int64_t L = f->L;
    const double last = f->last;
    int lo = x, first_top = -1;
    while (lo <= y) {
        if (!ok) { /* A exhausted: B or nothing */
            int z = lo;
            Node *nz = &e->node[z];
            int bv = e->key[z - 1] < KEY_INF;
            leave(e, z);
            nz->useA = 0;
            nz->aval = 0;
            nz->bval = (uint8_t)bv;
            nz->lastT = L;
            if (bv) {
                nz->lastT = leaf_t(e, z);
                nz->cur = z;
                nz->penB = 0;
                ok = 1;
                et = nz->lastT;
                eleaf = z;
            }
            adjust(e, z, last);
            lo = z + 1;
            continue;
        }
        int p = t_first(e, T_ROOT(e), lo - 1, y - 1, et);
        int z = p < 0 ? y + 1 : p + 1;
        if (z > lo) {
            t_assign(e, T_ROOT(e), lo - 1, z - 2, et + 1 + 2 * (et - L));
            set_piece(e, lo, z - 1, et, eleaf);
            if (lo == x) first_top = z - 1;
        }
        if (z > y) break;
        /* node z takes its B sample, earlier than the one coming up */
        Node *nz = &e->node[z];
        int64_t b = e->key[z - 1];
        leave(e, z);
        nz->useA = 0;
        nz->aval = 1;
        nz->bval = 1;
        nz->penA = 2 * (b - L);
        nz->penB = 0;
        nz->lastT = b;
        nz->cur = z;
        adjust(e, z, last);
        et = b;
        eleaf = z;
        lo = z + 1;
    }
    /* the source became steady: the chain now reaches down through it */
    if (first_top >= 0 && x >= 2 && e->node[x - 1].steady) {
        int bot = e->bottom[x - 1];
        e->bottom[first_top] = bot;
        e->top[bot] = first_top;
    }
    return ok;
}

/* Next of node z0 (any state); 1 / 0, or -1 when the deadline passed. */
static int drive(Eng *e, int z0) {
    Frame *stk = e->stk;
    int sp = 0, ret = 0;
    stk[sp++] = (Frame){.z = z0, .kind = F_NEXT};
    while (sp > 0) {
        if (dl_tick(e->dl, 1)) return -1;
        Frame *f = &stk[sp - 1];
        if (f->kind == F_SEEK) {
            /* dedupSeriesIterator.Seek: Next until at or past the target (its final child Seek to
             * its own current time is a no-op) */
            if (f->state == 1 && !ret) {
                sp--;
                continue;
            }
            if (node_t(e, f->z) >= f->target) {
                sp--;
                ret = 1;
                continue;
            }
            f->state = 1;
            stk[sp++] = (Frame){.z = f->z, .kind = F_NEXT};
            continue;
        }
        int z = f->z;
        Node *x = &e->node[z];
        if (x->steady) {
            if (f->state == 0) {
                f->x = e->bottom[z];
                f->L = e->topL[z];
                f->last = e->counter ? leaf_value(e, e->topcur[z]) : 0;
                t_reseek(e, T_ROOT(e), f->x - 1, z - 1);
                if (f->x == 1) {
                    int ok = leaf_seek(e, 0, f->L + 1);
                    ret = chain_finish(e, f, ok, ok ? leaf_t(e, 0) : 0, 0);
                    sp--;
                    continue;
                }
                f->state = 1;
                stk[sp++] = (Frame){.z = f->x - 1, .kind = F_SEEK, .target = f->L + 1};
                continue;
            }
            int s = f->x - 1;
            ret = chain_finish(e, f, ret, ret ? node_t(e, s) : 0, ret ? node_cur(e, s) : 0);
            sp--;
            continue;
        }
        if (f->state == 0) {
            f->have_last = x->useA ? x->aval : x->bval;
            f->last = f->have_last && e->counter ? leaf_value(e, x->cur) : 0;
            f->last_useA = x->useA;
            if (x->aval) {
                int64_t target = x->lastT + 1 + x->penA;
                if (z > 1) {
                    f->state = 1;
                    stk[sp++] = (Frame){.z = z - 1, .kind = F_SEEK, .target = target};
                    continue;
                }
                x->aval = (uint8_t)leaf_seek(e, 0, target);
            }
        } else {
            x->aval = (uint8_t)ret;
        }
        ret = ns_finish(e, f);
        sp--;
    }
    return ret;
}

/* Reset the engine for k replicas (leaves[0..k) filled by the caller with i = -1, err = 0). */
static void eng_reset(Eng *e, int k, int counter) {
    e->k = k;
    e->counter = counter;
    int sz = 1;
    while (sz < k - 1) sz <<= 1;
    e->sz = sz;
    for (int nd = 1; nd < 2 * sz; nd++) {
        e->mk[nd] = e->md[nd] = KEY_INF;
        e->hz[nd] = 0;
    }
    for (int p = 0; p < sz; p++) e->key[p] = KEY_INF;
    e->csz = 0;
    if (counter && k > CTREE_MIN_REPLICAS) {
        int csz = 1;
        while (csz < k) csz <<= 1;
        e->csz = csz;
        for (int nd = 1; nd < 2 * csz; nd++) e->cv[nd] = INFINITY;
    }
    memset(e->node, 0, (size_t)k * sizeof(Node));
}

/* Two replicas: one dedupSeriesIterator over two leaves (the common HA pair), as ns_finish. */
static Py_ssize_t penalty2(Eng *e, int64_t *to, double *vo, Py_ssize_t cap) {
    Leaf *a = &e->leaf[0], *b = &e->leaf[1];
    a->i = b->i = 0;
    int aval = a->n > 0, bval = b->n > 0, useA = 1, cur = 0;
    int64_t lastT = INT64_MIN, penA = 0, penB = 0;
    Py_ssize_t n = 0;
    for (;;) {
        if (dl_tick(e->dl, 1)) return -1;
        int have_last = useA ? aval : bval, last_useA = useA;
        double last = have_last && e->counter ? leaf_value(e, cur) : 0;
        if (aval) aval = leaf_seek(e, 0, lastT + 1 + penA);
        if (bval) bval = leaf_seek(e, 1, lastT + 1 + penB);
        if (!aval) {
            useA = 0;
            if (!bval) break;
            lastT = b->t[b->i];
            cur = 1;
            penB = 0;
        } else if (!bval) {
            useA = 1;
            lastT = a->t[a->i];
            cur = 0;
            penA = 0;
        } else {
            int64_t ta = a->t[a->i], tb = b->t[b->i];
            useA = ta <= tb;
            if (useA) {
                penB = lastT != INT64_MIN ? 2 * (ta - lastT) : INITIAL_PENALTY;
                penA = 0;
                lastT = ta;
                cur = 0;
            } else {
                penA = lastT != INT64_MIN ? 2 * (tb - lastT) : INITIAL_PENALTY;
                penB = 0;
                lastT = tb;
                cur = 1;
            }
        }
        if (useA != last_useA && have_last) adjust(e, 1, last);
        if (n >= cap) return -2; /* cannot happen: outputs are distinct input samples */
        to[n] = lastT;
        vo[n] = leaf_value(e, cur);
        n++;
    }
    /* both exhausted: the last Next switched to B (useA = 0) with nothing to adjust */
    return n;
}

/* The merged series into to/vo (room for every sample); returns the count, -1 at the deadline. */
static Py_ssize_t penalty_run(Eng *e, int k, int counter, int64_t *to, double *vo, Py_ssize_t cap) {
    eng_reset(e, k, counter);
    if (k == 2) return penalty2(e, to, vo, cap);
    /* construction: node m = newDedupSeriesIterator(node m-1, leaf m) calls a.Next(), b.Next() */
    for (int m = 1; m < k; m++) {
        Node *x = &e->node[m];
        x->useA = 1;
        x->lastT = INT64_MIN;
        int aval;
        if (m == 1) {
            e->leaf[0].i = 0;
            if (e->csz) ctree_update(e, 0);
            aval = e->leaf[0].n > 0;
            x->cur = 0;
        } else {
            aval = drive(e, m - 1);
            if (aval < 0) return -1;
            if (aval) x->cur = node_cur(e, m - 1);
        }
        e->leaf[m].i = 0;
        if (e->csz) ctree_update(e, m);
        x->aval = (uint8_t)aval;
        x->bval = e->leaf[m].n > 0;
    }
    Py_ssize_t n = 0;
    int r;
    while ((r = drive(e, k - 1)) == 1) {
        if (n >= cap) return -2; /* cannot happen: outputs are distinct input samples */
        to[n] = node_t(e, k - 1);
        vo[n] = leaf_value(e, node_cur(e, k - 1));
        n++;
    }
    return r < 0 ? -1 : n;
}

static void eng_free(Eng *e) {
    PyMem_RawFree(e->leaf);
    PyMem_RawFree(e->node);
    PyMem_RawFree(e->bottom);
    PyMem_RawFree(e->top);
    PyMem_RawFree(e->topcur);
    PyMem_RawFree(e->topL);
    PyMem_RawFree(e->mk);
    PyMem_RawFree(e->md);
    PyMem_RawFree(e->lz);
    PyMem_RawFree(e->hz);
    PyMem_RawFree(e->key);
    PyMem_RawFree(e->tgt);
    PyMem_RawFree(e->cv);
    PyMem_RawFree(e->stk);
    memset(e, 0, sizeof(*e));
}

/* Room for up to kmax replicas (1 <= kmax <= MAX_REPLICAS). Sets MemoryError on failure. */
static int eng_alloc(Eng *e, int kmax, Deadline *dl) {
    memset(e, 0, sizeof(*e));
    e->dl = dl;
    size_t k = (size_t)kmax, sz = 1, csz = 1;
    while (sz < k) sz <<= 1;
    while (csz < k) csz <<= 1;
    e->leaf = PyMem_RawCalloc(k, sizeof(Leaf));
    e->node = PyMem_RawCalloc(k, sizeof(Node));
    e->bottom = PyMem_RawCalloc(k, sizeof(int32_t));
    e->top = PyMem_RawCalloc(k, sizeof(int32_t));
    e->topcur = PyMem_RawCalloc(k, sizeof(int32_t));
    e->topL = PyMem_RawCalloc(k, sizeof(int64_t));
    e->mk = PyMem_RawCalloc(2 * sz, sizeof(int64_t));
    e->md = PyMem_RawCalloc(2 * sz, sizeof(int64_t));
    e->lz = PyMem_RawCalloc(2 * sz, sizeof(int64_t));
    e->hz = PyMem_RawCalloc(2 * sz, 1);
    e->key = PyMem_RawCalloc(sz, sizeof(int64_t));
    e->tgt = PyMem_RawCalloc(sz, sizeof(int64_t));
    e->cv = PyMem_RawCalloc(2 * csz, sizeof(double));
    e->stk = PyMem_RawCalloc(2 * k + 4, sizeof(Frame));
    if (!e->leaf || !e->node || !e->bottom || !e->top || !e->topcur || !e->topL || !e->mk || !e->md || !e->lz ||
        !e->hz || !e->key || !e->tgt || !e->cv || !e->stk) {
        eng_free(e);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Prometheus chainSampleIterator.Next (ChainedSeriesMerge), including Go's container/heap
 * so that the sample kept among equal timestamps is the one Prometheus keeps. O(n log k).
 * ------------------------------------------------------------------------------------------- */

typedef struct {
    const int64_t *t;
    const double *v;
    Py_ssize_t n, i;
} CLeaf;

static inline int64_t lt(const CLeaf *l) { return l->t[l->i]; }

static void heap_up(CLeaf **h, int j) {
    for (;;) {
        int i = (j - 1) / 2;
        if (i == j || !(lt(h[j]) < lt(h[i]))) break;
        CLeaf *s = h[i]; h[i] = h[j]; h[j] = s;
        j = i;
    }
}

static void heap_down(CLeaf **h, int i, int n) {
    for (;;) {
        int j1 = 2 * i + 1;
        if (j1 >= n || j1 < 0) break;
        int j = j1, j2 = j1 + 1;
        if (j2 < n && lt(h[j2]) < lt(h[j1])) j = j2;
        if (!(lt(h[j]) < lt(h[i]))) break;
        CLeaf *s = h[i]; h[i] = h[j]; h[j] = s;
        i = j;
    }
}

static void heap_push(CLeaf **h, int *len, CLeaf *x) { h[(*len)++] = x; heap_up(h, *len - 1); }

static CLeaf *heap_pop(CLeaf **h, int *len) {
    int n = *len - 1;
    CLeaf *s = h[0]; h[0] = h[n]; h[n] = s;
    heap_down(h, 0, n);
    *len = n;
    return h[n];
}

/* Returns the count, or -1 when the deadline passed. */
static Py_ssize_t chain_run(CLeaf *ls, CLeaf **h, int k, int64_t *to, double *vo, Deadline *dl) {
    int hl = 0;
    CLeaf *curr = &ls[0];
    for (int r = 1; r < k; r++) {
        ls[r].i++;
        if (ls[r].i < ls[r].n) heap_push(h, &hl, &ls[r]);
    }
    int64_t lastT = INT64_MIN;
    Py_ssize_t n = 0;
    for (;;) {
        int64_t currT = 0;
        for (;;) {
            if (dl_tick(dl, 1)) return -1;
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

/* Samples later than every earlier one, moved to the front: the only ones an iterator that
 * never goes back in time can land on (Thanos' chunk series iterator; every Seek here). */
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

static inline int ts_ok(const int64_t *t, Py_ssize_t n) {
    return n == 0 || (t[0] >= -TS_LIMIT && t[n - 1] <= TS_LIMIT);
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

/* The optional deadline argument: None (no deadline) or time.monotonic() seconds. */
static int get_deadline(PyObject *o, Deadline *d) {
    memset(d, 0, sizeof(*d));
    if (o == NULL || o == Py_None) return 0;
    double x = PyFloat_AsDouble(o);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    if (x != x) {
        PyErr_SetString(PyExc_ValueError, "deadline must be a number or None");
        return -1;
    }
    d->at = x > 0 ? x : 1e-9; /* a deadline at or before 0 has passed */
    return 0;
}

static PyObject *deadline_error(void) {
    PyErr_SetString(DeadlineExceeded, "de-duplication stopped: its deadline passed");
    return NULL;
}

/* Reads the replica tuples ts, vs into bufs[0..2k); returns k or -1. */
static int get_replicas(PyObject *ts, PyObject *vs, Buf **bufs_out, Py_ssize_t *total) {
    if (!PyTuple_Check(ts) || !PyTuple_Check(vs) || PyTuple_GET_SIZE(ts) != PyTuple_GET_SIZE(vs)) {
        PyErr_SetString(PyExc_TypeError, "ts and vs must be tuples of equal length");
        return -1;
    }
    Py_ssize_t k = PyTuple_GET_SIZE(ts);
    if (k < 1 || k > MAX_REPLICAS) {
        PyErr_Format(PyExc_ValueError, "need 1..%d replicas", MAX_REPLICAS);
        return -1;
    }
    Buf *bufs = PyMem_Calloc((size_t)(2 * k), sizeof(Buf));
    if (!bufs) { PyErr_NoMemory(); return -1; }
    *bufs_out = bufs;
    *total = 0;
    /* ts and vs are tuples: their items stay alive while we hold them */
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

static int strictly_increasing(const int64_t *t, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++)
        if (t[i] <= t[i - 1]) return 0;
    return 1;
}

static PyObject *merge(PyObject *args, int chain) {
    PyObject *ts, *vs, *tout, *vout, *dlo = Py_None;
    int counter = 0;
    if (chain) {
        if (!PyArg_ParseTuple(args, "OOOO|O", &ts, &vs, &tout, &vout, &dlo)) return NULL;
    } else {
        if (!PyArg_ParseTuple(args, "OOpOO|O", &ts, &vs, &counter, &tout, &vout, &dlo)) return NULL;
    }
    Deadline dl;
    if (get_deadline(dlo, &dl) < 0) return NULL;
    Buf *bufs = NULL, ot = {0}, ov = {0};
    Py_ssize_t total = 0, n = -3;
    int64_t *ct = NULL;
    double *cvv = NULL;
    uint8_t *unsorted = NULL;
    int k = get_replicas(ts, vs, &bufs, &total);
    Py_ssize_t kk = k < 0 ? (bufs ? PyTuple_GET_SIZE(ts) : 0) : k;
    if (k < 0) goto done;
    if (get_buf(tout, &ot, 8, 1, "t_out") < 0 || get_buf(vout, &ov, 8, 1, "v_out") < 0) goto done;
    if (ot.b.len / 8 < total || ov.b.len / 8 < total) {
        PyErr_Format(PyExc_ValueError, "outputs hold fewer than %zd samples", total);
        goto done;
    }
    if (dl_now(&dl)) { n = -1; goto done; }
    int64_t *to = ot.b.buf;
    double *vo = ov.b.buf;
    if (chain) {
        CLeaf *ls = PyMem_Calloc((size_t)k, sizeof(CLeaf));
        CLeaf **h = PyMem_Calloc((size_t)k, sizeof(CLeaf *));
        if (!ls || !h) { PyMem_Free(ls); PyMem_Free(h); PyErr_NoMemory(); goto done; }
        for (int r = 0; r < k; r++) {
            ls[r].t = bufs[2 * r].b.buf; ls[r].v = bufs[2 * r + 1].b.buf;
            ls[r].n = bufs[2 * r].b.len / 8; ls[r].i = -1;
        }
        if (total >= GIL_RELEASE_SAMPLES) {
            Py_BEGIN_ALLOW_THREADS
            n = chain_run(ls, h, k, to, vo, &dl);
            Py_END_ALLOW_THREADS
        } else {
            n = chain_run(ls, h, k, to, vo, &dl);
        }
        PyMem_Free(ls); PyMem_Free(h);
        goto done;
    }
    if (k == 1) { /* a lone replica: every sample, through the counter wrapper when asked */
        const int64_t *t = bufs[0].b.buf;
        const double *v = bufs[1].b.buf;
        n = bufs[0].b.len / 8;
        memmove(to, t, (size_t)n * 8);
        for (Py_ssize_t i = 0; i < n; i++) vo[i] = counter ? v[i] + 0.0 : v[i];
        goto done;
    }
    /* leaves: the samples a forward-only seek can land on (copies only for unsorted replicas) */
    Eng e;
    if (eng_alloc(&e, k, &dl) < 0) goto done;
    Py_ssize_t need = 0;
    unsorted = PyMem_RawCalloc((size_t)k, 1);
    if (!unsorted) { eng_free(&e); PyErr_NoMemory(); goto done; }
    for (int r = 0; r < k; r++) {
        Py_ssize_t len = bufs[2 * r].b.len / 8;
        unsorted[r] = !strictly_increasing(bufs[2 * r].b.buf, len);
        if (unsorted[r]) need += len;
    }
    if (need) {
        ct = PyMem_RawMalloc((size_t)need * 8);
        cvv = PyMem_RawMalloc((size_t)need * 8);
        if (!ct || !cvv) { eng_free(&e); PyErr_NoMemory(); goto done; }
    }
    Py_ssize_t at = 0;
    for (int r = 0; r < k; r++) {
        Leaf *l = &e.leaf[r];
        l->t = bufs[2 * r].b.buf;
        l->v = bufs[2 * r + 1].b.buf;
        l->n = bufs[2 * r].b.len / 8;
        l->i = -1;
        l->err = 0;
        if (unsorted[r]) {
            memcpy(ct + at, l->t, (size_t)l->n * 8);
            memcpy(cvv + at, l->v, (size_t)l->n * 8);
            l->n = monotone_run(ct + at, cvv + at, l->n);
            l->t = ct + at;
            l->v = cvv + at;
            at += bufs[2 * r].b.len / 8;
        }
        if (!ts_ok(l->t, l->n)) {
            eng_free(&e);
            PyErr_Format(PyExc_ValueError, "replica %d: sample timestamp outside +-2^60 ms", r);
            goto done;
        }
    }
    if (total >= GIL_RELEASE_SAMPLES) {
        Py_BEGIN_ALLOW_THREADS
        n = penalty_run(&e, k, counter, to, vo, total);
        Py_END_ALLOW_THREADS
    } else {
        n = penalty_run(&e, k, counter, to, vo, total);
    }
    eng_free(&e);
done:
    PyMem_RawFree(ct);
    PyMem_RawFree(cvv);
    PyMem_RawFree(unsorted);
    free_replicas(bufs, kk);
    rel(&ot); rel(&ov);
    if (n == -1) return deadline_error();
    if (n == -2) {
        PyErr_SetString(PyExc_SystemError, "penalty merge produced more samples than its input");
        return NULL;
    }
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
 * Returns the count, -1 at the deadline, -2 - s when series s has a timestamp out of range.
 * ------------------------------------------------------------------------------------------- */

static Py_ssize_t batch_run(int64_t *t, double *v, const int64_t *rb, const int64_t *sr, Py_ssize_t S,
                            int chain, int counter, int resets, int64_t mint, int64_t maxt,
                            int64_t *to, double *vo, int64_t *ob, Eng *e, CLeaf *ls, CLeaf **h, Deadline *dl) {
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
                Leaf *l = &e->leaf[k];
                l->t = rt + lo; l->v = rv + lo; l->n = hi - lo; l->i = -1; l->err = 0;
            }
            k++;
        }
        if (dl_tick(dl, 1 + ((uint64_t)(rb[sr[s + 1]] - rb[sr[s]]) >> 4))) return -1;
        if (k == 1) { /* a lone replica passes through untouched */
            Py_ssize_t m = chain ? ls[0].n : e->leaf[0].n;
            const int64_t *st = chain ? ls[0].t : e->leaf[0].t;
            const double *sv = chain ? ls[0].v : e->leaf[0].v;
            memcpy(to + n, st, (size_t)m * sizeof(int64_t));
            memcpy(vo + n, sv, (size_t)m * sizeof(double));
            n += m;
        } else if (k > 1) {
            Py_ssize_t m;
            if (chain) {
                m = chain_run(ls, h, k, to + n, vo + n, dl);
            } else {
                for (int r = 0; r < k; r++)
                    if (!ts_ok(e->leaf[r].t, e->leaf[r].n)) return -2 - s;
                m = penalty_run(e, k, counter, to + n, vo + n, INT64_MAX);
            }
            if (m < 0) return -1;
            n += m;
        }
    }
    ob[S] = n;
    return n;
}

static PyObject *py_batch(PyObject *self, PyObject *args) {
    PyObject *t, *v, *rbo, *sro, *tout, *vout, *obo, *dlo = Py_None;
    int chain, counter, resets;
    long long mint, maxt;
    if (!PyArg_ParseTuple(args, "OOOOpppLLOOO|O", &t, &v, &rbo, &sro, &chain, &counter, &resets, &mint, &maxt,
                          &tout, &vout, &obo, &dlo)) return NULL;
    Deadline dl;
    if (get_deadline(dlo, &dl) < 0) return NULL;
    Buf bt = {0}, bv = {0}, brb = {0}, bsr = {0}, ot = {0}, ov = {0}, bob = {0};
    Py_ssize_t n = -3;
    Eng e;
    memset(&e, 0, sizeof(e));
    CLeaf *ls = NULL, **h = NULL;
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
    if (kmax > MAX_REPLICAS) {
        PyErr_Format(PyExc_ValueError, "batch: more than %d replicas of one series", MAX_REPLICAS);
        goto done;
    }
    if (dl_now(&dl)) { n = -1; goto done; }
    if (chain) {
        ls = PyMem_Calloc((size_t)kmax, sizeof(CLeaf));
        h = PyMem_Calloc((size_t)kmax, sizeof(CLeaf *));
        if (!ls || !h) { PyErr_NoMemory(); goto done; }
    } else if (eng_alloc(&e, (int)kmax, &dl) < 0) {
        goto done;
    }
    if (N >= GIL_RELEASE_SAMPLES) {
        Py_BEGIN_ALLOW_THREADS
        n = batch_run(bt.b.buf, bv.b.buf, rb, sr, S, chain, counter, resets, mint, maxt, ot.b.buf, ov.b.buf,
                      bob.b.buf, &e, ls, h, &dl);
        Py_END_ALLOW_THREADS
    } else {
        n = batch_run(bt.b.buf, bv.b.buf, rb, sr, S, chain, counter, resets, mint, maxt, ot.b.buf, ov.b.buf,
                      bob.b.buf, &e, ls, h, &dl);
    }
done:
    eng_free(&e);
    PyMem_Free(ls); PyMem_Free(h);
    rel(&bt); rel(&bv); rel(&brb); rel(&bsr); rel(&ot); rel(&ov); rel(&bob);
    if (n == -1) return deadline_error();
    if (n <= -2 && n != -3) {
        /* ValueError with the series' index as attribute ``series`` */
        Py_ssize_t s = -2 - n;
        PyObject *exc = PyObject_CallFunction(PyExc_ValueError, "s", "sample timestamp outside +-2^60 ms");
        PyObject *si = PyLong_FromSsize_t(s);
        if (exc && si && PyObject_SetAttrString(exc, "series", si) == 0) PyErr_SetObject(PyExc_ValueError, exc);
        Py_XDECREF(exc);
        Py_XDECREF(si);
        return NULL;
    }
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"batch", py_batch, METH_VARARGS,
     "batch(t, v, rep_bounds, series_reps, chain, counter, resets, mint, maxt, t_out, v_out, out_bounds[, deadline])"
     " -> n"},
    {"penalty", py_penalty, METH_VARARGS,
     "penalty(ts: tuple, vs: tuple, counter: bool, t_out, v_out[, deadline]) -> n  (Thanos penalty dedup)"},
    {"chain", py_chain, METH_VARARGS,
     "chain(ts: tuple, vs: tuple, t_out, v_out[, deadline]) -> n  (ChainedSeriesMerge)"},
    {"counter_resets", py_counter_resets, METH_VARARGS,
     "counter_resets(t, v, t_out, v_out) -> n  (ApplyCounterResetsSeriesIterator)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_dedup", "Replica de-duplication kernels (see _dedup.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__dedup(void) {
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    DeadlineExceeded = PyErr_NewExceptionWithDoc(
        "pythanos.dedup._dedup.DeadlineExceeded",
        "The de-duplication passed its deadline (the query's timeout) and stopped.", PyExc_TimeoutError, NULL);
    if (!DeadlineExceeded || PyModule_AddObjectRef(m, "DeadlineExceeded", DeadlineExceeded) < 0 ||
        PyModule_AddIntConstant(m, "MAX_REPLICAS", MAX_REPLICAS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
