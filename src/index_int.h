/* index_int.h — the index's state, shared by src/index.c (the writer: partitions,
 * flush, retraining, stats) and src/index_search.c (the readers: search). Not a
 * public header: include/recalld/index.h is the interface. */
#ifndef RECALLD_INDEX_INT_H
#define RECALLD_INDEX_INT_H

#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include <faiss/c_api/Index_c.h>

#include "recalld/common.h"
#include "recalld/hist.h"
#include "recalld/index.h"
#include "recalld/table.h"

#define CHUNK_BITS        16
#define CHUNK_ROWS        (1u << CHUNK_BITS)
#define MAX_CHUNKS        (1u << (32 - CHUNK_BITS))
#define MAX_PARTS         65536u /* regular partitions at most (index.max_partitions) */
#define FRESH_RING        4096u
#define HOLD_RING         1024u /* recent write-lock holds kept for the stats' quantiles */
#define KMEANS_ITER       12
#define CLASSIFY_AHEAD    8 /* pending rows prefetched ahead of the drift check */
#define TOUCH_CLOCK_EVERY 32u
/* One (re)indexed row in FIT_EVERY is measured against the centroids
 * (index.retrain_fit); the fit's running mean weighs about FIT_WINDOW samples,
 * and FIT_MIN samples since training come before the fit may retrain. */
#define FIT_EVERY  8u
#define FIT_WINDOW 256u
#define FIT_MIN    64u
/* index.storage int8: FAISS's lists hold a PQ 1 x LEAN_BITS code, trained on
 * LEAN_TRAIN snapshot rows (>= 39 a centroid, FAISS's minimum without a
 * warning). */
#define LEAN_BITS  4u
#define LEAN_KSUB  (1u << LEAN_BITS)
#define LEAN_TRAIN 1024u
/* Training rows measured for the fit at training (on the trainer: 256 x nlist
 * inner products, a few ms). */
#define FIT_TRAIN_SAMPLE 256u

/* Int8 copies of a partition's rows, by local id, in blocks of Q8_BLOCK rows
 * (32 KiB at d64): a flat partition's scan reads them front to back and an
 * IVF list's rows sit within its partition's blocks, where copies kept by
 * table row were spread over the whole table (a page apart at 200
 * partitions). Blocks never move, so growing a partition copies nothing.
 * They are cache-line aligned: at d64 a copy is one line, not two. */
#define Q8_BLOCK_BITS 9
#define Q8_BLOCK      (1u << Q8_BLOCK_BITS)

/* A row's state in one 16-byte record, so that a drift check misses the
 * cache once for it (plus once for its q8 copy). loc is read by any thread
 * (atomic); touch belongs to the writer. */
typedef struct rowstate {
    uint64_t loc;   /* (part + 1) << 32 | local id; 0 = not indexed */
    uint64_t touch; /* last touch time in ns */
} rowstate;

/* Per-row state for CHUNK_ROWS rows. pend (in the FIFO) is apart and one
 * byte a row: every touch reads it, and that small array stays in cache,
 * while a touch only stores into the record (no stall on its miss). */
typedef struct rowchunk {
    rowstate st[CHUNK_ROWS];
    uint8_t pend[CHUNK_ROWS];
    uint16_t gen[CHUNK_ROWS]; /* stores of the row's vector (rc_index_row_gen); the writer
                                 writes, any thread reads (relaxed atomics) */
} rowchunk;

typedef struct job job;

typedef struct part {
    pthread_rwlock_t lock;
    uint32_t city, cate, id;
    /* Guarded by lock (written by the writer under wrlock, read under rdlock). */
    FaissIndex *fx; /* flat IP, or IVF IP (IVF-Flat or IVF-SQ per ix->storage) */
    int ivf;
    uint32_t nlist;    /* IVF only */
    uint32_t slots;    /* FAISS nprobe = min(nlist, ix->slots_max), fixed per index */
    const float *cent; /* nlist * dim, the quantizer's own storage */
    uint32_t *l2r;     /* local id -> row */
    uint64_t *l2k;     /* overflow only: local id -> city << 32 | cate */
    uint32_t n, cap;
    int8_t **q8b;  /* int8 copies of the indexed vectors: block b holds local ids
                      b * Q8_BLOCK .. (b + 1) * Q8_BLOCK - 1 (part_q8) */
    uint32_t nq8b; /* blocks allocated (they cover cap rows) */
    int overflow;  /* the shared overflow partition: flat for good, filtered by row */
    uint32_t ver;  /* +1 under the write lock whenever fx, ivf, nlist or cent change: a
                      search that chose lists under one read lock checks it under the next */
    /* Writer only. */
    uint32_t n_trained; /* rows at the last training (0 = never) */
    uint32_t n_checked; /* rows at the last imbalance check */
    uint32_t retry_at;  /* after a failed training, wait for this many rows */
    /* Fit (IVF only): mean cosine distance of sampled rows to their nearest
     * centroid, at training (fit0) and of the rows (re)indexed since, as a
     * running mean that weighs the last FIT_WINDOW samples most (fit). */
    float fit0, fit;
    uint32_t fit_n;           /* samples since training */
    int due_fit;              /* the retrain in flight was started by the fit */
    job *job;                 /* training in flight for this partition */
    uint64_t mem, vmem, lmem; /* this partition's share of st_bytes, st_vec_bytes and
                                 st_list_bytes (part_account) */
} part;

