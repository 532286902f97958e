/* eval — offline evaluation of recall methods with the standard session-based
 * time-split protocol (what recalld-eval and --tune run).
 *
 * Protocol (rc_eval_split_create):
 *  - the events considered are those of the log's sessions (or of a subset:
 *    --tune carves its validation split out of the training sessions);
 *  - cut = the (1 - test_ratio) quantile of their event times, i.e. the
 *    sorted time at index floor((1 - test_ratio) * (n - 1));
 *  - training sessions: those whose last click is before the cut (ts < cut);
 *    test sessions: those whose first click is after it (ts > cut) with >= 2
 *    clicks; a session spanning the cut is in neither;
 *  - the training catalog: the items clicked in the training sessions;
 *  - a prediction is made at each position t >= 1 of a test session whose
 *    target (the click at t) is in the training catalog. Its query items are
 *    the last <= query_len clicks before t that are in the catalog (oldest
 *    first; duplicates kept, as the server's click history keeps them), and
 *    the items excluded from its recommendation are those query items — what
 *    the server excludes (the clicks its query was made of). exclude_prefix
 *    = 1 excludes every earlier click of the session instead. Reference runs
 *    of this protocol (issue 4: MovieLens-100k popularity HR@50 .163,
 *    Diginetica .046) exclude the query items: measured .164 / .046, against
 *    .196 / .041 when the whole prefix is excluded.
 *  - a method with no usable query item for a position (none in its model)
 *    falls back to popularity.
 *  - the two-tower methods query with the user tower instead: its input is
 *    the user's clicks strictly before the target, over all the user's
 *    sessions (what the server's session store holds; rc_tower_history_user_in),
 *    and the user's profile; a position with neither falls back to
 *    popularity. Exclusions and AUC negatives are the same as the others'.
 *
 * Metrics over the predictions (top K = 50 recalled per prediction):
 *  - HR@k: share of predictions whose target is in the top k (k = 10, 20, 50);
 *  - MRR@50: mean of 1/rank of the target, 0 when it is not in the top 50;
 *  - coverage@50: distinct training-catalog items that appear in at least one
 *    top-50 list, over the catalog size;
 *  - avg_position (58.com's "average position"): the mean 1-based rank of the
 *    target over the predictions that hit it within the top 50 (lower is
 *    better; 0 when nothing was hit);
 *  - AUC: per prediction, the share of `auc_negatives` (default 100) items
 *    drawn uniformly (with replacement) from the training catalog — never the
 *    target nor an excluded item — that the method scores strictly below the
 *    target, ties counting one half; then averaged over predictions. The draw
 *    depends only on (seed, prediction index), so every method is scored
 *    against the same negatives.
 *
 * Slices (rc_eval_slices; recalld-eval reports every method's metrics per
 * slice too): a prediction falls in one history slice by the user's history
 * length h = the user's clicks strictly before the target in time (ties:
 * earlier records first), over all the log's sessions whatever their role —
 * what rc_tower_history_user_in counts as total_clicks — "history 1-4", "5-19",
 * "20-99", "100+" (h >= t >= 1: the session's own prefix counts, so 0 cannot
 * occur; a log without user ids has a user per session, h = t, and only the
 * short slices fill), and in one feature slice: "with features" when the
 * user has a device or an interest tag in the rc_ufeat given, else "without
 * features", and in one age slice: "new" when the target is not in the
 * training catalog (only with opts.new_items), else "older". Coverage@50 of
 * a slice: catalog items recalled by its predictions, over the whole
 * catalog.
 *
 * Thread model: a split is read-only once created and may be shared; an
 * accumulator or predictor belongs to one thread. */
#ifndef RECALLD_EVAL_H
#define RECALLD_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/clicklog.h"
#include "recalld/index.h"
#include "recalld/table.h"
#include "recalld/tower.h"
#include "recalld/train.h"
#include "recalld/ufeat.h"

#define RC_EVAL_K             50u   /* recommendations per prediction */
#define RC_EVAL_MAX_QUERY     64u   /* bound of query_len */
#define RC_EVAL_MAX_NEGATIVES 1000u /* bound of auc_negatives */

/* Zero = default for every field. */
typedef struct rc_eval_opts {
    double test_ratio;        /* (0,1), 0 = 0.2 */
    uint32_t query_len;       /* query items per prediction, 0 = 5, <= RC_EVAL_MAX_QUERY */
    uint32_t auc_negatives;   /* 0 = 100, <= RC_EVAL_MAX_NEGATIVES */
    int exclude_prefix;       /* 1: exclude every prefix click, 0: the query items */
    uint64_t seed;            /* of the AUC negatives, 0 = 1 */
    uint32_t max_predictions; /* 0 = all; else a deterministic sample of about this many
                               * (by a hash of session and position): --tune's cheaper
                               * validation */
    /* One period of the daily protocol (rc_eval_daily_create sets these):
     * when period_end_ms > period_start_ms, the cut is period_start_ms
     * instead of the quantile (training: sessions whose last click is before
     * it), the test sessions are those whose first click is in
     * [period_start_ms, period_end_ms) with >= 2 clicks, and a split without
     * a training session or a prediction is not an error (an empty period). */
    int64_t period_start_ms, period_end_ms;
    /* 1: targets need not be in the training catalog (items first seen in
     * the test period, the "new" slice), and the query is the last <=
     * query_len prefix clicks whatever their age (a model skips the items
     * it does not know, as the server does). 0: today's protocol. */
    int new_items;
} rc_eval_opts;

