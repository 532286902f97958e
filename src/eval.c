/* eval — the time-split protocol, the metrics and the prediction driver (see
 * include/recalld/eval.h). Predictors live in eval_models.c, the methods in
 * eval_methods.c. */
#include "recalld/eval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "recalld/common.h"

#define DEFAULT_RATIO 0.2
#define DEFAULT_QUERY 5u
#define DEFAULT_NEG   100u

/* ---- options ---- */

static int resolve(const rc_eval_opts *in, rc_eval_opts *o, char *eb, size_t el)
{
    *o = in ? *in : (rc_eval_opts){0};
    if (o->test_ratio == 0)
        o->test_ratio = DEFAULT_RATIO;
    if (!o->query_len)
        o->query_len = DEFAULT_QUERY;
    if (!o->auc_negatives)
        o->auc_negatives = DEFAULT_NEG;
    if (!o->seed)
        o->seed = 1;
    if (!(o->test_ratio > 0 && o->test_ratio < 1))
        return rc_err(eb, el, RC_EINVAL, "eval: test ratio must be in (0,1)");
    if (o->period_end_ms < o->period_start_ms ||
        (o->period_end_ms == o->period_start_ms && o->period_start_ms))
        return rc_err(eb, el, RC_EINVAL, "eval: period end must be after its start");
    if (o->query_len > RC_EVAL_MAX_QUERY || o->auc_negatives > RC_EVAL_MAX_NEGATIVES)
        return rc_err(eb, el, RC_EINVAL, "eval: query length <= %u, AUC negatives <= %u",
                      RC_EVAL_MAX_QUERY, RC_EVAL_MAX_NEGATIVES);
    return 0;
}

/* ---- split ---- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_pop(const void *a, const void *b, void *ud)
{
    const uint32_t *count = ud;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (count[x] != count[y])
        return count[x] < count[y] ? 1 : -1;
    return (x > y) - (x < y);
}

static int member(const uint8_t *sessions, uint32_t s) { return !sessions || sessions[s]; }

static int is_period(const rc_eval_opts *o) { return o->period_end_ms > o->period_start_ms; }

/* The cut: the (1 - ratio) quantile of the considered events' times. */
static int find_cut(rc_eval_split *sp, const uint8_t *sessions)
{
    const rc_clicklog *log = sp->log;
    int64_t *ts = malloc((log->n ? log->n : 1) * sizeof *ts);
    size_t n = 0;
    if (!ts)
        return RC_ENOMEM;
    for (uint32_t s = 0; s < log->nsessions; s++)
        if (member(sessions, s))
            for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
                ts[n++] = log->recs[i].ts_ms;
    sp->events = n;
    if (n)
        qsort(ts, n, sizeof *ts, cmp_i64);
    sp->cut_ms = n ? ts[(size_t)floor((1 - sp->opts.test_ratio) * (double)(n - 1))] : 0;
    if (is_period(&sp->opts))
        sp->cut_ms = sp->opts.period_start_ms;
    free(ts);
    return 0;
}

/* 1 when a session starting at first_ms is tested: after the quantile cut,
 * or in the period [cut, period_end_ms). */
static int tested(const rc_eval_split *sp, int64_t first_ms)
{
    if (is_period(&sp->opts))
        return first_ms >= sp->cut_ms && first_ms < sp->opts.period_end_ms;
    return first_ms > sp->cut_ms;
}

static void assign_roles(rc_eval_split *sp, const uint8_t *sessions)
{
    const rc_clicklog *log = sp->log;
    for (uint32_t s = 0; s < log->nsessions; s++) {
        size_t b = log->sess_off[s], e = log->sess_off[s + 1];
        uint8_t role = RC_EVAL_NONE;
        if (!member(sessions, s) || e == b)
            role = RC_EVAL_OUTSIDE;
        else if (log->recs[e - 1].ts_ms < sp->cut_ms)
            role = RC_EVAL_TRAIN;
        else if (tested(sp, log->recs[b].ts_ms) && e - b >= 2)
            role = RC_EVAL_TEST;
        sp->role[s] = role;
        sp->train_mask[s] = role == RC_EVAL_TRAIN;
        if (role == RC_EVAL_TRAIN) {
            sp->ntrain++;
            sp->train_clicks += e - b;
            for (size_t i = b; i < e; i++)
                sp->count[log->recs[i].item]++;
        } else if (role == RC_EVAL_TEST) {
            sp->ntest++;
        }
    }
}

