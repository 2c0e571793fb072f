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

import binascii
import hashlib
import os
import pwd
import re
import stat

try:  # ansible-core itself depends on cryptography; only ansible-test's bare import check runs without it
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover
    x509 = serialization = NameOID = None
    UnsupportedAlgorithm = ValueError

from ansible.errors import AnsibleError
from ansible.parsing.vault import AnsibleVaultFormatError

from ansible_collections.kprobes.fleet.plugins.module_utils import events, names, probe_spec
from ansible_collections.kprobes.fleet.plugins.plugin_utils import module_sign
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
                name, ', '.join(choices), names.shown(value) if isinstance(value, str) else names.type_name(value)))
        return str(value)
    return check


def _bool(name, value):
    return names.as_bool(name, value)


def _build_timeout(name, value):
    return names.as_int(name, value, BUILD_TIMEOUT[0], BUILD_TIMEOUT[1],
                        'seconds; a build takes minutes, less would make every host build')


def _lock_wait(name, value):
    return names.as_int(name, value, 0, 86400, 'seconds to wait for another run on the same host')


def _metrics(name, value):
    """'off' (also false or empty: YAML reads an unquoted off as false) or 'textfile'."""
    if value in (False, None, '', 'off'):
        return 'off'
    if value == 'textfile':
        return 'textfile'
    raise names.InvalidValue('%s: must be off or textfile (the node_exporter textfile collector), got %s' % (
        name, names.shown(value) if isinstance(value, str) else names.type_name(value)))


def _metrics_interval(name, value):
    return names.as_int(name, value, 1, 3600, 'seconds between two refreshes of the textfile')


def _run_id(name, value):
    if value in (None, ''):
        return ''
    try:
        return names.hex16(value, name)
    except names.InvalidValue:
        raise names.InvalidValue('%s: must be empty or the run id (16 lower-case hex digits) a lock message '
                                 'names, got %s' % (name, names.shown(value) if isinstance(value, str)
                                                    else names.type_name(value)))


# Below these nothing of a user's belongs: the operating system's own trees.
_SYSTEM_TREES = ('/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/sbin',
                 '/sys', '/usr')
_CONTROL_RE = re.compile(r'[\x00-\x1f\x7f]')


def _homes():
    """The home directories of the controller's users (and $HOME): never a cache of their own."""
    homes = set([os.path.normpath(os.path.expanduser('~'))])
    try:
        homes.update(os.path.normpath(p.pw_dir) for p in pwd.getpwall() if p.pw_dir.startswith('/'))
    except (OSError, KeyError):
        pass
    return homes


def _cache_dir(name, value):
    """The controller directory of the built modules; returns it absolute and normalised.

    Refused: no text, control characters (a newline), ~user of a user the controller does not have,
    a relative path (it would depend on the directory ansible-playbook runs from), '..' components,
    the root, a top-level or shared system directory (/var/lib, /usr/bin; also as root), anything in
    the operating system's trees (/usr, /etc, ...), a home directory itself or ~/.cache: clearing the
    cache is rm -rf of it. An existing one must be ours alone (module_cache.check_trusted)."""
    if not isinstance(value, str) or not value.strip():
        raise names.InvalidValue('%s: must be a directory path on the controller, got %s'
                                 % (name, names.type_name(value) if not isinstance(value, str) else 'an empty string'))
    value = str(value)
    if _CONTROL_RE.search(value) or len(value) > 4096:
        raise names.InvalidValue('%s: %s holds a control character (a newline?) or is longer than 4096 '
                                 'characters; give a plain directory path' % (name, names.shown(value)))
    path = os.path.expanduser(value)
    if path.startswith('~'):
        raise names.InvalidValue('%s: %s starts with %s, and the controller has no user %s'
                                 % (name, names.shown(value), path.split('/')[0], names.shown(path.split('/')[0][1:])))
    if not os.path.isabs(path):
        raise names.InvalidValue('%s: must be an absolute path on the controller (or start with ~), got %s; a '
                                 'relative one would depend on the directory ansible-playbook runs from'
                                 % (name, names.shown(value)))
    if '..' in path.split('/'):
        raise names.InvalidValue('%s: %s has a ".." component; give the directory itself' % (name, names.shown(value)))
    path = os.path.normpath(path)
    if path.startswith('//'):
        path = '/' + path.lstrip('/')
    own = ('use a directory of its own such as ~/.cache/kprobes-fleet/modules (clearing the cache is '
           'rm -rf of that directory)')
    homes = _homes()
    real = os.path.realpath(path)
    for where in (path, real) if real != path else (path,):
        what = path if where == path else '%s (which leads to %s)' % (path, where)
        if where.count('/') < 2 or where in names.SYSTEM_DIRS or where in names.FORBIDDEN_TREES \
                or any(where == t or where.startswith(t + '/') for t in _SYSTEM_TREES):
            raise names.InvalidValue('%s: %s is %s, which is not ours to fill; %s'
                                     % (name, what, 'the root directory' if where == '/' else 'a system directory',
                                        own))
        if where in homes or (os.path.basename(where) == '.cache' and os.path.dirname(where) in homes):
            raise names.InvalidValue('%s: %s is %s, shared with everything else there; %s'
                                     % (name, what, 'a home directory' if where in homes
                                        else "a home's cache directory", own))
    if os.path.exists(path):
        check_trusted(path, follow=True)
    return path


