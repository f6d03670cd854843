/* Series frames of the StoreAPI parsed straight into what the querier keeps.
 *
 * parse(frame: bytes, strip: frozenset | None, cache: dict) -> (kind, payload)
 *   kind 1 (series) / 4 (batch): payload = list of (labels, chunks) with labels a tuple of
 *     (name, value) str pairs (labels named in strip left out) and chunks a list with, for
 *     every AggrChunk: (min_time, max_time, encoding, data) when it holds only a raw chunk;
 *     (min_time, max_time, encoding, data, {aggr: (encoding, data)}) when it holds aggregates
 *     (thanos.Aggr keys COUNT=1 .. COUNTER=5; encoding 0 and data b"" when there is no raw
 *     chunk), where a raw chunk in Thanos' on-disk aggregate encoding 0xFF counts as its
 *     aggregates; nothing for an AggrChunk with neither;
 *   kind 2 (warning): payload = the warning str;
 *   kind 3 (hints) or an empty frame: payload = None.
 * `cache` maps label bytes to their str so names and repeated values are shared, not copied.
 *
 * Wire format (thanos storepb): SeriesResponse{series=1 Series, warning=2 string, hints=3 Any,
 * batch=4 SeriesBatch{series=1 Series}}; Series{labels=1 Label{name=1, value=2}, chunks=2
 * AggrChunk{min_time=1, max_time=2, raw=3 Chunk{type=1, data=2, hash=3}, count..counter=4..8}}.
 * This gives the same result as protobuf's parser followed by the Python extraction it
 * replaces; a malformed frame raises ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    const uint8_t *p, *end;
} rd;

static int varint(rd *r, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    while (r->p < r->end && shift < 64) {
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* One field: its number and wire type; for length-delimited fields the bytes in *sub. */
static int field(rd *r, uint32_t *num, int *wt, uint64_t *val, rd *sub) {
    uint64_t key;
    if (varint(r, &key)) return -1;
    *num = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0:
        return varint(r, val);
    case 1:
        if (r->end - r->p < 8) return -1;
        r->p += 8;
        return 0;
    case 5:
        if (r->end - r->p < 4) return -1;
        r->p += 4;
        return 0;
    case 2: {
        uint64_t len;
        if (varint(r, &len)) return -1;
        if ((uint64_t)(r->end - r->p) < len) return -1;
        sub->p = r->p;
        sub->end = r->p + len;
        r->p += len;
        return 0;
    }
    default:
        return -1;
    }
}

static PyObject *bad(const char *what) {
    PyErr_Format(PyExc_ValueError, "malformed SeriesResponse frame: %s", what);
    return NULL;
}

/* str for these bytes, shared through cache */
static PyObject *cached_str(PyObject *cache, const uint8_t *p, Py_ssize_t n) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, n);
    if (!key) return NULL;
    PyObject *s = PyDict_GetItemWithError(cache, key);
    if (s) {
        Py_INCREF(s);
        Py_DECREF(key);
        return s;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    s = PyUnicode_DecodeUTF8((const char *)p, n, "strict");
    if (!s || PyDict_SetItem(cache, key, s) < 0) {
        Py_XDECREF(s);
        Py_DECREF(key);
        return NULL;
    }
    Py_DECREF(key);
    return s;
}

static PyObject *parse_label(rd *r, PyObject *cache, PyObject *strip, int *skip) {
    rd name = {(const uint8_t *)"", (const uint8_t *)""}, value = name, sub;
    uint32_t num;
    int wt;
    uint64_t val;
    while (r->p < r->end) {
        if (field(r, &num, &wt, &val, &sub)) return bad("label");
        if (wt == 2 && num == 1) name = sub;
        else if (wt == 2 && num == 2) value = sub;
    }
    PyObject *n = cached_str(cache, name.p, name.end - name.p);
    if (!n) return NULL;
    if (strip) {
        int in = PySet_Contains(strip, n);
        if (in < 0) {
            Py_DECREF(n);
            return NULL;
        }
        if (in) {
            Py_DECREF(n);
            *skip = 1;
            return NULL;
        }
    }
    PyObject *v = cached_str(cache, value.p, value.end - value.p);
    if (!v) {
        Py_DECREF(n);
        return NULL;
    }
    PyObject *t = PyTuple_Pack(2, n, v);
    Py_DECREF(n);
    Py_DECREF(v);
    return t;
}

/* One thanos.Chunk{type=1, data=2, hash=3} merged into *type / *data (protobuf merges a repeated
 * message field: the last type and data seen win). */
static int parse_sub(rd *r, uint64_t *type, rd *data) {
    uint32_t num;
    int wt;
    uint64_t val;
    while (r->p < r->end) {
        rd s2;
        if (field(r, &num, &wt, &val, &s2)) return -1;
        if (wt == 0 && num == 1) *type = val;
        else if (wt == 2 && num == 2) *data = s2;
    }
    return 0;
}

