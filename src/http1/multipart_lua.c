/*
 * multipart_lua.c - the Lua side of the multipart/form-data parser (multipart.h) for
 * loom.multipart: a parser object fed the body's pieces as the engine hands them over,
 * one event per call. Body bytes reach Lua once, as a string cut from the piece (or from
 * the few bytes the parser kept between pieces); the part's head is gathered into a table
 * here, so Lua sees one event per part head rather than one per header line.
 *
 *     core.mp_boundary(ctype) -> boundary | nil, err, status
 *     core.mp_new(boundary, max_parts, max_part_header) -> parser
 *     parser:next(piece, pos) -> nil                        every byte from pos was used
 *                              | 1, pos, headers, name, filename, type     a part's head
 *                              | 2, pos, bytes                             body bytes
 *                              | 3, pos                                    the part ended
 *                              | 4, pos                                    the close delimiter
 *                              | false, err, status                        a malformed body
 *     parser:finish() -> true | false, err, status          at the body's end
 *     core.mp_save(path) -> saver | nil, err                 part:save's file, on the pool
 *     saver:write(s) -> true | nil, err;  saver:close() -> true | nil, err
 *
 * pos counts the bytes of piece already used (0 at first); a call goes on from there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include "multipart.h"
#include "host.h"
#include "fail.h"

#define MP_MT "loom.multipart_parser"

typedef struct {
    loom_multipart_t *mp;
} mp_box_t;

enum { EV_PART = 1, EV_DATA, EV_PART_END, EV_END };

static mp_box_t *check_box(lua_State *L) {
    mp_box_t *b = luaL_checkudata(L, 1, MP_MT);
    if (!b->mp)
        luaL_error(L, "multipart parser is closed");
    return b;
}

static int push_error(lua_State *L, int rc) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, loom_multipart_strerror(rc));
    lua_pushinteger(L, loom_multipart_status(rc));
    return 3;
}

/* core.mp_boundary(ctype) -> boundary | nil, err, status */
static int l_mp_boundary(lua_State *L) {
    size_t len;
    const char *ct = luaL_optlstring(L, 1, "", &len);
    const char *b;
    size_t blen;
    int rc = loom_multipart_boundary(ct, len, &b, &blen);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, loom_multipart_strerror(rc));
        lua_pushinteger(L, rc == LOOM_MP_ENOT_FORM ? 415 : loom_multipart_status(rc));
        return 3;
    }
    lua_pushlstring(L, b, blen);
    return 1;
}

/* core.mp_new(boundary, max_parts, max_part_header) -> parser */
static int l_mp_new(lua_State *L) {
    size_t blen;
    const char *b = luaL_checklstring(L, 1, &blen);
    lua_Integer max_parts = luaL_checkinteger(L, 2);
    lua_Integer max_head = luaL_checkinteger(L, 3);
    luaL_argcheck(L, blen >= 1 && blen <= LOOM_MP_MAX_BOUNDARY, 1, "boundary of 1 to 70 bytes");
    luaL_argcheck(L, max_parts >= 0, 2, "must not be negative");
    luaL_argcheck(L, max_head >= 0, 3, "must not be negative");
    /* uservalue 1: the head being read (a table of its headers) */
    mp_box_t *box = lua_newuserdatauv(L, sizeof *box, 1);
    box->mp = NULL;
    luaL_setmetatable(L, MP_MT);
    box->mp = loom_multipart_new(b, blen, (size_t)max_parts, (size_t)max_head);
    if (!box->mp)
        return luaL_error(L, "multipart: out of memory or not a boundary");
    return 1;
}

/* parser:next(piece, pos): see the top of the file */
static int l_mp_next(lua_State *L) {
    mp_box_t *box = check_box(L);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    lua_Integer pos = luaL_checkinteger(L, 3);
    luaL_argcheck(L, pos >= 0 && (size_t)pos <= len, 3, "position outside the piece");
    size_t at = (size_t)pos;
    for (;;) {
        size_t used = 0;
        loom_mp_event_t ev;
        int rc = loom_multipart_execute(box->mp, p + at, len - at, &used, &ev);
        at += used;
        if (rc < 0)
            return push_error(L, rc);
        switch (rc) {
        case LOOM_MP_MORE:
            lua_pushnil(L);
            return 1;
        case LOOM_MP_PART:
            lua_createtable(L, 0, 4);
            lua_setiuservalue(L, 1, 1);
            break;
        case LOOM_MP_HEADER: {
            lua_getiuservalue(L, 1, 1);
            lua_pushlstring(L, ev.name, ev.name_len);
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) { /* a repeated header: joined, as req.headers */
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, ev.data, ev.len);
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, ev.data, ev.len);
            }
            lua_rawset(L, -3);
            lua_pop(L, 1);
            break;
        }
        case LOOM_MP_HEADERS_END: {
            const loom_mp_part_t *part = loom_multipart_part(box->mp);
            lua_pushinteger(L, EV_PART);
            lua_pushinteger(L, (lua_Integer)at);
            lua_getiuservalue(L, 1, 1);
            lua_pushnil(L);
            lua_setiuservalue(L, 1, 1);
            lua_pushlstring(L, part->name, part->name_len);
            if (part->filename)
                lua_pushlstring(L, part->filename, part->filename_len);
            else
                lua_pushnil(L);
            if (part->type)
                lua_pushlstring(L, part->type, part->type_len);
            else
                lua_pushnil(L);
            return 6;
        }
        case LOOM_MP_DATA:
            lua_pushinteger(L, EV_DATA);
            lua_pushinteger(L, (lua_Integer)at);
            if (ev.data == p && ev.len == len)
                lua_pushvalue(L, 2); /* the whole piece is body: the same string, no copy */
            else
                lua_pushlstring(L, ev.data, ev.len);
            return 3;
        case LOOM_MP_PART_END:
        case LOOM_MP_END:
            lua_pushinteger(L, rc == LOOM_MP_END ? EV_END : EV_PART_END);
            lua_pushinteger(L, (lua_Integer)at);
            return 2;
        default:
            return luaL_error(L, "multipart: unknown event %d", rc);
        }
    }
}

