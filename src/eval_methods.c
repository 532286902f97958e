/* eval_methods — the methods recalld-eval compares (see eval.h): popularity,
 * session item-kNN, the batch models (skip-gram, CBOW) and prequential
 * streaming through the daemon's engine (cold, and warm-started from a batch
 * model). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/eval.h"
#include "recalld/model.h"
#include "recalld/recall.h"
#include "recalld/tune.h"
#include "recalld/userq.h"
#include "eval_int.h"

#define NO_POS UINT32_MAX

void rc__eval_acc_report(const rc_eval_acc *a, const rc_eval_split *s, rc_eval_report *rep)
{
    rc_eval_acc_result(a, s->count, s->ncatalog, &rep->m);
    rep->has_slices = a->slices != NULL;
    for (unsigned i = 0; a->slices && i < RC_EVAL_NSLICES; i++)
        rc_eval_acc_slice_result(a, i, s->count, s->ncatalog, &rep->slice[i]);
}

/* The accumulator of a method's pass: env->acc when given, else *own
 * (initialised here; the caller frees it when *a == own). */
static int pass_acc(const rc_eval_env *env, rc_eval_acc *own, rc_eval_acc **a)
{
    *a = env->acc;
    if (env->acc)
        return 0;
    *a = own;
    if (rc_eval_acc_init(own, env->split->nitems))
        return RC_ENOMEM;
    own->slices = env->slices;
    return 0;
}

int rc__eval_score_all(const rc_eval_env *env, const rc_eval_predictor *pr, const char *what,
                       rc_eval_report *rep, char *eb, size_t el)
{
    const rc_eval_split *s = env->split;
    rc_eval_acc own, *acc;
    int rc = pass_acc(env, &own, &acc);
    if (rc)
        return rc_err(eb, el, rc, "%s: out of memory", what);
    rc = rc_eval_predict_all(s, pr, acc);
    if (rc)
        rc_err(eb, el, rc, "%s: prediction failed: %s", what, rc_strerror(rc));
    else
        rc__eval_acc_report(acc, s, rep);
    if (acc == &own)
        rc_eval_acc_free(&own);
    return rc;
}

static int run_popularity(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    rc_eval_predictor pr;
    rc_eval_popularity(env->split, &pr);
    return rc__eval_score_all(env, &pr, "eval", rep, eb, el);
}

static int run_itemknn(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    rc_eval_knn *k = NULL;
    rc_eval_predictor pr;
    int rc = rc_eval_knn_create(env->split, 0, &k, eb, el);
    if (rc)
        return rc;
    rc_eval_knn_predictor(k, &pr);
    rc = rc__eval_score_all(env, &pr, "eval", rep, eb, el);
    rc_eval_knn_destroy(k);
    return rc;
}

int rc_eval_train_model(const rc_eval_env *env, const rc_train_opts *o, rc_table **t, rc_index **ix,
                        char *eb, size_t el)
{
    rc_train_opts to = *o;
    int rc;
    *t = NULL;
    *ix = NULL;
    if (env->quiet) {
        to.progress = -1;
        to.quiet = 1;
    }
    if ((rc = rc_train_run(&to, env->log, env->split->train_mask, t, NULL, eb, el)))
        return rc;
    if ((rc = rc__eval_index_build(env, *t, ix, eb, el))) {
        rc_table_destroy(*t);
        *t = NULL;
    }
    return rc;
}

/* The settings of a batch method: the base ones, or tuned on a validation
 * split carved from the training sessions. */
static int settings(rc_eval_env *env, enum rc_sgns_mode mode, rc_eval_report *rep, char *eb,
                    size_t el)
{
    rc_train_opts o = env->train;
    o.mode = mode;
    rep->has_settings = 1;
    rep->settings = rc_tune_resolve(&o);
    if (!env->tune)
        return 0;
    rc_index_opts io;
    float overfetch, pop_weight;
    int rc = rc__eval_index_config(env, &io, &overfetch, &pop_weight, eb, el);
    if (rc)
        return rc;
    rc_tune_opts to = {.seconds = env->tune_seconds,
                       .fixed_mask = env->fixed_mask,
                       .overfetch = overfetch,
                       .index = &io,
                       .pop_weight = pop_weight,
                       .quiet = env->quiet};
    rc_tune_result tr;
    /* The validation split cuts the training part by the quantile, even
     * when the split itself is a period of the daily protocol. */
    rc_eval_opts vo = env->split->opts;
    vo.period_start_ms = vo.period_end_ms = 0;
    rc = rc_tune_run(&to, &o, env->log, env->split->train_mask, &vo, &tr, eb, el);
    if (rc)
        return rc;
    rep->settings = tr.best;
    rep->tuned = 1;
    rep->tune_hr50 = tr.hr50;
    rep->tune_trials = tr.trials;
    rep->tune_seconds = tr.seconds;
    return 0;
}

