# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller-side module cache: one build per build key, atomic publication, trust.

The cache is the root of trust of every host: a host loads the ``.ko`` whose sha256 the cache
holds, and both are written by the same hand. So the cache directory and every entry read from
it must belong to the user running Ansible and be writable by nobody else.
Layout and locking: docs/architecture.md, "Controller cache".
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import fcntl
import hashlib
import json
import os
import socket
import stat
import time

from ansible_collections.kprobes.fleet.plugins.module_utils import names
from ansible_collections.kprobes.fleet.plugins.module_utils.hostfs import file_sha256

TEMPLATES = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "probe_build", "templates")
TEMPLATE_FILES = ("kprobes_fleet.c.j2", "Kbuild.j2")


class UntrustedCache(names.InvalidValue):
    """The cache (or an entry in it) could have been written by someone else."""


def template_sha():
    """sha256 over the names and contents of the module templates (part of every spec hash)."""
    h = hashlib.sha256()
    for name in TEMPLATE_FILES:
        with open(os.path.join(TEMPLATES, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def check_trusted(path, follow=False):
    """Refuse ``path`` unless it is owned by us and not writable by group or others."""
    st = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedCache("%s is a symbolic link inside the module cache; refusing it" % path)
    problems = []
    if st.st_uid != os.geteuid():
        problems.append("owned by uid %d, not by the user running Ansible (uid %d)" % (st.st_uid, os.geteuid()))
    if st.st_mode & 0o022:
        problems.append("writable by %s (mode %04o)" % (
            " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if st.st_mode & bit),
            stat.S_IMODE(st.st_mode)))
    if problems:
        raise UntrustedCache("%s is %s: every host trusts the modules in kprobes_fleet_cache_dir, so it "
                             "must be yours alone (chmod go-w, or use another cache directory)"
                             % (path, "; ".join(problems)))


class ModuleCache:
    """<cache>/<key>/{<mod>.ko, <mod>.ko.sha256, meta.json}; <cache>/<key>.lock while building."""

    def __init__(self, root, module):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.module = names.module_name(module, "module_name")

    def entry(self, key):
        return os.path.join(self.root, names.hex16(key, "build_key"))

    def ko(self, key):
        return os.path.join(self.entry(key), self.module + ".ko")

    def lock(self, key):
        return os.path.join(self.root, names.hex16(key, "build_key") + ".lock")

    def staged(self, key, host):
        """Where the builder's .ko is fetched before it is published."""
        tag = hashlib.sha256(host.encode()).hexdigest()[:12]
        return os.path.join(self.root, "%s.staged-%s.ko" % (names.hex16(key, "build_key"), tag))

    def ensure_root(self):
        """Create the cache 0700 if it is missing; refuse it if it is not ours alone."""
        if not os.path.isdir(self.root):
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.check_root()

    def check_root(self):
        if os.path.exists(self.root):
            check_trusted(self.root, follow=True)

    def lookup(self, key):
        """The entry's metadata, or None when the key is not (completely) cached."""
        self.check_root()
        entry = self.entry(key)
        if not os.path.isdir(entry):
            return None
        try:
            for path in (entry, os.path.join(entry, "meta.json"), self.ko(key), self.ko(key) + ".sha256"):
                check_trusted(path)
        except FileNotFoundError:
            return None
        try:
            with open(os.path.join(entry, "meta.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def claim(self, key, host, stale_after):
        """True if this host now owns the build of key (a lock file, <key>.lock).

        Claims are serialised by a POSIX lock on <cache>/.claim (also across processes, e.g.
        concurrent AWX slices on one cache): a claim sees either no lock or a complete one, and
        a stale lock is taken over by exactly one claimant. False when the key is already
        cached or another live run holds it."""
        self.ensure_root()
        path = self.lock(key)
        with open(os.path.join(self.root, ".claim"), "a") as guard:
            fcntl.lockf(guard, fcntl.LOCK_EX)
            if self.lookup(key):
                return False
            if os.path.exists(path) and not self._stale(key, stale_after):
                return False
            try:
                os.unlink(self.failed(key))  # a new attempt: an old failure no longer speaks for it
            except FileNotFoundError:
                pass
            tmp = "%s.tmp-%d" % (path, os.getpid())
            with open(tmp, "w") as f:
                json.dump({"host": host, "pid": os.getppid(), "node": socket.gethostname(),
                           "time": time.time()}, f)
            os.rename(tmp, path)  # readers see no lock or a whole one
            return True

    def holder(self, key):
        try:
            with open(self.lock(key)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _stale(self, key, stale_after):
        info = self.holder(key) or {}
        if time.time() - info.get("time", 0) > stale_after:
            return True
        if info.get("node") == socket.gethostname() and info.get("pid"):
            try:
                os.kill(info["pid"], 0)  # the ansible-playbook run that took it
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return False

    def release(self, key, error=None):
        """Give the build of key back; with ``error`` (a failed build), waiters get it (failure())."""
        if error is not None:
            info = dict(self.holder(key) or {}, error=error, failed_at=time.time())
            tmp = "%s.tmp-%d" % (self.failed(key), os.getpid())
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.rename(tmp, self.failed(key))
        try:
            os.unlink(self.lock(key))
        except FileNotFoundError:
            pass

    def failed(self, key):
        return self.lock(key)[:-len(".lock")] + ".failed"

    def failure(self, key):
        """The last failed build of key (host, error), when it failed in this run."""
        try:
            with open(self.failed(key)) as f:
                info = json.load(f)
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) and self.held_by_this_run(info) else None

    @staticmethod
    def held_by_this_run(info):
        """Whether a lock (or failure) record was made by this ansible-playbook process."""
        return info.get("node") == socket.gethostname() and info.get("pid") == os.getppid()

    def publish(self, key, staged_ko, meta):
        """Move a fetched .ko into the cache atomically, with its sha256 and metadata."""
        self.check_root()
        if os.path.dirname(os.path.abspath(staged_ko)) != self.root:
            raise UntrustedCache("%s is not a staged file of the cache %s" % (staged_ko, self.root))
        check_trusted(staged_ko)
        sha = file_sha256(staged_ko)
        tmp = self.entry(key) + ".tmp-%d" % os.getpid()
        os.makedirs(tmp, mode=0o700)
        os.rename(staged_ko, os.path.join(tmp, self.module + ".ko"))
        with open(os.path.join(tmp, self.module + ".ko.sha256"), "w") as f:
            f.write("%s  %s.ko\n" % (sha, self.module))
        meta = dict(meta, sha256=sha, published=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        try:
            os.rename(tmp, self.entry(key))
        except OSError:
            # Someone published the same key first (e.g. another AWX slice): keep theirs.
            for name in os.listdir(tmp):
                os.unlink(os.path.join(tmp, name))
            os.rmdir(tmp)
        return self.lookup(key)

    def sha256_of(self, key):
        """The published sha256 of key's module (from its .sha256 file), checked for shape."""
        if not self.lookup(key):
            raise UntrustedCache("build key %s is not in the module cache %s" % (key, self.root))
        with open(self.ko(key) + ".sha256") as f:
            words = f.read().split()
        return names.sha256(words[0] if words else "", "%s.sha256" % self.ko(key))
