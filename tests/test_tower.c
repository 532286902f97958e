/* tower — the two-tower model: every layer's backward against central
 * differences, the full sampled-softmax loss against them, attention,
 * inference = training forward, the model file, the click-log history,
 * training on generated data and the cold-start path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/gen.h"
#include "recalld/model.h"
#include "recalld/tower.h"
#include "recalld/train.h"
#include "recalld/ufeat.h"
#include "recalld/vec.h"
#include "test.h"
#include "tower_impl.h"

/* ---- helpers ---- */

/* A fresh directory /tmp/rc_tower_<6 random chars> (mkdtemp's template is
 * six 'X's, written here at run time). */
static void make_tmpdir(char *buf, size_t n)
{
    int len = snprintf(buf, n, "/tmp/rc_tower_######");
    ASSERT(len > 6 && (size_t)len < n);
    memset(buf + len - 6, 'X', 6);
    ASSERT(mkdtemp(buf) != NULL);
}

static void fill(float *p, size_t n, rc_rng *r, float lim)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (2.0f * rc_rng_float(r) - 1.0f) * lim;
}

static double wsum(const float *r, const float *y, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)r[i] * y[i];
    return s;
}

/* Numeric vs analytic gradient over a set of coordinates: the relative
 * error ||num - ana|| / ||ana||, and the coordinates that disagree on their
 * own (beyond 2% relative + the float noise of the loss). A step that crosses
 * a ReLU kink spoils one coordinate, a wrong backward spoils most. */
typedef struct gcheck {
    double dd, aa;
    size_t n, bad;
} gcheck;

static void gc_add(gcheck *g, double num, double ana)
{
    g->dd += (num - ana) * (num - ana);
    g->aa += ana * ana;
    g->n++;
    g->bad += fabs(num - ana) > 2e-2 * fmax(fabs(num), fabs(ana)) + 2e-4;
}

static double gc_rel(const gcheck *g) { return sqrt(g->dd) / (sqrt(g->aa) + 1e-12); }

static rc_tower_config small_cfg(unsigned features)
{
    return (rc_tower_config){.dim = 8,
                             .w2v_dim = 8,
                             .hidden = 12,
                             .id_buckets = 64,
                             .id_dim = 4,
                             .city_buckets = 8,
                             .city_dim = 3,
                             .cate_buckets = 8,
                             .cate_dim = 3,
                             .device_buckets = 8,
                             .device_dim = 3,
                             .tag_buckets = 16,
                             .tag_dim = 4,
                             .stats_cates = 4,
                             .max_clicks = 6,
                             .temperature = 0.2f,
                             .features = features};
}

/* ---- layers ---- */

/* Objective L = r . f(x) for a layer f; the helpers below perturb one input
 * coordinate at a time. */
typedef struct dense_case {
    uint32_t n, in, out;
    float W[5 * 4], b[4], X[3 * 5], Y[3 * 4], r[3 * 4];
    int relu;
} dense_case;

static double dense_obj(dense_case *c)
{
    rc__tt_dense_fwd(c->W, c->b, c->X, c->n, c->in, c->out, c->Y, c->relu);
    return wsum(c->r, c->Y, (size_t)c->n * c->out);
}

static void check_dense(int relu, uint32_t n)
{
    dense_case c = {.n = n, .in = 5, .out = 4, .relu = relu};
    rc_rng r;
    rc_rng_seed(&r, 11 + relu);
    fill(c.W, sizeof c.W / 4, &r, 1);
    fill(c.b, 4, &r, 0.5f);
    fill(c.X, sizeof c.X / 4, &r, 1);
    fill(c.r, sizeof c.r / 4, &r, 1);
    dense_obj(&c);
    float dW[20] = {0}, db[4] = {0}, dX[15] = {0}, dY[12];
    memcpy(dY, c.r, sizeof dY);
    rc__tt_dense_bwd(c.W, c.X, c.Y, dY, n, c.in, c.out, dW, db, dX, relu);
    float *params[] = {c.W, c.b, c.X}, *grads[] = {dW, db, dX};
    size_t sizes[] = {20, 4, (size_t)n * 5};
    const float eps = 1e-3f;
    for (int k = 0; k < 3; k++) {
        gcheck g = {0};
        for (size_t i = 0; i < sizes[k]; i++) {
            float keep = params[k][i];
            params[k][i] = keep + eps;
            double up = dense_obj(&c);
            params[k][i] = keep - eps;
            double down = dense_obj(&c);
            params[k][i] = keep;
            gc_add(&g, (up - down) / (2 * eps), grads[k][i]);
        }
        if (gc_rel(&g) > 1e-2)
            RC__FAIL("dense relu=%d n=%u tensor %d: relative error %g", relu, n, k, gc_rel(&g));
    }
}

TEST(tower_grad_dense)
{
    check_dense(0, 3);
    check_dense(1, 3);
    check_dense(1, 1);
}

TEST(tower_grad_l2norm)
{
    rc_rng r;
    rc_rng_seed(&r, 5);
    float Z[2 * 6], V[12], norms[2], rr[12], dV[12], dZ[12];
    fill(Z, 12, &r, 1);
    fill(rr, 12, &r, 1);
    rc__tt_l2n_fwd(Z, 2, 6, V, norms);
    for (int i = 0; i < 2; i++)
        ASSERT_NEAR(sqrt(wsum(V + 6 * i, V + 6 * i, 6)), 1.0, 1e-5);
    memcpy(dV, rr, sizeof dV);
    rc__tt_l2n_bwd(V, norms, dV, 2, 6, dZ);
    gcheck g = {0};
    const float eps = 1e-3f;
    for (int i = 0; i < 12; i++) {
        float keep = Z[i];
        Z[i] = keep + eps;
        rc__tt_l2n_fwd(Z, 2, 6, V, norms);
        double up = wsum(rr, V, 12);
        Z[i] = keep - eps;
        rc__tt_l2n_fwd(Z, 2, 6, V, norms);
        double down = wsum(rr, V, 12);
        Z[i] = keep;
        gc_add(&g, (up - down) / (2 * eps), dZ[i]);
    }
    ASSERT_DBL_OP(gc_rel(&g), <, 1e-2);
}

/* Pooling modes of the gradient check: plain attention, plain mean, click
 * attention with the recency bias r, recency-only (the mean of r = 0). */
enum { POOL_ATTN, POOL_MEAN, POOL_RATTN, POOL_RECENCY };

static double attn_obj(const float *q, const float *X, const float *rb, uint32_t k, uint32_t d,
                       const float *rr, int mode)
{
    float a[8], out[8];
    if (mode == POOL_MEAN)
        rc__tt_mean_fwd(X, k, d, out);
    else if (mode == POOL_ATTN)
        rc__tt_attn_fwd(q, X, k, d, 0.7f, a, out);
    else
        rc__tt_rattn_fwd(mode == POOL_RATTN ? q : NULL, X, k, d, 0.7f, rb, a, out);
    return wsum(rr, out, d);
}

