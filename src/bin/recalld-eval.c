/* recalld-eval — time-split offline evaluation of recall methods on a click
 * log (protocol and metrics: include/recalld/eval.h). Methods side by side in
 * one table, or one JSON object with --json; progress on stderr.
 *
 * Exit status: 0 ok, 1 failure (load, split, a method), 2 usage error. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/cli.h"
#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/eval.h"
#include "recalld/log.h"
#include "recalld/tune.h"

static const char about[] =
    "Evaluates recall methods with the session-based time split: the cut is the\n"
    "(1 - test-ratio) quantile of event times; models learn from the sessions that\n"
    "end before it; each later session with >= 2 clicks is predicted click by click\n"
    "(targets seen in training; the last --query-len prefix items seen in training\n"
    "are excluded from the answer; top 50; embedding methods query with the\n"
    "daemon's user vector, recall.* of --stream-set, or with those items' mean\n"
    "under --query items). Reports\n"
    "HR@10/20/50, MRR@50, coverage@50, average hit position and AUC (vs 100\n"
    "uniform catalog negatives). Methods: popularity, itemknn (session\n"
    "co-occurrence), sgns / cbow (batch models, recalled through the server's\n"
    "index and re-rank), prequential (the streaming engine, predicting each click\n"
    "before learning it) and prequential-warm (the same, started from the batch\n"
    "skip-gram model of the training part), multi_category (58.com's parallel\n"
    "per-category recall on the skip-gram model). --tune chooses the batch settings on\n"
    "a validation split carved from the training part. Only when named:\n"
    "prequential-fused (prequential's engine fused with a co-occurrence channel fed\n"
    "by the same stream: the daemon's \"mode\":\"fused\" from cold).\n"
    "Two-tower rows (run when named, or all with --ablation): two_tower-nofeat\n"
    "(recency-weighted mean of the clicks, no profile), two_tower+tags (+ interest\n"
    "tags), two_tower (+ device,\n"
    "behaviour statistics, attention; or --features), each trained on the training\n"
    "sessions on top of the sgns table; user features from the log's JSON events\n"
    "(device, tags) or --user-features FILE.\n"
    "Every method is also reported per slice of the predictions (after the table;\n"
    "\"slices\" in JSON): the user's clicks before the target over all sessions\n"
    "(history 1-4, 5-19, 20-99, 100+), with / without profile features, and the\n"
    "target's age (new: not in the training catalog, only with --new-items; older).\n"
    "--protocol daily evaluates the deployed regime instead: periods of event time\n"
    "(calendar days UTC, or --period-hours), the first --warmup-periods only train,\n"
    "then each period is predicted by popularity, itemknn, batch-daily (skip-gram\n"
    "retrained at each period's start on everything before it, frozen during it),\n"
    "stream-warm (the streaming engine warm-started once from the first period's\n"
    "batch model, then learning every click after predicting it) and stream-daily\n"
    "(rebuilt like batch-daily, streaming in between); slices per period too.\n"
    "Only when named in --methods: itemknn-live, fused, stream-daily-live\n"
    "(stream-daily whose rebuild starts from the table the last period's stream\n"
    "left instead of random vectors), stream-daily-install (the daemon's daily\n"
    "rebuild: stream-warm's one engine, and at each later period's start a rebuild\n"
    "from its live table installed into it, as recalld-train --init and\n"
    "install_model do; --rebuild fresh: from random vectors, installed whole as\n"
    "install_model \"replace\" does), stream-warm-fused (stream-warm answering in the\n"
    "daemon's \"fused\" mode: a co-occurrence channel fed with the first period's\n"
    "training clicks, then by the stream), stream-daily-fused (stream-daily-install\n"
    "answering in the \"fused\" mode, its channel fed as stream-warm-fused's) and\n"
    "stream-daily-gated (stream-daily-install whose every\n"
    "install must first win a champion/challenger gate: --gate-hours before the\n"
    "period's start, a challenger rebuilt from the live table on the sessions that\n"
    "ended by then and the live table are scored frozen on the sessions of those\n"
    "last hours; the rebuild is installed when the challenger's HR@50 is >= --gate-ratio\n"
    "x the live table's).";

enum {
    X_DUMP,
    X_QUERY_LEN,
    X_EXCLUDE_PREFIX,
    X_AUC_NEG,
    X_OVERFETCH,
    X_STREAM_LR,
    X_ABLATION,
    X_MAX_PRED,
    X_PROTOCOL,
    X_PERIOD_HOURS,
    X_WARMUP,
    X_NEW_ITEMS,
    X_STREAM_SET,
    X_QUERY,
    X_TUNE_MIN_VALID,
    X_SEARCH,
    X_ANN_RECALL,
    X_GATE_HOURS,
    X_GATE_RATIO,
    X_GATE_Z,
    X_REBUILD,
    X_REFERENCE
};

static const rc_cli_flag extra[] = {
    {"--dump-split", "DIR", "write the split (train sessions, positions) for external tools"},
    {"--query-len", "N", "prefix items in the query, 1..64 (5)"},
    {"--exclude-prefix", NULL, "exclude every prefix item, not just the query items"},
    {"--auc-negatives", "N", "sampled negatives per prediction for AUC, 1..1000 (100)"},
    {"--overfetch", "F",
     "index over-fetch factor before the exact re-rank (the daemon's index.overfetch, 3)"},
    {"--stream-lr", "F", "prequential: the engine's learning rate (the daemon's model.lr)"},
    {"--ablation", NULL, "rows sgns, two_tower-nofeat, two_tower+tags, two_tower (+ --methods)"},
    {"--max-predictions", "N", "a deterministic sample of about N predictions (all)"},
    {"--protocol", "NAME", "split (one time cut, default) or daily (periods of event time)"},
    {"--period-hours", "H", "daily: period length in hours, (0, 8784] (24: days, UTC)"},
    {"--warmup-periods", "N", "daily: first periods that only train, >= 1 (1)"},
    {"--new-items", NULL, "targets may be items not in the training catalog (new slice)"},
    {"--stream-set", "KEY=VALUE",
     "a daemon config key (train.*, recall.*: the streaming engine and the user query; index.*: "
     "every embedding method's index), repeatable"},
    {"--query", "Q",
     "embedding methods' query: daemon (the daemon's user vector, recall.*) or "
     "items (mean of the query items) (daemon)"},
    {"--tune-min-valid", "N",
     "daily --tune: warm up until the first evaluated period's training part gives a "
     "validation split of N predictions (200; 0: --warmup-periods as given)"},
    {"--search", "S",
     "embedding methods search through the daemon's index (index) or by brute force over every "
     "item (exact: the reference for what the index loses) (index)"},
    {"--ann-recall", NULL,
     "sgns, cbow: also search each prediction exactly and report ann_recall@50, the share of "
     "the exact top-50 the index's top-50 holds"},
    {"--gate-hours", "H",
     "stream-daily-gated: judge each install on the sessions of the last H hours before the "
     "period's start, (0, --period-hours] (4)"},
    {"--gate-ratio", "R",
     "stream-daily-gated: install when the challenger's HR@50 there is >= R x the live "
     "table's, [0.5, 2] (1)"},
    {"--gate-z", "Z",
     "stream-daily-gated: and when its lead over the live table on the same predictions is "
     ">= Z standard errors (paired), [-10, 10] (0)"},
    {"--rebuild", "KIND",
     "stream-daily-install, -gated: the rebuild installed: live (from the live table, as "
     "recalld-train --init; installed over it), fresh (from random vectors; installed as a "
     "whole new table, install_model \"replace\") or both (-gated only: both challengers, "
     "the better one judged each day; greedy, it can settle on the worse kind: measure live "
     "and fresh instead) (live)"},
    {"--reference", "METHOD",
     "every other method's HR@50 is also given as a ratio to this method's, with a 95% "
     "interval paired by test session (sgns; daily: batch-daily; none when it did not run)"},
};

struct eval_flags {
    const char *dump;
    rc_eval_opts eo;
    float overfetch, stream_lr;
    double gate_hours, gate_ratio, gate_z;
    int rebuild, rebuild_given; /* --rebuild: RC_EVAL_REBUILD_* */
    const char *stream_set[32];
    size_t nstream_set;
    int query_items;
    int ablation;
    int daily; /* --protocol daily */
    rc_eval_daily_opts dopts;
    int min_valid_set;     /* --tune-min-valid given */
    int exact;             /* --search exact */
    int ann_recall;        /* --ann-recall */
    const char *reference; /* --reference */
};

