# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probes that come back after a reboot, and only on the kernel they were made for.

Whoever puts probes in place records what runs, in ``<state_dir>/<name>.persist.json`` (0600):
``{mark, name, backend, kernel: {release, version}, spec_hash, saved, module: {ko, sha256} |
tracefs: {probes, reason}}``: probe_module after a load, tracefs_probes after creating events. At
boot, the unit ``kprobes-fleet-<name>.service`` (installed by the probe_persist module) runs
``restore()`` through a copy of these module_utils kept in ``<host_dir>/lib``: it loads the
recorded module, or recreates the recorded events, only when the running kernel is exactly the
one recorded (``uname -r`` and ``uname -v``, as in the build key). Otherwise it loads nothing and
says why, once, in the journal and in ``<state_dir>/<name>.persist-status.json``; probe_facts then
reports ``loaded: false`` with that reason. Standard library only: this file runs on hosts
without Ansible.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import inspect
import json
import os
import sys
import time

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmod_load, kmsg, names
from ansible_collections.kprobes.fleet.plugins.module_utils.host_state import atomic_write, state_file
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_json
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import ModuleSysfs

BACKENDS = ('module', 'tracefs')
# The module_utils the restore needs (persist and what it imports), as shipped to <host_dir>/lib.
# The event forwarder (events, unit kprobes-fleet-<name>-events.service) runs from the same copy.
LIB_MODULES = ('persist', 'names', 'host_state', 'kmod_load', 'kmsg', 'ownership', 'hostfs', 'probe_spec',
               'tracefs_support', 'tracefs_commands', 'tracefs_probes', 'tracefs_counters', 'tracefs_buffer', 'event_ring',
               'events', 'metrics')
LIB_PACKAGE = ('ansible_collections', 'kprobes', 'fleet', 'plugins', 'module_utils')
RESTORE_SCRIPT = 'kprobes-fleet-restore'
METRICS_SCRIPT = 'kprobes-fleet-metrics'


class PersistError(Exception):
    pass


def unit_name(name):
    return 'kprobes-fleet-%s.service' % names.module_name(name, 'name')


def events_unit_name(name):
    return 'kprobes-fleet-%s-events.service' % names.module_name(name, 'name')


def metrics_unit_name(name, kind='service'):
    return 'kprobes-fleet-%s-metrics.%s' % (names.module_name(name, 'name'), kind)


def lib_files(lib_dir):
    """{path: text} of the programs our units run (the boot-time restore, the event forwarder): the
    module_utils they import, and their entry points."""
    # imported here, not at the top (they import persist), and named so AnsiballZ ships them with every module
    from ansible_collections.kprobes.fleet.plugins.module_utils import events, metrics  # noqa: F401 pylint: disable=unused-import
    files = {os.path.join(lib_dir, RESTORE_SCRIPT): RESTORE_MAIN,
             os.path.join(lib_dir, events.FORWARD_SCRIPT): FORWARD_MAIN,
             os.path.join(lib_dir, METRICS_SCRIPT): METRICS_MAIN}
    pkg = os.path.join(lib_dir, *LIB_PACKAGE)
    # Regular packages (not namespace ones): ours is found first, whatever else is installed.
    for depth in range(1, len(LIB_PACKAGE) + 1):
        files[os.path.join(lib_dir, *(LIB_PACKAGE[:depth] + ('__init__.py',)))] = ''
    for mod in LIB_MODULES:
        full = 'ansible_collections.kprobes.fleet.plugins.module_utils.%s' % mod
        __import__(full)
        files[os.path.join(pkg, mod + '.py')] = inspect.getsource(sys.modules[full])
    return files


