#include "recalld/api.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recalld/common.h"
#include "recalld/model.h"
#include "recalld/modelpath.h"
#include "recalld/server.h"

/* Stage bounds (us): finer than rc_hist_latency_us below 1 ms, where the
 * recall stages live. */
static const uint64_t stage_us[] = {0,    1,    2,     5,     10,    20,     50,     100,
                                    200,  300,  500,   750,   1000,  1500,   2000,   3000,
                                    5000, 7500, 10000, 20000, 50000, 100000, 250000, 1000000};

/* Where one recall request's time went (the stage histograms). */
typedef struct recall_times {
    int searched; /* reached the engine: the stages are observed */
    uint64_t parse_ns, reply_ns;
    rc_recall_timing tm;
} recall_times;

/* Request fields each op accepts; any other is bad_request naming it (a typo
 * such as "cty" must not silently widen a recall). */
static const char *const recall_fields[] = {"op",    "user_id",    "users", "k",
                                            "city",  "categories", "mode",  "half_life_ms",
                                            "exact", "now_ms",     NULL};
static const char *const similar_fields[] = {"op", "item_id", "k", "mode", NULL};
static const char *const user_fields[] = {"op", "user_id", NULL};
static const char *const op_only_fields[] = {"op", NULL};
static const char *const reload_fields[] = {"op", "path", NULL};
static const char *const install_fields[] = {"op", "path", "replace", NULL};

/* 0 when every key of req is listed, else -1 and msg names the first other. */
static int check_fields(json_t *req, const char *op, const char *const *allowed, char *msg,
                        size_t msglen)
{
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (allowed[i])
            continue;
        int kl = (int)RC_MIN(strlen(key), (size_t)64);
        while (kl > 0 && ((unsigned char)key[kl] & 0xc0) == 0x80)
            kl--; /* cut at a character boundary: the message stays UTF-8 */
        size_t n = (size_t)snprintf(msg, msglen, "%.*s: unknown field (%s takes:", kl, key, op);
        for (i = 0; allowed[i] && n < msglen; i++)
            n += (size_t)snprintf(msg + n, msglen - n, "%s %s", i ? "," : "", allowed[i]);
        if (n < msglen)
            snprintf(msg + n, msglen - n, ")");
        return -1;
    }
    return 0;
}

static void reply_error(rc_api *a, rc_buf *r, const char *code, const char *msg)
{
    atomic_fetch_add(&a->errors, 1);
    rc_buf_reset(r);
    rc_buf_puts(r, "{\"ok\":false,\"error\":{\"code\":");
    rc_buf_json_str(r, code, strlen(code));
    rc_buf_puts(r, ",\"message\":");
    rc_buf_json_str(r, msg, strlen(msg));
    rc_buf_puts(r, "}}");
}

/* An id field: string (1..128 bytes) or non-negative integer -> decimal text. */
static int get_id(json_t *req, const char *key, char *out, size_t cap, char *msg, size_t msglen)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) {
        snprintf(msg, msglen, "%s: required", key);
        return -1;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        snprintf(out, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return 0;
    }
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        if (n == 0 || n >= cap || memchr(json_string_value(v), 0, n)) {
            snprintf(msg, msglen, "%s: expected 1..%zu bytes without NUL", key, cap - 1);
            return -1;
        }
        memcpy(out, json_string_value(v), n + 1);
        return 0;
    }
    snprintf(msg, msglen, "%s: expected string or non-negative integer", key);
    return -1;
}

static int get_k(rc_api *a, json_t *req, uint32_t *k, char *msg, size_t msglen)
{
    uint32_t k_default, k_max; /* SIGHUP may change them: one consistent read */
    rc_engine_k_limits(a->engine, &k_default, &k_max);
    json_t *v = json_object_get(req, "k");
    *k = k_default;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > (json_int_t)k_max) {
        snprintf(msg, msglen, "k: expected integer 1..%u", k_max);
        return -1;
    }
    *k = (uint32_t)json_integer_value(v);
    return 0;
}

static void put_hits(rc_api *a, rc_buf *r, const rc_hit *h, uint32_t n)
{
    const rc_table *t = rc_engine_table(a->engine);
    rc_buf_puts(r, "\"items\":[");
    for (uint32_t i = 0; i < n; i++) {
        size_t len;
        const char *id = rc_table_item_id(t, h[i].row, &len);
        const char *city = rc_table_city_name(t, rc_table_city(t, h[i].row));
        const char *cate = rc_table_cate_name(t, rc_table_cate(t, h[i].row));
        rc_buf_puts(r, i ? ",{\"item_id\":" : "{\"item_id\":");
        rc_buf_json_str(r, id, len);
        rc_buf_puts(r, ",\"score\":");
        rc_buf_json_num(r, h[i].score);
        rc_buf_puts(r, ",\"city\":");
        rc_buf_json_str(r, city ? city : "", city ? strlen(city) : 0);
        rc_buf_puts(r, ",\"cate\":");
        rc_buf_json_str(r, cate ? cate : "", cate ? strlen(cate) : 0);
        rc_buf_puts(r, "}");
    }
    rc_buf_puts(r, "]");
}

