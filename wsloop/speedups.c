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

/* send_shared(frame, socks): a broadcast's one frame written to many plain sockets, one
 * send(MSG_DONTWAIT | MSG_NOSIGNAL) each, without a Python call per socket (the reactor's
 * broadcast, wsloop/poller/reactor.py). The GIL is held throughout: no other thread can close a
 * socket (and have its fd reused) between reading its fd and writing to it; the caller passes a
 * few hundred sockets at a time so other threads still get their turn. POSIX only (MSG_NOSIGNAL);
 * without it the reactor keeps its Python loop. */
#ifndef _WIN32
#include <sys/socket.h>
#endif
#if !defined(_WIN32) && defined(MSG_NOSIGNAL) && defined(MSG_DONTWAIT)
PyDoc_STRVAR(send_shared_doc,
"send_shared(frame, socks, /) -> list[tuple[int, int]]\n\n"
"Write the bytes-like frame to each socket of the list socks with one non-blocking\n"
"send() each. Returns (index, sent) for each socket that did not take all of it: sent is\n"
"the bytes it took, 0 when it took none (full, an error, or a closed socket: the caller\n"
"queues the rest, and its flush meets the error).");

static PyObject *fileno_name; /* "fileno", interned on the first call */

static PyObject *
send_shared(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_shared() takes exactly 2 arguments");
        return NULL;
    }
    if (!PyList_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "send_shared() needs a list of sockets, not %.100s",
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *socks = args[1];
    PyObject *missed = NULL;
    if (fileno_name == NULL && (fileno_name = PyUnicode_InternFromString("fileno")) == NULL)
        goto fail;
    missed = PyList_New(0);
    if (missed == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(socks); i++) {
        PyObject *sock = PyList_GET_ITEM(socks, i);
        /* sock.fileno() (-1 once closed) by an interned name: PyObject_AsFileDescriptor interns
           "fileno" on every call, most of this loop's own cost. A reference is held: fileno()
           could run Python code (a subclass) that changes the list. */
        Py_INCREF(sock);
        PyObject *number = PyObject_CallMethodNoArgs(sock, fileno_name);
        Py_DECREF(sock);
        long fd = -1;
        if (number != NULL) {
            fd = PyLong_AsLong(number);
            Py_DECREF(number);
        }
        Py_ssize_t sent = 0;
        if (fd < 0 || fd > INT_MAX) {
            PyErr_Clear(); /* not a socket any more (closed, or fileno() failed): nothing sent */
        } else {
            sent = send((int)fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (sent < 0)
                sent = 0;
        }
        if (sent != view.len) {
            PyObject *item = Py_BuildValue("(nn)", i, sent);
            if (item == NULL || PyList_Append(missed, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
            Py_DECREF(item);
        }
    }
    PyBuffer_Release(&view);
    return missed;
fail:
    Py_XDECREF(missed);
    PyBuffer_Release(&view);
    return NULL;
}
#define SEND_SHARED_METHOD \
    {"send_shared", (PyCFunction)(void (*)(void))send_shared, METH_FASTCALL, send_shared_doc},
#else
#define SEND_SHARED_METHOD
#endif

static PyObject *small_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyDoc_STRVAR(small_frame_doc,
"small_frame(data, pos, /) -> bytes | None\n\n"
"The unmasked payload of the frame at data[pos:] if that is a whole masked, final, uncompressed\n"
"text or binary frame of at most 125 bytes (its header 6 bytes), a text frame's payload valid\n"
"UTF-8; else None (for the general parser). data: bytes or any C-contiguous bytes-like object.");

static PyObject *empty_bytearray(PyObject *module, PyObject *arg);
PyDoc_STRVAR(empty_bytearray_doc,
"empty_bytearray(n, /) -> bytearray\n\n"
"A bytearray of n bytes left uninitialised (no zero fill): for a buffer that is read into.");

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {"mask_into", (PyCFunction)(void (*)(void))mask_into, METH_FASTCALL, mask_into_doc},
    SEND_SHARED_METHOD
    {"small_frame", (PyCFunction)(void (*)(void))small_frame, METH_FASTCALL, small_frame_doc},
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

/* -- small_frame: the protocol's fast path for small client frames (wsloop.protocol.Protocol.feed).
 *
 * One call per frame instead of the Python header parse, slice, unmask and UTF-8 check. Anything
 * it does not take (another opcode, a fragment, RSV bits, an unmasked or incomplete frame, a
 * length over 125, invalid UTF-8) gives None, and the Python parser handles the frame as before:
 * it alone raises protocol errors, so the close codes are unchanged. */

/* Whether n bytes are all ASCII: eight at a time, then one by one. */
static int
all_ascii(const unsigned char *p, Py_ssize_t n)
{
    uint64_t acc = 0, word;
    Py_ssize_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&word, p + i, 8);
        acc |= word;
    }
    for (; i < n; i++) {
        acc |= p[i];
    }
    return (acc & UINT64_C(0x8080808080808080)) == 0;
}

/* The frame at buf[pos:n] unmasked into a new bytes, or None (see small_frame_doc). */
static PyObject *
small_frame_at(const unsigned char *buf, Py_ssize_t n, Py_ssize_t pos)
{
    const unsigned char *p;
    Py_ssize_t len;
    PyObject *result, *text;
    unsigned char *out;

    if (pos < 0 || n - pos < 6) {
        Py_RETURN_NONE;
    }
    p = buf + pos;
    if ((p[0] != 0x81 && p[0] != 0x82) || p[1] < 0x80 || p[1] > 0xFD) {
        Py_RETURN_NONE;
    }
    len = p[1] & 0x7F;
    if (len > n - pos - 6) {
        Py_RETURN_NONE;
    }
    result = PyBytes_FromStringAndSize(NULL, len);
    if (result == NULL) {
        return NULL;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    xor_key(out, p + 6, len, p + 2);
    if (p[0] == 0x81 && !all_ascii(out, len)) {
        /* The same check as the Python parser's payload.decode("utf-8"). */
        text = PyUnicode_DecodeUTF8((const char *)out, len, "strict");
        if (text == NULL) {
            Py_DECREF(result);
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                return NULL;
            }
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        Py_DECREF(text);
    }
    return result;
}

static PyObject *
small_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos;
    Py_buffer view;
    PyObject *result;

    (void)module;
    if (check_nargs("small_frame", nargs) < 0) {
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyBytes_CheckExact(args[0])) {
        return small_frame_at((const unsigned char *)PyBytes_AS_STRING(args[0]),
                              PyBytes_GET_SIZE(args[0]), pos);
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = small_frame_at(view.buf, view.len, pos);
    PyBuffer_Release(&view);
    return result;
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
