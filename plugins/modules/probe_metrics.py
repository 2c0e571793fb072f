#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: probe_metrics
short_description: Expose the probes' counters to Prometheus through node_exporter's textfile collector
description:
  - With O(state=present), installs, enables and starts C(kprobes-fleet-<name>-metrics.timer) and its
    service. Every O(interval) seconds (and at boot, after the boot-time restore) the service reads the
    counters straight from the kernel (our module's sysfs, or our tracefs events; no Ansible run, no
    cursor moved) and replaces C(<dir>/kprobes-fleet-<name>.prom) atomically, for node_exporter's textfile
    collector. It runs the program copy in C(<host_dir>/lib) that the boot-time restore uses too.
  - Metric families (text format 0.0.4, C(promtool check metrics) clean), each with the labels C(module),
    C(probe) and C(function) - C(kprobes_fleet_hits_total), C(_matches_total), C(_nmissed_total),
    C(_kprobe_nmissed_total) (module backend), C(_suppressed_total), C(_filtered_total),
    C(_errno_total) (label C(errno)), C(_latency_seconds) (histogram, log2 buckets as C(le)); per module,
    C(kprobes_fleet_events_lost_total) (label C(reader) - C(collect), C(forwarder)), C(kprobes_fleet_loaded)
    and C(kprobes_fleet_info) (labels C(backend), C(kernel), C(spec_hash)). No pid, comm, uid or path labels.
  - O(dir) is created (0755, with its parents) when missing and never removed. In it only our file is
    ever written or removed - one whose first line is our mark; a file of that name without it is refused.
    When O(dir) changes, our file in the previous directory is removed.
  - With O(state=absent), stops, disables and removes the timer, the service, the configuration and our
    file (the program copy in C(<host_dir>/lib) too unless another unit of ours still runs from it). Only
    unit files whose first line is our mark are ever changed or removed.
author:
  - kprobes.fleet developers (@kprobes-fleet)
extends_documentation_fragment: [kprobes.fleet.names, kprobes.fleet.host_state, kprobes.fleet.host_state.units]
options:
  state:
    description: V(present) installs and starts the timer, V(absent) removes every trace of it.
    type: str
    choices: [present, absent]
    default: present
  dir:
    description: The textfile collector's directory (C(--collector.textfile.directory)); Debian's
      C(prometheus-node-exporter) reads C(/var/lib/prometheus/node-exporter).
    type: str
    default: /var/lib/prometheus/node-exporter
  interval:
    description: Seconds between two refreshes of the file (1 to 3600).
    type: int
    default: 15
  errnos:
    description:
      - The errnos each probe reports (probe name to a list of errno names), shown as C(0) in
        C(kprobes_fleet_errno_total) until counted, so the first C(ENOSPC) is an increase that
        C(increase()) and alerts see, not the start of a series. The deploy passes the probes with
        C(report=errno).
    type: dict
    default: {}
seealso:
  - module: kprobes.fleet.probe_facts
  - module: kprobes.fleet.probe_persist
'''

EXAMPLES = r'''
- name: Expose the probes to node_exporter, refreshed every 15 s
  kprobes.fleet.probe_metrics:
    name: kprobes_fleet

- name: Stop exposing them
  kprobes.fleet.probe_metrics:
    name: kprobes_fleet
    state: absent
'''

RETURN = r'''
textfile:
  description: Path of our textfile.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/kprobes-fleet-kprobes_fleet.prom
units:
  description: Paths of the service and the timer.
  returned: always
  type: list
  elements: str
