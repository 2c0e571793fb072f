# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin kprobes.fleet.probe_spec: validate and normalize the probe list.

Runs on the controller only; it never connects to the host. Documentation lives in
plugins/modules/probe_spec.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.plugins.action import ActionBase

from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import (
    ProbeSpecError,
    normalize,
    validate_module_name,
)

ARGUMENT_SPEC = {
    'probes': {'type': 'raw'},
    'module_name': {'type': 'str', 'default': 'kprobes_fleet'},
}


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            module_name = validate_module_name(args['module_name'])
            probes = normalize(args['probes'])
        except ProbeSpecError as e:
            result.update(failed=True, msg=str(e))
            return result
        result.update(changed=False, probes=probes, module_name=module_name)
        return result
