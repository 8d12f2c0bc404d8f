/*
 * The packet path of forwarding, in C.
 *
 * Each packet a publisher sends is checked, counted and forwarded to every subscriber
 * of that track: the header rewritten for the subscriber's leg (SSRC, payload type,
 * sequence number, timestamp), kept for NACKs, SRTP-protected with the subscriber's
 * session and sent on the subscriber's ICE socket. In Python that cost about 40 us per
 * forwarded packet on a 2-core machine (docs/benchmarks.md). What does not happen per
 * packet stays in Python (mcu/forwarding.py, mcu/participant.py): negotiation, RTCP,
 * keyframe requests, the mixer's taps, the choice of who gets which video.
 *
 * Types:
 *   Sink      where a subscriber's connection sends: a duplicate of the ICE socket's file
 *             descriptor (so a socket closed under us can never be confused with a newer
 *             one that reused its number), the remote address, and the outbound SRTP
 *             session. mcu/aiortc_adapter.py binds and unbinds it; nothing here knows
 *             aiortc. A sink bound without a session sends plain RTP: the pipe between
 *             two media workers of one node (mcu/pipe.py).
 *   Leg       one track forwarded to one subscriber: the rewrite state, the counters the
 *             sender reports need, and a ring of recently sent packets for NACKs.
 *   Track     one received track: its receive statistics, audio activity and legs.
 *   Counters  the worker's packet counters (/metrics).
 *   Arrivals  a publisher connection's received transport-wide sequence numbers and
 *             their arrival times, and the transport-cc feedback made of them.
 *   DelayTrend  the delay part of a subscriber's send-side estimate (mcu/congestion.py).
 *   SendSideEstimator  a subscriber connection's estimate from its transport-cc
 *             feedback, read straight from the packet: in Python, first per reported
 *             packet and then per feedback, it cost more than forwarding the packets.
 *   Inbound   one connection's received SRTP and SRTCP: decrypted, RTP through
 *             receive(), transport-cc feedback to its estimator, the rest to Python.
 *   Reader    an ICE host socket read here (recvmmsg): once keyed, the connection's
 *             media goes to its Inbound without entering Python.
 *
 * receive() takes one decrypted packet from a publisher to all its legs; forward() sends
 * a packet the mixer made; unprotect() decrypts a received packet. Everything runs on
 * the event loop's thread with the GIL held.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HISTORY_SIZE 512        /* about 2 s of 720p video; older NACKs are not worth it */
#define MAX_PLAIN_PACKET 1500   /* the most pylibsrtp accepts, kept the same here */
#define SRTP_TRAILER_ROOM 160   /* libsrtp2 may append a tag and an MKI (at most 144) */
#define RTP_HEADER_SIZE 12

/* What a video track's payload is (Track.codec, Leg.codec): how a keyframe is found, and
 * a leg of one codec never sends another's bytes. Audio is CODEC_NONE. */
#define CODEC_NONE 0
#define CODEC_VP8 1
#define CODEC_H264 2

/* What keyframe_start() finds in a payload (0: nothing): KEY_START, a packet a decoder
 * can start from; with KEY_PARAMETER_SETS as well, one that carries the H.264 SPS. A
 * simulcast layer switch of an H.264 leg waits for the latter: the layers are pictures of
 * different sizes, and an IDR whose own SPS was lost would be decoded with the other
 * layer's (often under the same SPS ID), a wrong picture size, not a fresh start. */
#define KEY_START 1
#define KEY_PARAMETER_SETS 2

/* A Leg's or Track's codec from its constructor's arguments: -1 (not given) is VP8 for
 * video, what every one was before H.264; audio has none. -1 and an error set if it does
 * not fit. */
static int
codec_for(int video, int codec, const char *what)
{
    if (codec < 0)
        codec = video ? CODEC_VP8 : CODEC_NONE;
    if (codec > CODEC_H264 || (codec == CODEC_NONE) != !video) {
        PyErr_Format(PyExc_ValueError, "codec %d does not fit a%s %s", codec,
                     video ? " video" : "n audio", what);
        return -1;
    }
    return codec;
}

/* libsrtp2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr), and
 * the same for srtp_unprotect and srtp_unprotect_rtcp. */
typedef int (*srtp_protect_fn)(void *session, void *packet, int *length);

/* Sink ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int fd;                           /* our own duplicate, -1 while unbound */
    struct sockaddr_storage address;
    socklen_t address_length;
    srtp_protect_fn protect;          /* NULL: send plain RTP (a pipe between workers) */
    srtp_protect_fn protect_rtcp;     /* srtp_protect_rtcp for send_rtcp(); NULL: none given */
    void *session;
    PyObject *owner;                  /* keeps the SRTP session alive while bound */
    unsigned long long send_errors;
    /* transport-cc (draft-holmer-rmcat-transport-wide-cc-extensions-01): one sequence
     * number space per connection, so it lives here, not on a leg. 0: not negotiated.
     * What was sent is kept by that number so the subscriber's feedback can be matched
     * with when and how big each packet was (mcu/congestion.py). */
    int transport_cc_id;
    uint16_t transport_seq;           /* the next one to stamp */
    struct SentPacket *sent;          /* TRANSPORT_RING entries, allocated when enabled */
} SinkObject;

/* One packet stamped: together, so that recording it (every packet sent) touches one
 * cache line, not one in each of three arrays. */
struct SentPacket {
    double at;                        /* monotonic seconds */
    uint16_t seq;
    uint16_t size;                    /* plain RTP bytes; 0: never written */
};

/* About 3 s of a subscriber receiving nine 720p videos: feedback comes back within a
 * round trip or two, so anything older is not going to be matched. A divisor of 65536,
 * so a slot stays the same across the sequence number's wrap. */
#define TRANSPORT_RING 4096
#define TRANSPORT_CC_ROOM 4           /* what the element adds to a packet: 1 + 2 + pad 1 */

static void
sink_release(SinkObject *self)
{
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
    self->protect = NULL;
    self->protect_rtcp = NULL;
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
    PyMem_Free(self->sent);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(sink_bind_doc,
"bind(fd, host, port, protect, session, owner, protect_rtcp=0)\n--\n\n"
"Send from (a duplicate of) socket ``fd`` to ``host``:``port``, protecting each packet\n"
"with the libsrtp2 function at address ``protect`` on the session at address\n"
"``session``. ``owner`` is kept referenced while bound: it must own the session.\n"
"``protect`` and ``session`` both 0 send plain RTP (no SRTP): for the pipe between two\n"
"media workers on one node, never for a participant. ``protect_rtcp``: the address of\n"
"srtp_protect_rtcp, for send_rtcp() on an SRTP session (0 there: no send_rtcp()).");

static PyObject *
sink_bind(SinkObject *self, PyObject *args)
{
    int fd, port;
    const char *host;
    unsigned long long protect, session, protect_rtcp = 0;
    PyObject *owner;
    if (!PyArg_ParseTuple(args, "isiKKO|K:bind", &fd, &host, &port, &protect, &session, &owner,
                          &protect_rtcp))
        return NULL;
    if (port <= 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "port out of range: %d", port);
        return NULL;
    }
    if ((protect == 0) != (session == 0)) {
        PyErr_SetString(PyExc_ValueError, "protect and session must both be addresses, or both 0 (plain)");
        return NULL;
    }
    if (protect_rtcp != 0 && session == 0) {
        PyErr_SetString(PyExc_ValueError, "protect_rtcp needs an SRTP session");
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
    self->protect_rtcp = (srtp_protect_fn)(uintptr_t)protect_rtcp;
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
sink_get_plain(SinkObject *self, void *closure)
{
    return PyBool_FromLong(self->fd >= 0 && self->protect == NULL);
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
enum SinkWrite { SINK_SENT, SINK_UNBOUND, SINK_REFUSED, SINK_SOCKET_ERROR /* errno says */ };

/* Protect with ``protect`` (NULL: plain) and send; what went wrong if it did not go,
 * counted in send_errors. RTP (sink_send) and our RTCP (send_rtcp) both come here. */
static enum SinkWrite
sink_write(SinkObject *self, srtp_protect_fn protect, uint8_t *packet, int length)
{
    if (self->fd < 0) {
        self->send_errors++;
        return SINK_UNBOUND;
    }
    if (protect != NULL && protect(self->session, packet, &length) != 0) {
        self->send_errors++;
        return SINK_REFUSED;
    }
    ssize_t sent;
    do {
        sent = sendto(self->fd, packet, (size_t)length, MSG_DONTWAIT,
                      (struct sockaddr *)&self->address, self->address_length);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        self->send_errors++;
        return SINK_SOCKET_ERROR;
    }
    return SINK_SENT;
}

static int
sink_send(SinkObject *self, uint8_t *packet, int length)
{
    return sink_write(self, self->protect, packet, length) == SINK_SENT ? 0 : -1;
}

PyDoc_STRVAR(sink_send_rtcp_doc,
"send_rtcp(packet)\n--\n\n"
"Send one RTCP packet (compound or not) to the subscriber, SRTCP-protected on the\n"
"session (plain on a plain sink): our reports and feedback, without a Python call into\n"
"libsrtp and the socket each time. Raises ConnectionError when unbound, or bound to an\n"
"SRTP session without protect_rtcp, or when libsrtp refuses; OSError when the socket\n"
"does. A full socket buffer drops it, as it drops media (counted in send_errors).");

static PyObject *
sink_send_rtcp(SinkObject *self, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "send_rtcp() takes bytes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size < 8 || size > MAX_PLAIN_PACKET) {
        PyErr_Format(PyExc_ValueError, "not an RTCP packet we send: %zd bytes", size);
        return NULL;
    }
    if (self->fd >= 0 && self->session != NULL && self->protect_rtcp == NULL) {
        self->send_errors++;
        PyErr_SetString(PyExc_ConnectionError, "the sink has no SRTCP protect");
        return NULL;
    }
    uint8_t packet[MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM];
    memcpy(packet, PyBytes_AS_STRING(data), (size_t)size);
    switch (sink_write(self, self->protect_rtcp, packet, (int)size)) {
    case SINK_UNBOUND:
        PyErr_SetString(PyExc_ConnectionError, "the sink is not bound");
        return NULL;
    case SINK_REFUSED:
        PyErr_SetString(PyExc_ConnectionError, "SRTCP protect refused the packet");
        return NULL;
    case SINK_SOCKET_ERROR:
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return PyErr_SetFromErrno(PyExc_OSError);
        break;
    case SINK_SENT:
        break;
    }
    Py_RETURN_NONE;
}

/* transport-cc ---------------------------------------------------------------------- */

/* Append our transport-wide sequence number element to the one-byte extension block at
 * ``packet + RTP_HEADER_SIZE`` (``extension_size`` bytes so far: none, or a block of
 * ours) and take the next number. Returns the block's new size. A block in another
 * profile (never ours) is left alone: the packet goes unstamped. */
static Py_ssize_t
sink_stamp(SinkObject *self, uint8_t *packet, Py_ssize_t extension_size, int *stamped)
{
    uint8_t *block = packet + RTP_HEADER_SIZE;
    *stamped = -1;
    if (extension_size == 0) {
        block[0] = 0xBE, block[1] = 0xDE, block[2] = 0, block[3] = 0;
        extension_size = 4;
        packet[0] |= 0x10;
    } else if (extension_size < 4 || block[0] != 0xBE || block[1] != 0xDE) {
        return extension_size;
    }
    uint16_t seq = self->transport_seq++;
    uint8_t *element = block + extension_size;
    element[0] = (uint8_t)((self->transport_cc_id << 4) | 1);  /* length field: 2 bytes - 1 */
    element[1] = (uint8_t)(seq >> 8);
    element[2] = (uint8_t)seq;
    element[3] = 0;
    extension_size += TRANSPORT_CC_ROOM;
    int words = (int)(extension_size - 4) / 4;
    block[2] = (uint8_t)(words >> 8);
    block[3] = (uint8_t)words;
    *stamped = seq;
    return extension_size;
}

/* Keep when and how big the packet stamped ``seq`` was. */
static inline void
sink_record(SinkObject *self, int seq, double now, Py_ssize_t size)
{
    int slot = seq % TRANSPORT_RING;
    struct SentPacket *sent = &self->sent[slot];
    sent->seq = (uint16_t)seq;
    sent->at = now;
    sent->size = (uint16_t)size;
}

static PyObject *
sink_get_transport_cc_id(SinkObject *self, void *closure)
{
    return PyLong_FromLong(self->transport_cc_id);
}

static int
sink_set_transport_cc_id(SinkObject *self, PyObject *value, void *closure)
{
    long id = value == NULL ? -1 : PyLong_AsLong(value);
    if (id == -1 && PyErr_Occurred())
        return -1;
    if (id < 0 || id > 14) {  /* one-byte elements: IDs 1-14; 0 turns stamping off */
        PyErr_SetString(PyExc_ValueError, "transport_cc_id must be 0 (off) or 1-14");
        return -1;
    }
    if (id != 0 && self->sent == NULL) {
        self->sent = PyMem_Calloc(TRANSPORT_RING, sizeof(struct SentPacket));
        if (self->sent == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        /* A slot never written has sequence 0 and size 0: not a packet we sent. */
    }
    self->transport_cc_id = (int)id;
    return 0;
}

PyDoc_STRVAR(sink_sent_range_doc,
"sent_range(base, count)\n--\n\n"
"For transport-wide sequence numbers ``base``, ``base + 1``, ... (``count`` of them,\n"
"wrapping at 65536): (send time, plain size) of each packet we stamped with it, from\n"
"time.monotonic(), or None when it is not (or no longer) known.");

static PyObject *
sink_sent_range(SinkObject *self, PyObject *args)
{
    int base, count;
    if (!PyArg_ParseTuple(args, "ii:sent_range", &base, &count))
        return NULL;
    if (base < 0 || base > 0xFFFF || count < 0 || count > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "base or count out of range");
        return NULL;
    }
    PyObject *result = PyList_New(count);
    if (result == NULL)
        return NULL;
    for (int i = 0; i < count; i++) {
        int seq = (base + i) & 0xFFFF, slot = seq % TRANSPORT_RING;
        PyObject *item;
        const struct SentPacket *sent = self->sent != NULL ? &self->sent[slot] : NULL;
        if (sent == NULL || sent->seq != seq || sent->size == 0)
            item = Py_NewRef(Py_None);
        else
            item = Py_BuildValue("(di)", sent->at, (int)sent->size);
        if (item == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyList_SET_ITEM(result, i, item);
    }
    return result;
}

/* What one transport-cc feedback says, summed up for the send-side estimator
 * (mcu/congestion.py), which would otherwise spend several microseconds of Python on
 * each packet a subscriber reports: as many as we forward to it. Packets in the order
 * they were sent (transport-wide numbers are); those that arrived form groups of
 * packets sent within ``burst`` seconds of the group's first (the estimator's unit of
 * delay change). */
struct DelayTrendObject;
static void trend_add_group(struct DelayTrendObject *self, double first, double last, double arrival);

typedef struct {
    double burst;
    Py_ssize_t sent, lost, bytes;
    double first_arrival, last_arrival, min_delay, min_delay_at;
    int any_arrived;
    PyObject *groups;                 /* list of (first send, last send, latest arrival) */
    struct DelayTrendObject *trend;   /* or, for the estimator in C, the groups go here */
    int group_open;
    double group_first, group_last, group_arrival;
} FeedbackSummary;

static int
summary_close_group(FeedbackSummary *summary)
{
    if (!summary->group_open)
        return 0;
    summary->group_open = 0;
    if (summary->trend != NULL) {
        trend_add_group(summary->trend, summary->group_first, summary->group_last, summary->group_arrival);
        return 0;
    }
    PyObject *group = Py_BuildValue("(ddd)", summary->group_first, summary->group_last,
                                    summary->group_arrival);
    if (group == NULL)
        return -1;
    int failed = PyList_Append(summary->groups, group);
    Py_DECREF(group);
    return failed;
}

static int
summary_add(FeedbackSummary *summary, double sent_at, long size, int arrived, double arrival)
{
    summary->sent++;
    if (!arrived) {
        summary->lost++;
        return 0;
    }
    summary->bytes += size;
    double delay = arrival - sent_at;
    if (!summary->any_arrived) {
        summary->any_arrived = 1;
        summary->first_arrival = summary->last_arrival = arrival;
        summary->min_delay = delay, summary->min_delay_at = arrival;
    } else {
        if (arrival < summary->first_arrival)
            summary->first_arrival = arrival;
        if (arrival > summary->last_arrival)
            summary->last_arrival = arrival;
        if (delay < summary->min_delay)
            summary->min_delay = delay, summary->min_delay_at = arrival;
    }
    if (summary->group_open && sent_at - summary->group_first <= summary->burst) {
        summary->group_last = sent_at;
        if (arrival > summary->group_arrival)
            summary->group_arrival = arrival;
        return 0;
    }
    if (summary_close_group(summary) < 0)
        return -1;
    summary->group_open = 1;
    summary->group_first = summary->group_last = sent_at;
    summary->group_arrival = arrival;
    return 0;
}

/* (groups, sent, lost, bytes, first arrival, last arrival, least delay, its arrival);
 * the four times None when nothing arrived. */
static PyObject *
summary_finish(FeedbackSummary *summary)
{
    if (summary_close_group(summary) < 0) {
        Py_DECREF(summary->groups);
        return NULL;
    }
    if (!summary->any_arrived)
        return Py_BuildValue("(NnnnOOOO)", summary->groups, summary->sent, summary->lost,
                             summary->bytes, Py_None, Py_None, Py_None, Py_None);
    return Py_BuildValue("(Nnnndddd)", summary->groups, summary->sent, summary->lost,
                         summary->bytes, summary->first_arrival, summary->last_arrival,
                         summary->min_delay, summary->min_delay_at);
}

/* The summary made ready for packets: 0, or -1 with an error set. */
static int
summary_init(FeedbackSummary *summary, double burst)
{
    memset(summary, 0, sizeof(*summary));
    summary->burst = burst;
    summary->groups = PyList_New(0);
    return summary->groups == NULL ? -1 : 0;
}

/* The packets of ``sequence`` as a fast sequence, the summary made ready for them;
 * NULL (and nothing to release) on failure. */
static PyObject *
summary_start(FeedbackSummary *summary, PyObject *sequence, const char *what, double burst)
{
    PyObject *items = PySequence_Fast(sequence, what);
    if (items == NULL)
        return NULL;
    if (summary_init(summary, burst) < 0)
        Py_CLEAR(items);
    return items;
}

/* Release what summary_start() made, and return the summary (NULL on an error). */
static PyObject *
summary_end(FeedbackSummary *summary, PyObject *items, int failed)
{
    Py_DECREF(items);
    if (failed) {
        Py_DECREF(summary->groups);
        return NULL;
    }
    return summary_finish(summary);
}

/* DelayTrend ------------------------------------------------------------------------ */

/* The delay part of the send-side estimator (mcu/congestion.py, GCC-like): for each
 * pair of groups of packets sent together, the change in one-way delay (inter-arrival
 * minus inter-departure time) is accumulated and smoothed, a line is fitted through the
 * last TREND_WINDOW points, and its slope, against a threshold that adapts to the path,
 * says whether a queue is building ("overuse"), draining ("underuse") or neither. It
 * runs for every group of packets of every subscriber, which in Python cost more than
 * forwarding the packets did; the rate control it feeds stays in Python. */
#define TREND_WINDOW 20
#define TREND_SMOOTHING 0.9
#define TREND_GAIN 4.0
#define TREND_INITIAL_THRESHOLD_MS 12.5
#define TREND_THRESHOLD_UP 0.0087      /* how fast the threshold follows a trend above it */
#define TREND_THRESHOLD_DOWN 0.039     /* ... and below it */
#define TREND_OVERUSE_TIME_S 0.01      /* a queue that keeps growing this long, not one late group */

typedef struct DelayTrendObject {
    PyObject_HEAD
    double burst;
    double threshold_ms, trend, previous_trend;
    int state;                        /* 1 overuse, -1 underuse, 0 normal */
    double accumulated_ms, smoothed_ms;
    /* The line's points (x: ms since the first arrival, y: smoothed delay), a ring, and
     * their sums relative to a recent point (taken afresh once per window, so a call of
     * hours loses no precision). */
    double x[TREND_WINDOW], y[TREND_WINDOW];
    int count, next, added;
    double origin_x, origin_y, sum_x, sum_y, sum_xx, sum_xy;
    int has_first, has_over, has_update, has_open, has_previous;
    double first_arrival, over_since, last_update;
    double open_first, open_last, open_arrival;   /* the group still open */
    double previous_send, previous_arrival;       /* the group closed last */
} DelayTrendObject;

static int
delay_trend_init(DelayTrendObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"burst", NULL};
    double burst;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "d:DelayTrend", keywords, &burst))
        return -1;
    memset((char *)self + sizeof(PyObject), 0, sizeof(*self) - sizeof(PyObject));
    self->burst = burst;
    self->threshold_ms = TREND_INITIAL_THRESHOLD_MS;
    return 0;
}

