# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side build plan and module cache: one build per build key."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import fcntl
import hashlib
import json
import os
import socket
import time

from ansible.plugins.action import ActionBase

from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec

TEMPLATES = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "probe_build", "templates")
TEMPLATE_FILES = ("kprobes_fleet.c.j2", "Kbuild.j2")


def template_sha():
    h = hashlib.sha256()
    for name in TEMPLATE_FILES:
        with open(os.path.join(TEMPLATES, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModuleCache:
    """<cache>/<key>/{<mod>.ko, <mod>.ko.sha256, meta.json}; <cache>/<key>.lock while building."""

    def __init__(self, root, module):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.module = module

    def entry(self, key):
        return os.path.join(self.root, key)

    def ko(self, key):
        return os.path.join(self.entry(key), self.module + ".ko")

    def lock(self, key):
        return os.path.join(self.root, key + ".lock")

    def lookup(self, key):
        try:
            with open(os.path.join(self.entry(key), "meta.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        if not os.path.exists(self.ko(key)):
            return None
        return meta

    def claim(self, key, host, stale_after):
        """True if this host now owns the build of key (a lock file, <key>.lock).

        Claims are serialised by a POSIX lock on <cache>/.claim (also across processes, e.g.
        concurrent AWX slices on one cache): a claim sees either no lock or a complete one, and
        a stale lock is taken over by exactly one claimant. False when the key is already
        cached or another live run holds it."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        path = self.lock(key)
        with open(os.path.join(self.root, ".claim"), "a") as guard:
            fcntl.lockf(guard, fcntl.LOCK_EX)
            if self.lookup(key):
                return False
            if os.path.exists(path) and not self._stale(path, stale_after):
                return False
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

    def _stale(self, path, stale_after):
        info = self.holder(os.path.basename(path)[:-len(".lock")]) or {}
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

    def release(self, key):
        try:
            os.unlink(self.lock(key))
        except FileNotFoundError:
            pass

    def publish(self, key, staged_ko, meta):
        """Move a fetched .ko into the cache atomically, with its sha256 and metadata."""
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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("op", "probes", "module_name", "kernel", "cache_dir", "build_key",
                             "staged", "meta", "timeout", "poll"))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = self._task.args
        op = args.get("op", "plan")
        cache = ModuleCache(args.get("cache_dir", "~/.cache/kprobes-fleet/modules"),
                            args.get("module_name", "kprobes_fleet"))
        host = task_vars.get("inventory_hostname", "?")
        timeout = int(args.get("timeout", 1800))
        try:
            if op == "plan":
                result.update(self._plan(cache, host, args, timeout))
            elif op == "wait":
                result.update(self._wait(cache, args["build_key"], timeout, float(args.get("poll", 2))))
            elif op == "publish":
                meta = cache.publish(args["build_key"], args["staged"], dict(args.get("meta") or {}, builder=host))
                cache.release(args["build_key"])
                result.update(changed=True, sha256=meta["sha256"], ko=cache.ko(args["build_key"]))
            elif op == "abort":
                cache.release(args["build_key"])
            else:
                result.update(failed=True, msg="unknown op %r" % op)
        except probe_spec.ProbeSpecError as e:
            result.update(failed=True, msg=str(e))
        return result

    def _plan(self, cache, host, args, timeout):
        kernel = args["kernel"]
        probes = args["probes"]
        missing = [p["name"] for p in probes if not kernel["functions"].get(p["name"])]
        if missing:
            detail = "; ".join("%s: %s" % (n, ", ".join("%s (%s)" % kv for kv in
                                                        sorted(kernel["candidates"].get(n, {}).items())))
                               for n in missing)
            return dict(failed=True, msg="kernel %s has no probe-able function for probe(s) %s — candidates: %s"
                        % (kernel["release"], ", ".join(missing), detail))
        resolved = probe_spec.resolve(probes, kernel["functions"])
        module = args.get("module_name", "kprobes_fleet")
        spec_hash = probe_spec.spec_hash(module, resolved, template_sha())
        key = probe_spec.build_key(kernel["arch"], kernel["release"], kernel["version"], spec_hash)
        plan = dict(build_key=key, spec_hash=spec_hash, probes=resolved, ko=cache.ko(key),
                    staged=os.path.join(cache.root, "%s.staged-%s.ko" % (key, host)),
                    loaded=(kernel.get("loaded") or {}).get("spec_hash") == spec_hash)
        meta = cache.lookup(key)
        if plan["loaded"] and not meta:
            # Already running this exact module: nothing to build even if the cache was cleared.
            plan.update(build=False, cached=False, sha256=None)
        elif meta:
            plan.update(build=False, cached=True, sha256=meta["sha256"])
        elif cache.claim(key, host, timeout):
            plan.update(build=True, cached=False, sha256=None)
        else:
            meta = cache.lookup(key)  # published between our lookup and our claim?
            plan.update(build=False, cached=bool(meta), sha256=meta["sha256"] if meta else None,
                        builder=(cache.holder(key) or {}).get("host"))
        return dict(changed=False, plan=plan)

    def _wait(self, cache, key, timeout, poll):
        deadline = time.time() + timeout
        while True:
            meta = cache.lookup(key)
            if meta:
                return dict(changed=False, sha256=meta["sha256"], ko=cache.ko(key), builder=meta.get("builder"))
            holder = cache.holder(key)
            if holder is None:
                if cache.lookup(key):
                    continue  # published and released since we looked
                return dict(failed=True, msg="the build of %s on another host failed or was aborted; "
                                             "see that host's error (cache: %s)" % (key, cache.root))
            if time.time() > deadline:
                return dict(failed=True, msg="timed out after %d s waiting for %s to build %s"
                                             % (timeout, holder.get("host"), key))
            time.sleep(poll)
