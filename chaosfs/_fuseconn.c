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
#include <stdint.h>
#include <string.h>
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
    int new_hooked;       /* our fuse_session_new ran */
    int io_installed;     /* custom I/O is on the session */
    int init_seen;
    uint64_t init_unique;
    uint32_t kernel_minor, kernel_flags, reply_flags;
    int killpriv_v2;      /* negotiated */
    uint64_t kills_write, kills_queued;
} st;

/* Nodes whose SETATTR(size)/OPEN(O_TRUNC) asked for the kill; consumed by take_kill(). A
 * small ring: entries are taken within the same request, so it never holds many. */
#define PENDING 64
static uint64_t pending[PENDING];
static unsigned pending_next;

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

static void kill_fd(int fd, uint64_t nodeid)
{
    struct stat s;
    if (fstat(fd, &s) < 0 || !S_ISREG(s.st_mode))
        return;
    mode_t kill = s.st_mode & S_ISUID;
    if ((s.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
        kill |= S_ISGID;
    if (kill && fchmod(fd, s.st_mode & 07777 & ~kill) == 0) {
        __atomic_add_fetch(&st.kills_write, 1, __ATOMIC_RELAXED);
        /* The kernel changes no cached mode on this path; without this, stat(2) would show
         * the old bits until the attribute timeout. Attributes only: takes no inode lock. */
        if (session && real_notify_inval_inode)
            real_notify_inval_inode(session, nodeid, -1, 0);
    }
}

static void queue_kill(uint64_t nodeid)
{
    unsigned i = __atomic_fetch_add(&pending_next, 1, __ATOMIC_RELAXED) % PENDING;
    __atomic_store_n(&pending[i], nodeid, __ATOMIC_RELAXED);
    __atomic_add_fetch(&st.kills_queued, 1, __ATOMIC_RELAXED);
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
    case FUSE_OPEN:
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

static ssize_t hook_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    (void)userdata;
    if (st.init_seen && !st.reply_flags && count >= 2 &&
        iov[0].iov_len >= sizeof(struct fuse_out_header)) {
        struct fuse_out_header *out = iov[0].iov_base;
        if (out->unique == st.init_unique && out->error == 0 &&
            iov[1].iov_len >= offsetof(struct fuse_init_out, max_background)) {
            struct fuse_init_out *o = iov[1].iov_base;
            if (st.want_killpriv_v2 && (st.kernel_flags & FUSE_HANDLE_KILLPRIV_V2)) {
                o->flags |= FUSE_HANDLE_KILLPRIV_V2;
                st.killpriv_v2 = 1;
            }
            st.reply_flags = o->flags | 0x80000000u;  /* mark as seen even if 0 */
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
    static char *names[] = {"killpriv_v2", NULL};
    int killpriv = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|p", names, &killpriv))
        return NULL;
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
        "{s:O,s:O,s:O,s:O,s:I,s:k,s:k,s:O,s:K,s:K}",
        "enabled", st.enabled ? Py_True : Py_False,
        "hooked", st.new_hooked ? Py_True : Py_False,
        "io_installed", st.io_installed ? Py_True : Py_False,
        "init_seen", st.init_seen ? Py_True : Py_False,
        "kernel_minor", st.kernel_minor,
        "kernel_flags", (unsigned long)st.kernel_flags,
        "reply_flags", (unsigned long)(st.reply_flags & 0x7fffffffu),
        "killpriv_v2", st.killpriv_v2 ? Py_True : Py_False,
        "kills_write", (unsigned long long)st.kills_write,
        "kills_queued", (unsigned long long)st.kills_queued);
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

static PyMethodDef methods[] = {
    {"enable", (PyCFunction)(void (*)(void))py_enable, METH_VARARGS | METH_KEYWORDS,
     "enable(killpriv_v2=True): tune the next pyfuse3 session (call before pyfuse3.init)."},
    {"status", py_status, METH_NOARGS, "What was hooked and negotiated."},
    {"take_kill", py_take_kill, METH_O,
     "take_kill(inode) -> bool: the kernel asked to clear suid/sgid for this inode's "
     "pending SETATTR(size)/OPEN(O_TRUNC)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chaosfs._fuseconn", NULL, -1, methods,
};

PyMODINIT_FUNC PyInit__fuseconn(void)
{
    return PyModule_Create(&module);
}
