/* Helpers for end-to-end tests: run the real binaries, talk to the socket. */
#ifndef RC_TESTS_E2E_H
#define RC_TESTS_E2E_H

#include <jansson.h>
#include <sched.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "recalld/checkpoint.h"
#include "recalld/engine.h"
#include "recalld/gen.h"

typedef struct e2e_daemon {
    pid_t pid;
    char dir[256]; /* private temp dir: socket, logs, dlq */
    char sock[300];
    char log[300];
    char bootstrap[256];
} e2e_daemon;

/* Starts build/recalld --embedded-kafka --socket DIR/s.sock --metrics-port 0 plus extra args
 * (NULL-terminated), waits until health is ok (partitions assigned) and reads
 * kafka.bootstrap from stats. Aborts the test on failure. */
void e2e_start(e2e_daemon *d, const char *const *extra);
/* pipeline.background_cpus "auto" for this process's cores: 1 with the
 * background cores in bg and the request path's in rest (all = both), 0 when
 * fewer than 2 cores are allowed (nothing to pin apart: the caller skips). */
int e2e_cpus_auto(cpu_set_t *all, cpu_set_t *bg, cpu_set_t *rest);
typedef struct e2e_opts {
    const char *brokers;      /* NULL: --embedded-kafka */
    int reuse;                /* restart: keep d's dir, socket and log (appended) */
    int no_wait;              /* return once the socket answers, healthy or not */
    const char *const *extra; /* NULL-terminated extra flags */
    long long fsize_limit;    /* > 0: RLIMIT_FSIZE of the daemon, bytes (a full disk) */
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

/* Generated streams shared by the crash and fault tests: recalld-gen with
 * E2E_GEN_USERS users, E2E_GEN_ITEMS items, 4 cities, 4 categories, 40
 * communities. The generator's event times increase per user, so every valid
 * event adds exactly one click to its item: per-item counts are the truth. */
#define E2E_GEN_USERS 3000
#define E2E_GEN_ITEMS 3000
typedef struct e2e_truth {
    uint64_t valid, invalid;
    uint32_t *count; /* clicks by item index ("i<index>"), malloc'd */
    /* e2e_topic_truth only: valid messages that repeat an earlier one, and
     * the generated lines the log does not hold */
    uint64_t repeats, absent;
} e2e_truth;
/* Every line of the generator with options o written to path, one a line. */
void e2e_gen_file(const char *path, const rc_gen_opts *o);
/* The generator of those streams (caller rc_gen_destroys); fails the test
 * when it cannot be created. */
rc_gen *e2e_gen_open(uint64_t seed, uint64_t events, double invalid);
void e2e_gen_truth(uint64_t seed, uint64_t events, double invalid, e2e_truth *t);
/* Reads every partition of topic on brokers from its log start to its end
 * (assigned, no group join), calling on_msg(ud, m) for each message, in
 * offset order within a partition. Fails the test on a gap between offsets,
 * a consumer error, or an end not reached within the patience (scaled).
 * Returns how many messages the partitions' log starts leave out (deleted by
 * retention). */
uint64_t e2e_topic_read(const char *brokers, const char *topic, int partitions,
                        void (*on_msg)(void *ud, const rd_kafka_message_t *m), void *ud);
/* The truth of what a topic holds: the messages of every partition (from
 * its log start to its end) matched against the generator's lines (seed,
 * events, invalid), each counted as often as the log holds it: valid and
 * invalid count messages, repeats the valid messages that repeat an earlier
 * one, count the distinct valid lines by item (what a model trains on). A
 * repeat is the producer's own retry: librdkafka 2.0.2's mock cluster drops
 * a retried batch only for transactional producers (rd_kafka_mock.c,
 * rd_kafka_mock_validate_records), so an idempotent producer whose broker
 * went down mid-request can write a batch twice. Fails the test on a message
 * that is not a generated line. A generated line the log lacks is counted in
 * absent and shown with its neighbours on stderr: the caller decides (a
 * topic recalld writes must hold every line; see e2e_gen_topic_checked). */
void e2e_topic_truth(const char *brokers, const char *topic, int partitions, uint64_t seed,
                     uint64_t events, double invalid, e2e_truth *t);
/* For the topic recalld-gen wrote (events lines): the checks of the fault
 * tests compare recalld with what the log holds, so a line lost between
 * the producer and the broker is not recalld's loss. Prints each such loss
 * and fails the test when more than 1% of the lines are absent (a broken
 * generator, not a lost batch). Seen once: the CI of stop 38 lost a line
 * recalld-gen had a delivery report for (librdkafka 2.0.2's idempotent
 * producer against its mock cluster, which takes no part in recalld's
 * reading); not reproduced in about 150 runs since. */
void e2e_gen_topic_checked(const e2e_truth *t, uint64_t events);
/* recalld-gen producing to `brokers` (topic clicks) in the background at `rate`
 * events/s (0 = unpaced); e2e_gen_wait returns its exit status. */
/* The newest checkpoint under data (the daemon's default dim, 64) into *t and
 * *m (caller frees both); fails the test when it cannot be read. */
void e2e_checkpoint_open(const char *data, rc_table **t, rc_checkpoint_meta *m);
/* Adds the clicks of each generated item ("i<index>") in the newest
 * checkpoint under data into sum[E2E_GEN_ITEMS]; returns its applied counter. */
uint64_t e2e_checkpoint_add_counts(const char *data, uint32_t *sum);
/* sum[E2E_GEN_ITEMS] is exactly the generator's clicks per item. */
void e2e_assert_counts(const e2e_truth *tr, const uint32_t *sum);
pid_t e2e_gen_start(const char *brokers, uint64_t seed, uint64_t events, double invalid,
                    double rate);
int e2e_gen_wait(pid_t pid);
/* Waits (<= timeout_ms, scaled) until events.applied + events.invalid >= total;
 * returns the last stats. */
json_t *e2e_wait_done(const char *sock, uint64_t total, int timeout_ms);
void e2e_write_file(const char *path, const char *text);
/* The whole file as a NUL-terminated string (malloc'd); fails the test when unreadable. */
char *e2e_read_file(const char *path);
long long e2e_now_ms(void);

/* SIGTERM, wait for exit; returns the exit status (or -1 on signal). */
int e2e_stop(e2e_daemon *d);

/* One request line -> parsed reply (caller json_decref). Aborts on I/O error. */
json_t *e2e_request(const char *sock, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Raw: sends bytes, returns the reply line (malloc'd) or NULL on EOF/timeout. */
char *e2e_raw(const char *sock, const char *bytes, size_t n, int timeout_ms);

/* text parsed as JSON (caller json_decref); fails the test, showing the
 * text, when it is not JSON. */
json_t *e2e_json(const char *text);

/* Integer at a dotted path of a JSON object ("events.applied"), or -1. */
long long e2e_int(json_t *o, const char *path);

/* ms times RC_TEST_TIME_SCALE (a factor >= 1 from the environment, default 1):
 * the limit of a wait for the daemon's progress, longer for slow builds
 * (deploy/test.sh sets it for the ThreadSanitizer pass). The waits below and
 * e2e_start's health wait are scaled. Never past the case's own alarm (the
 * runner's RC_TEST_TIMEOUT): a wait ends at least 15 s before it, so a wait
 * that does not end fails with its own message instead of a bare timeout. */
long long e2e_scaled_ms(long long ms);

/* Waits (<= timeout_ms, scaled) until stats events.consumed >= n; returns the stats. */
json_t *e2e_wait_consumed(const char *sock, long long n, int timeout_ms);

/* Waits (scaled) until the trainer owes no replays (train.replay_*) and the
 * index has nothing pending: with no new events, the model no longer moves. */
void e2e_wait_model_still(const char *sock);

/* Runs a command line with /bin/sh; returns exit status; output to *out (malloc'd). */
int e2e_sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Produces the "key<TAB>json" lines of file `path` to d's topic "clicks" with
 * kcat (one process, one flush); fails the test when kcat fails. */
void e2e_kcat(const e2e_daemon *d, const char *path);

/* ---- in process: the engine and the request handler without the daemon ---- */

/* An engine without loop or Kafka (every call applies at once); fails the
 * test when it cannot be created. Caller frees with rc_engine_destroy. */
rc_engine *e2e_engine_offline(const rc_config *c);
/* An engine with its decoder and trainer threads: initialises *loop and
 * creates the engine on it (done(ud, ...) on the loop thread, may be NULL);
 * fails the test when either fails. Close with e2e_engine_threaded_close. */
rc_engine *e2e_engine_threaded(const rc_config *c, uv_loop_t *loop, rc_engine_done_cb done,
                               void *ud);
/* Destroys e, runs its loop until every handle is closed and closes the loop. */
void e2e_engine_threaded_close(rc_engine *e, uv_loop_t *loop);
/* Runs loop without blocking (2 ms naps between rounds) until cond(ud) holds;
 * fails the test naming what after timeout_ms (scaled). */
void e2e_loop_until(uv_loop_t *loop, int (*cond)(void *ud), void *ud, int timeout_ms,
                    const char *what);
/* rc_engine_apply_click with C strings; fails the test unless it is applied. */
void e2e_engine_click(rc_engine *e, const char *user, const char *item, const char *city,
                      const char *cate, int64_t ts);
/* The item id of row `row` of e's table, NUL-terminated (a buffer of the
 * calling thread, overwritten by the next call). */
const char *e2e_engine_item(rc_engine *e, uint32_t row);
/* rc_engine_stats_json as a JSON object (caller decrefs); fails on bad JSON. */
json_t *e2e_engine_stats(rc_engine *e);
/* One request line through rc_api_handle (what a socket worker runs; a is an
 * rc_api), the reply parsed (caller decrefs); fails when it is not JSON. */
json_t *e2e_api(void *a, const char *req);

#endif
