/* repart — click topic in, by-city topic out (include/recalld/repart.h).
 *
 * Batches handed over by the consumer form a FIFO; each message queued to the
 * producer carries its batch as opaque. Delivery reports are served on the
 * loop thread (a timer polls the producer), so the FIFO, the counters and the
 * consumer calls all stay on that thread. The head batches that are fully
 * delivered have their offsets stored, in order: a stored offset never covers
 * a message that is not yet in the by-city topic. */
#include "recalld/repart.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer_int.h"
#include "recalld/common.h"
#include "recalld/event.h"
#include "recalld/log.h"
#include "recalld/srcpos.h"

#define MOD              "repart"
#define TICK_MS          10
#define DEFAULT_INFLIGHT 200000

struct rbatch {
    struct rbatch *next;
    uint64_t seq;
    uint32_t pending; /* messages not delivered yet */
    int stuck;        /* a message could not be queued again: never stored */
    size_t np;
    int32_t *parts; /* input partitions of the batch */
    int64_t *nexts; /* offset after the batch's last message, per partition */
};

struct rc_repart {
    uv_loop_t *loop;
    rc_repart_opts o;
    char *topic, *out_topic, *group, *brokers;
    rc_consumer *c;
    rd_kafka_t *prod;
    rd_kafka_topic_t *rkt;
    uv_timer_t timer;
    int timer_open, closing, destroyed;
    struct rbatch *head, *tail;
    uint64_t seq;
    int paused;
    int revoke_pending;
    uint64_t revoke_mark; /* batches up to this seq hold the revoked partitions' messages */
    int stuck_logged;
    rc_event ev; /* decoding scratch */
    rc_repart_stats st;
    uv_mutex_t mu; /* guards pub */
    rc_repart_stats pub;
};

/* ---- offsets ---- */

static void publish(rc_repart *r)
{
    rc_consumer_stats cs;
    if (r->c) {
        rc_consumer_stats_get(r->c, &cs);
        r->st.assigned = cs.assigned;
        r->st.lag = cs.lag;
    }
    uv_mutex_lock(&r->mu);
    r->pub = r->st;
    uv_mutex_unlock(&r->mu);
}

/* Stores the offsets of the delivered head batches; completes a deferred
 * revoke once the batches before it are done (or stuck: the next owner then
 * forwards them again). */
static void advance(rc_repart *r)
{
    while (r->head && r->head->pending == 0 && !r->head->stuck) {
        struct rbatch *b = r->head;
        if (r->c && b->np)
            rc_consumer_store(r->c, b->parts, b->nexts, b->np);
        r->st.stored++;
        r->head = b->next;
        if (!r->head)
            r->tail = NULL;
        free(b);
    }
    if (r->head && r->head->stuck && !r->stuck_logged) {
        r->stuck_logged = 1;
        rc_log_error(MOD,
                     "a forwarded event could not be queued again: offsets stop here until a "
                     "restart or rebalance forwards it again",
                     "batch=%llu", (unsigned long long)r->head->seq);
    }
    if (r->revoke_pending && r->c &&
        (!r->head || r->head->seq > r->revoke_mark || r->head->stuck)) {
        r->revoke_pending = 0;
        rc_consumer_release(r->c, NULL, NULL, 0);
    }
    if (r->paused && r->c && r->st.inflight <= r->o.max_inflight / 2) {
        r->paused = 0;
        rc_consumer_resume(r->c);
    }
}

/* ---- producer ---- */

/* src: the message's click-topic position (srcpos.h), NULL for a forward
 * queued again (it may come out of order: the trainers never filter it). */
