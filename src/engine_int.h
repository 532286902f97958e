/* engine_int — internals shared by the engine's sources (not installed).
 *
 *   src/engine.c             the pipeline: batches, decoder and trainer threads,
 *                            event apply, queries, stats, create/destroy
 *   src/engine_checkpoint.c  checkpoint coordination (rc__engine_ck_*)
 *   src/engine_state.c       sessions and co-occurrence counts in a checkpoint (rc__engine_state_*)
 *   src/engine_tower.c       two-tower serving (rc__engine_tower_*)
 *   src/engine_retrain.c     background retraining of the tower model (rc__engine_rt_*)
 *   src/engine_cooc.c        the session co-occurrence channel (rc__engine_cooc_*)
 *   src/engine_shard.c       parallel SGNS of a batch (model.trainer_threads, rc__engine_shard_*)
 *
 * The public API is include/recalld/engine.h; the thread that may call each
 * function below is given where it is defined. */
#ifndef RECALLD_ENGINE_INT_H
#define RECALLD_ENGINE_INT_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include <sys/stat.h>

#include "recalld/checkpoint.h"
#include "recalld/common.h"
#include "recalld/engine.h"
#include "recalld/index.h"
#include "recalld/model.h"
#include "recalld/profile.h"
#include "recalld/sampler.h"
#include "recalld/session.h"
#include "recalld/relearn.h"
#include "recalld/replayctl.h"
#include "recalld/sgns.h"
#include "recalld/tower.h"
#include "recalld/tower_serve.h"

#define ERR_TEXT   112
#define FRESH_RING 4096
#define POP_N      256
#define CTX_MAX    64

struct rc_batch {
    rc_batch *next;
    uint32_t n, cap;
    char *arena; /* raw payloads back to back */
    size_t alen, acap;
    size_t *aoff;
    uint32_t *len;
    int32_t *part;
    int64_t *koff;
    rc_event *ev;
    uint8_t *reason;
    char (*err)[ERR_TEXT];
    uint64_t recv_ns;
    int vectors; /* 1: records of <topic>.vectors for a replica (rc_engine_batch_set_vectors);
                    2: records a trainer installs (rc_engine_batch_set_install) */
};

struct rc__engine_queue {
    rc_batch *head, *tail;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

struct rc_engine {
    rc_config cfg;
    rc_table *table;
    rc_session *sess;
    rc_sampler *sampler;
    rc_index *index;
    rc_sgns_opts sg;
    rc_sgns_work work;
    rc_rng rng;
    rc_anchor *anchor;                /* warm-start anchor, NULL = off (train.anchor) */
    rc_relearn *relearn;              /* replay of recent examples, NULL = off (train.replay_*) */
    double replay_credit;             /* replays owed to the clicks trained so far (trainer only) */
    int64_t replay_ts;                /* event time replays were owed up to (trainer only) */
    double replay_time_owed;          /* replays owed for event time so far (trainer only) */
    _Atomic uint64_t replay_time_pub; /* replay_time_owed as published for stats */
    rc_replayctl *rctl;               /* the replay ratio, adaptive or pinned (with relearn) */
    rc_replayctl_probe *probes;       /* RC_REPLAYCTL_MAX_HELD, for release (adaptive) */
    _Atomic uint64_t replay_pending;  /* replay_credit as published for stats */
    _Atomic uint64_t inflight;        /* batches submitted, not yet trained: events wait */
    _Atomic uint64_t backlog;         /* events waiting upstream (rc_engine_set_backlog) */
    _Atomic uint64_t backlog_ns;      /* when that was said (rc_now_ns) */
    rc_event scratch_ev;              /* rc_engine_apply_click (offline, single thread) */

    uv_loop_t *loop;
    uv_async_t async;
    rc_engine_done_cb done;
    void *ud;

    pthread_mutex_t free_mu;
    rc_batch *free_list;
    rc_batch *all; /* every batch, for destroy (linked through a side array) */
    rc_batch **batches;
    uint32_t nbatches;

