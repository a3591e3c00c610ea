// Linux calls that Swift's Glibc module hides behind _GNU_SOURCE, and epoll without its
// packed struct. Declared here, defined in shims.c (compiled with _GNU_SOURCE). On other
// systems only the reactor thread flag at the end.
#ifndef CSOCKETS_H
#define CSOCKETS_H

#ifdef __linux__
#include <poll.h>
#include <sys/socket.h>
#include <stdint.h>
#include <time.h>

/// accept4(2).
int csockets_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
/// ppoll(2) with no signal mask change.
int csockets_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout);
/// eventfd(2), close-on-exec and non-blocking: the descriptor close() writes to wake waiters.
int csockets_eventfd(void);

/// The CPUs this thread may run on (sched_getaffinity(2), CPU_COUNT): what `taskset` or a
/// container's cpuset allows, not every CPU online. 0 if it cannot be read.
int csockets_allowed_cpus(void);

/// epoll_create1(2) with EPOLL_CLOEXEC.
int csockets_epoll_create(void);
/// epoll_ctl(2) ADD (or MOD when `modify`) of `fd` for `events`, tagged with `data`.
int csockets_epoll_ctl(int epfd, int fd, int modify, uint32_t events, uint64_t data);
/// epoll_ctl(2) DEL.
int csockets_epoll_del(int epfd, int fd);
/// epoll_pwait2(2) (nanosecond timeout; NULL waits forever), falling back to epoll_wait(2)
/// with the timeout rounded up to whole milliseconds where the kernel lacks it. The events
/// are copied out into two plain arrays: `struct epoll_event` is packed on x86_64.
int csockets_epoll_wait(int epfd, uint64_t *data, uint32_t *events, int max, const struct timespec *timeout);

/// Epoll event bits, as plain integers (the Glibc module imports them as enum cases).
static const uint32_t CSOCKETS_EPOLLIN = 0x001, CSOCKETS_EPOLLOUT = 0x004, CSOCKETS_EPOLLERR = 0x008,
    CSOCKETS_EPOLLHUP = 0x010, CSOCKETS_EPOLLRDHUP = 0x2000, CSOCKETS_EPOLLET = 0x80000000u;
#endif

/// On every system: the reactor whose thread this is (an unretained pointer; reactors live as
/// long as the process), NULL on any other thread. A thread-local read, inlined into Swift.
extern __thread void *csockets_reactor;
static inline void *csockets_current_reactor(void) { return csockets_reactor; }
static inline void csockets_set_current_reactor(void *reactor) { csockets_reactor = reactor; }

#endif
