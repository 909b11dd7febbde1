"""Operation names and their numeric ids, shared by the hot path, the rules and the stats.

The first 31 are Chaos Mesh 0.9's method names in its order (the `injure.Injure/Methods`
answer); the rest are operations 0.9 could not target, offered through chaosfs.v1 only.
"""
COMPAT_METHODS: tuple[str, ...] = (
    "open", "read", "write", "mkdir", "rmdir", "opendir", "fsync", "flush", "release",
    "truncate", "getattr", "chown", "chmod", "utimens", "allocate", "getlk", "setlk",
    "setlkw", "statfs", "readlink", "symlink", "create", "access", "link", "mknod",
    "rename", "unlink", "getxattr", "listxattr", "removexattr", "setxattr",
)
EXTRA_METHODS: tuple[str, ...] = ("lookup", "readdir", "releasedir", "fsyncdir", "lseek",
                                  "copy_file_range")
ALL_METHODS: tuple[str, ...] = COMPAT_METHODS + EXTRA_METHODS
METHOD_ID: dict[str, int] = {name: i for i, name in enumerate(ALL_METHODS)}

# Operations that a kernel cache can answer without asking the daemon: a rule on one of
# them makes the files it matches uncached (direct_io for data, zero timeouts for attributes
# and names). open, readlink, xattrs and readdir always reach the daemon under pyfuse3.
DATA_METHODS = frozenset({METHOD_ID["read"], METHOD_ID["write"]})
ATTR_METHODS = frozenset({METHOD_ID["getattr"], METHOD_ID["lookup"]})

# Ops that cannot report an error to the caller (the kernel ignores release's reply).
DELAY_ONLY = frozenset({METHOD_ID["release"], METHOD_ID["releasedir"]})

# What the kernel does with an ENOSYS reply (fs/fuse, Linux 6.x): for these opcodes it means
# "this server has no such operation" and the kernel switches it off for the whole connection
# (no_open, no_opendir, no_create, no_flush, no_fsync, no_fsyncdir, no_access, no_*xattr,
# no_rename2, no_fallocate, no_lseek, no_copy_file_range): an OPEN then "succeeds" with fh 0 forever, fsync silently
# succeeds forever, xattrs answer EOPNOTSUPP until remount. No reply of ours may carry it.
ENOSYS_STICKY = frozenset(METHOD_ID[m] for m in (
    "open", "opendir", "create", "flush", "fsync", "fsyncdir", "access", "getxattr",
    "setxattr", "listxattr", "removexattr", "rename", "allocate", "lseek", "copy_file_range"))
# Sent instead, where 0.9's API asks for ENOSYS on one of them: the errno the kernel itself
# reports for an unimplemented xattr or fallocate, and which it passes through unchanged.
ENOSYS_STANDIN = 95  # EOPNOTSUPP
# The kernel refuses a reply whose error is 512 or more (ERESTARTSYS and up are in-kernel
# codes): the write to /dev/fuse fails and the app's syscall never returns.
MAX_REPLY_ERRNO = 511

# Accepted (0.9 lists them) but never reaching chaosfs: with default_permissions the kernel
# checks access(2) itself. Under pyfuse3 (libfuse 3.14 without lock handlers) the kernel also
# keeps POSIX and BSD locks local, and there is no fallocate, lseek or copy_file_range
# handler; the /dev/fuse transport negotiates locks and serves all four.
NEVER_FIRE_ANY = frozenset({METHOD_ID["access"]})
NEVER_FIRE = NEVER_FIRE_ANY | {METHOD_ID[m] for m in ("getlk", "setlk", "setlkw", "allocate",
                                                      "lseek", "copy_file_range")}


def safe_errno(method: int, err: int) -> int:
    """The errno to put in a reply for `method`: never one that changes the connection."""
    if err == 38 and method in ENOSYS_STICKY:
        return ENOSYS_STANDIN
    if not 0 < err <= MAX_REPLY_ERRNO:
        return 5  # EIO
    return err
