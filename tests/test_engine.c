/* engine: the public engine API (include/recalld/engine.h) driven directly,
 * without Kafka or the socket: refusal reasons and counters, batches and the
 * done callback (refused events with their position), backpressure and the
 * loop-thread hand-back of a threaded engine, the recall / similar contracts,
 * and checkpoints taken through the engine and restored by a new one.
 *
 * What other files already hold is not repeated here: session policies and
 * the event clock (test_promises.c), the checkpoint file format
 * (test_checkpoint.c), two-tower serving (test_tower_serve.c). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/table.h"
#include "test.h"
#include "tower_stream.h"

#define PATIENCE_MS 120000 /* scaled by the e2e waits (RC_TEST_TIME_SCALE: longer under TSan) */
#define WAIT_MS     ((int)e2e_scaled_ms(PATIENCE_MS))
#define T0          1700000000000LL

/* ---- helpers ------------------------------------------------------------- */

static void small_config(rc_config *c)
{
    rc_config_defaults(c);
    c->dim = 16;
    c->seed = 11;
}

/* small_config with a new data_dir (dir: room for 64); batches of `batch`. */
static void dir_config(rc_config *c, char *dir, uint32_t batch)
{
    tower_tmp_dir(dir, 64, "rc-engine-");
    small_config(c);
    c->kafka_batch = batch;
    snprintf(c->data_dir, sizeof c->data_dir, "%s", dir);
}

/* Threads of this process whose nice value is nice (/proc/self/task). */
static int tasks_at_nice(int nice)
{
    char path[96], buf[1024];
    int n = 0;
    uv_fs_t req;
    uv_dirent_t d;
    if (uv_fs_scandir(NULL, &req, "/proc/self/task", 0, NULL) < 0)
        RC__FAIL("scandir /proc/self/task");
    while (uv_fs_scandir_next(&req, &d) != UV_EOF) {
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", d.name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* exited meanwhile */
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        /* after "(comm)": state is field 3, nice field 19 */
        char *p = strrchr(buf, ')');
        int field = 2, v = 0;
        for (; p && *p && field < 19; p++)
            if (*p == ' ')
                field++;
        if (p && sscanf(p, "%d", &v) == 1 && v == nice)
            n++;
    }
    uv_fs_req_cleanup(&req);
    return n;
}

/* CONFIG.md pipeline.background_nice: the decoder, trainer and checkpoint
 * writer add it to their nice value (request workers keep theirs). */
TEST(engine_background_threads_are_niced)
{
    char dir[64];
    rc_config c;
    dir_config(&c, dir, 8);
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    ASSERT_EQ(errno, 0);
    if (base > 19 - 7) {
        fprintf(stderr, "(skipped: already at nice %d)\n", base);
        return;
    }
    c.background_nice = 7;
    ASSERT_EQ(tasks_at_nice(base + 7), 0);
    uv_loop_t loop;
    rc_engine *e = e2e_engine_threaded(&c, &loop, NULL, NULL);
    long long t0 = e2e_now_ms();
    while (tasks_at_nice(base + 7) < 3) { /* decoder, trainer, checkpoint writer */
        if (e2e_now_ms() - t0 > WAIT_MS)
            RC__FAIL("after %d ms: %d threads at nice %d", WAIT_MS, tasks_at_nice(base + 7),
                     base + 7);
        usleep(2000);
    }
    ASSERT_EQ(getpriority(PRIO_PROCESS, 0), base); /* this thread (and the process) keep theirs */
    e2e_engine_threaded_close(e, &loop);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* A click as the stream carries it. */
static int click_line(char *buf, size_t cap, int user, int item, int city, int64_t ts)
{
    return snprintf(buf, cap,
                    "{\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"city_id\":\"c%d\","
                    "\"cate_id\":\"k%d\",\"ts\":%lld}",
                    user, item, city, item % 2, (long long)ts);
}

/* What the done callback saw: refused events copied (their memory is only
 * borrowed during the call), batches reported, the thread it ran on. */
#define SEEN_MAX 32
typedef struct seen {
    uint32_t n, batches;
    char *payload[SEEN_MAX];
    size_t len[SEEN_MAX];
    int32_t part[SEEN_MAX];
    int64_t off[SEEN_MAX];
    enum rc_event_reason reason[SEEN_MAX];
    char error[SEEN_MAX][128];
    pthread_t thread;
    int other_thread; /* a callback ran on another thread than `thread` */
    /* checkpoint results (threaded engine) */
    uint32_t ckpts;
    rc_engine_checkpoint_result ck;
    int32_t ck_parts[8];
    int64_t ck_offs[8];
} seen;

static void on_done(void *ud, const rc_invalid *inv, size_t n)
{
    seen *s = ud;
    if (!pthread_equal(pthread_self(), s->thread))
        s->other_thread = 1;
    s->batches++;
    for (size_t i = 0; i < n && s->n < SEEN_MAX; i++, s->n++) {
        s->payload[s->n] = malloc(inv[i].len + 1);
        memcpy(s->payload[s->n], inv[i].payload, inv[i].len);
        s->payload[s->n][inv[i].len] = '\0';
        s->len[s->n] = inv[i].len;
        s->part[s->n] = inv[i].partition;
        s->off[s->n] = inv[i].offset;
        s->reason[s->n] = inv[i].reason;
        snprintf(s->error[s->n], sizeof s->error[s->n], "%s", inv[i].error);
    }
}

static void on_checkpoint(void *ud, const rc_engine_checkpoint_result *r)
{
    seen *s = ud;
    if (!pthread_equal(pthread_self(), s->thread))
        s->other_thread = 1;
    s->ckpts++;
    s->ck = *r;
    for (size_t i = 0; i < r->n && i < 8; i++) {
        s->ck_parts[i] = r->parts[i];
        s->ck_offs[i] = r->offsets[i];
    }
}

static void seen_free(seen *s)
{
    for (uint32_t i = 0; i < s->n; i++)
        free(s->payload[i]);
}

static void add(rc_batch *b, const char *line, int32_t part, int64_t off)
{
    ASSERT_EQ(rc_engine_batch_add(b, line, strlen(line), part, off), 0);
}

/* The next offset the engine reports for partition p among n, -1 absent. */
static int64_t offset_of(const int32_t *parts, const int64_t *offs, size_t n, int32_t p)
{
    for (size_t i = 0; i < n; i++)
        if (parts[i] == p)
            return offs[i];
    return -1;
}

/* ---- refusals and counters ------------------------------------------------ */

/* DESIGN.md "Event schema" and "Report": every refusal reason comes back from
 * rc_engine_apply_line and is counted under its own name; other event types
 * are `ignored`, valid clicks beyond model.max_items `rejected_capacity`,
 * neither of them `applied`; consumed and lost are the consumer's to count. */
TEST(engine_refusal_reasons_and_counters)
{
    rc_config c;
    small_config(&c);
    c.max_items = 3;
    c.max_past_ms = 86400000; /* off by default */
    rc_engine *e = e2e_engine_offline(&c);
    static char big[RC_EVENT_MAX + 64];
    int n = snprintf(big, sizeof big,
                     "{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":\"c\","
                     "\"cate_id\":\"k\",\"ts\":1,\"pad\":\"");
    memset(big + n, 'x', RC_EVENT_MAX - n);
    memcpy(big + RC_EVENT_MAX, "\"}", 3); /* RC_EVENT_MAX + 2 bytes of valid JSON */
    char city65[192];
    snprintf(city65, sizeof city65,
             "{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":\"%065d\","
             "\"cate_id\":\"k\",\"ts\":1}",
             7);
    const struct {
        const char *line;
        enum rc_event_reason want;
    } cases[] = {
        {big, RC_EV_TOO_LARGE},
        {"{\"user_id\":", RC_EV_BAD_JSON},
        {"[1]", RC_EV_NOT_OBJECT},
        {"{\"user_id\":\"u\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":1}", RC_EV_MISSING_FIELD},
        {"{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":\"1\"}",
         RC_EV_WRONG_TYPE},
        {"{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":-1}",
         RC_EV_BAD_VALUE},
        {city65, RC_EV_OVERSIZED},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(cases); i++)
        ASSERT_EQ(rc_engine_apply_line(e, cases[i].line, strlen(cases[i].line)), cases[i].want);
    char line[256];
    /* another event type: valid, not trained */
    const char *view = "{\"user_id\":\"u\",\"item_id\":\"iv\",\"city_id\":\"c\",\"cate_id\":\"k\","
                       "\"ts\":5,\"event\":\"view\"}";
    ASSERT_EQ(rc_engine_apply_line(e, view, strlen(view)), RC_EV_OK);
    for (int i = 0; i < 5; i++) { /* 3 items fit, 2 are beyond max_items */
        n = click_line(line, sizeof line, 1, i, 0, T0 + i * 1000);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
    }
    n = click_line(line, sizeof line, 2, 0, 0, T0 + 9000); /* a known item: applied */
    ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
    /* the event-time window around the watermark (T0 + 9 s now): a known item
     * at the end of time, and one more than events.max_past_ms before */
    n = click_line(line, sizeof line, 3, 0, 0, INT64_MAX);
    ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_FUTURE_TS);
    n = click_line(line, sizeof line, 3, 0, 0, T0 + 9000 - c.max_past_ms - 1);
    ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_PAST_TS);

    rc_engine_counters k;
    rc_engine_counters_get(e, &k);
    for (int r = 1; r < RC_EV_REASON_COUNT; r++)
        if (k.invalid[r] != 1)
            RC__FAIL("invalid[%s] = %llu, want 1", rc_event_reason_name((enum rc_event_reason)r),
                     (unsigned long long)k.invalid[r]);
    ASSERT_EQ(k.ignored, 1);
    ASSERT_EQ(k.applied, 4);
    ASSERT_EQ(k.rejected_capacity, 2);
    ASSERT_EQ(k.new_items, 3);
    ASSERT_EQ(k.consumed, 0); /* the consumer counts what it hands over */
    ASSERT_EQ(rc_table_size(rc_engine_table(e)), 3);
    rc_engine_count_consumed(e, 15);
    rc_engine_count_lost(e, 4);
    rc_engine_count_invalid(e, RC_EV_BAD_JSON, 2);
    rc_engine_counters_get(e, &k);
    ASSERT_EQ(k.consumed, 15);
    ASSERT_EQ(k.lost, 4);
    ASSERT_EQ(k.invalid[RC_EV_BAD_JSON], 3);
    ASSERT_EQ(rc_engine_applied(e), 4);

    json_t *st = e2e_engine_stats(e);             /* the same figures in the stats object */
    ASSERT_EQ(e2e_int(st, "events.invalid"), 11); /* 9 reasons once, bad_json twice more */
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.future_ts"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.past_ts"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.too_large"), 1);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.bad_json"), 3);
    ASSERT_EQ(e2e_int(st, "events.invalid_by_reason.oversized"), 1);
    ASSERT_EQ(e2e_int(st, "events.ignored"), 1);
    ASSERT_EQ(e2e_int(st, "events.rejected_capacity"), 2);
    ASSERT_EQ(e2e_int(st, "events.applied"), 4);
    ASSERT_EQ(e2e_int(st, "events.consumed"), 15);
    ASSERT_EQ(e2e_int(st, "items"), 3);
    json_decref(st);
    rc_engine_destroy(e);
}

