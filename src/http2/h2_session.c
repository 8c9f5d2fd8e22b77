/*
 * h2_session.c - one server-side HTTP/2 connection on libnghttp2 (see h2_session.h): the
 * nghttp2 session and its callbacks, the streams and their head and answer buffers, the
 * defences, and the sock's hooks (reads fed to nghttp2_session_mem_recv, frames gathered from
 * nghttp2_session_mem_send into one corked write per loop turn, from a uv_prepare handle).
 *
 * Knows no Lua and no HTTP/1 engine: the layer above sees callbacks and the loom_h2_* calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <nghttp2/nghttp2.h>
#include "h2_session.h"

/* Frames gathered per corked write: past it the write goes and gathering starts again. */
#define FLUSH_MAX (256 * 1024)
#define OWN_RBUF (16 * 1024)
#define INLINE_FIELDS 12
#define LINGER_MS 2000 /* as the HTTP/1 engine's lingering close */

enum {
    ST_REQUESTED = 1 << 0, /* on_request ran: the layer has it */
    ST_TRAILERS = 1 << 1,  /* a second header block (trailers) is arriving */
    ST_TOO_BIG = 1 << 2,   /* the head passed max_header: answered 431, fields dropped */
    ST_DISCARD = 1 << 3,   /* body bytes are dropped (and given back at once) */
    ST_RESPONDED = 1 << 4, /* the answer's HEADERS is submitted */
    ST_BODY = 1 << 5,      /* ... with a data provider (loom_h2_write feeds it) */
    ST_OUT_LAST = 1 << 6,  /* the layer's last body byte is queued */
    ST_DEFERRED = 1 << 7,  /* the data provider said NGHTTP2_ERR_DEFERRED */
    ST_SENT_END = 1 << 8,  /* our END_STREAM went out */
    ST_IN_END = 1 << 9,    /* the peer's END_STREAM came */
    ST_WRITABLE = 1 << 10, /* the layer waits for on_writable */
    ST_APP_RESET = 1 << 11 /* reset by loom_h2_reset (or ours after a whole answer) */
};

enum {
    S_SCHEDULED = 1 << 0, /* the prepare handle will flush before the loop blocks */
    S_FLUSHING = 1 << 1,
    S_AGAIN = 1 << 2,       /* something to send came while flushing */
    S_FATAL = 1 << 3,       /* nghttp2 failed: GOAWAY is on its way, input is ignored */
    S_SHUT = 1 << 4,        /* done: half-closing after the last frame */
    S_CLOSING = 1 << 5,     /* the sock is closing */
    S_READ_PAUSED = 1 << 6, /* reading waits for the write queue to drain */
    S_FREED = 1 << 7,
};

typedef struct {
    uint64_t milli; /* thousandths of a token */
    uint64_t last;  /* ms */
} bucket_t;

struct loom_h2_stream {
    loom_h2_session_t *s;
    loom_h2_stream_t *prev, *next; /* the session's streams */
    void *data;
    int32_t id;
    uint32_t flags;
    size_t head_bytes; /* header list size so far, trailers included */
    size_t unconsumed; /* given to on_data, not yet given back */
    loom_h2_head_t head;
    loom_h2_header_t *fields; /* inline_fields, or the heap past INLINE_FIELDS */
    size_t nfields, fields_cap;
    nghttp2_rcbuf **rc; /* the buffers the spans point into: one reference each */
    size_t nrc, rc_cap;
    char *out; /* answer bytes not yet taken by nghttp2: out[off, len) */
    size_t off, len, cap;
    loom_h2_header_t inline_fields[INLINE_FIELDS];
    nghttp2_rcbuf *inline_rc[2 * INLINE_FIELDS + 8];
};

struct loom_h2_session {
    nghttp2_session *ng;
    loom_sock_t *sock; /* NULL: fed by hand, output dropped */
    const loom_h2_callbacks_t *cb;
    void *data;
    loom_h2_opts_t o;
    loom_h2_stream_t *streams;
    size_t requested;      /* streams the layer holds */
    size_t writable;       /* streams with ST_WRITABLE */
    uint32_t flags;        /* S_* */
    uint32_t fatal;        /* the GOAWAY code a defence chose before failing a callback */
    int64_t goaway;        /* the code of the GOAWAY we sent, or -1 */
    int peer_goaway;       /* the peer sent GOAWAY: no new streams */
    int handles;           /* ours still open: the sock, the prepare handle, the timer */
    uint32_t block_frames; /* CONTINUATION frames of the header block being read */
    uint64_t block_bytes;  /* its payload bytes so far */
    bucket_t rst, junk;
    uv_prepare_t prepare;
    uv_timer_t linger; /* after our last frame: the most we read on, waiting for the peer */
    char failure[160]; /* why the connection failed under us (a TLS read error), or "" */
    char own_rbuf[];   /* when o.rbuf is NULL */
};

static void schedule(loom_h2_session_t *s);
static void flush(loom_h2_session_t *s);
static void close_now(loom_h2_session_t *s);

