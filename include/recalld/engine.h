/* engine — the model and its single writer: item table, sessions, samplers,
 * incremental SGNS trainer and live index, fed by batches of raw events.
 *
 * Pipeline (one owner per stage):
 *   loop thread --raw batch--> decoder thread --decoded--> trainer thread
 *        ^                                                      |
 *        +------------- done batch (uv_async) ------------------+
 * The loop thread copies Kafka payloads into a free batch (rc_engine_batch_*)
 * and submits it; the decoder validates (event.h); the trainer applies valid
 * click events (session -> table -> SGNS -> index touch), flushes the index and
 * hands the batch back; on the loop thread the done callback reports invalid
 * events (dead letters) and the batch is recycled. A bounded number of batches
 * exists (pipeline.queue_batches): when none is free, rc_engine_batch_get
 * returns NULL and the caller stops consuming (backpressure, no loss).
 *
 * Queries (rc_engine_recall, rc_engine_similar, rc_engine_stats_json) are safe
 * from any thread at any time. */
#ifndef RECALLD_ENGINE_H
#define RECALLD_ENGINE_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "recalld/buf.h"
#include "recalld/config.h"
#include "recalld/event.h"
#include "recalld/hist.h"
#include "recalld/index.h"
#include "recalld/recall.h"
#include "recalld/replay.h"
#include "recalld/table.h"

typedef struct rc_engine rc_engine;
typedef struct rc_batch rc_batch;

/* One refused event, reported on the loop thread after its batch is done. */
typedef struct rc_invalid {
    const char *payload; /* raw bytes (borrowed until the done callback returns) */
    size_t len;
    int32_t partition;
    int64_t offset;
    enum rc_event_reason reason;
    const char *error; /* human text naming the field */
} rc_invalid;

/* Loop thread: called once per finished batch with its refused events. */
typedef void (*rc_engine_done_cb)(void *ud, const rc_invalid *inv, size_t n);

/* cfg is copied. loop: where done batches are reported (uv_async); may be NULL
 * for offline use (then call rc_engine_sync to wait for submitted batches). */
/* The index options of a daemon configured by c (index.*): what the engine
 * builds its live index with, and what recalld-eval searches batch models
 * through, so both score through the same index. */
void rc_engine_index_opts(const rc_config *c, rc_index_opts *io);

int rc_engine_create(const rc_config *cfg, uv_loop_t *loop, rc_engine_done_cb done, void *ud,
                     rc_engine **out, char *errbuf, size_t errlen);

/* pipeline.background_cpus as the threaded engine planned it at create, from
 * the creating thread's cores: 1 with the background cores in bg and the
 * request path's in rest (where the caller puts its loop thread), 0 when
 * nothing is pinned (unset, one core, no loop). */
int rc_engine_cpus(const rc_engine *e, cpu_set_t *bg, cpu_set_t *rest);

/* Loop thread. Stops the pipeline threads after the batches already submitted
 * are applied, closes the async handle (run the loop once more to finish), frees. */
void rc_engine_destroy(rc_engine *e);

/* Loop thread. A free batch, or NULL when all are in flight (backpressure). */
rc_batch *rc_engine_batch_get(rc_engine *e);
/* Loop thread. Copies one raw event into b. Returns 0, or RC_E2BIG when the batch
 * is full (submit it and get another). */
int rc_engine_batch_add(rc_batch *b, const char *payload, size_t len, int32_t partition,
                        int64_t offset);
uint32_t rc_engine_batch_count(const rc_batch *b);
/* Loop thread, before submitting b: b holds records of <topic>.vectors
 * (vecpub.h), not click events; an engine created with role replica applies
 * them (see "roles" below). */
void rc_engine_batch_set_vectors(rc_batch *b);
/* Loop thread. Hands b to the pipeline (b must not be used afterwards). */
void rc_engine_submit(rc_engine *e, rc_batch *b);
/* Convenience for offline callers and tests: decode+apply one line synchronously
 * through the same pipeline (waits). Returns the decode reason. */
enum rc_event_reason rc_engine_apply_line(rc_engine *e, const char *line, size_t len);
/* Offline callers only (engine created with loop == NULL): applies one click
 * through the same path as the stream (session, cold start, SGNS, index touch)
 * without JSON. Strings need not be NUL-terminated. Call rc_engine_sync (or
 * rc_engine_flush_index) before searching to make new rows searchable. */
