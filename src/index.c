/* index — partitioned live FAISS index over the item table (see index.h).
 *
 * Layout:
 *  - per row (chunked, rows never move): where it is indexed (partition, local
 *    id), the int8 copy of the indexed vector, pending flag and touch time;
 *  - per partition (city, cate): a FAISS index (flat IP, or IVF IP with an
 *    array direct map so local ids are 0..n-1: IVF-Flat, or IVF-SQ with fp16
 *    or 8-bit codes per index.storage), local id -> row, its rwlock;
 *  - a pending FIFO of touched rows; at most one (re)training job.
 *
 * The state is in src/index_int.h; searches (the readers) are in
 * src/index_search.c. */
#include "recalld/index.h"
#include "index_int.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cblas.h>
#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/utils/distances_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexScalarQuantizer_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>

#include "recalld/common.h"
#include "recalld/log.h"
#include "recalld/vec.h"

/* OpenBLAS's own thread pool; declared here in case cblas.h is netlib's. */
void openblas_set_num_threads(int num_threads);

static void job_hurry(job *j);

static int faiss_err(char *errbuf, size_t errlen, const char *what)
{
    const char *e = faiss_get_last_error();
    return rc_err(errbuf, errlen, RC_EFAISS, "index: %s: %s", what, e ? e : "unknown error");
}

/* ---- storage -------------------------------------------------------------- */

static const char *const storage_names[] = {"flat", "fp16", "sq8", "int8"};

const char *rc_index_storage_name(int storage)
{
    return storage >= 0 && storage < (int)RC_ARRAY_LEN(storage_names) ? storage_names[storage]
                                                                      : NULL;
}

int rc_index_storage_parse(const char *name)
{
    for (int i = 0; name && i < (int)RC_ARRAY_LEN(storage_names); i++)
        if (!strcmp(name, storage_names[i]))
            return i;
    return -1;
}

/* Re-encodes vectors of an IVF index in place (array direct map: a vector may
 * move to another list). In FAISS 1.7.3 update_vectors is a virtual member of
 * IndexIVF that IndexIVFFlat and IndexIVFScalarQuantizer both inherit
 * unchanged (it assigns, calls the subclass's encode_vectors and moves the
 * codes with the direct map); the C API exposes it only as
 * faiss_IndexIVFFlat_update_vectors, whose cast reaches the same IndexIVF
 * base (single inheritance) and so the same virtual call for IVF-SQ. The
 * unit tests check that updated rows move for every storage. */
static int ivf_update(FaissIndex *fx, int n, idx_t *ids, const float *x)
{
    return faiss_IndexIVFFlat_update_vectors((FaissIndexIVFFlat *)fx, n, ids, x);
}

static uint64_t pow2ceil(uint64_t x)
{
    uint64_t c = 1;
    while (c < x)
        c <<= 1;
    return x ? c : 0;
}

/* Writer (the only mutator, so no lock to read sizes): bytes held for p.
 * FAISS keeps each inverted list in std::vectors (ids and codes) grown one
 * entry at a time, so their reserved capacity is the next power of two of the
 * list's size (at least: a list a row moved out of keeps its capacity); a
 * flat partition's floats and the direct map grow by doubling too. *lm gets
 * the list codes and ids as stored, *vm everything FAISS holds. */
static uint64_t part_mem(const rc_index *ix, const part *p, uint64_t *vm, uint64_t *lm)
{
    uint64_t own = (uint64_t)p->cap * sizeof(*p->l2r) + (p->l2k ? (uint64_t)p->cap * 8 : 0) +
                   (uint64_t)p->nq8b * (Q8_BLOCK * (uint64_t)ix->dim + sizeof(*p->q8b));
    uint64_t v = 0, l = 0, d = ix->dim;
    if (!p->ivf) {
        v = p->fx ? pow2ceil(p->n) * d * sizeof(float) : 0;
    } else {
        uint64_t per = ix->code_size + sizeof(idx_t);
        for (uint32_t i = 0; i < p->nlist; i++) {
            uint64_t m = faiss_IndexIVF_get_list_size(p->fx, i);
            l += m * per;
            v += pow2ceil(m) * per + 48; /* + the two std::vector headers */
        }
        v += pow2ceil(p->n) * sizeof(idx_t)            /* direct map */
             + (uint64_t)p->nlist * d * sizeof(float); /* centroids */
        if (ix->storage == RC_INDEX_STORAGE_SQ8)
            v += 2 * sizeof(float); /* the range */
        else if (ix->storage == RC_INDEX_STORAGE_INT8)
            v += LEAN_KSUB * d * sizeof(float); /* the membership code's centroids */
    }
    *vm = v;
    *lm = l;
    return own + v;
}

/* Writer: brings p's share of the byte counters up to date. */
static void part_account(rc_index *ix, part *p)
{
    uint64_t vm, lm, m = part_mem(ix, p, &vm, &lm);
    RADD(&ix->st_bytes, m - p->mem); /* unsigned wrap-around: a decrease works too */
    RADD(&ix->st_vec_bytes, vm - p->vmem);
    RADD(&ix->st_list_bytes, lm - p->lmem);
    p->mem = m;
    p->vmem = vm;
    p->lmem = lm;
}

/* ---- per-row state ---------------------------------------------------- */

static rowchunk *chunk_get(rc_index *ix, uint32_t row)
{
    rowchunk *c = chunk_of(ix, row);
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    STORE(&ix->chunks[row >> CHUNK_BITS], c);
    RADD(&ix->st_bytes, sizeof(*c));
    return c;
}

/* Round to nearest even like lrintf, inlined: lrintf is a libm call per
 * component without -fno-math-errno, and this loop runs for every indexed row
 * (a third of a 1M-row index rebuild went to it). */
static inline int round_i(float x)
{
#if defined(__SSE__)
    return _mm_cvtss_si32(_mm_set_ss(x));
#else
    return (int)lrintf(x);
#endif
}

static void q8_store(int8_t *q, const float *v, uint32_t d)
{
    float m = 0;
    for (uint32_t i = 0; i < d; i++) {
        float a = fabsf(v[i]);
        m = a > m ? a : m;
    }
    float s = m > 0 ? 127.0f / m : 0;
    for (uint32_t i = 0; i < d; i++)
        q[i] = (int8_t)round_i(v[i] * s);
}

/* 1 - cos(v, q), for v of any length (zero included): no normalised copy. */
static float q8_drift(const int8_t *q, const float *v, uint32_t d)
{
    float qq, vv, dot = rc_vec_dot_i8(v, q, d, &vv, &qq);
    if (qq == 0 || vv == 0)
        return qq == vv ? 0.0f : 1.0f;
    return 1.0f - dot / sqrtf(qq * vv);
}

/* ---- partitions --------------------------------------------------------- */