static void check_pool(int mode)
{
    enum { K = 5, D = 6 };
    rc_rng r;
    rc_rng_seed(&r, 9 + (uint64_t)mode);
    float q[D], X[K * D], rb[K], rr[D], a[K], out[D], dq[D] = {0}, dX[K * D] = {0}, drb[K] = {0};
    fill(q, D, &r, 1);
    fill(X, K * D, &r, 1);
    fill(rb, K, &r, 1);
    fill(rr, D, &r, 1);
    if (mode == POOL_MEAN) {
        rc__tt_mean_bwd(K, D, rr, dX);
    } else if (mode == POOL_ATTN) {
        rc__tt_attn_fwd(q, X, K, D, 0.7f, a, out);
        rc__tt_attn_bwd(q, X, a, K, D, 0.7f, rr, dq, dX);
    } else {
        const float *qq = mode == POOL_RATTN ? q : NULL;
        rc__tt_rattn_fwd(qq, X, K, D, 0.7f, rb, a, out);
        rc__tt_rattn_bwd(qq, X, a, K, D, 0.7f, rr, dq, dX, drb);
    }
    const float eps = 1e-3f;
    float *params[] = {q, X, rb}, *grads[] = {dq, dX, drb};
    size_t sizes[] = {D, K * D, K};
    int has_q = mode == POOL_ATTN || mode == POOL_RATTN;
    int has_r = mode == POOL_RATTN || mode == POOL_RECENCY;
    for (int t = 0; t < 3; t++) {
        if ((t == 0 && !has_q) || (t == 2 && !has_r))
            continue;
        gcheck g = {0};
        for (size_t i = 0; i < sizes[t]; i++) {
            float keep = params[t][i];
            params[t][i] = keep + eps;
            double up = attn_obj(q, X, rb, K, D, rr, mode);
            params[t][i] = keep - eps;
            double down = attn_obj(q, X, rb, K, D, rr, mode);
            params[t][i] = keep;
            gc_add(&g, (up - down) / (2 * eps), grads[t][i]);
        }
        if (gc_rel(&g) > 1e-2)
            RC__FAIL("pool mode=%d tensor %d: relative error %g", mode, t, gc_rel(&g));
    }
}

TEST(tower_grad_attention_and_mean)
{
    check_pool(POOL_ATTN);
    check_pool(POOL_MEAN);
    check_pool(POOL_RATTN);
    check_pool(POOL_RECENCY);
}

TEST(tower_attention_follows_query)
{
    enum { K = 6, D = 8 };
    rc_rng r;
    rc_rng_seed(&r, 3);
    float q[D], X[K * D], a[K], b[K], out[D];
    fill(q, D, &r, 0.5f);
    fill(X, K * D, &r, 1);
    rc__tt_attn_fwd(q, X, K, D, 1.0f / sqrtf(D), a, out);
    double s = 0;
    for (int j = 0; j < K; j++)
        s += a[j];
    ASSERT_NEAR(s, 1.0, 1e-5);
    for (int j = 0; j < K; j++) {
        float q2[D];
        for (int i = 0; i < D; i++) /* move the query towards click j's input */
            q2[i] = q[i] + 0.5f * X[j * D + i];
        rc__tt_attn_fwd(q2, X, K, D, 1.0f / sqrtf(D), b, out);
        ASSERT_DBL_OP(b[j], >, a[j]);
    }
    /* No click: zeros, no weight. */
    rc__tt_attn_fwd(q, X, 0, D, 1.0f, a, out);
    for (int i = 0; i < D; i++)
        ASSERT_EQ(out[i], 0);
}

/* The recency bias r: r = 0 gives the plain attention (ATTN) or the exact
 * mean (no ATTN); a large r[0] moves weight to the newest used click, r[k-1]
 * to the oldest used one, whether or not clicks were cut by max_clicks. */
static void check_recency(unsigned features)
{
    rc_tower_config cfg = {.dim = 8,
                           .w2v_dim = 8,
                           .hidden = 12,
                           .id_buckets = 64,
                           .city_buckets = 8,
                           .cate_buckets = 8,
                           .device_buckets = 8,
                           .tag_buckets = 16,
                           .stats_cates = 4,
                           .max_clicks = 4,
                           .features = features};
    rc_tower_model *m = NULL;
    ASSERT_EQ(rc_tower_create(&cfg, 11, &m, NULL, 0), 0);
    rc_tower_work *w = NULL;
    ASSERT_EQ(rc_tower_work_create(m, &w), 0);
    rc_rng r;
    rc_rng_seed(&r, 12);
    float w2v[6][8];
    rc_tower_item_in cl[6];
    for (int j = 0; j < 6; j++) {
        fill(w2v[j], 8, &r, 1);
        cl[j] = (rc_tower_item_in){500 + (uint64_t)j, 1 + (uint64_t)j % 2, 3, w2v[j]};
    }
    const uint32_t counts[] = {3, 6}; /* 6 > max_clicks: the last 4 are used */
    for (size_t c = 0; c < RC_ARRAY_LEN(counts); c++) {
        rc_tower_user_in u = {.clicks = cl, .nclicks = counts[c], .now_ms = 1};
        uint32_t k = RC_MIN(counts[c], cfg.max_clicks), natt = 0;
        float v0[8], v1[8], a0[RC_TOWER_MAX_CLICKS], a1[RC_TOWER_MAX_CLICKS];
        memset(m->p + m->rec, 0, cfg.max_clicks * sizeof(float));
        rc_tower_user_vector(m, w, &u, v0, a0, &natt);
        ASSERT_EQ(natt, k);
        if (!(features & RC_TOWER_F_ATTN))
            for (uint32_t j = 0; j < k; j++)
                ASSERT_EQ(a0[j], 1.0f / (float)k); /* exactly the mean */
        m->p[m->rec] = 4.0f;                       /* r[0]: the newest click */
        rc_tower_user_vector(m, w, &u, v1, a1, &natt);
        ASSERT_DBL_OP(a1[k - 1], >, a0[k - 1] + 0.3);
        ASSERT_DBL_OP(a1[k - 1], >, 0.85);
        double s = 0;
        for (uint32_t j = 0; j < k; j++) {
            s += a1[j];
            if (j + 1 < k)
                ASSERT_DBL_OP(a1[j], <, a0[j]);
        }
        ASSERT_NEAR(s, 1.0, 1e-5);
        ASSERT(memcmp(v0, v1, sizeof v0) != 0); /* the user vector follows */
        /* The oldest used click's rank is k - 1; ranks beyond it are unused. */
        m->p[m->rec] = 0;
        m->p[m->rec + k - 1] = 4.0f;
        for (uint32_t j = k; j < cfg.max_clicks; j++)
            m->p[m->rec + j] = -7.0f;
        rc_tower_user_vector(m, w, &u, v1, a1, &natt);
        ASSERT_DBL_OP(a1[0], >, 0.85);
    }
    rc_tower_work_destroy(w);
    rc_tower_destroy(m);
}

TEST(tower_recency_bias_prefers_recent)
{
    check_recency(RC_TOWER_F_ALL);
    check_recency(0);
}

/* ---- model-level fixtures ---- */

/* A hand-made shard: 3 users with clicks / tags / devices, positives,
 * 4 easy and 2 hard negatives each. Items are numbered: item k has id hash
 * 1000 + k, city (k % 3) + 1, cate (k % 4) + 1 (hashes, so buckets), w2v
 * random. Users click items that are also positives and negatives, so the
 * id / city / cate rows get gradient from both towers. */
enum { FX_USERS = 3, FX_ITEMS = 12, FX_NE = 4, FX_NH = 2 };
typedef struct fixture {
    float w2v[FX_ITEMS][8];
    rc_tower_item_in items[FX_ITEMS];
    rc_tower_item_in clicks[FX_USERS][8];
    int64_t ts[FX_USERS][8];
    uint64_t tags[FX_USERS][3];
    rc_tower_user_in users[FX_USERS];
    uint32_t pos[FX_USERS], easy[FX_NE], hard[FX_USERS * FX_NH];
    float easy_corr[FX_NE], hard_corr[FX_USERS * FX_NH];
    float logits[FX_USERS * (1 + FX_NE + FX_NH)];
} fixture;

