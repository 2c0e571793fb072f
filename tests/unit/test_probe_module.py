# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import hashlib
import json
import os
import shutil
import stat

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import kmod_load
from ansible_collections.kprobes.fleet.plugins.modules import probe_module
import fakes
from fakes import Failed

RELEASE = '6.1.0-56-amd64'
NAME = 'kprobes_fleet'
NEW_HASH = '3f2a9c0d11e4b7a5'
OLD_HASH = '0d11e4b7a53f2a9c'
BOOT = '84622e10-2383-4f54-ba8b-50898d63d5b3'
STATE_DIR = '/var/lib/kprobes-fleet/state'


class FakeModule(fakes.FakeModule):
    def __init__(self, params, check_mode=False, diff=False):
        fakes.FakeModule.__init__(self, params, check_mode=check_mode, diff=diff)
        self.handler = None
        self.calls = []

    def get_bin_path(self, tool, required=False):
        return '/sbin/' + tool

    def run_command(self, argv):
        self.calls.append(argv)
        return self.handler(argv)


class Host(object):
    """A fake host tree (sysfs, /dev/kmsg, boot_id) plus a fake kmod behaving like the kernel."""

    def __init__(self, tmp_path):
        self.root = str(tmp_path / 'root')
        self.state_dir = os.path.join(self.root, STATE_DIR.lstrip('/'))
        self.seq = 0
        os.makedirs(os.path.join(self.root, 'dev'))
        os.makedirs(os.path.join(self.root, 'proc/sys/kernel/random'))
        with open(os.path.join(self.root, 'proc/sys/kernel/random/boot_id'), 'w') as f:
            f.write(BOOT + '\n')
        open(self.kmsg, 'w').close()
        for i in range(5):
            self.log('boot noise %d' % i)
        self.vermagic = RELEASE + ' SMP preempt mod_unload modversions '
        self.versions = {}       # ko path -> MODULE_VERSION
        self.insmod_fail = {}    # ko path -> (errno, kernel lines): the kernel refuses that file's bytes
        self.sources = {}        # file bytes -> the ko path they were made as (what a private copy holds)
        self.rmmod_fail = None
        self.unmarked = set()    # ko paths built without our marker
        self.signatures = {}     # ko path -> modinfo fields of its signature (sig_id, signer, ...)

    @property
    def kmsg(self):
        return os.path.join(self.root, 'dev', 'kmsg')

    def log(self, text):
        with open(self.kmsg, 'a') as f:
            f.write('6,%d,%d,-;%s\n' % (self.seq, 1000 * self.seq, text))
        self.seq += 1

    def load(self, spec_hash, probes=(('disk_full', 'vfs_write'),), marker=True):
        os.makedirs(os.path.join(self.root, 'sys/module', NAME), exist_ok=True)
        base = os.path.join(self.root, 'sys/kernel', NAME)
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, 'spec_hash'), 'w') as f:
            f.write(spec_hash + '\n')
        with open(os.path.join(self.root, 'sys/module', NAME, 'version'), 'w') as f:
            f.write(spec_hash + '\n')
        if marker:
            with open(os.path.join(base, 'marker'), 'w') as f:
                f.write('kprobes.fleet\n')
        for probe, func in probes:
            d = os.path.join(base, 'probes', probe)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, 'function'), 'w') as f:
                f.write(func + '\n')
            with open(os.path.join(d, 'registered'), 'w') as f:
                f.write('1\n')
        self.log('%s: loaded spec_hash=%s probes=%d' % (NAME, spec_hash, len(probes)))

    def unload(self):
        shutil.rmtree(os.path.join(self.root, 'sys/module', NAME))
        shutil.rmtree(os.path.join(self.root, 'sys/kernel', NAME))

    def loaded_hash(self):
        p = os.path.join(self.root, 'sys/kernel', NAME, 'spec_hash')
        return open(p).read().strip() if os.path.exists(p) else None

    def source(self, path):
        """The ko path whose bytes ``path`` holds (our private copies are found by their content)."""
        with open(path, 'rb') as f:
            return self.sources.get(f.read(), path)

    def finit_module(self, fd):
        """kmod_load's finit_module(2): loads what the descriptor reads, like the kernel."""
        path = os.readlink('/proc/self/fd/%d' % fd)
        self.module.calls.append(['load', path])
        data = os.read(fd, 1 << 20)
        src = self.sources.get(data, path)
        if src in self.insmod_fail:
            err, lines = self.insmod_fail[src]
            for line in lines:
                self.log(line)
            raise OSError(err, os.strerror(err))
        self.load(self.versions[src])

    def handler(self, argv):
        tool = os.path.basename(argv[0])
        if tool == 'modinfo':
            field, path = argv[2], self.source(argv[3])
            if field == 'vermagic':
                return 0, self.vermagic + '\n', ''
            if field == 'version':
                return 0, self.versions.get(path, '') + '\n', ''
            if field == 'marker' and path not in self.unmarked:
                return 0, 'kprobes.fleet\n', ''
            if field in self.signatures.get(path, {}):
                return 0, self.signatures[path][field] + '\n', ''
            return 0, '\n', ''  # modinfo prints an empty line for a field the file lacks (sig_id)
        if tool == 'rmmod':
            if self.rmmod_fail:
                return 1, '', self.rmmod_fail
            self.unload()
            return 0, '', ''
        raise AssertionError('unexpected command %r' % (argv,))

    def ko(self, tmp_path, spec_hash, content=None):
        content = content or ('ELF module ' + spec_hash).encode()
        path = str(tmp_path / ('%s.ko' % spec_hash))
        with open(path, 'wb') as f:
            f.write(content)
        self.versions[path] = spec_hash
        self.sources[content] = path
        return path, hashlib.sha256(content).hexdigest()

    def loader(self, check_mode=False, diff=False, **params):
        full = {'name': NAME, 'path': None, 'sha256': None, 'spec_hash': None,
                'state': 'present', 'host_dir': os.path.dirname(STATE_DIR)}
        full.update(params)
        module = FakeModule(full, check_mode=check_mode, diff=diff)
        module.handler = self.handler
        self.module = module
        return module, probe_module.ProbeLoader(module, root=self.root, release=RELEASE)


