# Included by _devfuse.pyx (after DevFuseTransport): one request, decoded from the kernel's
# structs, handed to the Operations method pyfuse3 would call, and its result encoded as
# the reply. Called as _dispatch(transport, request) from DevFuseTransport._serve (a trio
# task or the reading task) and _serve_sync (a worker).


async def _dispatch(DevFuseTransport t, _Request r):
    cdef uint32_t op = r.h.opcode
    cdef uint64_t ino = r.h.nodeid
    cdef char *a = r.arg
    cdef size_t n = r.alen
    ops = t.ops
    ctx = RequestContext(r.h.uid, r.h.gid, r.h.pid)
    if op == FUSE_LOOKUP:
        t._reply_bytes(r, _entry_bytes(await ops.lookup(ino, _cstr(a, n), ctx)))
    elif op == FUSE_GETATTR:
        await _getattr(t, r, await ops.getattr(ino, ctx))
    elif op == FUSE_SETATTR:
        await _setattr(t, r, ctx)
    elif op == FUSE_OPEN:
        await _open(t, r, ctx)
    elif op == FUSE_READ:
        await _read(t, r)
    elif op == FUSE_WRITE:
        await _write(t, r)
    elif op == FUSE_FLUSH:
        _need(n, sizeof(fuse_flush_in))
        df_lk_release_owner(&t.s.locks, ino, (<fuse_flush_in *>a).lock_owner)
        await ops.flush((<fuse_flush_in *>a).fh)
        t._reply(r, 0, NULL, 0)
    elif op == FUSE_FSYNC or op == FUSE_FSYNCDIR:
        _need(n, sizeof(fuse_fsync_in))
        fh = (<fuse_fsync_in *>a).fh
        datasync = bool((<fuse_fsync_in *>a).fsync_flags & FUSE_FSYNC_FDATASYNC)
        await (ops.fsync(fh, datasync) if op == FUSE_FSYNC else ops.fsyncdir(fh, datasync))
        t._reply(r, 0, NULL, 0)
    elif op == FUSE_RELEASE or op == FUSE_RELEASEDIR:
        _need(n, sizeof(fuse_release_in))
        fh = (<fuse_release_in *>a).fh
        df_set_issued(&t.s, fh, 0)  # before the fd number can be reused
        if op == FUSE_RELEASE:
            df_lk_release_fh(&t.s.locks, ino, fh)
        t.pt_offers.pop(fh, None)
        await (ops.release(fh) if op == FUSE_RELEASE else ops.releasedir(fh))
        t._reply(r, 0, NULL, 0)
    elif op == FUSE_CREATE or op == FUSE_TMPFILE:
        await _create(t, r, ctx)
    elif op == FUSE_OPENDIR:
        _need(n, sizeof(fuse_open_in))
        fh = await ops.opendir(ino, ctx)
        df_set_issued(&t.s, fh, 2)
        await _send_open(t, r, fh, 0, None)
    elif op == FUSE_READDIRPLUS or op == FUSE_READDIR:
        await _readdir(t, r, op == FUSE_READDIRPLUS)
    elif op == FUSE_MKDIR:
        _need(n, sizeof(fuse_mkdir_in))
        ctx.umask = (<fuse_mkdir_in *>a).umask
        name = _cstr(a + sizeof(fuse_mkdir_in), n - sizeof(fuse_mkdir_in))
        t._reply_bytes(r, _entry_bytes(await ops.mkdir(ino, name, (<fuse_mkdir_in *>a).mode, ctx)))
    elif op == FUSE_MKNOD:
        _need(n, sizeof(fuse_mknod_in))
        ctx.umask = (<fuse_mknod_in *>a).umask
        name = _cstr(a + sizeof(fuse_mknod_in), n - sizeof(fuse_mknod_in))
        t._reply_bytes(r, _entry_bytes(await ops.mknod(
            ino, name, (<fuse_mknod_in *>a).mode, (<fuse_mknod_in *>a).rdev, ctx)))
    elif op == FUSE_SYMLINK:
        name = _cstr(a, n)
        target = _cstr(a + len(name) + 1, n - len(name) - 1) if n > <size_t>(len(name) + 1) else b""
        t._reply_bytes(r, _entry_bytes(await ops.symlink(ino, name, target, ctx)))
    elif op == FUSE_LINK:
        _need(n, sizeof(fuse_link_in))
        name = _cstr(a + sizeof(fuse_link_in), n - sizeof(fuse_link_in))
        t._reply_bytes(r, _entry_bytes(await ops.link((<fuse_link_in *>a).oldnodeid, ino, name, ctx)))
    elif op == FUSE_UNLINK:
        await ops.unlink(ino, _cstr(a, n), ctx)
        t._reply(r, 0, NULL, 0)
    elif op == FUSE_RMDIR:
        await ops.rmdir(ino, _cstr(a, n), ctx)
        t._reply(r, 0, NULL, 0)
    elif op == FUSE_RENAME or op == FUSE_RENAME2:
        await _rename(t, r, ctx, op == FUSE_RENAME2)
    elif op == FUSE_READLINK:
        t._reply_bytes(r, await ops.readlink(ino, ctx))
    elif op == FUSE_STATFS:
        await _statfs(t, r, await ops.statfs(ctx))
    elif op == FUSE_SETXATTR:
        await _setxattr(t, r, ctx)
    elif op == FUSE_GETXATTR or op == FUSE_LISTXATTR:
        await _getxattr(t, r, ctx, op == FUSE_LISTXATTR)
    elif op == FUSE_REMOVEXATTR:
        await ops.removexattr(ino, _cstr(a, n), ctx)
        t._reply(r, 0, NULL, 0)
    elif op == FUSE_ACCESS:
        _need(n, sizeof(fuse_access_in))
        ok = await ops.access(ino, (<fuse_access_in *>a).mask, ctx)
        t._reply(r, 0 if ok else E.EACCES, NULL, 0)
    elif op == FUSE_FALLOCATE:
        await _fallocate(t, r)
    elif op == FUSE_LSEEK:
        await _lseek(t, r)
    elif op == FUSE_COPY_FILE_RANGE:
        await _copy_file_range(t, r)
    elif op == FUSE739_STATX:
        await _statx(t, r, ctx)
    elif op == FUSE_GETLK or op == FUSE_SETLK or op == FUSE_SETLKW:
        await _lock(t, r, op, ctx)
    elif op == FUSE_DESTROY:
        t._reply(r, 0, NULL, 0)
    elif op == FUSE_NOTIFY_REPLY:
        pass  # answers a NOTIFY_RETRIEVE we never send; it takes no reply
    else:
        # Not implemented (ioctl, poll, bmap): the kernel falls back exactly as it does
        # under pyfuse3.
        raise FUSEError(E.ENOSYS)


