/* event — JSON click events: decode + validate with jansson, encode by hand.
 *
 * Decoding never keeps a pointer into the input or into jansson's tree: every
 * accepted string is copied into the fixed arrays of rc_event, so the caller
 * may free the Kafka message as soon as rc_event_decode returns.
 *
 * Allocation: a parsed event is ~25 small jansson allocations (object, hash
 * buckets, keys, strings), which cost as much as the parse itself. While a
 * thread is inside rc_event_decode, jansson allocates from that thread's
 * arena instead (a bump pointer, reset after the event); the tree is then
 * dropped with the arena, without walking it. The hooks are installed for the
 * whole process, before main, and pass every other allocation (other threads,
 * other modules, an event too big for the arena) through to malloc/free: a
 * pointer is returned to free() unless it lies in the calling thread's arena. */
#include "recalld/event.h"
#include "recalld/buf.h"
#include "recalld/common.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ALLOW_NUL lets "\u0000" parse, so it is reported as a bad value of the
 * field that holds it rather than as an anonymous parse error. */
#define LOAD_FLAGS  (JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)
#define ARENA_BYTES (16u * 1024u) /* a typical event needs ~2 KB */
#define ARENA_ALIGN 16u

struct arena {
    char *base;
    size_t used;
    int active;  /* inside rc_event_decode */
    int spilled; /* some allocation of this event went to malloc */
};

static _Thread_local struct arena arena;
static pthread_key_t arena_key;
static int arena_key_ok;

static void arena_release(void *p) { free(p); }

static void *ev_malloc(size_t n)
{
    struct arena *a = &arena;
    if (a->active) {
        size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
        if (need >= n && need <= ARENA_BYTES - a->used) {
            void *p = a->base + a->used;
            a->used += need;
            return p;
        }
        a->spilled = 1;
    }
    return malloc(n);
}

static void ev_free(void *p)
{
    const struct arena *a = &arena;
    if (a->base && (uintptr_t)p - (uintptr_t)a->base < ARENA_BYTES)
        return; /* dropped with the arena */
    free(p);
}

__attribute__((constructor)) static void event_alloc_init(void)
{
    arena_key_ok = pthread_key_create(&arena_key, arena_release) == 0;
    json_set_alloc_funcs(ev_malloc, ev_free);
}

/* Starts an event's arena on this thread; 0 when there is none (then jansson
 * simply uses malloc). */
static int arena_begin(void)
{
    struct arena *a = &arena;
    if (!a->base) {
        if (!arena_key_ok)
            return 0;
        char *b = aligned_alloc(ARENA_ALIGN, ARENA_BYTES);
        if (!b)
            return 0;
        if (pthread_setspecific(arena_key, b)) {
            free(b);
            return 0;
        }
        a->base = b;
    }
    a->used = 0;
    a->spilled = 0;
    a->active = 1;
    return 1;
}

/* Drops root (may be NULL) and ends the arena. */
static void arena_end(int used, json_t *root)
{
    if (used)
        arena.active = 0;
    /* Arena nodes need no walk; a tree with malloc'd parts is walked (its
     * arena nodes are skipped by ev_free). */
    if (root && (!used || arena.spilled))
        json_decref(root);
}

static const char *const reason_names[RC_EV_REASON_COUNT] = {
    [RC_EV_OK] = "ok",
    [RC_EV_TOO_LARGE] = "too_large",
    [RC_EV_BAD_JSON] = "bad_json",
    [RC_EV_NOT_OBJECT] = "not_object",
    [RC_EV_MISSING_FIELD] = "missing_field",
    [RC_EV_WRONG_TYPE] = "wrong_type",
    [RC_EV_BAD_VALUE] = "bad_value",
    [RC_EV_OVERSIZED] = "oversized",
    [RC_EV_FUTURE_TS] = "future_ts",
    [RC_EV_PAST_TS] = "past_ts",
};

const char *rc_event_reason_name(enum rc_event_reason r)
{
    if ((unsigned)r >= RC_EV_REASON_COUNT)
        return "unknown";
    return reason_names[r];
}

__attribute__((format(printf, 4, 5))) static enum rc_event_reason
fail(char *errbuf, size_t errlen, enum rc_event_reason r, const char *fmt, ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return r;
}

/* Why a window and not a cap: a click far ahead of the stream would become
 * the newest click of its user, so every later real click of that user would
 * count as late (not trained) and the user would never idle out. Refusing it
 * keeps one bad producer from disabling users. */