@pytest.fixture
def host(tmp_path, monkeypatch):
    fake = Host(tmp_path)
    monkeypatch.setattr(kmod_load, 'finit_module', fake.finit_module)
    return fake


def loading(host):
    """Our private copy: what modinfo checks and the kernel loads in a real run."""
    return os.path.join(host.state_dir, NAME + '.loading.ko')


def tools(module):
    return [os.path.basename(c[0]) + ' ' + ' '.join(c[1:]) for c in module.calls]


def cursor(host):
    with open(os.path.join(host.state_dir, NAME + '.kmsg-cursor')) as f:
        return json.load(f)


# -- present -------------------------------------------------------------------------------

def test_unchanged_when_spec_hash_equal_file_not_read(host, tmp_path):
    host.load(NEW_HASH)
    module, loader = host.loader(path=str(tmp_path / 'does-not-exist.ko'), sha256='0' * 64,
                                 spec_hash=NEW_HASH)
    result = loader.apply()
    assert result['changed'] is False
    assert result['spec_hash'] == NEW_HASH
    assert result['probes'] == {'disk_full': {'function': 'vfs_write', 'registered': 1}}
    assert module.calls == []
    assert not os.path.exists(host.state_dir)


def test_sha256_mismatch_refused(host, tmp_path):
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256='ab' * 32, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert exc.value.kwargs['msg'] == ('sha256 mismatch for %s: expected %s, got %s; refusing to load'
                                       % (path, 'ab' * 32, digest))
    assert module.calls == []


def test_vermagic_mismatch_refused(host, tmp_path):
    host.vermagic = '6.1.0-55-amd64 SMP preempt mod_unload modversions'
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=digest.upper(), spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    msg = exc.value.kwargs['msg']
    assert '6.1.0-55-amd64' in msg and RELEASE in msg and 'refusing' in msg
    assert tools(module) == ['modinfo -F vermagic ' + loading(host)]
    assert not os.path.exists(loading(host))  # the private copy goes with the refusal


