/* udp_ceiling: the udp backend's "Batching" data plane in C, to measure the design's ceiling
 * without Python (issue #8). A study tool run by compare.py (which compiles it with cc -O2),
 * not part of overlayctl or of CI. See README.md next to this file.
 *
 * Same data plane as agent/backends/udp/forward.py + batch.py + offload.py:
 *  - TUN IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, TUNSETOFFLOAD CSUM|TSO4|TSO6|TSO_ECN (64 KiB
 *    TSO super-packets, each preceded by a 10-byte virtio_net_hdr);
 *  - UDP socket, 8 MiB SO_{RCV,SND}BUFFORCE, UDP_GRO on, UDP_SEGMENT = segment as a socket
 *    option (sendto() needs no cmsg);
 *  - framing: every datagram = 2-byte header (0xF | last | id(3) , index) + chunk of
 *    segment-2 bytes; the TUN is readv()ed straight into the chunk slots of one of 8
 *    preallocated trains (headers written once), the train goes out in one sendto (two if
 *    longer than 65507); single-datagram packets <= 128 bytes (ACKs) wait in a small train
 *    sent with one sendmsg + UDP_SEGMENT cmsg;
 *  - receive: recvmsg (UDP_GRO cmsg = segment size) into one buffer, writev() of the chunks
 *    (headers skipped) per completed super-packet; a super-packet split over reads is
 *    copied aside and completed (one peer only: this is a two-host benchmark);
 *  - one thread, poll() on both fds, each ready fd drained (<= 256 steps or EAGAIN), then the
 *    small train flushed.
 * Extra knobs (off by default) for experiments: --napi (IFF_NAPI), --napi-frags,
 * --busy-poll US (SO_BUSY_POLL), --epoll, --spin (never sleep in poll: timeout 0),
 * --no-ack-trains (send small datagrams at once instead of in a GSO train), --connect
 * (connect() the socket to the only peer and send() super-packets: route cached).
 *
 * Bounded: exits after --duration seconds (default 600) or on SIGTERM/SIGINT, printing counters.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define MAGIC 0xF0
#define LASTBIT 0x08
#define IDBITS 0x07
#define HDR 2
#define MAXSEG 64
#define MAX_TRAIN 65507
#define ROT 8
#define LARGEST (65536 + 10)
#define VNET 10
#define SMALL_MAX 128
#define SMALL_TRAIN 64
#define BATCH 256
#define MAX_ROUTES 16

enum { EMPTY = 0, MOVED = 1, FAILED = -1 };

static volatile sig_atomic_t stopping;
static void on_signal(int s) { (void)s; stopping = 1; }

static int no_small, connected; /* --connect: connect() to the only peer, send() */ /* --no-ack-trains: every small datagram goes out at once */
static int tun_fd, sock_fd, seg, chunk, slots_needed, capacity, split;
static uint32_t route_net[MAX_ROUTES], route_mask = 0xFFFFFF00u;
static struct sockaddr_in route_hop[MAX_ROUTES];
static int nroutes;

static struct {
    unsigned long long tx_pkts, tx_bytes, tx_send, tx_small_trains, tx_drop, tx_reads,
        rx_reads, rx_dgrams, rx_pkts, rx_bytes, rx_err, rx_reasm, polls, wakeups;
} c;

/* ---- TUN -> UDP ------------------------------------------------------------------------ */
static uint8_t *trains[ROT];
static struct iovec slots[ROT][MAXSEG];
static int lastpos[ROT], cur;

static uint8_t small_buf[SMALL_TRAIN * SMALL_MAX];
static int small_len, small_count;
static struct sockaddr_in *small_hop;