void loom_h2_opts_default(loom_h2_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->max_streams = 100;
    o->window = 65535;
    o->conn_window = 1024 * 1024;
    o->max_header = 16 * 1024;
    o->max_continuations = 8;
    o->header_table = 4096;
    o->rst_burst = 1000; /* nghttp2's own defaults for its stream reset limit */
    o->rst_rate = 33;
    o->junk_burst = 1000;
    o->junk_rate = 100;
    o->max_outbound_ack = 1000;
}

int loom_h2_is_preface(const char *data, size_t len) {
    size_t n = len < LOOM_H2_PREFACE_LEN ? len : LOOM_H2_PREFACE_LEN;
    if (memcmp(data, LOOM_H2_PREFACE, n) != 0)
        return 0;
    return len >= LOOM_H2_PREFACE_LEN ? 1 : -1;
}

/* ---------------------------------------------------------------- token buckets */

static uint64_t now_ms(void) {
    return uv_hrtime() / 1000000;
}

static void bucket_init(bucket_t *b, uint32_t burst) {
    b->milli = (uint64_t)burst * 1000;
    b->last = now_ms();
}

/* Takes one token: 0, or -1 when the bucket is empty (rate: tokens back per second). */
static int bucket_take(bucket_t *b, uint32_t burst, uint32_t rate) {
    uint64_t t = now_ms();
    b->milli += (t - b->last) * rate; /* rate per s is rate thousandths per ms */
    b->last = t;
    if (b->milli > (uint64_t)burst * 1000)
        b->milli = (uint64_t)burst * 1000;
    if (b->milli < 1000)
        return -1;
    b->milli -= 1000;
    return 0;
}

/* A defence tripped inside a receive callback: nghttp2_session_mem_recv fails and feed()
 * sends GOAWAY with code. */
