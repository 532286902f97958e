/* engine_checkpoint — checkpoint coordination of the engine (engine_int.h). */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "recalld/log.h"

/* ---- checkpoints ----
 * Three parties: the loop thread asks (rc_engine_checkpoint), the trainer takes
 * the snapshot at a batch boundary (the only point where table, counters and
 * offsets agree, the trainer being the only writer), and the checkpoint thread
 * reserves memory before (so the copy does not fault pages in during the
 * trainer's pause) and writes after. States, under ck->mu:
 *   IDLE -> RESERVE (writer) -> WANTED (trainer) -> TAKEN (writer) -> IDLE
 * and the result goes to the loop through e->async. One request can wait
 * behind the one in flight; later requests merge into it (largest ticket). */

enum { CK_IDLE, CK_RESERVE, CK_WANTED, CK_TAKEN };

static const char *const ck_counter_names[] = {"consumed",  "applied",           "ignored", "pairs",
                                               "new_items", "rejected_capacity", "max_ts",  "lost"};

int rc__engine_ck_init(rc_engine *e, char *eb, size_t el)
{
    struct rc__engine_ckpt *k = calloc(1, sizeof *k);
    if (!k)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    e->ck = k;
    k->lock_fd = -1;
    rc_buf_init(&k->state_buf, 0);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    atomic_init(&k->durable_trained, CK_NONE);
    atomic_init(&k->keep, e->cfg.ckpt_keep);
    atomic_init(&k->max_mb_s, e->cfg.ckpt_max_mb_s);
    if (!e->cfg.data_dir[0])
        return 0;
    k->enabled = 1;
    if (mkdir(e->cfg.data_dir, 0755) && errno != EEXIST)
        return rc_err(eb, el, RC_EIO, "data_dir %s: %s", e->cfg.data_dir, strerror(errno));
    int fd = rc_checkpoint_lock_dir(e->cfg.data_dir, eb, el);
    if (fd == RC_EAGAIN)
        return fd;
    if (fd < 0) /* read-only media: restore still works; writes will fail and be reported */
        rc_log_warn("engine", "cannot lock the data directory", "error=\"%s\"", eb ? eb : "");
    k->lock_fd = fd;
    return rc_checkpoint_create(&k->snap, eb, el);
}

/* Trainer: partition p is processed up to next - 1. */
static void ck_note(struct rc__engine_ckpt *k, int32_t p, int64_t next)
{
    if (p < 0)
        return;
    if ((uint32_t)p >= k->nparts) {
        uint32_t n = RC_MAX((uint32_t)p + 1, k->nparts * 2);
        int64_t *nx = realloc(k->next, n * sizeof *nx);
        rc_checkpoint_offset *no = realloc(k->offs, n * sizeof *no);
        if (nx)
            k->next = nx;
        if (no)
            k->offs = no;
        if (!nx || !no) /* out of memory: p's position lags what the model holds */
            return;
        for (uint32_t j = k->nparts; j < n; j++)
            k->next[j] = -1;
        k->nparts = n;
    }
    if (next > k->next[p])
        k->next[p] = next;
}

/* Trainer: positions and message count of a trained batch. */
void rc__engine_ck_note_batch(rc_engine *e, const rc_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        ck_note(e->ck, b->part[i], b->koff[i] + 1);
    e->ck->processed += b->n;
    e->ck->trained++;
    atomic_store_explicit(&e->ck->trained_pub, e->ck->trained, memory_order_relaxed);
}

void rc__engine_ck_note_empty(rc_engine *e)
{
    e->ck->trained++;
    atomic_store_explicit(&e->ck->trained_pub, e->ck->trained, memory_order_relaxed);
}

void rc__engine_ck_note_edit(rc_engine *e)
{
    e->ck->edits++;
    atomic_store_explicit(&e->ck->edits_pub, e->ck->edits, memory_order_relaxed);
}