static int parse_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (!*v || *end || x < lo || x > hi)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

static int on_extra(void *ud, size_t i, const char *v, char *eb, size_t el)
{
    struct eval_flags *f = ud;
    char *end;
    switch (i) {
    case X_DUMP:
        f->dump = v;
        return 0;
    case X_QUERY_LEN:
        return parse_u32(v, 1, RC_EVAL_MAX_QUERY, &f->eo.query_len)
                   ? rc_err(eb, el, RC_EINVAL, "expected 1..%u", RC_EVAL_MAX_QUERY)
                   : 0;
    case X_EXCLUDE_PREFIX:
        f->eo.exclude_prefix = 1;
        return 0;
    case X_ABLATION:
        f->ablation = 1;
        return 0;
    case X_PROTOCOL:
        if (strcmp(v, "daily") && strcmp(v, "split"))
            return rc_err(eb, el, RC_EINVAL, "expected split or daily, got '%.40s'", v);
        f->daily = strcmp(v, "daily") == 0;
        return 0;
    case X_PERIOD_HOURS:
        f->dopts.period_hours = strtod(v, &end);
        if (!*v || *end || !(f->dopts.period_hours > 0 && f->dopts.period_hours <= 8784))
            return rc_err(eb, el, RC_EINVAL, "expected a number of hours in (0, 8784]");
        return 0;
    case X_WARMUP:
        return parse_u32(v, 1, UINT32_MAX, &f->dopts.warmup_periods)
                   ? rc_err(eb, el, RC_EINVAL, "expected an integer >= 1")
                   : 0;
    case X_TUNE_MIN_VALID:
        f->min_valid_set = 1;
        return parse_u32(v, 0, UINT32_MAX, &f->dopts.tune_min_valid)
                   ? rc_err(eb, el, RC_EINVAL, "expected an integer >= 0")
                   : 0;
    case X_NEW_ITEMS:
        f->eo.new_items = 1;
        return 0;
    case X_ANN_RECALL:
        f->ann_recall = 1;
        return 0;
    case X_GATE_HOURS:
        f->gate_hours = strtod(v, &end);
        if (!*v || *end || !(f->gate_hours > 0 && f->gate_hours <= 8784))
            return rc_err(eb, el, RC_EINVAL, "expected a number of hours in (0, 8784]");
        return 0;
    case X_GATE_Z:
        f->gate_z = strtod(v, &end);
        if (!*v || *end || !(f->gate_z >= -10 && f->gate_z <= 10))
            return rc_err(eb, el, RC_EINVAL, "expected a number in [-10, 10]");
        return 0;
    case X_GATE_RATIO:
        f->gate_ratio = strtod(v, &end);
        if (!*v || *end || !(f->gate_ratio >= 0.5 && f->gate_ratio <= 2))
            return rc_err(eb, el, RC_EINVAL, "expected a number in [0.5, 2]");
        return 0;
    case X_REBUILD:
        for (int k = 0; k < 3; k++)
            if (strcmp(v, rc_eval_rebuild_names[k]) == 0) {
                f->rebuild = k;
                f->rebuild_given = 1;
                return 0;
            }
        return rc_err(eb, el, RC_EINVAL, "expected live, fresh or both, got '%.40s'", v);
    case X_REFERENCE:
        f->reference = v;
        return 0;
    case X_SEARCH:
        if (strcmp(v, "index") && strcmp(v, "exact"))
            return rc_err(eb, el, RC_EINVAL, "expected index or exact, got '%.40s'", v);
        f->exact = strcmp(v, "exact") == 0;
        return 0;
    case X_QUERY:
        if (strcmp(v, "daemon") && strcmp(v, "items"))
            return rc_err(eb, el, RC_EINVAL, "expected daemon or items, got '%.40s'", v);
        f->query_items = strcmp(v, "items") == 0;
        return 0;
    case X_STREAM_SET:
        if (f->nstream_set == RC_ARRAY_LEN(f->stream_set))
            return rc_err(eb, el, RC_EINVAL, "at most %zu", RC_ARRAY_LEN(f->stream_set));
        if (!strchr(v, '='))
            return rc_err(eb, el, RC_EINVAL, "expected KEY=VALUE, got '%.60s'", v);
        f->stream_set[f->nstream_set++] = v;
        return 0;
    case X_MAX_PRED:
        return parse_u32(v, 1, UINT32_MAX, &f->eo.max_predictions)
                   ? rc_err(eb, el, RC_EINVAL, "expected an integer >= 1")
                   : 0;
    case X_AUC_NEG:
        return parse_u32(v, 1, RC_EVAL_MAX_NEGATIVES, &f->eo.auc_negatives)
                   ? rc_err(eb, el, RC_EINVAL, "expected 1..%u", RC_EVAL_MAX_NEGATIVES)
                   : 0;
    case X_OVERFETCH:
        f->overfetch = strtof(v, &end);
        if (!*v || *end || !(f->overfetch >= 1 && f->overfetch <= 100))
            return rc_err(eb, el, RC_EINVAL, "expected a number in [1,100]");
        return 0;
    default:
        f->stream_lr = strtof(v, &end);
        if (!*v || *end || !(f->stream_lr > 0 && f->stream_lr <= 1))
            return rc_err(eb, el, RC_EINVAL, "expected a number in (0,1]");
        return 0;
    }
}

