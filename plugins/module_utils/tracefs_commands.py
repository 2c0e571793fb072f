# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracefs backend: the text we write into tracefs, how the kernel shows it back, and the
only code that writes there (``TracefsIO``). Pure functions but the IO; see tracefs_support.

What we write, per probe: ``r<maxactive>:<name>/<probe> <function> ret=$retval:<s32|s64>``
appended to ``kprobe_events`` (O_APPEND, never O_TRUNC: a truncating open deletes every kprobe
event on the host); the report filter; a hist trigger counting the matches by return value.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re

from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec

ERRPTR_MIN = -4095            # -MAX_ERRNO: IS_ERR_VALUE()


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


# -- how the kernel shows it back -----------------------------------------------------------
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