'''

import json
import os
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, metrics, names, persist

INTERVAL = (1, 3600)


def service_text(name, python, lib_dir, state_dir, directory):
    return (
        '# %s: writes the counters of the probes "%s" for Prometheus (written by kprobes.fleet.probe_metrics; '
        'removed by state=absent)\n'
        '[Unit]\n'
        'Description=kprobes.fleet metrics of %s (node_exporter textfile)\n'
        'After=%s\n'
        'ConditionPathExists=%s\n\n'
        '[Service]\n'
        'Type=oneshot\n'
        'ExecStart=%s -I %s --name %s --state-dir %s\n'
        'NoNewPrivileges=yes\n'
        'ProtectSystem=strict\n'
        'ReadWritePaths=%s\n'
        'ProtectHome=yes\n'
        'PrivateTmp=yes\n'
        % (names.MARK, name, name, persist.unit_name(name), host_state.state_file(state_dir, name, 'metrics-config'),
           python, os.path.join(lib_dir, persist.METRICS_SCRIPT), name, state_dir, directory))


def timer_text(name, interval):
    return (
        '# %s: refreshes the Prometheus textfile of the probes "%s" (written by kprobes.fleet.probe_metrics; '
        'removed by state=absent)\n'
        '[Unit]\n'
        'Description=kprobes.fleet metrics of %s, every %d s\n\n'
        '[Timer]\n'
        'OnActiveSec=1s\n'
        'OnUnitActiveSec=%ds\n'
        'AccuracySec=1s\n\n'
        '[Install]\n'
        'WantedBy=timers.target\n' % (names.MARK, name, name, interval, interval))


class ProbeMetrics(persist.UnitFiles):
    def __init__(self, module, root='/'):
        persist.UnitFiles.__init__(self, module, root, persist.metrics_unit_name)
        self.timer = os.path.join(self.unit_dir, persist.metrics_unit_name(self.name, 'timer'))
        self.units = (self.unit, self.timer)
        self.config_path = host_state.state_file(self.state_dir, self.name, 'metrics-config')

    def check(self, params):
        self.dir = names.host_path(params['dir'], 'dir')
        self.interval = names.as_int('interval', params['interval'], INTERVAL[0], INTERVAL[1], 'seconds between refreshes')
        self.zero = metrics.check_zero(params.get('errnos') or {})

    def previous_dir(self):
        config = self.read(self.config_path)
        try:
            data = json.loads(config) if config else {}
            return names.host_path(data.get('dir'), 'dir') if data.get('mark') == names.MARK else None
        except (ValueError, AttributeError, names.InvalidValue):
            return None

    def textfile(self, directory):
        return self.host(metrics.textfile(directory, self.name))

    def remove_textfile(self, directory):
        """Remove our file from ``directory`` (only ours: first line our mark)."""
        path = self.textfile(directory)
        if metrics.is_ours(path, self.name):
            self.changed = True
            if not self.module.check_mode:
                os.unlink(path)

    def present(self):
        self.refuse_foreign_unit()
        path = self.textfile(self.dir)
        if os.path.lexists(path) and not metrics.is_ours(path, self.name):
            self.module.fail_json(msg='%s exists and is not ours (its first line is not our mark): refusing to replace '
                                      'it (remove it, or choose another kprobes_fleet_metrics_dir)' % metrics.textfile(self.dir, self.name))
        host_dir = self.host(self.dir)
        if os.path.islink(host_dir) or (os.path.lexists(host_dir) and not os.path.isdir(host_dir)):
            self.module.fail_json(msg='%s (kprobes_fleet_metrics_dir) is not a directory (a link or a file): not '
                                      'written into' % self.dir)
        old = self.previous_dir()
        try:
            if old and old != self.dir:
                self.remove_textfile(old)
            if not os.path.isdir(host_dir):
                self.changed = True
                if not self.module.check_mode:
                    os.makedirs(host_dir, 0o755)
            changed = self.write_lib()
            changed |= self.write(self.config_path, json.dumps({'mark': names.MARK, 'dir': self.dir, 'errnos': self.zero},
                                                               sort_keys=True) + '\n')
            units = self.write(self.unit, service_text(self.name, sys.executable, self.lib_dir, self.state_dir, self.dir))
            units |= self.write(self.timer, timer_text(self.name, self.interval))
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot install the metrics of %s: %s' % (self.name, to_native(e)))
        self.changed |= changed or units
        timer = os.path.basename(self.timer)
        if self.module.check_mode:
            return self.result()
        if units:
            self.systemctl('daemon-reload')
        if self.systemctl('is-enabled', timer, check=False)[1] != 'enabled':
            self.changed = True
            self.systemctl('enable', timer)
        if units or self.systemctl('is-active', timer, check=False)[1] != 'active':
            self.changed = True
            self.systemctl('restart', timer)
        if self.changed or not os.path.exists(path):
            self.changed = True
            self.systemctl('start', os.path.basename(self.unit))  # oneshot: the file is there when this returns
        return self.result()

    def absent(self):
        self.refuse_foreign_unit()
        old = self.previous_dir()
        timer = os.path.basename(self.timer)
        try:
            if self.read(self.timer) is not None:
                self.changed = True
                if not self.module.check_mode:
                    self.systemctl('disable', '--now', timer, check=False)
                    os.unlink(self.host(self.timer))
            self.remove_unit()
            if self.changed and not self.module.check_mode:
                self.systemctl('daemon-reload')
                self.systemctl('reset-failed', timer, os.path.basename(self.unit), check=False)
            for directory in sorted(set(d for d in (old, self.dir) if d)):
                self.remove_textfile(directory)
            if os.path.lexists(self.host(self.config_path)):
                self.changed = True
                if not self.module.check_mode:
                    os.unlink(self.host(self.config_path))
            self.remove_lib_unless(persist.unit_name(self.name), persist.events_unit_name(self.name))
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot remove the metrics of %s: %s' % (self.name, to_native(e)))
        return self.result()

    def result(self):
        return {'changed': self.changed, 'textfile': metrics.textfile(self.dir, self.name), 'units': [self.unit, self.timer]}


def build_module():
    return AnsibleModule(**host_state.module_kwargs(dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        dir=dict(type='str', default=metrics.DEFAULT_DIR),
        interval=dict(type='int', default=15),
        errnos=dict(type='dict', default={}),
    ), units=True))


def main():
    module = build_module()
    module.exit_json(**ProbeMetrics(module).apply())


if __name__ == '__main__':
    main()
