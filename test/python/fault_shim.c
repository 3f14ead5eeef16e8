/*
 * fault_shim.c: LD_PRELOAD library for test_regressions_locks.py.  While
 * the file named by $REDLOCK_FAULT_FLAG exists, epoll_create1() fails with
 * EMFILE, as when a backend runs out of file descriptors: PostgreSQL's
 * CreateWaitEventSet then raises an ERROR, which redlock must survive in
 * its commit and abort callbacks.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

int
epoll_create1(int flags)
{
	static int	(*real) (int);
	const char *flag = getenv("REDLOCK_FAULT_FLAG");

	if (real == NULL)
		real = (int (*) (int)) dlsym(RTLD_NEXT, "epoll_create1");
	if (flag != NULL && access(flag, F_OK) == 0)
	{
		errno = EMFILE;
		return -1;
	}
	return real(flags);
}
