/* eval_daily — the daily protocol (see eval.h): the log cut into periods of
 * event time, one split per evaluated period, and the methods run in the
 * regime they are deployed in. The per-period methods are the ordinary
 * rc_eval_methods entries run on each period's split; stream-warm is the
 * prequential pass of eval_methods.c over all the periods at once. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recalld/common.h"
#include "recalld/engine.h"
#include "recalld/eval.h"
#include "eval_int.h"

#define HOUR_MS          3600000LL
#define MAX_PERIOD_HOURS (24.0 * 366)

/* floor(a / b) for b > 0. */
static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b < 0); }

static int daily_resolve(const rc_eval_daily_opts *in, rc_eval_daily_opts *o, int64_t *period_ms,
                         char *eb, size_t el)
{
    *o = in ? *in : (rc_eval_daily_opts){0};
    if (o->period_hours == 0)
        o->period_hours = 24;
    if (!o->warmup_periods)
        o->warmup_periods = 1;
    if (!(o->period_hours > 0 && o->period_hours <= MAX_PERIOD_HOURS))
        return rc_err(eb, el, RC_EINVAL, "daily: period hours must be in (0, %g]",
                      MAX_PERIOD_HOURS);
    *period_ms = llround(o->period_hours * (double)HOUR_MS);
    if (*period_ms < 1000)
        return rc_err(eb, el, RC_EINVAL, "daily: a period must last at least one second");
    return 0;
}

/* The split of the period [start, end): sessions that start before its end
 * are considered, the others are still to come. */
static int period_split(rc_eval_daily *d, int64_t start, int64_t end, uint8_t *member,
                        rc_eval_split **out, char *eb, size_t el)
{
    const rc_clicklog *log = d->log;
    rc_eval_opts o = d->opts;
    o.period_start_ms = start;
    o.period_end_ms = end;
    for (uint32_t s = 0; s < log->nsessions; s++)
        member[s] =
            log->sess_off[s + 1] > log->sess_off[s] && log->recs[log->sess_off[s]].ts_ms < end;
    return rc_eval_split_create(log, member, &o, out, eb, el);
}

/* Adds the period [start, end) when it has a training session and a
 * prediction. */
static int add_period(rc_eval_daily *d, int64_t start, int64_t end, const rc_ufeat *f,
                      uint8_t *member, char *eb, size_t el)
{
    rc_eval_split *s = NULL;
    rc_eval_period *p;
    int rc = period_split(d, start, end, member, &s, eb, el);
    if (rc)
        return rc;
    if (!s->ntrain || !s->npos) {
        d->skipped++;
        rc_eval_split_destroy(s);
        return 0;
    }
    p = &d->period[d->nperiods];
    *p = (rc_eval_period){.start_ms = start, .end_ms = end, .split = s};
    if (!(p->slices = malloc(s->npos))) {
        rc_eval_split_destroy(s);
        return rc_err(eb, el, RC_ENOMEM, "daily: out of memory");
    }
    rc_eval_slices(s, f, p->slices);
    for (size_t i = 0; i < s->npos; i++)
        p->new_targets += !s->count[s->pos[i].target];
    d->nperiods++;
    d->npos += s->npos;
    d->new_targets += p->new_targets;
    return 0;
}

/* The number of predictions of the validation split --tune would cut from
 * the training part of the period starting at start (0 when none can be
 * made): tune.h's split, the last 20% of that part's time. */
static uint64_t valid_predictions(rc_eval_daily *d, int64_t start, uint8_t *member)
{
    rc_eval_split *s = NULL, *v = NULL;
    rc_eval_opts vo = d->opts;
    uint64_t n = 0;
    if (period_split(d, start, start + d->period_ms, member, &s, NULL, 0))
        return 0;
    vo.period_start_ms = vo.period_end_ms = 0;
    vo.test_ratio = 0.2;
    vo.max_predictions = 0;
    if (s->ntrain && !rc_eval_split_create(d->log, s->train_mask, &vo, &v, NULL, 0))
        n = v->npos;
    rc_eval_split_destroy(v);
    rc_eval_split_destroy(s);
    return n;
}

