# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter kprobes.fleet.fleet_report: the facts of a fleet as one self-contained HTML page.

The only place the fleet report is rendered (role kprobes.fleet.fleet_report writes it).
No script, no external resource: inline CSS and inline SVG, so the file can be mailed,
attached to a ticket or served as it is.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
name: fleet_report
short_description: Render the kprobes.fleet facts of many hosts as one self-contained HTML page
version_added: 0.1.0
author:
  - kprobes.fleet developers (@kprobes-fleet)
description:
  - Takes a mapping of inventory host name to that host's C(ansible_facts.kprobes_fleet) (as set by
    M(kprobes.fleet.probe_facts); anything else, such as V(null) or V(false), for a host without facts,
    for example unreachable) and
    returns an HTML document with inline CSS and inline SVG only (no script, nothing fetched).
  - Summaries come first (fleet totals per probe with C(filtered) and C(exempted), hosts that need attention,
    the exact per-errno counts per probe summed over the fleet, the latency of the probes that time their
    calls, the top (comm, errno) pairs and the units they ran in, the top paths per (comm, errno) and the
    filesystems that were full, from the events of probes that capture arguments, a timeline of this
    collection's events); the per host and probe counters and the events are folded in C(<details>)
    elements, so the page stays readable for 1,000 hosts.
  - Per-errno counts come from each probe's C(errnos) (exact kernel counters, not the events). Per (probe,
    errno) the fleet's sum, the sum of C(delta.errnos) over the hosts whose facts carry it (an errno a
    known delta does not name counts 0 there), the hosts with any and the top hosts. Probes whose
    C(errnos) is V(null) on some hosts are named with how many.
  - Latency is merged across the fleet - each host's log2 C(buckets) summed by their upper bound C(le_ns),
    C(count) and C(sum_ns) summed - and drawn as inline SVG bars, one per log2 bucket from the fastest to
    the slowest (heights on a log scale, exact counts in each bar's title), labelled by the bucket's upper
    bound as a duration (V(1µs), V(134ms), V(2.1s)). The merged p50 and p99 are bucket upper bounds (the
    percentile is at most that), computed from the merged buckets, and marked in the picture.
  - Event tables carry who made the call - C(pid) and C(tid) where the event has both, C(uid), the
    systemd C(unit) (else the C(cgroup) path) - and the call's C(lat_ns) as a duration; a field an event
    does not carry is left blank. Every value from the facts is HTML-escaped.
  - A probe's C(delta) (C(hits), C(matches), C(nmissed), C(seconds) since the previous collection)
    is shown when the facts carry it, C(n/a) otherwise.
  - The timeline's axis is the events' C(ts) (seconds since each host booted), so hosts that booted at
    different times are not aligned; when every host with events also has C(uptime) in its facts
    (seconds since boot when it was collected), the axis is seconds before the collection instead.
  - A host needs attention when a probe has C(nmissed) or C(kp_nmissed) above 0, a probe is not
    registered, C(events_lost) or C(events_dropped) is above 0, nothing of ours is loaded, or it has
    no facts.
options:
  _input:
    description: Host name to its C(kprobes_fleet) facts (anything else means no facts).
    type: dict
    required: true
  title:
    description: Page title.
    type: str
    default: kprobes.fleet report
  generated:
    description: When the report was made (shown as given), for example C(now(utc=true).isoformat()).
    type: str
    default: ''
  top:
    description: How many (comm, errno) pairs and hosts the top lists show.
    type: int
    default: 20
  max_events:
    description: Events listed per host in the folded detail (the newest); counts always use all.
    type: int
    default: 100
'''

EXAMPLES = r'''
- name: Write the report of this play's hosts on the controller
  ansible.builtin.copy:
    content: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars)
      | map(attribute='ansible_facts', default={}) | map(attribute='kprobes_fleet', default=false)))
      | kprobes.fleet.fleet_report(generated=now(utc=true).isoformat()) }}"
    dest: /srv/reports/kprobes-fleet.html
    mode: "0640"
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
_value:
  description: The HTML document.
  type: str
'''

import html
import math
import re
from collections import Counter

from ansible.errors import AnsibleFilterError
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import percentile
from ansible_collections.kprobes.fleet.plugins.plugin_utils.settings import REPORT_MARK

COUNTERS = ('hits', 'matches', 'nmissed', 'kp_nmissed', 'suppressed', 'filtered', 'exempted')
DELTAS = ('hits', 'matches', 'nmissed')
PALETTE = ('#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#bc4c00', '#0a7b83', '#cf222e')
OPEN_ROWS = 50      # attention rows shown before the rest is folded
TIMELINE_ROWS = 20  # hosts with their own row in the timeline
TIMELINE_BINS = 60
ROW_EVENTS = 300    # dots per host row

CSS = '''
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
 padding:0 1em;color:#1f2328;background:#fff}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid #d0d7de}
