/* The encoder thread's queue loop for line-protocol destinations in C (queue_take.take_py is the
 * same loop in Python; Pipeline._take_records calls whichever was built).
 *
 * take(queue, batch, room, control) moves records from the left of ``queue`` (a deque) to the end
 * of ``batch`` (a list) until ``room`` were moved, the queue is empty, or an item whose type is one
 * of ``control`` (a tuple of types: flush and WAL markers) is met, which is popped and returned.
 * Returns (that item or None, the room left). The Python loop costs about 100-190 ns a record
 * (a pop, a type check, an append, a count); this one about a tenth of that.
 *
 * No Python code runs inside the loop (deque.popleft and list.append call none, and the types are
 * compared by identity), so no other thread and no signal handler changes the queue while it
 * runs: the GIL is held throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *popleft_name; /* "popleft" */

static PyObject *
take(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "take(queue, batch, room, control)");
        return NULL;
    }
    PyObject *queue = args[0], *batch = args[1], *control = args[3];
    Py_ssize_t room = PyLong_AsSsize_t(args[2]);
    if (room == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_CheckExact(batch) || !PyTuple_CheckExact(control)) {
        PyErr_SetString(PyExc_TypeError, "take: batch must be a list and control a tuple of types");
        return NULL;
    }
    Py_ssize_t queued = PyObject_Size(queue);
    if (queued < 0) {
        return NULL;
    }
    PyObject *popleft = PyObject_GetAttr(queue, popleft_name);
    if (popleft == NULL) {
        return NULL;
    }
    Py_ssize_t controls = PyTuple_GET_SIZE(control);
    PyObject *met = NULL;
    while (room > 0 && queued > 0) {
        PyObject *item = PyObject_CallNoArgs(popleft);
        if (item == NULL) {
            Py_DECREF(popleft);
            return NULL; /* the queue was not a deque, or was emptied by something else */
        }
        queued--;
        PyObject *type = (PyObject *)Py_TYPE(item);
        for (Py_ssize_t k = 0; k < controls; k++) {
            if (type == PyTuple_GET_ITEM(control, k)) {
                met = item;
                break;
            }
        }
        if (met != NULL) {
            break;
        }
        if (PyList_Append(batch, item) < 0) { /* out of memory: the record goes back, not lost */
            PyObject *error_type, *error_value, *error_tb;
            PyErr_Fetch(&error_type, &error_value, &error_tb);
            PyObject *back = PyObject_CallMethod(queue, "appendleft", "O", item);
            Py_XDECREF(back);
            PyErr_Restore(error_type, error_value, error_tb);
            Py_DECREF(item);
            Py_DECREF(popleft);
            return NULL;
        }
        Py_DECREF(item); /* the batch holds it now */
        room--;
    }
    Py_DECREF(popleft);
    PyObject *result = Py_BuildValue("(On)", met == NULL ? Py_None : met, room);
    Py_XDECREF(met);
    return result;
}

static PyMethodDef methods[] = {
    {"take", (PyCFunction)(void (*)(void))take, METH_FASTCALL,
     "take(queue, batch, room, control) -> (control item or None, room left)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_queue_take",
    .m_doc = "The encoder thread's queue loop in C (see queue_take.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__queue_take(void)
{
    popleft_name = PyUnicode_InternFromString("popleft");
    if (popleft_name == NULL) {
        return NULL;
    }
    return PyModule_Create(&module_def);
}
