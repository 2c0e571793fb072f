# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-rulebook event source kprobes.fleet.webhook: the forwarders' posts, each authenticated as its host."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
short_description: Probe matches POSTed by the kprobes.fleet forwarders, each post authenticated as the host that sent it
description:
  - Listens for the batches the forwarders of kprobes.fleet POST (C({"kprobes_fleet" - {"host", "count"},
    "events" - [...]})) and puts every event of an accepted batch on the rulebook's queue, one by one,
    with C(meta.hosts) set to the host that sent it - an action's C(run_playbook) runs on that host only,
    whatever the post says.
  - A post is accepted only with C(Authorization - Bearer <token>) where the token is the sending host's
    own - HMAC-SHA256 of its inventory name under the events key the deploy made on the controller
    (C(kprobes_fleet_events.key_file)); the deploy gives each host its token, no host holds another's.
    Without the key file the source does not start. Refused - no or another token (401); a sender that is
    not one inventory host name (C(all), C(ungrouped), patterns, commas, globs) or a malformed batch
    (400); an event whose C(host) is not the sender, or a sender not in O(hosts) (403); a body beyond
    O(max_kb) (413). Every field of every event is checked (see C(kprobes.fleet.spool)); one bad
    event refuses the whole batch, which the forwarder counts as dropped.
  - C(burst) is the forwarder's name for matches of one probe and errno close in time; a rulebook throttles
    on C(event.host) and C(event.burst). So that a poster cannot multiply actions with new burst names, a
    host opens at most one new burst per errno every O(burst_gap_s) seconds - an event naming a burst this
    source has not seen within that time from that host is put in the host's current burst.
  - Plain HTTP, for the reverse SSH tunnel of README "Events" - listen on the loopback (the default).