static uint64_t pkey(uint32_t city, uint32_t cate)
{
    return ((uint64_t)city << 32 | cate) + 1; /* 0 marks an empty slot */
}

static uint32_t hslot(const rc_index *ix, uint64_t key)
{
    return (uint32_t)(rc_hash(&key, sizeof(key)) & (ix->hcap - 1));
}

static int hash_grow(rc_index *ix)
{
    uint32_t ncap = ix->hcap ? ix->hcap * 2 : 256;
    uint64_t *ok = ix->hkeys;
    uint32_t *ov = ix->hvals, ocap = ix->hcap;
    ix->hkeys = calloc(ncap, sizeof(*ix->hkeys));
    ix->hvals = calloc(ncap, sizeof(*ix->hvals));
    if (!ix->hkeys || !ix->hvals) {
        free(ix->hkeys);
        free(ix->hvals);
        ix->hkeys = ok;
        ix->hvals = ov;
        return RC_ENOMEM;
    }
    ix->hcap = ncap;
    for (uint32_t i = 0; i < ocap; i++) {
        if (!ok[i])
            continue;
        uint32_t s = hslot(ix, ok[i]);
        while (ix->hkeys[s])
            s = (s + 1) & (ncap - 1);
        ix->hkeys[s] = ok[i];
        ix->hvals[s] = ov[i];
    }
    free(ok);
    free(ov);
    return 0;
}

static void part_free(part *p)
{
    if (!p)
        return;
    if (p->fx)
        faiss_Index_free(p->fx);
    pthread_rwlock_destroy(&p->lock);
    free(p->l2r);
    free(p->l2k);
    for (uint32_t b = 0; b < p->nq8b; b++)
        free(p->q8b[b]);
    free(p->q8b);
    free(p);
}

/* Writer. A new flat partition, published to searches once complete;
 * overflow marks the shared overflow partition. */
static int part_new(rc_index *ix, uint32_t city, uint32_t cate, int overflow, part **out,
                    char *errbuf, size_t errlen)
{
    assert(ix->nparts < MAX_PARTS + 1);
    part *p = calloc(1, sizeof(*p));
    if (!p)
        return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    /* A search holds a partition's read lock for its share of a query (twice:
     * coarse, then lists); without writer preference a steady search load
     * would still starve the writer's flushes of a busy partition. */
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&p->lock, &a);
    pthread_rwlockattr_destroy(&a);
    /* Under sq8 a flat partition is scored with the rows' int8 copies
     * (scan_flat_i8) and snapshotted from the table (part_read): FAISS's float
     * storage (256 B a row at d64, grown by doubling) would only be the
     * reference scan's, so such a partition has none until its IVF index.
     * The overflow partition keeps it (filtered row by row with the floats). */
    if (overflow || !rc_storage_q8(ix->storage)) {
        FaissIndexFlatIP *f = NULL;
        if (faiss_IndexFlatIP_new_with(&f, ix->dim)) {
            int rc = faiss_err(errbuf, errlen, "flat partition");
            part_free(p);
            return rc;
        }
        p->fx = f;
    }
    p->city = city;
    p->cate = cate;
    p->overflow = overflow;
    p->id = ix->nparts;
    STORE(&ix->parts[p->id], p);
    STORE(&ix->nparts, p->id + 1);
    *out = p;
    return 0;
}

/* The shared overflow partition (created on first use): rows of pairs that
 * found no room for a partition of their own. It stays flat (an IVF list
 * would mix cities, so a filtered search could miss rows) and keeps each
 * row's (city, cate) so searches filter it row by row. */
static int part_overflow(rc_index *ix, part **out, char *errbuf, size_t errlen)
{
    if (!ix->ovf) {
        int rc = part_new(ix, UINT32_MAX, UINT32_MAX, 1, &ix->ovf, errbuf, errlen);
        if (rc)
            return rc;
        rc_log_warn("index",
                    "partition limit reached: rows of new city x category pairs go "
                    "to the shared overflow partition",
                    "max_partitions=%u", ix->max_parts);
    }
    *out = ix->ovf;
    return 0;
}

/* Writer: the partition of (city, cate), created when there is room, else the
 * overflow partition. Never fails for lack of a slot, so one pair cannot stop
 * the rows behind it. */
static int part_find(rc_index *ix, uint32_t city, uint32_t cate, part **out, char *errbuf,
                     size_t errlen)
{
    uint64_t key = pkey(city, cate);
    if (ix->hcap) {
        uint32_t s = hslot(ix, key);
        while (ix->hkeys[s] && ix->hkeys[s] != key)
            s = (s + 1) & (ix->hcap - 1);
        if (ix->hkeys[s]) {
            *out = ix->parts[ix->hvals[s]];
            return 0;
        }
    }
    if (ix->nregular >= ix->max_parts)
        return part_overflow(ix, out, errbuf, errlen);
    if ((ix->nregular + 1) * 2 > ix->hcap && hash_grow(ix))
        return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    uint32_t s = hslot(ix, key);
    while (ix->hkeys[s])
        s = (s + 1) & (ix->hcap - 1);
    int rc = part_new(ix, city, cate, 0, out, errbuf, errlen);
    if (rc)
        return rc;
    ix->nregular++;
    ix->hkeys[s] = key;
    ix->hvals[s] = (*out)->id;
    return 0;
}

/* ---- create / destroy --------------------------------------------------- */

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

/* OpenBLAS's pool would split each small product of a search over both cores
 * while other searches wait for them; one query is served by one thread. */
static void blas_one(void)
{
    openblas_set_num_threads(1);
    /* FAISS assigns added and moved rows to their coarse lists through
     * IndexFlatIP: below this many rows at once it used a scalar loop (one
     * dependent add per component in Debian's baseline build), which was the
     * trainer's largest cost at 1M items; sgemm is several times faster even
     * for one row. The blocks bound the score buffer FAISS allocates per
     * call: 4096 x 1024 floats (16 MiB) by default, mapped and unmapped by
     * malloc every time (in a 1M-item daemon mmap, munmap, their page faults
     * and TLB-shootdown interrupts were ~12% of the trainer); 64 x 256 floats (64 KiB) stay below
     * malloc's mmap threshold. */
    faiss_set_distance_compute_blas_threshold(1);
    faiss_set_distance_compute_blas_query_bs(64);
    faiss_set_distance_compute_blas_database_bs(256);
}

