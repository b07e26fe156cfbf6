/* The agent's host-side unit tests: CHECK counts every check and reports a failed one with its
 * place, without stopping, so one run lists every failure. One test program per file: the
 * counters are that program's. */
#ifndef SMOLVM_AGENT_TEST_CHECK_H
#define SMOLVM_AGENT_TEST_CHECK_H

#include <stdio.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

#endif