/* The slices (see above), in report order; bit i of a slice mask = slice i. */
enum {
    RC_EVAL_SL_HIST1 = 0, /* history 1-4 */
    RC_EVAL_SL_HIST5,     /* history 5-19 */
    RC_EVAL_SL_HIST20,    /* history 20-99 */
    RC_EVAL_SL_HIST100,   /* history 100+ */
    RC_EVAL_SL_FEAT,      /* with features */
    RC_EVAL_SL_NOFEAT,    /* without features */
    RC_EVAL_SL_NEW,       /* new: the target is not in the training catalog (new_items) */
    RC_EVAL_SL_OLDER,     /* older: the target is in the training catalog */
    RC_EVAL_NSLICES
};
/* "history 1-4", ..., "without features", "new", "older": JSON keys and
 * table titles. */
extern const char *const rc_eval_slice_names[RC_EVAL_NSLICES];

/* ---- split ---- */

/* Session roles: NONE = considered but spanning the cut (or a 1-click test
 * session); OUTSIDE = not among the sessions the split was made of. */
enum { RC_EVAL_NONE = 0, RC_EVAL_TRAIN = 1, RC_EVAL_TEST = 2, RC_EVAL_OUTSIDE = 3 };

/* One prediction. Item ids are the log's dense item ids. */
typedef struct rc_eval_pos {
    uint32_t session;   /* log session id (a test session) */
    uint32_t t;         /* position in the session, >= 1 */
    uint32_t target;    /* item clicked at t */
    uint32_t q_off, nq; /* query items: split->items[q_off .. q_off + nq), oldest first */
    uint32_t x_off, nx; /* excluded items: split->items[x_off .. x_off + nx) */
} rc_eval_pos;

/* Read-only after creation (fields are documented, not to be written). */
typedef struct rc_eval_split {
    const rc_clicklog *log; /* borrowed; must outlive the split */
    rc_eval_opts opts;      /* defaults resolved */
    int64_t cut_ms;
    uint64_t events;        /* events considered (clicks of the sessions given) */
    uint8_t *role;          /* per log session: RC_EVAL_NONE / TRAIN / TEST / OUTSIDE */
    uint8_t *train_mask;    /* per log session: 1 = training (for rc_train_run) */
    uint32_t ntrain, ntest; /* sessions */
    uint64_t train_clicks;
    uint32_t nitems; /* rc_dict_size(log->items) */
    uint32_t *count; /* per log item: clicks in the training sessions */
    uint32_t *pop;   /* the catalog, most clicked first (ties: lower id first) */
    uint32_t ncatalog;
    rc_eval_pos *pos; /* predictions, in session order then position */
    size_t npos;
    uint32_t *history; /* per prediction: the user's earlier clicks (h above) */
    uint32_t *items;   /* storage of the query / exclusion lists */
} rc_eval_split;

/* Builds the split of log restricted to the sessions s with sessions == NULL
 * or sessions[s] != 0 (log->nsessions entries). *out: caller frees with
 * rc_eval_split_destroy. Returns 0, RC_EINVAL (bad option, or no training
 * session / no prediction: errbuf says which), RC_ENOMEM. */
int rc_eval_split_create(const rc_clicklog *log, const uint8_t *sessions, const rc_eval_opts *opts,
                         rc_eval_split **out, char *errbuf, size_t errlen);
void rc_eval_split_destroy(rc_eval_split *s); /* NULL-safe */

/* The AUC negatives of prediction p (see above) into out (room for
 * opts.auc_negatives). Returns how many (0 when the catalog has nothing but
 * the target and the excluded items). */
uint32_t rc_eval_negatives(const rc_eval_split *s, size_t p, uint32_t *out);

/* The slice mask of every prediction of s into mask[0..s->npos): its
 * history slice's bit, its feature slice's bit (f: the users' features,
 * NULL = nobody has any) and its age slice's bit (new / older). */
void rc_eval_slices(const rc_eval_split *s, const rc_ufeat *f, uint8_t *mask);

/* Writes the split for an external evaluator (bench/gensim_baseline.py) into
 * directory dir (created if missing), items as log item ids:
 *   train.txt      one training session per line, its items space-separated,
 *                  in click order;
 *   catalog.tsv    "item\tcount" per catalog item, popularity order;
 *   positions.tsv  per prediction: "target\tquery items\texcluded items\tAUC
 *                  negatives", lists space-separated (possibly empty).
 * Returns 0 or RC_EIO (errbuf names the file). */
int rc_eval_split_dump(const rc_eval_split *s, const char *dir, char *errbuf, size_t errlen);

/* ---- metrics (pure functions) ---- */

/* 1-based position of target in list[0..n), 0 when absent. */
uint32_t rc_eval_rank(const uint32_t *list, uint32_t n, uint32_t target);

/* Share of neg[0..n) strictly below pos, ties counting 1/2; 0.5 when n == 0. */
double rc_eval_auc(float pos, const float *neg, uint32_t n);

