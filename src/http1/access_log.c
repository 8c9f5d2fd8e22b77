/*
 * access_log.c - the access log and the request counters of the HTTP server (issue 16).
 *
 * The engine calls loom_obs_request_end once an answer is complete. From there:
 *   - "combined" (Combined Log Format, as nginx's default) or "json" (one object a line)
 *     lines go into the host's buffered stdout writer below, in C, from any callback;
 *   - for a Lua function, the entry's fields are recorded in C and a scheduler job calls
 *     the function with each entry a little later (never from a libuv callback);
 *   - with metrics on, counters of this struct are bumped (no Lua per request); app:metrics
 *     reads them at scrape time through core.http_stats.
 *
 * The writer: one per host, shared by its servers so lines stay whole and in order. Lines
 * gather in memory and go out every FLUSH_MS, or at once past FLUSH_BYTES, through
 * uv_fs_write on descriptor 1, one write at a time, each of whole lines and at most
 * PIPE_BUF bytes (so that workers sharing a pipe do not mix their lines). uv_fs_write runs in
 * libuv's thread pool, so a pipe nobody reads blocks a pool thread, never the loop; a stdout that
 * stays full makes the buffer grow to OUT_MAX, past which lines are dropped and counted. Making
 * stdout non-blocking instead (uv_pipe_open) would change the descriptor the process shares with
 * Lua's io.stdout and with the parent shell. At host teardown the writer writes what is left
 * and teardown waits for it (the write counts as a handle), so a graceful exit loses nothing.
 *
 * Knows nothing of routing; the Prometheus text is made in lua/loom/metrics.lua.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include "access_log.h"
#include "addr.h"
#include "fail.h"

#define FLUSH_MS 100
#define FLUSH_BYTES (64 * 1024)
#define OUT_MAX (16 * 1024 * 1024)
#define TARGET_MAX 8192 /* bytes of an escaped target kept in a line */
#define FIELD_MAX 1024  /* of an escaped Referer or User-Agent */
#define FN_ERROR_MS 10000

/* ---------------------------------------------------------------- string builder */

typedef struct {
    char *p;
    size_t len, cap;
    int bad; /* out of memory: the line is dropped */
} sb_t;

