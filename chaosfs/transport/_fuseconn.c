/*
 * FUSE connection choices that pyfuse3 + libfuse 3.14 (Debian 12) cannot make.
 *
 * This module sits between pyfuse3 and libfuse: it interposes fuse_session_new() and
 * fuse_session_mount(), which pyfuse3 calls through the dynamic linker (fuseconn.py loads
 * it RTLD_GLOBAL before pyfuse3), and installs libfuse's own custom-I/O hooks
 * (fuse_session_custom_io): a read() and a writev() that see every request and reply on
 * /dev/fuse. With them:
 *
 *  - Requests are read with one read(2). libfuse's default for pyfuse3 (which has a
 *    write_buf handler) is splice(2) into a pipe and a read back out of it: two syscalls per
 *    request and a pipe copy for every WRITE payload. Measured: 1.8x the 4 KiB random-write
 *    IOPS. (The init wrapper clears FUSE_CAP_SPLICE_READ; the read hook needs it off too.)
 *  - FUSE_HANDLE_KILLPRIV_V2 (protocol 7.33) is added to the INIT reply when the kernel
 *    offers it: the kernel then tells the server when a write, truncate or O_TRUNC open
 *    comes from a caller without CAP_FSETID, which is the only way a root daemon can clear
 *    set-id bits the way the kernel would for that caller (before it, an O_TRUNC open by a
 *    user kept a file's setuid bit). WRITE with FUSE_WRITE_KILL_SUIDGID is handled here,
 *    on the request's fh (chaosfs's fh is the backing fd); SETATTR(size) and OPEN(O_TRUNC)
 *    carrying the flag are queued per node for the Python handlers (take_kill()), which
 *    clear the bits once the operation succeeded. Capabilities need nothing: the backing
 *    file system drops security.capability itself when our pwrite/ftruncate reaches it.
 *
 *  - Kernel FUSE passthrough (Linux >= 6.9, opt-in): FUSE_PASSTHROUGH and max_stack_depth
 *    go into the INIT reply, and an OPEN/CREATE reply whose fh the Python open handler
 *    registered (passthrough_reply()) gets FOPEN_PASSTHROUGH and the backing id it obtained
 *    with backing_open(). The kernel then serves that file's read/write/mmap from the
 *    backing file without a request reaching us. Which opens qualify is Python's call
 *    (no read/write rule matches; chaosfs/fs/operations.py).
 *
 * Until enable() is called every interposed function is a plain forward, so importing this
 * module into a process that mounts nothing changes nothing.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <linux/fuse.h>
#include "fuse740.h"
#include "setid.h"
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* libfuse 3 ABI (stable across 3.x): only what we touch. */
struct fuse_session;
struct fuse_args;
struct fuse_conn_info_head {
    unsigned proto_major, proto_minor, max_write, max_read, max_readahead, capable, want;
};
typedef void (*init_fn)(void *userdata, struct fuse_conn_info_head *conn);
struct custom_io {
    ssize_t (*writev)(int fd, struct iovec *iov, int count, void *userdata);
    ssize_t (*read)(int fd, void *buf, size_t len, void *userdata);
    void *splice_receive;
    void *splice_send;
};
#define CAP_SPLICE_READ (1u << 9)


static struct fuse_session *(*real_session_new)(struct fuse_args *, const void *, size_t, void *);
static int (*real_session_mount)(struct fuse_session *, const char *);
static int (*real_custom_io)(struct fuse_session *, const struct custom_io *, int);
static int (*real_session_fd)(struct fuse_session *);
static int (*real_notify_inval_inode)(struct fuse_session *, uint64_t, int64_t, int64_t);
static struct fuse_session *session;

static struct {
    int enabled;          /* enable() was called */
    int want_killpriv_v2;
    int want_passthrough; /* max_stack_depth to ask for, 0 = off */
    int new_hooked;       /* our fuse_session_new ran */
    int io_installed;     /* custom I/O is on the session */
    int init_seen, init_replied;
    uint64_t init_unique;
    uint32_t kernel_minor, kernel_flags, kernel_flags2;
    int killpriv_v2;      /* negotiated */
    int passthrough;      /* negotiated */
} st;

/* Nodes whose SETATTR(size)/OPEN(O_TRUNC) asked for the kill; consumed by take_kill(). A
 * small ring: entries are taken within the same request, so it never holds many. */
#define PENDING 64
static uint64_t pending[PENDING];
static unsigned pending_next;

