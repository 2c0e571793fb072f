# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracefs backend against a fake tracefs tree that behaves like the kernel (6.1 formats)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import json
import os
import re
import shutil
import stat

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import (
    host_state, kmsg, names, probe_spec, tracefs_buffer, tracefs_commands, tracefs_counters, tracefs_probes, tracefs_support)
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import COUNTERS
from fakes import Failed, FakeModule

NAME = 'kprobes_fleet'
STATE_DIR = '/var/lib/kprobes-fleet/state'
HASH = '3f2a9c0d11e4b7a5'
HASH2 = '0d11e4b7a53f2a9c'
SYMBOLS = ('do_filp_open', 'vfs_write', 'hrtimer_nanosleep', 'vfs_read', 'do_mkdirat')
TRIGGER_HEADER = ('# Available triggers:\n# traceon traceoff snapshot stacktrace enable_event '
                  'disable_event enable_hist disable_hist hist\n')
ERROR_WORDS = {errno.ENOENT: 'Invalid probed address or symbol', errno.EINVAL: 'Maxactive is too big',
               errno.EEXIST: 'There is already the exact same probe event'}


def resolved(*names_):
    probes = []
    for n in names_:
        raw = n if isinstance(n, dict) else probe_spec.preset(n) if n in probe_spec.PRESETS else None
        probes.append(raw)
    normalized = probe_spec.normalize(probes)
    return probe_spec.resolve(normalized, dict((p['name'], probe_spec.candidate_symbols(p)[0]) for p in normalized))


SLEEPERS = {'name': 'sleepers', 'function': 'hrtimer_nanosleep', 'returns': 'long', 'report': 'any',
            'maxactive': 1, 'log': False}
DEFAULT = ('open_failures', 'disk_full', SLEEPERS)


def ret_filter_ok(text, ret):
    """Evaluate one of our ftrace filters in Python (only our grammar: ret <op> N, &&, ||, ())."""
    if text is None:
        return True
    expr = text.replace('&&', ' and ').replace('||', ' or ')
    assert re.fullmatch(r'[ret<>=!0-9 ()andor-]*', expr), text
    return eval(expr, {}, {'ret': ret})  # pylint: disable=eval-used