static void fixture_init(fixture *f)
{
    rc_rng r;
    rc_rng_seed(&r, 21);
    memset(f, 0, sizeof *f);
    for (int k = 0; k < FX_ITEMS; k++) {
        fill(f->w2v[k], 8, &r, 1);
        f->items[k] = (rc_tower_item_in){1000 + k, (uint64_t)(k % 3) + 1, (uint64_t)(k % 4) + 1,
                                         k == 5 ? NULL : f->w2v[k]}; /* item 5: no w2v */
    }
    const uint32_t ncl[FX_USERS] = {3, 8, 0}; /* user 1: over max_clicks (6); user 2: none */
    for (int u = 0; u < FX_USERS; u++) {
        for (uint32_t j = 0; j < ncl[u]; j++) {
            f->clicks[u][j] = f->items[(u * 5 + j * 3) % FX_ITEMS];
            f->ts[u][j] = 1000 * (int64_t)j;
        }
        for (int j = 0; j < 3; j++)
            f->tags[u][j] = 77 + (uint64_t)u + (uint64_t)j;
        f->users[u] = (rc_tower_user_in){.clicks = f->clicks[u],
                                         .click_ts = f->ts[u],
                                         .nclicks = ncl[u],
                                         .device_hash = u == 1 ? 0 : 40 + u,
                                         .tag_hashes = f->tags[u],
                                         .ntags = u == 2 ? 0 : 2 + u,
                                         .total_clicks = ncl[u] + 2,
                                         .sessions = 2,
                                         .now_ms = 9000};
        f->pos[u] = (uint32_t)(u * 4 + 1);
    }
    for (int e = 0; e < FX_NE; e++) {
        f->easy[e] = (uint32_t)(e * 3); /* easy 3 = item 9 */
        f->easy_corr[e] = 0.1f * (float)e;
    }
    f->easy[2] = f->pos[1]; /* masked for user 1 */
    for (int h = 0; h < FX_USERS * FX_NH; h++) {
        f->hard[h] = (uint32_t)((h * 5 + 2) % FX_ITEMS);
        f->hard_corr[h] = -0.2f;
    }
}

/* Gathers the fixture into ws and runs the shard step into g. */
static double fixture_step(const rc_tower_model *m, rc__tower_ws *ws, rc__tower_grad *g, fixture *f)
{
    for (int u = 0; u < FX_USERS; u++) {
        rc__tt_user_gather(m, ws, (uint32_t)u, &f->users[u]);
        rc__tt_item_gather(m, ws, (uint32_t)u, &f->items[f->pos[u]]);
    }
    for (int e = 0; e < FX_NE; e++)
        rc__tt_item_gather(m, ws, FX_USERS + e, &f->items[f->easy[e]]);
    for (int h = 0; h < FX_USERS * FX_NH; h++)
        rc__tt_item_gather(m, ws, FX_USERS + FX_NE + h, &f->items[f->hard[h]]);
    rc__tower_shard sh = {.n = FX_USERS,
                          .ne = FX_NE,
                          .nh = FX_NH,
                          .pos_id = f->pos,
                          .easy_id = f->easy,
                          .hard_id = f->hard,
                          .easy_corr = f->easy_corr,
                          .hard_corr = f->hard_corr,
                          .scale = 1.0f,
                          .logits = f->logits};
    rc__tt_grad_clear(m, g);
    return rc__tt_shard_step(m, ws, &sh, g);
}

static double analytic(const rc_tower_model *m, const rc__tower_grad *g, size_t idx)
{
    if (idx < m->ndense)
        return g->dense[idx];
    for (int t = 0; t < TT_NTABLES; t++) {
        const rc__tower_table *tb = &m->tab[t];
        if (idx >= tb->off && idx < tb->off + (size_t)tb->rows * tb->dim) {
            uint32_t bucket = (uint32_t)((idx - tb->off) / tb->dim),
                     col = (uint32_t)((idx - tb->off) % tb->dim);
            uint32_t s = g->slot[tb->base + bucket];
            return s == UINT32_MAX ? 0.0 : g->arena[(size_t)s * g->maxdim + col];
        }
    }
    return 0;
}

/* Central differences of the shard loss w.r.t. parameter idx, step eps.
 * Loss noise in float is ~1e-6: a wide step keeps its share small; the
 * layers are smooth enough (ReLU kinks are rare at these biases). */
#define GC_EPS 5e-3f
static double numeric_step(rc_tower_model *m, rc__tower_ws *ws, rc__tower_grad *scratch, fixture *f,
                           size_t idx, float eps)
{
    float keep = m->p[idx];
    m->p[idx] = keep + eps;
    double up = fixture_step(m, ws, scratch, f);
    m->p[idx] = keep - eps;
    double down = fixture_step(m, ws, scratch, f);
    m->p[idx] = keep;
    return (up - down) / (2 * eps);
}

static double numeric(rc_tower_model *m, rc__tower_ws *ws, rc__tower_grad *scratch, fixture *f,
                      size_t idx)
{
    return numeric_step(m, ws, scratch, f, idx, GC_EPS);
}

/* Every coordinate must agree: |numeric - analytic| <= GC_RTOL * the larger
 * magnitude + GC_ATOL. GC_RTOL covers the central difference's truncation
 * error (O(eps^2) times the third derivative: well under 1% at eps 5e-3 on
 * these smooth layers); GC_ATOL covers the float rounding of the loss, which
 * the difference quotient divides by 2 eps: the loss (~1..10, a few hundred
 * float operations deep) is exact to ~1e-6, so the quotient to ~1e-4. */
#define GC_RTOL 1e-2
#define GC_ATOL 2e-4

static void check_range(rc_tower_model *m, rc__tower_ws *ws, rc__tower_grad *g,
                        rc__tower_grad *scratch, fixture *f, const char *what, size_t lo, size_t n,
                        size_t stride)
{
    gcheck c = {0};
    double worst = 0;
    size_t kinks = 0;
    for (size_t i = lo; i < lo + n; i += stride) {
        double nu = numeric(m, ws, scratch, f, i), an = analytic(m, g, i);
        double tol = GC_RTOL * fmax(fabs(nu), fabs(an)) + GC_ATOL;
        if (getenv("RC_TOWER_DEBUG"))
            fprintf(stderr, "%s %zu: %g %g\n", what, i - lo, nu, an);
        if (fabs(nu - an) > tol) {
            /* A ReLU kink inside the step bends the difference quotient: the
             * 10x smaller step must then agree (its rounding share is 10x). */
            double nu2 = numeric_step(m, ws, scratch, f, i, GC_EPS / 10);
            double tol2 = GC_RTOL * fmax(fabs(nu2), fabs(an)) + 10 * GC_ATOL;
            if (fabs(nu2 - an) > tol2)
                RC__FAIL("%s coordinate %zu: numeric %.9g (step %g), %.9g (step %g), analytic "
                         "%.9g (tolerance %.3g)",
                         what, i - lo, nu, GC_EPS, nu2, GC_EPS / 10, an, tol2);
            kinks++;
            nu = nu2;
            tol = tol2;
        }
        gc_add(&c, nu, an);
        worst = fmax(worst, fabs(nu - an) / tol);
    }
    /* kinks are rare at these biases: nearly every coordinate passes with
     * the wide step */
    if (kinks > 1 + c.n / 20)
        RC__FAIL("%s: %zu of %zu coordinates needed the small step", what, kinks, c.n);
    if (!(c.aa > 0))
        RC__FAIL("%s: zero analytic gradient over %zu coordinates", what, c.n);
    if (getenv("RC_TOWER_DEBUG"))
        fprintf(stderr,
                "%s: worst error %.3f of its tolerance, overall relative %.2g, %zu "
                "kinks\n",
                what, worst, gc_rel(&c), kinks);
}

