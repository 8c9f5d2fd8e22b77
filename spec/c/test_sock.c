/*
 * test_sock.c - loom_sock alone over loopback: a libuv listener accepts into a sock with
 * hooks of this test; the peer is a plain socket of the test, so what reached the kernel is
 * seen at once (MSG_DONTWAIT) without a second event loop. Reads land in the owner's
 * buffer; a write larger than the kernel takes is queued and drained; corked writes leave
 * nothing until uncork, which sends them in one segment; a half-close lets the peer see the
 * end while the sock still reads; close runs the closed hook once, and every handle is
 * closed at the end (uv_loop_close == 0). A held sock (loom_sock_hold: a thread-pool job
 * uses its descriptor) closed by its owner stops reading and writing at once but keeps its
 * descriptor open until the last release, and only then runs `closed`. Then two socks of the same
 * loop talk TLS (a throwaway certificate from the openssl command): the handshake, corked records,
 * plaintext in owner buffers, and a half-close that the peer reads as the end (close_notify).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <uv.h>
#include "io/sock.h"
#include "tls.h"
#include "check.h"

#define BIG (8 * 1024 * 1024)

typedef struct {
    loom_sock_t sock;
    char buf[16]; /* small on purpose: a read larger than it comes in several */
    char got[256];
    size_t ngot;
    int allocs, inputs, eof, rerr, drained, drained_status, progress, closed, shut, shut_status;
    int wrong_buffer; /* input data outside buf */
    int handshakes;   /* input(s, 0, NULL): a client handshake is done */
} owner_t;

static owner_t own, tsrv, tcli, held;
static owner_t *accept_into = &own;
static uv_tcp_t listener;
static int accepted;

static void h_alloc(loom_sock_t *s, size_t hint, uv_buf_t *b) {
    owner_t *o = loom_sock_owner(s);
    (void)hint;
    o->allocs++;
    *b = uv_buf_init(o->buf, sizeof o->buf);
}

static void h_input(loom_sock_t *s, ssize_t nread, const char *data) {
    owner_t *o = loom_sock_owner(s);
    o->inputs++;
    if (nread == 0) {
        CHECK(data == NULL);
        o->handshakes++;
        return;
    }
    if (nread == UV_EOF) {
        o->eof++;
        loom_sock_read_stop(s);
        return;
    }
    if (nread < 0) {
        o->rerr = (int)nread;
        loom_sock_read_stop(s);
        return;
    }
    if (data != o->buf)
        o->wrong_buffer++;
    if (o->ngot + (size_t)nread <= sizeof o->got) {
        memcpy(o->got + o->ngot, data, (size_t)nread);
        o->ngot += (size_t)nread;
    }
}

static void h_drained(loom_sock_t *s, int status) {
    owner_t *o = loom_sock_owner(s);
    CHECK(loom_sock_pending(s) == 0 && loom_sock_queued(s) == 0); /* all of it went out */
    o->drained++;
    o->drained_status = status;
}

static void h_progress(loom_sock_t *s) {
    owner_t *o = loom_sock_owner(s);
    o->progress++;
}

static void h_closed(loom_sock_t *s) {
    owner_t *o = loom_sock_owner(s);
    o->closed++;
}

static const loom_sock_hooks_t hooks = {h_alloc, h_input, h_drained, h_progress, h_closed};

static void on_shut(loom_sock_t *s, int status) {
    owner_t *o = loom_sock_owner(s);
    o->shut++;
    o->shut_status = status;
}

static void on_connection(uv_stream_t *server, int status) {
    CHECK(status == 0);
    CHECK(loom_sock_init_tcp(&accept_into->sock, server->loop, &hooks, accept_into) == 0);
    CHECK(uv_accept(server, &accept_into->sock.h.stream) == 0);
    accepted++;
}

/* Runs the loop a turn at a time until *flag is set (alarm() guards against a hang). */
static void run_until(uv_loop_t *loop, int *flag) {
    while (!*flag)
        uv_run(loop, UV_RUN_ONCE);
}

/* Reads what the peer socket has now, without waiting: bytes, 0 at the end, -1 if none. */
static ssize_t peek_read(int fd, char *buf, size_t cap) {
    ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : n;
}

static int connect_peer(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int rcvbuf = 64 * 1024; /* small: the big write cannot all fit in the kernel */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return fd;
}

/* Reads into owner buffers: 40 bytes come through a 16-byte buffer in pieces. */
static void test_read(uv_loop_t *loop, int fd) {
    const char *msg = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
    CHECK(loom_sock_read_start(&own.sock) == 0);
    CHECK(loom_sock_reading(&own.sock));
    CHECK(send(fd, msg, 40, 0) == 40);
    while (own.ngot < 40)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(own.ngot == 40 && memcmp(own.got, msg, 40) == 0);
    CHECK(own.inputs >= 3); /* 40 bytes through 16 */
    CHECK(own.allocs >= own.inputs);
    CHECK(own.wrong_buffer == 0);
}

