# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The presets and the per-candidate return types against real Debian kernels, 5.10 to 7.2.

fixtures/kernels/ holds what the lab's VMs of those kernels showed (see its README): the text
symbols of /proc/kallsyms whose names contain open, write, filp or file (addresses zeroed),
the same part of the kprobes blacklist, and the return types BTF declares for the functions
the presets and these tests name. Nothing here is made up: a preset candidate list that misses
a kernel, or a candidate read with the wrong type on a kernel that has it, fails here.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import gzip
import json
import os

import pytest

from ansible_collections.kprobes.fleet.plugins.action.build_plan import missing_message
from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec, tracefs_commands
from ansible_collections.kprobes.fleet.plugins.modules import kernel_facts
from fakes import FakeModule

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'kernels')
with open(os.path.join(FIXTURES, 'return_types.json')) as _f:
    RETURN_TYPES = json.load(_f)
RELEASES = sorted(RETURN_TYPES)
SID = '7.2.13+deb14-amd64'
OLDER = [r for r in RELEASES if r != SID]

Uname = collections.namedtuple('Uname', 'sysname nodename release version machine')


def host_root(tmp_path, release):
    """A fake host root with the kernel's kallsyms part and kprobes blacklist part."""
    with gzip.open(os.path.join(FIXTURES, release + '.kallsyms.gz'), 'rt') as f:
        kallsyms = f.read()
    with open(os.path.join(FIXTURES, release + '.blacklist')) as f:
        blacklist = f.read()
    for rel, text in (('proc/kallsyms', kallsyms), ('sys/kernel/debug/kprobes/blacklist', blacklist)):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def facts_on(tmp_path, release, probes):
    uname = Uname('Linux', 'h', release, '#1 SMP PREEMPT_DYNAMIC Debian', 'x86_64')
    normalized = kernel_facts.normalize_probes(FakeModule(), probes)
    return kernel_facts.KernelFacts(FakeModule(), root=host_root(tmp_path, release), uname=uname) \
        .gather(normalized, 'kprobes_fleet')


def kind(c_type):
    """The spec's word for a C return type as BTF names it."""
    if c_type.endswith('*'):
        return 'errptr'
    return {'int': 'int', 'long int': 'long', 'ssize_t': 'long'}[c_type]


# How a spec type may read a function's real return type. 'int' reads the low 32 bits
# sign-extended: right for int, and for long functions whose values fit (fds, -errno); 'long'
# on an int function reads garbage in the upper half (the 7.2 trap in lab.md).
READS = {'errptr': ('errptr',), 'int': ('int',), 'long': ('long', 'int')}


def test_the_fixtures_are_the_four_lab_kernels():
    assert [r.split('.')[0] + '.' + r.split('.')[1] for r in RELEASES] == ['5.10', '6.1', '6.12', '7.2']
    for release in RELEASES:
        assert os.path.getsize(os.path.join(FIXTURES, release + '.kallsyms.gz')) > 10000


@pytest.mark.parametrize('release', RELEASES)
def test_every_preset_has_a_function_on_every_kernel(tmp_path, release):
    f = facts_on(tmp_path, release, probe_spec.normalize(None))
    expected_open = 'do_file_open' if release == SID else 'do_filp_open'
    assert f['functions'] == {'open_failures': expected_open, 'disk_full': 'vfs_write'}
    assert f['suggestions'] == {}


@pytest.mark.parametrize('release', RELEASES)
def test_preset_candidates_are_read_with_the_kernels_return_type(tmp_path, release):
    """Every candidate a kernel has is read in a way that is right for that kernel's type."""
    normalized = probe_spec.normalize(None)
    f = facts_on(tmp_path, release, normalized)
    checked = 0
    for probe in normalized:
        for candidate in probe['functions']:
            if f['candidates'][probe['name']][candidate['function']] != 'ok':
                continue
            real = kind(RETURN_TYPES[release][candidate['function']])
            assert candidate['returns'] in READS[real], (release, candidate, real)
            checked += 1
    assert checked >= 3


