/*
 * fuzz_http_response.c - libFuzzer target: bytes a server could answer, parsed as responses
 * through loom_http_execute (a 256-byte head limit; the first input byte's top bit turns
 * the line checks on, its low bits pick where the rest is split into two reads), then
 * llhttp_finish as when the peer closes. See http_fuzz.h and docs/fuzzing.md.
 */
#include "http_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_http(data, size, HTTP_RESPONSE);
}