/* OPEN/CREATE requests awaiting their reply (unique, opcode), and the passthrough answers
 * the Python handlers registered for them (fh -> backing id). Entries live for one request;
 * sized for -workers' maximum (1024 requests in flight), so neither table can overflow and
 * leave a stale fh behind. Touched only on the FUSE loop's thread. */
#define INFLIGHT 1024
static struct { uint64_t unique; uint32_t opcode; } opens[INFLIGHT];
static unsigned opens_next, opens_live;  /* live: replies still to patch (skip the scan at 0) */
static struct { uint64_t fh; int32_t backing_id; int used; } pt_pending[INFLIGHT];

static init_fn pyfuse3_init;
static void *ops_copy;

static int resolve(void)
{
    if (real_session_new)
        return 0;
    void *h = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return -1;
    real_session_new = dlvsym(h, "fuse_session_new", "FUSE_3.0");
    real_session_mount = dlvsym(h, "fuse_session_mount", "FUSE_3.0");
    real_custom_io = dlvsym(h, "fuse_session_custom_io", "FUSE_3.0");
    real_session_fd = dlvsym(h, "fuse_session_fd", "FUSE_3.0");
    real_notify_inval_inode = dlvsym(h, "fuse_lowlevel_notify_inval_inode", "FUSE_3.0");
    return real_session_new && real_session_mount ? 0 : -1;
}

static void wrapped_init(void *userdata, struct fuse_conn_info_head *conn)
{
    pyfuse3_init(userdata, conn);
    /* With splice, libfuse moves requests through a pipe and our read hook would not see
     * them; plain read() is also one syscall per request instead of two. */
    conn->want &= ~CAP_SPLICE_READ;
}

EXPORT struct fuse_session *fuse_session_new(struct fuse_args *args, const void *op,
                                             size_t op_size, void *userdata)
{
    if (resolve() < 0)
        return NULL;
    if (!st.enabled || op_size < sizeof(init_fn))
        return real_session_new(args, op, op_size, userdata);
    /* libfuse copies the ops table; ours differs in the first member, init. */
    free(ops_copy);
    ops_copy = malloc(op_size);
    if (!ops_copy)
        return NULL;
    memcpy(ops_copy, op, op_size);
    memcpy(&pyfuse3_init, ops_copy, sizeof(init_fn));
    if (pyfuse3_init) {
        init_fn w = wrapped_init;
        memcpy(ops_copy, &w, sizeof(init_fn));
    }
    st.new_hooked = 1;
    return real_session_new(args, ops_copy, op_size, userdata);
}

#define clear_setid chaosfs_clear_setid

static void kill_fd(int fd, uint64_t nodeid)
{
    /* The kernel changes no cached mode on this path; without the invalidation stat(2)
     * would show the old bits until the attribute timeout. Attributes only: no inode lock. */
    if (clear_setid(fd) == 1 && session && real_notify_inval_inode)
        real_notify_inval_inode(session, nodeid, -1, 0);
}

static void queue_kill(uint64_t nodeid)
{
    unsigned i = __atomic_fetch_add(&pending_next, 1, __ATOMIC_RELAXED) % PENDING;
    __atomic_store_n(&pending[i], nodeid, __ATOMIC_RELAXED);
}

static void note_open(const struct fuse_in_header *in)
{
    unsigned i = opens_next++ % INFLIGHT;
    if (!opens[i].unique)
        opens_live++;  /* else it replaces one whose reply never came */
    opens[i].unique = in->unique;
    opens[i].opcode = in->opcode;
}

static void inspect_request(const char *buf, size_t len)
{
    if (len < sizeof(struct fuse_in_header))
        return;
    const struct fuse_in_header *in = (const void *)buf;
    const char *arg = buf + sizeof(*in);
    size_t alen = len - sizeof(*in);
    switch (in->opcode) {
    case FUSE_WRITE:
        /* Also without KILLPRIV_V2: direct-I/O writes carry the flag on every kernel. */
        if (alen >= sizeof(struct fuse_write_in)) {
            const struct fuse_write_in *w = (const void *)arg;
            if (w->write_flags & FUSE_WRITE_KILL_SUIDGID)
                kill_fd((int)w->fh, in->nodeid);
        }
        break;
    case FUSE_SETATTR:
        if (st.killpriv_v2 && alen >= sizeof(struct fuse_setattr_in)) {
            const struct fuse_setattr_in *a = (const void *)arg;
            if ((a->valid & (FATTR_KILL_SUIDGID | FATTR_SIZE)) == (FATTR_KILL_SUIDGID | FATTR_SIZE))
                queue_kill(in->nodeid);
        }
        break;
    case FUSE_CREATE:
        if (st.passthrough)
            note_open(in);
        break;
    case FUSE_OPEN:
        if (st.passthrough)
            note_open(in);
        if (st.killpriv_v2 && alen >= sizeof(struct fuse_open_in)) {
            const struct fuse_open_in *o = (const void *)arg;
            if ((o->flags & O_TRUNC) && (o->open_flags & FUSE_OPEN_KILL_SUIDGID))
                queue_kill(in->nodeid);
        }
        break;
    case FUSE_INIT:
        if (alen >= 16) {
            const struct fuse_init_in *i = (const void *)arg;
            st.init_seen = 1;
            st.init_unique = in->unique;
            st.kernel_minor = i->minor;
            st.kernel_flags = i->flags;
            st.kernel_flags2 = (alen >= 20 && (i->flags & FUSE_INIT_EXT)) ? i->flags2 : 0;
        }
        break;
    }
}

