/* gen — synthetic click streams with planted structure, for tests and benches.
 *
 * World: `cities` cities ("c<n>"), `cates` categories / business lines
 * ("k<n>"), `communities` co-click communities, each inside ONE city (city =
 * community % cities) with one main category and often a second one; `items`
 * items ("i<n>"), each in one community and so one city, with one category
 * (the community's main one ~75%, its second ~20%, any ~5%). Inside a
 * community items have Zipf(zipf) popularity over a hidden rank.
 * Users ("u<n>") have a home city and 1-2 favourite communities in it. A click
 * comes from the session's favourite community (~85%), another community of
 * the home city (~10%) or anywhere (~5%). Clicks come in sessions: gaps of
 * seconds to minutes inside one (always < 30 min), over 30 min between two.
 * Users are interleaved like a real stream: event times are non-decreasing
 * over the whole output and strictly increasing per user. Optional fields:
 * `device` per user (tied to its favourite category) and `tags` (1-3 labels
 * "t<cate>_<j>", mostly from the user's favourite categories). Opt-in
 * drifting interests (opts.drift) move a user's clicks to temporary interests
 * that its profile does not describe. Opt-in item churn (opts.item_life_days)
 * gives items a life: they appear, rise, fade and disappear over time.
 *
 * Deterministic: the same options give the same lines. Not thread-safe (one
 * owner); truth queries are read-only and may run from any thread while no
 * rc_gen_next runs concurrently. */
#ifndef RECALLD_GEN_H
#define RECALLD_GEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct rc_gen rc_gen;

enum {
    RC_GEN_NO_DEVICE = 1 << 0, /* omit "device" */
    RC_GEN_NO_TAGS = 1 << 1    /* omit "tags" */
};

/* Zero = default for every field. */
typedef struct rc_gen_opts {
    uint64_t seed;        /* 0 = 1 */
    uint64_t events;      /* lines rc_gen_next produces before RC_ENOENT; 0 = unbounded */
    uint32_t users;       /* 0 = 10000 */
    uint32_t items;       /* 0 = 5000 */
    uint32_t cities;      /* 0 = 8 */
    uint32_t cates;       /* 0 = 6 */
    uint32_t communities; /* 0 = 64; raised to at least `cities`, capped at `items` */
    double zipf;          /* exponent inside a community, 0 = 1.0 */
    int64_t start_ts_ms;  /* first event time, 0 = 1700000000000 */
    double invalid_share; /* 0..1: share of lines made malformed */
    unsigned flags;       /* RC_GEN_NO_* */
    /* 0..1, 0 = off (the stream is then exactly the one without this field):
     * drifting interests. At each new session, with this probability, a user
     * on its long-term favourites starts a temporary interest (a random
     * community of its home city) that its favourite-community clicks then
     * come from, session after session; a user on a temporary interest
     * returns to its long-term favourites. Device and tags keep describing
     * the long-term favourites; the truth too. */
    double drift;
    /* Item churn, 0 = off (the stream is then exactly the one without these
     * fields). Each item lives item_life_days (> 0) from a birth drawn
     * uniformly in [start - item_life_days, start + churn_days): some are
     * alive at the start, the others appear while the stream runs (churn_days
     * should be about the stream's span; users click ~34 times a day, so
     * the span is about events / (34 * users) days). Drifting popularity:
     * an item's weight is its Zipf weight times sin(pi * age / life) — it
     * rises from its birth, peaks at mid-life and fades to 0 at its end.
     * Clicks go only to living items of the chosen community (to the one
     * closest to its mid-life when none lives). Draws cost O(community
     * size) per click instead of O(log). */
    double item_life_days;
    double churn_days; /* >= 0, only with item_life_days */
} rc_gen_opts;

