/*
 * ucat_shim.c: an LD_PRELOAD library for libutp's own `ucat`, used by the benchmark anchor
 * (bench/suite.py, row "libutp ucat -> ucat") and tests/peers/ucat.py. Built next to ucat by
 * tests/peers/setup_peers.sh into tests/peers/build/libutp/ (git-ignored). libutp's and ucat's
 * sources are NOT modified: the shim only wraps five libc calls that ucat makes.
 *
 * Why: ucat never sets SO_RCVBUF/SO_SNDBUF, so it runs with the kernel default (212 992 bytes),
 * and on this kernel net.core.{r,w}mem_default are read-only inside a network namespace (they
 * mirror the host's), so a namespace cannot give it bigger ones without changing the shared
 * machine's global sysctls. And ucat prints nothing about its transfer, so the benchmark needs
 * a way to timestamp the bytes as they reach the receiving application, without putting a pipe
 * (and a reader process) behind ucat's stdout.
 *
 * What it does, driven by the environment:
 *
 *   UCAT_SHIM_SOCKBUF=N   every AF_INET/AF_INET6 SOCK_DGRAM socket() gets setsockopt(SO_RCVBUF, N)
 *                         and setsockopt(SO_SNDBUF, N); when net.core.*mem_max caps them it
 *                         retries with SO_RCVBUFFORCE / SO_SNDBUFFORCE (needs CAP_NET_ADMIN).
 *                         The values read back (Linux reports twice what was granted) are reported.
 *   UCAT_SHIM_EXPECT=N    once the bytes ucat wrote to its stdout (fd 1: the received stream; send
 *                         stdout to /dev/null) reach N, report them with the CLOCK_MONOTONIC times
 *                         of the first and of that last write, at once, with the datagram counts
 *                         so far (the caller then stops both ucat processes: see SIGTERM).
 *   UCAT_SHIM_FD=FD       where reports go (default 2, stderr).
 *
 * On SIGTERM (which ucat does not handle itself) the shim writes its exit report and _exit()s,
 * so a caller that has its measurement can stop ucat at once. Left alone, ucat's teardown takes
 * up to half a second during which it busy-polls: once its stdin reached EOF it closes fd 0 but
 * keeps it in its poll() set (POLLNVAL, at once, every time), and libutp destroys a closed
 * socket only at its next 500 ms timeout check.
 *
 * Reports are single lines `ucat-shim {json}`:
 *   {"event":"socket","rcvbuf":R,"sndbuf":S}             after each UDP socket()
 *   {"event":"bound","port":P}                           after bind() (ucat -p 0 prints no port)
 *   {"event":"received","bytes":N,"first":T0,"last":T1,"datagrams_sent":D,"datagrams_received":R}
 *                                                        when UCAT_SHIM_EXPECT bytes were written
 *   {"event":"exit","bytes":N,"datagrams_sent":D,"datagrams_received":R,"signal":S}
 *
 * Per call the shim adds an indirect call and a counter increment (write(1) also a branch; the
 * clock is read twice per run), so ucat's hot path is unchanged for practical purposes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static int (*real_socket)(int, int, int);
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);

static long long sockbuf;     /* UCAT_SHIM_SOCKBUF; 0 = leave the sockets alone */
static long long expect = -1; /* UCAT_SHIM_EXPECT; -1 = no "received" report */
static int report_fd = 2;     /* UCAT_SHIM_FD */
static unsigned long long written, sent, received;
static double first_write;
static int reported;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof line, "ucat-shim ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	if (real_write)
		real_write(report_fd, line, (size_t)n);
}

static void report_exit(int sig)
{
	/* Integers only: this also runs in a signal handler. */
	report("{\"event\":\"exit\",\"bytes\":%llu,\"datagrams_sent\":%llu,\"datagrams_received\":%llu,"
	       "\"signal\":%d}",
	       written, sent, received, sig);
}

static void on_sigterm(int sig)
{
	report_exit(sig);
	_exit(0);
}

static void *must(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (!f) {
		fprintf(stderr, "ucat-shim: dlsym(%s) failed: %s\n", name, dlerror());
		abort();
	}
	return f;
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *v;
	real_socket = (int (*)(int, int, int))must("socket");
	real_bind = (int (*)(int, const struct sockaddr *, socklen_t))must("bind");
	real_write = (ssize_t (*)(int, const void *, size_t))must("write");
	real_sendto = (ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))must("sendto");
	real_recvfrom = (ssize_t (*)(int, void *, size_t, int, struct sockaddr *, socklen_t *))must("recvfrom");
	if ((v = getenv("UCAT_SHIM_SOCKBUF")) && *v)
		sockbuf = atoll(v);
	if ((v = getenv("UCAT_SHIM_EXPECT")) && *v)
		expect = atoll(v);
	if ((v = getenv("UCAT_SHIM_FD")) && *v)
		report_fd = atoi(v);
	signal(SIGTERM, on_sigterm);
}

__attribute__((destructor)) static void shim_exit(void)
{
	report_exit(0);
}

static int raise_buffer(int fd, int opt, int force)
{
	int value = (int)sockbuf, got = 0;
	socklen_t len = sizeof got;
	setsockopt(fd, SOL_SOCKET, opt, &value, sizeof value);
	getsockopt(fd, SOL_SOCKET, opt, &got, &len);
	if ((long long)got < 2 * sockbuf) { /* capped by net.core.*mem_max */
		setsockopt(fd, SOL_SOCKET, force, &value, sizeof value);
		len = sizeof got;
		getsockopt(fd, SOL_SOCKET, opt, &got, &len);
	}
	return got;
}

int socket(int domain, int type, int protocol)
{
	int fd = real_socket(domain, type, protocol);
	if (fd >= 0 && sockbuf > 0 && (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_DGRAM) {
		int saved = errno;
		int r = raise_buffer(fd, SO_RCVBUF, SO_RCVBUFFORCE);
		int s = raise_buffer(fd, SO_SNDBUF, SO_SNDBUFFORCE);
		report("{\"event\":\"socket\",\"rcvbuf\":%d,\"sndbuf\":%d}", r, s);
		errno = saved;
	}
	return fd;
}

int bind(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
	int rc = real_bind(fd, addr, addrlen);
	if (rc == 0) {
		int saved = errno;
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
			int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
			                                     : ntohs(((struct sockaddr_in *)&ss)->sin_port);
			report("{\"event\":\"bound\",\"port\":%d}", port);
		}
		errno = saved;
	}
	return rc;
}

ssize_t write(int fd, const void *buf, size_t count)
{
	ssize_t n = real_write(fd, buf, count);
	if (fd == 1 && n > 0) {
		if (written == 0)
			first_write = now();
		written += (unsigned long long)n;
		if (!reported && expect >= 0 && written >= (unsigned long long)expect) {
			int saved = errno;
			double last_write = now();
			reported = 1;
			report("{\"event\":\"received\",\"bytes\":%llu,\"first\":%.9f,\"last\":%.9f,"
			       "\"datagrams_sent\":%llu,\"datagrams_received\":%llu}",
			       written, first_write, last_write, sent, received);
			errno = saved;
		}
	}
	return n;
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t alen)
{
	ssize_t n = real_sendto(fd, buf, len, flags, addr, alen);
	if (n >= 0)
		sent++;
	return n;
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *alen)
{
	ssize_t n = real_recvfrom(fd, buf, len, flags, addr, alen);
	if (n >= 0)
		received++;
	return n;
}
