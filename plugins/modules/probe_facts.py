#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: probe_facts
short_description: Collect what a kprobes.fleet module saw, as facts
description:
  - Reads the per-probe counters of a kprobes.fleet kernel module from
    C(/sys/kernel/<module>/probes/<probe>/) and the module's event lines from C(/dev/kmsg).
  - Events are read after a saved cursor C({boot_id, next_seq}) kept in
    C(<state_dir>/<module>.kmsg-cursor), so every event is reported once. Records the kernel
    overwrote before they could be read are counted in C(events_lost) (a gap in the sequence
    numbers); events beyond O(max_events) are counted in C(events_dropped), the oldest first.
  - Counters are the source of truth for how many times a probe matched; events add who
    (pid, comm) and are rate limited by the module (see C(suppressed)).
  - Works when the module is not loaded (V(loaded=false), no probes); events still in the
    kernel ring buffer are reported.
  - Never reports a change. The only write is the cursor file, and only when
    O(advance_cursor=true) and not in check mode.
author:
  - kprobes.fleet developers (@kprobes-fleet)
options:
  module:
    description:
      - Name of the kprobes.fleet kernel module (C(^[a-z][a-z0-9_]{0,55}$)).
    type: str
    default: kprobes_fleet
  state_dir:
    description:
      - Directory holding the collector cursor (created 0700 when the cursor is first saved).
        An absolute, normalised path of its own (not a shared system directory, not below C(/tmp)).
    type: str
    default: /var/lib/kprobes-fleet/state
  max_events:
    description:
      - At most this many events are returned (the newest); the others are counted in
        C(events_dropped).
    type: int
    default: 1000
  advance_cursor:
    description:
      - Save the cursor after reading, so the next run reports only newer events.
      - Set to V(false) to look at events without consuming them.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: In check mode the cursor is never written.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
  facts:
    support: full
    description: Returns C(ansible_facts.kprobes_fleet).
notes:
  - Reading C(/dev/kmsg) needs root (or C(CAP_SYSLOG)) when C(kernel.dmesg_restrict=1).
  - The cursor is per boot; after a reboot collection starts at the oldest record in the ring.
seealso:
  - module: kprobes.fleet.probe_module
  - module: kprobes.fleet.kernel_facts
'''

EXAMPLES = r'''
- name: Collect counters and new events
  kprobes.fleet.probe_facts:

- name: Peek at events without moving the cursor
  kprobes.fleet.probe_facts:
    advance_cursor: false
    max_events: 50

- name: Show disk-full events
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kprobes_fleet.events | selectattr('probe', 'eq', 'disk_full') }}"
'''

RETURN = r'''
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    kprobes_fleet:
      description: Counters and events of the kprobes.fleet module.
      returned: always
      type: dict
      contains:
        module:
          description: Module name.
          type: str
          returned: always
          sample: kprobes_fleet
        loaded:
          description: Our module (it carries the kprobes.fleet marker) is loaded under O(module);
            V(false) when nothing or someone else's module of that name is loaded.
          type: bool
          returned: always
          sample: true
        spec_hash:
          description: The loaded module's spec hash, V(null) if not loaded.
          type: str
          returned: always
          sample: 3f2a9c0d11e4b7a5
        kernel:
          description: Running kernel release.
          type: str
          returned: always
          sample: 6.1.0-56-amd64
        boot_id:
          description: C(/proc/sys/kernel/random/boot_id).
          type: str
          returned: always
          sample: 84622e10-2383-4f54-ba8b-50898d63d5b3
        probes:
          description:
            - Probe name to its counters C(hits), C(matches), C(nmissed), C(kp_nmissed),
              C(maxactive), C(registered), C(reg_err), C(suppressed) (integers, V(null) if
              unreadable) and C(function) (the attached symbol).
            - Empty when the module is not loaded.
          type: dict
          returned: always
          sample:
            disk_full: {function: vfs_write, hits: 9123, matches: 3, nmissed: 0, kp_nmissed: 0,
                        maxactive: 64, registered: 1, reg_err: 0, suppressed: 0}
        events:
          description: This module's event lines read after the cursor, oldest first.
          type: list
          elements: dict
          returned: always
          contains:
            probe:
              description: Probe name.
              type: str
              returned: always
            function:
              description: Probed symbol.
              type: str
              returned: always
            ret:
              description: Return value (signed).
              type: int
              returned: always
            errno:
              description: Errno name of a negative return value, else V(null).
              type: str
              returned: always
            pid:
              description: Process id.
              type: int
              returned: always
            comm:
              description: Process name (may contain spaces).
              type: str
              returned: always
            seq:
              description: Kernel log sequence number of the record.
              type: int
              returned: always
            ts_usec:
              description: Microseconds since boot (monotonic).
              type: int
              returned: always
            ts:
              description: Seconds since boot.
              type: float
              returned: always
          sample:
            - {probe: disk_full, function: vfs_write, ret: -28, errno: ENOSPC, pid: 812,
               comm: dd, seq: 4411, ts_usec: 91234567, ts: 91.234567}
        events_lost:
          description: Kernel log records overwritten before they could be read (seq gaps
            since the cursor). They may or may not have been events.
          type: int
          returned: always
          sample: 0
        events_dropped:
          description: Events read but not returned because of O(max_events) (the oldest).
          type: int
          returned: always
          sample: 0
        cursor:
          description: Where the next run starts (saved when O(advance_cursor=true) and not
            in check mode).
          type: dict
          returned: always
          sample: {boot_id: 84622e10-2383-4f54-ba8b-50898d63d5b3, next_seq: 4412}
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.kprobes.fleet.plugins.module_utils import kmsg, names
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import ModuleSysfs


