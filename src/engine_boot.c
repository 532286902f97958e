/* engine_boot — rows installed from outside the stream, on the trainer
 * thread (the table's only writer): a trainer's vector records
 * (include/recalld/engine.h, "Trainer bootstrap"; the reading and filtering:
 * src/vboot.c), and install_model's rebuilt table (rc_engine_install_table,
 * at the end).
 *
 * The records come in batches marked install (rc_engine_batch_set_install)
 * through the same queue as clicks, so the trainer thread, the table's only
 * writer, installs them before any click submitted later. Per record: a row
 * it does not hold is created with the record's city and category; a row it
 * holds keeps its own vectors when its count is at least the record's (its
 * training saw at least as many clicks of the item: e.g. a partition that
 * came back to a trainer that never lost the row), else it is overwritten.
 * An installed row gets the record's count (the learning-rate decay and the
 * samplers go on from there), its input vector and, when the record carries
 * it, its output vector (else the row's own, zero for a new row), and is
 * indexed. Installed rows are not published again: the records are on the
 * vector topic already. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "recalld/log.h"
#include "recalld/sampler.h"
#include "recalld/vecpub.h"

void rc_engine_batch_set_install(rc_batch *b) { b->vectors = 2; }

void rc_engine_install_stats_get(rc_engine *e, rc_engine_install_stats *st)
{
    st->records = atomic_load(&e->boot_records);
    st->installed = atomic_load(&e->boot_installed);
    st->kept = atomic_load(&e->boot_kept);
    st->invalid = atomic_load(&e->boot_invalid);
    st->count = atomic_load(&e->boot_count);
}

/* recall and the shards read rows meanwhile (Hogwild, table.h): relaxed
 * atomic stores (plain moves on x86), as a replica's apply */
static void store_vec(float *dst, const float *src, uint32_t dim)
{
    for (uint32_t i = 0; i < dim; i++) {
        float v = src[i]; /* clang's __atomic_store takes no const source */
        __atomic_store(&dst[i], &v, __ATOMIC_RELAXED);
    }
}

/* One row from outside, by item id: 0 installed, 1 kept (force 0 and the
 * row holds at least count clicks), -1 refused (a bound, memory). vout NULL:
 * the row keeps its output vector. *created: a new row. */
static int install_row(rc_engine *e, const char *id, size_t len, const char *city, size_t clen,
                       const char *cate, size_t klen, uint32_t count, const float *vin,
                       const float *vout, int force, int *created)
{
    uint32_t cy, ct, row, dim = e->cfg.dim;
    *created = 0;
    if (!force && rc_table_find(e->table, id, len, &row) == 0 &&
        rc_table_count(e->table, row) >= count)
        return 1;
    if (rc_table_city_id(e->table, city, clen, &cy) ||
        rc_table_cate_id(e->table, cate, klen, &ct) ||
        rc_table_upsert(e->table, id, len, cy, ct, NULL, 0, &row, created))
        return -1; /* a bound (model.max_items) or memory */
    store_vec(rc_table_in(e->table, row), vin, dim);
    float *out = rc_table_out(e->table, row);
    if (out && vout)
        store_vec(out, vout, dim);
    uint32_t have = rc_table_count(e->table, row);
    if (count > have) {
        rc_table_count_add(e->table, row, count - have);
        atomic_fetch_add(&e->total_count, count - have);
    }
    if (*created)
        atomic_fetch_add(&e->new_items, 1);
    rc_sampler_note(e->sampler, row);
    rc__engine_pop_note(e, row);
    rc_index_touch(e->index, row);
    return 0;
}

/* One record: 0 installed, 1 kept, -1 invalid. */
static int install(rc_engine *e, const char *p, size_t n, float *vin, float *vout)
{
    rc_vecrec rec;
    int created;
    if (rc_vecrec_decode(p, n, &rec, vin, vout, e->cfg.dim) || rec.dim != e->cfg.dim)
        return -1;
    uint32_t row, before = 0;
    if (rc_table_find(e->table, rec.item, rec.item_len, &row) == 0)
        before = rc_table_count(e->table, row);
    int rc = install_row(e, rec.item, rec.item_len, rec.city, rec.city_len, rec.cate, rec.cate_len,
                         rec.count, vin, (rec.flags & RC_VECREC_F_OUT) ? vout : NULL, 0, &created);
    if (rc == 0 && rec.count > before)
        atomic_fetch_add(&e->boot_count, rec.count - before);
    return rc;
}