/* isolate: ctx (E_dev, stats) reaches the loss only through the tag query
 * (its columns in the user dense layer and the click query are zeroed), so
 * the device rows' gradient checks that path alone. */
static void check_model_grads(unsigned features, int isolate)
{
    rc_tower_config cfg = small_cfg(features);
    rc_tower_model *m = NULL;
    char err[256];
    ASSERT_EQ(rc_tower_create(&cfg, 5, &m, err, sizeof err), 0);
    /* Larger biases so ReLUs are not all near their kink. */
    rc_rng r;
    rc_rng_seed(&r, 99);
    fill(m->p + m->i1.b, m->i1.out, &r, 0.3f);
    fill(m->p + m->u1.b, m->u1.out, &r, 0.3f);
    fill(m->p + m->q.b, m->q.out, &r, 0.3f);
    fill(m->p + m->tq.b, m->tq.out, &r, 0.3f);
    /* Larger embeddings: the tag attention's scores are then far from flat,
     * and its weights' gradient far above the float noise of the loss. */
    fill(m->p + m->ndense, m->nparams - m->ndense, &r, 0.8f);
    rc_rng rr; /* its own stream: the draws above stay those of the other checks */
    rc_rng_seed(&rr, 98);
    fill(m->p + m->rec, m->cfg.max_clicks, &rr, 0.5f); /* a recency bias far from 0 */
    for (uint32_t o = 0; isolate && o < m->u1.out; o++)
        memset(m->p + m->u1.w + (size_t)o * m->uin + m->di + m->cfg.tag_dim, 0,
               m->ctx * sizeof(float));
    for (uint32_t o = 0; isolate && o < m->q.out; o++)
        memset(m->p + m->q.w + (size_t)o * m->qin, 0, m->ctx * sizeof(float));
    rc__tower_ws ws;
    rc__tower_grad g, scratch;
    ASSERT_EQ(rc__tt_ws_init(m, &ws, FX_USERS, FX_USERS + FX_NE + FX_USERS * FX_NH, 1), 0);
    ASSERT_EQ(rc__tt_grad_init(m, &g, 1000), 0);
    ASSERT_EQ(rc__tt_grad_init(m, &scratch, 1000), 0);
    static fixture f;
    fixture_init(&f);
    double loss = fixture_step(m, &ws, &g, &f);
    ASSERT(isfinite(loss) && loss > 0);
    const struct {
        const char *name;
        const rc__tower_dense *d;
    } layers[] = {{"item dense 1", &m->i1}, {"item dense 2", &m->i2}, {"user dense 1", &m->u1},
                  {"user dense 2", &m->u2}, {"click query", &m->q},   {"tag query", &m->tq}};
    for (size_t k = 0; k < RC_ARRAY_LEN(layers); k++) {
        const rc__tower_dense *d = layers[k].d;
        int unused = (d == &m->q && !(features & RC_TOWER_F_ATTN)) ||
                     (d == &m->tq && (features & (RC_TOWER_F_ATTN | RC_TOWER_F_TAGS)) !=
                                         (RC_TOWER_F_ATTN | RC_TOWER_F_TAGS));
        if (unused) { /* its gradient must be exactly zero */
            for (size_t i = d->w; i < d->b + d->out; i++)
                ASSERT_EQ(analytic(m, &g, i), 0);
            continue;
        }
        size_t nw = (size_t)d->in * d->out;
        check_range(m, &ws, &g, &scratch, &f, layers[k].name, d->w, nw, nw / 37 + 1);
        check_range(m, &ws, &g, &scratch, &f, layers[k].name, d->b, d->out, 1);
    }
    /* The recency bias: user 1 uses all max_clicks ranks, user 0 the first 3. */
    check_range(m, &ws, &g, &scratch, &f, "recency bias", m->rec, m->cfg.max_clicks, 1);
    /* Embedding rows: item 1 is user 0's positive and clicked by user 1 (ids
     * shared by both towers); cities / categories are shared by many items. */
    uint32_t b_id = rc__tt_bucket(1001, m->tab[TT_E_ID].rows);
    check_range(m, &ws, &g, &scratch, &f, "id row (both towers)",
                m->tab[TT_E_ID].off + (size_t)b_id * m->tab[TT_E_ID].dim, m->tab[TT_E_ID].dim, 1);
    check_range(m, &ws, &g, &scratch, &f, "city table", m->tab[TT_E_CITY].off,
                (size_t)m->tab[TT_E_CITY].rows * m->tab[TT_E_CITY].dim, 1);
    check_range(m, &ws, &g, &scratch, &f, "cate table", m->tab[TT_E_CATE].off,
                (size_t)m->tab[TT_E_CATE].rows * m->tab[TT_E_CATE].dim, 1);
    if (features & RC_TOWER_F_TAGS)
        check_range(m, &ws, &g, &scratch, &f, "tag table", m->tab[TT_E_TAG].off,
                    (size_t)m->tab[TT_E_TAG].rows * m->tab[TT_E_TAG].dim, 1);
    if (features & RC_TOWER_F_DEVICE)
        check_range(m, &ws, &g, &scratch, &f, "device table", m->tab[TT_E_DEV].off,
                    (size_t)m->tab[TT_E_DEV].rows * m->tab[TT_E_DEV].dim, 1);
    else
        ASSERT_EQ(g.slot[m->tab[TT_E_DEV].base + rc__tt_bucket(40, m->tab[TT_E_DEV].rows)],
                  UINT32_MAX);
    rc__tt_grad_free(&g);
    rc__tt_grad_free(&scratch);
    rc__tt_ws_free(&ws);
    rc_tower_destroy(m);
}

TEST(tower_grad_full_loss)
{
    check_model_grads(RC_TOWER_F_ALL, 0);
    check_model_grads(RC_TOWER_F_ALL, 1);
}

TEST(tower_grad_full_loss_ablations)
{
    check_model_grads(RC_TOWER_F_TAGS | RC_TOWER_F_DEVICE | RC_TOWER_F_STATS, 0); /* mean pooling */
    check_model_grads(RC_TOWER_F_ATTN | RC_TOWER_F_STATS, 0); /* no tags, no device */
    check_model_grads(0, 0);
}

/* The single-example inference API gives what the batched training forward
 * gives, and attention weights sum to one. */
