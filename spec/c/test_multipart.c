/*
 * test_multipart.c - src/http1/multipart.c: bodies as curl -F, Python requests and Chromium's
 * FormData sent them (captured from the real clients), parsed whole, in pieces of every
 * size and split at every position, give the same parts; body bytes that only look like a
 * delimiter stay body; preamble, transport padding and epilogue are ignored; each
 * malformed shape and each limit has its own error; the boundary parameter and
 * Content-Disposition parse as RFC 2046, 7578, 5987 and 6266 say.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "multipart.h"

/* ---------------------------------------------------------------- transcripts */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void putf(buf_t *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put(b, tmp, (size_t)n);
}

static void put_span(buf_t *b, const char *p, size_t n) {
    if (p == NULL)
        put(b, "(nil)", 5);
    else
        put(b, p, n);
}

typedef struct {
    size_t max_parts, max_head;
    size_t copied; /* DATA bytes that did not point into the caller's piece */
    size_t pieces;
} opts_t;

/* Parses wire in pieces cut at cuts[0..ncuts) (sorted offsets); returns the transcript:
 * "P" a part, "H name: value" a header, "E name=.. filename=.. type=.." the head's end,
 * "B[bytes]" a part's whole body, "$" the close delimiter, then "rc=N" (N: the first
 * error, or finish's result). Body bytes are joined per part, so the transcript does not
 * depend on where the pieces were cut. */
static char *transcript(const char *boundary, const char *wire, size_t len, const size_t *cuts,
                        size_t ncuts, opts_t *o) {
    buf_t t = {0}, body = {0};
    put(&t, "", 0);
    put(&body, "", 0);
    loom_multipart_t *mp =
        loom_multipart_new(boundary, strlen(boundary), o->max_parts ? o->max_parts : 100,
                           o->max_head ? o->max_head : 1024);
    if (mp == NULL) {
        free(body.p);
        put(&t, "new failed", 10);
        return t.p;
    }
    int rc = 0;
    size_t at = 0;
    for (size_t i = 0; i <= ncuts && rc >= 0; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        const char *p = wire + at;
        size_t n = to - at;
        at = to;
        o->pieces++;
        for (int guard = 0; guard < 100000; guard++) {
            size_t used = 12345;
            loom_mp_event_t ev;
            rc = loom_multipart_execute(mp, p, n, &used, &ev);
            CHECK(used <= n);
            if (rc == LOOM_MP_DATA) {
                CHECK(ev.len > 0);
                if (!(ev.data >= p && ev.data + ev.len <= p + n))
                    o->copied += ev.len;
            }
            p += used, n -= used;
            if (rc == LOOM_MP_MORE) {
                CHECK(n == 0);
                break;
            }
            if (rc < 0)
                break;
            switch (rc) {
            case LOOM_MP_PART:
                put(&t, "P\n", 2);
                break;
            case LOOM_MP_HEADER:
                put(&t, "H ", 2);
                put(&t, ev.name, ev.name_len);
                put(&t, ": ", 2);
                put(&t, ev.data, ev.len);
                put(&t, "\n", 1);
                break;
            case LOOM_MP_HEADERS_END: {
                const loom_mp_part_t *pt = loom_multipart_part(mp);
                put(&t, "E name=", 7);
                put_span(&t, pt->name, pt->name_len);
                put(&t, " filename=", 10);
                put_span(&t, pt->filename, pt->filename_len);
                put(&t, " type=", 6);
                put_span(&t, pt->type, pt->type_len);
                put(&t, "\n", 1);
                break;
            }
            case LOOM_MP_DATA:
                put(&body, ev.data, ev.len);
                break;
            case LOOM_MP_PART_END:
                put(&t, "B[", 2);
                put(&t, body.p, body.len);
                put(&t, "]\n", 2);
                body.len = 0;
                break;
            case LOOM_MP_END:
                put(&t, "$\n", 2);
                break;
            default:
                CHECK(!"unknown event");
            }
        }
    }
    if (rc >= 0)
        rc = loom_multipart_finish(mp);
    else
        CHECK(loom_multipart_finish(mp) == rc); /* sticky */
    if (body.len > 0) {                         /* a body cut short by the error */
        put(&t, "b[", 2);
        put(&t, body.p, body.len);
        put(&t, "]\n", 2);
    }
    putf(&t, "rc=%d", rc);
    loom_multipart_free(mp);
    free(body.p);
    return t.p;
}

static char *whole(const char *boundary, const char *wire, size_t len, opts_t *o) {
    return transcript(boundary, wire, len, NULL, 0, o);
}

