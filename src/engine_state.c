/* engine_state — the engine's state beside the table in a checkpoint: the
 * users' sessions and profiles and the co-occurrence counts (the checkpoint's state
 * section, include/recalld/checkpoint.h). Without them a restarted daemon
 * answers every user from popular items, and `fused` from the embedding alone,
 * until clicks refill both; and a click that continues a session started
 * before the restart trains without its context.
 *
 * Blob: u32 magic "RCST", u32 version 1, then sections of u32 tag, u64
 * length, bytes: STATE_SESSIONS (rc_session_save), STATE_PROFILES
 * (rc_profile_save: the two-tower model's user inputs) and STATE_COOC
 * (rc_cooc_save) and STATE_TOWER_REPLAY (rc_replay_save: the tower
 * retrainer's training clicks, without which a retrain after a restart learns
 * from the clicks since only). A reader skips a tag it does not know. */
#include <pthread.h>
#include <string.h>

#include "engine_int.h"
#include "recalld/buf.h"
#include "recalld/cooc.h"
#include "recalld/log.h"
#include "recalld/replay.h"

#define STATE_MAGIC        0x54534352u /* "RCST" little-endian */
#define STATE_VERSION      1u
#define STATE_SESSIONS     1u
#define STATE_COOC         2u
#define STATE_PROFILES     3u
#define STATE_TOWER_REPLAY 4u

/* Appends one section: tag, a length patched after save() wrote its bytes. */
static int section(rc_buf *b, uint32_t tag, int (*save)(void *, rc_buf *), void *obj)
{
    uint64_t len = 0;
    if (rc_buf_append(b, &tag, 4) || rc_buf_append(b, &len, 8))
        return RC_ENOMEM;
    size_t at = b->len;
    int rc = save(obj, b);
    if (rc)
        return rc;
    len = b->len - at;
    memcpy(b->data + at - 8, &len, 8);
    return 0;
}

static int save_sessions(void *s, rc_buf *b) { return rc_session_save(s, b); }
static int save_cooc(void *c, rc_buf *b) { return rc_cooc_save(c, b); }
static int save_profiles(void *p, rc_buf *b) { return rc_profile_save(p, b); }
static int save_replay(void *r, rc_buf *b) { return rc_replay_save(r, b); }

/* The tower retrainer's buffer, when it is on and kept. */
static rc_replay *kept_ring(rc_engine *e)
{
    return e->cfg.ckpt_tower_replay ? rc__engine_rt_ring(e) : NULL;
}

int rc__engine_state_save(rc_engine *e, rc_buf *b)
{
    const uint32_t head[2] = {STATE_MAGIC, STATE_VERSION};
    int rc = 0;
    rc_buf_reset(b);
    if (!e->cfg.ckpt_sessions && !(e->cfg.ckpt_cooc && e->cooc) && !kept_ring(e))
        return 0;
    if (rc_buf_append(b, head, sizeof head))
        rc = RC_ENOMEM;
    if (!rc && e->cfg.ckpt_sessions && e->sess)
        rc = section(b, STATE_SESSIONS, save_sessions, e->sess);
    if (!rc && e->cfg.ckpt_sessions && e->prof)
        rc = section(b, STATE_PROFILES, save_profiles, e->prof);
    if (!rc && e->cfg.ckpt_cooc && e->cooc)
        rc = section(b, STATE_COOC, save_cooc, e->cooc);
    if (!rc && kept_ring(e))
        rc = section(b, STATE_TOWER_REPLAY, save_replay, kept_ring(e));
    if (rc)
        rc_buf_reset(b); /* the checkpoint goes without it */
    return rc;
}

uint64_t rc__engine_state_estimate(rc_engine *e)
{
    uint64_t n = 0;
    if (e->cfg.ckpt_sessions && e->sess) {
        rc_session_stats st;
        rc_session_stats_get(e->sess, &st);
        n += st.bytes;
    }
    if (e->cfg.ckpt_sessions && e->prof) {
        rc_profile_stats st;
        rc_profile_stats_get(e->prof, &st);
        n += st.bytes;
    }
    if (e->cfg.ckpt_cooc && e->cooc) {
        rc_cooc_stats st;
        rc_cooc_stats_get(e->cooc, &st);
        n += st.bytes;
    }
    if (kept_ring(e)) {
        rc_replay_stats st;
        rc_replay_stats_get(kept_ring(e), &st);
        n += 8 + st.fill * 40; /* the tag lists come on top: the estimate's growth covers them */
    }
    return n;
}

