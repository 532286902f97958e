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
#include <stdio.h>
#include <stdlib.h>

#include "recalld/common.h"
#include "recalld/engine.h"
#include "recalld/eval.h"
#include "recalld/index.h"
#include "recalld/table.h"
#include "recalld/train.h"
#include "eval_int.h"

int rc_eval_gate_score(const rc_eval_env *env, const rc_eval_split *g, const rc_table *t,
                       rc_index *ix, double *hr50, char *eb, size_t el)
{
    rc_eval_embed *em = NULL;
    rc_eval_predictor pr;
    rc_eval_acc a;
    rc_eval_metrics m;
    rc_index *own = NULL;
    int rc = 0;
    if (!ix && (rc = rc__eval_index_build(env, (rc_table *)t, &own, eb, el)))
        return rc;
    if (rc_eval_acc_init(&a, g->nitems)) {
        rc_index_destroy(own);
        return rc_err(eb, el, RC_ENOMEM, "gate: out of memory");
    }
    rc = rc__eval_embed_new(env, g, t, ix ? ix : own, &em, eb, el);
    if (!rc)
        rc = rc__eval_embed_query_setup(env, em, eb, el);
    if (!rc) {
        rc_eval_embed_predictor(em, &pr);
        if ((rc = rc_eval_predict_all(g, &pr, &a)))
            rc_err(eb, el, rc, "gate: %s", rc_strerror(rc));
    }
    if (!rc) {
        rc_eval_acc_result(&a, NULL, g->ncatalog, &m);
        *hr50 = m.hr50;
    }
    rc_eval_embed_destroy(em);
    rc_eval_acc_free(&a);
    rc_index_destroy(own);
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

int rc__eval_gate_judge(const rc_eval_env *env, const rc_eval_split *s, rc_engine *e,
                        const rc_train_opts *bo, rc_eval_gate_stats *st, int *install, char *eb,
                        size_t el)
{
    rc_eval_split *g = NULL;
    rc_table *cand = NULL;
    double live = 0, chal = 0;
    int rc = rc_eval_gate_window(s->log, &s->opts, s->cut_ms, st->hours, &g, eb, el);
    if (rc == 1) {
        st->unjudged++;
        *install = 1;
        return 0;
    }
    if (rc)
        return rc;
    rc_train_opts o = *bo;
    o.init = rc_engine_table(e);
    o.progress = -1;
    o.quiet = 1;
    rc_engine_flush_index(e);
    if (!(rc = rc_eval_gate_score(env, g, rc_engine_table(e), rc_engine_index(e), &live, eb, el)) &&
        !(rc = rc_train_run(&o, s->log, g->train_mask, &cand, NULL, eb, el)))
        rc = rc_eval_gate_score(env, g, cand, NULL, &chal, eb, el);
    if (!rc) {
        *install = chal >= st->ratio * live;
        st->judged++;
        st->installed += (uint32_t)*install;
        st->live_hr50_sum += live;
        st->cand_hr50_sum += chal;
        if (!env->quiet)
            fprintf(stderr,
                    "recalld-eval: gate: %zu predictions in the last %g h: live %.4f, "
                    "challenger %.4f: %s\n",
                    g->npos, st->hours, live, chal, *install ? "install" : "keep the live table");
    }
    rc_table_destroy(cand);
    rc_eval_split_destroy(g);
    return rc;
}