/* 1 when name is one of the comma-separated list. */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t m = strcspn(p, ",");
        if (m == n && memcmp(p, name, n) == 0)
            return 1;
        p += m + (p[m] == ',');
    }
    return 0;
}

/* Checks --methods; fills run[] (per rc_eval_methods entry). --ablation adds
 * its rows (and, without --methods, runs only them). */
static int select_methods(const rc_cli *cli, int ablation, int *run, char *eb, size_t el)
{
    size_t n = 0;
    for (size_t i = 0; i < rc_eval_nmethods; i++) {
        const char *name = rc_eval_methods[i].name;
        run[i] = ablation && !cli->methods
                     ? 0
                     : rc_cli_has_method(cli, name, !rc_eval_methods[i].not_default);
        run[i] |= ablation && in_list(RC_EVAL_ABLATION, name);
        n += run[i];
    }
    for (const char *p = cli->methods; p && *p;) {
        size_t m = strcspn(p, ",");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)RC_MIN(m, sizeof name - 1), p);
        if (m && !rc_eval_method_find(name))
            return rc_err(eb, el, RC_EINVAL, "--methods: unknown method \"%s\"", name);
        p += m + (p[m] == ',');
    }
    if (!n)
        return rc_err(eb, el, RC_EINVAL, "--methods: no method selected");
    return 0;
}

static json_t *tuned_json(const rc_eval_report *r)
{
    const rc_train_opts *o = &r->settings;
    return json_pack("{s:I,s:I,s:I,s:f,s:I,s:f,s:f,s:f,s:f,s:I,s:f}", "dim",
                     (json_int_t)(o->dim ? o->dim : 64), "window", (json_int_t)o->window,
                     "negatives", (json_int_t)o->negatives, "power", (double)o->power, "epochs",
                     (json_int_t)o->epochs, "subsample", (double)o->subsample, "lr", (double)o->lr,
                     "cate_prior", (double)o->cate_prior, "validation_hr@50", r->tune_hr50,
                     "trials", (json_int_t)r->tune_trials, "seconds", r->tune_seconds);
}

/* The streaming knobs a stream method ran with (keys: the daemon's). */
static json_t *stream_json(const rc_eval_stream_knobs *k)
{
    return json_pack("{s:f,s:f,s:f,s:f,s:I,s:I,s:f,s:b,s:f,s:f,s:f,s:f}", "train.replay_ratio",
                     (double)k->replay_ratio, "train.lr_decay_clicks", (double)k->lr_decay_clicks,
                     "train.lr_min", (double)k->lr_min, "model.lr", (double)k->lr, "recall.window",
                     (json_int_t)k->recall_window, "recall.half_life_ms",
                     (json_int_t)k->half_life_ms, "model.subsample", (double)k->subsample,
                     "train.replay_adaptive", k->replay_adaptive, "train.replay_subsample",
                     (double)k->replay_subsample, "train.anchor", (double)k->anchor,
                     "train.anchor_fade_clicks", (double)k->anchor_fade, "train.replay_per_hour",
                     (double)k->replay_per_hour);
}

/* The --tune search of the streaming knobs: the choice, the keys searched. */
static json_t *stream_tuned_json(const rc_eval_stream_tune *t)
{
    json_t *j = stream_json(&t->best), *keys = json_array();
    for (unsigned i = 0; i < RC_TUNE_STREAM_NKEYS; i++)
        if (t->searched & (1u << i))
            json_array_append_new(keys, json_string(rc_tune_stream_keys[i]));
    json_object_set_new(j, "searched", keys);
    json_object_set_new(j, "validation_hr@50", json_real(t->hr50));
    json_object_set_new(j, "base_validation_hr@50", json_real(t->base_hr50));
    json_object_set_new(j, "trials", json_integer((json_int_t)t->trials));
    json_object_set_new(j, "seconds", json_real(t->seconds));
    json_object_set_new(j, "validation_predictions",
                        json_integer((json_int_t)t->valid_predictions));
    return j;
}

/* "tags,device,stats,attn" of the bits, "none" for 0. */
static void features_str(unsigned f, char *buf, size_t cap)
{
    static const char *const names[] = {"tags", "device", "stats", "attn"};
    size_t w = 0;
    buf[0] = '\0';
    for (unsigned b = 0; b < 4; b++)
        if (f & (1u << b))
            w += (size_t)snprintf(buf + w, cap > w ? cap - w : 0, "%s%s", w ? "," : "", names[b]);
    if (!w)
        snprintf(buf, cap, "none");
}

static json_t *tower_json(const rc_eval_report *r)
{
    const rc_tower_train_opts *o = &r->tower;
    const rc_tower_train_result *t = &r->tower_res;
    char feats[64];
    features_str(o->cfg.features, feats, sizeof feats);
    return json_pack("{s:s,s:I,s:I,s:f,s:f,s:I,s:f,s:f,s:b}", "features", feats, "epochs",
                     (json_int_t)(o->epochs ? o->epochs : 2), "examples", (json_int_t)t->examples,
                     "first_loss", t->first_loss, "loss", t->loss, "threads",
                     (json_int_t)t->threads, "seconds", t->seconds, "examples_per_s",
                     t->examples_per_s, "stopped", t->stopped);
}

/* A slice's metrics: the method's keys but seconds (one pass times all). */
static json_t *slice_json(const rc_eval_metrics *m)
{
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I}", "hr@10", m->hr10, "hr@20", m->hr20,
                     "hr@50", m->hr50, "mrr@50", m->mrr50, "coverage@50", m->coverage50,
                     "avg_position", m->avg_position, "auc", m->auc, "predictions",
                     (json_int_t)m->predictions);
}

