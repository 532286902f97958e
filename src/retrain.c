/* retrain — one two-tower retraining from a replay snapshot (see retrain.h). */
#include "recalld/retrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/ufeat.h"

/* The snapshot as a click log, not sessionized yet (log->recs[i] is snapshot
 * record i); rows[item] = the item's table row. */
static int build_log(const rc_replay_snap *s, const rc_table *t, rc_clicklog **out,
                     uint32_t **rows_out, char *eb, size_t el)
{
    rc_clicklog *log = NULL;
    uint32_t *rows = malloc((s->n ? s->n : 1) * sizeof *rows);
    uint32_t size = rc_table_size(t);
    char user[17];
    int rc = rows ? rc_clicklog_create(s->n, &log) : RC_ENOMEM;
    for (size_t i = 0; rc == 0 && i < s->n; i++) {
        const rc_replay_rec *r = &s->recs[i];
        if (r->row >= size) { /* cannot happen: rows come from this table */
            rc = rc_err(eb, el, RC_EINVAL, "retrain: buffered click %zu: row %u of %u", i, r->row,
                        size);
            break;
        }
        size_t ilen;
        const char *item = rc_table_item_id(t, r->row, &ilen);
        const char *city = rc_table_city_name(t, rc_table_city(t, r->row));
        const char *cate = rc_table_cate_name(t, rc_table_cate(t, r->row));
        snprintf(user, sizeof user, "%016llx", (unsigned long long)r->user);
        rc = rc_clicklog_add(log, user, 16, item, ilen, city, city ? strlen(city) : 0, cate,
                             cate ? strlen(cate) : 0, r->ts_ms);
        if (rc == 0)
            rows[log->recs[log->n - 1].item] = r->row;
    }
    if (rc == RC_ENOMEM || rc == RC_E2BIG)
        rc = rc_err(eb, el, RC_ENOMEM, "retrain: out of memory for %zu clicks", s->n);
    if (rc) {
        rc_clicklog_free(log);
        free(rows);
        return rc;
    }
    *out = log;
    *rows_out = rows;
    return 0;
}

/* Before sessionizing, log->recs[i] is snapshot record i: per user the device
 * of its newest click with one and the tags of its newest click with some. */
static int build_feats(const rc_replay_snap *s, const rc_clicklog *log, rc_ufeat **out)
{
    uint32_t nusers = rc_dict_size(log->users);
    const rc_replay_tags **last = calloc((size_t)nusers + 1, sizeof *last);
    rc_ufeat *f = calloc(1, sizeof *f);
    size_t ntags = 0;
    if (!last || !f)
        goto fail;
    f->nusers = nusers;
    f->device = calloc((size_t)nusers + 1, sizeof *f->device);
    f->tag_off = calloc((size_t)nusers + 1, sizeof *f->tag_off);
    if (!f->device || !f->tag_off)
        goto fail;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t u = log->recs[i].user;
        const rc_replay_tags *tl = rc_replay_snap_tags(s, &s->recs[i]);
        if (s->recs[i].device)
            f->device[u] = s->recs[i].device;
        if (tl && tl->n)
            last[u] = tl;
    }
    for (uint32_t u = 0; u < nusers; u++) {
        f->users_with_device += f->device[u] != 0;
        f->users_with_tags += last[u] != NULL;
        ntags += last[u] ? last[u]->n : 0;
    }
    if (!(f->tags = malloc((ntags ? ntags : 1) * sizeof *f->tags)))
        goto fail;
    uint32_t w = 0;
    for (uint32_t u = 0; u < nusers; u++) {
        f->tag_off[u] = w;
        for (uint32_t j = 0; last[u] && j < last[u]->n; j++)
            f->tags[w++] = last[u]->h[j];
    }
    f->tag_off[nusers] = w;
    free(last);
    *out = f;
    return 0;
fail:
    free(last);
    rc_ufeat_free(f);
    return RC_ENOMEM;
}

int rc_retrain_run(const rc_replay_snap *snap, const rc_table *w2v, const rc_retrain_opts *opts,
                   rc_tower_model **out, rc_retrain_result *res, char *eb, size_t el)
{
    rc_clicklog *log = NULL;
    uint32_t *rows = NULL;
    rc_ufeat *feats = NULL;
    rc_tower_history *h = NULL;
    int rc;
    if (!out || !res || !snap || !w2v || !opts)
        return rc_err(eb, el, RC_EINVAL, "retrain: NULL argument");
    *out = NULL;
    memset(res, 0, sizeof *res);
    res->clicks = snap->n;
    if ((rc = build_log(snap, w2v, &log, &rows, eb, el)))
        return rc;
    if ((rc = build_feats(snap, log, &feats))) { /* before sessionizing: snapshot order */
        rc = rc_err(eb, el, rc, "retrain: out of memory (user features)");
        goto out;
    }
    if ((rc = rc_clicklog_sessionize(log, opts->gap_ms, eb, el)))
        goto out;
    res->users = rc_dict_size(log->users);
    res->items = rc_dict_size(log->items);
    res->sessions = log->nsessions;
    res->examples = log->n - log->nsessions;
    uint64_t need = opts->min_examples ? opts->min_examples : 1;
    if (res->examples < need) {
        res->skipped = 1;
        rc_err(eb, el, 0,
               "%llu examples in the replay buffer (%llu clicks, %llu sessions), fewer "
               "than tower.retrain_min_examples = %llu",
               (unsigned long long)res->examples, (unsigned long long)res->clicks,
               (unsigned long long)res->sessions, (unsigned long long)need);
        goto out;
    }
    res->users_with_device = feats->users_with_device;
    res->users_with_tags = feats->users_with_tags;
    if ((rc = rc_tower_history_create(log, w2v, rows, feats, &h))) {
        rc = rc_err(eb, el, rc, "retrain: history: %s", rc_strerror(rc));
        goto out;
    }
    rc = rc_tower_train(&opts->train, h, NULL, out, &res->train, eb, el);
out:
    rc_tower_history_destroy(h);
    rc_ufeat_free(feats);
    free(rows);
    rc_clicklog_free(log);
    return rc;
}
