# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every public variable of kprobes.fleet: its default and its one check (controller side).

The action kprobes.fleet.validate applies this table for every playbook and every role before
any task touches a host. The rules for names and paths live in module_utils/names.py (the host
modules apply the same ones), the probe list rules in module_utils/probe_spec.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re

from ansible_collections.kprobes.fleet.plugins.module_utils import names, probe_spec
from ansible_collections.kprobes.fleet.plugins.plugin_utils.module_cache import (
    ModuleCache, check_trusted, template_sha)

# Seconds a host waits for another host's build; also the age of a stale lock. A build takes
# minutes: below 60 s every waiting host would take the lock over and build itself.
BUILD_TIMEOUT = (60, 86400)
_RELEASE_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}')
_PACKAGE_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9.+_:~-]{0,127}')


def _choice(*choices):
    def check(name, value):
        if value not in choices:
            raise names.InvalidValue('%s: must be one of %s, got %s' % (
                name, ', '.join(choices), repr(str(value)) if isinstance(value, str) else names.type_name(value)))
        return str(value)
    return check


def _bool(name, value):
    return names.as_bool(name, value)


def _build_timeout(name, value):
    return names.as_int(name, value, BUILD_TIMEOUT[0], BUILD_TIMEOUT[1],
                        'seconds; a build takes minutes, less would make every host build')


def _cache_dir(name, value):
    if not isinstance(value, str) or not value.strip():
        raise names.InvalidValue('%s: must be a directory path on the controller, got %s'
                                 % (name, names.type_name(value)))
    path = os.path.abspath(os.path.expanduser(value))
    if path == '/' or os.path.dirname(path) == '/':
        raise names.InvalidValue('%s: %r is a system directory; use a directory of its own such as '
                                 '~/.cache/kprobes-fleet/modules' % (name, str(value)))
    if os.path.exists(path):
        check_trusted(path, follow=True)
    return str(value)


def _build_host(name, value, inventory):
    if value in (None, ''):
        return ''
    if not isinstance(value, str) or value not in inventory:
        raise names.InvalidValue('%s: must be empty or a host of this inventory, got %s'
                                 % (name, repr(str(value)) if isinstance(value, str) else names.type_name(value)))
    return str(value)


def _release(name, value):
    if value in (None, ''):
        return ''
    if not isinstance(value, str) or not _RELEASE_RE.fullmatch(value):
        raise names.InvalidValue('%s: must be empty (the running kernel) or a kernel release such as '
                                 '6.1.0-50-amd64, got %r' % (name, value))
    return str(value)


def _packages(name, value):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise names.InvalidValue('%s: must be a list of package names, got %s' % (name, names.type_name(value)))
    for pkg in value:
        if not isinstance(pkg, str) or not _PACKAGE_RE.fullmatch(pkg):
            raise names.InvalidValue('%s: %r is not a package name' % (name, pkg))
    return [str(p) for p in value]


# name: (default, check). A check takes (name, value) and returns the normalised value.
PUBLIC = {
    'kprobes_fleet_probes': ([], None),  # probe_spec.normalize(), only with state present
    'kprobes_fleet_module_name': ('kprobes_fleet', lambda name, value: names.module_name(value, name)),
    'kprobes_fleet_state': ('present', _choice('present', 'absent')),
    'kprobes_fleet_backend': ('auto', _choice('auto', 'module', 'tracefs')),
    'kprobes_fleet_build_host': ('', None),  # needs the inventory: _build_host
    'kprobes_fleet_cache_dir': ('~/.cache/kprobes-fleet/modules', _cache_dir),
    'kprobes_fleet_host_dir': ('/var/lib/kprobes-fleet', lambda name, value: names.host_path(value, name)),
    'kprobes_fleet_build_timeout': (1800, _build_timeout),
    'kprobes_fleet_fail_on_lockdown': (True, _bool),
    'kprobes_fleet_build_keep_dir': (False, _bool),
    'kprobes_fleet_load_state': ('present', _choice('present', 'absent')),
    'kprobes_fleet_load_purge': (False, _bool),
    'kprobes_fleet_headers_release': ('', _release),
    'kprobes_fleet_headers_update_cache': (True, _bool),
    'kprobes_fleet_headers_extra_packages': ([], _packages),
}


