/* cli — the option parser of the six binaries, and the shared command line of
 * recalld-train and recalld-eval on top of it.
 *
 * Each binary describes its options in one table; the parser, the value checks
 * and the --help text all come from it, so help and behaviour cannot drift
 * apart, and every binary answers -h, --help, --version and a typo the same
 * way. */
#include "recalld/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"

/* ---- the generic parser ---- */

static int parse_u64(const char *v, uint64_t *out)
{
    char *e;
    errno = 0;
    if (!v || !*v || *v == '-' || *v == '+' || *v == ' ')
        return RC_EINVAL;
    unsigned long long x = strtoull(v, &e, 10);
    if (*e || errno)
        return RC_EINVAL;
    *out = x;
    return 0;
}

static int parse_dbl(const char *v, double *out)
{
    char *e;
    errno = 0;
    if (!v || !*v)
        return RC_EINVAL;
    double x = strtod(v, &e);
    if (*e || errno || !isfinite(x))
        return RC_EINVAL;
    *out = x;
    return 0;
}

/* Stores a typed value; errors are "why" only (the caller names the option). */
static int opt_store(const rc_cli_spec *s, const rc_cli_opt *o, const char *v, char *eb, size_t el)
{
    uint64_t u;
    double d;
    switch (o->type) {
    case RC_CLI_BOOL:
        *(int *)o->dest = 1;
        return 0;
    case RC_CLI_STR:
        if (!*v)
            return rc_err(eb, el, RC_EINVAL, "expected a non-empty value");
        *(const char **)o->dest = v;
        return 0;
    case RC_CLI_U32:
    case RC_CLI_INT:
        if (parse_u64(v, &u) || (double)u < o->min || (double)u > o->max)
            return rc_err(eb, el, RC_EINVAL, "expected an integer in %.0f..%.0f, got '%.40s'",
                          o->min, o->max, v);
        if (o->type == RC_CLI_U32)
            *(uint32_t *)o->dest = (uint32_t)u;
        else
            *(int *)o->dest = (int)u;
        return 0;
    case RC_CLI_DBL:
        if (parse_dbl(v, &d) || d < o->min || d > o->max)
            return rc_err(eb, el, RC_EINVAL, "expected a number in %g..%g, got '%.40s'", o->min,
                          o->max, v);
        *(double *)o->dest = d;
        return 0;
    default:
        if (!s->fn)
            return rc_err(eb, el, RC_EINVAL, "no handler");
        return s->fn(s->ud, o, v, eb, el);
    }
}

static const rc_cli_opt *find_long(const rc_cli_spec *s, const char *a, size_t n)
{
    for (size_t i = 0; i < s->nopts; i++)
        if (strlen(s->opts[i].name) == n && memcmp(s->opts[i].name, a, n) == 0)
            return &s->opts[i];
    return NULL;
}

static const rc_cli_opt *find_short(const rc_cli_spec *s, char c)
{
    for (size_t i = 0; i < s->nopts; i++)
        if (s->opts[i].shortname && s->opts[i].shortname == c)
            return &s->opts[i];
    return NULL;
}

/* One option at argv[*i]: finds it, takes its value (inline or the next
 * argument), stores it. label is what errors call it ("--dim", "-X"). */
static int one_option(const rc_cli_spec *s, int argc, char **argv, int *i, char *eb, size_t el)
{
    const char *a = argv[*i], *inl = NULL;
    const rc_cli_opt *o;
    char label[64], why[512] = "bad value";
    if (a[1] == '-') {
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        inl = eq ? eq + 1 : NULL;
        snprintf(label, sizeof label, "%.*s", (int)RC_MIN(n, 60), a);
        o = find_long(s, a + 2, n - 2);
    } else {
        snprintf(label, sizeof label, "-%c", a[1]);
        o = find_short(s, a[1]);
        inl = a[2] ? a + 2 : NULL;
    }
    if (!o)
        return rc_err(eb, el, RC_EINVAL, "%s: unknown option", label);
    if (!o->arg && inl)
        return rc_err(eb, el, RC_EINVAL, "%s: takes no value", label);
    if (o->arg && !inl) {
        if (*i + 1 >= argc)
            return rc_err(eb, el, RC_EINVAL, "%s: missing value", label);
        inl = argv[++*i];
    }
    int rc = opt_store(s, o, inl, why, sizeof why);
    if (!rc)
        return 0;
    /* A callback that already names the option ("--dim: model.dim: ...") */
    size_t ln = strlen(label);
    if (strncmp(why, label, ln) == 0 && why[ln] == ':')
        return rc_err(eb, el, rc, "%s", why);
    return rc_err(eb, el, rc, "%s: %s", label, why);
}

