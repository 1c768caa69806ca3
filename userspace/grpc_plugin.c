/* Finding and loading the gRPC plugin (see grpc_server.h for why it is one).
 *
 * The plugin is code run as root, so it is loaded only from a file owned by
 * root (or by the agent's user) that nobody else can write, and the file
 * checked is the file loaded (opened once, without following a symlink,
 * checked with fstat, loaded through /proc/self/fd): the file named by
 * $ONESHIELD_GRPC_PLUGIN when set, else the first of "next to the agent's
 * executable" and /usr/lib/oneshield-agent/. */
#include "grpc_server.h"

#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mgmt.h"

#define PLUGIN_NAME "oneshield-agent-grpc.so"
#define PLUGIN_LIBDIR "/usr/lib/oneshield-agent"

static const struct grpc_plugin_ops *ops;
static void *handle;

/* Opens path and checks the file it got (not the name: a file swapped in
 * between a check and dlopen would be loaded unchecked). Returns the fd, or
 * -errno with why filled. The caller dlopens /proc/self/fd/N. */
static int open_trusted(const char *path, char *why, size_t whylen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		int e = errno;
		snprintf(why, whylen, "%.512s: %s", path, e == ELOOP ? "a symbolic link" : strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid()) ||
	    (st.st_mode & 022)) {
		snprintf(why, whylen, "%.512s: not a regular file owned by root and writable only by its owner", path);
		close(fd);
		return -EPERM;
	}
	return fd;
}

static int load(char *err, size_t errlen)
{
	char cand[3][PATH_MAX];
	int n = 0;
	const char *env = getenv("ONESHIELD_GRPC_PLUGIN");
	if (env && *env) {
		/* named explicitly: that file or nothing */
		snprintf(cand[n++], PATH_MAX, "%s", env);
	} else {
		char self[PATH_MAX];
		ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (l > 0) {
			self[l] = '\0';
			snprintf(cand[n++], PATH_MAX, "%s/%s", dirname(self), PLUGIN_NAME);
		}
		snprintf(cand[n++], PATH_MAX, "%s/%s", PLUGIN_LIBDIR, PLUGIN_NAME);
	}

	char why[2048] = "";
	for (int i = 0; i < n; i++) {
		int fd = open_trusted(cand[i], why, sizeof(why));
		if (fd < 0)
			continue;
		char fdpath[64];
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
		void *h = dlopen(fdpath, RTLD_NOW | RTLD_LOCAL);
		close(fd); /* the mapping stays */
		if (!h) {
			snprintf(why, sizeof(why), "%.1024s", dlerror());
			continue;
		}
		const struct grpc_plugin_ops *o = dlsym(h, "oneshield_grpc_plugin");
		if (!o || o->abi != GRPC_PLUGIN_ABI) {
			snprintf(why, sizeof(why), "%.512s: not a oneshield-agent gRPC plugin of ABI %d", cand[i],
				 GRPC_PLUGIN_ABI);
			dlclose(h);
			continue;
		}
		handle = h;
		ops = o;
		log_debug("grpc: plugin %s loaded", cand[i]);
		return 0;
	}
	snprintf(err, errlen, "gRPC support (%s) cannot be loaded: %.1024s", PLUGIN_NAME, why);
	return -ENOENT;
}

int grpc_api_start(struct agent *a, const char *listen, size_t max_subscribers, struct grpc_api **out, char *err,
		   size_t errlen)
{
	*out = NULL;
	if (!ops && load(err, errlen))
		return -ENOENT;
	return ops->start(a, listen, max_subscribers, out, err, errlen);
}

void grpc_api_begin_shutdown(struct grpc_api *g)
{
	if (g)
		ops->begin_shutdown(g);
}

size_t grpc_api_streams(const struct grpc_api *g)
{
	return g ? ops->streams(g) : 0;
}

size_t grpc_api_subscribers(const struct grpc_api *g)
{
	return g ? ops->subscribers(g) : 0;
}

int grpc_api_port(const struct grpc_api *g)
{
	return g ? ops->port(g) : 0;
}

void grpc_api_stop(struct grpc_api *g)
{
	if (g)
		ops->stop(g);
	/* The plugin stays mapped: gRPC keeps process-wide state (its
	 * threads are joined, but absl/grpc statics remain referenced). */
}

/* ---- the One Shield client, also in the plugin ---- */

int mgmt_start(struct agent *a, struct mgmt **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!ops && load(err, errlen))
		return -ENOENT;
	return ops->mgmt_start(a, out, err, errlen);
}

void mgmt_begin_shutdown(struct mgmt *m)
{
	if (m)
		ops->mgmt_begin_shutdown(m);
}

bool mgmt_sending(const struct mgmt *m)
{
	return m && ops->mgmt_sending(m);
}

void mgmt_stop(struct mgmt *m)
{
	if (m)
		ops->mgmt_stop(m);
}

void mgmt_status_json(const struct mgmt *m, struct cJSON *status)
{
	if (m)
		ops->mgmt_status_json(m, status);
	else
		cJSON_AddBoolToObject(cJSON_AddObjectToObject(status, "oneshield"), "enabled", false);
}

int mgmt_collect(const struct mgmt *m, struct metrics *out)
{
	return m ? ops->mgmt_collect(m, out) : 0;
}