static inline void
trend_account(DelayTrendObject *self, double x, double y, double sign)
{
    x -= self->origin_x;
    y -= self->origin_y;
    self->sum_x += sign * x;
    self->sum_y += sign * y;
    self->sum_xx += sign * x * x;
    self->sum_xy += sign * x * y;
}

static void
trend_add_point(DelayTrendObject *self, double x, double y)
{
    if (self->count == TREND_WINDOW)
        trend_account(self, self->x[self->next], self->y[self->next], -1.0);
    else
        self->count++;
    self->x[self->next] = x, self->y[self->next] = y;
    self->next = (self->next + 1) % TREND_WINDOW;
    if (++self->added >= self->count) {
        int oldest = self->count == TREND_WINDOW ? self->next : 0;
        self->origin_x = self->x[oldest], self->origin_y = self->y[oldest];
        self->sum_x = self->sum_y = self->sum_xx = self->sum_xy = 0;
        for (int i = 0; i < self->count; i++)
            trend_account(self, self->x[i], self->y[i], 1.0);
        self->added = 0;
    } else {
        trend_account(self, x, y, 1.0);
    }
}

static void
trend_adapt_threshold(DelayTrendObject *self, double trend, double now_s)
{
    /* The threshold follows the trend, slowly, so a path whose delay is always noisy
     * (Wi-Fi) is not read as congested, and one that is quiet reacts early. A spike far
     * above it (a route change) does not move it. */
    if (!self->has_update)
        self->has_update = 1, self->last_update = now_s;
    double elapsed_ms = (now_s - self->last_update) * 1000;
    if (elapsed_ms > 100.0)
        elapsed_ms = 100.0;
    self->last_update = now_s;
    double size = fabs(trend);
    if (size > self->threshold_ms + 15)
        return;
    double k = size < self->threshold_ms ? TREND_THRESHOLD_DOWN : TREND_THRESHOLD_UP;
    self->threshold_ms += k * (size - self->threshold_ms) * elapsed_ms;
    if (self->threshold_ms < 6.0)
        self->threshold_ms = 6.0;
    if (self->threshold_ms > 600.0)
        self->threshold_ms = 600.0;
}

static void
trend_update(DelayTrendObject *self, double delay_change_ms, double arrival_s)
{
    if (!self->has_first)
        self->has_first = 1, self->first_arrival = arrival_s;
    self->accumulated_ms += delay_change_ms;
    self->smoothed_ms = TREND_SMOOTHING * self->smoothed_ms + (1 - TREND_SMOOTHING) * self->accumulated_ms;
    trend_add_point(self, (arrival_s - self->first_arrival) * 1000, self->smoothed_ms);
    if (self->count < TREND_WINDOW)
        return;
    double n = self->count;
    double denominator = n * self->sum_xx - self->sum_x * self->sum_x;
    double slope = denominator > 1e-9 ? (n * self->sum_xy - self->sum_x * self->sum_y) / denominator : 0.0;
    double trend = n * slope * TREND_GAIN;
    self->trend = trend;
    if (trend > self->threshold_ms) {
        if (!self->has_over)
            self->has_over = 1, self->over_since = arrival_s;
        if (arrival_s - self->over_since >= TREND_OVERUSE_TIME_S && trend >= self->previous_trend)
            self->state = 1;
    } else if (trend < -self->threshold_ms) {
        self->has_over = 0;
        self->state = -1;
    } else {
        self->has_over = 0;
        self->state = 0;
    }
    self->previous_trend = trend;
    trend_adapt_threshold(self, trend, arrival_s);
}

static void
trend_close_group(DelayTrendObject *self)
{
    double send_s = self->open_last, arrival_s = self->open_arrival;
    if (self->has_previous) {
        double departure = send_s - self->previous_send;
        double arrival = arrival_s - self->previous_arrival;
        if (departure >= 0)
            trend_update(self, (arrival - departure) * 1000, arrival_s);
    }
    self->has_previous = 1;
    self->previous_send = send_s, self->previous_arrival = arrival_s;
}

PyDoc_STRVAR(delay_trend_add_doc,
"add(groups)\n--\n\n"
"Take the groups of one feedback, as summarize() gives them: (first\n"
"send, last send, latest arrival), in the order sent. The last stays open: the next\n"
"feedback's first may belong to it.");

/* One group of a feedback; the last stays open (the next feedback's first may belong). */
static void
trend_add_group(DelayTrendObject *self, double first, double last, double arrival)
{
    if (self->has_open && first - self->open_first <= self->burst) {
        self->open_last = last;
        if (arrival > self->open_arrival)
            self->open_arrival = arrival;
        return;
    }
    if (self->has_open)
        trend_close_group(self);
    self->has_open = 1;
    self->open_first = first, self->open_last = last, self->open_arrival = arrival;
}

static PyObject *
delay_trend_add(DelayTrendObject *self, PyObject *groups)
{
    PyObject *items = PySequence_Fast(groups, "groups must be a sequence");
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count; i++) {
        double first, last, arrival;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, i), "ddd:add", &first, &last, &arrival)) {
            Py_DECREF(items);
            return NULL;
        }
        trend_add_group(self, first, last, arrival);
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
}

static PyObject *
delay_trend_get_state(DelayTrendObject *self, void *closure)
{
    return PyUnicode_FromString(self->state > 0 ? "overuse" : self->state < 0 ? "underuse" : "normal");
}

static PyMethodDef delay_trend_methods[] = {
    {"add", (PyCFunction)delay_trend_add, METH_O, delay_trend_add_doc},
    {NULL}
};

static PyGetSetDef delay_trend_getset[] = {
    {"state", (getter)delay_trend_get_state, NULL,
     "\"overuse\" (a queue building), \"underuse\" (one draining) or \"normal\".", NULL},
    {NULL}
};

static PyMemberDef delay_trend_members[] = {
    {"trend", T_DOUBLE, offsetof(DelayTrendObject, trend), READONLY,
     "The last trend (the line's slope, scaled), in ms."},
    {"threshold_ms", T_DOUBLE, offsetof(DelayTrendObject, threshold_ms), READONLY,
     "What the trend is compared with; it adapts to the path."},
    {NULL}
};

static PyTypeObject DelayTrendType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.DelayTrend",
    .tp_doc = PyDoc_STR("DelayTrend(burst)\n--\n\nOveruse from the trend of the one-way delay's change, "
                        "for groups of packets sent within ``burst`` seconds."),
    .tp_basicsize = sizeof(DelayTrendObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)delay_trend_init,
    .tp_methods = delay_trend_methods,
    .tp_getset = delay_trend_getset,
    .tp_members = delay_trend_members,
};

/* transport-cc feedback packets (RTPFB FMT 15) ----------------------------------- */

/* Each subscriber sends one about every 100 ms (Chrome does), reporting a dozen or more
 * of our packets; decoding it in Python cost more per reported packet than summing it
 * up in C. These read the bytes straight into what the estimator needs. */
#define RTCP_RTPFB 205
#define FMT_TRANSPORT_CC 15
#define TCC_HEADER_SIZE 20           /* the RTCP header, both SSRCs, base, count, reference */
#define TCC_DELTA_UNIT_US 250
#define TCC_REFERENCE_UNIT_US 64000
#define TCC_NOT_RECEIVED 0
#define TCC_SMALL_DELTA 1            /* received, 0..63.75 ms in one byte */
#define TCC_LARGE_DELTA 2            /* received, -8192..8191.75 ms in two bytes */
#define TCC_MAX_RUN 0x1FFF           /* a run length chunk's 13 bits */
#define TCC_MAX_STATUSES 500         /* per packet we build: well under the path MTU */

static inline uint32_t
read_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* The packet status chunks, read one status at a time. */
typedef struct {
    const uint8_t *data;
    Py_ssize_t at, end;               /* the next chunk; where the chunks must end */
    int chunk, left, position;        /* the chunk being read, statuses left in it */
} StatusReader;

/* The next status symbol, or -1 when the chunks run out before ``end``. */
static int
status_next(StatusReader *reader)
{
    while (reader->left == 0) {       /* a run of length 0 says nothing: read on */
        if (reader->at + 2 > reader->end)
            return -1;
        int chunk = (reader->data[reader->at] << 8) | reader->data[reader->at + 1];
        reader->at += 2;
        reader->chunk = chunk, reader->position = 0;
        reader->left = !(chunk & 0x8000) ? (chunk & TCC_MAX_RUN) : (chunk & 0x4000) ? 7 : 14;
    }
    reader->left--;
    int k = reader->position++, chunk = reader->chunk;
    if (!(chunk & 0x8000))
        return (chunk >> 13) & 3;                  /* run length: one symbol, repeated */
    if (!(chunk & 0x4000))
        return (chunk >> (13 - k)) & 1;            /* 14 one-bit symbols */
    return (chunk >> (12 - 2 * k)) & 3;            /* 7 two-bit symbols */
}

/* One feedback packet being read: its fixed part, then each reported packet in turn. */
typedef struct {
    uint32_t sender_ssrc, media_ssrc;
    int base, count, feedback_count;
    int32_t reference;                /* signed 24 bits, in 64 ms units */
    StatusReader statuses;
    Py_ssize_t delta_at;              /* the next receive delta */
    int64_t time_us;                  /* the receiver's clock at the last arrival */
} TccReader;

/* Check the packet's header, padding and chunks and make the reader ready for its
 * first reported packet. NULL, or what is wrong (for a ValueError). */
static const char *
tcc_open(TccReader *reader, const uint8_t *data, Py_ssize_t size)
{
    if (size < TCC_HEADER_SIZE || data[0] >> 6 != 2 || data[1] != RTCP_RTPFB
        || (data[0] & 0x1F) != FMT_TRANSPORT_CC)
        return "not a transport-cc feedback packet";
    Py_ssize_t end = 4 + 4 * (Py_ssize_t)((data[2] << 8) | data[3]);
    if (end > size || end < TCC_HEADER_SIZE)  /* its length word must cover its own fields */
        return "truncated transport-cc feedback";
    if (data[0] & 0x20) {             /* padding: its last byte says how much (RFC 3550) */
        if (data[end - 1] == 0 || data[end - 1] > end - TCC_HEADER_SIZE)
            return "bad padding in transport-cc feedback";
        end -= data[end - 1];
    }
    reader->sender_ssrc = read_u32(data + 4);
    reader->media_ssrc = read_u32(data + 8);
    reader->base = (data[12] << 8) | data[13];
    reader->count = (data[14] << 8) | data[15];
    uint32_t word = read_u32(data + 16);
    reader->reference = (int32_t)(word >> 8);
    if (reader->reference & 0x800000)
        reader->reference -= 1 << 24;
    reader->feedback_count = (int)(word & 0xFF);
    /* The deltas follow the chunk that holds the last status. */
    StatusReader statuses = {data, TCC_HEADER_SIZE, end, 0, 0, 0};
    for (int i = 0; i < reader->count; i++)
        if (status_next(&statuses) < 0)
            return "transport-cc feedback ends inside its chunks";
    reader->delta_at = statuses.at;
    reader->statuses = (StatusReader){data, TCC_HEADER_SIZE, end, 0, 0, 0};
    reader->time_us = (int64_t)reader->reference * TCC_REFERENCE_UNIT_US;
    return NULL;
}

/* The next reported packet (call it ``count`` times): 1 received, its arrival in
 * ``*time_us``; 0 not received; -1 when the packet is malformed (``*error`` says how). */
static int
tcc_next(TccReader *reader, int64_t *time_us, const char **error)
{
    const uint8_t *data = reader->statuses.data;
    Py_ssize_t end = reader->statuses.end;
    int symbol = status_next(&reader->statuses);  /* tcc_open() made sure there is one */
    if (symbol == TCC_NOT_RECEIVED)
        return 0;
    if (symbol == TCC_SMALL_DELTA) {
        if (reader->delta_at + 1 > end) {
            *error = "transport-cc feedback ends inside its deltas";
            return -1;
        }
        reader->time_us += (int64_t)data[reader->delta_at] * TCC_DELTA_UNIT_US;
        reader->delta_at += 1;
    } else if (symbol == TCC_LARGE_DELTA) {
        if (reader->delta_at + 2 > end) {
            *error = "transport-cc feedback ends inside its deltas";
            return -1;
        }
        int16_t delta = (int16_t)((data[reader->delta_at] << 8) | data[reader->delta_at + 1]);
        reader->time_us += (int64_t)delta * TCC_DELTA_UNIT_US;
        reader->delta_at += 2;
    } else {
        *error = "reserved packet status symbol";
        return -1;
    }
    *time_us = reader->time_us;
    return 1;
}

PyDoc_STRVAR(parse_feedback_doc,
"parse_feedback(packet)\n--\n\n"
"Decode one transport-cc feedback packet (RTPFB FMT 15, header included): (sender SSRC,\n"
"media SSRC, base sequence number, reference time (24 bits, 64 ms units), feedback\n"
"count, arrivals), arrivals being, per number from the base on, the arrival in\n"
"microseconds on the receiver's clock, or None when it was not received. ValueError\n"
"when it is malformed.");

static PyObject *
parse_feedback(PyObject *module, PyObject *packet)
{
    if (!PyBytes_Check(packet)) {
        PyErr_SetString(PyExc_TypeError, "parse_feedback() takes bytes");
        return NULL;
    }
    TccReader reader;
    const char *error = tcc_open(&reader, (const uint8_t *)PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet));
    if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    PyObject *arrivals = PyList_New(reader.count);
    if (arrivals == NULL)
        return NULL;
    for (int i = 0; i < reader.count; i++) {
        int64_t time_us = 0;
        int received = tcc_next(&reader, &time_us, &error);
        PyObject *item = received < 0 ? NULL : received ? PyLong_FromLongLong(time_us) : Py_NewRef(Py_None);
        if (item == NULL) {
            if (received < 0)
                PyErr_SetString(PyExc_ValueError, error);
            Py_DECREF(arrivals);
            return NULL;
        }
        PyList_SET_ITEM(arrivals, i, item);
    }
    return Py_BuildValue("(kkiiiN)", (unsigned long)reader.sender_ssrc, (unsigned long)reader.media_ssrc,
                         reader.base, (int)(reader.reference & 0xFFFFFF), reader.feedback_count, arrivals);
}

PyDoc_STRVAR(split_rtcp_doc,
"split_rtcp(data)\n--\n\n"
"A compound RTCP packet's transport-cc feedback packets taken out: (the rest, [feedback\n"
"packets]); ``data`` itself and [] when it has none. aiortc's parser reads FMT 15 as a\n"
"NACK and refuses a compound packet whose feedback is padded (browsers pad it), so\n"
"these go round it. Anything malformed stays in the rest, for that parser to refuse.");

static PyObject *
split_rtcp(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "split_rtcp() takes bytes");
        return NULL;
    }
    const uint8_t *bytes = (const uint8_t *)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data), at = 0, rest_size = 0;
    PyObject *found = PyList_New(0);
    if (found == NULL)
        return NULL;
    /* First the feedback packets, and how long the rest is. */
    while (at + 4 <= size) {
        Py_ssize_t end = at + 4 + 4 * (Py_ssize_t)((bytes[at + 2] << 8) | bytes[at + 3]);
        if (end > size)
            break;
        if (bytes[at + 1] == RTCP_RTPFB && (bytes[at] & 0x1F) == FMT_TRANSPORT_CC) {
            PyObject *piece = PyBytes_FromStringAndSize((const char *)bytes + at, end - at);
            if (piece == NULL || PyList_Append(found, piece) < 0) {
                Py_XDECREF(piece);
                Py_DECREF(found);
                return NULL;
            }
            Py_DECREF(piece);
        } else {
            rest_size += end - at;
        }
        at = end;
    }
    if (PyList_GET_SIZE(found) == 0)
        return Py_BuildValue("(ON)", data, found);
    /* Then the rest: the other packets in their order, and whatever did not parse. */
    PyObject *rest = PyBytes_FromStringAndSize(NULL, rest_size + size - at);
    if (rest == NULL) {
        Py_DECREF(found);
        return NULL;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(rest);
    Py_ssize_t tail = at;
    at = 0;
    while (at < tail) {
        Py_ssize_t end = at + 4 + 4 * (Py_ssize_t)((bytes[at + 2] << 8) | bytes[at + 3]);
        if (!(bytes[at + 1] == RTCP_RTPFB && (bytes[at] & 0x1F) == FMT_TRANSPORT_CC)) {
            memcpy(out, bytes + at, (size_t)(end - at));
            out += end - at;
        }
        at = end;
    }
    memcpy(out, bytes + tail, (size_t)(size - tail));
    return Py_BuildValue("(NN)", rest, found);
}

/* Sum up one feedback packet's arrivals, matched with the packets ``sink`` stamped
 * (numbers it does not know, or no longer, are left out), into ``summary`` (made ready
 * by the caller). 0, or -1 with ValueError (malformed) or another error set; on error
 * nothing has reached the summary's groups' destination. */
static int
sink_summarize_feedback(SinkObject *sink, const uint8_t *data, Py_ssize_t size, FeedbackSummary *summary)
{
    TccReader reader;
    const char *error = tcc_open(&reader, data, size);
    if (error == NULL) {  /* read it through first: a bad delta late in it feeds nothing */
        TccReader check = reader;
        int64_t time_us;
        for (int i = 0; i < check.count && error == NULL; i++)
            tcc_next(&check, &time_us, &error);
    }
    if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
        return -1;
    }
    for (int i = 0; i < reader.count; i++) {
        int64_t time_us = 0;
        int received = tcc_next(&reader, &time_us, &error);
        int seq = (reader.base + i) & 0xFFFF, slot = seq % TRANSPORT_RING;
        const struct SentPacket *sent = sink->sent != NULL ? &sink->sent[slot] : NULL;
        if (sent == NULL || sent->seq != seq || sent->size == 0)
            continue;
        if (summary_add(summary, sent->at, sent->size, received,
                        (double)time_us / 1e6) < 0)
            return -1;
    }
    return summary_close_group(summary);
}

