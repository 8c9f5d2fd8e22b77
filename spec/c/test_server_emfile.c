/*
 * test_server_emfile.c - the HTTP server out of file descriptors when libuv's own reserve
 * descriptor is gone. Out of descriptors, libuv accepts what waits and closes it with a
 * descriptor it keeps for that (uv__emfile_trick in uv__server_io). When that reserve is
 * lost (another thread took its slot between libuv's close and reopen), libuv reports
 * EMFILE to the connection callback and accepts again at once: without more, a busy loop
 * inside one uv__server_io call for as long as a connection waits, and no descriptor ever
 * frees since the loop never returns. The server keeps a spare descriptor of its own that
 * breaks that loop.
 *
 * The test fills the descriptor table of this process, takes libuv's reserve away (the
 * test owns the loop, so it can reach loop->emfile_fd), and has a child process connect
 * three times: each connection must be closed by the server (it has no descriptor to
 * serve it with), and the loop must go on (a watchdog alarm fails the test otherwise).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>
#include "loom.h"
#include "check.h"

#define FILLERS 512
#define TRIES 3

static pid_t child;
static int child_status = -1;
static int fillers[FILLERS], nfillers;

/* child_done() -> true once the child has exited (its status kept in child_status). */
static int l_child_done(lua_State *L) {
    if (child > 0 && child_status < 0) {
        int st;
        if (waitpid(child, &st, WNOHANG) == child)
            child_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    }
    lua_pushboolean(L, child_status >= 0);
    return 1;
}

/* In the child: one connection, one request. 0 when the server closed it without an
 * answer, 1 when nothing happened within 3 s, 2 when it was answered, 3 when it failed. */
static int try_once(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {3, 0};
    if (fd < 0)
        return 3;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return 3;
    }
    const char *req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    ssize_t n = send(fd, req, strlen(req), MSG_NOSIGNAL);
    if (n >= 0) {
        char buf[256];
        n = recv(fd, buf, sizeof buf, 0);
    }
    int err = errno;
    close(fd);
    if (n == 0 || (n < 0 && (err == ECONNRESET || err == EPIPE)))
        return 0;
    return n > 0 ? 2 : 1;
}

static void run_child(int port) {
    for (int i = 0; i < nfillers; i++) /* room for the child's own sockets */
        close(fillers[i]);
    for (int i = 0; i < TRIES; i++) {
        int rc = try_once(port);
        if (rc != 0)
            _exit(10 + rc);
    }
    _exit(0);
}

static const char *script = "local app = loom.app()\n"
                            "app:get('/', function() return 'ok' end)\n"
                            "local srv = assert(app:listen{ host = '127.0.0.1', port = 0 })\n"
                            "port = srv.port\n"
                            "local deadline = loom.now() + 15\n"
                            "while not child_done() and loom.now() < deadline do\n"
                            "    loom.sleep(0.01)\n"
                            "end\n"
                            "srv:close(0)\n";

static void test_lost_reserve(void) {
    uv_loop_t loop;
    struct rlimit old, low;
    CHECK(uv_loop_init(&loop) == 0);
    loom_t *h = loom_new(&loop);
    lua_register(loom_lua(h), "child_done", l_child_done);
    CHECK(loom_dostring(h, script, "=emfile") == 0); /* listening; waits for the child */
    lua_getglobal(loom_lua(h), "port");
    int port = (int)lua_tointeger(loom_lua(h), -1);
    lua_pop(loom_lua(h), 1);
    CHECK(port > 0);

    /* Fill the table up to a low limit, then take libuv's reserve away and fill its slot. */
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    low = old;
    low.rlim_cur = 256;
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    int fd;
    while (nfillers < FILLERS && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        fillers[nfillers++] = fd;
    CHECK(nfillers < FILLERS && errno == EMFILE);
    CHECK(loop.emfile_fd >= 0); /* libuv made its reserve when the first stream was made */
    close(loop.emfile_fd);
    loop.emfile_fd = -1;
    fillers[nfillers++] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fillers[nfillers - 1] >= 0);
    CHECK(open("/dev/null", O_RDONLY) < 0 && errno == EMFILE);

    child = fork();
    CHECK(child >= 0);
    if (child == 0)
        run_child(port);
    alarm(20); /* a loop stuck in uv__server_io never returns to the script's deadline */
    int status = loom_run(h);
    alarm(0);
    CHECK(status == 0);
    CHECK(child_status == 0); /* each connection was closed by the server, none hung */
    if (child_status != 0)
        fprintf(stderr, "child status %d (10: closed, 11: hung, 12: answered, 13: failed)\n",
                child_status);

    for (int i = 0; i < nfillers; i++)
        close(fillers[i]);
    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    loom_free(h);
    CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void) {
    test_lost_reserve();
    return CHECK_SUMMARY();
}
