/* tune — hyperparameter search for the batch trainer (--tune of recalld-train
 * and recalld-eval). Word2vec's quality on click data depends heavily on
 * settings that differ per dataset, so they are chosen on held-out data:
 *
 *  - a validation split is carved from the sessions given (recalld-eval: its
 *    training sessions; recalld-train: the whole log) with the evaluation
 *    protocol of eval.h: the last valid_ratio of their time is the validation
 *    part, the model trains on the sessions that end before it;
 *  - the objective is HR@50 on that validation split, measured with the same
 *    recall code as the server (index, over-fetch, re-rank, exclusion);
 *  - the search: the base settings first, then random settings (a grid per
 *    parameter: window, negatives, negative-sampling exponent, epochs,
 *    subsampling, learning rate; dim, mode, min-count and every parameter in
 *    fixed_mask stay as given), one half of them drawn near the best so far,
 *    for about 60% of the budget; then successive halving: the best third is
 *    trained again with another seed and ranked by the mean, and again, until
 *    one is left or the budget is spent. A single trial is capped at a share
 *    of the budget (its training stops early and it is scored as it is);
 *  - on a log with categories, unless fixed_mask has RC_CLI_SET_CATE_PRIOR:
 *    15% of the budget is kept for a last stage, the chosen settings trained
 *    again with the category prior (train.h cate_prior) 3, 1 and 10, each
 *    with the seeds the chosen ones ran with, as often as the time left
 *    allows (at most as often as they ran); each is judged against the
 *    chosen runs of the same seeds (the chosen settings stay on a tie; a
 *    value with no time left is not tried, and a line says so).
 *
 * Thread: any; trains with opts->threads threads. Not deterministic (wall
 * time decides how many settings are tried). */
#ifndef RECALLD_TUNE_H
#define RECALLD_TUNE_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/clicklog.h"
#include "recalld/eval.h"
#include "recalld/train.h"

/* Zero = default for every field. */
typedef struct rc_tune_opts {
    double seconds;             /* time budget, 0 = 60 */
    double valid_ratio;         /* validation share of the time range, 0 = 0.2 */
    int fixed_mask;             /* RC_CLI_SET_* bits: parameters kept as in base */
    uint64_t seed;              /* of the search, 0 = base seed */
    float overfetch;            /* recall over-fetch, 0 = 2 */
    const rc_index_opts *index; /* the validation runs' index options, NULL = defaults */
    float pop_weight;           /* the validation runs' recall.popularity_weight (0 = none) */
    int quiet;                  /* 0: one line per trial and the choice on stderr */
} rc_tune_opts;

typedef struct rc_tune_result {
    rc_train_opts best; /* base with the chosen parameters (max_seconds 0) */
    double hr50;        /* validation HR@50 of best (mean over its runs) */
    double base_hr50;   /* validation HR@50 of the base settings (mean over its runs) */
    uint32_t configs;   /* settings tried */
    uint32_t trials;    /* training runs */
    double seconds;     /* wall time of the search */
    uint64_t valid_predictions;
} rc_tune_result;

/* Searches the settings for log restricted to sessions (NULL = all; log->
 * nsessions entries, nonzero = usable), starting from base (its mode, dim,
 * threads, min-count, hard share are kept). eval: protocol options of the
 * validation split (its test_ratio is replaced by valid_ratio). Returns 0,
 * RC_EINVAL (no validation split can be made: errbuf says why), RC_ENOMEM,
 * or a training / index error. */
int rc_tune_run(const rc_tune_opts *opts, const rc_train_opts *base, const rc_clicklog *log,
                const uint8_t *sessions, const rc_eval_opts *eval, rc_tune_result *res,
                char *errbuf, size_t errlen);

/* in with the trainer's defaults filled in (train.h) for the searched
 * parameters: window, negatives, epochs, power, lr; max_seconds cleared. */
rc_train_opts rc_tune_resolve(const rc_train_opts *in);

/* One line "window=W negatives=N power=P epochs=E subsample=S lr=L" into buf
 * (always NUL-terminated). */
void rc_tune_format(const rc_train_opts *o, char *buf, size_t cap);

/* ---- the streaming knobs (--tune with a stream method) ----
 *
 * The knobs of rc_eval_stream_knobs, searched for one stream kind (cold:
 * prequential; warm: started from a batch model) on a validation split carved
 * from env->split's training sessions as above (never its test sessions):
 * the engine streams the validation log with the candidate knobs (warm: from
 * one batch model with env's batch settings, trained once on the validation
 * split's training sessions) and is scored by its prequential HR@50 with the
 * daemon's user query. The search: the starting knobs (the daemon's defaults
 * and --stream-set) first, then coordinate descent: each free knob in turn is
 * set to every value of its grid, the best strictly better one is kept, until
 * a whole round improves nothing or the budget is spent (a trial is not
 * started when the last one's duration would overrun it). Keys given by
 * --stream-set stay as given. Deterministic when the budget is not reached. */
#define RC_TUNE_STREAM_NKEYS 12u
/* "train.replay_ratio", "train.lr_decay_clicks", "train.lr_min", "model.lr",
 * "recall.window", "recall.half_life_ms", "model.subsample",
 * "train.replay_adaptive", "train.replay_subsample", "train.anchor",
 * "train.anchor_fade_clicks", "train.replay_per_hour": the knobs' config
 * keys. The search order is the keys' order with train.replay_per_hour after
 * train.replay_subsample; a cold stream does not search train.anchor and
 * train.anchor_fade_clicks (it has no anchor); a warm one searches them last
 * (train.anchor_fade_clicks only while train.anchor is on), so they change its choice only when
 * they improve on where the other knobs converged (searched first, they led the churn log to a
 * worse choice: docs/BENCHMARKS.md "The warm-start anchor"). */
extern const char *const rc_tune_stream_keys[RC_TUNE_STREAM_NKEYS];

/* Zero = default for every field. */
typedef struct rc_tune_stream_opts {
    double seconds;     /* budget, 0 = env->tune_seconds, else 60 */
    double valid_ratio; /* as rc_tune_opts, 0 = 0.2 */
    unsigned free_mask; /* bit i: knob i may be searched; 0 = all */
    /* Per knob: its grid (values in the key's unit), NULL = the built-in one. */
    const double *grid[RC_TUNE_STREAM_NKEYS];
    uint32_t ngrid[RC_TUNE_STREAM_NKEYS];
} rc_tune_stream_opts;

/* Searches the streaming knobs for env's split (log, split, batch settings,
 * --stream-set, query; env is not changed) and kind warm. Progress on stderr
 * unless env->quiet. Returns 0, RC_EINVAL (no validation split), RC_ENOMEM
 * or a training / engine error. */
int rc_tune_stream_run(const rc_tune_stream_opts *opts, const rc_eval_env *env, int warm,
                       rc_eval_stream_tune *res, char *errbuf, size_t errlen);

/* "train.replay_ratio=R ... train.replay_per_hour=H" of k into buf (all twelve;
 * always NUL-terminated). */
void rc_tune_stream_format(const rc_eval_stream_knobs *k, char *buf, size_t cap);

#endif
