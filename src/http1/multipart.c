/*
 * multipart.c - the streaming multipart/form-data parser of multipart.h. It owns the
 * body's grammar (RFC 2046 5.1.1: preamble, delimiters, transport padding, close
 * delimiter, epilogue), part heads (RFC 7578 4: Content-Disposition form-data with a name,
 * filename and filename* (RFC 5987), Content-Type) and the limits on both. It knows no
 * sockets and no Lua: the caller feeds bytes and gets events back.
 *
 * A body is scanned with memmem for the delimiter "\r\n--boundary"; the only bytes copied
 * are those at the end of a piece that could begin one (at most 74), and part heads
 * (bounded by max_part_header). The first delimiter may open the body without its CRLF:
 * the parser starts as if "\r\n" had been read.
 */
#define _GNU_SOURCE /* memmem, memrchr */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "multipart.h"

#define DELIM_MAX (4 + LOOM_MP_MAX_BOUNDARY) /* "\r\n--" boundary */
#define HEAD_FIRST 256                       /* a head buffer's first size */

enum state {
    S_PREAMBLE, /* before the first delimiter: dropped */
    S_DELIM,    /* right after a delimiter */
    S_DASH,     /* "-" after it: the second makes the close delimiter */
    S_PAD,      /* transport padding: blanks up to the CRLF */
    S_CR,       /* the CR of the delimiter line: LF next */
    S_HEAD,     /* a part's head, line by line */
    S_BODY,     /* a part's body, up to the next delimiter */
    S_EPILOGUE, /* after the close delimiter: dropped */
};

struct loom_multipart {
    enum state state;
    int err;          /* sticky, once set */
    size_t max_parts; /* parts allowed */
    size_t max_head;  /* bytes of one part's head */
    size_t nparts;    /* parts begun */
    char *head;       /* the current part's head, as read */
    size_t head_len, head_cap;
    size_t line_at;                      /* where the line being read starts in head */
    size_t cd_at, cd_len, ct_at, ct_len; /* Content-Disposition and Content-Type values */
    int has_cd, has_ct;
    loom_mp_part_t part;
    size_t dlen; /* "\r\n--" boundary */
    char delim[DELIM_MAX];
    size_t tail_len; /* the end of the last piece, a proper prefix of delim or delim whole */
    char tail[DELIM_MAX];
};

/* RFC 7230 tchar */
static int is_tchar(unsigned char c) {
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* RFC 2046 bchars */
static int is_bchar(unsigned char c) {
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c != 0 && strchr("'()+_,-./:=? ", c) != NULL);
}

static int is_blank(unsigned char c) {
    return c == ' ' || c == '\t';
}

/* Control characters a header value may not hold (HTAB is a blank). */
static int is_ctl(unsigned char c) {
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int valid_boundary(const char *b, size_t n) {
    if (n < 1 || n > LOOM_MP_MAX_BOUNDARY || b[n - 1] == ' ')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_bchar((unsigned char)b[i]))
            return 0;
    return 1;
}

static const char *skip_blanks(const char *p, const char *end) {
    while (p < end && is_blank((unsigned char)*p))
        p++;
    return p;
}

