/*
 * process.c - child processes for tasks, through uv_spawn: start one (each of stdin, stdout
 * and stderr inherited, /dev/null, or a pipe that is a loom.stream like a socket's, from
 * src/io/stream.c), wait for it (parks), signal it. loom.process (lua/loom/runtime.lua)
 * and the supervisor of `workers = N` stand on this. Knows nothing of HTTP.
 *
 * The process box holds the pipe streams as user values, so they live at least as long as
 * it does; each is closed on its own (close, <close> or collection). Collecting the box
 * leaves the child running; it is still reaped when it exits.
 */
#include <signal.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"
#include "fail.h"
#include "stream.h"

#define PROCESS_MT "loom.process"

typedef struct {
    loom_res_t res;
    loom_t *host;
    uv_process_t proc;
    loom_task_t *waiter;
    int exited, closed, boxed, handle_closed;
    int64_t status;
    int signal;
    int pid;
} proc_t;

static void proc_free_if_done(proc_t *p) {
    if (p->handle_closed && !p->boxed)
        free(p);
}

static void on_proc_closed(uv_handle_t *h) {
    proc_t *p = h->data;
    p->handle_closed = 1;
    loom_handle_closed(p->host);
    proc_free_if_done(p);
}

static void proc_close(proc_t *p) {
    if (p->closed)
        return;
    p->closed = 1;
    loom_res_remove(&p->res);
    uv_close((uv_handle_t *)&p->proc, on_proc_closed);
}

static void proc_res_close(loom_res_t *r) {
    proc_close((proc_t *)r);
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig) {
    proc_t *p = h->data;
    p->exited = 1;
    p->status = status;
    p->signal = sig;
    if (p->waiter)
        loom_wake(p->waiter);
    proc_close(p);
}

static const struct {
    const char *name;
    int num;
} signames[] = {
    {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT},     {"SIGKILL", SIGKILL}, {"SIGHUP", SIGHUP},
    {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2},   {"SIGQUIT", SIGQUIT}, {"SIGPIPE", SIGPIPE},
    {"SIGALRM", SIGALRM}, {"SIGABRT", SIGABRT},   {"SIGSEGV", SIGSEGV}, {"SIGBUS", SIGBUS},
    {"SIGFPE", SIGFPE},   {"SIGILL", SIGILL},     {"SIGSTOP", SIGSTOP}, {"SIGCONT", SIGCONT},
    {"SIGTSTP", SIGTSTP}, {"SIGWINCH", SIGWINCH}, {"SIGCHLD", SIGCHLD}, {"SIGTTIN", SIGTTIN},
    {"SIGTTOU", SIGTTOU}, {"SIGXCPU", SIGXCPU},   {"SIGXFSZ", SIGXFSZ}, {NULL, 0}};

static const char *signame(int num) {
    for (int i = 0; signames[i].name; i++)
        if (signames[i].num == num)
            return signames[i].name;
    return NULL;
}

/* Copies the array part of the table at idx into a NULL-terminated char* array on the
 * Lua stack (a userdata), so it lives as long as the call. */
static char **string_array(lua_State *L, int idx, const char *first) {
    int n = lua_istable(L, idx) ? (int)luaL_len(L, idx) : 0;
    int off = first ? 1 : 0;
    char **v = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + off + 1), 0);
    if (first)
        v[0] = (char *)first;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        v[i + off] = (char *)luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the string stays alive: the table holds it */
    }
    v[n + off] = NULL;
    return v;
}

enum { IO_INHERIT, IO_IGNORE, IO_PIPE };

/* The stdio modes and the cwd of the options table at idx (nil: all inherited). */
static const char *stdio_options(lua_State *L, int idx, int modes[3]) {
    static const char *const names[] = {"stdin", "stdout", "stderr"};
    static const char *const values[] = {"inherit", "ignore", "pipe", NULL};
    for (int i = 0; i < 3; i++)
        modes[i] = IO_INHERIT;
    if (lua_isnoneornil(L, idx))
        return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, idx, names[i]);
        if (!lua_isnil(L, -1)) {
            const char *v = lua_tostring(L, -1);
            int k = 0;
            while (v && values[k] && strcmp(values[k], v) != 0)
                k++;
            if (!v || !values[k])
                loom_opt_error(L, idx, names[i], "\"pipe\", \"inherit\" or \"ignore\"");
            modes[i] = k;
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, idx, "cwd");
    const char *cwd = NULL;
    if (!lua_isnil(L, -1) && !(cwd = lua_tostring(L, -1)))
        loom_opt_error(L, idx, "cwd", "string");
    lua_pop(L, 1); /* the options table keeps the string alive */
    return cwd;
}

/* A pipe for stdio[i] of a child: the child's end (blocking, as programs expect) in
 * *child_fd, the other opened in the stream's handle. 0 or a libuv error. libuv's own
 * UV_CREATE_PIPE would make a unix socket pair, which carried a flood at a fifth of a
 * pipe's rate (bench/process). The kernel's 64 KiB pipe is kept: with deeper ones (256 KiB)
 * st:read() returned larger strings, mapped afresh, at twice the CPU. */
