/* tune — random search + successive halving of the batch trainer's settings on
 * a validation split (see include/recalld/tune.h). */
#include "recalld/tune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/cli.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "eval_int.h"

#define DEFAULT_SECONDS 60.0
#define MAX_CONFIGS     512u
#define EXPLORE_SHARE   0.6   /* of the budget spent on new settings */
#define TRIAL_SHARE     0.25  /* a single training run may use at most this share */
#define PRUNE_SHARE     0.9   /* halving drops settings below this share of the best */
#define VALID_MAX       5000u /* validation predictions (a sample when there are more) */
#define PRIOR_SHARE     0.15  /* of the budget kept for the category prior's stage */

/* The grids searched. Values outside a grid (given by hand) are kept as they
 * are and perturbed to the nearest grid neighbour. */
static const uint32_t g_window[] = {1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32};
static const uint32_t g_neg[] = {2, 3, 5, 7, 10, 15, 20};
static const float g_power[] = {0.05f, 0.25f, 0.5f, 0.75f, 1.0f};
static const uint32_t g_epochs[] = {1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200};
static const float g_sub[] = {0, 1e-5f, 3e-5f, 1e-4f, 3e-4f, 1e-3f, 1e-2f};
static const float g_lr[] = {0.0025f, 0.005f, 0.01f, 0.025f, 0.05f, 0.1f};
static const float g_prior[] = {3, 1, 10, 0}; /* in the order tried */

enum { P_WINDOW, P_NEG, P_POWER, P_EPOCHS, P_SUB, P_LR, P_COUNT };

static const int p_mask[P_COUNT] = {RC_CLI_SET_WINDOW, RC_CLI_SET_NEGATIVES, RC_CLI_SET_POWER,
                                    RC_CLI_SET_EPOCHS, RC_CLI_SET_SUBSAMPLE, RC_CLI_SET_LR};

#define KEPT_RUNS 8u /* per settings, the first runs' scores (the prior's stage pairs them) */

struct config {
    rc_train_opts o;
    double sum;          /* of the validation HR@50 of its runs */
    float hr[KEPT_RUNS]; /* of its first runs (run r: seed + 7919 r) */
    uint32_t runs;
    int alive; /* still in the halving */
};

struct search {
    const rc_tune_opts *to;
    const rc_clicklog *log;
    const rc_eval_split *valid;
    struct config *c;
    uint32_t n, best;
    uint32_t trials;
    uint64_t t0;
    double budget;
    double rate;     /* training seconds per cost unit, the slowest complete run */
    double eval_s;   /* seconds of the latest validation pass */
    double sess_len; /* mean clicks per validation training session */
    rc_rng rng;
};

/* The trainer's defaults (train.h), resolved for reporting and perturbing. */
rc_train_opts rc_tune_resolve(const rc_train_opts *in)
{
    rc_train_opts o = *in;
    o.window = o.window ? o.window : 5;
    o.negatives = o.negatives ? o.negatives : 5;
    o.epochs = o.epochs ? o.epochs : 5;
    o.power = o.power > 0 ? o.power : 0.75f;
    o.lr = o.lr > 0 ? o.lr : o.mode == RC_SGNS_CBOW ? 0.05f : 0.025f;
    o.max_seconds = 0;
    return o;
}

void rc_tune_format(const rc_train_opts *in, char *buf, size_t cap)
{
    rc_train_opts o = rc_tune_resolve(in);
    if (!buf || !cap)
        return;
    int n = snprintf(buf, cap, "window=%u negatives=%u power=%g epochs=%u subsample=%g lr=%g",
                     o.window, o.negatives, o.power, o.epochs, o.subsample, o.lr);
    if (o.cate_prior > 0 && n >= 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " cate_prior=%g", o.cate_prior);
}

static double elapsed(const struct search *s) { return (double)(rc_now_ns() - s->t0) / 1e9; }

/* Training cost of o in arbitrary units: pairs per click grow with the
 * window until it covers a whole session, each pair costs 1 + negatives. */
static double cost_units(const struct search *s, const rc_train_opts *o)
{
    double w = RC_MIN((double)o->window, s->sess_len);
    return (double)o->epochs * RC_MAX(w, 1.0) * (1.0 + o->negatives);
}

/* Predicted wall time of one trial of o (0 before the first measurement). */
static double predicted(const struct search *s, const rc_train_opts *o)
{
    return s->rate * cost_units(s, o) + s->eval_s;
}

