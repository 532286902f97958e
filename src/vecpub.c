/* vecpub — item vectors to <topic>.vectors (see include/recalld/vecpub.h). */
#include "recalld/vecpub.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer_int.h"
#include "recalld/common.h"
#include "recalld/log.h"
#include "recalld/vec.h"

#define MOD "vecpub"

/* ---- record ---- */

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static int put_floats(rc_buf *out, const float *v, uint32_t dim)
{
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t bits;
        unsigned char b[4];
        memcpy(&bits, &v[i], 4);
        put_u32(b, bits);
        if (rc_buf_append(out, b, 4))
            return RC_ENOMEM;
    }
    return 0;
}

static void get_floats(const unsigned char *p, float *v, uint32_t dim)
{
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t bits = get_u32(p + 4 * i);
        memcpy(&v[i], &bits, 4);
    }
}

/* Layout: magic[4] dim:u16 item_len:u8 city_len:u8 cate_len:u8 flags:u8
 * pad[2] count:u32 version:u64 publish_ms:i64 (32 bytes), then the item id,
 * city, category, dim x float32 input vector (IEEE 754, little-endian) and,
 * with flag RC_VECREC_F_OUT, dim x float32 output vector. */
int rc_vecrec_encode(rc_buf *out, const char *item, size_t item_len, const char *city,
                     size_t city_len, const char *cate, size_t cate_len, uint32_t count,
                     uint64_t version, int64_t publish_ms, const float *vec, const float *outv,
                     uint32_t dim)
{
    unsigned char h[RC_VECREC_HEADER];
    if (!item_len || item_len > 255 || city_len > 255 || cate_len > 255 || !dim || dim > 65535)
        return RC_EINVAL;
    memset(h, 0, sizeof h);
    memcpy(h, RC_VECREC_MAGIC, 4);
    put_u16(h + 4, (uint16_t)dim);
    h[6] = (unsigned char)item_len;
    h[7] = (unsigned char)city_len;
    h[8] = (unsigned char)cate_len;
    h[9] = outv ? RC_VECREC_F_OUT : 0;
    put_u32(h + 12, count);
    put_u64(h + 16, version);
    put_u64(h + 24, (uint64_t)publish_ms);
    if (rc_buf_append(out, h, sizeof h) || rc_buf_append(out, item, item_len) ||
        rc_buf_append(out, city, city_len) || rc_buf_append(out, cate, cate_len) ||
        put_floats(out, vec, dim) || (outv && put_floats(out, outv, dim)))
        return RC_ENOMEM;
    return 0;
}

int rc_vecrec_decode(const void *p, size_t n, rc_vecrec *r, float *vec, float *outv, uint32_t cap)
{
    const unsigned char *b = p;
    if (n < RC_VECREC_HEADER || memcmp(b, RC_VECREC_MAGIC, 4) != 0)
        return RC_EINVAL;
    memset(r, 0, sizeof *r);
    r->dim = (uint32_t)b[4] | (uint32_t)b[5] << 8;
    r->item_len = b[6];
    r->city_len = b[7];
    r->cate_len = b[8];
    r->flags = b[9];
    r->count = get_u32(b + 12);
    r->version = get_u64(b + 16);
    r->publish_ms = (int64_t)get_u64(b + 24);
    size_t names = (size_t)r->item_len + r->city_len + r->cate_len;
    size_t nvec = r->flags & RC_VECREC_F_OUT ? 2 : 1;
    /* unknown flags: a newer writer's record this reader cannot size */
    if (!r->item_len || !r->dim || (r->flags & ~RC_VECREC_F_OUT) ||
        n != RC_VECREC_HEADER + names + nvec * r->dim * 4)
        return RC_EINVAL;
    if (r->dim > cap)
        return RC_E2BIG;
    r->item = (const char *)b + RC_VECREC_HEADER;
    r->city = r->item + r->item_len;
    r->cate = r->city + r->city_len;
    const unsigned char *v = b + RC_VECREC_HEADER + names;
    get_floats(v, vec, r->dim);
    if (outv && nvec == 2)
        get_floats(v + (size_t)r->dim * 4, outv, r->dim);
    return 0;
}

