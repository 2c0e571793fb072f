# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-rulebook event source kprobes.fleet.spool: probe matches from the forwarder's spool."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
short_description: Probe matches of kprobes.fleet as events, read from the forwarder's spool (JSONL)
description:
  - Reads the JSONL spool the kprobes.fleet event forwarder writes with C(kprobes_fleet_events.spool=true)
    (C(<kprobes_fleet_host_dir>/state/<name>.events.jsonl), one event a line) and puts every event on
    the rulebook's queue, with the same shape the forwarder POSTs to a webhook -
    C({host, probe, function, ret, errno, pid, comm, ts, boot_id, seq, burst}), and for a probe with captured
    arguments also C(args), C(tid), C(uid) and, when a value was cut or could not be read, C(args_truncated) /
    C(args_errors).
  - For rulebooks that run where the spool is (on the host itself, or a copy shipped by other means);
    across hosts, use the forwarder's webhook delivery and C(eda.builtin.webhook) with
    C(eda.builtin.event_splitter) on C(payload.events) (rulebook C(kprobes.fleet.disk_full)).
  - Follows the file like C(tail -F) - starts at its end (or its beginning with O(from_start)),
    reopens it when the forwarder rotates it (to C(.1), when it outgrows C(spool_max_kb)) and reads
    what was left in the rotated file first.
  - Trusts nothing it reads - every line must be a JSON object with exactly these keys, each of its
    type, length and characters (C(host) one inventory host name, never C(all) or a pattern; C(probe),
    C(function), C(errno), C(boot_id), C(burst) names of their own alphabet; C(ret), C(pid), C(seq)
    integers; C(ts) a number); C(comm) is whatever name a process gave itself - its control and format
    characters, and C({) (and C(#) in front), are replaced by C(?). Lines that fail are skipped and counted
    (logged), never passed on.
  - C(args) - at most 4 names C([a-z][a-z0-9_]{0,15}), each an integer (64 bits), null, a string of at most
    1100 characters, or a file C({path, fs, dev, mount, device}) (C(dev) C(<major>:<minor>), C(mount) and
    C(device) at most 4096 characters, C(path) at most 5196, the mount point in front); C(args_truncated) a
    list of those names, C(args_errors) names to errno names; C(tid), C(uid) integers of 32 bits. A captured
    string is passed on byte for byte as the forwarder wrote it (bytes that are not printable UTF-8, and the
    backslash, as \xHH); one holding a raw control character did not come from the forwarder and is refused.
    So that no Ansible template can read it as one (ansible-rulebook hands the event to a playbook as extra
    vars, which ansible-core renders), every C({) and a C(#) in front are written \x7b and \x23 too.
  - Its arguments are checked before it starts - a wrong type, an unknown argument, or a path that is a
    directory, a device or in a directory that does not exist stops it with one sentence.
options:
  path:
    description:
      - The spool file (absolute path). It may not exist yet (the forwarder makes it with its first event),
        but its directory must; a directory, a device, a FIFO or a socket is refused.
    type: str
    default: /var/lib/kprobes-fleet/state/kprobes_fleet.events.jsonl
  from_start:
    description: Put the events already in the file on the queue too (default - only new ones).
      A boolean (C(true)/C(false)); a string such as C("false") is refused, not read as true.
    type: bool
    default: false
  delay:
    description: Seconds between two looks at the file (a number, more than 0 and at most 3600).
    type: float
    default: 0.5
  once:
    description: Stop at the end of the file instead of following it (tests, replays). A boolean.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: React to disk-full on this host
  hosts: localhost
  sources:
    - kprobes.fleet.spool:
        path: /var/lib/kprobes-fleet/state/kprobes_fleet.events.jsonl
  rules:
    - name: ENOSPC
      condition: event.errno == "ENOSPC"
      throttle:
        once_within: 10 minutes
        group_by_attributes: [event.host, event.burst]
      action:
        run_playbook:
          name: kprobes.fleet.disk_full_report
'''

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import stat
import unicodedata

# Every event has exactly these keys (the forwarder's shape, plugins/module_utils/events.py), and an event of
# a probe with args some of ARGS_KEYS (events.ARGS_KEYS; the limits below are events.ARGS_*, a unit test holds them equal).
EVENT_KEYS = ('host', 'probe', 'function', 'ret', 'errno', 'pid', 'comm', 'ts', 'boot_id', 'seq', 'burst')
ARGS_KEYS = ('args', 'args_truncated', 'args_errors', 'tid', 'uid')
# Whose (events.WHOSE_KEYS): the cgroup v2 path and the systemd unit of the process; tid and uid may come without args.
WHOSE_KEYS = ('cgroup', 'unit')
CGROUP_TEXT_MAX = 520
# A probe that times its calls (latency, slower_than): how long the call took, in ns.
LATENCY_KEYS = ('lat_ns',)
ARGS_MAX = 4
ARGS_TEXT_MAX = 1100   # 255 bytes captured, each \xHH at worst
ARGS_FS_MAX = 130
ARGS_MOUNT_MAX = 4096  # PATH_MAX
ARGS_PATH_MAX = ARGS_MOUNT_MAX + ARGS_TEXT_MAX  # a file's mount point, then its path below it
FILE_KEYS = ('path', 'fs', 'dev', 'mount', 'device')
DEFAULT_PATH = '/var/lib/kprobes-fleet/state/kprobes_fleet.events.jsonl'
ARGS = {'path': DEFAULT_PATH, 'from_start': False, 'delay': 0.5, 'once': False}
# Group names every inventory has: as a playbook limit they mean every host.
RESERVED_HOSTS = ('all', 'ungrouped')
# The same derivation as module_utils/events.py token_for (a unit test holds them equal): this file
# runs inside ansible-rulebook, where the collection's module_utils may not be importable.
TOKEN_CONTEXT = b'kprobes.fleet events token v1\0'
KEY_HEX_LEN = 64
COMM_MAX = 64  # TASK_COMM_LEN is 16; the kernel log writes a byte it cannot print as \xNN (4 characters)
_HOST_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}')
_PROBE_RE = re.compile(r'[a-z][a-z0-9_]{0,31}')
_FUNCTION_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_.]{0,127}')
_ERRNO_RE = re.compile(r'E[A-Z0-9]{1,15}')
_BOOT_ID_RE = re.compile(r'[A-Za-z0-9-]{1,64}')
_BURST_RE = re.compile(r'[A-Za-z0-9_.:+-]{1,160}')
_ARG_NAME_RE = re.compile(r'[a-z][a-z0-9_]{0,15}')
_DEV_RE = re.compile(r'[0-9]{1,10}:[0-9]{1,10}')

logger = logging.getLogger(__name__)


class BadArgument(ValueError):
    """An argument of the source: one sentence that names it."""


class BadEvent(ValueError):
    """Why an event is refused (one sentence, no repr of hostile data beyond a short quote)."""


def _type_name(value):
    if isinstance(value, bool):
        return 'the boolean %s' % str(value).lower()
    if value is None:
        return 'nothing (null)'
    if isinstance(value, (int, float)):
        return 'the number %s' % value
    if isinstance(value, str):
        return 'the string %s' % json.dumps(value[:40])
    return 'a %s' % {list: 'list', dict: 'mapping'}.get(type(value), type(value).__name__)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise BadArgument('kprobes.fleet source argument %s must be true or false (a YAML boolean), got %s'
                          % (name, _type_name(value)))
    return value


def check_number(name, value, low, high, low_open=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (value <= low if low_open else value < low) or value > high:
        raise BadArgument('kprobes.fleet source argument %s must be a number of seconds %s %s and at most %s, got %s'
                          % (name, 'above' if low_open else 'from', low, high, _type_name(value)))
    return value


def check_args(args, defaults=None):
    """The source's arguments, checked -> a complete dict; BadArgument (one sentence) otherwise."""
    defaults = ARGS if defaults is None else defaults
    if not isinstance(args, dict):
        raise BadArgument('kprobes.fleet source arguments must be a mapping, got %s' % _type_name(args))
    args = dict((k, v) for k, v in args.items() if k != 'eda_feedback_queue')  # ansible-rulebook's own
    unknown = sorted(str(k) for k in args if k not in defaults)
    if unknown:
        raise BadArgument('kprobes.fleet source: unknown argument(s) %s; known: %s'
                          % (', '.join(unknown), ', '.join(sorted(defaults))))
    out = dict(defaults, **args)
    if defaults is ARGS:
        out['path'] = check_spool_path(out['path'])
        out['from_start'] = check_bool('from_start', out['from_start'])
        out['once'] = check_bool('once', out['once'])
        out['delay'] = float(check_number('delay', out['delay'], 0, 3600))
    return out


def check_spool_path(value, name='path'):
    if not isinstance(value, str) or not value or '\0' in value or '\n' in value or not os.path.isabs(value):
        raise BadArgument('kprobes.fleet source argument %s must be the absolute path of the spool file, got %s'
                          % (name, _type_name(value)))
    try:
        st = os.stat(value)
    except FileNotFoundError:
        directory = os.path.dirname(value)
        if not os.path.isdir(directory):
            raise BadArgument('kprobes.fleet source argument %s: %s does not exist and neither does its directory %s '
                              '(the forwarder writes the spool in <kprobes_fleet_host_dir>/state)'
                              % (name, value, directory))
        return value  # the forwarder makes it with its first event
    except OSError as e:
        raise BadArgument('kprobes.fleet source argument %s: cannot look at %s: %s' % (name, value, e.strerror or e))
    if stat.S_ISDIR(st.st_mode):
        raise BadArgument('kprobes.fleet source argument %s: %s is a directory, not the spool file (%s)'
                          % (name, value, os.path.basename(DEFAULT_PATH)))
    if not stat.S_ISREG(st.st_mode):
        raise BadArgument('kprobes.fleet source argument %s: %s is not a regular file (a device, a FIFO or a socket)'
                          % (name, value))
    return value


# -- one event ----------------------------------------------------------------------------------------
def check_host(value, field='host'):
    """One inventory host name: never a group every inventory has (all, ungrouped), a pattern or a list;
    a colon only inside an IPv6 address (elsewhere it joins patterns). Same rule as events.check_host."""
    if not isinstance(value, str) or not _HOST_RE.fullmatch(value):
        raise BadEvent('%s must be one inventory host name (letters, digits, _.-), got %s' % (field, _type_name(value)))
    if value.lower() in RESERVED_HOSTS:
        raise BadEvent('%s %s names every host as a limit, not one host' % (field, json.dumps(value)))
    if ':' in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise BadEvent('%s %s is a host pattern (a colon joins patterns), not one host name'
                           % (field, json.dumps(value)))
    return value


def _name(field, value, regex, what):
    if not isinstance(value, str) or not regex.fullmatch(value):
        raise BadEvent('%s must be %s, got %s' % (field, what, _type_name(value)))
    return value


def _int(field, value, low, high, optional=False):
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadEvent('%s must be an integer from %d to %d, got %s' % (field, low, high, _type_name(value)))
    return value


def clean_comm(value):
    """A process name is whatever the process chose: a string of at most COMM_MAX characters, its
    control and format characters (escape sequences, bidi overrides, NUL) replaced by '?', and so
    is every '{' and a '#' in front (Ansible would read the name as a template, see ``inert``)."""
    if not isinstance(value, str) or len(value) > COMM_MAX:
        raise BadEvent('comm must be a process name of at most %d characters, got %s'
                       % (COMM_MAX, 'a longer string' if isinstance(value, str) else _type_name(value)))
    value = ''.join('?' if (unicodedata.category(c)[0] in 'CZ' and c != ' ') or c == '{' else c for c in value)
    return '?' + value[1:] if value.startswith('#') else value


def inert(text):
    """A captured string (event_ring's text: every byte that is not printable UTF-8, and '\\', as
    \\xHH) that no Ansible template can read as one: '{' (``{{``, ``{%``, ``{#``) and a '#' in front
    (a ``#jinja2:`` header) are written \\x7b and \\x23 too. ansible-rulebook hands an event to a
    playbook as extra vars, which ansible-core renders: a file named ``{{ lookup('pipe', 'id') }}``
    would run ``id`` on the controller. The bytes stay the same (event_ring.raw reads both back)."""
    text = text.replace('{', '\\x7b')
    return '\\x23' + text[1:] if text.startswith('#') else text


def _arg_text(field, value, limit, optional=False):
    """A captured string: at most ``limit`` characters and no control character (event_ring never
    writes one; it writes them \\xHH), made inert."""
    if optional and value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadEvent('%s must be a string of at most %d characters%s, got %s' % (
            field, limit, ' or null' if optional else '',
            'a longer string' if isinstance(value, str) else _type_name(value)))
    for c in value:
        kind = {'Cc': 'control character', 'Cs': 'lone surrogate'}.get(unicodedata.category(c))
        if kind:
            raise BadEvent('%s holds the %s U+%04X (the forwarder writes each byte it cannot print as \\xHH)'
                           % (field, kind, ord(c)))
    return inert(value)


def _arg_value(field, value):
    if isinstance(value, dict):
        if not set(value) <= set(FILE_KEYS) or not {'path', 'fs', 'dev'} <= set(value):
            keys = sorted(json.dumps(str(k)[:40]) for k in value)
            raise BadEvent('%s: a file has the keys path, fs and dev, and may have mount and device; got %s'
                           % (field, ', '.join(keys[:8]) + (', ...' if len(keys) > 8 else '') if keys else 'none'))
        out = {'path': _arg_text(field + '.path', value['path'], ARGS_PATH_MAX, optional=True),
               'fs': _arg_text(field + '.fs', value['fs'], ARGS_FS_MAX),
               'dev': _name(field + '.dev', value['dev'], _DEV_RE, 'a device number <major>:<minor>')}
        for key in ('mount', 'device'):
            if key in value:
                out[key] = _arg_text('%s.%s' % (field, key), value[key], ARGS_MOUNT_MAX, optional=True)
        return out
    if value is None:
        return None
    if isinstance(value, str):
        return _arg_text(field, value, ARGS_TEXT_MAX)
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(field, value, -2 ** 63, 2 ** 64 - 1)
    raise BadEvent('%s must be a number, a string, null or a file ({path, fs, dev, mount, device}), got %s'
                   % (field, _type_name(value)))


def check_args_keys(event):
    """The keys of an event of a probe with ``args`` -> {key: checked value} (none for other events)."""
    out = {}
    for key in ('tid', 'uid'):  # every event of the module backend has them, with or without args
        if key in event:
            out[key] = _int(key, event[key], 0, 2 ** 32 - 1)
    for key in WHOSE_KEYS:  # cgroup path and unit: text a process's owner chose, made inert
        if key in event:
            out[key] = _arg_text(key, event[key], CGROUP_TEXT_MAX, optional=True)
    present = [k for k in ARGS_KEYS[:3] if k in event]
    if not present:
        return out
    for key in ('args', 'tid', 'uid'):
        if key not in event:
            raise BadEvent('an event with %s must have args, tid and uid' % ', '.join(present))
    args = event['args']
    if not isinstance(args, dict) or len(args) > ARGS_MAX:
        raise BadEvent('args must be a mapping of at most %d argument names, got %s'
                       % (ARGS_MAX, '%d names' % len(args) if isinstance(args, dict) else _type_name(args)))
    out['args'] = {}
    for name, value in args.items():
        _name('an argument name', name, _ARG_NAME_RE, 'a name [a-z][a-z0-9_], at most 16')
        out['args'][name] = _arg_value('args.' + name, value)
    if 'args_truncated' in event:
        cut = event['args_truncated']
        if not isinstance(cut, list) or not cut or len(set(str(n) for n in cut)) != len(cut) \
                or not all(isinstance(n, str) and n in args for n in cut):
            raise BadEvent('args_truncated must be a list of names of args, each once, got %s' % _type_name(cut))
        out['args_truncated'] = list(cut)
    if 'args_errors' in event:
        errors = event['args_errors']
        if not isinstance(errors, dict) or not errors or not all(isinstance(n, str) and n in args for n in errors):
            raise BadEvent('args_errors must be a mapping of names of args to errno names, got %s' % _type_name(errors))
        out['args_errors'] = dict((n, _name('args_errors.' + n, e, _ERRNO_RE, 'an errno name')) for n, e in errors.items())
    return out


def check_event(event):
    """One event as the forwarder makes it -> a new dict with exactly EVENT_KEYS (and those of ARGS_KEYS
    it has), every field checked; BadEvent says what is wrong. Nothing of the input but these checked
    values is passed on."""
    if not isinstance(event, dict):
        raise BadEvent('an event must be a JSON object, got %s' % _type_name(event))
    missing = [k for k in EVENT_KEYS if k not in event]
    extra = sorted(str(k)[:40] for k in event if k not in EVENT_KEYS + ARGS_KEYS + LATENCY_KEYS + WHOSE_KEYS)
    if missing or extra:
        raise BadEvent('an event has exactly the keys %s, and may have %s%s%s' % (
            ', '.join(EVENT_KEYS), ', '.join(ARGS_KEYS + LATENCY_KEYS + WHOSE_KEYS), '; missing: %s' % ', '.join(missing) if missing else '',
            '; unknown: %s' % ', '.join(extra) if extra else ''))
    ts = event['ts']
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or not 0 <= ts < 1e10:
        raise BadEvent('ts must be the seconds since boot (a number), got %s' % _type_name(ts))
    checked = check_args_keys(event)
    if 'lat_ns' in event:
        checked['lat_ns'] = _int('lat_ns', event['lat_ns'], 0, 2 ** 63 - 1)
    checked.update({
        'host': check_host(event['host']),
        'probe': _name('probe', event['probe'], _PROBE_RE, 'a probe name ([a-z][a-z0-9_], at most 32)'),
        'function': _name('function', event['function'], _FUNCTION_RE, 'a kernel function name'),
        'ret': _int('ret', event['ret'], -2 ** 63, 2 ** 64 - 1),
        'errno': None if event['errno'] is None else _name('errno', event['errno'], _ERRNO_RE, 'an errno name or null'),
        'pid': _int('pid', event['pid'], 0, 2 ** 31 - 1),
        'comm': clean_comm(event['comm']),
        'ts': ts,
        'boot_id': _name('boot_id', event['boot_id'], _BOOT_ID_RE, 'a boot id (letters, digits, -)'),
        'seq': _int('seq', event['seq'], 0, 2 ** 63 - 1, optional=True),
        'burst': _name('burst', event['burst'], _BURST_RE, 'a burst name (letters, digits, _.:+-, at most 160)'),
    })
    return checked


def parse_line(line):
    """One spool line -> the checked event, or None (logged with the reason)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    try:
        return check_event(event)
    except BadEvent as e:
        logger.warning('kprobes.fleet.spool: an event refused: %s', e)
        return None


# -- tokens (used by the kprobes.fleet.webhook source) -----------------------------------------------------
def token_for(key, host):
    """The bearer token of ``host``: HMAC-SHA256 of its inventory name under the events key, hex."""
    return hmac.new(key, TOKEN_CONTEXT + host.encode('utf-8'), hashlib.sha256).hexdigest()


def read_key(path, name='key_file'):
    """The events key the deploy made (kprobes_fleet_events.key_file): a regular file of this user's that
    nobody else may read, holding 64 hex digits. Never made here: without it nothing is accepted."""
    if not isinstance(path, str) or not path or '\0' in path:
        raise BadArgument('kprobes.fleet source argument %s must be the path of the events key, got %s'
                          % (name, _type_name(path)))
    path = os.path.expanduser(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BadArgument('kprobes.fleet source argument %s: there is no events key at %s; a deploy with '
                          'kprobes_fleet_events makes it (kprobes_fleet_events.key_file), and without it no post '
                          'can be authenticated' % (name, path))
    except OSError as e:
        raise BadArgument('kprobes.fleet source argument %s: cannot read %s: %s' % (name, path, e.strerror or e))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadArgument('kprobes.fleet source argument %s: %s is not a regular file' % (name, path))
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise BadArgument('kprobes.fleet source argument %s: the events key %s must be yours and readable by '
                              'you alone (owner uid %d, mode %04o; chmod 600)'
                              % (name, path, st.st_uid, stat.S_IMODE(st.st_mode)))
        text = os.read(fd, 4096).decode('ascii', 'replace').strip()
    finally:
        os.close(fd)
    if len(text) != KEY_HEX_LEN or not re.fullmatch(r'[0-9a-f]+', text):
        raise BadArgument('kprobes.fleet source argument %s: %s does not hold an events key (%d lower-case hex '
                          'digits)' % (name, path, KEY_HEX_LEN))
    return bytes.fromhex(text)


class SpoolReader(object):
    """Follows a file across rotation; ``read()`` returns the complete new lines."""

    def __init__(self, path, from_start=False):
        self.path = path
        self.file = None
        self.inode = None
        self.pending = b''
        self.skipped = 0
        self.open(from_start)

    def open(self, from_start):
        try:
            self.file = open(self.path, 'rb')  # pylint: disable=consider-using-with
        except (IOError, OSError):
            self.file, self.inode = None, None
            return
        self.inode = os.fstat(self.file.fileno()).st_ino
        if not from_start:
            self.file.seek(0, os.SEEK_END)

    def _lines(self):
        data = self.pending + self.file.read()
        lines = data.split(b'\n')
        self.pending = lines.pop()
        return lines

    def read(self):
        lines = []
        if self.file is None:
            self.open(True)  # the forwarder created it after we started: every line is new
            if self.file is None:
                return []
        lines += self._lines()
        try:
            st = os.stat(self.path)
        except (IOError, OSError):
            st = None
        if st is not None and (st.st_ino != self.inode or st.st_size < self.file.tell()):
            # rotated (or truncated): what was left in the old file is read above; go on with the new one
            self.file.close()
            self.pending = b''
            self.open(True)
            if self.file is not None:
                lines += self._lines()
        events = []
        for line in lines:
            if not line.strip():
                continue
            event = parse_line(line.decode('utf-8', 'replace'))
            if event is None:
                self.skipped += 1
                logger.warning('kprobes.fleet.spool: skipped a line of %s that is not an event', self.path)
                continue
            events.append(event)
        return events

    def close(self):
        if self.file is not None:
            self.file.close()


async def main(queue, args):
    """Put the spool's events on the rulebook's queue (arguments checked first: BadArgument)."""
    args = check_args(args)
    reader = SpoolReader(args['path'], args['from_start'])
    try:
        while True:
            for event in reader.read():
                await queue.put(event)
            if args['once']:
                return
            await asyncio.sleep(args['delay'])
    finally:
        reader.close()


if __name__ == '__main__':
    import sys

    class PrintQueue(object):
        async def put(self, event):
            print(json.dumps(event, sort_keys=True))

    asyncio.run(main(PrintQueue(), {'path': sys.argv[1], 'from_start': True, 'once': True}))