static int calm(loom_h2_session_t *s, uint32_t code) {
    if (!s->fatal)
        s->fatal = code;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* ---------------------------------------------------------------- streams */

static loom_h2_stream_t *stream_new(loom_h2_session_t *s, int32_t id) {
    loom_h2_stream_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->s = s;
    st->id = id;
    st->fields = st->inline_fields;
    st->fields_cap = INLINE_FIELDS;
    st->rc = st->inline_rc;
    st->rc_cap = sizeof st->inline_rc / sizeof st->inline_rc[0];
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    return st;
}

/* Lets go of the head: the buffer references, and the spans with them. */
static void release_head(loom_h2_stream_t *st) {
    for (size_t i = 0; i < st->nrc; i++)
        nghttp2_rcbuf_decref(st->rc[i]);
    st->nrc = 0;
    st->nfields = 0;
    memset(&st->head, 0, sizeof st->head);
}

static void stream_free(loom_h2_stream_t *st) {
    loom_h2_session_t *s = st->s;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (st->flags & ST_WRITABLE)
        s->writable--;
    release_head(st);
    if (st->fields != st->inline_fields)
        free(st->fields);
    if (st->rc != st->inline_rc)
        free(st->rc);
    free(st->out);
    free(st);
}

/* Grows *arr (whose first storage is inline) to hold one more of size sz. 0 or -1. */
static int grow(void **arr, size_t *cap, size_t n, size_t sz, void *inline_arr) {
    if (n < *cap)
        return 0;
    size_t ncap = *cap * 2;
    void *p = malloc(ncap * sz);
    if (!p)
        return -1;
    memcpy(p, *arr, n * sz);
    if (*arr != inline_arr)
        free(*arr);
    *arr = p;
    *cap = ncap;
    return 0;
}

static int keep_rc(loom_h2_stream_t *st, nghttp2_rcbuf *rc) {
    if (grow((void **)&st->rc, &st->rc_cap, st->nrc, sizeof *st->rc, st->inline_rc) != 0)
        return -1;
    nghttp2_rcbuf_incref(rc);
    st->rc[st->nrc++] = rc;
    return 0;
}

static loom_h2_span_t *pseudo_slot(loom_h2_stream_t *st, const char *name, size_t len) {
    if (len == 7 && memcmp(name, ":method", 7) == 0)
        return &st->head.method;
    if (len == 5 && memcmp(name, ":path", 5) == 0)
        return &st->head.path;
    if (len == 10 && memcmp(name, ":authority", 10) == 0)
        return &st->head.authority;
    if (len == 7 && memcmp(name, ":scheme", 7) == 0)
        return &st->head.scheme;
    if (len == 7 && memcmp(name, ":status", 7) == 0)
        return &st->head.status;
    return NULL; /* :protocol (extended CONNECT) is not offered */
}

/* Stores one field of a request head (the buffers are kept, not copied). 0 or -1. */
static int add_field(loom_h2_stream_t *st, nghttp2_rcbuf *name, nghttp2_rcbuf *value) {
    nghttp2_vec n = nghttp2_rcbuf_get_buf(name), v = nghttp2_rcbuf_get_buf(value);
    if (n.len > 0 && n.base[0] == ':') {
        loom_h2_span_t *slot = pseudo_slot(st, (const char *)n.base, n.len);
        if (!slot)
            return 0;
        if (keep_rc(st, value) != 0)
            return -1;
        slot->p = (const char *)v.base;
        slot->len = v.len;
        return 0;
    }
    if (grow((void **)&st->fields, &st->fields_cap, st->nfields, sizeof *st->fields,
             st->inline_fields) != 0 ||
        keep_rc(st, name) != 0 || keep_rc(st, value) != 0)
        return -1;
    loom_h2_header_t *f = &st->fields[st->nfields++];
    f->name = (const char *)n.base;
    f->namelen = n.len;
    f->value = (const char *)v.base;
    f->valuelen = v.len;
    return 0;
}

static loom_h2_stream_t *stream_of(loom_h2_session_t *s, int32_t id) {
    return id > 0 ? nghttp2_session_get_stream_user_data(s->ng, id) : NULL;
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

/* Every frame header, CONTINUATION included (nghttp2 calls this for each): the header block
 * bounds (CVE-2024-27316) and the empty-frame flood (CVE-2019-9518). */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud) {
    loom_h2_session_t *s = ud;
    int junk = 0;
    (void)ng;
    switch (hd->type) {
    case NGHTTP2_HEADERS:
        s->block_frames = 0;
        s->block_bytes = hd->length;
        junk = hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_HEADERS);
        break;
    case NGHTTP2_CONTINUATION:
        s->block_frames++;
        s->block_bytes += hd->length;
        /* a whole head of max_header bytes, encoded plainly, is smaller than that: twice as
         * much and more cannot be a head loom would take */
        if (s->block_frames > s->o.max_continuations ||
            s->block_bytes > 2 * (uint64_t)s->o.max_header + 1024)
            return calm(s, NGHTTP2_ENHANCE_YOUR_CALM);
        junk = hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_HEADERS);
        break;
    case NGHTTP2_DATA:
        junk = hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM);
        break;
    case NGHTTP2_PRIORITY:
        junk = 1;
        break;
    case NGHTTP2_SETTINGS:
        junk = !(hd->flags & NGHTTP2_FLAG_ACK);
        break;
    default:
        break;
    }
    if (junk && bucket_take(&s->junk, s->o.junk_burst, s->o.junk_rate) != 0)
        return calm(s, NGHTTP2_ENHANCE_YOUR_CALM);
    return 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud) {
    loom_h2_session_t *s = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (s->o.client) { /* the stream is ours since loom_h2_request */
        loom_h2_stream_t *st = stream_of(s, frame->hd.stream_id);
        if (st && frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
            release_head(st); /* a 1xx head before: the final one replaces it */
            st->head_bytes = 0;
        } else if (st) {
            st->flags |= ST_TRAILERS;
        }
        return 0;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        loom_h2_stream_t *st = stream_of(s, frame->hd.stream_id);
        if (st)
            st->flags |= ST_TRAILERS;
        return 0;
    }
    loom_h2_stream_t *st = stream_new(s, frame->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset, INTERNAL_ERROR */
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
    return 0;
}

/* Each field of a head (or trailers), after nghttp2's own checks. Counted as RFC 9113 6.5.2
 * does; past max_header the fields are dropped (the HPACK state must still follow them). */
static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *ud) {
    loom_h2_session_t *s = ud;
    loom_h2_stream_t *st = stream_of(s, frame->hd.stream_id);
    (void)ng;
    (void)flags;
    if (!st)
        return 0;
    st->head_bytes += nghttp2_rcbuf_get_buf(name).len + nghttp2_rcbuf_get_buf(value).len + 32;
    if (st->head_bytes > s->o.max_header) {
        if (st->flags & ST_REQUESTED) /* trailers too big: the layer has the stream */
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        if (!(st->flags & ST_TOO_BIG)) {
            st->flags |= ST_TOO_BIG;
            release_head(st);
        }
        return 0;
    }
    if (st->flags & (ST_TOO_BIG | ST_TRAILERS)) /* trailers are not offered upward yet */
        return 0;
    return add_field(st, name, value) == 0 ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int respond(loom_h2_stream_t *st, int status, const loom_h2_header_t *h, size_t n, int end);

static void got_end(loom_h2_session_t *s, loom_h2_stream_t *st) {
    st->flags |= ST_IN_END;
    if ((st->flags & ST_REQUESTED) && !(st->flags & ST_DISCARD))
        s->cb->on_end(st);
}

static void got_head(loom_h2_session_t *s, loom_h2_stream_t *st) {
    if (st->flags & ST_TOO_BIG) {
        static const loom_h2_header_t len0 = {"content-length", "0", 14, 1};
        st->flags |= ST_DISCARD;
        respond(st, 431, &len0, 1, 1);
        return;
    }
    if (!s->o.client) { /* a client's stream is the layer's since loom_h2_request */
        st->flags |= ST_REQUESTED;
        s->requested++;
    }
    st->head.headers = st->fields;
    st->head.nheaders = st->nfields;
    st->head.bytes = st->head_bytes;
    s->cb->on_request(st, &st->head);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud) {
    loom_h2_session_t *s = ud;
    loom_h2_stream_t *st = stream_of(s, frame->hd.stream_id);
    (void)ng;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!st)
            break;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            got_head(s, st);
        } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE && s->o.client) {
            if (st->flags & ST_TOO_BIG) {
                loom_h2_reset(st, NGHTTP2_CANCEL);
                break;
            }
            if (st->head.status.len == 3 && st->head.status.p[0] == '1' &&
                !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
                break; /* 1xx: the final head follows */
            got_head(s, st);
        }
        st->flags &= ~(uint32_t)ST_TRAILERS;
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !(st->flags & ST_IN_END))
            got_end(s, st);
        break;
    case NGHTTP2_DATA:
        if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !(st->flags & ST_IN_END))
            got_end(s, st);
        break;
    case NGHTTP2_RST_STREAM:
        /* CVE-2023-44487: a stream opened and reset at once costs the server work but never
         * counts against max_streams, so resets count against a rate of their own */
        if (bucket_take(&s->rst, s->o.rst_burst, s->o.rst_rate) != 0)
            return calm(s, NGHTTP2_ENHANCE_YOUR_CALM);
        break;
    case NGHTTP2_GOAWAY:
        s->peer_goaway = 1;
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud) {
    loom_h2_session_t *s = ud;
    loom_h2_stream_t *st = stream_of(s, id);
    (void)flags;
    if (!st || !(st->flags & ST_REQUESTED) || (st->flags & ST_DISCARD)) {
        nghttp2_session_consume(ng, id, len); /* nobody reads it: the window opens again */
        return 0;
    }
    st->unconsumed += len;
    s->cb->on_data(st, (const char *)data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud) {
    loom_h2_session_t *s = ud;
    loom_h2_stream_t *st = stream_of(s, frame->hd.stream_id);
    switch (frame->hd.type) {
    case NGHTTP2_GOAWAY:
        s->goaway = frame->goaway.error_code;
        break;
    case NGHTTP2_RST_STREAM:
        /* a reset the peer provoked (a bad frame on a stream) counts as its own would
         * (CVE-2025-8671 provokes them instead of sending them) */
        if ((!st || !(st->flags & ST_APP_RESET)) &&
            bucket_take(&s->rst, s->o.rst_burst, s->o.rst_rate) != 0)
            nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM);
        break;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        if (!st || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            break;
        st->flags |= ST_SENT_END;
        /* RFC 9113 8.1: after a whole answer the server may ask the client to stop
         * sending the request body with RST_STREAM (NO_ERROR) */
        if (!(st->flags & ST_IN_END) && !s->o.client) {
            st->flags |= ST_APP_RESET;
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud) {
    loom_h2_session_t *s = ud;
    loom_h2_stream_t *st = stream_of(s, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (st->unconsumed > 0) /* what the layer held no longer counts against the connection */
        nghttp2_session_consume_connection(ng, st->unconsumed);
    if (st->flags & ST_REQUESTED) {
        s->requested--;
        if (s->o.client ? (st->flags & ST_IN_END) && code == NGHTTP2_NO_ERROR
                        : (st->flags & ST_SENT_END)) {
            if (s->cb->on_close)
                s->cb->on_close(st);
        } else {
            s->cb->on_reset(st, code);
        }
    }
    stream_free(st);
    return 0;
}

/* The data provider: what loom_h2_write queued, or DEFERRED until it queues more. */
static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *ud) {
    loom_h2_stream_t *st = source->ptr;
    size_t n = st->len - st->off;
    (void)ng;
    (void)id;
    (void)ud;
    if (n > length)
        n = length;
    if (n > 0) /* out is NULL when nothing was ever queued (an empty last write) */
        memcpy(buf, st->out + st->off, n);
    st->off += n;
    if (st->off == st->len) {
        st->off = st->len = 0;
        if (st->flags & ST_OUT_LAST)
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0) {
            st->flags |= ST_DEFERRED;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* ---------------------------------------------------------------- answers */

/* HTTP/2 forbids these in a message (RFC 9113 8.2.2). */
static int connection_specific(const char *name, size_t len) {
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return 1;
    return 0;
}

static int respond(loom_h2_stream_t *st, int status, const loom_h2_header_t *h, size_t n, int end) {
    loom_h2_session_t *s = st->s;
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += h[i].namelen;
    nghttp2_nv *nv = malloc((n + 1) * sizeof *nv + names + 4);
    if (!nv)
        return -1;
    char *lower = (char *)(nv + n + 1), *code = lower + names;
    snprintf(code, 4, "%03d", status);
    nv[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE};
    size_t k = 1;
    for (size_t i = 0; i < n; i++) {
        if (connection_specific(h[i].name, h[i].namelen))
            continue;
        for (size_t j = 0; j < h[i].namelen; j++) {
            char c = h[i].name[j];
            lower[j] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        nv[k++] = (nghttp2_nv){(uint8_t *)lower, (uint8_t *)h[i].value, h[i].namelen, h[i].valuelen,
                               NGHTTP2_NV_FLAG_NONE};
        lower += h[i].namelen;
    }
    nghttp2_data_provider prd = {.source = {.ptr = st}, .read_callback = read_body};
    /* nghttp2 copies the fields (no NGHTTP2_NV_FLAG_NO_COPY_*): nv can go at once */
    int rc = nghttp2_submit_response(s->ng, st->id, nv, k, end ? NULL : &prd);
    free(nv);
    if (rc != 0)
        return -1;
    st->flags |= ST_RESPONDED | (end ? ST_OUT_LAST : ST_BODY);
    schedule(s);
    return 0;
}

int loom_h2_respond(loom_h2_stream_t *st, int status, const loom_h2_header_t *h, size_t n,
                    int end) {
    if ((st->flags & (ST_RESPONDED | ST_APP_RESET)) || (st->s->flags & S_CLOSING) || status < 200 ||
        status > 999)
        return -1;
    return respond(st, status, h, n, end);
}

int loom_h2_informational(loom_h2_stream_t *st, int status) {
    loom_h2_session_t *s = st->s;
    if ((st->flags & (ST_RESPONDED | ST_APP_RESET)) || (s->flags & S_CLOSING) || status < 100 ||
        status > 199 || s->o.client)
        return -1;
    char code[4];
    snprintf(code, sizeof code, "%03d", status);
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE};
    /* a HEADERS without END_STREAM and no data provider: the final head follows */
    if (nghttp2_submit_headers(s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL) < 0)
        return -1;
    schedule(s);
    return 0;
}

static int out_append(loom_h2_stream_t *st, const char *data, size_t len) {
    if (st->off > 0 && st->len + len > st->cap) { /* slide what is left to the front */
        memmove(st->out, st->out + st->off, st->len - st->off);
        st->len -= st->off;
        st->off = 0;
    }
    if (st->len + len > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->len + len)
            cap *= 2;
        char *p = realloc(st->out, cap);
        if (!p)
            return -1;
        st->out = p;
        st->cap = cap;
    }
    if (len > 0)
        memcpy(st->out + st->len, data, len);
    st->len += len;
    return 0;
}

int64_t loom_h2_write(loom_h2_stream_t *st, const char *data, size_t len, int last) {
    loom_h2_session_t *s = st->s;
    if (!(st->flags & ST_BODY) || (st->flags & (ST_OUT_LAST | ST_APP_RESET)) ||
        (s->flags & S_CLOSING) || out_append(st, data, len) != 0)
        return -1;
    if (last)
        st->flags |= ST_OUT_LAST;
    if (st->flags & ST_DEFERRED) {
        st->flags &= ~(uint32_t)ST_DEFERRED;
        nghttp2_session_resume_data(s->ng, st->id);
    }
    schedule(s);
    size_t queued = st->len - st->off;
    if (queued >= LOOM_H2_STREAM_HIGH_WATER && !(st->flags & ST_WRITABLE)) {
        st->flags |= ST_WRITABLE;
        s->writable++;
    }
    return (int64_t)queued;
}

void loom_h2_consume(loom_h2_stream_t *st, size_t n) {
    if (n > st->unconsumed)
        n = st->unconsumed;
    if (n == 0)
        return;
    st->unconsumed -= n;
    nghttp2_session_consume(st->s->ng, st->id, n);
    schedule(st->s);
}

void loom_h2_reset(loom_h2_stream_t *st, uint32_t code) {
    if (st->flags & ST_APP_RESET)
        return;
    st->flags |= ST_APP_RESET;
    nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, code);
    schedule(st->s);
}

loom_h2_session_t *loom_h2_stream_session(const loom_h2_stream_t *st) {
    return st->s;
}
int32_t loom_h2_stream_id(const loom_h2_stream_t *st) {
    return st->id;
}
void *loom_h2_stream_data(const loom_h2_stream_t *st) {
    return st->data;
}
void loom_h2_stream_set_data(loom_h2_stream_t *st, void *data) {
    st->data = data;
}

/* ---------------------------------------------------------------- output */

/* Streams whose queue fell low hear about it (after the frames went, outside nghttp2). */
static void notify_writable(loom_h2_session_t *s) {
    for (loom_h2_stream_t *st = s->streams, *next; st && s->writable > 0; st = next) {
        next = st->next;
        if (!(st->flags & ST_WRITABLE) || st->len - st->off >= LOOM_H2_STREAM_HIGH_WATER / 4)
            continue;
        st->flags &= ~(uint32_t)ST_WRITABLE;
        s->writable--;
        if (s->cb->on_writable)
            s->cb->on_writable(st);
    }
}

static void on_linger_end(uv_timer_t *t) {
    close_now(t->data);
}

/* nghttp2 has nothing more to read or write (GOAWAY sent or received, and no stream left, or
 * a fatal error's GOAWAY): half-close after the last frame, and read on (dropping what comes)
 * until the peer closes too or LINGER_MS pass. Closing at once would make the kernel answer
 * bytes still arriving with an RST, which can destroy the GOAWAY before the peer reads it. */
static void shut(loom_h2_session_t *s) {
    if (s->flags & (S_SHUT | S_CLOSING))
        return;
    s->flags |= S_SHUT;
    if (!s->sock)
        return;
    if (loom_sock_shutdown(s->sock, NULL) != 0) {
        close_now(s);
        return;
    }
    if (s->flags & S_READ_PAUSED) { /* nothing more is made: reading only looks for the end */
        s->flags &= ~(uint32_t)S_READ_PAUSED;
        loom_sock_read_start(s->sock);
    }
    uv_timer_start(&s->linger, on_linger_end, LINGER_MS, 0);
}

/* Gathers what nghttp2 has to send into corked writes of up to FLUSH_MAX, while the sock's
 * queue is under its high-water mark (past it, reading stops too: a peer that does not read
 * its answers gets no more of them made). */
static void send_frames(loom_h2_session_t *s) {
    if (s->sock && s->sock->tls && !loom_sock_tls_ready(s->sock))
        return; /* a session on a TLS sock before the handshake: the first input flushes */
    for (;;) {
        if (s->sock && loom_sock_over_high_water(s->sock)) {
            if (!(s->flags & S_READ_PAUSED)) {
                s->flags |= S_READ_PAUSED;
                loom_sock_read_stop(s->sock);
            }
            return;
        }
        size_t gathered = 0;
        ssize_t n = 0;
        const uint8_t *p;
        if (s->sock)
            loom_sock_cork(s->sock);
        while (gathered < FLUSH_MAX && (n = nghttp2_session_mem_send(s->ng, &p)) > 0) {
            if (s->sock) {
                uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
                loom_sock_write(s->sock, &b, 1);
            }
            gathered += (size_t)n;
        }
        if (s->sock)
            loom_sock_uncork(s->sock);
        if (n < 0)
            s->flags |= S_FATAL;
        if (n <= 0 || gathered < FLUSH_MAX)
            return;
    }
}

static void flush(loom_h2_session_t *s) {
    if (s->flags & (S_FLUSHING | S_CLOSING | S_FREED)) {
        s->flags |= S_AGAIN;
        return;
    }
    s->flags |= S_FLUSHING;
    do {
        s->flags &= ~(uint32_t)S_AGAIN;
        send_frames(s);
        notify_writable(s);
    } while ((s->flags & S_AGAIN) && !(s->flags & S_CLOSING));
    s->flags &= ~(uint32_t)S_FLUSHING;
    if (s->flags & S_CLOSING)
        return;
    if (s->sock && loom_sock_error(s->sock))
        close_now(s); /* the peer is gone: nothing more can be said */
    else if ((s->flags & S_FATAL) ||
             (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng)))
        shut(s);
}

static void on_prepare(uv_prepare_t *h) {
    loom_h2_session_t *s = h->data;
    uv_prepare_stop(h);
    s->flags &= ~(uint32_t)S_SCHEDULED;
    flush(s);
}

/* Frames wait until the loop is about to block for I/O (the prepare phase): by then every
 * read of the turn was handled, the scheduler (core/task.c, a check and an idle handle) has
 * run the handlers they woke, and timers have fired, so the answers of one turn leave in one
 * write. A check handle would not do: one started from another check callback (a handler
 * the scheduler resumed) waits for the next turn, and nothing wakes the loop for it. */
static void schedule(loom_h2_session_t *s) {
    if (s->flags & (S_CLOSING | S_FREED))
        return;
    if (s->flags & S_FLUSHING) {
        s->flags |= S_AGAIN; /* the flush under way goes round once more */
        return;
    }
    if (!s->sock) {
        flush(s); /* no loop: at once */
        return;
    }
    if (!(s->flags & S_SCHEDULED)) {
        s->flags |= S_SCHEDULED;
        uv_prepare_start(&s->prepare, on_prepare);
    }
}

/* ---------------------------------------------------------------- input */

static uint32_t goaway_code(loom_h2_session_t *s, ssize_t rv) {
    switch (rv) {
    case NGHTTP2_ERR_CALLBACK_FAILURE:
        return s->fatal ? s->fatal : NGHTTP2_INTERNAL_ERROR;
    case NGHTTP2_ERR_FLOODED:
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
        return NGHTTP2_ENHANCE_YOUR_CALM;
    case NGHTTP2_ERR_NOMEM:
        return NGHTTP2_INTERNAL_ERROR;
    default: /* NGHTTP2_ERR_BAD_CLIENT_MAGIC and the other failures of the peer's bytes */
        return NGHTTP2_PROTOCOL_ERROR;
    }
}

int loom_h2_session_feed(loom_h2_session_t *s, const char *data, size_t len) {
    if (s->flags & (S_FATAL | S_SHUT | S_CLOSING | S_FREED))
        return -1;          /* after GOAWAY what comes is dropped */
    s->flags |= S_FLUSHING; /* what the callbacks answer goes out below, once */
    ssize_t rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)data, len);
    s->flags &= ~(uint32_t)S_FLUSHING;
    if (rv < 0) {
        /* a fatal failure leaves the session able to send: say why before closing */
        s->flags |= S_FATAL;
        nghttp2_session_terminate_session(s->ng, goaway_code(s, rv));
    }
    if (s->sock) {
        s->flags &= ~(uint32_t)S_AGAIN;
        schedule(s);
    } else {
        flush(s);
    }
    return s->flags & (S_FATAL | S_SHUT | S_CLOSING) ? -1 : 0;
}

