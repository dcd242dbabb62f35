/* amy_worker._native: the worker's optional fast path, in C against CPython's
 * stable ABI (stable_abi.h), built by build.rs and shipped inside the binary.
 *
 * Why: turning nginx's uwsgi vars into the environ is most of the pure-Python
 * worker's own cost per request (~86 k of ~140 k instructions for a browser's
 * 18 vars, bench/hotpath.py), and every str slice of it costs ~900 instructions
 * in the interpreter. Here it is one pass over the bytes.
 *
 * Contract with python/amy_worker/protocol.py: parse_vars(buf, end, max_vars,
 * base) returns (environ, number of vars) for the vars block buf[4:end], the
 * environ being the vars updated with the dict base (the listener's wsgi.*
 * entries, as protocol.py's env.update(base)), when the block is well-formed and
 * has no repeated key and at most max_vars vars; otherwise None,
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

/* nginx sends the same keys in the same order request after request, and most
 * values again too (method, protocol, host, the browser's headers): the str
 * object at each position is kept and reused while the bytes match, so a var
 * costs a compare instead of a decode, an allocation and a free, and a key no
 * hash either (a str caches its hash, which the dict insert uses). Only
 * touched with the GIL held. */
#define POSITIONS 64
#define KEY_MAX 40
#define VALUE_MAX 64
typedef struct {
    Py_ssize_t len;
    PyObject *str;
    unsigned char bytes[VALUE_MAX];
} cached;
static cached keys[POSITIONS], values[POSITIONS];

/* The environ's shape: a copy of the last clean environ with its vars' values
 * set to None (the base's kept). While the key at every position still comes
 * from the cache (the same key sequence) and the base is the same dict, the
 * environ starts as a copy of it: its table already has the size it ends with,
 * so the inserts only replace values (no resize, no new entry), the base is in
 * already, and every var of the copy is written, so nothing of an earlier
 * request survives. Any change of the key cache drops it. */
static PyObject *shape, *shape_base;
static Py_ssize_t shape_pairs, shape_base_size;
/* A var has a key of the base (an nginx `uwsgi_param wsgi.url_scheme`): the
 * base must be applied again after the vars, as protocol.py does. */
static int shape_overlaps;

static void drop_shape(void)
{
    if (shape) {
        Py_DecRef(shape);
        Py_DecRef(shape_base);
        shape = shape_base = 0;
    }
}

static int same(const unsigned char *a, const unsigned char *b, Py_ssize_t n)
{
    for (; n >= 8; a += 8, b += 8, n -= 8) {
        unsigned long x, y;
        __builtin_memcpy(&x, a, 8); /* inlined: unaligned 8-byte loads */
        __builtin_memcpy(&y, b, 8);
        if (x != y)
            return 0;
    }
    while (n-- > 0)
        if (*a++ != *b++)
            return 0;
    return 1;
}

static int hit(const cached *c, const unsigned char *p, Py_ssize_t n)
{
    return c->str && c->len == n && same(c->bytes, p, n);
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

/* A new reference to the latin-1 str of p[0:n] through cache entry c (NULL:
 * not cached). NULL on a Python error (MemoryError). */
static PyObject *decode(cached *c, const unsigned char *p, Py_ssize_t n, Py_ssize_t max)
{
    PyObject *str = PyUnicode_DecodeLatin1((const char *)p, n, 0);
    if (str && c && n <= max) {
        if (c->str)
            Py_DecRef(c->str);
        Py_IncRef(str);
        c->str = str;
        c->len = n;
        for (Py_ssize_t i = 0; i < n; i++)
            c->bytes[i] = p[i];
    }
    return str;
}

static PyObject *none(void)
{
    Py_IncRef(&_Py_NoneStruct);
    return &_Py_NoneStruct;
}

/* Walks the block without making objects: 0 if it is well-formed, -1 if not (a
 * length runs past the end, or more than max_vars vars). Sets *pairs, and
 * *all_hit when every key equals the cached key of its position. */
static int scan(const unsigned char *b, Py_ssize_t end, Py_ssize_t max_vars, Py_ssize_t *pairs, int *all_hit)
{
    Py_ssize_t i = 4, n = 0;
    int all = 1;
    while (i < end) {
        /* Bounds in the order the fields come; all differences are >= 0. */
        if (end - i < 2)
            return -1;
        Py_ssize_t kl = b[i] | (b[i + 1] << 8), k = i + 2;
        if (end - k < kl + 2)
            return -1;
        Py_ssize_t vl = b[k + kl] | (b[k + kl + 1] << 8), v = k + kl + 2;
        if (end - v < vl)
            return -1;
        if (all && !(n < POSITIONS && hit(&keys[n], b + k, kl)))
            all = 0;
        if (++n > max_vars)
            return -1;
        i = v + vl;
    }
    *pairs = n;
    *all_hit = all;
    return 0;
}

/* Keeps the shape of env, the environ of a clean block whose n keys are now
 * keys[0..n-1]. */
static void keep_shape(PyObject *env, PyObject *base, Py_ssize_t n)
{
    /* Optional: on any failure (MemoryError) there is just no shape, and the
     * error is cleared so that the caller's result stands. */
    PyObject *copy = PyDict_Copy(env);
    if (!copy) {
        PyErr_Clear();
        return;
    }
    int overlaps = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int in_base = PyDict_Contains(base, keys[i].str);
        if (in_base < 0 || PyDict_SetItem(copy, keys[i].str, &_Py_NoneStruct) < 0) {
            PyErr_Clear();
            Py_DecRef(copy);
            return;
        }
        overlaps |= in_base;
    }
    drop_shape();
    shape = copy;
    Py_IncRef(base);
    shape_base = base;
    shape_pairs = n;
    shape_base_size = PyDict_Size(base);
    shape_overlaps = overlaps;
}

