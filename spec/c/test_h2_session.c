/*
 * test_h2_session.c - src/http2/h2_session.c driven by real peers. A minimal server of this
 * test (a libuv listener on 127.0.0.1, port 0; each connection a loom_sock taken over by a
 * loom_h2_session) answers "hello" per request; the peers run as child processes while the
 * server's loop runs: nghttp -nv and curl --http2-prior-knowledge (one request each),
 * h2load -n 1000 -c 4 -m 10 (all 200), a 1 MiB upload read slowly (the window opens only as
 * the test consumes: never more than one window held), a 4 MiB answer written as the stream
 * drains, a head over max_header (431), and raw-socket clients in python3 (the script
 * below): HTTP/1.1 bytes instead of the preface (GOAWAY PROTOCOL_ERROR), a rapid reset
 * (HEADERS + RST_STREAM pairs: GOAWAY ENHANCE_YOUR_CALM), a
 * CONTINUATION flood (GOAWAY ENHANCE_YOUR_CALM after a few frames, the rest dropped: the
 * server's memory does not grow), streams past max_streams (REFUSED_STREAM), a graceful
 * GOAWAY (NO_ERROR, the stream in flight still answered, a later stream ignored), a PING
 * flood that never reads its ACKs, and three requests over TLS. Every handle is closed at
 * the end (uv_loop_close == 0); under the sanitizer build ASan checks the rest.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <uv.h>
#include "http2/h2_session.h"
#include "io/sock.h"
#include "tls.h"
#include "check.h"

typedef struct {
    loom_sock_t sock;
    loom_h2_session_t *s;
} conn_t;

typedef struct {
    size_t got, outstanding, max_outstanding;
    size_t left; /* of a big answer, still to write */
    int consumes, upload;
} req_t;

#define BIG_ANSWER (4 * 1024 * 1024)
static int writable_calls, big_done;

static uv_loop_t *loop;
static uv_tcp_t listener;
static int port;
static loom_h2_opts_t opts;
static int requests, ends, resets, closes, conns_open, conns_closed, slow_done;
static int64_t last_goaway = -2;
static size_t upload_max_outstanding, upload_got;
static int upload_consumes;
static loom_h2_stream_t *held_bye; /* answered a turn after loom_h2_goaway */
static uv_timer_t bye_timer;

static int span_is(loom_h2_span_t s, const char *v) {
    return s.p && s.len == strlen(v) && memcmp(s.p, v, s.len) == 0;
}

static void answer(loom_h2_stream_t *st, const char *body) {
    char len[24];
    snprintf(len, sizeof len, "%zu", strlen(body));
    loom_h2_header_t h[] = {{"Content-Type", "text/plain", 12, 10},
                            {"content-length", len, 14, strlen(len)},
                            {"Connection", "close", 10, 5}}; /* dropped: h2 forbids it */
    CHECK(loom_h2_respond(st, 200, h, 3, 0) == 0);
    CHECK(loom_h2_respond(st, 200, h, 3, 0) == -1); /* once */
    CHECK(loom_h2_write(st, body, strlen(body), 1) >= 0);
    CHECK(loom_h2_write(st, "x", 1, 0) == -1); /* after the last byte */
}

/* Writes the rest of a big answer until the stream holds more than its high-water mark;
 * on_writable brings it back. */
static void pump(loom_h2_stream_t *st) {
    static char piece[16 * 1024];
    req_t *r = loom_h2_stream_data(st);
    memset(piece, 'z', sizeof piece);
    while (r->left > 0) {
        size_t n = r->left < sizeof piece ? r->left : sizeof piece;
        int64_t queued = loom_h2_write(st, piece, n, n == r->left);
        CHECK(queued >= 0);
        r->left -= n;
        CHECK(queued <= LOOM_H2_STREAM_HIGH_WATER + (int64_t)sizeof piece);
        if (queued >= LOOM_H2_STREAM_HIGH_WATER)
            return;
    }
}