static json_t *method_json(const rc_eval_report *r)
{
    const rc_eval_metrics *m = &r->m;
    json_t *j = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:f}", "hr@10", m->hr10, "hr@20",
                          m->hr20, "hr@50", m->hr50, "mrr@50", m->mrr50, "coverage@50",
                          m->coverage50, "avg_position", m->avg_position, "auc", m->auc,
                          "predictions", (json_int_t)m->predictions, "seconds", m->seconds);
    if (j && r->tuned)
        json_object_set_new(j, "tuned", tuned_json(r));
    if (j && r->has_stream)
        json_object_set_new(j, "stream", stream_json(&r->stream));
    if (j && r->stream_tuned)
        json_object_set_new(j, "stream_tuned", stream_tuned_json(&r->stream_tune));
    if (j && r->rebuild)
        json_object_set_new(j, "rebuild", json_string(rc_eval_rebuild_names[r->rebuild - 1]));
    if (j && r->has_gate) {
        const rc_eval_gate_stats *g = &r->gate;
        json_object_set_new(
            j, "gate",
            json_pack("{s:f,s:f,s:f,s:I,s:I,s:I,s:I,s:f,s:f}", "hours", g->hours, "ratio", g->ratio,
                      "min_z", g->min_z, "judged", (json_int_t)g->judged, "installed",
                      (json_int_t)g->installed, "unjudged", (json_int_t)g->unjudged,
                      "installed_fresh", (json_int_t)g->fresh, "live_hr@50",
                      g->judged ? g->live_hr50_sum / g->judged : 0.0, "challenger_hr@50",
                      g->judged ? g->cand_hr50_sum / g->judged : 0.0));
    }
    if (j && r->has_fuse) {
        json_object_set_new(j, "fuse_weight", json_real(round(r->fuse_weight * 1000.0) / 1000));
        if (r->fuse_tuned)
            json_object_set_new(j, "fuse_validation_hr@50", json_real(r->fuse_hr50));
    }
    if (j && r->has_tower)
        json_object_set_new(j, "tower", tower_json(r));
    if (j && r->has_ann) {
        json_object_set_new(j, "ann_recall@50", json_real(r->ann_recall50));
        json_object_set_new(j, "ann_predictions", json_integer((json_int_t)r->ann_n));
    }
    if (j && r->has_slices) {
        json_t *sl = json_object();
        for (unsigned i = 0; i < RC_EVAL_NSLICES; i++)
            json_object_set_new(sl, rc_eval_slice_names[i], slice_json(&r->slice[i]));
        json_object_set_new(j, "slices", sl);
    }
    return j;
}

/* What the user features were (reported when a two-tower row ran). */
struct feat_info {
    rc_ufeat *f;
    const char *file;
    uint64_t unknown; /* users of the file absent from the log */
};

/* The methods to report, in order. */
#define MAX_ROWS 16
struct rows {
    size_t n;
    const char *name[MAX_ROWS];
    const rc_eval_report *rep[MAX_ROWS];
    size_t idx[MAX_ROWS]; /* the row's method index */
    /* against the reference row (ref < n; ref = n: none): pair[ref] unused */
    size_t ref;
    rc_eval_pair_result pair[MAX_ROWS];
};

/* The rows of the methods that ran (only the ablation's, in its order, when
 * `ablation`). */
static void rows_of(const rc_eval_report *rep, const int *run, int ablation, struct rows *r)
{
    r->n = 0;
    r->ref = MAX_ROWS;
    for (size_t i = 0; i < rc_eval_nmethods && r->n < MAX_ROWS; i++) {
        if (!run[i] || (ablation && !in_list(RC_EVAL_ABLATION, rc_eval_methods[i].name)))
            continue;
        r->name[r->n] = rc_eval_methods[i].name;
        r->idx[r->n] = i;
        r->rep[r->n++] = &rep[i];
    }
}

/* The row named `name` (r->n when none). */
static size_t row_named(const struct rows *r, const char *name)
{
    size_t i = 0;
    while (name && i < r->n && strcmp(r->name[i], name))
        i++;
    return name ? i : r->n;
}

static json_t *pair_json(const struct rows *r, size_t i)
{
    const rc_eval_pair_result *p = &r->pair[i];
    json_t *j = json_pack("{s:s,s:I,s:I}", "method", r->name[r->ref], "predictions",
                          (json_int_t)p->predictions, "sessions", (json_int_t)p->sessions);
    json_object_set_new(j, "hr@50_ratio", p->defined ? json_real(p->ratio) : json_null());
    json_object_set_new(j, "ci95_low", p->defined ? json_real(p->lo) : json_null());
    json_object_set_new(j, "ci95_high", p->defined ? json_real(p->hi) : json_null());
    return j;
}

static json_t *methods_json(const struct rows *r)
{
    json_t *methods = json_object();
    for (size_t i = 0; i < r->n; i++) {
        json_t *j = method_json(r->rep[i]);
        if (r->ref < r->n && i != r->ref)
            json_object_set_new(j, "vs_reference", pair_json(r, i));
        json_object_set_new(methods, r->name[i], j);
    }
    return methods;
}

/* Pairs every row with the row named ref (none when it did not run) over
 * the predictions of sp[0..nsp): rk[row][k] is the row's ranks on sp[k]. */
static void set_pairs(struct rows *r, const char *ref, const rc_eval_split *const *sp, size_t nsp,
                      uint8_t *const *const *rk)
{
    r->ref = row_named(r, ref);
    for (size_t i = 0; r->ref < r->n && i < r->n; i++) {
        rc_eval_pair p = {0};
        for (size_t k = 0; i != r->ref && k < nsp; k++)
            if (rk[i] && rk[r->ref] && rk[i][k] && rk[r->ref][k])
                rc_eval_pair_add(&p, sp[k]->pos, sp[k]->npos, rk[i][k], rk[r->ref][k], RC_EVAL_K);
        rc_eval_pair_result_of(&p, &r->pair[i]);
    }
}

/* The split's pairs: rank per method index. */
static void set_split_pairs(struct rows *r, const char *ref, const rc_eval_split *s, uint8_t **rank)
{
    uint8_t *const *rk[MAX_ROWS];
    for (size_t i = 0; i < r->n; i++)
        rk[i] = &rank[r->idx[i]];
    set_pairs(r, ref, &s, 1, rk);
}

