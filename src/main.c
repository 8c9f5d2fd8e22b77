/*
 * main.c - the `loom` executable: runs a script (or -e code) as the main task and drives
 * the loop until no work is left. Uses nothing but loom.h, as lua.c uses lua.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include "loom.h"

static const char *progname = "loom";

static void usage(FILE *out) {
    fprintf(out,
            "usage: %s [options] [script [args...]]\n"
            "  -e code   run code as the main task\n"
            "  --workers N  app:run serves with N worker processes (SO_REUSEPORT)\n"
            "  -v        print the version and exit\n"
            "  -h        print this help and exit\n"
            "The script runs as the main task; the process lives while tasks, servers or\n"
            "pending I/O remain. Exit status: 0, 1 when the main task raised, or loom.exit's.\n",
            progname);
}

static void version(void) {
    printf("loom %s (%s)\n", LOOM_VERSION, loom_libs_version());
}

/* Prints the message a failed load left on the stack. */
static int report(loom_t *h) {
    lua_State *L = loom_lua(h);
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
    return 1;
}

int main(int argc, char **argv) {
    const char *code = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
            version();
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            int n = atoi(argv[++i]);
            if (n < 1) {
                fprintf(stderr, "%s: --workers needs a positive number\n", progname);
                return 1;
            }
            /* app:run reads it; the workers it starts run the same script */
            uv_os_setenv("LOOM_WORKERS", argv[i]);
        } else if (strcmp(argv[i], "-e") == 0 && i + 1 < argc) {
            code = argv[++i];
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else {
            fprintf(stderr, "%s: unrecognized option '%s'\n", progname, argv[i]);
            usage(stderr);
            return 1;
        }
    }
    if (!code && i >= argc) {
        usage(stderr);
        return 1;
    }
    loom_t *h = loom_new(NULL);
    if (!h) {
        fprintf(stderr, "%s: cannot create the host\n", progname);
        return 1;
    }
    int rc = code ? loom_dostring(h, code, "=(command line)")
                  : loom_dofile(h, argv[i], argc - i - 1, argv + i + 1);
    int status = rc != 0 ? report(h) : loom_run(h);
    loom_free(h);
    return status;
}