#define AGGR_ENCODING 0xFF /* Thanos' downsample.ChunkEncAggr, the on-disk encoding byte */

/* Prometheus chunk encoding byte -> thanos Chunk.Encoding (XOR=0, HISTOGRAM=1, FLOAT_HISTOGRAM=2) */
static long long store_encoding(uint8_t b) { return (b >= 1 && b <= 3) ? (long long)b - 1 : AGGR_ENCODING; }

/* aggrs[a] = (type, data) with the key a as a Python int (thanos.Aggr: COUNT=1 .. COUNTER=5) */
static int set_aggr(PyObject *aggrs, int a, long long type, const uint8_t *p, Py_ssize_t n) {
    PyObject *k = PyLong_FromLong(a), *v = Py_BuildValue("(Ly#)", type, (const char *)p, n);
    int rc = (k && v) ? PyDict_SetItem(aggrs, k, v) : -1;
    Py_XDECREF(k);
    Py_XDECREF(v);
    return rc;
}

/* The on-disk aggregate chunk (pkg/compact/downsample/aggr.go): for count, sum, min, max, counter in
 * turn uvarint(L), then, if L > 0, one encoding byte and L bytes of that sub-chunk. */
static int split_aggr(PyObject *aggrs, const uint8_t *p, const uint8_t *end) {
    rd r = {p, end};
    for (int i = 0; i < 5; i++) {
        uint64_t len;
        if (varint(&r, &len)) return -1;
        if (len == 0) continue;
        if (len >= (uint64_t)(r.end - r.p)) return -1; /* the encoding byte and len bytes */
        if (set_aggr(aggrs, i + 1, store_encoding(r.p[0]), r.p + 1, (Py_ssize_t)len)) return -2;
        r.p += len + 1;
    }
    return 0;
}

/* AggrChunk -> (min_time, max_time, type, data) for a raw chunk, or (min_time, max_time, raw type,
 * raw data, {aggr: (type, data)}) when it has aggregates (raw type 0 and data b"" without raw; a raw
 * chunk in the on-disk aggregate encoding 0xFF is split into its aggregates), or Py_None (borrowed,
 * not increfed) when it has neither. */
static PyObject *parse_chunk(rd *r) {
    int64_t mint = 0, maxt = 0;
    int has_raw = 0, has[6] = {0};
    uint64_t type = 0, atype[6] = {0};
    rd data = {(const uint8_t *)"", (const uint8_t *)""}, sub, adata[6];
    uint32_t num;
    int wt;
    uint64_t val;
    for (int i = 0; i < 6; i++) adata[i] = data;
    while (r->p < r->end) {
        if (field(r, &num, &wt, &val, &sub)) return bad("chunk");
        if (wt == 0 && num == 1) mint = (int64_t)val;
        else if (wt == 0 && num == 2) maxt = (int64_t)val;
        else if (wt == 2 && num == 3) {
            has_raw = 1;
            if (parse_sub(&sub, &type, &data)) return bad("raw chunk");
        } else if (wt == 2 && num >= 4 && num <= 8) {
            int a = (int)num - 3; /* thanos.Aggr: COUNT=1, SUM=2, MIN=3, MAX=4, COUNTER=5 */
            has[a] = 1;
            if (parse_sub(&sub, &atype[a], &adata[a])) return bad("aggregate chunk");
        }
    }
    int any = 0;
    for (int a = 1; a <= 5; a++) any |= has[a];
    int aggr_raw = has_raw && (int32_t)type == AGGR_ENCODING;
    if (!any && !aggr_raw) {
        if (!has_raw) return Py_None;
        PyObject *d = PyBytes_FromStringAndSize((const char *)data.p, data.end - data.p);
        if (!d) return NULL;
        return Py_BuildValue("(LLLN)", (long long)mint, (long long)maxt, (long long)(int32_t)type, d);
    }
    PyObject *aggrs = PyDict_New();
    if (!aggrs) return NULL;
    if (aggr_raw) {
        int rc = split_aggr(aggrs, data.p, data.end);
        if (rc) {
            Py_DECREF(aggrs);
            return rc == -1 ? bad("aggregate chunk encoding") : NULL;
        }
        has_raw = 0;
    }
    for (int a = 1; a <= 5; a++) {
        if (has[a] && set_aggr(aggrs, a, (long long)(int32_t)atype[a], adata[a].p, adata[a].end - adata[a].p)) {
            Py_DECREF(aggrs);
            return NULL;
        }
    }
    if (!has_raw) {
        type = 0;
        data.p = data.end = (const uint8_t *)"";
    }
    PyObject *d = PyBytes_FromStringAndSize((const char *)data.p, data.end - data.p);
    if (!d) {
        Py_DECREF(aggrs);
        return NULL;
    }
    return Py_BuildValue("(LLLNN)", (long long)mint, (long long)maxt, (long long)(int32_t)type, d, aggrs);
}