static int build_catalog(rc_eval_split *sp)
{
    sp->pop = malloc((sp->nitems ? sp->nitems : 1) * sizeof *sp->pop);
    if (!sp->pop)
        return RC_ENOMEM;
    for (uint32_t i = 0; i < sp->nitems; i++)
        if (sp->count[i])
            sp->pop[sp->ncatalog++] = i;
    qsort_r(sp->pop, sp->ncatalog, sizeof *sp->pop, cmp_pop, sp->count);
    return 0;
}

/* Growable storage of the query / exclusion lists; stamp (exclude_prefix
 * only): per item, the last prediction (+1) whose exclusion list holds it. */
struct lists {
    uint32_t *v;
    size_t n, cap;
    uint32_t *stamp;
};

static int lists_push(struct lists *l, uint32_t item)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint32_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return RC_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = item;
    return 0;
}

static int in_list(const uint32_t *v, size_t n, uint32_t x)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == x)
            return 1;
    return 0;
}

/* Appends prediction t of session s (recs[b..]) to the split. */
static int add_position(rc_eval_split *sp, struct lists *l, uint32_t s, size_t b, uint32_t t,
                        size_t *cap)
{
    const rc_click_rec *r = sp->log->recs + b;
    if (sp->npos == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        rc_eval_pos *np = realloc(sp->pos, nc * sizeof *np);
        if (!np)
            return RC_ENOMEM;
        sp->pos = np;
        *cap = nc;
    }
    rc_eval_pos *p = &sp->pos[sp->npos++];
    *p = (rc_eval_pos){.session = s, .t = t, .target = r[t].item};
    uint32_t q[RC_EVAL_MAX_QUERY], nq = 0;
    for (uint32_t j = t; j-- > 0 && nq < sp->opts.query_len;)
        if (sp->count[r[j].item] || sp->opts.new_items)
            q[nq++] = r[j].item;
    p->q_off = (uint32_t)l->n;
    p->nq = nq;
    for (uint32_t j = nq; j-- > 0;) /* oldest first */
        if (lists_push(l, q[j]))
            return RC_ENOMEM;
    p->x_off = p->q_off;
    p->nx = nq;
    if (!sp->opts.exclude_prefix)
        return 0;
    p->x_off = (uint32_t)l->n;
    p->nx = 0;
    for (uint32_t j = 0; j < t; j++) {
        if (l->stamp[r[j].item] == sp->npos)
            continue;
        l->stamp[r[j].item] = (uint32_t)sp->npos;
        if (lists_push(l, r[j].item))
            return RC_ENOMEM;
        p->nx++;
    }
    return 0;
}

static int build_positions(rc_eval_split *sp)
{
    const rc_clicklog *log = sp->log;
    struct lists l = {0};
    size_t cap = 0;
    int rc = RC_ENOMEM;
    if (sp->opts.exclude_prefix && !(l.stamp = calloc(sp->nitems + 1, sizeof *l.stamp)))
        return RC_ENOMEM;
    for (uint32_t s = 0; s < log->nsessions; s++) {
        if (sp->role[s] != RC_EVAL_TEST)
            continue;
        size_t b = log->sess_off[s], len = log->sess_off[s + 1] - b;
        for (uint32_t t = 1; t < len; t++) {
            if (!sp->count[log->recs[b + t].item] && !sp->opts.new_items)
                continue;
            if (add_position(sp, &l, s, b, t, &cap) || l.n > UINT32_MAX - RC_EVAL_MAX_QUERY ||
                sp->npos >= UINT32_MAX) {
                free(l.v);
                goto out;
            }
        }
    }
    sp->items = l.v;
    rc = 0;
out:
    free(l.stamp);
    return rc;
}

