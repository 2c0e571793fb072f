"""The action kprobes.fleet.build_plan through its real entry point (ansible-playbook).

The action runs on the controller and never connects: the play targets localhost with
ansible_connection=local. Each run registers the action's result and writes it as JSON with
ansible.builtin.copy (check_mode: false, so it is written under --check too).
"""
import glob
import hashlib
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec
from ansible_collections.kprobes.fleet.plugins.plugin_utils.module_cache import ModuleCache, template_sha

K1 = "0123456789abcdef"
KERNEL = {"arch": "x86_64", "release": "6.1.0-50-amd64", "version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.135-1",
          "functions": {"open_failures": "do_filp_open", "disk_full": "vfs_write"},
          "candidates": {}, "loaded": {"spec_hash": None}}

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the action
      kprobes.fleet.build_plan: %s
      register: result
      ignore_errors: true
    - name: Save its result
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      check_mode: false
"""


def run_action(repo, tmp_path, args, check=False, extra_vars=None, env=None):
    """Run build_plan with ``args`` on localhost; returns the registered result and the output.

    ``extra_vars`` are passed with -e, ``env`` is added to ansible-playbook's environment."""
    (tmp_path / "inventory.ini").write_text(
        "localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    (tmp_path / "play.yml").write_text(PLAYBOOK % json.dumps(args))  # JSON is YAML: the args as given
    result_file = tmp_path / "result.json"
    if result_file.exists():
        result_file.unlink()
    (tmp_path / "vars.json").write_text(json.dumps(dict(extra_vars or {}, result_file=str(result_file))))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               HOME=str(tmp_path), **(env or {}))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(tmp_path / "inventory.ini"),
            "-e", "@%s" % (tmp_path / "vars.json"), str(tmp_path / "play.yml")] + (["--check"] if check else [])
    res = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "WARNING" not in out, out
    assert result_file.exists(), out
    return json.loads(result_file.read_text()), out


@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "a" / "b" / "cache"
    d.mkdir(parents=True)
    for p in (tmp_path / "a", tmp_path / "a" / "b", d):
        os.chmod(str(p), 0o700)
    return d


def locks(cache_dir):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(str(cache_dir), "*.lock")))


def plan_args(cache_dir, **extra):
    return dict({"op": "plan", "probes": probe_spec.normalize(None), "kernel": KERNEL,
                 "cache_dir": str(cache_dir)}, **extra)


def expected_key(cache_dir):
    cache = ModuleCache(str(cache_dir), "kprobes_fleet")
    resolved = probe_spec.resolve(probe_spec.normalize(None), KERNEL["functions"])
    spec = probe_spec.spec_hash(cache.module, resolved, template_sha())
    return probe_spec.build_key(KERNEL["arch"], KERNEL["release"], KERNEL["version"], spec), spec


def test_abort_with_a_dotdot_key_is_refused_and_removes_nothing(repo, tmp_path, cache_dir):
    # <cache>/../../../etc/x.lock is where an unchecked key would point.
    victim = tmp_path / "etc" / "x.lock"
    victim.parent.mkdir()
    victim.write_text("not ours")
    assert os.path.normpath(os.path.join(str(cache_dir), "../../../etc/x.lock")) == str(victim)
    result, out = run_action(repo, tmp_path, {"op": "abort", "build_key": "../../../etc/x",
                                              "cache_dir": str(cache_dir)})
    assert result.get("failed") is True, out
    assert result["msg"].startswith("build_key: must be 16 lower-case hex digits"), result
    assert victim.read_text() == "not ours"


@pytest.mark.parametrize("key", ["ABCDEF0123456789", "0123456789abcdef\n", "k1"])
def test_wait_and_abort_refuse_keys_that_are_not_16_lower_case_hex(repo, tmp_path, cache_dir, key):
    result, out = run_action(repo, tmp_path, {"op": "abort", "build_key": key, "cache_dir": str(cache_dir)})
    assert result.get("failed") is True, out
    assert "build_key: must be 16 lower-case hex digits" in result["msg"], result


def test_plan_in_check_mode_takes_no_lock(repo, tmp_path, cache_dir):
    result, out = run_action(repo, tmp_path, plan_args(cache_dir), check=True)
    assert not result.get("failed"), out
    plan = result["plan"]
    key, spec = expected_key(cache_dir)
    assert (plan["build_key"], plan["spec_hash"]) == (key, spec)
    assert plan["would_build"] is True
    assert plan["build"] is False
    assert plan["cached"] is False and plan["loaded"] is False
    assert [p["function"] for p in plan["probes"]] == ["do_filp_open", "vfs_write"]
    assert locks(cache_dir) == []
    assert os.listdir(str(cache_dir)) == []


