/* eval_cooc — the evaluator's session co-occurrence methods, driving the
 * daemon's own channel (cooc.h) with the daemon's defaults (rc_config):
 *  - itemknn-live: the channel built from the training sessions' clicks in
 *    event time order (each click with its session's previous clicks, as the
 *    engine's apply path passes them), queried with the prediction's query
 *    items;
 *  - fused: the same channel and skip-gram recall through the server's code
 *    (rc_eval_embed; the sgns row's settings when it ran), merged by
 *    rc_cooc_fuse, the fusion the daemon's "fused" recall runs. With --tune
 *    the weight is chosen on a validation split cut from the training
 *    sessions only (the split --tune uses for the batch settings), over
 *    0, 0.1, ..., 1 (the default kept unless one is strictly better), once: later runs (the daily
 * protocol's periods) reuse the choice; else it is cooc.fuse_weight's default. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/cooc.h"
#include "recalld/eval.h"
#include "recalld/tune.h"
#include "eval_int.h"

#define NGRID 11 /* fusion weights 0, 0.1, ..., 1 */

/* ---- the channel from the training sessions ---- */

/* An empty channel for the log's items with cfg's cooc.* settings; *window
 * is the context the engine pairs a click with (what its session store
 * holds before it). */
static int cooc_new(const rc_config *cfg, uint32_t nitems, rc_cooc **out, uint32_t *window,
                    char *eb, size_t el)
{
    rc_cooc_opts o = {.max_items = nitems + 1,
                      .neighbors = cfg->cooc_neighbors,
                      .max_bytes = cfg->cooc_max_bytes,
                      .window = cfg->cooc_window,
                      .half_life_ms = cfg->cooc_half_life_ms,
                      .pop_damping = cfg->cooc_pop_damping};
    o.window = RC_MIN(o.window, cfg->history > 1 ? cfg->history - 1 : 1);
    *window = o.window;
    return rc_cooc_create(&o, out, eb, el);
}

/* Record i of log into the channel: with its session's previous clicks, at
 * most window of them. */
static void cooc_feed(rc_cooc *c, uint32_t window, const rc_clicklog *log, size_t i)
{
    size_t start = log->sess_off[log->recs[i].session];
    uint32_t ctx[RC_COOC_MAX_WINDOW], m = 0;
    for (size_t x = i - RC_MIN(i - start, (size_t)window); x < i; x++)
        ctx[m++] = log->recs[x].item;
    rc_cooc_click(c, log->recs[i].item, ctx, m, log->recs[i].ts_ms);
}

/* Split s's training sessions into the channel, click by click in event
 * time order. */
static int cooc_feed_training(rc_cooc *c, uint32_t window, const rc_eval_split *s)
{
    const rc_clicklog *log = s->log;
    size_t *order = malloc((s->train_clicks ? s->train_clicks : 1) * sizeof *order), n = 0;
    if (!order)
        return RC_ENOMEM;
    for (uint32_t ss = 0; ss < log->nsessions; ss++)
        if (s->role[ss] == RC_EVAL_TRAIN)
            for (size_t i = log->sess_off[ss]; i < log->sess_off[ss + 1] && n < s->train_clicks;
                 i++)
                order[n++] = i;
    qsort_r(order, n, sizeof *order, rc__eval_by_time, (void *)log);
    for (size_t j = 0; j < n; j++)
        cooc_feed(c, window, log, order[j]);
    free(order);
    return 0;
}

static int cooc_build(const rc_eval_split *s, rc_cooc **out, char *eb, size_t el)
{
    rc_config cfg;
    uint32_t window;
    int rc;
    rc_config_defaults(&cfg);
    if ((rc = cooc_new(&cfg, s->nitems, out, &window, eb, el)))
        return rc;
    if (cooc_feed_training(*out, window, s)) {
        rc_cooc_destroy(*out);
        *out = NULL;
        return rc_err(eb, el, RC_ENOMEM, "cooc: out of memory");
    }
    return 0;
}

/* ---- predictors ---- */

struct knn_live {
    rc_cooc *c;
    rc_hit hits[RC_EVAL_K];
};