class FakeKernel(tracefs_commands.TracefsIO):
    """A tracefs tree under ``root`` and the kernel behind it: definitions, instances, triggers.

    Writes go through the real TracefsIO (so the open flags are the real ones) and are then
    "executed" the way the kernel does (verified on 6.1, see docs/architecture.md)."""

    def __init__(self, root, symbols=SYMBOLS, mount='sys/kernel/tracing', hist=True):
        self.root = root
        self.tr = os.path.join(root, mount)
        self.symbols = set(symbols)
        self.hist = hist
        self.defs = []          # [(group, event, parsed)] in kprobe_events order
        self.counts = {}        # (group, event) -> [hits, missed]
        self.triggers = {}      # (instance, group, event) -> [trigger text]
        self.hists = {}         # (instance, group, event) -> {key: count}
        self.filters = {}
        self.enables = {}
        self.stats = {}         # (instance, cpu) -> {entries, overrun, dropped}
        self.writes = []
        for d in ('instances', 'events/sched/sched_switch'):
            os.makedirs(os.path.join(self.tr, d))
        self._event_files(os.path.join(self.tr, 'events/sched/sched_switch'))
        for f in ('error_log', 'trace', 'README'):
            open(os.path.join(self.tr, f), 'w').close()
        self.render()

    # -- files the kernel shows ------------------------------------------------------------
    def _event_files(self, d):
        for f, text in (('enable', '0\n'), ('filter', 'none\n'), ('trigger', TRIGGER_HEADER), ('hist', ''),
                        ('format', 'name: x\n')):
            if f == 'hist' and not self.hist:
                continue
            with open(os.path.join(d, f), 'w') as fh:
                fh.write(text)

    def instances(self):
        return sorted(os.listdir(os.path.join(self.tr, 'instances')))

    def bases(self):
        return [(None, self.tr)] + [(i, os.path.join(self.tr, 'instances', i)) for i in self.instances()]

    def render(self):
        with open(os.path.join(self.tr, 'kprobe_events'), 'w') as f:
            for d in (x[2] for x in self.defs):
                f.write(('%s%s:%s/%s %s %s' % (d['kind'], d['maxactive'] or '', d['group'], d['event'],
                                               d['target'], d['args'])).rstrip() + '\n')
        with open(os.path.join(self.tr, 'kprobe_profile'), 'w') as f:
            for g, e in ((x[0], x[1]) for x in self.defs):
                hits, missed = self.counts[(g, e)]
                f.write('  %-44s %15d %15d\n' % (e, hits, missed))
        for inst, base in self.bases():
            for g, e in ((x[0], x[1]) for x in self.defs):
                d = os.path.join(base, 'events', g, e)
                if not os.path.isdir(d):
                    continue
                key = (inst, g, e)
                trig = self.triggers.get(key, [])
                with open(os.path.join(d, 'trigger'), 'w') as f:
                    f.write(''.join(self._shown(t) + '\n' for t in trig) if trig else TRIGGER_HEADER)
                with open(os.path.join(d, 'filter'), 'w') as f:
                    f.write((self.filters.get(key) or 'none') + '\n')
                with open(os.path.join(d, 'enable'), 'w') as f:
                    f.write(('1' if self.enables.get(key) else '0') + ('*' if trig else '') + '\n')
                if self.hist:
                    with open(os.path.join(d, 'hist'), 'w') as f:
                        f.write(self._hist(key))

    @staticmethod
    def _shown(trigger):
        head, sep, test = trigger.partition(' if ')
        return head + ':sort=hitcount:size=2048' + sep + test + ' [active]'

    def _hist(self, key):
        trig = self.triggers.get(key)
        if not trig:
            return ''
        counts = self.hists.get(key, {})
        lines = ['# event histogram', '#', '# trigger info: %s' % self._shown(trig[0]), '#', '']
        for k, n in sorted(counts.items(), key=lambda kv: kv[1]):
            shown = k + (1 << 64) if k < 0 else k
            field = 'ret' if 'keys=ret' in trig[0] else 'common_type'
            lines.append('{ %s: %20d } hitcount: %10d' % (field, shown, n))
        lines += ['', 'Totals:', '    Hits: %d' % sum(counts.values()), '    Entries: %d' % len(counts),
                  '    Dropped: 0', '']
        return '\n'.join(lines)

    def error(self, code, command):
        with open(os.path.join(self.tr, 'error_log'), 'a') as f:
            f.write('[   92.576171] trace_kprobe: error: %s\n  Command: %s\n             ^\n'
                    % (ERROR_WORDS[code], command))
        raise OSError(code, os.strerror(code))

    # -- the four writes ---------------------------------------------------------------------
    def append(self, path, text):
        self.writes.append(('append', os.path.relpath(path, self.tr), text))
        super(FakeKernel, self).append(path, text)
        try:
            if path == os.path.join(self.tr, 'kprobe_events'):
                self._kprobe_events(text)
            elif os.path.basename(path) == 'trigger':
                self._trigger(path, text)
            else:
                raise AssertionError('append to %s' % path)
        finally:
            self.render()

    def _kprobe_events(self, text):
        if text.startswith('-:'):
            g, e = text[2:].split('/')
            if any(self.enables.get((i, g, e)) or self.triggers.get((i, g, e)) for i in (b[0] for b in self.bases())):
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
            self.defs = [x for x in self.defs if (x[0], x[1]) != (g, e)]
            for base in (b[1] for b in self.bases()):
                d = os.path.join(base, 'events', g, e)
                if os.path.isdir(d):
                    shutil.rmtree(d)
                if os.path.isdir(os.path.dirname(d)) and not [x for x in os.listdir(os.path.dirname(d))
                                                              if x not in ('enable', 'filter')]:
                    shutil.rmtree(os.path.dirname(d))
            return
        d = tracefs_commands.parse_definition(text)
        assert d is not None, text
        if d['maxactive'] and d['maxactive'] > 4096:
            self.error(errno.EINVAL, text)
        if any((x[0], x[1]) == (d['group'], d['event']) for x in self.defs):
            self.error(errno.EEXIST, text)
        if d['target'] not in self.symbols:
            self.error(errno.ENOENT, text)
        self.defs.append((d['group'], d['event'], d))
        self.counts[(d['group'], d['event'])] = [0, 0]
        for base in (b[1] for b in self.bases()):
            self._event_dir(base, d['group'], d['event'])

    def _event_dir(self, base, g, e):
        gd = os.path.join(base, 'events', g)
        if not os.path.isdir(gd):
            os.makedirs(gd)
            for f, t in (('enable', '0\n'), ('filter', 'none\n')):
                with open(os.path.join(gd, f), 'w') as fh:
                    fh.write(t)
        os.mkdir(os.path.join(gd, e))
        self._event_files(os.path.join(gd, e))

    def _key(self, path):
        d = os.path.dirname(path)
        e, g = os.path.basename(d), os.path.basename(os.path.dirname(d))
        rel = os.path.relpath(d, self.tr).split(os.sep)
        inst = rel[1] if rel[0] == 'instances' else None
        return (inst, g, e)

    def _trigger(self, path, text):
        key = self._key(path)
        trig = self.triggers.setdefault(key, [])
        if text.startswith('!'):
            if text[1:] in trig:
                trig.remove(text[1:])
                self.hists.pop(key, None)
            return
        if text in trig:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        trig.append(text)

    def replace(self, path, text):
        self.writes.append(('replace', os.path.relpath(path, self.tr), text))
        super(FakeKernel, self).replace(path, text)
        name = os.path.basename(path)
        if name in ('enable', 'filter'):
            key = self._key(path)
            if name == 'enable':
                self.enables[key] = text == '1'
            else:
                self.filters[key] = None if text == '0' else text
        self.render()

    def mkdir(self, path):
        self.writes.append(('mkdir', os.path.relpath(path, self.tr), None))
        super(FakeKernel, self).mkdir(path)
        for f, t in (('trace', '# tracer: nop\n#\n'), ('trace_clock', '[local] global mono\n'),
                     ('buffer_size_kb', '1410\n')):
            with open(os.path.join(path, f), 'w') as fh:
                fh.write(t)
        os.makedirs(os.path.join(path, 'options'))
        open(os.path.join(path, 'options', 'pause-on-trace'), 'w').close()
        for cpu in (0, 1):
            os.makedirs(os.path.join(path, 'per_cpu', 'cpu%d' % cpu))
            self.set_stats(os.path.basename(path), cpu)
        open(os.path.join(path, 'per_cpu', 'stats-not-a-cpu'), 'w').close()
        for g, e in ((x[0], x[1]) for x in self.defs):
            self._event_dir(path, g, e)
        self.render()

    def rmdir(self, path):
        self.writes.append(('rmdir', os.path.relpath(path, self.tr), None))
        inst = os.path.basename(path)
        for table in (self.triggers, self.filters, self.enables, self.hists, self.stats):
            for key in [k for k in table if k[0] == inst]:
                del table[key]
        shutil.rmtree(path)  # the kernel removes an instance's files with it

    # -- what happens in the kernel ----------------------------------------------------------
    def set_stats(self, inst, cpu, entries=0, overrun=0, dropped=0):
        self.stats[(inst, cpu)] = {'entries': entries, 'overrun': overrun, 'dropped': dropped}
        with open(os.path.join(self.tr, 'instances', inst, 'per_cpu', 'cpu%d' % cpu, 'stats'), 'w') as f:
            f.write('entries: %d\noverrun: %d\ncommit overrun: 0\nbytes: 0\noldest event ts:     0.000000\n'
                    'now ts:    52.607016\ndropped events: %d\nread events: 0\n' % (entries, overrun, dropped))

    def fire(self, event, ret, comm='cat', pid=384, ts='57.914390', cpu=1, group=NAME, missed=False):
        """One return of the probed function, through every instance that listens."""
        key = (group, event)
        self.counts[key][0 if not missed else 1] += 1
        if missed:
            self.render()
            return
        for inst, base in self.bases():
            k = (inst, group, event)
            for trig in self.triggers.get(k, []):
                head, test = trig.partition(' if ')[::2]
                if ret_filter_ok(test or None, ret):
                    bucket = ret if 'keys=ret' in head else 1623
                    self.hists.setdefault(k, {})[bucket] = self.hists.get(k, {}).get(bucket, 0) + 1
            if inst is not None and self.enables.get(k) and ret_filter_ok(self.filters.get(k), ret):
                st = self.stats[(inst, cpu)]
                self.set_stats(inst, cpu, st['entries'] + 1, st['overrun'], st['dropped'])
                with open(os.path.join(base, 'trace'), 'a') as f:
                    f.write('%16s-%-7d [%03d] ..... %12s: %s: (do_sys_openat2+0xaf/0x170 <- x) ret=%d\n'
                            % (comm, pid, cpu, ts, event, ret))
        self.render()


class Host(object):
    def __init__(self, tmp_path, **kw):
        self.root = str(tmp_path / 'root')
        os.makedirs(os.path.join(self.root, 'proc/sys/kernel/random'))
        self.boot('boot-1')
        self.kernel = FakeKernel(self.root, **kw)
        self.state_dir = os.path.join(self.root, STATE_DIR.lstrip('/'))
        # the working directory as kprobes.fleet.host_dir leaves it: marked, so state may be written
        os.makedirs(os.path.dirname(self.state_dir), 0o700)
        with open(os.path.join(os.path.dirname(self.state_dir), '.kprobes-fleet'), 'w') as f:
            f.write('kprobes.fleet\n')

    def boot(self, boot_id):
        with open(os.path.join(self.root, 'proc/sys/kernel/random/boot_id'), 'w') as f:
            f.write(boot_id + '\n')

    def reboot(self, boot_id='boot-2'):
        """Dynamic events and instances are gone after a reboot."""
        self.boot(boot_id)
        k = self.kernel
        for inst in k.instances():
            shutil.rmtree(os.path.join(k.tr, 'instances', inst))
        for g in set(x[0] for x in k.defs):
            shutil.rmtree(os.path.join(k.tr, 'events', g), ignore_errors=True)
        k.defs, k.triggers, k.hists, k.filters, k.enables = [], {}, {}, {}, {}
        k.render()

    def backend(self, name=NAME):
        return tracefs_probes.TraceProbes(name, root=self.root, state_dir=STATE_DIR, io=self.kernel)

    def path(self, rel):
        return os.path.join(self.kernel.tr, rel)

    def read(self, rel):
        with open(self.path(rel)) as f:
            return f.read()

    def state(self):
        with open(host_state.state_file(self.state_dir, NAME, 'tracefs')) as f:
            return json.load(f)


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


