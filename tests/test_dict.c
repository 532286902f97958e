#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "recalld/common.h"
#include "recalld/dict.h"
#include "test.h"

static size_t key_of(char *buf, size_t cap, uint32_t i)
{
    return (size_t)snprintf(buf, cap, "item-%u-%x", i, i * 2654435761u);
}

TEST(dict_intern_find_roundtrip)
{
    rc_dict *d;
    ASSERT_EQ(rc_dict_create(0, &d, NULL, 0), 0);
    char buf[64];
    const char *first = NULL;
    for (uint32_t i = 0; i < 50000; i++) {
        size_t n = key_of(buf, sizeof(buf), i);
        uint32_t id;
        int created;
        ASSERT_EQ(rc_dict_intern(d, buf, n, &id, &created), 0);
        ASSERT_EQ(id, i);
        ASSERT_EQ(created, 1);
        if (i == 0)
            first = rc_dict_str(d, 0, NULL);
    }
    /* Pointers handed out before the table grew stay valid and unchanged. */
    ASSERT(first == rc_dict_str(d, 0, NULL));
    ASSERT_STREQ(first, "item-0-0");
    for (uint32_t i = 0; i < 50000; i += 7) {
        size_t n = key_of(buf, sizeof(buf), i), len;
        uint32_t id;
        int created;
        ASSERT_EQ(rc_dict_find(d, buf, n, &id), 0);
        ASSERT_EQ(id, i);
        ASSERT_EQ(rc_dict_intern(d, buf, n, &id, &created), 0);
        ASSERT_EQ(created, 0);
        ASSERT_EQ(id, i);
        ASSERT_STREQ(rc_dict_str(d, i, &len), buf);
        ASSERT_EQ(len, n);
    }
    uint32_t id;
    ASSERT_EQ(rc_dict_find(d, "nope", 4, &id), RC_ENOENT);
    ASSERT(rc_dict_str(d, 50000, NULL) == NULL);
    ASSERT_EQ(rc_dict_size(d), 50000);
    ASSERT_GT(rc_dict_bytes(d), 50000 * 10);
    rc_dict_destroy(d);
    rc_dict_destroy(NULL);
}

TEST(dict_binary_and_prefix_keys_are_distinct)
{
    rc_dict *d;
    ASSERT_EQ(rc_dict_create(0, &d, NULL, 0), 0);
    uint32_t a, b, c, e;
    ASSERT_EQ(rc_dict_intern(d, "ab\0c", 4, &a, NULL), 0);
    ASSERT_EQ(rc_dict_intern(d, "ab", 2, &b, NULL), 0);
    ASSERT_EQ(rc_dict_intern(d, "", 0, &e, NULL), 0);
    ASSERT_EQ(rc_dict_intern(d, "ab\0d", 4, &c, NULL), 0);
    ASSERT_NE(a, b);
    ASSERT_NE(a, c);
    ASSERT_NE(b, e);
    size_t len;
    const char *s = rc_dict_str(d, a, &len);
    ASSERT_EQ(len, 4);
    ASSERT(memcmp(s, "ab\0c", 5) == 0);
    ASSERT_STREQ(rc_dict_str(d, e, &len), "");
    ASSERT_EQ(len, 0);
    /* A long string goes to its own arena block. */
    char *big = malloc(60000);
    memset(big, 'x', 60000);
    uint32_t idb;
    ASSERT_EQ(rc_dict_intern(d, big, 60000, &idb, NULL), 0);
    ASSERT_EQ(rc_dict_find(d, big, 60000, &idb), 0);
    ASSERT_EQ(rc_dict_find(d, big, 59999, &idb), RC_ENOENT);
    free(big);
    rc_dict_destroy(d);
}

TEST(dict_max_ids_and_too_long)
{
    rc_dict *d;
    ASSERT_EQ(rc_dict_create(3, &d, NULL, 0), 0);
    uint32_t id;
    ASSERT_EQ(rc_dict_intern(d, "a", 1, &id, NULL), 0);
    ASSERT_EQ(rc_dict_intern(d, "b", 1, &id, NULL), 0);
    ASSERT_EQ(rc_dict_intern(d, "c", 1, &id, NULL), 0);
    ASSERT_EQ(rc_dict_intern(d, "d", 1, &id, NULL), RC_ENOMEM);
    ASSERT_EQ(rc_dict_intern(d, "b", 1, &id, NULL), 0);
    ASSERT_EQ(id, 1);
    static char huge[65536];
    ASSERT_EQ(rc_dict_intern(d, huge, sizeof(huge), &id, NULL), RC_E2BIG);
    ASSERT_EQ(rc_dict_intern(NULL, "a", 1, &id, NULL), RC_EINVAL);
    ASSERT_EQ(rc_dict_size(d), 3);
    rc_dict_destroy(d);
}

struct reader_arg {
    rc_dict *d;
    atomic_int stop;
    atomic_long checks;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    rc_rng rng;
    rc_rng_seed(&rng, 7);
    char buf[64];
    while (!atomic_load(&a->stop)) {
        uint32_t n = rc_dict_size(a->d);
        if (!n)
            continue;
        uint32_t i = rc_rng_below(&rng, n), id;
        size_t len, klen = key_of(buf, sizeof(buf), i);
        const char *s = rc_dict_str(a->d, i, &len);
        if (!s || len != klen || memcmp(s, buf, len) != 0)
            RC__FAIL("str of %u is wrong", i);
        /* The writer publishes the size before the hash slot (so a reader
         * that finds a slot can read the entry at once): only the newest id
         * may be briefly unfindable; every older one must be found. */
        int rc = rc_dict_find(a->d, buf, klen, &id);
        if ((rc == 0 && id != i) || (rc != 0 && i + 1 < n))
            RC__FAIL("find of %u (size %u) failed", i, n);
        atomic_fetch_add(&a->checks, 1);
    }
    return NULL;
}

TEST(dict_reader_thread_while_writer_interns)
{
    struct reader_arg a = {0};
    ASSERT_EQ(rc_dict_create(0, &a.d, NULL, 0), 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, reader, &a), 0);
    char buf[64];
    long checks = 0;
    for (uint32_t i = 0; i < 300000; i++) {
        uint32_t id;
        size_t n = key_of(buf, sizeof(buf), i);
        ASSERT_EQ(rc_dict_intern(a.d, buf, n, &id, NULL), 0);
        ASSERT_EQ(id, i);
        /* Every 30000 keys the writer waits for 100 more checks: the readers
         * run while the dictionary grows however the threads are scheduled. */
        if (i % 30000 == 29999) {
            while (atomic_load(&a.checks) < checks + 100)
                sched_yield();
            checks = atomic_load(&a.checks);
        }
    }
    atomic_store(&a.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ASSERT_GE(atomic_load(&a.checks), 1000);
    rc_dict_destroy(a.d);
}
