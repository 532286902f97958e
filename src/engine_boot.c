/* engine_boot — a trainer installs vector records (include/recalld/engine.h,
 * "Trainer bootstrap"; the reading and filtering: src/vboot.c).
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
    for (uint32_t i = 0; i < dim; i++)
        __atomic_store(&dst[i], &src[i], __ATOMIC_RELAXED);
}

/* One record: 0 installed, 1 kept, -1 invalid. */
static int install(rc_engine *e, const char *p, size_t n, float *vin, float *vout)
{
    rc_vecrec rec;
    uint32_t city, cate, row, dim = e->cfg.dim;
    int created = 0;
    if (rc_vecrec_decode(p, n, &rec, vin, vout, dim) || rec.dim != dim)
        return -1;
    if (rc_table_find(e->table, rec.item, rec.item_len, &row) == 0 &&
        rc_table_count(e->table, row) >= rec.count)
        return 1;
    if (rc_table_city_id(e->table, rec.city, rec.city_len, &city) ||
        rc_table_cate_id(e->table, rec.cate, rec.cate_len, &cate) ||
        rc_table_upsert(e->table, rec.item, rec.item_len, city, cate, NULL, 0, &row, &created))
        return -1; /* a bound (model.max_items) or memory */
    store_vec(rc_table_in(e->table, row), vin, dim);
    float *out = rc_table_out(e->table, row);
    if (out && (rec.flags & RC_VECREC_F_OUT))
        store_vec(out, vout, dim);
    uint32_t have = rc_table_count(e->table, row);
    if (rec.count > have) {
        rc_table_count_add(e->table, row, rec.count - have);
        atomic_fetch_add(&e->total_count, rec.count - have);
        atomic_fetch_add(&e->boot_count, rec.count - have);
    }
    if (created)
        atomic_fetch_add(&e->new_items, 1);
    rc_sampler_note(e->sampler, row);
    rc__engine_pop_note(e, row);
    rc_index_touch(e->index, row);
    rc__engine_tower_dirty(e, row);
    return 0;
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
