# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The names and paths kprobes.fleet owns, and the one rule for each of them.

Standard library only: used on the controller (validation) and on the hosts (every module
checks its arguments again, so a module called on its own is guarded too). Every pattern is
applied with ``fullmatch`` (``$`` alone would accept a trailing newline).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

# What we put into everything we create, and look for before we remove or replace anything:
# /sys/kernel/<module>/marker and `modinfo -F marker` of our .ko; <host_dir>/.kprobes-fleet.
MARK = 'kprobes.fleet'
HOST_DIR_MARK = '.kprobes-fleet'

MODULE_NAME_PATTERN = r'[a-z][a-z0-9_]{0,55}'
HEX16_PATTERN = r'[0-9a-f]{16}'
SHA256_PATTERN = r'[0-9a-f]{64}'
_MODULE_NAME_RE = re.compile(MODULE_NAME_PATTERN)
_HEX16_RE = re.compile(HEX16_PATTERN)
_SHA256_RE = re.compile(SHA256_PATTERN)
_PATH_PART_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9._+-]{0,63}')

# Our module creates /sys/kernel/<name>/: names the kernel itself uses there are refused
# (kernels 5.10 to 7.x; the host checks the live /sys/kernel as well).
SYSFS_KERNEL_ENTRIES = frozenset((
    'address_bits', 'boot_params', 'btf', 'cgroup', 'config', 'cpu_byteorder',
    'crash_elfcorehdr_size', 'debug', 'dlm', 'fadump', 'fscaps', 'iommu_groups', 'irq',
    'kexec_crash_loaded', 'kexec_crash_size', 'kexec_loaded', 'livepatch', 'mm', 'notes',
    'oops_count', 'profiling', 'rcu_expedited', 'rcu_normal', 'reboot', 'security', 'slab',
    'software_nodes', 'tracing', 'uevent_helper', 'uevent_seqnum', 'vmcoreinfo', 'warn_count',
))

# Shared system directories: never our working directory, whatever is (not) in them.
SYSTEM_DIRS = frozenset((
    '/etc', '/usr', '/var', '/opt', '/srv', '/home', '/root', '/boot', '/mnt', '/media',
    '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/run', '/snap',
    '/usr/bin', '/usr/sbin', '/usr/lib', '/usr/lib32', '/usr/lib64', '/usr/libexec',
    '/usr/include', '/usr/share', '/usr/src', '/usr/local', '/usr/local/bin', '/usr/local/lib',
    '/usr/local/share', '/usr/local/sbin', '/var/lib', '/var/cache', '/var/log', '/var/spool',
    '/var/opt', '/var/local', '/var/mail', '/var/backups', '/var/run', '/var/lock',
    '/var/www', '/etc/systemd', '/etc/default', '/run/user', '/run/lock',
))
# World-writable (sticky) or virtual file systems: never below them.
FORBIDDEN_TREES = ('/tmp', '/var/tmp', '/dev', '/proc', '/sys')

_BOOL_TRUE = frozenset(('true', 'yes', 'on', 'y', 't', '1'))
_BOOL_FALSE = frozenset(('false', 'no', 'off', 'n', 'f', '0'))


class InvalidValue(ValueError):
    """A value a user gave is refused; the message names the variable and the rule."""


def type_name(value):
    """The type of ``value`` as a user writes it in YAML (also for ansible-core's tagged types)."""
    if value is None:
        return 'null'
    for kind, name in ((bool, 'boolean'), (int, 'integer'), (float, 'float'), (str, 'string'),
                       (dict, 'mapping'), ((list, tuple), 'list')):
        if isinstance(value, kind):
            return name
    return type(value).__name__


_PLAIN_RE = re.compile(r'[^\x00-\x1f\x7f\\]*')


