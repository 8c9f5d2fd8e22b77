/*
 * loom.h - the public embedding API of loom.
 *
 * A loom_t is one host: a lua_State with the loom library loaded (and the global
 * `loom`), bound to one libuv loop. Hosts share nothing, so one per thread is fine.
 * Every function here must be called on the loop's thread, except loom_stop.
 */
#ifndef LOOM_H
#define LOOM_H

#include <lua.h>
#include <uv.h>

#define LOOM_VERSION "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom loom_t;

/* Creates a host on `loop`, or on a loop of its own when `loop` is NULL. NULL on failure. */
loom_t *loom_new(uv_loop_t *loop);

lua_State *loom_lua(loom_t *h);
uv_loop_t *loom_loop(loom_t *h);

/* Loads `path` and starts it as the main task with arg[0] = path, arg[1..argc] = argv,
 * running it up to its first suspension. Returns 0, or non-zero when the file cannot be
 * loaded; the message is then on the Lua stack. A main task that raises (at once or later)
 * has its traceback printed and makes loom_run return 1. */
int loom_dofile(loom_t *h, const char *path, int argc, char **argv);

/* As loom_dofile for a string of code; `name` is the chunk name used in messages. */
int loom_dostring(loom_t *h, const char *code, const char *name);

/* Drives the loop until no work is left or loom_stop is called. Returns the exit status:
 * 0, 1 when the main task raised, or the code given to loom.exit. */
int loom_run(loom_t *h);

/* Makes loom_run return soon. Safe to call from any thread and from signal-free contexts. */
void loom_stop(loom_t *h);

/* Closes every handle loom opened, closes the Lua state, and closes the loop when loom owns
 * it. An embedder that owns the loop may run it again afterwards and close it. */
void loom_free(loom_t *h);

/* "Lua 5.4.4, libuv 1.44.2, llhttp 8.1.0, mbed TLS 2.28.3": what this build runs on (the
 * libraries' own versions, as linked). */
const char *loom_libs_version(void);

#ifdef __cplusplus
}
#endif

#endif
