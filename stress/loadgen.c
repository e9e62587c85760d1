/* loadgen: the load generator of stress/bench.py -- one epoll thread, many client connections.
 *
 * Not part of wsloop. bench.py compiles it with `gcc -O2` into a cache directory on first use and
 * runs it pinned to its own core. It never parses messages: every client frame is pre-built and
 * masked once, and an echo is counted by the bytes coming back (a server frame of an S-byte
 * payload is 2, 4 or 10 header bytes + S; with --raw there is no framing at all).
 *
 *   loadgen rate --port P [--raw] [--binary] --conns N --inflight K --size S
 *                --warmup W --duration D --timeout T [--server-pid PID] [--connect-inflight C]
 *       Opens N connections (WebSocket handshake unless --raw), keeps K messages in flight on
 *       each (an echo back queues the next message), and after W seconds counts the echoes of
 *       the next D seconds. Prints one line of key=value: msgs, secs, rate (messages/s), mbps
 *       (payload MB/s, 10^6), p50_us/p99_us (round trips, with K == 1), gen_cpu and srv_cpu
 *       (CPU time / wall time of this process and of PID over the window; --server-pid may be
 *       repeated, up to 16, for a server of several processes: their CPU is summed), or error=...
 *
 *   loadgen idle --port P [--raw] --conns N --size S --timeout T [--server-pid PID] [...]
 *       Opens N connections and prints `opened secs=... ok=... failed=...`, then obeys commands
 *       on stdin, one a line, each answered by one line on stdout:
 *         echo       one S-byte text message on every connection; `echoed secs=... ok=...`
 *                    (time until the last echo is back)
 *         broadcast  "broadcast:" + S bytes on connection 0; the server sends the S bytes to
 *                    every connection; `broadcast secs=... ok=...` (time until the last has it)
 *         quit       close everything and exit
 *
 * Every wait is bounded by --timeout seconds (per phase); a phase that runs out reports
 * error=timeout with how far it got. Exit status 0 when the line was printed, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, HANDSHAKE, OPEN, DEAD };

typedef struct {
    int fd;
    int state;
    int want_out;        /* EPOLLOUT registered */
    int hslen;
    char hs[1024];       /* handshake response so far */
    uint64_t queued;     /* frames queued in total */
    uint64_t sent;       /* bytes sent in total */
    uint64_t rcvd;       /* bytes received after the handshake */
    uint64_t done;       /* rcvd / echo length */
    double t_sent;       /* when the last frame was queued (latency with K == 1) */
} conn_t;