int rc_cli_args_parse(const rc_cli_spec *s, int argc, char **argv, int *argi, char *eb, size_t el)
{
    int i = 1;
    if (!s || !argi || (argc > 0 && !argv) || (s->nopts && !s->opts))
        return rc_err(eb, el, RC_EINVAL, "cli: bad arguments");
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (a[0] != '-' || !a[1])
            break; /* the first positional argument ("-" is one: stdin) */
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return RC_CLI_HELP;
        if (!strcmp(a, "--version"))
            return RC_CLI_VERSION;
        if (one_option(s, argc, argv, &i, eb, el))
            return RC_EINVAL;
    }
    int npos = argc > i ? argc - i : 0;
    if (npos > s->max_args)
        return rc_err(eb, el, RC_EINVAL, "%.60s: unexpected argument%s", argv[i + s->max_args],
                      argv[i + s->max_args][0] == '-' ? "" : " (options start with -)");
    if (npos < s->min_args)
        return rc_err(eb, el, RC_EINVAL, "missing argument: %s %s", s->prog ? s->prog : "",
                      s->synopsis ? s->synopsis : "");
    *argi = i < argc ? i : argc;
    return 0;
}

/* "  -X, --name ARG" into left. */
static void opt_left(const rc_cli_opt *o, char *left, size_t cap)
{
    char sh[8] = "    ";
    if (o->shortname)
        snprintf(sh, sizeof sh, "-%c%s", o->shortname, o->name[0] ? ", " : " ");
    if (o->name[0])
        snprintf(left, cap, "%s--%s%s%s", sh, o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    else
        snprintf(left, cap, "%s%s", sh, o->arg ? o->arg : "");
}

static void help_line(FILE *f, const char *left, const char *help, int width)
{
    const char *p = help ? help : "";
    size_t n = strcspn(p, "\n");
    if ((int)strlen(left) > width) {
        fprintf(f, "  %s\n", left);
        fprintf(f, "  %-*s  %.*s\n", width, "", (int)n, p);
    } else
        fprintf(f, "  %-*s  %.*s\n", width, left, (int)n, p);
    while (p[n] == '\n') {
        p += n + 1;
        n = strcspn(p, "\n");
        fprintf(f, "  %-*s  %.*s\n", width, "", (int)n, p);
    }
}

void rc_cli_args_help(FILE *f, const rc_cli_spec *s)
{
    static const rc_cli_opt builtin[] = {
        {"help", 'h', RC_CLI_BOOL, NULL, NULL, "print this help and exit", 0, 0, 0},
        {"version", 0, RC_CLI_BOOL, NULL, NULL, "print the version and exit", 0, 0, 0},
    };
    char left[96];
    int width = 0;
    if (!f || !s)
        return;
    for (size_t i = 0; i < s->nopts; i++) {
        opt_left(&s->opts[i], left, sizeof left);
        width = RC_MAX(width, (int)strlen(left));
    }
    width = RC_MIN(RC_MAX(width, 16), 28);
    fprintf(f, "usage: %s %s\n", s->prog ? s->prog : "", s->synopsis ? s->synopsis : "[options]");
    if (s->about)
        fprintf(f, "\n%s\n", s->about);
    fprintf(f, "\noptions (--name VALUE or --name=VALUE):\n");
    for (size_t i = 0; i < s->nopts; i++) {
        opt_left(&s->opts[i], left, sizeof left);
        help_line(f, left, s->opts[i].help, width);
    }
    for (size_t i = 0; i < RC_ARRAY_LEN(builtin); i++) {
        opt_left(&builtin[i], left, sizeof left);
        help_line(f, left, builtin[i].help, width);
    }
    if (s->epilog)
        fprintf(f, "\n%s", s->epilog);
}

int rc_cli_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (try '%s --help')\n", prog);
    va_end(ap);
    return 2;
}

