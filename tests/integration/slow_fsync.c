/* A slow disk for a process under test, through LD_PRELOAD: while the file that
 * FERRY_TEST_SLOW_FSYNC names exists, each fsync and fdatasync first sleeps for the
 * milliseconds it holds. Built by the test that uses it (tests/integration/relay.rs). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void slow_down(void) {
    const char *flag = getenv("FERRY_TEST_SLOW_FSYNC");
    FILE *file = flag ? fopen(flag, "r") : NULL;
    if (!file) {
        return;
    }
    long ms = 0;
    if (fscanf(file, "%ld", &ms) != 1) {
        ms = 0;
    }
    fclose(file);
    struct timespec delay = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&delay, NULL);
}

/* `name(fd)`, slowed down first, then the C library's own. */
#define SLOWED(name)                                              \
    int name(int fd) {                                            \
        static int (*real)(int);                                  \
        if (!real) {                                              \
            real = (int (*)(int))dlsym(RTLD_NEXT, #name);         \
        }                                                         \
        slow_down();                                              \
        return real(fd);                                          \
    }

SLOWED(fsync)
SLOWED(fdatasync)
