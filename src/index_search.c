/* index_search — the index's readers: a query scored against the coarse centroids
 * of every selected IVF partition, the best `search_lists` lists over all of them
 * scanned (sq8: the per-row int8 copies with an AVX2 kernel; flat and fp16: FAISS's
 * search_preassigned), every selected flat partition scanned (sq8: the int8
 * copies too; otherwise one sgemv over its floats), all into one top-k. The state is
 * src/index_int.h; the writer is src/index.c. */

#include "index_int.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cblas.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>

#include "recalld/vec.h"

/* ---- search ------------------------------------------------------------- */

typedef struct cand {
    float s;
    uint32_t sel, list;
} cand;

typedef struct hit {
    float s;
    uint32_t row;
} hit;

/* Per-thread search buffers, grown on demand, freed at thread exit. */
typedef struct scratch {
    part **sel;
    uint32_t *cnt, *off, *ver, *def;
    cand *heap, *byp;
    float *cs, *dis, *adis;
    idx_t *lab, *assign, *ids;
    hit *top;
    const int8_t **qp;
    uint32_t *qr;
    float *qs;
    size_t c_sel, c_cnt, c_off, c_ver, c_def, c_heap, c_byp, c_cs, c_dis, c_adis, c_lab, c_assign,
        c_top, c_ids, c_qp, c_qr, c_qs;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *arg)
{
    scratch *s = arg;
    if (!s)
        return;
    free(s->sel);
    free(s->cnt);
    free(s->off);
    free(s->ver);
    free(s->def);
    free(s->heap);
    free(s->byp);
    free(s->cs);
    free(s->dis);
    free(s->adis);
    free(s->lab);
    free(s->assign);
    free(s->top);
    free(s->ids);
    free(s->qp);
    free(s->qr);
    free(s->qs);
    free(s);
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

static scratch *scratch_get(void)
{
    pthread_once(&scratch_once, scratch_init);
    scratch *s = pthread_getspecific(scratch_key);
    if (!s && (s = calloc(1, sizeof(*s))) && pthread_setspecific(scratch_key, s)) {
        free(s);
        s = NULL;
    }
    return s;
}

/* Min-heaps on the member s: the root is the weakest kept entry. One
 * definition for both element types (list candidates and row hits). */
#define RC_MINHEAP(T)                                                                              \
    static void T##_down(T *h, uint32_t n, uint32_t i)                                             \
    {                                                                                              \
        T v = h[i];                                                                                \
        for (;;) {                                                                                 \
            uint32_t c = 2 * i + 1;                                                                \
            if (c >= n)                                                                            \
                break;                                                                             \
            if (c + 1 < n && h[c + 1].s < h[c].s)                                                  \
                c++;                                                                               \
            if (v.s <= h[c].s)                                                                     \
                break;                                                                             \
            h[i] = h[c];                                                                           \
            i = c;                                                                                 \
        }                                                                                          \
        h[i] = v;                                                                                  \
    }                                                                                              \
    static void T##_push(T *h, uint32_t *n, uint32_t cap, T v)                                     \
    {                                                                                              \
        if (*n < cap) {                                                                            \
            uint32_t i = (*n)++;                                                                   \
            while (i > 0 && h[(i - 1) / 2].s > v.s) {                                              \
                h[i] = h[(i - 1) / 2];                                                             \
                i = (i - 1) / 2;                                                                   \
            }                                                                                      \
            h[i] = v;                                                                              \
        } else if (v.s > h[0].s) {                                                                 \
            h[0] = v;                                                                              \
            T##_down(h, *n, 0);                                                                    \
        }                                                                                          \
    }
RC_MINHEAP(cand)
RC_MINHEAP(hit)

/* The overflow partition always matches: its rows are filtered one by one
 * (row_match). */
static int part_match(const part *p, const rc_index_filter *f)
{
    if (!f || p->overflow)
        return 1;
    if (f->city >= 0 && (int64_t)p->city != f->city)
        return 0;
    if (!f->cates || f->ncates == 0)
        return 1;
    for (uint32_t i = 0; i < f->ncates; i++)
        if (f->cates[i] == p->cate)
            return 1;
    return 0;
}

#define GROW(s, field, need)                                                                       \
    grow((void **)&(s)->field, &(s)->c_##field, (need), sizeof(*(s)->field))

/* Merges one partition's FAISS result (local ids) into the top-k heap. */
static void merge(scratch *s, const part *p, uint32_t kk, uint32_t *ntop, uint32_t k)
{
    for (uint32_t i = 0; i < kk; i++) {
        idx_t l = s->lab[i];
        if (l < 0 || (uint64_t)l >= p->n)
            continue;
        hit_push(s->top, ntop, k, (hit){s->dis[i], p->l2r[l]});
    }
}

/* Scores the query against IVF partition p's centroids (under its read lock)
 * and pushes its lists, tagged si, into the heap of the best cap over all
 * selected partitions. */
static void part_coarse(const rc_index *ix, scratch *s, const part *p, uint32_t si, const float *q,
                        cand *heap, uint32_t *nh, uint32_t cap)
{
    uint32_t d = ix->dim;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)p->nlist, (int)d, 1.0f, p->cent, (int)d, q, 1,
                0.0f, s->cs, 1);
    for (uint32_t l = 0; l < p->nlist; l++)
        cand_push(heap, nh, cap, (cand){s->cs[l], si, l});
}

