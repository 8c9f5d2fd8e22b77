/*
 * addr.h - socket addresses: parsing a numeric IP with a port, and reading the port and
 * the numeric name back. Shared by streams, listeners and the server; knows no Lua.
 */
#ifndef LOOM_ADDR_H
#define LOOM_ADDR_H

#include <stddef.h>
#include <uv.h>

/* Fills ss from a numeric IPv4 or IPv6 address; 0 or a libuv error. */
int loom_addr_parse(const char *ip, int port, struct sockaddr_storage *ss);
/* The port of an IPv4 or IPv6 address, in host order. */
int loom_addr_port(const struct sockaddr_storage *ss);
/* The bound port of a TCP handle (0 when unknown). */
int loom_addr_local_port(const uv_tcp_t *tcp);
/* The peer's numeric address and port; 0, or a libuv error (ip is then "?"). */
int loom_addr_peer(const uv_tcp_t *tcp, char *ip, size_t iplen, int *port, int *v6);

#endif
