/*
 * http_request.c - the Lua side of a server request: the arguments its table is made of
 * (a box, the method, the path, the version; lua/loom/app.lua builds the table and
 * lua/loom/request.lua computes the rest lazily through the functions here), reading the
 * body whole or piece by piece, and streaming responses.
 *
 * The table holds a box that points at the connection while the request lasts; when it
 * ends the box is emptied, so a request kept after its handler returned cannot reach a
 * connection that has moved on or been freed. Waits park with the box as their data.
 */
#include <stdio.h>
#include <ctype.h>
#include <string.h>
#include <lauxlib.h>
#include "http_server.h"
#include "addr.h"
#include "fail.h"
#include "json.h"
#include "stream.h"
#include <unistd.h>

/* ---------------------------------------------------------------- the request table */

/* Pushes the path of a request target: of the origin form "/a/b?q" as it is; of the
 * absolute form "http://host/a/b?q", which RFC 9112 3.2.2 says a server MUST accept (a
 * proxy-minded client sends it), the part after the authority, or "/" when there is none. */
static void push_path(lua_State *L, const char *url, size_t len) {
    const char *end = url + len, *p = url;
    size_t at, alen;
    if (len > 0 && *url != '/' && loom_http_target_authority(url, len, &at, &alen)) {
        p = url + at + alen;
        if (p == end || *p != '/') {
            lua_pushliteral(L, "/");
            return;
        }
    }
    const char *q = p;
    while (q < end && *q != '?' && *q != '#')
        q++;
    lua_pushlstring(L, p, (size_t)(q - p));
}

/* Pushes the entry function's arguments: an empty request table with its metatable, the
 * box, the method and the path. lua/loom/app.lua stores the last three in the table: field
 * stores in Lua cost less than through the C API, and setmetatable less here than in Lua.
 * Returns 4. */
int loom_conn_push_request(lua_State *L, loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    loom_head_t *h = c->msg.head;
    /* room for 8 fields: method, path and _box, and what a route with parameters adds
     * (params, target, query): one table, never rehashed on the way */
    lua_createtable(L, 0, 8);
    if (srv->reqmt_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, srv->reqmt_ref);
        lua_setmetatable(L, -2);
    }
    loom_reqbox_t *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->c = c;
    box->gone = 0;
    box->http10 = c->http10;
    box->h2 = NULL;
    box->tlen = 0;
    c->box = box;
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->boxmt_ref);
    lua_setmetatable(L, -2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->methods_ref);
    lua_rawgeti(L, -1, llhttp_get_method(&c->msg.parser));
    lua_replace(L, -2); /* a copy and a pop: cheaper than lua_remove's rotation */
    push_path(L, h->data + h->url, h->url_len);
    return 4;
}

void loom_conn_detach_request(loom_conn_t *c) {
    if (c->box) {
        c->box->c = NULL;
        c->box->gone = c->state == C_CLOSING;
        c->box = NULL;
    }
    if (c->waiter)
        loom_wake(c->waiter);
}

static loom_conn_t *box_conn(lua_State *L, loom_reqbox_t *box) {
    if (!box->c)
        luaL_error(L, box->gone ? "the request's connection is closed"
                                : "the request is finished (its handler has returned)");
    return box->c;
}

/* The request's box; an HTTP/2 stream's request goes to h2_server.c (the `return`). */
#define BOX_OR_H2(L, box, op)                                                                      \
    loom_reqbox_t *box = luaL_checkudata(L, 1, REQBOX_MT);                                         \
    if (box->h2)                                                                                   \
    return loom_h2srv_req(L, box, op)

/* The connection closed under a running handler (the client left, srv:close's grace ran
 * out): body reads and streaming writes report that as a failure, as they do when it
 * happens while they wait, so a streaming loop ends on its result instead of raising. */
static int conn_gone(const loom_reqbox_t *box) {
    return !box->c && box->gone;
}

