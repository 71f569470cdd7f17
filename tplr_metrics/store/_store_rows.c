/* The local store's rows in C: what database.encode_points does for each point with orjson and
 * hashlib, in one call per batch (the store's insert rate: its encoding was 3-4 µs of the 8-9 a
 * point took, on the benchmark's 10 tags and 6 floats).
 *
 * rows(run, points, dumps) -> (rows, nbytes, undecided)
 *     points is a list of Points (measurement, tags, fields, time_ns); dumps is orjson.dumps.
 *     rows holds, per point, the row (run, measurement, time_ns, series, tags JSON, fields JSON)
 *     or None where this loop leaves the point to the Python one (undecided counts those): a
 *     time that is not an int64, a measurement, tag key or tag value that is not a plain str or
 *     holds a lone surrogate, more than MAX_TAGS tags, or fields orjson refuses or writes a null
 *     in. nbytes is the UTF-8 length of the JSON of the rows made.
 *
 *     The tags JSON is byte for byte orjson.dumps(tags, option=OPT_SORT_KEYS): keys in code point
 *     order (UTF-8 byte order is the same), '"' and '\' escaped, control characters as \b \t \n
 *     \f \r or \u00xx, everything else as it is. The fields JSON is dumps(fields) itself. The
 *     series is blake2b with an 8-byte digest (RFC 7693) of measurement + NUL + tags JSON, read as
 *     a little-endian signed 64-bit int: database._series, whose values stores already hold.
 *
 * The tags are read with PyDict_Next while the GIL is held and written out at once, before
 * anything that runs Python code: dumps(fields) may (orjson reads a dataclass's attributes), and
 * so may making a tuple (a collection), and either could change the tags and free the texts the
 * loop points into. Then the fields, as the Python loop takes them: tags first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_TAGS 64

/* --- blake2b (RFC 7693), unkeyed, the digest size a parameter ------------------------------- */

typedef struct {
    uint64_t h[8];
    uint64_t t[2];
    uint8_t b[128];
    size_t c;
    size_t outlen;
} blake2b_state;

static const uint64_t blake2b_iv[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
    0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL, 0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
};

static const uint8_t blake2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

#define ROTR64(x, y) (((x) >> (y)) ^ ((x) << (64 - (y))))

#define B2B_G(a, b, c, d, x, y)         \
    do {                                \
        v[a] = v[a] + v[b] + x;         \
        v[d] = ROTR64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];             \
        v[b] = ROTR64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + y;         \
        v[d] = ROTR64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];             \
        v[b] = ROTR64(v[b] ^ v[c], 63); \
    } while (0)

static uint64_t
load64_le(const uint8_t *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24)
           | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static void
blake2b_compress(blake2b_state *s, int last)
{
    uint64_t v[16], m[16];
    int i;
    for (i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = blake2b_iv[i];
    }
    v[12] ^= s->t[0];
    v[13] ^= s->t[1];
    if (last) {
        v[14] = ~v[14];
    }
    for (i = 0; i < 16; i++) {
        m[i] = load64_le(&s->b[8 * i]);
    }
    for (i = 0; i < 12; i++) {
        const uint8_t *sg = blake2b_sigma[i];
        B2B_G(0, 4, 8, 12, m[sg[0]], m[sg[1]]);
        B2B_G(1, 5, 9, 13, m[sg[2]], m[sg[3]]);
        B2B_G(2, 6, 10, 14, m[sg[4]], m[sg[5]]);
        B2B_G(3, 7, 11, 15, m[sg[6]], m[sg[7]]);
        B2B_G(0, 5, 10, 15, m[sg[8]], m[sg[9]]);
        B2B_G(1, 6, 11, 12, m[sg[10]], m[sg[11]]);
        B2B_G(2, 7, 8, 13, m[sg[12]], m[sg[13]]);
        B2B_G(3, 4, 9, 14, m[sg[14]], m[sg[15]]);
    }
    for (i = 0; i < 8; i++) {
        s->h[i] ^= v[i] ^ v[i + 8];
    }
}

static void
blake2b_init(blake2b_state *s, size_t outlen)
{
    int i;
    for (i = 0; i < 8; i++) {
        s->h[i] = blake2b_iv[i];
    }
    s->h[0] ^= 0x01010000ULL ^ (uint64_t)outlen; /* fanout 1, depth 1, no key */
    s->t[0] = s->t[1] = 0;
    s->c = 0;
    s->outlen = outlen;
}

static void
blake2b_update(blake2b_state *s, const uint8_t *in, size_t n)
{
    while (n > 0) {
        if (s->c == 128) { /* a full block, and more to come: it is not the last */
            s->t[0] += 128;
            if (s->t[0] < 128) {
                s->t[1]++;
            }
            blake2b_compress(s, 0);
            s->c = 0;
        }
        size_t take = 128 - s->c < n ? 128 - s->c : n;
        memcpy(s->b + s->c, in, take);
        s->c += take;
        in += take;
        n -= take;
    }
}

