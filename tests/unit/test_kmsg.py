# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import glob
import json
import os
import platform
import re
import stat

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmsg, names
from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import ERRNO, ERRNO_ALIASES
from fakes import Failed, FakeModule

MOD = 'kprobes_fleet'


def rec(seq, text, ts_usec=1000, prio=6):
    return {'prio': prio, 'seq': seq, 'ts_usec': ts_usec, 'flags': '-', 'text': text}


def ev_line(probe='disk_full', func='vfs_write', ret=-28, pid=812, comm='dd', mod=MOD):
    return '%s: probe=%s func=%s ret=%d pid=%d comm=%s' % (mod, probe, func, ret, pid, comm)


# -- parse_record --------------------------------------------------------------------------

def test_parse_record_basic():
    r = kmsg.parse_record('6,4411,91234567,-;kprobes_fleet: loaded spec_hash=ab probes=2\n')
    assert r == {'prio': 6, 'seq': 4411, 'ts_usec': 91234567, 'flags': '-',
                 'text': 'kprobes_fleet: loaded spec_hash=ab probes=2'}


def test_parse_record_caller_and_unknown_fields_ignored():
    r = kmsg.parse_record('4,17,5000,c,caller=T123,future=1;hello; world\n')
    assert (r['prio'], r['seq'], r['ts_usec'], r['flags']) == (4, 17, 5000, 'c')
    assert r['text'] == 'hello; world'


def test_parse_record_continuation_lines_ignored():
    raw = '6,339,2000,-;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n'
    r = kmsg.parse_record(raw)
    assert r['seq'] == 339
    assert r['text'] == 'usb 1-1: new device'


def test_parse_record_escapes_decoded():
    r = kmsg.parse_record('6,1,2,-;a\\x5cb tab\\x09x caf\\xc3\\xa9 nl\\x0aend\n')
    assert r['text'] == 'a\\b tab\tx caf\u00e9 nl\nend'


def test_parse_record_bytes_input():
    r = kmsg.parse_record(b'6,1,2,-;x\n')
    assert r['text'] == 'x'


def test_parse_record_empty_text():
    assert kmsg.parse_record('6,1,2,-;\n')['text'] == ''


@pytest.mark.parametrize('raw', ['', 'garbage', '6,1,2;x', 'a,b,c,-;x', '6,-1,2,-;x', ' SUBSYSTEM=usb'])
def test_parse_record_malformed(raw):
    assert kmsg.parse_record(raw) is None


# -- parse_event ---------------------------------------------------------------------------

def test_parse_event_basic():
    # a line of a module built before tid, uid and cgroup were logged: its pid= was the thread id
    assert kmsg.parse_event(MOD, ev_line()) == {
        'probe': 'disk_full', 'function': 'vfs_write', 'ret': -28, 'pid': 812, 'comm': 'dd',
        'tid': 812, 'uid': None, 'cgroup': None, 'unit': None}


def whose_line(cgroup, comm='dd', lat=''):
    return '%s: probe=disk_full func=vfs_write ret=-28%s pid=800 tid=812 uid=1000 cgroup=%s comm=%s' % (
        MOD, lat, cgroup, comm)


def test_parse_event_says_whose():
    """#23: pid is the process (thread group), tid the thread; the cgroup path as the kernel escapes it
    (%XX: no space, so no forged field), its systemd unit the deepest whole component with a unit suffix."""
    e = kmsg.parse_event(MOD, whose_line('/system.slice/nginx.service', comm='nginx: worker'))
    assert (e['pid'], e['tid'], e['uid'], e['comm']) == (800, 812, 1000, 'nginx: worker')
    assert (e['cgroup'], e['unit']) == ('/system.slice/nginx.service', 'nginx.service')
    e = kmsg.parse_event(MOD, whose_line('/system.slice/docker.service/payload', lat=' lat_ns=5'))
    assert (e['unit'], e['lat_ns']) == ('docker.service', 5)
    user = '/user.slice/user-1000.slice/user@1000.service/app.slice/kpf-unit-test.service'
    assert kmsg.parse_event(MOD, whose_line(user))['unit'] == 'kpf-unit-test.service'
    assert kmsg.parse_event(MOD, whose_line('/user.slice'))['unit'] == 'user.slice'
    assert kmsg.parse_event(MOD, whose_line('/'))['unit'] is None
    assert kmsg.parse_event(MOD, whose_line('/.service'))['unit'] is None
    # hostile names: escaped by the kernel, shown() in the facts (a backslash as \x5c, a newline as \x0a)
    e = kmsg.parse_event(MOD, whose_line('/user.slice/x%20comm=root%0auid=0.scope/y%5cx2d.service'))
    assert e['cgroup'] == '/user.slice/x comm=root\\x0auid=0.scope/y\\x5cx2d.service' and e['comm'] == 'dd'
    assert e['unit'] == 'y\\x5cx2d.service' and e['uid'] == 1000
    # a cut path: "..." then whole components; the part of a component after "..." is never a unit
    assert kmsg.parse_event(MOD, whose_line('...ce/app.slice'))['unit'] == 'app.slice'
    assert kmsg.parse_event(MOD, whose_line('...nginx.service'))['unit'] is None
    assert kmsg.parse_event(MOD, whose_line('...'))['unit'] is None


