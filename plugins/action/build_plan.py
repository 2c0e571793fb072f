# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side build plan and module cache: one build per build key."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import stat
import time

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.kprobes.fleet.plugins.module_utils import names, probe_spec
from ansible_collections.kprobes.fleet.plugins.plugin_utils import module_sign, settings
from ansible_collections.kprobes.fleet.plugins.plugin_utils.module_cache import ModuleCache, check_trusted, template_sha
from ansible_collections.kprobes.fleet.plugins.plugin_utils.settings import BUILD_TIMEOUT, signer_identity

ARGUMENT_SPEC = {
    "op": {"type": "str", "default": "plan", "choices": ["plan", "wait", "publish", "abort"]},
    "probes": {"type": "list", "elements": "dict"},
    "module_name": {"type": "str", "default": "kprobes_fleet"},
    "kernel": {"type": "dict"},
    "cache_dir": {"type": "str", "default": "~/.cache/kprobes-fleet/modules"},
    "build_key": {"type": "str"},
    "staged": {"type": "str"},
    "meta": {"type": "dict"},
    "timeout": {"type": "raw", "default": 1800},
    "poll": {"type": "float", "default": 2},
    "backend": {"type": "str", "default": "module", "choices": ["module", "tracefs"]},
    "signing_cert": {"type": "str"},
    "signing_key": {"type": "str"},
    "signing_hash": {"type": "str"},
    "error": {"type": "str"},
}
REQUIRED = {"plan": ("probes", "kernel"), "wait": ("build_key",), "publish": ("build_key", "staged"),
            "abort": ("build_key",)}


