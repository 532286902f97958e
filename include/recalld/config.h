/* config — recalld's settings in four layers, each overriding the one before:
 * defaults < a JSON file (conf/recalld.json, every key in docs/CONFIG.md) <
 * environment variables (RECALLD_BROKERS, ...: rc_config_env) < command-line
 * flags (rc_config_set, rc_config_kafka_set for -X). Validation messages name
 * where the value came from, the key and the value ("config bad.json:
 * model.dim: must be a multiple of 8 (got 12)"). Unknown keys are errors (a
 * typo must not be silently ignored). Plain struct: zero-initialise, then
 * rc_config_defaults; copies are fine (librdkafka property strings are shared,
 * immutable and live until the process exits). */
#ifndef RECALLD_CONFIG_H
#define RECALLD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define RC_CONF_STR             512
#define RC_CONF_MAX_KAFKA_EXTRA 64
#define RC_CONF_MAX_UIDS        64
#define RC_CONF_MAX_KEYS        160 /* room for the key table to grow (checked at compile time) */
/* Longest librdkafka property value (an inline ssl.ca.pem bundle fits) and key. */
#define RC_CONF_KAFKA_VALUE_MAX (1u << 20)
#define RC_CONF_KAFKA_KEY_MAX   255

/* Where a value came from (rc_config.origin, for messages). */
enum rc_conf_origin { RC_CONF_DEFAULT = 0, RC_CONF_FILE, RC_CONF_ENV, RC_CONF_CLI };

/* Default partitions of the embedded (mock) topic, also recalld-broker's
 * --partitions default. librdkafka 2.0.2's mock keeps only the newest ~5 MiB
 * of each partition and drops older data like a broker at its retention
 * limit, so the default must leave every partition far below that when a
 * stream is produced faster than it is consumed (the usual case here: the
 * producer outruns the trainer). Measured: a generated click (recalld-gen,
 * key = user id) costs ~143 bytes in the mock's log (value ~123 B, key ~6 B,
 * record and batch overhead; 37,000 such clicks fill one 5 MiB partition).
 * Keyed by user and spread by the default partitioner, 64 partitions hold
 *   300,000 clicks (deploy/demo.sh)         ~0.65 MiB each (13% of the limit),
 *   1,000,000 clicks (bench/ingest.sh)      ~2.1 MiB each (42%),
 * and the mock has room for ~2.3M clicks in all. An empty partition costs
 * the mock little; the memory it may hold grows with the count (at most
 * 64 x 5 MiB, inside recalld when embedded), but only as data arrives. */
#define RC_CONF_EMBEDDED_PARTITIONS 64

/* The recall modes of a request's "mode" (docs/PROTOCOL.md), by index of
 * rc_recall_mode_names: "avg", "multi_category", "two_tower", "itemknn",
 * "fused". */
enum {
    RC_RECALL_MODE_AVG,
    RC_RECALL_MODE_MULTI_CATEGORY,
    RC_RECALL_MODE_TWO_TOWER,
    RC_RECALL_MODE_ITEMKNN,
    RC_RECALL_MODE_FUSED,
    RC_RECALL_NMODES
};
extern const char *const rc_recall_mode_names[RC_RECALL_NMODES];
/* The mode named s, or -1. */
int rc_recall_mode_parse(const char *s);

