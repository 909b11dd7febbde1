"""chaosfs: a FUSE passthrough that injects I/O faults on request."""
__version__ = "0.1.0"
