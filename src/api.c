#include "recalld/api.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"

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
    const rc_config *c = rc_engine_config(a->engine);
    json_t *v = json_object_get(req, "k");
    *k = c->k_default;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > (json_int_t)c->k_max) {
        snprintf(msg, msglen, "k: expected integer 1..%u", c->k_max);
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

static void op_recall(rc_api *a, json_t *req, rc_buf *r)
{
    char user[RC_ID_MAX + 1], city[RC_ATTR_MAX + 1], cbuf[64][RC_ATTR_MAX + 1], msg[160];
    const char *cates[64];
    rc_recall_req q = {0};
    json_t *v;
    if (get_id(req, "user_id", user, sizeof user, msg, sizeof msg) ||
        get_k(a, req, &q.k, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    if ((v = json_object_get(req, "city")) && !json_is_null(v)) {
        if (get_id(req, "city", city, sizeof city, msg, sizeof msg))
            return reply_error(a, r, "bad_request", msg);
        q.city = city;
    }
    if ((v = json_object_get(req, "categories")) && !json_is_null(v)) {
        size_t i;
        json_t *c;
        if (!json_is_array(v) || json_array_size(v) > 64)
            return reply_error(a, r, "bad_request", "categories: expected an array of <= 64 ids");
        json_array_foreach(v, i, c)
        {
            if (json_is_integer(c) && json_integer_value(c) >= 0)
                snprintf(cbuf[i], sizeof cbuf[i], "%" JSON_INTEGER_FORMAT, json_integer_value(c));
            else if (json_is_string(c) && json_string_length(c) <= RC_ATTR_MAX)
                memcpy(cbuf[i], json_string_value(c), json_string_length(c) + 1);
            else
                return reply_error(a, r, "bad_request", "categories: expected string ids");
            cates[i] = cbuf[i];
        }
        q.cates = cates;
        q.ncates = (uint32_t)json_array_size(v);
    }
    if ((v = json_object_get(req, "mode")) && !(json_is_string(v) &&
                                                 strcmp(json_string_value(v), "avg") == 0))
        return reply_error(a, r, "bad_request", "mode: supported modes: \"avg\"");
    q.user = user;
    q.ulen = strlen(user);
    rc_hit *hits = malloc(q.k * sizeof *hits);
    uint32_t n = 0;
    int fallback = 0;
    if (!hits)
        return reply_error(a, r, "internal", "out of memory");
    int rc = rc_engine_recall(a->engine, &q, hits, &n, &fallback);
    if (rc) {
        free(hits);
        return reply_error(a, r, "internal", rc_strerror(rc));
    }
    rc_buf_puts(r, "{\"ok\":true,");
    put_hits(a, r, hits, n);
    if (fallback)
        rc_buf_puts(r, ",\"fallback\":\"popular\"");
    rc_buf_puts(r, "}");
    free(hits);
}

static void op_similar(rc_api *a, json_t *req, rc_buf *r)
{
    char item[RC_ID_MAX + 1], msg[160];
    uint32_t k, n = 0;
    if (get_id(req, "item_id", item, sizeof item, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    json_t *v = json_object_get(req, "k");
    if (!v)
        json_object_set_new(req, "k", json_integer(10));
    if (get_k(a, req, &k, msg, sizeof msg))
        return reply_error(a, r, "bad_request", msg);
    rc_hit *hits = malloc(k * sizeof *hits);
    if (!hits)
        return reply_error(a, r, "internal", "out of memory");
    int rc = rc_engine_similar(a->engine, item, strlen(item), k, hits, &n);
    if (rc == RC_ENOENT) {
        free(hits);
        snprintf(msg, sizeof msg, "item_id %s is not known", item);
        return reply_error(a, r, "unknown_item", msg);
    }
    if (rc) {
        free(hits);
        return reply_error(a, r, "internal", rc_strerror(rc));
    }
    rc_buf_puts(r, "{\"ok\":true,");
    put_hits(a, r, hits, n);
    rc_buf_puts(r, "}");
    free(hits);
}

static void op_user(rc_api *a, json_t *req, rc_buf *r)
{
    char user[RC_ID_MAX + 1], msg[160];
    uint32_t rows[256], n = 0;
    int64_t ts[256];
    const rc_table *t = rc_engine_table(a->engine);
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
    rc_engine_stats_json(a->engine, r);
    rc_buf_printf(r, ",\"server\":{\"requests\":%llu,\"errors\":%llu}",
                  (unsigned long long)atomic_load(&a->requests),
                  (unsigned long long)atomic_load(&a->errors));
    if (a->kafka_stats) {
        rc_buf_puts(r, ",\"kafka\":{");
        a->kafka_stats(a->kafka_arg, r);
        rc_buf_puts(r, "}");
    }
    rc_buf_puts(r, "}");
}

static void op_health(rc_api *a, rc_buf *r)
{
    int assigned = atomic_load(&a->assigned), stopping = atomic_load(&a->stopping);
    if (stopping)
        return reply_error(a, r, "not_ready", "shutting down");
    if (!assigned)
        return reply_error(a, r, "not_ready", "waiting for Kafka partition assignment");
    rc_buf_printf(r, "{\"ok\":true,\"status\":\"ready\",\"items\":%u,\"applied\":%llu}",
                  rc_table_size(rc_engine_table(a->engine)),
                  (unsigned long long)rc_engine_applied(a->engine));
}

void rc_api_handle(void *ud, const char *line, size_t len, rc_buf *reply)
{
    rc_api *a = ud;
    json_error_t je;
    char msg[256];
    atomic_fetch_add(&a->requests, 1);
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!req) {
        snprintf(msg, sizeof msg, "%d:%d: %s", je.line, je.column, je.text);
        return reply_error(a, reply, "bad_json", msg);
    }
    json_t *op = json_object_get(req, "op");
    const char *name = json_string_value(op);
    if (!json_is_object(req))
        reply_error(a, reply, "bad_request", "request must be a JSON object");
    else if (!name)
        reply_error(a, reply, "bad_request", "op: required string");
    else if (strcmp(name, "recall") == 0)
        op_recall(a, req, reply);
    else if (strcmp(name, "similar") == 0)
        op_similar(a, req, reply);
    else if (strcmp(name, "user") == 0)
        op_user(a, req, reply);
    else if (strcmp(name, "stats") == 0)
        op_stats(a, reply);
    else if (strcmp(name, "health") == 0)
        op_health(a, reply);
    else {
        snprintf(msg, sizeof msg, "op: unknown op \"%.64s\" (recall, similar, user, stats, health)",
                 name);
        reply_error(a, reply, "unknown_op", msg);
    }
    json_decref(req);
    if (reply->overflow)
        reply_error(a, reply, "internal", "reply too large");
}
