/* Preloaded into a child process: every host lookup and every internet connection is written to
   $NETWORK_GUARD_LOG and fails, whether Python's socket module or a native library makes it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static void record(const char *call, const char *target) {
    const char *log = getenv("NETWORK_GUARD_LOG");
    if (!log) return;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return;
    dprintf(fd, "%s %s\n", call, target ? target : "(null)");
    close(fd);
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    (void)service; (void)hints; (void)res;
    record("getaddrinfo", node);
    return EAI_FAIL;
}

struct hostent *gethostbyname(const char *name) {
    record("gethostbyname", name);
    h_errno = NO_RECOVERY;
    return NULL;
}

struct hostent *gethostbyname2(const char *name, int af) {
    (void)af;
    record("gethostbyname2", name);
    h_errno = NO_RECOVERY;
    return NULL;
}

int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t len, struct hostent **result, int *err) {
    (void)ret; (void)buf; (void)len;
    record("gethostbyname_r", name);
    *result = NULL;
    *err = NO_RECOVERY;
    return ENOENT;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        char text[INET6_ADDRSTRLEN] = "?";
        const void *where = addr->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)addr)->sin_addr
                                                       : (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr;
        inet_ntop(addr->sa_family, where, text, sizeof text);
        record("connect", text);
        errno = ENETUNREACH;
        return -1;
    }
    if (!real_connect) real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    return real_connect(fd, addr, len);  /* local (Unix) sockets are not the network */
}