enum rc_event_reason rc_event_check_time(int64_t ts_ms, int64_t watermark_ms, int64_t max_future_ms,
                                         int64_t max_past_ms, char *errbuf, size_t errlen)
{
    if (max_future_ms > 0 && ts_ms - max_future_ms > watermark_ms) {
        int64_t ref = RC_MAX(watermark_ms, rc_wall_ms());
        if (ts_ms - max_future_ms > ref)
            return fail(errbuf, errlen, RC_EV_FUTURE_TS,
                        "ts: %" PRId64 " is %" PRId64 " ms ahead of the stream (limit %" PRId64
                        " ms, events.max_future_ms)",
                        ts_ms, ts_ms - ref, max_future_ms);
    }
    if (max_past_ms > 0 && watermark_ms > 0 && ts_ms < watermark_ms - max_past_ms)
        return fail(errbuf, errlen, RC_EV_PAST_TS,
                    "ts: %" PRId64 " is %" PRId64 " ms behind the stream (limit %" PRId64
                    " ms, events.max_past_ms)",
                    ts_ms, watermark_ms - ts_ms, max_past_ms);
    return RC_EV_OK;
}

/* What a field accepts: ids take strings or non-negative integers, attributes
 * strings or any integer, text fields strings only. */
enum kind { K_ID, K_ATTR, K_TEXT };

static const char *expected(enum kind k)
{
    switch (k) {
    case K_ID:
        return "expected string or non-negative integer";
    case K_ATTR:
        return "expected string or integer";
    default:
        return "expected string";
    }
}

/* Copies one string-or-integer field into dst (cap = max bytes + 1) and *len.
 * `v` is borrowed from the parsed tree; NULL means absent. */
static enum rc_event_reason get_str(json_t *v, const char *name, enum kind k, int required,
                                    char *dst, size_t cap, uint8_t *len, char *errbuf,
                                    size_t errlen)
{
    if (!v || json_is_null(v)) {
        if (required)
            return fail(errbuf, errlen, RC_EV_MISSING_FIELD, "%s: required field missing", name);
        return RC_EV_OK;
    }
    if (json_is_integer(v) && k != K_TEXT) {
        json_int_t i = json_integer_value(v);
        if (k == K_ID && i < 0)
            return fail(errbuf, errlen, RC_EV_BAD_VALUE, "%s: negative integer id", name);
        int n = snprintf(dst, cap, "%" JSON_INTEGER_FORMAT, i);
        *len = (uint8_t)n; /* at most 20 digits + sign, always fits */
        return RC_EV_OK;
    }
    if (!json_is_string(v))
        return fail(errbuf, errlen, RC_EV_WRONG_TYPE, "%s: %s", name, expected(k));
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n >= cap)
        return fail(errbuf, errlen, RC_EV_OVERSIZED, "%s: %zu bytes, limit %zu", name, n, cap - 1);
    if (memchr(s, '\0', n))
        return fail(errbuf, errlen, RC_EV_BAD_VALUE, "%s: contains a NUL character", name);
    if (n == 0 && k != K_TEXT)
        return fail(errbuf, errlen, RC_EV_BAD_VALUE, "%s: empty string", name);
    memcpy(dst, s, n);
    dst[n] = '\0';
    *len = (uint8_t)n;
    return RC_EV_OK;
}

static enum rc_event_reason get_ts(json_t *v, int64_t *ts, char *errbuf, size_t errlen)
{
    /* 2^53: beyond it a JSON real no longer holds every integer exactly. */
    const double max_exact = 9007199254740992.0;

    if (!v || json_is_null(v))
        return fail(errbuf, errlen, RC_EV_MISSING_FIELD, "ts: required field missing");
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            return fail(errbuf, errlen, RC_EV_BAD_VALUE, "ts: negative milliseconds");
        *ts = (int64_t)json_integer_value(v);
        return RC_EV_OK;
    }
    if (!json_is_real(v))
        return fail(errbuf, errlen, RC_EV_WRONG_TYPE, "ts: expected integer milliseconds");
    double d = json_real_value(v);
    if (d < 0)
        return fail(errbuf, errlen, RC_EV_BAD_VALUE, "ts: negative milliseconds");
    if (d != floor(d) || d > max_exact)
        return fail(errbuf, errlen, RC_EV_BAD_VALUE, "ts: expected integer milliseconds, got %.17g",
                    d);
    *ts = (int64_t)d;
    return RC_EV_OK;
}

static enum rc_event_reason get_tags(json_t *v, rc_event *ev, char *errbuf, size_t errlen)
{
    char name[32];
    size_t i;
    json_t *t;