static int open_pipe(loom_stream_t *st, int i, uv_file *child_fd) {
    uv_file fds[2];
    int rc = uv_pipe(fds, i == 0 ? 0 : UV_NONBLOCK_PIPE, i == 0 ? UV_NONBLOCK_PIPE : 0);
    if (rc != 0)
        return rc;
    uv_file mine = i == 0 ? fds[1] : fds[0];
    *child_fd = i == 0 ? fds[0] : fds[1];
    rc = uv_pipe_open((uv_pipe_t *)loom_stream_uv(st), mine);
    if (rc != 0) {
        close(fds[0]);
        close(fds[1]);
        *child_fd = -1;
    }
    return rc;
}

/* The close callback of a handle uv_spawn initialised and then failed to start. */
static void on_failed_closed(uv_handle_t *h) {
    proc_t *p = h->data;
    loom_handle_closed(p->host);
    free(p);
}

/* core.process_spawn(file, args [, env [, opts]]) -> process | nil, "process: ENOENT ...".
 * `env` (an array of "K=V") replaces the environment when given; opts: stdin, stdout,
 * stderr ("inherit", the default, "ignore" or "pipe": then proc.stdin... is a stream),
 * cwd. */
static int l_spawn(lua_State *L) {
    const char *file = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    loom_t *h = loom_host(L);
    int modes[3];
    const char *cwd = stdio_options(L, 4, modes);
    char **argv = string_array(L, 2, file);
    char **env = lua_istable(L, 3) ? string_array(L, 3, NULL) : NULL;
    proc_t **box = lua_newuserdatauv(L, sizeof *box, 3);
    *box = NULL;
    luaL_setmetatable(L, PROCESS_MT);
    int boxidx = lua_gettop(L);
    proc_t *p = calloc(1, sizeof *p);
    if (!p)
        return loom_fail(L, "process", "out of memory");
    loom_stream_t *pipes[3] = {NULL, NULL, NULL};
    uv_file child_fds[3] = {-1, -1, -1};
    uv_stdio_container_t stdio[3];
    for (int i = 0; i < 3; i++) {
        if (modes[i] == IO_PIPE) {
            pipes[i] = loom_stream_new_pipe(L, h);
            int rc = pipes[i] ? open_pipe(pipes[i], i, &child_fds[i]) : UV_ENOMEM;
            if (rc != 0) {
                for (int k = 0; k <= i; k++) {
                    if (pipes[k])
                        loom_stream_close(pipes[k]);
                    if (child_fds[k] >= 0)
                        close(child_fds[k]);
                }
                free(p);
                return loom_fail(L, "process", "%s %s (pipe)", uv_err_name(rc), uv_strerror(rc));
            }
            lua_setiuservalue(L, boxidx, i + 1);
            stdio[i].flags = UV_INHERIT_FD;
            stdio[i].data.fd = child_fds[i];
        } else if (modes[i] == IO_IGNORE) {
            stdio[i].flags = UV_IGNORE;
        } else {
            stdio[i].flags = UV_INHERIT_FD;
            stdio[i].data.fd = i;
        }
    }
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = file;
    o.args = argv;
    o.env = env;
    o.cwd = cwd;
    o.exit_cb = on_exit_cb;
    o.stdio = stdio;
    o.stdio_count = 3;
    p->host = h;
    p->proc.data = p;
    int rc = uv_spawn(h->loop, &p->proc, &o);
    loom_handle_opened(h);
    for (int i = 0; i < 3; i++)
        if (child_fds[i] >= 0)
            close(child_fds[i]); /* the child has its copy (or never will) */
    if (rc != 0) {
        for (int i = 0; i < 3; i++)
            if (pipes[i])
                loom_stream_close(pipes[i]);
        uv_close((uv_handle_t *)&p->proc, on_failed_closed); /* libuv: close even then */
        return loom_fail(L, "process", "%s %s (%s)", uv_err_name(rc), uv_strerror(rc), file);
    }
    for (int i = 0; i < 3; i++)
        if (pipes[i])
            loom_stream_opened(pipes[i]);
    loom_res_add(h, &p->res, proc_res_close);
    p->pid = p->proc.pid;
    *box = p;
    p->boxed = 1;
    lua_pushvalue(L, boxidx);
    return 1;
}

static proc_t *check_proc(lua_State *L) {
    proc_t **box = luaL_checkudata(L, 1, PROCESS_MT);
    if (!*box)
        luaL_argerror(L, 1, "process never started");
    return *box;
}

