/* The few declarations of CPython's stable ABI (PEP 384, "abi3") that
 * amy_native.c uses, written out so that building amy-emperor needs a C compiler
 * but no Python headers: the module is built once, with the binary, and loads in
 * any CPython >= 3.8 whatever the app's venv is.
 *
 * Everything here is part of the stable ABI (Misc/stable_abi.toml in CPython):
 * the layouts of PyObject (non-debug build), PyModuleDef_Base, PyModuleDef and
 * PyMethodDef, and the functions and data below, all present since 3.2. A
 * CPython whose ABI differs (a free-threaded build, a Py_TRACE_REFS build) refuses
 * abi3 modules at import, and the worker falls back to its stdlib parser. */
#ifndef AMY_STABLE_ABI_H
#define AMY_STABLE_ABI_H

typedef long Py_ssize_t; /* ssize_t on every Linux target CPython supports */
typedef struct _typeobject PyTypeObject;

typedef struct _object {
    Py_ssize_t ob_refcnt;
    PyTypeObject *ob_type;
} PyObject;

typedef PyObject *(*PyCFunction)(PyObject *, PyObject *);

typedef struct PyMethodDef {
    const char *ml_name;
    PyCFunction ml_meth;
    int ml_flags;
    const char *ml_doc;
} PyMethodDef;

#define METH_VARARGS 0x0001

typedef struct PyModuleDef_Base {
    PyObject ob_base;
    PyObject *(*m_init)(void);
    Py_ssize_t m_index;
    PyObject *m_copy;
} PyModuleDef_Base;

typedef struct PyModuleDef {
    PyModuleDef_Base m_base;
    const char *m_name;
    const char *m_doc;
    Py_ssize_t m_size;
    PyMethodDef *m_methods;
    void *m_slots;
    void *m_traverse;
    void *m_clear;
    void *m_free;
} PyModuleDef;

#define PYTHON_ABI_VERSION 3

extern PyTypeObject PyByteArray_Type;
extern PyTypeObject PyDict_Type;
extern PyObject _Py_NoneStruct;
extern PyObject *PyExc_TypeError;

PyObject *PyModule_Create2(PyModuleDef *def, int apiver);
int PyModule_AddIntConstant(PyObject *module, const char *name, long value);
Py_ssize_t PyTuple_Size(PyObject *tuple);
PyObject *PyTuple_GetItem(PyObject *tuple, Py_ssize_t pos);
Py_ssize_t PyLong_AsSsize_t(PyObject *number);
PyObject *PyErr_Occurred(void);
void PyErr_SetString(PyObject *type, const char *message);
void PyErr_Clear(void);
char *PyByteArray_AsString(PyObject *bytearray);
Py_ssize_t PyByteArray_Size(PyObject *bytearray);
PyObject *PyDict_New(void);
int PyDict_SetItem(PyObject *dict, PyObject *key, PyObject *value);
Py_ssize_t PyDict_Size(PyObject *dict);
PyObject *PyDict_Copy(PyObject *dict);
int PyDict_Contains(PyObject *dict, PyObject *key);
int PyDict_Update(PyObject *dict, PyObject *other);
int PyDict_Next(PyObject *dict, Py_ssize_t *pos, PyObject **key, PyObject **value);
PyObject *PyTuple_Pack(Py_ssize_t n, ...);
PyObject *PyLong_FromSsize_t(Py_ssize_t value);
PyObject *PyUnicode_DecodeLatin1(const char *s, Py_ssize_t size, const char *errors);
void Py_IncRef(PyObject *o);
void Py_DecRef(PyObject *o);

#define PyMODINIT_FUNC __attribute__((visibility("default"))) PyObject *

#endif
