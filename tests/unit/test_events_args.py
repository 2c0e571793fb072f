# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Events with captured arguments on the event path (#22): the forwarder reads the module's ring
/proc/<module>.events (RingSource, a cursor of its own), an event carries args, tid, uid,
args_truncated and args_errors, and the event sources (spool, webhook) check every one of them and
pass hostile names on byte for byte, never as something Ansible would render. Loopback only: the ring
is a file under a fake root (test_event_ring.fake_host), the webhook listens on 127.0.0.1."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.kprobes.fleet.plugins.module_utils import event_ring, events, host_state

import test_events
import test_events_trust
from test_event_ring import BOOT, HOSTILE, MOD, fake_host, pct, record
# the fixture of an HTTP receiver on 127.0.0.1
from test_events import receiver  # noqa: F401  # pylint: disable=unused-import

pe = test_events_trust.pe
REPO = test_events_trust.REPO
RID = '00c0ffee00c0ffee'


def file_record(seq, path='/fill', dev='7:0', fs='ext4', extra=''):
    return record(seq, ' arg.file=%s arg.file.dev=%s arg.file.fs=%s%s' % (path, dev, fs, extra),
                  probe='disk_full', func='vfs_write', ret=-28)


def write_ring(root, records, ring_id=None):
    with open(os.path.join(root, 'proc', MOD + '.events'), 'w') as f:
        f.write(''.join(records))
    if ring_id:
        with open(os.path.join(root, 'sys', 'kernel', MOD, 'ring_id'), 'w') as f:
            f.write(ring_id + '\n')


def args_fact(**kw):
    fact = {'probe': 'disk_full', 'function': 'vfs_write', 'ret': -28, 'errno': 'ENOSPC', 'pid': 10, 'tid': 11,
            'uid': 1000, 'comm': 'dd', 'ts': 1.5, 'seq': 3,
            'args': {'file': {'path': '/mnt/data/fill', 'fs': 'ext4', 'dev': '7:0', 'mount': '/mnt/data',
                              'device': '/dev/loop0'}, 'count': 65536}}
    fact.update(kw)
    return fact


def args_event(**kw):
    return dict(events.event_of('h1', 'b-1', args_fact(), 'disk_full:ENOSPC:1.500000'), **kw)


# -- the forwarder's source: the ring --------------------------------------------------------------------------
def test_ring_source_begins_after_the_newest_record_then_reads_what_comes(tmp_path):
    root = fake_host(tmp_path, [file_record(0), file_record(1)])
    src = events.RingSource(MOD, BOOT, None, root)
    assert src.cursor == {'boot_id': '%s/%s' % (BOOT, RID), 'next_seq': 2}  # the first start: the rest is the collector's
    assert src.read() == ([], 0)
    write_ring(root, [file_record(i) for i in range(4)])
    got, lost = src.read()
    assert [e['seq'] for e in got] == [2, 3] and lost == 0
    assert got[0]['args']['file'] == {'path': '/mnt/kpf full/fill', 'dev': '7:0', 'fs': 'ext4',
                                      'mount': '/mnt/kpf full', 'device': '/dev/loop0'}
    assert (got[0]['tid'], got[0]['uid'], got[0]['errno']) == (11, 1000, 'ENOSPC')
    write_ring(root, [file_record(i) for i in (2, 3, 6)])  # 4 and 5 were overwritten before this look
    got, lost = src.read()
    assert [e['seq'] for e in got] == [6] and lost == 2 and src.cursor['next_seq'] == 7
    assert src.read() == ([], 0)


def test_ring_source_resumes_at_its_cursor_on_the_same_ring_only(tmp_path):
    root = fake_host(tmp_path, [file_record(i) for i in range(3)])
    mine = {'boot_id': '%s/%s' % (BOOT, RID), 'next_seq': 1}
    assert [e['seq'] for e in events.RingSource(MOD, BOOT, mine, root).read()[0]] == [1, 2]
    for stale in ({'boot_id': 'other-boot/%s' % RID, 'next_seq': 1},   # another boot
                  {'boot_id': '%s/1111222233334444' % BOOT, 'next_seq': 1},  # a reload while it was stopped
                  {'boot_id': '%s/%s' % (BOOT, RID), 'next_seq': 'x'}, {'boot_id': 5}, 'junk', [], None):
        src = events.RingSource(MOD, BOOT, stale, root)
        assert src.cursor['next_seq'] == 3 and src.read() == ([], 0), stale