/* Index of the grid value nearest v. */
static uint32_t near_u(const uint32_t *g, uint32_t n, uint32_t v)
{
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (labs((long)g[i] - (long)v) < labs((long)g[b] - (long)v))
            b = i;
    return b;
}

static uint32_t near_f(const float *g, uint32_t n, float v)
{
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (fabsf(g[i] - v) < fabsf(g[b] - v))
            b = i;
    return b;
}

/* Grid index for parameter p: uniform (random) or one step from cur (local). */
static uint32_t pick(rc_rng *r, uint32_t n, uint32_t cur, int local)
{
    if (!local)
        return rc_rng_below(r, n);
    if (cur == 0)
        return 1 < n ? 1 : 0;
    if (cur + 1 >= n)
        return cur - 1;
    return rc_rng_below(r, 2) ? cur + 1 : cur - 1;
}

static uint32_t step_u(rc_rng *r, const uint32_t *g, uint32_t n, uint32_t v, int local)
{
    return g[pick(r, n, near_u(g, n, v), local)];
}

static float step_f(rc_rng *r, const float *g, uint32_t n, float v, int local)
{
    return g[pick(r, n, near_f(g, n, v), local)];
}

static void set_param(rc_train_opts *o, int p, rc_rng *r, int local)
{
#define N(g) ((uint32_t)RC_ARRAY_LEN(g))
    switch (p) {
    case P_WINDOW:
        o->window = step_u(r, g_window, N(g_window), o->window, local);
        break;
    case P_NEG:
        o->negatives = step_u(r, g_neg, N(g_neg), o->negatives, local);
        break;
    case P_POWER:
        o->power = step_f(r, g_power, N(g_power), o->power, local);
        break;
    case P_EPOCHS:
        o->epochs = step_u(r, g_epochs, N(g_epochs), o->epochs, local);
        break;
    case P_SUB:
        o->subsample = step_f(r, g_sub, N(g_sub), o->subsample, local);
        break;
    default:
        o->lr = step_f(r, g_lr, N(g_lr), o->lr, local);
        break;
    }
#undef N
}

static int same(const rc_train_opts *a, const rc_train_opts *b)
{
    return a->window == b->window && a->negatives == b->negatives && a->power == b->power &&
           a->epochs == b->epochs && a->subsample == b->subsample && a->lr == b->lr &&
           a->cate_prior == b->cate_prior;
}

/* New settings: all free parameters random, or (local) one or two of them
 * moved one grid step from the best. Returns 0 when it duplicated a tried one. */
static int propose(struct search *s, rc_train_opts *o, int local)
{
    int free_p[P_COUNT], nfree = 0;
    for (int p = 0; p < P_COUNT; p++)
        if (!(s->to->fixed_mask & p_mask[p]))
            free_p[nfree++] = p;
    if (!nfree)
        return 0;
    *o = s->c[local ? s->best : 0].o;
    if (local) {
        uint32_t moves = 1 + rc_rng_below(&s->rng, 2);
        for (uint32_t i = 0; i < moves; i++)
            set_param(o, free_p[rc_rng_below(&s->rng, (uint32_t)nfree)], &s->rng, 1);
    } else {
        for (int i = 0; i < nfree; i++)
            set_param(o, free_p[i], &s->rng, 0);
    }
    for (uint32_t i = 0; i < s->n; i++)
        if (same(&s->c[i].o, o))
            return 0;
    return 1;
}

static double mean(const struct config *c) { return c->runs ? c->sum / c->runs : -1; }