/* What one line is about (valid or not, the underlying click). */
/* How a malformed line is malformed (rc_gen_info.bad). */
enum rc_gen_bad {
    RC_GEN_BAD_TRUNCATED,     /* a proper prefix of the object: not JSON */
    RC_GEN_BAD_MISSING,       /* a required field left out */
    RC_GEN_BAD_WRONG_TYPE,    /* a required field of the wrong JSON type */
    RC_GEN_BAD_OVERSIZED_ID,  /* an id over its byte limit */
    RC_GEN_BAD_NEGATIVE_TS,   /* ts < 0 */
    RC_GEN_BAD_ARRAY,         /* the object wrapped in an array */
    RC_GEN_BAD_NULL,          /* a required field is null */
    RC_GEN_BAD_NUL_BYTE,      /* an id with a NUL character */
    RC_GEN_BAD_FRACTION_TS,   /* ts with a fraction */
    RC_GEN_BAD_TOO_MANY_TAGS, /* more tags than an event may carry */
    RC_GEN_BAD_KINDS
};

typedef struct rc_gen_info {
    uint32_t user, item; /* indices: ids are "u<user>", "i<item>" */
    uint32_t community;  /* the item's community */
    int64_t ts_ms;
    int valid;       /* 0: the line is malformed on purpose */
    int bad;         /* valid == 0: how (enum rc_gen_bad); -1 when valid */
    int favourite;   /* the click was drawn from a favourite community */
    int new_session; /* first click of a session of this user */
} rc_gen_info;

typedef struct rc_gen_item {
    uint32_t community, city, cate; /* indices: "c<city>", "k<cate>" */
    int64_t born_ms, dies_ms;       /* churn: its life [born, dies); else INT64_MIN, INT64_MAX */
} rc_gen_item;

typedef struct rc_gen_user {
    uint32_t home_city;
    uint32_t nfav;     /* 1 or 2 */
    uint32_t fav[2];   /* favourite communities (in home_city) */
    uint32_t fav_cate; /* main category of fav[0]: drives device and tags */
} rc_gen_user;

typedef struct rc_gen_counts {
    uint64_t valid, invalid;
} rc_gen_counts;

/* Builds the world. *out: caller frees with rc_gen_destroy. Returns 0,
 * RC_EINVAL (bad option; errbuf names it) or RC_ENOMEM. */
int rc_gen_create(const rc_gen_opts *opts, rc_gen **out, char *errbuf, size_t errlen);
void rc_gen_destroy(rc_gen *g); /* NULL-safe */

/* Writes the next event as one JSON object (no newline, NUL-terminated) into
 * buf[0..cap); *len gets its length (without NUL). info (NULL ok) describes it.
 * Returns 0, RC_ENOENT when `events` lines were produced, or RC_E2BIG when cap
 * is too small (< RC_GEN_LINE_MAX is never needed: lines fit in it). */
#define RC_GEN_LINE_MAX 1024
int rc_gen_next(rc_gen *g, char *buf, size_t cap, size_t *len, rc_gen_info *info);

/* Truth by id string ("i123" / "u45", or the bare number). Returns 0 or RC_ENOENT. */
int rc_gen_item_truth(const rc_gen *g, const char *item_id, size_t len, rc_gen_item *out);
int rc_gen_user_truth(const rc_gen *g, const char *user_id, size_t len, rc_gen_user *out);
/* Truth by index (< number of items / users). Returns 0 or RC_ENOENT. */
int rc_gen_item_at(const rc_gen *g, uint32_t item, rc_gen_item *out);
int rc_gen_user_at(const rc_gen *g, uint32_t user, rc_gen_user *out);

/* The effective options (defaults filled in). */
const rc_gen_opts *rc_gen_options(const rc_gen *g);
/* Lines written so far, by validity. */
rc_gen_counts rc_gen_counts_get(const rc_gen *g);

/* TSV truth: items "item_id\tcommunity\tcity\tcate" and users
 * "user_id\thome_city\tcommunities" (comma-separated), each with a header row.
 * Either stream may be NULL. Returns 0 or RC_EIO. */
int rc_gen_write_truth(const rc_gen *g, FILE *items, FILE *users);

#endif