def test_ring_source_starts_over_on_a_ring_made_while_it_runs(tmp_path):
    root = fake_host(tmp_path, [file_record(0), file_record(1)])
    src = events.RingSource(MOD, BOOT, None, root)
    write_ring(root, [file_record(0, path='/new')], ring_id='1111222233334444')  # the module was reloaded
    got, lost = src.read()
    assert [(e['seq'], e['args']['file']['path']) for e in got] == [(0, '/mnt/kpf full/new')] and lost == 0
    assert src.cursor == {'boot_id': '%s/1111222233334444' % BOOT, 'next_seq': 1}
    write_ring(root, [file_record(3)], ring_id='5555666677778888')  # reloaded again; 0..2 already overwritten
    got, lost = src.read()
    assert [e['seq'] for e in got] == [3] and lost == 3


def test_ring_source_yields_nothing_without_a_ring_and_reads_one_that_appears(tmp_path):
    root = fake_host(tmp_path, [], ring_id=None)
    src = events.RingSource(MOD, BOOT, None, root)
    assert src.read() == ([], 0) and src.cursor is None
    write_ring(root, [file_record(2), file_record(3)], ring_id=RID)  # the module with args loaded after the start
    got, lost = src.read()
    assert [e['seq'] for e in got] == [2, 3] and lost == 2  # 0 and 1 overwritten before the first look
    os.unlink(event_ring.ring_path(MOD, root))  # unloaded: nothing, the cursor is kept
    assert src.read() == ([], 0) and src.cursor['next_seq'] == 4


# -- the event ------------------------------------------------------------------------------------------------
def test_an_event_of_a_probe_with_args_carries_them():
    e = events.event_of('h1', 'b-1', args_fact(args_truncated=['file'], args_errors={'count': 'EFAULT'}), 'burst')
    assert set(e) == set(events.EVENT_KEYS) | set(events.ARGS_KEYS)
    assert e['args'] == args_fact()['args'] and (e['tid'], e['uid']) == (11, 1000)
    assert e['args_truncated'] == ['file'] and e['args_errors'] == {'count': 'EFAULT'}
    assert json.loads(json.dumps(e)) == e
    plain = events.event_of('h1', 'b', {k: v for k, v in args_fact().items() if k not in ('args', 'tid', 'uid')}, 'x')
    assert set(plain) == set(events.EVENT_KEYS)  # a match without args: the event as before


def test_the_event_never_holds_what_the_source_refuses(tmp_path):
    """A mount point from mountinfo may hold any byte (a FUSE mount, a newline): event_ring shows it with
    the documented escape, backslash included; a value the source would refuse would cost the whole
    batch: it is escaped, cut and marked instead."""
    root = fake_host(tmp_path, [file_record(0, dev='7:0'), file_record(1, dev='7:1')])
    with open(os.path.join(root, 'proc/self/mountinfo'), 'a') as f:
        f.write('50 22 7:1 / /home/u/a\\012b\\011c\\134d rw - fuse.x sshfs\\012x rw\n')
    got, dummy, dummy = event_ring.collect(MOD, {'boot_id': '%s/%s' % (BOOT, RID), 'next_seq': 1}, BOOT, root=root)
    e = events.event_of('h1', 'b-1', got[0], 'x')
    assert e['args']['file']['mount'] == '/home/u/a\\x0ab\\x09c\\x5cd' and e['args']['file']['device'] == 'sshfs\\x0ax'
    assert event_ring.raw(e['args']['file']['mount']) == b'/home/u/a\nb\tc\\d'
    checked = pe.check_event(json.loads(json.dumps(e)))
    assert checked['args']['file']['path'] == '/home/u/a\\x0ab\\x09c\\x5cd/fill'
    long_fact = args_fact(args={'name': 'x' * 2000, 'file': {'path': '/' + '\\xff' * 1400, 'fs': 'ext4', 'dev': '1:2'},
                                'num': 5}, args_errors={'name': '-1234', 'num': 'ENOSPC'})
    e = events.event_of('h1', 'b-1', long_fact, 'x')
    assert len(e['args']['name']) == events.ARGS_TEXT_MAX and e['args_truncated'] == ['file', 'name']
    assert e['args']['file']['path'].endswith('\\xff') and len(e['args']['file']['path']) <= events.ARGS_PATH_MAX
    assert e['args_errors'] == {'name': 'E1234', 'num': 'ENOSPC'}
    assert pe.check_event(json.loads(json.dumps(e)))['args_truncated'] == ['file', 'name']


