/* The floor for the pgbench benchmark (benches/pgbench.sh): the cheapest
 * TCP proxy there can be. One thread, level-triggered epoll, one server
 * connection per client, each readable event copied with one recv and one
 * send. No parsing, no pooling, no auth, blocking sends (fine for pgbench -S,
 * whose replies are small). Every proxy that passes each message through user
 * space with a recv and a send does at least this much kernel work, so its
 * TPS bounds theirs on the machine that runs it: PgBouncer's, pgmlcat's.
 *
 * Usage: floor_proxy LISTEN_PORT SERVER      (listens on 127.0.0.1)
 * SERVER is a port on 127.0.0.1, or the path of a Unix socket. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXFD 65536
static int peer[MAXFD];

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void drop(int ep, int fd) {
  int p = peer[fd];
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  peer[fd] = -1;
  if (p >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, p, NULL);
    close(p);
    peer[p] = -1;
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: floor_proxy LISTEN_PORT SERVER_PORT|SOCKET_PATH\n");
    return 2;
  }
  int lport = atoi(argv[1]);
  int unix_server = argv[2][0] == '/';
  for (int i = 0; i < MAXFD; i++) peer[i] = -1;
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lport)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) {
    perror("listen");
    return 1;
  }
  struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, "127.0.0.1", &s.sin_addr);
  struct sockaddr_un u = {.sun_family = AF_UNIX};
  if (unix_server) {
    if (strlen(argv[2]) >= sizeof u.sun_path) {
      fprintf(stderr, "socket path too long\n");
      return 2;
    }
    strcpy(u.sun_path, argv[2]);
  }
  struct sockaddr *server = unix_server ? (struct sockaddr *)&u : (struct sockaddr *)&s;
  socklen_t server_len = unix_server ? sizeof u : sizeof s;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  static char buf[65536];
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c = accept(ls, NULL, NULL);
        if (c < 0 || c >= MAXFD) continue;
        int sv = socket(unix_server ? AF_UNIX : AF_INET, SOCK_STREAM, 0);
        if (sv < 0 || sv >= MAXFD || connect(sv, server, server_len)) {
          close(c);
          if (sv >= 0) close(sv);
          continue;
        }
        nodelay(c);
        if (!unix_server) nodelay(sv);
        peer[c] = sv;
        peer[sv] = c;
        struct epoll_event e1 = {.events = EPOLLIN, .data.fd = c};
        struct epoll_event e2 = {.events = EPOLLIN, .data.fd = sv};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1);
        epoll_ctl(ep, EPOLL_CTL_ADD, sv, &e2);
        continue;
      }
      if (peer[fd] < 0) continue;
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r <= 0) {
        drop(ep, fd);
        continue;
      }
      /* Blocking-style send is fine for request/response traffic. */
      ssize_t off = 0;
      while (off < r) {
        ssize_t w = send(peer[fd], buf + off, r - off, 0);
        if (w < 0) {
          if (errno == EINTR) continue;
          drop(ep, fd);
          break;
        }
        off += w;
      }
    }
  }
}