static int live_predict(void *state, const rc_eval_split *s, const rc_eval_pos *p, uint32_t k,
                        uint32_t *list, uint32_t *n, const uint32_t *cand, uint32_t ncand,
                        float *scores, int *fallback)
{
    struct knn_live *kl = state;
    uint32_t nh = 0;
    int rc = rc_cooc_query(kl->c, s->items + p->q_off, NULL, p->nq, s->items + p->x_off, p->nx,
                           NULL, NULL, RC_MIN(k, RC_EVAL_K), kl->hits, &nh, cand, ncand, scores);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < nh; i++)
        list[i] = kl->hits[i].row;
    *n = nh;
    *fallback = nh == 0;
    return 0;
}

struct fused {
    rc_cooc *c;
    rc_eval_embed *em;
    rc_eval_predictor emb_pr;
    float weight;
    rc_hit emb[RC_EVAL_K], co[RC_EVAL_K], out[RC_EVAL_K];
    uint32_t elist[RC_EVAL_K], ne, nc;
    int efb;
    uint32_t *all;  /* emb list + AUC candidates (cooc scores) */
    float *cs;      /* their co-occurrence scores */
    float *escores; /* the AUC candidates' embedding scores */
    float ces[RC_EVAL_K];
    int em_borrowed; /* em is the caller's (prequential-fused): not destroyed here */
    uint32_t window; /* prequential-fused: the context of a fed click */
};

/* Both channels' candidates for prediction p (k of each) and the cross scores. */
static int fused_lists(struct fused *f, const rc_eval_split *s, const rc_eval_pos *p, uint32_t k,
                       const uint32_t *cand, uint32_t ncand)
{
    uint32_t ne = 0;
    int rc = f->emb_pr.predict(f->emb_pr.state, s, p, k, f->elist, &ne, cand, ncand, f->escores,
                               &f->efb);
    if (rc)
        return rc;
    if (f->efb)
        ne = 0;
    for (uint32_t i = 0; i < ne; i++) {
        f->emb[i] = (rc_hit){f->elist[i], rc_eval_embed_score(f->em, f->elist[i])};
        f->all[i] = f->elist[i];
    }
    if (ncand)
        memcpy(f->all + ne, cand, ncand * sizeof *cand);
    if ((rc = rc_cooc_query(f->c, s->items + p->q_off, NULL, p->nq, s->items + p->x_off, p->nx,
                            NULL, NULL, k, f->co, &f->nc, f->all, ne + ncand, f->cs)))
        return rc;
    for (uint32_t i = 0; i < f->nc; i++)
        f->ces[i] = ne ? rc_eval_embed_score(f->em, f->co[i].row) : 0;
    f->ne = ne;
    return 0;
}

static int fused_predict(void *state, const rc_eval_split *s, const rc_eval_pos *p, uint32_t k,
                         uint32_t *list, uint32_t *n, const uint32_t *cand, uint32_t ncand,
                         float *scores, int *fallback)
{
    struct fused *f = state;
    uint32_t nout = 0;
    rc_cooc_norm nm;
    k = RC_MIN(k, RC_EVAL_K);
    int rc = fused_lists(f, s, p, k, cand, ncand);
    if (rc)
        return rc;
    rc_cooc_fuse(f->emb, f->cs, f->ne, f->co, f->ne ? f->ces : NULL, f->nc, f->weight, k, f->out,
                 &nout);
    for (uint32_t i = 0; i < nout; i++)
        list[i] = f->out[i].row;
    *n = nout;
    *fallback = nout == 0;
    rc_cooc_fuse_norm(f->emb, f->ne, f->co, f->nc, &nm);
    for (uint32_t i = 0; i < ncand; i++)
        scores[i] = rc_cooc_fused_score(&nm, f->weight, f->cs[f->ne + i], f->escores[i],
                                        f->ne && f->escores[i] > -2.0f);
    return 0;
}

static int fused_bufs(struct fused *f, float weight)
{
    *f = (struct fused){.weight = weight};
    f->all = malloc((RC_EVAL_K + 1 + RC_EVAL_MAX_NEGATIVES) * sizeof *f->all);
    f->cs = malloc((RC_EVAL_K + 1 + RC_EVAL_MAX_NEGATIVES) * sizeof *f->cs);
    f->escores = malloc((1 + RC_EVAL_MAX_NEGATIVES) * sizeof *f->escores);
    return f->all && f->cs && f->escores ? 0 : RC_ENOMEM;
}

