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

import base64
import binascii
import hashlib
import os
import re
import stat

from ansible_collections.kprobes.fleet.plugins.module_utils import events, names, probe_spec
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


def _lock_wait(name, value):
    return names.as_int(name, value, 0, 86400, 'seconds to wait for another run on the same host')


def _run_id(name, value):
    if value in (None, ''):
        return ''
    try:
        return names.hex16(value, name)
    except names.InvalidValue:
        raise names.InvalidValue('%s: must be empty or the run id (16 lower-case hex digits) a lock message '
                                 'names, got %s' % (name, repr(str(value)) if isinstance(value, str)
                                                    else names.type_name(value)))


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


VAULT_HEADER = b'$ANSIBLE_VAULT'
SIGNING = ('kprobes_fleet_signing_key', 'kprobes_fleet_signing_cert')
_KEYID_RE = re.compile(r'[0-9a-f]{2,128}')


def _controller_file(name, value, private=False):
    """Empty (no signing) or a readable regular file on the controller; returns its absolute path.

    A private key must be readable by its owner only, unless it is an ansible-vault file (the copy
    to the builder decrypts it). A file in plain text is checked for what it must be: a PEM
    private key, or an X.509 certificate (PEM or DER)."""
    if value in (None, ''):
        return ''
    if not isinstance(value, str):
        raise names.InvalidValue('%s: must be empty (modules are not signed) or the path of a file on the '
                                 'controller, got %s' % (name, names.type_name(value)))
    path = os.path.expanduser(value)
    if not os.path.isabs(path):
        raise names.InvalidValue('%s: must be an absolute path on the controller (or start with ~), got %r'
                                 % (name, str(value)))
    path = os.path.normpath(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a fifo would block the open
            raise names.InvalidValue('%s: %s is not a regular file' % (name, path))
        with open(path, 'rb') as f:
            data = f.read(1 << 20)
    except (IOError, OSError) as e:
        raise names.InvalidValue('%s: cannot read %s on the controller: %s'
                                 % (name, path, e.strerror or e))
    if data.startswith(VAULT_HEADER):
        return path
    if private and st.st_mode & 0o044:
        raise names.InvalidValue(
            '%s: %s is readable by %s (mode %04o): a signing key must be readable by its owner only '
            '(chmod 600 it) or encrypted with ansible-vault'
            % (name, path, ' and '.join(w for w, bit in (('its group', 0o040), ('others', 0o004))
                                        if st.st_mode & bit), stat.S_IMODE(st.st_mode)))
    if private:
        if not re.search(br'-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----', data):
            raise names.InvalidValue('%s: %s is not a PEM private key (-----BEGIN PRIVATE KEY-----), '
                                     'which the kernel\'s sign-file needs' % (name, path))
    else:
        signer_identity(data, '%s: %s' % (name, path))
    return path


def _signing_key(name, value):
    return _controller_file(name, value, private=True)


def _signing_cert(name, value):
    return _controller_file(name, value)


def _der(data, pos, end):
    """(tag, start, end) of the DER element at ``pos``; ValueError when it does not fit."""
    if pos + 2 > end:
        raise ValueError('truncated')
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7f
        if not 0 < count <= 4 or pos + count > end:
            raise ValueError('bad length')
        length = int(binascii.hexlify(data[pos:pos + count]), 16)
        pos += count
    if pos + length > end:
        raise ValueError('truncated')
    return tag, pos, pos + length


def _children(data, start, end):
    out = []
    while start < end:
        tag, s, e = _der(data, start, end)
        out.append((tag, s, e))
        start = e
    return out


_OID_CN = b'\x55\x04\x03'      # 2.5.4.3 commonName
_OID_SKID = b'\x55\x1d\x0e'    # 2.5.29.14 subjectKeyIdentifier


def _is_oid(data, element, oid):
    tag, start, end = element
    return tag == 0x06 and data[start:end] == oid


def _common_name(data, start, end):
    """The first commonName of an X.501 Name (what modinfo and the kernel show), or ''."""
    for dummy, s, e in _children(data, start, end):          # SET (RDN)
        for dummy2, s2, e2 in _children(data, s, e):          # SEQUENCE {OID, value}
            parts = _children(data, s2, e2)
            if len(parts) == 2 and _is_oid(data, parts[0], _OID_CN):
                tag, vs, ve = parts[1]
                return data[vs:ve].decode('utf-16-be' if tag == 0x1e else 'utf-8', 'replace')
    return ''


def signer_identity(data, what='kprobes_fleet_signing_cert'):
    """What a signing cert (PEM or DER bytes) means to the kernel and to modinfo.

    ``sha256``: of the file's content (part of the build key); ``keyid``: the id the kernel shows
    after the cert's name in /proc/keys (its subject key identifier, else its serial number), lower
    case hex; ``signer``: the issuer's CN (``modinfo -F signer``); ``subject``: the subject's CN."""
    der = data
    match = re.search(br'-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----', data, re.S)
    if match:
        try:
            der = base64.b64decode(b''.join(match.group(1).split()), validate=True)
        except (binascii.Error, ValueError):
            der = b''
    try:
        tag, s, e = _der(der, 0, len(der))
        if tag != 0x30:
            raise ValueError('not a SEQUENCE')
        cert = _children(der, s, e)
        if len(cert) != 3 or cert[0][0] != 0x30:
            raise ValueError('not a certificate')
        tbs = _children(der, cert[0][1], cert[0][2])
        if tbs and tbs[0][0] == 0xa0:
            tbs = tbs[1:]
        if len(tbs) < 6 or tbs[0][0] != 0x02 or any(t != 0x30 for t, dummy, dummy2 in tbs[1:6]):
            raise ValueError('not a certificate')
        serial = der[tbs[0][1]:tbs[0][2]]
        skid = None
        for tag, s, e in tbs[6:]:
            if tag != 0xa3:
                continue
            seq = _children(der, s, e)
            for dummy, xs, xe in (_children(der, seq[0][1], seq[0][2]) if seq else []):
                ext = _children(der, xs, xe)
                if len(ext) >= 2 and _is_oid(der, ext[0], _OID_SKID) and ext[-1][0] == 0x04:
                    inner, ks, ke = _der(der, ext[-1][1], ext[-1][2])  # extnValue holds an OCTET STRING
                    if inner == 0x04 and ke > ks:
                        skid = der[ks:ke]
        return {
            'sha256': hashlib.sha256(data).hexdigest(),
            'keyid': binascii.hexlify(skid or serial).decode(),
            'signer': _common_name(der, tbs[2][1], tbs[2][2]),
            'subject': _common_name(der, tbs[4][1], tbs[4][2]),
        }
    except (ValueError, IndexError):
        raise names.InvalidValue('%s is not an X.509 certificate (PEM or DER)' % what)


REPORT_MARK = '<meta name="generator" content="kprobes.fleet fleet report">'
_REPORT_SUFFIXES = ('.html', '.htm')


def _report(name, value):
    """Empty (no report) or the controller path of the HTML fleet report; returns it absolute.

    The path must end in .html, its directory must exist, and an existing file there must be a
    regular file (not a symlink, fifo or device) that is a report we wrote (it carries REPORT_MARK),
    so a report never replaces anything else on the controller."""
    if value in (None, ''):
        return ''
    if not isinstance(value, str):
        raise names.InvalidValue('%s: must be empty (no report) or the path of an .html file on the '
                                 'controller, got %s' % (name, names.type_name(value)))
    path = os.path.expanduser(str(value))
    if not os.path.isabs(path) or len(path) > 4096 or '\0' in path or '\n' in path:
        raise names.InvalidValue('%s: must be an absolute path on the controller (or start with ~), got %r'
                                 % (name, str(value)))
    if path.endswith('/') or not path.lower().endswith(_REPORT_SUFFIXES):
        raise names.InvalidValue('%s: must be the path of an .html file (a file name ending in .html, '
                                 'not a directory), got %r' % (name, str(value)))
    path = os.path.normpath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise names.InvalidValue('%s: the directory %s does not exist on the controller' % (name, parent))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise names.InvalidValue('%s: cannot inspect %s on the controller: %s' % (name, path, e.strerror or e))
    if stat.S_ISLNK(st.st_mode):
        raise names.InvalidValue('%s: %s is a symbolic link; give the path of the report itself' % (name, path))
    if not stat.S_ISREG(st.st_mode):
        raise names.InvalidValue('%s: %s exists and is not a regular file' % (name, path))
    try:
        with open(path, 'rb') as f:
            head = f.read(4096)
    except (IOError, OSError) as e:
        raise names.InvalidValue('%s: cannot read %s on the controller: %s' % (name, path, e.strerror or e))
    if st.st_size and REPORT_MARK.encode() not in head:
        raise names.InvalidValue('%s: %s exists and is not a kprobes.fleet report; it is never replaced, '
                                 'choose another path' % (name, path))
    return path


# -- kprobes_fleet_events: the controller's events key and each host's own token --------------------
EVENTS_KEY_FILE = '~/.config/kprobes-fleet/events.key'


def _events_key_path(name, value):
    field = '%s.key_file' % name
    if value is None or value == '':
        value = EVENTS_KEY_FILE
    if not isinstance(value, str) or any(c in value for c in '\n\r\0'):
        raise names.InvalidValue('%s: must be a file path on the controller, got %s' % (field, names.type_name(value)))
    path = os.path.expanduser(value)
    if not os.path.isabs(path):
        raise names.InvalidValue('%s: must be an absolute path on the controller (or start with ~/), got %r'
                                 % (field, value))
    return os.path.normpath(path)


def _events_key_dir(field, path):
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
    except OSError as e:
        raise names.InvalidValue('%s: cannot make the directory %s on the controller: %s'
                                 % (field, directory, e.strerror or e))
    if not stat.S_ISDIR(st.st_mode):
        raise names.InvalidValue('%s: %s is not a directory' % (field, directory))
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise names.InvalidValue('%s: the directory %s may be changed by other users (owner uid %d, mode %04o); '
                                 'keep the events key in a directory of yours' % (field, directory, st.st_uid,
                                                                                 stat.S_IMODE(st.st_mode)))


def events_key(name, value):
    """The events key (bytes) from ``value`` (kprobes_fleet_events.key_file): made on first use (32
    random bytes, hex, mode 0600; two validations racing make one key), then only read, and only
    from a regular file of ours that no one else may read."""
    import secrets
    field = '%s.key_file' % name
    path = _events_key_path(name, value)
    if not os.path.lexists(path):
        _events_key_dir(field, path)
        tmp = '%s.%d.%s.tmp' % (path, os.getpid(), secrets.token_hex(4))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, (secrets.token_hex(32) + '\n').encode('ascii'))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # never replaces a key: the first of racing validations wins
            except FileExistsError:
                pass
        except OSError as e:
            raise names.InvalidValue('%s: cannot write the events key %s on the controller: %s'
                                     % (field, path, e.strerror or e))
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise names.InvalidValue('%s: cannot read the events key %s on the controller: %s%s'
                                 % (field, path, e.strerror or e, ' (a symbolic link?)' if os.path.islink(path) else ''))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise names.InvalidValue('%s: %s is not a regular file' % (field, path))
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise names.InvalidValue('%s: the events key %s must be yours and readable by you alone (owner uid %d, '
                                     'mode %04o; chmod 600): whoever reads it can post events as any host'
                                     % (field, path, st.st_uid, stat.S_IMODE(st.st_mode)))
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        return events.check_key(data, '%s: %s' % (field, path))
    except names.InvalidValue as e:
        raise names.InvalidValue(str(e))