    struct rc__engine_queue q_decode, q_train, q_done;
    pthread_t decoder, trainer;
    int threads;
    atomic_int stop;
    cpu_set_t bg_cpus, rest_cpus; /* pipeline.background_cpus, when bg_pin (cpus.h) */
    int bg_pin;

    /* sync: batches submitted vs finished */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t submitted, finished;

    /* counters (atomics: bumped by one thread, read by any) */
    _Atomic uint64_t consumed, applied, ignored, pairs, new_items, rejected_capacity, lost;
    _Atomic uint64_t invalid[RC_EV_REASON_COUNT];
    _Atomic uint64_t total_count, batches_done, index_errors;
    _Atomic double loss_avg;
    int64_t max_ts;             /* trainer only */
    _Atomic int64_t max_ts_pub; /* newest event time applied, for stats */
    uint64_t last_expire_ns, last_maintain_ns, last_trim_ns;
    _Atomic uint64_t trims, trim_last_us; /* pipeline.trim_interval_ms */

    pthread_mutex_t fresh_mu;
    uint32_t fresh_us[FRESH_RING];
    uint32_t fresh_n, fresh_pos;
    rc_hist fresh_hist; /* same samples, as Prometheus buckets (us) */

    pthread_mutex_t pop_mu;
    uint32_t pop[POP_N];
    uint32_t npop;
    uint8_t *in_pop; /* trainer only, by row */
    size_t in_pop_cap;

    struct rc__engine_ckpt *ck;     /* checkpoints: see "---- checkpoints ----" */
    rc_profile *prof;               /* per-user device, tags, counters (two-tower user input) */
    struct rc__engine_tower *tower; /* two-tower serving: see "---- two-tower serving ----" */
    struct retrain *rt; /* background retraining: see "---- background retraining ----" */

    struct rc_cooc *cooc;         /* session co-occurrence channel (NULL: off): src/engine_cooc.c */
    struct rc__engine_shards *sh; /* parallel SGNS (NULL: one thread): src/engine_shard.c */
    _Atomic uint64_t train_cpu_ns; /* trainer thread CPU time in train_batch (stats) */