static int produce(rc_repart *r, const void *key, size_t klen, const void *val, size_t vlen,
                   int64_t ts, const rc_kmsg *src, struct rbatch *b)
{
    rd_kafka_resp_err_t e;
    if (src) {
        unsigned char pos[RC_SRCPOS_LEN];
        rc_srcpos_encode(pos, src->partition, src->offset);
        e = rd_kafka_producev(r->prod, RD_KAFKA_V_RKT(r->rkt), RD_KAFKA_V_KEY(key, klen),
                              RD_KAFKA_V_VALUE((void *)(uintptr_t)val, vlen),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_TIMESTAMP(ts > 0 ? ts : 0),
                              RD_KAFKA_V_HEADER(RC_SRCPOS_HEADER, pos, sizeof pos),
                              RD_KAFKA_V_OPAQUE(b), RD_KAFKA_V_END);
    } else {
        e = rd_kafka_producev(r->prod, RD_KAFKA_V_RKT(r->rkt), RD_KAFKA_V_KEY(key, klen),
                              RD_KAFKA_V_VALUE((void *)(uintptr_t)val, vlen),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_TIMESTAMP(ts > 0 ? ts : 0), RD_KAFKA_V_OPAQUE(b),
                              RD_KAFKA_V_END);
    }
    return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    rc_repart *r = opaque;
    struct rbatch *b = m->_private;
    if (m->err) {
        /* The idempotent producer gave up (message.timeout.ms): queue it again. */
        r->st.retries++;
        rc_log_warn(MOD, "forward failed, queued again", "err=\"%s\"", rd_kafka_err2str(m->err));
        if (produce(r, m->key, m->key_len, m->payload, m->len, 0, NULL, b) == 0)
            return;
        r->st.failed++;
        b->stuck = 1;
    } else {
        r->st.delivered++;
    }
    b->pending--;
    r->st.inflight--;
}

static void on_tick(uv_timer_t *t)
{
    rc_repart *r = t->data;
    if (r->prod)
        rd_kafka_poll(r->prod, 0);
    advance(r);
    publish(r);
}

/* ---- consumer ---- */

static int on_batch(void *ud, const rc_kmsg *m, size_t n)
{
    rc_repart *r = ud;
    if (r->st.inflight > 0 && r->st.inflight + n > r->o.max_inflight) {
        r->paused = 1;
        r->st.paused++;
        return RC_EAGAIN;
    }
    struct rbatch *b = calloc(1, sizeof *b + n * (sizeof(int32_t) + sizeof(int64_t)));
    if (!b) {
        r->paused = 1; /* offered again once something is delivered */
        return RC_EAGAIN;
    }
    b->nexts = (int64_t *)(b + 1);
    b->parts = (int32_t *)(b->nexts + n);
    b->seq = ++r->seq;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < b->np && b->parts[j] != m[i].partition)
            j++;
        if (j == b->np) {
            b->parts[b->np++] = m[i].partition;
            b->nexts[j] = m[i].offset + 1;
        } else if (m[i].offset + 1 > b->nexts[j]) {
            b->nexts[j] = m[i].offset + 1;
        }
        const void *key = m[i].key;
        size_t klen = m[i].key_len;
        if (rc_event_decode(m[i].payload, m[i].len, &r->ev, NULL, 0) == RC_EV_OK) {
            key = r->ev.city;
            klen = r->ev.city_len;
        } else {
            r->st.unkeyed++;
        }
        r->st.consumed++;
        if (produce(r, key, klen, m[i].payload, m[i].len, m[i].timestamp_ms, &m[i], b) != 0) {
            r->st.failed++;
            b->stuck = 1;
            continue;
        }
        r->st.forwarded++;
        r->st.inflight++;
        b->pending++;
    }
    if (r->tail)
        r->tail->next = b;
    else
        r->head = b;
    r->tail = b;
    return 0;
}

static void on_rebalance(void *ud, int assigned, const int32_t *parts, size_t n)
{
    rc_repart *r = ud;
    (void)parts;
    rc_log_info(MOD, assigned ? "click partitions assigned" : "click partitions revoked",
                "count=%zu", n);
    if (!assigned) {
        r->revoke_pending = 1;
        r->revoke_mark = r->seq;
        advance(r);
    }
}

/* ---- start, stop ---- */

static int conf_extra(rd_kafka_conf_t *conf, const char *const *kv, char *errbuf, size_t errlen)
{
    for (; kv && kv[0] && kv[1]; kv += 2) {
        char why[256];
        if (rd_kafka_conf_set(conf, kv[0], kv[1], why, sizeof why) != RD_KAFKA_CONF_OK)
            return rc_err(errbuf, errlen, RC_EINVAL, "kafka.config %s: %s", kv[0], why);
    }
    return 0;
}