options:
  host:
    description: Address to listen on.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port to listen on.
    type: int
    required: true
  key_file:
    description: The events key of the controller (C(kprobes_fleet_events.key_file) of the deploy).
    type: str
    default: ~/.config/kprobes-fleet/events.key
  hosts:
    description: Only these inventory host names may post (default - any host the deploy gave a token).
    type: list
    elements: str
  burst_gap_s:
    description: A host opens at most one new burst per errno in this many seconds (the forwarders' C(burst_gap_s)).
    type: float
    default: 60
  max_kb:
    description: Largest request body, KiB.
    type: int
    default: 1024
'''

EXAMPLES = r'''
- name: Disk full
  hosts: all
  sources:
    - kprobes.fleet.webhook:
        port: 5000
  rules:
    - name: ENOSPC
      condition: event.errno == "ENOSPC"
      throttle:
        once_within: 1 hour
        group_by_attributes: [event.host, event.burst]
      action:
        run_playbook:
          name: kprobes.fleet.disk_full_report
'''

import asyncio
import collections
import hmac
import importlib.util
import json
import logging
import os
import time

logger = logging.getLogger(__name__)


def _sibling():
    """spool.py of this directory (the event checks and the token rule are there): this file is
    run by path (runpy) inside ansible-rulebook, not imported as part of a package."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location('kprobes_fleet_spool', os.path.join(here, 'spool.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pe = _sibling()
BadArgument = pe.BadArgument
BadEvent = pe.BadEvent
ARGS = {'host': '127.0.0.1', 'port': None, 'key_file': '~/.config/kprobes-fleet/events.key', 'hosts': None,
        'burst_gap_s': 60, 'max_kb': 1024}
MAX_EVENTS = 1000  # the forwarders' largest batch_size
KNOWN_BURSTS = 16  # burst names remembered per host and errno


class Refused(Exception):
    def __init__(self, status, msg):
        Exception.__init__(self, msg)
        self.status = status


def check_args(args):
    out = pe.check_args(args, ARGS)
    if not isinstance(out['host'], str) or not out['host'] or any(c in out['host'] for c in ' \n\0/'):
        raise BadArgument('kprobes.fleet source argument host must be the address to listen on, got %s'
                          % pe._type_name(out['host']))
    port = out['port']
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadArgument('kprobes.fleet source argument port must be a TCP port from 1 to 65535, got %s'
                          % pe._type_name(out['port']))
    out['port'] = port
    out['burst_gap_s'] = float(pe.check_number('burst_gap_s', out['burst_gap_s'], 0, 86400))
    if isinstance(out['max_kb'], bool) or not isinstance(out['max_kb'], int) or not 1 <= out['max_kb'] <= 65536:
        raise BadArgument('kprobes.fleet source argument max_kb must be an integer from 1 to 65536, got %s'
                          % pe._type_name(out['max_kb']))
    if out['hosts'] is not None:
        if not isinstance(out['hosts'], list):
            raise BadArgument('kprobes.fleet source argument hosts must be a list of inventory host names, got %s'
                              % pe._type_name(out['hosts']))
        try:
            out['hosts'] = frozenset(pe.check_host(h, 'hosts: each') for h in out['hosts'])
        except BadEvent as e:
            raise BadArgument('kprobes.fleet source argument %s' % e)
    out['key'] = pe.read_key(out['key_file'])
    return out


class Gate(object):
    """Authenticates and checks one post -> the events to queue (each limited to its sender), or Refused."""

    def __init__(self, key, hosts=None, burst_gap_s=60.0, clock=time.monotonic):
        self.key = key
        self.hosts = hosts
        self.gap = float(burst_gap_s)
        self.clock = clock
        self.bursts = {}  # (sender, errno) -> {'opened': t, 'current': name, 'known': OrderedDict(name -> t)}
        self.counts = collections.Counter()

    def receive(self, authorization, body):
        try:
            events = self._receive(authorization, body)
        except Refused as e:
            self.counts[e.status] += 1
            raise
        self.counts['accepted'] += len(events)
        return events

    def _receive(self, authorization, body):
        scheme, dummy, token = (authorization or '').strip().partition(' ')
        token = token.strip()
        if scheme != 'Bearer' or not token:
            raise Refused(401, 'a bearer token is required (Authorization: Bearer <the host\'s token>)')
        try:
            data = json.loads(body)
        except ValueError:
            raise Refused(400, 'the body is not JSON')
        if not isinstance(data, dict) or set(data) != {'kprobes_fleet', 'events'} \
                or not isinstance(data['kprobes_fleet'], dict) or not isinstance(data['events'], list):
            raise Refused(400, 'the body must be {"kprobes_fleet": {"host", "count"}, "events": [...]}')
        try:
            sender = pe.check_host(data['kprobes_fleet'].get('host'), 'kprobes_fleet.host')
        except BadEvent as e:
            raise Refused(400, str(e))
        if not hmac.compare_digest(token.encode('utf-8', 'replace'), pe.token_for(self.key, sender).encode('ascii')):
            raise Refused(401, 'the token is not the token of %s' % sender)
        if self.hosts is not None and sender not in self.hosts:
            raise Refused(403, '%s is not among the hosts this source accepts' % sender)
        raw = data['events']
        if len(raw) > MAX_EVENTS or data['kprobes_fleet'].get('count') != len(raw):
            raise Refused(400, 'kprobes_fleet.count must be the number of events (at most %d)' % MAX_EVENTS)
        out = []
        for i, event in enumerate(raw):
            try:
                event = pe.check_event(event)
            except BadEvent as e:
                raise Refused(400, 'event %d: %s' % (i, e))
            if event['host'] != sender:
                raise Refused(403, 'event %d: host %s is not the sender %s' % (i, json.dumps(event['host']), sender))
            out.append(event)
        now = self.clock()
        for event in out:
            event['burst'] = self.burst(sender, event, now)
            event['meta'] = {'hosts': [sender]}  # run_playbook's limit: the sender, nothing else
        return out

    def burst(self, sender, event, now):
        """The event's burst as the rulebook will see it: a name this host opened, at most one new one per
        errno every ``gap`` seconds; a name seen within 2 gaps + 60 s stays open."""
        name = event['burst']
        key = (sender, event['errno'])
        st = self.bursts.get(key)
        if st is None:
            st = self.bursts[key] = {'opened': now, 'current': name, 'known': collections.OrderedDict()}
        known = st['known']
        for old, seen in list(known.items()):
            if now - seen > 2 * self.gap + 60:
                del known[old]
        if name not in known and known and now - st['opened'] < self.gap:
            logger.warning('kprobes.fleet.webhook: %s opened burst %s less than %gs after %s: counted in %s',
                           sender, name, self.gap, st['current'], st['current'])
            name = st['current']
        elif name not in known:
            st['opened'], st['current'] = now, name
        known[name] = now
        known.move_to_end(name)
        while len(known) > KNOWN_BURSTS:
            known.popitem(last=False)
        return name


async def main(queue, args):
    """Serve until cancelled; arguments are checked first (BadArgument: one sentence)."""
    from aiohttp import web

    args = check_args(args)
    gate = Gate(args['key'], args['hosts'], args['burst_gap_s'])

    async def post(request):
        body = await request.read()
        try:
            events = gate.receive(request.headers.get('Authorization'), body)
        except Refused as e:
            logger.warning('kprobes.fleet.webhook: refused a post from %s: %s', request.remote, e)
            return web.json_response({'refused': str(e)}, status=e.status)
        for event in events:
            await queue.put(event)
        return web.json_response({'accepted': len(events)})

    app = web.Application(client_max_size=args['max_kb'] * 1024)
    app.router.add_post('/{tail:.*}', post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args['host'], args['port'])
        await site.start()
        logger.info('kprobes.fleet.webhook: listening on %s:%d', args['host'], args['port'])
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == '__main__':
    import sys

    class PrintQueue(object):
        async def put(self, event):
            print(json.dumps(event, sort_keys=True))

    asyncio.run(main(PrintQueue(), {'port': int(sys.argv[1])}))