/* Trains config i once more (seed offset by its run count) and scores it. */
static int run_trial(struct search *s, uint32_t i, char *eb, size_t el)
{
    struct config *c = &s->c[i];
    rc_train_opts o = c->o;
    rc_table *t = NULL;
    rc_index *ix = NULL;
    rc_eval_embed *em = NULL;
    rc_eval_predictor pr;
    rc_eval_acc acc;
    rc_eval_metrics m;
    rc_train_result tr;
    double left = s->budget - elapsed(s);
    uint64_t t_eval;
    int rc;
    o.seed = (o.seed ? o.seed : 1) + 7919u * c->runs;
    o.max_seconds = RC_MAX(0.5, RC_MIN(left, s->budget * TRIAL_SHARE));
    o.progress = -1;
    o.quiet = 1;
    if ((rc = rc_eval_acc_init(&acc, s->valid->nitems)))
        return rc_err(eb, el, rc, "tune: out of memory");
    if ((rc = rc_train_run(&o, s->log, s->valid->train_mask, &t, &tr, eb, el)))
        goto out;
    /* The slowest rate seen: subsampling makes some runs cheaper than their
     * units say, and an underestimate starts runs that hit the trial cap. */
    if (!tr.stopped)
        s->rate = RC_MAX(s->rate, tr.seconds / cost_units(s, &o));
    t_eval = rc_now_ns();
    rc_table_set_pop_weight(t, s->to->pop_weight);
    if ((rc = rc_eval_index_build(t, s->to->index, &ix, eb, el)))
        goto out;
    if ((rc = rc_eval_embed_create(s->valid, t, ix, s->to->overfetch, &em))) {
        rc_err(eb, el, rc, "tune: out of memory");
        goto out;
    }
    rc_eval_embed_predictor(em, &pr);
    if ((rc = rc_eval_predict_all(s->valid, &pr, &acc))) {
        rc_err(eb, el, rc, "tune: recall failed: %s", rc_strerror(rc));
        goto out;
    }
    rc_eval_acc_result(&acc, NULL, 0, &m);
    s->eval_s = (double)(rc_now_ns() - t_eval) / 1e9;
    c->sum += m.hr50;
    if (c->runs < KEPT_RUNS)
        c->hr[c->runs] = (float)m.hr50;
    c->runs++;
    s->trials++;
    for (uint32_t j = 0; j < s->n; j++)
        if (mean(&s->c[j]) > mean(&s->c[s->best]))
            s->best = j;
    if (!s->to->quiet) {
        char line[256];
        rc_tune_format(&c->o, line, sizeof line);
        fprintf(stderr, "tune: %5.1fs trial %u: %s: hr@50 %.4f (mean %.4f over %u)%s\n", elapsed(s),
                s->trials, line, m.hr50, mean(c), c->runs,
                tr.stopped ? " (stopped at the trial time limit)" : "");
    }
out:
    rc_eval_embed_destroy(em);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    rc_eval_acc_free(&acc);
    return rc;
}

/* Random and local proposals until `until` seconds into the search. */
static int explore(struct search *s, double until, char *eb, size_t el)
{
    uint32_t dup = 0;
    while (s->n < MAX_CONFIGS && elapsed(s) < until && dup < 2000) {
        rc_train_opts o;
        int local = s->n >= 4 && rc_rng_below(&s->rng, 2);
        double left = until - elapsed(s);
        /* Settings predicted to outlast a trial's share are not started:
         * a run cut short says little about them. */
        if (!propose(s, &o, local) ||
            predicted(s, &o) > RC_MIN(s->budget * TRIAL_SHARE, RC_MAX(left, 0.0))) {
            dup++;
            continue;
        }
        dup = 0;
        s->c[s->n] = (struct config){.o = o, .alive = 1};
        int rc = run_trial(s, s->n++, eb, el);
        if (rc)
            return rc;
    }
    return 0;
}

static int by_mean_desc(const void *a, const void *b, void *ud)
{
    const struct config *c = ud;
    double x = mean(&c[*(const uint32_t *)a]), y = mean(&c[*(const uint32_t *)b]);
    return (x < y) - (x > y);
}

/* Successive halving: the best third (at least 2) runs again, repeatedly;
 * settings under PRUNE_SHARE of the best mean are dropped at once. */
static int halve(struct search *s, char *eb, size_t el)
{
    uint32_t *ord = malloc((s->n ? s->n : 1) * sizeof *ord), alive = s->n;
    int rc = 0;
    if (!ord)
        return rc_err(eb, el, RC_ENOMEM, "tune: out of memory");
    while (alive > 1 && !rc) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < s->n; i++)
            if (s->c[i].alive)
                ord[k++] = i;
        qsort_r(ord, k, sizeof *ord, by_mean_desc, s->c);
        alive = RC_MAX(2, (k + 2) / 3);
        if (alive >= k)
            alive = k - 1;
        while (alive > 1 && mean(&s->c[ord[alive - 1]]) < PRUNE_SHARE * mean(&s->c[ord[0]]))
            alive--;
        for (uint32_t i = alive; i < k; i++)
            s->c[ord[i]].alive = 0;
        for (uint32_t i = 0; i < alive && alive > 1 && !rc; i++) {
            if (elapsed(s) >= s->budget)
                goto out;
            /* A run cut short by the budget would spoil a confirmed mean. */
            if (predicted(s, &s->c[ord[i]].o) > s->budget - elapsed(s))
                continue;
            rc = run_trial(s, ord[i], eb, el);
        }
    }
