/* gen — synthetic click streams with planted structure (see gen.h).
 *
 * The world is built once at create; a min-heap of users keyed by their next
 * click time then yields clicks in global time order, so the stream
 * interleaves users like a real one. Lines are formatted by hand (no printf)
 * because the generator must outrun the consumer it feeds. */
#include "recalld/gen.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"

#define MIN_MS          (60 * 1000LL)
#define NDEVICES        8
#define TAG_VARIANTS    4
#define SESSION_GAP_MIN (31 * MIN_MS) /* > the 30 min session gap of the consumer */
#define IN_SESSION_MAX  (20 * MIN_MS)
#define DAY_MS          (24 * 60 * MIN_MS)
#define PI              3.14159265358979323846

struct comm {
    uint32_t city, cate_main, cate_second; /* second == main: one category */
    uint32_t first, n;                     /* slice of g->members / g->cdf */
};

struct user {
    int64_t next_ts;
    uint32_t home_city, fav[2], fav_cate;
    uint8_t nfav, focus, device; /* device NDEVICES = none */
    uint8_t new_session;
    uint8_t drifted; /* on the temporary interest `cur` (opts.drift) */
    uint16_t left;   /* clicks left in the current session, after the next one */
    uint32_t cur;    /* the temporary interest's community */
};

/* The kinds of malformed lines: enum rc_gen_bad in recalld/gen.h. */

/* Heap entries carry the key so sifting never touches the user array. */
struct slot {
    int64_t ts;
    uint32_t user;
};

struct rc_gen {
    rc_gen_opts o;
    rc_rng rng;
    struct comm *comms;
    rc_gen_item *items;
    uint32_t *members; /* item indices grouped by community, by rank */
    float *cdf;        /* cumulative Zipf weight per member, within its community */
    struct user *users;
    struct slot *heap; /* min next click time at the root */
    float *city_cdf;
    float *zw;  /* churn: per member slot, its Zipf weight (rank + 1)^-zipf */
    double *cw; /* churn: scratch of member weights, one community's size */
    uint64_t produced;
    rc_gen_counts counts;
};

/* ---- world ------------------------------------------------------------- */

static double rnd(rc_gen *g)
{
    return (double)(rc_rng_next(&g->rng) >> 11) * (1.0 / 9007199254740992.0);
}

