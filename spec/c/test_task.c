/*
 * test_task.c - the scheduler (src/core/task.c) through the public embedding API (src/loom.h):
 * hosts run scripts that spawn, sleep, count and fail; the results are read back from Lua
 * globals after loom_run, and loom_run's exit status is checked for loom.exit and for a
 * failing main task. Hosts on a loop the test owns check that loom_free leaves the loop
 * with nothing open (uv_loop_close returns 0).
 *
 * Plain C: CHECK counts, the program exits 1 if any failed and prints "N passed, M failed".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>
#include "loom.h"
#include "check.h"

/* ---------------------------------------------------------------- helpers */

static lua_Integer global_int(loom_t *h, const char *name) {
    lua_State *L = loom_lua(h);
    lua_getglobal(L, name);
    lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -999;
    lua_pop(L, 1);
    return v;
}

/* Copies the global string `name` into buf ("" when it is not a string). */
static const char *global_str(loom_t *h, const char *name, char *buf, size_t size) {
    lua_State *L = loom_lua(h);
    lua_getglobal(L, name);
    const char *s = lua_tostring(L, -1);
    snprintf(buf, size, "%s", s ? s : "");
    lua_pop(L, 1);
    return buf;
}

static double now_s(void) {
    return (double)uv_hrtime() / 1e9;
}

/* Runs `code` as the main task of a new host, then the loop; returns loom_run's status and
 * leaves the host in *out (the caller frees it), or frees it when out is NULL. */
static int run_code(const char *code, loom_t **out) {
    loom_t *h = loom_new(NULL);
    CHECK(h != NULL);
    if (!h)
        return -1;
    int rc = loom_dostring(h, code, "=test");
    CHECK(rc == 0);
    int status = rc == 0 ? loom_run(h) : -1;
    if (out)
        *out = h;
    else
        loom_free(h);
    return status;
}

/* ---------------------------------------------------------------- tests */

/* Tasks spawned from the main chunk run, sleep and count; loom_run returns when all are
 * done, after the longest sleep, with status 0. */
static void test_spawn_sleep_count(void) {
    loom_t *h;
    double t0 = now_s();
    int status =
        run_code("count = 0\n"
                 "for i = 1, 10 do\n"
                 "  loom.spawn(function() loom.sleep(0.01 * (i % 4)) count = count + 1 end)\n"
                 "end\n"
                 "loom.sleep(0)\n"
                 "main_done = 1\n",
                 &h);
    double dt = now_s() - t0;
    CHECK(status == 0);
    CHECK(global_int(h, "count") == 10);
    CHECK(global_int(h, "main_done") == 1);
    CHECK(dt >= 0.029);
    CHECK(dt < 2);
    loom_free(h);
}

/* Wake-up order follows the deadlines; sleep(0) lets the other ready tasks go first. */
static void test_order(void) {
    loom_t *h;
    char buf[64];
    int status = run_code("local log = {}\n"
                          "local function note(s) log[#log + 1] = s end\n"
                          "local a = loom.spawn(function() loom.sleep(0.03) note('c') end)\n"
                          "local b = loom.spawn(function() loom.sleep(0.01) note('b') end)\n"
                          "loom.spawn(function() note('a') end)\n"
                          "loom.sleep(0)\n"
                          "a:join() b:join()\n"
                          "order = table.concat(log)\n",
                          &h);
    CHECK(status == 0);
    CHECK(strcmp(global_str(h, "order", buf, sizeof buf), "abc") == 0);
    loom_free(h);
}

/* join gives a task's results; a failed task's join gives false and its error, and the
 * failure neither stops the other tasks nor changes the exit status. */
static void test_join_and_task_errors(void) {
    loom_t *h;
    char buf[128];
    int status =
        run_code("local ok_t = loom.spawn(function(x) loom.sleep(0.01) return x + 1 end, 41)\n"
                 "local bad = loom.spawn(function() error('task boom', 0) end)\n"
                 "loom.spawn(function() error('unjoined failure') end)\n"
                 "local _, v = ok_t:join()\n"
                 "joined = v\n"
                 "local ok, err = bad:join()\n"
                 "bad_result = tostring(ok) .. ':' .. err\n"
                 "loom.spawn(function() loom.sleep(0.02) later = 1 end)\n",
                 &h);
    CHECK(status == 0);
    CHECK(global_int(h, "joined") == 42);
    CHECK(strcmp(global_str(h, "bad_result", buf, sizeof buf), "false:task boom") == 0);
    CHECK(global_int(h, "later") == 1);
    loom_free(h);
}

