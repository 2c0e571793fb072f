"""A bad probe spec stops deploy-probes.yml before any task touches a host.

Runs the real playbook with ansible-playbook against hosts that do not exist (TEST-NET
addresses): if any host task ran, it would report UNREACHABLE instead of the spec error.
"""
import json
import os
import subprocess
import sys

import pytest

from unreachable import inventory_yaml

BAD_SPECS = [
    ([{"name": "disk full", "function": "vfs_write"}], "name"),
    ([{"name": "bad'quote", "function": "vfs_write"}], "name"),
    ([{"name": "p", "function": "vfs_write", "report": ["ENOTANERRNO"]}], "report"),
    ([{"name": "p", "function": "vfs_write", "maxactive": -1}], "maxactive"),
    ([{"name": "p", "function": "vfs_write;rm"}], "function"),
    ([{"name": "p", "function": "vfs_write\nx"}], "function"),
    ([{"name": "p", "function": "vfs_write"}, {"name": "p", "function": "do_filp_open"}], "name"),
    ([{"name": "p", "function": ["do_filp_open", {"function": "do_sys_openat2", "returns": "ssize_t"}]}],
     "function"),
    ([{"name": "p", "function": [{"function": "do_file_open", "type": "ptr"}]}], "function"),
]


def run_deploy(repo, tmp_path, probes):
    inv = tmp_path / "inventory.yml"
    inv.write_text(inventory_yaml(["ghost1", "ghost2"]))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"kprobes_fleet_probes": probes}))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_TIMEOUT="2", ANSIBLE_CACHE_DIR=str(tmp_path))
    bindir = os.path.dirname(sys.executable)
    return subprocess.run(
        [os.path.join(bindir, "ansible-playbook"), "-i", str(inv), "-e", "@%s" % extra,
         os.path.join(repo, "deploy-probes.yml")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("probes,field", BAD_SPECS)
def test_bad_spec_fails_before_any_host_task(repo, tmp_path, probes, field):
    res = run_deploy(repo, tmp_path, probes)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "field '%s'" % field in out, out
    assert "UNREACHABLE" not in out, out
    assert "Read the kernel" not in out, out  # the first host task of the deploy role
