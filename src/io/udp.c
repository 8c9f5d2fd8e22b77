/*
 * udp.c - UDP sockets for tasks (core.udp_new, behind loom.udp): bind, send to a numeric
 * address (lua/loom/runtime.lua resolves names first), receive (parks). Datagrams that
 * arrive while nobody waits are queued up to UDP_QUEUE_MAX of them, then dropped and
 * counted. Knows nothing of HTTP.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"
#include "addr.h"
#include "fail.h"

#define UDP_MT "loom.udp"
#define UDP_QUEUE_MAX 256
#define UDP_MAX_DATAGRAM 65536

typedef struct dgram dgram_t;
struct dgram {
    dgram_t *next;
    struct sockaddr_storage from;
    size_t len;
    char data[];
};

typedef struct {
    loom_res_t res;
    loom_t *host;
    uv_udp_t udp;
    loom_task_t *waiter;
    dgram_t *head, *tail;
    int queued;
    lua_Integer dropped;
    int err; /* a receive error nobody took yet */
    int receiving, closed, boxed, handle_closed;
    char buf[UDP_MAX_DATAGRAM];
} udp_t;

typedef struct {
    uv_udp_send_t req;
    loom_t *host;
    char data[];
} sendreq_t;

static void udp_free_if_done(udp_t *u) {
    if (u->handle_closed && !u->boxed) {
        while (u->head) {
            dgram_t *d = u->head;
            u->head = d->next;
            free(d);
        }
        free(u);
    }
}

static void on_udp_closed(uv_handle_t *h) {
    udp_t *u = h->data;
    u->handle_closed = 1;
    loom_handle_closed(u->host);
    udp_free_if_done(u);
}

/* Idempotent: a parked receiver wakes with "closed". */
static void udp_close(udp_t *u) {
    if (u->closed)
        return;
    u->closed = 1;
    loom_res_remove(&u->res);
    uv_close((uv_handle_t *)&u->udp, on_udp_closed);
    if (u->waiter)
        loom_wake(u->waiter);
}

static void udp_res_close(loom_res_t *r) {
    udp_close((udp_t *)r);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    udp_t *u = h->data;
    (void)hint;
    *buf = uv_buf_init(u->buf, sizeof u->buf);
}

/* "nread == 0 and addr == NULL: nothing to read"; nread < 0: a transient error (an ICMP
 * port unreachable on Linux) kept for the next receive. */
static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
    udp_t *u = h->data;
    (void)flags;
    if (nread < 0) {
        u->err = (int)nread;
    } else if (addr) {
        if (u->queued >= UDP_QUEUE_MAX) {
            u->dropped++;
            return;
        }
        dgram_t *d = malloc(sizeof *d + (size_t)nread);
        if (!d) {
            u->dropped++;
            return;
        }
        d->next = NULL;
        d->len = (size_t)nread;
        memcpy(d->data, buf->base, d->len);
        memset(&d->from, 0, sizeof d->from);
        memcpy(&d->from, addr,
               addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in));
        if (u->tail)
            u->tail->next = d;
        else
            u->head = d;
        u->tail = d;
        u->queued++;
    } else {
        return;
    }
    if (u->waiter)
        loom_wake(u->waiter);
}

static int start_receiving(lua_State *L, udp_t *u) {
    if (u->receiving)
        return 0;
    int rc = uv_udp_recv_start(&u->udp, on_alloc, on_recv);
    if (rc < 0)
        return loom_fail_uv(L, "closed", rc, "udp receive");
    u->receiving = 1;
    return 0;
}

static void push_addr(lua_State *L, const struct sockaddr_storage *ss) {
    char ip[64] = "?";
    if (ss->ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)ss, ip, sizeof ip);
    else
        uv_ip4_name((const struct sockaddr_in *)ss, ip, sizeof ip);
    lua_pushstring(L, ip);
    lua_pushinteger(L, loom_addr_port(ss));
}

static udp_t *check_udp(lua_State *L) {
    udp_t *u = *(udp_t **)luaL_checkudata(L, 1, UDP_MT);
    if (!u)
        luaL_argerror(L, 1, "udp socket expected");
    return u;
}

/* core.udp_new() -> udp socket (no OS socket until bind or the first send) */
static int l_udp_new(lua_State *L) {
    loom_t *h = loom_host(L);
    udp_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    udp_t *u = calloc(1, sizeof *u);
    if (!u)
        return luaL_error(L, "out of memory");
    u->host = h;
    uv_udp_init(h->loop, &u->udp);
    u->udp.data = u;
    loom_handle_opened(h);
    loom_res_add(h, &u->res, udp_res_close);
    *box = u;
    u->boxed = 1;
    luaL_setmetatable(L, UDP_MT);
    return 1;
}

/* u:bind(ip, port) -> true | nil, "listen: ..." (and starts queueing datagrams) */
static int l_udp_bind(lua_State *L) {
    udp_t *u = check_udp(L);
    const char *ip = luaL_checkstring(L, 2);
    lua_Integer port = luaL_checkinteger(L, 3);
    luaL_argcheck(L, port >= 0 && port <= 65535, 3, "port out of range");
    if (u->closed)
        return loom_fail(L, "closed", "udp socket closed");
    struct sockaddr_storage ss;
    if (loom_addr_parse(ip, (int)port, &ss) != 0)
        return luaL_argerror(L, 2, "numeric IP address expected");
    int rc = uv_udp_bind(&u->udp, (const struct sockaddr *)&ss, 0);
    if (rc < 0) {
        lua_pushfstring(L, "%s:%d", ip, (int)port);
        return loom_fail_uv(L, "listen", rc, lua_tostring(L, -1));
    }
    int n = start_receiving(L, u);
    if (n)
        return n;
    lua_pushboolean(L, 1);
    return 1;
}

