# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The event path trusts nothing it receives (#20, items 6 and 8): a token per host made by the deploy
from a controller-side key; the webhook source kprobes.fleet.webhook accepts a post only with the
sender's own token, an event only as the sender's, sets the action's limit to the sender; a poster cannot
multiply actions with new burst names; both event sources check their arguments and every field of every
event; kprobes_fleet_events.token given as 0, false, no or [] is refused. Forged posts here go to a
webhook on 127.0.0.1; the same posts from a VM through the SSH tunnel are in tests/vm/test_events.py."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import asyncio
import importlib.util
import json
import os
import socket
import stat
import threading
import time

import pytest
import yaml

from ansible_collections.kprobes.fleet.plugins.module_utils import events, names
from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = os.path.join(REPO, 'extensions/eda/plugins/event_source')
URL = 'http://127.0.0.1:5000/kprobes-fleet'
KEY = bytes(range(32))


def load(name):
    spec = importlib.util.spec_from_file_location('kf_src_' + name, os.path.join(SOURCES, name + '.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pe = load('spool')
wh = load('webhook')


def ev(seq=1, **kw):
    return dict({'host': 'h1', 'probe': 'disk_full', 'function': 'vfs_write', 'ret': -28, 'errno': 'ENOSPC',
                 'pid': 7, 'comm': 'dd', 'ts': 1.0 + seq, 'boot_id': 'b-1', 'seq': seq,
                 'burst': 'disk_full:ENOSPC:1.000000'}, **kw)


def batch(sender, evs):
    return json.dumps({'kprobes_fleet': {'host': sender, 'count': len(evs)}, 'events': evs}).encode()


def bearer(host, key=KEY):
    return 'Bearer ' + events.token_for(key, host)


def key_file(tmp_path, key=KEY, mode=0o600):
    path = tmp_path / 'events.key'
    path.write_text(key.hex() + '\n')
    os.chmod(str(path), mode)
    return str(path)


# -- kprobes_fleet_events.token: never a falsy non-string meaning "no token" (item 8) ----------------------------
@pytest.mark.parametrize('token', [0, False, [], {}, True, 12345678901234567890, 1.5, ['a' * 20]])
def test_a_token_that_is_not_a_string_is_refused_not_read_as_no_token(tmp_path, token):
    with pytest.raises(names.InvalidValue) as e:
        events.check_config({'url': URL, 'token': token})
    assert 'kprobes_fleet_events.token: must be a bearer token string' in str(e.value)
    values, errors, dummy = settings.check({'kprobes_fleet_events': {'url': URL, 'token': token,
                                                                     'key_file': str(tmp_path / 'k')}},
                                           'h1', ['h1'], check_probes=False)
    assert len(errors) == 1 and errors[0].startswith('kprobes_fleet_events.token: ') and '\n' not in errors[0]
    assert not (tmp_path / 'k').exists()


@pytest.mark.parametrize('token', ['0', 'no', 'false', 'none', 'short-token'])
def test_a_token_too_short_to_be_a_secret_is_refused(token):
    with pytest.raises(names.InvalidValue) as e:
        events.check_config({'url': URL, 'token': token})
    assert 'of 16 to 512 characters' in str(e.value)


# -- the deploy makes the key and gives each host its own token (item 6) ---------------------------------------------
def deployed(tmp_path, host='h1', **conf):
    conf = dict({'url': URL, 'key_file': str(tmp_path / 'ctl' / 'events.key')}, **conf)
    values, errors, dummy = settings.check({'kprobes_fleet_events': conf}, host, ['h1', 'h2'], check_probes=False)
    assert errors == []
    return values['kprobes_fleet_events']


def test_the_deploy_makes_a_key_of_its_own_and_a_token_per_host(tmp_path):
    h1 = deployed(tmp_path, 'h1')
    path = tmp_path / 'ctl' / 'events.key'
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(path.parent)).st_mode) == 0o700
    key = bytes.fromhex(path.read_text().strip())
    assert len(key) == 32
    assert h1['token'] == events.token_for(key, 'h1') == pe.token_for(key, 'h1')
    assert 'key_file' not in h1  # the controller's path never goes to a host
    h2 = deployed(tmp_path, 'h2')
    assert h2['token'] == events.token_for(key, 'h2') != h1['token']
    assert deployed(tmp_path, 'h1') == h1 and path.read_text().strip() == key.hex()  # made once, then read
    assert events.check_config(h1) == h1  # the host checks it again with the same rules


