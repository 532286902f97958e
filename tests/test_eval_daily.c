/* eval_daily — the daily protocol's mechanics on a hand-made log: period
 * boundaries and roles, which targets are predicted (with and without
 * --new-items), which model predicts each click (popularity's ranks per
 * period, the fallbacks and new-item hits of the batch and streaming
 * methods), and recalld-eval --protocol daily's JSON. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/eval.h"
#include "recalld/tune.h"
#include "test.h"

#define DAY_MS 86400000LL

/* Times in seconds (day 1 starts at 86400, day 2 at 172800, day 3 at
 * 259200); sessions split at 30 min.
 *   day 0 (warm-up)
 *     u1: A 100, B 200, C 300
 *     u2: A 1000, C 1100
 *     u3: B 86000, D 86500          spans the start of day 1
 *   day 1: training u1 u2 (catalog A2 B1 C2)
 *     u4: A 90000, B 90100, E 90200, C 90300   E first seen
 *     u5: A 95000, E 95100                     E again: new, already clicked
 *     u9: E 97000, C 97100                     query E only
 *     u10: G 100000                            one click: no batch row for G
 *   day 2: training u1..u5 u9 u10 (A4 B3 C4 D1 E3 G1)
 *     u6: D 180000, E 180100, F 180200         F first seen
 *     u7: C 259000, A 259300                   starts in day 2, ends in day 3
 *   day 3: training also u6 (A4 B3 C4 D2 E4 G1 F1)
 *     u8: A 260000                             one click: no prediction
 *     u11: C 262000, G 262100                  G: in the catalog, no batch row
 * Predictions without new items: day 1 u4 B, u4 C, u9 C; day 2 u6 E, u7 A;
 * day 3 u11 G. With new items also: day 1 u4 E, u5 E; day 2 u6 F (3 new). */
static const char daily_log[] = "u1,A,100\nu1,B,200\nu1,C,300\n"
                                "u2,A,1000\nu2,C,1100\n"
                                "u3,B,86000\nu3,D,86500\n"
                                "u4,A,90000\nu4,B,90100\nu4,E,90200\nu4,C,90300\n"
                                "u5,A,95000\nu5,E,95100\n"
                                "u9,E,97000\nu9,C,97100\n"
                                "u10,G,100000\n"
                                "u6,D,180000\nu6,E,180100\nu6,F,180200\n"
                                "u7,C,259000\nu7,A,259300\n"
                                "u8,A,260000\n"
                                "u11,C,262000\nu11,G,262100\n";

/* The log above, built in memory (the loader's session rule); path gets a
 * temp file holding it as CSV, for the binary. */
static rc_clicklog *daily_tiny(char *path, size_t n)
{
    char dir[] = "/tmp/rc_daily_XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, n, "%s/log.csv", dir);
    e2e_write_file(path, daily_log);
    rc_clicklog *log = NULL;
    ASSERT_EQ(rc_clicklog_create(64, &log), 0);
    for (const char *l = daily_log; *l; l = strchr(l, '\n') + 1) {
        const char *c1 = strchr(l, ','), *c2 = strchr(c1 + 1, ',');
        ASSERT_EQ(rc_clicklog_add(log, l, (size_t)(c1 - l), c1 + 1, (size_t)(c2 - c1 - 1), "", 0,
                                  "", 0, atoll(c2 + 1) * 1000),
                  0);
    }
    ASSERT_EQ(rc_clicklog_sessionize(log, 0, NULL, 0), 0);
    return log;
}

static void rm_dir_of(const char *file)
{
    char *dir = strdup(file);
    *strrchr(dir, '/') = '\0';
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
    free(dir);
}

/* recalld-gen's log with ARGS in a new temp dir (dir, a mkdtemp template),
 * loaded. */
static rc_clicklog *gen_log(char *dir, const char *args)
{
    char path[300];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/gen.jsonl", dir);
    ASSERT_EQ(e2e_sh(NULL, "%s %s --out %s", RC_BIN("recalld-gen"), args, path), 0);
    rc_clicklog_opts lo = {.path = path, .format = RC_LOG_JSONL, .quiet = 1};
    rc_clicklog *log = NULL;
    ASSERT_EQ(rc_clicklog_load(&lo, &log, NULL, 0), 0);
    return log;
}

static uint32_t item(const rc_clicklog *log, const char *name)
{
    uint32_t id = UINT32_MAX;
    ASSERT_EQ(rc_dict_find(log->items, name, strlen(name), &id), 0);
    return id;
}

static const char *user_of(const rc_eval_split *s, uint32_t p)
{
    const rc_clicklog *log = s->log;
    return rc_dict_str(log->users, log->recs[log->sess_off[s->pos[p].session]].user, NULL);
}

/* Prediction p of s is user u's click on target. */
static void assert_pos(const rc_eval_split *s, uint32_t p, const char *u, const char *target)
{
    ASSERT_STREQ(user_of(s, p), u);
    ASSERT_EQ(s->pos[p].target, item(s->log, target));
}

static rc_eval_daily *daily(const rc_clicklog *log, int new_items, double hours, uint32_t warmup)
{
    rc_eval_opts o = {.new_items = new_items};
    rc_eval_daily_opts dopts = {.period_hours = hours, .warmup_periods = warmup};
    rc_eval_daily *d = NULL;
    char err[256] = "";
    if (rc_eval_daily_create(log, &o, &dopts, NULL, &d, err, sizeof err))
        RC__FAIL("daily: %s", err);
    return d;
}