int rc_engine_apply_click(rc_engine *e, const char *user, size_t ulen, const char *item,
                          size_t ilen, const char *city, size_t clen, const char *cate, size_t klen,
                          int64_t ts_ms);
/* Offline callers: flush pending index work now (what the trainer thread does
 * after each batch). */
void rc_engine_flush_index(rc_engine *e);
/* The engine's index (searches are safe from any thread). */
rc_index *rc_engine_index(rc_engine *e);

/* Waits until every submitted batch has been applied and the index flushed. */
void rc_engine_sync(rc_engine *e);
/* Any thread: `events` wait upstream of the pipeline (the consumer's lag).
 * While more than one pipeline's worth (pipeline.queue_batches x
 * kafka.batch) is reported, within the last 2 s, the trainer does not replay
 * (train.replay_ratio): replay only fills idle time. */
void rc_engine_set_backlog(rc_engine *e, uint64_t events);

/* ---- roles (docs/DESIGN.md "Roles and replicas", src/engine_replica.c) ----
 * Vector sink (trainers): after the writes of every batch (and of replays)
 * the trainer thread calls fn(ud, rows, n) with the rows whose input vector
 * changed since the last call, each once (a new row included). Set it on the
 * loop thread before events flow; fn runs on the trainer thread. Setting fn
 * NULL waits for a call in progress: afterwards fn is never called again.
 *
 * Replica (cfg->role == RC_ROLE_REPLICA): click events only place clicks in
 * sessions and profiles (an unknown item gets a row, unindexed until its
 * vector arrives): no SGNS, no counts. Vector batches
 * (rc_engine_batch_set_vectors) upsert each record's item (city, category,
 * count, input vector) when its version is newer than the row's, and index
 * it. stats gets a "replica" object: records applied, stale (ignored), invalid,
 * staleness. */
void rc_engine_set_vector_sink(rc_engine *e, void (*fn)(void *ud, const uint32_t *rows, size_t n),
                               void *ud);
/* Trainer bootstrap (vboot.h, src/engine_boot.c). Loop thread, before
 * submitting b: b holds vector records (vecpub.h) that a trainer installs
 * on the trainer thread, before any click submitted after b: for each, a row
 * the table does not hold, or holds with a lower click count (its own
 * training saw fewer clicks of the item than the record's writer), gets the
 * record's city, category, count, input vector and - when the record has
 * one - output vector, and is indexed; else the row is kept (`kept`). */
void rc_engine_batch_set_install(rc_batch *b);
typedef struct rc_engine_install_stats {
    uint64_t records;   /* records handed over in install batches */
    uint64_t installed; /* rows written from a record */
    uint64_t kept;      /* rows kept: held with at least the record's count */
    uint64_t invalid;   /* not a record, another dimension, table full */
    uint64_t count;     /* clicks added to rows' counts by installs */
} rc_engine_install_stats;
/* Any thread. */
void rc_engine_install_stats_get(rc_engine *e, rc_engine_install_stats *st);
/* A rebuilt item table (install_model; src/engine_boot.c): every row of src
 * replaces the engine's row of the same item id (input and output vectors;
 * the count becomes the larger of the two), or becomes a new row with src's
 * city and category; rows src does not hold keep learning as they were. The
 * trainer thread installs src a chunk of rows at a time between batches, so
 * clicks keep training meanwhile (on a table part old, part new until the
 * last chunk); installed rows are re-indexed and the next checkpoint holds
 * them. Clicks the engine learnt after src was exported are overwritten on
 * the rows src holds. Only role all: a trainer shard holds its cities only
 * and a replica serves the trainers' vectors (RC_EINVAL). Any thread but the
 * trainer; blocks until the last row is installed. src is borrowed until the
 * return. Returns 0, RC_EINVAL (role, dimension), RC_EAGAIN (another install
 * runs, or the engine stops). */
typedef struct rc_engine_table_install {
    uint32_t rows;     /* rows of src */
    uint32_t replaced; /* rows the engine held: now src's vectors */
    uint32_t created;  /* rows new to the engine */
    uint32_t refused;  /* not installed: model.max_items reached, or memory */
    uint32_t reset;    /* replace: rows src does not hold, started again */
    double seconds;    /* from the request to the last row installed */
} rc_engine_table_install;
int rc_engine_install_table(rc_engine *e, const rc_table *src, rc_engine_table_install *res,
                            char *eb, size_t el);
