/* tower_history — per-user, time-ordered click index of a click log: the user
 * inputs of the two-tower model as the server builds them (tower.h).
 *
 * A log keeps its records by session, and a user's sessions are not
 * contiguous, so the index sorts record numbers by (user, ts, record): the
 * clicks "before" a record are then the prefix of its user's range. */
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/tower.h"
#include "tower_impl.h"

struct rc_tower_history {
    const rc_clicklog *log;
    const rc_table *w2v;
    const uint32_t *item_rows;
    const rc_ufeat *feats;
    uint32_t nusers, nitems;
    uint32_t *ord;           /* n: record numbers by (user, ts, record) */
    uint32_t *pos;           /* n: record -> its place in ord */
    uint32_t *uoff;          /* nusers + 1: user u = ord[uoff[u] .. uoff[u + 1]) */
    uint32_t *nsess;         /* n: distinct sessions among the user's entries before this place */
    uint64_t *ih;            /* nitems * 3: id, city, cate hashes */
    uint32_t *icity, *icate; /* nitems: canonical (first record's) city / cate ids */
};

typedef struct tr {
    int64_t ts;
    uint32_t rec;
} tr;

static int cmp_tr(const void *a, const void *b)
{
    const tr *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->rec < y->rec ? -1 : x->rec > y->rec;
}

static uint64_t str_hash(const rc_dict *d, uint32_t id)
{
    size_t len = 0;
    const char *s = rc_dict_str(d, id, &len);
    return s ? rc_tower_hash(s, len) : 0;
}

/* Counting sort by user, then time order inside each user. */
static int build_order(rc_tower_history *h)
{
    const rc_clicklog *log = h->log;
    size_t n = log->n;
    tr *t = malloc((n ? n : 1) * sizeof *t);
    if (!t)
        return RC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        h->uoff[log->recs[i].user + 1]++;
    for (uint32_t u = 0; u < h->nusers; u++)
        h->uoff[u + 1] += h->uoff[u];
    uint32_t *fill = malloc(((size_t)h->nusers + 1) * sizeof(uint32_t));
    if (!fill) {
        free(t);
        return RC_ENOMEM;
    }
    memcpy(fill, h->uoff, h->nusers * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        uint32_t u = log->recs[i].user;
        t[fill[u]++] = (tr){log->recs[i].ts_ms, (uint32_t)i};
    }
    free(fill);
    for (uint32_t u = 0; u < h->nusers; u++)
        qsort(t + h->uoff[u], h->uoff[u + 1] - h->uoff[u], sizeof *t, cmp_tr);
    for (size_t k = 0; k < n; k++) {
        h->ord[k] = t[k].rec;
        h->pos[t[k].rec] = (uint32_t)k;
    }
    free(t);
    return 0;
}

static int build_sessions(rc_tower_history *h)
{
    const rc_clicklog *log = h->log;
    uint32_t *stamp = calloc(log->nsessions ? log->nsessions : 1, sizeof *stamp);
    if (!stamp)
        return RC_ENOMEM;
    for (uint32_t u = 0; u < h->nusers; u++) {
        uint32_t seen = 0;
        for (uint32_t k = h->uoff[u]; k < h->uoff[u + 1]; k++) {
            h->nsess[k] = seen;
            uint32_t s = log->recs[h->ord[k]].session;
            if (s < log->nsessions && stamp[s] != u + 1) {
                stamp[s] = u + 1;
                seen++;
            }
        }
    }
    free(stamp);
    return 0;
}

static void build_items(rc_tower_history *h)
{
    const rc_clicklog *log = h->log;
    memset(h->icity, 0xff, h->nitems * sizeof(uint32_t));
    for (size_t i = 0; i < log->n; i++) {
        const rc_click_rec *r = &log->recs[i];
        if (r->item < h->nitems && h->icity[r->item] == UINT32_MAX) {
            h->icity[r->item] = r->city;
            h->icate[r->item] = r->cate;
        }
    }
    for (uint32_t it = 0; it < h->nitems; it++) {
        if (h->icity[it] == UINT32_MAX)
            h->icity[it] = h->icate[it] = 0;
        h->ih[3 * (size_t)it] = str_hash(log->items, it);
        h->ih[3 * (size_t)it + 1] = str_hash(log->cities, h->icity[it]);
        h->ih[3 * (size_t)it + 2] = str_hash(log->cates, h->icate[it]);
    }
}

