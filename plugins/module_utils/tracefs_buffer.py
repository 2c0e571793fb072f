# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracefs backend's events: our instance's ``trace`` buffer (read, never consumed), after a
cursor ``<state_dir>/<name>.tracefs-cursor`` (kept across present/absent so ``seq`` never repeats
within a boot), and the events the ring lost. probe_facts collects with ``collect``; the event
forwarder (module_utils events) reads the same buffer after a cursor of its own.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import os
import re

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmsg, names
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_json
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_commands import ERRPTR_MIN
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_counters import counters, cpu_stats
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_probes import save_json
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import TracefsError, oserror


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


# -- the cursor ---------------------------------------------------------------------------------
def cursor_file(probe_set):
    return host_state.state_file(probe_set.state_dir, probe_set.name, 'tracefs-cursor')


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


# -- one probe set ------------------------------------------------------------------------------
def read_events(probe_set, state):
    """Our events in the instance's ``trace`` file (it does not consume), oldest first."""
    probes = dict((ev['name'], ev) for ev in state['events'])
    parsed = []
    try:
        with open(os.path.join(probe_set.instance_dir(), 'trace'), 'rb') as f:
            for line in f:
                if line.startswith(b'#'):
                    continue
                ev = parse_trace_line(line)
                if ev is not None and ev['event'] in probes:
                    parsed.append(ev)
    except (IOError, OSError) as e:
        raise TracefsError('cannot read the trace of instance %s: %s' % (probe_set.name, oserror(e)))
    return parsed


def as_fact(ev, probe):
    """A parsed trace line as an event fact (the module backend's keys). The trace shows the thread id
    only: it is ``tid``, and ``pid`` as before (the process id only for a single-threaded process); the
    trace has no uid and no cgroup (null)."""
    ret = ev['ret']
    if probe['returns'] == 'errptr' and not ERRPTR_MIN <= ret < 0:
        ret = 0  # a valid pointer: never put a kernel address into facts
    return {'probe': probe['name'], 'function': probe['function'], 'ret': ret,
            'errno': kmsg.errno_name(ret), 'pid': ev['pid'], 'tid': ev['pid'], 'uid': None, 'cgroup': None,
            'unit': None, 'comm': ev['comm'], 'ts_usec': ev['ts_usec'], 'ts': ev['ts_usec'] / 1000000.0}


def collect(probe_set, max_events=1000, advance=True, check_mode=False):
    """Counters and new events: {spec_hash, reason, boot_id, probes, events, events_lost,
    events_dropped, cursor}. The cursor ``<state_dir>/<name>.tracefs-cursor`` is saved when
    ``advance`` and not ``check_mode``. Raises TracefsError when nothing of ours is present."""
    if max_events < 0:
        raise names.InvalidValue('max_events: must be >= 0, got %d' % max_events)
    boot_id = probe_set.boot_id()
    state = probe_set.current_state(boot_id)
    if state is None or probe_set.tracefs is None or not os.path.isdir(probe_set.instance_dir()):
        raise TracefsError('no tracefs probes of %s are active on this boot' % probe_set.name)
    probes = counters(probe_set, state)
    parsed = read_events(probe_set, state)
    stats = cpu_stats(probe_set)

    cursor = load_cursor(cursor_file(probe_set))
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
        fact = as_fact(ev, by_name[ev['event']])
        fact['seq'] = seq
        seq += 1
        if events is not None:
            events.append(fact)
    kept = list(events) if events is not None else []
    new_cursor = {'boot_id': boot_id, 'ts_usec': ts_usec, 'at_ts': at_ts, 'next_seq': seq,
                  'instance': state.get('created'), 'cpus': stats}
    if advance and not check_mode and new_cursor != cursor:
        try:
            save_json(cursor_file(probe_set), new_cursor)
        except (IOError, OSError) as e:
            raise TracefsError('cannot save cursor %s: %s' % (cursor_file(probe_set), oserror(e)))
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
