#include "recalld/config.h"
#include "recalld/index.h"
#include "recalld/replayctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/cpus.h"
#include "recalld/log.h"

enum ktype {
    K_SCOPE,
    K_STR,
    K_U32,
    K_U64,
    K_I64,
    K_F32,
    K_BOOL,
    K_MODE,
    K_LEVEL,
    K_FORMAT,
    K_SGMODE,
    K_UIDS,
    K_STORAGE,
    K_ROLE,
    K_BGPOLICY,
    K_RMODE
};

const char *const rc_recall_mode_names[RC_RECALL_NMODES] = {"avg", "multi_category", "two_tower",
                                                            "itemknn", "fused"};

int rc_recall_mode_parse(const char *s)
{
    for (int i = 0; s && i < RC_RECALL_NMODES; i++)
        if (strcmp(s, rc_recall_mode_names[i]) == 0)
            return i;
    return -1;
}

struct key {
    const char *name; /* "section.key" */
    enum ktype type;
    size_t off;
    double min, max; /* numeric range (inclusive) */
};

const char *const rc_role_names[3] = {"all", "trainer", "replica"};

#define F(field) offsetof(rc_config, field)
static const struct key keys[] = {
    {"socket.path", K_STR, F(socket_path), 0, 107},
    {"socket.mode", K_MODE, F(socket_mode), 0, 0777},
    {"socket.max_line", K_U32, F(max_line), 256, 16777216},
    {"socket.max_clients", K_U32, F(max_clients), 1, 1000000},
    {"socket.idle_timeout_ms", K_U32, F(idle_timeout_ms), 100, 86400000},
    {"socket.max_outbuf", K_U64, F(max_outbuf), 4096, 1e12},
    {"socket.max_outbuf_total", K_U64, F(max_outbuf_total), 65536, 1e12},
    {"socket.request_timeout_ms", K_U32, F(request_timeout_ms), 100, 86400000},
    {"socket.allow_uids", K_UIDS, F(allow_uids), 0, 4294967294.0},
    {"socket.request_slice_us", K_U32, F(request_slice_us), 0, 100000},
    {"metrics.port", K_U32, F(metrics_port), 0, 65535},
    {"metrics.bind", K_STR, F(metrics_bind), 1, 45},
    {"kafka.brokers", K_STR, F(brokers), 0, RC_CONF_STR - 1},
    {"kafka.topic", K_STR, F(topic), 1, 249},
    {"kafka.group", K_STR, F(group), 1, 255},
    {"kafka.embedded", K_BOOL, F(embedded), 0, 1},
    {"kafka.embedded_partitions", K_U32, F(embedded_partitions), 1, 1024},
    {"kafka.batch", K_U32, F(kafka_batch), 1, 100000},
    {"kafka.dlq_topic", K_STR, F(dlq_topic), 0, 249},
    {"kafka.dlq_file", K_STR, F(dlq_file), 0, RC_CONF_STR - 1},
    {"kafka.instance_id", K_STR, F(instance_id), 0, 249},
    {"kafka.dlq_file_max_mb", K_U32, F(dlq_file_max_mb), 0, 1e6},
    {"events.max_future_ms", K_I64, F(max_future_ms), 0, 3.1536e11},
    {"events.max_past_ms", K_I64, F(max_past_ms), 0, 3.1536e12},
    {"sessions.max_users", K_U32, F(max_users), 1, 4e9},
    {"sessions.history", K_U32, F(history), 1, 255},
    {"sessions.gap_ms", K_I64, F(gap_ms), 1000, 864e8},
    {"sessions.ttl_ms", K_I64, F(ttl_ms), 1000, 3.1536e11},
    {"model.dim", K_U32, F(dim), 8, 1024},
    {"model.max_items", K_U32, F(max_items), 16, 4e9},
    {"model.mode", K_SGMODE, F(cbow), 0, 1},
    {"model.window", K_U32, F(window), 1, 64},
    {"model.negatives", K_U32, F(negatives), 1, 64},
    {"model.hard_share", K_F32, F(hard_share), 0, 1},
    {"model.lr", K_F32, F(lr), 1e-6, 1},
    {"model.subsample", K_F32, F(subsample), 0, 1},
    {"model.power", K_F32, F(power), 0, 1},
    {"model.min_city_items", K_U32, F(min_city_items), 1, 1e9},
    {"model.seed", K_U64, F(seed), 0, 1.8e19},
    {"model.trainer_threads", K_U32, F(trainer_threads), 0, 64},
    {"model.path", K_STR, F(model_path), 0, RC_CONF_STR - 1},
    {"model.dir", K_STR, F(model_dir), 0, RC_CONF_STR - 1},
    {"train.replay_clicks", K_U32, F(replay_clicks), 0, 67108864},
    {"train.replay_ratio", K_F32, F(replay_ratio), 0, 1000},
    {"train.replay_per_hour", K_F32, F(replay_per_hour), 0, 1e7},
    {"train.replay_max_clicks", K_U32, F(replay_max_clicks), 0, 4e9},
    {"train.lr_decay_clicks", K_F32, F(lr_decay_clicks), 0, 1e9},
    {"train.lr_min", K_F32, F(lr_min), 0, 1},
    {"train.replay_subsample", K_F32, F(replay_subsample), 0, 1},
    {"train.anchor", K_F32, F(anchor), 0, 1e6},
    {"train.anchor_fade_clicks", K_F32, F(anchor_fade_clicks), 0, 1e9},
    {"train.replay_adaptive", K_BOOL, F(replay_adaptive), 0, 1},
    {"train.replay_forget_on_install", K_BOOL, F(replay_forget), 0, 1},
    {"train.replay_ratio_min", K_F32, F(replay_ratio_min), 1, 1000},
    {"train.replay_ratio_max", K_F32, F(replay_ratio_max), 1, 1000},
    {"train.replay_probe_every", K_U32, F(replay_probe_every), 1, 1000000},
    {"train.replay_phase_clicks", K_U32, F(replay_phase_clicks), 1, 1000000},
    {"index.ivf_min", K_U32, F(ivf_min), 64, 1e9},
    {"index.nprobe", K_U32, F(nprobe), 1, 4096},
    {"index.batch", K_U32, F(index_batch), 1, 1e6},
    {"index.flush_interval_ms", K_U32, F(flush_interval_ms), 1, 60000},
    {"index.drift", K_F32, F(drift), 0, 2},
    {"index.retrain_fit", K_F32, F(retrain_fit), 0, 100},
    {"index.overfetch", K_F32, F(overfetch), 1, 100},
    {"index.max_partitions", K_U32, F(max_partitions), 1, 65536},
    {"index.storage", K_STORAGE, F(index_storage), 0, 3},
    {"recall.window", K_U32, F(recall_window), 1, 255},
    {"recall.k_default", K_U32, F(k_default), 1, 100000},
    {"recall.k_max", K_U32, F(k_max), 1, 100000},
    {"recall.half_life_ms", K_I64, F(half_life_ms), 0, 3.1536e11},
    {"recall.past_session_weight", K_F32, F(past_session_weight), 0, 1},
    {"recall.popularity_weight", K_F32, F(popularity_weight), 0, 1},
    {"recall.multi_category_max", K_U32, F(mc_max_categories), 1, 64},
    {"recall.multi_category_min_quota", K_U32, F(mc_min_quota), 0, 1000},
    {"recall.multi_category_parallel", K_BOOL, F(mc_parallel), 0, 1},
    {"recall.max_batch_users", K_U32, F(max_batch_users), 1, 10000},
    {"recall.scope", K_SCOPE, F(recall_user_city), 0, 1},
    {"recall.mode", K_RMODE, F(recall_mode), 0, RC_RECALL_NMODES - 1},
    {"recall.max_k_users", K_U32, F(max_k_users), 1, 1e9},
    {"recall.max_exact_scan", K_U64, F(max_exact_scan), 1, 1e15},
    {"cooc.max_bytes", K_U64, F(cooc_max_bytes), 0, 1e12},
    {"cooc.neighbors", K_U32, F(cooc_neighbors), 1, 1000},
    {"cooc.window", K_U32, F(cooc_window), 1, 64},
    {"cooc.half_life_ms", K_I64, F(cooc_half_life_ms), 0, 3.1536e11},
    {"cooc.pop_damping", K_F32, F(cooc_pop_damping), 0.01, 4},
    {"cooc.fuse_weight", K_F32, F(cooc_fuse_weight), 0, 1},
    {"pipeline.queue_batches", K_U32, F(queue_batches), 2, 1024},
    {"pipeline.background_nice", K_U32, F(background_nice), 0, 19},
    {"pipeline.background_policy", K_BGPOLICY, F(background_idle), 0, 1},
    {"pipeline.background_cpus", K_STR, F(background_cpus), 0, 63},
    {"pipeline.trim_interval_ms", K_U32, F(trim_interval_ms), 0, 3600000},
    {"data_dir", K_STR, F(data_dir), 0, RC_CONF_STR - 1},
    {"role", K_ROLE, F(role), 0, 2},
    {"vectors.publish", K_BOOL, F(vectors_publish), 0, 1},
    {"vectors.max_rate", K_U32, F(vectors_max_rate), 1, 10000000},
    {"vectors.interval_ms", K_U32, F(vectors_interval_ms), 1, 60000},
    {"vectors.max_pending", K_U32, F(vectors_max_pending), 1024, 100000000},
    {"vectors.bootstrap", K_BOOL, F(vectors_bootstrap), 0, 1},
    {"vectors.bootstrap_timeout_ms", K_U32, F(vectors_bootstrap_timeout_ms), 100, 3600000},
    {"vectors.bootstrap_max_records", K_U64, F(vectors_bootstrap_max_records), 0, 1e12},
    {"repartition.enabled", K_BOOL, F(repartition_enabled), 0, 1},
    {"repartition.max_inflight", K_U32, F(repartition_max_inflight), 1024, 100000000},
    {"checkpoint.interval_ms", K_U32, F(ckpt_interval_ms), 0, 86400000},
    {"checkpoint.keep", K_U32, F(ckpt_keep), 1, 100},
    {"checkpoint.max_mb_s", K_F32, F(ckpt_max_mb_s), 0, 1e6},
    {"checkpoint.copy", K_BOOL, F(ckpt_copy), 0, 1},
    {"checkpoint.sessions", K_BOOL, F(ckpt_sessions), 0, 1},
    {"checkpoint.cooc", K_BOOL, F(ckpt_cooc), 0, 1},
    {"checkpoint.tower_replay", K_BOOL, F(ckpt_tower_replay), 0, 1},
    {"log.level", K_LEVEL, F(log_level), 0, 0},
    {"log.format", K_FORMAT, F(log_format), 0, 0},
    {"log.stats_interval_ms", K_U32, F(stats_interval_ms), 0, 86400000},
    {"tower.model", K_STR, F(tower_model), 0, RC_CONF_STR - 1},
    {"tower.model_dir", K_STR, F(tower_model_dir), 0, RC_CONF_STR - 1},
    {"tower.max_model_bytes", K_U64, F(tower_max_model_bytes), 4096, 1e12},
    {"tower.refresh_rows", K_U32, F(tower_refresh_rows), 1, 1e7},
    {"tower.recompute_per_flush", K_U32, F(tower_recompute), 1, 1e7},
    {"tower.retrain_interval_s", K_U32, F(tower_retrain_interval_s), 0, 604800},
    {"tower.replay_clicks", K_U32, F(tower_replay_clicks), 1000, 1e8},
    {"tower.retrain_min_examples", K_U32, F(tower_retrain_min_examples), 1, 1e8},
    {"tower.retrain_epochs", K_U32, F(tower_retrain_epochs), 1, 100},
    {"tower.retrain_max_seconds", K_U32, F(tower_retrain_max_seconds), 0, 86400},
    {"tower.retrain_threads", K_U32, F(tower_retrain_threads), 1, 64},
    {"tower.retrain_warm_start", K_BOOL, F(tower_retrain_warm), 0, 1},
    {"tower.mirror_fp16", K_BOOL, F(tower_mirror_fp16), 0, 1},
};
#undef F
_Static_assert(RC_ARRAY_LEN(keys) <= RC_CONF_MAX_KEYS, "raise RC_CONF_MAX_KEYS (config.h)");

