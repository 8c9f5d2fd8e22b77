/*
 * addr.c - socket addresses: numeric parsing, ports and names (see addr.h).
 */
#include <stdio.h>
#include <string.h>
#include "addr.h"

int loom_addr_parse(const char *ip, int port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (strchr(ip, ':'))
        return uv_ip6_addr(ip, port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(ip, port, (struct sockaddr_in *)ss);
}

int loom_addr_port(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

int loom_addr_local_port(const uv_tcp_t *tcp) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    return loom_addr_port(&ss);
}

int loom_addr_peer(const uv_tcp_t *tcp, char *ip, size_t iplen, int *port, int *v6) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    int rc = uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len);
    *port = 0;
    *v6 = 0;
    if (rc != 0) {
        snprintf(ip, iplen, "?");
        return rc;
    }
    uv_ip_name((struct sockaddr *)&ss, ip, iplen);
    *port = loom_addr_port(&ss);
    *v6 = ss.ss_family == AF_INET6;
    return 0;
}