/* engine.h: a batch holds kafka.batch events (one more is RC_E2BIG); after it
 * is applied the done callback gets exactly the refused events, each with its
 * raw bytes, partition, offset, reason and a text naming the field. A message
 * over the limit is kept as a prefix of RC_EVENT_MAX + 1 bytes. */
/* pipeline.trim_interval_ms: the trainer's maintenance trims malloc's arenas
 * at that interval (memory.trims), and never when it is 0. */
TEST(engine_trims_malloc_at_its_interval)
{
    for (int on = 0; on < 2; on++) {
        rc_config c;
        small_config(&c);
        c.trim_interval_ms = on ? 1 : 0;
        rc_engine *e = e2e_engine_offline(&c);
        char line[256];
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < 20; i++) {
                int n = click_line(line, sizeof line, i % 4, i, 0, T0 + round * 100000 + i * 1000);
                ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
            }
            usleep(3000); /* past the 1 ms interval */
            rc_engine_flush_index(e);
        }
        json_t *st = e2e_engine_stats(e);
        long long trims = e2e_int(st, "memory.trims");
        json_decref(st);
        if (on)
            ASSERT_GE(trims, 3);
        else
            ASSERT_EQ(trims, 0);
        rc_engine_destroy(e);
    }
}

TEST(engine_batch_reports_refused_events_with_position)
{
    rc_config c;
    small_config(&c);
    c.kafka_batch = 4;
    seen s = {.thread = pthread_self()};
    rc_engine *e = NULL;
    char err[256], l0[256], l3[256];
    ASSERT_EQ(rc_engine_create(&c, NULL, on_done, &s, &e, err, sizeof err), 0);
    rc_batch *b = rc_engine_batch_get(e);
    ASSERT(b != NULL);
    click_line(l0, sizeof l0, 1, 1, 0, T0);
    click_line(l3, sizeof l3, 1, 2, 0, T0 + 1000);
    const char *bad = "{not json";
    const char *noitem = "{\"user_id\":\"u1\",\"city_id\":\"c0\",\"cate_id\":\"k0\",\"ts\":5}";
    add(b, l0, 0, 10);
    add(b, bad, 1, 20);
    add(b, noitem, 0, 11);
    add(b, l3, 1, 21);
    ASSERT_EQ(rc_engine_batch_add(b, l0, strlen(l0), 0, 12), RC_E2BIG);
    ASSERT_EQ(rc_engine_batch_count(b), 4);
    rc_engine_submit(e, b);
    rc_engine_sync(e);
    ASSERT_EQ(s.batches, 1);
    ASSERT_EQ(s.n, 2);
    ASSERT_STREQ(s.payload[0], bad);
    ASSERT_EQ(s.part[0], 1);
    ASSERT_EQ(s.off[0], 20);
    ASSERT_EQ(s.reason[0], RC_EV_BAD_JSON);
    ASSERT_STREQ(s.payload[1], noitem);
    ASSERT_EQ(s.part[1], 0);
    ASSERT_EQ(s.off[1], 11);
    ASSERT_EQ(s.reason[1], RC_EV_MISSING_FIELD);
    if (!strstr(s.error[1], "item_id"))
        RC__FAIL("error text \"%s\" does not name item_id", s.error[1]);
    ASSERT_EQ(rc_engine_applied(e), 2);

    static char big[RC_EVENT_MAX + 5000];
    memset(big, ' ', sizeof big);
    b = rc_engine_batch_get(e); /* the batch came back: one is free again */
    ASSERT(b != NULL);
    ASSERT_EQ(rc_engine_batch_add(b, big, sizeof big, 3, 99), 0);
    rc_engine_submit(e, b);
    rc_engine_sync(e);
    ASSERT_EQ(s.batches, 2);
    ASSERT_EQ(s.n, 3);
    ASSERT_EQ(s.reason[2], RC_EV_TOO_LARGE);
    ASSERT_EQ(s.len[2], RC_EVENT_MAX + 1);
    ASSERT_EQ(s.part[2], 3);
    ASSERT_EQ(s.off[2], 99);
    ASSERT_EQ(s.other_thread, 0);
    rc_engine_destroy(e);
    seen_free(&s);
}