/* Below the table: each row's HR@50 as a ratio to the reference row's. */
static void print_pairs(FILE *f, const struct rows *r)
{
    if (r->ref >= r->n || r->n < 2)
        return;
    fprintf(f, "\nHR@50 / %s's, 95%% interval paired by test session:\n", r->name[r->ref]);
    for (size_t i = 0; i < r->n; i++) {
        const rc_eval_pair_result *p = &r->pair[i];
        if (i == r->ref)
            continue;
        if (p->defined)
            fprintf(f, "%-22s %6.3fx  [%.3f, %.3f]\n", r->name[i], p->ratio, p->lo, p->hi);
        else
            fprintf(f, "%-22s (%s hit nothing)\n", r->name[i], r->name[r->ref]);
    }
}

/* protocol: the daily protocol's description (stolen), NULL for the split. */
static void print_json(const rc_clicklog *log, json_t *methods, json_t *protocol,
                       const struct feat_info *fi, int ablation, int exact)
{
    json_t *j = json_pack("{s:{s:I,s:I,s:I,s:I,s:I},s:o,s:s}", "dataset", "events",
                          (json_int_t)log->n, "users", (json_int_t)rc_dict_size(log->users),
                          "items", (json_int_t)rc_dict_size(log->items), "sessions",
                          (json_int_t)log->nsessions, "skipped", (json_int_t)log->skipped,
                          "methods", methods, "search", exact ? "exact" : "index");
    if (j && protocol)
        json_object_set_new(j, "protocol", protocol);
    else
        json_decref(protocol);
    if (j && fi->f) {
        json_t *u = json_pack("{s:I,s:I,s:I,s:s?}", "users_with_device",
                              (json_int_t)fi->f->users_with_device, "users_with_tags",
                              (json_int_t)fi->f->users_with_tags, "unknown_file_users",
                              (json_int_t)fi->unknown, "file", fi->file);
        json_object_set_new(json_object_get(j, "dataset"), "user_features", u);
    }
    if (j && ablation) {
        json_t *rows = json_array();
        for (const char *p = RC_EVAL_ABLATION; *p;) {
            size_t m = strcspn(p, ",");
            json_array_append_new(rows, json_stringn(p, m));
            p += m + (p[m] == ',');
        }
        json_object_set_new(j, "ablation", rows);
    }
    if (j) {
        json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(j);
    }
}

static void print_row(FILE *f, const char *name, const rc_eval_metrics *m, int with_seconds)
{
    fprintf(f, "%-17s %7.4f %7.4f %7.4f %7.4f %7.4f %8.2f %7.4f %9llu", name, m->hr10, m->hr20,
            m->hr50, m->mrr50, m->coverage50, m->avg_position, m->auc,
            (unsigned long long)m->predictions);
    if (with_seconds)
        fprintf(f, " %8.2f", m->seconds);
    fputc('\n', f);
}

static void print_header(FILE *f, int with_seconds)
{
    fprintf(f, "%-17s %7s %7s %7s %7s %7s %8s %7s %9s%s\n", "method", "hr@10", "hr@20", "hr@50",
            "mrr@50", "cov@50", "avg_pos", "auc", "preds", with_seconds ? "  seconds" : "");
}

static void print_rows(FILE *f, const struct rows *r)
{
    print_header(f, 1);
    for (size_t i = 0; i < r->n; i++)
        print_row(f, r->name[i], &r->rep[i]->m, 1);
}

/* After the main table: per slice, one line per method, to see where each
 * method wins. */
static void print_slices(FILE *f, const struct rows *r)
{
    for (unsigned k = 0; k < RC_EVAL_NSLICES; k++) {
        uint64_t n = 0; /* every method predicts the same positions */
        for (size_t i = 0; i < r->n && !n; i++)
            if (r->rep[i]->has_slices)
                n = r->rep[i]->slice[k].predictions;
        fprintf(f, "\nslice \"%s\": %llu predictions\n", rc_eval_slice_names[k],
                (unsigned long long)n);
        if (!n)
            continue;
        print_header(f, 0);
        for (size_t i = 0; i < r->n; i++)
            if (r->rep[i]->has_slices)
                print_row(f, r->name[i], &r->rep[i]->slice[k], 0);
    }
}

static void print_tower_lines(FILE *f, const struct rows *r, const struct feat_info *fi)
{
    int any = 0;
    for (size_t i = 0; i < r->n; i++) {
        const rc_eval_report *t = r->rep[i];
        char feats[64];
        if (!t->has_tower)
            continue;
        any = 1;
        features_str(t->tower.cfg.features, feats, sizeof feats);
        fprintf(f, "%s tower: features=%s epochs=%u, %llu examples, loss %.4f -> %.4f, %.1f s\n",
                r->name[i], feats, t->tower.epochs ? t->tower.epochs : 2,
                (unsigned long long)t->tower_res.examples, t->tower_res.first_loss,
                t->tower_res.loss, t->tower_res.seconds);
    }
    if (any && fi->f)
        fprintf(f, "user features: %llu users with a device, %llu with tags%s%s",
                (unsigned long long)fi->f->users_with_device,
                (unsigned long long)fi->f->users_with_tags, fi->file ? " (file " : "",
                fi->file ? fi->file : "");
    if (any && fi->f && fi->file)
        fprintf(f, ", %llu of its users not in the log)", (unsigned long long)fi->unknown);
    if (any && fi->f)
        fputc('\n', f);
}

static void print_settings(const struct rows *r)
{
    for (size_t i = 0; i < r->n; i++) {
        char line[512];
        const rc_eval_report *t = r->rep[i];
        if (!t->has_settings)
            continue;
        rc_tune_format(&t->settings, line, sizeof line);
        printf("%s settings%s: dim=%u %s\n", r->name[i], t->tuned ? " (tuned)" : "",
               t->settings.dim ? t->settings.dim : 64, line);
        if (t->has_fuse)
            printf("%s fusion weight%s: %.1f\n", r->name[i], t->fuse_tuned ? " (tuned)" : "",
                   (double)t->fuse_weight);
        if (!t->has_stream)
            continue;
        rc_tune_stream_format(&t->stream, line, sizeof line);
        printf("%s stream%s: %s\n", r->name[i], t->stream_tuned ? " (tuned)" : "", line);
    }
}

static void print_dataset(const rc_clicklog *log)
{
    printf("dataset: %zu events, %u users, %u items, %u sessions, %llu skipped\n", log->n,
           rc_dict_size(log->users), rc_dict_size(log->items), log->nsessions,
           (unsigned long long)log->skipped);
}