/* ---- publisher ---- */

struct rc_vecpub {
    rc_vecpub_opts o;
    char *topic;
    const rc_table *table;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    pthread_t th;
    int started;
    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, final_ms;
    uint8_t *dirty; /* by row: waiting in q */
    size_t dirty_cap;
    uint32_t *q; /* ring of marked rows, oldest first */
    size_t q_cap, q_head, q_n;
    uint64_t marked, coalesced;
    char last_error[128];
    /* publisher thread (counters read by any thread) */
    uint64_t version;
    double credit;
    _Atomic uint64_t produced, delivered, failed, queue_full, dropped, last_version;
    _Atomic int64_t last_publish_ms;
    rc_buf rec;
    float *vec;
};

/* Under mu. 0, or RC_ENOMEM (the mark is lost: counted in dropped). */
static int mark_locked(rc_vecpub *p, uint32_t row)
{
    if (row >= p->dirty_cap) {
        size_t cap = p->dirty_cap ? p->dirty_cap : 4096;
        while (cap <= row)
            cap *= 2;
        uint8_t *d = realloc(p->dirty, cap);
        if (!d)
            return RC_ENOMEM;
        memset(d + p->dirty_cap, 0, cap - p->dirty_cap);
        p->dirty = d;
        p->dirty_cap = cap;
    }
    p->marked++;
    if (p->dirty[row]) {
        p->coalesced++;
        return 0;
    }
    if (p->q_n == p->q_cap) { /* grow the ring, unwrapping it */
        size_t cap = p->q_cap ? p->q_cap * 2 : 4096;
        uint32_t *q = malloc(cap * sizeof *q);
        if (!q)
            return RC_ENOMEM;
        for (size_t i = 0; i < p->q_n; i++)
            q[i] = p->q[(p->q_head + i) % p->q_cap];
        free(p->q);
        p->q = q;
        p->q_cap = cap;
        p->q_head = 0;
    }
    p->q[(p->q_head + p->q_n) % p->q_cap] = row;
    p->q_n++;
    p->dirty[row] = 1;
    return 0;
}

static void mark_rows(rc_vecpub *p, const uint32_t *rows, uint32_t first, size_t n)
{
    uint64_t lost = 0;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++)
        lost += mark_locked(p, rows ? rows[i] : first + (uint32_t)i) != 0;
    pthread_mutex_unlock(&p->mu);
    if (lost) {
        atomic_fetch_add(&p->dropped, lost);
        rc_log_error(MOD, "out of memory: changed vectors not published", "rows=%llu",
                     (unsigned long long)lost);
    }
}

void rc_vecpub_mark(rc_vecpub *p, const uint32_t *rows, size_t n)
{
    if (p && n)
        mark_rows(p, rows, 0, n);
}

void rc_vecpub_mark_all(rc_vecpub *p, uint32_t n)
{
    if (p && n)
        mark_rows(p, NULL, 0, n);
}

void rc_vecpub_sink(void *ud, const uint32_t *rows, size_t n) { rc_vecpub_mark(ud, rows, n); }

