/* The batch line encoder's two per-record loops in C (see line_batches.py, which owns every
 * decision: this file only repeats, record by record, what its pure-Python loop does for compact
 * records of a shape it has already written, and stops where anything else is needed).
 *
 * collect(records, start, fast, builder, made, shapes, tag_texts, numbers) -> index
 *     Walks records from `start` while each is a compact record whose shape id is in `fast` with
 *     the same value types, appending what the Python loop appends: the record to `made`, its
 *     shape to `shapes`, its tag text to `tag_texts`, its field values then its time to `numbers`.
 *     Returns the index of the first record it leaves to Python (len(records) when none).
 *
 * fill(shapes, tag_texts, numbers_json, built_lines) -> list[str]
 *     The lines: for a shape, its pieces around the tag text and the number texts (cut from the
 *     one orjson text of `numbers`); for None, the next built line.
 *
 * The spec `fast` maps a shape id to (see _LineShape.native_spec):
 *     (shape, types, n_tags, tag_parts, tag_limit, kinds, generation, float_set, float_count,
 *      tag_part)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

enum {
    S_SHAPE, S_TYPES, S_NTAGS, S_TAG_PARTS, S_TAG_LIMIT, S_KINDS, S_GENERATION, S_FLOAT_SET,
    S_FLOAT_COUNT, S_TAG_PART, S_SIZE
};

static PyObject *generation_name; /* "generation" */

/* The builder's generation, or -2 (never a snapshot's) when it cannot be read. */
static long long
read_generation(PyObject *builder)
{
    PyObject *value = PyObject_GetAttr(builder, generation_name);
    if (value == NULL) {
        PyErr_Clear();
        return -2;
    }
    long long generation = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (generation == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -2;
    }
    return generation;
}

/* The record's ",key=value" tag text, a new reference; NULL with no error set when Python must
 * look at the record (a value to clean, a series key near its bound); NULL with an error set
 * when something failed. *called is set when Python code ran (a tag seen for the first time). */