def test_module_version_mismatch_refused(host, tmp_path):
    path, digest = host.ko(tmp_path, NEW_HASH)
    host.versions[path] = OLD_HASH
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert OLD_HASH in exc.value.kwargs['msg'] and NEW_HASH in exc.value.kwargs['msg']
    assert not [c for c in tools(module) if c.startswith('load')]
    assert not os.path.exists(loading(host))


def test_fresh_load(host, tmp_path):
    path, digest = host.ko(tmp_path, NEW_HASH)
    pre = host.seq - 1
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    result = loader.apply()
    assert result['changed'] is True
    assert result['spec_hash'] == NEW_HASH and result['previous_spec_hash'] is None
    assert result['cursor_saved'] is True
    assert result['probes'] == {'disk_full': {'function': 'vfs_write', 'registered': 1}}
    copy = loading(host)
    assert tools(module) == ['modinfo -F vermagic ' + copy, 'modinfo -F marker ' + copy,
                             'modinfo -F version ' + copy, 'load ' + copy]
    assert not os.path.exists(copy)  # renamed to the copy a restore loads
    assert cursor(host) == {'boot_id': BOOT, 'next_seq': pre + 1}
    assert stat.S_IMODE(os.stat(host.state_dir).st_mode) == 0o700
    loaded_ko = os.path.join(host.state_dir, NAME + '.loaded.ko')
    assert open(loaded_ko, 'rb').read() == open(path, 'rb').read()
    assert stat.S_IMODE(os.stat(loaded_ko).st_mode) == 0o600


def test_existing_cursor_same_boot_kept_other_boot_replaced(host, tmp_path):
    from ansible_collections.kprobes.fleet.plugins.module_utils import kmsg
    cpath = os.path.join(host.state_dir, NAME + '.kmsg-cursor')
    kmsg.save_cursor(cpath, {'boot_id': BOOT, 'next_seq': 2})
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    assert loader.apply()['cursor_saved'] is False
    assert cursor(host) == {'boot_id': BOOT, 'next_seq': 2}

    host.unload()
    kmsg.save_cursor(cpath, {'boot_id': 'previous-boot', 'next_seq': 99999})
    pre = host.seq - 1
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    assert loader.apply()['cursor_saved'] is True
    assert cursor(host) == {'boot_id': BOOT, 'next_seq': pre + 1}


def test_reload_removes_old_first(host, tmp_path):
    host.load(OLD_HASH)
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH, diff=True)
    result = loader.apply()
    assert result['changed'] is True
    assert result['previous_spec_hash'] == OLD_HASH and result['spec_hash'] == NEW_HASH
    assert tools(module)[-2:] == ['rmmod ' + NAME, 'load ' + loading(host)]
    assert result['diff'] == {'before': {'loaded': True, 'spec_hash': OLD_HASH},
                              'after': {'loaded': True, 'spec_hash': NEW_HASH}}
    assert host.loaded_hash() == NEW_HASH


def refused_reload(host, tmp_path):
    """Try to replace a loaded OLD_HASH module by NEW_HASH, expecting a failure that leaves the
    old one loaded; returns (commands run, path of the new file, fail_json kwargs)."""
    host.load(OLD_HASH)
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert host.loaded_hash() == OLD_HASH
    return tools(module), path, exc.value.kwargs


def test_rmmod_failure_changes_nothing(host, tmp_path):
    host.rmmod_fail = 'rmmod: ERROR: Module kprobes_fleet is in use'
    commands, _path, failure = refused_reload(host, tmp_path)
    assert 'is in use' in failure['msg']
    assert not [c for c in commands if c.startswith('load')]
    assert not os.path.exists(loading(host))
    assert not os.path.exists(os.path.join(host.state_dir, NAME + '.kmsg-cursor'))


