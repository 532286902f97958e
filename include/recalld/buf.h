/* buf — growable byte buffer with JSON helpers, for replies and encoders.
 * Not thread-safe (one owner). A buffer may carry a cap: appends beyond it set
 * `overflow` and are dropped, so a caller can bound memory and report it. */
#ifndef RECALLD_BUF_H
#define RECALLD_BUF_H

#include <stddef.h>

typedef struct rc_buf {
    char *data; /* NUL-terminated when len > 0 */
    size_t len, cap;
    size_t limit; /* 0 = unbounded */
    int overflow; /* an append was refused (limit or allocation failure) */
} rc_buf;

void rc_buf_init(rc_buf *b, size_t limit);
void rc_buf_free(rc_buf *b);
void rc_buf_reset(rc_buf *b);                          /* len = 0, keeps memory, clears overflow */
int rc_buf_append(rc_buf *b, const void *p, size_t n); /* 0 or RC_ENOMEM */
/* Room for n bytes in all (len included) without growing later, the new
 * memory written once so that its pages are resident. 0 or RC_ENOMEM. */
int rc_buf_reserve_touched(rc_buf *b, size_t n);
int rc_buf_puts(rc_buf *b, const char *s);
int rc_buf_printf(rc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s[0..n) as a JSON string literal with quotes, escaping as RFC 8259
 * requires; invalid UTF-8 bytes are replaced by U+FFFD. */
int rc_buf_json_str(rc_buf *b, const char *s, size_t n);
/* Length of the valid UTF-8 sequence starting at s (n >= 1 bytes left), or 0
 * when it is invalid (overlong, surrogate, > U+10FFFF, truncated). */
size_t rc_utf8_seq(const unsigned char *s, size_t n);
/* Appends a float in JSON (finite; NaN/inf become null), shortest of %.6g. */
int rc_buf_json_num(rc_buf *b, double v);

#endif
