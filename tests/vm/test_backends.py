"""Both backends side by side on real kernels (marker: vm): LAB=bookworm,bookworm:lockdown=integrity.

The open VM runs the module, the locked-down one picks tracefs by itself (kprobes_fleet_backend=auto);
the same trigger gives both the same exact counts, and a second deploy changes nothing. Then, on the
open VM: tracefs forced gives the same count; with module.sig_enforce=1 switched on, a signed module
the kernel does not trust is refused before anything changes and auto keeps tracefs.
"""
import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vm
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LAB = [sys.executable, os.path.join(REPO, "lab", "lab.py")]

TRIGGER = """
for i in 1 2 3; do printf x > /dev/full; done 2>/dev/null
d=$(mktemp -d); mount -t tmpfs -o size=64k kpf-vm-test "$d"
dd if=/dev/zero of="$d/fill" bs=4k count=64 2>/dev/null; umount "$d"; rmdir "$d"; true
"""


def ansible(labdir, tmp_path, *argv):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    res = subprocess.run([os.path.join(BIN, argv[0]), "-i", str(labdir / "inventory.yml")] + list(argv[1:])
                         + ["-e", "kprobes_fleet_cache_dir=%s" % (tmp_path / "cache")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)
    return res.returncode, res.stdout + res.stderr


def collect(labdir, tmp_path):
    """Each host's kprobes_fleet facts, through the collect module."""
    rc, out = ansible(labdir, tmp_path, "ansible", "all", "-m", "kprobes.fleet.probe_facts", "-o")
    assert rc == 0, out
    facts = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+) \| SUCCESS => (\{.*\})$", line)
        if m:
            facts[m.group(1)] = json.loads(m.group(2))["ansible_facts"]["kprobes_fleet"]
    return facts


def recap(out):
    return dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", out, re.M))


def test_module_and_tracefs_report_the_same_counts(tmp_path):
    d = tmp_path / "lab"
    up = subprocess.run(LAB + ["--dir", str(d), "up"], capture_output=True, text=True, timeout=1800, check=False,
                        env=dict(os.environ, LAB="bookworm,bookworm:lockdown=integrity", LAB_KERNEL_ARGS=""))
    try:
        assert up.returncode == 0, up.stderr
        rc, out = ansible(d, tmp_path, "ansible-playbook", os.path.join(REPO, "deploy-probes.yml"))
        assert rc == 0, out
        before = collect(d, tmp_path)
        assert before["bookworm-1"]["backend"] == "module", before["bookworm-1"]
        assert before["bookworm-2"]["backend"] == "tracefs", before["bookworm-2"]
        assert "lockdown=integrity refuses unsigned modules" in before["bookworm-2"]["backend_reason"]
        rc, out = ansible(d, tmp_path, "ansible", "all", "-m", "ansible.builtin.shell", "-a", TRIGGER)
        assert rc == 0, out
        after = collect(d, tmp_path)
        delta = dict((h, after[h]["probes"]["disk_full"]["matches"] - before[h]["probes"]["disk_full"]["matches"])
                     for h in after)
        assert delta == {"bookworm-1": 4, "bookworm-2": 4}, delta  # 3 x /dev/full + 1 dd ENOSPC
        for h in after:
            dd = [e for e in after[h]["events"] if e["probe"] == "disk_full" and e["comm"] == "dd"]
            assert [e["errno"] for e in dd] == ["ENOSPC"], (h, after[h]["events"])
            assert set(after[h]) == set(after["bookworm-1"])  # one fact schema
        rc, out = ansible(d, tmp_path, "ansible-playbook", os.path.join(REPO, "deploy-probes.yml"))
        assert rc == 0, out
        assert recap(out) == {"bookworm-1": 0, "bookworm-2": 0}, out

        # tracefs forced on the open kernel: the module goes, the same trigger gives the same count
        rc, out = ansible(d, tmp_path, "ansible-playbook", os.path.join(REPO, "playbooks", "deploy.yml"),
                          "--limit", "bookworm-1", "-e", "kprobes_fleet_backend=tracefs")
        assert rc == 0, out
        before = collect(d, tmp_path)["bookworm-1"]
        assert before["backend"] == "tracefs" and before["backend_reason"] == "kprobes_fleet_backend=tracefs"
        rc, out = ansible(d, tmp_path, "ansible", "bookworm-1", "-m", "ansible.builtin.shell", "-a",
                          TRIGGER + "test ! -e /sys/module/kprobes_fleet")
        assert rc == 0, out
        after = collect(d, tmp_path)["bookworm-1"]
        assert after["probes"]["disk_full"]["matches"] - before["probes"]["disk_full"]["matches"] == 4, after

        # signature enforcement and a signed module the kernel does not trust: refused, tracefs stays
        key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
        subprocess.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "36500", "-batch",
                        "-x509", "-subj", "/CN=kprobes.fleet vm test/", "-outform", "PEM", "-out", str(cert),
                        "-keyout", str(key)], capture_output=True, check=True)
        os.chmod(str(key), 0o600)
        rc, out = ansible(d, tmp_path, "ansible", "bookworm-1", "-m", "ansible.builtin.shell", "-a",
                          "echo 1 > /sys/module/module/parameters/sig_enforce")
        assert rc == 0, out
        rc, out = ansible(d, tmp_path, "ansible-playbook", os.path.join(REPO, "playbooks", "deploy.yml"),
                          "--limit", "bookworm-1", "-e", "kprobes_fleet_signing_key=%s" % key,
                          "-e", "kprobes_fleet_signing_cert=%s" % cert)
        assert rc == 0, out
        assert "is signed by kprobes.fleet vm test" in out and "which this kernel does not trust" in out, out
        facts = collect(d, tmp_path)["bookworm-1"]
        assert facts["backend"] == "tracefs", facts
        assert facts["probes"]["disk_full"]["registered"] == 1, facts
    finally:
        down = subprocess.run(LAB + ["--dir", str(d), "down"], capture_output=True, text=True, timeout=600,
                              check=False)
    assert down.returncode == 0, down.stderr