def remove_lib(lib_dir, root='/', check_mode=False):
    """Remove the files lib_files() writes, then the directories they leave empty; returns whether
    anything was (or, in check mode, would be) removed."""
    def host(path):
        return os.path.join(root, path.lstrip('/'))
    changed = False
    for path in lib_files(lib_dir):
        if os.path.exists(host(path)):
            changed = True
            if not check_mode:
                os.unlink(host(path))
    if check_mode:
        return changed
    for dirpath, dirnames, filenames in os.walk(host(lib_dir), topdown=False):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.isdir(full) and not os.listdir(full) and d in LIB_PACKAGE + ('__pycache__',):
                os.rmdir(full)
        for f in [f for f in filenames if f.endswith('.pyc')]:
            os.unlink(os.path.join(dirpath, f))
    for d in (os.path.join(host(lib_dir), '__pycache__'), host(lib_dir)):
        try:
            os.rmdir(d)
        except OSError:
            pass
    return changed


def running_kernel():
    u = os.uname()
    return {'release': u.release, 'version': u.version}


def load_manifest(state_dir, name):
    """The manifest of ``name``, or None when there is none (or it is not ours / malformed)."""
    data = read_json(state_file(state_dir, name, 'persist'))
    if not data or data.get('mark') != names.MARK or data.get('name') != name \
            or data.get('backend') not in BACKENDS or not isinstance(data.get('kernel'), dict):
        return None
    return data


def save_manifest(state_dir, name, backend, spec_hash, detail, kernel=None):
    """Record what runs now (after a successful load or create)."""
    if backend not in BACKENDS:
        raise ValueError('backend must be one of %s' % ', '.join(BACKENDS))
    data = {'mark': names.MARK, 'name': names.module_name(name, 'name'), 'backend': backend,
            'kernel': kernel or running_kernel(), 'spec_hash': names.hex16(spec_hash, 'spec_hash'),
            'saved': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), backend: detail}
    atomic_write(state_file(state_dir, name, 'persist'), json.dumps(data, indent=1, sort_keys=True).encode(), 0o600)
    return data


def forget(state_dir, name, backend=None):
    """Remove the manifest (only the given backend's, when one is given) and the last status."""
    removed = False
    data = load_manifest(state_dir, name)
    if data is not None and (backend is None or data['backend'] == backend):
        os.unlink(state_file(state_dir, name, 'persist'))
        removed = True
    if backend is None and os.path.exists(state_file(state_dir, name, 'persist-status')):
        os.unlink(state_file(state_dir, name, 'persist-status'))
        removed = True
    return removed


def kernel_change(manifest, kernel=None):
    """Why the recorded probes must not run on this kernel (a sentence), or None when they may."""
    now = kernel or running_kernel()
    was = manifest['kernel']
    if was.get('release') == now['release'] and was.get('version') == now['version']:
        return None
    what = 'release' if was.get('release') != now['release'] else 'build (uname -v)'
    return ('kernel changed since the probes were deployed: they were made for %s (%s), the running '
            'kernel is %s (%s); nothing was loaded (a different kernel %s): the next deploy prepares '
            'them for this kernel' % (was.get('release'), was.get('version'), now['release'],
                                      now['version'], what))


def _restore_module(name, manifest, root, state_dir):
    sysfs = ModuleSysfs(name, root)
    if sysfs.loaded():
        if not sysfs.ours():
            raise PersistError('a module named %s is loaded and is not ours; loading nothing' % name)
        if sysfs.spec_hash() == manifest['spec_hash']:
            return 'already loaded (spec_hash %s)' % manifest['spec_hash']
        raise PersistError('%s is loaded with spec_hash %s, not the recorded %s; leaving it alone'
                           % (name, sysfs.spec_hash(), manifest['spec_hash']))
    detail = manifest.get('module') or {}
    ko = detail.get('ko')
    if ko != state_file(state_dir, name, 'loaded-ko'):  # only ever our own copy
        raise PersistError('the record names %r, not our copy %s; loading nothing'
                           % (ko, state_file(state_dir, name, 'loaded-ko')))
    ko = os.path.join(root, ko.lstrip('/'))
    try:
        kmod_load.load_verified(ko, detail.get('sha256'))
    except kmod_load.LoadError as e:
        raise PersistError(str(e))
    return 'loaded %s (spec_hash %s)' % (ko, manifest['spec_hash'])


