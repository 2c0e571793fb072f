# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracefs backend: where tracefs is and whether this kernel can serve it.

The tracefs backend makes kernel return-probe events in a tracing instance of our own. Its five
module_utils (standard library only: they run on the managed hosts, Python 3.9+; every path is
resolved below ``root`` so the unit tests can fake a host; docs/architecture.md, section "tracefs
backend", has the file formats seen on real kernels):
  - tracefs_support:  the mount, lockdown, kprobe_events, instances, hist triggers (kernel_facts);
  - tracefs_commands: the text we write (definitions, filters, triggers), how the kernel shows it
    back, and the only writes (TracefsIO);
  - tracefs_probes:   our events and instance on a host, on record in our state file: status,
    present, absent (module tracefs_probes, the boot-time restore);
  - tracefs_counters: hits, misses and matches (kprobe_profile, hist triggers, counting rings);
  - tracefs_buffer:   the events in our instance's trace buffer, after a cursor (probe_facts, the
    event forwarder).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os

from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import parse_lockdown, read_text

TRACEFS_DIRS = ('sys/kernel/tracing', 'sys/kernel/debug/tracing')


class TracefsError(Exception):
    """An operation failed; the message is one sentence for the user (with the kernel's words)."""


def oserror(e):
    if getattr(e, 'errno', None):
        return '%s (%s)' % (os.strerror(e.errno), errno.errorcode.get(e.errno, e.errno))
    return str(e)


def below(root, rel):
    return os.path.join(root, rel.lstrip('/'))


def find_tracefs(root='/'):
    """The tracefs mount that has ``kprobe_events``: /sys/kernel/tracing, else the debugfs one.

    Returns the path below ``root`` (so ``root='/'`` gives ``/sys/kernel/tracing``), or None."""
    for rel in TRACEFS_DIRS:
        path = below(root, rel)
        if os.path.isfile(os.path.join(path, 'kprobe_events')):
            return path
    return None


def hist_supported(tracefs):
    """CONFIG_HIST_TRIGGERS is on.

    The kernel creates a ``hist`` file in every event directory (next to ``trigger``, which every
    event has) only when it is built with CONFIG_HIST_TRIGGERS (kernel/trace/trace_events.c,
    event_create_dir()): the first event directory found decides. Without any event directory,
    the tracefs README is asked: its hist trigger section is compiled in under the same option."""
    events = os.path.join(tracefs, 'events')
    try:
        systems = sorted(os.listdir(events))
    except OSError:
        systems = []
    for system in systems:
        sysdir = os.path.join(events, system)
        try:
            entries = sorted(os.listdir(sysdir))
        except OSError:
            continue
        for entry in entries:
            evdir = os.path.join(sysdir, entry)
            if os.path.isfile(os.path.join(evdir, 'trigger')):
                return os.path.isfile(os.path.join(evdir, 'hist'))
    return 'hist:keys=' in (read_text(os.path.join(tracefs, 'README')) or '')


def availability(root='/', lockdown=None):
    """Whether the tracefs backend can run here: ``{usable, reason, path, hist}``.

    ``reason`` is one sentence when ``usable`` is false. ``lockdown`` is the active lockdown
    mode (kernel_facts reads it); None means: read /sys/kernel/security/lockdown below root.
    ``hist``: hist triggers count the matches; without them (Debian 11's 5.10 has none) every
    probe gets a counting instance instead, just as exact, one more ring write per match."""
    if lockdown is None:
        lockdown = parse_lockdown(read_text(below(root, 'sys/kernel/security/lockdown')))
    path = find_tracefs(root)
    hist = bool(path) and hist_supported(path)
    result = {'usable': False, 'reason': None, 'path': path, 'hist': hist}
    if lockdown == 'confidentiality':
        result['reason'] = ('the kernel is locked down in confidentiality mode, which blocks both '
                            'tracefs and kprobes (only integrity mode allows them)')
        return result
    if path is None:
        result['reason'] = _why_no_kprobe_events(root)
        return result
    if not os.path.isdir(os.path.join(path, 'instances')):
        result['reason'] = ('%s has no instances directory, so the probes cannot get a tracing '
                            'buffer of their own' % as_host(root, path))
        return result
    result['usable'] = True
    return result


def as_host(root, path):
    """``path`` as the host sees it (without the test root)."""
    rel = os.path.relpath(path, root)
    return '/' + rel if rel != '.' else '/'


def _why_no_kprobe_events(root):
    for rel in TRACEFS_DIRS:
        path = below(root, rel)
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
            return '/%s cannot be read by this user (tracefs needs root: use become)' % rel
    for rel in TRACEFS_DIRS:
        path = below(root, rel)
        if os.path.isfile(os.path.join(path, 'trace')) or os.path.isdir(os.path.join(path, 'events')):
            return ('tracefs is mounted at /%s but has no kprobe_events: the kernel is built without '
                    'CONFIG_KPROBE_EVENTS' % rel)
    filesystems = read_text(below(root, 'proc/filesystems'))
    if filesystems is not None and 'tracefs' not in filesystems.split():
        return 'the kernel has no tracefs (built without CONFIG_TRACING), so no kprobe events'
    return ('tracefs is not mounted (neither /sys/kernel/tracing nor /sys/kernel/debug/tracing has '
            'kprobe_events; mount it with: mount -t tracefs nodev /sys/kernel/tracing)')
