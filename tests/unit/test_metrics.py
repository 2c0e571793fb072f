# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics for Prometheus (#24): the textfile, what writes it, and the timer that does.

A fake host below tmp_path (test_probe_module's Host, with counters, errnos and latency in its
sysfs); the facts of probe_facts and the metrics are read from the same fake kernel and must agree.
``promtool check metrics`` / ``check rules`` (package prometheus) run where promtool is installed,
and are required under CI. The real thing (node_exporter in a VM, a Prometheus server scraping it) is
tests/vm/test_metrics.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import metrics, names, persist
from ansible_collections.kprobes.fleet.plugins.modules import probe_facts, probe_metrics

from test_persist import Systemctl, host  # noqa: F401  pylint: disable=unused-import
from test_probe_module import NAME, NEW_HASH, STATE_DIR, Failed, FakeModule

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(REPO, 'extensions', 'prometheus', 'kprobes-fleet.rules.yml')
DIR = '/var/lib/prometheus/node-exporter'
COUNTS = {'hits': 120, 'matches': 7, 'nmissed': 2, 'kp_nmissed': 0, 'suppressed': 1, 'filtered': 5, 'exempted': 3}


def promtool(*argv, **kw):
    tool = shutil.which('promtool')
    if tool is None:
        if os.environ.get('CI') == 'true':
            pytest.fail('promtool is missing (apt-get install prometheus); CI must run this check')
        pytest.skip('promtool is not installed (apt-get install prometheus)')
    return subprocess.run([tool] + list(argv), capture_output=True, text=True, check=False, **kw)


def counters(host, probe='disk_full', errnos='28 4\n2 3\n', latency=None, **over):
    d = os.path.join(host.root, 'sys/kernel', NAME, 'probes', probe)
    for key, value in dict(COUNTS, **over).items():
        with open(os.path.join(d, key), 'w') as f:
            f.write('%d\n' % value)
    with open(os.path.join(d, 'errnos'), 'w') as f:
        f.write(errnos)
    if latency is not None:
        with open(os.path.join(d, 'latency'), 'w') as f:
            f.write(latency)


@pytest.fixture
def running(host):  # noqa: F811
    host.load(NEW_HASH, probes=(('disk_full', 'vfs_write'), ('slow', 'vfs_fsync_range')))
    counters(host)
    # 5 calls: 3 in bucket 10 (512-1023 ns), 2 in bucket 28 (2^27-2^28 ns: the 0.2 s sleeps)
    counters(host, 'slow', errnos='', latency='5 400000900 10 3 28 2\n', hits=5, matches=2)
    return host


def sample(parsed, metric, **labels):
    return parsed[(metric, frozenset(dict(labels, module=NAME).items()))]


def test_the_textfile_has_every_family_with_the_kernels_counts(running):
    snap = metrics.read(NAME, STATE_DIR, root=running.root, release='6.1.0-9-amd64')
    text = metrics.render(snap)
    assert text.startswith(metrics.mark_line(NAME))
    got = metrics.parse(text)
    fn = dict(probe='disk_full', function='vfs_write')
    for key, metric, dummy in metrics.PROBE_COUNTERS:
        assert sample(got, 'kprobes_fleet_' + metric, **fn) == COUNTS[key]
    assert sample(got, 'kprobes_fleet_errno_total', errno='ENOSPC', **fn) == 4
    assert sample(got, 'kprobes_fleet_errno_total', errno='ENOENT', **fn) == 3
    assert sample(got, 'kprobes_fleet_loaded') == 1
    assert sample(got, 'kprobes_fleet_info', backend='module', kernel='6.1.0-9-amd64', spec_hash=NEW_HASH) == 1
    slow = dict(probe='slow', function='vfs_fsync_range')
    assert sample(got, 'kprobes_fleet_latency_seconds_count', **slow) == 5
    assert sample(got, 'kprobes_fleet_latency_seconds_sum', **slow) == pytest.approx(0.4000009)
    assert sample(got, 'kprobes_fleet_latency_seconds_bucket', le=repr(1023 / 1e9), **slow) == 3
    assert sample(got, 'kprobes_fleet_latency_seconds_bucket', le=repr((2 ** 27 - 1) / 1e9), **slow) == 3
    assert sample(got, 'kprobes_fleet_latency_seconds_bucket', le=repr((2 ** 28 - 1) / 1e9), **slow) == 5
    assert sample(got, 'kprobes_fleet_latency_seconds_bucket', le='+Inf', **slow) == 5
    buckets = [k for k in got if k[0] == 'kprobes_fleet_latency_seconds_bucket' and ('probe', 'slow') in k[1]]
    assert len(buckets) == metrics.LATENCY_BUCKETS + 1  # a fixed set: no series comes and goes
    assert not [k for k in got if dict(k[1]).keys() & {'pid', 'comm', 'uid', 'path', 'tid'}]


