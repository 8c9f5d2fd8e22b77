/*
 * websocket.h - the RFC 6455 frame codec: sizing a frame in a buffer, unmasking, encoding,
 * and the handshake's accept key. core.ws_read_frame reads frames off a stream with it (a
 * framed read, loom_stream_read_framed) and lua/loom/websocket.lua speaks the protocol.
 */
#ifndef LOOM_WEBSOCKET_H
#define LOOM_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>

typedef struct {
    size_t header;   /* bytes before the payload */
    uint64_t length; /* payload bytes */
    int fin, rsv, opcode, masked;
    unsigned char key[4];
} loom_ws_frame_t;

/* Parses a frame header from p[0, n). Returns 1 when the header is complete (f filled),
 * 0 when more bytes are needed. */
int loom_ws_parse_header(const unsigned char *p, size_t n, loom_ws_frame_t *f);

/* Why a parsed header can be refused before its payload arrives (RFC 6455 5.2 and 5.5): a
 * 64-bit length with its top bit set, a control frame over 125 bytes or fragmented; NULL
 * when it is acceptable so far. Masking, reserved bits and opcodes are left to the
 * protocol (lua/loom/websocket.lua), which knows which end it is. */
const char *loom_ws_header_error(const loom_ws_frame_t *f);

/* XORs len bytes of src with the masking key into dst; `offset` is the payload position
 * of src[0] (the key repeats every 4 bytes). */
void loom_ws_unmask(char *dst, const char *src, size_t len, const unsigned char key[4],
                    size_t offset);

int loom_open_websocket(lua_State *L);

/* ws_deflate.c: core.ws_deflater, core.ws_inflater (permessage-deflate, RFC 7692) */
int loom_open_ws_deflate(lua_State *L);

#endif
