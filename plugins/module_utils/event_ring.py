# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Events with captured arguments: the module's root-only ring, ``/proc/<module>.events``.

A probe with ``args`` (probe_spec) never writes to the kernel log, which every user may read
where ``kernel.dmesg_restrict=0``: its matches go to a ring of 2,048 records that only root can
read (mode 0400). A read returns one record framed like a /dev/kmsg record, so kmsg's reader
and cursor logic apply (a gap in the sequence numbers is events lost); end of file when caught up::

    6,<seq>,<usec>,-;<module>: probe=<p> func=<f> ret=<n> pid=<tgid> tid=<tid> uid=<uid> [lat_ns=<ns>] cgroup=<path> comm=<c>
        arg.<name>=<string> | arg.<name>.num=<number>  [arg.<name>.truncated=1] [arg.<name>.error=<-errno>]
        [arg.<name>.dev=<major>:<minor> arg.<name>.fs=<type>]          (one line)

In ``comm`` and every value the kernel writes each byte that is not printable ASCII, and ``%``
and ``\\``, as ``%XX``: a value holds no space, so a file name cannot forge a field or a record.
In the facts a captured string is text in which every byte that is not printable UTF-8 (control
characters, invalid UTF-8) and every backslash is written ``\\xHH`` (``shown``): unambiguous and
reversible (``raw``). Standard library only: runs on the managed hosts.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re

from ansible_collections.kprobes.fleet.plugins.module_utils import kmsg
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_text

RING_FILE = '%s.events'     # in /proc, per module
_ESC_RE = re.compile(r'\\x([0-9a-f]{2})')
_HEAD = (r'^%s: probe=([a-z][a-z0-9_]*) func=(\S+) ret=(-?[0-9]+) pid=([0-9]+) tid=([0-9]+) '
         r'uid=([0-9]+) (?:lat_ns=([0-9]+) )?(?:cgroup=(\S*) )?comm=(\S*)((?: arg\.[a-z][a-z0-9_]*(?:\.[a-z]+)?=\S*)*)$')
_CACHE = {}


def ring_path(name, root='/'):
    return os.path.join(root, 'proc', RING_FILE % name)


def ring_id(name, root='/'):
    """The id of the ring of the loaded module (a new one at every load), or None."""
    text = read_text(os.path.join(root, 'sys', 'kernel', name, 'ring_id'))
    return text.strip() if text and text.strip() else None


unpercent = kmsg.unpercent
shown = kmsg.shown


def raw(text):
    """shown()'s inverse: the bytes a facts string stands for."""
    parts = _ESC_RE.split(text)
    data = b''
    for i, part in enumerate(parts):
        data += bytes(bytearray([int(part, 16)])) if i % 2 else part.encode('utf-8')
    return data


def parse_event(module, text):
    """One ring record's text as an event, or None when it is not one of ``module``."""
    rx = _CACHE.get(module)
    if rx is None:
        rx = _CACHE[module] = re.compile(_HEAD % re.escape(module))
    m = rx.match(text or '')
    if m is None:
        return None
    fields = {}
    for item in m.group(10).split():
        key, dummy, value = item.partition('=')
        fields[key[len('arg.'):]] = value
    args, truncated, errors, files = {}, [], {}, {}
    for key, value in fields.items():
        name, dummy, attr = key.partition('.')
        if not attr:
            args[name] = shown(unpercent(value))
        elif attr == 'num' and re.match(r'^-?[0-9]+$', value):
            args[name] = int(value)
        elif attr == 'truncated':
            truncated.append(name)
        elif attr == 'error' and re.match(r'^-?[0-9]{1,10}$', value):
            errors[name] = kmsg.errno_name(int(value)) or value
        elif attr in ('dev', 'fs'):
            files.setdefault(name, {})[attr] = shown(unpercent(value)) if attr == 'fs' else value
    event = {'probe': m.group(1), 'function': m.group(2), 'ret': int(m.group(3)), 'pid': int(m.group(4)),
             'tid': int(m.group(5)), 'uid': int(m.group(6)), 'comm': shown(unpercent(m.group(9))),
             'args': args}
    event.update(kmsg.whose(m.group(8)))
    if m.group(7) is not None:
        event['lat_ns'] = int(m.group(7))
    for name, info in files.items():
        info['path'] = args.get(name)
        args[name] = info
    if truncated:
        event['args_truncated'] = sorted(truncated)
    if errors:
        event['args_errors'] = errors
        for name in errors:
            args.setdefault(name, None)
    return event


def mounts(root='/'):
    """{'<major>:<minor>': (mount point, source)} from /proc/self/mountinfo (the first mount of each
    filesystem's root), both as shown() text: a mount point is any bytes root chose."""
    try:
        with open(os.path.join(root, 'proc', 'self', 'mountinfo'), 'rb') as f:
            data = f.read()
    except (IOError, OSError):
        return {}
    found = {}
    for line in data.split(b'\n'):
        fields = line.split()
        if len(fields) < 10 or b'-' not in fields:
            continue
        dash = fields.index(b'-')
        dev, fsroot, point = fields[2].decode('ascii', 'replace'), fields[3], fields[4]
        if fsroot == b'/' and dev not in found and len(fields) > dash + 2:
            found[dev] = (shown(_octal(point)), shown(_octal(fields[dash + 2])))
    return found


def _octal(data):
    """mountinfo's \\ooo escapes (space, tab, newline, backslash) as the bytes they stand for."""
    return re.sub(br'\\([0-7]{3})', lambda m: bytes(bytearray([int(m.group(1), 8) & 0xff])), data)


def place_files(event, where):
    """Put each captured file's mount point in front of its path (not when the path was cut)."""
    for name, info in (event.get('args') or {}).items():
        if not isinstance(info, dict) or info.get('path') is None:
            continue
        mount = where.get(info.get('dev'))
        info['mount'], info['device'] = mount if mount else (None, None)
        if mount and name not in event.get('args_truncated', ()):
            info['path'] = (mount[0].rstrip('/') + info['path']) if info['path'] != '/' else mount[0]
    return event


def collect(name, cursor, boot_id, root='/'):
    """The ring's events after ``cursor`` ({boot_id: '<boot id>/<ring id>', next_seq}), the number
    lost, and the new cursor; ``(None, 0, cursor)`` when the loaded module has no ring."""
    rid = ring_id(name, root)
    path = ring_path(name, root)
    if rid is None or not os.path.exists(path):
        return None, 0, cursor
    where = mounts(root)
    events, lost, new = kmsg.collect(kmsg.read_records(path), name, cursor, '%s/%s' % (boot_id, rid),
                                     parse=parse_event)
    return [place_files(ev, where) for ev in events], lost, new