int rc_index_create(const rc_index_opts *opts, rc_table *table, rc_index **out, char *errbuf,
                    size_t errlen)
{
    static const rc_index_opts zero;
    if (!table || !out)
        return rc_err(errbuf, errlen, RC_EINVAL, "index: table and out are required");
    if (!opts)
        opts = &zero;
    if (opts->drift < 0 || opts->drift > 2 || opts->retrain_growth < 0 || opts->max_imbalance < 0 ||
        isnan(opts->retrain_fit))
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "index: drift, retrain_growth, max_imbalance, retrain_fit");
    rc_index *ix = calloc(1, sizeof(*ix));
    if (!ix)
        return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    ix->t = table;
    ix->dim = rc_table_dim(table);
    ix->ivf_min = opts->ivf_min ? opts->ivf_min : 4096;
    ix->ivf_min = RC_MAX(ix->ivf_min, 64);
    ix->nprobe = opts->nprobe ? opts->nprobe : 16;
    ix->drift = opts->drift > 0 ? opts->drift : 0.02f;
    ix->batch = opts->batch ? opts->batch : 256;
    ix->growth = opts->retrain_growth > 0 ? opts->retrain_growth : 1.0f;
    ix->max_imb = opts->max_imbalance > 0 ? opts->max_imbalance : 3.0f;
    ix->refit = opts->retrain_fit < 0 ? -1.0f : opts->retrain_fit > 0 ? opts->retrain_fit : 0.5f;
    ix->no_background = opts->no_background;
    ix->slots_max = 4 * ix->nprobe;
    ix->lists = opts->search_lists ? opts->search_lists : 8 * ix->nprobe;
    ix->lists = RC_MAX(ix->lists, ix->nprobe);
    ix->max_parts = opts->max_partitions ? RC_MIN(opts->max_partitions, MAX_PARTS) : MAX_PARTS;
    if (!rc_index_storage_name(opts->storage)) {
        free(ix);
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "index: storage %d: expected flat, fp16, sq8 or int8", opts->storage);
    }
    ix->storage = opts->storage;
    ix->code_size = ix->storage == RC_INDEX_STORAGE_FLAT   ? ix->dim * (uint32_t)sizeof(float)
                    : ix->storage == RC_INDEX_STORAGE_FP16 ? ix->dim * 2
                    : ix->storage == RC_INDEX_STORAGE_SQ8  ? ix->dim
                                                           : 1;
    pthread_mutex_init(&ix->fresh_mu, NULL);
    rc_hist_init(&ix->fresh_hist, rc_hist_freshness_us, rc_hist_freshness_us_n, 1e-6);
    rc_hist_init(&ix->hold_hist, rc_hist_latency_us, rc_hist_latency_us_n, 1e-6);
    if (hash_grow(ix)) {
        rc_index_destroy(ix);
        return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    }
    ix->st_bytes = sizeof(*ix);
    pthread_once(&blas_once, blas_one);
    rc__index_score_init();
    *out = ix;
    return 0;
}

static void job_free(job *j)
{
    if (!j)
        return;
    if (j->out)
        faiss_Index_free(j->out);
    free(j->x);
    free(j->dirty);
    free(j);
}

void rc_index_destroy(rc_index *ix)
{
    if (!ix)
        return;
    if (ix->job) {
        if (ix->job->threaded) {
            job_hurry(ix->job);
            pthread_join(ix->job->th, NULL);
        }
        job_free(ix->job);
    }
    for (uint32_t i = 0; i < ix->nparts; i++)
        part_free(ix->parts[i]);
    for (uint32_t i = 0; i < MAX_CHUNKS; i++)
        free(ix->chunks[i]);
    pthread_mutex_destroy(&ix->fresh_mu);
    free(ix->hkeys);
    free(ix->hvals);
    free(ix->pq);
    free(ix->work);
    free(ix->xbuf);
    free(ix->ibuf);
    free(ix->rbuf);
    free(ix);
}

/* ---- touch -------------------------------------------------------------- */

void rc_index_touch(rc_index *ix, uint32_t row)
{
    rowchunk *c = chunk_get(ix, row);
    uint32_t i = row & (CHUNK_ROWS - 1);
    if (!c || c->pend[i])
        return;
    if (ix->ptail == ix->pcap && ix->phead > 0) {
        memmove(ix->pq, ix->pq + ix->phead, (ix->ptail - ix->phead) * sizeof(*ix->pq));
        ix->ptail -= ix->phead;
        ix->phead = 0;
    }
    if (grow((void **)&ix->pq, &ix->pcap, ix->ptail + 1, sizeof(*ix->pq)))
        return; /* out of memory: the row stays unpending; a later touch retries */
    /* The clock is read once per TOUCH_CLOCK_EVERY new pending rows (and at
     * every flush): a touch time may be that much early, which only makes the
     * measured freshness a little pessimistic. A clock read per row was ~1% of
     * training time. */
    if (ix->touch_clock_left == 0) {
        ix->touch_clock = rc_now_ns();
        ix->touch_clock_left = TOUCH_CLOCK_EVERY;
    }
    ix->touch_clock_left--;
    uint64_t now = ix->touch_clock;
    c->pend[i] = 1;
    c->st[i].touch = now;
    ix->pq[ix->ptail++] = row;
    if (ix->ptail - ix->phead == 1)
        RSTORE(&ix->st_oldest_ns, now);
    RSTORE(&ix->st_pending, (uint64_t)(ix->ptail - ix->phead));
}

/* ---- flush -------------------------------------------------------------- */

static void fresh_record(rc_index *ix, const uint32_t *rows, uint32_t n, uint64_t now)
{
    pthread_mutex_lock(&ix->fresh_mu);
    for (uint32_t i = 0; i < n; i++) {
        rowchunk *c = chunk_of(ix, rows[i]);
        uint64_t us = (now - c->st[rows[i] & (CHUNK_ROWS - 1)].touch) / 1000;
        ix->fresh[ix->nfresh++ % FRESH_RING] = (uint32_t)RC_MIN(us, UINT32_MAX);
        rc_hist_observe(&ix->fresh_hist, us);
    }
    pthread_mutex_unlock(&ix->fresh_mu);
}

/* Writer: a write lock taken at t0 (ns) is released now. */
static void hold_record(rc_index *ix, uint64_t t0)
{
    uint64_t us = (rc_now_ns() - t0) / 1000;
    pthread_mutex_lock(&ix->fresh_mu);
    ix->hold[ix->nhold++ % HOLD_RING] = (uint32_t)RC_MIN(us, UINT32_MAX);
    pthread_mutex_unlock(&ix->fresh_mu);
    rc_hist_observe(&ix->hold_hist, us);
}

static int job_mark_dirty(job *j, uint32_t local)
{
    if (j->ndirty == j->capdirty) {
        size_t cap = j->capdirty;
        if (grow((void **)&j->dirty, &cap, (size_t)j->ndirty + 1, sizeof(*j->dirty)))
            return RC_ENOMEM;
        j->capdirty = (uint32_t)cap;
    }
    j->dirty[j->ndirty++] = local;
    return 0;
}

/* Writer, under p's write lock: room for need local ids, their int8 copies
 * (whole blocks) and, in the overflow partition, their city and category. */