/* The digest's first 8 bytes as a little-endian signed int (the digest is 8 bytes here). */
static int64_t
blake2b_final64(blake2b_state *s)
{
    s->t[0] += s->c;
    if (s->t[0] < s->c) {
        s->t[1]++;
    }
    while (s->c < 128) {
        s->b[s->c++] = 0;
    }
    blake2b_compress(s, 1);
    return (int64_t)s->h[0]; /* h[0] holds digest bytes 0-7, little-endian */
}

/* --- tags JSON, as orjson spells it ----------------------------------------------------------- */

typedef struct {
    const char *key;
    Py_ssize_t key_len;
    const char *value;
    Py_ssize_t value_len;
} tag_pair;

static int
key_before(const tag_pair *a, const tag_pair *b)
{
    Py_ssize_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int order = memcmp(a->key, b->key, (size_t)n);
    return order < 0 || (order == 0 && a->key_len < b->key_len);
}

static const char hex_digits[] = "0123456789abcdef";

/* Writes text as a JSON string at out; returns the end. out has room for 6 bytes per byte + 2. */
static char *
write_string(char *out, const char *text, Py_ssize_t n, int *ascii)
{
    Py_ssize_t i, run = 0;
    *out++ = '"';
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            if (c >= 0x80) {
                *ascii = 0;
            }
            continue;
        }
        memcpy(out, text + run, (size_t)(i - run));
        out += i - run;
        run = i + 1;
        *out++ = '\\';
        switch (c) {
            case '"': *out++ = '"'; break;
            case '\\': *out++ = '\\'; break;
            case '\b': *out++ = 'b'; break;
            case '\t': *out++ = 't'; break;
            case '\n': *out++ = 'n'; break;
            case '\f': *out++ = 'f'; break;
            case '\r': *out++ = 'r'; break;
            default:
                *out++ = 'u';
                *out++ = '0';
                *out++ = '0';
                *out++ = hex_digits[c >> 4];
                *out++ = hex_digits[c & 15];
        }
    }
    memcpy(out, text + run, (size_t)(n - run));
    out += n - run;
    *out++ = '"';
    return out;
}

/* A str from UTF-8 JSON text: a one-byte-kind copy when it is ASCII. */
static PyObject *
json_text(const char *data, Py_ssize_t n, int ascii)
{
    if (ascii) {
        PyObject *text = PyUnicode_New(n, 127);
        if (text != NULL) {
            memcpy(PyUnicode_1BYTE_DATA(text), data, (size_t)n);
        }
        return text;
    }
    return PyUnicode_DecodeUTF8(data, n, "strict");
}

