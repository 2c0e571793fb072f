# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin kprobes.fleet.validate: check every public variable before any host task.

Runs on the controller only. Documentation lives in plugins/modules/validate.py; the rules in
plugins/plugin_utils/settings.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.plugins.action import ActionBase

from ansible_collections.kprobes.fleet.plugins.module_utils import names
from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings

ARGUMENT_SPEC = dict(
    dict((name, {'type': 'raw'}) for name in settings.PUBLIC),
    check_probes={'type': 'bool', 'default': True},
    build_plan={'type': 'raw'},
    load_plan={'type': 'raw'},
    report={'type': 'dict'},
    report_file={'type': 'raw'},
)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if args['report_file'] is not None:
            # the fleet_report role, right before it writes: the same rule as kprobes_fleet_report
            try:
                path = settings.PUBLIC['kprobes_fleet_report'][1]('kprobes_fleet_report', args['report_file'])
            except names.InvalidValue as e:
                result.update(failed=True, msg='kprobes.fleet: nothing was written: %s' % e)
                return result
            if not path:
                result.update(failed=True, msg='kprobes.fleet: nothing was written: kprobes_fleet_report is empty')
                return result
            result.update(changed=False, path=path, msg='%s may be written' % path)
            return result
        if args['report'] is not None:
            lines = settings.report(args['report'])
            if lines:
                result.update(failed=True, msg='kprobes.fleet: invalid variables, nothing was changed on '
                                               'any host: ' + ' | '.join(lines))
            else:
                result.update(changed=False, msg='all variables are valid')
            return result
        given = dict((k, v) for k, v in self._task.args.items() if k in settings.PUBLIC)
        plans = dict((role, args[role + '_plan']) for role in ('build', 'load')
                     if args[role + '_plan'] is not None)
        values, errors, sha256 = settings.check(given, task_vars.get('inventory_hostname', '?'),
                                                task_vars.get('groups', {}).get('all', []),
                                                check_probes=args['check_probes'], plans=plans,
                                                decrypt=self._decrypt)
        result.update(changed=False, errors=errors, values=values, sha256=sha256)
        return result

    def _decrypt(self, data, path):
        """An ansible-vault file's content, decrypted in memory with this run's vault secrets."""
        return settings.vault_decrypt(self._loader, data, path)