typedef struct rc_config {
    /* socket */
    char socket_path[RC_CONF_STR];
    unsigned socket_mode;
    uint32_t max_line, max_clients, idle_timeout_ms;
    uint64_t max_outbuf;
    uint64_t max_outbuf_total;             /* socket.max_outbuf_total: unsent bytes, all clients */
    uint32_t request_timeout_ms;           /* socket.request_timeout_ms: first byte -> newline */
    uint32_t allow_uids[RC_CONF_MAX_UIDS]; /* socket.allow_uids: peers admitted (SO_PEERCRED) */
    uint32_t nallow_uids;                  /* 0 = anyone who can open the socket */
    uint32_t request_slice_us; /* socket.request_slice_us: request path's slice (slice.h), 0 =
                                  kernel's */
    /* metrics (Prometheus over HTTP: the only TCP listener) */
    uint32_t metrics_port;          /* 0 = off */
    char metrics_bind[RC_CONF_STR]; /* IP literal, default 127.0.0.1 */
    /* kafka */
    char brokers[RC_CONF_STR], topic[RC_CONF_STR], group[RC_CONF_STR];
    int embedded;
    uint32_t embedded_partitions, kafka_batch;
    char dlq_topic[RC_CONF_STR], dlq_file[RC_CONF_STR];
    /* kafka.instance_id: static group membership (group.instance.id). "" =
     * derived from the host name and data_dir when data_dir is set (dynamic
     * membership without one); "none" = dynamic membership. */
    char instance_id[RC_CONF_STR];
    /* kafka.config and -X: librdkafka properties, key/value pairs in the order
     * given. The strings are interned: shared by copies, never freed, at most
     * RC_CONF_KAFKA_VALUE_MAX bytes. */
    const char *kafka_extra[RC_CONF_MAX_KAFKA_EXTRA * 2];
    uint32_t nkafka_extra;
    unsigned char kafka_origin[RC_CONF_MAX_KAFKA_EXTRA]; /* rc_conf_origin of each pair */
    /* sessions */
    uint32_t max_users, history;
    int64_t gap_ms, ttl_ms;
    /* model */
    uint32_t dim, max_items, window, negatives;
    int cbow;
    float hard_share, lr, subsample, power;
    uint32_t min_city_items;
    uint64_t seed;
    uint32_t trainer_threads;     /* model.trainer_threads: SGNS threads, 0 = online CPUs */
    char model_path[RC_CONF_STR]; /* --model: start from a trained model file */
    char model_dir[RC_CONF_STR]; /* model.dir: where install_model may read, "" = model.path only */
    /* streaming trainer (train.*): replay of recent examples (relearn.h) */
    uint32_t replay_clicks;      /* train.replay_clicks: examples held, 0 = no replay */
    float replay_ratio;          /* train.replay_ratio: replayed examples per new click */
    float replay_per_hour;       /* train.replay_per_hour: replays owed per hour of event time,
                                  * besides the ratio per click, 0 = none */
    uint32_t replay_max_clicks;  /* train.replay_max_clicks: examples of an item with more
                                  * clicks are not replayed, 0 = no limit */
    float lr_decay_clicks;       /* train.lr_decay_clicks: an item's rate is model.lr *
                                  * d / (d + its clicks), 0 = constant model.lr */
    float lr_min;                /* train.lr_min: floor of the decayed rate */
    float replay_subsample;      /* train.replay_subsample: replays' subsampling, 0 = model's */
    float anchor;                /* train.anchor: L2 pull of warm-started rows toward the
                                  * model the engine started from, 0 = off (anchor.h) */
    float anchor_fade_clicks;    /* train.anchor_fade_clicks: the pull fades as h / (h +
                                  * the item's clicks since the start), 0 = never */
    int replay_adaptive;         /* train.replay_adaptive: the ratio follows replayctl.h's probes */
    int replay_forget;           /* train.replay_forget_on_install: an install empties replay */
    float replay_ratio_min;      /* train.replay_ratio_min: the adaptive ratio's bounds */
    float replay_ratio_max;      /* train.replay_ratio_max */
    uint32_t replay_probe_every; /* train.replay_probe_every: one new click in N is a probe */
    uint32_t replay_phase_clicks; /* train.replay_phase_clicks: new clicks per controller phase */
    /* index */
    uint32_t ivf_min, nprobe, index_batch, flush_interval_ms;
    float drift, overfetch;
    float retrain_fit; /* index.retrain_fit: 0 = off */
    /* recall */
    uint32_t recall_window, k_default, k_max;
    int64_t half_life_ms;                     /* time decay of click weights, 0 = off */
    float past_session_weight;                /* recall.past_session_weight: factor on clicks before
                                               * the current session (userq.h) */
    float popularity_weight;                  /* recall.popularity_weight: w of rc_recall_score */
    uint32_t mc_max_categories, mc_min_quota; /* multi-category recall */
    uint32_t max_batch_users;                 /* users per batch recall request */
    int recall_user_city;    /* recall.scope: 1 "user_city" (default), 0 "global" */
    int recall_mode;         /* recall.mode: the mode of a request that names none
                              * (RC_RECALL_MODE_*, rc_recall_mode_names) */
    uint32_t max_k_users;    /* recall.max_k_users: k x users per request */
    uint64_t max_exact_scan; /* recall.max_exact_scan: items x users of "exact" */
    /* session co-occurrence channel (cooc.h) */
    uint64_t cooc_max_bytes;   /* cooc.max_bytes, 0 = channel off */
    uint32_t cooc_neighbors;   /* cooc.neighbors: M per item */
    uint32_t cooc_window;      /* cooc.window: previous session clicks paired */
    int64_t cooc_half_life_ms; /* cooc.half_life_ms: decay of counts, 0 = none */
    float cooc_pop_damping;    /* cooc.pop_damping: exponent of the candidate's count */
    float cooc_fuse_weight;    /* cooc.fuse_weight: share of co-occurrence in "fused" */
    /* recall.multi_category_parallel: 1 = one thread per category search */
    int mc_parallel;
    /* pipeline */
    uint32_t queue_batches; /* batches in flight between loop and trainer */
    /* added to the nice of the decoder, trainer and checkpoint writer */
    uint32_t background_nice;
    /* pipeline.background_policy: 1 = "idle" (those threads also run SCHED_IDLE) */
    int background_idle;
    /* pipeline.background_cpus: "" (no pinning), "auto" or a core list (cpus.h) */
    char background_cpus[64];
    /* pipeline.trim_interval_ms: the trainer hands malloc's free pages back to
     * the system at most this often (0 = only after checkpoints) */
    uint32_t trim_interval_ms;
    /* data / logs */
    char data_dir[RC_CONF_STR];
    /* checkpoints under data_dir (see checkpoint.h) */
    uint32_t ckpt_interval_ms; /* periodic checkpoint, 0 = only at shutdown and revokes */
    uint32_t ckpt_keep;        /* checkpoints kept */
    float ckpt_max_mb_s;       /* write bandwidth cap, 0 = none */
    int ckpt_copy;             /* checkpoint.copy: copy the table (1) or pause the trainer (0) */
    int ckpt_sessions;         /* checkpoint.sessions: the users' sessions in each checkpoint */
    int ckpt_cooc;             /* checkpoint.cooc: the co-occurrence counts in each checkpoint */
    int ckpt_tower_replay;     /* checkpoint.tower_replay: the tower retrainer's replay buffer */
    char log_level[16], log_format[16];
    uint32_t stats_interval_ms; /* periodic stats log line, 0 = off */
    /* two-tower serving (tower.h, tower_serve.h) */
    char tower_model[RC_CONF_STR];     /* tower.model: tower model file served, "" = none */
    char tower_model_dir[RC_CONF_STR]; /* tower.model_dir: where reload_model may read, "" =
                                        * only tower.model */
    uint64_t tower_max_model_bytes;    /* tower.max_model_bytes: reload_model file size bound */
    uint32_t tower_refresh_rows;       /* tower.refresh_rows: w2v drift checks per flush */
    uint32_t tower_recompute;          /* tower.recompute_per_flush: item vectors recomputed
                                        * per flush at most (drifted w2v vectors) */
    /* background retraining of the served two-tower model (engine.h) */
    uint32_t tower_retrain_interval_s;   /* tower.retrain_interval_s: 0 = off (no buffer,
                                          * no thread) */
    uint32_t tower_replay_clicks;        /* tower.replay_clicks: replay buffer bound */
    uint32_t tower_retrain_min_examples; /* tower.retrain_min_examples: fewer = skipped */
    uint32_t tower_retrain_epochs;       /* tower.retrain_epochs */
    uint32_t tower_retrain_max_seconds;  /* tower.retrain_max_seconds: 0 = no limit */
    uint32_t tower_retrain_threads;      /* tower.retrain_threads */
    int tower_retrain_warm;              /* tower.retrain_warm_start: from the served
                                          * model's weights (else fresh ones) */
    int tower_mirror_fp16;               /* tower.mirror_fp16: the served item-tower
                                          * vectors in fp16 (else float32) */
    /* bounds on what the stream can make recalld hold (OPERATIONS.md "Memory budget") */
    uint32_t max_partitions;  /* index.max_partitions: city x category partitions */
    int index_storage;        /* index.storage: rc_index_storage of the IVF lists */
    int64_t max_future_ms;    /* events.max_future_ms: ts later than max(watermark, wall
                               * clock) + this is refused (future_ts); 0 = off */
    int64_t max_past_ms;      /* events.max_past_ms: ts earlier than watermark - this is
                               * refused (past_ts); 0 = off */
    uint32_t dlq_file_max_mb; /* kafka.dlq_file_max_mb: kafka.dlq_file is rotated to
                               * FILE.1 at this size; 0 = no cap */
    /* scaling out (docs/DESIGN.md "Roles and replicas") */
    int role;                              /* role (--role): rc_role */
    int vectors_publish;                   /* vectors.publish: role all publishes too */
    uint32_t vectors_max_rate;             /* vectors.max_rate: records/s to <topic>.vectors */
    uint32_t vectors_interval_ms;          /* vectors.interval_ms: publisher tick */
    uint32_t vectors_max_pending;          /* vectors.max_pending: records queued in the producer */
    int vectors_bootstrap;                 /* vectors.bootstrap: a trainer's new cities warm */
    uint32_t vectors_bootstrap_timeout_ms; /* vectors.bootstrap_timeout_ms: a run's reading */
    uint64_t vectors_bootstrap_max_records; /* vectors.bootstrap_max_records: read per run */
    /* trainer shards: the repartition by city */
    int repartition_enabled;           /* repartition.enabled: role trainer repartitions */
    uint32_t repartition_max_inflight; /* repartition.max_inflight: forwarded, undelivered */
    /* Where each value came from: origin[i] for the i-th key of the loader's
     * table (rc_conf_origin); file: the last JSON file loaded, "" = none. */
    unsigned char origin[RC_CONF_MAX_KEYS];
    char file[RC_CONF_STR];
} rc_config;

