/*
 * dns.c - name resolution with getaddrinfo (so /etc/hosts and nsswitch hold), each lookup on
 * a thread of its own rather than in libuv's pool. libuv runs at most two getaddrinfo calls
 * at once (half its four threads: "slow I/O"), so one name whose DNS server never answers
 * held up every other lookup of the process until the system resolver gave up (resolv.conf:
 * 5 s times attempts, per server); here it holds only its own thread. lua/loom/resolver.lua
 * caps how many run at once.
 *
 * A lookup parks its task with the caller's timeout; one that times out or is cancelled
 * goes on in its thread, and its result is dropped when it comes. A finished thread puts its
 * lookup on a list and wakes the loop (uv_async_t), which joins the thread and wakes the
 * task. While lookups run the async handle is referenced, so the loop stays alive for them,
 * and teardown waits for them as it waits for any request. Knows nothing of connections.
 */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"
#include "fail.h"

#define MAX_RUNNING 64 /* threads at once, whoever asks (resolver.lua asks for fewer) */

typedef struct lookup lookup_t;
typedef struct dns dns_t;

struct lookup {
    dns_t *d;
    lookup_t *next;
    uv_thread_t thread;
    loom_task_t *task; /* loop thread only; NULL once the waiter gave up */
    int status;        /* a libuv error code, or 0 */
    struct addrinfo *res;
    char name[256];
};

/* One per host: the lookups' way back to the loop. */
struct dns {
    loom_res_t res;
    loom_t *host;
    uv_async_t async;
    uv_mutex_t lock; /* guards `done` */
    lookup_t *done;  /* finished lookups, pushed by their threads */
    int running;     /* threads started and not yet joined (loop thread only) */
    int closing;     /* the host is being torn down */
};

static const char DNS_KEY = 'd'; /* registry[&DNS_KEY] = light userdata dns_t */

/* ---------------------------------------------------------------- the threads */

/* getaddrinfo's EAI_* codes as libuv's, for the same messages as uv_getaddrinfo gave. */
static int uv_error_of(int eai) {
    switch (eai) {
    case 0:
        return 0;
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
        return UV_EAI_ADDRFAMILY;
#endif
    case EAI_AGAIN:
        return UV_EAI_AGAIN;
    case EAI_BADFLAGS:
        return UV_EAI_BADFLAGS;
    case EAI_FAIL:
        return UV_EAI_FAIL;
    case EAI_FAMILY:
        return UV_EAI_FAMILY;
    case EAI_MEMORY:
        return UV_EAI_MEMORY;
#if defined(EAI_NODATA) && EAI_NODATA != EAI_NONAME
    case EAI_NODATA:
        return UV_EAI_NODATA;
#endif
    case EAI_NONAME:
        return UV_EAI_NONAME;
#ifdef EAI_OVERFLOW
    case EAI_OVERFLOW:
        return UV_EAI_OVERFLOW;
#endif
    case EAI_SERVICE:
        return UV_EAI_SERVICE;
    case EAI_SOCKTYPE:
        return UV_EAI_SOCKTYPE;
    case EAI_SYSTEM:
        return errno ? -errno : UV_EAI_FAIL;
    default:
        return UV_EAI_FAIL;
    }
}

static void run_lookup(void *arg) {
    lookup_t *lk = arg;
    dns_t *d = lk->d;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    errno = 0;
    lk->status = uv_error_of(getaddrinfo(lk->name, NULL, &hints, &lk->res));
    uv_mutex_lock(&d->lock);
    lk->next = d->done;
    d->done = lk;
    uv_mutex_unlock(&d->lock);
    /* "It's safe to call this function from any thread"; the handle stays open until every
     * thread has been joined (on_async closes it only then). */
    uv_async_send(&d->async);
}

/* ---------------------------------------------------------------- the loop side */

static void free_lookup(lookup_t *lk) {
    if (lk->res)
        freeaddrinfo(lk->res);
    free(lk);
}

static void on_dns_closed(uv_handle_t *handle) {
    dns_t *d = handle->data;
    loom_handle_closed(d->host);
    uv_mutex_destroy(&d->lock);
    free(d);
}

