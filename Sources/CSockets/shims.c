#ifdef __linux__
#define _GNU_SOURCE
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/socket.h>
#include "CSockets.h"

int csockets_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int csockets_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout) {
    return ppoll(fds, n, timeout, NULL);
}

int csockets_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

int csockets_allowed_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

int csockets_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int csockets_epoll_ctl(int epfd, int fd, int modify, uint32_t events, uint64_t data) {
    struct epoll_event event = { .events = events, .data = { .u64 = data } };
    return epoll_ctl(epfd, modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event);
}

int csockets_epoll_del(int epfd, int fd) {
    struct epoll_event unused = { 0 };  /* kernels before 2.6.9 want one */
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &unused);
}

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441
#endif

/* 0: not known yet; 1: epoll_pwait2 works; -1: it is not there, use epoll_wait. Relaxed
   atomics: every thread that races to find out finds the same answer. */
static int have_pwait2 = 0;

/* The errors that mean epoll_pwait2 is not available: ENOSYS, a kernel before 5.11; EPERM, a
   seccomp profile that does not know the call (older container runtimes); EINVAL, some
   emulations. */
static int unsupported(int e) { return e == ENOSYS || e == EPERM || e == EINVAL; }

static int epoll_wait_ms(int epfd, struct epoll_event *buffer, int max, const struct timespec *timeout) {
    int ms = -1;
    if (timeout) {
        long long whole = (long long)timeout->tv_sec * 1000 + (timeout->tv_nsec + 999999) / 1000000;
        ms = whole > 0x7fffffff ? 0x7fffffff : (int)whole;
    }
    return epoll_wait(epfd, buffer, max, ms);
}

int csockets_epoll_wait(int epfd, uint64_t *data, uint32_t *events, int max, const struct timespec *timeout) {
    struct epoll_event buffer[256];
    if (max > 256) max = 256;
    int n;
    int known = __atomic_load_n(&have_pwait2, __ATOMIC_RELAXED);
    if (known < 0) {
        n = epoll_wait_ms(epfd, buffer, max, timeout);
    } else {
        /* The raw system call: glibc's wrapper is missing before 2.35. */
        n = (int)syscall(SYS_epoll_pwait2, epfd, buffer, max, timeout, NULL, 0);
        if (known == 0) {
            if (n < 0 && unsupported(errno)) {
                __atomic_store_n(&have_pwait2, -1, __ATOMIC_RELAXED);
                n = epoll_wait_ms(epfd, buffer, max, timeout);
            } else if (n >= 0) {
                __atomic_store_n(&have_pwait2, 1, __ATOMIC_RELAXED);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        data[i] = buffer[i].data.u64;
        events[i] = buffer[i].events;
    }
    return n;
}
#endif

#include "CSockets.h"
__thread void *csockets_reactor = 0;