/* A write the kernel cannot take whole: queued in pieces, progress, drained once. */
static void test_big_write(uv_loop_t *loop, int fd) {
    char *big = malloc(BIG), *in = malloc(64 * 1024);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)(i * 7 + i / 4096);
    uv_buf_t b = uv_buf_init(big, BIG);
    CHECK(loom_sock_write(&own.sock, &b, 1) == 0);
    CHECK(loom_sock_pending(&own.sock) > 1); /* more than one piece of 256 KiB */
    CHECK(loom_sock_queued(&own.sock) > 0);
    CHECK(loom_sock_over_high_water(&own.sock));
    memset(big, 0, BIG); /* the queue holds copies */
    CHECK(own.drained == 0);
    size_t seen = 0;
    int bad = 0;
    while (seen < BIG) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t n = peek_read(fd, in, 64 * 1024);
        CHECK(n != 0);
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++, seen++)
            bad += in[i] != (char)(seen * 7 + seen / 4096);
    }
    CHECK(seen == BIG && bad == 0);
    run_until(loop, &own.drained);
    CHECK(own.drained == 1 && own.drained_status == 0);
    CHECK(own.progress >= 1);
    CHECK(loom_sock_pending(&own.sock) == 0 && loom_sock_queued(&own.sock) == 0);
    free(big);
    free(in);
}

/* Corked writes reach the peer only at uncork, and then as one segment. */
static void test_cork(int fd) {
    char in[64];
    uv_buf_t parts[2] = {uv_buf_init((char *)"HTTP/1.1 ", 9), uv_buf_init((char *)"200 ", 4)};
    uv_buf_t last = uv_buf_init((char *)"OK\r\n", 4);
    loom_sock_cork(&own.sock);
    CHECK(loom_sock_write(&own.sock, parts, 2) == 0);
    CHECK(loom_sock_write(&own.sock, &last, 1) == 0);
    CHECK(peek_read(fd, in, sizeof in) == -1); /* nothing left while corked */
    CHECK(loom_sock_uncork(&own.sock) == 0);
    CHECK(loom_sock_pending(&own.sock) == 0); /* the kernel took it at once */
    CHECK(peek_read(fd, in, sizeof in) == 17 && memcmp(in, "HTTP/1.1 200 OK\r\n", 17) == 0);
    /* uncorked, each write goes at once */
    CHECK(loom_sock_write(&own.sock, &last, 1) == 0);
    CHECK(peek_read(fd, in, sizeof in) == 4);
    CHECK(loom_sock_uncork(&own.sock) == 0); /* not corked: nothing */
}

/* Half-close: the peer sees the end, the sock still reads what the peer sends after it. */
static void test_half_close(uv_loop_t *loop, int fd) {
    char in[16];
    CHECK(loom_sock_shutdown(&own.sock, on_shut) == 0);
    run_until(loop, &own.shut);
    CHECK(own.shut == 1 && own.shut_status == 0);
    CHECK(recv(fd, in, sizeof in, 0) == 0); /* the FIN */
    own.ngot = 0;
    CHECK(send(fd, "after", 5, 0) == 5);
    while (own.ngot < 5 && !own.eof)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(own.ngot == 5 && memcmp(own.got, "after", 5) == 0);
    shutdown(fd, SHUT_WR);
    run_until(loop, &own.eof);
    CHECK(own.eof == 1 && own.rerr == 0);
    CHECK(!loom_sock_reading(&own.sock));
}

static void test_close(uv_loop_t *loop) {
    uv_buf_t b = uv_buf_init((char *)"x", 1);
    loom_sock_close(&own.sock);
    loom_sock_close(&own.sock); /* idempotent */
    CHECK(loom_sock_closing(&own.sock) && !loom_sock_closed(&own.sock));
    CHECK(loom_sock_write(&own.sock, &b, 1) == UV_ECANCELED);
    CHECK(own.closed == 0); /* from uv_close's callback, not before */
    run_until(loop, &own.closed);
    CHECK(own.closed == 1 && loom_sock_closed(&own.sock));
}

/* A close while held waits for the last release: the descriptor stays open (so its number
 * cannot go to another socket under a sendfile job of the pool), but shut down, so the
 * job's next write fails and the peer sees the end at once; reading stops, writes fail,
 * and `closed` comes only after the release (uv_close then). */
