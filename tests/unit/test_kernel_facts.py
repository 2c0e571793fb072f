# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import gzip
import os

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec
from ansible_collections.kprobes.fleet.plugins.modules import kernel_facts
from fakes import Failed, FakeModule

RELEASE = '6.1.0-56-amd64'
Uname = collections.namedtuple('Uname', 'sysname nodename release version machine')
UNAME = Uname('Linux', 'h', RELEASE, '#1 SMP PREEMPT_DYNAMIC Debian 6.1.153-1 (2025-09-20)', 'x86_64')

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81234560 T vfs_write
ffffffff81234570 t do_sys_openat2
ffffffff81234580 t do_sys_openat2.cold
ffffffff81234590 D some_data
ffffffff812345a0 T __x64_sys_openat
ffffffff812345b0 T do_nmi
ffffffff812345c0 t ext4_file_write_iter\t[ext4]
ffffffff812345d0 r do_sys_open
"""

BLACKLIST = """\
0xffffffff812345b0-0xffffffff812345ff\tdo_nmi
0xffffffffc0001000-0xffffffffc0001100\tsome_mod_func\t[somemod]
"""

CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
CONFIG_KPROBES=y
CONFIG_KRETPROBES=y
# CONFIG_MODULE_SIG_FORCE is not set
CONFIG_LOG_BUF_SHIFT=17
"""


def write(root, rel, content, mode='w'):
    path = os.path.join(str(root), rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, mode) as f:
        f.write(content)
    return path