typedef struct rc_eval_metrics {
    double hr10, hr20, hr50, mrr50, coverage50, avg_position, auc;
    uint64_t predictions;
    uint64_t fallbacks; /* predictions answered by the popularity fallback */
    double seconds;     /* wall time of the method (training included) */
} rc_eval_metrics;

/* Sums of one slice. */
typedef struct rc_eval_acc_part {
    uint64_t n, hit10, hit20, hit50, fallbacks;
    double rr_sum, rank_sum, auc_sum;
} rc_eval_acc_part;

/* Accumulates predictions. Plain struct: use the functions. */
typedef struct rc_eval_acc {
    rc_eval_acc_part all; /* every prediction */
    uint16_t *seen;       /* per item: bit 0 recalled at least once, bit 1 + i by slice i */
    uint32_t nitems;
    /* Per prediction index: its slice mask (rc_eval_slices; borrowed, set by
     * the caller after init), NULL = no breakdown. rc_eval_predict adds
     * prediction p to the slices of slices[p] as well. */
    const uint8_t *slices;
    rc_eval_acc_part part[RC_EVAL_NSLICES];
    /* Per prediction index p < nrank (rc_eval_acc_track; NULL = not kept):
     * the target's 1-based rank in the answer, 0 = not in the top RC_EVAL_K.
     * What a paired comparison of two methods on the same predictions reads. */
    uint8_t *rank;
    size_t nrank;
} rc_eval_acc;

/* nitems: size of the item id space. Returns 0 or RC_ENOMEM. */
int rc_eval_acc_init(rc_eval_acc *a, uint32_t nitems);
void rc_eval_acc_free(rc_eval_acc *a);
/* Keeps each prediction's rank (a->rank, npos entries, zeroed) from now on:
 * rc_eval_predict records prediction p's. Returns 0 or RC_ENOMEM. Merging
 * leaves dst's ranks alone (each split numbers its own predictions). */
int rc_eval_acc_track(rc_eval_acc *a, size_t npos);
/* One prediction: its top list[0..n) (n <= RC_EVAL_K, item ids < nitems), its
 * target and its AUC. */
void rc_eval_acc_add(rc_eval_acc *a, const uint32_t *list, uint32_t n, uint32_t target, double auc);
/* Metrics so far; coverage counts the items with count[item] > 0 among the
 * recalled ones over ncatalog (count may be NULL: every item counts). seconds
 * is left 0. */
void rc_eval_acc_result(const rc_eval_acc *a, const uint32_t *count, uint32_t ncatalog,
                        rc_eval_metrics *m);
/* Adds src's predictions to dst (same nitems; dst->slices unchanged): the
 * daily protocol sums its periods. */
void rc_eval_acc_merge(rc_eval_acc *dst, const rc_eval_acc *src);
/* rc_eval_acc_add that also adds to the slices of mask. */
void rc_eval_acc_add_sliced(rc_eval_acc *a, const uint32_t *list, uint32_t n, uint32_t target,
                            double auc, uint8_t mask);
/* The metrics of slice i (< RC_EVAL_NSLICES) so far, as rc_eval_acc_result. */
void rc_eval_acc_slice_result(const rc_eval_acc *a, unsigned i, const uint32_t *count,
                              uint32_t ncatalog, rc_eval_metrics *m);

/* ---- paired comparison ----
 * Two methods scored on the same predictions: the ratio of their HR@K and
 * its 95% interval. Predictions of one session are not independent (the
 * same user, the same query items), so the session is the unit: with A_c,
 * B_c the hits of method a and reference b in session c and R = sum A /
 * sum B, the delta method gives var R = n / (n - 1) * sum (A_c - R B_c)^2
 * / (sum B)^2 over the n sessions, and the interval is R -/+ 1.96 sqrt(var).
 * Pairing removes what both methods share (easy and impossible targets), so
 * the interval is much narrower than one from two separate standard
 * errors. Sums are kept, so predictions of several splits (the daily
 * protocol's periods) add into one comparison. */
typedef struct rc_eval_pair {
    uint64_t predictions, sessions;
    double a, b, aa, bb, ab; /* sums over sessions of A_c, B_c, A_c^2, B_c^2, A_c B_c */
} rc_eval_pair;

typedef struct rc_eval_pair_result {
    int defined;          /* 0: the reference hit nothing (no ratio) */
    double ratio, lo, hi; /* HR@K of a / HR@K of b and its 95% interval */
    uint64_t predictions, sessions;
} rc_eval_pair_result;

/* Adds predictions pos[0..n) (in session order, as a split holds them) with
 * ranks rank_a[p], rank_b[p] (rc_eval_acc's) as hits at k (1..RC_EVAL_K). */
void rc_eval_pair_add(rc_eval_pair *p, const rc_eval_pos *pos, size_t n, const uint8_t *rank_a,
                      const uint8_t *rank_b, uint32_t k);
void rc_eval_pair_result_of(const rc_eval_pair *p, rc_eval_pair_result *r);

/* ---- predictors ---- */

/* A method's answer for one prediction: list[0..*n) its top-k item ids (best
 * first, n <= k, none excluded), scores[i] its score of cand[i] (cand[0] is
 * the target, then the AUC negatives; any scale, higher = better) and
 * *fallback = 1 when it had no usable query (the driver then answers with
 * popularity). Returns 0 or a negative RC_E*. */