static ssize_t hook_read(int fd, void *buf, size_t len, void *userdata)
{
    (void)userdata;
    ssize_t n = read(fd, buf, len);
    if (n > 0)
        inspect_request(buf, (size_t)n);
    return n;
}

static void patch_open_reply(struct fuse_out_header *out, struct iovec *iov, int count)
{
    for (unsigned i = 0; i < INFLIGHT; i++) {
        if (opens[i].unique != out->unique || !opens[i].unique)
            continue;
        size_t at = opens[i].opcode == FUSE_CREATE ? sizeof(struct fuse_entry_out) : 0;
        opens[i].unique = 0;
        opens_live--;
        if (out->error != 0 || count < 2 || iov[1].iov_len < at + sizeof(struct fuse740_open_out))
            return;
        struct fuse740_open_out *o = (void *)((char *)iov[1].iov_base + at);
        for (unsigned j = 0; j < INFLIGHT; j++) {
            if (pt_pending[j].used && pt_pending[j].fh == o->fh) {
                o->open_flags |= FUSE740_FOPEN_PASSTHROUGH;
                o->backing_id = pt_pending[j].backing_id;
                pt_pending[j].used = 0;
                return;
            }
        }
        return;
    }
}

static ssize_t hook_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    (void)userdata;
    if (opens_live && iov[0].iov_len >= sizeof(struct fuse_out_header))
        patch_open_reply(iov[0].iov_base, iov, count);
    if (st.init_seen && !st.init_replied && count >= 2 &&
        iov[0].iov_len >= sizeof(struct fuse_out_header)) {
        struct fuse_out_header *out = iov[0].iov_base;
        if (out->unique == st.init_unique && out->error == 0 &&
            iov[1].iov_len >= offsetof(struct fuse_init_out, max_background)) {
            struct fuse_init_out *o = iov[1].iov_base;
            if (st.want_killpriv_v2 && (st.kernel_flags & FUSE_HANDLE_KILLPRIV_V2)) {
                o->flags |= FUSE_HANDLE_KILLPRIV_V2;
                st.killpriv_v2 = 1;
            }
            if (st.want_passthrough && (st.kernel_flags2 & FUSE740_PASSTHROUGH_FLAGS2) &&
                iov[1].iov_len >= offsetof(struct fuse740_init_out, request_timeout)) {
                struct fuse740_init_out *o2 = iov[1].iov_base;
                o2->flags |= FUSE_INIT_EXT;
                o2->flags2 |= FUSE740_PASSTHROUGH_FLAGS2;
                o2->max_stack_depth = (uint32_t)st.want_passthrough;
                st.passthrough = 1;
            }
            st.init_replied = 1;
        }
    }
    return writev(fd, iov, count);
}

EXPORT int fuse_session_mount(struct fuse_session *se, const char *mountpoint)
{
    if (resolve() < 0)
        return -1;
    int rc = real_session_mount(se, mountpoint);
    if (rc == 0 && st.enabled && st.new_hooked && real_custom_io && real_session_fd) {
        static const struct custom_io io = {hook_writev, hook_read, NULL, NULL};
        if (real_custom_io(se, &io, real_session_fd(se)) == 0) {
            st.io_installed = 1;
            session = se;
        }
    }
    return rc;
}

/* ---- Python API ---------------------------------------------------------------------- */

static PyObject *py_enable(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"killpriv_v2", "passthrough_depth", NULL};
    int killpriv = 1, depth = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pi", names, &killpriv, &depth))
        return NULL;
    if (depth < 0 || depth > 2) {
        PyErr_SetString(PyExc_ValueError, "passthrough_depth must be 0, 1 or 2");
        return NULL;
    }
    st.want_passthrough = depth;
    if (resolve() < 0) {
        PyErr_SetString(PyExc_OSError, "libfuse3.so.3 not found");
        return NULL;
    }
    st.enabled = 1;
    st.want_killpriv_v2 = killpriv;
    Py_RETURN_NONE;
}

