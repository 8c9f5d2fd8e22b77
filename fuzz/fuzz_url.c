/*
 * fuzz_url.c - libFuzzer target: loom.url (percent-coding, query strings, URL splitting) and
 * the client's reference resolution, driven by fuzz_url.lua through lua_fuzz.h. See
 * docs/fuzzing.md.
 */
#include "lua_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return lua_fuzz_run("fuzz_url.lua", data, size);
}