/* ---------------------------------------------------------------- the sock's hooks */

static void h_alloc(loom_sock_t *sock, size_t hint, uv_buf_t *buf) {
    loom_h2_session_t *s = loom_sock_owner(sock);
    (void)hint;
    *buf = uv_buf_init(s->o.rbuf, (unsigned)s->o.rbuf_len);
}

static void h_input(loom_sock_t *sock, ssize_t nread, const char *data) {
    loom_h2_session_t *s = loom_sock_owner(sock);
    if (nread < 0) { /* the end (HTTP/2 has no half-close of its own) or a failure */
        const char *why = nread != UV_EOF ? loom_sock_tls_error(sock) : NULL;
        if (why) /* the TLS session goes with the sock: the streams' ends may tell it */
            snprintf(s->failure, sizeof s->failure, "%s", why);
        close_now(s);
        return;
    }
    loom_h2_session_feed(s, data, (size_t)nread);
}

static void h_drained(loom_sock_t *sock, int status) {
    loom_h2_session_t *s = loom_sock_owner(sock);
    if (status < 0) {
        close_now(s);
        return;
    }
    if (s->flags & S_READ_PAUSED) {
        s->flags &= ~(uint32_t)S_READ_PAUSED;
        if (!(s->flags & S_CLOSING))
            loom_sock_read_start(sock);
    }
    schedule(s);
}

