# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe matches as events (#13): the forwarder's settings, queue, batches, rate, retries and drops
(on a clock the tests move, nothing sleeps), its sources (kmsg, tracefs), its HTTP delivery, the
event_forwarder module that installs it, and the event source plugin kprobes.fleet.spool.
The real loop on a real kernel is tests/vm/test_events.py."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import events, host_state, names, persist
from ansible_collections.kprobes.fleet.plugins.modules import event_forwarder
from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings

from test_probe_module import FakeModule, Failed
import test_tracefs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = 'kprobes_fleet'
STATE_DIR = '/var/lib/kprobes-fleet/state'
URL = 'http://127.0.0.1:5000/kprobes-fleet'


def cfg(**kw):
    return events.check_config(dict({'url': URL}, **kw))


def ev(seq, **kw):
    return dict({'host': 'h1', 'probe': 'disk_full', 'function': 'vfs_write', 'ret': -28, 'errno': 'ENOSPC',
                 'pid': 7, 'comm': 'dd', 'ts': 1.0 + seq, 'boot_id': 'b', 'seq': seq, 'burst': 'x'}, **kw)


# -- settings ----------------------------------------------------------------------------------------------
def test_settings_default_and_normalise():
    got = events.check_config({'url': URL, 'rate': '7', 'spool': 'yes'})
    assert got['rate'] == 7 and got['spool'] is True and got['batch_size'] == 100 and got['token'] == ''
    assert set(got) == set(events.KEYS)
    assert events.check_config(None) == events.check_config('') == events.check_config({}) == {}
    for url in ('https://eda.example.invalid/hook', 'http://localhost:5000/', 'http://[::1]:5000/x', 'http://127.0.0.2/x'):
        assert events.check_config({'url': url})['url'] == url


@pytest.mark.parametrize('value, words', [
    ({'url': 'ftp://127.0.0.1/x'}, 'scheme must be http or https'),
    ({'url': 'file:///etc/passwd'}, 'scheme must be http or https'),
    ({'url': 'http://eda.example.invalid:5000/x'}, 'plain http only to the host\'s own loopback'),
    ({'url': 'http://user:pw@127.0.0.1/x'}, 'no user or password'),
    ({'url': 'http://127.0.0.1/x;reboot'}, 'holds a character'),
    ({'url': 'http://127.0.0.1/$(id)'}, 'holds a character'),
    ({'url': 'http://127.0.0.1/{{ lookup("pipe", "id") }}'}, 'holds a character'),
    ({'url': 'http://127.0.0.1/x\nHost: evil'}, 'holds a character'),
    ({'url': 'http://127.0.0.1:99999/x'}, 'port'),
    ({'url': 'http:///x'}, 'no valid host name'),
    ({'url': ''}, 'must be the endpoint URL'),
    ({'token': 'abc'}, 'must be the endpoint URL'),
    ({'url': URL, 'rate': -1}, 'rate: must be between 1 and 100'),
    ({'url': URL, 'queue_size': 10 ** 9}, 'queue_size: must be between 1 and 1000000'),
    ({'url': URL, 'batch_size': 'lots'}, 'batch_size: must be an integer'),
    ({'url': URL, 'retry_max_s': 0}, 'retry_max_s: must be between 1'),
    ({'url': URL, 'spool': 'maybe'}, 'spool: must be a boolean'),
    ({'url': URL, 'token': 'a b'}, 'token: must be a bearer token'),
    ({'url': URL, 'token': '$(id)'}, 'token: must be a bearer token'),
    ({'url': URL, 'command': 'x'}, 'unknown key(s) command'),
    ('http://127.0.0.1/x', 'must be a mapping'),
])
def test_bad_settings_are_refused_with_the_field_named(value, words):
    with pytest.raises(names.InvalidValue) as e:
        events.check_config(value)
    assert words in str(e.value) and str(e.value).startswith('kprobes_fleet_events')


