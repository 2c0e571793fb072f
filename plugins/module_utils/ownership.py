# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host side: what on this host is ours, read before anything is loaded, unloaded or deleted.

Standard library only (runs on the managed hosts). Paths are resolved below ``root`` so the
unit tests can fake a host. Our module says it is ours in /sys/kernel/<name>/marker; our
working directory in <dir>/.kprobes-fleet.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import stat

from ansible_collections.kprobes.fleet.plugins.module_utils import names
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import read_int, read_text
from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import ERRNO_NAMES

COUNTERS = ('hits', 'matches', 'nmissed', 'kp_nmissed', 'maxactive', 'registered',
            'reg_err', 'suppressed', 'filtered', 'exempted')


class ModuleSysfs(object):
    """/sys/module/<name> and /sys/kernel/<name> of a kprobes.fleet module."""

    def __init__(self, name, root='/'):
        self.name = name
        self.root = root

    def sys(self, *parts):
        return os.path.join(self.root, 'sys', *parts)

    def loaded(self):
        """A module of this name is loaded (ours or not)."""
        return os.path.isdir(self.sys('module', self.name))

    def _text(self, *parts):
        return (read_text(self.sys(*parts)) or '').strip() or None

    def spec_hash(self):
        return self._text('kernel', self.name, 'spec_hash')

    def ours(self):
        """The loaded module carries our marker.

        Modules built before the marker existed are recognised by their fingerprint: a
        16-hex spec_hash in /sys/kernel/<name>/ equal to the module's version, and probes/."""
        if not self.loaded():
            return False
        if self._text('kernel', self.name, 'marker') == names.MARK:
            return True
        spec = self.spec_hash()
        return (spec is not None and re.fullmatch(names.HEX16_PATTERN, spec) is not None
                and self._text('module', self.name, 'version') == spec
                and os.path.isdir(self.sys('kernel', self.name, 'probes')))

    def conflict(self, release=None):
        """Why this name cannot be ours on this host, or None.

        A loaded module of that name that is not ours, a /sys/kernel entry of that name that
        is not ours, or a module of the running kernel by that name (built in or on disk)."""
        if self.loaded():
            if not self.ours():
                return ('a module named %s is loaded and it is not a kprobes.fleet module (no '
                        '/sys/kernel/%s/marker)' % (self.name, self.name))
            return None
        if os.path.lexists(self.sys('kernel', self.name)):
            return ('/sys/kernel/%s already exists and is not ours (a kernel or another '
                    "module's entry)" % self.name)
        shipped = kernel_module_names(self.root, release or os.uname().release)
        if self.name in shipped:
            return 'the running kernel ships a module named %s (%s)' % (self.name, shipped[self.name])
        return None

    def errnos(self, probe):
        """{errno name: count} of a probe's matches that returned an errno (``errnos`` in sysfs:
        ``<errno> <count>`` lines, ``other <count>`` for values without a slot), or None when the
        loaded module has no such file (built before it existed) or it is unreadable."""
        text = read_text(self.sys('kernel', self.name, 'probes', probe, 'errnos'))
        if text is None:
            return None
        out = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) != 2 or not fields[1].isdigit():
                return None
            if fields[0] == 'other':
                name = 'other'
            elif fields[0].isdigit():
                name = ERRNO_NAMES.get(int(fields[0]), '-%s' % fields[0])
            else:
                return None
            out[name] = out.get(name, 0) + int(fields[1])
        return out

    def latency(self, probe):
        """A probe's latency of every call (``latency`` in sysfs), or None when it does not time its calls:
        ``{count, sum_ns, buckets: [[le_ns, count], ...], p50_ns, p99_ns}``. Bucket b of the kernel holds
        2^(b-1) <= ns < 2^b, shown by its inclusive upper bound ``le_ns`` = 2^b - 1; the percentiles are
        the upper bounds of the buckets they fall in."""
        text = read_text(self.sys('kernel', self.name, 'probes', probe, 'latency'))
        lines = (text or '').split()
        if len(lines) < 2 or len(lines) % 2 or not all(x.isdigit() for x in lines):
            return None
        values = [int(x) for x in lines]
        count, total = values[0], values[1]
        buckets = [[(1 << b) - 1, n] for b, n in zip(values[2::2], values[3::2]) if b <= 64]
        return {'count': count, 'sum_ns': total, 'buckets': buckets,
                'p50_ns': percentile(buckets, count, 0.50), 'p99_ns': percentile(buckets, count, 0.99)}

    def probes(self, counters=COUNTERS, errnos=False):
        """Per probe: ``function`` and the given counters (integers, None when unreadable), and with
        ``errnos`` its per-errno counts (``errnos()``)."""
        base = self.sys('kernel', self.name, 'probes')
        try:
            entries = sorted(os.listdir(base))
        except OSError:
            return {}
        result = {}
        for probe in entries:
            d = os.path.join(base, probe)
            function = read_text(os.path.join(d, 'function'))
            entry = {'function': function.strip() if function is not None else None}
            for counter in counters:
                entry[counter] = read_int(os.path.join(d, counter))
            if errnos:
                entry['errnos'] = self.errnos(probe)
                entry['latency'] = self.latency(probe)
            result[probe] = entry
        return result