static const char *host = "127.0.0.1";
static int port, raw, binary, nconns = 1, inflight = 1, size = 64, connect_inflight = 100;
static double warmup = 0.25, duration = 1.0, timeout_s = 30.0;
static int server_pids[16], nserver_pids;  /* --server-pid, repeatable: their CPU is summed */
static conn_t *conns;
static int ep;
static unsigned char *sendbuf;   /* R copies of the frame */
static size_t flen, buflen, echolen;
static char request[512];
static size_t reqlen;
static unsigned char rbuf[1 << 18];
static double *lat;
static size_t nlat, latcap;
static int running;              /* queue the next frame when an echo arrives */
static int opening, opened, failed_conns;
static uint64_t rcvd_total; /* bytes received after the handshake, every connection */
static char failure[256];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static double one_server_cpu(int pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long utime = 0, stime = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

/* CPU seconds of every --server-pid together (-1 if none is given or one is gone). */
static double server_cpu(void) {
    if (!nserver_pids) return -1;
    double total = 0;
    for (int i = 0; i < nserver_pids; i++) {
        double t = one_server_cpu(server_pids[i]);
        if (t < 0) return -1;
        total += t;
    }
    return total;
}

static size_t header_len(size_t n) { return n < 126 ? 2 : n < 65536 ? 4 : 10; }

/* One masked client frame (or the bare payload with --raw) carrying prefix + n payload bytes. */
static unsigned char *build_frame(const char *prefix, size_t n, int opcode, size_t *outlen) {
    size_t plen = strlen(prefix) + n;
    size_t hl = raw ? 0 : header_len(plen) + 4;
    unsigned char *f = malloc(hl + plen);
    if (!f) { perror("malloc"); exit(1); }
    unsigned char *p = f + hl;
    memcpy(p, prefix, strlen(prefix));
    for (size_t i = strlen(prefix); i < plen; i++) p[i] = 'a' + i % 26;
    if (!raw) {
        static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
        size_t h = 0;
        f[h++] = 0x80 | opcode;
        if (plen < 126) {
            f[h++] = 0x80 | plen;
        } else if (plen < 65536) {
            f[h++] = 0x80 | 126;
            f[h++] = plen >> 8;
            f[h++] = plen & 0xff;
        } else {
            f[h++] = 0x80 | 127;
            for (int s = 56; s >= 0; s -= 8) f[h++] = (uint64_t)plen >> s & 0xff;
        }
        memcpy(f + h, mask, 4);
        for (size_t i = 0; i < plen; i++) p[i] ^= mask[i % 4];
    }
    *outlen = hl + plen;
    return f;
}

static void set_events(conn_t *c, int out) {
    if (c->want_out == out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

static void kill_conn(conn_t *c, const char *why) {
    if (c->state == DEAD) return;
    if (c->state == CONNECTING || c->state == HANDSHAKE) opening--;
    if (!failure[0]) snprintf(failure, sizeof failure, "%s", why);
    failed_conns++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DEAD;
}

/* Send what is queued on c; EPOLLOUT only while something is left. */
static void flush(conn_t *c) {
    uint64_t want = c->queued * flen;
    while (c->sent < want) {
        size_t off = c->sent % flen;
        size_t chunk = buflen - off;
        if (chunk > want - c->sent) chunk = want - c->sent;
        ssize_t n = send(c->fd, sendbuf + off, chunk, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            kill_conn(c, strerror(errno));
            return;
        }
        c->sent += n;
    }
    set_events(c, c->sent < want);
}

static void start_conn(conn_t *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        c->state = CONNECTING;
        opening++;
        c->fd = -1;
        if (!failure[0]) snprintf(failure, sizeof failure, "socket: %s", strerror(errno));
        failed_conns++;
        opening--;
        c->state = DEAD;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = CONNECTING;
    opening++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->want_out = 1;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        kill_conn(c, strerror(errno));
}

static void on_open(conn_t *c) {
    c->state = OPEN;
    opening--;
    opened++;
    set_events(c, 0);
}

static void on_data(conn_t *c, size_t n) {
    c->rcvd += n;
    rcvd_total += n;
    uint64_t done = c->rcvd / echolen;
    if (done == c->done) return;
    uint64_t more = done - c->done;
    c->done = done;
    if (!running) return;
    if (inflight == 1 && lat) {
        double t = now();
        if (nlat < latcap) lat[nlat++] = t - c->t_sent;
        c->t_sent = t;
    }
    c->queued += more;
    flush(c);
}

static void handle(conn_t *c, uint32_t events) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { kill_conn(c, strerror(err)); return; }
        if (raw) { on_open(c); return; }
        c->state = HANDSHAKE;
        if (send(c->fd, request, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen) {
            kill_conn(c, "handshake request not sent at once");
            return;
        }
        set_events(c, 0);
        return;
    }
    if (events & EPOLLOUT) flush(c);
    if (c->state == DEAD || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    for (int reads = 0; reads < 4; reads++) {
        ssize_t n;
        if (c->state == HANDSHAKE) {
            n = recv(c->fd, c->hs + c->hslen, sizeof c->hs - 1 - c->hslen, 0);
        } else {
            n = recv(c->fd, rbuf, sizeof rbuf, 0);
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            kill_conn(c, strerror(errno));
            return;
        }
        if (n == 0) {
            kill_conn(c, c->state == HANDSHAKE ? "closed during the handshake" : "server closed the connection");
            return;
        }
        if (c->state == HANDSHAKE) {
            c->hslen += n;
            c->hs[c->hslen] = 0;
            char *end = strstr(c->hs, "\r\n\r\n");
            if (!end) {
                if (c->hslen >= (int)sizeof c->hs - 1) kill_conn(c, "handshake response too long");
                continue;
            }
            if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
                char why[128];
                snprintf(why, sizeof why, "handshake refused: %.60s", c->hs);
                for (char *q = why; *q; q++) if (*q == '\r' || *q == '\n') *q = ' ';
                kill_conn(c, why);
                return;
            }
            if (strcasestr(c->hs, "permessage-deflate")) {
                kill_conn(c, "server negotiated permessage-deflate (not offered)");
                return;
            }
            size_t rest = c->hslen - (end + 4 - c->hs);
            on_open(c);
            if (rest) on_data(c, rest);
            continue;
        }
        on_data(c, n);
        if ((size_t)n < sizeof rbuf) return;
    }
}

static void pump(int ms) {
    static struct epoll_event evs[1024];
    int n = epoll_wait(ep, evs, 1024, ms);
    for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
}

/* Open every connection, at most connect_inflight connecting/handshaking at once. 0 if all did. */
static int open_all(double *secs) {
    double t0 = now(), deadline = t0 + timeout_s;
    int started = 0;
    while (opened + failed_conns < nconns) {
        while (started < nconns && opening < connect_inflight) start_conn(&conns[started++]);
        double left = deadline - now();
        if (left <= 0) {
            snprintf(failure, sizeof failure, "timeout (%d of %d opened)", opened, nconns);
            *secs = now() - t0;
            return -1;
        }
        if (opening) pump(left > 0.05 ? 50 : 1);
    }
    *secs = now() - t0;
    return failed_conns ? -1 : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t total_done(void) {
    uint64_t t = 0;
    for (int i = 0; i < nconns; i++) t += conns[i].done;
    return t;
}

/* Close with a reset (SO_LINGER 0): no TIME_WAIT left behind by thousands of connections a run. */
static void close_all(void) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < nconns; i++) {
        if (conns[i].state == DEAD || conns[i].fd < 0) continue;
        setsockopt(conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(conns[i].fd);
    }
}

static int run_rate(void) {
    double secs;
    if (open_all(&secs) < 0) {
        printf("error=%s\n", failure);
        close_all();
        return 0;
    }
    if (inflight == 1) {
        latcap = 4000000;
        lat = malloc(latcap * sizeof *lat);
    }
    running = 1;
    double t = now();
    for (int i = 0; i < nconns; i++) {
        conns[i].t_sent = t;
        conns[i].queued = inflight;
        flush(&conns[i]);
    }
    double t_start = t + warmup, t_end = t_start + duration;
    while ((t = now()) < t_start && !failed_conns) pump((int)((t_start - t) * 1000) + 1);
    uint64_t d0 = total_done();
    double c0 = self_cpu(), s0 = server_cpu(), w0 = now();
    size_t l0 = nlat;
    while ((t = now()) < t_end && !failed_conns) pump((int)((t_end - t) * 1000) + 1);
    uint64_t d1 = total_done();
    double c1 = self_cpu(), s1 = server_cpu(), w1 = now();
    size_t l1 = nlat;
    if (failed_conns) {
        printf("error=%s\n", failure);
        close_all();
        return 0;
    }
    double wall = w1 - w0, msgs = (double)(d1 - d0);
    printf("msgs=%.0f secs=%.6f rate=%.1f mbps=%.3f gen_cpu=%.3f srv_cpu=%.3f", msgs, wall, msgs / wall,
           msgs * size / wall / 1e6, (c1 - c0) / wall, s0 >= 0 && s1 >= 0 ? (s1 - s0) / wall : -1.0);
    if (lat && l1 > l0) {
        size_t n = l1 - l0;
        qsort(lat + l0, n, sizeof *lat, cmp_double);
        printf(" p50_us=%.1f p99_us=%.1f", lat[l0 + n / 2] * 1e6, lat[l0 + (size_t)(n * 0.99)] * 1e6);
    }
    printf("\n");
    fflush(stdout);
    close_all();
    return 0;
}

/* Count the open connections that have received `want` bytes beyond `base`; *open_now: how many
   are open. */
static int count_reached(const uint64_t *base, uint64_t want, int *open_now) {
    int count = 0, open = 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].state != OPEN) continue;
        open++;
        if (conns[i].rcvd - base[i] >= want) count++;
    }
    *open_now = open;
    return count;
}