static inline int sb_reserve(sb_t *b, size_t n) {
    if (b->bad)
        return 0;
    if (b->len + n <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->bad = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

static inline void sb_put(sb_t *b, const char *s, size_t n) {
    if (sb_reserve(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void sb_str(sb_t *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* v in decimal (printf would cost more than the rest of a line). */
static void sb_u64(sb_t *b, uint64_t v) {
    char tmp[20];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sb_put(b, tmp + i, sizeof tmp - (size_t)i);
}

/* v, zero-padded to `digits` digits. */
static void sb_padded(sb_t *b, uint64_t v, int digits) {
    char tmp[20];
    for (int i = digits - 1; i >= 0; i--) {
        tmp[i] = (char)('0' + v % 10);
        v /= 10;
    }
    sb_put(b, tmp, (size_t)digits);
}

/* ns nanoseconds as seconds with 6 decimals ("0.000123"). */
static void sb_secs(sb_t *b, uint64_t ns) {
    uint64_t us = ns / 1000;
    sb_u64(b, us / 1000000);
    sb_put(b, ".", 1);
    sb_padded(b, us % 1000000, 6);
}

static const char hex[] = "0123456789ABCDEF";

/* n bytes of s as nginx writes a log field: '"', '\\', control bytes and bytes from 0x7f as
 * \xHH, so a client's bytes cannot end the field or the line. At most max bytes out. */
static int log_plain(unsigned char ch) {
    return ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
}

static void sb_escape_log(sb_t *b, const char *s, size_t n, size_t max) {
    size_t start = b->len;
    for (size_t i = 0; i < n;) {
        size_t run = i;
        while (run < n && log_plain((unsigned char)s[run]))
            run++;
        if (run > i) { /* the bytes that need nothing, in one copy */
            size_t room = max - (b->len - start);
            size_t k = run - i < room ? run - i : room;
            sb_put(b, s + i, k);
            if (k < run - i)
                return;
            i = run;
            continue;
        }
        unsigned char ch = (unsigned char)s[i++];
        if (b->len - start + 4 > max)
            return;
        char e[4] = {'\\', 'x', hex[ch >> 4], hex[ch & 15]};
        sb_put(b, e, 4);
    }
}

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0 (RFC 3629 table 4). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* s as a JSON string, quotes included: '"', '\\' and control bytes escaped; valid UTF-8
 * kept; a byte that is not part of valid UTF-8 written \u00XX (the byte as a Latin-1
 * character), so the line is always valid JSON in valid UTF-8. */
static void sb_json_string(sb_t *b, const char *s, size_t n, size_t max) {
    const unsigned char *u = (const unsigned char *)s;
    size_t start = b->len;
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        if (b->len - start > max)
            break;
        size_t run = i, room = max + 1 - (b->len - start);
        while (run < n && run - i < room && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '"' &&
               u[run] != '\\')
            run++;
        if (run > i) {
            sb_put(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char ch = u[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            sb_put(b, e, 2);
            i++;
        } else if (ch >= 0x20 && ch < 0x7f) {
            sb_put(b, (const char *)&ch, 1);
            i++;
        } else {
            size_t len = ch >= 0x80 ? utf8_seq(u + i, n - i) : 0;
            if (len) {
                sb_put(b, s + i, len);
                i += len;
            } else {
                char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
                sb_put(b, e, 6);
                i++;
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* ---------------------------------------------------------------- the stdout writer */

typedef struct loom_alog_out {
    loom_res_t res;
    loom_t *host;
    uv_timer_t timer;
    uv_fs_t req;
    char *buf; /* lines waiting */
    size_t len, cap;
    char *wbuf; /* the lines being written */
    size_t wlen, woff, wcap;
    int refs; /* servers using it */
    int writing, closing, timer_closed, failed;
    uint64_t dropped;
    time_t sec;        /* the second the cached times below are of */
    char clf_time[40]; /* "07/Dec/2026:17:04:14 +0000" (local time, as nginx) */
    char iso_time[32]; /* "2026-12-07T17:04:14" (UTC) */
    sb_t line;         /* scratch for one line */
} alog_out_t;

static char OUT_KEY; /* registry: the host's writer (light userdata) */

static void out_free_if_done(alog_out_t *w) {
    if (w->closing && w->timer_closed && !w->writing && w->refs == 0) {
        free(w->buf);
        free(w->wbuf);
        free(w->line.p);
        free(w);
    }
}

static void out_fail(alog_out_t *w, int err) {
    if (!w->failed)
        fprintf(stderr, "loom: access log: writing to stdout failed (%s): the log is off\n",
                uv_strerror(err));
    w->failed = 1;
    w->len = 0;
}

static void on_written(uv_fs_t *req);
static void on_flush_timer(uv_timer_t *t);

/* How much of what is left to write goes in the next write: whole lines of at most
 * PIPE_BUF bytes (a longer line alone). POSIX: "Write requests of {PIPE_BUF} bytes or less
 * shall not be interleaved with data from other processes doing writes on the same pipe",
 * so the lines of workers sharing a stdout pipe never mix. */
static size_t piece(const char *p, size_t left) {
    if (left <= PIPE_BUF)
        return left;
    size_t cut = PIPE_BUF;
    while (cut > 0 && p[cut - 1] != '\n')
        cut--;
    if (cut == 0) {
        const char *nl = memchr(p, '\n', left);
        cut = nl ? (size_t)(nl - p) + 1 : left;
    }
    return cut;
}

static void out_submit(alog_out_t *w) {
    const char *p = w->wbuf + w->woff;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)piece(p, w->wlen - w->woff));
    w->req.data = w;
    int rc = uv_fs_write(w->host->loop, &w->req, 1, &b, 1, -1, on_written);
    if (rc < 0) {
        out_fail(w, rc);
        return;
    }
    w->writing = 1;
    loom_handle_opened(w->host); /* teardown waits for it as for a handle */
}

/* Starts writing the lines that wait, unless a write is in flight (its end comes back). */
static void out_flush(alog_out_t *w) {
    if (w->writing || w->len == 0 || w->failed)
        return;
    if (!w->timer_closed && !w->closing)
        uv_timer_stop(&w->timer);
    char *p = w->wbuf;
    size_t cap = w->wcap;
    w->wbuf = w->buf;
    w->wcap = w->cap;
    w->wlen = w->len;
    w->woff = 0;
    w->buf = p;
    w->cap = cap;
    w->len = 0;
    out_submit(w);
}

static void on_written(uv_fs_t *req) {
    alog_out_t *w = req->data;
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    w->writing = 0;
    loom_handle_closed(w->host);
    if (r <= 0) {
        out_fail(w, r < 0 ? (int)r : UV_EIO);
    } else {
        w->woff += (size_t)r;
        if (w->woff < w->wlen) { /* the next piece, or the rest of a short write */
            out_submit(w);
            out_free_if_done(w); /* when that failed at teardown */
            return;
        }
        if (w->dropped) {
            fprintf(stderr, "loom: access log: %llu line(s) dropped: stdout did not keep up\n",
                    (unsigned long long)w->dropped);
            w->dropped = 0;
        }
        /* what came meanwhile goes with the next batch, unless it is one already */
        if (w->len >= FLUSH_BYTES || w->closing)
            out_flush(w);
        else if (w->len && !w->failed)
            uv_timer_start(&w->timer, on_flush_timer, FLUSH_MS, 0);
    }
    out_free_if_done(w);
}

static void on_flush_timer(uv_timer_t *t) {
    out_flush(t->data);
}

static void out_append(alog_out_t *w, const char *s, size_t n) {
    if (w->failed)
        return;
    if (w->len + n > OUT_MAX) {
        w->dropped++;
        return;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 16384;
        while (cap < w->len + n)
            cap *= 2;
        char *p = realloc(w->buf, cap);
        if (!p) {
            w->dropped++;
            return;
        }
        w->buf = p;
        w->cap = cap;
    }
    int was_empty = w->len == 0;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    if (w->writing)
        return; /* its end flushes this */
    if (w->len >= FLUSH_BYTES || w->closing)
        out_flush(w);
    else if (was_empty)
        uv_timer_start(&w->timer, on_flush_timer, FLUSH_MS, 0);
}

static void on_out_timer_closed(uv_handle_t *h) {
    alog_out_t *w = h->data;
    w->timer_closed = 1;
    loom_handle_closed(w->host);
    out_free_if_done(w);
}

/* Host teardown: write what is left (teardown runs the loop until it is out). */
static void out_res_close(loom_res_t *r) {
    alog_out_t *w = (alog_out_t *)r;
    w->closing = 1;
    lua_pushnil(w->host->L);
    lua_rawsetp(w->host->L, LUA_REGISTRYINDEX, &OUT_KEY);
    uv_close((uv_handle_t *)&w->timer, on_out_timer_closed);
    out_flush(w);
}

/* The host's writer, made on first use; the caller holds a reference. */
static alog_out_t *out_get(lua_State *L, loom_t *h) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OUT_KEY);
    alog_out_t *w = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!w) {
        w = calloc(1, sizeof *w);
        if (!w)
            return NULL;
        w->host = h;
        uv_timer_init(h->loop, &w->timer);
        w->timer.data = w;
        loom_handle_opened(h);
        loom_res_add(h, &w->res, out_res_close);
        lua_pushlightuserdata(L, w);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &OUT_KEY);
    }
    w->refs++;
    return w;
}

static void out_unref(alog_out_t *w) {
    w->refs--;
    out_free_if_done(w);
}

/* Keeps the two time strings of the current second. */
static void out_clock(alog_out_t *w, struct timespec *ts) {
    clock_gettime(CLOCK_REALTIME, ts);
    if (ts->tv_sec == w->sec && w->clf_time[0])
        return;
    struct tm tm;
    w->sec = ts->tv_sec;
    localtime_r(&w->sec, &tm);
    strftime(w->clf_time, sizeof w->clf_time, "%d/%b/%Y:%H:%M:%S %z", &tm);
    gmtime_r(&w->sec, &tm);
    strftime(w->iso_time, sizeof w->iso_time, "%Y-%m-%dT%H:%M:%S", &tm);
}

/* ---------------------------------------------------------------- one request's fields */

typedef struct {
    const char *method;
    const char *target;
    size_t target_len;
    const char *ua, *ref; /* NULL when absent */
    size_t ua_len, ref_len;
    char ip[64];
    int vmajor, vminor;
} fields_t;

static void header_value(loom_head_t *h, const char *name, const char **v, size_t *len) {
    int i = loom_head_find(h, name, strlen(name));
    *v = i < 0 ? NULL : LOOM_HEAD_VALUE(h, i);
    *len = i < 0 ? 0 : h->hdrs[i].value_len;
}

/* The peer's address as text ("-" when unknown). An IPv4 address is written here: libuv's
 * uv_ip_name goes through snprintf, which cost more than the rest of the line. */
static void peer_ip(loom_sock_t *sock, char *out, size_t cap) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (!loom_sock_is_tcp(sock)) { /* app:listen{ path }: req.remote's "unix:" */
        snprintf(out, cap, "unix:");
        return;
    }
    if (uv_tcp_getpeername(&sock->h.tcp, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, cap, "-");
        return;
    }
    if (ss.ss_family != AF_INET) {
        uv_ip_name((struct sockaddr *)&ss, out, cap);
        return;
    }
    const unsigned char *a = (const unsigned char *)&((struct sockaddr_in *)&ss)->sin_addr;
    char *o = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (v >= 100)
            *o++ = (char)('0' + v / 100);
        if (v >= 10)
            *o++ = (char)('0' + v / 10 % 10);
        *o++ = (char)('0' + v % 10);
        *o++ = i < 3 ? '.' : '\0';
    }
}

static void get_fields(loom_conn_t *c, fields_t *f) {
    loom_head_t *h = c->msg.head;
    peer_ip(&c->sock, f->ip, sizeof f->ip);
    f->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->msg.parser));
    f->target = h->data + h->url;
    f->target_len = h->url_len;
    header_value(h, "user-agent", &f->ua, &f->ua_len);
    header_value(h, "referer", &f->ref, &f->ref_len);
    f->vmajor = llhttp_get_http_major(&c->msg.parser);
    f->vminor = llhttp_get_http_minor(&c->msg.parser);
}

/* The start of a line: the request's fields, the clock, the scratch line emptied. */
static sb_t *line_start(alog_out_t *w, struct timespec *ts) {
    out_clock(w, ts);
    w->line.len = 0;
    w->line.bad = 0;
    return &w->line;
}

/* host - - [time] "METHOD target HTTP/x.y" status body-bytes "referer" "user-agent" */
static void line_combined(alog_out_t *w, const fields_t *f, unsigned status, uint64_t body) {
    struct timespec ts;
    sb_t *b = line_start(w, &ts);
    sb_str(b, f->ip);
    sb_str(b, " - - [");
    sb_str(b, w->clf_time);
    sb_str(b, "] \"");
    sb_str(b, f->method);
    sb_put(b, " ", 1);
    sb_escape_log(b, f->target, f->target_len, TARGET_MAX);
    sb_put(b, " HTTP/", 6);
    sb_u64(b, (uint64_t)f->vmajor);
    sb_put(b, ".", 1);
    sb_u64(b, (uint64_t)f->vminor);
    sb_put(b, "\" ", 2);
    sb_u64(b, status);
    sb_put(b, " ", 1);
    sb_u64(b, body);
    sb_put(b, " \"", 2);
    if (f->ref)
        sb_escape_log(b, f->ref, f->ref_len, FIELD_MAX);
    else
        sb_put(b, "-", 1);
    sb_put(b, "\" \"", 3);
    if (f->ua)
        sb_escape_log(b, f->ua, f->ua_len, FIELD_MAX);
    else
        sb_put(b, "-", 1);
    sb_put(b, "\"\n", 2);
    if (!b->bad)
        out_append(w, b->p, b->len);
}

static void json_field(sb_t *b, const char *name, const char *v, size_t len, size_t max) {
    sb_str(b, name);
    if (v)
        sb_json_string(b, v, len, max);
    else
        sb_put(b, "null", 4);
}

/* {"time":"...Z","remote":"...","method":"GET","path":"/x","protocol":"HTTP/1.1",
 *  "status":200,"bytes":13,"duration":0.000123,"referer":null,"ua":"curl/7.88.1"} */
static void line_json(alog_out_t *w, const fields_t *f, unsigned status, uint64_t body,
                      uint64_t ns) {
    struct timespec ts;
    sb_t *b = line_start(w, &ts);
    sb_str(b, "{\"time\":\"");
    sb_str(b, w->iso_time);
    sb_put(b, ".", 1);
    sb_padded(b, (uint64_t)ts.tv_nsec / 1000000, 3);
    sb_str(b, "Z\",\"remote\":\"");
    sb_str(b, f->ip);
    sb_str(b, "\",\"method\":");
    sb_json_string(b, f->method, strlen(f->method), FIELD_MAX);
    json_field(b, ",\"path\":", f->target, f->target_len, TARGET_MAX);
    sb_str(b, ",\"protocol\":\"HTTP/");
    sb_u64(b, (uint64_t)f->vmajor);
    sb_put(b, ".", 1);
    sb_u64(b, (uint64_t)f->vminor);
    sb_str(b, "\",\"status\":");
    sb_u64(b, status);
    sb_str(b, ",\"bytes\":");
    sb_u64(b, body);
    sb_str(b, ",\"duration\":");
    sb_secs(b, ns);
    json_field(b, ",\"referer\":", f->ref, f->ref_len, FIELD_MAX);
    json_field(b, ",\"ua\":", f->ua, f->ua_len, FIELD_MAX);
    sb_put(b, "}\n", 2);
    if (!b->bad)
        out_append(w, b->p, b->len);
}

/* ---------------------------------------------------------------- the Lua function */

/* An entry as recorded for the function: this, then the strings it counts. */
typedef struct {
    uint64_t bytes;
    double duration, time;
    uint32_t remote_len, method_len, target_len, ua_len, ref_len;
    uint16_t status;
    uint8_t vmajor, vminor, has_ua, has_ref;
} rec_t;

static void record(loom_obs_t *o, const fields_t *f, unsigned status, uint64_t body, uint64_t ns) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rec_t r = {body,
               (double)ns / 1e9,
               (double)ts.tv_sec + ts.tv_nsec / 1e9,
               (uint32_t)strlen(f->ip),
               (uint32_t)strlen(f->method),
               (uint32_t)f->target_len,
               (uint32_t)f->ua_len,
               (uint32_t)f->ref_len,
               status,
               (uint8_t)f->vmajor,
               (uint8_t)f->vminor,
               f->ua != NULL,
               f->ref != NULL};
    size_t n = sizeof r + r.remote_len + r.method_len + r.target_len + r.ua_len + r.ref_len;
    if (o->qlen + n > OUT_MAX)
        return; /* the function cannot keep up (it cannot: it runs in this loop) */
    if (o->qlen + n > o->qcap) {
        size_t cap = o->qcap ? o->qcap : 4096;
        while (cap < o->qlen + n)
            cap *= 2;
        char *p = realloc(o->q, cap);
        if (!p)
            return;
        o->q = p;
        o->qcap = cap;
    }
    char *p = o->q + o->qlen;
    memcpy(p, &r, sizeof r);
    p += sizeof r;
    memcpy(p, f->ip, r.remote_len);
    p += r.remote_len;
    memcpy(p, f->method, r.method_len);
    p += r.method_len;
    memcpy(p, f->target, r.target_len);
    p += r.target_len;
    if (f->ua)
        memcpy(p, f->ua, r.ua_len);
    p += r.ua_len;
    if (f->ref)
        memcpy(p, f->ref, r.ref_len);
    o->qlen += n;
    loom_sched_defer(o->host, &o->job);
}