def test_the_default_key_is_in_the_users_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    values, errors, dummy = settings.check({'kprobes_fleet_events': {'url': URL}}, 'h1', ['h1'], check_probes=False)
    assert errors == [] and len(values['kprobes_fleet_events']['token']) == 64
    path = tmp_path / '.config/kprobes-fleet/events.key'
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert values['kprobes_fleet_events']['token'] == events.token_for(bytes.fromhex(path.read_text()), 'h1')


def test_a_token_of_the_users_own_is_used_as_given(tmp_path):
    assert deployed(tmp_path, token='t' * 20)['token'] == 't' * 20
    assert not (tmp_path / 'ctl').exists()


@pytest.mark.parametrize('setup, words', [
    (lambda p: (p.write_text(KEY.hex()), os.chmod(str(p), 0o640)), 'readable by you alone'),
    (lambda p: (p.write_text('not a key'), os.chmod(str(p), 0o600)), 'does not hold an events key'),
    (lambda p: p.mkdir(), 'is not a regular file'),
    (lambda p: (p.parent.joinpath('real').write_text(KEY.hex()), os.chmod(str(p.parent / 'real'), 0o600),
                p.symlink_to('real')), 'cannot read the events key'),
])
def test_a_key_file_anyone_else_could_read_or_that_is_not_ours_is_refused(tmp_path, setup, words):
    path = tmp_path / 'ctl' / 'events.key'
    path.parent.mkdir(mode=0o700)
    setup(path)
    values, errors, dummy = settings.check({'kprobes_fleet_events': {'url': URL, 'key_file': str(path)}},
                                           'h1', ['h1'], check_probes=False)
    assert len(errors) == 1 and words in errors[0] and errors[0].startswith('kprobes_fleet_events.key_file: ')


@pytest.mark.parametrize('value', ['relative/events.key', 5, ['x'], '/x/\nevents.key'])
def test_a_key_file_that_is_not_an_absolute_path_is_refused(value):
    values, errors, dummy = settings.check({'kprobes_fleet_events': {'url': URL, 'key_file': value}},
                                           'h1', ['h1'], check_probes=False)
    assert len(errors) == 1 and errors[0].startswith('kprobes_fleet_events.key_file: ')


@pytest.mark.parametrize('name', ['all', 'ALL', 'ungrouped', 'h1,h2', 'web*', 'web[1:3]', '~web.*', '!h1', '&h1',
                                  'h1:h2', 'a b', ''])
def test_one_inventory_host_name_only(name):
    with pytest.raises(names.InvalidValue):
        events.check_host(name)
    with pytest.raises(pe.BadEvent):
        pe.check_host(name)


def test_ipv6_names_and_ordinary_names_pass():
    for name in ('bookworm-1', 'web01.example.invalid', 'fe80::1', 'h_1'):
        assert events.check_host(name) == pe.check_host(name) == name


# -- the webhook: who may post, as whom (item 6) ---------------------------------------------------------------------
def gate(**kw):
    now = [1000.0]
    g = wh.Gate(KEY, clock=lambda: now[0], **kw)
    return g, now


def refused(g, auth, body):
    with pytest.raises(wh.Refused) as e:
        g.receive(auth, body)
    return e.value.status, str(e.value)


def test_the_senders_own_token_is_accepted_and_the_action_is_limited_to_the_sender():
    g, dummy = gate()
    got = g.receive(bearer('h1'), batch('h1', [ev(1), ev(2)]))
    assert [e['seq'] for e in got] == [1, 2]
    for e in got:
        assert e['meta'] == {'hosts': ['h1']} and set(e) == set(pe.EVENT_KEYS) | {'meta'}