/* Keeps about max of the predictions, chosen by a hash of (session, t). */
static void sample_positions(rc_eval_split *sp)
{
    uint32_t max = sp->opts.max_predictions;
    size_t kept = 0;
    if (!max || sp->npos <= max)
        return;
    uint64_t bar = (uint64_t)((double)max / (double)sp->npos * 4294967296.0);
    for (size_t p = 0; p < sp->npos; p++) {
        uint32_t key[3] = {sp->pos[p].session, sp->pos[p].t, (uint32_t)sp->opts.seed};
        if ((rc_hash(key, sizeof key) >> 32) < bar)
            sp->pos[kept++] = sp->pos[p];
    }
    sp->npos = kept;
}

static int by_user_time(const void *a, const void *b, void *ud)
{
    const rc_click_rec *r = ud;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (r[x].user != r[y].user)
        return r[x].user < r[y].user ? -1 : 1;
    if (r[x].ts_ms != r[y].ts_ms)
        return r[x].ts_ms < r[y].ts_ms ? -1 : 1;
    return (x > y) - (x < y);
}

/* history[p]: the user's clicks before prediction p's record, over the whole
 * log (rc_tower_history's order: by time, ties by record). The records sorted
 * by (user, ts, record) put them just before it in its user's run. */
static int build_history(rc_eval_split *sp)
{
    const rc_clicklog *log = sp->log;
    size_t n = log->n ? log->n : 1;
    size_t *ord = malloc(n * sizeof *ord);
    uint32_t *earlier = malloc(n * sizeof *earlier);
    sp->history = malloc((sp->npos ? sp->npos : 1) * sizeof *sp->history);
    if (!ord || !earlier || !sp->history) {
        free(ord);
        free(earlier);
        return RC_ENOMEM;
    }
    for (size_t i = 0; i < log->n; i++)
        ord[i] = i;
    qsort_r(ord, log->n, sizeof *ord, by_user_time, log->recs);
    for (size_t k = 0, run = 0; k < log->n; k++) {
        if (k && log->recs[ord[k]].user != log->recs[ord[k - 1]].user)
            run = k;
        earlier[ord[k]] = (uint32_t)RC_MIN(k - run, (size_t)UINT32_MAX);
    }
    for (size_t p = 0; p < sp->npos; p++)
        sp->history[p] = earlier[log->sess_off[sp->pos[p].session] + sp->pos[p].t];
    free(ord);
    free(earlier);
    return 0;
}

const char *const rc_eval_slice_names[RC_EVAL_NSLICES] = {
    "history 1-4",   "history 5-19",     "history 20-99", "history 100+",
    "with features", "without features", "new",           "older",
};

void rc_eval_slices(const rc_eval_split *s, const rc_ufeat *f, uint8_t *mask)
{
    for (size_t p = 0; p < s->npos; p++) {
        uint32_t h = s->history[p];
        uint32_t u = s->log->recs[s->log->sess_off[s->pos[p].session] + s->pos[p].t].user;
        int feat =
            f && u < f->nusers &&
            ((f->device && f->device[u]) || (f->tag_off && f->tag_off[u + 1] > f->tag_off[u]));
        unsigned hs = h >= 100  ? RC_EVAL_SL_HIST100
                      : h >= 20 ? RC_EVAL_SL_HIST20
                      : h >= 5  ? RC_EVAL_SL_HIST5
                                : RC_EVAL_SL_HIST1;
        unsigned age = s->count[s->pos[p].target] ? RC_EVAL_SL_OLDER : RC_EVAL_SL_NEW;
        mask[p] =
            (uint8_t)(1u << hs | 1u << (feat ? RC_EVAL_SL_FEAT : RC_EVAL_SL_NOFEAT) | 1u << age);
    }
}

