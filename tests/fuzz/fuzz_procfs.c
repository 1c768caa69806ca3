/* libFuzzer target for the /proc parsers.
 *
 * Every input goes to each parser as the whole text of its file, in an
 * exact-size heap copy so ASan catches any read past len. Mountinfo is
 * parsed against a fixed /proc/filesystems, and /proc/filesystems against
 * a fixed mountinfo, so both halves are exercised. The snapshot is reused
 * (reset per input), as the agent does at each interval.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iuserspace \
 *     tests/fuzz/fuzz_procfs.c userspace/procfs.c userspace/metrics.c \
 *     userspace/log.c userspace/buf.c $(pkg-config --cflags --libs libcjson) -lm \
 *     -o /tmp/fuzz_procfs
 *   /tmp/fuzz_procfs -max_total_time=60 tests/unit/data/proc  (seeds: any dir) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "procfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char filesystems[] = "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n\txfs\n"
				  "nodev\tfuse\n\tfuseblk\n";
/* mountpoints that exist everywhere, so statvfs succeeds */
static const char mountinfo[] = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
				"28 27 0:5 / /tmp rw - tmpfs tmpfs rw\n"
				"29 27 0:6 / /proc rw - proc proc rw\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct metrics *m;
	struct proc_info pi;
	uint64_t n;
	char *t;

	if (!m)
		m = metrics_new();
	if (!m)
		return 0;
	t = malloc(size ? size : 1);
	if (!t)
		return 0;
	memcpy(t, data, size);

	memset(&pi, 0, sizeof(pi));
	procfs_parse_stat(t, size, &pi);
	procfs_parse_status(t, size, &pi);
	procfs_parse_io(t, size, &pi);
	procfs_parse_children(t, size, &n);

	procfs_parse_host_stat(t, size, m);
	procfs_parse_loadavg(t, size, m);
	procfs_parse_meminfo(t, size, m);
	procfs_parse_diskstats(t, size, m);
	procfs_parse_netdev(t, size, m);
	procfs_parse_pressure(t, size, "cpu", m);
	procfs_parse_pressure(t, size, "memory", m);
	procfs_parse_pressure(t, size, "io", m);
	procfs_parse_mountinfo(t, size, filesystems, sizeof(filesystems) - 1, m);
	procfs_parse_mountinfo(mountinfo, sizeof(mountinfo) - 1, t, size, m);

	metrics_reset(m);
	free(t);
	return 0;
}
