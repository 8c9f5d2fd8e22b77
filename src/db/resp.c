/*
 * resp.c - the RESP2 reply parser of resp.h, and its Lua side for loom.redis: replies read
 * and converted straight from a stream's buffer (a framed read, loom_stream_read_framed),
 * commands encoded as arrays of bulk strings.
 */
#include "resp.h"
#include "resp_lua.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "stream.h"

/* ---------------------------------------------------------------- the parser (pure) */

void loom_resp_scan_init(loom_resp_scan_t *st) {
    st->off = 0;
    st->depth = 0;
    st->count = 0;
    st->err[0] = '\0';
}

/* A decimal integer filling [p, p + n): an optional '-' and 1 to 19 digits, within a long
 * long. 0 when it is not one. */
static int parse_int(const char *p, size_t n, long long *out) {
    int neg = 0;
    if (n > 0 && *p == '-') {
        neg = 1;
        p++, n--;
    }
    if (n == 0 || n > 19)
        return 0;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (unsigned long long)(p[i] - '0');
    }
    if (v > (unsigned long long)LLONG_MAX + (unsigned long long)neg)
        return 0;
    *out = neg ? (long long)(0ULL - v) : (long long)v;
    return 1;
}

int loom_resp_token(const char *buf, size_t len, const loom_resp_limits_t *lim,
                    loom_resp_token_t *t, char *err, size_t errlen) {
    if (len == 0)
        return LOOM_RESP_MORE;
    char type = buf[0];
    if (!strchr("+-:$*", type) || type == '\0') {
        snprintf(err, errlen, "unknown reply type byte 0x%02x", (unsigned char)type);
        return LOOM_RESP_BAD;
    }
    /* the line: type byte, content, CRLF; only the first LOOM_RESP_MAX_LINE + 3 bytes are
     * looked at, so a line that never ends costs no more than that */
    size_t look = len < LOOM_RESP_MAX_LINE + 3 ? len : LOOM_RESP_MAX_LINE + 3;
    const char *nl = memchr(buf + 1, '\n', look - 1);
    if (!nl) {
        if (look == LOOM_RESP_MAX_LINE + 3) {
            snprintf(err, errlen, "reply line longer than %d bytes", LOOM_RESP_MAX_LINE);
            return LOOM_RESP_BAD;
        }
        return LOOM_RESP_MORE;
    }
    if (nl == buf + 1 || nl[-1] != '\r') {
        snprintf(err, errlen, "reply line not ended by CRLF");
        return LOOM_RESP_BAD;
    }
    const char *line = buf + 1;
    size_t n = (size_t)(nl - 1 - line);
    if (memchr(line, '\r', n)) {
        snprintf(err, errlen, "CR inside a reply line");
        return LOOM_RESP_BAD;
    }
    t->type = type;
    t->str = NULL;
    t->len = 0;
    t->n = 0;
    t->size = n + 3;
    switch (type) {
    case '+':
    case '-':
        t->str = line;
        t->len = n;
        return LOOM_RESP_WHOLE;
    case ':':
        if (!parse_int(line, n, &t->n)) {
            snprintf(err, errlen, "bad integer reply");
            return LOOM_RESP_BAD;
        }
        return LOOM_RESP_WHOLE;
    default:
        break;
    }
    long long v;
    if (!parse_int(line, n, &v) || v < -1 || (n > 1 && line[0] == '0') ||
        (line[0] == '-' && v != -1)) {
        snprintf(err, errlen, "bad %s length", type == '$' ? "bulk string" : "array");
        return LOOM_RESP_BAD;
    }
    t->n = v;
    if (type == '*') {
        if (v > 0 && (unsigned long long)v > lim->max_elements) {
            snprintf(err, errlen, "array of %lld elements over the limit of %zu", v,
                     lim->max_elements);
            return LOOM_RESP_BAD;
        }
        return LOOM_RESP_WHOLE;
    }
    if (v < 0)
        return LOOM_RESP_WHOLE; /* nil bulk */
    if ((unsigned long long)v > lim->max_bulk) {
        snprintf(err, errlen, "bulk string of %lld bytes over the limit of %zu", v, lim->max_bulk);
        return LOOM_RESP_BAD;
    }
    size_t body = t->size + (size_t)v;
    if (len < body || len - body < 2)
        return LOOM_RESP_MORE;
    if (buf[body] != '\r' || buf[body + 1] != '\n') {
        snprintf(err, errlen, "bulk string not ended by CRLF");
        return LOOM_RESP_BAD;
    }
    t->str = buf + t->size;
    t->len = (size_t)v;
    t->size = body + 2;
    return LOOM_RESP_WHOLE;
}

