# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The /dev/fuse transport (-transport=cython): chaosfs's own FUSE session, no libfuse.

Mount and INIT happen here; C worker threads (devfuse_core.h) read requests and answer the
hot ones without the GIL (GETATTR too, devfuse_attrs.h) where no rule needs Python; every
other request is decoded (devfuse_decode.pxi), handed to the same Operations handler
pyfuse3 would call, and its result encoded as the reply (devfuse_messages.pxi): on the
worker that read it when its handler cannot wait, else on the trio thread. The file-system
logic sees only the Transport methods below.

    _devfuse.pyx            the transport: mount, INIT, the serving loop, the Transport
                            interface, how a request is served and answered
    devfuse_messages.pxi    request/reply encoding shared by every handler (included)
    devfuse_decode.pxi      one decoder per opcode (included)
    _devfuse.pxd            linux/fuse.h's structs and the C headers' API, declared once
"""
import errno as E
import logging
import os
import stat as S
import threading
import time

import trio
from pyfuse3 import FUSEError

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from chaosfs.faults import methods as _m
from chaosfs.faults.engine import WORKER_SLOT, MustWait, RequestSlot, request_slot
from chaosfs.faults._gate cimport FaultGate

cdef extern from *:
    """
    static inline int df_load_int(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void df_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

    /* A worker's Python thread state, made on its first py_take and kept until it ends.
     * `with gil` on a thread without one builds one (with its 16 KiB frame stack, an mmap)
     * and tears it down on the way out (a munmap: a TLB shoot-down to every CPU this
     * process runs on, dear on a VM): per request, that was most of a metadata handler. */
    static __thread PyThreadState *df_py_tstate;

    static inline void df_py_keep_tstate(void)
    {
        if (!df_py_tstate) {
            PyGILState_Ensure();                /* the state, with the GIL */
            df_py_tstate = PyEval_SaveThread(); /* the GIL goes, the state stays */
        }
    }

    static void df_py_drop_tstate(void)
    {
        if (df_py_tstate) {
            PyEval_RestoreThread(df_py_tstate);
            df_py_tstate = NULL;
            PyGILState_Release(PyGILState_UNLOCKED);  /* the last hold: the state goes */
        }
    }
    """
    int df_load_int(int *p) noexcept nogil
    void df_store_int(int *p, int v) noexcept nogil
    void df_py_keep_tstate() noexcept nogil
    void df_py_drop_tstate() noexcept nogil


log = logging.getLogger("chaosfs.devfuse")
# The slot of every request served without a task (never changed: see RequestSlot).
_NO_LIMIT = RequestSlot(None)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)
cdef extern from "<fcntl.h>" nogil:
    int c_open "open"(const char *path, int flags)
    int O_RDWR, O_CLOEXEC
cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)
cdef extern from "<sys/mount.h>" nogil:
    int mount(const char *source, const char *target, const char *fstype, unsigned long flags,
              const void *data)
    int umount2(const char *target, int flags)
    int MNT_DETACH
cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)
cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec *iov, int iovcnt)

assert (_m.METHOD_ID["getlk"], _m.METHOD_ID["setlk"], _m.METHOD_ID["setlkw"]) == (DF_M_GETLK, DF_M_SETLK, DF_M_SETLKW)
assert _m.METHOD_ID["read"] == DF_M_READ and _m.METHOD_ID["write"] == DF_M_WRITE
assert _m.METHOD_ID["fsync"] == DF_M_FSYNC and _m.METHOD_ID["flush"] == DF_M_FLUSH
assert _m.METHOD_ID["getattr"] == DF_M_GETATTR

MAX_WRITE = 1 << 20           # 1 MiB requests: max_pages 256
HEADROOM = 4096               # request headers beyond the payload
FORGET_LINGER = 0.02          # s: longest a forget waits for the trio thread (df_forget)
PROTO_MINOR = 40
XATTR_CREATE, XATTR_REPLACE = 1, 2
cdef size_t IN_HDR = sizeof(fuse_in_header)


include "devfuse_messages.pxi"


def _possible_cpus() -> int:
    """The kernel makes one ring queue per possible CPU (not online: a hotplugged CPU's
    callers need theirs), and the ring is not used until every one has an entry."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            return max(int(part.rpartition("-")[2]) for part in f.read().strip().split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def _conn_id(bytes mountpoint) -> int:
    """The FUSE connection number (the mount's minor device), from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            parts = line.split()
            if parts[4].replace(b"\\040", b" ") == mountpoint and b" fuse." in line:
                return int(parts[2].split(b":")[1])
    return -1


# ---- the C gate's view of a rule ---------------------------------------------------------

_HOT_IDS = ((DF_HOT_READ, DF_M_READ), (DF_HOT_WRITE, DF_M_WRITE), (DF_HOT_FLUSH, DF_M_FLUSH),
            (DF_HOT_FSYNC, DF_M_FSYNC))
_CORRUPT_MODE = {"zero": DF_CORRUPT_ZERO, "random": DF_CORRUPT_RANDOM, "bitflip": DF_CORRUPT_BITFLIP}


cdef inline bint _inline(uint32_t op, FaultGate gate):
    """Whether a request that reached the trio thread can be answered on its reading task,
    without a task of its own: no rule can make it wait (FaultGate.may_wait), and its
    handler awaits nothing else. A task per request costs more than most handlers;
    pyfuse3's session loop, too, runs handlers on the task that read them. (A worker's own
    test is _worker_takes.)"""
    return _never_waits(op, gate.may_wait, gate.active)


cdef inline bint _never_waits(uint32_t op, bint may_wait, bint active) noexcept nogil:
    if may_wait:
        return False
    if op == FUSE_GETATTR or op == FUSE739_STATX:
        # An injected error on a directory makes getattr drop its name through a thread,
        # which may need the kernel to get a reply first: never on the reading task.
        return not active
    return (op == FUSE_LOOKUP or op == FUSE_SETATTR or op == FUSE_OPEN or op == FUSE_CREATE
            or op == FUSE_READ or op == FUSE_WRITE or op == FUSE_FLUSH or op == FUSE_RELEASE
            or op == FUSE_OPENDIR or op == FUSE_READDIR or op == FUSE_READDIRPLUS
            or op == FUSE_RELEASEDIR or op == FUSE_MKDIR or op == FUSE_MKNOD
            or op == FUSE_SYMLINK or op == FUSE_LINK or op == FUSE_UNLINK or op == FUSE_RMDIR
            or op == FUSE_READLINK or op == FUSE_ACCESS or op == FUSE_STATFS
            or op == FUSE_GETXATTR or op == FUSE_LISTXATTR or op == FUSE_SETXATTR
            or op == FUSE_REMOVEXATTR)
    # Not: FSYNC, FSYNCDIR (a thread), RENAME (invalidates through a thread), locks (wait),
    # FALLOCATE/LSEEK/COPY_FILE_RANGE (rare; as they were), TMPFILE, INTERRUPT.


cdef inline bint _worker_takes(uint32_t op, bint may_wait, bint active) noexcept nogil:
    """Whether a worker may serve this request itself. While some rule can make requests
    wait it still serves those whose handler checks its rules before it does anything
    else (or hands on first, FaultGate.hand_on): if a waiting rule matches, MustWait is
    raised before any side effect and the request goes on to the trio thread untouched.
    (The kill-priv note OPEN and SETATTR take first is queued again when the trio thread
    decodes the request anew.) GETATTR too while a rule is set: the one case that must
    await (an injected error on a directory) hands on. Not LINK or SYMLINK while a rule
    can wait: two checks, on a node and on a path."""
    if op == FUSE_GETATTR or op == FUSE739_STATX:
        return True
    if not _never_waits(op, False, active):
        return False
    return not may_wait or (op != FUSE_LINK and op != FUSE_SYMLINK)


cdef int _py_take(df_server *s, df_msg *m) noexcept nogil:
    """A worker's offer of a request it could not answer in C (df_server.py_take): served
    here, on the worker, if its handler cannot wait. That saves the trio thread's wake-up,
    which costs more than most handlers on a virtual machine."""
    if (df_load_int(&s.trio_busy)
            or not _worker_takes((<fuse_in_header *>m.data).opcode, df_load_int(<int *>s.gate_may_wait),
                                 df_load_int(<int *>s.gate_active))):
        return 0
    df_py_keep_tstate()
    with gil:
        return (<DevFuseTransport>s.py_owner)._take(m)


cdef class _HandlersLockInstrument:
    """A trio instrument: holds the transport's handlers lock while the trio thread runs
    tasks and lets it go while trio waits for I/O, so a handler on a worker never
    interleaves with one on the trio thread except where the latter awaits, as two trio
    tasks would. It also tells the workers (trio_busy) when the trio thread is awake
    anyway: they then queue to it rather than wait for the GIL. Never raises (trio would
    drop the instrument)."""
    cdef df_server *s
    cdef object lock
    cdef public bint held

    def before_io_wait(self, timeout):
        if self.held:
            df_store_int(&self.s.trio_busy, 0)
            self.held = False
            self.lock.release()

    def after_io_wait(self, timeout):
        if not self.held:
            self.lock.acquire()
            self.held = True
            df_store_int(&self.s.trio_busy, 1)


cdef bint _c_decidable(r):
    """Whether the workers can apply this rule themselves (see set_hot)."""
    return not (r.delay_us or r.jitter_us or r.max_hits or r.torn or r.block)  # Python's


# ---- the transport ------------------------------------------------------------------------

cdef class DevFuseTransport:
    """chaosfs's own FUSE session; implements chaosfs.transport.Transport."""
    never_fire = _m.NEVER_FIRE_ANY  # methods whose requests never reach the daemon
    answers_hot = True              # the workers answer READ/WRITE/FLUSH/FSYNC (set_hot)
    cdef df_server s
    cdef object ops
    cdef FaultGate gate
    cdef bytes mountpoint
    cdef dict pt_offers
    cdef dict kills
    cdef dict waits
    cdef bint mounted
    cdef bint passthrough_ok
    cdef int want_depth
    cdef bint want_killpriv
    cdef public int kernel_minor
    cdef public int workers
    cdef int conn_id
    cdef str want_uring          # -fuse-uring: off, auto, on
    cdef bint uring_negotiated   # INIT asked for FUSE_OVER_IO_URING
    cdef public bint uring_live  # ring entries registered: requests come through the ring
    cdef str uring_why           # why not, for the log and describe()
    # Held by whichever thread runs handler code: the trio thread (while it is not waiting
    # for I/O), a worker serving a request itself (_take), and the control plane while it
    # publishes a rule table (FaultEngine.handlers_lock), so no handler sees a rule change
    # halfway and none on a worker meets a rule that would make it wait.
    cdef public object handlers_lock
    cdef bint taking             # workers may serve requests themselves (main() runs)

    def __cinit__(self):
        memset(&self.s, 0, sizeof(df_server))
        self.s.dev = -1
        self.s.efd = -1
        self.pt_offers = {}
        self.kills = {}
        self.waits = {}
        self.handlers_lock = threading.RLock()
        self.s.py_exit = df_py_drop_tstate
        self.s.py_keep = 1

    def __dealloc__(self):
        # Not in close(), and not at all while a worker df_join gave up on may still run:
        # it may yet look a GETATTR up (the process exit takes the table then).
        if self.s.detached == 0:
            df_attrs_free(&self.s.attrs)
            free(self.s.forgets)

    # -- lifecycle (the daemon's calls) --

    def mount(self, ops, str mountpoint, options, *, bint killpriv_v2=True,
              int passthrough_depth=0, int workers=2, str uring="off"):
        """Mount over `mountpoint` and answer the kernel's INIT; requests wait until main().
        `uring` (-fuse-uring): off, auto (FUSE over io_uring when the kernel offers it, else
        /dev/fuse reads), on (OSError at once if it cannot be had)."""
        import resource
        if uring not in ("off", "auto", "on"):
            raise ValueError(f"uring={uring!r}: expected off, auto or on")
        self.want_uring = uring
        self.uring_why = ""
        self.ops = ops
        self.gate = ops.gate
        self.want_killpriv = killpriv_v2
        self.want_depth = passthrough_depth
        self.workers = max(1, min(workers, DF_MAX_WORKERS))
        self.mountpoint = os.fsencode(mountpoint)
        fd = c_open(b"/dev/fuse", O_RDWR | O_CLOEXEC)
        if fd < 0:
            raise OSError(errno, f"/dev/fuse: {os.strerror(errno)}")
        self.s.dev = fd
        st = os.stat(self.mountpoint)
        opts = [o for o in options if not o.startswith(("fsname=", "subtype="))]
        fsname = next((o[7:] for o in options if o.startswith("fsname=")), "chaosfs")
        subtype = next((o[8:] for o in options if o.startswith("subtype=")), "chaosfs")
        flags = [o for o in opts if o in ("dev", "suid")]
        data = ",".join([f"fd={fd}", f"rootmode={S.S_IFMT(st.st_mode):o}", "user_id=0", "group_id=0"]
                        + [o for o in opts if o not in flags]).encode()
        cdef bytes src = fsname.encode(), fstype = f"fuse.{subtype}".encode()
        cdef unsigned long mflags = 0
        if "dev" not in flags:
            mflags |= 0x4  # MS_NODEV
        if "suid" not in flags:
            mflags |= 0x2  # MS_NOSUID
        if mount(src, self.mountpoint, fstype, mflags, <const char *>data) < 0:
            err = errno
            close(fd)
            self.s.dev = -1
            raise OSError(err, f"mount {mountpoint}: {os.strerror(err)}")
        self.mounted = True
        # Not stat(): the kernel would ask us for the root's attributes before INIT.
        self.conn_id = _conn_id(self.mountpoint)
        self._init()
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.s.nissued = nofile
        self.s.issued = <unsigned char *>calloc(nofile, 1)
        if self.s.issued == NULL or df_gate_init(&self.s.gate, nofile,
                                                  <uint64_t *>&self.gate.c_hits[0]) < 0:
            raise MemoryError()
        self.s.bufsize = MAX_WRITE + HEADROOM
        self.s.killpriv_v2 = 1 if self.want_killpriv else 0
        self.s.gate_active = <const int *>&self.gate.active
        self.s.gate_epoch = &self.gate.epoch
        self.s.counts = &self.gate.counts[0]
        self.s.errors = &self.gate.errors[0]
        self.s.injected = &self.gate.injected[0]
        self.s.hist = &self.gate.hist[0][0]
        if df_init_server(&self.s) < 0:
            raise OSError(errno, "eventfd")
        if self.uring_negotiated:
            self._start_uring()
        elif uring != "off":
            log.warning("FUSE over io_uring not used (-fuse-uring=%s): %s; serving with /dev/fuse reads",
                        uring, self.uring_why)
        if uring == "on" and not self.uring_live:
            self._abandon()
            raise OSError(E.EOPNOTSUPP, f"-fuse-uring=on: FUSE over io_uring unavailable: {self.uring_why}")

    cdef _start_uring(self):
        """Register the ring entries (one queue per possible CPU); on failure make the kernel
        fall back to /dev/fuse reads, which it would otherwise hold every request for."""
        cdef int nq = _possible_cpus()
        cdef int err
        with nogil:
            err = df_uring_start(&self.s, nq)
        if err == 0:
            self.uring_live = True
            log.info("FUSE over io_uring: %d queue(s), %d-%d entries each, 1 MiB payloads",
                     nq, DF_UQ_INITIAL, DF_UQ_MAX)
            return
        self.uring_why = f"registering the ring entries failed: {os.strerror(err)} (errno {err})"
        with nogil:
            df_uring_refuse(&self.s)
        log.warning("FUSE over io_uring: %s; falling back to /dev/fuse reads", self.uring_why)

    cdef _abandon(self):
        """Undo a mount that must not serve (-fuse-uring=on without io_uring)."""
        if self.mounted:
            umount2(self.mountpoint, MNT_DETACH)
            self.mounted = False
        if self.s.dev >= 0:
            close(self.s.dev)
            self.s.dev = -1

    cdef _init(self):
        """Read INIT, answer it: what we want of what the kernel offers."""
        cdef char buf[8192]
        cdef ssize_t n
        with nogil:
            n = read(self.s.dev, buf, sizeof(buf))
        if n < <ssize_t>(IN_HDR + 16):
            raise OSError(errno or E.EIO, "no FUSE INIT from the kernel")
        cdef fuse_in_header *h = <fuse_in_header *>buf
        cdef fuse_init_in *i = <fuse_init_in *>(buf + IN_HDR)
        if h.opcode != FUSE_INIT or i.major != 7 or i.minor < 31:
            raise OSError(E.EPROTO, f"FUSE protocol {i.major}.{i.minor} (need 7.31 or later)")
        self.kernel_minor = i.minor
        cdef uint32_t offered = i.flags
        cdef uint32_t offered2 = i.flags2 if (i.flags & FUSE_INIT_EXT) and n >= <ssize_t>(IN_HDR + 20) else 0
        cdef uint32_t want = (FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES |
                              FUSE_AUTO_INVAL_DATA | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
                              FUSE_ASYNC_DIO |
                              FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES |
                              FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS)
        if self.want_killpriv:
            want |= FUSE_HANDLE_KILLPRIV_V2
        cdef fuse740_init_out o
        memset(&o, 0, sizeof(o))
        o.major = 7
        o.minor = min(i.minor, PROTO_MINOR)
        o.max_readahead = i.max_readahead
        o.flags = want & offered
        if self.want_depth and (offered2 & FUSE740_PASSTHROUGH_FLAGS2):
            o.flags |= FUSE_INIT_EXT
            o.flags2 |= FUSE740_PASSTHROUGH_FLAGS2
            o.max_stack_depth = self.want_depth
            self.passthrough_ok = True
        cdef int probe
        if self.want_uring != "off":
            # The kernel offers it only with CONFIG_FUSE_IO_URING and the fuse module's
            # enable_uring on; the probe checks io_uring itself is allowed to us, because
            # once INIT asks for it every request waits for our ring entries.
            probe = df_uring_probe()
            if not (offered2 & DF_FUSE_OVER_IO_URING_FLAGS2):
                self.uring_why = (f"the kernel (protocol 7.{i.minor}) did not offer it: needs Linux >= 6.14 "
                                  "with CONFIG_FUSE_IO_URING and /sys/module/fuse/parameters/enable_uring = Y")
            elif probe < 0:
                self.uring_why = f"io_uring_setup failed: {os.strerror(-probe)} (errno {-probe})"
            else:
                o.flags |= FUSE_INIT_EXT
                o.flags2 |= DF_FUSE_OVER_IO_URING_FLAGS2
                o.minor = min(i.minor, <uint32_t>DF_URING_MINOR)
                self.uring_negotiated = True
        o.max_background = 64
        o.congestion_threshold = 48
        o.max_write = MAX_WRITE
        o.time_gran = 1
        o.max_pages = MAX_WRITE // 4096
        self.s.killpriv_v2 = 1 if (o.flags & FUSE_HANDLE_KILLPRIV_V2) else 0
        if df_reply(self.s.dev, h.unique, 0, &o, sizeof(o)) < 0:
            raise OSError(errno, "answering FUSE INIT")

    async def main(self, int max_tasks=128):
        """Serve until the session ends (unmount) or the caller is cancelled."""
        # With the ring live, /dev/fuse only carries FORGET and INTERRUPT: one reader is plenty.
        cdef int nworkers = 1 if self.uring_live else self.workers
        cdef _HandlersLockInstrument inst = _HandlersLockInstrument.__new__(_HandlersLockInstrument)
        inst.s = &self.s
        inst.lock = self.handlers_lock
        self.s.gate_may_wait = <const int *>&self.gate.may_wait
        self.s.py_owner = <void *>self
        try:
            self.handlers_lock.acquire()  # this thread is running: it holds the lock
            inst.held = True
            df_store_int(&self.s.trio_busy, 1)
            trio.lowlevel.add_instrument(inst)
            self.s.py_take = _py_take  # an aligned pointer store; workers load it with acquire
            self.taking = True
            await self._main(nworkers, max_tasks)
        finally:
            # Under the lock: no worker takes a request after this, and none takes the GIL
            # for one (a worker left running past close() must not, at interpreter exit).
            self.taking = False
            self.s.py_take = NULL
            try:
                trio.lowlevel.remove_instrument(inst)
            except KeyError:
                pass  # trio dropped it already
            if inst.held:
                inst.held = False
                self.handlers_lock.release()

    async def _main(self, int nworkers, int max_tasks):
        cdef int rc
        with nogil:
            rc = df_start(&self.s, nworkers)
        if rc < 0:
            raise OSError(errno, f"starting FUSE workers: {os.strerror(errno)}")
        limit = trio.Semaphore(max_tasks)
        cdef df_msg *m
        cdef df_msg *nxt
        cdef _Request r
        cdef uint64_t tick
        async with trio.open_nursery() as nursery:
            forgets_due = None  # when the pile of forgets begun is taken (df_forget)
            while self.s.ended < self.s.nworkers:
                if forgets_due is not None:
                    with trio.move_on_at(forgets_due):
                        await trio.lowlevel.wait_readable(self.s.efd)
                else:
                    await trio.lowlevel.wait_readable(self.s.efd)
                read(self.s.efd, &tick, 8)  # (EAGAIN after the timeout: nonblocking)
                df_gate_tick(&self.s.gate)  # frees views retired while workers were busy
                m = df_take(&self.s)
                pending = df_forgets_pending(&self.s)
                if pending:
                    # taken when awake anyway, when big, or once it has had time to grow
                    if forgets_due is None:
                        forgets_due = trio.current_time() + FORGET_LINGER
                    if m != NULL or pending >= DF_FORGET_WAKE or trio.current_time() >= forgets_due:
                        forgets_due = None
                        await self._forgets()
                while m != NULL:
                    nxt = m.next
                    if m.len == 0:  # a worker is gone: the session ended
                        free(m)
                        self.s.ended += 1
                        m = nxt
                        continue
                    r = _wrap(m, self)
                    m = nxt
                    if r.h.opcode == FUSE_INTERRUPT:
                        # Only a lock wait is ours to cut short (it answers EINTR); any
                        # other request is answered by its own reply soon enough.
                        if r.alen >= sizeof(fuse_interrupt_in):
                            scope = self.waits.get((<fuse_interrupt_in *>r.arg).unique)
                            if scope is not None:
                                scope.cancel()
                        continue
                    if _inline(r.h.opcode, self.gate):
                        await self._serve(r, None)  # never yields: see _inline
                        continue
                    await limit.acquire()
                    nursery.start_soon(self._serve, r, limit)
            nursery.cancel_scope.cancel()

    def close(self, bint unmount=True):
        """Unmount (lazily), abort the connection so every worker returns, join them."""
        if self.mounted and unmount:
            umount2(self.mountpoint, MNT_DETACH)
            self.mounted = False
        try:  # requests of apps that still hold files are failed, not left waiting
            with open(f"/sys/fs/fuse/connections/{self.conn_id}/abort", "w") as f:
                f.write("1")
        except OSError:
            pass
        with nogil:
            df_join(&self.s, 2.0)
            df_uring_stop(&self.s, 1.0)
        df_store_int(&self.s.py_keep, 0)  # a worker still running keeps its thread state
        if self.s.dev >= 0:
            close(self.s.dev)
            self.s.dev = -1

    def describe(self) -> str:
        kp = "HANDLE_KILLPRIV_V2 negotiated" if self.s.killpriv_v2 else "no HANDLE_KILLPRIV_V2"
        pt = ""
        if self.passthrough_ok:
            pt = "; kernel passthrough for unmatched files"
        elif self.want_depth:
            pt = "; kernel passthrough NOT available (needs Linux >= 6.9 and CAP_SYS_ADMIN)"
        if self.uring_live:
            io = (f"FUSE over io_uring ({self.s.nq} queue thread(s), one per CPU, up to {DF_UQ_MAX} "
                  f"entries each; 1 /dev/fuse thread for FORGET/INTERRUPT)")
            minor = min(self.kernel_minor, DF_URING_MINOR)
        else:
            io = f"{self.workers} /dev/fuse worker thread(s)"
            if self.want_uring != "off":
                io += f" (io_uring not used: {self.uring_why})"
            minor = min(self.kernel_minor, PROTO_MINOR)
        return f"chaosfs /dev/fuse transport, protocol 7.{minor}, {io}, 1 MiB requests; {kp}{pt}"

    # -- the Transport interface (what FsOperations calls) --

    def invalidate_inode(self, uint64_t ino, bint attr_only):
        cdef fuse_notify_inval_inode_out o
        o.ino = ino
        o.off = -1 if attr_only else 0
        o.len = 0
        self._notify(FUSE_NOTIFY_INVAL_INODE, &o, sizeof(o), NULL, 0)

    def invalidate_entry(self, uint64_t parent_ino, bytes name):
        cdef fuse_notify_inval_entry_out o
        o.parent = parent_ino
        o.namelen = len(name)
        o.flags = 0
        name0 = name + b"\0"
        self._notify(FUSE_NOTIFY_INVAL_ENTRY, &o, sizeof(o), PyBytes_AS_STRING(name0), len(name0))

    cdef _notify(self, int code, void *p, size_t n, const char *extra, size_t extra_n):
        cdef fuse_out_header h
        cdef iovec iov[3]
        h.len = sizeof(h) + n + extra_n
        h.error = code
        h.unique = 0
        iov[0].iov_base = &h
        iov[0].iov_len = sizeof(h)
        iov[1].iov_base = p
        iov[1].iov_len = n
        iov[2].iov_base = <void *>extra
        iov[2].iov_len = extra_n
        cdef int dev = self.s.dev
        with nogil:
            writev(dev, iov, 3 if extra_n else 2)  # ENOENT: nothing cached, fine

    def readdir_plus(self, DirBuffer token) -> bool:
        # FUSE_READDIRPLUS_AUTO: the kernel asks for attributes on a directory's first batch
        # and after a lookup in it (ls -l, find -type); a bare listing gets names only.
        return token.plus

    def readdir_names(self, DirBuffer token, entries, Py_ssize_t start):
        """Plain READDIR: the run of entries' records from `start` that fits (no lookup:
        the kernel learns no inode from them)."""
        token.buf += entries.span(start, token.limit - len(token.buf))

    def readdir_reply(self, DirBuffer token, bytes name, entry, uint64_t next_id) -> bool:
        cdef size_t namelen = len(name)
        cdef size_t head = sizeof(fuse_entry_out) + sizeof(fuse_dirent)
        cdef size_t rec = (head + namelen + 7) & ~(<size_t>7)
        if len(token.buf) + rec > token.limit:
            return False
        cdef bytearray one = bytearray(rec)
        cdef char *p = one
        cdef fuse_dirent *d
        _fill_entry(<fuse_entry_out *>p, entry)
        d = <fuse_dirent *>(p + sizeof(fuse_entry_out))
        d.ino = entry.st_ino
        d.off = next_id
        d.namelen = namelen
        d.type = (entry.st_mode & 0o170000) >> 12
        memcpy(<char *>d + sizeof(fuse_dirent), PyBytes_AS_STRING(name), namelen)
        token.buf += one
        return True

    def attrs_offer(self, uint64_t ino, int fd, double timeout, unsigned long long epoch):
        # the workers answer this inode's GETATTR with fstat(fd) until the gate's epoch moves
        if self.s.efd < 0:
            return  # not serving (yet, or any more)
        cdef uint64_t ns = <uint64_t>(timeout * 1e9) if timeout > 0 else 0
        with nogil:
            df_attrs_offer(&self.s.attrs, ino, fd, ns, epoch)

    def attrs_drop(self, uint64_t ino):
        if self.s.efd < 0:
            return
        with nogil:
            df_attrs_drop(&self.s.attrs, ino)

    def attrs_drop_many(self, inos):
        # With the GIL held: each drop is a short write-locked probe, and a worker holds
        # the read lock only around an fstat, never waiting for the GIL meanwhile.
        cdef uint64_t ino
        if self.s.efd < 0:
            return
        for ino in inos:
            df_attrs_drop(&self.s.attrs, ino)

    def take_kill(self, ino) -> bool:
        n = self.kills.get(ino, 0)
        if not n:
            return False
        if n == 1:
            del self.kills[ino]
        else:
            self.kills[ino] = n - 1
        return True

    def clear_setid(self, int fd) -> bool:
        cdef int r = chaosfs_clear_setid(fd)
        if r < 0:
            raise OSError(errno, os.strerror(errno))
        return r == 1

    def passthrough_active(self) -> bool:
        return self.passthrough_ok

    def backing_open(self, int fd) -> int:
        cdef fuse740_backing_map m
        memset(&m, 0, sizeof(m))
        m.fd = fd
        cdef int rc
        if not self.passthrough_ok:
            raise OSError(E.EOPNOTSUPP, "kernel passthrough not negotiated")
        with nogil:
            rc = ioctl(self.s.dev, FUSE740_IOC_BACKING_OPEN, &m)
        if rc < 0:
            raise OSError(errno, os.strerror(errno))
        return rc

    def backing_close(self, int backing_id):
        cdef uint32_t i = backing_id
        if ioctl(self.s.dev, FUSE740_IOC_BACKING_CLOSE, &i) < 0:
            raise OSError(errno, os.strerror(errno))

    def offer_passthrough(self, uint64_t fh, int backing_id):
        self.pt_offers[fh] = backing_id

    def set_hot(self, uint64_t fh, int mask, rules=()):
        """Publish this open's view for the workers: `mask` (DF_HOT_* bits) the methods no
        rule touches; `rules` the rules matching its file. A method whose every applicable
        rule is one C decides (no delay: a worker never sleeps; no max_hits: Python counts
        that budget) is answered by the workers with the rules applied; any other goes to
        the trio thread and the Operations logic."""
        cdef int in_c = 0, bit, bi, k, n = 0
        cdef list picked = []
        for bit, mid in _HOT_IDS:
            if mask & bit:
                continue
            applicable = [r for r in rules if r.applies(mid)]
            if applicable and all(_c_decidable(r) for r in applicable):
                in_c |= bit
        if not in_c and not (mask & DF_HOT_ALL):
            # Nothing a worker may do for this open: no view sends everything to Python
            # (and opens made while no rule exists cost no allocation).
            df_view_publish(&self.s.gate, fh, NULL)
            return
        if in_c:
            picked = [r for r in rules if any(r.applies(mid) for bit, mid in _HOT_IDS if in_c & bit)]
        cdef df_view *v = <df_view *>calloc(1, sizeof(df_view) + len(picked) * sizeof(df_crule))
        if v == NULL:
            raise MemoryError()
        v.direct = mask & DF_HOT_ALL
        v.in_c = in_c
        v.n = len(picked)
        cdef df_crule *c
        for k, r in enumerate(picked):
            c = &v.r[k]
            c.slot = r.slot
            c.threshold = (1 << 32) if r.probability >= 100.0 else <uint64_t>(r.probability / 100.0 * 4294967296.0)
            c.err = r.errno
            c.short_frac = r.short
            c.expires = r.expires_at
            if r.corrupt is not None:
                c.corrupt_mode = _CORRUPT_MODE[r.corrupt.mode]
                c.corrupt_len = r.corrupt.length
                c.corrupt_occ = r.corrupt.occurrences
            for bi, (bit, mid) in enumerate(_HOT_IDS):
                if in_c & bit and r.applies(mid):
                    c.methods |= bit
                    if r.random_errno:
                        choices = r.errno_pool(mid)[:DF_MAX_CHOICES]
                        c.nchoices[bi] = len(choices)
                        for n, e in enumerate(choices):
                            c.choices[bi][n] = e
        df_view_publish(&self.s.gate, fh, v)

    # -- serving one request (a trio task, the reading task, or a worker: _take) --

    # Both paths: a write on the request's /dev/fuse fd, or its ring entry committed.
    cdef int _reply(self, _Request r, int err, const void *p, size_t n):
        return df_msg_reply(r.m, err, p, n)

    cdef int _reply_bytes(self, _Request r, bytes data):
        return df_msg_reply(r.m, 0, PyBytes_AS_STRING(data), len(data))

    async def _forgets(self):
        """The FORGETs the workers piled up (df_forget), in the order they came."""
        cdef size_t n = 0, i
        cdef fuse_forget_one *f = df_forgets_take(&self.s, &n)
        if f == NULL:
            return
        try:
            items = [(f[i].nodeid, f[i].nlookup) for i in range(n)]
        finally:
            free(f)
        await self.ops.forget(items)

    cdef int _take(self, df_msg *m) noexcept:
        """_py_take's part with the GIL: 1 if this worker served the request."""
        cdef _Request r = None
        lock = self.handlers_lock
        # Never waits for it: a worker blocked here could not serve the hot requests, and
        # whoever holds it (the trio thread, a rule change) will drain the queue.
        if not lock.acquire(False):
            return 0
        try:
            # Again under the lock, which a rule change takes too: what is true now stays
            # true until the handler returns.
            if not self.taking or not _worker_takes((<fuse_in_header *>m.data).opcode,
                                                    self.gate.may_wait, self.gate.active):
                return 0
            r = _wrap(m, self)  # owns m from here: answered below, whatever happens
            if self._serve_sync(r):
                return 1
            r.m = NULL  # MustWait: untouched, unanswered; the queue gets it back
            return 0
        except BaseException:
            log.exception("serving a request on a worker failed")
            if r is None:
                return 0  # not yet wrapped: the queue gets it
            if not r.m.replied:
                self._reply(r, E.EIO, NULL, 0)
            return 1
        finally:
            lock.release()

    cdef bint _serve_sync(self, _Request r):
        """_serve on a worker: the coroutine runs to the end at once. False if a waiting
        rule matched (MustWait): nothing done, nothing sent."""
        cdef int err = 0
        token = request_slot.set(WORKER_SLOT)
        coro = _dispatch(self, r)
        try:
            coro.send(None)
        except StopIteration:
            pass
        except MustWait:
            request_slot.reset(token)
            return False
        except BaseException as e:
            err = self._error_of(r, e)
        else:  # it awaited something: MustWait comes first, so only a bug gets here
            coro.close()
            log.error("opcode %d waited on a worker thread; answered EIO", r.h.opcode)
            err = E.EIO
        request_slot.reset(token)
        if err:
            self._reply(r, err, NULL, 0)
        return True

    cdef int _error_of(self, _Request r, e):
        """The errno a handler's exception is answered with (a FUSEError's, made safe for
        the opcode, or EIO for a bug)."""
        if isinstance(e, FUSEError):
            return _m.safe_errno(_METHOD_OF.get(r.h.opcode, -1), e.errno)
        if isinstance(e, Exception):
            log.error("opcode %d failed unexpectedly", r.h.opcode, exc_info=e)
        return E.EIO

    async def _serve(self, _Request r, limit):
        """One request, in a task of its own (`limit`: the -workers semaphore it holds a
        slot of) or on the reading task (None)."""
        cdef int err = 0
        slot = _NO_LIMIT if limit is None else RequestSlot(limit)
        # the request's own slot: a fault delay gives it up, the reading task must not wait
        token = request_slot.set(slot)
        try:
            await _dispatch(self, r)
        except (trio.Cancelled, KeyboardInterrupt):
            err = E.EINTR
            raise
        except Exception as e:
            err = self._error_of(r, e)
        finally:
            request_slot.reset(token)
            if err:
                self._reply(r, err, NULL, 0)
            if slot.held:
                limit.release()

    def lock_get(self, uint64_t ino, uint64_t owner, uint64_t fh, uint32_t typ, uint64_t start,
                 uint64_t end):
        cdef uint32_t pid = 0
        cdef int err
        with nogil:
            err = df_lk_get(&self.s.locks, ino, owner, fh, &typ, &start, &end, &pid)
        if err:
            raise OSError(err, os.strerror(err))
        return typ, start, end, pid

    def lock_set(self, uint64_t ino, uint64_t owner, uint32_t pid, uint64_t fh, uint32_t typ,
                 uint64_t start, uint64_t end, bint is_flock):
        cdef int err
        with nogil:
            err = df_lk_set(&self.s.locks, ino, owner, pid, fh, typ, start, end, is_flock)
        if err:
            raise OSError(err, os.strerror(err))


include "devfuse_decode.pxi"
