/* recalld — near-real-time item-embedding updater and recall server.
 * Kafka click events -> sessions -> incremental SGNS -> live FAISS index ->
 * newline-delimited JSON recall over a Unix socket. See README.md. */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "recalld/api.h"
#include "recalld/bounds.h"
#include "recalld/cli.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/cpus.h"
#include "recalld/consumer.h"
#include "recalld/engine.h"
#include "recalld/log.h"
#include "recalld/metrics.h"
#include "recalld/server.h"
#include "recalld/tower.h"
#include "recalld/repart.h"
#include "recalld/srcpos.h"
#include "recalld/vboot.h"
#include "recalld/vecpub.h"

typedef struct daemon {
    rc_config cfg;
    uv_loop_t *loop;
    rc_engine *engine;
    rc_consumer *consumer;
    rc_server *server;
    rc_metrics *metrics;
    rc_metrics_checkpoint ckm; /* checkpoint figures for /metrics (written on the loop thread,
                                  read by the render worker; under ckm_mu) */
    rc_api api;
    uv_signal_t sigint, sigterm;
    uv_timer_t stats_timer;
    int paused, stopping, exit_code;
    int assigned_parts;
    /* checkpoints, shutdown, reload (see "checkpoints and commits") */
    uv_signal_t sighup;
    uv_timer_t ckpt_timer;
    int argc;
    char **argv;
    int ckpt;        /* data_dir set */
    int revoke_wait; /* a deferred revoke waits for a checkpoint */
    uint64_t revoke_ticket;
    int final_wait, final_rc; /* shutdown: the final checkpoint */
    uint64_t final_ticket;
    int server_closed, finished;
    int fatal; /* the consumer failed for good: exit 1 */
    char instance_id[RC_CONF_STR];
    /* roles (docs/DESIGN.md "Roles and replicas") */
    char vtopic[RC_CONF_STR];             /* <topic>.vectors */
    rc_vecpub *pub;                       /* trainer: the vector publisher */
    rc_consumer *vconsumer;               /* replica: reader of vtopic, no group */
    int vpaused;                          /* vconsumer waits for a free batch */
    uv_timer_t vtimer;                    /* replica: vector lag for the staleness */
    char replica_group[RC_CONF_STR + 64]; /* replica: its own click group */
    /* trainer shards (repartition.enabled): clicks -> <topic>.by-city */
    rc_repart *repart;                   /* the repartitioner, or NULL */
    rc_srcpos_seen *seen;                /* repeats of forwards: dropped before the engine */
    _Atomic uint64_t repeats_dropped;    /* written by the loop, read by stats workers */
    char bytopic[RC_CONF_STR + 16];      /* what the trainer consumes: <topic>.by-city */
    char repart_group[RC_CONF_STR + 16]; /* <group>.repartition */
    rc_vboot *vboot;                     /* new cities bootstrapped from vtopic, or NULL */
    char vboot_group[RC_CONF_STR + 16];  /* <group>.vboot: names its reader */
} daemon_t;

enum {
    O_CONFIG,
    O_SOCKET,
    O_BROKERS,
    O_TOPIC,
    O_GROUP,
    O_EMBEDDED,
    O_PARTS,
    O_DLQ_FILE,
    O_DIM,
    O_MODEL,
    O_DATA_DIR,
    O_LOG_LEVEL,
    O_METRICS_PORT,
    O_KAFKA,
    O_CHECK,
    O_ROLE
};

static const rc_cli_opt opts[] = {
    {"config", 0, RC_CLI_CALL, NULL, "FILE",
     "JSON config (see conf/recalld.json); default\n"
     "$RECALLD_CONFIG; given twice, the second file overrides the first",
     0, 0, O_CONFIG},
    {"socket", 0, RC_CLI_CALL, NULL, "PATH", "Unix socket to serve on (socket.path)", 0, 0,
     O_SOCKET},
    {"brokers", 0, RC_CLI_CALL, NULL, "LIST", "Kafka bootstrap servers (kafka.brokers)", 0, 0,
     O_BROKERS},
    {"topic", 0, RC_CLI_CALL, NULL, "NAME", "click topic (kafka.topic, default clicks)", 0, 0,
     O_TOPIC},
    {"group", 0, RC_CLI_CALL, NULL, "ID", "consumer group (kafka.group, default recalld)", 0, 0,
     O_GROUP},
    {"embedded-kafka", 0, RC_CLI_CALL, NULL, NULL,
     "start librdkafka's mock cluster in-process (demo, tests)", 0, 0, O_EMBEDDED},
    {"partitions", 0, RC_CLI_CALL, NULL, "N",
     "partitions of the embedded topic (kafka.embedded_partitions)", 0, 0, O_PARTS},
    {"dlq-file", 0, RC_CLI_CALL, NULL, "FILE", "dead letters to this file instead of <topic>.dlq",
     0, 0, O_DLQ_FILE},
    {"dim", 0, RC_CLI_CALL, NULL, "N", "embedding dimension (model.dim)", 0, 0, O_DIM},
    {"model", 0, RC_CLI_CALL, NULL, "FILE",
     "start from a model written by recalld-train; repeatable:\n"
     "a word2vec model (model.path) and/or a two-tower model\n"
     "(tower.model, served by \"mode\":\"two_tower\"); the kind\n"
     "is read from the file",
     0, 0, O_MODEL},
    {"data-dir", 0, RC_CLI_CALL, NULL, "DIR", "checkpoint directory (data_dir)", 0, 0, O_DATA_DIR},
    {"log-level", 0, RC_CLI_CALL, NULL, "LEVEL", "debug|info|warn|error|off (log.level)", 0, 0,
     O_LOG_LEVEL},
    {"metrics-port", 0, RC_CLI_CALL, NULL, "N",
     "Prometheus /metrics and /health over HTTP on\n"
     "metrics.bind (127.0.0.1) port N (metrics.port, 0 = off)",
     0, 0, O_METRICS_PORT},
    {"", 'X', RC_CLI_CALL, NULL, "KEY=VALUE",
     "librdkafka property (repeatable), over kafka.config:\n"
     "-X security.protocol=ssl -X ssl.ca.location=/etc/ca.pem",
     0, 0, O_KAFKA},
    {"check-config", 0, RC_CLI_CALL, NULL, NULL,
     "validate the configuration (librdkafka's included) and exit", 0, 0, O_CHECK},
    {"role", 0, RC_CLI_CALL, NULL, "ROLE",
     "all|trainer|replica (role, default all). all: consume,\n"
     "train, serve. trainer: the same, and publish vectors to\n"
     "<topic>.vectors; trainers repartition the clicks by city\n"
     "(<topic>.by-city) and share its partitions. replica:\n"
     "train nothing; serve from <topic>.vectors and the click\n"
     "topic's sessions in a group of its own; no checkpoints",
     0, 0, O_ROLE},
};

/* The key each flag sets (rc_config_set), by option id. */
static const char *const opt_key[] = {
    [O_SOCKET] = "socket.path",        [O_BROKERS] = "kafka.brokers",
    [O_TOPIC] = "kafka.topic",         [O_GROUP] = "kafka.group",
    [O_EMBEDDED] = "kafka.embedded",   [O_PARTS] = "kafka.embedded_partitions",
    [O_DLQ_FILE] = "kafka.dlq_file",   [O_DIM] = "model.dim",
    [O_DATA_DIR] = "data_dir",         [O_LOG_LEVEL] = "log.level",
    [O_METRICS_PORT] = "metrics.port", [O_ROLE] = "role",
};

static const char epilog[] =
    "Precedence: defaults < --config file < environment (RECALLD_BROKERS, RECALLD_TOPIC,\n"
    "RECALLD_GROUP, RECALLD_SOCKET, RECALLD_STATE_DIR, ...: docs/CONFIG.md) < flags.\n";

