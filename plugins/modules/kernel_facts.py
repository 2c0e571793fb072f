#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: kernel_facts
short_description: Gather the kernel facts kprobes.fleet needs to build and load probes
description:
  - Reports the running kernel (architecture, release, build version), the distribution,
    whether kprobes and kretprobes are configured, module loading restrictions (lockdown,
    signature enforcement, C(modules_disabled)), whether kernel headers are installed,
    which candidate symbol each probe would attach to, and which kprobes.fleet module is loaded.
  - A candidate symbol is usable when C(/proc/kallsyms) lists exactly one text symbol (type C(t)
    or C(T)) of that name and it is not in the kprobes blacklist
    (C(/sys/kernel/debug/kprobes/blacklist), used when readable).
  - A name listed as a text symbol more than once (static functions of the same name in
    different files, or a module function named like a C(vmlinux) one) is V(ambiguous) and
    never chosen, because the kernel would probe whichever copy it finds first.
  - Read-only. A probe without a usable candidate does not make this module fail; the
    resulting C(functions) entry is V(null), C(suggestions) names the probe-able functions of
    this kernel whose names are closest to its candidates, and the caller decides.
  - Fails when C(/proc/kallsyms) cannot be read while O(probes) is not empty.
author:
  - kprobes.fleet developers (@kprobes-fleet)
extends_documentation_fragment: [kprobes.fleet.names.module]
options:
  probes:
    description:
      - The probe spec (a list of dicts), checked with the rules of C(kprobes_fleet_probes) (a bad
        item fails naming the probe and the field); each probe's candidate symbols are resolved
        in order of preference. The normalized spec passes unchanged.
      - An empty list resolves nothing (it does not mean the default presets here).
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
    description: The module only reads; it behaves the same in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
  facts:
    support: full
    description: Returns C(ansible_facts.kprobes_fleet_kernel).
notes:
  - Needs root (or C(CAP_SYSLOG) and read access to debugfs) for the kprobes blacklist;
    without it the blacklist is not consulted and RV(ansible_facts.kprobes_fleet_kernel.blacklist_readable)
    is V(false).
seealso:
  - module: kprobes.fleet.probe_module
  - module: kprobes.fleet.probe_facts
'''

EXAMPLES = r'''
- name: Gather kernel facts for the configured probes
  kprobes.fleet.kernel_facts:
    probes:
      - name: disk_full
        functions: [vfs_write, ksys_write]
      - name: open_failures
        functions: [do_sys_openat2, do_sys_open]

- name: Fail early on hosts that cannot run kretprobes
  ansible.builtin.assert:
    that:
      - ansible_facts.kprobes_fleet_kernel.kretprobes is not false
      - ansible_facts.kprobes_fleet_kernel.functions.disk_full is not none
