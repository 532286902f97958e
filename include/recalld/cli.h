/* cli — the command line shared by recalld-train and recalld-eval (the flags
 * are part of the interface: scripts and CI call them). Parses argv into a
 * plain struct; a tool adds its own flags through an extra table and a
 * callback. An unknown flag, a missing or malformed value is an error that
 * names the flag; the tool then prints rc_cli_usage and exits 2.
 *
 * Both `--flag VALUE` and `--flag=VALUE` are accepted. Strings in the struct
 * point into argv (borrowed, valid while argv is). Thread: any (no globals). */
#ifndef RECALLD_CLI_H
#define RECALLD_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "recalld/clicklog.h"
#include "recalld/tower.h"
#include "recalld/train.h"

typedef struct rc_cli {
    /* --input FILE (- = stdin, .gz), --format jsonl|csv|tsv, --sep STR,
     * --header, --user/--item/--time/--session/--city/--cate C (0-based index
     * or header name), --time-unit s|ms|iso, --time-offset C, --gap-ms N,
     * --item-cates FILE, --item-cates-format csv|movielens, --quiet. */
    rc_clicklog_opts log;
    /* --mode skipgram|cbow, --dim, --window, --negatives, --epochs, --threads,
     * --seed, --min-count, --subsample, --lr, --power, --hard-share,
     * --global-negatives, --quiet. */
    rc_train_opts train;
    double test_ratio;   /* --test-ratio F, in (0,1), default 0.2 */
    const char *methods; /* --methods LIST, comma-separated as given; NULL = tool default */
    int tune;            /* --tune */
    double tune_seconds; /* --tune-seconds N (> 0), default 60 */
    const char *output;  /* --output FILE, NULL = none */
    int json;            /* --json */
    int help;            /* -h / --help was given: print usage, exit 0 */
    int set_mask;        /* which of the RC_CLI_SET_* flags were given explicitly */
    /* The two-tower model (tower.h): --tower-dim, --tower-hidden,
     * --tower-epochs, --tower-batch, --tower-lr, --optimizer adam|adagrad,
     * --easy-negatives, --hard-negatives (0 = none), --temperature,
     * --features all|none|LIST (tags,device,stats,attn); threads, seed and
     * progress follow --threads, --seed, --quiet. */
    rc_tt_train_opts tower;
    int tower_features_set;    /* --features was given (features 0 is "none") */
    const char *user_features; /* --user-features FILE (ufeat.h), NULL = none */
} rc_cli;

/* Parses a --features value (all, none, or a comma list of tags, device,
 * stats, attn) into RC_TT_F_* bits. Returns 0 or RC_EINVAL (errbuf names the
 * unknown word). */
int rc_cli_parse_features(const char *v, unsigned *out, char *errbuf, size_t errlen);

/* Bits of rc_cli.set_mask: lets --tune keep what the user fixed by hand. */
enum {
    RC_CLI_SET_WINDOW = 1 << 0,
    RC_CLI_SET_NEGATIVES = 1 << 1,
    RC_CLI_SET_EPOCHS = 1 << 2,
    RC_CLI_SET_LR = 1 << 3,
    RC_CLI_SET_SUBSAMPLE = 1 << 4,
    RC_CLI_SET_POWER = 1 << 5,
    RC_CLI_SET_MODE = 1 << 6,
    RC_CLI_SET_DIM = 1 << 7,
    RC_CLI_SET_MIN_COUNT = 1 << 8,
    RC_CLI_SET_TEST_RATIO = 1 << 9
};

/* A tool-specific flag. */
typedef struct rc_cli_flag {
    const char *name; /* "--k" */
    const char *arg;  /* value name for the usage ("N"); NULL = boolean flag */
    const char *help; /* one line */
} rc_cli_flag;

/* Called for extra[index] with its value (NULL for a boolean flag). Returns 0,
 * or an RC_E* code after writing "why" into errbuf (the parser prefixes the
 * flag's name). */
typedef int (*rc_cli_extra_fn)(void *ud, size_t index, const char *value, char *errbuf,
                               size_t errlen);

/* Fills the defaults (test_ratio 0.2, tune_seconds 60, everything else 0). */
void rc_cli_init(rc_cli *c);

/* Parses argv[1..argc) into c (rc_cli_init first). extra[0..nextra) with fn/ud
 * (may be NULL/0) take tool-specific flags. Positional arguments are refused.
 * Returns 0 or RC_EINVAL with "--flag: why" in errbuf. */
int rc_cli_parse(rc_cli *c, int argc, char **argv, const rc_cli_flag *extra, size_t nextra,
                 rc_cli_extra_fn fn, void *ud, char *errbuf, size_t errlen);

/* Prints "usage: PROG [flags]", the tool's one-paragraph `about`, the common
 * flags with their defaults, the extra ones, and loading examples for the
 * public click datasets, paths relative to $RECALLD_DATA_DIR (MovieLens u.data,
 * Diginetica). */
void rc_cli_usage(FILE *f, const char *prog, const char *about, const rc_cli_flag *extra,
                  size_t nextra);

/* 1 when `name` is one of the comma-separated --methods (or methods is NULL
 * and dflt is 1), else 0. */
int rc_cli_has_method(const rc_cli *c, const char *name, int dflt);

#endif