def test_the_limits_are_the_same_on_both_sides():
    assert events.ARGS_KEYS == pe.ARGS_KEYS and events.EVENT_KEYS == pe.EVENT_KEYS
    assert events.WHOSE_KEYS == pe.WHOSE_KEYS
    for name in ('ARGS_TEXT_MAX', 'ARGS_FS_MAX', 'ARGS_MOUNT_MAX', 'ARGS_PATH_MAX', 'CGROUP_TEXT_MAX'):
        assert getattr(events, name) == getattr(pe, name), name


# -- the event sources' check ----------------------------------------------------------------------------------------
def test_an_args_event_passes_with_every_value_checked():
    e = args_event(args={'file': {'path': None, 'fs': 'ext4', 'dev': '4294967295:0'}, 'n': -2 ** 63,
                         's': 'caf\u00e9 \\x0a', 'gone': None},
                   args_truncated=['s'], args_errors={'gone': 'EFAULT'}, tid=0, uid=2 ** 32 - 1)
    got = pe.check_event(e)
    assert got == e
    assert pe.check_event(args_event()) == args_event()
    assert pe.check_event(args_event(args={})) == args_event(args={})
    assert pe.check_event(args_event(args={'u': 2 ** 64 - 1}))['args'] == {'u': 2 ** 64 - 1}
    assert set(test_events.ev(1)) == set(pe.check_event(test_events.ev(1)))  # no args: no new keys


@pytest.mark.parametrize('change, words', [
    ({'argz': {}}, 'unknown: argz'),
    ({'args': {'a': 1, 'b': 2, 'c': 3, 'd': 4, 'e': 5}}, 'at most 4 argument names, got 5 names'),
    ({'args': [1]}, 'args must be a mapping'),
    ({'args': {'Path': 'x'}}, 'an argument name must be a name'),
    ({'args': {'a b': 'x'}}, 'an argument name must be a name'),
    ({'args': {'x' * 17: 'x'}}, 'an argument name must be a name'),
    ({'args': {'p': 'new\nline'}}, 'args.p holds the control character U+000A'),
    ({'args': {'p': 'esc\x1b[31m'}}, 'args.p holds the control character U+001B'),
    ({'args': {'p': 'nel\x85'}}, 'args.p holds the control character U+0085'),
    ({'args': {'p': 'lone\udcff'}}, 'args.p holds the lone surrogate U+DCFF'),
    ({'args': {'p': 'x' * 1101}}, 'args.p must be a string of at most 1100 characters, got a longer string'),
    ({'args': {'p': True}}, 'args.p must be a number, a string, null or a file'),
    ({'args': {'p': 1.5}}, 'args.p must be a number, a string, null or a file'),
    ({'args': {'p': ['x']}}, 'args.p must be a number, a string, null or a file'),
    ({'args': {'p': 2 ** 64}}, 'args.p must be an integer from'),
    ({'args': {'p': -2 ** 63 - 1}}, 'args.p must be an integer from'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4', 'dev': '7:0', 'owner': 'me'}}}, 'a file has the keys path, fs and dev'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4'}}}, 'a file has the keys path, fs and dev'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4', 'dev': '7:0', 'a\nb': 1}}}, 'and device; got "a\\nb", "dev", "fs", "path"'),
    ({'args': {'f': {}}}, 'args.f: a file has the keys path, fs and dev, and may have mount and device; got none'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4', 'dev': '7'}}}, 'args.f.dev must be a device number'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4', 'dev': '7:0;id'}}}, 'args.f.dev must be a device number'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4', 'dev': 70}}}, 'args.f.dev must be a device number'),
    ({'args': {'f': {'path': '/x', 'fs': 'e' * 131, 'dev': '7:0'}}}, 'args.f.fs must be a string of at most 130'),
    ({'args': {'f': {'path': '/x', 'fs': None, 'dev': '7:0'}}}, 'args.f.fs must be a string'),
    ({'args': {'f': {'path': '/x' * 2599, 'fs': 'ext4', 'dev': '7:0'}}}, 'args.f.path must be a string of at most 5196'),
    ({'args': {'f': {'path': 5, 'fs': 'ext4', 'dev': '7:0'}}}, 'args.f.path must be a string of at most 5196 characters or null'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4', 'dev': '7:0', 'mount': 'm' * 4097}}}, 'args.f.mount must be a string'),
    ({'args': {'f': {'path': '/x', 'fs': 'ext4', 'dev': '7:0', 'device': '/dev/\x00'}}}, 'args.f.device holds the control'),
    ({'args_truncated': ['nope']}, 'args_truncated must be a list of names of args'),
    ({'args_truncated': 'file'}, 'args_truncated must be a list of names of args'),
    ({'args_truncated': ['file', 'file']}, 'args_truncated must be a list of names of args'),
    ({'args_truncated': []}, 'args_truncated must be a list of names of args'),
    ({'args_errors': {'file': 'EFAULT;rm'}}, 'args_errors.file must be an errno name'),
    ({'args_errors': {'file': -14}}, 'args_errors.file must be an errno name'),
    ({'args_errors': {'nope': 'EFAULT'}}, 'args_errors must be a mapping of names of args'),
    ({'args_errors': ['EFAULT']}, 'args_errors must be a mapping of names of args'),
    ({'tid': -1}, 'tid must be an integer from 0 to 4294967295'),
    ({'uid': 2 ** 32}, 'uid must be an integer from 0 to 4294967295'),
    ({'uid': '0'}, 'uid must be an integer'),
    ({'tid': None}, 'tid must be an integer'),
])
def test_a_bad_args_event_is_refused_with_one_sentence(change, words):
    e = args_event(**change)
    with pytest.raises(pe.BadEvent) as err:
        pe.check_event(e)
    assert words in str(err.value) and '\n' not in str(err.value), str(err.value)


