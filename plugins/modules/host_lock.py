#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: host_lock
short_description: One kprobes.fleet run at a time on a host
description:
  - Takes (V(present)) or gives back (V(absent)) the host-side lock C(/run/kprobes-fleet/<name>.lock)
    that a deploy or removal holds from its first change to its last, so two runs on one host (two
    controllers, or AWX and a person) never build, load or unload at the same time.
  - A second run waits up to O(wait) seconds, then fails with a message naming the run that holds the
    lock (O(owner), since when). A lock is taken over, and the take-over reported, when the host
    rebooted since it was taken (the holder died with it; C(/run) is emptied at boot anyway) or when it
    is older than O(stale_after) seconds (its run died without releasing it).
  - Never reports a change (a lock is not configuration), so re-runs stay C(changed=0); RV(released) says
    whether V(absent) released one.
  - V(absent) with the O(run_id) of a run known to have died (named in the message of a run that found
    the lock taken) releases that run's lock before it goes stale; the playbook C(kprobes.fleet.unlock)
    does that for a fleet.
author:
  - kprobes.fleet developers (@kprobes-fleet)
options:
  name:
    description: Module name (C(kprobes_fleet_module_name)); one lock per name.
    type: str
    required: true
  state:
    description: V(present) takes the lock, V(absent) releases it (only when O(run_id) holds it).
    type: str
    choices: [present, absent]
    default: present
  run_id:
    description: Identifies this run (16 hex digits); taking a lock this run holds is a no-op.
    type: str
    required: true
  owner:
    description: Who this run is, shown to a run that finds the lock taken (user, controller, AWX job).
    type: str
    default: ''
  wait:
    description: Seconds to wait for another run's lock before failing (0 - fail at once).
    type: int
    default: 300
  stale_after:
    description: Seconds after which a lock whose holder did not release it is taken over.
    type: int
    default: 3600
attributes:
  check_mode:
    support: full
    description: Reports whether the lock is free; takes and releases nothing.
  diff_mode:
    support: none
    description: No diff.
notes:
  - Needs root.
'''

EXAMPLES = r'''
- name: One deploy at a time on this host
  kprobes.fleet.host_lock:
    name: kprobes_fleet
    run_id: 9f3c2a1b0d4e5f60
    owner: "alice@ctl (AWX job 42)"
'''

RETURN = r'''
path:
  description: The lock file.
  returned: always
  type: str
  sample: /run/kprobes-fleet/kprobes_fleet.lock
held_by:
  description: The lock's content after this run (V(null) when released); or the other holder, on failure.
  returned: always
  type: dict
  sample: {run_id: 9f3c2a1b0d4e5f60, owner: "alice@ctl (AWX job 42)", boot_id: 84622e10-..., since: 1764390000.5}
took_over:
  description: The stale lock that was taken over, with why, or V(null).
  returned: always
  type: dict
waited:
  description: Seconds spent waiting for another run.
  returned: always
  type: float
released:
  description:
    - Whether O(state=absent) released a lock that O(run_id) held (or would, in check mode). Only the
      lock of that run is ever released; another run's lock stays and is returned in RV(held_by).
  returned: always
  type: bool
