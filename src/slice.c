/* slice — see slice.h. glibc 2.36 has no wrapper for sched_setattr(2), so
 * the call goes through syscall(2) with the kernel's struct layout. */
#include "recalld/slice.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct kattr { /* include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER1 */
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period; /* ns; runtime is the fair class's slice */
    uint32_t util_min, util_max;
};

static int get_attr(struct kattr *a)
{
#ifdef SYS_sched_getattr
    memset(a, 0, sizeof *a);
    return (int)syscall(SYS_sched_getattr, 0, a, (unsigned)sizeof *a, 0u);
#else
    (void)a;
    errno = ENOSYS;
    return -1;
#endif
}

int64_t rc_slice_get(void)
{
    struct kattr a;
    if (get_attr(&a))
        return -1;
    return (int64_t)(a.runtime / 1000);
}

int64_t rc_slice_set(uint32_t us)
{
#ifdef SYS_sched_setattr
    struct kattr a;
    if (get_attr(&a))
        return -1;
    /* Keep the policy, nice value and flags; only the slice changes. The
     * utilisation clamps are left alone (flags without UTIL_CLAMP). */
    a.size = (uint32_t)sizeof a;
    a.flags = 0;
    a.runtime = (uint64_t)us * 1000u;
    if (syscall(SYS_sched_setattr, 0, &a, 0u))
        return -1;
    return rc_slice_get();
#else
    (void)us;
    errno = ENOSYS;
    return -1;
#endif
}
