/* engine_replica — the engine's side of roles (docs/DESIGN.md "Roles and
 * replicas"): the trainer's vector sink (rows whose vector changed, handed to
 * the publisher at batch boundaries) and a replica's apply of vector records.
 *
 * Sink: the trainer notes each row it changes (one flag per row, so a row
 * changed by many clicks of a batch is handed over once) and hands the list
 * over in rc__engine_maintain, after the batch's SGNS writes - the shards'
 * included - so the publisher, which clears a row's mark before it reads the
 * vector, never misses a change: a write after its read is followed by
 * another mark.
 *
 * Replica: records are applied by the trainer thread, the table's only
 * writer, in the order the vector topic's partitions deliver them; per row
 * the highest version seen wins (older ones are counted stale and ignored). */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "recalld/log.h"
#include "recalld/vecpub.h"

#define STALE_RING 4096 /* publish -> applied samples kept for the percentiles */

struct rc__engine_vecs {
    pthread_mutex_t mu; /* fn and ud: a sink removed is never called again */
    void (*fn)(void *ud, const uint32_t *rows, size_t n);
    void *ud;
    atomic_int on;
    /* trainer only */
    uint8_t *noted; /* by row */
    size_t noted_cap;
    uint32_t *rows;
    size_t n, cap;
    uint64_t lost; /* notes dropped for want of memory */
};

struct rc__engine_replica {
    uint64_t *version; /* by row, trainer only; 0 = no record applied */
    size_t version_cap;
    float *vec; /* one record's vector */
    _Atomic uint64_t records, applied, stale, invalid, created;
    _Atomic int64_t newest_publish_ms; /* of the records applied, -1 none */
    _Atomic int64_t lag;               /* rc_engine_set_vector_lag */
    pthread_mutex_t mu;
    uint32_t age_ms[STALE_RING]; /* publish -> applied of recent records */
    uint32_t nage, age_pos;
};

int rc__engine_replica_init(rc_engine *e, char *eb, size_t el)
{
    e->replica = e->cfg.role == RC_ROLE_REPLICA;
    e->vecs = calloc(1, sizeof *e->vecs);
    if (!e->vecs)
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    pthread_mutex_init(&e->vecs->mu, NULL);
    if (!e->replica)
        return 0;
    struct rc__engine_replica *r = calloc(1, sizeof *r);
    if (!r || !(r->vec = malloc(e->cfg.dim * sizeof *r->vec))) {
        free(r);
        return rc_err(eb, el, RC_ENOMEM, "engine: out of memory");
    }
    atomic_store(&r->newest_publish_ms, -1);
    atomic_store(&r->lag, -1);
    pthread_mutex_init(&r->mu, NULL);
    e->rep = r;
    return 0;
}

void rc__engine_replica_free(rc_engine *e)
{
    if (e->vecs) {
        pthread_mutex_destroy(&e->vecs->mu);
        free(e->vecs->noted);
        free(e->vecs->rows);
        free(e->vecs);
        e->vecs = NULL;
    }
    if (e->rep) {
        pthread_mutex_destroy(&e->rep->mu);
        free(e->rep->version);
        free(e->rep->vec);
        free(e->rep);
        e->rep = NULL;
    }
}

void rc_engine_set_vector_sink(rc_engine *e, void (*fn)(void *ud, const uint32_t *rows, size_t n),
                               void *ud)
{
    pthread_mutex_lock(&e->vecs->mu);
    e->vecs->fn = fn;
    e->vecs->ud = ud;
    atomic_store_explicit(&e->vecs->on, fn != NULL, memory_order_release);
    pthread_mutex_unlock(&e->vecs->mu);
}

void rc__engine_vec_note(rc_engine *e, uint32_t row)
{
    struct rc__engine_vecs *v = e->vecs;
    if (!atomic_load_explicit(&v->on, memory_order_acquire))
        return;
    if (row >= v->noted_cap) {
        size_t cap = v->noted_cap ? v->noted_cap : 4096;
        while (cap <= row)
            cap *= 2;
        uint8_t *p = realloc(v->noted, cap);
        if (!p) {
            v->lost++;
            return;
        }
        memset(p + v->noted_cap, 0, cap - v->noted_cap);
        v->noted = p;
        v->noted_cap = cap;
    }
    if (v->noted[row])
        return;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4096;
        uint32_t *p = realloc(v->rows, cap * sizeof *p);
        if (!p) {
            v->lost++;
            return;
        }
        v->rows = p;
        v->cap = cap;
    }
    v->noted[row] = 1;
    v->rows[v->n++] = row;
}

void rc__engine_vec_handoff(rc_engine *e)
{
    struct rc__engine_vecs *v = e->vecs;
    if (v->lost) {
        rc_log_error("engine", "out of memory: changed vectors not handed to the publisher",
                     "rows=%llu", (unsigned long long)v->lost);
        v->lost = 0;
    }
    if (!v->n)
        return;
    pthread_mutex_lock(&v->mu);
    if (v->fn)
        v->fn(v->ud, v->rows, v->n);
    pthread_mutex_unlock(&v->mu);
    for (size_t i = 0; i < v->n; i++)
        v->noted[v->rows[i]] = 0;
    v->n = 0;
}

/* ---- replica ---- */

void rc_engine_set_vector_lag(rc_engine *e, int64_t lag)
{
    if (e->rep)
        atomic_store_explicit(&e->rep->lag, lag, memory_order_relaxed);
}

