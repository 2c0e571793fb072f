# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: probe_spec
short_description: Validate and normalize a kprobes.fleet probe list
description:
  - Checks the probe list (usually C(kprobes_fleet_probes)) on the controller and returns
    the normalized spec that the rest of the collection works with.
  - A bad spec fails with a message that names the probe and the field, before any host is
    touched. Every string that later reaches the generated kernel module passes this check.
  - An empty or undefined list means the presets C(open_failures) and C(disk_full).
  - This is an action plugin; it runs on the controller only and never connects to the host.
author:
  - kprobes.fleet developers (@kprobes-fleet)
options:
  probes:
    description:
      - The probe list. Each entry is a preset name (C(open_failures), C(disk_full)) or a
        mapping with the keys below.
      - C(name) (required) is a C identifier in lower case, at most 32 characters, unique.
      - "C(function) (required) is a candidate or a list of 1 to 8 candidates; the first
        one that the host's kernel has and allows is probed. A candidate is a kernel symbol,
        or C({function: symbol, returns: type}) for a function whose return type differs from
        the probe's (for example the name a newer kernel gave it). Compiler clones such as
        C(.isra.0) are refused."
      - C(returns) is how the return value is read, C(long) (default), C(int) or C(errptr)
        (an error pointer counts as its errno, any other pointer as 0); it applies to the
        candidates given without a type of their own.
      - "C(report) selects the matches, C(negative) (default), C(nonzero), C(any), a list of
        errno names, or C({errno: [ENOSPC, EDQUOT]})."
      - C(maxactive) (1-4096, default 64) is how many calls can be in flight at once; at most
        32 probes and 8192 in total.
      - C(log) (default true), C(log_burst) (1-100000, default 100) and C(log_interval)
        (seconds, 1-3600, default 5) control the rate-limited log line per match.
    type: raw
  module_name:
    description:
      - Name of the kernel module, C(^[a-z][a-z0-9_]{0,55}$).
    type: str
    default: kprobes_fleet
attributes:
  action:
    support: full
  async:
    support: none
  become:
    support: none
  bypass_host_loop:
    support: none
  connection:
    support: none
    details: It runs on the controller and never connects to the host.
  delegation:
    support: none
    details: Nothing runs on the host, so delegation has no effect.
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: all
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
notes:
  - The normalized spec is documented in C(docs/architecture.md) of the collection.
'''

EXAMPLES = r'''
- name: Validate the probe list before touching any host
  kprobes.fleet.probe_spec:
    probes: "{{ kprobes_fleet_probes | default(omit) }}"
    module_name: "{{ kprobes_fleet_module_name | default('kprobes_fleet') }}"
  run_once: true
  register: kprobes_fleet_spec

- name: A preset by name plus a custom probe
  kprobes.fleet.probe_spec:
    probes:
      - disk_full
      - name: fsync_errors
        function: [vfs_fsync_range]
        returns: int
        report: [EIO, ENOSPC]

- name: Candidates with their own return types (one spec for old and new kernels)
  kprobes.fleet.probe_spec:
    probes:
      - name: open_errors
        returns: errptr
        function:
          - do_filp_open
          - {function: do_sys_openat2, returns: int}
'''

RETURN = r'''
probes:
  description:
    - The normalized probe list, in the user's order, every key present.
    - "C(functions) lists the candidates as C({function, returns}) mappings, each with its own
      return type (the probe's C(returns) when the input gave a bare name)."
  returned: success
  type: list
  elements: dict
  sample:
    - name: disk_full
      functions: [{function: vfs_write, returns: long}]
      returns: long
      report: errno
      errnos: [EDQUOT, ENOSPC]
      maxactive: 1024
      log: true
      log_burst: 100
      log_interval: 5
module_name:
  description: The validated kernel module name.
  returned: success
  type: str
  sample: kprobes_fleet
'''