/* The transcript of wire fed whole; checks that pieces of every size (1 to 64, then some
 * larger), and every split into two pieces, give the same one. */
static char *parse_everyway(const char *boundary, const char *wire, size_t len, opts_t o) {
    char *want = whole(boundary, wire, len, &o);
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    for (size_t step = 1; step <= len; step = step < 64 ? step + 1 : step * 2) {
        size_t n = 0;
        for (size_t at = step; at < len; at += step)
            cuts[n++] = at;
        char *got = transcript(boundary, wire, len, cuts, n, &o);
        CHECK(strcmp(got, want) == 0);
        if (strcmp(got, want) != 0)
            fprintf(stderr, "pieces of %zu bytes:\n%s\n---- whole:\n%s\n", step, got, want);
        free(got);
    }
    for (size_t at = 0; at <= len; at++) {
        char *got = transcript(boundary, wire, len, &at, 1, &o);
        CHECK(strcmp(got, want) == 0);
        if (strcmp(got, want) != 0)
            fprintf(stderr, "split at %zu:\n%s\n---- whole:\n%s\n", at, got, want);
        free(got);
    }
    free(cuts);
    return want;
}

#define EXPECT(boundary, wire, expected)                                                           \
    do {                                                                                           \
        opts_t o_ = {0};                                                                           \
        char *got_ = parse_everyway(boundary, wire, sizeof wire - 1, o_);                          \
        CHECK(strcmp(got_, expected) == 0);                                                        \
        if (strcmp(got_, expected) != 0)                                                           \
            fprintf(stderr, "%s:%d: got:\n%s\n---- expected:\n%s\n", __FILE__, __LINE__, got_,     \
                    expected);                                                                     \
        free(got_);                                                                                \
    } while (0)

/* ---------------------------------------------------------------- real clients */

/* curl 7.88.1: -F name=value -F file=@a.txt -F 'q=x;type=text/html'
 * -F 'odd=@a.txt;filename=we"ird\name.txt' */
static const char curl_body[] =
    "--------------------------8b4f60064ce1c494\r\n"
    "Content-Disposition: form-data; name=\"name\"\r\n"
    "\r\n"
    "value\r\n"
    "--------------------------8b4f60064ce1c494\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "hello\n"
    "\r\n"
    "--------------------------8b4f60064ce1c494\r\n"
    "Content-Disposition: form-data; name=\"q\"\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "x\r\n"
    "--------------------------8b4f60064ce1c494\r\n"
    "Content-Disposition: form-data; name=\"odd\"; filename=\"we%22ird\\name.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "hello\n"
    "\r\n"
    "--------------------------8b4f60064ce1c494--\r\n";

/* Python requests 2.34 (urllib3 2.7): data={'field': 'v1'},
 * files={'upload': ('résumé "x".txt', b'data\r\n--', 'text/plain')} */
static const char requests_body[] =
    "--c9d54757e006542de96545da037fad4f\r\n"
    "Content-Disposition: form-data; name=\"field\"\r\n"
    "\r\n"
    "v1\r\n"
    "--c9d54757e006542de96545da037fad4f\r\n"
    "Content-Disposition: form-data; name=\"upload\"; filename=\"r\xc3\xa9sum\xc3\xa9 "
    "%22x%22.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "data\r\n"
    "--\r\n"
    "--c9d54757e006542de96545da037fad4f--\r\n";

/* Chromium (Debian 12's), fetch with a FormData: text, an empty value, a name with a quote,
 * a file named 'a"b\r\nc.txt' holding "line1\r\n--not-the-boundary\r\nline2", and a Blob
 * of bytes 00 0d 0a 2d 2d ff. */
static const char chromium_body[] =
    "------WebKitFormBoundary30VwmgZdtIwAqM5D\r\n"
    "Content-Disposition: form-data; name=\"text\"\r\n"
    "\r\n"
    "hello world\r\n"
    "------WebKitFormBoundary30VwmgZdtIwAqM5D\r\n"
    "Content-Disposition: form-data; name=\"empty\"\r\n"
    "\r\n"
    "\r\n"
    "------WebKitFormBoundary30VwmgZdtIwAqM5D\r\n"
    "Content-Disposition: form-data; name=\"quote%22name\"\r\n"
    "\r\n"
    "v\r\n"
    "------WebKitFormBoundary30VwmgZdtIwAqM5D\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"a%22b%0D%0Ac.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "line1\r\n"
    "--not-the-boundary\r\n"
    "line2\r\n"
    "------WebKitFormBoundary30VwmgZdtIwAqM5D\r\n"
    "Content-Disposition: form-data; name=\"blob\"; filename=\"bin.dat\"\r\n"
    "Content-Type: application/octet-stream\r\n"
    "\r\n"
    "\x00\r\n"
    "--\xff\r\n"
    "------WebKitFormBoundary30VwmgZdtIwAqM5D--\r\n";