/* Two passes over argv: pass 1 loads the files, pass 2 applies the flags, so
 * the environment can go in between and flags win wherever they appear. */
#define MAX_CONFIG_FILES 16

struct args_pass {
    rc_config *cfg;
    int pass, check_only;
    const char *config[MAX_CONFIG_FILES]; /* --config files, in order (argv's) */
    int nconfig;
};

static int on_opt(void *ud, const rc_cli_opt *o, const char *v, char *eb, size_t el)
{
    struct args_pass *a = ud;
    char who[32];
    if ((o->id == O_CONFIG) != (a->pass == 1))
        return 0;
    snprintf(who, sizeof who, "--%s", o->name);
    switch (o->id) {
    case O_CONFIG:
        if (a->nconfig == MAX_CONFIG_FILES)
            return rc_err(eb, el, RC_EINVAL, "at most %d files", MAX_CONFIG_FILES);
        a->config[a->nconfig++] = v;
        return 0;
    case O_EMBEDDED:
        return rc_config_set(a->cfg, "kafka.embedded", "true", RC_CONF_CLI, who, eb, el);
    case O_MODEL: /* either kind: the file says which */
        return rc_config_set(a->cfg, rc_tower_probe(v) ? "tower.model" : "model.path", v,
                             RC_CONF_CLI, who, eb, el);
    case O_KAFKA:
        return rc_config_kafka_arg(a->cfg, v, RC_CONF_CLI, "-X", eb, el);
    case O_CHECK:
        a->check_only = 1;
        return 0;
    default:
        return rc_config_set(a->cfg, opt_key[o->id], v, RC_CONF_CLI, who, eb, el);
    }
}

/* Returns -1 to go on, else the exit status (help, version, usage error). */
static int parse_args(daemon_t *d, int argc, char **argv, int *check_only)
{
    char err[640];
    struct args_pass a = {.cfg = &d->cfg, .pass = 1};
    rc_cli_spec s = {.prog = "recalld",
                     .synopsis = "[options]",
                     .about = "Streaming item embeddings and recall over a Unix socket.",
                     .epilog = epilog,
                     .opts = opts,
                     .nopts = RC_ARRAY_LEN(opts),
                     .fn = on_opt,
                     .ud = &a};
    int argi, rc;
    rc_config_defaults(&d->cfg);
    if ((rc = rc_cli_args(&s, argc, argv, &argi)) >= 0)
        return rc;
    const char *env_file = getenv("RECALLD_CONFIG");
    if (!a.nconfig && env_file && *env_file)
        a.config[a.nconfig++] = env_file;
    for (int i = 0; i < a.nconfig; i++)
        if (rc_config_load(&d->cfg, a.config[i], err, sizeof err))
            goto bad;
    if (rc_config_env(&d->cfg, err, sizeof err))
        goto bad;
    a.pass = 2;
    if (rc_cli_args_parse(&s, argc, argv, &argi, err, sizeof err))
        goto bad;
    if (rc_config_validate(&d->cfg, err, sizeof err))
        goto bad;
    *check_only = a.check_only;
    return -1;
bad:
    fprintf(stderr, "recalld: %s\n", err);
    return 2;
}

/* ---- Kafka -> engine ---- */

static int on_batch(void *ud, const rc_kmsg *m, size_t n)
{
    daemon_t *d = ud;
    if (d->consumer) { /* a lag behind: the trainer leaves replay for later */
        rc_consumer_stats cs;
        rc_consumer_stats_get(d->consumer, &cs);
        rc_engine_set_backlog(d->engine, cs.lag > 0 ? (uint64_t)cs.lag : 0);
    }
    /* A replica's vector records go first (they are its model; clicks only
     * feed sessions): while they wait for a batch, clicks wait too. */
    rc_batch *b = d->vpaused ? NULL : rc_engine_batch_get(d->engine);
    if (!b) {
        d->paused = 1;
        return RC_EAGAIN;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t sp;
        int64_t so;
        if (d->seen && rc_srcpos_decode(m[i].header, m[i].header_len, &sp, &so) == 0 &&
            rc_srcpos_seen_check(d->seen, m[i].partition, sp, so)) {
            /* forwarded again by a repartitioner that took over */
            atomic_fetch_add_explicit(&d->repeats_dropped, 1, memory_order_relaxed);
            continue;
        }
        if (rc_engine_batch_add(b, m[i].payload, m[i].len, m[i].partition, m[i].offset)) {
            /* Batch full (consumer batch > engine batch): hand it over and go on. */
            rc_engine_submit(d->engine, b);
            while (!(b = rc_engine_batch_get(d->engine)))
                ; /* unreachable in practice: kafka.batch sizes both */
            rc_engine_batch_add(b, m[i].payload, m[i].len, m[i].partition, m[i].offset);
        }
    }
    rc_engine_count_consumed(d->engine, n);
    rc_engine_submit(d->engine, b);
    return 0;
}

/* Replica: records of <topic>.vectors, applied by the trainer thread. */
static int on_vec_batch(void *ud, const rc_kmsg *m, size_t n)
{
    daemon_t *d = ud;
    rc_consumer_stats cs;
    rc_consumer_stats_get(d->vconsumer, &cs);
    rc_engine_set_vector_lag(d->engine, cs.lag);
    rc_batch *b = rc_engine_batch_get(d->engine);
    if (!b) {
        d->vpaused = 1; /* until a batch is free for these records (see on_batch) */
        return RC_EAGAIN;
    }
    d->vpaused = 0;
    rc_engine_batch_set_vectors(b);
    for (size_t i = 0; i < n; i++) {
        if (rc_engine_batch_add(b, m[i].payload, m[i].len, m[i].partition, m[i].offset)) {
            rc_engine_submit(d->engine, b);
            while (!(b = rc_engine_batch_get(d->engine)))
                ; /* as on_batch */
            rc_engine_batch_set_vectors(b);
            rc_engine_batch_add(b, m[i].payload, m[i].len, m[i].partition, m[i].offset);
        }
    }
    rc_engine_submit(d->engine, b);
    return 0;
}

static void on_vtimer(uv_timer_t *t)
{
    daemon_t *d = t->data;
    rc_consumer_stats cs;
    if (!d->vconsumer)
        return;
    rc_consumer_stats_get(d->vconsumer, &cs);
    rc_engine_set_vector_lag(d->engine, cs.lag);
}

static void on_done(void *ud, const rc_invalid *inv, size_t n)
{
    daemon_t *d = ud;
    rc_vboot_feed(d->vboot);        /* a bootstrap waiting for a batch goes first */
    if (d->vpaused && d->vconsumer) /* its refused records are offered first */
        rc_consumer_resume(d->vconsumer);
    if (d->cfg.role == RC_ROLE_REPLICA) {
        /* The trainers dead-letter refused events; a replica only counts them.
         * It keeps no model to checkpoint: the click group's offsets follow
         * what was handed over, and a restart goes on from there with empty
         * sessions (as a trainer's restart does). */
        int32_t parts[1024];
        int64_t offs[1024];
        size_t np = d->consumer ? rc_consumer_positions(d->consumer, parts, offs, 1024) : 0;
        if (np)
            rc_consumer_store(d->consumer, parts, offs, RC_MIN(np, (size_t)1024));
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        rc_kmsg m = {.payload = inv[i].payload,
                     .len = inv[i].len,
                     .partition = inv[i].partition,
                     .offset = inv[i].offset,
                     .timestamp_ms = -1};
        rc_consumer_dead_letter(d->consumer, &m, rc_event_reason_name(inv[i].reason), inv[i].error);
    }
    if (d->paused && d->consumer) {
        d->paused = 0;
        rc_consumer_resume(d->consumer);
    }
}