/* stats.memory.snapshot_bytes: what the checkpoint's copy holds now. */
static long long snapshot_bytes(rc_engine *e)
{
    json_t *st = e2e_engine_stats(e);
    long long n = e2e_int(st, "memory.snapshot_bytes");
    json_decref(st);
    ASSERT_GE(n, 0);
    return n;
}

/* Loop conditions of the threaded tests: s->batches and s->ckpts reached. */
typedef struct until_seen {
    const seen *s;
    unsigned batches, ckpts;
} until_seen;

static int seen_reached(void *ud)
{
    const until_seen *u = ud;
    return u->s->batches >= u->batches && u->s->ckpts >= u->ckpts;
}

/* engine.h pipeline: with pipeline.queue_batches batches in flight
 * rc_engine_batch_get returns NULL (backpressure); finished batches come back
 * through the loop (done callback on the loop thread) and can be taken again.
 * A checkpoint requested with everything = 1 covers every batch submitted
 * before it and reports the next offset of each partition (refused events
 * included: they are processed); the replays after its take change the
 * table, so the next one is written; one asked for with nothing applied or
 * replayed since is `unchanged` and not rewritten. */
TEST(engine_threaded_backpressure_and_checkpoint_on_loop)
{
    char dir[64], line[256];
    rc_config c;
    dir_config(&c, dir, 8);
    c.queue_batches = 2;
    uv_loop_t loop;
    seen s = {.thread = pthread_self()};
    rc_engine *e = e2e_engine_threaded(&c, &loop, on_done, &s);
    rc_engine_set_checkpoint_cb(e, on_checkpoint, &s);
    rc_batch *b1 = rc_engine_batch_get(e), *b2 = rc_engine_batch_get(e);
    ASSERT(b1 != NULL && b2 != NULL);
    ASSERT(rc_engine_batch_get(e) == NULL); /* both in our hands */
    for (int i = 0; i < 4; i++) {
        click_line(line, sizeof line, i % 2, i, 0, T0 + i * 1000);
        add(b1, line, 0, 100 + i);
    }
    for (int i = 0; i < 2; i++) {
        click_line(line, sizeof line, 3, 10 + i, 1, T0 + i * 1000);
        add(b2, line, 1, 7 + i);
    }
    add(b2, "[]", 1, 9);
    rc_engine_submit(e, b1);
    rc_engine_submit(e, b2);
    uint64_t ticket = 0;
    ASSERT_EQ(rc_engine_checkpoint(e, 1, &ticket), 0);
    ASSERT_EQ(ticket, 2);
    e2e_loop_until(&loop, seen_reached, &(until_seen){&s, 2, 1}, PATIENCE_MS,
                   "2 batches done and a checkpoint");
    ASSERT_EQ(s.other_thread, 0);
    ASSERT_EQ(s.n, 1);
    ASSERT_EQ(s.reason[0], RC_EV_NOT_OBJECT);
    ASSERT_EQ(s.off[0], 9);
    ASSERT(rc_engine_batch_get(e) != NULL); /* recycled */
    ASSERT_EQ(s.ck.rc, 0);
    ASSERT_GE(s.ck.covers, ticket);
    ASSERT_EQ(s.ck.applied, 6);
    ASSERT_EQ(s.ck.reserved, 1); /* batches trained since (none durable): copy reserved */
    ASSERT_EQ(s.ck.n, 2);
    ASSERT_EQ(offset_of(s.ck_parts, s.ck_offs, 2, 0), 104);
    ASSERT_EQ(offset_of(s.ck_parts, s.ck_offs, 2, 1), 10);
    /* The table's copy is released once written: only the staging buffer. */
    ASSERT_EQ(snapshot_bytes(e), 1 << 20);
    uint64_t seq = s.ck.seq, replayed_at_take = s.ck.replayed;
    /* The replays owed to those clicks train after the batches, mostly after
     * the take too (the trainer may also get to them first, while the writer
     * thread reserves the copy: then the take holds them all). */
    long long done = 0;
    for (long long t0 = e2e_now_ms();; usleep(10000)) {
        json_t *st = e2e_engine_stats(e);
        long long pending = e2e_int(st, "training.replay.pending");
        done = e2e_int(st, "training.replay.replayed");
        json_decref(st);
        if (pending == 0 && done > 0)
            break;
        if (e2e_now_ms() - t0 > e2e_scaled_ms(PATIENCE_MS))
            RC__FAIL("replays: %lld pending, %lld done", pending, done);
    }
    ASSERT_LE(replayed_at_take, (uint64_t)done);
    ASSERT_EQ(rc_engine_checkpoint(e, 0, NULL), 0);
    e2e_loop_until(&loop, seen_reached, &(until_seen){&s, 0, 2}, PATIENCE_MS, "second checkpoint");
    ASSERT_EQ(s.ck.rc, 0);
    ASSERT_EQ(s.ck.replayed, (uint64_t)done);
    if (replayed_at_take < (uint64_t)done) {
        /* replays changed the table outside a batch: this one holds them */
        ASSERT_EQ(s.ck.unchanged, 0);
        ASSERT_GT(s.ck.seq, seq);
    } else {
        ASSERT_EQ(s.ck.unchanged, 1); /* the first take held every replay */
        ASSERT_EQ(s.ck.seq, seq);
    }
    seq = s.ck.seq;
    ASSERT_EQ(rc_engine_checkpoint(e, 0, NULL), 0); /* nothing new: not rewritten */
    e2e_loop_until(&loop, seen_reached, &(until_seen){&s, 0, 3}, PATIENCE_MS, "third checkpoint");
    ASSERT_EQ(s.ck.rc, 0);
    ASSERT_EQ(s.ck.unchanged, 1);
    ASSERT_EQ(s.ck.reserved, 0); /* no table's worth of pages faulted in for nothing */
    ASSERT_EQ(s.ck.bytes, 0);
    ASSERT_EQ(s.ck.seq, seq);
    e2e_engine_threaded_close(e, &loop);
    seen_free(&s);

    /* A new engine on the directory starts from there. */
    e = e2e_engine_offline(&c);
    int32_t parts[4];
    int64_t offs[4];
    ASSERT_EQ(rc_engine_restored_offsets(e, parts, offs, 4), 2);
    ASSERT_EQ(offset_of(parts, offs, 2, 0), 104);
    ASSERT_EQ(offset_of(parts, offs, 2, 1), 10);
    ASSERT_EQ(rc_engine_applied(e), 6);
    ASSERT_EQ(rc_table_size(rc_engine_table(e)), 6);
    rc_engine_destroy(e);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* ---- queries ----------------------------------------------------------------- */

/* 40 items over two cities (even items c0, odd c1; category = item % 2),
 * item i clicked 1 + i % 5 times by users w0..w9; user u clicked i0, i2, i4. */
static rc_engine *query_engine(rc_config *c)
{
    rc_engine *e = e2e_engine_offline(c);
    char line[256];
    int64_t ts = T0;
    for (int i = 0; i < 40; i++)
        for (int r = 0; r <= i % 5; r++) {
            int n = click_line(line, sizeof line, 100 + (i + r) % 10, i, i % 2, ts += 1000);
            ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
        }
    for (int i = 0; i <= 4; i += 2) {
        int n = click_line(line, sizeof line, 7, i, 0, ts += 1000);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
    }
    rc_engine_sync(e);
    return e;
}

/* engine.h rc_engine_recall / rc_engine_similar / rc_engine_user_clicks:
 * k out of 1..recall.k_max is RC_EINVAL (and rc_engine_reload moves the
 * limit); an unknown user gets the popular items, most clicked first, scored
 * by their count; a known user never gets an item it clicked; a city or
 * category filter holds; similar leaves the item out and refuses an unknown
 * one. */
TEST(engine_recall_and_similar_contracts)
{
    rc_config c;
    small_config(&c);
    rc_engine *e = query_engine(&c);
    const rc_table *t = rc_engine_table(e);
    rc_hit hits[64];
    uint32_t n = 0;
    int fb = -1;
    rc_recall_req q = {.user = "u7", .ulen = 2, .k = 0};
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), RC_EINVAL);
    q.k = c.k_max + 1;
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), RC_EINVAL);

    /* unknown user: popular, by count */
    rc_recall_req pq = {.user = "nobody", .ulen = 6, .k = 12};
    ASSERT_EQ(rc_engine_recall(e, &pq, hits, &n, &fb), 0);
    ASSERT_EQ(fb, 1);
    ASSERT_EQ(n, 12);
    for (uint32_t i = 0; i < n; i++) {
        ASSERT_NEAR(hits[i].score, (double)rc_table_count(t, hits[i].row), 0);
        if (i)
            ASSERT_GE(hits[i - 1].score, hits[i].score);
    }
    ASSERT_STREQ(e2e_engine_item(e, hits[0].row), "i4"); /* 5 clicks (i % 5 == 4) and u7's */
    ASSERT_NEAR(hits[0].score, 6, 0);

    /* known user: none of i0, i2, i4; all in its main city c0 (recall.scope) */
    q.k = 10;
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), 0);
    ASSERT_EQ(fb, 0);
    ASSERT_EQ(n, 10);
    for (uint32_t i = 0; i < n; i++) {
        const char *id = e2e_engine_item(e, hits[i].row);
        ASSERT(strcmp(id, "i0") && strcmp(id, "i2") && strcmp(id, "i4"));
        ASSERT_STREQ(rc_table_city_name(t, rc_table_city(t, hits[i].row)), "c0");
    }
    /* the answer leaves out every recent click, not only the query's window:
     * with recall.window 1 the query is u7's newest click alone, and i0, i2,
     * i4 are still never recalled */
    {
        rc_config c1;
        small_config(&c1);
        c1.recall_window = 1;
        rc_engine *e1 = query_engine(&c1);
        rc_recall_req q1 = {.user = "u7", .ulen = 2, .k = 40, .global = 1};
        ASSERT_EQ(rc_engine_recall(e1, &q1, hits, &n, &fb), 0);
        ASSERT_EQ(fb, 0);
        ASSERT_EQ(n, 37); /* all 40 items but u7's three */
        for (uint32_t i = 0; i < n; i++) {
            const char *id = e2e_engine_item(e1, hits[i].row);
            ASSERT(strcmp(id, "i0") && strcmp(id, "i2") && strcmp(id, "i4"));
        }
        rc_engine_destroy(e1);
    }
    /* filters: city c1 only; category k1 with the whole of c0 gives nothing
     * (even items are k0); an unknown city gives nothing */
    q.city = "c1";
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), 0);
    ASSERT_EQ(n, 10);
    for (uint32_t i = 0; i < n; i++)
        ASSERT_STREQ(rc_table_city_name(t, rc_table_city(t, hits[i].row)), "c1");
    const char *k1[] = {"k1"};
    q.city = "c0";
    q.cates = k1;
    q.ncates = 1;
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), 0);
    ASSERT_EQ(n, 0);
    q.city = "nowhere";
    q.cates = NULL;
    q.ncates = 0;
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), 0);
    ASSERT_EQ(n, 0);

    /* similar */
    ASSERT_EQ(rc_engine_similar(e, "i9999", 5, 5, hits, &n), RC_ENOENT);
    ASSERT_EQ(rc_engine_similar(e, "i3", 2, 0, hits, &n), RC_EINVAL);
    ASSERT_EQ(rc_engine_similar(e, "i3", 2, 7, hits, &n), 0);
    ASSERT_EQ(n, 7);
    for (uint32_t i = 0; i < n; i++)
        ASSERT(strcmp(e2e_engine_item(e, hits[i].row), "i3") != 0);

    /* user clicks, oldest first */
    uint32_t rows[8];
    int64_t ts[8];
    ASSERT_EQ(rc_engine_user_clicks(e, "u7", 2, rows, ts, 8, &n), 0);
    ASSERT_EQ(n, 3);
    ASSERT_STREQ(e2e_engine_item(e, rows[0]), "i0");
    ASSERT_STREQ(e2e_engine_item(e, rows[2]), "i4");
    ASSERT_LT(ts[0], ts[2]);
    ASSERT(rc_engine_user_clicks(e, "nobody", 6, rows, ts, 8, &n) != 0);

    /* SIGHUP's path: k limits move */
    rc_config c2 = c;
    c2.k_max = 5;
    c2.k_default = 3;
    rc_engine_reload(e, &c2);
    uint32_t kd, km;
    rc_engine_k_limits(e, &kd, &km);
    ASSERT_EQ(kd, 3);
    ASSERT_EQ(km, 5);
    q.city = NULL;
    q.k = 6;
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), RC_EINVAL);
    q.k = 5;
    ASSERT_EQ(rc_engine_recall(e, &q, hits, &n, &fb), 0);
    ASSERT_EQ(n, 5);
    ASSERT_EQ(rc_engine_similar(e, "i3", 2, 6, hits, &n), RC_EINVAL);
    rc_engine_destroy(e);
}

