/* Tight loop of failing open()s of a missing path (each returns -ENOENT from do_sys_openat2).
 * Prints the mean nanoseconds per call. Built statically on the controller by bench/overhead. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000, i;
	const char *path = argc > 2 ? argv[2] : "/kpf-bench-missing";
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (i = 0; i < n; i++)
		if (open(path, O_RDONLY) != -1 || errno != ENOENT)
			return 2;
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