    /* roles (src/engine_replica.c): the rows whose vector changed, handed to
     * the vector sink at batch boundaries; a replica's state */
    int replica; /* cfg.role == RC_ROLE_REPLICA: sessions only, vectors from records */
    struct rc__engine_vecs *vecs;
    struct rc__engine_replica *rep;
    /* a trainer's install of vector records (src/engine_boot.c, vboot.h) */
    _Atomic uint64_t boot_records, boot_installed, boot_kept, boot_invalid, boot_count;
    struct rc__engine_tinst { /* install_model's table (src/engine_boot.c) */
        pthread_mutex_t mu;
        pthread_cond_t cv;
        const rc_table *src;             /* the install in progress, NULL: none (mu) */
        _Atomic int pending;             /* src handed to the trainer, not finished */
        uint32_t pos;                    /* trainer: next row of src */
        uint32_t rpos;                   /* trainer, replace: next engine row to check */
        int replace;                     /* set with src (mu) */
        int done, rc, waiters, stopping; /* mu */
        uint64_t t0;
        rc_engine_table_install res; /* the trainer's until done */
        char err[160];
        _Atomic uint64_t installs, rows;
    } tinst;
};

/* Settings that SIGHUP may change while queries read them (rc_engine_reload). */
static inline uint32_t cfg_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline float cfg_f32(const float *p)
{
    float v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}

/* Checkpoint state (src/engine_checkpoint.c). */

#define CK_PAUSES 128 /* trainer pauses kept for the p99 */
#define CK_NONE   UINT64_MAX

struct rc__engine_ckpt {
    int enabled, lock_fd;
    rc_checkpoint *snap;
    pthread_t writer;
    int writer_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    int state, stop, again, unchanged, have_result;
    uint64_t after, again_after;
    uint32_t pause_us[CK_PAUSES], npause, pause_pos;
    char last_error[256];
    int take_rc;      /* the trainer's take, for the writer */
    int rows_done;    /* live take (checkpoint.copy false): the writer read the table */
    uint64_t take_t0; /* when the trainer stopped for the take */
    uint64_t take_pause;
    /* the result waiting for the loop (under mu), then the loop's own copy */
    rc_engine_checkpoint_result res;
    int32_t *res_parts, *loop_parts;
    int64_t *res_offs, *loop_offs;
    size_t res_cap, loop_cap;
    char res_err[256], loop_err[256];
    rc_engine_checkpoint_cb cb;
    void *cb_ud;
    atomic_int wanted; /* state == CK_WANTED, for the trainer's cheap check */
    /* trainer only */
    int64_t *next; /* per partition: last processed offset + 1, -1 none */
    uint32_t nparts;
    rc_checkpoint_offset *offs; /* scratch for the meta */
    uint64_t trained, processed, covers;
    uint64_t edits, covers_edits; /* table changes outside batches (install_model, replays) */
    uint64_t covers_replayed;     /* training.replay.replayed at the take */
    /* shared counters */
    _Atomic uint64_t durable_trained; /* `trained` in the last durable checkpoint */
    _Atomic uint64_t trained_pub;     /* `trained`, published for the writer thread */
    _Atomic uint64_t durable_edits;   /* `edits` in the last durable checkpoint */
    _Atomic uint64_t edits_pub;       /* `edits`, published for the writer thread */
    _Atomic uint64_t reserves;        /* copies reserved ahead of a take */
    int reserved;                     /* the current request reserved its copy (writer) */
    _Atomic uint64_t written, failures, skipped, last_seq, last_bytes, last_write_ns;
    _Atomic uint64_t last_pause_ns, max_pause_ns;
    _Atomic int64_t current_ms; /* wall time the state was last known durable, 0 never */
    _Atomic uint32_t keep;
    _Atomic double max_mb_s;
    /* restore (set once in create) */
    rc_checkpoint_meta restored;
    int restored_ok;
    uint64_t restored_users, restored_profiles, restored_cooc_items, restored_tower_clicks,
        restored_dropped; /* its state section */
    int restore_state_failed;
    rc_buf state_buf;                       /* trainer: the next take's state section */
    _Atomic uint64_t state_bytes, state_ns; /* the last take's: size, time to build */
    int invalid_only;                       /* checkpoints existed, none valid: replay the stream */
    uint64_t restore_ns, load_ns;           /* until ready to serve; of which reading the file */
    /* the index built while the checkpoint loads (ck_on_rows, loader thread) */
    rc_index *rx;
    const rc_table *rx_table;
    rc_index_opts rx_opts;
    int rx_failed, prebuilt;
    uint32_t rx_pending;
};

/* Two-tower serving state (src/engine_tower.c). */

#define TOWER_NEAR_ROWS  4096u  /* rows left for the trainer to mirror when adopting */
#define TOWER_STEP_ROWS  16384u /* rows per loader step (cancel check, progress) */
#define TOWER_FLUSH_ROWS 65536u /* loader flushes the index every this many rows */
#define TOWER_SWEEP_SEG  4096u  /* rows per sweep step */

struct rc__engine_tower {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu (the trainer reads cur bare: it is cur's only writer) */
    rc_tower_serve *cur, *pending;
    char path[RC_CONF_STR], pend_path[RC_CONF_STR], conf_path[RC_CONF_STR];
    struct stat st, pend_st; /* of the files at load: SIGHUP reloads when they change */
    uint64_t gen_handed, gen_adopted;
    int loading;
    double load_ms;
    char last_error[256];
    /* the engine's loader thread (start, SIGHUP) */
    pthread_t loader;
    int loader_started;
    rc_tower_model *async_model; /* preloaded at create, built by the loader */
    char async_path[RC_CONF_STR];
    atomic_int has_pending, cancel, track;
    _Atomic uint32_t load_done, load_total;
    _Atomic uint64_t loads, failures, refresh_pending;
    /* trainer only */
    uint8_t *dirty; /* per w2v row: queued in dq */
    size_t dirty_cap;
    uint32_t *dq; /* ring of rows whose w2v vector changed */
    uint32_t dq_cap, dq_head, dq_n;
    uint32_t sweep, sweep_end; /* after an adoption: every row is re-checked */
    uint32_t seg[TOWER_SWEEP_SEG];
    uint64_t last_maintain_ns, sync_errors, index_errors;
};

/* ---- pipeline and queries (src/engine.c) ---- */

/* Trainer (or an offline engine's caller): index flush, sampler, session and
 * profile expiry, tower mirror; force: index maintenance now. */
void rc__engine_maintain(rc_engine *e, int force);
/* Any thread: the request's city and categories as row ids in f (cates: the
 * caller's array for them); *empty = 1 when a named one has no item. */
int rc__engine_resolve_filter(rc_engine *e, const rc_recall_req *r, rc_index_filter *f,
                              uint32_t *cates, int *empty);
/* Any thread: up to k of the most clicked items passing f, rows ex excluded. */
/* Background thread (decoder, trainer, checkpoint writer): names itself
 * "rc-" + thread (at most 12 bytes of thread) and adds
 * pipeline.background_nice to its own nice value (at most 19; Linux nice is
 * per thread and inherited by the threads it starts), and with
 * pipeline.background_policy "idle" moves to SCHED_IDLE (also inherited:
 * shards, index retrains), and with pipeline.background_cpus runs on the
 * background cores only (inherited too); a failure is logged, not fatal. */
void rc__engine_background(rc_engine *e, const char *thread);
/* The calling thread onto the background cores (pipeline.background_cpus);
 * no-op without pinning. */
void rc__engine_pin_background(rc_engine *e, const char *thread);
/* The calling thread only: SCHED_IDLE (pipeline.background_policy "idle": it
 * runs only when no other thread of the machine wants the core, whatever the
 * nice values); 0, or -1 with errno. */
int rc__thread_idle(void);

uint32_t rc__engine_popular(rc_engine *e, const rc_index_filter *f, const uint32_t *ex,
                            uint32_t nex, uint32_t k, rc_hit *out);
/* Any thread: the city holding most of the click weight w of rows (recall scope). */
int64_t rc__engine_user_city(rc_engine *e, const uint32_t *rows, const float *w, uint32_t n);

/* ---- checkpoints (src/engine_checkpoint.c) ---- */

int rc__engine_ck_init(rc_engine *e, char *eb, size_t el);
void rc__engine_ck_note_batch(rc_engine *e, const rc_batch *b);
/* Trainer: a batch without events (a trainer's install batch) was trained:
 * a checkpoint waiting for it (its ticket counts every batch submitted) may
 * go on; no offsets, no counters. */
void rc__engine_ck_note_empty(rc_engine *e);
/* Trainer: the table changed outside a batch (install_model's steps): the
 * next checkpoint is written, not skipped as unchanged. Unlike a batch it
 * satisfies no checkpoint ticket (those count submitted batches). */
void rc__engine_ck_note_edit(rc_engine *e);
int rc__engine_ck_take(rc_engine *e, int force);
int rc__engine_ck_start(rc_engine *e, char *eb, size_t el);
void rc__engine_ck_stop(rc_engine *e);
void rc__engine_ck_free(rc_engine *e);
void rc__engine_ck_deliver(rc_engine *e);
int rc__engine_ck_restore(rc_engine *e, const rc_table_opts *to, const rc_index_opts *io, char *eb,
                          size_t el);
rc_index *rc__engine_ck_prebuilt_index(rc_engine *e);
void rc__engine_ck_restored(rc_engine *e, uint64_t t0);
int rc__engine_ck_was_restored(const rc_engine *e);
void rc__engine_ck_stats_json(rc_engine *e, rc_buf *o);

/* ---- sessions and co-occurrence in a checkpoint (src/engine_state.c) ---- */

/* Trainer, at a take: the state section into b (emptied first; left empty
 * when checkpoint.sessions and checkpoint.cooc are both off). Returns 0 or
 * RC_ENOMEM (b empty: the checkpoint goes without it). */
int rc__engine_state_save(rc_engine *e, rc_buf *b);
/* create_model, once the sessions and the channel exist: a restored
 * checkpoint's state section (what does not fit is logged and counted). */
void rc__engine_state_restore(rc_engine *e, const unsigned char *p, uint64_t n);
/* Any thread: bytes the sessions and the channel hold in memory (above
 * their state section's size), to reserve its room before the first take. */
uint64_t rc__engine_state_estimate(rc_engine *e);

/* ---- two-tower serving (src/engine_tower.c) ---- */

int rc__engine_tower_init(rc_engine *e, char *eb, size_t el);
int rc__engine_tower_start(rc_engine *e, char *eb, size_t el);
void rc__engine_tower_stop(rc_engine *e);
void rc__engine_tower_free(rc_engine *e);
void rc__engine_tower_dirty(rc_engine *e, uint32_t row);
void rc__engine_tower_maintain(rc_engine *e, int force);
void rc__engine_tower_note(rc_engine *e, const rc_event *ev, uint32_t row, unsigned flags);
int rc__engine_tower_recall(rc_engine *e, const rc_recall_req *req, rc_hit *out, uint32_t *n,
                            int *fallback);
void rc__engine_tower_stats_json(rc_engine *e, rc_buf *o);
void rc__engine_tower_set_conf_path(rc_engine *e, const char *path);
/* Loader role (also the retrainer's): takes the loading slot for path (NULL or
 * empty: tower.model) and copies the path to serve into out[RC_CONF_STR]. */
int rc__engine_tower_begin(rc_engine *e, const char *path, char *out, char *eb, size_t el);
/* Loader: builds a bundle of m (owned) for every row, hands it to the trainer
 * and waits until it is served. Caller set t->loading. */
int rc__engine_tower_build(rc_engine *e, rc_tower_model *m, const char *path, const struct stat *st,
                           char *eb, size_t el);
/* Any thread: a reference to the served bundle, or NULL. */
rc_tower_serve *rc__engine_tower_acquire(rc_engine *e);

/* ---- background retraining (src/engine_retrain.c) ---- */

int rc__engine_rt_init(rc_engine *e, char *eb, size_t el);
int rc__engine_rt_start(rc_engine *e, char *eb, size_t el);
void rc__engine_rt_cancel(rc_engine *e);
void rc__engine_rt_stop(rc_engine *e);
void rc__engine_rt_free(rc_engine *e);
void rc__engine_rt_note(rc_engine *e, const rc_event *ev, uint32_t row, uint64_t dev,
                        const uint64_t *tags, uint32_t ntags, unsigned flags);
void rc__engine_rt_stats_json(rc_engine *e, rc_buf *o);
/* The replay buffer (the checkpoint's state section saves and restores it),
 * NULL when retraining is off. */
rc_replay *rc__engine_rt_ring(rc_engine *e);

/* ---- parallel SGNS of a batch (src/engine_shard.c) ----
 *
 * With model.trainer_threads N > 1 a batch is trained in three phases. 1: the
 * trainer thread applies every event as the single writer does (sessions,
 * table, counters, sampler notes, index touches) but, instead of training a
 * click, records it as an example (row, context, learning rate, total count).
 * 2: the examples are grouped by their row's city, and N threads (N - 1
 * helpers and the trainer) claim whole cities, largest first, and train their
 * examples in batch order, each thread with its own generator, work buffers
 * and sampler tally; the sampler is only read.
 * The co-occurrence channel's upkeep (one writer, independent of the vectors)
 * is handed in phase 1 to shard 1's thread, which notes the clicks in batch
 * order while the trainer goes on, then trains its shard.
 * 3: the trainer adds what the shards counted and hands the trained examples
 * to replay, in batch order. Context rows of another city are written by two
 * shards at once without locks (Hogwild, as word2vec's threads). */

/* Create (engine create): NULL e->sh when model.trainer_threads resolves to 1. */
int rc__engine_shard_init(rc_engine *e, char *eb, size_t el);
/* Destroy: joins the helpers (after the trainer thread stopped) and frees. */
void rc__engine_shard_free(rc_engine *e);
/* Trainer, before phase 1: 1 when the clicks of a batch of nevents events
 * are to be recorded; 0 with one thread or a batch too small to be worth a
 * fan-out (then the batch is trained exactly as by the single writer). */
int rc__engine_shard_begin(rc_engine *e, uint32_t nevents);
/* Trainer, phase 1: records a click to train (ctx[0..nctx), at most model.window). */
void rc__engine_shard_defer(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                            float lr, uint64_t total);
/* Trainer, phase 1: records a click for the co-occurrence channel (one
 * writer, independent of the vectors): with 2 or more threads, shard 1's
 * thread notes them in batch order while the trainer goes on with phase 1,
 * then trains its shard; the balance counts them as its load. */
void rc__engine_shard_cooc(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                           int64_t ts_ms);
/* Trainer, phases 2 and 3: trains the recorded examples, then calls
 * done(e, row, ctx, nctx, pairs) for each in batch order and forgets them.
 * *pairs and *loss get the pairs trained and their summed loss. */
void rc__engine_shard_run(rc_engine *e,
                          void (*done)(rc_engine *, uint32_t, const uint32_t *, uint32_t, uint32_t),
                          uint64_t *pairs, double *loss);
/* Any thread: "threads" and per shard "shards" members for the training stats. */
void rc__engine_shard_stats_json(rc_engine *e, rc_buf *o);
/* CPU time of the calling thread, ns. */
uint64_t rc__engine_thread_cpu_ns(void);
/* model.trainer_threads resolved: 0 = the online CPUs. */
uint32_t rc__engine_shard_count(const rc_config *c);

/* ---- roles: the vector sink and the replica (src/engine_replica.c) ---- */

int rc__engine_replica_init(rc_engine *e, char *eb, size_t el); /* create */
void rc__engine_replica_free(rc_engine *e);
/* Trainer: row's input vector changed (or row is new); O(1). */
void rc__engine_vec_note(rc_engine *e, uint32_t row);
/* Trainer, after the batch's writes (rc__engine_maintain): the noted rows go
 * to the vector sink. */
void rc__engine_vec_handoff(rc_engine *e);
/* Trainer: the most-clicked list after row's count changed (engine.c). */
void rc__engine_pop_note(rc_engine *e, uint32_t row);
/* Trainer: a trainer's batch of records to install (b->vectors == 2,
 * src/engine_boot.c). */
void rc__engine_install_batch(rc_engine *e, rc_batch *b);
/* Trainer, between batches: the next chunk of an install_model's table. */
void rc__engine_tinst_step(rc_engine *e);
/* After the trainer stopped: an install left unfinished fails (RC_EAGAIN)
 * and its caller has returned before this does. */
void rc__engine_tinst_stop(rc_engine *e);
/* Trainer: a replica's batch of vector records (b->vectors). */
void rc__engine_replica_batch(rc_engine *e, rc_batch *b);
/* Any thread: ",\"replica\":{...}" for a replica, nothing otherwise. */
void rc__engine_replica_stats_json(rc_engine *e, rc_buf *o);

/* ---- session co-occurrence channel (src/engine_cooc.c) ---- */

int rc__engine_cooc_init(rc_engine *e, char *eb, size_t el); /* create; cooc.max_bytes 0 = off */
void rc__engine_cooc_free(rc_engine *e);
/* Trainer: an applied click (not duplicate, not late) and its session's
 * previous clicks, most recent last. */
void rc__engine_cooc_note(rc_engine *e, uint32_t row, const uint32_t *ctx, uint32_t nctx,
                          int64_t ts_ms);
/* Any thread: req->itemknn or req->fused recall from the weighted clicks,
 * leaving out excl[0..nexcl) (every recent click of the user); RC_ENOENT when
 * it has nothing (the caller falls back to popularity). */
int rc__engine_cooc_recall(rc_engine *e, const rc_recall_req *req, const rc_index_filter *f,
                           const uint32_t *rows, const float *w, uint32_t nclicks,
                           const uint32_t *excl, uint32_t nexcl, rc_hit *out, uint32_t *n,
                           uint64_t t0);
void rc__engine_cooc_stats_json(rc_engine *e, rc_buf *o);

#endif