static void test_hold_close(uv_loop_t *loop, int port) {
    uv_buf_t b = uv_buf_init((char *)"x", 1);
    char in[16];
    uv_os_fd_t sfd;
    accept_into = &held;
    accepted = 0;
    int fd = connect_peer(port);
    run_until(loop, &accepted);
    CHECK(loom_sock_read_start(&held.sock) == 0);
    CHECK(uv_fileno(&held.sock.h.handle, &sfd) == 0);
    CHECK(loom_sock_hold(&held.sock) == 0);
    CHECK(loom_sock_hold(&held.sock) == 0); /* two jobs */
    loom_sock_close(&held.sock);
    loom_sock_close(&held.sock); /* idempotent */
    CHECK(loom_sock_closing(&held.sock) && !loom_sock_closed(&held.sock));
    CHECK(!loom_sock_reading(&held.sock));
    CHECK(loom_sock_write(&held.sock, &b, 1) == UV_ECANCELED);
    CHECK(loom_sock_hold(&held.sock) == UV_EBADF); /* no new job on a closing sock */
    CHECK(send(fd, "late", 4, 0) == 4);            /* nobody reads it any more */
    for (int i = 0; i < 5; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    CHECK(held.closed == 0 && held.inputs == 0);
    /* the job's descriptor is still this connection's, shut down: its write fails */
    CHECK(fcntl(sfd, F_GETFD) != -1);
    errno = 0;
    CHECK(send(sfd, "job", 3, MSG_NOSIGNAL) == -1 && (errno == EPIPE || errno == ECONNRESET));
    CHECK(recv(fd, in, sizeof in, 0) <= 0); /* the peer sees the end before the release */
    loom_sock_release(&held.sock);
    for (int i = 0; i < 5; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    CHECK(held.closed == 0); /* one job still holds it */
    CHECK(fcntl(sfd, F_GETFD) != -1);
    loom_sock_release(&held.sock);
    CHECK(held.closed == 0); /* from uv_close's callback, not before */
    run_until(loop, &held.closed);
    CHECK(held.closed == 1 && loom_sock_closed(&held.sock) && held.inputs == 0);
    CHECK(recv(fd, in, sizeof in, 0) <= 0); /* the peer sees the end (a FIN, or a reset) */
    close(fd);
    accept_into = &own;
}

/* ---------------------------------------------------------------- TLS */

static char tmpdir[] = "/tmp/test_sock.XXXXXX";
static char cert[64], key[64];

/* A self-signed certificate for localhost; 0 when the openssl command made one. */
static int make_cert(void) {
    char cmd[512];
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(cert, sizeof cert, "%s/cert.pem", tmpdir);
    snprintf(key, sizeof key, "%s/key.pem", tmpdir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
             "-subj /CN=localhost -keyout %s -out %s >/dev/null 2>&1",
             key, cert);
    return system(cmd) == 0 ? 0 : -1;
}

static void on_connect(uv_connect_t *req, int status) {
    loom_sock_t *s = (loom_sock_t *)req->handle;
    CHECK(status == 0);
    CHECK(loom_sock_read_start(s) == 0);
    CHECK(loom_sock_tls_handshake(s) == 0); /* the ClientHello */
}

static void test_tls(uv_loop_t *loop, int port) {
    char err[256];
    uv_connect_t creq;
    struct sockaddr_in sa;
    loom_tls_opts_t so = {.server = 1, .cert = cert, .key = key}, co = {.server = 0, .verify = 0};
    loom_tls_conf_t *sconf = loom_tls_conf_new(&so, err, sizeof err);
    loom_tls_conf_t *cconf = loom_tls_conf_new(&co, err, sizeof err);
    CHECK(sconf && cconf);
    if (!sconf || !cconf)
        return;
    accept_into = &tsrv;
    accepted = 0;
    CHECK(loom_sock_init_tcp(&tcli.sock, loop, &hooks, &tcli) == 0);
    CHECK(loom_sock_tls_start(&tcli.sock, cconf, "localhost") == 0);
    uv_ip4_addr("127.0.0.1", port, &sa);
    CHECK(uv_tcp_connect(&creq, &tcli.sock.h.tcp, (struct sockaddr *)&sa, on_connect) == 0);
    run_until(loop, &accepted);
    CHECK(loom_sock_tls_start(&tsrv.sock, sconf, NULL) == 0);
    CHECK(loom_sock_read_start(&tsrv.sock) == 0);
    uv_buf_t late = uv_buf_init((char *)"x", 1);
    while (!loom_sock_tls_ready(&tcli.sock) && !tcli.rerr)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(loom_sock_tls_ready(&tcli.sock) && tcli.rerr == 0);
    /* the client that started the handshake is told it is done, once; the server is not */
    CHECK(tcli.handshakes == 1 && tsrv.handshakes == 0);
    /* corked records leave together at uncork; plaintext arrives in the owner's buffer */
    uv_buf_t a = uv_buf_init((char *)"ping ", 5), b = uv_buf_init((char *)"over TLS", 8);
    loom_sock_cork(&tcli.sock);
    CHECK(loom_sock_write(&tcli.sock, &a, 1) == 0);
    CHECK(loom_sock_write(&tcli.sock, &b, 1) == 0);
    CHECK(loom_sock_uncork(&tcli.sock) == 0);
    while (tsrv.ngot < 13 && !tsrv.rerr)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(tsrv.ngot == 13 && memcmp(tsrv.got, "ping over TLS", 13) == 0);
    CHECK(tsrv.wrong_buffer == 0 && loom_sock_tls_ready(&tsrv.sock));
    /* the server answers and half-closes: the client reads the answer, then the end */
    uv_buf_t pong = uv_buf_init((char *)"pong", 4);
    CHECK(loom_sock_write(&tsrv.sock, &pong, 1) == 0);
    CHECK(loom_sock_shutdown(&tsrv.sock, on_shut) == 0);
    run_until(loop, &tcli.eof);
    CHECK(tcli.ngot == 4 && memcmp(tcli.got, "pong", 4) == 0 && tcli.rerr == 0);
    /* after the half-close the server still reads what the client sends */
    CHECK(loom_sock_write(&tcli.sock, &late, 1) == 0);
    while (tsrv.ngot < 14 && !tsrv.rerr)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(tsrv.ngot == 14 && tsrv.got[13] == 'x');
    loom_sock_close(&tcli.sock);
    loom_sock_close(&tsrv.sock);
    while (!tcli.closed || !tsrv.closed)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(tsrv.shut == 1);
    loom_tls_conf_unref(sconf);
    loom_tls_conf_unref(cconf);
}

static void on_unix_connection(uv_stream_t *server, int status) {
    (void)server;
    (void)status; /* the probe of the live one: left in the backlog */
}

/* loom_sock_bind_unix: a stale socket file is replaced, a live one refused, a file of
 * another kind left alone; the mode is set; loom_sock_unlink_unix removes only its file. */
static void test_unix(uv_loop_t *loop) {
    char dir[] = "/tmp/loom-test-sock-XXXXXX", path[64], plain[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/s.sock", dir);
    snprintf(plain, sizeof plain, "%s/plain", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* bound, never listening, closed: stale */
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    close(fd);
    uv_pipe_t a, b, c;
    unsigned long ino = 0, ino2 = 0;
    uv_pipe_init(loop, &a, 0);
    uv_pipe_init(loop, &b, 0);
    uv_pipe_init(loop, &c, 0);
    CHECK(loom_sock_bind_unix(&a, path, 0600, &ino) == 0 && ino != 0);
    CHECK(uv_listen((uv_stream_t *)&a, 8, on_unix_connection) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(loom_sock_bind_unix(&b, path, 0, &ino2) == UV_EADDRINUSE); /* a live one */
    FILE *f = fopen(plain, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    CHECK(loom_sock_bind_unix(&c, plain, 0, &ino2) == UV_EEXIST);
    CHECK(access(plain, F_OK) == 0);
    loom_sock_unlink_unix(path, ino + 1); /* not its file: stays */
    CHECK(access(path, F_OK) == 0);
    loom_sock_unlink_unix(path, ino);
    CHECK(access(path, F_OK) != 0);
    uv_close((uv_handle_t *)&a, NULL);
    uv_close((uv_handle_t *)&b, NULL);
    uv_close((uv_handle_t *)&c, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    unlink(plain);
    rmdir(dir);
}

int main(void) {
    uv_loop_t loop;
    struct sockaddr_in sa;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    alarm(60);
    CHECK(uv_loop_init(&loop) == 0);
    uv_tcp_init(&loop, &listener);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    CHECK(uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0) == 0);
    CHECK(uv_listen((uv_stream_t *)&listener, 8, on_connection) == 0);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    int fd = connect_peer(ntohs(((struct sockaddr_in *)&bound)->sin_port));
    run_until(&loop, &accepted);
    test_read(&loop, fd);
    test_big_write(&loop, fd);
    test_cork(fd);
    test_half_close(&loop, fd);
    test_close(&loop);
    close(fd);
    test_hold_close(&loop, ntohs(((struct sockaddr_in *)&bound)->sin_port));
    if (make_cert() == 0)
        test_tls(&loop, ntohs(((struct sockaddr_in *)&bound)->sin_port));
    else
        printf("no openssl command: the TLS part is skipped\n");
    remove(cert);
    remove(key);
    rmdir(tmpdir);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    test_unix(&loop);
    CHECK(uv_loop_close(&loop) == 0);
    return CHECK_SUMMARY();
}
