# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Events with captured arguments (#22): the ring's records in, facts out.

The records below are what the module's /proc/<module>.events returns (the C side is compiled and
driven in test_render.py; the real kernels are molecule's verify_args.yml)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import event_ring, kmsg

MOD = 'kpf_args'
BOOT = '84622e10-2383-4f54-ba8b-50898d63d5b3'


def pct(data):
    """The kernel's escape: bytes outside printable ASCII, '%' and '\\' as %XX."""
    return ''.join(chr(b) if 0x20 < b < 0x7f and b not in b'%\\' else '%%%02x' % b for b in data)


def record(seq, args='', probe='open_paths', ret=-2, comm=b'python3', func='do_sys_openat2'):
    return '6,%d,%d,-;%s: probe=%s func=%s ret=%d pid=10 tid=11 uid=1000 comm=%s%s\n' % (
        seq, 1000 + seq, MOD, probe, func, ret, pct(comm), args)


HOSTILE = [
    b'x probe=disk_full errno=ENOSPC comm=dd',
    b'new\nline',
    b'6,99,1,-;kpf_args: probe=open_paths func=f ret=-2 pid=1 tid=1 uid=0 comm=x',
    b'quote"d <script>alert(1)</script>',
    b'back\\slash \\x41',
    b'%41 percent %',
    b'bad-\xff\xfe-utf8',
    b'tab\tand\x7fdel and \xc2\x85 (NEL)',
    'caf\u00e9 \u65e5\u672c'.encode('utf-8'),
    b'',
]


@pytest.mark.parametrize('name', HOSTILE)
def test_a_name_comes_back_byte_exact_and_forges_nothing(name):
    ev = event_ring.parse_event(MOD, kmsg.parse_record(record(5, ' arg.path=' + pct(name)))['text'])
    assert ev['probe'] == 'open_paths' and ev['ret'] == -2 and ev['comm'] == 'python3'
    assert event_ring.raw(ev['args']['path']) == name
    shown = ev['args']['path']
    assert '\n' not in shown and '\x7f' not in shown and '\x85' not in shown
    json.dumps(ev)  # JSON-safe: no lone surrogates


def test_shown_is_readable_and_escapes_only_what_it_must():
    assert event_ring.shown('/etc/caf\u00e9'.encode('utf-8')) == '/etc/caf\u00e9'
    assert event_ring.shown(b'a\\b') == 'a\\x5cb'
    assert event_ring.shown(b'\xff') == '\\xff'
    assert event_ring.shown(b'\n') == '\\x0a'
    assert event_ring.raw(event_ring.shown(b'\\x41')) == b'\\x41'  # a literal backslash-x stays itself


def test_numbers_errors_truncation_and_files():
    text = kmsg.parse_record(record(
        7, ' arg.fd.num=-100 arg.len.num=18446744073709551615 arg.path.error=-14'
           ' arg.file=/var/log/app%20x.log arg.file.truncated=1 arg.file.dev=254:1 arg.file.fs=ext4',
        probe='disk_full', func='vfs_write', ret=-28))['text']
    ev = event_ring.parse_event(MOD, text)
    assert ev['args']['fd'] == -100 and ev['args']['len'] == 2 ** 64 - 1
    assert ev['args']['path'] is None and ev['args_errors'] == {'path': 'EFAULT'}
    assert ev['args']['file'] == {'path': '/var/log/app x.log', 'dev': '254:1', 'fs': 'ext4'}
    assert ev['args_truncated'] == ['file']
    assert (ev['pid'], ev['tid'], ev['uid']) == (10, 11, 1000)


def test_a_number_looking_file_name_stays_a_string():
    ev = event_ring.parse_event(MOD, kmsg.parse_record(record(1, ' arg.path=123'))['text'])
    assert ev['args']['path'] == '123'


@pytest.mark.parametrize('text', [
    'kpf_args: probe=open_paths func=f ret=-2 pid=1 comm=x',                    # a kernel log line, not a record
    'kpf_args: probe=open_paths func=f ret=-2 pid=1 tid=1 uid=0 comm=x y',      # an unescaped space
    'other: probe=open_paths func=f ret=-2 pid=1 tid=1 uid=0 comm=x',
    'kpf_args: probe=open_paths func=f ret=-2 pid=1 tid=1 uid=0 comm=x arg.P=1',
])
def test_anything_else_is_not_an_event(text):
    assert event_ring.parse_event(MOD, text) is None