void rc__engine_install_batch(rc_engine *e, rc_batch *b)
{
    uint32_t dim = e->cfg.dim;
    float *v = malloc(2 * (size_t)dim * sizeof *v);
    uint64_t installed = 0, kept = 0, invalid = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        int rc = v ? install(e, b->arena + b->aoff[i], b->len[i], v, v + dim) : -1;
        installed += rc == 0;
        kept += rc == 1;
        invalid += rc < 0;
    }
    free(v);
    rc__engine_ck_note_empty(e); /* counted as trained: checkpoints wait for every batch */
    atomic_fetch_add(&e->boot_records, b->n);
    atomic_fetch_add(&e->boot_installed, installed);
    atomic_fetch_add(&e->boot_kept, kept);
    if (invalid && atomic_fetch_add(&e->boot_invalid, invalid) % 10000 == 0)
        rc_log_warn("engine",
                    "vector records not installed (not a record, other dim, table full, or out "
                    "of memory)",
                    "count=%llu", (unsigned long long)invalid);
}

/* ---- install_model: a rebuilt table ---- */

#define TINST_CHUNK 32768u /* rows per step between batches: ~10-30 ms at d64 */

void rc_engine_install_table_stats(rc_engine *e, uint64_t *installs, uint64_t *rows)
{
    *installs = atomic_load(&e->tinst.installs);
    *rows = atomic_load(&e->tinst.rows);
}

/* Rows [from, to) of src. */
static void tinst_rows(rc_engine *e, const rc_table *src, uint32_t from, uint32_t to,
                       rc_engine_table_install *r)
{
    for (uint32_t i = from; i < to; i++) {
        size_t len;
        const char *id = rc_table_item_id(src, i, &len);
        const char *city = rc_table_city_name(src, rc_table_city(src, i));
        const char *cate = rc_table_cate_name(src, rc_table_cate(src, i));
        int created;
        if (!id ||
            install_row(e, id, len, city, strlen(city), cate, strlen(cate), rc_table_count(src, i),
                        rc_table_in(src, i), rc_table_out(src, i), 1, &created)) {
            r->refused++;
            continue;
        }
        r->created += created != 0;
        r->replaced += created == 0;
    }
}

/* replace: engine rows [from, to) that src does not hold start again (random). */
static void tinst_reset(rc_engine *e, const rc_table *src, uint32_t from, uint32_t to,
                        rc_engine_table_install *r)
{
    for (uint32_t row = from; row < to; row++) {
        size_t len;
        uint32_t x;
        const char *id = rc_table_item_id(e->table, row, &len);
        if (!id || rc_table_find(src, id, len, &x) == 0 || rc_table_reset_row(e->table, row))
            continue;
        rc_index_touch(e->index, row);
        r->reset++;
    }
}

/* One step of the install in progress: a chunk of src's rows, then
 * (replace) a chunk of the engine's rows to check, then the end. */
void rc__engine_tinst_step(rc_engine *e)
{
    struct rc__engine_tinst *ti = &e->tinst;
    if (!atomic_load_explicit(&ti->pending, memory_order_acquire))
        return;
    uint32_t n = rc_table_size(ti->src);
    if (ti->pos < n) {
        uint32_t end = ti->pos + RC_MIN(n - ti->pos, TINST_CHUNK);
        tinst_rows(e, ti->src, ti->pos, end, &ti->res);
        ti->pos = end;
        rc__engine_ck_note_edit(e); /* the table changed: the next checkpoint is written */
        if (end < n || ti->replace)
            return;
    } else if (ti->replace) {
        uint32_t m = rc_table_size(e->table);
        uint32_t end = ti->rpos + RC_MIN(m - ti->rpos, TINST_CHUNK);
        tinst_reset(e, ti->src, ti->rpos, end, &ti->res);
        ti->rpos = end;
        rc__engine_ck_note_edit(e);
        if (end < m)
            return;
    }
    atomic_fetch_add(&ti->installs, 1);
    atomic_fetch_add(&ti->rows, ti->res.replaced + ti->res.created);
    if (e->cfg.replay_forget || ti->replace) {
        /* the rebuild trained on the clicks held for replay: replaying them
         * again would count them twice and pull the table back toward them */
        rc_relearn_forget(e->relearn);
        e->replay_credit = 0;
    }
    if (ti->replace)
        rc_anchor_rebase(e->anchor, e->table); /* the warm start is the new table */
    pthread_mutex_lock(&ti->mu);
    ti->res.seconds = (double)(rc_now_ns() - ti->t0) / 1e9;
    ti->done = 1;
    atomic_store(&ti->pending, 0);
    pthread_cond_broadcast(&ti->cv);
    pthread_mutex_unlock(&ti->mu);
}

