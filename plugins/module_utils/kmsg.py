# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading /dev/kmsg and turning kprobes.fleet log lines into events.

Standard library only: this file runs on the managed hosts.

A /dev/kmsg record is ``"<prio>,<seq>,<ts_usec>,<flags>[,more...];<text>\\n"`` optionally
followed by continuation lines that start with a space (``" SUBSYSTEM=..."``).  Every
``read()`` of the device returns exactly one record; ``EAGAIN`` means "caught up" and
``EPIPE`` means records were overwritten before we read them (the reader jumps to the
oldest record still in the ring, so the loss shows up as a gap in the sequence numbers).

The collector keeps a cursor ``{boot_id, next_seq}`` per kernel module, in the same spirit
as journald's kernel sequence number file (docs/architecture.md, "Host paths").
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import json
import os
import re

from ansible_collections.kprobes.fleet.plugins.module_utils.host_state import atomic_write
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_json
from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import ERRNO_NAMES

KMSG_PATH = '/dev/kmsg'
BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id'

# One read() returns one record; kernels up to 6.x need at most 8 KiB (+1).
READ_SIZE = 16 * 1024
# EPIPE ("you were overtaken") in a row before giving up; the kernel repositions the reader
# on the oldest record, so more than a handful means something else is wrong.
MAX_OVERRUNS = 1000

# Syslog facility of the kernel's own messages: a record's prio is facility * 8 + level, and
# only facility 0 (LOG_KERN) comes from printk(). Anything else was written to /dev/kmsg from
# user space (facility LOG_USER by default) and can imitate our event lines.
LOG_KERN = 0

_ESCAPE_RE = re.compile(br'\\x([0-9a-fA-F]{2})')
_PCT_RE = re.compile(r'%([0-9a-fA-F]{2})')
# The unit of a cgroup path (``unit`` in events): its deepest whole component that is a systemd unit's
# cgroup, by its suffix. A process is in a .service or .scope; .socket, .mount and .swap run helpers;
# a .slice only where nothing deeper is a unit.
UNIT_SUFFIXES = ('.service', '.scope', '.socket', '.mount', '.swap', '.slice')
_EVENT_RE_CACHE = {}


def _unescape(text):
    """Decode the kernel's ``\\xNN`` escapes (non-printables, bytes >= 0x7f and ``\\``)."""
    if '\\x' not in text:
        return text
    raw = text.encode('utf-8', 'surrogateescape')
    raw = _ESCAPE_RE.sub(lambda m: bytes(bytearray([int(m.group(1), 16)])), raw)
    return raw.decode('utf-8', 'replace')


def parse_record(raw):
    """Parse one /dev/kmsg record.

    Returns ``dict(prio, seq, ts_usec, flags, text)`` or None when ``raw`` is not a record.
    Continuation lines (starting with a space) and unknown header fields (``caller=T123``)
    are ignored; ``\\xNN`` escapes in the text are decoded.
    """
    if isinstance(raw, bytes):
        raw = raw.decode('utf-8', 'surrogateescape')
    first = raw.split('\n', 1)[0]
    header, sep, text = first.partition(';')
    if not sep:
        return None
    fields = header.split(',')
    if len(fields) < 4:
        return None
    try:
        prio = int(fields[0])
        seq = int(fields[1])
        ts_usec = int(fields[2])
    except ValueError:
        return None
    if prio < 0 or seq < 0 or ts_usec < 0:
        return None
    return {
        'prio': prio,
        'seq': seq,
        'ts_usec': ts_usec,
        'flags': fields[3],
        'text': _unescape(text),
    }


def unpercent(value):
    """The bytes behind the kernel's %XX escapes (the ring's values, a cgroup path)."""
    return _PCT_RE.sub(lambda m: chr(int(m.group(1), 16)), value).encode('latin-1', 'replace')


def shown(data):
    """Bytes as facts text: printable UTF-8 as is; every other byte, and ``\\``, as ``\\xHH``."""
    out = []
    for ch in data.decode('utf-8', 'surrogateescape'):
        code = ord(ch)
        if 0xdc80 <= code <= 0xdcff:
            out.append('\\x%02x' % (code - 0xdc00))
        elif code < 0x20 or code == 0x7f or 0x80 <= code <= 0x9f or ch == '\\':
            out.extend('\\x%02x' % b for b in ch.encode('utf-8'))
        else:
            out.append(ch)
    return ''.join(out)


