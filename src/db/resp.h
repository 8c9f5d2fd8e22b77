/*
 * resp.h - a RESP2 reply parser (the Redis protocol,
 * https://redis.io/docs/reference/protocol-spec/). Pure: no I/O, no Lua. Incremental:
 * loom_resp_scan is called on a buffer that grows; it resumes where the last call stopped (the
 * whole tokens already seen are not looked at again), so a reply that arrives in many pieces costs
 * linear time however large its arrays. Once it says a reply is whole, loom_resp_token walks its
 * tokens (it cannot fail on them any more).
 *
 *     loom_resp_scan_t st;
 *     loom_resp_scan_init(&st);
 *     int rc = loom_resp_scan(&st, &limits, buf, len);
 *     // LOOM_RESP_MORE: wait for more bytes and call again with the same st and buf (grown)
 *     // LOOM_RESP_WHOLE: buf[0, st.off) is one reply; walk it, drop it, init st again
 *     // LOOM_RESP_BAD: st.err says why; the connection cannot be used any more
 *
 * Limits (loom_resp_limits_t): a bulk string longer than max_bulk bytes, an array with more
 * elements than max_elements (counted over the whole reply, nested arrays included), arrays
 * nested deeper than max_depth, a status, error or number line over LOOM_RESP_MAX_LINE
 * bytes: each is BAD as soon as its header has arrived, before its payload.
 */
#ifndef LOOM_RESP_H
#define LOOM_RESP_H

#include <stddef.h>

#define LOOM_RESP_MAX_DEPTH 64
#define LOOM_RESP_MAX_LINE 65536

enum { LOOM_RESP_BAD = -1, LOOM_RESP_MORE = 0, LOOM_RESP_WHOLE = 1 };

typedef struct {
    size_t max_bulk;     /* bytes of one bulk string */
    size_t max_elements; /* array elements in one reply, all levels */
    int max_depth;       /* arrays inside arrays; at most LOOM_RESP_MAX_DEPTH */
} loom_resp_limits_t;

typedef struct {
    size_t off;   /* bytes of the reply at buf found to be whole tokens so far */
    int depth;    /* arrays open at off */
    size_t count; /* array elements announced so far */
    long long left[LOOM_RESP_MAX_DEPTH]; /* elements still to come in each open array */
    char err[128];                       /* why, after LOOM_RESP_BAD */
} loom_resp_scan_t;

/* One token: a status ('+'), error ('-'), integer (':'), bulk string ('$') or array header
 * ('*'). */
typedef struct {
    char type;
    const char *str; /* '+', '-': the line; '$': the bytes (NULL for a nil bulk) */
    size_t len;
    long long n; /* ':': the value; '*': the element count; '$', '*': -1 for nil */
    size_t size; /* bytes the token takes in the buffer (a bulk's payload and CRLF too) */
} loom_resp_token_t;

void loom_resp_scan_init(loom_resp_scan_t *st);
int loom_resp_scan(loom_resp_scan_t *st, const loom_resp_limits_t *lim, const char *buf,
                   size_t len);
/* The token at buf: LOOM_RESP_WHOLE (t filled), LOOM_RESP_MORE, or LOOM_RESP_BAD with the
 * reason in err (errlen bytes). */
int loom_resp_token(const char *buf, size_t len, const loom_resp_limits_t *lim,
                    loom_resp_token_t *t, char *err, size_t errlen);

#endif