static void on_writable(loom_h2_stream_t *st) {
    writable_calls++;
    pump(st);
}

static void on_bye_timer(uv_timer_t *t) {
    (void)t;
    if (held_bye)
        answer(held_bye, "hello");
    held_bye = NULL;
}

static void on_request(loom_h2_stream_t *st, const loom_h2_head_t *head) {
    req_t *r = calloc(1, sizeof *r);
    requests++;
    loom_h2_stream_set_data(st, r);
    CHECK(head->method.p && head->path.p && head->scheme.p);
    for (size_t i = 0; i < head->nheaders; i++)
        CHECK(head->headers[i].namelen > 0 && head->headers[i].name[0] != ':');
    if (span_is(head->path, "/upload")) {
        r->upload = 1;
    } else if (span_is(head->path, "/big")) {
        char len[24];
        snprintf(len, sizeof len, "%d", BIG_ANSWER);
        loom_h2_header_t h[] = {{"content-length", len, 14, strlen(len)}};
        CHECK(loom_h2_respond(st, 200, h, 1, 0) == 0);
        r->left = BIG_ANSWER;
        pump(st);
    } else if (span_is(head->path, "/hold")) {
        /* never answered: the connection's end resets it */
    } else if (span_is(head->path, "/bye")) {
        loom_h2_goaway(loom_h2_stream_session(st), LOOM_H2_NO_ERROR);
        held_bye = st;
        uv_timer_start(&bye_timer, on_bye_timer, 0, 0); /* the next turn, after the GOAWAY */
    } else if (!span_is(head->method, "POST")) {
        answer(st, "hello");
    }
}

/* The upload is read slowly: the bytes are given back only once a whole window is held,
 * so the peer stalls each time; the most held is one window, never the whole body. */
static void on_data(loom_h2_stream_t *st, const char *data, size_t len) {
    req_t *r = loom_h2_stream_data(st);
    (void)data;
    r->got += len;
    r->outstanding += len;
    if (r->outstanding > r->max_outstanding)
        r->max_outstanding = r->outstanding;
    if (!r->upload || r->outstanding >= opts.window) {
        loom_h2_consume(st, r->outstanding);
        r->outstanding = 0;
        r->consumes++;
    }
}

static void on_end(loom_h2_stream_t *st) {
    req_t *r = loom_h2_stream_data(st);
    char body[64];
    ends++;
    if (!r->upload)
        return;
    loom_h2_consume(st, r->outstanding);
    upload_max_outstanding = r->max_outstanding;
    upload_got = r->got;
    upload_consumes = r->consumes;
    slow_done = 1;
    snprintf(body, sizeof body, "got %zu", r->got);
    answer(st, body);
}

static void on_reset(loom_h2_stream_t *st, uint32_t code) {
    (void)code;
    resets++;
    if (st == held_bye)
        held_bye = NULL;
    free(loom_h2_stream_data(st));
}

static void on_close(loom_h2_stream_t *st) {
    req_t *r = loom_h2_stream_data(st);
    closes++;
    big_done += r->left == 0 && r->consumes == 0 && r->got == 0;
    free(loom_h2_stream_data(st));
}

static void on_closed(loom_h2_session_t *s) {
    conn_t *c = loom_h2_session_data(s);
    last_goaway = loom_h2_session_goaway_code(s);
    conns_open--;
    conns_closed++;
    free(c);
}

static const loom_h2_callbacks_t cbs = {on_request, on_data,     on_end,   on_reset,
                                        on_close,   on_writable, on_closed};

/* The accept hooks: the sock is the h2 session's from the start (prior knowledge). */
static void noop_alloc(loom_sock_t *s, size_t hint, uv_buf_t *b) {
    (void)s, (void)hint, (void)b;
}
static void noop_input(loom_sock_t *s, ssize_t n, const char *d) {
    (void)s, (void)n, (void)d;
}
static void noop_drained(loom_sock_t *s, int st) {
    (void)s, (void)st;
}
static void free_closed(loom_sock_t *s) {
    free(loom_sock_owner(s));
}
static const loom_sock_hooks_t accept_hooks = {noop_alloc, noop_input, noop_drained, NULL,
                                               free_closed};

