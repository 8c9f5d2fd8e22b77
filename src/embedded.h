#ifndef LOOM_EMBEDDED_H
#define LOOM_EMBEDDED_H
#include <stddef.h>
typedef struct {
    const char *name;
    const char *src;
    size_t len;
} loom_embedded_t;
extern const loom_embedded_t loom_embedded[];
#endif