def test_the_variable_is_checked_with_every_other():
    values, errors, dummy = settings.check({'kprobes_fleet_events': {'url': 'http://eda.example.invalid/x'}}, 'h1', ['h1'],
                                           check_probes=False)
    assert len(errors) == 1 and 'kprobes_fleet_events.url' in errors[0]
    values, errors, dummy = settings.check({}, 'h1', ['h1'], check_probes=False)
    assert errors == [] and values['kprobes_fleet_events'] == {}


def test_host_names():
    assert events.check_host('bookworm-1') == 'bookworm-1'
    for bad in ('', 'a b', '$(id)', None, 'x;y'):
        with pytest.raises(names.InvalidValue):
            events.check_host(bad)


# -- the forwarder's queue ----------------------------------------------------------------------------------
class Endpoint(object):
    """A fake send(): records batches; fails while ``fail`` holds errors."""

    def __init__(self):
        self.batches = []
        self.fail = []

    def __call__(self, batch):
        if self.fail:
            raise self.fail.pop(0)
        self.batches.append([e['seq'] for e in batch])


def invariant(fw):
    s = fw.status()
    assert s['received'] == s['sent'] + s['dropped'] + s['queued'], s
    return s


def test_an_event_waits_for_others_at_most_batch_wait():
    end = Endpoint()
    fw = events.Forwarder(cfg(batch_wait_ms=200, batch_size=3), end)
    fw.offer([ev(1)], 10.0)
    assert fw.pump(10.1) == 0 and end.batches == []
    assert fw.ready_at(10.1) == pytest.approx(10.2)
    fw.offer([ev(2)], 10.15)
    assert fw.pump(10.2) == 1 and end.batches == [[1, 2]]
    fw.offer([ev(3), ev(4), ev(5)], 11.0)  # a full batch leaves at once
    assert fw.pump(11.0) == 1 and end.batches[-1] == [3, 4, 5]
    assert invariant(fw)['sent'] == 5


def test_a_flood_does_not_become_a_flood_of_requests():
    end = Endpoint()
    fw = events.Forwarder(cfg(batch_size=10, rate=2, queue_size=1000, batch_wait_ms=0), end)
    requests = 0
    for tick in range(100):  # 10 s, 100 events every 0.1 s: 10000 events
        now = tick / 10.0
        fw.offer([ev(tick * 100 + i) for i in range(100)], now)
        requests += fw.pump(now)
    assert requests <= 2 + 2 * 10  # the bucket's burst + rate x seconds
    s = invariant(fw)
    assert s['sent'] == 10 * requests and s['queued'] == 1000 and s['dropped'] == 10000 - 10 * requests - 1000
    assert s['dropped_why'] == {'queue full': s['dropped']}
    sent = [seq for batch in end.batches for seq in batch]
    assert len(sent) == len(set(sent))  # nothing twice


def test_a_full_queue_drops_the_newest_and_counts_them():
    fw = events.Forwarder(cfg(queue_size=3), Endpoint())
    fw.offer([ev(i) for i in range(5)], 0.0)
    s = invariant(fw)
    assert s['queued'] == 3 and s['dropped'] == 2 and [e['seq'] for dummy, e in fw.queue] == [0, 1, 2]


def test_retries_back_off_and_deliver_each_event_once():
    end = Endpoint()
    fw = events.Forwarder(cfg(batch_wait_ms=0, retry_max_s=2), end)
    end.fail = [events.SendError('down')] * 4
    fw.offer([ev(1), ev(2)], 0.0)
    now, tries = 0.0, []
    while end.fail:
        assert fw.pump(now) == 1
        tries.append(fw.next_try - now)
        now = fw.next_try
    assert tries == [0.5, 1.0, 2.0, 2.0]  # doubling, capped at retry_max_s
    assert fw.pump(now - 0.01) == 0  # not before its time
    assert fw.pump(now) == 1 and end.batches == [[1, 2]]
    s = invariant(fw)
    assert s['failures'] == 4 and s['sent'] == 2 and s['dropped'] == 0 and s['last_error'] == 'down'
    assert fw.backoff == 0


