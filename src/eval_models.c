/* eval_models — the evaluator's predictors: session co-occurrence item-kNN and
 * embedding recall through the server's recall code (see eval.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/eval.h"
#include "recalld/recall.h"
#include "recalld/userq.h"
#include "recalld/vec.h"

#define KNN_DEFAULT_NEIGHBORS 1000u
#define KNN_MAX_SESSION       1000u /* distinct items of a session used for co-occurrence */
#define NO_ROW                UINT32_MAX

/* ---- item-kNN ---- */

struct rc_eval_knn {
    uint32_t nitems;
    size_t *nb_off;    /* item a's neighbours: nb[nb_off[a] .. nb_off[a+1]) */
    rc_hit *nb;        /* row: the neighbour item, score: its cosine */
    float *acc;        /* per item: score of the current prediction */
    uint32_t *stamp;   /* per item: prediction that last wrote acc */
    uint32_t *touched; /* items written by the current prediction */
    uint32_t ntouched, now;
    rc_hit *top; /* RC_EVAL_K scratch */
};

/* Sessions as distinct-item lists (last KNN_MAX_SESSION distinct), CSR. */
struct csr {
    size_t *off;
    uint32_t *v;
    uint32_t n;
};

static void csr_free(struct csr *c)
{
    free(c->off);
    free(c->v);
}

static int session_items(const rc_eval_split *s, uint32_t *mark, struct csr *out)
{
    const rc_clicklog *log = s->log;
    out->n = s->ntrain;
    out->off = malloc((s->ntrain + 1) * sizeof *out->off);
    out->v = malloc((s->train_clicks ? s->train_clicks : 1) * sizeof *out->v);
    if (!out->off || !out->v)
        return RC_ENOMEM;
    size_t n = 0;
    uint32_t j = 0;
    for (uint32_t ss = 0; ss < log->nsessions; ss++) {
        if (s->role[ss] != RC_EVAL_TRAIN)
            continue;
        out->off[j] = n;
        uint32_t kept = 0;
        /* Newest first, so a very long session keeps its last items. */
        for (size_t i = log->sess_off[ss + 1]; i-- > log->sess_off[ss] && kept < KNN_MAX_SESSION;) {
            uint32_t it = log->recs[i].item;
            if (mark[it] == j + 1)
                continue;
            mark[it] = j + 1;
            out->v[n++] = it;
            kept++;
        }
        j++;
    }
    out->off[j] = n;
    return 0;
}

/* Transpose: item -> the sessions holding it. */
static int item_sessions(const struct csr *ss, uint32_t nitems, struct csr *out)
{
    size_t nnz = ss->off[ss->n];
    out->n = nitems;
    out->off = calloc(nitems + 1, sizeof *out->off);
    out->v = malloc((nnz ? nnz : 1) * sizeof *out->v);
    if (!out->off || !out->v)
        return RC_ENOMEM;
    for (size_t i = 0; i < nnz; i++)
        out->off[ss->v[i] + 1]++;
    for (uint32_t a = 0; a < nitems; a++)
        out->off[a + 1] += out->off[a];
    size_t *fill = malloc((nitems + 1) * sizeof *fill);
    if (!fill)
        return RC_ENOMEM;
    memcpy(fill, out->off, (nitems + 1) * sizeof *fill);
    for (uint32_t j = 0; j < ss->n; j++)
        for (size_t i = ss->off[j]; i < ss->off[j + 1]; i++)
            out->v[fill[ss->v[i]]++] = j;
    free(fill);
    return 0;
}

static int cmp_hit(const void *a, const void *b)
{
    rc_hit x = *(const rc_hit *)a, y = *(const rc_hit *)b;
    return rc_hit_better(x, y) ? -1 : rc_hit_better(y, x) ? 1 : 0;
}