/* Options shared by every user of a recall request (single or batch). */
typedef struct recall_opts {
    char city[RC_ATTR_MAX + 1];
    char cbuf[64][RC_ATTR_MAX + 1];
    const char *cates[64];
    rc_recall_req q;
    recall_times *rt;
} recall_opts;

static int parse_recall_opts(rc_api *a, json_t *req, recall_opts *o, char *msg, size_t msglen)
{
    json_t *v;
    memset(&o->q, 0, sizeof o->q);
    if (get_k(a, req, &o->q.k, msg, msglen))
        return -1;
    if ((v = json_object_get(req, "city")) && !json_is_null(v)) {
        if (get_id(req, "city", o->city, sizeof o->city, msg, msglen))
            return -1;
        if (strcmp(o->city, "*") == 0)
            o->q.global = 1; /* every city, whatever recall.scope says */
        else
            o->q.city = o->city;
    }
    if ((v = json_object_get(req, "categories")) && !json_is_null(v)) {
        size_t i;
        json_t *c;
        if (!json_is_array(v) || json_array_size(v) > 64) {
            snprintf(msg, msglen, "categories: expected an array of <= 64 ids");
            return -1;
        }
        json_array_foreach(v, i, c) {
            if (json_is_integer(c) && json_integer_value(c) >= 0)
                snprintf(o->cbuf[i], sizeof o->cbuf[i], "%" JSON_INTEGER_FORMAT,
                         json_integer_value(c));
            else if (json_is_string(c) && json_string_length(c) <= RC_ATTR_MAX)
                memcpy(o->cbuf[i], json_string_value(c), json_string_length(c) + 1);
            else {
                snprintf(msg, msglen, "categories[%zu]: expected a string or integer id", i);
                return -1;
            }
            o->cates[i] = o->cbuf[i];
        }
        o->q.cates = o->cates;
        o->q.ncates = (uint32_t)json_array_size(v);
    }
    if ((v = json_object_get(req, "half_life_ms")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            snprintf(msg, msglen, "half_life_ms: expected integer >= 0 (0 = no decay)");
            return -1;
        }
        o->q.half_life_ms = json_integer_value(v) ? (int64_t)json_integer_value(v) : -1;
    }
    if ((v = json_object_get(req, "exact")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            snprintf(msg, msglen, "exact: expected true or false");
            return -1;
        }
        o->q.exact = json_is_true(v);
    }
    /* the request's mode, else recall.mode (validated against the channel) */
    int mode = rc_engine_recall_mode(a->engine);
    if ((v = json_object_get(req, "mode")) && !json_is_null(v)) {
        const char *m = json_string_value(v);
        if ((mode = rc_recall_mode_parse(m)) < 0) {
            snprintf(msg, msglen,
                     "mode: expected \"avg\", \"multi_category\", \"two_tower\", \"itemknn\" or "
                     "\"fused\"");
            return -1;
        }
    }
    /* (a reloaded recall.mode can name the channel a restart would turn on) */
    if ((mode == RC_RECALL_MODE_ITEMKNN || mode == RC_RECALL_MODE_FUSED) &&
        !rc_engine_config(a->engine)->cooc_max_bytes) {
        snprintf(msg, msglen, "mode: \"%s\" needs the co-occurrence channel (cooc.max_bytes > 0)",
                 rc_recall_mode_names[mode]);
        return -1;
    }
    o->q.multi_category = mode == RC_RECALL_MODE_MULTI_CATEGORY;
    o->q.two_tower = mode == RC_RECALL_MODE_TWO_TOWER;
    o->q.itemknn = mode == RC_RECALL_MODE_ITEMKNN;
    o->q.fused = mode == RC_RECALL_MODE_FUSED;
    if ((v = json_object_get(req, "now_ms")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            snprintf(msg, msglen, "now_ms: expected epoch milliseconds (integer > 0)");
            return -1;
        }
        o->q.now_ms = (int64_t)json_integer_value(v);
    }
    return 0;
}

/* Why two_tower cannot answer (rc_engine_* returned RC_EAGAIN). */
static void no_model_msg(rc_api *a, const char *what, char *msg, size_t msglen)
{
    rc_engine_tower_info ti;
    rc_engine_tower_info_get(a->engine, &ti);
    if (ti.loading)
        snprintf(msg, msglen, "%s: the tower model is still loading (%u of %u items vectorised)",
                 what, ti.load_done, ti.load_total);
    else
        snprintf(msg, msglen,
                 "%s: no tower model loaded (start with --model FILE.tower or use "
                 "reload_model)",
                 what);
}