/* On the TLS listener (data: its configuration) the session is made before the handshake,
 * as for a listener that speaks only h2: it sends nothing until the handshake is done. */
static void on_connection(uv_stream_t *server, int status) {
    CHECK(status == 0);
    conn_t *c = calloc(1, sizeof *c);
    CHECK(loom_sock_init_tcp(&c->sock, server->loop, &accept_hooks, c) == 0);
    if (uv_accept(server, &c->sock.h.stream) != 0 ||
        (server->data && loom_sock_tls_start(&c->sock, server->data, NULL) != 0)) {
        loom_sock_close(&c->sock);
        return;
    }
    c->s = loom_h2_session_new(&c->sock, &opts, &cbs, c);
    CHECK(c->s != NULL);
    if (!c->s) {
        loom_sock_close(&c->sock);
        return;
    }
    conns_open++;
}

/* ---------------------------------------------------------------- peers */

static int exited;
static int64_t exit_status;

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
    exited = 1;
    exit_status = sig ? 128 + sig : status;
    uv_close((uv_handle_t *)p, NULL);
}

/* Runs argv while the server's loop runs; its stdout and stderr land in out (NUL-ended).
 * The exit status, or -1 if it could not start (said on stderr). */
static int run_peer(char **argv, char *out, size_t cap) {
    char path[] = "/tmp/loom-h2-peer-XXXXXX";
    int fd = mkstemp(path);
    uv_process_t proc;
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_INHERIT_FD, .data.fd = fd},
                                     {.flags = UV_INHERIT_FD, .data.fd = fd}};
    uv_process_options_t po = {
        .file = argv[0], .args = argv, .exit_cb = on_exit_cb, .stdio_count = 3, .stdio = stdio};
    unlink(path);
    exited = 0;
    int rc = uv_spawn(loop, &proc, &po);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s (Debian: nghttp2-client, curl, python3)\n", argv[0],
                uv_strerror(rc));
        close(fd);
        out[0] = 0;
        return -1;
    }
    while (!exited)
        uv_run(loop, UV_RUN_ONCE);
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    if (exit_status != 0)
        fprintf(stderr, "%s exited %d:\n%s\n", argv[0], (int)exit_status, out);
    return (int)exit_status;
}

/* Runs the loop until every connection of the server has closed. */
static void settle(void) {
    while (conns_open > 0)
        uv_run(loop, UV_RUN_ONCE);
}

static char out[256 * 1024];
static char url[64], url_upload[64];