def shown(value, limit=200):
    """``value`` as a user writes it in YAML, for messages: 'text' (double quotes with escapes when it
    holds a control character or a backslash), null, true/false, numbers, [a, b], {k: v}; never a
    Python repr (None, True, u'', ['6.1'], _AnsibleTaggedStr)."""
    if value is None:
        text = 'null'
    elif isinstance(value, bool):
        text = 'true' if value else 'false'
    elif isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, str):
        value = str(value)
        if _PLAIN_RE.fullmatch(value):
            text = "'%s'" % value.replace("'", "''")
        else:
            text = '"%s"' % ''.join(
                {'\\': '\\\\', '"': '\\"', '\n': '\\n', '\t': '\\t', '\r': '\\r'}.get(c) or
                (c if ord(c) >= 0x20 and ord(c) != 0x7f else '\\x%02x' % ord(c)) for c in value)
    elif isinstance(value, dict):
        text = '{%s}' % ', '.join('%s: %s' % (shown(k, limit), shown(v, limit)) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        text = '[%s]' % ', '.join(shown(v, limit) for v in value)
    else:
        text = 'a %s' % type_name(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _describe(value):
    if isinstance(value, str):
        return 'string %s' % shown(value) if value else 'an empty string'
    if isinstance(value, (dict, list, tuple)) and not value:
        return 'an empty %s' % type_name(value)
    return type_name(value)


def as_bool(field, value):
    """One rule for booleans: true/false, or the words Ansible reads as them (yes, no, on, off, 1, 0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _BOOL_TRUE:
            return True
        if word in _BOOL_FALSE:
            return False
    raise InvalidValue('%s: must be a boolean (true/false), got %s' % (field, _describe(value)))


# Bounds of stale_after (host_lock, host_dir): the age, in seconds, at which a lock or a build
# directory of a run that died is taken over or removed.
STALE_AFTER_BOUNDS = (60, 7 * 86400)


def as_int(field, value, low, high, why=''):
    """One rule for integers: an integer, or a string of digits (``-e var=600``), in [low, high]."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r'-?[0-9]{1,12}', value.strip()):
        number = int(value.strip())
    if number is None:
        raise InvalidValue('%s: must be an integer, got %s' % (field, _describe(value)))
    if not low <= number <= high:
        raise InvalidValue('%s: must be between %d and %d%s, got %d'
                           % (field, low, high, ' (%s)' % why if why else '', number))
    return number


def module_name(value, field='kprobes_fleet_module_name'):
    """A kernel module name we may create: a lower-case C identifier, not a /sys/kernel entry."""
    if not isinstance(value, str) or not _MODULE_NAME_RE.fullmatch(value):
        raise InvalidValue('%s: must match ^%s$ (a lower-case C identifier), got %s'
                           % (field, MODULE_NAME_PATTERN, _describe(value)))
    if value in SYSFS_KERNEL_ENTRIES:
        raise InvalidValue('%s: %s is a directory the kernel itself has in /sys/kernel; our module '
                           'creates /sys/kernel/<name>, choose another name' % (field, shown(value)))
    return str(value)


def host_path(value, field='kprobes_fleet_host_dir'):
    """An absolute, normalised directory path that is ours alone to create, chmod and delete.

    Refused: relative paths, ``.``/``..``/empty components, odd characters, shared system
    directories (``/``, ``/var/lib``, ...) and anything below /tmp, /var/tmp, /dev, /proc, /sys.
    The host checks ownership again (``<dir>/.kprobes-fleet``) before it touches the directory."""
    if not isinstance(value, str) or not value:
        raise InvalidValue('%s: must be an absolute directory path, got %s' % (field, _describe(value)))
    value = str(value)
    if not value.startswith('/') or len(value) > 200:
        raise InvalidValue('%s: must be an absolute path (at most 200 characters), got %s' % (field, shown(value)))
    if value == '/':
        raise InvalidValue('%s: %s is the root directory; kprobes.fleet makes its directory '
                           'root-only and may delete it: it is a shared system directory; use '
                           'one of its own, such as /var/lib/kprobes-fleet' % (field, shown(value)))
    parts = value.split('/')[1:]
    if not all(_PATH_PART_RE.fullmatch(p) for p in parts) or '..' in parts:
        raise InvalidValue('%s: %s is not a normalised path (no empty, "." or ".." components, no '
                           'trailing slash; letters, digits and ._+- only)' % (field, shown(value)))
    for tree in FORBIDDEN_TREES:
        if value == tree or value.startswith(tree + '/'):
            raise InvalidValue('%s: %s is below %s, which is world-writable or virtual; use a '
                               'directory of its own such as /var/lib/kprobes-fleet' % (field, shown(value), tree))
    if len(parts) < 2 or value in SYSTEM_DIRS:
        raise InvalidValue('%s: %s is a shared system directory; kprobes.fleet makes its directory '
                           'root-only and may delete it, so give it one of its own, such as '
                           '/var/lib/kprobes-fleet' % (field, shown(value)))
    return value


def hex16(value, field):
    """A build key or spec hash: 16 lower-case hex digits."""
    if not isinstance(value, str) or not _HEX16_RE.fullmatch(value):
        raise InvalidValue('%s: must be 16 lower-case hex digits, got %s' % (field, _describe(value)))
    return str(value)


def sha256(value, field='sha256'):
    """A sha256 digest (64 hex digits; upper case is accepted and returned in lower case)."""
    text = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(text, str) or not _SHA256_RE.fullmatch(text):
        raise InvalidValue('%s: must be 64 hex digits, got %s' % (field, _describe(value)))
    return str(text)
