#include "recalld/buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"

void rc_buf_init(rc_buf *b, size_t limit)
{
    memset(b, 0, sizeof *b);
    b->limit = limit;
}

void rc_buf_free(rc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void rc_buf_reset(rc_buf *b)
{
    b->len = 0;
    b->overflow = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int reserve(rc_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (b->limit && need > b->limit + 1) {
        b->overflow = 1;
        return RC_E2BIG;
    }
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->overflow = 1;
        return RC_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int rc_buf_reserve_touched(rc_buf *b, size_t n)
{
    size_t old = b->cap;
    int rc = n > b->len ? reserve(b, n - b->len) : 0;
    if (!rc && b->cap > old)
        memset(b->data + old, 0, b->cap - old);
    return rc;
}

int rc_buf_append(rc_buf *b, const void *p, size_t n)
{
    int rc = reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int rc_buf_puts(rc_buf *b, const char *s) { return rc_buf_append(b, s, strlen(s)); }

int rc_buf_printf(rc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return RC_EINVAL;
    if ((size_t)n < sizeof tmp)
        return rc_buf_append(b, tmp, (size_t)n);
    int rc = reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

size_t rc_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        len = 2, min = 0x80, c &= 0x1f;
    else if ((c & 0xf0) == 0xe0)
        len = 3, min = 0x800, c &= 0x0f;
    else if ((c & 0xf8) == 0xf0)
        len = 4, min = 0x10000, c &= 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return len;
}

int rc_buf_json_str(rc_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    int rc = rc_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n && !rc;) {
        unsigned char c = u[i];
        size_t l;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = rc_buf_append(b, e, 2);
            i++;
        } else if (c < 0x20) {
            rc = rc_buf_printf(b, "\\u%04x", c);
            i++;
        } else if ((l = rc_utf8_seq(u + i, n - i)) == 0) {
            rc = rc_buf_append(b, "\xef\xbf\xbd", 3);
            i++;
        } else {
            rc = rc_buf_append(b, u + i, l);
            i += l;
        }
    }
    return rc ? rc : rc_buf_append(b, "\"", 1);
}

int rc_buf_json_num(rc_buf *b, double v)
{
    if (!isfinite(v))
        return rc_buf_puts(b, "null");
    return rc_buf_printf(b, "%.6g", v);
}