typedef struct rc_eval_predictor {
    void *state;
    int (*predict)(void *state, const rc_eval_split *s, const rc_eval_pos *p, uint32_t k,
                   uint32_t *list, uint32_t *n, const uint32_t *cand, uint32_t ncand, float *scores,
                   int *fallback);
} rc_eval_predictor;

/* Scratch of one driver thread. */
typedef struct rc_eval_scratch {
    uint32_t list[RC_EVAL_K];
    uint32_t cand[1 + RC_EVAL_MAX_NEGATIVES];
    float scores[1 + RC_EVAL_MAX_NEGATIVES];
} rc_eval_scratch;

/* Makes prediction p with pr and adds it to a. A list shorter than K is
 * completed with the most popular catalog items not in it and not excluded
 * (a popularity fallback answers with those and scores by count). */
int rc_eval_predict(const rc_eval_split *s, const rc_eval_predictor *pr, size_t p, rc_eval_acc *a,
                    rc_eval_scratch *w);
/* Every prediction of s, in order. */
int rc_eval_predict_all(const rc_eval_split *s, const rc_eval_predictor *pr, rc_eval_acc *a);

/* Popularity: the catalog by training count. */
void rc_eval_popularity(const rc_eval_split *s, rc_eval_predictor *pr);

/* Session co-occurrence item-kNN over the training sessions: sim(a,b) =
 * sessions containing both / sqrt(sessions containing a * sessions
 * containing b); each item keeps its max_neighbors most similar items (0 =
 * 1000); the score of b for a prediction is the sum over its query items a of
 * sim(a,b) (the neighbour lists summed). Sessions longer than 1000 distinct
 * items contribute only their last 1000. */
typedef struct rc_eval_knn rc_eval_knn;
int rc_eval_knn_create(const rc_eval_split *s, uint32_t max_neighbors, rc_eval_knn **out,
                       char *errbuf, size_t errlen);
void rc_eval_knn_destroy(rc_eval_knn *k);
void rc_eval_knn_predictor(rc_eval_knn *k, rc_eval_predictor *pr);

/* Embedding recall with the server's code: query = rc_recall_query_vector of
 * the query items' rows (items without a row are skipped), then
 * rc_recall_search (index over-fetch, exact re-score with the table's current
 * vectors, exclusion of the excluded items' rows). Scores for AUC: cosine of
 * the query with the item's input vector (-2 when the item has no row).
 * t and ix are borrowed; the table may grow (prequential): rows added since
 * the last call are mapped to log items on the next prediction. */
typedef struct rc_eval_embed rc_eval_embed;
int rc_eval_embed_create(const rc_eval_split *s, const rc_table *t, rc_index *ix, float overfetch,
                         rc_eval_embed **out);
void rc_eval_embed_destroy(rc_eval_embed *e);
void rc_eval_embed_predictor(rc_eval_embed *e, rc_eval_predictor *pr);
/* The cosine of e's last query with item's input vector (-2 without a row):
 * the score the server re-scores a hit with (the fused method's embedding
 * scores). Valid after a prediction that was not a fallback. */
float rc_eval_embed_score(const rc_eval_embed *e, uint32_t item);
/* Switches e to 58.com's multi-category parallel recall: the query items are
 * searched with rc_recall_multi_category (opts copied; NULL = defaults,
 * serial) instead of one mean vector; AUC scores stay the mean's cosine. A
 * multi_category method = rc_eval_train_model + this + the driver. */
struct rc_mc_opts; /* recall.h */
void rc_eval_embed_multi_category(rc_eval_embed *e, const struct rc_mc_opts *opts);

/* on: searches are exact (rc_recall_exact over every row, same filter and
 * exclusions) instead of through the index: the reference that measures what
 * the index loses (recalld-eval --search exact). Multi-category recall keeps
 * its index path. */
void rc_eval_embed_exact(rc_eval_embed *e, int on);

/* on: every index search is also made exactly, and the share of the exact
 * top-k the index's top-k holds is tallied (rc_eval_embed_ann_recall). */
int rc_eval_embed_compare(rc_eval_embed *e, int on);
/* The tally's mean share (0 without predictions) and its predictions. */
double rc_eval_embed_ann_recall(const rc_eval_embed *e, uint64_t *n);

/* Switches e to query vectors computed by fn (the two-tower methods: the user
 * tower's vector) instead of the query items' mean: fn writes the unit query
 * (table dim floats) of prediction p into q and returns 1, 0 when it has no
 * usable query (the driver's popularity fallback), or a negative RC_E*. The
 * search, the exclusion of the excluded items' rows and the AUC scores
 * (cosine of q with each candidate's input vector) are unchanged. ud is
 * borrowed. */
typedef int (*rc_eval_query_fn)(void *ud, const rc_eval_split *s, const rc_eval_pos *p, float *q);
void rc_eval_embed_query(rc_eval_embed *e, rc_eval_query_fn fn, void *ud);

/* Switches e to the daemon's user query (userq.h, opts copied): the user's
 * clicks before the target (the session's prefix, then the user's earlier
 * sessions of the log; items without a row skipped) weighed by
 * rc_userq_weigh, and with scope_city (recall.scope user_city) and a log
 * with cities, the search restricted to rc_userq_city. The exclusion and
 * the AUC scores are unchanged. Returns 0 or RC_ENOMEM. */