@pytest.fixture
def root(tmp_path):
    write(tmp_path, 'proc/kallsyms', KALLSYMS)
    write(tmp_path, 'etc/os-release', 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    return tmp_path


def gather(root, probes=None, name='kprobes_fleet'):
    """What main() does: the probes as the module takes them, normalized, then resolved."""
    facts = kernel_facts.KernelFacts(FakeModule(), root=str(root), uname=UNAME)
    return facts.gather(kernel_facts.normalize_probes(FakeModule(), probes), name)


PROBES = [
    {'name': 'disk_full', 'functions': ['nope_write', 'vfs_write', '__x64_sys_openat']},
    {'name': 'open_failures', 'functions': ['do_sys_openat2', 'do_sys_open']},
    {'name': 'nmi', 'functions': ['do_nmi', 'some_data', 'ext4_file_write_iter']},
    {'name': 'none', 'functions': ['do_sys_open', 'do_nmi']},
]


def test_parse_kallsyms_text_symbols_only():
    names = kernel_facts.parse_kallsyms(KALLSYMS.splitlines())
    assert {'vfs_write', 'do_sys_openat2', 'do_sys_openat2.cold', 'ext4_file_write_iter'} <= set(names)
    assert 'some_data' not in names and 'do_sys_open' not in names
    assert set(names.values()) == {1}


def test_parse_kallsyms_counts_duplicates():
    names = kernel_facts.parse_kallsyms(AMBIGUOUS_KALLSYMS.splitlines())
    assert names['vfs_write'] == 2  # vmlinux + module
    assert names['dup_static'] == 3  # static in several files
    assert names['do_sys_openat2'] == 1
    assert names['ksys_write'] == 1  # the data symbol of the same name does not count


def test_parse_blacklist():
    assert kernel_facts.parse_blacklist(BLACKLIST) == {'do_nmi', 'some_mod_func'}


def test_candidates_without_blacklist(root):
    f = gather(root, PROBES)
    assert f['blacklist_readable'] is False
    assert f['candidates']['disk_full'] == {'nope_write': 'absent', 'vfs_write': 'ok', '__x64_sys_openat': 'ok'}
    assert list(f['candidates']['disk_full']) == ['nope_write', 'vfs_write', '__x64_sys_openat']
    assert f['functions'] == {'disk_full': 'vfs_write', 'open_failures': 'do_sys_openat2',
                              'nmi': 'do_nmi', 'none': 'do_nmi'}


def test_candidates_with_blacklist(root):
    write(root, 'sys/kernel/debug/kprobes/blacklist', BLACKLIST)
    f = gather(root, PROBES)
    assert f['blacklist_readable'] is True
    assert f['candidates']['nmi'] == {'do_nmi': 'blacklisted', 'some_data': 'absent',
                                      'ext4_file_write_iter': 'ok'}
    assert f['functions']['nmi'] == 'ext4_file_write_iter'
    assert f['functions']['none'] is None  # no candidate: reported, not a failure
    assert f['candidates']['open_failures'] == {'do_sys_openat2': 'ok', 'do_sys_open': 'absent'}


AMBIGUOUS_KALLSYMS = KALLSYMS + """\
ffffffffc0123450 t vfs_write\t[evil]
ffffffff81300000 t dup_static
ffffffff81300100 t dup_static
ffffffffc0123460 T dup_static\t[somemod]
ffffffff81300200 T ksys_write
ffffffff81300300 d ksys_write
"""


def test_ambiguous_candidate_skipped(root):
    write(root, 'proc/kallsyms', AMBIGUOUS_KALLSYMS)
    f = gather(root, [
        {'name': 'disk_full', 'functions': ['vfs_write', 'ksys_write']},
        {'name': 'statics', 'functions': ['dup_static', 'nope', 'do_sys_openat2']},
    ])
    assert f['candidates']['disk_full'] == {'vfs_write': 'ambiguous', 'ksys_write': 'ok'}
    assert f['functions']['disk_full'] == 'ksys_write'
    assert f['candidates']['statics'] == {'dup_static': 'ambiguous', 'nope': 'absent',
                                          'do_sys_openat2': 'ok'}
    assert f['functions']['statics'] == 'do_sys_openat2'


def test_only_ambiguous_candidates_give_null(root):
    write(root, 'proc/kallsyms', AMBIGUOUS_KALLSYMS)
    write(root, 'sys/kernel/debug/kprobes/blacklist', BLACKLIST)
    f = gather(root, [{'name': 'dup', 'functions': ['dup_static', 'vfs_write', 'do_nmi']}])
    assert f['candidates']['dup'] == {'dup_static': 'ambiguous', 'vfs_write': 'ambiguous',
                                      'do_nmi': 'blacklisted'}
    assert f['functions'] == {'dup': None}  # reported, not a failure


def test_kallsyms_unreadable_fails(root):
    os.unlink(str(root / 'proc/kallsyms'))
    with pytest.raises(Failed) as exc:
        gather(root, PROBES)
    assert '/proc/kallsyms' in str(exc.value)


def test_kallsyms_not_needed_without_probes(root):
    os.unlink(str(root / 'proc/kallsyms'))
    f = gather(root, [])
    assert f['functions'] == {} and f['candidates'] == {}


def test_config_from_boot(root):
    write(root, 'boot/config-' + RELEASE, CONFIG)
    write(root, 'sys/module/module/parameters/sig_enforce', 'N\n')
    f = gather(root)
    assert f['config_source'] == '/boot/config-' + RELEASE
    assert f['kprobes'] is True and f['kretprobes'] is True
    assert f['cc_version_text'] == 'gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0'
    assert f['sig_enforce'] is False


def test_config_from_proc_config_gz(root):
    path = os.path.join(str(root), 'proc/config.gz')
    with gzip.open(path, 'wb') as f:
        f.write(CONFIG.replace('CONFIG_KRETPROBES=y', '# CONFIG_KRETPROBES is not set')
                .replace('# CONFIG_MODULE_SIG_FORCE is not set', 'CONFIG_MODULE_SIG_FORCE=y').encode())
    f = gather(root)
    assert f['config_source'] == '/proc/config.gz'
    assert f['kprobes'] is True and f['kretprobes'] is False
    assert f['sig_enforce'] is True  # no sysfs parameter: falls back to CONFIG_MODULE_SIG_FORCE


def test_config_from_build_dir_and_headers(root):
    write(root, 'lib/modules/%s/build/.config' % RELEASE, 'CONFIG_KPROBES=y\n')
    write(root, 'lib/modules/%s/build/Makefile' % RELEASE, 'all:\n')
    f = gather(root)
    assert f['config_source'] == '/lib/modules/%s/build/.config' % RELEASE
    assert f['kprobes'] is True and f['kretprobes'] is False
    assert f['cc_version_text'] is None
    assert f['headers'] is True


def test_no_config_anywhere(root):
    f = gather(root)
    assert f['config_source'] is None
    assert f['kprobes'] is None and f['kretprobes'] is None and f['sig_enforce'] is None
    assert f['headers'] is False
    assert f['lockdown'] is None and f['modules_disabled'] is None


def test_sig_enforce_param_wins(root):
    write(root, 'boot/config-' + RELEASE, CONFIG)
    write(root, 'sys/module/module/parameters/sig_enforce', 'Y\n')
    assert gather(root)['sig_enforce'] is True


def test_uname_lockdown_modules_disabled(root):
    write(root, 'sys/kernel/security/lockdown', 'none [integrity] confidentiality\n')
    write(root, 'proc/sys/kernel/modules_disabled', '1\n')
    f = gather(root)
    assert (f['arch'], f['release'], f['version']) == ('x86_64', RELEASE, UNAME.version)
    assert f['lockdown'] == 'integrity'
    assert f['modules_disabled'] is True
    write(root, 'proc/sys/kernel/modules_disabled', '0\n')
    assert gather(root)['modules_disabled'] is False


@pytest.mark.parametrize('text,expected', [
    ('ID=debian\nVERSION_ID="12"\n', ('debian', '12', [], 'debian')),
    ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', ('ubuntu', '24.04', ['debian'], 'debian')),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n',
     ('rocky', '9.4', ['rhel', 'centos', 'fedora'], 'redhat')),
    ('ID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2023"\n',
     ('amzn', '2023', ['centos', 'rhel', 'fedora'], 'redhat')),
    ('ID=fedora\nVERSION_ID=40\n', ('fedora', '40', [], 'redhat')),
    ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.6"\n',
     ('opensuse-leap', '15.6', ['suse', 'opensuse'], 'suse')),
    ('ID="sles"\nVERSION_ID="15.5"\n', ('sles', '15.5', [], 'suse')),
    ('# comment\nID=arch\nBUILD_ID=rolling\n', ('arch', None, [], 'other')),
    ("ID='weird'\nVERSION_ID='1 2'\n", ('weird', '1 2', [], 'other')),
])
def test_os_release(root, text, expected):
    write(root, 'etc/os-release', text)
    d = gather(root)['distro']
    assert (d['id'], d['version_id'], d['id_like'], d['family']) == expected