static PyObject *
tag_text(PyObject *spec, PyObject *record, Py_ssize_t n_tags, int *called)
{
    PyObject *parts = PyTuple_GET_ITEM(spec, S_TAG_PARTS);
    PyObject *stack[16];
    PyObject **items = stack;
    PyObject *text = NULL;
    if (n_tags > 16) {
        items = PyMem_Malloc(sizeof(PyObject *) * (size_t)n_tags);
        if (items == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    Py_ssize_t got = 0;
    for (; got < n_tags; got++) {
        PyObject *value = PyTuple_GET_ITEM(record, 2 + got);
        PyObject *part = PyDict_GetItemWithError(PyTuple_GET_ITEM(parts, got), value); /* borrowed */
        if (part == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            /* First seen: the shape's _tag_part(i, value) decides and remembers it. */
            *called = 1;
            PyObject *index = PyLong_FromSsize_t(got);
            if (index == NULL) {
                goto done;
            }
            part = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(spec, S_TAG_PART), index, value, NULL);
            Py_DECREF(index);
            if (part == NULL) {
                goto done;
            }
        } else {
            Py_INCREF(part);
        }
        if (!PyUnicode_CheckExact(part)) { /* None: a value the builder must clean */
            Py_DECREF(part);
            goto done;
        }
        items[got] = part;
    }
    {
        /* The parts joined into one new str (a str is not tracked by the garbage collector, so
         * making it runs no collection, and no Python code). */
        Py_ssize_t length = 0;
        Py_UCS4 widest = 0;
        for (Py_ssize_t i = 0; i < n_tags; i++) {
            length += PyUnicode_GET_LENGTH(items[i]);
            Py_UCS4 most = PyUnicode_MAX_CHAR_VALUE(items[i]);
            widest = most > widest ? most : widest;
        }
        text = PyUnicode_New(length, widest);
        if (text == NULL) {
            goto done;
        }
        Py_ssize_t at = 0;
        for (Py_ssize_t i = 0; i < n_tags; i++) {
            PyUnicode_CopyCharacters(text, at, items[i], 0, PyUnicode_GET_LENGTH(items[i]));
            at += PyUnicode_GET_LENGTH(items[i]);
        }
    }
    if (text != NULL) {
        long long limit = PyLong_AsLongLong(PyTuple_GET_ITEM(spec, S_TAG_LIMIT));
        if (PyUnicode_GET_LENGTH(text) > limit) { /* the builder cuts it (and says so) */
            Py_CLEAR(text);
        }
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        Py_DECREF(items[i]);
    }
    if (items != stack) {
        PyMem_Free(items);
    }
    return text;
}

/* Whether the record's field values are stored as they are; appends them (an int of a field
 * known as float as a float) to `numbers`, then its time. -1 on error, 0 when Python must look. */
static int
add_numbers(PyObject *spec, PyObject *record, Py_ssize_t n_tags, PyObject *numbers)
{
    PyObject *kinds = PyTuple_GET_ITEM(spec, S_KINDS);
    const char *kind = PyBytes_AS_STRING(kinds);
    Py_ssize_t n_fields = PyBytes_GET_SIZE(kinds);
    Py_ssize_t first = 2 + n_tags;
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        PyObject *value = PyTuple_GET_ITEM(record, first + i);
        if (kind[i] == 'f') {
            if (!isfinite(PyFloat_AS_DOUBLE(value))) {
                return 0;
            }
        } else {
            int overflow = 0;
            long long as_int = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow || (as_int == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                return 0;
            }
        }
    }
    Py_ssize_t start = PyList_GET_SIZE(numbers);
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        PyObject *value = PyTuple_GET_ITEM(record, first + i);
        int failed;
        if (kind[i] == 'F') {
            PyObject *as_float = PyFloat_FromDouble(PyLong_AsDouble(value));
            if (as_float == NULL) {
                goto undo;
            }
            failed = PyList_Append(numbers, as_float);
            Py_DECREF(as_float);
        } else {
            failed = PyList_Append(numbers, value);
        }
        if (failed) {
            goto undo;
        }
    }
    if (PyList_Append(numbers, PyTuple_GET_ITEM(record, 1)) == 0) {
        return 1;
    }
undo:
    PyList_SetSlice(numbers, start, PyList_GET_SIZE(numbers), NULL);
    return -1;
}

/* Whether a spec has the layout native_spec() gives it (checked once per spec and call: a
 * malformed one is a bug in line_batches.py, and must not crash the process). */
static int
valid_spec(PyObject *spec)
{
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != S_SIZE) {
        return 0;
    }
    PyObject *types = PyTuple_GET_ITEM(spec, S_TYPES), *n_tags = PyTuple_GET_ITEM(spec, S_NTAGS);
    PyObject *parts = PyTuple_GET_ITEM(spec, S_TAG_PARTS), *kinds = PyTuple_GET_ITEM(spec, S_KINDS);
    PyObject *float_set = PyTuple_GET_ITEM(spec, S_FLOAT_SET);
    if (!PyTuple_CheckExact(types) || !PyLong_CheckExact(n_tags) || !PyTuple_CheckExact(parts)
        || !PyBytes_CheckExact(kinds) || !PyLong_CheckExact(PyTuple_GET_ITEM(spec, S_TAG_LIMIT))
        || !PyLong_CheckExact(PyTuple_GET_ITEM(spec, S_GENERATION))
        || !PyLong_CheckExact(PyTuple_GET_ITEM(spec, S_FLOAT_COUNT))
        || !(float_set == Py_None || PyAnySet_Check(float_set)) || !PyCallable_Check(PyTuple_GET_ITEM(spec, S_TAG_PART))) {
        return 0;
    }
    Py_ssize_t tags = PyLong_AsSsize_t(n_tags);
    if (tags < 0 || tags > PyTuple_GET_SIZE(types) || PyTuple_GET_SIZE(parts) != tags
        || PyBytes_GET_SIZE(kinds) != PyTuple_GET_SIZE(types) - tags) {
        PyErr_Clear();
        return 0;
    }
    for (Py_ssize_t i = 0; i < tags; i++) {
        /* A tag's values are str or int (hashed and compared with no Python code run). */
        PyObject *type = PyTuple_GET_ITEM(types, i);
        if (!PyDict_CheckExact(PyTuple_GET_ITEM(parts, i))
            || (type != (PyObject *)&PyUnicode_Type && type != (PyObject *)&PyLong_Type)) {
            return 0;
        }
    }
    const char *kind = PyBytes_AS_STRING(kinds);
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(kinds); i++) {
        /* Each field's kind matches its value type: 'f' a float, 'i' and 'F' an int. */
        PyObject *type = PyTuple_GET_ITEM(types, tags + i);
        if (kind[i] == 'f' ? type != (PyObject *)&PyFloat_Type
                           : (kind[i] != 'i' && kind[i] != 'F') || type != (PyObject *)&PyLong_Type) {
            return 0;
        }
    }
    return 1;
}

