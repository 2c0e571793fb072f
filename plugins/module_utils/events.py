# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe matches as events, as they happen: the host-side forwarder (README, "Events").

The unit ``kprobes-fleet-<name>-events.service`` (installed by the event_forwarder module) runs
``run()`` through the copy of these module_utils kept in ``<host_dir>/lib``. It reads our
module's match lines from /dev/kmsg (kernel facility only, ``kmsg.collect``), the matches of
probes with ``args`` from the module's root-only ring ``/proc/<name>.events`` (``event_ring``) and,
when the tracefs backend runs, our instance's ``trace`` file (``tracefs_buffer.select_new``), with
cursors of its own (``<state_dir>/<name>.events-cursor``: the collector's cursors are never touched),
turns every match into one event ``{host, probe, function, ret, errno, pid, comm, ts, boot_id, seq,
burst}`` (a match with captured arguments also ``args``, ``tid``, ``uid`` and, when a value was cut or
could not be read, ``args_truncated`` / ``args_errors``) and POSTs batches of them as
``{"kprobes_fleet": {...}, "events": [...]}`` to ``url`` (the ``eda.builtin.webhook`` source of
ansible-rulebook, with ``eda.builtin.event_splitter`` on ``payload.events``). A flood never becomes a flood of requests: events wait in a bounded queue,
leave in batches, at most ``rate`` requests a second; a failed request is retried with back-off;
whatever has to be given up is counted in ``dropped`` (never silently lost). Its counters are in
``<state_dir>/<name>.events-status.json``, which probe_facts reports as ``forwarder``.

Standard library only: this file runs on hosts without Ansible (Python 3.6+).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import hashlib
import hmac
import ipaddress
import json
import os
import re
import select
import signal
import time

from ansible_collections.kprobes.fleet.plugins.module_utils import event_ring, kmsg, names, tracefs_buffer, tracefs_counters
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_probes import TraceProbes
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import TracefsError
from ansible_collections.kprobes.fleet.plugins.module_utils.host_state import atomic_write, state_file
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_json

from http.client import HTTPException
from urllib import request as urlrequest
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

VARIABLE = 'kprobes_fleet_events'
# key: (default, low, high, meaning); every number is an integer.
NUMBERS = collections.OrderedDict([
    ('batch_size', (100, 1, 1000, 'events per request')),
    ('batch_wait_ms', (200, 0, 60000, 'how long the first queued event waits for others, ms')),
    ('queue_size', (10000, 1, 1000000, 'events held while the endpoint is slow or down')),
    ('rate', (5, 1, 100, 'requests per second at most')),
    ('retry_max_s', (30, 1, 3600, 'longest back-off between retries, s')),
    ('timeout_s', (5, 1, 60, 'seconds one request may take')),
    ('burst_gap_s', (60, 1, 86400, 'quiet seconds that end a burst of matches')),
    ('poll_ms', (500, 50, 10000, 'how often the tracefs buffer and the ring of events with args are read, ms')),
    ('spool_max_kb', (1024, 16, 1048576, 'size of the JSONL spool before it is rotated, KiB')),
])
BOOLS = collections.OrderedDict([('spool', False)])
STRINGS = ('url', 'token')
KEYS = STRINGS + tuple(NUMBERS) + tuple(BOOLS)
LOOPBACK_HOSTS = ('localhost', '::1')
RETRY_FIRST_S = 0.5
EVENT_KEYS = ('host', 'probe', 'function', 'ret', 'errno', 'pid', 'comm', 'ts', 'boot_id', 'seq', 'burst')
# Only the events of probes with ``args`` (read from event_ring) have these.
ARGS_KEYS = ('args', 'args_truncated', 'args_errors', 'tid', 'uid')
# Whose (#23): the process's cgroup v2 path and its systemd unit (module backend; tid and uid too, also
# without args). At most 127 bytes each, every byte shown as \xHH at worst, after "..." when cut.
WHOSE_KEYS = ('cgroup', 'unit')
CGROUP_TEXT_MAX = 520
# Longest strings of an args event, in characters (a unit test holds the event source's equal):
# 255 bytes captured, each shown as \xHH at worst; a file's fs type; a mount point or its source
# (PATH_MAX); a file's path is its mount point and the captured path below it.
ARGS_TEXT_MAX = 1100
ARGS_FS_MAX = 130
ARGS_MOUNT_MAX = 4096
ARGS_PATH_MAX = ARGS_MOUNT_MAX + ARGS_TEXT_MAX
_ERRNO_NAME_RE = re.compile(r'E[A-Z0-9]{1,15}')
_PARTIAL_ESCAPE_RE = re.compile(r'\\(x[0-9a-f]?)?$')
_TOKEN_RE = re.compile(r'[A-Za-z0-9._~+/=-]{16,512}')
_HOST_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}')
# Group names every inventory has: as a playbook limit they mean every host.
RESERVED_HOSTS = ('all', 'ungrouped')
# A host's bearer token is derived from the controller's events key and its inventory name
# (token_for); the event source kprobes.fleet.webhook derives it again to authenticate the sender.
TOKEN_CONTEXT = b'kprobes.fleet events token v1\0'
KEY_HEX_LEN = 64
_URL_BAD = re.compile(r'[\s\'"`$;&|<>\\{}^!*()]')
_URL_HOST_RE = re.compile(r'[a-z0-9]([a-z0-9.-]{0,252}[a-z0-9])?|[0-9a-f:.]{2,45}')