static PyObject *py_status(PyObject *self, PyObject *unused)
{
    return Py_BuildValue(
        "{s:O,s:O,s:O,s:O,s:I,s:O,s:O,s:O}",
        "enabled", st.enabled ? Py_True : Py_False,
        "hooked", st.new_hooked ? Py_True : Py_False,
        "io_installed", st.io_installed ? Py_True : Py_False,
        "init_replied", st.init_replied ? Py_True : Py_False,
        "kernel_minor", st.kernel_minor,
        "killpriv_v2", st.killpriv_v2 ? Py_True : Py_False,
        "passthrough", st.passthrough ? Py_True : Py_False,
        "passthrough_requested", st.want_passthrough ? Py_True : Py_False);
}

static PyObject *py_take_kill(PyObject *self, PyObject *arg)
{
    unsigned long long nodeid = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    for (unsigned i = 0; i < PENDING; i++) {
        uint64_t want = nodeid;
        if (nodeid && __atomic_compare_exchange_n(&pending[i], &want, 0, 0,
                                                  __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *py_passthrough_active(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(st.passthrough);
}

static PyObject *py_backing_open(PyObject *self, PyObject *arg)
{
    int fd = PyLong_AsLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (!st.passthrough || !session) {
        errno = EOPNOTSUPP;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    struct fuse740_backing_map m = {.fd = fd};
    int id;
    Py_BEGIN_ALLOW_THREADS
    id = ioctl(real_session_fd(session), FUSE740_IOC_BACKING_OPEN, &m);
    Py_END_ALLOW_THREADS
    if (id < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(id);
}

static PyObject *py_backing_close(PyObject *self, PyObject *arg)
{
    uint32_t id = (uint32_t)PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (session && ioctl(real_session_fd(session), FUSE740_IOC_BACKING_CLOSE, &id) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *py_passthrough_reply(PyObject *self, PyObject *args)
{
    unsigned long long fh;
    int id;
    if (!PyArg_ParseTuple(args, "Ki", &fh, &id))
        return NULL;
    for (unsigned j = 0; j < INFLIGHT; j++) {
        if (!pt_pending[j].used) {
            pt_pending[j].fh = fh;
            pt_pending[j].backing_id = id;
            pt_pending[j].used = 1;
            Py_RETURN_NONE;
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "too many passthrough opens in flight");
    return NULL;
}

static PyObject *py_clear_setid(PyObject *self, PyObject *arg)
{
    int fd = PyLong_AsLong(arg);
    if (PyErr_Occurred())
        return NULL;
    int r = clear_setid(fd);
    if (r < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(r);
}

static PyMethodDef methods[] = {
    {"passthrough_active", py_passthrough_active, METH_NOARGS,
     "Whether the kernel accepted FUSE passthrough for this session."},
    {"backing_open", py_backing_open, METH_O,
     "backing_open(fd) -> backing id (FUSE_DEV_IOC_BACKING_OPEN; the kernel keeps its own "
     "reference to the file, so fd may be closed afterwards)."},
    {"backing_close", py_backing_close, METH_O, "backing_close(id): FUSE_DEV_IOC_BACKING_CLOSE."},
    {"passthrough_reply", py_passthrough_reply, METH_VARARGS,
     "passthrough_reply(fh, backing_id): answer the open being handled for fh with "
     "FOPEN_PASSTHROUGH and this backing id."},
    {"clear_setid", py_clear_setid, METH_O,
     "clear_setid(fd) -> bool: drop suid, and sgid if group-executable, as the kernel does "
     "for a writer without CAP_FSETID (fd may be O_PATH); True if the mode changed."},
    {"enable", (PyCFunction)(void (*)(void))py_enable, METH_VARARGS | METH_KEYWORDS,
     "enable(killpriv_v2=True, passthrough_depth=0): tune the next pyfuse3 session (call "
     "before pyfuse3.init); passthrough_depth > 0 offers kernel passthrough with that "
     "max_stack_depth."},
    {"status", py_status, METH_NOARGS, "What was hooked and negotiated."},
    {"take_kill", py_take_kill, METH_O,
     "take_kill(inode) -> bool: the kernel asked to clear suid/sgid for this inode's "
     "pending SETATTR(size)/OPEN(O_TRUNC)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chaosfs.transport._fuseconn", NULL, -1, methods,
};

PyMODINIT_FUNC PyInit__fuseconn(void)
{
    return PyModule_Create(&module);
}