/* ---- checkpoints and commits ----
 * Offsets reach Kafka only from a checkpoint result: what they cover is on
 * disk (rc_consumer_store; librdkafka commits them in the background). A
 * revoke is deferred by the consumer until a checkpoint that contains every
 * batch handed over so far is durable; its offsets are then stored and the
 * unassign commits them before the group hands the partitions over
 * (rc_consumer_release): the next owner starts exactly after the last event
 * this model applied. After a crash the restored checkpoint's offsets win
 * over the committed ones (they may be newer: the commit is asynchronous). */

/* The durable offsets of r for the partitions this consumer still owns. */
static size_t owned_offsets(daemon_t *d, const rc_engine_checkpoint_result *r, int32_t *parts,
                            int64_t *offs, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n && n < cap; i++) {
        if (!rc_consumer_owns(d->consumer, r->parts[i]))
            continue;
        parts[n] = r->parts[i];
        offs[n++] = r->offsets[i];
    }
    return n;
}

static void finish(daemon_t *d);

static pthread_mutex_t ckm_mu = PTHREAD_MUTEX_INITIALIZER;

/* What /metrics shows of checkpoints: an unchanged model is as durable as a
 * fresh write, so it renews the age too. */
static void note_checkpoint(daemon_t *d, const rc_engine_checkpoint_result *r)
{
    pthread_mutex_lock(&ckm_mu);
    if (r->rc) {
        d->ckm.failed++;
    } else {
        d->ckm.last_ok_wall_ms = rc_wall_ms();
        if (!r->unchanged) {
            d->ckm.written++;
            d->ckm.last_bytes = r->bytes;
            d->ckm.last_duration_s = (double)r->write_ns / 1e9;
            d->ckm.last_pause_s = (double)r->pause_ns / 1e9;
        }
    }
    pthread_mutex_unlock(&ckm_mu);
}

/* The render worker's copy of the checkpoint figures. */
static int checkpoint_metrics(void *arg, rc_metrics_checkpoint *out)
{
    daemon_t *d = arg;
    pthread_mutex_lock(&ckm_mu);
    *out = d->ckm;
    pthread_mutex_unlock(&ckm_mu);
    return 0;
}

static void on_checkpoint(void *ud, const rc_engine_checkpoint_result *r)
{
    daemon_t *d = ud;
    int32_t parts[4096];
    int64_t offs[4096];
    note_checkpoint(d, r);
    size_t n = r->rc == 0 && d->consumer ? owned_offsets(d, r, parts, offs, 4096) : 0;
    int released = 0;
    if (d->revoke_wait && r->covers >= d->revoke_ticket) {
        d->revoke_wait = 0;
        /* stores, then unassigns (which commits); RC_EINVAL: the revoke was not
         * deferred (assignment lost, closing) */
        released = rc_consumer_release(d->consumer, parts, offs, n) != RC_EINVAL;
    }
    if (!released && n)
        rc_consumer_store(d->consumer, parts, offs, n); /* committed by librdkafka */
    if (d->final_wait && r->covers >= d->final_ticket) {
        d->final_wait = 0;
        d->final_rc = r->rc;
        if (r->rc)
            rc_log_error("recalld",
                         "final checkpoint failed: a restart replays from the last "
                         "durable one",
                         "error=\"%s\"", r->error);
        else
            rc_log_info("recalld", "final checkpoint durable",
                        "seq=%llu applied=%llu "
                        "partitions=%zu committed=%zu",
                        (unsigned long long)r->seq, (unsigned long long)r->applied, r->n, n);
        finish(d);
    }
}

static void on_ckpt_timer(uv_timer_t *t)
{
    daemon_t *d = t->data;
    if (!d->stopping)
        rc_engine_checkpoint(d->engine, 0, NULL);
}

/* Revoked partitions: their last events must be durable and committed before
 * the consumer lets them go. */
static void revoke_checkpoint(daemon_t *d)
{
    uint64_t ticket;
    if (!d->ckpt || d->stopping || rc_engine_checkpoint(d->engine, 1, &ticket))
        return;
    d->revoke_ticket = d->revoke_wait ? RC_MAX(d->revoke_ticket, ticket) : ticket;
    d->revoke_wait = 1;
}

/* ---- SIGHUP: reload what can change safely ----
 * Reloaded: the keys of rc_config_reloadable (config.h), and the two-tower
 * model: tower.model is loaded again (in the background) when its path,
 * mtime or size changed. Everything else (sockets, Kafka, model shape, index
 * structure, data_dir) needs a restart: a change is logged as such and not
 * applied. An invalid file keeps the running config. */

static void on_stats_timer(uv_timer_t *t);

static void apply_reload(daemon_t *d, const rc_config *n)
{
    rc_config *c = &d->cfg;
    rc_config_copy_reloadable(c, n);
    rc_server_set_slice(d->server, c->request_slice_us);
    rc_log_set_level((enum rc_log_level)rc_log_level_parse(c->log_level));
    rc_log_set_json(strcmp(c->log_format, "json") == 0);
    rc_engine_reload(d->engine, c);
    uv_timer_stop(&d->stats_timer);
    if (c->stats_interval_ms)
        uv_timer_start(&d->stats_timer, on_stats_timer, c->stats_interval_ms, c->stats_interval_ms);
    uv_timer_stop(&d->ckpt_timer);
    if (d->ckpt && c->ckpt_interval_ms)
        uv_timer_start(&d->ckpt_timer, on_ckpt_timer, c->ckpt_interval_ms, c->ckpt_interval_ms);
}

static int parse_args(daemon_t *d, int argc, char **argv, int *check_only);

static void on_sighup(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;
    static daemon_t scratch; /* parse_args fills scratch.cfg only */
    const char *keys[128];
    char applied[1024] = "", restart[1024] = "";
    int check = 0;
    if (d->stopping)
        return;
    memset(&scratch, 0, sizeof scratch);
    if (parse_args(&scratch, d->argc, d->argv, &check) != -1) {
        rc_log_error("recalld", "config reload failed: the running configuration stays",
                     "signal=%d", signum);
        return;
    }
    if (!scratch.cfg.socket_path[0]) /* the default: resolved at start, unchanged */
        memcpy(scratch.cfg.socket_path, d->cfg.socket_path, sizeof d->cfg.socket_path);
    size_t n = rc_config_diff(&d->cfg, &scratch.cfg, keys, RC_ARRAY_LEN(keys));
    for (size_t i = 0; i < n && i < RC_ARRAY_LEN(keys); i++) {
        char *dst = rc_config_is_reloadable(keys[i]) ? applied : restart;
        size_t len = strlen(dst);
        snprintf(dst + len, sizeof applied - len, "%s%s", len ? "," : "", keys[i]);
    }
    apply_reload(d, &scratch.cfg);
    rc_log_info("recalld", "config reloaded", "changed=\"%s\" restart_needed=\"%s\"", applied,
                restart);
    /* A retrained tower model swaps in without a restart. */
    if (d->cfg.tower_model[0] && rc_engine_tower_file_changed(d->engine, d->cfg.tower_model)) {
        char err[512];
        if (rc_engine_tower_load_async(d->engine, d->cfg.tower_model, err, sizeof err))
            rc_log_warn("recalld", "tower model not reloaded", "error=\"%s\"", err);
        else
            rc_log_info("recalld", "tower model reloading", "path=%s", d->cfg.tower_model);
    }
    if (restart[0])
        rc_log_warn("recalld", "config changes that need a restart were not applied", "keys=\"%s\"",
                    restart);
}