PyDoc_STRVAR(summarize_doc,
"summarize(packets, burst)\n--\n\n"
"Sum up one feedback for the estimator, its packets given as (send time, size, arrival\n"
"time or None) in seconds, in the order sent: (groups, sent, lost, bytes, first arrival,\n"
"last arrival, least one-way delay, its arrival); groups are (first send, last send,\n"
"latest arrival) of packets sent within ``burst`` seconds of each other. What\n"
"SendSideEstimator.on_packet() does inside, for tests and tools.");

static PyObject *
summarize(PyObject *module, PyObject *args)
{
    PyObject *packets;
    double burst;
    if (!PyArg_ParseTuple(args, "Od:summarize", &packets, &burst))
        return NULL;
    FeedbackSummary summary;
    PyObject *items = summary_start(&summary, packets, "packets must be a sequence", burst);
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    int failed = 0;
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        double sent_at, arrival = 0;
        long size;
        PyObject *arrived_at;
        failed = !PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, i), "dlO:summarize", &sent_at, &size, &arrived_at);
        if (!failed && arrived_at != Py_None) {
            arrival = PyFloat_AsDouble(arrived_at);
            failed = PyErr_Occurred() != NULL;
        }
        failed = failed || summary_add(&summary, sent_at, size, arrived_at != Py_None, arrival) < 0;
    }
    return summary_end(&summary, items, failed);
}

/* SendSideEstimator ------------------------------------------------------------------ */

/* A subscriber connection's send-side estimate (mcu/congestion.py has the why of each
 * rule): the delay trend (DelayTrend), the rate that follows it, and the loss. Run once
 * per transport-cc feedback, ten times a second per subscriber; in Python the rate
 * control alone cost about 8 us a feedback, most of what was left per forwarded packet. */
#define EST_BURST_S 0.005
#define EST_DECREASE_FACTOR 0.85
#define EST_INCREASE_PER_S 0.08
#define EST_MAX_OVER_RECEIVED 1.5
#define EST_RATE_WINDOW_S 0.5
#define EST_START_BPS 1000000
#define EST_MIN_BPS 50000.0
#define EST_MAX_BPS 20000000.0
#define EST_START_RTT_S 0.1           /* a typical round trip, until one is measured */
#define EST_MAX_RTT_S 2.0             /* more is a broken clock or report, not a path */
#define EST_LOSS_HIGH 0.10
#define EST_LOSS_LOW 0.02
#define EST_LOSS_WINDOW_S 1.0
#define EST_CAPACITY_MEMORY_S 10.0    /* how long the rate of the last overuse is remembered */
#define EST_BASE_DELAY_WINDOW_S 5.0
/* What the windows above hold, per feedback: a few at ten feedbacks a second. Feedback
 * far more often than that (no browser sends it) forgets the oldest ones early. */
#define EST_RING 256

static PyTypeObject SinkType;
static PyTypeObject DelayTrendType;

typedef struct {
    int head, count;
} Ring;

static inline int ring_at(const Ring *ring, int i) { return (ring->head + i) % EST_RING; }

/* The slot for a new newest entry (the oldest is dropped when full). */
static inline int
ring_push(Ring *ring)
{
    if (ring->count == EST_RING)
        ring->head = (ring->head + 1) % EST_RING, ring->count--;
    return ring_at(ring, ring->count++);
}

static inline void ring_pop_front(Ring *ring) { ring->head = (ring->head + 1) % EST_RING, ring->count--; }

typedef struct {
    PyObject_HEAD
    DelayTrendObject *detector;
    double delay_bps, loss_bps, received_bps, loss;
    long long decreases;
    Ring received;                    /* per feedback within EST_RATE_WINDOW_S: */
    double received_first[EST_RING], received_last[EST_RING];  /* its arrivals */
    long long received_bytes[EST_RING];
    double newest_arrival;
    Ring losses;                      /* per feedback within EST_LOSS_WINDOW_S */
    double losses_at[EST_RING];
    long long losses_sent[EST_RING], losses_lost[EST_RING];
    Ring delays;                      /* (arrival, one-way delay), increasing delays */
    double delays_at[EST_RING], delays_value[EST_RING];
    int has_last_change, has_capacity;
    double last_change, hold_until, capacity_bps, loss_cut_at, overused_at;
    double rtt;                       /* the subscriber's round trip (set from RTCP) */
    unsigned long long feedbacks;     /* well-formed feedback packets read (estimator_feed) */
    int changed;                      /* a new estimate since the owner last cleared it */
} EstimatorObject;

static inline double py_max(double a, double b) { return b > a ? b : a; }
static inline double py_min(double a, double b) { return b < a ? b : a; }

static int
estimator_init(EstimatorObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"start_bps", NULL};
    double start = EST_START_BPS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|d:SendSideEstimator", keywords, &start))
        return -1;
    DelayTrendObject *detector = (DelayTrendObject *)PyObject_CallFunction(
        (PyObject *)&DelayTrendType, "d", EST_BURST_S);
    if (detector == NULL)
        return -1;
    Py_XSETREF(self->detector, detector);
    self->delay_bps = self->loss_bps = start;
    self->received_bps = self->loss = 0;
    self->decreases = 0;
    self->received.count = self->losses.count = self->delays.count = 0;
    self->newest_arrival = -INFINITY;
    self->has_last_change = self->has_capacity = 0;
    self->hold_until = 0;
    self->loss_cut_at = self->overused_at = -INFINITY;
    self->rtt = EST_START_RTT_S;
    self->feedbacks = 0;
    self->changed = 0;
    return 0;
}

static void
estimator_dealloc(EstimatorObject *self)
{
    Py_XDECREF(self->detector);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static double
estimator_estimate(EstimatorObject *self)
{
    return py_max(EST_MIN_BPS, py_min(self->delay_bps, self->loss_bps));
}

static void
estimator_note_delay(EstimatorObject *self, double arrival, double delay)
{
    /* The front is the least within the window. */
    Ring *delays = &self->delays;
    while (delays->count && self->delays_value[ring_at(delays, delays->count - 1)] >= delay)
        delays->count--;
    int slot = ring_push(delays);
    self->delays_at[slot] = arrival, self->delays_value[slot] = delay;
    while (self->delays_at[ring_at(delays, 0)] < arrival - EST_BASE_DELAY_WINDOW_S)
        ring_pop_front(delays);
}

static void
estimator_update_delay_rate(EstimatorObject *self, double now)
{
    double elapsed = !self->has_last_change ? 0.0 : py_min(now - self->last_change, 1.0);
    self->has_last_change = 1, self->last_change = now;
    int state = self->detector->state;
    if (state > 0) {  /* overuse */
        if (now >= self->hold_until && self->received_bps > 0) {
            /* Below what got through: the queue that built up drains. */
            double target = EST_DECREASE_FACTOR * self->received_bps;
            if (target < self->delay_bps) {
                self->delay_bps = target;
                self->decreases++;
                self->has_capacity = 1, self->capacity_bps = self->received_bps;
            }
            self->overused_at = now;
            /* One decrease per round trip and feedback interval. */
            self->hold_until = now + self->rtt + 0.2;
        }
        return;
    }
    if (state < 0 || now < self->hold_until)  /* a queue draining is no guide */
        return;
    if (self->has_capacity && now - self->overused_at > EST_CAPACITY_MEMORY_S)
        self->has_capacity = 0;  /* long without a queue: the path may have changed */
    double increased;
    if (self->has_capacity && self->delay_bps > 0.9 * self->capacity_bps) {
        /* Near where it last overused: about one packet more per round trip. */
        increased = self->delay_bps + 1200 * 8 / (self->rtt + 0.1) * elapsed;
        if (increased > 1.5 * self->capacity_bps)
            self->has_capacity = 0;  /* far past it: the path has changed */
    } else {
        increased = self->delay_bps * pow(1 + EST_INCREASE_PER_S, elapsed);
    }
    /* Growth stops at 1.5 times what got through: a limit on growing, not a reason to drop. */
    double ceiling = py_max(self->delay_bps, EST_MAX_OVER_RECEIVED * self->received_bps + 10000);
    self->delay_bps = py_max(py_min(py_min(increased, ceiling), EST_MAX_BPS), EST_MIN_BPS);
    if (!self->has_capacity)  /* what got through with no queue is carried (publishers choose) */
        self->delay_bps = py_max(self->delay_bps, self->received_bps);
}

static void
estimator_update_loss_rate(EstimatorObject *self, double now, long long sent, long long lost)
{
    Ring *losses = &self->losses;
    int slot = ring_push(losses);
    self->losses_at[slot] = now, self->losses_sent[slot] = sent, self->losses_lost[slot] = lost;
    while (losses->count && self->losses_at[ring_at(losses, 0)] < now - EST_LOSS_WINDOW_S)
        ring_pop_front(losses);
    long long total = 0, lost_total = 0;
    for (int i = 0; i < losses->count; i++)
        total += self->losses_sent[ring_at(losses, i)], lost_total += self->losses_lost[ring_at(losses, i)];
    self->loss = total ? (double)lost_total / (double)total : 0.0;
    double elapsed = losses->count < 2 ? 0.0 : now - self->losses_at[ring_at(losses, losses->count - 2)];
    if (self->loss > EST_LOSS_HIGH) {
        /* As GCC: lower in proportion to the loss, at most once a third of the window,
         * relative to what gets through. */
        if (now - self->loss_cut_at >= EST_LOSS_WINDOW_S / 3) {
            double cut = py_max(EST_MIN_BPS, self->received_bps * (1 - 0.5 * self->loss));
            self->loss_bps = py_min(self->loss_bps, cut);
            self->loss_cut_at = now;
        }
    } else if (self->loss < EST_LOSS_LOW) {
        self->loss_bps = py_max(self->loss_bps * pow(1 + EST_INCREASE_PER_S, py_min(elapsed, 1.0)),
                                self->received_bps);
        /* Loss says nothing of capacity it has not seen: it never leads delay. */
        self->loss_bps = py_min(self->loss_bps, py_max(self->delay_bps, EST_MIN_BPS));
    }
}

/* The rest of a feedback, once its groups went to the detector. */
static void
estimator_take(EstimatorObject *self, double now, const FeedbackSummary *summary)
{
    if (summary->any_arrived) {
        int slot = ring_push(&self->received);
        self->received_first[slot] = summary->first_arrival;
        self->received_last[slot] = summary->last_arrival;
        self->received_bytes[slot] = summary->bytes;
        self->newest_arrival = py_max(self->newest_arrival, summary->last_arrival);
        estimator_note_delay(self, summary->min_delay_at, summary->min_delay);
    }
    Ring *received = &self->received;
    if (received->count) {
        while (received->count
               && self->received_last[ring_at(received, 0)] < self->newest_arrival - EST_RATE_WINDOW_S)
            ring_pop_front(received);
        if (received->count) {
            double first = self->received_first[ring_at(received, 0)];
            long long bytes = 0;
            for (int i = 0; i < received->count; i++) {
                first = py_min(first, self->received_first[ring_at(received, i)]);
                bytes += self->received_bytes[ring_at(received, i)];
            }
            double span = py_max(self->newest_arrival - first, EST_RATE_WINDOW_S / 2);
            self->received_bps = (double)(bytes * 8) / span;
        }
    }
    estimator_update_delay_rate(self, now);
    estimator_update_loss_rate(self, now, summary->sent, summary->lost);
    self->changed = 1;
}

/* One transport-cc feedback packet (as received) from the subscriber whose connection
 * ``sink`` sends on, read straight into the estimator: 1 with a new estimate, 0 when none
 * of its numbers is ours (or still known: nothing changes), -1 with ValueError when it is
 * malformed. Both ways in take it here: on_packet() and an Inbound. */
static int
estimator_feed(EstimatorObject *self, SinkObject *sink, const uint8_t *packet, Py_ssize_t size,
               double now)
{
    FeedbackSummary summary;
    memset(&summary, 0, sizeof(summary));
    summary.burst = EST_BURST_S;
    summary.trend = self->detector;  /* groups straight to the detector, no tuples */
    if (sink_summarize_feedback(sink, packet, size, &summary) < 0)
        return -1;
    self->feedbacks++;
    if (summary.sent == 0)
        return 0;
    estimator_take(self, now, &summary);
    return 1;
}

PyDoc_STRVAR(estimator_on_packet_doc,
"on_packet(now, sink, packet)\n--\n\n"
"Take one transport-cc feedback packet (RTPFB FMT 15, as received) from the subscriber\n"
"whose connection ``sink`` sends on, at ``now`` (time.monotonic()): its arrivals matched\n"
"with what the sink stamped. Returns the new estimate, or None when none of its numbers\n"
"is ours (or still known): then nothing changes. ValueError when it is malformed (then\n"
"too).");

static PyObject *
estimator_on_packet(EstimatorObject *self, PyObject *args)
{
    double now;
    PyObject *sink, *packet;
    if (!PyArg_ParseTuple(args, "dO!S:on_packet", &now, &SinkType, &sink, &packet))
        return NULL;
    int taken = estimator_feed(self, (SinkObject *)sink, (const uint8_t *)PyBytes_AS_STRING(packet),
                               PyBytes_GET_SIZE(packet), now);
    if (taken < 0)
        return NULL;
    if (taken == 0)
        Py_RETURN_NONE;
    return PyLong_FromDouble(estimator_estimate(self));
}

PyDoc_STRVAR(estimator_on_feedback_doc,
"on_feedback(now, packets)\n--\n\n"
"Take one feedback's packets, given as (send time, size, arrival time or None) in\n"
"seconds in the order sent (as summarize() takes them); returns the new estimate.");

static PyObject *
estimator_on_feedback(EstimatorObject *self, PyObject *args)
{
    double now;
    PyObject *packets;
    if (!PyArg_ParseTuple(args, "dO:on_feedback", &now, &packets))
        return NULL;
    /* Checked through first: nothing reaches the detector from a bad list. */
    PyObject *items = PySequence_Fast(packets, "packets must be a sequence");
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    double *values = PyMem_Malloc(sizeof(double) * 3 * (size_t)(count ? count : 1));
    char *arrived = PyMem_Malloc((size_t)(count ? count : 1));
    int failed = values == NULL || arrived == NULL;
    if (failed)
        PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        long size;
        PyObject *arrived_at;
        failed = !PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, i), "dlO:on_feedback",
                                   &values[3 * i], &size, &arrived_at);
        if (!failed) {
            values[3 * i + 1] = (double)size;
            arrived[i] = arrived_at != Py_None;
            values[3 * i + 2] = arrived[i] ? PyFloat_AsDouble(arrived_at) : 0;
            failed = PyErr_Occurred() != NULL;
        }
    }
    PyObject *result = NULL;
    if (!failed) {
        FeedbackSummary summary;
        memset(&summary, 0, sizeof(summary));
        summary.burst = EST_BURST_S;
        summary.trend = self->detector;
        for (Py_ssize_t i = 0; i < count; i++)
            summary_add(&summary, values[3 * i], (long)values[3 * i + 1], arrived[i], values[3 * i + 2]);
        summary_close_group(&summary);
        estimator_take(self, now, &summary);
        result = PyLong_FromDouble(estimator_estimate(self));
    }
    PyMem_Free(values);
    PyMem_Free(arrived);
    Py_DECREF(items);
    return result;
}

static PyObject *
estimator_probed(EstimatorObject *self, PyObject *arg)
{
    double bps = PyFloat_AsDouble(arg);
    if (bps == -1 && PyErr_Occurred())
        return NULL;
    self->delay_bps = py_max(self->delay_bps, py_min(bps, EST_MAX_BPS));
    self->loss_bps = py_max(self->loss_bps, py_min(bps, EST_MAX_BPS));
    self->has_capacity = 0;  /* the path has changed */
    Py_RETURN_NONE;
}

static PyObject *
estimator_get_estimate(EstimatorObject *self, void *closure)
{
    return PyLong_FromDouble(estimator_estimate(self));
}

static PyObject *
estimator_get_base_delay(EstimatorObject *self, void *closure)
{
    if (!self->delays.count)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(self->delays_value[ring_at(&self->delays, 0)]);
}

static PyObject *
estimator_get_detector(EstimatorObject *self, void *closure)
{
    return Py_NewRef((PyObject *)self->detector);
}

static PyMethodDef estimator_methods[] = {
    {"on_packet", (PyCFunction)estimator_on_packet, METH_VARARGS, estimator_on_packet_doc},
    {"on_feedback", (PyCFunction)estimator_on_feedback, METH_VARARGS, estimator_on_feedback_doc},
    {"probed", (PyCFunction)estimator_probed, METH_O,
     "probed(bps)\n--\n\nA padding probe showed that the link carries ``bps`` with no queue: the "
     "estimate is at least that now, and the rate of the last overuse is forgotten."},
    {NULL}
};

static PyObject *
estimator_get_rtt(EstimatorObject *self, void *closure)
{
    return PyFloat_FromDouble(self->rtt);
}

static int
estimator_set_rtt(EstimatorObject *self, PyObject *value, void *closure)
{
    double rtt = value == NULL ? -1.0 : PyFloat_AsDouble(value);
    if (rtt == -1.0 && PyErr_Occurred())
        return -1;
    if (!(rtt >= 0.0 && rtt <= EST_MAX_RTT_S)) {  /* NaN fails too */
        PyErr_Format(PyExc_ValueError, "rtt_s must be between 0 and %g seconds", EST_MAX_RTT_S);
        return -1;
    }
    self->rtt = rtt;
    return 0;
}

static PyGetSetDef estimator_getset[] = {
    {"rtt_s", (getter)estimator_get_rtt, (setter)estimator_set_rtt,
     "The subscriber's round trip, seconds: how long a decrease holds, and how fast the rate "
     "grows near where it last overused. 0.1 until the owner sets what RTCP measured.", NULL},
    {"estimate_bps", (getter)estimator_get_estimate, NULL, "The estimate, bits per second.", NULL},
    {"base_delay_s", (getter)estimator_get_base_delay, NULL,
     "The least one-way delay seen lately (plus the clocks' offset): the path with no queue "
     "on it. None before any feedback.", NULL},
    {"detector", (getter)estimator_get_detector, NULL, "Its DelayTrend.", NULL},
    {NULL}
};

static PyMemberDef estimator_members[] = {
    {"delay_bps", T_DOUBLE, offsetof(EstimatorObject, delay_bps), READONLY, "The delay estimate."},
    {"loss_bps", T_DOUBLE, offsetof(EstimatorObject, loss_bps), READONLY, "The loss estimate."},
    {"received_bps", T_DOUBLE, offsetof(EstimatorObject, received_bps), READONLY,
     "What arrived lately, bits per second."},
    {"loss", T_DOUBLE, offsetof(EstimatorObject, loss), READONLY, "The share lost lately."},
    {"decreases", T_LONGLONG, offsetof(EstimatorObject, decreases), READONLY,
     "Overuse responses so far."},
    {"feedbacks", T_ULONGLONG, offsetof(EstimatorObject, feedbacks), READONLY,
     "Well-formed transport-cc feedback packets read from the bytes (on_packet(), an Inbound)."},
    {"changed", T_INT, offsetof(EstimatorObject, changed), 0,
     "Set by each new estimate; the owner clears it when it has filed the estimate."},
    {NULL}
};