class EventsError(Exception):
    pass


def is_loopback(hostname):
    hostname = (hostname or '').strip('[]').lower()
    if hostname in LOOPBACK_HOSTS:
        return True
    parts = hostname.split('.')
    return len(parts) == 4 and parts[0] == '127' and all(p.isdigit() and int(p) < 256 for p in parts)


def check_url(field, value):
    """An http(s) URL without credentials or shell/template characters; plain http only to this
    host's loopback (a reverse SSH tunnel, a local agent): anything else must be https."""
    if not isinstance(value, str) or not value:
        raise names.InvalidValue('%s: must be the endpoint URL (http://127.0.0.1:5000/endpoint or https://...), '
                                 'got %s' % (field, names.type_name(value)))
    if len(value) > 2048 or _URL_BAD.search(value) or any(ord(c) < 32 or ord(c) > 126 for c in value):
        raise names.InvalidValue('%s: %s holds a character a URL of an endpoint never needs (spaces, quotes, '
                                 'shell or template characters)' % (field, names.shown(value)))
    parts = urlsplit(value)
    if parts.scheme not in ('http', 'https'):
        raise names.InvalidValue('%s: the scheme must be http or https, got %s' % (field, names.shown(parts.scheme or value)))
    if '@' in parts.netloc:
        raise names.InvalidValue('%s: no user or password in the URL (use token), got %s' % (field, names.shown(value)))
    if not _URL_HOST_RE.fullmatch(parts.hostname or ''):
        raise names.InvalidValue('%s: %s has no valid host name' % (field, names.shown(value)))
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise names.InvalidValue('%s: the port of %s must be between 1 and 65535' % (field, names.shown(value)))
    if parts.scheme == 'http' and not is_loopback(parts.hostname):
        raise names.InvalidValue('%s: plain http only to the host\'s own loopback (127.0.0.1, ::1, localhost; '
                                 'a reverse SSH tunnel to the controller); use https for %s' % (field, parts.hostname))
    return value