def test_a_refused_batch_is_dropped_and_counted_not_retried():
    end = Endpoint()
    fw = events.Forwarder(cfg(batch_wait_ms=0, batch_size=2), end)
    end.fail = [events.SendError('HTTP 401', permanent=True)]
    fw.offer([ev(1), ev(2), ev(3)], 0.0)
    fw.pump(0.0)
    s = invariant(fw)
    assert s['dropped_why'] == {'refused by the endpoint': 2} and end.batches == [[3]]


def test_what_is_left_at_a_stop_is_counted():
    end = Endpoint()
    fw = events.Forwarder(cfg(batch_size=2, batch_wait_ms=60000), end)
    fw.offer([ev(i) for i in range(3)], 0.0)
    assert fw.pump(0.0) == 1
    end.fail = [events.SendError('down')]
    fw.close(0.1)
    s = invariant(fw)
    assert s['queued'] == 0 and s['dropped_why'] == {'stopped before delivery': 1}


def test_bursts_are_named_after_their_first_match():
    b = events.Bursts(gap=2)
    names_ = [b.name({'probe': 'disk_full', 'errno': 'ENOSPC', 'ret': -28, 'ts': ts}) for ts in (10, 11, 12.5, 20, 20.1)]
    assert names_ == ['disk_full:ENOSPC:10.000000'] * 3 + ['disk_full:ENOSPC:20.000000'] * 2
    other = b.name({'probe': 'disk_full', 'errno': 'EDQUOT', 'ret': -122, 'ts': 20.2})
    assert other == 'disk_full:EDQUOT:20.200000'


def test_event_shape():
    fact = {'probe': 'disk_full', 'function': 'vfs_write', 'ret': -28, 'errno': 'ENOSPC', 'pid': 9, 'comm': 'd d',
            'ts': 3.5, 'ts_usec': 3500000, 'seq': 4}
    e = events.event_of('h1', 'boot', fact, 'burst')
    assert tuple(sorted(e)) == tuple(sorted(events.EVENT_KEYS))
    assert (e['host'], e['boot_id'], e['comm'], e['seq']) == ('h1', 'boot', 'd d', 4)


# -- sources -------------------------------------------------------------------------------------------------
def kmsg_line(seq, text, prio=6):
    return '%d,%d,%d,-;%s\n' % (prio, seq, seq * 1000, text)


def test_kmsg_source_starts_after_the_ring_and_reads_only_our_kernel_records(tmp_path):
    path = tmp_path / 'kmsg'
    path.write_text(kmsg_line(1, '%s: probe=disk_full func=vfs_write ret=-28 pid=1 comm=old' % NAME))
    src = events.KmsgSource(NAME, 'b', None, str(path))
    assert src.cursor == {'boot_id': 'b', 'next_seq': 2}
    with open(str(path), 'a') as f:
        f.write(kmsg_line(2, '%s: probe=disk_full func=vfs_write ret=-28 pid=5 comm=dd' % NAME))
        f.write(kmsg_line(3, '%s: probe=disk_full func=vfs_write ret=-28 pid=6 comm=forged' % NAME, prio=14))
        f.write(kmsg_line(5, 'other: noise'))
    got, lost = src.read()
    src.close()
    assert [(e['comm'], e['seq'], e['errno']) for e in got] == [('dd', 2, 'ENOSPC')]
    assert lost == 1 and src.cursor['next_seq'] == 6  # seq 4 was overwritten before it was read


def test_kmsg_source_resumes_at_its_cursor_within_a_boot(tmp_path):
    path = tmp_path / 'kmsg'
    path.write_text(''.join(kmsg_line(i, '%s: probe=p func=f ret=-2 pid=%d comm=c' % (NAME, i)) for i in range(1, 4)))
    src = events.KmsgSource(NAME, 'b', {'boot_id': 'b', 'next_seq': 2}, str(path))
    assert [e['seq'] for e in src.read()[0]] == [2, 3]
    src.close()
    src = events.KmsgSource(NAME, 'b2', {'boot_id': 'b', 'next_seq': 2}, str(path))  # another boot: at the end
    assert src.read()[0] == []
    src.close()


