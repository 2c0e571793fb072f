# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracefs backend: kernel return-probe events in a tracing instance of our own.

Standard library only: this file runs on the managed hosts (Python 3.9+). Every path is
resolved below ``root`` so the unit tests can fake a host. See docs/architecture.md, section
"tracefs backend", for the file formats seen on real kernels.

What we create on a host, and only that is ever removed (recorded in our state file
``<state_dir>/<name>.tracefs.json`` before it is created):
  - one return-probe event per probe, ``r<maxactive>:<name>/<probe> <function> ret=$retval:<s32|s64>``,
    appended to ``kprobe_events`` (O_APPEND, never O_TRUNC: a truncating open deletes every
    kprobe event on the host);
  - the ftrace instance ``instances/<name>`` (clock ``mono``, a bounded buffer); in it, per probe,
    a hist trigger counting the matches by return value, and, for probes with ``log: true``, the
    event enabled with the report filter (the events collected);
  - on kernels without hist triggers (CONFIG_HIST_TRIGGERS off: Debian 11's 5.10), instead of the
    hist trigger a *counting instance* ``instances/<name>.<probe>`` per probe: the event enabled
    there with the report filter into the smallest ring; the ring's per-CPU ``entries + overrun``
    is the exact number of matches even after it wrapped (verified on 5.10).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import errno
import json
import os
import re
import uuid

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmsg, names, probe_spec
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import parse_lockdown, read_json, read_text

TRACEFS_DIRS = ('sys/kernel/tracing', 'sys/kernel/debug/tracing')
DEFAULT_STATE_DIR = host_state.state_dir(host_state.DEFAULT_HOST_DIR)
TRACE_CLOCK = 'mono'          # seconds since boot, like /dev/kmsg's timestamps
BUFFER_SIZE_KB = 1024         # per CPU, our instance only
COUNTER_BUFFER_SIZE_KB = 4    # per CPU, counting instances (the kernel keeps at least 2 pages)
ERRPTR_MIN = -4095            # -MAX_ERRNO: IS_ERR_VALUE()
KRETPROBE_MAXACTIVE_MAX = 4096
STATE_VERSION = 1
# One read of kprobe_events + kprobe_profile is paired by position; retried when the list
# changed between the reads (someone else defining or removing events at that moment).
PROFILE_READS = 3


class TracefsError(Exception):
    """An operation failed; the message is one sentence for the user (with the kernel's words)."""


# -- where tracefs is, and whether it can serve us --------------------------------------------
def _below(root, rel):
    return os.path.join(root, rel.lstrip('/'))


def find_tracefs(root='/'):
    """The tracefs mount that has ``kprobe_events``: /sys/kernel/tracing, else the debugfs one.

    Returns the path below ``root`` (so ``root='/'`` gives ``/sys/kernel/tracing``), or None."""
    for rel in TRACEFS_DIRS:
        path = _below(root, rel)
        if os.path.isfile(os.path.join(path, 'kprobe_events')):
            return path
    return None


def hist_supported(tracefs):
    """CONFIG_HIST_TRIGGERS is on.

    The kernel creates a ``hist`` file in every event directory (next to ``trigger``, which every
    event has) only when it is built with CONFIG_HIST_TRIGGERS (kernel/trace/trace_events.c,
    event_create_dir()): the first event directory found decides. Without any event directory,
    the tracefs README is asked: its hist trigger section is compiled in under the same option."""
    events = os.path.join(tracefs, 'events')
    try:
        systems = sorted(os.listdir(events))
    except OSError:
        systems = []
    for system in systems:
        sysdir = os.path.join(events, system)
        try:
            entries = sorted(os.listdir(sysdir))
        except OSError:
            continue
        for entry in entries:
            evdir = os.path.join(sysdir, entry)
            if os.path.isfile(os.path.join(evdir, 'trigger')):
                return os.path.isfile(os.path.join(evdir, 'hist'))
    return 'hist:keys=' in (read_text(os.path.join(tracefs, 'README')) or '')


def availability(root='/', lockdown=None):
    """Whether the tracefs backend can run here: ``{usable, reason, path, hist}``.

    ``reason`` is one sentence when ``usable`` is false. ``lockdown`` is the active lockdown
    mode (kernel_facts reads it); None means: read /sys/kernel/security/lockdown below root.
    ``hist``: hist triggers count the matches; without them (Debian 11's 5.10 has none) every
    probe gets a counting instance instead, just as exact, one more ring write per match."""
    if lockdown is None:
        lockdown = parse_lockdown(read_text(_below(root, 'sys/kernel/security/lockdown')))
    path = find_tracefs(root)
    hist = bool(path) and hist_supported(path)
    result = {'usable': False, 'reason': None, 'path': path, 'hist': hist}
    if lockdown == 'confidentiality':
        result['reason'] = ('the kernel is locked down in confidentiality mode, which blocks both '
                            'tracefs and kprobes (only integrity mode allows them)')
        return result
    if path is None:
        result['reason'] = _why_no_kprobe_events(root)
        return result
    if not os.path.isdir(os.path.join(path, 'instances')):
        result['reason'] = ('%s has no instances directory, so the probes cannot get a tracing '
                            'buffer of their own' % _host(root, path))
        return result
    result['usable'] = True
    return result


def _host(root, path):
    """``path`` as the host sees it (without the test root)."""
    rel = os.path.relpath(path, root)
    return '/' + rel if rel != '.' else '/'


def _why_no_kprobe_events(root):
    for rel in TRACEFS_DIRS:
        path = _below(root, rel)
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
            return '/%s cannot be read by this user (tracefs needs root: use become)' % rel
    for rel in TRACEFS_DIRS:
        path = _below(root, rel)
        if os.path.isfile(os.path.join(path, 'trace')) or os.path.isdir(os.path.join(path, 'events')):
            return ('tracefs is mounted at /%s but has no kprobe_events: the kernel is built without '
                    'CONFIG_KPROBE_EVENTS' % rel)
    filesystems = read_text(_below(root, 'proc/filesystems'))
    if filesystems is not None and 'tracefs' not in filesystems.split():
        return 'the kernel has no tracefs (built without CONFIG_TRACING), so no kprobe events'
    return ('tracefs is not mounted (neither /sys/kernel/tracing nor /sys/kernel/debug/tracing has '
            'kprobe_events; mount it with: mount -t tracefs nodev /sys/kernel/tracing)')


# -- what we write: pure functions --------------------------------------------------------------
def fetch_type(returns):
    """``int`` functions leave the upper half of the register undefined: read 32 bits signed."""
    return 's32' if returns == 'int' else 's64'


def report_filter(probe):
    """The ftrace filter selecting a probe's matches, or None for ``report: any``.

    ``errptr`` returns are pointers: only -4095..-1 are errors (kernel pointers are negative as
    s64 on x86-64/arm64 and must never count, nor reach the facts)."""
    report = probe['report']
    if report == 'any':
        return None
    terms = []
    if report == 'errno':
        numbers = sorted(set(probe_spec.ERRNO[e] for e in probe['errnos']))
        terms = ['ret == -%d' % n for n in numbers]
        test = ' || '.join(terms)
    elif report == 'negative':
        test = 'ret < 0'
    else:
        test = 'ret != 0'
    if probe['returns'] != 'errptr':
        return test
    in_range = 'ret >= %d && ret < 0' % ERRPTR_MIN
    if report != 'errno':
        return in_range
    return '%s && %s' % (in_range, '(%s)' % test if len(terms) > 1 else test)


def definition(group, probe):
    """The kprobe_events line of a probe's return-probe event."""
    return 'r%d:%s/%s %s ret=$retval:%s' % (probe['maxactive'], group, probe['name'],
                                            probe['function'], fetch_type(probe['returns']))


def hist_trigger(probe):
    """The hist trigger counting a probe's matches exactly.

    Keyed by return value (so per errno), filtered by the report filter. ``report: any`` is
    keyed by the event type, one entry: keyed by value, every distinct size or kernel pointer
    would take a slot of the table (2048), and kernel pointers would sit in its hist file."""
    keys = 'common_type' if probe['report'] == 'any' else 'ret'
    trigger = 'hist:keys=%s:vals=hitcount' % keys
    test = report_filter(probe)
    return trigger + (' if ' + test if test else '')


def counter_instance(name, probe_name):
    """A counting instance's name: ``<name>.<probe>`` (a dot: never another probe set's name)."""
    return '%s.%s' % (name, probe_name)


def event_record(group, probe, hist=True):
    """What the state file keeps per event (enough to check, collect and remove it).

    ``trigger`` is the hist trigger counting the matches, or None when the kernel has no hist
    triggers; then ``counter`` names the counting instance of the probe."""
    return {
        'name': probe['name'],
        'function': probe['function'],
        'returns': probe['returns'],
        'report': probe['report'],
        'errnos': list(probe['errnos']),
        'maxactive': probe['maxactive'],
        'log': bool(probe['log']),
        'definition': definition(group, probe),
        'filter': report_filter(probe),
        'trigger': hist_trigger(probe) if hist else None,
        'counter': None if hist else counter_instance(group, probe['name']),
    }


# -- what we read: parsers ---------------------------------------------------------------------
_DEF_RE = re.compile(r'^([prf])(\d*):([^/\s]+)/(\S+)\s+(\S+)(?:\s+(.*?))?\s*$')


def parse_definition(line):
    """A kprobe_events line -> dict(kind, maxactive, group, event, target, args), or None."""
    m = _DEF_RE.match(line.strip())
    if not m:
        return None
    return {'kind': m.group(1), 'maxactive': int(m.group(2)) if m.group(2) else None,
            'group': m.group(3), 'event': m.group(4), 'target': m.group(5),
            'args': ' '.join((m.group(6) or '').split())}


def parse_definitions(text):
    return [d for d in (parse_definition(line) for line in (text or '').splitlines()) if d]


def same_definition(have, want):
    """Two parsed definitions describe the same event (whitespace and default maxactive aside)."""
    keys = ('kind', 'group', 'event', 'target', 'args')
    if any(have[k] != want[k] for k in keys):
        return False
    return have['maxactive'] is None or want['maxactive'] is None or have['maxactive'] == want['maxactive']


_PROFILE_RE = re.compile(r'^\s*(\S+)\s+(\d+)\s+(\d+)\s*$')


def parse_profile(text):
    """kprobe_profile -> [(name, hits, missed)] in file order (names may lack the group)."""
    rows = []
    for line in (text or '').splitlines():
        m = _PROFILE_RE.match(line)
        if m:
            rows.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


def profile_counts(events_text, profile_text):
    """{(group, event): (hits, missed)} from kprobe_events and kprobe_profile.

    kprobe_profile names events without their group (5.10 to 6.12), so two groups with an event
    of the same name cannot be told apart by name. Both files list the kprobe events in the
    same order (one list, dyn_event_list), so rows are paired by position when the names agree
    row by row; otherwise only names unique in both files are paired."""
    defs = [d for d in parse_definitions(events_text) if d['kind'] in ('p', 'r')]
    rows = parse_profile(profile_text)

    def row_is(row, d):
        return row[0] in (d['event'], '%s/%s' % (d['group'], d['event']))

    result = {}
    if len(defs) == len(rows) and all(row_is(r, d) for r, d in zip(rows, defs)):
        for r, d in zip(rows, defs):
            result[(d['group'], d['event'])] = (r[1], r[2])
        return result
    for d in defs:
        same_defs = [x for x in defs if x['event'] == d['event']]
        same_rows = [r for r in rows if row_is(r, d)]
        if len(same_defs) == 1 and len(same_rows) == 1:
            result[(d['group'], d['event'])] = (same_rows[0][1], same_rows[0][2])
    return result


_HIST_ENTRY_RE = re.compile(r'^\{\s*([A-Za-z_][A-Za-z0-9_.]*):\s*(-?[0-9]+)\s*\}\s+hitcount:\s*([0-9]+)')
_HIST_TOTAL_RE = re.compile(r'^\s*(Hits|Entries|Dropped):\s*([0-9]+)\s*$')


def signed64(value):
    """Hist keys are printed as unsigned 64-bit values (s32 sign-extended first): -28 -> 2**64-28."""
    value = int(value)
    if value >= 1 << 63:
        value -= 1 << 64
    return value


def parse_hist(text):
    """A ``hist`` file -> {counts: {key: hitcount}, hits, dropped, matches}.

    ``matches`` = sum of the hitcounts + ``Dropped`` (events the full table could not key are
    still matches). None when the file shows no histogram (no trigger, unreadable)."""
    counts = {}
    totals = {}
    for line in (text or '').splitlines():
        m = _HIST_ENTRY_RE.match(line)
        if m:
            key = signed64(m.group(2))
            counts[key] = counts.get(key, 0) + int(m.group(3))
            continue
        m = _HIST_TOTAL_RE.match(line)
        if m:
            totals[m.group(1)] = int(m.group(2))
    if not counts and not totals:
        return {'counts': {}, 'hits': None, 'dropped': None, 'matches': None}
    dropped = totals.get('Dropped', 0)
    return {'counts': counts, 'hits': totals.get('Hits'), 'dropped': dropped,
            'matches': sum(counts.values()) + dropped}


def trigger_in_place(text, trigger):
    """The ``trigger`` file lists ``trigger`` (the kernel adds ``:sort=...:size=...`` and a state)."""
    want_head, want_filter = trigger.partition(' if ')[::2]
    for line in (text or '').splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        line = re.sub(r'\s*\[[a-z]+\]$', '', line)
        head, test = line.partition(' if ')[::2]
        head = re.sub(r':(sort|size|clock|name)=[^:\s]*', '', head)
        if head == want_head and ' '.join(test.split()) == ' '.join(want_filter.split()):
            return True
    return False


def enabled(text):
    """An ``enable`` file reads ``0``, ``1``, or with a trigger attached ``0*``/``1*``."""
    return (text or '').strip()[:1] == '1'


def filter_text(text):
    """The filter an ``filter`` file shows, or None (it reads ``none``)."""
    text = ' '.join((text or '').split())
    return None if text in ('', 'none') else text


_TRACE_RE = re.compile(
    r'^\s*(?P<comm>.*)-(?P<pid>[0-9]+)\s+'          # comm (may hold spaces and dashes) - pid
    r'(?:\(\s*(?:[0-9]+|-+)\)\s+)?'                 # (tgid) with options/record-tgid
    r'\[(?P<cpu>[0-9]+)\]\s+'                       # [cpu]
    r'(?:(?P<flags>\S+)\s+)?'                       # irq flags (absent with irq-info off)
    r'(?P<sec>[0-9]+)\.(?P<frac>[0-9]+):\s+'        # timestamp, seconds
    r'(?P<event>[A-Za-z_][A-Za-z0-9_]*):\s+'        # event name (no group)
    r'\((?P<where>[^)]*)\)\s+ret=(?P<ret>-?[0-9]+)\s*$')


def parse_trace_line(line):
    """One line of an instance's ``trace`` file -> dict(comm, pid, cpu, ts_usec, event, ret), or None.

    ``comm-pid [cpu] flags ts: event: (caller <- function) ret=N``; comm is right-aligned and
    may contain spaces and dashes (the last ``-<digits>`` before the cpu column ends it)."""
    if isinstance(line, bytes):
        line = line.decode('utf-8', 'replace')
    m = _TRACE_RE.match(line.rstrip('\n'))
    if not m:
        return None
    frac = (m.group('frac') + '000000')[:6]
    return {
        'comm': m.group('comm').strip(),
        'pid': int(m.group('pid')),
        'cpu': int(m.group('cpu')),
        'ts_usec': int(m.group('sec')) * 1000000 + int(frac),
        'event': m.group('event'),
        'ret': int(m.group('ret')),
    }


_STATS_RE = re.compile(r'^\s*([a-z ]+):\s*([0-9]+)\s*$')


def parse_stats(text):
    """``per_cpu/cpuN/stats`` -> {entries, overrun, commit_overrun, dropped, read} (0 when absent)."""
    values = {}
    for line in (text or '').splitlines():
        m = _STATS_RE.match(line)
        if m:
            values[m.group(1).strip()] = int(m.group(2))
    return {'entries': values.get('entries', 0), 'overrun': values.get('overrun', 0),
            'commit_overrun': values.get('commit overrun', 0),
            'dropped': values.get('dropped events', 0), 'read': values.get('read events', 0)}


def written(stats):
    """Events written into a ring since it was made, from ``{cpu: parse_stats()}``: what is in it,
    what it overwrote, and what never got in (``dropped events``, ``commit overrun``)."""
    return sum(s['entries'] + s['overrun'] + s['read'] + s['dropped'] + s['commit_overrun']
               for s in stats.values())


def lost_since(before, now):
    """Events lost between two reads, from per-CPU stats (``{cpu: parse_stats()}``).

    ``overrun`` counts every event the ring overwrote, also those we had read already (``trace``
    does not consume): the ``entries`` present at the previous read were all read then, and the
    ring overwrites the oldest first, so only overruns beyond them were never read.
    ``dropped events`` and ``commit overrun`` are events that never reached the ring: all lost."""
    lost = 0
    for cpu, cur in now.items():
        prev = before.get(cpu) or {}
        if any(cur[k] < prev.get(k, 0) for k in ('overrun', 'commit_overrun', 'dropped')):
            prev = {}  # counters went back: a new buffer
        lost += max(0, cur['overrun'] - prev.get('overrun', 0) - prev.get('entries', 0))
        lost += cur['commit_overrun'] - prev.get('commit_overrun', 0)
        lost += cur['dropped'] - prev.get('dropped', 0)
    return lost


_ERROR_HEAD_RE = re.compile(r'^\[\s*[0-9.]+\]\s+(?:\S+:\s+)?error:\s*(.*\S)\s*$')


def error_log_reason(text, command):
    """The kernel's words for the newest ``error_log`` entry about ``command``, or None.

    Entries are ``[ts] trace_kprobe: error: <message>`` then ``  Command: <command>`` and a
    caret line (5.x, 6.x)."""
    lines = (text or '').splitlines()
    reason = None
    for index, line in enumerate(lines):
        m = _ERROR_HEAD_RE.match(line)
        if not m:
            continue
        for follow in lines[index + 1:index + 3]:
            follow = follow.strip()
            if follow.startswith('Command:'):
                cmd = follow[len('Command:'):].strip()
                if cmd and (cmd == command.strip() or command.strip().startswith(cmd)
                            or cmd.startswith(command.strip())):
                    reason = m.group(1)
                break
    return reason


# -- state and cursor files ----------------------------------------------------------------------
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


def load_cursor(path):
    data = read_json(path)
    if not data or not isinstance(data.get('boot_id'), str):
        return None
    for key in ('next_seq', 'at_ts'):
        if isinstance(data.get(key), bool) or not isinstance(data.get(key), int) or data[key] < 0:
            return None
    if data.get('ts_usec') is not None and (isinstance(data['ts_usec'], bool)
                                            or not isinstance(data['ts_usec'], int)):
        return None
    if not isinstance(data.get('cpus', {}), dict):
        return None
    return data


def save_json(path, data):
    host_state.atomic_write(path, (json.dumps(data, sort_keys=True, indent=1) + '\n').encode('utf-8'), 0o600)


def select_new(parsed, cursor_ts, cursor_at):
    """The events of ``parsed`` (file order = time order) after the cursor, and the new cursor.

    The cursor is the last reported timestamp (usec) and how many events at that timestamp were
    reported already (several CPUs can log within one microsecond)."""
    new = []
    seen_at = 0
    last_ts = cursor_ts
    for ev in parsed:
        if cursor_ts is not None:
            if ev['ts_usec'] < cursor_ts:
                continue
            if ev['ts_usec'] == cursor_ts and seen_at < cursor_at:
                seen_at += 1
                continue
        new.append(ev)
    if not new:
        return new, cursor_ts, cursor_at
    last_ts = new[-1]['ts_usec']
    at = sum(1 for ev in parsed if ev['ts_usec'] == last_ts)
    return new, last_ts, at


# -- writes into tracefs ------------------------------------------------------------------------
class TracefsIO(object):
    """The only writes we make into tracefs (tests put a fake kernel behind the same calls)."""

    def append(self, path, text):
        """``kprobe_events`` and ``trigger`` files: O_APPEND, never O_TRUNC (a truncating open
        deletes every kprobe event of the host / every trigger of the event). One write per line:
        the kernel takes a write as a command."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, text.encode('utf-8') + b'\n')
        finally:
            os.close(fd)

    def replace(self, path, text):
        """Attribute files that a write replaces (``enable``, ``filter``, ``trace_clock``,
        ``buffer_size_kb``, ``options/*``); O_TRUNC has no meaning there for the kernel."""
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, text.encode('utf-8') + b'\n')
        finally:
            os.close(fd)

    def mkdir(self, path):
        os.mkdir(path)

    def rmdir(self, path):
        os.rmdir(path)


def _oserror(e):
    if getattr(e, 'errno', None):
        return '%s (%s)' % (os.strerror(e.errno), errno.errorcode.get(e.errno, e.errno))
    return str(e)


# -- the backend --------------------------------------------------------------------------------
class TraceBackend(object):
    """status / present / absent / collect of one named probe set on this host.

    ``name`` is the group of our events and the name of our instance; ``state_dir`` the host path
    of our state directory (resolved below ``root``). Errors raise TracefsError; names and
    paths that are not ours raise names.InvalidValue."""

    def __init__(self, name, root='/', state_dir=DEFAULT_STATE_DIR, io=None):
        self.name = names.module_name(name, 'name')
        self.root = root
        state_dir = names.host_path(state_dir, 'state_dir')
        self.state_dir = _below(root, state_dir)
        self.state_file = host_state.state_file(self.state_dir, self.name, 'tracefs')
        self.cursor_file = host_state.state_file(self.state_dir, self.name, 'tracefs-cursor')
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
            return kmsg.read_boot_id(_below(self.root, kmsg.BOOT_ID_PATH))
        except (IOError, OSError) as e:
            raise TracefsError('cannot read %s: %s' % (kmsg.BOOT_ID_PATH, _oserror(e)))

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
                       % (', '.join('instances/%s' % i for i in taken), _host(self.root, self.state_file)))
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
        return 'the kernel refused "%s": %s%s' % (command, _oserror(e),
                                                  ' (error_log: %s)' % reason if reason else '')

    def _make_instance(self, instance, settings):
        """mkdir an instance and write its settings; returns True once the directory exists."""
        path = self.instance_dir(instance)
        try:
            self.io.mkdir(path)
        except (IOError, OSError) as e:
            raise TracefsError('mkdir %s failed: %s' % (_host(self.root, path), _oserror(e)))
        try:
            for rel, value in settings:
                if rel == 'options/pause-on-trace' and not os.path.isfile(os.path.join(path, rel)):
                    continue
                self.io.replace(os.path.join(path, rel), value)
        except (IOError, OSError) as e:
            raise TracefsError('setting up instance %s failed: %s' % (instance, _oserror(e)))

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
                 'instance': self.name, 'tracefs': _host(self.root, self.tracefs),
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
                                   'its trace_pipe open?)' % (instance, _oserror(e)))
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
                errors.append('%s: %s' % (command, _oserror(e)))
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

    # -- collect -----------------------------------------------------------------------------
    def matches(self, rec):
        """Exact matches of one probe: its hist trigger's counts, or its counting instance's ring."""
        if rec.get('counter'):
            if not os.path.isdir(self.instance_dir(rec['counter'])):
                return None
            return written(self.cpu_stats(rec['counter']))
        return parse_hist(read_text(os.path.join(self.event_dir(rec['name']), 'hist')))['matches']

    def counters(self, state):
        """{probe: {function, hits, matches, nmissed, kp_nmissed, maxactive, registered, reg_err,
        suppressed}} in the module backend's schema (ownership.COUNTERS)."""
        counts = {}
        events_text = read_text(self.tr('kprobe_events')) or ''
        tries = PROFILE_READS
        while tries:
            tries -= 1
            profile_text = read_text(self.tr('kprobe_profile')) or ''
            again = read_text(self.tr('kprobe_events')) or ''
            if again == events_text:
                counts = profile_counts(events_text, profile_text)
                break
            events_text = again
        defs = parse_definitions(events_text)
        result = {}
        for rec in state['events']:
            want = parse_definition(rec['definition'])
            have = [d for d in defs if same_definition(d, want)]
            registered = bool(have)
            hits, missed = counts.get((self.group, rec['name']), (None, None)) if registered else (None, None)
            result[rec['name']] = {
                'function': rec['function'],
                'hits': hits,
                'matches': self.matches(rec) if registered else None,
                'nmissed': missed,
                'kp_nmissed': None,   # kprobe_profile sums the entry kprobe's and the kretprobe's
                'maxactive': (have[0]['maxactive'] if have and have[0]['maxactive'] else rec['maxactive']),
                'registered': 1 if registered else 0,
                'reg_err': 0 if registered else None,
                'suppressed': 0,      # tracefs has no rate limit: every match is in the buffer
            }
        return result

    def cpu_stats(self, instance=None):
        """{cpu: parse_stats()} of one of our instances."""
        base = os.path.join(self.instance_dir(instance), 'per_cpu')
        stats = {}
        try:
            cpus = os.listdir(base)
        except OSError:
            return stats
        for cpu in cpus:
            if re.match(r'^cpu[0-9]+$', cpu):
                text = read_text(os.path.join(base, cpu, 'stats'))
                if text is not None:
                    stats[cpu[3:]] = parse_stats(text)
        return stats

    def read_events(self, state):
        """Our events in the instance's ``trace`` file (it does not consume), oldest first."""
        probes = dict((ev['name'], ev) for ev in state['events'])
        parsed = []
        try:
            with open(os.path.join(self.instance_dir(), 'trace'), 'rb') as f:
                for line in f:
                    if line.startswith(b'#'):
                        continue
                    ev = parse_trace_line(line)
                    if ev is not None and ev['event'] in probes:
                        parsed.append(ev)
        except (IOError, OSError) as e:
            raise TracefsError('cannot read the trace of instance %s: %s' % (self.name, _oserror(e)))
        return parsed

    @staticmethod
    def as_fact(ev, probe):
        """A parsed trace line as an event fact (the module backend's keys)."""
        ret = ev['ret']
        if probe['returns'] == 'errptr' and not ERRPTR_MIN <= ret < 0:
            ret = 0  # a valid pointer: never put a kernel address into facts
        return {'probe': probe['name'], 'function': probe['function'], 'ret': ret,
                'errno': kmsg.errno_name(ret), 'pid': ev['pid'], 'comm': ev['comm'],
                'ts_usec': ev['ts_usec'], 'ts': ev['ts_usec'] / 1000000.0}

    def collect(self, max_events=1000, advance=True, check_mode=False):
        """Counters and new events: {spec_hash, reason, boot_id, probes, events, events_lost,
        events_dropped, cursor}. The cursor ``<state_dir>/<name>.tracefs-cursor`` is saved when
        ``advance`` and not ``check_mode``. Raises TracefsError when nothing of ours is present."""
        if max_events < 0:
            raise names.InvalidValue('max_events: must be >= 0, got %d' % max_events)
        boot_id = self.boot_id()
        state = self.current_state(boot_id)
        if state is None or self.tracefs is None or not os.path.isdir(self.instance_dir()):
            raise TracefsError('no tracefs probes of %s are active on this boot' % self.name)
        probes = self.counters(state)
        parsed = self.read_events(state)
        stats = self.cpu_stats()

        cursor = load_cursor(self.cursor_file)
        if cursor is None or cursor['boot_id'] != boot_id:
            cursor = {'boot_id': boot_id, 'ts_usec': None, 'at_ts': 0, 'next_seq': 0,
                      'instance': None, 'cpus': {}}
        before = cursor.get('cpus') if cursor.get('instance') == state.get('created') else {}
        lost = lost_since(before or {}, stats)
        new, ts_usec, at_ts = select_new(parsed, cursor.get('ts_usec'), cursor['at_ts'])
        by_name = dict((ev['name'], ev) for ev in state['events'])
        seq = cursor['next_seq']
        events = collections.deque(maxlen=max_events) if max_events else None
        for ev in new:
            fact = self.as_fact(ev, by_name[ev['event']])
            fact['seq'] = seq
            seq += 1
            if events is not None:
                events.append(fact)
        kept = list(events) if events is not None else []
        new_cursor = {'boot_id': boot_id, 'ts_usec': ts_usec, 'at_ts': at_ts, 'next_seq': seq,
                      'instance': state.get('created'), 'cpus': stats}
        if advance and not check_mode and new_cursor != cursor:
            try:
                save_json(self.cursor_file, new_cursor)
            except (IOError, OSError) as e:
                raise TracefsError('cannot save cursor %s: %s' % (self.cursor_file, _oserror(e)))
        return {
            'spec_hash': state.get('spec_hash'),
            'reason': state.get('reason'),
            'boot_id': boot_id,
            'probes': probes,
            'events': kept,
            'events_lost': lost,
            'events_dropped': len(new) - len(kept),
            'cursor': {'boot_id': boot_id, 'next_seq': seq, 'ts_usec': ts_usec, 'at_ts': at_ts},
        }