int rc_eval_split_create(const rc_clicklog *log, const uint8_t *sessions, const rc_eval_opts *opts,
                         rc_eval_split **out, char *eb, size_t el)
{
    rc_eval_split *sp;
    int rc;
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "eval: no output");
    *out = NULL;
    if (!log)
        return rc_err(eb, el, RC_EINVAL, "eval: no log");
    if (!(sp = calloc(1, sizeof *sp)))
        return rc_err(eb, el, RC_ENOMEM, "eval: out of memory");
    sp->log = log;
    sp->nitems = rc_dict_size(log->items);
    if ((rc = resolve(opts, &sp->opts, eb, el)))
        goto fail;
    rc = RC_ENOMEM;
    sp->role = calloc(log->nsessions + 1, 1);
    sp->train_mask = calloc(log->nsessions + 1, 1);
    sp->count = calloc(sp->nitems + 1, sizeof *sp->count);
    if (!sp->role || !sp->train_mask || !sp->count || find_cut(sp, sessions))
        goto fail_mem;
    assign_roles(sp, sessions);
    if (build_catalog(sp) || build_positions(sp))
        goto fail_mem;
    sample_positions(sp);
    if (build_history(sp))
        goto fail_mem;
    if ((!sp->ntrain || !sp->npos) && !is_period(&sp->opts)) {
        rc = rc_err(eb, el, RC_EINVAL,
                    "eval: split at %lld ms leaves %u training sessions and %zu predictions "
                    "(%u test sessions): need at least one of each",
                    (long long)sp->cut_ms, sp->ntrain, sp->npos, sp->ntest);
        goto fail;
    }
    *out = sp;
    return 0;
fail_mem:
    rc = rc_err(eb, el, RC_ENOMEM, "eval: out of memory");
fail:
    rc_eval_split_destroy(sp);
    return rc;
}

void rc_eval_split_destroy(rc_eval_split *s)
{
    if (!s)
        return;
    free(s->role);
    free(s->train_mask);
    free(s->count);
    free(s->pop);
    free(s->pos);
    free(s->items);
    free(s->history);
    free(s);
}

uint32_t rc_eval_negatives(const rc_eval_split *s, size_t p, uint32_t *out)
{
    const rc_eval_pos *pos = &s->pos[p];
    const uint32_t *x = s->items + pos->x_off;
    uint32_t want = s->opts.auc_negatives, n = 0;
    uint64_t tries = 0, max_tries = 64ull * want;
    rc_rng rng;
    /* Seeded per prediction: the same negatives for every method and thread. */
    rc_rng_seed(&rng, s->opts.seed ^ ((uint64_t)(p + 1) * 0x9E3779B97F4A7C15ull));
    while (n < want && tries++ < max_tries) {
        uint32_t it = s->pop[rc_rng_below(&rng, s->ncatalog)];
        if (it == pos->target || in_list(x, pos->nx, it))
            continue;
        out[n++] = it;
    }
    return n;
}

/* ---- dump ---- */

static void put_list(FILE *f, const uint32_t *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        fprintf(f, i ? " %u" : "%u", v[i]);
}

static int dump_train(const rc_eval_split *s, FILE *f)
{
    const rc_clicklog *log = s->log;
    for (uint32_t ss = 0; ss < log->nsessions; ss++) {
        if (s->role[ss] != RC_EVAL_TRAIN)
            continue;
        for (size_t i = log->sess_off[ss]; i < log->sess_off[ss + 1]; i++)
            fprintf(f, i > log->sess_off[ss] ? " %u" : "%u", log->recs[i].item);
        fputc('\n', f);
    }
    return 0;
}

static int dump_catalog(const rc_eval_split *s, FILE *f)
{
    for (uint32_t i = 0; i < s->ncatalog; i++)
        fprintf(f, "%u\t%u\n", s->pop[i], s->count[s->pop[i]]);
    return 0;
}