/* install_model "replace": src is a whole new table (a rebuild from random
 * vectors, recalld-train without --init), not an update of the live one.
 * As rc_engine_install_table, then three things the new vector space
 * needs, on the trainer thread before the call returns: every row src does
 * not hold starts again from a small random vector (rc_table_reset_row: its
 * old vector means nothing in the new space; it learns again from its next
 * clicks), the replay buffer is emptied (src trained on those clicks;
 * replaying them would pull the table back toward them twice), and a
 * warm-start anchor (train.anchor) is taken again from the new table.
 * Counts, sessions and the co-occurrence channel stay. */
int rc_engine_replace_table(rc_engine *e, const rc_table *src, rc_engine_table_install *res,
                            char *eb, size_t el);
/* Any thread: installs finished, rows installed by them (stats). */
void rc_engine_install_table_stats(rc_engine *e, uint64_t *installs, uint64_t *rows);
/* Loop thread (replicas): records of the vector topic not yet handed over
 * (the consumer's lag, -1 unknown), for the staleness in stats. */
void rc_engine_set_vector_lag(rc_engine *e, int64_t lag);

/* Any thread. Recall for a user: up to k hits into out (room for k). city and
 * cates filter by name (NULL / 0 = any). *fallback is set to 1 when the user is
 * unknown (or has no usable vectors) and the popular items were returned.
 * Returns 0, RC_EINVAL (k out of range) or RC_EFAISS. */
typedef struct rc_recall_req {
    const char *user;
    size_t ulen;
    uint32_t k;
    const char *city; /* NUL-terminated or NULL */
    const char *const *cates;
    uint32_t ncates;
    int multi_category;   /* 1: per-category vectors and quotas (rc_recall_multi_category) */
    int64_t half_life_ms; /* time decay of the clicks' weights; 0 = config, < 0 = off */
    int exact;            /* 1: brute force over all rows instead of the index (reference) */
    int global;           /* 1: all cities even when recall.scope is "user_city" ("city":"*") */
    rc_mc_quota *quotas;  /* multi_category: receives the plan (room for 64), may be NULL */
    uint32_t *nquotas;
    int two_tower;  /* 1: the two-tower model (see "two-tower serving" below) */
    int64_t now_ms; /* two_tower: the time the user vector is for; 0 = the event-time
                     * watermark (newest applied event) */
    int itemknn;    /* 1: session co-occurrence alone (cooc.h) */
    int fused;      /* 1: co-occurrence and embedding candidates fused (cooc.fuse_weight) */
    /* NULL, or receives the stages' times (added to) */
    rc_recall_timing *timing;
} rc_recall_req;
int rc_engine_recall(rc_engine *e, const rc_recall_req *req, rc_hit *out, uint32_t *n,
                     int *fallback);

/* Any thread. Items most similar to item id (itself excluded). RC_ENOENT when
 * the item is unknown. */
int rc_engine_similar(rc_engine *e, const char *item, size_t len, uint32_t k, rc_hit *out,
                      uint32_t *n);

/* Any thread. The user's recent clicks (oldest first), up to max. */
int rc_engine_user_clicks(rc_engine *e, const char *user, size_t ulen, uint32_t *rows, int64_t *ts,
                          uint32_t max, uint32_t *n);

/* Any thread. Appends the stats object (JSON) to out. bootstrap: Kafka address
 * to report (may be NULL). */
void rc_engine_stats_json(rc_engine *e, rc_buf *out);

/* Counters bumped by the loop thread (consumer side). */
void rc_engine_count_consumed(rc_engine *e, uint64_t n);
/* Events the model will never see: deleted from the log (retention) before
 * they were read. Kept in checkpoints like the other counters; any thread. */
void rc_engine_count_lost(rc_engine *e, uint64_t n);
/* 1 when data_dir held checkpoints but none was valid (corrupt or unreadable):
 * the model did not come from them, so the stream must be replayed. */
int rc_engine_needs_replay(const rc_engine *e);
void rc_engine_count_invalid(rc_engine *e, enum rc_event_reason r, uint64_t n);

const rc_table *rc_engine_table(const rc_engine *e);
const rc_config *rc_engine_config(const rc_engine *e);
/* Valid click events applied to the model so far. */
uint64_t rc_engine_applied(const rc_engine *e);