out:
    free(ord);
    return rc;
}

/* The best mean among the settings still alive in the halving (every one of
 * them has been run as often as the others, give or take the last round). */
static uint32_t choose(const struct search *s)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < s->n; i++) {
        const struct config *c = &s->c[i];
        if (c->alive && c->runs && (best == UINT32_MAX || mean(c) > mean(&s->c[best])))
            best = i;
    }
    return best == UINT32_MAX ? s->best : best;
}

/* Mean validation HR@50 of c's first r runs (r <= KEPT_RUNS). */
static double first_mean(const struct config *c, uint32_t r)
{
    double sum = 0;
    for (uint32_t i = 0; i < r; i++)
        sum += c->hr[i];
    return r ? sum / r : -1;
}

/* The category prior (train.h cate_prior) on the chosen settings b: each
 * grid value is trained with the seeds b ran with, as often as the time left
 * allows (at most as often as b ran, KEPT_RUNS at most), and judged against
 * b's runs with the same seeds: a paired comparison, so one run of each
 * already says something. b stays on a tie. The prior only moves rarely
 * clicked items toward their category, so it is chosen last, on the
 * settings that place the others best. */
static int prior_stage(struct search *s, uint32_t *b, char *eb, size_t el)
{
    rc_train_opts base = s->c[*b].o;
    uint32_t runs = RC_MIN(s->c[*b].runs, KEPT_RUNS);
    for (size_t i = 0; i < RC_ARRAY_LEN(g_prior); i++) { /* room kept: see rc_tune_run */
        if (g_prior[i] == base.cate_prior)
            continue;
        uint32_t k = s->n++;
        struct config *c = &s->c[k];
        *c = (struct config){.o = base};
        c->o.cate_prior = g_prior[i];
        while (c->runs < runs && predicted(s, &c->o) <= s->budget - elapsed(s)) {
            int rc = run_trial(s, k, eb, el);
            if (rc)
                return rc;
        }
        if (!c->runs) {
            s->n--; /* not tried: not counted */
            if (!s->to->quiet)
                fprintf(stderr, "tune: no time left to try cate_prior=%g\n", (double)g_prior[i]);
            continue;
        }
        uint32_t r = RC_MIN(c->runs, RC_MIN(s->c[*b].runs, KEPT_RUNS));
        if (first_mean(c, r) > first_mean(&s->c[*b], r))
            *b = k;
    }
    return 0;
}

/* Cycles of exploration (EXPLORE_SHARE of the time left) and halving, until
 * the budget is spent or a cycle tries nothing new. The halving of a later
 * cycle ranks the survivors of the earlier ones with the new settings. */
static int search(struct search *s, char *eb, size_t el)
{
    int rc = 0;
    while (!rc && elapsed(s) < s->budget * 0.95) {
        uint32_t trials = s->trials;
        double until = elapsed(s) + (s->budget - elapsed(s)) * EXPLORE_SHARE;
        if ((rc = explore(s, until, eb, el)) || (rc = halve(s, eb, el)))
            break;
        if (s->trials == trials)
            break;
    }
    return rc;
}

