# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: build_plan
short_description: Plan kprobes.fleet module builds, one per build key, with a controller cache
description:
  - Used by the C(kprobes.fleet.probe_deploy) role. Runs on the controller only.
  - C(op=plan) resolves the probe spec against a host's kernel facts, computes the spec hash and
    the build key (hash of arch, kernel release, kernel build version and spec hash, plus the
    sha256 of the signing cert when modules are signed), and looks
    the key up in the controller cache. If the module is not cached, exactly one host per key
    gets the build (an atomic lock file in the cache); the others wait for it.
  - C(op=wait) waits until the module of a key is published, or fails when its build failed.
  - C(op=publish) moves a fetched C(.ko) into the cache atomically with its sha256. When the plan is
    signed (C(signer) in O(meta)), it first signs the C(.ko) here, on the controller, byte for byte as the
    kernel's C(scripts/sign-file) does, with O(signing_key); the key never reaches a host.
  - C(op=abort) releases a build lock after a failed build.
author:
  - kprobes.fleet developers (@kprobes-fleet)
options:
  op:
    description: What to do.
    type: str
    choices: [plan, wait, publish, abort]
    default: plan
  probes:
    description: The normalized probe spec (C(values.kprobes_fleet_probes) of M(kprobes.fleet.validate)); for C(op=plan).
    type: list
    elements: dict
  module_name:
    description: Kernel module name.
    type: str
    default: kprobes_fleet
  kernel:
    description: The host's C(kprobes_fleet_kernel) facts (from M(kprobes.fleet.kernel_facts)); for C(op=plan).
    type: dict
  cache_dir:
    description: Controller directory of the module cache.
    type: path
    default: ~/.cache/kprobes-fleet/modules
  build_key:
    description: The build key; for C(op=wait), C(op=publish) and C(op=abort).
    type: str
  staged:
    description: Controller path of the fetched C(.ko); for C(op=publish).
    type: path
  meta:
    description:
      - Metadata stored with the published module. Its C(signer), the plan's, says whether O(op=publish)
        signs it (a mapping) or not (V(null) or absent).
    type: dict
  timeout:
    description: Seconds to wait for another host's build; also the age after which a lock is stale.
    type: int
    default: 1800
  poll:
    description: Seconds between checks while waiting.
    type: float
    default: 2
  backend:
    description:
      - For C(op=plan). V(module) plans a build (build key, cache, one builder per key);
        V(tracefs) only resolves the spec and its hash (nothing to build, nothing cached).
    type: str
    choices: [module, tracefs]
    default: module
  signing_cert:
    description:
      - For C(op=plan) with O(backend=module), and for O(op=publish) of a signed plan (its sha256 must be
        the plan's signer). Controller path of the cert the module is signed with
        (PEM or DER; an ansible-vault file is decrypted). Its sha256 becomes part of the build key, so a
        signed and an unsigned module, or modules signed by two certs, never share a cache entry.
      - An empty string means modules are not signed (the build key is the same as without signing).
        When omitted for O(op=plan), the host's validated C(kprobes_fleet_signing_cert) (C(__kprobes_fleet_valid),
        set by the C(kprobes.fleet.validate) role) is used.
    type: str
  signing_key:
    description:
      - For O(op=publish) of a signed plan. Controller path of the PEM private key of O(signing_cert)
        (C(kprobes_fleet_signing_key), may be an ansible-vault file, decrypted in memory with the run's
        vault secrets). Checked as M(kprobes.fleet.validate) checks it, then read here only.
      - Empty or omitted for an unsigned plan.
    type: str
  signing_hash:
    description:
      - For O(op=publish) of a signed plan. The hash of the signature, the kernel's
        C(CONFIG_MODULE_SIG_HASH), one of V(sha256), V(sha384) or V(sha512); any other is refused.
    type: str
attributes:
  check_mode:
    support: full
    description: Nothing is changed on hosts; the controller cache is only written by O(op=publish).
  diff_mode:
    support: none
    description: No diff.
  platform:
    support: full
    platforms: posix
    description: Runs on the controller.
notes:
  - "Cache layout: C(<cache_dir>/<build_key>/{<module>.ko, <module>.ko.sha256, meta.json}). Clear it with C(rm -rf)."
'''

EXAMPLES = r'''
- name: Plan the build of this host's kernel
  kprobes.fleet.build_plan:
    op: plan
    probes: "{{ spec.probes }}"
    kernel: "{{ ansible_facts['kprobes_fleet_kernel'] }}"
  register: plan
'''

RETURN = r'''
plan:
  description: For C(op=plan).
  returned: success
  type: dict
  contains:
    build_key: {description: The build key., type: str}
    spec_hash: {description: Hash of the resolved spec and template., type: str}
    probes: {description: The resolved probes (with the chosen C(function))., type: list}
    ko: {description: Path of the module in the controller cache., type: str}
    staged: {description: Controller path where the builder's .ko is fetched before publishing., type: str}
    build: {description: Whether this host builds the module., type: bool}
    cached: {description: Whether the module was already in the cache., type: bool}
    loaded: {description: Whether the host already runs a module with this spec hash., type: bool}
    sha256: {description: 'sha256 of the cached module, when cached.', type: str}
    signer:
      description:
        - The signing cert, V(null) when modules are not signed. C(sha256) of the cert file (part of
          the build key); C(keyid), the id the kernel shows after the cert's name in C(/proc/keys) (its
          subject key identifier, else its serial number); C(signer), the issuer's CN (what
          C(modinfo -F signer) shows); C(subject), the subject's CN.
      type: dict
sha256:
  description: For C(op=wait) and C(op=publish), the module's sha256.
  returned: success
  type: str
'''
