/* Structured logs: one record per line on stderr, logfmt by default
 *   ts=2026-11-25T15:33:00.123Z level=info mod=consumer msg="assigned" partitions=4
 * or one JSON object per line (rc_log_set_json)
 * {"ts":"2026-11-25T15:33:00.123Z","level":"info","mod":"consumer","msg":"assigned","partitions":4}
 *
 * Every line is valid whatever the values hold: a value with a space, a quote,
 * '=', a control byte or non-ASCII text is quoted and escaped (logfmt: \" \\
 * \n \r \t \u00XX; invalid UTF-8 becomes \ufffd; JSON the same inside strings).
 * A line is at most RC_LOG_LINE_MAX bytes: past that the value being written
 * is cut between two characters (never inside an escape), ends with
 * RC_LOG_CUT_MARK inside its quotes, the fields after it are left out and a
 * last field truncated=N says how many bytes of the record were not written.
 *
 * When stderr is the systemd journal (JOURNAL_STREAM names stderr's device
 * and inode) each line starts with the sd-daemon priority prefix: <7> debug,
 * <6> info, <4> warn, <3> error.
 *
 * Thread-safe: a line is built on the caller's stack (or heap past 4 KiB) and
 * written under a process-wide mutex, so lines of concurrent threads never
 * interleave, long ones included. */
#ifndef RECALLD_LOG_H
#define RECALLD_LOG_H

/* Bound of one line, prefix and newline included; under journald's default
 * LineMax (48K), which would otherwise split a line into two records. */
#define RC_LOG_LINE_MAX 32768
/* Written at the end of a value that was cut. */
#define RC_LOG_CUT_MARK "...(truncated)"

enum rc_log_level { RC_LOG_DEBUG = 0, RC_LOG_INFO, RC_LOG_WARN, RC_LOG_ERROR, RC_LOG_OFF };

/* Level below which records are dropped (default INFO; env RECALLD_LOG_LEVEL). */
void rc_log_set_level(enum rc_log_level lvl);
/* Parses "debug|info|warn|error|off"; returns -1 if unknown. */
int rc_log_level_parse(const char *s);
/* Output format: 0 logfmt (default), 1 JSON lines. */
void rc_log_set_json(int json);

/* Checks again whether stderr is the journal (JOURNAL_STREAM against fstat of
 * fd 2). Done by the first record anyway; call it after redirecting stderr.
 * Returns 1 when priority prefixes are on. */
int rc_log_detect_journal(void);

/* mod: module name; msg: short message; kvfmt: printf-style tail of
 * space-separated fields "key=%s n=%d" (may be NULL). Each field's value runs
 * from '=' to the next space of the format text, whatever the conversions
 * expand to; a value written in quotes in the format (key=\"%s\") stays
 * quoted. In JSON, a value that is one integer or float conversion is a
 * number, a value that is a whole JSON object or array is embedded as such,
 * every other value is a string; keys that repeat one of ts, level, mod,
 * msg, truncated or an earlier key get a suffix _2, _3... */
void rc_log(enum rc_log_level lvl, const char *mod, const char *msg, const char *kvfmt, ...)
    __attribute__((format(printf, 4, 5)));

#define rc_log_debug(mod, msg, ...) rc_log(RC_LOG_DEBUG, mod, msg, __VA_ARGS__)
#define rc_log_info(mod, msg, ...)  rc_log(RC_LOG_INFO, mod, msg, __VA_ARGS__)
#define rc_log_warn(mod, msg, ...)  rc_log(RC_LOG_WARN, mod, msg, __VA_ARGS__)
#define rc_log_error(mod, msg, ...) rc_log(RC_LOG_ERROR, mod, msg, __VA_ARGS__)

#endif