/* Wait until every open connection has received `want` bytes beyond `base`. The connections are
   scanned only once as many bytes as all of them need have come (every one must get `want`), not
   after every epoll_wait: with 10,000 connections, scanning them after each wake-up cost more CPU
   than reading the data. */
static int wait_bytes(uint64_t *base, uint64_t want, double t0, double *secs, int *ok) {
    double deadline = t0 + timeout_s, last = t0;
    int open_start, failed_start = failed_conns;
    *ok = count_reached(base, want, &open_start);
    uint64_t total_base = 0;
    for (int i = 0; i < nconns; i++) total_base += base[i];
    /* bytes received since `base` by all connections, not only the open ones */
    uint64_t since = 0;
    for (int i = 0; i < nconns; i++) since += conns[i].rcvd;
    uint64_t rcvd_base = rcvd_total - (since - total_base);
    int open_now = open_start;
    while (*ok < open_now) {
        double t = now();
        if (t >= deadline) {
            *ok = count_reached(base, want, &open_now);
            *secs = t - t0;
            return -1;
        }
        uint64_t before = rcvd_total;
        pump((int)((deadline - t) * 1000) + 1 > 50 ? 50 : (int)((deadline - t) * 1000) + 1);
        if (rcvd_total == before && failed_conns == failed_start) continue;
        if (rcvd_total != before) last = now();
        /* all of them done needs at least (open ones) x want bytes; connections that died since
           the start need none */
        uint64_t needed = (uint64_t)(open_start - (failed_conns - failed_start)) * want;
        if (rcvd_total - rcvd_base >= needed || failed_conns != failed_start)
            *ok = count_reached(base, want, &open_now);
    }
    *secs = last - t0;
    return 0;
}

