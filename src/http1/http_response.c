/*
 * http_response.c - response heads and writes for the server: status lines, the Date value
 * made once a second, headers from a Lua table (validated: a name is a token, a value has
 * no CR, LF or NUL, so a handler cannot split a response), Content-Length or chunked
 * framing, and one gathered write per response through the connection's loom_sock (which
 * copies what the kernel does not take). The access log and the counters are access_log.c's:
 * loom_obs_request_end is called where an answer is complete. Knows nothing of parsing or
 * routing.
 *
 * What a handler gives is checked before a byte of it is sent, since a wrong answer would be
 * read as the start of the next one on a kept-alive connection: the status is 200 to 999
 * (an interim 1xx is the engine's: 100 Continue, and 101 through req:upgrade), a header
 * name is a token, a value holds no control character but tab, a streamed Content-Length
 * is digits that fit 64 bits. A whole answer's Content-Length is the body's length, whatever
 * the handler said; a streamed answer's is enforced by its writes (http_request.c) and by
 * its end, which closes the connection when the body came out short.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <lauxlib.h>
#include "http_server.h"
#include "access_log.h"
#include "addr.h"

int loom_http_parse_digits(const char *s, size_t n, uint64_t *out) {
    uint64_t v = 0;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

void loom_http_fault_body(const char *e, int status, char *body, size_t n) {
    const char *http = e ? strstr(e, "http: ") : NULL, *limit = e ? strstr(e, "limit: ") : NULL;
    const char *msg = http && (!limit || http < limit) ? http : limit;
    if (msg)
        snprintf(body, n, "%.*s", (int)strcspn(msg, "\n"), msg);
    else
        snprintf(body, n, "%s", loom_http_reason(status));
}

const char *loom_http_reason(int status) {
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 200   ? "Informational"
               : status < 300 ? "Success"
               : status < 400 ? "Redirection"
               : status < 500 ? "Client Error"
                              : "Server Error";
    }
}

/* ---------------------------------------------------------------- head buffer */

typedef struct {
    loom_server_t *srv;
    size_t len;
    int bad;         /* out of memory or an invalid header */
    const char *why; /* what was invalid, for the error or the log line */
} hb_t;

static void hb_fail(hb_t *b, const char *why) {
    b->bad = 1;
    if (!b->why)
        b->why = why;
}

/* Rarely taken: the buffer is kept between responses. */
static int hb_grow(hb_t *b, size_t n) {
    loom_server_t *srv = b->srv;
    size_t cap = srv->hcap ? srv->hcap * 2 : 1024;
    while (cap < b->len + n)
        cap *= 2;
    char *nb = realloc(srv->hbuf, cap);
    if (!nb) {
        hb_fail(b, "out of memory");
        return 0;
    }
    srv->hbuf = nb;
    srv->hcap = cap;
    return 1;
}

/* Inline: most pieces are short constants, which then copy without a call. */
static inline void hb_put(hb_t *b, const char *s, size_t n) {
    loom_server_t *srv = b->srv;
    if (b->len + n > srv->hcap && !hb_grow(b, n))
        return;
    memcpy(srv->hbuf + b->len, s, n);
    b->len += n;
}

static inline void hb_str(hb_t *b, const char *s) {
    hb_put(b, s, strlen(s));
}

/* Decimal digits without snprintf, which costs more than the rest of a small response. */
static void hb_uint(hb_t *b, unsigned long long v) {
    char tmp[20];
    size_t n = sizeof tmp;
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    hb_put(b, tmp + n, sizeof tmp - n);
}

static void date_refresh(loom_server_t *srv) {
    uint64_t sec = uv_now(srv->host->loop) / 1000;
    if (sec != srv->date_sec || srv->date_len == 0) {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        srv->date_len =
            strftime(srv->date, sizeof srv->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        srv->date_sec = sec;
    }
}

static void put_date(hb_t *b) {
    date_refresh(b->srv);
    hb_put(b, b->srv->date, b->srv->date_len);
}

const char *loom_server_date(loom_server_t *srv, size_t *len) {
    date_refresh(srv);
    *len = srv->date_len > 8 ? srv->date_len - 8 : 0; /* without "Date: " and the CRLF */
    return srv->date + 6;
}

static void status_line(hb_t *b, int status) {
    if (status == 200) {
        hb_put(b, "HTTP/1.1 200 OK\r\n", 17);
        return;
    }
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, "HTTP/1.1 %d %s\r\n", status, loom_http_reason(status));
    hb_put(b, tmp, (size_t)n);
}