@pytest.mark.parametrize('auth, sender, words', [
    (None, 'h1', 'a bearer token is required'),
    ('', 'h1', 'a bearer token is required'),
    ('Basic aDE6eA==', 'h1', 'a bearer token is required'),
    ('Bearer ', 'h1', 'a bearer token is required'),
    ('Bearer wrong-token-0123456789', 'h1', 'not the token of h1'),
    (bearer('h1', key=b'k' * 32), 'h1', 'not the token of h1'),  # a key of another controller
    (bearer('h2'), 'h1', 'not the token of h1'),  # another host's token
])
def test_a_post_without_the_senders_token_is_refused(auth, sender, words):
    g, dummy = gate()
    status, msg = refused(g, auth, batch(sender, [ev(1, host=sender)]))
    assert status == 401 and words in msg and g.counts['accepted'] == 0


@pytest.mark.parametrize('sender', ['all', 'ungrouped', 'h1,h2', 'h*', 'web[1:3]', '~.*', 'h1:h2', '!h1', None, 5])
def test_a_sender_that_is_not_one_host_is_refused_whatever_the_token(sender):
    g, dummy = gate()
    token = bearer(sender if isinstance(sender, str) else 'h1')
    assert refused(g, token, batch(sender, [ev(1)]))[0] == 400


@pytest.mark.parametrize('host, status', [('h2', 403), ('all', 400), ('h1,h2', 400), ('*', 400)])
def test_an_event_is_accepted_only_as_the_senders(host, status):
    g, dummy = gate()
    assert refused(g, bearer('h1'), batch('h1', [ev(1), ev(2, host=host)]))[0] == status
    assert g.counts['accepted'] == 0  # nothing of that batch


def test_a_post_cannot_set_the_limit_itself():
    g, dummy = gate()
    forged = ev(1)
    forged['meta'] = {'hosts': 'all'}
    assert refused(g, bearer('h1'), batch('h1', [forged]))[0] == 400
    body = json.loads(batch('h1', [ev(1)]))
    body['meta'] = {'hosts': 'all'}
    assert refused(g, bearer('h1'), json.dumps(body).encode())[0] == 400


def test_only_the_listed_hosts_may_post():
    g, dummy = gate(hosts=frozenset(['h2']))
    assert refused(g, bearer('h1'), batch('h1', [ev(1)]))[0] == 403
    assert len(g.receive(bearer('h2'), batch('h2', [ev(1, host='h2')]))) == 1


@pytest.mark.parametrize('body', [b'not json', b'[]', b'{"events": []}', b'{"kprobes_fleet": {"host": "h1"}, "events": {}}',
                                  b'{"kprobes_fleet": {"host": "h1", "count": 2}, "events": [{}]}'])
def test_a_malformed_batch_is_refused(body):
    g, dummy = gate()
    assert refused(g, bearer('h1'), body)[0] == 400


def test_a_batch_beyond_the_largest_a_forwarder_sends_is_refused():
    g, dummy = gate()
    assert refused(g, bearer('h1'), batch('h1', [ev(i) for i in range(wh.MAX_EVENTS + 1)]))[0] == 400


# -- the throttle's key: a poster cannot multiply actions ------------------------------------------------------------
def test_new_burst_names_do_not_multiply_actions():
    g, now = gate(burst_gap_s=60)
    first = g.receive(bearer('h1'), batch('h1', [ev(1, burst='a:ENOSPC:1.0')]))[0]['burst']
    for i in range(20):  # a new name on every post, as fast as one likes
        now[0] += 1
        got = g.receive(bearer('h1'), batch('h1', [ev(i, burst='forged-%d' % i)]))
        assert got[0]['burst'] == first
    # the rulebook's throttle key (event.host, event.burst) saw one value: one action
    now[0] += 60
    assert g.receive(bearer('h1'), batch('h1', [ev(1, burst='later')]))[0]['burst'] == 'later'  # a real new burst
    now[0] += 1
    assert g.receive(bearer('h1'), batch('h1', [ev(1, burst='a:ENOSPC:1.0')]))[0]['burst'] == 'a:ENOSPC:1.0'  # known
    assert g.receive(bearer('h1'), batch('h1', [ev(1, burst='yet-another')]))[0]['burst'] == 'later'  # too soon


