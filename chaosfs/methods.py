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
EXTRA_METHODS: tuple[str, ...] = ("lookup", "readdir", "releasedir", "fsyncdir")
ALL_METHODS: tuple[str, ...] = COMPAT_METHODS + EXTRA_METHODS
METHOD_ID: dict[str, int] = {name: i for i, name in enumerate(ALL_METHODS)}

# Operations that a kernel cache can answer without asking the daemon: a rule on one of
# them makes the files it matches uncached (direct_io for data, zero timeouts for attributes
# and names). open, readlink, xattrs and readdir always reach the daemon under pyfuse3.
DATA_METHODS = frozenset({METHOD_ID["read"], METHOD_ID["write"]})
ATTR_METHODS = frozenset({METHOD_ID["getattr"], METHOD_ID["lookup"]})

# Ops that cannot report an error to the caller (the kernel ignores release's reply).
DELAY_ONLY = frozenset({METHOD_ID["release"], METHOD_ID["releasedir"]})
