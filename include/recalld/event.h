/* event — decoding and validation of click events (JSON, one object per message).
 *
 * Schema (DESIGN.md): user_id, item_id (string of 1..128 bytes, or a non-negative
 * integer, normalised to its decimal string), city_id, cate_id (string of 1..64
 * bytes or integer), ts (epoch milliseconds, integer >= 0; a float with no
 * fraction is accepted), optional event (string, default "click"), device
 * (string <= 64), tags (array of <= 16 strings of <= 64 bytes). Unknown fields
 * are ignored. Decoding copies every string into the rc_event: it owns no
 * pointer into the input buffer. Thread-safe (no shared state). */
#ifndef RECALLD_EVENT_H
#define RECALLD_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define RC_ID_MAX    128   /* user_id, item_id bytes */
#define RC_ATTR_MAX  64    /* city_id, cate_id, device, event, each tag bytes */
#define RC_TAGS_MAX  16    /* tags per event */
#define RC_EVENT_MAX 65536 /* bytes per message; larger ones are invalid */

/* Why an event was refused. RC_EV_OK = 0 means valid. Names by rc_event_reason_name. */
enum rc_event_reason {
    RC_EV_OK = 0,
    RC_EV_TOO_LARGE,     /* message over RC_EVENT_MAX bytes */
    RC_EV_BAD_JSON,      /* not parseable JSON */
    RC_EV_NOT_OBJECT,    /* top level is not an object */
    RC_EV_MISSING_FIELD, /* a required field is absent or null */
    RC_EV_WRONG_TYPE,    /* a field has the wrong JSON type */
    RC_EV_BAD_VALUE,     /* right type, invalid value (negative ts, empty id, NUL byte) */
    RC_EV_OVERSIZED,     /* a string value over its byte limit, or too many tags */
    /* Not decoding failures: the trainer checks event time against the stream
     * (rc_event_check_time) and refuses with these. */
    RC_EV_FUTURE_TS, /* ts beyond events.max_future_ms of the watermark and wall clock */
    RC_EV_PAST_TS,   /* ts more than events.max_past_ms before the watermark */
    RC_EV_REASON_COUNT
};

typedef struct rc_event {
    char user[RC_ID_MAX + 1];
    char item[RC_ID_MAX + 1];
    char city[RC_ATTR_MAX + 1];
    char cate[RC_ATTR_MAX + 1];
    char type[RC_ATTR_MAX + 1];   /* "click" when absent */
    char device[RC_ATTR_MAX + 1]; /* "" when absent */
    char tags[RC_TAGS_MAX][RC_ATTR_MAX + 1];
    uint8_t user_len, item_len, city_len, cate_len, type_len, device_len;
    uint8_t ntags;
    uint8_t tag_len[RC_TAGS_MAX];
    int64_t ts_ms;
} rc_event;

/* Decodes buf[0..len) (no NUL needed) into *ev. Returns RC_EV_OK or a reason; on
 * failure, when errbuf is given, writes a one-line human text naming the field
 * ("ts: expected integer milliseconds") or jansson's "line:col: text". */
enum rc_event_reason rc_event_decode(const char *buf, size_t len, rc_event *ev, char *errbuf,
                                     size_t errlen);

/* Event-time window. watermark_ms: newest event time the stream has applied
 * (0 = none yet). Returns RC_EV_FUTURE_TS when ts_ms is later than
 * max(watermark_ms, wall clock) + max_future_ms, RC_EV_PAST_TS when it is
 * earlier than watermark_ms - max_past_ms, else RC_EV_OK; a limit of 0 turns
 * its side off. The wall clock is read only for a ts past the watermark's
 * window. On refusal errbuf (NULL ok) gets "ts: ... ms ahead of ..." text.
 * Thread-safe. */
enum rc_event_reason rc_event_check_time(int64_t ts_ms, int64_t watermark_ms, int64_t max_future_ms,
                                         int64_t max_past_ms, char *errbuf, size_t errlen);

/* Static snake_case name of a reason ("bad_json", "missing_field", ...). */
const char *rc_event_reason_name(enum rc_event_reason r);

/* Encodes ev as one JSON object (no newline) into buf. Returns the length, or the
 * length it would need (> cap) when buf is too small; never writes past cap. */
size_t rc_event_encode(const rc_event *ev, char *buf, size_t cap);

#endif