/* ---- checkpoints, offline ---------------------------------------------------- */

typedef struct table_copy {
    uint32_t rows, dim;
    char (*id)[16];
    float *in, *out;
    uint32_t *count;
} table_copy;

static void table_copy_take(const rc_table *t, table_copy *s)
{
    s->rows = rc_table_size(t);
    s->dim = rc_table_dim(t);
    s->id = calloc(s->rows, sizeof *s->id);
    s->in = malloc((size_t)s->rows * s->dim * sizeof(float));
    s->out = malloc((size_t)s->rows * s->dim * sizeof(float));
    s->count = malloc(s->rows * sizeof(uint32_t));
    for (uint32_t r = 0; r < s->rows; r++) {
        size_t len;
        const char *id = rc_table_item_id(t, r, &len);
        snprintf(s->id[r], sizeof s->id[r], "%.*s", (int)len, id);
        memcpy(s->in + (size_t)r * s->dim, rc_table_in(t, r), s->dim * sizeof(float));
        memcpy(s->out + (size_t)r * s->dim, rc_table_out(t, r), s->dim * sizeof(float));
        s->count[r] = rc_table_count(t, r);
    }
}

/* t holds the same items (by id) with the same vectors and counts, bit for bit. */
static void table_copy_same(const rc_table *t, const table_copy *s)
{
    ASSERT_EQ(rc_table_size(t), s->rows);
    for (uint32_t r = 0; r < s->rows; r++) {
        uint32_t row;
        ASSERT_EQ(rc_table_find(t, s->id[r], strlen(s->id[r]), &row), 0);
        ASSERT_EQ(rc_table_count(t, row), s->count[r]);
        ASSERT(memcmp(rc_table_in(t, row), s->in + (size_t)r * s->dim, s->dim * sizeof(float)) ==
               0);
        ASSERT(memcmp(rc_table_out(t, row), s->out + (size_t)r * s->dim, s->dim * sizeof(float)) ==
               0);
    }
}