static int run_batch_mc(rc_eval_env *env, rc_eval_report *rep, enum rc_sgns_mode mode,
                        int multi_category, char *eb, size_t el)
{
    rc_table *t = NULL;
    rc_index *ix = NULL;
    rc_eval_embed *em = NULL;
    rc_eval_predictor pr;
    int rc;
    if (multi_category && env->have_sgns) {
        /* Same (tuned) skip-gram settings as the sgns row: only the recall differs. */
        rep->has_settings = 1;
        rep->settings = env->sgns.settings;
        rep->tuned = env->sgns.tuned;
    } else if ((rc = settings(env, mode, rep, eb, el))) {
        return rc;
    }
    if ((rc = rc_eval_train_model(env, &rep->settings, &t, &ix, eb, el)))
        return rc;
    if ((rc = rc__eval_embed_new(env, env->split, t, ix, &em, eb, el)))
        goto out;
    if (multi_category) {
        rc_mc_opts mo = {.serial = 1};
        rc_eval_embed_multi_category(em, &mo);
    } else if ((rc = rc__eval_embed_query_setup(env, em, eb, el))) {
        goto out;
    } else if (env->ann_recall && !env->exact && (rc = rc_eval_embed_compare(em, 1))) {
        rc_err(eb, el, rc, "eval: out of memory");
        goto out;
    }
    rc_eval_embed_predictor(em, &pr);
    if ((rc = rc__eval_score_all(env, &pr, "eval", rep, eb, el)))
        goto out;
    if (env->ann_recall && !env->exact && !multi_category) {
        rep->has_ann = 1;
        rep->ann_recall50 = rc_eval_embed_ann_recall(em, &rep->ann_n);
    }
    if (mode == RC_SGNS_SKIPGRAM && !multi_category) {
        env->have_sgns = 1;
        env->sgns = *rep;
    }
out:
    rc_eval_embed_destroy(em);
    rc_index_destroy(ix);
    if (!rc && mode == RC_SGNS_SKIPGRAM && !multi_category && env->keep_w2v && !env->w2v) {
        env->w2v = t; /* the towers build on this very table */
        t = NULL;
    }
    rc_table_destroy(t);
    return rc;
}

static int run_batch(rc_eval_env *env, rc_eval_report *rep, enum rc_sgns_mode mode, char *eb,
                     size_t el)
{
    return run_batch_mc(env, rep, mode, 0, eb, el);
}

/* 58.com's multi-category parallel recall on the skip-gram model: per-category
 * query vectors searched restricted to their category, merged by quotas. */
static int run_multi_category(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_batch_mc(env, rep, RC_SGNS_SKIPGRAM, 1, eb, el);
}

static int run_sgns(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_batch(env, rep, RC_SGNS_SKIPGRAM, eb, el);
}

static int run_cbow(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_batch(env, rep, RC_SGNS_CBOW, eb, el);
}

/* ---- prequential streaming ---- */

struct replay {
    const rc_clicklog *log;
    size_t *order; /* record indices, in time order */
    size_t n;
    uint32_t *pos_of;   /* per record: prediction index or NO_POS */
    uint32_t *split_of; /* per record with a prediction: the split it belongs to */
};

int rc__eval_by_time(const void *a, const void *b, void *ud)
{
    const rc_clicklog *log = ud;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int64_t tx = log->recs[x].ts_ms, ty = log->recs[y].ts_ms;
    if (tx != ty)
        return tx < ty ? -1 : 1;
    return (x > y) - (x < y);
}

/* The events to stream for the splits sp[0..n) (one, or the daily
 * protocol's periods in time order, whose predictions are disjoint): every
 * session the last split considers (warm: but the first split's training
 * sessions, which the batch model learnt), in time order. */
