# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probes' counters for Prometheus: a node_exporter textfile, read straight from the kernel.

``kprobes_fleet_metrics: textfile`` installs the timer ``kprobes-fleet-<name>-metrics.timer``
(module probe_metrics), which runs ``write()`` through the copy of these module_utils in
``<host_dir>/lib`` every interval: it reads the counters the facts read (``read()``: sysfs of our
module, or tracefs of our events; no Ansible run, no cursor moved) and replaces
``<dir>/kprobes-fleet-<name>.prom`` atomically (a temp file whose name does not end in ``.prom``,
then a rename), so node_exporter's textfile collector never sees half a file. Its first line is our
mark; a file without it is never replaced or removed. Text exposition format 0.0.4 (the one the
textfile collector parses; ``promtool check metrics`` clean). No pid, comm, uid or path labels:
their cardinality has no bound. Standard library only.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import stat
import time

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmsg, names
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_json
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import ModuleSysfs
from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import ERRNO_NAMES, NAME_PATTERN
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_counters import counters as tracefs_counters
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_probes import TraceProbes
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import TracefsError

DEFAULT_DIR = '/var/lib/prometheus/node-exporter'
PREFIX = 'kprobes_fleet_'
# Latency buckets (seconds), a fixed set so a series never appears or goes: the kernel's log2 bucket b
# holds 2^(b-1) <= ns < 2^b (ownership.ModuleSysfs.latency), b = 0..40 here, 2^40 ns is 18 minutes.
LATENCY_BUCKETS = 41
PROBE_NAME_RE = re.compile(NAME_PATTERN[1:-1])
# (metric, help) of the per-probe counters, in the facts' names (probes.<n>.<key>).
PROBE_COUNTERS = (
    ('hits', 'hits_total', 'Returns of the probed function (the kretprobe ran).'),
    ('matches', 'matches_total', 'Returns that matched the probe (the value reported, after filters).'),
    ('nmissed', 'nmissed_total', 'Returns missed because all maxactive instances were in use (raise maxactive).'),
    ('kp_nmissed', 'kprobe_nmissed_total', 'Entries the kprobe under the kretprobe missed (module backend).'),
    ('suppressed', 'suppressed_total', 'Matches not written to the kernel log by its rate limit (counted all the same).'),
    ('filtered', 'filtered_total', 'Returns the in-kernel filters kept out of the matches.'),
    ('exempted', 'exempted_total', 'Matches of the log readers (kprobes_fleet_log_exempt) kept out of the kernel log, counted.'),
)


def textfile(directory, name):
    """The path of our textfile for module ``name`` in ``directory``."""
    return os.path.join(directory, 'kprobes-fleet-%s.prom' % names.module_name(name, 'name'))


def mark_line(name):
    return '# %s: probes of %s (written by kprobes-fleet-%s-metrics.timer; do not edit)\n' % (names.MARK, name, name)


