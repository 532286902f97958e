/* engine_tower — two-tower serving in the engine (engine_int.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "recalld/log.h"

/* ---- two-tower serving ----
 * Roles: a LOADER (a request's worker thread, the engine's own loader thread
 * for SIGHUP and the start, or the caller of an offline engine) reads the
 * file, builds a bundle for every existing row and hands it over (pending);
 * the TRAINER adopts it at its next batch boundary (mirrors the rows created
 * meanwhile, publishes it as cur, drops the old one's reference) and keeps
 * cur current after each batch. Readers take a reference to cur under mu.
 * Offline engines (no threads) adopt on the loading thread, their only one. */

int rc__engine_tower_init(rc_engine *e, char *eb, size_t el)
{
    struct rc__engine_tower *t = calloc(1, sizeof *t);
    if (!t)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    pthread_mutex_init(&t->mu, NULL);
    rc_cond_init_mono(&t->cv);
    snprintf(t->conf_path, sizeof t->conf_path, "%s", e->cfg.tower_model);
    e->tower = t;
    return 0;
}

void rc__engine_tower_set_conf_path(rc_engine *e, const char *path)
{
    pthread_mutex_lock(&e->tower->mu);
    snprintf(e->tower->conf_path, sizeof e->tower->conf_path, "%s", path);
    pthread_mutex_unlock(&e->tower->mu);
}

/* Trainer: the word2vec index stored row's vector again (index_stored in
 * engine.c): queued for the refresh, which recomputes it when the served
 * bundle's vector was computed before that (rc_index_row_gen). */
void rc__engine_tower_dirty(rc_engine *e, uint32_t row)
{
    struct rc__engine_tower *t = e->tower;
    if (!atomic_load_explicit(&t->track, memory_order_relaxed))
        return;
    if (row >= t->dirty_cap) {
        size_t cap = t->dirty_cap ? t->dirty_cap : 4096;
        while (cap <= row)
            cap *= 2;
        uint8_t *d = realloc(t->dirty, cap);
        if (!d)
            return; /* the sweep after the next load re-checks every row */
        memset(d + t->dirty_cap, 0, cap - t->dirty_cap);
        t->dirty = d;
        t->dirty_cap = cap;
    }
    if (t->dirty[row])
        return;
    if (t->dq_n == t->dq_cap) { /* grow the ring, unwrapping it */
        uint32_t cap = t->dq_cap ? t->dq_cap * 2 : 4096;
        uint32_t *q = malloc(cap * sizeof *q);
        if (!q)
            return;
        for (uint32_t i = 0; i < t->dq_n; i++)
            q[i] = t->dq[(t->dq_head + i) & (t->dq_cap - 1)];
        free(t->dq);
        t->dq = q;
        t->dq_cap = cap;
        t->dq_head = 0;
    }
    t->dq[(t->dq_head + t->dq_n) & (t->dq_cap - 1)] = row;
    t->dq_n++;
    t->dirty[row] = 1;
}

/* Trainer (or an offline engine's only thread): publishes the pending bundle. */
static void tower_adopt(rc_engine *e)
{
    struct rc__engine_tower *t = e->tower;
    char err[256];
    pthread_mutex_lock(&t->mu);
    rc_tower_serve *b = t->pending;
    t->pending = NULL;
    atomic_store(&t->has_pending, 0);
    pthread_mutex_unlock(&t->mu);
    if (!b)
        return;
    int rc = rc_tower_serve_sync_rows(b, UINT32_MAX);
    if (rc >= 0)
        rc = rc_tower_serve_flush(b, err, sizeof err);
    else
        snprintf(err, sizeof err, "%s", rc_strerror(rc));
    if (rc < 0) /* serve it anyway: the rows it has are right, later ones retry */
        rc_log_warn("engine", "tower: catching up rows failed", "error=\"%s\"", err);
    pthread_mutex_lock(&t->mu);
    rc_tower_serve *old = t->cur;
    t->cur = b;
    memcpy(t->path, t->pend_path, sizeof t->path);
    t->st = t->pend_st;
    t->gen_adopted = t->gen_handed;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    rc_tower_serve_unref(old);
    t->sweep = 0;
    t->sweep_end = rc_tower_serve_rows(b);
}

