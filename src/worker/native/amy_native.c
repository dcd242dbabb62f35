/* amy_worker._native: the worker's optional fast path, in C against CPython's
 * stable ABI (stable_abi.h), built by build.rs and shipped inside the binary.
 *
 * Why: turning nginx's uwsgi vars into the environ is most of the pure-Python
 * worker's own cost per request (~86 k of ~140 k instructions for a browser's
 * 18 vars, bench/hotpath.py), and every str slice of it costs ~900 instructions
 * in the interpreter. Here it is one pass over the bytes.
 *
 * Contract with python/amy_worker/protocol.py: parse_vars(buf, end, max_vars)
 * returns the environ dict of the vars block buf[4:end] when the block is
 * well-formed and has no repeated key and at most max_vars vars; otherwise None,
 * and the caller runs its stdlib parser, which refuses the request with the
 * exact reason or joins the repeated headers. So every error message and every
 * duplicate rule exists once, in Python; this code only has to be right about
 * the common case, and tests/python/test_native.py checks it against the stdlib
 * parser on the same inputs.
 *
 * Freestanding (no libc): the module depends only on symbols of the Python
 * process that loads it, so it loads into a glibc or a musl CPython alike. */
#include "stable_abi.h"

/* uWSGI and nginx var names: [A-Za-z0-9_.-]+ (protocol.py's _KEY_RE). */
static unsigned char key_char[256];

/* nginx sends the same keys in the same order request after request: the key's
 * str object at each position is kept and reused while the bytes match, so a
 * key costs a compare instead of a decode, an allocation and a hash (a str
 * caches its hash, which the dict insert uses). Only touched with the GIL held. */
#define KEY_CACHE 64
#define KEY_MAX 40
static struct {
    Py_ssize_t len;
    unsigned char bytes[KEY_MAX];
    PyObject *str;
} key_cache[KEY_CACHE];

static int same(const unsigned char *a, const unsigned char *b, Py_ssize_t n)
{
    while (n-- > 0)
        if (*a++ != *b++)
            return 0;
    return 1;
}

static int valid_key(const unsigned char *p, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    while (n-- > 0)
        if (!key_char[*p++])
            return 0;
    return 1;
}

/* A new reference to the key at position pos, NULL with *bad = 1 for an invalid
 * name, NULL with *bad = 0 on a Python error (MemoryError). */
static PyObject *key_object(Py_ssize_t pos, const unsigned char *p, Py_ssize_t n, int *bad)
{
    *bad = 0;
    if (pos < KEY_CACHE && n <= KEY_MAX) {
        if (key_cache[pos].str && key_cache[pos].len == n && same(key_cache[pos].bytes, p, n)) {
            Py_IncRef(key_cache[pos].str);
            return key_cache[pos].str;
        }
    }
    if (!valid_key(p, n)) {
        *bad = 1;
        return 0;
    }
    PyObject *key = PyUnicode_DecodeLatin1((const char *)p, n, 0);
    if (key && pos < KEY_CACHE && n <= KEY_MAX) {
        if (key_cache[pos].str)
            Py_DecRef(key_cache[pos].str);
        Py_IncRef(key);
        key_cache[pos].str = key;
        key_cache[pos].len = n;
        for (Py_ssize_t i = 0; i < n; i++)
            key_cache[pos].bytes[i] = p[i];
    }
    return key;
}

static PyObject *none(void)
{
    Py_IncRef(&_Py_NoneStruct);
    return &_Py_NoneStruct;
}

static PyObject *parse_vars(PyObject *self, PyObject *args)
{
    (void)self;
    if (PyTuple_Size(args) != 3) {
        PyErr_SetString(PyExc_TypeError, "parse_vars(buf, end, max_vars)");
        return 0;
    }
    PyObject *buf = PyTuple_GetItem(args, 0);
    if (buf->ob_type != &PyByteArray_Type) {
        PyErr_SetString(PyExc_TypeError, "parse_vars: buf must be a bytearray");
        return 0;
    }
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GetItem(args, 1));
    Py_ssize_t max_vars = PyLong_AsSsize_t(PyTuple_GetItem(args, 2));
    if ((end == -1 || max_vars == -1) && PyErr_Occurred())
        return 0;
    if (end < 4 || end > PyByteArray_Size(buf))
        return none();
    const unsigned char *b = (const unsigned char *)PyByteArray_AsString(buf);
    PyObject *env = PyDict_New();
    if (!env)
        return 0;
    Py_ssize_t i = 4, pairs = 0;
    while (i < end) {
        /* Bounds in the order the fields come; all differences are >= 0. */
        if (end - i < 2)
            goto fallback;
        Py_ssize_t kl = b[i] | (b[i + 1] << 8), k = i + 2;
        if (end - k < kl + 2)
            goto fallback;
        Py_ssize_t vl = b[k + kl] | (b[k + kl + 1] << 8), v = k + kl + 2;
        if (end - v < vl)
            goto fallback;
        int bad;
        PyObject *key = key_object(pairs, b + k, kl, &bad);
        if (!key) {
            if (bad)
                goto fallback;
            goto error;
        }
        PyObject *value = PyUnicode_DecodeLatin1((const char *)b + v, vl, 0);
        if (!value) {
            Py_DecRef(key);
            goto error;
        }
        int failed = PyDict_SetItem(env, key, value);
        Py_DecRef(key);
        Py_DecRef(value);
        if (failed)
            goto error;
        pairs++;
        /* A repeated key (the dict did not grow) or too many vars: the stdlib
         * parser joins, or refuses with the reason. */
        if (PyDict_Size(env) != pairs || pairs > max_vars)
            goto fallback;
        i = v + vl;
    }
    return env;
fallback:
    Py_DecRef(env);
    return none();
error:
    Py_DecRef(env);
    return 0;
}

static PyMethodDef methods[] = {
    {"parse_vars", parse_vars, METH_VARARGS,
     "parse_vars(buf: bytearray, end: int, max_vars: int) -> dict | None\n"
     "The environ of the uwsgi vars block buf[4:end], or None when the stdlib parser must decide."},
    {0, 0, 0, 0},
};

static PyModuleDef module = {
    {{1, 0}, 0, 0, 0},
    "amy_worker._native",
    "The worker's native fast path (see src/worker/native/amy_native.c).",
    -1,
    methods,
    0, 0, 0, 0,
};

/* Bumped when parse_vars' contract changes; python/amy_worker/native.py checks it. */
#define CONTRACT_VERSION 1

PyMODINIT_FUNC PyInit__native(void)
{
    for (int c = 'a'; c <= 'z'; c++)
        key_char[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++)
        key_char[c] = 1;
    for (int c = '0'; c <= '9'; c++)
        key_char[c] = 1;
    key_char['_'] = key_char['.'] = key_char['-'] = 1;
    PyObject *m = PyModule_Create2(&module, PYTHON_ABI_VERSION);
    if (m && PyModule_AddIntConstant(m, "CONTRACT_VERSION", CONTRACT_VERSION) < 0) {
        Py_DecRef(m);
        return 0;
    }
    return m;
}
