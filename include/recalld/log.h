/* Structured logs: one logfmt line per record on stderr
 *   ts=2026-11-25T15:33:00.123Z level=info mod=consumer msg="assigned" partitions=4
 * Thread-safe (a line is written with one write(2)). */
#ifndef RECALLD_LOG_H
#define RECALLD_LOG_H

enum rc_log_level { RC_LOG_DEBUG = 0, RC_LOG_INFO, RC_LOG_WARN, RC_LOG_ERROR, RC_LOG_OFF };

/* Level below which records are dropped (default INFO; env RECALLD_LOG_LEVEL). */
void rc_log_set_level(enum rc_log_level lvl);
/* Parses "debug|info|warn|error|off"; returns -1 if unknown. */
int rc_log_level_parse(const char *s);
/* Output format: 0 logfmt (default), 1 JSON lines. */
void rc_log_set_json(int json);

/* mod: module name; msg: short message (quoted); kv: printf-style "key=value ..."
 * tail (may be NULL). */
void rc_log(enum rc_log_level lvl, const char *mod, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 4, 5)));

#define rc_log_debug(mod, msg, ...) rc_log(RC_LOG_DEBUG, mod, msg, __VA_ARGS__)
#define rc_log_info(mod, msg, ...) rc_log(RC_LOG_INFO, mod, msg, __VA_ARGS__)
#define rc_log_warn(mod, msg, ...) rc_log(RC_LOG_WARN, mod, msg, __VA_ARGS__)
#define rc_log_error(mod, msg, ...) rc_log(RC_LOG_ERROR, mod, msg, __VA_ARGS__)

#endif