static int producer_new(rc_repart *r, char *errbuf, size_t errlen)
{
    char why[512], queue[32];
    int rc;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return rc_err(errbuf, errlen, RC_ENOMEM, "kafka: out of memory");
    snprintf(queue, sizeof queue, "%u", r->o.max_inflight + 2 * (r->o.batch ? r->o.batch : 1024));
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_conf_set_log_cb(conf, rc__consumer_kafka_log);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if ((rc = rc__consumer_conf_set(conf, "bootstrap.servers", r->brokers, errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "client.id", "recalld-repartition", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "enable.idempotence", "true", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "linger.ms", "5", errbuf, errlen)) ||
        (rc = rc__consumer_conf_set(conf, "queue.buffering.max.messages", queue, errbuf, errlen)) ||
        /* the key alone decides the partition, as with Java clients */
        (rc = rc__consumer_conf_set(conf, "partitioner", "murmur2_random", errbuf, errlen)) ||
        (rc = conf_extra(conf, r->o.extra, errbuf, errlen))) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    r->prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!r->prod) {
        rd_kafka_conf_destroy(conf);
        return rc_err(errbuf, errlen, RC_EKAFKA, "kafka: repartition producer: %s", why);
    }
    r->rkt = rd_kafka_topic_new(r->prod, r->out_topic, NULL);
    if (!r->rkt)
        return rc_err(errbuf, errlen, RC_EKAFKA, "kafka: topic %s: %s", r->out_topic,
                      rd_kafka_err2str(rd_kafka_last_error()));
    return 0;
}

/* The by-city topic's partition count, waiting up to topic_wait_ms for it. */
static int lookup_topic(rc_repart *r, char *errbuf, size_t errlen)
{
    long long waited = 0;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        e = rd_kafka_metadata(r->prod, 0, r->rkt, &md, 2000);
        if (!e && md->topic_cnt == 1 && md->topics[0].err == 0 && md->topics[0].partition_cnt > 0) {
            r->st.out_partitions = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
            return 0;
        }
        if (!e && md->topic_cnt == 1)
            e = md->topics[0].err;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (waited >= r->o.topic_wait_ms)
            break;
        uv_sleep(200);
        waited += 200;
    }
    return rc_err(errbuf, errlen, RC_EKAFKA,
                  "kafka: topic %s: %s (the repartition topic must exist: create it with as "
                  "many partitions as trainer shards may ever run, or set "
                  "repartition.enabled false)",
                  r->out_topic, rd_kafka_err2str(e));
}

static void free_repart(rc_repart *r)
{
    while (r->head) {
        struct rbatch *b = r->head;
        r->head = b->next;
        free(b);
    }
    uv_mutex_destroy(&r->mu);
    free(r->topic);
    free(r->out_topic);
    free(r->group);
    free(r->brokers);
    free(r);
}

static void kafka_free(rc_repart *r)
{
    rc_consumer_destroy(r->c);
    r->c = NULL;
    if (r->rkt)
        rd_kafka_topic_destroy(r->rkt);
    r->rkt = NULL;
    if (r->prod)
        rd_kafka_destroy(r->prod);
    r->prod = NULL;
}