static PyTypeObject EstimatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.SendSideEstimator",
    .tp_doc = PyDoc_STR("SendSideEstimator(start_bps=1000000)\n--\n\nOne subscriber connection's "
                        "estimate, from its transport-cc feedback (see mcu/congestion.py)."),
    .tp_basicsize = sizeof(EstimatorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)estimator_init,
    .tp_dealloc = (destructor)estimator_dealloc,
    .tp_methods = estimator_methods,
    .tp_getset = estimator_getset,
    .tp_members = estimator_members,
};

static PyMethodDef sink_methods[] = {
    {"sent_range", (PyCFunction)sink_sent_range, METH_VARARGS, sink_sent_range_doc},
    {"bind", (PyCFunction)sink_bind, METH_VARARGS, sink_bind_doc},
    {"send_rtcp", (PyCFunction)sink_send_rtcp, METH_O, sink_send_rtcp_doc},
    {"unbind", (PyCFunction)sink_unbind, METH_NOARGS, "Stop sending; close our socket duplicate."},
    {NULL}
};

static PyGetSetDef sink_getset[] = {
    {"bound", (getter)sink_get_bound, NULL, "Whether packets are being sent.", NULL},
    {"owner", (getter)sink_get_owner, NULL, "What bind() was given as owner (None when unbound).", NULL},
    {"plain", (getter)sink_get_plain, NULL, "Bound to send without SRTP (a pipe between workers).", NULL},
    {"transport_cc_id", (getter)sink_get_transport_cc_id, (setter)sink_set_transport_cc_id,
     "The negotiated transport-cc extension ID: each packet sent is stamped with the "
     "connection's next transport-wide sequence number (0: not negotiated, no stamp).", NULL},
    {NULL}
};

static PyMemberDef sink_members[] = {
    {"send_errors", T_ULONGLONG, offsetof(SinkObject, send_errors), READONLY,
     "Packets that could not be sent (unbound, SRTP error, socket error)."},
    {"transport_seq", T_USHORT, offsetof(SinkObject, transport_seq), 0,
     "The transport-wide sequence number the next packet gets."},
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

/* VP8 payload descriptor (RFC 7741 4.2) ---------------------------------------------- */

/* Where a VP8 packet's picture ID and TL0PICIDX are, in bytes from the payload's start
 * (-1: absent). A subscriber's decoder orders pictures by them, so a leg whose source
 * changes (another speaker, another simulcast layer) rewrites them to continue its own. */
typedef struct {
    int pid_at;
    int pid_mask;             /* 0x7F or 0x7FFF: the M bit's 7- or 15-bit picture ID */
    int tl0_at;
} Vp8Fields;

static void
vp8_fields(const uint8_t *payload, Py_ssize_t size, Vp8Fields *fields)
{
    fields->pid_at = fields->tl0_at = -1;
    fields->pid_mask = 0x7F;
    if (size < 2 || !(payload[0] & 0x80))  /* no extended control bits */
        return;
    uint8_t extended = payload[1];
    Py_ssize_t offset = 2;
    if (extended & 0x80) {  /* I: picture ID */
        if (offset >= size)
            return;
        int wide = payload[offset] & 0x80;
        if (offset + (wide ? 2 : 1) > size)
            return;
        fields->pid_at = (int)offset;
        fields->pid_mask = wide ? 0x7FFF : 0x7F;
        offset += wide ? 2 : 1;
    }
    if ((extended & 0x40) && offset < size)  /* L: TL0PICIDX */
        fields->tl0_at = (int)offset;
}

static inline int
vp8_read_pid(const uint8_t *payload, const Vp8Fields *fields)
{
    const uint8_t *at = payload + fields->pid_at;
    return fields->pid_mask == 0x7FFF ? ((at[0] & 0x7F) << 8) | at[1] : at[0] & 0x7F;
}

/* Add the offsets to the picture ID and TL0PICIDX of a VP8 payload, in place. */
static inline void
vp8_rewrite(uint8_t *payload, const Vp8Fields *fields, int pid_offset, int tl0_offset)
{
    if (fields->pid_at >= 0) {
        int pid = (vp8_read_pid(payload, fields) + pid_offset) & fields->pid_mask;
        uint8_t *at = payload + fields->pid_at;
        if (fields->pid_mask == 0x7FFF) {
            at[0] = (uint8_t)(0x80 | (pid >> 8));
            at[1] = (uint8_t)pid;
        } else {
            at[0] = (uint8_t)pid;
        }
    }
    if (fields->tl0_at >= 0)
        payload[fields->tl0_at] = (uint8_t)(payload[fields->tl0_at] + tl0_offset);
}

static PyTypeObject TrackType;

/* Leg ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *sink;                   /* a Sink, or NULL: not sending */
    unsigned int ssrc;
    int payload_type;
    char video;                       /* video waits for a keyframe and keeps a history */
    int codec;                        /* CODEC_*: only a track of the same codec is sent */
    char paused;
    char started;
    char rebase_ts;                   /* the next start continues our timestamps (a new source) */
    int clock_rate;                   /* RTP clock, to carry the timestamp over a switch's gap */
    double last_sent_at;              /* monotonic time of the last packet sent */
    int seq_offset;
    int next_seq;                     /* the sequence number our next packet continues with */
    unsigned int ts_offset;
    unsigned int last_ts;
    unsigned long long packets;
    unsigned long long octets;        /* payload octets, as sender reports count them */
    /* Which received track this leg sends (a Track, or NULL: whichever calls it), and the
     * one it moves to at that track's next keyframe (a simulcast layer switch, NULL: none).
     * A leg sits in the legs of both while it waits; the other's packets pass it by. */
    PyObject *source;
    PyObject *target;
    /* VP8: picture IDs and TL0PICIDX continue ours across a change of source, so the
     * subscriber's decoder sees one stream (RFC 7741 4.2). */
    int pid_offset;
    int tl0_offset;
    int last_pid;                     /* -1 before the first picture ID sent */
    int last_tl0;                     /* -1 before the first TL0PICIDX sent */
    /* Video: what was sent, by our sequence number, for NACKs. The packet itself is one
     * bytes object shared by every leg a received packet went out on (as built for the
     * first of them); a leg keeps its own timestamp and rebuilds its header on a resend.
     * So a subscriber's history costs pointers, not a copy of each packet. */
    PyObject **history;
    uint16_t *history_seq;
    uint32_t *history_ts;
    uint16_t *history_pid_offset;     /* the kept packet has the source's own picture ID */
    uint8_t *history_tl0_offset;
} LegObject;

static int
leg_init(LegObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"video", "codec", NULL};
    int video = 0, codec = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "p|i:Leg", keywords, &video, &codec)
        || (codec = codec_for(video, codec, "leg")) < 0)
        return -1;
    if (video && self->history == NULL) {
        self->history = PyMem_Calloc(HISTORY_SIZE, sizeof(PyObject *));
        self->history_seq = PyMem_Calloc(HISTORY_SIZE, sizeof(uint16_t));
        self->history_ts = PyMem_Calloc(HISTORY_SIZE, sizeof(uint32_t));
        self->history_pid_offset = PyMem_Calloc(HISTORY_SIZE, sizeof(uint16_t));
        self->history_tl0_offset = PyMem_Calloc(HISTORY_SIZE, sizeof(uint8_t));
        if (self->history == NULL || self->history_seq == NULL || self->history_ts == NULL
            || self->history_pid_offset == NULL || self->history_tl0_offset == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->video = (char)video;
    self->codec = codec;
    self->clock_rate = video ? 90000 : 48000;
    self->last_pid = self->last_tl0 = -1;
    return 0;
}

static int
leg_traverse(LegObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->sink);
    Py_VISIT(self->source);
    Py_VISIT(self->target);
    return 0;
}

static int
leg_clear(LegObject *self)
{
    Py_CLEAR(self->sink);
    Py_CLEAR(self->source);
    Py_CLEAR(self->target);
    return 0;
}

static void
leg_dealloc(LegObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->sink);
    Py_CLEAR(self->source);
    Py_CLEAR(self->target);
    if (self->history != NULL) {
        for (int i = 0; i < HISTORY_SIZE; i++)
            Py_CLEAR(self->history[i]);
        PyMem_Free(self->history);
    }
    PyMem_Free(self->history_seq);
    PyMem_Free(self->history_ts);
    PyMem_Free(self->history_pid_offset);
    PyMem_Free(self->history_tl0_offset);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
leg_get_track(LegObject *self, void *closure)
{
    PyObject *track = closure == NULL ? self->source : self->target;
    return Py_NewRef(track != NULL ? track : Py_None);
}

static int
leg_set_track(LegObject *self, PyObject *value, void *closure)
{
    PyObject **field = closure == NULL ? &self->source : &self->target;
    if (value == NULL || value == Py_None) {
        Py_CLEAR(*field);
        return 0;
    }
    if (!PyObject_TypeCheck(value, &TrackType)) {
        PyErr_SetString(PyExc_TypeError, "a leg's source and target are Track objects or None");
        return -1;
    }
    Py_XSETREF(*field, Py_NewRef(value));
    return 0;
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

/* Bytes 1-11 of an RTP header as this leg sends it (byte 0 and what follows are the
 * packet's own): the marker, our payload type, sequence number, timestamp and SSRC. */
static inline void
write_leg_header(uint8_t *header, const LegObject *leg, int marker, int seq, uint32_t ts)
{
    header[1] = (uint8_t)((marker ? 0x80 : 0) | (leg->payload_type & 0x7F));
    header[2] = (uint8_t)(seq >> 8);
    header[3] = (uint8_t)seq;
    header[4] = (uint8_t)(ts >> 24);
    header[5] = (uint8_t)(ts >> 16);
    header[6] = (uint8_t)(ts >> 8);
    header[7] = (uint8_t)ts;
    header[8] = (uint8_t)(leg->ssrc >> 24);
    header[9] = (uint8_t)(leg->ssrc >> 16);
    header[10] = (uint8_t)(leg->ssrc >> 8);
    header[11] = (uint8_t)leg->ssrc;
}

static double monotonic_now(void);

/* A retransmission is a packet of its own on the wire: on a connection with transport-cc
 * it gets the next transport-wide number in place of the one it was first sent with
 * (the subscriber's feedback reports each number once). Only the element of our own ID
 * in our one-byte block is touched. */
static void
leg_restamp(LegObject *self, uint8_t *packet, Py_ssize_t size)
{
    SinkObject *sink = (SinkObject *)self->sink;
    if (sink == NULL || sink->transport_cc_id == 0 || !(packet[0] & 0x10))
        return;
    Py_ssize_t block = RTP_HEADER_SIZE + 4 * (packet[0] & 0x0F);
    if (block + 4 > size || packet[block] != 0xBE || packet[block + 1] != 0xDE)
        return;
    Py_ssize_t end = block + 4 + 4 * ((packet[block + 2] << 8) | packet[block + 3]);
    if (end > size)
        return;
    for (Py_ssize_t at = block + 4; at < end;) {
        if (packet[at] == 0) {
            at++;
            continue;
        }
        int id = packet[at] >> 4, length = (packet[at] & 0x0F) + 1;
        if (id == 15 || at + 1 + length > end)
            return;
        if (id == sink->transport_cc_id && length == 2) {
            uint16_t seq = sink->transport_seq++;
            packet[at + 1] = (uint8_t)(seq >> 8);
            packet[at + 2] = (uint8_t)seq;
            sink_record(sink, seq, monotonic_now(), size);
            return;
        }
        at += 1 + length;
    }
}

static PyObject *
leg_sent(LegObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"seq", "restamp", NULL};
    long seq;
    int restamp = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "l|p:sent", keywords, &seq, &restamp))
        return NULL;
    if (seq < 0 || seq > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "sequence number out of range");
        return NULL;
    }
    if (self->history == NULL)
        Py_RETURN_NONE;
    int slot = (int)(seq % HISTORY_SIZE);
    PyObject *shared = self->history[slot];
    if (shared == NULL || self->history_seq[slot] != (uint16_t)seq)
        Py_RETURN_NONE;
    /* The shared packet with this leg's header: payload type, sequence number, timestamp
     * and SSRC (the first byte, the marker, extensions and payload are the same). */
    Py_ssize_t size = PyBytes_GET_SIZE(shared);
    PyObject *packet = PyBytes_FromStringAndSize(PyBytes_AS_STRING(shared), size);
    if (packet == NULL)
        return NULL;
    uint8_t *header = (uint8_t *)PyBytes_AS_STRING(packet);
    write_leg_header(header, self, header[1] & 0x80, (int)seq, self->history_ts[slot]);
    if (self->codec == CODEC_VP8 && (self->history_pid_offset[slot] || self->history_tl0_offset[slot])) {
        /* The kept packet has its source's picture ID (legs differ in their offsets). */
        Py_ssize_t start = RTP_HEADER_SIZE + ((header[0] & 0x10) && size >= RTP_HEADER_SIZE + 4
            ? 4 + 4 * ((header[RTP_HEADER_SIZE + 2] << 8) | header[RTP_HEADER_SIZE + 3]) : 0);
        if (start < size) {
            Vp8Fields fields;
            vp8_fields(header + start, size - start, &fields);
            vp8_rewrite(header + start, &fields, self->history_pid_offset[slot],
                        self->history_tl0_offset[slot]);
        }
    }
    if (restamp)
        leg_restamp(self, header, size);
    return packet;
}

static PyMethodDef leg_methods[] = {
    {"sent", (PyCFunction)(void (*)(void))leg_sent, METH_VARARGS | METH_KEYWORDS,
     "sent(seq, restamp=False)\n--\n\nThe packet (plain RTP) sent with sequence number ``seq``, "
     "if still kept. ``restamp``: it is about to be sent again; on a sink with transport-cc "
     "it gets the next transport-wide sequence number (and is kept as sent now)."},
    {NULL}
};

static PyGetSetDef leg_getset[] = {
    {"sink", (getter)leg_get_sink, (setter)leg_set_sink, "Where packets go (None: nowhere).", NULL},
    {"source", (getter)leg_get_track, (setter)leg_set_track,
     "The Track whose packets this leg sends (None: any track it is a leg of).", NULL},
    {"target", (getter)leg_get_track, (setter)leg_set_track,
     "The Track it changes to at that track's next keyframe (None: no change waiting); "
     "receive() then makes it the source and reports RECEIVED_SWITCHED.", (void *)1},
    {NULL}
};

static PyMemberDef leg_members[] = {
    {"ssrc", T_UINT, offsetof(LegObject, ssrc), 0, "Our SSRC on the subscriber's connection."},
    {"payload_type", T_INT, offsetof(LegObject, payload_type), 0, NULL},
    {"video", T_BOOL, offsetof(LegObject, video), READONLY, NULL},
    {"codec", T_INT, offsetof(LegObject, codec), 0,
     "CODEC_VP8 or CODEC_H264 (CODEC_NONE for audio): receive() sends it only a track's "
     "packets of that codec. Set with started False: a new codec starts on a keyframe."},
    {"paused", T_BOOL, offsetof(LegObject, paused), 0, NULL},
    {"started", T_BOOL, offsetof(LegObject, started), 0,
     "False until the first packet (for video, a keyframe) re-bases the sequence numbers."},
    {"next_seq", T_INT, offsetof(LegObject, next_seq), 0, NULL},
    {"seq_offset", T_INT, offsetof(LegObject, seq_offset), READONLY,
     "Added to the track's sequence numbers on this leg (to map a NACK back to the track)."},
    {"ts_offset", T_UINT, offsetof(LegObject, ts_offset), 0, NULL},
    {"rebase_ts", T_BOOL, offsetof(LegObject, rebase_ts), 0,
     "Set when the leg gets another source: at its start, the timestamps continue ours."},
    {"clock_rate", T_INT, offsetof(LegObject, clock_rate), 0, NULL},
    {"last_ts", T_UINT, offsetof(LegObject, last_ts), READONLY, NULL},
    {"last_picture_id", T_INT, offsetof(LegObject, last_pid), READONLY,
     "VP8: the newest picture ID sent (-1: none yet)."},
    {"packets", T_ULONGLONG, offsetof(LegObject, packets), READONLY, NULL},
    {"octets", T_ULONGLONG, offsetof(LegObject, octets), READONLY, NULL},
    {NULL}
};

static PyTypeObject LegType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Leg",
    .tp_doc = "Leg(video, codec=CODEC_VP8 for video)\n--\n\nOne track forwarded to one subscriber.",
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

/* fan-out --------------------------------------------------------------------------- */

static int
seq_newer(int a, int b)
{
    return a != b && ((a - b) & 0xFFFF) < 0x8000;
}


typedef struct {
    long sent, bytes, errors;
    int wants_keyframe;
    int switched;             /* a leg changed to this track (its target) */
} FanOutResult;

/* Send one packet to every leg: header per leg, then ``extension``, then ``payload``
 * (payload and padding). The caller has checked the types in ``legs`` and the size.
 * ``track``: the Track it came from (NULL: the mixer's, sent to every leg given);
 * ``keyframe``: what keyframe_start() found (KEY_*); ``vp8``: where its picture ID is
 * (NULL: nothing to rewrite, as for every H.264 and audio payload). */