def check_config(value, field=VARIABLE, controller_keys=()):
    """``kprobes_fleet_events`` as the user wrote it -> {} (off) or the full, normalised settings.

    ``controller_keys`` (the controller's own, such as key_file) are allowed and left out of the result."""
    if value is None or (isinstance(value, (str, dict)) and not value):
        return {}
    if not isinstance(value, dict):
        raise names.InvalidValue('%s: must be a mapping with at least url (or empty: no events), got %s'
                                 % (field, names.type_name(value)))
    known = KEYS + tuple(controller_keys)
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise names.InvalidValue('%s: unknown key(s) %s; known: %s' % (field, ', '.join(unknown), ', '.join(known)))
    out = {'url': check_url('%s.url' % field, value.get('url'))}
    out['token'] = check_token(value.get('token'), '%s.token' % field)
    for key, (default, low, high, why) in NUMBERS.items():
        out[key] = names.as_int('%s.%s' % (field, key), value.get(key, default), low, high, why)
    for key, default in BOOLS.items():
        out[key] = names.as_bool('%s.%s' % (field, key), value.get(key, default))
    return out


def check_token(value, field='%s.token' % VARIABLE):
    """Unset (None or '': the deploy derives the host's own token) or a bearer token string.

    Anything else is a mistake, never "no token": ``0``, ``false``, ``no`` (YAML reads them as a number
    or a boolean), ``[]``, a mapping, or a string too short to be a secret."""
    if value is None or value == '':
        return ''
    if not isinstance(value, str):
        raise names.InvalidValue('%s: must be a bearer token string of 16 to 512 characters (or unset: the deploy '
                                 'gives each host a token of its own), got %s; quote it if it is meant as text'
                                 % (field, names.type_name(value)))
    if not _TOKEN_RE.fullmatch(value):
        raise names.InvalidValue('%s: must be a bearer token of 16 to 512 characters (letters, digits, ._~+/=-), '
                                 'got a string of %d characters%s' % (
                                     field, len(value), '' if re.fullmatch(r'[A-Za-z0-9._~+/=-]*', value)
                                     else ' with other characters'))
    return value


def check_host(value, field='host'):
    """One inventory host name, as an event carries it and a playbook limit takes it: never a group
    every inventory has (all, ungrouped), a pattern (globs, commas, ranges, ~regex, !, &) or a list.
    A colon only in an IPv6 address (elsewhere it separates patterns)."""
    if not isinstance(value, str) or not _HOST_RE.fullmatch(value):
        raise names.InvalidValue('%s: must be one inventory host name (letters, digits, _.-), got %s' % (field, names.shown(value)))
    if value.lower() in RESERVED_HOSTS:
        raise names.InvalidValue('%s: %s names every host as a limit, not one host' % (field, names.shown(value)))
    if ':' in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise names.InvalidValue('%s: %s is a host pattern (a colon joins patterns), not one host name'
                                     % (field, names.shown(value)))
    return value


def check_key(data, where):
    """The events key file's content (bytes): 64 hex digits and a newline -> the key (bytes)."""
    text = data.decode('ascii', 'replace').strip()
    if len(text) != KEY_HEX_LEN or not re.fullmatch(r'[0-9a-f]+', text):
        raise names.InvalidValue('%s does not hold an events key (%d lower-case hex digits); remove it and '
                                 'deploy again to make a new one (every forwarder gets a new token)'
                                 % (where, KEY_HEX_LEN))
    return bytes.fromhex(text)


def token_for(key, host):
    """The bearer token of ``host`` (its inventory name): HMAC-SHA256 of the name under the key, hex."""
    return hmac.new(key, TOKEN_CONTEXT + host.encode('utf-8'), hashlib.sha256).hexdigest()


# -- paths ----------------------------------------------------------------------------------------
def files(state_dir, name):
    """Every file the forwarder and its installer keep in the state directory."""
    spool = state_file(state_dir, name, 'events-spool')
    return [state_file(state_dir, name, what) for what in ('events-config', 'events-status', 'events-cursor')] \
        + [spool, spool + '.1']