def unit_of(path):
    """The systemd unit of a cgroup path (bytes): its deepest whole component with a unit's suffix
    (UNIT_SUFFIXES, .slice last), as shown() text; None when there is none. A cut path ("...") starts
    with a part of a component, which is never taken."""
    parts = path.split(b'/')
    if path.startswith(b'...'):
        parts = parts[1:]
    for suffixes in (UNIT_SUFFIXES[:-1], UNIT_SUFFIXES[-1:]):
        for part in reversed(parts):
            if any(part.endswith(s.encode()) and len(part) > len(s) for s in suffixes):
                return shown(part)
    return None


def whose(cgroup):
    """``{cgroup, unit}`` of an event from the kernel's escaped cgroup path (None: not given)."""
    if cgroup is None:
        return {'cgroup': None, 'unit': None}
    path = unpercent(cgroup)
    return {'cgroup': shown(path), 'unit': unit_of(path)}


def _event_re(module):
    rx = _EVENT_RE_CACHE.get(module)
    if rx is None:
        rx = re.compile(
            r'^' + re.escape(module) + r': probe=([a-z][a-z0-9_]*) func=(\S+)'
            r' ret=(-?[0-9]+)(?: lat_ns=([0-9]+))? pid=([0-9]+)(?: tid=([0-9]+) uid=([0-9]+) cgroup=(\S*))?'
            r' comm=(.*)$',
            re.DOTALL,
        )
        _EVENT_RE_CACHE[module] = rx
    return rx


def parse_event(module, text):
    """Parse ``<mod>: probe=<name> func=<symbol> ret=<n> [lat_ns=<ns>] pid=<pid> tid=<tid> uid=<uid>
    cgroup=<path> comm=<comm>``.

    Returns ``dict(probe, function, ret, pid, tid, uid, cgroup, unit, comm)`` (plus ``lat_ns`` for a probe
    that times its calls) or None for any other line
    (other modules, this module's ``loaded ...`` line, errors).  ``comm`` is everything after
    ``comm=``, so it may contain spaces and ``=``.  ``pid`` is the process (thread group) id, ``tid`` the
    thread's; a line of a module built before they were both logged has only ``pid=``, which was the
    thread id: ``pid`` and ``tid`` are that number, ``uid``, ``cgroup`` and ``unit`` None. ``cgroup`` is
    the path on the cgroup v2 hierarchy (shown() text; after ``...`` when cut), ``unit`` its systemd unit.
    """
    if not text:
        return None
    m = _event_re(module).match(text)
    if m is None:
        return None
    event = {
        'probe': m.group(1),
        'function': m.group(2),
        'ret': int(m.group(3)),
        'pid': int(m.group(5)),
        'comm': m.group(9),
    }
    if m.group(6) is not None:
        event.update(tid=int(m.group(6)), uid=int(m.group(7)))
        event.update(whose(m.group(8)))
    else:  # a module built before tid, uid and cgroup: its pid= was the thread id
        event.update(tid=event['pid'], uid=None, cgroup=None, unit=None)
    if m.group(4) is not None:
        event['lat_ns'] = int(m.group(4))
    return event


def errno_name(ret):
    """``-28`` -> ``'ENOSPC'``; None for ``ret >= 0`` or an unknown value.

    Uses the probe spec's table (``probe_spec.ERRNO_NAMES``), so the name is the canonical
    one the spec uses (``-95`` -> ``EOPNOTSUPP``, never ``ENOTSUP``) and kernel-internal
    values (``-512`` -> ``ERESTARTSYS``) are named too, whatever the target's libc says.
    """
    if ret is None or ret >= 0:
        return None
    return ERRNO_NAMES.get(-ret)


def is_kernel_record(rec):
    """The record was logged by the kernel (facility LOG_KERN), not written by user space."""
    return rec['prio'] >> 3 == LOG_KERN


def _split_records(data):
    """Split decoded text into records (a record = a line plus its ' '-continuations)."""
    records = []
    current = None
    for line in data.split('\n'):
        if line.startswith(' ') and current is not None:
            current.append(line)
            continue
        if current is not None:
            records.append('\n'.join(current))
        current = [line] if line else None
    if current is not None:
        records.append('\n'.join(current))
    return records