static int replay_build(const rc_eval_split *const *sp, size_t n, int warm, struct replay *r)
{
    const rc_clicklog *log = sp[0]->log;
    size_t cap = log->n ? log->n : 1;
    *r = (struct replay){.log = log};
    r->order = malloc(cap * sizeof *r->order);
    r->pos_of = malloc(cap * sizeof *r->pos_of);
    r->split_of = calloc(cap, sizeof *r->split_of);
    if (!r->order || !r->pos_of || !r->split_of)
        return RC_ENOMEM;
    memset(r->pos_of, 0xff, cap * sizeof *r->pos_of);
    for (uint32_t ss = 0; ss < log->nsessions; ss++) {
        if (sp[n - 1]->role[ss] == RC_EVAL_OUTSIDE || (warm && sp[0]->role[ss] == RC_EVAL_TRAIN))
            continue;
        for (size_t i = log->sess_off[ss]; i < log->sess_off[ss + 1]; i++)
            r->order[r->n++] = i;
    }
    qsort_r(r->order, r->n, sizeof *r->order, rc__eval_by_time, (void *)log);
    for (size_t k = 0; k < n; k++)
        for (size_t p = 0; p < sp[k]->npos; p++) {
            size_t i = log->sess_off[sp[k]->pos[p].session] + sp[k]->pos[p].t;
            r->pos_of[i] = (uint32_t)p;
            r->split_of[i] = (uint32_t)k;
        }
    return 0;
}

static void replay_free(struct replay *r)
{
    free(r->order);
    free(r->pos_of);
    free(r->split_of);
}

int rc__eval_stream_config(const rc_eval_env *env, const rc_train_opts *o, rc_config *c, char *eb,
                           size_t el)
{
    rc_config_defaults(c);
    if (o) {
        c->dim = o->dim ? o->dim : 64;
        c->window = o->window;
        c->history = RC_MAX(c->history, o->window);
        c->negatives = o->negatives;
        if (env->stream_lr > 0)
            c->lr = env->stream_lr;
        c->subsample = o->subsample;
        c->power = RC_MIN(o->power, 1.0f);
        c->hard_share = o->hard_share;
        c->seed = o->seed ? o->seed : 1;
    }
    c->overfetch = env->overfetch > 0 ? env->overfetch : c->overfetch;
    c->max_items = RC_MAX(c->max_items, rc_dict_size(env->log->items) + 1);
    for (size_t i = 0; i < env->nstream_set; i++) {
        const char *kv = env->stream_set[i], *eq = strchr(kv, '=');
        char key[128];
        if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof key)
            return rc_err(eb, el, RC_EINVAL, "--stream-set: expected KEY=VALUE, got '%.60s'", kv);
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = '\0';
        int rc = rc_config_set(c, key, eq + 1, RC_CONF_CLI, "--stream-set", eb, el);
        if (rc)
            return rc;
    }
    return rc_config_validate(c, eb, el);
}

int rc__eval_index_config(const rc_eval_env *env, rc_index_opts *io, float *overfetch,
                          float *pop_weight, char *eb, size_t el)
{
    rc_config c;
    int rc = rc__eval_stream_config(env, NULL, &c, eb, el);
    if (rc)
        return rc;
    if (io)
        rc_engine_index_opts(&c, io);
    if (overfetch)
        *overfetch = c.overfetch;
    if (pop_weight)
        *pop_weight = c.popularity_weight;
    return 0;
}

int rc__eval_index_build(const rc_eval_env *env, rc_table *t, rc_index **ix, char *eb, size_t el)
{
    rc_index_opts io;
    float w;
    int rc = rc__eval_index_config(env, &io, NULL, &w, eb, el);
    if (rc)
        return rc;
    rc_table_set_pop_weight(t, w);
    return rc_eval_index_build(t, &io, ix, eb, el);
}

int rc__eval_embed_new(const rc_eval_env *env, const rc_eval_split *s, const rc_table *t,
                       rc_index *ix, rc_eval_embed **em, char *eb, size_t el)
{
    float overfetch;
    int rc = rc__eval_index_config(env, NULL, &overfetch, NULL, eb, el);
    if (rc)
        return rc;
    if ((rc = rc_eval_embed_create(s, t, ix, overfetch, em)))
        return rc_err(eb, el, rc, "eval: out of memory");
    rc_eval_embed_exact(*em, env->exact);
    return 0;
}