def test_facts_and_metrics_agree(running):
    """What a collect reports and what Prometheus scrapes are the same counts."""
    module = FakeModule({'module': NAME, 'host_dir': os.path.dirname(STATE_DIR), 'state_dir': None,
                         'max_events': 100, 'advance_cursor': False})
    facts = probe_facts.ProbeFacts(module, root=running.root).gather()
    got = metrics.parse(metrics.render(metrics.read(NAME, STATE_DIR, root=running.root)))
    assert facts['loaded'] and len(facts['probes']) == 2
    for probe, p in facts['probes'].items():
        fn = dict(probe=probe, function=p['function'])
        for key, metric, dummy in metrics.PROBE_COUNTERS:
            assert sample(got, 'kprobes_fleet_' + metric, **fn) == p[key], (probe, key)
        for errno, n in (p['errnos'] or {}).items():
            assert sample(got, 'kprobes_fleet_errno_total', errno=errno, **fn) == n
        if p['latency']:
            assert sample(got, 'kprobes_fleet_latency_seconds_count', **fn) == p['latency']['count']


def test_not_loaded_says_so_and_counts_nothing(host):  # noqa: F811
    got = metrics.parse(metrics.render(metrics.read(NAME, STATE_DIR, root=host.root)))
    assert sample(got, 'kprobes_fleet_loaded') == 0
    assert not [k for k in got if k[0] == 'kprobes_fleet_hits_total']


def test_events_lost_come_from_each_readers_record_of_this_boot(running):
    from test_probe_module import BOOT
    import json
    os.makedirs(running.state_dir, exist_ok=True)
    with open(os.path.join(running.state_dir, NAME + '.last-collect'), 'w') as f:
        json.dump({'boot_id': BOOT, 'probes': {}, 'events_lost': 9}, f)
    with open(os.path.join(running.state_dir, NAME + '.events-status.json'), 'w') as f:
        json.dump({'mark': names.MARK, 'boot_id': 'another-boot', 'lost': 4}, f)
    got = metrics.parse(metrics.render(metrics.read(NAME, STATE_DIR, root=running.root)))
    assert sample(got, 'kprobes_fleet_events_lost_total', reader='collect') == 9
    assert ('kprobes_fleet_events_lost_total', frozenset(dict(module=NAME, reader='forwarder').items())) not in got


def test_hostile_label_values_cannot_forge_a_sample(running):
    snap = metrics.read(NAME, STATE_DIR, root=running.root, release='6.1"} 1\nkprobes_fleet_loaded{module="x\\')
    text = metrics.render(snap)
    got = metrics.parse(text)
    assert sample(got, 'kprobes_fleet_info', backend='module', kernel=snap['kernel'], spec_hash=NEW_HASH) == 1
    assert len([k for k in got if k[0] == 'kprobes_fleet_loaded']) == 1
    out = promtool('check', 'metrics', input=text)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_accepts_the_textfile(running):
    text = metrics.render(metrics.read(NAME, STATE_DIR, root=running.root))
    out = promtool('check', 'metrics', input=text)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == '' and out.stderr.strip() == ''  # no lint finding either


def test_promtool_accepts_the_alerting_rules():
    out = promtool('check', 'rules', RULES)
    assert out.returncode == 0 and 'SUCCESS: 4 rules found' in out.stdout, out.stdout + out.stderr