/* Raw HTTP/2 clients: the attacks and the cases no stock client makes. */
static const char *raw_client =
    "import socket, struct, sys\n"
    "mode, port = sys.argv[1], int(sys.argv[2])\n"
    "def frame(t, fl, sid, p=b''):\n"
    "    return len(p).to_bytes(3, 'big') + bytes([t, fl]) + sid.to_bytes(4, 'big') + p\n"
    "def head(path):\n"
    "    # GET, http, :path literal (indexed name 4), :authority literal (indexed name 1)\n"
    "    return bytes([0x82, 0x86, 0x04, len(path)]) + path + bytes([0x01, 9]) + b'127.0.0.1'\n"
    "s = socket.create_connection(('127.0.0.1', port))\n"
    "if mode == 'tls':\n"
    "    import ssl\n"
    "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
    "    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE\n"
    "    s = ctx.wrap_socket(s, server_hostname='localhost')\n"
    "if mode == 'badpreface':\n"
    "    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
    "else:\n"
    "    s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n' + frame(4, 0, 0))\n"
    "def frames():\n"
    "    buf = b''\n"
    "    while True:\n"
    "        try:\n"
    "            d = s.recv(65536)\n"
    "        except (ConnectionResetError, OSError):\n"
    "            d = b''\n"
    "        if not d:\n"
    "            return\n"
    "        buf += d\n"
    "        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], 'big'):\n"
    "            n = int.from_bytes(buf[:3], 'big')\n"
    "            yield buf[3], buf[4], int.from_bytes(buf[5:9], 'big') & 0x7fffffff, buf[9:9 + n]\n"
    "            buf = buf[9 + n:]\n"
    "def goaway():\n"
    "    for t, fl, sid, p in frames():\n"
    "        if t == 7:\n"
    "            return int.from_bytes(p[4:8], 'big'), int.from_bytes(p[:4], 'big')\n"
    "    return None, None\n"
    "def send_all(chunk, times):\n"
    "    sent = 0\n"
    "    try:\n"
    "        for i in range(times):\n"
    "            s.sendall(chunk)\n"
    "            sent += 1\n"
    "    except (BrokenPipeError, ConnectionResetError):\n"
    "        pass\n"
    "    return sent\n"
    "if mode == 'badpreface':\n"
    "    code, last = goaway()\n"
    "    print('badpreface: GOAWAY %s last %s' % (code, last))\n"
    "    sys.exit(0 if code == 1 and last == 0 else 1)\n"
    "if mode == 'rapid':\n"
    "    pairs = [frame(1, 0x5, 2 * i + 1, head(b'/')) + frame(3, 0, 2 * i + 1, (8).to_bytes(4, "
    "'big'))\n"
    "             for i in range(5000)]\n"
    "    sent = 0\n"
    "    try:\n"
    "        for i in range(0, 5000, 100):\n"
    "            s.sendall(b''.join(pairs[i:i + 100]))\n"
    "            sent += 100\n"
    "    except (BrokenPipeError, ConnectionResetError):\n"
    "        pass\n"
    "    code, last = goaway()\n"
    "    print('rapid: pairs sent %d, GOAWAY %s last %s' % (sent, code, last))\n"
    "    sys.exit(0 if code == 11 else 1)\n"
    "if mode == 'continuation':\n"
    "    s.sendall(frame(1, 0x1, 1, head(b'/')))  # END_STREAM, no END_HEADERS\n"
    "    field = bytes([0x00, 3]) + b'x-a' + bytes([100]) + b'a' * 100\n"
    "    chunk = frame(9, 0, 1, field) * 1000\n"
    "    sent = send_all(chunk, 200)\n"
    "    code, last = goaway()\n"
    "    print('continuation: %d of 200000 frames sent, GOAWAY %s' % (sent * 1000, code))\n"
    "    sys.exit(0 if code == 11 else 1)\n"
    "if mode == 'refuse':\n"
    "    s.sendall(b''.join(frame(1, 0x4, sid, head(b'/hold')) for sid in (1, 3, 5)))\n"
    "    for t, fl, sid, p in frames():\n"
    "        if t == 3:\n"
    "            code = int.from_bytes(p, 'big')\n"
    "            print('refuse: RST_STREAM on %d code %d' % (sid, code))\n"
    "            sys.exit(0 if sid == 5 and code == 7 else 1)\n"
    "    print('refuse: no RST_STREAM')\n"
    "    sys.exit(1)\n"
    "if mode == 'goaway':\n"
    "    s.sendall(frame(1, 0x5, 1, head(b'/bye')))\n"
    "    seen, body, late = [], b'', False\n"
    "    for t, fl, sid, p in frames():\n"
    "        if t == 7 and not late:\n"
    "            s.sendall(frame(1, 0x5, 3, head(b'/')))  # after GOAWAY: not taken\n"
    "            late = True\n"
    "        if t in (0, 1, 3, 7):\n"
    "            seen.append((t, sid, int.from_bytes(p[4:8], 'big') if t == 7 else fl & 1))\n"
    "        if t == 0 and sid == 1:\n"
    "            body += p\n"
    "    print('goaway: %r body %r' % (seen, body))\n"
    "    ok = seen[0] == (7, 0, 0) and (1, 1, 0) in seen and (0, 1, 1) in seen\n"
    "    sys.exit(0 if ok and body == b'hello' and all(f[1] != 3 for f in seen) else 1)\n"
    "if mode == 'pingflood':\n"
    "    s.sendall(frame(1, 0x5, 1, head(b'/')))\n"
    "    for t, fl, sid, p in frames():\n"
    "        if t == 0 and fl & 1:\n"
    "            break\n"
    "    s.settimeout(3)  # a server that stops reading backs the pings up\n"
    "    chunk, sent = frame(6, 0, 0, b'12345678') * 1000, 0\n"
    "    try:\n"
    "        while sent < 300:\n"
    "            s.sendall(chunk)\n"
    "            sent += 1\n"
    "    except socket.timeout:\n"
    "        print('pingflood: blocked after %d pings' % (sent * 1000))\n"
    "        sys.exit(0)\n"
    "    except (BrokenPipeError, ConnectionResetError):\n"
    "        pass\n"
    "    s.settimeout(20)  # a hang guard: the GOAWAY is on its way long before\n"
    "    code, last = goaway()\n"
    "    print('pingflood: %d pings sent, GOAWAY %s' % (sent * 1000, code))\n"
    "    sys.exit(0 if code == 11 else 1)\n"
    "if mode == 'tls':\n"
    "    s.sendall(b''.join(frame(1, 0x5, sid, head(b'/')) for sid in (1, 3, 5)))\n"
    "    bodies = {}\n"
    "    for t, fl, sid, p in frames():\n"
    "        if t == 0:\n"
    "            bodies[sid] = bodies.get(sid, b'') + p\n"
    "            if fl & 1 and len(bodies) == 3 and all(bodies[i] == b'hello' for i in bodies):\n"
    "                s.sendall(frame(7, 0, 0, bytes(8)))\n"
    "                print('tls: 3 answers over TLS')\n"
    "                sys.exit(0)\n"
    "    print('tls: %r' % bodies)\n"
    "    sys.exit(1)\n"
    "sys.exit(2)\n";

