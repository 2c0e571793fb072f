#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: probe_module
short_description: Load or unload a kprobes.fleet kernel module from a C(.ko) file
description:
  - Loads a kprobes.fleet kretprobe module from a file path, which M(community.general.modprobe)
    cannot do, and unloads it with C(rmmod). The file's bytes are first copied to a private file
    (C(<host_dir>/state/<name>.loading.ko), root only), every check below runs on that copy, and the
    kernel loads it through the very descriptor whose bytes were hashed (C(finit_module(2))), the one
    load path kprobes.fleet has (also for the restore below and for the boot-time unit).
  - With O(state=present) nothing happens when the loaded module already reports the wanted
    O(spec_hash) in C(/sys/kernel/<name>/spec_hash); the file is not even read then.
  - Never touches a module that is not ours. A loaded module of that name must carry our mark
    (C(/sys/kernel/<name>/marker) reads C(kprobes.fleet)); otherwise, and when C(/sys/kernel/<name>)
    belongs to the kernel or the running kernel ships a module of that name, the task fails and
    nothing is loaded or unloaded, with O(state=present) and with O(state=absent).
  - Otherwise the file must match O(sha256), carry our mark (C(modinfo -F marker)), its vermagic
    must name the running kernel release
    and its C(MODULE_VERSION) must equal O(spec_hash); an unsigned file is refused when the kernel
    only loads signed modules (C(sig_enforce), lockdown) or module loading is disabled, and so is a
    signed file whose key the kernel does not hold (none of the C(asymmetric) keys in C(/proc/keys)
    has its id), all before anything is unloaded. A loaded module of the same name is
    removed first. When the new module fails to load, the kernel's messages are reported and
    the previously loaded module is restored from C(<host_dir>/state/<name>.loaded.ko), checked
    against the sha256 recorded when it was loaded.
  - Before the first load of a boot it saves the collector's cursor
    (C(<host_dir>/state/<name>.kmsg-cursor)) so M(kprobes.fleet.probe_facts) reports events from
    this load on.
author:
  - kprobes.fleet developers (@kprobes-fleet)
extends_documentation_fragment: [kprobes.fleet.host_state, kprobes.fleet.names]
options:
  path:
    description:
      - Path of the C(.ko) file on the managed host. Required with O(state=present).
    type: path
  sha256:
    description:
      - Expected SHA-256 hex digest of O(path). Required with O(state=present).
    type: str
  spec_hash:
    description:
      - Spec hash the module must carry (its C(MODULE_VERSION), and
        C(/sys/kernel/<name>/spec_hash) once loaded). Required with O(state=present).
    type: str
  state:
    description:
      - V(present) loads the module (reloading it when another spec is loaded),
        V(absent) unloads it.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: In check mode the file is still verified (when present) but nothing is
      loaded, unloaded or written.
  diff_mode:
    support: full
    description: Shows the loaded spec hash before and after.
notes:
  - Needs root. Uses C(rmmod) and C(modinfo) from kmod, and C(finit_module(2)) to load.
  - Never forces a load; a module built for another kernel release is refused before
    a load is tried.
  - "Signed files: the kernel lists a cert it trusts in C(/proc/keys) as C(<name>: <subject key
    identifier>) (its serial when it has none), while a module signature names its cert by issuer and
    serial (C(modinfo -F sig_key)). A signed kprobes.fleet build therefore also carries
    C(modinfo -F signer_keyid), the id C(/proc/keys) shows for its cert; a file matches when either id
    is there. When the ids or C(/proc/keys) cannot be read, a warning is given and the kernel decides."
seealso:
  - module: kprobes.fleet.kernel_facts
  - module: kprobes.fleet.probe_facts
  - module: community.general.modprobe
'''

EXAMPLES = r'''
- name: Load the probes module built for this kernel
  kprobes.fleet.probe_module:
    name: kprobes_fleet
    path: /var/lib/kprobes-fleet/modules/9b1c2d3e4f5a6b7c.ko
    sha256: "{{ kprobes_fleet_ko_sha256 }}"
    spec_hash: "{{ kprobes_fleet_spec_hash }}"

- name: Unload it
  kprobes.fleet.probe_module:
    name: kprobes_fleet
    state: absent