class ProbeFacts(object):
    """Counters from sysfs plus events from /dev/kmsg; paths below ``root`` for tests."""

    def __init__(self, module, root='/', release=None):
        self.module = module
        self.root = root
        self.release = release or os.uname().release
        try:
            self.name = names.module_name(module.params['module'], 'module')
            state_dir = names.host_path(module.params['state_dir'], 'state_dir')
        except names.InvalidValue as e:
            module.fail_json(msg=str(e))
        self.max_events = module.params['max_events']
        self.advance = module.params['advance_cursor']
        self.cursor_path = names.cursor_path(self.path(state_dir.lstrip('/')), self.name)
        self.sysfs = ModuleSysfs(self.name, root)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def events(self):
        try:
            boot_id = kmsg.read_boot_id(self.path('proc', 'sys', 'kernel', 'random', 'boot_id'))
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot read boot_id: %s' % to_native(e))
        cursor = kmsg.load_cursor(self.cursor_path)
        kmsg_path = self.path('dev', 'kmsg')
        try:
            events, lost, new_cursor = kmsg.collect(kmsg.read_records(kmsg_path), self.name,
                                                    cursor, boot_id)
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot read /dev/kmsg: %s (needs root or CAP_SYSLOG; use become)'
                                      % to_native(e))
        dropped = max(0, len(events) - self.max_events)
        if dropped:
            events = events[dropped:]
        if self.advance and not self.module.check_mode and new_cursor != cursor:
            try:
                kmsg.save_cursor(self.cursor_path, new_cursor)
            except (IOError, OSError) as e:
                self.module.fail_json(msg='cannot save cursor %s: %s' % (self.cursor_path, to_native(e)))
        return boot_id, events, lost, dropped, new_cursor

    def gather(self):
        if self.max_events < 0:
            self.module.fail_json(msg='max_events must be >= 0, got %d' % self.max_events)
        loaded = self.sysfs.ours()
        boot_id, events, lost, dropped, cursor = self.events()
        return {
            'module': self.name,
            'loaded': loaded,
            'spec_hash': self.sysfs.spec_hash() if loaded else None,
            'kernel': self.release,
            'boot_id': boot_id,
            'probes': self.sysfs.probes() if loaded else {},
            'events': events,
            'events_lost': lost,
            'events_dropped': dropped,
            'cursor': cursor,
        }


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            module=dict(type='str', default='kprobes_fleet'),
            state_dir=dict(type='str', default='/var/lib/kprobes-fleet/state'),
            max_events=dict(type='int', default=1000),
            advance_cursor=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    facts = ProbeFacts(module).gather()
    module.exit_json(changed=False, ansible_facts={'kprobes_fleet': facts})


if __name__ == '__main__':
    main()