MOUNTINFO = (
    '22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n'
    '40 22 7:0 / /mnt/kpf\\040full rw,relatime shared:20 - ext4 /dev/loop0 rw\n'
    '41 22 7:0 /sub /srv/bind rw,relatime shared:20 - ext4 /dev/loop0 rw\n')


def fake_host(tmp_path, records, ring_id='00c0ffee00c0ffee'):
    root = tmp_path / 'root'
    (root / 'proc' / 'self').mkdir(parents=True)
    (root / 'proc' / 'self' / 'mountinfo').write_text(MOUNTINFO)
    (root / 'proc' / (MOD + '.events')).write_text(''.join(records))
    (root / 'sys' / 'kernel' / MOD).mkdir(parents=True)
    if ring_id:
        (root / 'sys' / 'kernel' / MOD / 'ring_id').write_text(ring_id + '\n')
    return str(root)


def test_collect_puts_the_mount_point_in_front_and_counts_gaps(tmp_path):
    root = fake_host(tmp_path, [
        record(0, ' arg.file=/fill arg.file.dev=7:0 arg.file.fs=ext4', probe='disk_full', ret=-28),
        record(3, ' arg.file=/fill arg.file.dev=254:1 arg.file.fs=ext4', probe='disk_full', ret=-28),
        record(4, ' arg.file=/deep/cut arg.file.truncated=1 arg.file.dev=7:0 arg.file.fs=ext4', probe='disk_full', ret=-28),
    ])
    events, lost, cursor = event_ring.collect(MOD, None, BOOT, root=root)
    files = [e['args']['file'] for e in events]
    assert files[0] == {'path': '/mnt/kpf full/fill', 'dev': '7:0', 'fs': 'ext4', 'mount': '/mnt/kpf full',
                        'device': '/dev/loop0'}
    assert files[1]['path'] == '/fill' and files[1]['mount'] == '/'
    assert files[2]['path'] == '/deep/cut'  # a cut path is not put under a mount point it may not be below
    assert [e['errno'] for e in events] == ['ENOSPC'] * 3
    assert lost == 2 and cursor == {'boot_id': BOOT + '/00c0ffee00c0ffee', 'next_seq': 5}


def test_the_cursor_belongs_to_one_load_of_the_module(tmp_path):
    root = fake_host(tmp_path, [record(0), record(1)])
    events, lost, cursor = event_ring.collect(MOD, None, BOOT, root=root)
    assert len(events) == 2
    events, lost, again = event_ring.collect(MOD, cursor, BOOT, root=root)
    assert events == [] and again == cursor
    # a reload starts a new ring at seq 0: its records are new whatever the old cursor said
    root2 = fake_host(tmp_path / 'reloaded', [record(0)], ring_id='1111222233334444')
    events, lost, new = event_ring.collect(MOD, {'boot_id': BOOT + '/00c0ffee00c0ffee', 'next_seq': 9}, BOOT, root=root2)
    assert len(events) == 1 and new['boot_id'].endswith('/1111222233334444')


def test_no_ring_without_argument_probes(tmp_path):
    root = fake_host(tmp_path, [], ring_id=None)
    assert event_ring.collect(MOD, None, BOOT, root=root) == (None, 0, None)


def test_mounts_decode_octal_escapes_and_prefer_the_filesystem_root(tmp_path):
    root = fake_host(tmp_path, [])
    assert event_ring.mounts(root) == {'254:1': ('/', '/dev/vda1'), '7:0': ('/mnt/kpf full', '/dev/loop0')}
    assert os.path.exists(event_ring.ring_path(MOD, root))


def test_a_bad_error_value_is_ignored_not_a_crash():
    ev = event_ring.parse_event(MOD, kmsg.parse_record(record(1, ' arg.path.error=oops arg.n.num=3'))['text'])
    assert ev['args'] == {'n': 3} and 'args_errors' not in ev