static void finish(loom_h2_session_t *s);

static void handle_gone(loom_h2_session_t *s) {
    if (--s->handles == 0)
        finish(s);
}

static void h_closed(loom_sock_t *sock) {
    handle_gone(loom_sock_owner(sock));
}

static void on_handle_closed(uv_handle_t *h) {
    handle_gone(h->data);
}

static const loom_sock_hooks_t h2_hooks = {h_alloc, h_input, h_drained, NULL, h_closed};

static void close_now(loom_h2_session_t *s) {
    if (s->flags & S_CLOSING)
        return;
    s->flags |= S_CLOSING;
    if (!s->sock)
        return;
    uv_close((uv_handle_t *)&s->prepare, on_handle_closed);
    uv_close((uv_handle_t *)&s->linger, on_handle_closed);
    loom_sock_close(s->sock);
}

/* Every stream still open ends with a reset; then nghttp2 and the session go. */
static void drop_all(loom_h2_session_t *s) {
    s->flags |= S_CLOSING;
    while (s->streams) {
        loom_h2_stream_t *st = s->streams;
        if (st->flags & ST_REQUESTED) {
            st->flags &= ~(uint32_t)ST_REQUESTED;
            s->requested--;
            s->cb->on_reset(st, NGHTTP2_CANCEL);
        }
        stream_free(st);
    }
    nghttp2_session_del(s->ng);
    s->ng = NULL;
}

