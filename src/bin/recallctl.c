/* recallctl — send one request to recalld's Unix socket and print the reply.
 *
 *   recallctl [--socket PATH] [--timeout MS] [--raw] [--alive] REQUEST
 *
 * REQUEST is a JSON object, or a shorthand: stats | health | recall USER [K] [CITY]
 * | similar ITEM [K] | user USER (the clicks the daemon holds for the user)
 * | reload-model [PATH] (a two-tower model; the default timeout becomes 10
 * minutes: the daemon answers once the model serves) | retrain-model (retrains
 * the served two-tower model now; 10 minutes too) | install-model [PATH] (a
 * word2vec model into the live table; 10 minutes too) | replace-model [PATH]
 * (the same, as a whole new table: install_model "replace"). Exit status: 0 reply
 * ok:true, 1 reply ok:false, 2 usage, connection or timeout error (the status
 * a container HEALTHCHECK reads). */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "recalld/cli.h"
#include "recalld/common.h"
#include "recalld/server.h"

#define EXIT_NOTOK      1
#define EXIT_TROUBLE    2
#define DEFAULT_TIMEOUT 5000
#define MAX_REPLY       (64u << 20) /* bytes; a reply line longer than this is an error */

static const char epilog[] =
    "REQUEST: a JSON object, or one of\n"
    "  stats | health | recall USER [K] [CITY] | similar ITEM [K]\n"
    "  | user USER            (the clicks the daemon holds for USER)\n"
    "  | reload-model [PATH]   (two-tower model; default timeout 10 min)\n"
    "  | retrain-model         (two-tower, from the replay buffer; default timeout 10 min)\n"
    "  | install-model [PATH]  (word2vec model into the live table; default timeout 10 min)\n"
    "  | replace-model [PATH]  (the same as a whole new table: a rebuild from random vectors)\n"
    "Socket: --socket, else $RECALLD_SOCKET, else recalld.sock in the daemon's runtime\n"
    "  directory: $RUNTIME_DIRECTORY, /run/recalld or $XDG_RUNTIME_DIR/recalld.\n"
    "Exit: 0 reply ok:true, 1 reply ok:false, 2 usage/connection/timeout error;\n"
    "  --alive: 0 for any reply (liveness probes: `--alive health` is answered on the\n"
    "  daemon's loop thread, also while workers are busy or it is not ready).\n";