static int cand_desc(const void *a, const void *b)
{
    float x = ((const cand *)a)->s, y = ((const cand *)b)->s;
    return (x < y) - (x > y);
}

/* out[j] = q . x / |x| for the int8 rows xp[j]: any CPU (rc_vec_dot_i8). */
static void score_i8_any(const float *q, const int8_t *const *xp, size_t m, size_t d, float *out)
{
    for (size_t j = 0; j < m; j++) {
        float qv, xx, dot = rc_vec_dot_i8(q, xp[j], d, &qv, &xx);
        out[j] = xx > 0 ? dot / sqrtf(xx) : 0.0f;
    }
}

#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
/* The same with AVX2+FMA, q read once per 16 components and two chains of
 * products, the dot and the row's norm summed in one horizontal pass. Not in
 * TSan builds: q may be a table row that the trainer updates (rc_vec_dot_i8
 * reads it with relaxed atomics there). */
__attribute__((target("avx2,fma"))) static void
score_i8_avx2(const float *q, const int8_t *const *xp, size_t m, size_t d, float *out)
{
    for (size_t j = 0; j < m; j++) {
        const int8_t *x = xp[j];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, n0 = a0, n1 = a0;
        size_t i = 0;
        for (; i + 16 <= d; i += 16) {
            __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(x + i));
            __m256 y0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
            __m256 y1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), y0, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), y1, a1);
            n0 = _mm256_fmadd_ps(y0, y0, n0);
            n1 = _mm256_fmadd_ps(y1, y1, n1);
        }
        __m256 h = _mm256_hadd_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(n0, n1));
        h = _mm256_hadd_ps(h, h); /* lane 0: dot, lane 1: norm, per 128-bit half */
        __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        float dot = _mm_cvtss_f32(t), xx = _mm_cvtss_f32(_mm_shuffle_ps(t, t, 1));
        for (; i < d; i++) {
            dot += q[i] * (float)x[i];
            xx += (float)(x[i] * x[i]);
        }
        out[j] = xx > 0 ? dot / sqrtf(xx) : 0.0f;
    }
}
#endif

typedef void (*score_i8_fn)(const float *, const int8_t *const *, size_t, size_t, float *);
static score_i8_fn score_i8 = score_i8_any;
static pthread_once_t score_once = PTHREAD_ONCE_INIT;

static void score_pick(void)
{
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        score_i8 = score_i8_avx2;
#endif
}

void rc__index_score_init(void) { pthread_once(&score_once, score_pick); }

void rc__index_score(const float *q, const int8_t *const *xp, size_t m, size_t d, float *out)
{
    rc__index_score_init();
    score_i8(q, xp, m, d, out);
}