void rc_config_defaults(rc_config *c)
{
    memset(c, 0, sizeof *c);
    /* Socket and metrics defaults (issue 11): the socket lives in a private
     * runtime directory ("" = chosen at start, server.h
     * rc_server_default_path), no TCP listener unless asked for, and what
     * clients can make the daemon hold stays inside the memory budget:
     * max_outbuf_total for queued replies whatever max_clients says. */
    c->socket_path[0] = '\0';
    c->socket_mode = 0660;
    c->max_line = 65536;
    c->max_clients = 1024;
    c->idle_timeout_ms = 300000;
    c->request_timeout_ms = 10000;
    c->max_outbuf = 4u << 20;
    c->max_outbuf_total = 256u << 20;
    /* The kernel's shortest (100 µs): a request preempts the trainer when it
     * wakes (docs/BENCHMARKS.md "Request threads with a short slice"). */
    c->request_slice_us = 100;
    c->metrics_port = 0;
    snprintf(c->metrics_bind, sizeof c->metrics_bind, "127.0.0.1");
    snprintf(c->brokers, sizeof c->brokers, "localhost:9092");
    snprintf(c->topic, sizeof c->topic, "clicks");
    snprintf(c->group, sizeof c->group, "recalld");
    c->embedded_partitions = RC_CONF_EMBEDDED_PARTITIONS; /* see config.h: mock retention */
    c->kafka_batch = 1024;
    c->max_users = 1000000;
    c->history = 20;
    c->gap_ms = 30 * 60 * 1000;
    c->ttl_ms = 7LL * 24 * 3600 * 1000;
    c->dim = 64;
    c->max_items = 1048576; /* fits OPERATIONS.md "Memory budget" (4 GiB) */
    c->window = 5;
    c->negatives = 5;
    c->hard_share = 0.2f;
    c->lr = 0.025f;
    c->subsample = 0;
    c->power = 0.75f;
    c->min_city_items = 50;
    c->seed = 1;
    c->trainer_threads = 0; /* the online CPUs (engine: rc__engine_shard_count) */
    c->replay_clicks = 200000;
    c->replay_ratio = 50;      /* in idle trainer time only (docs/BENCHMARKS.md) */
    c->replay_per_hour = 2000; /* a slow stream's idle hours (docs/BENCHMARKS.md) */
    c->replay_max_clicks = 0;
    c->lr_decay_clicks = 30.0f; /* with replay_subsample: docs/BENCHMARKS.md */
    c->lr_min = 0.0005f;
    c->replay_subsample = 1e-4f;
    c->anchor = 0; /* off: docs/BENCHMARKS.md "The deployed regime" */
    c->anchor_fade_clicks = 0;
    c->replay_adaptive = 0;
    c->replay_forget = 0; /* docs/BENCHMARKS.md, "stream-daily-install" */
    c->replay_ratio_min = 5;
    c->replay_ratio_max = 200;
    c->replay_probe_every = 16;
    c->replay_phase_clicks = 1024;
    c->ivf_min = 4096;
    c->nprobe = 16;
    c->index_batch = 256;
    c->flush_interval_ms = 2;
    c->retrain_fit = 0.5f; /* docs/BENCHMARKS.md "install_model at 1M ..." */
    c->drift = 0.0005f; /* measured: 0.01 lost a third of the exact top-50 (docs/BENCHMARKS.md) */
    c->overfetch = 3.0f;
    c->index_storage = 3; /* int8 (rc_index_storage): the same recall@50 and latency as sq8 at
                             0.61x its index bytes (docs/BENCHMARKS.md, "Index storage") */
    c->recall_window = 5;
    c->half_life_ms = 600000;
    c->past_session_weight = 1.0f;
    c->popularity_weight = 0.05f; /* docs/BENCHMARKS.md "A popularity term in the score" */
    c->k_default = 50;
    c->k_max = 1000;
    c->mc_max_categories = 5;
    c->mc_min_quota = 1;
    c->max_batch_users = 256;
    c->recall_user_city = 1;
    c->max_k_users = 25600;
    c->max_exact_scan = 4000000;
    c->recall_mode = RC_RECALL_MODE_FUSED; /* the best recall on every log measured, from cold and
                                              daily (docs/BENCHMARKS.md "The daemon's fused mode,
                                              streamed"); "avg" without the channel */
    c->cooc_max_bytes = 128ull << 20;
    c->cooc_neighbors = 500;
    c->cooc_window = 20;
    c->cooc_half_life_ms = 0;
    c->cooc_pop_damping = 0.5f;
    c->cooc_fuse_weight = 0.8f;
    c->queue_batches = 4;
    c->background_nice = 10;
    c->trim_interval_ms = 30000;
    c->background_idle = 0; /* "nice" (docs/BENCHMARKS.md "Serving latency": idle vs nice) */
    snprintf(c->log_level, sizeof c->log_level, "info");
    snprintf(c->log_format, sizeof c->log_format, "logfmt");
    c->stats_interval_ms = 10000;
    c->ckpt_interval_ms = 30000;
    c->ckpt_keep = 2;
    c->ckpt_copy = 1;
    c->ckpt_sessions = 1;
    c->ckpt_cooc = 1;
    c->ckpt_tower_replay = 1;
    c->tower_max_model_bytes = (uint64_t)1 << 30;
    c->tower_refresh_rows = 4096;
    c->tower_recompute = 256;
    c->tower_replay_clicks = 1000000;
    c->tower_retrain_min_examples = 10000;
    c->tower_retrain_epochs = 1;
    c->tower_retrain_max_seconds = 600;
    c->tower_retrain_threads = 1;
    c->tower_retrain_warm = 1;
    c->tower_mirror_fp16 = 1; /* half the mirror's bytes, the same two_tower top-k
                                 (docs/BENCHMARKS.md, "Memory at 1M, 2026-12-03 evening") */
    c->max_partitions = 65536;
    c->max_future_ms = 5 * 60 * 1000;
    c->max_past_ms = 0;
    c->dlq_file_max_mb = 256;
    c->role = RC_ROLE_ALL;
    c->vectors_publish = 0; /* role trainer publishes whatever this says */
    c->vectors_max_rate = 20000;
    c->vectors_interval_ms = 100;
    c->vectors_max_pending = 4194304;
    c->vectors_bootstrap = 1;
    c->vectors_bootstrap_timeout_ms = 120000;
    c->vectors_bootstrap_max_records = 100000000;
    c->repartition_enabled = 1;
    c->repartition_max_inflight = 200000;
}

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < RC_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* where: what set the value ("config FILE", "--brokers", "environment
 * RECALLD_BROKERS"). */
static int bad(char *eb, size_t el, const char *where, const char *key, const char *why)
{
    return rc_err(eb, el, RC_EINVAL, "%s: %s: %s", where, key, why);
}

static int set_num(rc_config *c, const struct key *k, json_t *v, const char *where, char *eb,
                   size_t el)
{
    char why[128];
    double d;
    if (k->type == K_F32 ? !json_is_number(v) : !json_is_integer(v)) {
        snprintf(why, sizeof why, "expected %s in %.15g..%.15g",
                 k->type == K_F32 ? "number" : "integer", k->min, k->max);
        return bad(eb, el, where, k->name, why);
    }
    d = json_number_value(v);
    if (d < k->min || d > k->max) {
        snprintf(why, sizeof why, "%.15g is out of range %.15g..%.15g", d, k->min, k->max);
        return bad(eb, el, where, k->name, why);
    }
    char *p = (char *)c + k->off;
    switch (k->type) {
    case K_U32:
        *(uint32_t *)p = (uint32_t)json_integer_value(v);
        break;
    case K_U64:
        *(uint64_t *)p = (uint64_t)json_integer_value(v);
        break;
    case K_I64:
        *(int64_t *)p = (int64_t)json_integer_value(v);
        break;
    case K_F32:
        *(float *)p = (float)d;
        break;
    default:
        break;
    }
    return 0;
}

static int set_enum(rc_config *c, const struct key *k, json_t *v, const char *where, char *eb,
                    size_t el)
{
    char *p = (char *)c + k->off;
    const char *s = json_string_value(v);
    if (k->type == K_BOOL) {
        if (!json_is_boolean(v))
            return bad(eb, el, where, k->name, "expected true or false");
        *(int *)p = json_is_true(v);
        return 0;
    }
    if (k->type == K_MODE) {
        long m = -1;
        if (json_is_integer(v))
            m = (long)json_integer_value(v);
        else if (s && s[0]) {
            char *end;
            errno = 0;
            m = strtol(s, &end, 8);
            if (*end || errno)
                m = -1;
        }
        if (m < 0 || m > 0777)
            return bad(eb, el, where, k->name, "expected an octal mode string like \"0660\"");
        *(unsigned *)p = (unsigned)m;
        return 0;
    }
    if (!s)
        return bad(eb, el, where, k->name, "expected string");
    if (k->type == K_SCOPE) {
        if (strcmp(s, "user_city") && strcmp(s, "global"))
            return bad(eb, el, where, k->name, "expected \"user_city\" or \"global\"");
        *(int *)p = strcmp(s, "user_city") == 0;
        return 0;
    }
    if (k->type == K_STORAGE) {
        int st = rc_index_storage_parse(s); /* the index's own list of names */
        if (st >= 0) {
            *(int *)p = st;
            return 0;
        }
        return bad(eb, el, where, k->name, "expected \"flat\", \"fp16\", \"sq8\" or \"int8\"");
    }
    if (k->type == K_ROLE) {
        for (int i = 0; i < 3; i++)
            if (!strcmp(s, rc_role_names[i])) {
                *(int *)p = i;
                return 0;
            }
        return bad(eb, el, where, k->name, "expected \"all\", \"trainer\" or \"replica\"");
    }
    if (k->type == K_RMODE) {
        int m = rc_recall_mode_parse(s);
        if (m < 0)
            return bad(eb, el, where, k->name,
                       "expected \"avg\", \"multi_category\", \"two_tower\", \"itemknn\" or "
                       "\"fused\"");
        *(int *)p = m;
        return 0;
    }
    if (k->type == K_BGPOLICY) {
        if (strcmp(s, "nice") && strcmp(s, "idle"))
            return bad(eb, el, where, k->name, "expected \"nice\" or \"idle\"");
        *(int *)p = strcmp(s, "idle") == 0;
        return 0;
    }
    if (k->type == K_SGMODE) {
        if (strcmp(s, "skipgram") && strcmp(s, "cbow"))
            return bad(eb, el, where, k->name, "expected \"skipgram\" or \"cbow\"");
        *(int *)p = strcmp(s, "cbow") == 0;
        return 0;
    }
    if (k->type == K_LEVEL && rc_log_level_parse(s) < 0)
        return bad(eb, el, where, k->name, "expected debug, info, warn, error or off");
    if (k->type == K_FORMAT && strcmp(s, "logfmt") && strcmp(s, "json"))
        return bad(eb, el, where, k->name, "expected \"logfmt\" or \"json\"");
    snprintf(p, 16, "%s", s);
    return 0;
}

/* socket.allow_uids: an array of uids (integers), at most RC_CONF_MAX_UIDS. */
static int set_uids(rc_config *c, const struct key *k, json_t *v, const char *where, char *eb,
                    size_t el)
{
    size_t i;
    json_t *u;
    char why[96];
    if (!json_is_array(v) || json_array_size(v) > RC_CONF_MAX_UIDS) {
        snprintf(why, sizeof why, "expected an array of at most %d uids", RC_CONF_MAX_UIDS);
        return bad(eb, el, where, k->name, why);
    }
    json_array_foreach(v, i, u) {
        if (!json_is_integer(u) || json_integer_value(u) < (json_int_t)k->min ||
            json_integer_value(u) > (json_int_t)k->max) {
            snprintf(why, sizeof why, "element %zu: expected integer uid in %g..%g", i, k->min,
                     k->max);
            return bad(eb, el, where, k->name, why);
        }
        c->allow_uids[i] = (uint32_t)json_integer_value(u);
    }
    c->nallow_uids = (uint32_t)json_array_size(v);
    return 0;
}

static int set_value(rc_config *c, const struct key *k, json_t *v, const char *where, char *eb,
                     size_t el)
{
    if (k->type == K_UIDS)
        return set_uids(c, k, v, where, eb, el);
    if (k->type == K_STR) {
        const char *s = json_string_value(v);
        char why[96];
        if (!s)
            return bad(eb, el, where, k->name, "expected string");
        size_t n = strlen(s);
        if (n < (size_t)k->min || n > (size_t)k->max) {
            snprintf(why, sizeof why, "length %zu is out of range %g..%g", n, k->min, k->max);
            return bad(eb, el, where, k->name, why);
        }
        snprintf((char *)c + k->off, RC_CONF_STR, "%s", s);
        return 0;
    }
    if (k->type == K_U32 || k->type == K_U64 || k->type == K_I64 || k->type == K_F32)
        return set_num(c, k, v, where, eb, el);
    return set_enum(c, k, v, where, eb, el);
}

/* ---- librdkafka properties ----
 * Values may be long (an inline PEM bundle), and rc_config is copied by value
 * (the engine keeps one, SIGHUP builds another), so the strings live in a
 * process-wide pool: immutable, shared by every copy, never freed. Equal
 * strings are stored once, so reloading the same file adds nothing. */

struct interned {
    struct interned *next;
    size_t len;
    char s[];
};

static struct interned *pool;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;

/* NULL when out of memory. */
static const char *intern(const char *s, size_t len)
{
    const char *out = NULL;
    pthread_mutex_lock(&pool_mu);
    for (struct interned *p = pool; p && !out; p = p->next)
        if (p->len == len && memcmp(p->s, s, len) == 0)
            out = p->s;
    if (!out) {
        struct interned *p = malloc(sizeof *p + len + 1);
        if (p) {
            p->len = len;
            memcpy(p->s, s, len);
            p->s[len] = '\0';
            p->next = pool;
            pool = p;
            out = p->s;
        }
    }
    pthread_mutex_unlock(&pool_mu);
    return out;
}

/* One property; len is the value's length (JSON strings may hold a NUL). */
static int kafka_put(rc_config *c, const char *k, const char *v, size_t len, int origin,
                     const char *where, char *eb, size_t el)
{
    char why[160];
    uint32_t i;
    size_t klen = strlen(k);
    if (!klen || klen > RC_CONF_KAFKA_KEY_MAX)
        return rc_err(eb, el, RC_EINVAL, "%s: kafka.config: property names are 1..%d bytes", where,
                      RC_CONF_KAFKA_KEY_MAX);
    if (len > RC_CONF_KAFKA_VALUE_MAX) {
        snprintf(why, sizeof why, "%.64s: value of %zu bytes, at most %u", k, len,
                 RC_CONF_KAFKA_VALUE_MAX);
        return rc_err(eb, el, RC_E2BIG, "%s: kafka.config: %s", where, why);
    }
    if (memchr(v, '\0', len)) {
        snprintf(why, sizeof why, "%.64s: value contains a NUL byte", k);
        return bad(eb, el, where, "kafka.config", why);
    }
    for (i = 0; i < c->nkafka_extra; i++)
        if (strcmp(c->kafka_extra[2 * i], k) == 0)
            break;
    if (i == RC_CONF_MAX_KAFKA_EXTRA) {
        snprintf(why, sizeof why, "too many properties (at most %d)", RC_CONF_MAX_KAFKA_EXTRA);
        return bad(eb, el, where, "kafka.config", why);
    }
    const char *ik = intern(k, klen), *iv = intern(v, len);
    if (!ik || !iv)
        return rc_err(eb, el, RC_ENOMEM, "%s: kafka.config: out of memory", where);
    c->kafka_extra[2 * i] = ik;
    c->kafka_extra[2 * i + 1] = iv;
    c->kafka_origin[i] = (unsigned char)origin;
    if (i == c->nkafka_extra)
        c->nkafka_extra++;
    return 0;
}

/* kafka.config: an object of librdkafka properties passed through verbatim;
 * it replaces what an earlier file set. */
static int set_kafka_extra(rc_config *c, json_t *obj, const char *where, char *eb, size_t el)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj))
        return bad(eb, el, where, "kafka.config", "expected an object of librdkafka properties");
    c->nkafka_extra = 0;
    json_object_foreach(obj, k, v) {
        if (!json_is_string(v))
            return bad(eb, el, where, "kafka.config", "values must be strings");
        int rc = kafka_put(c, k, json_string_value(v), json_string_length(v), RC_CONF_FILE, where,
                           eb, el);
        if (rc)
            return rc;
    }
    return 0;
}

