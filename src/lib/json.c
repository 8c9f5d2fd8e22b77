/*
 * json.c - the small JSON encoder of json.h. An answer's {json = v} goes through here once
 * per request (src/http1/http_request.c, core.req_plain), where calling lua-cjson cost a
 * Lua function, a pcall, cjson's own set-up and a look for "\/" around ~1.7k instructions
 * of encoding. What it writes is lua-cjson 2.1.0's output (Debian 12's; loom.json then
 * turns "\/" back into "/"), which later lua-cjson versions also write for these values:
 *   - strings: '"', '\\', the bytes below 0x20 and 0x7f escaped as cjson's char2escape
 *     table does ("\b", "\t", "\n", "\f", "\r", else "\u00xx"); "/" and every other byte,
 *     UTF-8 or not, as they are;
 *   - integers below 10^14 in magnitude as their digits ("%.14g" writes the same; from 15
 *     digits on, cjson 2.1.0 writes an exponent and later versions all the digits, so
 *     those are turned down); floats as "%.14g"; NaN and infinities are turned down
 *     (cjson raises on them);
 *   - true, false, null (nil, or cjson.null: a NULL light userdata);
 *   - a table without a metatable whose keys are all strings as an object, in lua_next's
 *     order; one whose keys are exactly 1..n as an array; an empty one as {}.
 * Everything else (metatables: loom.json.array's mark and cjson's array_mt among them;
 * other keys, sparse arrays, other types, deep nesting, long output) is turned down, and
 * the caller encodes with cjson as before, which also raises cjson's own errors.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "json.h"

#define MAX_DEPTH 16
#define MAX_PLAIN_INT 99999999999999LL /* 14 digits: "%.14g" writes these as digits */

typedef struct {
    lua_State *L;
    char *buf;
    size_t n;
} out_t;

/* 0: a byte written as it is; 1: "\" then the byte in ESC2; 2: "\u00xx" */
static const unsigned char esc_kind[256] = {
    2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 1, 1, 2, 2, /* \b \t \n, \f \r */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, ['"'] = 1, ['\\'] = 1, [127] = 2,
};

static char esc2(unsigned char c) {
    switch (c) {
    case '\b':
        return 'b';
    case '\t':
        return 't';
    case '\n':
        return 'n';
    case '\f':
        return 'f';
    case '\r':
        return 'r';
    default: /* '"' and '\\' */
        return (char)c;
    }
}

static int put(out_t *o, const char *s, size_t len) {
    if (LOOM_JSON_SMALL - o->n < len)
        return 0;
    memcpy(o->buf + o->n, s, len);
    o->n += len;
    return 1;
}

static int put_char(out_t *o, char c) {
    if (o->n == LOOM_JSON_SMALL)
        return 0;
    o->buf[o->n++] = c;
    return 1;
}

/* A string whose every byte may take 6 bytes, when that much room is left (most: the
 * bytes copied one by one, no bound checked per byte); else put_string_checked. */
static int put_string_checked(out_t *o, const char *s, size_t len);

static int put_string(out_t *o, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t room = LOOM_JSON_SMALL - o->n;
    if (room < 8 || len > (room - 8) / 6)
        return put_string_checked(o, s, len);
    char *d = o->buf + o->n;
    *d++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (esc_kind[c]) {
        case 0:
            *d++ = (char)c;
            break;
        case 1:
            *d++ = '\\';
            *d++ = esc2(c);
            break;
        default:
            memcpy(d, "\\u00", 4);
            d[4] = hex[c >> 4];
            d[5] = hex[c & 15];
            d += 6;
        }
    }
    *d++ = '"';
    o->n = (size_t)(d - o->buf);
    return 1;
}

static int put_string_checked(out_t *o, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    if (!put_char(o, '"'))
        return 0;
    size_t run = 0; /* bytes of s before i not yet copied */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int kind = esc_kind[c];
        if (kind == 0)
            continue;
        if (!put(o, s + run, i - run))
            return 0;
        run = i + 1;
        if (kind == 1) {
            char e[2] = {'\\', esc2(c)};
            if (!put(o, e, 2))
                return 0;
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (!put(o, e, 6))
                return 0;
        }
    }
    return put(o, s + run, len - run) && put_char(o, '"');
}