int rc_cli_args(const rc_cli_spec *s, int argc, char **argv, int *argi)
{
    char err[640];
    int rc = rc_cli_args_parse(s, argc, argv, argi, err, sizeof err);
    switch (rc) {
    case 0:
        return -1;
    case RC_CLI_HELP:
        rc_cli_args_help(stdout, s);
        return 0;
    case RC_CLI_VERSION:
        printf("%s %s\n", s->prog, RC_VERSION);
        return 0;
    default:
        return rc_cli_usage_error(s->prog, "%s", err);
    }
}

/* ---- recalld-train and recalld-eval ---- */

enum id {
    F_INPUT,
    F_FORMAT,
    F_SEP,
    F_HEADER,
    F_USER,
    F_ITEM,
    F_TIME,
    F_SESSION,
    F_CITY,
    F_CATE,
    F_TIME_UNIT,
    F_TIME_OFFSET,
    F_GAP,
    F_ITEM_CATES,
    F_ITEM_CATES_FMT,
    F_TEST_RATIO,
    F_METHODS,
    F_MODE,
    F_DIM,
    F_WINDOW,
    F_NEG,
    F_EPOCHS,
    F_THREADS,
    F_SEED,
    F_MIN_COUNT,
    F_SUBSAMPLE,
    F_LR,
    F_POWER,
    F_HARD,
    F_CATE_PRIOR,
    F_GLOBAL_NEG,
    F_TUNE,
    F_TUNE_SECONDS,
    F_OUTPUT,
    F_JSON,
    F_QUIET,
    F_TT_DIM,
    F_TT_HIDDEN,
    F_TT_EPOCHS,
    F_TT_BATCH,
    F_TT_LR,
    F_TT_OPT,
    F_TT_EASY,
    F_TT_HARD,
    F_TT_TEMP,
    F_TT_FEATURES,
    F_USER_FEATURES
};

struct flag {
    enum id id;
    const char *name, *arg, *help;
};