/* Trainer, after every batch (and idle): keeps the served bundle current. */
void rc__engine_tower_maintain(rc_engine *e, int force)
{
    struct rc__engine_tower *t = e->tower;
    char err[256];
    if (atomic_load(&t->has_pending))
        tower_adopt(e);
    rc_tower_serve *b = t->cur;
    if (!b)
        return;
    int rc = rc_tower_serve_sync_rows(b, UINT32_MAX); /* new items: vectors at once */
    if (rc < 0 && t->sync_errors++ % 10000 == 0)
        rc_log_warn("engine", "tower: new items cannot be vectorised", "error=\"%s\" rows=%u",
                    rc_strerror(rc), rc_tower_serve_rows(b));
    uint32_t budget = cfg_u32(&e->cfg.tower_refresh_rows), maxre = cfg_u32(&e->cfg.tower_recompute);
    uint32_t re_total = 0, re;
    while (budget && t->dq_n && re_total < maxre) {
        uint32_t seg = RC_MIN(RC_MIN(t->dq_n, t->dq_cap - t->dq_head), budget);
        uint32_t used = rc_tower_serve_refresh(b, t->dq + t->dq_head, seg, maxre - re_total, &re);
        for (uint32_t i = 0; i < used; i++)
            t->dirty[t->dq[t->dq_head + i]] = 0;
        t->dq_head = (t->dq_head + used) & (t->dq_cap - 1);
        t->dq_n -= used;
        budget -= used;
        re_total += re;
        if (used < seg)
            break;
    }
    if (budget && re_total < maxre && t->sweep < t->sweep_end) {
        uint32_t seg = RC_MIN(RC_MIN(budget, t->sweep_end - t->sweep), TOWER_SWEEP_SEG);
        for (uint32_t i = 0; i < seg; i++)
            t->seg[i] = t->sweep + i;
        t->sweep += rc_tower_serve_refresh(b, t->seg, seg, maxre - re_total, &re);
    }
    atomic_store_explicit(&t->refresh_pending, (uint64_t)t->dq_n + (t->sweep_end - t->sweep),
                          memory_order_relaxed);
    if (rc_tower_serve_flush(b, err, sizeof err) < 0 && t->index_errors++ % 1000 == 0)
        rc_log_error("engine", "tower: index flush failed", "error=\"%s\"", err);
    uint64_t now = rc_now_ns();
    if (force || now - t->last_maintain_ns > 50 * 1000000ull) {
        t->last_maintain_ns = now;
        if (rc_tower_serve_maintain(b, err, sizeof err) < 0)
            rc_log_error("engine", "tower: index maintenance failed", "error=\"%s\"", err);
    }
}

/* Trainer: the profile side of one applied (or refused as duplicate / late)
 * click: counters as the session store counted it, device and tags as the
 * event carries them (empty tags are no tags, as offline). */
void rc__engine_tower_note(rc_engine *e, const rc_event *ev, uint32_t row, unsigned flags)
{
    uint64_t tags[RC_TAGS_MAX], dev = 0;
    uint32_t nt = 0;
    for (uint32_t i = 0; i < ev->ntags && i < RC_TAGS_MAX; i++)
        if (ev->tag_len[i])
            tags[nt++] = rc_tower_hash(ev->tags[i], ev->tag_len[i]);
    if (ev->device_len)
        dev = rc_tower_hash(ev->device, ev->device_len);
    int applied = !(flags & (RC_SESS_DUPLICATE | RC_SESS_LATE));
    rc_profile_note(e->prof, ev->user, ev->user_len, ev->ts_ms, dev, tags, nt, applied ? 1 : 0,
                    (flags & RC_SESS_NEW_SESSION) ? 1 : 0);
    rc__engine_rt_note(e, ev, row, dev, tags, nt, flags);
}

static double ms_since(uint64_t t0) { return (double)(rc_now_ns() - t0) / 1e6; }

/* Loader: builds a bundle of m (owned) for every row, hands it to the trainer
 * and waits until it is served. Caller set t->loading. */