static int
fan_out(PyObject *legs, const uint8_t *extension, Py_ssize_t extension_size,
        const uint8_t *payload, Py_ssize_t payload_bytes, int seq, uint32_t timestamp,
        int marker, int keyframe, int padded, long payload_size, int codec,
        PyObject *track, const Vp8Fields *vp8, FanOutResult *result)
{
    int pid = vp8 != NULL && vp8->pid_at >= 0 ? vp8_read_pid(payload, vp8) : -1;
    int tl0 = vp8 != NULL && vp8->tl0_at >= 0 ? payload[vp8->tl0_at] : -1;
    uint8_t *out_payload;
    uint8_t packet[MAX_PLAIN_PACKET + TRANSPORT_CC_ROOM + SRTP_TRAILER_ROOM];
    Py_ssize_t size;
    uint8_t first = 0x80 | (extension_size > 0 ? 0x10 : 0) | (padded ? 0x20 : 0);
    Py_ssize_t count = PyTuple_GET_SIZE(legs);
    double now = monotonic_now();
    PyObject *shared = NULL;  /* this packet as kept in the legs' histories (see LegObject) */
    for (Py_ssize_t i = 0; i < count; i++) {
        LegObject *leg = (LegObject *)PyTuple_GET_ITEM(legs, i);
        if (leg->sink == NULL || leg->paused)
            continue;
        /* A leg negotiated for another codec: its subscriber could not decode these
         * bytes (the room never points it here; this makes sure). codec < 0: the
         * mixer's forward(), whose legs the caller chose. */
        if (codec >= 0 && leg->codec != codec)
            continue;
        if (track != NULL && leg->source != NULL && leg->source != track) {
            /* Another layer of the same camera: it takes over at its first keyframe, and
             * until then the leg goes on sending the layer it has, with no gap. */
            if (leg->target != track)
                continue;
            /* H.264: the keyframe's packet with its SPS (see KEY_PARAMETER_SETS); one
             * without it (its SPS lost) waits for the next keyframe, asked for here. */
            if (!(keyframe & (codec == CODEC_H264 ? KEY_PARAMETER_SETS : KEY_START))) {
                result->wants_keyframe = 1;
                continue;
            }
            Py_XSETREF(leg->source, Py_NewRef(track));
            Py_CLEAR(leg->target);
            leg->started = 0;
            leg->rebase_ts = 1;
            result->switched = 1;
        }
        if (!leg->started) {
            if (leg->video && !keyframe) {
                result->wants_keyframe = 1;
                continue;
            }
            leg->started = 1;
            if (pid >= 0)  /* continue our picture IDs after the last we sent */
                leg->pid_offset = leg->last_pid >= 0 ? (leg->last_pid + 1 - pid) & vp8->pid_mask : 0;
            if (tl0 >= 0)
                leg->tl0_offset = leg->last_tl0 >= 0 ? (leg->last_tl0 + 1 - tl0) & 0xFF : 0;
            /* Continue our own sequence space without a gap the subscriber would NACK. */
            leg->seq_offset = (leg->next_seq - seq) & 0xFFFF;
            if (leg->rebase_ts) {
                /* Another source's timestamps: continue ours after the real gap, so the
                 * subscriber's jitter buffer sees one stream that paused, not a jump. */
                leg->rebase_ts = 0;
                if (leg->packets > 0) {
                    double gap = now - leg->last_sent_at;
                    uint32_t step = gap > 0 ? (uint32_t)(gap * leg->clock_rate) : 0;
                    leg->ts_offset = leg->last_ts + (step > 0 ? step : 1) - timestamp;
                }
            }
        }
        int out_seq = (seq + leg->seq_offset) & 0xFFFF;
        uint32_t out_ts = timestamp + leg->ts_offset;
        packet[0] = first;
        write_leg_header(packet, leg, marker, out_seq, out_ts);
        memcpy(packet + RTP_HEADER_SIZE, extension, (size_t)extension_size);
        /* transport-cc: the connection's own sequence number, after the shared block. */
        SinkObject *sink = (SinkObject *)leg->sink;
        Py_ssize_t leg_extension_size = extension_size;
        int transport_seq = -1;
        if (sink->transport_cc_id)
            leg_extension_size = sink_stamp(sink, packet, extension_size, &transport_seq);
        size = RTP_HEADER_SIZE + leg_extension_size + payload_bytes;
        /* transport-cc end */
        out_payload = packet + RTP_HEADER_SIZE + leg_extension_size;
        memcpy(out_payload, payload, (size_t)payload_bytes);
        int newest = seq_newer((out_seq + 1) & 0xFFFF, leg->next_seq);
        if (newest)
            leg->next_seq = (out_seq + 1) & 0xFFFF;
        if (leg->history != NULL) {
            if (shared == NULL) {  /* with the source's own picture ID: see leg_sent() */
                shared = PyBytes_FromStringAndSize((const char *)packet, size);
                if (shared == NULL)
                    return -1;
            }
            int slot = out_seq % HISTORY_SIZE;
            Py_INCREF(shared);
            Py_XSETREF(leg->history[slot], shared);
            leg->history_seq[slot] = (uint16_t)out_seq;
            leg->history_ts[slot] = out_ts;
            leg->history_pid_offset[slot] = pid >= 0 ? (uint16_t)leg->pid_offset : 0;
            leg->history_tl0_offset[slot] = tl0 >= 0 ? (uint8_t)leg->tl0_offset : 0;
        }
        if (pid >= 0 || tl0 >= 0) {
            if (leg->pid_offset || leg->tl0_offset)
                vp8_rewrite(out_payload, vp8, leg->pid_offset, leg->tl0_offset);
            if (newest && pid >= 0)
                leg->last_pid = (pid + leg->pid_offset) & vp8->pid_mask;
            if (newest && tl0 >= 0)
                leg->last_tl0 = (tl0 + leg->tl0_offset) & 0xFF;
        }
        leg->last_ts = out_ts;
        if (transport_seq >= 0)  /* kept even if not sent: the subscriber reports it lost */
            sink_record(sink, transport_seq, now, size);
        if (sink_send(sink, packet, (int)size) < 0) {
            result->errors++;
            continue;
        }
        leg->packets++;
        leg->last_sent_at = now;
        leg->octets += (unsigned long long)payload_size;
        result->sent++;
        result->bytes += size;
    }
    Py_XDECREF(shared);
    return 0;
}

static int
check_legs(PyObject *legs)
{
    if (!PyTuple_Check(legs)) {
        PyErr_SetString(PyExc_TypeError, "legs must be a tuple of Leg objects");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(legs); i++) {
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(legs, i), &LegType)) {
            PyErr_SetString(PyExc_TypeError, "legs must hold Leg objects");
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(forward_doc,
"forward(legs, extension, data, payload_start, seq, timestamp, marker, keyframe, padded,\n"
"        payload_size)\n"
"--\n\n"
"Send one packet to every leg in the tuple ``legs``: a 12-byte header written per leg,\n"
"then ``extension`` (a header extension block, or empty), then ``data`` from\n"
"``payload_start`` on (payload and padding). Returns (packets_sent, bytes_sent,\n"
"send_errors, wants_keyframe): ``wants_keyframe`` when a video leg is waiting for one.\n"
"The mixer's path; received packets take receive().");

static PyObject *
forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "forward() takes 10 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *legs = args[0];
    if (!PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "forward() wants bytes for extension and data");
        return NULL;
    }
    if (check_legs(legs) < 0)
        return NULL;
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
    Py_ssize_t size = RTP_HEADER_SIZE + extension_size + data_size - payload_start;
    if (size > MAX_PLAIN_PACKET) {
        PyErr_Format(PyExc_ValueError, "packet too long to forward: %zd bytes", size);
        return NULL;
    }
    FanOutResult result = {0, 0, 0, 0, 0};
    if (fan_out(legs, (const uint8_t *)PyBytes_AS_STRING(args[1]), extension_size,
                (const uint8_t *)PyBytes_AS_STRING(args[2]) + payload_start, data_size - payload_start,
                (int)seq, (uint32_t)timestamp, marker, keyframe, padded, payload_size, -1, NULL, NULL,
                &result) < 0)
        return NULL;
    return Py_BuildValue("(lllO)", result.sent, result.bytes, result.errors,
                         result.wants_keyframe ? Py_True : Py_False);
}

/* Counters -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    unsigned long long packets_received;
    unsigned long long packets_malformed;
    unsigned long long packets_unroutable;
    unsigned long long packets_forwarded;
    unsigned long long bytes_forwarded;
    unsigned long long send_errors;
} CountersObject;

static PyMemberDef counters_members[] = {
    {"packets_received", T_ULONGLONG, offsetof(CountersObject, packets_received), 0, NULL},
    {"packets_malformed", T_ULONGLONG, offsetof(CountersObject, packets_malformed), 0, NULL},
    {"packets_unroutable", T_ULONGLONG, offsetof(CountersObject, packets_unroutable), 0, NULL},
    {"packets_forwarded", T_ULONGLONG, offsetof(CountersObject, packets_forwarded), 0, NULL},
    {"bytes_forwarded", T_ULONGLONG, offsetof(CountersObject, bytes_forwarded), 0, NULL},
    {"send_errors", T_ULONGLONG, offsetof(CountersObject, send_errors), 0, NULL},
    {NULL}
};

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Counters",
    .tp_doc = "Counters of the packet path, one set per media worker (mcu/stats.py).",
    .tp_basicsize = sizeof(CountersObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_members = counters_members,
};

/* Track ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *legs;                   /* tuple of Leg */
    int payload_type;                 /* -1 until negotiated */
    char video;
    int codec;                        /* CODEC_*: how keyframes are found, which legs fit */
    char muted;                       /* nothing is forwarded */
    char tapped;                      /* receive() reports each packet for the taps */
    /* The mixer's gate for a source it does not play now: an audio packet quieter than
     * this level (-dBov) is not reported for the taps, only its level kept in
     * held_level, the loudest of those since Python last set it to 128. 127: no gate. */
    int tap_level_limit;
    int held_level;
    /* Receive statistics, for receiver reports and the room's control loop. */
    unsigned long long packets;
    unsigned long long octets;
    int highest_seq;                  /* -1 before the first packet */
    int base_seq;
    long long cycles;
    double last_packet_at;            /* time.monotonic() of the last packet */
    unsigned long long activity_sum;  /* sum of (127 - audio level) over packets */
    unsigned long long activity_packets;
} TrackObject;

static int
track_init(TrackObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"video", "codec", NULL};
    int video = 0, codec = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "p|i:Track", keywords, &video, &codec)
        || (codec = codec_for(video, codec, "track")) < 0)
        return -1;
    self->video = (char)video;
    self->codec = codec;
    self->payload_type = -1;
    self->highest_seq = -1;
    self->base_seq = -1;
    self->tap_level_limit = 127;
    self->held_level = 128;
    if (self->legs == NULL)
        self->legs = PyTuple_New(0);
    return self->legs == NULL ? -1 : 0;
}

static int
track_traverse(TrackObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->legs);
    return 0;
}

static int
track_clear(TrackObject *self)
{
    Py_CLEAR(self->legs);
    return 0;
}

static void
track_dealloc(TrackObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->legs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
track_get_legs(TrackObject *self, void *closure)
{
    if (self->legs == NULL)
        return PyTuple_New(0);
    Py_INCREF(self->legs);
    return self->legs;
}

static int
track_set_legs(TrackObject *self, PyObject *value, void *closure)
{
    if (value == NULL || check_legs(value) < 0) {
        if (value == NULL)
            PyErr_SetString(PyExc_TypeError, "legs cannot be deleted");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->legs, value);
    return 0;
}

static PyGetSetDef track_getset[] = {
    {"legs", (getter)track_get_legs, (setter)track_set_legs, "The legs it is forwarded on.", NULL},
    {NULL}
};

static PyMemberDef track_members[] = {
    {"payload_type", T_INT, offsetof(TrackObject, payload_type), 0, NULL},
    {"video", T_BOOL, offsetof(TrackObject, video), READONLY, NULL},
    {"codec", T_INT, offsetof(TrackObject, codec), 0,
     "CODEC_VP8, CODEC_H264 or CODEC_NONE (audio): how keyframes are found, which legs get it."},
    {"muted", T_BOOL, offsetof(TrackObject, muted), 0, NULL},
    {"tapped", T_BOOL, offsetof(TrackObject, tapped), 0, NULL},
    {"tap_level_limit", T_INT, offsetof(TrackObject, tap_level_limit), 0,
     "Audio packets quieter than this RFC 6464 level are not reported for the taps (127: all are)."},
    {"held_level", T_INT, offsetof(TrackObject, held_level), 0,
     "The loudest level of the packets held back from the taps since it was set to 128."},
    {"packets", T_ULONGLONG, offsetof(TrackObject, packets), 0, NULL},
    {"octets", T_ULONGLONG, offsetof(TrackObject, octets), 0, NULL},
    {"highest_seq", T_INT, offsetof(TrackObject, highest_seq), READONLY, NULL},
    {"base_seq", T_INT, offsetof(TrackObject, base_seq), READONLY, NULL},
    {"cycles", T_LONGLONG, offsetof(TrackObject, cycles), READONLY, NULL},
    {"last_packet_at", T_DOUBLE, offsetof(TrackObject, last_packet_at), READONLY, NULL},
    {"activity_sum", T_ULONGLONG, offsetof(TrackObject, activity_sum), 0, NULL},
    {"activity_packets", T_ULONGLONG, offsetof(TrackObject, activity_packets), 0, NULL},
    {NULL}
};

static PyTypeObject TrackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Track",
    .tp_doc = "Track(video, codec=CODEC_VP8 for video)\n--\n\nOne received track: its statistics and the legs it goes to.",
    .tp_basicsize = sizeof(TrackObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)track_init,
    .tp_dealloc = (destructor)track_dealloc,
    .tp_traverse = (traverseproc)track_traverse,
    .tp_clear = (inquiry)track_clear,
    .tp_members = track_members,
    .tp_getset = track_getset,
};

/* VP8 (RFC 7741): does this payload begin a keyframe? First partition start, P bit clear. */
static int
vp8_keyframe_start(const uint8_t *payload, Py_ssize_t size)
{
    if (size < 1)
        return 0;
    uint8_t first = payload[0];
    if (!(first & 0x10) || (first & 0x07) != 0)
        return 0;
    Py_ssize_t offset = 1;
    if (first & 0x80) {  /* X: extended control bits follow */
        if (size <= offset)
            return 0;
        uint8_t extended = payload[offset++];
        if (extended & 0x80) {  /* I: picture ID, 7 or 15 bits */
            if (size <= offset)
                return 0;
            offset += (payload[offset] & 0x80) ? 2 : 1;
        }
        if (extended & 0x40)  /* L: TL0PICIDX */
            offset++;
        if (extended & 0x30)  /* T or K: TID/KEYIDX byte */
            offset++;
    }
    if (size <= offset)
        return 0;
    return !(payload[offset] & 0x01);  /* the inverse key frame flag */
}

/* H.264 (RFC 6184, packetization mode 1): does this payload begin a keyframe? That is
 * the packet a subscriber's decoder can start from: one carrying the SPS (type 7), which
 * an encoder sends (with the PPS) just before each IDR picture, or the start of an IDR
 * slice (type 5) when the parameter sets were not sent in-band before it. Starting at
 * the IDR after an SPS of its own would leave the decoder without its parameter sets;
 * a lone PPS (8) is not a start either: the SPS before it was. Looked for in a single
 * NAL unit packet, in every NAL unit of a STAP-A (24), and in the first fragment of a
 * FU-A (28). Anything truncated or malformed is not a keyframe start. Returns KEY_*. */
static inline int
h264_key_flags(uint8_t nal_type)
{
    if (nal_type == 7)
        return KEY_START | KEY_PARAMETER_SETS;
    return nal_type == 5 ? KEY_START : 0;
}

static int
h264_keyframe_start(const uint8_t *payload, Py_ssize_t size)
{
    if (size < 1)
        return 0;
    uint8_t type = payload[0] & 0x1F;
    if (type >= 1 && type <= 23)  /* a single NAL unit */
        return h264_key_flags(type);
    if (type == 24) {  /* STAP-A: (16-bit size, NAL unit) repeated */
        Py_ssize_t offset = 1;
        int found = 0;
        /* Every unit is walked (an encoder may put SEI or the IDR before the SPS), and
         * a size beyond the payload anywhere voids the lot: nothing in it can be trusted. */
        while (offset < size) {
            if (offset + 2 >= size)
                return 0;  /* a size field cut short, or a size with no unit after it */
            Py_ssize_t length = (payload[offset] << 8) | payload[offset + 1];
            offset += 2;
            if (length == 0 || offset + length > size)
                return 0;
            found |= h264_key_flags(payload[offset] & 0x1F);
            offset += length;
        }
        return found;
    }
    if (type == 28) {  /* FU-A: indicator, then header (S E R type), then a fragment */
        if (size < 3)  /* a first fragment carries at least one byte of the NAL unit */
            return 0;
        uint8_t header = payload[1];
        return (header & 0x80) ? h264_key_flags(header & 0x1F) : 0;
    }
    return 0;  /* 0, STAP-B, MTAP, FU-B (not in mode 1) and reserved types */
}

static int
keyframe_start(int codec, const uint8_t *payload, Py_ssize_t size)
{
    switch (codec) {
    case CODEC_VP8:
        return vp8_keyframe_start(payload, size) ? KEY_START : 0;
    case CODEC_H264:
        return h264_keyframe_start(payload, size);
    default:
        return 0;
    }
}

PyDoc_STRVAR(keyframe_doc,
"is_keyframe_start(payload, codec=CODEC_VP8)\n--\n\n"
"True when this RTP payload begins a keyframe, as receive() decides for a track of\n"
"``codec``: VP8, the first partition's start with the P bit clear; H.264, a packet\n"
"carrying an SPS or the start of an IDR slice (single NAL unit, STAP-A or FU-A).");

static PyObject *
is_keyframe(PyObject *module, PyObject *args)
{
    Py_buffer view;
    int codec = CODEC_VP8;
    if (!PyArg_ParseTuple(args, "y*|i:is_keyframe_start", &view, &codec))
        return NULL;
    int keyframe = keyframe_start(codec, view.buf, view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(keyframe);
}

/* Arrivals -------------------------------------------------------------------------- */

/* Between two feedback packets (one per publisher connection each worker tick, 100 ms)
 * a publisher sends a few dozen packets, a few hundred at most; what does not fit is
 * counted and will be reported lost. */
#define ARRIVALS_SIZE 2048
#define TCC_MAX_GAP_US 8000000        /* what a two-byte delta can say, with room to spare */

typedef struct {
    PyObject_HEAD
    int extension_id;                 /* the transport-cc element's ID on this connection */
    int count;
    uint16_t seq[ARRIVALS_SIZE];
    double at[ARRIVALS_SIZE];         /* monotonic seconds, when receive() handled it */
    unsigned long long overflows;
    /* What feedback() reported so far: each number is reported once. */
    int has_highest, has_next;
    long long highest;                /* the highest number seen, unwrapped */
    long long next_number;            /* the first not yet reported, unwrapped */
    int feedback_count;               /* feedback packets made, mod 256 */
    unsigned long long packets_reported;
} ArrivalsObject;

static int
arrivals_init(ArrivalsObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"extension_id", NULL};
    int id = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i:Arrivals", keywords, &id))
        return -1;
    if (id < 0 || id > 14) {
        PyErr_SetString(PyExc_ValueError, "extension_id must be 0 (off) or 1-14");
        return -1;
    }
    self->extension_id = id;
    self->count = 0;
    self->has_highest = self->has_next = 0;
    self->feedback_count = 0;
    self->packets_reported = 0;
    return 0;
}

static inline void
arrivals_add(ArrivalsObject *self, int seq, double at)
{
    if (self->count < ARRIVALS_SIZE) {
        self->seq[self->count] = (uint16_t)seq;
        self->at[self->count] = at;
        self->count++;
    } else {
        self->overflows++;
    }
}

static PyObject *
arrivals_record(ArrivalsObject *self, PyObject *args)
{
    int seq;
    double at;
    if (!PyArg_ParseTuple(args, "id:record", &seq, &at))
        return NULL;
    if (seq < 0 || seq > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "sequence number out of range");
        return NULL;
    }
    arrivals_add(self, seq, at);
    Py_RETURN_NONE;
}

static long long
arrivals_unwrap(ArrivalsObject *self, int seq)
{
    if (!self->has_highest) {
        self->has_highest = 1;
        self->highest = seq;
        return seq;
    }
    int delta = (seq - (int)(self->highest & 0xFFFF)) & 0xFFFF;
    if (delta >= 0x8000)
        delta -= 0x10000;
    long long unwrapped = self->highest + delta;
    if (unwrapped > self->highest)
        self->highest = unwrapped;
    return unwrapped;
}

static inline long long
floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* One feedback packet for ``count`` numbers from ``base`` on: ``times`` (microseconds)
 * where ``present``, not received elsewhere. The first must be received, and no two
 * received ones further apart than a two-byte delta can say. */