@pytest.fixture
def opens(monkeypatch):
    """Every os.open: (path, flags)."""
    calls = []
    real = os.open

    def spy(path, flags, *args, **kwargs):
        calls.append((str(path), flags))
        return real(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, 'open', spy)
    return calls


# -- what we write -----------------------------------------------------------------------------
def probe(**kw):
    base = {'name': 'p', 'function': 'f', 'returns': 'long', 'report': 'negative', 'errnos': [],
            'maxactive': 64, 'log': True}
    base.update(kw)
    return base


@pytest.mark.parametrize('kw,line', [
    ({}, 'r64:g/p f ret=$retval:s64'),
    ({'returns': 'int', 'maxactive': 1}, 'r1:g/p f ret=$retval:s32'),
    ({'returns': 'errptr', 'maxactive': 4096, 'name': 'open_failures', 'function': 'do_filp_open'},
     'r4096:g/open_failures do_filp_open ret=$retval:s64'),
])
def test_definition(kw, line):
    assert tracefs_commands.definition('g', probe(**kw)) == line


@pytest.mark.parametrize('kw,text', [
    ({}, 'ret < 0'),
    ({'report': 'nonzero'}, 'ret != 0'),
    ({'report': 'any'}, None),
    ({'report': 'errno', 'errnos': ['EDQUOT', 'ENOSPC']}, 'ret == -28 || ret == -122'),
    ({'report': 'errno', 'errnos': ['ENOENT'], 'returns': 'int'}, 'ret == -2'),
    ({'returns': 'errptr'}, 'ret >= -4095 && ret < 0'),
    ({'returns': 'errptr', 'report': 'nonzero'}, 'ret >= -4095 && ret < 0'),
    ({'returns': 'errptr', 'report': 'any'}, None),
    ({'returns': 'errptr', 'report': 'errno', 'errnos': ['EACCES', 'ENOENT']},
     'ret >= -4095 && ret < 0 && (ret == -2 || ret == -13)'),
    ({'returns': 'errptr', 'report': 'errno', 'errnos': ['ENOENT']}, 'ret >= -4095 && ret < 0 && ret == -2'),
    ({'report': 'errno', 'errnos': ['ERESTARTSYS']}, 'ret == -512'),
])
def test_report_filter(kw, text):
    assert tracefs_commands.report_filter(probe(**kw)) == text


def test_errptr_filters_refuse_kernel_pointers():
    for kw in ({'report': 'negative'}, {'report': 'nonzero'},
               {'report': 'errno', 'errnos': ['ENOENT', 'ENOSPC']}):
        test = tracefs_commands.report_filter(probe(returns='errptr', **kw))
        assert not ret_filter_ok(test, -126954941909504)  # a kernel pointer, negative as s64
        assert not ret_filter_ok(test, -4096)
        assert ret_filter_ok(test, -2)


def test_errno_numbers_come_from_the_spec_table():
    every = sorted(n for n in probe_spec.ERRNO if n not in probe_spec.ERRNO_ALIASES)
    text = tracefs_commands.report_filter(probe(report='errno', errnos=every))
    assert sorted(int(n) for n in re.findall(r'-([0-9]+)', text)) == sorted(set(probe_spec.ERRNO[n] for n in every))
    assert len(text) < 4096  # one write of a filter or trigger is at most a page


def test_hist_trigger():
    assert tracefs_commands.hist_trigger(probe()) == 'hist:keys=ret:vals=hitcount if ret < 0'
    assert tracefs_commands.hist_trigger(probe(report='any', returns='errptr')) == 'hist:keys=common_type:vals=hitcount'


# -- what we read ------------------------------------------------------------------------------
def test_parse_hist_signed_keys_and_totals():
    text = ('# event histogram\n#\n# trigger info: hist:keys=ret:vals=hitcount:sort=hitcount:size=2048 '
            'if ret == -28 || ret == -122 [active]\n#\n\n'
            '{ ret: 18446744073709551588 } hitcount:          3\n'
            '{ ret: 18446744073709551494 } hitcount:          2\n\n'
            'Totals:\n    Hits: 5\n    Entries: 2\n    Dropped: 4\n')
    h = tracefs_counters.parse_hist(text)
    assert h['counts'] == {-28: 3, -122: 2}
    assert (h['hits'], h['dropped'], h['matches']) == (5, 4, 9)
    assert tracefs_counters.parse_hist('')['matches'] is None
    assert tracefs_counters.parse_hist('\nTotals:\n    Hits: 0\n    Entries: 0\n    Dropped: 0\n')['matches'] == 0
    assert tracefs_counters.parse_hist('{ common_type:       1623 } hitcount:          2\n')['matches'] == 2


def test_profile_paired_by_position_when_names_repeat():
    events = 'r4:aaa/mk do_mkdirat ret=$retval:s32\nr5:bbb/mk do_mkdirat ret=$retval:s32\np:other/x vfs_read\n'
    profile = '  mk   1   2\n  mk   30   40\n  x   5   0\n'
    assert tracefs_counters.profile_counts(events, profile) == {('aaa', 'mk'): (1, 2), ('bbb', 'mk'): (30, 40),
                                                                ('other', 'x'): (5, 0)}
    # the list changed between the reads: only names unique in both files are trusted
    assert tracefs_counters.profile_counts(events, '  mk   1   2\n  x   5   0\n') == {('other', 'x'): (5, 0)}
    assert tracefs_counters.profile_counts('r:g/a f\n', '  g/a  7  1\n') == {('g', 'a'): (7, 1)}


@pytest.mark.parametrize('line,comm,pid,cpu,ts,event,ret', [
    ('             cat-384     [001] .....    57.914390: open_failures: (do_sys_openat2+0xaf/0x170 <- '
     'do_filp_open) ret=-2', 'cat', 384, 1, 57914390, 'open_failures', -2),
    ('  we ird-1 [000]-467     (    467) [001] .....   125.748364: mk: (__x64_sys_mkdir+0x45/0x60 <- '
     'do_mkdirat) ret=-17', 'we ird-1 [000]', 467, 1, 125748364, 'mk', -17),
    ('  my-prog -x y-12 [003] d..1.  1.000001: disk_full: (ksys_write+0x73/0xf0 <- vfs_write) ret=-28',
     'my-prog -x y', 12, 3, 1000001, 'disk_full', -28),
    ('           mkdir-466     (    466) [000]    125.444520: mk: (x <- do_mkdirat) ret=0',
     'mkdir', 466, 0, 125444520, 'mk', 0),
    ('           <...>-9  [000] ...1.  3.5: sleepers: (0xffffffff81000000 <- hrtimer_nanosleep) ret=0',
     '<...>', 9, 0, 3500000, 'sleepers', 0),
    ('   kworker/u4:2-77  [000] ..... 4.123456789: x: (a <- b) ret=5', 'kworker/u4:2', 77, 0, 4123456, 'x', 5),
])
def test_parse_trace_line(line, comm, pid, cpu, ts, event, ret):
    assert tracefs_buffer.parse_trace_line(line) == {'comm': comm, 'pid': pid, 'cpu': cpu, 'ts_usec': ts,
                                                     'event': event, 'ret': ret}