static const struct flag flags[] = {
    {F_INPUT, "--input", "FILE", "click log; - = stdin; .gz is decompressed (required)"},
    {F_FORMAT, "--format", "F", "jsonl|csv|tsv (default: by suffix, else by the first line)"},
    {F_SEP, "--sep", "STR", "field separator, any string: ';' '::' '\\t' (default: sniffed)"},
    {F_HEADER, "--header", NULL, "the first row names the columns (implied by a column name)"},
    {F_USER, "--user", "C", "user column: 0-based index or header name"},
    {F_ITEM, "--item", "C", "item column (default without a mapping: user 0 item 1 time last)"},
    {F_TIME, "--time", "C", "time column (absent: file order)"},
    {F_SESSION, "--session", "C", "session column: sessions come from it, not from the gap"},
    {F_CITY, "--city", "C", "city column: negatives from the same city"},
    {F_CATE, "--cate", "C", "category column: hard negatives, multi-category recall"},
    {F_TIME_UNIT, "--time-unit", "U", "s|ms|iso: seconds, milliseconds, ISO 8601 date[time] (s)"},
    {F_TIME_OFFSET, "--time-offset", "C", "column of milliseconds added to --time"},
    {F_GAP, "--gap-ms", "N", "session inactivity gap in ms (1800000)"},
    {F_ITEM_CATES, "--item-cates", "FILE", "item -> category file (item;category rows)"},
    {F_ITEM_CATES_FMT, "--item-cates-format", "F",
     "csv (2 columns, separator sniffed) | movielens (u.item: first genre flag)"},
    {F_TEST_RATIO, "--test-ratio", "F", "last share of the time range used as test (0.2)"},
    {F_METHODS, "--methods", "LIST", "comma-separated methods (tool default)"},
    {F_MODE, "--mode", "M", "skipgram|cbow (skipgram)"},
    {F_DIM, "--dim", "N", "vector dimension, multiple of 8 (64)"},
    {F_WINDOW, "--window", "N", "context clicks on each side, 1..32 (5)"},
    {F_NEG, "--negatives", "N", "negatives per positive, 1..64 (5)"},
    {F_EPOCHS, "--epochs", "N", "passes over the sessions (5)"},
    {F_THREADS, "--threads", "N", "training threads (online CPUs)"},
    {F_SEED, "--seed", "N", "random seed (1)"},
    {F_MIN_COUNT, "--min-count", "N", "drop items with fewer clicks (1)"},
    {F_SUBSAMPLE, "--subsample", "T", "word2vec frequent-item subsampling threshold, 0 = off (0)"},
    {F_LR, "--lr", "F", "start learning rate, decays linearly (0.025 skipgram, 0.05 cbow)"},
    {F_POWER, "--power", "F", "negative sampling exponent, (0,4] (0.75)"},
    {F_HARD, "--hard-share", "F", "share of hard negatives (same city, other category) (0)"},
    {F_CATE_PRIOR, "--cate-prior", "K",
     "after training, pull each item toward its category's mean with the weight of K clicks (0)"},
    {F_GLOBAL_NEG, "--global-negatives", NULL, "ignore cities when sampling negatives"},
    {F_TUNE, "--tune", NULL,
     "search hyperparameters on a validation split (and, with categories, --cate-prior last)"},
    {F_TUNE_SECONDS, "--tune-seconds", "N", "time budget of --tune (60)"},
    {F_OUTPUT, "--output", "FILE", "output file"},
    {F_JSON, "--json", NULL, "print one JSON object"},
    {F_QUIET, "--quiet", NULL, "no progress, report or summary on stderr"},
    {F_TT_DIM, "--tower-dim", "N", "two-tower: output dimension, multiple of 8 (64)"},
    {F_TT_HIDDEN, "--tower-hidden", "N", "two-tower: hidden units of both towers (128)"},
    {F_TT_EPOCHS, "--tower-epochs", "N", "two-tower: passes over the training clicks (2)"},
    {F_TT_BATCH, "--tower-batch", "N", "two-tower: examples per mini-batch (256)"},
    {F_TT_LR, "--tower-lr", "F", "two-tower: learning rate (0.002 adam, 0.05 adagrad)"},
    {F_TT_OPT, "--optimizer", "O", "two-tower: adam|adagrad (adam)"},
    {F_TT_EASY, "--easy-negatives", "N", "two-tower: popularity negatives per mini-batch (128)"},
    {F_TT_HARD, "--hard-negatives", "N",
     "two-tower: same-city other-category negatives per example, 0 = none (4)"},
    {F_TT_TEMP, "--temperature", "F", "two-tower: softmax temperature of the cosine (0.05)"},
    {F_TT_FEATURES, "--features", "LIST",
     "two-tower user features: all|none|tags,device,stats,attn (all)"},
    {F_USER_FEATURES, "--user-features", "FILE",
     "user features CSV/TSV: header, user id first, one feature per column"},
};

