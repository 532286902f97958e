/* tower — the two-tower recall model of 58.com's design, trained
 * and served in C on top of the word2vec (SGNS) item table.
 *
 * Item tower: x_i = [E_id[b(h(item))], E_city[b(h(city))], E_cate[b(h(cate))],
 * w2v_i] (b = the bucket of a hash, see rc_tower_hash; w2v_i = the item's SGNS input vector,
 * L2-normalised; zeros when the item has none) -> dense(H) + ReLU -> dense(d)
 * -> L2 normalisation. Embedding tables are hashed (ids never seen in training
 * share buckets, so a brand-new item gets a vector at once: the cold-start
 * path), bucket 0 of each table is reserved for "absent".
 *
 * User tower (inputs rc_tower_user_in):
 *  - ctx = [E_dev[device] (zeros without RC_TOWER_F_DEVICE), stats (zeros
 *    without RC_TOWER_F_STATS)], stats = rc_tower_user_stats (per-category click
 *    shares over the recent clicks, activity counts, recency);
 *  - tag pooling (RC_TOWER_F_TAGS, else zeros): tags t_j = E_tag[h(tag)]; with
 *    RC_TOWER_F_ATTN weights = softmax_j(q_t . t_j / sqrt(tag_dim)), q_t =
 *    Wtq ctx + btq; without it the mean;
 *  - click pooling: x_j = the item-side inputs of the last k <= max_clicks
 *    clicks (same embedding tables as the item tower), k_j = click j's rank
 *    from the newest (0 = the most recent used click, up to k - 1), r = a
 *    learned recency bias of max_clicks floats (initialised to 0); with
 *    RC_TOWER_F_ATTN weights = softmax_j(q . x_j / sqrt(Di) + r[k_j]), q = Wq
 *    [ctx, tagpool] + bq; without it weights = softmax_j(r[k_j]): the
 *    recency-weighted mean, exactly the mean while r = 0; clicks with
 *    w2v == NULL keep their id/city/cate parts;
 *  - u_in = [clickpool (Di), tagpool (tag_dim), E_dev (dev_dim), stats] ->
 *    dense(H) + ReLU -> dense(d) -> L2 normalisation.
 *  No click at all: clickpool = zeros (the profile still gives a vector).
 *
 * Matching: score = cos(u, v) / temperature. Training loss: sampled softmax
 * of the positive against negatives that mix EASY items (shared by a
 * mini-batch, drawn by count^power over the trained items) and HARD items
 * (per example: same city as the positive, other category, uniform; an
 * easy draw when the city has no other category), each
 * negative's logit corrected by -log(expected draws of it) (logQ
 * correction); the positive is not corrected.
 *
 * Thread model: a model (rc_tower_model) is immutable once trained or loaded:
 * rc_tower_item_vector / rc_tower_user_vector may run from any number of threads
 * at once, each with its own rc_tower_work. Training (rc_tower_train) owns the model
 * it builds until it returns. */
#ifndef RECALLD_TOWER_H
#define RECALLD_TOWER_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "recalld/clicklog.h"
#include "recalld/table.h"
#include "recalld/ufeat.h"

/* Feature switches (the ablation rows). */
enum {
    RC_TOWER_F_TAGS = 1u << 0,   /* long-term interest tags */
    RC_TOWER_F_DEVICE = 1u << 1, /* device attributes */
    RC_TOWER_F_STATS = 1u << 2,  /* behaviour statistics */
    RC_TOWER_F_ATTN = 1u << 3,   /* attention pooling (else the tag mean and the
                                  * recency-weighted click mean) */
    RC_TOWER_F_ALL = 15u
};
#define RC_TOWER_MAX_CLICKS     256u /* bound of max_clicks */
#define RC_TOWER_MAX_TAGS       32u  /* tags per user used (the first ones) */
#define RC_TOWER_NSTATS_SCALARS 4u
/* stats = [share of recent clicks per category bucket (stats_cates values,
 *          bucket = h(cate) % stats_cates; an absent category is h = 0),
 *          log1p(total_clicks) / 10, log1p(k) / 5, log1p(sessions) / 10,
 *          log1p(max(0, now - newest click ts) / 1000) / 20]
 * where the recent clicks are the used ones: the last k = min(nclicks,
 * max_clicks); recency is 0 without clicks or click_ts. */