struct args {
    const char *socket;
    long timeout_ms;
    int raw;
    int alive;       /* --alive: any reply is success */
    int timeout_set; /* --timeout given */
    char **req;      /* remaining words */
    int nreq;
};

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("recallctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_TROUBLE;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int on_timeout(void *ud, const rc_cli_opt *o, const char *v, char *eb, size_t el)
{
    struct args *a = ud;
    long ms;
    if (parse_long(v, 1, 86400000, &ms) != 0)
        return rc_err(eb, el, RC_EINVAL, "expected milliseconds in [1, 86400000], got '%.40s'", v);
    a->timeout_ms = ms;
    a->timeout_set = 1;
    return 0;
}

/* Returns -1 to go on, else the exit status (help, version: 0; usage: 2). */
static int parse_args(int argc, char **argv, struct args *a)
{
    static char def[108];
    const char *env = getenv("RECALLD_SOCKET");
    const rc_cli_opt opts[] = {
        {"socket", 0, RC_CLI_STR, &a->socket, "PATH", "recalld's socket", 0, 0, 0},
        {"timeout", 0, RC_CLI_CALL, NULL, "MS",
         "give up after MS milliseconds (5000; 10 min for\nreload-model, retrain-model, "
         "install-model and replace-model)",
         0, 0, 0},
        {"raw", 0, RC_CLI_BOOL, &a->raw, NULL, "print the reply line as received", 0, 0, 0},
        {"alive", 0, RC_CLI_BOOL, &a->alive, NULL, "exit 0 for any reply (liveness probes)", 0, 0,
         0},
    };
    rc_cli_spec s = {.prog = "recallctl",
                     .synopsis = "[options] REQUEST",
                     .epilog = epilog,
                     .opts = opts,
                     .nopts = RC_ARRAY_LEN(opts),
                     .fn = on_timeout,
                     .ud = a,
                     .min_args = 1,
                     .max_args = 64};
    int argi, rc;
    if (rc_server_default_path(def, sizeof def, 0, NULL, 0) != 0)
        snprintf(def, sizeof def, "/run/recalld/recalld.sock");
    a->socket = env && *env ? env : def;
    a->timeout_ms = DEFAULT_TIMEOUT;
    if ((rc = rc_cli_args(&s, argc, argv, &argi)) >= 0)
        return rc;
    a->req = argv + argi;
    a->nreq = argc - argi;
    return -1;
}

/* Ids go as strings: the server reads an integer id as its decimal text, so
 * "42" and 42 name the same user, and a string never overflows. */
static json_t *id_value(const char *s) { return json_string(s); }

static int set_k(json_t *o, const char *s)
{
    long k;
    if (parse_long(s, 1, 100000, &k) != 0)
        return die("K: expected an integer in [1, 100000], got '%s'", s);
    json_object_set_new(o, "k", json_integer(k));
    return 0;
}

/* Builds the request object from the words; *out is a new reference. */
static int build_request(char **w, int n, json_t **out)
{
    json_error_t je;
    json_t *o = NULL;
    int rc = 0;
    if (w[0][0] == '{') {
        if (n != 1)
            return die("a JSON request must be one argument (quote it)");
        o = json_loads(w[0], JSON_REJECT_DUPLICATES, &je);
        if (!o)
            return die("request: invalid JSON at %d:%d: %s", je.line, je.column, je.text);
        if (!json_is_object(o)) {
            json_decref(o);
            return die("request: expected a JSON object");
        }
    } else if ((strcmp(w[0], "stats") == 0 || strcmp(w[0], "health") == 0) && n == 1) {
        o = json_pack("{s:s}", "op", w[0]);
    } else if (strcmp(w[0], "recall") == 0 && n >= 2 && n <= 4) {
        o = json_pack("{s:s,s:o}", "op", "recall", "user_id", id_value(w[1]));
        if (n >= 3)
            rc = set_k(o, w[2]);
        if (!rc && n == 4)
            json_object_set_new(o, "city", id_value(w[3]));
    } else if (strcmp(w[0], "reload-model") == 0 && n <= 2) {
        o = n == 2 ? json_pack("{s:s,s:s}", "op", "reload_model", "path", w[1])
                   : json_pack("{s:s}", "op", "reload_model");
    } else if (strcmp(w[0], "install-model") == 0 && n <= 2) {
        o = n == 2 ? json_pack("{s:s,s:s}", "op", "install_model", "path", w[1])
                   : json_pack("{s:s}", "op", "install_model");
    } else if (strcmp(w[0], "replace-model") == 0 && n <= 2) {
        o = n == 2 ? json_pack("{s:s,s:s,s:b}", "op", "install_model", "path", w[1], "replace", 1)
                   : json_pack("{s:s,s:b}", "op", "install_model", "replace", 1);
    } else if (strcmp(w[0], "retrain-model") == 0 && n == 1) {
        o = json_pack("{s:s}", "op", "retrain_model");
    } else if (strcmp(w[0], "user") == 0 && n == 2) {
        o = json_pack("{s:s,s:o}", "op", "user", "user_id", id_value(w[1]));
    } else if (strcmp(w[0], "similar") == 0 && n >= 2 && n <= 3) {
        o = json_pack("{s:s,s:o}", "op", "similar", "item_id", id_value(w[1]));
        if (n == 3)
            rc = set_k(o, w[2]);
    } else {
        return rc_cli_usage_error("recallctl", "cannot understand request '%.60s'", w[0]);
    }
    if (!o)
        return die("out of memory");
    if (rc) {
        json_decref(o);
        return rc;
    }
    *out = o;
    return 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Connects with the timeout (a Unix connect blocks only while the backlog is
 * full; SO_SNDTIMEO bounds that). Returns the fd or -1 after printing why. */
static int connect_to(const char *path, long timeout_ms)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        die("connect %s: path too long", path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int err = errno;
        close(fd);
        if (err == EAGAIN || err == EINPROGRESS)
            die("connect %s: timed out after %ld ms", path, timeout_ms);
        else
            die("connect %s: %s", path, strerror(err));
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n, const char *path)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return die("send %s: %s", path, errno == EAGAIN ? "timed out" : strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one '\n'-terminated line into *line (malloc'd, without the newline). */
static int read_line(int fd, long deadline, const char *path, char **line, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return die("out of memory");
    for (;;) {
        long left = deadline - now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            free(buf);
            return pr == 0 ? die("%s: no reply within the timeout", path)
                           : die("poll %s: %s", path, strerror(errno));
        }
        if (n + 1 >= cap) {
            char *nb = cap < MAX_REPLY ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                return die("%s: reply longer than %u bytes", path, MAX_REPLY);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return die("%s: connection closed before a reply%s%s", path, r < 0 ? ": " : "",
                       r < 0 ? strerror(errno) : "");
        }
        char *nl = memchr(buf + n, '\n', (size_t)r);
        n += (size_t)r;
        if (nl) {
            *nl = '\0';
            *len = (size_t)(nl - buf);
            *line = buf;
            return 0;
        }
    }
}

/* Prints the reply and maps it to the exit status. */
static int report(const char *line, size_t len, int raw)
{
    json_error_t je;
    json_t *r = json_loadb(line, len, 0, &je);
    if (!r) {
        fprintf(stdout, "%.*s\n", (int)len, line);
        return die("reply: invalid JSON at %d:%d: %s", je.line, je.column, je.text);
    }
    if (raw) {
        fprintf(stdout, "%.*s\n", (int)len, line);
    } else {
        char *s = json_dumps(r, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
        if (s)
            puts(s);
        free(s);
    }
    int ok = json_is_true(json_object_get(r, "ok"));
    json_decref(r);
    return ok ? 0 : EXIT_NOTOK;
}

int main(int argc, char **argv)
{
    struct args a = {0};
    json_t *req = NULL;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    if ((rc = build_request(a.req, a.nreq, &req)))
        return rc;
    if (!a.timeout_set &&
        (strcmp(a.req[0], "reload-model") == 0 || strcmp(a.req[0], "retrain-model") == 0 ||
         strcmp(a.req[0], "install-model") == 0 || strcmp(a.req[0], "replace-model") == 0))
        a.timeout_ms = 600000; /* the reply comes once every item is vectorised */
    char *text = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(req);
    if (!text)
        return die("out of memory");
    long deadline = now_ms() + a.timeout_ms;
    int fd = connect_to(a.socket, a.timeout_ms);
    if (fd < 0) {
        free(text);
        return EXIT_TROUBLE;
    }
    char *line = NULL;
    size_t len = 0;
    size_t tlen = strlen(text);
    text[tlen] = '\n'; /* json_dumps text is NUL-terminated: reuse the byte */
    rc = send_all(fd, text, tlen + 1, a.socket);
    free(text);
    if (!rc)
        rc = read_line(fd, deadline, a.socket, &line, &len);
    close(fd);
    if (!rc)
        rc = report(line, len, a.raw);
    if (rc == EXIT_NOTOK && a.alive)
        rc = 0; /* an answer, even not_ready, is a live daemon */
    free(line);
    fflush(stdout);
    return rc;
}