/* Items clicked before end: the catalog coverage@50 is measured against. */
static uint32_t items_before(const rc_clicklog *log, int64_t end, uint32_t nitems)
{
    uint8_t *seen = calloc(nitems ? nitems : 1, 1);
    uint32_t n = 0;
    if (!seen)
        return nitems;
    for (size_t i = 0; i < log->n; i++)
        if (log->recs[i].ts_ms < end && !seen[log->recs[i].item]++)
            n++;
    free(seen);
    return n;
}

int rc_eval_daily_create(const rc_clicklog *log, const rc_eval_opts *opts,
                         const rc_eval_daily_opts *dopts, const rc_ufeat *feats,
                         rc_eval_daily **out, char *eb, size_t el)
{
    rc_eval_daily *d;
    uint8_t *member = NULL;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    int rc;
    if (!log || !out)
        return rc_err(eb, el, RC_EINVAL, "daily: no log or output");
    *out = NULL;
    if (!(d = calloc(1, sizeof *d)))
        return rc_err(eb, el, RC_ENOMEM, "daily: out of memory");
    d->log = log;
    d->opts = opts ? *opts : (rc_eval_opts){0};
    d->nitems = rc_dict_size(log->items);
    if ((rc = daily_resolve(dopts, &d->dopts, &d->period_ms, eb, el)))
        goto fail;
    for (size_t i = 0; i < log->n; i++) {
        lo = RC_MIN(lo, log->recs[i].ts_ms);
        hi = RC_MAX(hi, log->recs[i].ts_ms);
    }
    if (log->n) {
        d->first_ms = floor_div(lo, d->period_ms) * d->period_ms;
        d->total_periods = (uint32_t)RC_MIN(
            floor_div(hi, d->period_ms) - floor_div(lo, d->period_ms) + 1, (int64_t)UINT32_MAX);
    }
    rc = rc_err(eb, el, RC_ENOMEM, "daily: out of memory");
    if (!(member = malloc(log->nsessions + 1)) ||
        !(d->period = calloc(RC_MAX(d->total_periods, 1u), sizeof *d->period)))
        goto fail;
    d->warmup_asked = d->dopts.warmup_periods;
    if (d->dopts.tune_min_valid) {
        uint32_t k = d->dopts.warmup_periods;
        for (; k < d->total_periods; k++) {
            d->tune_valid_predictions =
                valid_predictions(d, d->first_ms + (int64_t)k * d->period_ms, member);
            if (d->tune_valid_predictions >= d->dopts.tune_min_valid)
                break;
        }
        if (k >= d->total_periods) {
            rc = rc_err(eb, el, RC_EINVAL,
                        "daily: --tune: no period's training part gives a validation split of "
                        "%u predictions (--tune-min-valid)",
                        d->dopts.tune_min_valid);
            goto fail;
        }
        d->dopts.warmup_periods = k;
    }
    for (uint32_t k = d->dopts.warmup_periods; k < d->total_periods; k++) {
        int64_t start = d->first_ms + (int64_t)k * d->period_ms;
        if ((rc = add_period(d, start, start + d->period_ms, feats, member, eb, el)))
            goto fail;
    }
    if (!d->nperiods) {
        rc = rc_err(eb, el, RC_EINVAL,
                    "daily: %u periods of %g h, %u of warm-up: no later period has a training "
                    "session and a prediction",
                    d->total_periods, d->dopts.period_hours, d->dopts.warmup_periods);
        goto fail;
    }
    d->ncatalog = items_before(log, d->period[d->nperiods - 1].end_ms, d->nitems);
    free(member);
    *out = d;
    return 0;
fail:
    free(member);
    rc_eval_daily_destroy(d);
    return rc;
}

