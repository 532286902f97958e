/* ThreadSanitizer builds only (-DRC_SANITIZE=thread, see CMakeLists.txt): the
 * C11 <threads.h> functions, forwarded to their pthread equivalents.
 *
 * Why: librdkafka creates its threads with thrd_create and synchronises with
 * mtx_* / cnd_* (glibc >= 2.34 has them). GCC 12's TSan runtime intercepts
 * pthread_* but none of those, and glibc implements them with internal calls
 * TSan cannot see: a thread made by thrd_create has no TSan state (its first
 * malloc crashes: SEGV in the TSan allocator, e.g. in librdkafka's mock
 * cluster thread), and librdkafka's locks would be invisible (false races on
 * every buffer it hands over). Defined in the executable, these interpose
 * glibc's for the shared libraries, and the pthread_* calls they make go
 * through TSan's interceptors. Never compiled into a normal build. */
#if defined(__SANITIZE_THREAD__)

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread_mutex_t");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread_cond_t");
_Static_assert(sizeof(thrd_t) == sizeof(pthread_t), "thrd_t is a pthread_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");

static int thrd_rc(int err)
{
    switch (err) {
    case 0:
        return thrd_success;
    case ETIMEDOUT:
        return thrd_timedout;
    case EBUSY:
        return thrd_busy;
    case ENOMEM:
        return thrd_nomem;
    default:
        return thrd_error;
    }
}

struct start {
    thrd_start_t fn;
    void *arg;
};

static void *trampoline(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    struct start *s = malloc(sizeof *s);
    if (!s)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    pthread_t t;
    int err = pthread_create(&t, NULL, trampoline, s);
    if (err) {
        free(s);
        return thrd_rc(err);
    }
    *thr = (thrd_t)t;
    return thrd_success;
}

int thrd_join(thrd_t thr, int *res)
{
    void *ret;
    int err = pthread_join((pthread_t)thr, &ret);
    if (!err && res)
        *res = (int)(intptr_t)ret;
    return thrd_rc(err);
}

int thrd_detach(thrd_t thr) { return thrd_rc(pthread_detach((pthread_t)thr)); }

void thrd_exit(int res) { pthread_exit((void *)(intptr_t)res); }

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a))
        return thrd_error;
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int err = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return thrd_rc(err);
}

int mtx_lock(mtx_t *m) { return thrd_rc(pthread_mutex_lock((pthread_mutex_t *)m)); }

int mtx_trylock(mtx_t *m) { return thrd_rc(pthread_mutex_trylock((pthread_mutex_t *)m)); }

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    return thrd_rc(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int mtx_unlock(mtx_t *m) { return thrd_rc(pthread_mutex_unlock((pthread_mutex_t *)m)); }

void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }

int cnd_init(cnd_t *c) { return thrd_rc(pthread_cond_init((pthread_cond_t *)c, NULL)); }

int cnd_signal(cnd_t *c) { return thrd_rc(pthread_cond_signal((pthread_cond_t *)c)); }

int cnd_broadcast(cnd_t *c) { return thrd_rc(pthread_cond_broadcast((pthread_cond_t *)c)); }

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return thrd_rc(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    return thrd_rc(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }

void call_once(once_flag *flag, void (*fn)(void)) { pthread_once((pthread_once_t *)flag, fn); }

#else
/* Not a ThreadSanitizer build: nothing here (ISO C wants a declaration). */
typedef int rc_tsan_c11threads_unused;
#endif
