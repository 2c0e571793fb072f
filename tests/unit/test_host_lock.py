# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kprobes.fleet.host_lock: one run at a time per host; a dead run's lock is taken over (#9)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest

from ansible_collections.kprobes.fleet.plugins.modules import host_lock
from fakes import Failed, FakeModule

A, B = 'a' * 16, 'b' * 16


class Host(object):
    def __init__(self, tmp_path):
        self.root = str(tmp_path)
        os.makedirs(os.path.join(self.root, 'proc/sys/kernel/random'))
        self.boot('boot-1')
        self.now = 1000.0

    def boot(self, boot_id):
        with open(os.path.join(self.root, 'proc/sys/kernel/random/boot_id'), 'w') as f:
            f.write(boot_id + '\n')

    def lock(self, run_id, state='present', wait=0, stale_after=3600, check_mode=False, owner='', on_sleep=None):
        params = {'name': 'kprobes_fleet', 'state': state, 'run_id': run_id, 'owner': owner or 'ctl-' + run_id[0],
                  'wait': wait, 'stale_after': stale_after}
        module = FakeModule(params, check_mode)

        def sleep(s):
            self.now += s
            if on_sleep:
                on_sleep()
        return module, host_lock.HostLock(module, root=self.root, clock=lambda: self.now, sleep=sleep)

    def run(self, run_id, **kw):
        return self.lock(run_id, **kw)[1].apply()

    @property
    def path(self):
        return os.path.join(self.root, 'run/kprobes-fleet/kprobes_fleet.lock')


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def test_take_is_idempotent_and_never_a_change(host):
    r = host.run(A)
    assert r['changed'] is False and r['held_by']['run_id'] == A and os.path.exists(host.path)
    assert host.run(A)['held_by']['run_id'] == A
    assert oct(os.stat(host.path).st_mode & 0o777) == '0o600'


def test_a_second_run_fails_naming_the_first(host):
    host.run(A, owner='alice@ctl (AWX job 42)')
    with pytest.raises(Failed) as e:
        host.run(B)
    assert 'alice@ctl (AWX job 42)' in str(e.value) and A in str(e.value)
    assert e.value.kwargs['held_by']['run_id'] == A


def test_a_second_run_waits_for_the_release(host):
    host.run(A)
    released = []

    def release():
        if host.now >= 1010 and not released:
            host.run(A, state='absent')
            released.append(host.now)
    r = host.run(B, wait=60, on_sleep=release)
    assert r['held_by']['run_id'] == B and released and r['waited'] >= 10


def test_a_second_run_gives_up_after_wait(host):
    host.run(A)
    with pytest.raises(Failed) as e:
        host.run(B, wait=30)
    assert e.value.kwargs['waited'] >= 30


@pytest.mark.parametrize('how', ['reboot', 'age'])
def test_a_dead_runs_lock_is_taken_over(host, how):
    host.run(A)
    if how == 'reboot':
        host.boot('boot-2')
    else:
        host.now += 3601
    module, lock = host.lock(B)
    r = lock.apply()
    assert r['held_by']['run_id'] == B and r['took_over']['run_id'] == A
    assert ('rebooted' if how == 'reboot' else 'older') in r['took_over']['why']
    assert module.warnings and A in module.warnings[0]


def test_release_only_our_own(host):
    host.run(A)
    r = host.run(B, state='absent')
    assert r['held_by']['run_id'] == A and r['released'] is False and os.path.exists(host.path)
    r = host.run(A, state='absent')
    assert r['held_by'] is None and r['released'] is True and not os.path.exists(host.path)
    r = host.run(A, state='absent')
    assert r['held_by'] is None and r['released'] is False and r['changed'] is False


def test_the_message_names_the_way_to_release_a_dead_runs_lock(host):
    # kprobes.fleet.unlock is host_lock state=absent with the dead run's id: the message gives that id
    host.run(A, owner='alice@ctl (AWX job 42)')
    with pytest.raises(Failed) as e:
        host.run(B)
    assert 'kprobes.fleet.unlock' in str(e.value) and 'kprobes_fleet_unlock=%s' % A in str(e.value)
    assert 'kprobes_fleet_lock_stale_after' not in str(e.value)  # not a variable anyone can set
    module, lock = host.lock(A, state='absent', check_mode=True)
    assert lock.apply()['released'] is True and os.path.exists(host.path)  # check mode: would, does not
    assert host.run(A, state='absent')['released'] is True
    assert host.run(B)['held_by']['run_id'] == B


def test_check_mode_takes_nothing(host):
    assert host.run(A, check_mode=True)['changed'] is False
    assert not os.path.exists(host.path)
    host.run(A)
    with pytest.raises(Failed):
        host.run(B, check_mode=True)


@pytest.mark.parametrize('field, value', [('run_id', 'xyz'), ('run_id', A.upper()), ('name', '../etc'),
                                          ('wait', -1), ('stale_after', 5), ('owner', 'a\nb')])
def test_bad_arguments(host, field, value):
    module, dummy = host.lock(A)
    module.params[field] = value
    with pytest.raises(Failed):
        host_lock.HostLock(module, root=host.root)
