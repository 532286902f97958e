/* eval_tower — the two-tower rows of recalld-eval (see eval.h, tower.h).
 *
 * A row: the split's skip-gram table (shared by the rows, env->w2v), the
 * towers trained on the training sessions on top of it with the row's
 * features, then every catalog item's item-tower vector written into a
 * second table whose rows mirror the w2v rows (same ids, cities, cates, in
 * row order) and indexed like the server's. A prediction's query is the user
 * tower's vector of the user's clicks strictly before the target (all
 * sessions: what the server's session store holds) and its profile; the
 * search, the exclusions and the AUC scores are rc_eval_embed's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_int.h"
#include "recalld/common.h"
#include "recalld/tune.h"

struct tower_query {
    const rc_tower_model *m;
    rc_tower_work *w;
    const rc_tower_history *h;
    rc_tower_item_in *clicks;
    int64_t *ts;
    uint32_t max_clicks;
};

/* rc_eval_query_fn: the user tower's vector at the target's record. */
static int tower_query(void *ud, const rc_eval_split *s, const rc_eval_pos *p, float *q)
{
    struct tower_query *tq = ud;
    size_t rec = s->log->sess_off[p->session] + p->t;
    rc_tower_user_in in;
    uint32_t n = rc_tower_history_user_in(tq->h, rec, tq->max_clicks, tq->clicks, tq->ts, &in);
    if (n == 0 && in.device_hash == 0 && in.ntags == 0)
        return 0; /* nothing known of the user: popularity */
    rc_tower_user_vector(tq->m, tq->w, &in, q, NULL, NULL);
    return 1;
}

/* The skip-gram settings the towers build on: sgns's when it ran. */
static rc_train_opts w2v_settings(const rc_eval_env *env)
{
    rc_train_opts o = rc_tune_resolve(env->have_sgns ? &env->sgns.settings : &env->train);
    o.mode = RC_SGNS_SKIPGRAM;
    if (env->quiet) {
        o.progress = -1;
        o.quiet = 1;
    }
    return o;
}

static int ensure_w2v(rc_eval_env *env, char *eb, size_t el)
{
    if (env->w2v)
        return 0;
    rc_train_opts o = w2v_settings(env);
    return rc_train_run(&o, env->log, env->split->train_mask, &env->w2v, NULL, eb, el);
}

/* A table mirroring w2v's rows whose input vectors are the item-tower
 * vectors. *out: caller frees. */
static int item_table(const rc_eval_env *env, const rc_tower_model *m, const rc_tower_history *h,
                      rc_table **out, char *eb, size_t el)
{
    const rc_table *w2v = env->w2v;
    uint32_t dim = rc_tower_config_of(m)->dim, n = rc_table_size(w2v);
    rc_table *t = NULL;
    rc_tower_work *w = NULL;
    rc_table_opts to = {.dim = dim, .max_items = n + 1, .input_only = 1};
    int rc = rc_table_create(&to, &t, eb, el);
    if (rc)
        return rc;
    if ((rc = rc_tower_work_create(m, &w))) {
        rc = rc_err(eb, el, rc, "two_tower: out of memory");
        goto out;
    }
    for (uint32_t r = 0; r < n; r++) {
        size_t len, clen, klen;
        const char *id = rc_table_item_id(w2v, r, &len);
        const char *city = rc_table_city_name(w2v, rc_table_city(w2v, r));
        const char *cate = rc_table_cate_name(w2v, rc_table_cate(w2v, r));
        uint32_t city_id, cate_id, row, item;
        clen = city ? strlen(city) : 0;
        klen = cate ? strlen(cate) : 0;
        if ((rc = rc_table_city_id(t, city ? city : "", clen, &city_id)) ||
            (rc = rc_table_cate_id(t, cate ? cate : "", klen, &cate_id)) ||
            (rc = rc_table_append(t, id, len, city_id, cate_id, rc_table_count(w2v, r), &row))) {
            rc = rc_err(eb, el, rc, "two_tower: item table: %s", rc_strerror(rc));
            goto out;
        }
        rc_tower_item_in in = {0};
        if (rc_dict_find(env->log->items, id, len, &item) == 0)
            rc_tower_history_item_in(h, item, &in);
        rc_tower_item_vector(m, w, &in, rc_table_in(t, row));
    }
out:
    rc_tower_work_destroy(w);
    if (rc)
        rc_table_destroy(t);
    else
        *out = t;
    return rc;
}