struct rc_userq_opts; /* userq.h */
int rc_eval_embed_userq(rc_eval_embed *e, const struct rc_userq_opts *opts, int scope_city);

/* Creates an index over every row of t with options io (NULL: the index's
 * defaults; retraining is always synchronous here), touches every row and
 * flushes, so it is complete, IVF where the daemon's would be, before the
 * first search. *out: caller frees with rc_index_destroy before t. */
int rc_eval_index_build(rc_table *t, const rc_index_opts *io, rc_index **out, char *errbuf,
                        size_t errlen);

/* ---- methods ---- */

/* The streaming knobs --tune searches for the stream methods (prequential,
 * prequential-warm, stream-warm, stream-daily): daemon config keys
 * train.replay_ratio, train.lr_decay_clicks, train.lr_min, model.lr (the
 * stream's rate), recall.window, recall.half_life_ms (the user query),
 * model.subsample (of the stream), train.replay_adaptive,
 * train.replay_subsample, train.anchor, train.anchor_fade_clicks,
 * train.replay_per_hour. */
typedef struct rc_eval_stream_knobs {
    float replay_ratio, lr_decay_clicks, lr_min, lr;
    uint32_t recall_window;
    int64_t half_life_ms;
    float subsample;        /* model.subsample of the stream (else the batch setting's) */
    int replay_adaptive;    /* train.replay_adaptive */
    float replay_subsample; /* train.replay_subsample */
    float anchor;           /* train.anchor (warm only: a cold stream has no anchor) */
    float anchor_fade;      /* train.anchor_fade_clicks */
    float replay_per_hour;  /* train.replay_per_hour */
} rc_eval_stream_knobs;

/* The result of a search of the streaming knobs (rc_tune_stream_run). */
typedef struct rc_eval_stream_tune {
    rc_eval_stream_knobs best; /* every knob, the searched ones as chosen */
    unsigned searched;         /* bit i: knob i of rc_tune_stream_keys was searched */
    double hr50;               /* validation HR@50 of best */
    double base_hr50;          /* validation HR@50 of the starting settings */
    uint32_t trials;           /* streaming runs */
    double seconds;            /* wall time of the search */
    uint64_t valid_predictions;
} rc_eval_stream_tune;

/* What a method reports. */
#define RC_EVAL_GATE_HOURS 4.0 /* rc_eval_env.gate_hours's default */
enum { RC_EVAL_REBUILD_LIVE, RC_EVAL_REBUILD_FRESH, RC_EVAL_REBUILD_BOTH }; /* env.rebuild */
extern const char *const rc_eval_rebuild_names[3];                          /* live fresh both */

/* stream-daily-gated's gate over a run: settings and decisions. */
typedef struct rc_eval_gate_stats {
    double hours, ratio, min_z;
    uint32_t judged;    /* periods whose gate window had predictions */
    uint32_t installed; /* of them, the challenger won: the rebuild was installed */
    uint32_t unjudged;  /* no prediction in the window: installed unjudged (the ungated rule) */
    uint32_t fresh;     /* of the installs (judged or not), rebuilds from random vectors */
    double live_hr50_sum, cand_hr50_sum; /* over the judged windows (the better challenger) */
} rc_eval_gate_stats;

/* The champion/challenger gate's parts (stream-daily-gated, recalld-train
 * --gate-hours; src/eval_gate.c).
 * rc_eval_gate_window: the split of the window [cut_ms - hours, cut_ms) of
 * log: the sessions that start in it are predicted, those that ended before
 * it train (opts: the splits' options, NULL = defaults). Returns 0, 1 (no
 * training session or no prediction: nothing to judge on; *g NULL) or RC_E*.
 * rc_eval_gate_compare: the live table (searched through live_ix, NULL: an
 * index of env's index.* built for it) and the challenger cand (an index
 * built for it), both frozen, predict every prediction of g with env's
 * user query (--stream-set recall.*); *out gets both HR@50, the paired z
 * and the verdict for ratio / min_z. env needs log and, else zero, takes
 * the daemon's defaults. Thread: any; the tables are read only.
 * rc_eval_gate_z: the paired (McNemar) statistic of two tables' hits on the
 * same predictions: only[0] predictions hit by live alone, only[1] by cand
 * alone, z = (only[1] - only[0]) / sqrt(only[0] + only[1]) (0 when none
 * differ): how many standard errors the challenger is ahead.
 * rc_eval_gate_verdict: 1 (install) when cand_hr50 >= ratio x live_hr50 and
 * z >= min_z. */
int rc_eval_gate_window(const rc_clicklog *log, const rc_eval_opts *opts, int64_t cut_ms,
                        double hours, rc_eval_split **g, char *errbuf, size_t errlen);
struct rc_eval_env;
typedef struct rc_eval_gate_cmp {
    size_t predictions;
    double live_hr50, cand_hr50;
    uint64_t only[2]; /* predictions hit by the live table alone, by cand alone */
    double z;         /* rc_eval_gate_z */
    int install;      /* rc_eval_gate_verdict */
} rc_eval_gate_cmp;
int rc_eval_gate_compare(const struct rc_eval_env *env, const rc_eval_split *g,
                         const rc_table *live, rc_index *live_ix, const rc_table *cand,
                         double ratio, double min_z, rc_eval_gate_cmp *out, char *errbuf,
                         size_t errlen);
