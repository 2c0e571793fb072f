"""The lab itself, on real VMs (marker: vm). Boots one bullseye VM (the fastest to boot)."""
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
