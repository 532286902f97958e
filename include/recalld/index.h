/* index — the live vector index: FAISS (C API), inner product on L2-normalised
 * input vectors of the item table, keyed by table row.
 *
 * Partitioned by (city, category) — 58.com's housing team partitioned by city
 * and business line — so a city or category filter selects whole partitions
 * and is exact. A partition is a flat index until it holds ivf_min rows, then
 * IVF (nlist ~ 4*sqrt(n), an array direct map so rows are updated in place
 * with update_vectors) whose lists hold float32 vectors (storage "flat",
 * IVF-Flat), fp16 or 8-bit scalar-quantized codes (IVF-SQ; see
 * rc_index_storage). Small partitions stay float32 flat whatever the storage. A partition is
 * retrained (in the background, from a snapshot, then swapped in) when it has grown by
 * retrain_growth since its training or its lists are unbalanced (imbalance factor > max_imbalance)
 * or its centroids no longer fit the rows it indexes (retrain_fit).
 *
 * Partition limit: at most max_partitions (city, category) partitions. Rows
 * of a pair that finds no room go to one shared overflow partition, which
 * stays flat and keeps each row's city and category: searches scan it
 * whenever it holds rows and filter it row by row, so filters stay exact and
 * those rows stay searchable; the cost is a brute-force pass over the
 * overflow rows per search. A row whose partition cannot be created (out of
 * memory) is put back at the tail of the queue, never in front of others.
 *
 * Staleness: the writer calls rc_index_touch(row) for every row whose vector
 * it changed (new rows included). rc_index_flush adds new rows and re-indexes
 * a touched row only when its vector drifted more than `drift` (1 - cosine)
 * from the indexed one (the index keeps an int8 copy of what it indexed to
 * measure that), in batches, so indexing keeps up with training. Searches
 * return candidates with the indexed scores; callers re-score them with the
 * table's current vectors (recall.h does).
 *
 * Thread model: one writer thread (touch, flush, maintain); rc_index_search
 * and rc_index_stats_get from any thread concurrently with the writer (each
 * partition has a rwlock; the writer holds it only to apply a batch). FAISS's
 * nprobe of a partition is set once, never while it may be searched. */
#ifndef RECALLD_INDEX_H
#define RECALLD_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/hist.h"
#include "recalld/table.h"

typedef struct rc_index rc_index;

/* How the IVF lists store a vector (index.storage). Scores found with fp16 or
 * sq8 codes are approximate: callers re-score the candidates with the table's
 * float vectors (recall.h does, over-fetching index.overfetch x k). */
typedef enum rc_index_storage {
    RC_INDEX_STORAGE_FLAT = 0, /* float32, 4 bytes a component (IVF-Flat) */
    RC_INDEX_STORAGE_FP16 = 1, /* half floats, 2 bytes (IVF-SQ QT_fp16) */
    RC_INDEX_STORAGE_SQ8 = 2,  /* 1 byte over the fixed range [-1, 1] of a unit vector's
                                  components (IVF-SQ QT_8bit_uniform, not by residual) */
    RC_INDEX_STORAGE_INT8 = 3, /* the rows' int8 copies alone: FAISS's lists keep only
                                  membership (IVF-PQ 1x4, one byte a row, never scored
                                  by the search) */
} rc_index_storage;

/* "flat", "fp16", "sq8", "int8"; NULL for an unknown value. */
const char *rc_index_storage_name(int storage);
/* The storage of that name, or -1. */
int rc_index_storage_parse(const char *name);

