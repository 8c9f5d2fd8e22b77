/*
 * stream_tls.c - TLS under loom's byte streams: ciphertext read from the socket goes through
 * a tls.c session into the stream's plaintext buffer, and writes are encrypted before they
 * reach the socket, so readers, the HTTP client and loom.connect see plaintext only.
 * The Lua side: core.tls_config (a shared, cached configuration) and core.tls_wrap (the
 * client handshake on a connected stream). Knows nothing of HTTP.
 */
#include <string.h>
#include <lauxlib.h>
#include "stream.h"
#include "tls.h"
#include "fail.h"

#define CONF_MT "loom.tls_config"
#define TLS_READ_CHUNK (64 * 1024)

static const char CACHE_KEY = 'c'; /* registry[&CACHE_KEY] = {settings key = config}, weak */

/* ---------------------------------------------------------------- the stream's hooks */

void loom_stream_tls_alloc(loom_stream_t *s, uv_buf_t *buf) {
    char *base;
    size_t len;
    if (loom_tls_inbuf(s->tls, TLS_READ_CHUNK, &base, &len) != 0) {
        buf->base = NULL; /* libuv reports UV_ENOBUFS */
        buf->len = 0;
        return;
    }
    buf->base = base;
    buf->len = len;
}

/* Writes out what the TLS session produced (handshake messages, records, alerts). The
 * stream copies what the kernel does not take at once, so the session's buffer empties. */
static int flush(loom_stream_t *s) {
    const char *p;
    size_t n = loom_tls_pending(s->tls, &p);
    if (n == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = loom_stream_send_raw(s, &b, 1);
    loom_tls_sent(s->tls, n);
    if (rc < 0 && !s->werr)
        s->werr = rc;
    return rc;
}

static void decrypt(loom_stream_t *s) {
    for (;;) {
        size_t got;
        if (loom_stream_reserve(s, 16 * 1024) != 0) {
            s->rerr = UV_ENOMEM;
            break;
        }
        int rc = loom_tls_read(s->tls, s->buf + s->len, s->cap - s->len, &got);
        if (rc == LOOM_TLS_OK) {
            s->len += got;
            continue;
        }
        if (rc == LOOM_TLS_EOF)
            s->eof = 1;
        else if (rc == LOOM_TLS_ERR)
            s->rerr = UV_EPROTO;
        break;
    }
    flush(s);
}

void loom_stream_tls_input(loom_stream_t *s, size_t n) {
    loom_tls_received(s->tls, n);
    if (!loom_tls_handshake_done(s->tls)) {
        int rc = loom_tls_handshake(s->tls);
        flush(s);
        if (rc == LOOM_TLS_ERR)
            s->rerr = UV_EPROTO;
        if (rc != LOOM_TLS_OK)
            return;
    }
    decrypt(s);
}

int loom_stream_tls_end(loom_stream_t *s) {
    return loom_tls_transport_end(s->tls) == LOOM_TLS_ERR ? UV_EPROTO : 0;
}

int loom_stream_tls_send(loom_stream_t *s, uv_buf_t *bufs, int n) {
    if (!loom_tls_handshake_done(s->tls))
        return UV_ENOTCONN;
    for (int i = 0; i < n; i++)
        if (loom_tls_write(s->tls, bufs[i].base, bufs[i].len) != LOOM_TLS_OK) {
            s->werr = UV_EPROTO;
            return UV_EPROTO;
        }
    const char *p;
    size_t len = loom_tls_pending(s->tls, &p);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int rc = loom_stream_send_raw(s, &b, 1);
    loom_tls_sent(s->tls, len);
    return rc;
}

void loom_stream_tls_adopt(loom_stream_t *s, loom_tls_t *t) {
    s->tls = t;
    decrypt(s);
}

void loom_stream_tls_free(loom_stream_t *s) {
    loom_tls_free(s->tls);
    s->tls = NULL;
}

const char *loom_stream_tls_error(loom_stream_t *s) {
    if (!s->tls || (s->rerr != UV_EPROTO && s->werr != UV_EPROTO))
        return NULL;
    return loom_tls_error(s->tls);
}

/* ---------------------------------------------------------------- configurations */

typedef struct {
    loom_tls_conf_t *conf;
} conf_box_t;

static int conf_gc(lua_State *L) {
    conf_box_t *b = luaL_checkudata(L, 1, CONF_MT);
    loom_tls_conf_unref(b->conf);
    b->conf = NULL;
    return 0;
}

static loom_tls_conf_t *check_conf(lua_State *L, int idx) {
    conf_box_t *b = luaL_checkudata(L, idx, CONF_MT);
    if (!b->conf)
        luaL_argerror(L, idx, "TLS configuration has been collected");
    return b->conf;
}

/* Pushes the cache key of the settings: "verify|ca_file|cert|key|server", then
 * "|cert|key|name,name" for each of a server's pairs. */
static void push_key(lua_State *L, const loom_tls_opts_t *o) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "%d|%s|%s|%s|%d", o->verify, o->ca_file ? o->ca_file : "",
                    o->cert ? o->cert : "", o->key ? o->key : "", o->server);
    luaL_addvalue(&b);
    for (int i = 0; i < o->ncerts; i++) {
        lua_pushfstring(L, "|%s|%s|", o->certs[i].cert ? o->certs[i].cert : "",
                        o->certs[i].key ? o->certs[i].key : "");
        luaL_addvalue(&b);
        for (int j = 0; o->certs[i].names && o->certs[i].names[j]; j++) {
            luaL_addstring(&b, o->certs[i].names[j]);
            luaL_addchar(&b, ',');
        }
    }
    luaL_pushresult(&b);
}