def _events(name, value, host):
    """kprobes_fleet_events, checked; without a token of the user's, the host gets its own one,
    derived from the controller's events key and its inventory name (events.token_for)."""
    config = events.check_config(value, name, controller_keys=('key_file',))
    if not config:
        return config
    try:
        events.check_host(host, 'inventory host name')
    except names.InvalidValue as e:
        raise names.InvalidValue('%s: the events of this host carry its name, and %s' % (name, e))
    if not config['token']:
        config['token'] = events.token_for(events_key(name, value.get('key_file')), host)
    return config


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
    'kprobes_fleet_signing_key': ('', _signing_key),
    'kprobes_fleet_signing_cert': ('', _signing_cert),
    'kprobes_fleet_persist': (True, _bool),
    'kprobes_fleet_lock_wait': (300, _lock_wait),
    'kprobes_fleet_unlock': ('', _run_id),
    'kprobes_fleet_report': ('', _report),
    'kprobes_fleet_events': ({}, None),  # needs the host's name: _events
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
    _check_signer(plan.get('signer'), values)
    if for_load:
        return cache.sha256_of(key)
    if plan.get('staged') != cache.staged(key, host):
        raise names.InvalidValue('build plan: staged must be %s' % cache.staged(key, host))
    return None


def _check_signer(signer, values):
    """A plan carries the signer (build_plan's signer_identity) exactly when signing is configured."""
    cert = values.get('kprobes_fleet_signing_cert')
    if not cert:
        if signer:
            raise names.InvalidValue('build plan: signer is set but kprobes_fleet_signing_cert is not; '
                                     'use the plan kprobes.fleet.build_plan returns')
        return
    if not isinstance(signer, dict) or not isinstance(signer.get('keyid'), str) \
            or not _KEYID_RE.fullmatch(signer['keyid']) or len(signer['keyid']) % 2 \
            or not isinstance(signer.get('sha256'), str) or not re.fullmatch(names.SHA256_PATTERN, signer['sha256']) \
            or not isinstance(signer.get('signer'), str) or not isinstance(signer.get('subject'), str):
        raise names.InvalidValue('build plan: kprobes_fleet_signing_cert is set, so the plan needs the signer '
                                 'kprobes.fleet.build_plan computes from it (signing_cert)')
    try:
        with open(cert, 'rb') as f:
            data = f.read()
    except (IOError, OSError) as e:
        raise names.InvalidValue('kprobes_fleet_signing_cert: cannot read %s on the controller: %s'
                                 % (cert, e.strerror or e))
    if not data.startswith(VAULT_HEADER) and hashlib.sha256(data).hexdigest() != signer['sha256']:
        raise names.InvalidValue('build plan: signer %s is not kprobes_fleet_signing_cert %s; use the plan '
                                 'kprobes.fleet.build_plan returns' % (signer['sha256'], cert))


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
            elif name == 'kprobes_fleet_events':
                result[name] = _events(name, value, host)
            elif rule is not None:
                result[name] = rule(name, value)
            else:
                result[name] = value
        except names.InvalidValue as e:
            errors.append(str(e))
    given = [n for n in SIGNING if result.get(n, values.get(n))]
    if len(given) == 1:
        errors.append('%s: set both kprobes_fleet_signing_key and kprobes_fleet_signing_cert (modules are '
                      'signed) or neither (they are not), got only %s' % (' and '.join(SIGNING), given[0]))
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