/* Neighbours of item a: co-occurrence counts over its sessions, cosine, best M. */
static uint32_t neighbours_of(uint32_t a, const struct csr *ss, const struct csr *is, uint32_t *cnt,
                              uint32_t *touched, rc_hit *buf, uint32_t m)
{
    uint32_t nt = 0;
    double na = (double)(is->off[a + 1] - is->off[a]);
    for (size_t i = is->off[a]; i < is->off[a + 1]; i++) {
        uint32_t j = is->v[i];
        for (size_t x = ss->off[j]; x < ss->off[j + 1]; x++) {
            uint32_t b = ss->v[x];
            if (b == a)
                continue;
            if (!cnt[b]++)
                touched[nt++] = b;
        }
    }
    for (uint32_t i = 0; i < nt; i++) {
        uint32_t b = touched[i];
        double nb = (double)(is->off[b + 1] - is->off[b]);
        buf[i] = (rc_hit){b, (float)(cnt[b] / sqrt(na * nb))};
        cnt[b] = 0;
    }
    if (nt > m) {
        qsort(buf, nt, sizeof *buf, cmp_hit);
        nt = m;
    }
    return nt;
}

static int knn_build(rc_eval_knn *k, const struct csr *ss, const struct csr *is, uint32_t m)
{
    uint32_t n = k->nitems, *cnt = calloc(n + 1, sizeof *cnt),
             *touched = malloc((n + 1) * sizeof *touched);
    rc_hit *buf = malloc((n + 1) * sizeof *buf);
    size_t cap = 0, used = 0;
    int rc = RC_ENOMEM;
    if (!cnt || !touched || !buf || !(k->nb_off = calloc(n + 1, sizeof *k->nb_off)))
        goto out;
    for (uint32_t a = 0; a < n; a++) {
        uint32_t nt = neighbours_of(a, ss, is, cnt, touched, buf, m);
        if (used + nt > cap) {
            size_t nc = RC_MAX(cap * 2, used + nt + 1024);
            rc_hit *nb = realloc(k->nb, nc * sizeof *nb);
            if (!nb)
                goto out;
            k->nb = nb;
            cap = nc;
        }
        if (nt)
            memcpy(k->nb + used, buf, nt * sizeof *buf);
        used += nt;
        k->nb_off[a + 1] = used;
    }
    rc = 0;
out:
    free(cnt);
    free(touched);
    free(buf);
    return rc;
}

int rc_eval_knn_create(const rc_eval_split *s, uint32_t max_neighbors, rc_eval_knn **out, char *eb,
                       size_t el)
{
    struct csr ss = {0}, is = {0};
    uint32_t n = s ? s->nitems : 0, *mark = NULL;
    rc_eval_knn *k;
    int rc = RC_ENOMEM;
    if (!s || !out)
        return rc_err(eb, el, RC_EINVAL, "itemknn: no split");
    *out = NULL;
    if (!(k = calloc(1, sizeof *k)))
        return rc_err(eb, el, RC_ENOMEM, "itemknn: out of memory");
    k->nitems = n;
    k->acc = calloc(n + 1, sizeof *k->acc);
    k->stamp = calloc(n + 1, sizeof *k->stamp);
    k->touched = malloc((n + 1) * sizeof *k->touched);
    k->top = malloc(RC_EVAL_K * sizeof *k->top);
    mark = calloc(n + 1, sizeof *mark);
    if (!k->acc || !k->stamp || !k->touched || !k->top || !mark || session_items(s, mark, &ss) ||
        item_sessions(&ss, n, &is) ||
        knn_build(k, &ss, &is, max_neighbors ? max_neighbors : KNN_DEFAULT_NEIGHBORS))
        goto fail;
    rc = 0;
    *out = k;
    k = NULL;
fail:
    free(mark);
    csr_free(&ss);
    csr_free(&is);
    rc_eval_knn_destroy(k);
    return rc ? rc_err(eb, el, rc, "itemknn: out of memory") : 0;
}

void rc_eval_knn_destroy(rc_eval_knn *k)
{
    if (!k)
        return;
    free(k->nb_off);
    free(k->nb);
    free(k->acc);
    free(k->stamp);
    free(k->touched);
    free(k->top);
    free(k);
}

