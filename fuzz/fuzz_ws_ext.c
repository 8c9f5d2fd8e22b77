/*
 * fuzz_ws_ext.c - libFuzzer target: the Sec-WebSocket-Extensions parser and
 * permessage-deflate's negotiation in lua/loom/websocket.lua, driven by fuzz_ws_ext.lua
 * through lua_fuzz.h (the inflater itself: fuzz_ws_deflate). See docs/fuzzing.md.
 */
#include "lua_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return lua_fuzz_run("fuzz_ws_ext.lua", data, size);
}