/* One compact record of a shape in `fast`: 1 when written (appended to the lists), 0 when left
 * to Python, -1 on error. *generation caches the builder's (-3: to be read). */
static int
collect_one(PyObject *record, PyObject *spec, PyObject *builder, long long *generation, PyObject *made,
            PyObject *shapes, PyObject *tag_texts, PyObject *numbers)
{
    PyObject *types = PyTuple_GET_ITEM(spec, S_TYPES);
    Py_ssize_t n_values = PyTuple_GET_SIZE(types);
    if (PyTuple_GET_SIZE(record) != n_values + 2) {
        return 0; /* its dicts changed while log() read them */
    }
    for (Py_ssize_t v = 0; v < n_values; v++) {
        if ((PyObject *)Py_TYPE(PyTuple_GET_ITEM(record, v + 2)) != PyTuple_GET_ITEM(types, v)) {
            return 0; /* other value types: another shape */
        }
    }
    PyObject *float_set = PyTuple_GET_ITEM(spec, S_FLOAT_SET);
    if (float_set != Py_None) { /* it has int fields: the int-or-float choices must still hold */
        if (*generation == -3) {
            *generation = read_generation(builder);
        }
        if (*generation != PyLong_AsLongLong(PyTuple_GET_ITEM(spec, S_GENERATION))
            || PySet_GET_SIZE(float_set) != PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, S_FLOAT_COUNT))) {
            return 0;
        }
    }
    Py_ssize_t n_tags = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, S_NTAGS));
    int called = 0;
    PyObject *text = tag_text(spec, record, n_tags, &called);
    if (called) {
        *generation = -3; /* Python ran: read it again */
    }
    if (text == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_ssize_t numbers_before = PyList_GET_SIZE(numbers);
    int stored = add_numbers(spec, record, n_tags, numbers);
    if (stored <= 0) {
        Py_DECREF(text);
        return stored;
    }
    /* A record goes into every list or into none (Python goes on from it after an error). */
    Py_ssize_t lines_before = PyList_GET_SIZE(made), texts_before = PyList_GET_SIZE(tag_texts);
    int failed = PyList_Append(tag_texts, text);
    Py_DECREF(text);
    if (!failed) {
        failed = PyList_Append(made, record);
        if (!failed) {
            failed = PyList_Append(shapes, PyTuple_GET_ITEM(spec, S_SHAPE));
        }
    }
    if (failed) {
        PyObject *error, *value, *traceback;
        PyErr_Fetch(&error, &value, &traceback);
        PyList_SetSlice(numbers, numbers_before, PyList_GET_SIZE(numbers), NULL);
        PyList_SetSlice(tag_texts, texts_before, PyList_GET_SIZE(tag_texts), NULL);
        PyList_SetSlice(made, lines_before, PyList_GET_SIZE(made), NULL);
        PyErr_Restore(error, value, traceback);
        return -1;
    }
    return 1;
}