static void set_str(lua_State *L, const char *k, const char **p, size_t len) {
    lua_pushlstring(L, *p, len);
    lua_setfield(L, -2, k);
    *p += len;
}

/* Pushes the entry at p as a table; returns the byte after it. */
static const char *push_entry(lua_State *L, const char *p) {
    rec_t r;
    memcpy(&r, p, sizeof r);
    p += sizeof r;
    lua_createtable(L, 0, 10);
    set_str(L, "remote", &p, r.remote_len);
    set_str(L, "method", &p, r.method_len);
    set_str(L, "path", &p, r.target_len);
    if (r.has_ua)
        set_str(L, "ua", &p, r.ua_len);
    if (r.has_ref)
        set_str(L, "referer", &p, r.ref_len);
    lua_pushinteger(L, r.status);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, (lua_Integer)r.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushnumber(L, r.duration);
    lua_setfield(L, -2, "duration");
    lua_pushnumber(L, r.time);
    lua_setfield(L, -2, "time");
    lua_pushfstring(L, "HTTP/%d.%d", (int)r.vmajor, (int)r.vminor);
    lua_setfield(L, -2, "protocol");
    return p;
}

/* An error of the function: to stderr, at most once per FN_ERROR_MS (a broken logger would
 * otherwise print a line per request); the ones left out are counted in the next. */