@pytest.mark.parametrize('line', [
    '# tracer: nop', '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION', '',
    'CPU:1 [LOST 1200 EVENTS]', '  cat-1 [000] ..... 1.0: sched_switch: prev_comm=cat prev_pid=1',
    '  cat-1 [000] ..... 1.0: x: (a <- b) ret=0xffff',
])
def test_parse_trace_line_other_lines(line):
    assert tracefs_buffer.parse_trace_line(line) is None


def test_error_log_reason():
    log = ('[   92.576171] trace_kprobe: error: Invalid probed address or symbol\n'
           '  Command: r:g/nosuch no_such ret=$retval:s64\n                             ^\n'
           '[   92.577966] trace_kprobe: error: Maxactive is too big\n'
           '  Command: r8192:g/big vfs_write ret=$retval:s64\n            ^\n')
    assert tracefs_commands.error_log_reason(log, 'r:g/nosuch no_such ret=$retval:s64') == 'Invalid probed address or symbol'
    assert tracefs_commands.error_log_reason(log, 'r8192:g/big vfs_write ret=$retval:s64') == 'Maxactive is too big'
    assert tracefs_commands.error_log_reason(log, 'r:g/other x') is None


def test_trigger_in_place_and_enable():
    shown = 'hist:keys=ret:vals=hitcount:sort=hitcount:size=2048 if ret < 0 [active]\n'
    assert tracefs_commands.trigger_in_place(shown, 'hist:keys=ret:vals=hitcount if ret < 0')
    assert not tracefs_commands.trigger_in_place(shown, 'hist:keys=ret:vals=hitcount if ret != 0')
    assert not tracefs_commands.trigger_in_place(TRIGGER_HEADER, 'hist:keys=ret:vals=hitcount if ret < 0')
    assert tracefs_commands.enabled('1*\n') and tracefs_commands.enabled('1\n') and not tracefs_commands.enabled('0*\n')


# -- availability ------------------------------------------------------------------------------
def test_availability_usable(host):
    a = tracefs_support.availability(host.root, 'none')
    assert a == {'usable': True, 'reason': None, 'path': host.kernel.tr, 'hist': True}
    assert tracefs_support.find_tracefs(host.root) == host.kernel.tr


def test_availability_debugfs_mount(tmp_path):
    h = Host(tmp_path, mount='sys/kernel/debug/tracing')
    os.makedirs(os.path.join(h.root, 'sys/kernel/tracing'))  # the empty mount point
    assert tracefs_support.find_tracefs(h.root) == os.path.join(h.root, 'sys/kernel/debug/tracing')
    assert tracefs_support.availability(h.root, 'integrity')['usable'] is True


def test_availability_refusals(tmp_path, host):
    assert 'confidentiality' in tracefs_support.availability(host.root, 'confidentiality')['reason']
    sec = os.path.join(host.root, 'sys/kernel/security')
    os.makedirs(sec)
    with open(os.path.join(sec, 'lockdown'), 'w') as f:
        f.write('none integrity [confidentiality]\n')
    assert tracefs_support.availability(host.root)['usable'] is False  # read below root
    os.unlink(host.path('kprobe_events'))
    a = tracefs_support.availability(host.root, 'none')
    assert a['usable'] is False and a['path'] is None and 'CONFIG_KPROBE_EVENTS' in a['reason']
    bare = tmp_path / 'bare'
    (bare / 'sys/kernel/tracing').mkdir(parents=True)
    assert 'not mounted' in tracefs_support.availability(str(bare), 'none')['reason']
    (bare / 'proc').mkdir()
    (bare / 'proc/filesystems').write_text('nodev\tsysfs\nnodev\tproc\n\text4\n')
    assert 'CONFIG_TRACING' in tracefs_support.availability(str(bare), 'none')['reason']


def test_availability_without_hist_triggers(tmp_path):
    h = Host(tmp_path, hist=False)  # Debian 11's 5.10: counting instances instead
    assert tracefs_support.availability(h.root, 'none') == {'usable': True, 'reason': None, 'path': h.kernel.tr,
                                                            'hist': False}
    shutil.rmtree(h.path('events/sched'))  # no event to look at: the README decides
    with open(h.path('README'), 'w') as f:
        f.write('      hist trigger\t- If set, event hits are aggregated into a hash table\n'
                '\t    Format: hist:keys=<field1[,field2,...]>\n')
    assert tracefs_support.availability(h.root, 'none')['hist'] is True


# -- present / absent ------------------------------------------------------------------------
def test_present_creates_everything(host, opens):
    r = host.backend().present(resolved(*DEFAULT), HASH, 'lockdown=integrity')
    assert r['changed'] is True and r['spec_hash'] == HASH and r['previous_spec_hash'] is None
    assert r['probes'] == {'open_failures': {'function': 'do_filp_open', 'registered': 1},
                           'disk_full': {'function': 'vfs_write', 'registered': 1},
                           'sleepers': {'function': 'hrtimer_nanosleep', 'registered': 1}}
    assert host.read('kprobe_events') == (
        'r256:kprobes_fleet/open_failures do_filp_open ret=$retval:s64\n'
        'r1024:kprobes_fleet/disk_full vfs_write ret=$retval:s64\n'
        'r1:kprobes_fleet/sleepers hrtimer_nanosleep ret=$retval:s64\n')
    inst = 'instances/%s/' % NAME
    ev = inst + 'events/kprobes_fleet/'
    assert host.read(ev + 'open_failures/filter') == 'ret >= -4095 && ret < 0\n'
    assert host.read(ev + 'disk_full/filter') == 'ret == -28 || ret == -122\n'
    assert host.read(ev + 'open_failures/enable') == '1*\n'
    assert host.read(ev + 'sleepers/enable') == '0*\n'  # log: false: counted, not in the buffer
    assert host.read(ev + 'sleepers/filter') == 'none\n'
    assert 'hist:keys=ret:vals=hitcount:sort=hitcount:size=2048 if ret == -28 || ret == -122 [active]' \
        in host.read(ev + 'disk_full/trigger')
    assert host.read(inst + 'trace_clock') == 'mono\n'
    assert host.read(inst + 'buffer_size_kb') == '1024\n'
    assert host.read(inst + 'options/pause-on-trace') == '0\n'
    # nothing of the top-level buffer was touched
    assert host.read('events/kprobes_fleet/disk_full/enable') == '0\n'
    assert host.read('events/kprobes_fleet/disk_full/trigger') == TRIGGER_HEADER
    state = host.state()
    assert (state['boot_id'], state['spec_hash'], state['reason'], state['group'], state['instance']) == \
        ('boot-1', HASH, 'lockdown=integrity', NAME, NAME)
    assert [e['name'] for e in state['events']] == ['open_failures', 'disk_full', 'sleepers']
    assert 'pending' not in state
    assert stat.S_IMODE(os.stat(host_state.state_file(host.state_dir, NAME, 'tracefs')).st_mode) == 0o600


def test_writes_never_truncate_kprobe_events_or_triggers(host, opens):
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, None)
    b.present(resolved('disk_full'), HASH2, None)
    b.absent()
    appends = [(p, f) for p, f in opens if p.endswith('/kprobe_events') or p.endswith('/trigger')]
    assert len(appends) >= 10
    for path, flags in appends:
        assert flags & os.O_APPEND, path
        assert not flags & os.O_TRUNC, path
        assert flags & (os.O_WRONLY | os.O_RDWR), path