def percentile(buckets, count, q):
    """The upper bound of the bucket ([[le, n], ...] in order) that holds the q-th quantile, or None."""
    if not count:
        return None
    seen = 0
    for le, n in buckets:
        seen += n
        if seen >= q * count:
            return le
    return buckets[-1][0] if buckets else None


def kernel_module_names(root, release):
    """Module names of the running kernel: {name: 'built in' | 'on disk'} from modules.builtin/dep."""
    found = {}
    for index, where in (('modules.builtin', 'built in'), ('modules.dep', 'on disk')):
        text = read_text(os.path.join(root, 'lib', 'modules', release, index)) or ''
        for line in text.splitlines():
            path = line.split(':', 1)[0].strip()
            if not path:
                continue
            base = os.path.basename(path)
            for ext in ('.ko.zst', '.ko.xz', '.ko.gz', '.ko'):
                if base.endswith(ext):
                    base = base[:-len(ext)]
                    break
            found.setdefault(base.replace('-', '_'), where)
    return found


def expected_owner():
    """The (uid, gid) our directories and mark have: root's (0, 0); the running user's when a
    module runs without root (only the unit tests do)."""
    uid = os.geteuid()
    return (0, 0) if uid == 0 else (uid, os.getegid())


def host_dir_mark_problem(path):
    """Why ``path`` is not our working directory, or None when it is.

    Ours: a real directory (not a symbolic link) owned by root that holds our mark
    ``<path>/.kprobes-fleet``, a regular file (not a link) owned by root. Only root can put such
    a mark into a root-owned directory, so a mark someone else wrote does not make a directory ours."""
    uid = expected_owner()[0]
    try:
        st = os.lstat(path)
    except OSError:
        return 'it does not exist'
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return 'it is not a directory'
    mark_path = os.path.join(path, names.HOST_DIR_MARK)
    try:
        mark = os.lstat(mark_path)
    except OSError:
        return 'it has no %s mark' % names.HOST_DIR_MARK
    if not stat.S_ISREG(mark.st_mode):
        return 'its %s mark is not a regular file' % names.HOST_DIR_MARK
    who = 'root' if uid == 0 else 'uid %d' % uid
    if st.st_uid != uid:
        return ('it is owned by uid %d, not by %s (a %s mark in it may be someone else\'s)'
                % (st.st_uid, who, names.HOST_DIR_MARK))
    if mark.st_uid != uid:
        return ('its %s mark is owned by uid %d, not by %s (someone else put it there)'
                % (names.HOST_DIR_MARK, mark.st_uid, who))
    return None


def host_dir_owned(path):
    """``path`` is our working directory (see host_dir_mark_problem)."""
    return host_dir_mark_problem(path) is None


def state_dir_problem(state_dir):
    """Why nothing may be written into ``state_dir`` (``<host_dir>/state``), or None.

    Only into our working directory: its parent carries our mark (host_dir_owned), and the
    state directory itself is missing (it is then created 0700 inside ours) or a real directory
    owned by root. A collect on a host where nothing of ours was deployed writes nothing."""
    host_dir = os.path.dirname(state_dir)
    problem = host_dir_mark_problem(host_dir)
    if problem is not None:
        return '%s is not our working directory: %s' % (host_dir, problem)
    try:
        st = os.lstat(state_dir)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return '%s is not a directory' % state_dir
    if st.st_uid != expected_owner()[0]:
        return '%s is owned by uid %d' % (state_dir, st.st_uid)
    return None