static int part_reserve(part *p, size_t need, uint32_t dim)
{
    uint32_t nb = (uint32_t)((need + Q8_BLOCK - 1) >> Q8_BLOCK_BITS);
    if (nb > p->nq8b) {
        int8_t **bv = realloc(p->q8b, nb * sizeof(*bv));
        if (!bv)
            return RC_ENOMEM;
        p->q8b = bv;
        for (; p->nq8b < nb; p->nq8b++)
            if (!(bv[p->nq8b] = aligned_alloc(64, (size_t)Q8_BLOCK * dim)))
                return RC_ENOMEM;
    }
    if (need <= p->cap)
        return 0;
    size_t cap = p->cap, kcap = p->cap;
    if (grow((void **)&p->l2r, &cap, need, sizeof(*p->l2r)))
        return RC_ENOMEM;
    if (p->overflow && grow((void **)&p->l2k, &kcap, cap, sizeof(*p->l2k)))
        return RC_ENOMEM;
    p->cap = (uint32_t)cap;
    return 0;
}

/* ---- fit: do the centroids still fit the rows? ---------------------------
 * A partition's coarse centroids are trained on its rows of that moment; the
 * rows keep moving (every click moves vectors; install_model replaces them
 * all at once) and FAISS assigns each (re)indexed row to its nearest centroid
 * as of the training. When the rows have moved away from every centroid the
 * lists no longer group what is near, and a search that scans the best lists
 * misses neighbours: growth and imbalance, the other triggers, need not
 * change at all. The fit is the k-means objective measured where it matters:
 * the cosine distance of a row to its nearest centroid (the centroids are
 * unit vectors: spherical k-means), averaged over a sample of the training
 * rows at training (fit0) and over one in FIT_EVERY rows (re)indexed since
 * (fit, a running mean over about FIT_WINDOW of them). */

/* Writer: 1 - the largest inner product of unit vector x with p's centroids. */
static float fit_dist(const rc_index *ix, const part *p, const float *x)
{
    float best = -2.0f;
    for (uint32_t c = 0; c < p->nlist; c++) {
        float s = rc_vec_dot(x, p->cent + (size_t)c * ix->dim, ix->dim);
        best = s > best ? s : best;
    }
    return 1.0f - best;
}

/* Writer: the rows x[0..n) were just (re)indexed in IVF partition p. */
static void fit_note(rc_index *ix, part *p, const float *x, uint32_t n)
{
    if (!p->ivf || !p->cent) /* measured with index.retrain_fit off too: stats */
        return;
    for (uint32_t i = 0; i < n; i++) {
        if (ix->fit_tick++ % FIT_EVERY)
            continue;
        float d = fit_dist(ix, p, x + (size_t)i * ix->dim);
        uint32_t w = RC_MIN(p->fit_n + 1, FIT_WINDOW);
        p->fit += (d - p->fit) / (float)w;
        p->fit_n++;
    }
}

/* Writer: the ratio of p's recent fit to its fit at training; 0 while too
 * few rows were measured. */
static float fit_ratio(const part *p)
{
    if (!p->ivf || p->fit_n < FIT_MIN)
        return 0.0f;
    return p->fit / RC_MAX(p->fit0, 1e-4f);
}

/* Writer, at a training: p's fit0 over a sample of the n training rows x. */
static void fit_train(rc_index *ix, part *p, const float *x, uint32_t n)
{
    uint32_t step = RC_MAX(1u, n / FIT_TRAIN_SAMPLE), m = 0;
    double sum = 0;
    for (uint32_t i = 0; i < n; i += step, m++)
        sum += fit_dist(ix, p, x + (size_t)i * ix->dim);
    p->fit0 = m ? (float)(sum / m) : 0.0f;
    p->fit = p->fit0;
    p->fit_n = 0;
}

/* Applies w[0..n) (all of partition p; new rows first) under one write lock.
 * Vectors are normalised into xbuf before the lock is taken. */
static int apply_batch(rc_index *ix, part *p, const struct work *w, uint32_t n, char *errbuf,
                       size_t errlen)
{
    uint32_t d = ix->dim, nnew = 0;
    for (uint32_t i = 0; i < n; i++) {
        float *x = ix->xbuf + (size_t)i * d;
        rc_table_in_copy(ix->t, w[i].row, x);
        rc_vec_normalize(x, d);
        nnew += !w[i].upd;
        if (w[i].upd)
            ix->ibuf[i - nnew] =
                (idx_t)(uint32_t)LOAD(&chunk_of(ix, w[i].row)->st[w[i].row & (CHUNK_ROWS - 1)].loc);
        else
            ix->rbuf[i] = w[i].row;
    }
    int rc = 0;
    pthread_rwlock_wrlock(&p->lock);
    uint64_t held = rc_now_ns();
    if (nnew && part_reserve(p, (size_t)p->n + nnew, d))
        rc = rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    if (!rc && nnew && p->fx && faiss_Index_add(p->fx, nnew, ix->xbuf))
        rc = faiss_err(errbuf, errlen, "add");
    if (!rc && nnew) {
        memcpy(p->l2r + p->n, ix->rbuf, nnew * sizeof(uint32_t));
        for (uint32_t i = 0; p->overflow && i < nnew; i++)
            p->l2k[p->n + i] = (uint64_t)rc_table_city(ix->t, ix->rbuf[i]) << 32 |
                               rc_table_cate(ix->t, ix->rbuf[i]);
        p->n += nnew;
    }
    if (!rc && n > nnew) {
        const float *xu = ix->xbuf + (size_t)nnew * d;
        if (p->ivf) {
            if (ivf_update(p->fx, (int)(n - nnew), ix->ibuf, xu))
                rc = faiss_err(errbuf, errlen, "update_vectors");
        } else if (p->fx) {
            float *xb;
            size_t sz;
            faiss_IndexFlat_xb(p->fx, &xb, &sz);
            for (uint32_t i = 0; i < n - nnew; i++)
                memcpy(xb + (size_t)ix->ibuf[i] * d, xu + (size_t)i * d, d * sizeof(float));
        }
    }
    /* The int8 copies are what searches score (scan_lists), so they change
     * under the write lock too. */
    for (uint32_t i = 0; !rc && i < n; i++) {
        uint32_t l = i < nnew ? p->n - nnew + i : (uint32_t)ix->ibuf[i - nnew];
        q8_store(part_q8(p, l, d), ix->xbuf + (size_t)i * d, d);
    }
    pthread_rwlock_unlock(&p->lock);
    hold_record(ix, held);
    if (rc)
        return rc;
    uint32_t base = p->n - nnew;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t row = w[i].row;
        rowchunk *c = chunk_of(ix, row);
        uint32_t ri = row & (CHUNK_ROWS - 1);
        if (!w[i].upd)
            STORE(&c->st[ri].loc, (uint64_t)(p->id + 1) << 32 | (base + i));
        RSTORE(&c->gen[ri], (uint16_t)(c->gen[ri] + 1));
        if (ix->on_store)
            ix->on_store(ix->on_store_arg, row);
        /* Without memory to record the row for the retrain in flight, the
         * batch still completes (every row's location and generation set);
         * the retrain's result is dropped at job_finish and trained again. */
        if (w[i].upd && p->job && (uint32_t)ix->ibuf[i - nnew] < p->job->n &&
            job_mark_dirty(p->job, (uint32_t)ix->ibuf[i - nnew]))
            p->job->dirty_lost = 1;
    }
    if (nnew)
        fresh_record(ix, ix->rbuf, nnew, rc_now_ns());
    fit_note(ix, p, ix->xbuf, n);
    RADD(&ix->st_added, nnew);
    if (p->overflow)
        RADD(&ix->st_overflow, nnew);
    RADD(&ix->st_reindexed, n - nnew);
    RADD(&ix->st_size, nnew);
    if (nnew)
        part_account(ix, p);
    return 0;
}