# -- the event --------------------------------------------------------------------------------------
def event_of(host, boot_id, fact, burst):
    """One match (a probe_facts event) as the event that leaves the host; a match with captured
    arguments (event_ring) also carries them (``args_of``)."""
    event = {'host': host, 'probe': fact['probe'], 'function': fact['function'], 'ret': fact['ret'],
             'errno': fact.get('errno'), 'pid': fact['pid'], 'comm': fact['comm'], 'ts': fact['ts'],
             'boot_id': boot_id, 'seq': fact.get('seq'), 'burst': burst}
    for key in ('tid', 'uid'):  # every event of the module backend says whose
        if isinstance(fact.get(key), int) and not isinstance(fact.get(key), bool) and 0 <= fact[key] < 2 ** 32:
            event[key] = fact[key]
    for key in WHOSE_KEYS:
        if isinstance(fact.get(key), str):
            event[key] = _text(fact[key], CGROUP_TEXT_MAX)[0]
    if isinstance(fact.get('args'), dict):
        event.update(args_of(fact))
    if isinstance(fact.get('lat_ns'), int) and not isinstance(fact.get('lat_ns'), bool) and fact['lat_ns'] >= 0:
        event['lat_ns'] = fact['lat_ns']  # a probe that times its calls (latency, slower_than)
    return event


def _text(value, limit):
    """(text, cut): a captured string as an event carries it: shown() text (event_ring) stays byte for
    byte; a control character or a lone surrogate it could still hold (a mount point from mountinfo is
    not shown() text) is written ``\\xHH`` like shown() does, so that the event source, which refuses
    them, never refuses a batch for it; beyond ``limit`` characters it is cut (never inside an escape)."""
    out = []
    for ch in value:
        code = ord(ch)
        if 0xdc80 <= code <= 0xdcff:
            out.append('\\x%02x' % (code - 0xdc00))
        elif 0xd800 <= code <= 0xdfff:
            out.append('?')
        elif code < 0x20 or 0x7f <= code <= 0x9f:
            out.extend('\\x%02x' % b for b in ch.encode('utf-8'))
        else:
            out.append(ch)
    text = ''.join(out)
    if len(text) <= limit:
        return text, False
    return _PARTIAL_ESCAPE_RE.sub('', text[:limit]), True


def _errno_name(err):
    """An errno name as event_ring gives it; a number it has no name for (``-1234``) as ``E1234``."""
    text = str(err)
    if _ERRNO_NAME_RE.fullmatch(text):
        return text
    m = re.fullmatch(r'-?([0-9]{1,15})', text)
    return 'E%s' % m.group(1) if m else 'EUNKNOWN'


def args_of(fact):
    """The keys an event of a probe with ``args`` adds: ``args`` ({name: int | str | None | {path, fs,
    dev, mount, device}}), ``tid``, ``uid``, and ``args_truncated`` (names, sorted) / ``args_errors``
    ({name: errno name}) when there are any. A value longer than the event source takes is cut and
    its name added to ``args_truncated``: nothing leaves the host that the source would refuse."""
    cut = set(n for n in fact.get('args_truncated') or () if n in fact['args'])
    args = {}
    for name, value in fact['args'].items():
        if isinstance(value, dict):
            info = {}
            for key, limit in (('path', ARGS_PATH_MAX), ('fs', ARGS_FS_MAX), ('dev', ARGS_TEXT_MAX),
                               ('mount', ARGS_MOUNT_MAX), ('device', ARGS_MOUNT_MAX)):
                if key not in value:
                    continue
                if isinstance(value[key], str):
                    info[key], was_cut = _text(value[key], limit)
                    if was_cut:
                        cut.add(name)
                else:
                    info[key] = None
            value = info
        elif isinstance(value, str):
            value, was_cut = _text(value, ARGS_TEXT_MAX)
            if was_cut:
                cut.add(name)
        elif isinstance(value, bool) or not isinstance(value, int):
            value = None
        args[name] = value
    out = {'args': args, 'tid': fact.get('tid'), 'uid': fact.get('uid')}
    if cut:
        out['args_truncated'] = sorted(cut)
    errors = dict((name, _errno_name(err)) for name, err in (fact.get('args_errors') or {}).items() if name in args)
    if errors:
        out['args_errors'] = errors
    return out