def _build_host(name, value, inventory):
    if value in (None, ''):
        return ''
    if not isinstance(value, str) or value not in inventory:
        raise names.InvalidValue('%s: must be empty or a host of this inventory, got %s'
                                 % (name, names.shown(value) if isinstance(value, str) else names.type_name(value)))
    return str(value)


def _release(name, value):
    if value in (None, ''):
        return ''
    if not isinstance(value, str) or not _RELEASE_RE.fullmatch(value):
        raise names.InvalidValue('%s: must be empty (the running kernel) or a kernel release such as '
                                 '6.1.0-50-amd64, got %s' % (name, _given(value)))
    return str(value)


def _given(value):
    """A value a user gave, for "got ...": a string quoted, anything else its YAML type and value."""
    if isinstance(value, str):
        return names.shown(value) if value else 'an empty string'
    if value is None:
        return 'null (no value)'
    return '%s %s' % ({'integer': 'the integer', 'float': 'the number', 'boolean': 'the boolean'}.get(
        names.type_name(value), 'a ' + names.type_name(value)), names.shown(value))


def _packages(name, value):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise names.InvalidValue('%s: must be a list of package names, got %s' % (name, names.type_name(value)))
    for pkg in value:
        if not isinstance(pkg, str) or not _PACKAGE_RE.fullmatch(pkg):
            raise names.InvalidValue('%s: %s is not a package name (letters, digits and .+_:~- only, '
                                     'starting with a letter or digit)' % (name, _given(pkg)))
    return [str(p) for p in value]


VAULT_HEADER = b'$ANSIBLE_VAULT'
SIGNING = ('kprobes_fleet_signing_key', 'kprobes_fleet_signing_cert')
_KEYID_RE = re.compile(r'[0-9a-f]{2,128}')
_PEM_KEY_RE = re.compile(br'-----BEGIN ((?:[A-Z0-9]+ )?PRIVATE KEY)-----.*?-----END \1-----', re.S)
_PEM_CERT_RE = re.compile(br'-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----', re.S)
_VAULT_HOW = ('give the vault password (--ask-vault-pass, --vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE; '
              'in AWX, a vault credential)')


class VaultError(Exception):
    """An ansible-vault file the run cannot decrypt; the message says why, as the end of a sentence."""