def test_bursts_are_counted_per_sender_and_errno():
    g, now = gate(burst_gap_s=60)
    assert g.receive(bearer('h1'), batch('h1', [ev(1, burst='x1')]))[0]['burst'] == 'x1'
    assert g.receive(bearer('h2'), batch('h2', [ev(1, host='h2', burst='x2')]))[0]['burst'] == 'x2'
    got = g.receive(bearer('h1'), batch('h1', [ev(1, burst='q1', errno='EDQUOT', ret=-122)]))
    assert got[0]['burst'] == 'q1'


def test_the_shipped_rulebook_throttles_on_what_the_source_vouches_for():
    with open(os.path.join(REPO, 'extensions/eda/rulebooks/disk_full.yml')) as f:
        book = yaml.safe_load(f)[0]
    source = book['sources'][0]
    assert 'kprobes.fleet.webhook' in source and 'key_file' in source['kprobes.fleet.webhook']
    assert 'filters' not in source  # no insert_hosts_to_meta: the limit is the sender, set by the source
    assert 'token' not in json.dumps(book)
    rule = book['rules'][0]
    assert rule['throttle']['group_by_attributes'] == ['event.host', 'event.burst']


# -- every field of every event is checked -----------------------------------------------------------------------
@pytest.mark.parametrize('field, value', [
    ('ret', 'x'), ('ret', True), ('ret', 1.5), ('ret', 2 ** 70), ('pid', -1), ('pid', '7'), ('seq', 'x'), ('seq', -1),
    ('ts', 'now'), ('ts', float('nan')), ('ts', float('inf')), ('ts', -1), ('ts', True),
    ('probe', 'Disk;Full'), ('probe', 'p' * 40), ('probe', None), ('function', '$(id)'), ('function', 'vfs write'),
    ('errno', 'ENOSPC;rm'), ('errno', 28), ('errno', ''), ('boot_id', '../x'), ('boot_id', 'b' * 65),
    ('burst', 'a b'), ('burst', '{{ lookup("pipe", "id") }}'), ('burst', 'x' * 161), ('burst', ''),
    ('comm', 'x' * 65), ('comm', 5), ('comm', None), ('host', ['h1']),
])
def test_a_field_of_the_wrong_type_length_or_characters_is_refused(field, value):
    with pytest.raises(pe.BadEvent) as e:
        pe.check_event(dict(ev(1), **{field: value}))
    assert field in str(e.value) and '\n' not in str(e.value)


def test_an_event_has_exactly_its_keys():
    for bad in (dict(ev(1), extra=1), dict((k, v) for k, v in ev(1).items() if k != 'burst'), [ev(1)], 'x'):
        with pytest.raises(pe.BadEvent):
            pe.check_event(bad)


def test_comm_is_hostile_data_its_control_characters_are_replaced():
    got = pe.check_event(ev(1, comm='a\x1b[31mb\x00c\u202ed e\\x0a'))
    assert got['comm'] == 'a?[31mb?c?d e\\x0a'
    assert pe.check_event(ev(1, comm='<...>'))['comm'] == '<...>'


def test_the_spool_reader_passes_on_checked_events_only(tmp_path):
    spool = tmp_path / 'x.events.jsonl'
    forged = dict(ev(2), meta={'hosts': 'all'})
    spool.write_text('\n'.join(json.dumps(e) for e in (ev(1), ev(2, host='all'), forged, ev(3, comm='x\x07y'))) + '\n')
    reader = pe.SpoolReader(str(spool), from_start=True)
    got = reader.read()
    reader.close()
    assert [(e['seq'], e['comm']) for e in got] == [(1, 'dd'), (3, 'x?y')] and reader.skipped == 2