TEST(tower_inference_matches_batch)
{
    rc_tower_config cfg = small_cfg(RC_TOWER_F_ALL);
    rc_tower_model *m = NULL;
    ASSERT_EQ(rc_tower_create(&cfg, 8, &m, NULL, 0), 0);
    static fixture f;
    fixture_init(&f);
    rc__tower_ws ws;
    ASSERT_EQ(rc__tt_ws_init(m, &ws, FX_USERS, FX_ITEMS, 0), 0);
    for (int u = 0; u < FX_USERS; u++)
        rc__tt_user_gather(m, &ws, (uint32_t)u, &f.users[u]);
    for (int k = 0; k < FX_ITEMS; k++)
        rc__tt_item_gather(m, &ws, (uint32_t)k, &f.items[k]);
    rc__tt_user_fwd(m, &ws, FX_USERS);
    rc__tt_item_fwd(m, &ws, FX_ITEMS);
    rc_tower_work *w = NULL;
    ASSERT_EQ(rc_tower_work_create(m, &w), 0);
    float v[8], att[RC_TOWER_MAX_CLICKS];
    uint32_t natt = 99;
    for (int u = 0; u < FX_USERS; u++) {
        rc_tower_user_vector(m, w, &f.users[u], v, att, &natt);
        ASSERT_EQ(natt, RC_MIN(f.users[u].nclicks, cfg.max_clicks));
        double s = 0, nn = 0;
        for (uint32_t j = 0; j < natt; j++)
            s += att[j];
        if (natt)
            ASSERT_NEAR(s, 1.0, 1e-5);
        for (int i = 0; i < 8; i++) {
            ASSERT_NEAR(v[i], ws.uv[u * 8 + i], 1e-5);
            nn += (double)v[i] * v[i];
        }
        ASSERT_NEAR(nn, 1.0, 1e-5);
    }
    for (int k = 0; k < FX_ITEMS; k++) {
        rc_tower_item_vector(m, w, &f.items[k], v);
        for (int i = 0; i < 8; i++)
            ASSERT_NEAR(v[i], ws.iv[k * 8 + i], 1e-5);
    }
    /* Stats: shares sum to 1 over the used clicks; scalars as documented. */
    float st[4 + RC_TOWER_NSTATS_SCALARS];
    rc_tower_user_stats(&m->cfg, &f.users[1], st);
    ASSERT_NEAR(st[0] + st[1] + st[2] + st[3], 1.0, 1e-5);
    ASSERT_NEAR(st[4], log1p(10.0) / 10, 1e-6);
    ASSERT_NEAR(st[5], log1p(6.0) / 5, 1e-6); /* the used clicks: max_clicks */
    ASSERT_NEAR(st[6], log1p(2.0) / 10, 1e-6);
    ASSERT_NEAR(st[7], log1p((9000.0 - 7000.0) / 1000.0) / 20, 1e-6);
    rc_tower_work_destroy(w);
    rc__tt_ws_free(&ws);
    rc_tower_destroy(m);
}

TEST(tower_hash_and_config)
{
    ASSERT_EQ(rc_tower_hash("", 0), 0);
    ASSERT_EQ(rc_tower_hash(NULL, 3), 0);
    uint64_t a = rc_tower_hash("i1", 2), b = rc_tower_hash("i2", 2);
    ASSERT(a != 0 && b != 0 && a != b);
    ASSERT_EQ(rc_tower_hash("i1", 2), a);
    /* Frozen value: the model file's meaning depends on it. */
    ASSERT(rc_tower_hash("c0", 2) == 16533068098718406600ull);
    ASSERT_EQ(rc_tower_hash("c0x", 2), rc_tower_hash("c0", 2)); /* len bytes only */
    ASSERT_EQ(rc__tt_bucket(0, 10), 0);
    for (uint64_t h = 1; h < 100; h++)
        ASSERT(rc__tt_bucket(h, 10) >= 1 && rc__tt_bucket(h, 10) < 10);
    rc_tower_config c = {.w2v_dim = 64, .features = RC_TOWER_F_ALL};
    rc_tower_model *m = NULL;
    char err[256] = "";
    ASSERT_EQ(rc_tower_create(&c, 1, &m, err, sizeof err), 0);
    const rc_tower_config *r = rc_tower_config_of(m);
    ASSERT_EQ(r->dim, 64);
    ASSERT_EQ(r->hidden, 128);
    ASSERT_EQ(r->max_clicks, 50);
    ASSERT_NEAR(r->temperature, 0.05, 1e-7);
    ASSERT_GT(rc_tower_params(m), (size_t)262144 * 16);
    ASSERT_GE(rc_tower_bytes(m), rc_tower_params(m) * 4);
    rc_tower_destroy(m);
    c.dim = 12;
    ASSERT_EQ(rc_tower_create(&c, 1, &m, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "dim") != NULL);
    c.dim = 0;
    c.w2v_dim = 0;
    ASSERT_EQ(rc_tower_create(&c, 1, &m, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "w2v_dim") != NULL);
    c.w2v_dim = 8;
    c.max_clicks = RC_TOWER_MAX_CLICKS + 1;
    ASSERT_EQ(rc_tower_create(&c, 1, &m, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "max_clicks") != NULL);
    ASSERT(m == NULL);
}