static int raw_port(const char *mode, int to) {
    char p[16];
    snprintf(p, sizeof p, "%d", to);
    char *argv[] = {"python3", "-c", (char *)raw_client, (char *)mode, p, NULL};
    return run_peer(argv, out, sizeof out);
}

static int raw(const char *mode) {
    return raw_port(mode, port);
}

/* ---------------------------------------------------------------- the cases */

static void test_nghttp(void) {
    char *argv[] = {"nghttp", "-nv", url, NULL};
    int before = requests;
    CHECK(run_peer(argv, out, sizeof out) == 0);
    CHECK(strstr(out, "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100") != NULL);
    CHECK(strstr(out, "SETTINGS_MAX_HEADER_LIST_SIZE(0x06):16384") != NULL);
    CHECK(strstr(out, ":status: 200") != NULL);
    CHECK(strstr(out, "content-length: 5") != NULL);
    CHECK(strstr(out, "connection:") == NULL);
    CHECK(requests == before + 1);
    settle();
}

static void test_curl(void) {
    char *argv[] = {"curl", "-sS", "--http2-prior-knowledge", "-w", " %{http_version} %{http_code}",
                    url,    NULL};
    CHECK(run_peer(argv, out, sizeof out) == 0);
    CHECK(strcmp(out, "hello 2 200") == 0);
    settle();
}

static void test_h2load(void) {
    char *argv[] = {"h2load", "-n", "1000", "-c", "4", "-m", "10", url, NULL};
    int before = closes;
    CHECK(run_peer(argv, out, sizeof out) == 0);
    CHECK(strstr(out, "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed") !=
          NULL);
    CHECK(strstr(out, "status codes: 1000 2xx") != NULL);
    settle();
    CHECK(closes == before + 1000);
}