static void print_table(const rc_clicklog *log, const rc_eval_split *s, const struct rows *r,
                        const struct feat_info *fi)
{
    print_dataset(log);
    printf("split: cut %lld ms, %u training sessions (%llu clicks, %u items), %u test sessions, "
           "%zu predictions\n\n",
           (long long)s->cut_ms, s->ntrain, (unsigned long long)s->train_clicks, s->ncatalog,
           s->ntest, s->npos);
    print_rows(stdout, r);
    print_pairs(stdout, r);
    print_tower_lines(stdout, r, fi);
    print_settings(r);
    print_slices(stdout, r);
}

/* Runs the methods of run[] into rep[], each prediction's rank into rank[]
 * (owned by the caller). */
static int run_methods(rc_eval_env *env, const int *run, rc_eval_report *rep, uint8_t **rank,
                       char *eb, size_t el)
{
    for (size_t i = 0; i < rc_eval_nmethods; i++) {
        if (!run[i])
            continue;
        if (!env->quiet)
            fprintf(stderr, "recalld-eval: %s ...\n", rc_eval_methods[i].name);
        rc_eval_acc acc;
        if (rc_eval_acc_init(&acc, env->split->nitems) ||
            rc_eval_acc_track(&acc, env->split->npos)) {
            rc_eval_acc_free(&acc);
            return rc_err(eb, el, RC_ENOMEM, "eval: out of memory");
        }
        acc.slices = env->slices;
        env->acc = &acc;
        int rc = rc_eval_method_run(&rc_eval_methods[i], env, &rep[i], eb, el);
        env->acc = NULL;
        rank[i] = acc.rank;
        acc.rank = NULL;
        rc_eval_acc_free(&acc);
        if (rc)
            return rc;
        if (!env->quiet)
            fprintf(stderr, "recalld-eval: %s: hr@50 %.4f mrr@50 %.4f auc %.4f in %.2f s\n",
                    rc_eval_methods[i].name, rep[i].m.hr50, rep[i].m.mrr50, rep[i].m.auc,
                    rep[i].m.seconds);
    }
    return 0;
}

static int any_tower(const int *run)
{
    for (size_t i = 0; i < rc_eval_nmethods; i++)
        if (run[i] && strncmp(rc_eval_methods[i].name, "two_tower", 9) == 0)
            return 1;
    return 0;
}

/* The user features: the log's events, then --user-features. */
static int load_features(const rc_cli *cli, const rc_clicklog *log, struct feat_info *fi, char *eb,
                         size_t el)
{
    rc_ufeat *f = NULL;
    int rc = rc_ufeat_from_log(log, &f);
    if (rc)
        return rc_err(eb, el, rc, "user features: out of memory");
    fi->file = cli->user_features;
    if (cli->user_features &&
        (rc = rc_ufeat_load_file(f, log, cli->user_features, &fi->unknown, eb, el))) {
        rc_ufeat_free(f);
        return rc;
    }
    if (!cli->log.quiet)
        fprintf(stderr, "recalld-eval: user features: %llu users with a device, %llu with tags\n",
                (unsigned long long)f->users_with_device, (unsigned long long)f->users_with_tags);
    fi->f = f;
    return 0;
}

/* The env every method run gets (split, slices: the caller's). */
static rc_eval_env base_env(const rc_cli *cli, const struct eval_flags *f, const rc_clicklog *log,
                            const struct feat_info *fi)
{
    return (rc_eval_env){.log = log,
                         .train = cli->train,
                         .overfetch = f->overfetch,
                         .exact = f->exact,
                         .ann_recall = f->ann_recall,
                         .stream_lr = f->stream_lr,
                         .gate_hours = f->gate_hours,
                         .gate_ratio = f->gate_ratio,
                         .gate_min_z = f->gate_z,
                         .rebuild = f->rebuild,
                         .stream_set = f->stream_set,
                         .nstream_set = f->nstream_set,
                         .query_items = f->query_items,
                         .tune = cli->tune,
                         .tune_stream = cli->tune,
                         .tune_fuse = cli->tune,
                         .tune_seconds = cli->tune_seconds,
                         .fixed_mask = cli->set_mask,
                         .quiet = cli->log.quiet,
                         .feats = fi->f,
                         .tower = cli->tower,
                         .tower_features_set = cli->tower_features_set,
                         .keep_w2v = 1};
}

static int evaluate(const rc_cli *cli, const struct eval_flags *f, const int *run, char *eb,
                    size_t el)
{
    rc_clicklog *log = NULL;
    rc_eval_split *split = NULL;
    rc_eval_opts eo = f->eo;
    rc_eval_report rep[MAX_ROWS];
    uint8_t *rank[MAX_ROWS] = {0};
    const char *ref = f->reference ? f->reference : "sgns";
    struct feat_info fi = {0};
    struct rows rows;
    rc_eval_env env = {0};
    rc_ufeat *log_feats = NULL;
    uint8_t *slices = NULL;
    int rc;
    eo.test_ratio = cli->test_ratio;
    eo.seed = cli->train.seed;
    if ((rc = rc_clicklog_load(&cli->log, &log, eb, el)) ||
        (rc = rc_eval_split_create(log, NULL, &eo, &split, eb, el)))
        goto out;
    if ((any_tower(run) || cli->user_features) && (rc = load_features(cli, log, &fi, eb, el)))
        goto out;
    if (!cli->log.quiet)
        fprintf(stderr,
                "recalld-eval: split at %lld ms: %u training sessions, %u items, %u test "
                "sessions, %zu predictions\n",
                (long long)split->cut_ms, split->ntrain, split->ncatalog, split->ntest,
                split->npos);
    if (f->dump && (rc = rc_eval_split_dump(split, f->dump, eb, el)))
        goto out;
    /* The feature slices need features even when no tower runs: the log's own. */
    if (!fi.f && (rc = rc_ufeat_from_log(log, &log_feats))) {
        rc = rc_err(eb, el, rc, "user features: out of memory");
        goto out;
    }
    if (!(slices = malloc(split->npos))) {
        rc = rc_err(eb, el, RC_ENOMEM, "slices: out of memory");
        goto out;
    }
    rc_eval_slices(split, fi.f ? fi.f : log_feats, slices);
    env = base_env(cli, f, log, &fi);
    env.split = split;
    env.slices = slices;
    if ((rc = run_methods(&env, run, rep, rank, eb, el)))
        goto out;
    rows_of(rep, run, 0, &rows);
    set_split_pairs(&rows, ref, split, rank);
    if (cli->json)
        print_json(log, methods_json(&rows), NULL, &fi, f->ablation, f->exact);
    else
        print_table(log, split, &rows, &fi);
    if (f->ablation && cli->json && !cli->log.quiet) {
        /* The JSON is for programs; the ablation table for whoever runs it. */
        rows_of(rep, run, 1, &rows);
        set_split_pairs(&rows, ref, split, rank);
        fprintf(stderr, "ablation (same split, %zu predictions):\n", split->npos);
        print_rows(stderr, &rows);
        print_pairs(stderr, &rows);
        print_tower_lines(stderr, &rows, &fi);
        print_slices(stderr, &rows);
    }
out:
    for (size_t i = 0; i < MAX_ROWS; i++)
        free(rank[i]);
    rc_eval_env_cleanup(&env);
    free(slices);
    rc_ufeat_free(log_feats);
    rc_ufeat_free(fi.f);
    rc_eval_split_destroy(split);
    rc_clicklog_free(log);
    return rc;
}