/* Index of the first cdf[i] > u in cdf[0..n), the last one when none. */
static uint32_t draw_cdf(const float *cdf, uint32_t n, float u)
{
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void build_comms(rc_gen *g)
{
    const rc_gen_opts *o = &g->o;
    uint32_t m = o->communities, left;
    double *w = malloc(m * sizeof *w), wsum = 0;

    for (uint32_t c = 0; c < m; c++) {
        struct comm *cm = &g->comms[c];
        cm->city = c % o->cities;
        cm->cate_main = rc_rng_below(&g->rng, o->cates);
        cm->cate_second = rnd(g) < 0.5 ? rc_rng_below(&g->rng, o->cates) : cm->cate_main;
        w[c] = 0.5 + rnd(g); /* sizes vary up to 3x */
        wsum += w[c];
    }
    /* one item each, the rest proportional to w */
    left = o->items - m;
    uint32_t given = 0;
    for (uint32_t c = 0; c < m; c++) {
        g->comms[c].n = 1 + (uint32_t)(left * (w[c] / wsum));
        given += g->comms[c].n;
    }
    for (uint32_t c = 0; given < o->items; c = (c + 1) % m, given++)
        g->comms[c].n++;
    for (uint32_t c = 0, at = 0; c < m; c++) {
        g->comms[c].first = at;
        at += g->comms[c].n;
    }
    free(w);
}

static void build_items(rc_gen *g)
{
    const rc_gen_opts *o = &g->o;
    uint32_t n = o->items;

    /* a random permutation hides community and rank from the item number */
    for (uint32_t i = 0; i < n; i++)
        g->members[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = rc_rng_below(&g->rng, i + 1), t = g->members[i];
        g->members[i] = g->members[j];
        g->members[j] = t;
    }
    for (uint32_t c = 0; c < o->communities; c++) {
        struct comm *cm = &g->comms[c];
        double sum = 0;
        for (uint32_t r = 0; r < cm->n; r++) {
            uint32_t it = g->members[cm->first + r];
            double p = rnd(g);
            g->items[it].community = c;
            g->items[it].city = cm->city;
            g->items[it].born_ms = INT64_MIN;
            g->items[it].dies_ms = INT64_MAX;
            g->items[it].cate = p < 0.75   ? cm->cate_main
                                : p < 0.95 ? cm->cate_second
                                           : rc_rng_below(&g->rng, o->cates);
            sum += pow((double)(r + 1), -o->zipf);
            g->cdf[cm->first + r] = (float)sum;
        }
        for (uint32_t r = 0; r < cm->n; r++)
            g->cdf[cm->first + r] /= (float)sum;
    }
}

/* Item churn (opts.item_life_days): births, and the Zipf weight of each
 * member slot for the per-click draw among the living. Drawn after the rest
 * of the world, so a stream without churn is unchanged. */
static int build_churn(rc_gen *g)
{
    const rc_gen_opts *o = &g->o;
    double life = o->item_life_days * DAY_MS, span = life + o->churn_days * DAY_MS;
    uint32_t maxn = 1;
    if (o->item_life_days == 0)
        return 0;
    g->zw = malloc(o->items * sizeof *g->zw);
    for (uint32_t c = 0; c < o->communities; c++)
        maxn = RC_MAX(maxn, g->comms[c].n);
    g->cw = malloc(maxn * sizeof *g->cw);
    if (!g->zw || !g->cw)
        return RC_ENOMEM;
    for (uint32_t c = 0; c < o->communities; c++)
        for (uint32_t r = 0; r < g->comms[c].n; r++)
            g->zw[g->comms[c].first + r] = (float)pow((double)(r + 1), -o->zipf);
    for (uint32_t i = 0; i < o->items; i++) {
        rc_gen_item *it = &g->items[i];
        it->born_ms = o->start_ts_ms - (int64_t)life + (int64_t)(rnd(g) * span);
        it->dies_ms = it->born_ms + (int64_t)life;
    }
    return 0;
}

/* A member of community cm drawn among the items alive at ts, by Zipf
 * weight times sin(pi * age / life); the one closest to its mid-life when
 * none lives. */
static uint32_t draw_living(rc_gen *g, const struct comm *cm, int64_t ts)
{
    double sum = 0, life = g->o.item_life_days * DAY_MS, best = INFINITY, u;
    uint32_t pick = 0;
    for (uint32_t r = 0; r < cm->n; r++) {
        const rc_gen_item *it = &g->items[g->members[cm->first + r]];
        double age = (double)(ts - it->born_ms), off = fabs(age - life / 2);
        g->cw[r] =
            ts >= it->born_ms && ts < it->dies_ms ? g->zw[cm->first + r] * sin(PI * age / life) : 0;
        sum += g->cw[r];
        if (off < best) {
            best = off;
            pick = r;
        }
    }
    if (sum > 0) { /* the living member whose share u falls in (rounding: the last one) */
        u = rnd(g) * sum;
        for (uint32_t r = 0; r < cm->n; r++)
            if (g->cw[r] > 0) {
                pick = r;
                if ((u -= g->cw[r]) < 0)
                    break;
            }
    }
    return g->members[cm->first + pick];
}

/* Communities of city c are c, c + cities, c + 2 * cities, ... */
static uint32_t city_ncomms(const rc_gen *g, uint32_t city)
{
    return (g->o.communities - city + g->o.cities - 1) / g->o.cities;
}

static uint32_t city_comm(rc_gen *g, uint32_t city)
{
    return city + rc_rng_below(&g->rng, city_ncomms(g, city)) * g->o.cities;
}

static void heap_push(rc_gen *g, uint32_t *n, uint32_t u);

static void build_users(rc_gen *g)
{
    const rc_gen_opts *o = &g->o;
    double sum = 0;
    uint32_t hn = 0;

    /* city sizes are skewed (1/(c+1)^0.6): big and small partitions */
    for (uint32_t c = 0; c < o->cities; c++) {
        sum += pow((double)(c + 1), -0.6);
        g->city_cdf[c] = (float)sum;
    }
    for (uint32_t c = 0; c < o->cities; c++)
        g->city_cdf[c] /= (float)sum;
    for (uint32_t i = 0; i < o->users; i++) {
        struct user *u = &g->users[i];
        u->home_city = draw_cdf(g->city_cdf, o->cities, rc_rng_float(&g->rng));
        u->fav[0] = city_comm(g, u->home_city);
        u->nfav = 1;
        if (city_ncomms(g, u->home_city) > 1 && rnd(g) < 0.5) {
            do
                u->fav[1] = city_comm(g, u->home_city);
            while (u->fav[1] == u->fav[0]);
            u->nfav = 2;
        }
        u->fav_cate = g->comms[u->fav[0]].cate_main;
        double p = rnd(g);
        u->device = p < 0.1   ? NDEVICES
                    : p < 0.8 ? (uint8_t)((u->fav_cate * 3 + rc_rng_below(&g->rng, 2)) % NDEVICES)
                              : (uint8_t)rc_rng_below(&g->rng, NDEVICES);
        /* first sessions spread over 3 hours so the stream starts mixed */
        u->next_ts = o->start_ts_ms + (int64_t)rc_rng_below(&g->rng, 3 * 60 * MIN_MS);
        u->new_session = 1;
        u->left = 0;
        heap_push(g, &hn, i);
    }
}

/* ---- heap of users by next click time ----------------------------------- */

static int before(struct slot a, struct slot b)
{
    return a.ts < b.ts || (a.ts == b.ts && a.user < b.user);
}

static void heap_push(rc_gen *g, uint32_t *n, uint32_t u)
{
    struct slot e = {g->users[u].next_ts, u};
    uint32_t i = (*n)++;
    while (i > 0 && before(e, g->heap[(i - 1) / 2])) {
        g->heap[i] = g->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    g->heap[i] = e;
}

/* The root's user moved on to a later click: sift it down. */
static void heap_fix_root(rc_gen *g)
{
    uint32_t n = g->o.users, i = 0;
    struct slot e = {g->users[g->heap[0].user].next_ts, g->heap[0].user};
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(g->heap[c + 1], g->heap[c]))
            c++;
        if (!before(g->heap[c], e))
            break;
        g->heap[i] = g->heap[c];
        i = c;
    }
    g->heap[i] = e;
}