/* Model sizes. Zero = default for every field. */
typedef struct rc_tower_config {
    uint32_t dim;            /* output d, 0 = 64; multiple of 8 */
    uint32_t w2v_dim;        /* SGNS vector size; set from the table by rc_tower_train */
    uint32_t hidden;         /* H of both towers, 0 = 128 */
    uint32_t id_buckets;     /* 0 = 262144 */
    uint32_t id_dim;         /* 0 = 16 */
    uint32_t city_buckets;   /* 0 = 4096 */
    uint32_t city_dim;       /* 0 = 8 */
    uint32_t cate_buckets;   /* 0 = 4096 */
    uint32_t cate_dim;       /* 0 = 8 */
    uint32_t device_buckets; /* 0 = 1024 */
    uint32_t device_dim;     /* 0 = 8 */
    uint32_t tag_buckets;    /* 0 = 16384 */
    uint32_t tag_dim;        /* 0 = 16 */
    uint32_t stats_cates;    /* category-share buckets in the stats, 0 = 32 */
    uint32_t max_clicks;     /* recent clicks used, 0 = 50, <= RC_TOWER_MAX_CLICKS */
    float temperature;       /* 0 = 0.05 */
    unsigned features;       /* RC_TOWER_F_* bits; 0 means NONE (the "nofeat" row): callers
                              * wanting everything pass RC_TOWER_F_ALL */
} rc_tower_config;

typedef struct rc_tower_model rc_tower_model;

/* Hash of a feature string (64-bit, never 0 for a non-empty string: 0 means
 * absent, and the empty string (or s NULL) hashes to 0, so an empty city or
 * category is "absent" whoever hashes it). Stable across runs and machines
 * (it is part of the model file's meaning). A hash h picks bucket
 * (h == 0 ? 0 : 1 + h % (buckets - 1)) of a table: row 0 is the learned
 * "absent" row. */
uint64_t rc_tower_hash(const char *s, size_t len);

/* One item's inputs. Hashes of the id/city/cate strings (0 = absent). */
typedef struct rc_tower_item_in {
    uint64_t id_hash, city_hash, cate_hash;
    const float *w2v; /* w2v_dim floats (need not be normalised), NULL = none */
} rc_tower_item_in;

/* One user's inputs at time now_ms. */
typedef struct rc_tower_user_in {
    const rc_tower_item_in *clicks; /* recent clicks, OLDEST first; the last max_clicks are used */
    const int64_t *click_ts;        /* per click event time ms (NULL = none: recency 0) */
    uint32_t nclicks;
    uint64_t device_hash;       /* 0 = absent */
    const uint64_t *tag_hashes; /* the first RC_TOWER_MAX_TAGS are used */
    uint32_t ntags;
    uint64_t total_clicks; /* clicks ever seen of the user (>= nclicks) */
    uint64_t sessions;     /* sessions ever seen of the user */
    int64_t now_ms;        /* the time the vector is for */
} rc_tower_user_in;

/* Scratch of one calling thread (inference). */
typedef struct rc_tower_work rc_tower_work;
int rc_tower_work_create(const rc_tower_model *m, rc_tower_work **out);
void rc_tower_work_destroy(rc_tower_work *w); /* NULL-safe */

/* A model with freshly initialised weights (seeded). cfg defaults resolved;
 * cfg->w2v_dim must be set (multiple of 8, <= 1024). Returns 0, RC_EINVAL
 * (errbuf names the field), RC_ENOMEM. */
int rc_tower_create(const rc_tower_config *cfg, uint64_t seed, rc_tower_model **out, char *errbuf,
                    size_t errlen);
