"""Build glue: the Cython hot path and the gRPC stubs.

Stubs are generated from chaosfs/proto/*.proto at build time (never committed), so the
.proto files stay the single source of truth for the wire format.
"""
import glob
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def generate_grpc_stubs() -> None:
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(glob.glob(os.path.join("chaosfs", "proto", "*.proto")))
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for proto in protos:
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"-I{well_known}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            f"--grpc_python_out={HERE}",
            proto,
        ])
        if rc != 0:
            sys.exit(f"protoc failed on {proto}")


os.chdir(HERE)
generate_grpc_stubs()

extensions = [
    # the fault gate and the inode record it matches (every request's first test)
    Extension("chaosfs.faults._gate", ["chaosfs/faults/_gate.pyx"], extra_compile_args=["-O2"]),
    # the pyfuse3 transport's hot handlers and the file-system logic's syscall helpers
    Extension("chaosfs.fs._hot", ["chaosfs/fs/_hot.pyx"], extra_compile_args=["-O2"],
              depends=["chaosfs/faults/_gate.pxd"]),
    # a directory listing pass, read with getdents64 and kept as READDIR records
    Extension("chaosfs.fs._dirents", ["chaosfs/fs/_dirents.pyx"], extra_compile_args=["-O2", "-D_GNU_SOURCE"]),
    # -transport=cython: chaosfs's own /dev/fuse session (worker threads in devfuse_core.h)
    Extension("chaosfs.transport._devfuse", ["chaosfs/transport/_devfuse.pyx"],
              include_dirs=["chaosfs/transport"],
              depends=["chaosfs/transport/devfuse_core.h", "chaosfs/transport/devfuse_uring.h",
                       "chaosfs/transport/devfuse_gate.h", "chaosfs/transport/devfuse_locks.h",
                       "chaosfs/transport/devfuse_attrs.h", "chaosfs/transport/devfuse_messages.pxi",
                       "chaosfs/transport/devfuse_decode.pxi",
                       "chaosfs/transport/fuse740.h",
                       "chaosfs/transport/setid.h", "chaosfs/faults/_gate.pxd"],
              extra_compile_args=["-O2", "-D_GNU_SOURCE"], libraries=["pthread"]),
]
# Plain C (a libfuse ABI shim, not Python logic), so it stays out of cythonize().
fuseconn = Extension("chaosfs.transport._fuseconn", ["chaosfs/transport/_fuseconn.c"],
                     depends=["chaosfs/transport/fuse740.h", "chaosfs/transport/setid.h"],
                     extra_compile_args=["-O2", "-Wall"], libraries=["dl"])

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ) + [fuseconn],
)