def check_plan(plan, values, host, for_load):
    """A build plan handed to probe_build / probe_load: consistent with the spec rules and the cache.

    Returns the module's sha256 from the cache for a load plan (None for a build plan)."""
    if not isinstance(plan, dict):
        raise names.InvalidValue('build plan: must be the mapping kprobes.fleet.build_plan returns, got %s'
                                 % names.type_name(plan))
    key = names.hex16(plan.get('build_key'), 'build plan: build_key')
    spec = names.hex16(plan.get('spec_hash'), 'build plan: spec_hash')
    cache = ModuleCache(values['kprobes_fleet_cache_dir'], values['kprobes_fleet_module_name'])
    probes = plan.get('probes')
    if not isinstance(probes, list) or not probes:
        raise names.InvalidValue('build plan: probes must be the resolved probe list')
    try:
        functions = dict((p.get('name'), p.get('function')) for p in probes)
        resolved = probe_spec.resolve([dict((k, v) for k, v in p.items() if k != 'function') for p in probes],
                                      functions)
    except (AttributeError, names.InvalidValue) as e:
        raise names.InvalidValue('build plan: %s' % (e if isinstance(e, names.InvalidValue) else
                                                     'probes must be the resolved probe list'))
    if resolved != probes or probe_spec.spec_hash(cache.module, resolved, template_sha()) != spec:
        raise names.InvalidValue('build plan: spec_hash %s does not belong to these probes, this module '
                                 'name and these templates; use the plan kprobes.fleet.build_plan returns' % spec)
    if plan.get('ko') != cache.ko(key):
        raise names.InvalidValue('build plan: ko must be %s' % cache.ko(key))
    if for_load:
        return cache.sha256_of(key)
    if plan.get('staged') != cache.staged(key, host):
        raise names.InvalidValue('build plan: staged must be %s' % cache.staged(key, host))
    return None


def check(values, host, inventory, check_probes=True, plans=None):
    """Check ``values`` (variable -> value as the user set it; missing ones take their default).

    Returns ``(normalised, errors, sha256)``; ``normalised['kprobes_fleet_probes']`` is the
    normalised spec when checked. ``plans`` maps 'build'/'load' to a plan to check; ``sha256`` is
    the cached module's digest of the load plan (else None)."""
    result = {}
    errors = []
    for name, (default, rule) in PUBLIC.items():
        value = values.get(name, default)
        try:
            if name == 'kprobes_fleet_build_host':
                result[name] = _build_host(name, value, inventory)
            elif rule is not None:
                result[name] = rule(name, value)
            else:
                result[name] = value
        except names.InvalidValue as e:
            errors.append(str(e))
    if check_probes and result.get('kprobes_fleet_state') == 'present':
        try:
            result['kprobes_fleet_probes'] = probe_spec.normalize(values.get('kprobes_fleet_probes'))
        except names.InvalidValue as e:
            errors.append('kprobes_fleet_probes: %s' % e)
    sha = None
    if not errors:
        for role, plan in sorted((plans or {}).items()):
            try:
                sha = check_plan(plan, result, host, role == 'load') or sha
            except names.InvalidValue as e:
                errors.append(str(e))
    return result, errors, sha


def report(errors_by_host, limit=5):
    """One message for the whole play: each distinct error once, with the hosts that have it."""
    hosts_of = {}
    for host in sorted(errors_by_host):
        for err in errors_by_host[host] or []:
            hosts_of.setdefault(err, []).append(host)
    lines = []
    for err, hosts in sorted(hosts_of.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ', '.join(hosts[:limit]) + (' and %d more' % (len(hosts) - limit) if len(hosts) > limit else '')
        lines.append('%s [%s]' % (err, shown))
    return lines