TEST(eval_daily_periods_roles_and_targets)
{
    char path[256];
    rc_clicklog *log = daily_tiny(path, sizeof path);
    rc_eval_daily *d = daily(log, 0, 0, 0);
    ASSERT_EQ(d->period_ms, DAY_MS);
    ASSERT_EQ(d->first_ms, 0);
    ASSERT_EQ(d->total_periods, 4);
    ASSERT_EQ(d->nperiods, 3); /* day 0 only trains */
    ASSERT_EQ(d->skipped, 0);
    ASSERT_EQ(d->npos, 6);
    ASSERT_EQ(d->new_targets, 0);
    ASSERT_EQ(d->ncatalog, 7); /* A..G clicked before the end of day 3 */
    const rc_eval_split *s1 = d->period[0].split, *s2 = d->period[1].split;
    ASSERT_EQ(d->period[0].start_ms, DAY_MS);
    ASSERT_EQ(d->period[0].end_ms, 2 * DAY_MS);
    ASSERT_EQ(s1->cut_ms, DAY_MS);
    /* Day 1: u1 u2 train; u3 spans the start (neither); u4 u5 u9 tested;
     * u6.. start later (outside). */
    ASSERT_EQ(s1->ntrain, 2);
    ASSERT_EQ(s1->ntest, 3);
    ASSERT_EQ(s1->ncatalog, 3);
    ASSERT_EQ(s1->count[item(log, "A")], 2);
    ASSERT_EQ(s1->npos, 3);
    assert_pos(s1, 0, "u4", "B");
    assert_pos(s1, 1, "u4", "C");
    assert_pos(s1, 2, "u9", "C");
    ASSERT_EQ(s1->pos[1].nq, 2); /* A B: E is not in the catalog */
    ASSERT_EQ(s1->pos[2].nq, 0); /* E only */
    for (uint32_t ss = 0; ss < log->nsessions; ss++) {
        const char *u = rc_dict_str(log->users, log->recs[log->sess_off[ss]].user, NULL);
        int want = !strcmp(u, "u1") || !strcmp(u, "u2")                       ? RC_EVAL_TRAIN
                   : !strcmp(u, "u4") || !strcmp(u, "u5") || !strcmp(u, "u9") ? RC_EVAL_TEST
                   : !strcmp(u, "u3") || !strcmp(u, "u10")                    ? RC_EVAL_NONE
                                                                              : RC_EVAL_OUTSIDE;
        ASSERT_EQ(s1->role[ss], want);
    }
    /* Day 2: everything that ended before it trains (u3 too); u7 is tested
     * there although it ends in day 3. */
    ASSERT_EQ(s2->ntrain, 7);
    ASSERT_EQ(s2->ntest, 2);
    ASSERT_EQ(s2->count[item(log, "E")], 3);
    ASSERT_EQ(s2->npos, 2);
    assert_pos(s2, 0, "u6", "E");
    assert_pos(s2, 1, "u7", "A");
    ASSERT_EQ(d->period[2].split->ntrain, 8); /* u7 is still open */
    assert_pos(d->period[2].split, 0, "u11", "G");
    char name[64];
    rc_eval_daily_period_name(d, 1, name, sizeof name);
    ASSERT_STREQ(name, "period 1970-01-03");
    rc_eval_daily_destroy(d);

    /* --new-items: targets outside the catalog too, and the query keeps them. */
    d = daily(log, 1, 0, 0);
    ASSERT_EQ(d->npos, 9);
    ASSERT_EQ(d->new_targets, 3);
    s1 = d->period[0].split;
    ASSERT_EQ(s1->npos, 5);
    assert_pos(s1, 1, "u4", "E");
    assert_pos(s1, 3, "u5", "E");
    ASSERT_EQ(s1->pos[2].nq, 3); /* A B E */
    ASSERT_EQ(d->period[1].split->npos, 3);
    assert_pos(d->period[1].split, 1, "u6", "F");
    /* The age slice: new = not in the period's training catalog. */
    unsigned fresh = 0;
    for (uint32_t k = 0; k < d->nperiods; k++)
        for (size_t p = 0; p < d->period[k].split->npos; p++) {
            uint8_t m = d->period[k].slices[p];
            ASSERT_EQ((m >> RC_EVAL_SL_NEW & 1) + (m >> RC_EVAL_SL_OLDER & 1), 1);
            fresh += m >> RC_EVAL_SL_NEW & 1;
        }
    ASSERT_EQ(fresh, 3);
    rc_eval_daily_destroy(d);

    /* Two warm-up periods: day 2 only. 48-hour periods: [0, 2 d) warms up,
     * [2 d, 4 d) is day 2 and day 3 together. */
    d = daily(log, 0, 0, 2);
    ASSERT_EQ(d->nperiods, 2);
    ASSERT_EQ(d->period[0].start_ms, 2 * DAY_MS);
    ASSERT_EQ(d->npos, 3);
    rc_eval_daily_destroy(d);
    d = daily(log, 0, 48, 0);
    ASSERT_EQ(d->total_periods, 2);
    ASSERT_EQ(d->nperiods, 1);
    ASSERT_EQ(d->period[0].end_ms, 4 * DAY_MS);
    ASSERT_EQ(d->period[0].split->ntrain, 7);
    ASSERT_EQ(d->npos, 3);
    rc_eval_daily_period_name(d, 0, name, sizeof name);
    ASSERT_STREQ(name, "period 1970-01-03");
    rc_eval_daily_destroy(d);
    d = daily(log, 0, 6, 0);         /* not whole days: the hour is named; empty periods skipped */
    ASSERT_EQ(d->total_periods, 13); /* the last click, 72.8 h, is in [72 h, 78 h) */
    ASSERT_EQ(d->nperiods, 4);       /* from 24 h (u4 u5 u9), 48 h (u6), 66 h (u7), 72 h */
    ASSERT_EQ(d->skipped, 8);
    rc_eval_daily_period_name(d, 0, name, sizeof name);
    ASSERT_STREQ(name, "period 1970-01-02T00:00");
    rc_eval_daily_destroy(d);

    /* A period split made directly (no session subset): the period's end
     * bounds the test sessions, an empty period is no error. */
    rc_eval_opts o = {.period_start_ms = DAY_MS, .period_end_ms = 2 * DAY_MS};
    rc_eval_split *s = NULL;
    ASSERT_EQ(rc_eval_split_create(log, NULL, &o, &s, NULL, 0), 0);
    ASSERT_EQ(s->ntrain, 2);
    ASSERT_EQ(s->ntest, 3);
    ASSERT_EQ(s->npos, 3);
    rc_eval_split_destroy(s);
    o = (rc_eval_opts){.period_start_ms = 10 * DAY_MS, .period_end_ms = 11 * DAY_MS};
    ASSERT_EQ(rc_eval_split_create(log, NULL, &o, &s, NULL, 0), 0);
    ASSERT_EQ(s->npos, 0);
    rc_eval_split_destroy(s);

    /* Nothing to evaluate after the warm-up: an error that says so. */
    o = (rc_eval_opts){0};
    rc_eval_daily_opts dopts = {.warmup_periods = 4};
    char err[256] = "";
    ASSERT_EQ(rc_eval_daily_create(log, &o, &dopts, NULL, &d, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "no later period") != NULL);
    dopts = (rc_eval_daily_opts){.period_hours = -1};
    ASSERT_EQ(rc_eval_daily_create(log, &o, &dopts, NULL, &d, err, sizeof err), RC_EINVAL);
    rc_clicklog_free(log);
    rm_dir_of(path);
}

