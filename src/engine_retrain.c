/* engine_retrain — background retraining of the engine's tower model (engine_int.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine_int.h"
#include "recalld/log.h"
#include "recalld/slice.h"
#include "recalld/retrain.h"

/* ---- background retraining ----
 * The trainer adds every applied click to the replay buffer (rc__engine_rt_note). The
 * retrain thread sleeps on mu/cv until its interval passed or a request came
 * (requested > finished), then runs one retrain (rt_run) outside mu: snapshot,
 * train (retrain.h), save, serve through rc__engine_tower_build like a loader (it takes the
 * loading slot, so a retrain and a load never overlap). Outcomes go to info
 * under mu. Offline engines run rt_run on the caller's thread. */

#define RT_RETRAINED_FILE "tower.retrained"

struct retrain {
    rc_replay *ring; /* NULL: off */
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t requested, finished; /* under mu: rc_engine_retrain_now tickets */
    atomic_int cancel;            /* shutdown; rc_tower_train's cancel flag */
    rc_engine_retrain_info info;  /* under mu, replay stats excepted */
};

int rc__engine_rt_init(rc_engine *e, char *eb, size_t el)
{
    struct retrain *rt = calloc(1, sizeof *rt);
    if (!rt)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    pthread_mutex_init(&rt->mu, NULL);
    rc_cond_init_mono(&rt->cv);
    e->rt = rt;
    rt->info.interval_s = e->cfg.tower_retrain_interval_s;
    if (!e->cfg.tower_retrain_interval_s)
        return 0;
    rt->info.enabled = 1;
    int rc = rc_replay_create(e->cfg.tower_replay_clicks, &rt->ring, eb, el);
    if (rc == 0)
        rc_log_info("engine", "tower: retraining on",
                    "interval_s=%u replay_clicks=%u "
                    "replay_bytes=%zu",
                    e->cfg.tower_retrain_interval_s, e->cfg.tower_replay_clicks,
                    rc_replay_bytes_for(e->cfg.tower_replay_clicks));
    return rc;
}

/* Trainer: one click that reached the session store. Duplicates (a redelivered
 * event) are no new data; late clicks are (the offline log has them too). */
void rc__engine_rt_note(rc_engine *e, const rc_event *ev, uint32_t row, uint64_t dev,
                        const uint64_t *tags, uint32_t ntags, unsigned flags)
{
    if (!e->rt->ring || (flags & RC_SESS_DUPLICATE))
        return;
    rc_replay_add(e->rt->ring, rc_tower_hash(ev->user, ev->user_len), row, ev->ts_ms, dev, tags,
                  ntags);
}

rc_replay *rc__engine_rt_ring(rc_engine *e) { return e->rt ? e->rt->ring : NULL; }