static void small_flush(void) {
    int count = small_count;
    small_count = 0;
    if (!count || !small_hop) return;
    if (count == 1) {
        if (sendto(sock_fd, small_buf, small_len, 0, (void *)small_hop, sizeof *small_hop) < 0)
            c.tx_drop++;
        c.tx_send++;
        return;
    }
    char ctl[CMSG_SPACE(sizeof(uint16_t))] = {0};
    struct iovec iov = {small_buf, (size_t)small_len * count};
    struct msghdr m = {.msg_name = small_hop, .msg_namelen = sizeof *small_hop, .msg_iov = &iov,
                       .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t gso = small_len;
    memcpy(CMSG_DATA(cm), &gso, sizeof gso);
    if (sendmsg(sock_fd, &m, 0) < 0) c.tx_drop += count;
    c.tx_send++;
    c.tx_small_trains++;
}

static void small_add(struct sockaddr_in *hop, const uint8_t *d, int len) {
    if (small_count && (hop != small_hop || len != small_len)) small_flush();
    memcpy(small_buf + small_count * len, d, len);
    small_hop = hop, small_len = len, small_count++;
    if (small_count == SMALL_TRAIN) small_flush();
}

static int tx_step(void) {
    uint8_t *buf = trains[cur];
    ssize_t n = readv(tun_fd, slots[cur], slots_needed);
    c.tx_reads++;
    if (n < 0) {
        if (errno == EAGAIN) { small_flush(); return EMPTY; }
        c.tx_drop++;
        return FAILED;
    }
    const int ip = HDR + VNET;
    if (n < VNET + 20 || buf[ip] >> 4 != 4 || n >= capacity) { c.tx_drop++; return MOVED; }
    uint32_t dst;
    memcpy(&dst, buf + ip + 16, 4);
    dst = ntohl(dst) & route_mask;
    struct sockaddr_in *hop = NULL;
    for (int i = 0; i < nroutes; i++)
        if (route_net[i] == dst) { hop = &route_hop[i]; break; }
    if (!hop) { c.tx_drop++; return MOVED; }
    int count = (int)((n + chunk - 1) / chunk);
    if (!count) count = 1;
    buf[lastpos[cur]] &= ~LASTBIT;
    lastpos[cur] = (count - 1) * seg;
    buf[lastpos[cur]] |= LASTBIT;
    int length = (count - 1) * seg + HDR + (int)n - (count - 1) * chunk;
    cur = (cur + 1) % ROT;
    c.tx_pkts++;
    c.tx_bytes += n - VNET;
    if (length <= SMALL_MAX && !no_small) { small_add(hop, buf, length); return MOVED; }
    small_flush();
    if (length <= MAX_TRAIN) {
        if ((connected ? send(sock_fd, buf, length, 0)
                       : sendto(sock_fd, buf, length, 0, (void *)hop, sizeof *hop)) < 0)
            c.tx_drop++;
        c.tx_send++;
    } else {
        if (sendto(sock_fd, buf, split, 0, (void *)hop, sizeof *hop) < 0) c.tx_drop++;
        if (sendto(sock_fd, buf + split, length - split, 0, (void *)hop, sizeof *hop) < 0)
            c.tx_drop++;
        c.tx_send += 2;
    }
    return MOVED;
}

/* ---- UDP -> TUN ------------------------------------------------------------------------ */
static uint8_t rx_buf[VNET + 65536 + 64];
static uint8_t reasm[LARGEST + 4096];
static int reasm_len;                 /* bytes of a super-packet carried over from earlier reads */
static struct iovec rx_iov[MAXSEG + 2];
static int rx_niov, rx_next = -1, rx_id; /* rx_next < 0: no super-packet in progress */
static const uint8_t zero_vnet[VNET];

static void rx_reset(void) { rx_niov = 0; reasm_len = 0; rx_next = -1; }

static void rx_write(void) {
    struct iovec iov[MAXSEG + 2];
    int k = 0;
    if (reasm_len) { iov[k].iov_base = reasm; iov[k].iov_len = reasm_len; k++; c.rx_reasm++; }
    memcpy(iov + k, rx_iov, rx_niov * sizeof *iov);
    k += rx_niov;
    ssize_t w = writev(tun_fd, iov, k);
    if (w < 0) c.rx_err++;
    else { c.rx_pkts++; c.rx_bytes += w - VNET; }
    rx_reset();
}

static int rx_step(void) {
    uint8_t *data = rx_buf + VNET;
    struct iovec iov = {data, 65536};
    char ctl[CMSG_SPACE(sizeof(int))];
    struct sockaddr_in from;
    struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                       .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t size = recvmsg(sock_fd, &m, 0);
    c.rx_reads++;
    if (size < 0) {
        if (errno == EAGAIN) return EMPTY;
        c.rx_err++;
        return MOVED;
    }
    int gso = (int)size;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm))
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
            int v;
            memcpy(&v, CMSG_DATA(cm), sizeof v);
            if (v) gso = v;
        }
    if (size && data[0] >> 4 == 4) { /* flannel's format: one IPv4 packet per datagram */
        for (ssize_t off = 0; off < size; off += gso) {
            struct iovec w[2] = {{(void *)zero_vnet, VNET},
                                 {data + off, (size_t)((size - off < gso) ? size - off : gso)}};
            c.rx_dgrams++;
            if (writev(tun_fd, w, 2) < 0) c.rx_err++; else c.rx_pkts++;
        }
        return MOVED;
    }
    for (ssize_t off = 0; off < size; off += gso) {
        uint8_t *p = data + off;
        int len = (int)((size - off < gso) ? size - off : gso);
        c.rx_dgrams++;
        if (len <= HDR || p[0] >> 4 != MAGIC >> 4) { c.rx_err++; continue; }
        int id = p[0] & IDBITS, last = p[0] & LASTBIT, idx = p[1];
        if (idx == 0) {
            if (rx_next >= 0) { c.rx_err += rx_next; rx_reset(); }
            rx_id = id;
        } else if (rx_next != idx || rx_id != id || rx_niov >= MAXSEG) {
            c.rx_err++;
            rx_reset();
            continue;
        }
        rx_iov[rx_niov].iov_base = p + HDR;
        rx_iov[rx_niov].iov_len = len - HDR;
        rx_niov++;
        rx_next = idx + 1;
        if (last) rx_write();
    }
    if (rx_niov) { /* unfinished: keep its bytes, the buffer is read into again */
        for (int i = 0; i < rx_niov; i++) {
            if (reasm_len + rx_iov[i].iov_len > sizeof reasm) { c.rx_err++; rx_reset(); return MOVED; }
            memcpy(reasm + reasm_len, rx_iov[i].iov_base, rx_iov[i].iov_len);
            reasm_len += rx_iov[i].iov_len;
        }
        rx_niov = 0;
    }
    return MOVED;
}

