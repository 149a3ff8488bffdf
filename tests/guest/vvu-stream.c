/* vvu-stream: a stream of numbered, self-checking raw Ethernet frames between two test guests
 * (built static by build-guest.sh into the initramfs as /bin/vvu-stream).
 *
 *   vvu-stream recv IFACE [--wait S] [--idle S] [--hold S]
 *   vvu-stream send IFACE [--wait S] [--rate FPS] [--seconds S]
 *
 * Frames carry the local experimental EtherType 0x88b5 over AF_PACKET (no IP). Layout after the
 * 14-byte Ethernet header (big-endian fields):
 *   14 u32 magic 'VVUS'   18 u8 type (1 data, 2 hello, 3 end)   19 u8 0
 *   20 u16 frame length (Ethernet header included, 60..1500)
 *   22 u32 sequence number (end: the number of data frames sent)
 *   26 u32 FNV-1a of bytes 30..length   30.. bytes generated from (sequence, length)
 * Data frames are 60..128 and 1232..1500 bytes long (frame_len() says why).
 *
 * recv: broadcasts a hello every 0.5 s until the first data frame arrives (so a learning switch
 * knows the receiver's port, and the sender its MAC), then sends nothing more. It checks every
 * frame: the length field against the length received, the checksum, and every payload byte
 * against the bytes regenerated from the frame's sequence number. A frame that fails is corrupt
 * (the first 10 are printed, VVU-GUEST-STREAM-CORRUPT); a sequence number seen before is a
 * duplicate, one below the highest seen so far a reordering. Once a second:
 *   VVU-GUEST-STREAM-PROGRESS received=N corrupt=C dup=D reordered=R last_seq=K
 * and at the end (an end frame, or --idle S without a data frame once the stream ran):
 *   VVU-GUEST-STREAM-GAP first=K count=N      (each run of frames that never came, the first 20)
 *   VVU-GUEST-STREAM received=N corrupt=C missing=M reordered=R dup=D last_seq=K total=T|unknown gaps=G
 * missing = frames sent (T from the end frame, else last_seq+1) that never arrived. Exit 0 when
 * frames arrived and none was corrupt, duplicated or reordered; 1 otherwise; 2 on bad usage or a
 * socket error; 3 when no data frame came within --wait S (default 60).
 * --hold S (default 0) makes it a delay line: it reads a data frame only S seconds after the
 * kernel received it (SO_TIMESTAMPNS, peeked), so the frames of the last S seconds wait in its
 * socket queue — their bytes in the receive buffers the back-end wrote, as page fragments. With
 * S longer than a migration, frames the back-end wrote as it began are checked on the
 * destination: the ones whose pages QEMU had sent before the back-end wrote them and never sent
 * again (had the back-end not logged the write) arrive stale.
 *
 * send: waits (--wait S) for a receiver's hello, then sends data frames to its MAC for --seconds
 * (default 20) at --rate frames per second (default 1000), then five end frames 0.1 s apart;
 * prints VVU-GUEST-STREAM-SENDING sent=N enobufs=E once a second, then
 * VVU-GUEST-STREAM-SENT sent=N seconds=S enobufs=E. Exit 0, or 2/3 as above.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define ETHERTYPE_VVU 0x88b5
#define MAGIC 0x56565553u /* 'VVUS' */
#define T_DATA 1
#define T_HELLO 2
#define T_END 3
#define HDR 30
#define MIN_LEN 60
#define MAX_LEN 1500
#define MAX_SEQ (1u << 24) /* bitmap of seen sequence numbers: 2 MiB */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }
static uint32_t get16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t get32(const uint8_t *p) { return get16(p) << 16 | get16(p + 2); }

static uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* Data frame seq's length: 60..128 or 1232..1500 bytes, every one of these 338 sizes in turn.
 * Linux's virtio-net (mergeable receive buffers of about 1.5 KiB) copies a frame of up to 128
 * bytes out of its receive buffer, and leaves one above about 1210 bytes there as a page fragment
 * (it copies the Ethernet header); both times the guest writes nothing into the buffer's page.
 * A frame in between is built in place (build_skb writes its skb_shared_info into the buffer),
 * a write of the guest's own that would mark the page dirty for the migration and hide a
 * back-end that did not log its write of the frame. */