def missing_message(kernel, missing):
    """Why probes have no function on this kernel, and what this kernel has instead.

    ``kernel`` is kernel_facts' fact: ``candidates`` (status of each candidate) and
    ``suggestions`` (the closest probe-able functions of this kernel, by name)."""
    detail = "; ".join("%s: %s" % (n, ", ".join("%s (%s)" % kv for kv in
                                                sorted(kernel["candidates"].get(n, {}).items())))
                       for n in missing)
    msg = "kernel %s has no probe-able function for probe(s) %s — candidates: %s" % (
        kernel["release"], ", ".join(missing), detail)
    suggestions = kernel.get("suggestions") or {}
    closest = "; ".join("%s: %s" % (n, ", ".join(suggestions[n]) if suggestions.get(n) else "none close")
                        for n in missing)
    return msg + (" — closest probe-able functions on this kernel: %s. Add one to the probe's function "
                  "list (a {function: name, returns: long|int|errptr} entry when its return type "
                  "differs from the probe's)" % closest)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        op = args["op"]
        missing = [a for a in REQUIRED[op] if args.get(a) is None]
        if missing:
            return dict(result, failed=True, msg="op=%s needs %s" % (op, ", ".join(missing)))
        host = task_vars.get("inventory_hostname", "?")
        try:
            cache = ModuleCache(args["cache_dir"], args["module_name"])
            timeout = names.as_int("timeout", args["timeout"], *BUILD_TIMEOUT)
            key = names.hex16(args["build_key"], "build_key") if args.get("build_key") is not None else None
            if op == "plan":
                result.update(self._plan(cache, host, args, timeout, task_vars))
            elif op == "wait":
                result.update(self._wait(cache, key, timeout, args["poll"], task_vars.get("ansible_play_hosts") or []))
            elif self._play_context.check_mode:
                result.update(changed=op == "publish", msg="check mode: the cache is not written")
            elif op == "publish":
                if os.path.abspath(args["staged"]) != cache.staged(key, host):
                    raise names.InvalidValue("staged: %s is not where this host's build of %s is fetched (%s)"
                                             % (args["staged"], key, cache.staged(key, host)))
                signed = self._sign(cache, cache.staged(key, host), args)
                meta = cache.publish(key, args["staged"], dict(args.get("meta") or {}, builder=host, **signed))
                cache.release(key)
                result.update(changed=True, sha256=meta["sha256"], ko=cache.ko(key))
            else:
                cache.release(key, error=("%s" % (args.get("error") or "no error message"))[:4000])
        except names.InvalidValue as e:
            result.update(failed=True, msg=str(e))
        return result

    def _signer(self, args, task_vars):
        """The signing cert's identity (settings.signer_identity), or None when modules are not signed.

        Without the signing_cert argument, the host's validated kprobes_fleet_signing_cert is used:
        a signed and an unsigned module must never share a build key."""
        cert = args.get("signing_cert")
        if cert is None:
            valid = task_vars.get("__kprobes_fleet_valid") or {}
            cert = (valid.get("values") or {}).get("kprobes_fleet_signing_cert") or ""
        if not cert:
            return None
        path = os.path.expanduser(str(cert))
        if not os.path.isabs(path):
            raise names.InvalidValue("signing_cert: must be an absolute path on the controller, got %s" % names.shown(cert))
        try:
            real = self._loader.get_real_file(path, decrypt=True)  # a vault file is decrypted to a temp file
        except AnsibleError as e:
            raise names.InvalidValue("signing_cert: cannot read %s: %s" % (path, e))
        try:
            with open(real, "rb") as f:
                data = f.read()
        finally:
            self._loader.cleanup_tmp_file(real)
        return signer_identity(data, "signing_cert: %s" % path)

    def _sign(self, cache, staged, args):
        """Sign the fetched .ko in place, on the controller, when its plan is signed (meta.signer).

        The one place modules are signed (module_sign.sign_module, what the kernel's sign-file
        makes); the key is read here only, into memory (settings.signing_pair, a vault file
        decrypted with this run's vault secrets), and never reaches a host. Returns what the cache's
        meta.json records of the signature ({} for an unsigned module)."""
        signer = (args.get("meta") or {}).get("signer")
        key_path, cert_path = args.get("signing_key") or "", args.get("signing_cert") or ""
        if not signer:
            if key_path or cert_path:
                raise names.InvalidValue("signing_key and signing_cert are given but meta.signer is empty, so the "
                                         "build key is that of an unsigned module; use the plan "
                                         "kprobes.fleet.build_plan returns (its signer is set when modules are signed)")
            return {}
        if not isinstance(signer, dict) or not key_path or not cert_path or not args.get("signing_hash"):
            raise names.InvalidValue("meta.signer says this module is signed: op=publish needs signing_key, "
                                     "signing_cert and signing_hash (the kernel's CONFIG_MODULE_SIG_HASH)")
        algorithm = args["signing_hash"]
        module_sign.check_hash(algorithm)
        key, cert, cert_sha = settings.signing_pair(
            key_path, cert_path, lambda data, path: settings.vault_decrypt(self._loader, data, path))
        if cert_sha != signer.get("sha256"):
            raise names.InvalidValue("build plan: signer %s is not signing_cert %s (sha256 %s); use the plan "
                                     "kprobes.fleet.build_plan returns" % (signer.get("sha256"), cert_path, cert_sha))
        cache.check_root()
        check_trusted(staged)  # ours, not a symbolic link: what is signed is what the builder made
        with open(os.open(staged, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            ko = module_sign.sign_module(f.read(), key, cert, algorithm)
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        tmp = "%s.signing-%d" % (staged, os.getpid())
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o755), "wb") as f:
                f.write(ko)
            os.rename(tmp, staged)  # publish sees the unsigned module or the signed one, never half of it
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return {"sig_hash": algorithm}

    def _plan(self, cache, host, args, timeout, task_vars):
        kernel = args["kernel"]
        probes = args["probes"]
        missing = [p["name"] for p in probes if not kernel["functions"].get(p["name"])]
        if missing:
            return dict(failed=True, msg=missing_message(kernel, missing))
        resolved = probe_spec.resolve(probes, kernel["functions"])
        if args["backend"] == "tracefs":
            # No build, no cache: the resolved spec and its hash are the whole plan.
            spec_hash = probe_spec.spec_hash(cache.module, resolved, "tracefs")
            return dict(changed=False, plan=dict(backend="tracefs", spec_hash=spec_hash, probes=resolved,
                                                 build=False, cached=False, loaded=False))
        spec_hash = probe_spec.spec_hash(cache.module, resolved, template_sha())
        signer = self._signer(args, task_vars)
        key = probe_spec.build_key(kernel["arch"], kernel["release"], kernel["version"], spec_hash,
                                   signer=signer["sha256"] if signer else None)
        plan = dict(backend="module", build_key=key, spec_hash=spec_hash, probes=resolved, ko=cache.ko(key),
                    signer=signer,
                    staged=cache.staged(key, host),
                    loaded=(kernel.get("loaded") or {}).get("spec_hash") == spec_hash)
        meta = cache.lookup(key)
        if plan["loaded"] and not meta:
            # Already running this exact module: nothing to build even if the cache was cleared.
            plan.update(build=False, cached=False, sha256=None)
        elif meta:
            plan.update(build=False, cached=True, sha256=meta["sha256"])
        elif self._play_context.check_mode:
            # No lock in check mode: say what would happen, build nothing.
            plan.update(build=False, cached=False, sha256=None, would_build=True)
        elif cache.claim(key, host, timeout):
            plan.update(build=True, cached=False, sha256=None)
        else:
            meta = cache.lookup(key)  # published between our lookup and our claim?
            plan.update(build=False, cached=bool(meta), sha256=meta["sha256"] if meta else None,
                        builder=(cache.holder(key) or {}).get("host"))
        return dict(changed=False, plan=plan)

    def _wait(self, cache, key, timeout, poll, play_hosts):
        """Until the key is published; fails at once, with the builder's error, when its build failed
        (op=abort), and when the builder of this run dropped out of the play (unreachable, killed)."""
        if self._play_context.check_mode and not cache.lookup(key):
            return dict(changed=False, msg="check mode: %s is not built yet" % key)
        deadline = time.time() + timeout
        while True:
            meta = cache.lookup(key)
            if meta:
                return dict(changed=False, sha256=meta["sha256"], ko=cache.ko(key), builder=meta.get("builder"))
            holder = cache.holder(key)
            if holder is None:
                if cache.lookup(key):
                    continue  # published and released since we looked
                failed = cache.failure(key)
                if failed:
                    return dict(failed=True, msg="the build of %s on %s failed: %s"
                                                 % (key, failed.get("host"), failed.get("error")))
                return dict(failed=True, msg="the build of %s on another host failed or was aborted; "
                                             "see that host's error (cache: %s)" % (key, cache.root))
            if cache.held_by_this_run(holder) and holder.get("host") not in play_hosts:
                return dict(failed=True, msg="%s, the host building %s in this run, dropped out of the play "
                                             "(unreachable or failed) before publishing it; re-run: the next run "
                                             "takes the build over" % (holder.get("host"), key))
            if time.time() > deadline:
                return dict(failed=True, msg="timed out after %d s waiting for %s to build %s"
                                             % (timeout, holder.get("host"), key))
            time.sleep(poll)