int rc_tune_run(const rc_tune_opts *opts, const rc_train_opts *base, const rc_clicklog *log,
                const uint8_t *sessions, const rc_eval_opts *eval, rc_tune_result *res, char *eb,
                size_t el)
{
    rc_tune_opts to = opts ? *opts : (rc_tune_opts){0};
    rc_eval_opts eo = eval ? *eval : (rc_eval_opts){0};
    rc_eval_split *valid = NULL;
    struct search s = {.to = &to, .log = log};
    int rc;
    if (!base || !log || !res)
        return rc_err(eb, el, RC_EINVAL, "tune: no settings, log or result");
    if (to.seconds < 0 || to.valid_ratio < 0 || to.valid_ratio >= 1)
        return rc_err(eb, el, RC_EINVAL, "tune: seconds >= 0, validation ratio in [0,1)");
    eo.test_ratio = to.valid_ratio > 0 ? to.valid_ratio : 0.2;
    if (!eo.max_predictions)
        eo.max_predictions = VALID_MAX;
    s.budget = to.seconds > 0 ? to.seconds : DEFAULT_SECONDS;
    s.t0 = rc_now_ns();
    rc_rng_seed(&s.rng, to.seed ? to.seed : base->seed ? base->seed : 1);
    if ((rc = rc_eval_split_create(log, sessions, &eo, &valid, eb, el)))
        return rc;
    s.valid = valid;
    s.sess_len = valid->ntrain ? (double)valid->train_clicks / valid->ntrain : 1;
    /* the search fills MAX_CONFIGS at most, the prior's stage adds its own */
    if (!(s.c = calloc(MAX_CONFIGS + RC_ARRAY_LEN(g_prior), sizeof *s.c))) {
        rc = rc_err(eb, el, RC_ENOMEM, "tune: out of memory");
        goto out;
    }
    s.c[0] = (struct config){.o = rc_tune_resolve(base), .alive = 1};
    s.n = 1;
    /* the prior's stage: with categories, unless it was given by hand */
    int prior = log->has_cate && !(to.fixed_mask & RC_CLI_SET_CATE_PRIOR);
    double budget = s.budget;
    if (prior)
        s.budget = budget * (1 - PRIOR_SHARE);
    if ((rc = run_trial(&s, 0, eb, el)) || (rc = search(&s, eb, el)))
        goto out;
    uint32_t b = choose(&s);
    s.budget = budget;
    if (prior && (rc = prior_stage(&s, &b, eb, el)))
        goto out;
    *res = (rc_tune_result){.best = s.c[b].o,
                            .hr50 = mean(&s.c[b]),
                            .base_hr50 = s.c[0].runs ? s.c[0].sum / s.c[0].runs : 0,
                            .configs = s.n,
                            .trials = s.trials,
                            .seconds = elapsed(&s),
                            .valid_predictions = valid->npos};
    res->best.seed = base->seed;
    if (!to.quiet) {
        char line[256];
        rc_tune_format(&res->best, line, sizeof line);
        fprintf(stderr,
                "tune: chose %s: validation hr@50 %.4f (base %.4f), %u settings, %u runs, "
                "%.1f s\n",
                line, res->hr50, res->base_hr50, res->configs, res->trials, res->seconds);
    }
out:
    free(s.c);
    rc_eval_split_destroy(valid);
    return rc;
}

/* ---- the streaming knobs ---- */

const char *const rc_tune_stream_keys[RC_TUNE_STREAM_NKEYS] = {"train.replay_ratio",
                                                               "train.lr_decay_clicks",
                                                               "train.lr_min",
                                                               "model.lr",
                                                               "recall.window",
                                                               "recall.half_life_ms",
                                                               "model.subsample",
                                                               "train.replay_adaptive",
                                                               "train.replay_subsample",
                                                               "train.anchor",
                                                               "train.anchor_fade_clicks",
                                                               "train.replay_per_hour"};

/* The built-in grids, per knob (the key's unit). */
static const double sg_replay[] = {0, 10, 25, 50, 100, 200, 400};
static const double sg_decay[] = {0, 10, 20, 30, 50, 100, 200, 1000};
static const double sg_lr_min[] = {0.0001, 0.0005, 0.001, 0.002, 0.005};
static const double sg_lr[] = {0.0025, 0.005, 0.01, 0.025, 0.05, 0.1};
static const double sg_window[] = {3, 5, 10, 20};
static const double sg_half_life[] = {0, 600000, 3600000, 86400000};
static const double sg_subsample[] = {0, 3e-5, 1e-4, 3e-4, 1e-3};
static const double sg_adaptive[] = {0, 1};
static const double sg_replay_sub[] = {0, 3e-5, 1e-4, 3e-4, 1e-3};
static const double sg_anchor[] = {0, 10, 30, 100, 300, 1000};
static const double sg_anchor_fade[] = {0, 20, 100, 1000};
static const double sg_per_hour[] = {0, 500, 2000, 8000, 20000};

#define KNOB_ANCHOR      9u
#define KNOB_ANCHOR_FADE 10u
#define KNOB_PER_HOUR    11u

#define STREAM_MAX_TRIALS 256u

