/* Series frames of the StoreAPI parsed straight into what the querier keeps.
 *
 * parse(frame: bytes, strip: frozenset | None, cache: dict) -> (kind, payload)
 *   kind 1 (series) / 4 (batch): payload = list of (labels, chunks) with labels a tuple of
 *     (name, value) str pairs (labels named in strip left out) and chunks a list of
 *     (min_time, max_time, encoding, data) for every AggrChunk that has a raw chunk;
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

/* AggrChunk -> (min_time, max_time, type, data), or Py_None (borrowed, not increfed) without raw */
static PyObject *parse_chunk(rd *r) {
    int64_t mint = 0, maxt = 0;
    int has_raw = 0;
    uint64_t type = 0;
    rd data = {(const uint8_t *)"", (const uint8_t *)""}, sub, raw;
    uint32_t num;
    int wt;
    uint64_t val;
    while (r->p < r->end) {
        if (field(r, &num, &wt, &val, &sub)) return bad("chunk");
        if (wt == 0 && num == 1) mint = (int64_t)val;
        else if (wt == 0 && num == 2) maxt = (int64_t)val;
        else if (wt == 2 && num == 3) {
            /* a repeated message field merges; take the last type/data seen like protobuf does */
            has_raw = 1;
            raw = sub;
            while (raw.p < raw.end) {
                rd s2;
                if (field(&raw, &num, &wt, &val, &s2)) return bad("raw chunk");
                if (wt == 0 && num == 1) type = val;
                else if (wt == 2 && num == 2) data = s2;
            }
        }
    }
    if (!has_raw) return Py_None;
    PyObject *d = PyBytes_FromStringAndSize((const char *)data.p, data.end - data.p);
    if (!d) return NULL;
    PyObject *out = Py_BuildValue("(LLLN)", (long long)mint, (long long)maxt, (long long)(int32_t)type, d);
    return out;
}

static PyObject *parse_series(rd *r, PyObject *cache, PyObject *strip) {
    PyObject *labels = PyList_New(0), *chunks = PyList_New(0), *out = NULL;
    rd sub;
    uint32_t num;
    int wt;
    uint64_t val;
    if (!labels || !chunks) goto done;
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
    /* the oneof's last field wins, as protobuf's parser does */
    while (r.p < r.end) {
        if (field(&r, &num, &wt, &val, &sub)) {
            bad("response");
            goto done;
        }
        if (wt == 2 && num >= 1 && num <= 4) {
            kind = (int)num;
            last = sub;
        }
    }
    if (kind == 1) {
        PyObject *s = parse_series(&last, cache, strip);
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
    } else if (kind == 2) {
        payload = PyUnicode_DecodeUTF8((const char *)last.p, last.end - last.p, "strict");
        if (!payload) goto done;
    } else {
        payload = Py_None;
        Py_INCREF(payload);
    }
    out = Py_BuildValue("(iO)", kind, payload);
done:
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