static void real_clients(void) {
    const char *b;
    size_t blen;
    static const char curl_ct[] =
        "multipart/form-data; boundary=------------------------8b4f60064ce1c494";
    CHECK(loom_multipart_boundary(curl_ct, sizeof curl_ct - 1, &b, &blen) == 0);
    CHECK(blen == 40 && memcmp(b, "------------------------8b4f60064ce1c494", 40) == 0);

    EXPECT("------------------------8b4f60064ce1c494", curl_body,
           "P\n"
           "H content-disposition: form-data; name=\"name\"\n"
           "E name=name filename=(nil) type=(nil)\n"
           "B[value]\n"
           "P\n"
           "H content-disposition: form-data; name=\"file\"; filename=\"a.txt\"\n"
           "H content-type: text/plain\n"
           "E name=file filename=a.txt type=text/plain\n"
           "B[hello\n]\n"
           "P\n"
           "H content-disposition: form-data; name=\"q\"\n"
           "H content-type: text/html\n"
           "E name=q filename=(nil) type=text/html\n"
           "B[x]\n"
           "P\n"
           "H content-disposition: form-data; name=\"odd\"; filename=\"we%22ird\\name.txt\"\n"
           "H content-type: text/plain\n"
           "E name=odd filename=we%22ird\\name.txt type=text/plain\n"
           "B[hello\n]\n"
           "$\n"
           "rc=0");

    EXPECT("c9d54757e006542de96545da037fad4f", requests_body,
           "P\n"
           "H content-disposition: form-data; name=\"field\"\n"
           "E name=field filename=(nil) type=(nil)\n"
           "B[v1]\n"
           "P\n"
           "H content-disposition: form-data; name=\"upload\"; filename=\"r\xc3\xa9sum\xc3\xa9 "
           "%22x%22.txt\"\n"
           "H content-type: text/plain\n"
           "E name=upload filename=r\xc3\xa9sum\xc3\xa9 %22x%22.txt type=text/plain\n"
           "B[data\r\n--]\n"
           "$\n"
           "rc=0");

    /* the transcript holds a NUL: compare it with memcmp */
    static const char chromium_want[] =
        "P\n"
        "H content-disposition: form-data; name=\"text\"\n"
        "E name=text filename=(nil) type=(nil)\n"
        "B[hello world]\n"
        "P\n"
        "H content-disposition: form-data; name=\"empty\"\n"
        "E name=empty filename=(nil) type=(nil)\n"
        "B[]\n"
        "P\n"
        "H content-disposition: form-data; name=\"quote%22name\"\n"
        "E name=quote%22name filename=(nil) type=(nil)\n"
        "B[v]\n"
        "P\n"
        "H content-disposition: form-data; name=\"file\"; filename=\"a%22b%0D%0Ac.txt\"\n"
        "H content-type: text/plain\n"
        "E name=file filename=a%22b%0D%0Ac.txt type=text/plain\n"
        "B[line1\r\n--not-the-boundary\r\nline2]\n"
        "P\n"
        "H content-disposition: form-data; name=\"blob\"; filename=\"bin.dat\"\n"
        "H content-type: application/octet-stream\n"
        "E name=blob filename=bin.dat type=application/octet-stream\n"
        "B[\x00\r\n--\xff]\n"
        "$\n"
        "rc=0";
    opts_t o = {0};
    char *got = parse_everyway("----WebKitFormBoundary30VwmgZdtIwAqM5D", chromium_body,
                               sizeof chromium_body - 1, o);
    CHECK(memcmp(got, chromium_want, sizeof chromium_want) == 0);
    free(got);
}

/* ---------------------------------------------------------------- grammar */