int rc_repart_start(uv_loop_t *loop, const rc_repart_opts *o, rc_repart **out, char *errbuf,
                    size_t errlen)
{
    int rc;
    if (!loop || !o || !out || !o->brokers || !o->topic || !o->out_topic || !o->group)
        return rc_err(errbuf, errlen, RC_EINVAL, "repart: brokers, topic, out_topic, group");
    rc_repart *r = calloc(1, sizeof *r);
    if (!r)
        return rc_err(errbuf, errlen, RC_ENOMEM, "repart: out of memory");
    if (uv_mutex_init(&r->mu) != 0) {
        free(r);
        return rc_err(errbuf, errlen, RC_ENOMEM, "repart: mutex");
    }
    r->loop = loop;
    r->o = *o;
    r->st.lag = -1;
    if (!r->o.max_inflight)
        r->o.max_inflight = DEFAULT_INFLIGHT;
    r->topic = strdup(o->topic);
    r->out_topic = strdup(o->out_topic);
    r->group = strdup(o->group);
    r->brokers = strdup(o->brokers);
    r->o.extra = NULL; /* used during start only */
    if (!r->topic || !r->out_topic || !r->group || !r->brokers) {
        free_repart(r);
        return rc_err(errbuf, errlen, RC_ENOMEM, "repart: out of memory");
    }
    r->o.extra = o->extra;
    if ((rc = producer_new(r, errbuf, errlen)) || (rc = lookup_topic(r, errbuf, errlen)))
        goto fail;
    rc_consumer_opts co = {.brokers = r->brokers,
                           .topic = r->topic,
                           .group = r->group,
                           .batch = o->batch,
                           .extra = o->extra,
                           .on_batch = on_batch,
                           .on_rebalance = on_rebalance,
                           .ud = r,
                           .defer_revoke = 1,
                           .on_fatal = o->on_fatal};
    if ((rc = rc_consumer_start(loop, &co, &r->c, errbuf, errlen)))
        goto fail;
    r->o.extra = NULL;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->timer_open = 1;
    uv_timer_start(&r->timer, on_tick, TICK_MS, TICK_MS);
    publish(r);
    rc_log_info(MOD, "repartitioner started", "topic=%s group=%s out=%s partitions=%d", r->topic,
                r->group, r->out_topic, (int)r->st.out_partitions);
    *out = r;
    return 0;
fail:
    kafka_free(r);
    free_repart(r);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    rc_repart *r = h->data;
    r->timer_open = 0;
    if (r->destroyed)
        free_repart(r);
}

void rc_repart_close(rc_repart *r)
{
    if (!r || r->closing)
        return;
    r->closing = 1;
    rc_consumer_close(r->c, NULL, NULL);
}

void rc_repart_destroy(rc_repart *r, int flush_ms)
{
    if (!r || r->destroyed)
        return;
    rc_repart_close(r);
    if (r->prod && rd_kafka_flush(r->prod, flush_ms))
        rc_log_warn(MOD, "forwards still in flight at shutdown: forwarded again after a restart",
                    "pending=%d", rd_kafka_outq_len(r->prod));
    advance(r); /* stores what was delivered; the close commits it */
    publish(r);
    kafka_free(r);
    r->destroyed = 1;
    if (r->timer_open)
        uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    else
        free_repart(r);
}

void rc_repart_stats_get(rc_repart *r, rc_repart_stats *st)
{
    uv_mutex_lock(&r->mu);
    *st = r->pub;
    uv_mutex_unlock(&r->mu);
}

void rc_repart_stats_json(rc_repart *r, rc_buf *out)
{
    rc_repart_stats s;
    rc_repart_stats_get(r, &s);
    rc_buf_puts(out, "\"topic\":");
    rc_buf_json_str(out, r->topic, strlen(r->topic));
    rc_buf_puts(out, ",\"group\":");
    rc_buf_json_str(out, r->group, strlen(r->group));
    rc_buf_puts(out, ",\"out_topic\":");
    rc_buf_json_str(out, r->out_topic, strlen(r->out_topic));
    rc_buf_printf(
        out,
        ",\"out_partitions\":%d,\"assigned\":%d,\"lag\":%lld,\"consumed\":%llu,"
        "\"forwarded\":%llu,\"delivered\":%llu,\"unkeyed\":%llu,\"retries\":%llu,"
        "\"failed\":%llu,\"inflight\":%llu,\"paused\":%llu,\"stored_batches\":%llu",
        (int)s.out_partitions, s.assigned, (long long)s.lag, (unsigned long long)s.consumed,
        (unsigned long long)s.forwarded, (unsigned long long)s.delivered,
        (unsigned long long)s.unkeyed, (unsigned long long)s.retries, (unsigned long long)s.failed,
        (unsigned long long)s.inflight, (unsigned long long)s.paused, (unsigned long long)s.stored);
}

int32_t rc_repart_partition(const char *city, size_t len, int32_t partitions)
{
    if (!len || partitions <= 0)
        return -1;
    /* the partitioner configured on the producer (producer_new); it reads
     * neither the topic nor the opaques */
    return rd_kafka_msg_partitioner_murmur2_random(NULL, city, len, partitions, NULL, NULL);
}