def test_insmod_failure_restores_previous(host, tmp_path):
    old_path, old_digest = host.ko(tmp_path, OLD_HASH)
    module, loader = host.loader(path=old_path, sha256=old_digest, spec_hash=OLD_HASH)
    loader.apply()
    loaded_ko = os.path.join(host.state_dir, NAME + '.loaded.ko')

    path, digest = host.ko(tmp_path, NEW_HASH)
    host.insmod_fail[path] = (errno.EINVAL,
                              ['kprobes_fleet: register_kretprobe(vfs_write) for probe disk_full failed: -22'])
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    kw = exc.value.kwargs
    assert 'Invalid argument (EINVAL)' in kw['msg']
    assert 'register_kretprobe(vfs_write) for probe disk_full failed: -22' in kw['msg']
    assert 'restored' in kw['msg'] and 'NOT' not in kw['msg']
    assert kw['restored'] is True
    assert kw['kernel_messages'] == ['kprobes_fleet: register_kretprobe(vfs_write) for probe disk_full failed: -22']
    assert tools(module)[-3:] == ['rmmod ' + NAME, 'load ' + loading(host), 'load ' + loaded_ko]
    assert host.loaded_hash() == OLD_HASH
    assert open(loaded_ko, 'rb').read() == open(old_path, 'rb').read()
    assert not os.path.exists(loading(host))


def test_insmod_failure_without_copy_not_restored(host, tmp_path):
    host.load(OLD_HASH)
    path, digest = host.ko(tmp_path, NEW_HASH)
    host.insmod_fail[path] = (errno.EKEYREJECTED, ['Loading of unsigned module is rejected'])
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    kw = exc.value.kwargs
    assert 'Key was rejected' in kw['msg'] and 'Loading of unsigned module is rejected' in kw['msg']
    assert 'NOT restored' in kw['msg'] and kw['restored'] is False
    assert host.loaded_hash() is None


def test_insmod_failure_nothing_loaded_before(host, tmp_path):
    path, digest = host.ko(tmp_path, NEW_HASH)
    host.insmod_fail[path] = (errno.ENOEXEC, [])
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'no module was loaded before' in exc.value.kwargs['msg']
    assert not os.path.exists(os.path.join(host.state_dir, NAME + '.loaded.ko'))


def test_check_mode_verifies_but_changes_nothing(host, tmp_path):
    host.load(OLD_HASH)
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(check_mode=True, path=path, sha256=digest, spec_hash=NEW_HASH)
    result = loader.apply()
    assert result['changed'] is True
    assert [c.split()[0] for c in tools(module)] == ['modinfo', 'modinfo', 'modinfo']
    assert host.loaded_hash() == OLD_HASH
    assert not os.path.exists(host.state_dir)

    module, loader = host.loader(check_mode=True, path=path, sha256='cd' * 32, spec_hash=NEW_HASH)
    with pytest.raises(Failed):
        loader.apply()


def test_check_mode_missing_file_is_a_change(host, tmp_path):
    module, loader = host.loader(check_mode=True, path=str(tmp_path / 'not-copied-yet.ko'),
                                 sha256='ab' * 32, spec_hash=NEW_HASH)
    assert loader.apply()['changed'] is True
    assert module.calls == []


def test_missing_file_fails(host, tmp_path):
    module, loader = host.loader(path=str(tmp_path / 'nope.ko'), sha256='ab' * 32, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'cannot read' in exc.value.kwargs['msg']


@pytest.mark.parametrize('name', ['Kprobes', '1abc', 'a-b', 'a' * 57, '', 'kprobes_fleet\n', '../x', 'mm'])
def test_invalid_name(host, name):
    host.load(OLD_HASH)
    with pytest.raises(Failed) as exc:
        host.loader(name=name, state='absent')
    assert exc.value.kwargs['msg'].startswith('name: ')
    assert host.loaded_hash() == OLD_HASH


@pytest.mark.parametrize('state_dir', ['/', '/tmp/x', '/var/lib', 'var/lib/x', '/var/lib/../x', '/var/lib/x/'])
def test_invalid_state_dir(host, tmp_path, state_dir):
    path, sha = host.ko(tmp_path, NEW_HASH)
    with pytest.raises(Failed) as exc:
        host.loader(path=path, sha256=sha, spec_hash=NEW_HASH, state_dir=state_dir)
    assert exc.value.kwargs['msg'].startswith('state_dir: ')


def test_invalid_sha256(host, tmp_path):
    path, sha = host.ko(tmp_path, NEW_HASH)
    with pytest.raises(Failed) as exc:
        host.loader(path=path, sha256='xyz', spec_hash=NEW_HASH)
    assert exc.value.kwargs['msg'].startswith('sha256: must be 64 hex digits')


# -- never touch what is not ours ----------------------------------------------------------

def foreign(host):
    """A loaded module of our name that is not ours (say ext4): no marker, no spec hash."""
    os.makedirs(os.path.join(host.root, 'sys/module', NAME, 'parameters'))


@pytest.mark.parametrize('state', ['present', 'absent'])
def test_a_loaded_module_that_is_not_ours_is_never_unloaded(host, tmp_path, state):
    foreign(host)
    path, sha = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=sha, spec_hash=NEW_HASH, state=state)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'is not a kprobes.fleet module' in exc.value.kwargs['msg']
    assert module.calls == []
    assert os.path.isdir(os.path.join(host.root, 'sys/module', NAME))


