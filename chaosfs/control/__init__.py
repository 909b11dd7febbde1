"""The control plane: the gRPC server (server.py: 0.9's injure.Injure and chaosfs.v1) and
its command-line client chaosfs-ctl (ctl.py)."""