int rc_cli_parse_features(const char *v, unsigned *out, char *eb, size_t el)
{
    static const struct {
        const char *name;
        unsigned bit;
    } words[] = {{"tags", RC_TOWER_F_TAGS},   {"device", RC_TOWER_F_DEVICE},
                 {"stats", RC_TOWER_F_STATS}, {"attn", RC_TOWER_F_ATTN},
                 {"all", RC_TOWER_F_ALL},     {"none", 0}};
    unsigned f = 0;
    if (!v || !*v || !out)
        return rc_err(eb, el, RC_EINVAL, "expected all, none or a list of tags,device,stats,attn");
    for (const char *p = v; *p;) {
        size_t n = strcspn(p, ","), i;
        for (i = 0; i < RC_ARRAY_LEN(words); i++)
            if (strlen(words[i].name) == n && memcmp(p, words[i].name, n) == 0)
                break;
        if (i == RC_ARRAY_LEN(words))
            return rc_err(eb, el, RC_EINVAL,
                          "unknown feature \"%.*s\" (expected all, none, tags, device, stats, "
                          "attn)",
                          (int)RC_MIN(n, 40), p);
        f |= words[i].bit;
        p += n + (p[n] == ',');
    }
    *out = f;
    return 0;
}

void rc_cli_init(rc_cli *c)
{
    if (!c)
        return;
    memset(c, 0, sizeof(*c));
    c->test_ratio = 0.2;
    c->tune_seconds = 60;
}

static int get_u64(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t x;
    if (parse_u64(v, &x) || x < lo || x > hi)
        return RC_EINVAL;
    *out = x;
    return 0;
}

static int get_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t x;
    int rc = get_u64(v, lo, hi, &x);
    if (!rc)
        *out = (uint32_t)x;
    return rc;
}

/* A float in [lo, hi]; open_lo excludes lo. */
static int get_dbl(const char *v, double lo, double hi, int open_lo, double *out)
{
    double x;
    if (parse_dbl(v, &x) || x < lo || x > hi || (open_lo && x == lo))
        return RC_EINVAL;
    *out = x;
    return 0;
}

static int get_flt(const char *v, double lo, double hi, int open_lo, float *out)
{
    double x;
    int rc = get_dbl(v, lo, hi, open_lo, &x);
    if (!rc)
        *out = (float)x;
    return rc;
}

/* The parser puts the flag's name in front. */
#define BAD(why) rc_err(eb, el, RC_EINVAL, "expected %s", why)

static int set_enum(rc_cli *c, const struct flag *f, const char *v, char *eb, size_t el)
{
    switch (f->id) {
    case F_FORMAT:
        if (!strcmp(v, "jsonl") || !strcmp(v, "json"))
            c->log.format = RC_LOG_JSONL;
        else if (!strcmp(v, "csv"))
            c->log.format = RC_LOG_CSV;
        else if (!strcmp(v, "tsv"))
            c->log.format = RC_LOG_TSV;
        else
            return BAD("jsonl, csv or tsv");
        return 0;
    case F_TIME_UNIT:
        if (!strcmp(v, "s"))
            c->log.time_unit = RC_TIME_S;
        else if (!strcmp(v, "ms"))
            c->log.time_unit = RC_TIME_MS;
        else if (!strcmp(v, "iso"))
            c->log.time_unit = RC_TIME_ISO;
        else
            return BAD("s, ms or iso");
        return 0;
    case F_MODE:
        if (!strcmp(v, "skipgram") || !strcmp(v, "sg"))
            c->train.mode = RC_SGNS_SKIPGRAM;
        else if (!strcmp(v, "cbow"))
            c->train.mode = RC_SGNS_CBOW;
        else
            return BAD("skipgram or cbow");
        c->set_mask |= RC_CLI_SET_MODE;
        return 0;
    default:
        if (strcmp(v, "csv") && strcmp(v, "movielens"))
            return BAD("csv or movielens");
        c->log.item_cates_format = v;
        return 0;
    }
}

