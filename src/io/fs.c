/*
 * fs.c - files for tasks: core.stat (in place, for static files: one short syscall, as nginx
 * does) and the loom.fs operations on libuv's uv_fs_* (the thread pool; the calling task
 * parks). Knows nothing of HTTP.
 *
 * A request outlives its task when the task is cancelled: "Only cancellation of uv_fs_t,
 * uv_getaddrinfo_t, uv_getnameinfo_t, uv_random_t and uv_work_t requests is currently
 * supported" and uv_cancel fails once the work runs, so the callback always comes. The
 * request (and the buffer a read fills) is freed there or by the task's result builder,
 * whichever comes last; an abandoned request never wakes anyone.
 */
#define _GNU_SOURCE /* preadv2, RWF_NOWAIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <lauxlib.h>
#include "host.h"
#include "fail.h"

/* core.stat(path) -> {type = "file"|"directory"|"other", size, mtime} | nil, err */
static int l_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0)
        return loom_fail(L, "closed", "%s (%s)", strerror(errno), path);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_mtime);
    lua_setfield(L, -2, "mtime");
    return 1;
}

/* ---------------------------------------------------------------- requests */

typedef struct fsreq fsreq_t;
typedef int (*push_fn)(lua_State *L, fsreq_t *r);

struct fsreq {
    uv_fs_t req;
    loom_t *host;
    loom_task_t *task; /* NULL once the task let go (cancelled or timed out) */
    push_fn push;      /* pushes the results of a request that succeeded */
    int done;
    size_t cap; /* bytes of buf (reads) */
    char buf[]; /* a read's buffer, or the data of a write, or the path for messages */
};

/* One finished read request kept per thread, with its buffer, for the next read: fresh
 * memory costs a page fault per 4 KiB on its first touch (a 100 MB read loop into new 1 MiB
 * buffers measured several times slower than into one reused buffer, as `cat` does). */
#define CACHE_MIN (64 * 1024)
#define CACHE_MAX (8 * 1024 * 1024)
static _Thread_local fsreq_t *cached;

static void fsreq_free(fsreq_t *r) {
    uv_fs_req_cleanup(&r->req);
    if (!cached && r->cap >= CACHE_MIN && r->cap <= CACHE_MAX)
        cached = r;
    else
        free(r);
}

static fsreq_t *fsreq_alloc(size_t cap) {
    fsreq_t *r = cached;
    if (r && r->cap >= cap && cap >= CACHE_MIN) {
        cached = NULL;
        cap = r->cap;
    } else {
        r = malloc(sizeof *r + cap); /* the buffer is not cleared: a read fills it */
        if (!r)
            return NULL;
    }
    memset(r, 0, sizeof *r);
    r->cap = cap;
    return r;
}

static void on_fs(uv_fs_t *req) {
    fsreq_t *r = req->data;
    loom_handle_closed(r->host);
    r->done = 1;
    if (!r->task) {
        fsreq_free(r);
        return;
    }
    loom_wake(r->task);
}

static const char *req_path(fsreq_t *r) {
    return r->req.path ? r->req.path : "";
}

static int fs_build(lua_State *L, void *ud, int reason) {
    fsreq_t *r = ud;
    (void)reason; /* no deadline: only OK comes here */
    int n;
    if (r->req.result < 0)
        n = loom_fail(L, "fs", "%s %s (%s)", uv_err_name((int)r->req.result),
                      uv_strerror((int)r->req.result), req_path(r));
    else
        n = r->push(L, r);
    fsreq_free(r);
    return n;
}

static void fs_abort(void *ud) {
    fsreq_t *r = ud;
    r->task = NULL;
    if (r->done) /* finished and not yet taken: nothing will free it but us */
        fsreq_free(r);
    else
        uv_cancel((uv_req_t *)&r->req); /* fails once it runs: on_fs frees it then */
}

static fsreq_t *fsreq_new(lua_State *L, size_t cap, push_fn push) {
    loom_task_t *t = loom_task_self(L, "fs");
    fsreq_t *r = fsreq_alloc(cap);
    if (!r)
        luaL_error(L, "out of memory");
    r->host = loom_host(L);
    r->task = t;
    r->push = push;
    r->req.data = r;
    return r;
}

/* Parks on a started request, or fails at once when libuv refused to start it. */
static int fs_start(lua_State *L, fsreq_t *r, int rc, const char *ctx) {
    if (rc < 0) {
        free(r);
        return loom_fail(L, "fs", "%s %s (%s)", uv_err_name(rc), uv_strerror(rc), ctx);
    }
    loom_handle_opened(r->host); /* teardown waits for the thread pool like for a handle */
    return loom_park(L, r->task, -1, fs_build, fs_abort, r);
}

static int push_true(lua_State *L, fsreq_t *r) {
    (void)r;
    lua_pushboolean(L, 1);
    return 1;
}