def test_a_kernel_sysfs_entry_of_that_name_is_refused(host, tmp_path):
    os.makedirs(os.path.join(host.root, 'sys/kernel', NAME))
    path, sha = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=sha, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'already exists and is not ours' in exc.value.kwargs['msg']
    assert module.calls == []


def test_a_module_the_kernel_ships_is_refused(host, tmp_path):
    d = os.path.join(host.root, 'lib/modules', RELEASE)
    os.makedirs(d)
    with open(os.path.join(d, 'modules.dep'), 'w') as f:
        f.write('kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz\n'
                'kernel/misc/kprobes-fleet.ko: \n')
    path, sha = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=sha, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'the running kernel ships a module named %s' % NAME in exc.value.kwargs['msg']
    assert module.calls == []


def test_a_file_without_our_marker_is_not_loaded(host, tmp_path):
    host.load(OLD_HASH)
    path, sha = host.ko(tmp_path, NEW_HASH)
    host.unmarked.add(path)
    module, loader = host.loader(path=path, sha256=sha, spec_hash=NEW_HASH)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'is not a kprobes.fleet module' in exc.value.kwargs['msg']
    assert 'rmmod' not in ' '.join(tools(module))
    assert host.loaded_hash() == OLD_HASH


def test_a_module_of_ours_from_before_the_marker_is_recognised(host):
    host.load(OLD_HASH, marker=False)
    module, loader = host.loader(state='absent')
    assert loader.apply()['changed'] is True
    assert tools(module) == ['rmmod ' + NAME]


# -- absent --------------------------------------------------------------------------------

def test_absent_unloads(host):
    host.load(OLD_HASH)
    module, loader = host.loader(state='absent', diff=True)
    result = loader.apply()
    assert result['changed'] is True and result['previous_spec_hash'] == OLD_HASH
    assert tools(module) == ['rmmod ' + NAME]
    assert result['diff']['after'] == {'loaded': False, 'spec_hash': None}
    assert host.loaded_hash() is None


def test_absent_check_mode(host):
    host.load(OLD_HASH)
    module, loader = host.loader(state='absent', check_mode=True)
    assert loader.apply()['changed'] is True
    assert module.calls == []
    assert host.loaded_hash() == OLD_HASH


def test_absent_not_loaded(host):
    module, loader = host.loader(state='absent')
    assert loader.apply()['changed'] is False
    assert module.calls == []


def test_absent_rmmod_failure(host):
    host.load(OLD_HASH)
    host.rmmod_fail = 'rmmod: ERROR: Module kprobes_fleet is in use'
    module, loader = host.loader(state='absent')
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'in use' in exc.value.kwargs['msg']


# -- kernel policy: refused before anything is unloaded -------------------------------------

