/* recalld-train — bootstrap a model from click logs: load (CSV/TSV/JSONL,
 * gzip, stdin), cut sessions, batch SGNS (skip-gram or CBOW, Hogwild threads),
 * write the model file that `recalld --model FILE` loads.
 *
 * Exit status: 0 ok, 1 failure (load, train, write), 2 usage error, 3 the
 * --gate-hours gate kept the live table (nothing written). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/checkpoint.h"
#include "recalld/cli.h"
#include "recalld/config.h"
#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/eval.h"
#include "recalld/model.h"
#include "recalld/tower.h"
#include "recalld/train.h"
#include "recalld/tune.h"
#include "recalld/ufeat.h"

static const char about[] =
    "Trains item embeddings (word2vec SGNS over sessions) from a click log and\n"
    "writes them with --output FILE, the model `recalld --model FILE` loads at\n"
    "start. Negatives come from the same city when the log has --city, with\n"
    "--hard-share of them hard (same city, other category) when it has\n"
    "categories (--cate or --item-cates). A progress line (clicks/s, loss, ETA)\n"
    "is shown on a terminal; a summary line is always printed to stderr.\n"
    "--model two-tower: then trains the two-tower model on the same sessions on\n"
    "top of that table (word2vec first, then the towers: user features from the\n"
    "log's JSON events or --user-features FILE) and writes it with --tower-output\n"
    "(default OUTPUT.tower), which `recalld --model FILE` (or tower.model) serves.\n"
    "--init FILE: a rebuild that goes on from a live table: every item FILE\n"
    "holds (a model file, or a checkpoint of recalld's data_dir) starts from\n"
    "FILE's input and output vectors instead of random ones; items new to the\n"
    "log start random.\n"
    "--gate-hours H (with --init or --champion): a champion/challenger gate\n"
    "before a daily install. The rebuild trains on the sessions that ended H\n"
    "hours before the log's last click; it and the champion's table (--champion\n"
    "FILE, else --init's FILE: the live table at that moment) are both scored,\n"
    "frozen, on the sessions of those last H hours (HR@50 of each next click,\n"
    "the daemon's user query and index). --output is written only when the\n"
    "rebuild's HR@50 is >= --gate-ratio x the champion's and it leads by >=\n"
    "--gate-z standard errors on the same clicks; else nothing is written and\n"
    "the exit status is 3. A window without a prediction is not judged: the\n"
    "rebuild of the whole log is written. --champion without --init judges a\n"
    "rebuild from random vectors (installed with recallctl replace-model).";

enum { X_MODEL, X_TOWER_OUTPUT, X_INIT, X_GATE_HOURS, X_GATE_RATIO, X_GATE_Z, X_CHAMPION };

static const rc_cli_flag extra[] = {
    {"--model", "M", "sgns (the item table only; --mode picks skipgram/cbow) | two-tower"},
    {"--tower-output", "FILE", "two-tower model file (default: OUTPUT.tower)"},
    {"--init", "FILE", "start the items FILE holds from its vectors (model file or checkpoint)"},
    {"--gate-hours", "H",
     "with --init: judge the rebuild against FILE on the log's last H hours, write it only if "
     "it wins, (0, 8784]"},
    {"--gate-ratio", "R", "--gate-hours: the rebuild must reach R x FILE's HR@50, [0.5, 2] (1)"},
    {"--gate-z", "Z",
     "--gate-hours: and lead FILE by >= Z standard errors on the same predictions (paired), "
     "[-10, 10] (0)"},
    {"--champion", "FILE",
     "--gate-hours: judge against FILE (model file or checkpoint) instead of --init's"},
};

struct train_flags {
    int two_tower;
    const char *tower_output;
    const char *init, *champion;
    double gate_hours, gate_ratio, gate_z;
    int gate_z_set;
};

static int on_extra(void *ud, size_t i, const char *v, char *eb, size_t el)
{
    struct train_flags *f = ud;
    char *end;
    if (i == X_GATE_HOURS || i == X_GATE_RATIO || i == X_GATE_Z) {
        double x = strtod(v, &end);
        int ok = i == X_GATE_HOURS   ? x > 0 && x <= 8784
                 : i == X_GATE_RATIO ? x >= 0.5 && x <= 2
                                     : x >= -10 && x <= 10;
        if (!*v || *end || !ok)
            return rc_err(eb, el, RC_EINVAL,
                          i == X_GATE_HOURS   ? "expected a number of hours in (0, 8784]"
                          : i == X_GATE_RATIO ? "expected a number in [0.5, 2]"
                                              : "expected a number in [-10, 10]");
        *(i == X_GATE_HOURS ? &f->gate_hours : i == X_GATE_RATIO ? &f->gate_ratio : &f->gate_z) = x;
        f->gate_z_set |= i == X_GATE_Z;
        return 0;
    }
    if (i == X_TOWER_OUTPUT || i == X_INIT || i == X_CHAMPION) {
        if (!*v)
            return rc_err(eb, el, RC_EINVAL, "expected a file name");
        *(i == X_INIT ? &f->init : i == X_CHAMPION ? &f->champion : &f->tower_output) = v;
        return 0;
    }
    if (!strcmp(v, "two-tower") || !strcmp(v, "two_tower") || !strcmp(v, "tower"))
        f->two_tower = 1;
    else if (strcmp(v, "sgns") != 0)
        return rc_err(eb, el, RC_EINVAL, "expected sgns or two-tower");
    return 0;
}

/* --init FILE: a model file (RCMODEL1) or a checkpoint (RCCKPT01), told
 * apart by their magic. dim: the training's (0 = 64); set: whether --dim was
 * given (else the file's dimension is taken). */