static uint32_t frame_len(uint32_t seq) {
    uint32_t k = (uint32_t)(((uint64_t)seq * 7919u) % 338u);
    return k < 69 ? MIN_LEN + k : 1232 + (k - 69);
}

/* The payload of data frame seq: xorshift32 bytes seeded from (seq, len), never all zero. */
static void fill(uint8_t *p, size_t n, uint32_t seq, uint32_t len) {
    uint32_t x = (seq * 2654435761u) ^ (len << 16) ^ 0x9e3779b9u;
    if (x == 0) x = 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static int open_socket(const char *ifname, int *ifindex, uint8_t mac[6]) {
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETHERTYPE_VVU));
    if (fd < 0) { perror("vvu-stream: socket(AF_PACKET)"); return -1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) { perror("vvu-stream: SIOCGIFINDEX"); close(fd); return -1; }
    *ifindex = ifr.ifr_ifindex;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { perror("vvu-stream: SIOCGIFHWADDR"); close(fd); return -1; }
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETHERTYPE_VVU);
    sll.sll_ifindex = *ifindex;
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("vvu-stream: bind"); close(fd); return -1; }
    /* Our own frames are not for us (a packet socket sees outgoing frames too). */
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) {
        perror("vvu-stream: PACKET_IGNORE_OUTGOING");
        close(fd);
        return -1;
    }
    /* A deep receive queue (--hold: seconds of frames wait in it, in guest memory). */
    int rcv = 32 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    return fd;
}

static int send_frame(int fd, int ifindex, const uint8_t dst[6], const uint8_t *f, size_t n) {
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETHERTYPE_VVU);
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    memcpy(sll.sll_addr, dst, 6);
    return (int)sendto(fd, f, n, 0, (struct sockaddr *)&sll, sizeof sll);
}

/* Ethernet header + the fixed fields; the caller fills the payload and the checksum. */
static void header(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], int type, uint32_t len, uint32_t seq) {
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    put16(f + 12, ETHERTYPE_VVU);
    put32(f + 14, MAGIC);
    f[18] = (uint8_t)type;
    f[19] = 0;
    put16(f + 20, len);
    put32(f + 22, seq);
}

static size_t build(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], int type, uint32_t seq) {
    uint32_t len = type == T_DATA ? frame_len(seq) : MIN_LEN;
    header(f, dst, src, type, len, seq);
    if (type == T_DATA) fill(f + HDR, len - HDR, seq, len);
    else memset(f + HDR, 0, len - HDR);
    put32(f + 26, fnv1a(f + HDR, len - HDR));
    return len;
}

/* Seconds since the kernel received the frame at the head of the socket's queue (peeked, not
 * taken); -1 when the queue is empty. */
static double head_age(int fd) {
    uint8_t b[1];
    char ctl[CMSG_SPACE(sizeof(struct timespec))];
    struct iovec iov = {b, sizeof b};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    if (recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC) < 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts, nowts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            clock_gettime(CLOCK_REALTIME, &nowts);
            return (double)(nowts.tv_sec - ts.tv_sec) + (double)(nowts.tv_nsec - ts.tv_nsec) / 1e9;
        }
    }
    return 1e9; /* no timestamp: take it */
}