/* librdkafka's thread (inside rd_kafka_poll on the publisher's): a failed
 * record's row is marked again, so its newest vector goes out later. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    rc_vecpub *p = opaque;
    (void)rk;
    if (!m->err) {
        atomic_fetch_add(&p->delivered, 1);
        return;
    }
    uint32_t row = (uint32_t)(uintptr_t)m->_private;
    atomic_fetch_add(&p->failed, 1);
    pthread_mutex_lock(&p->mu);
    snprintf(p->last_error, sizeof p->last_error, "%s", rd_kafka_err2str(m->err));
    int stopping = p->stop;
    if (!stopping)
        mark_locked(p, row);
    pthread_mutex_unlock(&p->mu);
    if (stopping)
        atomic_fetch_add(&p->dropped, 1);
    if (atomic_load(&p->failed) % 1000 == 1)
        rc_log_warn(MOD, "vector record not delivered: the item is published again",
                    "topic=%s err=\"%s\" failed=%llu", p->topic, rd_kafka_err2str(m->err),
                    (unsigned long long)atomic_load(&p->failed));
}

/* Builds and produces the record of row. 0, RC_EAGAIN (queue full: the row
 * must be marked again), RC_EKAFKA / RC_EINVAL (not publishable: counted). */
static int produce_row(rc_vecpub *p, uint32_t row)
{
    const rc_table *t = p->table;
    uint32_t dim = rc_table_dim(t);
    size_t ilen = 0;
    const char *item = rc_table_item_id(t, row, &ilen);
    const char *city = rc_table_city_name(t, rc_table_city(t, row));
    const char *cate = rc_table_cate_name(t, rc_table_cate(t, row));
    int64_t now_ms = rc_wall_ms();
    uint64_t us = (uint64_t)now_ms * 1000u;
    p->version = us > p->version ? us : p->version + 1;
    rc_vec_copy(p->vec, rc_table_in(t, row), dim); /* one read of a moving row (Hogwild) */
    const float *outv = rc_table_out(t, row);
    if (outv)
        rc_vec_copy(p->vec + dim, outv, dim);
    rc_buf_reset(&p->rec);
    int rc = rc_vecrec_encode(&p->rec, item, ilen, city ? city : "", city ? strlen(city) : 0,
                              cate ? cate : "", cate ? strlen(cate) : 0, rc_table_count(t, row),
                              p->version, now_ms, p->vec, outv ? p->vec + dim : NULL, dim);
    if (rc)
        return rc;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_RKT(p->rkt), RD_KAFKA_V_KEY(item, ilen),
        RD_KAFKA_V_VALUE(p->rec.data, p->rec.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)row), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return RC_EAGAIN;
    if (e) {
        pthread_mutex_lock(&p->mu);
        snprintf(p->last_error, sizeof p->last_error, "%s", rd_kafka_err2str(e));
        pthread_mutex_unlock(&p->mu);
        return RC_EKAFKA;
    }
    atomic_fetch_add(&p->produced, 1);
    atomic_store(&p->last_version, p->version);
    atomic_store(&p->last_publish_ms, now_ms);
    return 0;
}

/* Produces up to max records, oldest marks first; returns how many. */
static uint64_t publish_some(rc_vecpub *p, uint64_t max)
{
    uint64_t done = 0;
    while (done < max) {
        uint32_t row;
        pthread_mutex_lock(&p->mu);
        if (!p->q_n) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        row = p->q[p->q_head];
        p->q_head = (p->q_head + 1) % p->q_cap;
        p->q_n--;
        p->dirty[row] = 0; /* cleared before the vector is read: a later change marks again */
        pthread_mutex_unlock(&p->mu);
        int rc = produce_row(p, row);
        if (rc == RC_EAGAIN) {
            atomic_fetch_add(&p->queue_full, 1);
            pthread_mutex_lock(&p->mu);
            mark_locked(p, row);
            p->marked--; /* not a new change */
            pthread_mutex_unlock(&p->mu);
            break;
        }
        if (rc) {
            atomic_fetch_add(&p->failed, 1);
            if (atomic_load(&p->failed) % 1000 == 1)
                rc_log_warn(MOD, "vector record not produced", "row=%u rc=%d", row, rc);
        }
        done++;
    }
    return done;
}

