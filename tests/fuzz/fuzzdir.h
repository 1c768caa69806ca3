/* What the fuzz targets that apply configs share: a managed directory
 * left by an earlier run is emptied (its files only: it is flat). */
#ifndef FUZZ_FUZZDIR_H
#define FUZZ_FUZZDIR_H

#include <dirent.h>
#include <unistd.h>

static inline void fuzz_empty_dir(const char *dir)
{
	DIR *d = opendir(dir);

	for (struct dirent *de; d && (de = readdir(d));)
		if (de->d_name[0] != '.')
			unlinkat(dirfd(d), de->d_name, 0);
	if (d)
		closedir(d);
}

#endif
