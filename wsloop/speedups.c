/* wsloop._speedups: RFC 6455 masking (XOR with a repeated 4-byte key) in C.
 *
 * Optional: setup.py builds it when a compiler is there; wsloop.framing falls back to pure
 * Python without it (or with WSLOOP_NO_SPEEDUPS set).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* dst[i] = src[i] ^ key[i % 4] for i in 0..n-1; dst may be src (in place). Eight bytes at a
 * time with the key repeated to 64 bits, then the last 0-7 bytes one by one (their key index
 * restarts at 0, since every word holds two whole keys). memcpy makes unaligned loads and
 * stores well defined; compilers turn it into plain 8-byte moves. */
static void
xor_key(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char *key)
{
    unsigned char key8[8];
    uint64_t k, word;
    Py_ssize_t i = 0;

    memcpy(key8, key, 4);
    memcpy(key8 + 4, key, 4);
    memcpy(&k, key8, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&word, src + i, 8);
        word ^= k;
        memcpy(dst + i, &word, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

/* The 4-byte key from any bytes-like object, into key[4]; 0 on success, -1 with an exception. */
static int
get_key(PyObject *obj, unsigned char *key)
{
    Py_buffer view;

    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyErr_Format(PyExc_ValueError, "a mask key has 4 bytes, not %zd", view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(key, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

static int
check_nargs(const char *name, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", name, nargs);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, key, /) -> bytes\n\n"
"data XORed with the 4-byte key repeated (masks and unmasks). data: any bytes-like object.");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer view;
    PyObject *result;

    (void)module;
    if (check_nargs("apply_mask", nargs) < 0 || get_key(args[1], key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) == 0) {
        result = PyBytes_FromStringAndSize(NULL, view.len);
        if (result != NULL) {
            xor_key((unsigned char *)PyBytes_AS_STRING(result), view.buf, view.len, key);
        }
        PyBuffer_Release(&view);
        return result;
    }
    /* Not C-contiguous (e.g. memoryview(b)[::2]): copy its bytes in order, then mask them. */
    if (!PyErr_ExceptionMatches(PyExc_BufferError)) {
        return NULL;
    }
    PyErr_Clear();
    if (PyObject_GetBuffer(args[0], &view, PyBUF_FULL_RO) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, view.len);
    if (result != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        if (PyBuffer_ToContiguous(out, &view, view.len, 'C') < 0) {
            Py_CLEAR(result);
        }
        else {
            xor_key(out, out, view.len, key);
        }
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(mask_into_doc,
"mask_into(buffer, key, /) -> None\n\n"
"XOR a writable, C-contiguous buffer with the 4-byte key repeated, in place.");

static PyObject *
mask_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer view;

    (void)module;
    if (check_nargs("mask_into", nargs) < 0 || get_key(args[1], key) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "mask_into() needs a writable, C-contiguous buffer, not %.100s",
                         Py_TYPE(args[0])->tp_name);
        }
        return NULL;
    }
    xor_key(view.buf, view.buf, view.len, key);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *empty_bytearray(PyObject *module, PyObject *arg);
PyDoc_STRVAR(empty_bytearray_doc,
"empty_bytearray(n, /) -> bytearray\n\n"
"A bytearray of n bytes left uninitialised (no zero fill): for a buffer that is read into.");

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {"mask_into", (PyCFunction)(void (*)(void))mask_into, METH_FASTCALL, mask_into_doc},
    {"empty_bytearray", (PyCFunction)empty_bytearray, METH_O, empty_bytearray_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "wsloop._speedups",
    .m_doc = "RFC 6455 masking in C (wsloop.framing uses it when it is built).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}

/* empty_bytearray(n): a bytearray of n bytes whose contents are not initialised (bytearray(n)
 * zero-fills them): the buffer a large frame's payload is received into (recv_into) overwrites
 * every byte, so the zero fill would be one wasted pass over it. */
static PyObject *
empty_bytearray(PyObject *module, PyObject *arg)
{
    Py_ssize_t n;

    (void)module;
    n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, n);
}