static int do_recv(const char *ifname, double wait_s, double idle_s, double hold_s) {
    int ifindex;
    uint8_t mac[6], f[2048], want[MAX_LEN];
    int fd = open_socket(ifname, &ifindex, mac);
    if (fd < 0) return 2;
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (hold_s > 0) {
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) { perror("vvu-stream: SO_TIMESTAMPNS"); return 2; }
    }
    uint8_t *seen = calloc(MAX_SEQ / 8, 1);
    if (!seen) { perror("vvu-stream: calloc"); return 2; }
    uint64_t received = 0, corrupt = 0, dup = 0, reordered = 0, total = 0;
    int64_t last = -1;
    int have_total = 0, started = 0;
    double t0 = now(), last_data = t0, next_hello = t0, next_progress = t0 + 1;
    for (;;) {
        double t = now();
        if (!started && t >= next_hello) {
            uint8_t h[MIN_LEN];
            build(h, bcast, mac, T_HELLO, 0);
            send_frame(fd, ifindex, bcast, h, sizeof h);
            next_hello = t + 0.5;
        }
        if (!started && t - t0 > wait_s) {
            printf("VVU-GUEST-STREAM received=0 corrupt=%llu missing=unknown reordered=0 dup=0 last_seq=-1 total=unknown (no data frame within %.0f s)\n",
                   (unsigned long long)corrupt, wait_s);
            return 3;
        }
        if (started && t - last_data > idle_s) break;
        if (started && t >= next_progress) {
            printf("VVU-GUEST-STREAM-PROGRESS received=%llu corrupt=%llu dup=%llu reordered=%llu last_seq=%lld\n",
                   (unsigned long long)received, (unsigned long long)corrupt, (unsigned long long)dup,
                   (unsigned long long)reordered, (long long)last);
            next_progress = t + 1;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, 100);
        if (r < 0 && errno != EINTR) { perror("vvu-stream: poll"); return 2; }
        if (r <= 0) continue;
        for (;;) {
            if (started && hold_s > 0) {
                double age = head_age(fd);
                if (age < 0) break;
                if (age < hold_s) { /* the head is too young: wait (at most 0.1 s, for progress lines) */
                    double w = hold_s - age < 0.1 ? hold_s - age : 0.1;
                    struct timespec ts = {0, (long)(w * 1e9)};
                    nanosleep(&ts, NULL);
                    break;
                }
            }
            ssize_t n = recv(fd, f, sizeof f, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
                perror("vvu-stream: recv");
                return 2;
            }
            if (n < MIN_LEN || get16(f + 12) != ETHERTYPE_VVU) continue; /* not ours (cannot happen) */
            if (memcmp(f, mac, 6) != 0 && f[0] != 0xff) continue;      /* not for us (flooded) */
            int type = f[18];
            if (get32(f + 14) == MAGIC && type == T_HELLO) continue;   /* another receiver's */
            const char *why = NULL;
            uint32_t len = get16(f + 20), seq = get32(f + 22);
            size_t bad = 0;
            if (get32(f + 14) != MAGIC) why = "magic";
            else if (type != T_DATA && type != T_END) why = "type";
            else if (len != (uint32_t)n) why = "length";
            else if (type == T_DATA && (seq >= MAX_SEQ || len != frame_len(seq))) why = "seq/length";
            else if (fnv1a(f + HDR, len - HDR) != get32(f + 26)) why = "checksum";
            else if (type == T_DATA) {
                fill(want, len - HDR, seq, len);
                if (memcmp(want, f + HDR, len - HDR) != 0) {
                    why = "payload";
                    while (bad < len - HDR && want[bad] == f[HDR + bad]) bad++;
                    bad += HDR;
                }
            }
            if (why) {
                if (++corrupt <= 10)
                    printf("VVU-GUEST-STREAM-CORRUPT why=%s got_len=%zd len=%u seq=%u first_bad_byte=%zu after_seq=%lld\n",
                           why, n, len, seq, bad, (long long)last);
                continue;
            }
            if (type == T_END) { total = seq; have_total = 1; goto done; }
            started = 1;
            last_data = now();
            if (seen[seq / 8] & (1u << (seq % 8))) { dup++; continue; }
            seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
            received++;
            if ((int64_t)seq < last) reordered++;
            else last = seq;
        }
    }
done:;
    uint64_t sent = have_total ? total : (uint64_t)(last + 1);
    /* The runs of frames that never came (e.g. a migration's switch-over), the first 20. */
    uint64_t gaps = 0;
    for (uint64_t k = 0; k < sent && k < MAX_SEQ; k++) {
        if (seen[k / 8] & (1u << (k % 8))) continue;
        uint64_t first = k;
        while (k < sent && k < MAX_SEQ && !(seen[k / 8] & (1u << (k % 8)))) k++;
        if (++gaps <= 20) printf("VVU-GUEST-STREAM-GAP first=%llu count=%llu\n", (unsigned long long)first, (unsigned long long)(k - first));
    }
    char tot[32];
    if (have_total) snprintf(tot, sizeof tot, "%llu", (unsigned long long)total);
    else snprintf(tot, sizeof tot, "unknown");
    printf("VVU-GUEST-STREAM received=%llu corrupt=%llu missing=%llu reordered=%llu dup=%llu last_seq=%lld total=%s gaps=%llu\n",
           (unsigned long long)received, (unsigned long long)corrupt,
           (unsigned long long)(sent > received ? sent - received : 0), (unsigned long long)reordered,
           (unsigned long long)dup, (long long)last, tot, (unsigned long long)gaps);
    return received > 0 && corrupt == 0 && dup == 0 && reordered == 0 ? 0 : 1;
}

