# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-rulebook event source kprobes.fleet.probe_events: probe matches from the forwarder's spool."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
short_description: Probe matches of kprobes.fleet as events, read from the forwarder's spool (JSONL)
description:
  - Reads the JSONL spool the kprobes.fleet event forwarder writes with C(kprobes_fleet_events.spool=true)
    (C(<kprobes_fleet_host_dir>/state/<name>.events.jsonl), one event a line) and puts every event on
    the rulebook's queue, with the same shape the forwarder POSTs to a webhook -
    C({host, probe, function, ret, errno, pid, comm, ts, boot_id, seq, burst}).
  - For rulebooks that run where the spool is (on the host itself, or a copy shipped by other means);
    across hosts, use the forwarder's webhook delivery and C(eda.builtin.webhook) with
    C(eda.builtin.event_splitter) on C(payload.events) (rulebook C(kprobes.fleet.disk_full)).
  - Follows the file like C(tail -F) - starts at its end (or its beginning with O(from_start)),
    reopens it when the forwarder rotates it (to C(.1), when it outgrows C(spool_max_kb)) and reads
    what was left in the rotated file first. Lines that are not a JSON object with these keys are
    skipped and counted (logged), never passed on.
options:
  path:
    description: The spool file.
    type: str
    default: /var/lib/kprobes-fleet/state/kprobes_fleet.events.jsonl
  from_start:
    description: Put the events already in the file on the queue too (default - only new ones).
    type: bool
    default: false
  delay:
    description: Seconds between two looks at the file.
    type: float
    default: 0.5
  once:
    description: Stop at the end of the file instead of following it (tests, replays).
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: React to disk-full on this host
  hosts: localhost
  sources:
    - kprobes.fleet.probe_events:
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
import json
import logging
import os

EVENT_KEYS = ('host', 'probe', 'function', 'ret', 'errno', 'pid', 'comm', 'ts', 'boot_id')

logger = logging.getLogger(__name__)


def parse_line(line):
    """One spool line -> the event (a dict with every key of the shape), or None."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or any(key not in event for key in EVENT_KEYS):
        return None
    if not isinstance(event['probe'], str) or not isinstance(event['ret'], int) or isinstance(event['ret'], bool):
        return None
    return event


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
                logger.warning('kprobes.fleet.probe_events: skipped a line of %s that is not an event', self.path)
                continue
            events.append(event)
        return events

    def close(self):
        if self.file is not None:
            self.file.close()


async def main(queue, args):
    """Put the spool's events on the rulebook's queue."""
    reader = SpoolReader(args.get('path', '/var/lib/kprobes-fleet/state/kprobes_fleet.events.jsonl'),
                         bool(args.get('from_start', False)))
    delay = float(args.get('delay', 0.5))
    try:
        while True:
            for event in reader.read():
                await queue.put(event)
            if args.get('once'):
                return
            await asyncio.sleep(delay)
    finally:
        reader.close()


if __name__ == '__main__':
    import sys

    class PrintQueue(object):
        async def put(self, event):
            print(json.dumps(event, sort_keys=True))

    asyncio.run(main(PrintQueue(), {'path': sys.argv[1], 'from_start': True, 'once': True}))
