# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What changed since the previous collection on a host: per probe, ``delta = {hits, matches,
nmissed, errnos, seconds, reset}`` (``errnos`` per errno name, None where the counts are not known).

The previous collection's counters are kept next to the cursor (``<state_dir>/<name>.last-collect``:
``{boot_id, backend, spec_hash, time, probes: {name: {hits, matches, nmissed}}}``). Counters start
from zero whenever the probes are put in place again (a reboot, a reload with another spec, a switch
of backend, a probe added): then the delta is the counter itself, counted from that zero, and
``reset`` says why. A counter that went down can only have restarted: the same rule applies.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

from ansible_collections.kprobes.fleet.plugins.module_utils.host_state import atomic_write, state_file
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_json

COUNTED = ('hits', 'matches', 'nmissed')


def load(state_dir, name):
    data = read_json(state_file(state_dir, name, 'last-collect'))
    return data if data is not None and isinstance(data.get('probes'), dict) else None


def snapshot(boot_id, backend, spec_hash, now, probes):
    return {'boot_id': boot_id, 'backend': backend, 'spec_hash': spec_hash, 'time': now,
            'probes': dict((p, dict([(c, v.get(c)) for c in COUNTED] + [('errnos', v.get('errnos'))]))
                           for p, v in probes.items())}


def save(state_dir, name, snap):
    atomic_write(state_file(state_dir, name, 'last-collect'), json.dumps(snap, sort_keys=True).encode(), 0o600)


def why_reset(prev, snap):
    """Why every counter restarted since ``prev`` (a sentence), or None."""
    if prev is None:
        return 'first collection on this host'
    if prev.get('boot_id') != snap['boot_id']:
        return 'the host rebooted (boot_id %s, was %s): counters restarted from zero' % (
            snap['boot_id'], prev.get('boot_id'))
    if prev.get('backend') != snap['backend']:
        return 'the backend changed (%s, was %s): counters restarted from zero' % (snap['backend'], prev.get('backend'))
    if prev.get('spec_hash') != snap['spec_hash']:
        return 'the probes were reloaded (spec_hash %s, was %s): counters restarted from zero' % (
            snap['spec_hash'], prev.get('spec_hash'))
    return None


def compute(prev, snap):
    """{probe: delta} for the probes of ``snap`` (a snapshot()) against ``prev`` (load())."""
    common = why_reset(prev, snap)
    seconds = round(snap['time'] - prev['time'], 3) if prev and isinstance(prev.get('time'), (int, float)) else None
    out = {}
    for probe, now in snap['probes'].items():
        before = (prev or {}).get('probes', {}).get(probe) if common is None else None
        reset = common
        if reset is None and before is None:
            reset = 'probe %s is new since the previous collection' % probe
        delta = {'seconds': seconds, 'reset': reset}
        went_down = [c for c in COUNTED if before and isinstance(now.get(c), int) and isinstance(before.get(c), int)
                     and now[c] < before[c]]
        if reset is None and went_down:
            delta['reset'] = reset = '%s went down: the counters restarted from zero' % ', '.join(went_down)
        for c in COUNTED:
            v = now.get(c)
            if not isinstance(v, int):
                delta[c] = None
            elif reset is not None:
                delta[c] = v
            else:
                b = before.get(c)
                delta[c] = v - b if isinstance(b, int) else None
        delta['errnos'] = errnos_delta(now.get('errnos'), (before or {}).get('errnos'), reset)
        out[probe] = delta
    return out


def errnos_delta(now, before, reset):
    """Per errno, what was added since ``before`` (both {name: count}); None when not known now."""
    if not isinstance(now, dict):
        return None
    if reset is not None:
        return dict(now)
    if not isinstance(before, dict):
        return None
    return dict((name, count - before.get(name, 0)) for name, count in now.items() if count - before.get(name, 0))