int rc__eval_embed_query_setup(const rc_eval_env *env, rc_eval_embed *em, char *eb, size_t el)
{
    rc_config c;
    rc_userq_opts uo;
    int rc;
    if (env->query_items)
        return 0;
    if ((rc = rc__eval_stream_config(env, NULL, &c, eb, el)))
        return rc;
    rc_userq_opts_from_config(&c, &uo);
    if ((rc = rc_eval_embed_userq(em, &uo, c.recall_user_city)))
        return rc_err(eb, el, rc, "eval: out of memory");
    return 0;
}

static int apply(rc_engine *e, const rc_clicklog *log, size_t i)
{
    const rc_click_rec *r = &log->recs[i];
    char user[32];
    size_t ilen, clen = 0, klen = 0;
    const char *item = rc_dict_str(log->items, r->item, &ilen);
    const char *city = log->has_city ? rc_dict_str(log->cities, r->city, &clen) : "";
    const char *cate = log->has_cate ? rc_dict_str(log->cates, r->cate, &klen) : "";
    /* One engine "user" per log session: the streaming trainer sees exactly
     * the sessions the batch trainer does. */
    int ulen = snprintf(user, sizeof user, "s%u", r->session);
    return rc_engine_apply_click(e, user, (size_t)ulen, item, ilen, city ? city : "", clen,
                                 cate ? cate : "", klen, r->ts_ms);
}

/* stream-daily-install's rebuild before split s: the batch trainer
 * retrains on the sessions that ended before s's period, every item the
 * engine holds starting from its live vectors (recalld-train --init), and
 * the result goes into the running engine through install_model's code
 * (rc_engine_install_table). Everything else the engine holds (replay
 * buffer, sessions, counts, rows the rebuild does not know) stays.
 * kind RC_EVAL_REBUILD_FRESH: from random vectors (recalld-train alone),
 * installed as install_model "replace" does (rc_engine_replace_table). */
static int rebuild_install(const rc_eval_env *env, rc_engine *e, const rc_eval_split *s,
                           const rc_train_opts *bo, int kind, uint64_t *rows, char *eb, size_t el)
{
    rc_train_opts o = *bo;
    rc_table *t = NULL;
    rc_engine_table_install res;
    int fresh = kind == RC_EVAL_REBUILD_FRESH;
    o.init = fresh ? NULL : rc_engine_table(e);
    if (env->quiet) {
        o.progress = -1;
        o.quiet = 1;
    }
    int rc = rc_train_run(&o, env->log, s->train_mask, &t, NULL, eb, el);
    if (!rc &&
        !(rc = (fresh ? rc_engine_replace_table : rc_engine_install_table)(e, t, &res, eb, el)))
        *rows += res.replaced + res.created;
    rc_table_destroy(t);
    return rc;
}

/* Streams the replay through e, predicting each test position of split
 * sp[k] (into acc[k]) before its click is applied. bo: NULL, or the batch
 * settings of stream-daily-install's rebuild at each later split's start. */