static int version_room(struct rc__engine_replica *r, uint32_t row)
{
    if (row < r->version_cap)
        return 0;
    size_t cap = r->version_cap ? r->version_cap : 4096;
    while (cap <= row)
        cap *= 2;
    uint64_t *p = realloc(r->version, cap * sizeof *p);
    if (!p)
        return RC_ENOMEM;
    memset(p + r->version_cap, 0, (cap - r->version_cap) * sizeof *p);
    r->version = p;
    r->version_cap = cap;
    return 0;
}

static void note_age(struct rc__engine_replica *r, int64_t publish_ms)
{
    int64_t age = rc_wall_ms() - publish_ms;
    uint32_t a = age < 0 ? 0 : age > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)age;
    pthread_mutex_lock(&r->mu);
    r->age_ms[r->age_pos] = a;
    r->age_pos = (r->age_pos + 1) % STALE_RING;
    if (r->nage < STALE_RING)
        r->nage++;
    pthread_mutex_unlock(&r->mu);
    if (publish_ms > atomic_load_explicit(&r->newest_publish_ms, memory_order_relaxed))
        atomic_store_explicit(&r->newest_publish_ms, publish_ms, memory_order_relaxed);
}

/* One record: 0 applied, 1 stale, -1 invalid. */
static int apply_record(rc_engine *e, const char *p, size_t n)
{
    struct rc__engine_replica *r = e->rep;
    rc_vecrec rec;
    uint32_t city, cate, row;
    int created = 0;
    if (rc_vecrec_decode(p, n, &rec, r->vec, NULL, e->cfg.dim) || rec.dim != e->cfg.dim)
        return -1;
    if (rc_table_city_id(e->table, rec.city, rec.city_len, &city) ||
        rc_table_cate_id(e->table, rec.cate, rec.cate_len, &cate) ||
        rc_table_upsert(e->table, rec.item, rec.item_len, city, cate, NULL, 0, &row, &created) ||
        version_room(r, row))
        return -1; /* a bound (model.max_items) or memory */
    if (created)
        atomic_fetch_add(&r->created, 1);
    if (r->version[row] >= rec.version) /* a repeat, or older than what the row holds */
        return 1;
    r->version[row] = rec.version;
    /* recall reads the row meanwhile (Hogwild, table.h): relaxed atomic stores
     * (plain moves on x86), which ThreadSanitizer builds see as such */
    float *dst = rc_table_in(e->table, row);
    for (uint32_t i = 0; i < e->cfg.dim; i++)
        __atomic_store(&dst[i], &r->vec[i], __ATOMIC_RELAXED);
    uint32_t have = rc_table_count(e->table, row);
    if (rec.count > have) {
        rc_table_count_add(e->table, row, rec.count - have);
        atomic_fetch_add(&e->total_count, rec.count - have);
    }
    rc__engine_pop_note(e, row);
    rc_index_touch(e->index, row);
    note_age(r, rec.publish_ms);
    return 0;
}

void rc__engine_replica_batch(rc_engine *e, rc_batch *b)
{
    struct rc__engine_replica *r = e->rep;
    if (b->vectors == 2) { /* a trainer's bootstrap (engine_boot.c) */
        rc__engine_install_batch(e, b);
        return;
    }
    if (!r) { /* not a replica: nothing to apply them to */
        atomic_fetch_add(&e->ignored, b->n);
        return;
    }
    uint64_t applied = 0, stale = 0, invalid = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        int rc = apply_record(e, b->arena + b->aoff[i], b->len[i]);
        applied += rc == 0;
        stale += rc == 1;
        invalid += rc < 0;
    }
    atomic_fetch_add(&r->records, b->n);
    atomic_fetch_add(&r->applied, applied);
    atomic_fetch_add(&r->stale, stale);
    if (invalid && atomic_fetch_add(&r->invalid, invalid) % 10000 == 0)
        rc_log_warn("engine", "vector records not applied (not a record, other dim, or table full)",
                    "count=%llu", (unsigned long long)invalid);
}

void rc__engine_replica_stats_json(rc_engine *e, rc_buf *o)
{
    struct rc__engine_replica *r = e->rep;
    static _Thread_local uint32_t tmp[STALE_RING];
    if (!r)
        return;
    uint32_t n;
    pthread_mutex_lock(&r->mu);
    n = r->nage;
    memcpy(tmp, r->age_ms, n * sizeof *tmp);
    pthread_mutex_unlock(&r->mu);
    uint32_t pq[2] = {0, 0};
    const double q[2] = {0.5, 0.99};
    if (n)
        rc_quantiles_u32(tmp, n, q, 2, pq);
    int64_t newest = atomic_load(&r->newest_publish_ms);
    int64_t lag = atomic_load(&r->lag);
    /* Caught up (no record of the vector topic waiting, none in the
     * pipeline): as fresh as the trainers' publishing; else the age of the
     * newest record applied. -1: nothing applied yet. */
    int64_t staleness = newest < 0 ? -1
                        : lag == 0 && !atomic_load(&e->inflight)
                            ? 0
                            : RC_MAX(rc_wall_ms() - newest, (int64_t)0);
    rc_buf_printf(
        o,
        ",\"replica\":{\"records\":%llu,\"applied\":%llu,\"stale\":%llu,"
        "\"invalid\":%llu,\"created\":%llu,\"lag\":%lld,\"staleness_ms\":%lld,"
        "\"newest_publish_ms\":%lld,\"publish_to_applied_ms\":{\"p50\":%u,\"p99\":%u,"
        "\"samples\":%u}}",
        (unsigned long long)atomic_load(&r->records), (unsigned long long)atomic_load(&r->applied),
        (unsigned long long)atomic_load(&r->stale), (unsigned long long)atomic_load(&r->invalid),
        (unsigned long long)atomic_load(&r->created), (long long)lag, (long long)staleness,
        (long long)newest, pq[0], pq[1], n);
}