def test_real_io_appends_and_replaces(tmp_path):
    f = tmp_path / 'kprobe_events'
    f.write_text('p:other/x vfs_read\n')
    io = tracefs_commands.TracefsIO()
    io.append(str(f), 'r8:g/a f ret=$retval:s64')
    assert f.read_text() == 'p:other/x vfs_read\nr8:g/a f ret=$retval:s64\n'
    flt = tmp_path / 'filter'
    flt.write_text('none\n')
    io.replace(str(flt), 'ret < 0')
    assert flt.read_text() == 'ret < 0\n'


def test_present_is_idempotent(host):
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, 'why')
    host.kernel.writes[:] = []
    before = host.state()
    r = b.present(resolved(*DEFAULT), HASH, 'why')
    assert r['changed'] is False and r['previous_spec_hash'] == HASH
    assert r['probes']['disk_full'] == {'function': 'vfs_write', 'registered': 1}
    assert host.kernel.writes == []
    assert host.state() == before
    # a new reason is recorded without touching the kernel
    r = b.present(resolved(*DEFAULT), HASH, 'other reason')
    assert r['changed'] is True and host.kernel.writes == [] and host.state()['reason'] == 'other reason'


def test_present_repairs_what_is_missing(host):
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, None)
    host.kernel.replace(host.path('instances/%s/events/%s/disk_full/enable' % (NAME, NAME)), '0')
    assert b.status()['complete'] is False
    r = b.present(resolved(*DEFAULT), HASH, None)
    assert r['changed'] is True
    assert b.status()['complete'] is True
    assert host.read('instances/%s/events/%s/disk_full/enable' % (NAME, NAME)) == '1*\n'


def test_present_new_spec_replaces_ours_only(host):
    host.kernel.append(host.path('kprobe_events'), 'p:other/x vfs_read')
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, None)
    r = b.present(resolved('disk_full'), HASH2, None)
    assert r['changed'] is True and r['previous_spec_hash'] == HASH
    assert host.read('kprobe_events') == ('p:other/x vfs_read\n'
                                          'r1024:kprobes_fleet/disk_full vfs_write ret=$retval:s64\n')
    assert [e['name'] for e in host.state()['events']] == ['disk_full']


def test_check_mode_writes_nothing(host):
    b = host.backend()
    r = b.present(resolved(*DEFAULT), HASH, None, check_mode=True)
    assert r['changed'] is True and 'would create' in r['msg']
    assert host.kernel.writes == [] and not os.path.exists(host.state_dir)
    b.present(resolved(*DEFAULT), HASH, None)
    host.kernel.writes[:] = []
    assert b.present(resolved('disk_full'), HASH2, None, check_mode=True)['changed'] is True
    r = b.absent(check_mode=True)
    assert r['changed'] is True and 'instance kprobes_fleet' in r['removed']
    assert host.kernel.writes == [] and host.state()['spec_hash'] == HASH


def test_absent_touches_only_what_is_ours(host):
    k = host.kernel
    k.append(host.path('kprobe_events'), 'p:other/x vfs_read')
    k.append(host.path('kprobe_events'), 'r4:other/disk_full vfs_write ret=$retval:s64')
    k.mkdir(host.path('instances/theirs'))
    k.replace(host.path('instances/theirs/events/other/x/enable'), '1')
    k.append(host.path('instances/theirs/events/other/disk_full/trigger'), 'hist:keys=ret:vals=hitcount')
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, None)
    # someone enables our event in their own instance for a while, then stops
    r = b.absent()
    assert r['changed'] is True
    assert host.read('kprobe_events') == ('p:other/x vfs_read\nr4:other/disk_full vfs_write ret=$retval:s64\n')
    assert k.instances() == ['theirs']
    assert host.read('instances/theirs/events/other/x/enable') == '1\n'
    assert 'hist:keys=ret' in host.read('instances/theirs/events/other/disk_full/trigger')
    assert not os.path.exists(host.path('events/kprobes_fleet'))
    assert not os.path.exists(host_state.state_file(host.state_dir, NAME, 'tracefs'))
    assert b.absent()['changed'] is False
    assert b.status()['present'] is False


def test_absent_fails_cleanly_when_our_event_is_busy(host):
    b = host.backend()
    b.present(resolved('disk_full'), HASH, None)
    host.kernel.mkdir(host.path('instances/theirs'))
    host.kernel.replace(host.path('instances/theirs/events/kprobes_fleet/disk_full/enable'), '1')
    with pytest.raises(tracefs_support.TracefsError) as e:
        b.absent()
    assert 'disk_full' in str(e.value) and 'EBUSY' in str(e.value)
    assert [ev['name'] for ev in host.state()['events']] == ['disk_full']  # still on record
    host.kernel.replace(host.path('instances/theirs/events/kprobes_fleet/disk_full/enable'), '0')
    assert b.absent()['changed'] is True
    assert host.read('kprobe_events') == ''


@pytest.mark.parametrize('setup', ['foreign_event', 'foreign_instance', 'kernel_group'])
def test_present_refuses_a_name_that_is_not_ours(host, setup):
    k = host.kernel
    if setup == 'foreign_event':
        k.append(host.path('kprobe_events'), 'p:kprobes_fleet/theirs vfs_read')
    elif setup == 'foreign_instance':
        k.mkdir(host.path('instances/kprobes_fleet'))
    before = (host.read('kprobe_events'), k.instances())
    k.writes[:] = []
    name = 'sched' if setup == 'kernel_group' else NAME
    with pytest.raises(tracefs_support.TracefsError) as e:
        host.backend(name).present(resolved('disk_full'), HASH, None)
    assert 'not ours' in str(e.value)
    assert k.writes == [] and (host.read('kprobe_events'), k.instances()) == before
    assert not os.path.exists(host_state.state_file(host.state_dir, name, 'tracefs'))


def test_refused_definition_leaves_nothing_half_done(host):
    bad = dict(probe_spec.preset('disk_full'), name='broken', function='no_such_function')
    with pytest.raises(tracefs_support.TracefsError) as e:
        host.backend().present(resolved('open_failures', bad), HASH, None)
    msg = str(e.value)
    assert 'r1024:kprobes_fleet/broken no_such_function ret=$retval:s64' in msg
    assert 'Invalid probed address or symbol' in msg and 'ENOENT' in msg
    assert host.read('kprobe_events') == ''
    assert host.kernel.instances() == []
    assert not os.path.exists(host_state.state_file(host.state_dir, NAME, 'tracefs'))


def test_refused_definition_recreates_the_previous_probes(host):
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, 'r')
    bad = dict(probe_spec.preset('disk_full'), name='broken', function='no_such_function')
    with pytest.raises(tracefs_support.TracefsError) as e:
        b.present(resolved('open_failures', bad), HASH2, 'r')
    assert 'previous probes (spec_hash %s) were recreated' % HASH in str(e.value)
    st = b.status()
    assert st['complete'] is True and st['spec_hash'] == HASH
    assert b.present(resolved(*DEFAULT), HASH, 'r')['changed'] is False


def test_reboot_makes_the_state_stale(host):
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, None)
    host.reboot()
    st = b.status()
    assert (st['present'], st['stale']) == (False, True)
    k = host.kernel
    k.writes[:] = []
    r = b.present(resolved(*DEFAULT), HASH, None)
    assert r['changed'] is True and r['previous_spec_hash'] is None
    assert not any(w[2] and w[2].startswith('-:') for w in k.writes)  # nothing to remove after a reboot
    assert host.state()['boot_id'] == 'boot-2'
    host.reboot('boot-3')
    k.writes[:] = []
    assert b.absent()['changed'] is True  # forgets the stale record
    assert k.writes == [] and b.absent()['changed'] is False