static int fused_init(struct fused *f, const rc_eval_env *env, const rc_eval_split *s,
                      const rc_table *t, rc_index *ix, float weight, char *eb, size_t el)
{
    if (fused_bufs(f, weight))
        return rc_err(eb, el, RC_ENOMEM, "fused: out of memory");
    int rc = rc__eval_embed_new(env, s, t, ix, &f->em, eb, el);
    if (rc)
        return rc;
    rc_eval_embed_predictor(f->em, &f->emb_pr);
    return cooc_build(s, &f->c, eb, el);
}

static void fused_free(struct fused *f)
{
    rc_cooc_destroy(f->c);
    if (!f->em_borrowed)
        rc_eval_embed_destroy(f->em);
    free(f->all);
    free(f->cs);
    free(f->escores);
}

/* ---- methods ---- */

int rc__eval_run_itemknn_live(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    struct knn_live *kl = calloc(1, sizeof *kl);
    rc_eval_predictor pr = {.state = kl, .predict = live_predict};
    int rc;
    if (!kl)
        return rc_err(eb, el, RC_ENOMEM, "itemknn-live: out of memory");
    if (!(rc = cooc_build(env->split, &kl->c, eb, el)))
        rc = rc__eval_score_all(env, &pr, "eval", rep, eb, el);
    rc_cooc_destroy(kl->c);
    free(kl);
    return rc;
}

/* The skip-gram settings of the fused method: the sgns row's when it ran. */
static rc_train_opts fused_settings(const rc_eval_env *env, rc_eval_report *rep)
{
    rc_train_opts o = env->train;
    o.mode = RC_SGNS_SKIPGRAM;
    rep->has_settings = 1;
    rep->settings = rc_tune_resolve(env->have_sgns ? &env->sgns.settings : &o);
    rep->tuned = env->have_sgns && env->sgns.tuned;
    return rep->settings;
}

/* HR@50 of each grid weight on a validation split of the training sessions;
 * *found = 0 (and *best unchanged) when the training part is too small for
 * one. */
static int tune_weight(rc_eval_env *env, const rc_train_opts *o, float *best, double *best_hr,
                       int *found, char *eb, size_t el)
{
    rc_eval_opts vo = env->split->opts;
    rc_eval_split *vs = NULL;
    rc_table *t = NULL;
    rc_index *ix = NULL;
    struct fused *f = calloc(1, sizeof *f);
    uint64_t hits[NGRID] = {0};
    int rc = 0;
    vo.period_start_ms = vo.period_end_ms = 0;
    *found = 0;
    if (!f)
        return rc_err(eb, el, RC_ENOMEM, "fused: out of memory");
    if (rc_eval_split_create(env->log, env->split->train_mask, &vo, &vs, eb, el)) {
        /* Too little training data for a validation split: the default stays. */
        if (!env->quiet)
            fprintf(stderr, "fused: no validation split (%s): default weight\n", eb ? eb : "");
        goto out;
    }
    rc_eval_env venv = *env;
    venv.split = vs;
    if ((rc = rc_eval_train_model(&venv, o, &t, &ix, eb, el)) ||
        (rc = fused_init(f, env, vs, t, ix, 0, eb, el)))
        goto out;
    for (size_t pi = 0; pi < vs->npos && !rc; pi++) {
        const rc_eval_pos *p = &vs->pos[pi];
        rc = fused_lists(f, vs, p, RC_EVAL_K, NULL, 0);
        for (int g = 0; g < NGRID && !rc; g++) {
            uint32_t nout = 0;
            rc_cooc_fuse(f->emb, f->cs, f->ne, f->co, f->ne ? f->ces : NULL, f->nc,
                         (float)g / (NGRID - 1), RC_EVAL_K, f->out, &nout);
            for (uint32_t i = 0; i < nout; i++)
                hits[g] += f->out[i].row == p->target;
        }
    }
    if (rc) {
        rc_err(eb, el, rc, "fused: validation failed: %s", rc_strerror(rc));
        goto out;
    }
    /* From the daemon's default, moved only by a strictly better weight: a
     * validation split that cannot tell the weights apart keeps it. */
    rc_config cfg;
    rc_config_defaults(&cfg);
    int bg = (int)lroundf(cfg.cooc_fuse_weight * (NGRID - 1));
    bg = RC_MIN(RC_MAX(bg, 0), NGRID - 1);
    for (int g = 0; g < NGRID; g++)
        if (hits[g] > hits[bg])
            bg = g;
    *best = (float)bg / (NGRID - 1);
    *found = 1;
    *best_hr = vs->npos ? (double)hits[bg] / (double)vs->npos : 0;
    if (!env->quiet)
        for (int g = 0; g < NGRID; g++)
            fprintf(stderr, "fused: validation weight %.1f HR@50 %.4f\n", (double)g / (NGRID - 1),
                    vs->npos ? (double)hits[g] / (double)vs->npos : 0.0);
out:
    fused_free(f);
    free(f);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    rc_eval_split_destroy(vs);
    return rc;
}

