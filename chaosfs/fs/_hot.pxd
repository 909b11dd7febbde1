# C-level declarations of the pyfuse3 transport's hot handlers (read/write/fsync/flush/
# release); the gate and the inode record they consult are chaosfs/faults/_gate.pxd.
from chaosfs.faults._gate cimport FaultGate


cdef class HotPath:
    cdef public FaultGate gate
    cdef public dict handles
    cdef public bint fsync_inline
    cdef object _bad_fh(self, int method, double t0)