int rc__engine_tower_build(rc_engine *e, rc_tower_model *m, const char *path, const struct stat *st,
                           char *eb, size_t el)
{
    struct rc__engine_tower *t = e->tower;
    const rc_config *c = &e->cfg;
    uint64_t t0 = rc_now_ns(), last_log = t0;
    rc_tower_serve_opts o = {.index = {.ivf_min = c->ivf_min,
                                       .nprobe = c->nprobe,
                                       .drift = c->drift,
                                       .batch = c->index_batch,
                                       .storage = c->index_storage},
                             .max_items = c->max_items,
                             .drift = c->drift,
                             .w2v_index = e->index,
                             .float_mirror = !c->tower_mirror_fp16};
    rc_tower_serve *b;
    int rc = rc_tower_serve_create(m, e->table, &o, &b, eb, el);
    if (rc)
        return rc;
    atomic_store(&t->track, 1); /* from now on changed rows are queued for re-checks */
    uint32_t flushed = 0;
    atomic_store(&t->load_done, 0);
    atomic_store(&t->load_total, rc_table_size(e->table));
    rc_log_info("engine", "tower: vectorising items", "path=%s items=%u dim=%u", path,
                rc_table_size(e->table), rc_tower_serve_dim(b));
    for (;;) {
        uint32_t have = rc_tower_serve_rows(b), size = rc_table_size(e->table);
        if (atomic_load(&t->cancel)) {
            rc_tower_serve_unref(b);
            return rc_err(eb, el, RC_EAGAIN, "tower: load of %s cancelled (shutting down)", path);
        }
        if (have == size || (e->threads && size - have <= TOWER_NEAR_ROWS))
            break; /* a threaded engine's trainer mirrors the last few at adoption */
        if ((rc = rc_tower_serve_sync_rows(b, have + TOWER_STEP_ROWS)) < 0) {
            rc_tower_serve_unref(b);
            return rc_err(eb, el, rc, "tower: cannot vectorise item row %u: %s", have,
                          rc_strerror(rc));
        }
        have = rc_tower_serve_rows(b);
        atomic_store(&t->load_done, have);
        atomic_store(&t->load_total, size);
        if (have - flushed >= TOWER_FLUSH_ROWS) {
            flushed = have;
            if ((rc = rc_tower_serve_flush(b, eb, el)) < 0 ||
                (rc = rc_tower_serve_maintain(b, eb, el)) < 0) {
                rc_tower_serve_unref(b);
                return rc;
            }
        }
        if (rc_now_ns() - last_log > 2000000000ull) {
            last_log = rc_now_ns();
            rc_log_info("engine", "tower: vectorising items", "done=%u total=%u elapsed_ms=%.0f",
                        have, size, ms_since(t0));
        }
    }
    if ((rc = rc_tower_serve_flush(b, eb, el)) < 0) {
        rc_tower_serve_unref(b);
        return rc;
    }
    pthread_mutex_lock(&t->mu);
    rc_tower_serve_unref(t->pending); /* none in practice: one load at a time */
    t->pending = b;
    snprintf(t->pend_path, sizeof t->pend_path, "%s", path);
    t->pend_st = *st;
    uint64_t gen = ++t->gen_handed;
    atomic_store(&t->has_pending, 1);
    pthread_mutex_unlock(&t->mu);
    if (!e->threads) {
        tower_adopt(e);
    } else {
        pthread_mutex_lock(&t->mu);
        while (t->gen_adopted < gen && !(atomic_load(&t->cancel) && t->pending == b)) {
            rc_cond_wait_ns(&t->cv, &t->mu, 50 * 1000000u);
        }
        if (t->gen_adopted < gen) { /* cancelled before the trainer took it */
            t->pending = NULL;
            atomic_store(&t->has_pending, 0);
            pthread_mutex_unlock(&t->mu);
            rc_tower_serve_unref(b);
            return rc_err(eb, el, RC_EAGAIN, "tower: load of %s cancelled (shutting down)", path);
        }
        pthread_mutex_unlock(&t->mu);
    }
    double ms = ms_since(t0);
    pthread_mutex_lock(&t->mu);
    t->load_ms = ms;
    pthread_mutex_unlock(&t->mu);
    const rc_tower_config *tc = rc_tower_config_of(rc_tower_serve_model(b));
    rc_log_info("engine", "tower: model serving", "path=%s params=%zu dim=%u items=%u load_ms=%.1f",
                path, rc_tower_params(rc_tower_serve_model(b)), tc->dim, rc_tower_serve_rows(b),
                ms);
    if (tc->max_clicks > c->history)
        rc_log_warn("engine",
                    "tower: the model uses more recent clicks than sessions.history "
                    "keeps: user inputs are cut to sessions.history clicks",
                    "max_clicks=%u history=%u", tc->max_clicks, c->history);
    return 0;
}

/* Loader: reads the file (or takes the preloaded model) and builds; records
 * the outcome and clears t->loading. */
