#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: probe_facts
short_description: Collect what kprobes.fleet probes saw, as facts
description:
  - Asks the backend that runs the probes, with one fact schema for both (C(backend) says which).
  - C(tracefs) backend (M(kprobes.fleet.tracefs_probes)), when its record
    C(<host_dir>/state/<module>.tracefs.json) is of this boot and its tracing instance exists -
    C(hits) and C(nmissed) from C(kprobe_profile), C(matches) from the hist triggers (exact;
    on kernels without hist triggers from a counting instance per probe),
    events from the instance's C(trace) file after a cursor C(<host_dir>/state/<module>.tracefs-cursor)
    (timestamp and how many events at it were reported), so no event is reported twice;
    C(events_lost) counts events the ring buffer overwrote before they were read, from
    C(per_cpu/cpu*/stats). No rate limit there, so C(suppressed) is 0; C(kp_nmissed) is V(null)
    (C(kprobe_profile) only has the sum in C(nmissed)); C(seq) is a running number per boot.
  - C(module) backend otherwise (today's path), which reads the per-probe counters of a kprobes.fleet
    kernel module from C(/sys/kernel/<module>/probes/<probe>/) and the module's event lines from
    C(/dev/kmsg).
  - Module events are read after a saved cursor C({boot_id, next_seq}) kept in
    C(<host_dir>/state/<module>.kmsg-cursor), so every event is reported once. Records the kernel
    overwrote before they could be read are counted in C(events_lost) (a gap in the sequence
    numbers); events beyond O(max_events) are counted in C(events_dropped), the oldest first.
  - Counters are the source of truth for how many times a probe matched; events add who
    (pid, comm) and are rate limited by the module (see C(suppressed)).
  - Works when the module is not loaded (V(loaded=false), no probes); events still in the
    kernel ring buffer are reported.
  - Never reports a change. The only writes are the cursor file of the backend that is read (and,
    with probes active, the counters for C(delta)), only when O(advance_cursor=true), not in check
    mode, and only into our working directory - O(host_dir) carries the C(.kprobes-fleet) mark of
    M(kprobes.fleet.host_dir) (a root-owned regular file in a root-owned directory); C(<host_dir>/state)
    is then created 0700 when the cursor is first saved. On a host where nothing of ours was deployed,
    a collect creates and writes nothing (nothing that could block the first deploy) and still returns
    every fact (V(loaded=false), C(reason)); with no cursor to keep there, events of ours still in the
    kernel ring (left by a deployment since purged) are reported at every collection.
author:
  - kprobes.fleet developers (@kprobes-fleet)
extends_documentation_fragment: [kprobes.fleet.host_state, kprobes.fleet.names.module]
options:
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
  - Reading C(/dev/kmsg) needs root (or C(CAP_SYSLOG)) when C(kernel.dmesg_restrict=1); tracefs
    needs root.
  - The cursor is per boot; after a reboot collection starts at the oldest record in the ring.
seealso:
  - module: kprobes.fleet.probe_module
  - module: kprobes.fleet.tracefs_probes
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
      description: Counters and events of the kprobes.fleet probes, the same keys for both backends.
      returned: always
      type: dict
      contains:
        module:
          description: Module name (for the tracefs backend, its event group and instance).
          type: str
          returned: always
          sample: kprobes_fleet
        backend:
          description: Which backend runs our probes on this host, V(module) or V(tracefs);
            V(null) when nothing of ours is active.
          type: str
          returned: always
          sample: tracefs
        backend_reason:
          description: Why this host runs the tracefs backend (recorded by
            M(kprobes.fleet.tracefs_probes)); V(null) for the module backend or none.
          type: str
          returned: always
          sample: lockdown=integrity refuses unsigned modules
        loaded:
          description: Our probes are active - our module (it carries the kprobes.fleet marker)
            is loaded under O(module), or our tracefs probes are in place for this boot;
            V(false) when nothing or someone else's module of that name is loaded.
          type: bool
          returned: always
          sample: true
        reason:
          description: When C(loaded) is V(false), why - after a kernel upgrade it names both
            kernels (the probes are restored at boot only on the kernel they were made for), or the
            boot-time restore's error, or that nothing is deployed; V(null) when loaded.
          type: str
          returned: always
          sample: "kernel changed since the probes were deployed: they were made for 6.1.0-50-amd64 (...),
            the running kernel is 6.12.95+deb12-amd64 (...); nothing was loaded (...)"
        previous_boot_id:
          description: The boot id of the previous collection on this host (V(null) on the first);
            when it differs from C(boot_id), the host rebooted in between and every counter restarted
            from zero (C(delta.reset) says so).
          type: str
          returned: always
        spec_hash:
          description: The active probes' spec hash, V(null) if none.
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
              C(maxactive), C(registered), C(reg_err), C(suppressed), C(filtered) (returns that met the
              report condition but not the probe's C(filter)), C(exempted) (matches of the probe's C(log_exempt)
              processes, never written to the kernel log; 0 on tracefs) (integers, V(null) if unreadable) and
              C(function) (the attached symbol).
            - tracefs backend - C(kp_nmissed) is V(null) (C(nmissed) is the kernel's sum of the
              entry kprobe's and the return probe's misses), C(suppressed) is 0 (no rate limit),
              C(reg_err) is 0, or V(null) when the event is gone.
            - "C(errnos) - exact counts per errno name of the matches that returned an error
              (C({ENOENT: 7, EACCES: 2}); C(other) for values without a name), kept in the kernel
              whatever the log budget did. V(null) where they are not known - tracefs probes with
              C(report: any) (their table is keyed by event type), kernels without hist triggers
              (they count matches in a ring and cannot split them), a full hist table, a module
              built before this existed."
            - "C(latency) - for a probe with C(latency: true) or C(slower_than) (module backend), every call
              timed from entry to return since the module was loaded - C(count), C(sum_ns), C(buckets)
              (log2 buckets as C([le_ns, count]) pairs, C(le_ns) = 2^b - 1 the inclusive upper bound),
              C(p50_ns) and C(p99_ns) (the upper bound of the bucket the percentile falls in). V(null) for
              the other probes."
            - C(delta) - what changed since the previous collection on this host - C(hits),
              C(matches), C(nmissed), C(errnos) (per errno), C(seconds) since then, and C(reset) - V(null), or why the
              counters restarted from zero (a reboot, a reload with another spec, a new probe,
              the first collection); then the delta is counted from that zero. The previous
              counters are kept next to the cursor and saved only with O(advance_cursor=true).
            - Empty when no probes are active.
          type: dict
          returned: always
          sample:
            disk_full: {function: vfs_write, hits: 9123, matches: 3, nmissed: 0, kp_nmissed: 0,
                        maxactive: 64, registered: 1, reg_err: 0, suppressed: 0, errnos: {ENOSPC: 3},
                        delta: {hits: 412, matches: 1, nmissed: 0, errnos: {ENOSPC: 1}, seconds: 3600.2, reset: null}}
        events:
          description: This module's event lines (or our tracefs instance's events) read after
            the cursor, oldest first.
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
              description: Return value (signed); for C(errptr) probes the error, or 0 for a
                valid pointer (kernel addresses are never reported).
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
              description: Kernel log sequence number of the record (module backend); a running
                number, never repeated within a boot (tracefs backend).
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
            args:
              description:
                - The arguments the probe captures (its C(args)), by name; only events of such probes
                  have it (module backend, read from the root-only C(/proc/<module>.events); see
                  C(args_channel)). There, C(pid) is the process id and C(tid) the thread id.
                - C(int), C(long), C(ulong) as numbers; C(string), C(ustring), C(filename) as text in
                  which every byte that is not printable UTF-8, and every backslash, is written
                  C(\\xHH) (unambiguous, byte for byte); C(file) as C({path, fs, dev, mount, device})
                  (C(path) with its mount point in front, C(dev) as C(major:minor)).
                - A value cut at 255 bytes is named in C(args_truncated); one that could not be read
                  (a bad pointer) is V(null) and named with its errno in C(args_errors).
              type: dict
              returned: when the probe captures arguments
            tid:
              description: Thread id; C(pid) is the process (thread group) id. tracefs shows the thread id only, in
                both (and a kernel-log line of a module built before tid existed too).
              type: int
              returned: always
            cgroup:
              description: The process's cgroup v2 path (C(/system.slice/nginx.service)), at most 127 bytes - the
                deepest whole components after C(...) when cut; text as in C(args). V(null) on tracefs.
              type: str
              returned: always
            unit:
              description: The systemd unit of C(cgroup) - its deepest component ending in C(.service), C(.scope),
                C(.socket), C(.mount) or C(.swap), else C(.slice); V(null) for C(/) and on tracefs.
              type: str
              returned: always
            lat_ns:
              description: How long the call took, entry to return (probes with C(latency) or C(slower_than)).
              type: int
              returned: when the probe times its calls
            uid:
              description: User id of the thread, as seen from the initial user namespace; V(null) on tracefs.
              type: int
              returned: always
          sample:
            - {probe: disk_full, function: vfs_write, ret: -28, errno: ENOSPC, pid: 812,
               comm: dd, seq: 4411, ts_usec: 91234567, ts: 91.234567}
            - {probe: rmdir_failures, function: do_rmdir, ret: -2, errno: ENOENT, pid: 901, tid: 901,
               uid: 1000, comm: rmdir, args: {path: /tmp/gone}, seq: 17, ts_usec: 93000001, ts: 93.000001}
        events_lost:
          description: Kernel log records overwritten before they could be read (seq gaps
            since the cursor; they may or may not have been events), plus the records of the
            ring of events with arguments overwritten before they were read; for the tracefs backend,
            events the instance's ring buffer overwrote or dropped before they were read.
          type: int
          returned: always
          sample: 0
        events_dropped:
          description: Events read but not returned because of O(max_events) (the oldest).
          type: int
          returned: always
          sample: 0
        args_channel:
          description: Where events with captured arguments are read (C(/proc/<module>.events), root
            only, never the kernel log), or V(null) when no probe captures arguments.
          type: str
          returned: always
          sample: /proc/kprobes_fleet.events
        args_cursor:
          description: The cursor in that ring (C(boot_id) is the boot id and the ring's id), or V(null).
          type: dict
          returned: always
        forwarder:
          description:
            - The event forwarder's status (C(kprobes_fleet_events), M(kprobes.fleet.event_forwarder)) as it
              last wrote it, V(null) when it is not installed - C(running) (its process is alive),
              C(received), C(sent), C(dropped) (given up - C(dropped_why) says why - queue full, refused by
              the endpoint, still queued when it stopped), C(queued), C(requests), C(failures), C(lost)
              (kernel log records or trace events overwritten before it read them), C(last_error),
              C(last_error_at), C(last_sent_at) (epoch seconds), C(url), C(boot_id), C(started), C(updated).
            - Counters run from the forwarder's first start in this boot; C(received) = C(sent) + C(dropped)
              + C(queued).
          type: dict
          returned: always
          sample: {running: true, received: 12, sent: 12, dropped: 0, queued: 0, requests: 3, failures: 0,
                   lost: 0, last_error: null, url: "http://127.0.0.1:5000/kprobes-fleet"}
        cursor:
          description: Where the next run starts (saved when O(advance_cursor=true), not in
            check mode and our working directory exists); C(boot_id) and C(next_seq) with both backends, plus C(ts_usec) and
            C(at_ts) (last reported timestamp, events at it already reported) with tracefs.
          type: dict
          returned: always
          sample: {boot_id: 84622e10-2383-4f54-ba8b-50898d63d5b3, next_seq: 4412}
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.kprobes.fleet.plugins.module_utils import deltas, event_ring, events, host_state, kmsg, names, persist
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import ModuleSysfs, state_dir_problem
from ansible_collections.kprobes.fleet.plugins.module_utils import tracefs_buffer
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_probes import TraceProbes
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import TracefsError


class ProbeFacts(object):
    """Counters and events from the active backend; paths below ``root`` for tests.

    tracefs when our record of this boot and our instance exist, else the module: counters
    from sysfs plus events from /dev/kmsg."""

    def __init__(self, module, root='/', release=None):
        self.module = module
        self.root = root
        self.release = release or os.uname().release
        try:
            self.name = names.module_name(module.params['module'], 'module')
            state_dir = host_state.from_params(module.params).state
        except names.InvalidValue as e:
            module.fail_json(msg=str(e))
        self.max_events = module.params['max_events']
        self.advance = module.params['advance_cursor']
        self.state_dir = self.path(state_dir.lstrip('/'))
        # Why nothing may be written (the directory is not ours: nothing of ours was deployed), or None.
        self.not_writable = state_dir_problem(self.state_dir)
        self.write = self.advance and not module.check_mode and self.not_writable is None
        self.cursor_path = host_state.state_file(self.state_dir, self.name, 'kmsg-cursor')
        self.sysfs = ModuleSysfs(self.name, root)
        self.tracefs = TraceProbes(self.name, root=root, state_dir=state_dir)

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
        if self.write and new_cursor != cursor:
            try:
                kmsg.save_cursor(self.cursor_path, new_cursor)
            except (IOError, OSError) as e:
                self.module.fail_json(msg='cannot save cursor %s: %s' % (self.cursor_path, to_native(e)))
        return boot_id, events, lost, dropped, new_cursor

    def gather_tracefs(self):
        """The tracefs backend's facts, or None when it is not active on this boot."""
        try:
            if not self.tracefs.status()['present']:
                return None
            got = tracefs_buffer.collect(self.tracefs, self.max_events, self.write, self.module.check_mode)
        except (TracefsError, names.InvalidValue) as e:
            self.module.fail_json(msg=str(e))
        return {
            'module': self.name,
            'backend': 'tracefs',
            'backend_reason': got['reason'],
            'loaded': True,
            'spec_hash': got['spec_hash'],
            'kernel': self.release,
            'boot_id': got['boot_id'],
            'probes': got['probes'],
            'events': got['events'],
            'events_lost': got['events_lost'],
            'events_dropped': got['events_dropped'],
            'cursor': got['cursor'],
            'args_channel': None,
            'args_cursor': None,
        }

    def not_loaded_reason(self, boot_id):
        """Why nothing of ours runs here: the kernel changed since the deploy, the boot-time
        restore failed, or nothing was deployed."""
        manifest = persist.load_manifest(self.state_dir, self.name)
        if manifest is None:
            return 'nothing of ours is deployed under %s on this host' % self.name
        changed = persist.kernel_change(manifest)
        if changed:
            return changed
        status = persist.last_status(self.state_dir, self.name)
        if status and status.get('boot_id') == boot_id and not status.get('loaded'):
            return 'the boot-time restore did not load the probes: %s' % status.get('reason')
        return ('the probes recorded for this kernel (%s backend, spec_hash %s) are not loaded: they '
                'were removed by hand, or the boot-time restore is off (kprobes_fleet_persist) or has '
                'not run yet; the next deploy puts them back' % (manifest['backend'], manifest['spec_hash']))

    def add_deltas(self, facts):
        """Per probe ``delta`` since the previous collection; the snapshot is saved with the cursor."""
        prev = deltas.load(self.state_dir, self.name)
        snap = deltas.snapshot(facts['boot_id'], facts['backend'], facts['spec_hash'], time.time(), facts['probes'])
        # events lost on this boot, summed over collections (kprobes_fleet_events_lost_total{reader="collect"})
        before = prev.get('events_lost') if prev and prev.get('boot_id') == facts['boot_id'] else 0
        snap['events_lost'] = (before if isinstance(before, int) else 0) + facts['events_lost']
        for probe, delta in deltas.compute(prev, snap).items():
            facts['probes'][probe]['delta'] = delta
        facts['previous_boot_id'] = prev.get('boot_id') if prev else None
        if self.write and facts['loaded']:
            try:
                deltas.save(self.state_dir, self.name, snap)
            except (IOError, OSError) as e:
                self.module.fail_json(msg='cannot save %s: %s' % (
                    host_state.state_file(self.state_dir, self.name, 'last-collect'), to_native(e)))
        return facts

    def gather(self):
        facts = self.gather_backend()
        if facts['loaded'] and self.advance and not self.module.check_mode and self.not_writable:
            self.module.warn('our probes are active, but the cursor was not saved (%s): these events '
                             'will be reported again; collect with the kprobes_fleet_host_dir the '
                             'probes were deployed with' % self.not_writable)
        facts['forwarder'] = events.read_status(self.state_dir, self.name)
        return facts

    def gather_backend(self):
        if self.max_events < 0:
            self.module.fail_json(msg='max_events must be >= 0, got %d' % self.max_events)
        facts = self.gather_tracefs()
        if facts is not None:
            facts['reason'] = None
            return self.add_deltas(facts)
        loaded = self.sysfs.ours()
        boot_id, events, lost, dropped, cursor = self.events()
        ring, ring_lost, ring_cursor = self.ring_events(boot_id) if loaded else (None, 0, None)
        if ring:
            events = events + ring
            dropped += max(0, len(events) - self.max_events)
            events = events[-self.max_events:] if self.max_events else []
        return self.add_deltas({
            'module': self.name,
            'backend': 'module' if loaded else None,
            'backend_reason': None,
            'loaded': loaded,
            'reason': None if loaded else self.not_loaded_reason(boot_id),
            'spec_hash': self.sysfs.spec_hash() if loaded else None,
            'kernel': self.release,
            'boot_id': boot_id,
            'probes': self.sysfs.probes(errnos=True) if loaded else {},
            'events': events,
            'events_lost': lost + ring_lost,
            'events_dropped': dropped,
            'cursor': cursor,
            'args_channel': event_ring.ring_path(self.name) if ring is not None else None,
            'args_cursor': ring_cursor,
        })

    def ring_events(self, boot_id):
        """Events with captured arguments from the module's root-only ring (event_ring), the number
        lost, and the ring's cursor; (None, 0, None) when the loaded module has no ring."""
        path = host_state.state_file(self.state_dir, self.name, 'ring-cursor')
        cursor = kmsg.load_cursor(path)
        try:
            got, lost, new = event_ring.collect(self.name, cursor, boot_id, root=self.root)
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot read %s: %s (root only; use become)'
                                      % (event_ring.ring_path(self.name), to_native(e)))
        if got is None:
            return None, 0, None
        if self.write and new != cursor:
            try:
                kmsg.save_cursor(path, new)
            except (IOError, OSError) as e:
                self.module.fail_json(msg='cannot save cursor %s: %s' % (path, to_native(e)))
        return got, lost, new


def build_module():
    return AnsibleModule(**host_state.module_kwargs(dict(
        module=dict(type='str', default='kprobes_fleet'),
        max_events=dict(type='int', default=1000),
        advance_cursor=dict(type='bool', default=True),
    )))


def main():
    module = build_module()
    facts = ProbeFacts(module).gather()
    module.exit_json(changed=False, ansible_facts={'kprobes_fleet': facts})


if __name__ == '__main__':
    main()