/* The `names` of the pair table at `item` (a string or a list of them) as a NULL-terminated
 * array kept alive in scratch[slot]; NULL when absent. */
static const char *const *read_names(lua_State *L, int item, int scratch, int slot, int arg) {
    int t = lua_getfield(L, item, "names");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    if (t == LUA_TSTRING) {
        lua_createtable(L, 1, 0); /* name {} */
        lua_insert(L, -2);        /* {} name */
        lua_rawseti(L, -2, 1);    /* {name} */
    } else if (t != LUA_TTABLE) {
        loom_opt_error(L, arg, "names", "string or list of strings");
    }
    int n = (int)luaL_len(L, -1);
    const char **v = lua_newuserdatauv(L, sizeof *v * (size_t)(n + 1), 1);
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, 1); /* the strings stay alive with the array */
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -2, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            loom_opt_error(L, arg, "names", "list of strings");
        v[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    v[n] = NULL;
    lua_rawseti(L, scratch, slot);
    lua_pop(L, 1);
    return v;
}

/* A server's `certs` list: {{cert = file, key = file, names = {...}}, ...}. Pushes a table
 * that keeps what o->certs points to alive (nil when there is no list). */
static void read_certs(lua_State *L, int idx, loom_tls_opts_t *o) {
    int t = lua_getfield(L, idx, "certs");
    if (t == LUA_TNIL)
        return; /* the nil stays as the placeholder */
    if (t != LUA_TTABLE)
        loom_opt_error(L, idx, "certs", "table");
    int n = (int)luaL_len(L, -1);
    lua_createtable(L, n + 1, 0); /* list scratch */
    int scratch = lua_gettop(L);
    loom_tls_cert_t *certs = lua_newuserdatauv(L, sizeof *certs * (size_t)(n > 0 ? n : 1), 0);
    lua_rawseti(L, scratch, 1);
    for (int i = 0; i < n; i++) {
        if (lua_rawgeti(L, scratch - 1, i + 1) != LUA_TTABLE)
            loom_opt_error(L, idx, "certs", "list of {cert = file, key = file} tables");
        int item = lua_gettop(L);
        certs[i].cert = loom_opt_string(L, item, "cert", NULL);
        certs[i].key = loom_opt_string(L, item, "key", NULL);
        certs[i].names = read_names(L, item, scratch, i + 2, idx);
        lua_pop(L, 1);
    }
    lua_remove(L, scratch - 1); /* scratch */
    o->certs = certs;
    o->ncerts = n;
}

/* Reads the settings in the table at idx; pushes one value that must stay on the stack
 * while o is in use (what o->certs points into, or nil). */
static void read_opts(lua_State *L, int idx, loom_tls_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->verify = loom_opt_boolean(L, idx, "verify", 1);
    o->ca_file = loom_opt_string(L, idx, "ca_file", NULL);
    o->cert = loom_opt_string(L, idx, "cert", NULL);
    o->key = loom_opt_string(L, idx, "key", NULL);
    o->server = loom_opt_boolean(L, idx, "server", 0);
    read_certs(L, idx, o);
}

/* Pushes the configuration for the settings in the table at idx: the cached one while it is
 * alive (loading the system CA bundle costs milliseconds), or a new one. Returns 1, or 2
 * with nil, err pushed. */