/* ---- create / destroy ---------------------------------------------------- */

static int check_opts(rc_gen_opts *o, char *errbuf, size_t errlen)
{
    if (!o->seed)
        o->seed = 1;
    o->users = o->users ? o->users : 10000;
    o->items = o->items ? o->items : 5000;
    o->cities = o->cities ? o->cities : 8;
    o->cates = o->cates ? o->cates : 6;
    o->communities = o->communities ? o->communities : 64;
    o->zipf = o->zipf ? o->zipf : 1.0;
    o->start_ts_ms = o->start_ts_ms ? o->start_ts_ms : 1700000000000LL;
    if (o->communities < o->cities)
        o->communities = o->cities;
    if (o->items < o->communities)
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "gen: items: expected >= communities and cities (%u), got %u", o->communities,
                      o->items);
    if (!(o->zipf > 0 && o->zipf < 10))
        return rc_err(errbuf, errlen, RC_EINVAL, "gen: zipf: expected 0 < s < 10");
    if (!(o->drift >= 0 && o->drift <= 1))
        return rc_err(errbuf, errlen, RC_EINVAL, "gen: drift: expected 0..1");
    if (!(o->item_life_days >= 0 && o->item_life_days <= 36500) ||
        !(o->churn_days >= 0 && o->churn_days <= 36500))
        return rc_err(errbuf, errlen, RC_EINVAL,
                      "gen: item_life_days / churn_days: expected 0..36500");
    if (o->churn_days > 0 && o->item_life_days == 0)
        return rc_err(errbuf, errlen, RC_EINVAL, "gen: churn_days: needs item_life_days > 0");
    if (!(o->invalid_share >= 0 && o->invalid_share <= 1))
        return rc_err(errbuf, errlen, RC_EINVAL, "gen: invalid_share: expected 0..1");
    if (o->start_ts_ms < 0 || o->start_ts_ms > (1LL << 50))
        return rc_err(errbuf, errlen, RC_EINVAL, "gen: start_ts: expected epoch ms >= 0");
    if (o->users > (1u << 30) || o->items > (1u << 30))
        return rc_err(errbuf, errlen, RC_EINVAL, "gen: users/items: at most 2^30");
    return 0;
}