/* What one process does (role, --role). */
typedef enum rc_role {
    RC_ROLE_ALL = 0,     /* consume, train, serve (one process holds the whole model) */
    RC_ROLE_TRAINER = 1, /* as all, and publishes its vectors to <topic>.vectors */
    RC_ROLE_REPLICA = 2, /* no training: vectors from <topic>.vectors, sessions from the
                          * click topic in a group of its own; serves the same protocol */
} rc_role;
/* "all", "trainer", "replica", by rc_role. */
extern const char *const rc_role_names[3];

/* Fills every field with its default. */
void rc_config_defaults(rc_config *c);

/* Loads a JSON file over c (keys present override). Returns 0, RC_ENOENT,
 * RC_EINVAL with "config FILE: KEY: why" or "config FILE:LINE:COL: json error". */
int rc_config_load(rc_config *c, const char *path, char *errbuf, size_t errlen);

/* Same, from a JSON text (tests). */
int rc_config_load_str(rc_config *c, const char *json, char *errbuf, size_t errlen);

/* Names of the keys whose values differ between a and b (static strings;
 * "kafka.config" for the librdkafka properties) into names[0..cap). Returns
 * how many differ (may exceed cap). For SIGHUP: what changed, what needs a
 * restart. */
size_t rc_config_diff(const rc_config *a, const rc_config *b, const char **names, size_t cap);