/* ---- the daily protocol ---- */

/* Checks --methods against the daily methods; fills run[] (per
 * rc_eval_daily_methods entry; all by default). */
static int select_daily(const rc_cli *cli, int *run, char *eb, size_t el)
{
    size_t n = 0;
    for (const char *p = cli->methods; p && *p;) {
        size_t m = strcspn(p, ",");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)RC_MIN(m, sizeof name - 1), p);
        if (m && !rc_eval_daily_method_find(name))
            return rc_err(eb, el, RC_EINVAL,
                          "--methods: \"%s\" is not a daily method (popularity, itemknn, "
                          "batch-daily, stream-warm, stream-daily, itemknn-live, fused, "
                          "stream-daily-live, stream-daily-install, stream-daily-gated)",
                          name);
        p += m + (p[m] == ',');
    }
    for (size_t i = 0; i < rc_eval_daily_nmethods; i++)
        n += run[i] =
            rc_cli_has_method(cli, rc_eval_daily_methods[i].name, i < 5 /* the rest: when named */);
    if (!n)
        return rc_err(eb, el, RC_EINVAL, "--methods: no method selected");
    return 0;
}

static json_t *protocol_json(const rc_eval_daily *d)
{
    json_t *periods = json_array();
    for (uint32_t k = 0; k < d->nperiods; k++) {
        const rc_eval_split *s = d->period[k].split;
        char name[64];
        rc_eval_daily_period_name(d, k, name, sizeof name);
        json_array_append_new(periods,
                              json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "name", name, "start_ms",
                                        (json_int_t)d->period[k].start_ms, "train_sessions",
                                        (json_int_t)s->ntrain, "catalog", (json_int_t)s->ncatalog,
                                        "test_sessions", (json_int_t)s->ntest, "predictions",
                                        (json_int_t)s->npos, "new_targets",
                                        (json_int_t)d->period[k].new_targets));
    }
    return json_pack(
        "{s:s,s:f,s:I,s:I,s:I,s:b,s:I,s:I,s:I,s:I,s:o}", "name", "daily", "period_hours",
        d->dopts.period_hours, "warmup_periods", (json_int_t)d->dopts.warmup_periods,
        "warmup_periods_asked", (json_int_t)d->warmup_asked, "tune_validation_predictions",
        (json_int_t)d->tune_valid_predictions, "new_items", d->opts.new_items, "total_periods",
        (json_int_t)d->total_periods, "skipped_periods", (json_int_t)d->skipped, "predictions",
        (json_int_t)d->npos, "new_targets", (json_int_t)d->new_targets, "periods", periods);
}

/* Per method: its JSON with a "period ..." slice per period. */
static json_t *daily_methods_json(const rc_eval_daily *d, const struct rows *r,
                                  const rc_eval_daily_report *const *drep)
{
    json_t *methods = methods_json(r);
    for (size_t i = 0; i < r->n; i++) {
        json_t *sl = json_object_get(json_object_get(methods, r->name[i]), "slices");
        for (uint32_t k = 0; sl && k < d->nperiods; k++) {
            char name[64];
            rc_eval_daily_period_name(d, k, name, sizeof name);
            json_object_set_new(sl, name, slice_json(&drep[i]->period[k]));
        }
    }
    return methods;
}

/* HR@50 per period, one column per method. */
static void print_periods(const rc_eval_daily *d, const struct rows *r,
                          const rc_eval_daily_report *const *drep)
{
    printf("\nHR@50 per period:\n%-24s %7s %7s", "period", "preds", "new");
    for (size_t i = 0; i < r->n; i++)
        printf(" %12s", r->name[i]);
    putchar('\n');
    for (uint32_t k = 0; k < d->nperiods; k++) {
        char name[64];
        rc_eval_daily_period_name(d, k, name, sizeof name);
        printf("%-24s %7zu %7llu", name + 7, d->period[k].split->npos,
               (unsigned long long)d->period[k].new_targets);
        for (size_t i = 0; i < r->n; i++)
            printf(" %12.4f", drep[i]->period[k].hr50);
        putchar('\n');
    }
}

static void print_daily_table(const rc_clicklog *log, const rc_eval_daily *d, const struct rows *r,
                              const rc_eval_daily_report *const *drep)
{
    print_dataset(log);
    if (d->dopts.warmup_periods != d->warmup_asked)
        printf("warm-up extended from %u to %u periods for --tune: a validation split of %llu "
               "predictions\n",
               d->warmup_asked, d->dopts.warmup_periods,
               (unsigned long long)d->tune_valid_predictions);
    printf("daily protocol: %u periods of %g h, %u of warm-up, %u evaluated (%u skipped: no "
           "training session or prediction), %llu predictions, %llu of new items\n\n",
           d->total_periods, d->dopts.period_hours, d->dopts.warmup_periods, d->nperiods,
           d->skipped, (unsigned long long)d->npos, (unsigned long long)d->new_targets);
    print_rows(stdout, r);
    print_pairs(stdout, r);
    print_settings(r);
    print_slices(stdout, r);
    print_periods(d, r, drep);
}