double rc_eval_gate_z(const uint8_t *live, const uint8_t *cand, size_t n, uint64_t only[2]);
int rc_eval_gate_verdict(double live_hr50, double cand_hr50, double z, double ratio, double min_z);

typedef struct rc_eval_report {
    rc_eval_metrics m;
    int has_settings; /* settings below were used (embedding methods) */
    rc_train_opts settings;
    /* --ann-recall (sgns, cbow): the mean share of each prediction's exact
     * top-50 (brute force, same query, filter and exclusions) that the
     * index's top-50 holds, over ann_n predictions */
    int has_ann;
    double ann_recall50;
    uint64_t ann_n;
    int tuned;            /* settings were chosen by --tune */
    double tune_hr50;     /* validation HR@50 of the chosen settings */
    uint32_t tune_trials; /* settings tried */
    double tune_seconds;  /* wall time of the search */
    /* stream methods: the streaming knobs the engine ran with, and (--tune)
     * the search that chose them */
    int has_stream;
    rc_eval_stream_knobs stream;
    int stream_tuned;
    rc_eval_stream_tune stream_tune;
    /* fused: the fusion weight it ran with; fuse_tuned: chosen by --tune (on
     * a validation split, HR@50 fuse_hr50 there), else cooc.fuse_weight */
    int rebuild;  /* stream-daily-install, -gated: rc_eval_env.rebuild + 1; 0 other methods */
    int has_gate; /* stream-daily-gated */
    rc_eval_gate_stats gate;
    int has_fuse;
    float fuse_weight;
    int fuse_tuned;
    double fuse_hr50;
    /* two-tower methods: the tower's settings (features resolved) and run */
    int has_tower;
    rc_tower_train_opts tower;
    rc_tower_train_result tower_res;
    /* env->slices was given: the metrics per slice (seconds 0) */
    int has_slices;
    rc_eval_metrics slice[RC_EVAL_NSLICES];
} rc_eval_report;

/* What a method run gets. The caller fills the inputs; methods may leave
 * settings for later ones (prequential reuses skip-gram's tuned settings). */
typedef struct rc_eval_env {
    const rc_clicklog *log;
    const rc_eval_split *split;
    rc_train_opts train; /* base training settings (--dim, --window, ...) */
    float overfetch;     /* recall over-fetch, 0 = the daemon's index.overfetch */
    int exact;           /* --search exact: embedding methods search by brute force */
    int ann_recall;      /* --ann-recall: sgns / cbow also measure the index against exact */
    int tune;            /* --tune: search the settings on a validation split */
    double tune_seconds; /* budget per tuned method, 0 = 60 */
    int fixed_mask;      /* RC_CLI_SET_* bits: settings --tune must keep */
    int quiet;           /* no progress on stderr */
    float stream_lr;     /* prequential: the engine's constant learning rate, 0 = the
                          * daemon's default (model.lr); never the batch start rate,
                          * which batch training decays to ~0 */
    /* prequential / stream-*: daemon config keys "KEY=VALUE" (--stream-set) set on
     * the engine's configuration after the training settings, e.g.
     * train.replay_ratio=0 (the daemon's defaults otherwise) */
    const char *const *stream_set;
    size_t nstream_set;
    /* embedding methods' query: 0 = the daemon's user query (userq.h) with the
     * daemon's recall.* settings (defaults + --stream-set), 1 = the mean of
     * the query items (--query items) */
    int query_items;
    /* --tune for the stream methods: the first stream run of each kind (cold:
     * prequential; warm: prequential-warm, stream-warm, stream-daily) searches
     * the streaming knobs not given by --stream-set on a validation split of
     * its split's training sessions (rc_tune_stream_run, tune_seconds), and
     * every later run of that kind reuses the choice (stream_tuned[warm]). */
    int tune_stream;
    int have_stream_tuned[2];
    int stream_fused;            /* prequential-fused / stream-warm-fused is running: the
                                  * stream's predictions fuse the engine's recall with a
                                  * co-occurrence channel fed by the same stream (warm: and
                                  * by the batch model's training sessions first), the
                                  * daemon's "fused" mode */
    int live;                    /* stream-daily-live is running (rc_eval_daily_run) */
    struct rc_engine *live_prev; /* its last period's engine, whose table the next rebuild
                                  * starts from; freed by rc_eval_daily_run */
    int install; /* stream-daily-install is running: at each later period's start the
                  * rebuild (from the running engine's table) is installed into it */
    /* stream-daily-gated is running (with install): each later period's
     * rebuild is installed only when a challenger trained the same way on
     * the sessions that ended gate_hours before the period's start scores
     * HR@50 >= gate_ratio x the running table's on the sessions of those
     * hours (both frozen; src/eval_gate.c). gate_hours 0 = 4, gate_ratio 0 = 1. */
    int gate;
    /* stream-daily-install/-gated: which rebuild. RC_EVAL_REBUILD_LIVE (0):
     * from the running table (recalld-train --init), installed over it;
     * _FRESH: from random vectors (recalld-train alone), installed as a whole
     * new table (rc_engine_replace_table, install_model "replace"); _BOTH
     * (gated only): both challengers are judged, the better one is the
     * candidate. */
    int rebuild;
    double gate_hours, gate_ratio;
    double gate_min_z; /* and the challenger's paired lead >= this many standard errors
                        * (rc_eval_gate_z); default 0 */
    rc_eval_stream_tune stream_tuned[2];
    /* --tune for fused (tune or tune_fuse): the first fused run whose split's
     * training sessions give a validation split chooses the fusion weight
     * there, and every later run (the daily protocol's periods) reuses it
     * (have_fuse_weight, fuse_weight, its validation HR@50 fuse_hr50). */
    int tune_fuse;
    int have_fuse_weight;
    float fuse_weight;
    double fuse_hr50;
    /* warm stream runs: the batch model to start from (a model file), NULL =
     * train one on env->split's training sessions (the stream search trains
     * its validation model once and passes it here) */
    const char *warm_model;
    /* set by the sgns method when it ran: its report (settings, tuning) */
    int have_sgns;
    rc_eval_report sgns;
    /* Two-tower methods (src/eval_tower.c). They train the towers on the
     * split's training sessions on top of the skip-gram table w2v: the one
     * sgns left there (keep_w2v = 1), else one they train with sgns's
     * settings (or the base ones) and leave there for the next tower row —
     * so every row of an ablation shares one table. rc_eval_env_cleanup
     * frees it. */
    const rc_ufeat *feats;     /* user features, NULL = the log's own (rc_ufeat_from_log) */
    rc_tower_train_opts tower; /* base tower settings (--tower-*; cfg.features see below) */
    int tower_features_set;    /* tower.cfg.features was given: the two_tower row uses it
                                * instead of RC_TOWER_F_ALL */
    int keep_w2v;              /* the sgns method leaves its table in w2v */
    rc_table *w2v;
    /* Per prediction of split: its slice mask (rc_eval_slices), NULL = no
     * per-slice metrics. Every method then fills rep->slice in its one pass. */
    const uint8_t *slices;
    /* The accumulator a method's pass adds its predictions to (borrowed,
     * initialised by the caller, slices set), NULL = one of its own: the
     * daily protocol keeps one per period and sums them. rep->m then
     * describes everything acc holds. */
    rc_eval_acc *acc;
} rc_eval_env;