int rc_config_kafka_set(rc_config *c, const char *key, const char *value, int origin,
                        const char *who, char *eb, size_t el)
{
    if (!c || !key || !value)
        return rc_err(eb, el, RC_EINVAL, "config: bad arguments");
    return kafka_put(c, key, value, strlen(value), origin, who ? who : "config", eb, el);
}

int rc_config_kafka_arg(rc_config *c, const char *kv, int origin, const char *who, char *eb,
                        size_t el)
{
    const char *eq = kv ? strchr(kv, '=') : NULL;
    char key[RC_CONF_KAFKA_KEY_MAX + 1];
    if (!c || !eq || eq == kv)
        return rc_err(eb, el, RC_EINVAL,
                      "%s: expected KEY=VALUE (a librdkafka property), got "
                      "'%.60s'",
                      who ? who : "-X", kv ? kv : "");
    if ((size_t)(eq - kv) > RC_CONF_KAFKA_KEY_MAX)
        return rc_err(eb, el, RC_EINVAL, "%s: property names are 1..%d bytes", who ? who : "-X",
                      RC_CONF_KAFKA_KEY_MAX);
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    return rc_config_kafka_set(c, key, eq + 1, origin, who, eb, el);
}

/* Sets key k and notes where the value came from. */
static int set_key(rc_config *c, const struct key *k, json_t *v, int origin, const char *where,
                   char *eb, size_t el)
{
    int rc = set_value(c, k, v, where, eb, el);
    if (!rc)
        c->origin[k - keys] = (unsigned char)origin;
    return rc;
}

