/* Helpers for end-to-end tests: run the real binaries, talk to the socket. */
#ifndef RC_TESTS_E2E_H
#define RC_TESTS_E2E_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct e2e_daemon {
    pid_t pid;
    char dir[256];     /* private temp dir: socket, logs, dlq */
    char sock[300];
    char log[300];
    char bootstrap[256];
} e2e_daemon;

/* Starts build/recalld --embedded-kafka --socket DIR/s.sock --metrics-port 0 plus extra args
 * (NULL-terminated), waits until health is ok (partitions assigned) and reads
 * kafka.bootstrap from stats. Aborts the test on failure. */
void e2e_start(e2e_daemon *d, const char *const *extra);
typedef struct e2e_opts {
    const char *brokers;      /* NULL: --embedded-kafka */
    int reuse;                /* restart: keep d's dir, socket and log (appended) */
    int no_wait;              /* return once the socket answers, healthy or not */
    const char *const *extra; /* NULL-terminated extra flags */
} e2e_opts;
/* e2e_start with options. */
void e2e_start_opts(e2e_daemon *d, const e2e_opts *o);
/* SIGKILL, wait for it. */
void e2e_kill(e2e_daemon *d);

/* recalld-broker in its own process (the log outlives recalld). Its stdin
 * takes fault commands (see recalld-broker --help), answered on stdout. */
typedef struct e2e_broker {
    pid_t pid;
    int cmd_fd, out_fd;
    char bootstrap[256];
} e2e_broker;
void e2e_broker_start(e2e_broker *b, int partitions, const char *const *extra);
/* Sends one command line; returns the reply line (malloc'd). */
char *e2e_broker_cmd(e2e_broker *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void e2e_broker_stop(e2e_broker *b);

/* SIGTERM, wait for exit; returns the exit status (or -1 on signal). */
int e2e_stop(e2e_daemon *d);

/* One request line -> parsed reply (caller json_decref). Aborts on I/O error. */
json_t *e2e_request(const char *sock, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Raw: sends bytes, returns the reply line (malloc'd) or NULL on EOF/timeout. */
char *e2e_raw(const char *sock, const char *bytes, size_t n, int timeout_ms);

/* Integer at a dotted path of a JSON object ("events.applied"), or -1. */
long long e2e_int(json_t *o, const char *path);

/* Waits (<= timeout_ms) until stats events.consumed >= n; returns the stats. */
json_t *e2e_wait_consumed(const char *sock, long long n, int timeout_ms);

/* Runs a command line with /bin/sh; returns exit status; output to *out (malloc'd). */
int e2e_sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
