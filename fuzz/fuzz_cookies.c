/*
 * fuzz_cookies.c - libFuzzer target: loom.cookies (Set-Cookie parsing, the jar's Cookie header,
 * dates), driven by fuzz_cookies.lua through lua_fuzz.h. See docs/fuzzing.md.
 */
#include "lua_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return lua_fuzz_run("fuzz_cookies.lua", data, size);
}