/* Scores the rows of the c lists cs[] of IVF partition p with their int8
 * copies (q . x / |x|, x the copy: the indexed unit vector to within int8
 * rounding, finer than sq8's fixed range) straight into the top-k heap. FAISS
 * gives each list's local ids; the copies are gathered (prefetched) list by
 * list, then scored with the AVX2 kernel, instead of FAISS's scan whose
 * baseline x86-64 build decodes and sums a component at a time. */
static int scan_lists(const rc_index *ix, scratch *s, const part *p, const cand *cs, uint32_t c,
                      const float *q, uint32_t k, uint32_t *ntop, uint64_t *rows)
{
    size_t d = ix->dim, m = 0;
    for (uint32_t i = 0; i < c; i++) { /* gather every list first: the prefetches overlap */
        size_t sz = faiss_IndexIVF_get_list_size(p->fx, cs[i].list);
        if (sz == 0)
            continue;
        if (GROW(s, ids, sz) || GROW(s, qp, m + sz) || GROW(s, qr, m + sz))
            return RC_ENOMEM;
        faiss_IndexIVF_invlists_get_ids(p->fx, cs[i].list, s->ids);
        for (size_t j = 0; j < sz; j++) {
            idx_t l = s->ids[j];
            if (l < 0 || (uint64_t)l >= p->n)
                continue;
            const int8_t *x = part_q8(p, (uint32_t)l, d);
            __builtin_prefetch(x);
            __builtin_prefetch(x + d - 1);
            s->qp[m] = x;
            s->qr[m++] = (uint32_t)l;
        }
    }
    if (m && GROW(s, qs, m))
        return RC_ENOMEM;
    score_i8(q, s->qp, m, d, s->qs);
    /* local ids become rows only for the rows that enter the top k: the
     * scan is bound by its scattered memory reads (BENCHMARKS.md "The list
     * scan"), and l2r of every scored row was one more of them */
    for (size_t j = 0; j < m; j++)
        if (*ntop < k || s->qs[j] > s->top[0].s)
            hit_push(s->top, ntop, k, (hit){s->qs[j], p->l2r[s->qr[j]]});
    if (rows)
        *rows += m;
    return 0;
}

/* Scans the c chosen lists cs[] of IVF partition p (under its read lock):
 * with sq8 codes scan_lists (the int8 copies are finer than the codes),
 * otherwise or with ix->faiss_scan FAISS's search_preassigned, padded with -1
 * to the partition's fixed nprobe (flat and fp16 codes are finer than the
 * copies). */
static int scan_part_lists(const rc_index *ix, scratch *s, const part *p, cand *cs, uint32_t c,
                           const float *q, uint32_t k, uint32_t *ntop, uint64_t *rows)
{
    if (c > p->slots) {
        qsort(cs, c, sizeof(*cs), cand_desc);
        c = p->slots;
    }
    if (rc_storage_q8(ix->storage) && !RLOAD(&ix->faiss_scan))
        return scan_lists(ix, s, p, cs, c, q, k, ntop, rows);
    if (GROW(s, assign, p->slots) || GROW(s, adis, p->slots))
        return RC_ENOMEM;
    for (uint32_t i = 0; i < p->slots; i++) {
        s->assign[i] = i < c ? (idx_t)cs[i].list : -1;
        s->adis[i] = i < c ? cs[i].s : 0;
    }
    for (uint32_t i = 0; rows && i < c; i++)
        *rows += faiss_IndexIVF_get_list_size(p->fx, cs[i].list);
    if (faiss_IndexIVF_search_preassigned(p->fx, 1, q, k, s->assign, s->adis, s->dis, s->lab, 0))
        return RC_EFAISS;
    merge(s, p, k, ntop, k);
    return 0;
}