static void run_method(const char *name, rc_eval_env *env, const rc_eval_daily *d,
                       rc_eval_daily_report *rep)
{
    char err[256] = "";
    const rc_eval_daily_method *m = rc_eval_daily_method_find(name);
    ASSERT(m != NULL);
    if (rc_eval_daily_run(m, env, d, rep, err, sizeof err))
        RC__FAIL("%s: %s", name, err);
}

/* Popularity is rebuilt per period: day 1 counts A2 B1 C2, day 2 A4 B3 C4
 * D1 E3 G1, day 3 A4 B3 C4 D2 E4 G1 F1. Ranks (query items excluded): u4 B 2
 * (C B), u4 C 1, u9 C 2 (A C B); u6 E 4 (A C B E), u7 A 1; u11 G 5 (A E B
 * D G). */
TEST(eval_daily_popularity_rebuilt_per_period)
{
    char path[256];
    rc_clicklog *log = daily_tiny(path, sizeof path);
    rc_eval_daily *d = daily(log, 0, 0, 0);
    rc_eval_env env = {.log = log, .quiet = 1};
    rc_eval_daily_report rep;
    run_method("popularity", &env, d, &rep);
    ASSERT_EQ(rep.all.m.predictions, 6);
    ASSERT_NEAR(rep.all.m.mrr50, (0.5 + 1 + 0.5 + 0.25 + 1 + 0.2) / 6, 1e-12);
    ASSERT_NEAR(rep.all.m.avg_position, (2.0 + 1 + 2 + 4 + 1 + 5) / 6, 1e-12);
    ASSERT_EQ(rep.period[0].predictions, 3);
    ASSERT_NEAR(rep.period[0].mrr50, 2.0 / 3, 1e-12);
    ASSERT_EQ(rep.period[1].predictions, 2);
    ASSERT_NEAR(rep.period[1].mrr50, 0.625, 1e-12);
    ASSERT_NEAR(rep.period[2].mrr50, 0.2, 1e-12);
    ASSERT_EQ(rep.all.slice[RC_EVAL_SL_OLDER].predictions, 6);
    ASSERT_EQ(rep.all.slice[RC_EVAL_SL_NEW].predictions, 0);
    ASSERT_EQ(rep.all.m.fallbacks, 0);
    /* Coverage: lists are completed by popularity: A B C on day 1, E and D
     * on day 2, G and F on day 3, over A..G. */
    ASSERT_NEAR(rep.all.m.coverage50, 1.0, 1e-12);
    rc_eval_daily_report_free(&rep);
    rc_eval_env_cleanup(&env);
    rc_eval_daily_destroy(d);
    rc_clicklog_free(log);
    rm_dir_of(path);
}

/* Which model predicts which click, with new items. The day-1 batch model
 * knows A B C only: u9's query (E) has no row, a fallback for batch-daily
 * and itemknn. The engine learns E from u4's click before u5 and u9 are
 * predicted: stream-warm and stream-daily have a query there, and with a
 * catalog this small every known item is in the top 50, so they hit u5's
 * E — but never E at u4 nor F at u6, each predicted before its first click
 * is learnt. Batch methods never recall a new item. On day 3, u11's
 * target G was clicked only in a one-click session of day 1: no batch model
 * has a row for it (nor stream-daily, rebuilt from one on day 3, nor
 * stream-daily-live, whose rebuild holds the batch corpus's items), so it
 * scores -2, below every AUC negative (A B D E F have rows): AUC 0. Only
 * stream-warm, which kept learning since day 1, has a vector for it. */
TEST(eval_daily_which_model_predicts)
{
    static const char *const names[] = {"popularity",  "itemknn",      "batch-daily",
                                        "stream-warm", "stream-daily", "stream-daily-live"};
    static const uint64_t want_fallbacks[] = {0, 1, 1, 0, 0, 0};
    static const double want_new_hr[] = {0, 0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3};
    char path[256];
    rc_clicklog *log = daily_tiny(path, sizeof path);
    rc_eval_daily *d = daily(log, 1, 0, 0);
    /* Pinned to the replay these figures were worked out with (no replay
     * subsampling). */
    static const char *const pin[] = {"train.replay_subsample=0"};
    rc_eval_env env = {.log = log,
                       .train = {.dim = 8, .epochs = 1, .threads = 1, .seed = 3},
                       .quiet = 1,
                       .stream_set = pin,
                       .nstream_set = 1};
    for (size_t i = 0; i < RC_ARRAY_LEN(names); i++) {
        rc_eval_daily_report rep;
        run_method(names[i], &env, d, &rep);
        ASSERT_EQ(rep.all.m.predictions, 9);
        ASSERT_EQ(rep.period[0].predictions, 5);
        ASSERT_EQ(rep.period[1].predictions, 3);
        ASSERT_EQ(rep.period[2].predictions, 1);
        ASSERT_EQ(rep.all.slice[RC_EVAL_SL_NEW].predictions, 3);
        ASSERT_EQ(rep.all.slice[RC_EVAL_SL_OLDER].predictions, 6);
        if (rep.all.m.fallbacks != want_fallbacks[i])
            RC__FAIL("%s: %llu fallbacks, want %llu", names[i],
                     (unsigned long long)rep.all.m.fallbacks,
                     (unsigned long long)want_fallbacks[i]);
        if (rep.all.slice[RC_EVAL_SL_NEW].hr50 != want_new_hr[i])
            RC__FAIL("%s: new-item HR@50 %g, want %g", names[i], rep.all.slice[RC_EVAL_SL_NEW].hr50,
                     want_new_hr[i]);
        /* u11's G: no row in a batch model (AUC 0). stream-warm holds a row
         * for it (no fallback), at word2vec's random start (it opened its
         * session and has no category), so its AUC is whatever that gives. */
        if (i >= 2 && i != 3 && rep.period[2].auc != 0)
            RC__FAIL("%s: AUC of u11's G %g", names[i], rep.period[2].auc);
        rc_eval_daily_report_free(&rep);
    }
    rc_eval_env_cleanup(&env);
    rc_eval_daily_destroy(d);
    rc_clicklog_free(log);
    rm_dir_of(path);
}

/* Periods after the first (of the tiny log's three) whose AUC or MRR@50
 * differ between a and b. */
static int later_periods_moved(const rc_eval_daily_report *a, const rc_eval_daily_report *b)
{
    int moved = 0;
    for (uint32_t k = 1; k < 3; k++)
        moved += a->period[k].auc != b->period[k].auc || a->period[k].mrr50 != b->period[k].mrr50;
    return moved;
}