int rc_gen_create(const rc_gen_opts *opts, rc_gen **out, char *errbuf, size_t errlen)
{
    rc_gen *g;
    int rc;

    if (!out)
        return rc_err(errbuf, errlen, RC_EINVAL, "gen: out is NULL");
    *out = NULL;
    g = calloc(1, sizeof *g);
    if (!g)
        return rc_err(errbuf, errlen, RC_ENOMEM, "gen: out of memory");
    if (opts)
        g->o = *opts;
    if ((rc = check_opts(&g->o, errbuf, errlen)))
        goto out_free;
    rc_rng_seed(&g->rng, g->o.seed);
    g->comms = calloc(g->o.communities, sizeof *g->comms);
    g->items = calloc(g->o.items, sizeof *g->items);
    g->members = calloc(g->o.items, sizeof *g->members);
    g->cdf = calloc(g->o.items, sizeof *g->cdf);
    g->users = calloc(g->o.users, sizeof *g->users);
    g->heap = calloc(g->o.users, sizeof *g->heap);
    g->city_cdf = calloc(g->o.cities, sizeof *g->city_cdf);
    if (!g->comms || !g->items || !g->members || !g->cdf || !g->users || !g->heap || !g->city_cdf) {
        rc = rc_err(errbuf, errlen, RC_ENOMEM, "gen: out of memory");
        goto out_free;
    }
    build_comms(g);
    build_items(g);
    build_users(g);
    if (build_churn(g)) {
        rc = rc_err(errbuf, errlen, RC_ENOMEM, "gen: out of memory");
        goto out_free;
    }
    *out = g;
    return 0;
out_free:
    rc_gen_destroy(g);
    return rc;
}

void rc_gen_destroy(rc_gen *g)
{
    if (!g)
        return;
    free(g->comms);
    free(g->items);
    free(g->members);
    free(g->cdf);
    free(g->users);
    free(g->heap);
    free(g->city_cdf);
    free(g->zw);
    free(g->cw);
    free(g);
}

/* ---- clicks --------------------------------------------------------------- */

struct click {
    uint32_t user, item, comm;
    int64_t ts;
    int fav, new_session;
};

static uint32_t pick_comm(rc_gen *g, struct user *u, int *fav)
{
    double p = rnd(g);
    uint32_t c;

    if (p < 0.85 && u->drifted) {
        *fav = 1; /* the current interest, not a long-term favourite */
        return u->cur;
    }
    if (p < 0.85) {
        if (u->nfav == 2 && rnd(g) < 0.1) /* drift to the other favourite */
            u->focus ^= 1;
        c = u->fav[u->focus];
    } else if (p < 0.95) {
        c = city_comm(g, u->home_city);
    } else {
        c = rc_rng_below(&g->rng, g->o.communities);
    }
    *fav = c == u->fav[0] || (u->nfav == 2 && c == u->fav[1]);
    return c;
}

/* Schedules the user's next click: inside the session (seconds to minutes),
 * or a new session more than 30 minutes later. */
static void schedule(rc_gen *g, struct user *u)
{
    if (u->left > 0) {
        u->left--;
        double gap = 3000.0 - log(1.0 - rnd(g)) * 45000.0;
        u->next_ts += (int64_t)fmin(gap, (double)IN_SESSION_MAX);
        u->new_session = 0;
    } else {
        u->next_ts += SESSION_GAP_MIN + (int64_t)(-log(1.0 - rnd(g)) * 180.0 * MIN_MS);
        u->new_session = 1;
    }
}

static void next_click(rc_gen *g, struct click *c)
{
    uint32_t ui = g->heap[0].user;
    struct user *u = &g->users[ui];

    /* Drawn only when drifting is on: without it the stream is unchanged. */
    if (u->new_session && g->o.drift > 0 && rnd(g) < g->o.drift) {
        u->drifted ^= 1;
        if (u->drifted)
            u->cur = city_comm(g, u->home_city);
    }
    if (u->new_session) {
        u->focus = u->nfav == 2 && rnd(g) < 0.4;
        u->left = 0;
        while (u->left < 40 && rnd(g) < 0.8) /* geometric, mean ~5 clicks */
            u->left++;
    }
    c->user = ui;
    c->ts = u->next_ts;
    c->new_session = u->new_session;
    c->comm = pick_comm(g, u, &c->fav);
    const struct comm *cm = &g->comms[c->comm];
    if (g->zw)
        c->item = draw_living(g, cm, c->ts);
    else
        c->item =
            g->members[cm->first + draw_cdf(g->cdf + cm->first, cm->n, rc_rng_float(&g->rng))];
    schedule(g, u);
    heap_fix_root(g);
}

/* ---- formatting --------------------------------------------------------------- */

struct out {
    char *p;
    size_t len;
};