/* A cancelled task ends with 'cancelled' and its <close> variables run. */
static void test_cancel(void) {
    loom_t *h;
    char buf[64];
    int status =
        run_code("closed = 0\n"
                 "local t = loom.spawn(function()\n"
                 "  local c <close> = setmetatable({}, {__close = function() closed = 1 end})\n"
                 "  loom.sleep(30)\n"
                 "end)\n"
                 "loom.sleep(0)\n"
                 "t:cancel()\n"
                 "local ok, err = t:join()\n"
                 "result = tostring(ok) .. ':' .. err\n",
                 &h);
    CHECK(status == 0);
    CHECK(global_int(h, "closed") == 1);
    CHECK(strcmp(global_str(h, "result", buf, sizeof buf), "false:cancelled") == 0);
    loom_free(h);
}

/* loom.exit(code) ends the run with that status, at once, even with work pending. */
static void test_exit_status(void) {
    CHECK(run_code("loom.exit(5)", NULL) == 5);
    CHECK(run_code("loom.exit()", NULL) == 0);
    CHECK(run_code("loom.exit(false)", NULL) == 1);
    double t0 = now_s();
    CHECK(run_code("loom.spawn(function() loom.sleep(0.01) loom.exit(6) end)\n"
                   "loom.sleep(30)\n",
                   NULL) == 6);
    CHECK(now_s() - t0 < 5);
}

/* A main task that raises makes loom_run return 1: at once, or after it waited. */
static void test_main_error(void) {
    fprintf(stderr, "(two 'loom: ...' errors from main tasks are expected below)\n");
    CHECK(run_code("error('main boom')", NULL) == 1);
    loom_t *h;
    CHECK(run_code("loom.spawn(function() loom.sleep(0.05) reached = 1 end)\n"
                   "loom.sleep(0.01)\n"
                   "error('late main boom')\n",
                   &h) == 1);
    CHECK(global_int(h, "reached") == -999); /* the run ended with the main task */
    loom_free(h);
}

/* Code that does not compile: non-zero, and the message is on the Lua stack. */
static void test_load_error(void) {
    loom_t *h = loom_new(NULL);
    lua_State *L = loom_lua(h);
    int top = lua_gettop(L);
    CHECK(loom_dostring(h, "this is not lua", "=bad") != 0);
    CHECK(lua_gettop(L) == top + 1);
    const char *msg = lua_tostring(L, -1);
    CHECK(msg != NULL && strstr(msg, "bad:1:") != NULL);
    lua_settop(L, top);
    CHECK(loom_dofile(h, "/nonexistent/script.lua", 0, NULL) != 0);
    msg = lua_tostring(L, -1);
    CHECK(msg != NULL && strstr(msg, "cannot open /nonexistent/script.lua") != NULL);
    lua_settop(L, top);
    loom_free(h);
}

/* loom_dofile: arg[0] = path, arg[1..] = argv, and ... holds argv. */
static void test_dofile(void) {
    char path[] = "/tmp/loom_test_task_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    const char *script = "loom.sleep(0)\n"
                         "result = table.concat(arg, ',', 0) .. '|' .. select('#', ...) .. '|' ..\n"
                         "  table.concat({...}, ',')\n";
    CHECK(write(fd, script, strlen(script)) == (ssize_t)strlen(script));
    close(fd);
    loom_t *h = loom_new(NULL);
    char *argv[] = {"x", "y z"};
    CHECK(loom_dofile(h, path, 2, argv) == 0);
    CHECK(loom_run(h) == 0);
    char want[128], buf[128];
    snprintf(want, sizeof want, "%s,x,y z|2|x,y z", path);
    CHECK(strcmp(global_str(h, "result", buf, sizeof buf), want) == 0);
    loom_free(h);
    unlink(path);
}

/* The state has the global loom, the same table require returns. */
static void test_loom_global(void) {
    loom_t *h;
    CHECK(run_code("same = (loom == require('loom')) and 1 or 0\n"
                   "has_version = type(loom.version) == 'string' and 1 or 0\n",
                   &h) == 0);
    CHECK(global_int(h, "same") == 1);
    CHECK(global_int(h, "has_version") == 1);
    loom_free(h);
}

/* Two hosts in one process share nothing. */
static void test_two_hosts(void) {
    loom_t *a = loom_new(NULL), *b = loom_new(NULL);
    CHECK(a && b && a != b);
    CHECK(loom_lua(a) != loom_lua(b));
    CHECK(loom_loop(a) != loom_loop(b));
    CHECK(loom_dostring(a, "loom.sleep(0.01) x = 1", "=a") == 0);
    CHECK(loom_dostring(b, "loom.sleep(0.01) x = 2", "=b") == 0);
    CHECK(loom_run(b) == 0);
    CHECK(global_int(b, "x") == 2);
    CHECK(global_int(a, "x") == -999); /* a's loop has not run yet */
    CHECK(loom_run(a) == 0);
    CHECK(global_int(a, "x") == 1);
    loom_free(a);
    loom_free(b);
}