async def _lock(DevFuseTransport t, _Request r, uint32_t op, ctx):
    _need(r.alen, sizeof(fuse_lk_in))
    cdef fuse_lk_in *l = <fuse_lk_in *>r.arg
    cdef fuse_lk_out o
    is_flock = bool(l.lk_flags & FUSE_LK_FLOCK)
    if op == FUSE_GETLK:
        typ, start, end, pid = await t.ops.getlk(l.fh, l.owner, l.lk.type, l.lk.start, l.lk.end, ctx)
        memset(&o, 0, sizeof(o))
        o.lk.type, o.lk.start, o.lk.end, o.lk.pid = typ, start, end, pid
        t._reply(r, 0, &o, sizeof(o))
        return
    if op == FUSE_SETLK:
        await t.ops.setlk(l.fh, l.owner, l.lk.type, l.lk.start, l.lk.end, is_flock, ctx)
    else:
        unique = r.h.unique
        with trio.CancelScope() as scope:  # FUSE_INTERRUPT cancels it (a signal)
            t.waits[unique] = scope
            try:
                await t.ops.setlkw(l.fh, l.owner, l.lk.type, l.lk.start, l.lk.end, is_flock, ctx)
            finally:
                del t.waits[unique]
        if scope.cancelled_caught:
            raise FUSEError(E.EINTR)
    t._reply(r, 0, NULL, 0)