static void on_sent(uv_udp_send_t *req, int status) {
    sendreq_t *s = req->data;
    (void)status; /* a datagram is fire and forget: a late failure has nobody to go to */
    loom_handle_closed(s->host);
    free(s);
}

/* u:send(data, ip, port) -> true | nil, "connect: ..." | nil, "closed: ...". Sends at once
 * when the socket can; else queues a copy in libuv (no wait: datagrams are unreliable). */
static int l_udp_send(lua_State *L) {
    udp_t *u = check_udp(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    const char *ip = luaL_checkstring(L, 3);
    lua_Integer port = luaL_checkinteger(L, 4);
    luaL_argcheck(L, port > 0 && port <= 65535, 4, "port out of range");
    if (u->closed)
        return loom_fail(L, "closed", "udp socket closed");
    struct sockaddr_storage ss;
    if (loom_addr_parse(ip, (int)port, &ss) != 0)
        return luaL_argerror(L, 3, "numeric IP address expected");
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int rc = uv_udp_try_send(&u->udp, &b, 1, (const struct sockaddr *)&ss);
    if (rc == UV_EAGAIN || rc == UV_ENOSYS) {
        sendreq_t *s = malloc(sizeof *s + len);
        if (!s)
            return luaL_error(L, "out of memory");
        memcpy(s->data, data, len);
        s->host = u->host;
        s->req.data = s;
        b = uv_buf_init(s->data, (unsigned)len);
        rc = uv_udp_send(&s->req, &u->udp, &b, 1, (const struct sockaddr *)&ss, on_sent);
        if (rc < 0)
            free(s);
        else
            loom_handle_opened(u->host);
    }
    if (rc < 0) {
        lua_pushfstring(L, "%s:%d", ip, (int)port);
        return loom_fail_uv(L, "connect", rc, lua_tostring(L, -1));
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int recv_build(lua_State *L, void *ud, int reason) {
    udp_t *u = ud;
    u->waiter = NULL;
    dgram_t *d = u->head;
    if (d) {
        u->head = d->next;
        if (!u->head)
            u->tail = NULL;
        u->queued--;
        lua_pushlstring(L, d->data, d->len);
        push_addr(L, &d->from);
        free(d);
        return 3;
    }
    if (u->closed)
        return loom_fail(L, "closed", "udp socket closed");
    if (u->err) {
        int e = u->err;
        u->err = 0;
        return loom_fail_uv(L, "closed", e, "udp receive");
    }
    (void)reason;
    return loom_fail(L, "timeout", "no datagram came");
}

static void recv_abort(void *ud) {
    ((udp_t *)ud)->waiter = NULL;
}

/* u:receive([timeout]) -> data, ip, port | nil, "timeout: ..." | nil, "closed: ..." */
static int l_udp_receive(lua_State *L) {
    udp_t *u = check_udp(L);
    double timeout = luaL_optnumber(L, 2, -1);
    if (u->head || u->closed || u->err)
        return recv_build(L, u, LOOM_WAKE_OK);
    loom_task_t *t = loom_task_self(L, "receive");
    if (u->waiter)
        return luaL_error(L, "receive: another task is already receiving on this socket");
    int n = start_receiving(L, u);
    if (n)
        return n;
    u->waiter = t;
    return loom_park(L, t, timeout, recv_build, recv_abort, u);
}

/* u:getsockname() -> ip, port | nil, err */
static int l_udp_getsockname(lua_State *L) {
    udp_t *u = check_udp(L);
    if (u->closed)
        return loom_fail(L, "closed", "udp socket closed");
    struct sockaddr_storage ss;
    int len = sizeof ss;
    int rc = uv_udp_getsockname(&u->udp, (struct sockaddr *)&ss, &len);
    if (rc < 0)
        return loom_fail_uv(L, "closed", rc, "getsockname");
    push_addr(L, &ss);
    return 2;
}

/* u:dropped() -> datagrams dropped because the queue was full */
static int l_udp_dropped(lua_State *L) {
    lua_pushinteger(L, check_udp(L)->dropped);
    return 1;
}

static int l_udp_close(lua_State *L) {
    udp_close(check_udp(L));
    return 0;
}

static int l_udp_gc(lua_State *L) {
    udp_t *u = *(udp_t **)luaL_checkudata(L, 1, UDP_MT);
    if (!u)
        return 0;
    udp_close(u);
    u->boxed = 0;
    udp_free_if_done(u);
    return 0;
}

static const luaL_Reg udp_methods[] = {
    {"bind", l_udp_bind},
    {"send", l_udp_send},
    {"receive", l_udp_receive},
    {"getsockname", l_udp_getsockname},
    {"dropped", l_udp_dropped},
    {"close", l_udp_close},
    {NULL, NULL},
};

static const luaL_Reg udp_funcs[] = {
    {"udp_new", l_udp_new},
    {NULL, NULL},
};

int loom_open_udp(lua_State *L) {
    luaL_newmetatable(L, UDP_MT);
    luaL_newlib(L, udp_methods);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pushcfunction(L, l_udp_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_udp_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_setfuncs(L, udp_funcs, 0);
    return 0;
}