/* Loader role: serves m (owned) as the tower model labelled path. */
static int rt_serve(rc_engine *e, rc_tower_model *m, const char *path, const struct stat *st,
                    char *eb, size_t el)
{
    struct rc__engine_tower *t = e->tower;
    char p[RC_CONF_STR];
    int rc = rc__engine_tower_begin(e, path, p, eb, el);
    if (rc) {
        rc_tower_destroy(m);
        return rc;
    }
    rc = rc__engine_tower_build(e, m, p, st, eb, el);
    pthread_mutex_lock(&t->mu);
    t->loading = 0;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* Saves m to DATA_DIR/tower.retrained (atomic: rc_tower_save renames a synced
 * temp file). *path gets the file, or a label when not saved. Returns 1 when
 * saved. */
static int rt_save(rc_engine *e, const rc_tower_model *m, char *path, struct stat *st)
{
    char err[512];
    memset(st, 0, sizeof *st);
    snprintf(path, RC_CONF_STR, "(retrained, not saved: no data_dir)");
    if (!e->cfg.data_dir[0])
        return 0;
    char file[RC_CONF_STR];
    if (snprintf(file, sizeof file, "%s/%s", e->cfg.data_dir, RT_RETRAINED_FILE) >=
        (int)sizeof file) {
        rc_log_warn("engine", "tower: retrained model not saved: data_dir path too long", NULL);
        snprintf(path, RC_CONF_STR, "(retrained, not saved: path too long)");
        return 0;
    }
    if (rc_tower_save(m, file, err, sizeof err)) {
        rc_log_warn("engine", "tower: retrained model not saved (served anyway)", "error=\"%s\"",
                    err);
        snprintf(path, RC_CONF_STR, "(retrained, not saved: write failed)");
        return 0;
    }
    stat(file, st);
    snprintf(path, RC_CONF_STR, "%s", file);
    rc_log_info("engine", "tower: retrained model saved", "path=%s", file);
    return 1;
}

/* One retrain, start to end; records the outcome. Returns 0 (served),
 * RC_ENOENT (skipped), RC_EAGAIN (cancelled) or the failure's code. */
static int rt_run(rc_engine *e, char *eb, size_t el)
{
    struct retrain *rt = e->rt;
    const rc_config *c = &e->cfg;
    uint64_t t0 = rc_now_ns();
    rc_replay_snap snap = {0};
    rc_retrain_result res = {0};
    rc_tower_model *m = NULL;
    char err[512] = "", path[RC_CONF_STR] = "";
    struct stat st;
    int rc = 0, skipped = 0, saved = 0;
    uint64_t nrun;
    pthread_mutex_lock(&rt->mu);
    nrun = rt->info.done + rt->info.failed + rt->info.skipped;
    rt->info.running = 1;
    pthread_mutex_unlock(&rt->mu);
    rc_tower_serve *b = rc__engine_tower_acquire(e); /* its model is the base: held until trained */
    if (atomic_load(&rt->cancel)) {
        rc = rc_err(err, sizeof err, RC_EAGAIN, "retrain cancelled (shutting down)");
    } else if (!b) {
        skipped = 1;
        rc = rc_err(err, sizeof err, RC_ENOENT,
                    "no tower model served to retrain (tower.model, "
                    "--model FILE.tower or reload_model)");
    } else if (rc_replay_snapshot(rt->ring, 0, &snap)) {
        rc = rc_err(err, sizeof err, RC_ENOMEM, "out of memory for the replay snapshot");
    } else {
        const rc_tower_model *base = rc_tower_serve_model(b);
        rc_retrain_opts o = {.gap_ms = c->gap_ms,
                             .min_examples = c->tower_retrain_min_examples,
                             .train = {.cfg = *rc_tower_config_of(base),
                                       .epochs = c->tower_retrain_epochs,
                                       .threads = c->tower_retrain_threads,
                                       .max_seconds = c->tower_retrain_max_seconds,
                                       .seed = c->seed + nrun + 1, /* another order each time */
                                       .progress = -1,
                                       .quiet = 1,
                                       .init = c->tower_retrain_warm ? base : NULL,
                                       .cancel = &rt->cancel}};
        rc_log_info("engine", "tower: retraining", "clicks=%zu warm_start=%d", snap.n,
                    c->tower_retrain_warm);
        rc = rc_retrain_run(&snap, e->table, &o, &m, &res, err, sizeof err);
        if (rc == 0 && res.skipped) {
            skipped = 1;
            rc = RC_ENOENT;
        }
    }
    rc_tower_serve_unref(b);
    rc_replay_snap_free(&snap);
    if (rc == 0) {
        saved = rt_save(e, m, path, &st);
        rc = rt_serve(e, m, path, &st, err, sizeof err); /* m is the bundle's now */
        m = NULL;
    }
    rc_tower_destroy(m);
    double secs = (double)(rc_now_ns() - t0) / 1e9;
    int cancelled = rc == RC_EAGAIN && atomic_load(&rt->cancel);
    pthread_mutex_lock(&rt->mu);
    rc_engine_retrain_info *in = &rt->info;
    in->running = 0;
    snprintf(in->last_status, sizeof in->last_status, "%s",
             rc == 0     ? "done"
             : skipped   ? "skipped"
             : cancelled ? "cancelled"
                         : "failed");
    snprintf(in->last_error, sizeof in->last_error, "%s", rc ? err : "");
    snprintf(in->last_path, sizeof in->last_path, "%s", rc == 0 && saved ? path : "");
    in->last_seconds = secs;
    in->last_train_seconds = res.train.seconds;
    in->last_clicks = res.clicks;
    in->last_users = res.users;
    in->last_sessions = res.sessions;
    in->last_examples = res.examples;
    in->last_trained = res.train.examples;
    in->last_loss = res.train.loss;
    in->last_first_loss = res.train.first_loss;
    in->last_end_ms = rc_wall_ms();
    if (rc == 0)
        in->done++;
    else if (skipped)
        in->skipped++;
    else
        in->failed++;
    pthread_mutex_unlock(&rt->mu);
    if (rc == 0)
        rc_log_info("engine", "tower: retrained model serving",
                    "path=\"%s\" clicks=%llu users=%llu examples=%llu trained=%llu loss=%.4f "
                    "first_loss=%.4f train_s=%.2f seconds=%.2f",
                    path, (unsigned long long)res.clicks, (unsigned long long)res.users,
                    (unsigned long long)res.examples, (unsigned long long)res.train.examples,
                    res.train.loss, res.train.first_loss, res.train.seconds, secs);
    else if (skipped)
        rc_log_info("engine", "tower: retrain skipped", "reason=\"%s\"", err);
    else
        rc_log_warn("engine", "tower: retrain failed: the served model stays", "error=\"%s\"", err);
    if (eb && el)
        snprintf(eb, el, "%s", rc ? err : "");
    return rc;
}

static void *rt_main(void *arg)
{
    rc_engine *e = arg;
    struct retrain *rt = e->rt;
    /* Background work: Linux nice is per thread, inherited by the training
     * threads rc_tower_train starts. */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19))
        rc_log_warn("engine", "tower: retrain thread keeps its priority", "error=\"%s\"",
                    strerror(errno));
    if (e->cfg.background_idle && rc__thread_idle())
        rc_log_warn("engine", "tower: retrain thread keeps its scheduling policy", "error=\"%s\"",
                    strerror(errno));
    if (e->cfg.request_slice_us) /* a thread the loop started inherits its short slice */
        rc_slice_set(0);
    rc__engine_pin_background(e, "tower-retrain");
    uint64_t period = (uint64_t)e->cfg.tower_retrain_interval_s * 1000000000ull;
    uint64_t next = rc_now_ns() + period;
    pthread_mutex_lock(&rt->mu);
    for (;;) {
        while (!atomic_load(&rt->cancel) && rt->requested == rt->finished && rc_now_ns() < next) {
            uint64_t wait = RC_MIN(next - rc_now_ns(), 1000000000ull);
            rc_cond_wait_ns(&rt->cv, &rt->mu, wait);
        }
        if (atomic_load(&rt->cancel))
            break;
        uint64_t ticket = rt->requested;
        pthread_mutex_unlock(&rt->mu);
        rt_run(e, NULL, 0);
        pthread_mutex_lock(&rt->mu);
        rt->finished = ticket;
        pthread_cond_broadcast(&rt->cv);
        next = rc_now_ns() + period; /* from the end: a long retrain never runs back to back */
    }
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    return NULL;
}