async def _fallocate(DevFuseTransport t, _Request r):
    _need(r.alen, sizeof(fuse_fallocate_in))
    cdef fuse_fallocate_in *f = <fuse_fallocate_in *>r.arg
    await t.ops.fallocate(f.fh, f.mode, f.offset, f.length)
    t._reply(r, 0, NULL, 0)


async def _lseek(DevFuseTransport t, _Request r):
    _need(r.alen, sizeof(fuse_lseek_in))
    cdef fuse_lseek_in *i = <fuse_lseek_in *>r.arg
    cdef fuse_lseek_out o
    o.offset = await t.ops.lseek(i.fh, i.offset, i.whence)
    t._reply(r, 0, &o, sizeof(o))


async def _copy_file_range(DevFuseTransport t, _Request r):
    _need(r.alen, sizeof(fuse_copy_file_range_in))
    cdef fuse_copy_file_range_in *c = <fuse_copy_file_range_in *>r.arg
    cdef fuse_write_out o
    o.size = await t.ops.copy_file_range(c.fh_in, c.off_in, c.fh_out, c.off_out, c.len, c.flags)
    o.padding = 0
    t._reply(r, 0, &o, sizeof(o))


async def _getattr(DevFuseTransport t, _Request r, e):
    cdef fuse_attr_out o
    memset(&o, 0, sizeof(o))
    o.attr_valid = _sec(e.attr_timeout)
    o.attr_valid_nsec = _nsec(e.attr_timeout)
    _fill_attr(&o.attr, e)
    t._reply(r, 0, &o, sizeof(o))


async def _statx(DevFuseTransport t, _Request r, ctx):
    _need(r.alen, sizeof(fuse739_statx_in))
    cdef fuse739_statx_in *i = <fuse739_statx_in *>r.arg
    fh = i.fh if i.getattr_flags & 1 else None  # FUSE_GETATTR_FH
    sx, timeout = await t.ops.statx(r.h.nodeid, fh, i.sx_flags, i.sx_mask, ctx)
    cdef fuse739_statx_out o
    memset(&o, 0, sizeof(o))
    o.attr_valid = _sec(timeout)
    o.attr_valid_nsec = _nsec(timeout)
    (o.stat.mask, o.stat.blksize, o.stat.attributes, o.stat.nlink, o.stat.uid, o.stat.gid,
     o.stat.mode, o.stat.ino, o.stat.size, o.stat.blocks, o.stat.attributes_mask) = sx[:11]
    o.stat.atime.tv_sec, o.stat.atime.tv_nsec = sx[11], sx[12]
    o.stat.btime.tv_sec, o.stat.btime.tv_nsec = sx[13], sx[14]
    o.stat.ctime.tv_sec, o.stat.ctime.tv_nsec = sx[15], sx[16]
    o.stat.mtime.tv_sec, o.stat.mtime.tv_nsec = sx[17], sx[18]
    o.stat.rdev_major, o.stat.rdev_minor = sx[19], sx[20]
    t._reply(r, 0, &o, sizeof(o))


async def _setattr(DevFuseTransport t, _Request r, ctx):
    _need(r.alen, sizeof(fuse_setattr_in))
    cdef fuse_setattr_in *s = <fuse_setattr_in *>r.arg
    cdef uint32_t v = s.valid
    attr, fields = SetattrAttrs(), SetattrFields()
    now = time.time_ns()
    fields.update_mode = bool(v & FATTR_MODE)
    fields.update_uid = bool(v & FATTR_UID)
    fields.update_gid = bool(v & FATTR_GID)
    fields.update_size = bool(v & FATTR_SIZE)
    fields.update_atime = bool(v & (FATTR_ATIME | FATTR_ATIME_NOW))
    fields.update_mtime = bool(v & (FATTR_MTIME | FATTR_MTIME_NOW))
    fields.update_ctime = bool(v & FATTR_CTIME)
    attr.st_mode = s.mode
    attr.st_uid = s.uid
    attr.st_gid = s.gid
    attr.st_size = s.size
    attr.st_atime_ns = now if v & FATTR_ATIME_NOW else s.atime * 1000000000 + s.atimensec
    attr.st_mtime_ns = now if v & FATTR_MTIME_NOW else s.mtime * 1000000000 + s.mtimensec
    attr.st_ctime_ns = s.ctime * 1000000000 + s.ctimensec
    fh = s.fh if v & FATTR_FH else None
    if t.s.killpriv_v2 and (v & FATTR_KILL_SUIDGID) and (v & FATTR_SIZE):
        t.kills[r.h.nodeid] = t.kills.get(r.h.nodeid, 0) + 1
    await _getattr(t, r, await t.ops.setattr(r.h.nodeid, attr, fields, fh, ctx))


