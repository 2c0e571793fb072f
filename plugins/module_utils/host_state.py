# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Our working directory on a host (``kprobes_fleet_host_dir``): its layout, and how we write into it.

The one place that knows where things are below the working directory; every module, module_util
and role asks here (roles through the ``host_dir`` option of the modules)::

    <host_dir>/.kprobes-fleet        our mark (names.HOST_DIR_MARK; ownership.host_dir_mark_problem)
    <host_dir>/state/<name>.<file>   records, cursors, copies (STATE_FILES): root-only, 0700 / 0600
    <host_dir>/lib/                  the program our systemd units run (persist.lib_files)
    <host_dir>/modules/<key>.ko      transfer copy of a module file (role probe_load; host_dir LEFTOVERS)
    <host_dir>/build/<key>/          a build directory (role probe_build; host_dir LEFTOVERS)

Nothing is written here unless the working directory carries our mark (ownership.state_dir_problem,
module host_dir). Standard library only: the units run it from the copy in ``<host_dir>/lib``.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os
import tempfile

from ansible_collections.kprobes.fleet.plugins.module_utils import names

DEFAULT_HOST_DIR = '/var/lib/kprobes-fleet'
STATE = 'state'
LIB = 'lib'
MODULES = 'modules'
BUILD = 'build'
UNIT_DIR = '/etc/systemd/system'  # where our units go (option unit_dir of probe_persist, event_forwarder)

# The files of <host_dir>/state, by what they hold ('%s' is the module name).
STATE_FILES = {
    'kmsg-cursor': '%s.kmsg-cursor',             # the collector's /dev/kmsg cursor {boot_id, next_seq}
    'ring-cursor': '%s.ring-cursor',             # its cursor in the ring of events with arguments (event_ring)
    'loaded-ko': '%s.loaded.ko',                 # the module file loaded last (restore after a failed reload, boot)
    'loading-ko': '%s.loading.ko',               # the private copy being checked and loaded (kmod_load)
    'tracefs': '%s.tracefs.json',                # what we created in tracefs, recorded before it is created
    'tracefs-cursor': '%s.tracefs-cursor',       # the collector's cursor in our instance's buffer
    'persist': '%s.persist.json',                # what runs, for the boot-time restore
    'persist-status': '%s.persist-status.json',  # what the boot-time restore did
    'last-collect': '%s.last-collect',           # the previous collection's counters (deltas)
    'events-config': '%s.events.json',           # the event forwarder's settings
    'events-status': '%s.events-status.json',    # its counters
    'events-cursor': '%s.events-cursor',         # its own cursors
    'events-spool': '%s.events.jsonl',           # its spool (rotated to <spool>.1)
    'metrics-config': '%s.metrics.json',         # the metrics timer's settings (its textfile directory)
}


def state_dir(host_dir):
    return os.path.join(host_dir, STATE)


def lib_dir(host_dir):
    return os.path.join(host_dir, LIB)


def state_file(state, name, what):
    """The path of the ``what`` file (a key of STATE_FILES) of module ``name`` in ``state``."""
    return os.path.join(state, STATE_FILES[what] % name)


class Layout(object):
    """The directories of one working directory, as the host sees them (not below a test root)."""

    def __init__(self, host_dir=DEFAULT_HOST_DIR, state=None, lib=None):
        self.host_dir = host_dir
        self.state = state or state_dir(host_dir)
        self.lib = lib or lib_dir(host_dir)

    def file(self, name, what):
        return state_file(self.state, name, what)


def from_params(params):
    """The Layout a module's options give: ``host_dir`` (the working directory), or the deprecated
    ``state_dir`` / ``lib_dir`` used as given, each in place of its own directory. Every path is
    checked with names.host_path; a refused one raises names.InvalidValue naming its option."""
    given = dict((option, names.host_path(params[option], option)) for option in ('host_dir', 'state_dir', 'lib_dir')
                 if params.get(option) is not None)
    return Layout(given.get('host_dir', DEFAULT_HOST_DIR), state=given.get('state_dir'), lib=given.get('lib_dir'))


def module_kwargs(options, units=False, **kwargs):
    """AnsibleModule's arguments for a module that keeps files in the working directory: its own
    ``options`` plus ``host_dir`` and the deprecated ``state_dir`` (with ``units``, also ``lib_dir`` and
    ``unit_dir``), each deprecated one not together with ``host_dir``; check mode supported.
    Documented by the doc fragment kprobes.fleet.host_state (and its ``units``)."""
    spec = dict(options, host_dir=dict(type='str', default=DEFAULT_HOST_DIR))
    old = ('state_dir', 'lib_dir') if units else ('state_dir',)
    for option in old:
        spec[option] = dict(type='str', removed_in_version='1.0.0', removed_from_collection='kprobes.fleet')
    if units:
        spec['unit_dir'] = dict(type='str', default=UNIT_DIR)
    return dict(kwargs, argument_spec=spec, mutually_exclusive=[('host_dir', o) for o in old],
                supports_check_mode=True)


# -- writing ---------------------------------------------------------------------------------
def ensure_dir(path, mode=0o700):
    """Create ``path`` and any missing parents with ``mode`` (existing ones are left alone)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    ensure_dir(os.path.dirname(path), mode)
    try:
        os.mkdir(path, mode)
    except OSError as e:
        if e.errno != errno.EEXIST or not os.path.isdir(path):
            raise
    os.chmod(path, mode)


def atomic_write(path, data, mode=0o600):
    """Write ``data`` (bytes) to ``path`` via a temp file in the same dir, fsync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.%s.' % os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