@pytest.mark.parametrize('kw,field', [
    ({'name': 'x/../y'}, 'name'), ({'state_dir': '/tmp/x'}, 'state_dir'), ({'state_dir': '/'}, 'state_dir')])
def test_backend_refuses_names_and_paths(host, kw, field):
    args = {'name': NAME, 'root': host.root, 'state_dir': STATE_DIR}
    args.update(kw)
    with pytest.raises(names.InvalidValue) as e:
        tracefs_probes.TraceProbes(**args)
    assert str(e.value).startswith(field + ':')


def test_present_validates_the_spec_again(host):
    b = host.backend()
    bad = resolved('disk_full')
    bad[0]['function'] = 'vfs_read'  # not one of the candidates
    with pytest.raises(names.InvalidValue):
        b.present(bad, HASH, None)
    bad = resolved('disk_full')
    bad[0]['maxactive'] = 5000
    with pytest.raises(names.InvalidValue):
        b.present(bad, HASH, None)
    with pytest.raises(names.InvalidValue):
        b.present(resolved('disk_full'), 'nothex', None)
    with pytest.raises(names.InvalidValue):
        b.present([], HASH, None)
    # the one check of a resolved list (probe_spec.check_resolved), with its words
    with pytest.raises(names.InvalidValue, match='probes: must be a list of resolved probes'):
        b.present({'disk_full': 'vfs_write'}, HASH, None)
    with pytest.raises(names.InvalidValue, match='probes: item #2 must be a mapping'):
        b.present(resolved('disk_full') + ['open_failures'], HASH, None)
    assert host.kernel.writes == []


def test_present_refused_when_unusable(host):
    os.makedirs(os.path.join(host.root, 'sys/kernel/security'))
    with open(os.path.join(host.root, 'sys/kernel/security/lockdown'), 'w') as f:
        f.write('none integrity [confidentiality]\n')
    with pytest.raises(tracefs_support.TracefsError) as e:
        host.backend().present(resolved('disk_full'), HASH, None)
    assert 'confidentiality' in str(e.value) and host.kernel.writes == []


# -- collect -----------------------------------------------------------------------------------
def deployed(host):
    b = host.backend()
    b.present(resolved(*DEFAULT), HASH, 'lockdown=integrity')
    return b


def test_collect_counters_and_events(host):
    b = deployed(host)
    k = host.kernel
    for i in range(3):
        k.fire('disk_full', -28, comm='printf', pid=500 + i, ts='60.00000%d' % i)
    k.fire('disk_full', 1, ts='60.1')
    k.fire('open_failures', -2, comm='cat', pid=600, ts='61.5')
    k.fire('open_failures', -126954941909504, ts='61.6')  # a valid pointer: not a match
    k.fire('sleepers', 0, ts='62.0')
    k.fire('sleepers', 0, missed=True)
    got = tracefs_buffer.collect(b)
    p = got['probes']
    assert set(p) == {'open_failures', 'disk_full', 'sleepers'}
    for entry in p.values():
        assert set(entry) == set(COUNTERS) | {'function', 'errnos', 'latency'}
    assert p['disk_full'] == {'function': 'vfs_write', 'hits': 4, 'matches': 3, 'nmissed': 0, 'kp_nmissed': None,
                              'maxactive': 1024, 'registered': 1, 'reg_err': 0, 'suppressed': 0,
                              'filtered': 0, 'exempted': 0, 'errnos': {'ENOSPC': 3}, 'latency': None}
    assert p['open_failures']['errnos'] == {'ENOENT': 1}
    assert p['sleepers']['errnos'] is None  # report: any is keyed by event type, not by return value
    assert (p['open_failures']['hits'], p['open_failures']['matches']) == (2, 1)
    assert (p['sleepers']['hits'], p['sleepers']['matches'], p['sleepers']['nmissed']) == (1, 1, 1)
    assert [(e['probe'], e['ret'], e['errno'], e['pid'], e['comm'], e['seq']) for e in got['events']] == [
        ('disk_full', -28, 'ENOSPC', 500, 'printf', 0), ('disk_full', -28, 'ENOSPC', 501, 'printf', 1),
        ('disk_full', -28, 'ENOSPC', 502, 'printf', 2), ('open_failures', -2, 'ENOENT', 600, 'cat', 3)]
    assert got['events'][0] == {'probe': 'disk_full', 'function': 'vfs_write', 'ret': -28, 'errno': 'ENOSPC',
                                'pid': 500, 'comm': 'printf', 'seq': 0, 'ts_usec': 60000000, 'ts': 60.0,
                                'tid': 500, 'uid': None, 'cgroup': None, 'unit': None}
    assert got['events'][3]['ts'] == 61.5
    assert (got['events_lost'], got['events_dropped']) == (0, 0)
    assert got['cursor'] == {'boot_id': 'boot-1', 'next_seq': 4, 'ts_usec': 61500000, 'at_ts': 1}
    assert (got['spec_hash'], got['reason']) == (HASH, 'lockdown=integrity')


def test_collect_never_reports_an_event_twice(host):
    b = deployed(host)
    k = host.kernel
    k.fire('disk_full', -28, pid=1, ts='10.000001', cpu=0)
    k.fire('disk_full', -28, pid=2, ts='10.000001', cpu=1)
    assert [e['pid'] for e in tracefs_buffer.collect(b)['events']] == [1, 2]
    assert tracefs_buffer.collect(b)['events'] == []
    k.fire('disk_full', -28, pid=3, ts='10.000001', cpu=1)  # same microsecond, later
    k.fire('disk_full', -122, pid=4, ts='10.5')
    got = tracefs_buffer.collect(b)
    assert [(e['pid'], e['seq'], e['errno']) for e in got['events']] == [(3, 2, 'ENOSPC'), (4, 3, 'EDQUOT')]
    assert tracefs_buffer.collect(b)['events'] == []


def test_collect_peek_and_check_mode_do_not_move_the_cursor(host):
    b = deployed(host)
    host.kernel.fire('disk_full', -28, ts='10.0')
    assert len(tracefs_buffer.collect(b, advance=False)['events']) == 1
    assert len(tracefs_buffer.collect(b, check_mode=True)['events']) == 1
    assert not os.path.exists(host_state.state_file(host.state_dir, NAME, 'tracefs-cursor'))
    assert len(tracefs_buffer.collect(b)['events']) == 1
    assert tracefs_buffer.collect(b)['events'] == []


def test_collect_max_events_drops_the_oldest(host):
    b = deployed(host)
    for i in range(10):
        host.kernel.fire('disk_full', -28, pid=i, ts='20.%06d' % i)
    got = tracefs_buffer.collect(b, max_events=3)
    assert [e['pid'] for e in got['events']] == [7, 8, 9]
    assert [e['seq'] for e in got['events']] == [7, 8, 9]
    assert got['events_dropped'] == 7
    assert tracefs_buffer.collect(b, max_events=0)['events'] == []