def read_records(fd_or_path=KMSG_PATH, read=os.read, bufsize=READ_SIZE):
    """Yield parsed records from /dev/kmsg (or from an fd already open on it).

    A path is opened ``O_RDONLY|O_NONBLOCK`` and closed at the end; a file descriptor is left
    open.  Stops at ``EAGAIN`` (caught up) or end of file.  On ``EPIPE`` (records were
    overwritten while reading) it carries on: the kernel moved the position to the oldest
    record and the gap shows in the sequence numbers.  A regular file holding a dump of
    records (``cat /dev/kmsg > f``) is read as well, which is what the unit tests use.
    """
    own = not isinstance(fd_or_path, int)
    fd = os.open(fd_or_path, os.O_RDONLY | os.O_NONBLOCK) if own else fd_or_path
    pending = b''
    overruns = 0
    try:
        while True:
            try:
                chunk = read(fd, bufsize)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    break
                if e.errno == errno.EPIPE and overruns < MAX_OVERRUNS:
                    overruns += 1
                    continue
                raise
            overruns = 0
            if not chunk:
                break
            data = pending + chunk
            cut = data.rfind(b'\n')
            if cut < 0:
                pending = data
                continue
            pending = data[cut + 1:]
            for raw in _split_records(data[:cut + 1].decode('utf-8', 'surrogateescape')):
                rec = parse_record(raw)
                if rec is not None:
                    yield rec
        if pending:
            rec = parse_record(pending.decode('utf-8', 'surrogateescape'))
            if rec is not None:
                yield rec
    finally:
        if own:
            os.close(fd)


def last_seq(path=KMSG_PATH):
    """Sequence number of the newest record in the ring (None if the ring is empty)."""
    seq = None
    for rec in read_records(path):
        seq = rec['seq']
    return seq


def read_boot_id(path=BOOT_ID_PATH):
    with open(path) as f:
        return f.read().strip()


def collect(records, module, cursor, boot_id, parse=None):
    """Pick this module's events out of ``records``, resuming after ``cursor``.

    ``cursor`` is ``{'boot_id': ..., 'next_seq': ...}`` or None.  A cursor from another boot
    means ``next_seq = 0`` (seq restarts every boot).  Records with ``seq < next_seq`` were
    seen before and are skipped.  ``lost`` totals the sequence gaps: between ``next_seq`` and
    the first record read (only when there is a cursor) and between consecutive records
    (overwritten while reading, ``EPIPE``).  Every record counts for the cursor and ``lost``,
    but only kernel-facility records (``prio < 8``) can be events: user space may write to
    /dev/kmsg (facility LOG_USER by default) and must not be able to forge an event.

    Returns ``(events, lost, new_cursor)``; every event carries ``seq``, ``ts_usec``, ``ts``
    (seconds since boot) and ``errno``. ``parse`` reads an event out of a record's text
    (parse_event by default; event_ring's for the ring of events with arguments).
    """
    parse = parse or parse_event
    next_seq = None
    if cursor:
        if cursor.get('boot_id') == boot_id:
            next_seq = int(cursor.get('next_seq') or 0)
        else:
            next_seq = 0
    expected = next_seq
    lost = 0
    events = []
    for rec in records:
        seq = rec['seq']
        if next_seq is not None and seq < next_seq:
            continue
        if expected is not None and seq > expected:
            lost += seq - expected
        if expected is None or seq >= expected:
            expected = seq + 1
        if not is_kernel_record(rec):
            continue
        ev = parse(module, rec['text'])
        if ev is None:
            continue
        ev['errno'] = errno_name(ev['ret'])
        ev['seq'] = seq
        ev['ts_usec'] = rec['ts_usec']
        ev['ts'] = rec['ts_usec'] / 1000000.0
        events.append(ev)
    new_cursor = {'boot_id': boot_id, 'next_seq': expected if expected is not None else 0}
    return events, lost, new_cursor


def load_cursor(path):
    """The saved cursor, or None when missing or unusable (then we start afresh)."""
    data = read_json(path)
    if data is None:
        return None
    boot_id = data.get('boot_id')
    next_seq = data.get('next_seq')
    if not isinstance(boot_id, str) or isinstance(next_seq, bool) or not isinstance(next_seq, int):
        return None
    if next_seq < 0:
        return None
    return {'boot_id': boot_id, 'next_seq': next_seq}


def save_cursor(path, cursor):
    """Persist ``{boot_id, next_seq}`` atomically (directory created 0700, file 0600)."""
    data = {'boot_id': cursor['boot_id'], 'next_seq': int(cursor['next_seq'])}
    atomic_write(path, (json.dumps(data, sort_keys=True) + '\n').encode('utf-8'))
