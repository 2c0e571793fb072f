"""The lab itself, on real VMs (marker: vm). Boots one bullseye VM (the fastest to boot), and one
bookworm VM with per-VM kernel args (LAB=bookworm:lockdown=integrity)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vm
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = [sys.executable, os.path.join(REPO, "lab", "lab.py")]


def lab(labdir, *args, **env):
    return subprocess.run(LAB + ["--dir", str(labdir)] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=1200, check=False)


def qemu_pids(labdir):
    out = subprocess.run(["pgrep", "-f", "qemu-system.*%s/" % labdir], capture_output=True, text=True, check=False)
    return sorted(out.stdout.split())


def test_up_is_idempotent_and_down_leaves_nothing(tmp_path):
    d = tmp_path / "lab"
    try:
        first = lab(d, "up", "--releases", "bullseye")
        assert first.returncode == 0, first.stderr
        assert "5.10." in first.stdout
        pids = qemu_pids(d)
        assert len(pids) == 1
        ssh = subprocess.run(["ssh", "-F", str(d / "ssh_config"), "-o", "BatchMode=yes", "bullseye-1", "uname -r"],
                             capture_output=True, text=True, check=False)
        assert ssh.returncode == 0 and ssh.stdout.startswith("5.10."), ssh.stderr
        inventory = (d / "inventory.yml").read_text()
        assert "bullseye-1:" in inventory and "StrictHostKeyChecking=yes" in inventory
        again = lab(d, "up", "--releases", "bullseye")
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert qemu_pids(d) == pids
    finally:
        down = lab(d, "down")
    assert down.returncode == 0, down.stderr
    assert qemu_pids(d) == []
    assert not (d / "inventory.yml").exists()


def test_a_vm_that_cannot_boot_fails_with_its_console(tmp_path):
    d = tmp_path / "lab"
    try:
        res = lab(d, "up", "--releases", "bullseye", LAB_KERNEL_ARGS="init=/bin/false", LAB_BOOT_TIMEOUT="300")
        assert res.returncode != 0
        assert "Last console lines" in res.stderr
        assert "Kernel panic" in res.stderr or "exited during boot" in res.stderr
    finally:
        lab(d, "down")
    assert qemu_pids(d) == []


def ssh(labdir, host, cmd):
    res = subprocess.run(["ssh", "-F", str(labdir / "ssh_config"), "-o", "BatchMode=yes", host, cmd],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def inventory(labdir):
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"),
                          "-i", str(labdir / "inventory.yml"), "--list"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_per_vm_kernel_args_boot_group_hostvar_restart_and_down(tmp_path):
    d = tmp_path / "lab"
    lockdown = dict(LAB="bookworm:lockdown=integrity", LAB_KERNEL_ARGS="")
    try:
        first = lab(d, "up", **lockdown)
        assert first.returncode == 0, first.stderr
        assert "6.1." in first.stdout and "lockdown=integrity" in first.stdout
        pids = qemu_pids(d)
        assert len(pids) == 1
        assert "[integrity]" in ssh(d, "bookworm-1", "cat /sys/kernel/security/lockdown")
        assert "lockdown=integrity" in ssh(d, "bookworm-1", "cat /proc/cmdline").split()
        inv = inventory(d)
        assert inv["bookworm"]["hosts"] == ["bookworm-1"]
        assert inv["lockdown_integrity"]["hosts"] == ["bookworm-1"]
        assert inv["_meta"]["hostvars"]["bookworm-1"]["lab_kernel_args"] == ["lockdown=integrity"]
        meta = json.loads((d / "vms" / "bookworm-1" / "vm.json").read_text())
        assert meta["kernel_args"] == ["lockdown=integrity"] and meta["cmdline"].endswith(" lockdown=integrity")
        status = lab(d, "status")
        assert status.returncode == 0 and "lockdown=integrity" in status.stdout, status.stdout
        # Same release and args: stays up.
        again = lab(d, "up", **lockdown)
        assert again.returncode == 0, again.stderr
        assert "bookworm-1: already up" in again.stderr
        assert qemu_pids(d) == pids
        # Same name, other args: restarted with the wanted ones.
        plain = lab(d, "up", LAB="bookworm", LAB_KERNEL_ARGS="")
        assert plain.returncode == 0, plain.stderr
        assert "bookworm-1: up with kernel args 'lockdown=integrity', wanted '': restarting it" in plain.stderr
        assert len(qemu_pids(d)) == 1 and qemu_pids(d) != pids
        assert "[none]" in ssh(d, "bookworm-1", "cat /sys/kernel/security/lockdown")
        inv = inventory(d)
        assert "lockdown_integrity" not in inv.get("lab", {}).get("children", [])
        assert inv["_meta"]["hostvars"]["bookworm-1"]["lab_kernel_args"] == []
    finally:
        down = lab(d, "down")
    assert down.returncode == 0, down.stderr
    assert qemu_pids(d) == []
    assert not (d / "inventory.yml").exists()