class Bursts(object):
    """Names bursts: matches of one probe with one errno no more than ``gap`` seconds apart (kernel
    time, seconds since boot) belong to the burst named after the first one's time."""

    def __init__(self, gap):
        self.gap = gap
        self.last = {}

    def name(self, fact):
        key = (fact['probe'], fact.get('errno'))
        ts = fact['ts']
        start, last = self.last.get(key, (None, None))
        if start is None or ts - last > self.gap or ts < last:
            start = ts
        self.last[key] = (start, ts)
        return '%s:%s:%.6f' % (fact['probe'], fact.get('errno') or fact['ret'], start)


# -- delivery -----------------------------------------------------------------------------------------
class SendError(Exception):
    def __init__(self, msg, permanent=False):
        Exception.__init__(self, msg)
        self.permanent = permanent


class Forwarder(object):
    """Bounded queue, batches, a token bucket on requests, back-off; every event is sent or counted.

    ``send(batch)`` delivers a list of events or raises SendError (``permanent``: the endpoint
    refused this batch, retrying cannot help: it is dropped and counted). Times are seconds of a
    monotonic clock handed in by the caller, so the logic is tested without sleeping."""

    def __init__(self, config, send):
        self.cfg = config
        self.send = send
        self.queue = collections.deque()
        self.tokens = float(config['rate'])
        self.refilled = None
        self.next_try = 0.0
        self.backoff = 0.0
        self.counts = {'received': 0, 'sent': 0, 'dropped': 0, 'requests': 0, 'failures': 0}
        self.dropped_why = {}
        self.last_error = None
        self.last_error_at = None
        self.last_sent_at = None

    def drop(self, count, why):
        self.counts['dropped'] += count
        self.dropped_why[why] = self.dropped_why.get(why, 0) + count

    def offer(self, events, now):
        """Queue new events; beyond ``queue_size`` the newest are dropped (and counted)."""
        for ev in events:
            self.counts['received'] += 1
            if len(self.queue) >= self.cfg['queue_size']:
                self.drop(1, 'queue full')
            else:
                self.queue.append((now, ev))

    def _refill(self, now):
        if self.refilled is not None:
            rate = float(self.cfg['rate'])
            self.tokens = min(rate, self.tokens + (now - self.refilled) * rate)
        self.refilled = now

    def ready_at(self, now):
        """When the next request may leave (None: nothing queued)."""
        if not self.queue:
            return None
        at = self.next_try
        if len(self.queue) < self.cfg['batch_size']:
            at = max(at, self.queue[0][0] + self.cfg['batch_wait_ms'] / 1000.0)
        self._refill(now)
        if self.tokens < 1:
            at = max(at, now + (1 - self.tokens) / float(self.cfg['rate']))
        return at

    def pump(self, now, wall=None):
        """Send what is due now, as far as the rate allows; returns the number of requests made."""
        made = 0
        while True:
            at = self.ready_at(now)
            if at is None or at > now:
                return made
            self.tokens -= 1
            made += 1
            batch = [ev for dummy, ev in list(self.queue)[:self.cfg['batch_size']]]
            try:
                self.send(batch)
            except SendError as e:
                self.counts['failures'] += 1
                self.last_error = str(e)
                self.last_error_at = wall
                if e.permanent:
                    for dummy in batch:
                        self.queue.popleft()
                    self.drop(len(batch), 'refused by the endpoint')
                    continue
                self.backoff = min(float(self.cfg['retry_max_s']), self.backoff * 2 or RETRY_FIRST_S)
                self.next_try = now + self.backoff
                return made
            for dummy in batch:
                self.queue.popleft()
            self.counts['sent'] += len(batch)
            self.counts['requests'] += 1
            self.backoff = 0.0
            self.next_try = 0.0
            self.last_sent_at = wall

    def close(self, now, wall=None):
        """At stop: one last try (no waiting for a batch to fill), then count what is left."""
        if self.queue and self.next_try <= now:
            self.cfg = dict(self.cfg, batch_wait_ms=0)
            self.tokens = max(self.tokens, 1.0)
            self.pump(now, wall)
        if self.queue:
            self.drop(len(self.queue), 'stopped before delivery')
            self.queue.clear()

    def status(self):
        out = dict(self.counts)
        out.update(queued=len(self.queue), dropped_why=dict(self.dropped_why), last_error=self.last_error,
                   last_error_at=self.last_error_at, last_sent_at=self.last_sent_at)
        return out