int loom_multipart_boundary(const char *ctype, size_t len, const char **b, size_t *blen) {
    static const char form[] = "multipart/form-data";
    const char *p = skip_blanks(ctype, ctype + len), *end = ctype + len;
    const char *found = NULL;
    size_t found_len = 0;
    if ((size_t)(end - p) < sizeof form - 1 || strncasecmp(p, form, sizeof form - 1) != 0)
        return LOOM_MP_ENOT_FORM;
    p += sizeof form - 1;
    if (p < end && *p != ';' && !is_blank((unsigned char)*p))
        return LOOM_MP_ENOT_FORM; /* multipart/form-datax */
    for (;;) {
        p = skip_blanks(p, end);
        if (p == end)
            break;
        if (*p != ';')
            return LOOM_MP_EBAD_BOUNDARY;
        p = skip_blanks(p + 1, end);
        if (p == end)
            break;
        const char *name = p;
        while (p < end && is_tchar((unsigned char)*p))
            p++;
        size_t name_len = (size_t)(p - name);
        p = skip_blanks(p, end);
        if (name_len == 0 || p == end || *p != '=')
            return LOOM_MP_EBAD_BOUNDARY;
        p = skip_blanks(p + 1, end);
        const char *v = p;
        size_t vlen;
        if (p < end && *p == '"') {
            v = ++p; /* a boundary has no '"' or '\\', so its span is its value */
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end)
                    p++;
                p++;
            }
            if (p == end)
                return LOOM_MP_EBAD_BOUNDARY;
            vlen = (size_t)(p++ - v);
        } else {
            /* unquoted: up to a blank or ';', checked as bchars below (some senders leave
             * '=' or ':' unquoted, which a token could not hold) */
            while (p < end && *p != ';' && !is_blank((unsigned char)*p))
                p++;
            vlen = (size_t)(p - v);
        }
        if (name_len == 8 && strncasecmp(name, "boundary", 8) == 0) {
            if (found != NULL || !valid_boundary(v, vlen))
                return LOOM_MP_EBAD_BOUNDARY;
            found = v, found_len = vlen;
        }
    }
    if (found == NULL)
        return LOOM_MP_ENO_BOUNDARY;
    *b = found, *blen = found_len;
    return 0;
}

loom_multipart_t *loom_multipart_new(const char *boundary, size_t blen, size_t max_parts,
                                     size_t max_part_header) {
    if (!valid_boundary(boundary, blen))
        return NULL;
    loom_multipart_t *mp = calloc(1, sizeof *mp);
    if (mp == NULL)
        return NULL;
    mp->state = S_PREAMBLE;
    mp->max_parts = max_parts;
    mp->max_head = max_part_header;
    memcpy(mp->delim, "\r\n--", 4);
    memcpy(mp->delim + 4, boundary, blen);
    mp->dlen = blen + 4;
    memcpy(mp->tail, "\r\n", 2); /* the first delimiter needs no CRLF before it */
    mp->tail_len = 2;
    return mp;
}

void loom_multipart_free(loom_multipart_t *mp) {
    if (mp == NULL)
        return;
    free(mp->head);
    free(mp);
}

const loom_mp_part_t *loom_multipart_part(const loom_multipart_t *mp) {
    return &mp->part;
}

/* Whether c, right after "\r\n--boundary", makes it a delimiter: "--", padding or CRLF.
 * Any other byte leaves those bytes in the body, as Go's mime/multipart does. */
static int ends_delimiter(unsigned char c) {
    return c == '-' || c == '\r' || is_blank(c);
}

/* After a delimiter: the part it ends ends (not the preamble). */
static int found_delimiter(loom_multipart_t *mp) {
    int in_body = mp->state == S_BODY;
    mp->state = S_DELIM;
    return in_body ? LOOM_MP_PART_END : LOOM_MP_MORE;
}

/* S_PREAMBLE and S_BODY: the bytes up to the next delimiter. Body bytes go out as DATA
 * events (the preamble's are dropped). */