int rc__engine_rt_start(rc_engine *e, char *eb, size_t el)
{
    struct retrain *rt = e->rt;
    if (!rt->ring || !e->threads)
        return 0;
    if (pthread_create(&rt->th, NULL, rt_main, e))
        return rc_err(eb, el, RC_EIO, "engine: cannot start the retrain thread");
    rt->started = 1;
    return 0;
}

void rc__engine_rt_cancel(rc_engine *e)
{
    struct retrain *rt = e->rt;
    if (!rt)
        return;
    atomic_store(&rt->cancel, 1);
    pthread_mutex_lock(&rt->mu);
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
}

void rc__engine_rt_stop(rc_engine *e)
{
    struct retrain *rt = e->rt;
    if (!rt || !rt->started)
        return;
    rc_engine_tower_cancel(e); /* also a bundle of it waiting for the trainer */
    pthread_join(rt->th, NULL);
    rt->started = 0;
}

void rc__engine_rt_free(rc_engine *e)
{
    struct retrain *rt = e->rt;
    if (!rt)
        return;
    rc_replay_destroy(rt->ring);
    pthread_mutex_destroy(&rt->mu);
    pthread_cond_destroy(&rt->cv);
    free(rt);
    e->rt = NULL;
}

void rc_engine_retrain_info_get(rc_engine *e, rc_engine_retrain_info *info)
{
    struct retrain *rt = e->rt;
    pthread_mutex_lock(&rt->mu);
    *info = rt->info;
    pthread_mutex_unlock(&rt->mu);
    memset(&info->replay, 0, sizeof info->replay);
    if (rt->ring)
        rc_replay_stats_get(rt->ring, &info->replay);
}

