/*
 * own_loop.c - loom on a libuv loop that the program owns.
 *
 * The program creates the loop, starts a uv_timer of its own that ticks beside loom's
 * tasks, and hands the loop to loom_new. A script counts in a task while the timer ticks.
 * When the script is done, loom_run returns; loom_free then closes every handle loom
 * opened, so the program can close its own timer, run the loop once more to let the close
 * callbacks run, and close the loop: uv_loop_close must return 0.
 *
 *   $ build/examples/embed/own_loop
 *   lua: task counted to 5
 *   c: timer ticked 3 times
 *   c: loop closed cleanly
 */
#include <stdio.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>
#include "loom.h"

static int ticks;

static void on_tick(uv_timer_t *timer) {
    if (++ticks == 3)
        uv_timer_stop(timer); /* a stopped timer does not keep the loop alive */
}

static const char *script = "local t = loom.spawn(function()\n"
                            "    local n = 0\n"
                            "    for _ = 1, 5 do loom.sleep(0.02) n = n + 1 end\n"
                            "    return n\n"
                            "end)\n"
                            "local _, n = t:join()\n"
                            "print('lua: task counted to ' .. n)\n";

int main(void) {
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return 1;

    uv_timer_t timer; /* ours, not loom's */
    uv_timer_init(&loop, &timer);
    uv_timer_start(&timer, on_tick, 10, 10);

    loom_t *h = loom_new(&loop);
    if (!h)
        return 1;
    if (loom_dostring(h, script, "=own_loop") != 0) {
        fprintf(stderr, "own_loop: %s\n", lua_tostring(loom_lua(h), -1));
        return 1;
    }
    int status = loom_run(h); /* runs our timer too: it is the same loop */
    loom_free(h);             /* closes loom's handles; the loop stays ours */

    printf("c: timer ticked %d times\n", ticks);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* lets the close callback run */
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "own_loop: the loop still has open handles\n");
        return 1;
    }
    printf("c: loop closed cleanly\n");
    return status;
}