static int scan(loom_multipart_t *mp, const char *data, size_t len, size_t *used,
                loom_mp_event_t *ev) {
    int in_body = mp->state == S_BODY;
    *used = 0;
    if (mp->tail_len > 0) {
        /* the last piece ended with the first tail_len bytes of the delimiter */
        size_t k = mp->tail_len, need = mp->dlen - k;
        if (memcmp(data, mp->delim + k, len < need ? len : need) == 0) {
            if (len <= need) { /* still undecided */
                memcpy(mp->tail + k, data, len);
                mp->tail_len += len;
                *used = len;
                return LOOM_MP_MORE;
            }
            if (ends_delimiter((unsigned char)data[need])) {
                mp->tail_len = 0;
                *used = need;
                return found_delimiter(mp);
            }
        }
        /* Not a delimiter, and no later kept byte can start one: its only CR is its first
         * byte (bchars hold none). The kept bytes are data. */
        mp->tail_len = 0;
        if (!in_body)
            return LOOM_MP_MORE;
        ev->data = mp->tail, ev->len = k;
        return LOOM_MP_DATA;
    }
    const char *end = data + len, *hit = memmem(data, len, mp->delim, mp->dlen);
    while (hit != NULL && hit + mp->dlen < end && !ends_delimiter((unsigned char)hit[mp->dlen]))
        hit = memmem(hit + 1, (size_t)(end - hit - 1), mp->delim, mp->dlen);
    if (hit != NULL && hit + mp->dlen < end) {
        if (hit == data) {
            *used = mp->dlen;
            return found_delimiter(mp);
        }
        *used = (size_t)(hit - data);
        if (!in_body)
            return LOOM_MP_MORE;
        ev->data = data, ev->len = *used;
        return LOOM_MP_DATA;
    }
    /* No delimiter. One may begin in the last dlen bytes: at their last CR, if at all. */
    size_t window = len < mp->dlen ? len : mp->dlen;
    const char *cr = memrchr(end - window, '\r', window);
    size_t keep = 0;
    if (cr != NULL && memcmp(cr, mp->delim, (size_t)(end - cr)) == 0)
        keep = (size_t)(end - cr);
    memcpy(mp->tail, end - keep, keep);
    mp->tail_len = keep;
    *used = len;
    if (!in_body || keep == len)
        return LOOM_MP_MORE;
    ev->data = data, ev->len = len - keep;
    return LOOM_MP_DATA;
}

static int begin_part(loom_multipart_t *mp) {
    if (mp->nparts >= mp->max_parts)
        return LOOM_MP_ETOO_MANY_PARTS;
    mp->nparts++;
    mp->state = S_HEAD;
    mp->head_len = mp->line_at = 0;
    mp->has_cd = mp->has_ct = 0;
    memset(&mp->part, 0, sizeof mp->part);
    return LOOM_MP_PART;
}

/* S_DELIM, S_DASH, S_PAD, S_CR: the rest of a delimiter's line. */
static int delimiter_line(loom_multipart_t *mp, const char *data, size_t len, size_t *used) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        *used = i + 1;
        switch (mp->state) {
        case S_DELIM:
            if (c == '-')
                mp->state = S_DASH;
            else if (c == '\r')
                mp->state = S_CR;
            else if (is_blank(c))
                mp->state = S_PAD;
            else
                return LOOM_MP_EBAD_DELIMITER;
            break;
        case S_DASH:
            if (c != '-')
                return LOOM_MP_EBAD_DELIMITER;
            mp->state = S_EPILOGUE;
            return LOOM_MP_END;
        case S_PAD:
            if (c == '\r')
                mp->state = S_CR;
            else if (!is_blank(c))
                return LOOM_MP_EBAD_DELIMITER;
            break;
        case S_CR:
            if (c != '\n')
                return LOOM_MP_EBAD_DELIMITER;
            return begin_part(mp);
        default:
            abort(); /* not a delimiter state */
        }
    }
    *used = len;
    return LOOM_MP_MORE;
}

/* Appends n bytes to the head buffer, which grows up to max_head. */
static int head_append(loom_multipart_t *mp, const char *p, size_t n) {
    size_t want = mp->head_len + n;
    if (want > mp->head_cap) {
        size_t cap = mp->head_cap ? mp->head_cap : HEAD_FIRST;
        while (cap < want)
            cap *= 2;
        if (cap > mp->max_head)
            cap = mp->max_head;
        char *h = realloc(mp->head, cap);
        if (h == NULL)
            return LOOM_MP_ENOMEM;
        mp->head = h, mp->head_cap = cap;
    }
    memcpy(mp->head + mp->head_len, p, n);
    mp->head_len = want;
    return 0;
}