/* Events deleted from the log before they were read: the model will never
 * see them. Counted (checkpointed), shown in stats, metrics and health. */
static void on_gap(void *ud, int32_t partition, int64_t from, int64_t to)
{
    daemon_t *d = ud;
    rc_engine_count_lost(d->engine, (uint64_t)(to - from));
}

static void on_signal(uv_signal_t *s, int signum);

/* The consumer stopped for good (e.g. fenced: another live instance uses this
 * group.instance.id): stop as on SIGTERM, exit 1. */
static void on_fatal(void *ud, const char *why)
{
    daemon_t *d = ud;
    rc_log_error("recalld", "Kafka consumer failed for good: shutting down", "error=\"%s\"", why);
    d->fatal = 1;
    if (!d->stopping)
        on_signal(&d->sigterm, SIGTERM);
}

static void health_warnings(void *arg, rc_buf *out)
{
    daemon_t *d = arg;
    rc_engine_counters ec;
    rc_consumer_stats st;
    char msg[256];
    int n = 0;
    rc_engine_counters_get(d->engine, &ec);
    rc_consumer_stats_get(d->consumer, &st);
    if (ec.lost) {
        if (st.last_gap_partition >= 0)
            snprintf(msg, sizeof msg,
                     "%llu events lost: deleted from Kafka before they were "
                     "read (last: partition %d offsets %lld-%lld)",
                     (unsigned long long)ec.lost, (int)st.last_gap_partition,
                     (long long)st.last_gap_from, (long long)st.last_gap_to - 1);
        else
            snprintf(msg, sizeof msg,
                     "%llu events lost: deleted from Kafka before they were "
                     "read",
                     (unsigned long long)ec.lost);
        rc_buf_json_str(out, msg, strlen(msg));
        n++;
    }
    if (d->server) { /* socket limits hit in the last minute */
        rc_server_stats ss;
        rc_server_stats_get(d->server, &ss);
        if (ss.outbuf_total_full_ms && rc_now_ns() / 1000000u - ss.outbuf_total_full_ms < 60000) {
            snprintf(msg, sizeof msg,
                     "socket.max_outbuf_total (%llu bytes) reached: %llu "
                     "clients that did not read their replies dropped",
                     (unsigned long long)ss.max_outbuf_total,
                     (unsigned long long)ss.outbuf_total_dropped);
            if (n++)
                rc_buf_puts(out, ",");
            rc_buf_json_str(out, msg, strlen(msg));
        }
    }
    if (d->vboot) {
        rc_vboot_stats vs;
        rc_vboot_stats_get(d->vboot, &vs);
        if (vs.lost) {
            snprintf(msg, sizeof msg,
                     "%llu vector records lost: deleted from %.100s before a bootstrap read them "
                     "(their items start cold)",
                     (unsigned long long)vs.lost, d->vtopic);
            if (n++)
                rc_buf_puts(out, ",");
            rc_buf_json_str(out, msg, strlen(msg));
        }
    }
    if (st.lookups_failed) {
        snprintf(msg, sizeof msg,
                 "%llu committed-offset look-ups failed: losses at the start "
                 "of those partitions could go unnoticed",
                 (unsigned long long)st.lookups_failed);
        if (n++)
            rc_buf_puts(out, ",");
        rc_buf_json_str(out, msg, strlen(msg));
    }
    rc_bounds_warnings(d->engine, &st, out, n);
}

/* The socket's figures inside the stats' "server" object. */
static void socket_stats(void *arg, rc_buf *out)
{
    daemon_t *d = arg;
    rc_server_stats ss = {0};
    if (d->server)
        rc_server_stats_get(d->server, &ss);
    rc_buf_printf(out,
                  "\"clients\":%llu,\"accepted\":%llu,\"refused_max_clients\":%llu,"
                  "\"refused_uid\":%llu,\"lines_too_long\":%llu,\"idle_closed\":%llu,"
                  "\"request_timeouts\":%llu,\"evicted_idle\":%llu,\"probes\":%llu,"
                  "\"fast_requests\":%llu,\"slow_dropped\":%llu,"
                  "\"outbuf_total_dropped\":%llu,\"queued_bytes\":%llu,"
                  "\"max_outbuf_total\":%llu,\"inflight\":%llu,\"slice_us\":%u,"
                  "\"loop_slice_us\":%llu,\"worker_slice_us\":%llu",
                  (unsigned long long)ss.clients, (unsigned long long)ss.accepted,
                  (unsigned long long)ss.refused_max, (unsigned long long)ss.refused_uid,
                  (unsigned long long)ss.too_long, (unsigned long long)ss.idle_closed,
                  (unsigned long long)ss.request_timeouts, (unsigned long long)ss.evicted_idle,
                  (unsigned long long)ss.probes, (unsigned long long)ss.fast_requests,
                  (unsigned long long)ss.slow_dropped, (unsigned long long)ss.outbuf_total_dropped,
                  (unsigned long long)ss.queued_bytes, (unsigned long long)ss.max_outbuf_total,
                  (unsigned long long)ss.inflight, ss.slice_us,
                  (unsigned long long)ss.loop_slice_us, (unsigned long long)ss.worker_slice_us);
}

static void on_rebalance(void *ud, int assigned, const int32_t *parts, size_t n)
{
    daemon_t *d = ud;
    d->assigned_parts += assigned ? (int)n : -(int)n;
    if (d->assigned_parts < 0)
        d->assigned_parts = 0;
    atomic_store(&d->api.assigned, d->assigned_parts > 0);
    rc_log_info("recalld", assigned ? "partitions assigned" : "partitions revoked",
                "count=%zu total=%d", n, d->assigned_parts);
    for (size_t i = 0; i < n; i++) /* a new tenure of the partition: no history */
        rc_srcpos_seen_forget(d->seen, parts[i]);
    if (!assigned)
        revoke_checkpoint(d);
    if (!d->vboot || !n)
        return;
    if (!assigned) {
        rc_vboot_rebalance(d->vboot, 0, parts, n);
        return;
    }
    /* Partitions this trainer has no position for (none of its checkpoint's,
     * none read in this tenure): their cities come warm from the vector topic
     * before their clicks. */
    int32_t *np = malloc(n * sizeof *np), pp[4096];
    int64_t po[4096];
    size_t npos = RC_MIN(rc_consumer_positions(d->consumer, pp, po, 4096), (size_t)4096), nn = 0;
    for (size_t i = 0; np && i < n; i++) {
        size_t j = 0;
        while (j < npos && pp[j] != parts[i])
            j++;
        if (j == npos)
            np[nn++] = parts[i];
    }
    if (nn)
        rc_vboot_rebalance(d->vboot, 1, np, nn);
    free(np);
}

/* The role, and the vector topic as this role sees it: the publisher's
 * counters (trainer), or the reader's (replica: lag, lost to retention). */
static void vector_stats(daemon_t *d, rc_buf *out)
{
    rc_buf_printf(out, ",\"role\":\"%s\"", rc_role_names[d->cfg.role]);
    if (d->pub) {
        rc_buf_puts(out, ",\"vectors\":{");
        rc_vecpub_stats_json(d->pub, out);
        if (d->vboot) {
            rc_buf_puts(out, ",\"bootstrap\":{");
            rc_vboot_stats_json(d->vboot, out);
            rc_buf_puts(out, "}");
        }
        rc_buf_puts(out, "}");
    } else if (d->vconsumer) {
        rc_consumer_stats st;
        rc_consumer_stats_get(d->vconsumer, &st);
        rc_buf_puts(out, ",\"vectors\":{\"topic\":");
        rc_buf_json_str(out, d->vtopic, strlen(d->vtopic));
        rc_buf_printf(out,
                      ",\"assigned\":%d,\"messages\":%llu,\"bytes\":%llu,\"lag\":%lld,"
                      "\"lost\":%llu,\"offset_gaps\":%llu,\"errors\":%llu,\"last_error\":",
                      st.assigned, (unsigned long long)st.messages, (unsigned long long)st.bytes,
                      (long long)st.lag, (unsigned long long)st.lost,
                      (unsigned long long)st.offset_gaps, (unsigned long long)st.errors);
        rc_buf_json_str(out, st.last_error, strlen(st.last_error));
        rc_buf_puts(out, "}");
    }
}