/* RFC 9110 token characters, for header names. */
static int is_token(const char *s, size_t n) {
    static const char *const extra = "!#$%&'*+-.^_`|~";
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch && strchr(extra, ch))))
            return 0;
    }
    return 1;
}

/* RFC 9110 5.5: a field value is visible characters, obs-text, spaces and tabs. CR, LF and
 * NUL would split the answer; the other control characters are refused as well. */
static int safe_value(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

int loom_http_is_token(const char *s, size_t n) {
    return is_token(s, n);
}

int loom_http_safe_value(const char *s, size_t n) {
    return safe_value(s, n);
}

enum { H_CT = 1, H_CL = 2, H_CONN_CLOSE = 4, H_TE = 8, H_DATE = 16 };

static int name_is(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

static void put_field(hb_t *b, const char *name, size_t nl, const char *v, size_t vl) {
    if (!safe_value(v, vl)) {
        hb_fail(b, "invalid header value (a control character)");
        return;
    }
    hb_put(b, name, nl);
    hb_put(b, ": ", 2);
    hb_put(b, v, vl);
    hb_put(b, "\r\n", 2);
}

/* The Content-Length a stream declares, at idx of L: an integer, or a string of digits
 * (RFC 9110 8.6: 1*DIGIT) that fits in 64 bits. Returns 0 for anything else. */
static int parse_length(lua_State *L, int idx, uint64_t *out) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        int isint;
        lua_Integer v = lua_tointegerx(L, idx, &isint);
        *out = (uint64_t)v;
        return isint && v >= 0;
    }
    size_t n;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
    return s && loom_http_parse_digits(s, n, out);
}

/* The head of a {json = v} answer with nothing added (app.lua's JSON_HEADERS): C makes the
 * table and knows it by its registry slot, so put_headers writes its one line without
 * walking it (~800 instructions a request). app.lua hands it only to the engine. */
static const char json_head_key = 0;
static const char JSON_HEAD_LINE[] = "content-type: application/json\r\n";

/* core.resp_json_head() -> {["content-type"] = "application/json"}, the same table each time */
int loom_resp_json_head(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &json_head_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "application/json");
        lua_setfield(L, -2, "content-type");
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &json_head_key);
    }
    return 1;
}

/* Adds the headers of the table at `idx` of L; returns H_* flags for what it had. The
 * framing headers (Content-Length, Transfer-Encoding) are ours to write, except that a
 * streaming response may state its length: with `cl`, a Content-Length is checked, stored
 * there and written. */
