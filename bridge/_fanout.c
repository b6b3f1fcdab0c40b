/* bridge._fanout.deliver: bridge.hub.deliver_py, compiled, with the next subscribers'
 * objects prefetched.
 *
 * Why C. At a few thousand subscribers a delivery's time outside the kernel is not
 * interpretation but waiting for memory: each subscriber's subscription, its `Direct`, its
 * connection's `Gate`, the transport's bound `write` and the transport itself are cold in
 * the CPU cache, and the loop reads them one after the other, each read waiting for the
 * one before. The same loop compiled but without prefetching measured no faster than the
 * Python one (bench/results/README.md). What helps is asking for the next subscribers'
 * objects while the current one's write system call runs: a chain of five dependent loads
 * is walked one link per iteration, a few subscribers ahead, with `__builtin_prefetch`,
 * which never faults and never blocks.
 *
 * What it does is exactly what deliver_py does, through the same Python attribute reads,
 * comparisons and calls; the prefetching is a hint on the side. It reads slots directly
 * only to learn addresses to prefetch, only for objects of the exact classes seen on the
 * first call (whose types it keeps alive), and each walk starts again from the tuple with
 * no Python code running during it, so every object it reads is alive.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"

static PyObject *s_direct, *s_parked, *s_gate, *s_open, *s_last_seq, *s_socket_id, *s_key,
    *s_encode, *s_write, *s_push, *s_seq, *s_origin, *s_encoded;

/* -- prefetching ------------------------------------------------------------------------ */

/* How many subscribers ahead the walk starts: one link of the five per iteration. */
#define AHEAD 5

typedef struct {
    PyTypeObject *sub, *direct, *gate; /* strong references, once known */
    Py_ssize_t o_direct, o_gate, o_write;
} Layout;

static Layout layout = {NULL, NULL, NULL, -1, -1, -1};

static Py_ssize_t member_offset(PyTypeObject *tp, PyObject *name) {
    PyObject *d = _PyType_Lookup(tp, name); /* borrowed; sets no error */
    if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX) return m->offset;
    }
    return -1;
}

/* Learn the classes and slot offsets from a subscriber that has a Direct. Errors are
 * swallowed: without a layout the loop only loses its prefetching. */
static void learn(PyObject *sub) {
    PyObject *direct = PyObject_GetAttr(sub, s_direct);
    if (direct == NULL) { PyErr_Clear(); return; }
    if (direct != Py_None) {
        PyObject *gate = PyObject_GetAttr(direct, s_gate);
        if (gate == NULL) {
            PyErr_Clear();
        } else {
            Py_ssize_t a = member_offset(Py_TYPE(sub), s_direct);
            Py_ssize_t b = member_offset(Py_TYPE(direct), s_gate);
            Py_ssize_t c = member_offset(Py_TYPE(gate), s_write);
            if (a >= 0 && b >= 0 && c >= 0) {
                layout.sub = (PyTypeObject *)Py_NewRef(Py_TYPE(sub));
                layout.direct = (PyTypeObject *)Py_NewRef(Py_TYPE(direct));
                layout.gate = (PyTypeObject *)Py_NewRef(Py_TYPE(gate));
                layout.o_direct = a;
                layout.o_gate = b;
                layout.o_write = c;
            }
            Py_DECREF(gate);
        }
    }
    Py_DECREF(direct);
}

/* The object in slot `off` of `o` if `o` is exactly of class `tp` (NULL if unset). */
static inline PyObject *slot(PyObject *o, PyTypeObject *tp, Py_ssize_t off) {
    if (o == NULL || Py_TYPE(o) != tp) return NULL;
    return *(PyObject **)((char *)o + off);
}

static inline void fetch(const void *p) {
    if (p != NULL) { /* the header and the slots of a small object: three cache lines */
        __builtin_prefetch(p, 1, 3);
        __builtin_prefetch((const char *)p + 64, 1, 3);
        __builtin_prefetch((const char *)p + 128, 1, 3);
    }
}

/* Before delivering to subscriber i, advance every walk in flight by one link: the one
 * for i + 5 fetches the subscription, i + 4 its Direct, i + 3 the Gate, i + 2 the bound
 * write, i + 1 the transport behind it. The links read here were fetched on the
 * iterations before. */
static void warm(PyObject *subs, Py_ssize_t i, Py_ssize_t n) {
    const Layout *l = &layout;
    for (Py_ssize_t k = AHEAD; k >= 1; k--) {
        Py_ssize_t j = i + k;
        if (j < 0 || j >= n) continue;
        PyObject *o = PyTuple_GET_ITEM(subs, j);
        if (k <= 4) o = slot(o, l->sub, l->o_direct);
        if (k <= 3) o = slot(o, l->direct, l->o_gate);
        if (k <= 2) o = slot(o, l->gate, l->o_write);
        if (k == 1 && o != NULL)
            o = PyCFunction_Check(o) ? PyCFunction_GET_SELF(o)
                : PyMethod_Check(o) ? PyMethod_GET_SELF(o) : NULL;
        fetch(o);
    }
}

/* -- delivery --------------------------------------------------------------------------- */

