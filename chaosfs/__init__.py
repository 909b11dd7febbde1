"""chaosfs: a FUSE passthrough that injects I/O faults on request."""
__version__ = "0.1.0"

# The pyfuse3 transport's session hooks (_fuseconn.c) only bind if they are loaded before
# pyfuse3 is: the package does it first, so no module's import order can break them.
from chaosfs.transport import fuseconn as _fuseconn  # noqa: E402,F401