static void kafka_stats(void *arg, rc_buf *out)
{
    daemon_t *d = arg;
    rc_consumer_stats st;
    rc_consumer_stats_get(d->consumer, &st);
    rc_buf_puts(out, "\"bootstrap\":");
    const char *bs = rc_consumer_bootstrap(d->consumer);
    rc_buf_json_str(out, bs ? bs : "", bs ? strlen(bs) : 0);
    rc_buf_printf(out,
                  ",\"topic\":\"%s\",\"group\":\"%s\",\"messages\":%llu,\"bytes\":%llu,"
                  "\"assigned\":%d,\"lag\":%lld,\"dead_letters\":%llu,"
                  "\"dead_letter_errors\":%llu,\"errors\":%llu,\"paused_batches\":%llu",
                  d->bytopic[0] ? d->bytopic : d->cfg.topic,
                  d->replica_group[0] ? d->replica_group : d->cfg.group,
                  (unsigned long long)st.messages, (unsigned long long)st.bytes, st.assigned,
                  (long long)st.lag, (unsigned long long)st.dead_letters,
                  (unsigned long long)st.dead_letter_errors, (unsigned long long)st.errors,
                  (unsigned long long)st.refused_batches);
    rc_buf_printf(out, ",\"dead_letters_dropped\":%llu,\"dlq_rotations\":%llu",
                  (unsigned long long)st.dead_letters_dropped,
                  (unsigned long long)st.dlq_rotations);
    rc_buf_printf(out,
                  ",\"commits\":%llu,\"commit_errors\":%llu,\"rebalances\":%llu,"
                  "\"revoke_pending\":%s,\"skipped_applied\":%llu,\"last_error\":",
                  (unsigned long long)st.commits, (unsigned long long)st.commit_errors,
                  (unsigned long long)st.rebalances, st.revoke_pending ? "true" : "false",
                  (unsigned long long)st.skipped_applied);
    rc_buf_json_str(out, st.last_error, strlen(st.last_error));
    rc_buf_printf(out,
                  ",\"lost\":%llu,\"offset_gaps\":%llu,\"lookups_failed\":%llu,"
                  "\"stale_offsets\":%llu,\"lost_assignments\":%llu,"
                  "\"fatal\":%s,\"instance_id\":",
                  (unsigned long long)st.lost, (unsigned long long)st.offset_gaps,
                  (unsigned long long)st.lookups_failed, (unsigned long long)st.stale_offsets,
                  (unsigned long long)st.lost_assignments, st.fatal ? "true" : "false");
    if (d->instance_id[0])
        rc_buf_json_str(out, d->instance_id, strlen(d->instance_id));
    else
        rc_buf_puts(out, "null");
    if (st.last_gap_partition >= 0)
        rc_buf_printf(out, ",\"last_gap\":{\"partition\":%d,\"from\":%lld,\"to\":%lld}",
                      (int)st.last_gap_partition, (long long)st.last_gap_from,
                      (long long)st.last_gap_to);
    /* The assigned partitions: where reading goes on, and the lag behind the
     * high watermark (-1 unknown). Bounded: the first 1024. */
    rc_consumer_part parts[1024];
    size_t n = rc_consumer_partitions(d->consumer, parts, RC_ARRAY_LEN(parts));
    rc_buf_puts(out, ",\"partitions\":[");
    for (size_t i = 0; i < n && i < RC_ARRAY_LEN(parts); i++)
        rc_buf_printf(out, "%s{\"partition\":%d,\"next\":%lld,\"lag\":%lld}", i ? "," : "",
                      (int)parts[i].partition, (long long)parts[i].next, (long long)parts[i].lag);
    rc_buf_puts(out, "]");
    if (d->repart) {
        rc_buf_puts(out, ",\"repartition\":{");
        rc_repart_stats_json(d->repart, out);
        rc_buf_printf(
            out, ",\"repeats_dropped\":%llu}",
            (unsigned long long)atomic_load_explicit(&d->repeats_dropped, memory_order_relaxed));
    }
    vector_stats(d, out);
}

/* ---- lifecycle ---- */

static void on_stats_timer(uv_timer_t *t)
{
    daemon_t *d = t->data;
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_engine_stats_json(d->engine, &b);
    rc_log_info("recalld", "stats", "json={%s}", b.data ? b.data : "");
    rc_buf_free(&b);
}

static void close_handles(daemon_t *d)
{
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
    uv_close((uv_handle_t *)&d->stats_timer, NULL);
    uv_close((uv_handle_t *)&d->ckpt_timer, NULL);
    uv_close((uv_handle_t *)&d->vtimer, NULL);
}

/* The batches handed over are trained (and their rows handed to the
 * publisher); the sink is removed, and what is marked goes out (5 s at most)
 * before the table is freed. */
static void stop_publisher(daemon_t *d)
{
    if (!d->pub)
        return;
    if (d->engine) {
        rc_engine_sync(d->engine);
        rc_engine_set_vector_sink(d->engine, NULL, NULL);
    }
    rc_vecpub_stop(d->pub, 5000);
    d->pub = NULL;
}

/* Shutdown, last step: once requests are drained and the final checkpoint is
 * durable (and its offsets committed: rd_kafka_consumer_close waits for the
 * commit in flight), close Kafka, stop the pipeline, close the handles. */
/* A bound on closing the Kafka consumers at shutdown. librdkafka 2.0.2 can
 * block for good in rd_kafka_assign() (or rd_kafka_rebalance_protocol())
 * called from the rebalance callback that rd_kafka_consumer_close() serves
 * (upstream issues 4041 and 4884; seen once here, after the group had
 * dropped a starved member). By then the final checkpoint is durable, and a
 * restart takes its positions from it, so nothing is applied twice whether
 * or not the close got to commit: the watchdog logs and exits with the exit
 * code the daemon would have had. */
#define CLOSE_WATCHDOG_S 60

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int exit_code;
} close_wd = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void *close_watchdog(void *arg)
{
    (void)arg;
    uint64_t until = rc_now_ns() + CLOSE_WATCHDOG_S * 1000000000ull;
    pthread_mutex_lock(&close_wd.mu);
    int rc = 0;
    for (uint64_t now; !close_wd.done && rc != ETIMEDOUT && (now = rc_now_ns()) < until;)
        rc = rc_cond_wait_ns(&close_wd.cv, &close_wd.mu, until - now);
    int done = close_wd.done, code = close_wd.exit_code;
    pthread_mutex_unlock(&close_wd.mu);
    if (done)
        return NULL;
    rc_log_error("recalld",
                 "Kafka consumer close did not return: exiting without it (librdkafka 2.0.2 "
                 "can block in its rebalance callback during close, upstream issues 4041 and "
                 "4884); a restart resumes from the final checkpoint",
                 "waited_s=%d exit=%d", CLOSE_WATCHDOG_S, code);
    _exit(code);
}

