/*
 * fuzz_http_request.c - libFuzzer target: bytes a client could send, parsed as the server
 * parses them (loom_http_execute with the line checks on, a 256-byte head limit), in two
 * reads split where the first input byte says. See http_fuzz.h and docs/fuzzing.md.
 */
#include "http_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_http(data, size, HTTP_REQUEST);
}
