/* recalld-broker: librdkafka's mock cluster alone in its own process, so that
 * the log outlives a recalld that is killed or restarted.
 *
 *   recalld-broker [--brokers N] [--partitions N] [--topic NAME]...
 *
 * The first line of stdout is the bootstrap address (flushed); logs go to
 * stderr. Runs until SIGTERM or SIGINT, then exits 0. The mock keeps only about
 * 5 MiB per partition (librdkafka 2.0.2) and drops older data silently: the
 * default of --partitions (recalld's kafka.embedded_partitions default, see
 * include/recalld/config.h) leaves room for ~2.3M generated clicks.
 *
 * Fault injection: each line on stdin is a command (rc_consumer_mock_command:
 * down ID|all, up ID|all, leader TOPIC PART ID, errors API COUNT ERROR,
 * topic-error TOPIC ERROR, create TOPIC PARTS, rtt ID MS), answered by one line
 * "ok" or "error: ..." on stdout. End of stdin is not a stop request. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/cli.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/consumer.h"
#include "recalld/log.h"
#include "recalld/mock_broker.h"

#define MAX_TOPICS 64
#define STR_(x)    #x
#define STR(x)     STR_(x)

/* --topic is repeatable: collected here. */
struct topics {
    const char *names[MAX_TOPICS];
    size_t n;
};

static int on_topic(void *ud, const rc_cli_opt *o, const char *v, char *eb, size_t el)
{
    struct topics *t = ud;
    if (!*v)
        return rc_err(eb, el, RC_EINVAL, "expected a topic name");
    if (t->n == MAX_TOPICS)
        return rc_err(eb, el, RC_EINVAL, "at most %d topics", MAX_TOPICS);
    t->names[t->n++] = v;
    return 0;
}

/* Reads fault commands from stdin until end of file (signals stay blocked in
 * this thread: only sigwait in main receives them). */
static void *commands_main(void *arg)
{
    rc_consumer_mock *m = arg;
    char line[512], reply[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        rc_consumer_mock_command(m, line, reply, sizeof reply);
        printf("%s\n", reply);
        fflush(stdout);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct topics t = {.n = 0};
    int brokers = 1, partitions = RC_CONF_EMBEDDED_PARTITIONS, argi, rc;
    const rc_cli_opt opts[] = {
        {"brokers", 0, RC_CLI_INT, &brokers, "N", "brokers in the mock cluster (1)", 1, 32, 0},
        {"partitions", 0, RC_CLI_INT, &partitions, "N",
         "partitions per topic (" STR(RC_CONF_EMBEDDED_PARTITIONS) ")", 1, 10000, 0},
        {"topic", 0, RC_CLI_CALL, NULL, "NAME",
         "a topic to create; repeatable (default: clicks clicks.dlq)", 0, 0, 0},
    };
    rc_cli_spec s = {.prog = "recalld-broker",
                     .synopsis = "[options]",
                     .about = "librdkafka's mock cluster in a process of its own; prints the "
                              "bootstrap address\non the first line of stdout, takes fault "
                              "commands on stdin.",
                     .epilog = "The mock keeps about 5 MiB per partition and silently drops "
                               "older data:\nuse enough partitions, key messages by user, "
                               "consume while producing.\n",
                     .opts = opts,
                     .nopts = RC_ARRAY_LEN(opts),
                     .fn = on_topic,
                     .ud = &t};
    if ((rc = rc_cli_args(&s, argc, argv, &argi)) >= 0)
        return rc;
    const char **topics = t.names;
    size_t ntopics = t.n;
    if (ntopics == 0) {
        topics[ntopics++] = "clicks";
        topics[ntopics++] = "clicks.dlq";
    }

    /* Blocked before librdkafka starts its threads, so they inherit the mask and
     * only sigwait below receives the signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    char err[256];
    rc_consumer_mock *m = NULL;
    if (rc_consumer_mock_start(brokers, partitions, topics, ntopics, &m, err, sizeof err) != 0) {
        fprintf(stderr, "recalld-broker: %s\n", err);
        return 1;
    }
    printf("%s\n", rc_consumer_mock_bootstrap(m));
    fflush(stdout);
    pthread_t cmd;
    if (pthread_create(&cmd, NULL, commands_main, m) == 0)
        pthread_detach(cmd);
    rc_log_info("broker", "mock cluster up", "bootstrap=%s brokers=%d partitions=%d topics=%zu",
                rc_consumer_mock_bootstrap(m), brokers, partitions, ntopics);

    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    rc_log_info("broker", "stopping", "signal=%d", sig);
    rc_consumer_mock_destroy(m);
    return 0;
}