/* parser:finish() -> true | false, err, status */
static int l_mp_finish(lua_State *L) {
    mp_box_t *box = check_box(L);
    int rc = loom_multipart_finish(box->mp);
    if (rc < 0)
        return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_mp_gc(lua_State *L) {
    mp_box_t *box = luaL_checkudata(L, 1, MP_MT);
    if (box->mp)
        loom_multipart_free(box->mp);
    box->mp = NULL;
    return 0;
}

/* ---------------------------------------------------------------- part:save's file */

/* part:save writes through a saver: the part's pieces are copied into a buffer of its own
 * (one copy, rather than a concatenation and then fs_write's copy), and each SAVE_BATCH
 * bytes go to the file in one thread-pool job; the last job writes the rest and closes the
 * file. A job owns its buffer, and when the task stops waiting (cancelled) also the
 * descriptor: it closes the file itself once done, so the number is never closed while a
 * write may still use it. */
#define SAVER_MT "loom.multipart_saver"
#define SAVE_BATCH (256 * 1024)

enum { SV_OPEN, SV_WRITE, SV_CLOSE };

typedef struct {
    uv_work_t req;
    loom_t *host;
    loom_task_t *task; /* NULL once the task let go */
    int op, done, fd, own_fd;
    int err; /* a libuv error, or 0 */
    char *buf;
    size_t len;
    char path[];
} sjob_t;

typedef struct {
    int fd; /* -1 once closed */
    char *buf;
    size_t len;
    sjob_t *job; /* in flight, or NULL */
} saver_t;

static void sjob_run(uv_work_t *req) {
    sjob_t *j = (sjob_t *)req;
    if (j->op == SV_OPEN) {
        j->fd = open(j->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (j->fd < 0)
            j->err = uv_translate_sys_error(errno);
        return;
    }
    for (size_t off = 0; off < j->len;) {
        ssize_t n = write(j->fd, j->buf + off, j->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            j->err = uv_translate_sys_error(errno);
            break;
        }
        off += (size_t)n;
    }
    if (j->op == SV_CLOSE) { /* an abandoned write's descriptor is closed on the loop */
        if (close(j->fd) != 0 && !j->err)
            j->err = uv_translate_sys_error(errno);
        j->fd = -1;
    }
}

static void sjob_free(sjob_t *j) {
    if (j->own_fd && j->fd >= 0)
        close(j->fd);
    free(j->buf);
    free(j);
}

static void sjob_done(uv_work_t *req, int status) {
    sjob_t *j = (sjob_t *)req;
    loom_handle_closed(j->host);
    j->done = 1;
    if (status == UV_ECANCELED && !j->err)
        j->err = UV_ECANCELED;
    if (!j->task) {
        sjob_free(j);
        return;
    }
    loom_wake(j->task);
}

static int sjob_build(lua_State *L, void *ud, int reason) {
    saver_t *sv = ud;
    sjob_t *j = sv->job;
    (void)reason;
    sv->job = NULL;
    int err = j->err, op = j->op;
    if (op == SV_OPEN && !err)
        sv->fd = j->fd;
    if (op == SV_CLOSE)
        sv->fd = -1; /* closed by the job */
    j->fd = -1;
    j->own_fd = 0;
    if (err) {
        int n = loom_fail(L, "fs", "%s %s (%s)", uv_err_name(err), uv_strerror(err),
                          op == SV_OPEN ? j->path : "write");
        sjob_free(j);
        return n;
    }
    sjob_free(j);
    if (op == SV_OPEN) {
        lua_settop(L, 1);
        return 1; /* the saver */
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void sjob_abort(void *ud) {
    saver_t *sv = ud;
    sjob_t *j = sv->job;
    sv->job = NULL;
    j->task = NULL;
    if (j->op != SV_OPEN && sv->fd >= 0) { /* the job may still write: it closes the file */
        j->own_fd = 1;
        sv->fd = -1;
    }
    if (j->done)
        sjob_free(j);
    else
        uv_cancel((uv_req_t *)&j->req); /* fails once it runs: sjob_done frees it then */
}

/* Starts job j for the saver at index 1 and parks until it is done. */
static int sjob_start(lua_State *L, saver_t *sv, sjob_t *j) {
    loom_task_t *t = loom_task_self(L, "save");
    j->host = loom_host(L);
    j->task = t;
    j->req.data = j;
    int rc = uv_queue_work(j->host->loop, &j->req, sjob_run, sjob_done);
    if (rc < 0) {
        if (j->op == SV_CLOSE && sv->fd >= 0) { /* the file is closed either way */
            close(sv->fd);
            sv->fd = -1;
        }
        sjob_free(j);
        return loom_fail(L, "fs", "%s %s (save)", uv_err_name(rc), uv_strerror(rc));
    }
    loom_handle_opened(j->host); /* teardown waits for the pool as for a handle */
    sv->job = j;
    lua_settop(L, 1);
    return loom_park(L, t, -1, sjob_build, sjob_abort, sv);
}

static sjob_t *sjob_new(lua_State *L, int op, const char *path) {
    size_t plen = path ? strlen(path) + 1 : 1;
    sjob_t *j = calloc(1, sizeof *j + plen);
    if (!j)
        luaL_error(L, "out of memory");
    j->op = op;
    j->fd = -1;
    j->own_fd = op == SV_OPEN; /* what it opens is its own until the build takes it */
    if (path)
        memcpy(j->path, path, plen);
    return j;
}

static saver_t *check_saver(lua_State *L) {
    saver_t *sv = luaL_checkudata(L, 1, SAVER_MT);
    if (sv->job)
        luaL_error(L, "save: the file is busy (another task writes it)");
    return sv;
}

/* core.mp_save(path) -> saver | nil, "fs: ..." (the file created or truncated, mode 0644) */
static int l_mp_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    sjob_t *j = sjob_new(L, SV_OPEN, path); /* the path copied before it may go */
    saver_t *sv = lua_newuserdatauv(L, sizeof *sv, 0);
    memset(sv, 0, sizeof *sv);
    sv->fd = -1;
    luaL_setmetatable(L, SAVER_MT);
    lua_replace(L, 1);
    return sjob_start(L, sv, j);
}

/* Hands the gathered bytes to job j (which then owns them). */
static void give_buffer(saver_t *sv, sjob_t *j) {
    j->buf = sv->buf;
    j->len = sv->len;
    j->fd = sv->fd;
    sv->buf = NULL;
    sv->len = 0;
}

/* saver:write(s) -> true | nil, err: s gathered; a full batch written (thread pool) */
static int l_saver_write(lua_State *L) {
    saver_t *sv = check_saver(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (sv->fd < 0)
        return luaL_error(L, "save: the file is closed");
    if (!sv->buf) {
        sv->buf = malloc(SAVE_BATCH + (n > SAVE_BATCH ? n : 0));
        if (!sv->buf)
            return luaL_error(L, "out of memory");
        sv->len = 0;
    }
    if (sv->len + n > SAVE_BATCH) { /* room for s: a buffer as large as it takes */
        char *nb = realloc(sv->buf, sv->len + n);
        if (!nb)
            return luaL_error(L, "out of memory");
        sv->buf = nb;
    }
    memcpy(sv->buf + sv->len, s, n);
    sv->len += n;
    if (sv->len < SAVE_BATCH) {
        lua_pushboolean(L, 1);
        return 1;
    }
    sjob_t *j = sjob_new(L, SV_WRITE, NULL);
    give_buffer(sv, j);
    return sjob_start(L, sv, j);
}

/* saver:close() -> true | nil, err: the rest written and the file closed, in one job */
static int l_saver_close(lua_State *L) {
    saver_t *sv = check_saver(L);
    if (sv->fd < 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    sjob_t *j = sjob_new(L, SV_CLOSE, NULL);
    give_buffer(sv, j);
    return sjob_start(L, sv, j);
}

/* __gc / __close: a saver let go without close() (its task raised): the file is closed at
 * once, unless a job still writes it (that job closes it). */
static int l_saver_gc(lua_State *L) {
    saver_t *sv = luaL_checkudata(L, 1, SAVER_MT);
    if (!sv->job && sv->fd >= 0) {
        close(sv->fd);
        sv->fd = -1;
    }
    free(sv->buf);
    sv->buf = NULL;
    return 0;
}

static const luaL_Reg saver_methods[] = {
    {"write", l_saver_write},
    {"close", l_saver_close},
    {NULL, NULL},
};

static const luaL_Reg mp_methods[] = {
    {"next", l_mp_next},
    {"finish", l_mp_finish},
    {"close", l_mp_gc},
    {NULL, NULL},
};

static const luaL_Reg mp_funcs[] = {
    {"mp_boundary", l_mp_boundary},
    {"mp_new", l_mp_new},
    {"mp_save", l_mp_save},
    {NULL, NULL},
};

int loom_open_multipart(lua_State *L) {
    loom_new_class(L, MP_MT, mp_methods, l_mp_gc);
    loom_new_class(L, SAVER_MT, saver_methods, l_saver_gc);
    luaL_setfuncs(L, mp_funcs, 0);
    return 0;
}
