"""Every entry point refuses careless or hostile variables before any task touches a host.

Runs the real playbooks and roles with ansible-playbook against hosts that do not exist
(127.0.0.1, closed port: tests/unit/unreachable.py): a task that reached a host would report UNREACHABLE instead of the
refusal. One message for the play, not one per host.
"""
import json
import os
import subprocess
import sys

import pytest

from unreachable import inventory_yaml

GHOSTS = inventory_yaml(["ghost1", "ghost2"])
PLAN = {"build_key": "0123456789abcdef", "spec_hash": "0123456789abcdef", "ko": "/etc/passwd",
        "staged": "/etc/passwd", "probes": [{"name": "p", "functions": ["vfs_write"], "function": "vfs_write",
                                             "returns": "long", "report": "negative", "errnos": [],
                                             "maxactive": 64, "log": True, "log_burst": 100,
                                             "log_interval": 5}]}


def play(repo, tmp_path, target, extra, check=False, vault_password=None):
    """Run a playbook (a path in the repo) or a role alone ('role:NAME') with extra vars (and this
    vault password, or none whatever the environment says)."""
    inv = tmp_path / "inventory.yml"
    inv.write_text(GHOSTS)
    if target.startswith("role:"):
        book = tmp_path / "role.yml"
        book.write_text("- hosts: all\n  gather_facts: false\n  roles:\n    - role: %s\n" % target[5:])
    else:
        book = os.path.join(repo, target)
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_TIMEOUT="2", ANSIBLE_CACHE_DIR=str(tmp_path), HOME=str(tmp_path))
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    if vault_password is not None:
        (tmp_path / "vault-pass").write_bytes(vault_password)
        os.chmod(str(tmp_path / "vault-pass"), 0o600)
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(tmp_path / "vault-pass")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inv),
            "-e", "@%s" % (tmp_path / "vars.json"), str(book)] + (["--check"] if check else [])
    res = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
    return res.returncode, res.stdout + res.stderr


def assert_refused(rc, out, *words):
    assert rc != 0, out
    for word in words:
        assert word in out, out
    assert "UNREACHABLE" not in out, out
    assert out.count("fatal: [") == 1, out  # one message for the play, not one per host