static int stream(const rc_eval_env *env, rc_engine *e, const struct replay *r,
                  const rc_eval_split *const *sp, size_t n, rc_eval_acc *const *acc,
                  const rc_train_opts *bo, rc_eval_gate_stats *gs, rc__eval_live_fused *lf,
                  char *eb, size_t el)
{
    rc_eval_embed **em = calloc(n, sizeof *em); /* per split, made at its first prediction */
    rc_eval_predictor pr;
    rc_eval_scratch *w = malloc(sizeof *w);
    int rc = em && w ? 0 : RC_ENOMEM;
    size_t next = 1; /* the next split whose start rebuilds (bo) */
    uint64_t rows = 0;
    size_t installs = 0;
    int rebuilt = 0;   /* a rebuild's error: eb says it already */
    size_t judged = 1; /* the next split the gate judges */
    int *install = gs ? calloc(n, sizeof *install) : NULL; /* per split: the gate's verdict,
                                                            * 0 keep, else the rebuild + 1 */
    if (gs && !install)
        rc = RC_ENOMEM;
    for (size_t j = 0; j < r->n && !rc; j++) {
        size_t i = r->order[j], k = r->split_of[i];
        /* stream-daily-gated: the gate of split `judged` is judged when the
         * stream reaches its window, the install (or not) at its cut. */
        for (; gs && judged < n && !rc &&
               r->log->recs[i].ts_ms >= sp[judged]->cut_ms - (int64_t)(gs->hours * 3600e3);
             judged++)
            rc = rebuilt =
                rc__eval_gate_judge(env, sp[judged], e, bo, gs, &install[judged], eb, el);
        for (; bo && next < n && r->log->recs[i].ts_ms >= sp[next]->cut_ms && !rc; next++)
            if (!gs || install[next]) {
                int kind = gs ? install[next] - 1
                              : (env->rebuild == RC_EVAL_REBUILD_FRESH ? RC_EVAL_REBUILD_FRESH
                                                                       : RC_EVAL_REBUILD_LIVE);
                rc = rebuilt = rebuild_install(env, e, sp[next], bo, kind, &rows, eb, el);
                installs++;
            }
        if (!rc && r->pos_of[i] != NO_POS && !em[k])
            if (!(rc = rc__eval_embed_new(env, sp[k], rc_engine_table(e), rc_engine_index(e),
                                          &em[k], eb, el)))
                rc = rc__eval_embed_query_setup(env, em[k], eb, el);
        if (!rc && r->pos_of[i] != NO_POS) {
            rc_engine_flush_index(e);
            if (lf)
                rc__eval_live_fused_predictor(lf, em[k], &pr);
            else
                rc_eval_embed_predictor(em[k], &pr);
            rc = rc_eval_predict(sp[k], &pr, r->pos_of[i], acc[k], w);
        }
        if (!rc)
            rc = apply(e, r->log, i);
        if (!rc && lf)
            rc__eval_live_fused_click(lf, r->log, i);
    }
    if (rc && !rebuilt)
        rc_err(eb, el, rc, "prequential: %s", rc_strerror(rc));
    else if (!rc && bo && !env->quiet)
        fprintf(stderr,
                "recalld-eval: %zu of %zu rebuilds installed into the running engine, %llu rows\n",
                installs, next - 1, (unsigned long long)rows);
    for (size_t k = 0; em && k < n; k++)
        rc_eval_embed_destroy(em[k]);
    free(em);
    free(w);
    free(install);
    return rc;
}

void rc__eval_stream_knobs(const rc_config *c, rc_eval_stream_knobs *k)
{
    *k = (rc_eval_stream_knobs){.replay_ratio = c->replay_ratio,
                                .lr_decay_clicks = c->lr_decay_clicks,
                                .lr_min = c->lr_min,
                                .lr = c->lr,
                                .recall_window = c->recall_window,
                                .half_life_ms = c->half_life_ms,
                                .subsample = c->subsample,
                                .replay_adaptive = c->replay_adaptive,
                                .replay_subsample = c->replay_subsample,
                                .anchor = c->anchor,
                                .anchor_fade = c->anchor_fade_clicks,
                                .replay_per_hour = c->replay_per_hour};
}

int rc__eval_warm_model(const rc_eval_env *env, const rc_train_opts *o, char *path, char *eb,
                        size_t el)
{
    rc_train_opts to = *o;
    rc_table *t = NULL;
    const char *tmp = getenv("TMPDIR");
    int rc, fd;
    if (env->quiet) {
        to.progress = -1;
        to.quiet = 1;
    }
    /* A name of our own (pid, attempt) created exclusively: never reuses a file. */
    const char *dir = tmp && *tmp ? tmp : "/tmp";
    fd = -1;
    for (unsigned k = 0; fd < 0 && k < 100; k++) {
        snprintf(path, 256, "%s/recalld-eval-%ld-%u.rcm", dir, (long)getpid(), k);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0)
        return rc_err(eb, el, RC_EIO, "prequential-warm: cannot create a temp file in %s: %s", dir,
                      strerror(errno));
    close(fd);
    rc = rc_train_run(&to, env->log, env->split->train_mask, &t, NULL, eb, el);
    if (!rc)
        rc = rc_model_save(t, path, eb, el);
    rc_table_destroy(t);
    if (rc)
        unlink(path);
    return rc;
}

/* The "KEY=VALUE" strings of the searched knobs of t into kv (room for
 * RC_TUNE_STREAM_NKEYS strings of 64 bytes each); returns how many. */