'''

RETURN = r'''
name:
  description: The module name.
  returned: always
  type: str
  sample: kprobes_fleet
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
spec_hash:
  description: Spec hash reported by the loaded module after the task, V(null) if not loaded.
    In check mode, the spec hash the module would have.
  returned: always
  type: str
  sample: 3f2a9c0d11e4b7a5
previous_spec_hash:
  description: Spec hash of the module that was loaded before the task, V(null) if none.
  returned: always
  type: str
  sample: 0d11e4b7a53f2a9c
loaded:
  description: Whether the module is loaded after the task (what would be, in check mode).
  returned: always
  type: bool
  sample: true
cursor_saved:
  description: A new collector cursor was saved for this boot (first load since boot).
  returned: when a module was loaded
  type: bool
  sample: true
probes:
  description: Per probe, the attached symbol and whether it is registered, from
    C(/sys/kernel/<name>/probes/*/).
  returned: when O(state=present) and the module is loaded
  type: dict
  sample: {disk_full: {function: vfs_write, registered: 1}}
msg:
  description: What was done.
  returned: always
  type: str
  sample: loaded /var/lib/kprobes-fleet/modules/9b1c2d3e4f5a6b7c.ko
'''

import fcntl
import hashlib
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, kmod_load, kmsg, names, persist
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import module_policy, read_text
from ansible_collections.kprobes.fleet.plugins.module_utils.ownership import ModuleSysfs

KERNEL_LINES_MAX = 20
# /proc/keys: "<serial> <flags> <usage> <timeout> <perm> <uid> <gid> <type> <description>", the
# type cut to 9 characters ("asymmetri"); an X.509 key's description is
# "<name>: <id hex>: X509.rsa <last 4 bytes of the SKID> []", <name> may itself contain ": ".
_KEY_ID_RE = re.compile(r': ([0-9a-fA-F]{2,})(?=: |\s*$)')


def key_id(text):
    """A key id as the kernel and kmod print it (hex, with or without colons), normalised for comparing:
    lower case, no separators, no leading zeros (a DER serial may carry one, kmod drops it)."""
    text = re.sub(r'[\s:]', '', (text or '').lower())
    if not re.fullmatch(r'[0-9a-f]+', text):
        return ''
    return text.lstrip('0') or '0'


def trusted_key_ids(text):
    """The ids of the asymmetric keys in /proc/keys (normalised with key_id), None if unreadable."""
    if text is None:
        return None
    ids = set()
    for line in text.splitlines():
        fields = line.split(None, 8)
        if len(fields) == 9 and fields[7] in ('asymmetri', 'asymmetric'):
            ids.update(key_id(m.group(1)) for m in _KEY_ID_RE.finditer(fields[8]))
    return ids


class ProbeLoader(object):
    """Load/unload decisions. Kernel paths live below ``root`` so tests can fake a host."""

    def __init__(self, module, root='/', release=None):
        self.module = module
        self.root = root
        self.release = release or os.uname().release
        params = module.params
        self.state = params['state']
        try:
            self.name = names.module_name(params['name'], 'name')
            layout = host_state.from_params(params)
            if self.state == 'present':
                self.sha256 = names.sha256(params['sha256'], 'sha256')
                self.spec_hash = names.hex16(params['spec_hash'], 'spec_hash')
        except names.InvalidValue as e:
            module.fail_json(msg=str(e))
        self.path = params['path']
        self.layout = layout
        self.state_dir = os.path.join(root, layout.state.lstrip('/'))
        self.cursor_path = host_state.state_file(self.state_dir, self.name, 'kmsg-cursor')
        self.loaded_ko = host_state.state_file(self.state_dir, self.name, 'loaded-ko')
        self.loading_ko = host_state.state_file(self.state_dir, self.name, 'loading-ko')
        self.checked = self.path  # the file modinfo reads: our private copy once verify() made it
        self.sysfs = ModuleSysfs(self.name, root)

    # -- host state ---------------------------------------------------------------------
    @property
    def kmsg_path(self):
        return os.path.join(self.root, 'dev', 'kmsg')

    @property
    def boot_id_path(self):
        return os.path.join(self.root, 'proc', 'sys', 'kernel', 'random', 'boot_id')

    def is_loaded(self):
        return self.sysfs.loaded()

    def loaded_spec_hash(self):
        return self.sysfs.spec_hash()

    def probe_status(self):
        return self.sysfs.probes(counters=('registered',))

    def refuse_foreign(self):
        """Fail, before anything is changed, when the name is not ours to load or unload."""
        why = self.sysfs.conflict(self.release)
        if why:
            self.module.fail_json(msg='%s; refusing to load or unload anything under that name '
                                      '(choose another kprobes_fleet_module_name)' % why)

    def last_seq(self):
        try:
            return kmsg.last_seq(self.kmsg_path), True
        except (IOError, OSError) as e:
            self.module.warn('cannot read %s: %s' % (self.kmsg_path, to_native(e)))
            return None, False

    def kernel_lines_after(self, seq):
        lines = []
        try:
            for rec in kmsg.read_records(self.kmsg_path):
                if seq is None or rec['seq'] > seq:
                    lines.append(rec['text'])
        except (IOError, OSError):
            pass
        return lines[-KERNEL_LINES_MAX:]

    # -- commands -----------------------------------------------------------------------
    def run(self, tool, *args):
        binary = self.module.get_bin_path(tool, required=True)
        return self.module.run_command([binary] + list(args))

    def modinfo(self, field):
        rc, out, err = self.run('modinfo', '-F', field, self.checked)
        if rc != 0:
            self.module.fail_json(msg='modinfo -F %s %s failed: %s' % (field, self.checked, (err or out).strip()))
        return out.strip()

    def rmmod(self):
        rc, out, err = self.run('rmmod', self.name)
        if rc != 0:
            self.module.fail_json(msg='rmmod %s failed: %s' % (self.name, (err or out).strip()),
                                  rc=rc, stdout=out, stderr=err)

    # -- steps --------------------------------------------------------------------------
    def verify(self):
        """Check the file's sha256; in a real run copy its bytes to our private file first, so that
        modinfo's checks and the load (kmod_load) see the same bytes: self.checked names what was checked."""
        try:
            with open(self.path, 'rb') as f:
                data = f.read()
        except (IOError, OSError) as e:
            self.module.fail_json(msg='cannot read %s: %s' % (self.path, to_native(e)))
        actual = hashlib.sha256(data).hexdigest()
        if actual != self.sha256:
            self.module.fail_json(msg='sha256 mismatch for %s: expected %s, got %s; refusing to load'
                                      % (self.path, self.sha256, actual))
        if not self.module.check_mode:
            host_state.atomic_write(self.loading_ko, data, 0o600)
            self.checked = self.loading_ko
        vermagic = self.modinfo('vermagic')
        built_for = vermagic.split()[0] if vermagic.split() else ''
        if built_for != self.release:
            self.module.fail_json(msg='%s was built for kernel %s (vermagic "%s") but the running kernel is %s; '
                                      'refusing to load' % (self.path, built_for or '(none)', vermagic, self.release))
        if self.modinfo('marker') != names.MARK:
            self.module.fail_json(msg='%s is not a kprobes.fleet module (modinfo has no marker=%s); '
                                      'refusing to load' % (self.path, names.MARK))
        version = self.modinfo('version')
        if version != self.spec_hash:
            self.module.fail_json(msg='%s carries spec_hash (MODULE_VERSION) %s, expected %s; refusing to load'
                                      % (self.path, version or '(none)', self.spec_hash))
        self.check_policy()

    def check_policy(self):
        """Refuse, before the loaded module is touched, what the kernel would refuse anyway."""
        policy = module_policy(self.root)
        if policy['modules_disabled']:
            self.module.fail_json(msg='module loading is disabled on this host (kernel.modules_disabled=1, '
                                      'until reboot); refusing to touch %s' % self.name)
        needs = []
        if policy['sig_enforce']:
            needs.append('module.sig_enforce=Y')
        if policy['lockdown'] not in (None, 'none'):
            needs.append('lockdown=%s' % policy['lockdown'])
        if not needs:
            return
        if not self.modinfo('sig_id'):
            self.module.fail_json(msg='%s is not signed and this kernel only loads signed modules (%s); '
                                      'refusing to load (the loaded module, if any, is left alone)'
                                      % (self.path, ', '.join(needs)))
        self.check_trust(needs)

    def check_trust(self, needs):
        """A signed file on a kernel that enforces signatures: refuse it, before the loaded module is
        touched, when no key the kernel holds (/proc/keys) is the one it was signed with.

        The kernel shows a cert in /proc/keys as ``<name>: <subject key identifier>`` (its serial when
        it has no SKID), while the signature names the cert by issuer and serial only (``modinfo -F
        sig_key``). So a signed kprobes.fleet build also records the id /proc/keys shows for its cert
        (``modinfo -F signer_keyid``); both ids are looked for. When neither can be read, or /proc/keys
        cannot, the kernel decides (a failed load restores the previous module)."""
        keys = trusted_key_ids(read_text(os.path.join(self.root, 'proc', 'keys')))
        ids = [i for i in (key_id(self.modinfo('signer_keyid')), key_id(self.modinfo('sig_key'))) if i]
        if keys is None or not ids:
            self.module.warn('cannot tell whether this kernel trusts the signer of %s (%s); the kernel decides'
                             % (self.path, 'no /proc/keys' if keys is None else 'modinfo shows no signing key'))
            return
        if any(i in keys for i in ids):
            return
        self.module.fail_json(
            msg='%s is signed by %s (key %s), which this kernel does not trust (no such key among its %d '
                'asymmetric keys in /proc/keys, and it only loads modules signed by a trusted key: %s): enrol '
                'the cert (mokutil --import cert.der, then reboot through shim\'s MokManager) or sign with a '
                'key it already trusts; refusing to load, the running module (if any) is left alone'
                % (self.path, self.modinfo('signer') or '(no signer name)', ids[0], len(keys), ', '.join(needs)),
            signer_keyid=ids[0])

    def ensure_cursor(self, seq, kmsg_readable):
        """Save a cursor at the current end of the ring unless one exists for this boot."""
        if not kmsg_readable:
            return False
        try:
            boot_id = kmsg.read_boot_id(self.boot_id_path)
        except (IOError, OSError) as e:
            self.module.warn('cannot read boot_id: %s' % to_native(e))
            return False
        cursor = kmsg.load_cursor(self.cursor_path)
        if cursor is not None and cursor['boot_id'] == boot_id:
            return False
        next_seq = seq + 1 if seq is not None else 0
        kmsg.save_cursor(self.cursor_path, {'boot_id': boot_id, 'next_seq': next_seq})
        return True

    def restore(self):
        """Load the last loaded file again, checked against the sha256 recorded with it; returns
        (restored, detail)."""
        if not os.path.isfile(self.loaded_ko):
            return False, 'no %s to restore from' % self.loaded_ko
        manifest = persist.load_manifest(self.state_dir, self.name)
        sha256 = (manifest.get('module') or {}).get('sha256') if manifest and manifest['backend'] == 'module' else None
        if not sha256:
            return False, 'no record of the sha256 of %s, so it is not loaded unchecked' % self.loaded_ko
        try:
            kmod_load.load_verified(self.loaded_ko, sha256)
        except kmod_load.LoadError as e:
            return False, str(e)
        return True, 'restored from %s (spec_hash %s)' % (self.loaded_ko, self.loaded_spec_hash())

    def diff(self, before_hash, before_loaded, after_hash, after_loaded):
        if not self.module._diff:
            return {}
        return {'diff': {
            'before': {'loaded': before_loaded, 'spec_hash': before_hash},
            'after': {'loaded': after_loaded, 'spec_hash': after_hash},
        }}

    def present(self):
        self.refuse_foreign()
        loaded = self.is_loaded()
        current = self.loaded_spec_hash() if loaded else None
        result = {'changed': False, 'name': self.name, 'state': 'present',
                  'previous_spec_hash': current}
        if loaded and current == self.spec_hash:
            result.update(spec_hash=current, loaded=True, probes=self.probe_status(),
                          msg='%s already loaded with spec_hash %s' % (self.name, current))
            return result

        result.update(changed=True, spec_hash=self.spec_hash, loaded=True)
        result.update(self.diff(current, loaded, self.spec_hash, True))
        if self.module.check_mode and not os.path.exists(self.path):
            result['msg'] = 'would load %s (not verified: file not present in check mode)' % self.path
            return result
        if self.module.check_mode:
            self.verify()
            result['msg'] = 'would %s %s' % ('reload' if loaded else 'load', self.path)
            return result
        try:
            self.verify()
            self.load(result, loaded, current)
        finally:
            if os.path.exists(self.loading_ko):
                os.unlink(self.loading_ko)
        # What runs now, for the boot-time restore (kprobes.fleet.probe_persist).
        persist.save_manifest(self.state_dir, self.name, 'module', self.spec_hash,
                              {'ko': self.layout.file(self.name, 'loaded-ko'), 'sha256': self.sha256})
        result['spec_hash'] = self.loaded_spec_hash()
        result['probes'] = self.probe_status()
        result['msg'] = '%s %s' % ('reloaded' if loaded else 'loaded', self.path)
        if result['spec_hash'] != self.spec_hash:
            self.module.warn('%s loaded but /sys/kernel/%s/spec_hash reads %s, expected %s'
                             % (self.name, self.name, result['spec_hash'], self.spec_hash))
        return result

    def load(self, result, loaded, current):
        """Replace the loaded module (if any) by our checked private copy, which then becomes the
        copy a restore loads; a failed load restores the previous module."""
        if loaded:
            self.rmmod()
        seq, readable = self.last_seq()
        result['cursor_saved'] = self.ensure_cursor(seq, readable)
        try:
            kmod_load.load_verified(self.loading_ko, self.sha256)
        except kmod_load.LoadError as e:
            kernel = self.kernel_lines_after(seq) if readable else []
            if loaded:
                restored, detail = self.restore()
                after = ('previous module (spec_hash %s) %s' % (current, detail) if restored else
                         'previous module (spec_hash %s) was unloaded and NOT restored: %s' % (current, detail))
            else:
                restored, after = False, 'no module was loaded before'
            self.module.fail_json(msg='loading %s failed: %s; kernel: %s; %s' % (
                self.path, e, ' | '.join(kernel) if kernel else '(no messages)', after),
                kernel_messages=kernel, restored=restored, previous_spec_hash=current)
        os.rename(self.loading_ko, self.loaded_ko)

    def absent(self):
        loaded = self.is_loaded()
        if loaded and not self.sysfs.ours():
            self.refuse_foreign()
        current = self.loaded_spec_hash() if loaded else None
        result = {'changed': False, 'name': self.name, 'state': 'absent',
                  'previous_spec_hash': current, 'spec_hash': None, 'loaded': False}
        if not loaded:
            result['msg'] = '%s is not loaded' % self.name
            if os.path.exists(self.loaded_ko) or self.recorded():
                result['changed'] = True
                if not self.module.check_mode:
                    self.forget()
                result['msg'] += '; its boot-time record removed'
            return result
        result['changed'] = True
        result.update(self.diff(current, True, None, False))
        if self.module.check_mode:
            result['msg'] = 'would unload %s' % self.name
            return result
        self.rmmod()
        self.forget()
        result['msg'] = 'unloaded %s' % self.name
        return result

    def recorded(self):
        """Whether the boot-time record is of this backend (the module)."""
        manifest = persist.load_manifest(self.state_dir, self.name)
        return bool(manifest) and manifest['backend'] == 'module'

    def forget(self):
        """Nothing of ours is left to load at boot: the record and the copy it would load."""
        persist.forget(self.state_dir, self.name, 'module')
        for path in (self.loaded_ko, self.loading_ko):
            if os.path.exists(path):
                os.unlink(path)

    def apply(self):
        """present/absent, one at a time per name on this host (whoever runs this module: a deploy
        holds kprobes.fleet.host_lock anyway, a role or module used alone does not): never two
        loads or unloads racing."""
        run = os.path.join(self.root, 'run', 'kprobes-fleet')
        lock = os.path.join(run, '%s.load' % self.name)
        if self.module.check_mode and not os.path.exists(lock):
            # a check run changes nothing, not even /run: with no lock file no run of ours is loading
            return self.absent() if self.state == 'absent' else self.present()
        host_state.ensure_dir(run)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.state == 'absent':
                return self.absent()
            return self.present()
        finally:
            os.close(fd)


def build_module():
    return AnsibleModule(**host_state.module_kwargs(dict(
        name=dict(type='str', required=True),
        path=dict(type='path'),
        sha256=dict(type='str'),
        spec_hash=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
    ), required_if=[('state', 'present', ('path', 'sha256', 'spec_hash'))]))


def main():
    module = build_module()
    result = ProbeLoader(module).apply()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