async def _open(DevFuseTransport t, _Request r, ctx):
    _need(r.alen, sizeof(fuse_open_in))
    cdef fuse_open_in *o = <fuse_open_in *>r.arg
    if t.s.killpriv_v2 and (o.flags & os.O_TRUNC) and (o.open_flags & FUSE_OPEN_KILL_SUIDGID):
        t.kills[r.h.nodeid] = t.kills.get(r.h.nodeid, 0) + 1
    fi = await t.ops.open(r.h.nodeid, o.flags, ctx)
    df_set_issued(&t.s, fi.fh, 1)
    await _send_open(t, r, fi.fh, _open_flags(fi), None)


async def _create(DevFuseTransport t, _Request r, ctx):
    _need(r.alen, sizeof(fuse_create_in))
    cdef fuse_create_in *c = <fuse_create_in *>r.arg
    ctx.umask = c.umask
    if r.h.opcode == FUSE_TMPFILE:  # open(dir, O_TMPFILE): no name (the kernel sends "/")
        fi, entry = await t.ops.tmpfile(r.h.nodeid, c.mode, c.flags, ctx)
    else:
        name = _cstr(r.arg + sizeof(fuse_create_in), r.alen - sizeof(fuse_create_in))
        fi, entry = await t.ops.create(r.h.nodeid, name, c.mode, c.flags, ctx)
    df_set_issued(&t.s, fi.fh, 1)
    await _send_open(t, r, fi.fh, _open_flags(fi), entry)


async def _send_open(DevFuseTransport t, _Request r, uint64_t fh, uint32_t flags, entry):
    cdef fuse740_open_out o
    o.fh = fh
    o.open_flags = flags
    o.backing_id = 0
    bid = t.pt_offers.pop(fh, None)
    if bid is not None:
        o.open_flags |= FUSE740_FOPEN_PASSTHROUGH
        o.backing_id = bid
    cdef bytes body = PyBytes_FromStringAndSize(<char *>&o, sizeof(o))
    if entry is not None:
        body = _entry_bytes(entry) + body
    if t._reply_bytes(r, body) == 1:
        # The open was interrupted and the kernel forgot it: it will never release it.
        df_set_issued(&t.s, fh, 0)
        await (t.ops.releasedir(fh) if r.h.opcode == FUSE_OPENDIR else t.ops.release(fh))


async def _read(DevFuseTransport t, _Request r):
    _need(r.alen, sizeof(fuse_read_in))
    cdef fuse_read_in *i = <fuse_read_in *>r.arg
    data = await t.ops.read(i.fh, i.offset, i.size)
    t._reply_bytes(r, data)


async def _write(DevFuseTransport t, _Request r):
    _need(r.alen, sizeof(fuse_write_in))
    cdef fuse_write_in *w = <fuse_write_in *>r.arg
    if r.alen < sizeof(fuse_write_in) + w.size:
        raise FUSEError(E.EINVAL)
    data = PyBytes_FromStringAndSize(r.arg + sizeof(fuse_write_in), w.size)
    cdef fuse_write_out o
    o.size = await t.ops.write(w.fh, w.offset, data)
    o.padding = 0
    t._reply(r, 0, &o, sizeof(o))


async def _readdir(DevFuseTransport t, _Request r, bint plus):
    _need(r.alen, sizeof(fuse_read_in))
    cdef fuse_read_in *i = <fuse_read_in *>r.arg
    cdef DirBuffer token = DirBuffer(i.size, plus)
    await t.ops.readdir(i.fh, i.offset, token)
    t._reply_bytes(r, bytes(token.buf))