static int tower_load(rc_engine *e, const char *path, rc_tower_model *pre, char *eb, size_t el)
{
    struct rc__engine_tower *t = e->tower;
    struct stat st;
    rc_tower_model *m = pre;
    char err[512];
    int rc = 0;
    if (!eb || el == 0) {
        eb = err;
        el = sizeof err;
    }
    eb[0] = '\0';
    if (stat(path, &st))
        rc = rc_err(eb, el, errno == ENOENT ? RC_ENOENT : RC_EIO, "tower model %s: %s", path,
                    strerror(errno));
    else if (!m)
        rc = rc_tower_load(path, &m, eb, el);
    else
        pre = NULL; /* ownership goes to rc__engine_tower_build */
    if (rc == 0)
        rc = rc__engine_tower_build(e, m, path, &st, eb, el);
    rc_tower_destroy(pre); /* not built (stat failed) */
    pthread_mutex_lock(&t->mu);
    t->loading = 0;
    if (rc)
        snprintf(t->last_error, sizeof t->last_error, "%s", eb);
    pthread_mutex_unlock(&t->mu);
    atomic_fetch_add(rc ? &t->failures : &t->loads, 1);
    if (rc)
        rc_log_error("engine", "tower: model load failed: the served model stays", "error=\"%s\"",
                     eb);
    return rc;
}