static int put_headers(hb_t *b, lua_State *L, int idx, uint64_t *cl) {
    int flags = 0;
    if (!idx || lua_type(L, idx) != LUA_TTABLE)
        return 0;
    int json_head =
        lua_rawgetp(L, LUA_REGISTRYINDEX, &json_head_key) == LUA_TTABLE && lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    if (json_head) {
        hb_put(b, JSON_HEAD_LINE, sizeof JSON_HEAD_LINE - 1);
        return H_CT;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t nl, vl;
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
        if (!name || !is_token(name, nl)) {
            hb_fail(b, "invalid header name");
            lua_pop(L, 2);
            return flags;
        }
        if (name_is(name, nl, "date"))
            flags |= H_DATE; /* the handler's own Date goes out instead of ours (as Go) */
        if (name_is(name, nl, "content-length")) {
            flags |= H_CL;
            if (cl && !parse_length(L, -1, cl)) {
                hb_fail(b, "invalid content-length (digits only, below 2^64)");
                lua_pop(L, 2);
                return flags;
            }
            if (cl) {
                hb_put(b, "Content-Length: ", 16);
                hb_uint(b, *cl);
                hb_put(b, "\r\n", 2);
            }
        } else if (name_is(name, nl, "transfer-encoding")) {
            flags |= H_TE;
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            for (int i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
                int t = lua_type(L, -1);
                const char *v =
                    t == LUA_TSTRING || t == LUA_TNUMBER ? lua_tolstring(L, -1, &vl) : NULL;
                if (v)
                    put_field(b, name, nl, v, vl);
                else
                    hb_fail(b, "invalid header value (not a string)");
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        } else {
            if (name_is(name, nl, "content-type"))
                flags |= H_CT;
            int t = lua_type(L, -1);
            if (t != LUA_TSTRING && t != LUA_TNUMBER) {
                hb_fail(b, "invalid header value (not a string)");
                lua_pop(L, 2);
                return flags;
            }
            /* tolstring on a number key's value would confuse lua_next; copy first */
            lua_pushvalue(L, -1);
            const char *v = lua_tolstring(L, -1, &vl);
            if (name_is(name, nl, "connection")) {
                if (vl == 5 && strncasecmp(v, "close", 5) == 0)
                    flags |= H_CONN_CLOSE;
            } else {
                put_field(b, name, nl, v, vl);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return flags;
}

/* Expect: 100-continue went unanswered and the body is still to come: the client may send
 * it late or never, so what follows on the connection cannot be told apart from it. RFC
 * 9110 10.1.1: a server that answers "before reading the entire request content SHOULD
 * indicate whether it intends to close the connection". It does. */
static int body_in_doubt(loom_conn_t *c) {
    const llhttp_t *p = &c->msg.parser;
    return c->expect && !c->msg_done && ((p->flags & F_CHUNKED) || p->content_length > 0);
}

/* A body left unread that the server will not drain after the answer (chunked, or more than
 * LOOM_CONN_DRAIN_MAX to come): the connection closes after the answer, so the answer says
 * so (RFC 9112 9.6) rather than leave the client to find a kept-alive connection gone. */
static int body_undrained(loom_conn_t *c) {
    const llhttp_t *p = &c->msg.parser;
    return !c->msg_done && ((p->flags & F_CHUNKED) || p->content_length > LOOM_CONN_DRAIN_MAX);
}

static void put_connection(hb_t *b, loom_conn_t *c) {
    if (body_in_doubt(c) || body_undrained(c))
        c->keepalive = 0;
    if (!c->keepalive || c->srv->closing)
        hb_put(b, "Connection: close\r\n", 19);
    else if (c->http10)
        hb_put(b, "Connection: keep-alive\r\n", 24);
}

/* ---------------------------------------------------------------- writes */

/* The most a cork gathers: past it the gathered bytes go, and the write after them. */
#define CORK_MAX (64 * 1024)

/* Every byte of an answer leaves through here: the sock writes it (encrypted on HTTPS) and
 * copies what the kernel does not take at once. */
int loom_conn_write(loom_conn_t *c, uv_buf_t *bufs, int nbufs) {
    size_t total = 0;
    for (int i = 0; i < nbufs; i++)
        total += bufs[i].len;
    c->sent += total;
    if (c->sock.flags & LOOM_SOCK_CORKED) {
        loom_server_t *srv = c->srv;
        if (srv->cork_bytes + total > CORK_MAX)
            loom_conn_uncork(c); /* a big answer goes as it is, after what was gathered */
        else
            srv->cork_bytes += total;
    }
    return loom_sock_write(&c->sock, bufs, nbufs);
}

void loom_conn_uncork_now(loom_conn_t *c) {
    c->srv->cork_bytes = 0;
    loom_sock_uncork(&c->sock); /* a failure is kept by the sock, as any write's */
}

/* ---------------------------------------------------------------- access log */

/* Copies n bytes of s to out (cap bytes, NUL-terminated, cut there) as nginx writes a log
 * field: '"', '\\', control bytes and bytes from 0x7f as \xHH. */
static void log_escape(char *out, size_t cap, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            if (o + 1 >= cap)
                break;
            out[o++] = (char)ch;
        } else {
            if (o + 4 >= cap)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
}

const char *loom_conn_log_target(loom_conn_t *c, char *out, size_t cap) {
    loom_head_t *h = c->msg.head;
    if (!h)
        return "";
    log_escape(out, cap, h->data + h->url, h->url_len);
    return out;
}

/* ---------------------------------------------------------------- whole responses */

static int no_body_status(int status) {
    return status < 200 || status == 204 || status == 304;
}

#define SMALL_BODY 4096 /* copied behind the head */

/* Head + body in one write. `flags` are what the handler's headers had. */
static void send_whole(loom_conn_t *c, hb_t *b, int status, int flags, const char *body,
                       size_t blen) {
    if (flags & H_CONN_CLOSE)
        c->keepalive = 0;
    if (!no_body_status(status)) {
        hb_put(b, "Content-Length: ", 16);
        hb_uint(b, blen);
        hb_put(b, "\r\n", 2);
    } else
        blen = 0;
    put_connection(b, c);
    if (!(flags & H_DATE))
        put_date(b);
    hb_put(b, "\r\n", 2);
    c->head_sent = (uint32_t)b->len; /* the body's bytes are what sent adds past these */
    int nbufs = c->is_head || blen == 0 ? 1 : 2;
    if (nbufs == 2 && blen <= SMALL_BODY) {
        size_t head = b->len;
        hb_put(b, body, blen); /* one buffer: the kernel walks one iovec, not two */
        if (b->len == head + blen)
            nbufs = 1; /* else the copy failed (no memory) and the body goes as it is */
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->srv->hbuf, (unsigned)b->len),
                        uv_buf_init((char *)body, (unsigned)blen)};
    c->status = (uint16_t)status;
    c->resp = R_DONE;
    c->sent = 0;
    if (loom_conn_unparsed(c))
        loom_conn_cork(c); /* pipelined requests wait: their answers join this one */
    loom_conn_write(c, bufs, nbufs);
    loom_obs_request_end(c);
}

void loom_conn_respond_simple(loom_conn_t *c, int status, const char *body, int close) {
    hb_t b = {c->srv, 0, 0, NULL};
    if (close) {
        c->keepalive = 0;
        if (c->state != C_HANDLER) { /* a parse error or a timeout: no handler will finish it */
            c->state = C_HANDLER;
            c->parse_paused = 1;
        }
    }
    status_line(&b, status);
    hb_str(&b, "Content-Type: text/plain; charset=utf-8\r\n");
    send_whole(c, &b, status, 0, body, strlen(body));
    loom_conn_request_done(c);
}

/* Results: a string (200 text/plain), nothing (204), or status, headers, body. */
void loom_conn_respond_results(loom_conn_t *c, lua_State *L, int nres) {
    if (c->fail_status) {
        loom_conn_respond_simple(c, c->fail_status, loom_http_reason(c->fail_status), 1);
        return;
    }
    hb_t b = {c->srv, 0, 0, NULL};
    size_t blen = 0;
    const char *body = NULL;
    int status = 200, flags = 0;
    if (nres == 1 && lua_type(L, 1) == LUA_TSTRING) {
        body = lua_tolstring(L, 1, &blen);
        status_line(&b, 200);
        hb_str(&b, "Content-Type: text/plain; charset=utf-8\r\n");
    } else if (nres == 0 || lua_isnil(L, 1)) {
        status = 204;
        status_line(&b, 204);
    } else {
        int isint;
        lua_Integer st = lua_tointegerx(L, 1, &isint);
        /* 1xx are interim: sent as the answer, the client would wait for another */
        if (!isint || st < 200 || st > 999) {
            hb_fail(&b, "invalid status (an integer from 200 to 999)");
        } else {
            status = (int)st;
            status_line(&b, status);
            flags = put_headers(&b, L, nres >= 2 ? 2 : 0, NULL);
            if (nres >= 3 && lua_type(L, 3) == LUA_TSTRING)
                body = lua_tolstring(L, 3, &blen);
        }
    }
    if (b.bad) {
        char target[1024];
        fprintf(stderr, "loom: handler for %s %s returned an invalid response: %s\n",
                llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->msg.parser)),
                loom_conn_log_target(c, target, sizeof target), b.why);
        fflush(stderr);
        loom_conn_respond_simple(c, 500, "Internal Server Error", 0);
        return;
    }
    send_whole(c, &b, status, flags, body ? body : "", blen);
}

int loom_conn_respond_body(loom_conn_t *c, lua_State *L, int status, int hidx, const char *body,
                           size_t blen) {
    hb_t b = {c->srv, 0, 0, NULL};
    if (c->fail_status || c->resp != R_NONE || status < 200 || status > 999)
        return -1; /* left to loom_conn_respond_results, which answers or logs these */
    status_line(&b, status);
    int flags = put_headers(&b, L, hidx, NULL);
    if (b.bad)
        return -1;
    send_whole(c, &b, status, flags, body, blen);
    return 0;
}

int loom_conn_respond_json(loom_conn_t *c, int status, const char *body, size_t blen) {
    hb_t b = {c->srv, 0, 0, NULL};
    if (c->fail_status || c->resp != R_NONE || status < 200 || status > 999)
        return -1;
    status_line(&b, status);
    hb_put(&b, JSON_HEAD_LINE, sizeof JSON_HEAD_LINE - 1);
    send_whole(c, &b, status, H_CT, body, blen);
    return 0;
}

/* ---------------------------------------------------------------- streaming */

int loom_conn_stream_start(loom_conn_t *c, lua_State *L, int status, int hidx, const char **why) {
    hb_t b = {c->srv, 0, 0, NULL};
    uint64_t cl = 0;
    status_line(&b, status);
    int flags = put_headers(&b, L, hidx, &cl);
    if (b.bad) {
        *why = b.why;
        return -1;
    }
    if (flags & H_CONN_CLOSE)
        c->keepalive = 0;
    if (!(flags & H_CT))
        hb_str(&b, "Content-Type: application/octet-stream\r\n");
    c->chunked_out = 0;
    /* a stated length is what the writes may send, and must send (loom_conn_stream_end) */
    c->out_sized = (flags & H_CL) || no_body_status(status);
    c->out_left = no_body_status(status) ? 0 : cl;
    if (!c->out_sized) {
        if (c->http10)
            c->keepalive = 0; /* the end of the connection ends the body */
        else {
            hb_str(&b, "Transfer-Encoding: chunked\r\n");
            c->chunked_out = 1;
        }
    }
    put_connection(&b, c);
    if (!(flags & H_DATE))
        put_date(&b);
    hb_put(&b, "\r\n", 2);
    c->head_sent = (uint32_t)b.len;
    uv_buf_t buf = uv_buf_init(c->srv->hbuf, (unsigned)b.len);
    c->status = (uint16_t)status;
    c->resp = R_STREAM;
    c->sent = 0;
    loom_conn_cork(c); /* a head and a short body written in this turn leave together */
    return loom_conn_write(c, &buf, 1);
}

void loom_conn_stream_end(loom_conn_t *c) {
    if (c->chunked_out && !c->is_head) {
        uv_buf_t buf = uv_buf_init((char *)"0\r\n\r\n", 5);
        loom_conn_write(c, &buf, 1);
    } else if (c->out_sized && c->out_left > 0 && !c->is_head) {
        /* shorter than its Content-Length (a file that shrank as it was sent): the client
         * would take the next answer for the rest, so the connection's end tells it */
        c->keepalive = 0;
    }
    c->resp = R_DONE;
    loom_obs_request_end(c);
}

const char *loom_conn_head_101(loom_conn_t *c, lua_State *L, int hidx, size_t *len) {
    hb_t b = {c->srv, 0, 0, NULL};
    status_line(&b, 101);
    put_headers(&b, L, hidx, NULL);
    /* put_headers leaves Connection to the engine; a 101 must say it (RFC 9110 7.8:
     * "the Upgrade header field ... MUST also send a Connection header field containing
     * the upgrade connection option"; browsers refuse a websocket handshake without it) */
    hb_put(&b, "Connection: Upgrade\r\n\r\n", 23);
    if (b.bad)
        return NULL;
    c->status = 101;
    c->head_sent = 0;
    loom_conn_uncork(c); /* answers to the requests before it go before the socket moves */
    loom_obs_request_end(c);
    *len = b.len;
    return c->srv->hbuf;
}

void loom_conn_send_continue(loom_conn_t *c) {
    if (!c->expect || c->resp != R_NONE)
        return;
    c->expect = 0;
    uv_buf_t buf = uv_buf_init((char *)"HTTP/1.1 100 Continue\r\n\r\n", 25);
    uint64_t sent = c->sent;
    loom_conn_write(c, &buf, 1);
    c->sent = sent;
}