typedef struct rc_eval_method {
    const char *name; /* JSON key and --methods name */
    int (*run)(rc_eval_env *env, rc_eval_report *rep, char *errbuf, size_t errlen);
    int not_default; /* runs only when named (--methods, --ablation) */
} rc_eval_method;

/* The ablation rows (recalld-eval --ablation), in order: the word2vec average
 * and the towers without user features, with interest tags, with everything
 * (tags, device, behaviour statistics, attention). */
#define RC_EVAL_ABLATION "sgns,two_tower-nofeat,two_tower+tags,two_tower"

/* Frees what the methods left in env (the shared w2v table). NULL-safe. */
void rc_eval_env_cleanup(rc_eval_env *env);

/* The methods, in the order they run and are reported. Adding a method is
 * one entry here (src/eval_methods.c). */
extern const rc_eval_method rc_eval_methods[];
extern const size_t rc_eval_nmethods;
/* The method called name, or NULL. */
const rc_eval_method *rc_eval_method_find(const char *name);
/* Runs m on env into rep (zeroed first; rep->m.seconds = its wall time).
 * Returns 0 or the method's error (errbuf says what). */
int rc_eval_method_run(const rc_eval_method *m, rc_eval_env *env, rc_eval_report *rep, char *errbuf,
                       size_t errlen);

/* Trains a table for the env's split with settings o (on its training
 * sessions) and indexes it: the batch half of the sgns/cbow methods, for
 * methods that query a batch model differently. *t and *ix: caller frees
 * (index first). */
int rc_eval_train_model(const rc_eval_env *env, const rc_train_opts *o, rc_table **t, rc_index **ix,
                        char *errbuf, size_t errlen);

/* ---- the daily protocol (recalld-eval --protocol daily) ----
 *
 * The deployed regime: the log is cut into periods of event time of
 * period_hours (24: calendar days, UTC), counted from the period holding the
 * first event. The first warmup_periods only train. Each later period k is
 * one split (rc_eval_opts.period_*): training = the sessions that ended
 * before its start, tests = the sessions that start in it (every position,
 * even those after its end), catalog = the items of its training sessions
 * (with opts.new_items, targets outside it are predicted too: the "new"
 * slice). A period without a training session or a prediction is skipped.
 * Each method predicts every period's positions:
 *  - popularity, itemknn, batch-daily (the sgns method), stream-daily (the
 *    prequential-warm method): the ordinary method run on each period's
 *    split, i.e. rebuilt at the start of each period from everything before
 *    it (stream-daily then streams the period through the engine);
 *  - stream-warm: one engine warm-started from the first period's batch
 *    model, then fed every later click in time order, each prediction made
 *    just before its click is learnt (rc__eval_stream over all periods).
 * Metrics: over all periods, per slice (history, features, new / older) and
 * per period; coverage@50 counts the distinct items recalled over the items
 * clicked before the last period's end. --tune tunes the batch settings once,
 * on the first period's split; later periods and the stream methods reuse
 * them, and fused's weight likewise (env->tune_fuse). With tune_min_valid the
 * warm-up grows until that first period's training part is large enough. With env->tune_stream the
 * streaming knobs are searched once too (by the first warm stream run: stream-warm, or
 * stream-daily's first period, on the first period's training part) and reused by the other. */
