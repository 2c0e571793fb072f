# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probes come back after a reboot only on the kernel they were made for (#9).

The record (persist.json) is written by probe_module / tracefs_probes and removed with them;
persist.restore() is what the boot unit runs; probe_persist installs the unit and a copy of
the module_utils it needs, and never touches a unit that is not ours. Fake hosts below tmp_path
(the Host of test_probe_module); the real boot is proven by molecule's lifecycle scenario.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmod_load, names, persist
from ansible_collections.kprobes.fleet.plugins.modules import probe_persist

from test_probe_module import BOOT, NAME, NEW_HASH, STATE_DIR, FakeModule, Failed, Host

KERNEL = {'release': '6.1.0-50-amd64', 'version': '#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)'}
UPGRADED = {'release': '6.12.95+deb12-amd64', 'version': '#1 SMP PREEMPT_DYNAMIC Debian 6.12.95-1~bpo12+1'}


@pytest.fixture
def host(tmp_path, monkeypatch):
    monkeypatch.setattr(persist, 'running_kernel', lambda: dict(KERNEL))
    fake = Host(tmp_path)
    monkeypatch.setattr(kmod_load, 'finit_module', fake.finit_module)
    return fake


def loaded(host, tmp_path):
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    loader.apply()
    return digest


class Insmod(object):
    """kmod_load's finit_module(2) at boot: loads the module into the fake host, or refuses it."""

    def __init__(self, host, rc=0):
        self.host, self.rc, self.calls = host, rc, []

    def __call__(self, fd):
        self.calls.append(['insmod', os.readlink('/proc/self/fd/%d' % fd)])
        if self.rc:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.host.load(NEW_HASH)


# -- the record ------------------------------------------------------------------------------

def test_a_load_records_what_runs_and_on_which_kernel(host, tmp_path):
    digest = loaded(host, tmp_path)
    m = persist.load_manifest(host.state_dir, NAME)
    assert m['backend'] == 'module' and m['mark'] == names.MARK
    assert m['kernel'] == KERNEL and m['spec_hash'] == NEW_HASH
    assert m['module'] == {'ko': os.path.join(STATE_DIR, NAME + '.loaded.ko'), 'sha256': digest}
    assert oct(os.stat(host_state.state_file(host.state_dir, NAME, 'persist')).st_mode & 0o777) == '0o600'


def test_unloading_removes_the_record_and_the_copy_it_would_load(host, tmp_path):
    loaded(host, tmp_path)
    module, loader = host.loader(state='absent')
    assert loader.apply()['changed'] is True
    assert persist.load_manifest(host.state_dir, NAME) is None
    assert not os.path.exists(os.path.join(host.state_dir, NAME + '.loaded.ko'))


def test_a_record_left_without_a_loaded_module_is_removed_by_absent(host, tmp_path):
    loaded(host, tmp_path)
    host.unload()  # e.g. rebooted into another kernel: nothing loaded, the record is still there
    module, loader = host.loader(state='absent')
    result = loader.apply()
    assert result['changed'] is True and module.calls == []
    assert persist.load_manifest(host.state_dir, NAME) is None
    module, loader = host.loader(state='absent')
    assert loader.apply()['changed'] is False  # and then nothing is left to do


def test_absent_leaves_the_tracefs_record_alone_and_changes_nothing(host):
    persist.save_manifest(host.state_dir, NAME, 'tracefs', NEW_HASH, {'probes': [], 'reason': None})
    module, loader = host.loader(state='absent')
    assert loader.apply()['changed'] is False
    assert persist.load_manifest(host.state_dir, NAME)['backend'] == 'tracefs'


def test_forget_leaves_the_other_backends_record(host, tmp_path):
    loaded(host, tmp_path)
    assert persist.forget(host.state_dir, NAME, 'tracefs') is False
    assert persist.load_manifest(host.state_dir, NAME)['backend'] == 'module'


def test_a_record_that_is_not_ours_is_ignored(host, tmp_path):
    loaded(host, tmp_path)
    path = host_state.state_file(host.state_dir, NAME, 'persist')
    data = json.load(open(path))
    data['mark'] = 'someone.else'
    json.dump(data, open(path, 'w'))
    assert persist.load_manifest(host.state_dir, NAME) is None


@pytest.mark.parametrize('now, words', [
    (dict(KERNEL), None),
    (UPGRADED, ['6.1.0-50-amd64', '6.12.95+deb12-amd64', 'release']),
    (dict(KERNEL, version='#2 SMP PREEMPT_DYNAMIC Debian 6.1.176-2'), ['build (uname -v)', '#2 SMP']),
])
def test_kernel_change_names_both_kernels(now, words):
    reason = persist.kernel_change({'kernel': KERNEL}, now)
    if words is None:
        assert reason is None
    else:
        assert reason.startswith('kernel changed') and all(w in reason for w in words)


# -- restore at boot -------------------------------------------------------------------------

def restore(host, monkeypatch, kernel=None, rc=0):
    insmod = Insmod(host, rc)
    monkeypatch.setattr(kmod_load, 'finit_module', insmod)
    return persist.restore(NAME, STATE_DIR, root=host.root, kernel=kernel or dict(KERNEL)), insmod