static int set_number(rc_cli *c, const struct flag *f, const char *v, char *eb, size_t el)
{
    rc_train_opts *t = &c->train;
    uint64_t u;
    switch (f->id) {
    case F_DIM:
        if (get_u32(v, 8, 1024, &t->dim) || t->dim % 8)
            return BAD("a multiple of 8 in 8..1024");
        return 0;
    case F_WINDOW:
        return get_u32(v, 1, RC_SGNS_MAX_WINDOW / 2, &t->window) ? BAD("1..32") : 0;
    case F_NEG:
        return get_u32(v, 1, RC_SGNS_MAX_NEG, &t->negatives) ? BAD("1..64") : 0;
    case F_EPOCHS:
        return get_u32(v, 1, 100000, &t->epochs) ? BAD("1..100000") : 0;
    case F_THREADS:
        if (get_u32(v, 1, 256, &t->threads))
            return BAD("1..256");
        c->tower.threads = t->threads;
        return 0;
    case F_SEED:
        if (get_u64(v, 0, UINT64_MAX, &t->seed))
            return BAD("an integer >= 0");
        c->tower.seed = t->seed;
        return 0;
    case F_MIN_COUNT:
        return get_u32(v, 1, UINT32_MAX, &t->min_count) ? BAD("an integer >= 1") : 0;
    case F_SUBSAMPLE:
        return get_flt(v, 0, 1, 0, &t->subsample) ? BAD("a number in [0,1]") : 0;
    case F_LR:
        return get_flt(v, 0, 10, 1, &t->lr) ? BAD("a number in (0,10]") : 0;
    case F_POWER:
        return get_flt(v, 0, 4, 1, &t->power) ? BAD("a number in (0,4]") : 0;
    case F_HARD:
        return get_flt(v, 0, 1, 0, &t->hard_share) ? BAD("a number in [0,1]") : 0;
    case F_CATE_PRIOR:
        return get_flt(v, 0, 1e6, 0, &t->cate_prior) ? BAD("a number in [0,1e6]") : 0;
    case F_TT_DIM:
        if (get_u32(v, 8, 1024, &c->tower.cfg.dim) || c->tower.cfg.dim % 8)
            return BAD("a multiple of 8 in 8..1024");
        return 0;
    case F_TT_HIDDEN:
        return get_u32(v, 1, 4096, &c->tower.cfg.hidden) ? BAD("1..4096") : 0;
    case F_TT_EPOCHS:
        return get_u32(v, 1, 100000, &c->tower.epochs) ? BAD("1..100000") : 0;
    case F_TT_BATCH:
        return get_u32(v, 1, 65536, &c->tower.batch) ? BAD("1..65536") : 0;
    case F_TT_LR:
        return get_flt(v, 0, 10, 1, &c->tower.lr) ? BAD("a number in (0,10]") : 0;
    case F_TT_EASY:
        return get_u32(v, 1, 65536, &c->tower.easy_negatives) ? BAD("1..65536") : 0;
    case F_TT_HARD:
        if (get_u32(v, 0, 1024, &c->tower.hard_negatives))
            return BAD("0..1024");
        if (c->tower.hard_negatives == 0) /* the options' "none" */
            c->tower.hard_negatives = UINT32_MAX;
        return 0;
    case F_TT_TEMP:
        return get_flt(v, 0, 10, 1, &c->tower.cfg.temperature) ? BAD("a number in (0,10]") : 0;
    case F_TEST_RATIO:
        if (get_dbl(v, 0, 1, 1, &c->test_ratio) || c->test_ratio >= 1)
            return BAD("a number in (0,1)");
        return 0;
    case F_TUNE_SECONDS:
        return get_dbl(v, 0, 1e7, 1, &c->tune_seconds) ? BAD("a number of seconds > 0") : 0;
    default:
        if (get_u64(v, 1, INT64_MAX, &u))
            return BAD("milliseconds >= 1");
        c->log.gap_ms = (int64_t)u;
        return 0;
    }
}

static const int set_bits[][2] = {
    {F_WINDOW, RC_CLI_SET_WINDOW},
    {F_NEG, RC_CLI_SET_NEGATIVES},
    {F_EPOCHS, RC_CLI_SET_EPOCHS},
    {F_LR, RC_CLI_SET_LR},
    {F_SUBSAMPLE, RC_CLI_SET_SUBSAMPLE},
    {F_POWER, RC_CLI_SET_POWER},
    {F_DIM, RC_CLI_SET_DIM},
    {F_MIN_COUNT, RC_CLI_SET_MIN_COUNT},
    {F_TEST_RATIO, RC_CLI_SET_TEST_RATIO},
    {F_CATE_PRIOR, RC_CLI_SET_CATE_PRIOR},
};

