/* getpid() cost: N raw getpid syscalls (no libc caching), ns per call.
 *
 *   getpid_loop [N]      prints "<ns per call>"
 *
 * Used by tests/bench/ebpf.py to see what syscall tracepoints cost a process
 * that is not traced: with any program attached to raw_syscalls, every
 * process on the host takes the slow syscall entry path. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000000;
	struct timespec a, b;

	if (n <= 0)
		n = 5000000;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		syscall(SYS_getpid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n;
	printf("%.1f\n", ns);
	return 0;
}
