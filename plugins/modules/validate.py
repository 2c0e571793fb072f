# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: validate
short_description: Check the kprobes.fleet variables of a host before any host task
description:
  - Checks every public C(kprobes_fleet_*) variable it is given (missing ones take their
    default) with the same rules the host modules apply, and returns the normalised values.
    The probe list is checked (and normalised) with the spec rules when
    C(kprobes_fleet_state=present) and O(check_probes=true).
  - It does not fail by itself; it returns RV(errors). A second call with O(report) and
    C(run_once) fails once for the whole play, each distinct error once with the hosts that have
    it. The role C(kprobes.fleet.validate) does both and is what every playbook and role runs first.
  - This is an action plugin; it runs on the controller only and never connects to the host.
  - "Rules: C(kprobes_fleet_module_name) a lower-case C identifier that is not a C(/sys/kernel)
    entry; C(kprobes_fleet_host_dir) an absolute normalised path of its own (not C(/), not a
    shared system directory such as C(/var/lib), not below C(/tmp)); C(kprobes_fleet_cache_dir)
    an absolute controller path after C(~) expansion of an existing user, without control characters,
    not a system directory (C(/var/lib), C(/usr/bin), anything below C(/usr) or C(/etc)), not a home
    directory itself, owned by the controller user and not group/world-writable; C(kprobes_fleet_build_timeout)
    60-86400; booleans true/false (or yes/no/on/off/1/0); C(kprobes_fleet_build_host) empty or an
    inventory host."
author:
  - kprobes.fleet developers (@kprobes-fleet)
options:
  kprobes_fleet_probes: {description: The probe list., type: raw}
  kprobes_fleet_module_name: {description: Kernel module name., type: raw}
  kprobes_fleet_state: {description: V(present) or V(absent)., type: raw}
  kprobes_fleet_backend: {description: 'V(auto), V(module) or V(tracefs).', type: raw}
  kprobes_fleet_build_host: {description: Empty or an inventory host., type: raw}
  kprobes_fleet_cache_dir: {description: Controller module cache., type: raw}
  kprobes_fleet_host_dir: {description: Working directory on the hosts., type: raw}
  kprobes_fleet_build_timeout: {description: Seconds to wait for another host's build., type: raw}
  kprobes_fleet_build_keep_dir: {description: Boolean., type: raw}
  kprobes_fleet_load_state: {description: V(present) or V(absent)., type: raw}
  kprobes_fleet_load_purge: {description: Boolean., type: raw}
  kprobes_fleet_headers_release: {description: Empty or a kernel release., type: raw}
  kprobes_fleet_headers_update_cache: {description: Boolean., type: raw}
  kprobes_fleet_headers_extra_packages: {description: List of package names., type: raw}
  kprobes_fleet_signing_key:
    description:
      - Empty (modules are not signed) or the absolute controller path of the PEM private key modules are
        signed with, without a passphrase. Must be readable by its owner only, unless it is an ansible-vault
        file (decrypted here with the run's vault passwords); never writable by others. Set together
        with O(kprobes_fleet_signing_cert); it must be the private key of that cert.
    type: raw
  kprobes_fleet_signing_cert:
    description:
      - Empty or the absolute controller path of the X.509 cert (PEM or DER, may be vault-encrypted, not
        writable by others) that goes with O(kprobes_fleet_signing_key).
    type: raw
  kprobes_fleet_report:
    description:
      - Empty (no report) or the controller path of the HTML fleet report (absolute or starting with
        C(~), ending in C(.html), in an existing directory the controller user may write to). An existing
        file there is replaced only if it is a regular file owned by the controller user holding a
        kprobes.fleet report; symbolic links, devices, other files and other users' files (even reports)
        are refused.
    type: raw
  kprobes_fleet_persist: {description: Boolean., type: raw}
  kprobes_fleet_lock_wait: {description: Seconds (0-86400)., type: raw}
  kprobes_fleet_unlock: {description: Empty or a run id (16 lower-case hex digits)., type: raw}
  kprobes_fleet_metrics: {description: V(off) (or V(false)) or V(textfile)., type: raw}
  kprobes_fleet_metrics_dir: {description: An absolute normalised directory path., type: raw}
  kprobes_fleet_metrics_interval: {description: Seconds (1-3600)., type: raw}
  kprobes_fleet_events:
    description:
      - Empty (no events) or the event forwarder's settings - a mapping with C(url) (http only to the host's
        loopback, else https), optional C(token) and the integer knobs of README "Events", each within its
        bounds. Unknown keys, other schemes, credentials in the URL and shell or template characters are
        refused.
    type: raw
  kprobes_fleet_log_exempt:
    description:
      - Processes whose matches are counted (in C(exempted)) but never written to the kernel log - the log readers,
        whose own failures would feed back. A list of at most 16 process names as in a probe's C(filter.comm)
        (exact, or a prefix with a trailing C(*)); an empty list exempts nobody. Default
        C([systemd-journal, rsyslogd, syslog-ng, klogd]). A probe's own C(log_exempt) overrides it.
    type: raw
  check_probes:
    description: Check C(kprobes_fleet_probes) (with C(kprobes_fleet_state=present)).
    type: bool
    default: true
  build_plan:
    description: A build plan given to the C(probe_build) role, checked against the spec rules and the cache.
    type: raw
  load_plan:
    description: A build plan given to the C(probe_load) role.
    type: raw
  report:
    description: Host name to its list of errors (the RV(errors) of the first call); fails once if any.
    type: dict
  report_file:
    description:
      - Checks only this path with the rules of O(kprobes_fleet_report) and fails when it may not be written;
        the role C(kprobes.fleet.fleet_report) calls it right before it writes.
    type: raw
attributes:
  action:
    support: full
  async:
    support: none
  become:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
  connection:
    support: none
  delegation:
    support: none
    details: Nothing runs on the host.
  diff_mode:
    support: none
  platform:
    platforms: all
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
'''

EXAMPLES = r'''
- name: Check the variables of every host
  kprobes.fleet.validate:
    kprobes_fleet_host_dir: "{{ kprobes_fleet_host_dir | default(omit) }}"
  register: checked

- name: Fail once for the play
  kprobes.fleet.validate:
    report: "{{ dict(ansible_play_batch | zip(ansible_play_batch | map('extract', hostvars, ['checked', 'errors']))) }}"
  run_once: true
'''

RETURN = r'''
errors:
  description: What is wrong with this host's variables, one sentence each.
  returned: without O(report)
  type: list
  elements: str
values:
  description: The normalised variables (C(kprobes_fleet_probes) normalised when checked).
  returned: without O(report)
  type: dict
sha256:
  description: The sha256 of the cached module of O(load_plan) (V(null) without one).
  returned: without O(report)
  type: str
'''