static int set_flag(rc_cli *c, const struct flag *f, const char *v, char *eb, size_t el)
{
    const char **str = NULL;
    for (size_t i = 0; i < RC_ARRAY_LEN(set_bits); i++)
        if (set_bits[i][0] == (int)f->id)
            c->set_mask |= set_bits[i][1];
    switch (f->id) {
    case F_INPUT:
        str = &c->log.path;
        break;
    case F_SEP:
        str = &c->log.sep;
        break;
    case F_USER:
        str = &c->log.col_user;
        break;
    case F_ITEM:
        str = &c->log.col_item;
        break;
    case F_TIME:
        str = &c->log.col_time;
        break;
    case F_SESSION:
        str = &c->log.col_session;
        break;
    case F_CITY:
        str = &c->log.col_city;
        break;
    case F_CATE:
        str = &c->log.col_cate;
        break;
    case F_TIME_OFFSET:
        str = &c->log.col_time_offset;
        break;
    case F_ITEM_CATES:
        str = &c->log.item_cates;
        break;
    case F_METHODS:
        str = &c->methods;
        break;
    case F_OUTPUT:
        str = &c->output;
        break;
    case F_USER_FEATURES:
        str = &c->user_features;
        break;
    case F_TT_FEATURES: {
        if (rc_cli_parse_features(v, &c->tower.cfg.features, eb, el))
            return RC_EINVAL;
        c->tower_features_set = 1;
        return 0;
    }
    case F_TT_OPT:
        if (!strcmp(v, "adam"))
            c->tower.optimizer = RC_TOWER_ADAM;
        else if (!strcmp(v, "adagrad"))
            c->tower.optimizer = RC_TOWER_ADAGRAD;
        else
            return BAD("adam or adagrad");
        return 0;
    case F_HEADER:
        c->log.header = 1;
        return 0;
    case F_GLOBAL_NEG:
        c->train.global_negatives = 1;
        return 0;
    case F_TUNE:
        c->tune = 1;
        return 0;
    case F_JSON:
        c->json = 1;
        return 0;
    case F_QUIET:
        c->log.quiet = 1;
        c->train.quiet = 1;
        c->train.progress = -1;
        c->tower.quiet = 1;
        c->tower.progress = -1;
        return 0;
    case F_FORMAT:
    case F_TIME_UNIT:
    case F_MODE:
    case F_ITEM_CATES_FMT:
        return set_enum(c, f, v, eb, el);
    default:
        return set_number(c, f, v, eb, el);
    }
    if (!*v)
        return BAD("a non-empty value");
    *str = v;
    return 0;
}

/* Common flags have ids 0..RC_ARRAY_LEN(flags), a tool's extras follow. */
struct train_parse {
    rc_cli *c;
    const rc_cli_flag *extra;
    rc_cli_extra_fn fn;
    void *ud;
};

static int on_train_opt(void *ud, const rc_cli_opt *o, const char *v, char *eb, size_t el)
{
    struct train_parse *tp = ud;
    size_t id = (size_t)o->id;
    if (id < RC_ARRAY_LEN(flags))
        return set_flag(tp->c, &flags[id], v, eb, el);
    id -= RC_ARRAY_LEN(flags);
    return tp->fn ? tp->fn(tp->ud, id, v, eb, el) : 0;
}

#define MAX_TRAIN_OPTS (RC_ARRAY_LEN(flags) + 32)

/* The option table of a train/eval tool: the tool's extras first (they may
 * shadow a common flag, as they always could), then the common flags. */