def vault_decrypt(loader, data, path):
    """An ansible-vault file's content, decrypted in memory with the vault secrets of ``loader`` (an
    action plugin's ``_loader``: this run's --ask-vault-pass, --vault-password-file, AWX credential).
    The ``decrypt`` of read_signing_file; raises VaultError."""
    del path
    vault = getattr(loader, '_vault', None)
    if vault is None:
        raise VaultError('this Ansible gives its plugins no vault; ' + _VAULT_HOW)
    if not vault.secrets:
        raise VaultError('this run has no vault password; ' + _VAULT_HOW)
    try:
        return vault.decrypt(data)
    except (AnsibleVaultFormatError, ValueError):
        raise VaultError('it starts like one but is not a well-formed vault file (damaged, or not made by '
                         'ansible-vault encrypt)')
    except AnsibleError:
        raise VaultError('none of the vault passwords of this run opens it (a wrong password or vault id, or a '
                         'damaged file)')


def _controller_file(name, value, private=False):
    """Empty (no signing) or a readable regular file on the controller; returns its absolute path.

    What the path and the modes allow is checked here; what the file holds (decrypted when it is an
    ansible-vault file), and that the key belongs to the cert, by check_signing. Modes: neither file
    may be writable by others (anyone could swap what the fleet trusts); a private key in plain text
    must be readable by its owner only, while an ansible-vault file may be readable by anyone (its
    content is encrypted: that is what vault is for)."""
    if value in (None, ''):
        return ''
    if not isinstance(value, str):
        raise names.InvalidValue('%s: must be empty (modules are not signed) or the path of a file on the '
                                 'controller, got %s' % (name, names.type_name(value)))
    path = os.path.expanduser(value)
    if not os.path.isabs(path) or '\0' in path:
        raise names.InvalidValue('%s: must be an absolute path on the controller (or start with ~), got %s'
                                 % (name, names.shown(value)))
    path = os.path.normpath(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a fifo would block the open
            raise names.InvalidValue('%s: %s is not a regular file' % (name, path))
        with open(path, 'rb') as f:
            vaulted = f.read(len(VAULT_HEADER)) == VAULT_HEADER
    except (IOError, OSError) as e:
        raise names.InvalidValue('%s: cannot read %s on the controller: %s'
                                 % (name, path, e.strerror or e))
    if st.st_mode & 0o002:
        raise names.InvalidValue(
            '%s: %s is writable by others (mode %04o): anyone on the controller could replace what the '
            'fleet signs with; chmod o-w it' % (name, path, stat.S_IMODE(st.st_mode)))
    if private and not vaulted and st.st_mode & 0o044:
        raise names.InvalidValue(
            '%s: %s is readable by %s (mode %04o): a signing key must be readable by its owner only '
            '(chmod 600 it) or encrypted with ansible-vault'
            % (name, path, ' and '.join(w for w, bit in (('its group', 0o040), ('others', 0o004))
                                        if st.st_mode & bit), stat.S_IMODE(st.st_mode)))
    return path


def _signing_key(name, value):
    return _controller_file(name, value, private=True)


def _signing_cert(name, value):
    return _controller_file(name, value)


def read_signing_file(name, path, decrypt=None):
    """The content of a signing file, decrypted when it is an ansible-vault file.

    ``decrypt(data, path)`` returns the plain bytes of vault data or raises VaultError; None means
    this caller has no vault (a vault file is then refused)."""
    try:
        with open(path, 'rb') as f:
            data = f.read(1 << 20)
    except (IOError, OSError) as e:
        raise names.InvalidValue('%s: cannot read %s on the controller: %s' % (name, path, e.strerror or e))
    if not data.startswith(VAULT_HEADER):
        return data
    if decrypt is None:
        raise names.InvalidValue('%s: %s is an ansible-vault file and nothing here can decrypt it' % (name, path))
    try:
        return decrypt(data, path)
    except VaultError as e:
        raise names.InvalidValue('%s: %s is an ansible-vault file that this run cannot decrypt: %s'
                                 % (name, path, e))


def private_key(data, what='kprobes_fleet_signing_key'):
    """The private key of a PEM file (the first PRIVATE KEY block; a cert may be in the same file).

    Refused: no PEM private key, a key with a passphrase (nobody can type it while a play runs), a
    block that does not parse, a key of a type module signatures cannot use (module_sign.check_key)."""
    match = _PEM_KEY_RE.search(data)
    if not match:
        raise names.InvalidValue('%s is not a PEM private key (-----BEGIN PRIVATE KEY-----), which kprobes.fleet '
                                 'signs with (openssl pkey -in key.der -inform DER -out key.pem converts a DER key)'
                                 % what)
    block = match.group(0)
    encrypted = ('%s is protected by a passphrase, which nobody can type while the play signs modules: '
                 'remove it (openssl pkey -in key.pem -out plain.pem) and protect the plain key with '
                 'ansible-vault encrypt or chmod 600 instead' % what)
    if match.group(1) == b'ENCRYPTED PRIVATE KEY' or b'Proc-Type: 4,ENCRYPTED' in block:
        raise names.InvalidValue(encrypted)
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise names.InvalidValue(encrypted)
    except (ValueError, UnsupportedAlgorithm):
        raise names.InvalidValue('%s holds a PEM private key that does not parse (damaged, or of a kind '
                                 'OpenSSL cannot read)' % what)
    return module_sign.check_key(key, what)


def certificate(data, what='kprobes_fleet_signing_cert'):
    """The X.509 certificate of a PEM (its first CERTIFICATE block) or DER file."""
    match = _PEM_CERT_RE.search(data)
    try:
        cert = (x509.load_pem_x509_certificate(match.group(0)) if match
                else x509.load_der_x509_certificate(data))
        cert.public_key()
        return cert
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise names.InvalidValue('%s is not an X.509 certificate (PEM or DER)' % what)


def _public_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_signing(values, decrypt=None):
    """What the signing files hold: a plain (or vault-decrypted) PEM private key without passphrase,
    an X.509 cert, and the key of that cert. Returns ``(errors, cert_sha256)``; cert_sha256 is the
    sha256 of the cert's (decrypted) content, as in signer_identity, or None."""
    errors, dummy, dummy, cert_sha = _read_signing(values, decrypt)
    return errors, cert_sha


def signing_pair(key_path, cert_path, decrypt=None):
    """``(key, cert, cert_sha256)`` to sign modules with (module_sign.sign_module), read and checked
    as the validate action checks them (paths and modes, then content): the key is read on the
    controller only, into memory (a vault file decrypted with ``decrypt``). Raises InvalidValue."""
    paths = {SIGNING[0]: _signing_key(SIGNING[0], key_path), SIGNING[1]: _signing_cert(SIGNING[1], cert_path)}
    errors, key, cert, cert_sha = _read_signing(paths, decrypt)
    if errors or key is None or cert is None:
        raise names.InvalidValue('; '.join(errors) or 'modules are signed with kprobes_fleet_signing_key and '
                                 'kprobes_fleet_signing_cert together, and one of them is empty')
    return key, cert, cert_sha


def _read_signing(values, decrypt):
    errors = []
    key = cert = cert_sha = None
    key_path, cert_path = values.get(SIGNING[0]), values.get(SIGNING[1])
    if key_path:
        try:
            key = private_key(read_signing_file(SIGNING[0], key_path, decrypt),
                              '%s: %s' % (SIGNING[0], key_path))
        except names.InvalidValue as e:
            errors.append(str(e))
    if cert_path:
        try:
            data = read_signing_file(SIGNING[1], cert_path, decrypt)
            cert = certificate(data, '%s: %s' % (SIGNING[1], cert_path))
            cert_sha = hashlib.sha256(data).hexdigest()
        except names.InvalidValue as e:
            errors.append(str(e))
    if key is not None and cert is not None and _public_der(key.public_key()) != _public_der(cert.public_key()):
        errors.append('%s: %s is not the private key of %s %s (their public keys differ): it would '
                      'make a signature no kernel that trusts this cert accepts; give the key the cert was made '
                      'from' % (SIGNING[0], key_path, SIGNING[1], cert_path))
    return errors, key, cert, cert_sha


def _common_name(name):
    """The first commonName of an X.501 Name (what modinfo and the kernel show), or ''."""
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attributes[0].value) if attributes else ''