struct stream_search {
    const rc_eval_env *env;
    const rc_eval_split *valid;
    const char *warm_path;
    int warm;
    uint64_t t0;
    double budget, last_s;
    rc_eval_stream_knobs tried[STREAM_MAX_TRIALS];
    double tried_hr[STREAM_MAX_TRIALS];
    uint32_t ntried;
};

static double knob_get(const rc_eval_stream_knobs *k, unsigned i)
{
    switch (i) {
    case 0:
        return k->replay_ratio;
    case 1:
        return k->lr_decay_clicks;
    case 2:
        return k->lr_min;
    case 3:
        return k->lr;
    case 4:
        return k->recall_window;
    case 5:
        return (double)k->half_life_ms;
    case 6:
        return k->subsample;
    case 7:
        return k->replay_adaptive;
    case 8:
        return k->replay_subsample;
    case KNOB_ANCHOR:
        return k->anchor;
    case KNOB_ANCHOR_FADE:
        return k->anchor_fade;
    default:
        return k->replay_per_hour;
    }
}

static void knob_set(rc_eval_stream_knobs *k, unsigned i, double v)
{
    switch (i) {
    case 0:
        k->replay_ratio = (float)v;
        break;
    case 1:
        k->lr_decay_clicks = (float)v;
        break;
    case 2:
        k->lr_min = (float)v;
        break;
    case 3:
        k->lr = (float)v;
        break;
    case 4:
        k->recall_window = (uint32_t)v;
        break;
    case 5:
        k->half_life_ms = (int64_t)v;
        break;
    case 6:
        k->subsample = (float)v;
        break;
    case 7:
        k->replay_adaptive = v != 0;
        break;
    case 8:
        k->replay_subsample = (float)v;
        break;
    case KNOB_ANCHOR:
        k->anchor = (float)v;
        break;
    case KNOB_ANCHOR_FADE:
        k->anchor_fade = (float)v;
        break;
    default:
        k->replay_per_hour = (float)v;
        break;
    }
}

static int knobs_same(const rc_eval_stream_knobs *a, const rc_eval_stream_knobs *b)
{
    for (unsigned i = 0; i < RC_TUNE_STREAM_NKEYS; i++)
        if (knob_get(a, i) != knob_get(b, i))
            return 0;
    return 1;
}

void rc_tune_stream_format(const rc_eval_stream_knobs *k, char *buf, size_t cap)
{
    if (buf && cap)
        snprintf(buf, cap,
                 "train.replay_ratio=%g train.lr_decay_clicks=%g train.lr_min=%g model.lr=%g "
                 "recall.window=%u recall.half_life_ms=%lld model.subsample=%g "
                 "train.replay_adaptive=%d train.replay_subsample=%g train.anchor=%g "
                 "train.anchor_fade_clicks=%g train.replay_per_hour=%g",
                 (double)k->replay_ratio, (double)k->lr_decay_clicks, (double)k->lr_min,
                 (double)k->lr, k->recall_window, (long long)k->half_life_ms, (double)k->subsample,
                 k->replay_adaptive, (double)k->replay_subsample, (double)k->anchor,
                 (double)k->anchor_fade, (double)k->replay_per_hour);
}

static double stream_elapsed(const struct stream_search *s)
{
    return (double)(rc_now_ns() - s->t0) / 1e9;
}

/* Streams the validation log with knobs k (all six set on top of the
 * env's --stream-set; the user's keys are never searched, so they agree)
 * into *hr. A setting tried before is not run again. */