/* Does an overflow row of key (city << 32 | cate) pass the filter? */
static int row_match(uint64_t key, const rc_index_filter *f)
{
    if (!f)
        return 1;
    if (f->city >= 0 && (int64_t)(key >> 32) != f->city)
        return 0;
    if (!f->cates || f->ncates == 0)
        return 1;
    for (uint32_t i = 0; i < f->ncates; i++)
        if (f->cates[i] == (uint32_t)key)
            return 1;
    return 0;
}

/* A flat partition's rows scored with their int8 copies, as scan_lists does
 * for IVF lists: a quarter of the bytes of the float storage (a partition
 * below ivf_min rows can still be a few thousand rows, several of them per
 * city), and the caller re-scores the candidates with the table's floats. */
static int scan_flat_i8(const rc_index *ix, scratch *s, const part *p, const float *q, uint32_t k,
                        uint32_t *ntop)
{
    size_t d = ix->dim, n = p->n;
    if (GROW(s, qp, n) || GROW(s, qr, n) || GROW(s, qs, n))
        return RC_ENOMEM;
    for (size_t j = 0; j < n; j++) {
        uint32_t row = p->l2r[j];
        const int8_t *x = part_q8(p, (uint32_t)j, d);
        __builtin_prefetch(x);
        __builtin_prefetch(x + d - 1);
        s->qp[j] = x;
        s->qr[j] = row;
    }
    score_i8(q, s->qp, n, d, s->qs);
    for (size_t j = 0; j < n; j++)
        if (*ntop < k || s->qs[j] > s->top[0].s)
            hit_push(s->top, ntop, k, (hit){s->qs[j], s->qr[j]});
    return 0;
}

/* The reference scan of a flat partition that has no float storage (sq8):
 * the table's vectors, normalised row by row as the re-rank reads them. Not a
 * hot path: only rc_index_set_faiss_scan's A/B runs it. */
static int scan_flat_table(const rc_index *ix, scratch *s, const part *p, const float *q,
                           uint32_t k, uint32_t *ntop)
{
    uint32_t d = ix->dim;
    float vb[RC_TABLE_MAX_DIM];
    for (uint32_t i = 0; i < p->n; i++) {
        const float *v = rc_table_in_read(ix->t, p->l2r[i], vb);
        float nn = rc_vec_dot(v, v, d), sc = nn > 0 ? rc_vec_dot(q, v, d) / sqrtf(nn) : 0;
        if (*ntop < k || sc > s->top[0].s)
            hit_push(s->top, ntop, k, (hit){sc, p->l2r[i]});
    }
    return 0;
}

/* Flat partitions are small by construction: with sq8 storage their int8
 * copies (scan_flat_i8; with ix->faiss_scan, the reference, the table's
 * floats), otherwise one sgemv over their float storage, straight into the
 * top-k heap (FAISS's per-vector loop is slower here). The overflow partition
 * is flat too, its rows filtered one by one, always with the floats. */
static int scan_flat(const rc_index *ix, scratch *s, const part *p, const float *q, uint32_t k,
                     const rc_index_filter *f, uint32_t *ntop)
{
    if (!p->overflow && rc_storage_q8(ix->storage))
        return RLOAD(&ix->faiss_scan) ? scan_flat_table(ix, s, p, q, k, ntop)
                                      : scan_flat_i8(ix, s, p, q, k, ntop);
    float *xb;
    size_t sz;
    faiss_IndexFlat_xb(p->fx, &xb, &sz);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)p->n, (int)ix->dim, 1.0f, xb, (int)ix->dim, q, 1,
                0.0f, s->cs, 1);
    for (uint32_t i = 0; i < p->n; i++)
        if ((*ntop < k || s->cs[i] > s->top[0].s) && (!p->overflow || row_match(p->l2k[i], f)))
            hit_push(s->top, ntop, k, (hit){s->cs[i], p->l2r[i]});
    return 0;
}

void (*rc__index_between_passes)(void *arg);
void *rc__index_between_passes_arg;

/* Read-locks p, waiting; when timed, the wait is added to *lock_ns. */
static void part_rdlock_wait(part *p, uint64_t *lock_ns)
{
    uint64_t t = lock_ns ? rc_now_ns() : 0;
    pthread_rwlock_rdlock(&p->lock);
    if (lock_ns)
        *lock_ns += rc_now_ns() - t;
}