def test_trace_source_reads_new_matches_and_leaves_the_collectors_cursor(tmp_path):
    host = test_tracefs.Host(tmp_path)
    test_tracefs.deployed(host)
    k = host.kernel
    k.fire('disk_full', -28, comm='old', ts='5.000000')
    src = events.TraceSource(NAME, 'boot-1', STATE_DIR, None, root=host.root)
    assert src.read() == ([], 0)  # what was there before it started is the collector's
    k.fire('disk_full', -28, comm='dd', pid=9, ts='6.000000')
    k.fire('disk_full', -28, comm='dd', pid=9, ts='6.000000', cpu=0)
    got, lost = src.read()
    assert [(e['comm'], e['errno'], e['seq'], e['ts']) for e in got] == [('dd', 'ENOSPC', 0, 6.0), ('dd', 'ENOSPC', 1, 6.0)]
    assert src.read() == ([], 0)
    assert not os.path.exists(os.path.join(host.state_dir, '%s.tracefs-cursor' % NAME))


def test_trace_source_is_quiet_without_our_instance(tmp_path):
    host = test_tracefs.Host(tmp_path)
    assert events.TraceSource(NAME, 'boot-1', STATE_DIR, None, root=host.root).read() == ([], 0)


# -- HTTP delivery ----------------------------------------------------------------------------------------------
class Receiver(object):
    def __init__(self, answers):
        self.bodies, self.headers, self.answers = [], [], list(answers)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers['Content-Length']))))
                outer.headers.append(dict(self.headers))
                self.send_response(outer.answers.pop(0) if outer.answers else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d/kprobes-fleet' % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*answers):
        made.append(Receiver(answers))
        return made[-1]
    yield make
    for r in made:
        r.close()


def test_http_posts_a_batch_as_the_webhook_expects(receiver):
    r = receiver()
    send = events.HttpSender(events.check_config({'url': r.url, 'token': 'tok-1-0123456789abcdef'}), 'h1')
    send([ev(1), ev(2)])
    assert r.bodies == [{'kprobes_fleet': {'host': 'h1', 'count': 2}, 'events': [ev(1), ev(2)]}]
    assert r.headers[0]['Authorization'] == 'Bearer tok-1-0123456789abcdef' and r.headers[0]['Content-Type'] == 'application/json'


@pytest.mark.parametrize('code, permanent', [(400, True), (401, True), (429, False), (500, False), (503, False)])
def test_http_errors_say_whether_a_retry_can_help(receiver, code, permanent):
    r = receiver(code)
    with pytest.raises(events.SendError) as e:
        events.HttpSender(events.check_config({'url': r.url}), 'h1')([ev(1)])
    assert e.value.permanent is permanent and ('HTTP %d' % code) in str(e.value)


def test_http_to_nothing_is_a_retryable_error(receiver):
    r = receiver()
    url = r.url
    r.close()
    with pytest.raises(events.SendError) as e:
        events.HttpSender(events.check_config({'url': url}), 'h1')([ev(1)])
    assert e.value.permanent is False


# -- the runner, on a fake host -----------------------------------------------------------------------------------
def fake_host(tmp_path, url, **conf):
    root = tmp_path / 'root'
    (root / 'dev').mkdir(parents=True)
    (root / 'proc/sys/kernel/random').mkdir(parents=True)
    (root / 'proc/sys/kernel/random/boot_id').write_text('boot-1\n')
    (root / 'dev/kmsg').write_text(kmsg_line(1, 'boot noise'))
    state = root / STATE_DIR.lstrip('/')
    state.mkdir(parents=True)
    (state / ('%s.events.json' % NAME)).write_text(json.dumps({'host': 'h1', 'config': dict({'url': url}, **conf)}))
    return root, str(state)


def runner(root):
    return events.Runner(NAME, STATE_DIR, root=str(root))


def test_runner_forwards_counts_and_spools(tmp_path, receiver):
    r = receiver()
    root, state = fake_host(tmp_path, r.url, spool=True, batch_wait_ms=0)
    run = runner(root)
    with open(str(root / 'dev/kmsg'), 'a') as f:
        for seq in (2, 3):
            f.write(kmsg_line(seq, '%s: probe=disk_full func=vfs_write ret=-28 pid=5 comm=dd' % NAME))
    facts, lost = run.kmsg.read()
    run.take(facts, lost, 0.0)
    run.forwarder.pump(0.0)
    run.save()
    sent = r.bodies[0]['events']
    want = [('h1', 2, 'ENOSPC', 'boot-1'), ('h1', 3, 'ENOSPC', 'boot-1')]
    assert [(e['host'], e['seq'], e['errno'], e['boot_id']) for e in sent] == want
    assert sent[0]['burst'] == sent[1]['burst']
    with open(host_state.state_file(state, NAME, 'events-spool')) as f:
        assert [json.loads(line) for line in f] == sent
    status = events.read_status(state, NAME)
    assert (status['received'], status['sent'], status['dropped'], status['queued']) == (2, 2, 0, 0)
    assert status['running'] is True and status['mark'] == names.MARK
    # a restart in the same boot continues the counters and the cursor: nothing twice
    run2 = runner(root)
    assert run2.forwarder.counts['sent'] == 2 and run2.kmsg.read()[0] == []


def test_status_of_a_dead_forwarder_says_so(tmp_path):
    state = str(tmp_path)
    with open(host_state.state_file(state, NAME, 'events-status'), 'w') as f:
        json.dump({'mark': names.MARK, 'pid': 123, 'sent': 1}, f)
    assert events.read_status(state, NAME, pid_alive=lambda pid: False)['running'] is False
    assert events.read_status(str(tmp_path / 'none'), NAME) is None


def test_the_shipped_forwarder_imports_without_ansible(tmp_path):
    lib = str(tmp_path / 'lib')
    for path, text in persist.lib_files(lib).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
    script = os.path.join(lib, events.FORWARD_SCRIPT)
    out = subprocess.run([sys.executable, '-I', script, '--help'], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and '--state-dir' in out.stdout, out.stderr
    assert open(script).read().startswith('#!') and names.MARK in open(script).read()


# -- the module that installs it -------------------------------------------------------------------------------------
class Systemctl(FakeModule):
    def __init__(self, params, check_mode=False):
        FakeModule.__init__(self, params, check_mode=check_mode)
        self.enabled = self.active = False
        self.handler = self.systemctl

    def systemctl(self, argv):
        verb = argv[1]
        if verb == 'is-enabled':
            return (0, 'enabled\n', '') if self.enabled else (1, 'disabled\n', '')
        if verb == 'is-active':
            return (0, 'active\n', '') if self.active else (3, 'inactive\n', '')
        if verb == 'enable':
            self.enabled = True
        if verb == 'restart':
            self.active = True
        if verb == 'disable':
            self.enabled = self.active = False
        return 0, '', ''


def forwarder(tmp_path, state='present', check_mode=False, module=None, **params):
    p = dict(name=NAME, state=state, host='h1', config={'url': URL},
             host_dir=os.path.dirname(STATE_DIR), unit_dir='/etc/systemd/system')
    p.update(params)
    module = module or Systemctl(p, check_mode=check_mode)
    module.params, module.check_mode = p, check_mode
    module.calls[:] = []
    return module, event_forwarder.EventForwarder(module, root=str(tmp_path))


def unit(tmp_path):
    return tmp_path / 'etc/systemd/system' / ('kprobes-fleet-%s-events.service' % NAME)


def test_present_installs_starts_and_is_idempotent(tmp_path):
    module, f = forwarder(tmp_path)
    assert f.apply()['changed'] is True
    text = unit(tmp_path).read_text()
    assert persist.is_ours(text) and '--name %s' % NAME in text and 'ReadWritePaths=%s' % STATE_DIR in text
    assert [c[1] for c in module.calls] == ['daemon-reload', 'is-enabled', 'enable', 'is-active', 'restart']
    conf = json.loads((tmp_path / STATE_DIR.lstrip('/') / ('%s.events.json' % NAME)).read_text())
    assert conf['host'] == 'h1' and conf['config']['url'] == URL and conf['config']['rate'] == 5
    assert oct(os.stat(str(tmp_path / STATE_DIR.lstrip('/') / ('%s.events.json' % NAME))).st_mode & 0o777) == '0o600'
    assert (tmp_path / 'var/lib/kprobes-fleet/lib' / events.FORWARD_SCRIPT).is_file()
    module, f = forwarder(tmp_path, module=module)
    assert f.apply()['changed'] is False and [c[1] for c in module.calls] == ['is-enabled', 'is-active']
    module, f = forwarder(tmp_path, module=module, config={'url': URL, 'rate': 9})  # new settings: restarted
    assert f.apply()['changed'] is True and [c[1] for c in module.calls][-1] == 'restart'


def test_check_mode_writes_and_starts_nothing(tmp_path):
    module, f = forwarder(tmp_path, check_mode=True)
    assert f.apply()['changed'] is True
    assert not os.path.exists(str(unit(tmp_path))) and [c[1] for c in module.calls] == ['is-active']
    assert not os.path.exists(str(tmp_path / 'var'))


def test_absent_removes_every_trace_but_a_lib_the_restore_unit_uses(tmp_path):
    module, f = forwarder(tmp_path, config={'url': URL, 'spool': True})
    f.apply()
    state = tmp_path / STATE_DIR.lstrip('/')
    for path in events.files(str(state), NAME)[1:]:
        open(path, 'w').close()
    (state / 'other-file').write_text('not ours to remove')
    restore_unit = tmp_path / 'etc/systemd/system' / persist.unit_name(NAME)
    restore_unit.write_text('# kprobes.fleet: restore\n')
    module, f = forwarder(tmp_path, state='absent', module=module)
    assert f.apply()['changed'] is True
    assert not unit(tmp_path).exists() and ['disable', '--now'] == module.calls[0][1:3]
    assert sorted(os.listdir(str(state))) == ['other-file']
    assert (tmp_path / 'var/lib/kprobes-fleet/lib' / persist.RESTORE_SCRIPT).is_file()  # still used
    restore_unit.unlink()
    module, f = forwarder(tmp_path, state='absent', module=module)
    assert f.apply()['changed'] is True and not (tmp_path / 'var/lib/kprobes-fleet/lib').exists()
    module, f = forwarder(tmp_path, state='absent', module=module)
    assert f.apply()['changed'] is False and module.calls == []


def test_a_unit_that_is_not_ours_is_never_changed_or_removed(tmp_path):
    unit(tmp_path).parent.mkdir(parents=True)
    unit(tmp_path).write_text('[Unit]\nDescription=someone else\n')
    for state in ('present', 'absent'):
        module, f = forwarder(tmp_path, state=state)
        with pytest.raises(Failed) as e:
            f.apply()
        assert 'not ours' in str(e.value) and module.calls == []
    assert unit(tmp_path).read_text() == '[Unit]\nDescription=someone else\n'


@pytest.mark.parametrize('params, words', [
    ({'config': {'url': 'http://eda.example.invalid/x'}}, 'loopback'),
    ({'config': {}}, 'needs at least config.url'),
    ({'host': 'a;b'}, 'inventory host name'),
    ({'name': '../x'}, 'name'),
    ({'state_dir': '/tmp/x'}, 'state_dir'),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, params, words):
    with pytest.raises(Failed) as e:
        forwarder(tmp_path, **params)
    assert words in str(e.value) and not os.path.exists(str(tmp_path / 'etc'))


def test_the_restore_unit_keeps_the_lib_the_forwarder_uses(tmp_path):
    from test_persist import persister  # noqa: F401 - the restore unit's own test helpers
    module, f = forwarder(tmp_path)
    f.apply()
    host = type('H', (), {'root': str(tmp_path)})()
    dummy, p = persister(host, tmp_path, state='absent')
    p.apply()
    assert (tmp_path / 'var/lib/kprobes-fleet/lib' / events.FORWARD_SCRIPT).is_file()


# -- the event source plugin ------------------------------------------------------------------------------------------
def plugin(name='spool'):
    spec = importlib.util.spec_from_file_location(
        name + '_source', os.path.join(REPO, 'extensions/eda/plugins/event_source/%s.py' % name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Queue(object):
    def __init__(self):
        self.events = []

    async def put(self, event):
        self.events.append(event)


def test_source_reads_the_spool_with_the_forwarders_event_shape(tmp_path):
    src = plugin()
    spool = tmp_path / 'x.events.jsonl'
    spool.write_text(json.dumps(ev(1)) + '\nnot json\n' + json.dumps({'host': 'h1'}) + '\n' + json.dumps(ev(2)) + '\n')
    q = Queue()
    asyncio.run(src.main(q, {'path': str(spool), 'from_start': True, 'once': True}))
    assert q.events == [ev(1), ev(2)]
    assert set(src.EVENT_KEYS) <= set(events.EVENT_KEYS)


def test_the_old_source_name_still_reads_the_spool(tmp_path, caplog):
    """kprobes.fleet.probe_events (the name before kprobes.fleet.spool): ansible-rulebook releases that read
    extensions/eda/eda_runtime.yml redirect it; older ones find probe_events.py by path, a shim of spool.py."""
    spool = tmp_path / 'x.events.jsonl'
    spool.write_text(json.dumps(ev(1)) + '\n')
    q = Queue()
    asyncio.run(plugin('probe_events').main(q, {'path': str(spool), 'from_start': True, 'once': True}))
    assert q.events == [ev(1)] and 'use kprobes.fleet.spool' in caplog.text
    if importlib.util.find_spec('ansible_rulebook') is None:
        return
    root = [p for p in sys.path if os.path.isdir(os.path.join(p, 'ansible_collections', 'kprobes', 'fleet'))][0]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=root, ANSIBLE_LOCAL_TEMP=str(tmp_path),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    code = ('from ansible_rulebook.rules_parser import parse_event_sources\n'
            'print(parse_event_sources([{"kprobes.fleet.probe_events": {"once": True}}])[0].source_name)\n')
    res = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.stdout.split() == ['kprobes.fleet.spool'], res.stderr


def test_source_follows_the_spool_across_rotation(tmp_path):
    src = plugin()
    spool = tmp_path / 'x.events.jsonl'
    spool.write_text(json.dumps(ev(1)) + '\n')
    reader = src.SpoolReader(str(spool))  # starts at the end
    with open(str(spool), 'a') as f:
        f.write(json.dumps(ev(2)) + '\n' + json.dumps(ev(3))[:10])
    assert [e['seq'] for e in reader.read()] == [2]  # a half-written line waits
    with open(str(spool), 'a') as f:
        f.write(json.dumps(ev(3))[10:] + '\n' + json.dumps(ev(4)) + '\n')
    os.rename(str(spool), str(spool) + '.1')  # the forwarder rotates, then writes a new file
    spool.write_text(json.dumps(ev(5)) + '\n')
    assert [e['seq'] for e in reader.read()] == [3, 4, 5]
    assert reader.read() == [] and reader.skipped == 0
    reader.close()


def test_source_waits_for_a_spool_that_does_not_exist_yet(tmp_path):
    src = plugin()
    spool = tmp_path / 'later.jsonl'
    reader = src.SpoolReader(str(spool))
    assert reader.read() == []
    spool.write_text(json.dumps(ev(1)) + '\n')
    assert [e['seq'] for e in reader.read()] == [1]
    reader.close()