static PyObject *
collect(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "collect() takes 8 arguments");
        return NULL;
    }
    PyObject *records = args[0], *fast = args[2], *builder = args[3];
    PyObject *made = args[4], *shapes = args[5], *tag_texts = args[6], *numbers = args[7];
    if (!PyList_CheckExact(records) || !PyDict_CheckExact(fast) || !PyList_CheckExact(made)
        || !PyList_CheckExact(shapes) || !PyList_CheckExact(tag_texts) || !PyList_CheckExact(numbers)) {
        PyErr_SetString(PyExc_TypeError, "collect() takes lists and a dict");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (i < 0) {
        PyErr_SetString(PyExc_ValueError, "collect(): a negative start");
        return NULL;
    }
    long long generation = -3; /* read when a shape with int fields first needs it */
    PyObject *checked = NULL;  /* the last spec found valid in this call */
    for (; i < PyList_GET_SIZE(records); i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        if (!PyTuple_CheckExact(record) || PyTuple_GET_SIZE(record) < 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(record, 0))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(record, 1))) {
            break; /* not compact */
        }
        PyObject *spec = PyDict_GetItemWithError(fast, PyTuple_GET_ITEM(record, 0));
        if (spec == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            break;
        }
        if (spec != checked) {
            if (!valid_spec(spec)) {
                PyErr_SetString(PyExc_TypeError, "collect(): a malformed shape spec");
                return NULL;
            }
            checked = spec;
        }
        /* Held while a first-seen tag runs Python code (_tag_part), which could let them go. */
        Py_INCREF(record);
        Py_INCREF(spec);
        int done = collect_one(record, spec, builder, &generation, made, shapes, tag_texts, numbers);
        Py_DECREF(spec);
        Py_DECREF(record);
        if (done < 0) {
            return NULL;
        }
        if (done == 0) {
            break;
        }
    }
    return PyLong_FromSsize_t(i);
}

/* A growing byte buffer for one line. */
typedef struct {
    char *data;
    Py_ssize_t size, capacity;
    int ascii;
} Buffer;

static int
buffer_add(Buffer *buffer, const char *data, Py_ssize_t size)
{
    if (buffer->size + size > buffer->capacity) {
        Py_ssize_t capacity = (buffer->size + size) * 2;
        char *grown = PyMem_Realloc(buffer->data, (size_t)capacity);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        buffer->data = grown;
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->size, data, (size_t)size);
    buffer->size += size;
    return 0;
}

static int
buffer_add_text(Buffer *buffer, PyObject *text)
{
    if (!PyUnicode_CheckExact(text)) {
        PyErr_SetString(PyExc_TypeError, "fill(): a line piece that is not a str");
        return -1;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) {
        return -1;
    }
    if (!PyUnicode_IS_ASCII(text)) {
        buffer->ascii = 0;
    }
    return buffer_add(buffer, utf8, size);
}

static PyObject *
buffer_text(Buffer *buffer)
{
    if (!buffer->ascii) {
        return PyUnicode_DecodeUTF8(buffer->data, buffer->size, "strict");
    }
    PyObject *text = PyUnicode_New(buffer->size, 127);
    if (text != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(text), buffer->data, (size_t)buffer->size);
    }
    return text;
}

static PyObject *pieces_name; /* "pieces" */