static void *publisher_main(void *arg)
{
    rc_vecpub *p = arg;
    uint64_t last = rc_now_ns();
    pthread_setname_np(pthread_self(), "rc-vecpub");
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        rc_cond_wait_ns(&p->cv, &p->mu, (uint64_t)p->o.interval_ms * 1000000u);
        if (p->stop)
            break;
        pthread_mutex_unlock(&p->mu);
        uint64_t now = rc_now_ns();
        p->credit += (double)p->o.max_rate * (double)(now - last) / 1e9;
        last = now;
        if (p->credit > p->o.max_rate)
            p->credit = p->o.max_rate; /* at most one second's burst */
        p->credit -= (double)publish_some(p, (uint64_t)p->credit);
        rd_kafka_poll(p->rk, 0);
        pthread_mutex_lock(&p->mu);
    }
    int final_ms = p->final_ms;
    pthread_mutex_unlock(&p->mu);
    /* Stop: what is marked goes out now, whatever the rate, for final_ms. */
    uint64_t end = rc_now_ns() + (uint64_t)final_ms * 1000000ull;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        size_t left = p->q_n;
        pthread_mutex_unlock(&p->mu);
        if (!left || rc_now_ns() > end)
            break;
        if (!publish_some(p, 4096))
            rd_kafka_poll(p->rk, 10);
        rd_kafka_poll(p->rk, 0);
    }
    int64_t wait = (int64_t)(end - rc_now_ns()) / 1000000;
    rd_kafka_flush(p->rk, (int)(wait > 1000 ? wait : 1000));
    pthread_mutex_lock(&p->mu);
    p->stop = 2; /* failures from now on are dropped */
    uint64_t left = p->q_n;
    pthread_mutex_unlock(&p->mu);
    left += (uint64_t)rd_kafka_outq_len(p->rk);
    if (left) {
        atomic_fetch_add(&p->dropped, left);
        rc_log_warn(MOD, "vectors not published at stop: replicas keep older versions",
                    "topic=%s rows=%llu", p->topic, (unsigned long long)left);
    }
    return NULL;
}

int rc_vecpub_start(const rc_vecpub_opts *o, rc_vecpub **out, char *errbuf, size_t errlen)
{
    char why[512];
    int rc;
    if (!o || !out || !o->brokers || !o->brokers[0] || !o->topic || !o->topic[0] || !o->table)
        return rc_err(errbuf, errlen, RC_EINVAL, "vecpub: brokers, topic and table required");
    rc_vecpub *p = calloc(1, sizeof *p);
    if (!p)
        return rc_err(errbuf, errlen, RC_ENOMEM, "vecpub: out of memory");
    p->o = *o;
    p->o.max_rate = o->max_rate ? o->max_rate : 20000;
    p->o.interval_ms = o->interval_ms ? o->interval_ms : 100;
    p->o.max_pending = o->max_pending ? o->max_pending : 4194304;
    p->table = o->table;
    p->topic = strdup(o->topic);
    p->vec = malloc(2 * rc_table_dim(o->table) * sizeof *p->vec); /* input, output */
    atomic_store(&p->last_publish_ms, -1);
    pthread_mutex_init(&p->mu, NULL);
    rc_cond_init_mono(&p->cv);
    rc_buf_init(&p->rec, 0);
    if (!p->topic || !p->vec) {
        rc = rc_err(errbuf, errlen, RC_ENOMEM, "vecpub: out of memory");
        goto fail;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char pending[32];
    snprintf(pending, sizeof pending, "%u", p->o.max_pending);
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_log_cb(conf, rc__consumer_kafka_log);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if ((rc = rc__consumer_conf_set(conf, "bootstrap.servers", o->brokers, errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "client.id", "recalld-vectors", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "enable.idempotence", "true", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "linger.ms", "20", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "queue.buffering.max.messages", pending, errbuf,
                                    errlen)) ||
        (rc = rc__consumer_conf_set(conf, "partitioner", "murmur2_random", errbuf, errlen))) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    for (const char *const *kv = o->extra; kv && kv[0] && kv[1]; kv += 2) {
        /* security settings and the like; consumer-only keys are refused here */
        if (rd_kafka_conf_set(conf, kv[0], kv[1], why, sizeof why) != RD_KAFKA_CONF_OK)
            rc_log_debug(MOD, "librdkafka property not used by the vector producer",
                         "key=%s why=\"%s\"", kv[0], why);
    }
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        rc = rc_err(errbuf, errlen, RC_EKAFKA, "kafka: vector producer: %s", why);
        goto fail;
    }
    p->rkt = rd_kafka_topic_new(p->rk, p->topic, NULL);
    if (!p->rkt) {
        rc = rc_err(errbuf, errlen, RC_EKAFKA, "kafka: vector topic %s", p->topic);
        goto fail;
    }
    if (pthread_create(&p->th, NULL, publisher_main, p) != 0) {
        rc = rc_err(errbuf, errlen, RC_ENOMEM, "vecpub: thread");
        goto fail;
    }
    p->started = 1;
    rc_log_info(MOD, "publishing vectors", "topic=%s max_rate=%u interval_ms=%u", p->topic,
                p->o.max_rate, p->o.interval_ms);
    *out = p;
    return 0;
fail:
    p->final_ms = 0;
    rc_vecpub_stop(p, 0);
    return rc;
}

