/* train — the batch trainer of recalld-train (and of recalld-eval's batch
 * methods): word2vec skip-gram or CBOW with negative sampling over the
 * sessions of a click log, sharing the streaming code: the update step
 * (rc_sgns_pair, vec kernels), the sampler (same-city negatives when the log
 * has cities, hard negatives = same city, other category, when it has
 * categories; else a global unigram^power distribution) and the item table.
 *
 * A session is a sentence: each click is a center trained against the clicks
 * up to `window` positions before AND after it in its session (word2vec's
 * reduced window: a random b in [1, window] per center). Items with fewer than
 * min_count clicks in the trained sessions are dropped from them first;
 * frequent items are subsampled per occurrence (word2vec's formula, threshold
 * `subsample`). The learning rate decays linearly from lr to lr * 1e-4 over
 * epochs * clicks. Threads (Hogwild, no locks) each take a contiguous slice of
 * the sessions, with their own rng and scratch.
 *
 * Determinism: threads = 1 and a fixed seed give bit-identical tables. */
#ifndef RECALLD_TRAIN_H
#define RECALLD_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/clicklog.h"
#include "recalld/sgns.h"
#include "recalld/table.h"

/* Zero = default for every field. */
typedef struct rc_train_opts {
    enum rc_sgns_mode mode;      /* RC_SGNS_SKIPGRAM (default) or RC_SGNS_CBOW */
    uint32_t dim;                /* 0 = 64; multiple of 8, <= 1024 */
    uint32_t window;             /* each side of the center, 0 = 5, <= RC_SGNS_MAX_WINDOW / 2 */
    uint32_t negatives;          /* per positive, 0 = 5, <= RC_SGNS_MAX_NEG */
    uint32_t epochs;             /* 0 = 5 */
    uint32_t threads;            /* 0 = online CPUs (at most 256) */
    uint32_t min_count;          /* 0 = 1 (keep every item) */
    float lr;                    /* start learning rate, 0 = 0.025 skip-gram / 0.05 CBOW */
    float subsample;             /* word2vec threshold t, 0 = off (e.g. 1e-3) */
    float power;                 /* unigram exponent of the negative distribution, 0 = 0.75 */
    float hard_share;            /* share of negatives that are hard, 0..1 (needs categories) */
    float cate_prior;            /* 0 = off; K > 0: after training, each item's input vector
                                  * v becomes (n v + K m) / (n + K), n its clicks, m its
                                  * category's click-weighted mean (needs categories) */
    uint64_t seed;               /* 0 = 1 */
    int global_negatives;        /* 1: ignore cities even when the log has them */
    int progress;                /* 0 = when stderr is a terminal, 1 = always, -1 = never */
    int quiet;                   /* 1: no final summary line on stderr */
    double max_seconds;          /* 0 = no limit; else training stops (keeping the vectors
                                  * reached) after this wall time: a --tune budget */
    const struct rc_table *init; /* NULL, or rows whose item id it holds start from its
                                  * input and output vectors (same dim) */
} rc_train_opts;

typedef struct rc_train_result {
    uint64_t clicks;     /* center clicks processed, all epochs (after min-count) */
    uint64_t pairs;      /* positive pairs trained */
    double loss;         /* mean loss per positive pair over the last 10% of work */
    double seconds;      /* wall time of the training passes (table build excluded) */
    double clicks_per_s; /* clicks / seconds */
    uint32_t items;      /* rows of the returned table */
    uint32_t sessions;   /* trained sessions with >= 2 clicks left after min-count */
    uint32_t threads;    /* threads used */
    int stopped;         /* 1: max_seconds cut training short */
    double cpu_seconds;  /* CPU time of the training threads, summed: clicks / cpu_seconds
                          * is the per-thread speed even on a busy machine */
} rc_train_result;

/* Trains on the sessions s of log with mask == NULL or mask[s] != 0 (mask has
 * log->nsessions entries). The table gets one row per item of those sessions
 * with >= min_count clicks in them, in increasing log item id order, with the
 * item's city/cate (when the log has them) and its click count; its input
 * vectors are the embeddings. *out: caller frees with rc_table_destroy.
 * res may be NULL. Returns 0, RC_EINVAL (bad option or no trainable item:
 * errbuf says which), RC_ENOMEM. Thread: any; starts and joins its threads;
 * log is read-only and may be shared by concurrent calls. */
int rc_train_run(const rc_train_opts *opts, const rc_clicklog *log, const uint8_t *mask,
                 rc_table **out, rc_train_result *res, char *errbuf, size_t errlen);

/* rows[i] = table row of log item i, or UINT32_MAX when the item is not in the
 * table (rows has rc_dict_size(log->items) entries). Thread: any reader. */
void rc_train_item_rows(const rc_clicklog *log, const rc_table *t, uint32_t *rows);

/* One-line summary ("train: skipgram, 5 epochs, 2 threads: 0.497M clicks in
 * 0.81 s, 0.614M clicks/s, 0.402M clicks per CPU-second, ... loss 2.1219,
 * 1679 items, 2283 sessions") into buf (always NUL-terminated). */
void rc_train_summary(const rc_train_opts *opts, const rc_train_result *res, char *buf, size_t cap);

#endif