/* core.req_target(box) -> the request target as sent, e.g. "/a%20b?x=1" */
static int req_target(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_TARGET);
    if (!box->c && box->tlen) { /* over, but req.query kept it */
        lua_pushlstring(L, box->target, box->tlen);
        return 1;
    }
    loom_head_t *h = box_conn(L, box)->msg.head;
    lua_pushlstring(L, h->data + h->url, h->url_len);
    return 1;
}

/* core.req_headers(box) -> {lowercase name = value}; repeats joined with ", ". With an
 * absolute-form target, host is the target's authority: RFC 9112 3.2.2, "the origin server
 * MUST ignore the received Host header field (if any) and instead use the host information
 * of the request-target" (the parser has checked both). */
static int req_headers(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_HEADERS);
    loom_head_t *h = box_conn(L, box)->msg.head;
    size_t at, alen;
    lua_createtable(L, 0, h->nhdrs);
    for (int i = 0; i < h->nhdrs; i++) {
        lua_pushlstring(L, LOOM_HEAD_NAME(h, i), h->hdrs[i].name_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) { /* name old */
            int cookie = h->hdrs[i].name_len == 6 && memcmp(LOOM_HEAD_NAME(h, i), "cookie", 6) == 0;
            lua_pushstring(L, cookie ? "; " : ", ");
            lua_pushlstring(L, LOOM_HEAD_VALUE(h, i), h->hdrs[i].value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, LOOM_HEAD_VALUE(h, i), h->hdrs[i].value_len);
        }
        lua_rawset(L, -3);
    }
    const char *url = h->data + h->url;
    if (h->url_len > 0 && *url != '/' && loom_http_target_authority(url, h->url_len, &at, &alen)) {
        lua_pushlstring(L, url + at, alen);
        lua_setfield(L, -2, "host");
    }
    return 1;
}

/* core.req_closing(box) -> true once the server has begun to close (srv:close), or the
 * request is over; a long-running handler (a stream) polls it to end in good order */
static int req_closing(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_CLOSING);
    lua_pushboolean(L, !box->c || box->c->srv->closing);
    return 1;
}

/* core.req_version(box) -> "1.0" | "1.1"; also once the request is finished */
static int req_version(lua_State *L) {
    loom_reqbox_t *box = luaL_checkudata(L, 1, REQBOX_MT);
    lua_pushstring(L, box->http10 == 2 ? "2" : box->http10 ? "1.0" : "1.1");
    return 1;
}

/* core.req_peer(box) -> ip, port; "unix:" (as nginx's $remote_addr) for a unix-domain
 * peer, which has no address worth the name */
static int req_peer(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_PEER);
    return loom_conn_push_peer(L, box_conn(L, box));
}

int loom_conn_push_peer(lua_State *L, loom_conn_t *c) {
    char ip[64];
    int port, v6;
    if (!loom_sock_is_tcp(&c->sock)) {
        lua_pushliteral(L, "unix:");
        return 1;
    }
    if (loom_addr_peer(&c->sock.h.tcp, ip, sizeof ip, &port, &v6) != 0)
        return 0;
    lua_pushstring(L, ip);
    lua_pushinteger(L, port);
    return 2;
}

/* ---------------------------------------------------------------- the body */

enum { WANT_WHOLE, WANT_CHUNK };

static int body_failed(loom_conn_t *c) {
    return c->fail_status || (c->eof && !c->msg_done) || c->state == C_CLOSING;
}

static int body_ready(loom_conn_t *c, int want) {
    if (c->msg_done || body_failed(c))
        return 1;
    return want == WANT_CHUNK && loom_conn_body_len(c) > 0;
}

void loom_conn_body_event(loom_conn_t *c) {
    if (!c->waiter || !c->waiting_body)
        return;
    if (body_ready(c, c->chunk_mode ? WANT_CHUNK : WANT_WHOLE))
        loom_wake(c->waiter);
    else /* bytes came: body_timeout counts from the latest */
        loom_task_extend(c->waiter, c->srv->body_timeout);
}