static int excluded(const rc_eval_split *s, const rc_eval_pos *p, uint32_t it)
{
    const uint32_t *x = s->items + p->x_off;
    for (uint32_t i = 0; i < p->nx; i++)
        if (x[i] == it)
            return 1;
    return 0;
}

static int knn_predict(void *state, const rc_eval_split *s, const rc_eval_pos *p, uint32_t k,
                       uint32_t *list, uint32_t *n, const uint32_t *cand, uint32_t ncand,
                       float *scores, int *fallback)
{
    rc_eval_knn *kn = state;
    const uint32_t *q = s->items + p->q_off;
    uint32_t ntop = 0;
    kn->now++;
    kn->ntouched = 0;
    for (uint32_t i = 0; i < p->nq; i++) {
        for (size_t j = kn->nb_off[q[i]]; j < kn->nb_off[q[i] + 1]; j++) {
            rc_hit nb = kn->nb[j];
            if (kn->stamp[nb.row] != kn->now) {
                kn->stamp[nb.row] = kn->now;
                kn->acc[nb.row] = 0;
                kn->touched[kn->ntouched++] = nb.row;
            }
            kn->acc[nb.row] += nb.score;
        }
    }
    *fallback = kn->ntouched == 0;
    for (uint32_t i = 0; i < kn->ntouched; i++) {
        uint32_t it = kn->touched[i];
        if (!excluded(s, p, it))
            rc_hit_offer(kn->top, &ntop, RC_MIN(k, RC_EVAL_K), (rc_hit){it, kn->acc[it]});
    }
    for (uint32_t i = 0; i < ntop; i++)
        list[i] = kn->top[i].row;
    *n = ntop;
    for (uint32_t i = 0; i < ncand; i++)
        scores[i] = kn->stamp[cand[i]] == kn->now ? kn->acc[cand[i]] : 0;
    return 0;
}

void rc_eval_knn_predictor(rc_eval_knn *k, rc_eval_predictor *pr)
{
    *pr = (rc_eval_predictor){.state = k, .predict = knn_predict};
}

/* ---- embedding recall ---- */

struct rc_eval_embed {
    const rc_eval_split *s;
    const rc_table *t;
    rc_index *ix;
    float overfetch;
    uint32_t dim;
    uint32_t *item_row; /* per log item: table row or NO_ROW */
    uint32_t *row_item; /* per mapped row: log item or NO_ROW */
    uint32_t nmapped, row_cap;
    uint32_t *qrows, *xrows;
    rc_hit *hits;
    float *q;
    rc_eval_query_fn qfn; /* query vectors from it instead of the query items' mean */
    void *qud;
    int mc;        /* multi-category recall */
    int exact;     /* brute force instead of the index */
    rc_hit *xhits; /* rc_eval_embed_compare: the exact top-k */
    double ann_sum;
    uint64_t ann_n;
    rc_mc_opts mc_opts;
    rc_mc_quota quotas[64];
    /* the daemon's user query (rc_eval_embed_userq), else the query items' mean */
    int uq_on, uq_city;
    rc_userq_opts uq;
    uint32_t *prev_sess; /* per log session: its user's previous session, NO_ROW = none */
    uint32_t *hrows;     /* RC_USERQ_MAX */
    int64_t *hts;
    float *hw;
};

/* Maps the rows added to the table since the last call. */
static int embed_sync(rc_eval_embed *e)
{
    uint32_t size = rc_table_size(e->t);
    if (size <= e->nmapped)
        return 0;
    if (size > e->row_cap) {
        uint32_t cap = RC_MAX(size, e->row_cap * 2);
        uint32_t *v = realloc(e->row_item, (size_t)cap * sizeof *v);
        if (!v)
            return RC_ENOMEM;
        e->row_item = v;
        e->row_cap = cap;
    }
    for (uint32_t r = e->nmapped; r < size; r++) {
        size_t len;
        const char *id = rc_table_item_id(e->t, r, &len);
        uint32_t item;
        e->row_item[r] = NO_ROW;
        if (id && rc_dict_find(e->s->log->items, id, len, &item) == 0) {
            e->row_item[r] = item;
            e->item_row[item] = r;
        }
    }
    e->nmapped = size;
    return 0;
}

