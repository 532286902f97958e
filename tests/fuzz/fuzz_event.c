/* Fuzz target: the Kafka event decoder (rc_event_decode). Properties: never a
 * crash; an error always names a reason with text; a valid event encodes to
 * JSON that decodes to the same event (rc_event_encode round trip). */
#include <string.h>

#include "fuzz.h"
#include "recalld/event.h"

static int same_str(const char *a, uint8_t alen, const char *b, uint8_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0 && a[alen] == '\0' && b[blen] == '\0';
}

static int same_event(const rc_event *a, const rc_event *b)
{
    if (!same_str(a->user, a->user_len, b->user, b->user_len) ||
        !same_str(a->item, a->item_len, b->item, b->item_len) ||
        !same_str(a->city, a->city_len, b->city, b->city_len) ||
        !same_str(a->cate, a->cate_len, b->cate, b->cate_len) ||
        !same_str(a->type, a->type_len, b->type, b->type_len) ||
        !same_str(a->device, a->device_len, b->device, b->device_len) || a->ts_ms != b->ts_ms ||
        a->ntags != b->ntags)
        return 0;
    for (unsigned i = 0; i < a->ntags; i++)
        if (!same_str(a->tags[i], a->tag_len[i], b->tags[i], b->tag_len[i]))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static rc_event ev, ev2;
    static char enc[RC_EVENT_MAX];
    char err[128];
    enum rc_event_reason r = rc_event_decode((const char *)data, size, &ev, err, sizeof err);
    FUZZ_CHECK((unsigned)r < RC_EV_REASON_COUNT);
    FUZZ_CHECK(strlen(err) < sizeof err);
    if (r != RC_EV_OK) {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(strcmp(rc_event_reason_name(r), "unknown") != 0);
        return 0;
    }
    FUZZ_CHECK(ev.user_len >= 1 && ev.user_len <= RC_ID_MAX);
    FUZZ_CHECK(ev.item_len >= 1 && ev.item_len <= RC_ID_MAX);
    FUZZ_CHECK(ev.city_len >= 1 && ev.city_len <= RC_ATTR_MAX);
    FUZZ_CHECK(ev.ntags <= RC_TAGS_MAX && ev.ts_ms >= 0);
    size_t n = rc_event_encode(&ev, enc, sizeof enc);
    FUZZ_CHECK(n < sizeof enc); /* bounded fields: the encoding always fits */
    FUZZ_CHECK(rc_event_decode(enc, n, &ev2, err, sizeof err) == RC_EV_OK);
    FUZZ_CHECK(same_event(&ev, &ev2));
    /* the encoder never writes past a short buffer and reports the same length */
    char small[16];
    FUZZ_CHECK(rc_event_encode(&ev, small, sizeof small) == n);
    return 0;
}
