/* recalld-train — bootstrap a model from click logs: load (CSV/TSV/JSONL,
 * gzip, stdin), cut sessions, batch SGNS (skip-gram or CBOW, Hogwild threads),
 * write the model file that `recalld --model FILE` loads.
 *
 * Exit status: 0 ok, 1 failure (load, train, write), 2 usage error. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "recalld/cli.h"
#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/model.h"
#include "recalld/train.h"
#include "recalld/tune.h"

static const char about[] =
    "Trains item embeddings (word2vec SGNS over sessions) from a click log and\n"
    "writes them with --output FILE, the model `recalld --model FILE` loads at\n"
    "start. Negatives come from the same city when the log has --city, with\n"
    "--hard-share of them hard (same city, other category) when it has\n"
    "categories (--cate or --item-cates). A progress line (clicks/s, loss, ETA)\n"
    "is shown on a terminal; a summary line is always printed to stderr.";

/* The --tune choice, as recalld-eval reports it in a method's "tuned". */
static json_t *tuned_json(const rc_tune_result *t)
{
    const rc_train_opts *o = &t->best;
    return json_pack("{s:I,s:I,s:I,s:f,s:I,s:f,s:f,s:f,s:I,s:f}", "dim",
                     (json_int_t)(o->dim ? o->dim : 64), "window", (json_int_t)o->window,
                     "negatives", (json_int_t)o->negatives, "power", (double)o->power, "epochs",
                     (json_int_t)o->epochs, "subsample", (double)o->subsample, "lr",
                     (double)o->lr, "validation_hr@50", t->hr50, "trials", (json_int_t)t->trials,
                     "seconds", t->seconds);
}

static void print_json(const rc_clicklog *log, const rc_train_opts *o, const rc_train_result *r,
                       const char *output, const rc_tune_result *tuned)
{
    json_t *j = json_pack(
        "{s:{s:I,s:I,s:I,s:I,s:I},s:{s:s,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:I,s:b},s:s}",
        "dataset", "events", (json_int_t)log->n, "users", (json_int_t)rc_dict_size(log->users),
        "items", (json_int_t)rc_dict_size(log->items), "sessions", (json_int_t)log->nsessions,
        "skipped", (json_int_t)log->skipped, "train", "mode",
        o->mode == RC_SGNS_CBOW ? "cbow" : "skipgram", "items", (json_int_t)r->items, "sessions",
        (json_int_t)r->sessions, "clicks", (json_int_t)r->clicks, "pairs", (json_int_t)r->pairs,
        "loss", r->loss, "seconds", r->seconds, "clicks_per_s", r->clicks_per_s, "cpu_seconds",
        r->cpu_seconds, "threads", (json_int_t)r->threads, "stopped", r->stopped, "output",
        output);
    if (j && tuned)
        json_object_set_new(json_object_get(j, "train"), "tuned", tuned_json(tuned));
    if (j) {
        json_dumpf(j, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(j);
    }
}

/* --tune: replaces the searched settings of cli->train by the chosen ones
 * (the flags given by hand stay fixed); the choice goes to stderr. */
static int tune(rc_cli *cli, const rc_clicklog *log, rc_tune_result *r, char *err,
                size_t errlen)
{
    rc_tune_opts to = {.seconds = cli->tune_seconds, .valid_ratio = cli->test_ratio,
                       .fixed_mask = cli->set_mask, .quiet = cli->log.quiet};
    int rc = rc_tune_run(&to, &cli->train, log, NULL, NULL, r, err, errlen);
    if (!rc)
        cli->train = r->best;
    return rc;
}

int main(int argc, char **argv)
{
    char err[512];
    rc_cli cli;
    rc_cli_init(&cli);
    if (rc_cli_parse(&cli, argc, argv, NULL, 0, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "recalld-train: %s\n\n", err);
        rc_cli_usage(stderr, "recalld-train", about, NULL, 0);
        return 2;
    }
    if (cli.help) {
        rc_cli_usage(stdout, "recalld-train", about, NULL, 0);
        return 0;
    }
    if (!cli.log.path || !cli.output) {
        fprintf(stderr, "recalld-train: --input and --output are required\n\n");
        rc_cli_usage(stderr, "recalld-train", about, NULL, 0);
        return 2;
    }
    rc_clicklog *log = NULL;
    rc_table *t = NULL;
    rc_train_result res;
    rc_tune_result tuned;
    int rc = rc_clicklog_load(&cli.log, &log, err, sizeof err);
    if (!rc && cli.tune) /* settings chosen on the last --test-ratio of the log's time */
        rc = tune(&cli, log, &tuned, err, sizeof err);
    if (!rc)
        rc = rc_train_run(&cli.train, log, NULL, &t, &res, err, sizeof err);
    if (!rc)
        rc = rc_model_save(t, cli.output, err, sizeof err);
    if (rc) {
        fprintf(stderr, "recalld-train: %s\n", err);
    } else {
        if (cli.json)
            print_json(log, &cli.train, &res, cli.output, cli.tune ? &tuned : NULL);
        if (!cli.log.quiet)
            fprintf(stderr, "recalld-train: wrote %s (%u items, dim %u)\n", cli.output,
                    rc_table_size(t), rc_table_dim(t));
    }
    rc_table_destroy(t);
    rc_clicklog_free(log);
    return rc ? 1 : 0;
}