int rc__engine_tower_begin(rc_engine *e, const char *path, char *out, char *eb, size_t el)
{
    struct rc__engine_tower *t = e->tower;
    pthread_mutex_lock(&t->mu);
    if (!path || !path[0])
        path = t->conf_path;
    snprintf(out, RC_CONF_STR, "%s", path);
    if (!out[0]) {
        pthread_mutex_unlock(&t->mu);
        return rc_err(eb, el, RC_EINVAL,
                      "tower: no model file (tower.model, --model FILE.tower "
                      "or a \"path\")");
    }
    if (t->loading || atomic_load(&t->cancel)) {
        pthread_mutex_unlock(&t->mu);
        return rc_err(eb, el, RC_EAGAIN,
                      atomic_load(&t->cancel) ? "tower: shutting down: no model load"
                                              : "tower: a model load is already in progress");
    }
    t->loading = 1;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int rc_engine_tower_load(rc_engine *e, const char *path, rc_engine_tower_info *info, char *eb,
                         size_t el)
{
    char p[RC_CONF_STR];
    int rc = rc__engine_tower_begin(e, path, p, eb, el);
    if (rc == 0)
        rc = tower_load(e, p, NULL, eb, el);
    if (rc == 0 && info)
        rc_engine_tower_info_get(e, info);
    return rc;
}

static void *tower_loader_main(void *arg)
{
    rc_engine *e = arg;
    struct rc__engine_tower *t = e->tower;
    rc_tower_model *m = t->async_model;
    t->async_model = NULL;
    tower_load(e, t->async_path, m, NULL, 0);
    return NULL;
}

static int tower_spawn(rc_engine *e, char *eb, size_t el)
{
    struct rc__engine_tower *t = e->tower;
    if (t->loader_started) /* finished: loading was 0 */
        pthread_join(t->loader, NULL);
    t->loader_started = 0;
    if (pthread_create(&t->loader, NULL, tower_loader_main, e)) {
        rc_tower_destroy(t->async_model);
        t->async_model = NULL;
        pthread_mutex_lock(&t->mu);
        t->loading = 0;
        pthread_mutex_unlock(&t->mu);
        return rc_err(eb, el, RC_EIO, "tower: cannot start the loader thread");
    }
    t->loader_started = 1;
    return 0;
}

int rc_engine_tower_load_async(rc_engine *e, const char *path, char *eb, size_t el)
{
    int rc = rc__engine_tower_begin(e, path, e->tower->async_path, eb, el);
    return rc ? rc : tower_spawn(e, eb, el);
}

/* Create: the configured model. The file is read here (a bad file fails the
 * start, with its error); the bundle is built on the loader thread of a
 * threaded engine, or right here for an offline one. */
int rc__engine_tower_start(rc_engine *e, char *eb, size_t el)
{
    struct rc__engine_tower *t = e->tower;
    rc_tower_model *m = NULL;
    if (!e->cfg.tower_model[0])
        return 0;
    int rc = rc_tower_load(e->cfg.tower_model, &m, eb, el);
    if (rc)
        return rc;
    if (rc_tower_config_of(m)->w2v_dim != rc_table_dim(e->table)) {
        uint32_t wd = rc_tower_config_of(m)->w2v_dim;
        rc_tower_destroy(m);
        return rc_err(eb, el, RC_EINVAL, "tower model %s: w2v_dim %u does not match model.dim %u",
                      e->cfg.tower_model, wd, rc_table_dim(e->table));
    }
    if ((rc = rc__engine_tower_begin(e, e->cfg.tower_model, t->async_path, eb, el))) {
        rc_tower_destroy(m);
        return rc;
    }
    if (!e->threads)
        return tower_load(e, t->async_path, m, eb, el);
    t->async_model = m;
    return tower_spawn(e, eb, el);
}

void rc_engine_tower_cancel(rc_engine *e)
{
    struct rc__engine_tower *t = e->tower;
    rc__engine_rt_cancel(e);
    atomic_store(&t->cancel, 1);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void rc__engine_tower_stop(rc_engine *e)
{
    struct rc__engine_tower *t = e->tower;
    if (!t)
        return;
    atomic_store(&t->cancel, 1);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->loader_started)
        pthread_join(t->loader, NULL);
    t->loader_started = 0;
}

void rc__engine_tower_free(rc_engine *e)
{
    struct rc__engine_tower *t = e->tower;
    if (!t)
        return;
    rc_tower_serve_unref(t->cur);
    rc_tower_serve_unref(t->pending);
    rc_tower_destroy(t->async_model);
    free(t->dirty);
    free(t->dq);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    e->tower = NULL;
}

/* Any thread: a reference to the served bundle, or NULL. */
rc_tower_serve *rc__engine_tower_acquire(rc_engine *e)
{
    struct rc__engine_tower *t = e->tower;
    pthread_mutex_lock(&t->mu);
    rc_tower_serve *b = t->cur;
    if (b)
        rc_tower_serve_ref(b);
    pthread_mutex_unlock(&t->mu);
    return b;
}

int rc_engine_tower_file_changed(rc_engine *e, const char *path)
{
    struct rc__engine_tower *t = e->tower;
    struct stat st, cur;
    char p[RC_CONF_STR], served[RC_CONF_STR];
    pthread_mutex_lock(&t->mu);
    int loaded = t->cur != NULL;
    snprintf(served, sizeof served, "%s", t->path);
    snprintf(p, sizeof p, "%s", path && path[0] ? path : t->path);
    cur = t->st;
    pthread_mutex_unlock(&t->mu);
    if (!p[0] || stat(p, &st))
        return 0;
    if (!loaded || strcmp(p, served) != 0)
        return 1;
    return st.st_size != cur.st_size || st.st_mtim.tv_sec != cur.st_mtim.tv_sec ||
           st.st_mtim.tv_nsec != cur.st_mtim.tv_nsec || st.st_ino != cur.st_ino;
}

void rc_engine_tower_info_get(rc_engine *e, rc_engine_tower_info *info)
{
    struct rc__engine_tower *t = e->tower;
    memset(info, 0, sizeof *info);
    pthread_mutex_lock(&t->mu);
    rc_tower_serve *b = t->cur;
    if (b)
        rc_tower_serve_ref(b);
    info->loading = t->loading;
    snprintf(info->path, sizeof info->path, "%s", t->path);
    snprintf(info->last_error, sizeof info->last_error, "%s", t->last_error);
    info->load_ms = t->load_ms;
    pthread_mutex_unlock(&t->mu);
    info->load_done = atomic_load(&t->load_done);
    info->load_total = atomic_load(&t->load_total);
    info->loads = atomic_load(&t->loads);
    info->load_failures = atomic_load(&t->failures);
    info->refresh_pending = atomic_load(&t->refresh_pending);
    if (!b)
        return;
    rc_tower_serve_stats ts;
    rc_tower_serve_stats_get(b, &ts);
    const rc_tower_config *c = rc_tower_config_of(rc_tower_serve_model(b));
    info->loaded = 1;
    info->params = rc_tower_params(rc_tower_serve_model(b));
    info->dim = c->dim;
    info->max_clicks = c->max_clicks;
    info->items = ts.rows;
    info->checked = ts.checked;
    info->recomputed = ts.recomputed;
    info->bytes = ts.bytes;
    rc_index_stats_get(rc_tower_serve_index(b), &info->index);
    rc_tower_serve_unref(b);
}

/* A request's user input (tower.h rc_tower_user_in), built exactly as
 * rc_tower_history_user_in builds it offline. */
typedef struct tower_user {
    rc_click clicks[256]; /* recent clicks fetched, oldest first */
    uint32_t nclicks;
    rc_tower_item_in in[RC_TOWER_MAX_CLICKS];
    int64_t ts[RC_TOWER_MAX_CLICKS];
    rc_profile_rec prof;
    rc_tower_user_in u;
} tower_user;

static int tower_user_in(rc_engine *e, rc_tower_serve *b, const char *user, size_t ulen,
                         int64_t now_ms, uint32_t window, tower_user *w)
{
    uint32_t mc = rc_tower_config_of(rc_tower_serve_model(b))->max_clicks;
    uint32_t fetch = RC_MIN(RC_MAX(mc, window), (uint32_t)RC_ARRAY_LEN(w->clicks));
    int has_sess = rc_session_recent(e->sess, user, ulen, w->clicks, fetch, &w->nclicks) == 0;
    int has_prof = rc_profile_get(e->prof, user, ulen, &w->prof) == 0;
    if (!has_sess)
        w->nclicks = 0;
    if (!has_prof)
        memset(&w->prof, 0, sizeof w->prof);
    if (!has_sess && !has_prof)
        return RC_ENOENT;
    uint32_t use = RC_MIN(w->nclicks, RC_MIN(mc, RC_TOWER_MAX_CLICKS)), first = w->nclicks - use;
    for (uint32_t i = 0; i < use; i++) {
        rc_tower_serve_item_in(e->table, w->clicks[first + i].row, &w->in[i]);
        w->ts[i] = w->clicks[first + i].ts_ms;
    }
    if (!now_ms) {
        now_ms = atomic_load_explicit(&e->max_ts_pub, memory_order_relaxed);
        if (now_ms == INT64_MIN || now_ms == 0) /* nothing applied (restored models) */
            now_ms = w->nclicks ? w->clicks[w->nclicks - 1].ts_ms : rc_wall_ms();
    }
    w->u = (rc_tower_user_in){.clicks = w->in,
                              .click_ts = w->ts,
                              .nclicks = use,
                              .device_hash = w->prof.device_hash,
                              .tag_hashes = w->prof.tags,
                              .ntags = w->prof.ntags,
                              .total_clicks = RC_MAX(w->prof.clicks, (uint64_t)w->nclicks),
                              .sessions = RC_MAX(w->prof.sessions, (uint64_t)(w->nclicks > 0)),
                              .now_ms = now_ms};
    return 0;
}

int rc_engine_tower_user_vector(rc_engine *e, const char *user, size_t ulen, int64_t now_ms,
                                float *out, uint32_t cap, uint32_t *dim)
{
    rc_tower_serve *b = rc__engine_tower_acquire(e);
    if (!b)
        return RC_EAGAIN;
    *dim = rc_tower_serve_dim(b);
    tower_user *w = malloc(sizeof *w);
    int rc = !w ? RC_ENOMEM : *dim > cap ? RC_E2BIG : tower_user_in(e, b, user, ulen, now_ms, 0, w);
    if (rc == 0)
        rc = rc_tower_serve_user_vector(b, &w->u, out);
    free(w);
    rc_tower_serve_unref(b);
    return rc;
}

/* Filter f (w2v ids) in the mirror's ids; *empty when a named city/category
 * has no mirrored item yet. */
static void tower_filter(rc_engine *e, rc_tower_serve *b, const rc_index_filter *f,
                         rc_index_filter *mf, uint32_t *mcates, int *empty)
{
    const rc_table *m = rc_tower_serve_table(b);
    uint32_t id;
    *mf = (rc_index_filter){.city = -1, .cates = mcates, .ncates = 0};
    *empty = 0;
    if (f->city >= 0) {
        const char *name = rc_table_city_name(e->table, (uint32_t)f->city);
        if (!name || rc_table_find_city(m, name, strlen(name), &id))
            *empty = 1;
        else
            mf->city = id;
    }
    for (uint32_t i = 0; i < f->ncates; i++) {
        const char *name = rc_table_cate_name(e->table, f->cates[i]);
        if (name && rc_table_find_cate(m, name, strlen(name), &id) == 0)
            mcates[mf->ncates++] = id;
    }
    if (f->ncates && !mf->ncates)
        *empty = 1;
}

int rc__engine_tower_recall(rc_engine *e, const rc_recall_req *req, rc_hit *out, uint32_t *n,
                            int *fallback)
{
    uint32_t cates[64], mcates[64], rows[256], excl[256], nexcl = 0;
    rc_click recent[256];
    int64_t ts[256];
    float w8[256];
    rc_index_filter f, mf;
    int empty;
    rc_recall_timing *tm = req->timing;
    uint64_t t0 = tm ? rc_now_ns() : 0;
    rc_tower_serve *b = rc__engine_tower_acquire(e);
    if (!b)
        return RC_EAGAIN;
    rc__engine_resolve_filter(e, req, &f, cates, &empty);
    tower_user *w = empty ? NULL : malloc(sizeof *w);
    float *q = empty ? NULL : malloc(rc_tower_serve_dim(b) * sizeof *q);
    int rc = 0;
    if (empty)
        goto out;
    if (!w || !q) {
        rc = RC_ENOMEM;
        goto out;
    }
    uint32_t window = cfg_u32(&e->cfg.recall_window);
    rc = tower_user_in(e, b, req->user, req->ulen, req->now_ms, window, w);
    uint32_t nwin = RC_MIN(w->nclicks, window), first = w->nclicks - nwin;
    for (uint32_t i = 0; i < w->nclicks; i++)
        rows[i] = w->clicks[i].row;
    /* Left out of the answer: every recent click the session store holds (as
     * avg), not only the ones the user tower reads. */
    if (rc_session_recent(e->sess, req->user, req->ulen, recent, RC_ARRAY_LEN(recent), &nexcl))
        nexcl = 0;
    for (uint32_t i = 0; i < nexcl; i++)
        excl[i] = recent[i].row;
    if (!nexcl) { /* offline history only (tower_user_in): its clicks */
        memcpy(excl, rows, w->nclicks * sizeof *rows);
        nexcl = w->nclicks;
    }
    for (uint32_t i = 0; i < nwin; i++)
        ts[i] = w->clicks[first + i].ts_ms;
    /* the avg mode's scope: the city of most of the (decayed) recent click weight */
    int64_t hl = req->half_life_ms ? req->half_life_ms : e->cfg.half_life_ms;
    rc_recall_decay_weights(ts, nwin, hl, w8);
    if (!req->city && !req->global && e->cfg.recall_user_city && nwin)
        f.city = rc__engine_user_city(e, rows + first, w8, nwin);
    if (rc == 0) {
        rc = rc_tower_serve_user_vector(b, &w->u, q);
        tower_filter(e, b, &f, &mf, mcates, &empty);
        if (tm)
            tm->query_ns += rc_now_ns() - t0;
        if (rc == 0 && !empty && req->exact)
            rc = rc_recall_exact(rc_tower_serve_table(b), q, req->k, cfg_f32(&e->cfg.overfetch),
                                 &mf, excl, nexcl, out, n);
        else if (rc == 0 && !empty) /* rc_tower_serve_search, with the stages timed */
            rc = rc_recall_search_timed(rc_tower_serve_table(b), rc_tower_serve_index(b), q, req->k,
                                        cfg_f32(&e->cfg.overfetch), &mf, excl, nexcl, out, n, tm);
    }
    if (rc == RC_ENOENT || (rc == 0 && *n == 0)) { /* the avg mode's unknown-user answer */
        uint64_t t1 = tm ? rc_now_ns() : 0;
        *fallback = 1;
        *n = rc__engine_popular(e, &f, excl, nexcl, req->k, out);
        if (tm)
            tm->fallback_ns += rc_now_ns() - t1;
        rc = 0;
    }
out:
    free(q);
    free(w);
    rc_tower_serve_unref(b);
    return rc;
}

/* Any thread: the mirrored row of item in the bundle, or RC_ENOENT. */
static int tower_row(rc_engine *e, rc_tower_serve *b, const char *item, size_t len, uint32_t *row)
{
    if (rc_table_find(e->table, item, len, row) || *row >= rc_tower_serve_rows(b))
        return RC_ENOENT;
    return 0;
}

int rc_engine_tower_item_vector(rc_engine *e, const char *item, size_t len, float *out,
                                uint32_t cap, uint32_t *dim)
{
    uint32_t row;
    rc_tower_serve *b = rc__engine_tower_acquire(e);
    if (!b)
        return RC_EAGAIN;
    *dim = rc_tower_serve_dim(b);
    int rc = *dim > cap ? RC_E2BIG : tower_row(e, b, item, len, &row);
    if (rc == 0)
        rc_table_in_copy(rc_tower_serve_table(b), row, out);
    rc_tower_serve_unref(b);
    return rc;
}

int rc_engine_tower_similar(rc_engine *e, const char *item, size_t len, uint32_t k, rc_hit *out,
                            uint32_t *n)
{
    uint32_t row;
    *n = 0;
    if (k == 0 || k > cfg_u32(&e->cfg.k_max))
        return RC_EINVAL;
    rc_tower_serve *b = rc__engine_tower_acquire(e);
    if (!b)
        return RC_EAGAIN;
    int rc = tower_row(e, b, item, len, &row);
    float *q = rc ? NULL : malloc(rc_tower_serve_dim(b) * sizeof *q);
    if (rc == 0 && !q)
        rc = RC_ENOMEM;
    if (rc == 0) {
        rc_table_in_copy(rc_tower_serve_table(b), row, q);
        rc = rc_tower_serve_search(b, q, k, cfg_f32(&e->cfg.overfetch), NULL, &row, 1, out, n);
    }
    free(q);
    rc_tower_serve_unref(b);
    return rc;
}

int rc_engine_tower_contains(rc_engine *e, uint32_t row)
{
    rc_tower_serve *b = rc__engine_tower_acquire(e);
    int in = b && rc_index_contains(rc_tower_serve_index(b), row);
    rc_tower_serve_unref(b);
    return in;
}

/* Any thread: the "tower" and "profiles" stats objects. */
void rc__engine_tower_stats_json(rc_engine *e, rc_buf *o)
{
    rc_engine_tower_info ti;
    rc_profile_stats ps;
    rc_engine_tower_info_get(e, &ti);
    rc_profile_stats_get(e->prof, &ps);
    rc_buf_printf(o,
                  "\"tower\":{\"loaded\":%s,\"loading\":%s,\"path\":", ti.loaded ? "true" : "false",
                  ti.loading ? "true" : "false");
    rc_buf_json_str(o, ti.path, strlen(ti.path));
    rc_buf_printf(o,
                  ",\"params\":%zu,\"dim\":%u,\"max_clicks\":%u,\"items\":%u,"
                  "\"load_done\":%u,\"load_total\":%u,\"load_ms\":%.1f,\"loads\":%llu,"
                  "\"load_failures\":%llu,\"checked\":%llu,\"recomputed\":%llu,"
                  "\"refresh_pending\":%llu,\"bytes\":%zu,\"last_error\":",
                  ti.params, ti.dim, ti.max_clicks, ti.items, ti.load_done, ti.load_total,
                  ti.load_ms, (unsigned long long)ti.loads, (unsigned long long)ti.load_failures,
                  (unsigned long long)ti.checked, (unsigned long long)ti.recomputed,
                  (unsigned long long)ti.refresh_pending, ti.bytes);
    rc_buf_json_str(o, ti.last_error, strlen(ti.last_error));
    const rc_index_stats *is = &ti.index;
    rc_buf_printf(o,
                  ",\"index\":{\"size\":%llu,\"partitions\":%llu,\"ivf_partitions\":%llu,"
                  "\"pending\":%llu,\"staleness_ms\":%.3f,\"added\":%llu,\"reindexed\":%llu,"
                  "\"skipped_small_drift\":%llu,\"retrains\":%llu,\"retrains_fit\":%llu,"
                  "\"fit\":%.3f,\"new_item_p50_ms\":%.3f,"
                  "\"new_item_p99_ms\":%.3f,\"bytes\":%zu,\"storage\":\"%s\"}",
                  (unsigned long long)is->size, (unsigned long long)is->partitions,
                  (unsigned long long)is->ivf_partitions, (unsigned long long)is->pending,
                  is->staleness_ms, (unsigned long long)is->added,
                  (unsigned long long)is->reindexed, (unsigned long long)is->skipped_small_drift,
                  (unsigned long long)is->retrains, (unsigned long long)is->retrains_fit,
                  is->fit_worst, is->fresh_p50_us / 1000.0, is->fresh_p99_us / 1000.0, is->bytes,
                  rc_index_storage_name(is->storage));
    rc__engine_rt_stats_json(e, o); /* ,"retrain":{...}}, closing "tower" */
    rc_buf_printf(o,
                  "\"profiles\":{\"users\":%llu,\"with_device\":%llu,\"with_tags\":%llu,"
                  "\"evicted_lru\":%llu,\"expired_ttl\":%llu,\"bytes\":%zu}",
                  (unsigned long long)ps.users, (unsigned long long)ps.with_device,
                  (unsigned long long)ps.with_tags, (unsigned long long)ps.evicted_lru,
                  (unsigned long long)ps.expired_ttl, ps.bytes);
}