def test_parse_event_comm_with_spaces_and_equals():
    e = kmsg.parse_event(MOD, ev_line(comm='kworker/u8:2 x=y  z', ret=0))
    assert e['comm'] == 'kworker/u8:2 x=y  z'
    assert e['ret'] == 0


def test_parse_event_positive_ret_and_empty_comm():
    e = kmsg.parse_event(MOD, ev_line(ret=42, comm=''))
    assert e['ret'] == 42 and e['comm'] == ''


@pytest.mark.parametrize('text', [
    'kprobes_fleet: loaded spec_hash=3f2a9c0d11e4b7a5 probes=2',
    'kprobes_fleet: register_kretprobe(vfs_write) for probe disk_full failed: -22',
    ev_line(mod='other_mod'),
    ev_line(mod='kprobes_fleet2'),
    'x' + ev_line(),
    'kprobes_fleet: probe=disk_full func=vfs_write ret=abc pid=1 comm=x',
    'kprobes_fleet: probe=disk_full func=vfs_write ret=-1 comm=x',
    '',
])
def test_parse_event_non_matching(text):
    assert kmsg.parse_event(MOD, text) is None


def test_parse_event_module_name_is_literal():
    assert kmsg.parse_event('a.b', ev_line(mod='axb')) is None
    assert kmsg.parse_event('a.b', ev_line(mod='a.b'))['probe'] == 'disk_full'


# -- errno_name ----------------------------------------------------------------------------

@pytest.mark.parametrize('ret,name', [
    (-28, 'ENOSPC'), (-2, 'ENOENT'), (-512, 'ERESTARTSYS'), (0, None), (5, None),
    (-999999, None), (None, None)])
def test_errno_name(ret, name):
    assert kmsg.errno_name(ret) == name


@pytest.mark.parametrize('name', sorted(ERRNO))
def test_errno_name_matches_probe_spec(name):
    assert kmsg.errno_name(-ERRNO[name]) == ERRNO_ALIASES.get(name, name)


@pytest.mark.parametrize('ret,name', [
    (-95, 'EOPNOTSUPP'), (-35, 'EDEADLK'), (-11, 'EAGAIN'),  # not ENOTSUP/EDEADLOCK/EWOULDBLOCK
    (-512, 'ERESTARTSYS'), (-519, 'ENOPARAM'), (-524, 'ENOTSUPP')])
def test_errno_name_canonical(ret, name):
    assert kmsg.errno_name(ret) == name


# The numbers errno_name() reads back are the kernel's: the C library's (asm-generic numbering on these
# architectures) for the user-visible ones, the kernel's own header for the kernel-internal ones (>= 512).
ASM_GENERIC = platform.system() == 'Linux' and platform.machine() in ('x86_64', 'aarch64', 'riscv64', 's390x')


@pytest.mark.skipif(not ASM_GENERIC, reason='errno numbers differ from asm-generic on %s' % platform.machine())
@pytest.mark.parametrize('name', sorted(n for n in ERRNO if ERRNO[n] < 512))
def test_errno_numbers_are_the_c_librarys(name):
    if not hasattr(errno, name):
        pytest.skip('the C library has no %s' % name)
    assert ERRNO[name] == getattr(errno, name)
    assert kmsg.errno_name(-getattr(errno, name)) == ERRNO_ALIASES.get(name, name)


def test_every_c_library_errno_has_a_name():
    if not ASM_GENERIC:
        pytest.skip('errno numbers differ from asm-generic on %s' % platform.machine())
    unnamed = sorted(n for n, num in errno.errorcode.items() if kmsg.errno_name(-n) is None and n < 512)
    assert unnamed == []


KERNEL_ERRNO_H = sorted(glob.glob('/usr/src/linux-headers-*/include/linux/errno.h')
                        + glob.glob('/lib/modules/*/build/include/linux/errno.h'))