static int wait_build(lua_State *L, void *ud, int reason) {
    proc_t *p = ud;
    (void)reason;
    p->waiter = NULL;
    lua_pushinteger(L, (lua_Integer)p->status);
    const char *s = p->signal ? signame(p->signal) : NULL;
    if (s)
        lua_pushstring(L, s);
    else if (p->signal)
        lua_pushinteger(L, p->signal);
    else
        lua_pushnil(L);
    return 2;
}

static void wait_abort(void *ud) {
    ((proc_t *)ud)->waiter = NULL;
}

/* proc:wait() -> exit status, signal name (or nil) */
static int proc_wait(lua_State *L) {
    proc_t *p = check_proc(L);
    if (p->exited)
        return wait_build(L, p, 0);
    loom_task_t *t = loom_task_self(L, "wait");
    if (p->waiter)
        return luaL_error(L, "wait: another task is already waiting for this process");
    p->waiter = t;
    return loom_park(L, t, -1, wait_build, wait_abort, p);
}

/* proc:kill([signal name]) -> true | nil, err */
static int proc_kill(lua_State *L) {
    proc_t *p = check_proc(L);
    const char *name = luaL_optstring(L, 2, "SIGTERM");
    int num = 0;
    for (int i = 0; signames[i].name; i++)
        if (strcmp(signames[i].name, name) == 0)
            num = signames[i].num;
    if (!num)
        return luaL_argerror(L, 2, "unknown signal name");
    if (p->exited)
        return loom_fail(L, "closed", "process has exited");
    int rc = uv_process_kill(&p->proc, num);
    if (rc != 0)
        return loom_fail_uv(L, "closed", rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int proc_index(lua_State *L) {
    proc_t *p = check_proc(L);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "pid") == 0)
        lua_pushinteger(L, p->pid);
    else if (strcmp(k, "stdin") == 0)
        lua_getiuservalue(L, 1, 1);
    else if (strcmp(k, "stdout") == 0)
        lua_getiuservalue(L, 1, 2);
    else if (strcmp(k, "stderr") == 0)
        lua_getiuservalue(L, 1, 3);
    else if (strcmp(k, "wait") == 0)
        lua_pushcfunction(L, proc_wait);
    else if (strcmp(k, "kill") == 0)
        lua_pushcfunction(L, proc_kill);
    else
        lua_pushnil(L);
    return 1;
}

static int proc_gc(lua_State *L) {
    proc_t **box = luaL_checkudata(L, 1, PROCESS_MT);
    proc_t *p = *box;
    if (!p)
        return 0;
    *box = NULL;
    p->boxed = 0;
    if (p->exited) {
        proc_close(p);
        proc_free_if_done(p);
        return 0;
    }
    /* the child goes on; the handle stays until it exits (on_exit_cb closes it), because
     * libuv reaps only the children it still has a handle for: closed now, the child would
     * stay a zombie. Unreferenced, it keeps the loop running no longer than before. */
    uv_unref((uv_handle_t *)&p->proc);
    return 0;
}

/* core.exepath() -> the path of the running executable */
static int l_exepath(lua_State *L) {
    char buf[4096];
    size_t len = sizeof buf;
    if (uv_exepath(buf, &len) != 0)
        return 0;
    lua_pushlstring(L, buf, len);
    return 1;
}

/* core.setenv(name, value): for the children spawned after it */
static int l_setenv(lua_State *L) {
    const char *k = luaL_checkstring(L, 1), *v = luaL_checkstring(L, 2);
    int rc = uv_os_setenv(k, v);
    if (rc != 0)
        return loom_fail_uv(L, "closed", rc, k);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.exit_with_parent(ppid) -> true when the kernel will send SIGTERM to this process
 * once its parent dies (Linux), so a worker never outlives a supervisor that was killed;
 * raises SIGTERM at once if the parent `ppid` is already gone. */
static int l_exit_with_parent(lua_State *L) {
    lua_Integer ppid = luaL_checkinteger(L, 1);
    int ok = 0;
#ifdef __linux__
    ok = prctl(PR_SET_PDEATHSIG, SIGTERM) == 0;
#endif
    if ((lua_Integer)getppid() != ppid) /* the parent died before prctl took effect */
        raise(SIGTERM);
    lua_pushboolean(L, ok);
    return 1;
}

/* core.pid() -> this process's id */
static int l_pid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)uv_os_getpid());
    return 1;
}

static const luaL_Reg proc_meta[] = {
    {"__index", proc_index},
    {"__gc", proc_gc},
    {NULL, NULL},
};

static const luaL_Reg process_funcs[] = {
    {"process_spawn", l_spawn},
    {"exepath", l_exepath},
    {"setenv", l_setenv},
    {"exit_with_parent", l_exit_with_parent},
    {"pid", l_pid},
    {NULL, NULL},
};

int loom_open_process(lua_State *L) {
    luaL_newmetatable(L, PROCESS_MT);
    luaL_setfuncs(L, proc_meta, 0);
    lua_pop(L, 1);
    luaL_setfuncs(L, process_funcs, 0);
    return 0;
}