static int push_body_error(lua_State *L, loom_conn_t *c) {
    if (c->fail_status == 413)
        return loom_fail(L, "limit", "request body larger than max_body (%d bytes)",
                         (int)c->srv->max_body);
    if (c->fail_status)
        return loom_fail(L, "http", "malformed request body");
    return loom_fail(L, "closed", "the client closed the connection before the body was complete");
}

/* Pushes what a finished body wait gives. */
static int push_body(lua_State *L, loom_conn_t *c, int want) {
    if (c->fail_status || (body_failed(c) && !(want == WANT_CHUNK && loom_conn_body_len(c) > 0)))
        return push_body_error(L, c);
    if (want == WANT_WHOLE) {
        lua_pushlstring(L, loom_conn_body_data(c), loom_conn_body_len(c));
        return 1;
    }
    if (loom_conn_body_len(c) == 0) { /* the end */
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, loom_conn_body_data(c), loom_conn_body_len(c));
    loom_conn_body_taken(c);
    loom_conn_start_reading(c);
    return 1;
}

static int body_build(lua_State *L, void *ud, int reason) {
    loom_reqbox_t *box = ud;
    if (!box->c)
        return loom_fail(L, "closed", "the request is finished");
    box->c->waiter = NULL;
    if (reason == LOOM_WAKE_TIMEOUT) {
        /* the rest of the body may still come: the connection cannot be reused */
        box->c->fail_status = 408;
        box->c->keepalive = 0;
        char secs[32];
        snprintf(secs, sizeof secs, "%g", box->c->srv->body_timeout);
        return loom_fail(L, "timeout", "request body (no bytes for %s s)", secs);
    }
    return push_body(L, box->c, box->c->chunk_mode ? WANT_CHUNK : WANT_WHOLE);
}

static void body_abort(void *ud) {
    loom_reqbox_t *box = ud;
    if (box->c)
        box->c->waiter = NULL;
}

static int read_body(lua_State *L, loom_reqbox_t *box, int want, const char *fname) {
    if (conn_gone(box))
        return loom_fail(L, "closed", "the connection is closed");
    loom_conn_t *c = box_conn(L, box);
    if (c->waiter)
        return luaL_error(L, "%s: another task is already reading this request's body", fname);
    if (want == WANT_WHOLE && c->chunk_mode)
        return luaL_error(L, "%s: the body is being read with req:chunks()", fname);
    c->chunk_mode = want == WANT_CHUNK;
    if (!c->body_wanted && !c->msg_done) {
        c->body_wanted = 1;
        loom_conn_send_continue(c);
        loom_conn_resume_parse(c);
    }
    if (body_ready(c, want))
        return push_body(L, c, want);
    loom_task_t *t = loom_task_self(L, fname);
    c->waiter = t;
    c->waiting_body = 1;
    lua_settop(L, 1);
    return loom_park(L, t, c->srv->body_timeout, body_build, body_abort, box);
}

/* core.req_body(box) -> the whole body | nil, err */
static int req_body(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_BODY);
    return read_body(L, box, WANT_WHOLE, "text");
}

/* core.req_chunk(box) -> the next piece of the body, nil at its end | nil, err */
static int req_chunk(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_CHUNK);
    return read_body(L, box, WANT_CHUNK, "chunks");
}

/* ---------------------------------------------------------------- streaming responses */

