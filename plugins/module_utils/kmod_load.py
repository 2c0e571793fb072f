# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way kprobes.fleet loads a module file: a deploy (module probe_module), the restore after a
failed reload (the same), the boot-time unit (persist.restore).

``load_verified(path, sha256)`` opens our private copy without following a link, checks that it is a
regular file owned by us (root) that nobody else may write, in a directory that is ours and that nobody
else may write; hashes the bytes read through that descriptor; and hands the same descriptor to
finit_module(2). So the kernel reads exactly the file that was checked, and nothing can be swapped in
between (an ``insmod <path>`` would open the path again). Standard library only: the boot-time unit
runs it from the copy in ``<host_dir>/lib``.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ctypes
import errno
import hashlib
import os
import stat

# finit_module(2)'s number, by `uname -m` (arch/*/syscall tables; the generic table for arm64 and riscv).
FINIT_MODULE = {
    'x86_64': 313, 'i386': 350, 'i686': 350, 'aarch64': 273, 'riscv64': 273,
    'armv7l': 379, 'armv6l': 379, 'ppc64le': 353, 'ppc64': 353, 's390x': 344,
}


class LoadError(Exception):
    """One sentence: why nothing was loaded."""


def _private(st, what, path):
    """Why ``st`` is not ours alone (a sentence), or None."""
    if st.st_uid != os.geteuid():
        return '%s %s is owned by uid %d, not by us (uid %d)' % (what, path, st.st_uid, os.geteuid())
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return '%s %s may be written by others (mode %04o)' % (what, path, stat.S_IMODE(st.st_mode))
    return None


def finit_module(fd):
    """finit_module(fd, "", 0); raises OSError with the kernel's errno."""
    nr = FINIT_MODULE.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, 'finit_module(2) number unknown for architecture %s' % os.uname().machine)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(nr), ctypes.c_int(fd), ctypes.c_char_p(b''), ctypes.c_int(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_verified(path, sha256):
    """An open descriptor of ``path`` whose bytes have the sha256 ``sha256``, after the ownership checks;
    raises LoadError. The caller closes it."""
    try:
        dst = os.lstat(os.path.dirname(path))
    except OSError as e:
        raise LoadError('cannot inspect the directory of %s: %s' % (path, os.strerror(e.errno)))
    why = _private(dst, 'directory', os.path.dirname(path)) if stat.S_ISDIR(dst.st_mode) else \
        'directory %s is not a directory' % os.path.dirname(path)
    if why:
        raise LoadError('%s; refusing to load %s' % (why, path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, 'O_CLOEXEC', 0))
    except OSError as e:
        what = 'is a symbolic link' if e.errno == errno.ELOOP else os.strerror(e.errno)
        raise LoadError('cannot open %s: %s; nothing loaded' % (path, what))
    try:
        st = os.fstat(fd)
        why = _private(st, 'file', path) if stat.S_ISREG(st.st_mode) else '%s is not a regular file' % path
        if why:
            raise LoadError('%s; refusing to load it' % why)
        digest = hashlib.sha256()
        for chunk in iter(lambda: os.read(fd, 1 << 20), b''):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise LoadError('%s has sha256 %s, not the expected %s; refusing to load it'
                            % (path, digest.hexdigest(), sha256))
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def load_verified(path, sha256):
    """Load the module file ``path`` (ours, sha256 ``sha256``) through the descriptor that was checked;
    raises LoadError (nothing loaded) with the kernel's reason."""
    fd = open_verified(path, sha256)
    try:
        finit_module(fd)
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        raise LoadError('the kernel refused %s: %s (%s)' % (path, e.strerror, name))
    finally:
        os.close(fd)
