#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: event_forwarder
short_description: Send a host's probe matches as events, as they happen (Event-Driven Ansible)
description:
  - With O(state=present), installs, enables and (re)starts the systemd unit
    C(kprobes-fleet-<name>-events.service). It runs the forwarder of this collection (standard library
    only, from the copy of its C(module_utils) in C(<host_dir>/lib) that the boot-time restore uses too).
    Every match our probes log (module backend - kernel-facility C(/dev/kmsg) records of our module, and for
    probes with C(args) the module's root-only ring C(/proc/<name>.events), read every C(poll_ms); tracefs
    backend - our instance's buffer) becomes one event C({host, probe, function, ret, errno, pid, comm,
    ts, boot_id, seq, burst}), POSTed in batches (a JSON object with the list C(events) and C(kprobes_fleet)
    holding C(host) and C(count)) to C(config.url), such as ansible-rulebook's C(eda.builtin.webhook) source.
  - An event of a probe with C(args) also carries C(args) (name to an integer, a string, null, or a file
    C({path, fs, dev, mount, device})), C(tid), C(uid) and, when a value was cut or could not be read,
    C(args_truncated) (names) and C(args_errors) (name to errno name). Captured strings are the facts' text -
    every byte that is not printable UTF-8, and the backslash, written as \xHH - and never longer than the
    event sources take (a longer one is cut and named in C(args_truncated)); records of the ring overwritten
    before the forwarder read them are counted in C(lost).
  - Bounded queue, batches, at most C(config.rate) requests a second, retries with back-off; events
    it has to give up (queue full, refused by the endpoint, still queued at a stop) are counted in
    C(dropped). Its counters are in C(<host_dir>/state/<name>.events-status.json), which
    M(kprobes.fleet.probe_facts) reports as C(forwarder).
  - The forwarder reads with cursors of its own; the collector's cursors and events are untouched.
  - With O(state=absent), stops, disables and removes the unit, its configuration, status, cursor and
    spool; the program copy in C(<host_dir>/lib) too unless the boot-time restore unit still uses it.
    Only a unit file whose first line is our mark (a comment starting with C(kprobes.fleet:)) is ever
    changed or removed.
author:
  - kprobes.fleet developers (@kprobes-fleet)