static int load_init(const char *what, const char *path, uint32_t *dim, int set, rc_table **out,
                     char *err, size_t errlen)
{
    char magic[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return rc_err(err, errlen, RC_ENOENT, "%s %s: %s", what, path, strerror(errno));
    size_t got = fread(magic, 1, sizeof magic, f);
    fclose(f);
    int rc;
    if (got == 8 && !memcmp(magic, "RCCKPT01", 8)) {
        rc_checkpoint_meta meta;
        rc = rc_checkpoint_load(path, NULL, out, &meta, err, errlen);
        if (!rc)
            rc_checkpoint_meta_free(&meta);
    } else if (got == 8 && !memcmp(magic, "RCMODEL1", 8)) {
        rc = rc_model_load(path, NULL, out, err, errlen);
    } else {
        return rc_err(err, errlen, RC_ECORRUPT,
                      "%s %s: neither a model file nor a checkpoint (bad magic)", what, path);
    }
    if (rc)
        return rc;
    uint32_t want = *dim ? *dim : 64, have = rc_table_dim(*out);
    if (set && want != have) {
        rc_table_destroy(*out);
        *out = NULL;
        return rc_err(err, errlen, RC_EINVAL, "%s %s: dimension %u, --dim %u", what, path, have,
                      want);
    }
    *dim = have;
    return 0;
}

/* Rows of t whose item init holds: the items that started from it. */
static uint32_t init_matched(const rc_table *t, const rc_table *init)
{
    uint32_t n = 0, row;
    for (uint32_t r = 0; r < rc_table_size(t); r++) {
        size_t len;
        const char *id = rc_table_item_id(t, r, &len);
        n += id && rc_table_find(init, id, len, &row) == 0;
    }
    return n;
}

/* The --tune choice, as recalld-eval reports it in a method's "tuned". */
static json_t *tuned_json(const rc_tune_result *t)
{
    const rc_train_opts *o = &t->best;
    return json_pack("{s:I,s:I,s:I,s:f,s:I,s:f,s:f,s:f,s:f,s:I,s:f}", "dim",
                     (json_int_t)(o->dim ? o->dim : 64), "window", (json_int_t)o->window,
                     "negatives", (json_int_t)o->negatives, "power", (double)o->power, "epochs",
                     (json_int_t)o->epochs, "subsample", (double)o->subsample, "lr", (double)o->lr,
                     "cate_prior", (double)o->cate_prior, "validation_hr@50", t->hr50, "trials",
                     (json_int_t)t->trials, "seconds", t->seconds);
}

/* What the two-tower part did, for the JSON. */
struct tower_run {
    const rc_tower_train_opts *opts;
    rc_tower_train_result res;
    uint64_t users_with_device, users_with_tags;
    const char *output;
    size_t params;
};

static json_t *tower_json(const struct tower_run *tr)
{
    return json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:I,s:b,s:I,s:I,s:s}", "features",
                     (json_int_t)tr->opts->cfg.features, "examples", (json_int_t)tr->res.examples,
                     "params", (json_int_t)tr->params, "first_loss", tr->res.first_loss, "loss",
                     tr->res.loss, "seconds", tr->res.seconds, "threads",
                     (json_int_t)tr->res.threads, "stopped", tr->res.stopped, "users_with_device",
                     (json_int_t)tr->users_with_device, "users_with_tags",
                     (json_int_t)tr->users_with_tags, "output", tr->output);
}