static void delimiter_lookalikes(void) {
    /* "\r\n--b" followed by a byte that cannot end a delimiter line is body, as in Go;
     * prefixes of the delimiter are body; a CR before the delimiter's CR is body */
    EXPECT("bound",
           "--bound\r\n"
           "Content-Disposition: form-data; name=a\r\n"
           "\r\n"
           "x\r\n--boun\r\n--bounD\r\n--boundX\r\n-\r\n\r\r\n--\r\n--bound\r\n"
           "Content-Disposition: form-data; name=b\r\n"
           "\r\n"
           "\r\n\r\n--bound--",
           "P\n"
           "H content-disposition: form-data; name=a\n"
           "E name=a filename=(nil) type=(nil)\n"
           "B[x\r\n--boun\r\n--bounD\r\n--boundX\r\n-\r\n\r\r\n--]\n"
           "P\n"
           "H content-disposition: form-data; name=b\n"
           "E name=b filename=(nil) type=(nil)\n"
           "B[\r\n]\n"
           "$\n"
           "rc=0");
    /* a body that is all CRs and dashes */
    EXPECT("-",
           "---\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\r\r\n-\r\n---\r\n"
           "Content-Disposition: form-data; name=a\r\n\r\n"
           "\r\n--\r\n-----",
           "P\n"
           "H content-disposition: form-data; name=a\n"
           "E name=a filename=(nil) type=(nil)\n"
           "B[\r\r\r\n-]\n"
           "P\n"
           "H content-disposition: form-data; name=a\n"
           "E name=a filename=(nil) type=(nil)\n"
           "B[\r\n--]\n"
           "$\n"
           "rc=0");
}

static void preamble_padding_epilogue(void) {
    EXPECT("xyz",
           "This is the preamble. --xyz is not a delimiter here\r\n"
           "nor --xyzzy\r\n"
           "--xyz \t \r\n"
           "content-disposition: FORM-DATA; NAME=\"f\"\r\n"
           "\r\n"
           "body\r\n"
           "--xyz\t\r\n"
           "Content-Disposition:form-data;name=g  \r\n"
           "\r\n"
           "\r\n"
           "--xyz--  \r\n"
           "This is the epilogue.\r\n--xyz\r\nnot a part\r\n--xyz--\r\n",
           "P\n"
           "H content-disposition: FORM-DATA; NAME=\"f\"\n"
           "E name=f filename=(nil) type=(nil)\n"
           "B[body]\n"
           "P\n"
           "H content-disposition: form-data;name=g\n"
           "E name=g filename=(nil) type=(nil)\n"
           "B[]\n"
           "$\n"
           "rc=0");
    /* an empty form: the close delimiter alone (what Chromium sends for an empty FormData) */
    EXPECT("b", "--b--\r\n", "$\nrc=0");
    EXPECT("b", "--b--", "$\nrc=0");
    /* the first delimiter after a preamble line that ends in CRLF */
    EXPECT("b", "\r\n--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-data; name=a\n"
           "E name=a filename=(nil) type=(nil)\nB[v]\n$\nrc=0");
}

static void filenames(void) {
    /* an escaped quote and an escaped backslash; other backslashes stay */
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\\\"b\\\\c\\d\"\r\n"
           "\r\nx\r\n--b--",
           "P\nH content-disposition: form-data; name=\"f\"; filename=\"a\\\"b\\\\c\\d\"\n"
           "E name=f filename=a\"b\\c\\d type=(nil)\nB[x]\n$\nrc=0");
    /* filename* (RFC 5987) wins over filename, UTF-8 and ISO-8859-1 alike */
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=f; filename=\"EURO rates.txt\"; "
           "filename*=UTF-8''%e2%82%ac%20rates.txt\r\n\r\nx\r\n--b--",
           "P\nH content-disposition: form-data; name=f; filename=\"EURO rates.txt\"; "
           "filename*=UTF-8''%e2%82%ac%20rates.txt\n"
           "E name=f filename=\xe2\x82\xac rates.txt type=(nil)\nB[x]\n$\nrc=0");
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=f; filename*=iso-8859-1'fr'caf%E9\r\n"
           "\r\nx\r\n--b--",
           "P\nH content-disposition: form-data; name=f; filename*=iso-8859-1'fr'caf%E9\n"
           "E name=f filename=caf\xc3\xa9 type=(nil)\nB[x]\n$\nrc=0");
    /* an unknown charset: filename* is ignored, filename stays */
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=f; filename*=koi8-r''%C1; "
           "filename=\"plain.txt\"\r\n\r\nx\r\n--b--",
           "P\nH content-disposition: form-data; name=f; filename*=koi8-r''%C1; "
           "filename=\"plain.txt\"\n"
           "E name=f filename=plain.txt type=(nil)\nB[x]\n$\nrc=0");
    /* an empty filename (a file input left empty) is a filename, not a field */
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n\r\n--b--",
           "P\nH content-disposition: form-data; name=\"f\"; filename=\"\"\n"
           "H content-type: application/octet-stream\n"
           "E name=f filename= type=application/octet-stream\nB[]\n$\nrc=0");
    /* header injection through filename*: CR LF decoded is refused */
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=f; "
           "filename*=UTF-8''a%0D%0AX-Evil%3A%201\r\n\r\nx\r\n--b--",
           "P\nH content-disposition: form-data; name=f; "
           "filename*=UTF-8''a%0D%0AX-Evil%3A%201\nrc=-10");
    EXPECT(
        "b",
        "--b\r\nContent-Disposition: form-data; name=f; filename*=UTF-8''a%00b\r\n\r\nx\r\n--b--",
        "P\nH content-disposition: form-data; name=f; filename*=UTF-8''a%00b\nrc=-10");
    /* a tab in a quoted filename (the only control a head line may hold) */
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=f; filename=\"a\tb\"\r\n\r\nx\r\n--b--",
           "P\nH content-disposition: form-data; name=f; filename=\"a\tb\"\nrc=-10");
    /* a raw CRLF cannot be in a quoted filename: the line ends there, the quote does not */
    EXPECT("b",
           "--b\r\nContent-Disposition: form-data; name=f; filename=\"a\r\n"
           "Content-Type: text/html\"\r\n\r\nx\r\n--b--",
           "P\nH content-disposition: form-data; name=f; filename=\"a\n"
           "H content-type: text/html\"\nrc=-8");
}