/* core.req_stream(box, status, headers) -> true | nil, err */
static int req_stream(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_STREAM);
    if (conn_gone(box))
        return loom_fail(L, "closed", "the client has gone");
    loom_conn_t *c = box_conn(L, box);
    lua_Integer status = luaL_checkinteger(L, 2);
    /* a 1xx is interim: sent as the answer, the client would wait for another */
    luaL_argcheck(L, status >= 200 && status <= 999, 2, "invalid status (200 to 999)");
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    if (c->resp != R_NONE)
        return luaL_error(L, "stream: the response has already started");
    const char *why = "invalid header";
    if (loom_conn_stream_start(c, L, (int)status, lua_istable(L, 3) ? 3 : 0, &why) != 0) {
        if (c->resp != R_STREAM)
            return luaL_error(L, "stream: %s", why);
        return loom_fail(L, "closed", "the client has gone");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int write_build(lua_State *L, void *ud, int reason) {
    loom_reqbox_t *box = ud;
    if (!box->c || box->c->state == C_CLOSING)
        return loom_fail(L, "closed", "the client has gone");
    box->c->waiter = NULL;
    if (reason == LOOM_WAKE_TIMEOUT) { /* a client that stopped reading: let it go */
        char secs[32];
        snprintf(secs, sizeof secs, "%g", box->c->srv->send_timeout);
        loom_conn_close(box->c);
        return loom_fail(L, "timeout", "the client read nothing for %s s", secs);
    }
    if (loom_sock_error(&box->c->sock))
        return loom_fail(L, "closed", "%s", uv_strerror(loom_sock_error(&box->c->sock)));
    lua_pushboolean(L, 1);
    return 1;
}

/* core.req_write(box, data) -> true once the kernel has it | nil, err */
static int req_write(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_WRITE);
    if (conn_gone(box))
        return loom_fail(L, "closed", "the client has gone");
    loom_conn_t *c = box_conn(L, box);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (c->resp != R_STREAM)
        return luaL_error(L, "write: no streaming response was started (use req:stream)");
    if (c->waiter)
        return luaL_error(L, "write: another task is already writing this response");
    if (len == 0 || c->is_head) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (c->out_sized) { /* a Content-Length (or a status without a body) bounds the body */
        if (len > c->out_left) {
            /* nothing of it is sent (as Go's ErrContentLength): the client would read the
             * excess as the next answer; the body ends short, so the connection closes */
            c->out_left = 0;
            c->keepalive = 0;
            if (c->status == 204 || c->status == 304)
                return loom_fail(L, "limit", "a %d response has no body", c->status);
            return loom_fail(L, "limit", "write of %I bytes past the response's content-length",
                             (lua_Integer)len);
        }
        c->out_left -= len;
    }
    char size[24];
    uv_buf_t bufs[3];
    int n = 0;
    if (c->chunked_out) {
        bufs[n++] = uv_buf_init(size, (unsigned)snprintf(size, sizeof size, "%zx\r\n", len));
        bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
        bufs[n++] = uv_buf_init((char *)"\r\n", 2);
    } else {
        bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    }
    int rc = loom_conn_write(c, bufs, n);
    if (rc < 0)
        return loom_fail_uv(L, "closed", rc, NULL);
    if (loom_sock_pending(&c->sock) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    loom_task_t *t = loom_task_self(L, "write");
    c->waiter = t;
    c->waiting_body = 0;
    lua_settop(L, 1);
    return loom_park(L, t, c->srv->send_timeout, write_build, body_abort, box);
}

/* ---------------------------------------------------------------- upgrades */

/* core.req_upgrade(box, headers) -> stream | nil, err. Answers 101 with the headers and
 * hands the connection's sock over to a stream (loom_stream_adopt): the bytes that followed
 * the request head and, on HTTPS, the TLS session go along. The connection leaves the
 * server; its struct stays as the sock's shell until the stream closes it. */
static int req_upgrade(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_UPGRADE);
    loom_conn_t *c = box_conn(L, box);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (c->resp != R_NONE)
        return luaL_error(L, "upgrade: the response has already started");
    size_t hlen;
    const char *head = loom_conn_head_101(c, L, 2, &hlen);
    if (!head)
        return luaL_error(L, "upgrade: invalid header name or value");
    loom_conn_keep_lent(c); /* the bytes after the head go along, from `in` */
    loom_stream_t *s = loom_stream_adopt(L, c->srv->host, &c->sock, c->in, c->in_len);
    if (!s)
        return loom_fail(L, "closed", "cannot take over the connection");
    c->in_len = 0;
    c->resp = R_DONE;
    c->keepalive = 0;
    loom_conn_leave(c);
    uv_buf_t buf = uv_buf_init((char *)head, (unsigned)hlen);
    int rc = loom_stream_send(s, &buf, 1);
    if (rc < 0) {
        loom_stream_close(s);
        return loom_fail_uv(L, "closed", rc, NULL);
    }
    return 1;
}

