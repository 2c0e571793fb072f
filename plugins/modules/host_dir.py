#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: host_dir
short_description: Create or delete the kprobes.fleet working directory, only if it is ours
description:
  - Creates the root-only (0700) working directory of kprobes.fleet on a host and its
    sub-directories, and puts our mark in it (C(<path>/.kprobes-fleet)).
  - An existing directory is ours when it carries the mark, that is a regular file
    C(<path>/.kprobes-fleet) owned by root in a real directory owned by root (only root can put it
    there).
  - An existing directory without the mark is adopted only when nothing in it, or about it, could
    be lost - a real directory (not a symbolic link), owned by root:root, mode exactly 0700 and
    empty. Anything else is refused with one sentence naming the path and what is wrong, before
    anything is changed (in check mode too) - a directory with content, owned by another user or
    group (a new user's empty home, C(/var/spool/cron/crontabs) root:crontab 1730), or with any
    other mode (C(/run/sshd) 0755); so are a symbolic link, a path that is not a directory, and a
    path below a directory that is not root-owned or is writable by group or others.
  - A missing directory is created (0700, root:root, marked); missing parents are created root:root
    0755 and are not marked, so a purge (O(state=absent)) leaves them in place.
  - With O(state=present) and O(stale_after), what a run that died left inside a directory that is
    ours is removed too (see O(stale_after)), so a warm re-run needs no other task for it.
  - With O(state=absent) the directory is deleted only when it carries the mark (as above); nothing
    above it is removed.
  - The path must be absolute, normalised, and not a shared system directory (C(/), C(/var/lib),
    C(/tmp), ...); the same rule as the controller's validation.
author:
  - kprobes.fleet developers (@kprobes-fleet)
options:
  path:
    description: The working directory (C(kprobes_fleet_host_dir)).
    type: str
    required: true
  subdirs:
    description: Sub-directories to create (0700) with O(state=present).
    type: list
    elements: str
    default: []
  state:
    description: V(present) creates or checks it, V(absent) deletes it (with everything in it).
    type: str
    choices: [present, absent]
    default: present
  stale_after:
    description:
      - With O(state=present), remove what a run that died left in the directory (only when it is
        already ours), that is every transfer copy C(modules/*.ko) (this runs under the host lock, so
        no other run is copying) and every build directory C(build/<hex key>) made before this boot
        or more than O(stale_after) seconds ago (a live build on a build host is younger).
      - Only regular files and real directories are removed, never what a symbolic link points to.
      - Unset, nothing is removed. Set, it must be between 60 and 604800 (as for M(kprobes.fleet.host_lock)).
    type: int
attributes:
  check_mode:
    support: full
    description: Checks are made; nothing is created, changed or deleted.
  diff_mode:
    support: none
    description: No diff.
notes:
  - Needs root.
seealso:
  - module: kprobes.fleet.probe_module
'''

EXAMPLES = r'''
- name: Create the working directory
  kprobes.fleet.host_dir:
    path: /var/lib/kprobes-fleet
    subdirs: [modules, state, build]
    stale_after: 4200  # and remove what a run that died left in it

- name: Delete it (only if it carries our mark)
  kprobes.fleet.host_dir:
    path: /var/lib/kprobes-fleet
    state: absent
'''

RETURN = r'''
path:
  description: The directory.
  returned: always
  type: str
  sample: /var/lib/kprobes-fleet
removed:
  description: What was removed (or would be, in check mode) as left by a run that died.
  returned: always
  type: list
  elements: str
  sample: [/var/lib/kprobes-fleet/modules/kprobes_fleet.ko]
msg:
  description: What was done.
  returned: always
  type: str
  sample: created /var/lib/kprobes-fleet
created_parents:
  description: Missing parents created (root:root 0755, not marked, never removed by a purge), or
    that would be created in check mode.
  returned: always
  type: list
  elements: str
  sample: [/srv/kprobes]
'''

import fnmatch
import grp
import os
import pwd
import shutil
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, names, ownership

MARK_TEXT = ('This directory belongs to kprobes.fleet (%s). It is deleted, with everything in it, '
             'by the kprobes.fleet.remove playbook with kprobes_fleet_load_purge=true.\n' % names.MARK)


# Left by a run that died: (sub-directory, name pattern, is a directory, removed at any age).
LEFTOVERS = ((host_state.MODULES, '*.ko', False, True), (host_state.BUILD, '[0-9a-f]*', True, False))


def uptime():
    with open('/proc/uptime') as f:
        return float(f.read().split()[0])


class HostDir(object):

    def __init__(self, module):
        self.module = module
        self.state = module.params['state']
        self.subdirs = module.params['subdirs']
        self.stale_after = module.params.get('stale_after')
        try:
            if self.stale_after is not None:
                names.as_int('stale_after', self.stale_after, *names.STALE_AFTER_BOUNDS)
            self.path = names.host_path(module.params['path'], 'path')
            for sub in self.subdirs:
                names.host_path(os.path.join(self.path, sub), 'subdirs')
        except names.InvalidValue as e:
            module.fail_json(msg=str(e))

    def fail(self, why):
        self.module.fail_json(msg='%s: %s; refusing to touch it' % (self.path, why), path=self.path)

    def check_parents(self):
        """Every existing ancestor is a root-owned directory no one else can write to."""
        parent = os.path.dirname(self.path)
        while True:
            try:
                st = os.stat(parent)
            except OSError:
                st = None
            if st is not None:
                if not stat.S_ISDIR(st.st_mode):
                    self.fail('%s is not a directory' % parent)
                if st.st_uid != 0 or st.st_mode & 0o022:
                    self.fail('its parent %s is not root-owned or is writable by group or others '
                              '(someone else could swap the directory under us)' % parent)
            if parent == '/':
                return
            parent = os.path.dirname(parent)

    def inspect(self):
        """'missing', 'ours' or 'empty'; fails for anything that may be someone else's.

        'empty' (adopted) only when nothing could be lost: a real directory owned by root:root,
        mode 0700 and empty; anything else without our mark is refused here, before any change."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return 'missing'
        if stat.S_ISLNK(st.st_mode):
            self.fail('it is a symbolic link')
        if not stat.S_ISDIR(st.st_mode):
            self.fail('it exists and is not a directory')
        problem = ownership.host_dir_mark_problem(self.path)
        if problem is None:
            return 'ours'
        content = sorted(os.listdir(self.path))
        if content:
            if os.path.lexists(os.path.join(self.path, names.HOST_DIR_MARK)):
                self.fail('it exists, is not empty and is not ours: %s (choose another '
                          'kprobes_fleet_host_dir)' % problem)
            self.fail('it exists, is not empty and has no %s mark, so it is not ours (choose '
                      'another kprobes_fleet_host_dir, one that does not exist yet)%s'
                      % (names.HOST_DIR_MARK, old_collect_hint(self.path, content)))
        wrong = []
        owner = ownership.expected_owner()
        if (st.st_uid, st.st_gid) != owner:
            wrong.append('owned by %s, not %s' % (owner_text(st.st_uid, st.st_gid), owner_text(*owner)))
        if stat.S_IMODE(st.st_mode) != 0o700:
            wrong.append('mode %04o, not 0700' % stat.S_IMODE(st.st_mode))
        if wrong:
            self.fail('it has no %s mark and is %s; an existing directory is adopted only '
                      'when it is empty, owned by %s and mode 0700 (then nothing of anyone else\'s can '
                      'be lost): choose another kprobes_fleet_host_dir, one that does not exist yet'
                      % (names.HOST_DIR_MARK, ', and '.join(wrong), owner_text(*owner)))
        return 'empty'

    def missing_parents(self):
        """The ancestors of our directory that do not exist, top first."""
        missing = []
        parent = os.path.dirname(self.path)
        while parent != '/' and not os.path.lexists(parent):
            missing.insert(0, parent)
            parent = os.path.dirname(parent)
        return missing

    def make_parents(self, parents):
        """Create the missing ancestors root:root 0755 (whatever the umask); they are not marked,
        so no purge ever removes them."""
        for parent in parents:
            os.mkdir(parent, 0o755)
            os.chmod(parent, 0o755)
            if os.geteuid() == 0:
                os.chown(parent, 0, 0)

    @staticmethod
    def _right(path):
        """``path`` is already a root-owned 0700 directory."""
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return (stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
                and (os.geteuid() != 0 or (st.st_uid, st.st_gid) == (0, 0)))

    def _dir(self, path):
        """Make ``path`` a root-owned 0700 directory; True when something changed."""
        changed = False
        if not os.path.isdir(path):
            if os.path.lexists(path):
                self.fail('%s exists and is not a directory' % path)
            os.mkdir(path, 0o700)
            changed = True
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            self.fail('%s is a symbolic link' % path)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
            changed = True
        if (st.st_uid, st.st_gid) != (0, 0) and os.geteuid() == 0:
            os.chown(path, 0, 0)
            changed = True
        return changed

    def leftovers(self):
        """Paths below our directory that a run that died left (LEFTOVERS); none without stale_after."""
        if self.stale_after is None:
            return []
        now = time.time()
        min_age = min(uptime(), self.stale_after)
        found = []
        for sub, pattern, is_dir, any_age in LEFTOVERS:
            top = os.path.join(self.path, sub)
            try:
                if not stat.S_ISDIR(os.lstat(top).st_mode):  # not a symbolic link to elsewhere
                    continue
                names_ = sorted(os.listdir(top))
            except OSError:
                continue
            for name in fnmatch.filter(names_, pattern):
                path = os.path.join(top, name)
                st = os.lstat(path)
                if (stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)) and \
                        (any_age or now - st.st_mtime >= min_age):
                    found.append(path)
        return found

    def remove(self, paths):
        for path in paths:
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError as e:
                self.module.fail_json(msg='cannot remove %s: %s' % (path, to_native(e)), path=self.path)

    def present(self):
        self.check_parents()
        found = self.inspect()
        parents = self.missing_parents() if found == 'missing' else []
        todo = found != 'ours' or any(not self._right(p) for p in
                                      [self.path] + [os.path.join(self.path, s) for s in self.subdirs])
        stale = self.leftovers() if found == 'ours' else []
        done = {'missing': 'created', 'empty': 'adopted empty'}.get(found)
        with_parents = ' (and its missing parents %s, root:root 0755, which a purge leaves)' \
            % ', '.join(parents) if parents else ''
        if self.module.check_mode:
            return {'changed': todo or bool(stale), 'removed': stale, 'created_parents': parents,
                    'msg': 'would %s %s%s' % ({'created': 'create', 'adopted empty': 'adopt empty'}[done],
                                              self.path, with_parents)
                    if done else ('would fix %s' % self.path if todo else '%s is ours' % self.path)}
        self.remove(stale)
        self.make_parents(parents)
        changed = self._dir(self.path) or bool(stale)
        if found != 'ours':
            with open(os.path.join(self.path, names.HOST_DIR_MARK), 'w') as f:
                f.write(MARK_TEXT)
            os.chmod(os.path.join(self.path, names.HOST_DIR_MARK), 0o600)
            changed = True
        for sub in self.subdirs:
            changed = self._dir(os.path.join(self.path, sub)) or changed
        return {'changed': changed, 'removed': stale, 'created_parents': parents,
                'msg': '%s %s%s' % (done, self.path, with_parents) if done else '%s is ours' % self.path}

    def absent(self):
        try:
            st = os.lstat(self.path)
        except OSError:
            return {'changed': False, 'removed': [], 'created_parents': [],
                    'msg': '%s does not exist' % self.path}
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            self.fail('it is not a directory')
        problem = ownership.host_dir_mark_problem(self.path)
        if problem is not None:
            self.fail('%s, so it is not ours' % problem)
        if not self.module.check_mode:
            try:
                shutil.rmtree(self.path)
            except OSError as e:
                self.module.fail_json(msg='cannot delete %s: %s' % (self.path, to_native(e)))
        return {'changed': True, 'removed': [], 'created_parents': [], 'msg': 'deleted %s' % self.path}

    def apply(self):
        result = self.present() if self.state == 'present' else self.absent()
        result['path'] = self.path
        return result


def owner_text(uid, gid):
    """``root:root``, ``alice:alice``; numbers for ids without a name."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return '%s:%s' % (user, group)


def old_collect_hint(path, content):
    """What to do when ``path`` holds only what a kprobes.fleet collect before the first deploy
    left in earlier versions (``state/<name>.kmsg-cursor``, no mark); '' otherwise."""
    state = host_state.state_dir(path)
    if content != [host_state.STATE] or os.path.islink(state) or not os.path.isdir(state):
        return ''
    files = os.listdir(state)
    if not files or not all(f.endswith(host_state.STATE_FILES['kmsg-cursor'] % '') for f in files):
        return ''
    return ('; it holds only %s/%s, the kernel log cursor an older kprobes.fleet collect left before '
            'the first deploy: if nothing else uses it, delete it (rm -r %s) and deploy again'
            % (state, ', '.join(sorted(files)), path))


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            path=dict(type='str', required=True),
            subdirs=dict(type='list', elements='str', default=[]),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            stale_after=dict(type='int'),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    module.exit_json(**HostDir(module).apply())


if __name__ == '__main__':
    main()