static void malformed(void) {
    const char *cd = "Content-Disposition: form-data; name=a\r\n";
    char wire[512];
    /* no close delimiter: cut in the preamble, the head, the body, after a part */
    EXPECT("b", "", "rc=-3");
    EXPECT("b", "preamble only", "rc=-3");
    EXPECT("b", "--b\r\nContent-Disposition: form-da", "P\nrc=-3");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nhalf a bo",
           "P\nH content-disposition: form-data; name=a\nE name=a filename=(nil) type=(nil)\n"
           "b[half a bo]\nrc=-3");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b",
           "P\nH content-disposition: form-data; name=a\nE name=a filename=(nil) type=(nil)\n"
           "b[v]\nrc=-3");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b\r\n",
           "P\nH content-disposition: form-data; name=a\nE name=a filename=(nil) type=(nil)\n"
           "B[v]\nP\nrc=-3");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b-",
           "P\nH content-disposition: form-data; name=a\nE name=a filename=(nil) type=(nil)\n"
           "B[v]\nrc=-3");
    /* what follows a boundary on its line */
    EXPECT("b", "--b x\r\n", "rc=-4");
    EXPECT("b", "--b-x\r\n", "rc=-4");
    EXPECT("b", "--b\rx", "rc=-4");
    EXPECT("b", "--b\r\r\n", "rc=-4");
    /* head lines */
    EXPECT("b", "--b\r\nno colon here\r\n\r\n--b--", "P\nrc=-5");
    EXPECT("b", "--b\r\n: empty name\r\n\r\n--b--", "P\nrc=-5");
    EXPECT("b", "--b\r\nContent-Disposition : form-data; name=a\r\n\r\n--b--", "P\nrc=-5");
    EXPECT("b", "--b\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\n--b--",
           "P\nH content-disposition: form-data;\nrc=-5");
    /* LF-only lines: "\r\n--b" is nowhere, so no part begins */
    EXPECT("b", "--b\nContent-Disposition: form-data; name=a\n\n--b--", "rc=-3");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\n\r\n--b--", "P\nrc=-5");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\rx\r\n\r\n--b--", "P\nrc=-5");
    EXPECT("b", "--b\r\nX-A: a\x01z\r\n\r\n--b--", "P\nrc=-5");
    /* a boundary inside a head */
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\r\n--b\r\n\r\n--b--",
           "P\nH content-disposition: form-data; name=a\nrc=-6");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a\r\n--b--\r\n",
           "P\nH content-disposition: form-data; name=a\nrc=-6");
    /* Content-Disposition: missing, not form-data, twice, without name, malformed */
    EXPECT("b", "--b\r\nContent-Type: text/plain\r\n\r\nv\r\n--b--",
           "P\nH content-type: text/plain\nrc=-7");
    EXPECT("b", "--b\r\n\r\nv\r\n--b--", "P\nrc=-7");
    EXPECT("b", "--b\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: attachment; name=a\nrc=-7");
    EXPECT("b", "--b\r\nContent-Disposition: form-datax; name=a\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-datax; name=a\nrc=-7");
    snprintf(wire, sizeof wire, "--b\r\n%s%s\r\nv\r\n--b--", cd, cd);
    {
        opts_t o = {0};
        char *got = parse_everyway("b", wire, strlen(wire), o);
        CHECK(strstr(got, "rc=-11") != NULL);
        free(got);
    }
    EXPECT("b", "--b\r\nContent-Type: a\r\ncontent-type: b\r\n\r\nv\r\n--b--",
           "P\nH content-type: a\nrc=-11");
    EXPECT("b", "--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-data\nrc=-9");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; filename=\"a.txt\"\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-data; filename=\"a.txt\"\nrc=-9");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-data; name=a; name=b\nrc=-8");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-data; name=\"a\nrc=-8");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-data; name\nrc=-8");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a b\r\n\r\nv\r\n--b--",
           "P\nH content-disposition: form-data; name=a b\nrc=-8");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a; filename*=UTF-8''%G0\r\n\r\n--b--",
           "P\nH content-disposition: form-data; name=a; filename*=UTF-8''%G0\nrc=-8");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a; filename*=UTF-8''%4\r\n\r\n--b--",
           "P\nH content-disposition: form-data; name=a; filename*=UTF-8''%4\nrc=-8");
    EXPECT("b", "--b\r\nContent-Disposition: form-data; name=a; filename*=UTF-8%41\r\n\r\n--b--",
           "P\nH content-disposition: form-data; name=a; filename*=UTF-8%41\nrc=-8");
    /* an error is sticky */
    {
        loom_multipart_t *mp = loom_multipart_new("b", 1, 10, 100);
        size_t used;
        loom_mp_event_t ev;
        CHECK(loom_multipart_execute(mp, "--b x", 5, &used, &ev) == LOOM_MP_EBAD_DELIMITER);
        CHECK(loom_multipart_execute(mp, "\r\n", 2, &used, &ev) == LOOM_MP_EBAD_DELIMITER);
        CHECK(used == 0);
        CHECK(loom_multipart_finish(mp) == LOOM_MP_EBAD_DELIMITER);
        loom_multipart_free(mp);
    }
}

