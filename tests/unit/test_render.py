"""The module roles/probe_build/templates/*.j2 render, tested by what it does, not by its text.

1. Everywhere a C compiler exists: the rendered module is compiled against a user-space stand-in
   for the kernel API (fixtures/kstub) and driven (fixtures/kstub/harness.c): init, return values
   given to the handlers, sysfs reads, rate limits, exit. The log lines are read back with the
   collector's own parser (kmsg.parse_event).
2. Wherever kernel headers are installed (CI installs linux-headers-amd64): the module is built
   with the kernel's kbuild and the object file is checked (modinfo fields, vermagic, imports that
   the kernel exports, the kprobe blacklist).
"""
import glob
import hashlib
import os
import platform
import re
import shutil
import struct
import subprocess

from collections import Counter

import jinja2
import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import kmsg
from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec as ps

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'roles', 'probe_build', 'templates')
KSTUB = os.path.join(HERE, 'fixtures', 'kstub')
CC = shutil.which('gcc') or shutil.which('cc')

CUSTOM = [
    {'name': 'open_int', 'function': ['do_sys_openat2', 'do_sys_open'], 'returns': 'int'},
    {'name': 'reads', 'function': 'vfs_read', 'report': 'any', 'log': False, 'maxactive': 4096},
    {'name': 'fsync_err', 'function': 'vfs_fsync_range', 'returns': 'int',
     'report': ['EIO', 'ENOSPC', 'ENOTSUP'], 'log_burst': 7, 'log_interval': 60},
    {'name': 'any_error', 'function': 'vfs_fallocate', 'returns': 'int', 'report': 'nonzero'},
]
# Every argument type (#22): the entry handlers, the root-only ring, /proc/<module>.events.
ARGS = [
    {'name': 'rmdir_failures', 'function': [{'function': 'do_rmdir', 'returns': 'int'}],
     'report': ['ENOENT', 'ENOTEMPTY'], 'args': [{'name': 'path', 'arg': 2, 'type': 'filename'},
                                                 {'name': 'dfd', 'arg': 1, 'type': 'int'}]},
    {'name': 'open_paths', 'function': [{'function': 'do_sys_openat2', 'returns': 'int'}],
     'args': [{'name': 'path', 'arg': 2, 'type': 'ustring'}, {'name': 'how', 'arg': 3, 'type': 'ulong'}]},
    {'name': 'disk_full', 'function': 'vfs_write', 'report': ['ENOSPC', 'EDQUOT'],
     'args': [{'name': 'file', 'arg': 1, 'type': 'file'}, {'name': 'count', 'arg': 3, 'type': 'long'}]},
    {'name': 'kstrings', 'function': 'kern_path', 'returns': 'int', 'args': [{'name': 'name', 'arg': 1, 'type': 'string'}],
     'log_burst': 100000},
    {'name': 'no_args', 'function': 'vfs_fsync_range', 'returns': 'int'},
    {'name': 'timed_filtered', 'function': 'vfs_fallocate', 'returns': 'int', 'slower_than': '1ms',
     'filter': {'comm': ['postgres', 'nginx*'], 'comm_not': ['nginx-debug'], 'uid_not': [0]}},
    {'name': 'etc_opens', 'function': [{'function': 'do_sys_openat', 'returns': 'int'}],
     'args': [{'name': 'path', 'arg': 2, 'type': 'ustring'}, {'name': 'file', 'arg': 1, 'type': 'file'}],
     'filter': {'args': {'path': ['/etc/*', '/var/log/app.log', 'quote"back\\slash??/x', 'caf\u00e9']},
                'args_not': {'file': ['/secret*']}}},
    {'name': 'units', 'function': 'vfs_unlink', 'returns': 'int',
     'filter': {'cgroup': ['/system.slice/nginx.service', '/user.slice/q"uo\\te?'],
                'cgroup_not': ['/system.slice/nginx.service/debug']}},
]
MARKER = 'kprobes.fleet'
U64 = 1 << 64