    if (!v || json_is_null(v))
        return RC_EV_OK;
    if (!json_is_array(v))
        return fail(errbuf, errlen, RC_EV_WRONG_TYPE, "tags: expected array of strings");
    if (json_array_size(v) > RC_TAGS_MAX)
        return fail(errbuf, errlen, RC_EV_OVERSIZED, "tags: %zu tags, limit %d", json_array_size(v),
                    RC_TAGS_MAX);
    json_array_foreach(v, i, t) {
        if (json_is_string(t)) { /* the usual case, without naming the field */
            const char *s = json_string_value(t);
            size_t n = json_string_length(t);
            if (n < sizeof ev->tags[i] && !memchr(s, '\0', n)) {
                memcpy(ev->tags[i], s, n);
                ev->tags[i][n] = '\0';
                ev->tag_len[i] = (uint8_t)n;
                ev->ntags = (uint8_t)(i + 1);
                continue;
            }
        }
        snprintf(name, sizeof name, "tags[%zu]", i);
        if (!json_is_string(t)) /* no integers here: a tag is a label */
            return fail(errbuf, errlen, RC_EV_WRONG_TYPE, "%s: expected string", name);
        enum rc_event_reason r = get_str(t, name, K_TEXT, 1, ev->tags[i], sizeof ev->tags[i],
                                         &ev->tag_len[i], errbuf, errlen);
        if (r)
            return r;
        ev->ntags = (uint8_t)(i + 1);
    }
    return RC_EV_OK;
}

enum field { F_USER, F_ITEM, F_CITY, F_CATE, F_TS, F_EVENT, F_DEVICE, F_TAGS, F_COUNT };

static const struct {
    const char *name;
    size_t len;
} field_names[F_COUNT] = {
    [F_USER] = {"user_id", 7},  [F_ITEM] = {"item_id", 7}, [F_CITY] = {"city_id", 7},
    [F_CATE] = {"cate_id", 7},  [F_TS] = {"ts", 2},        [F_EVENT] = {"event", 5},
    [F_DEVICE] = {"device", 6}, [F_TAGS] = {"tags", 4},
};

/* The schema's fields of o in f[] (NULL when absent), in one walk over the
 * keys instead of a hash lookup per field. Keys are unique (the parser
 * rejects duplicates) and may hold NUL bytes, hence the lengths. */
static void fields_of(json_t *o, json_t *f[F_COUNT])
{
    for (int i = 0; i < F_COUNT; i++)
        f[i] = NULL;
    for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
        const char *k = json_object_iter_key(it);
        size_t kl = json_object_iter_key_len(it);
        int i;
        switch (kl) { /* length and first byte pick the one candidate */
        case 7:
            i = k[0] == 'u'                  ? F_USER
                : k[0] == 'i'                ? F_ITEM
                : k[0] == 'c' && k[1] == 'i' ? F_CITY
                                             : F_CATE;
            break;
        case 2:
            i = F_TS;
            break;
        case 5:
            i = F_EVENT;
            break;
        case 6:
            i = F_DEVICE;
            break;
        case 4:
            i = F_TAGS;
            break;
        default:
            continue;
        }
        if (memcmp(k, field_names[i].name, kl) == 0)
            f[i] = json_object_iter_value(it);
    }
}

static enum rc_event_reason decode_obj(json_t *o, rc_event *ev, char *errbuf, size_t errlen)
{
    enum rc_event_reason r;
    json_t *f[F_COUNT];

    fields_of(o, f);
    if ((r = get_str(f[F_USER], "user_id", K_ID, 1, ev->user, sizeof ev->user, &ev->user_len,
                     errbuf, errlen)) ||
        (r = get_str(f[F_ITEM], "item_id", K_ID, 1, ev->item, sizeof ev->item, &ev->item_len,
                     errbuf, errlen)) ||
        (r = get_str(f[F_CITY], "city_id", K_ATTR, 1, ev->city, sizeof ev->city, &ev->city_len,
                     errbuf, errlen)) ||
        (r = get_str(f[F_CATE], "cate_id", K_ATTR, 1, ev->cate, sizeof ev->cate, &ev->cate_len,
                     errbuf, errlen)) ||
        (r = get_ts(f[F_TS], &ev->ts_ms, errbuf, errlen)) ||
        (r = get_str(f[F_EVENT], "event", K_TEXT, 0, ev->type, sizeof ev->type, &ev->type_len,
                     errbuf, errlen)) ||
        (r = get_str(f[F_DEVICE], "device", K_TEXT, 0, ev->device, sizeof ev->device,
                     &ev->device_len, errbuf, errlen)) ||
        (r = get_tags(f[F_TAGS], ev, errbuf, errlen)))
        return r;
    if (ev->type_len == 0) {
        memcpy(ev->type, "click", 6);
        ev->type_len = 5;
    }
    return RC_EV_OK;
}