def test_write_replaces_only_our_file(running):
    path = os.path.join(running.root, metrics.textfile(DIR, NAME).lstrip('/'))
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
        f.write('# someone else\nx 1\n')
    with pytest.raises(OSError, match='not ours'):
        metrics.write(NAME, STATE_DIR, DIR, root=running.root)
    assert open(path).read() == '# someone else\nx 1\n'
    os.unlink(path)
    os.symlink('/etc/passwd', path)
    with pytest.raises(OSError, match='not ours'):
        metrics.write(NAME, STATE_DIR, DIR, root=running.root)
    os.unlink(path)
    metrics.write(NAME, STATE_DIR, DIR, root=running.root)
    assert metrics.is_ours(path, NAME) and oct(os.stat(path).st_mode & 0o777) == '0o644'
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temp file left


# -- the module that installs the timer ----------------------------------------------------------

def installer(host, state='present', check_mode=False, module=None, **over):  # noqa: F811
    params = dict({'name': NAME, 'state': state, 'host_dir': os.path.dirname(STATE_DIR), 'state_dir': None,
                   'lib_dir': None, 'unit_dir': '/etc/systemd/system', 'dir': DIR, 'interval': 15}, **over)
    module = module or Systemctl(params, check_mode=check_mode)
    module.params, module.check_mode = params, check_mode
    return module, probe_metrics.ProbeMetrics(module, root=host.root)


def units(host):  # noqa: F811
    return [os.path.join(host.root, 'etc/systemd/system', persist.metrics_unit_name(NAME, kind)) for kind in ('service', 'timer')]


def test_present_installs_the_timer_and_writes_the_file_then_is_idempotent(running):
    module, m = installer(running)
    result = m.apply()
    assert result['changed'] is True and result['textfile'] == metrics.textfile(DIR, NAME)
    service, timer = [open(p).read() for p in units(running)]
    assert persist.is_ours(service) and persist.is_ours(timer)
    assert 'OnUnitActiveSec=15s' in timer and 'WantedBy=timers.target' in timer
    assert 'ReadWritePaths=%s\n' % DIR in service and 'After=%s' % persist.unit_name(NAME) in service
    assert [c[1:] for c in module.calls] == [['daemon-reload'], ['is-enabled', os.path.basename(units(running)[1])],
                                             ['enable', os.path.basename(units(running)[1])],
                                             ['restart', os.path.basename(units(running)[1])],
                                             ['start', os.path.basename(units(running)[0])]]
    assert os.path.isfile(os.path.join(running.root, 'var/lib/kprobes-fleet/lib', persist.METRICS_SCRIPT))
    assert oct(os.stat(os.path.join(running.root, DIR.lstrip('/'))).st_mode & 0o777) == '0o755'
    # the timer ran: the fake systemctl does not, so write as the service would
    metrics.write(NAME, STATE_DIR, DIR, root=running.root)
    module2, m2 = installer(running)

    def active(argv):
        return (0, 'active\n', '') if argv[1] == 'is-active' else Systemctl.systemctl(module2, argv)
    module2.enabled, module2.handler = True, active
    assert m2.apply()['changed'] is False
    assert [c[1] for c in module2.calls] == ['is-enabled', 'is-active']


def test_check_mode_changes_nothing(running):
    module, m = installer(running, check_mode=True)
    assert m.apply()['changed'] is True
    assert module.calls == [] and not any(os.path.exists(p) for p in units(running))
    assert not os.path.exists(os.path.join(running.root, DIR.lstrip('/')))


def test_a_unit_or_textfile_that_is_not_ours_is_never_touched(running):
    for path, text in ((units(running)[1], '[Timer]\nOnCalendar=daily\n'),
                       (os.path.join(running.root, metrics.textfile(DIR, NAME).lstrip('/')), 'node_load1 1\n')):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
        for state in ('present', 'absent'):
            module, m = installer(running, state=state)
            if state == 'absent' and path.endswith('.prom'):
                m.apply()  # absent leaves a file that is not ours where it is
            else:
                with pytest.raises(Failed, match='not ours'):
                    m.apply()
                assert module.calls == []
            assert open(path).read() == text
        os.unlink(path)