/* One search's state across its partitions. */
typedef struct sctx {
    const rc_index *ix;
    scratch *s;
    const float *q;
    const rc_index_filter *f;
    uint32_t k, lists, nh, deferred, *ntop;
    uint64_t rows, coarse_ns;
    int timed;
} sctx;

/* Pass 1 for selected partition si, under its read lock: an IVF partition's
 * coarse scores into the heap of the best lists over all partitions, or the
 * whole of a flat one. */
static int pass1(sctx *c, uint32_t si)
{
    scratch *s = c->s;
    part *p = s->sel[si];
    s->ver[si] = p->ver;
    if (p->ivf) {
        uint64_t c0 = c->timed ? rc_now_ns() : 0;
        if (GROW(s, cs, p->nlist))
            return RC_ENOMEM;
        part_coarse(c->ix, s, p, si, c->q, s->heap, &c->nh, c->lists);
        c->coarse_ns += c->timed ? rc_now_ns() - c0 : 0;
        return 0;
    }
    if (!p->n)
        return 0;
    c->rows += p->n;
    return GROW(s, cs, p->n) ? RC_ENOMEM : scan_flat(c->ix, s, p, c->q, c->k, c->f, c->ntop);
}

/* Pass 2 for selected partition si, under its read lock: its chosen lists
 * (cnt[si] of them in s->byp, ending at off[si]); chosen again from its new
 * centroids when it was retrained since pass 1 (ver moved; IVF stays IVF). */
static int pass2(sctx *c, uint32_t si)
{
    scratch *s = c->s;
    part *p = s->sel[si];
    uint32_t n = s->cnt[si];
    cand *cs = s->byp + (s->off[si] - n);
    if (p->ver != s->ver[si]) {
        uint32_t m = 0;
        uint64_t c0 = c->timed ? rc_now_ns() : 0;
        if (GROW(s, cs, p->nlist))
            return RC_ENOMEM;
        part_coarse(c->ix, s, p, si, c->q, cs, &m, n);
        c->coarse_ns += c->timed ? rc_now_ns() - c0 : 0;
        n = m;
    }
    return n ? scan_part_lists(c->ix, s, p, cs, n, c->q, c->k, c->ntop, c->timed ? &c->rows : NULL)
             : 0;
}

/* Runs step on every selected partition that wants it (want[si] != 0, or all
 * when want is NULL), each under its own read lock. A partition whose lock is
 * not free at once (the writer holds it, or waits for it) is put off until
 * the others are done, and only then waited for: a search waits for the
 * writer only when it has nothing else left to read. */
static int each_part(sctx *c, uint32_t nsel, const uint32_t *want, int (*step)(sctx *, uint32_t),
                     uint64_t *lock_ns)
{
    scratch *s = c->s;
    uint32_t ndef = 0;
    for (uint32_t si = 0; si < nsel; si++) {
        if (want && !want[si])
            continue;
        part *p = s->sel[si];
        if (pthread_rwlock_tryrdlock(&p->lock)) {
            s->def[ndef++] = si;
            continue;
        }
        int rc = step(c, si);
        pthread_rwlock_unlock(&p->lock);
        if (rc)
            return rc;
    }
    c->deferred += ndef;
    for (uint32_t i = 0; i < ndef; i++) {
        part *p = s->sel[s->def[i]];
        part_rdlock_wait(p, lock_ns);
        int rc = step(c, s->def[i]);
        pthread_rwlock_unlock(&p->lock);
        if (rc)
            return rc;
    }
    return 0;
}

/* The selected partitions, each under its own read lock for its own work and
 * never two at once (each_part), so the writer never waits for a whole search
 * and a search waits for a writer only when it has no other partition left to
 * read. Before, a search held every selected partition's lock for its whole
 * run: an all-cities search held 140 for milliseconds, a writer queued behind
 * it, and every later search of that partition queued behind the writer.
 *
 * Pass 1: the coarse scores of every IVF partition (the best `lists` lists
 * over all of them) and the whole of every flat partition. Pass 2: the chosen
 * lists, partition by partition. A partition retrained in between has its
 * lists chosen again (pass2); rows added or moved in between are seen as they
 * are in pass 2, as by a search that started a little later. */