enum rc_event_reason rc_event_decode(const char *buf, size_t len, rc_event *ev, char *errbuf,
                                     size_t errlen)
{
    json_error_t jerr;
    json_t *root;
    enum rc_event_reason r;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!ev || (!buf && len))
        return fail(errbuf, errlen, RC_EV_BAD_JSON, "event: no input");
    /* Checked before parsing so a huge message costs nothing. */
    if (len > RC_EVENT_MAX)
        return fail(errbuf, errlen, RC_EV_TOO_LARGE, "event: %zu bytes, limit %d", len,
                    RC_EVENT_MAX);
    int ar = arena_begin();
    /* Without an error struct: filling one costs ~100 bytes of stores per
     * call; a refused message is parsed again below for its text. */
    root = json_loadb(buf ? buf : "", len, LOAD_FLAGS, NULL);
    if (!root) {
        arena_end(ar, NULL);
        if (!errbuf || !errlen)
            return RC_EV_BAD_JSON;
        json_t *again = json_loadb(buf ? buf : "", len, LOAD_FLAGS, &jerr);
        json_decref(again); /* NULL: the same input fails the same way */
        return fail(errbuf, errlen, RC_EV_BAD_JSON, "%d:%d: %s", jerr.line, jerr.column, jerr.text);
    }
    if (!json_is_object(root)) {
        arena_end(ar, root);
        return fail(errbuf, errlen, RC_EV_NOT_OBJECT, "event: expected a JSON object");
    }
    ev->user_len = ev->item_len = ev->city_len = ev->cate_len = 0;
    ev->type_len = ev->device_len = ev->ntags = 0;
    ev->type[0] = ev->device[0] = '\0';
    r = decode_obj(root, ev, errbuf, errlen);
    arena_end(ar, root);
    return r;
}

/* Bounded writer: counts every byte, stores only those that fit. */
struct out {
    char *p;
    size_t cap, len;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len < o->cap) {
        size_t k = o->cap - o->len < n ? o->cap - o->len : n;
        memcpy(o->p + o->len, s, k);
    }
    o->len += n;
}

/* A JSON string literal; invalid UTF-8 becomes U+FFFD so the output always parses. */
static void put_str(struct out *o, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    char esc[8];

    put(o, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t l;
        if (u[i] == '"' || u[i] == '\\') {
            esc[0] = '\\', esc[1] = (char)u[i];
            put(o, esc, 2);
            i++;
        } else if (u[i] < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", u[i]);
            put(o, esc, 6);
            i++;
        } else if ((l = rc_utf8_seq(u + i, n - i)) == 0) {
            put(o, "\\ufffd", 6);
            i++;
        } else {
            put(o, s + i, l);
            i += l;
        }
    }
    put(o, "\"", 1);
}

static void put_field(struct out *o, const char *key, const char *s, size_t n)
{
    put(o, ",\"", 2);
    put(o, key, strlen(key));
    put(o, "\":", 2);
    put_str(o, s, n);
}

size_t rc_event_encode(const rc_event *ev, char *buf, size_t cap)
{
    struct out o = {buf, cap, 0};
    char num[32];

    if (!ev)
        return 0;
    put(&o, "{\"user_id\":", 11);
    put_str(&o, ev->user, ev->user_len);
    put_field(&o, "item_id", ev->item, ev->item_len);
    put_field(&o, "city_id", ev->city, ev->city_len);
    put_field(&o, "cate_id", ev->cate, ev->cate_len);
    int n = snprintf(num, sizeof num, ",\"ts\":%" PRId64, ev->ts_ms);
    put(&o, num, (size_t)n);
    if (ev->type_len)
        put_field(&o, "event", ev->type, ev->type_len);
    if (ev->device_len)
        put_field(&o, "device", ev->device, ev->device_len);
    if (ev->ntags) {
        put(&o, ",\"tags\":[", 9);
        for (unsigned i = 0; i < ev->ntags && i < RC_TAGS_MAX; i++) {
            if (i)
                put(&o, ",", 1);
            put_str(&o, ev->tags[i], ev->tag_len[i]);
        }
        put(&o, "]", 1);
    }
    put(&o, "}", 1);
    /* NUL-terminate when there is room, as a convenience; not counted. */
    if (o.len < cap)
        buf[o.len] = '\0';
    return o.len;
}