def test_absent_removes_only_ours_and_a_changed_dir_takes_our_file_along(running):
    module, m = installer(running)
    m.apply()
    metrics.write(NAME, STATE_DIR, DIR, root=running.root)
    host_dir = os.path.join(running.root, DIR.lstrip('/'))
    with open(os.path.join(host_dir, 'node.prom'), 'w') as f:
        f.write('other 1\n')
    new_dir = '/srv/textfiles'
    module, m = installer(running, dir=new_dir)
    m.apply()
    assert sorted(os.listdir(host_dir)) == ['node.prom']  # ours went with the directory
    metrics.write(NAME, STATE_DIR, new_dir, root=running.root)
    module, m = installer(running, state='absent')  # dir: the default - the recorded one is found all the same
    assert m.apply()['changed'] is True
    assert os.listdir(os.path.join(running.root, new_dir.lstrip('/'))) == []
    assert sorted(os.listdir(host_dir)) == ['node.prom'] and os.path.isdir(host_dir)
    assert not any(os.path.exists(p) for p in units(running))
    assert not os.path.exists(os.path.join(running.root, 'var/lib/kprobes-fleet/lib'))
    module, m = installer(running, state='absent')
    assert m.apply()['changed'] is False


@pytest.mark.parametrize('field, value', [('dir', 'relative'), ('dir', '/tmp/x'), ('dir', '/etc'), ('interval', 0),
                                          ('interval', 3601), ('name', '../x')])
def test_bad_arguments_are_refused_before_any_change(running, field, value):
    module, dummy = installer(running)
    module.params[field] = value
    with pytest.raises(Failed):
        probe_metrics.ProbeMetrics(module, root=running.root)
    assert module.calls == []


def test_the_shipped_program_writes_the_file_without_ansible(running):
    module, m = installer(running)
    m.apply()
    lib = os.path.join(running.root, 'var/lib/kprobes-fleet/lib')
    code = ('import sys; sys.path.insert(0, %r)\n'
            'import ansible_collections.kprobes.fleet.plugins.module_utils.metrics as m\n'
            'assert m.__file__.startswith(%r), m.__file__\n'
            'm.write(%r, %r, %r, root=%r)\n' % (lib, lib, NAME, STATE_DIR, DIR, running.root))
    out = subprocess.run([sys.executable, '-I', '-c', code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    text = open(os.path.join(running.root, metrics.textfile(DIR, NAME).lstrip('/'))).read()
    assert sample(metrics.parse(text), 'kprobes_fleet_hits_total', probe='disk_full', function='vfs_write') == 120
    assert 'metrics.main(a.name, a.state_dir)' in open(os.path.join(lib, persist.METRICS_SCRIPT)).read()


def test_the_errnos_a_probe_reports_start_at_zero_so_the_first_one_is_an_increase(running):
    snap = metrics.read(NAME, STATE_DIR, root=running.root)
    got = metrics.parse(metrics.render(snap, zero={'disk_full': ['ENOSPC', 'EDQUOT'], 'gone': ['EIO']}))
    fn = dict(probe='disk_full', function='vfs_write')
    assert sample(got, 'kprobes_fleet_errno_total', errno='EDQUOT', **fn) == 0
    assert sample(got, 'kprobes_fleet_errno_total', errno='ENOSPC', **fn) == 4  # counted wins
    assert not [k for k in got if ('probe', 'gone') in k[1]]  # only probes that run


@pytest.mark.parametrize('value', [{'x y': ['ENOSPC']}, {'disk_full': 'ENOSPC'}, {'disk_full': ['ENOPE']},
                                   {'disk_full': [28]}])
def test_bad_errnos_are_refused_before_any_change(running, value):
    module, dummy = installer(running)
    module.params['errnos'] = value
    with pytest.raises(Failed, match='errnos'):
        probe_metrics.ProbeMetrics(module, root=running.root)
    assert module.calls == []


def test_the_timer_program_reads_dir_and_errnos_from_its_configuration(running, monkeypatch):
    module, m = installer(running, errnos={'disk_full': ['EDQUOT']})
    m.apply()
    written = {}
    monkeypatch.setattr(metrics, 'write', lambda *a, **kw: written.update(args=a, kw=kw))
    assert metrics.main(NAME, os.path.join(running.root, STATE_DIR.lstrip('/'))) == 0
    assert written['args'][2] == DIR and written['kw'] == {'zero': {'disk_full': ['EDQUOT']}}
    os.unlink(os.path.join(running.state_dir, NAME + '.metrics.json'))
    assert metrics.main(NAME, running.state_dir) == 1