def test_restore_loads_the_recorded_module_on_the_same_kernel(host, tmp_path, monkeypatch):
    loaded(host, tmp_path)
    host.unload()  # the reboot
    status, insmod = restore(host, monkeypatch)
    assert insmod.calls == [['insmod', os.path.join(host.state_dir, NAME + '.loaded.ko')]]
    assert status['loaded'] is True and status['backend'] == 'module' and status['boot_id'] == BOOT
    assert host.loaded_hash() == NEW_HASH
    assert persist.last_status(host.state_dir, NAME)['loaded'] is True


def test_restore_after_a_kernel_upgrade_loads_nothing_and_says_why(host, tmp_path, monkeypatch):
    loaded(host, tmp_path)
    host.unload()
    status, insmod = restore(host, monkeypatch, kernel=dict(UPGRADED))
    assert insmod.calls == []
    assert status['loaded'] is False and 'failed' not in status
    assert '6.12.95+deb12-amd64' in status['reason'] and '6.1.0-50-amd64' in status['reason']
    assert host.loaded_hash() is None
    assert persist.last_status(host.state_dir, NAME)['reason'] == status['reason']


def test_restore_refuses_a_file_that_changed(host, tmp_path, monkeypatch):
    loaded(host, tmp_path)
    host.unload()
    with open(os.path.join(host.state_dir, NAME + '.loaded.ko'), 'ab') as f:
        f.write(b'tampered')
    status, insmod = restore(host, monkeypatch)
    assert insmod.calls == [] and status['loaded'] is False and status['failed'] is True
    assert 'sha256' in status['reason']


def test_restore_never_touches_a_foreign_module_of_that_name(host, tmp_path, monkeypatch):
    loaded(host, tmp_path)
    host.unload()
    host.load(NEW_HASH, marker=False)
    os.unlink(os.path.join(host.root, 'sys/module', NAME, 'version'))
    status, insmod = restore(host, monkeypatch)
    assert insmod.calls == [] and status['failed'] is True and 'not ours' in status['reason']


def test_restore_loads_nothing_but_our_own_copy(host, tmp_path, monkeypatch):
    loaded(host, tmp_path)
    host.unload()
    path = host_state.state_file(host.state_dir, NAME, 'persist')
    data = json.load(open(path))
    data['module']['ko'] = '/lib/modules/x/kernel/fs/ext4/ext4.ko'
    json.dump(data, open(path, 'w'))
    status, insmod = restore(host, monkeypatch)
    assert insmod.calls == [] and status['failed'] is True and 'not our copy' in status['reason']


def test_restore_reports_the_kernels_refusal(host, tmp_path, monkeypatch):
    loaded(host, tmp_path)
    host.unload()
    status, insmod = restore(host, monkeypatch, rc=1)
    assert status['loaded'] is False and status['failed'] is True
    assert 'Invalid argument (EINVAL)' in status['reason']


def test_restore_without_a_record_does_nothing(host, monkeypatch):
    status, insmod = restore(host, monkeypatch)
    assert insmod.calls == [] and status['loaded'] is False and 'nothing recorded' in status['reason']


def test_restore_of_tracefs_recreates_the_recorded_events(host, monkeypatch):
    probes = [{'name': 'disk_full', 'function': 'vfs_write'}]
    persist.save_manifest(host.state_dir, NAME, 'tracefs', NEW_HASH, {'probes': probes, 'reason': 'locked down'})
    seen = []

    class Backend(object):
        def __init__(self, name, root, state_dir):
            seen.append((name, root, state_dir))

        def present(self, p, spec_hash, reason):
            seen.append((p, spec_hash, reason))
            return {'msg': 'created 1 return probe event(s)'}

    from ansible_collections.kprobes.fleet.plugins.module_utils import tracefs_probes
    monkeypatch.setattr(tracefs_probes, 'TraceProbes', Backend)
    status = persist.restore(NAME, STATE_DIR, root=host.root, kernel=dict(KERNEL))
    assert status['loaded'] is True and status['backend'] == 'tracefs'
    assert seen == [(NAME, host.root, STATE_DIR), (probes, NEW_HASH, 'locked down')]


# -- the unit --------------------------------------------------------------------------------

class Systemctl(FakeModule):
    def __init__(self, params, check_mode=False):
        FakeModule.__init__(self, params, check_mode=check_mode)
        self.enabled = False
        self.handler = self.systemctl

    def systemctl(self, argv):
        verb = argv[1]
        if verb == 'is-enabled':
            return (0, 'enabled\n', '') if self.enabled else (1, 'disabled\n', '')
        if verb == 'enable':
            self.enabled = True
        if verb == 'disable':
            self.enabled = False
        return 0, '', ''


def persister(host, tmp_path, state='present', check_mode=False, module=None):
    params = {'name': NAME, 'state': state, 'host_dir': os.path.dirname(STATE_DIR),
              'unit_dir': '/etc/systemd/system'}
    module = module or Systemctl(params, check_mode=check_mode)
    module.params, module.check_mode = params, check_mode
    return module, probe_persist.Persister(module, root=host.root)