/* The blank line: the head is complete. */
static int end_head(loom_multipart_t *mp) {
    if (!mp->has_cd)
        return LOOM_MP_ENO_DISPOSITION;
    int rc = loom_multipart_disposition(mp->head + mp->cd_at, mp->cd_len, &mp->part);
    if (rc != 0)
        return rc;
    if (mp->has_ct)
        mp->part.type = mp->head + mp->ct_at, mp->part.type_len = mp->ct_len;
    mp->state = S_BODY;
    mp->tail_len = 0;
    return LOOM_MP_HEADERS_END;
}

/* A complete head line (with its CRLF) at line_at: a HEADER event, or the head's end. */
static int head_line(loom_multipart_t *mp, loom_mp_event_t *ev) {
    char *line = mp->head + mp->line_at;
    size_t n = mp->head_len - mp->line_at;
    mp->line_at = mp->head_len;
    if (n < 2 || line[n - 2] != '\r') /* a bare LF */
        return LOOM_MP_EBAD_HEADER;
    n -= 2;
    if (n == 0)
        return end_head(mp);
    size_t blen = mp->dlen - 2; /* "--boundary" */
    if (n >= blen && memcmp(line, mp->delim + 2, blen) == 0)
        return LOOM_MP_EBOUNDARY_IN_HEAD;
    if (is_blank((unsigned char)line[0])) /* obs-fold: refused, as RFC 7230 3.2.4 allows */
        return LOOM_MP_EBAD_HEADER;
    char *colon = memchr(line, ':', n);
    if (colon == NULL || colon == line)
        return LOOM_MP_EBAD_HEADER;
    for (char *c = line; c < colon; c++) {
        if (!is_tchar((unsigned char)*c))
            return LOOM_MP_EBAD_HEADER;
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + ('a' - 'A'));
    }
    char *v = colon + 1, *end = line + n;
    for (char *c = v; c < end; c++)
        if (is_ctl((unsigned char)*c)) /* a bare CR among them */
            return LOOM_MP_EBAD_HEADER;
    while (v < end && is_blank((unsigned char)*v))
        v++;
    while (end > v && is_blank((unsigned char)end[-1]))
        end--;
    size_t name_len = (size_t)(colon - line), vlen = (size_t)(end - v);
    if (name_len == 19 && memcmp(line, "content-disposition", 19) == 0) {
        if (mp->has_cd)
            return LOOM_MP_EDUP_HEADER;
        mp->has_cd = 1, mp->cd_at = (size_t)(v - mp->head), mp->cd_len = vlen;
    } else if (name_len == 12 && memcmp(line, "content-type", 12) == 0) {
        if (mp->has_ct)
            return LOOM_MP_EDUP_HEADER;
        mp->has_ct = 1, mp->ct_at = (size_t)(v - mp->head), mp->ct_len = vlen;
    }
    ev->name = line, ev->name_len = name_len;
    ev->data = v, ev->len = vlen;
    return LOOM_MP_HEADER;
}

/* S_HEAD: bytes up to the end of one line, within max_head for the whole head. */
static int head(loom_multipart_t *mp, const char *data, size_t len, size_t *used,
                loom_mp_event_t *ev) {
    size_t room = mp->max_head - mp->head_len;
    const char *lf = memchr(data, '\n', len < room ? len : room);
    size_t n = lf ? (size_t)(lf - data) + 1 : len;
    *used = 0;
    if (lf == NULL && len > room)
        return LOOM_MP_EHEAD_TOO_LARGE;
    int rc = head_append(mp, data, n);
    if (rc != 0)
        return rc;
    *used = n;
    return lf ? head_line(mp, ev) : LOOM_MP_MORE;
}

int loom_multipart_execute(loom_multipart_t *mp, const char *data, size_t len, size_t *used,
                           loom_mp_event_t *ev) {
    size_t at = 0;
    int rc = LOOM_MP_MORE;
    if (mp->err) {
        *used = 0;
        return mp->err;
    }
    /* Every step that returns MORE used a byte, changed state or emptied the tail. */
    while (rc == LOOM_MP_MORE && at < len) {
        size_t n = 0;
        switch (mp->state) {
        case S_PREAMBLE:
        case S_BODY:
            rc = scan(mp, data + at, len - at, &n, ev);
            break;
        case S_DELIM:
        case S_DASH:
        case S_PAD:
        case S_CR:
            rc = delimiter_line(mp, data + at, len - at, &n);
            break;
        case S_HEAD:
            rc = head(mp, data + at, len - at, &n, ev);
            break;
        case S_EPILOGUE:
            n = len - at;
            break;
        }
        at += n;
    }
    if (rc < 0)
        mp->err = rc;
    *used = at;
    return rc;
}