REFUSED = [
    # kprobes_fleet_module_name: a /sys/kernel entry, a trailing newline, a path
    ("deploy-probes.yml", {"kprobes_fleet_module_name": "mm"}, "kernel itself has in /sys/kernel"),
    ("deploy-probes.yml", {"kprobes_fleet_module_name": "kprobes_fleet\n"}, "kprobes_fleet_module_name: must match"),
    ("playbooks/collect.yml", {"kprobes_fleet_module_name": "../x"}, "kprobes_fleet_module_name: must match"),
    ("playbooks/remove.yml", {"kprobes_fleet_module_name": "ext4\n$(shell id)"}, "kprobes_fleet_module_name"),
    # kprobes_fleet_host_dir: the root, shared system directories, /tmp, empty, relative, '..'
    ("deploy-probes.yml", {"kprobes_fleet_host_dir": "/"}, "shared system directory"),
    ("playbooks/remove.yml", {"kprobes_fleet_host_dir": "/var/lib", "kprobes_fleet_load_purge": True},
     "shared system directory"),
    ("playbooks/remove.yml", {"kprobes_fleet_host_dir": "/tmp"}, "world-writable or virtual"),
    ("playbooks/collect.yml", {"kprobes_fleet_host_dir": "/tmp/kf"}, "world-writable or virtual"),
    ("deploy-probes.yml", {"kprobes_fleet_host_dir": ""}, "must be an absolute directory path"),
    ("deploy-probes.yml", {"kprobes_fleet_host_dir": "var/lib/kf"}, "must be an absolute path"),
    ("deploy-probes.yml", {"kprobes_fleet_host_dir": "/var/lib/kf/../../etc"}, "not a normalised path"),
    # totals and timeouts
    ("deploy-probes.yml", {"kprobes_fleet_probes": [{"name": "p%d" % i, "function": "vfs_write",
                                                     "maxactive": 65536} for i in range(1000)]},
     "at most 32 probes"),
    ("deploy-probes.yml", {"kprobes_fleet_build_timeout": 0}, "kprobes_fleet_build_timeout: must be between 60"),
    ("deploy-probes.yml", {"kprobes_fleet_build_timeout": -1}, "kprobes_fleet_build_timeout: must be between 60"),
    # one rule for booleans; other variables
    ("deploy-probes.yml", {"kprobes_fleet_build_keep_dir": "maybe"},
     "kprobes_fleet_build_keep_dir: must be a boolean (true/false), got string 'maybe'"),
    ("deploy-probes.yml", {"kprobes_fleet_persist": "maybe"},
     "kprobes_fleet_persist: must be a boolean (true/false), got string 'maybe'"),
    ("deploy-probes.yml", {"kprobes_fleet_lock_wait": -1}, "kprobes_fleet_lock_wait: must be between 0"),
    ("playbooks/remove.yml", {"kprobes_fleet_lock_wait": 100000}, "kprobes_fleet_lock_wait: must be between 0 and 86400"),
    ("deploy-probes.yml", {"kprobes_fleet_state": "gone"}, "kprobes_fleet_state: must be one of present, absent"),
    ("deploy-probes.yml", {"kprobes_fleet_build_host": "nosuchhost"}, "must be empty or a host of this inventory"),
    # type names as a user writes them (ansible-core 2.19 wraps values in tagged types)
    ("deploy-probes.yml", {"kprobes_fleet_probes": [{"name": "p", "function": "vfs_write", "maxactive": "lots"}]},
     "must be an integer, got string 'lots'"),
    ("deploy-probes.yml", {"kprobes_fleet_probes": [{"name": "p", "function": "vfs_write", "report": {}}]},
     "got an empty mapping"),
    # kprobes_fleet_events: scheme, plain http off the host, shell characters, numbers out of bounds
    ("deploy-probes.yml", {"kprobes_fleet_events": {"url": "ftp://127.0.0.1/x"}},
     "kprobes_fleet_events.url: the scheme must be http or https"),
    ("deploy-probes.yml", {"kprobes_fleet_events": {"url": "http://eda.example.invalid:5000/hook"}},
     "plain http only to the host's own loopback"),
    ("deploy-probes.yml", {"kprobes_fleet_events": {"url": "http://127.0.0.1:5000/x;$(reboot)"}},
     "holds a character a URL of an endpoint never needs"),
    ("deploy-probes.yml", {"kprobes_fleet_events": {"url": "https://eda.example.invalid/hook", "rate": -5}},
     "kprobes_fleet_events.rate: must be between 1 and 100"),
    ("role:kprobes.fleet.probe_deploy", {"kprobes_fleet_events": {"url": "https://eda.example.invalid/x",
                                                                  "queue_size": 10 ** 12}},
     "kprobes_fleet_events.queue_size: must be between 1 and 1000000"),
    # roles used alone: the same guard
    ("role:kprobes.fleet.probe_deploy", {"kprobes_fleet_host_dir": "/var/lib"}, "shared system directory"),
    ("role:kprobes.fleet.probe_build", {"kprobes_fleet_module_name": "x\n$(shell id)",
                                        "__kprobes_fleet_build_plan": PLAN}, "kprobes_fleet_module_name"),
    ("role:kprobes.fleet.probe_build", {"__kprobes_fleet_build_plan": dict(
        PLAN, probes=[dict(PLAN["probes"][0], function="vfs_write\"; }; static int x(void) { return 0")])},
     "build plan"),
    ("role:kprobes.fleet.probe_build", {"__kprobes_fleet_build_plan": PLAN}, "does not belong to these probes"),
    ("role:kprobes.fleet.probe_load", {"__kprobes_fleet_load_plan": PLAN}, "does not belong to these probes"),
    ("role:kprobes.fleet.probe_load", {"kprobes_fleet_load_state": "absent", "kprobes_fleet_load_purge": "yes",
                                       "kprobes_fleet_host_dir": "/var"}, "shared system directory"),
    ("role:kprobes.fleet.kernel_headers", {"kprobes_fleet_headers_release": "6.1; rm -rf /"},
     "kprobes_fleet_headers_release"),
    ("role:kprobes.fleet.kernel_headers", {"kprobes_fleet_headers_extra_packages": ["gcc", "-o Dpkg::x=y"]},
     "is not a package name"),
    # unlock: a run id and nothing else; none at all is a clear error too
    ("playbooks/unlock.yml", {"kprobes_fleet_unlock": "*"}, "kprobes_fleet_unlock: must be empty or the run id"),
    ("playbooks/unlock.yml", {"kprobes_fleet_unlock": "feedfacefeedface/../x"}, "16 lower-case hex digits"),
    ("playbooks/unlock.yml", {}, "kprobes_fleet_unlock: give the run id of the dead run"),
    ("playbooks/unlock.yml", {"kprobes_fleet_unlock": "feedfacefeedface", "kprobes_fleet_module_name": "mm"},
     "kprobes_fleet_module_name"),
    ("deploy-probes.yml", {"kprobes_fleet_unlock": 12345}, "kprobes_fleet_unlock"),
    # metrics (#24): the switch, the textfile directory (a path we write into), the interval
    ("deploy-probes.yml", {"kprobes_fleet_metrics": "yes"}, "kprobes_fleet_metrics: must be off or textfile"),
    ("deploy-probes.yml", {"kprobes_fleet_metrics": "textfile", "kprobes_fleet_metrics_dir": "/etc"}, "shared system directory"),
    ("playbooks/remove.yml", {"kprobes_fleet_metrics_dir": "/tmp/prom"}, "world-writable or virtual"),
    ("role:kprobes.fleet.probe_deploy", {"kprobes_fleet_metrics_dir": "../prom"}, "must be an absolute path"),
    ("role:kprobes.fleet.probe_load", {"kprobes_fleet_load_state": "absent", "kprobes_fleet_metrics_dir": "/usr"},
     "shared system directory"),
    ("deploy-probes.yml", {"kprobes_fleet_metrics_interval": 0}, "kprobes_fleet_metrics_interval: must be between 1"),
    ("deploy-probes.yml", {"kprobes_fleet_metrics_interval": "15s; reboot"}, "kprobes_fleet_metrics_interval"),
]