int loom_resp_scan(loom_resp_scan_t *st, const loom_resp_limits_t *lim, const char *buf,
                   size_t len) {
    int max_depth = lim->max_depth;
    if (max_depth > LOOM_RESP_MAX_DEPTH)
        max_depth = LOOM_RESP_MAX_DEPTH;
    for (;;) {
        loom_resp_token_t t;
        int rc = loom_resp_token(buf + st->off, len - st->off, lim, &t, st->err, sizeof st->err);
        if (rc != LOOM_RESP_WHOLE)
            return rc;
        st->off += t.size;
        if (t.type == '*' && t.n > 0) {
            if (st->depth >= max_depth) {
                snprintf(st->err, sizeof st->err, "arrays nested deeper than %d", max_depth);
                return LOOM_RESP_BAD;
            }
            st->count += (size_t)t.n;
            if (st->count > lim->max_elements) {
                snprintf(st->err, sizeof st->err, "reply of more than %zu array elements",
                         lim->max_elements);
                return LOOM_RESP_BAD;
            }
            st->left[st->depth++] = t.n;
            continue;
        }
        /* a value is complete: it counts in its array, which may complete its own */
        for (;;) {
            if (st->depth == 0)
                return LOOM_RESP_WHOLE;
            if (--st->left[st->depth - 1] > 0)
                break;
            st->depth--;
        }
    }
}

/* ---------------------------------------------------------------- Lua: replies */

#define READER_MT "loom.resp_reader"

typedef struct {
    loom_resp_limits_t lim;
    loom_resp_scan_t st;
    int rc; /* the scan's outcome at st.off */
} reader_t;

/* core.resp_reader(max_bulk, max_elements, max_depth) -> reader */
static int l_resp_reader(lua_State *L) {
    lua_Integer bulk = luaL_checkinteger(L, 1), elems = luaL_checkinteger(L, 2),
                depth = luaL_checkinteger(L, 3);
    luaL_argcheck(L, bulk >= 0, 1, "non-negative integer expected");
    luaL_argcheck(L, elems >= 0, 2, "non-negative integer expected");
    luaL_argcheck(L, depth >= 1 && depth <= LOOM_RESP_MAX_DEPTH, 3, "1 to 64 expected");
    reader_t *r = lua_newuserdatauv(L, sizeof *r, 0);
    r->lim.max_bulk = (size_t)bulk;
    r->lim.max_elements = (size_t)elems;
    r->lim.max_depth = (int)depth;
    loom_resp_scan_init(&r->st);
    r->rc = LOOM_RESP_MORE;
    luaL_setmetatable(L, READER_MT);
    return 1;
}

static void push_error_msg(lua_State *L, const loom_resp_token_t *t) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "redis: ");
    luaL_addlstring(&b, t->str, t->len);
    luaL_pushresult(&b);
}

void loom_resp_push_error(lua_State *L, const char *buf, size_t len,
                          const loom_resp_limits_t *lim) {
    loom_resp_token_t t;
    char err[8];
    loom_resp_token(buf, len, lim, &t, err, sizeof err); /* scanned whole before */
    push_error_msg(L, &t);
}

