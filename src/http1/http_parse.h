/*
 * http_parse.h - llhttp glue shared by the server and the client: where a message head is
 * stored (target or reason, header fields with lowercased names), the limits that are
 * counted across reads (header bytes, trailers included; header count), and the checks
 * llhttp leaves to us (a second or invalid Host, the target's bytes and authority, empty
 * header names, every Transfer-Encoding field, an empty one included). Does no I/O and
 * knows no Lua.
 */
#ifndef LOOM_HTTP_PARSE_H
#define LOOM_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <llhttp.h>

#define LOOM_MAX_HEADERS 100

typedef struct {
    uint32_t name, name_len, value, value_len; /* offsets into loom_head_t.data */
} loom_hspan_t;

typedef struct loom_head loom_head_t;
/* Small inline storage that grows on the heap only for big heads: a burst of concurrent
 * requests costs little, and what glibc keeps after it is small too. */
struct loom_head {
    loom_head_t *next_free;
    char *data; /* inl until it outgrows it */
    size_t len, cap;
    uint32_t url, url_len; /* request target, or response reason */
    int nhdrs, caphdrs;
    loom_hspan_t *hdrs; /* hdrs_inl until it outgrows it */
    loom_hspan_t hdrs_inl[8];
    char inl[256];
};

/* Released heads kept for reuse; beyond `max` they are freed, so a burst of concurrent
 * requests leaves no memory behind once its connections go idle. */
typedef struct {
    loom_head_t *free;
    int n, max;
    /* The last Host value found valid: a keep-alive client (and most clients of one server)
     * send the same one on every request, which then costs a compare, not a check. */
    uint8_t host_ok_len;
    char host_ok[63];
} loom_head_pool_t;

enum { PART_NONE, PART_URL, PART_FIELD, PART_VALUE };

typedef struct loom_http_msg loom_http_msg_t;
/* What every message of one owner shares, pointed to once from each (a server connection
 * embeds a message: 10 000 idle ones are what they cost). */
typedef struct {
    /* Hooks: return 0, or HPE_PAUSED to stop llhttp_execute after this event, or -1. */
    int (*on_headers)(loom_http_msg_t *m);
    int (*on_body)(loom_http_msg_t *m, const char *at, size_t len);
    int (*on_complete)(loom_http_msg_t *m);
    uint32_t max_header;  /* bytes of target and header fields allowed, trailers included */
    uint32_t owner_off;   /* offsetof(owner's struct, its message): loom_http_owner */
    uint8_t strict_lines; /* loom_http_execute checks line endings (the server's) */
} loom_http_conf_t;

struct loom_http_msg {
    llhttp_t parser;        /* parser.data points back here */
    loom_head_t *head;      /* storage while a message is in progress */
    loom_head_pool_t *pool; /* where released heads go (owned by the server or client) */
    const loom_http_conf_t *conf;
    uint32_t header_bytes; /* counted so far for this message */
    uint8_t part;          /* which element the data callbacks are extending */
    uint8_t host_count;
    uint8_t lines; /* where that check is in the current head (LINES_* bits) */
    uint8_t te;    /* what the Transfer-Encoding fields said (TE_* bits in http_parse.c) */
    /* one bit each, so that fail fits the same 8 bytes (a server connection embeds this) */
    uint8_t in_trailers : 1;
    uint8_t trailers : 1;   /* loom_http_execute: the trailer section has just begun */
    uint8_t ended : 1;      /* on_message_complete ran in this loom_http_execute call */
    uint8_t has_expect : 1; /* the head has an Expect field (the server looks no further) */
    uint16_t fail;   /* status a limit or check chose: 400, 414, 431, 501 (0: parser's own) */
    const char *why; /* short reason, for the log */
};

/* The struct m is embedded in (conf->owner_off bytes before it). */
static inline void *loom_http_owner(const loom_http_msg_t *m) {
    return (char *)m - m->conf->owner_off;
}

/* conf outlives m (a static table, or the owner's server or pool). */
void loom_http_msg_init(loom_http_msg_t *m, llhttp_type_t type, loom_head_pool_t *pool,
                        const loom_http_conf_t *conf);
/* llhttp_execute, with conf->strict_lines, after checking the line structure llhttp 8 lets
 * through: every line of a head and of a chunked body's trailers ends in CRLF (no bare LF,
 * no lone CR), and no line after the first starts with whitespace (obs-fold, which llhttp 8
 * unfolds) or a colon (an empty field name). Returns llhttp's result, or HPE_USER with
 * m->fail = 400. The check of what follows a message needs the on_complete hook to pause
 * (HPE_PAUSED). */
llhttp_errno_t loom_http_execute(loom_http_msg_t *m, const char *data, size_t len);
/* Gives the head storage back to the pool (when a connection goes idle). */
void loom_http_msg_release(loom_http_msg_t *m);
void loom_head_pool_free(loom_head_pool_t *pool);
/* Gives back a head its owner took from a message (a client keeps a response's head past
 * the point where its connection parses the next one). */
void loom_head_release(loom_head_pool_t *pool, loom_head_t *h);

/* Finds a header by lowercase name; returns its index or -1. */
int loom_head_find(const loom_head_t *h, const char *name, size_t len);
/* Case-insensitive match of a header value against a comma-separated token list. */
int loom_head_has_token(const loom_head_t *h, int idx, const char *token);
/* 1 when s is an RFC 3986 host [":" port]: a reg-name (IPv4 included), or an IPv6 or
 * IPvFuture literal in brackets, then optional port digits. Empty is valid (RFC 9112 3.2),
 * an empty host before a port is not. */
int loom_http_valid_host(const char *s, size_t len);
/* The authority of an absolute-form request target ("http://host:port/path"): its offset
 * and length in target, and 1; 0 when the target is not in absolute form. */
int loom_http_target_authority(const char *target, size_t len, size_t *at, size_t *alen);

#define LOOM_HEAD_NAME(h, i) ((h)->data + (h)->hdrs[i].name)
#define LOOM_HEAD_VALUE(h, i) ((h)->data + (h)->hdrs[i].value)

#endif