static void limits(void) {
    static const char three[] = "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
                                "--b\r\nContent-Disposition: form-data; name=b\r\n\r\n2\r\n"
                                "--b\r\nContent-Disposition: form-data; name=c\r\n\r\n3\r\n"
                                "--b--\r\n";
    opts_t o = {.max_parts = 3};
    char *got = parse_everyway("b", three, sizeof three - 1, o);
    CHECK(strstr(got, "$\nrc=0") != NULL);
    free(got);
    o.max_parts = 2;
    got = parse_everyway("b", three, sizeof three - 1, o);
    CHECK(strstr(got, "B[2]\nrc=-1") != NULL); /* the third part is refused as it begins */
    free(got);

    /* max_part_header counts a head's lines with their CRLFs and the blank line: 42 here */
    static const char one[] = "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b--";
    o = (opts_t){.max_head = 42};
    got = parse_everyway("b", one, sizeof one - 1, o);
    CHECK(strstr(got, "B[v]\n$\nrc=0") != NULL);
    free(got);
    o.max_head = 41; /* the blank line's LF is one too many */
    got = parse_everyway("b", one, sizeof one - 1, o);
    CHECK(strcmp(got, "P\nH content-disposition: form-data; name=a\nrc=-2") == 0);
    free(got);
    o.max_head = 30; /* inside the first line */
    got = parse_everyway("b", one, sizeof one - 1, o);
    CHECK(strcmp(got, "P\nrc=-2") == 0);
    free(got);
    /* a line that never ends is refused at the limit, not buffered */
    char *endless = malloc(100000);
    memcpy(endless, "--b\r\nX-Long: ", 13);
    memset(endless + 13, 'x', 100000 - 13);
    o.max_head = 8192;
    got = whole("b", endless, 100000, &o);
    CHECK(strcmp(got, "P\nrc=-2") == 0);
    free(got);
    free(endless);
    CHECK(loom_multipart_status(LOOM_MP_ETOO_MANY_PARTS) == 413);
    CHECK(loom_multipart_status(LOOM_MP_EHEAD_TOO_LARGE) == 431);
    CHECK(loom_multipart_status(LOOM_MP_ETRUNCATED) == 400);
    CHECK(loom_multipart_status(LOOM_MP_EBAD_FILENAME) == 400);
    CHECK(strncmp(loom_multipart_strerror(LOOM_MP_ETOO_MANY_PARTS), "limit: ", 7) == 0);
    CHECK(strncmp(loom_multipart_strerror(LOOM_MP_EHEAD_TOO_LARGE), "limit: ", 7) == 0);
    for (int e = LOOM_MP_ETRUNCATED; e >= LOOM_MP_EBAD_BOUNDARY; e--)
        if (e != LOOM_MP_ENOMEM)
            CHECK(strncmp(loom_multipart_strerror(e), "http: multipart", 15) == 0 ||
                  strncmp(loom_multipart_strerror(e), "http: not a multipart", 21) == 0);
}