def test_os_release_fallback_and_missing(root):
    os.unlink(str(root / 'etc/os-release'))
    assert gather(root)['distro'] == {'id': None, 'version_id': None, 'id_like': [], 'family': 'other'}
    write(root, 'usr/lib/os-release', 'ID=debian\n')
    assert gather(root)['distro']['family'] == 'debian'


def test_loaded(root):
    f = gather(root)
    assert f['loaded'] == {'module': 'kprobes_fleet', 'spec_hash': None, 'present': False, 'ours': False,
                           'conflict': None}
    os.makedirs(os.path.join(str(root), 'sys/module/kprobes_fleet'))
    write(root, 'sys/kernel/kprobes_fleet/spec_hash', '3f2a9c0d11e4b7a5\n')
    f = gather(root)
    assert f['loaded']['present'] is True and f['loaded']['ours'] is False  # no marker: not ours
    assert f['loaded']['spec_hash'] is None
    assert 'is not a kprobes.fleet module' in f['loaded']['conflict']
    write(root, 'sys/kernel/kprobes_fleet/marker', 'kprobes.fleet\n')
    f = gather(root)
    assert f['loaded'] == {'module': 'kprobes_fleet', 'spec_hash': '3f2a9c0d11e4b7a5', 'present': True,
                           'ours': True, 'conflict': None}


def test_a_kernel_sysfs_entry_named_like_the_module_is_a_conflict(root):
    os.makedirs(os.path.join(str(root), 'sys/kernel/kprobes_fleet'))
    assert 'already exists and is not ours' in gather(root)['loaded']['conflict']