def write(host, rel, text):
    path = os.path.join(host.root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


@pytest.mark.parametrize('rel,text,needs', [
    ('sys/kernel/security/lockdown', 'none [integrity] confidentiality\n', 'lockdown=integrity'),
    ('sys/kernel/security/lockdown', 'none integrity [confidentiality]\n', 'lockdown=confidentiality'),
    ('sys/module/module/parameters/sig_enforce', 'Y\n', 'module.sig_enforce=Y'),
])
def test_unsigned_refused_when_kernel_needs_signatures(host, tmp_path, rel, text, needs):
    write(host, rel, text)
    commands, path, failure = refused_reload(host, tmp_path)
    assert 'is not signed' in failure['msg'] and needs in failure['msg']
    assert commands[-1] == 'modinfo -F sig_id ' + loading(host)


def test_signed_module_passes_policy(host, tmp_path):
    write(host, 'sys/kernel/security/lockdown', 'none [integrity] confidentiality\n')
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    base = host.handler
    module.handler = lambda argv: ((0, 'PKCS#7\n', '') if argv[2:3] == ['sig_id'] else base(argv))
    assert loader.apply()['changed'] is True
    assert host.loaded_hash() == NEW_HASH


# -- signed files: trusted by this kernel? (before anything is unloaded) ----------------------

LAB_SKID = 'e282541d4ed69f472f211525473e82c835b2f6c0'
LAB_SERIAL = '05:64:43:CA:59:CE:2A:FA:90:C8:CC:A4:07:E5:92:8B:A7:9C:09:02'
# /proc/keys as root on Debian (type cut to 9 characters by the kernel's %-9.9s)
PROC_KEYS = (
    '0692b294 I--Q---     1 perm 1f3f0000     0 65534 keyring   _uid_ses.0: 1\n'
    '1b8a4ad4 I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 1\n'
    '22efd21a I------     1 perm 0f0b0000     0     0 keyring   .blacklist: 1\n'
    '2a5bd3f6 I------     1 perm 1f010000     0     0 blacklist bin:0b8f5d2d7f18a4b7e5c10a6e8d1c9a7c1f4b2e3d\n'
    '3b1e4f0d I------     1 perm 1f030000     0     0 asymmetri Debian Secure Boot CA: '
    '6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa bb419ea1 []\n'
    '0f6e2a1c I------     1 perm 1f030000     0     0 asymmetri Acme Corp: Signer: 0cf9c7c99f4aec1113ae1f8a'
    '2a8d1092d83ae518: X509.rsa []\n')


def signed(host, tmp_path, keyid=LAB_SKID, sig_key=LAB_SERIAL, signer='kprobes.fleet lab test',
           lockdown='none [integrity] confidentiality\n', keys=PROC_KEYS):
    """A loaded OLD_HASH module, a signed NEW_HASH file and a kernel that enforces signatures."""
    write(host, 'sys/kernel/security/lockdown', lockdown)
    if keys is not None:
        write(host, 'proc/keys', keys)
    host.load(OLD_HASH)
    path, digest = host.ko(tmp_path, NEW_HASH)
    host.signatures[path] = {'sig_id': 'PKCS#7', 'signer': signer, 'sig_key': sig_key, 'signer_keyid': keyid}
    return host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)


def test_signed_by_untrusted_key_refused_before_rmmod(host, tmp_path):
    module, loader = signed(host, tmp_path)
    with pytest.raises(Failed) as exc:
        loader.apply()
    msg = exc.value.kwargs['msg']
    assert msg == (
        "%s is signed by kprobes.fleet lab test (key %s), which this kernel does not trust (no such key "
        "among its 2 asymmetric keys in /proc/keys, and it only loads modules signed by a trusted key: "
        "lockdown=integrity): enrol the cert (mokutil --import cert.der, then reboot through shim's "
        "MokManager) or sign with a key it already trusts; refusing to load, the running module (if any) "
        "is left alone" % (loader.path, LAB_SKID))
    assert exc.value.kwargs['signer_keyid'] == LAB_SKID
    assert not [c for c in tools(module) if c.startswith(('rmmod', 'load'))]
    assert host.loaded_hash() == OLD_HASH


def test_signed_by_trusted_skid_loads(host, tmp_path):
    module, loader = signed(host, tmp_path, keys=PROC_KEYS + (
        '11223344 I------     1 perm 1f030000     0     0 asymmetri kprobes.fleet lab test: %s: '
        'X509.rsa 35b2f6c0 []\n' % LAB_SKID))
    assert loader.apply()['changed'] is True
    assert host.loaded_hash() == NEW_HASH
    assert module.warnings == []


