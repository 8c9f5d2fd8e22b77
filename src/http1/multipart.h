/*
 * multipart.h - a streaming multipart/form-data parser (RFC 7578 over RFC 2046 section
 * 5.1.1). Fed a body in pieces of any size, it returns one event per call: a part begins,
 * each header of its head, the head's end (with name, filename and type parsed), pieces
 * of its body, its end, and the close delimiter. Body bytes are never gathered: a piece
 * is handed back where it lies in the caller's buffer, and only the few bytes that could
 * be the start of a delimiter at a piece's end are kept. Does no I/O and knows no Lua.
 *
 *     size_t used;
 *     loom_mp_event_t ev;
 *     for (;;) {
 *         int rc = loom_multipart_execute(mp, p, n, &used, &ev);
 *         p += used, n -= used;
 *         if (rc == LOOM_MP_MORE) break;   // every byte used: read more, or finish at EOF
 *         if (rc < 0) fail(loom_multipart_status(rc), loom_multipart_strerror(rc));
 *         ...handle rc and ev...
 *     }
 */
#ifndef LOOM_MULTIPART_H
#define LOOM_MULTIPART_H

#include <stddef.h>

/* RFC 2046: "boundary := 0*69<bchars> bcharsnospace", at most 70 characters. */
#define LOOM_MP_MAX_BOUNDARY 70

/* What loom_multipart_execute returns: an event (> 0), LOOM_MP_MORE, or an error (< 0). */
enum {
    LOOM_MP_MORE = 0,    /* every byte given was used and nothing is pending */
    LOOM_MP_PART,        /* a part begins: its delimiter line was read */
    LOOM_MP_HEADER,      /* a header of the part's head: ev.name (lower case), ev.data value */
    LOOM_MP_HEADERS_END, /* the head is complete; loom_multipart_part() describes the part */
    LOOM_MP_DATA,        /* body bytes of the current part: ev.data, ev.len (never 0 bytes) */
    LOOM_MP_PART_END,    /* the part's body ended at the next delimiter */
    LOOM_MP_END,         /* the close delimiter: the body is complete, the rest is epilogue */
};

/* Errors; loom_multipart_status() gives the HTTP status each one answers with. */
enum {
    LOOM_MP_ETOO_MANY_PARTS = -1,   /* 413: a part beyond max_parts */
    LOOM_MP_EHEAD_TOO_LARGE = -2,   /* 431: a part head over max_part_header bytes */
    LOOM_MP_ETRUNCATED = -3,        /* 400: the body ended before its close delimiter */
    LOOM_MP_EBAD_DELIMITER = -4,    /* 400: a boundary line with more than blanks after it */
    LOOM_MP_EBAD_HEADER = -5,       /* 400: a head line that is not "name: value" */
    LOOM_MP_EBOUNDARY_IN_HEAD = -6, /* 400: a boundary line inside a part's head */
    LOOM_MP_ENO_DISPOSITION = -7,   /* 400: no Content-Disposition: form-data */
    LOOM_MP_EBAD_DISPOSITION = -8,  /* 400: Content-Disposition parameters that do not parse */
    LOOM_MP_ENO_NAME = -9,          /* 400: a part without a name */
    LOOM_MP_EBAD_FILENAME = -10,    /* 400: a filename with control characters */
    LOOM_MP_EDUP_HEADER = -11,      /* 400: Content-Disposition or Content-Type twice */
    LOOM_MP_ENOMEM = -12,           /* 500 */
    /* loom_multipart_boundary only */
    LOOM_MP_ENOT_FORM = -13,     /* 400 (415 is the caller's choice): not multipart/form-data */
    LOOM_MP_ENO_BOUNDARY = -14,  /* 400: no boundary parameter */
    LOOM_MP_EBAD_BOUNDARY = -15, /* 400: empty, over 70 characters, or outside bchars */
};

typedef struct {
    const char *name; /* HEADER: the header name, lower case */
    size_t name_len;
    const char *data; /* HEADER: the value, without surrounding blanks; DATA: body bytes */
    size_t len;
} loom_mp_event_t;

/* A part as its head describes it. Strings are not NUL-terminated. */
typedef struct {
    const char *name; /* Content-Disposition's name, unquoted */
    size_t name_len;
    const char *filename; /* NULL for a field; filename* (RFC 5987, decoded) wins over filename */
    size_t filename_len;
    const char *type; /* Content-Type's value, NULL when the part has none */
    size_t type_len;
} loom_mp_part_t;

typedef struct loom_multipart loom_multipart_t;

/* Finds the boundary parameter of a Content-Type value, which must be multipart/form-data
 * (case-insensitive), quoted or not: *b points into ctype. 0, or LOOM_MP_ENOT_FORM,
 * LOOM_MP_ENO_BOUNDARY, LOOM_MP_EBAD_BOUNDARY. */
int loom_multipart_boundary(const char *ctype, size_t len, const char **b, size_t *blen);

/* A parser for a body delimited by boundary (1 to 70 bchars, as loom_multipart_boundary
 * checks them), with at most max_parts parts and max_part_header bytes in each part's head
 * (its lines and the blank line that ends it). NULL when out of memory or the boundary is
 * not one. */
loom_multipart_t *loom_multipart_new(const char *boundary, size_t blen, size_t max_parts,
                                     size_t max_part_header);
void loom_multipart_free(loom_multipart_t *mp);

/* Parses from data until one event: returns it with *used, the bytes it took (the caller
 * passes the rest next time). LOOM_MP_MORE when all len bytes were used without one. ev's
 * pointers may point into data or into the parser, valid until the next call. An error is
 * returned again by every later call. */
int loom_multipart_execute(loom_multipart_t *mp, const char *data, size_t len, size_t *used,
                           loom_mp_event_t *ev);

/* The body ended (EOF): 0 when the close delimiter was seen, else LOOM_MP_ETRUNCATED (or
 * the earlier error). */
int loom_multipart_finish(loom_multipart_t *mp);

/* The current part, from LOOM_MP_HEADERS_END until the next LOOM_MP_PART. */
const loom_mp_part_t *loom_multipart_part(const loom_multipart_t *mp);

/* Parses a Content-Disposition value in place (quoted strings are unescaped and filename*
 * decoded where they lie) into out's name and filename. 0, or LOOM_MP_ENO_DISPOSITION (not
 * form-data), LOOM_MP_EBAD_DISPOSITION, LOOM_MP_ENO_NAME, LOOM_MP_EBAD_FILENAME. */
int loom_multipart_disposition(char *value, size_t len, loom_mp_part_t *out);

/* "limit: ..." for 413 and 431, "http: ..." for a malformed body. */
const char *loom_multipart_strerror(int err);
/* The HTTP status for an error: 413, 431, 500 or 400. */
int loom_multipart_status(int err);

#endif