void rc_vecpub_stop(rc_vecpub *p, int timeout_ms)
{
    if (!p)
        return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        p->final_ms = timeout_ms;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->th, NULL);
    }
    if (p->rkt)
        rd_kafka_topic_destroy(p->rkt);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    rc_buf_free(&p->rec);
    free(p->dirty);
    free(p->q);
    free(p->vec);
    free(p->topic);
    free(p);
}

void rc_vecpub_stats_get(rc_vecpub *p, rc_vecpub_stats *st)
{
    memset(st, 0, sizeof *st);
    st->last_publish_ms = -1;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    st->marked = p->marked;
    st->coalesced = p->coalesced;
    st->pending = p->q_n;
    snprintf(st->last_error, sizeof st->last_error, "%s", p->last_error);
    pthread_mutex_unlock(&p->mu);
    st->produced = atomic_load(&p->produced);
    st->delivered = atomic_load(&p->delivered);
    st->failed = atomic_load(&p->failed);
    st->queue_full = atomic_load(&p->queue_full);
    st->dropped = atomic_load(&p->dropped);
    st->last_version = atomic_load(&p->last_version);
    st->last_publish_ms = atomic_load(&p->last_publish_ms);
    st->max_rate = p->o.max_rate;
    uint64_t acked = st->delivered + st->failed;
    st->inflight = st->produced > acked ? st->produced - acked : 0;
}

void rc_vecpub_stats_json(rc_vecpub *p, rc_buf *o)
{
    rc_vecpub_stats s;
    rc_vecpub_stats_get(p, &s);
    rc_buf_puts(o, "\"topic\":");
    rc_buf_json_str(o, p ? p->topic : "", p ? strlen(p->topic) : 0);
    rc_buf_printf(o,
                  ",\"marked\":%llu,\"coalesced\":%llu,\"produced\":%llu,\"published\":%llu,"
                  "\"failed\":%llu,\"queue_full\":%llu,\"dropped\":%llu,\"pending\":%llu,"
                  "\"inflight\":%llu,\"last_version\":%llu,\"last_publish_ms\":%lld,"
                  "\"max_rate\":%u,\"last_error\":",
                  (unsigned long long)s.marked, (unsigned long long)s.coalesced,
                  (unsigned long long)s.produced, (unsigned long long)s.delivered,
                  (unsigned long long)s.failed, (unsigned long long)s.queue_full,
                  (unsigned long long)s.dropped, (unsigned long long)s.pending,
                  (unsigned long long)s.inflight, (unsigned long long)s.last_version,
                  (long long)s.last_publish_ms, s.max_rate);
    rc_buf_json_str(o, s.last_error, strlen(s.last_error));
}