/* loom_stop from another thread makes loom_run return while a listener keeps the loop
 * alive; loom_run may then be called again; loom_free closes the listener. */
static void *stop_later(void *arg) {
    usleep(50 * 1000);
    loom_stop((loom_t *)arg);
    return NULL;
}

static void test_stop_from_thread(void) {
    loom_t *h = loom_new(NULL);
    CHECK(loom_dostring(
              h,
              "srv = assert(loom.listen{host = '127.0.0.1', port = 0,\n"
              "  handler = function(st) st:close() end})\n"
              "ticks = 0\n"
              "loom.spawn(function() while true do loom.sleep(0.005) ticks = ticks + 1 end end)\n",
              "=stop") == 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, stop_later, h) == 0);
    double t0 = now_s();
    CHECK(loom_run(h) == 0);
    CHECK(now_s() - t0 < 5);
    pthread_join(th, NULL);
    lua_Integer ticks = global_int(h, "ticks");
    CHECK(ticks > 0);
    /* running again goes on where it stopped, until loom.exit */
    CHECK(loom_dostring(h, "loom.sleep(0.02) loom.exit(9)", "=again") == 0);
    CHECK(loom_run(h) == 9);
    CHECK(global_int(h, "ticks") > ticks);
    loom_free(h);
}

/* ---------------------------------------------------------------- a loop the test owns */

static int timer_calls;

static void on_test_timer(uv_timer_t *t) {
    timer_calls++;
    loom_stop((loom_t *)t->data);
}

static int close_calls;

static void on_test_close(uv_handle_t *handle) {
    (void)handle;
    close_calls++;
}

/* loom on the embedder's loop, beside the embedder's own timer, which stops it. Streams,
 * a listener, parked tasks and a DNS lookup are open when loom_free runs: afterwards the
 * loop holds nothing of loom's, runs to completion at once and closes with 0. */
static void test_own_loop(void) {
    uv_loop_t loop;
    CHECK(uv_loop_init(&loop) == 0);
    loom_t *h = loom_new(&loop);
    CHECK(h != NULL);
    CHECK(loom_loop(h) == &loop);
    CHECK(loom_dostring(h,
                        "local core = require 'loom.core'\n"
                        "srv = assert(loom.listen{host = '127.0.0.1', port = 0,\n"
                        "  handler = function(st) st:read() end})\n"
                        "c = assert(loom.connect('127.0.0.1', srv.port))\n"
                        "loom.spawn(function() loom.sleep(30) end)\n"
                        "loom.spawn(function() loom.queue():get() end)\n"
                        "loom.spawn(function() core.resolve('localhost') end)\n"
                        "loom.spawn(function() c:read() end)\n"
                        "started = 1\n",
                        "=own") == 0);
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    timer.data = h;
    uv_timer_start(&timer, on_test_timer, 50, 0);
    CHECK(loom_run(h) == 0);
    CHECK(timer_calls == 1);
    CHECK(global_int(h, "started") == 1);
    loom_free(h);
    /* only our stopped timer is left */
    CHECK(uv_loop_alive(&loop) == 0);
    uv_close((uv_handle_t *)&timer, on_test_close);
    CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
    CHECK(close_calls == 1);
    CHECK(uv_loop_close(&loop) == 0);
}

/* A host created and freed on an owned loop without ever running leaves it closable. */
static void test_own_loop_unused(void) {
    uv_loop_t loop;
    CHECK(uv_loop_init(&loop) == 0);
    loom_t *h = loom_new(&loop);
    CHECK(h != NULL);
    loom_free(h);
    CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
    CHECK(uv_loop_close(&loop) == 0);
    loom_free(NULL); /* harmless */
}

/* After loom.exit on an owned loop with a task still sleeping, loom_free tidies up. */
static void test_own_loop_exit(void) {
    uv_loop_t loop;
    CHECK(uv_loop_init(&loop) == 0);
    loom_t *h = loom_new(&loop);
    CHECK(loom_dostring(h,
                        "loom.spawn(function() loom.sleep(30) end)\n"
                        "loom.sleep(0.01)\n"
                        "loom.exit(2)\n",
                        "=exit") == 0);
    CHECK(loom_run(h) == 2);
    loom_free(h);
    CHECK(uv_loop_alive(&loop) == 0);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void) {
    test_spawn_sleep_count();
    test_order();
    test_join_and_task_errors();
    test_cancel();
    test_exit_status();
    test_main_error();
    test_load_error();
    test_dofile();
    test_loom_global();
    test_two_hosts();
    test_stop_from_thread();
    test_own_loop();
    test_own_loop_unused();
    test_own_loop_exit();
    return CHECK_SUMMARY();
}
