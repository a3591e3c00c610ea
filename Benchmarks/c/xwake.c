// The floor under A7's cross-thread figures: how long one thread takes to wake another on
// this machine. Thread B sleeps in epoll_wait on an eventfd (as a reactor with nothing to do
// does); thread A takes the time and writes the eventfd; B takes the time when epoll_wait
// returns. ROUNDS rounds, 200 µs apart (B is asleep each time). Prints one JSON line with
// p50/p99 (µs). Also measured when B is busy rather than asleep: it polls with a zero
// timeout in a loop (as a reactor busy with other work sees a new job at its next turn).
//   xwake [ROUNDS]
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int efd, ep, rounds, busy;
static _Atomic int64_t seen_at;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *sleeper(void *arg) {
    (void)arg;
    struct epoll_event ev;
    for (int i = 0; i < rounds; i++) {
        while (epoll_wait(ep, &ev, 1, busy ? 0 : -1) < 1) {}
        int64_t t = now_ns();
        uint64_t v;
        if (read(efd, &v, sizeof v) != sizeof v) abort();
        atomic_store(&seen_at, t);
    }
    return NULL;
}

static int cmp(const void *a, const void *b) { int64_t x = *(int64_t *)a, y = *(int64_t *)b; return (x > y) - (x < y); }

static void measure(const char *label) {
    int64_t *lat = malloc(rounds * sizeof *lat);
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    for (int i = 0; i < rounds; i++) {
        usleep(200);
        atomic_store(&seen_at, 0);
        int64_t start = now_ns();
        uint64_t one = 1;
        if (write(efd, &one, sizeof one) != sizeof one) abort();
        while (atomic_load(&seen_at) == 0) {}
        lat[i] = atomic_load(&seen_at) - start;
    }
    pthread_join(t, NULL);
    qsort(lat, rounds, sizeof *lat, cmp);
    printf("\"%s_p50_us\": %.2f, \"%s_p99_us\": %.2f", label, lat[rounds / 2] / 1e3, label, lat[rounds * 99 / 100] / 1e3);
    free(lat);
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atoi(argv[1]) : 2000;
    if (rounds < 100) { fprintf(stderr, "xwake: ROUNDS must be at least 100\n"); return 64; }
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = efd };
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    printf("{");
    busy = 0;
    measure("asleep");
    printf(", ");
    busy = 1;
    measure("busy");
    printf("}\n");
    return 0;
}
