# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""deltas.compute: what changed since the previous collection, and when counters restarted."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.kprobes.fleet.plugins.module_utils import deltas


def snap(boot='b1', backend='module', spec='aaaa', t=100.0, **probes):
    return deltas.snapshot(boot, backend, spec, t, dict((k, dict(zip(deltas.COUNTED, v))) for k, v in probes.items()))


def test_plain_difference_and_seconds():
    d = deltas.compute(snap(t=100.0, p=(10, 2, 0)), snap(t=160.5, p=(15, 3, 1)))['p']
    assert d == {'hits': 5, 'matches': 1, 'nmissed': 1, 'seconds': 60.5, 'reset': None, 'errnos': None}


def test_each_reset_reason_counts_from_zero():
    prev = snap(p=(10, 2, 0))
    for now, word in ((snap(boot='b2', p=(3, 1, 0)), 'rebooted'), (snap(backend='tracefs', p=(3, 1, 0)), 'backend'),
                      (snap(spec='bbbb', p=(3, 1, 0)), 'reloaded'), (snap(p=(3, 1, 0)), 'went down')):
        d = deltas.compute(prev, now)['p']
        assert (d['hits'], d['matches'], d['nmissed']) == (3, 1, 0) and word in d['reset']


def test_a_new_probe_and_the_first_collection():
    assert 'new' in deltas.compute(snap(p=(1, 0, 0)), snap(p=(2, 0, 0), q=(4, 1, 0)))['q']['reset']
    assert deltas.compute(snap(p=(1, 0, 0)), snap(p=(2, 0, 0), q=(4, 1, 0)))['p']['reset'] is None
    first = deltas.compute(None, snap(p=(7, 1, 0)))['p']
    assert first['hits'] == 7 and first['seconds'] is None and 'first' in first['reset']


def test_unreadable_counters_stay_unknown():
    prev = deltas.snapshot('b1', 'tracefs', 'aaaa', 1.0, {'p': {'hits': 5, 'matches': None, 'nmissed': 0}})
    now = deltas.snapshot('b1', 'tracefs', 'aaaa', 2.0, {'p': {'hits': 9, 'matches': 4, 'nmissed': None}})
    d = deltas.compute(prev, now)['p']
    assert (d['hits'], d['matches'], d['nmissed'], d['reset']) == (4, None, None, None)


def test_errnos_per_name_since_the_previous_collection():
    before = {'p': {'hits': 9, 'matches': 5, 'nmissed': 0, 'errnos': {'ENOENT': 3, 'EACCES': 2}}}
    after = {'p': {'hits': 20, 'matches': 9, 'nmissed': 0, 'errnos': {'ENOENT': 6, 'EACCES': 2, 'EIO': 1}}}
    prev = deltas.snapshot('b1', 'module', 'aaaa', 100.0, before)
    now = deltas.snapshot('b1', 'module', 'aaaa', 160.0, after)
    assert deltas.compute(prev, now)['p']['errnos'] == {'ENOENT': 3, 'EIO': 1}
    rebooted = dict(now, boot_id='b2')
    assert deltas.compute(prev, rebooted)['p']['errnos'] == {'ENOENT': 6, 'EACCES': 2, 'EIO': 1}
    unknown = deltas.snapshot('b1', 'module', 'aaaa', 160.0, {'p': {'hits': 20, 'matches': 9, 'nmissed': 0}})
    assert deltas.compute(prev, unknown)['p']['errnos'] is None
    assert deltas.compute(unknown, now)['p']['errnos'] is None  # nothing to subtract from