@pytest.mark.parametrize('drop', ['tid', 'uid'])
def test_an_args_event_has_args_tid_and_uid_together(drop):
    e = args_event()
    del e[drop]
    with pytest.raises(pe.BadEvent) as err:
        pe.check_event(e)
    assert 'must have args, tid and uid' in str(err.value)


def test_tid_and_uid_come_without_args_too():
    e = args_event()
    del e['args']
    assert pe.check_event(e) == e  # #23: every module event says whose


def test_whose_fields_pass_the_forwarder_and_the_sources_inert():
    """#23: cgroup and unit from a fact (kmsg.whose: shown() text) -> event_of -> JSON -> check_event; a hostile
    unit name cannot become a template or a control character, a long one is cut to what the source takes."""
    fact = dict(test_events.ev(1), tid=812, uid=1000, cgroup='/user.slice/{{ lookup(\'pipe\', \'id\') }}.service',
                unit='{{ lookup(\'pipe\', \'id\') }}.service')
    e = events.event_of('h1', 'boot-1', fact, 'b')
    assert (e['tid'], e['uid'], e['unit']) == (812, 1000, fact['unit'])
    checked = pe.check_event(json.loads(json.dumps(e)))
    assert checked['unit'] == "\\x7b\\x7b lookup('pipe', 'id') }}.service" and '{' not in checked['cgroup']
    assert event_ring.raw(checked['unit']) == fact['unit'].encode()
    plain = events.event_of('h1', 'boot-1', dict(test_events.ev(1), tid=None, uid=None, cgroup=None, unit=None), 'b')
    assert set(plain) == set(events.EVENT_KEYS)  # an old line or tracefs: nothing unknown is sent
    long = events.event_of('h1', 'boot-1', dict(fact, cgroup='/' + '\x01' * 600), 'b')
    assert len(long['cgroup']) <= events.CGROUP_TEXT_MAX and pe.check_event(json.loads(json.dumps(long)))
    for bad in ('/a\nb', 'x' * (pe.CGROUP_TEXT_MAX + 1), 7):
        with pytest.raises(pe.BadEvent):
            pe.check_event(dict(json.loads(json.dumps(e)), cgroup=bad))
    assert pe.check_event(dict(json.loads(json.dumps(e)), unit=None))['unit'] is None