/* The keys a running daemon applies on SIGHUP (docs/OPERATIONS.md); every
 * other change needs a restart. */
extern const char *const rc_config_reloadable[];
extern const size_t rc_config_nreloadable;
int rc_config_is_reloadable(const char *key);
/* Copies the values of the reloadable keys from src into dst (the daemon's
 * running configuration), nothing else. */
void rc_config_copy_reloadable(rc_config *dst, const rc_config *src);

/* Range and consistency checks. Returns 0 or RC_EINVAL with "WHERE: KEY: why
 * (got VALUE)", WHERE being the file, environment variable or command line
 * that set the key. */
int rc_config_validate(const rc_config *c, char *errbuf, size_t errlen);

/* Sets one key from a string, as the file would (same types, ranges and
 * messages): numbers and booleans are parsed, strings taken as they are.
 * origin: RC_CONF_ENV or RC_CONF_CLI; who names the source in errors
 * ("--brokers", "RECALLD_BROKERS"; borrowed). Returns 0 or RC_EINVAL with
 * "WHO: KEY: why". kafka.config is not a key here: see rc_config_kafka_set. */
int rc_config_set(rc_config *c, const char *key, const char *value, int origin, const char *who,
                  char *errbuf, size_t errlen);

/* Sets librdkafka property key to value (replacing an earlier setting of the
 * same key, e.g. the file's). Values up to RC_CONF_KAFKA_VALUE_MAX bytes,
 * keys up to RC_CONF_KAFKA_KEY_MAX. Returns 0 or RC_EINVAL / RC_E2BIG with
 * "WHO: KEY: why". */
int rc_config_kafka_set(rc_config *c, const char *key, const char *value, int origin,
                        const char *who, char *errbuf, size_t errlen);

/* Parses "KEY=VALUE" (the -X form) and calls rc_config_kafka_set. */
int rc_config_kafka_arg(rc_config *c, const char *kv, int origin, const char *who, char *errbuf,
                        size_t errlen);

/* Applies the environment overrides (table: docs/CONFIG.md, "Environment").
 * An unset or empty variable changes nothing. Returns 0 or RC_EINVAL naming
 * the variable, the key and the value. Reads the environment (getenv): call it
 * from the main thread before other threads start. */
int rc_config_env(rc_config *c, char *errbuf, size_t errlen);

/* The i-th environment override: variable name and the key it sets, or NULL
 * past the end (docs and tests). */
const char *rc_config_env_var(size_t i, const char **key);

/* Builds the librdkafka configuration recalld's consumer would get from c
 * (bootstrap.servers, group.id, every kafka.config/-X property) with
 * rd_kafka_conf_set, and discards it. Returns 0, or RC_EKAFKA with "WHERE:
 * kafka.config: KEY: librdkafka's message". For --check-config. */
int rc_config_kafka_check(const rc_config *c, char *errbuf, size_t errlen);

#endif