/* Any thread: the engine's counters (each read atomically; together they are
 * only approximately one instant). invalid[] is indexed by rc_event_reason. */
typedef struct rc_engine_counters {
    uint64_t consumed, applied, ignored, pairs, new_items, rejected_capacity;
    uint64_t lost; /* events deleted from Kafka before they were read (checkpointed) */
    uint64_t invalid[RC_EV_REASON_COUNT];
} rc_engine_counters;
void rc_engine_counters_get(const rc_engine *e, rc_engine_counters *c);
/* Any thread: the session store's figures (users held, evictions, ...). */
struct rc_session_stats;
void rc_engine_session_stats(rc_engine *e, struct rc_session_stats *st);

/* ---- checkpoints (cfg->data_dir set; format and durability: checkpoint.h) ----
 * rc_engine_create locks data_dir (one process per directory) and restores the
 * newest valid checkpoint there: table, counters (events.applied ...) and the
 * Kafka offsets it contains; cfg->model_path only seeds an empty data_dir. The
 * index is rebuilt from the restored vectors before create returns.
 *
 * A checkpoint is requested on the loop thread, taken by the trainer thread at
 * its next batch boundary (table, counters and offsets then agree: the trainer
 * is the only writer) and written by the engine's checkpoint thread; the
 * result comes back on the loop thread through the checkpoint callback. The
 * offsets it reports are durable: commit them, nothing newer. */

typedef struct rc_engine_checkpoint_result {
    int rc;              /* 0, or RC_EIO/RC_ENOMEM: nothing new is durable (error says why) */
    int unchanged;       /* nothing applied since the last durable checkpoint: not rewritten */
    int reserved;        /* the table's copy was reserved before the trainer's pause (not
                            when nothing was trained since the last durable checkpoint) */
    uint64_t covers;     /* batches contained: >= the request's ticket when it includes
                            every batch submitted before the request */
    uint64_t seq, bytes; /* file; bytes 0 when unchanged */
    uint64_t write_ns, pause_ns; /* write (disk) time; trainer pause for the copy */
    uint64_t applied;            /* events.applied contained */
    uint64_t replayed;           /* training.replay.replayed when taken: the replays the table
                                    durable now contains (unchanged: the last written one does) */
    size_t n; /* durable next offsets, n partitions (valid during the callback) */
    const int32_t *parts;
    const int64_t *offsets;
    const char *error; /* "" when rc == 0 */
} rc_engine_checkpoint_result;

/* Loop thread: called once per finished checkpoint request. */
typedef void (*rc_engine_checkpoint_cb)(void *ud, const rc_engine_checkpoint_result *r);

/* Loop thread, before the first request. */
void rc_engine_set_checkpoint_cb(rc_engine *e, rc_engine_checkpoint_cb cb, void *ud);

/* Loop thread. Requests a checkpoint. everything = 0: at the trainer's next
 * batch boundary; 1: only once every batch submitted so far is applied (the
 * shutdown and revoke case). *ticket (NULL ok) receives the number of batches
 * submitted so far (compare with result->covers). A request made while one is
 * in flight runs right after it. Returns 0, or RC_EINVAL without data_dir or
 * without a loop. */
int rc_engine_checkpoint(rc_engine *e, int everything, uint64_t *ticket);

/* Offline engines (loop == NULL) only: takes and writes a checkpoint now on the
 * calling thread. r (NULL ok) describes it. Returns 0, RC_EINVAL, RC_EIO. */
int rc_engine_checkpoint_now(rc_engine *e, rc_engine_checkpoint_result *r, char *errbuf,
                             size_t errlen);

/* Any thread. The offsets of the restored checkpoint (for the consumer's start
 * positions) into parts/offsets (room for cap); returns how many exist (may
 * exceed cap), 0 when nothing was restored or the checkpoint's topic differs
 * from cfg->topic. */
size_t rc_engine_restored_offsets(const rc_engine *e, int32_t *parts, int64_t *offsets, size_t cap);

/* Loop thread (SIGHUP). Applies the settings that can change while running:
 * recall.k_default, recall.k_max, recall.window, index.overfetch,
 * checkpoint.keep, checkpoint.max_mb_s. Readers see the old or the new value
 * of each (relaxed atomics). Other fields of c are ignored. */
void rc_engine_reload(rc_engine *e, const rc_config *c);

