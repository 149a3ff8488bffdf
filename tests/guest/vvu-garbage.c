/* vvu-garbage: a hostile driver for a virtio PCI function, run inside the back-end test guest
 * before the real driver attaches (tests/guest/build-backend-guest.sh, vvu.garbage=N). It finds
 * the function's virtio capabilities (virtio 1.2 §4.1.4: vendor capability 0x09 with cfg_type,
 * bar, offset, length), maps their registers through sysfs (resourceN), and then:
 *
 *   1. sets queues up with garbage: feature bits, queue sizes, ring addresses no IOMMU maps,
 *      MSI-X vectors out of range, DRIVER_OK, and rings every notification register;
 *   2. writes N random values of random width (1, 2, 4, 8 bytes) at random offsets of every
 *      capability's registers (the first 64 KiB of each) and of the capability area of config
 *      space, reading now and then;
 *   3. leaves the function as it is — the next driver must reset it.
 *
 *   vvu-garbage BDF N SEED
 *
 * Prints "VVU-GUEST-GARBAGE bdf=B writes=W reads=R caps=C num_queues=Q" (Q as the common
 * configuration said before the garbage: the registers were reached). Exit 0 unless the function cannot be
 * opened at all. The function itself must not be able to crash its device model by any of it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_CAPS 16
#define SPAN (64u * 1024u) /* bytes of each capability's registers to write into */

struct cap {
    uint8_t type, bar;
    uint64_t offset, length;
    volatile uint8_t *regs; /* mapped: SPAN bytes or the capability's length, whichever is less */
    uint64_t mapped;
};

static uint64_t state;
static uint64_t next_random(void) { /* xorshift64*: reproducible from the seed */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
}