class HttpSender(object):
    """POSTs a batch as JSON; never through a proxy (the endpoint is the one configured)."""

    def __init__(self, config, host):
        self.url = config['url']
        self.token = config['token']
        self.timeout = config['timeout_s']
        self.host = host
        self.opener = urlrequest.build_opener(urlrequest.ProxyHandler({}))

    def body(self, batch):
        return json.dumps({'kprobes_fleet': {'host': self.host, 'count': len(batch)}, 'events': batch},
                          sort_keys=True).encode('utf-8')

    def __call__(self, batch):
        req = urlrequest.Request(self.url, data=self.body(batch), method='POST',
                                 headers={'Content-Type': 'application/json',
                                          'User-Agent': 'kprobes.fleet-events'})
        if self.token:
            req.add_header('Authorization', 'Bearer %s' % self.token)
        try:
            with self.opener.open(req, timeout=self.timeout) as res:
                res.read()
        except HTTPError as e:
            raise SendError('%s answered HTTP %d %s' % (self.url, e.code, e.reason),
                            permanent=400 <= e.code < 500 and e.code not in (408, 425, 429))
        except (URLError, HTTPException, OSError, ValueError) as e:
            raise SendError('%s: %s' % (self.url, getattr(e, 'reason', None) or e))


class Spool(object):
    """Append-only JSONL copy of every event (for the kprobes.fleet.spool source on the
    host itself); rotated to ``.1`` beyond ``max_bytes``."""

    def __init__(self, path, max_bytes):
        self.path = path
        self.max_bytes = max_bytes

    def write(self, events):
        if not events:
            return
        data = ''.join(json.dumps(ev, sort_keys=True) + '\n' for ev in events).encode('utf-8')
        try:
            if os.path.getsize(self.path) + len(data) > self.max_bytes:
                os.rename(self.path, self.path + '.1')
        except OSError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


# -- sources ---------------------------------------------------------------------------------------------
class KmsgSource(object):
    """Our module's matches from /dev/kmsg, after a cursor of the forwarder's own; on its first start
    in a boot it begins after the newest record (what is already in the ring is the collector's)."""

    def __init__(self, name, boot_id, cursor=None, path=kmsg.KMSG_PATH):
        self.name = name
        self.boot_id = boot_id
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        if cursor is None or cursor.get('boot_id') != boot_id:
            last = None
            for rec in kmsg.read_records(self.fd):
                last = rec['seq']
            cursor = {'boot_id': boot_id, 'next_seq': 0 if last is None else last + 1}
        self.cursor = cursor

    def read(self):
        events, lost, self.cursor = kmsg.collect(kmsg.read_records(self.fd), self.name, self.cursor, self.boot_id)
        return events, lost

    def close(self):
        os.close(self.fd)


class RingSource(object):
    """The matches of probes with ``args``, from the module's root-only ring ``/proc/<name>.events``
    (``event_ring.collect``: its parser, the mount points in front of file paths), after a cursor of
    the forwarder's own, ``{boot_id: '<boot id>/<ring id>', next_seq}``. On its first start in a boot,
    or on a ring other than its cursor's (the module was reloaded while it was stopped), it begins
    after the newest record (what is already in the ring is the collector's); a ring made while it
    runs (a load, a reload) is read from its first record. Without a ring (no probe with ``args``,
    no module) it yields nothing. A gap in the sequence numbers is records lost."""

    def __init__(self, name, boot_id, cursor=None, root='/'):
        self.name = name
        self.boot_id = boot_id
        self.root = root
        rid = event_ring.ring_id(name, root)
        if rid is not None and _ring_cursor(cursor) and cursor['boot_id'] == '%s/%s' % (boot_id, rid):
            self.cursor = {'boot_id': cursor['boot_id'], 'next_seq': cursor['next_seq']}
        else:
            self.cursor = None
            if rid is not None:
                dummy, dummy, self.cursor = self._collect(None)

    def _collect(self, cursor):
        try:
            return event_ring.collect(self.name, cursor, self.boot_id, self.root)
        except (IOError, OSError):  # the module went away while it was read: the next look tells
            return None, 0, cursor

    def read(self):
        # No cursor yet: the ring was made after the start, so all of it is new, from seq 0 (a gap is lost).
        events, lost, cursor = self._collect(self.cursor or {'boot_id': '', 'next_seq': 0})
        if events is None:
            return [], 0
        self.cursor = cursor
        return events, lost