/* A 1 MiB body of random bytes with many CRs and dashes, in 64 KiB pieces: the body
 * arrives whole, and only bytes kept at a piece's end (a possible delimiter start) are
 * handed back from the parser's own buffer. */
static void big_body(void) {
    const char *boundary = "----WebKitFormBoundaryQ1w2E3r4T5y6U7i8";
    size_t n = 1 << 20, blen = strlen(boundary);
    char *content = malloc(n);
    unsigned x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        unsigned r = (x >> 16) & 0xff;
        content[i] = r < 16 ? '\r' : r < 32 ? '\n' : r < 64 ? '-' : (char)r;
    }
    /* a near-delimiter in the middle */
    memcpy(content + 500000, "\r\n--", 4);
    memcpy(content + 500004, boundary, blen - 1);
    static const char head[] = "\r\nContent-Disposition: form-data; name=\"f\"; "
                               "filename=\"big.bin\"\r\n\r\n";
    size_t len = 2 + blen + sizeof head - 1 + n + 4 + blen + 2;
    char *wire = malloc(len), *w = wire;
    memcpy(w, "--", 2), w += 2;
    memcpy(w, boundary, blen), w += blen;
    memcpy(w, head, sizeof head - 1), w += sizeof head - 1;
    memcpy(w, content, n), w += n;
    memcpy(w, "\r\n--", 4), w += 4;
    memcpy(w, boundary, blen), w += blen;
    memcpy(w, "--", 2), w += 2;
    CHECK((size_t)(w - wire) == len);

    size_t cuts[64], ncuts = 0;
    for (size_t at = 65536; at < len; at += 65536)
        cuts[ncuts++] = at;
    opts_t o = {0};
    char *got = transcript(boundary, wire, len, cuts, ncuts, &o);
    const char *b = strstr(got, "B[");
    CHECK(b != NULL && memcmp(b + 2, content, n) == 0);
    CHECK(b != NULL && memcmp(b + 2 + n, "]\n$\nrc=0", 9) == 0);
    CHECK(o.copied <= o.pieces * (blen + 4));
    free(got);
    free(wire);
    free(content);
}

/* ---------------------------------------------------------------- boundary, disposition */

static int boundary_of(const char *ct, char *out) {
    const char *b;
    size_t n;
    int rc = loom_multipart_boundary(ct, strlen(ct), &b, &n);
    if (rc == 0) {
        memcpy(out, b, n);
        out[n] = '\0';
    }
    return rc;
}