def test_errptr_any_never_reports_a_pointer(host):
    b = host.backend()
    spec = dict(probe_spec.preset('open_failures'), report='any')
    b.present(resolved(spec), HASH, None)
    assert host.read('instances/%s/events/%s/open_failures/filter' % (NAME, NAME)) == 'none\n'
    host.kernel.fire('open_failures', -126954941909504, ts='5.0')
    host.kernel.fire('open_failures', -2, ts='5.1')
    host.kernel.fire('open_failures', -4096, ts='5.2')
    got = tracefs_buffer.collect(b)
    assert [(e['ret'], e['errno']) for e in got['events']] == [(0, None), (-2, 'ENOENT'), (0, None)]
    assert got['probes']['open_failures']['matches'] == 3
    assert '126954941909504' not in json.dumps(got)


def test_collect_lost_events_from_overrun(host):
    b = deployed(host)
    k = host.kernel
    k.fire('disk_full', -28, ts='1.0')
    k.set_stats(NAME, 0, entries=5)
    assert tracefs_buffer.collect(b)['events_lost'] == 0
    # the ring overwrote 5 events: the 5 we had read (entries at the last read) are not lost
    k.set_stats(NAME, 0, entries=5, overrun=5)
    assert tracefs_buffer.collect(b)['events_lost'] == 0
    k.set_stats(NAME, 0, entries=5, overrun=12, dropped=0)
    k.set_stats(NAME, 1, entries=0, overrun=0, dropped=2)
    assert tracefs_buffer.collect(b)['events_lost'] == 2 + 2  # 7 more overwritten, 5 of them read before; + 2 dropped
    assert tracefs_buffer.collect(b)['events_lost'] == 0


def test_lost_since():
    s = tracefs_counters.parse_stats('entries: 3\noverrun: 10\ncommit overrun: 1\nbytes: 0\ndropped events: 2\n')
    assert s == {'entries': 3, 'overrun': 10, 'commit_overrun': 1, 'dropped': 2, 'read': 0}
    assert tracefs_buffer.lost_since({}, {'0': s}) == 13
    assert tracefs_buffer.lost_since({'0': dict(s, entries=4)}, {'0': dict(s, overrun=16)}) == 2
    assert tracefs_buffer.lost_since({'0': dict(s, overrun=99)}, {'0': s}) == 13  # counters reset: new buffer


def test_collect_after_reboot_resets_the_cursor(host):
    b = deployed(host)
    host.kernel.fire('disk_full', -28, ts='100.0')
    assert tracefs_buffer.collect(b)['cursor']['next_seq'] == 1
    host.reboot()
    with pytest.raises(tracefs_support.TracefsError):
        tracefs_buffer.collect(b)
    b.present(resolved(*DEFAULT), HASH, None)
    host.kernel.fire('disk_full', -28, ts='3.0')  # earlier than the old cursor: a new boot
    got = tracefs_buffer.collect(b)
    assert [(e['seq'], e['ts']) for e in got['events']] == [(0, 3.0)]
    assert got['cursor']['boot_id'] == 'boot-2'


def test_select_new():
    evs = [{'ts_usec': t} for t in (5, 7, 7, 7, 9)]
    assert tracefs_buffer.select_new(evs, None, 0) == (evs, 9, 1)
    assert tracefs_buffer.select_new(evs, 7, 2) == (evs[3:], 9, 1)
    assert tracefs_buffer.select_new(evs, 9, 1) == ([], 9, 1)
    assert tracefs_buffer.select_new(evs[:4], 5, 1) == (evs[1:4], 7, 3)


# -- probe_facts: one schema for both backends ---------------------------------------------------
def facts(root, **params):
    from ansible_collections.kprobes.fleet.plugins.modules import probe_facts
    full = {'module': NAME, 'host_dir': os.path.dirname(STATE_DIR), 'max_events': 1000, 'advance_cursor': True}
    full.update(params)
    return probe_facts.ProbeFacts(FakeModule(full), root=root, release='6.1.0-56-amd64').gather()


def module_host(tmp_path):
    """A host running the kernel module backend (sysfs + /dev/kmsg), as in test_kmsg."""
    root = tmp_path / 'modhost'
    (root / 'dev').mkdir(parents=True)
    (root / 'proc/sys/kernel/random').mkdir(parents=True)
    (root / 'proc/sys/kernel/random/boot_id').write_text('boot-1\n')
    (root / 'dev/kmsg').write_text('6,1,1000,-;%s: probe=disk_full func=vfs_write ret=-28 pid=812 comm=dd\n' % NAME)
    (root / 'sys/module' / NAME).mkdir(parents=True)
    sysk = root / 'sys/kernel' / NAME
    (sysk / 'probes/disk_full').mkdir(parents=True)
    (sysk / 'spec_hash').write_text(HASH + '\n')
    (sysk / 'marker').write_text('kprobes.fleet\n')
    for name, value in [('function', 'vfs_write')] + [(c, '1') for c in COUNTERS]:
        (sysk / 'probes/disk_full' / name).write_text(value + '\n')
    return str(root)


def test_probe_facts_same_schema_for_both_backends(tmp_path, host):
    mod = facts(module_host(tmp_path))
    deployed(host)
    host.kernel.fire('disk_full', -28, ts='9.0')
    tfs = facts(host.root)
    assert (mod['backend'], mod['backend_reason']) == ('module', None)
    assert (tfs['backend'], tfs['backend_reason']) == ('tracefs', 'lockdown=integrity')
    assert set(mod) == set(tfs) == {'module', 'loaded', 'spec_hash', 'kernel', 'boot_id', 'probes', 'events',
                                    'events_lost', 'events_dropped', 'cursor', 'backend', 'backend_reason',
                                    'reason', 'previous_boot_id', 'forwarder', 'args_channel', 'args_cursor'}
    assert set(mod['probes']['disk_full']) == set(tfs['probes']['disk_full'])
    assert set(mod['events'][0]) == set(tfs['events'][0])
    for key in ('boot_id', 'next_seq'):
        assert key in mod['cursor'] and key in tfs['cursor']
    assert (tfs['loaded'], tfs['spec_hash'], tfs['module']) == (True, HASH, NAME)
    for f in (mod, tfs):
        assert isinstance(f['events'][0]['ts'], float) and f['events'][0]['errno'] == 'ENOSPC'


def test_probe_facts_nothing_active(tmp_path, host):
    os.makedirs(os.path.join(host.root, 'dev'))
    with open(os.path.join(host.root, 'dev/kmsg'), 'w') as fh:
        fh.write('6,1,1000,-;hello\n')
    f = facts(host.root)  # no module, no tracefs record
    assert (f['backend'], f['loaded'], f['probes']) == (None, False, {})


def test_probe_facts_stale_tracefs_record_falls_back_to_the_module(tmp_path, host):
    deployed(host)
    host.reboot()
    os.makedirs(os.path.join(host.root, 'dev'))
    with open(os.path.join(host.root, 'dev/kmsg'), 'w') as f:
        f.write('6,1,1000,-;hello\n')
    got = facts(host.root)
    assert (got['backend'], got['loaded']) == (None, False)


# -- the tracefs_probes module -------------------------------------------------------------------
def run_module(host, check_mode=False, diff=False, **params):
    from ansible_collections.kprobes.fleet.plugins.modules import tracefs_probes
    full = {'name': NAME, 'probes': resolved(*DEFAULT), 'spec_hash': HASH, 'reason': 'why',
            'state': 'present', 'host_dir': os.path.dirname(STATE_DIR)}
    full.update(params)
    return tracefs_probes.TracefsProbes(FakeModule(full, check_mode, diff), root=host.root, io=host.kernel).apply()