'''

import fcntl
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmsg, names

LOCK_DIR = '/run/kprobes-fleet'
POLL = 2.0


def describe(info):
    since = info.get('since')
    when = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(since)) if isinstance(since, (int, float)) else '?'
    return 'run %s of %s, since %s' % (info.get('run_id'), info.get('owner') or 'an unnamed controller', when)


class HostLock(object):
    def __init__(self, module, root='/', clock=time.time, sleep=time.sleep):
        self.module = module
        self.root = root
        self.clock, self.sleep = clock, sleep
        p = module.params
        try:
            self.name = names.module_name(p['name'], 'name')
            names.hex16(p['run_id'], 'run_id')
        except names.InvalidValue as e:
            module.fail_json(msg=str(e))
        if len(p['owner']) > 300 or not p['owner'].isprintable():
            module.fail_json(msg='owner must be printable and at most 300 characters')
        for key, low, high in (('wait', 0, 86400), ('stale_after',) + names.STALE_AFTER_BOUNDS):
            if not low <= p[key] <= high:
                module.fail_json(msg='%s must be %d-%d seconds, got %d' % (key, low, high, p[key]))
        self.run_id, self.owner = p['run_id'], p['owner']
        self.dir = os.path.join(root, LOCK_DIR.lstrip('/'))
        self.path = os.path.join(self.dir, '%s.lock' % self.name)
        self.host_path = os.path.join(LOCK_DIR, '%s.lock' % self.name)

    def boot_id(self):
        try:
            return kmsg.read_boot_id(os.path.join(self.root, kmsg.BOOT_ID_PATH.lstrip('/')))
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot read boot_id: %s' % to_native(e))

    def read(self):
        try:
            with open(self.path) as f:
                info = json.load(f)
        except (IOError, OSError):
            return None
        except ValueError:
            return {'run_id': None, 'owner': '(unreadable lock)', 'since': 0, 'boot_id': None}
        return info if isinstance(info, dict) else {'run_id': None, 'since': 0, 'boot_id': None}

    def stale(self, info, boot_id):
        if info.get('boot_id') != boot_id:
            return 'the host rebooted since it was taken'
        since = info.get('since')
        if not isinstance(since, (int, float)) or self.clock() - since > self.module.params['stale_after']:
            return 'older than %d s (stale_after): its run ended without releasing it' % self.module.params['stale_after']
        return None

    def guarded(self, fn):
        """Run fn() under an flock on the lock directory: checks and takes are atomic."""
        host_state.ensure_dir(self.dir)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fn()
        finally:
            os.close(fd)

    def try_take(self, boot_id):
        """(taken, holder, took_over)."""
        info = self.read()
        took_over = None
        if info is not None:
            if info.get('run_id') == self.run_id:
                return True, info, None
            why = self.stale(info, boot_id)
            if why is None:
                return False, info, None
            took_over = dict(info, why=why)
        if self.module.check_mode:
            return True, None, took_over
        mine = {'run_id': self.run_id, 'owner': self.owner, 'boot_id': boot_id, 'since': self.clock(),
                'mark': names.MARK}
        host_state.atomic_write(self.path, json.dumps(mine).encode(), 0o600)
        return True, mine, took_over

    def present(self):
        boot_id = self.boot_id()
        start = self.clock()
        while True:
            if self.module.check_mode and not os.path.isdir(self.dir):
                taken, holder, took_over = True, None, None
            else:
                taken, holder, took_over = self.guarded(lambda: self.try_take(boot_id))
            waited = round(self.clock() - start, 1)
            if taken:
                result = {'changed': False, 'path': self.host_path, 'held_by': holder, 'took_over': took_over,
                          'waited': waited, 'released': False}
                if took_over:
                    self.module.warn('took over the stale lock %s of %s (%s)' % (
                        self.host_path, describe(took_over), took_over['why']))
                return result
            if waited >= self.module.params['wait']:
                self.module.fail_json(
                    msg='another kprobes.fleet run is changing the probes %s on this host: %s (lock %s); '
                        'waited %d s (kprobes_fleet_lock_wait). Re-run when it has finished. A lock whose run '
                        'died is taken over after a reboot or after %d s; when you know that run is gone '
                        '(a cancelled job, a killed ansible-playbook), release it now with: ansible-playbook '
                        'kprobes.fleet.unlock -l <this host> -e kprobes_fleet_unlock=%s'
                        % (self.name, describe(holder), self.host_path, waited, self.module.params['stale_after'],
                           holder.get('run_id')),
                    path=self.host_path, held_by=holder, took_over=None, waited=waited, released=False)
            self.sleep(POLL)

    def absent(self):
        def release():
            info = self.read()
            if info is None or info.get('run_id') != self.run_id:
                return info, False
            if not self.module.check_mode:
                os.unlink(self.path)
            return None, True
        info, released = self.guarded(release) if os.path.isdir(self.dir) else (None, False)
        return {'changed': False, 'path': self.host_path, 'held_by': info, 'took_over': None, 'waited': 0.0,
                'released': released}

    def apply(self):
        return self.present() if self.module.params['state'] == 'present' else self.absent()


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            run_id=dict(type='str', required=True),
            owner=dict(type='str', default=''),
            wait=dict(type='int', default=300),
            stale_after=dict(type='int', default=3600),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    module.exit_json(**HostLock(module).apply())


if __name__ == '__main__':
    main()
