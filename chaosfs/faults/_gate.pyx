# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The fault gate: the one test every request pays (is any rule set?), the per-inode match
cache, and the per-method operation stats (counts, errors and the injected part of them,
latency histograms)."""
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from *:
    """
    static inline unsigned long long __atomic_load_relaxed(unsigned long long *p)
    { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    """
    unsigned long long __atomic_load_relaxed(unsigned long long *p) nogil

cdef extern from *:
    """
    /* The workers load active, may_wait and epoch with acquire: these stores pair with
     * them, so what was published before a flag moved is seen once the flag is (ARM
     * reorders plain stores; x86 does not). */
    static inline void gate_store_flag(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void gate_next_epoch(unsigned long long *p)
    { __atomic_store_n(p, *p + 1, __ATOMIC_RELEASE); }
    """
    void gate_store_flag(int *p, int v) nogil
    void gate_next_epoch(unsigned long long *p) nogil


cdef double now_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def monotonic() -> float:
    return now_s()


cdef inline bint _is_ruled(unsigned long long ruled, int method) noexcept:
    # a method id outside the mask (none today) is never skipped
    return method < 0 or method >= 64 or (ruled >> method) & 1


cdef class Node:
    def __cinit__(self):
        self.fd = -1
        self.lookups = 0
        self.match_epoch = 0
        self.matched = ()
        self.name = b""
        self.parent = None
        self.backing_id = -1

    def __repr__(self):
        return f"Node(ino={self.ino}, name={self.name!r}, fd={self.fd}, lookups={self.lookups})"


cdef class FaultGate:
    def __cinit__(self):
        self.active = False
        self.epoch = 1
        self.timing = True

    def set_active(self, bint on):
        gate_store_flag(<int *>&self.active, on)

    def set_may_wait(self, bint on):
        gate_store_flag(<int *>&self.may_wait, on)

    def set_ruled(self, unsigned long long mask):
        """Which methods some rule applies to (bit m: method m; every bit for a rule on
        all methods). Set with the table, before the epoch moves."""
        self.ruled = mask

    cpdef bint ruled_any(self, object method_ids):
        """Whether a rule applies to one of these methods (before any node is matched)."""
        cdef int m
        for m in method_ids:
            if _is_ruled(self.ruled, m):
                return True
        return False

    def next_epoch(self):
        """Every node's cached match is stale from here (a rule change, a rename)."""
        gate_next_epoch(&self.epoch)

    cpdef tuple match(self, Node node):
        """Rules whose path pattern matches this node; cached per node until the epoch moves."""
        # One RE2 set match over every rule's pattern: the cost does not grow with the
        # number of rules.
        # The epoch is read first: a rule change while the matcher runs (the GIL may go to
        # the gRPC thread) then leaves the node stamped stale, never new and wrong.
        cdef unsigned long long epoch = self.epoch
        node.matched = self.matcher(self.path_of(node))
        node.match_epoch = epoch
        return node.matched

    cpdef object check(self, int method, Node node):
        """None (proceed normally) or a Verdict; never costs more than a flag when idle."""
        if not self.active or not _is_ruled(self.ruled, method):
            return None
        if node.match_epoch != self.epoch:
            self.match(node)
        if not node.matched:
            return None
        return self.verdict_of(method, node.matched)

    def hand_on(self, int method, Node node, bint any_rule=False):
        """For a handler a worker may serve that acts before it checks, checks more than
        once, or must await on its fault path: engine.hand_on for the rules on `node`,
        before any check rolls one."""
        if not self.active or not _is_ruled(self.ruled, method):
            return
        if node.match_epoch != self.epoch:
            self.match(node)
        if node.matched:
            self.hand_on_rules(method, node.matched, any_rule)

    def check_path(self, int method, str path):
        """Like check, for a name that has no node (create, mkdir, unlink, rename targets)."""
        if not self.active or not _is_ruled(self.ruled, method):
            return None
        return self.path_check(method, path)

    cdef void record(self, int method, double t0, bint failed) noexcept:
        cdef double us = (now_s() - t0) * 1e6
        cdef int b = 0
        cdef double edge = 1.0
        self.counts[method] += 1
        if failed:
            self.errors[method] += 1
        while us >= edge and b < N_BUCKETS - 1:
            edge *= 2.0
            b += 1
        self.hist[method][b] += 1

    cdef void record_failed(self, int method, double t0, bint injected) noexcept:
        """A failed operation; `injected`: a fault gave the error (engine.InjectedError),
        not the backing file system. Only error paths call this: a success costs nothing new."""
        self.record(method, t0, True)
        if injected:
            self.injected[method] += 1

    def note(self, int method, double t0, bint failed=False, bint injected=False):
        """Record one operation of the cold path (Python handlers) in the stats; `injected`
        (with `failed`): its error was a fault's."""
        if failed:
            self.record_failed(method, t0, injected)
        else:
            self.record(method, t0, False)

    def stats(self):
        """{method id: (count, errors, injected errors, [bucket counts])}; bucket b holds
        latencies < 2**b µs. Errors not injected are the backing file system's (or chaosfs's
        own: a file handle it never issued, a stale inode)."""
        out = {}
        cdef int m, b
        cdef unsigned long long inj, err
        for m in range(N_METHODS):
            if self.counts[m]:
                # injected first: both paths count an error before its injected part, so
                # read while workers count, the injected part never exceeds the errors
                inj = __atomic_load_relaxed(&self.injected[m])
                err = __atomic_load_relaxed(&self.errors[m])
                out[m] = (self.counts[m], err, min(inj, err),
                          [self.hist[m][b] for b in range(N_BUCKETS)])
        return out

    def c_hits_of(self, unsigned long long slot):
        """Hits the transport's C workers counted for the rule in `slot`."""
        return __atomic_load_relaxed(&self.c_hits[slot % N_HIT_SLOTS])

    def reset_hits(self, unsigned long long slot):
        self.c_hits[slot % N_HIT_SLOTS] = 0

    def reset_stats(self):
        cdef int m, b
        for m in range(N_METHODS):
            self.counts[m] = 0
            self.errors[m] = 0
            self.injected[m] = 0
            for b in range(N_BUCKETS):
                self.hist[m][b] = 0
