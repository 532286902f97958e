/* cpus — which cores the background threads and the request path run on
 * (pipeline.background_cpus).
 *
 * A spec is "" (no pinning: every thread may run on any allowed core),
 * "auto" (the process's allowed cores split in two: the background threads
 * on the upper half, ceil(n/2) cores, the rest on the lower half; no pinning
 * with fewer than 2 allowed cores) or a list of core numbers "1", "2-3",
 * "0,4-5" for the background threads, the request path getting the other
 * allowed cores. Pinning keeps the trainer's memory traffic and slices off
 * the cores that answer requests (docs/BENCHMARKS.md "Pinned background
 * threads"). Any thread; no global state. */
#ifndef RECALLD_CPUS_H
#define RECALLD_CPUS_H

#include <sched.h>
#include <stddef.h>

/* Syntax only: 0, or RC_EINVAL with why in eb. */
int rc_cpus_check(const char *spec, char *eb, size_t el);

/* The plan for this process (its allowed cores, sched_getaffinity):
 * returns 1 with *bg and *rest filled when the threads are to be pinned, 0
 * when not ("", "auto" with one core, or a list that leaves no core for
 * the request path or names none it may use: then why is in eb), or
 * RC_EINVAL for a bad spec. */
int rc_cpus_plan(const char *spec, cpu_set_t *bg, cpu_set_t *rest, char *eb, size_t el);

/* "0,2-3" for a set (at most cap bytes). */
void rc_cpus_format(const cpu_set_t *s, char *out, size_t cap);

#endif