@pytest.mark.skipif(not KERNEL_ERRNO_H, reason='no kernel headers (include/linux/errno.h)')
@pytest.mark.parametrize('header', KERNEL_ERRNO_H or ['none'])
def test_kernel_internal_errnos_are_the_kernels(header):
    with open(header) as f:
        defined = dict((m.group(1), int(m.group(2)))
                       for m in re.finditer(r'^#define\s+(E[A-Z_]+)\s+(\d+)\b', f.read(), re.M))
    assert defined and all(num >= 512 for num in defined.values())
    # each one the kernel defines is named, by its own name; the table holds no other in that range
    assert dict((name, kmsg.errno_name(-num)) for name, num in defined.items()) == dict((n, n) for n in defined)
    assert sorted(n for n in ERRNO if ERRNO[n] >= 512) == sorted(defined)


# -- read_records --------------------------------------------------------------------------

class FakeReads(object):
    """Scripted os.read: items are bytes (a record) or an errno (raised as OSError)."""

    def __init__(self, items):
        self.items = list(items)
        self.sizes = []

    def __call__(self, fd, size):
        self.sizes.append(size)
        if not self.items:
            raise OSError(errno.EAGAIN, 'Resource temporarily unavailable')
        item = self.items.pop(0)
        if isinstance(item, int):
            raise OSError(item, os.strerror(item))
        return item


def test_read_records_one_per_read_epipe_continues_eagain_stops(tmp_path):
    reads = FakeReads([
        b'6,10,100,-;first\n',
        errno.EPIPE,
        b'6,15,150,-;after overrun\n SUBSYSTEM=x\n',
        b'6,16,160,-,caller=T1;third\n',
    ])
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        out = list(kmsg.read_records(fd, read=reads))
        os.fstat(fd)  # an fd passed in is left open
    finally:
        os.close(fd)
    assert [(r['seq'], r['text']) for r in out] == [(10, 'first'), (15, 'after overrun'), (16, 'third')]
    assert set(reads.sizes) == {16 * 1024}