static size_t tuned_set(const rc_eval_stream_tune *t, char (*kv)[64])
{
    const rc_eval_stream_knobs *k = &t->best;
    size_t n = 0;
    for (unsigned i = 0; i < RC_TUNE_STREAM_NKEYS; i++) {
        if (!(t->searched & (1u << i)))
            continue;
        const char *key = rc_tune_stream_keys[i];
        switch (i) {
        case 0:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->replay_ratio);
            break;
        case 1:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->lr_decay_clicks);
            break;
        case 2:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->lr_min);
            break;
        case 3:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->lr);
            break;
        case 4:
            snprintf(kv[n++], 64, "%s=%u", key, k->recall_window);
            break;
        case 5:
            snprintf(kv[n++], 64, "%s=%lld", key, (long long)k->half_life_ms);
            break;
        case 6:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->subsample);
            break;
        case 7:
            snprintf(kv[n++], 64, "%s=%d", key, k->replay_adaptive);
            break;
        case 8:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->replay_subsample);
            break;
        case 9:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->anchor);
            break;
        case 10:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->anchor_fade);
            break;
        default:
            snprintf(kv[n++], 64, "%s=%.7g", key, (double)k->replay_per_hour);
            break;
        }
    }
    return n;
}

int rc__eval_stream(rc_eval_env *env, const rc_eval_split *const *sp, size_t n,
                    rc_eval_acc *const *acc, int warm, rc_eval_report *rep, char *eb, size_t el)
{
    rc_train_opts o = rc_tune_resolve(env->have_sgns ? &env->sgns.settings : &env->train);
    rc_config cfg;
    rc_engine *e = NULL;
    struct replay r = {0};
    char path[256] = "", tuned_kv[RC_TUNE_STREAM_NKEYS][64];
    const char *set[64];
    rc_eval_env run = *env; /* env with the tuned knobs added to --stream-set */
    rc__eval_live_fused *lf = NULL;
    int rc;
    warm = !!warm;
    o.mode = RC_SGNS_SKIPGRAM;
    if (env->tune_stream && !env->have_stream_tuned[warm]) {
        if ((rc = rc_tune_stream_run(NULL, env, warm, &env->stream_tuned[warm], eb, el)))
            return rc;
        env->have_stream_tuned[warm] = 1;
    }
    if (env->have_stream_tuned[warm]) {
        size_t nt = tuned_set(&env->stream_tuned[warm], tuned_kv);
        if (env->nstream_set + nt > RC_ARRAY_LEN(set))
            return rc_err(eb, el, RC_EINVAL, "--stream-set: too many settings");
        for (size_t i = 0; i < env->nstream_set; i++)
            set[i] = env->stream_set[i];
        for (size_t i = 0; i < nt; i++)
            set[env->nstream_set + i] = tuned_kv[i];
        run.stream_set = set;
        run.nstream_set = env->nstream_set + nt;
    }
    if ((rc = rc__eval_stream_config(&run, &o, &cfg, eb, el)))
        return rc;
    /* stream-daily-live: this period's rebuild starts from the table the
     * last period's stream left, and this period's engine is kept for the next */
    int live = warm && n == 1 && env->live;
    if (live && env->live_prev)
        o.init = rc_engine_table(env->live_prev);
    if (warm && !env->warm_model && (rc = rc__eval_warm_model(env, &o, path, eb, el)))
        return rc;
    o.init = NULL;
    snprintf(cfg.model_path, sizeof cfg.model_path, "%s",
             warm && env->warm_model ? env->warm_model : path);
    if ((rc = replay_build(sp, n, warm, &r))) {
        rc = rc_err(eb, el, RC_ENOMEM, "prequential: out of memory");
        goto out;
    }
    if ((rc = rc_engine_create(&cfg, NULL, NULL, NULL, &e, eb, el)))
        goto out;
    /* Index retrainings at the calls that cause them, not when a thread gets
     * to them: the same figures on every run. */
    rc_index_set_background(rc_engine_index(e), 0);
    int gated = warm && n > 1 && env->install && env->gate;
    rc_eval_gate_stats gs = {.hours = env->gate_hours > 0 ? env->gate_hours : RC_EVAL_GATE_HOURS,
                             .ratio = env->gate_ratio > 0 ? env->gate_ratio : 1.0,
                             .min_z = env->gate_min_z};
    if (env->stream_fused) {
        float weight;
        if ((rc = rc__eval_live_fused_create(&run, &lf, &weight, eb, el)) ||
            (warm && (rc = rc__eval_live_fused_prefeed(lf, sp[0], eb, el))))
            goto out;
        rep->has_fuse = 1;
        rep->fuse_weight = weight;
    }
    if ((rc = stream(&run, e, &r, sp, n, acc, warm && n > 1 && env->install ? &o : NULL,
                     gated ? &gs : NULL, lf, eb, el)))
        goto out;
    if ((rep->has_gate = gated))
        rep->gate = gs;
    rep->rebuild = warm && n > 1 && env->install ? env->rebuild + 1 : 0;
    rc__eval_acc_report(acc[n - 1], sp[n - 1], rep);
    rep->has_settings = 1;
    rep->settings = o;
    rep->settings.lr = cfg.lr; /* the streaming rate (warm: the batch part used o.lr) */
    if (env->have_sgns && env->sgns.tuned) { /* the settings sgns's search chose */
        rep->tuned = 1;
        rep->tune_hr50 = env->sgns.tune_hr50;
        rep->tune_trials = env->sgns.tune_trials;
        rep->tune_seconds = env->sgns.tune_seconds;
    }
    rep->has_stream = 1;
    rc__eval_stream_knobs(&cfg, &rep->stream);
    if (env->have_stream_tuned[warm]) {
        rep->stream_tuned = 1;
        rep->stream_tune = env->stream_tuned[warm];
    }
out:
    if (live && !rc) {
        rc_engine_destroy(env->live_prev);
        env->live_prev = e;
        e = NULL;
    }
    rc_engine_destroy(e);
    rc__eval_live_fused_destroy(lf);
    if (path[0])
        unlink(path);
    replay_free(&r);
    return rc;
}