/* Joins the finished threads and wakes their tasks (or drops what nobody waits for). */
static void on_async(uv_async_t *async) {
    dns_t *d = async->data;
    uv_mutex_lock(&d->lock);
    lookup_t *lk = d->done;
    d->done = NULL;
    uv_mutex_unlock(&d->lock);
    while (lk) {
        lookup_t *next = lk->next;
        uv_thread_join(&lk->thread); /* it has returned, or is about to */
        d->running--;
        loom_handle_closed(d->host);
        if (!lk->task || d->closing)
            free_lookup(lk);
        else
            loom_wake(lk->task); /* resolve_build takes the result */
        lk = next;
    }
    if (d->running == 0) {
        if (d->closing)
            uv_close((uv_handle_t *)&d->async, on_dns_closed);
        else
            uv_unref((uv_handle_t *)&d->async); /* nothing to keep the loop alive for */
    }
}

static void dns_res_close(loom_res_t *r) {
    dns_t *d = (dns_t *)r;
    lua_State *L = d->host->L;
    d->closing = 1;
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &DNS_KEY); /* a later host on this state starts anew */
    if (d->running == 0)
        uv_close((uv_handle_t *)&d->async, on_dns_closed);
    /* else on_async closes it once the last thread is joined; teardown runs the loop until
     * then, as it waited for libuv's lookups before */
}

static dns_t *dns_of(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &DNS_KEY);
    dns_t *d = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (d)
        return d;
    loom_t *h = loom_host(L);
    d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    if (uv_mutex_init(&d->lock) != 0 || uv_async_init(h->loop, &d->async, on_async) != 0) {
        free(d);
        return NULL;
    }
    d->host = h;
    d->async.data = d;
    uv_unref((uv_handle_t *)&d->async);
    loom_handle_opened(h);
    loom_res_add(h, &d->res, dns_res_close);
    lua_pushlightuserdata(L, d);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &DNS_KEY);
    return d;
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
    if (reason == LOOM_WAKE_TIMEOUT) /* the abort hook left the lookup to its thread */
        return loom_fail(L, "timeout", "dns lookup of %s", lua_tostring(L, 1));
    int status = lk->status;
    struct addrinfo *res = lk->res;
    lk->res = NULL;
    free_lookup(lk);
    if (status < 0 || !res) {
        if (res)
            freeaddrinfo(res);
        return loom_fail_uv(L, "dns", status < 0 ? status : UV_EAI_NODATA, lua_tostring(L, 1));
    }
    push_addrs(L, res);
    freeaddrinfo(res);
    return 1;
}

static void resolve_abort(void *ud) {
    ((lookup_t *)ud)->task = NULL; /* on_async frees it when its thread is done */
}

static int is_numeric(const char *name) {
    unsigned char buf[16];
    return uv_inet_pton(AF_INET, name, buf) == 0 || uv_inet_pton(AF_INET6, name, buf) == 0;
}

/* core.resolve(name [, timeout]) -> {ip, ...} | nil, "dns: ..." | nil, "timeout: ..." */
static int l_resolve(lua_State *L) {
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    double timeout = luaL_optnumber(L, 2, -1);
    loom_task_t *t = loom_task_self(L, "resolve");
    if (is_numeric(name)) {
        lua_createtable(L, 1, 0);
        lua_pushvalue(L, 1);
        lua_rawseti(L, -2, 1);
        return 1;
    }
    if (len == 0 || len >= sizeof((lookup_t *)0)->name || strlen(name) != len)
        return loom_fail_uv(L, "dns", UV_EAI_NONAME, name);
    dns_t *d = dns_of(L);
    if (!d)
        return loom_fail(L, "dns", "out of memory (%s)", name);
    if (d->running >= MAX_RUNNING)
        return loom_fail(L, "dns", "too many lookups at once (%s)", name);
    lookup_t *lk = calloc(1, sizeof *lk);
    if (!lk)
        return loom_fail(L, "dns", "out of memory (%s)", name);
    lk->d = d;
    lk->task = t;
    memcpy(lk->name, name, len + 1);
    int rc = uv_thread_create(&lk->thread, run_lookup, lk);
    if (rc < 0) {
        free(lk);
        return loom_fail_uv(L, "dns", rc, name);
    }
    if (d->running++ == 0)
        uv_ref((uv_handle_t *)&d->async);
    loom_handle_opened(d->host); /* teardown waits for the thread like for a request */
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