static void write_reg(volatile uint8_t *at, unsigned width, uint64_t v) {
    switch (width) {
    case 1: *(volatile uint8_t *)at = (uint8_t)v; break;
    case 2: *(volatile uint16_t *)at = (uint16_t)v; break;
    case 4: *(volatile uint32_t *)at = (uint32_t)v; break;
    default: *(volatile uint32_t *)at = (uint32_t)v; *(volatile uint32_t *)(at + 4) = (uint32_t)(v >> 32); break;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: vvu-garbage BDF N SEED\n");
        return 2;
    }
    const char *bdf = argv[1];
    const long n = atol(argv[2]);
    state = strtoull(argv[3], NULL, 0) | 1;
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/config", bdf);
    int cfd = open(path, O_RDWR);
    if (cfd < 0) { perror(path); return 1; }
    uint8_t config[256] = {0};
    if (pread(cfd, config, sizeof config, 0) < 64) { perror("config"); return 1; }
    /* Memory space on, so that the BARs answer. */
    uint16_t command = (uint16_t)(config[4] | config[5] << 8) | 0x2;
    pwrite(cfd, &command, 2, 4);

    struct cap caps[MAX_CAPS];
    int ncaps = 0;
    unsigned at = config[0x34] & 0xfc, hops = 0;
    while (at >= 0x40 && at < 0xff && hops++ < 48 && ncaps < MAX_CAPS) {
        if (config[at] == 0x09 && at + 16 <= 256) { /* virtio vendor capability */
            struct cap *c = &caps[ncaps];
            c->type = config[at + 3];
            c->bar = config[at + 4];
            c->offset = (uint64_t)config[at + 8] | (uint64_t)config[at + 9] << 8 | (uint64_t)config[at + 10] << 16 |
                        (uint64_t)config[at + 11] << 24;
            c->length = (uint64_t)config[at + 12] | (uint64_t)config[at + 13] << 8 | (uint64_t)config[at + 14] << 16 |
                        (uint64_t)config[at + 15] << 24;
            if (c->bar < 6 && c->length > 0) ncaps++;
        }
        at = config[at + 1] & 0xfc;
    }
    for (int i = 0; i < ncaps; i++) {
        struct cap *c = &caps[i];
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource%u", bdf, c->bar);
        int fd = open(path, O_RDWR | O_SYNC);
        if (fd < 0) continue;
        const uint64_t start = c->offset & ~0xfffull;
        uint64_t len = (c->length < SPAN ? c->length : SPAN) + (c->offset - start);
        len = (len + 0xfff) & ~0xfffull;
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start);
        close(fd);
        if (p == MAP_FAILED) continue;
        c->regs = (volatile uint8_t *)p + (c->offset - start);
        c->mapped = c->length < SPAN ? c->length : SPAN;
    }

    long writes = 0, reads = 0;
    int num_queues = -1;
    /* 1. Queues with garbage, through the common configuration (cfg_type 1). */
    for (int i = 0; i < ncaps; i++) {
        volatile uint8_t *cc = caps[i].regs;
        if (caps[i].type != 1 || !cc || caps[i].mapped < 56) continue;
        write_reg(cc + 20, 1, 0);    /* reset */
        write_reg(cc + 20, 1, 1 | 2); /* ACKNOWLEDGE | DRIVER */
        for (unsigned half = 0; half < 2; half++) {
            write_reg(cc + 8, 4, half);
            write_reg(cc + 12, 4, next_random());
        }
        write_reg(cc + 20, 1, 1 | 2 | 8); /* FEATURES_OK, whatever was accepted */
        const unsigned queues = *(volatile uint16_t *)(cc + 18);
        num_queues = (int)queues;
        for (unsigned q = 0; q < queues + 2 && q < 64; q++) {
            write_reg(cc + 22, 2, q);
            write_reg(cc + 24, 2, next_random());             /* queue_size */
            write_reg(cc + 26, 2, next_random());             /* queue_msix_vector */
            write_reg(cc + 32, 8, next_random() & ~0xfull);   /* queue_desc */
            write_reg(cc + 40, 8, next_random());             /* queue_driver */
            write_reg(cc + 48, 8, next_random() & ~0x3ull);   /* queue_device */
            write_reg(cc + 28, 2, 1);                         /* queue_enable */
            writes += 7;
        }
        write_reg(cc + 20, 1, 1 | 2 | 8 | 4); /* DRIVER_OK */
        writes += 8;
    }
    /* Every notification register and doorbell, rung with garbage. */
    for (int i = 0; i < ncaps; i++) {
        if (caps[i].type == 1 || !caps[i].regs) continue;
        for (uint64_t off = 0; off + 2 <= caps[i].mapped && off < 4096; off += 2) {
            write_reg(caps[i].regs + off, 2, next_random());
            writes++;
        }
    }
    /* 2. Random widths, offsets and values everywhere; config space's capability area too. */
    for (long k = 0; k < n; k++) {
        const uint64_t r = next_random();
        const unsigned width = 1u << (r & 3);
        if (ncaps > 0 && (r >> 8) % 8 != 0) {
            struct cap *c = &caps[(r >> 16) % (unsigned)ncaps];
            if (!c->regs || c->mapped < width) continue;
            const uint64_t off = ((r >> 24) % (c->mapped - width + 1)) & ~(uint64_t)(width - 1);
            if ((r >> 60) == 0) {
                volatile uint8_t sink = c->regs[off];
                (void)sink;
                reads++;
            } else {
                write_reg(c->regs + off, width, next_random());
                writes++;
            }
        } else {
            /* Config space: the capabilities (0x40 on), never the BARs or the command register,
             * which would move the function out of this guest's reach. */
            uint64_t v = next_random();
            const off_t off = 0x40 + (off_t)((r >> 24) % (0x100 - 0x40 - width + 1));
            pwrite(cfd, &v, width, off);
            writes++;
        }
    }
    printf("VVU-GUEST-GARBAGE bdf=%s writes=%ld reads=%ld caps=%d num_queues=%d\n", bdf, writes, reads, ncaps,
           num_queues);
    return 0;
}
