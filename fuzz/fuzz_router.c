/*
 * fuzz_router.c - libFuzzer target: the router's pattern compiler and matcher (loom.router), driven
 * by fuzz_router.lua through lua_fuzz.h. See docs/fuzzing.md.
 */
#include "lua_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return lua_fuzz_run("fuzz_router.lua", data, size);
}