static int push_result(lua_State *L, fsreq_t *r) {
    lua_pushinteger(L, (lua_Integer)r->req.result);
    return 1;
}

static int push_read(lua_State *L, fsreq_t *r) {
    lua_pushlstring(L, r->buf, (size_t)r->req.result);
    return 1;
}

static const char *type_name(uint64_t mode) {
    return S_ISREG(mode) ? "file" : S_ISDIR(mode) ? "directory" : S_ISLNK(mode) ? "link" : "other";
}

static void push_stat_fields(lua_State *L, uint64_t mode, int64_t size, double mtime) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, type_name(mode));
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)(mode & 07777));
    lua_setfield(L, -2, "mode");
}

static int push_stat(lua_State *L, fsreq_t *r) {
    const uv_stat_t *st = &r->req.statbuf;
    push_stat_fields(L, st->st_mode, (int64_t)st->st_size,
                     (double)st->st_mtim.tv_sec + (double)st->st_mtim.tv_nsec / 1e9);
    return 1;
}

static int push_scandir(lua_State *L, fsreq_t *r) {
    uv_dirent_t ent;
    lua_newtable(L);
    int i = 0;
    while (uv_fs_scandir_next(&r->req, &ent) != UV_EOF) {
        lua_pushstring(L, ent.name);
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

/* ---------------------------------------------------------------- operations */

/* core.fs_stat(path) -> {type, size, mtime, mode} | nil, "fs: ..." */
static int l_fs_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    fsreq_t *r = fsreq_new(L, 0, push_stat);
    return fs_start(L, r, uv_fs_stat(r->host->loop, &r->req, path, on_fs), path);
}

/* core.fs_fstat(fd) -> as fs_stat. In place: fstat of an open file reads the inode the
 * kernel already holds and never waits on a disk (fs.read calls it before each read). */
static int l_fs_fstat(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    loom_task_self(L, "fs"); /* as the other operations: inside a task */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        return loom_fail(L, "fs", "%s %s (fd)", uv_err_name(-e), uv_strerror(-e));
    }
    push_stat_fields(L, st.st_mode, (int64_t)st.st_size,
                     (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9);
    return 1;
}

/* core.fs_mkdir(path [, mode]) -> true | nil, err */
static int l_fs_mkdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int mode = (int)luaL_optinteger(L, 2, 0777);
    fsreq_t *r = fsreq_new(L, 0, push_true);
    return fs_start(L, r, uv_fs_mkdir(r->host->loop, &r->req, path, mode, on_fs), path);
}

/* core.fs_unlink(path), core.fs_rmdir(path) -> true | nil, err */
static int l_fs_unlink(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    fsreq_t *r = fsreq_new(L, 0, push_true);
    return fs_start(L, r, uv_fs_unlink(r->host->loop, &r->req, path, on_fs), path);
}

static int l_fs_rmdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    fsreq_t *r = fsreq_new(L, 0, push_true);
    return fs_start(L, r, uv_fs_rmdir(r->host->loop, &r->req, path, on_fs), path);
}

/* core.fs_rename(from, to) -> true | nil, err */
static int l_fs_rename(lua_State *L) {
    const char *from = luaL_checkstring(L, 1);
    const char *to = luaL_checkstring(L, 2);
    fsreq_t *r = fsreq_new(L, 0, push_true);
    return fs_start(L, r, uv_fs_rename(r->host->loop, &r->req, from, to, on_fs), from);
}

/* core.fs_scandir(dir) -> {names} (no "." nor "..") | nil, err */
static int l_fs_scandir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    fsreq_t *r = fsreq_new(L, 0, push_scandir);
    return fs_start(L, r, uv_fs_scandir(r->host->loop, &r->req, path, 0, on_fs), path);
}

static int open_flags(lua_State *L, const char *mode) {
    static const struct {
        const char *mode;
        int flags;
    } modes[] = {{"r", O_RDONLY},
                 {"r+", O_RDWR},
                 {"w", O_WRONLY | O_CREAT | O_TRUNC},
                 {"w+", O_RDWR | O_CREAT | O_TRUNC},
                 {"a", O_WRONLY | O_CREAT | O_APPEND},
                 {"a+", O_RDWR | O_CREAT | O_APPEND},
                 {"wx", O_WRONLY | O_CREAT | O_EXCL},
                 {NULL, 0}};
    for (int i = 0; modes[i].mode; i++)
        if (strcmp(modes[i].mode, mode) == 0)
            return modes[i].flags | O_CLOEXEC;
    return luaL_argerror(L, 2, "mode must be one of r, r+, w, w+, a, a+, wx");
}