/* core.req_fault(box, status): the body was found at fault (malformed multipart, too many
 * parts, a form of an unsupported type): if the handler lets the error through, it is
 * answered `status` with the error's text instead of 500, and the connection closes. A
 * handler that catches the error answers as it likes. */
static int req_fault(lua_State *L) {
    BOX_OR_H2(L, box, LOOM_H2OP_FAULT);
    lua_Integer status = luaL_checkinteger(L, 2);
    luaL_argcheck(L, status >= 400 && status <= 599, 2, "a 4xx or 5xx status expected");
    if (box->c) /* a request already over has no answer left to choose */
        box->c->fault_status = (uint16_t)status;
    return 0;
}

static int hexval(char c) {
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Pushes s[0, n) with url.decode_component's meaning: '+' is a space, "%XX" the byte XX,
 * a malformed escape left as it is. One pass: a '+' never becomes part of an escape. */
static void push_component(lua_State *L, const char *s, size_t n) {
    size_t i = 0;
    while (i < n && s[i] != '%' && s[i] != '+')
        i++;
    if (i == n) {
        lua_pushlstring(L, s, n);
        return;
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n);
    memcpy(out, s, i);
    size_t o = i;
    for (; i < n; i++) {
        char ch = s[i];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
                   isxdigit((unsigned char)s[i + 2])) {
            ch = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        }
        out[o++] = ch;
    }
    luaL_pushresultsize(&b, o);
}

/* The target of the request table at index 1, for its query: req.target when it has one
 * (set, or asked for before: left on the stack), else the box's. What req.query_all reads
 * after the handler returned must stay: an HTTP/1 target of up to 47 bytes is copied into
 * the box (req.target reads it there once the request is over), a longer one or HTTP/2's
 * is pushed and stored as req.target. The keys "target" and "_box" and the box's
 * metatable are at upvalues up_target, up_target + 1 and up_target + 2. */
static const char *get_target(lua_State *L, int up_target, size_t *len) {
    int up_box = up_target + 1, up_mt = up_target + 2;
    lua_pushvalue(L, lua_upvalueindex(up_target));
    if (lua_rawget(L, 1) == LUA_TSTRING)
        return lua_tolstring(L, -1, len);
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(up_box));
    lua_rawget(L, 1);
    /* the box's metatable kept as an upvalue: luaL_checkudata looks it up by name in the
     * registry, ~360 instructions a request on this path */
    int top = lua_gettop(L);
    loom_reqbox_t *box = lua_touserdata(L, -1);
    if (!box || !lua_getmetatable(L, -1) || !lua_rawequal(L, -1, lua_upvalueindex(up_mt)))
        box = luaL_checkudata(L, top, REQBOX_MT); /* raises, naming the box */
    lua_settop(L, top - 1);                       /* req._box keeps the box */
    if (box->h2) {
        loom_h2srv_req(L, box, LOOM_H2OP_TARGET);
    } else {
        loom_head_t *h = box_conn(L, box)->msg.head;
        if (h->url_len <= sizeof box->target) { /* a copy costs less than a string */
            memcpy(box->target, h->data + h->url, h->url_len);
            box->tlen = (unsigned char)h->url_len;
            *len = box->tlen;
            return box->target;
        }
        lua_pushlstring(L, h->data + h->url, h->url_len);
    }
    lua_pushvalue(L, lua_upvalueindex(up_target));
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return lua_tolstring(L, -1, len);
}

/* Pushes {key = value} for the query of target t: what url.parse_query's first table holds
 * for the query string (after the first '?', cut at a '#'): pairs split on '&', a key up
 * to the first '=', both decoded, an empty key skipped, a repeated one keeping its last
 * value. */