/* Runs ref, then name, on the tiny log (batch epochs as given): the first
 * period's AUC and MRR@50 are the same in both, later periods move; then
 * after(env, name's report) for the method's own checks. */
static void first_period_same_later_moved(const char *ref, const char *name, uint32_t epochs,
                                          void (*after)(const rc_eval_env *,
                                                        const rc_eval_daily_report *))
{
    char path[256];
    rc_clicklog *log = daily_tiny(path, sizeof path);
    rc_eval_daily *d = daily(log, 1, 0, 0);
    rc_eval_env env = {
        .log = log, .train = {.dim = 8, .epochs = epochs, .threads = 1, .seed = 3}, .quiet = 1};
    rc_eval_daily_report a, b;
    run_method(ref, &env, d, &a);
    run_method(name, &env, d, &b);
    after(&env, &b);
    ASSERT_DBL_OP(b.period[0].auc, ==, a.period[0].auc);
    ASSERT_DBL_OP(b.period[0].mrr50, ==, a.period[0].mrr50);
    ASSERT_GT(later_periods_moved(&b, &a), 0);
    rc_eval_daily_report_free(&a);
    rc_eval_daily_report_free(&b);
    rc_eval_env_cleanup(&env);
    rc_eval_daily_destroy(d);
    rc_clicklog_free(log);
    rm_dir_of(path);
}

static void after_live(const rc_eval_env *env, const rc_eval_daily_report *rep)
{
    (void)rep;
    ASSERT(env->live_prev == NULL); /* the last period's engine is freed */
}

/* stream-daily-live is stream-daily until its first rebuild: on the first
 * day both run the same batch model and the same stream, so every figure is
 * the same; from the second day its rebuild starts from the table the first
 * day's stream left, and the scores move (AUC: every known item is in the
 * top 50 of this catalog, so HR cannot tell). */
TEST(eval_daily_live_rebuild_starts_from_the_stream)
{
    first_period_same_later_moved("stream-daily", "stream-daily-live", 1, after_live);
}

static void after_install(const rc_eval_env *env, const rc_eval_daily_report *rep)
{
    ASSERT_EQ(env->install, 0); /* reset after the run */
    ASSERT_EQ(rep->all.m.predictions, 9);
}

/* stream-daily-install is stream-warm until the second period's start: one
 * engine, the same warm start, the same clicks, so the first period's every
 * figure is stream-warm's; there the rebuild (from the engine's table) is
 * installed into the running engine and the later periods' scores move. */
TEST(eval_daily_install_rebuild_into_the_running_engine)
{
    first_period_same_later_moved("stream-warm", "stream-daily-install", 40, after_install);
}

/* Every period's figures of a and b are the same. */
static void same_periods(const rc_eval_daily *d, const rc_eval_daily_report *a,
                         const rc_eval_daily_report *b)
{
    for (uint32_t k = 0; k < d->nperiods; k++) {
        ASSERT_EQ(a->period[k].predictions, b->period[k].predictions);
        ASSERT_DBL_OP(a->period[k].hr50, ==, b->period[k].hr50);
        ASSERT_DBL_OP(a->period[k].auc, ==, b->period[k].auc);
        ASSERT_DBL_OP(a->period[k].mrr50, ==, b->period[k].mrr50);
    }
}

/* The gate tests' log: generated, about 2 days in 6-hour periods (4 after
 * the warm-up), small fast training, a 2-hour gate window. */
struct gate_fix {
    char dir[32];
    rc_clicklog *log;
    rc_eval_daily *d;
    rc_eval_env env;
};

static void gate_fix_open(struct gate_fix *fx)
{
    snprintf(fx->dir, sizeof fx->dir, "/tmp/rc_gate_XXXXXX");
    fx->log = gen_log(fx->dir, "--seed 3 --events 20000 --users 300 --items 400");
    fx->d = daily(fx->log, 1, 6, 4);
    ASSERT_GT(fx->d->nperiods, 2);
    fx->env = (rc_eval_env){.log = fx->log,
                            .train = {.dim = 8, .epochs = 2, .threads = 1, .seed = 3},
                            .gate_hours = 2,
                            .quiet = 1};
}