static void finish(loom_h2_session_t *s) {
    drop_all(s);
    s->flags |= S_FREED;
    if (s->cb->on_closed)
        s->cb->on_closed(s);
    free(s);
}

/* ---------------------------------------------------------------- the session */

static nghttp2_session_callbacks *make_callbacks(void) {
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
}

static nghttp2_option *make_options(const loom_h2_opts_t *o) {
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return NULL;
    /* "the library won't send WINDOW_UPDATE for DATA until application calls
     * nghttp2_session_consume()": the window opens as the layer takes the bytes */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, o->header_table);
    nghttp2_option_set_max_outbound_ack(opt, o->max_outbound_ack);
    /* nghttp2's own limits stay behind ours, which answer with ENHANCE_YOUR_CALM (its reset
     * limit says INTERNAL_ERROR; its CONTINUATION limit sends no GOAWAY). Its bucket refills
     * once a second, ours by the millisecond: twice the burst keeps it the later one. */
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * (uint64_t)o->rst_burst + o->rst_rate,
                                               o->rst_rate);
    nghttp2_option_set_max_continuations(opt, (size_t)o->max_continuations + 1);
    return opt;
}

static int start(loom_h2_session_t *s) {
    nghttp2_session_callbacks *cbs = make_callbacks();
    nghttp2_option *opt = make_options(&s->o);
    int rc = -1;
    if (cbs && opt)
        rc = s->o.client ? nghttp2_session_client_new2(&s->ng, cbs, s, opt)
                         : nghttp2_session_server_new2(&s->ng, cbs, s, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {s->o.client ? NGHTTP2_SETTINGS_ENABLE_PUSH : NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
         s->o.client ? 0 : s->o.max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, s->o.window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->o.max_header},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, s->o.header_table},
    };
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
        (s->o.conn_window > 65535 &&
         nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
                                               (int32_t)s->o.conn_window) != 0)) {
        nghttp2_session_del(s->ng);
        return -1;
    }
    return 0;
}