def test_plan_takes_exactly_one_lock(repo, tmp_path, cache_dir):
    result, out = run_action(repo, tmp_path, plan_args(cache_dir))
    assert not result.get("failed"), out
    plan = result["plan"]
    key, dummy = expected_key(cache_dir)
    assert plan["build_key"] == key
    assert plan["build"] is True
    assert "would_build" not in plan
    assert plan["ko"] == os.path.join(str(cache_dir), key, "kprobes_fleet.ko")
    assert plan["staged"] == ModuleCache(str(cache_dir), "kprobes_fleet").staged(key, "localhost")
    assert locks(cache_dir) == [key + ".lock"]
    with open(os.path.join(str(cache_dir), key + ".lock")) as f:
        assert json.load(f)["host"] == "localhost"


def test_plan_of_a_module_already_loaded_builds_nothing(repo, tmp_path, cache_dir):
    dummy, spec = expected_key(cache_dir)
    result, out = run_action(repo, tmp_path, plan_args(cache_dir, kernel=dict(KERNEL, loaded={"spec_hash": spec})))
    assert not result.get("failed"), out
    assert result["plan"]["loaded"] is True and result["plan"]["build"] is False
    assert locks(cache_dir) == []


def test_publish_refuses_a_staged_file_outside_the_cache(repo, tmp_path, cache_dir):
    evil = tmp_path / "evil.ko"
    evil.write_bytes(b"evil")
    os.chmod(str(evil), 0o600)
    result, out = run_action(repo, tmp_path, {"op": "publish", "build_key": K1, "staged": str(evil),
                                              "cache_dir": str(cache_dir)})
    assert result.get("failed") is True, out
    assert result["msg"].startswith("staged: %s is not where this host's build of %s is fetched" % (evil, K1)), result
    assert evil.read_bytes() == b"evil"
    assert os.listdir(str(cache_dir)) == []


def test_publish_refuses_a_symlink_at_the_staged_path(repo, tmp_path, cache_dir):
    cache = ModuleCache(str(cache_dir), "kprobes_fleet")
    target = tmp_path / "target.ko"
    target.write_bytes(b"evil")
    os.chmod(str(target), 0o600)
    os.symlink(str(target), cache.staged(K1, "localhost"))
    result, out = run_action(repo, tmp_path, {"op": "publish", "build_key": K1, "staged": cache.staged(K1, "localhost"),
                                              "cache_dir": str(cache_dir)})
    assert result.get("failed") is True, out
    assert "symbolic link" in result["msg"], result
    assert target.read_bytes() == b"evil"
    assert not os.path.exists(cache.entry(K1))


def test_publish_of_the_staged_file_moves_it_in_and_releases_the_lock(repo, tmp_path, cache_dir):
    cache = ModuleCache(str(cache_dir), "kprobes_fleet")
    assert cache.claim(K1, "localhost", 1800)
    staged = cache.staged(K1, "localhost")
    with open(staged, "wb") as f:
        f.write(b"\x7fELF fake module")
    os.chmod(staged, 0o600)
    result, out = run_action(repo, tmp_path, {"op": "publish", "build_key": K1, "staged": staged,
                                              "cache_dir": str(cache_dir), "meta": {"release": "6.1.0-50-amd64"}})
    assert not result.get("failed"), out
    assert result["sha256"] == hashlib.sha256(b"\x7fELF fake module").hexdigest()
    assert not os.path.exists(staged)
    assert locks(cache_dir) == []
    assert cache.lookup(K1)["builder"] == "localhost"


def test_publish_and_abort_in_check_mode_write_nothing(repo, tmp_path, cache_dir):
    cache = ModuleCache(str(cache_dir), "kprobes_fleet")
    assert cache.claim(K1, "localhost", 1800)
    staged = cache.staged(K1, "localhost")
    with open(staged, "wb") as f:
        f.write(b"module")
    os.chmod(staged, 0o600)
    for args in ({"op": "publish", "build_key": K1, "staged": staged}, {"op": "abort", "build_key": K1}):
        result, out = run_action(repo, tmp_path, dict(args, cache_dir=str(cache_dir)), check=True)
        assert not result.get("failed"), out
        assert "check mode" in result["msg"]
    assert os.path.exists(staged) and locks(cache_dir) == [K1 + ".lock"]
    assert not os.path.exists(cache.entry(K1))


@pytest.mark.parametrize("timeout", [0, 59, -1, "lots"])
def test_a_timeout_below_a_minute_is_refused_before_anything_is_written(repo, tmp_path, cache_dir, timeout):
    result, out = run_action(repo, tmp_path, plan_args(cache_dir, timeout=timeout))
    assert result.get("failed") is True, out
    word = "must be an integer" if timeout == "lots" else "must be between 60"
    assert result["msg"].startswith("timeout: %s" % word), result
    assert os.listdir(str(cache_dir)) == []