/* Appends `"items":[...]` (+ fallback, + categories plan) for one user. */
static int recall_one(rc_api *a, recall_opts *o, const char *user, rc_buf *r, char *msg,
                      size_t msglen)
{
    rc_mc_quota plan[64];
    uint32_t nplan = 0, n = 0;
    int fallback = 0;
    const rc_table *t = rc_engine_table(a->engine);
    rc_hit shits[1024]; /* k up to 1024 without allocation (recall.k_max may be larger) */
    rc_hit *hits = o->q.k <= RC_ARRAY_LEN(shits) ? shits : malloc(o->q.k * sizeof *hits);
    if (!hits) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    o->q.user = user;
    o->q.ulen = strlen(user);
    o->q.quotas = plan;
    o->q.nquotas = &nplan;
    o->q.timing = &o->rt->tm;
    o->rt->searched = 1;
    int rc = rc_engine_recall(a->engine, &o->q, hits, &n, &fallback);
    uint64_t t0 = rc_now_ns();
    if (rc) {
        if (hits != shits)
            free(hits);
        if (rc == RC_EAGAIN && o->q.two_tower) {
            no_model_msg(a, "two_tower", msg, msglen);
            return -2;
        }
        snprintf(msg, msglen, "%s", rc_strerror(rc));
        return -1;
    }
    put_hits(a, r, hits, n);
    if (hits != shits)
        free(hits);
    if (fallback)
        rc_buf_puts(r, ",\"fallback\":\"popular\"");
    if (o->q.multi_category && !fallback) {
        rc_buf_puts(r, ",\"categories\":[");
        for (uint32_t i = 0; i < nplan; i++) {
            const char *c = rc_table_cate_name(t, plan[i].cate);
            rc_buf_puts(r, i ? ",{\"cate\":" : "{\"cate\":");
            rc_buf_json_str(r, c ? c : "", c ? strlen(c) : 0);
            rc_buf_puts(r, ",\"share\":");
            rc_buf_json_num(r, plan[i].share);
            rc_buf_printf(r, ",\"quota\":%u,\"filled\":%u}", plan[i].quota, plan[i].filled);
        }
        rc_buf_puts(r, "]");
    }
    o->rt->reply_ns += rc_now_ns() - t0;
    return 0;
}

/* Cost limits of one recall request, checked before any work: k x users
 * bounds the reply and the searches, items x users the brute force of
 * "exact" (it scans every item whatever the city). 0, or -1 with msg naming
 * the limit (limit_exceeded). */
static int check_cost(rc_api *a, const recall_opts *o, size_t nusers, char *msg, size_t msglen)
{
    const rc_config *c = rc_engine_config(a->engine);
    unsigned long long ku = (unsigned long long)o->q.k * nusers;
    unsigned long long items = rc_table_size(rc_engine_table(a->engine));
    if (ku > c->max_k_users) {
        snprintf(msg, msglen, "k x users = %u x %zu = %llu exceeds recall.max_k_users (%u)", o->q.k,
                 nusers, ku, c->max_k_users);
        return -1;
    }
    if (o->q.exact && items * nusers > c->max_exact_scan) {
        snprintf(msg, msglen,
                 "exact: items x users = %llu x %zu = %llu exceeds "
                 "recall.max_exact_scan (%llu)",
                 items, nusers, items * nusers, (unsigned long long)c->max_exact_scan);
        return -1;
    }
    return 0;
}

/* {"op":"recall","user_id":U,...} or, batched, {"op":"recall","users":[U,...],...}
 * -> {"ok":true,"results":[{"user_id":U,"items":[...]},...]}. */