loom_h2_session_t *loom_h2_session_new(loom_sock_t *sock, const loom_h2_opts_t *o,
                                       const loom_h2_callbacks_t *cb, void *data) {
    size_t own = o->rbuf ? 0 : OWN_RBUF;
    loom_h2_session_t *s = calloc(1, sizeof *s + own);
    if (!s)
        return NULL;
    s->o = *o;
    if (!o->rbuf) {
        s->o.rbuf = s->own_rbuf;
        s->o.rbuf_len = OWN_RBUF;
    }
    if (s->o.window > 0x7fffffff)
        s->o.window = 0x7fffffff;
    if (s->o.conn_window > 0x7fffffff)
        s->o.conn_window = 0x7fffffff;
    s->cb = cb;
    s->data = data;
    s->sock = sock;
    s->goaway = -1;
    bucket_init(&s->rst, s->o.rst_burst);
    bucket_init(&s->junk, s->o.junk_burst);
    if (start(s) != 0) {
        free(s);
        return NULL;
    }
    if (sock) {
        uv_prepare_init(sock->h.handle.loop, &s->prepare);
        uv_timer_init(sock->h.handle.loop, &s->linger);
        s->prepare.data = s->linger.data = s;
        s->handles = 3;
        loom_sock_handover(sock, &h2_hooks, s);
        if (loom_sock_read_start(sock) != 0)
            close_now(s);
        else
            schedule(s); /* the SETTINGS */
    }
    return s;
}

