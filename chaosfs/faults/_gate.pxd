# C-level declarations of the fault gate and of the inode record it matches rules against.

cdef double now_s() noexcept nogil   # CLOCK_MONOTONIC, seconds

cdef enum:
    N_METHODS = 48
    N_BUCKETS = 32
    N_HIT_SLOTS = 4096   # devfuse_gate.h's DF_HIT_SLOTS

cdef class Node:
    # One kernel-visible inode. `fd` is an O_PATH handle (or -1 until first needed);
    # parent/name locate it for *at() calls and for fault-path matching.
    cdef public long long ino
    cdef public long long dev
    cdef public long long bino
    cdef public long long lookups
    cdef public int fd
    cdef public bint is_dir
    cdef public bint is_link
    cdef public object parent
    cdef public bytes name
    cdef public unsigned long long match_epoch
    cdef public tuple matched
    # Opens of this inode by kind: the kernel refuses to mix cached and passthrough opens,
    # and all passthrough opens share one backing id.
    cdef public int cached_opens
    cdef public int pt_opens
    cdef public int backing_id


cdef class FaultGate:
    # `active` is the one test the no-rule path pays. Rule sets are immutable snapshots
    # swapped in by the control plane; `epoch` invalidates every Node's match cache. The three
    # flags are read by C workers: set them through set_active/set_may_wait/next_epoch.
    cdef readonly bint active
    # Some rule can make a request wait (a delay, a blocking power cut): while it is off the
    # cython transport answers cold requests on its reading task, without a task each.
    cdef readonly bint may_wait
    cdef readonly unsigned long long epoch
    # Bit m: some rule applies to method m. A check for a method no rule names returns at
    # once, before any path is built or matched (set_ruled, with the table it describes).
    cdef readonly unsigned long long ruled
    cdef public object path_of
    cdef public object verdict_of
    cdef public object hand_on_rules
    cdef public object path_check
    cdef public object matcher
    cdef unsigned long long counts[N_METHODS]
    cdef unsigned long long hist[N_METHODS][N_BUCKETS]
    cdef unsigned long long errors[N_METHODS]
    # the part of `errors` a fault injected (an errno rule, a power cut's EIO); the rest is
    # what the backing file system or chaosfs itself answered
    cdef unsigned long long injected[N_METHODS]
    cdef bint timing
    # hits of rules the cython transport's workers fired, by Rule.slot
    cdef unsigned long long c_hits[N_HIT_SLOTS]
    cpdef object check(self, int method, Node node)
    cpdef bint ruled_any(self, object method_ids)
    cpdef tuple match(self, Node node)
    cdef void record(self, int method, double t0, bint failed) noexcept
    cdef void record_failed(self, int method, double t0, bint injected) noexcept