async def _rename(DevFuseTransport t, _Request r, ctx, bint two):
    cdef size_t head = sizeof(fuse_rename2_in) if two else sizeof(fuse_rename_in)
    _need(r.alen, head)
    cdef uint64_t newdir = (<fuse_rename_in *>r.arg).newdir
    cdef uint32_t flags = (<fuse_rename2_in *>r.arg).flags if two else 0
    old = _cstr(r.arg + head, r.alen - head)
    new = _cstr(r.arg + head + len(old) + 1, r.alen - head - len(old) - 1)
    await t.ops.rename(r.h.nodeid, old, newdir, new, flags, ctx)
    t._reply(r, 0, NULL, 0)


async def _statfs(DevFuseTransport t, _Request r, d):
    cdef fuse_statfs_out o
    memset(&o, 0, sizeof(o))
    o.st.blocks = d.f_blocks
    o.st.bfree = d.f_bfree
    o.st.bavail = d.f_bavail
    o.st.files = d.f_files
    o.st.ffree = d.f_ffree
    o.st.bsize = d.f_bsize
    o.st.namelen = d.f_namemax
    o.st.frsize = d.f_frsize
    t._reply(r, 0, &o, sizeof(o))


async def _setxattr(DevFuseTransport t, _Request r, ctx):
    # Without FUSE_SETXATTR_EXT (not negotiated) the kernel sends the 8-byte compat struct.
    cdef size_t head = 8
    _need(r.alen, head)
    cdef fuse_setxattr_in *s = <fuse_setxattr_in *>r.arg
    name = _cstr(r.arg + head, r.alen - head)
    cdef size_t at = head + len(name) + 1
    if at + s.size > r.alen:
        raise FUSEError(E.EINVAL)
    value = PyBytes_FromStringAndSize(r.arg + at, s.size)
    # The handler has no flags argument: create/replace are checked first (as pyfuse3 does)
    if s.flags & (XATTR_CREATE | XATTR_REPLACE):
        try:
            await t.ops.getxattr(r.h.nodeid, name, ctx)
            exists = True
        except FUSEError as e:
            if e.errno != E.ENODATA:
                raise
            exists = False
        if exists and s.flags & XATTR_CREATE:
            raise FUSEError(E.EEXIST)
        if not exists and s.flags & XATTR_REPLACE:
            raise FUSEError(E.ENODATA)
    await t.ops.setxattr(r.h.nodeid, name, value, ctx)
    t._reply(r, 0, NULL, 0)


async def _getxattr(DevFuseTransport t, _Request r, ctx, bint names):
    _need(r.alen, sizeof(fuse_getxattr_in))
    cdef uint32_t size = (<fuse_getxattr_in *>r.arg).size
    if names:
        data = b"".join(n + b"\0" for n in await t.ops.listxattr(r.h.nodeid, ctx))
    else:
        name = _cstr(r.arg + sizeof(fuse_getxattr_in), r.alen - sizeof(fuse_getxattr_in))
        data = await t.ops.getxattr(r.h.nodeid, name, ctx)
    cdef fuse_getxattr_out o
    if size == 0:
        o.size = len(data)
        o.padding = 0
        t._reply(r, 0, &o, sizeof(o))
    elif len(data) > size:
        raise FUSEError(E.ERANGE)
    else:
        t._reply_bytes(r, data)


# The method an opcode's errors are judged under (safe_errno: ENOSYS where it would stick).
_METHOD_OF = {FUSE_OPEN: _m.METHOD_ID["open"], FUSE_OPENDIR: _m.METHOD_ID["opendir"],
              FUSE_CREATE: _m.METHOD_ID["create"], FUSE_FLUSH: _m.METHOD_ID["flush"],
              FUSE_FSYNC: _m.METHOD_ID["fsync"], FUSE_FSYNCDIR: _m.METHOD_ID["fsyncdir"],
              FUSE_ACCESS: _m.METHOD_ID["access"], FUSE_GETXATTR: _m.METHOD_ID["getxattr"],
              FUSE_SETXATTR: _m.METHOD_ID["setxattr"], FUSE_LISTXATTR: _m.METHOD_ID["listxattr"],
              FUSE_REMOVEXATTR: _m.METHOD_ID["removexattr"], FUSE_RENAME2: _m.METHOD_ID["rename"],
              FUSE_FALLOCATE: _m.METHOD_ID["allocate"]}