static int search_parts(const rc_index *ix, scratch *s, uint32_t nsel, const float *q, uint32_t k,
                        const rc_index_filter *f, uint32_t *ntop, rc_index_timing *tm)
{
    sctx c = {.ix = ix, .s = s, .q = q, .f = f, .k = k, .ntop = ntop, .timed = tm != NULL};
    c.lists = RLOAD(&ix->lists);
    uint64_t lock_ns = 0, *lk = tm ? &lock_ns : NULL;
    if (GROW(s, ver, nsel) || GROW(s, def, nsel) || GROW(s, cnt, nsel) || GROW(s, off, nsel) ||
        GROW(s, heap, c.lists) || GROW(s, byp, c.lists) || GROW(s, dis, k) || GROW(s, lab, k) ||
        GROW(s, top, k))
        return RC_ENOMEM;
    uint64_t t0 = tm ? rc_now_ns() : 0;
    int rc = each_part(&c, nsel, NULL, pass1, lk);
    if (rc)
        return rc;
    if (rc__index_between_passes)
        rc__index_between_passes(rc__index_between_passes_arg);
    memset(s->cnt, 0, nsel * sizeof(*s->cnt));
    for (uint32_t i = 0; i < c.nh; i++)
        s->cnt[s->heap[i].sel]++;
    for (uint32_t si = 0, o = 0; si < nsel; si++) {
        s->off[si] = o;
        o += s->cnt[si];
    }
    for (uint32_t i = 0; i < c.nh; i++)
        s->byp[s->off[s->heap[i].sel]++] = s->heap[i];
    if (c.nh && (rc = each_part(&c, nsel, s->cnt, pass2, lk)))
        return rc;
    if (tm) {
        uint64_t all = rc_now_ns() - t0;
        tm->lock_ns = lock_ns;
        tm->coarse_ns = c.coarse_ns;
        tm->scan_ns = all > lock_ns + c.coarse_ns ? all - lock_ns - c.coarse_ns : 0;
        tm->rows = c.rows;
        tm->lists = c.nh;
        tm->deferred = c.deferred;
    }
    return 0;
}

int rc_index_search(rc_index *ix, const float *q, uint32_t k, const rc_index_filter *f,
                    uint32_t *rows, float *scores, uint32_t *n)
{
    return rc_index_search_timed(ix, q, k, f, rows, scores, n, NULL);
}

int rc_index_search_timed(rc_index *ix, const float *q, uint32_t k, const rc_index_filter *f,
                          uint32_t *rows, float *scores, uint32_t *n, rc_index_timing *tm)
{
    if (tm)
        memset(tm, 0, sizeof(*tm));
    if (!ix || !q || !rows || !n)
        return RC_EINVAL;
    *n = 0;
    if (k == 0)
        return 0;
    scratch *s = scratch_get();
    uint32_t np = LOAD(&ix->nparts), nsel = 0, ntop = 0;
    if (!s || GROW(s, sel, np + 1))
        return RC_ENOMEM;
    omp_one();
    for (uint32_t i = 0; i < np; i++) {
        part *p = LOAD(&ix->parts[i]);
        if (part_match(p, f)) /* city, cate and overflow never change */
            s->sel[nsel++] = p;
    }
    if (tm)
        tm->parts = nsel;
    int rc = search_parts(ix, s, nsel, q, k, f, &ntop, tm);
    if (rc)
        return rc;
    for (uint32_t m = ntop; m > 0; m--) {
        hit h = s->top[0];
        s->top[0] = s->top[m - 1];
        hit_down(s->top, m - 1, 0);
        rows[m - 1] = h.row;
        if (scores)
            scores[m - 1] = h.s;
    }
    *n = ntop;
    return 0;
}
