/*
 * CRC-32C (Castagnoli), the one implementation every C kernel of pythanos uses (the index
 * series entries, chunk records and remote-read frames are checked or written inline, per
 * entry, where a call into google-crc32c per entry would cost more than the checksum).
 * Python code uses the google-crc32c package; tests/test_crc32c.py proves this equals it.
 *
 * Same convention as google_crc32c.extend / value: crc32c_extend(crc, p, n) continues a
 * finished checksum (crc32c_extend(crc32c_extend(0, a), b) == CRC of a + b);
 * crc32c_value(p, n) == crc32c_extend(0, p, n).
 *
 * x86-64 CPUs with SSE 4.2 use the crc32 instruction (checked at run time, so the build runs
 * anywhere); elsewhere the slice-by-8 tables. Call crc32c_init() once (module init).
 */
#ifndef PYTHANOS_CRC32C_H
#define PYTHANOS_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PYTHANOS_CRC32C_HW 1
#include <nmmintrin.h>
#endif

static uint32_t crc32c_tab[8][256];
static int crc32c_hw_ok = 0;

static void crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc32c_tab[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc32c_tab[t][i] = (crc32c_tab[t - 1][i] >> 8) ^ crc32c_tab[0][crc32c_tab[t - 1][i] & 0xFF];
#ifdef PYTHANOS_CRC32C_HW
    __builtin_cpu_init();
    crc32c_hw_ok = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

/* The register form (not inverted) over p[0..n), slice-by-8. */
static inline uint32_t crc32c_sw(uint32_t c, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        c = crc32c_tab[7][lo & 0xFF] ^ crc32c_tab[6][(lo >> 8) & 0xFF] ^ crc32c_tab[5][(lo >> 16) & 0xFF] ^
            crc32c_tab[4][lo >> 24] ^ crc32c_tab[3][hi & 0xFF] ^ crc32c_tab[2][(hi >> 8) & 0xFF] ^
            crc32c_tab[1][(hi >> 16) & 0xFF] ^ crc32c_tab[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ crc32c_tab[0][(c ^ *p++) & 0xFF];
    return c;
}

#ifdef PYTHANOS_CRC32C_HW
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t c32, const uint8_t *p, size_t n) {
    uint64_t c = c32;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

/* hw = 0 forces the tables (tests compare both paths). */
static inline uint32_t crc32c_extend_with(uint32_t crc, const uint8_t *p, size_t n, int hw) {
    uint32_t c = ~crc;
#ifdef PYTHANOS_CRC32C_HW
    if (hw && crc32c_hw_ok) return ~crc32c_hw(c, p, n);
#else
    (void)hw;
#endif
    return ~crc32c_sw(c, p, n);
}

static inline uint32_t crc32c_extend(uint32_t crc, const uint8_t *p, size_t n) {
    return crc32c_extend_with(crc, p, n, 1);
}

static inline uint32_t crc32c_value(const uint8_t *p, size_t n) { return crc32c_extend(0, p, n); }

/* crc32c(data, value=0, hardware=True) -> int: the module-level test hook every kernel that
 * includes this header exposes (tests/test_crc32c.py checks it against google-crc32c). Defined
 * only where the Python API is available. */
#ifdef Py_PYTHON_H
static PyObject *crc32c_py(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"data", "value", "hardware", NULL};
    Py_buffer b;
    unsigned long value = 0;
    int hw = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|kp", kwlist, &b, &value, &hw)) return NULL;
    if (value > 0xFFFFFFFFul) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "value must be a 32-bit checksum");
        return NULL;
    }
    uint32_t c = crc32c_extend_with((uint32_t)value, (const uint8_t *)b.buf, (size_t)b.len, hw);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

#define CRC32C_METHOD                                                                                   \
    {"crc32c", (PyCFunction)(void (*)(void))crc32c_py, METH_VARARGS | METH_KEYWORDS,                    \
     "crc32c(data, value=0, hardware=True) -> int: CRC-32C as google_crc32c.extend(value, data) (tests)"}
#endif

#endif /* PYTHANOS_CRC32C_H */