/* The Series in runs[0:n]: protobuf merges a message field that occurs more than once (the
 * occurrences' repeated labels and chunks are concatenated), so all of them make one series. */
static PyObject *parse_series_runs(const rd *runs, size_t n, PyObject *cache, PyObject *strip) {
    PyObject *labels = PyList_New(0), *chunks = PyList_New(0), *out = NULL;
    rd sub, one;
    uint32_t num;
    int wt;
    uint64_t val;
    if (!labels || !chunks) goto done;
    for (size_t i = 0; i < n; i++) {
        one = runs[i];
        rd *r = &one;
        while (r->p < r->end) {
            if (field(r, &num, &wt, &val, &sub)) {
                bad("series");
                goto done;
            }
            if (wt != 2) continue;
            if (num == 1) {
                int skip = 0;
                PyObject *lb = parse_label(&sub, cache, strip, &skip);
                if (!lb) {
                    if (skip) continue;
                    goto done;
                }
                int rc = PyList_Append(labels, lb);
                Py_DECREF(lb);
                if (rc) goto done;
            } else if (num == 2) {
                PyObject *c = parse_chunk(&sub);
                if (!c) goto done;
                if (c == Py_None) continue;
                int rc = PyList_Append(chunks, c);
                Py_DECREF(c);
                if (rc) goto done;
            }
        }
    }
    {
        PyObject *lt = PyList_AsTuple(labels);
        if (!lt) goto done;
        out = PyTuple_Pack(2, lt, chunks);
        Py_DECREF(lt);
    }
done:
    Py_XDECREF(labels);
    Py_XDECREF(chunks);
    return out;
}

static PyObject *parse_series(rd *r, PyObject *cache, PyObject *strip) { return parse_series_runs(r, 1, cache, strip); }

static PyObject *parse(PyObject *self, PyObject *args) {
    Py_buffer buf;
    PyObject *strip, *cache;
    if (!PyArg_ParseTuple(args, "y*OO!", &buf, &strip, &PyDict_Type, &cache)) return NULL;
    if (strip == Py_None) strip = NULL;
    else if (!PyAnySet_Check(strip)) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_TypeError, "strip must be a set, frozenset or None");
        return NULL;
    }
    rd r = {(const uint8_t *)buf.buf, (const uint8_t *)buf.buf + buf.len}, sub;
    uint32_t num;
    int wt;
    uint64_t val;
    int kind = 0;
    PyObject *payload = NULL, *out = NULL;
    rd last = {NULL, NULL};
    /* As protobuf's parser: the oneof's last member wins; a message member that occurs several
     * times in a row is their merge (runs: its occurrences since another member last occurred). */
    rd *runs = NULL;
    size_t nruns = 0, capruns = 0;
    while (r.p < r.end) {
        if (field(&r, &num, &wt, &val, &sub)) {
            bad("response");
            goto done;
        }
        if (wt == 2 && num >= 1 && num <= 4) {
            if ((int)num != kind) nruns = 0;
            kind = (int)num;
            last = sub;
            if (nruns == capruns) {
                size_t c = capruns ? 2 * capruns : 4;
                rd *q = c > ((size_t)-1) / sizeof(rd) ? NULL : realloc(runs, c * sizeof(rd));
                if (!q) {
                    PyErr_NoMemory();
                    goto done;
                }
                runs = q;
                capruns = c;
            }
            runs[nruns++] = sub;
        }
    }
    if (kind == 1) {
        PyObject *s = parse_series_runs(runs, nruns, cache, strip);
        if (!s) goto done;
        payload = PyList_New(1);
        if (!payload) {
            Py_DECREF(s);
            goto done;
        }
        PyList_SET_ITEM(payload, 0, s);
    } else if (kind == 4) {
        payload = PyList_New(0);
        if (!payload) goto done;
        for (size_t i = 0; i < nruns; i++) { /* merged batches: their series one after another */
            last = runs[i];
            while (last.p < last.end) {
                if (field(&last, &num, &wt, &val, &sub)) {
                    bad("batch");
                    goto done;
                }
                if (wt != 2 || num != 1) continue;
                PyObject *s = parse_series(&sub, cache, strip);
                if (!s) goto done;
                int rc = PyList_Append(payload, s);
                Py_DECREF(s);
                if (rc) goto done;
            }
        }
    } else if (kind == 2) {
        payload = PyUnicode_DecodeUTF8((const char *)last.p, last.end - last.p, "strict");
        if (!payload) goto done;
    } else {
        payload = Py_None;
        Py_INCREF(payload);
    }
    out = Py_BuildValue("(iO)", kind, payload);
done:
    free(runs);
    Py_XDECREF(payload);
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS, "parse(frame, strip, cache) -> (kind, payload); see the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_frames", "StoreAPI Series frames -> labels and chunks.", -1,
                                 methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__frames(void) { return PyModule_Create(&mod); }