int rc_engine_retrain_now(rc_engine *e, rc_engine_retrain_info *info, char *eb, size_t el)
{
    struct retrain *rt = e->rt;
    int rc;
    if (!rt->ring)
        rc = rc_err(eb, el, RC_EINVAL,
                    "retraining is off (tower.retrain_interval_s = 0: no "
                    "replay buffer)");
    else if (atomic_load(&rt->cancel))
        rc = rc_err(eb, el, RC_EAGAIN, "shutting down: no retrain");
    else if (!rt->started)
        rc = rt_run(e, eb, el); /* offline engine: this thread is the writer */
    else {
        pthread_mutex_lock(&rt->mu);
        uint64_t ticket = ++rt->requested;
        pthread_cond_broadcast(&rt->cv);
        while (rt->finished < ticket && !atomic_load(&rt->cancel))
            pthread_cond_wait(&rt->cv, &rt->mu);
        int ok = rt->finished >= ticket;
        const char *st = rt->info.last_status;
        rc = !ok || strcmp(st, "cancelled") == 0 ? RC_EAGAIN
             : strcmp(st, "done") == 0           ? 0
             : strcmp(st, "skipped") == 0        ? RC_ENOENT
                                                 : RC_EIO;
        if (!ok)
            rc_err(eb, el, rc, "shutting down: retrain cancelled");
        else if (rc)
            rc_err(eb, el, rc, "%s", rt->info.last_error);
        pthread_mutex_unlock(&rt->mu);
    }
    if (info)
        rc_engine_retrain_info_get(e, info);
    return rc;
}

/* Any thread: ,"retrain":{...}} — the end of the "tower" stats object. */
void rc__engine_rt_stats_json(rc_engine *e, rc_buf *o)
{
    rc_engine_retrain_info ri;
    rc_engine_retrain_info_get(e, &ri);
    rc_buf_printf(o,
                  ",\"retrain\":{\"enabled\":%s,\"running\":%s,\"interval_s\":%u,"
                  "\"done\":%llu,\"failed\":%llu,\"skipped\":%llu,\"last_status\":\"%s\","
                  "\"last_error\":",
                  ri.enabled ? "true" : "false", ri.running ? "true" : "false", ri.interval_s,
                  (unsigned long long)ri.done, (unsigned long long)ri.failed,
                  (unsigned long long)ri.skipped, ri.last_status);
    rc_buf_json_str(o, ri.last_error, strlen(ri.last_error));
    rc_buf_puts(o, ",\"last_path\":");
    rc_buf_json_str(o, ri.last_path, strlen(ri.last_path));
    rc_buf_printf(o,
                  ",\"last_seconds\":%.3f,\"last_train_seconds\":%.3f,\"last_clicks\":%llu,"
                  "\"last_users\":%llu,\"last_sessions\":%llu,\"last_examples\":%llu,"
                  "\"last_trained\":%llu,\"last_loss\":%.4f,\"last_first_loss\":%.4f,"
                  "\"last_end_ms\":%lld,\"replay\":{\"capacity\":%llu,\"fill\":%llu,"
                  "\"added\":%llu,\"tag_lists\":%llu,\"tags_lost\":%llu,\"bytes\":%zu}}},",
                  ri.last_seconds, ri.last_train_seconds, (unsigned long long)ri.last_clicks,
                  (unsigned long long)ri.last_users, (unsigned long long)ri.last_sessions,
                  (unsigned long long)ri.last_examples, (unsigned long long)ri.last_trained,
                  ri.last_loss, ri.last_first_loss, (long long)ri.last_end_ms,
                  (unsigned long long)ri.replay.capacity, (unsigned long long)ri.replay.fill,
                  (unsigned long long)ri.replay.added, (unsigned long long)ri.replay.tag_lists,
                  (unsigned long long)ri.replay.tags_lost, ri.replay.bytes);
}