/* Frees the reports, env (the test's copy of fx->env) and the fixture. */
static void gate_fix_close(struct gate_fix *fx, rc_eval_env *env, rc_eval_daily_report *const *reps,
                           size_t n)
{
    for (size_t i = 0; i < n; i++)
        rc_eval_daily_report_free(reps[i]);
    rc_eval_env_cleanup(env);
    rc_eval_daily_destroy(fx->d);
    rc_clicklog_free(fx->log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", fx->dir), 0);
}

/* stream-daily-gated is stream-daily-install whose installs each pass a
 * gate first. Its two extremes are the methods it sits between: a gate
 * every challenger passes (ratio ~0) installs every rebuild, and gives
 * stream-daily-install's figures exactly; a gate none passes (ratio huge,
 * on a log where the live table hits in every window) installs none and
 * gives stream-warm's. Judging itself (a challenger trained beside the
 * engine, both tables scored) leaves the stream untouched. At the default
 * ratio the counts add up, and the live and challenger HR@50 of the windows
 * are real scores. */
TEST(eval_daily_gated_install_between_warm_and_install)
{
    struct gate_fix fx;
    gate_fix_open(&fx);
    rc_eval_daily *d = fx.d;
    rc_eval_env env = fx.env;
    rc_eval_daily_report warm, inst, all, none, dflt;
    run_method("stream-warm", &env, d, &warm);
    run_method("stream-daily-install", &env, d, &inst);
    ASSERT(!warm.all.has_gate && !inst.all.has_gate);
    env.gate_ratio = 1e-9;
    env.gate_min_z = -1e9; /* a challenger that scores below the live table passes too */
    run_method("stream-daily-gated", &env, d, &all);
    env.gate_ratio = 1e9;
    run_method("stream-daily-gated", &env, d, &none);
    env.gate_ratio = 0; /* the defaults: ratio 1, z 0 */
    env.gate_min_z = 0;
    run_method("stream-daily-gated", &env, d, &dflt);
    ASSERT_EQ(env.gate, 0); /* reset after the run */
    uint32_t later = d->nperiods - 1;
    ASSERT(all.all.has_gate);
    ASSERT_EQ(all.all.gate.judged + all.all.gate.unjudged, later);
    ASSERT_EQ(all.all.gate.installed, all.all.gate.judged);
    ASSERT_GT(all.all.gate.judged, 0);
    same_periods(d, &all, &inst);
    ASSERT_EQ(none.all.gate.judged, later); /* every window has predictions */
    ASSERT_EQ(none.all.gate.installed, 0);
    ASSERT_DBL_OP(none.all.gate.live_hr50_sum, >, 0.05);
    same_periods(d, &none, &warm);
    ASSERT_GT(later_periods_moved(&inst, &warm), 0); /* the extremes differ */
    const rc_eval_gate_stats *g = &dflt.all.gate;
    ASSERT_DBL_OP(g->hours, ==, 2);
    ASSERT_DBL_OP(g->ratio, ==, 1);
    ASSERT_EQ(g->judged, later);
    ASSERT(g->installed <= g->judged);
    ASSERT_DBL_OP(g->cand_hr50_sum, >, 0.05);
    ASSERT(g->cand_hr50_sum <= g->judged && g->live_hr50_sum <= g->judged);
    rc_eval_daily_report *reps[] = {&warm, &inst, &all, &none, &dflt};
    gate_fix_close(&fx, &env, reps, RC_ARRAY_LEN(reps));
}

/* --rebuild fresh: the rebuild starts from random vectors and goes in as a
 * whole new table (install_model "replace"), so the later periods differ
 * from the rebuild from the live table; a gate every fresh challenger passes
 * gives its figures exactly. --rebuild both judges both challengers and
 * installs the better one: with a gate every challenger passes, every later
 * period installs one of the two, and the fresh ones are counted; with one
 * none passes, it is stream-warm. */
TEST(eval_daily_fresh_rebuild_replaces_and_the_gate_picks_one)
{
    struct gate_fix fx;
    gate_fix_open(&fx);
    rc_eval_daily *d = fx.d;
    rc_eval_env env = fx.env;
    rc_eval_daily_report warm, live, fresh, fall, both, bnone;
    run_method("stream-warm", &env, d, &warm);
    run_method("stream-daily-install", &env, d, &live);
    ASSERT_EQ(live.all.rebuild, RC_EVAL_REBUILD_LIVE + 1);
    env.rebuild = RC_EVAL_REBUILD_FRESH;
    run_method("stream-daily-install", &env, d, &fresh);
    ASSERT_EQ(fresh.all.rebuild, RC_EVAL_REBUILD_FRESH + 1);
    ASSERT_GT(later_periods_moved(&fresh, &live), 0);
    env.gate_ratio = 1e-9;
    env.gate_min_z = -1e9; /* a challenger that scores below the live table passes too */
    run_method("stream-daily-gated", &env, d, &fall);
    uint32_t later = d->nperiods - 1;
    ASSERT_EQ(fall.all.gate.installed + fall.all.gate.unjudged, later);
    ASSERT_EQ(fall.all.gate.fresh, later);
    same_periods(d, &fall, &fresh);
    env.rebuild = RC_EVAL_REBUILD_BOTH;
    run_method("stream-daily-gated", &env, d, &both);
    ASSERT_EQ(both.all.rebuild, RC_EVAL_REBUILD_BOTH + 1);
    ASSERT_EQ(both.all.gate.installed, both.all.gate.judged);
    ASSERT_GT(both.all.gate.judged, 0);
    ASSERT(both.all.gate.fresh <= both.all.gate.installed);
    env.gate_ratio = 1e9;
    run_method("stream-daily-gated", &env, d, &bnone);
    ASSERT_EQ(bnone.all.gate.installed, 0);
    ASSERT_EQ(bnone.all.gate.fresh, 0);
    same_periods(d, &bnone, &warm);
    rc_eval_daily_report *reps[] = {&warm, &live, &fresh, &fall, &both, &bnone};
    gate_fix_close(&fx, &env, reps, RC_ARRAY_LEN(reps));
}

/* The gate's verdict: the challenger's HR@50 against ratio x the live
 * table's, and its paired lead in standard errors (McNemar's statistic on
 * the predictions where exactly one of them hit). */
TEST(eval_gate_paired_z_and_verdict)
{
    static const uint8_t live[] = {1, 1, 0, 0, 1, 0}, cand[] = {1, 0, 1, 1, 1, 0};
    uint64_t only[2];
    double z = rc_eval_gate_z(live, cand, 6, only);
    ASSERT_EQ(only[0], 1);
    ASSERT_EQ(only[1], 2);
    ASSERT_DBL_OP(fabs(z - 1 / sqrt(3.0)), <, 1e-12);
    ASSERT_DBL_OP(rc_eval_gate_z(cand, live, 6, only), ==, -z);
    ASSERT_DBL_OP(rc_eval_gate_z(live, live, 6, only), ==, 0); /* none differ */
    ASSERT_EQ(only[0] + only[1], 0);
    ASSERT_EQ(rc_eval_gate_verdict(0.5, 4.0 / 6, z, 1, 0), 1);
    ASSERT_EQ(rc_eval_gate_verdict(0.5, 4.0 / 6, z, 1, 1), 0);   /* lead under one SE */
    ASSERT_EQ(rc_eval_gate_verdict(0.5, 4.0 / 6, z, 1.5, 0), 0); /* not 1.5x */
    ASSERT_EQ(rc_eval_gate_verdict(0.5, 0.5, 0, 1, 0), 1);       /* a tie installs */
    ASSERT_EQ(rc_eval_gate_verdict(0.5, 0.49, -0.3, 1, -1), 0);
}

/* recalld-eval --protocol daily --json: the protocol, and per method the
 * age slices and one slice per period, adding up to the method's total. */
TEST(eval_daily_cli_json)
{
    char path[256], *out = NULL;
    rc_clicklog *log = daily_tiny(path, sizeof path);
    rc_clicklog_free(log);
    int st = e2e_sh(&out,
                    "%s --input %s --format csv --time-unit s --dim 8 --epochs 1 --threads 1 "
                    "--protocol daily --new-items --json --quiet",
                    RC_BIN("recalld-eval"), path);
    ASSERT_EQ(st, 0);
    json_t *j = e2e_json(out);
    json_t *pr = json_object_get(j, "protocol");
    ASSERT_STREQ(json_string_value(json_object_get(pr, "name")), "daily");
    ASSERT_EQ(json_integer_value(json_object_get(pr, "predictions")), 9);
    ASSERT_EQ(json_integer_value(json_object_get(pr, "new_targets")), 3);
    ASSERT_EQ(json_array_size(json_object_get(pr, "periods")), 3);
    ASSERT_STREQ(json_string_value(
                     json_object_get(json_array_get(json_object_get(pr, "periods"), 0), "name")),
                 "period 1970-01-02");
    json_t *ms = json_object_get(j, "methods");
    ASSERT_EQ(json_object_size(ms), 5);
    const char *name;
    json_t *m;
    json_object_foreach(ms, name, m) {
        json_t *sl = json_object_get(m, "slices");
        json_int_t n1 = json_integer_value(
                       json_object_get(json_object_get(sl, "period 1970-01-02"), "predictions")),
                   n2 = json_integer_value(
                       json_object_get(json_object_get(sl, "period 1970-01-03"), "predictions")),
                   nn = json_integer_value(
                       json_object_get(json_object_get(sl, "new"), "predictions"));
        if (n1 != 5 || n2 != 3 || nn != 3)
            RC__FAIL("%s: periods %lld + %lld, new %lld", name, (long long)n1, (long long)n2,
                     (long long)nn);
        ASSERT_EQ(json_integer_value(json_object_get(m, "predictions")), 9);
        /* against batch-daily over every period's predictions */
        json_t *v = json_object_get(m, "vs_reference");
        if (strcmp(name, "batch-daily") == 0) {
            ASSERT(v == NULL);
            continue;
        }
        ASSERT_STREQ(json_string_value(json_object_get(v, "method")), "batch-daily");
        ASSERT_EQ(json_integer_value(json_object_get(v, "predictions")), 9);
        double hb = json_number_value(json_object_get(json_object_get(ms, "batch-daily"), "hr@50"));
        if (hb > 0)
            ASSERT_NEAR(json_number_value(json_object_get(v, "hr@50_ratio")),
                        json_number_value(json_object_get(m, "hr@50")) / hb, 1e-4);
        else
            ASSERT(json_is_null(json_object_get(v, "hr@50_ratio")));
    }
    json_decref(j);
    free(out);

    /* Usage errors: an unknown protocol, a method the daily protocol lacks. */
    ASSERT_EQ(
        e2e_sh(NULL, "%s --input %s --protocol weekly 2>/dev/null", RC_BIN("recalld-eval"), path),
        2);
    ASSERT_EQ(e2e_sh(&out, "%s --input %s --protocol daily --methods sgns 2>&1",
                     RC_BIN("recalld-eval"), path),
              2);
    ASSERT(strstr(out, "not a daily method") != NULL);
    free(out);
    /* --tune on a log too small to tune on: said, not a silent default. */
    ASSERT_NE(e2e_sh(&out, "%s --input %s --format csv --time-unit s --protocol daily --tune 2>&1",
                     RC_BIN("recalld-eval"), path),
              0);
    ASSERT(strstr(out, "--tune-min-valid") != NULL);
    free(out);
    ASSERT_EQ(
        e2e_sh(NULL, "%s --input %s --tune-min-valid x 2>/dev/null", RC_BIN("recalld-eval"), path),
        2);

    /* stream-daily-gated reports its gate: a day's window before each of the
     * two later periods. A window longer than a period, or a ratio out of
     * range, is a usage error. */
    st = e2e_sh(&out,
                "%s --input %s --format csv --time-unit s --dim 8 --epochs 1 --threads 1 "
                "--protocol daily --new-items --methods stream-daily-gated --gate-hours 24 "
                "--gate-ratio 1.5 --rebuild both --json --quiet",
                RC_BIN("recalld-eval"), path);
    ASSERT_EQ(st, 0);
    j = e2e_json(out);
    json_t *g = json_object_get(
        json_object_get(json_object_get(j, "methods"), "stream-daily-gated"), "gate");
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "hours")), ==, 24);
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "ratio")), ==, 1.5);
    ASSERT_EQ(json_integer_value(json_object_get(g, "judged")) +
                  json_integer_value(json_object_get(g, "unjudged")),
              2);
    ASSERT(json_is_integer(json_object_get(g, "installed")));
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "min_z")), ==, 0);
    ASSERT(json_is_number(json_object_get(g, "live_hr@50")));
    ASSERT(json_is_number(json_object_get(g, "challenger_hr@50")));
    ASSERT(json_integer_value(json_object_get(g, "installed_fresh")) <=
           json_integer_value(json_object_get(g, "installed")) +
               json_integer_value(json_object_get(g, "unjudged")));
    ASSERT_STREQ(
        json_string_value(json_object_get(
            json_object_get(json_object_get(j, "methods"), "stream-daily-gated"), "rebuild")),
        "both");
    json_decref(j);
    free(out);
    /* --rebuild: both only behind the gate; a kind it does not know; only daily */
    ASSERT_EQ(e2e_sh(&out,
                     "%s --input %s --protocol daily --methods stream-daily-install "
                     "--rebuild both 2>&1",
                     RC_BIN("recalld-eval"), path),
              2);
    ASSERT(strstr(out, "only stream-daily-gated") != NULL);
    free(out);
    ASSERT_EQ(e2e_sh(NULL, "%s --input %s --protocol daily --rebuild new 2>/dev/null",
                     RC_BIN("recalld-eval"), path),
              2);
    ASSERT_EQ(
        e2e_sh(NULL, "%s --input %s --rebuild fresh 2>/dev/null", RC_BIN("recalld-eval"), path), 2);
    ASSERT_EQ(e2e_sh(&out, "%s --input %s --protocol daily --gate-hours 25 2>&1",
                     RC_BIN("recalld-eval"), path),
              2);
    ASSERT(strstr(out, "at most a period") != NULL);
    free(out);
    ASSERT_EQ(e2e_sh(NULL,
                     "%s --input %s --protocol daily --period-hours 48 --gate-hours 25 "
                     "--gate-ratio 3 2>/dev/null",
                     RC_BIN("recalld-eval"), path),
              2);
    rm_dir_of(path);
}