void rc_tower_destroy(rc_tower_model *m); /* NULL-safe */
/* The resolved configuration. */
const rc_tower_config *rc_tower_config_of(const rc_tower_model *m);
/* Parameter count (floats of all weights). */
size_t rc_tower_params(const rc_tower_model *m);
/* Heap bytes of the model (weights and struct). */
size_t rc_tower_bytes(const rc_tower_model *m);

/* Item-tower vector (cfg.dim floats, unit norm) of one item into out.
 * Any thread, w its own. */
void rc_tower_item_vector(const rc_tower_model *m, rc_tower_work *w, const rc_tower_item_in *in,
                          float *out);
/* User-tower vector (cfg.dim floats, unit norm) into out. When att (NULL ok)
 * is given it receives the click pooling weights of the used clicks (the
 * last min(nclicks, max_clicks), oldest first; they sum to 1) and *natt their
 * count. Any thread, w its own. */
void rc_tower_user_vector(const rc_tower_model *m, rc_tower_work *w, const rc_tower_user_in *in,
                          float *out, float *att, uint32_t *natt);
/* The stats vector of in (stats_cates + RC_TOWER_NSTATS_SCALARS floats). */
void rc_tower_user_stats(const rc_tower_config *cfg, const rc_tower_user_in *in, float *out);

/* ---- file ---- */
/* Format (little-endian): magic "RCTOWER1", u32 version, the config, the
 * weights, trailing CRC-32C (model.h's rc_crc32c) of everything before it;
 * written to a temp file, fsynced, renamed. Version 2 (written) has the
 * recency bias r; version-1 files (without it) still load, with r = 0, which
 * is the model they were trained as. Loading refuses a truncated,
 * corrupt or foreign file: RC_ECORRUPT with "tower model FILE: checksum
 * mismatch" (or "bad magic", "unsupported version N", "truncated"). */
int rc_tower_save(const rc_tower_model *m, const char *path, char *errbuf, size_t errlen);
int rc_tower_load(const char *path, rc_tower_model **out, char *errbuf, size_t errlen);
/* 1 when the file at path starts with the tower magic (a quick probe for
 * `--model` given either kind of file), 0 otherwise (or unreadable). */
int rc_tower_probe(const char *path);

/* ---- building inputs from a click log (trainer, evaluator) ---- */
/* Per-user time-ordered click index of a log, to build user inputs exactly as
 * the server does (its session store keeps every session's recent clicks). */
typedef struct rc_tower_history rc_tower_history;
/* item_rows: per log item its row in w2v (rc_train_item_rows) or UINT32_MAX;
 * w2v: the SGNS table (borrowed, read-only); feats: NULL = none. All borrowed,
 * must outlive the history. Returns 0, RC_EINVAL (NULL argument), RC_E2BIG
 * (2^32 - 1 records or more), RC_ENOMEM. */
int rc_tower_history_create(const rc_clicklog *log, const rc_table *w2v, const uint32_t *item_rows,
                            const rc_ufeat *feats, rc_tower_history **out);
void rc_tower_history_destroy(rc_tower_history *h);
/* The user input of log record `rec` (index into log->recs) as the server
 * would build it just before that click: the user's clicks strictly before it
 * in time (ties: earlier records first; all sessions, whatever their role),
 * the last max_clicks of them, oldest first, each as rc_tower_history_item_in;
 * total_clicks = the number of those earlier clicks (all of them), sessions =
 * the number of distinct sessions among them (the current session counts
 * once it has an earlier click); now_ms = the record's ts; device and tags =
 * the user's features (none when feats is NULL). Returns 0 clicks for an
 * out-of-range rec.
 * The arrays live in the caller's buffers: clicks and ts with room for
 * max_clicks. Returns the number of clicks. Thread: any (h is read-only). */
uint32_t rc_tower_history_user_in(const rc_tower_history *h, size_t rec, uint32_t max_clicks,
                                  rc_tower_item_in *clicks, int64_t *ts, rc_tower_user_in *out);