int rc__eval_run_fused(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    rc_train_opts o = fused_settings(env, rep);
    rc_config cfg;
    rc_table *t = NULL;
    rc_index *ix = NULL;
    struct fused *f = calloc(1, sizeof *f);
    rc_eval_predictor pr = {.state = f, .predict = fused_predict};
    float weight;
    double vhr = 0;
    uint64_t t0 = rc_now_ns();
    int rc = 0;
    if (!f)
        return rc_err(eb, el, RC_ENOMEM, "fused: out of memory");
    rc_config_defaults(&cfg);
    weight = cfg.cooc_fuse_weight;
    if ((env->tune || env->tune_fuse) && !env->have_fuse_weight) {
        int found = 0;
        if ((rc = tune_weight(env, &o, &weight, &vhr, &found, eb, el)))
            goto out;
        if (found) {
            env->have_fuse_weight = 1;
            env->fuse_weight = weight;
            env->fuse_hr50 = vhr;
            if (!env->quiet)
                fprintf(stderr, "fused: weight %.2f chosen on the validation split in %.1f s\n",
                        (double)weight, (double)(rc_now_ns() - t0) / 1e9);
        }
    }
    if (env->have_fuse_weight)
        weight = env->fuse_weight;
    rep->has_fuse = 1;
    rep->fuse_weight = weight;
    rep->fuse_tuned = env->have_fuse_weight;
    rep->fuse_hr50 = env->have_fuse_weight ? env->fuse_hr50 : 0;
    if ((rc = rc_eval_train_model(env, &o, &t, &ix, eb, el)) ||
        (rc = fused_init(f, env, env->split, t, ix, weight, eb, el)))
        goto out;
    rc = rc__eval_score_all(env, &pr, "eval", rep, eb, el);
out:
    fused_free(f);
    free(f);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    return rc;
}

/* ---- prequential-fused: both channels streamed ---- */

struct rc__eval_live_fused {
    struct fused f;
};

int rc__eval_live_fused_create(const rc_eval_env *env, rc__eval_live_fused **out, float *weight,
                               char *eb, size_t el)
{
    rc_config cfg;
    rc__eval_live_fused *lf = calloc(1, sizeof *lf);
    int rc;
    *out = NULL;
    if (!lf)
        return rc_err(eb, el, RC_ENOMEM, "stream fused: out of memory");
    struct fused *f = &lf->f;
    if ((rc = rc__eval_stream_config(env, NULL, &cfg, eb, el)))
        goto fail;
    if ((rc = fused_bufs(f, cfg.cooc_fuse_weight))) {
        rc = rc_err(eb, el, rc, "stream fused: out of memory");
        goto fail;
    }
    f->em_borrowed = 1;
    if ((rc = cooc_new(&cfg, rc_dict_size(env->log->items), &f->c, &f->window, eb, el)))
        goto fail;
    *weight = f->weight;
    *out = lf;
    return 0;
fail:
    f->em_borrowed = 1;
    fused_free(f);
    free(lf);
    return rc;
}

int rc__eval_live_fused_prefeed(rc__eval_live_fused *lf, const rc_eval_split *s, char *eb,
                                size_t el)
{
    if (cooc_feed_training(lf->f.c, lf->f.window, s))
        return rc_err(eb, el, RC_ENOMEM, "stream fused: out of memory");
    return 0;
}

void rc__eval_live_fused_click(rc__eval_live_fused *lf, const rc_clicklog *log, size_t i)
{
    cooc_feed(lf->f.c, lf->f.window, log, i);
}

void rc__eval_live_fused_predictor(rc__eval_live_fused *lf, rc_eval_embed *em,
                                   rc_eval_predictor *pr)
{
    lf->f.em = em;
    rc_eval_embed_predictor(em, &lf->f.emb_pr);
    *pr = (rc_eval_predictor){.state = &lf->f, .predict = fused_predict};
}

void rc__eval_live_fused_destroy(rc__eval_live_fused *lf)
{
    if (lf) {
        fused_free(&lf->f);
        free(lf);
    }
}
