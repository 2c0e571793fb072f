#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: tracefs_probes
short_description: Put kprobes.fleet return probes on a host through tracefs (no kernel module)
description:
  - The C(tracefs) backend of kprobes.fleet. No headers, no compiler, no module; works where
    unsigned modules are refused (lockdown V(integrity), C(module.sig_enforce=1)).
  - For every probe, one kernel return-probe event C(r<maxactive>:<name>/<probe> <function>
    ret=$retval:<s32|s64>) is appended to C(kprobe_events), in the trace event group O(name)
    (C(int) functions are read as C(s32), C(long) and C(errptr) as C(s64); the type is the
    resolved probe's C(returns), that of the candidate chosen on this host).
  - A tracing instance of our own, C(instances/<name>) (clock C(mono), 1024 KiB per CPU), holds
    per probe a hist trigger counting the matches of the probe's C(report) by return value,
    and, for probes with C(log=true), the event enabled with that filter (the events that
    M(kprobes.fleet.probe_facts) collects). C(errptr) probes only ever match -4095..-1.
  - On kernels without hist triggers (C(CONFIG_HIST_TRIGGERS) off, as Debian 11's 5.10) each
    probe gets a counting instance C(instances/<name>.<probe>) instead of the hist trigger - the
    event enabled there with the report filter into a 4 KiB ring, whose per-CPU
    C(entries + overrun) is the exact number of matches.
  - What was created is recorded in C(<host_dir>/state/<name>.tracefs.json) before it is created.
    With O(state=present) nothing happens when the record is of this boot, has the wanted
    O(spec_hash) and everything in it is in place; otherwise our previous events and instance
    (only those on record) are removed and the probes are created again.
  - A definition the kernel refuses (a symbol that cannot be probed, a limit) removes whatever
    the run created, recreates the previous probe set if there was one, and fails with the
    kernel's words (C(error_log)).
  - Never touches what is not ours. When the event group O(name) has events that are not on
    record, or C(instances/<name>) exists and is not ours, the task fails and changes nothing.
    Removal only removes the triggers, the instance and the events on record for this boot;
    other groups, other instances and other kprobe events are left alone. C(kprobe_events) is only
    ever opened for appending (a truncating write would delete every kprobe event on the host).
  - Dynamic events do not survive a reboot; after one the record is stale and O(state=present)
    creates the probes again.
author:
  - kprobes.fleet developers (@kprobes-fleet)
extends_documentation_fragment: [kprobes.fleet.host_state, kprobes.fleet.names]
options:
  probes:
    description:
      - The resolved probe spec (output of the spec normalization plus C(function), the symbol
        chosen on this host), checked again here. Required with O(state=present).
      - Keys C(name), C(functions), C(function), C(returns), C(report), C(errnos), C(maxactive),
        C(log), C(log_burst), C(log_interval). C(log_burst) and C(log_interval) have no effect
        (tracefs does not rate limit).
    type: list
    elements: dict
  spec_hash:
    description:
      - Spec hash of the resolved spec (16 hex digits), recorded to decide whether anything
        changed. Required with O(state=present).
    type: str
  reason:
    description:
      - Free text saying why this host runs the tracefs backend, recorded and reported as
        C(backend_reason) by M(kprobes.fleet.probe_facts).
      - A different O(reason) alone rewrites the record (reported as a change) and touches
        nothing in the kernel.
    type: str
  state:
    description:
      - V(present) creates the probes (recreating them when another spec is in place),
        V(absent) removes what is on record.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: In check mode nothing is written to tracefs or to the state directory; the
      checks (availability, ownership) still run.
  diff_mode:
    support: full
    description: Shows whether probes are in place and their spec hash, before and after.
notes:
  - Needs root. Needs tracefs with C(kprobe_events) (C(CONFIG_KPROBE_EVENTS)), hist triggers
    (C(CONFIG_HIST_TRIGGERS)) and no lockdown in confidentiality mode; see the C(tracefs) fact
    of M(kprobes.fleet.kernel_facts).
  - C(maxactive) is at most 4096, the kernel's limit for return-probe events.
seealso:
  - module: kprobes.fleet.probe_facts
  - module: kprobes.fleet.kernel_facts
  - module: kprobes.fleet.probe_module
'''

EXAMPLES = r'''
- name: Put the probes on this host through tracefs
  kprobes.fleet.tracefs_probes:
    name: kprobes_fleet
    probes:
      - name: disk_full
        functions: [{function: vfs_write, returns: long}]
        function: vfs_write
        returns: long
        report: errno
        errnos: [EDQUOT, ENOSPC]
        maxactive: 1024
        log: true
        log_burst: 100
        log_interval: 5
    spec_hash: 3f2a9c0d11e4b7a5
    reason: lockdown=integrity refuses unsigned modules

- name: Remove them
  kprobes.fleet.tracefs_probes:
    name: kprobes_fleet
    state: absent
'''

RETURN = r'''
name:
  description: The probe set name (event group and instance).
  returned: always
  type: str
  sample: kprobes_fleet
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
spec_hash:
  description: Spec hash of the probes in place after the task (V(null) after O(state=absent)).
    In check mode, what it would be.
  returned: always
  type: str
  sample: 3f2a9c0d11e4b7a5
previous_spec_hash:
  description: Spec hash on record for this boot before the task, V(null) if none.
  returned: always
  type: str
  sample: 0d11e4b7a53f2a9c
probes:
  description: Per probe, the probed symbol and whether its event is defined (1) or not (0).
  returned: when O(state=present)
  type: dict
  sample: {disk_full: {function: vfs_write, registered: 1}}
removed:
  description: What was removed (or would be, in check mode).
  returned: when O(state=absent)
  type: list
  elements: str
  sample: [instance kprobes_fleet, event kprobes_fleet/disk_full]
msg:
  description: What was done.
  returned: always
  type: str
  sample: created 2 return probe event(s) in group kprobes_fleet and instance kprobes_fleet
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, names, persist
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_probes import TraceProbes
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import TracefsError


class TracefsProbes(object):
    """present/absent through the tracefs backend. Paths below ``root`` so tests can fake a host."""

    def __init__(self, module, root='/', io=None):
        self.module = module
        params = module.params
        self.state = params['state']
        try:
            self.backend = TraceProbes(params['name'], root=root, state_dir=host_state.from_params(params).state, io=io)
        except names.InvalidValue as e:
            module.fail_json(msg=str(e))
        self.name = self.backend.name

    def diff(self, before, after):
        if not self.module._diff:
            return {}
        return {'diff': {'before': before, 'after': after}}

    def before(self):
        status = self.backend.status()
        return {'present': status['present'], 'spec_hash': status['spec_hash'] if status['present'] else None}

    def present(self):
        params = self.module.params
        before = self.before()
        result = self.backend.present(params['probes'], params['spec_hash'], params['reason'],
                                      check_mode=self.module.check_mode)
        if result['changed']:
            result.update(self.diff(before, {'present': True, 'spec_hash': result['spec_hash']}))
        self.record(params['probes'], result['spec_hash'], params['reason'], result)
        return result

    def record(self, probes, spec_hash, reason, result):
        """Record what runs now for the boot-time restore (kprobes.fleet.probe_persist)."""
        detail = {'probes': probes, 'reason': reason}
        have = persist.load_manifest(self.backend.state_dir, self.name)
        if have and have['backend'] == 'tracefs' and have['spec_hash'] == spec_hash \
                and have.get('tracefs') == detail and have['kernel'] == persist.running_kernel():
            return
        result['changed'] = True
        if not self.module.check_mode:
            persist.save_manifest(self.backend.state_dir, self.name, 'tracefs', spec_hash, detail)

    def absent(self):
        before = self.before()
        result = self.backend.absent(check_mode=self.module.check_mode)
        result.update(spec_hash=None, previous_spec_hash=before['spec_hash'])
        have = persist.load_manifest(self.backend.state_dir, self.name)
        if have and have['backend'] == 'tracefs':
            result['changed'] = True
            if not self.module.check_mode:
                persist.forget(self.backend.state_dir, self.name, 'tracefs')
        if result['changed']:
            result.update(self.diff(before, {'present': False, 'spec_hash': None}))
        return result

    def apply(self):
        try:
            result = self.absent() if self.state == 'absent' else self.present()
        except names.InvalidValue as e:
            self.module.fail_json(msg=str(e), name=self.name, state=self.state)
        except TracefsError as e:
            self.module.fail_json(msg=str(e), name=self.name, state=self.state)
        result.update(name=self.name, state=self.state)
        return result


def build_module():
    return AnsibleModule(**host_state.module_kwargs(dict(
        name=dict(type='str', required=True),
        probes=dict(type='list', elements='dict'),
        spec_hash=dict(type='str'),
        reason=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
    ), required_if=[('state', 'present', ('probes', 'spec_hash'))]))


def main():
    module = build_module()
    result = TracefsProbes(module).apply()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