def unit_path(host):
    return os.path.join(host.root, 'etc/systemd/system', 'kprobes-fleet-%s.service' % NAME)


def test_present_installs_and_enables_the_unit_then_is_idempotent(host, tmp_path):
    loaded(host, tmp_path)
    module, p = persister(host, tmp_path)
    result = p.apply()
    assert result['changed'] is True and result['enabled'] is True
    assert result['recorded']['backend'] == 'module' and result['recorded']['kernel'] == KERNEL
    text = open(unit_path(host)).read()
    assert persist.is_ours(text) and '--name %s' % NAME in text and sys.executable in text
    assert host_state.state_file(STATE_DIR, NAME, 'persist') in text  # ConditionPathExists: nothing recorded, nothing run
    assert [c[1] for c in module.calls] == ['daemon-reload', 'is-enabled', 'enable']
    lib = os.path.join(host.root, 'var/lib/kprobes-fleet/lib')
    assert os.path.isfile(os.path.join(lib, persist.RESTORE_SCRIPT))
    for mod in ('tracefs_support', 'tracefs_commands', 'tracefs_probes', 'tracefs_counters', 'tracefs_buffer'):
        assert os.path.isfile(os.path.join(lib, 'ansible_collections/kprobes/fleet/plugins/module_utils/%s.py' % mod))
    module2, p2 = persister(host, tmp_path, module=module)
    module.calls[:] = []
    assert p2.apply()['changed'] is False
    assert [c[1] for c in module.calls] == ['is-enabled']


def test_check_mode_writes_nothing(host, tmp_path):
    module, p = persister(host, tmp_path, check_mode=True)
    assert p.apply()['changed'] is True
    assert not os.path.exists(unit_path(host)) and [c[1] for c in module.calls] == ['is-enabled']


def test_a_unit_that_is_not_ours_is_never_changed_or_removed(host, tmp_path):
    os.makedirs(os.path.dirname(unit_path(host)))
    with open(unit_path(host), 'w') as f:
        f.write('[Unit]\nDescription=someone else\n')
    for state in ('present', 'absent'):
        module, p = persister(host, tmp_path, state=state)
        with pytest.raises(Failed) as e:
            p.apply()
        assert 'not ours' in str(e.value) and module.calls == []
        assert open(unit_path(host)).read() == '[Unit]\nDescription=someone else\n'


def test_absent_removes_the_unit_and_the_restore_program(host, tmp_path):
    module, p = persister(host, tmp_path)
    p.apply()
    module2, p2 = persister(host, tmp_path, state='absent')
    assert p2.apply()['changed'] is True
    assert not os.path.exists(unit_path(host))
    assert not os.path.exists(os.path.join(host.root, 'var/lib/kprobes-fleet/lib'))
    assert [c[1:] for c in module2.calls] == [['disable', '--now', os.path.basename(unit_path(host))], ['daemon-reload'],
                                              ['reset-failed', os.path.basename(unit_path(host))]]
    module3, p3 = persister(host, tmp_path, state='absent')
    assert p3.apply()['changed'] is False


def test_a_module_loaded_before_records_existed_is_adopted(host, tmp_path):
    digest = loaded(host, tmp_path)
    os.unlink(host_state.state_file(host.state_dir, NAME, 'persist'))
    module, p = persister(host, tmp_path)
    assert p.apply()['recorded']['spec_hash'] == NEW_HASH
    assert persist.load_manifest(host.state_dir, NAME)['module']['sha256'] == digest


@pytest.mark.parametrize('field, value', [('name', '../x'), ('lib_dir', '/etc'), ('unit_dir', '/usr/lib/x y'),
                                          ('state_dir', 'relative')])
def test_bad_arguments_are_refused(host, tmp_path, field, value):
    module, dummy = persister(host, tmp_path)
    module.params[field] = value
    with pytest.raises(Failed):
        probe_persist.Persister(module, root=host.root)
    assert module.calls == []


def test_the_shipped_restore_program_runs_without_ansible(host, tmp_path):
    """The lib copy is self-contained: a bare python -I imports it and restores from it."""
    module, p = persister(host, tmp_path)
    p.apply()
    lib = os.path.join(host.root, 'var/lib/kprobes-fleet/lib')
    code = ('import sys; sys.path.insert(0, %r)\n'
            'import ansible_collections.kprobes.fleet.plugins.module_utils.persist as p, '
            'ansible_collections.kprobes.fleet.plugins.module_utils.names as n\n'
            'assert p.__file__.startswith(%r), p.__file__\n'
            'n.FORBIDDEN_TREES = ()\n'
            'print(p.restore(%r, %r, root=%r)["reason"])\n' % (lib, lib, NAME, STATE_DIR, host.root))
    out = subprocess.run([sys.executable, '-I', '-c', code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert 'nothing recorded' in out.stdout
    script = open(os.path.join(lib, persist.RESTORE_SCRIPT)).read()
    assert script.startswith('#!') and names.MARK in script
