/* Small filesystem and fd helpers shared by the agent side and the cloned child. */
#ifndef SMOLVM_FSUTIL_H
#define SMOLVM_FSUTIL_H

#include <sys/types.h>

/* Makes path and its missing parents (existing ones are fine). 0, or -1 with errno. */
int mkdir_p(const char *path, mode_t mode);
/* One directory in an existing parent (there already: fine). 0, or -1 with errno. */
int mkdir_one(const char *path, mode_t mode);
/* Closes *fd if open and marks it closed (-1). */
void close_fd_at(int *fd);

#endif