static int work_cmp(const void *a, const void *b)
{
    const struct work *x = a, *y = b;
    if (x->part != y->part)
        return x->part < y->part ? -1 : 1;
    if (x->upd != y->upd)
        return x->upd - y->upd;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* Pops up to max rows from the FIFO into ix->work, dropping rows whose drift
 * is small. A row whose partition cannot be had (out of memory, FAISS) goes
 * back to the tail, so the rows behind it still flow; *failed gets the first
 * such error. Returns the work count or a negative RC_E*. */
static long classify(rc_index *ix, size_t max, int *failed, char *errbuf, size_t errlen)
{
    size_t nw = 0, d = ix->dim;
    if (grow((void **)&ix->work, &ix->wcap, max, sizeof(*ix->work)))
        return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    for (size_t k = 0; k < max; k++) {
        if (k + CLASSIFY_AHEAD < max) {
            /* Rows touched a batch ago are mostly out of cache: fetch ahead. */
            uint32_t r2 = ix->pq[ix->phead + CLASSIFY_AHEAD];
            rowchunk *c2 = chunk_of(ix, r2);
            uint32_t i2 = r2 & (CHUNK_ROWS - 1);
            const float *v2 = rc_table_in(ix->t, r2); /* NULL in an fp16 table */
            __builtin_prefetch(&c2->st[i2], 1);
            for (size_t o = 0; v2 && o < d; o += 16)
                __builtin_prefetch(v2 + o);
        }
        if (k + CLASSIFY_AHEAD / 2 < max) {
            /* The int8 copy's address needs the row's location, fetched above
             * CLASSIFY_AHEAD / 2 rows ago. */
            uint32_t r2 = ix->pq[ix->phead + CLASSIFY_AHEAD / 2];
            uint64_t l2 = RLOAD(&chunk_of(ix, r2)->st[r2 & (CHUNK_ROWS - 1)].loc);
            if (l2) {
                const int8_t *q2 = part_q8(ix->parts[(l2 >> 32) - 1], (uint32_t)l2, d);
                for (size_t o = 0; o < d; o += 64)
                    __builtin_prefetch(q2 + o);
            }
        }
        uint32_t row = ix->pq[ix->phead++];
        rowchunk *c = chunk_of(ix, row);
        uint32_t ri = row & (CHUNK_ROWS - 1);
        c->pend[ri] = 0;
        uint64_t loc = RLOAD(&c->st[ri].loc);
        if (loc) {
            const int8_t *q = part_q8(ix->parts[(loc >> 32) - 1], (uint32_t)loc, d);
            if (q8_drift(q, rc_table_in_read(ix->t, row, ix->vbuf), (uint32_t)d) <= ix->drift) {
                RADD(&ix->st_skipped, 1);
                continue;
            }
            ix->work[nw++] = (struct work){(uint32_t)(loc >> 32) - 1, row, 1};
            continue;
        }
        part *p = NULL;
        int rc =
            part_find(ix, rc_table_city(ix->t, row), rc_table_cate(ix->t, row), &p, errbuf, errlen);
        if (rc) {
            RADD(&ix->st_part_errors, 1);
            if (!*failed)
                *failed = rc;
            rc_index_touch(ix, row);
            continue;
        }
        ix->work[nw++] = (struct work){p->id, row, 0};
    }
    return (long)nw;
}

/* After a failure, rows not yet applied are touched again (their touch time
 * is reset: staleness restarts from the retry). */
static void requeue(rc_index *ix, const struct work *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rc_index_touch(ix, w[i].row);
}

int rc_index_flush(rc_index *ix, uint32_t max_rows, char *errbuf, size_t errlen)
{
    if (!ix)
        return rc_err(errbuf, errlen, RC_EINVAL, "index: NULL index");
    omp_one();
    ix->touch_clock_left = 0; /* touches after a flush read the clock again */
    size_t avail = ix->ptail - ix->phead;
    size_t max = max_rows ? RC_MIN((size_t)max_rows, avail) : avail;
    if (max == 0)
        return 0;
    size_t b = ix->batch;
    if (!ix->xbuf) {
        ix->xbuf = malloc(b * ix->dim * sizeof(float));
        ix->ibuf = malloc(b * sizeof(idx_t));
        ix->rbuf = malloc(b * sizeof(uint32_t));
        if (!ix->xbuf || !ix->ibuf || !ix->rbuf)
            return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    }
    int failed = 0;
    long nw = classify(ix, max, &failed, errbuf, errlen);
    if (ix->phead == ix->ptail)
        ix->phead = ix->ptail = 0;
    uint64_t oldest = 0;
    if (ix->phead < ix->ptail) {
        uint32_t r = ix->pq[ix->phead];
        oldest = chunk_of(ix, r)->st[r & (CHUNK_ROWS - 1)].touch;
    }
    RSTORE(&ix->st_oldest_ns, oldest);
    RSTORE(&ix->st_pending, (uint64_t)(ix->ptail - ix->phead));
    if (nw < 0)
        return (int)nw;
    qsort(ix->work, (size_t)nw, sizeof(*ix->work), work_cmp);
    size_t i = 0;
    while (i < (size_t)nw) {
        size_t n = 1;
        while (i + n < (size_t)nw && n < b && ix->work[i + n].part == ix->work[i].part)
            n++;
        int rc =
            apply_batch(ix, ix->parts[ix->work[i].part], ix->work + i, (uint32_t)n, errbuf, errlen);
        if (rc) {
            requeue(ix, ix->work + i, (size_t)nw - i);
            return rc;
        }
        i += n;
    }
    return failed ? failed : (int)RC_MIN(nw, (long)INT32_MAX);
}

/* ---- (re)training -------------------------------------------------------- */

/* int8: the search scores every candidate with the rows' int8 copies
 * (scan_lists), so FAISS's lists only need to say which local ids each list
 * holds. FAISS has no code-less IVF; the smallest it offers is a product
 * quantizer of one sub-vector of 4 bits over the residuals (IVF-PQ 1x4: one
 * byte a row, where sq8's codes take dim bytes), without the polysemous
 * training ("np": it would only reorder codes nobody reads). Its 16 centroids
 * are trained on LEAN_TRAIN rows spread over the snapshot (repeated when it
 * is smaller). The coarse quantizer gets q's centroids first, so
 * IndexIVF::train leaves it alone. FAISS's own scan of these codes
 * (rc_index_set_faiss_scan) is only a rough one: the A/B reference of the
 * int8 scan is sq8. Any thread. */
static int ivf_lean(job *j, FaissIndexFlatIP *q, FaissIndex **out)
{
    char desc[48];
    FaissIndex *ivf = NULL;
    float *cent, *tx = NULL;
    size_t sz;
    snprintf(desc, sizeof(desc), "IVF%u,PQ1x%unp", j->nlist, LEAN_BITS);
    if (faiss_index_factory(&ivf, (int)j->dim, desc, METRIC_INNER_PRODUCT))
        return -1;
    faiss_IndexFlat_xb(q, &cent, &sz);
    if (faiss_Index_add(faiss_IndexIVF_quantizer(ivf), j->nlist, cent))
        goto fail;
    size_t nt = LEAN_TRAIN; /* rows spread over the snapshot, repeated when it is smaller */
    if (!(tx = malloc(nt * j->dim * sizeof(float))))
        goto fail;
    for (size_t i = 0; i < nt; i++)
        memcpy(tx + i * j->dim, j->x + (size_t)((uint64_t)i * j->n / nt) * j->dim,
               j->dim * sizeof(float));
    if (faiss_Index_train(ivf, (idx_t)nt, tx))
        goto fail;
    free(tx);
    *out = ivf;
    return 0;
fail:
    free(tx);
    faiss_Index_free(ivf);
    return -1;
}

/* Builds job->out from the snapshot: spherical k-means (inner product), then
 * an IVF index (IVF-Flat, or IVF-SQ whose quantizer is trained on the
 * snapshot) with an array direct map holding rows 0..n-1. Any thread. */
static void job_run(job *j)
{
    FaissClusteringParameters cp;
    FaissClustering *cl = NULL;
    FaissIndexFlatIP *q = NULL;
    FaissIndex *ivf = NULL;
    const char *what = "kmeans";
    omp_one();
    faiss_ClusteringParameters_init(&cp);
    cp.niter = KMEANS_ITER;
    cp.spherical = 1;
    cp.min_points_per_centroid = 1; /* nlist ~ 4 sqrt(n) is by design: no warning */
    cp.max_points_per_centroid = 256;
    cp.seed = (int)(j->n * 2654435761u & 0x7fffffff);
    if (faiss_Clustering_new_with_params(&cl, (int)j->dim, (int)j->nlist, &cp) ||
        faiss_IndexFlatIP_new_with(&q, j->dim) || faiss_Clustering_train(cl, j->n, j->x, q))
        goto fail;
    what = "ivf";
    /* train() leaves the final centroids in q; make sure of it. */
    if (faiss_Index_ntotal(q) != (idx_t)j->nlist) {
        float *c;
        size_t sz;
        faiss_Clustering_centroids(cl, &c, &sz);
        if (faiss_Index_reset(q) || faiss_Index_add(q, j->nlist, c))
            goto fail;
    }
    if (j->storage == RC_INDEX_STORAGE_FLAT) {
        FaissIndexIVFFlat *f = NULL;
        if (faiss_IndexIVFFlat_new_with_metric(&f, q, j->dim, j->nlist, METRIC_INNER_PRODUCT))
            goto fail;
        ivf = f;
        faiss_IndexIVFFlat_set_own_fields(f, 1);
        q = NULL;
    } else if (j->storage == RC_INDEX_STORAGE_INT8) {
        what = "ivf-int8";
        if (ivf_lean(j, q, &ivf))
            goto fail;
        faiss_Index_free(q); /* its centroids were copied into ivf's own quantizer */
        q = NULL;
    } else {
        /* sq8: one byte a component over the fixed range [-1, 1], which holds
         * every component of a unit vector. A range trained on the snapshot
         * (per dimension, or on residuals to the centroids) is finer, but the
         * vectors keep moving after training and FAISS clamps what falls
         * outside it: a row that moved away from its partition's old spread
         * would lose most of its score (measured: 0.94 instead of 1 for a new
         * direction with trained residual ranges). A step of 2/255 costs about
         * 0.002 of inner product (standard deviation), which the re-scoring of
         * the candidates with the table's vectors absorbs. fp16 needs no
         * range. Neither encodes residuals: a code is the vector itself. */
        int sq8 = j->storage == RC_INDEX_STORAGE_SQ8;
        FaissIndexIVFScalarQuantizer *f = NULL;
        what = "ivf-sq";
        if (faiss_IndexIVFScalarQuantizer_new_with_metric(
                &f, q, j->dim, j->nlist, sq8 ? QT_8bit_uniform : QT_fp16, METRIC_INNER_PRODUCT, 0))
            goto fail;
        ivf = f;
        faiss_IndexIVFScalarQuantizer_set_own_fields(f, 1);
        q = NULL;
        /* The quantizer already holds nlist centroids, so train() leaves it
         * alone and trains only the scalar quantizer: on two vectors, all
         * components -1 and all +1, for the range [-1, 1]. */
        float *ends = malloc(2 * (size_t)j->dim * sizeof(float));
        if (!ends) {
            what = "out of memory";
            goto fail;
        }
        for (uint32_t i = 0; i < j->dim; i++) {
            ends[i] = -1.0f;
            ends[j->dim + i] = 1.0f;
        }
        int trc = faiss_Index_train(ivf, 2, ends);
        free(ends);
        if (trc)
            goto fail;
    }
    faiss_IndexIVF_set_nprobe(ivf, j->slots);
    if (faiss_IndexIVF_make_direct_map(ivf, 1) || faiss_Index_add(ivf, j->n, j->x))
        goto fail;
    faiss_Clustering_free(cl);
    j->out = ivf;
    j->rc = 0;
    STORE(&j->done, 1);
    return;
fail:
    j->rc = RC_EFAISS;
    snprintf(j->err, sizeof(j->err), "index: %s: %s", what,
             faiss_get_last_error() ? faiss_get_last_error() : "unknown error");
    if (ivf)
        faiss_Index_free(ivf);
    if (q)
        faiss_Index_free(q);
    if (cl)
        faiss_Clustering_free(cl);
    STORE(&j->done, 1);
}

static void *job_thread(void *arg)
{
    job *j = arg;
    STORE(&j->tid, (int)syscall(SYS_gettid));
    job_run(j);
    return NULL;
}

/* Destroy while a retrain runs: its result is not needed, but FAISS's k-means
 * cannot be interrupted, so it must finish before its memory goes. It runs at
 * the trainer's lowered priority (nice, or SCHED_IDLE with
 * pipeline.background_policy "idle"), which on a busy machine leaves it a
 * sliver of a core: a shutdown could wait minutes for a k-means of one second.
 * Give it the caller's policy and nice value back when the process may (root,
 * CAP_SYS_NICE or RLIMIT_NICE); otherwise say why the shutdown waits. The
 * policy goes through the pthread handle: a SCHED_IDLE thread on a busy
 * machine may not have run its first instruction (stored its kernel id) yet;
 * once SCHED_OTHER it does, and its nice value follows. */
static void job_hurry(job *j)
{
    if (LOAD(&j->done))
        return;
    struct sched_param sp, cur;
    int pol = sched_getscheduler(0), tpol = -1, ok = pol >= 0 && sched_getparam(0, &sp) == 0;
    if (ok && (pthread_getschedparam(j->th, &tpol, &cur) || tpol != pol))
        ok = (errno = pthread_setschedparam(j->th, pol, &sp)) == 0;
    int tid = LOAD(&j->tid);
    for (int i = 0; ok && tid <= 0 && !LOAD(&j->done) && i < 5000; i++) { /* <= 5 s */
        usleep(1000);
        tid = LOAD(&j->tid);
    }
    if (LOAD(&j->done))
        return;
    errno = ok ? 0 : errno;
    int me = ok ? getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)) : 0;
    if (ok && errno == 0 && tid > 0 && setpriority(PRIO_PROCESS, (id_t)tid, me) == 0)
        rc_log_info("index", "waiting for an index retrain to finish", "rows=%u nice=%d", j->n, me);
    else
        rc_log_warn("index", "waiting for an index retrain to finish at its lowered priority",
                    "rows=%u error=\"%s\"", j->n, strerror(errno ? errno : ESRCH));
}

