#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: probe_persist
short_description: Bring a host's probes back after a reboot, only on the kernel they were made for
description:
  - With O(state=present), installs and enables the systemd unit C(kprobes-fleet-<name>.service)
    and the restore program it runs (a copy of this collection's C(module_utils) in C(<host_dir>/lib)).
    At boot the unit loads the recorded module, or recreates the recorded tracefs events, only when
    the running kernel is exactly the one recorded (C(uname -r) and C(uname -v)); after a kernel
    upgrade it loads nothing and logs one line saying why, and M(kprobes.fleet.probe_facts) reports
    C(loaded=false) with that reason.
  - What runs is recorded by the backends in C(<host_dir>/state/<name>.persist.json) -
    M(kprobes.fleet.probe_module) after a load, M(kprobes.fleet.tracefs_probes) after creating events.
    A module loaded by an older release of this collection, without a record, is adopted.
  - Nothing is started now, the probes already run. Only a unit file whose first line is our mark
    (a comment starting with C(kprobes.fleet:)) is ever changed or removed.
  - With O(state=absent), disables and removes the unit and the restore program.
author:
  - kprobes.fleet developers (@kprobes-fleet)
extends_documentation_fragment: [kprobes.fleet.names, kprobes.fleet.host_state, kprobes.fleet.host_state.units]
options:
  state:
    description: V(present) installs and enables the unit, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: kprobes.fleet.probe_module
  - module: kprobes.fleet.tracefs_probes
  - module: kprobes.fleet.probe_facts
'''

EXAMPLES = r'''
- name: Restore the probes at boot
  kprobes.fleet.probe_persist:
    name: kprobes_fleet

- name: Stop restoring them
  kprobes.fleet.probe_persist:
    name: kprobes_fleet
    state: absent
'''

RETURN = r'''
unit:
  description: Path of the unit file.
  returned: always
  type: str
  sample: /etc/systemd/system/kprobes-fleet-kprobes_fleet.service
enabled:
  description: Whether the unit is enabled after this run.
  returned: always
  type: bool
recorded:
  description: The record the unit restores (backend, kernel, spec_hash), or null when there is none.
  returned: always
  type: dict
  sample: {backend: module, kernel: {release: 6.1.0-50-amd64, version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1"},
           spec_hash: 3f9a1c0d5e7b2a41}
msg:
  description: What was done.
  returned: always
  type: str
'''

import os
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, persist
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import file_sha256
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import ModuleSysfs


class Persister(persist.UnitFiles):
    def __init__(self, module, root='/'):
        persist.UnitFiles.__init__(self, module, root, persist.unit_name)

    def record(self):
        """The manifest; adopts a module of ours loaded without one (older releases)."""
        state = self.host(self.state_dir)
        manifest = persist.load_manifest(state, self.name)
        if manifest is not None:
            return manifest
        sysfs = ModuleSysfs(self.name, self.root)
        ko = host_state.state_file(state, self.name, 'loaded-ko')
        if not (sysfs.loaded() and sysfs.ours() and os.path.isfile(ko)):
            return None
        self.changed = True
        detail = {'ko': host_state.state_file(self.state_dir, self.name, 'loaded-ko'), 'sha256': file_sha256(ko)}
        if self.module.check_mode:
            return {'backend': 'module', 'kernel': persist.running_kernel(), 'spec_hash': sysfs.spec_hash()}
        return persist.save_manifest(state, self.name, 'module', sysfs.spec_hash(), detail)

    def present(self):
        self.refuse_foreign_unit()
        recorded = self.record()
        self.changed |= self.write_lib()
        unit_changed = self.write(self.unit, persist.unit_text(self.name, sys.executable, self.lib_dir, self.state_dir))
        self.changed |= unit_changed
        unit = os.path.basename(self.unit)
        if not self.module.check_mode and unit_changed:
            self.systemctl('daemon-reload')
        rc, out = self.systemctl('is-enabled', unit, check=False)
        if out != 'enabled':
            self.changed = True
            if not self.module.check_mode:
                self.systemctl('enable', unit)
        return {'changed': self.changed, 'unit': self.unit, 'enabled': True,
                'recorded': dict((k, recorded[k]) for k in ('backend', 'kernel', 'spec_hash')) if recorded else None,
                'msg': '%s %s' % (unit, 'installed and enabled' if self.changed else 'in place')}

    def absent(self):
        self.refuse_foreign_unit()
        # --now: after a boot the oneshot unit is "active (exited)" and would stay listed so, without its file,
        # until the next boot; stopping it runs nothing (no ExecStop) and leaves the module loaded
        self.remove_unit('--now')
        if self.changed and not self.module.check_mode:
            self.systemctl('reset-failed', os.path.basename(self.unit), check=False)
        try:
            self.remove_lib_unless(persist.events_unit_name(self.name), persist.metrics_unit_name(self.name))
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot remove %s: %s' % (self.lib_dir, to_native(e)))
        return {'changed': self.changed, 'unit': self.unit, 'enabled': False, 'recorded': None,
                'msg': '%s %s' % (os.path.basename(self.unit), 'removed' if self.changed else 'not installed')}


def build_module():
    return AnsibleModule(**host_state.module_kwargs(dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent']),
    ), units=True))


def main():
    module = build_module()
    module.exit_json(**Persister(module).apply())


if __name__ == '__main__':
    main()