void loom_resp_push(lua_State *L, const char **p, const char *end, const loom_resp_limits_t *lim) {
    loom_resp_token_t t;
    char err[8];
    int rc = loom_resp_token(*p, (size_t)(end - *p), lim, &t, err, sizeof err);
    (void)rc; /* scanned whole before */
    *p += t.size;
    switch (t.type) {
    case '+':
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, t.str, t.len);
        lua_setfield(L, -2, "ok");
        return;
    case '-':
        lua_createtable(L, 0, 1);
        push_error_msg(L, &t);
        lua_setfield(L, -2, "err");
        return;
    case ':':
        lua_pushinteger(L, (lua_Integer)t.n);
        return;
    case '$':
        if (t.n < 0)
            lua_pushlightuserdata(L, NULL); /* loom.null */
        else
            lua_pushlstring(L, t.str, t.len);
        return;
    default:
        break;
    }
    if (t.n < 0) {
        lua_pushlightuserdata(L, NULL);
        return;
    }
    luaL_checkstack(L, 4, "reply nested too deep");
    lua_createtable(L, t.n > INT_MAX ? INT_MAX : (int)t.n, 0);
    for (long long i = 1; i <= t.n; i++) {
        loom_resp_push(L, p, end, lim);
        lua_rawseti(L, -2, (lua_Integer)i);
    }
}

/* The framed read's parser (loom_frame_fn): a reply is whole, or bad, or more is needed. */
static int resp_frame(lua_State *L, void *ud, const char *buf, size_t len, size_t *used) {
    reader_t *r = ud;
    if (r->rc == LOOM_RESP_MORE)
        r->rc = loom_resp_scan(&r->st, &r->lim, buf, len);
    if (!L)
        return r->rc != LOOM_RESP_MORE;
    int rc = r->rc;
    if (rc == LOOM_RESP_MORE)
        return -1;
    if (rc == LOOM_RESP_BAD) {
        *used = 0;
        lua_pushnil(L);
        lua_pushfstring(L, "redis: protocol error: %s", r->st.err);
        lua_pushboolean(L, 1);
        return 3;
    }
    size_t size = r->st.off;
    loom_resp_scan_init(&r->st);
    r->rc = LOOM_RESP_MORE;
    *used = size;
    if (buf[0] == '-') { /* an error reply: nil, "redis: ERR ..." */
        lua_pushnil(L);
        loom_resp_push_error(L, buf, size, &r->lim);
        return 2;
    }
    const char *p = buf;
    loom_resp_push(L, &p, buf + size, &r->lim);
    return 1;
}

/* core.resp_read(stream, reader) -> value | nil, "redis: ERR ..." (an error reply) |
 * nil, "redis: protocol error: ...", true (the connection is unusable) | nil, err (the
 * stream's: closed, timeout) */
static int l_resp_read(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    reader_t *r = luaL_checkudata(L, 2, READER_MT);
    return loom_stream_read_framed(L, s, resp_frame, r, "call");
}

/* core.resp_parse(reader, data) -> size, value... | false (more needed): the same as a
 * framed read, on a string (for tests and the fuzzer's Lua side). */
