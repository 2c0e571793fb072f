# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter kprobes.fleet.backend_choice: which backend a host runs, and why.

The only place the choice is made (role kprobes.fleet.probe_deploy reads it as
__kprobes_fleet_choice). Pure: kernel facts and checked settings in, [backend, reason] out.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
name: backend_choice
short_description: Choose the kprobes.fleet backend of a host from its kernel facts
version_added: 0.1.0
author:
  - kprobes.fleet developers (@kprobes-fleet)
description:
  - Takes a host's C(ansible_facts.kprobes_fleet_kernel) (as set by M(kprobes.fleet.kernel_facts)) and
    returns C([backend, reason]), C(backend) being V(module), V(tracefs) or V(none) (the host cannot run
    what was asked; C(reason) says why in one sentence).
  - V(module) is blocked by a kernel without kprobes or kretprobes and by C(kernel.modules_disabled=1);
    an unsigned module also by lockdown and C(module.sig_enforce=1), which a signing cert lifts (whether
    the kernel trusts the cert is checked when the module is loaded). A blocked V(module) stops the host
    before anything is built (the kernel would refuse the load).
  - V(auto) picks V(module) when nothing blocks it, else V(tracefs) when tracefs is usable.
options:
  _input:
    description: The host's C(kprobes_fleet_kernel) facts.
    type: dict
    required: true
  wanted:
    description: C(kprobes_fleet_backend) as checked.
    type: str
    choices: [auto, module, tracefs]
    required: true
  signed:
    description: Whether C(kprobes_fleet_signing_cert) is set (the module is signed).
    type: bool
    default: false
  probes:
    description:
      - The checked probe list (C(kprobes_fleet_probes) as validated). The tracefs backend does not capture
        arguments nor time calls, so for a probe with C(args) (its own or a candidate's) or C(latency) /
        C(slower_than) V(auto) picks V(module) and says so, and V(tracefs) is refused with one sentence
        naming the probes.
    type: list
    elements: dict
    default: []
'''

EXAMPLES = r'''
- name: Choose the backend of this host
  ansible.builtin.set_fact:
    choice: "{{ ansible_facts['kprobes_fleet_kernel'] | kprobes.fleet.backend_choice('auto', signed=false) }}"
'''

RETURN = r'''
_value:
  description: C([backend, reason]), C(backend) one of V(module), V(tracefs), V(none).
  type: list
  elements: str
'''

from ansible_collections.kprobes.fleet.plugins.module_utils.probe_spec import module_only

NO_TRACEFS = {'usable': False, 'reason': 'kernel_facts reported no tracefs'}
SIGNING_HINT = ' (signed modules need a key the kernel trusts; kprobes_fleet_backend=auto or tracefs needs none)'


def hard_blockers(kernel):
    """What stops any module, signed or not."""
    blockers = []
    if kernel.get('kprobes') is False or kernel.get('kretprobes') is False:
        blockers.append('kprobes or kretprobes are not configured in this kernel')
    if kernel.get('modules_disabled') is True:
        blockers.append('module loading is disabled (kernel.modules_disabled=1)')
    return blockers


def signature_blockers(kernel, signed):
    """What stops an unsigned module; nothing once it is signed."""
    if signed:
        return []
    blockers = []
    if kernel.get('lockdown') not in (None, 'none'):
        blockers.append('lockdown=%s refuses unsigned modules' % kernel['lockdown'])
    if kernel.get('sig_enforce') is True:
        blockers.append('module.sig_enforce=1 refuses unsigned modules')
    return blockers


def _module(hard, signature):
    if hard or signature:
        return ['none', 'kprobes_fleet_backend=module cannot run here: %s%s'
                % (', '.join(hard + signature), SIGNING_HINT)]
    return ['module', 'kprobes_fleet_backend=module']


def _no_args(capturing):
    """What the tracefs backend does not do for these probes ([(name, why)]), in one clause."""
    groups = []
    for name, why in capturing:
        for group in groups:
            if group[1] == why:
                group[0].append(name)
                break
        else:
            groups.append(([name], why))
    parts = []
    for group_names, why in groups:
        if len(group_names) > 1:
            why = ' and '.join(w.replace('captures ', 'capture ', 1).replace('times ', 'time ', 1)
                               for w in why.split(' and '))
        parts.append('probe%s %s %s' % ('s' if len(group_names) > 1 else '', ', '.join(group_names), why))
    return '%s, which the tracefs backend does not do' % '; '.join(parts)


def _tracefs(tracefs, capturing=()):
    if capturing:
        return ['none', 'kprobes_fleet_backend=tracefs cannot run here: %s; use kprobes_fleet_backend=module or auto'
                % _no_args(capturing)]
    if tracefs.get('usable'):
        return ['tracefs', 'kprobes_fleet_backend=tracefs']
    return ['none', 'kprobes_fleet_backend=tracefs cannot run here: %s' % tracefs.get('reason')]


def _auto(blockers, tracefs, signed, capturing=()):
    if not blockers:
        why = '; the module does what tracefs cannot (%s)' % _no_args(capturing) if capturing else ''
        if signed:
            return ['module', 'auto: the module is signed with kprobes_fleet_signing_cert (its trust is checked before loading)' + why]
        return ['module', 'auto: an unsigned module loads here (no lockdown, no signature enforcement)' + why]
    if capturing:
        return ['none', 'neither backend can run here: module: %s; tracefs: %s' % (', '.join(blockers), _no_args(capturing))]
    if tracefs.get('usable'):
        return ['tracefs', 'auto: %s; tracefs needs no module' % ', '.join(blockers)]
    return ['none', 'neither backend can run here: module: %s; tracefs: %s' % (', '.join(blockers), tracefs.get('reason'))]


def backend_choice(kernel, wanted, signed=False, probes=None):
    """[backend, reason] for a host with these kernel facts; backend 'none' stops the host with the reason."""
    signed = bool(signed)
    capturing = module_only(probes)
    hard = hard_blockers(kernel)
    signature = signature_blockers(kernel, signed)
    tracefs = kernel.get('tracefs')
    if not isinstance(tracefs, dict):
        tracefs = NO_TRACEFS
    if wanted == 'module':
        return _module(hard, signature)
    if wanted == 'tracefs':
        return _tracefs(tracefs, capturing)
    return _auto(hard + signature, tracefs, signed, capturing)


class FilterModule(object):

    def filters(self):
        return {'backend_choice': backend_choice}