void rc_eval_daily_destroy(rc_eval_daily *d)
{
    if (!d)
        return;
    for (uint32_t k = 0; d->period && k < d->nperiods; k++) {
        rc_eval_split_destroy(d->period[k].split);
        free(d->period[k].slices);
    }
    free(d->period);
    free(d);
}

void rc_eval_daily_period_name(const rc_eval_daily *d, uint32_t k, char *buf, size_t cap)
{
    time_t t = (time_t)floor_div(d->period[k].start_ms, 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (d->period_ms % (24 * HOUR_MS) == 0)
        strftime(buf, cap, "period %Y-%m-%d", &tm);
    else
        strftime(buf, cap, "period %Y-%m-%dT%H:%M", &tm);
}

/* ---- methods ---- */

const rc_eval_daily_method rc_eval_daily_methods[] = {
    {"popularity", "popularity", 0, 0, 0, 0},
    {"itemknn", "itemknn", 0, 0, 0, 0},
    {"batch-daily", "sgns", 0, 0, 0, 0},
    {"stream-warm", NULL, 0, 0, 0, 0},
    {"stream-daily", "prequential-warm", 0, 0, 0, 0},
    {"itemknn-live", "itemknn-live", 0, 0, 0, 0}, /* run only when named (--methods) */
    {"fused", "fused", 0, 0, 0, 0},
    {"stream-daily-live", "prequential-warm", 1, 0, 0, 0}, /* run only when named */
    {"stream-daily-install", NULL, 0, 1, 0, 0},            /* run only when named */
    {"stream-daily-gated", NULL, 0, 1, 1, 0},              /* run only when named */
    {"stream-warm-fused", NULL, 0, 0, 0, 1},               /* run only when named */
    {"stream-daily-fused", NULL, 0, 1, 0, 1},              /* run only when named */
};
const size_t rc_eval_daily_nmethods = RC_ARRAY_LEN(rc_eval_daily_methods);

const rc_eval_daily_method *rc_eval_daily_method_find(const char *name)
{
    for (size_t i = 0; name && i < rc_eval_daily_nmethods; i++)
        if (strcmp(rc_eval_daily_methods[i].name, name) == 0)
            return &rc_eval_daily_methods[i];
    return NULL;
}

/* The per-period method m on each period, into acc[k]. Tuning (env->tune)
 * happens once, on the first period; the later periods reuse its settings. */
static int run_per_period(const rc_eval_method *m, rc_eval_env *env, const rc_eval_daily *d,
                          rc_eval_acc *acc, rc_eval_report *rep, char *eb, size_t el)
{
    rc_eval_report r;
    int rc = 0;
    for (uint32_t k = 0; k < d->nperiods && !rc; k++) {
        env->split = d->period[k].split;
        env->slices = d->period[k].slices;
        env->acc = &acc[k];
        if ((rc = rc_eval_method_run(m, env, &r, eb, el)))
            break;
        if (k == 0)
            *rep = r; /* its settings and tuning */
        if (k == 0 && r.has_settings && env->tune) {
            env->train = r.settings;
            env->tune = 0;
        }
    }
    env->acc = NULL;
    return rc;
}

/* stream-warm: one engine, warm-started from the first period's batch
 * model, over every period (stream-daily-install: with the rebuild of each
 * later period installed into it at the period's start). */
static int run_warm_once(rc_eval_env *env, const rc_eval_daily *d, rc_eval_acc *acc,
                         rc_eval_report *rep, char *eb, size_t el)
{
    const rc_eval_split **sp = malloc(d->nperiods * sizeof *sp);
    rc_eval_acc **ap = malloc(d->nperiods * sizeof *ap);
    int rc = RC_ENOMEM;
    if (sp && ap) {
        for (uint32_t k = 0; k < d->nperiods; k++) {
            sp[k] = d->period[k].split;
            ap[k] = &acc[k];
        }
        env->split = sp[0];
        env->slices = NULL;
        rc = rc__eval_stream(env, sp, d->nperiods, ap, 1, rep, eb, el);
    } else {
        rc_err(eb, el, rc, "daily: out of memory");
    }
    free(sp);
    free(ap);
    return rc;
}

/* Sums the periods into rep: overall, per slice and per period. */
static void daily_report(const rc_eval_daily *d, rc_eval_acc *acc, rc_eval_acc *total,
                         rc_eval_daily_report *rep)
{
    for (uint32_t k = 0; k < d->nperiods; k++) {
        rc_eval_acc_result(&acc[k], NULL, d->ncatalog, &rep->period[k]);
        rc_eval_acc_merge(total, &acc[k]);
    }
    rc_eval_acc_result(total, NULL, d->ncatalog, &rep->all.m);
    rep->all.has_slices = 1;
    for (unsigned i = 0; i < RC_EVAL_NSLICES; i++)
        rc_eval_acc_slice_result(total, i, NULL, d->ncatalog, &rep->all.slice[i]);
}

int rc_eval_daily_run(const rc_eval_daily_method *m, rc_eval_env *env, const rc_eval_daily *d,
                      rc_eval_daily_report *rep, char *eb, size_t el)
{
    uint64_t t0 = rc_now_ns();
    rc_eval_acc *acc = NULL, total = {0};
    const rc_eval_method *pm = NULL;
    int rc = 0;
    if (!m || !env || !d || !rep)
        return rc_err(eb, el, RC_EINVAL, "daily: missing method, env, protocol or report");
    if (m->per_period && !(pm = rc_eval_method_find(m->per_period)))
        return rc_err(eb, el, RC_EINVAL, "daily: %s: no method %s", m->name, m->per_period);
    *rep = (rc_eval_daily_report){0};
    if (!(rep->period = calloc(d->nperiods, sizeof *rep->period)) ||
        !(rep->rank = calloc(d->nperiods, sizeof *rep->rank)) ||
        !(acc = calloc(d->nperiods, sizeof *acc)) || rc_eval_acc_init(&total, d->nitems))
        rc = RC_ENOMEM;
    rep->nperiods = rep->rank ? d->nperiods : 0;
    for (uint32_t k = 0; !rc && k < d->nperiods; k++) {
        rc = rc_eval_acc_init(&acc[k], d->nitems) ||
                     rc_eval_acc_track(&acc[k], d->period[k].split->npos)
                 ? RC_ENOMEM
                 : 0;
        acc[k].slices = d->period[k].slices;
    }
    if (rc)
        rc_err(eb, el, rc, "daily: out of memory");
    else if (pm) {
        env->live = m->live;
        rc = run_per_period(pm, env, d, acc, &rep->all, eb, el);
        env->live = 0;
        rc_engine_destroy(env->live_prev);
        env->live_prev = NULL;
    } else {
        env->install = m->install;
        env->gate = m->gate;
        env->stream_fused = m->fused;
        rc = run_warm_once(env, d, acc, &rep->all, eb, el);
        env->install = env->gate = env->stream_fused = 0;
    }
    if (!rc)
        daily_report(d, acc, &total, rep);
    for (uint32_t k = 0; !rc && k < d->nperiods; k++) { /* the ranks move to rep */
        rep->rank[k] = acc[k].rank;
        acc[k].rank = NULL;
    }
    rep->all.m.seconds = (double)(rc_now_ns() - t0) / 1e9;
    for (uint32_t k = 0; acc && k < d->nperiods; k++)
        rc_eval_acc_free(&acc[k]);
    free(acc);
    rc_eval_acc_free(&total);
    return rc;
}

void rc_eval_daily_report_free(rc_eval_daily_report *rep)
{
    if (!rep)
        return;
    free(rep->period);
    rep->period = NULL;
    for (uint32_t k = 0; rep->rank && k < rep->nperiods; k++)
        free(rep->rank[k]);
    free(rep->rank);
    rep->rank = NULL;
    rep->nperiods = 0;
}
