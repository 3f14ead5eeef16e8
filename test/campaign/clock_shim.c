/*
 * clock_shim.c: LD_PRELOAD library that lets the fault campaign step a
 * redis-server's wall clock, as an NTP step or an operator's `date -s`
 * would.  The wall clock it reports (gettimeofday, clock_gettime of the
 * real-time clocks, time) is the system's plus an offset:
 *
 *	 REDLOCK_CLOCK_OFFSET_MS  the offset at start-up (a restarted server
 *							  keeps the host's clock where it was)
 *	 REDLOCK_CLOCK_STEP_MS	  what each SIGRTMIN+5 adds to it, and each
 *							  SIGRTMIN+6 takes away (NTP stepping it back)
 *
 * Monotonic clocks are left alone, as a real step leaves them.
 *
 * Why not libfaketime (Debian's faketime package): Debian's redis-server
 * is linked with jemalloc, whose start-up reads the clock; libfaketime's
 * clock hook first resolves the real functions with dlsym, which
 * allocates, which re-enters jemalloc's start-up: the server hangs before
 * it listens.  This shim resolves nothing: it asks the kernel directly
 * (the clock_gettime system call) and never allocates.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile long long offset_us;
static long long step_us;

static void
on_step(int sig)
{
	if (sig == SIGRTMIN + 5)
		offset_us += step_us;
	else
		offset_us -= step_us;
}

__attribute__((constructor))
static void
shim_init(void)
{
	const char *offset = getenv("REDLOCK_CLOCK_OFFSET_MS");
	const char *step = getenv("REDLOCK_CLOCK_STEP_MS");
	struct sigaction sa;

	offset_us = offset ? atoll(offset) * 1000 : 0;
	step_us = step ? atoll(step) * 1000 : 0;
	sa.sa_handler = on_step;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGRTMIN + 5, &sa, NULL);
	sigaction(SIGRTMIN + 6, &sa, NULL);
}

static int
real_clock(clockid_t clk, struct timespec *ts)
{
	return (int) syscall(SYS_clock_gettime, clk, ts);
}

static void
shift(struct timespec *ts)
{
	long long	ns = (long long) ts->tv_sec * 1000000000LL + ts->tv_nsec +
		offset_us * 1000LL;

	ts->tv_sec = (time_t) (ns / 1000000000LL);
	ts->tv_nsec = (long) (ns % 1000000000LL);
}

int
clock_gettime(clockid_t clk, struct timespec *ts)
{
	int			rc = real_clock(clk, ts);

	if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE))
		shift(ts);
	return rc;
}

int
gettimeofday(struct timeval *tv, void *tz)
{
	struct timespec ts;

	(void) tz;
	if (real_clock(CLOCK_REALTIME, &ts) != 0)
		return -1;
	shift(&ts);
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}

time_t
time(time_t *out)
{
	struct timespec ts;

	if (real_clock(CLOCK_REALTIME, &ts) != 0)
		return (time_t) -1;
	shift(&ts);
	if (out)
		*out = ts.tv_sec;
	return ts.tv_sec;
}