def test_normalize_probes_is_the_spec_rules():
    m = FakeModule()
    raw = [{'name': 'a', 'function': 'vfs_write', 'returns': 'long'}]
    assert kernel_facts.normalize_probes(m, raw) == probe_spec.normalize(raw)
    spec = probe_spec.normalize(None)  # what the role passes: the normalized spec, unchanged
    assert kernel_facts.normalize_probes(m, spec) == spec
    assert kernel_facts.normalize_probes(m, []) == [] and kernel_facts.normalize_probes(m, None) == []
    with pytest.raises(Failed, match="field 'name': is required"):
        kernel_facts.normalize_probes(m, [{'functions': ['x']}])
    with pytest.raises(Failed, match="field 'function': must list 1 to 8"):
        kernel_facts.normalize_probes(m, [{'name': 'a', 'functions': []}])
    with pytest.raises(Failed, match="compiler clones"):
        kernel_facts.normalize_probes(m, [{'name': 'a', 'function': 'vfs_write.cold'}])
    with pytest.raises(Failed, match="field 'color': unknown key"):
        kernel_facts.normalize_probes(m, [{'name': 'a', 'function': 'vfs_write', 'color': 1}])


def test_tracefs_fact(root):
    f = gather(root)
    assert f['tracefs']['usable'] is False and f['tracefs']['path'] is None
    assert 'not mounted' in f['tracefs']['reason']
    write(root, 'sys/kernel/tracing/kprobe_events', '')
    write(root, 'sys/kernel/tracing/instances/.keep', '')
    write(root, 'sys/kernel/tracing/events/sched/sched_switch/trigger', '')
    write(root, 'sys/kernel/tracing/events/sched/sched_switch/hist', '')
    assert gather(root)['tracefs'] == {'usable': True, 'reason': None, 'path': '/sys/kernel/tracing', 'hist': True}
    write(root, 'sys/kernel/security/lockdown', 'none integrity [confidentiality]\n')
    t = gather(root)['tracefs']
    assert t['usable'] is False and 'confidentiality' in t['reason'] and t['path'] == '/sys/kernel/tracing'


def test_normalize_probes_takes_candidate_mappings():
    m = FakeModule()
    got = kernel_facts.normalize_probes(m, [
        {'name': 'a', 'functions': [{'function': 'do_file_open', 'returns': 'errptr'},
                                    {'function': 'do_sys_openat2', 'returns': 'int'}]},
        {'name': 'b', 'function': {'function': 'vfs_write'}},
        {'name': 'c', 'function': ['x', {'function': 'y', 'returns': 'int'}]}])
    assert [probe_spec.candidate_symbols(p) for p in got] == [['do_file_open', 'do_sys_openat2'], ['vfs_write'],
                                                              ['x', 'y']]
    with pytest.raises(Failed, match='has no function'):
        kernel_facts.normalize_probes(m, [{'name': 'a', 'functions': [{'returns': 'int'}]}])


SIMILAR = {'do_file_open': 1, 'do_filp_openat': 1, 'filp_open': 1, 'do_file_open.cold': 1,
           '__pfx_do_filp_opn': 1, 'do_filp_opem': 2, 'do_fillp_open': 1, 'vfs_write': 1,
           'filename_mkdirat': 1, 'args__filp_open': 1, 'do_filp_open': 1}


def test_closest_symbols_ranks_and_filters():
    got = kernel_facts.closest_symbols(['do_filp_open'], SIMILAR, {'do_fillp_open'})
    # ambiguous (do_filp_opem), blacklisted (do_fillp_open), clones, __pfx_, args__, the name
    # itself and dissimilar names are never offered
    assert got == ['do_filp_openat', 'do_file_open', 'filp_open']
    assert kernel_facts.closest_symbols(['do_filp_open'], SIMILAR, set(), limit=1) == ['do_fillp_open']
    assert kernel_facts.closest_symbols(['zzz_nothing_like_it'], SIMILAR, set()) == []


def test_closest_symbols_finds_a_changed_prefix():
    assert kernel_facts.closest_symbols(['do_mkdirat'], SIMILAR, set()) == ['filename_mkdirat']


def test_suggestions_only_for_probes_without_a_function(root):
    write(root, 'proc/kallsyms', KALLSYMS + 'ffffffff81234600 T do_file_open\n')
    f = gather(root, [{'name': 'ok', 'functions': ['vfs_write']},
                      {'name': 'gone', 'functions': ['do_filp_open']}])
    assert f['functions'] == {'ok': 'vfs_write', 'gone': None}
    assert f['suggestions'] == {'gone': ['do_file_open', 'do_sys_openat2']}