static PyObject *parse_vars(PyObject *self, PyObject *args)
{
    (void)self;
    if (PyTuple_Size(args) != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_vars(buf, end, max_vars, base)");
        return 0;
    }
    PyObject *buf = PyTuple_GetItem(args, 0), *base = PyTuple_GetItem(args, 3);
    if (buf->ob_type != &PyByteArray_Type || base->ob_type != &PyDict_Type) {
        PyErr_SetString(PyExc_TypeError, "parse_vars: buf must be a bytearray, base a dict");
        return 0;
    }
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GetItem(args, 1));
    Py_ssize_t max_vars = PyLong_AsSsize_t(PyTuple_GetItem(args, 2));
    if ((end == -1 || max_vars == -1) && PyErr_Occurred())
        return 0;
    if (end < 4 || end > PyByteArray_Size(buf))
        return none();
    const unsigned char *b = (const unsigned char *)PyByteArray_AsString(buf);
    Py_ssize_t pairs;
    int all_hit;
    if (scan(b, end, max_vars, &pairs, &all_hit) < 0)
        return none();
    int copied = all_hit && shape && pairs == shape_pairs && base == shape_base && PyDict_Size(base) == shape_base_size;
    PyObject *env = copied ? PyDict_Copy(shape) : PyDict_New();
    if (!env)
        return 0;
    Py_ssize_t i = 4, n = 0;
    int cacheable = pairs <= POSITIONS;
    while (i < end) { /* scan() checked every bound */
        Py_ssize_t kl = b[i] | (b[i + 1] << 8), k = i + 2;
        Py_ssize_t vl = b[k + kl] | (b[k + kl + 1] << 8), v = k + kl + 2;
        cached *kc = n < POSITIONS ? &keys[n] : 0, *vc = n < POSITIONS ? &values[n] : 0;
        PyObject *key;
        if (all_hit) {
            key = kc->str;
            Py_IncRef(key);
        } else if (kc && hit(kc, b + k, kl)) {
            key = kc->str;
            Py_IncRef(key);
        } else {
            if (!valid_key(b + k, kl))
                goto fallback;
            if (kc && kl <= KEY_MAX)
                drop_shape(); /* the key sequence changes */
            else
                cacheable = 0;
            key = decode(kc, b + k, kl, KEY_MAX);
            if (!key)
                goto error;
        }
        PyObject *value;
        if (vc && hit(vc, b + v, vl)) {
            value = vc->str;
            Py_IncRef(value);
        } else if (!(value = decode(vc, b + v, vl, VALUE_MAX))) {
            Py_DecRef(key);
            goto error;
        }
        int failed = PyDict_SetItem(env, key, value);
        Py_DecRef(key);
        Py_DecRef(value);
        if (failed)
            goto error;
        n++;
        /* A repeated key (the dict did not grow): the stdlib parser joins or
         * refuses. A copied shape cannot hold one: its key sequence was clean. */
        if (!copied && PyDict_Size(env) != n)
            goto fallback;
        i = v + vl;
    }
    if ((!copied || shape_overlaps) && PyDict_Update(env, base) < 0)
        goto error;
    if (!copied && cacheable)
        keep_shape(env, base, pairs);
    PyObject *count = PyLong_FromSsize_t(pairs);
    if (!count)
        goto error;
    PyObject *result = PyTuple_Pack(2, env, count);
    Py_DecRef(count);
    Py_DecRef(env);
    return result;
fallback:
    Py_DecRef(env);
    return none();
error:
    Py_DecRef(env);
    return 0;
}

static PyMethodDef methods[] = {
    {"parse_vars", parse_vars, METH_VARARGS,
     "parse_vars(buf: bytearray, end: int, max_vars: int, base: dict) -> (dict, int) | None\n"
     "The environ of the uwsgi vars block buf[4:end] updated with base, and the number of vars;\n"
     "or None when the stdlib parser must decide."},
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
#define CONTRACT_VERSION 2

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
