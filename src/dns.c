/*
 * dns.c - name resolution through uv_getaddrinfo (so /etc/hosts and nsswitch hold).
 * A lookup parks the task; a cancelled or timed-out lookup leaves its request to finish in
 * the thread pool and be freed by its callback. Knows nothing of connections.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"
#include "fail.h"

typedef struct {
    uv_getaddrinfo_t req;
    loom_t *host;
    loom_task_t *task; /* NULL once the waiter gave up */
    int status;
    struct addrinfo *res;
    char name[256];
} lookup_t;

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    lookup_t *lk = req->data;
    loom_handle_closed(lk->host);
    if (!lk->task || lk->host->closing) {
        uv_freeaddrinfo(res);
        free(lk);
        return;
    }
    lk->status = status;
    lk->res = res;
    loom_wake(lk->task);
}

/* Pushes the distinct numeric addresses of the result, in the resolver's order. */
static void push_addrs(lua_State *L, struct addrinfo *res) {
    int n = 0;
    lua_newtable(L);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[64];
        if (ai->ai_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
        else if (ai->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
        else
            continue;
        int dup = 0;
        for (int i = 1; i <= n && !dup; i++) {
            lua_rawgeti(L, -1, i);
            dup = strcmp(lua_tostring(L, -1), ip) == 0;
            lua_pop(L, 1);
        }
        if (!dup) {
            lua_pushstring(L, ip);
            lua_rawseti(L, -2, ++n);
        }
    }
}

static int resolve_build(lua_State *L, void *ud, int reason) {
    lookup_t *lk = ud;
    if (reason == LOOM_WAKE_TIMEOUT) /* the abort hook handed the request to its callback */
        return loom_fail(L, "dns", "timeout (%s)", lua_tostring(L, 1));
    int status = lk->status;
    struct addrinfo *res = lk->res;
    free(lk);
    if (status < 0)
        return loom_fail_uv(L, "dns", status, lua_tostring(L, 1));
    push_addrs(L, res);
    uv_freeaddrinfo(res);
    return 1;
}

static void resolve_abort(void *ud) {
    lookup_t *lk = ud;
    lk->task = NULL;
    uv_cancel((uv_req_t *)&lk->req);
}

static int is_numeric(const char *name) {
    unsigned char buf[16];
    return uv_inet_pton(AF_INET, name, buf) == 0 || uv_inet_pton(AF_INET6, name, buf) == 0;
}

/* core.resolve(name [, timeout]) -> {ip, ...} | nil, "dns: ..." */
static int l_resolve(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    double timeout = luaL_optnumber(L, 2, -1);
    loom_task_t *t = loom_task_self(L, "resolve");
    if (is_numeric(name)) {
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        return 1;
    }
    lookup_t *lk = calloc(1, sizeof *lk);
    if (!lk)
        return loom_fail(L, "dns", "out of memory");
    loom_t *h = loom_host(L);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    lk->host = h;
    lk->task = t;
    lk->req.data = lk;
    int rc = uv_getaddrinfo(h->loop, &lk->req, on_resolved, name, NULL, &hints);
    if (rc < 0) {
        free(lk);
        return loom_fail_uv(L, "dns", rc, name);
    }
    loom_handle_opened(h); /* teardown waits for the request like for a handle */
    lua_settop(L, 1);
    return loom_park(L, t, timeout, resolve_build, resolve_abort, lk);
}

static const luaL_Reg dns_funcs[] = {
    {"resolve", l_resolve},
    {NULL, NULL},
};

int loom_open_dns(lua_State *L) {
    luaL_setfuncs(L, dns_funcs, 0);
    return 0;
}
