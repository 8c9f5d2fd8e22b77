/*
 * fuzz_h2_client.c - libFuzzer target: src/http2/h2_session.c as a client session
 * (o.client = 1, what src/http2/h2_client.c drives) with no socket: requests are submitted,
 * then what a server would send is fed. Nothing may crash or leak (ASan), and the books
 * must balance: every request stream ends exactly once (on_close or on_reset), a response
 * head comes at most once per stream and only before its end, and the layer never holds
 * more unconsumed body bytes than the windows allow.
 *
 * Input: byte 0 picks the set-up: bit 0 puts an empty server SETTINGS frame first (so the
 * fuzzer reaches the response frames at once), bit 1 small windows (1024 per stream, 4096
 * for the connection), bit 2 whether body bytes are consumed as they come, bits 3-5 how
 * many requests (1-8) are submitted, bit 6 whether the odd ones carry a body. Byte 1 is
 * where the rest is cut into two feeds (modulo its length + 1).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"
#include "http2/h2_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int consume;
static long live;           /* request streams not ended */
static size_t held, window; /* unconsumed body bytes the layer holds; their bound */

typedef struct {
    size_t held;
    int heads;
    int ended;
} rq_t;

static void on_head(loom_h2_stream_t *st, const loom_h2_head_t *head) {
    rq_t *r = loom_h2_stream_data(st);
    FUZZ_CHECK(r != NULL && !r->ended);
    r->heads++;
    FUZZ_CHECK(head->status.p != NULL && head->status.len == 3);
    for (size_t i = 0; i < head->nheaders; i++)
        FUZZ_CHECK(head->headers[i].namelen > 0 && head->headers[i].name[0] != ':');
}

static void on_data(loom_h2_stream_t *st, const char *d, size_t len) {
    rq_t *r = loom_h2_stream_data(st);
    (void)d;
    FUZZ_CHECK(r != NULL && r->heads > 0);
    r->held += len;
    held += len;
    FUZZ_CHECK(held <= window);
    if (consume) {
        loom_h2_consume(st, r->held);
        held -= r->held;
        r->held = 0;
    }
}

static void on_end(loom_h2_stream_t *st) {
    FUZZ_CHECK(loom_h2_stream_data(st) != NULL);
}

static void gone(loom_h2_stream_t *st) {
    rq_t *r = loom_h2_stream_data(st);
    FUZZ_CHECK(r != NULL && !r->ended);
    r->ended = 1;
    held -= r->held;
    r->held = 0;
    loom_h2_stream_set_data(st, NULL);
    live--;
    FUZZ_CHECK(live >= 0);
}

static void on_reset(loom_h2_stream_t *st, uint32_t code) {
    (void)code;
    gone(st);
}

static void on_close(loom_h2_stream_t *st) {
    rq_t *r = loom_h2_stream_data(st);
    FUZZ_CHECK(r != NULL && r->heads == 1); /* a whole response has its head */
    gone(st);
}

static const loom_h2_callbacks_t cbs = {on_head, on_data, on_end, on_reset, on_close, NULL, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    static const loom_h2_header_t get[] = {
        {":method", "GET", 7, 3}, {":scheme", "https", 7, 5},    {":authority", "a.test", 10, 6},
        {":path", "/", 5, 1},     {"user-agent", "fuzz", 10, 4},
    };
    rq_t rqs[8];
    loom_h2_opts_t o;
    if (size < 2)
        return 0;
    loom_h2_opts_default(&o);
    o.client = 1;
    if (data[0] & 2) {
        o.window = 1024;
        o.conn_window = 4096;
    }
    consume = (data[0] >> 2) & 1;
    int n = ((data[0] >> 3) & 7) + 1, bodies = (data[0] >> 6) & 1;
    window = o.conn_window > 65535 ? o.conn_window : 65535;
    live = 0;
    held = 0;
    memset(rqs, 0, sizeof rqs);
    loom_h2_session_t *s = loom_h2_session_new(NULL, &o, &cbs, NULL);
    FUZZ_CHECK(s != NULL);
    for (int i = 0; i < n; i++) {
        int body = bodies && (i & 1);
        loom_h2_stream_t *st = loom_h2_request(s, get, 5, body, &rqs[i]);
        FUZZ_CHECK(st != NULL);
        live++;
        if (body)
            FUZZ_CHECK(loom_h2_write(st, "hello", 5, 1) >= 0);
    }
    const char *p = (const char *)data + 2;
    size_t len = size - 2, cut = data[1] % (len + 1);
    int rc = 0;
    if (data[0] & 1)
        rc = loom_h2_session_feed(s, settings, sizeof settings);
    if (rc == 0 && cut > 0)
        rc = loom_h2_session_feed(s, p, cut);
    if (rc == 0 && len > cut)
        rc = loom_h2_session_feed(s, p + cut, len - cut);
    FUZZ_CHECK((size_t)live == loom_h2_session_streams(s));
    loom_h2_session_free(s); /* the streams left end with on_reset */
    FUZZ_CHECK(live == 0 && held == 0);
    for (int i = 0; i < n; i++)
        FUZZ_CHECK(rqs[i].ended && rqs[i].heads <= 1);
    return 0;
}