def test_abort_with_a_bad_timeout_keeps_the_lock(repo, tmp_path, cache_dir):
    cache = ModuleCache(str(cache_dir), "kprobes_fleet")
    assert cache.claim(K1, "localhost", 1800)
    result, out = run_action(repo, tmp_path, {"op": "abort", "build_key": K1, "timeout": 0,
                                              "cache_dir": str(cache_dir)})
    assert result.get("failed") is True and "timeout: must be between 60" in result["msg"], out
    assert locks(cache_dir) == [K1 + ".lock"]


WAITERS_PLAY = """\
- hosts: h1,h2
  gather_facts: false
  tasks:
    - name: Plan (one of the two hosts claims the build)
      kprobes.fleet.build_plan: %(plan)s
      register: plan
    - name: The builder fails (%(how)s)
      kprobes.fleet.build_plan:
        op: abort
        build_key: "{{ plan.plan.build_key }}"
        cache_dir: %(cache)s
        error: "make: *** [Makefile:10: modules] Error 2 (on {{ inventory_hostname }})"
      when: plan.plan.build and %(abort)s
    - name: The builder drops out of the play (unreachable, killed)
      ansible.builtin.fail:
        msg: builder gone
      when: plan.plan.build
    - name: Wait for the builder
      kprobes.fleet.build_plan:
        op: wait
        build_key: "{{ plan.plan.build_key }}"
        cache_dir: %(cache)s
        timeout: 600
        poll: 0.2
      register: waited
      ignore_errors: true
    - name: Save what the waiter got
      ansible.builtin.copy:
        content: "{{ waited | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
"""


@pytest.mark.parametrize("how", ["abort", "dropout"])
def test_waiters_fail_at_once_with_the_builders_error(repo, tmp_path, cache_dir, how):
    """A failed build (op=abort with its error) or a builder that left the play: the host waiting for
    it fails within seconds, not after the 600 s timeout, and says why."""
    import time
    (tmp_path / "inventory.ini").write_text(
        "h1 ansible_connection=local ansible_python_interpreter=%s\nh2 ansible_connection=local "
        "ansible_python_interpreter=%s\n" % (sys.executable, sys.executable))
    play = WAITERS_PLAY % {"plan": json.dumps(plan_args(cache_dir)), "cache": json.dumps(str(cache_dir)),
                           "abort": "true" if how == "abort" else "false", "how": how}
    (tmp_path / "play.yml").write_text(play)
    result_file = tmp_path / "waited.json"
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_NOCOLOR="1", HOME=str(tmp_path))
    t0 = time.time()
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
                          str(tmp_path / "inventory.ini"), "-e", "result_file=%s" % result_file,
                          str(tmp_path / "play.yml")], cwd=repo, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    elapsed = time.time() - t0
    out = res.stdout + res.stderr
    assert result_file.exists(), out
    waited = json.loads(result_file.read_text())
    assert waited.get("failed") is True, waited
    if how == "abort":
        assert "Error 2 (on h" in waited["msg"] and "failed:" in waited["msg"]
    else:
        assert "dropped out of the play" in waited["msg"]
    assert elapsed < 120, "the waiter waited for the timeout (%.0f s): %s" % (elapsed, out)


def test_plan_without_a_function_names_the_closest_ones(repo, tmp_path, cache_dir):
    """kernel_facts' suggestions reach the user in the one error of the plan."""
    kernel = dict(KERNEL, release="7.2.13+deb14-amd64",
                  functions={"open_failures": None, "disk_full": "vfs_write"},
                  candidates={"open_failures": {"do_filp_open": "absent", "do_file_open": "absent"}},
                  suggestions={"open_failures": ["do_file_open_x", "filp_open"]})
    result, out = run_action(repo, tmp_path, plan_args(cache_dir, kernel=kernel))
    assert result.get("failed") is True, out
    assert result["msg"].startswith("kernel 7.2.13+deb14-amd64 has no probe-able function for probe(s) "
                                    "open_failures — candidates: open_failures: do_file_open (absent), "
                                    "do_filp_open (absent) — closest probe-able functions on this kernel: "
                                    "open_failures: do_file_open_x, filp_open."), result["msg"]
    assert "{function: name, returns: long|int|errptr}" in result["msg"]
    assert locks(cache_dir) == []
    kernel["suggestions"] = {"open_failures": []}
    result, out = run_action(repo, tmp_path, plan_args(cache_dir, kernel=kernel))
    assert "closest probe-able functions on this kernel: open_failures: none close." in result["msg"], result