static void fn_error(loom_obs_t *o, lua_State *L) {
    uint64_t now = uv_now(o->host->loop);
    if (o->err_at && now - o->err_at < FN_ERROR_MS) {
        o->err_quiet++;
        return;
    }
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "loom: error in the access_log function: %s", msg ? msg : "(not a string)");
    if (o->err_quiet)
        fprintf(stderr, " (and %llu more since the last one shown)",
                (unsigned long long)o->err_quiet);
    fputc('\n', stderr);
    fflush(stderr);
    o->err_at = now ? now : 1;
    o->err_quiet = 0;
}

static void obs_destroy(loom_obs_t *o) {
    if (o->out)
        out_unref(o->out);
    free(o->q);
    free(o->slots);
    free(o);
}

/* The scheduler job: the function gets each entry recorded since the last run, in order,
 * in a protected call on the scheduler's thread (outside any task: it must not wait). */
static void run_entries(loom_t *h, loom_job_t *job) {
    loom_obs_t *o = (loom_obs_t *)((char *)job - offsetof(loom_obs_t, job));
    lua_State *L = h->sched.L;
    char *q = o->q;
    size_t qlen = o->qlen;
    o->q = NULL;
    o->qlen = o->qcap = 0;
    for (const char *p = q; p < q + qlen;) {
        if (o->fn_ref == LUA_NOREF)
            break;
        lua_rawgeti(L, LUA_REGISTRYINDEX, o->fn_ref);
        p = push_entry(L, p);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            fn_error(o, L);
            lua_pop(L, 1);
        }
    }
    free(q);
    if (o->dead)
        obs_destroy(o);
}

