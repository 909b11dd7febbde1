/* What the kernel does to a file written or truncated by a caller without CAP_FSETID: drop
 * S_ISUID, and S_ISGID when the group may execute. Shared by both FUSE transports (the
 * libfuse session hooks and the /dev/fuse workers). `fd` may be an O_PATH fd.
 * Returns 1 if the mode changed, 0 if nothing needed changing, -1 with errno on failure. */
#ifndef CHAOSFS_SETID_H
#define CHAOSFS_SETID_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

static inline int chaosfs_clear_setid(int fd)
{
    struct stat s;
    if (fstat(fd, &s) < 0 || !S_ISREG(s.st_mode))
        return 0;
    mode_t kill = s.st_mode & S_ISUID;
    if ((s.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
        kill |= S_ISGID;
    if (!kill)
        return 0;
    mode_t mode = s.st_mode & 07777 & ~kill;
    if (fchmod(fd, mode) == 0)
        return 1;
    if (errno != EBADF)  /* EBADF: an O_PATH fd; its /proc magic link takes a chmod */
        return -1;
    char path[32];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return fchmodat(AT_FDCWD, path, mode, 0) == 0 ? 1 : -1;
}

#endif