/* Copies locals [i0, i0+n) of p's current index into x. Writer thread (the
 * only mutator), so no lock is needed to read. An IVF-SQ partition holds only
 * approximations and a flat partition under sq8 holds no floats at all: their
 * rows are read from the table instead (normalised, the writer's current
 * vectors), so a retrain never encodes decoded codes again. */
static int part_read(const rc_index *ix, part *p, uint32_t i0, uint32_t n, float *x)
{
    uint32_t dim = ix->dim;
    if (n == 0)
        return 0;
    if (!p->fx || (p->ivf && ix->storage != RC_INDEX_STORAGE_FLAT)) {
        for (uint32_t i = 0; i < n; i++) {
            float *v = x + (size_t)i * dim;
            rc_table_in_copy(ix->t, p->l2r[i0 + i], v);
            rc_vec_normalize(v, dim);
        }
        return 0;
    }
    if (!p->ivf) {
        float *xb;
        size_t sz;
        faiss_IndexFlat_xb(p->fx, &xb, &sz);
        memcpy(x, xb + (size_t)i0 * dim, (size_t)n * dim * sizeof(float));
        return 0;
    }
    return faiss_Index_reconstruct_n(p->fx, i0, n, x) ? RC_EFAISS : 0;
}

static int job_start(rc_index *ix, part *p, char *errbuf, size_t errlen)
{
    job *j = calloc(1, sizeof(*j));
    if (!j)
        return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    j->p = p;
    j->n = p->n;
    j->dim = ix->dim;
    j->storage = ix->storage;
    j->nlist = (uint32_t)lrint(4.0 * sqrt((double)p->n));
    j->nlist = RC_MAX(1, RC_MIN(j->nlist, p->n));
    j->slots = RC_MIN(j->nlist, ix->slots_max);
    j->x = malloc((size_t)j->n * ix->dim * sizeof(float));
    if (!j->x) {
        job_free(j);
        return rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
    }
    if (part_read(ix, p, 0, j->n, j->x)) {
        job_free(j);
        return faiss_err(errbuf, errlen, "snapshot");
    }
    p->job = j;
    ix->job = j;
    if (!ix->no_background && pthread_create(&j->th, NULL, job_thread, j) == 0) {
        j->threaded = 1;
        return 0;
    }
    job_run(j);
    return 0;
}