int loom_multipart_finish(loom_multipart_t *mp) {
    if (mp->err == 0 && mp->state != S_EPILOGUE)
        mp->err = LOOM_MP_ETRUNCATED;
    return mp->err;
}

static int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* Decodes an RFC 5987 ext-value (charset'language'pct-encoded) in place at v: its length,
 * -2 when the charset is neither UTF-8 nor ISO-8859-1 (the parameter is then ignored, as RFC
 * 6266 4.3 allows), -1 when it does not parse. ISO-8859-1 becomes UTF-8; the output never
 * outgrows the input (a byte past 0x7f arrives as three characters, "%E9", and leaves as
 * two). */
static long ext_value(char *v, size_t n) {
    char *end = v + n, *q1 = memchr(v, '\'', n);
    char *q2 = q1 ? memchr(q1 + 1, '\'', (size_t)(end - q1 - 1)) : NULL;
    if (q2 == NULL)
        return -1;
    size_t clen = (size_t)(q1 - v);
    int latin1 = clen == 10 && strncasecmp(v, "iso-8859-1", 10) == 0;
    if (!latin1 && !(clen == 5 && strncasecmp(v, "utf-8", 5) == 0))
        return -2;
    char *w = v;
    for (char *r = q2 + 1; r < end; r++) {
        unsigned char c = (unsigned char)*r;
        if (c == '%') {
            int hi = r + 2 < end ? hex_digit((unsigned char)r[1]) : -1;
            int lo = hi >= 0 ? hex_digit((unsigned char)r[2]) : -1;
            if (lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            r += 2;
        } else if (c == '\'' || c == '"' || c == '\\') {
            return -1;
        }
        if (latin1 && c >= 0x80) {
            *w++ = (char)(0xc0 | c >> 6);
            c = (unsigned char)(0x80 | (c & 0x3f));
        }
        *w++ = (char)c;
    }
    return (long)(w - v);
}

int loom_multipart_disposition(char *value, size_t len, loom_mp_part_t *out) {
    char *p = value, *end = value + len, *fn = NULL, *fnx = NULL;
    size_t fn_len = 0, fnx_len = 0;
    int seen_fnx = 0;
    out->name = out->filename = NULL;
    out->name_len = out->filename_len = 0;
    while (p < end && is_tchar((unsigned char)*p))
        p++;
    if (p - value != 9 || strncasecmp(value, "form-data", 9) != 0)
        return LOOM_MP_ENO_DISPOSITION;
    for (;;) {
        p = (char *)skip_blanks(p, end);
        if (p == end)
            break;
        if (*p != ';')
            return LOOM_MP_EBAD_DISPOSITION;
        p = (char *)skip_blanks(p + 1, end);
        if (p == end)
            break;
        char *name = p;
        while (p < end && is_tchar((unsigned char)*p))
            p++;
        size_t name_len = (size_t)(p - name);
        p = (char *)skip_blanks(p, end);
        if (name_len == 0 || p == end || *p != '=')
            return LOOM_MP_EBAD_DISPOSITION;
        p = (char *)skip_blanks(p + 1, end);
        char *v = p;
        size_t vlen;
        if (p < end && *p == '"') {
            /* quoted-string, unescaped in place. A backslash escapes only '"' and '\\' (as
             * Go's mime does for tspecials): senders do not escape the backslashes of
             * Windows paths. */
            char *w = p, *r = p + 1;
            while (r < end && *r != '"') {
                if (*r == '\\' && r + 1 < end && (r[1] == '"' || r[1] == '\\'))
                    r++;
                *w++ = *r++;
            }
            if (r == end)
                return LOOM_MP_EBAD_DISPOSITION;
            vlen = (size_t)(w - v);
            p = r + 1;
        } else {
            while (p < end && is_tchar((unsigned char)*p))
                p++;
            vlen = (size_t)(p - v);
            if (vlen == 0)
                return LOOM_MP_EBAD_DISPOSITION;
        }
        if (name_len == 4 && strncasecmp(name, "name", 4) == 0) {
            if (out->name != NULL)
                return LOOM_MP_EBAD_DISPOSITION;
            out->name = v, out->name_len = vlen;
        } else if (name_len == 8 && strncasecmp(name, "filename", 8) == 0) {
            if (fn != NULL)
                return LOOM_MP_EBAD_DISPOSITION;
            fn = v, fn_len = vlen;
        } else if (name_len == 9 && strncasecmp(name, "filename*", 9) == 0) {
            if (seen_fnx)
                return LOOM_MP_EBAD_DISPOSITION;
            seen_fnx = 1;
            long n = ext_value(v, vlen);
            if (n == -1)
                return LOOM_MP_EBAD_DISPOSITION;
            if (n >= 0)
                fnx = v, fnx_len = (size_t)n;
        }
    }
    if (out->name == NULL)
        return LOOM_MP_ENO_NAME;
    if (fnx != NULL) /* RFC 6266 4.3: filename* wins over filename */
        fn = fnx, fn_len = fnx_len;
    if (fn != NULL) {
        /* a CR, LF or NUL in a filename could only come from an escape: refused, so that no
         * header or path built from it carries one */
        for (size_t i = 0; i < fn_len; i++)
            if ((unsigned char)fn[i] < 0x20 || fn[i] == 0x7f)
                return LOOM_MP_EBAD_FILENAME;
        out->filename = fn, out->filename_len = fn_len;
    }
    return 0;
}

const char *loom_multipart_strerror(int err) {
    switch (err) {
    case LOOM_MP_ETOO_MANY_PARTS:
        return "limit: multipart body with more parts than max_parts";
    case LOOM_MP_EHEAD_TOO_LARGE:
        return "limit: multipart part head over max_part_header bytes";
    case LOOM_MP_ETRUNCATED:
        return "http: multipart body ends before its closing boundary";
    case LOOM_MP_EBAD_DELIMITER:
        return "http: multipart boundary line with more than blanks after the boundary";
    case LOOM_MP_EBAD_HEADER:
        return "http: multipart part head line is not a header";
    case LOOM_MP_EBOUNDARY_IN_HEAD:
        return "http: multipart boundary inside a part head";
    case LOOM_MP_ENO_DISPOSITION:
        return "http: multipart part without Content-Disposition: form-data";
    case LOOM_MP_EBAD_DISPOSITION:
        return "http: multipart part with a malformed Content-Disposition";
    case LOOM_MP_ENO_NAME:
        return "http: multipart part without a name";
    case LOOM_MP_EBAD_FILENAME:
        return "http: multipart filename with control characters";
    case LOOM_MP_EDUP_HEADER:
        return "http: multipart part with Content-Disposition or Content-Type twice";
    case LOOM_MP_ENOMEM:
        return "http: out of memory for a multipart part head";
    case LOOM_MP_ENOT_FORM:
        return "http: not a multipart/form-data body";
    case LOOM_MP_ENO_BOUNDARY:
        return "http: multipart/form-data without a boundary";
    case LOOM_MP_EBAD_BOUNDARY:
        return "http: multipart boundary empty, over 70 characters or with characters "
               "outside RFC 2046's bchars";
    default:
        return "http: multipart body malformed";
    }
}

int loom_multipart_status(int err) {
    switch (err) {
    case LOOM_MP_ETOO_MANY_PARTS:
        return 413;
    case LOOM_MP_EHEAD_TOO_LARGE:
        return 431;
    case LOOM_MP_ENOMEM:
        return 500;
    default:
        return 400;
    }
}