int rc_eval_embed_create(const rc_eval_split *s, const rc_table *t, rc_index *ix, float overfetch,
                         rc_eval_embed **out)
{
    rc_eval_embed *e;
    uint32_t maxx = RC_EVAL_MAX_QUERY;
    if (!s || !t || !ix || !out)
        return RC_EINVAL;
    *out = NULL;
    for (size_t p = 0; p < s->npos; p++)
        maxx = RC_MAX(maxx, s->pos[p].nx);
    if (!(e = calloc(1, sizeof *e)))
        return RC_ENOMEM;
    *e = (rc_eval_embed){.s = s,
                         .t = t,
                         .ix = ix,
                         .overfetch = overfetch > 0 ? overfetch : 2.0f,
                         .dim = rc_table_dim(t)};
    e->item_row = malloc((s->nitems + 1) * sizeof *e->item_row);
    e->qrows = malloc(RC_EVAL_MAX_QUERY * sizeof *e->qrows);
    e->xrows = malloc(maxx * sizeof *e->xrows);
    e->hits = malloc(RC_EVAL_K * sizeof *e->hits);
    e->q = malloc(e->dim * sizeof *e->q);
    if (!e->item_row || !e->qrows || !e->xrows || !e->hits || !e->q) {
        rc_eval_embed_destroy(e);
        return RC_ENOMEM;
    }
    memset(e->item_row, 0xff, (s->nitems + 1) * sizeof *e->item_row);
    *out = e;
    return 0;
}

void rc_eval_embed_destroy(rc_eval_embed *e)
{
    if (!e)
        return;
    free(e->item_row);
    free(e->row_item);
    free(e->prev_sess);
    free(e->hrows);
    free(e->hts);
    free(e->hw);
    free(e->qrows);
    free(e->xrows);
    free(e->hits);
    free(e->xhits);
    free(e->q);
    free(e);
}

/* The served score of the (unit) query for item (rc_recall_score: the cosine,
 * plus the popularity term, >= 0, when the table has a weight); -2 without a
 * row, below every score. */
static float embed_score(const rc_eval_embed *e, uint32_t item)
{
    uint32_t r = e->item_row[item];
    return r == NO_ROW ? -2.0f : rc_recall_score(e->t, r, e->q);
}

static uint32_t rows_of(const rc_eval_embed *e, const uint32_t *items, uint32_t n, uint32_t *rows)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (e->item_row[items[i]] != NO_ROW)
            rows[m++] = e->item_row[items[i]];
    return m;
}

/* The user's clicks before prediction p, oldest first, as the daemon's
 * session store holds them: the session's prefix, then the user's earlier
 * sessions, newest first until the query window is full; items without a
 * row are skipped. Into e->hrows / e->hts; returns the count. */
static uint32_t user_history(rc_eval_embed *e, const rc_eval_pos *p)
{
    const rc_clicklog *log = e->s->log;
    uint32_t want = RC_MIN(e->uq.window ? e->uq.window : 1u, RC_USERQ_MAX), n = 0;
    uint32_t ss = p->session;
    size_t end = log->sess_off[ss] + p->t;
    int64_t now = log->recs[end].ts_ms;
    while (n < want && ss != NO_ROW) {
        for (size_t i = end; i-- > log->sess_off[ss] && n < want;) {
            const rc_click_rec *r = &log->recs[i];
            uint32_t row = r->item < e->s->nitems + 1 ? e->item_row[r->item] : NO_ROW;
            if (row == NO_ROW || r->ts_ms > now)
                continue;
            e->hrows[n] = row;
            e->hts[n++] = r->ts_ms;
        }
        ss = e->prev_sess[ss];
        if (ss != NO_ROW)
            end = log->sess_off[ss + 1];
    }
    for (uint32_t i = 0; i < n / 2; i++) { /* oldest first */
        uint32_t tr = e->hrows[i];
        int64_t tt = e->hts[i];
        e->hrows[i] = e->hrows[n - 1 - i];
        e->hts[i] = e->hts[n - 1 - i];
        e->hrows[n - 1 - i] = tr;
        e->hts[n - 1 - i] = tt;
    }
    return n;
}