.meta{color:#59636e}.cards{display:flex;flex-wrap:wrap;gap:.6em;margin:1em 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.5em .9em;min-width:8em}
.card b{display:block;font-size:1.4em}.card.bad{border-color:#d1242f;background:#ffebe9}
table{border-collapse:collapse;margin:.4em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right}td.path{word-break:break-all;font-family:monospace}tr.warn td{background:#ffebe9}
td.bad{color:#a40e26;font-weight:600}td.w{min-width:12em}.na{color:#818b98}
details{margin:.3em 0}summary{cursor:pointer}details.host{border-left:3px solid #d0d7de;padding-left:.5em}
details.host.warn{border-left-color:#d1242f}.tag{border-radius:3px;padding:0 .35em;background:#ffebe9;
 color:#a40e26;font-size:.85em;margin-left:.3em}svg{max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#1f2328}.legend span{margin-right:1em}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
'''


def _e(value):
    return html.escape('' if value is None else str(value), quote=True)


def _int(value):
    """An integer counter, or None when the facts have none (unreadable counters are null)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _num(value, bad=False):
    number = _int(value)
    if number is None:
        return '<td class="n na">n/a</td>'
    return '<td class="n%s">%s</td>' % (' bad' if bad and number > 0 else '', '{:,}'.format(number))


def _dur(ns):
    """Nanoseconds as people write durations: 511ns, 1\u00b5s, 4.1\u00b5s, 134ms, 2.1s."""
    ns = _int(ns)
    if ns is None:
        return 'n/a'
    for unit, scale in (('s', 10 ** 9), ('ms', 10 ** 6), ('\u00b5s', 10 ** 3)):
        if ns >= scale:
            value = ns / float(scale)
            text = ('%.1f' % value) if value < 9.95 else '{:,.0f}'.format(value)
            return (text[:-2] if text.endswith('.0') else text) + unit
    return '%dns' % ns


def _natural(name):
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', str(name))]


def _delta(probe):
    delta = probe.get('delta')
    return delta if isinstance(delta, dict) else None


class Host(object):
    """One host's facts, read defensively: a report must render whatever a host returned."""

    def __init__(self, name, facts):
        self.name = str(name)
        self.facts = facts if isinstance(facts, dict) else None
        facts = self.facts or {}
        probes = facts.get('probes')
        self.probes = dict((str(k), v) for k, v in probes.items() if isinstance(v, dict)) \
            if isinstance(probes, dict) else {}
        events = facts.get('events')
        self.events = [ev for ev in events if isinstance(ev, dict)] if isinstance(events, list) else []
        self.events_lost = _int(facts.get('events_lost')) or 0
        self.events_dropped = _int(facts.get('events_dropped')) or 0
        self.loaded = bool(facts.get('loaded'))
        self.kernel = facts.get('kernel')
        self.backend = facts.get('backend')
        self.uptime = facts.get('uptime')
        self.reasons = self._reasons()

    def _reasons(self):
        if self.facts is None:
            return ['no facts (unreachable, failed or not collected)']
        reasons = []
        if not self.loaded:
            reasons.append('no probes of ours loaded')
        for name, probe in sorted(self.probes.items()):
            for key in ('nmissed', 'kp_nmissed'):
                if (_int(probe.get(key)) or 0) > 0:
                    reasons.append('%s %s=%d' % (name, key, _int(probe.get(key))))
            if probe.get('registered') is not None and _int(probe.get('registered')) == 0:
                reasons.append('%s not registered (reg_err %s)' % (name, probe.get('reg_err')))
        if self.events_lost:
            reasons.append('events_lost=%d' % self.events_lost)
        if self.events_dropped:
            reasons.append('events_dropped=%d' % self.events_dropped)
        return reasons

    def total(self, key, delta=False):
        values = [_int((_delta(p) or {}).get(key)) if delta else _int(p.get(key)) for p in self.probes.values()]
        values = [v for v in values if v is not None]
        return sum(values) if values else None


def _table(head, rows, cls=''):
    attrs = ' class="%s"' % cls if cls else ''
    cells = ''.join('<th>%s</th>' % _e(h) for h in head)
    out = ['<table%s><thead><tr>%s</tr></thead><tbody>' % (attrs, cells)]
    out.extend(rows)
    out.append('</tbody></table>')
    return '\n'.join(out)


def _probe_totals(hosts):
    names = sorted(set(n for h in hosts for n in h.probes))
    rows = []
    for name in names:
        having = [h for h in hosts if name in h.probes]
        probes = [h.probes[name] for h in having]
        cells = ['<td>%s</td>' % _e(name), '<td class="n">%d</td>' % len(having)]
        for key in ('hits', 'matches', 'nmissed', 'filtered', 'exempted'):
            values = [_int(p.get(key)) for p in probes]
            cells.append(_num(sum(v for v in values if v is not None) if any(v is not None for v in values) else None,
                              bad=key == 'nmissed'))
        with_delta = [_delta(p) for p in probes if _delta(p) is not None]
        for key in DELTAS:
            values = [_int(d.get(key)) for d in with_delta]
            values = [v for v in values if v is not None]
            cells.append(_num(sum(values) if values else None, bad=key == 'nmissed'))
        cells.append('<td class="n">%s</td>' % ('%d of %d' % (len(with_delta), len(having))))
        events = sum(1 for h in having for ev in h.events if ev.get('probe') == name)
        cells.append('<td class="n">{:,}</td>'.format(events))
        rows.append('<tr>%s</tr>' % ''.join(cells))
    if not rows:
        return '<p>No probe is active on any host.</p>'
    return _table(['probe', 'hosts', 'hits', 'matches', 'nmissed', 'filtered', 'exempted', '\u0394 hits',
                   '\u0394 matches', '\u0394 nmissed', 'hosts with \u0394', 'events'], rows)


def _errno_counts(errnos):
    """{errno: count} of a probe's (or its delta's) ``errnos``, or None where they are not known."""
    if not isinstance(errnos, dict):
        return None
    return dict((str(k), _int(v)) for k, v in errnos.items() if _int(v) is not None)


def _errnos(hosts, top):
    """Per (probe, errno): the kernel's exact counts summed over the fleet, the delta where the hosts
    have one, and the hosts with the most."""
    rows = {}      # (probe, errno) -> [total, delta or None, Counter(host -> count)]
    unknown = Counter()
    for h in hosts:
        for name, p in h.probes.items():
            counts = _errno_counts(p.get('errnos'))
            if counts is None:
                unknown[name] += 1
                continue
            delta = _errno_counts((_delta(p) or {}).get('errnos'))
            for errno in set(counts) | set(delta or ()):
                row = rows.setdefault((name, errno), [0, None, Counter()])
                row[0] += counts.get(errno, 0)
                row[2][h.name] += counts.get(errno, 0)
                if delta is not None:  # known: an errno it does not name did not change
                    row[1] = (row[1] or 0) + delta.get(errno, 0)
    out = []
    if rows:
        ranked = sorted(rows.items(), key=lambda kv: (kv[0][0], -kv[1][0], kv[0][1]))
        out.append(_table(['probe', 'errno', 'count', '\u0394 count', 'hosts', 'top hosts'], [
            '<tr><td>%s</td><td>%s</td>%s%s<td class="n">%d</td><td>%s</td></tr>' % (
                _e(name), _e(errno), _num(total), _num(delta), sum(1 for n in per_host.values() if n),
                _e(', '.join('%s %s' % (host, '{:,}'.format(n)) for host, n in sorted(
                    per_host.items(), key=lambda kv: (-kv[1], _natural(kv[0])))[:min(top, 5)] if n)))
            for (name, errno), (total, delta, per_host) in ranked], 'errnos'))
    else:
        out.append('<p>No probe has counted an errno.</p>')
    if unknown:
        out.append('<p class="meta">Not known (<code>errnos</code> null: tracefs with <code>report: any</code> or '
                   'without hist triggers, a full hist table, an older module) for %s.</p>' % _e(', '.join(
                       '%s on %d host%s' % (name, n, '' if n == 1 else 's') for name, n in sorted(unknown.items()))))
    return '\n'.join(out)


def _merged_latency(hosts):
    """Per probe that times its calls: every host's log2 buckets summed by their upper bound."""
    merged = {}
    for h in hosts:
        for name, p in h.probes.items():
            lat = p.get('latency')
            if not isinstance(lat, dict):
                continue
            m = merged.setdefault(name, {'buckets': Counter(), 'count': 0, 'sum_ns': 0, 'hosts': []})
            for pair in lat.get('buckets') if isinstance(lat.get('buckets'), list) else ():
                if isinstance(pair, (list, tuple)) and len(pair) == 2 and None not in (_int(pair[0]), _int(pair[1])):
                    m['buckets'][_int(pair[0])] += _int(pair[1])
            m['count'] += _int(lat.get('count')) or 0
            m['sum_ns'] += _int(lat.get('sum_ns')) or 0
            m['hosts'].append((h.name, _int(lat.get('p99_ns'))))
    for m in merged.values():
        buckets = [[le, n] for le, n in sorted(m['buckets'].items()) if n]
        m['p50_ns'] = percentile(buckets, m['count'], 0.50)
        m['p99_ns'] = percentile(buckets, m['count'], 0.99)
    return merged


def _histogram(name, m):
    """One probe's fleet-merged latency as inline SVG bars, one per log2 bucket from the fastest to the
    slowest (heights on a log scale, the count in each bar's title), labelled by the bucket's upper bound."""
    slots = Counter()
    for le, n in m['buckets'].items():
        slots[max(le, 0).bit_length()] += n      # le = 2^b - 1: bucket b
    slots = dict((b, n) for b, n in slots.items() if n > 0)
    if not slots:
        return '<p class="meta">%s: no call timed yet.</p>' % _e(name)
    lo, hi = min(slots), max(slots)
    width, left, right, top, plot_h = 960, 70, 20, 36, 140
    bar_w = min(48.0, (width - left - right) / float(hi - lo + 1))
    base = top + plot_h
    peak = max(slots.values())
    out = ['<svg xmlns="http://www.w3.org/2000/svg" role="img" width="%d" height="%d" viewBox="0 0 %d %d" '
           'aria-label="%s">' % (width, base + 40, width, base + 40,
                                 _e('latency of %s: %d calls across the fleet' % (name, m['count']))),
           '<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 6, top + 10, _e('{:,}'.format(peak))),
           '<text x="%d" y="%d" text-anchor="end">calls</text>' % (left - 6, top + 24),
           '<text x="%d" y="%d" text-anchor="end">(log)</text>' % (left - 6, top + 38)]
    every = int(math.ceil(46 / bar_w))
    for i, b in enumerate(range(lo, hi + 1)):
        x, n = left + i * bar_w, slots.get(b, 0)
        if n:
            size = max(2.0, math.log10(n + 1) / math.log10(peak + 1) * plot_h)
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#1f6feb"><title>%s</title></rect>'
                       % (x, base - size, max(bar_w - 2, 1), size,
                          _e('\u2264 %s: %s calls' % (_dur((1 << b) - 1), '{:,}'.format(n)))))
        if i % every == 0:
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                       % (x + bar_w / 2, base + 14, _e(_dur((1 << b) - 1))))
    for label, value, color, y in (('p50', m['p50_ns'], '#1a7f37', 12), ('p99', m['p99_ns'], '#d1242f', 26)):
        if value is not None:
            x = left + (max(value, 0).bit_length() - lo + 1) * bar_w - 1
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4 3"/>'
                       '<text x="%.1f" y="%d" text-anchor="end" fill="%s">%s</text>'
                       % (x, y + 4, x, base, color, x - 3, y + 4, color, _e('%s \u2264 %s' % (label, _dur(value)))))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#59636e"/>' % (left, base, width - right, base))
    out.append('<text x="%d" y="%d">%s</text>' % (left, base + 34, _e(
        '%s: time from entry to return, each bar a log2 bucket labelled by its upper bound' % name)))
    out.append('</svg>')
    return ''.join(out)


def _latency(hosts, top):
    merged = _merged_latency(hosts)
    if not merged:
        return ('<p>No probe times its calls (give a probe <code>latency: true</code> or '
                '<code>slower_than</code>).</p>')
    rows = ['<tr><td>%s</td><td class="n">%d</td>%s<td class="n">%s</td><td class="n">%s</td><td class="n">%s</td>'
            '<td class="n">%s</td><td>%s</td></tr>' % (
                _e(name), len(m['hosts']), _num(m['count']),
                _e(_dur(m['sum_ns'] // m['count']) if m['count'] else 'n/a'),
                _e('\u2264 ' + _dur(m['p50_ns']) if m['p50_ns'] is not None else 'n/a'),
                _e('\u2264 ' + _dur(m['p99_ns']) if m['p99_ns'] is not None else 'n/a'),
                _e('\u2264 ' + _dur(max(m['buckets'])) if m['buckets'] else 'n/a'),
                _e(', '.join('%s \u2264 %s' % (host, _dur(p99)) for host, p99 in sorted(
                    (hp for hp in m['hosts'] if hp[1] is not None),
                    key=lambda hp: (-hp[1], _natural(hp[0])))[:min(top, 5)])))
            for name, m in sorted(merged.items())]
    return '\n'.join(
        ['<p>Every call of these probes since their module was loaded, the hosts\' log2 buckets summed. '
         'p50 and p99 are bucket upper bounds: half (99%) of the calls took at most that long.</p>',
         _table(['probe', 'hosts', 'calls', 'mean', 'p50', 'p99', 'slowest bucket', 'highest p99'], rows, 'latency')]
        + [_histogram(name, m) for name, m in sorted(merged.items())])


def _attention(hosts):
    bad = [h for h in hosts if h.reasons]
    if not bad:
        return '<p>No host needs attention: nothing missed, nothing lost, every host reported.</p>'
    rows = ['<tr class="warn"><td><a href="#h-%s">%s</a></td><td>%s</td></tr>'
            % (_e(h.name), _e(h.name), _e('; '.join(h.reasons))) for h in bad]
    head = ['host', 'why']
    out = ['<p>%d of %d hosts need attention (missed calls, lost events, no probes or no facts).</p>'
           % (len(bad), len(hosts)), _table(head, rows[:OPEN_ROWS], 'attention')]
    if len(rows) > OPEN_ROWS:
        out.append('<details><summary>%d more hosts</summary>%s</details>'
                   % (len(rows) - OPEN_ROWS, _table(head, rows[OPEN_ROWS:], 'attention')))
    return '\n'.join(out)


def _unit(ev):
    """Whose, beyond the comm: the event's systemd unit, else its cgroup path ('' when it has neither)."""
    return str(ev.get('unit') or ev.get('cgroup') or '')


def _top_pairs(hosts, top):
    pairs = Counter()
    where = {}
    for h in hosts:
        for ev in h.events:
            key = (str(ev.get('comm', '')), ev.get('errno') or ('ret=%s' % ev.get('ret')))
            pairs[key] += 1
            seen = where.setdefault(key, (set(), set(), Counter()))
            seen[0].add(h.name)
            seen[1].add(str(ev.get('probe', '')))
            if _unit(ev):
                seen[2][_unit(ev)] += 1
    if not pairs:
        return '<p>No events in this collection.</p>'
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    rows = ['<tr><td class="n">%d</td><td>%s</td><td>%s</td><td class="n">%s</td><td class="n">%d</td><td>%s</td>'
            '<td class="path">%s</td></tr>'
            % (i + 1, _e(comm), _e(errno), '{:,}'.format(count), len(where[(comm, errno)][0]),
               _e(', '.join(sorted(where[(comm, errno)][1]))),
               _e(', '.join('%s %d' % kv for kv in sorted(where[(comm, errno)][2].items(),
                                                          key=lambda kv: (-kv[1], kv[0]))[:3])))
            for i, ((comm, errno), count) in enumerate(ranked)]
    return ('<p>%d distinct (comm, errno) pairs in %s events; the top %d:</p>' % (
        len(pairs), '{:,}'.format(sum(pairs.values())), len(ranked))
        + _table(['#', 'comm', 'errno', 'events', 'hosts', 'probes', 'units'], rows, 'top'))


def _arg_paths(ev):
    """The captured paths of an event: string arguments as they are, a file argument's path."""
    for name, value in sorted((ev.get('args') or {}).items()) if isinstance(ev.get('args'), dict) else ():
        if isinstance(value, dict):
            value = value.get('path')
        if isinstance(value, str):
            yield '%s%s' % (value, ' (cut)' if name in (ev.get('args_truncated') or ()) else '')


def _top_paths(hosts, top):
    """The paths the failing calls named, per (comm, errno): only probes with ``args`` give them."""
    paths = Counter()
    where = {}
    for h in hosts:
        for ev in h.events:
            for path in _arg_paths(ev):
                key = (str(ev.get('comm', '')), ev.get('errno') or ('ret=%s' % ev.get('ret')), path)
                paths[key] += 1
                where.setdefault(key, set()).add(h.name)
    if not paths:
        return '<p>No event carries a path (give probes <code>args</code> to capture them).</p>'
    ranked = sorted(paths.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    row = ('<tr><td class="n">%d</td><td>%s</td><td>%s</td><td class="path">%s</td><td class="n">%s</td>'
           '<td class="n">%d</td></tr>')
    rows = [row % (i + 1, _e(comm), _e(errno), _e(path), '{:,}'.format(count), len(where[(comm, errno, path)]))
            for i, ((comm, errno, path), count) in enumerate(ranked)]
    return ('<p>%d distinct (comm, errno, path) in this collection; the top %d:</p>' % (len(paths), len(ranked))
            + _table(['#', 'comm', 'errno', 'path', 'events', 'hosts'], rows, 'paths'))


def _full_filesystems(hosts):
    """The filesystems that were full (ENOSPC, EDQUOT), from events with a captured file."""
    seen = {}
    for h in hosts:
        for ev in h.events:
            if ev.get('errno') not in ('ENOSPC', 'EDQUOT'):
                continue
            for value in (ev.get('args') or {}).values() if isinstance(ev.get('args'), dict) else ():
                if isinstance(value, dict) and (value.get('fs') or value.get('mount') or value.get('dev')):
                    key = (h.name, str(value.get('mount') or '?'), str(value.get('fs') or '?'),
                           str(value.get('device') or value.get('dev') or '?'), ev.get('errno'))
                    entry = seen.setdefault(key, [0, Counter()])
                    entry[0] += 1
                    if isinstance(value.get('path'), str):
                        entry[1][value['path']] += 1
    if not seen:
        return '<p>No full filesystem in this collection (a probe with a <code>file</code> argument on a write names it).</p>'
    rows = ['<tr><td><a href="#h-%s">%s</a></td><td class="path">%s</td><td>%s</td><td>%s</td><td>%s</td>'
            '<td class="n">%s</td><td class="path">%s</td></tr>'
            % (_e(host), _e(host), _e(mount), _e(fs), _e(device), _e(errno), '{:,}'.format(count),
               _e(', '.join(p for p, dummy in files.most_common(3))))
            for (host, mount, fs, device, errno), (count, files) in sorted(seen.items(), key=lambda kv: (-kv[1][0], kv[0]))]
    return _table(['host', 'mount', 'fs', 'device', 'errno', 'events', 'files'], rows, 'full')


def _args_text(ev):
    """An event's captured arguments in one line: name=value, a file as its path [fs dev]."""
    args = ev.get('args')
    if not isinstance(args, dict):
        return ''
    parts = []
    for name, value in sorted(args.items()):
        if isinstance(value, dict):
            value = '%s [%s %s]' % (value.get('path'), value.get('fs'), value.get('device') or value.get('dev'))
        parts.append('%s=%s' % (name, value))
    return ' \u00b7 '.join(parts)


def _timeline(hosts, colors):
    """Events of this collection over time, inline SVG: a fleet histogram, then one row per busy host."""
    busy = [h for h in hosts if h.events]
    if not busy:
        return '<p>No events in this collection.</p>'
    aligned = all(isinstance(h.uptime, (int, float)) and not isinstance(h.uptime, bool) for h in busy)

    def x_of(h, ev):
        try:
            ts = float(ev.get('ts'))
        except (TypeError, ValueError):
            return None
        return ts - float(h.uptime) if aligned else ts

    points = [(h, ev, x_of(h, ev)) for h in busy for ev in h.events]
    points = [p for p in points if p[2] is not None]
    if not points:
        return '<p>No event carries a timestamp.</p>'
    lo = min(p[2] for p in points)
    hi = max(p[2] for p in points)
    span = (hi - lo) or 1.0
    width, left, right = 960, 150, 20
    plot = width - left - right
    bin_w = plot / float(TIMELINE_BINS)
    bins = [Counter() for dummy in range(TIMELINE_BINS)]
    for h, ev, x in points:
        bins[min(TIMELINE_BINS - 1, int((x - lo) / span * TIMELINE_BINS))][str(ev.get('probe', ''))] += 1
    peak = max(sum(b.values()) for b in bins) or 1
    hist_h = 120
    rows = sorted(busy, key=lambda h: (-len(h.events), _natural(h.name)))[:TIMELINE_ROWS]
    row_h = 16
    height = 30 + hist_h + 20 + row_h * len(rows) + 30
    out = ['<svg xmlns="http://www.w3.org/2000/svg" role="img" width="%d" height="%d" viewBox="0 0 %d %d" '
           'aria-label="timeline of %d events">' % (width, height, width, height, len(points))]
    out.append('<text x="%d" y="14">events per bin (%d bins, peak %d)</text>' % (left, TIMELINE_BINS, peak))
    base = 30 + hist_h
    for i, b in enumerate(bins):
        y = base
        for probe in sorted(b):
            size = b[probe] / float(peak) * hist_h
            y -= size
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %d</title></rect>'
                       % (left + i * bin_w, y, max(bin_w - 1, 1), size, colors.get(probe, '#818b98'),
                          _e(probe), b[probe]))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#59636e"/>' % (left, base, width - right, base))
    out.append('<text x="%d" y="%d" text-anchor="end">fleet</text>' % (left - 6, base - 4))
    for r, h in enumerate(rows):
        y = base + 20 + r * row_h
        out.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 6, y + 11, _e(h.name[:22])))
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#eaeef2"/>' % (left, y + 7, width - right, y + 7))
        for ev in h.events[-ROW_EVENTS:]:
            x = x_of(h, ev)
            if x is None:
                continue
            probe = str(ev.get('probe', ''))
            out.append('<circle cx="%.1f" cy="%d" r="3" fill="%s"><title>%s %s %s pid %s %s</title></circle>'
                       % (left + (x - lo) / span * plot, y + 7, colors.get(probe, '#818b98'), _e(probe),
                          _e(ev.get('comm')), _e(ev.get('errno') or ev.get('ret')), _e(ev.get('pid')),
                          _e(_unit(ev))))
    axis_y = height - 12
    unit = 'seconds before collection' if aligned else 'seconds since each host booted'
    out.append('<text x="%d" y="%d">%s</text>' % (left, axis_y, _e('%.1f' % lo)))
    out.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (width - right, axis_y, _e('%.1f' % hi)))
    out.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (left + plot // 2, axis_y, _e(unit)))
    out.append('</svg>')
    legend = ''.join('<span><i style="background:%s"></i>%s</span>' % (c, _e(p)) for p, c in sorted(colors.items()))
    note = ('' if aligned else
            '<p class="meta">Kernel timestamps are seconds since each host booted: hosts that booted at '
            'different times are not aligned on this axis.</p>')
    more = len(busy) - len(rows)
    if more > 0:
        note += '<p class="meta">%d more hosts with events are in the histogram only.</p>' % more
    if any(len(h.events) > ROW_EVENTS for h in rows):
        note += '<p class="meta">A host\'s row shows its newest %d events; the histogram counts all.</p>' % ROW_EVENTS
    return '<div class="legend">%s</div>%s%s' % (legend, ''.join(out), note)


def _host_detail(h, max_events):
    warn = ' warn' if h.reasons else ''
    if h.facts is None:
        return ('<details class="host warn" id="h-%s"><summary>%s<span class="tag">no facts</span></summary>'
                '<p>%s</p></details>' % (_e(h.name), _e(h.name), _e('; '.join(h.reasons))))
    matches = h.total('matches')
    dmatch = h.total('matches', delta=True)
    summary = '%s \u2014 %s, %s, matches %s, \u0394 matches %s, %d events%s' % (
        _e(h.name), _e(h.kernel or 'unknown kernel'), _e(h.backend or 'nothing loaded'),
        'n/a' if matches is None else '{:,}'.format(matches), 'n/a' if dmatch is None else '{:,}'.format(dmatch),
        len(h.events), ''.join('<span class="tag">%s</span>' % _e(r) for r in h.reasons))
    rows = []
    for name, p in sorted(h.probes.items()):
        d = _delta(p) or {}
        missed = (_int(p.get('nmissed')) or 0) > 0 or (_int(p.get('kp_nmissed')) or 0) > 0
        errnos, derrnos, lat = _errno_counts(p.get('errnos')), _errno_counts(d.get('errnos')), p.get('latency')
        errno_text = None if errnos is None else ' \u00b7 '.join(
            '%s %s%s' % (errno, '{:,}'.format(n), '' if derrnos is None else ' (\u0394 %d)' % derrnos.get(errno, 0))
            for errno, n in sorted(errnos.items(), key=lambda kv: (-kv[1], kv[0]))) or 'none'
        lat_text = ('%s calls, p50 \u2264 %s, p99 \u2264 %s' % (
            '{:,}'.format(_int(lat.get('count')) or 0), _dur(lat.get('p50_ns')), _dur(lat.get('p99_ns')))
            if isinstance(lat, dict) else '')
        rows.append('<tr%s><td>%s</td><td>%s</td>%s%s<td class="n%s">%s</td><td class="w%s">%s</td><td class="w">%s</td>'
                    '</tr>' % (' class="warn"' if missed else '', _e(name), _e(p.get('function')),
                               ''.join(_num(p.get(k), bad=k in ('nmissed', 'kp_nmissed')) for k in COUNTERS),
                               ''.join(_num(d.get(k), bad=k == 'nmissed') for k in DELTAS),
                               '' if d.get('seconds') is not None else ' na',
                               _e('%s' % d.get('seconds')) if d.get('seconds') is not None else 'n/a',
                               ' na' if errno_text is None else '', 'n/a' if errno_text is None else _e(errno_text),
                               _e(lat_text)))
    body = [_table(['probe', 'function', 'hits', 'matches', 'nmissed', 'kp_nmissed', 'suppressed', 'filtered',
                    'exempted', '\u0394 hits', '\u0394 matches', '\u0394 nmissed', '\u0394 seconds',
                    'errnos (\u0394)', 'latency'], rows) if rows
            else '<p>No probes.</p>',
            '<p>events_lost %d, events_dropped %d</p>' % (h.events_lost, h.events_dropped)]
    if h.events:
        shown = h.events[-max_events:]
        erows = ['<tr><td class="n">%s</td><td>%s</td><td>%s</td><td>%s</td><td class="n">%s</td><td class="n">%s</td>'
                 '<td class="n">%s</td><td class="path">%s</td><td class="n">%s</td><td class="path">%s</td></tr>'
                 % (_e(ev.get('ts')), _e(ev.get('probe')), _e(ev.get('comm')), _e(ev.get('errno')),
                    _e(ev.get('ret')), _e(ev.get('pid') if ev.get('tid') is None else '%s / %s' % (
                        ev.get('pid'), ev.get('tid'))),
                    _e(ev.get('uid')), _e(_unit(ev)), _e(_dur(ev['lat_ns']) if ev.get('lat_ns') is not None else ''),
                    _e(_args_text(ev))) for ev in shown]
        body.append('<details><summary>%d events%s</summary>%s</details>' % (
            len(h.events), ' (the newest %d shown)' % len(shown) if len(shown) < len(h.events) else '',
            _table(['ts', 'probe', 'comm', 'errno', 'ret', 'pid / tid', 'uid', 'unit / cgroup', 'latency', 'args'],
                   erows)))
    return '<details class="host%s" id="h-%s"><summary>%s</summary>%s</details>' % (
        warn, _e(h.name), summary, '\n'.join(body))


def fleet_report(hostfacts, title='kprobes.fleet report', generated='', top=20, max_events=100):
    if not isinstance(hostfacts, dict):
        raise AnsibleFilterError('kprobes.fleet.fleet_report: expects a mapping of host name to its '
                                 'kprobes_fleet facts, got %s' % type(hostfacts).__name__)
    try:
        top = max(1, int(top))
        max_events = max(0, int(max_events))
    except (TypeError, ValueError):
        raise AnsibleFilterError('kprobes.fleet.fleet_report: top and max_events must be integers')
    hosts = [Host(name, facts) for name, facts in sorted(hostfacts.items(), key=lambda kv: _natural(kv[0]))]
    with_facts = [h for h in hosts if h.facts is not None]
    probe_names = sorted(set(n for h in hosts for n in h.probes) | set(
        str(ev.get('probe', '')) for h in hosts for ev in h.events))
    colors = dict((p, PALETTE[i % len(PALETTE)]) for i, p in enumerate(probe_names))
    n_events = sum(len(h.events) for h in hosts)
    attention = sum(1 for h in hosts if h.reasons)
    matches = [h.total('matches') for h in with_facts]
    dmatches = [h.total('matches', delta=True) for h in with_facts]
    dmatches = [v for v in dmatches if v is not None]
    backends = Counter(h.backend or 'none' for h in with_facts)
    kernels = Counter(h.kernel or 'unknown' for h in with_facts)
    cards = [
        ('hosts', '%d' % len(hosts), False),
        ('with facts', '%d' % len(with_facts), len(with_facts) < len(hosts)),
        ('probes loaded', '%d' % sum(1 for h in with_facts if h.loaded), False),
        ('matches', '{:,}'.format(sum(v for v in matches if v is not None)), False),
        ('\u0394 matches', '{:,}'.format(sum(dmatches)) if dmatches else 'n/a', False),
        ('events', '{:,}'.format(n_events), False),
        ('events lost', '{:,}'.format(sum(h.events_lost for h in hosts)), any(h.events_lost for h in hosts)),
        ('need attention', '%d' % attention, attention > 0),
    ]
    parts = [
        '<!DOCTYPE html>',
        '<html lang="en"><head><meta charset="utf-8">',
        REPORT_MARK,  # an existing file is replaced only when it carries this mark
        # Nothing may load or run: a browser refuses (and reports) any script or fetch.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<title>%s</title><style>%s</style></head><body>' % (_e(title), CSS),
        '<h1>%s</h1>' % _e(title),
        '<p class="meta">%s%d hosts, %d kernels (%s), backends: %s</p>' % (
            ('generated %s \u00b7 ' % _e(generated)) if generated else '', len(hosts), len(kernels),
            _e(', '.join('%s \u00d7%d' % kv for kv in sorted(kernels.items()))),
            _e(', '.join('%s \u00d7%d' % kv for kv in sorted(backends.items()))) or 'none'),
        '<div class="cards">%s</div>' % ''.join(
            '<div class="card%s" data-card="%s"><b>%s</b>%s</div>' % (' bad' if bad else '', _e(label), _e(value), _e(label))
            for label, value, bad in cards),
        '<h2>Probes across the fleet</h2>', _probe_totals(hosts),
        '<h2 id="attention">Hosts that need attention</h2>', _attention(hosts),
        '<h2 id="errnos">Errors per probe (exact kernel counts)</h2>', _errnos(hosts, top),
        '<h2 id="latency">Latency per probe (the fleet merged)</h2>', _latency(hosts, top),
        '<h2>Top (comm, errno) pairs</h2>', _top_pairs(hosts, top),
        '<h2>Top paths per (comm, errno)</h2>', _top_paths(hosts, top),
        '<h2>Filesystems that were full</h2>', _full_filesystems(hosts),
        '<h2>Timeline of this collection\'s events</h2>', _timeline(hosts, colors),
        '<h2>Hosts</h2>',
        '<details id="hosts"><summary>All %d hosts: counters, deltas and events per host and probe</summary>' % len(hosts),
        '\n'.join(_host_detail(h, max_events) for h in hosts),
        '</details>',
        '</body></html>',
    ]
    return '\n'.join(parts) + '\n'


class FilterModule(object):

    def filters(self):
        return {'fleet_report': fleet_report}
