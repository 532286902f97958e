/* cli — the command lines of recalld's six binaries.
 *
 * Part 1, the option parser every binary uses: a table of options (long name,
 * optional one-letter name, typed value with a range, or a callback), an
 * optional count of positional arguments, and a --help generated from the
 * table. -h/--help and --version are built in. Both `--name VALUE` and
 * `--name=VALUE` are accepted, `-X VALUE` and `-XVALUE` for short names; names
 * must be given in full (no abbreviations). Options end at `--` or at the
 * first positional argument. An error is one line naming the option; the
 * binary adds "try --help" (rc_cli_args does both).
 *
 * Part 2, the shared flags of recalld-train and recalld-eval (the flags
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

/* Kinds of value. Strings are borrowed from argv. Numbers are decimal and
 * checked against [min, max] (inclusive). */
typedef enum rc_cli_type {
    RC_CLI_BOOL, /* no value: *(int *)dest = 1 */
    RC_CLI_STR,  /* *(const char **)dest = value; empty refused */
    RC_CLI_U32,  /* *(uint32_t *)dest */
    RC_CLI_INT,  /* *(int *)dest */
    RC_CLI_DBL,  /* *(double *)dest, finite */
    RC_CLI_CALL  /* spec->fn(ud, opt, value): value NULL when arg is NULL */
} rc_cli_type;

/* An option: "may be repeated" is the callback's business (RC_CLI_CALL is
 * called once per occurrence; the other kinds keep the last value). */
typedef struct rc_cli_opt {
    const char *name; /* long name without the dashes: "socket" */
    char shortname;   /* 'X', or 0 */
    rc_cli_type type;
    void *dest;       /* borrowed; unused for RC_CLI_CALL */
    const char *arg;  /* value name in --help ("PATH"); NULL = takes no value */
    const char *help; /* help text; '\n' starts an indented continuation line */
    double min, max;  /* numeric range, inclusive */
    int id;           /* for the callback */
} rc_cli_opt;

/* RC_CLI_CALL: returns 0, or an RC_E* code after writing "why" into errbuf
 * (the parser prefixes the option's name). */
typedef int (*rc_cli_opt_fn)(void *ud, const rc_cli_opt *o, const char *value, char *errbuf,
                             size_t errlen);

typedef struct rc_cli_spec {
    const char *prog;     /* "recalld" */
    const char *synopsis; /* after the name in the usage line: "[options] REQUEST..." */
    const char *about;    /* paragraph after the usage line, or NULL */
    const char *epilog;   /* text after the options, or NULL */
    const rc_cli_opt *opts;
    size_t nopts;
    rc_cli_opt_fn fn; /* for RC_CLI_CALL options */
    void *ud;
    int min_args, max_args; /* positional arguments (0, 0: none) */
} rc_cli_spec;

/* rc_cli_args_parse results besides 0 and RC_EINVAL. */
enum { RC_CLI_HELP = 1, RC_CLI_VERSION = 2 };

/* Parses argv[1..argc) against s. Returns 0 with *argi = index of the first
 * positional argument (argc when none), RC_CLI_HELP or RC_CLI_VERSION at once
 * when one of those is given, or RC_EINVAL with "--name: why" in errbuf. */
int rc_cli_args_parse(const rc_cli_spec *s, int argc, char **argv, int *argi, char *errbuf,
                      size_t errlen);

/* Writes the generated help: usage line, about, the options (with -h, --help
 * and --version), epilog. */
void rc_cli_args_help(FILE *f, const rc_cli_spec *s);

/* A binary's whole argument step: parses; on --help prints the help to stdout,
 * on --version "PROG VERSION" to stdout, on an error one line
 * "PROG: why (try 'PROG --help')" to stderr. Returns -1 to go on (with *argi
 * as rc_cli_args_parse), else the exit status: 0 (help, version) or 2. */
int rc_cli_args(const rc_cli_spec *s, int argc, char **argv, int *argi);

/* Prints "PROG: MESSAGE (try 'PROG --help')" to stderr and returns 2: for usage
 * errors found after parsing (a missing required option). */
int rc_cli_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef struct rc_cli {
    /* --input FILE (- = stdin, .gz), --format jsonl|csv|tsv, --sep STR,
     * --header, --user/--item/--time/--session/--city/--cate C (0-based index
     * or header name), --time-unit s|ms|iso, --time-offset C, --gap-ms N,
     * --item-cates FILE, --item-cates-format csv|movielens, --quiet. */
    rc_clicklog_opts log;
    /* --mode skipgram|cbow, --dim, --window, --negatives, --epochs, --threads,
     * --seed, --min-count, --subsample, --lr, --power, --hard-share, --cate-prior,
     * --global-negatives, --quiet. */
    rc_train_opts train;
    double test_ratio;   /* --test-ratio F, in (0,1), default 0.2 */
    const char *methods; /* --methods LIST, comma-separated as given; NULL = tool default */
    int tune;            /* --tune */
    double tune_seconds; /* --tune-seconds N (> 0), default 60 */
    const char *output;  /* --output FILE, NULL = none */
    int json;            /* --json */
    int help;            /* -h / --help was given: print usage, exit 0 */
    int version;         /* --version was given: print the version, exit 0 */
    int set_mask;        /* which of the RC_CLI_SET_* flags were given explicitly */
    /* The two-tower model (tower.h): --tower-dim, --tower-hidden,
     * --tower-epochs, --tower-batch, --tower-lr, --optimizer adam|adagrad,
     * --easy-negatives, --hard-negatives (0 = none), --temperature,
     * --features all|none|LIST (tags,device,stats,attn); threads, seed and
     * progress follow --threads, --seed, --quiet. */
    rc_tower_train_opts tower;
    int tower_features_set;    /* --features was given (features 0 is "none") */
    const char *user_features; /* --user-features FILE (ufeat.h), NULL = none */
} rc_cli;

/* Parses a --features value (all, none, or a comma list of tags, device,
 * stats, attn) into RC_TOWER_F_* bits. Returns 0 or RC_EINVAL (errbuf names the
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
    RC_CLI_SET_TEST_RATIO = 1 << 9,
    RC_CLI_SET_CATE_PRIOR = 1 << 10
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

/* Parses argv[1..argc) into c (rc_cli_init first) with rc_cli_args_parse.
 * extra[0..nextra) with fn/ud (may be NULL/0) take tool-specific flags (at most
 * 32). Positional arguments are refused. -h/--help and --version set c->help
 * and c->version and stop. Returns 0 or RC_EINVAL with "--flag: why" in
 * errbuf. */
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
