/* libFuzzer target for the configuration parser.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iuserspace \
 *       tests/fuzz/fuzz_config.c userspace/config.c userspace/log.c userspace/buf.c \
 *       $(pkg-config --cflags --libs yaml-0.1) -o /tmp/fuzz_config
 *   /tmp/fuzz_config -max_total_time=60 [corpus-dir]
 *
 * Any input must give either a config (then also split its validate_command)
 * or an error of one line starting with the name; never a crash or a leak. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_config *c = NULL;
	char err[512];
	char **argv;
	int rc;

	rc = config_parse((const char *)data, size, "fuzz.yaml", &c, err, sizeof(err));
	if (rc) {
		if (c || strncmp(err, "fuzz.yaml:", 10) || strchr(err, '\n'))
			abort();
		return 0;
	}
	if (!c)
		abort();
	if (c->onepanel.validate_command) {
		rc = config_split_command(c->onepanel.validate_command, "/etc/x y.conf", &argv);
		if (rc && rc != -ENOMEM)
			abort();	/* the loader already accepted it */
		config_free_argv(argv);
	}
	config_free(c);
	return 0;
}