static int evaluate_daily(const rc_cli *cli, const struct eval_flags *f, const int *run, char *eb,
                          size_t el)
{
    rc_clicklog *log = NULL;
    rc_eval_daily *d = NULL;
    rc_eval_opts eo = f->eo;
    rc_eval_daily_report drep[MAX_ROWS];
    const rc_eval_daily_report *dr[MAX_ROWS];
    struct feat_info fi = {0};
    struct rows rows = {0};
    rc_eval_env env = {0};
    const rc_eval_split **sp = NULL;
    uint8_t *const *rk[MAX_ROWS];
    int rc;
    memset(drep, 0, sizeof drep);
    rc_eval_daily_opts dopts = f->dopts;
    eo.seed = cli->train.seed;
    if (!cli->tune)
        dopts.tune_min_valid = 0;
    else if (!f->min_valid_set)
        dopts.tune_min_valid = RC_EVAL_TUNE_MIN_VALID;
    if ((rc = rc_clicklog_load(&cli->log, &log, eb, el)) ||
        (rc = load_features(cli, log, &fi, eb, el)) ||
        (rc = rc_eval_daily_create(log, &eo, &dopts, fi.f, &d, eb, el)))
        goto out;
    if (!cli->log.quiet)
        fprintf(stderr, "recalld-eval: daily: %u periods evaluated, %llu predictions (%llu new)\n",
                d->nperiods, (unsigned long long)d->npos, (unsigned long long)d->new_targets);
    env = base_env(cli, f, log, &fi);
    env.keep_w2v = 0;
    for (size_t i = 0; i < rc_eval_daily_nmethods; i++) {
        const rc_eval_daily_method *m = &rc_eval_daily_methods[i];
        if (!run[i])
            continue;
        if (!cli->log.quiet)
            fprintf(stderr, "recalld-eval: %s ...\n", m->name);
        if ((rc = rc_eval_daily_run(m, &env, d, &drep[rows.n], eb, el)))
            goto out;
        if (!cli->log.quiet)
            fprintf(stderr, "recalld-eval: %s: hr@50 %.4f (new %.4f, older %.4f) in %.2f s\n",
                    m->name, drep[rows.n].all.m.hr50, drep[rows.n].all.slice[RC_EVAL_SL_NEW].hr50,
                    drep[rows.n].all.slice[RC_EVAL_SL_OLDER].hr50, drep[rows.n].all.m.seconds);
        rows.name[rows.n] = m->name;
        rows.idx[rows.n] = i;
        rows.rep[rows.n] = &drep[rows.n].all;
        dr[rows.n] = &drep[rows.n];
        rows.n++;
    }
    if (!(sp = malloc(d->nperiods * sizeof *sp))) {
        rc = rc_err(eb, el, RC_ENOMEM, "daily: out of memory");
        goto out;
    }
    for (uint32_t k = 0; k < d->nperiods; k++)
        sp[k] = d->period[k].split;
    for (size_t i = 0; i < rows.n; i++)
        rk[i] = drep[i].rank;
    set_pairs(&rows, f->reference ? f->reference : "batch-daily", sp, d->nperiods, rk);
    if (cli->json)
        print_json(log, daily_methods_json(d, &rows, dr), protocol_json(d), &fi, 0, f->exact);
    else
        print_daily_table(log, d, &rows, dr);
out:
    free(sp);
    for (size_t i = 0; i < MAX_ROWS; i++)
        rc_eval_daily_report_free(&drep[i]);
    rc_eval_env_cleanup(&env);
    rc_eval_daily_destroy(d);
    rc_ufeat_free(fi.f);
    rc_clicklog_free(log);
    return rc;
}

/* 1 when --reference names a method of run[]. */
static int reference_runs(const struct eval_flags *f, const int *run)
{
    size_t n = f->daily ? rc_eval_daily_nmethods : rc_eval_nmethods;
    for (size_t i = 0; i < n; i++)
        if (run[i] && strcmp(f->reference, f->daily ? rc_eval_daily_methods[i].name
                                                    : rc_eval_methods[i].name) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    char err[512];
    rc_cli cli;
    struct eval_flags f = {0};
    int run[MAX_ROWS] = {0};
    if (rc_eval_nmethods > RC_ARRAY_LEN(run) || rc_eval_daily_nmethods > RC_ARRAY_LEN(run)) {
        fprintf(stderr, "recalld-eval: too many methods for this build\n");
        return 1;
    }
    rc_cli_init(&cli);
    if (rc_cli_parse(&cli, argc, argv, extra, RC_ARRAY_LEN(extra), on_extra, &f, err, sizeof err))
        return rc_cli_usage_error("recalld-eval", "%s", err);
    if (f.daily && f.ablation)
        return rc_cli_usage_error("recalld-eval", "--ablation needs --protocol split");
    if (f.gate_hours > (f.dopts.period_hours > 0 ? f.dopts.period_hours : 24))
        return rc_cli_usage_error("recalld-eval", "--gate-hours %g: at most a period (%g h)",
                                  f.gate_hours,
                                  f.dopts.period_hours > 0 ? f.dopts.period_hours : 24);
    if (f.exact && f.ann_recall)
        return rc_cli_usage_error("recalld-eval", "--ann-recall compares the index with "
                                                  "--search exact: give one of them");
    if ((f.daily ? select_daily(&cli, run, err, sizeof err)
                 : select_methods(&cli, f.ablation, run, err, sizeof err)))
        return rc_cli_usage_error("recalld-eval", "%s", err);
    if (f.reference && !reference_runs(&f, run))
        return rc_cli_usage_error("recalld-eval", "--reference %s: not one of the methods run",
                                  f.reference);
    if (f.rebuild_given && !f.daily)
        return rc_cli_usage_error("recalld-eval", "--rebuild: a daily protocol option");
    for (size_t i = 0; f.daily && f.rebuild == RC_EVAL_REBUILD_BOTH && i < rc_eval_daily_nmethods;
         i++)
        if (run[i] && rc_eval_daily_methods[i].install && !rc_eval_daily_methods[i].gate)
            return rc_cli_usage_error("recalld-eval",
                                      "--rebuild both: only stream-daily-gated chooses between "
                                      "two rebuilds; %s installs one (live or fresh)",
                                      rc_eval_daily_methods[i].name);
    if (cli.help) {
        rc_cli_usage(stdout, "recalld-eval", about, extra, RC_ARRAY_LEN(extra));
        return 0;
    }
    if (cli.version) {
        printf("recalld-eval %s\n", RC_VERSION);
        return 0;
    }
    if (!cli.log.path)
        return rc_cli_usage_error("recalld-eval", "--input is required");
    if (cli.log.quiet)
        rc_log_set_level(RC_LOG_WARN);
    if ((f.daily ? evaluate_daily : evaluate)(&cli, &f, run, err, sizeof err)) {
        fprintf(stderr, "recalld-eval: %s\n", err);
        return 1;
    }
    return 0;
}