/* ---- file ---- */

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(p, 1, n, f), n);
    ASSERT_EQ(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ASSERT(f != NULL);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    ASSERT(b != NULL);
    ASSERT_EQ(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

TEST(tower_file_roundtrip_and_corruption)
{
    char dir[64], path[256], bad[256], err[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/m.tower", dir);
    snprintf(bad, sizeof bad, "%s/bad.tower", dir);
    rc_tower_config cfg = small_cfg(RC_TOWER_F_ALL);
    rc_tower_model *m = NULL, *l = NULL;
    ASSERT_EQ(rc_tower_create(&cfg, 3, &m, NULL, 0), 0);
    rc_rng rr;
    rc_rng_seed(&rr, 4);
    fill(m->p + m->rec, m->cfg.max_clicks, &rr, 1); /* saved and loaded like any weight */
    ASSERT_EQ(rc_tower_save(m, path, err, sizeof err), 0);
    ASSERT_EQ(rc_tower_probe(path), 1);
    ASSERT_EQ(rc_tower_load(path, &l, err, sizeof err), 0);
    ASSERT_EQ(memcmp(rc_tower_config_of(l), rc_tower_config_of(m), sizeof cfg), 0);
    static fixture f;
    fixture_init(&f);
    rc_tower_work *wm, *wl;
    ASSERT_EQ(rc_tower_work_create(m, &wm), 0);
    ASSERT_EQ(rc_tower_work_create(l, &wl), 0);
    float a[8], b[8];
    for (int u = 0; u < FX_USERS; u++) {
        rc_tower_user_vector(m, wm, &f.users[u], a, NULL, NULL);
        rc_tower_user_vector(l, wl, &f.users[u], b, NULL, NULL);
        ASSERT_EQ(memcmp(a, b, sizeof a), 0);
    }
    rc_tower_item_vector(m, wm, &f.items[3], a);
    rc_tower_item_vector(l, wl, &f.items[3], b);
    ASSERT_EQ(memcmp(a, b, sizeof a), 0);
    rc_tower_work_destroy(wm);
    rc_tower_work_destroy(wl);
    rc_tower_destroy(l);

    size_t n;
    unsigned char *buf = read_bytes(path, &n);
    {
        /* A version-1 file (before the recency bias: the same layout without
         * r) loads with r = 0 and every other weight in place. */
        const size_t hdr = 8 + 4 + 17 * 4 + 8, nr = m->cfg.max_clicks * sizeof(float);
        size_t n1 = n - nr;
        unsigned char *v1 = malloc(n1);
        ASSERT(v1 != NULL);
        memcpy(v1, buf, hdr + m->rec * sizeof(float));
        memcpy(v1 + hdr + m->rec * sizeof(float), buf + hdr + m->rec * sizeof(float) + nr,
               n - 4 - hdr - m->rec * sizeof(float) - nr);
        uint32_t one = 1;
        uint64_t np1 = m->nparams - m->cfg.max_clicks;
        memcpy(v1 + 8, &one, 4);
        memcpy(v1 + hdr - 8, &np1, 8);
        uint32_t c1 = rc_crc32c(0, v1, n1 - 4);
        memcpy(v1 + n1 - 4, &c1, 4);
        write_bytes(bad, v1, n1);
        ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), 0);
        ASSERT_EQ(l->nparams, m->nparams);
        for (uint32_t k = 0; k < m->cfg.max_clicks; k++)
            ASSERT_EQ(l->p[l->rec + k], 0);
        ASSERT_EQ(memcmp(l->p, m->p, m->rec * sizeof(float)), 0);
        ASSERT_EQ(
            memcmp(l->p + m->ndense, m->p + m->ndense, (m->nparams - m->ndense) * sizeof(float)),
            0);
        rc_tower_destroy(l);
        /* Its size must still match its own version's layout. */
        write_bytes(bad, buf, n);
        memcpy(buf + 8, &one, 4);
        uint32_t c2 = rc_crc32c(0, buf, n - 4);
        write_bytes(bad, buf, n - 4);
        FILE *fb = fopen(bad, "ab");
        ASSERT(fb != NULL);
        ASSERT_EQ(fwrite(&c2, 1, 4, fb), 4);
        ASSERT_EQ(fclose(fb), 0);
        ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
        ASSERT(strstr(err, "inconsistent") != NULL);
        uint32_t two = 2;
        memcpy(buf + 8, &two, 4);
        free(v1);
    }
    /* A flipped byte anywhere: weights, config, trailing checksum. */
    const size_t at[] = {n / 2, 20, n - 1};
    for (size_t i = 0; i < RC_ARRAY_LEN(at); i++) {
        buf[at[i]] ^= 0x10;
        write_bytes(bad, buf, n);
        buf[at[i]] ^= 0x10;
        l = (rc_tower_model *)1;
        ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
        ASSERT(l == NULL);
        ASSERT(strstr(err, "checksum mismatch") != NULL && strstr(err, bad) != NULL);
    }
    /* Truncated. */
    write_bytes(bad, buf, n - 7);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    write_bytes(bad, buf, 30);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    ASSERT(strstr(err, "truncated") != NULL);
    write_bytes(bad, buf, 5);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    ASSERT_EQ(rc_tower_probe(bad), 0);
    /* Foreign: an SGNS model file's magic, a text file, an empty file. */
    memcpy(buf, "RCMODEL1", 8);
    write_bytes(bad, buf, n);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    ASSERT(strstr(err, "bad magic") != NULL);
    ASSERT_EQ(rc_tower_probe(bad), 0);
    write_bytes(bad, "hello, world\n", 13);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    write_bytes(bad, "", 0);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    ASSERT_EQ(rc_tower_probe(bad), 0);
    /* A valid checksum over a config that does not match the weights. */
    memcpy(buf, "RCTOWER1", 8);
    uint32_t v;
    memcpy(&v, buf + 12, 4); /* dim 8 -> 16 */
    v = 16;
    memcpy(buf + 12, &v, 4);
    uint32_t crc = rc_crc32c(0, buf, n - 4);
    memcpy(buf + n - 4, &crc, 4);
    write_bytes(bad, buf, n);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    ASSERT(strstr(err, "inconsistent") != NULL);
    /* Unsupported version. */
    v = 8;
    memcpy(buf + 12, &v, 4);
    v = 99;
    memcpy(buf + 8, &v, 4);
    crc = rc_crc32c(0, buf, n - 4);
    memcpy(buf + n - 4, &crc, 4);
    write_bytes(bad, buf, n);
    ASSERT_EQ(rc_tower_load(bad, &l, err, sizeof err), RC_ECORRUPT);
    ASSERT(strstr(err, "unsupported version 99") != NULL);
    ASSERT_EQ(rc_tower_load("/nonexistent/x.tower", &l, err, sizeof err), RC_ENOENT);
    ASSERT_EQ(rc_tower_probe("/nonexistent/x.tower"), 0);
    free(buf);
    rc_tower_destroy(m);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

/* ---- history ---- */

static rc_clicklog *load_jsonl(const char *path)
{
    rc_clicklog_opts o = {.path = path, .format = RC_LOG_JSONL, .quiet = 1};
    rc_clicklog *log = NULL;
    char err[256] = "";
    if (rc_clicklog_load(&o, &log, err, sizeof err))
        RC__FAIL("load %s: %s", path, err);
    return log;
}

static size_t find_rec(const rc_clicklog *log, const char *user, const char *item)
{
    uint32_t u, it;
    ASSERT_EQ(rc_dict_find(log->users, user, strlen(user), &u), 0);
    ASSERT_EQ(rc_dict_find(log->items, item, strlen(item), &it), 0);
    for (size_t i = 0; i < log->n; i++)
        if (log->recs[i].user == u && log->recs[i].item == it)
            return i;
    RC__FAIL("no record %s/%s", user, item);
}

static uint32_t item_of(const rc_clicklog *log, const char *item)
{
    uint32_t it;
    ASSERT_EQ(rc_dict_find(log->items, item, strlen(item), &it), 0);
    return it;
}

static rc_table *train_w2v(const rc_clicklog *log, uint32_t dim, uint32_t epochs, uint32_t **rows)
{
    rc_train_opts to = {
        .dim = dim, .epochs = epochs, .threads = 1, .quiet = 1, .progress = -1, .seed = 3};
    rc_table *t = NULL;
    char err[256] = "";
    if (rc_train_run(&to, log, NULL, &t, NULL, err, sizeof err))
        RC__FAIL("w2v: %s", err);
    *rows = malloc(rc_dict_size(log->items) * sizeof(uint32_t));
    ASSERT(*rows != NULL);
    rc_train_item_rows(log, t, *rows);
    return t;
}

TEST(tower_history_user_in)
{
    char dir[64], path[256];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/log.csv", dir);
    /* User a: session 1 (x1 x2 x3), then after 3 h session 2 (x4, x5 at the
     * same ms). User b interleaves. x3's city and category are empty. */
    const char *lines = "user,item,ts,city,cate\n"
                        "a,x1,1000,c1,k1\n"
                        "b,x2,1500,c1,k2\n"
                        "a,x2,2000,c1,k2\n"
                        "b,x1,2500,c1,k1\n"
                        "a,x3,3000,,\n"
                        "b,x4,9000000,c2,k1\n"
                        "a,x4,10803000,c2,k1\n"
                        "a,x5,10803000,c2,k2\n";
    write_bytes(path, lines, strlen(lines));
    rc_clicklog_opts lo = {.path = path,
                           .format = RC_LOG_CSV,
                           .sep = ",",
                           .header = 1,
                           .col_user = "user",
                           .col_item = "item",
                           .col_time = "ts",
                           .col_city = "city",
                           .col_cate = "cate",
                           .time_unit = RC_TIME_MS,
                           .quiet = 1};
    rc_clicklog *log = NULL;
    char err[256] = "";
    if (rc_clicklog_load(&lo, &log, err, sizeof err))
        RC__FAIL("load: %s", err);
    ASSERT_EQ(log->n, 8);
    uint32_t *rows;
    rc_table *w2v = train_w2v(log, 8, 1, &rows);
    rows[item_of(log, "x2")] = UINT32_MAX; /* as if x2 had no SGNS row */
    /* Hand-built features: user a has a device and tags 5 6, b nothing. */
    uint32_t ua;
    ASSERT_EQ(rc_dict_find(log->users, "a", 1, &ua), 0);
    ASSERT_EQ(rc_dict_size(log->users), 2);
    uint64_t dev[2] = {0}, tags[2] = {5, 6};
    uint32_t off[3] = {0, ua == 0 ? 2 : 0, 2};
    dev[ua] = 123;
    rc_ufeat f = {.nusers = 2, .device = dev, .tag_off = off, .tags = tags};
    rc_tower_history *h = NULL;
    ASSERT_EQ(rc_tower_history_create(log, w2v, rows, &f, &h), 0);
    rc_tower_item_in cl[8];
    int64_t ts[8];
    rc_tower_user_in in;

    ASSERT_EQ(rc_tower_history_user_in(h, find_rec(log, "a", "x1"), 8, cl, ts, &in), 0);
    ASSERT_EQ(in.total_clicks, 0);
    ASSERT_EQ(in.sessions, 0);
    ASSERT_EQ(in.device_hash, 123);
    ASSERT_EQ(in.ntags, 2);
    ASSERT_EQ(in.tag_hashes[0], 5);

    ASSERT_EQ(rc_tower_history_user_in(h, find_rec(log, "a", "x3"), 8, cl, ts, &in), 2);
    ASSERT_EQ(in.nclicks, 2);
    ASSERT_EQ(in.total_clicks, 2);
    ASSERT_EQ(in.sessions, 1);
    ASSERT_EQ(in.now_ms, 3000);
    ASSERT_EQ(ts[0], 1000);
    ASSERT_EQ(ts[1], 2000);
    ASSERT(in.clicks == cl && in.click_ts == ts);
    ASSERT_EQ(cl[0].id_hash, rc_tower_hash("x1", 2));
    ASSERT_EQ(cl[0].city_hash, rc_tower_hash("c1", 2));
    ASSERT_EQ(cl[0].cate_hash, rc_tower_hash("k1", 2));
    ASSERT(cl[0].w2v == rc_table_in(w2v, rows[item_of(log, "x1")]));
    ASSERT(cl[1].w2v == NULL); /* x2: no row */

    /* Session 2: every earlier click counts, from one earlier session. */
    size_t r4 = find_rec(log, "a", "x4"), r5 = find_rec(log, "a", "x5");
    uint32_t n4 = rc_tower_history_user_in(h, r4, 8, cl, ts, &in);
    uint64_t t4 = in.total_clicks;
    ASSERT_EQ(in.sessions, 1);
    rc_tower_item_in x3;
    rc_tower_history_item_in(h, item_of(log, "x3"), &x3);
    ASSERT_EQ(x3.city_hash, 0); /* empty city: absent */
    ASSERT_EQ(x3.cate_hash, 0);
    uint32_t n5 = rc_tower_history_user_in(h, r5, 8, cl, ts, &in);
    /* Same ms: exactly one of the two sees the other (record order). */
    ASSERT_EQ((n4 > n5 ? n4 - n5 : n5 - n4), 1);
    ASSERT_EQ((t4 > in.total_clicks ? t4 - in.total_clicks : in.total_clicks - t4), 1);
    ASSERT_EQ(RC_MIN(n4, n5), 3);
    /* max_clicks keeps the newest, oldest first. */
    size_t later = n4 > n5 ? r4 : r5;
    ASSERT_EQ(rc_tower_history_user_in(h, later, 2, cl, ts, &in), 2);
    ASSERT_EQ(in.total_clicks, 4);
    ASSERT_EQ(ts[0], 3000);
    ASSERT_EQ(ts[1], 10803000);
    ASSERT_EQ(in.sessions, 2); /* the current session has an earlier click */
    ASSERT_EQ(cl[0].id_hash, rc_tower_hash("x3", 2));

    /* User b: no features. */
    ASSERT_EQ(rc_tower_history_user_in(h, find_rec(log, "b", "x4"), 8, cl, ts, &in), 2);
    ASSERT_EQ(in.device_hash, 0);
    ASSERT_EQ(in.ntags, 0);
    ASSERT_EQ(in.sessions, 1);

    rc_tower_history_destroy(h);
    rc_table_destroy(w2v);
    free(rows);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

/* ---- training on generated data ---- */

typedef struct world {
    char dir[64];
    rc_gen *g;
    rc_clicklog *log;
    rc_table *w2v;
    uint32_t *rows;
    rc_ufeat f;
    rc_tower_history *h;
} world;

static void world_init(world *w, uint64_t events)
{
    memset(w, 0, sizeof *w);
    make_tmpdir(w->dir, sizeof w->dir);
    char path[128];
    snprintf(path, sizeof path, "%s/gen.jsonl", w->dir);
    rc_gen_opts go = {.seed = 4,
                      .events = events,
                      .users = 400,
                      .items = 300,
                      .cities = 4,
                      .cates = 4,
                      .communities = 16};
    ASSERT_EQ(rc_gen_create(&go, &w->g, NULL, 0), 0);
    FILE *fp = fopen(path, "w");
    ASSERT(fp != NULL);
    char line[RC_GEN_LINE_MAX];
    size_t len;
    while (rc_gen_next(w->g, line, sizeof line, &len, NULL) == 0)
        fprintf(fp, "%s\n", line);
    ASSERT_EQ(fclose(fp), 0);
    w->log = load_jsonl(path);
    w->w2v = train_w2v(w->log, 16, 3, &w->rows);
    /* Features from the generator's truth (as helper modules would read them
     * from the events): device and one tag per favourite category. */
    uint32_t nu = rc_dict_size(w->log->users);
    w->f.nusers = nu;
    w->f.device = calloc(nu, sizeof(uint64_t));
    w->f.tag_off = calloc(nu + 1, sizeof(uint32_t));
    w->f.tags = calloc(nu, sizeof(uint64_t));
    ASSERT(w->f.device && w->f.tag_off && w->f.tags);
    for (uint32_t u = 0; u < nu; u++) {
        size_t l;
        const char *id = rc_dict_str(w->log->users, u, &l);
        rc_gen_user t;
        ASSERT_EQ(rc_gen_user_truth(w->g, id, l, &t), 0);
        char s[32];
        int n = snprintf(s, sizeof s, "dev%u", t.fav_cate);
        w->f.device[u] = rc_tower_hash(s, (size_t)n);
        n = snprintf(s, sizeof s, "t%u", t.fav_cate);
        w->f.tags[u] = rc_tower_hash(s, (size_t)n);
        w->f.tag_off[u + 1] = u + 1;
    }
    ASSERT_EQ(rc_tower_history_create(w->log, w->w2v, w->rows, &w->f, &w->h), 0);
}

static void world_free(world *w)
{
    rc_tower_history_destroy(w->h);
    free(w->f.device);
    free(w->f.tag_off);
    free(w->f.tags);
    rc_table_destroy(w->w2v);
    free(w->rows);
    rc_clicklog_free(w->log);
    rc_gen_destroy(w->g);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", w->dir), 0);
}

static rc_tower_train_opts train_opts(uint32_t threads)
{
    rc_tower_train_opts o = {.batch = 64,
                             .epochs = 2,
                             .easy_negatives = 32,
                             .hard_negatives = 2,
                             .lr = 0.005f,
                             .threads = threads,
                             .seed = 5,
                             .progress = -1,
                             .quiet = 1};
    o.cfg = (rc_tower_config){.dim = 16,
                              .hidden = 32,
                              .id_buckets = 512,
                              .id_dim = 8,
                              .city_buckets = 16,
                              .city_dim = 4,
                              .cate_buckets = 16,
                              .cate_dim = 4,
                              .device_buckets = 32,
                              .device_dim = 4,
                              .tag_buckets = 64,
                              .tag_dim = 4,
                              .stats_cates = 8,
                              .max_clicks = 10,
                              .features = RC_TOWER_F_ALL};
    return o;
}

/* Share of (example, random item) pairs where the positive scores higher. */
static double rank_share(const rc_tower_model *m, const world *w)
{
    rc_tower_work *wk;
    ASSERT_EQ(rc_tower_work_create(m, &wk), 0);
    rc_rng r;
    rc_rng_seed(&r, 17);
    rc_tower_item_in cl[10], in;
    int64_t ts[10];
    rc_tower_user_in u;
    float uv[16], pv[16], nv[16];
    uint32_t nitems = rc_dict_size(w->log->items), wins = 0, pairs = 0;
    for (int k = 0; k < 300; k++) {
        size_t rec = rc_rng_below(&r, (uint32_t)w->log->n);
        uint32_t it = w->log->recs[rec].item;
        if (w->rows[it] == UINT32_MAX || rc_tower_history_user_in(w->h, rec, 10, cl, ts, &u) == 0)
            continue;
        rc_tower_user_vector(m, wk, &u, uv, NULL, NULL);
        rc_tower_history_item_in(w->h, it, &in);
        rc_tower_item_vector(m, wk, &in, pv);
        float sp = rc_vec_dot(uv, pv, 16);
        for (int j = 0; j < 20; j++) {
            uint32_t o = rc_rng_below(&r, nitems);
            if (o == it || w->rows[o] == UINT32_MAX)
                continue;
            rc_tower_history_item_in(w->h, o, &in);
            rc_tower_item_vector(m, wk, &in, nv);
            wins += sp > rc_vec_dot(uv, nv, 16);
            pairs++;
        }
    }
    rc_tower_work_destroy(wk);
    ASSERT_GT(pairs, 1000);
    return (double)wins / pairs;
}

TEST(tower_train_learns)
{
    world w;
    world_init(&w, 20000);
    rc_tower_train_opts o = train_opts(1);
    rc_tower_model *m = NULL, *m0 = NULL;
    rc_tower_train_result res;
    char err[256] = "";
    ASSERT_EQ(rc_tower_train(&o, w.h, NULL, &m, &res, err, sizeof err), 0);
    ASSERT_GT(res.examples, 10000);
    ASSERT_EQ(res.threads, 1);
    ASSERT(!res.stopped);
    fprintf(stderr, "loss %.4f -> %.4f, %.0f examples/s\n", res.first_loss, res.loss,
            res.examples_per_s);
    ASSERT_DBL_OP(res.loss, <, 0.8 * res.first_loss);
    rc_tower_config c0 = o.cfg;
    c0.w2v_dim = rc_table_dim(w.w2v);
    ASSERT_EQ(rc_tower_create(&c0, 5, &m0, NULL, 0), 0);
    double trained = rank_share(m, &w), untrained = rank_share(m0, &w);
    fprintf(stderr, "positive above random: trained %.3f, untrained %.3f\n", trained, untrained);
    ASSERT_DBL_OP(trained, >, 0.8);
    ASSERT_DBL_OP(trained, >, untrained + 0.15);
    char line[512];
    rc_tower_train_summary(&o, &res, line, sizeof line);
    ASSERT(strstr(line, "examples/s") != NULL);
    rc_tower_destroy(m);
    rc_tower_destroy(m0);
    world_free(&w);
}

static rc_tower_model *train_once(const world *w, uint32_t threads, rc_tower_train_result *res)
{
    rc_tower_train_opts o = train_opts(threads);
    o.epochs = 1;
    o.max_examples = 3000;
    rc_tower_model *m = NULL;
    char err[256] = "";
    if (rc_tower_train(&o, w->h, NULL, &m, res, err, sizeof err))
        RC__FAIL("train: %s", err);
    return m;
}

TEST(tower_train_deterministic)
{
    world w;
    world_init(&w, 6000);
    rc_tower_train_result r1, r2;
    rc_tower_model *a = train_once(&w, 1, &r1), *b = train_once(&w, 1, &r2);
    ASSERT_EQ(r1.examples, 3000);
    ASSERT_EQ(a->nparams, b->nparams);
    ASSERT_EQ(memcmp(a->p, b->p, a->nparams * sizeof(float)), 0);
    ASSERT_EQ(r1.loss, r2.loss);
    rc_tower_destroy(b);
    /* Two threads: same examples and batches; sums in another order only. */
    b = train_once(&w, 2, &r2);
    ASSERT_EQ(r2.threads, 2);
    ASSERT_EQ(r2.examples, 3000);
    ASSERT_NEAR(r2.loss, r1.loss, 0.05 * r1.loss);
    rc_tower_model *c = train_once(&w, 2, &r1);
    ASSERT_EQ(memcmp(b->p, c->p, b->nparams * sizeof(float)), 0);
    rc_tower_destroy(a);
    rc_tower_destroy(b);
    rc_tower_destroy(c);
    /* Bad options and no example. */
    rc_tower_train_opts o = train_opts(1);
    rc_tower_model *m = (rc_tower_model *)1;
    char err[256] = "";
    o.batch = 100000;
    ASSERT_EQ(rc_tower_train(&o, w.h, NULL, &m, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(m == NULL && strstr(err, "batch") != NULL);
    o = train_opts(1);
    o.cfg.dim = 12;
    ASSERT_EQ(rc_tower_train(&o, w.h, NULL, &m, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "dim") != NULL);
    o = train_opts(1);
    uint8_t *mask = calloc(w.log->nsessions, 1);
    ASSERT_EQ(rc_tower_train(&o, w.h, mask, &m, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "no example") != NULL);
    free(mask);
    world_free(&w);
}

TEST(tower_cold_start_item)
{
    world w;
    world_init(&w, 20000);
    rc_tower_train_opts o = train_opts(1);
    rc_tower_model *m = NULL;
    char err[256] = "";
    ASSERT_EQ(rc_tower_train(&o, w.h, NULL, &m, NULL, err, sizeof err), 0);
    rc_tower_work *wk;
    ASSERT_EQ(rc_tower_work_create(m, &wk), 0);
    /* Per (city, cate) of the generator: a never-seen id, no SGNS vector. */
    uint32_t wins = 0, groups = 0;
    for (uint32_t city = 0; city < 4; city++)
        for (uint32_t cate = 0; cate < 4; cate++) {
            char cs[16], ks[16], id[32];
            int cl = snprintf(cs, sizeof cs, "c%u", city),
                kl = snprintf(ks, sizeof ks, "k%u", cate);
            int il = snprintf(id, sizeof id, "brand-new-%u-%u", city, cate);
            rc_tower_item_in in = {rc_tower_hash(id, (size_t)il), rc_tower_hash(cs, (size_t)cl),
                                   rc_tower_hash(ks, (size_t)kl), NULL};
            float v[16], x[16];
            rc_tower_item_vector(m, wk, &in, v);
            double nn = 0;
            for (int i = 0; i < 16; i++) {
                ASSERT(isfinite(v[i]));
                nn += (double)v[i] * v[i];
            }
            ASSERT_NEAR(nn, 1.0, 1e-4);
            double same = 0, other = 0;
            uint32_t ns = 0, no = 0;
            for (uint32_t it = 0; it < rc_dict_size(w.log->items); it++) {
                if (w.rows[it] == UINT32_MAX)
                    continue;
                rc_tower_item_in ti;
                rc_tower_history_item_in(w.h, it, &ti);
                rc_tower_item_vector(m, wk, &ti, x);
                double c = rc_vec_dot(v, x, 16);
                int sc = ti.city_hash == in.city_hash, sk = ti.cate_hash == in.cate_hash;
                if (sc && sk) {
                    same += c;
                    ns++;
                } else if (!sc && !sk) {
                    other += c;
                    no++;
                }
            }
            if (ns < 3 || no < 3)
                continue;
            groups++;
            wins += same / ns > other / no;
        }
    fprintf(stderr, "cold start: closer to its own city/cate in %u of %u groups\n", wins, groups);
    ASSERT_GE(groups, 8);
    ASSERT_GE(wins, groups - 1);
    rc_tower_work_destroy(wk);
    rc_tower_destroy(m);
    world_free(&w);
}