static void op_recall(rc_api *a, json_t *req, rc_buf *r, int *two_tower, uint64_t t0,
                      recall_times *rt)
{
    char user[RC_ID_MAX + 1], msg[480];
    int orc;
    if (check_fields(req, "recall", recall_fields, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    recall_opts *o = malloc(sizeof *o);
    json_t *users = json_object_get(req, "users");
    if (!o)
        return reply_error(a, r, "internal", "out of memory");
    o->rt = rt;
    if (parse_recall_opts(a, req, o, msg, sizeof msg))
        goto bad;
    *two_tower = o->q.two_tower;
    if (!users) {
        if (get_id(req, "user_id", user, sizeof user, msg, sizeof msg))
            goto bad;
        if (check_cost(a, o, 1, msg, sizeof msg))
            goto limit;
        rt->parse_ns = rc_now_ns() - t0;
        rc_buf_puts(r, o->q.two_tower ? "{\"ok\":true,\"mode\":\"two_tower\"," : "{\"ok\":true,");
        if ((orc = recall_one(a, o, user, r, msg, sizeof msg)) == -2)
            goto no_model;
        if (orc)
            goto internal;
        rc_buf_puts(r, "}");
        free(o);
        return;
    }
    size_t max = rc_engine_config(a->engine)->max_batch_users, i;
    json_t *u;
    if (!json_is_array(users) || json_array_size(users) == 0 || json_array_size(users) > max) {
        snprintf(msg, sizeof msg, "users: expected an array of 1..%zu user ids", max);
        goto bad;
    }
    json_array_foreach(users, i, u) {
        json_t *one = json_pack("{sO}", "user_id", u);
        int bad_id = !one || get_id(one, "user_id", user, sizeof user, msg, sizeof msg);
        json_decref(one);
        if (bad_id) {
            char m2[sizeof msg];
            memcpy(m2, msg, sizeof m2);
            snprintf(msg, sizeof msg, "users[%zu]: %.120s", i, m2);
            goto bad;
        }
    }
    if (check_cost(a, o, json_array_size(users), msg, sizeof msg))
        goto limit;
    rt->parse_ns = rc_now_ns() - t0;
    rc_buf_puts(r, o->q.two_tower ? "{\"ok\":true,\"mode\":\"two_tower\",\"results\":["
                                  : "{\"ok\":true,\"results\":[");
    json_array_foreach(users, i, u) {
        json_t *one = json_pack("{sO}", "user_id", u);
        get_id(one, "user_id", user, sizeof user, msg, sizeof msg);
        json_decref(one);
        rc_buf_puts(r, i ? ",{\"user_id\":" : "{\"user_id\":");
        rc_buf_json_str(r, user, strlen(user));
        rc_buf_puts(r, ",");
        if ((orc = recall_one(a, o, user, r, msg, sizeof msg)) == -2)
            goto no_model;
        if (orc)
            goto internal;
        rc_buf_puts(r, "}");
        if (r->overflow)
            break; /* reply_too_large: no point searching for the rest */
    }
    rc_buf_puts(r, "]}");
    free(o);
    return;
bad:
    free(o);
    return reply_error(a, r, "bad_request", msg);
limit:
    free(o);
    return reply_error(a, r, "limit_exceeded", msg);
internal:
    free(o);
    return reply_error(a, r, "internal", msg);
no_model:
    free(o);
    return reply_error(a, r, "no_model", msg);
}

static void op_similar(rc_api *a, json_t *req, rc_buf *r)
{
    char item[RC_ID_MAX + 1], msg[480];
    uint32_t k, n = 0;
    json_t *v;
    if (check_fields(req, "similar", similar_fields, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    if (get_id(req, "item_id", item, sizeof item, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    if (!json_object_get(req, "k"))
        json_object_set_new(req, "k", json_integer(10));
    if (get_k(a, req, &k, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    int tt = 0;
    if ((v = json_object_get(req, "mode")) && !json_is_null(v)) {
        const char *m = json_string_value(v);
        if (m && strcmp(m, "two_tower") == 0)
            tt = 1;
        else if (!m || strcmp(m, "avg") != 0)
            return reply_error(a, r, "bad_request", "mode: expected \"avg\" or \"two_tower\"");
    }
    rc_hit *hits = malloc(k * sizeof *hits);
    if (!hits)
        return reply_error(a, r, "internal", "out of memory");
    int rc = tt ? rc_engine_tower_similar(a->engine, item, strlen(item), k, hits, &n)
                : rc_engine_similar(a->engine, item, strlen(item), k, hits, &n);
    if (rc == RC_EAGAIN && tt) {
        free(hits);
        no_model_msg(a, "two_tower", msg, sizeof msg);
        return reply_error(a, r, "no_model", msg);
    }
    if (rc == RC_ENOENT) {
        free(hits);
        snprintf(msg, sizeof msg,
                 tt ? "item_id %s is not known (or not vectorised yet)" : "item_id %s is not known",
                 item);
        return reply_error(a, r, "unknown_item", msg);
    }
    if (rc) {
        free(hits);
        return reply_error(a, r, "internal", rc_strerror(rc));
    }
    rc_buf_puts(r, tt ? "{\"ok\":true,\"mode\":\"two_tower\"," : "{\"ok\":true,");
    put_hits(a, r, hits, n);
    rc_buf_puts(r, "}");
    free(hits);
}

/* {"op":"reload_model","path":FILE?} -> the new tower model's figures. */
static void op_reload_model(rc_api *a, json_t *req, rc_buf *r)
{
    char err[512], file[RC_CONF_STR];
    const char *path = NULL;
    rc_engine_tower_info ti;
    json_t *v = json_object_get(req, "path");
    if (check_fields(req, "reload_model", reload_fields, err, sizeof err))
        return reply_error(a, r, "bad_request", err);
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= RC_CONF_STR ||
            memchr(json_string_value(v), 0, json_string_length(v))) {
            snprintf(err, sizeof err, "path: expected a file name of 1..%d bytes", RC_CONF_STR - 1);
            return reply_error(a, r, "bad_request", err);
        }
        path = json_string_value(v);
    }
    /* Only the configured model or a file of tower.model_dir, checked
     * before anything opens it by name (modelpath.h). */
    const rc_config *c = rc_engine_config(a->engine);
    rc_engine_tower_info cur;
    rc_engine_tower_info_get(a->engine, &cur);
    rc_modelpath_opts mo = {.dir = c->tower_model_dir,
                            .configured = c->tower_model[0] ? c->tower_model : cur.path,
                            .max_bytes = c->tower_max_model_bytes};
    int rc = rc_modelpath_check(&mo, path, file, sizeof file, err, sizeof err);
    if (rc == RC_EINVAL)
        return reply_error(a, r, "not_allowed", err);
    if (rc)
        return reply_error(a, r, "load_failed", err);
    rc = rc_engine_tower_load(a->engine, file, &ti, err, sizeof err);
    if (rc == RC_EAGAIN)
        return reply_error(a, r, "busy", err);
    if (rc)
        return reply_error(a, r, "load_failed", err);
    rc_buf_puts(r, "{\"ok\":true,\"path\":");
    rc_buf_json_str(r, ti.path, strlen(ti.path));
    rc_buf_printf(r,
                  ",\"params\":%zu,\"dim\":%u,\"max_clicks\":%u,\"items\":%u,"
                  "\"load_ms\":%.1f}",
                  ti.params, ti.dim, ti.max_clicks, ti.items, ti.load_ms);
}

/* {"op":"install_model","path":FILE?,"replace":BOOL?} -> installs a
 * word2vec model file (recalld-train's, e.g. a rebuild with --init) into the
 * live table; "replace":true for a whole new table (a rebuild from random
 * vectors: rc_engine_replace_table). The reply comes when the last row is
 * installed (engine.h). */
static void op_install_model(rc_api *a, json_t *req, rc_buf *r)
{
    char err[512], file[RC_CONF_STR];
    const char *path = NULL;
    json_t *v = json_object_get(req, "path"), *rp = json_object_get(req, "replace");
    if (check_fields(req, "install_model", install_fields, err, sizeof err))
        return reply_error(a, r, "bad_request", err);
    if (rp && !json_is_boolean(rp))
        return reply_error(a, r, "bad_request", "replace: expected true or false");
    int replace = rp && json_is_true(rp);
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= RC_CONF_STR ||
            memchr(json_string_value(v), 0, json_string_length(v))) {
            snprintf(err, sizeof err, "path: expected a file name of 1..%d bytes", RC_CONF_STR - 1);
            return reply_error(a, r, "bad_request", err);
        }
        path = json_string_value(v);
    }
    const rc_config *c = rc_engine_config(a->engine);
    if (c->role != RC_ROLE_ALL)
        return reply_error(a, r, "not_supported",
                           "install_model: only with role all (a trainer shard holds its cities "
                           "only, a replica serves the trainers' vectors)");
    /* the same rules as reload_model's (modelpath.h), with model.path and
     * model.dir; the size is bounded by the header's item count (model.h) */
    rc_modelpath_opts mo = {.dir = c->model_dir,
                            .configured = c->model_path,
                            .what = "model",
                            .dir_key = "model.dir",
                            .refusal = RC_INSTALL_NOT_ALLOWED,
                            .none = "no model file (model.path, --model FILE or a \"path\" in "
                                    "model.dir)"};
    int rc = rc_modelpath_check(&mo, path, file, sizeof file, err, sizeof err);
    if (rc == RC_EINVAL)
        return reply_error(a, r, "not_allowed", err);
    if (rc)
        return reply_error(a, r, "load_failed", err);
    rc_table_opts to = {.dim = c->dim, .max_items = c->max_items, .seed = c->seed};
    rc_table *t = NULL;
    uint64_t t0 = rc_now_ns();
    if ((rc = rc_model_load(file, &to, &t, err, sizeof err)))
        return reply_error(a, r, "load_failed", err);
    double load_ms = (double)(rc_now_ns() - t0) / 1e6;
    rc_engine_table_install res;
    rc = (replace ? rc_engine_replace_table : rc_engine_install_table)(a->engine, t, &res, err,
                                                                       sizeof err);
    rc_table_destroy(t);
    if (rc == RC_EAGAIN)
        return reply_error(a, r, "busy", err);
    if (rc)
        return reply_error(a, r, "load_failed", err);
    rc_buf_puts(r, "{\"ok\":true,\"path\":");
    rc_buf_json_str(r, file, strlen(file));
    rc_buf_printf(r,
                  ",\"replace\":%s,\"rows\":%u,\"replaced\":%u,\"created\":%u,\"refused\":%u,"
                  "\"reset\":%u,\"load_ms\":%.1f,\"install_ms\":%.1f}",
                  replace ? "true" : "false", res.rows, res.replaced, res.created, res.refused,
                  res.reset, load_ms, res.seconds * 1e3);
}

/* {"op":"retrain_model"} -> retrains the served tower model now from the
 * replay buffer (waits for it; see engine.h) and describes the outcome. */
static void op_retrain_model(rc_api *a, rc_buf *r)
{
    char err[512];
    rc_engine_retrain_info ri;
    int rc = rc_engine_retrain_now(a->engine, &ri, err, sizeof err);
    if (rc == RC_EINVAL)
        return reply_error(a, r, "retrain_off", err);
    if (rc == RC_ENOENT)
        return reply_error(a, r, "retrain_skipped", err);
    if (rc == RC_EAGAIN)
        return reply_error(a, r, "busy", err);
    if (rc)
        return reply_error(a, r, "retrain_failed", err);
    rc_engine_tower_info ti;
    rc_engine_tower_info_get(a->engine, &ti);
    rc_buf_puts(r, "{\"ok\":true,\"path\":");
    rc_buf_json_str(r, ti.path, strlen(ti.path));
    rc_buf_printf(r,
                  ",\"saved\":%s,\"clicks\":%llu,\"users\":%llu,\"sessions\":%llu,"
                  "\"examples\":%llu,\"trained\":%llu,\"loss\":%.4f,\"first_loss\":%.4f,"
                  "\"train_seconds\":%.3f,\"seconds\":%.3f,\"params\":%zu,\"items\":%u}",
                  ri.last_path[0] ? "true" : "false", (unsigned long long)ri.last_clicks,
                  (unsigned long long)ri.last_users, (unsigned long long)ri.last_sessions,
                  (unsigned long long)ri.last_examples, (unsigned long long)ri.last_trained,
                  ri.last_loss, ri.last_first_loss, ri.last_train_seconds, ri.last_seconds,
                  ti.params, ti.items);
}

static void op_user(rc_api *a, json_t *req, rc_buf *r)
{
    char user[RC_ID_MAX + 1], msg[480];
    uint32_t rows[256], n = 0;
    int64_t ts[256];
    const rc_table *t = rc_engine_table(a->engine);
    if (check_fields(req, "user", user_fields, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    if (get_id(req, "user_id", user, sizeof user, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    if (rc_engine_user_clicks(a->engine, user, strlen(user), rows, ts, 256, &n)) {
        snprintf(msg, sizeof msg, "user_id %s has no recent clicks", user);
        return reply_error(a, r, "unknown_user", msg);
    }
    rc_buf_puts(r, "{\"ok\":true,\"clicks\":[");
    for (uint32_t i = 0; i < n; i++) {
        size_t len;
        const char *id = rc_table_item_id(t, rows[i], &len);
        const char *city = rc_table_city_name(t, rc_table_city(t, rows[i]));
        const char *cate = rc_table_cate_name(t, rc_table_cate(t, rows[i]));
        rc_buf_puts(r, i ? ",{\"item_id\":" : "{\"item_id\":");
        rc_buf_json_str(r, id, len);
        rc_buf_printf(r, ",\"ts\":%lld,\"city\":", (long long)ts[i]);
        rc_buf_json_str(r, city, strlen(city));
        rc_buf_puts(r, ",\"cate\":");
        rc_buf_json_str(r, cate, strlen(cate));
        rc_buf_puts(r, "}");
    }
    rc_buf_puts(r, "]}");
}

static void op_stats(rc_api *a, rc_buf *r)
{
    rc_buf_puts(r, "{\"ok\":true,");
    rc_api_stats_json(a, r);
    rc_buf_puts(r, "}");
}

static void stages_json(rc_api *a, rc_buf *r);

void rc_api_stats_json(rc_api *a, rc_buf *r)
{
    rc_engine_stats_json(a->engine, r);
    rc_buf_printf(r, ",\"server\":{\"requests\":%llu,\"errors\":%llu",
                  (unsigned long long)atomic_load(&a->requests),
                  (unsigned long long)atomic_load(&a->errors));
    if (a->socket_stats) {
        rc_buf_puts(r, ",");
        a->socket_stats(a->socket_arg, r);
    }
    rc_buf_puts(r, "}");
    double p50, p99;
    uint32_t nlat;
    rc_api_tower_latency(a, &p50, &p99, &nlat);
    rc_buf_printf(r,
                  ",\"two_tower\":{\"requests\":%llu,\"errors\":%llu,\"p50_ms\":%.3f,"
                  "\"p99_ms\":%.3f,\"samples\":%u}",
                  (unsigned long long)atomic_load(&a->tower_requests),
                  (unsigned long long)atomic_load(&a->tower_errors), p50, p99, nlat);
    stages_json(a, r);
    if (a->kafka_stats) {
        rc_buf_puts(r, ",\"kafka\":{");
        a->kafka_stats(a->kafka_arg, r);
        rc_buf_puts(r, "}");
    }
}

void rc_api_init(rc_api *a)
{
    memset(a, 0, sizeof *a);
    for (int op = 0; op < RC_API_OP_COUNT; op++)
        rc_hist_init(&a->latency[op], rc_hist_latency_us, rc_hist_latency_us_n, 1e-6);
    rc_hist_init(&a->tower_latency, rc_hist_latency_us, rc_hist_latency_us_n, 1e-6);
    for (int i = 0; i < RC_API_STAGE_COUNT; i++)
        rc_hist_init(&a->stage[i], stage_us, RC_ARRAY_LEN(stage_us), 1e-6);
}

const char *rc_api_stage_name(int stage)
{
    static const char *names[RC_API_STAGE_COUNT] = {"queue_wait", "parse", "query",   "index_lock",
                                                    "coarse",     "scan",  "rerank",  "fallback",
                                                    "reply",      "total", "off_cpu", "cooc"};
    return stage >= 0 && stage < RC_API_STAGE_COUNT ? names[stage] : "?";
}

/* Quantile q of a snapshot, interpolated linearly inside its bucket (us);
 * the last finite bound when it falls above them; 0 without samples. */
static double snap_quantile(const rc_hist_snap *h, double q)
{
    uint64_t total = 0, seen = 0;
    for (uint32_t i = 0; i <= h->nb; i++)
        total += h->n[i];
    if (!total || !h->nb)
        return 0;
    double rank = q * (double)total;
    for (uint32_t i = 0; i < h->nb; i++) {
        if ((double)(seen + h->n[i]) >= rank && h->n[i]) {
            double lo = i ? (double)h->le[i - 1] : 0, hi = (double)h->le[i];
            return lo + (hi - lo) * (rank - (double)seen) / (double)h->n[i];
        }
        seen += h->n[i];
    }
    return (double)h->le[h->nb - 1];
}

/* "recall_stages":{"count":{STAGE:N,...},"sum_us":{...},"p50_us":{...},
 * "p99_us":{...},"bounds_us":[...],"buckets":{STAGE:[...],...}} */
static void stages_json(rc_api *a, rc_buf *r)
{
    static const char *const keys[] = {"count", "sum_us", "p50_us", "p99_us"};
    rc_hist_snap sn[RC_API_STAGE_COUNT];
    for (int i = 0; i < RC_API_STAGE_COUNT; i++)
        rc_hist_snapshot(&a->stage[i], &sn[i]);
    rc_buf_printf(r, ",\"recall_stages\":{\"work\":{\"parts\":%llu,\"lists\":%llu,\"rows\":%llu},",
                  (unsigned long long)atomic_load(&a->work_parts),
                  (unsigned long long)atomic_load(&a->work_lists),
                  (unsigned long long)atomic_load(&a->work_rows));
    for (size_t k = 0; k < RC_ARRAY_LEN(keys); k++) {
        rc_buf_printf(r, "%s\"%s\":{", k ? "," : "", keys[k]);
        for (int i = 0; i < RC_API_STAGE_COUNT; i++) {
            uint64_t n = 0;
            for (uint32_t b = 0; b <= sn[i].nb; b++)
                n += sn[i].n[b];
            rc_buf_printf(r, "%s\"%s\":", i ? "," : "", rc_api_stage_name(i));
            if (k == 0)
                rc_buf_printf(r, "%llu", (unsigned long long)n);
            else if (k == 1)
                rc_buf_printf(r, "%llu", (unsigned long long)sn[i].sum);
            else
                rc_buf_printf(r, "%.1f", snap_quantile(&sn[i], k == 2 ? 0.5 : 0.99));
        }
        rc_buf_puts(r, "}");
    }
    rc_buf_puts(r, ",\"bounds_us\":[");
    for (uint32_t b = 0; b < sn[0].nb; b++)
        rc_buf_printf(r, "%s%llu", b ? "," : "", (unsigned long long)sn[0].le[b]);
    rc_buf_puts(r, "],\"buckets\":{");
    for (int i = 0; i < RC_API_STAGE_COUNT; i++) {
        rc_buf_printf(r, "%s\"%s\":[", i ? "," : "", rc_api_stage_name(i));
        for (uint32_t b = 0; b <= sn[i].nb; b++)
            rc_buf_printf(r, "%s%llu", b ? "," : "", (unsigned long long)sn[i].n[b]);
        rc_buf_puts(r, "]");
    }
    rc_buf_puts(r, "}}");
}

void rc_api_tower_latency(rc_api *a, double *p50_ms, double *p99_ms, uint32_t *n)
{
    enum { RING = sizeof a->tower_recent / sizeof a->tower_recent[0] };
    uint32_t v[RING];
    unsigned long long pos = atomic_load(&a->tower_pos);
    uint32_t m = pos < RING ? (uint32_t)pos : RING;
    for (uint32_t i = 0; i < m; i++)
        v[i] = atomic_load_explicit(&a->tower_recent[i], memory_order_relaxed);
    const double q[2] = {0.5, 0.99};
    uint32_t pq[2];
    rc_quantiles_u32(v, m, q, 2, pq);
    *n = m;
    *p50_ms = pq[0] / 1e3;
    *p99_ms = pq[1] / 1e3;
}

const char *rc_api_op_name(int op)
{
    static const char *names[RC_API_OP_COUNT] = {"recall",        "similar",       "user",
                                                 "stats",         "health",        "reload_model",
                                                 "retrain_model", "install_model", "invalid"};
    return op >= 0 && op < RC_API_OP_COUNT ? names[op] : "?";
}

int rc_api_ready(rc_api *a, const char **why)
{
    *why = NULL;
    if (atomic_load(&a->stopping))
        *why = "shutting down";
    else if (!atomic_load(&a->model_ready))
        *why = "model not loaded";
    else if (!atomic_load(&a->assigned))
        *why = "waiting for Kafka partition assignment";
    return *why == NULL;
}

static void op_health(rc_api *a, rc_buf *r)
{
    const char *why;
    if (!rc_api_ready(a, &why))
        return reply_error(a, r, "not_ready", why);
    rc_buf_printf(r, "{\"ok\":true,\"status\":\"ready\",\"items\":%u,\"applied\":%llu",
                  rc_table_size(rc_engine_table(a->engine)),
                  (unsigned long long)rc_engine_applied(a->engine));
    if (a->warnings) {
        size_t at = r->len;
        rc_buf_puts(r, ",\"warnings\":[");
        size_t start = r->len;
        a->warnings(a->kafka_arg, r);
        if (r->len == start) {
            r->len = at; /* none */
            r->data[at] = '\0';
        } else
            rc_buf_puts(r, "]");
    }
    rc_buf_puts(r, "}");
}

/* The calling thread's CPU time (ns): with the wall time of a run, how long
 * the thread was off a CPU (a syscall; ~0.2 µs). */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void observe_stages(rc_api *a, const recall_times *rt, uint64_t wait_ns, uint64_t run_ns,
                           uint64_t cpu_ns)
{
    const uint64_t ns[RC_API_STAGE_COUNT] = {[RC_API_STAGE_QUEUE_WAIT] = wait_ns,
                                             [RC_API_STAGE_PARSE] = rt->parse_ns,
                                             [RC_API_STAGE_QUERY] = rt->tm.query_ns,
                                             [RC_API_STAGE_INDEX_LOCK] = rt->tm.lock_ns,
                                             [RC_API_STAGE_COARSE] = rt->tm.coarse_ns,
                                             [RC_API_STAGE_SCAN] = rt->tm.scan_ns,
                                             [RC_API_STAGE_RERANK] = rt->tm.rerank_ns,
                                             [RC_API_STAGE_FALLBACK] = rt->tm.fallback_ns,
                                             [RC_API_STAGE_REPLY] = rt->reply_ns,
                                             [RC_API_STAGE_TOTAL] = wait_ns + run_ns,
                                             [RC_API_STAGE_OFF_CPU] =
                                                 run_ns > cpu_ns ? run_ns - cpu_ns : 0,
                                             [RC_API_STAGE_COOC] = rt->tm.cooc_ns};
    for (int i = 0; i < RC_API_STAGE_COUNT; i++)
        rc_hist_observe(&a->stage[i], ns[i] / 1000);
    atomic_fetch_add(&a->work_parts, rt->tm.parts);
    atomic_fetch_add(&a->work_lists, rt->tm.lists);
    atomic_fetch_add(&a->work_rows, rt->tm.rows);
}

void rc_api_handle(void *ud, const char *line, size_t len, rc_buf *reply)
{
    rc_api *a = ud;
    json_error_t je;
    char msg[256];
    int kind = RC_API_OP_INVALID, tt = 0;
    uint64_t t0 = rc_now_ns(), cpu0 = thread_cpu_ns();
    recall_times rt = {0};
    atomic_fetch_add(&a->requests, 1);
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!req) {
        snprintf(msg, sizeof msg, "%d:%d: %s", je.line, je.column, je.text);
        reply_error(a, reply, "bad_json", msg);
        goto out_observe;
    }
    json_t *op = json_object_get(req, "op");
    const char *name = json_string_value(op);
    if (!json_is_object(req))
        reply_error(a, reply, "bad_request", "request must be a JSON object");
    else if (!name)
        reply_error(a, reply, "bad_request", "op: required string");
    else if (strcmp(name, "recall") == 0) {
        kind = RC_API_OP_RECALL;
        op_recall(a, req, reply, &tt, t0, &rt);
    } else if (strcmp(name, "similar") == 0) {
        kind = RC_API_OP_SIMILAR;
        op_similar(a, req, reply);
    } else if (strcmp(name, "user") == 0) {
        kind = RC_API_OP_USER;
        op_user(a, req, reply);
    } else if (strcmp(name, "stats") == 0) {
        kind = RC_API_OP_STATS;
        if (check_fields(req, name, op_only_fields, msg, sizeof msg) == 0)
            op_stats(a, reply);
        else
            reply_error(a, reply, "bad_request", msg);
    } else if (strcmp(name, "health") == 0) {
        kind = RC_API_OP_HEALTH;
        if (check_fields(req, name, op_only_fields, msg, sizeof msg) == 0)
            op_health(a, reply);
        else
            reply_error(a, reply, "bad_request", msg);
    } else if (strcmp(name, "reload_model") == 0) {
        kind = RC_API_OP_RELOAD_MODEL;
        op_reload_model(a, req, reply);
    } else if (strcmp(name, "install_model") == 0) {
        kind = RC_API_OP_INSTALL_MODEL;
        op_install_model(a, req, reply);
    } else if (strcmp(name, "retrain_model") == 0) {
        kind = RC_API_OP_RETRAIN_MODEL;
        if (check_fields(req, name, op_only_fields, msg, sizeof msg) == 0)
            op_retrain_model(a, reply);
        else
            reply_error(a, reply, "bad_request", msg);
    } else {
        snprintf(msg, sizeof msg,
                 "op: unknown op \"%.64s\" (recall, similar, user, stats, "
                 "health, reload_model, retrain_model, install_model)",
                 name);
        reply_error(a, reply, "unknown_op", msg);
    }
    json_decref(req);
    if (reply->overflow)
        reply_error(a, reply, "reply_too_large",
                    "reply exceeds socket.max_outbuf: ask for fewer "
                    "users or a smaller k");
out_observe:;
    /* Cumulative buckets by op: the p99 of recall alone is what operators watch. */
    uint64_t end = rc_now_ns(), us = (end - t0) / 1000;
    rc_hist_observe(&a->latency[kind], us);
    if (rt.searched)
        observe_stages(a, &rt, rc_server_queue_wait_ns(), end - t0, thread_cpu_ns() - cpu0);
    if (tt) {
        atomic_fetch_add(&a->tower_requests, 1);
        if (reply->len >= 11 && memcmp(reply->data, "{\"ok\":false", 11) == 0)
            atomic_fetch_add(&a->tower_errors, 1);
        rc_hist_observe(&a->tower_latency, us);
        unsigned long long pos = atomic_fetch_add(&a->tower_pos, 1);
        atomic_store_explicit(&a->tower_recent[pos % 1024],
                              (uint32_t)RC_MIN(us, (uint64_t)UINT32_MAX), memory_order_relaxed);
    }
}

/* Answered on the loop thread: only a short line whose op is "health" (it
 * reads atomics and counters, never waits for a worker or a lock held across
 * work). Everything else, bad JSON included, goes to the workers. */
int rc_api_fast(void *ud, const char *line, size_t len, rc_buf *reply)
{
    if (len > 256 || !memmem(line, len, "health", 6))
        return 0;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    const char *name = json_string_value(json_object_get(req, "op"));
    int mine = name && strcmp(name, "health") == 0;
    json_decref(req);
    if (mine)
        rc_api_handle(ud, line, len, reply);
    return mine;
}