static void test_slow_upload(void) {
    static char big[1024 * 1024];
    char path[] = "/tmp/loom-h2-upload-XXXXXX", data[64];
    int fd = mkstemp(path);
    memset(big, 'u', sizeof big);
    CHECK(write(fd, big, sizeof big) == (ssize_t)sizeof big);
    close(fd);
    snprintf(data, sizeof data, "@%s", path);
    char *argv[] = {"curl", "-sS",      "--http2-prior-knowledge",
                    "-H",   "Expect:",  "--data-binary",
                    data,   url_upload, NULL};
    slow_done = 0;
    CHECK(run_peer(argv, out, sizeof out) == 0);
    unlink(path);
    CHECK(strcmp(out, "got 1048576") == 0);
    CHECK(slow_done && upload_got == sizeof big);
    CHECK(upload_max_outstanding <= opts.window); /* one window held at most */
    CHECK(upload_consumes >= (int)(sizeof big / opts.window) - 1);
    settle();
}

/* A 4 MiB answer written as the stream drains (on_writable), to curl and to nghttp with a
 * 16 KiB stream window (so the data provider waits on the peer's WINDOW_UPDATEs). */
static void test_big_answer(void) {
    char big_url[64];
    snprintf(big_url, sizeof big_url, "http://127.0.0.1:%d/big", port);
    char *curl[] = {"curl",      "-sS", "--http2-prior-knowledge",       "-o",
                    "/dev/null", "-w",  "%{http_code} %{size_download}", big_url,
                    NULL};
    char *nghttp[] = {"nghttp", "-n", "-s", "-w", "14", big_url, NULL};
    int before = big_done, wbefore = writable_calls;
    CHECK(run_peer(curl, out, sizeof out) == 0);
    CHECK(strcmp(out, "200 4194304") == 0);
    CHECK(run_peer(nghttp, out, sizeof out) == 0);
    settle();
    CHECK(big_done == before + 2);
    CHECK(writable_calls - wbefore >= 2 * (BIG_ANSWER / LOOM_H2_STREAM_HIGH_WATER) - 2);
}

/* A client that sends PINGs and never reads the ACKs: the server stops reading once its
 * write queue passes the high-water mark (or nghttp2 calls it a flood: GOAWAY), so what it
 * holds stays bounded while the client's sends back up. */
static void test_ping_flood(void) {
    CHECK(raw("pingflood") == 0);
    settle();
    printf("%s", out);
}

static void test_header_too_big(void) {
    static char hdr[20000];
    int before = requests;
    memcpy(hdr, "x-big: ", 7);
    memset(hdr + 7, 'b', sizeof hdr - 8);
    char *argv[] = {"curl",
                    "-sS",
                    "--http2-prior-knowledge",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    hdr,
                    url,
                    NULL};
    CHECK(run_peer(argv, out, sizeof out) == 0);
    CHECK(strcmp(out, "431") == 0);
    CHECK(requests == before); /* never reached the layer */
    settle();
}

/* HTTP/1.1 bytes where the preface belongs: GOAWAY PROTOCOL_ERROR, nothing reaches the layer. */
static void test_bad_preface(void) {
    int before = requests;
    CHECK(raw("badpreface") == 0);
    settle();
    CHECK(last_goaway == LOOM_H2_PROTOCOL_ERROR);
    CHECK(requests == before);
}

static void test_rapid_reset(void) {
    int before = requests;
    uint64_t t0 = uv_hrtime();
    CHECK(raw("rapid") == 0);
    settle();
    CHECK(last_goaway == LOOM_H2_ENHANCE_YOUR_CALM);
    /* the burst, and what the rate gave back while it ran: far fewer than the 5000 sent */
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    CHECK(requests - before <= (int)(opts.rst_burst + opts.rst_rate * secs) + 2);
    CHECK(requests - before < 5000);
    printf("%s", out);
}

/* The server's peak memory (KiB). */
static long maxrss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* 23 MB of CONTINUATION frames: GOAWAY after max_continuations of them; the rest is read
 * and dropped while the connection lingers, so the server's memory does not grow with it. */