/* Writer: brings the finished job's index up to date with what the old one
 * gained since the snapshot, then swaps it in. Local ids are unchanged. */
static int job_finish(rc_index *ix, char *errbuf, size_t errlen)
{
    job *j = ix->job;
    part *p = j->p;
    int rc = 0;
    float *x = NULL;
    if (j->threaded)
        pthread_join(j->th, NULL);
    ix->job = NULL;
    p->job = NULL;
    if (j->rc) {
        rc = rc_err(errbuf, errlen, j->rc, "%s", j->err);
        goto out_retry;
    }
    if (j->dirty_lost) {
        rc = rc_err(errbuf, errlen, RC_ENOMEM,
                    "index: out of memory recording rows moved during a retrain (retried)");
        goto out_retry;
    }
    uint32_t extra = p->n - j->n, need = RC_MAX(extra, j->ndirty);
    if (need && !(x = malloc((size_t)need * ix->dim * sizeof(float)))) {
        rc = rc_err(errbuf, errlen, RC_ENOMEM, "index: out of memory");
        goto out_retry;
    }
    if (extra && (part_read(ix, p, j->n, extra, x) || faiss_Index_add(j->out, extra, x))) {
        rc = faiss_err(errbuf, errlen, "retrain catch-up");
        goto out_retry;
    }
    for (uint32_t i = 0; i < j->ndirty && !rc; i++) {
        idx_t id = j->dirty[i];
        if (part_read(ix, p, j->dirty[i], 1, x) || ivf_update(j->out, 1, &id, x))
            rc = faiss_err(errbuf, errlen, "retrain catch-up");
    }
    if (rc)
        goto out_retry;
    FaissIndex *qz = faiss_IndexIVF_quantizer(j->out);
    float *cent;
    size_t sz;
    faiss_IndexFlat_xb(qz, &cent, &sz);
    FaissIndex *old = p->fx;
    int was_ivf = p->ivf;
    pthread_rwlock_wrlock(&p->lock);
    uint64_t held = rc_now_ns();
    p->fx = j->out;
    p->ivf = 1;
    p->nlist = j->nlist;
    p->slots = j->slots;
    p->cent = cent;
    p->ver++;
    pthread_rwlock_unlock(&p->lock);
    hold_record(ix, held);
    j->out = NULL;
    if (old)
        faiss_Index_free(old);
    p->n_trained = j->n; /* what the centroids saw, not what was caught up */
    p->n_checked = p->n;
    fit_train(ix, p, j->x, j->n);
    if (!was_ivf)
        RADD(&ix->st_ivf, 1);
    RADD(&ix->st_retrains, 1);
    if (p->due_fit)
        RADD(&ix->st_retrains_fit, 1);
    part_account(ix, p);
    goto out;
out_retry:
    p->retry_at = p->n + RC_MAX(p->n / 2, 64); /* do not spin on a failing partition */
out:
    free(x);
    job_free(j);
    return rc;
}