static int push_conf(lua_State *L, int idx) {
    loom_tls_opts_t o;
    idx = lua_absindex(L, idx);
    read_opts(L, idx, &o);
    int keep = lua_gettop(L);                      /* keep */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CACHE_KEY); /* keep cache */
    push_key(L, &o);                               /* keep cache key */
    if (lua_rawget(L, -2) == LUA_TUSERDATA) {      /* keep cache conf */
        lua_replace(L, keep);
        lua_settop(L, keep); /* conf */
        return 1;
    }
    lua_pop(L, 1);
    char err[256];
    loom_tls_conf_t *c = loom_tls_conf_new(&o, err, sizeof err);
    if (!c) {
        lua_settop(L, keep - 1);
        return loom_fail(L, "tls", "%s", err);
    }
    conf_box_t *b = lua_newuserdatauv(L, sizeof *b, 0); /* keep cache box */
    b->conf = c;
    luaL_setmetatable(L, CONF_MT);
    push_key(L, &o);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4); /* cache[key] = box */
    lua_replace(L, keep);
    lua_settop(L, keep); /* box */
    return 1;
}

/* core.tls_config{verify = true, ca_file, cert, key, server = false, certs} -> config | nil, err
 * certs (servers): {{cert = file, key = file, names = {...}}, ...}, chosen by SNI. */
static int l_tls_config(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    return push_conf(L, 1);
}

/* ---------------------------------------------------------------- the handshake */

/* Read events while the handshake runs: wake the task once it is done or has failed. */
static void on_handshake_event(loom_stream_t *s) {
    if (s->connector &&
        (loom_tls_handshake_done(s->tls) || s->eof || s->rerr || s->werr || s->state != ST_OPEN))
        loom_wake(s->connector);
}

static int wrap_build(lua_State *L, void *ud, int reason) {
    loom_stream_t *s = ud;
    s->connector = NULL;
    s->on_event = NULL;
    const char *name = lua_tostring(L, 2);
    if (reason == LOOM_WAKE_TIMEOUT) {
        loom_stream_close(s);
        return loom_fail(L, "timeout", "TLS handshake with %s (%s)", name, s->peer);
    }
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream closed during the TLS handshake");
    if (!loom_tls_handshake_done(s->tls)) {
        const char *why = loom_stream_tls_error(s);
        if (!why)
            why = s->eof ? "connection closed during the handshake"
                         : uv_strerror(s->rerr ? s->rerr : s->werr);
        lua_pushfstring(L, "%s (%s)", why, name);
        loom_stream_close(s);
        return loom_fail(L, "tls", "%s", lua_tostring(L, -1));
    }
    lua_pushvalue(L, 1);
    return 1;
}

static void wrap_abort(void *ud) {
    loom_stream_t *s = ud;
    s->connector = NULL;
    s->on_event = NULL;
}

/* core.tls_wrap(stream, name, config | opts [, timeout]) -> stream | nil, err
 * Starts TLS as a client on a connected stream and waits for the handshake. `name` is what
 * the certificate must show (opts.server_name overrides it) and what SNI sends. */
static int l_tls_wrap(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    const char *name = luaL_checkstring(L, 2);
    double timeout = luaL_optnumber(L, 4, -1);
    loom_task_t *t = loom_task_self(L, "tls_wrap");
    if (lua_istable(L, 3)) {
        name = loom_opt_string(L, 3, "server_name", name);
        lua_pushstring(L, name);
        lua_replace(L, 2);
        if (push_conf(L, 3) == 2)
            return 2;
        lua_replace(L, 3);
    }
    loom_tls_conf_t *c = check_conf(L, 3);
    lua_settop(L, 3);
    if (s->tls)
        return luaL_argerror(L, 1, "stream already has TLS");
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream is closed");
    char err[256];
    s->tls = loom_tls_new(c, name, err, sizeof err);
    if (!s->tls)
        return loom_fail(L, "tls", "%s", err);
    loom_tls_handshake(s->tls); /* the ClientHello */
    if (flush(s) < 0) {
        loom_stream_close(s);
        return loom_fail_uv(L, "tls", s->werr, s->peer);
    }
    s->on_event = on_handshake_event;
    s->connector = t;
    loom_stream_read_start(s);
    return loom_park(L, t, timeout, wrap_build, wrap_abort, s);
}

static const luaL_Reg tls_funcs[] = {
    {"tls_config", l_tls_config},
    {"tls_wrap", l_tls_wrap},
    {NULL, NULL},
};

int loom_open_tls(lua_State *L) {
    luaL_newmetatable(L, CONF_MT);
    lua_pushcfunction(L, conf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CACHE_KEY) != LUA_TTABLE) {
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &CACHE_KEY);
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, tls_funcs, 0);
    return 0;
}

/* For other C files: the configuration in a core.tls_config box. */
loom_tls_conf_t *loom_tls_conf_check(lua_State *L, int idx) {
    return check_conf(L, idx);
}