static void test_continuation_flood(void) {
    int before = requests;
    long rss = maxrss();
    CHECK(raw("continuation") == 0);
    settle();
    CHECK(last_goaway == LOOM_H2_ENHANCE_YOUR_CALM);
    CHECK(requests == before);
    CHECK(maxrss() - rss < 8 * 1024);
    printf("%s", out);
}

static void test_refused(void) {
    uint32_t keep = opts.max_streams;
    int before = resets;
    opts.max_streams = 2;
    CHECK(raw("refuse") == 0);
    settle();
    CHECK(resets == before + 2); /* the two held streams, at the connection's end */
    opts.max_streams = keep;
}

static void test_graceful_goaway(void) {
    int before = closes;
    CHECK(raw("goaway") == 0);
    settle();
    CHECK(last_goaway == LOOM_H2_NO_ERROR);
    CHECK(closes == before + 1);
    printf("%s", out);
}

static char tmpdir[] = "/tmp/test_h2.XXXXXX";
static char cert[64], key[64];

/* A self-signed certificate for localhost from the openssl command; 0 when made. */
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

/* The session on a TLS sock: the handshake first, then frames in corked records. */
static void test_tls(void) {
    char err[256];
    uv_tcp_t tl;
    struct sockaddr_in sa;
    int len = sizeof sa, before = closes;
    int made = make_cert();
    if (made != 0)
        fprintf(stderr, "cannot make a certificate with the openssl command\n");
    CHECK(made == 0);
    loom_tls_opts_t so = {.server = 1, .cert = cert, .key = key};
    loom_tls_conf_t *conf = made == 0 ? loom_tls_conf_new(&so, err, sizeof err) : NULL;
    CHECK(conf != NULL);
    if (conf) {
        uv_ip4_addr("127.0.0.1", 0, &sa);
        CHECK(uv_tcp_init(loop, &tl) == 0);
        tl.data = conf;
        CHECK(uv_tcp_bind(&tl, (struct sockaddr *)&sa, 0) == 0);
        CHECK(uv_listen((uv_stream_t *)&tl, 8, on_connection) == 0);
        CHECK(uv_tcp_getsockname(&tl, (struct sockaddr *)&sa, &len) == 0);
        CHECK(raw_port("tls", ntohs(sa.sin_port)) == 0);
        settle();
        CHECK(closes == before + 3);
        uv_close((uv_handle_t *)&tl, NULL);
        loom_tls_conf_unref(conf);
    }
    remove(cert);
    remove(key);
    rmdir(tmpdir);
}

static void test_preface(void) {
    CHECK(loom_h2_is_preface(LOOM_H2_PREFACE "rest", 28) == 1);
    CHECK(loom_h2_is_preface("PRI * HT", 8) == -1);
    CHECK(loom_h2_is_preface("GET / HTTP/1.1\r\n", 16) == 0);
    CHECK(loom_h2_is_preface("", 0) == -1);
}

int main(void) {
    struct sockaddr_in sa;
    int len = sizeof sa;
    alarm(50); /* a hang guard only */
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    loom_h2_opts_default(&opts);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    CHECK(uv_tcp_init(loop, &listener) == 0);
    CHECK(uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0) == 0);
    CHECK(uv_listen((uv_stream_t *)&listener, 64, on_connection) == 0);
    CHECK(uv_tcp_getsockname(&listener, (struct sockaddr *)&sa, &len) == 0);
    uv_timer_init(loop, &bye_timer);
    port = ntohs(sa.sin_port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    snprintf(url_upload, sizeof url_upload, "http://127.0.0.1:%d/upload", port);

    test_preface();
    test_nghttp();
    test_curl();
    test_h2load();
    test_slow_upload();
    test_big_answer();
    test_header_too_big();
    test_bad_preface();
    test_rapid_reset();
    test_continuation_flood();
    test_refused();
    test_graceful_goaway();
    test_ping_flood();
    test_tls();

    CHECK(conns_open == 0);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_close((uv_handle_t *)&bye_timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(loop) == 0);
    return CHECK_SUMMARY();
}