static int do_send(const char *ifname, double wait_s, double rate, double seconds) {
    int ifindex;
    uint8_t mac[6], f[2048], peer[6];
    int fd = open_socket(ifname, &ifindex, mac);
    if (fd < 0) return 2;
    double t0 = now();
    for (;;) { /* the receiver's hello: its MAC */
        if (now() - t0 > wait_s) {
            printf("VVU-GUEST-STREAM-SENT sent=0 seconds=0 enobufs=0 (no receiver's hello within %.0f s)\n", wait_s);
            return 3;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0) continue;
        ssize_t n = recv(fd, f, sizeof f, MSG_DONTWAIT);
        if (n >= MIN_LEN && get32(f + 14) == MAGIC && f[18] == T_HELLO) { memcpy(peer, f + 6, 6); break; }
    }
    printf("VVU-GUEST-STREAM-START peer=%02x:%02x:%02x:%02x:%02x:%02x rate=%.0f seconds=%.0f\n",
           peer[0], peer[1], peer[2], peer[3], peer[4], peer[5], rate, seconds);
    fflush(stdout);
    uint32_t seq = 0;
    uint64_t enobufs = 0;
    double start = now(), next_progress = start + 1;
    for (;;) {
        double el = now() - start;
        if (el >= seconds) break;
        if (el + start >= next_progress) {
            printf("VVU-GUEST-STREAM-SENDING sent=%u enobufs=%llu\n", seq, (unsigned long long)enobufs);
            next_progress += 1;
        }
        uint64_t due = (uint64_t)(el * rate) + 1;
        while (seq < due) {
            size_t len = build(f, peer, mac, T_DATA, seq);
            if (send_frame(fd, ifindex, peer, f, len) < 0) {
                if (errno == ENOBUFS || errno == EAGAIN) { enobufs++; break; } /* the queue is full: later */
                perror("vvu-stream: sendto");
                return 2;
            }
            seq++;
        }
        struct timespec ts = {0, 1000000}; /* 1 ms */
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < 5; i++) {
        size_t len = build(f, peer, mac, T_END, seq);
        send_frame(fd, ifindex, peer, f, len);
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    printf("VVU-GUEST-STREAM-SENT sent=%u seconds=%.1f enobufs=%llu\n", seq, now() - start, (unsigned long long)enobufs);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) goto usage;
    double wait_s = 60, idle_s = 10, rate = 1000, seconds = 20, hold_s = 0;
    for (int i = 3; i < argc; i++) {
        if (i + 1 >= argc) goto usage;
        double v = atof(argv[i + 1]);
        if (strcmp(argv[i], "--wait") == 0) wait_s = v;
        else if (strcmp(argv[i], "--idle") == 0) idle_s = v;
        else if (strcmp(argv[i], "--rate") == 0) rate = v;
        else if (strcmp(argv[i], "--seconds") == 0) seconds = v;
        else if (strcmp(argv[i], "--hold") == 0) hold_s = v;
        else goto usage;
        i++;
    }
    if (rate <= 0 || seconds <= 0 || seconds * rate >= MAX_SEQ) goto usage;
    if (strcmp(argv[1], "recv") == 0) return do_recv(argv[2], wait_s, idle_s, hold_s);
    if (strcmp(argv[1], "send") == 0) return do_send(argv[2], wait_s, rate, seconds);
usage:
    fprintf(stderr, "usage: vvu-stream recv IFACE [--wait S] [--idle S] [--hold S]\n"
                    "       vvu-stream send IFACE [--wait S] [--rate FPS] [--seconds S]\n");
    return 2;
}