static int apply(rc_config *c, json_t *root, const char *where, char *eb, size_t el)
{
    const char *sec, *k;
    json_t *sv, *v;
    char name[128];
    if (!json_is_object(root))
        return rc_err(eb, el, RC_EINVAL, "%s: top level must be an object", where);
    json_object_foreach(root, sec, sv) {
        const struct key *key = find_key(sec);
        if (key) {
            int rc = set_key(c, key, sv, RC_CONF_FILE, where, eb, el);
            if (rc)
                return rc;
            continue;
        }
        if (!json_is_object(sv))
            return bad(eb, el, where, sec, "unknown key");
        json_object_foreach(sv, k, v) {
            snprintf(name, sizeof name, "%s.%s", sec, k);
            if (strcmp(name, "kafka.config") == 0) {
                int rc = set_kafka_extra(c, v, where, eb, el);
                if (rc)
                    return rc;
                continue;
            }
            if (!(key = find_key(name)))
                return bad(eb, el, where, name, "unknown key");
            int rc = set_key(c, key, v, RC_CONF_FILE, where, eb, el);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int rc_config_load_str(rc_config *c, const char *json, char *errbuf, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return rc_err(errbuf, errlen, RC_EINVAL, "config:%d:%d: %s", je.line, je.column, je.text);
    int rc = apply(c, root, "config", errbuf, errlen);
    json_decref(root);
    return rc;
}

int rc_config_load(rc_config *c, const char *path, char *errbuf, size_t errlen)
{
    json_error_t je;
    char where[RC_CONF_STR + 8];
    FILE *f = fopen(path, "rb");
    if (!f)
        return rc_err(errbuf, errlen, errno == ENOENT ? RC_ENOENT : RC_EIO, "config %s: %s", path,
                      strerror(errno));
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!root)
        return rc_err(errbuf, errlen, RC_EINVAL, "config %s:%d:%d: %s", path, je.line, je.column,
                      je.text);
    snprintf(c->file, sizeof c->file, "%s", path);
    snprintf(where, sizeof where, "config %s", c->file);
    int rc = apply(c, root, where, errbuf, errlen);
    json_decref(root);
    return rc;
}

/* A string from the environment or the command line as the JSON value the
 * file would hold: strings stay strings, numbers and booleans are parsed. */
static json_t *value_of(const struct key *k, const char *v)
{
    switch (k->type) {
    case K_U32:
    case K_U64:
    case K_I64:
    case K_F32:
    case K_UIDS: {
        json_t *j = json_loads(v, JSON_DECODE_ANY, NULL);
        return j ? j : json_string(v); /* refused below as "expected integer" */
    }
    case K_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
            return json_true();
        if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
            return json_false();
        return json_string(v);
    default:
        return json_string(v);
    }
}

int rc_config_set(rc_config *c, const char *key, const char *value, int origin, const char *who,
                  char *eb, size_t el)
{
    const struct key *k = key ? find_key(key) : NULL;
    char why[512];
    if (!c || !k || !value)
        return rc_err(eb, el, RC_EINVAL, "%s: %s: unknown key", who ? who : "config",
                      key ? key : "(null)");
    json_t *j = value_of(k, value);
    if (!j)
        return rc_err(eb, el, RC_ENOMEM, "%s: out of memory", who ? who : "config");
    int rc = set_key(c, k, j, origin, who ? who : "config", why, sizeof why);
    json_decref(j);
    if (rc)
        rc_err(eb, el, rc, "%s (got '%.60s')", why, value);
    return rc;
}

/* ---- environment ---- */

/* The main settings a container or unit file sets without a config file.
 * RECALLD_DATA_DIR is not here: it names the public datasets directory of
 * the tests and benchmarks; data_dir is RECALLD_STATE_DIR. */
static const struct env_var {
    const char *name, *key;
} env_vars[] = {
    {"RECALLD_BROKERS", "kafka.brokers"},     {"RECALLD_TOPIC", "kafka.topic"},
    {"RECALLD_GROUP", "kafka.group"},         {"RECALLD_INSTANCE_ID", "kafka.instance_id"},
    {"RECALLD_DLQ_TOPIC", "kafka.dlq_topic"}, {"RECALLD_SOCKET", "socket.path"},
    {"RECALLD_STATE_DIR", "data_dir"},        {"RECALLD_METRICS_PORT", "metrics.port"},
    {"RECALLD_METRICS_BIND", "metrics.bind"}, {"RECALLD_LOG_LEVEL", "log.level"},
    {"RECALLD_LOG_FORMAT", "log.format"},
};

const char *rc_config_env_var(size_t i, const char **key)
{
    if (i >= RC_ARRAY_LEN(env_vars))
        return NULL;
    if (key)
        *key = env_vars[i].key;
    return env_vars[i].name;
}

int rc_config_env(rc_config *c, char *eb, size_t el)
{
    char who[64];
    for (size_t i = 0; i < RC_ARRAY_LEN(env_vars); i++) {
        const char *v = getenv(env_vars[i].name);
        if (!v || !*v)
            continue;
        snprintf(who, sizeof who, "environment %s", env_vars[i].name);
        int rc = rc_config_set(c, env_vars[i].key, v, RC_CONF_ENV, who, eb, el);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- librdkafka check ---- */

/* "WHERE" of property i, for messages. */
static void kafka_where(const rc_config *c, uint32_t i, char *out, size_t cap)
{
    switch (c->kafka_origin[i]) {
    case RC_CONF_CLI:
        snprintf(out, cap, "-X");
        break;
    case RC_CONF_FILE:
        snprintf(out, cap, "config%s%.*s", c->file[0] ? " " : "", (int)cap / 2, c->file);
        break;
    default:
        snprintf(out, cap, "config");
        break;
    }
}

int rc_config_kafka_check(const rc_config *c, char *eb, size_t el)
{
    char why[512], where[300];
    int rc = 0;
    if (!c)
        return rc_err(eb, el, RC_EINVAL, "config: bad arguments");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return rc_err(eb, el, RC_ENOMEM, "kafka: out of memory");
    if ((c->brokers[0] &&
         rd_kafka_conf_set(conf, "bootstrap.servers", c->brokers, why, sizeof why)) ||
        rd_kafka_conf_set(conf, "group.id", c->group, why, sizeof why)) {
        rc = rc_err(eb, el, RC_EKAFKA, "kafka.brokers/kafka.group: %s", why);
        goto out;
    }
    for (uint32_t i = 0; i < c->nkafka_extra; i++) {
        const char *k = c->kafka_extra[2 * i], *v = c->kafka_extra[2 * i + 1];
        if (rd_kafka_conf_set(conf, k, v, why, sizeof why) == RD_KAFKA_CONF_OK)
            continue;
        kafka_where(c, i, where, sizeof where);
        rc = rc_err(eb, el, RC_EKAFKA, "%s: kafka.config: %s: %s", where, k, why);
        goto out;
    }
out:
    rd_kafka_conf_destroy(conf);
    return rc;
}

/* Size of a key's field for comparison; strings compare as strings. */
static size_t field_size(const struct key *k)
{
    switch (k->type) {
    case K_U64:
    case K_I64:
        return 8;
    case K_UIDS:
        return sizeof(((rc_config *)0)->allow_uids);
    case K_STR:
    case K_LEVEL:
    case K_FORMAT:
        return 0;
    default:
        return 4; /* u32, f32, int, unsigned */
    }
}

const char *const rc_config_reloadable[] = {"log.level",
                                            "log.format",
                                            "log.stats_interval_ms",
                                            "recall.k_default",
                                            "recall.k_max",
                                            "recall.window",
                                            "recall.popularity_weight",
                                            "recall.mode",
                                            "index.overfetch",
                                            "checkpoint.interval_ms",
                                            "checkpoint.keep",
                                            "checkpoint.max_mb_s",
                                            "tower.model",
                                            "tower.refresh_rows",
                                            "tower.recompute_per_flush",
                                            "socket.request_slice_us"};
const size_t rc_config_nreloadable = RC_ARRAY_LEN(rc_config_reloadable);

int rc_config_is_reloadable(const char *key)
{
    for (size_t i = 0; i < rc_config_nreloadable; i++)
        if (strcmp(rc_config_reloadable[i], key) == 0)
            return 1;
    return 0;
}

void rc_config_copy_reloadable(rc_config *c, const rc_config *n)
{
    snprintf(c->log_level, sizeof c->log_level, "%s", n->log_level);
    snprintf(c->log_format, sizeof c->log_format, "%s", n->log_format);
    c->stats_interval_ms = n->stats_interval_ms;
    c->k_default = n->k_default;
    c->k_max = n->k_max;
    c->recall_window = n->recall_window;
    c->popularity_weight = n->popularity_weight;
    c->recall_mode = n->recall_mode;
    c->overfetch = n->overfetch;
    c->ckpt_interval_ms = n->ckpt_interval_ms;
    c->ckpt_keep = n->ckpt_keep;
    c->ckpt_max_mb_s = n->ckpt_max_mb_s;
    snprintf(c->tower_model, sizeof c->tower_model, "%s", n->tower_model);
    c->tower_refresh_rows = n->tower_refresh_rows;
    c->tower_recompute = n->tower_recompute;
    c->request_slice_us = n->request_slice_us;
}

size_t rc_config_diff(const rc_config *a, const rc_config *b, const char **names, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < RC_ARRAY_LEN(keys); i++) {
        const char *pa = (const char *)a + keys[i].off, *pb = (const char *)b + keys[i].off;
        size_t sz = field_size(&keys[i]);
        int differ = sz ? memcmp(pa, pb, sz) != 0 : strcmp(pa, pb) != 0;
        if (keys[i].type == K_UIDS)
            differ = a->nallow_uids != b->nallow_uids ||
                     memcmp(a->allow_uids, b->allow_uids, a->nallow_uids * sizeof(uint32_t));
        if (differ && n < cap)
            names[n] = keys[i].name;
        n += differ;
    }
    int extra = a->nkafka_extra != b->nkafka_extra;
    for (uint32_t i = 0; !extra && i < a->nkafka_extra * 2; i++)
        extra = strcmp(a->kafka_extra[i], b->kafka_extra[i]) != 0; /* interned: could be == */
    if (extra && n < cap)
        names[n] = "kafka.config";
    return n + (size_t)extra;
}

/* "WHERE" for a message about key (or, when key was not set, about other):
 * the file, variable or flag that set it. */
static void origin_of(const rc_config *c, const char *key, const char *other, char *out, size_t cap)
{
    const struct key *k = find_key(key), *o = other ? find_key(other) : NULL;
    int org = k ? c->origin[k - keys] : RC_CONF_DEFAULT;
    if (org == RC_CONF_DEFAULT && o && c->origin[o - keys] != RC_CONF_DEFAULT) {
        k = o;
        org = c->origin[o - keys];
    }
    const char *env = NULL;
    for (size_t i = 0; k && i < RC_ARRAY_LEN(env_vars); i++)
        if (strcmp(env_vars[i].key, k->name) == 0)
            env = env_vars[i].name;
    switch (org) {
    case RC_CONF_FILE:
        snprintf(out, cap, "config%s%.*s", c->file[0] ? " " : "", (int)cap / 2, c->file);
        break;
    case RC_CONF_ENV:
        snprintf(out, cap, "environment %s", env ? env : "?");
        break;
    case RC_CONF_CLI:
        snprintf(out, cap, "command line");
        break;
    default:
        snprintf(out, cap, "config (defaults)");
        break;
    }
}

/* Fails validation: "WHERE: KEY: why". */
#define INVALID(key, other, ...)                                                                   \
    do {                                                                                           \
        origin_of(c, key, other, where, sizeof where);                                             \
        snprintf(why, sizeof why, __VA_ARGS__);                                                    \
        return bad(eb, el, where, key, why);                                                       \
    } while (0)

int rc_config_validate(const rc_config *c, char *eb, size_t el)
{
    char where[300], why[400];
    if (c->dim % 8)
        INVALID("model.dim", NULL, "must be a multiple of 8 (got %u)", c->dim);
    if (!c->embedded && !c->brokers[0])
        INVALID("kafka.brokers", "kafka.embedded",
                "required unless kafka.embedded is true (got \"\")");
    if (c->k_default > c->k_max)
        INVALID("recall.k_default", "recall.k_max", "must not exceed recall.k_max (got %u > %u)",
                c->k_default, c->k_max);
    /* The default "fused" answers as "avg" without the channel (rc_engine_recall_mode); a
     * mode set on purpose is refused. */
    const struct key *mk = find_key("recall.mode");
    if ((c->recall_mode == RC_RECALL_MODE_ITEMKNN || c->recall_mode == RC_RECALL_MODE_FUSED) &&
        !c->cooc_max_bytes && c->origin[mk - keys] != RC_CONF_DEFAULT)
        INVALID("recall.mode", "cooc.max_bytes",
                "\"%s\" needs the co-occurrence channel (cooc.max_bytes > 0)",
                rc_recall_mode_names[c->recall_mode]);
    if (c->recall_window > c->history)
        INVALID("recall.window", "sessions.history",
                "must not exceed sessions.history (got %u > %u)", c->recall_window, c->history);
    if (c->window > c->history)
        INVALID("model.window", "sessions.history",
                "must not exceed sessions.history (got %u > %u)", c->window, c->history);
    if (c->replay_adaptive && c->replay_ratio_min > c->replay_ratio_max)
        INVALID("train.replay_ratio_min", "train.replay_ratio_max",
                "must not exceed train.replay_ratio_max (got %g > %g)", (double)c->replay_ratio_min,
                (double)c->replay_ratio_max);
    if (c->replay_adaptive &&
        (c->replay_phase_clicks < c->replay_probe_every ||
         c->replay_phase_clicks / c->replay_probe_every > RC_REPLAYCTL_MAX_HELD))
        INVALID("train.replay_phase_clicks", "train.replay_probe_every",
                "must hold 1..%u probes (train.replay_phase_clicks / train.replay_probe_every; "
                "got %u / %u)",
                RC_REPLAYCTL_MAX_HELD, c->replay_phase_clicks, c->replay_probe_every);
    if (c->tower_retrain_min_examples > c->tower_replay_clicks)
        INVALID("tower.retrain_min_examples", "tower.replay_clicks",
                "must not exceed tower.replay_clicks (a full buffer could never retrain; "
                "got %u > %u)",
                c->tower_retrain_min_examples, c->tower_replay_clicks);
    if (strlen(c->socket_path) > 107) /* "" = the default runtime directory */
        INVALID("socket.path", NULL, "at most 107 bytes (sun_path; got %zu bytes)",
                strlen(c->socket_path));
    char cpu_err[128];
    if (rc_cpus_check(c->background_cpus, cpu_err, sizeof cpu_err))
        INVALID("pipeline.background_cpus", NULL,
                "expected \"\" (no pinning), \"auto\" or a core list like \"1\" or \"2-3,6\": %s",
                cpu_err);
    if (c->request_slice_us && c->request_slice_us < 100)
        INVALID("socket.request_slice_us", NULL,
                "expected 0 (the kernel's default) or 100..100000 µs, the kernel's range "
                "(got %u)",
                c->request_slice_us);
    if (c->metrics_port > 65535)
        INVALID("metrics.port", NULL, "expected 0 (off) or a TCP port 1..65535 (got %u)",
                c->metrics_port);
    unsigned char ip[16];
    if (inet_pton(AF_INET, c->metrics_bind, ip) != 1 &&
        inet_pton(AF_INET6, c->metrics_bind, ip) != 1)
        INVALID("metrics.bind", NULL, "expected an IPv4 or IPv6 address literal (got \"%.100s\")",
                c->metrics_bind);
    return 0;
}
#undef INVALID