/* What --init did, for the JSON. */
struct init_run {
    const char *path;
    uint32_t items, matched;
};

/* What --gate-hours did, for the JSON and the exit status. */
struct gate_run {
    const char *champion; /* the file judged against */
    double hours, ratio, min_z;
    int judged, install;
    size_t predictions;
    double init_hr50, rebuild_hr50, z;
};

static void print_json(const rc_clicklog *log, const rc_train_opts *o, const rc_train_result *r,
                       const char *output, const rc_tune_result *tuned, const struct tower_run *tr,
                       const struct init_run *ir, const struct gate_run *gr)
{
    json_t *j = json_pack(
        "{s:{s:I,s:I,s:I,s:I,s:I},s:{s:s,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:I,s:b},s:s?}", "dataset",
        "events", (json_int_t)log->n, "users", (json_int_t)rc_dict_size(log->users), "items",
        (json_int_t)rc_dict_size(log->items), "sessions", (json_int_t)log->nsessions, "skipped",
        (json_int_t)log->skipped, "train", "mode", o->mode == RC_SGNS_CBOW ? "cbow" : "skipgram",
        "items", (json_int_t)r->items, "sessions", (json_int_t)r->sessions, "clicks",
        (json_int_t)r->clicks, "pairs", (json_int_t)r->pairs, "loss", r->loss, "seconds",
        r->seconds, "clicks_per_s", r->clicks_per_s, "cpu_seconds", r->cpu_seconds, "threads",
        (json_int_t)r->threads, "stopped", r->stopped, "output", output);
    if (j && tuned)
        json_object_set_new(json_object_get(j, "train"), "tuned", tuned_json(tuned));
    if (j && tr)
        json_object_set_new(j, "tower", tower_json(tr));
    if (j && ir->path)
        json_object_set_new(json_object_get(j, "train"), "init",
                            json_pack("{s:s,s:I,s:I}", "path", ir->path, "items",
                                      (json_int_t)ir->items, "matched", (json_int_t)ir->matched));
    if (j && gr->hours > 0)
        json_object_set_new(j, "gate",
                            json_pack("{s:s,s:f,s:f,s:f,s:b,s:I,s:f,s:f,s:f,s:f,s:b}", "champion",
                                      gr->champion, "hours", gr->hours, "ratio", gr->ratio, "min_z",
                                      gr->min_z, "judged", gr->judged, "predictions",
                                      (json_int_t)gr->predictions, "champion_hr@50", gr->init_hr50,
                                      "init_hr@50", gr->init_hr50, "rebuild_hr@50",
                                      gr->rebuild_hr50, "z", gr->z, "install", gr->install));
    if (j) {
        json_dumpf(j, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(j);
    }
}

/* --gate-hours: the window is the log's last gr->hours; the rebuild trains
 * on the sessions that ended before it (cli's settings: from --init's table
 * or random), it and champ (the live table) are scored on it. *t gets the rebuild. A window without
 * a training session or a prediction is not judged: the rebuild then trains on the whole log, as
 * without the gate, and is written. */
static int gate(const rc_cli *cli, const rc_clicklog *log, const rc_table *champ,
                struct gate_run *gr, rc_table **t, rc_train_result *res, char *err, size_t errlen)
{
    int64_t last = INT64_MIN;
    rc_eval_split *g = NULL;
    for (size_t i = 0; i < log->n; i++)
        last = RC_MAX(last, log->recs[i].ts_ms);
    int rc = rc_eval_gate_window(log, NULL, last + 1, gr->hours, &g, err, errlen);
    if (rc == 1) {
        if (!cli->log.quiet)
            fprintf(stderr,
                    "recalld-train: gate: no session to judge on in the last %g h: not judged\n",
                    gr->hours);
        gr->install = 1;
        return rc_train_run(&cli->train, log, NULL, t, res, err, errlen);
    }
    if (rc)
        return rc;
    rc_eval_env env = {.log = log, .quiet = 1};
    rc_eval_gate_cmp c;
    gr->judged = 1;
    gr->predictions = g->npos;
    if (!(rc = rc_train_run(&cli->train, log, g->train_mask, t, res, err, errlen)) &&
        !(rc = rc_eval_gate_compare(&env, g, champ, NULL, *t, gr->ratio, gr->min_z, &c, err,
                                    errlen))) {
        gr->init_hr50 = c.live_hr50;
        gr->rebuild_hr50 = c.cand_hr50;
        gr->z = c.z;
        gr->install = c.install;
        if (!cli->log.quiet)
            fprintf(stderr,
                    "recalld-train: gate: %zu predictions in the last %g h: champion %.4f, "
                    "rebuild %.4f (x%.3f, z %+.2f): %s\n",
                    g->npos, gr->hours, gr->init_hr50, gr->rebuild_hr50,
                    gr->init_hr50 > 0 ? gr->rebuild_hr50 / gr->init_hr50 : 0, gr->z,
                    gr->install ? "install the rebuild" : "keep the live table (nothing written)");
    }
    rc_eval_split_destroy(g);
    return rc;
}

/* --tune: replaces the searched settings of cli->train by the chosen ones
 * (the flags given by hand stay fixed); the choice goes to stderr. */
static int tune(rc_cli *cli, const rc_clicklog *log, rc_tune_result *r, char *err, size_t errlen)
{
    rc_config dc; /* validation runs rank as the daemon does by default */
    rc_config_defaults(&dc);
    rc_tune_opts to = {.seconds = cli->tune_seconds,
                       .valid_ratio = cli->test_ratio,
                       .fixed_mask = cli->set_mask,
                       .pop_weight = dc.popularity_weight,
                       .quiet = cli->log.quiet};
    int rc = rc_tune_run(&to, &cli->train, log, NULL, NULL, r, err, errlen);
    if (!rc)
        cli->train = r->best;
    return rc;
}

/* The towers on top of table t, trained on every session of the log, saved
 * to tr->output. */
static int train_towers(const rc_cli *cli, const rc_clicklog *log, const rc_table *t,
                        struct tower_run *tr, char *err, size_t errlen)
{
    rc_ufeat *f = NULL;
    uint32_t *rows = malloc(((size_t)rc_dict_size(log->items) + 1) * sizeof *rows);
    rc_tower_history *h = NULL;
    rc_tower_model *m = NULL;
    uint64_t unknown = 0;
    int rc;
    if (!rows || rc_ufeat_from_log(log, &f)) {
        rc = rc_err(err, errlen, RC_ENOMEM, "two-tower: out of memory");
        goto out;
    }
    if (cli->user_features &&
        (rc = rc_ufeat_load_file(f, log, cli->user_features, &unknown, err, errlen)))
        goto out;
    if (!cli->log.quiet)
        fprintf(stderr,
                "recalld-train: user features: %llu users with a device, %llu with tags%s\n",
                (unsigned long long)f->users_with_device, (unsigned long long)f->users_with_tags,
                unknown ? " (file users not in the log ignored)" : "");
    rc_train_item_rows(log, t, rows);
    if ((rc = rc_tower_history_create(log, t, rows, f, &h))) {
        rc_err(err, errlen, rc, "two-tower: history: %s", rc_strerror(rc));
        goto out;
    }
    if ((rc = rc_tower_train(tr->opts, h, NULL, &m, &tr->res, err, errlen)) ||
        (rc = rc_tower_save(m, tr->output, err, errlen)))
        goto out;
    tr->params = rc_tower_params(m);
    if (!cli->log.quiet)
        fprintf(stderr, "recalld-train: wrote %s (two-tower, dim %u, %zu parameters)\n", tr->output,
                rc_tower_config_of(m)->dim, tr->params);
out:
    rc_tower_destroy(m);
    rc_tower_history_destroy(h);
    free(rows);
    if (f) {
        tr->users_with_device = f->users_with_device;
        tr->users_with_tags = f->users_with_tags;
    }
    rc_ufeat_free(f);
    return rc;
}

int main(int argc, char **argv)
{
    char err[512], tower_path[4096];
    rc_cli cli;
    struct train_flags tf = {0};
    rc_cli_init(&cli);
    if (rc_cli_parse(&cli, argc, argv, extra, RC_ARRAY_LEN(extra), on_extra, &tf, err, sizeof err))
        return rc_cli_usage_error("recalld-train", "%s", err);
    if (cli.help) {
        rc_cli_usage(stdout, "recalld-train", about, extra, RC_ARRAY_LEN(extra));
        return 0;
    }
    if (cli.version) {
        printf("recalld-train %s\n", RC_VERSION);
        return 0;
    }
    if (!cli.log.path || !cli.output)
        return rc_cli_usage_error("recalld-train", "--input and --output are required");
    if (tf.tower_output && !tf.two_tower)
        return rc_cli_usage_error("recalld-train", "--tower-output needs --model two-tower");
    if ((tf.gate_hours > 0 || tf.gate_ratio > 0 || tf.gate_z_set || tf.champion) &&
        (!(tf.init || tf.champion) || tf.two_tower))
        return rc_cli_usage_error("recalld-train",
                                  "--gate-hours and --gate-ratio need --init or --champion and "
                                  "--model sgns (the live table to judge against)");
    if (tf.champion && !(tf.gate_hours > 0))
        return rc_cli_usage_error("recalld-train", "--champion needs --gate-hours");
    snprintf(tower_path, sizeof tower_path, "%s.tower", cli.output);
    rc_tower_train_opts topts = cli.tower;
    if (!cli.tower_features_set)
        topts.cfg.features = RC_TOWER_F_ALL;
    struct tower_run tr = {.opts = &topts,
                           .output = tf.tower_output ? tf.tower_output : tower_path};
    rc_clicklog *log = NULL;
    rc_table *t = NULL, *init = NULL, *champ = NULL;
    rc_train_result res;
    rc_tune_result tuned;
    struct init_run ir = {.path = tf.init};
    struct gate_run gr = {.champion = tf.champion ? tf.champion : tf.init,
                          .hours = tf.gate_hours,
                          .ratio = tf.gate_ratio > 0 ? tf.gate_ratio : 1,
                          .min_z = tf.gate_z};
    if ((tf.gate_ratio > 0 || tf.gate_z_set) && !(tf.gate_hours > 0))
        return rc_cli_usage_error("recalld-train", "--gate-ratio and --gate-z need --gate-hours");
    int rc = 0;
    if (tf.init) { /* before the log: a wrong file fails at once */
        rc = load_init("--init", tf.init, &cli.train.dim, (cli.set_mask & RC_CLI_SET_DIM) != 0,
                       &init, err, sizeof err);
        cli.set_mask |= RC_CLI_SET_DIM; /* --tune keeps the file's dimension */
    }
    if (!rc && tf.champion) { /* the same dimension as --init's file and --dim */
        rc = load_init("--champion", tf.champion, &cli.train.dim,
                       (cli.set_mask & RC_CLI_SET_DIM) != 0, &champ, err, sizeof err);
        cli.set_mask |= RC_CLI_SET_DIM;
    }
    if (!rc)
        rc = rc_clicklog_load(&cli.log, &log, err, sizeof err);
    if (!rc && cli.tune) /* settings chosen on the last --test-ratio of the log's time */
        rc = tune(&cli, log, &tuned, err, sizeof err);
    cli.train.init = init; /* the rebuild only: --tune compares settings from random starts */
    if (!rc && gr.hours > 0)
        rc = gate(&cli, log, champ ? champ : init, &gr, &t, &res, err, sizeof err);
    else if (!rc)
        rc = rc_train_run(&cli.train, log, NULL, &t, &res, err, sizeof err);
    if (!rc && init) {
        ir.items = rc_table_size(init);
        ir.matched = init_matched(t, init);
        if (!cli.log.quiet)
            fprintf(stderr, "recalld-train: %u of %u items started from %s\n", ir.matched,
                    rc_table_size(t), tf.init);
    }
    int kept = !rc && gr.hours > 0 && !gr.install; /* the gate said no: nothing written */
    if (!rc && !kept)
        rc = rc_model_save(t, cli.output, err, sizeof err);
    if (!rc && !kept && !cli.log.quiet)
        fprintf(stderr, "recalld-train: wrote %s (%u items, dim %u)\n", cli.output,
                rc_table_size(t), rc_table_dim(t));
    /* The paper's order: word2vec first, then the towers on top of it. */
    if (!rc && tf.two_tower)
        rc = train_towers(&cli, log, t, &tr, err, sizeof err);
    if (rc)
        fprintf(stderr, "recalld-train: %s\n", err);
    else if (cli.json)
        print_json(log, &cli.train, &res, kept ? NULL : cli.output, cli.tune ? &tuned : NULL,
                   tf.two_tower ? &tr : NULL, &ir, &gr);
    rc_table_destroy(t);
    rc_table_destroy(init);
    rc_table_destroy(champ);
    rc_clicklog_free(log);
    return rc ? 1 : kept ? 3 : 0;
}