/* ---------------------------------------------------------------- metrics */

static const uint64_t bound_ns[LOOM_OBS_NBOUNDS] = {
    5000000,   10000000,  25000000,   50000000,   75000000,   100000000,  250000000,
    500000000, 750000000, 1000000000, 2500000000, 5000000000, 7500000000, 10000000000,
};
static const char *const bound_text[LOOM_OBS_NBOUNDS] = {
    "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25",
    "0.5",   "0.75", "1.0",   "2.5",  "5.0",   "7.5", "10.0",
};

/* The slot of key (inserted when new), or NULL without memory. */
static loom_obs_slot_t *slot_of(loom_obs_t *o, uint32_t key) {
    if (o->cap && o->slots[o->last].key == key)
        return &o->slots[o->last];
    if ((o->nslots + 1) * 2 > o->cap) {
        uint32_t cap = o->cap ? o->cap * 2 : 32;
        loom_obs_slot_t *s = calloc(cap, sizeof *s);
        if (!s)
            return NULL;
        for (uint32_t i = 0; i < o->cap; i++) {
            if (!o->slots[i].key)
                continue;
            uint32_t j = (o->slots[i].key * 2654435761u) & (cap - 1);
            while (s[j].key)
                j = (j + 1) & (cap - 1);
            s[j] = o->slots[i];
        }
        free(o->slots);
        o->slots = s;
        o->cap = cap;
    }
    uint32_t j = (key * 2654435761u) & (o->cap - 1);
    while (o->slots[j].key && o->slots[j].key != key)
        j = (j + 1) & (o->cap - 1);
    if (!o->slots[j].key) {
        o->slots[j].key = key;
        o->nslots++;
    }
    o->last = j;
    return &o->slots[j];
}