'''

RETURN = r'''
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    kprobes_fleet_kernel:
      description: What kprobes.fleet needs to know about the running kernel.
      returned: always
      type: dict
      contains:
        arch:
          description: Machine architecture (C(uname -m)).
          type: str
          returned: always
          sample: x86_64
        release:
          description: Kernel release (C(uname -r)).
          type: str
          returned: always
          sample: 6.1.0-56-amd64
        version:
          description: Kernel build version (C(uname -v)).
          type: str
          returned: always
          sample: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.153-1 (2025-09-20)"
        distro:
          description: Distribution from C(/etc/os-release) (or C(/usr/lib/os-release)).
          type: dict
          returned: always
          contains:
            id:
              description: C(ID), or V(null) when unknown.
              type: str
              returned: always
              sample: debian
            version_id:
              description: C(VERSION_ID), or V(null).
              type: str
              returned: always
              sample: "12"
            id_like:
              description: C(ID_LIKE) split into words.
              type: list
              elements: str
              returned: always
              sample: [rhel, centos, fedora]
            family:
              description: One of V(debian), V(redhat), V(suse), V(other).
              type: str
              returned: always
              sample: debian
        kprobes:
          description: C(CONFIG_KPROBES=y); V(null) when no kernel config was found.
          type: bool
          returned: always
          sample: true
        kretprobes:
          description: C(CONFIG_KRETPROBES=y); V(null) when no kernel config was found.
          type: bool
          returned: always
          sample: true
        config_source:
          description:
            - The kernel config that was read; C(/boot/config-<release>), then
              C(/proc/config.gz), then C(/lib/modules/<release>/build/.config); V(null) if none.
          type: str
          returned: always
          sample: /boot/config-6.1.0-56-amd64
        cc_version_text:
          description: C(CONFIG_CC_VERSION_TEXT), the compiler the kernel was built with.
          type: str
          returned: always
          sample: gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0
        modules_disabled:
          description: C(/proc/sys/kernel/modules_disabled) is 1; V(null) if unreadable.
          type: bool
          returned: always
          sample: false
        lockdown:
          description: Active kernel lockdown mode (the bracketed word of
            C(/sys/kernel/security/lockdown)); V(null) when lockdown is not available.
          type: str
          returned: always
          sample: none
        sig_enforce:
          description:
            - Unsigned modules are rejected. From C(/sys/module/module/parameters/sig_enforce),
              else C(CONFIG_MODULE_SIG_FORCE); V(null) when neither is known.
          type: bool
          returned: always
          sample: false
        tracefs:
          description:
            - Whether the tracefs backend (M(kprobes.fleet.tracefs_probes)) can run on this host.
            - Unusable when tracefs is not mounted or has no C(kprobe_events)
              (C(CONFIG_KPROBE_EVENTS) off), or when lockdown is V(confidentiality) (it blocks
              tracefs and kprobes; lockdown V(integrity) does not).
          type: dict
          returned: always
          contains:
            usable:
              description: The tracefs backend can run.
              type: bool
              returned: always
              sample: true
            reason:
              description: One sentence saying why it cannot, V(null) when usable.
              type: str
              returned: always
              sample: null
            path:
              description: The tracefs mount with C(kprobe_events) (C(/sys/kernel/tracing), else
                C(/sys/kernel/debug/tracing)), V(null) if none.
              type: str
              returned: always
              sample: /sys/kernel/tracing
            hist:
              description:
                - Hist triggers are available (C(CONFIG_HIST_TRIGGERS)), detected by the C(hist)
                  file the kernel creates next to every event's C(trigger) file only with that
                  option. They count the matches; without them (Debian 11's 5.10 kernel) every
                  probe gets a counting instance instead, just as exact.
              type: bool
              returned: always
              sample: true
        headers:
          description: C(/lib/modules/<release>/build/Makefile) exists.
          type: bool
          returned: always
          sample: true
        blacklist_readable:
          description: The kprobes blacklist could be read and was applied to candidates.
          type: bool
          returned: always
          sample: true
        functions:
          description: Probe name to the first usable candidate symbol, or V(null).
          type: dict
          returned: always
          sample: {disk_full: vfs_write, open_failures: do_sys_openat2}
        candidates:
          description:
            - Probe name to a dict of candidate symbol to its status.
            - V(ok) (usable), V(absent) (no text symbol of that name), V(ambiguous) (several
              text symbols of that name, module symbols included) or V(blacklisted) (on the
              kprobes blacklist).
          type: dict
          returned: always
          sample: {open_failures: {do_sys_openat2: ok, do_sys_open: absent}}
        suggestions:
          description:
            - Only for probes without a usable candidate (their C(functions) entry is V(null)),
              probe name to up to 5 functions of this kernel whose names are closest to the
              probe's candidates (difflib similarity of at least 0.6), best first.
            - Only probe-able functions are named - exactly one text symbol of that name in
              C(/proc/kallsyms), not on the kprobes blacklist (when readable), no compiler
              clones (C(.isra), C(.cold) ...) and no C(__pfx_)/C(__cfi_) symbols - so any of
              them can replace a candidate in the spec as is. An empty list when none is close.
          type: dict
          returned: always
          sample: {open_failures: [do_file_open, filp_open, dquot_file_open]}
        loaded:
          description: The kprobes.fleet module currently loaded under O(module).
          type: dict
          returned: always
          contains:
            module:
              description: The module name asked about.
              type: str
              returned: always
              sample: kprobes_fleet
            present:
              description: C(/sys/module/<module>) exists (a module of that name is loaded, ours or not).
              type: bool
              returned: always
              sample: true
            ours:
              description: The loaded module carries the kprobes.fleet marker (C(/sys/kernel/<module>/marker)).
              type: bool
              returned: always
              sample: true
            conflict:
              description:
                - Why this name cannot be ours on this host, or V(null) - a loaded module of that
                  name that is not ours, a C(/sys/kernel/<module>) entry that is not ours, or a
                  module of the running kernel with that name. Nothing is loaded or unloaded then.
              type: str
              returned: always
              sample: null
            spec_hash:
              description: Content of C(/sys/kernel/<module>/spec_hash) of our loaded module, or V(null).
              type: str
              returned: always
              sample: 3f2a9c0d11e4b7a5
'''

import difflib
import gzip
import os
import re
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kprobes.fleet.plugins.module_utils import names, probe_spec
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import module_policy, read_text
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import ModuleSysfs
from ansible_collections.kprobes.fleet.plugins.module_utils.tracefs_support import availability
from ansible.module_utils.common.text.converters import to_native

CONFIG_LINE_RE = re.compile(r'^(CONFIG_[A-Za-z0-9_]+)=(.*)$')
CONFIG_UNSET_RE = re.compile(r'^# (CONFIG_[A-Za-z0-9_]+) is not set$')

DEBIAN_IDS = frozenset(['debian', 'ubuntu', 'linuxmint', 'pop', 'raspbian', 'kali', 'devuan'])
REDHAT_IDS = frozenset(['rhel', 'centos', 'fedora', 'rocky', 'almalinux', 'ol', 'amzn',
                        'cloudlinux', 'eurolinux', 'navy', 'circle'])
# Closest probe-able functions named when no candidate of a probe exists.
MAX_SUGGESTIONS = 5
SUGGESTION_CUTOFF = 0.6
# A match of the names without their first word counts a little less than a whole-name match.
CORE_WEIGHT = 0.9
# Text symbols that are not functions one would probe: the padding before every function
# (CONFIG_CALL_PADDING, x86 6.2+), kCFI type hashes, and the syscall metadata arrays that
# kallsyms lists as 't' (args__mkdirat, types__mkdirat: init data, seen on 7.2).
NOT_FUNCTION_PREFIXES = ('__pfx_', '__cfi_', 'args__', 'types__')
_FUNCTION_RE = re.compile(probe_spec.FUNCTION_PATTERN[1:-1])

SUSE_IDS = frozenset(['suse', 'sles', 'sled', 'sles_sap', 'opensuse', 'opensuse-leap',
                      'opensuse-tumbleweed', 'opensuse-microos', 'sle-micro'])


def parse_kallsyms(lines):
    """Text symbols (type t/T) of /proc/kallsyms lines: a dict of name -> number of entries.

    Lines are ``ADDR TYPE NAME`` or ``ADDR TYPE NAME\\t[module]``; module symbols count too,
    so a name present in vmlinux and in a module (or static in several files) has a count > 1.
    """
    names = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ('t', 'T'):
            names[parts[2]] = names.get(parts[2], 0) + 1
    return names


def _core(name):
    """A name without its first word: ``do_filp_open`` -> ``filp_open`` (renames often change
    the prefix: ``do_mkdirat`` -> ``filename_mkdirat`` in 7.x); a one-word name is itself."""
    head, sep, rest = name.lstrip('_').partition('_')
    return rest.lstrip('_') if sep and rest.strip('_') else name


def _ratio(matcher, name, cutoff):
    """difflib's ratio of name against the matcher's fixed name, 0 when it cannot reach cutoff."""
    matcher.set_seq1(name)
    if matcher.real_quick_ratio() < cutoff or matcher.quick_ratio() < cutoff:
        return 0.0
    return matcher.ratio()


def closest_symbols(wanted, symbols, blacklisted, limit=MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF):
    """The probe-able symbols whose names are closest to any of ``wanted``, best first.

    Probe-able: one text symbol of that name (``symbols`` from parse_kallsyms), not on the
    kprobes blacklist, a plain name the spec accepts (no ``.isra``/``.cold`` clones), not a
    ``__pfx_``/``__cfi_`` symbol. Only symbols that contain a word (3 letters or more) of a
    wanted name are compared (all of them when a wanted name has no such word), so a kernel's
    ~170000 symbols cost a fraction of a second. A symbol's score against a wanted name is
    difflib's ratio of the two names, or, when higher, CORE_WEIGHT times the ratio of the wanted
    name without its first word (``_core``) against the symbol or its own core (renames that
    change a prefix); its best score over the wanted names, at least ``cutoff``; ties by the
    whole names' ratio, then by name."""
    words = set()
    scan_all = False
    for name in wanted:
        own = [w for w in name.split('_') if len(w) >= 3]
        words.update(own)
        scan_all = scan_all or not own
    words = tuple(words)
    pool = [s for s, count in symbols.items()
            if count == 1 and (scan_all or any(w in s for w in words))
            and s not in blacklisted and not s.startswith(NOT_FUNCTION_PREFIXES)
            and _FUNCTION_RE.fullmatch(s) and s not in wanted]
    full = difflib.SequenceMatcher()
    core = difflib.SequenceMatcher()
    best = {}
    for name in wanted:
        full.set_seq2(name)
        core.set_seq2(_core(name))
        for sym in pool:
            whole = _ratio(full, sym, cutoff)
            part = CORE_WEIGHT * max(_ratio(core, sym, cutoff), _ratio(core, _core(sym), cutoff))
            score = (max(whole, part), whole)
            if score[0] >= cutoff and score > best.get(sym, (0.0, 0.0)):
                best[sym] = score
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    return [sym for sym, _score in ranked[:limit]]


def parse_blacklist(text):
    """Symbols of /sys/kernel/debug/kprobes/blacklist (``0xADDR-0xADDR\\tsymbol [mod]``)."""
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith('0x'):
            names.add(parts[1])
    return names


def parse_kconfig(text):
    """Kernel config text -> dict; ``# CONFIG_X is not set`` maps to ``'n'``, strings unquoted."""
    config = {}
    for line in text.splitlines():
        line = line.strip()
        m = CONFIG_LINE_RE.match(line)
        if m:
            value = m.group(2)
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace('\\\\', '\\')
            config[m.group(1)] = value
            continue
        m = CONFIG_UNSET_RE.match(line)
        if m:
            config[m.group(1)] = 'n'
    return config


def parse_os_release(text):
    data = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#') or '=' not in line:
            continue
        key, value = line.split('=', 1)
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip('"\'')]
        data[key.strip()] = ' '.join(words)
    return data


def os_family(os_id, id_like):
    ids = [os_id or ''] + list(id_like or [])
    for i in ids:
        if i in DEBIAN_IDS:
            return 'debian'
    for i in ids:
        if i in REDHAT_IDS:
            return 'redhat'
    for i in ids:
        if i in SUSE_IDS or i.startswith('opensuse') or i.startswith('sle'):
            return 'suse'
    return 'other'


class KernelFacts(object):
    """Collects the facts; every path is resolved below ``root`` so tests can fake a host."""

    def __init__(self, module, root='/', uname=None):
        self.module = module
        self.root = root
        self.uname = uname or os.uname()
        self.release = self.uname.release

    def path(self, *parts):
        return os.path.join(self.root, *[p.lstrip('/') for p in parts])

    def distro(self):
        text = read_text(self.path('etc/os-release'))
        if text is None:
            text = read_text(self.path('usr/lib/os-release'), '')
        data = parse_os_release(text)
        id_like = data.get('ID_LIKE', '').split()
        os_id = data.get('ID') or None
        return {
            'id': os_id,
            'version_id': data.get('VERSION_ID') or None,
            'id_like': id_like,
            'family': os_family(os_id, id_like),
        }

    def kernel_config(self):
        boot = self.path('boot', 'config-%s' % self.release)
        text = read_text(boot)
        if text is not None:
            return parse_kconfig(text), '/boot/config-%s' % self.release
        gz = self.path('proc/config.gz')
        try:
            with gzip.open(gz, 'rb') as f:
                return parse_kconfig(f.read().decode('utf-8', 'replace')), '/proc/config.gz'
        except (IOError, OSError, EOFError):
            pass
        build = '/lib/modules/%s/build/.config' % self.release
        text = read_text(self.path(build))
        if text is not None:
            return parse_kconfig(text), build
        return None, None

    def kallsyms(self):
        path = self.path('proc/kallsyms')
        try:
            with open(path, 'rb') as f:
                names = parse_kallsyms(line.decode('utf-8', 'replace') for line in f)
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot read /proc/kallsyms: %s' % to_native(e))
        if not names:
            self.module.fail_json(msg='/proc/kallsyms lists no text symbols; '
                                      'is the kernel built with CONFIG_KALLSYMS?')
        return names

    def blacklist(self):
        text = read_text(self.path('sys/kernel/debug/kprobes/blacklist'))
        if text is None:
            return set(), False
        return parse_blacklist(text), True

    def resolve(self, probes):
        """(functions, candidates, suggestions, blacklist_readable); see RETURN."""
        functions = {}
        candidates = {}
        suggestions = {}
        blacklist_readable = False
        if not probes:
            return functions, candidates, suggestions, blacklist_readable
        symbols = self.kallsyms()
        blacklisted, blacklist_readable = self.blacklist()
        for probe in probes:
            name = probe['name']
            status = {}
            chosen = None
            for sym in probe_spec.candidate_symbols(probe):
                count = symbols.get(sym, 0)
                if count == 0:
                    status[sym] = 'absent'
                elif count > 1:
                    status[sym] = 'ambiguous'
                elif sym in blacklisted:
                    status[sym] = 'blacklisted'
                else:
                    status[sym] = 'ok'
                    if chosen is None:
                        chosen = sym
            functions[name] = chosen
            candidates[name] = status
            if chosen is None:
                suggestions[name] = closest_symbols(probe_spec.candidate_symbols(probe), symbols, blacklisted)
        return functions, candidates, suggestions, blacklist_readable

    def tracefs(self, lockdown):
        """tracefs backend availability; the path as the host sees it (not below a test root)."""
        result = availability(self.root, lockdown)
        if result['path'] is not None:
            result['path'] = '/' + os.path.relpath(result['path'], self.root)
        return result

    def loaded(self, name):
        sysfs = ModuleSysfs(name, self.root)
        ours = sysfs.ours()
        return {
            'module': name,
            'spec_hash': sysfs.spec_hash() if ours else None,
            'present': sysfs.loaded(),
            'ours': ours,
            'conflict': sysfs.conflict(self.release),
        }

    def gather(self, probes, name):
        config, config_source = self.kernel_config()

        def flag(key):
            if config is None:
                return None
            return config.get(key) == 'y'

        policy = module_policy(self.root)
        if policy['sig_enforce'] is None and config is not None:
            policy['sig_enforce'] = config.get('CONFIG_MODULE_SIG_FORCE') == 'y'

        functions, candidates, suggestions, blacklist_readable = self.resolve(probes)
        return {
            'arch': self.uname.machine,
            'release': self.release,
            'version': self.uname.version,
            'distro': self.distro(),
            'kprobes': flag('CONFIG_KPROBES'),
            'kretprobes': flag('CONFIG_KRETPROBES'),
            'config_source': config_source,
            'cc_version_text': config.get('CONFIG_CC_VERSION_TEXT') if config else None,
            'modules_disabled': policy['modules_disabled'],
            'lockdown': policy['lockdown'],
            'sig_enforce': policy['sig_enforce'],
            'tracefs': self.tracefs(policy['lockdown']),
            'headers': os.path.isfile(self.path('lib/modules', self.release, 'build', 'Makefile')),
            'blacklist_readable': blacklist_readable,
            'functions': functions,
            'candidates': candidates,
            'suggestions': suggestions,
            'loaded': self.loaded(name),
        }


def normalize_probes(module, probes):
    """The spec checked with probe_spec's rules (no probes: nothing to resolve, not the presets)."""
    if not probes:
        return []
    try:
        return probe_spec.normalize(probes)
    except names.InvalidValue as e:
        module.fail_json(msg=str(e))


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            probes=dict(type='list', elements='dict', default=[]),
            module=dict(type='str', default='kprobes_fleet'),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    try:
        name = names.module_name(module.params['module'], 'module')
    except names.InvalidValue as e:
        module.fail_json(msg=str(e))
    probes = normalize_probes(module, module.params['probes'])
    facts = KernelFacts(module).gather(probes, name)
    module.exit_json(changed=False, ansible_facts={'kprobes_fleet_kernel': facts})


if __name__ == '__main__':
    main()