static void put(struct out *o, const char *s, size_t n)
{
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define PUT_LIT(o, s) put(o, s, sizeof(s) - 1)

static void put_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        o->p[o->len++] = tmp[--n];
}

/* "<prefix><n>", broken on purpose for the oversized / NUL variants */
static void put_id(rc_gen *g, struct out *o, char prefix, uint32_t n, int bad)
{
    o->p[o->len++] = '"';
    o->p[o->len++] = prefix;
    put_u64(o, n);
    if (bad == RC_GEN_BAD_OVERSIZED_ID)
        for (uint32_t k = 0, pad = 130 + rc_rng_below(&g->rng, 64); k < pad; k++)
            o->p[o->len++] = 'x';
    else if (bad == RC_GEN_BAD_NUL_BYTE)
        PUT_LIT(o, "\\u0000");
    o->p[o->len++] = '"';
}

static void put_tag(rc_gen *g, struct out *o, const struct user *u)
{
    uint32_t cate =
        rnd(g) < 0.75 ? g->comms[u->fav[u->focus]].cate_main : rc_rng_below(&g->rng, g->o.cates);
    PUT_LIT(o, "\"t");
    put_u64(o, cate);
    PUT_LIT(o, "_");
    put_u64(o, rc_rng_below(&g->rng, TAG_VARIANTS));
    PUT_LIT(o, "\"");
}

static void put_extras(rc_gen *g, struct out *o, const struct user *u, int bad)
{
    if (!(g->o.flags & RC_GEN_NO_DEVICE) && u->device < NDEVICES) {
        PUT_LIT(o, ",\"device\":\"d");
        put_u64(o, u->device);
        PUT_LIT(o, "\"");
    }
    if (g->o.flags & RC_GEN_NO_TAGS && bad != RC_GEN_BAD_TOO_MANY_TAGS)
        return;
    uint32_t nt = bad == RC_GEN_BAD_TOO_MANY_TAGS ? 17 + rc_rng_below(&g->rng, 4)
                                                  : 1 + rc_rng_below(&g->rng, 3);
    PUT_LIT(o, ",\"tags\":[");
    for (uint32_t i = 0; i < nt; i++) {
        if (i)
            PUT_LIT(o, ",");
        put_tag(g, o, u);
    }
    PUT_LIT(o, "]");
}

/* The five required fields; a `bad` variant acts on field number f. */
static void put_required(rc_gen *g, struct out *o, const struct click *c, int bad, uint32_t f)
{
    static const char *const keys[] = {
        "\"user_id\":", "\"item_id\":", "\"city_id\":", "\"cate_id\":", "\"ts\":"};
    static const char *const wrong[] = {"true", "[1]", "{}", "1.5", "\"soon\""};
    static const char prefix[] = {'u', 'i', 'c', 'k'};
    const rc_gen_item *it = &g->items[c->item];
    const uint32_t vals[] = {c->user, c->item, it->city, it->cate};
    int first = 1;

    for (uint32_t k = 0; k < 5; k++) {
        int mine = k == f ? bad : -1;
        if (mine == RC_GEN_BAD_MISSING)
            continue;
        if (!first)
            PUT_LIT(o, ",");
        first = 0;
        put(o, keys[k], strlen(keys[k]));
        if (mine == RC_GEN_BAD_NULL) {
            PUT_LIT(o, "null");
        } else if (mine == RC_GEN_BAD_WRONG_TYPE) {
            put(o, wrong[k], strlen(wrong[k]));
        } else if (k < 4) {
            put_id(g, o, prefix[k], vals[k], mine);
        } else {
            if (bad == RC_GEN_BAD_NEGATIVE_TS)
                PUT_LIT(o, "-");
            put_u64(o, (uint64_t)c->ts);
            if (bad == RC_GEN_BAD_FRACTION_TS)
                PUT_LIT(o, ".5");
        }
    }
}

static size_t format(rc_gen *g, char *buf, const struct click *c, int bad)
{
    struct out o = {buf, 0};
    uint32_t f =
        rc_rng_below(&g->rng, bad == RC_GEN_BAD_OVERSIZED_ID || bad == RC_GEN_BAD_NUL_BYTE ? 2 : 5);

    if (bad == RC_GEN_BAD_ARRAY)
        PUT_LIT(&o, "[");
    PUT_LIT(&o, "{");
    put_required(g, &o, c, bad, f);
    put_extras(g, &o, &g->users[c->user], bad);
    PUT_LIT(&o, "}");
    if (bad == RC_GEN_BAD_ARRAY)
        PUT_LIT(&o, "]");
    if (bad == RC_GEN_BAD_TRUNCATED) /* any proper prefix of an object is invalid JSON */
        o.len = 1 + rc_rng_below(&g->rng, (uint32_t)o.len - 1);
    buf[o.len] = '\0';
    return o.len;
}