def _ring_cursor(cursor):
    return isinstance(cursor, dict) and isinstance(cursor.get('boot_id'), str) \
        and isinstance(cursor.get('next_seq'), int) and not isinstance(cursor.get('next_seq'), bool) \
        and cursor['next_seq'] >= 0


class TraceSource(object):
    """The tracefs backend's matches, from our instance's ``trace`` (read, never consumed: the
    collector reads it too), after a cursor of the forwarder's own."""

    def __init__(self, name, boot_id, state_dir, cursor=None, root='/'):
        self.backend = TraceProbes(name, root=root, state_dir=state_dir)
        self.boot_id = boot_id
        self.cursor = cursor if cursor and cursor.get('boot_id') == boot_id else None

    def read(self):
        state = self.backend.current_state(self.boot_id)
        if state is None or self.backend.tracefs is None or not os.path.isdir(self.backend.instance_dir()):
            return [], 0
        try:
            parsed = tracefs_buffer.read_events(self.backend, state)
            stats = tracefs_counters.cpu_stats(self.backend)
        except TracefsError:
            return [], 0
        cur = self.cursor
        if cur is None or cur.get('instance') != state.get('created'):
            # first look at this instance: start after what is in it now
            last = parsed[-1]['ts_usec'] if parsed else None
            self.cursor = {'boot_id': self.boot_id, 'instance': state.get('created'), 'ts_usec': last,
                           'at_ts': sum(1 for ev in parsed if ev['ts_usec'] == last), 'next_seq': 0, 'cpus': stats}
            return [], 0
        lost = tracefs_buffer.lost_since(cur.get('cpus') or {}, stats)
        new, ts_usec, at_ts = tracefs_buffer.select_new(parsed, cur.get('ts_usec'), cur.get('at_ts', 0))
        by_name = dict((ev['name'], ev) for ev in state['events'])
        seq = cur.get('next_seq', 0)
        facts = []
        for ev in new:
            fact = tracefs_buffer.as_fact(ev, by_name[ev['event']])
            fact['seq'] = seq
            seq += 1
            facts.append(fact)
        self.cursor = dict(cur, ts_usec=ts_usec, at_ts=at_ts, next_seq=seq, cpus=stats)
        return facts, lost