typedef struct rc_eval_daily_opts {
    double period_hours;     /* (0, 8784], 0 = 24 */
    uint32_t warmup_periods; /* periods that only train, 0 = 1 */
    /* --tune: the warm-up is extended, period by period, until the first
     * evaluated period's training part gives the validation split --tune
     * cuts from it (its last 20% of time, tune.h) at least this many
     * predictions; 0 = the warm-up as given. Tuning then sees only events
     * before the first evaluated period, and every method is scored on the
     * same periods. */
    uint32_t tune_min_valid;
} rc_eval_daily_opts;

/* recalld-eval's --tune-min-valid default in the daily protocol. */
#define RC_EVAL_TUNE_MIN_VALID 200u

typedef struct rc_eval_period {
    int64_t start_ms, end_ms;
    rc_eval_split *split; /* owned by the protocol */
    uint8_t *slices;      /* per prediction of split: rc_eval_slices' mask */
    uint64_t new_targets; /* predictions whose target is not in the split's catalog */
} rc_eval_period;

/* Read-only after creation. */
typedef struct rc_eval_daily {
    const rc_clicklog *log;          /* borrowed */
    rc_eval_opts opts;               /* of every period's split (period_* set per period) */
    rc_eval_daily_opts dopts;        /* defaults resolved; warmup_periods: as extended */
    uint32_t warmup_asked;           /* warmup_periods before the extension for tune_min_valid */
    uint64_t tune_valid_predictions; /* tune_min_valid: the first period's validation split's */
    int64_t period_ms, first_ms;     /* length; start of the first (warm-up) period */
    uint32_t total_periods;          /* from the first event's period to the last's */
    uint32_t nperiods;               /* evaluated, in period[] in time order */
    uint32_t skipped;                /* after warm-up, without training session or prediction */
    rc_eval_period *period;
    uint32_t nitems, ncatalog;  /* ncatalog: items clicked before the last period's end */
    uint64_t npos, new_targets; /* predictions over all periods; of them, new targets */
} rc_eval_daily;

/* Builds the periods of log (opts: the splits' options, NULL = defaults;
 * feats: for the feature slices, NULL = none). *out: caller frees with
 * rc_eval_daily_destroy, before log. Returns 0, RC_EINVAL (bad option, or
 * no period to evaluate: errbuf says which), RC_ENOMEM. */
int rc_eval_daily_create(const rc_clicklog *log, const rc_eval_opts *opts,
                         const rc_eval_daily_opts *dopts, const rc_ufeat *feats,
                         rc_eval_daily **out, char *errbuf, size_t errlen);
void rc_eval_daily_destroy(rc_eval_daily *d); /* NULL-safe */
/* "period 2016-01-04" (UTC; "period 2016-01-04T06:00" when periods are not
 * whole days) of period k < d->nperiods: its JSON slice key. */
void rc_eval_daily_period_name(const rc_eval_daily *d, uint32_t k, char *buf, size_t cap);

typedef struct rc_eval_daily_method {
    const char *name;       /* --methods name and JSON key */
    const char *per_period; /* the rc_eval_methods entry run per period; NULL = stream-warm */
    int live;               /* 1: each period's batch rebuild starts from the table the
                             * previous period's stream left (stream-daily-live) */
    int install;            /* 1: stream-warm's one engine, and at each later period's
                             * start a rebuild from its table installed into it, as the
                             * daemon's install_model does (stream-daily-install) */
    int gate;               /* 1 (with install): each install behind the champion/
                             * challenger gate of rc_eval_env.gate (stream-daily-gated) */
    int fused;              /* 1: the stream's predictions are the daemon's "fused" mode
                             * (rc_eval_env.stream_fused; stream-warm-fused) */
} rc_eval_daily_method;

/* popularity, itemknn, batch-daily, stream-warm, stream-daily: run and
 * reported in this order. */
extern const rc_eval_daily_method rc_eval_daily_methods[];
extern const size_t rc_eval_daily_nmethods;
const rc_eval_daily_method *rc_eval_daily_method_find(const char *name);

typedef struct rc_eval_daily_report {
    rc_eval_report all;      /* over every period: metrics, slices, settings */
    rc_eval_metrics *period; /* per period of the protocol (nperiods) */
    /* per period k: each prediction's rank (rc_eval_acc's rank; the period's
     * split numbers them), for paired comparisons between methods */
    uint8_t **rank;
    uint32_t nperiods;
} rc_eval_daily_report;

/* Runs m over every period of d. env: as for rc_eval_method_run, but its
 * split, slices and acc are set here (and left changed; with env->tune the
 * first period's search fixes env->train, and env->tune is cleared). *rep:
 * free with rc_eval_daily_report_free. Returns 0 or the method's error. */
int rc_eval_daily_run(const rc_eval_daily_method *m, rc_eval_env *env, const rc_eval_daily *d,
                      rc_eval_daily_report *rep, char *errbuf, size_t errlen);
void rc_eval_daily_report_free(rc_eval_daily_report *rep); /* NULL-safe */

#endif