static int dump_positions(const rc_eval_split *s, FILE *f)
{
    uint32_t *neg = malloc(RC_EVAL_MAX_NEGATIVES * sizeof *neg);
    if (!neg)
        return RC_ENOMEM;
    for (size_t p = 0; p < s->npos; p++) {
        const rc_eval_pos *pos = &s->pos[p];
        uint32_t nn = rc_eval_negatives(s, p, neg);
        fprintf(f, "%u\t", pos->target);
        put_list(f, s->items + pos->q_off, pos->nq);
        fputc('\t', f);
        put_list(f, s->items + pos->x_off, pos->nx);
        fputc('\t', f);
        put_list(f, neg, nn);
        fputc('\n', f);
    }
    free(neg);
    return 0;
}

static int dump_file(const rc_eval_split *s, const char *dir, const char *name,
                     int (*fn)(const rc_eval_split *, FILE *), char *eb, size_t el)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return rc_err(eb, el, RC_EIO, "dump %s: %s", path, strerror(errno));
    int rc = fn(s, f);
    if (ferror(f))
        rc = RC_EIO;
    if (fclose(f) && !rc)
        rc = RC_EIO;
    if (rc)
        return rc_err(eb, el, rc, "dump %s: %s", path,
                      rc == RC_EIO ? "write failed" : rc_strerror(rc));
    return 0;
}

int rc_eval_split_dump(const rc_eval_split *s, const char *dir, char *eb, size_t el)
{
    int rc;
    if (!s || !dir)
        return rc_err(eb, el, RC_EINVAL, "dump: no split or directory");
    if (mkdir(dir, 0755) && errno != EEXIST)
        return rc_err(eb, el, RC_EIO, "dump %s: %s", dir, strerror(errno));
    if ((rc = dump_file(s, dir, "train.txt", dump_train, eb, el)) ||
        (rc = dump_file(s, dir, "catalog.tsv", dump_catalog, eb, el)) ||
        (rc = dump_file(s, dir, "positions.tsv", dump_positions, eb, el)))
        return rc;
    return 0;
}

/* ---- metrics ---- */

uint32_t rc_eval_rank(const uint32_t *list, uint32_t n, uint32_t target)
{
    for (uint32_t i = 0; i < n; i++)
        if (list[i] == target)
            return i + 1;
    return 0;
}

double rc_eval_auc(float pos, const float *neg, uint32_t n)
{
    double below = 0;
    if (!n)
        return 0.5;
    for (uint32_t i = 0; i < n; i++)
        below += neg[i] < pos ? 1.0 : neg[i] == pos ? 0.5 : 0.0;
    return below / n;
}

int rc_eval_acc_init(rc_eval_acc *a, uint32_t nitems)
{
    *a = (rc_eval_acc){.nitems = nitems};
    a->seen = calloc(nitems ? nitems : 1, sizeof *a->seen);
    return a->seen ? 0 : RC_ENOMEM;
}

void rc_eval_acc_free(rc_eval_acc *a)
{
    if (!a)
        return;
    free(a->seen);
    a->seen = NULL;
    free(a->rank);
    a->rank = NULL;
    a->nrank = 0;
}

int rc_eval_acc_track(rc_eval_acc *a, size_t npos)
{
    uint8_t *r = calloc(npos ? npos : 1, 1);
    if (!r)
        return RC_ENOMEM;
    free(a->rank);
    a->rank = r;
    a->nrank = npos;
    return 0;
}

/* The seen bits: bit 0 every prediction, bit 1 + i slice i. */
_Static_assert(RC_EVAL_NSLICES <= 15, "a slice's seen bit must fit the 16 bits");
_Static_assert(RC_EVAL_NSLICES <= 8, "a prediction's slice mask must fit its byte");

static void part_add(rc_eval_acc_part *a, uint32_t r, double auc)
{
    a->n++;
    a->auc_sum += auc;
    if (!r)
        return;
    a->hit50++;
    a->hit20 += r <= 20;
    a->hit10 += r <= 10;
    a->rr_sum += 1.0 / r;
    a->rank_sum += r;
}

