/*
 * The per-subscriber half of RTP forwarding, in C.
 *
 * Each packet a publisher sends is forwarded to every subscriber of that track: the
 * header rewritten for the subscriber's leg (SSRC, payload type, sequence number,
 * timestamp), kept for NACKs, SRTP-protected with the subscriber's session and sent
 * on the subscriber's ICE socket. Done in Python that costs about 40 us per packet on
 * a 2-core machine; here it is the cost of SRTP and of the send itself
 * (docs/benchmarks.md). What happens once per *received* packet (parsing, routing,
 * audio levels, keyframe detection) stays in Python: mcu/forwarding.py.
 *
 * Two types:
 *   Sink  where a subscriber's connection sends: a duplicate of the ICE socket's file
 *         descriptor (so a socket closed under us can never be confused with a newer
 *         one that reused its number), the remote address, and the outbound SRTP
 *         session. mcu/aiortc_adapter.py binds and unbinds it; nothing here knows
 *         aiortc.
 *   Leg   one track forwarded to one subscriber: the rewrite state, the counters the
 *         sender reports need, and a ring of recently sent packets for NACKs.
 *
 * forward(legs, ...) sends one received packet to every leg in a tuple; unprotect()
 * decrypts one received packet (the receiving half of the same SRTP work).
 * Everything runs on the event loop's thread with the GIL held.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HISTORY_SIZE 512        /* about 2 s of 720p video; older NACKs are not worth it */
#define MAX_PLAIN_PACKET 1500   /* the most pylibsrtp accepts, kept the same here */
#define SRTP_TRAILER_ROOM 160   /* libsrtp2 may append a tag and an MKI (at most 144) */
#define RTP_HEADER_SIZE 12

/* libsrtp2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr), and
 * the same for srtp_unprotect and srtp_unprotect_rtcp. */
typedef int (*srtp_protect_fn)(void *session, void *packet, int *length);

/* Sink ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int fd;                           /* our own duplicate, -1 while unbound */
    struct sockaddr_storage address;
    socklen_t address_length;
    srtp_protect_fn protect;
    void *session;
    PyObject *owner;                  /* keeps the SRTP session alive while bound */
    unsigned long long send_errors;
} SinkObject;

static void
sink_release(SinkObject *self)
{
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
    self->protect = NULL;
    self->session = NULL;
    Py_CLEAR(self->owner);
}

static PyObject *
sink_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    SinkObject *self = (SinkObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

static int
sink_traverse(SinkObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    return 0;
}

static int
sink_clear(SinkObject *self)
{
    Py_CLEAR(self->owner);
    return 0;
}

static void
sink_dealloc(SinkObject *self)
{
    PyObject_GC_UnTrack(self);
    sink_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(sink_bind_doc,
"bind(fd, host, port, protect, session, owner)\n--\n\n"
"Send from (a duplicate of) socket ``fd`` to ``host``:``port``, protecting each packet\n"
"with the libsrtp2 function at address ``protect`` on the session at address\n"
"``session``. ``owner`` is kept referenced while bound: it must own the session.");

static PyObject *
sink_bind(SinkObject *self, PyObject *args)
{
    int fd, port;
    const char *host;
    unsigned long long protect, session;
    PyObject *owner;
    if (!PyArg_ParseTuple(args, "isiKKO:bind", &fd, &host, &port, &protect, &session, &owner))
        return NULL;
    if (port <= 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "port out of range: %d", port);
        return NULL;
    }
    if (protect == 0 || session == 0) {
        PyErr_SetString(PyExc_ValueError, "protect and session must be non-null addresses");
        return NULL;
    }
    struct sockaddr_storage address;
    socklen_t address_length;
    memset(&address, 0, sizeof(address));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        address_length = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        address_length = sizeof(*v6);
    } else {
        PyErr_Format(PyExc_ValueError, "not an IP address: %s", host);
        return NULL;
    }
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    sink_release(self);
    self->fd = copy;
    self->address = address;
    self->address_length = address_length;
    self->protect = (srtp_protect_fn)(uintptr_t)protect;
    self->session = (void *)(uintptr_t)session;
    Py_INCREF(owner);
    self->owner = owner;
    Py_RETURN_NONE;
}

static PyObject *
sink_unbind(SinkObject *self, PyObject *unused)
{
    sink_release(self);
    Py_RETURN_NONE;
}

static PyObject *
sink_get_bound(SinkObject *self, void *closure)
{
    return PyBool_FromLong(self->fd >= 0);
}

static PyObject *
sink_get_owner(SinkObject *self, void *closure)
{
    PyObject *owner = self->owner != NULL ? self->owner : Py_None;
    Py_INCREF(owner);
    return owner;
}

