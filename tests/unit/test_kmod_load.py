# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one guarded load (kmod_load): the kernel gets the descriptor whose bytes were checked.

finit_module(2) itself is replaced by a fake that reads the descriptor (this machine cannot load
modules); the real loads are molecule's (deploy, failed reload, boot-time restore)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import hashlib
import os

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import kmod_load

DATA = b'\x7fELF a kprobes.fleet module'
SHA = hashlib.sha256(DATA).hexdigest()


class Kernel(object):
    """finit_module(2): records what the descriptor reads."""

    def __init__(self, refuse=None, before=None):
        self.loaded, self.refuse, self.before = [], refuse, before

    def __call__(self, fd):
        if self.before:
            self.before()
        self.loaded.append(os.read(fd, 1 << 20))
        if self.refuse:
            raise OSError(self.refuse, os.strerror(self.refuse))


@pytest.fixture
def ko(tmp_path):
    d = tmp_path / 'state'
    d.mkdir(mode=0o700)
    os.chmod(str(d), 0o700)
    path = d / 'kpf.loading.ko'
    path.write_bytes(DATA)
    os.chmod(str(path), 0o600)
    return str(path)


def load(monkeypatch, path, sha=SHA, **kw):
    kernel = Kernel(**kw)
    monkeypatch.setattr(kmod_load, 'finit_module', kernel)
    return kernel, lambda: kmod_load.load_verified(path, sha)


def test_loads_the_checked_bytes(ko, monkeypatch):
    kernel, run = load(monkeypatch, ko)
    run()
    assert kernel.loaded == [DATA]


def test_a_file_swapped_after_the_check_is_not_what_loads(ko, monkeypatch):
    def swap():
        with open(ko + '.new', 'wb') as f:
            f.write(b'something else')
        os.rename(ko + '.new', ko)
    kernel, run = load(monkeypatch, ko, before=swap)
    run()
    assert kernel.loaded == [DATA]


def test_wrong_sha256_loads_nothing(ko, monkeypatch):
    kernel, run = load(monkeypatch, ko, sha='0' * 64)
    with pytest.raises(kmod_load.LoadError, match='has sha256 %s, not the expected 0{64}; refusing' % SHA):
        run()
    assert kernel.loaded == []


def test_a_link_is_not_followed(ko, monkeypatch):
    link = ko + '.link'
    os.symlink(ko, link)
    kernel, run = load(monkeypatch, link)
    with pytest.raises(kmod_load.LoadError, match='is a symbolic link; nothing loaded'):
        run()
    assert kernel.loaded == []


@pytest.mark.parametrize('target,mode,why', [
    ('file', 0o620, 'may be written by others (mode 0620)'),
    ('file', 0o602, 'may be written by others (mode 0602)'),
    ('dir', 0o770, 'may be written by others (mode 0770)'),
])
def test_others_may_not_write(ko, monkeypatch, target, mode, why):
    os.chmod(ko if target == 'file' else os.path.dirname(ko), mode)
    kernel, run = load(monkeypatch, ko)
    with pytest.raises(kmod_load.LoadError, match=r'%s %s' % (target if target == 'file' else 'directory',
                                                              '.*' + why.replace('(', r'\(').replace(')', r'\)'))):
        run()
    assert kernel.loaded == []


def test_a_file_of_another_owner_is_refused(ko, monkeypatch):
    real = os.geteuid()
    monkeypatch.setattr(kmod_load.os, 'geteuid', lambda: real + 1)
    kernel, run = load(monkeypatch, ko)
    with pytest.raises(kmod_load.LoadError, match='is owned by uid %d, not by us' % real):
        run()
    assert kernel.loaded == []


def test_a_directory_is_not_a_module(ko, monkeypatch):
    os.mkdir(ko + '.d', 0o700)
    kernel, run = load(monkeypatch, ko + '.d')
    with pytest.raises(kmod_load.LoadError, match='is not a regular file'):
        run()
    assert kernel.loaded == []


def test_the_kernels_refusal_is_named(ko, monkeypatch):
    kernel, run = load(monkeypatch, ko, refuse=errno.EKEYREJECTED)
    with pytest.raises(kmod_load.LoadError, match=r'the kernel refused .*: Key was rejected by service \(EKEYREJECTED\)'):
        run()


def test_unknown_architecture_says_so(monkeypatch):
    class Uname(object):
        machine = 'vax'
    monkeypatch.setattr(kmod_load.os, 'uname', Uname)
    with pytest.raises(OSError, match='unknown for architecture vax'):
        kmod_load.finit_module(0)