int rc_eval_embed_userq(rc_eval_embed *e, const rc_userq_opts *o, int scope_city)
{
    const rc_clicklog *log = e->s->log;
    uint32_t nusers = 0;
    for (uint32_t ss = 0; ss < log->nsessions; ss++)
        nusers = RC_MAX(nusers, log->recs[log->sess_off[ss]].user + 1);
    uint32_t *last = malloc((nusers ? nusers : 1) * sizeof *last);
    e->prev_sess = malloc((log->nsessions ? log->nsessions : 1) * sizeof *e->prev_sess);
    e->hrows = malloc(RC_USERQ_MAX * sizeof *e->hrows);
    e->hts = malloc(RC_USERQ_MAX * sizeof *e->hts);
    e->hw = malloc(RC_USERQ_MAX * sizeof *e->hw);
    if (!last || !e->prev_sess || !e->hrows || !e->hts || !e->hw) {
        free(last);
        return RC_ENOMEM;
    }
    memset(last, 0xff, (nusers ? nusers : 1) * sizeof *last);
    for (uint32_t ss = 0; ss < log->nsessions; ss++) { /* sessions are in start order */
        uint32_t u = log->recs[log->sess_off[ss]].user;
        e->prev_sess[ss] = last[u];
        last[u] = ss;
    }
    free(last);
    e->uq = *o;
    e->uq_on = 1;
    e->uq_city = scope_city && log->has_city;
    return 0;
}

/* Tallies the share of the exact top-k that the index's nh hits hold. */
static int compare(rc_eval_embed *e, uint32_t k, const rc_index_filter *f, uint32_t nx, uint32_t nh)
{
    uint32_t ne = 0, both = 0;
    int rc = rc_recall_exact(e->t, e->q, k, e->overfetch, f, e->xrows, nx, e->xhits, &ne);
    if (rc || !ne)
        return rc;
    for (uint32_t i = 0; i < ne; i++)
        for (uint32_t j = 0; j < nh; j++)
            if (e->hits[j].row == e->xhits[i].row) {
                both++;
                break;
            }
    e->ann_sum += (double)both / ne;
    e->ann_n++;
    return 0;
}

static int embed_predict(void *state, const rc_eval_split *s, const rc_eval_pos *p, uint32_t k,
                         uint32_t *list, uint32_t *n, const uint32_t *cand, uint32_t ncand,
                         float *scores, int *fallback)
{
    rc_eval_embed *e = state;
    rc_index_filter filter = {.city = -1};
    uint32_t nq, nx, nh = 0;
    int rc;
    *n = 0;
    if ((rc = embed_sync(e)))
        return rc;
    if (e->qfn) {
        if ((rc = e->qfn(e->qud, s, p, e->q)) < 0)
            return rc;
        *fallback = rc == 0;
        nq = 0;
    } else if (e->uq_on) {
        uint32_t nu = user_history(e, p);
        const rc_click_rec *last = &s->log->recs[s->log->sess_off[p->session] + p->t - 1];
        nu = rc_userq_weigh(&e->uq, e->hrows, e->hts, nu, last->ts_ms, e->hw);
        *fallback = !nu || rc_recall_query_vector(e->t, e->hrows, e->hw, nu, e->q) != 0;
        if (!*fallback && e->uq_city)
            filter.city = rc_userq_city(e->t, e->hrows, e->hw, nu);
        nq = 0;
    } else {
        nq = rows_of(e, s->items + p->q_off, p->nq, e->qrows);
        *fallback = !nq || rc_recall_query_vector(e->t, e->qrows, NULL, nq, e->q) != 0;
    }
    if (*fallback)
        return 0;
    nx = rows_of(e, s->items + p->x_off, p->nx, e->xrows);
    if (e->mc && nq) {
        uint32_t nquota = 0;
        rc = rc_recall_multi_category(e->t, e->ix, e->qrows, NULL, nq, RC_MIN(k, RC_EVAL_K),
                                      e->overfetch, NULL, e->xrows, nx, &e->mc_opts, e->hits, &nh,
                                      e->quotas, &nquota);
    } else if (e->exact) {
        rc = rc_recall_exact(e->t, e->q, RC_MIN(k, RC_EVAL_K), e->overfetch,
                             filter.city >= 0 ? &filter : NULL, e->xrows, nx, e->hits, &nh);
    } else {
        rc = rc_recall_search(e->t, e->ix, e->q, RC_MIN(k, RC_EVAL_K), e->overfetch,
                              filter.city >= 0 ? &filter : NULL, e->xrows, nx, e->hits, &nh);
        if (!rc && e->xhits)
            rc = compare(e, RC_MIN(k, RC_EVAL_K), filter.city >= 0 ? &filter : NULL, nx, nh);
    }
    if (rc)
        return rc;
    for (uint32_t i = 0; i < nh; i++) {
        uint32_t r = e->hits[i].row;
        if (r < e->nmapped && e->row_item[r] != NO_ROW)
            list[(*n)++] = e->row_item[r];
    }
    for (uint32_t i = 0; i < ncand; i++)
        scores[i] = embed_score(e, cand[i]);
    return 0;
}