static int put_integer(out_t *o, lua_Integer v) {
    if (v < -MAX_PLAIN_INT || v > MAX_PLAIN_INT)
        return 0;
    char tmp[16], *p = tmp + sizeof tmp;
    unsigned long long u = (unsigned long long)(v < 0 ? -v : v);
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return put(o, p, (size_t)(tmp + sizeof tmp - p));
}

static int put_float(out_t *o, double d) {
    if (!isfinite(d))
        return 0;
    char tmp[40];
    int len = snprintf(tmp, sizeof tmp, "%.14g", d);
    if (len <= 0 || (size_t)len >= sizeof tmp)
        return 0;
    for (int i = 0; i < len; i++) /* a locale's decimal comma: cjson mends it, not us */
        if (!strchr("0123456789-+.e", tmp[i]))
            return 0;
    return put(o, tmp, (size_t)len);
}

static int put_value(out_t *o, int depth);

/* The table at the top, whose first key and value lua_next has just pushed (a string
 * key): an object of string keys. */
static int put_object(out_t *o, int depth) {
    lua_State *L = o->L;
    if (!put_char(o, '{'))
        return 0;
    int first = 1;
    do {
        if (lua_type(L, -2) != LUA_TSTRING)
            return 0;
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        if ((!first && !put_char(o, ',')) || !put_string(o, k, klen) || !put_char(o, ':') ||
            !put_value(o, depth))
            return 0;
        first = 0;
        lua_pop(L, 1);
    } while (lua_next(L, -2));
    return put_char(o, '}');
}

/* The table at the top, whose first key (an integer) and value lua_next has just pushed:
 * an array when its keys are exactly 1..n, as cjson finds (a sparse one is turned down). */
static int put_array(out_t *o, int depth) {
    lua_State *L = o->L;
    lua_Integer max = 0, count = 0;
    do {
        if (!lua_isinteger(L, -2))
            return 0;
        lua_Integer k = lua_tointeger(L, -2);
        if (k < 1)
            return 0;
        if (k > max)
            max = k;
        count++;
        lua_pop(L, 1);
    } while (lua_next(L, -2));
    if (max != count || !put_char(o, '['))
        return 0;
    for (lua_Integer i = 1; i <= max; i++) {
        lua_rawgeti(L, -1, i);
        if ((i > 1 && !put_char(o, ',')) || !put_value(o, depth))
            return 0;
        lua_pop(L, 1);
    }
    return put_char(o, ']');
}

static int put_table(out_t *o, int depth) {
    lua_State *L = o->L;
    if (depth > MAX_DEPTH || lua_getmetatable(L, -1))
        return 0; /* the caller restores the stack */
    lua_pushnil(L);
    if (!lua_next(L, -2))
        return put(o, "{}", 2);
    if (lua_type(L, -2) == LUA_TSTRING)
        return put_object(o, depth);
    return put_array(o, depth);
}

/* The value at the top of the stack, left there. */
static int put_value(out_t *o, int depth) {
    lua_State *L = o->L;
    switch (lua_type(L, -1)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        return put_string(o, s, len);
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, -1))
            return put_integer(o, lua_tointeger(L, -1));
        return put_float(o, lua_tonumber(L, -1));
    case LUA_TBOOLEAN:
        return lua_toboolean(L, -1) ? put(o, "true", 4) : put(o, "false", 5);
    case LUA_TTABLE:
        return put_table(o, depth + 1);
    case LUA_TNIL:
        return put(o, "null", 4);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, -1) == NULL)
            return put(o, "null", 4);
        return 0;
    default:
        return 0;
    }
}

size_t loom_json_small(lua_State *L, int idx, char *buf) {
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 2 * MAX_DEPTH + 4))
        return 0;
    out_t o = {L, buf, 0};
    lua_pushvalue(L, idx);
    int ok = put_value(&o, 0);
    lua_settop(L, top);
    return ok ? o.n : 0;
}

/* core.json_small(v) -> the JSON text of v, or nil where loom_json_small turns it down */
static int json_small(lua_State *L) {
    char buf[LOOM_JSON_SMALL];
    luaL_checkany(L, 1);
    size_t n = loom_json_small(L, 1, buf);
    if (n == 0)
        lua_pushnil(L);
    else
        lua_pushlstring(L, buf, n);
    return 1;
}

int loom_open_json(lua_State *L) {
    lua_pushcfunction(L, json_small);
    lua_setfield(L, -2, "json_small");
    return 0;
}