/* Any thread: recall.k_default and recall.k_max as currently configured. */
void rc_engine_k_limits(const rc_engine *e, uint32_t *k_default, uint32_t *k_max);
/* recall.mode as the engine runs it (set at create, changed by rc_engine_reload);
 * "fused" (the default) is "avg" when the co-occurrence channel is off. */
int rc_engine_recall_mode(const rc_engine *e);

/* ---- two-tower serving (tower.h, tower_serve.h) ----
 * A tower model file is loaded at create (cfg->tower_model) or later
 * (rc_engine_tower_load); its bundle (tower_serve.h) is BUILT off the trainer —
 * every existing item gets its item-tower vector on the loading thread, with
 * progress in the log — and then handed to the trainer thread, which mirrors
 * the rows created meanwhile and publishes it; from then on the trainer keeps
 * it current after every batch: new items at once (cold start), items whose
 * word2vec vector drifted within tower.refresh_rows checks and
 * tower.recompute_per_flush recomputations per flush. Requests hold a
 * reference to the bundle they started with: a swap never pulls it from under
 * them. A failed load keeps the served model.
 *
 * User input of a request, exactly what rc_tower_history_user_in builds offline:
 * the user's recent clicks from the session store (the last max_clicks of the
 * model; the store holds sessions.history of them), each as item id / city /
 * category hashes + current word2vec vector, with their times; the profile
 * store's device, tags, clicks and sessions (profile.h: every applied click
 * counts, a click reported RC_SESS_NEW_SESSION starts a session); now_ms. */

typedef struct rc_engine_tower_info {
    int loaded;             /* a model is served */
    int loading;            /* a load is in progress */
    char path[RC_CONF_STR]; /* file of the served model */
    size_t params;          /* of the served model */
    uint32_t dim, max_clicks;
    uint32_t items;                 /* item vectors of the served bundle */
    uint32_t load_done, load_total; /* progress of the load in progress */
    double load_ms;                 /* duration of the last successful load */
    uint64_t loads, load_failures;
    uint64_t checked, recomputed, refresh_pending;
    char last_error[256]; /* of the last failed load, "" none */
    rc_index_stats index; /* tower index (zeros when none) */
    size_t bytes;         /* bundle (mirror, int8 copies, model) */
} rc_engine_tower_info;

/* Any thread except the engine's own (loop thread: use the async form; it
 * blocks for the build). Loads path (NULL = cfg->tower_model), builds the
 * bundle and waits until the trainer serves it; info (NULL ok) describes the
 * new model. Returns 0, RC_EAGAIN (a load is already in progress), RC_ENOENT /
 * RC_EIO / RC_ECORRUPT / RC_EINVAL (file, w2v_dim mismatch: errbuf says which;
 * the served model stays), RC_ENOMEM. */
int rc_engine_tower_load(rc_engine *e, const char *path, rc_engine_tower_info *info, char *errbuf,
                         size_t errlen);
/* Loop thread (SIGHUP): the same on a background thread; the outcome is
 * logged and shows in the stats. Returns 0 (started), RC_EAGAIN, RC_EIO. */
int rc_engine_tower_load_async(rc_engine *e, const char *path, char *errbuf, size_t errlen);
/* Any thread (shutdown): a load in progress gives up at its next step and
 * later loads are refused (RC_EAGAIN); the served model keeps serving. A
 * retrain in progress is cancelled too, and no later one starts. */
void rc_engine_tower_cancel(rc_engine *e);
/* Any thread. 1 when path (NULL = the served model's file) differs from the
 * served model's file: another path, or the same path with another mtime or
 * size (or no model is served and path names a file). */
int rc_engine_tower_file_changed(rc_engine *e, const char *path);
/* Any thread. */
void rc_engine_tower_info_get(rc_engine *e, rc_engine_tower_info *info);
/* Any thread. The served user-tower vector of user at now_ms (0 = the
 * watermark) into out (room for cap floats); *dim its size. Returns 0,
 * RC_EAGAIN (no model served), RC_ENOENT (user has neither clicks nor a
 * profile), RC_E2BIG (cap too small), RC_ENOMEM. */
int rc_engine_tower_user_vector(rc_engine *e, const char *user, size_t ulen, int64_t now_ms,
                                float *out, uint32_t cap, uint32_t *dim);
/* Any thread. The served item-tower vector of item (the mirror's current
 * vector). Returns 0, RC_EAGAIN, RC_ENOENT (unknown or not yet vectorised). */