def _restore_tracefs(name, manifest, root, state_dir):
    from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_probes import TraceProbes
    from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import TracefsError
    detail = manifest.get('tracefs') or {}
    try:
        got = TraceProbes(name, root=root, state_dir=state_dir).present(
            detail.get('probes') or [], manifest['spec_hash'], detail.get('reason'))
    except (TracefsError, names.InvalidValue) as e:
        raise PersistError(str(e))
    return got['msg']


def restore(name, state_dir, root='/', kernel=None):
    """Bring back what the manifest records, on exactly the recorded kernel. Returns the status
    written to ``<name>.persist-status.json``: {loaded, backend, reason, boot_id, time}."""
    name = names.module_name(name, 'name')
    host_state = os.path.join(root, names.host_path(state_dir, 'state_dir').lstrip('/'))
    manifest = load_manifest(host_state, name)
    status = {'name': name, 'loaded': False, 'backend': None, 'reason': None, 'kernel': kernel or running_kernel(),
              'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    try:
        status['boot_id'] = kmsg.read_boot_id(os.path.join(root, kmsg.BOOT_ID_PATH.lstrip('/')))
    except (IOError, OSError):
        status['boot_id'] = None
    if manifest is None:
        status['reason'] = 'nothing recorded for %s (no %s): nothing to restore' % (
            name, state_file(state_dir, name, 'persist'))
    else:
        status['backend'] = manifest['backend']
        status['reason'] = kernel_change(manifest, status['kernel'])
        if status['reason'] is None:
            try:
                if manifest['backend'] == 'module':
                    status['reason'] = _restore_module(name, manifest, root, state_dir)
                else:
                    status['reason'] = _restore_tracefs(name, manifest, root, state_dir)
                status['loaded'] = True
            except PersistError as e:
                status['reason'] = 'restore failed: %s' % e
                status['failed'] = True
    if os.path.isdir(host_state):
        atomic_write(state_file(host_state, name, 'persist-status'), json.dumps(status, indent=1, sort_keys=True).encode(), 0o600)
    return status


def last_status(state_dir, name):
    return read_json(state_file(state_dir, name, 'persist-status'))


def unit_text(name, python, lib_dir, state_dir):
    """The systemd unit that restores ``name`` at boot; its first line is our mark."""
    name = names.module_name(name, 'name')
    return (
        '# %s: restores the probes "%s" at boot (written by kprobes.fleet.probe_persist; '
        'removed by state=absent)\n'
        '[Unit]\n'
        'Description=kprobes.fleet probes %s (restored only on the kernel they were made for)\n'
        'After=local-fs.target systemd-modules-load.service sys-kernel-tracing.mount\n'
        'ConditionPathExists=%s\n\n'
        '[Service]\n'
        'Type=oneshot\n'
        'RemainAfterExit=yes\n'
        'ExecStart=%s -I %s --name %s --state-dir %s\n\n'
        '[Install]\n'
        'WantedBy=multi-user.target\n'
        % (names.MARK, name, name, state_file(state_dir, name, 'persist'), python,
           os.path.join(lib_dir, RESTORE_SCRIPT), name, state_dir))


def is_ours(text):
    return bool(text) and text.startswith('# %s:' % names.MARK)


class UnitFiles(object):
    """What the modules that install our units share (probe_persist, event_forwarder): their options
    (name, host_dir or the deprecated state_dir / lib_dir, unit_dir, state), files below ``self.root``
    written only when different and never in check mode, systemctl, and the refusal to touch a unit
    file without our mark."""

    def __init__(self, module, root, unit_name_of):
        self.module = module
        self.root = root
        self.changed = False
        p = module.params
        try:
            self.name = names.module_name(p['name'], 'name')
            layout = host_state.from_params(p)
            self.state_dir, self.lib_dir = layout.state, layout.lib
            self.unit_dir = p['unit_dir']
            if self.unit_dir not in ('/etc/systemd/system', '/run/systemd/system'):
                self.unit_dir = names.host_path(self.unit_dir, 'unit_dir')
            self.check(p)
        except names.InvalidValue as e:
            module.fail_json(msg=str(e))
        self.unit = os.path.join(self.unit_dir, unit_name_of(self.name))
        self.units = (self.unit,)  # every unit file of the module: written 0644, refused when not ours

    def check(self, params):
        """Check the module's own options (raise names.InvalidValue)."""

    def apply(self):
        return self.present() if self.module.params['state'] == 'present' else self.absent()

    def host(self, path):
        return os.path.join(self.root, path.lstrip('/'))

    def read(self, path):
        try:
            with open(self.host(path)) as f:
                return f.read()
        except (IOError, OSError):
            return None

    def write(self, path, text):
        """Write when different (unit files 0644, anything else 0600); returns whether it changed."""
        if self.read(path) == text:
            return False
        if not self.module.check_mode:
            atomic_write(self.host(path), text.encode('utf-8'), 0o644 if path in self.units else 0o600)
        return True

    def write_lib(self):
        """Write the program copy in the lib dir; returns whether anything changed."""
        changed = False
        for path, text in sorted(lib_files(self.lib_dir).items()):
            changed |= self.write(path, text)
        return changed

    def remove_unit(self, *disable):
        """Disable (``systemctl disable <disable...> <unit>``) and remove our unit, when it is there."""
        unit = os.path.basename(self.unit)
        if self.read(self.unit) is None:
            return
        self.changed = True
        if not self.module.check_mode:
            self.systemctl(*(('disable',) + disable + (unit,)), check=False)
            os.unlink(self.host(self.unit))
            self.systemctl('daemon-reload')

    def remove_lib_unless(self, *other_units):
        """Remove the program copy, unless one of our other units (which run from it too) is installed."""
        if not any(os.path.exists(self.host(os.path.join(self.unit_dir, u))) for u in other_units):
            self.changed |= remove_lib(self.lib_dir, self.root, self.module.check_mode)

    def systemctl(self, *args, **kw):
        binary = self.module.get_bin_path('systemctl', required=True)
        rc, out, err = self.module.run_command([binary] + list(args))
        if rc != 0 and kw.get('check', True):
            self.module.fail_json(msg='systemctl %s failed (rc=%d): %s' % (' '.join(args), rc, (err or out).strip()))
        return rc, out.strip()

    def refuse_foreign_unit(self):
        for unit in self.units:
            text = self.read(unit)
            if text is not None and not is_ours(text):
                self.module.fail_json(msg='%s exists and is not ours (its first line is not "# %s: ..."); '
                                          'refusing to change or remove it (choose another kprobes_fleet_module_name)'
                                          % (unit, names.MARK))


def entry_point(what, module, call):
    """The program a unit of ours runs: ``python -I`` (no PYTHONPATH, no user site), the lib dir added."""
    return (
        '#!/usr/bin/python3\n'
        '# %s: %s (written by kprobes.fleet, do not edit).\n'
        'import argparse\nimport os\nimport sys\n\n'
        'sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n'
        'from ansible_collections.kprobes.fleet.plugins.module_utils import %s  # noqa: E402\n\n'
        'p = argparse.ArgumentParser()\n'
        "p.add_argument('--name', required=True)\n"
        "p.add_argument('--state-dir', required=True)\n"
        'a = p.parse_args()\n'
        '%s\n' % (names.MARK, what, module, call))


RESTORE_MAIN = entry_point('boot-time restore of probes', 'persist', (
    "s = persist.restore(a.name, a.state_dir)\n"
    "print('kprobes.fleet %s: %s%s' % (a.name, 'restored: ' if s['loaded'] else 'not loaded: ', s['reason']))\n"
    "sys.exit(1 if s.get('failed') else 0)"))
FORWARD_MAIN = entry_point('forwards probe matches as events', 'events',
                           'sys.exit(events.Runner(a.name, a.state_dir).run())')
METRICS_MAIN = entry_point("writes the probes' counters for Prometheus", 'metrics',
                           'sys.exit(metrics.main(a.name, a.state_dir))')