static int push(PyObject *sub, PyObject *event) {
    PyObject *r = PyObject_CallMethodOneArg(sub, s_push, event);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* 1 if the attribute is true, 0 if not, -1 on error. */
static int attr_true(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* compare(o.name, other, op) as a bool; -1 on error. */
static int attr_compare(PyObject *other, PyObject *o, PyObject *name, int op) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int r = PyObject_RichCompareBool(other, v, op);
    Py_DECREF(v);
    return r;
}

/* The frame for `direct`, from event.encoded(direct.key, direct.encode); the last one is
 * kept while the key object stays the same (each transport's Direct shares its key). */
typedef struct {
    PyObject *key, *frame;
} Frame;

static PyObject *frame_for(Frame *f, PyObject *event, PyObject *direct) {
    PyObject *key = PyObject_GetAttr(direct, s_key);
    if (key == NULL) return NULL;
    if (key == f->key && f->frame != NULL) {
        Py_DECREF(key);
        return f->frame;
    }
    PyObject *encode = PyObject_GetAttr(direct, s_encode);
    if (encode == NULL) { Py_DECREF(key); return NULL; }
    PyObject *frame = PyObject_CallMethodObjArgs(event, s_encoded, key, encode, NULL);
    Py_DECREF(encode);
    if (frame == NULL) { Py_DECREF(key); return NULL; }
    Py_XSETREF(f->key, key);
    Py_XSETREF(f->frame, frame);
    return frame;
}

/* Deliver to one subscriber. 0 on success, -1 with an exception set. */
static int deliver_one(PyObject *event, PyObject *seq, PyObject *origin, PyObject *sub,
                       Frame *frames) {
    PyObject *direct = PyObject_GetAttr(sub, s_direct);
    if (direct == NULL) return -1;
    PyObject *gate = NULL;
    int rc = -1, fast = 0;
    if (direct != Py_None) {
        fast = attr_true(sub, s_parked);
        if (fast < 0) goto out;
        if (fast) {
            gate = PyObject_GetAttr(direct, s_gate);
            if (gate == NULL) goto out;
            fast = attr_true(gate, s_open);
            if (fast < 0) goto out;
        }
    }
    if (!fast) {
        rc = push(sub, event);
        goto out;
    }
    if (seq != Py_None) {
        int seen = attr_compare(seq, sub, s_last_seq, Py_LE);
        if (seen < 0) goto out;
        if (seen) { rc = 0; goto out; } /* already delivered (what push would skip) */
    }
    int send = 1;
    if (origin != Py_None) { /* not to the connection whose write this is (X-Socket-ID) */
        send = attr_compare(origin, direct, s_socket_id, Py_NE);
        if (send < 0) goto out;
    }
    if (send) {
        PyObject *frame = frame_for(frames, event, direct);
        PyObject *r = NULL;
        if (frame != NULL) {
            PyObject *write = PyObject_GetAttr(gate, s_write);
            if (write != NULL) {
                r = PyObject_CallOneArg(write, frame);
                Py_DECREF(write);
            }
        }
        if (r == NULL) {
            /* The socket closed under us, or the frame could not be built: the slow path
             * finds out which, and acts on it. Not for what is not an Exception. */
            if (!PyErr_ExceptionMatches(PyExc_Exception)) goto out;
            PyErr_Clear();
            rc = push(sub, event);
            goto out;
        }
        Py_DECREF(r);
    }
    rc = seq == Py_None ? 0 : PyObject_SetAttr(sub, s_last_seq, seq);
out:
    Py_XDECREF(gate);
    Py_DECREF(direct);
    return rc;
}

static PyObject *deliver(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "deliver(event, subs: tuple)");
        return NULL;
    }
    PyObject *event = args[0], *subs = args[1]; /* the caller's, alive for the call */
    Frame frames = {NULL, NULL};
    PyObject *result = NULL;
    PyObject *seq = PyObject_GetAttr(event, s_seq);
    PyObject *origin = seq == NULL ? NULL : PyObject_GetAttr(event, s_origin);
    if (origin == NULL) goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(subs);
    if (layout.sub == NULL && n > 0) learn(PyTuple_GET_ITEM(subs, 0));
    int warming = layout.sub != NULL;
    if (warming) /* start the walks for the first subscribers */
        for (Py_ssize_t i = -AHEAD; i < 0; i++) warm(subs, i, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (warming) warm(subs, i, n);
        if (deliver_one(event, seq, origin, PyTuple_GET_ITEM(subs, i), &frames) < 0)
            goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(seq);
    Py_XDECREF(origin);
    Py_XDECREF(frames.key);
    Py_XDECREF(frames.frame);
    return result;
}

static PyMethodDef methods[] = {
    {"deliver", (PyCFunction)(void (*)(void))deliver, METH_FASTCALL,
     "deliver(event, subs, /)\n--\n\nbridge.hub.deliver_py, compiled."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bridge._fanout", "The fan-out loop, compiled.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fanout(void) {
#define NAME(var, s) \
    if ((var = PyUnicode_InternFromString(s)) == NULL) return NULL;
    NAME(s_direct, "direct") NAME(s_parked, "parked") NAME(s_gate, "gate")
    NAME(s_open, "open") NAME(s_last_seq, "last_seq") NAME(s_socket_id, "socket_id")
    NAME(s_key, "key") NAME(s_encode, "encode") NAME(s_write, "write") NAME(s_push, "push")
    NAME(s_seq, "seq") NAME(s_origin, "origin") NAME(s_encoded, "encoded")
#undef NAME
    return PyModule_Create(&module);
}