/* The item input of log item `item`: id_hash = rc_tower_hash of its id string,
 * city/cate hashes of the city/category strings of its FIRST record in
 * log->recs order (rc_train_run gives its table row the same ones; an empty
 * string hashes to 0), w2v = rc_table_in(w2v, item_rows[item]) or NULL when
 * the row is UINT32_MAX. An unknown item gets all zeros. */
void rc_tower_history_item_in(const rc_tower_history *h, uint32_t item, rc_tower_item_in *out);

/* ---- training ---- */
enum rc_tower_optimizer { RC_TOWER_ADAM = 0, RC_TOWER_ADAGRAD = 1 };
/* Zero = default for every field. */
typedef struct rc_tower_train_opts {
    rc_tower_config cfg;     /* sizes and features (features 0 = none!) */
    uint32_t batch;          /* examples per mini-batch, 0 = 256 */
    uint32_t epochs;         /* 0 = 2 */
    uint32_t easy_negatives; /* shared per mini-batch, 0 = 128 */
    uint32_t hard_negatives; /* per example (same city, other category), 0 = 4;
                              * UINT32_MAX = none */
    float power;             /* easy-negative count exponent, 0 = 0.75 */
    float lr;                /* 0 = 0.002 (Adam) / 0.05 (Adagrad) */
    enum rc_tower_optimizer optimizer;
    uint32_t threads;      /* 0 = online CPUs */
    uint64_t seed;         /* 0 = 1 */
    int progress;          /* 0 = when stderr is a terminal, 1 = always, -1 = never */
    int quiet;             /* no summary line */
    double max_seconds;    /* 0 = no limit */
    uint32_t max_examples; /* per epoch, 0 = all (a deterministic sample otherwise) */
    /* Warm start: NULL = fresh weights (seeded); else training starts from a
     * copy of init's weights (optimiser state fresh). init's configuration
     * must equal cfg once both are resolved (same w2v_dim too): RC_EINVAL
     * "tower train: init model: ..." otherwise. Borrowed, read only. */
    const rc_tower_model *init;
    /* Cancellation: NULL = none; when *cancel becomes nonzero the run stops
     * at its next step and returns RC_EAGAIN ("tower train: cancelled"),
     * no model. Another thread sets it (e.g. shutdown). */
    const atomic_int *cancel;
} rc_tower_train_opts;

typedef struct rc_tower_train_result {
    uint64_t examples; /* examples processed, all epochs */
    double loss;       /* mean loss over the last 10% of examples */
    double first_loss; /* mean loss over the first 10% */
    double seconds, examples_per_s;
    uint32_t threads;
    int stopped; /* max_seconds cut it short */
} rc_tower_train_result;

/* Trains a model on the log's sessions with mask == NULL or mask[s] != 0: an
 * example per click at position >= 1 of such a session whose item has a w2v
 * row: user input = rc_tower_history_user_in of that click, positive = the item.
 * The w2v vectors are inputs (frozen); 10% of the training items (positives
 * and negatives) have theirs dropped, so the item tower also learns the
 * cold-start input (no SGNS vector yet). Optimisers: Adam on dense layers and
 * lazy Adam on embedding rows (only rows with a gradient in a step move,
 * bias correction by the global step), or Adagrad. Threads: synchronous data
 * parallelism (each mini-batch cut into per-thread shards, gradients summed
 * in thread order), so a fixed seed and thread count give a bit-identical
 * model (the example order, negatives and dropout depend on the seed only).
 * *out: caller frees. res may be NULL.
 * Returns 0, RC_EINVAL (no example, bad option: errbuf says which), RC_ENOMEM,
 * RC_EAGAIN (cancelled through opts->cancel). */
int rc_tower_train(const rc_tower_train_opts *opts, const rc_tower_history *h, const uint8_t *mask,
                   rc_tower_model **out, rc_tower_train_result *res, char *errbuf, size_t errlen);
/* One-line summary of a training run into buf. */
void rc_tower_train_summary(const rc_tower_train_opts *opts, const rc_tower_train_result *res,
                            char *buf, size_t cap);

#endif