static int l_resp_parse(lua_State *L) {
    reader_t *r = luaL_checkudata(L, 1, READER_MT);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    loom_resp_scan_init(&r->st);
    r->rc = LOOM_RESP_MORE;
    if (!resp_frame(NULL, r, data, len, NULL)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    size_t used = 0;
    lua_pushnil(L);
    int n = resp_frame(L, r, data, len, &used);
    lua_pushinteger(L, (lua_Integer)used);
    lua_replace(L, -n - 2);
    return n + 1;
}

/* core.resp_idle(stream, true): a pooled connection goes idle. It keeps reading, so that
 * the server's close (or a stray byte) is noticed while it waits, but no longer keeps the
 * loop alive. core.resp_idle(stream, false) takes it back: true when it is still usable
 * (open, not ended, nothing unread), false otherwise. */
static int l_resp_idle(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    loom_stream_ref(s, !lua_toboolean(L, 2));
    lua_pushboolean(L, loom_stream_healthy(s));
    return 1;
}

/* ---------------------------------------------------------------- Lua: commands */

/* Writes v in decimal so that it ends at `end`; returns where it starts. */
static char *put_decimal(char *end, unsigned long long v) {
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* Makes room for n more bytes in out: 0, or -1 when out of memory. */
static int out_reserve(loom_resp_out_t *out, size_t n) {
    if (out->cap - out->len >= n)
        return 0;
    size_t cap = out->cap ? out->cap : 256;
    while (cap - out->len < n)
        cap *= 2;
    char *p = realloc(out->p, cap);
    if (!p)
        return -1;
    out->p = p;
    out->cap = cap;
    return 0;
}

/* Writes "<type><v>\r\n" at w (room for 23 bytes); returns the end. */
static char *write_header(char *w, char type, size_t v) {
    char tmp[24];
    char *end = tmp + sizeof tmp;
    char *start = put_decimal(end, v);
    *w++ = type;
    while (start < end)
        *w++ = *start++;
    *w++ = '\r';
    *w++ = '\n';
    return w;
}

int loom_resp_encode(lua_State *L, int from, int n, loom_resp_out_t *out) {
    size_t start = out->len;
    if (out_reserve(out, 23) != 0)
        return -1;
    out->len = (size_t)(write_header(out->p + out->len, '*', (size_t)n) - out->p);
    for (int i = from; i < from + n; i++) {
        size_t len;
        const char *s;
        char num[64];
        switch (lua_type(L, i)) {
        case LUA_TSTRING:
            s = lua_tolstring(L, i, &len); /* a string: no conversion, raises nothing */
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, i)) {
                lua_Integer v = lua_tointeger(L, i);
                char *end = num + sizeof num;
                char *d =
                    put_decimal(end, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v);
                if (v < 0)
                    *--d = '-';
                s = d;
                len = (size_t)(end - d);
            } else {
                len = (size_t)snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, i));
                s = num;
            }
            break;
        default:
            out->len = start;
            return i;
        }
        if (len > (size_t)-1 - 64 || out_reserve(out, len + 25) != 0) {
            out->len = start;
            return -1;
        }
        char *w = write_header(out->p + out->len, '$', len);
        memcpy(w, s, len);
        w += len;
        *w++ = '\r';
        *w++ = '\n';
        out->len = (size_t)(w - out->p);
    }
    return 0;
}

/* core.resp_command(fname, first, ...) -> the RESP array of bulk strings for the values
 * after `first` (strings as they are, integers in decimal, floats as %.17g). A value of
 * another type raises "bad argument #(first + i - 1) to 'fname'". */
static int l_resp_command(lua_State *L) {
    const char *fname = luaL_checkstring(L, 1);
    lua_Integer first = luaL_checkinteger(L, 2);
    int n = lua_gettop(L) - 2;
    char stack[512];
    loom_resp_out_t out = {stack, 0, sizeof stack};
    /* a small command is built on the C stack, when it surely fits there (out_reserve's
     * realloc must never see that buffer): a bulk's header and CRLF take at most 25 bytes, a
     * number's text at most 24 */
    size_t need = 32;
    for (int i = 3; i <= n + 2 && need <= sizeof stack; i++) {
        size_t len = 0;
        if (lua_type(L, i) == LUA_TSTRING)
            lua_tolstring(L, i, &len);
        need += len + 64;
    }
    if (need > sizeof stack)
        out = (loom_resp_out_t){NULL, 0, 0};
    int rc = loom_resp_encode(L, 3, n, &out);
    if (rc == 0)
        lua_pushlstring(L, out.p, out.len);
    if (out.p != stack)
        free(out.p);
    if (rc < 0)
        return luaL_error(L, "not enough memory");
    if (rc > 0)
        return luaL_error(L, "bad argument #%d to '%s' (string or number expected, got %s)",
                          (int)(first + rc - 3), fname, luaL_typename(L, rc));
    return 1;
}

static const luaL_Reg resp_funcs[] = {
    {"resp_reader", l_resp_reader},   {"resp_read", l_resp_read}, {"resp_parse", l_resp_parse},
    {"resp_command", l_resp_command}, {"resp_idle", l_resp_idle}, {NULL, NULL},
};

int loom_open_resp(lua_State *L) {
    luaL_newmetatable(L, READER_MT);
    lua_pop(L, 1);
    luaL_setfuncs(L, resp_funcs, 0);
    return loom_open_resp_mux(L);
}