static void count(loom_obs_t *o, unsigned method, unsigned status, uint64_t sent, uint64_t ns) {
    uint32_t key = ((uint32_t)method << 10 | (status & 1023)) + 1;
    loom_obs_slot_t *s = slot_of(o, key);
    if (s)
        s->n++;
    int i = 0;
    while (i < LOOM_OBS_NBOUNDS && ns > bound_ns[i])
        i++;
    o->buckets[i]++;
    o->count++;
    o->sum_ns += ns;
    o->bytes_out += sent;
}

/* ---------------------------------------------------------------- the engine's hooks */

static void emit(loom_obs_t *o, const fields_t *f, unsigned status, uint64_t body, uint64_t ns) {
    if (o->format == LOOM_LOG_COMBINED)
        line_combined(o->out, f, status, body);
    else if (o->format == LOOM_LOG_JSON)
        line_json(o->out, f, status, body, ns);
    else if (o->format == LOOM_LOG_FUNCTION)
        record(o, f, status, body, ns);
}

void loom_obs_request_end(loom_conn_t *c) {
    loom_obs_t *o = c->srv->obs;
    if (!o || !c->msg.head)
        return;
    uint64_t body = c->sent > c->head_sent ? c->sent - c->head_sent : 0;
    uint64_t ns = c->t0 ? uv_hrtime() - c->t0 : 0;
    c->t0 = 0; /* a request refused before its head was whole has no start */
    if (o->metrics)
        count(o, llhttp_get_method(&c->msg.parser), c->status, c->sent, ns);
    if (o->format == LOOM_LOG_OFF)
        return;
    fields_t f;
    get_fields(c, &f);
    emit(o, &f, c->status, body, ns);
}

