// Linux calls that Swift's Glibc module hides behind _GNU_SOURCE. Declared here, defined
// in shims.c (compiled with _GNU_SOURCE); empty on other systems.
#ifndef CSOCKETS_H
#define CSOCKETS_H

#ifdef __linux__
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

/// accept4(2).
int csockets_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
/// ppoll(2) with no signal mask change.
int csockets_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout);
/// eventfd(2), close-on-exec and non-blocking: the descriptor close() writes to wake waiters.
int csockets_eventfd(void);
#endif

#endif