struct job {
    part *p;
    uint32_t n, nlist, slots, dim;
    int storage;
    float *x;        /* n * dim snapshot of the indexed vectors */
    FaissIndex *out; /* result, owned by the job until swapped in */
    int rc;
    char err[256];
    int done; /* atomic: thread finished */
    int threaded;
    pthread_t th;
    int tid;         /* atomic: the thread's kernel id once it runs (for the shutdown renice) */
    uint32_t *dirty; /* local ids < n re-indexed after the snapshot */
    uint32_t ndirty, capdirty;
    int dirty_lost; /* writer: one could not be recorded, so the result is dropped */
};

struct rc_index {
    rc_table *t;
    uint32_t dim;
    uint32_t ivf_min, nprobe, batch, slots_max, lists;
    float drift, growth, max_imb, refit; /* refit < 0: no fit retrains */
    uint32_t fit_tick;                   /* writer only: (re)indexed rows counted for sampling */
    int no_background;
    int storage;        /* rc_index_storage of IVF lists */
    uint32_t code_size; /* bytes of one vector in an IVF list */
    int faiss_scan;     /* atomic: 1 = FAISS scans the chosen IVF lists with its own codes
                           (search_preassigned), 0 = scan_lists over the int8 copies */

    rowchunk *chunks[MAX_CHUNKS]; /* atomic pointers */
    part *parts[MAX_PARTS + 1];   /* atomic pointers; nparts atomic; + the overflow */
    uint32_t nparts;
    uint32_t max_parts; /* regular partitions at most; later pairs go to the overflow */
    uint32_t nregular;  /* writer only: regular partitions created */
    part *ovf;          /* writer only: the overflow partition, once created */

    /* Writer only: (city, cate) -> part id, open addressing. */
    uint64_t *hkeys;
    uint32_t *hvals;
    uint32_t hcap;

    /* Writer only: FIFO of pending rows. */
    uint32_t *pq;
    size_t phead, ptail, pcap;
    uint64_t touch_clock; /* rc_now_ns() cached for touches */
    uint32_t touch_clock_left;

    job *job;
    void (*on_store)(void *arg, uint32_t row); /* rc_index_set_on_store; writer only */
    void *on_store_arg;

    /* Writer-only scratch for flush. */
    struct work *work;
    size_t wcap;
    float *xbuf;
    idx_t *ibuf;
    float vbuf[RC_TABLE_MAX_DIM]; /* a row decoded from an fp16 table (rc_table_in_read) */
    uint32_t *rbuf;

    /* Stats: written by the writer with relaxed atomics. */
    uint64_t st_size, st_ivf, st_pending, st_added, st_reindexed, st_skipped, st_retrains;
    uint64_t st_oldest_ns, st_bytes, st_vec_bytes, st_list_bytes;
    uint64_t st_overflow, st_part_errors, st_retrains_fit;
    uint32_t st_fit_worst; /* float bits */
    pthread_mutex_t fresh_mu;
    uint32_t fresh[FRESH_RING];
    uint64_t nfresh;
    rc_hist fresh_hist; /* every fresh[] sample, for /metrics */
    /* How long the writer held a partition's write lock (a batch, a retrain's
     * swap), us: what a search that finds it taken waits at most. Under
     * fresh_mu too. */
    uint32_t hold[HOLD_RING];
    uint64_t nhold;
    rc_hist hold_hist;
};

struct work {
    uint32_t part, row;
    int upd;
};

#define LOAD(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define RLOAD(p)     __atomic_load_n((p), __ATOMIC_RELAXED)
#define RSTORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define RADD(p, v)   __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

/* FAISS parallelises inside a call with OpenMP; with many caller threads on
 * few cores that only adds contention, so every thread entering FAISS here
 * runs it on one thread (the ICV is per thread). */
/* Storages whose search scores the rows' int8 copies (scan_lists,
 * scan_flat_i8) rather than FAISS's codes. */
static inline int rc_storage_q8(int storage)
{
    return storage == RC_INDEX_STORAGE_SQ8 || storage == RC_INDEX_STORAGE_INT8;
}

static inline void omp_one(void)
{
    if (omp_get_max_threads() != 1)
        omp_set_num_threads(1);
}

static inline int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return RC_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static inline rowchunk *chunk_of(const rc_index *ix, uint32_t row)
{
    return LOAD(&ix->chunks[row >> CHUNK_BITS]);
}

/* The int8 copy of local id l of p (l < p->nq8b * Q8_BLOCK); under p's lock,
 * or by the writer. */
static inline int8_t *part_q8(const part *p, uint32_t l, size_t dim)
{
    return p->q8b[l >> Q8_BLOCK_BITS] + (size_t)(l & (Q8_BLOCK - 1)) * dim;
}

/* Picks the int8 scoring kernel for this CPU once (index_search.c). */
/* Tests only: when set, a search calls it between its two passes, holding no
 * lock (search_parts), so that a test can retrain a partition there. */
extern void (*rc__index_between_passes)(void *arg);
extern void *rc__index_between_passes_arg;

void rc__index_score_init(void);
/* out[j] = q . x / |x| for the int8 rows xp[j] with the kernel picked (tests). */
void rc__index_score(const float *q, const int8_t *const *xp, size_t m, size_t d, float *out);

#endif