static void finish(daemon_t *d)
{
    if (!d->server_closed || d->final_wait || d->finished)
        return;
    d->finished = 1;
    close_wd.exit_code = d->final_rc || d->fatal ? 1 : 0; /* before the thread starts */
    rc_cond_init_mono(&close_wd.cv);                      /* its wait: on the monotonic clock */
    pthread_t wd;
    int wd_ok = pthread_create(&wd, NULL, close_watchdog, NULL) == 0;
    if (!wd_ok)
        rc_log_warn("recalld", "no watchdog for the consumer close", NULL);
    rc_vboot_destroy(d->vboot); /* before the consumer it pauses and the engine it feeds */
    d->vboot = NULL;
    rc_repart_destroy(d->repart, 5000); /* forwards in flight first, then its offsets */
    d->repart = NULL;
    rc_consumer_destroy(d->consumer);
    d->consumer = NULL;
    rc_consumer_destroy(d->vconsumer);
    d->vconsumer = NULL;
    if (wd_ok) {
        pthread_mutex_lock(&close_wd.mu);
        close_wd.done = 1;
        pthread_cond_signal(&close_wd.cv);
        pthread_mutex_unlock(&close_wd.mu);
        pthread_join(wd, NULL);
    }
    stop_publisher(d);
    rc_srcpos_seen_free(d->seen);
    d->seen = NULL;
    rc_engine_destroy(d->engine);
    d->engine = NULL;
    close_handles(d);
    d->exit_code = d->final_rc || d->fatal ? 1 : 0;
    rc_log_info("recalld", "stopped", "exit=%d", d->exit_code);
}

static void on_server_closed(void *arg)
{
    daemon_t *d = arg;
    d->server = NULL;
    d->server_closed = 1;
    finish(d);
}

static void on_consumer_closed(rc_consumer *c, void *arg)
{
    rc_log_info("recalld", "consumer stopped: no more events handed over", NULL);
}

/* A /metrics page is rendered on a worker from the engine, the consumer and
 * the server: at shutdown the metrics listener closes first, and its close
 * callback (after any page in flight) starts the request drain, after which
 * the rest is freed (finish). */
static void on_metrics_closed(void *arg)
{
    daemon_t *d = arg;
    d->metrics = NULL;
    rc_server_close(d->server, 2000, on_server_closed, d);
}

/* SIGTERM/SIGINT: stop taking events, drain requests (2 s at most), let the
 * pipeline apply what it holds, write a final checkpoint that contains all of
 * it, commit its offsets, exit 0 (1 when the final checkpoint failed). A
 * second signal exits at once: a restart replays from the last checkpoint. */
static void on_signal(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;
    if (d->stopping) {
        rc_log_warn("recalld", "second signal: exiting now", "signal=%d", signum);
        _exit(1); /* not exit(): atexit handlers could wait on a worker stuck in a load */
    }
    d->stopping = 1;
    atomic_store(&d->api.stopping, 1);
    rc_engine_tower_cancel(d->engine); /* a reload_model request must not hold up the drain */
    rc_log_info("recalld", "shutting down: draining requests", "signal=%d", signum);
    uv_timer_stop(&d->stats_timer);
    uv_timer_stop(&d->ckpt_timer);
    uv_timer_stop(&d->vtimer);
    rc_vboot_stop(d->vboot); /* a bootstrap run stops reading and installing now */
    rc_consumer_close(d->vconsumer, NULL, NULL);
    rc_repart_close(d->repart);
    rc_consumer_close(d->consumer, on_consumer_closed, d);
    if (d->ckpt && rc_engine_checkpoint(d->engine, 1, &d->final_ticket) == 0)
        d->final_wait = 1;
    if (d->metrics)
        rc_metrics_close(d->metrics, on_metrics_closed, d);
    else
        rc_server_close(d->server, 2000, on_server_closed, d);
}

/* ---- metrics ---- */

static void render_metrics(void *ud, rc_buf *out)
{
    daemon_t *d = ud;
    rc_metrics_sources s = {.engine = d->engine,
                            .consumer = d->consumer,
                            .topic = d->cfg.topic,
                            .server = d->server,
                            .api = &d->api,
                            .metrics = d->metrics,
                            .checkpoint = d->ckpt ? checkpoint_metrics : NULL,
                            .checkpoint_arg = d};
    rc_metrics_render(&s, out);
}

static int metrics_ready(void *ud, char *why, size_t cap)
{
    daemon_t *d = ud;
    const char *w;
    int ok = rc_api_ready(&d->api, &w);
    if (!ok)
        snprintf(why, cap, "%s", w);
    return ok;
}

static int start_metrics(daemon_t *d, char *err, size_t errlen)
{
    const rc_config *c = &d->cfg;
    if (!c->metrics_port)
        return 0;
    rc_metrics_opts mo = {.bind = c->metrics_bind,
                          .port = (uint16_t)c->metrics_port,
                          .render = render_metrics,
                          .ready = metrics_ready,
                          .ud = d};
    return rc_metrics_start(d->loop, &mo, &d->metrics, err, errlen);
}

/* kafka.instance_id: "none" = dynamic membership; set = that id; "" = one
 * derived from this host and the data directory (a restarted daemon with
 * the same data dir is the same member: it gets its partitions back without
 * waiting for the dead one's session to expire), or none without a data dir. */
static void instance_id(daemon_t *d)
{
    const rc_config *c = &d->cfg;
    char host[256] = "", real[PATH_MAX];
    d->instance_id[0] = '\0';
    if (strcmp(c->instance_id, "none") == 0)
        return;
    if (c->instance_id[0]) {
        snprintf(d->instance_id, sizeof d->instance_id, "%s", c->instance_id);
        return;
    }
    if (!c->data_dir[0] || c->embedded)
        return;
    gethostname(host, sizeof host - 1);
    const char *dir = realpath(c->data_dir, real) ? real : c->data_dir;
    uint32_t h = 2166136261u; /* FNV-1a of the directory */
    for (const char *p = dir; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    snprintf(d->instance_id, sizeof d->instance_id, "recalld-%.64s-%08x", host[0] ? host : "host",
             h);
}

/* A replica's click group: "<group>.replica.<host>-<hash of the socket
 * path>": its own (never the trainers'), stable across restarts of the same
 * replica, and distinct for two replicas of one host (they cannot share a
 * socket). */
static void replica_group(daemon_t *d)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = d->cfg.socket_path; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    snprintf(d->replica_group, sizeof d->replica_group, "%.255s.replica.%.64s-%08x", d->cfg.group,
             host[0] ? host : "host", h);
}

/* Trainer (or all with vectors.publish): the publisher, fed by the engine's
 * vector sink; a restored model is published whole at start. */
static int start_publisher(daemon_t *d, char *err, size_t errlen)
{
    const rc_config *c = &d->cfg;
    if (c->role == RC_ROLE_REPLICA || (c->role == RC_ROLE_ALL && !c->vectors_publish))
        return 0;
    const char *extra[RC_CONF_MAX_KAFKA_EXTRA * 2 + 1];
    for (uint32_t i = 0; i < c->nkafka_extra * 2; i++)
        extra[i] = c->kafka_extra[i];
    extra[c->nkafka_extra * 2] = NULL;
    rc_vecpub_opts po = {.brokers = rc_consumer_bootstrap(d->consumer),
                         .topic = d->vtopic,
                         .extra = extra,
                         .table = rc_engine_table(d->engine),
                         .max_rate = c->vectors_max_rate,
                         .interval_ms = c->vectors_interval_ms,
                         .max_pending = c->vectors_max_pending};
    if (rc_vecpub_start(&po, &d->pub, err, errlen))
        return 1;
    rc_vecpub_mark_all(d->pub, rc_table_size(rc_engine_table(d->engine)));
    rc_engine_set_vector_sink(d->engine, rc_vecpub_sink, d->pub);
    return 0;
}