static void push_query(lua_State *L, const char *t, size_t len) {
    const char *q = memchr(t, '?', len);
    lua_createtable(L, 0, 2);
    if (!q)
        return;
    q++;
    const char *end = t + len, *hash = memchr(q, '#', (size_t)(end - q));
    if (hash)
        end = hash;
    for (;;) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *seg_end = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(seg_end - q));
        const char *k_end = eq ? eq : seg_end;
        if (k_end > q) { /* a key decodes to "" only when it is "" */
            push_component(L, q, (size_t)(k_end - q));
            const char *v = eq ? eq + 1 : seg_end;
            push_component(L, v, (size_t)(seg_end - v));
            lua_rawset(L, -3);
        }
        if (!amp)
            return;
        q = amp + 1;
    }
}

/* core.req_query(target or req) -> {key = value}: req.query (lua/loom/request.lua), the
 * query of a target, or of a request's (get_target). In C: one call where Lua took a
 * find, a sub, a gmatch closure and two finds a pair. */
static int req_query(lua_State *L) {
    size_t len;
    const char *t;
    if (lua_type(L, 1) != LUA_TSTRING) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
        t = get_target(L, 1, &len);
    } else {
        t = lua_tolstring(L, 1, &len);
    }
    push_query(L, t, len);
    return 1;
}

/* The connection of the request table at index 1 (its _box, known by the metatable kept as
 * upvalue 6) when it is HTTP/1's and open, else NULL; the stack as it was. */
static loom_conn_t *open_conn(lua_State *L) {
    int top = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(5)); /* "_box" */
    lua_rawget(L, 1);
    loom_reqbox_t *box = lua_touserdata(L, -1);
    if (!box || !lua_getmetatable(L, -1) || !lua_rawequal(L, -1, lua_upvalueindex(6)))
        box = NULL;
    lua_settop(L, top);
    loom_conn_t *c = box && !box->h2 ? box->c : NULL;
    return c && c->state != C_CLOSING ? c : NULL;
}

/* Sends a {json = v} answer (or {json = v, status = n}, n an integer from 200 to 999) at
 * once when C can: an HTTP/1 request whose answer is still to give, a table without a
 * metatable or another key, and a v loom_json_small takes. The JSON is written from the C
 * stack with the shared head's line, as file:respond writes a small file: no string for
 * the body, no results for the engine to read. What app.lua's emit_other would answer,
 * without its field tests, json.encode's Lua call, the pcall and cjson's own set-up.
 * Whether it was sent; the stack as it was. */
static int json_answer(lua_State *L) {
    loom_conn_t *c = open_conn(L);
    if (!c || lua_getmetatable(L, 2))
        return 0;
    int top = lua_gettop(L), json = 0, status = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (!json && lua_rawequal(L, -2, lua_upvalueindex(3))) {
            json = lua_gettop(L);
            lua_pushnil(L); /* the value stays below a copy of the key */
            lua_copy(L, -3, -1);
            continue;
        }
        if (status || !lua_rawequal(L, -2, lua_upvalueindex(4)) || !lua_isinteger(L, -1)) {
            lua_settop(L, top);
            return 0;
        }
        status = lua_gettop(L);
        lua_pushnil(L);
        lua_copy(L, -3, -1);
    }
    lua_Integer st = status ? lua_tointeger(L, status) : 200;
    char buf[LOOM_JSON_SMALL];
    size_t n = json && st >= 200 && st <= 999 ? loom_json_small(L, json, buf) : 0;
    lua_settop(L, top);
    return n != 0 && loom_conn_respond_json(c, (int)st, buf, n) == 0;
}

/* core.req_plain(req, res) -> true when res is an answer C sends as it is: a string, with
 * no req.response_headers to add. app.lua asks this once per request; one C call costs
 * less than type() and rawget() (the keys are upvalues: no string to intern). Otherwise
 * false, req._streamed, req.response_headers and whether res is a table: what emit looks
 * at next, without three more calls. core.req_plain_json (upvalue 7 true; for an app
 * without compress, lua-cjson there) is also true when res is a {json = v} table
 * json_answer has sent, with neither req._streamed nor req.response_headers (the engine
 * then reads no results). */