static PyObject *
tcc_build(uint32_t sender_ssrc, uint32_t media_ssrc, long long base, const int64_t *times,
          const uint8_t *present, int count, int feedback_count)
{
    uint8_t packet[TCC_HEADER_SIZE + 4 * TCC_MAX_STATUSES + 8];
    uint8_t symbols[TCC_MAX_STATUSES], deltas[2 * TCC_MAX_STATUSES];
    int delta_size = 0;
    long long reference = floor_div(times[0], TCC_REFERENCE_UNIT_US);
    long long previous = reference * TCC_REFERENCE_UNIT_US;
    for (int i = 0; i < count; i++) {
        if (!present[i]) {
            symbols[i] = TCC_NOT_RECEIVED;
            continue;
        }
        /* Quantised against the last quantised time, so rounding never accumulates;
         * to the nearest tick, a tie to the even one (as Python's round()). */
        long long ticks = (long long)nearbyint((double)(times[i] - previous) / TCC_DELTA_UNIT_US);
        previous += ticks * TCC_DELTA_UNIT_US;
        if (ticks >= 0 && ticks <= 0xFF) {
            symbols[i] = TCC_SMALL_DELTA;
            deltas[delta_size++] = (uint8_t)ticks;
        } else if (ticks >= -0x8000 && ticks <= 0x7FFF) {
            symbols[i] = TCC_LARGE_DELTA;
            deltas[delta_size++] = (uint8_t)((uint16_t)ticks >> 8);
            deltas[delta_size++] = (uint8_t)ticks;
        } else {  /* feedback() splits packets so that this cannot happen */
            PyErr_SetString(PyExc_ValueError, "arrival too far from the previous one for one feedback");
            return NULL;
        }
    }
    Py_ssize_t size = TCC_HEADER_SIZE;
    /* The chunks: a run length chunk (0, the symbol, 13 bits of length) where it says
     * more than a status vector could; else 14 one-bit symbols (received or not), or 7
     * two-bit ones when a large delta is among them. */
    for (int i = 0; i < count;) {
        int run = 1;
        while (i + run < count && symbols[i + run] == symbols[i] && run < TCC_MAX_RUN)
            run++;
        int ahead = count - i < 14 ? count - i : 14, large = 0;
        for (int k = 0; k < ahead; k++)
            large |= symbols[i + k] == TCC_LARGE_DELTA;
        int one_bit = ahead == 14 && !large;
        int value;
        if (run >= 14 || (run >= 7 && !one_bit)) {
            value = (symbols[i] << 13) | run;
            i += run;
        } else if (!large) {
            value = 0x8000;
            for (int k = 0; k < ahead; k++)
                value |= symbols[i + k] << (13 - k);
            i += ahead;
        } else {
            ahead = count - i < 7 ? count - i : 7;
            value = 0xC000;
            for (int k = 0; k < ahead; k++)
                value |= symbols[i + k] << (12 - 2 * k);
            i += ahead;
        }
        packet[size++] = (uint8_t)(value >> 8);
        packet[size++] = (uint8_t)value;
    }
    memcpy(packet + size, deltas, (size_t)delta_size);
    size += delta_size;
    int padding = (int)((4 - size % 4) % 4);
    packet[0] = 0x80 | FMT_TRANSPORT_CC;
    if (padding) {  /* the padding's last byte says how long it is (RFC 3550) */
        packet[0] |= 0x20;
        memset(packet + size, 0, (size_t)padding - 1);
        packet[size + padding - 1] = (uint8_t)padding;
        size += padding;
    }
    int words = (int)(size / 4 - 1);
    uint32_t word = ((uint32_t)(reference & 0xFFFFFF) << 8) | (uint32_t)(feedback_count & 0xFF);
    const uint32_t fields[3] = {sender_ssrc, media_ssrc, word};
    packet[1] = RTCP_RTPFB;
    packet[2] = (uint8_t)(words >> 8), packet[3] = (uint8_t)words;
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 4; j++)
            packet[4 + 4 * k + j] = (uint8_t)(fields[k] >> (24 - 8 * j));
    packet[12] = (uint8_t)(base >> 8), packet[13] = (uint8_t)base;
    packet[14] = (uint8_t)(count >> 8), packet[15] = (uint8_t)count;
    for (int j = 0; j < 4; j++)
        packet[16 + j] = (uint8_t)(fields[2] >> (24 - 8 * j));
    return PyBytes_FromStringAndSize((const char *)packet, size);
}

typedef struct {
    long long number;                 /* unwrapped */
    long long at_us;
    int order;                        /* when it came among this call's arrivals */
} ReceivedNumber;

static int
received_order(const void *a, const void *b)
{
    const ReceivedNumber *x = a, *y = b;
    if (x->number != y->number)
        return x->number < y->number ? -1 : 1;
    return x->order - y->order;
}

PyDoc_STRVAR(arrivals_feedback_doc,
"feedback(sender_ssrc, media_ssrc)\n--\n\n"
"transport-cc feedback packets (RTPFB FMT 15) for what arrived since the last call; the\n"
"arrivals are forgotten here. Each number is reported once: one not there when its\n"
"range was reported is reported lost, and if it comes later it is ignored (the sender\n"
"counted it lost by then). A packet spans at most 500 numbers and starts at a received\n"
"one; received ones 8 s apart or more go into separate packets; a jump of more than\n"
"0x7FFF (the sender started its count afresh) starts over from the new numbers.");

static PyObject *
arrivals_feedback(ArrivalsObject *self, PyObject *args)
{
    unsigned int sender_ssrc, media_ssrc;
    if (!PyArg_ParseTuple(args, "II:feedback", &sender_ssrc, &media_ssrc))
        return NULL;
    PyObject *packets = PyList_New(0);
    if (packets == NULL || self->count == 0)
        return packets;
    ReceivedNumber *received = PyMem_Malloc(sizeof(ReceivedNumber) * (size_t)self->count);
    if (received == NULL) {
        Py_DECREF(packets);
        return PyErr_NoMemory();
    }
    int kept = 0;
    for (int i = 0; i < self->count; i++) {
        long long number = arrivals_unwrap(self, self->seq[i]);
        if (!self->has_next || number >= self->next_number)  /* else reported already */
            received[kept++] = (ReceivedNumber){number, (long long)(self->at[i] * 1000000.0), i};
    }
    self->count = 0;
    /* In number order, each number once (the first arrival of a duplicate). */
    qsort(received, (size_t)kept, sizeof(ReceivedNumber), received_order);
    int unique = 0;
    for (int i = 0; i < kept; i++)
        if (unique == 0 || received[i].number != received[unique - 1].number)
            received[unique++] = received[i];
    int64_t times[TCC_MAX_STATUSES];
    uint8_t present[TCC_MAX_STATUSES];
    int index = 0;
    if (unique > 0) {
        long long end = received[unique - 1].number;
        long long start = self->has_next ? self->next_number : received[0].number;
        if (end - start > 0x7FFF) {  /* a jump (the sender restarted its count): start over */
            while (end - received[index].number > 0x7FFF)
                index++;
            start = received[index].number;
        }
        while (index < unique && received[index].number < start)
            index++;
        self->has_next = 1;
        self->next_number = end + 1;
        while (index < unique) {
            /* Each packet starts and ends at a received number (the reference time is
             * the first one's) and spans at most TCC_MAX_STATUSES, with no gap between
             * received ones that a two-byte delta cannot say. */
            long long first = received[index].number, number = first;
            long long last = received[index].at_us;
            int count = 0, last_received = 0;
            while (number <= end && count < TCC_MAX_STATUSES) {
                if (received[index].number == number) {
                    long long at = received[index].at_us;
                    if (llabs(at - last) > TCC_MAX_GAP_US)
                        break;
                    last = at;
                    times[count] = at, present[count] = 1;
                    index++;
                    last_received = count + 1;
                } else {
                    present[count] = 0;
                }
                count++, number++;
            }
            PyObject *packet = tcc_build(sender_ssrc, media_ssrc, first & 0xFFFF, times, present,
                                         last_received, self->feedback_count);
            if (packet == NULL || PyList_Append(packets, packet) < 0) {
                Py_XDECREF(packet);
                Py_CLEAR(packets);
                break;
            }
            Py_DECREF(packet);
            self->feedback_count = (self->feedback_count + 1) & 0xFF;
            self->packets_reported += (unsigned long long)last_received;
        }
    }
    PyMem_Free(received);
    return packets;
}

static PyObject *
arrivals_len(ArrivalsObject *self, void *closure)
{
    return PyLong_FromLong(self->count);
}

static PyMethodDef arrivals_methods[] = {
    {"feedback", (PyCFunction)arrivals_feedback, METH_VARARGS, arrivals_feedback_doc},
    {"record", (PyCFunction)arrivals_record, METH_VARARGS,
     "record(seq, at)\n--\n\nRecord that transport-wide number ``seq`` arrived at ``at`` "
     "(monotonic seconds), as receive() does for each packet: for a client of our own."},
    {NULL}
};

static PyGetSetDef arrivals_getset[] = {
    {"pending", (getter)arrivals_len, NULL, "How many are waiting for feedback().", NULL},
    {NULL}
};

static PyMemberDef arrivals_members[] = {
    {"extension_id", T_INT, offsetof(ArrivalsObject, extension_id), 0,
     "The transport-cc element's ID (0: nothing is recorded)."},
    {"overflows", T_ULONGLONG, offsetof(ArrivalsObject, overflows), READONLY,
     "Arrivals not recorded because feedback() came too late."},
    {"packets_reported", T_ULONGLONG, offsetof(ArrivalsObject, packets_reported), READONLY,
     "Numbers reported in feedback so far, received or lost."},
    {NULL}
};

static PyTypeObject ArrivalsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Arrivals",
    .tp_doc = "Arrivals(extension_id)\n--\n\nA publisher connection's received transport-wide "
              "sequence numbers and when they came (receive() records them), and the "
              "transport-cc feedback made of them.",
    .tp_basicsize = sizeof(ArrivalsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)arrivals_init,
    .tp_methods = arrivals_methods,
    .tp_getset = arrivals_getset,
    .tp_members = arrivals_members,
};

/* receive --------------------------------------------------------------------------- */

#define RECEIVED_MALFORMED 1     /* counted; dropped */
#define RECEIVED_UNKNOWN 2       /* no track for this SSRC: the caller may learn it */
#define RECEIVED_WANTS_KEYFRAME 4
#define RECEIVED_TAPPED 8        /* the track has taps: the caller passes the packet on */
#define RECEIVED_SWITCHED 16     /* a leg took this track over at its keyframe (Leg.target) */

/* A video track "stalled": no packet for this long, or this many packets lost at once. */
#define STALL_S 1.0
#define STALL_SEQ_GAP 100

#define EXT_AUDIO_LEVEL 2        /* the header extension IDs of the server's offer (mcu/rtp.py) */
#define EXT_ABS_SEND_TIME 3
#define ONE_BYTE_PROFILE 0xBEDE

static double
monotonic_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* When the packet in hand reached us (monotonic seconds). A Reader that keeps the
 * kernel's receive times sets this while it hands a datagram on: a socket read on the
 * mixer's tick (Reader.drain()) holds its packets up to 20 ms, and the transport-cc
 * arrivals we report, or a track's last packet time, must not say they came then. */
static double received_at = 0.0;

static double
packet_time(void)
{
    return received_at > 0.0 ? received_at : monotonic_now();
}

PyDoc_STRVAR(packet_time_doc,
"packet_time()\n--\n\n"
"When the datagram being handled reached us, on time.monotonic()'s clock: the kernel's\n"
"receive time where its Reader keeps it (a socket read on a tick, not when it came),\n"
"else now. What Python times a received packet by (an RTCP round trip) asks here.");

static PyObject *
packet_time_py(PyObject *module, PyObject *unused)
{
    return PyFloat_FromDouble(packet_time());
}

/* abs-send-time (24-bit seconds in 6.18 fixed point) of the wall clock now. */
static uint32_t
abs_send_time_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint32_t)((((uint64_t)now.tv_sec << 18) + (((uint64_t)now.tv_nsec << 18) / 1000000000u))
                      & 0xFFFFFF);
}

/* The RTP header parser: the only one (mcu.rtp.parse_rtp calls it through parse()). */

typedef struct {
    Py_ssize_t payload_start;
    Py_ssize_t payload_end;   /* excludes padding */
    int audio_level;          /* the audio level element's byte, -1 when absent */
    int transport_seq;        /* the transport-cc element's value, -1 when absent or not asked */
} RtpHeader;

/* Check one RTP header (RFC 3550, RFC 8285 one-byte extensions). Returns 0 and fills
 * ``header`` for a well-formed packet, -1 for a malformed one, -2 with a Python error
 * set. With ``extensions`` (a dict) it also puts each one-byte element there, ID -> bytes. */
static int
parse_header(const uint8_t *data, Py_ssize_t size, PyObject *extensions, int transport_cc_id,
             RtpHeader *header)
{
    if (size < RTP_HEADER_SIZE || (data[0] >> 6) != 2)
        return -1;
    Py_ssize_t offset = RTP_HEADER_SIZE + 4 * (data[0] & 0x0F);
    if (offset > size)
        return -1;
    header->audio_level = -1;
    header->transport_seq = -1;
    if (data[0] & 0x10) {
        if (offset + 4 > size)
            return -1;
        int profile = (data[offset] << 8) | data[offset + 1];
        Py_ssize_t block = offset + 4;
        offset = block + 4 * ((data[offset + 2] << 8) | data[offset + 3]);
        if (offset > size)
            return -1;
        if (profile == ONE_BYTE_PROFILE) {
            Py_ssize_t position = block;
            while (position < offset) {
                uint8_t byte = data[position];
                if (byte == 0) {  /* padding between elements */
                    position++;
                    continue;
                }
                int id = byte >> 4, length = (byte & 0x0F) + 1;
                if (id == 15)  /* reserved: stop parsing (RFC 8285 section 4.2) */
                    break;
                position++;
                if (position + length > offset)
                    return -1;
                if (id == EXT_AUDIO_LEVEL)
                    header->audio_level = data[position];
                /* transport_cc_id 0 means not asked: an element with the reserved ID 0
                 * and a length (fuzzing found one) is no transport-cc number. */
                else if (transport_cc_id > 0 && id == transport_cc_id && length == 2)
                    header->transport_seq = (data[position] << 8) | data[position + 1];
                if (extensions != NULL) {
                    PyObject *key = PyLong_FromLong(id);
                    PyObject *value = PyBytes_FromStringAndSize((const char *)data + position, length);
                    int failed = key == NULL || value == NULL
                                 || PyDict_SetItem(extensions, key, value) < 0;
                    Py_XDECREF(key);
                    Py_XDECREF(value);
                    if (failed)
                        return -2;
                }
                position += length;
            }
        }
    }
    Py_ssize_t end = size;
    if (data[0] & 0x20) {
        int padding = data[size - 1];
        if (padding == 0 || offset + padding > size)
            return -1;
        end = size - padding;
    }
    header->payload_start = offset;
    header->payload_end = end;
    return 0;
}

PyDoc_STRVAR(parse_doc,
"parse(packet)\n--\n\n"
"Check one RTP packet's header as receive() does. Returns (payload_type, marker,\n"
"sequence_number, timestamp, ssrc, payload_start, payload_end, extensions) with the\n"
"one-byte header extension elements as {id: bytes}, or None when it is malformed.");