/* core.fs_open(path, mode [, perm]) -> fd | nil, err */
static int l_fs_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int flags = open_flags(L, luaL_optstring(L, 2, "r"));
    int perm = (int)luaL_optinteger(L, 3, 0644);
    fsreq_t *r = fsreq_new(L, 0, push_result);
    return fs_start(L, r, uv_fs_open(r->host->loop, &r->req, path, flags, perm, on_fs), path);
}

/* core.fs_close(fd) -> true | nil, err */
static int l_fs_close(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    fsreq_t *r = fsreq_new(L, 0, push_true);
    return fs_start(L, r, uv_fs_close(r->host->loop, &r->req, fd, on_fs), "close");
}

/* core.fs_close_now(fd): the synchronous close a collected file falls back to */
static int l_fs_close_now(lua_State *L) {
    uv_fs_t req;
    uv_fs_close(NULL, &req, (int)luaL_checkinteger(L, 1), NULL);
    uv_fs_req_cleanup(&req);
    return 0;
}

/* Bytes a task may still read in place before one read goes through the thread pool (and
 * the loop gets a turn): a loop reading a large cached file never starves the others for
 * more than this much copying. */
#define INLINE_BUDGET (8 * 1024 * 1024)
static _Thread_local size_t inline_left = INLINE_BUDGET;

/* Reads what the page cache already holds without blocking (preadv2 with RWF_NOWAIT, as
 * nginx reads cached files in place): pushes the data ("" at the end) and returns 1, or
 * pushes nil, err and returns 2; 0 when the data is not there yet (or the kernel cannot
 * tell, or the budget above is spent): the read then goes to the thread pool. Spares the
 * two thread hops per read that dominated a streaming read of a cached file. */
static int read_cached(lua_State *L, int fd, size_t n, int64_t off) {
#ifdef RWF_NOWAIT
    if (n > inline_left) {
        inline_left = INLINE_BUDGET;
        return 0;
    }
    fsreq_t *r = fsreq_alloc(n);
    if (!r)
        return 0;
    struct iovec iov = {r->buf, n};
    ssize_t got = preadv2(fd, &iov, 1, (off_t)off, RWF_NOWAIT);
    int e = errno, pushed = 0;
    if (got >= 0) {
        lua_pushlstring(L, r->buf, (size_t)got);
        inline_left -= got > 0 ? (size_t)got : 1;
        pushed = 1;
    } else if (e == EBADF || e == EISDIR || e == EFAULT) {
        pushed = loom_fail(L, "fs", "%s %s (read)", uv_err_name(-e), uv_strerror(-e));
    }
    fsreq_free(r); /* EAGAIN, EOPNOTSUPP, ENOSYS, EINVAL...: the thread pool decides */
    return pushed;
#else
    (void)L, (void)fd, (void)n, (void)off;
    return 0;
#endif
}

/* core.fs_read(fd, n [, offset]) -> data ("" at the end) | nil, err. The buffer belongs to
 * the request: a cancelled read fills memory nobody else uses. */
static int l_fs_read(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n > 0 && n <= (1 << 30), 2, "1 to 2^30 bytes expected");
    int64_t off = (int64_t)luaL_optinteger(L, 3, -1);
    loom_task_self(L, "fs"); /* outside a task: raises, as a parked read would */
    int pushed = read_cached(L, fd, (size_t)n, off);
    if (pushed)
        return pushed;
    fsreq_t *r = fsreq_new(L, (size_t)n, push_read);
    uv_buf_t b = uv_buf_init(r->buf, (unsigned)n);
    return fs_start(L, r, uv_fs_read(r->host->loop, &r->req, fd, &b, 1, off, on_fs), "read");
}

/* core.fs_write(fd, data [, offset]) -> bytes written | nil, err (a copy of data is written:
 * the string may be collected while the request runs on after a cancel) */
static int l_fs_write(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int64_t off = (int64_t)luaL_optinteger(L, 3, -1);
    fsreq_t *r = fsreq_new(L, len, push_result);
    memcpy(r->buf, data, len);
    uv_buf_t b = uv_buf_init(r->buf, (unsigned)len);
    return fs_start(L, r, uv_fs_write(r->host->loop, &r->req, fd, &b, 1, off, on_fs), "write");
}

static const luaL_Reg fs_funcs[] = {
    {"stat", l_stat},
    {"fs_stat", l_fs_stat},
    {"fs_fstat", l_fs_fstat},
    {"fs_mkdir", l_fs_mkdir},
    {"fs_unlink", l_fs_unlink},
    {"fs_rmdir", l_fs_rmdir},
    {"fs_rename", l_fs_rename},
    {"fs_scandir", l_fs_scandir},
    {"fs_open", l_fs_open},
    {"fs_close", l_fs_close},
    {"fs_close_now", l_fs_close_now},
    {"fs_read", l_fs_read},
    {"fs_write", l_fs_write},
    {NULL, NULL},
};

int loom_open_fs(lua_State *L) {
    luaL_setfuncs(L, fs_funcs, 0);
    return 0;
}