static int req_plain(lua_State *L) {
    int is_req = lua_type(L, 1) == LUA_TTABLE;
    int res_type = lua_type(L, 2);
    if (res_type == LUA_TSTRING && is_req) {
        lua_pushvalue(L, lua_upvalueindex(1));
        if (lua_rawget(L, 1) == LUA_TNIL) {
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_settop(L, 2);
    lua_pushboolean(L, 0);
    if (!is_req) {
        lua_pushnil(L);
        lua_pushnil(L);
    } else {
        lua_pushvalue(L, lua_upvalueindex(2));
        lua_rawget(L, 1);
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_rawget(L, 1);
        if (res_type == LUA_TTABLE && lua_toboolean(L, lua_upvalueindex(7)) && lua_isnil(L, -1) &&
            lua_isnil(L, -2) && json_answer(L)) {
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, res_type == LUA_TTABLE);
    return 4;
}

static const luaL_Reg request_funcs[] = {
    {"req_fault", req_fault},     {"req_upgrade", req_upgrade}, {"req_target", req_target},
    {"req_headers", req_headers}, {"req_peer", req_peer},       {"req_body", req_body},
    {"req_chunk", req_chunk},     {"req_stream", req_stream},   {"req_write", req_write},
    {"req_version", req_version}, {"req_closing", req_closing}, {NULL, NULL},
};

/* After a lazy field's function returned: stores its value in the request, raw (the
 * metatable has no __newindex), and answers it. */
static int req_index_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* The request table's __index (lua/loom/request.lua; upvalues: the methods, the lazy
 * fields' functions): a method, or a lazy field computed on first use and kept in the
 * table. In C: req.query, req.params' absence and the rest cost no Lua call around them. */
static int req_index(lua_State *L) {
    lua_settop(L, 2);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) == LUA_TNIL)
        return 1;
    if (lua_tocfunction(L, -1) == req_query && lua_type(L, 1) == LUA_TTABLE) {
        /* req.query: req_query's work without a call to it (~300 instructions) */
        lua_pop(L, 1);
        size_t len;
        const char *t = get_target(L, 3, &len);
        push_query(L, t, len);
        return req_index_k(L, LUA_OK, 0);
    }
    lua_pushvalue(L, 1);
    lua_callk(L, 1, 1, 0, req_index_k); /* a lazy field's function may wait */
    return req_index_k(L, LUA_OK, 0);
}

/* core.req_index(methods, lazy) -> the request table's __index (upvalues: those two, and
 * get_target's three) */
static int req_index_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_pushliteral(L, "target");
    lua_pushliteral(L, "_box");
    luaL_getmetatable(L, REQBOX_MT);
    lua_pushcclosure(L, req_index, 5);
    return 1;
}

int loom_resp_json_head(lua_State *L); /* http_response.c */

int loom_open_http_request(lua_State *L) {
    luaL_newmetatable(L, REQBOX_MT);
    lua_insert(L, -2);
    luaL_setfuncs(L, request_funcs, 0);
    lua_pushliteral(L, "response_headers");
    lua_pushliteral(L, "_streamed");
    lua_pushliteral(L, "json");
    lua_pushliteral(L, "status");
    lua_pushliteral(L, "_box");
    lua_pushvalue(L, -7);                   /* the box's metatable */
    for (int json = 0; json <= 1; json++) { /* req_plain, then req_plain_json */
        for (int i = 0; i < 6; i++)
            lua_pushvalue(L, -6);
        lua_pushboolean(L, json);
        lua_pushcclosure(L, req_plain, 7);
        lua_setfield(L, -8, json ? "req_plain_json" : "req_plain");
    }
    lua_pop(L, 6);
    lua_pushliteral(L, "target");
    lua_pushliteral(L, "_box");
    lua_pushvalue(L, -4); /* the box's metatable */
    lua_pushcclosure(L, req_query, 3);
    lua_setfield(L, -2, "req_query");
    lua_remove(L, -2);
    lua_pushcfunction(L, req_index_new);
    lua_setfield(L, -2, "req_index");
    lua_pushcfunction(L, loom_resp_json_head);
    lua_setfield(L, -2, "resp_json_head");
    return 0;
}