def test_signed_by_cert_without_skid_matches_its_serial(host, tmp_path):
    # Without a subject key identifier the kernel names the key by its serial, as modinfo's sig_key
    # does (the kernel's hex keeps the DER sign byte, kmod drops it).
    serial = '0C:F9:C7:C9:9F:4A:EC:11:13:AE:1F:8A:2A:8D:10:92:D8:3A:E5:18'
    module, loader = signed(host, tmp_path, keyid='', sig_key=serial, signer='Signer')
    assert loader.apply()['changed'] is True
    module, loader = signed(host, tmp_path, keyid='008a11', sig_key='8A:11', keys=PROC_KEYS + (
        '11223345 I------     1 perm 1f030000     0     0 asymmetri Old: 008a11: X509.rsa []\n'))
    assert loader.apply()['changed'] is True


def test_serial_of_a_cert_with_skid_is_not_its_key_id(host, tmp_path):
    # The trap: modinfo's sig_key is the cert's serial, /proc/keys shows its SKID. A file whose
    # signer_keyid is missing cannot be matched by its serial alone when the kernel shows the SKID.
    module, loader = signed(host, tmp_path, keyid='', keys=PROC_KEYS + (
        '11223344 I------     1 perm 1f030000     0     0 asymmetri kprobes.fleet lab test: %s: '
        'X509.rsa 35b2f6c0 []\n' % LAB_SKID))
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert '(key 564' in exc.value.kwargs['msg']


@pytest.mark.parametrize('rel,text,needs', [
    ('sys/module/module/parameters/sig_enforce', 'Y\n', 'module.sig_enforce=Y'),
    ('sys/kernel/security/lockdown', 'none integrity [confidentiality]\n', 'lockdown=confidentiality'),
])
def test_untrusted_refused_whatever_enforces(host, tmp_path, rel, text, needs):
    module, loader = signed(host, tmp_path, lockdown='[none] integrity confidentiality\n')
    write(host, rel, text)
    with pytest.raises(Failed) as exc:
        loader.apply()
    assert 'does not trust' in exc.value.kwargs['msg'] and needs in exc.value.kwargs['msg']
    assert host.loaded_hash() == OLD_HASH


def test_no_proc_keys_leaves_it_to_the_kernel(host, tmp_path):
    module, loader = signed(host, tmp_path, keys=None)
    assert loader.apply()['changed'] is True
    assert module.warnings == ['cannot tell whether this kernel trusts the signer of %s (no /proc/keys); '
                               'the kernel decides' % loader.path]


def test_no_key_ids_in_modinfo_leaves_it_to_the_kernel(host, tmp_path):
    # kmod without libcrypto shows sig_id only
    module, loader = signed(host, tmp_path, keyid='', sig_key='', signer='')
    assert loader.apply()['changed'] is True
    assert 'modinfo shows no signing key' in module.warnings[0]


def test_signed_file_on_open_kernel_is_not_checked(host, tmp_path):
    module, loader = signed(host, tmp_path, lockdown='[none] integrity confidentiality\n')
    assert loader.apply()['changed'] is True
    assert not [c for c in tools(module) if 'sig_key' in c or 'signer' in c]


def test_trusted_key_ids_parses_proc_keys():
    ids = probe_module.trusted_key_ids(PROC_KEYS)
    assert ids == {'6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1', 'cf9c7c99f4aec1113ae1f8a2a8d1092d83ae518'}
    assert probe_module.trusted_key_ids(None) is None
    assert probe_module.trusted_key_ids('') == set()
    assert probe_module.key_id('05:64:43:CA') == '56443ca'
    assert probe_module.key_id('not hex') == ''


def test_lockdown_none_and_sig_enforce_n_do_not_ask_for_signature(host, tmp_path):
    write(host, 'sys/kernel/security/lockdown', '[none] integrity confidentiality\n')
    write(host, 'sys/module/module/parameters/sig_enforce', 'N\n')
    path, digest = host.ko(tmp_path, NEW_HASH)
    module, loader = host.loader(path=path, sha256=digest, spec_hash=NEW_HASH)
    loader.apply()
    assert 'sig_id' not in ' '.join(tools(module))
    assert host.loaded_hash() == NEW_HASH


def test_modules_disabled_refused_before_rmmod(host, tmp_path):
    write(host, 'proc/sys/kernel/modules_disabled', '1\n')
    commands, _path, failure = refused_reload(host, tmp_path)
    assert 'modules_disabled=1' in failure['msg']
    assert 'rmmod' not in ' '.join(commands)