void loom_obs_h2_end(loom_server_t *srv, loom_sock_t *sock, const loom_obs_h2_t *r) {
    loom_obs_t *o = srv->obs;
    uint64_t ns = r->t0 ? uv_hrtime() - r->t0 : 0;
    char method[32];
    snprintf(method, sizeof method, "%.*s", (int)r->method_len, r->method);
    if (o->metrics) {
        unsigned num = 0; /* llhttp's number for it, as HTTP/1 requests are counted */
        for (unsigned i = 0; i < 64; i++)
            if (strcmp(llhttp_method_name((llhttp_method_t)i), method) == 0) {
                num = i;
                break;
            }
        count(o, num, r->status, r->body, ns);
    }
    if (o->format == LOOM_LOG_OFF)
        return;
    fields_t f = {method, r->target, r->target_len, r->ua, r->ref, r->ua_len, r->ref_len, "", 2, 0};
    peer_ip(sock, f.ip, sizeof f.ip);
    emit(o, &f, r->status, r->body, ns);
}

static int bad_access_log(lua_State *L, int idx) {
    return loom_opt_error(L, idx, "access_log",
                          "true, false, \"combined\", \"json\" or a function");
}

loom_obs_t *loom_obs_open(lua_State *L, int idx, loom_t *h) {
    int format = LOOM_LOG_OFF, ref = LUA_NOREF;
    int t = lua_getfield(L, idx, "access_log");
    if (t == LUA_TBOOLEAN) {
        format = lua_toboolean(L, -1) ? LOOM_LOG_COMBINED : LOOM_LOG_OFF;
    } else if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (strcmp(s, "combined") == 0)
            format = LOOM_LOG_COMBINED;
        else if (strcmp(s, "json") == 0)
            format = LOOM_LOG_JSON;
        else
            bad_access_log(L, idx);
    } else if (t == LUA_TFUNCTION) {
        format = LOOM_LOG_FUNCTION;
    } else if (t != LUA_TNIL) {
        bad_access_log(L, idx);
    }
    int metrics = loom_opt_boolean(L, idx, "metrics", 0);
    if (format == LOOM_LOG_OFF && !metrics) {
        lua_pop(L, 1);
        return NULL;
    }
    loom_obs_t *o = calloc(1, sizeof *o);
    if (!o)
        luaL_error(L, "out of memory");
    if (format == LOOM_LOG_FUNCTION)
        ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops it */
    else
        lua_pop(L, 1);
    o->host = h;
    o->format = format;
    o->metrics = metrics;
    o->fn_ref = ref;
    o->job.run = run_entries;
    if (format == LOOM_LOG_COMBINED || format == LOOM_LOG_JSON) {
        o->out = out_get(L, h);
        if (!o->out) {
            free(o);
            luaL_error(L, "out of memory");
        }
    }
    return o;
}