def signer_identity(data, what='kprobes_fleet_signing_cert'):
    """What a signing cert (PEM or DER bytes) means to the kernel and to modinfo.

    ``sha256``: of the file's content (part of the build key); ``keyid``: the id the kernel shows
    after the cert's name in /proc/keys (its subject key identifier, else its serial number as DER
    holds it), lower case hex; ``signer``: the issuer's CN (``modinfo -F signer``); ``subject``: the
    subject's CN."""
    cert = certificate(data, what)
    try:
        try:
            skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            skid = None
        serial = cert.serial_number
        magnitude = serial if serial >= 0 else -serial - 1
        serial_der = serial.to_bytes((magnitude.bit_length() + 8) // 8, 'big', signed=True)
        return {
            'sha256': hashlib.sha256(data).hexdigest(),
            'keyid': binascii.hexlify(skid or serial_der).decode(),
            'signer': _common_name(cert.issuer),
            'subject': _common_name(cert.subject),
        }
    except (ValueError, TypeError):
        raise names.InvalidValue('%s is not an X.509 certificate (PEM or DER)' % what)


REPORT_MARK = '<meta name="generator" content="kprobes.fleet fleet report">'
_REPORT_SUFFIXES = ('.html', '.htm')


def _report(name, value):
    """Empty (no report) or the controller path of the HTML fleet report; returns it absolute.

    The path must end in .html, its directory must exist and be writable by the user running the
    play, and an existing file there must be a regular file (not a symlink, fifo or device) owned by
    that user that is a report we wrote (it carries REPORT_MARK), so a report never replaces anything
    else on the controller: not even another user's report (root included). The role checks again
    right before it writes (kprobes.fleet.validate report_file)."""
    if value in (None, ''):
        return ''
    if not isinstance(value, str):
        raise names.InvalidValue('%s: must be empty (no report) or the path of an .html file on the '
                                 'controller, got %s' % (name, names.type_name(value)))
    path = os.path.expanduser(str(value))
    if not os.path.isabs(path) or len(path) > 4096 or '\0' in path or '\n' in path:
        raise names.InvalidValue('%s: must be an absolute path on the controller (or start with ~), got %s'
                                 % (name, names.shown(value)))
    if path.endswith('/') or not path.lower().endswith(_REPORT_SUFFIXES):
        raise names.InvalidValue('%s: must be the path of an .html file (a file name ending in .html, '
                                 'not a directory), got %s' % (name, names.shown(value)))
    path = os.path.normpath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise names.InvalidValue('%s: the directory %s does not exist on the controller' % (name, parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise names.InvalidValue('%s: the directory %s is not writable by the user running Ansible (uid %d); '
                                 'choose a directory of yours' % (name, parent, os.geteuid()))
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
    if st.st_uid != os.geteuid():
        raise names.InvalidValue('%s: %s exists and belongs to uid %d, not to the user running Ansible (uid %d); '
                                 'another user\'s file is never replaced, even a kprobes.fleet report: choose '
                                 'another path' % (name, path, st.st_uid, os.geteuid()))
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
        raise names.InvalidValue('%s: must be an absolute path on the controller (or start with ~/), got %s'
                                 % (field, names.shown(value)))
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
                                 'keep the events key in a directory of yours'
                                 % (field, directory, st.st_uid, stat.S_IMODE(st.st_mode)))


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


def _log_exempt(name, value):
    """The processes whose matches are never written to the kernel log (probe_spec.LOG_EXEMPT_DEFAULT)."""
    try:
        return probe_spec.check_comm_list(value, name)
    except probe_spec.ProbeSpecError as e:
        raise names.InvalidValue(str(e))


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
    'kprobes_fleet_metrics': ('off', _metrics),
    'kprobes_fleet_metrics_dir': ('/var/lib/prometheus/node-exporter', lambda name, value: names.host_path(value, name)),
    'kprobes_fleet_metrics_interval': (15, _metrics_interval),
    'kprobes_fleet_log_exempt': (list(probe_spec.LOG_EXEMPT_DEFAULT), _log_exempt),
}


def check_plan(plan, values, host, for_load, cert_sha256=None):
    """A build plan handed to probe_build / probe_load: consistent with the spec rules and the cache.

    ``cert_sha256``: of the signing cert's decrypted content (check_signing), when known. Returns
    the module's sha256 from the cache for a load plan (None for a build plan)."""
    if not isinstance(plan, dict):
        raise names.InvalidValue('build plan: must be the mapping kprobes.fleet.build_plan returns, got %s'
                                 % names.type_name(plan))
    key = names.hex16(plan.get('build_key'), 'build plan: build_key')
    spec = names.hex16(plan.get('spec_hash'), 'build plan: spec_hash')
    cache = ModuleCache(values['kprobes_fleet_cache_dir'], values['kprobes_fleet_module_name'])
    probes = plan.get('probes')
    if not isinstance(probes, list) or not probes or not all(isinstance(p, dict) for p in probes):
        raise names.InvalidValue('build plan: probes must be the resolved probe list')
    try:
        resolved = probe_spec.check_resolved(probes)
    except names.InvalidValue as e:
        raise names.InvalidValue('build plan: %s' % e)
    if resolved != probes or probe_spec.spec_hash(cache.module, resolved, template_sha()) != spec:
        raise names.InvalidValue('build plan: spec_hash %s does not belong to these probes, this module '
                                 'name and these templates; use the plan kprobes.fleet.build_plan returns' % spec)
    if plan.get('ko') != cache.ko(key):
        raise names.InvalidValue('build plan: ko must be %s' % cache.ko(key))
    _check_signer(plan.get('signer'), values, cert_sha256)
    if for_load:
        return cache.sha256_of(key)
    if plan.get('staged') != cache.staged(key, host):
        raise names.InvalidValue('build plan: staged must be %s' % cache.staged(key, host))
    return None


def _check_signer(signer, values, cert_sha256=None):
    """A plan carries the signer (build_plan's signer_identity) exactly when signing is configured.

    Its sha256 must be ``cert_sha256`` when given; else that of the cert file (not checked for a
    vault file, which only check_signing can decrypt)."""
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
    if cert_sha256 is None:
        try:
            with open(cert, 'rb') as f:
                data = f.read()
        except (IOError, OSError) as e:
            raise names.InvalidValue('kprobes_fleet_signing_cert: cannot read %s on the controller: %s'
                                     % (cert, e.strerror or e))
        if not data.startswith(VAULT_HEADER):
            cert_sha256 = hashlib.sha256(data).hexdigest()
    if cert_sha256 is not None and cert_sha256 != signer['sha256']:
        raise names.InvalidValue('build plan: signer %s is not kprobes_fleet_signing_cert %s; use the plan '
                                 'kprobes.fleet.build_plan returns' % (signer['sha256'], cert))


def check(values, host, inventory, check_probes=True, plans=None, decrypt=None):
    """Check ``values`` (variable -> value as the user set it; missing ones take their default).

    Returns ``(normalised, errors, sha256)``; ``normalised['kprobes_fleet_probes']`` is the
    normalised spec when checked. ``plans`` maps 'build'/'load' to a plan to check; ``sha256`` is
    the cached module's digest of the load plan (else None). ``decrypt``: see read_signing_file
    (the validate action passes the run's vault)."""
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
    signing_errors, cert_sha256 = check_signing(result, decrypt)
    errors.extend(signing_errors)
    if check_probes and result.get('kprobes_fleet_state') == 'present':
        try:
            result['kprobes_fleet_probes'] = probe_spec.normalize(
                values.get('kprobes_fleet_probes'), log_exempt=result.get('kprobes_fleet_log_exempt'))
        except names.InvalidValue as e:
            errors.append('kprobes_fleet_probes: %s' % e)
    sha = None
    if not errors:
        for role, plan in sorted((plans or {}).items()):
            try:
                sha = check_plan(plan, result, host, role == 'load', cert_sha256) or sha
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
