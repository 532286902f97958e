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
 * (rc_cooc_save). A reader skips a tag it does not know. */
#include <string.h>

#include "engine_int.h"
#include "recalld/buf.h"
#include "recalld/cooc.h"
#include "recalld/log.h"

#define STATE_MAGIC    0x54534352u /* "RCST" little-endian */
#define STATE_VERSION  1u
#define STATE_SESSIONS 1u
#define STATE_COOC     2u
#define STATE_PROFILES 3u

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

int rc__engine_state_save(rc_engine *e, rc_buf *b)
{
    const uint32_t head[2] = {STATE_MAGIC, STATE_VERSION};
    int rc = 0;
    rc_buf_reset(b);
    if (!e->cfg.ckpt_sessions && !(e->cfg.ckpt_cooc && e->cooc))
        return 0;
    if (rc_buf_append(b, head, sizeof head))
        rc = RC_ENOMEM;
    if (!rc && e->cfg.ckpt_sessions && e->sess)
        rc = section(b, STATE_SESSIONS, save_sessions, e->sess);
    if (!rc && e->cfg.ckpt_sessions && e->prof)
        rc = section(b, STATE_PROFILES, save_profiles, e->prof);
    if (!rc && e->cfg.ckpt_cooc && e->cooc)
        rc = section(b, STATE_COOC, save_cooc, e->cooc);
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
    return n;
}

void rc__engine_state_restore(rc_engine *e, const unsigned char *p, uint64_t n)
{
    struct rc__engine_ckpt *k = e->ck;
    uint32_t rows = rc_table_size(e->table), head[2];
    uint64_t pos = 8;
    const char *what = NULL;
    if (!n)
        return;
    memcpy(head, p, RC_MIN(n, 8));
    if (n < 8 || head[0] != STATE_MAGIC || head[1] != STATE_VERSION)
        what = "unknown state section";
    while (!what && pos < n) {
        uint32_t tag;
        uint64_t len, dropped = 0, users = 0;
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
        int rc = 0;
        if (tag == STATE_SESSIONS && e->cfg.ckpt_sessions) {
            rc = rc_session_load(e->sess, p + pos, len, rows, &users, &dropped);
            k->restored_users = users;
        } else if (tag == STATE_PROFILES && e->cfg.ckpt_sessions && e->prof) {
            rc = rc_profile_load(e->prof, p + pos, len, &users);
            k->restored_profiles = users;
        } else if (tag == STATE_COOC && e->cfg.ckpt_cooc && e->cooc) {
            rc = rc_cooc_load(e->cooc, p + pos, len, rows, &dropped);
            rc_cooc_stats cs;
            rc_cooc_stats_get(e->cooc, &cs);
            k->restored_cooc_items = cs.items;
        }
        k->restored_dropped += dropped;
        if (rc)
            what = rc == RC_ENOMEM ? "out of memory for the state section"
                                   : "inconsistent state section";
        pos += len;
    }
    if (what) {
        k->restore_state_failed = 1;
        rc_log_warn(
            "engine", "checkpoint: the sessions and co-occurrence counts were not all restored",
            "why=\"%s\" users=%llu cooc_items=%llu", what, (unsigned long long)k->restored_users,
            (unsigned long long)k->restored_cooc_items);
    }
}