# -- the sources' arguments --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('args, words', [
    ({'from_start': 'false'}, 'from_start must be true or false'),
    ({'once': 'yes'}, 'once must be true or false'),
    ({'once': 1}, 'once must be true or false'),
    ({'delay': 0}, 'delay must be a number of seconds above 0'),
    ({'delay': -1}, 'delay must be a number of seconds above 0'),
    ({'delay': 'fast'}, 'delay must be a number'),
    ({'delay': '0.5'}, 'delay must be a number'),
    ({'delay': True}, 'delay must be a number'),
    ({'delay': float('nan')}, 'delay must be a number'),
    ({'delay': 10 ** 6}, 'at most 3600'),
    ({'path': '/'}, 'is a directory'),
    ({'path': '/dev/null'}, 'is not a regular file'),
    ({'path': '/nonexistent-kprobes-fleet/x.jsonl'}, 'neither does its directory'),
    ({'path': 'relative.jsonl'}, 'absolute path'),
    ({'path': 5}, 'absolute path'),
    ({'from-start': True}, 'unknown argument(s) from-start'),
])
def test_the_spool_source_checks_its_arguments(tmp_path, args, words):
    args = dict({'path': str(tmp_path / 'x.jsonl'), 'once': True}, **args)
    with pytest.raises(pe.BadArgument) as e:
        asyncio.run(pe.main(None, args))
    assert words in str(e.value) and '\n' not in str(e.value)


def test_the_spool_source_may_start_before_the_forwarders_first_event(tmp_path):
    got = pe.check_args({'path': str(tmp_path / 'later.jsonl'), 'delay': 1, 'eda_feedback_queue': object()})
    assert got['delay'] == 1.0 and got['from_start'] is False


@pytest.mark.parametrize('args, words', [
    ({'port': 'x'}, 'port must be a TCP port'),
    ({'port': 0}, 'port must be a TCP port'),
    ({'port': 70000}, 'port must be a TCP port'),
    ({'port': True}, 'port must be a TCP port'),
    ({'burst_gap_s': 0}, 'burst_gap_s must be a number of seconds above 0'),
    ({'burst_gap_s': '60'}, 'burst_gap_s must be a number'),
    ({'hosts': 'h1'}, 'hosts must be a list'),
    ({'hosts': ['all']}, 'names every host'),
    ({'max_kb': 0}, 'max_kb must be an integer'),
    ({'key_file': '/nonexistent-kprobes-fleet/events.key'}, 'there is no events key'),
    ({'token': 'x' * 20}, 'unknown argument(s) token'),
])
def test_the_webhook_checks_its_arguments(tmp_path, args, words):
    args = dict({'port': 5000, 'key_file': key_file(tmp_path)}, **args)
    with pytest.raises(wh.BadArgument) as e:
        asyncio.run(wh.main(None, args))
    assert words in str(e.value) and '\n' not in str(e.value)


def test_the_webhook_does_not_start_with_a_key_others_may_read(tmp_path):
    with pytest.raises(wh.BadArgument) as e:
        wh.check_args({'port': 5000, 'key_file': key_file(tmp_path, mode=0o644)})
    assert 'readable by you alone' in str(e.value)
    assert wh.check_args({'port': '5000', 'key_file': key_file(tmp_path)})['key'] == KEY


# -- end to end on 127.0.0.1: the forwarder's sender against the webhook ------------------------------------------------
class Collect(object):
    def __init__(self):
        self.events = []

    async def put(self, event):
        self.events.append(event)