static void cpu_fields(double w0, double c0, double s0) {
    double wall = now() - w0, s1 = server_cpu();
    if (wall <= 0) wall = 1e-9;
    printf(" gen_cpu=%.3f srv_cpu=%.3f", (self_cpu() - c0) / wall, s0 >= 0 && s1 >= 0 ? (s1 - s0) / wall : -1.0);
}

static int run_idle(void) {
    double secs, w0 = now(), c0 = self_cpu(), s0 = server_cpu();
    int rc = open_all(&secs);
    printf("opened secs=%.6f ok=%d failed=%d", secs, opened, failed_conns);
    cpu_fields(w0, c0, s0);
    if (rc < 0) printf(" error=%s", failure);
    printf("\n");
    fflush(stdout);
    uint64_t *base = calloc(nconns, sizeof *base);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        int is_echo = strncmp(line, "echo", 4) == 0, is_bc = strncmp(line, "broadcast", 9) == 0;
        if (!is_echo && !is_bc) break;
        for (int i = 0; i < nconns; i++) base[i] = conns[i].rcvd;
        unsigned char *frame;
        size_t len;
        frame = build_frame(is_bc ? "broadcast:" : "", size, 1, &len);
        w0 = now(), c0 = self_cpu(), s0 = server_cpu();
        double t0 = now();
        int ok = 0;
        for (int i = 0; i < nconns && !ok; i++) {
            conn_t *c = &conns[i];
            if (c->state != OPEN) continue;
            /* with --raw the bytes are just sent; blocking is avoided by the tiny size */
            if (send(c->fd, frame, len, MSG_NOSIGNAL) != (ssize_t)len) kill_conn(c, "send failed");
            if (is_bc) ok = 1;   /* the trigger goes on the first open connection only */
        }
        free(frame);
        int got;
        rc = wait_bytes(base, echolen, t0, &secs, &got);
        printf("%s secs=%.6f ok=%d", is_echo ? "echoed" : "broadcast", secs, got);
        cpu_fields(w0, c0, s0);
        if (rc < 0) printf(" error=timeout (%d of %d)", got, opened);
        printf("\n");
        fflush(stdout);
    }
    close_all();
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: loadgen rate|idle --port P [--raw] [--binary] [--conns N] [--inflight K] [--size S]\n"
                    "       [--warmup W] [--duration D] [--timeout T] [--server-pid PID] [--connect-inflight C]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--raw")) raw = 1;
        else if (!strcmp(a, "--binary")) binary = 1;
        else if (!v) return usage();
        else if (!strcmp(a, "--host")) host = v, i++;
        else if (!strcmp(a, "--port")) port = atoi(v), i++;
        else if (!strcmp(a, "--conns")) nconns = atoi(v), i++;
        else if (!strcmp(a, "--inflight")) inflight = atoi(v), i++;
        else if (!strcmp(a, "--size")) size = atoi(v), i++;
        else if (!strcmp(a, "--warmup")) warmup = atof(v), i++;
        else if (!strcmp(a, "--duration")) duration = atof(v), i++;
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v), i++;
        else if (!strcmp(a, "--server-pid")) {
            if (nserver_pids < 16) server_pids[nserver_pids++] = atoi(v);
            i++;
        }
        else if (!strcmp(a, "--connect-inflight")) connect_inflight = atoi(v), i++;
        else return usage();
    }
    if (!port || nconns < 1 || inflight < 1 || size < 1 || connect_inflight < 1) return usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    reqlen = snprintf(request, sizeof request,
                      "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                      host, port);
    unsigned char *frame = build_frame("", size, binary ? 2 : 1, &flen);
    size_t copies = 65536 / flen + 1;
    if (copies > (size_t)inflight) copies = inflight;
    buflen = flen * copies;
    sendbuf = malloc(buflen);
    for (size_t i = 0; i < copies; i++) memcpy(sendbuf + i * flen, frame, flen);
    free(frame);
    echolen = raw ? (size_t)size : header_len(size) + size;
    conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    ep = epoll_create1(0);
    if (!strcmp(mode, "rate")) return run_rate();
    if (!strcmp(mode, "idle")) return run_idle();
    return usage();
}
