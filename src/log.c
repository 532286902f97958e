#include "recalld/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Relaxed atomics: SIGHUP changes them on the loop thread while any thread logs. */
static int g_level = -1;
static int g_json;

void rc_log_set_level(enum rc_log_level lvl) { __atomic_store_n(&g_level, (int)lvl, __ATOMIC_RELAXED); }
void rc_log_set_json(int json) { __atomic_store_n(&g_json, json, __ATOMIC_RELAXED); }

int rc_log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static int level(void)
{
    int g = __atomic_load_n(&g_level, __ATOMIC_RELAXED);
    if (g < 0) {
        int l = rc_log_level_parse(getenv("RECALLD_LOG_LEVEL"));
        g = l >= 0 ? l : RC_LOG_INFO;
        __atomic_store_n(&g_level, g, __ATOMIC_RELAXED);
    }
    return g;
}

/* Appends s to buf, escaping quotes, backslashes and control bytes. */
static size_t put_escaped(char *buf, size_t pos, size_t cap, const char *s)
{
    for (; *s && pos + 2 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c < 0x20) {
            buf[pos++] = ' ';
        } else {
            buf[pos++] = (char)c;
        }
    }
    return pos;
}

void rc_log(enum rc_log_level lvl, const char *mod, const char *msg, const char *kvfmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if ((int)lvl < level() || lvl >= RC_LOG_OFF)
        return;
    char buf[2048], tbuf[40], kv[1400] = "";
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof tbuf - n, ".%03ldZ", ts.tv_nsec / 1000000);
    if (kvfmt) {
        va_list ap;
        va_start(ap, kvfmt);
        vsnprintf(kv, sizeof kv, kvfmt, ap);
        va_end(ap);
    }
    size_t pos;
    if (__atomic_load_n(&g_json, __ATOMIC_RELAXED)) {
        pos = (size_t)snprintf(buf, sizeof buf, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":\"%s\",\"msg\":\"",
                               tbuf, names[lvl], mod);
        pos = put_escaped(buf, pos, sizeof buf - 16, msg);
        pos += (size_t)snprintf(buf + pos, sizeof buf - pos, "\",\"kv\":\"");
        pos = put_escaped(buf, pos, sizeof buf - 8, kv);
        pos += (size_t)snprintf(buf + pos, sizeof buf - pos, "\"}\n");
    } else {
        pos = (size_t)snprintf(buf, sizeof buf, "ts=%s level=%s mod=%s msg=\"", tbuf, names[lvl], mod);
        pos = put_escaped(buf, pos, sizeof buf - 8, msg);
        pos += (size_t)snprintf(buf + pos, sizeof buf - pos, "\"%s%s\n", kv[0] ? " " : "", kv);
    }
    if (pos >= sizeof buf)
        pos = sizeof buf - 1, buf[pos - 1] = '\n';
    ssize_t w = write(2, buf, pos);
    (void)w;
}