def test_do_sys_openat2_changed_type_in_72_and_the_preset_reads_it_as_int():
    assert [kind(RETURN_TYPES[r]['do_sys_openat2']) for r in RELEASES] == ['long', 'long', 'long', 'int']
    preset = probe_spec.normalize(['open_failures'])[0]
    assert {'function': 'do_sys_openat2', 'returns': 'int', 'args': []} in preset['functions']
    # and the 7.x rename of do_filp_open kept its type
    assert RETURN_TYPES[SID]['do_file_open'] == RETURN_TYPES[OLDER[0]]['do_filp_open'] == 'struct file *'


def resolved_on(tmp_path, release, probes):
    normalized = probe_spec.normalize(probes)
    f = facts_on(tmp_path, release, normalized)
    return probe_spec.resolve(normalized, f['functions'])


@pytest.mark.parametrize('release', RELEASES)
def test_fetch_type_follows_the_candidate_chosen_on_each_kernel(tmp_path, release):
    """One spec: a renamed errptr function first, do_sys_openat2 (int) as the fallback."""
    spec = [{'name': 'opens', 'returns': 'errptr',
             'function': ['do_file_open', {'function': 'do_sys_openat2', 'returns': 'int'}]}]
    probe = resolved_on(tmp_path, release, spec)[0]
    if release == SID:
        assert (probe['function'], probe['returns']) == ('do_file_open', 'errptr')
        assert tracefs_commands.definition('g', probe).endswith(' do_file_open ret=$retval:s64')
        assert 'ret >= -4095' in tracefs_commands.report_filter(probe)
    else:
        assert (probe['function'], probe['returns']) == ('do_sys_openat2', 'int')
        assert tracefs_commands.definition('g', probe).endswith(' do_sys_openat2 ret=$retval:s32')
        assert tracefs_commands.report_filter(probe) == 'ret < 0'


def test_the_old_preset_spec_fails_on_72_and_names_the_new_function(tmp_path):
    old = [{'name': 'open_failures', 'function': 'do_filp_open', 'returns': 'errptr'}]
    f = facts_on(tmp_path, SID, probe_spec.normalize(old))
    assert f['functions'] == {'open_failures': None}
    assert f['candidates'] == {'open_failures': {'do_filp_open': 'absent'}}
    assert f['suggestions']['open_failures'][0] == 'do_file_open'
    msg = missing_message(dict(f, release=SID), ['open_failures'])
    assert msg.startswith('kernel %s has no probe-able function for probe(s) open_failures' % SID)
    assert 'open_failures: do_filp_open (absent)' in msg
    assert 'closest probe-able functions on this kernel: open_failures: do_file_open, ' in msg
    # on the kernels that still have do_filp_open, nothing is missing
    for release in OLDER:
        assert facts_on(tmp_path / release, release, probe_spec.normalize(old))['suggestions'] == {}


def test_renamed_mkdirat_is_among_the_suggestions(tmp_path):
    """do_mkdirat became filename_mkdirat in 7.x: a prefix change, found by the core match."""
    f = facts_on(tmp_path, SID, [{'name': 'mkdir', 'functions': ['do_mkdirat']}])
    assert 'filename_mkdirat' in f['suggestions']['mkdir']


def test_suggestions_are_probe_able_on_the_real_kernel(tmp_path):
    root = host_root(tmp_path, SID)
    with open(os.path.join(root, 'proc/kallsyms')) as f:
        symbols = kernel_facts.parse_kallsyms(f)
    with open(os.path.join(root, 'sys/kernel/debug/kprobes/blacklist')) as f:
        blacklisted = kernel_facts.parse_blacklist(f.read())
    # names close to blacklisted, ambiguous and padding symbols of this kernel
    wanted = sorted(blacklisted)[:3] + [s for s, n in symbols.items() if n > 1][:3] + ['do_filp_open']
    got = kernel_facts.closest_symbols(wanted, symbols, blacklisted, limit=50)
    assert got
    for sym in got:
        assert symbols[sym] == 1 and sym not in blacklisted and sym not in wanted
        assert not sym.startswith(('__pfx_', '__cfi_')) and '.' not in sym