/* Trainer: counters and offsets as of now. */
static void ck_meta(rc_engine *e, rc_checkpoint_meta *m)
{
    struct rc__engine_ckpt *k = e->ck;
    const uint64_t v[] = {
        k->processed,           atomic_load(&e->applied),   atomic_load(&e->ignored),
        atomic_load(&e->pairs), atomic_load(&e->new_items), atomic_load(&e->rejected_capacity),
        (uint64_t)e->max_ts,    atomic_load(&e->lost)};
    char name[64];
    memset(m, 0, sizeof *m);
    /* kafka.topic is at most 249 bytes (config) */
    memcpy(m->topic, e->cfg.topic, strnlen(e->cfg.topic, RC_CHECKPOINT_TOPIC_MAX));
    m->created_ms = rc_wall_ms();
    for (size_t i = 0; i < RC_ARRAY_LEN(v); i++)
        rc_checkpoint_meta_set(m, ck_counter_names[i], v[i]);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++) {
        snprintf(name, sizeof name, "invalid.%s", rc_event_reason_name((enum rc_event_reason)r));
        rc_checkpoint_meta_set(m, name, atomic_load(&e->invalid[r]));
    }
    for (uint32_t p = 0; p < k->nparts; p++)
        if (k->next[p] >= 0)
            k->offs[m->noffsets++] = (rc_checkpoint_offset){(int32_t)p, k->next[p]};
    m->offsets = k->offs;
}

static void ck_pause_record(struct rc__engine_ckpt *k, uint64_t ns)
{
    atomic_store(&k->last_pause_ns, ns);
    if (ns > atomic_load(&k->max_pause_ns))
        atomic_store(&k->max_pause_ns, ns);
    pthread_mutex_lock(&k->mu);
    k->pause_us[k->pause_pos] = (uint32_t)RC_MIN(ns / 1000, (uint64_t)UINT32_MAX);
    k->pause_pos = (k->pause_pos + 1) % CK_PAUSES;
    k->npause += k->npause < CK_PAUSES;
    pthread_mutex_unlock(&k->mu);
}

/* Trainer thread, between batches: takes the snapshot when one is wanted and
 * every batch it must contain is applied. The copy runs without ck->mu held
 * (the loop thread may take it to queue a request). force: never "unchanged"
 * (offline callers apply clicks outside batches). Returns 1 when taken. */
int rc__engine_ck_take(rc_engine *e, int force)
{
    struct rc__engine_ckpt *k = e->ck;
    rc_checkpoint_meta m;
    if (!k || !atomic_load(&k->wanted))
        return 0;
    pthread_mutex_lock(&k->mu);
    int go = k->state == CK_WANTED && k->trained >= k->after;
    pthread_mutex_unlock(&k->mu);
    if (!go)
        return 0;
    uint64_t t0 = rc_now_ns();
    int unchanged = !force && k->trained == atomic_load(&k->durable_trained) &&
                    k->edits == atomic_load(&k->durable_edits),
        rc = 0;
    /* checkpoint.copy false: no copy; this thread waits below until the writer
     * has read the rows (offline, the caller writes right after, on this thread). */
    int live = !e->cfg.ckpt_copy, wait = 0;
    if (!unchanged) {
        ck_meta(e, &m);
        rc = live ? rc_checkpoint_take_live(k->snap, e->table, &m)
                  : rc_checkpoint_take(k->snap, e->table, &m);
        if (rc == 0) { /* sessions and co-occurrence as of this same boundary */
            uint64_t s0 = rc_now_ns();
            if (rc__engine_state_save(e, &k->state_buf))
                rc_log_warn("engine", "checkpoint without sessions and co-occurrence counts",
                            "why=\"out of memory\"");
            atomic_store(&k->state_bytes, k->state_buf.len);
            atomic_store(&k->state_ns, rc_now_ns() - s0);
            rc_checkpoint_swap_aux(k->snap, &k->state_buf);
        }
        wait = live && rc == 0 && k->writer_started;
    }
    uint64_t pause = rc_now_ns() - t0, replayed = 0;
    if (e->relearn) { /* the replays trained so far are in this take (or the last durable one) */
        rc_relearn_stats rs;
        rc_relearn_stats_get(e->relearn, &rs);
        replayed = rs.replayed;
    }
    if (!unchanged && !wait)
        ck_pause_record(k, pause);
    pthread_mutex_lock(&k->mu);
    k->unchanged = unchanged;
    k->covers = k->trained;
    k->covers_edits = k->edits;
    k->covers_replayed = replayed;
    k->take_pause = unchanged ? 0 : pause;
    k->take_t0 = t0;
    k->take_rc = rc;
    k->rows_done = 0;
    k->state = CK_TAKEN;
    atomic_store(&k->wanted, 0);
    pthread_cond_broadcast(&k->cv);
    while (wait && !k->rows_done)
        pthread_cond_wait(&k->cv, &k->mu);
    pthread_mutex_unlock(&k->mu);
    if (wait)
        ck_pause_record(k, rc_now_ns() - t0);
    return 1;
}