# -- status, seen by probe_facts -----------------------------------------------------------------------------
def read_status(state_dir, name, pid_alive=None):
    """The forwarder's last status, plus ``running`` (its process is alive), or None when it never ran."""
    data = read_json(state_file(state_dir, name, 'events-status'))
    if data is None or data.get('mark') != names.MARK:
        return None
    pid = data.get('pid')
    alive = pid_alive or _pid_alive
    data['running'] = bool(isinstance(pid, int) and not data.get('stopped') and alive(pid))
    return data


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class Runner(object):
    """The forwarder's main loop: read sources, queue, send, write the status."""

    def __init__(self, name, state_dir, root='/'):
        self.name = names.module_name(name, 'name')
        host_state = names.host_path(state_dir, 'state_dir')
        self.state_dir = os.path.join(root, host_state.lstrip('/'))
        self.root = root
        state_dir = self.state_dir
        with open(state_file(state_dir, self.name, 'events-config')) as f:
            raw = json.load(f)
        self.host = check_host(raw.get('host'))
        self.cfg = check_config(raw.get('config'))
        if not self.cfg:
            raise EventsError('%s: no endpoint configured' % state_file(state_dir, self.name, 'events-config'))
        self.boot_id = kmsg.read_boot_id(os.path.join(root, kmsg.BOOT_ID_PATH.lstrip('/')))
        self.stopping = False
        saved = read_json(state_file(state_dir, self.name, 'events-cursor')) or {}
        status = read_status(state_dir, self.name) or {}
        self.forwarder = Forwarder(self.cfg, HttpSender(self.cfg, self.host))
        if status.get('boot_id') == self.boot_id:  # counters continue within a boot
            for key in self.forwarder.counts:
                if isinstance(status.get(key), int):
                    self.forwarder.counts[key] = status[key]
            self.forwarder.dropped_why = dict(status.get('dropped_why') or {})
        self.lost = status.get('lost', 0) if status.get('boot_id') == self.boot_id else 0
        self.kmsg = KmsgSource(self.name, self.boot_id, saved.get('kmsg'),
                               os.path.join(root, kmsg.KMSG_PATH.lstrip('/')))
        self.ring = RingSource(self.name, self.boot_id, saved.get('ring'), root)
        self.trace = TraceSource(self.name, self.boot_id, host_state, saved.get('tracefs'), root)
        self.bursts = Bursts(self.cfg['burst_gap_s'])
        self.spool = Spool(state_file(state_dir, self.name, 'events-spool'), self.cfg['spool_max_kb'] * 1024) \
            if self.cfg['spool'] else None
        self.started = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())

    def save(self, stopped=False):
        status = self.forwarder.status()
        status.update(mark=names.MARK, pid=os.getpid(), boot_id=self.boot_id, host=self.host,
                      url=self.cfg['url'], started=self.started, lost=self.lost, stopped=stopped,
                      updated=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        atomic_write(state_file(self.state_dir, self.name, 'events-status'),
                     json.dumps(status, indent=1, sort_keys=True).encode('utf-8'), 0o600)
        atomic_write(state_file(self.state_dir, self.name, 'events-cursor'),
                     json.dumps({'kmsg': self.kmsg.cursor, 'ring': self.ring.cursor, 'tracefs': self.trace.cursor},
                                sort_keys=True).encode('utf-8'), 0o600)

    def take(self, facts, lost, now):
        self.lost += lost
        events = [event_of(self.host, self.boot_id, fact, self.bursts.name(fact)) for fact in facts]
        if self.spool is not None:
            try:
                self.spool.write(events)
            except (IOError, OSError) as e:
                self.forwarder.last_error = 'spool %s: %s' % (self.spool.path, e)
        self.forwarder.offer(events, now)

    def stop(self, *dummy):
        self.stopping = True

    def run(self, clock=time.monotonic):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        poller = select.poll()
        poller.register(self.kmsg.fd, select.POLLIN)
        poll_s = self.cfg['poll_ms'] / 1000.0
        next_trace = 0.0
        saved_at = None
        dirty = True
        while not self.stopping:
            now = clock()
            at = self.forwarder.ready_at(now)
            wait = min(x for x in (0.5, next_trace - now, None if at is None else at - now) if x is not None)
            if wait > 0:
                poller.poll(int(wait * 1000) + 1)
            now = clock()
            facts, lost = self.kmsg.read()
            if now >= next_trace:  # the ring and the trace buffer cannot be polled: read every poll_ms
                for source in (self.ring, self.trace):
                    more, lost2 = source.read()
                    facts, lost = facts + more, lost + lost2
                next_trace = now + poll_s
            if facts or lost:
                self.take(facts, lost, now)
                dirty = True
            dirty |= self.forwarder.pump(clock(), time.time()) > 0
            if dirty and (saved_at is None or clock() - saved_at >= 1.0 or not self.forwarder.queue):
                self.save()
                saved_at, dirty = clock(), False
        self.forwarder.close(clock(), time.time())
        self.save(stopped=True)
        self.kmsg.close()
        return 0


FORWARD_SCRIPT = 'kprobes-fleet-events'