int rc_tower_history_create(const rc_clicklog *log, const rc_table *w2v, const uint32_t *item_rows,
                            const rc_ufeat *feats, rc_tower_history **out)
{
    if (!out)
        return RC_EINVAL;
    *out = NULL;
    if (!log || !w2v || !item_rows)
        return RC_EINVAL;
    if (log->n >= UINT32_MAX)
        return RC_E2BIG;
    rc_tower_history *h = calloc(1, sizeof *h);
    if (!h)
        return RC_ENOMEM;
    *h = (rc_tower_history){.log = log,
                            .w2v = w2v,
                            .item_rows = item_rows,
                            .feats = feats,
                            .nusers = rc_dict_size(log->users),
                            .nitems = rc_dict_size(log->items)};
    size_t n = log->n ? log->n : 1, ni = h->nitems ? h->nitems : 1;
    h->ord = malloc(n * sizeof(uint32_t));
    h->pos = malloc(n * sizeof(uint32_t));
    h->nsess = malloc(n * sizeof(uint32_t));
    h->uoff = calloc((size_t)h->nusers + 1, sizeof(uint32_t));
    h->ih = malloc(ni * 3 * sizeof(uint64_t));
    h->icity = malloc(ni * sizeof(uint32_t));
    h->icate = malloc(ni * sizeof(uint32_t));
    int rc = RC_ENOMEM;
    if (!h->ord || !h->pos || !h->nsess || !h->uoff || !h->ih || !h->icity || !h->icate)
        goto fail;
    if ((rc = build_order(h)) || (rc = build_sessions(h)))
        goto fail;
    build_items(h);
    *out = h;
    return 0;
fail:
    rc_tower_history_destroy(h);
    return rc;
}

void rc_tower_history_destroy(rc_tower_history *h)
{
    if (!h)
        return;
    free(h->ord);
    free(h->pos);
    free(h->nsess);
    free(h->uoff);
    free(h->ih);
    free(h->icity);
    free(h->icate);
    free(h);
}

void rc_tower_history_item_in(const rc_tower_history *h, uint32_t item, rc_tower_item_in *out)
{
    if (item >= h->nitems) {
        *out = (rc_tower_item_in){0};
        return;
    }
    const uint64_t *x = h->ih + 3 * (size_t)item;
    uint32_t row = h->item_rows[item];
    *out = (rc_tower_item_in){.id_hash = x[0],
                              .city_hash = x[1],
                              .cate_hash = x[2],
                              .w2v = row == UINT32_MAX ? NULL : rc_table_in(h->w2v, row)};
}

uint32_t rc_tower_history_user_in(const rc_tower_history *h, size_t rec, uint32_t max_clicks,
                                  rc_tower_item_in *clicks, int64_t *ts, rc_tower_user_in *out)
{
    const rc_clicklog *log = h->log;
    memset(out, 0, sizeof *out);
    if (rec >= log->n)
        return 0;
    const rc_click_rec *r = &log->recs[rec];
    uint32_t p = h->pos[rec], start = h->uoff[r->user];
    uint32_t earlier = p - start, k = RC_MIN(earlier, max_clicks);
    for (uint32_t j = 0; j < k; j++) {
        uint32_t e = h->ord[p - k + j];
        rc_tower_history_item_in(h, log->recs[e].item, &clicks[j]);
        if (ts)
            ts[j] = log->recs[e].ts_ms;
    }
    out->clicks = clicks;
    out->click_ts = ts;
    out->nclicks = k;
    out->total_clicks = earlier;
    out->sessions = h->nsess[p];
    out->now_ms = r->ts_ms;
    const rc_ufeat *f = h->feats;
    if (f && r->user < f->nusers) {
        out->device_hash = f->device ? f->device[r->user] : 0;
        if (f->tag_off && f->tags) {
            out->tag_hashes = f->tags + f->tag_off[r->user];
            out->ntags = f->tag_off[r->user + 1] - f->tag_off[r->user];
        }
    }
    return k;
}

uint32_t rc__tt_history_nusers(const rc_tower_history *h) { return h->nusers; }
const rc_clicklog *rc__tt_history_log(const rc_tower_history *h) { return h->log; }
const uint32_t *rc__tt_history_item_rows(const rc_tower_history *h) { return h->item_rows; }
const rc_table *rc__tt_history_w2v(const rc_tower_history *h) { return h->w2v; }
uint32_t rc__tt_history_item_city(const rc_tower_history *h, uint32_t item)
{
    return item < h->nitems ? h->icity[item] : 0;
}
uint32_t rc__tt_history_item_cate(const rc_tower_history *h, uint32_t item)
{
    return item < h->nitems ? h->icate[item] : 0;
}