@pytest.fixture
def webhook(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    queue = Collect()
    loop = asyncio.new_event_loop()
    task = loop.create_task(wh.main(queue, {'port': port, 'key_file': key_file(tmp_path)}))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    for dummy in range(100):
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield 'http://127.0.0.1:%d/kprobes-fleet' % port, queue
    loop.call_soon_threadsafe(task.cancel)
    time.sleep(0.2)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def sender(url, host, token):
    config = events.check_config({'url': url, 'token': token})
    return events.HttpSender(config, host)


def test_forged_posts_are_refused_and_the_forwarders_own_are_accepted(webhook, tmp_path):
    url, queue = webhook
    for host, token, code in (('h1', '', 401), ('h1', 'wrong-token-0123456789', 401),
                              ('h1', events.token_for(KEY, 'h2'), 401), ('all', events.token_for(KEY, 'all'), 400)):
        with pytest.raises(events.SendError) as e:
            sender(url, host, token)([ev(1, host=host)])
        assert ('HTTP %d' % code) in str(e.value) and e.value.permanent  # the forwarder drops it, counted
    with pytest.raises(events.SendError) as e:  # h1's token, an event of h2
        sender(url, 'h1', events.token_for(KEY, 'h1'))([ev(1, host='h2')])
    assert 'HTTP 403' in str(e.value)
    assert queue.events == []
    config = settings.check({'kprobes_fleet_events': {'url': url, 'key_file': key_file(tmp_path)}}, 'h1', ['h1'],
                            check_probes=False)[0]['kprobes_fleet_events']
    events.HttpSender(config, 'h1')([ev(1), ev(2)])  # what the deploy gives the forwarder of h1
    assert [(e['seq'], e['meta']) for e in queue.events] == [(1, {'hosts': ['h1']}), (2, {'hosts': ['h1']})]


# -- the shipped rulebook in ansible-rulebook, forged posts on 127.0.0.1 -------------------------------------------------
def test_the_rulebook_runs_one_action_limited_to_the_sender_whatever_is_forged(tmp_path):
    """ansible-rulebook (needs java) with kprobes.fleet.disk_full; the inventory's hosts are 127.0.0.1
    port 1, so the action playbook fails at once on its first connection: the run and its limit are seen."""
    import shutil
    import subprocess
    import sys
    binary = os.path.join(os.path.dirname(sys.executable), 'ansible-rulebook')
    if not os.path.exists(binary) or not shutil.which('java'):
        pytest.skip('ansible-rulebook or java is not installed')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    (tmp_path / 'inv.yml').write_text('all:\n  hosts:\n' + ''.join(
        '    %s: {ansible_host: 127.0.0.1, ansible_port: 1}\n' % h for h in ('h1', 'h2')))
    (tmp_path / 'vars.yml').write_text('kprobes_fleet_eda_port: %d\nkprobes_fleet_eda_key_file: %s\n'
                                       'kprobes_fleet_eda_burst_gap_s: 60\n' % (port, key_file(tmp_path)))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1', HOME=str(tmp_path),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    log = open(str(tmp_path / 'log'), 'w')
    proc = subprocess.Popen([binary, '-i', str(tmp_path / 'inv.yml'), '-r', 'kprobes.fleet.disk_full', '--vars',
                             str(tmp_path / 'vars.yml'), '-vv'], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for dummy in range(600):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / 'log').read_text()[-3000:]
                time.sleep(0.1)
        url = 'http://127.0.0.1:%d/kprobes-fleet' % port
        forged = [('h1', '', [ev(1)]), ('h1', 'wrong-token-0123456789', [ev(1)]),
                  ('h1', events.token_for(KEY, 'h2'), [ev(1)]), ('all', events.token_for(KEY, 'all'), [ev(1, host='all')]),
                  ('h1', events.token_for(KEY, 'h1'), [ev(1, host='h2')]), ('h1', events.token_for(KEY, 'h1'), [ev(1, host='all')])]
        for host, token, evs in forged:
            with pytest.raises(events.SendError):
                sender(url, host, token)(evs)
        h1 = sender(url, 'h1', events.token_for(KEY, 'h1'))
        h1([ev(1, burst='b1')])
        for i in range(5):  # a new burst name on every post
            h1([ev(2 + i, burst='forged-%d' % i)])
        deadline = time.time() + 120
        while time.time() < deadline and 'PLAY RECAP' not in (tmp_path / 'log').read_text():
            time.sleep(0.5)
        time.sleep(3)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / 'log').read_text()
    assert text.count('Creating action task action::run_playbook') == 1, text[-4000:]
    assert 'fatal: [h1]' in text and '[h2]' not in text, text[-4000:]
    assert text.count('kprobes.fleet.webhook: refused a post') == len(forged)
