/* An experiment, not a peer: what an event loop could give at best at 8 connections
 * (BENCHMARKS.md, "An event loop does not beat blocking threads here").
 * A hello FastCGI responder with N threads (argv[1], default 2), each with its own
 * epoll set over the listening socket on fd 0 (EPOLLEXCLUSIVE) and the connections it
 * accepted; it answers every ready connection before it sleeps again. No lingering
 * close, no request parsing beyond the record headers, no error handling worth the
 * name: an upper bound, not something to deploy.
 * Build: gcc -O2 -o epoll-loop bench/experiments/epoll-loop.c -lpthread
 * Run:   fcgi-shim bench --spawn ./epoll-loop 2 -- -c 8 -d 3 --warmup 1 --keep-conn --json
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
struct conn { int fd; int len; int keep; unsigned char buf[16384]; };
static const char body[] = "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello World\n";
static int handle(struct conn *c) { // returns 0 keep, -1 close
  for (;;) {
    int n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    if (n == 0) return -1;
    if (n < 0) { if (errno == EAGAIN) return 0; return -1; }
    c->len += n;
    int pos = 0;
    for (;;) {
      if (c->len - pos < 8) break;
      unsigned char *h = c->buf + pos;
      int cl = (h[4] << 8) | h[5], pl = h[6];
      if (c->len - pos < 8 + cl + pl) break;
      int type = h[1], id = (h[2] << 8) | h[3];
      if (type == 9) { unsigned char r[8+18] = {1,10,0,0,0,18,0,0, 15,1}; memcpy(r+10, "FCGI_MPXS_CONNS0", 16); write(c->fd, r, 26); }
      if (type == 1) c->keep = h[8 + 2] & 1;
      if (type == 5 && cl == 0) {
        unsigned char out[256]; int o = 0; int bl = sizeof body - 1;
        unsigned char hd[8] = {1, 6, id >> 8, id, bl >> 8, bl, 0, 0};
        memcpy(out + o, hd, 8); o += 8; memcpy(out + o, body, bl); o += bl;
        unsigned char e[8] = {1, 6, id >> 8, id, 0, 0, 0, 0}; memcpy(out + o, e, 8); o += 8;
        unsigned char er[16] = {1, 3, id >> 8, id, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}; memcpy(out + o, er, 16); o += 16;
        write(c->fd, out, o);
        if (!c->keep) return -1;
      }
      pos += 8 + cl + pl;
    }
    memmove(c->buf, c->buf + pos, c->len - pos); c->len -= pos;
  }
}
static void *loop(void *arg) {
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!c) {
        int fd = accept4(0, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) continue;
        c = calloc(1, sizeof *c); c->fd = fd;
        struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
        // try right away (data usually there)
      }
      if (handle(c) < 0) { close(c->fd); free(c); }
    }
  }
  return NULL;
}
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2;
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  pthread_t t[64];
  for (int i = 1; i < n; i++) pthread_create(&t[i], NULL, loop, NULL);
  loop(NULL);
}