/* Protect ``packet`` (``length`` bytes, room for the trailer behind it) and send it.
 * Returns 0, or -1 (counted in send_errors) when it could not be sent: unbound, SRTP
 * refused, or the socket would block. A full socket buffer drops the packet, as a
 * network would; the subscriber's NACK or PLI recovers. */
static int
sink_send(SinkObject *self, uint8_t *packet, int length)
{
    if (self->fd < 0) {
        self->send_errors++;
        return -1;
    }
    if (self->protect(self->session, packet, &length) != 0) {
        self->send_errors++;
        return -1;
    }
    ssize_t sent;
    do {
        sent = sendto(self->fd, packet, (size_t)length, MSG_DONTWAIT,
                      (struct sockaddr *)&self->address, self->address_length);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        self->send_errors++;
        return -1;
    }
    return 0;
}

static PyMethodDef sink_methods[] = {
    {"bind", (PyCFunction)sink_bind, METH_VARARGS, sink_bind_doc},
    {"unbind", (PyCFunction)sink_unbind, METH_NOARGS, "Stop sending; close our socket duplicate."},
    {NULL}
};

static PyGetSetDef sink_getset[] = {
    {"bound", (getter)sink_get_bound, NULL, "Whether packets are being sent.", NULL},
    {"owner", (getter)sink_get_owner, NULL, "What bind() was given as owner (None when unbound).", NULL},
    {NULL}
};

static PyMemberDef sink_members[] = {
    {"send_errors", T_ULONGLONG, offsetof(SinkObject, send_errors), READONLY,
     "Packets that could not be sent (unbound, SRTP error, socket error)."},
    {NULL}
};

static PyTypeObject SinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Sink",
    .tp_doc = "Where one subscriber connection's forwarded packets go.",
    .tp_basicsize = sizeof(SinkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = sink_new,
    .tp_dealloc = (destructor)sink_dealloc,
    .tp_traverse = (traverseproc)sink_traverse,
    .tp_clear = (inquiry)sink_clear,
    .tp_methods = sink_methods,
    .tp_getset = sink_getset,
    .tp_members = sink_members,
};

/* Leg ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *sink;                   /* a Sink, or NULL: not sending */
    unsigned int ssrc;
    int payload_type;
    char video;                       /* video waits for a keyframe and keeps a history */
    char paused;
    char started;
    int seq_offset;
    int next_seq;                     /* the sequence number our next packet continues with */
    unsigned int ts_offset;
    unsigned int last_ts;
    unsigned long long packets;
    unsigned long long octets;        /* payload octets, as sender reports count them */
    PyObject **history;               /* video: sent packets (plain RTP) by sequence number */
    uint16_t *history_seq;
} LegObject;

static int
leg_init(LegObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"video", NULL};
    int video = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "p:Leg", keywords, &video))
        return -1;
    if (video && self->history == NULL) {
        self->history = PyMem_Calloc(HISTORY_SIZE, sizeof(PyObject *));
        self->history_seq = PyMem_Calloc(HISTORY_SIZE, sizeof(uint16_t));
        if (self->history == NULL || self->history_seq == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->video = (char)video;
    return 0;
}

static int
leg_traverse(LegObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->sink);
    return 0;
}

static int
leg_clear(LegObject *self)
{
    Py_CLEAR(self->sink);
    return 0;
}

static void
leg_dealloc(LegObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->sink);
    if (self->history != NULL) {
        for (int i = 0; i < HISTORY_SIZE; i++)
            Py_CLEAR(self->history[i]);
        PyMem_Free(self->history);
    }
    PyMem_Free(self->history_seq);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
leg_get_sink(LegObject *self, void *closure)
{
    PyObject *sink = self->sink != NULL ? self->sink : Py_None;
    Py_INCREF(sink);
    return sink;
}

static int
leg_set_sink(LegObject *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        Py_CLEAR(self->sink);
        return 0;
    }
    if (!PyObject_TypeCheck(value, &SinkType)) {
        PyErr_SetString(PyExc_TypeError, "sink must be a Sink or None");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->sink, value);
    return 0;
}

static PyObject *
leg_sent(LegObject *self, PyObject *arg)
{
    long seq = PyLong_AsLong(arg);
    if (seq == -1 && PyErr_Occurred())
        return NULL;
    if (seq < 0 || seq > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "sequence number out of range");
        return NULL;
    }
    if (self->history == NULL)
        Py_RETURN_NONE;
    int slot = (int)(seq % HISTORY_SIZE);
    PyObject *packet = self->history[slot];
    if (packet == NULL || self->history_seq[slot] != (uint16_t)seq)
        Py_RETURN_NONE;
    Py_INCREF(packet);
    return packet;
}