def template_sha():
    digest = hashlib.sha256()
    for name in ('Kbuild.j2', 'kprobes_fleet.c.j2'):
        with open(os.path.join(TEMPLATES, name), 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def spec(probes, module_name='kprobes_fleet', chosen=None):
    normalized = ps.normalize(probes)
    chosen = chosen or {}
    resolved = ps.resolve(normalized, dict((p['name'], chosen.get(p['name'], ps.candidate_symbols(p)[0]))
                                           for p in normalized))
    return {'module_name': module_name, 'probes': resolved,
            'spec_hash': ps.spec_hash(module_name, resolved, template_sha())}


def render(name, variables, lstrip_blocks=True):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True,
                             lstrip_blocks=lstrip_blocks, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(name).render(**variables)


def u64(ret):
    """A return value as the register holds it."""
    return ret % U64


def value_of(probe, ret):
    """The return value a probe sees in this register value: the spec's meaning, in Python."""
    if probe['returns'] == 'int':
        value = ret & 0xffffffff
        return value - (1 << 32) if value >= 1 << 31 else value
    if probe['returns'] == 'long':
        return ret - U64 if ret >= 1 << 63 else ret
    return ret - U64 if ret >= U64 - 4095 else 0  # errptr: only the top 4095 values are errors


def reported(probe, ret):
    """Whether a probe counts a match for this register value."""
    value = value_of(probe, ret)
    report = probe['report']
    if report == 'any':
        return True
    if report == 'negative':
        return value < 0
    if report == 'nonzero':
        return value != 0
    return -value in [ps.ERRNO[n] for n in probe['errnos']]


# -- 1. the module in user space -----------------------------------------------------------

class Module(object):
    """A rendered module compiled against kstub and linked with the harness."""

    def __init__(self, path, variables):
        self.path = path
        self.variables = variables

    def run(self, *commands):
        proc = subprocess.run([self.path], input='\n'.join(commands) + '\n', capture_output=True, text=True,
                              timeout=60, check=False)
        lines = [line.split('\t') for line in proc.stdout.splitlines()]
        return proc.returncode, lines

    def ok(self, *commands):
        rc, lines = self.run(*commands)
        assert rc == 0, lines
        return lines


def build_user_space(tmp_path, variables, c_text=None):
    """(returncode, compiler output, Module or None)."""
    work = tmp_path / 'kstub-build'
    (work / 'linux').mkdir(parents=True)
    c_text = render('kprobes_fleet.c.j2', variables) if c_text is None else c_text
    for header in re.findall(r'^#include <(linux/[a-z_]+\.h)>', c_text, re.M):
        (work / header).write_text('')  # the declarations are in kstub.h, included first
    (work / 'kstub_errno.h').write_text(''.join(
        '#define %s %d\n' % (name, num) for name, num in sorted(ps.ERRNO.items())
        if name != 'ENOTSUP'))  # a C library name only: the kernel has no such macro
    source = work / (variables['module_name'] + '.c')
    source.write_text(c_text)
    binary = work / 'module'
    proc = subprocess.run([CC, '-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Werror',
                           '-I', str(work), '-I', KSTUB, '-include', 'kstub.h',
                           '-DKBUILD_MODNAME="%s"' % variables['module_name'],
                           '-DCONFIG_KPROBES', '-DCONFIG_KRETPROBES', '-DCONFIG_PRINTK', '-DCONFIG_CGROUPS',
                           '-o', str(binary), str(source), os.path.join(KSTUB, 'harness.c')],
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr, (Module(str(binary), variables) if proc.returncode == 0
                                                        else None)


needs_cc = pytest.mark.skipif(CC is None, reason='no C compiler (gcc or cc) to build the module in user space')


@pytest.fixture(scope='module', params=['presets', 'custom'])
def module(request, tmp_path_factory):
    if CC is None:
        pytest.skip('no C compiler (gcc or cc) to build the module in user space')
    variables = spec(None if request.param == 'presets' else CUSTOM)
    rc, out, built = build_user_space(tmp_path_factory.mktemp(request.param), variables)
    assert rc == 0, out
    return built


def values(lines, key):
    return [line[1:] for line in lines if line[0] == key]


def sysfs(lines):
    return dict((line[1], line[2]) for line in lines if line[0] == 'read')


def test_init_registers_every_probe_on_its_symbol(module):
    lines = module.ok('init', 'ls', 'read kprobes_fleet/spec_hash', 'read kprobes_fleet/marker')
    assert values(lines, 'init') == [['0']]
    assert sorted(values(lines, 'kretprobe')) == sorted(
        [p['function'], str(p['maxactive'])] for p in module.variables['probes'])
    files = set(f[0] for f in values(lines, 'file'))
    attrs = ('function', 'hits', 'matches', 'nmissed', 'kp_nmissed', 'maxactive', 'registered', 'reg_err',
             'suppressed', 'filtered', 'exempted', 'errnos', 'latency')
    assert files == set(['kprobes_fleet/spec_hash', 'kprobes_fleet/marker'] + [
        'kprobes_fleet/probes/%s/%s' % (p['name'], a) for p in module.variables['probes'] for a in attrs])
    assert set(f[1] for f in values(lines, 'file')) == {'444'}  # read-only
    assert sysfs(lines) == {'kprobes_fleet/spec_hash': module.variables['spec_hash'],
                            'kprobes_fleet/marker': MARKER}
    # the module announces itself once, from init (process context)
    assert [t for dummy, t in values(lines, 'log') if 'loaded' in t] == [
        'kprobes_fleet: loaded spec_hash=%s probes=%d' % (module.variables['spec_hash'],
                                                          len(module.variables['probes']))]


RETURNS = [0, 1, 4096, -1, -2, -5, -11, -28, -95, -122, -512, -4095, -4096, (1 << 32) - 28, 0xffff888012345678]


def test_handlers_count_and_report_what_the_spec_says(module):
    probes = module.variables['probes']
    commands = ['init']
    for p in probes:
        commands += ['hit %s %d' % (p['function'], u64(r)) for r in RETURNS]
    commands += ['read kprobes_fleet/probes/%s/%s' % (p['name'], a) for p in probes
                 for a in ('hits', 'matches', 'suppressed', 'function', 'maxactive', 'registered', 'reg_err')]
    lines = module.ok(*commands)
    assert set(h[0] for h in values(lines, 'handler')) == {'0'}  # a handler never changes anything
    got = sysfs(lines)
    events = [kmsg.parse_event('kprobes_fleet', t) for dummy, t in values(lines, 'log')]
    events = [e for e in events if e]
    for p in probes:
        base = 'kprobes_fleet/probes/%s/' % p['name']
        expected = [r for r in RETURNS if reported(p, u64(r))]
        assert got[base + 'hits'] == str(len(RETURNS)), p['name']
        assert got[base + 'matches'] == str(len(expected)), (p['name'], p['returns'], p['report'])
        assert got[base + 'function'] == p['function']
        assert got[base + 'maxactive'] == str(p['maxactive'])
        assert (got[base + 'registered'], got[base + 'reg_err']) == ('1', '0')
        logged = [e for e in events if e['probe'] == p['name']]
        if not p['log']:
            assert logged == [] and got[base + 'suppressed'] == '0'
            continue
        burst = min(len(expected), p['log_burst'])
        assert got[base + 'suppressed'] == str(len(expected) - burst)
        assert [e['function'] for e in logged] == [p['function']] * burst
        assert [e['comm'] for e in logged] == ['bash'] * burst and set(e['pid'] for e in logged) <= {4240}
        assert set((e['tid'], e['uid'], e['cgroup'], e['unit']) for e in logged) <= {(4242, 1000, '/', None)}
        assert [e['ret'] for e in logged] == [value_of(p, u64(r)) for r in expected][:burst]


def expected_errnos(probe, returns):
    """The errnos sysfs file's counts for these register values: matches that are negative, per errno."""
    out = Counter()
    for r in returns:
        value = value_of(probe, u64(r))
        if reported(probe, u64(r)) and value < 0:
            e = -value
            out[str(-e) if 1 <= e <= 133 or 512 <= e <= 531 else 'other'] += 1
    return dict((k.lstrip('-'), v) for k, v in out.items())


def test_errnos_are_counted_exactly_per_errno(module):
    """#23: exact counts per errno of the matches, whatever the log budget did."""
    probes = module.variables['probes']
    commands = ['init']
    for p in probes:
        commands += ['hit %s %d' % (p['function'], u64(r)) for r in RETURNS + [-2, -2, -13, -512, -600]]
    commands += ['read kprobes_fleet/probes/%s/errnos' % p['name'] for p in probes]
    lines = module.ok(*commands)
    raw = [line for line in lines if line[0] == 'read']
    for p, line in zip(probes, raw):
        got = dict(entry.split(' ') for entry in line[2].split('|') if entry) if len(line) > 2 else {}
        assert dict((k, int(v)) for k, v in got.items()) == expected_errnos(p, RETURNS + [-2, -2, -13, -512, -600]), p


def test_report_decisions_per_return_type(tmp_path):
    """int reads the low 32 bits, long all 64, errptr only the error range; errno lists by kernel macro."""
    if CC is None:
        pytest.skip('no C compiler')
    probes = [
        {'name': 'as_int', 'function': 'f_int', 'returns': 'int', 'report': 'negative'},
        {'name': 'as_long', 'function': 'f_long', 'returns': 'long', 'report': 'negative'},
        {'name': 'as_errptr', 'function': 'f_ptr', 'returns': 'errptr', 'report': 'negative'},
        {'name': 'listed', 'function': 'f_list', 'returns': 'int', 'report': ['ENOTSUP', 'EDQUOT']},
        {'name': 'nonzero', 'function': 'f_nz', 'returns': 'long', 'report': 'nonzero'},
    ]
    variables = spec(probes)
    rc, out, module = build_user_space(tmp_path, variables)
    assert rc == 0, out
    cases = {
        'f_int': [((1 << 32) - 28, True), ((1 << 32) + 5, False), (u64(-1), True), (0x7fffffff, False)],
        'f_long': [((1 << 32) - 28, False), (u64(-28), True), (u64(-1 << 40), True)],
        'f_ptr': [(0xffff888012345678, False), (u64(-4095), True), (u64(-4096), False), (0, False)],
        'f_list': [(u64(-95), True), (u64(-122), True), (u64(-28), False), ((1 << 32) - 95, True)],
        'f_nz': [(0, False), (1, True), (u64(-1), True)],
    }
    for p in variables['probes']:
        commands = ['init'] + ['hit %s %d' % (p['function'], r) for r, dummy in cases[p['function']]]
        lines = module.ok(*(commands + ['read kprobes_fleet/probes/%s/matches' % p['name']]))
        want = sum(1 for dummy, hit in cases[p['function']] if hit)
        assert sysfs(lines)['kprobes_fleet/probes/%s/matches' % p['name']] == str(want), p['name']
        # our own reading of the spec agrees
        assert want == sum(1 for r, dummy in cases[p['function']] if reported(p, r)), p['name']
    # ENOTSUP (a C library alias without a kernel macro) is logged as the kernel's -95
    lines = module.ok('init', 'hit f_list %d' % u64(-95))
    event = kmsg.parse_event('kprobes_fleet', values(lines, 'log')[-1][1])
    assert (event['probe'], event['ret'], kmsg.errno_name(event['ret'])) == ('listed', -95, 'EOPNOTSUPP')


def test_the_handler_reads_the_chosen_candidates_type(tmp_path):
    """One spec, the C type follows the candidate the host resolved (resolve() sets returns)."""
    if CC is None:
        pytest.skip('no C compiler')
    probes = [{'name': 'opens', 'returns': 'errptr',
               'function': ['do_file_open', {'function': 'do_sys_openat2', 'returns': 'int'}]}]
    # 0xfffffffe: -2 in an int register half, a (low) pointer-sized value as a whole
    for symbol, matches in (('do_file_open', '0'), ('do_sys_openat2', '1')):
        variables = spec(probes, chosen={'opens': symbol})
        rc, out, module = build_user_space(tmp_path / symbol, variables)
        assert rc == 0, out
        lines = module.ok('init', 'hit %s %d' % (symbol, 0xfffffffe), 'read kprobes_fleet/probes/opens/matches',
                          'read kprobes_fleet/probes/opens/function')
        assert values(lines, 'kretprobe') == [[symbol, str(variables['probes'][0]['maxactive'])]]
        assert sysfs(lines) == {'kprobes_fleet/probes/opens/matches': matches,
                                'kprobes_fleet/probes/opens/function': symbol}


def test_rate_limit_and_log_readers(tmp_path):
    """log_burst lines per interval, the rest counted as suppressed; the log daemons' own matches never logged,
    counted in exempted (not in suppressed, and not against the budget)."""
    if CC is None:
        pytest.skip('no C compiler')
    variables = spec([{'name': 'full', 'function': 'vfs_write', 'report': ['ENOSPC'], 'log_burst': 2,
                       'log_interval': 60}])
    rc, out, module = build_user_space(tmp_path, variables)
    assert rc == 0, out
    hit = 'hit vfs_write %d' % u64(-28)
    lines = module.ok('init', hit, hit, hit, 'interval', hit, hit + ' systemd-journal', hit + ' rsyslogd',
                      hit + ' syslog-ng', hit + ' klogd', 'interval', hit + ' journalctl',
                      'read kprobes_fleet/probes/full/matches', 'read kprobes_fleet/probes/full/suppressed',
                      'read kprobes_fleet/probes/full/exempted')
    events = [kmsg.parse_event('kprobes_fleet', t) for dummy, t in values(lines, 'log')]
    assert [e['comm'] for e in events if e] == ['bash', 'bash', 'bash', 'journalctl']
    assert sysfs(lines) == {'kprobes_fleet/probes/full/matches': '9', 'kprobes_fleet/probes/full/suppressed': '1',
                            'kprobes_fleet/probes/full/exempted': '4'}
    # records from the handlers go to the ring buffer deferred (LOGLEVEL_SCHED), at KERN_INFO
    assert set(level for level, text in values(lines, 'log') if 'probe=' in text) == {'6D'}


def test_log_exempt_is_the_users_list(tmp_path):
    """kprobes_fleet_log_exempt (normalize's log_exempt) for every probe, a probe's own log_exempt for it; an
    empty list exempts nobody; a trailing * is a prefix; a probe with args (the ring) and log: false exempt nobody."""
    if CC is None:
        pytest.skip('no C compiler')
    probes = ps.normalize([{'name': 'mine', 'function': 'vfs_write', 'report': ['ENOSPC']},
                           {'name': 'nobody', 'function': 'vfs_fsync_range', 'returns': 'int', 'log_exempt': []},
                           {'name': 'silent', 'function': 'vfs_fallocate', 'returns': 'int', 'log': False},
                           {'name': 'ringed', 'function': 'kern_path', 'returns': 'int',
                            'args': [{'name': 'name', 'arg': 1, 'type': 'string'}]}],
                          log_exempt=['fluent-bit', 'vector*'])
    assert [p['log_exempt'] for p in probes] == [['fluent-bit', 'vector*'], [], ['fluent-bit', 'vector*'],
                                                 ['fluent-bit', 'vector*']]
    variables = spec(probes)
    rc, out, module = build_user_space(tmp_path, variables)
    assert rc == 0, out
    commands = ['init']
    for comm in ('fluent-bit', 'vector', 'vector-agent', 'systemd-journal', 'fluent-bits'):
        commands += ['hit vfs_write %d %s' % (u64(-28), comm), 'hit vfs_fsync_range %d %s' % (u64(-5), comm),
                     'hit vfs_fallocate %d %s' % (u64(-5), comm)]
    commands += ['call kern_path %d s:%s' % (u64(-2), hexed('/x'))]
    commands += ['read kprobes_fleet/probes/%s/%s' % (p, c) for p in ('mine', 'nobody', 'silent', 'ringed')
                 for c in ('matches', 'exempted', 'suppressed')]
    lines = module.ok(*commands)
    got = sysfs(lines)
    logged = [(e['probe'], e['comm']) for e in (kmsg.parse_event('kprobes_fleet', t) for dummy, t in values(lines, 'log'))
              if e]
    assert logged == [('nobody', 'fluent-bit'), ('nobody', 'vector'), ('nobody', 'vector-agent'),
                      ('mine', 'systemd-journal'), ('nobody', 'systemd-journal'),
                      ('mine', 'fluent-bits'), ('nobody', 'fluent-bits')]
    assert [got['kprobes_fleet/probes/mine/%s' % c] for c in ('matches', 'exempted', 'suppressed')] == ['5', '3', '0']
    assert [got['kprobes_fleet/probes/nobody/%s' % c] for c in ('matches', 'exempted', 'suppressed')] == ['5', '0', '0']
    assert [got['kprobes_fleet/probes/silent/%s' % c] for c in ('matches', 'exempted', 'suppressed')] == ['5', '0', '0']
    assert [got['kprobes_fleet/probes/ringed/%s' % c] for c in ('matches', 'exempted', 'suppressed')] == ['1', '0', '0']


def test_probe_context_never_prints_directly_and_is_not_probeable(module):
    """A direct printk from a handler aborts the harness; every function on the probe path is blacklisted."""
    commands = ['init'] + ['hit %s %d' % (p['function'], u64(-28)) for p in module.variables['probes']]
    rc, lines = module.run(*(commands + ['nokprobe', 'handlers']))
    assert rc == 0 and values(lines, 'direct_in_probe') == [], lines
    blacklisted = set(n[0] for n in values(lines, 'nokprobe'))
    always = {'kpf_match', 'kpf_is_exempt', 'kpf_comm_is', 'kpf_printk_deferred', 'kpf_errno_slot', 'kpf_escape',
              'kpf_cgroup_path', 'kpf_cg_name', 'kpf_kstr'}
    assert always <= blacklisted
    handlers = values(lines, 'handler_nokprobe')
    assert sorted(h[0] for h in handlers) == sorted(p['function'] for p in module.variables['probes'])
    assert blacklisted == always | set(
        h[1] for h in handlers)


def test_init_is_all_or_nothing_and_exit_leaves_nothing(module):
    probes = module.variables['probes']
    last = probes[-1]['function']
    lines = module.ok('fail_register %s 2' % last, 'init', 'ls', 'exit')
    assert values(lines, 'init') == [['-2']]
    assert values(lines, 'kretprobe') == [] and values(lines, 'file') == []
    assert values(lines, 'exit') == [['0', '0']]
    assert [t for dummy, t in values(lines, 'log') if 'failed' in t] == [
        'kprobes_fleet: register_kretprobe(%s) for probe %s failed: -2' % (last, probes[-1]['name'])]
    lines = module.ok('init', 'exit', 'ls')
    assert values(lines, 'init') == [['0']] and values(lines, 'exit') == [['0', '0']]
    assert values(lines, 'file') == []


def test_module_metadata(module):
    lines = module.ok('modinfo')
    info = dict(m[0].split('=', 1) for m in values(lines, 'modinfo'))
    assert info == {
        'license': 'GPL', 'author': 'kprobes.fleet', 'marker': MARKER, 'version': module.variables['spec_hash'],
        'description': 'kprobes.fleet kretprobe observer (%s)' % ', '.join(
            p['name'] for p in module.variables['probes'])}


# -- arguments (#22): entry handlers and the root-only ring, driven in user space ----------------

def hexed(data):
    return data.hex() if isinstance(data, bytes) else data.encode('utf-8').hex()


@pytest.fixture(scope='module')
def args_module(tmp_path_factory):
    if CC is None:
        pytest.skip('no C compiler (gcc or cc) to build the module in user space')
    rc, out, built = build_user_space(tmp_path_factory.mktemp('args'), spec(ARGS))
    assert rc == 0, out
    return built


def ring(module, *commands):
    """The events the ring gives a new reader after ``commands``, as event_ring parses them."""
    from ansible_collections.kprobes.fleet.plugins.module_utils import event_ring
    lines = module.ok('init', *(list(commands) + ['ring']))
    assert values(lines, 'ring_end') == [['400', 'kprobes_fleet.events']]  # root only
    assert [line for line in values(lines, 'log') if 'probe=' in line[1]] == []  # never in the kernel log
    events = []
    for (text,) in values(lines, 'ring'):
        rec = kmsg.parse_record(text)
        assert rec and rec['prio'] == 6, text
        ev = event_ring.parse_event('kprobes_fleet', rec['text'])
        events.append(dict(ev, seq=rec['seq'], errno=kmsg.errno_name(ev['ret'])))
    return events, lines


HOSTILE = [b'x probe=disk_full errno=ENOSPC comm=dd', b'new\nline\n6,1,1,-;kprobes_fleet: probe=no_args',
           b'quote"d <script>', b'back\\slash %41', b'bad-\xff\xfe', b'']


def test_arguments_come_back_byte_exact_and_forge_nothing(args_module):
    from ansible_collections.kprobes.fleet.plugins.module_utils import event_ring
    calls = ['call do_sys_openat2 %d i:-100 s:%s i:0' % (u64(-2), hexed(name)) for name in HOSTILE]
    events, lines = ring(args_module, *calls)
    assert [event_ring.raw(e['args']['path']) for e in events] == HOSTILE
    assert all(e['probe'] == 'open_paths' and e['errno'] == 'ENOENT' and e['args']['how'] == 0 for e in events)
    assert [e['seq'] for e in events] == list(range(len(HOSTILE)))
    assert set((e['pid'], e['tid'], e['uid'], e['comm']) for e in events) == {(4240, 4242, 1000, 'bash')}


def test_strings_are_cut_at_255_bytes_and_bad_pointers_give_an_error(args_module):
    long_path = b'/' + b'a' * 3999
    edge = b'/ends/right/before/an/unreadable/page'
    events, lines = ring(args_module,
                         'call do_sys_openat2 %d i:3 s:%s i:0' % (u64(-2), hexed(long_path)),
                         'call do_sys_openat2 %d i:3 bad i:0' % u64(-14),
                         'call do_sys_openat2 %d i:3 null i:0' % u64(-14),
                         'call do_sys_openat2 %d i:3 edge:%s i:0' % (u64(-2), hexed(edge)),
                         'call do_rmdir %d i:-100 n:%s' % (u64(-39), hexed('/srv/full dir')),
                         'call do_rmdir %d i:-100 bad' % u64(-2),
                         'call kern_path %d s:%s' % (u64(-2), hexed('/kernel/string')))
    assert events[0]['args']['path'] == long_path[:255].decode() and events[0]['args_truncated'] == ['path']
    assert events[1]['args'] == {'path': None, 'how': 0} and events[1]['args_errors'] == {'path': 'EFAULT'}
    assert events[2]['args_errors'] == {'path': 'EFAULT'}
    assert events[3]['args']['path'] == edge.decode() and 'args_truncated' not in events[3]
    assert events[4]['args'] == {'path': '/srv/full dir', 'dfd': -100} and events[4]['errno'] == 'ENOTEMPTY'
    assert events[5]['args_errors'] == {'path': 'EFAULT'}
    assert events[6]['args'] == {'name': '/kernel/string'}
    assert set(h[0] for h in values(lines, 'entry')) == {'0'}


def test_a_file_gives_its_path_filesystem_and_device(args_module):
    deep = '/'.join(['d%03d' % i for i in range(60)])
    events, lines = ring(args_module,
                         'call vfs_write %d f:ext4:7:0:%s s:x i:65536' % (u64(-28), hexed('/fill')),
                         'call vfs_write %d f:xfs:254:17:%s s:x i:4096' % (u64(-122), hexed('/var/log/app x.log')),
                         'call vfs_write %d f:ext4:7:0:%s s:x i:1' % (u64(-28), hexed(deep)),
                         'call vfs_write %d f:ext4:7:0: s:x i:1' % u64(-28),
                         'call vfs_write %d bad s:x i:1' % u64(-28),
                         'call vfs_write %d f:ext4:7:0:%s s:x i:1' % (u64(5), hexed('/not/a/match')))
    files = [e['args']['file'] for e in events]
    assert files[0] == {'path': '/fill', 'fs': 'ext4', 'dev': '7:0'} and events[0]['args']['count'] == 65536
    assert files[1] == {'path': '/var/log/app x.log', 'fs': 'xfs', 'dev': '254:17'} and events[1]['errno'] == 'EDQUOT'
    assert events[2]['args_truncated'] == ['file'] and len(files[2]['path']) <= 255
    assert ('/' + deep).endswith(files[2]['path'])  # the deepest components are kept
    assert files[3]['path'] == '/'
    assert events[4]['args_errors'] == {'file': 'EFAULT'}
    assert len(events) == 5  # a write that did not fail is counted, not reported


def test_probes_without_arguments_keep_the_kernel_log(args_module):
    lines = args_module.ok('init', 'hit vfs_fsync_range %d' % u64(-5), 'ring',
                           'read kprobes_fleet/probes/no_args/matches', 'read kprobes_fleet/ring_id')
    assert [t for dummy, t in values(lines, 'log') if 'probe=' in t] == [
        'kprobes_fleet: probe=no_args func=vfs_fsync_range ret=-5 pid=4240 tid=4242 uid=1000 cgroup=/ comm=bash']
    assert values(lines, 'ring') == []
    assert sysfs(lines) == {'kprobes_fleet/probes/no_args/matches': '1', 'kprobes_fleet/ring_id': '00c0ffee00c0ffee'}


def test_the_ring_keeps_the_newest_and_shows_the_gap(args_module):
    calls = ['call kern_path %d s:%s' % (u64(-2), hexed('/n/%d' % i)) for i in range(2100)]
    events, lines = ring(args_module, *calls)
    assert len(events) == 2048 and events[0]['seq'] == 52 and events[-1]['args']['name'] == '/n/2099'
    lines = args_module.ok('init', *(calls[:3] + ['read kprobes_fleet/probes/kstrings/matches', 'exit', 'ring']))
    assert sysfs(lines)['kprobes_fleet/probes/kstrings/matches'] == '3'
    assert values(lines, 'exit') == [['0', '0']] and values(lines, 'ring_end') == [['none']]  # gone with the module


@needs_cc
def test_unsupported_values_do_not_build(tmp_path):
    for field, value in (('returns', 'u8'), ('report', 'sometimes')):
        variables = spec(None)
        variables['probes'][0][field] = value
        rc, out, dummy = build_user_space(tmp_path / field, variables)
        assert rc != 0 and "kprobes.fleet: unsupported '%s' value" % field in out, out


def test_same_output_without_lstrip_blocks():
    # ansible.builtin.template defaults to lstrip_blocks: false
    for probes in (None, CUSTOM):
        variables = spec(probes)
        assert (render('kprobes_fleet.c.j2', variables)
                == render('kprobes_fleet.c.j2', variables, lstrip_blocks=False))


def test_strict_undefined():
    variables = spec(None)
    del variables['spec_hash']
    with pytest.raises(jinja2.UndefinedError):
        render('kprobes_fleet.c.j2', variables)


# -- 2. the real kbuild against installed kernel headers ------------------------------------

ARCH_CONFIG = {'x86_64': 'CONFIG_X86_64=y', 'aarch64': 'CONFIG_ARM64=y'}


def kernel_trees():
    """Configured kernel build trees for this machine's architecture (Debian's linux-headers-*-<flavour>,
    /lib/modules/*/build of any distribution)."""
    found = set()
    for tree in glob.glob('/usr/src/linux-headers-*') + glob.glob('/lib/modules/*/build'):
        tree = os.path.realpath(tree)
        config = os.path.join(tree, '.config')
        if not (os.path.isfile(os.path.join(tree, 'Makefile')) and os.path.isfile(config)):
            continue  # Debian's -common half, or a dangling link
        with open(config) as f:
            if ARCH_CONFIG.get(platform.machine(), '') not in f.read():
                continue
        found.add(tree)
    return sorted(found)


HEADERS = kernel_trees()
WARNING_RE = re.compile(r'warning|error', re.I)
HARMLESS = ('Skipping BTF generation',)


def modinfo(ko_bytes):
    """The .modinfo fields of a .ko (what modinfo prints), read from its ELF section."""
    assert ko_bytes[:4] == b'\x7fELF' and ko_bytes[4] == 2, 'not a 64-bit ELF object'
    end = '<' if ko_bytes[5] == 1 else '>'
    shoff, = struct.unpack_from(end + 'Q', ko_bytes, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(end + 'HHH', ko_bytes, 0x3a)

    def section(i):
        name, dummy, dummy2, dummy3, offset, size = struct.unpack_from(end + 'IIQQQQ', ko_bytes, shoff + i * shentsize)
        return name, offset, size

    dummy, str_off, dummy2 = section(shstrndx)
    fields = {}
    for i in range(shnum):
        name, offset, size = section(i)
        if ko_bytes[str_off + name:].split(b'\0', 1)[0] == b'.modinfo':
            for entry in ko_bytes[offset:offset + size].split(b'\0'):
                if b'=' in entry:
                    key, value = entry.decode().split('=', 1)
                    fields.setdefault(key, []).append(value)
    return fields


def test_compile_runs_where_headers_exist():
    """In CI (which installs linux-headers-amd64) the kbuild test must not be skipped."""
    if os.environ.get('CI') == 'true' and platform.machine() == 'x86_64':
        assert HEADERS, 'CI=true but no configured kernel headers: .ci/run installs linux-headers-amd64'


@pytest.mark.compile
@pytest.mark.skipif(not HEADERS, reason='no configured kernel headers for %s (Debian: apt-get install '
                                        'linux-headers-%s)' % (platform.machine(), 'amd64'))
@pytest.mark.parametrize('headers', HEADERS or ['none'])
@pytest.mark.parametrize('which', ['presets', 'custom', 'args'])
def test_compile(tmp_path, headers, which):
    # headers are here: a missing toolchain is a failure, not a reason to skip
    assert shutil.which('make') and CC, 'kernel headers in %s but no make or C compiler' % headers
    variables = spec({'presets': None, 'custom': CUSTOM, 'args': ARGS}[which])
    build = tmp_path / variables['module_name']
    build.mkdir()
    (build / 'Kbuild').write_text(render('Kbuild.j2', variables))
    (build / (variables['module_name'] + '.c')).write_text(render('kprobes_fleet.c.j2', variables))
    proc = subprocess.run(['make', '-C', headers, 'M=%s' % build, 'modules'], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout
    complaints = [line for line in proc.stdout.splitlines()
                  if WARNING_RE.search(line) and not any(h in line for h in HARMLESS)]
    assert complaints == [], proc.stdout  # modpost warns about every import the kernel does not export
    ko = build / (variables['module_name'] + '.ko')
    info = modinfo(ko.read_bytes())
    assert info['version'] == [variables['spec_hash']]
    assert info['license'] == ['GPL'] and info['marker'] == [MARKER]
    assert info['name'] == [variables['module_name']]
    # built for exactly the kernel of these headers (vermagic starts with UTS_RELEASE, not kernel.release)
    with open(os.path.join(headers, 'include', 'generated', 'utsrelease.h')) as f:
        release = re.search(r'#define UTS_RELEASE "([^"]+)"', f.read()).group(1)
    assert info['vermagic'][0].split()[0] == release
    nm = shutil.which('nm')
    if nm:
        symbols = subprocess.run([nm, str(ko)], capture_output=True, text=True, check=True).stdout.split('\n')
        undefined = set(line.split()[-1] for line in symbols if line.strip().startswith('U '))
        assert {'register_kretprobe', 'unregister_kretprobes', 'vprintk_emit'} <= undefined
        # printk_deferred's functions are not exported; the module must not need them
        assert not undefined & {'printk_deferred', '_printk_deferred'}
        defined = set(line.split()[-1] for line in symbols if line.strip() and not line.strip().startswith('U '))
        for p in variables['probes']:  # every handler on the kprobe blacklist (NOKPROBE_SYMBOL)
            assert '_kbl_addr_kpf_ret_%s' % p['name'] in defined, p['name']
        assert '_kbl_addr_kpf_match' in defined


# -- latency (#23): every call timed, log2 buckets, slower_than ------------------------------------

def test_latency_buckets_and_slower_than(tmp_path):
    if CC is None:
        pytest.skip('no C compiler')
    variables = spec([{'name': 'slow_sleeps', 'function': 'do_nanosleep', 'returns': 'int', 'report': 'any',
                       'slower_than': '100ms'},
                      {'name': 'fsyncs', 'function': 'vfs_fsync_range', 'returns': 'int', 'report': ['EIO'],
                       'latency': True},
                      {'name': 'plain', 'function': 'vfs_write'}])
    rc, out, module = build_user_space(tmp_path, variables)
    assert rc == 0, out
    commands = ['init', 'duration 200000000'] + ['hit do_nanosleep 0 sleep'] * 5 + ['duration 10000000'] + \
        ['hit do_nanosleep 0 sleep'] * 3 + ['duration 0', 'hit do_nanosleep 0',
                                            'duration 3000', 'hit vfs_fsync_range %d' % u64(-5),
                                            'hit vfs_fsync_range 0', 'hit vfs_write %d' % u64(-28)]
    commands += ['read kprobes_fleet/probes/%s/%s' % (p, f) for p in ('slow_sleeps', 'fsyncs', 'plain')
                 for f in ('latency', 'matches', 'hits')]
    lines = module.ok(*commands)
    got = sysfs(lines)
    # 0.2 s = 2^27.6 ns: bucket 28 (2^27 <= ns < 2^28); 10 ms: bucket 24; 0 ns: bucket 0
    assert got['kprobes_fleet/probes/slow_sleeps/latency'] == '9 %d|0 1|24 3|28 5' % (5 * 200000000 + 3 * 10000000)
    assert got['kprobes_fleet/probes/slow_sleeps/matches'] == '5'  # only the calls slower than 100 ms
    assert got['kprobes_fleet/probes/fsyncs/latency'] == '2 6000|12 2'
    assert got['kprobes_fleet/probes/fsyncs/matches'] == '1'
    assert got['kprobes_fleet/probes/plain/latency'] == ''  # not timed
    logged = [kmsg.parse_event('kprobes_fleet', t) for dummy, t in values(lines, 'log') if 'probe=' in t]
    assert [(e['probe'], e.get('lat_ns')) for e in logged] == [('slow_sleeps', 200000000)] * 5 + [
        ('fsyncs', 3000), ('plain', None)]


# -- filters (#23): comm and uid in the kernel, the rest counted in filtered ----------------------------

def test_filters_keep_only_whom_they_name_and_count_the_rest(tmp_path):
    if CC is None:
        pytest.skip('no C compiler')
    variables = spec([{'name': 'db_fsyncs', 'function': 'vfs_fsync_range', 'returns': 'int', 'report': ['EIO'],
                       'filter': {'comm': ['postgres', 'nginx*'], 'comm_not': ['nginx-debug']}},
                      {'name': 'root_opens', 'function': 'do_sys_openat2', 'returns': 'int', 'report': 'negative',
                       'filter': {'uid_not': [0]}, 'args': [{'name': 'path', 'arg': 2, 'type': 'ustring'}]},
                      {'name': 'plain', 'function': 'vfs_write'}])
    rc, out, module = build_user_space(tmp_path, variables)
    assert rc == 0, out
    eio = u64(-5)
    commands = ['hit vfs_fsync_range %d %s' % (eio, c) for c in
                ('postgres', 'postgresql', 'nginx', 'nginx-worker', 'nginx-debug', 'bash')]
    commands += ['hit vfs_fsync_range 0 postgres', 'call do_sys_openat2 %d i:1 s:%s i:0' % (u64(-2), hexed('/as/uid/1000')),
                 'hit vfs_write %d' % u64(-1), 'ring']
    commands += ['read kprobes_fleet/probes/%s/%s' % (p, c) for p in ('db_fsyncs', 'root_opens', 'plain')
                 for c in ('hits', 'matches', 'filtered')]
    lines = module.ok('init', *commands)
    got = sysfs(lines)
    # postgres, nginx, nginx-worker pass; postgresql (exact name), nginx-debug (excluded) and bash do not
    assert [got['kprobes_fleet/probes/db_fsyncs/%s' % c] for c in ('hits', 'matches', 'filtered')] == ['7', '3', '3']
    logged = [kmsg.parse_event('kprobes_fleet', t)['comm'] for dummy, t in values(lines, 'log') if 'db_fsyncs' in t]
    assert logged == ['postgres', 'nginx', 'nginx-worker']
    # the harness runs as uid 1000: not root, so it passes uid_not: [0]
    assert [got['kprobes_fleet/probes/root_opens/%s' % c] for c in ('hits', 'matches', 'filtered')] == ['1', '1', '0']
    assert [got['kprobes_fleet/probes/plain/%s' % c] for c in ('hits', 'matches', 'filtered')] == ['1', '1', '0']


# -- filters on captured args (#23): equal or prefix, in the return handler, the rest in filtered ------------

def test_args_filters_compare_the_captured_bytes(args_module):
    """filter args: whole strings or prefixes of the captured bytes (C-escaped in the source, UTF-8); a cut
    string never equals a value, an unreadable one matches nothing; args_not excludes; non-matches in filtered."""
    f = 'f:ext4:8:1:%s' % hexed('/home/u/x')
    cases = [('/etc/passwd', True), ('/etc', False), ('/etcetera', False), ('/var/log/app.log', True),
             ('/var/log/app.log.1', False), ('quote"back\\slash??/x', True), ('caf\u00e9', True), ('cafe', False),
             ('/other', False)]
    calls = ['call do_sys_openat %d %s s:%s' % (u64(-13), f, hexed(path)) for path, dummy in cases]
    calls += ['call do_sys_openat %d %s bad' % (u64(-13), f),                                   # unreadable
              'call do_sys_openat %d %s s:%s' % (u64(-13), 'f:ext4:8:1:%s' % hexed('/secret/k'), hexed('/etc/k')),
              'call do_sys_openat %d %s s:%s' % (u64(-13), f, hexed('/etc/' + 'a' * 300))]        # cut, prefix ok
    events, lines = ring(args_module, *(calls + ['read kprobes_fleet/probes/etc_opens/%s' % c
                                                 for c in ('hits', 'matches', 'filtered')]))
    got = sysfs(lines)
    want = [p for p, ok in cases if ok] + ['/etc/' + 'a' * 250]
    from ansible_collections.kprobes.fleet.plugins.module_utils import event_ring
    assert [event_ring.raw(e['args']['path']).decode() for e in events if e['probe'] == 'etc_opens'] == want
    assert [got['kprobes_fleet/probes/etc_opens/%s' % c] for c in ('hits', 'matches', 'filtered')] == [
        str(len(calls)), str(len(want)), str(len(calls) - len(want))]


def test_args_filter_equal_never_matches_a_cut_string(tmp_path):
    if CC is None:
        pytest.skip('no C compiler')
    exact = '/' + 'b' * 254  # 255 bytes: what a cut string holds
    variables = spec([{'name': 'k', 'function': 'kern_path', 'returns': 'int',
                       'args': [{'name': 'name', 'arg': 1, 'type': 'string'}], 'filter': {'args': {'name': [exact]}}}])
    rc, out, module = build_user_space(tmp_path, variables)
    assert rc == 0, out
    events, lines = ring(module, 'call kern_path %d s:%s' % (u64(-2), hexed(exact)),
                         'call kern_path %d s:%s' % (u64(-2), hexed(exact + 'c')),
                         'read kprobes_fleet/probes/k/filtered')
    assert [e['args']['name'] for e in events] == [exact] and sysfs(lines)['kprobes_fleet/probes/k/filtered'] == '1'
    assert 'args_truncated' not in events[0]  # 255 bytes and its NUL: whole, not cut


# -- whose (#23): pid/tid, uid and the cgroup path per event; cgroup filters ------------------------------

def test_events_say_whose_cgroup_in_the_log_and_the_ring(args_module):
    hostile = '/user.slice/user-1000.slice/user@1000.service/app.slice/x comm=root\nuid=0 \\%.service'
    lines = args_module.ok('init', 'cgroup %s' % hexed('/system.slice/kpf-unit-test.service'),
                           'hit vfs_fsync_range %d' % u64(-5), 'cgroup %s' % hexed(hostile),
                           'hit vfs_fsync_range %d' % u64(-5), 'cgroup %s' % hexed('/'), 'hit vfs_fsync_range %d' % u64(-5))
    assert values(lines, 'rcu_unbalanced') == []
    logged = [kmsg.parse_event('kprobes_fleet', t) for dummy, t in values(lines, 'log') if 'probe=' in t]
    assert [(e['pid'], e['tid'], e['uid'], e['comm']) for e in logged] == [(4240, 4242, 1000, 'bash')] * 3
    assert [(e['cgroup'], e['unit']) for e in logged] == [
        ('/system.slice/kpf-unit-test.service', 'kpf-unit-test.service'),
        (hostile.replace('\\', '\\x5c').replace('\n', '\\x0a'), 'x comm=root\\x0auid=0 \\x5c%.service'),
        ('/', None)]
    events, lines = ring(args_module, 'cgroup %s' % hexed(hostile), 'call kern_path %d s:%s' % (u64(-2), hexed('/k')))
    assert (events[0]['cgroup'], events[0]['unit']) == (logged[1]['cgroup'], logged[1]['unit'])
    assert events[0]['args'] == {'name': '/k'} and events[0]['comm'] == 'bash'


def test_a_long_or_unreadable_cgroup_path_is_cut_and_marked(args_module):
    deep = '/' + '/'.join(['lvl%02d.slice' % i for i in range(15)]) + '/app.service'  # 177 bytes
    lines = args_module.ok('init', 'cgroup %s' % hexed(deep), 'hit vfs_fsync_range %d' % u64(-5),
                           'cgroup %s' % hexed('/system.slice/bad/leaf.scope'), 'hit vfs_fsync_range %d' % u64(-5),
                           'cgroup %s' % hexed('/' + 'n' * 200 + '.service'), 'hit vfs_fsync_range %d' % u64(-5))
    logged = [kmsg.parse_event('kprobes_fleet', t) for dummy, t in values(lines, 'log') if 'probe=' in t]
    cut = logged[0]['cgroup']
    assert cut.startswith('.../') and deep.endswith(cut[3:]) and len(cut) <= 127 and logged[0]['unit'] == 'app.service'
    assert (logged[1]['cgroup'], logged[1]['unit']) == ('.../leaf.scope', 'leaf.scope')  # a name that cannot be read
    assert (logged[2]['cgroup'], logged[2]['unit']) == ('...', None)  # one name longer than the path may be


def test_cgroup_filters_match_whole_components(args_module):
    module = args_module
    cases = [('/system.slice/nginx.service', True), ('/system.slice/nginx.service/worker', True),
             ('/system.slice/nginx.service2', False), ('/system.slice/nginx', False), ('/system.slice', False),
             ('/system.slice/nginx.service/debug', False), ('/system.slice/nginx.service/debug/x', False),
             ('/system.slice/nginx.service/debugger', True), ('/user.slice/q"uo\\te?', True),
             ('/user.slice/q"uo\\te?/s.scope', True), ('/', False), ('/system.slice/bad/x', False),
             ('/system.slice/bad', False)]
    commands = ['init']
    for path, dummy in cases:
        commands += ['cgroup %s' % hexed(path), 'hit vfs_unlink %d' % u64(-1)]
    lines = module.ok(*(commands + ['read kprobes_fleet/probes/units/%s' % c for c in ('hits', 'matches', 'filtered')]))
    assert values(lines, 'rcu_unbalanced') == []
    logged = [kmsg.parse_event('kprobes_fleet', t) for dummy, t in values(lines, 'log') if 'probe=units' in t]
    assert [e['cgroup'] for e in logged] == [
        p.replace('\\', '\\x5c') for p, ok in cases if ok]
    want = sum(1 for dummy, ok in cases if ok)
    assert [sysfs(lines)['kprobes_fleet/probes/units/%s' % c] for c in ('hits', 'matches', 'filtered')] == [
        str(len(cases)), str(want), str(len(cases) - want)]