/* stream-warm-fused: stream-warm answering in the daemon's fused mode. On
 * sessions of three items of one of 300 triples (after 300 sessions of
 * random items), the models learning at a rate of 1e-6 (batch and stream:
 * the embedding knows nothing), the channel at weight 1 finds the triples
 * from the first period's clicks and the stream's; stream-warm does not.
 * The fusion weight is reported. stream-daily-fused (the daily install into
 * the same engine, answering fused) finds them as well, and says it rebuilt. */
TEST(eval_daily_stream_warm_fused)
{
    char path[256], *out = NULL, dir[] = "/tmp/rc_daily_XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/log.csv", dir);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fprintf(f, "session,item,time\n");
    rc_rng rng;
    rc_rng_seed(&rng, 4242);
    for (int s = 0; s < 3000; s++) { /* one session a minute: 50 hours */
        uint32_t t = rc_rng_below(&rng, 300), first = rc_rng_below(&rng, 3);
        for (uint32_t j = 0; j < 3; j++)
            fprintf(f, "%d,i%u,%d\n", s,
                    s < 300 ? rc_rng_below(&rng, 900) : t * 3 + (first + j) % 3,
                    s * 60 + (int)j * 10);
    }
    ASSERT_EQ(fclose(f), 0);
    int st = e2e_sh(&out,
                    "%s --input %s --session session --item item --time time --time-unit s "
                    "--dim 16 --epochs 1 --lr 1e-6 --stream-lr 1e-6 --threads 1 --protocol daily "
                    "--period-hours 10 --stream-set cooc.fuse_weight=1 "
                    "--methods stream-warm,stream-warm-fused,stream-daily-fused --json --quiet",
                    RC_BIN("recalld-eval"), path);
    ASSERT_EQ(st, 0);
    json_t *j = e2e_json(out), *ms = json_object_get(j, "methods");
    json_t *w = json_object_get(ms, "stream-warm"), *fu = json_object_get(ms, "stream-warm-fused");
    ASSERT(json_is_object(w) && json_is_object(fu));
    ASSERT_DBL_OP(json_number_value(json_object_get(fu, "fuse_weight")), ==, 1);
    ASSERT_EQ(json_integer_value(json_object_get(fu, "predictions")),
              json_integer_value(json_object_get(w, "predictions")));
    ASSERT_GT(json_integer_value(json_object_get(fu, "predictions")), 1000);
    double hw = json_number_value(json_object_get(w, "hr@50")),
           hf = json_number_value(json_object_get(fu, "hr@50"));
    fprintf(stderr, "hr@50 stream-warm %.4f, stream-warm-fused %.4f\n", hw, hf);
    ASSERT_DBL_OP(hf, >, 0.93); /* without the first period's clicks: .89 */
    ASSERT_DBL_OP(hf, >, 2 * hw);
    json_t *df = json_object_get(ms, "stream-daily-fused");
    ASSERT(json_is_object(df));
    ASSERT_STREQ(json_string_value(json_object_get(df, "rebuild")), "live");
    ASSERT_EQ(json_integer_value(json_object_get(df, "predictions")),
              json_integer_value(json_object_get(w, "predictions")));
    double hd = json_number_value(json_object_get(df, "hr@50"));
    fprintf(stderr, "hr@50 stream-daily-fused %.4f\n", hd);
    ASSERT_DBL_OP(hd, >, 0.93);
    ASSERT_DBL_OP(hd, >, 2 * hw);
    json_decref(j);
    free(out);
    rm_dir_of(path);
}