static int run_stream(rc_eval_env *env, rc_eval_report *rep, int warm, char *eb, size_t el)
{
    rc_eval_acc own, *acc;
    int rc = pass_acc(env, &own, &acc);
    if (rc)
        return rc_err(eb, el, rc, "prequential: out of memory");
    rc = rc__eval_stream(env, &env->split, 1, &acc, warm, rep, eb, el);
    if (acc == &own)
        rc_eval_acc_free(&own);
    return rc;
}

static int run_prequential(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_stream(env, rep, 0, eb, el);
}

static int run_prequential_warm(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_stream(env, rep, 1, eb, el);
}

static int run_prequential_fused(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    env->stream_fused = 1;
    int rc = run_stream(env, rep, 0, eb, el);
    env->stream_fused = 0;
    return rc;
}

const rc_eval_method rc_eval_methods[] = {
    {"popularity", run_popularity, 0},
    {"itemknn", run_itemknn, 0},
    {"sgns", run_sgns, 0},
    {"cbow", run_cbow, 0},
    {"prequential", run_prequential, 0},
    {"prequential-warm", run_prequential_warm, 0},
    {"prequential-fused", run_prequential_fused, 1},
    {"multi_category", run_multi_category, 0},
    {"itemknn-live", rc__eval_run_itemknn_live, 0},
    {"fused", rc__eval_run_fused, 0},
    {"two_tower-nofeat", rc__eval_run_tower_nofeat, 1},
    {"two_tower+tags", rc__eval_run_tower_tags, 1},
    {"two_tower", rc__eval_run_tower_all, 1},
};
const size_t rc_eval_nmethods = RC_ARRAY_LEN(rc_eval_methods);

const rc_eval_method *rc_eval_method_find(const char *name)
{
    for (size_t i = 0; name && i < rc_eval_nmethods; i++)
        if (strcmp(rc_eval_methods[i].name, name) == 0)
            return &rc_eval_methods[i];
    return NULL;
}

int rc_eval_method_run(const rc_eval_method *m, rc_eval_env *env, rc_eval_report *rep, char *eb,
                       size_t el)
{
    uint64_t t0 = rc_now_ns();
    int rc;
    if (!m || !env || !env->log || !env->split || !rep)
        return rc_err(eb, el, RC_EINVAL, "eval: missing method, env or report");
    *rep = (rc_eval_report){0};
    rc = m->run(env, rep, eb, el);
    rep->m.seconds = (double)(rc_now_ns() - t0) / 1e9;
    return rc;
}