def test_read_records_other_errors_raise(tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            list(kmsg.read_records(fd, read=FakeReads([errno.EIO])))
    finally:
        os.close(fd)


def test_read_records_from_dump_file(tmp_path):
    dump = tmp_path / 'kmsg'
    dump.write_bytes(b'6,1,10,-;one\n SUBSYSTEM=a\n6,2,20,-;two\n6,3,30,-;three')
    assert [r['seq'] for r in kmsg.read_records(str(dump))] == [1, 2, 3]
    assert kmsg.last_seq(str(dump)) == 3


def test_read_records_small_buffer_splits_records(tmp_path):
    dump = tmp_path / 'kmsg'
    dump.write_bytes(b''.join(b'6,%d,%d,-;line %d\n' % (i, i, i) for i in range(50)))
    assert [r['seq'] for r in kmsg.read_records(str(dump), bufsize=7)] == list(range(50))


def test_last_seq_empty(tmp_path):
    dump = tmp_path / 'kmsg'
    dump.write_bytes(b'')
    assert kmsg.last_seq(str(dump)) is None


# -- collect -------------------------------------------------------------------------------

def test_collect_no_cursor_counts_from_first_record():
    records = [rec(100, 'noise'), rec(101, ev_line(), ts_usec=2500000), rec(105, ev_line(ret=-2))]
    events, lost, cursor = kmsg.collect(iter(records), MOD, None, 'boot-a')
    assert lost == 3  # 102..104
    assert cursor == {'boot_id': 'boot-a', 'next_seq': 106}
    assert events[0] == {'probe': 'disk_full', 'function': 'vfs_write', 'ret': -28, 'errno': 'ENOSPC',
                         'pid': 812, 'comm': 'dd', 'seq': 101, 'ts_usec': 2500000, 'ts': 2.5,
                         'tid': 812, 'uid': None, 'cgroup': None, 'unit': None}
    assert events[1]['errno'] == 'ENOENT'


def test_collect_skips_seen_records():
    records = [rec(s, ev_line(pid=s)) for s in range(5, 12)]
    events, lost, cursor = kmsg.collect(records, MOD, {'boot_id': 'b', 'next_seq': 9}, 'b')
    assert [e['seq'] for e in events] == [9, 10, 11]
    assert lost == 0
    assert cursor['next_seq'] == 12


def test_collect_gap_after_cursor_is_lost():
    records = [rec(20, ev_line()), rec(21, 'x')]
    events, lost, cursor = kmsg.collect(records, MOD, {'boot_id': 'b', 'next_seq': 12}, 'b')
    assert lost == 8
    assert [e['seq'] for e in events] == [20]
    assert cursor == {'boot_id': 'b', 'next_seq': 22}


def test_collect_boot_id_change_resets_to_zero():
    records = [rec(0, 'Linux version'), rec(1, ev_line())]
    events, lost, cursor = kmsg.collect(records, MOD, {'boot_id': 'old', 'next_seq': 5000}, 'new')
    assert lost == 0 and len(events) == 1
    assert cursor == {'boot_id': 'new', 'next_seq': 2}

    records = [rec(40, ev_line())]
    events, lost, cursor = kmsg.collect(records, MOD, {'boot_id': 'old', 'next_seq': 5000}, 'new')
    assert lost == 40  # records 0..39 of the new boot were overwritten before we read them
    assert cursor['next_seq'] == 41


def test_collect_epipe_gap_between_records(tmp_path):
    reads = FakeReads([b'6,7,1,-;' + ev_line().encode() + b'\n', errno.EPIPE,
                       b'6,30,2,-;' + ev_line(pid=2).encode() + b'\n'])
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        events, lost, cursor = kmsg.collect(kmsg.read_records(fd, read=reads), MOD,
                                            {'boot_id': 'b', 'next_seq': 7}, 'b')
    finally:
        os.close(fd)
    assert [e['pid'] for e in events] == [812, 2]
    assert lost == 22  # 8..29
    assert cursor['next_seq'] == 31


def test_collect_nothing_new_keeps_cursor():
    events, lost, cursor = kmsg.collect([rec(3, 'old')], MOD, {'boot_id': 'b', 'next_seq': 4}, 'b')
    assert (events, lost, cursor) == ([], 0, {'boot_id': 'b', 'next_seq': 4})
    assert kmsg.collect([], MOD, None, 'b') == ([], 0, {'boot_id': 'b', 'next_seq': 0})


def test_collect_ignores_other_modules_and_other_lines():
    records = [rec(1, ev_line(mod='other')), rec(2, 'kprobes_fleet: loaded spec_hash=x probes=1'),
               rec(3, ev_line(comm='a b=c'))]
    events, lost, cursor = kmsg.collect(records, MOD, None, 'b')
    assert [e['comm'] for e in events] == ['a b=c']


@pytest.mark.parametrize('prio', [8, 12, 14, 15, 30, 190])  # user.*, daemon.info, local7.info
def test_collect_user_space_record_is_not_an_event(prio):
    records = [rec(1, ev_line(pid=1)), rec(2, ev_line(pid=2), prio=prio), rec(3, 'x')]
    events, lost, cursor = kmsg.collect(records, MOD, {'boot_id': 'b', 'next_seq': 1}, 'b')
    assert [e['pid'] for e in events] == [1]
    assert lost == 0
    assert cursor == {'boot_id': 'b', 'next_seq': 4}  # the user record is consumed all the same


@pytest.mark.parametrize('prio', [0, 3, 4, 6, 7])  # kern.emerg .. kern.debug
def test_collect_kernel_facility_records_are_events(prio):
    events, lost, cursor = kmsg.collect([rec(5, ev_line(), prio=prio)], MOD, None, 'b')
    assert [e['seq'] for e in events] == [5]
    assert cursor['next_seq'] == 6


def test_collect_user_record_from_device(tmp_path):
    # what `echo '<6>kprobes_fleet: probe=...' > /dev/kmsg` produces: prio 14 (user.info)
    reads = FakeReads([b'14,7,1,-;' + ev_line(pid=7).encode() + b'\n',
                       b'6,8,2,-;' + ev_line(pid=8).encode() + b'\n',
                       b'14,9,3,-;' + ev_line(pid=9).encode() + b'\n'])
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        events, lost, cursor = kmsg.collect(kmsg.read_records(fd, read=reads), MOD,
                                            {'boot_id': 'b', 'next_seq': 7}, 'b')
    finally:
        os.close(fd)
    assert [(e['seq'], e['pid']) for e in events] == [(8, 8)]
    assert lost == 0
    assert cursor == {'boot_id': 'b', 'next_seq': 10}


def test_read_records_keeps_every_facility(tmp_path):
    # probe_module's kernel_lines_after() reads records directly: nothing is filtered there
    dump = tmp_path / 'dump'
    dump.write_bytes(b'14,1,1,-;from user\n6,2,2,-;from kernel\n')
    assert [(r['prio'], r['text']) for r in kmsg.read_records(str(dump))] == \
        [(14, 'from user'), (6, 'from kernel')]


# -- cursor file ---------------------------------------------------------------------------

def test_cursor_roundtrip_and_modes(tmp_path):
    state = tmp_path / 'lib' / 'state'
    path = str(state / 'kprobes_fleet.kmsg-cursor')
    assert kmsg.load_cursor(path) is None
    kmsg.save_cursor(path, {'boot_id': 'b', 'next_seq': 7})
    assert kmsg.load_cursor(path) == {'boot_id': 'b', 'next_seq': 7}
    assert json.loads(open(path).read()) == {'boot_id': 'b', 'next_seq': 7}
    assert stat.S_IMODE(os.stat(str(state)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(tmp_path / 'lib')).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    kmsg.save_cursor(path, {'boot_id': 'b', 'next_seq': 9})
    assert kmsg.load_cursor(path)['next_seq'] == 9
    assert os.listdir(str(state)) == ['kprobes_fleet.kmsg-cursor']  # no temp files left


@pytest.mark.parametrize('content', ['', 'not json', '[]', '{"boot_id": "b"}',
                                     '{"boot_id": "b", "next_seq": -1}',
                                     '{"boot_id": "b", "next_seq": "3"}',
                                     '{"boot_id": 1, "next_seq": 3}'])
def test_load_cursor_unusable(tmp_path, content):
    path = tmp_path / 'c'
    path.write_text(content)
    assert kmsg.load_cursor(str(path)) is None


# -- probe_facts module (the collector built on this file) ---------------------------------

STATE = '/var/lib/kprobes-fleet/state'


def fake_host(tmp_path, lines, loaded=False, deployed=True):
    """A host with these kernel log lines; ``deployed``: our working directory exists and is marked
    (as kprobes.fleet.host_dir leaves it), else there is no /var/lib/kprobes-fleet at all."""
    root = tmp_path / 'root'
    (root / 'dev').mkdir(parents=True)
    if deployed:
        host_dir = root / os.path.dirname(STATE).lstrip('/')
        host_dir.mkdir(parents=True)
        os.chmod(str(host_dir), 0o700)
        (host_dir / names.HOST_DIR_MARK).write_text('kprobes.fleet\n')
    (root / 'proc/sys/kernel/random').mkdir(parents=True)
    (root / 'proc/sys/kernel/random/boot_id').write_text('boot-1\n')
    (root / 'dev/kmsg').write_text(''.join('6,%d,%d,-;%s\n' % (i, i * 1000, t) for i, t in enumerate(lines)))
    if loaded:
        (root / 'sys/module' / MOD).mkdir(parents=True)
        (root / 'sys/kernel' / MOD).mkdir(parents=True)
        (root / 'sys/kernel' / MOD / 'spec_hash').write_text('3f2a9c0d11e4b7a5\n')
        (root / 'sys/kernel' / MOD / 'marker').write_text('kprobes.fleet\n')
        p = root / 'sys/kernel' / MOD / 'probes' / 'disk_full'
        p.mkdir(parents=True)
        for name, value in [('function', 'vfs_write'), ('hits', '9123'), ('matches', '3'), ('nmissed', '0'),
                            ('kp_nmissed', '0'), ('maxactive', '64'), ('registered', '1'),
                            ('reg_err', '0'), ('suppressed', '1')]:
            (p / name).write_text(value + '\n')
    return str(root)


def run_facts(tmp_path, root, check_mode=False, **params):
    from ansible_collections.kprobes.fleet.plugins.modules import probe_facts
    full = {'module': MOD, 'host_dir': os.path.dirname(STATE), 'max_events': 1000, 'advance_cursor': True}
    full.update(params)
    return probe_facts.ProbeFacts(FakeModule(full, check_mode), root=root, release='6.1.0-56-amd64').gather()


def test_probe_facts_loaded_counters_and_cursor(tmp_path):
    root = fake_host(tmp_path, ['noise', ev_line(), ev_line(pid=9, comm='my prog')], loaded=True)
    f = run_facts(tmp_path, root)
    assert f['loaded'] is True and f['spec_hash'] == '3f2a9c0d11e4b7a5'
    assert f['kernel'] == '6.1.0-56-amd64' and f['boot_id'] == 'boot-1'
    assert f['probes'] == {'disk_full': {'function': 'vfs_write', 'hits': 9123, 'matches': 3, 'nmissed': 0,
                                         'kp_nmissed': 0, 'maxactive': 64, 'registered': 1, 'reg_err': 0,
                                         'suppressed': 1, 'filtered': None, 'exempted': None, 'errnos': None,
                                         'latency': None,
                                         'delta': {'hits': 9123, 'matches': 3, 'nmissed': 0, 'seconds': None,
                                                   'reset': 'first collection on this host', 'errnos': None}}}
    assert f['reason'] is None and f['previous_boot_id'] is None
    assert [(e['seq'], e['comm'], e['errno']) for e in f['events']] == [(1, 'dd', 'ENOSPC'), (2, 'my prog', 'ENOSPC')]
    assert (f['events_lost'], f['events_dropped']) == (0, 0)
    assert f['cursor'] == {'boot_id': 'boot-1', 'next_seq': 3}
    assert kmsg.load_cursor(os.path.join(str(tmp_path), 'root' + STATE, MOD + '.kmsg-cursor')) == f['cursor']
    again = run_facts(tmp_path, root)
    assert again['events'] == [] and again['cursor'] == f['cursor']


def test_probe_facts_not_loaded_still_reads_ring(tmp_path):
    root = fake_host(tmp_path, [ev_line()])
    f = run_facts(tmp_path, root)
    assert f['loaded'] is False and f['probes'] == {} and f['spec_hash'] is None
    assert len(f['events']) == 1


def test_probe_facts_check_mode_and_no_advance_do_not_write(tmp_path):
    root = fake_host(tmp_path, [ev_line()])
    assert len(run_facts(tmp_path, root, check_mode=True)['events']) == 1
    assert len(run_facts(tmp_path, root, advance_cursor=False)['events']) == 1
    assert not os.path.exists(str(tmp_path) + '/root' + STATE)


def test_probe_facts_max_events_drops_oldest(tmp_path):
    root = fake_host(tmp_path, [ev_line(pid=p) for p in range(10)])
    f = run_facts(tmp_path, root, max_events=3)
    assert [e['pid'] for e in f['events']] == [7, 8, 9]
    assert f['events_dropped'] == 7
    assert f['cursor']['next_seq'] == 10
    assert run_facts(tmp_path, root, max_events=0)['events'] == []
    with pytest.raises(Failed):
        run_facts(tmp_path, root, max_events=-1)


def test_probe_facts_lost_since_cursor(tmp_path):
    root = fake_host(tmp_path, [ev_line(pid=p) for p in range(10)])
    kmsg.save_cursor(os.path.join(str(tmp_path), 'root' + STATE, MOD + '.kmsg-cursor'), {'boot_id': 'boot-1', 'next_seq': 2})
    # the ring now starts at seq 5: records 2..4 were overwritten
    dump = os.path.join(root, 'dev', 'kmsg')
    lines = open(dump).read().splitlines(True)[5:]
    open(dump, 'w').write(''.join(lines))
    f = run_facts(tmp_path, root)
    assert f['events_lost'] == 3
    assert [e['seq'] for e in f['events']] == [5, 6, 7, 8, 9]


def test_probe_facts_does_not_report_a_module_that_is_not_ours(tmp_path):
    root = fake_host(tmp_path, [ev_line()], loaded=True)
    os.unlink(os.path.join(root, 'sys/kernel', MOD, 'marker'))  # loaded, but neither marked nor fingerprinted
    f = run_facts(tmp_path, root)
    assert f['loaded'] is False and f['probes'] == {} and f['spec_hash'] is None


@pytest.mark.parametrize('params,field', [
    ({'module': '../x'}, 'module'), ({'module': 'kprobes_fleet\n'}, 'module'),
    ({'state_dir': '/tmp/state'}, 'state_dir'), ({'state_dir': '/'}, 'state_dir'),
    ({'state_dir': '/var/lib/kprobes-fleet/../../etc'}, 'state_dir'),
])
def test_probe_facts_refuses_names_and_paths_that_are_not_ours(tmp_path, params, field):
    root = fake_host(tmp_path, [ev_line()])
    with pytest.raises(Failed) as exc:
        run_facts(tmp_path, root, **params)
    assert str(exc.value).startswith(field + ': ')
    assert not os.path.exists(os.path.join(root, 'etc'))


def set_counters(root, **values):
    for name, value in values.items():
        with open(os.path.join(root, 'sys/kernel', MOD, 'probes/disk_full', name), 'w') as f:
            f.write('%d\n' % value)


def test_probe_facts_delta_is_what_changed_since_the_previous_collection(tmp_path):
    root = fake_host(tmp_path, [], loaded=True)
    run_facts(tmp_path, root)
    set_counters(root, hits=9200, matches=5, nmissed=2)
    d = run_facts(tmp_path, root)['probes']['disk_full']['delta']
    assert (d['hits'], d['matches'], d['nmissed'], d['reset']) == (77, 2, 2, None)
    assert d['seconds'] is not None and 0 <= d['seconds'] < 60
    # peeking (advance_cursor=false) does not move the baseline either
    assert run_facts(tmp_path, root, advance_cursor=False)['probes']['disk_full']['delta']['matches'] == 0
    assert run_facts(tmp_path, root, advance_cursor=False)['probes']['disk_full']['delta']['matches'] == 0


def test_probe_facts_delta_after_a_reboot_counts_from_zero_and_says_so(tmp_path):
    root = fake_host(tmp_path, [], loaded=True)
    run_facts(tmp_path, root)
    with open(os.path.join(root, 'proc/sys/kernel/random/boot_id'), 'w') as f:
        f.write('boot-2\n')
    set_counters(root, hits=40, matches=1, nmissed=0)
    f = run_facts(tmp_path, root)
    d = f['probes']['disk_full']['delta']
    assert (d['hits'], d['matches'], d['nmissed']) == (40, 1, 0)
    assert 'rebooted' in d['reset'] and 'boot-2' in d['reset']
    assert (f['boot_id'], f['previous_boot_id']) == ('boot-2', 'boot-1')


def test_probe_facts_delta_after_a_reload_or_a_counter_going_down(tmp_path):
    root = fake_host(tmp_path, [], loaded=True)
    run_facts(tmp_path, root)
    set_counters(root, hits=10, matches=0, nmissed=0)  # same boot, same spec: reloaded by hand
    d = run_facts(tmp_path, root)['probes']['disk_full']['delta']
    assert (d['hits'], d['matches']) == (10, 0) and 'went down' in d['reset']
    with open(os.path.join(root, 'sys/kernel', MOD, 'spec_hash'), 'w') as f:
        f.write('0d11e4b7a53f2a9c\n')
    set_counters(root, hits=12, matches=0, nmissed=0)
    d = run_facts(tmp_path, root)['probes']['disk_full']['delta']
    assert d['hits'] == 12 and 'reloaded' in d['reset']


def test_probe_facts_not_loaded_says_why(tmp_path):
    from ansible_collections.kprobes.fleet.plugins.module_utils import persist
    root = fake_host(tmp_path, [])
    assert 'nothing of ours is deployed' in run_facts(tmp_path, root)['reason']
    state = os.path.join(root, STATE.lstrip('/'))
    persist.save_manifest(state, MOD, 'module', '3f2a9c0d11e4b7a5', {'ko': 'x', 'sha256': 'y'},
                          kernel={'release': '6.1.0-50-amd64', 'version': '#1 old'})
    reason = run_facts(tmp_path, root)['reason']
    assert reason.startswith('kernel changed') and '6.1.0-50-amd64' in reason
    assert os.uname().release in reason  # the running kernel, named


# -- a collect before the first deploy (#20 item 2) ------------------------------------------

def tree(top):
    """Every path below ``top`` with its type, mode and owner: what a collect may not change."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(str(top)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            seen[os.path.relpath(p, str(top))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size)
    return seen


FACT_KEYS = {'module', 'backend', 'backend_reason', 'loaded', 'reason', 'previous_boot_id', 'spec_hash',
             'kernel', 'boot_id', 'probes', 'events', 'events_lost', 'events_dropped', 'cursor', 'forwarder',
             'args_channel', 'args_cursor'}


def test_collect_on_a_fresh_host_creates_nothing_and_reports_well_formed_facts(tmp_path):
    root = fake_host(tmp_path, ['noise', ev_line()], deployed=False)
    (tmp_path / 'root' / 'var' / 'lib').mkdir(parents=True)  # the host's /var/lib, nothing of ours in it
    before = tree(root)
    f = run_facts(tmp_path, root)
    assert tree(root) == before  # no /var/lib/kprobes-fleet, no state/, no cursor
    assert set(f) == FACT_KEYS
    assert (f['loaded'], f['backend'], f['probes'], f['spec_hash']) == (False, None, {}, None)
    assert 'nothing of ours is deployed' in f['reason']
    assert f['cursor'] == {'boot_id': 'boot-1', 'next_seq': 2} and f['events_lost'] == 0
    assert [e['seq'] for e in f['events']] == [1]  # what is in the ring is still reported
    assert f['forwarder'] is None and f['previous_boot_id'] is None
    assert run_facts(tmp_path, root) == f and tree(root) == before  # and again: nothing to resume from


def test_collect_then_deploy_adopts_nothing_and_creates_our_directory(tmp_path, monkeypatch):
    """The order AWX runs them in: the hourly collect first, the deploy later (check mode, then real)."""
    from ansible_collections.kprobes.fleet.plugins.modules.host_dir import HostDir
    monkeypatch.setattr(names, 'FORBIDDEN_TREES', ())
    monkeypatch.setattr(HostDir, 'check_parents', lambda self: None)
    root = fake_host(tmp_path, [ev_line()], deployed=False)
    (tmp_path / 'root' / 'var' / 'lib').mkdir(parents=True)
    run_facts(tmp_path, root)
    host_dir = os.path.join(root, 'var/lib/kprobes-fleet')

    def deploy(check_mode):
        module = FakeModule({'path': host_dir, 'state': 'present', 'subdirs': ['modules', 'state', 'build'],
                             'stale_after': None}, check_mode=check_mode)
        return HostDir(module).apply()
    assert deploy(True)['msg'] == 'would create %s' % host_dir
    assert deploy(False)['msg'].startswith('created %s' % host_dir)
    f = run_facts(tmp_path, root)  # now ours: the cursor is kept, in a marked directory
    assert os.path.isfile(os.path.join(host_dir, names.HOST_DIR_MARK))
    assert kmsg.load_cursor(host_state.state_file(os.path.join(host_dir, 'state'), MOD, 'kmsg-cursor')) == f['cursor']
    assert run_facts(tmp_path, root)['events'] == []
    assert deploy(False)['changed'] is False


def test_collect_into_our_directory_creates_a_missing_state_dir_0700(tmp_path):
    root = fake_host(tmp_path, [ev_line()])
    state = os.path.join(root, STATE.lstrip('/'))
    assert not os.path.exists(state)
    f = run_facts(tmp_path, root)
    assert stat.S_IMODE(os.lstat(state).st_mode) == 0o700
    assert os.listdir(state) == [MOD + '.kmsg-cursor']
    assert kmsg.load_cursor(host_state.state_file(state, MOD, 'kmsg-cursor')) == f['cursor']


def test_collect_writes_nothing_into_a_directory_that_is_not_ours(tmp_path):
    root = fake_host(tmp_path, [ev_line()], deployed=False)
    theirs = tmp_path / 'root' / 'var/lib/kprobes-fleet'
    (theirs / 'state').mkdir(parents=True)  # someone's, or what an older collect left: no mark
    (theirs / 'data').write_text('precious\n')
    before = tree(root)
    f = run_facts(tmp_path, root)
    assert tree(root) == before and len(f['events']) == 1


def test_collect_does_not_follow_a_symlinked_state_dir(tmp_path):
    root = fake_host(tmp_path, [ev_line()])
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    os.symlink(str(elsewhere), os.path.join(root, STATE.lstrip('/')))
    run_facts(tmp_path, root)
    assert os.listdir(str(elsewhere)) == []


def test_collect_ignores_a_mark_someone_else_wrote(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('needs root to chown')
    root = fake_host(tmp_path, [ev_line()])
    mark = os.path.join(root, os.path.dirname(STATE).lstrip('/'), names.HOST_DIR_MARK)
    os.chown(mark, 12345, 12345)
    before = tree(root)
    run_facts(tmp_path, root)
    assert tree(root) == before


def test_collect_with_our_probes_loaded_but_no_directory_of_ours_warns_and_writes_nothing(tmp_path):
    from ansible_collections.kprobes.fleet.plugins.modules import probe_facts
    root = fake_host(tmp_path, [ev_line()], loaded=True, deployed=False)
    before = tree(root)
    module = FakeModule({'module': MOD, 'state_dir': STATE, 'max_events': 1000, 'advance_cursor': True})
    f = probe_facts.ProbeFacts(module, root=root, release='6.1.0-56-amd64').gather()
    assert f['loaded'] is True and tree(root) == before
    assert len(module.warnings) == 1 and 'cursor was not saved' in module.warnings[0]
    assert 'kprobes-fleet is not our working directory: it does not exist' in module.warnings[0]


def test_probe_facts_errnos_per_errno_from_sysfs(tmp_path):
    """#23: the module's exact per-errno counts (sysfs errnos), named, unnamed ones kept by number."""
    root = fake_host(tmp_path, [ev_line()], loaded=True)
    errnos = os.path.join(root, 'sys/kernel', MOD, 'probes/disk_full/errnos')
    with open(errnos, 'w') as f:
        f.write('2 7\n13 2\n41 1\n512 4\nother 1\n')
    f = run_facts(tmp_path, root)
    assert f['probes']['disk_full']['errnos'] == {'ENOENT': 7, 'EACCES': 2, '-41': 1, 'ERESTARTSYS': 4, 'other': 1}
    assert f['probes']['disk_full']['delta']['errnos'] == f['probes']['disk_full']['errnos']
    with open(errnos, 'w') as f:
        f.write('2 9\n13 2\n41 1\n512 4\nother 1\n')
    assert run_facts(tmp_path, root)['probes']['disk_full']['delta']['errnos'] == {'ENOENT': 2}
    with open(errnos, 'w') as f:
        f.write('garbage\n')
    assert run_facts(tmp_path, root)['probes']['disk_full']['errnos'] is None


def test_probe_facts_latency_buckets_and_percentiles(tmp_path):
    """#23: the module's latency file: count, sum, log2 buckets as inclusive upper bounds, p50/p99."""
    root = fake_host(tmp_path, [ev_line()], loaded=True)
    latency = os.path.join(root, 'sys/kernel', MOD, 'probes/disk_full/latency')
    with open(latency, 'w') as f:
        f.write('100 5000000000\n12 90\n28 9\n30 1\n')
    lat = run_facts(tmp_path, root)['probes']['disk_full']['latency']
    assert lat == {'count': 100, 'sum_ns': 5000000000, 'buckets': [[4095, 90], [268435455, 9], [1073741823, 1]],
                   'p50_ns': 4095, 'p99_ns': 268435455}
    with open(latency, 'w') as f:
        f.write('')
    assert run_facts(tmp_path, root)['probes']['disk_full']['latency'] is None  # not timed
