/*
 * fuzz_ws_frame.c - libFuzzer target: the input as a stream of WebSocket frames, read the way
 * stream.c reads them (RD_WSFRAME): parse a header, refuse one RFC 6455 forbids whatever
 * follows (loom_ws_header_error), refuse a payload over the limit, wait for the whole frame,
 * unmask it, move on. Checks that a header is never reported before its bytes are all there,
 * that its size is one RFC 6455 allows, that it is refused exactly when its length has the
 * top bit set or it is a control frame over 125 bytes or fragmented, and that unmasking is
 * undone by unmasking again, from any payload offset. See docs/fuzzing.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"
#include "websocket.h"

#define FUZZ_MAX_FRAME 4096 /* the stream's rwant: frames past it are a "limit" failure */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A header is 2 bytes, plus 2 or 8 of extended length, plus 4 of masking key. */
static void check_header(const uint8_t *p, size_t n, const loom_ws_frame_t *f) {
    static const size_t sizes[] = {2, 4, 6, 8, 10, 14};
    int known = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        known |= f->header == sizes[i];
    FUZZ_CHECK(known);
    FUZZ_CHECK(f->header <= n);
    FUZZ_CHECK(f->opcode >= 0 && f->opcode <= 15 && f->rsv >= 0 && f->rsv <= 7);
    FUZZ_CHECK(f->masked == ((p[1] & 0x80) != 0));
    loom_ws_frame_t g;
    for (size_t k = 0; k < f->header; k++) /* no prefix of the header is a header */
        FUZZ_CHECK(loom_ws_parse_header(p, k, &g) == 0);
    /* the length as the wire spells it, MSB first after the 7-bit field */
    uint64_t len = p[1] & 0x7f;
    size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
    if (ext) {
        len = 0;
        for (size_t i = 0; i < ext; i++)
            len = (len << 8) | p[2 + i];
    }
    FUZZ_CHECK(f->length == len);
    int control = (p[0] & 0x0f) >= 8, fin = (p[0] & 0x80) != 0;
    int refused = (len >> 63) != 0 || (control && (len > 125 || !fin));
    FUZZ_CHECK((loom_ws_header_error(f) != NULL) == refused);
}

static void check_unmask(const char *src, size_t len, const unsigned char key[4]) {
    char *a = malloc(len ? len : 1), *b = malloc(len ? len : 1);
    FUZZ_CHECK(a && b);
    loom_ws_unmask(a, src, len, key, 0);
    loom_ws_unmask(b, a, len, key, 0);
    FUZZ_CHECK(memcmp(b, src, len) == 0);
    /* in two pieces, the second from its payload offset: the same bytes as in one */
    size_t cut = len / 3;
    loom_ws_unmask(b, src, cut, key, 0);
    loom_ws_unmask(b + cut, src + cut, len - cut, key, cut);
    FUZZ_CHECK(memcmp(a, b, len) == 0);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t pos = 0;
    while (pos < size) {
        const uint8_t *p = data + pos;
        size_t n = size - pos;
        loom_ws_frame_t f;
        if (!loom_ws_parse_header(p, n, &f))
            break; /* more bytes needed */
        check_header(p, n, &f);
        if (loom_ws_header_error(&f))
            break; /* stream.c: "http: ..." before the payload */
        if (f.length > FUZZ_MAX_FRAME)
            break; /* stream.c: "frame larger than ..." before adding header and length */
        if (n < f.header + f.length)
            break;
        static const unsigned char zero[4] = {0, 0, 0, 0};
        check_unmask((const char *)p + f.header, (size_t)f.length, f.masked ? f.key : zero);
        pos += f.header + (size_t)f.length;
    }
    return 0;
}