void loom_obs_release_refs(loom_obs_t *o, lua_State *L) {
    if (!o)
        return;
    luaL_unref(L, LUA_REGISTRYINDEX, o->fn_ref);
    o->fn_ref = LUA_NOREF;
}

void loom_obs_free(loom_obs_t *o) {
    if (!o)
        return;
    /* a queued job stays linked in the scheduler's queue: it frees this when it runs; at
     * teardown the queue is never run again */
    if (o->job.queued && !o->host->closing) {
        o->dead = 1;
        return;
    }
    obs_destroy(o);
}

/* ---------------------------------------------------------------- Lua API */

static void set_u64(lua_State *L, const char *k, uint64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* core.http_stats(server) -> table | nil (no metrics on that server, or it is gone):
 * {requests = {{method, status, count}, ...}, le = {"0.005", ..., "+Inf"},
 *  buckets = {cumulative counts, one per le}, sum (s), count, bytes_in, bytes_out,
 *  handler_errors, handler_timeouts, connections} */
static int l_http_stats(lua_State *L) {
    loom_server_t **box = luaL_checkudata(L, 1, "loom.server"); /* http_server.c's SERVER_MT */
    loom_server_t *srv = *box;
    loom_obs_t *o = srv ? srv->obs : NULL;
    if (!o || !o->metrics) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 12);
    lua_createtable(L, (int)o->nslots, 0);
    int n = 0;
    for (uint32_t i = 0; i < o->cap; i++) {
        uint32_t key = o->slots[i].key;
        if (!key)
            continue;
        key--;
        lua_createtable(L, 3, 0);
        lua_pushstring(L, llhttp_method_name((llhttp_method_t)(key >> 10)));
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, key & 1023);
        lua_rawseti(L, -2, 2);
        lua_pushinteger(L, (lua_Integer)o->slots[i].n);
        lua_rawseti(L, -2, 3);
        lua_rawseti(L, -2, ++n);
    }
    lua_setfield(L, -2, "requests");
    lua_createtable(L, LOOM_OBS_NBOUNDS + 1, 0);
    lua_createtable(L, LOOM_OBS_NBOUNDS + 1, 0);
    uint64_t cum = 0;
    for (int i = 0; i <= LOOM_OBS_NBOUNDS; i++) {
        cum += o->buckets[i];
        lua_pushstring(L, i < LOOM_OBS_NBOUNDS ? bound_text[i] : "+Inf");
        lua_rawseti(L, -3, i + 1);
        lua_pushinteger(L, (lua_Integer)cum);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -3, "buckets");
    lua_setfield(L, -2, "le");
    lua_pushnumber(L, (double)o->sum_ns / 1e9);
    lua_setfield(L, -2, "sum");
    set_u64(L, "count", o->count);
    set_u64(L, "bytes_in", o->bytes_in);
    set_u64(L, "bytes_out", o->bytes_out);
    set_u64(L, "handler_errors", o->handler_errors);
    set_u64(L, "handler_timeouts", o->handler_timeouts);
    set_u64(L, "connections", (uint64_t)srv->nconns);
    return 1;
}

/* core.task_count() -> the tasks core.live_tasks() would list, without handing them out
 * (a handed-out handler task is never recycled). */
static int l_task_count(lua_State *L) {
    loom_sched_t *s = &loom_host(L)->sched;
    lua_Integer n = 0;
    for (loom_task_t *t = s->live; t; t = t->live_next)
        if (t != s->current && t != s->main && t->ref != LUA_NOREF)
            n++;
    lua_pushinteger(L, n);
    return 1;
}

static const luaL_Reg obs_funcs[] = {
    {"http_stats", l_http_stats},
    {"task_count", l_task_count},
    {NULL, NULL},
};

int loom_open_access_log(lua_State *L) {
    luaL_setfuncs(L, obs_funcs, 0);
    return 0;
}