/* Writer thread (rows_done of a live take's write): the trainer may go on. */
static void ck_rows_done(void *ud)
{
    struct rc__engine_ckpt *k = ud;
    pthread_mutex_lock(&k->mu);
    k->rows_done = 1;
    k->take_pause = rc_now_ns() - k->take_t0;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

/* Writer thread: the result for the loop, from the snapshot's meta. Caller
 * holds mu. */
static void ck_result(struct rc__engine_ckpt *k, int rc, const rc_checkpoint_info *info,
                      const char *err, uint64_t covers)
{
    const rc_checkpoint_meta *m = rc_checkpoint_meta_of(k->snap);
    size_t n = rc == 0 && m ? m->noffsets : 0;
    if (n > k->res_cap) {
        int32_t *p = realloc(k->res_parts, n * sizeof *p);
        int64_t *o = realloc(k->res_offs, n * sizeof *o);
        if (p)
            k->res_parts = p;
        if (o)
            k->res_offs = o;
        if (!p || !o) {
            n = 0;
            rc = RC_ENOMEM;
            err = "out of memory for the result";
        } else {
            k->res_cap = n;
        }
    }
    for (size_t i = 0; i < n; i++) {
        k->res_parts[i] = m->offsets[i].partition;
        k->res_offs[i] = m->offsets[i].next;
    }
    snprintf(k->res_err, sizeof k->res_err, "%s", rc ? err : "");
    k->res.rc = rc;
    k->res.unchanged = rc == 0 && k->unchanged;
    k->res.reserved = k->reserved;
    k->res.covers = covers;
    k->res.seq = atomic_load(&k->last_seq);
    k->res.bytes = info && !k->unchanged ? info->bytes : 0;
    k->res.write_ns = info && !k->unchanged ? info->write_ns : 0;
    k->res.pause_ns = k->take_pause;
    k->res.applied = m ? rc_checkpoint_meta_counter(m, "applied", 0) : 0;
    k->res.replayed = k->covers_replayed;
    k->res.n = n;
    k->have_result = 1;
}

/* Writer thread: writes what the trainer took. Returns 0 or RC_E*. */
static int ck_write(rc_engine *e, rc_checkpoint_info *info, char *err, size_t errlen)
{
    struct rc__engine_ckpt *k = e->ck;
    rc_checkpoint_write_opts o = {.dir = e->cfg.data_dir,
                                  .keep = atomic_load(&k->keep),
                                  .max_mb_s = atomic_load(&k->max_mb_s),
                                  .rows_done = k->writer_started ? ck_rows_done : NULL,
                                  .ud = k};
    int rc = rc_checkpoint_write(k->snap, &o, info, err, errlen);
    if (rc) {
        atomic_fetch_add(&k->failures, 1);
        rc_log_error("engine", "checkpoint failed: the previous one stays in place", "error=\"%s\"",
                     err);
        return rc;
    }
    atomic_fetch_add(&k->written, 1);
    atomic_store(&k->last_seq, info->seq);
    atomic_store(&k->last_bytes, info->bytes);
    atomic_store(&k->last_write_ns, info->write_ns);
    rc_log_info("engine", "checkpoint written",
                "path=%s items=%u bytes=%llu write_ms=%.1f "
                "mb_s=%.1f pause_ms=%.2f",
                info->path, info->rows, (unsigned long long)info->bytes, info->write_ns / 1e6,
                info->bytes / 1e6 / RC_MAX(info->write_ns / 1e9, 1e-9),
                atomic_load(&k->last_pause_ns) / 1e6);
    return 0;
}

/* Writer thread: one request, RESERVE to IDLE. Called with mu held; returns
 * with it held. */
static void ck_serve(rc_engine *e)
{
    struct rc__engine_ckpt *k = e->ck;
    rc_checkpoint_info info = {0};
    char err[512] = "";
    uint32_t rows = rc_table_size(e->table);
    uint64_t after = k->after;
    pthread_mutex_unlock(&k->mu);
    /* Room for the rows that arrive before the trainer takes the copy (a few
     * batches: take grows the buffers if they are more). Not when nothing was
     * trained since the last durable checkpoint: that request is most likely
     * "unchanged", and reserving would fault a table's worth of pages in and
     * out on every timer tick of an idle daemon (if a batch comes in before
     * the take after all, the take grows the buffers itself). A request that
     * waits for batches the trainer has not reached yet will hold them: it
     * reserves too. */
    int changed = atomic_load_explicit(&k->trained_pub, memory_order_relaxed) !=
                      atomic_load(&k->durable_trained) ||
                  after > atomic_load(&k->durable_trained) ||
                  atomic_load_explicit(&k->edits_pub, memory_order_relaxed) !=
                      atomic_load(&k->durable_edits),
        reserve = e->cfg.ckpt_copy && changed;
    if (reserve) {
        rc_checkpoint_reserve(k->snap, rows + rows / 64 + 1024, rc_table_dim(e->table));
        atomic_fetch_add(&k->reserves, 1);
    }
    if (changed) {
        /* the state section's room (with or without the table's copy): the
         * last one's size and an eighth, at first what the sessions and the
         * channel hold in memory (more than their section); growing it in
         * the trainer's pause cost 0.9 s at 1M users */
        uint64_t want = atomic_load(&k->state_bytes);
        want += want / 8;
        if (!want)
            want = rc__engine_state_estimate(e);
        if (want)
            rc_buf_reserve_touched(&k->state_buf, (size_t)want);
    }
    pthread_mutex_lock(&k->mu);
    k->reserved = reserve;
    k->state = CK_WANTED;
    atomic_store(&k->wanted, 1);
    while (k->state != CK_TAKEN && !k->stop)
        pthread_cond_wait(&k->cv, &k->mu);
    if (k->state != CK_TAKEN)
        return; /* stopping: the trainer is gone */
    int rc = k->take_rc;
    uint64_t covers = k->covers, covers_edits = k->covers_edits;
    pthread_mutex_unlock(&k->mu);
    if (rc)
        snprintf(err, sizeof err, "checkpoint: out of memory for the snapshot");
    else if (k->unchanged)
        atomic_fetch_add(&k->skipped, 1);
    else
        rc = ck_write(e, &info, err, sizeof err);
    /* The copy is not kept between checkpoints (a second table's worth of
     * memory): the next request reserves it again before the trainer's pause. */
    rc_checkpoint_release(k->snap);
#ifdef __GLIBC__
    malloc_trim(0); /* and the free pages inside malloc's arenas (stats.memory.heap_free_bytes) */
#endif
    if (rc == 0) {
        atomic_store(&k->durable_trained, covers);
        atomic_store(&k->durable_edits, covers_edits);
        atomic_store(&k->current_ms, rc_wall_ms());
    }
    pthread_mutex_lock(&k->mu);
    if (rc)
        snprintf(k->last_error, sizeof k->last_error, "%s", err);
    ck_result(k, rc, &info, err, covers);
    k->state = CK_IDLE;
    if (k->again) {
        k->again = 0;
        k->after = k->again_after;
        k->state = CK_RESERVE;
    }
}

static void *ck_main(void *arg)
{
    rc_engine *e = arg;
    rc__engine_background(e, "checkpoint");
    struct rc__engine_ckpt *k = e->ck;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (k->state != CK_RESERVE && !k->stop)
            pthread_cond_wait(&k->cv, &k->mu);
        if (k->stop)
            break;
        ck_serve(e);
        if (k->have_result && e->loop)
            uv_async_send(&e->async);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

int rc__engine_ck_start(rc_engine *e, char *eb, size_t el)
{
    struct rc__engine_ckpt *k = e->ck;
    if (!k->enabled || !e->loop)
        return 0;
    if (pthread_create(&k->writer, NULL, ck_main, e))
        return rc_err(eb, el, RC_EIO, "engine: cannot start the checkpoint thread");
    k->writer_started = 1;
    return 0;
}

/* After the trainer stopped: ends the checkpoint thread (a write in progress
 * finishes first). */
void rc__engine_ck_stop(rc_engine *e)
{
    struct rc__engine_ckpt *k = e->ck;
    if (!k || !k->writer_started)
        return;
    pthread_mutex_lock(&k->mu);
    k->stop = 1;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->writer, NULL);
    k->writer_started = 0;
}

void rc__engine_ck_free(rc_engine *e)
{
    struct rc__engine_ckpt *k = e->ck;
    if (!k)
        return;
    rc_checkpoint_destroy(k->snap);
    rc_checkpoint_meta_free(&k->restored);
    rc_buf_free(&k->state_buf);
    rc_index_destroy(k->rx);
    free(k->next);
    free(k->offs);
    free(k->res_parts);
    free(k->res_offs);
    free(k->loop_parts);
    free(k->loop_offs);
    if (k->lock_fd >= 0)
        close(k->lock_fd);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
    e->ck = NULL;
}

/* Loop thread (from on_async): hands a finished result to the callback. */
void rc__engine_ck_deliver(rc_engine *e)
{
    struct rc__engine_ckpt *k = e->ck;
    rc_engine_checkpoint_result r;
    if (!k || !k->enabled)
        return;
    pthread_mutex_lock(&k->mu);
    int have = k->have_result;
    k->have_result = 0;
    r = k->res;
    if (have && r.n > k->loop_cap) {
        int32_t *p = realloc(k->loop_parts, r.n * sizeof *p);
        int64_t *o = realloc(k->loop_offs, r.n * sizeof *o);
        if (p)
            k->loop_parts = p;
        if (o)
            k->loop_offs = o;
        if (p && o)
            k->loop_cap = r.n;
    }
    if (have && r.n > k->loop_cap) { /* no memory: report it, commit nothing */
        r.n = 0;
        r.rc = RC_ENOMEM;
        snprintf(k->res_err, sizeof k->res_err, "out of memory for the offsets");
    }
    /* Copied under mu: the writer may produce the next result meanwhile. */
    if (have && r.n) {
        memcpy(k->loop_parts, k->res_parts, r.n * sizeof *k->loop_parts);
        memcpy(k->loop_offs, k->res_offs, r.n * sizeof *k->loop_offs);
    }
    memcpy(k->loop_err, k->res_err, sizeof k->loop_err);
    pthread_mutex_unlock(&k->mu);
    if (!have || !k->cb)
        return;
    r.parts = k->loop_parts;
    r.offsets = k->loop_offs;
    r.error = k->loop_err;
    k->cb(k->cb_ud, &r);
}

void rc_engine_set_checkpoint_cb(rc_engine *e, rc_engine_checkpoint_cb cb, void *ud)
{
    e->ck->cb = cb;
    e->ck->cb_ud = ud;
}

int rc_engine_checkpoint(rc_engine *e, int everything, uint64_t *ticket)
{
    struct rc__engine_ckpt *k = e->ck;
    if (!k->enabled || !e->threads)
        return RC_EINVAL;
    pthread_mutex_lock(&e->sync_mu);
    uint64_t t = everything ? e->submitted : 0;
    pthread_mutex_unlock(&e->sync_mu);
    if (ticket)
        *ticket = t;
    pthread_mutex_lock(&k->mu);
    if (k->state == CK_IDLE) {
        k->state = CK_RESERVE;
        k->after = t;
        pthread_cond_broadcast(&k->cv);
    } else {
        k->again_after = k->again ? RC_MAX(k->again_after, t) : t;
        k->again = 1;
    }
    pthread_mutex_unlock(&k->mu);
    return 0;
}

int rc_engine_checkpoint_now(rc_engine *e, rc_engine_checkpoint_result *r, char *eb, size_t el)
{
    struct rc__engine_ckpt *k = e->ck;
    rc_checkpoint_info info = {0};
    char err[512] = "";
    if (!k->enabled || e->threads)
        return rc_err(eb, el, RC_EINVAL, "engine: checkpoint_now needs data_dir and no loop");
    rc__engine_maintain(e, 1);
    pthread_mutex_lock(&k->mu);
    k->state = CK_WANTED;
    k->after = 0;
    atomic_store(&k->wanted, 1);
    pthread_mutex_unlock(&k->mu);
    rc__engine_ck_take(e, 1);
    int rc = k->take_rc;
    if (rc == 0 && !k->unchanged)
        rc = ck_write(e, &info, err, sizeof err);
    rc_checkpoint_release(k->snap);
    if (rc == 0) {
        atomic_store(&k->durable_trained, k->covers);
        atomic_store(&k->durable_edits, k->covers_edits);
    }
    pthread_mutex_lock(&k->mu);
    ck_result(k, rc, &info, err, k->covers);
    k->have_result = 0;
    k->state = CK_IDLE;
    if (r) {
        *r = k->res;
        r->parts = k->res_parts;
        r->offsets = k->res_offs;
        r->error = k->res_err;
    }
    pthread_mutex_unlock(&k->mu);
    return rc ? rc_err(eb, el, rc, "%s", err) : 0;
}

size_t rc_engine_restored_offsets(const rc_engine *e, int32_t *parts, int64_t *offsets, size_t cap)
{
    const rc_checkpoint_meta *m = &e->ck->restored;
    if (!e->ck->restored_ok || strcmp(m->topic, e->cfg.topic) != 0)
        return 0;
    for (size_t i = 0; i < m->noffsets && i < cap && parts && offsets; i++) {
        parts[i] = m->offsets[i].partition;
        offsets[i] = m->offsets[i].next;
    }
    return m->noffsets;
}

/* Loader's vector thread (rc_checkpoint_hooks): indexes rows as their input
 * vectors arrive, so that the index is rebuilt while the ids are still being
 * read (the two halves of a restore, each ~1 s at 1M rows, overlap). This
 * thread is the index's only writer until the load returns. A failure only
 * leaves the work to create_model. */
static void ck_on_rows(void *ud, rc_table *t, uint32_t first, uint32_t n)
{
    struct rc__engine_ckpt *k = ud;
    char err[256];
    if (k->rx_table != t) { /* a new attempt (an older checkpoint): start over */
        rc_index_destroy(k->rx);
        k->rx = NULL;
        k->rx_table = t;
        k->rx_pending = 0;
        k->rx_failed = rc_index_create(&k->rx_opts, t, &k->rx, err, sizeof err) != 0;
    }
    if (k->rx_failed)
        return;
    for (uint32_t r = first; r < first + n; r++)
        rc_index_touch(k->rx, r);
    if ((k->rx_pending += n) >= 65536) {
        k->rx_pending = 0;
        k->rx_failed = rc_index_flush(k->rx, 0, err, sizeof err) < 0;
    }
}

rc_index *rc__engine_ck_prebuilt_index(rc_engine *e)
{
    struct rc__engine_ckpt *k = e->ck;
    rc_index *ix = NULL;
    if (k->rx && k->rx_table == e->table && !k->rx_failed)
        ix = k->rx;
    else
        rc_index_destroy(k->rx);
    k->rx = NULL;
    k->rx_table = NULL;
    k->prebuilt = ix != NULL;
    return ix;
}

/* create_model: the newest valid checkpoint under data_dir into e->table and
 * the counters. Returns 0, RC_ENOENT (none: start otherwise) or an error. */
int rc__engine_ck_restore(rc_engine *e, const rc_table_opts *to, const rc_index_opts *io, char *eb,
                          size_t el)
{
    struct rc__engine_ckpt *k = e->ck;
    rc_checkpoint_meta *m = &k->restored;
    rc_checkpoint_hooks hooks = {.on_rows = ck_on_rows, .ud = k};
    char path[4200], name[64];
    if (!k->enabled)
        return RC_ENOENT;
    k->rx_opts = *io;
    uint64_t t0 = rc_now_ns();
    int rc = rc_checkpoint_restore_with(e->cfg.data_dir, to, &hooks, &e->table, m, path,
                                        sizeof path, eb, el);
    if (rc) {
        rc_index_destroy(k->rx); /* built for a table the loader dropped */
        k->rx = NULL;
        k->rx_table = NULL;
        int bad = rc == RC_ENOENT ? rc_checkpoint_count_invalid(e->cfg.data_dir) : 0;
        if (bad > 0) {
            k->invalid_only = 1;
            rc_log_warn("engine",
                        "no valid checkpoint: the stream is replayed from the "
                        "beginning of the log (what retention removed is counted as lost)",
                        "data_dir=%s invalid_checkpoints=%d", e->cfg.data_dir, bad);
        }
        return rc;
    }
    k->load_ns = rc_now_ns() - t0;
    k->restored_ok = 1;
    atomic_store(&e->applied, rc_checkpoint_meta_counter(m, "applied", 0));
    atomic_store(&e->consumed, rc_checkpoint_meta_counter(m, "consumed", 0));
    atomic_store(&e->ignored, rc_checkpoint_meta_counter(m, "ignored", 0));
    atomic_store(&e->pairs, rc_checkpoint_meta_counter(m, "pairs", 0));
    atomic_store(&e->new_items, rc_checkpoint_meta_counter(m, "new_items", 0));
    atomic_store(&e->rejected_capacity, rc_checkpoint_meta_counter(m, "rejected_capacity", 0));
    atomic_store(&e->lost, rc_checkpoint_meta_counter(m, "lost", 0));
    e->max_ts = (int64_t)rc_checkpoint_meta_counter(m, "max_ts", (uint64_t)INT64_MIN);
    if (e->max_ts != INT64_MIN)
        atomic_store(&e->max_ts_pub, e->max_ts);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++) {
        snprintf(name, sizeof name, "invalid.%s", rc_event_reason_name((enum rc_event_reason)r));
        atomic_store(&e->invalid[r], rc_checkpoint_meta_counter(m, name, 0));
    }
    k->processed = atomic_load(&e->consumed);
    atomic_store(&k->last_seq, m->seq);
    atomic_store(&k->current_ms, m->created_ms);
    if (strcmp(m->topic, e->cfg.topic) != 0) {
        rc_log_warn("engine", "checkpoint of another topic: its offsets are not used",
                    "checkpoint_topic=%s topic=%s", m->topic, e->cfg.topic);
        return 0;
    }
    for (uint32_t i = 0; i < m->noffsets; i++)
        ck_note(k, m->offsets[i].partition, m->offsets[i].next);
    return 0;
}