/* ---- setup ----------------------------------------------------------------------------- */
static void die(const char *what) { perror(what); exit(1); }

static int open_tun(const char *name, int extra_flags) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun");
    struct ifreq ifr = {0};
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | extra_flags;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    int le = 1;
    ioctl(fd, TUNSETVNETLE, &le); /* big-endian hosts only */
    if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) < 0)
        die("TUNSETOFFLOAD");
    return fd;
}

static void set_buf(int fd, int force, int plain, int bytes) {
    if (setsockopt(fd, SOL_SOCKET, force, &bytes, sizeof bytes) < 0)
        setsockopt(fd, SOL_SOCKET, plain, &bytes, sizeof bytes);
}

static void usage(void) {
    fprintf(stderr,
            "usage: udp_ceiling -t TUN -b BINDIP [-p PORT] -s SEGMENT -r SUBNET=IP ... "
            "[-d SECONDS] [--sockbuf BYTES] [--napi] [--napi-frags] [--busy-poll US] "
            "[--epoll] [--spin] [--no-ack-trains] [--connect] [--ready FILE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *tun = NULL, *bind_ip = NULL, *ready = NULL;
    int port = 8285, duration = 600, sockbuf = 8 << 20, tunflags = 0, busy = 0, use_epoll = 0,
        spin = 0;
    seg = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "-t")) tun = NEXT();
        else if (!strcmp(a, "-b")) bind_ip = NEXT();
        else if (!strcmp(a, "-p")) port = atoi(NEXT());
        else if (!strcmp(a, "-s")) seg = atoi(NEXT());
        else if (!strcmp(a, "-d")) duration = atoi(NEXT());
        else if (!strcmp(a, "--sockbuf")) sockbuf = atoi(NEXT());
        else if (!strcmp(a, "--napi")) tunflags |= IFF_NAPI;
        else if (!strcmp(a, "--napi-frags")) tunflags |= IFF_NAPI | IFF_NAPI_FRAGS;
        else if (!strcmp(a, "--busy-poll")) busy = atoi(NEXT());
        else if (!strcmp(a, "--epoll")) use_epoll = 1;
        else if (!strcmp(a, "--spin")) spin = 1;
        else if (!strcmp(a, "--no-ack-trains")) no_small = 1;
        else if (!strcmp(a, "--connect")) connected = 1;
        else if (!strcmp(a, "--ready")) ready = NEXT();
        else if (!strcmp(a, "-r")) {
            char spec[64], *eq;
            snprintf(spec, sizeof spec, "%s", NEXT());
            if (!(eq = strchr(spec, '=')) || nroutes == MAX_ROUTES) usage();
            *eq = 0;
            char *slash = strchr(spec, '/');
            if (slash) { *slash = 0; route_mask = slash[1] ? 0xFFFFFFFFu << (32 - atoi(slash + 1)) : 0; }
            struct in_addr net;
            if (!inet_aton(spec, &net)) usage();
            route_net[nroutes] = ntohl(net.s_addr);
            route_hop[nroutes].sin_family = AF_INET;
            route_hop[nroutes].sin_port = htons(port);
            if (!inet_aton(eq + 1, &route_hop[nroutes].sin_addr)) usage();
            nroutes++;
        } else usage();
    }
    if (!tun || !bind_ip || seg <= HDR || seg > MAX_TRAIN || !nroutes) usage();
    for (int i = 0; i < nroutes; i++) {
        route_hop[i].sin_port = htons(port);
        route_net[i] &= route_mask;
    }
    chunk = seg - HDR;
    slots_needed = LARGEST / chunk + 1;
    if (slots_needed > MAXSEG) slots_needed = MAXSEG;
    capacity = chunk * slots_needed;
    split = MAX_TRAIN / seg * seg;
    for (int r = 0; r < ROT; r++) {
        trains[r] = calloc(MAXSEG, seg);
        for (int i = 0; i < MAXSEG; i++) {
            trains[r][i * seg] = MAGIC | r;
            trains[r][i * seg + 1] = i;
        }
        for (int i = 0; i < slots_needed; i++) {
            slots[r][i].iov_base = trains[r] + i * seg + HDR;
            slots[r][i].iov_len = chunk;
        }
    }

    tun_fd = open_tun(tun, tunflags);
    sock_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sock_fd < 0) die("socket");
    set_buf(sock_fd, SO_RCVBUFFORCE, SO_RCVBUF, sockbuf);
    set_buf(sock_fd, SO_SNDBUFFORCE, SO_SNDBUF, sockbuf);
    int one = 1;
    if (setsockopt(sock_fd, SOL_UDP, UDP_GRO, &one, sizeof one) < 0) die("UDP_GRO");
    if (setsockopt(sock_fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof seg) < 0) die("UDP_SEGMENT");
    if (busy && setsockopt(sock_fd, SOL_SOCKET, SO_BUSY_POLL, &busy, sizeof busy) < 0)
        die("SO_BUSY_POLL");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (!inet_aton(bind_ip, &sa.sin_addr)) usage();
    if (bind(sock_fd, (void *)&sa, sizeof sa) < 0) die("bind");
    if (connected && (nroutes != 1 || connect(sock_fd, (void *)&route_hop[0], sizeof route_hop[0]) < 0))
        die("--connect (needs exactly one -r)");

    struct sigaction act = {.sa_handler = on_signal};
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    if (ready) { FILE *f = fopen(ready, "w"); if (f) { fputs("ready\n", f); fclose(f); } }
    fprintf(stderr, "udp_ceiling: tun %s seg %d chunk %d slots %d flags 0x%x busy %d %s\n", tun,
            seg, chunk, slots_needed, tunflags, busy, use_epoll ? "epoll" : "poll");

    int ep = -1;
    if (use_epoll) {
        ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event e1 = {.events = EPOLLIN, .data.fd = tun_fd},
                           e2 = {.events = EPOLLIN, .data.fd = sock_fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, tun_fd, &e1);
        epoll_ctl(ep, EPOLL_CTL_ADD, sock_fd, &e2);
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct pollfd pfd[2] = {{.fd = tun_fd, .events = POLLIN}, {.fd = sock_fd, .events = POLLIN}};
    while (!stopping) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= duration) break;
        int ready_fds[2], nready = 0;
        c.polls++;
        if (use_epoll) {
            struct epoll_event ev[2];
            int n = epoll_wait(ep, ev, 2, spin ? 0 : 1000);
            for (int i = 0; i < n; i++) ready_fds[nready++] = ev[i].data.fd;
        } else {
            int n = poll(pfd, 2, spin ? 0 : 1000);
            if (n > 0)
                for (int i = 0; i < 2; i++)
                    if (pfd[i].revents) ready_fds[nready++] = pfd[i].fd;
        }
        if (nready) c.wakeups++;
        for (int i = 0; i < nready; i++) {
            int (*step)(void) = ready_fds[i] == tun_fd ? tx_step : rx_step, r = MOVED;
            for (int k = 0; k < BATCH && (r = step()) == MOVED; k++) {}
            if (r == FAILED) usleep(100000);
        }
        small_flush();
    }
    fprintf(stderr,
            "udp_ceiling: tx %llu pkts %llu bytes %llu sends (%llu small trains) %llu reads %llu drops"
            " | rx %llu reads %llu dgrams %llu pkts %llu bytes %llu reassembled %llu errors"
            " | %llu polls %llu wakeups\n",
            c.tx_pkts, c.tx_bytes, c.tx_send, c.tx_small_trains, c.tx_reads, c.tx_drop,
            c.rx_reads, c.rx_dgrams, c.rx_pkts, c.rx_bytes, c.rx_reasm, c.rx_err, c.polls,
            c.wakeups);
    return 0;
}
