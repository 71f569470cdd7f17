/* log()'s per-call work in C: the compact record (what points.compact_record does in Python, in
 * one call), and the check that lets durable mode's WAL line skip a search for null.
 *
 * compact(names, measurement, tags, fields, time_ns) -> tuple | None | False
 *     names is (shape id, measurement, tag keys, field keys): the names of the caller's last
 *     compact record. With the same names (in the same order) and only plain values, the record
 *     (shape id, time_ns, *tag values, *field values); None when the names differ (the caller
 *     looks the shape up and asks again); False when the record is not one to queue compact
 *     (not plain dicts, a value to freeze, an unusable time, names that have no shape).
 *
 * The dicts are read with PyDict_Next while the GIL is held and nothing is allocated, so no
 * Python code runs and another thread cannot change them half way: the keys and values read are
 * one state of each dict.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* float, int, str, bool, None: values.IMMUTABLE_TYPES (test_compact_queue checks the two agree). */
static int
is_plain(PyObject *value)
{
    return PyFloat_CheckExact(value) || PyLong_CheckExact(value) || PyUnicode_CheckExact(value)
           || PyBool_Check(value) || value == Py_None;
}

static int
same_key(PyObject *key, PyObject *name)
{
    if (key == name) {
        return 1;
    }
    if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(name)) {
        return 0;
    }
    return PyUnicode_GET_LENGTH(key) == PyUnicode_GET_LENGTH(name) && PyUnicode_Compare(key, name) == 0;
}

/* Copies the dict's values into record from `at`; 0 when a key differs from its name, else 1
 * (and *mixed set when a value is not plain: the names are still checked to the end, since
 * other names are the answer that comes first). */
static int
take(PyObject *dict, PyObject *keys, PyObject *record, Py_ssize_t at, int *mixed)
{
    Py_ssize_t position = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &position, &key, &value)) {
        if (i >= PyTuple_GET_SIZE(keys) || !same_key(key, PyTuple_GET_ITEM(keys, i))) {
            return 0;
        }
        if (!is_plain(value)) {
            *mixed = 1;
        }
        Py_INCREF(value);
        PyTuple_SET_ITEM(record, at + i, value);
        i++;
    }
    return 1;
}

static PyObject *
compact(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "compact() takes 5 arguments");
        return NULL;
    }
    PyObject *names = args[0], *measurement = args[1], *tags = args[2], *fields = args[3], *time_ns = args[4];
    if (!PyDict_CheckExact(tags) || !PyDict_CheckExact(fields) || !PyUnicode_CheckExact(measurement)
        || !PyLong_CheckExact(time_ns)) {
        Py_RETURN_FALSE;
    }
    if (!PyTuple_CheckExact(names) || PyTuple_GET_SIZE(names) != 4 || !PyTuple_CheckExact(PyTuple_GET_ITEM(names, 2))
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(names, 3))) {
        PyErr_SetString(PyExc_TypeError, "compact(): names is (shape id, measurement, tag keys, field keys)");
        return NULL;
    }
    PyObject *tag_keys = PyTuple_GET_ITEM(names, 2), *field_keys = PyTuple_GET_ITEM(names, 3);
    Py_ssize_t n_tags = PyTuple_GET_SIZE(tag_keys), n_fields = PyTuple_GET_SIZE(field_keys);
    /* Made before the dicts are read: making a tuple may run a garbage collection, and with it
     * Python code (finalizers, gc callbacks) and so other threads, which may change the dicts. */
    PyObject *record = PyTuple_New(2 + n_tags + n_fields);
    if (record == NULL) {
        return NULL;
    }
    if (PyDict_GET_SIZE(tags) != n_tags || PyDict_GET_SIZE(fields) != n_fields
        || !same_key(measurement, PyTuple_GET_ITEM(names, 1))) {
        Py_DECREF(record);
        Py_RETURN_NONE;
    }
    PyObject *id = PyTuple_GET_ITEM(names, 0);
    int mixed = 0;
    if (!take(tags, tag_keys, record, 2, &mixed) || !take(fields, field_keys, record, 2 + n_tags, &mixed)) {
        Py_DECREF(record); /* the slots not yet set are NULL, which tuple dealloc skips */
        Py_RETURN_NONE;
    }
    if (mixed) {
        Py_DECREF(record);
        Py_RETURN_FALSE;
    }
    /* The names match: whether they have a shape (id -1: not str keys, or the registry full). */
    if (!PyLong_CheckExact(id) || PyLong_AsLong(id) < 0) {
        PyErr_Clear();
        Py_DECREF(record);
        Py_RETURN_FALSE;
    }
    Py_INCREF(id);
    PyTuple_SET_ITEM(record, 0, id);
    Py_INCREF(time_ns);
    PyTuple_SET_ITEM(record, 1, time_ns);
    /* Floats, ints, strs, bools and None only, none of them tracked by the garbage collector: the
     * record cannot be part of a cycle, so it need not be tracked either. Tracked, each queued
     * record was traversed by the next young collection (CPython untracks such a tuple only
     * then): 0.17-0.24 µs a point, on the thread that logs. */
    PyObject_GC_UnTrack(record);
    return record;
}

/* writes_no_null(tags, fields) -> bool
 *     True when every value of the two dicts is a str, an int, a bool or a finite float, for which
 *     orjson writes no JSON null (it writes null for None, NaN and the infinities); False for any
 *     other value, and for anything but two exact dicts. The WAL line (spool.encode_record) then
 *     needs no search of its bytes for a null: a value walk is a tenth of that search. */
static PyObject *
writes_no_null(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "writes_no_null(tags, fields)");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 2; i++) {
        PyObject *part = args[i], *key, *value;
        Py_ssize_t pos = 0;
        if (!PyDict_CheckExact(part)) {
            Py_RETURN_FALSE;
        }
        while (PyDict_Next(part, &pos, &key, &value)) {
            if (PyFloat_CheckExact(value)) {
                if (!isfinite(PyFloat_AS_DOUBLE(value))) {
                    Py_RETURN_FALSE;
                }
            }
            else if (!(PyUnicode_CheckExact(value) || PyLong_CheckExact(value) || PyBool_Check(value))) {
                Py_RETURN_FALSE;
            }
        }
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"compact", (PyCFunction)(void (*)(void))compact, METH_FASTCALL,
     "compact(names, measurement, tags, fields, time_ns) -> tuple | None | False"},
    {"writes_no_null", (PyCFunction)(void (*)(void))writes_no_null, METH_FASTCALL,
     "writes_no_null(tags, fields) -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_compact_record",
    .m_doc = "log()'s compact record and the WAL line's null check in C (see points.compact_record).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__compact_record(void)
{
    return PyModule_Create(&module_def);
}