static PyMethodDef leg_methods[] = {
    {"sent", (PyCFunction)leg_sent, METH_O,
     "sent(seq)\n--\n\nThe packet (plain RTP) sent with sequence number ``seq``, if still kept."},
    {NULL}
};

static PyGetSetDef leg_getset[] = {
    {"sink", (getter)leg_get_sink, (setter)leg_set_sink, "Where packets go (None: nowhere).", NULL},
    {NULL}
};

static PyMemberDef leg_members[] = {
    {"ssrc", T_UINT, offsetof(LegObject, ssrc), 0, "Our SSRC on the subscriber's connection."},
    {"payload_type", T_INT, offsetof(LegObject, payload_type), 0, NULL},
    {"video", T_BOOL, offsetof(LegObject, video), READONLY, NULL},
    {"paused", T_BOOL, offsetof(LegObject, paused), 0, NULL},
    {"started", T_BOOL, offsetof(LegObject, started), 0,
     "False until the first packet (for video, a keyframe) re-bases the sequence numbers."},
    {"next_seq", T_INT, offsetof(LegObject, next_seq), 0, NULL},
    {"ts_offset", T_UINT, offsetof(LegObject, ts_offset), 0, NULL},
    {"last_ts", T_UINT, offsetof(LegObject, last_ts), READONLY, NULL},
    {"packets", T_ULONGLONG, offsetof(LegObject, packets), READONLY, NULL},
    {"octets", T_ULONGLONG, offsetof(LegObject, octets), READONLY, NULL},
    {NULL}
};

static PyTypeObject LegType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Leg",
    .tp_doc = "Leg(video)\n--\n\nOne track forwarded to one subscriber.",
    .tp_basicsize = sizeof(LegObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)leg_init,
    .tp_dealloc = (destructor)leg_dealloc,
    .tp_traverse = (traverseproc)leg_traverse,
    .tp_clear = (inquiry)leg_clear,
    .tp_methods = leg_methods,
    .tp_getset = leg_getset,
    .tp_members = leg_members,
};

/* forward --------------------------------------------------------------------------- */

static int
seq_newer(int a, int b)
{
    return a != b && ((a - b) & 0xFFFF) < 0x8000;
}

PyDoc_STRVAR(forward_doc,
"forward(legs, extension, data, payload_start, seq, timestamp, marker, keyframe, padded,\n"
"        payload_size)\n"
"--\n\n"
"Send one received packet to every leg in the tuple ``legs``: a 12-byte header written\n"
"per leg, then ``extension`` (a header extension block, or empty), then ``data`` from\n"
"``payload_start`` on (payload and padding). Returns (packets_sent, bytes_sent,\n"
"send_errors, wants_keyframe): ``wants_keyframe`` when a video leg is waiting for one.");