/* Trainer shards: the repartitioner reads the click topic in group
 * <group>.repartition and forwards it to <topic>.by-city keyed by city; this
 * daemon's consumer reads that topic in group <group>, so the group assigns
 * cities to shards. brokers: the cluster's bootstrap list. */
static int start_repart(daemon_t *d, const char *brokers, char *err, size_t errlen)
{
    const rc_config *c = &d->cfg;
    const char *extra[RC_CONF_MAX_KAFKA_EXTRA * 2 + 1];
    for (uint32_t i = 0; i < c->nkafka_extra * 2; i++)
        extra[i] = c->kafka_extra[i];
    extra[c->nkafka_extra * 2] = NULL;
    rc_repart_opts ro = {.brokers = brokers,
                         .topic = c->topic,
                         .out_topic = d->bytopic,
                         .group = d->repart_group,
                         .batch = c->kafka_batch,
                         .max_inflight = c->repartition_max_inflight,
                         .topic_wait_ms = 10000,
                         .extra = extra,
                         .on_fatal = on_fatal,
                         .ud = d};
    return rc_repart_start(d->loop, &ro, &d->repart, err, errlen);
}

/* Trainer shards: by-city partitions assigned without a position are
 * bootstrapped from <topic>.vectors (vboot.h). Not when the consumer replays
 * the log from its start (the model is rebuilt from the clicks). */
static int start_vboot(daemon_t *d, int repartition, char *err, size_t errlen)
{
    const rc_config *c = &d->cfg;
    if (!repartition || !c->vectors_bootstrap || rc_engine_needs_replay(d->engine))
        return 0;
    static const char *extra[RC_CONF_MAX_KAFKA_EXTRA * 2 + 1];
    for (uint32_t i = 0; i < c->nkafka_extra * 2; i++)
        extra[i] = c->kafka_extra[i];
    extra[c->nkafka_extra * 2] = NULL;
    snprintf(d->vboot_group, sizeof d->vboot_group, "%.240s.vboot", c->group);
    rc_vboot_opts vo = {.loop = d->loop,
                        .brokers = rc_consumer_bootstrap(d->consumer),
                        .vtopic = d->vtopic,
                        .bytopic = d->bytopic,
                        .group = d->vboot_group,
                        .extra = extra,
                        .engine = d->engine,
                        .consumer = d->consumer,
                        .dim = c->dim,
                        .timeout_ms = c->vectors_bootstrap_timeout_ms,
                        .max_records = c->vectors_bootstrap_max_records};
    return rc_vboot_create(&vo, &d->vboot, err, errlen) != 0;
}

/* Replica: <topic>.vectors, every partition from the beginning, no group. */
static int start_vector_reader(daemon_t *d, char *err, size_t errlen)
{
    const rc_config *c = &d->cfg;
    if (c->role != RC_ROLE_REPLICA)
        return 0;
    const char *extra[RC_CONF_MAX_KAFKA_EXTRA * 2 + 1];
    for (uint32_t i = 0; i < c->nkafka_extra * 2; i++)
        extra[i] = c->kafka_extra[i];
    extra[c->nkafka_extra * 2] = NULL;
    rc_consumer_opts vo = {.brokers = rc_consumer_bootstrap(d->consumer),
                           .topic = d->vtopic,
                           .group = d->replica_group,
                           .batch = c->kafka_batch,
                           .extra = extra,
                           .on_batch = on_vec_batch,
                           .ud = d,
                           .assign_all = 1,
                           .on_fatal = on_fatal};
    if (rc_consumer_start(d->loop, &vo, &d->vconsumer, err, errlen))
        return 1;
    uv_timer_start(&d->vtimer, on_vtimer, 200, 200);
    return 0;
}

/* pipeline.background_cpus, as the engine planned it (rc_engine_cpus). */
typedef struct cpu_plan {
    int on; /* 0: nothing is pinned (the engine logs why, once) */
    cpu_set_t bg, rest;
} cpu_plan;

/* This (the loop) thread onto the background cores while it creates the
 * Kafka clients (kafka_side 1), so that librdkafka's threads, which fetch and
 * decode the stream's batches, inherit them and never take a request's core;
 * then onto the request path's cores (kafka_side 0), before the server
 * starts, so that the request workers inherit those. The engine's own
 * background threads move themselves (rc__engine_background). */
static void pin_loop(const cpu_plan *p, int kafka_side)
{
    char bgs[96], rs[96];
    if (!p->on)
        return;
    int r = pthread_setaffinity_np(pthread_self(), sizeof p->rest, kafka_side ? &p->bg : &p->rest);
    rc_cpus_format(&p->bg, bgs, sizeof bgs);
    rc_cpus_format(&p->rest, rs, sizeof rs);
    if (r)
        rc_log_warn("recalld",
                    kafka_side ? "librdkafka's threads keep the request path's cores"
                               : "the request path keeps its cores",
                    "error=\"%s\"", strerror(r));
    else if (!kafka_side)
        rc_log_info("recalld", "threads pinned (pipeline.background_cpus)",
                    "background_cpus=%s request_cpus=%s kafka_cpus=%s", bgs, rs, bgs);
}