void rc_eval_acc_add_sliced(rc_eval_acc *a, const uint32_t *list, uint32_t n, uint32_t target,
                            double auc, uint8_t mask)
{
    uint32_t r = rc_eval_rank(list, RC_MIN(n, RC_EVAL_K), target);
    uint16_t bits = 1;
    part_add(&a->all, r, auc);
    for (unsigned i = 0; i < RC_EVAL_NSLICES; i++)
        if (mask >> i & 1) {
            part_add(&a->part[i], r, auc);
            bits |= (uint16_t)(2u << i);
        }
    for (uint32_t i = 0; i < n && i < RC_EVAL_K; i++)
        if (list[i] < a->nitems)
            a->seen[list[i]] |= bits;
}

void rc_eval_acc_add(rc_eval_acc *a, const uint32_t *list, uint32_t n, uint32_t target, double auc)
{
    rc_eval_acc_add_sliced(a, list, n, target, auc, 0);
}

static void part_merge(rc_eval_acc_part *d, const rc_eval_acc_part *s)
{
    d->n += s->n;
    d->hit10 += s->hit10;
    d->hit20 += s->hit20;
    d->hit50 += s->hit50;
    d->fallbacks += s->fallbacks;
    d->rr_sum += s->rr_sum;
    d->rank_sum += s->rank_sum;
    d->auc_sum += s->auc_sum;
}

void rc_eval_acc_merge(rc_eval_acc *dst, const rc_eval_acc *src)
{
    part_merge(&dst->all, &src->all);
    for (unsigned i = 0; i < RC_EVAL_NSLICES; i++)
        part_merge(&dst->part[i], &src->part[i]);
    for (uint32_t i = 0; i < dst->nitems && i < src->nitems; i++)
        dst->seen[i] |= src->seen[i];
}

static void part_result(const rc_eval_acc *a, const rc_eval_acc_part *s, uint16_t bit,
                        const uint32_t *count, uint32_t ncatalog, rc_eval_metrics *m)
{
    double n = s->n ? (double)s->n : 1;
    uint64_t covered = 0;
    for (uint32_t i = 0; i < a->nitems; i++)
        covered += (a->seen[i] & bit) && (!count || count[i]);
    *m = (rc_eval_metrics){
        .hr10 = s->hit10 / n,
        .hr20 = s->hit20 / n,
        .hr50 = s->hit50 / n,
        .mrr50 = s->rr_sum / n,
        .coverage50 = ncatalog ? (double)covered / ncatalog : 0,
        .avg_position = s->hit50 ? s->rank_sum / (double)s->hit50 : 0,
        .auc = s->n ? s->auc_sum / n : 0.5,
        .predictions = s->n,
        .fallbacks = s->fallbacks,
    };
}

void rc_eval_acc_result(const rc_eval_acc *a, const uint32_t *count, uint32_t ncatalog,
                        rc_eval_metrics *m)
{
    part_result(a, &a->all, 1, count, ncatalog, m);
}

void rc_eval_acc_slice_result(const rc_eval_acc *a, unsigned i, const uint32_t *count,
                              uint32_t ncatalog, rc_eval_metrics *m)
{
    if (i >= RC_EVAL_NSLICES) {
        *m = (rc_eval_metrics){.auc = 0.5};
        return;
    }
    part_result(a, &a->part[i], (uint16_t)(2u << i), count, ncatalog, m);
}

/* ---- driver ---- */

/* Completes list[0..*n) to K with the most popular catalog items that are
 * neither listed nor excluded. */
static void pad_popular(const rc_eval_split *s, const rc_eval_pos *p, uint32_t *list, uint32_t *n)
{
    const uint32_t *x = s->items + p->x_off;
    for (uint32_t i = 0; i < s->ncatalog && *n < RC_EVAL_K; i++) {
        uint32_t it = s->pop[i];
        if (!in_list(x, p->nx, it) && !in_list(list, *n, it))
            list[(*n)++] = it;
    }
}

