/* slice — the scheduler time slice a thread asks for (Linux EEVDF).
 *
 * Since Linux 6.12 a SCHED_OTHER thread may ask for its own slice
 * (sched_setattr's sched_runtime, 100 µs to 100 ms). A thread with a shorter
 * slice than the one running gets an earlier deadline and, when it wakes,
 * preempts it at once (the kernel's PREEMPT_SHORT) instead of waiting for the
 * running thread's slice (~1.4 ms on a 2-core machine) to end. recalld's
 * request path (the loop thread, the request workers) asks for a short slice
 * so that a request that arrives while the trainer, the decoder or another
 * process holds every core starts within tens of microseconds; the weight
 * (nice value), and so each thread's share of the CPU, is unchanged.
 *
 * Slices are per thread and inherited by the threads a thread creates.
 * On older kernels the field is ignored: the functions then report that the
 * slice was not applied. Unprivileged; any thread, for itself only. */
#ifndef RECALLD_SLICE_H
#define RECALLD_SLICE_H

#include <stdint.h>

/* Asks for a slice of us microseconds for the calling thread (0 = the
 * kernel's default). Returns the slice in effect afterwards in µs (what the
 * kernel reports: equal to us when applied), or -1 when the kernel refused
 * or does not report slices (errno set, ENOSYS/EINVAL/EPERM). */
int64_t rc_slice_set(uint32_t us);

/* The calling thread's slice in µs, or -1 (errno) when the kernel does not
 * report one (before 6.12 it reports 0 for SCHED_OTHER: returned as 0). */
int64_t rc_slice_get(void);

#endif