static void boundaries(void) {
    char b[128];
    CHECK(boundary_of("multipart/form-data; boundary=abc", b) == 0 && strcmp(b, "abc") == 0);
    CHECK(boundary_of("Multipart/Form-Data;BOUNDARY=abc", b) == 0 && strcmp(b, "abc") == 0);
    CHECK(boundary_of("multipart/form-data; charset=utf-8; boundary=\"a b:c\"", b) == 0 &&
          strcmp(b, "a b:c") == 0);
    CHECK(boundary_of("multipart/form-data; boundary=----=_Part_0_1.2 ; x=\"y\\\"z\"", b) == 0 &&
          strcmp(b, "----=_Part_0_1.2") == 0);
    CHECK(boundary_of("  multipart/form-data ; boundary=x;", b) == 0 && strcmp(b, "x") == 0);
    /* 70 characters is the most RFC 2046 allows */
    char ct[160];
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%070d", 7);
    CHECK(boundary_of(ct, b) == 0 && strlen(b) == 70);
    loom_multipart_t *mp = loom_multipart_new(b, 70, 1, 1);
    CHECK(mp != NULL);
    loom_multipart_free(mp);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%071d", 7);
    CHECK(boundary_of(ct, b) == LOOM_MP_EBAD_BOUNDARY);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%071d\"", 7);
    CHECK(boundary_of(ct, b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(loom_multipart_new(
              "01234567890123456789012345678901234567890123456789012345678901234567890", 71, 1,
              1) == NULL);
    CHECK(loom_multipart_new("", 0, 1, 1) == NULL);
    CHECK(loom_multipart_new("a\r", 2, 1, 1) == NULL);
    CHECK(boundary_of("multipart/form-data; boundary=", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=\"\"", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=\"ends with space \"", b) ==
          LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=a\"b", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=\"a\\b\"", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=\"abc", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=a; boundary=a", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=a\x01", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; boundary=a b", b) == LOOM_MP_EBAD_BOUNDARY);
    CHECK(boundary_of("multipart/form-data", b) == LOOM_MP_ENO_BOUNDARY);
    CHECK(boundary_of("multipart/form-data; charset=utf-8", b) == LOOM_MP_ENO_BOUNDARY);
    CHECK(boundary_of("multipart/mixed; boundary=abc", b) == LOOM_MP_ENOT_FORM);
    CHECK(boundary_of("multipart/form-dataa; boundary=abc", b) == LOOM_MP_ENOT_FORM);
    CHECK(boundary_of("application/x-www-form-urlencoded", b) == LOOM_MP_ENOT_FORM);
    CHECK(boundary_of("", b) == LOOM_MP_ENOT_FORM);
}

static int disposition(const char *v, loom_mp_part_t *p, char *name, char *filename) {
    char buf[256];
    size_t n = strlen(v);
    memcpy(buf, v, n);
    int rc = loom_multipart_disposition(buf, n, p);
    if (rc == 0) {
        memcpy(name, p->name, p->name_len);
        name[p->name_len] = '\0';
        if (p->filename) {
            memcpy(filename, p->filename, p->filename_len);
            filename[p->filename_len] = '\0';
        } else {
            strcpy(filename, "(nil)");
        }
    }
    return rc;
}

static void dispositions(void) {
    loom_mp_part_t p;
    char name[256], fn[256];
    CHECK(disposition("form-data; name=\"a\"", &p, name, fn) == 0 && strcmp(name, "a") == 0 &&
          strcmp(fn, "(nil)") == 0);
    CHECK(disposition("form-data;name=a;filename=b.txt;", &p, name, fn) == 0 &&
          strcmp(name, "a") == 0 && strcmp(fn, "b.txt") == 0);
    CHECK(disposition("form-data; name = \"a;b\" ; filename = \"c;d=e\"", &p, name, fn) == 0 &&
          strcmp(name, "a;b") == 0 && strcmp(fn, "c;d=e") == 0);
    CHECK(disposition("form-data; name=\"\"", &p, name, fn) == 0 && strcmp(name, "") == 0);
    CHECK(disposition("form-data; NAME=a; FileName*=utf-8'en'x%2Fy", &p, name, fn) == 0 &&
          strcmp(fn, "x/y") == 0);
    CHECK(disposition("form-data; name=a; filename*=UTF-8''", &p, name, fn) == 0 &&
          strcmp(fn, "") == 0);
    CHECK(disposition("form-data; name=a; x-unknown=\"q\\\"\"", &p, name, fn) == 0);
    CHECK(disposition("form-data; name=\"a\\\"", &p, name, fn) == LOOM_MP_EBAD_DISPOSITION);
    CHECK(disposition("form-data; name=a; filename=a; filename=b", &p, name, fn) ==
          LOOM_MP_EBAD_DISPOSITION);
    CHECK(disposition("form-data; name=a; filename*=UTF-8''a; filename*=UTF-8''b", &p, name, fn) ==
          LOOM_MP_EBAD_DISPOSITION);
    CHECK(disposition("form-data; name=a; filename*=UTF-8''a'b", &p, name, fn) ==
          LOOM_MP_EBAD_DISPOSITION);
    CHECK(disposition("form-data name=a", &p, name, fn) == LOOM_MP_EBAD_DISPOSITION);
    CHECK(disposition("form-data; =a", &p, name, fn) == LOOM_MP_EBAD_DISPOSITION);
    CHECK(disposition("form-data; name=", &p, name, fn) == LOOM_MP_EBAD_DISPOSITION);
    CHECK(disposition("inline; name=a", &p, name, fn) == LOOM_MP_ENO_DISPOSITION);
    CHECK(disposition("", &p, name, fn) == LOOM_MP_ENO_DISPOSITION);
    CHECK(disposition("form-data; filename=a", &p, name, fn) == LOOM_MP_ENO_NAME);
    CHECK(disposition("form-data; name=a; filename=\"\x7f\"", &p, name, fn) ==
          LOOM_MP_EBAD_FILENAME);
}

int main(void) {
    real_clients();
    delimiter_lookalikes();
    preamble_padding_epilogue();
    filenames();
    malformed();
    limits();
    big_body();
    boundaries();
    dispositions();
    return CHECK_SUMMARY();
}
