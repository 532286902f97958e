/* Fuzz target: the click-log reader (rc_clicklog_load) over an in-memory
 * file, plus rc_clicklog_parse_iso. Byte 0 picks the options (format, header,
 * time unit, which columns are mapped), byte 1 the separator; the rest is the
 * file. Properties: never a crash; on success every record's ids are inside
 * their dictionaries, sessions tile the records in time order, and the row
 * counters add up (lines = n + skipped = n + sum by reason). */
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "recalld/clicklog.h"
#include "recalld/dict.h"

static const char *const seps[] = {NULL, ",", "\t", ";", "::", "|", "tab", " "};

static void opts_from(uint8_t b0, uint8_t b1, rc_clicklog_opts *o)
{
    static const enum rc_clicklog_format fmt[] = {RC_LOG_AUTO, RC_LOG_JSONL, RC_LOG_CSV,
                                                  RC_LOG_TSV};
    memset(o, 0, sizeof *o);
    o->format = fmt[b0 & 3];
    o->header = (b0 >> 2) & 1;
    o->time_unit = (enum rc_time_unit)(((b0 >> 3) & 3) % 3);
    o->sep = seps[b1 & 7];
    o->quiet = 1;
    o->gap_ms = (b1 >> 3) & 1 ? 1000 : 0;
    if (b0 & 0x20) { /* explicit columns, by index or by header name */
        int names = o->header && (b1 & 0x10);
        o->col_user = names ? "user" : "0";
        o->col_item = names ? "item" : "1";
        o->col_time = names ? "time" : "2";
        if (b0 & 0x40) {
            o->col_city = names ? "city" : "3";
            o->col_cate = names ? "cate" : "4";
        }
        if (b0 & 0x80)
            o->col_session = names ? "session" : "5";
        if (b1 & 0x20)
            o->col_time_offset = names ? "offset" : "6";
    }
}

static void check_log(const rc_clicklog *log)
{
    uint64_t by_reason = 0;
    FUZZ_CHECK(log->lines == log->n + log->skipped);
    for (int r = 0; r < RC_LOG_R_COUNT; r++)
        by_reason += log->skipped_by_reason[r];
    FUZZ_CHECK(by_reason == log->skipped);
    uint32_t nu = rc_dict_size(log->users), ni = rc_dict_size(log->items);
    for (size_t i = 0; i < log->n; i++) {
        const rc_click_rec *c = &log->recs[i];
        FUZZ_CHECK(c->user < nu && c->item < ni && c->session < log->nsessions);
        FUZZ_CHECK(!log->cities || c->city < rc_dict_size(log->cities) || c->city == 0);
        FUZZ_CHECK(!log->cates || c->cate < rc_dict_size(log->cates) || c->cate == 0);
    }
    if (!log->n)
        return;
    FUZZ_CHECK(log->sess_off && log->sess_off[0] == 0 && log->sess_off[log->nsessions] == log->n);
    for (uint32_t s = 0; s < log->nsessions; s++) {
        FUZZ_CHECK(log->sess_off[s] < log->sess_off[s + 1]);
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++) {
            FUZZ_CHECK(log->recs[i].session == s);
            FUZZ_CHECK(i == log->sess_off[s] || log->recs[i - 1].ts_ms <= log->recs[i].ts_ms);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[256] = "";
    rc_clicklog_opts o;
    rc_clicklog *log = NULL;
    int64_t ms;
    if (size < 2 || size > (1 << 20))
        return 0;
    /* the ISO parser alone, on the same bytes */
    if (rc_clicklog_parse_iso((const char *)data + 2, size - 2 < 40 ? size - 2 : 40, &ms) == 0)
        /* four-digit years, offsets under a day */
        FUZZ_CHECK(ms >= -62167219200000LL - 86400000LL && ms <= 253402300800000LL + 86400000LL);
    opts_from(data[0], data[1], &o);
    int fd = fuzz_memfile(data + 2, size - 2, path, sizeof path);
    FUZZ_CHECK(fd >= 0);
    o.path = path;
    int rc = rc_clicklog_load(&o, &log, err, sizeof err);
    close(fd);
    if (rc != 0) {
        FUZZ_CHECK(log == NULL && err[0] != '\0');
        return 0;
    }
    check_log(log);
    rc_clicklog_free(log);
    return 0;
}