/* Scores the split with model m through an item-tower table and index. */
static int score(rc_eval_env *env, const rc_tower_model *m, const rc_tower_history *h,
                 rc_eval_report *rep, char *eb, size_t el)
{
    const rc_tower_config *cfg = rc_tower_config_of(m);
    struct tower_query tq = {.m = m, .h = h, .max_clicks = cfg->max_clicks};
    rc_table *t = NULL;
    rc_index *ix = NULL;
    rc_eval_embed *em = NULL;
    rc_eval_predictor pr;
    int rc;
    rc_index_opts io; /* the daemon's tower index ranks by the cosine alone (tower_serve.c) */
    if ((rc = item_table(env, m, h, &t, eb, el)) ||
        (rc = rc__eval_index_config(env, &io, NULL, NULL, eb, el)) ||
        (rc = rc_eval_index_build(t, &io, &ix, eb, el)))
        goto out;
    tq.clicks = malloc(cfg->max_clicks * sizeof *tq.clicks);
    tq.ts = malloc(cfg->max_clicks * sizeof *tq.ts);
    if (!tq.clicks || !tq.ts || rc_tower_work_create(m, &tq.w)) {
        rc = rc_err(eb, el, RC_ENOMEM, "two_tower: out of memory");
        goto out;
    }
    if ((rc = rc__eval_embed_new(env, env->split, t, ix, &em, eb, el)))
        goto out;
    rc_eval_embed_query(em, tower_query, &tq);
    rc_eval_embed_predictor(em, &pr);
    rc = rc__eval_score_all(env, &pr, "two_tower", rep, eb, el);
out:
    rc_eval_embed_destroy(em);
    rc_tower_work_destroy(tq.w);
    free(tq.clicks);
    free(tq.ts);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    return rc;
}

static int run_tower(rc_eval_env *env, rc_eval_report *rep, unsigned features, char *eb, size_t el)
{
    rc_ufeat *own = NULL;
    const rc_ufeat *feats = env->feats;
    uint32_t *rows = NULL;
    rc_tower_history *h = NULL;
    rc_tower_model *m = NULL;
    int rc;
    if ((rc = ensure_w2v(env, eb, el)))
        return rc;
    if (!feats) {
        if ((rc = rc_ufeat_from_log(env->log, &own)))
            return rc_err(eb, el, rc, "two_tower: user features: %s", rc_strerror(rc));
        feats = own;
    }
    rep->has_settings = 1;
    rep->settings = w2v_settings(env);
    rep->settings.progress = rep->settings.quiet = 0;
    rep->tuned = env->have_sgns && env->sgns.tuned;
    rep->has_tower = 1;
    rep->tower = env->tower;
    rep->tower.cfg.features = features;
    if (!rep->tower.seed)
        rep->tower.seed = env->train.seed;
    if (env->quiet) {
        rep->tower.progress = -1;
        rep->tower.quiet = 1;
    }
    rows = malloc(((size_t)env->split->nitems + 1) * sizeof *rows);
    if (!rows) {
        rc = rc_err(eb, el, RC_ENOMEM, "two_tower: out of memory");
        goto out;
    }
    rc_train_item_rows(env->log, env->w2v, rows);
    if ((rc = rc_tower_history_create(env->log, env->w2v, rows, feats, &h))) {
        rc_err(eb, el, rc, "two_tower: history: %s", rc_strerror(rc));
        goto out;
    }
    if ((rc = rc_tower_train(&rep->tower, h, env->split->train_mask, &m, &rep->tower_res, eb, el)))
        goto out;
    rc = score(env, m, h, rep, eb, el);
    rep->tower.progress = rep->tower.quiet = 0;
out:
    rc_tower_destroy(m);
    rc_tower_history_destroy(h);
    free(rows);
    rc_ufeat_free(own);
    return rc;
}

int rc__eval_run_tower_nofeat(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_tower(env, rep, 0, eb, el);
}

int rc__eval_run_tower_tags(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_tower(env, rep, RC_TOWER_F_TAGS, eb, el);
}

int rc__eval_run_tower_all(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el)
{
    return run_tower(env, rep, env->tower_features_set ? env->tower.cfg.features : RC_TOWER_F_ALL,
                     eb, el);
}

void rc_eval_env_cleanup(rc_eval_env *env)
{
    if (!env)
        return;
    rc_table_destroy(env->w2v);
    env->w2v = NULL;
}