static int stream_trial(struct stream_search *s, const rc_eval_stream_knobs *k, double *hr,
                        char *eb, size_t el)
{
    for (uint32_t i = 0; i < s->ntried; i++)
        if (knobs_same(&s->tried[i], k)) {
            *hr = s->tried_hr[i];
            return 0;
        }
    const rc_eval_env *env = s->env;
    char kv[RC_TUNE_STREAM_NKEYS][64];
    const char *set[64 + RC_TUNE_STREAM_NKEYS];
    size_t n = 0;
    if (env->nstream_set > 64)
        return rc_err(eb, el, RC_EINVAL, "--stream-set: too many settings");
    for (size_t i = 0; i < env->nstream_set; i++)
        set[n++] = env->stream_set[i];
    for (unsigned i = 0; i < RC_TUNE_STREAM_NKEYS; i++) {
        if (i == 4)
            snprintf(kv[i], sizeof kv[i], "%s=%u", rc_tune_stream_keys[i], k->recall_window);
        else if (i == 5)
            snprintf(kv[i], sizeof kv[i], "%s=%lld", rc_tune_stream_keys[i],
                     (long long)k->half_life_ms);
        else
            snprintf(kv[i], sizeof kv[i], "%s=%.7g", rc_tune_stream_keys[i], knob_get(k, i));
        set[n++] = kv[i];
    }
    rc_eval_env run = *env;
    run.split = s->valid;
    run.slices = NULL;
    run.acc = NULL;
    run.tune = 0;
    run.tune_stream = 0;
    run.have_stream_tuned[0] = run.have_stream_tuned[1] = 0;
    run.quiet = 1;
    run.warm_model = s->warm_path;
    run.stream_set = set;
    run.nstream_set = n;
    rc_eval_acc acc, *ap = &acc;
    rc_eval_report rep = {0};
    uint64_t t0 = rc_now_ns();
    if (rc_eval_acc_init(&acc, s->valid->nitems))
        return rc_err(eb, el, RC_ENOMEM, "tune: out of memory");
    int rc = rc__eval_stream(&run, &s->valid, 1, &ap, s->warm, &rep, eb, el);
    rc_eval_acc_free(&acc);
    if (rc)
        return rc;
    s->last_s = (double)(rc_now_ns() - t0) / 1e9;
    *hr = rep.m.hr50;
    if (s->ntried < STREAM_MAX_TRIALS) {
        s->tried[s->ntried] = *k;
        s->tried_hr[s->ntried++] = *hr;
    }
    if (!env->quiet) {
        char line[512];
        rc_tune_stream_format(k, line, sizeof line);
        fprintf(stderr, "tune (%s stream): %5.1fs trial %u: %s: hr@50 %.4f\n",
                s->warm ? "warm" : "cold", stream_elapsed(s), s->ntried, line, *hr);
    }
    return 0;
}

/* 1 when the key of knob i was given by --stream-set. */
static int user_set(const rc_eval_env *env, unsigned i)
{
    size_t kl = strlen(rc_tune_stream_keys[i]);
    for (size_t j = 0; j < env->nstream_set; j++)
        if (strncmp(env->stream_set[j], rc_tune_stream_keys[i], kl) == 0 &&
            env->stream_set[j][kl] == '=')
            return 1;
    return 0;
}