@pytest.mark.parametrize("target,extra,words", REFUSED, ids=["%s-%s" % (t, "-".join(sorted(e))) for t, e, w in REFUSED])
def test_refused_before_any_host_task(repo, tmp_path, target, extra, words):
    rc, out = play(repo, tmp_path, target, extra)
    assert_refused(rc, out, words)


def test_hosts_are_named_with_each_distinct_error(repo, tmp_path):
    rc, out = play(repo, tmp_path, "deploy-probes.yml", {"kprobes_fleet_host_dir": "/", "kprobes_fleet_build_timeout": 0})
    assert_refused(rc, out, "shared system directory", "[ghost1, ghost2]", "kprobes_fleet_build_timeout")


def test_a_cache_others_can_write_is_refused(repo, tmp_path):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    os.chmod(str(cache), 0o777)
    rc, out = play(repo, tmp_path, "deploy-probes.yml", {"kprobes_fleet_cache_dir": str(cache)})
    assert_refused(rc, out, "writable by its group and others", "must be yours alone")


@pytest.mark.parametrize("target,extra", [
    # an empty 'kprobes_fleet_probes:' line is null: the presets, as the README says
    ("deploy-probes.yml", {"kprobes_fleet_probes": None}),
    # removal never needs a valid spec
    ("playbooks/remove.yml", {"kprobes_fleet_probes": [{"name": "bad name"}]}),
    ("playbooks/collect.yml", {"kprobes_fleet_probes": "garbage"}),
    # -e gives strings: they read as YAML would
    ("deploy-probes.yml", {"kprobes_fleet_build_keep_dir": "no", "kprobes_fleet_build_timeout": "600"}),
    ("deploy-probes.yml", {"kprobes_fleet_events": {"url": "http://127.0.0.1:5000/kprobes-fleet", "rate": "3"}}),
    ("playbooks/unlock.yml", {"kprobes_fleet_unlock": "feedfacefeedface"}),
    ("deploy-probes.yml", {"kprobes_fleet_metrics": False, "kprobes_fleet_metrics_interval": "30"}),
    ("deploy-probes.yml", {"kprobes_fleet_metrics": "textfile", "kprobes_fleet_metrics_dir": "/srv/node-exporter"}),
])
def test_accepted_and_reaches_the_hosts(repo, tmp_path, target, extra):
    rc, out = play(repo, tmp_path, target, extra)
    assert rc != 0 and "UNREACHABLE" in out, out  # the ghosts: the first host task was tried
    assert "invalid variables" not in out and "Validating arguments" in out, out
