/*
 * fuzz_h2_server.c - libFuzzer target: src/http2/h2_session.c, a server session with no
 * socket, fed what a client would send, with a trivial responder above it. Nothing may crash
 * or leak (ASan), and the session's books must balance: every stream the layer was given
 * ends exactly once (on_reset or on_close), a head never shows a pseudo-header among its
 * fields, and the layer never holds more unconsumed body bytes than the windows allow.
 *
 * Input: byte 0 picks the set-up: bit 0 puts the client preface and an empty SETTINGS
 * frame before the rest (so the fuzzer reaches frames at once; without it the preface check
 * itself is fuzzed), bit 1 small limits (max_streams 2, max_header 256, window 1024, 2
 * CONTINUATION frames, rst_burst 4), bits 2-3 how the responder answers (at once with a
 * body, a head with no body, a reset, or never), bit 4 whether body bytes are consumed.
 * Byte 1 is where the rest is cut into two feeds (modulo its length + 1).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"
#include "http2/h2_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int mode, consume;
static long live;           /* streams given to the layer and not ended */
static size_t held, window; /* unconsumed body bytes the layer holds; their bound */

typedef struct {
    size_t held;
} req_t;

static void on_request(loom_h2_stream_t *st, const loom_h2_head_t *head) {
    static const loom_h2_header_t h[] = {{"Content-Type", "text/plain", 12, 10},
                                         {"Connection", "close", 10, 5}};
    req_t *r = calloc(1, sizeof *r);
    FUZZ_CHECK(r != NULL);
    loom_h2_stream_set_data(st, r);
    live++;
    FUZZ_CHECK(head->method.p != NULL || head->path.p == NULL);
    for (size_t i = 0; i < head->nheaders; i++)
        FUZZ_CHECK(head->headers[i].namelen > 0 && head->headers[i].name[0] != ':');
    switch (mode) {
    case 0:
        FUZZ_CHECK(loom_h2_respond(st, 200, h, 2, 0) == 0);
        FUZZ_CHECK(loom_h2_write(st, "hello", 5, 1) >= 0);
        break;
    case 1:
        FUZZ_CHECK(loom_h2_respond(st, 204, NULL, 0, 1) == 0);
        break;
    case 2:
        loom_h2_reset(st, LOOM_H2_CANCEL);
        break;
    default:
        break;
    }
}

static void on_data(loom_h2_stream_t *st, const char *d, size_t len) {
    req_t *r = loom_h2_stream_data(st);
    (void)d;
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
    req_t *r = loom_h2_stream_data(st);
    FUZZ_CHECK(r != NULL);
    held -= r->held;
    free(r);
    loom_h2_stream_set_data(st, NULL);
    live--;
    FUZZ_CHECK(live >= 0);
}

static void on_reset(loom_h2_stream_t *st, uint32_t code) {
    (void)code;
    gone(st);
}

static void on_close(loom_h2_stream_t *st) {
    gone(st);
}

static const loom_h2_callbacks_t cbs = {on_request, on_data, on_end, on_reset, on_close, NULL, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    loom_h2_opts_t o;
    if (size < 2)
        return 0;
    loom_h2_opts_default(&o);
    if (data[0] & 2) {
        o.max_streams = 2;
        o.max_header = 256;
        o.window = 1024;
        o.conn_window = 4096;
        o.max_continuations = 2;
        o.rst_burst = 4;
        o.junk_burst = 4;
    }
    mode = (data[0] >> 2) & 3;
    consume = (data[0] >> 4) & 1;
    /* the connection window bounds what every stream holds together */
    window = o.conn_window > 65535 ? o.conn_window : 65535;
    live = 0;
    held = 0;
    loom_h2_session_t *s = loom_h2_session_new(NULL, &o, &cbs, NULL);
    FUZZ_CHECK(s != NULL);
    const char *p = (const char *)data + 2;
    size_t len = size - 2, cut = data[1] % (len + 1);
    int rc = 0;
    if (data[0] & 1) {
        rc = loom_h2_session_feed(s, LOOM_H2_PREFACE, LOOM_H2_PREFACE_LEN);
        if (rc == 0)
            rc = loom_h2_session_feed(s, settings, sizeof settings);
    }
    if (rc == 0 && cut > 0)
        rc = loom_h2_session_feed(s, p, cut);
    if (rc == 0 && len > cut)
        rc = loom_h2_session_feed(s, p + cut, len - cut);
    FUZZ_CHECK((size_t)live == loom_h2_session_streams(s));
    loom_h2_session_free(s); /* the streams left end with on_reset */
    FUZZ_CHECK(live == 0 && held == 0);
    return 0;
}