typedef struct rc_index_opts {
    uint32_t ivf_min;        /* rows before a partition becomes IVF, 0 = 4096 */
    uint32_t nprobe;         /* IVF probing scale, 0 = 16: a partition's FAISS nprobe (the
                                most lists one search scans in it) is min(nlist, 4*nprobe),
                                fixed when it is (re)trained; see search_lists */
    float drift;             /* re-index when 1 - cos(current, indexed) > drift, 0 = 0.02 */
    uint32_t batch;          /* max rows applied under one write lock, 0 = 256 */
    float retrain_growth;    /* retrain when rows > (1+g) * rows at training, 0 = 1.0 */
    float max_imbalance;     /* retrain when imbalance factor exceeds, 0 = 3.0 */
    float retrain_fit;       /* retrain when the rows (re)indexed since training sit farther
                                from their nearest centroid than the training rows did: their
                                mean cosine distance to it (recent rows weigh most) above
                                (1 + f) x the training rows' mean; 0 = 0.5, < 0 = never */
    int no_background;       /* 1: retrain synchronously inside rc_index_maintain (tests) */
    uint32_t search_lists;   /* IVF lists scanned per search, chosen best-first by centroid
                                score over all selected partitions (a partition gets at most
                                4 * nprobe of them), 0 = 8 * nprobe */
    uint32_t max_partitions; /* city x category partitions at most, 0 = 65536 (the most);
                                rows of further pairs go to the overflow partition */
    int storage;             /* rc_index_storage of the IVF lists, 0 = flat */
} rc_index_opts;

typedef struct rc_index_filter {
    int64_t city;          /* city id, or -1 for any */
    const uint32_t *cates; /* category ids, NULL/0 for any */
    uint32_t ncates;
} rc_index_filter;

typedef struct rc_index_stats {
    uint64_t size; /* rows indexed */
    uint64_t partitions, ivf_partitions;
    uint64_t pending; /* rows touched and not yet checked/applied */
    uint64_t added, reindexed, skipped_small_drift;
    uint64_t retrains;
    uint64_t retrains_fit;     /* of retrains, started because the centroids no longer fit */
    double fit_worst;          /* the largest ratio, over IVF partitions with enough samples, of
                                  the recent rows' mean distance to their nearest centroid to the
                                  training rows' (1 = fits as at training; 0 = none measured) */
    uint64_t overflow_rows;    /* rows in the overflow partition (partition limit reached) */
    uint64_t partition_errors; /* rows put back because no partition could be created */
    uint32_t max_partitions;   /* the configured limit (partitions counts the overflow one too) */
    double staleness_ms;       /* age of the oldest pending touch, 0 when none */
    uint64_t fresh_p50_us, fresh_p99_us; /* touch -> searchable, new rows, recent window */
    rc_hist_snap fresh_hist;             /* the same for every new row since create, us */
    /* How long the writer held a partition's write lock (one batch of at most
     * index.batch rows, or a retrain's swap): over the last 1,024 holds, and
     * every hold since create (us): what a search that finds a lock taken waits
     * for, besides its own wake-up. */
    uint64_t write_hold_p50_us, write_hold_p99_us, write_hold_max_us;
    rc_hist_snap write_hold_hist;
    size_t bytes;     /* everything below plus the per-row state (drift copy, location) */
    size_t vec_bytes; /* FAISS storage of the vectors: flat partitions' floats (none under sq8), IVF
                         list codes and ids with the lists' reserved capacity (estimated: FAISS
                         grows a list like a std::vector, doubling), direct maps, centroids */
    size_t list_bytes; /* of vec_bytes: the IVF list codes and ids as stored (size, not
                          capacity) */
    int storage;       /* rc_index_storage */
} rc_index_stats;

/* table is borrowed and must outlive the index. Sets OpenBLAS to one thread
 * for the process (once): searches run one per worker thread. */
int rc_index_create(const rc_index_opts *opts, rc_table *table, rc_index **out, char *errbuf,
                    size_t errlen);
/* Waits for a background retrain to finish, then frees. NULL-safe. */
void rc_index_destroy(rc_index *ix);

/* Writer thread. Row's vector changed (or row is new). O(1), no lock. */
void rc_index_touch(rc_index *ix, uint32_t row);

/* Writer thread. Applies up to max_rows pending rows (0 = all), batched per
 * partition. Returns the number of rows added or re-indexed, or a negative
 * RC_E* (RC_EFAISS; errbuf gets FAISS's text). */
int rc_index_flush(rc_index *ix, uint32_t max_rows, char *errbuf, size_t errlen);