def test_tracefs_probes_module(host):
    r = run_module(host, diff=True)
    assert (r['changed'], r['name'], r['state'], r['spec_hash']) == (True, NAME, 'present', HASH)
    assert r['diff'] == {'before': {'present': False, 'spec_hash': None},
                         'after': {'present': True, 'spec_hash': HASH}}
    assert r['probes']['sleepers'] == {'function': 'hrtimer_nanosleep', 'registered': 1}
    assert run_module(host)['changed'] is False
    r = run_module(host, state='absent', probes=None, spec_hash=None, check_mode=True)
    assert r['changed'] is True and host.kernel.instances() == [NAME]
    r = run_module(host, state='absent', probes=None, spec_hash=None)
    assert (r['changed'], r['spec_hash'], r['previous_spec_hash']) == (True, None, HASH)
    assert host.kernel.instances() == [] and host.read('kprobe_events') == ''


@pytest.mark.parametrize('params,words', [
    ({'name': 'Bad'}, 'name: must match'),
    ({'state_dir': '/var/lib'}, 'shared system directory'),
    ({'spec_hash': 'x'}, 'spec_hash: must be 16'),
    ({'probes': [{'name': 'p'}]}, "field 'function'"),
])
def test_tracefs_probes_module_refuses(host, params, words):
    with pytest.raises(Failed) as e:
        run_module(host, **params)
    assert words in str(e.value)
    assert host.kernel.writes == []


def test_kmsg_cursor_untouched_by_tracefs(host):
    deployed(host)
    host.kernel.fire('disk_full', -28, ts='9.0')
    facts(host.root)
    assert not os.path.exists(kmsg_cursor(host))
    assert os.path.exists(host_state.state_file(host.state_dir, NAME, 'tracefs-cursor'))


def kmsg_cursor(host):
    return host_state.state_file(host.state_dir, NAME, 'kmsg-cursor')


def test_state_file_shape(host):
    deployed(host)
    state = host.state()
    assert set(state) >= {'boot_id', 'spec_hash', 'reason', 'group', 'instance', 'events'}
    assert state['mark'] == 'kprobes.fleet'
    assert tracefs_probes.load_state(host_state.state_file(host.state_dir, NAME, 'tracefs')) == state
    with open(host_state.state_file(host.state_dir, NAME, 'tracefs'), 'w') as f:
        f.write(json.dumps(dict(state, mark='someone-else')))
    assert tracefs_probes.load_state(host_state.state_file(host.state_dir, NAME, 'tracefs')) is None
    assert kmsg.load_cursor(host_state.state_file(host.state_dir, NAME, 'tracefs-cursor')) is None


# -- kernels without hist triggers (Debian 11's 5.10): counting instances -------------------------
@pytest.fixture
def nohist(tmp_path):
    return Host(tmp_path, hist=False)


def test_no_hist_present_makes_counting_instances(nohist):
    h = nohist
    r = h.backend().present(resolved(*DEFAULT), HASH, None)
    assert 'one counting instance per probe' in r['msg']
    assert h.kernel.instances() == [NAME, NAME + '.disk_full', NAME + '.open_failures', NAME + '.sleepers']
    assert not any(w[1].endswith('/trigger') for w in h.kernel.writes)
    c = 'instances/%s.disk_full/' % NAME
    assert h.read(c + 'buffer_size_kb') == '4\n'
    assert h.read(c + 'events/%s/disk_full/filter' % NAME) == 'ret == -28 || ret == -122\n'
    assert h.read(c + 'events/%s/disk_full/enable' % NAME) == '1\n'
    assert h.read(c + 'events/%s/open_failures/enable' % NAME) == '0\n'  # one probe per counter
    assert h.read('instances/%s.sleepers/events/%s/sleepers/enable' % (NAME, NAME)) == '1\n'  # log: false too
    assert h.read('instances/%s/events/%s/sleepers/enable' % (NAME, NAME)) == '0\n'
    state = h.state()
    assert [(e['trigger'], e['counter']) for e in state['events']] == [
        (None, NAME + '.open_failures'), (None, NAME + '.disk_full'), (None, NAME + '.sleepers')]
    assert h.backend().status()['complete'] is True
    h.kernel.writes[:] = []
    assert h.backend().present(resolved(*DEFAULT), HASH, None)['changed'] is False
    assert h.kernel.writes == []


def test_no_hist_matches_from_the_counting_ring(nohist):
    h = nohist
    b = h.backend()
    b.present(resolved(*DEFAULT), HASH, None)
    for i in range(3):
        h.kernel.fire('disk_full', -28, ts='7.%d' % i, cpu=i % 2)
    h.kernel.fire('disk_full', 5, ts='7.5')
    h.kernel.fire('sleepers', 0, ts='7.6')
    got = tracefs_buffer.collect(b)
    assert (got['probes']['disk_full']['hits'], got['probes']['disk_full']['matches']) == (4, 3)
    assert got['probes']['sleepers']['matches'] == 1
    assert got['probes']['open_failures']['matches'] == 0
    assert len(got['events']) == 3
    # the tiny ring wrapped: what it overwrote still counts
    h.kernel.set_stats(NAME + '.disk_full', 0, entries=40, overrun=960, dropped=1)
    assert tracefs_buffer.collect(b)['probes']['disk_full']['matches'] == 40 + 960 + 1 + 1  # + the one on cpu 1


def test_no_hist_absent_removes_every_instance_of_ours(nohist):
    h = nohist
    h.kernel.mkdir(h.path('instances/theirs'))
    b = h.backend()
    b.present(resolved(*DEFAULT), HASH, None)
    b.absent()
    assert h.kernel.instances() == ['theirs']
    assert h.read('kprobe_events') == ''


def test_no_hist_refuses_a_counting_instance_that_is_not_ours(nohist):
    h = nohist
    h.kernel.mkdir(h.path('instances/%s.disk_full' % NAME))
    h.kernel.writes[:] = []
    with pytest.raises(tracefs_support.TracefsError) as e:
        h.backend().present(resolved(*DEFAULT), HASH, None)
    assert 'instances/%s.disk_full' % NAME in str(e.value) and 'not ours' in str(e.value)
    assert h.kernel.writes == []


def test_written():
    stats = {'0': tracefs_counters.parse_stats('entries: 172\noverrun: 19926\ncommit overrun: 0\ndropped events: 0\n'
                                               'read events: 0\n'),
             '1': tracefs_counters.parse_stats('entries: 205\noverrun: 0\ncommit overrun: 0\ndropped events: 0\n'
                                               'read events: 0\n')}
    assert tracefs_counters.written(stats) == 20303  # seen on 5.10: 20000 failing mkdir + 303 sleeps


def test_errno_counts_only_from_a_table_keyed_by_return_value():
    hist = tracefs_counters.parse_hist('{ ret: -28 } hitcount: 3\n{ ret: -122 } hitcount: 1\n{ ret: 5 } hitcount: 9\n'
                                       'Totals:\n    Hits: 13\n    Entries: 3\n    Dropped: 0\n')
    assert tracefs_counters.errno_counts(hist, True) == {'ENOSPC': 3, 'EDQUOT': 1}
    assert tracefs_counters.errno_counts(hist, False) is None
    full = dict(hist, dropped=2)
    assert tracefs_counters.errno_counts(full, True) is None  # a full table: counts unknown, not wrong