int rc_gen_next(rc_gen *g, char *buf, size_t cap, size_t *len, rc_gen_info *info)
{
    struct click c;
    int bad = -1;

    if (!g || !buf || !len)
        return RC_EINVAL;
    if (cap < RC_GEN_LINE_MAX)
        return RC_E2BIG;
    if (g->o.events && g->produced >= g->o.events)
        return RC_ENOENT;
    next_click(g, &c);
    if (g->o.invalid_share > 0 && rnd(g) < g->o.invalid_share)
        bad = (int)rc_rng_below(&g->rng, RC_GEN_BAD_KINDS);
    *len = format(g, buf, &c, bad);
    g->produced++;
    if (bad < 0)
        g->counts.valid++;
    else
        g->counts.invalid++;
    if (info) {
        info->user = c.user;
        info->item = c.item;
        info->community = c.comm;
        info->ts_ms = c.ts;
        info->bad = bad;
        info->valid = bad < 0;
        info->favourite = c.fav;
        info->new_session = c.new_session;
    }
    return 0;
}

/* ---- truth ------------------------------------------------------------------ */

/* "<prefix><digits>" or "<digits>" -> value; -1 when malformed or too big. */
static int64_t parse_id(const char *s, size_t len, char prefix)
{
    int64_t v = 0;
    size_t i = len > 0 && s[0] == prefix;
    if (i >= len)
        return -1;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (1LL << 32))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int rc_gen_item_at(const rc_gen *g, uint32_t item, rc_gen_item *out)
{
    if (!g || !out || item >= g->o.items)
        return RC_ENOENT;
    *out = g->items[item];
    return 0;
}

int rc_gen_user_at(const rc_gen *g, uint32_t user, rc_gen_user *out)
{
    if (!g || !out || user >= g->o.users)
        return RC_ENOENT;
    const struct user *u = &g->users[user];
    out->home_city = u->home_city;
    out->nfav = u->nfav;
    out->fav[0] = u->fav[0];
    out->fav[1] = u->nfav == 2 ? u->fav[1] : u->fav[0];
    out->fav_cate = u->fav_cate;
    return 0;
}

int rc_gen_item_truth(const rc_gen *g, const char *item_id, size_t len, rc_gen_item *out)
{
    int64_t v = item_id ? parse_id(item_id, len, 'i') : -1;
    return v < 0 || v > UINT32_MAX ? RC_ENOENT : rc_gen_item_at(g, (uint32_t)v, out);
}

int rc_gen_user_truth(const rc_gen *g, const char *user_id, size_t len, rc_gen_user *out)
{
    int64_t v = user_id ? parse_id(user_id, len, 'u') : -1;
    return v < 0 || v > UINT32_MAX ? RC_ENOENT : rc_gen_user_at(g, (uint32_t)v, out);
}

const rc_gen_opts *rc_gen_options(const rc_gen *g) { return g ? &g->o : NULL; }

rc_gen_counts rc_gen_counts_get(const rc_gen *g) { return g ? g->counts : (rc_gen_counts){0, 0}; }

int rc_gen_write_truth(const rc_gen *g, FILE *items, FILE *users)
{
    if (!g)
        return RC_EINVAL;
    if (items) {
        fputs("item_id\tcommunity\tcity\tcate\n", items);
        for (uint32_t i = 0; i < g->o.items; i++)
            fprintf(items, "i%u\t%u\tc%u\tk%u\n", i, g->items[i].community, g->items[i].city,
                    g->items[i].cate);
        if (fflush(items) || ferror(items))
            return RC_EIO;
    }
    if (users) {
        fputs("user_id\thome_city\tcommunities\n", users);
        for (uint32_t i = 0; i < g->o.users; i++) {
            const struct user *u = &g->users[i];
            fprintf(users, "u%u\tc%u\t%u", i, u->home_city, u->fav[0]);
            if (u->nfav == 2)
                fprintf(users, ",%u", u->fav[1]);
            fputc('\n', users);
        }
        if (fflush(users) || ferror(users))
            return RC_EIO;
    }
    return 0;
}
