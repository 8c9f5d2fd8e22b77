/*
 * task.h - tasks on Lua coroutines: the ready queue, parking and waking, the timer heap,
 * cancellation and joining. This is the only place that resumes coroutines.
 *
 * How a C function waits (see STYLE.md): check arguments, try the operation, and if it
 * must wait, record what it needs and `return loom_park(L, ...)` as a tail call. libuv
 * callbacks never call Lua: they store their result and call loom_wake; the scheduler
 * resumes the task, calls `build` on the task's own stack, and returns its results to Lua.
 */
#ifndef LOOM_TASK_H
#define LOOM_TASK_H

#include <stdint.h>
#include <lua.h>
#include <uv.h>

typedef struct loom loom_t;
typedef struct loom_task loom_task_t;
typedef struct loom_job loom_job_t;

/* Why a parked task was woken. */
enum { LOOM_WAKE_OK = 0, LOOM_WAKE_TIMEOUT, LOOM_WAKE_CANCEL };

/* Pushes the results of a finished wait on L (the task's stack); returns how many. */
typedef int (*loom_build_fn)(lua_State *L, void *ud, int reason);
/* Undoes a pending wait (stops a read, cancels a request) when it times out or is cancelled.
 * Runs outside Lua; it must not wake the task itself. */
typedef void (*loom_abort_fn)(void *ud);

/* Work the scheduler runs with Lua available: a task to resume, or a C job. */
struct loom_job {
    loom_job_t *next;
    void (*run)(loom_t *h, loom_job_t *job);
    int queued;
};

enum { TASK_NEW, TASK_READY, TASK_RUNNING, TASK_PARKED, TASK_DONE };

struct loom_task {
    loom_job_t job; /* first member: the ready queue holds jobs */
    loom_t *host;
    lua_State *co;
    int ref; /* registry ref anchoring the task until it is done */
    int state;
    int nargs;              /* values waiting on co's stack for the next resume */
    int wake;               /* LOOM_WAKE_* of the last wake-up */
    unsigned serial;        /* counts parks, so stale wake-ups can be told apart */
    unsigned char cancel;   /* cancel requested, not yet delivered */
    unsigned char failed;   /* done with an error: co holds error, traceback */
    unsigned char observed; /* someone takes the outcome: do not print the error */
    unsigned char is_cancelled;
    int nres; /* values left on co when done */
    loom_build_fn build;
    loom_abort_fn abort;
    void *ud;
    uint64_t deadline; /* ms of loop time, when in the timer heap */
    uint64_t heap_seq; /* order of entry: equal deadlines wake first-in, first-out */
    int heap_idx;      /* -1 when not in the heap */
    /* Internal tasks (request handlers) report their end here, with their results still
     * on co, instead of being joined; a pooled task's coroutine is then reused. */
    void (*on_done)(loom_t *h, loom_task_t *t);
    void *done_ud;
    unsigned char pooled;  /* may be recycled when it ends well */
    unsigned char exposed; /* loom.current() handed it out: never recycle */
    loom_task_t *pool_next;
    /* the scheduler's list of tasks not yet done (app:run's shutdown cancels them) */
    loom_task_t *live_prev, *live_next;
};

typedef struct loom_sched {
    lua_State *L; /* the thread that resumes tasks: the host's, or loom.run's caller */
    loom_job_t *head, *tail;
    int nready;
    loom_task_t *current;
    loom_task_t *main; /* the task loom_dofile or loom.run started */
    /* the host's hook for the main task's end (hooks go downward: the scheduler never calls
     * into the host) */
    void (*main_done)(loom_t *h, loom_task_t *t);
    loom_task_t **heap;
    int nheap, capheap;
    uint64_t heap_seq; /* entries so far */
    uv_timer_t timer;
    uv_prepare_t prepare;
    uv_check_t check;
    uv_idle_t idle;
    int idle_on;
    /* set by a caller that drains right after (the server around a read's parse): a job
     * deferred meanwhile leaves the idle handle to that drain, which starts it only if the
     * job is still queued (idle_owed), instead of a start and a stop per request */
    int hold_idle, idle_owed;
    int draining;
    int stats_alive;   /* scratch for core.stats */
    loom_task_t *pool; /* finished internal tasks whose coroutines wait for reuse */
    int npool;
    loom_task_t *live; /* tasks not yet done, newest first */
} loom_sched_t;

void loom_sched_init(loom_t *h);
void loom_sched_close(loom_t *h);

/* Queues a job to run in the scheduler, with Lua available. Safe from libuv callbacks. */
void loom_sched_defer(loom_t *h, loom_job_t *job);

/* The task running on L, or raises a clear error naming `fname` (outside any task, or in a
 * coroutine that is not a loom task). */
loom_task_t *loom_task_self(lua_State *L, const char *fname);

/* Parks the running task. `timeout_s` < 0 means no deadline. Returns lua_yieldk's value;
 * use as `return loom_park(...)`. Raises "cancelled" at once if a cancel is pending. */
int loom_park(lua_State *L, loom_task_t *t, double timeout_s, loom_build_fn build,
              loom_abort_fn abort, void *ud);

/* Progress on a parked task's wait: its deadline becomes `timeout_s` from now (if it has
 * one), so a timeout bounds the time without progress rather than the whole wait. */
void loom_task_extend(loom_task_t *t, double timeout_s);

/* Makes a parked task ready with LOOM_WAKE_OK. No-op unless it is parked. */
void loom_wake(loom_task_t *t);

/* Cancels a task as task:cancel() does: a parked one wakes raising "cancelled" (its wait
 * aborted); a ready or new one gets it when it next parks or starts; a done one is left. */
void loom_task_cancel(loom_task_t *t);

/* Creates a task running the function at stack index -(nargs+1) with the nargs values above
 * it (popped), pushes the task object, and queues it. */
loom_task_t *loom_spawn(lua_State *L, int nargs);

/* As loom_spawn, but takes a recycled task when there is one, does not queue it and pushes
 * nothing: for internal tasks that the caller starts with loom_task_run_now. h is L's host
 * (passed: looking it up in the registry cost a tenth of a hello-world request's engine). */
loom_task_t *loom_spawn_internal(loom_t *h, lua_State *L, int nargs,
                                 void (*on_done)(loom_t *, loom_task_t *), void *ud);

/* Where to push the function and arguments for loom_spawn_internal(h, thread, ...): the
 * thread of the recycled task it will take, so they need not move, or L when there is none. */
lua_State *loom_spawn_thread(loom_t *h, lua_State *L);

/* Resumes a task at once (to start a main task up to its first suspension). */
void loom_task_run_now(loom_t *h, loom_task_t *t);

/* Runs every queued job once, then returns (the host drives this from its handles). */
void loom_sched_drain(loom_t *h);

double loom_sched_now(void);

int loom_open_sched(lua_State *L);

#endif