/* --tune in the daily protocol searches on a validation split cut from the
 * first period's training part by the quantile (not by the period, which
 * would leave it without a prediction: validation HR@50 0), once; the later
 * periods reuse the settings. */
TEST(eval_daily_tune_validates_on_the_training_part)
{
    char dir[] = "/tmp/rc_daily_XXXXXX";
    rc_clicklog *log = gen_log(dir, "--seed 3 --events 12000 --users 300 --items 400");
    /* 12000 clicks of 300 users: about 1.2 days; 6-hour periods, one day of
     * warm-up. */
    rc_eval_daily *d = daily(log, 0, 6, 4);
    rc_eval_env env = {.log = log,
                       .train = {.dim = 8, .epochs = 1, .threads = 1},
                       .tune = 1,
                       .tune_seconds = 2,
                       .quiet = 1};
    rc_eval_daily_report rep;
    run_method("batch-daily", &env, d, &rep);
    ASSERT_EQ(rep.all.tuned, 1);
    ASSERT_GT(rep.all.tune_trials, 0);
    ASSERT_DBL_OP(rep.all.tune_hr50, >, 0);
    ASSERT_EQ(env.tune, 0); /* once */
    rc_eval_daily_report_free(&rep);
    /* The streaming knobs: searched once by stream-warm (on the first
     * period's training part), the same choice reused by stream-daily. */
    env.tune_stream = 1;
    run_method("stream-warm", &env, d, &rep);
    ASSERT(rep.all.stream_tuned && env.have_stream_tuned[1] && !env.have_stream_tuned[0]);
    ASSERT_GT(rep.all.stream_tune.trials, 0);
    ASSERT_EQ(rep.all.stream_tune.searched, (1u << RC_TUNE_STREAM_NKEYS) - 1);
    rc_eval_stream_knobs chosen = rep.all.stream;
    ASSERT_EQ(chosen.lr, rep.all.stream_tune.best.lr);
    rc_eval_daily_report_free(&rep);
    uint32_t trials = env.stream_tuned[1].trials;
    run_method("stream-daily", &env, d, &rep);
    ASSERT(rep.all.stream_tuned);
    ASSERT_EQ(env.stream_tuned[1].trials, trials); /* not searched again */
    ASSERT(memcmp(&rep.all.stream, &chosen, sizeof chosen) == 0);
    rc_eval_daily_report_free(&rep);
    rc_eval_env_cleanup(&env);
    rc_eval_daily_destroy(d);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

/* The validation predictions --tune would get from the training part of the
 * day starting at start: the day's split (sessions starting before its end),
 * then the last 20% of its training sessions' time, through the public API. */
static size_t valid_preds(const rc_clicklog *log, int64_t start, int new_items)
{
    uint8_t *member = malloc(log->nsessions + 1);
    rc_eval_opts po = {
        .new_items = new_items, .period_start_ms = start, .period_end_ms = start + DAY_MS};
    rc_eval_opts vo = {.new_items = new_items, .test_ratio = 0.2};
    rc_eval_split *s = NULL, *v = NULL;
    size_t n = 0;
    ASSERT(member != NULL);
    for (uint32_t i = 0; i < log->nsessions; i++)
        member[i] = log->sess_off[i + 1] > log->sess_off[i] &&
                    log->recs[log->sess_off[i]].ts_ms < start + DAY_MS;
    if (!rc_eval_split_create(log, member, &po, &s, NULL, 0) && s->ntrain &&
        !rc_eval_split_create(log, s->train_mask, &vo, &v, NULL, 0))
        n = v->npos;
    rc_eval_split_destroy(v);
    rc_eval_split_destroy(s);
    free(member);
    return n;
}

/* A log whose first days are too small to tune on (Diginetica's sample: one
 * session on its first day): with tune_min_valid the warm-up grows to the
 * first day whose training part gives that many validation predictions, so
 * that --tune sees only days before the first evaluated one; without it the
 * warm-up is as given; when no day has enough, the protocol says so. */
TEST(eval_daily_tune_extends_the_warmup)
{
    rc_clicklog *log = NULL;
    char u[32], it[32];
    rc_rng r;
    rc_rng_seed(&r, 5);
    ASSERT_EQ(rc_clicklog_create(2048, &log), 0);
    /* day 0 and 1: one session each; days 2..9: 30 sessions of 4 clicks */
    for (int day = 0, sess = 0; day < 10; day++)
        for (int k = 0; k < (day < 2 ? 1 : 30); k++, sess++)
            for (int c = 0; c < 4; c++) {
                int ul = snprintf(u, sizeof u, "u%d", sess);
                int il = snprintf(it, sizeof it, "i%u", rc_rng_below(&r, 20));
                int64_t ts = day * DAY_MS + 3600000LL + k * 2400000LL + c * 60000LL;
                ASSERT_EQ(rc_clicklog_add(log, u, (size_t)ul, it, (size_t)il, "", 0, "", 0, ts), 0);
            }
    ASSERT_EQ(rc_clicklog_sessionize(log, 0, NULL, 0), 0);
    const uint32_t want_min = 60;
    uint32_t want_k = 0;
    for (uint32_t k = 1; k < 10 && !want_k; k++)
        if (valid_preds(log, k * DAY_MS, 0) >= want_min)
            want_k = k;
    ASSERT_GT(want_k, 2); /* planted: the two tiny days and more */
    ASSERT_LT(valid_preds(log, (want_k - 1) * DAY_MS, 0), want_min);

    rc_eval_opts o = {0};
    rc_eval_daily_opts dopts = {.warmup_periods = 1, .tune_min_valid = want_min};
    rc_eval_daily *d = NULL;
    char err[256] = "";
    if (rc_eval_daily_create(log, &o, &dopts, NULL, &d, err, sizeof err))
        RC__FAIL("daily: %s", err);
    ASSERT_EQ(d->warmup_asked, 1);
    ASSERT_EQ(d->dopts.warmup_periods, want_k);
    ASSERT_EQ(d->period[0].start_ms, (int64_t)want_k * DAY_MS);
    ASSERT_EQ(d->tune_valid_predictions, valid_preds(log, want_k * DAY_MS, 0));
    ASSERT_GE(d->tune_valid_predictions, want_min);
    rc_eval_daily_destroy(d);

    /* Without the minimum: one day of warm-up, as given. */
    d = daily(log, 0, 24, 1);
    ASSERT_EQ(d->dopts.warmup_periods, 1);
    ASSERT_EQ(d->period[0].start_ms, DAY_MS);
    rc_eval_daily_destroy(d);

    /* A minimum no day reaches. */
    dopts.tune_min_valid = 100000;
    ASSERT_EQ(rc_eval_daily_create(log, &o, &dopts, NULL, &d, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "validation split") != NULL);
    rc_clicklog_free(log);
}

/* --tune chooses the fused method's weight once, on the first period's
 * training part, and every later run reuses it: a weight planted in the env
 * after the first run (0.35, not on the grid) is what the next run uses and
 * reports, instead of a new search or cooc.fuse_weight's default. */
TEST(eval_daily_tune_carries_the_fusion_weight)
{
    char dir[] = "/tmp/rc_daily_XXXXXX";
    rc_clicklog *log = gen_log(dir, "--seed 3 --events 12000 --users 300 --items 400");
    rc_eval_daily *d = daily(log, 0, 6, 4);
    ASSERT_GT(d->nperiods, 1);
    rc_eval_env env = {.log = log,
                       .train = {.dim = 8, .epochs = 1, .threads = 1, .seed = 3},
                       .tune_fuse = 1,
                       .quiet = 1};
    rc_eval_daily_report rep;
    run_method("fused", &env, d, &rep);
    ASSERT(env.have_fuse_weight);
    ASSERT(rep.all.has_fuse && rep.all.fuse_tuned);
    ASSERT_DBL_OP(rep.all.fuse_weight, ==, env.fuse_weight);
    ASSERT_DBL_OP(env.fuse_hr50, >, 0);
    ASSERT_DBL_OP(rep.all.fuse_hr50, ==, env.fuse_hr50);
    rc_eval_daily_report_free(&rep);

    env.fuse_weight = 0.35f;
    run_method("fused", &env, d, &rep);
    ASSERT(rep.all.fuse_tuned);
    ASSERT_DBL_OP(rep.all.fuse_weight, ==, 0.35f);
    rc_eval_daily_report_free(&rep);

    /* Untuned: the default, reported as such. */
    rc_eval_env plain = {
        .log = log, .train = {.dim = 8, .epochs = 1, .threads = 1, .seed = 3}, .quiet = 1};
    run_method("fused", &plain, d, &rep);
    ASSERT(rep.all.has_fuse && !rep.all.fuse_tuned && !plain.have_fuse_weight);
    ASSERT_DBL_OP(rep.all.fuse_weight, ==, 0.8f);
    rc_eval_daily_report_free(&rep);
    rc_eval_env_cleanup(&plain);
    rc_eval_env_cleanup(&env);
    rc_eval_daily_destroy(d);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

/* A validation split that cannot tell the fusion weights apart (30 items:
 * every weight's top 50 is the same set of what both channels return, so
 * every weight scored HR@50 .5011 when this was written) keeps the daemon's
 * default (cooc.fuse_weight 0.8) instead of the grid's first weight. */
TEST(eval_tune_fusion_weight_flat_keeps_default)
{
    char dir[] = "/tmp/rc_daily_XXXXXX", err[256] = "";
    rc_clicklog *log =
        gen_log(dir, "--seed 3 --events 4000 --users 200 --items 30 --communities 6 --cities 2");
    rc_eval_split *s = NULL;
    ASSERT_EQ(rc_eval_split_create(log, NULL, &(rc_eval_opts){0}, &s, err, sizeof err), 0);
    rc_eval_env env = {.log = log,
                       .split = s,
                       .train = {.dim = 8, .epochs = 1, .threads = 1, .seed = 3},
                       .tune_fuse = 1,
                       .quiet = 1};
    rc_eval_report rep;
    if (rc_eval_method_run(rc_eval_method_find("fused"), &env, &rep, err, sizeof err))
        RC__FAIL("fused: %s", err);
    ASSERT(env.have_fuse_weight && rep.fuse_tuned);
    ASSERT_DBL_OP(env.fuse_hr50, >, 0);
    ASSERT_DBL_OP(rep.fuse_weight, ==, 0.8f);
    rc_eval_env_cleanup(&env);
    rc_eval_split_destroy(s);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}
