#ifdef __linux__
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
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
#endif