def is_ours(path, name):
    """``path`` is a regular file (not a link) whose first line is our mark for ``name``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NONBLOCK', 0))
    except OSError:
        return False
    with os.fdopen(fd, 'rb') as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return False
        return f.readline().decode('utf-8', 'replace') == mark_line(name)


def read(name, state_dir, root='/', release=None):
    """What runs now, from the kernel: {module, loaded, backend, kernel, spec_hash, probes, lost}.
    ``probes`` in the facts' schema (probes.<n>: function, hits, ..., errnos, latency); ``lost``:
    events lost by each reader on this boot ({collect, forwarder}, as they last counted)."""
    name = names.module_name(name, 'name')
    host_state_dir = os.path.join(root, state_dir.lstrip('/'))
    out = {'module': name, 'loaded': False, 'backend': '', 'kernel': release or os.uname().release,
           'spec_hash': '', 'probes': {}}
    boot_id = None
    try:
        boot_id = kmsg.read_boot_id(os.path.join(root, kmsg.BOOT_ID_PATH.lstrip('/')))
        probe_set = TraceProbes(name, root=root, state_dir=state_dir)
        state = probe_set.current_state(boot_id)
        if state is not None and probe_set.tracefs is not None and os.path.isdir(probe_set.instance_dir()):
            out.update(loaded=True, backend='tracefs', spec_hash=state.get('spec_hash') or '',
                       probes=tracefs_counters(probe_set, state))
    except (IOError, OSError, TracefsError):
        pass
    sysfs = ModuleSysfs(name, root)
    if not out['loaded'] and sysfs.ours():
        out.update(loaded=True, backend='module', spec_hash=sysfs.spec_hash() or '', probes=sysfs.probes(errnos=True))
    out['lost'] = {}
    last = read_json(host_state.state_file(host_state_dir, name, 'last-collect')) or {}
    if last.get('boot_id') == boot_id and isinstance(last.get('events_lost'), int):
        out['lost']['collect'] = last['events_lost']
    status = read_json(host_state.state_file(host_state_dir, name, 'events-status')) or {}
    if status.get('mark') == names.MARK and status.get('boot_id') == boot_id and isinstance(status.get('lost'), int):
        out['lost']['forwarder'] = status['lost']
    return out


def _label(value):
    """A label value in the text format: backslash, double quote and newline escaped."""
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _labels(**labels):
    return '{%s}' % ','.join('%s="%s"' % (k, _label(v)) for k, v in sorted(labels.items()))


def _seconds(ns):
    return repr(ns / 1e9)


def render(snap, zero=None):
    """The textfile for ``snap`` (a read()): our mark, then one HELP/TYPE block per family. ``zero``:
    {probe: [errno names]} shown as 0 until counted (the errnos a probe reports: a series that appears
    with its first count would hide that count from increase() and rate())."""
    name = snap['module']
    zero = zero or {}
    families = []

    def family(metric, kind, text, samples):
        lines = ['# HELP %s%s %s' % (PREFIX, metric, text), '# TYPE %s%s %s' % (PREFIX, metric, kind)]
        lines += ['%s%s%s %s' % (PREFIX, metric if suffix is None else suffix, _labels(**labels), value)
                  for suffix, labels, value in samples]
        families.append('\n'.join(lines))

    family('info', 'gauge', 'What runs on this host: backend, kernel, spec_hash (always 1).',
           [(None, dict(module=name, backend=snap['backend'], kernel=snap['kernel'], spec_hash=snap['spec_hash']), 1)])
    family('loaded', 'gauge', 'Whether the probes of this module run now (1) or not (0).',
           [(None, dict(module=name), int(bool(snap['loaded'])))])
    probes = sorted(snap['probes'].items())
    for key, metric, text in PROBE_COUNTERS:
        family(metric, 'counter', text, [(None, dict(module=name, probe=p, function=v.get('function') or ''), v[key])
                                         for p, v in probes if isinstance(v.get(key), int)])
    family('errno_total', 'counter', 'Matches by the errno returned (exact, kept in the kernel).',
           [(None, dict(module=name, probe=p, function=v.get('function') or '', errno=e), n)
            for p, v in probes for e, n in sorted(dict(dict.fromkeys(zero.get(p, ()), 0), **(v.get('errnos') or {})).items())])
    samples = []
    for p, v in probes:
        lat = v.get('latency')
        if not lat:
            continue
        base = dict(module=name, probe=p, function=v.get('function') or '')
        counts = dict((le, n) for le, n in lat['buckets'])
        seen = 0
        for b in range(LATENCY_BUCKETS):
            seen += counts.get((1 << b) - 1, 0)
            samples.append(('latency_seconds_bucket', dict(base, le=_seconds((1 << b) - 1)), seen))
        samples.append(('latency_seconds_bucket', dict(base, le='+Inf'), lat['count']))
        samples.append(('latency_seconds_sum', base, _seconds(lat['sum_ns'])))
        samples.append(('latency_seconds_count', base, lat['count']))
    family('latency_seconds', 'histogram', 'Time from entry to return of every call (probes with latency: true).', samples)
    family('events_lost_total', 'counter', 'Events the kernel overwrote before this reader read them, this boot.',
           [(None, dict(module=name, reader=r), n) for r, n in sorted(snap['lost'].items())])
    return mark_line(name) + '\n'.join(families) + '\n'


def write(name, state_dir, directory, root='/', now=None, zero=None):
    """Read and write the textfile of ``name`` into ``directory`` (on the host, below ``root``); returns
    the snapshot. Refuses (OSError) to replace a file of that name that is not ours. ``zero``: see render()."""
    path = os.path.join(root, textfile(directory, name).lstrip('/'))
    if os.path.lexists(path) and not is_ours(path, name):
        raise OSError('%s exists and is not ours (its first line is not our mark): not replaced' % path)
    snap = read(name, state_dir, root)
    snap['time'] = now if now is not None else time.time()
    host_state.atomic_write(path, render(snap, zero).encode('utf-8'), 0o644)
    return snap


def parse(text):
    """{(metric, frozenset(labels.items())): value} of a textfile (for the tests and the comparison
    with the facts); comments skipped."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        head, value = line.rsplit(' ', 1)
        metric, dummy, rest = head.partition('{')
        labels = {}
        rest = rest[:-1] if rest.endswith('}') else rest
        while rest:
            key, dummy, rest = rest.partition('="')
            val, i = [], 0
            while rest[i] != '"':
                if rest[i] == '\\':
                    val.append({'n': '\n'}.get(rest[i + 1], rest[i + 1]))
                    i += 2
                else:
                    val.append(rest[i])
                    i += 1
            labels[key] = ''.join(val)
            rest = rest[i + 1:].lstrip(',')
        out[(metric, frozenset(labels.items()))] = float(value)
    return out


def check_zero(value, field='errnos'):
    """{probe: [errno names]} checked (names.InvalidValue): probe names and errno names we know."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise names.InvalidValue('%s: must be a mapping of probe names to lists of errno names' % field)
    known = set(ERRNO_NAMES.values())
    out = {}
    for probe, errnos in value.items():
        if not isinstance(probe, str) or not PROBE_NAME_RE.fullmatch(probe):
            raise names.InvalidValue('%s: %s is not a probe name' % (field, names.shown(str(probe))))
        if not isinstance(errnos, list) or not all(isinstance(e, str) and e in known for e in errnos):
            raise names.InvalidValue('%s: %s must be a list of errno names (such as ENOSPC)' % (field, probe))
        out[probe] = sorted(set(errnos))
    return out


def main(name, state_dir):
    """The timer's program: the directory from ``<state_dir>/<name>.metrics.json`` (probe_metrics), then
    write(). Returns the exit status; a failure is one line on stderr (the journal)."""
    import sys
    config = read_json(host_state.state_file(state_dir, name, 'metrics-config')) or {}
    if config.get('mark') != names.MARK or not isinstance(config.get('dir'), str):
        sys.stderr.write('kprobes.fleet %s: no metrics configuration of ours in %s\n' % (name, state_dir))
        return 1
    try:
        write(name, state_dir, names.host_path(config['dir'], 'dir'), zero=check_zero(config.get('errnos')))
    except (IOError, OSError, names.InvalidValue) as e:
        sys.stderr.write('kprobes.fleet %s: metrics not written: %s\n' % (name, e))
        return 1
    return 0
