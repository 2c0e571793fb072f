# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """The name options of the host modules (module_utils names.module_name)."""

    DOCUMENTATION = r'''
options:
  name:
    description:
      - The name of the probe set, C(kprobes_fleet_module_name) (C(^[a-z][a-z0-9_]{0,55}$), not a name the
        kernel uses in C(/sys/kernel)) - the kernel module, and for the tracefs backend the trace event group
        and the tracing instance.
    type: str
    required: true
'''

    MODULE = r'''
options:
  module:
    description:
      - The name of the probe set, C(kprobes_fleet_module_name) (C(^[a-z][a-z0-9_]{0,55}$)) - the kernel module,
        and for the tracefs backend the trace event group and the tracing instance.
    type: str
    default: kprobes_fleet
'''