/* One section's load: on its own thread (each store has one writer, this
 * thread, until the join), the stores being independent. */
struct load_job {
    rc_engine *e;
    uint32_t tag, rows;
    const unsigned char *p;
    uint64_t len, count, dropped;
    int rc;
    pthread_t th;
    int started;
};

static void *load_main(void *arg)
{
    struct load_job *j = arg;
    rc_engine *e = j->e;
    if (j->tag == STATE_SESSIONS) {
        j->rc = rc_session_load(e->sess, j->p, j->len, j->rows, &j->count, &j->dropped);
    } else if (j->tag == STATE_PROFILES) {
        j->rc = rc_profile_load(e->prof, j->p, j->len, &j->count);
    } else if (j->tag == STATE_TOWER_REPLAY) {
        j->rc = rc_replay_load(kept_ring(e), j->p, j->len, j->rows, &j->count, &j->dropped);
    } else {
        j->rc = rc_cooc_load(e->cooc, j->p, j->len, j->rows, &j->dropped);
        rc_cooc_stats cs;
        rc_cooc_stats_get(e->cooc, &cs);
        j->count = cs.items;
    }
    return NULL;
}

void rc__engine_state_restore(rc_engine *e, const unsigned char *p, uint64_t n)
{
    struct rc__engine_ckpt *k = e->ck;
    uint32_t rows = rc_table_size(e->table), head[2], nj = 0;
    struct load_job jobs[4];
    uint64_t pos = 8;
    const char *what = NULL;
    if (!n)
        return;
    memcpy(head, p, RC_MIN(n, 8));
    if (n < 8 || head[0] != STATE_MAGIC || head[1] != STATE_VERSION)
        what = "unknown state section";
    while (!what && pos < n) {
        uint32_t tag;
        uint64_t len;
        if (n - pos < 12) {
            what = "truncated state section";
            break;
        }
        memcpy(&tag, p + pos, 4);
        memcpy(&len, p + pos + 4, 8);
        pos += 12;
        if (len > n - pos) {
            what = "truncated state section";
            break;
        }
        int used = (tag == STATE_SESSIONS && e->cfg.ckpt_sessions && e->sess) ||
                   (tag == STATE_PROFILES && e->cfg.ckpt_sessions && e->prof) ||
                   (tag == STATE_COOC && e->cfg.ckpt_cooc && e->cooc) ||
                   (tag == STATE_TOWER_REPLAY && kept_ring(e));
        for (uint32_t i = 0; used && i < nj; i++)
            used = jobs[i].tag != tag; /* a section twice: the first one */
        if (used && nj < RC_ARRAY_LEN(jobs))
            jobs[nj++] =
                (struct load_job){.e = e, .tag = tag, .rows = rows, .p = p + pos, .len = len};
        pos += len;
    }
    /* the loads side by side (0.48, 0.63 and 0.35 s at 1M users one after the other) */
    for (uint32_t i = 0; i < nj; i++)
        jobs[i].started = i + 1 < nj && pthread_create(&jobs[i].th, NULL, load_main, &jobs[i]) == 0;
    for (uint32_t i = 0; i < nj; i++)
        if (!jobs[i].started)
            load_main(&jobs[i]);
    for (uint32_t i = 0; i < nj; i++) {
        struct load_job *j = &jobs[i];
        if (j->started)
            pthread_join(j->th, NULL);
        if (j->tag == STATE_SESSIONS)
            k->restored_users = j->count;
        else if (j->tag == STATE_PROFILES)
            k->restored_profiles = j->count;
        else if (j->tag == STATE_TOWER_REPLAY)
            k->restored_tower_clicks = j->count;
        else
            k->restored_cooc_items = j->count;
        k->restored_dropped += j->dropped;
        if (j->rc && !what)
            what = j->rc == RC_ENOMEM ? "out of memory for the state section"
                                      : "inconsistent state section";
    }
    if (what) {
        k->restore_state_failed = 1;
        rc_log_warn("engine",
                    "checkpoint: the sessions and co-occurrence counts were not all restored",
                    "why=\"%s\" users=%llu profiles=%llu cooc_items=%llu", what,
                    (unsigned long long)k->restored_users, (unsigned long long)k->restored_profiles,
                    (unsigned long long)k->restored_cooc_items);
    }
}