int rc__engine_ck_was_restored(const rc_engine *e) { return e->ck->restored_ok; }

int rc_engine_needs_replay(const rc_engine *e) { return e->ck->invalid_only; }

/* create_model, after the index is rebuilt. */
void rc__engine_ck_restored(rc_engine *e, uint64_t t0)
{
    struct rc__engine_ckpt *k = e->ck;
    if (!k->restored_ok)
        return;
    rc__engine_state_restore(e, k->restored.aux, k->restored.aux_len);
    free(k->restored.aux); /* read once: its memory goes back */
    k->restored.aux = NULL;
    k->restored.aux_len = 0;
    k->restore_ns = rc_now_ns() - t0;
    rc_log_info("engine", "checkpoint restored",
                "seq=%llu items=%u applied=%llu partitions=%u users=%llu cooc_items=%llu "
                "tower_clicks=%llu restore_ms=%.1f load_ms=%.1f",
                (unsigned long long)k->restored.seq, rc_table_size(e->table),
                (unsigned long long)atomic_load(&e->applied), k->restored.noffsets,
                (unsigned long long)k->restored_users, (unsigned long long)k->restored_cooc_items,
                (unsigned long long)k->restored_tower_clicks, k->restore_ns / 1e6,
                k->load_ns / 1e6);
}

