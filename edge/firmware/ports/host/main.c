/* fedsim firmware, port `host`: the device as a POSIX process behind a pseudo-terminal (or on
 * stdin/stdout with --stdio), for tests and for developing the bridge without a board.
 *
 *   fs_host                     prints "PTY /dev/pts/N" and serves that pty until SIGTERM/SIGINT
 *   fs_host --stdio             serves stdin/stdout until end of input
 * Fault injection (for the bridge's tests):
 *   --reset-after-samples N     once N samples have been trained the device "reboots": the
 *                               reply then due is lost and head and replay memory are gone, so
 *                               the host's retry gets NO_MODEL (once per process)
 *   --silent-after N            answers N requests, then nothing
 *   --duplicate-replies         sends every reply twice
 */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "fedsim_port.h"
#include "fs_config.h"
#include "fs_device.h"

#if defined(__x86_64__)
#define FS_HOST_CORE "x86_64"
#elif defined(__aarch64__)
#define FS_HOST_CORE "aarch64"
#elif defined(__arm__)
#define FS_HOST_CORE "arm"
#else
#define FS_HOST_CORE "unknown"
#endif

#define WRITE_STALL_MS 1000 /* a reply nobody reads for this long is dropped, as on a UART */

static struct {
    int in_fd, out_fd;
    unsigned long reset_after; /* 0: never */
    long silent_after;         /* -1: never */
    int duplicate;
    long replies;
    int reboot_pending, rebooted;
} s_host = {0, 1, 0, -1, 0, 0, 0, 0};

static volatile sig_atomic_t s_stop;

static fs_board s_board = {"host-pty", FS_HOST_CORE, 0, 0, 0, FS_CAP_TIME, 0, NULL};

const fs_board *fs_port_board(void) {
    return &s_board;
}

/* The machine's RAM as HELLO's u32 sram_bytes (clipped at 4 GiB - 1, as the Pi agent does): a
 * host that reports no RAM is refused by the bridge (Hello.implausible). When the system does
 * not say, the core's weight buffer is what the device is known to hold. */
static uint32_t host_ram_bytes(void) {
    long pages = -1, size = -1;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    pages = sysconf(_SC_PHYS_PAGES);
    size = sysconf(_SC_PAGESIZE);
#endif
    if (pages <= 0 || size <= 0) {
        return 4u * FS_MAX_FLOATS;
    }
    if ((unsigned long)pages > 0xFFFFFFFFul / (unsigned long)size) {
        return 0xFFFFFFFFu;
    }
    return (uint32_t)((unsigned long)pages * (unsigned long)size);
}

uint32_t fs_port_time_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint32_t)((uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u);
}

/* fs_port_energy_uj, fs_port_sensor_sample: ports/common/no_sensors.c */

/* All of data, waiting for the reader at most WRITE_STALL_MS at a time. */
static void write_all(const uint8_t *data, size_t len) {
    while (len > 0 && !s_stop) {
        struct pollfd p;
        ssize_t n = write(s_host.out_fd, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            perror("fs_host: write");
            s_stop = 1;
            return;
        }
        p.fd = s_host.out_fd;
        p.events = POLLOUT;
        if (poll(&p, 1, WRITE_STALL_MS) == 0) {
            fprintf(stderr, "fs_host: nobody reads the replies; %zu bytes dropped\n", len);
            return;
        }
    }
}

void fs_port_write(const uint8_t *data, size_t len) {
    if (s_host.reset_after != 0 && !s_host.rebooted &&
        fs_device_steps() >= s_host.reset_after) {
        s_host.reboot_pending = 1; /* the device dies before this reply leaves */
        return;
    }
    if (s_host.silent_after >= 0 && s_host.replies >= s_host.silent_after) {
        return;
    }
    s_host.replies++;
    write_all(data, len);
    if (s_host.duplicate) {
        write_all(data, len);
    }
}

static void on_signal(int sig) {
    (void)sig;
    s_stop = 1;
}

static int set_raw(int fd) {
    struct termios t;
    if (tcgetattr(fd, &t) != 0) {
        return -1;
    }
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    return tcsetattr(fd, TCSANOW, &t);
}

/* A pty in raw mode. The slave stays open here too, so a client may close and reopen it (as a
 * serial port is reopened) without the master seeing a hang-up. */
static int open_pty(int *slave) {
    char *name;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 ||
        (name = ptsname(master)) == NULL) {
        perror("fs_host: cannot open a pseudo-terminal");
        return -1;
    }
    *slave = open(name, O_RDWR | O_NOCTTY);
    if (*slave < 0 || set_raw(*slave) != 0) {
        perror("fs_host: cannot set up the pseudo-terminal");
        return -1;
    }
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    printf("PTY %s\n", name);
    fflush(stdout);
    return master;
}

static void feed(const uint8_t *buf, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        fs_device_feed(buf[i]);
        if (s_host.reboot_pending) {
            s_host.reboot_pending = 0;
            s_host.rebooted = 1;
            fs_device_init();
        }
    }
}

static int serve(void) {
    uint8_t buf[4096];
    while (!s_stop) {
        struct pollfd p;
        ssize_t n;
        p.fd = s_host.in_fd;
        p.events = POLLIN;
        if (poll(&p, 1, 200) <= 0) {
            continue; /* timeout or a signal: look at s_stop again */
        }
        n = read(s_host.in_fd, buf, sizeof buf);
        if (n == 0) {
            return 0; /* end of input (--stdio) */
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EIO) {
                continue;
            }
            perror("fs_host: read");
            return 1;
        }
        feed(buf, (size_t)n);
    }
    return 0;
}

static int parse_count(const char *flag, const char *text, unsigned long *out) {
    char *end;
    errno = 0;
    *out = text != NULL ? strtoul(text, &end, 10) : 0;
    if (text == NULL || *text == '\0' || *text == '-' || *end != '\0' || errno != 0) {
        fprintf(stderr, "fs_host: %s: expected a whole number, got '%s'\n", flag,
                text != NULL ? text : "");
        return 0;
    }
    return 1;
}

static int parse_args(int argc, char **argv, int *stdio) {
    int i;
    unsigned long n;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--stdio") == 0) {
            *stdio = 1;
        } else if (strcmp(argv[i], "--duplicate-replies") == 0) {
            s_host.duplicate = 1;
        } else if (strcmp(argv[i], "--reset-after-samples") == 0) {
            if (!parse_count(argv[i], argv[i + 1], &n) || n == 0) {
                fprintf(stderr, "fs_host: --reset-after-samples needs N >= 1\n");
                return 0;
            }
            s_host.reset_after = n;
            i++;
        } else if (strcmp(argv[i], "--silent-after") == 0) {
            if (!parse_count(argv[i], argv[i + 1], &n)) {
                return 0;
            }
            s_host.silent_after = n > 0x7FFFFFFFul ? 0x7FFFFFFFl : (long)n;
            i++;
        } else {
            fprintf(stderr, "fs_host: unknown option '%s'; known: --stdio, "
                            "--reset-after-samples N, --silent-after N, --duplicate-replies\n",
                    argv[i]);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    int stdio = 0, slave = -1;
    if (!parse_args(argc, argv, &stdio)) {
        return 2;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked poll/write returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    s_board.sram_bytes = host_ram_bytes();
    if (stdio) {
        s_board.board = "host-stdio";
    } else {
        s_host.in_fd = s_host.out_fd = open_pty(&slave);
        if (s_host.in_fd < 0) {
            return 1;
        }
    }
    fs_device_init();
    return serve();
}