static int start(daemon_t *d)
{
    char err[512];
    const rc_config *c = &d->cfg;
    uid_t uids[RC_CONF_MAX_UIDS];
    rc_log_set_level((enum rc_log_level)rc_log_level_parse(c->log_level));
    rc_log_set_json(strcmp(c->log_format, "json") == 0);
    rc_api_init(&d->api);
    snprintf(d->vtopic, sizeof d->vtopic, "%.240s.vectors", c->topic);
    int repartition = c->role == RC_ROLE_TRAINER && c->repartition_enabled;
    char dlq[RC_CONF_STR + 16];
    snprintf(dlq, sizeof dlq, "%.240s.dlq", c->topic);
    if (repartition) {
        snprintf(d->bytopic, sizeof d->bytopic, "%.240s.by-city", c->topic);
        snprintf(d->repart_group, sizeof d->repart_group, "%.240s.repartition", c->group);
    }
    if (!c->socket_path[0] &&
        rc_server_default_path(d->cfg.socket_path, sizeof d->cfg.socket_path, 1, err, sizeof err))
        goto fail;
    if (c->role == RC_ROLE_REPLICA) {
        if (c->data_dir[0])
            rc_log_warn("recalld",
                        "a replica checkpoints nothing (it rebuilds from the vector topic): "
                        "data_dir is not used",
                        "data_dir=%s", c->data_dir);
        d->cfg.data_dir[0] = '\0';
        replica_group(d);
    }
    if (rc_engine_create(c, d->loop, on_done, d, &d->engine, err, sizeof err))
        goto fail;
    cpu_plan cpus; /* the engine's plan, made from the full set before pin_loop moves us */
    cpus.on = rc_engine_cpus(d->engine, &cpus.bg, &cpus.rest);
    pin_loop(&cpus, 1);
    rc_engine_set_checkpoint_cb(d->engine, on_checkpoint, d);
    d->ckpt = c->data_dir[0] != '\0';
    /* Positions of the restored checkpoint: consumption resumes right after
     * the last event the model contains, whatever the group committed. */
    size_t nstart = rc_engine_restored_offsets(d->engine, NULL, NULL, 0);
    int32_t *sparts = calloc(nstart + 1, sizeof *sparts);
    int64_t *soffs = calloc(nstart + 1, sizeof *soffs);
    if (!sparts || !soffs) {
        free(sparts);
        free(soffs);
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    rc_engine_restored_offsets(d->engine, sparts, soffs, nstart);
    if (c->embedded && nstart) {
        /* The embedded cluster starts empty: offsets of an earlier one mean
         * nothing here (they would hide the new log's first events). */
        rc_log_warn("recalld",
                    "embedded Kafka starts empty: the checkpoint's offsets are not "
                    "used",
                    "partitions=%zu", nstart);
        nstart = 0;
    }
    instance_id(d);
    if (c->role == RC_ROLE_REPLICA)
        d->instance_id[0] = '\0'; /* a group of its own: static membership buys nothing */
    /* rc_engine_create restored the checkpoint (or loaded --model) and rebuilt
     * the index synchronously: the model is complete. */
    d->ckm =
        (rc_metrics_checkpoint){.last_ok_wall_ms = -1, .last_duration_s = -1, .last_pause_s = -1};
    atomic_store(&d->api.model_ready, 1);
    const char *extra[RC_CONF_MAX_KAFKA_EXTRA * 2 + 1];
    for (uint32_t i = 0; i < c->nkafka_extra * 2; i++)
        extra[i] = c->kafka_extra[i];
    extra[c->nkafka_extra * 2] = NULL;
    const char *embedded_topics[] = {c->topic, d->vtopic, NULL};
    if (repartition && !c->embedded && start_repart(d, c->brokers, err, sizeof err)) {
        free(sparts);
        free(soffs);
        goto fail;
    }
    if (repartition && !(d->seen = rc_srcpos_seen_new())) {
        free(sparts);
        free(soffs);
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    rc_consumer_opts co = {.brokers = c->brokers,
                           .topic = repartition ? d->bytopic : c->topic,
                           .group = d->replica_group[0] ? d->replica_group : c->group,
                           .embedded = c->embedded,
                           .embedded_partitions = (int)c->embedded_partitions,
                           .embedded_topics = repartition ? embedded_topics : NULL,
                           .header = repartition ? RC_SRCPOS_HEADER : NULL,
                           .batch = c->kafka_batch,
                           .dlq_topic = c->dlq_topic[0] ? c->dlq_topic : dlq,
                           .dlq_file = c->dlq_file[0] ? c->dlq_file : NULL,
                           .dlq_file_max_bytes = (uint64_t)c->dlq_file_max_mb << 20,
                           .extra = extra,
                           .on_batch = on_batch,
                           .on_rebalance = on_rebalance,
                           .ud = d,
                           .start_parts = sparts,
                           .start_offsets = soffs,
                           .nstart = nstart,
                           .defer_revoke = d->ckpt,
                           .instance_id = d->instance_id[0] ? d->instance_id : NULL,
                           .replay_from_start = rc_engine_needs_replay(d->engine),
                           .on_gap = on_gap,
                           .on_fatal = on_fatal};
    int crc = rc_consumer_start(d->loop, &co, &d->consumer, err, sizeof err);
    free(sparts);
    free(soffs);
    if (crc ||
        (repartition && c->embedded &&
         start_repart(d, rc_consumer_bootstrap(d->consumer), err, sizeof err)) ||
        start_publisher(d, err, sizeof err) || start_vector_reader(d, err, sizeof err) ||
        start_vboot(d, repartition, err, sizeof err))
        goto fail;
    pin_loop(&cpus, 0); /* the Kafka clients are up: their threads stay on the background cores */
    d->api.engine = d->engine;
    d->api.kafka_stats = kafka_stats;
    d->api.kafka_arg = d;
    d->api.warnings = health_warnings;
    d->api.socket_stats = socket_stats;
    d->api.socket_arg = d;
    rc_server_opts so = {.path = c->socket_path,
                         .mode = c->socket_mode,
                         .max_line = c->max_line,
                         .max_clients = c->max_clients,
                         .idle_timeout_ms = c->idle_timeout_ms,
                         .request_timeout_ms = c->request_timeout_ms,
                         .max_outbuf = c->max_outbuf,
                         .max_outbuf_total = c->max_outbuf_total,
                         .slice_us = c->request_slice_us,
                         .handler = rc_api_handle,
                         .fast = rc_api_fast,
                         .ud = &d->api};
    for (uint32_t i = 0; i < c->nallow_uids; i++)
        uids[i] = (uid_t)c->allow_uids[i];
    so.allow_uids = c->nallow_uids ? uids : NULL;
    so.nallow_uids = c->nallow_uids;
    if (rc_server_start(d->loop, &so, &d->server, err, sizeof err))
        goto fail;
    if (start_metrics(d, err, sizeof err))
        goto fail;
    rc_log_info("recalld", "ready",
                "socket=%s bootstrap=%s topic=%s group=%s instance=%s dim=%u role=%s",
                c->socket_path, rc_consumer_bootstrap(d->consumer), c->topic,
                d->replica_group[0] ? d->replica_group : c->group,
                d->instance_id[0] ? d->instance_id : "-", c->dim, rc_role_names[c->role]);
    return 0;
fail:
    rc_log_error("recalld", "cannot start", "error=\"%s\"", err);
    fprintf(stderr, "recalld: %s\n", err);
    return 1;
}

/* glibc's malloc for a daemon whose big buffers come and go (index lists that
 * grow, retrain and checkpoint copies, Kafka batches): blocks from 256 KiB up
 * are mapped and go back to the system when freed. By default the threshold
 * climbs to 32 MiB after the first such free, and every freed block under it
 * stays resident in an arena: ~120 MB of free heap at 200k items
 * (bench/memory.sh, docs/OPERATIONS.md "Memory budget"). glibc.malloc.*
 * tunables in GLIBC_TUNABLES win. */
static void malloc_setup(void)
{
#ifdef M_MMAP_THRESHOLD
    const char *t = getenv("GLIBC_TUNABLES");
    if (!t || !strstr(t, "glibc.malloc.mmap_threshold"))
        mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
}

int main(int argc, char **argv)
{
    static daemon_t d;
    malloc_setup();
    int check_only = 0;
    int rc = parse_args(&d, argc, argv, &check_only);
    if (rc >= 0)
        return rc;
    if (check_only) {
        char err[640];
        if (rc_config_kafka_check(&d.cfg, err, sizeof err)) {
            fprintf(stderr, "recalld: %s\n", err);
            return 2;
        }
        printf("recalld: configuration ok\n");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN); /* a file size limit fails the write (EFBIG), not the process */
    d.argc = argc;
    d.argv = argv;
    d.loop = uv_default_loop();
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sighup);
    uv_timer_init(d.loop, &d.stats_timer);
    uv_timer_init(d.loop, &d.ckpt_timer);
    uv_timer_init(d.loop, &d.vtimer);
    d.vtimer.data = &d;
    d.sigint.data = d.sigterm.data = d.sighup.data = d.stats_timer.data = d.ckpt_timer.data = &d;
    if (start(&d)) {
        if (d.server)
            rc_server_close(d.server, 0, NULL, NULL);
        rc_metrics_close(d.metrics, NULL, NULL);
        rc_consumer_destroy(d.consumer);
        rc_consumer_destroy(d.vconsumer);
        stop_publisher(&d);
        rc_engine_destroy(d.engine);
        close_handles(&d);
        uv_run(d.loop, UV_RUN_DEFAULT);
        return 1;
    }
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sighup, on_sighup, SIGHUP);
    if (d.ckpt && d.cfg.ckpt_interval_ms)
        uv_timer_start(&d.ckpt_timer, on_ckpt_timer, d.cfg.ckpt_interval_ms,
                       d.cfg.ckpt_interval_ms);
    if (d.cfg.stats_interval_ms)
        uv_timer_start(&d.stats_timer, on_stats_timer, d.cfg.stats_interval_ms,
                       d.cfg.stats_interval_ms);
    uv_run(d.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(d.loop);
    if (rc)
        rc_log_warn("recalld", "loop closed with open handles", "rc=%d", rc);
    return d.exit_code;
}
