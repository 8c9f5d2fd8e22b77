/*
 * tls_config.c - core.tls_config: the Lua object of a tls.c configuration (trust anchors,
 * own certificates chosen by SNI, verification), cached by its settings while it is alive,
 * since loading the system CA bundle costs milliseconds. The sessions run in the sock's TLS
 * pump (sock.c); a stream's client handshake is core.tls_wrap (stream.c). Knows no HTTP.
 */
#include <string.h>
#include <lauxlib.h>
#include "stream.h"
#include "tls.h"
#include "fail.h"

#define CONF_MT "loom.tls_config"

static const char CACHE_KEY = 'c'; /* registry[&CACHE_KEY] = {settings key = config}, weak */

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
    lua_pushfstring(L, "%d|%s|%s|%s|%d|%s", o->verify, o->ca_file ? o->ca_file : "",
                    o->cert ? o->cert : "", o->key ? o->key : "", o->server,
                    o->alpn ? o->alpn : "");
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
    o->alpn = loom_opt_string(L, idx, "alpn", NULL); /* "h2,http/1.1" */
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

static const luaL_Reg tls_funcs[] = {
    {"tls_config", l_tls_config},
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

int loom_tls_conf_push(lua_State *L, int idx) {
    return push_conf(L, idx);
}