static PyObject *
forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "forward() takes 10 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *legs = args[0];
    if (!PyTuple_Check(legs) || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "forward() wants a tuple of legs, then bytes, bytes");
        return NULL;
    }
    const char *extension = PyBytes_AS_STRING(args[1]);
    Py_ssize_t extension_size = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t data_size = PyBytes_GET_SIZE(args[2]);
    Py_ssize_t payload_start = PyLong_AsSsize_t(args[3]);
    long seq = PyLong_AsLong(args[4]);
    unsigned long timestamp = PyLong_AsUnsignedLongMask(args[5]);
    int marker = PyObject_IsTrue(args[6]);
    int keyframe = PyObject_IsTrue(args[7]);
    int padded = PyObject_IsTrue(args[8]);
    long payload_size = PyLong_AsLong(args[9]);
    if (PyErr_Occurred() || marker < 0 || keyframe < 0 || padded < 0)
        return NULL;
    if (seq < 0 || seq > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "sequence number out of range");
        return NULL;
    }
    if (payload_start < 0 || payload_start > data_size) {
        PyErr_SetString(PyExc_ValueError, "payload_start outside the packet");
        return NULL;
    }
    const char *payload = PyBytes_AS_STRING(args[2]) + payload_start;
    Py_ssize_t payload_bytes = data_size - payload_start;  /* with any padding */
    Py_ssize_t size = RTP_HEADER_SIZE + extension_size + payload_bytes;
    if (size > MAX_PLAIN_PACKET) {
        PyErr_Format(PyExc_ValueError, "packet too long to forward: %zd bytes", size);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(legs);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(legs, i), &LegType)) {
            PyErr_SetString(PyExc_TypeError, "legs must hold Leg objects");
            return NULL;
        }
    }

    uint8_t packet[MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM];
    uint8_t first = 0x80 | (extension_size > 0 ? 0x10 : 0) | (padded ? 0x20 : 0);
    long sent = 0, sent_bytes = 0, errors = 0;
    int wants_keyframe = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        LegObject *leg = (LegObject *)PyTuple_GET_ITEM(legs, i);
        if (leg->sink == NULL || leg->paused)
            continue;
        if (!leg->started) {
            if (leg->video && !keyframe) {
                wants_keyframe = 1;
                continue;
            }
            leg->started = 1;
            /* Continue our own sequence space without a gap the subscriber would NACK. */
            leg->seq_offset = (leg->next_seq - (int)seq) & 0xFFFF;
        }
        int out_seq = ((int)seq + leg->seq_offset) & 0xFFFF;
        uint32_t out_ts = (uint32_t)(timestamp + leg->ts_offset);
        packet[0] = first;
        packet[1] = (uint8_t)((marker ? 0x80 : 0) | (leg->payload_type & 0x7F));
        packet[2] = (uint8_t)(out_seq >> 8);
        packet[3] = (uint8_t)out_seq;
        packet[4] = (uint8_t)(out_ts >> 24);
        packet[5] = (uint8_t)(out_ts >> 16);
        packet[6] = (uint8_t)(out_ts >> 8);
        packet[7] = (uint8_t)out_ts;
        packet[8] = (uint8_t)(leg->ssrc >> 24);
        packet[9] = (uint8_t)(leg->ssrc >> 16);
        packet[10] = (uint8_t)(leg->ssrc >> 8);
        packet[11] = (uint8_t)leg->ssrc;
        memcpy(packet + RTP_HEADER_SIZE, extension, (size_t)extension_size);
        memcpy(packet + RTP_HEADER_SIZE + extension_size, payload, (size_t)payload_bytes);
        if (seq_newer((out_seq + 1) & 0xFFFF, leg->next_seq))
            leg->next_seq = (out_seq + 1) & 0xFFFF;
        if (leg->history != NULL) {
            PyObject *copy = PyBytes_FromStringAndSize((const char *)packet, size);
            if (copy == NULL)
                return NULL;
            int slot = out_seq % HISTORY_SIZE;
            Py_XSETREF(leg->history[slot], copy);
            leg->history_seq[slot] = (uint16_t)out_seq;
        }
        leg->last_ts = out_ts;
        if (sink_send((SinkObject *)leg->sink, packet, (int)size) < 0) {
            errors++;
            continue;
        }
        leg->packets++;
        leg->octets += (unsigned long long)payload_size;
        sent++;
        sent_bytes += size;
    }
    return Py_BuildValue("(lllO)", sent, sent_bytes, errors, wants_keyframe ? Py_True : Py_False);
}

/* unprotect ------------------------------------------------------------------------- */

PyDoc_STRVAR(unprotect_doc,
"unprotect(function, session, packet)\n--\n\n"
"Decrypt and authenticate one received SRTP or SRTCP packet with the libsrtp2 function\n"
"at address ``function`` (srtp_unprotect or srtp_unprotect_rtcp) on the session at\n"
"address ``session``. Returns the plain packet, or None when it is not authentic, is a\n"
"replay or is too long.");

static PyObject *
unprotect(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "unprotect() takes (function, session, packet: bytes)");
        return NULL;
    }
    void *function = PyLong_AsVoidPtr(args[0]);
    void *session = PyLong_AsVoidPtr(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (function == NULL || session == NULL) {
        PyErr_SetString(PyExc_ValueError, "function and session must be non-null addresses");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[2]);
    if (size > MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM)
        Py_RETURN_NONE;
    uint8_t packet[MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM];
    memcpy(packet, PyBytes_AS_STRING(args[2]), (size_t)size);
    int length = (int)size;
    if (((srtp_protect_fn)function)(session, packet, &length) != 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)packet, length);
}

/* Module ---------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))forward, METH_FASTCALL, forward_doc},
    {"unprotect", (PyCFunction)(void (*)(void))unprotect, METH_FASTCALL, unprotect_doc},
    {NULL}
};

static struct PyModuleDef fanout_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mcu._fanout",
    .m_doc = "RTP fan-out to subscribers: header rewrite, NACK history, SRTP, send.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    if (PyType_Ready(&SinkType) < 0 || PyType_Ready(&LegType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&fanout_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "HISTORY_SIZE", HISTORY_SIZE) < 0
        || PyModule_AddIntConstant(module, "MAX_PACKET", MAX_PLAIN_PACKET) < 0
        || PyModule_AddObjectRef(module, "Sink", (PyObject *)&SinkType) < 0
        || PyModule_AddObjectRef(module, "Leg", (PyObject *)&LegType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