static int
utf8_of(PyObject *text, const char **data, Py_ssize_t *n)
{
    if (!PyUnicode_CheckExact(text)) {
        return 0;
    }
    *data = PyUnicode_AsUTF8AndSize(text, n);
    if (*data == NULL) { /* a lone surrogate: the Python loop decides */
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static int
has_null(const char *data, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i + 4 <= n; i++) {
        if (data[i] == 'n' && data[i + 1] == 'u' && data[i + 2] == 'l' && data[i + 3] == 'l') {
            return 1;
        }
    }
    return 0;
}

/* --- one row ---------------------------------------------------------------------------------- */

/* The row for point, Py_None (a new reference) when the Python loop must decide, NULL on error. */
static PyObject *
make_row(PyObject *run, PyObject *point, PyObject *dumps, Py_ssize_t *nbytes)
{
    PyObject *measurement, *tags, *fields, *time_ns, *key, *value;
    tag_pair pairs[MAX_TAGS];
    Py_ssize_t count = 0, position = 0, size = 2, i, j, measurement_len;
    const char *measurement_utf8;
    char stack[4096], *buffer = stack, *out;
    int overflow = 0, ascii = 1;

    if (!PyTuple_Check(point) || PyTuple_GET_SIZE(point) != 4) {
        Py_RETURN_NONE;
    }
    measurement = PyTuple_GET_ITEM(point, 0);
    tags = PyTuple_GET_ITEM(point, 1);
    fields = PyTuple_GET_ITEM(point, 2);
    time_ns = PyTuple_GET_ITEM(point, 3);
    if (!PyLong_CheckExact(time_ns)) {
        Py_RETURN_NONE;
    }
    (void)PyLong_AsLongLongAndOverflow(time_ns, &overflow);
    if (overflow) {
        Py_RETURN_NONE;
    }
    /* The tags first, as the Python loop takes them, and written out before dumps runs: orjson
     * runs Python code for some values (a dataclass's attributes), which could change the tags
     * and free the texts the pointers below point into. Nothing from here to the written JSON
     * runs Python code. */
    if (!utf8_of(measurement, &measurement_utf8, &measurement_len) || !PyDict_CheckExact(tags)
        || PyDict_GET_SIZE(tags) > MAX_TAGS) {
        Py_RETURN_NONE;
    }
    while (PyDict_Next(tags, &position, &key, &value)) {
        tag_pair pair;
        if (!utf8_of(key, &pair.key, &pair.key_len) || !utf8_of(value, &pair.value, &pair.value_len)) {
            Py_RETURN_NONE;
        }
        for (j = count; j > 0 && key_before(&pair, &pairs[j - 1]); j--) { /* insertion sort: few tags */
            pairs[j] = pairs[j - 1];
        }
        pairs[j] = pair;
        count++;
        size += 6 * (pair.key_len + pair.value_len) + 6;
    }

    if (size > (Py_ssize_t)sizeof(stack)) {
        buffer = PyMem_Malloc((size_t)size);
        if (buffer == NULL) {
            return PyErr_NoMemory();
        }
    }
    out = buffer;
    *out++ = '{';
    for (i = 0; i < count; i++) {
        if (i) {
            *out++ = ',';
        }
        out = write_string(out, pairs[i].key, pairs[i].key_len, &ascii);
        *out++ = ':';
        out = write_string(out, pairs[i].value, pairs[i].value_len, &ascii);
    }
    *out++ = '}';
    Py_ssize_t tags_len = out - buffer;

    blake2b_state hash;
    blake2b_init(&hash, 8);
    blake2b_update(&hash, (const uint8_t *)measurement_utf8, (size_t)measurement_len);
    blake2b_update(&hash, (const uint8_t *)"", 1);
    blake2b_update(&hash, (const uint8_t *)buffer, (size_t)tags_len);
    int64_t series_value = blake2b_final64(&hash);

    PyObject *fields_json = PyObject_CallOneArg(dumps, fields);
    if (fields_json == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            goto undecided;
        }
        goto error;
    }
    if (!PyBytes_Check(fields_json)) {
        Py_DECREF(fields_json);
        goto undecided;
    }
    const char *fields_data = PyBytes_AS_STRING(fields_json);
    Py_ssize_t fields_len = PyBytes_GET_SIZE(fields_json);
    int fields_ascii = 1;
    for (i = 0; i < fields_len; i++) {
        if ((unsigned char)fields_data[i] >= 0x80) {
            fields_ascii = 0;
            break;
        }
    }
    /* orjson writes NaN and infinities as null: the Python loop takes such a point the careful way */
    if (has_null(fields_data, fields_len)) {
        Py_DECREF(fields_json);
        goto undecided;
    }

    PyObject *tags_text = json_text(buffer, tags_len, ascii);
    if (buffer != stack) {
        PyMem_Free(buffer);
    }
    PyObject *fields_text = json_text(fields_data, fields_len, fields_ascii);
    Py_DECREF(fields_json);
    PyObject *series = PyLong_FromLongLong(series_value);
    if (tags_text == NULL || fields_text == NULL || series == NULL) {
        Py_XDECREF(tags_text);
        Py_XDECREF(fields_text);
        Py_XDECREF(series);
        return NULL;
    }
    PyObject *row = PyTuple_New(6);
    if (row == NULL) {
        Py_DECREF(tags_text);
        Py_DECREF(fields_text);
        Py_DECREF(series);
        return NULL;
    }
    Py_INCREF(run);
    Py_INCREF(measurement);
    Py_INCREF(time_ns);
    PyTuple_SET_ITEM(row, 0, run);
    PyTuple_SET_ITEM(row, 1, measurement);
    PyTuple_SET_ITEM(row, 2, time_ns);
    PyTuple_SET_ITEM(row, 3, series);
    PyTuple_SET_ITEM(row, 4, tags_text);
    PyTuple_SET_ITEM(row, 5, fields_text);
    PyObject_GC_UnTrack(row); /* ints, strs and None: it cannot be part of a cycle */
    *nbytes += tags_len + fields_len;
    return row;

undecided:
    if (buffer != stack) {
        PyMem_Free(buffer);
    }
    Py_RETURN_NONE;
error:
    if (buffer != stack) {
        PyMem_Free(buffer);
    }
    return NULL;
}

static PyObject *
rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "rows(run, points: list, dumps)");
        return NULL;
    }
    PyObject *run = args[0], *points = args[1], *dumps = args[2];
    Py_ssize_t n = PyList_GET_SIZE(points), nbytes = 0, undecided = 0, i;
    PyObject *made = PyList_New(n);
    if (made == NULL) {
        return NULL;
    }
    for (i = 0; i < n && i < PyList_GET_SIZE(points); i++) {
        PyObject *point = PyList_GET_ITEM(points, i);
        Py_INCREF(point); /* dumps cannot change the list, but the point must outlive its row */
        PyObject *row = make_row(run, point, dumps, &nbytes);
        Py_DECREF(point);
        if (row == NULL) {
            Py_DECREF(made);
            return NULL;
        }
        if (row == Py_None) {
            undecided++;
        }
        PyList_SET_ITEM(made, i, row);
    }
    for (; i < n; i++) { /* the list shrank under us (it cannot here): leave the rest undecided */
        Py_INCREF(Py_None);
        PyList_SET_ITEM(made, i, Py_None);
        undecided++;
    }
    return Py_BuildValue("(Nnn)", made, nbytes, undecided);
}

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(run, points, dumps) -> (rows, nbytes, undecided)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_store_rows",
    .m_doc = "The local store's rows in C (see database.encode_points).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__store_rows(void)
{
    return PyModule_Create(&module_def);
}
