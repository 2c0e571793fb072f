# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """Options of the modules that keep files in our working directory (module_utils host_state)."""

    DOCUMENTATION = r'''
options:
  host_dir:
    description:
      - The working directory (C(kprobes_fleet_host_dir)); the module keeps its records, cursors and copies
        in C(<host_dir>/state). An absolute, normalised path of its own (not a shared system directory, not
        below C(/tmp)).
      - The deploy creates it with our C(.kprobes-fleet) mark first (M(kprobes.fleet.host_dir)); C(state) is
        created 0700 when first needed.
    type: str
    default: /var/lib/kprobes-fleet
  state_dir:
    description:
      - Deprecated, use O(host_dir) (the directory given here was C(<host_dir>/state)); removed in 1.0.0.
      - When set, used as the directory of the records instead of C(<host_dir>/state). Not together with
        O(host_dir).
    type: str
'''

    UNITS = r'''
options:
  lib_dir:
    description:
      - Deprecated, use O(host_dir) (the directory given here was C(<host_dir>/lib)); removed in 1.0.0.
      - When set, used as the directory of the program our units run instead of C(<host_dir>/lib). Not
        together with O(host_dir).
    type: str
  unit_dir:
    description: Directory of the unit file.
    type: str
    default: /etc/systemd/system
attributes:
  check_mode:
    support: full
    description: Reports what would change; writes nothing and runs no C(systemctl) command that changes anything.
  diff_mode:
    support: none
    description: No diff.
notes:
  - Needs root and systemd.
'''