def test_the_keys_message_names_the_optional_keys():
    with pytest.raises(pe.BadEvent) as err:
        pe.check_event(args_event(meta={'hosts': 'all'}))
    assert str(err.value) == ('an event has exactly the keys host, probe, function, ret, errno, pid, comm, ts, boot_id, seq, '
                              'burst, and may have args, args_truncated, args_errors, tid, uid, lat_ns, cgroup, unit; unknown: meta')


TEMPLATES = [b"{{ lookup('pipe', 'id') }}", b'{% if true %}x{% endif %}', b'{# c #}',
             b"#jinja2:variable_start_string:'[[' [[ 7*7 ]]", b'a{b}', b'\\x7b\\x7b 7*7 }}']


@pytest.mark.parametrize('name', HOSTILE + TEMPLATES)
def test_a_hostile_name_goes_from_the_ring_to_the_rulebook_byte_for_byte(tmp_path, name):
    """Ring record (the kernel's %XX) -> RingSource -> event_of -> JSON -> check_event: the same bytes
    (event_ring.raw), one field, no control character, nothing Ansible would render as a template."""
    root = fake_host(tmp_path, [])
    src = events.RingSource(MOD, BOOT, None, root)
    write_ring(root, [record(0, ' arg.path=' + pct(name), comm=name[:15]),
                      file_record(1, path=pct(b'/' + name), extra=' arg.n.num=-5')])
    got, lost = src.read()
    assert lost == 0 and [e['seq'] for e in got] == [0, 1]
    sent = [events.event_of('h1', 'b-1', fact, events.Bursts(60).name(fact)) for fact in got]
    body = test_events_trust.batch('h1', sent)  # as HttpSender posts it
    g, dummy = test_events_trust.gate()
    out = g.receive(test_events_trust.bearer('h1'), body)
    path, file_ = out[0]['args']['path'], out[1]['args']['file']
    assert event_ring.raw(path) == name and event_ring.raw(file_['path']) == b'/mnt/kpf full' + (b'/' + name if name else b'')
    assert out[1]['args']['n'] == -5 and (out[0]['probe'], out[0]['ret'], out[0]['pid']) == ('open_paths', -2, 10)
    for text in (path, file_['path'], out[0]['comm']):
        assert '{' not in text and not text.startswith('#')
        assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in text)
    assert set(out[0]) == set(pe.EVENT_KEYS) | {'args', 'tid', 'uid', 'meta'}


def test_shown_text_without_template_characters_passes_unchanged():
    for name in HOSTILE:
        text = event_ring.shown(name)
        if '{' not in text and not text.startswith('#'):
            assert pe.check_event(args_event(args={'p': text}))['args']['p'] == text


def test_the_spool_passes_args_events_on(tmp_path):
    spool = tmp_path / 'x.events.jsonl'
    lines = [args_event(seq=1), args_event(seq=2, args={'p': 'a\nb'}), args_event(seq=3, args={'p': '{{ x }}'})]
    spool.write_text(''.join(json.dumps(e) + '\n' for e in lines))
    reader = pe.SpoolReader(str(spool), from_start=True)
    got = reader.read()
    reader.close()
    assert [(e['seq'], e['args']) for e in got] == [(1, args_event()['args']), (3, {'p': '\\x7b\\x7b x }}'})]
    assert reader.skipped == 1