static void table_copy_free(table_copy *s)
{
    free(s->id);
    free(s->in);
    free(s->out);
    free(s->count);
}

/* checkpoint.copy false: the trainer copies nothing (snapshot_bytes stays at the
 * staging buffer), waits while the writer reads the live table, then goes on
 * (a later batch is trained and a second checkpoint written); a new engine
 * restores what the checkpoints hold. */
TEST(engine_checkpoint_without_copy)
{
    char dir[64], line[256];
    rc_config c;
    dir_config(&c, dir, 8);
    c.ckpt_copy = 0;
    uv_loop_t loop;
    seen s = {.thread = pthread_self()};
    rc_engine *e = e2e_engine_threaded(&c, &loop, on_done, &s);
    rc_engine_set_checkpoint_cb(e, on_checkpoint, &s);
    for (int round = 0; round < 2; round++) {
        rc_batch *b = rc_engine_batch_get(e);
        ASSERT(b != NULL);
        for (int i = 0; i < 4; i++) {
            click_line(line, sizeof line, i % 2, round * 10 + i, 0, T0 + (round * 4 + i) * 1000);
            add(b, line, 0, round * 4 + i);
        }
        rc_engine_submit(e, b);
        ASSERT_EQ(rc_engine_checkpoint(e, 1, NULL), 0);
        e2e_loop_until(&loop, seen_reached,
                       &(until_seen){&s, (unsigned)round + 1, (unsigned)round + 1}, PATIENCE_MS,
                       round ? "second batch and checkpoint" : "first batch and checkpoint");
        ASSERT_EQ(s.ck.rc, 0);
        ASSERT_EQ(s.ck.unchanged, 0);
        ASSERT_EQ(s.ck.applied, (uint64_t)(round + 1) * 4);
        ASSERT_EQ(offset_of(s.ck_parts, s.ck_offs, s.ck.n, 0), (round + 1) * 4);
        ASSERT_EQ(snapshot_bytes(e), 1 << 20);
    }
    e2e_engine_threaded_close(e, &loop);
    seen_free(&s);
    e = e2e_engine_offline(&c);
    ASSERT_EQ(rc_engine_applied(e), 8);
    ASSERT_EQ(rc_table_size(rc_engine_table(e)), 8);
    rc_engine_destroy(e);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* engine.h checkpoints, offline engine: rc_engine_checkpoint needs a loop
 * (RC_EINVAL), rc_engine_checkpoint_now writes one on the calling thread with
 * the next offset of each partition seen. A new engine on the directory
 * restores the table bit for bit, the counters, the offsets (none when the
 * topic differs), and answers similar as before. Without data_dir,
 * checkpoint_now is RC_EINVAL. */
TEST(engine_checkpoint_now_round_trip)
{
    char dir[64], err[256], line[256];
    rc_config c;
    dir_config(&c, dir, 64);
    rc_engine *e = e2e_engine_offline(&c);
    ASSERT_EQ(rc_engine_checkpoint(e, 0, NULL), RC_EINVAL);
    uint64_t msgs = 0;
    for (int bi = 0; bi < 6; bi++) {
        rc_batch *b = rc_engine_batch_get(e);
        ASSERT(b != NULL);
        for (int i = 0; i < 50; i++) {
            int item = (bi * 50 + i) * 7 % 60, part = bi % 2 ? 2 : 0;
            click_line(line, sizeof line, i % 9, item, item % 3, T0 + (bi * 50 + i) * 1000);
            add(b, line, part, 1000 * part + bi * 50 + i);
            msgs++;
        }
        if (bi == 3) {
            add(b, "nope", 2, 5000);
            msgs++;
        }
        rc_engine_submit(e, b);
    }
    rc_engine_sync(e);
    rc_engine_checkpoint_result r;
    ASSERT_EQ(rc_engine_checkpoint_now(e, &r, err, sizeof err), 0);
    ASSERT_EQ(r.rc, 0);
    ASSERT_EQ(r.unchanged, 0);
    ASSERT_GT(r.bytes, 0);
    ASSERT_EQ(r.applied, 300);
    ASSERT_EQ(r.n, 2);
    ASSERT_EQ(offset_of(r.parts, r.offsets, r.n, 0), 250);
    ASSERT_EQ(offset_of(r.parts, r.offsets, r.n, 2), 5001);
    ASSERT_EQ(snapshot_bytes(e), 1 << 20); /* the copy is not kept */
    uint64_t seq = r.seq;
    ASSERT_EQ(rc_engine_checkpoint_now(e, &r, err, sizeof err), 0); /* "now": written again */
    ASSERT_EQ(r.unchanged, 0);
    ASSERT_EQ(r.seq, seq + 1);
    seq = r.seq;

    rc_engine_counters k0, k1;
    rc_engine_counters_get(e, &k0);
    ASSERT_EQ(k0.invalid[RC_EV_BAD_JSON], 1);
    table_copy tc;
    table_copy_take(rc_engine_table(e), &tc);
    rc_hit h0[10], h1[10];
    uint32_t n0 = 0, n1 = 0;
    ASSERT_EQ(rc_engine_similar(e, "i5", 2, 10, h0, &n0), 0);
    char want[10][64];
    for (uint32_t i = 0; i < n0; i++)
        snprintf(want[i], sizeof want[i], "%s", e2e_engine_item(e, h0[i].row));
    rc_engine_destroy(e);

    e = e2e_engine_offline(&c);
    ASSERT_EQ(rc_engine_needs_replay(e), 0);
    table_copy_same(rc_engine_table(e), &tc);
    rc_engine_counters_get(e, &k1);
    ASSERT_EQ(k1.applied, k0.applied);
    ASSERT_EQ(k1.pairs, k0.pairs);
    ASSERT_EQ(k1.new_items, k0.new_items);
    ASSERT_EQ(k1.invalid[RC_EV_BAD_JSON], 1);
    ASSERT_EQ(k1.consumed, msgs); /* what the model processed */
    int32_t parts[4];
    int64_t offs[4];
    ASSERT_EQ(rc_engine_restored_offsets(e, parts, offs, 4), 2);
    ASSERT_EQ(offset_of(parts, offs, 2, 0), 250);
    ASSERT_EQ(offset_of(parts, offs, 2, 2), 5001);
    ASSERT_EQ(rc_engine_similar(e, "i5", 2, 10, h1, &n1), 0);
    ASSERT_EQ(n1, n0);
    for (uint32_t i = 0; i < n1; i++)
        ASSERT_STREQ(e2e_engine_item(e, h1[i].row), want[i]);
    json_t *st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_seq"), (long long)seq);
    json_decref(st);
    rc_engine_destroy(e);

    /* another topic: the model is restored, its offsets are not used */
    rc_config c2 = c;
    snprintf(c2.topic, sizeof c2.topic, "other-topic");
    e = e2e_engine_offline(&c2);
    table_copy_same(rc_engine_table(e), &tc);
    ASSERT_EQ(rc_engine_restored_offsets(e, parts, offs, 4), 0);
    rc_engine_destroy(e);
    table_copy_free(&tc);

    rc_config c3;
    small_config(&c3);
    e = e2e_engine_offline(&c3);
    ASSERT_EQ(rc_engine_checkpoint_now(e, &r, err, sizeof err), RC_EINVAL);
    rc_engine_destroy(e);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* The users' recall, fused and item-kNN, for u0..u8: item names per rank,
 * and whether any answer was the popular fallback. */
struct answers {
    char item[9][2][10][16];
    uint32_t n[9][2];
    int fallback;
};

static void answers_take(rc_engine *e, struct answers *a)
{
    memset(a, 0, sizeof *a);
    for (int u = 0; u < 9; u++)
        for (int mode = 0; mode < 2; mode++) {
            char user[8];
            snprintf(user, sizeof user, "u%d", u);
            rc_recall_req q = {.user = user,
                               .ulen = strlen(user),
                               .k = 10,
                               .global = 1,
                               .fused = mode == 0,
                               .itemknn = mode == 1};
            rc_hit h[10];
            int fb = 0;
            ASSERT_EQ(rc_engine_recall(e, &q, h, &a->n[u][mode], &fb), 0);
            a->fallback |= fb;
            for (uint32_t i = 0; i < a->n[u][mode]; i++)
                snprintf(a->item[u][mode][i], 16, "%s", e2e_engine_item(e, h[i].row));
        }
}

/* Each checkpoint holds the users' sessions and the co-occurrence counts
 * (checkpoint.sessions, checkpoint.cooc): a restarted engine answers every
 * user, fused and item-kNN, as before (none from the popular fallback) and
 * says what it restored; with the keys off on the restoring side it starts
 * both empty, and every user falls back. */
TEST(engine_checkpoint_keeps_sessions_and_cooc)
{
    char dir[64], err[256], line[256];
    rc_config c;
    dir_config(&c, dir, 64);
    rc_engine *e = e2e_engine_offline(&c);
    for (int bi = 0; bi < 4; bi++) {
        rc_batch *b = rc_engine_batch_get(e);
        ASSERT(b != NULL);
        for (int i = 0; i < 45; i++) { /* a session of ten items, half of them u+1's too */
            int u = i % 9, step = bi * 5 + i / 9, item = u * 5 + (step * 3) % 10;
            click_line(line, sizeof line, u, item, 0, T0 + step * 60000 + u);
            add(b, line, 0, bi * 45 + i);
        }
        rc_engine_submit(e, b);
    }
    rc_engine_sync(e);
    rc_engine_checkpoint_result r;
    ASSERT_EQ(rc_engine_checkpoint_now(e, &r, err, sizeof err), 0);
    ASSERT_EQ(r.rc, 0);
    json_t *st = e2e_engine_stats(e);
    ASSERT_GT(e2e_int(st, "checkpoint.state_bytes"), 9 * 20 * 12);
    json_decref(st);
    struct answers before, after;
    answers_take(e, &before);
    ASSERT_EQ(before.fallback, 0);
    ASSERT_GT(before.n[0][1], 0);
    rc_engine_destroy(e);

    e = e2e_engine_offline(&c);
    answers_take(e, &after);
    ASSERT_EQ(after.fallback, 0);
    for (int u = 0; u < 9; u++)
        for (int mode = 0; mode < 2; mode++) {
            ASSERT_EQ(after.n[u][mode], before.n[u][mode]);
            for (uint32_t i = 0; i < before.n[u][mode]; i++)
                ASSERT_STREQ(after.item[u][mode][i], before.item[u][mode][i]);
        }
    st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_users"), 9);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_profiles"), 9);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_dropped"), 0);
    ASSERT_GT(e2e_int(st, "checkpoint.restored_cooc_items"), 40);
    ASSERT(json_is_true(json_object_get(json_object_get(st, "checkpoint"), "restored_state_ok")));
    json_decref(st);
    rc_engine_destroy(e);

    rc_config off = c;
    off.ckpt_sessions = off.ckpt_cooc = 0;
    e = e2e_engine_offline(&off);
    answers_take(e, &after);
    ASSERT_EQ(after.fallback, 1);
    st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_users"), 0);
    ASSERT_EQ(e2e_int(st, "checkpoint.restored_cooc_items"), 0);
    ASSERT_EQ(e2e_int(st, "cooc.items"), 0);
    json_decref(st);
    rc_engine_destroy(e);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* ---- install_model's table (rc_engine_install_table) ---- */

/* A source table of dim: the engine's items i0..i9 (counts 1000 for i0..i4,
 * 1 for i5..i9) and new items n0..n(extra-1) in a new city, vectors from
 * seed. */
static rc_table *install_src(uint32_t dim, uint32_t extra, uint32_t seed)
{
    rc_table_opts to = {.dim = dim, .seed = 3};
    rc_table *t = NULL;
    ASSERT_EQ(rc_table_create(&to, &t, NULL, 0), 0);
    rc_rng rng;
    rc_rng_seed(&rng, seed);
    for (uint32_t i = 0; i < 10 + extra; i++) {
        char id[32];
        uint32_t city, cate, row;
        if (i < 10)
            snprintf(id, sizeof id, "i%u", i);
        else
            snprintf(id, sizeof id, "n%u", i - 10);
        ASSERT_EQ(rc_table_city_id(t, i < 10 ? "c0" : "c7", 2, &city), 0);
        ASSERT_EQ(rc_table_cate_id(t, i < 10 ? "k0" : "k9", 2, &cate), 0);
        ASSERT_EQ(rc_table_upsert(t, id, strlen(id), city, cate, NULL, 0, &row, NULL), 0);
        rc_table_count_add(t, row, i < 5 ? 1000 : 1);
        for (uint32_t d = 0; d < dim; d++) {
            rc_table_in(t, row)[d] = rc_rng_float(&rng) * 2 - 1;
            rc_table_out(t, row)[d] = rc_rng_float(&rng) - 0.5f;
        }
    }
    return t;
}

/* Rows of e's table that src holds have src's vectors; i5..i9 kept their
 * larger count; the new rows have src's city and category. */
static void expect_installed(rc_engine *e, const rc_table *src)
{
    const rc_table *t = rc_engine_table(e);
    uint32_t dim = rc_table_dim(t);
    for (uint32_t r = 0; r < rc_table_size(src); r++) {
        size_t len;
        const char *id = rc_table_item_id(src, r, &len);
        uint32_t row;
        ASSERT_EQ(rc_table_find(t, id, len, &row), 0);
        ASSERT_EQ(memcmp(rc_table_in(t, row), rc_table_in(src, r), dim * sizeof(float)), 0);
        ASSERT_EQ(memcmp(rc_table_out(t, row), rc_table_out(src, r), dim * sizeof(float)), 0);
        ASSERT(rc_table_count(t, row) >= rc_table_count(src, r));
        ASSERT_STREQ(rc_table_city_name(t, rc_table_city(t, row)),
                     rc_table_city_name(src, rc_table_city(src, r)));
        if (id[0] == 'n')
            ASSERT_STREQ(rc_table_cate_name(t, rc_table_cate(t, row)), "k9");
    }
}

/* An offline engine of c that learnt 400 clicks of 10 users on 40 items
 * (i0..i39, city c0). */
static rc_engine *engine_40_items(const rc_config *c)
{
    char line[256];
    rc_engine *e = e2e_engine_offline(c);
    for (int i = 0; i < 400; i++) {
        int n = click_line(line, sizeof line, i % 10, (i * 7) % 40, 0, T0 + i * 1000);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
    }
    return e;
}

TEST(engine_install_table_replaces_creates_and_keeps)
{
    rc_config c;
    char err[256];
    small_config(&c);
    rc_engine *e = engine_40_items(&c);
    const rc_table *t = rc_engine_table(e);
    uint32_t n0 = rc_table_size(t), dim = rc_table_dim(t);
    ASSERT_EQ(n0, 40);
    /* what the rows src does not hold look like before */
    float *before = malloc((size_t)n0 * 2 * dim * sizeof *before);
    uint32_t cnt[40];
    for (uint32_t r = 0; r < n0; r++) {
        memcpy(before + (size_t)r * 2 * dim, rc_table_in(t, r), dim * sizeof(float));
        memcpy(before + ((size_t)r * 2 + 1) * dim, rc_table_out(t, r), dim * sizeof(float));
        cnt[r] = rc_table_count(t, r);
    }
    rc_table *src = install_src(dim, 5, 41);
    rc_engine_table_install res;
    ASSERT_EQ(rc_engine_install_table(e, src, &res, err, sizeof err), 0);
    ASSERT_EQ(res.rows, 15);
    ASSERT_EQ(res.replaced, 10);
    ASSERT_EQ(res.created, 5);
    ASSERT_EQ(res.refused, 0);
    ASSERT_EQ(rc_table_size(t), 45);
    expect_installed(e, src);
    for (uint32_t r = 0; r < n0; r++) {
        size_t len;
        const char *id = rc_table_item_id(t, r, &len);
        uint32_t sr;
        if (rc_table_find(src, id, len, &sr) == 0) {
            /* the larger count: src's 1000, or the row's own over src's 1 */
            ASSERT_EQ(rc_table_count(t, r), RC_MAX(cnt[r], rc_table_count(src, sr)));
            continue;
        }
        ASSERT_EQ(rc_table_count(t, r), cnt[r]);
        ASSERT_EQ(memcmp(rc_table_in(t, r), before + (size_t)r * 2 * dim, dim * sizeof(float)), 0);
        ASSERT_EQ(
            memcmp(rc_table_out(t, r), before + ((size_t)r * 2 + 1) * dim, dim * sizeof(float)), 0);
    }
    /* the new rows are indexed: similar answers from them */
    rc_hit hits[8];
    uint32_t nh = 0;
    ASSERT_EQ(rc_engine_similar(e, "n0", 2, 8, hits, &nh), 0);
    ASSERT_GT(nh, 0);
    /* counted in stats */
    uint64_t installs, rows;
    rc_engine_install_table_stats(e, &installs, &rows);
    ASSERT_EQ(installs, 1);
    ASSERT_EQ(rows, 15);
    /* another dimension: refused, nothing installed */
    rc_table *other = install_src(dim * 2, 1, 42);
    ASSERT_EQ(rc_engine_install_table(e, other, &res, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "dimension 32, model.dim 16") != NULL);
    ASSERT_EQ(rc_table_size(t), 45);
    rc_table_destroy(other);
    rc_engine_destroy(e);
    rc_table_destroy(src);
    /* a table full at model.max_items: the rows beyond it refused, counted */
    c.max_items = 32;
    e = e2e_engine_offline(&c);
    src = install_src(dim, 20, 43); /* 30 rows */
    ASSERT_EQ(rc_engine_install_table(e, src, &res, err, sizeof err), 0);
    ASSERT_EQ(res.created, 30);
    rc_table_destroy(src);
    src = install_src(dim, 25, 44); /* the same 30 and n20..n24 */
    ASSERT_EQ(rc_engine_install_table(e, src, &res, err, sizeof err), 0);
    ASSERT_EQ(res.replaced, 30);
    ASSERT_EQ(res.created, 2);
    ASSERT_EQ(res.refused, 3);
    ASSERT_EQ(rc_table_size(rc_engine_table(e)), 32);
    rc_engine_destroy(e);
    rc_table_destroy(src);
    free(before);
}

static json_int_t replay_stat(rc_engine *e, const char *key)
{
    json_t *st = e2e_engine_stats(e);
    json_int_t v = json_integer_value(
        json_object_get(json_object_get(json_object_get(st, "training"), "replay"), key));
    json_decref(st);
    return v;
}

/* train.replay_forget_on_install: off (the default), an install leaves the
 * replay buffer as it was; on, it empties it (counted as forgotten) and the
 * replays owed: the next click's replays draw only that click's example. */
TEST(engine_install_table_forgets_replay_when_asked)
{
    char line[256], err[256];
    for (int forget = 0; forget < 2; forget++) {
        rc_config c;
        small_config(&c);
        c.replay_forget = forget;
        rc_engine *e = e2e_engine_offline(&c);
        for (int i = 0; i < 400; i++) {
            int n = click_line(line, sizeof line, i % 10, (i * 7) % 40, 0, T0 + i * 1000);
            ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
        }
        json_int_t fill = replay_stat(e, "fill"), replayed = replay_stat(e, "replayed");
        ASSERT_GT(fill, 300); /* clicks with a context: every one but the users' first */
        rc_table *src = install_src(c.dim, 5, 41);
        rc_engine_table_install res;
        ASSERT_EQ(rc_engine_install_table(e, src, &res, err, sizeof err), 0);
        ASSERT_EQ(replay_stat(e, "fill"), forget ? 0 : fill);
        ASSERT_EQ(replay_stat(e, "forgotten"), forget ? fill : 0);
        int n = click_line(line, sizeof line, 3, 5, 0, T0 + 401 * 1000);
        ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
        ASSERT_EQ(replay_stat(e, "fill"),
                  forget ? 1 : RC_MIN(fill + 1, (json_int_t)c.replay_clicks));
        json_int_t more = replay_stat(e, "replayed") - replayed;
        /* the click's replay_ratio replays (replays of a frequent item may
         * train no pair and are not counted) */
        ASSERT_GT(more, 0);
        ASSERT(more <= (json_int_t)c.replay_ratio);
        rc_table_destroy(src);
        rc_engine_destroy(e);
    }
}

/* install_model "replace" (rc_engine_replace_table): src's rows as in an
 * install; every other row starts again (a small random input vector, as
 * an item nothing is known of; output zero; count kept) and is counted; the replay buffer is
 * emptied although train.replay_forget_on_install is off. */
TEST(engine_replace_table_restarts_the_rest_and_forgets_replay)
{
    rc_config c;
    char line[256], err[256];
    small_config(&c);
    ASSERT_EQ(c.replay_forget, 0);
    rc_engine *e = engine_40_items(&c);
    const rc_table *t = rc_engine_table(e);
    uint32_t n0 = rc_table_size(t), dim = rc_table_dim(t);
    ASSERT_EQ(n0, 40);
    float *before = malloc((size_t)n0 * dim * sizeof *before);
    uint32_t cnt[40];
    for (uint32_t r = 0; r < n0; r++) {
        memcpy(before + (size_t)r * dim, rc_table_in(t, r), dim * sizeof(float));
        cnt[r] = rc_table_count(t, r);
    }
    json_int_t fill = replay_stat(e, "fill");
    ASSERT_GT(fill, 300);
    rc_table *src = install_src(dim, 5, 41);
    rc_engine_table_install res;
    ASSERT_EQ(rc_engine_replace_table(e, src, &res, err, sizeof err), 0);
    ASSERT_EQ(res.rows, 15);
    ASSERT_EQ(res.replaced, 10);
    ASSERT_EQ(res.created, 5);
    ASSERT_EQ(res.reset, 30); /* i10..i39 */
    expect_installed(e, src);
    for (uint32_t r = 0; r < n0; r++) {
        size_t len;
        const char *id = rc_table_item_id(t, r, &len);
        uint32_t sr;
        if (rc_table_find(src, id, len, &sr) == 0)
            continue;
        ASSERT_EQ(rc_table_count(t, r), cnt[r]);
        ASSERT(memcmp(rc_table_in(t, r), before + (size_t)r * dim, dim * sizeof(float)) != 0);
        for (uint32_t d = 0; d < dim; d++) {
            ASSERT_DBL_OP(fabsf(rc_table_in(t, r)[d]), <=, 0.5 / dim);
            ASSERT_DBL_OP(rc_table_out(t, r)[d], ==, 0.0);
        }
    }
    ASSERT_EQ(replay_stat(e, "fill"), 0);
    ASSERT_EQ(replay_stat(e, "forgotten"), fill);
    /* the reset rows are searchable and learn again */
    rc_hit hits[8];
    uint32_t nh = 0;
    ASSERT_EQ(rc_engine_similar(e, "i20", 3, 8, hits, &nh), 0);
    ASSERT_GT(nh, 0);
    int n = click_line(line, sizeof line, 3, 20, 0, T0 + 401 * 1000);
    ASSERT_EQ(rc_engine_apply_line(e, line, (size_t)n), RC_EV_OK);
    uint64_t installs, rows;
    rc_engine_install_table_stats(e, &installs, &rows);
    ASSERT_EQ(installs, 1);
    ASSERT_EQ(rows, 15);
    /* a plain install after it resets nothing */
    ASSERT_EQ(rc_engine_install_table(e, src, &res, err, sizeof err), 0);
    ASSERT_EQ(res.reset, 0);
    rc_table_destroy(src);
    rc_engine_destroy(e);
    free(before);
}

/* Threaded: the trainer installs a source of several chunks between the
 * batches of a stream that keeps coming; the caller returns once the last
 * row is in, and every click is still applied. */
struct install_call {
    rc_engine *e;
    const rc_table *src;
    int replace; /* rc_engine_replace_table */
    rc_engine_table_install res;
    int rc;
    char err[256];
};

static void *install_thread(void *arg)
{
    struct install_call *ic = arg;
    ic->rc = (ic->replace ? rc_engine_replace_table : rc_engine_install_table)(
        ic->e, ic->src, &ic->res, ic->err, sizeof ic->err);
    return NULL;
}

static void threaded_install(int replace)
{
    rc_config c;
    uv_loop_t loop;
    char line[256];
    small_config(&c);
    c.kafka_batch = 50;
    rc_engine *e = e2e_engine_threaded(&c, &loop, NULL, NULL);
    uint32_t dim = c.dim;
    rc_table *src = install_src(dim, 70000, 45); /* 3 chunks */
    struct install_call ic = {.e = e, .src = src, .replace = replace};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, install_thread, &ic), 0);
    uint64_t sent = 0;
    for (int bi = 0; bi < 40; bi++) {
        rc_batch *b;
        while (!(b = rc_engine_batch_get(e)))
            uv_run(&loop, UV_RUN_NOWAIT);
        for (int i = 0; i < 50; i++, sent++) {
            int n = click_line(line, sizeof line, i % 10, (int)(sent * 7 % 40), 0,
                               T0 + (int64_t)sent * 1000);
            ASSERT_EQ(rc_engine_batch_add(b, line, (size_t)n, 0, (int64_t)sent), 0);
        }
        rc_engine_submit(e, b);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    ASSERT_EQ(pthread_join(th, NULL), 0);
    if (ic.rc)
        RC__FAIL("install: %s", ic.err);
    ASSERT_EQ(ic.res.rows, 70010);
    ASSERT_EQ(ic.res.replaced + ic.res.created, 70010);
    ASSERT(ic.res.created >= 70000); /* n0.. are new; i0..i9 may be too, before their clicks */
    /* replace: the rows of i10..i39 clicked before the last check restarted */
    ASSERT(replace ? ic.res.reset <= 30 : ic.res.reset == 0);
    rc_engine_sync(e);
    /* the new rows hold src's vectors (no click touched them) */
    const rc_table *t = rc_engine_table(e);
    for (uint32_t r = 10; r < rc_table_size(src); r += 997) {
        size_t len;
        const char *id = rc_table_item_id(src, r, &len);
        uint32_t row;
        ASSERT_EQ(rc_table_find(t, id, len, &row), 0);
        ASSERT_EQ(memcmp(rc_table_in(t, row), rc_table_in(src, r), dim * sizeof(float)), 0);
    }
    json_t *st = e2e_engine_stats(e);
    ASSERT_EQ(e2e_int(st, "events.applied"), (long long)sent);
    ASSERT_EQ(e2e_int(st, "training.installs"), 1);
    ASSERT_EQ(e2e_int(st, "training.installed_rows"), 70010);
    json_decref(st);
    e2e_engine_threaded_close(e, &loop);
    rc_table_destroy(src);
}

TEST(engine_install_table_threaded_between_batches) { threaded_install(0); }

/* The same with "replace": its pass over the engine's rows also runs in
 * steps between batches, while clicks create and train rows. */
TEST(engine_replace_table_threaded_between_batches) { threaded_install(1); }