void rc_eval_embed_multi_category(rc_eval_embed *e, const rc_mc_opts *opts)
{
    e->mc = 1;
    e->mc_opts = opts ? *opts : (rc_mc_opts){.serial = 1};
    if (!e->mc_opts.max_cats || e->mc_opts.max_cats > RC_ARRAY_LEN(e->quotas))
        e->mc_opts.max_cats = e->mc_opts.max_cats ? (uint32_t)RC_ARRAY_LEN(e->quotas) : 5;
}

void rc_eval_embed_exact(rc_eval_embed *e, int on) { e->exact = on != 0; }

int rc_eval_embed_compare(rc_eval_embed *e, int on)
{
    if (on && !e->xhits && !(e->xhits = malloc(RC_EVAL_K * sizeof *e->xhits)))
        return RC_ENOMEM;
    if (!on) {
        free(e->xhits);
        e->xhits = NULL;
    }
    return 0;
}

double rc_eval_embed_ann_recall(const rc_eval_embed *e, uint64_t *n)
{
    if (n)
        *n = e->ann_n;
    return e->ann_n ? e->ann_sum / (double)e->ann_n : 0;
}

void rc_eval_embed_query(rc_eval_embed *e, rc_eval_query_fn fn, void *ud)
{
    e->qfn = fn;
    e->qud = ud;
}

float rc_eval_embed_score(const rc_eval_embed *e, uint32_t item) { return embed_score(e, item); }

void rc_eval_embed_predictor(rc_eval_embed *e, rc_eval_predictor *pr)
{
    *pr = (rc_eval_predictor){.state = e, .predict = embed_predict};
}

int rc_eval_index_build(rc_table *t, const rc_index_opts *io, rc_index **out, char *eb, size_t el)
{
    rc_index *ix = NULL;
    rc_index_opts o = io ? *io : (rc_index_opts){0};
    int rc;
    if (!t || !out)
        return rc_err(eb, el, RC_EINVAL, "eval: no table");
    *out = NULL;
    /* Synchronous (re)training: the index is complete, IVF where the server's
     * would be, before the first search. */
    o.no_background = 1;
    if ((rc = rc_index_create(&o, t, &ix, eb, el)))
        return rc;
    for (uint32_t r = 0, n = rc_table_size(t); r < n; r++)
        rc_index_touch(ix, r);
    if ((rc = rc_index_flush(ix, 0, eb, el)) < 0 || (rc = rc_index_maintain(ix, eb, el)) < 0) {
        rc_index_destroy(ix);
        return rc;
    }
    *out = ix;
    return 0;
}
