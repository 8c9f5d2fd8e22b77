/*
 * test_http_parse.c - src/http1/http_parse.c against a table of wire inputs and the outcome a
 * strict server must reach: accepted (with the target and a header checked) or rejected
 * (with the status the limits chose, or llhttp's own error). Every input is also fed one
 * byte at a time: a head split over many reads must be stored and limited the same way.
 */
#include <stdio.h>
#include <string.h>
#include "http_parse.h"

typedef struct {
    const char *name;
    const char *wire;
    int ok;             /* the head completes */
    int status;         /* when rejected by our checks: 400, 414, 431 (0: llhttp's error) */
    const char *target; /* when accepted */
    const char *hname, *hvalue;
    int nhdrs;
} case_t;

static const case_t cases[] = {
    {"simple GET", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", 1, 0, "/a?b=1", "host", "x", 1},
    {"names lowercased", "GET / HTTP/1.1\r\nHost: x\r\nX-Thing: Value\r\n\r\n", 1, 0, "/",
     "x-thing", "Value", 2},
    {"trailing spaces trimmed", "GET / HTTP/1.1\r\nHost: x\r\nA: b  \t\r\n\r\n", 1, 0, "/", "a",
     "b", 2},
    {"empty value", "GET / HTTP/1.1\r\nHost: x\r\nEmpty:\r\n\r\n", 1, 0, "/", "empty", "", 2},
    {"second Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"CL and TE",
     "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0,
     NULL, NULL, NULL, 0},
    {"differing CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
     0, 0, NULL, NULL, NULL, 0},
    {"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 0, 0, NULL, NULL, NULL, 0},
    {"space in a name", "GET / HTTP/1.1\r\nHost: x\r\nA b: c\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"tab before colon", "GET / HTTP/1.1\r\nHost: x\r\nA\t: c\r\n\r\n", 0, 0, NULL, NULL, NULL, 0},
    {"tab in a name", "GET / HTTP/1.1\r\nHost: x\r\nA\tb: c\r\n\r\n", 0, 0, NULL, NULL, NULL, 0},
    {"NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n", 0, 0, NULL, NULL, NULL, 0},
    {"bad method", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 0, NULL, NULL, NULL, 0},
    {"bare LF after the request line", "GET / HTTP/1.1\nHost: x\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"bare LF after a field", "GET / HTTP/1.1\r\nHost: x\nA: b\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"bare LF ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\n", 0, 400, NULL, NULL, NULL, 0},
    {"CR without LF", "GET / HTTP/1.1\r\nHost: x\rA: b\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"obs-fold, tab", "GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n\tc\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"space before the first field", "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"empty lines before the request", "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 1, 0, "/",
     "host", "x", 1},
    {"HTTP/1.0, no fields", "GET /z HTTP/1.0\r\n\r\n", 1, 0, "/z", NULL, NULL, 0},
    {"TE not chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 400,
     NULL, NULL, NULL, 0},
    {"TE gzip then chunked",
     "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 501, NULL, NULL,
     NULL, 0},
    {"TE chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n", 1, 0, "/",
     "transfer-encoding", "Chunked", 2},
    {"TE empty elements",
     "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\nTransfer-Encoding:\r\n\r\n", 1,
     0, "/", "transfer-encoding", ",chunked", 3},
    {"TE empty", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
    {"TE blank with CL",
     "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \t\r\nContent-Length: 1\r\n\r\n", 0, 400,
     NULL, NULL, NULL, 0},
    {"TE empty in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding:\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
    {"empty header name", "GET / HTTP/1.1\r\nHost: x\r\n:a: b\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"tab in the target", "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"form feed in the target", "GET /a\fb HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"# in the target", "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"Host, empty before a port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"Host, bad percent", "GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"Host, bad IPv6", "GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 0, 400, NULL, NULL, NULL, 0},
    {"Host, IPv6 zone", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
    {"Host, name and port", "GET / HTTP/1.1\r\nHost: a-b.c%41:8080\r\n\r\n", 1, 0, "/", "host",
     "a-b.c%41:8080", 1},
    {"Host, IPv6 and port", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", 1, 0, "/", "host",
     "[2001:db8::1]:443", 1},
    {"Host, IPvFuture", "GET / HTTP/1.1\r\nHost: [v7.a:b]\r\n\r\n", 1, 0, "/", "host", "[v7.a:b]",
     1},
    {"Host, empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 1, 0, "/", "host", "", 1},
    {"absolute form", "GET http://a.b:1/c?d HTTP/1.1\r\nHost: x\r\n\r\n", 1, 0, "http://a.b:1/c?d",
     "host", "x", 1},
    {"absolute form, userinfo", "GET http://u@a.b/ HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
    {"absolute form, no host", "GET http://:80/ HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
    {"CONNECT", "CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n", 1, 0, "a.b:443", "host",
     "a.b:443", 1},
    {"CONNECT without a port", "CONNECT a.b HTTP/1.1\r\nHost: a.b\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
    {"two spaces after the method", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400, NULL, NULL, NULL,
     0},
    {"two spaces before the version", "GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
    {"spaces in a value are kept", "GET / HTTP/1.1\r\nHost: x\r\nA: b  c\r\n\r\n", 1, 0, "/", "a",
     "b  c", 2},
    {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 400, NULL, NULL,
     NULL, 0},
};

static int failures, passes;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            passes++;                                                                              \
        } else {                                                                                   \
            failures++;                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

typedef struct {
    int headers_done;
} seen_t;

static seen_t seen; /* of the message run is parsing */

static int on_headers(loom_http_msg_t *m) {
    (void)m;
    seen.headers_done = 1;
    return HPE_PAUSED;
}

/* Feeds the wire in pieces of `step` bytes (0: whole); returns 1 when the head completed. */
static int run(const char *wire, size_t len, size_t step, loom_http_msg_t *m,
               loom_head_pool_t *pool, uint32_t max_header) {
    static loom_http_conf_t conf; /* outlives m: the caller reads m's head after run */
    conf = (loom_http_conf_t){
        .on_headers = on_headers, .max_header = max_header, .strict_lines = 1 /* as the server */};
    memset(&seen, 0, sizeof seen);
    loom_http_msg_init(m, HTTP_REQUEST, pool, &conf);
    size_t off = 0;
    while (off < len) {
        size_t n = step && len - off > step ? step : len - off;
        llhttp_errno_t err = loom_http_execute(m, wire + off, n);
        if (err == HPE_PAUSED)
            return seen.headers_done;
        if (err != HPE_OK)
            return 0;
        off += n;
    }
    return seen.headers_done;
}

static void check_case(const case_t *c, size_t step, loom_head_pool_t *pool) {
    loom_http_msg_t m;
    size_t len = strlen(c->wire);
    if (strstr(c->name, "NUL"))
        len = strlen(c->wire) + 1 + strlen(c->wire + strlen(c->wire) + 1);
    int done = run(c->wire, len, step, &m, pool, 16 * 1024);
    CHECK(done == c->ok, "%s (step %zu): head %s", c->name, step, done ? "completed" : "rejected");
    if (done && c->ok) {
        loom_head_t *h = m.head;
        CHECK(h->url_len == strlen(c->target) &&
                  memcmp(h->data + h->url, c->target, h->url_len) == 0,
              "%s (step %zu): target %.*s", c->name, step, (int)h->url_len, h->data + h->url);
        CHECK(h->nhdrs == c->nhdrs, "%s (step %zu): %d headers", c->name, step, h->nhdrs);
        int i = c->hname ? loom_head_find(h, c->hname, strlen(c->hname)) : -1;
        CHECK(!c->hname || (i >= 0 && h->hdrs[i].value_len == strlen(c->hvalue) &&
                            memcmp(LOOM_HEAD_VALUE(h, i), c->hvalue, h->hdrs[i].value_len) == 0),
              "%s (step %zu): header %s", c->name, step, c->hname);
    }
    if (!c->ok && c->status)
        CHECK(m.fail == c->status, "%s (step %zu): status %d, expected %d", c->name, step, m.fail,
              c->status);
    loom_http_msg_release(&m);
}

/* Header bytes are counted across reads: a head over the limit fails however it trickles. */
static void check_limits(loom_head_pool_t *pool) {
    char wire[8192];
    loom_http_msg_t m;
    int n = snprintf(wire, sizeof wire, "GET / HTTP/1.1\r\nHost: x\r\nBig: %0*d\r\n\r\n", 3000, 0);
    for (size_t step = 0; step <= 7; step += 7) {
        int done = run(wire, (size_t)n, step, &m, pool, 1024);
        CHECK(!done && m.fail == 431, "big header (step %zu): status %d", step, m.fail);
        loom_http_msg_release(&m);
    }
    n = snprintf(wire, sizeof wire, "GET /%0*d HTTP/1.1\r\nHost: x\r\n\r\n", 3000, 0);
    int done = run(wire, (size_t)n, 5, &m, pool, 1024);
    CHECK(!done && m.fail == 414, "long target: status %d", m.fail);
    loom_http_msg_release(&m);
    /* 120 small headers: over LOOM_MAX_HEADERS */
    int off = snprintf(wire, sizeof wire, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 120; i++)
        off += snprintf(wire + off, sizeof wire - (size_t)off, "H%d: v\r\n", i);
    off += snprintf(wire + off, sizeof wire - (size_t)off, "\r\n");
    done = run(wire, (size_t)off, 0, &m, pool, 16 * 1024);
    CHECK(!done && m.fail == 431, "too many headers: status %d", m.fail);
    loom_http_msg_release(&m);
}

int main(void) {
    loom_head_pool_t pool = {.max = 4};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(&cases[i], 0, &pool);
        check_case(&cases[i], 1, &pool);
    }
    check_limits(&pool);
    CHECK(pool.n <= pool.max, "pool holds %d heads, max %d", pool.n, pool.max);
    loom_head_pool_free(&pool);
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