/* Any thread: the "checkpoint" stats object. */
void rc__engine_ck_stats_json(rc_engine *e, rc_buf *o)
{
    struct rc__engine_ckpt *k = e->ck;
    uint32_t p[CK_PAUSES], n;
    char err[256];
    pthread_mutex_lock(&k->mu);
    n = k->npause;
    memcpy(p, k->pause_us, n * sizeof *p);
    int busy = k->state != CK_IDLE;
    snprintf(err, sizeof err, "%s", k->last_error);
    pthread_mutex_unlock(&k->mu);
    const double q99 = 0.99;
    uint32_t p99 = 0;
    rc_quantiles_u32(p, n, &q99, 1, &p99);
    int64_t cur = atomic_load(&k->current_ms);
    uint64_t bytes = atomic_load(&k->last_bytes), wns = atomic_load(&k->last_write_ns);
    rc_buf_printf(o,
                  "\"checkpoint\":{\"enabled\":%s,\"written\":%llu,\"failures\":%llu,"
                  "\"unchanged\":%llu,\"reserved\":%llu,\"in_progress\":%s,\"seq\":%llu,"
                  "\"age_ms\":%lld,",
                  k->enabled ? "true" : "false", (unsigned long long)atomic_load(&k->written),
                  (unsigned long long)atomic_load(&k->failures),
                  (unsigned long long)atomic_load(&k->skipped),
                  (unsigned long long)atomic_load(&k->reserves), busy ? "true" : "false",
                  (unsigned long long)atomic_load(&k->last_seq),
                  cur ? (long long)(rc_wall_ms() - cur) : -1LL);
    rc_buf_printf(o,
                  "\"bytes\":%llu,\"duration_ms\":%.3f,\"mb_s\":%.1f,\"pause_ms\":%.3f,"
                  "\"pause_p99_ms\":%.3f,\"pause_max_ms\":%.3f,\"restored_seq\":%llu,"
                  "\"restore_ms\":%.1f,",
                  (unsigned long long)bytes, wns / 1e6, wns ? bytes / 1e6 / (wns / 1e9) : 0.0,
                  atomic_load(&k->last_pause_ns) / 1e6, p99 / 1e3,
                  atomic_load(&k->max_pause_ns) / 1e6,
                  (unsigned long long)(k->restored_ok ? k->restored.seq : 0), k->restore_ns / 1e6);
    rc_buf_printf(
        o,
        "\"state_bytes\":%llu,\"state_ms\":%.3f,\"restored_users\":%llu,"
        "\"restored_profiles\":%llu,"
        "\"restored_cooc_items\":%llu,\"restored_tower_clicks\":%llu,"
        "\"restored_dropped\":%llu,"
        "\"restored_state_ok\":%s,\"last_error\":",
        (unsigned long long)atomic_load(&k->state_bytes), atomic_load(&k->state_ns) / 1e6,
        (unsigned long long)k->restored_users, (unsigned long long)k->restored_profiles,
        (unsigned long long)k->restored_cooc_items, (unsigned long long)k->restored_tower_clicks,
        (unsigned long long)k->restored_dropped, k->restore_state_failed ? "false" : "true");
    rc_buf_json_str(o, err, strlen(err));
    rc_buf_puts(o, "}");
}