int rc_tune_stream_run(const rc_tune_stream_opts *opts, const rc_eval_env *env, int warm,
                       rc_eval_stream_tune *res, char *eb, size_t el)
{
    static const double *const grids[RC_TUNE_STREAM_NKEYS] = {
        sg_replay,    sg_decay,    sg_lr_min,     sg_lr,     sg_window,      sg_half_life,
        sg_subsample, sg_adaptive, sg_replay_sub, sg_anchor, sg_anchor_fade, sg_per_hour};
    static const uint32_t ngrids[RC_TUNE_STREAM_NKEYS] = {
        RC_ARRAY_LEN(sg_replay),    RC_ARRAY_LEN(sg_decay),       RC_ARRAY_LEN(sg_lr_min),
        RC_ARRAY_LEN(sg_lr),        RC_ARRAY_LEN(sg_window),      RC_ARRAY_LEN(sg_half_life),
        RC_ARRAY_LEN(sg_subsample), RC_ARRAY_LEN(sg_adaptive),    RC_ARRAY_LEN(sg_replay_sub),
        RC_ARRAY_LEN(sg_anchor),    RC_ARRAY_LEN(sg_anchor_fade), RC_ARRAY_LEN(sg_per_hour)};
    /* the search order: the anchor (warm only) last */
    static const unsigned order_cold[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, KNOB_PER_HOUR};
    static const unsigned order_warm[] = {
        0, 1, 2, 3, 4, 5, 6, 7, 8, KNOB_PER_HOUR, KNOB_ANCHOR, KNOB_ANCHOR_FADE};
    rc_tune_stream_opts to = opts ? *opts : (rc_tune_stream_opts){0};
    struct stream_search *s = NULL;
    rc_eval_split *valid = NULL;
    rc_config cfg;
    rc_train_opts o;
    char path[256] = "";
    int rc;
    if (!env || !env->log || !env->split || !res)
        return rc_err(eb, el, RC_EINVAL, "tune: no env, log, split or result");
    if (to.seconds < 0 || to.valid_ratio < 0 || to.valid_ratio >= 1)
        return rc_err(eb, el, RC_EINVAL, "tune: seconds >= 0, validation ratio in [0,1)");
    o = rc_tune_resolve(env->have_sgns ? &env->sgns.settings : &env->train);
    o.mode = RC_SGNS_SKIPGRAM;
    if ((rc = rc__eval_stream_config(env, &o, &cfg, eb, el)))
        return rc;
    if (!(s = calloc(1, sizeof *s)))
        return rc_err(eb, el, RC_ENOMEM, "tune: out of memory");
    *s = (struct stream_search){.env = env, .warm = !!warm, .t0 = rc_now_ns()};
    s->budget = to.seconds > 0          ? to.seconds
                : env->tune_seconds > 0 ? env->tune_seconds
                                        : DEFAULT_SECONDS;
    /* The validation split: the quantile cut of the training sessions only,
     * even when env->split is a period of the daily protocol. */
    rc_eval_opts vo = env->split->opts;
    vo.period_start_ms = vo.period_end_ms = 0;
    vo.test_ratio = to.valid_ratio > 0 ? to.valid_ratio : 0.2;
    vo.max_predictions = VALID_MAX;
    if ((rc = rc_eval_split_create(env->log, env->split->train_mask, &vo, &valid, eb, el)))
        goto out;
    s->valid = valid;
    if (s->warm) {
        rc_eval_env wenv = *env;
        wenv.split = valid;
        wenv.quiet = 1;
        if ((rc = rc__eval_warm_model(&wenv, &o, path, eb, el)))
            goto out;
        s->warm_path = path;
    }
    rc_eval_stream_knobs cur;
    rc__eval_stream_knobs(&cfg, &cur);
    double cur_hr;
    *res = (rc_eval_stream_tune){0};
    const unsigned *order = s->warm ? order_warm : order_cold;
    unsigned norder = s->warm ? RC_ARRAY_LEN(order_warm) : RC_ARRAY_LEN(order_cold);
    for (unsigned j = 0; j < norder; j++)
        if ((!to.free_mask || (to.free_mask & (1u << order[j]))) && !user_set(env, order[j]))
            res->searched |= 1u << order[j];
    if ((rc = stream_trial(s, &cur, &cur_hr, eb, el)))
        goto out;
    res->base_hr50 = cur_hr;
    for (int improved = 1; improved;) {
        improved = 0;
        for (unsigned oi = 0; oi < norder; oi++) {
            unsigned i = order[oi];
            if (!(res->searched & (1u << i)) || (i == KNOB_ANCHOR_FADE && cur.anchor <= 0))
                continue;
            const double *g = to.grid[i] ? to.grid[i] : grids[i];
            uint32_t ng = to.grid[i] ? to.ngrid[i] : ngrids[i];
            rc_eval_stream_knobs best = cur;
            double best_hr = cur_hr;
            for (uint32_t j = 0; j < ng; j++) {
                rc_eval_stream_knobs k = cur;
                double hr;
                knob_set(&k, i, g[j]);
                if (knobs_same(&k, &cur))
                    continue;
                if (stream_elapsed(s) + s->last_s > s->budget)
                    goto done;
                if ((rc = stream_trial(s, &k, &hr, eb, el)))
                    goto out;
                if (hr > best_hr) {
                    best = k;
                    best_hr = hr;
                }
            }
            if (best_hr > cur_hr) {
                cur = best;
                cur_hr = best_hr;
                improved = 1;
            }
        }
    }
done:
    res->best = cur;
    res->hr50 = cur_hr;
    res->trials = s->ntried;
    res->seconds = stream_elapsed(s);
    res->valid_predictions = valid->npos;
    if (!env->quiet) {
        char line[512];
        rc_tune_stream_format(&cur, line, sizeof line);
        fprintf(stderr,
                "tune (%s stream): chose %s: validation hr@50 %.4f (base %.4f), %u runs, %.1f s\n",
                s->warm ? "warm" : "cold", line, res->hr50, res->base_hr50, res->trials,
                res->seconds);
    }
out:
    if (path[0])
        unlink(path);
    rc_eval_split_destroy(valid);
    free(s);
    return rc;
}
