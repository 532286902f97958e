/* eval_gate — stream-daily-gated's champion/challenger gate on the daily
 * install (see rc_eval_env.gate in eval.h).
 *
 * A rebuild installed into a stream that already learnt everything it was
 * trained on can make recall worse: on a log whose items come and go, the
 * daemon's daily rebuild lost to the table it replaced in every period
 * (docs/BENCHMARKS.md). The gate asks before each install: gate_hours
 * before the period's start, the running table (the champion) and a
 * challenger trained from it the way the rebuild is (same batch settings,
 * on the sessions that ended by then) are both scored, frozen, on the
 * sessions that start in the remaining hours; the period's rebuild is
 * installed only when the challenger's HR@50 is >= gate_ratio x the
 * champion's. Both tables know exactly the clicks before the window and
 * neither has seen the window's, so neither side is favoured. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "recalld/common.h"
#include "recalld/engine.h"
#include "recalld/eval.h"
#include "recalld/index.h"
#include "recalld/table.h"
#include "recalld/train.h"
#include "eval_int.h"

/* HR@50 of table t, frozen, over every prediction of g, searched through ix
 * (NULL: an index of env's index.* built for it) with env's user query;
 * hits[p] = 1 where prediction p's target was in the top 50. */
static int score(const rc_eval_env *env, const rc_eval_split *g, const rc_table *t, rc_index *ix,
                 double *hr50, uint8_t *hits, char *eb, size_t el)
{
    rc_eval_embed *em = NULL;
    rc_eval_predictor pr;
    rc_eval_acc a;
    rc_eval_metrics m;
    rc_index *own = NULL;
    rc_eval_scratch *w = malloc(sizeof *w);
    int rc = 0;
    if (!w || rc_eval_acc_init(&a, g->nitems)) {
        free(w);
        return rc_err(eb, el, RC_ENOMEM, "gate: out of memory");
    }
    if (!ix && !(rc = rc__eval_index_build(env, (rc_table *)t, &own, eb, el)))
        ix = own;
    if (!rc)
        rc = rc__eval_embed_new(env, g, t, ix, &em, eb, el);
    if (!rc)
        rc = rc__eval_embed_query_setup(env, em, eb, el);
    if (!rc)
        rc_eval_embed_predictor(em, &pr);
    for (size_t p = 0; !rc && p < g->npos; p++) {
        uint64_t before = a.all.hit50;
        if ((rc = rc_eval_predict(g, &pr, p, &a, w)))
            rc_err(eb, el, rc, "gate: %s", rc_strerror(rc));
        else
            hits[p] = a.all.hit50 > before;
    }
    if (!rc) {
        rc_eval_acc_result(&a, NULL, g->ncatalog, &m);
        *hr50 = m.hr50;
    }
    rc_eval_embed_destroy(em);
    rc_eval_acc_free(&a);
    rc_index_destroy(own);
    free(w);
    return rc;
}

double rc_eval_gate_z(const uint8_t *live, const uint8_t *cand, size_t n, uint64_t only[2])
{
    only[0] = only[1] = 0;
    for (size_t p = 0; p < n; p++) {
        only[0] += live[p] && !cand[p];
        only[1] += cand[p] && !live[p];
    }
    return only[0] + only[1]
               ? ((double)only[1] - (double)only[0]) / sqrt((double)(only[0] + only[1]))
               : 0;
}

int rc_eval_gate_verdict(double live_hr50, double cand_hr50, double z, double ratio, double min_z)
{
    return cand_hr50 >= ratio * live_hr50 && z >= min_z;
}

int rc_eval_gate_compare(const rc_eval_env *env, const rc_eval_split *g, const rc_table *live,
                         rc_index *live_ix, const rc_table *cand, double ratio, double min_z,
                         rc_eval_gate_cmp *out, char *eb, size_t el)
{
    uint8_t *hits = calloc(2 * g->npos + 1, 1);
    int rc = hits ? 0 : rc_err(eb, el, RC_ENOMEM, "gate: out of memory");
    *out = (rc_eval_gate_cmp){.predictions = g->npos};
    if (!rc && !(rc = score(env, g, live, live_ix, &out->live_hr50, hits, eb, el)) &&
        !(rc = score(env, g, cand, NULL, &out->cand_hr50, hits + g->npos, eb, el))) {
        out->z = rc_eval_gate_z(hits, hits + g->npos, g->npos, out->only);
        out->install = rc_eval_gate_verdict(out->live_hr50, out->cand_hr50, out->z, ratio, min_z);
    }
    free(hits);
    return rc;
}