/* Writer: should p be (re)trained now? Checks imbalance at most once per 10%
 * growth (it walks the lists). */
static int part_due(rc_index *ix, part *p)
{
    if (p->overflow || p->n < p->retry_at)
        return 0;
    if (!p->ivf)
        return p->n >= ix->ivf_min;
    if ((double)p->n > (1.0 + ix->growth) * p->n_trained)
        return 1;
    if (ix->refit >= 0 && fit_ratio(p) > 1.0f + ix->refit)
        return 2;
    if (p->n < p->n_checked + p->n_checked / 10 + 1)
        return 0;
    p->n_checked = p->n;
    return faiss_IndexIVF_imbalance_factor(p->fx) > ix->max_imb;
}

int rc_index_maintain(rc_index *ix, char *errbuf, size_t errlen)
{
    if (!ix)
        return rc_err(errbuf, errlen, RC_EINVAL, "index: NULL index");
    omp_one();
    if (ix->job) {
        if (!LOAD(&ix->job->done))
            return 0;
        int rc = job_finish(ix, errbuf, errlen);
        if (rc)
            return rc;
    }
    float worst = 0.0f;
    int rc = 0;
    for (uint32_t i = 0; i < ix->nparts && !rc; i++) {
        part *p = ix->parts[i];
        float fr = fit_ratio(p);
        worst = fr > worst ? fr : worst;
        if (ix->job) /* one background training at a time */
            continue;
        int due = part_due(ix, p);
        if (!due)
            continue;
        p->due_fit = due == 2;
        if (!(rc = job_start(ix, p, errbuf, errlen)) && (ix->no_background || !ix->job))
            rc = job_finish(ix, errbuf, errlen);
    }
    uint32_t bits;
    memcpy(&bits, &worst, sizeof bits);
    RSTORE(&ix->st_fit_worst, bits);
    return rc;
}

uint16_t rc_index_row_gen(const rc_index *ix, uint32_t row)
{
    const rowchunk *c = ix ? chunk_of(ix, row) : NULL;
    return c ? RLOAD(&c->gen[row & (CHUNK_ROWS - 1)]) : 0;
}

void rc_index_set_on_store(rc_index *ix, void (*fn)(void *arg, uint32_t row), void *arg)
{
    ix->on_store = fn;
    ix->on_store_arg = arg;
}

int rc_index_contains(const rc_index *ix, uint32_t row)
{
    if (!ix)
        return 0;
    const rowchunk *c = chunk_of(ix, row);
    return c && LOAD(&c->st[row & (CHUNK_ROWS - 1)].loc) != 0;
}

void rc_index_counters_get(rc_index *ix, rc_index_stats *st)
{
    if (!ix || !st)
        return;
    memset(st, 0, sizeof(*st));
    st->size = RLOAD(&ix->st_size);
    st->partitions = LOAD(&ix->nparts);
    st->ivf_partitions = RLOAD(&ix->st_ivf);
    st->pending = RLOAD(&ix->st_pending);
    st->added = RLOAD(&ix->st_added);
    st->reindexed = RLOAD(&ix->st_reindexed);
    st->skipped_small_drift = RLOAD(&ix->st_skipped);
    st->retrains = RLOAD(&ix->st_retrains);
    st->retrains_fit = RLOAD(&ix->st_retrains_fit);
    uint32_t fb = RLOAD(&ix->st_fit_worst);
    float fw;
    memcpy(&fw, &fb, sizeof fw);
    st->fit_worst = fw;
    st->overflow_rows = RLOAD(&ix->st_overflow);
    st->partition_errors = RLOAD(&ix->st_part_errors);
    st->max_partitions = ix->max_parts;
    uint64_t oldest = RLOAD(&ix->st_oldest_ns), now = rc_now_ns();
    st->staleness_ms = oldest && now > oldest ? (double)(now - oldest) / 1e6 : 0.0;
    st->bytes = (size_t)RLOAD(&ix->st_bytes);
    st->vec_bytes = (size_t)RLOAD(&ix->st_vec_bytes);
    st->list_bytes = (size_t)RLOAD(&ix->st_list_bytes);
    st->storage = ix->storage;
}

/* Any thread: p50, p99 and max (out[0..2]) of the last min(n, cap) samples of
 * a ring kept under fresh_mu (n: samples ever written); 0 when it is empty. */
static int ring_quantiles(rc_index *ix, const uint32_t *ring, const uint64_t *n, uint32_t cap,
                          uint64_t out[3])
{
    uint32_t tmp[FRESH_RING > HOLD_RING ? FRESH_RING : HOLD_RING], mx = 0, pq[2];
    pthread_mutex_lock(&ix->fresh_mu);
    uint32_t m = (uint32_t)RC_MIN(*n, (uint64_t)cap);
    memcpy(tmp, ring, m * sizeof(uint32_t));
    pthread_mutex_unlock(&ix->fresh_mu);
    if (m == 0)
        return 0;
    for (uint32_t i = 0; i < m; i++)
        mx = RC_MAX(mx, tmp[i]);
    const double q[2] = {0.5, 0.99};
    rc_quantiles_u32(tmp, m, q, 2, pq);
    out[0] = pq[0];
    out[1] = pq[1];
    out[2] = mx;
    return 1;
}

void rc_index_stats_get(rc_index *ix, rc_index_stats *st)
{
    if (!ix || !st)
        return;
    rc_index_counters_get(ix, st);
    rc_hist_snapshot(&ix->fresh_hist, &st->fresh_hist);
    rc_hist_snapshot(&ix->hold_hist, &st->write_hold_hist);
    uint64_t q[3];
    if (ring_quantiles(ix, ix->fresh, &ix->nfresh, FRESH_RING, q)) {
        st->fresh_p50_us = q[0];
        st->fresh_p99_us = q[1];
    }
    if (ring_quantiles(ix, ix->hold, &ix->nhold, HOLD_RING, q)) {
        st->write_hold_p50_us = q[0];
        st->write_hold_p99_us = q[1];
        st->write_hold_max_us = q[2];
    }
}

int rc_index_training(const rc_index *ix) { return ix && ix->job != NULL; }

void rc_index_set_faiss_scan(rc_index *ix, int on)
{
    if (ix)
        RSTORE(&ix->faiss_scan, on ? 1 : 0);
}

void rc_index_set_background(rc_index *ix, int on)
{
    if (ix)
        ix->no_background = !on;
}

void rc_index_set_search_lists(rc_index *ix, uint32_t lists)
{
    if (ix)
        RSTORE(&ix->lists, RC_MAX(lists ? lists : 8 * ix->nprobe, ix->nprobe));
}
