# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracefs backend: our events and instance on a host, and the state file that records them.

What we create on a host, and only that is ever removed (recorded in our state file
``<state_dir>/<name>.tracefs.json`` before it is created):
  - one return-probe event per probe (tracefs_commands.definition), in group ``<name>``;
  - the ftrace instance ``instances/<name>`` (clock ``mono``, a bounded buffer); in it, per probe,
    a hist trigger counting the matches by return value, and, for probes with ``log: true``, the
    event enabled with the report filter (the events collected, tracefs_buffer);
  - on kernels without hist triggers (CONFIG_HIST_TRIGGERS off: Debian 11's 5.10), instead of the
    hist trigger a *counting instance* ``instances/<name>.<probe>`` per probe: the event enabled
    there with the report filter into the smallest ring; the ring's per-CPU ``entries + overrun``
    is the exact number of matches even after it wrapped (verified on 5.10, tracefs_counters).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import json
import os
import uuid

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmsg, names, probe_spec
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_json, read_text
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_commands import (
    TracefsIO, enabled, error_log_reason, event_record, filter_text, parse_definition, parse_definitions,
    same_definition, trigger_in_place)
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import (
    TracefsError, as_host, availability, below, find_tracefs, oserror)

DEFAULT_STATE_DIR = host_state.state_dir(host_state.DEFAULT_HOST_DIR)
TRACE_CLOCK = 'mono'          # seconds since boot, like /dev/kmsg's timestamps
BUFFER_SIZE_KB = 1024         # per CPU, our instance only
COUNTER_BUFFER_SIZE_KB = 4    # per CPU, counting instances (the kernel keeps at least 2 pages)
STATE_VERSION = 1


# -- the state file ------------------------------------------------------------------------------
def load_state(path):
    """Our state file, or None when missing or not ours/not usable (then nothing is ours)."""
    data = read_json(path)
    if not data or data.get('mark') != names.MARK or data.get('version') != STATE_VERSION:
        return None
    events = data.get('events')
    if not isinstance(data.get('boot_id'), str) or not isinstance(events, list):
        return None
    for ev in events:
        if not isinstance(ev, dict) or not all(isinstance(ev.get(k), str) for k in
                                               ('name', 'function', 'definition')):
            return None
        if not isinstance(ev.get('trigger'), str) and not _counter_ok(ev.get('counter'), data):
            return None
    return data


def _counter_ok(counter, state):
    """A counting instance name on record must be one of ours (``<instance>.<probe>``)."""
    return isinstance(counter, str) and counter.startswith('%s.' % state.get('instance'))


def save_json(path, data):
    host_state.atomic_write(path, (json.dumps(data, sort_keys=True, indent=1) + '\n').encode('utf-8'), 0o600)


# -- the probe set ------------------------------------------------------------------------------
class TraceProbes(object):
    """status / present / absent of one named probe set on this host (its counters and events:
    tracefs_counters, tracefs_buffer).

    ``name`` is the group of our events and the name of our instance; ``state_dir`` the host path
    of our state directory (resolved below ``root``). Errors raise TracefsError; names and
    paths that are not ours raise names.InvalidValue."""

    def __init__(self, name, root='/', state_dir=DEFAULT_STATE_DIR, io=None):
        self.name = names.module_name(name, 'name')
        self.root = root
        state_dir = names.host_path(state_dir, 'state_dir')
        self.state_dir = below(root, state_dir)
        self.state_file = host_state.state_file(self.state_dir, self.name, 'tracefs')
        self.io = io or TracefsIO()
        self.group = self.name
        self._tracefs = None

    # -- host facts ----------------------------------------------------------------------
    @property
    def tracefs(self):
        if self._tracefs is None:
            self._tracefs = find_tracefs(self.root)
        return self._tracefs

    def tr(self, *parts):
        return os.path.join(self.tracefs, *parts)

    def instance_dir(self, instance=None):
        """Our instance (``instances/<name>``), or a counting instance of ours."""
        return self.tr('instances', instance or self.name)

    def event_dir(self, event, instance=None):
        return os.path.join(self.instance_dir(instance), 'events', self.group, event)

    def boot_id(self):
        try:
            return kmsg.read_boot_id(below(self.root, kmsg.BOOT_ID_PATH))
        except (IOError, OSError) as e:
            raise TracefsError('cannot read %s: %s' % (kmsg.BOOT_ID_PATH, oserror(e)))

    def state(self):
        return load_state(self.state_file)

    def current_state(self, boot_id=None):
        """Our state file when it is of this boot (dynamic events do not survive a reboot)."""
        state = self.state()
        if state is None or state['boot_id'] != (boot_id or self.boot_id()):
            return None
        return state

    def definitions(self):
        return parse_definitions(read_text(self.tr('kprobe_events')))

    @staticmethod
    def _registered(defs, ev):
        want = parse_definition(ev['definition'])
        return any(same_definition(d, want) for d in defs)

    @staticmethod
    def instances_of(records):
        """The counting instances ``records`` use (none with hist triggers)."""
        return [r['counter'] for r in records if r.get('counter')]

    # -- status ----------------------------------------------------------------------------
    def event_problems(self, rec):
        """What is not in place for one registered event of ours (instances must exist)."""
        problems = []
        d = self.event_dir(rec['name'])
        if rec.get('trigger') and not trigger_in_place(read_text(os.path.join(d, 'trigger')), rec['trigger']):
            problems.append('hist trigger of %s is missing' % rec['name'])
        wanted = [(None, d)] if rec.get('log') else []
        if rec.get('counter'):
            wanted.append((rec['counter'], self.event_dir(rec['name'], rec['counter'])))
        for instance, evdir in wanted:
            where = ' in %s' % instance if instance else ''
            if not os.path.isdir(evdir):
                problems.append('instance %s is missing' % instance)
                continue
            if filter_text(read_text(os.path.join(evdir, 'filter'))) != rec.get('filter'):
                problems.append('filter of %s%s differs' % (rec['name'], where))
            if not enabled(read_text(os.path.join(evdir, 'enable'))):
                problems.append('%s is not enabled%s' % (rec['name'], where))
        return problems

    def status(self):
        """What of ours is on this host: {present, complete, stale, boot_id, spec_hash, reason,
        group, instance, path, probes: {name: {function, registered}}, problems: [...]}.

        ``present``: our state file is of this boot and our instance exists. ``complete``:
        every recorded event, trigger, filter and enable is in place."""
        boot_id = self.boot_id()
        state = self.state()
        result = {'present': False, 'complete': False, 'stale': False, 'boot_id': boot_id,
                  'spec_hash': None, 'reason': None, 'group': self.group, 'instance': self.name,
                  'path': self.tracefs, 'probes': {}, 'problems': []}
        if state is None:
            return result
        if state['boot_id'] != boot_id:
            result['stale'] = True
            result['problems'].append('our state file is of another boot: dynamic events do not '
                                      'survive a reboot')
            return result
        result['spec_hash'] = state.get('spec_hash')
        result['reason'] = state.get('reason')
        if self.tracefs is None:
            result['problems'].append('tracefs with kprobe_events is not mounted')
            return result
        defs = self.definitions()
        problems = result['problems']
        instance = os.path.isdir(self.instance_dir())
        if not instance:
            problems.append('instance %s is missing' % self.name)
        if state.get('pending'):
            problems.append('a previous run stopped while creating the probes')
        for rec in state['events']:
            registered = self._registered(defs, rec)
            result['probes'][rec['name']] = {'function': rec['function'], 'registered': 1 if registered else 0}
            if not registered:
                problems.append('event %s/%s is not defined' % (self.group, rec['name']))
            elif instance:
                problems.extend(self.event_problems(rec))
        result['present'] = instance
        result['complete'] = instance and not problems
        return result

    # -- ownership -------------------------------------------------------------------------
    def foreign(self, state, records):
        """Why creating ``records`` would touch something that is not ours, or None.

        Ours is only what ``state`` (this boot's record, or None) lists."""
        ours_events = set(ev['name'] for ev in state['events']) if state else set()
        ours_instances = set([self.name] + self.instances_of(state['events'])) if state else set()
        why = []
        taken = [i for i in [self.name] + self.instances_of(records)
                 if i not in ours_instances and os.path.lexists(self.instance_dir(i))]
        if taken:
            why.append('the tracing instance(s) %s exist and are not ours (not in %s)'
                       % (', '.join('instances/%s' % i for i in taken), as_host(self.root, self.state_file)))
        others = set()
        group_dir = self.tr('events', self.group)
        try:
            for entry in os.listdir(group_dir):
                if os.path.isdir(os.path.join(group_dir, entry)) and entry not in ours_events:
                    others.add(entry)
        except OSError:
            pass
        for d in self.definitions():
            if d['group'] == self.group and d['event'] not in ours_events:
                others.add(d['event'])
        if others:
            why.append('the trace event group %s has events that are not ours (%s)'
                       % (self.group, ', '.join(sorted(others))))
        return '; '.join(why) or None

    # -- present -----------------------------------------------------------------------------
    def present(self, resolved_probes, spec_hash, reason=None, check_mode=False):
        """Make our events and instance match ``resolved_probes``; idempotent.

        Returns {changed, spec_hash, previous_spec_hash, probes: {name: {function, registered}},
        msg}. A definition the kernel refuses removes whatever this run created (the previous
        probe set, if any, is recreated) and raises TracefsError with the kernel's words."""
        spec_hash = names.hex16(spec_hash, 'spec_hash')
        probes = probe_spec.check_resolved(resolved_probes)
        if not probes:
            raise names.InvalidValue('probes: must not be empty with state=present')
        needs = probe_spec.module_only(probes)
        if needs:
            raise names.InvalidValue('probes: %s, which the tracefs backend does not do; use the module backend '
                                     '(kprobes_fleet_backend=module or auto)'
                                     % '; '.join('%s %s' % (name, why) for name, why in needs))
        if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
            raise names.InvalidValue('reason: must be a string of at most 1000 characters')
        avail = availability(self.root)
        if not avail['usable']:
            raise TracefsError('the tracefs backend cannot run on this host: %s' % avail['reason'])
        boot_id = self.boot_id()
        state = self.current_state(boot_id)
        records = [event_record(self.group, p, avail['hist']) for p in probes]
        previous = state.get('spec_hash') if state else None
        result = {'changed': False, 'spec_hash': spec_hash, 'previous_spec_hash': previous}

        status = self.status()
        if state is not None and status['complete'] and previous == spec_hash \
                and state['events'] == records:
            result['probes'] = status['probes']
            if state.get('reason') != reason:
                result['changed'] = True
                result['msg'] = 'probes already in place with spec_hash %s; reason updated' % spec_hash
                if not check_mode:
                    state['reason'] = reason
                    save_json(self.state_file, state)
            else:
                result['msg'] = 'probes already in place with spec_hash %s' % spec_hash
            return result

        why = self.foreign(state, records)
        if why:
            raise TracefsError('%s; refusing to create or remove anything under that name '
                               '(choose another kprobes_fleet_module_name)' % why)
        result['changed'] = True
        verb = 'recreate' if state is not None else 'create'
        what = '%d return probe event(s) in group %s and instance %s%s' % (
            len(records), self.group, self.name,
            '' if avail['hist'] else ' (no hist triggers: one counting instance per probe)')
        if check_mode:
            result['probes'] = dict((r['name'], {'function': r['function'], 'registered': 1}) for r in records)
            result['msg'] = 'would %s %s' % (verb, what)
            return result

        host_state.ensure_dir(self.state_dir)
        if state is not None:
            self.remove(state)
        try:
            self.create(records, boot_id, spec_hash, reason)
        except TracefsError as e:
            msg = str(e)
            if state is not None:
                try:
                    self.create(state['events'], boot_id, previous, state.get('reason'))
                    msg += '; the previous probes (spec_hash %s) were recreated' % previous
                except TracefsError as again:
                    msg += '; the previous probes (spec_hash %s) were removed and could NOT be ' \
                           'recreated: %s' % (previous, again)
            raise TracefsError(msg)
        result['probes'] = self.status()['probes']
        result['msg'] = '%sd %s' % (verb, what)
        return result

    def kernel_refusal(self, command, e):
        reason = error_log_reason(read_text(self.tr('error_log')), command)
        return 'the kernel refused "%s": %s%s' % (command, oserror(e),
                                                  ' (error_log: %s)' % reason if reason else '')

    def _make_instance(self, instance, settings):
        """mkdir an instance and write its settings; returns True once the directory exists."""
        path = self.instance_dir(instance)
        try:
            self.io.mkdir(path)
        except (IOError, OSError) as e:
            raise TracefsError('mkdir %s failed: %s' % (as_host(self.root, path), oserror(e)))
        try:
            for rel, value in settings:
                if rel == 'options/pause-on-trace' and not os.path.isfile(os.path.join(path, rel)):
                    continue
                self.io.replace(os.path.join(path, rel), value)
        except (IOError, OSError) as e:
            raise TracefsError('setting up instance %s failed: %s' % (instance, oserror(e)))

    def _attach(self, rec, instance, trigger, log):
        """The hist trigger, and/or filter + enable, of one event in one of our instances."""
        d = self.event_dir(rec['name'], instance)
        if not os.path.isdir(d):
            raise TracefsError('event %s/%s did not appear in instance %s'
                               % (self.group, rec['name'], instance or self.name))
        steps = []
        if trigger:
            steps.append(('trigger', rec['trigger'], self.io.append))
        if log:
            if rec['filter']:
                steps.append(('filter', rec['filter'], self.io.replace))
            steps.append(('enable', '1', self.io.replace))
        for fname, text, write in steps:
            try:
                write(os.path.join(d, fname), text)
            except (IOError, OSError) as e:
                raise TracefsError('writing "%s" to %s of %s: %s' % (
                    text, fname, rec['name'], self.kernel_refusal(text, e)))

    def create(self, records, boot_id, spec_hash, reason):
        """Define the events, make the instance(s), attach triggers/filters, enable: all or nothing.

        The state file is written first (marked pending) so what we create is always on record."""
        state = {'version': STATE_VERSION, 'mark': names.MARK, 'boot_id': boot_id,
                 'spec_hash': spec_hash, 'reason': reason, 'group': self.group,
                 'instance': self.name, 'tracefs': as_host(self.root, self.tracefs),
                 'created': uuid.uuid4().hex, 'events': records, 'pending': True}
        save_json(self.state_file, state)
        defined = []
        made = []
        try:
            for rec in records:
                try:
                    self.io.append(self.tr('kprobe_events'), rec['definition'])
                except (IOError, OSError) as e:
                    raise TracefsError(self.kernel_refusal(rec['definition'], e))
                defined.append(rec)
            self._make_instance(self.name, (('trace_clock', TRACE_CLOCK),
                                            ('buffer_size_kb', str(BUFFER_SIZE_KB)),
                                            ('options/pause-on-trace', '0')))
            made.append(self.name)
            for rec in records:
                self._attach(rec, None, rec.get('trigger'), rec['log'])
                if rec.get('counter'):
                    self._make_instance(rec['counter'], (('buffer_size_kb', str(COUNTER_BUFFER_SIZE_KB)),))
                    made.append(rec['counter'])
                    self._attach(rec, rec['counter'], None, True)
        except TracefsError:
            leftovers = self._rollback(defined, made)
            if leftovers:
                state['events'] = leftovers
                state['created'] = None
                save_json(self.state_file, state)
            else:
                self._unlink(self.state_file)
            raise
        state.pop('pending')
        save_json(self.state_file, state)
        return state

    def _rollback(self, defined, made):
        """Undo this run; returns the events that could not be removed (kept on record)."""
        try:
            self._teardown(defined, made)
        except (IOError, OSError):
            return list(defined)  # events enabled in an instance we could not remove
        leftovers = []
        for rec in reversed(defined):
            try:
                self.io.append(self.tr('kprobe_events'), '-:%s/%s' % (self.group, rec['name']))
            except (IOError, OSError):
                leftovers.append(rec)
        return list(reversed(leftovers))

    def _teardown(self, records, instances):
        """Detach triggers, filters and enables of our events, then rmdir our instances."""
        for instance in instances:
            path = self.instance_dir(instance)
            if not os.path.isdir(path):
                continue
            for rec in records:
                d = self.event_dir(rec['name'], instance if instance != self.name else None)
                if not os.path.isdir(d):
                    continue
                steps = [('enable', '0', self.io.replace)]
                if rec.get('trigger') and trigger_in_place(read_text(os.path.join(d, 'trigger')), rec['trigger']):
                    steps.append(('trigger', '!' + rec['trigger'], self.io.append))
                steps.append(('filter', '0', self.io.replace))
                for fname, text, write in steps:
                    try:
                        write(os.path.join(d, fname), text)
                    except (IOError, OSError):
                        pass  # rmdir of the instance removes them all the same
            self.io.rmdir(path)

    @staticmethod
    def _unlink(path):
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

    def remove(self, state):
        """Remove the instances and the events ``state`` records (this boot's), nothing else.

        Returns the list of what was removed. Raises TracefsError when something of ours could
        not be removed (the state file then keeps what is left)."""
        removed = []
        for instance in self.instances_of(state['events']) + [self.name]:
            if not os.path.isdir(self.instance_dir(instance)):
                continue
            try:
                self._teardown(state['events'], [instance])
            except (IOError, OSError) as e:
                raise TracefsError('cannot remove the tracing instance %s: %s (is a reader holding '
                                   'its trace_pipe open?)' % (instance, oserror(e)))
            removed.append('instance %s' % instance)
        defs = self.definitions()
        left = []
        errors = []
        for rec in state['events']:
            if not self._registered(defs, rec):
                continue
            command = '-:%s/%s' % (self.group, rec['name'])
            try:
                self.io.append(self.tr('kprobe_events'), command)
                removed.append('event %s/%s' % (self.group, rec['name']))
            except (IOError, OSError) as e:
                left.append(rec)
                errors.append('%s: %s' % (command, oserror(e)))
        if left:
            state = dict(state, events=left)
            save_json(self.state_file, state)
            raise TracefsError('cannot remove our event(s) %s (still enabled in another instance or '
                               'used by perf?): %s' % (', '.join(r['name'] for r in left), '; '.join(errors)))
        self._unlink(self.state_file)
        return removed

    # -- absent ------------------------------------------------------------------------------
    def absent(self, check_mode=False):
        """Remove what our state file records for this boot; a state of another boot is only
        forgotten (its events died with that boot). Returns {changed, removed, msg}."""
        state = self.state()
        result = {'changed': False, 'removed': []}
        if state is None:
            result['msg'] = 'no tracefs probes of %s on record' % self.name
            return result
        result['changed'] = True
        if state['boot_id'] != self.boot_id():
            result['msg'] = 'forgot the state of a previous boot (its events are gone)'
            if not check_mode:
                self._unlink(self.state_file)
            return result
        if self.tracefs is None:
            raise TracefsError('tracefs with kprobe_events is not mounted; cannot remove our events')
        if check_mode:
            defs = self.definitions()
            result['removed'] = \
                ['instance %s' % i for i in self.instances_of(state['events']) + [self.name]
                 if os.path.isdir(self.instance_dir(i))] + \
                ['event %s/%s' % (self.group, ev['name']) for ev in state['events'] if self._registered(defs, ev)]
            result['msg'] = 'would remove %s' % (', '.join(result['removed']) or 'our state file')
            return result
        result['removed'] = self.remove(state)
        result['msg'] = 'removed %s' % (', '.join(result['removed']) or 'our state file')
        return result
