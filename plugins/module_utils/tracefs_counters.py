# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracefs backend's counters, in the module backend's schema (ownership.COUNTERS).

``hits`` and ``nmissed`` from ``kprobe_profile``; ``matches`` from each probe's hist trigger, or, on
kernels without hist triggers, from its counting instance's ring (every event written). The
functions taking ``probe_set`` read the probes of a tracefs_probes.TraceProbes.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re

from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_text
from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import ERRNO_NAMES
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_commands import parse_definition, parse_definitions, same_definition

# One read of kprobe_events + kprobe_profile is paired by position; retried when the list
# changed between the reads (someone else defining or removing events at that moment).
PROFILE_READS = 3


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


def errno_counts(hist, keyed_by_ret):
    """{errno name: count} of a parse_hist() keyed by return value (negative keys), or None when the
    table is not keyed by it (``report: any``) or dropped entries (a full table) leave counts unknown."""
    if not keyed_by_ret or hist['matches'] is None or hist['dropped']:
        return None
    out = {}
    for key, count in hist['counts'].items():
        if key < 0:
            name = ERRNO_NAMES.get(-key, '-%d' % -key) if -key <= 4095 else 'other'
            out[name] = out.get(name, 0) + count
    return out


# -- one probe set ------------------------------------------------------------------------------
def match_counts(probe_set, rec):
    """(matches, errnos) of one probe: its hist trigger's counts (keyed by return value, so per errno
    too), or its counting instance's ring (matches only: errnos None, as for ``report: any``)."""
    if rec.get('counter'):
        if not os.path.isdir(probe_set.instance_dir(rec['counter'])):
            return None, None
        return written(cpu_stats(probe_set, rec['counter'])), None
    hist = parse_hist(read_text(os.path.join(probe_set.event_dir(rec['name']), 'hist')))
    return hist['matches'], errno_counts(hist, (rec.get('trigger') or '').startswith('hist:keys=ret:'))


def counters(probe_set, state):
    """{probe: {function, hits, matches, nmissed, kp_nmissed, maxactive, registered, reg_err,
    suppressed}} in the module backend's schema (ownership.COUNTERS)."""
    counts = {}
    events_text = read_text(probe_set.tr('kprobe_events')) or ''
    tries = PROFILE_READS
    while tries:
        tries -= 1
        profile_text = read_text(probe_set.tr('kprobe_profile')) or ''
        again = read_text(probe_set.tr('kprobe_events')) or ''
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
        hits, missed = counts.get((probe_set.group, rec['name']), (None, None)) if registered else (None, None)
        matched, errnos = match_counts(probe_set, rec) if registered else (None, None)
        result[rec['name']] = {
            'function': rec['function'],
            'hits': hits,
            'matches': matched,
            'errnos': errnos,
            'latency': None,      # calls are timed by the module backend only
            'nmissed': missed,
            'kp_nmissed': None,   # kprobe_profile sums the entry kprobe's and the kretprobe's
            'maxactive': (have[0]['maxactive'] if have and have[0]['maxactive'] else rec['maxactive']),
            'registered': 1 if registered else 0,
            'reg_err': 0 if registered else None,
            'suppressed': 0,      # tracefs has no rate limit: every match is in the buffer
            'filtered': 0,        # nor filters (a probe with one runs on the module backend)
            'exempted': 0,        # nor a log readers' exemption (the trace buffer is not the kernel log)
        }
    return result


def cpu_stats(probe_set, instance=None):
    """{cpu: parse_stats()} of one of our instances."""
    base = os.path.join(probe_set.instance_dir(instance), 'per_cpu')
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