/* Writer thread. Starts due retrains / swaps in finished ones. Cheap when idle. */
int rc_index_maintain(rc_index *ix, char *errbuf, size_t errlen);

/* Any thread. Top-k rows by indexed inner product with q (dim floats, need not
 * be normalised), over the partitions the filter selects; rows[] and scores[]
 * have room for k, best first. *n gets the count found (<= k). Returns 0 or
 * RC_EFAISS. */
int rc_index_search(rc_index *ix, const float *q, uint32_t k, const rc_index_filter *f,
                    uint32_t *rows, float *scores, uint32_t *n);

/* Where one search spent its time (ns, rc_now_ns clock) and how much it
 * touched: lock = acquiring the partitions, coarse = scoring the IVF
 * centroids and choosing lists, scan = the chosen lists and flat partitions. */
typedef struct rc_index_timing {
    uint64_t lock_ns, coarse_ns, scan_ns;
    uint32_t parts;    /* partitions selected by the filter */
    uint32_t lists;    /* IVF lists scanned */
    uint64_t rows;     /* rows scored in those lists and in the flat partitions */
    uint32_t deferred; /* partition visits put off because the writer held the lock */
} rc_index_timing;

/* rc_index_search that also fills *tm (NULL = no timing, same as
 * rc_index_search). */
int rc_index_search_timed(rc_index *ix, const float *q, uint32_t k, const rc_index_filter *f,
                          uint32_t *rows, float *scores, uint32_t *n, rc_index_timing *tm);

/* Writer thread. 1 while a background (re)training is in flight. When
 * rc_index_maintain returns and none is in flight, no partition is due. */
int rc_index_training(const rc_index *ix);

/* Any thread. Changes opts.search_lists (0 = default) for later searches:
 * the recall/latency knob, safe while searches run. */
void rc_index_set_search_lists(rc_index *ix, uint32_t lists);

/* Any thread. With storage sq8, on = 1: FAISS scans the chosen IVF lists with
 * its sq8 codes (search_preassigned, one call per partition) and flat
 * partitions are scored with one sgemv over their floats, the paths before
 * the int8 scan; 0 (the default): the index scores the lists' rows and the
 * flat partitions' rows with its own int8 copies (per-row scale: finer than
 * sq8's fixed range) and an AVX2 kernel. For benchmarks and tests (the
 * reference path side by side). flat and fp16 storage is always scanned by
 * FAISS / sgemv (their codes are finer), the overflow partition by sgemv. */
void rc_index_set_faiss_scan(rc_index *ix, int on);

/* Writer thread. on = 0: later (re)trainings run inside rc_index_maintain,
 * as with opts.no_background, so when a partition turns IVF depends on the
 * calls made, not on a thread's timing (an offline engine: the evaluator's
 * figures are the same on every run). on = 1: in a background thread. */
void rc_index_set_background(rc_index *ix, int on);

/* Any thread: is row currently searchable (indexed)? */
int rc_index_contains(const rc_index *ix, uint32_t row);

/* Any thread: how many times the index has stored row's vector (added or
 * re-indexed past index.drift), modulo 2^16; 0 for a row never indexed. A
 * reader that kept the value sees it change when the row's indexed vector
 * does (the two-tower mirror's refresh test, tower_serve.h). */
uint16_t rc_index_row_gen(const rc_index *ix, uint32_t row);

/* Writer, before rc_index_flush runs concurrently with anything: fn(arg, row)
 * is called on the writer, inside rc_index_flush, for every row whose vector
 * the flush stored (added, or re-indexed past index.drift), after the row's
 * generation moved. NULL: no calls. */
void rc_index_set_on_store(rc_index *ix, void (*fn)(void *arg, uint32_t row), void *arg);

void rc_index_stats_get(rc_index *ix, rc_index_stats *st);
/* The same without the freshness figures (fresh_hist, fresh_p50_us,
 * fresh_p99_us stay 0): atomic loads only, no copy or sort of the freshness
 * window - for callers on the event loop that need the counters (health). */
void rc_index_counters_get(rc_index *ix, rc_index_stats *st);

#endif