static PyObject *
fill(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "fill() takes 4 arguments");
        return NULL;
    }
    PyObject *shapes = args[0], *tag_texts = args[1], *numbers = args[2], *built = args[3];
    if (!PyList_CheckExact(shapes) || !PyList_CheckExact(tag_texts) || !PyBytes_CheckExact(numbers)
        || !PyList_CheckExact(built)) {
        PyErr_SetString(PyExc_TypeError, "fill() takes lists and bytes");
        return NULL;
    }
    const char *at = PyBytes_AS_STRING(numbers);
    const char *end = at + PyBytes_GET_SIZE(numbers);
    if (at < end && *at == '[') { /* the JSON list's brackets */
        at++;
        end--;
    }
    Py_ssize_t n = PyList_GET_SIZE(shapes);
    Py_ssize_t next_built = 0, next_text = 0;
    PyObject *lines = PyList_New(n);
    if (lines == NULL) {
        return NULL;
    }
    Buffer buffer = {NULL, 0, 0, 1};
    PyObject *last_shape = NULL, *pieces = NULL; /* the pieces of the shape before, borrowed */
    PyObject *pieces_held = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *shape = PyList_GET_ITEM(shapes, i);
        PyObject *line;
        if (shape == Py_None) {
            if (next_built >= PyList_GET_SIZE(built)) {
                PyErr_SetString(PyExc_ValueError, "fill(): fewer built lines than built points");
                goto fail;
            }
            line = PyList_GET_ITEM(built, next_built++);
            Py_INCREF(line);
            PyList_SET_ITEM(lines, i, line);
            continue;
        }
        if (shape != last_shape) {
            Py_XDECREF(pieces_held);
            pieces_held = PyObject_GetAttr(shape, pieces_name);
            if (pieces_held == NULL) {
                goto fail;
            }
            if (!PyTuple_CheckExact(pieces_held) || PyTuple_GET_SIZE(pieces_held) < 2) {
                PyErr_SetString(PyExc_TypeError, "fill(): a shape's pieces are not a tuple");
                goto fail;
            }
            pieces = pieces_held;
            last_shape = shape;
        }
        if (next_text >= PyList_GET_SIZE(tag_texts)) {
            PyErr_SetString(PyExc_ValueError, "fill(): fewer tag texts than lines");
            goto fail;
        }
        buffer.size = 0;
        buffer.ascii = 1;
        if (buffer_add_text(&buffer, PyTuple_GET_ITEM(pieces, 0))
            || buffer_add_text(&buffer, PyList_GET_ITEM(tag_texts, next_text++))) {
            goto fail;
        }
        Py_ssize_t n_pieces = PyTuple_GET_SIZE(pieces);
        for (Py_ssize_t p = 1; p < n_pieces; p++) {
            if (buffer_add_text(&buffer, PyTuple_GET_ITEM(pieces, p))) {
                goto fail;
            }
            if (at >= end) {
                PyErr_SetString(PyExc_ValueError, "fill(): fewer numbers than the lines need");
                goto fail;
            }
            const char *comma = memchr(at, ',', (size_t)(end - at));
            const char *stop = comma == NULL ? end : comma;
            if (buffer_add(&buffer, at, stop - at)) {
                goto fail;
            }
            at = comma == NULL ? end : comma + 1;
        }
        line = buffer_text(&buffer);
        if (line == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(lines, i, line);
    }
    Py_XDECREF(pieces_held);
    PyMem_Free(buffer.data);
    return lines;
fail:
    Py_XDECREF(pieces_held);
    PyMem_Free(buffer.data);
    Py_DECREF(lines); /* the unset items are NULL, which list dealloc skips */
    return NULL;
}

static PyMethodDef methods[] = {
    {"collect", (PyCFunction)(void (*)(void))collect, METH_FASTCALL,
     "collect(records, start, fast, builder, made, shapes, tag_texts, numbers) -> index"},
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL,
     "fill(shapes, tag_texts, numbers_json, built_lines) -> lines"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_line_fill",
    .m_doc = "The batch line encoder's per-record loops in C (see line_batches.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__line_fill(void)
{
    generation_name = PyUnicode_InternFromString("generation");
    pieces_name = PyUnicode_InternFromString("pieces");
    if (generation_name == NULL || pieces_name == NULL) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}