static PyObject *
parse(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *data = (const uint8_t *)view.buf;
    PyObject *result = NULL;
    PyObject *extensions = PyDict_New();
    if (extensions == NULL)
        goto done;
    RtpHeader header;
    int parsed = parse_header(data, view.len, extensions, 0, &header);
    if (parsed == -2)
        goto done;
    if (parsed == -1) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = Py_BuildValue(
        "iNikknnO", data[1] & 0x7F, PyBool_FromLong(data[1] & 0x80), (data[2] << 8) | data[3],
        (unsigned long)(((uint32_t)data[4] << 24) | ((uint32_t)data[5] << 16) | ((uint32_t)data[6] << 8) | data[7]),
        (unsigned long)(((uint32_t)data[8] << 24) | ((uint32_t)data[9] << 16) | ((uint32_t)data[10] << 8) | data[11]),
        header.payload_start, header.payload_end, extensions);
done:
    Py_XDECREF(extensions);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(receive_doc,
"receive(tracks, packet, counters, arrivals=None)\n--\n\n"
"Handle one received (decrypted) RTP packet: check its header as parse() does,\n"
"find its track in ``tracks`` (SSRC -> Track), update the track's statistics and audio\n"
"activity, and forward it to the track's legs with our own extension block (the audio\n"
"level for audio, abs-send-time for video; the publisher's mid and others dropped).\n"
"Returns flags (RECEIVED_*): 0 when nothing is left for the caller to do. A packet\n"
"is counted in ``counters`` unless it comes back RECEIVED_UNKNOWN. With ``arrivals``\n"
"(the connection's Arrivals), its transport-wide sequence number is recorded there.");

static PyObject *
receive(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3 || nargs > 4 || !PyDict_Check(args[0]) || !PyBytes_Check(args[1])
        || !PyObject_TypeCheck(args[2], &CountersType)
        || (nargs == 4 && args[3] != Py_None && !PyObject_TypeCheck(args[3], &ArrivalsType))) {
        PyErr_SetString(PyExc_TypeError,
                        "receive() takes (tracks: dict, packet: bytes, counters: Counters, arrivals: Arrivals | None)");
        return NULL;
    }
    CountersObject *counters = (CountersObject *)args[2];
    ArrivalsObject *arrivals = nargs == 4 && args[3] != Py_None ? (ArrivalsObject *)args[3] : NULL;
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[1]);

    RtpHeader header;
    if (parse_header(data, size, NULL, arrivals != NULL ? arrivals->extension_id : 0, &header) < 0)
        goto malformed;
    /* transport-cc: every packet of the connection counts, whatever its SSRC (RTX and
     * the sender's padding probes too). A packet handled twice (an SSRC learnt on its
     * first packet) is recorded twice; Arrivals.feedback() keeps one. */
    if (header.transport_seq >= 0 && arrivals != NULL)
        arrivals_add(arrivals, header.transport_seq, packet_time());
    Py_ssize_t offset = header.payload_start, end = header.payload_end;
    int audio_level = header.audio_level;

    uint32_t ssrc = ((uint32_t)data[8] << 24) | ((uint32_t)data[9] << 16) | ((uint32_t)data[10] << 8) | data[11];
    PyObject *key = PyLong_FromUnsignedLong(ssrc);
    if (key == NULL)
        return NULL;
    PyObject *found = PyDict_GetItemWithError(args[0], key);  /* borrowed */
    Py_DECREF(key);
    if (found == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return PyLong_FromLong(RECEIVED_UNKNOWN);
    }
    if (!PyObject_TypeCheck(found, &TrackType)) {
        PyErr_SetString(PyExc_TypeError, "tracks must map SSRCs to Track objects");
        return NULL;
    }
    TrackObject *track = (TrackObject *)found;
    counters->packets_received++;  /* an unknown SSRC is the caller's to count */
    if ((data[1] & 0x7F) != track->payload_type) {
        /* RTX from the publisher (we do not NACK publishers yet) or a stray type. */
        counters->packets_unroutable++;
        return PyLong_FromLong(0);
    }

    int seq = (data[2] << 8) | data[3];
    track->packets++;
    track->octets += (unsigned long long)(end - offset);
    double now_s = packet_time();
    /* A video stream that stalled (the publisher's network was gone for a while) or
     * jumped past what NACK could repair left every subscriber's decoder without its
     * references: ask the publisher for a keyframe at once rather than wait for each
     * subscriber's own request (some ask only after seconds). */
    int ahead = (seq - track->highest_seq) & 0xFFFF;  /* how far past the newest so far */
    int stalled = track->video && track->highest_seq >= 0
        && (now_s - track->last_packet_at > STALL_S
            || (ahead > STALL_SEQ_GAP && ahead < 0x8000));
    track->last_packet_at = now_s;
    if (track->highest_seq < 0) {
        track->highest_seq = track->base_seq = seq;
    } else if (seq_newer(seq, track->highest_seq)) {
        if (seq < track->highest_seq)
            track->cycles += 1 << 16;
        track->highest_seq = seq;
    }
    if (track->muted)  /* counted, not forwarded, not shown to the taps */
        return PyLong_FromLong(0);
    int flags = track->tapped ? RECEIVED_TAPPED : 0;
    if (flags && audio_level >= 0 && (audio_level & 0x7F) > track->tap_level_limit) {
        /* A quiet packet of a source the mixer does not play: no Python for it, only its
         * level for the mixer's choice of talkers (most of a room, most of the time). */
        if ((audio_level & 0x7F) < track->held_level)
            track->held_level = audio_level & 0x7F;
        flags = 0;
    }

    /* The extension block is the same for every leg: the server's offer fixes the IDs on
     * every leg. The publisher's mid and other elements are dropped. */
    uint8_t extension[8];
    Py_ssize_t extension_size = 0;
    int keyframe = 0;
    if (!track->video) {
        if (audio_level >= 0) {
            track->activity_sum += 127 - (audio_level & 0x7F);
            track->activity_packets++;
            const uint8_t block[8] = {0xBE, 0xDE, 0, 1, EXT_AUDIO_LEVEL << 4, (uint8_t)audio_level, 0, 0};
            memcpy(extension, block, sizeof(block));
            extension_size = 8;
        }
    } else {
        keyframe = keyframe_start(track->codec, data + offset, end - offset);
        uint32_t now = abs_send_time_now();
        const uint8_t block[8] = {0xBE, 0xDE, 0, 1, (EXT_ABS_SEND_TIME << 4) | 2,
                                  (uint8_t)(now >> 16), (uint8_t)(now >> 8), (uint8_t)now};
        memcpy(extension, block, sizeof(block));
        extension_size = 8;
    }
    if (RTP_HEADER_SIZE + extension_size + (size - offset) > MAX_PLAIN_PACKET) {
        counters->send_errors += (unsigned long long)PyTuple_GET_SIZE(track->legs);
        return PyLong_FromLong(flags);
    }
    uint32_t timestamp = ((uint32_t)data[4] << 24) | ((uint32_t)data[5] << 16) | ((uint32_t)data[6] << 8) | data[7];
    FanOutResult result = {0, 0, 0, 0, 0};
    Vp8Fields vp8;
    int rewrite = track->codec == CODEC_VP8;
    if (rewrite)
        vp8_fields(data + offset, end - offset, &vp8);
    if (fan_out(track->legs, extension, extension_size, data + offset, size - offset, seq, timestamp,
                data[1] & 0x80, keyframe, (data[0] & 0x20) != 0, (long)(end - offset), track->codec,
                found, rewrite ? &vp8 : NULL, &result) < 0)
        return NULL;
    if (result.switched)
        flags |= RECEIVED_SWITCHED;
    counters->packets_forwarded += (unsigned long long)result.sent;
    counters->bytes_forwarded += (unsigned long long)result.bytes;
    counters->send_errors += (unsigned long long)result.errors;
    if (result.wants_keyframe || stalled)
        flags |= RECEIVED_WANTS_KEYFRAME;
    return PyLong_FromLong(flags);

malformed:
    counters->packets_received++;
    counters->packets_malformed++;
    return PyLong_FromLong(RECEIVED_MALFORMED);
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

/* Inbound --------------------------------------------------------------------------- */

/* One connection's received SRTP and SRTCP, once keyed: decrypted here, RTP through
 * receive(), each transport-cc feedback from a subscriber straight to its estimator,
 * and only what is left over for Python. A subscriber's feedback comes ten times a
 * second on every connection; handled in Python it cost more than the forwarding it
 * judges (docs/benchmarks.md). */
typedef struct {
    PyObject_HEAD
    srtp_protect_fn unprotect_rtp;    /* srtp_unprotect and srtp_unprotect_rtcp */
    srtp_protect_fn unprotect_rtcp;
    PyObject *tracks;                 /* dict SSRC -> Track, as receive() takes it */
    PyObject *counters;               /* Counters */
    PyObject *arrivals;               /* Arrivals, or Py_None */
    PyObject *after_receive;          /* (status, packet): what receive() leaves to Python */
    PyObject *on_rtcp;                /* (packet): the RTCP not taken here */
    PyObject *on_malformed;           /* (): a feedback packet that did not parse */
    /* Armed (arm()): the SendSideEstimator that takes the feedback and the Sink its
     * numbers are matched with, both or neither (NULL: all RTCP goes to on_rtcp). */
    PyObject *estimator;
    PyObject *sink;
} InboundObject;

static int
inbound_traverse(InboundObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tracks);
    Py_VISIT(self->counters);
    Py_VISIT(self->arrivals);
    Py_VISIT(self->after_receive);
    Py_VISIT(self->on_rtcp);
    Py_VISIT(self->on_malformed);
    Py_VISIT(self->estimator);
    Py_VISIT(self->sink);
    return 0;
}

static int
inbound_clear(InboundObject *self)
{
    Py_CLEAR(self->tracks);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->arrivals);
    Py_CLEAR(self->after_receive);
    Py_CLEAR(self->on_rtcp);
    Py_CLEAR(self->on_malformed);
    Py_CLEAR(self->estimator);
    Py_CLEAR(self->sink);
    return 0;
}

static void
inbound_dealloc(InboundObject *self)
{
    PyObject_GC_UnTrack(self);
    inbound_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
inbound_init(InboundObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"tracks", "counters", "arrivals", "after_receive", "on_rtcp",
                               "on_malformed", NULL};
    PyObject *tracks, *counters, *arrivals, *after_receive, *on_rtcp, *on_malformed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!OOOO:Inbound", keywords, &PyDict_Type, &tracks,
                                     &CountersType, &counters, &arrivals, &after_receive, &on_rtcp,
                                     &on_malformed))
        return -1;
    if (arrivals != Py_None && !PyObject_TypeCheck(arrivals, &ArrivalsType)) {
        PyErr_SetString(PyExc_TypeError, "arrivals must be an Arrivals or None");
        return -1;
    }
    if (!PyCallable_Check(after_receive) || !PyCallable_Check(on_rtcp) || !PyCallable_Check(on_malformed)) {
        PyErr_SetString(PyExc_TypeError, "after_receive, on_rtcp and on_malformed must be callable");
        return -1;
    }
    Py_XSETREF(self->tracks, Py_NewRef(tracks));
    Py_XSETREF(self->counters, Py_NewRef(counters));
    Py_XSETREF(self->arrivals, Py_NewRef(arrivals));
    Py_XSETREF(self->after_receive, Py_NewRef(after_receive));
    Py_XSETREF(self->on_rtcp, Py_NewRef(on_rtcp));
    Py_XSETREF(self->on_malformed, Py_NewRef(on_malformed));
    return 0;
}

/* ``callable(bytes)`` on a copy of ``data``: 0, or -1 with the error it raised. */
static int
call_with_bytes(PyObject *callable, const uint8_t *data, Py_ssize_t size)
{
    PyObject *packet = PyBytes_FromStringAndSize((const char *)data, size);
    if (packet == NULL)
        return -1;
    PyObject *done = PyObject_CallOneArg(callable, packet);
    Py_DECREF(packet);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
}

/* The RTCP of one datagram: each transport-cc feedback to the estimator, the other
 * packets (and anything after what parses) to on_rtcp, in their order, in one piece. */
static int
inbound_rtcp(InboundObject *self, const uint8_t *bytes, Py_ssize_t size)
{
    uint8_t rest[MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM];
    Py_ssize_t at = 0, rest_size = 0;
    while (at + 4 <= size) {
        Py_ssize_t end = at + 4 + 4 * (Py_ssize_t)((bytes[at + 2] << 8) | bytes[at + 3]);
        if (end > size)
            break;
        if (bytes[at + 1] == RTCP_RTPFB && (bytes[at] & 0x1F) == FMT_TRANSPORT_CC) {
            if (estimator_feed((EstimatorObject *)self->estimator, (SinkObject *)self->sink,
                               bytes + at, end - at, packet_time()) < 0) {
                if (!PyErr_ExceptionMatches(PyExc_ValueError))
                    return -1;
                PyErr_Clear();  /* from the network: counted, never raised */
                PyObject *done = PyObject_CallNoArgs(self->on_malformed);
                if (done == NULL)
                    return -1;
                Py_DECREF(done);
            }
        } else {
            memcpy(rest + rest_size, bytes + at, (size_t)(end - at));
            rest_size += end - at;
        }
        at = end;
    }
    memcpy(rest + rest_size, bytes + at, (size_t)(size - at));
    rest_size += size - at;
    return rest_size > 0 ? call_with_bytes(self->on_rtcp, rest, rest_size) : 0;
}

PyDoc_STRVAR(inbound_take_doc,
"take(session, packet)\n--\n\n"
"Handle one received SRTP or SRTCP ``packet`` of the connection whose inbound libsrtp\n"
"session is at address ``session``: decrypt and authenticate it (dropped when it is not\n"
"authentic, is a replay or is too long); RTP goes through receive(), and\n"
"after_receive(status, packet) gets what receive() leaves to Python; RTCP's transport-cc\n"
"feedback goes to ``estimator`` (matched with ``sink``) while both are set, and the\n"
"rest to on_rtcp(packet).");

/* receive() on a copy of ``data`` (``arrivals``: an Arrivals or Py_None); what it leaves
 * to Python goes to after(status, packet). 0, or -1 with the exception. Shared by an
 * Inbound's RTP and a Reader's routed RTP. */
static int
receive_then(PyObject *tracks, PyObject *counters, PyObject *arrivals, PyObject *after,
             const uint8_t *data, Py_ssize_t length)
{
    PyObject *packet = PyBytes_FromStringAndSize((const char *)data, length);
    if (packet == NULL)
        return -1;
    PyObject *argv[4] = {tracks, packet, counters, arrivals};
    PyObject *status = receive(NULL, argv, 4);
    int failed = status == NULL ? -1 : 0;
    if (status != NULL && PyLong_AsLong(status) != 0) {
        PyObject *call[2] = {status, packet};
        PyObject *done = PyObject_Vectorcall(after, call, 2, NULL);
        if (done == NULL)
            failed = -1;
        Py_XDECREF(done);
    }
    Py_XDECREF(status);
    Py_DECREF(packet);
    return failed;
}

/* One received datagram of a keyed connection (take(), and a Reader's media): 0 when
 * handled or dropped, -1 with the exception a handler raised. */
static int
inbound_handle(InboundObject *self, void *session, const uint8_t *data, Py_ssize_t size)
{
    if (size < 2 || size > MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM)
        return 0;
    uint8_t packet[MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM];
    memcpy(packet, data, (size_t)size);
    int length = (int)size;
    int rtcp = packet[1] >= 192 && packet[1] <= 223;
    if ((rtcp ? self->unprotect_rtcp : self->unprotect_rtp)(session, packet, &length) != 0)
        return 0;
    if (rtcp)  /* not armed: all of it is Python's */
        return self->estimator != NULL ? inbound_rtcp(self, packet, length)
                                       : call_with_bytes(self->on_rtcp, packet, length);
    return receive_then(self->tracks, self->counters, self->arrivals, self->after_receive, packet, length);
}

static PyObject *
inbound_take(InboundObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "take() takes (session, packet: bytes)");
        return NULL;
    }
    if (self->tracks == NULL || self->unprotect_rtp == NULL) {
        PyErr_SetString(PyExc_ValueError, "Inbound not initialised (set_unprotect() first)");
        return NULL;
    }
    void *session = PyLong_AsVoidPtr(args[0]);
    if (session == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "session must be a non-null address");
        return NULL;
    }
    if (inbound_handle(self, session, (const uint8_t *)PyBytes_AS_STRING(args[1]),
                       PyBytes_GET_SIZE(args[1])) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(inbound_set_unprotect_doc,
"set_unprotect(rtp, rtcp)\n--\n\n"
"The addresses of libsrtp2's srtp_unprotect and srtp_unprotect_rtcp (the adapter's).");

static PyObject *
inbound_set_unprotect(InboundObject *self, PyObject *args)
{
    PyObject *rtp, *rtcp;
    if (!PyArg_ParseTuple(args, "OO:set_unprotect", &rtp, &rtcp))
        return NULL;
    void *rtp_fn = PyLong_AsVoidPtr(rtp), *rtcp_fn = PyLong_AsVoidPtr(rtcp);
    if (PyErr_Occurred())
        return NULL;
    if (rtp_fn == NULL || rtcp_fn == NULL) {
        PyErr_SetString(PyExc_ValueError, "the functions must be non-null addresses");
        return NULL;
    }
    self->unprotect_rtp = (srtp_protect_fn)rtp_fn;
    self->unprotect_rtcp = (srtp_protect_fn)rtcp_fn;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(inbound_arm_doc,
"arm(estimator, sink)\n--\n\n"
"Take the connection's transport-cc feedback here: into ``estimator`` (a\n"
"SendSideEstimator), matched with what ``sink`` stamped. arm(None, None): all RTCP goes\n"
"to on_rtcp (transport-cc not agreed, or a padding probe judging the feedback in Python).");

static PyObject *
inbound_arm(InboundObject *self, PyObject *args)
{
    PyObject *estimator, *sink;
    if (!PyArg_ParseTuple(args, "OO:arm", &estimator, &sink))
        return NULL;
    int off = estimator == Py_None && sink == Py_None;
    if (!off && !(PyObject_TypeCheck(estimator, &EstimatorType) && PyObject_TypeCheck(sink, &SinkType))) {
        PyErr_SetString(PyExc_TypeError, "arm() takes (SendSideEstimator, Sink) or (None, None)");
        return NULL;
    }
    Py_XSETREF(self->estimator, off ? NULL : Py_NewRef(estimator));
    Py_XSETREF(self->sink, off ? NULL : Py_NewRef(sink));
    Py_RETURN_NONE;
}

static PyMethodDef inbound_methods[] = {
    {"take", (PyCFunction)(void (*)(void))inbound_take, METH_FASTCALL, inbound_take_doc},
    {"set_unprotect", (PyCFunction)inbound_set_unprotect, METH_VARARGS, inbound_set_unprotect_doc},
    {"arm", (PyCFunction)inbound_arm, METH_VARARGS, inbound_arm_doc},
    {NULL}
};

static PyMemberDef inbound_members[] = {
    {"estimator", T_OBJECT, offsetof(InboundObject, estimator), READONLY,
     "The SendSideEstimator the feedback goes to (None: not armed)."},
    {"sink", T_OBJECT, offsetof(InboundObject, sink), READONLY,
     "The Sink whose stamps the feedback is matched with (None: not armed)."},
    {NULL}
};

static PyTypeObject InboundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Inbound",
    .tp_doc = "Inbound(tracks, counters, arrivals, after_receive, on_rtcp, on_malformed)\n--\n\n"
              "One connection's received SRTP and SRTCP, decrypted and handled in C (take()).",
    .tp_basicsize = sizeof(InboundObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)inbound_init,
    .tp_dealloc = (destructor)inbound_dealloc,
    .tp_traverse = (traverseproc)inbound_traverse,
    .tp_clear = (inquiry)inbound_clear,
    .tp_methods = inbound_methods,
    .tp_members = inbound_members,
};

/* Reader ---------------------------------------------------------------------------- */

/* What an ICE host socket receives, read here instead of by the event loop's datagram
 * transport: that took each datagram through the loop's protocol call, an address tuple
 * made per datagram and two Python functions before take() (docs/benchmarks.md). The
 * event loop only watches the socket (add_reader) and calls readable(), which reads what
 * is queued with one recvmmsg. Once keyed, a connection's SRTP and SRTCP go straight to
 * its Inbound; anything else (STUN, DTLS, media before the keys) goes to on_other(data,
 * addr), which is aioice's protocol. */
#define READ_BATCH 8      /* datagrams per recvmmsg: a video frame's packets come together */
#define READ_SLOT 2048    /* larger than any media datagram; what does not fit is dropped */

typedef struct {
    PyObject_HEAD
    int fd;                      /* a duplicate of the socket's descriptor (as Sink's); -1 closed */
    PyObject *on_other;          /* (data, addr) */
    PyObject *on_error;          /* (exc): what a handler of on_other's raised */
    InboundObject *inbound;      /* keyed: the connection's media goes here */
    void *session;               /* the inbound libsrtp session */
    PyObject *session_owner;     /* keeps that session alive */
    PyObject *on_inbound_error;  /* (exc): what the Inbound's handlers raised */
    int timestamps;              /* SO_TIMESTAMPNS asked for: ``arrival`` is kept */
    double arrival;              /* kernel receive time (CLOCK_REALTIME) of the datagram in hand */
    unsigned long long datagrams, batches, dropped, routed;
    /* Routed (route(): a worker's pipe socket): RTP from an address in ``routes`` goes
     * through receive() with that address's tracks, decrypted first when its route has an
     * SRTP session; after_receive(status, packet) gets what receive() leaves to Python. */
    PyObject *routes;            /* dict: address_key(host, port) -> (tracks, session or 0, owner) */
    PyObject *route_counters;    /* Counters */
    PyObject *after_receive;
    srtp_protect_fn route_unprotect;  /* srtp_unprotect */
} ReaderObject;

static int
reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_other);
    Py_VISIT(self->on_error);
    Py_VISIT(self->inbound);
    Py_VISIT(self->session_owner);
    Py_VISIT(self->on_inbound_error);
    Py_VISIT(self->routes);
    Py_VISIT(self->route_counters);
    Py_VISIT(self->after_receive);
    return 0;
}

static void
reader_unroute(ReaderObject *self)
{
    Py_CLEAR(self->routes);
    Py_CLEAR(self->route_counters);
    Py_CLEAR(self->after_receive);
}

static void
reader_unkey(ReaderObject *self)
{
    Py_CLEAR(self->inbound);
    Py_CLEAR(self->session_owner);
    Py_CLEAR(self->on_inbound_error);
    self->session = NULL;
}

static int
reader_clear(ReaderObject *self)
{
    Py_CLEAR(self->on_other);
    Py_CLEAR(self->on_error);
    reader_unkey(self);
    reader_unroute(self);
    return 0;
}

static void
reader_close_fd(ReaderObject *self)
{
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
}