static size_t train_opts(rc_cli_opt *o, const rc_cli_flag *extra, size_t nextra)
{
    size_t n = 0;
    for (size_t i = 0; i < nextra; i++, n++)
        o[n] = (rc_cli_opt){.name = extra[i].name + 2 * (strncmp(extra[i].name, "--", 2) == 0),
                            .type = RC_CLI_CALL,
                            .arg = extra[i].arg,
                            .help = extra[i].help,
                            .id = (int)(RC_ARRAY_LEN(flags) + i)};
    for (size_t i = 0; i < RC_ARRAY_LEN(flags); i++)
        o[n++] = (rc_cli_opt){.name = flags[i].name + 2,
                              .type = RC_CLI_CALL,
                              .arg = flags[i].arg,
                              .help = flags[i].help,
                              .id = (int)i};
    return n;
}

int rc_cli_parse(rc_cli *c, int argc, char **argv, const rc_cli_flag *extra, size_t nextra,
                 rc_cli_extra_fn fn, void *ud, char *eb, size_t el)
{
    rc_cli_opt opts[MAX_TRAIN_OPTS];
    struct train_parse tp = {.c = c, .extra = extra, .fn = fn, .ud = ud};
    if (!c || (argc > 0 && !argv) || (nextra && !extra) || nextra > 32)
        return rc_err(eb, el, RC_EINVAL, "cli: bad arguments");
    rc_cli_spec s = {
        .opts = opts, .nopts = train_opts(opts, extra, nextra), .fn = on_train_opt, .ud = &tp};
    int argi, rc = rc_cli_args_parse(&s, argc, argv, &argi, eb, el);
    c->help = rc == RC_CLI_HELP;
    c->version = rc == RC_CLI_VERSION;
    return rc == RC_EINVAL ? RC_EINVAL : 0;
}

static const char train_epilog[] =
    "Sessions: per user in time order, a new one after --gap-ms of inactivity,\n"
    "or one per value of --session. Malformed rows (column count, empty id, bad\n"
    "time) are counted, the first 5 reported with line numbers, and skipped.\n"
    "\nexamples (paths relative to $RECALLD_DATA_DIR, the directory of the public\n"
    "click datasets):\n"
    "  MovieLens-100k (TSV user item rating unix-seconds, genres from u.item):\n"
    "    --input movielens-100k/u.data --format tsv --user 0 --item 1 --time 3 \\\n"
    "    --time-unit s --item-cates movielens-100k/u.item --item-cates-format movielens\n"
    "  MovieLens-1M ratings.dat: --input ratings.dat --sep :: --user 0 --item 1 --time 3\n"
    "  Diginetica (';', a date plus ms within the session; user_id is mostly NA,\n"
    "  so the session is the user):\n"
    "    --input diginetica/sample_train-item-views.csv --sep ';' --header \\\n"
    "    --session session_id --item item_id --time eventdate --time-unit iso \\\n"
    "    --time-offset timeframe --item-cates diginetica/product-categories.csv\n"
    "  JSON lines in the event schema (user_id, item_id, city_id, cate_id, ts ms):\n"
    "    --input clicks.jsonl.gz\n";

void rc_cli_usage(FILE *f, const char *prog, const char *about, const rc_cli_flag *extra,
                  size_t nextra)
{
    rc_cli_opt opts[MAX_TRAIN_OPTS];
    if (!f || nextra > 32 || (nextra && !extra))
        return;
    rc_cli_spec s = {.prog = prog ? prog : "recalld-train",
                     .synopsis = "--input FILE [options]",
                     .about = about,
                     .epilog = train_epilog,
                     .opts = opts,
                     .nopts = train_opts(opts, extra, nextra)};
    rc_cli_args_help(f, &s);
}

int rc_cli_has_method(const rc_cli *c, const char *name, int dflt)
{
    if (!c || !name)
        return 0;
    if (!c->methods)
        return dflt;
    size_t n = strlen(name);
    for (const char *p = c->methods; *p;) {
        size_t m = strcspn(p, ",");
        if (m == n && memcmp(p, name, n) == 0)
            return 1;
        p += m + (p[m] == ',');
    }
    return 0;
}