int rc_engine_tower_item_vector(rc_engine *e, const char *item, size_t len, float *out,
                                uint32_t cap, uint32_t *dim);
/* Any thread. Items nearest to item's tower vector in the tower index (itself
 * excluded). Returns 0, RC_EAGAIN, RC_ENOENT, RC_EINVAL (k). */
int rc_engine_tower_similar(rc_engine *e, const char *item, size_t len, uint32_t k, rc_hit *out,
                            uint32_t *n);
/* Any thread: 1 when the row is searchable in the served tower index. */
int rc_engine_tower_contains(rc_engine *e, uint32_t row);

/* ---- background retraining of the two-tower model (retrain.h, replay.h) ----
 * Off by default (tower.retrain_interval_s = 0: no buffer, no thread). On:
 *  - the trainer adds every applied click (duplicates excluded) to a replay
 *    buffer of the newest tower.replay_clicks clicks (replay.h: 40 bytes a
 *    click plus tag lists, allocated at create);
 *  - a retrain thread (threaded engines; nice 19, so the trainer and the
 *    searches keep their cores) wakes tower.retrain_interval_s after the end
 *    of the previous retrain (or the start), or at rc_engine_retrain_now:
 *    snapshots the buffer, trains with the SERVED model's configuration,
 *    warm-started from its weights (tower.retrain_warm_start, default) or
 *    from fresh ones, tower.retrain_epochs epochs on tower.retrain_threads
 *    threads, at most tower.retrain_max_seconds; saves the model atomically to
 *    DATA_DIR/tower.retrained when data_dir is set (logged; a restart serves
 *    it with tower.model or --model), and serves it through the loaders'
 *    path: its bundle is built on the retrain thread, adopted by the trainer,
 *    published (requests keep the bundle they started with);
 *  - skipped (logged, counted, the served model stays) when no model is
 *    served (a retrain needs one: load it with tower.model or reload_model)
 *    or the buffer holds fewer than tower.retrain_min_examples examples
 *    (clicks that are not the first of their session); failed when training,
 *    saving or the bundle fails, or a model load is in progress;
 *  - rc_engine_tower_cancel (SIGTERM) cancels a retrain in progress at its
 *    next training step and refuses later ones.
 * Offline engines (no loop) keep the buffer and retrain only on the caller's
 * thread in rc_engine_retrain_now (their only writer). */

typedef struct rc_engine_retrain_info {
    int enabled; /* tower.retrain_interval_s > 0 */
    int running; /* a retrain is in progress */
    uint32_t interval_s;
    uint64_t done, failed, skipped; /* outcomes so far (cancelled ones count as failed) */
    char last_status[16];           /* "" (none yet), "done", "skipped", "failed", "cancelled" */
    char last_error[256];           /* why the last one was skipped or failed, "" */
    char last_path[RC_CONF_STR];    /* where the last done one was saved, "" = not saved */
    double last_seconds;            /* duration of the last one (snapshot to serving) */
    double last_train_seconds;      /* of it, rc_tower_train */
    uint64_t last_clicks, last_users, last_sessions, last_examples; /* its data */
    uint64_t last_trained; /* examples processed (all epochs) */
    double last_loss, last_first_loss;
    int64_t last_end_ms;    /* wall clock of its end, 0 = none yet */
    rc_replay_stats replay; /* the buffer (zeros when off) */
} rc_engine_retrain_info;

/* Any thread but the engine's own (threaded engines: waits for the retrain
 * thread; offline engines: runs here). Retrains now (after the one in
 * progress, if any) and waits for the outcome; info (NULL ok) describes it.
 * Returns 0 (the new model is served), RC_EINVAL (retraining is off),
 * RC_ENOENT (skipped: errbuf says why), RC_EAGAIN (shutting down /
 * cancelled), or the failure's code (errbuf says why). */
int rc_engine_retrain_now(rc_engine *e, rc_engine_retrain_info *info, char *errbuf, size_t errlen);
/* Any thread. */
void rc_engine_retrain_info_get(rc_engine *e, rc_engine_retrain_info *info);

/* Any thread: freshness of every finished batch (consumed -> applied and index
 * flushed), microseconds, exported in seconds. Lives as long as e. */
const rc_hist *rc_engine_freshness(const rc_engine *e);

#endif