int rc_eval_gate_window(const rc_clicklog *log, const rc_eval_opts *opts, int64_t cut_ms,
                        double hours, rc_eval_split **g, char *eb, size_t el)
{
    rc_eval_opts o = opts ? *opts : (rc_eval_opts){0};
    uint8_t *member = malloc(log->nsessions ? log->nsessions : 1);
    char why[256];
    *g = NULL;
    if (!member)
        return rc_err(eb, el, RC_ENOMEM, "gate: out of memory");
    o.period_start_ms = cut_ms - (int64_t)(hours * 3600e3);
    o.period_end_ms = cut_ms;
    for (uint32_t q = 0; q < log->nsessions; q++)
        member[q] =
            log->sess_off[q + 1] > log->sess_off[q] && log->recs[log->sess_off[q]].ts_ms < cut_ms;
    int rc = rc_eval_split_create(log, member, &o, g, why, sizeof why);
    free(member);
    if (!rc && ((*g)->npos == 0 || (*g)->ntrain == 0)) {
        rc_eval_split_destroy(*g);
        *g = NULL;
        return 1;
    }
    if (rc == RC_EINVAL)
        return 1;
    return rc ? rc_err(eb, el, rc, "gate: %s", why) : 0;
}

const char *const rc_eval_rebuild_names[3] = {"live", "fresh", "both"};

/* The challenger of kind (RC_EVAL_REBUILD_LIVE or _FRESH) against the live
 * table of e on window g. */
static int challenge(const rc_eval_env *env, const rc_eval_split *g, rc_engine *e,
                     const rc_train_opts *bo, const rc_eval_gate_stats *st, int kind,
                     rc_eval_gate_cmp *c, char *eb, size_t el)
{
    rc_table *cand = NULL;
    rc_train_opts o = *bo;
    o.init = kind == RC_EVAL_REBUILD_LIVE ? rc_engine_table(e) : NULL;
    o.progress = -1;
    o.quiet = 1;
    int rc = rc_train_run(&o, g->log, g->train_mask, &cand, NULL, eb, el);
    if (!rc)
        rc = rc_eval_gate_compare(env, g, rc_engine_table(e), rc_engine_index(e), cand, st->ratio,
                                  st->min_z, c, eb, el);
    rc_table_destroy(cand);
    return rc;
}

int rc__eval_gate_judge(const rc_eval_env *env, const rc_eval_split *s, rc_engine *e,
                        const rc_train_opts *bo, rc_eval_gate_stats *st, int *install, char *eb,
                        size_t el)
{
    rc_eval_split *g = NULL;
    rc_eval_gate_cmp c[2];
    int kinds = env->rebuild == RC_EVAL_REBUILD_BOTH ? 2 : 1, best = 0;
    int first =
        env->rebuild == RC_EVAL_REBUILD_FRESH ? RC_EVAL_REBUILD_FRESH : RC_EVAL_REBUILD_LIVE;
    int rc = rc_eval_gate_window(s->log, &s->opts, s->cut_ms, st->hours, &g, eb, el);
    if (rc == 1) {
        st->unjudged++;
        *install = first + 1;
        st->fresh += first == RC_EVAL_REBUILD_FRESH;
        return 0;
    }
    if (rc)
        return rc;
    rc_engine_flush_index(e);
    for (int k = 0; k < kinds && !rc; k++)
        rc = challenge(env, g, e, bo, st, first + k, &c[k], eb, el);
    if (!rc) {
        if (kinds == 2 && c[1].cand_hr50 > c[0].cand_hr50)
            best = 1; /* the fresh rebuild scored higher */
        int kind = first + best;
        *install = c[best].install ? kind + 1 : 0;
        st->judged++;
        st->installed += (uint32_t)c[best].install;
        st->fresh += c[best].install && kind == RC_EVAL_REBUILD_FRESH;
        st->live_hr50_sum += c[best].live_hr50;
        st->cand_hr50_sum += c[best].cand_hr50;
        if (!env->quiet)
            fprintf(stderr,
                    "recalld-eval: gate: %zu predictions in the last %g h: live %.4f, "
                    "challenger (%s) %.4f (z %+.2f)%s: %s\n",
                    c[best].predictions, st->hours, c[best].live_hr50, rc_eval_rebuild_names[kind],
                    c[best].cand_hr50, c[best].z,
                    kinds == 2 ? (best ? " [live rebuild lower]" : " [fresh rebuild lower]") : "",
                    c[best].install ? "install" : "keep the live table");
    }
    rc_eval_split_destroy(g);
    return rc;
}