extends_documentation_fragment: [kprobes.fleet.names, kprobes.fleet.host_state, kprobes.fleet.host_state.units]
options:
  state:
    description: V(present) installs and starts the forwarder, V(absent) removes every trace of it.
    type: str
    choices: [present, absent]
    default: present
  host:
    description: The name events carry in C(host) (the inventory host name, which a rulebook limits its
      playbook to). Required with O(state=present).
    type: str
  config:
    description:
      - The settings (C(kprobes_fleet_events)) - C(url) (required; plain http only to the host's loopback),
        C(token) (bearer token sent with every post; the deploy gives each host its own, derived on the controller
        from the events key and the inventory name, which C(kprobes.fleet.webhook) checks), C(batch_size), C(batch_wait_ms), C(queue_size), C(rate),
        C(retry_max_s), C(timeout_s), C(burst_gap_s), C(poll_ms), C(spool), C(spool_max_kb); checked with
        the same rules as on the controller.
      - Required with O(state=present).
    type: dict
notes:
  - The token is kept in a root-only (0600) file, never on a command line; O(config)
    is not logged.
seealso:
  - module: kprobes.fleet.probe_persist
  - module: kprobes.fleet.probe_facts
'''

EXAMPLES = r'''
- name: Forward matches to ansible-rulebook's webhook, through a reverse SSH tunnel to the controller
  kprobes.fleet.event_forwarder:
    name: kprobes_fleet
    host: "{{ inventory_hostname }}"
    config:
      url: http://127.0.0.1:5000/kprobes-fleet

- name: Stop forwarding
  kprobes.fleet.event_forwarder:
    name: kprobes_fleet
    state: absent
'''

RETURN = r'''
unit:
  description: Path of the unit file.
  returned: always
  type: str
  sample: /etc/systemd/system/kprobes-fleet-kprobes_fleet-events.service
active:
  description: Whether the forwarder runs after this task (V(false) in check mode when it would be started).
  returned: always
  type: bool
msg:
  description: What was done.
  returned: always
  type: str
'''

import json
import os
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kprobes.fleet.plugins.module_utils import events, host_state, names, persist


def unit_text(name, python, lib_dir, state_dir):
    """The forwarder's systemd unit; its first line is our mark."""
    return (
        '# %s: forwards the probe matches of "%s" as events (written by kprobes.fleet.event_forwarder; '
        'removed by state=absent)\n'
        '[Unit]\n'
        'Description=kprobes.fleet events of %s (probe matches to an Event-Driven Ansible endpoint)\n'
        'After=network.target %s\n'
        'ConditionPathExists=%s\n\n'
        '[Service]\n'
        'Type=simple\n'
        'ExecStart=%s -I %s --name %s --state-dir %s\n'
        'Restart=always\n'
        'RestartSec=2\n'
        'NoNewPrivileges=yes\n'
        'ProtectSystem=strict\n'
        'ReadWritePaths=%s\n'
        'ProtectHome=yes\n'
        'PrivateTmp=yes\n\n'
        '[Install]\n'
        'WantedBy=multi-user.target\n'
        % (names.MARK, name, name, persist.unit_name(name), host_state.state_file(state_dir, name, 'events-config'),
           python, os.path.join(lib_dir, events.FORWARD_SCRIPT), name, state_dir, state_dir))


class EventForwarder(persist.UnitFiles):
    def __init__(self, module, root='/'):
        persist.UnitFiles.__init__(self, module, root, persist.events_unit_name)

    def check(self, params):
        if params['state'] == 'present':
            self.host_name = events.check_host(params['host'], 'host')
            self.config = events.check_config(params['config'], 'config')
            if not self.config:
                raise names.InvalidValue('config: state=present needs at least config.url')

    def present(self):
        self.refuse_foreign_unit()
        restart = self.write_lib()
        conf = json.dumps({'mark': names.MARK, 'host': self.host_name, 'config': self.config},
                          indent=1, sort_keys=True) + '\n'
        restart |= self.write(host_state.state_file(self.state_dir, self.name, 'events-config'), conf)
        unit_changed = self.write(self.unit, unit_text(self.name, sys.executable, self.lib_dir, self.state_dir))
        self.changed = restart or unit_changed
        unit = os.path.basename(self.unit)
        if self.module.check_mode:
            rc, out = self.systemctl('is-active', unit, check=False)
            return self.result(out == 'active' and not self.changed, 'would be (re)started' if self.changed else 'running')
        if unit_changed:
            self.systemctl('daemon-reload')
        rc, enabled = self.systemctl('is-enabled', unit, check=False)
        if enabled != 'enabled':
            self.changed = True
            self.systemctl('enable', unit)
        rc, active = self.systemctl('is-active', unit, check=False)
        if restart or unit_changed or active != 'active':
            self.changed = True
            self.systemctl('restart', unit)
        return self.result(True, 'running' if not self.changed else 'installed and (re)started')

    def absent(self):
        self.refuse_foreign_unit()
        self.remove_unit('--now')
        if self.changed and not self.module.check_mode:
            self.systemctl('reset-failed', os.path.basename(self.unit), check=False)
        try:
            for path in events.files(self.state_dir, self.name):
                if os.path.lexists(self.host(path)):
                    self.changed = True
                    if not self.module.check_mode:
                        os.unlink(self.host(path))
            self.remove_lib_unless(persist.unit_name(self.name), persist.metrics_unit_name(self.name))
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot remove the forwarder of %s: %s' % (self.name, to_native(e)))
        return self.result(False, 'removed' if self.changed else 'not installed')

    def result(self, active, what):
        return {'changed': self.changed, 'unit': self.unit, 'active': active,
                'msg': '%s %s' % (os.path.basename(self.unit), what)}


def build_module():
    return AnsibleModule(**host_state.module_kwargs(dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        host=dict(type='str'),
        config=dict(type='dict', no_log=True),
    ), units=True, required_if=[('state', 'present', ('host', 'config'))]))


def main():
    module = build_module()
    module.exit_json(**EventForwarder(module).apply())


if __name__ == '__main__':
    main()