# -- the runner ---------------------------------------------------------------------------------------------------------
def test_runner_forwards_args_events_and_keeps_the_ring_cursor(tmp_path, receiver):
    r = receiver()
    root, state = test_events.fake_host(tmp_path, r.url, batch_wait_ms=0)
    os.rename(os.path.join(state, '%s.events.json' % test_events.NAME), os.path.join(state, '%s.events.json' % MOD))
    ring_root = fake_host(tmp_path / 'ring', [file_record(0)])
    for rel in ('proc/%s.events' % MOD, 'proc/self/mountinfo', 'sys/kernel/%s/ring_id' % MOD):
        os.makedirs(os.path.dirname(str(root / rel)), exist_ok=True)
        os.replace(os.path.join(ring_root, rel), str(root / rel))
    run = events.Runner(MOD, test_events.STATE_DIR, root=str(root))
    assert run.ring.cursor == {'boot_id': 'boot-1/%s' % RID, 'next_seq': 1}
    write_ring(str(root), [file_record(i) for i in (0, 1, 3)])
    facts, lost = run.ring.read()
    run.take(facts, lost, 0.0)
    run.forwarder.pump(0.0)
    run.save()
    sent = r.bodies[0]['events']
    assert [(e['seq'], e['args']['file']['path'], e['uid']) for e in sent] == [(1, '/mnt/kpf full/fill', 1000),
                                                                               (3, '/mnt/kpf full/fill', 1000)]
    status = events.read_status(state, MOD)
    assert status['lost'] == 1 and status['sent'] == 2
    with open(host_state.state_file(state, MOD, 'events-cursor')) as f:
        assert json.load(f)['ring'] == {'boot_id': 'boot-1/%s' % RID, 'next_seq': 4}
    run2 = events.Runner(MOD, test_events.STATE_DIR, root=str(root))  # a restart: nothing twice
    assert run2.ring.read() == ([], 0)


# -- the report playbook: the args as the source passed them, never rendered --------------------------------------------------
def test_the_report_shows_args_and_renders_none_of_them(tmp_path):
    """ansible-rulebook hands the event to the playbook as extra vars (env/extravars, yaml.dump), which
    ansible-core renders: the event the source passes on must come out as text. Runs ansible-playbook with
    the report's own event expression against localhost (connection local)."""
    binary = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    if not os.path.exists(binary):
        pytest.skip('ansible-playbook is not installed')
    marker = tmp_path / 'PWNED'
    hostile = "{{ lookup('pipe', 'touch %s') }}" % marker
    checked = pe.check_event(args_event(args={'path': hostile, 'n': 7}, comm='{{7*7}}'))
    with open(os.path.join(REPO, 'playbooks', 'disk_full_report.yml')) as f:
        real = yaml.safe_load(f)[0]
    play = [{'name': 'report', 'hosts': 'all', 'gather_facts': False, 'vars': real['vars'],
             'tasks': [{'ansible.builtin.copy': {'content': "{{ {'event': __kprobes_fleet_event} | to_json }}",
                                                 'dest': str(tmp_path / 'report.json'), 'mode': '0600'}},
                       {'ansible.builtin.debug': {'msg': '{{ unchecked }}'}}]}]
    (tmp_path / 'play.yml').write_text(yaml.safe_dump(play))
    control = "{{ lookup('pipe', 'touch %s.control') }}" % marker  # what an unchecked string would do
    (tmp_path / 'extravars').write_text(yaml.dump({'ansible_eda': {'event': checked}, 'unchecked': control,
                                                   'ansible_python_interpreter': sys.executable}))
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'), HOME=str(tmp_path))
    res = subprocess.run([binary, '-i', 'localhost,', '-c', 'local', '-e', '@%s' % (tmp_path / 'extravars'),
                          str(tmp_path / 'play.yml')], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    shown = json.loads((tmp_path / 'report.json').read_text())['event']
    assert shown['args'] == {'path': "\\x7b\\x7b lookup('pipe', 'touch %s') }}" % marker, 'n': 7}
    assert shown['comm'] == '??7*7}}' and event_ring.raw(shown['args']['path']).decode() == hostile
    assert not marker.exists()
    assert os.path.exists(str(marker) + '.control')  # the danger is real: ansible-core renders extra vars


def test_latency_of_a_timed_call_is_forwarded_and_checked():
    fact = {'probe': 'slow_sleeps', 'function': 'hrtimer_nanosleep', 'ret': 0, 'errno': None, 'pid': 5,
            'comm': 'sleep', 'ts': 1.5, 'seq': 3, 'lat_ns': 200000123}
    event = events.event_of('web-1', 'boot-1', fact, 'b1')
    assert event['lat_ns'] == 200000123
    assert pe.check_event(event)['lat_ns'] == 200000123
    for bad in (-1, 'fast', True, 2 ** 63):
        with pytest.raises(pe.BadEvent, match='lat_ns must be an integer'):
            pe.check_event(dict(event, lat_ns=bad))
    assert 'lat_ns' not in events.event_of('web-1', 'boot-1', dict(fact, lat_ns=None), 'b1')