void rc__engine_tinst_stop(rc_engine *e)
{
    struct rc__engine_tinst *ti = &e->tinst;
    pthread_mutex_lock(&ti->mu);
    ti->stopping = 1;
    if (ti->src && !ti->done) {
        ti->done = 1;
        ti->rc = RC_EAGAIN;
        snprintf(ti->err, sizeof ti->err, "install_model: stopping (%u of %u rows installed)",
                 ti->pos, rc_table_size(ti->src));
        atomic_store(&ti->pending, 0);
    }
    pthread_cond_broadcast(&ti->cv);
    while (ti->waiters)
        pthread_cond_wait(&ti->cv, &ti->mu);
    pthread_mutex_unlock(&ti->mu);
}

static int tinst_run(rc_engine *e, const rc_table *src, int replace, rc_engine_table_install *res,
                     char *eb, size_t el)
{
    struct rc__engine_tinst *ti = &e->tinst;
    memset(res, 0, sizeof *res);
    if (e->cfg.role != RC_ROLE_ALL)
        return rc_err(eb, el, RC_EINVAL,
                      "install_model: only with role all (a trainer shard holds its cities only, "
                      "a replica serves the trainers' vectors)");
    if (rc_table_dim(src) != e->cfg.dim)
        return rc_err(eb, el, RC_EINVAL, "install_model: dimension %u, model.dim %u",
                      rc_table_dim(src), e->cfg.dim);
    pthread_mutex_lock(&ti->mu);
    if (ti->src || ti->stopping) {
        int stopping = ti->stopping;
        pthread_mutex_unlock(&ti->mu);
        return rc_err(eb, el, RC_EAGAIN, "install_model: %s",
                      stopping ? "stopping" : "another install is in progress");
    }
    ti->src = src;
    ti->replace = replace;
    ti->pos = ti->rpos = 0;
    ti->done = 0;
    ti->rc = 0;
    ti->err[0] = '\0';
    ti->t0 = rc_now_ns();
    memset(&ti->res, 0, sizeof ti->res);
    ti->res.rows = rc_table_size(src);
    if (!e->threads) { /* offline: this thread is the table's writer */
        pthread_mutex_unlock(&ti->mu);
        atomic_store(&ti->pending, 1);
        while (atomic_load(&ti->pending))
            rc__engine_tinst_step(e);
        rc__engine_maintain(e, 1);
        pthread_mutex_lock(&ti->mu);
    } else {
        atomic_store_explicit(&ti->pending, 1, memory_order_release);
        ti->waiters++;
        while (!ti->done)
            pthread_cond_wait(&ti->cv, &ti->mu);
        ti->waiters--;
    }
    int rc = ti->rc;
    *res = ti->res;
    if (rc)
        rc_err(eb, el, rc, "%s", ti->err);
    ti->src = NULL;
    pthread_cond_broadcast(&ti->cv); /* a stop waits for the waiters to leave */
    pthread_mutex_unlock(&ti->mu);
    return rc;
}

int rc_engine_install_table(rc_engine *e, const rc_table *src, rc_engine_table_install *res,
                            char *eb, size_t el)
{
    return tinst_run(e, src, 0, res, eb, el);
}

int rc_engine_replace_table(rc_engine *e, const rc_table *src, rc_engine_table_install *res,
                            char *eb, size_t el)
{
    return tinst_run(e, src, 1, res, eb, el);
}