void loom_h2_goaway(loom_h2_session_t *s, uint32_t code) {
    if (s->flags & (S_CLOSING | S_FREED))
        return;
    if (code == NGHTTP2_NO_ERROR)
        nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(s->ng), code, NULL, 0);
    else
        nghttp2_session_terminate_session(s->ng, code);
    schedule(s);
}

void loom_h2_session_close(loom_h2_session_t *s) {
    close_now(s);
}

void loom_h2_session_free(loom_h2_session_t *s) {
    if (s->sock)
        return; /* it frees itself after on_closed */
    drop_all(s);
    free(s);
}

void *loom_h2_session_data(const loom_h2_session_t *s) {
    return s->data;
}
loom_sock_t *loom_h2_session_sock(const loom_h2_session_t *s) {
    return s->sock;
}
size_t loom_h2_session_streams(const loom_h2_session_t *s) {
    return s->requested;
}
const char *loom_h2_session_failure(const loom_h2_session_t *s) {
    return s->failure[0] ? s->failure : NULL;
}

int64_t loom_h2_session_goaway_code(const loom_h2_session_t *s) {
    return s->goaway;
}

/* ---------------------------------------------------------------- client sessions */

uint32_t loom_h2_session_peer_max_streams(const loom_h2_session_t *s) {
    return s->ng
               ? nghttp2_session_get_remote_settings(s->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
               : 0;
}

int loom_h2_session_draining(const loom_h2_session_t *s) {
    return s->peer_goaway || s->goaway >= 0 ||
           (s->flags & (S_FATAL | S_SHUT | S_CLOSING | S_FREED)) || !s->ng;
}

loom_h2_stream_t *loom_h2_request(loom_h2_session_t *s, const loom_h2_header_t *h, size_t n,
                                  int body, void *data) {
    if (!s->o.client || loom_h2_session_draining(s))
        return NULL;
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += h[i].namelen;
    nghttp2_nv *nv = malloc(n * sizeof *nv + names + 1);
    loom_h2_stream_t *st = nv ? stream_new(s, 0) : NULL;
    if (!st) {
        free(nv);
        return NULL;
    }
    char *lower = (char *)(nv + n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (connection_specific(h[i].name, h[i].namelen) ||
            (h[i].namelen == 4 && strncasecmp(h[i].name, "host", 4) == 0))
            continue; /* HTTP/2 has none; :authority is the host */
        for (size_t j = 0; j < h[i].namelen; j++) {
            char c = h[i].name[j];
            lower[j] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        nv[k++] = (nghttp2_nv){(uint8_t *)lower, (uint8_t *)h[i].value, h[i].namelen, h[i].valuelen,
                               NGHTTP2_NV_FLAG_NONE};
        lower += h[i].namelen;
    }
    nghttp2_data_provider prd = {.source = {.ptr = st}, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(s->ng, NULL, nv, k, body ? &prd : NULL, st);
    free(nv);
    if (id < 0) {
        stream_free(st);
        return NULL;
    }
    st->id = id;
    st->data = data;
    st->flags |= ST_REQUESTED | ST_RESPONDED | (body ? ST_BODY : ST_OUT_LAST);
    s->requested++;
    schedule(s);
    return st;
}