static void
reader_dealloc(ReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    reader_close_fd(self);
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
reader_init(ReaderObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"fileno", "on_other", "on_error", NULL};
    int fileno;
    PyObject *on_other, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO:Reader", keywords, &fileno, &on_other, &on_error))
        return -1;
    if (!PyCallable_Check(on_other) || !PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "on_other and on_error must be callable");
        return -1;
    }
    int fd = fcntl(fileno, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    reader_close_fd(self);
    reader_clear(self);
    self->fd = fd;
    self->on_other = Py_NewRef(on_other);
    self->on_error = Py_NewRef(on_error);
    return 0;
}

/* The exception in flight to ``handler(exc)``; one that raises is written as unraisable:
 * a datagram never stops the reading of the next. */
static void
reader_report(ReaderObject *self, PyObject *handler)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL)
        PyException_SetTraceback(value, traceback);
    PyObject *done = handler != NULL && value != NULL ? PyObject_CallOneArg(handler, value) : NULL;
    if (done == NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(done);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

static PyObject *
address_tuple(const struct sockaddr_storage *address)
{
    char host[INET6_ADDRSTRLEN];
    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)address;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(v4->sin_port));
    }
    if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)address;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(v6->sin6_port));
    }
    return Py_BuildValue("(si)", "", 0);
}

/* A sender's address as route() keys it: its IPv4 (4 bytes) or IPv6 (16) address and its
 * port, in network order. */
static PyObject *
address_key_of(const struct sockaddr_storage *address)
{
    uint8_t key[18];
    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)address;
        memcpy(key, &v4->sin_addr, 4);
        memcpy(key + 4, &v4->sin_port, 2);
        return PyBytes_FromStringAndSize((const char *)key, 6);
    }
    if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)address;
        memcpy(key, &v6->sin6_addr, 16);
        memcpy(key + 16, &v6->sin6_port, 2);
        return PyBytes_FromStringAndSize((const char *)key, 18);
    }
    return PyBytes_FromStringAndSize("", 0);
}

/* One RTP datagram of a routed reader: 1 handled, 0 not for C (no route for its sender,
 * or it did not decrypt: on_other has it, as before routes), -1 with the exception. */
static int
reader_route_rtp(ReaderObject *self, const uint8_t *data, Py_ssize_t size,
                 const struct sockaddr_storage *from)
{
    PyObject *key = address_key_of(from);
    if (key == NULL)
        return -1;
    PyObject *route = PyDict_GetItemWithError(self->routes, key);  /* borrowed */
    Py_DECREF(key);
    if (route == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(route) || PyTuple_GET_SIZE(route) != 3 || !PyDict_Check(PyTuple_GET_ITEM(route, 0))) {
        PyErr_SetString(PyExc_TypeError, "a route is (tracks: dict, session: int, owner)");
        return -1;
    }
    void *session = PyLong_AsVoidPtr(PyTuple_GET_ITEM(route, 1));  /* 0: plain RTP */
    if (session == NULL && PyErr_Occurred())
        return -1;
    uint8_t decrypted[MAX_PLAIN_PACKET + SRTP_TRAILER_ROOM];
    int length = (int)size;
    if (session != NULL) {
        if (size > (Py_ssize_t)sizeof decrypted)
            return 0;
        memcpy(decrypted, data, (size_t)size);
        if (self->route_unprotect(session, decrypted, &length) != 0)
            return 0;
        data = decrypted;
    }
    /* Its handlers may change the routes (a track piped no more): what is used stays. */
    Py_INCREF(route);
    PyObject *counters = Py_NewRef(self->route_counters);
    PyObject *after = Py_NewRef(self->after_receive);
    int result = receive_then(PyTuple_GET_ITEM(route, 0), counters, Py_None, after, data, length) < 0
                 ? -1 : 1;
    Py_DECREF(after);
    Py_DECREF(counters);
    Py_DECREF(route);
    if (result == 1)
        self->routed++;
    return result;
}

/* The datagram's SCM_TIMESTAMPNS as seconds; 0 when it has none. */
static double
arrival_of(struct msghdr *header)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(header); c != NULL; c = CMSG_NXTHDR(header, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec when;
            memcpy(&when, CMSG_DATA(c), sizeof when);
            return (double)when.tv_sec + (double)when.tv_nsec / 1e9;
        }
    }
    return 0.0;
}

/* Read one batch (up to READ_BATCH datagrams) and hand each on. Returns how many were
 * read: fewer than a batch means the queue is empty now. Never raises (what the
 * handlers raise goes to on_error or the Inbound's). */
static int
reader_read_batch(ReaderObject *self)
{
    if (self->fd < 0)
        return 0;
    uint8_t buffers[READ_BATCH][READ_SLOT];
    struct mmsghdr messages[READ_BATCH];
    struct iovec vectors[READ_BATCH];
    struct sockaddr_storage addresses[READ_BATCH];
    union {
        char bytes[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } controls[READ_BATCH];
    memset(messages, 0, sizeof messages);
    for (int i = 0; i < READ_BATCH; i++) {
        vectors[i].iov_base = buffers[i];
        vectors[i].iov_len = READ_SLOT;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_name = &addresses[i];
        messages[i].msg_hdr.msg_namelen = sizeof addresses[i];
        if (self->timestamps) {
            messages[i].msg_hdr.msg_control = controls[i].bytes;
            messages[i].msg_hdr.msg_controllen = sizeof controls[i].bytes;
        }
    }
    /* Nothing queued (another reader of the socket was first), or an error the socket
     * reports for an earlier send: nothing to hand on either way. */
    int count = recvmmsg(self->fd, messages, READ_BATCH, MSG_DONTWAIT, NULL);
    if (count <= 0)
        return 0;
    self->batches++;
    /* The kernel stamps CLOCK_REALTIME; the receive path keeps CLOCK_MONOTONIC. */
    double realtime_ahead = 0.0;
    if (self->timestamps) {
        struct timespec real;
        clock_gettime(CLOCK_REALTIME, &real);
        realtime_ahead = (double)real.tv_sec + (double)real.tv_nsec / 1e9 - monotonic_now();
    }
    double outer_received_at = received_at;
    for (int i = 0; i < count; i++) {
        self->datagrams++;
        const uint8_t *data = buffers[i];
        Py_ssize_t size = messages[i].msg_len;
        if (messages[i].msg_hdr.msg_flags & MSG_TRUNC) {
            self->dropped++;
            continue;
        }
        if (self->timestamps) {
            self->arrival = arrival_of(&messages[i].msg_hdr);
            received_at = self->arrival > 0.0 ? self->arrival - realtime_ahead : 0.0;
        }
        if (self->routes != NULL && size >= 12 && data[0] >> 6 == 2 && !(data[1] >= 192 && data[1] <= 223)) {
            int taken = reader_route_rtp(self, data, size, &addresses[i]);
            if (taken < 0)
                reader_report(self, self->on_error);
            if (taken != 0)
                continue;
        }
        if (self->inbound != NULL && size >= 2 && data[0] > 127 && data[0] < 192) {
            /* Its handlers may unkey or close this reader: what it uses stays alive. */
            InboundObject *inbound = (InboundObject *)Py_NewRef(self->inbound);
            PyObject *owner = Py_NewRef(self->session_owner);
            PyObject *on_error = Py_NewRef(self->on_inbound_error);
            if (inbound_handle(inbound, self->session, data, size) < 0)
                reader_report(self, on_error);
            Py_DECREF(inbound);
            Py_DECREF(owner);
            Py_DECREF(on_error);
            continue;
        }
        PyObject *packet = PyBytes_FromStringAndSize((const char *)data, size);
        PyObject *address = packet != NULL ? address_tuple(&addresses[i]) : NULL;
        PyObject *done = NULL;
        if (address != NULL) {
            PyObject *call[2] = {packet, address};
            done = PyObject_Vectorcall(self->on_other, call, 2, NULL);
        }
        if (done == NULL)
            reader_report(self, self->on_error);
        Py_XDECREF(done);
        Py_XDECREF(packet);
        Py_XDECREF(address);
    }
    received_at = outer_received_at;
    return count;
}

PyDoc_STRVAR(reader_readable_doc,
"readable()\n--\n\n"
"Read what the socket has queued (up to a batch) and hand each datagram on: keyed media\n"
"to the Inbound, the rest to on_other(data, addr). The event loop calls it when the\n"
"socket is readable; it never raises.");

static PyObject *
reader_readable(ReaderObject *self, PyObject *unused)
{
    reader_read_batch(self);
    Py_RETURN_NONE;
}

/* A drain reads at most this many batches: a flood of one socket cannot hold its
 * caller (the mixer's tick) for long; what is left waits for the next drain, or is
 * dropped by the kernel when the socket's buffer is full. */
#define DRAIN_BATCHES 32

PyDoc_STRVAR(reader_drain_doc,
"drain()\n--\n\n"
"Read everything the socket has queued (up to 32 batches), as readable() does a batch,\n"
"and return how many datagrams were read. For a socket that the event loop does not\n"
"watch, read on its owner's clock instead (mcu/udp.py); it never raises.");

static PyObject *
reader_drain(ReaderObject *self, PyObject *unused)
{
    long total = 0;
    for (int batch = 0; batch < DRAIN_BATCHES; batch++) {
        int count = reader_read_batch(self);
        total += count;
        if (count < READ_BATCH)
            break;
    }
    return PyLong_FromLong(total);
}

PyDoc_STRVAR(reader_key_doc,
"key(inbound, session, owner, on_error)\n--\n\n"
"From now on the connection's SRTP and SRTCP go to ``inbound`` (an Inbound, its\n"
"set_unprotect() done), decrypted with the libsrtp session at address ``session``, which\n"
"``owner`` keeps alive; on_error(exc) gets what its handlers raise. key(None, 0, None,\n"
"None): back to on_other.");

static PyObject *
reader_key(ReaderObject *self, PyObject *args)
{
    PyObject *inbound, *session, *owner, *on_error;
    if (!PyArg_ParseTuple(args, "OOOO:key", &inbound, &session, &owner, &on_error))
        return NULL;
    if (inbound == Py_None) {
        reader_unkey(self);
        Py_RETURN_NONE;
    }
    if (!PyObject_TypeCheck(inbound, &InboundType) || ((InboundObject *)inbound)->unprotect_rtp == NULL
        || ((InboundObject *)inbound)->tracks == NULL) {
        PyErr_SetString(PyExc_TypeError, "key() takes an initialised Inbound (set_unprotect() done)");
        return NULL;
    }
    void *address = PyLong_AsVoidPtr(session);
    if (address == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "session must be a non-null address");
        return NULL;
    }
    if (!PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "on_error must be callable");
        return NULL;
    }
    reader_unkey(self);
    self->inbound = (InboundObject *)Py_NewRef(inbound);
    self->session = address;
    self->session_owner = Py_NewRef(owner);
    self->on_inbound_error = Py_NewRef(on_error);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(reader_route_doc,
"route(routes, counters, after_receive, unprotect)\n--\n\n"
"From now on RTP from a sender whose address_key(host, port) is in ``routes`` (a dict the\n"
"caller keeps up to date) goes through receive() with that route's tracks: a route is\n"
"(tracks, session, owner), ``session`` the address of the libsrtp session that decrypts\n"
"the sender's packets with the function at address ``unprotect`` (srtp_unprotect), or 0\n"
"for plain RTP, ``owner`` what keeps that session alive. after_receive(status, packet)\n"
"gets what receive() leaves to Python, counted in ``counters``. RTCP, other senders and\n"
"packets that do not decrypt go to on_other, as before.");

static PyObject *
reader_route(ReaderObject *self, PyObject *args)
{
    PyObject *routes, *counters, *after_receive, *unprotect;
    if (!PyArg_ParseTuple(args, "O!O!OO:route", &PyDict_Type, &routes, &CountersType, &counters,
                          &after_receive, &unprotect))
        return NULL;
    if (!PyCallable_Check(after_receive)) {
        PyErr_SetString(PyExc_TypeError, "after_receive must be callable");
        return NULL;
    }
    void *function = PyLong_AsVoidPtr(unprotect);
    if (function == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "unprotect must be a non-null address");
        return NULL;
    }
    reader_unroute(self);
    self->routes = Py_NewRef(routes);
    self->route_counters = Py_NewRef(counters);
    self->after_receive = Py_NewRef(after_receive);
    self->route_unprotect = (srtp_protect_fn)function;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(address_key_doc,
"address_key(host, port)\n--\n\n"
"The key of a sender's address in a Reader's routes: the IPv4 or IPv6 address ``host``\n"
"(numeric) and ``port``, in network order.");

static PyObject *
address_key(PyObject *module, PyObject *args)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si:address_key", &host, &port))
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port must be 0-65535");
        return NULL;
    }
    struct sockaddr_storage address;
    memset(&address, 0, sizeof address);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
    } else {
        PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
        return NULL;
    }
    return address_key_of(&address);
}

PyDoc_STRVAR(reader_stamp_arrivals_doc,
"stamp_arrivals()\n--\n\n"
"Keep the kernel's receive time of each datagram (``arrival``, CLOCK_REALTIME): for\n"
"measurement, and for a socket read on a tick (drain()), whose packets the receive\n"
"path then times by it.");

static PyObject *
reader_stamp_arrivals(ReaderObject *self, PyObject *unused)
{
    int on = 1;
    if (self->fd >= 0 && setsockopt(self->fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    self->timestamps = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(reader_close_doc,
"close()\n--\n\nStop reading: the duplicate descriptor is closed and the Inbound let go.");

static PyObject *
reader_close(ReaderObject *self, PyObject *unused)
{
    reader_close_fd(self);
    reader_unkey(self);
    reader_unroute(self);
    Py_RETURN_NONE;
}

static PyObject *
reader_get_keyed(ReaderObject *self, void *closure)
{
    return PyBool_FromLong(self->inbound != NULL);
}

static PyObject *
reader_get_closed(ReaderObject *self, void *closure)
{
    return PyBool_FromLong(self->fd < 0);
}

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ReaderObject *self = (ReaderObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

static PyMethodDef reader_methods[] = {
    {"readable", (PyCFunction)reader_readable, METH_NOARGS, reader_readable_doc},
    {"drain", (PyCFunction)reader_drain, METH_NOARGS, reader_drain_doc},
    {"key", (PyCFunction)reader_key, METH_VARARGS, reader_key_doc},
    {"route", (PyCFunction)reader_route, METH_VARARGS, reader_route_doc},
    {"stamp_arrivals", (PyCFunction)reader_stamp_arrivals, METH_NOARGS, reader_stamp_arrivals_doc},
    {"close", (PyCFunction)reader_close, METH_NOARGS, reader_close_doc},
    {NULL}
};

static PyMemberDef reader_members[] = {
    {"datagrams", T_ULONGLONG, offsetof(ReaderObject, datagrams), READONLY, "Datagrams read."},
    {"batches", T_ULONGLONG, offsetof(ReaderObject, batches), READONLY, "recvmmsg calls that read some."},
    {"dropped", T_ULONGLONG, offsetof(ReaderObject, dropped), READONLY,
     "Datagrams dropped for not fitting a read slot (2048 bytes)."},
    {"routed", T_ULONGLONG, offsetof(ReaderObject, routed), READONLY,
     "RTP datagrams handled by a route (route())."},
    {"arrival", T_DOUBLE, offsetof(ReaderObject, arrival), READONLY,
     "Kernel receive time of the datagram being handled (after stamp_arrivals(); else 0)."},
    {NULL}
};

static PyGetSetDef reader_getset[] = {
    {"keyed", (getter)reader_get_keyed, NULL, "Whether media goes to an Inbound.", NULL},
    {"closed", (getter)reader_get_closed, NULL, "Whether close() was called.", NULL},
    {NULL}
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mcu._fanout.Reader",
    .tp_doc = "Reader(fileno, on_other, on_error)\n--\n\n"
              "Reads a UDP socket in batches (readable()): keyed media to an Inbound, the rest\n"
              "to on_other(data, addr).",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = reader_new,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_methods = reader_methods,
    .tp_members = reader_members,
    .tp_getset = reader_getset,
};

/* Module ---------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))forward, METH_FASTCALL, forward_doc},
    {"receive", (PyCFunction)(void (*)(void))receive, METH_FASTCALL, receive_doc},
    {"parse", (PyCFunction)parse, METH_O, parse_doc},
    {"summarize", (PyCFunction)summarize, METH_VARARGS, summarize_doc},
    {"parse_feedback", (PyCFunction)parse_feedback, METH_O, parse_feedback_doc},
    {"split_rtcp", (PyCFunction)split_rtcp, METH_O, split_rtcp_doc},
    {"is_keyframe_start", (PyCFunction)is_keyframe, METH_VARARGS, keyframe_doc},
    {"unprotect", (PyCFunction)(void (*)(void))unprotect, METH_FASTCALL, unprotect_doc},
    {"address_key", (PyCFunction)address_key, METH_VARARGS, address_key_doc},
    {"packet_time", (PyCFunction)packet_time_py, METH_NOARGS, packet_time_doc},
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
    if (PyType_Ready(&SinkType) < 0 || PyType_Ready(&LegType) < 0 || PyType_Ready(&ArrivalsType) < 0
        || PyType_Ready(&CountersType) < 0 || PyType_Ready(&TrackType) < 0
        || PyType_Ready(&DelayTrendType) < 0 || PyType_Ready(&EstimatorType) < 0
        || PyType_Ready(&InboundType) < 0 || PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&fanout_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "HISTORY_SIZE", HISTORY_SIZE) < 0
        || PyModule_AddIntConstant(module, "MAX_PACKET", MAX_PLAIN_PACKET) < 0
        || PyModule_AddIntConstant(module, "CODEC_NONE", CODEC_NONE) < 0
        || PyModule_AddIntConstant(module, "CODEC_VP8", CODEC_VP8) < 0
        || PyModule_AddIntConstant(module, "CODEC_H264", CODEC_H264) < 0
        || PyModule_AddObjectRef(module, "Sink", (PyObject *)&SinkType) < 0
        || PyModule_AddObjectRef(module, "Leg", (PyObject *)&LegType) < 0
        || PyModule_AddObjectRef(module, "Counters", (PyObject *)&CountersType) < 0
        || PyModule_AddObjectRef(module, "Track", (PyObject *)&TrackType) < 0
        || PyModule_AddObjectRef(module, "Arrivals", (PyObject *)&ArrivalsType) < 0
        || PyModule_AddObjectRef(module, "DelayTrend", (PyObject *)&DelayTrendType) < 0
        || PyModule_AddObjectRef(module, "SendSideEstimator", (PyObject *)&EstimatorType) < 0
        || PyModule_AddObjectRef(module, "Inbound", (PyObject *)&InboundType) < 0
        || PyModule_AddObjectRef(module, "Reader", (PyObject *)&ReaderType) < 0
        || PyModule_AddIntConstant(module, "RECEIVED_MALFORMED", RECEIVED_MALFORMED) < 0
        || PyModule_AddIntConstant(module, "RECEIVED_UNKNOWN", RECEIVED_UNKNOWN) < 0
        || PyModule_AddIntConstant(module, "RECEIVED_WANTS_KEYFRAME", RECEIVED_WANTS_KEYFRAME) < 0
        || PyModule_AddIntConstant(module, "RECEIVED_TAPPED", RECEIVED_TAPPED) < 0
        || PyModule_AddIntConstant(module, "RECEIVED_SWITCHED", RECEIVED_SWITCHED) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