int rc_eval_predict(const rc_eval_split *s, const rc_eval_predictor *pr, size_t p, rc_eval_acc *a,
                    rc_eval_scratch *w)
{
    const rc_eval_pos *pos = &s->pos[p];
    uint32_t nneg, n = 0;
    int fallback = 0, rc;
    w->cand[0] = pos->target;
    nneg = rc_eval_negatives(s, p, w->cand + 1);
    rc = pr->predict(pr->state, s, pos, RC_EVAL_K, w->list, &n, w->cand, nneg + 1, w->scores,
                     &fallback);
    if (rc)
        return rc;
    if (fallback) {
        n = 0;
        for (uint32_t i = 0; i <= nneg; i++)
            w->scores[i] = (float)s->count[w->cand[i]];
    }
    if (n > RC_EVAL_K)
        n = RC_EVAL_K;
    pad_popular(s, pos, w->list, &n);
    uint8_t mask = a->slices ? a->slices[p] : 0;
    if (fallback) {
        a->all.fallbacks++;
        for (unsigned i = 0; i < RC_EVAL_NSLICES; i++)
            a->part[i].fallbacks += mask >> i & 1;
    }
    rc_eval_acc_add_sliced(a, w->list, n, pos->target,
                           rc_eval_auc(w->scores[0], w->scores + 1, nneg), mask);
    if (a->rank && p < a->nrank)
        a->rank[p] = (uint8_t)rc_eval_rank(w->list, RC_MIN(n, RC_EVAL_K), pos->target);
    return 0;
}

/* ---- paired comparison ---- */

static void pair_session(rc_eval_pair *p, double a, double b)
{
    p->sessions++;
    p->a += a;
    p->b += b;
    p->aa += a * a;
    p->bb += b * b;
    p->ab += a * b;
}

void rc_eval_pair_add(rc_eval_pair *p, const rc_eval_pos *pos, size_t n, const uint8_t *rank_a,
                      const uint8_t *rank_b, uint32_t k)
{
    double a = 0, b = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && pos[i].session != pos[i - 1].session) {
            pair_session(p, a, b);
            a = b = 0;
        }
        a += rank_a[i] && rank_a[i] <= k;
        b += rank_b[i] && rank_b[i] <= k;
    }
    if (n)
        pair_session(p, a, b);
    p->predictions += n;
}

void rc_eval_pair_result_of(const rc_eval_pair *p, rc_eval_pair_result *r)
{
    *r = (rc_eval_pair_result){.predictions = p->predictions, .sessions = p->sessions};
    if (p->b <= 0)
        return;
    double R = p->a / p->b, n = (double)p->sessions;
    double z2 = p->aa - 2 * R * p->ab + R * R * p->bb; /* sum (A_c - R B_c)^2 */
    double var = n > 1 ? n / (n - 1) * RC_MAX(z2, 0) / (p->b * p->b) : 0;
    r->defined = 1;
    r->ratio = R;
    r->lo = R - 1.96 * sqrt(var);
    r->hi = R + 1.96 * sqrt(var);
}

int rc_eval_predict_all(const rc_eval_split *s, const rc_eval_predictor *pr, rc_eval_acc *a)
{
    rc_eval_scratch *w = malloc(sizeof *w);
    int rc = 0;
    if (!w)
        return RC_ENOMEM;
    for (size_t p = 0; p < s->npos && !rc; p++)
        rc = rc_eval_predict(s, pr, p, a, w);
    free(w);
    return rc;
}

/* ---- popularity ---- */

static int pop_predict(void *state, const rc_eval_split *s, const rc_eval_pos *p, uint32_t k,
                       uint32_t *list, uint32_t *n, const uint32_t *cand, uint32_t ncand,
                       float *scores, int *fallback)
{
    (void)state, (void)p, (void)k, (void)list;
    *n = 0; /* the driver completes an empty list with the popular items */
    *fallback = 0;
    for (uint32_t i = 0; i < ncand; i++)
        scores[i] = (float)s->count[cand[i]];
    return 0;
}

void rc_eval_popularity(const rc_eval_split *s, rc_eval_predictor *pr)
{
    (void)s;
    *pr = (rc_eval_predictor){.state = NULL, .predict = pop_predict};
}
