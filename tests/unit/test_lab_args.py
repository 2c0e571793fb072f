"""lab/lab.py per-VM kernel arguments without a VM: the LAB parser, group names, the command
line, the inventory, 'up' deciding what to keep and what to restart, 'status'."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("kprobes_fleet_lab", os.path.join(REPO, "lab", "lab.py"))
lab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab)
BASE = lab.recipe.KERNEL_CMDLINE


# --------------------------------------------------------------------------- parser

def test_no_entry_is_the_default_fleet_without_args():
    default = [(r, ()) for r in lab.recipe.DEFAULT_FLEET]
    assert lab.parse_fleet("") == default
    assert lab.parse_fleet(None) == default
    assert lab.parse_fleet(" , ,") == default


def test_releases_only_as_before():
    assert lab.parse_fleet("bookworm,bookworm,trixie") == [("bookworm", ()), ("bookworm", ()), ("trixie", ())]
    assert lab.parse_fleet(" bullseye , sid,") == [("bullseye", ()), ("sid", ())]


def test_per_vm_args():
    assert lab.parse_fleet("bookworm,bookworm:lockdown=integrity") == [
        ("bookworm", ()), ("bookworm", ("lockdown=integrity",))]
    assert lab.parse_fleet("trixie:module.sig_enforce=1:lockdown=integrity:nokaslr") == [
        ("trixie", ("module.sig_enforce=1", "lockdown=integrity", "nokaslr"))]
    assert lab.parse_fleet("bookworm: init=/sbin/init ") == [("bookworm", ("init=/sbin/init",))]
    assert lab.parse_fleet("bookworm:_x=a-b.c/d:crashkernel=256M") == [
        ("bookworm", ("_x=a-b.c/d", "crashkernel=256M"))]


@pytest.mark.parametrize("value, message", [
    ("buster", "unknown release 'buster'"),
    ("Bookworm", "unknown release 'Bookworm'"),
    ("bookworm,lockdown=integrity", "unknown release 'lockdown=integrity'"),
    (":lockdown=integrity", "unknown release ''"),
    ("bookworm:", "empty kernel argument"),
    ("bookworm::nokaslr", "empty kernel argument"),
    ("bookworm:lockdown =integrity", "not allowed per VM"),
    ("bookworm:--", "not allowed per VM"),
    ("bookworm:-x", "not allowed per VM"),
    ("bookworm:1", "not allowed per VM"),
    ("bookworm:8250.nr_uarts=1", "not allowed per VM"),
    ("bookworm:=x", "not allowed per VM"),
    ("bookworm:x=", "not allowed per VM"),
    ("bookworm:systemd.setenv=A=B", "not allowed per VM"),
    ("bookworm:x=\"a\"", "not allowed per VM"),
    ("bookworm:x=a;reboot", "not allowed per VM"),
    ("bookworm:x=$(id)", "not allowed per VM"),
    ("bookworm:lockdown=none:lockdown=integrity", "kernel parameter 'lockdown' given twice"),
    ("bookworm:a-b=1:a_b=2", "kernel parameter 'a_b' given twice"),
    ("bookworm:a.b=1,trixie:a_b=1", "would share inventory group 'a_b_1'"),
    ("bookworm:bookworm", "inventory group 'bookworm', which is taken"),
    ("bookworm:lab", "inventory group 'lab', which is taken"),
    ("bookworm:all", "inventory group 'all', which is taken"),
])
def test_bad_fleets_are_refused_with_a_clear_error(value, message):
    with pytest.raises(lab.LabError) as e:
        lab.parse_fleet(value)
    assert message in str(e.value)
    if "not allowed per VM" in message:
        assert "LAB_KERNEL_ARGS" in str(e.value)


def test_a_comma_in_an_arg_is_explained():
    with pytest.raises(lab.LabError) as e:
        lab.parse_fleet("bookworm:console=ttyS0,115200")
    assert "unknown release '115200'" in str(e.value)
    assert "',' cannot be in a per-VM argument" in str(e.value) and "LAB_KERNEL_ARGS" in str(e.value)


def test_the_same_args_on_several_vms_share_a_group():
    fleet = lab.parse_fleet("bookworm:lockdown=integrity,trixie:lockdown=integrity,bookworm")
    assert [args for release, args in fleet] == [("lockdown=integrity",), ("lockdown=integrity",), ()]


def test_names_count_per_release_whatever_the_args():
    fleet = lab.parse_fleet("bookworm,bookworm:lockdown=integrity,trixie:lockdown=integrity,bookworm")
    assert lab.Lab.wanted(fleet) == [
        ("bookworm-1", "bookworm", ()),
        ("bookworm-2", "bookworm", ("lockdown=integrity",)),
        ("trixie-1", "trixie", ("lockdown=integrity",)),
        ("bookworm-3", "bookworm", ()),
    ]


@pytest.mark.parametrize("args, group", [
    (("lockdown=integrity",), "lockdown_integrity"),
    (("module.sig_enforce=1",), "module_sig_enforce_1"),
    (("module.sig_enforce=1", "lockdown=integrity"), "module_sig_enforce_1_lockdown_integrity"),
    (("nokaslr",), "nokaslr"),
    (("init=/bin/sh",), "init__bin_sh"),
    (("_x-y=a.b",), "_x_y_a_b"),
])
def test_group_names(args, group):
    assert lab.args_group(args) == group
    assert group.isidentifier()


# --------------------------------------------------------------------------- command line

def test_cmdline_is_base_then_common_then_own():
    assert lab.kernel_cmdline((), ()) == BASE
    assert lab.kernel_cmdline(("quiet",), ("lockdown=integrity",)) == BASE + " quiet lockdown=integrity"


def test_cmdline_too_long_or_own_args_after_double_dash_are_refused():
    with pytest.raises(lab.LabError, match="more than the 2047"):
        lab.kernel_cmdline((), ("x=" + "a" * 2100,))
    with pytest.raises(lab.LabError, match="would go to init"):
        lab.kernel_cmdline(("--", "single"), ("lockdown=integrity",))
    assert lab.kernel_cmdline(("--", "single"), ()).endswith(" -- single")


def test_common_args_come_from_lab_kernel_args(monkeypatch):
    monkeypatch.setenv("LAB_KERNEL_ARGS", "  quiet  console=ttyS0,115200 ")
    assert lab.common_kernel_args() == ("quiet", "console=ttyS0,115200")
    monkeypatch.delenv("LAB_KERNEL_ARGS")
    assert lab.common_kernel_args() == ()


# --------------------------------------------------------------------------- a fake lab

@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A Lab whose VMs are vm.json files: 'running' holds the names whose qemu 'runs'."""
    key = tmp_path / "id_ed25519"
    monkeypatch.setattr(lab, "ssh_key", lambda: str(key))
    running = set()
    monkeypatch.setattr(lab.Lab, "pid", lambda self, name: 4242 if name in running else None)
    the_lab = lab.Lab(str(tmp_path / "lab"))
    the_lab.running = running
    return the_lab


def add_vm(the_lab, name, args=(), common=(), port=2200, ready=True, running=True):
    os.makedirs(the_lab.vmdir(name))
    the_lab.save(name, {"name": name, "release": name.rsplit("-", 1)[0], "port": port,
                        "hostkey": "ssh-ed25519 AAAA", "kernel": "6.1.0-1-amd64", "uname_r": "6.1.0-1-amd64",
                        "kernel_args": list(args), "common_kernel_args": list(common),
                        "cmdline": lab.kernel_cmdline(common, args), "ready": ready})
    if running:
        the_lab.running.add(name)


def ansible_inventory(path):
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i", str(path),
                          "--list"], capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert res.returncode == 0, res.stderr
    assert "WARNING" not in res.stderr, res.stderr
    return json.loads(res.stdout)


def test_inventory_has_release_groups_args_groups_and_the_hostvar(fake, tmp_path):
    add_vm(fake, "bookworm-1", port=2201)
    add_vm(fake, "bookworm-2", ("lockdown=integrity",), port=2202)
    add_vm(fake, "trixie-1", ("lockdown=integrity",), ("quiet",), port=2203)
    add_vm(fake, "trixie-2", ("module.sig_enforce=1", "lockdown=integrity"), port=2204)
    add_vm(fake, "bullseye-1", ("nokaslr",), port=2205, ready=False)  # still booting: not listed
    fake.write_inventory()
    inv = ansible_inventory(tmp_path / "lab" / "inventory.yml")
    assert sorted(inv["lab"]["children"]) == sorted(
        ["bookworm", "trixie", "lockdown_integrity", "module_sig_enforce_1_lockdown_integrity"])
    assert inv["bookworm"]["hosts"] == ["bookworm-1", "bookworm-2"]
    assert inv["trixie"]["hosts"] == ["trixie-1", "trixie-2"]
    assert inv["lockdown_integrity"]["hosts"] == ["bookworm-2", "trixie-1"]
    assert inv["module_sig_enforce_1_lockdown_integrity"]["hosts"] == ["trixie-2"]
    hostvars = inv["_meta"]["hostvars"]
    assert hostvars["bookworm-1"]["lab_kernel_args"] == []
    assert hostvars["bookworm-2"]["lab_kernel_args"] == ["lockdown=integrity"]
    assert hostvars["trixie-1"]["lab_kernel_args"] == ["quiet", "lockdown=integrity"]
    assert hostvars["trixie-2"]["lab_kernel_args"] == ["module.sig_enforce=1", "lockdown=integrity"]
    assert hostvars["trixie-2"]["ansible_port"] == 2204
    assert "bullseye-1" not in hostvars


def test_status_shows_the_args(fake, capsys):
    add_vm(fake, "bookworm-1", port=2201)
    add_vm(fake, "bookworm-2", ("lockdown=integrity",), ("quiet",), port=2202)
    assert [r["kernel_args"] for r in fake.status()] == [[], ["quiet", "lockdown=integrity"]]
    assert lab.main(["--dir", fake.dir, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bookworm-1") and lines[0].endswith("6.1.0-1-amd64")
    assert lines[1].startswith("bookworm-2") and lines[1].endswith("6.1.0-1-amd64        quiet lockdown=integrity")


@pytest.fixture
def fake_up(fake, monkeypatch):
    """'up' on the fake lab: boots and stops are recorded, a booted VM is at once ready."""
    calls = []
    monkeypatch.setattr(lab, "build_image", lambda release: "/images/" + release)

    def boot(self, name, release, image, memory, smp, args=(), common=()):
        calls.append(("boot", name, tuple(args), tuple(common)))
        add_vm(self, name, args, common)

    def stop(self, name):
        calls.append(("stop", name))
        self.running.discard(name)
        lab.shutil.rmtree(self.vmdir(name), ignore_errors=True)

    monkeypatch.setattr(lab.Lab, "boot", boot)
    monkeypatch.setattr(lab.Lab, "stop", stop)
    monkeypatch.setattr(lab.Lab, "_wait", lambda self, name, timeout, errors: None)
    fake.calls = calls
    return fake


def test_up_keeps_same_args_restarts_changed_ones_and_stops_the_rest(fake_up):
    add_vm(fake_up, "bookworm-1")                                  # same: kept
    add_vm(fake_up, "bookworm-2")                                  # wanted with lockdown: restarted
    add_vm(fake_up, "trixie-1", ("lockdown=integrity",))           # same: kept
    add_vm(fake_up, "trixie-2", ("nokaslr",))                      # not wanted: stopped
    add_vm(fake_up, "bullseye-1", ("nokaslr",), running=False)     # wanted, dead: booted again
    vms = fake_up.up(lab.parse_fleet("bookworm,bookworm:lockdown=integrity,trixie:lockdown=integrity,"
                                     "bullseye:nokaslr"), 2048, None, 60, common=())
    assert sorted(fake_up.calls) == sorted([
        ("stop", "trixie-2"),
        ("stop", "bookworm-2"), ("boot", "bookworm-2", ("lockdown=integrity",), ()),
        ("stop", "bullseye-1"), ("boot", "bullseye-1", ("nokaslr",), ()),
    ])
    assert [(m["name"], m["kernel_args"]) for m in vms] == [
        ("bookworm-1", []), ("bookworm-2", ["lockdown=integrity"]),
        ("trixie-1", ["lockdown=integrity"]), ("bullseye-1", ["nokaslr"])]


def test_up_again_with_the_same_fleet_boots_nothing(fake_up):
    fleet = lab.parse_fleet("bookworm,bookworm:lockdown=integrity")
    fake_up.up(fleet, 2048, None, 60, common=("quiet",))
    assert [c[0] for c in fake_up.calls] == ["stop", "boot", "stop", "boot"]
    del fake_up.calls[:]
    fake_up.up(fleet, 2048, None, 60, common=("quiet",))
    assert fake_up.calls == []


def test_up_restarts_when_lab_kernel_args_change(fake_up, monkeypatch):
    add_vm(fake_up, "bookworm-1", ("lockdown=integrity",))
    monkeypatch.setenv("LAB_KERNEL_ARGS", "module.sig_enforce=1")
    fake_up.up(lab.parse_fleet("bookworm:lockdown=integrity"), 2048, None, 60)
    assert fake_up.calls == [("stop", "bookworm-1"),
                             ("boot", "bookworm-1", ("lockdown=integrity",), ("module.sig_enforce=1",))]


def test_a_vm_from_before_per_vm_args_counts_as_without_args(fake_up):
    add_vm(fake_up, "bookworm-1")
    meta = fake_up.meta("bookworm-1")
    del meta["kernel_args"], meta["common_kernel_args"]
    fake_up.save("bookworm-1", meta)
    fake_up.up(lab.parse_fleet("bookworm"), 2048, None, 60, common=())
    assert fake_up.calls == []


def test_a_bad_lab_fails_before_anything_boots(tmp_path):
    d = tmp_path / "lab"
    res = subprocess.run([sys.executable, os.path.join(REPO, "lab", "lab.py"), "--dir", str(d), "up"],
                         capture_output=True, text=True, timeout=60, check=False,
                         env=dict(os.environ, LAB="bookworm,bookworm:lockdown=integrity:x=$(id)",
                                  LAB_QEMU="/bin/false", KPROBES_FLEET_LAB_CACHE=str(tmp_path / "cache")))
    assert res.returncode == 1
    assert "lab: ERROR: LAB entry 'bookworm:lockdown=integrity:x=$(id)': kernel argument 'x=$(id)'" in res.stderr
    assert not d.exists() and not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- other architectures

def test_arm64_releases_are_known():
    assert lab.parse_fleet("bookworm,bookworm-arm64,sid-arm64:nokaslr") == [
        ("bookworm", ()), ("bookworm-arm64", ()), ("sid-arm64", ("nokaslr",))]
    with pytest.raises(lab.LabError, match=r"unknown release 'bookworm-riscv64'.*<release>-arm64"):
        lab.parse_fleet("bookworm-riscv64")
    with pytest.raises(lab.LabError, match="unknown release 'buster-arm64'"):
        lab.parse_fleet("buster-arm64")


def test_arm64_console_and_qemu(monkeypatch, tmp_path):
    assert lab.kernel_cmdline((), ("nokaslr",), "bookworm-arm64") == \
        BASE.replace("console=ttyS0", "console=ttyAMA0") + " nokaslr"
    assert lab.kernel_cmdline((), (), "bookworm") == BASE
    assert lab.arch.packages(lab.recipe.packages("bookworm"), "arm64").count("linux-image-arm64") == 1
    assert "linux-image-amd64" not in lab.arch.packages(lab.recipe.packages("bookworm"), "arm64")
    # the qemu command line of an arm64 VM
    seen = {}
    monkeypatch.setattr(lab, "QEMU", None)
    monkeypatch.setattr(lab, "run", lambda argv, **kw: None)
    monkeypatch.setattr(lab.subprocess, "run", lambda argv, **kw: seen.setdefault("argv", argv) and
                        lab.subprocess.CompletedProcess(argv, 0, "", ""))
    image = tmp_path / "img"
    image.mkdir()
    (image / "meta.json").write_text(json.dumps({"hostkey": "ssh-ed25519 AAAA", "kernel": "6.1.0-1-arm64"}))
    lab.Lab(str(tmp_path / "lab")).boot("bookworm-arm64-1", "bookworm-arm64", str(image), 2048, 1)
    argv = seen["argv"]
    assert argv[0] == "qemu-system-aarch64"
    assert argv[argv.index("-M") + 1] == "virt" and argv[argv.index("-cpu") + 1] == "max,pauth-impdef=on"
    assert "console=ttyAMA0" in argv[argv.index("-append") + 1]


def test_x86_image_keys_do_not_depend_on_the_arch_file(monkeypatch, tmp_path):
    key = tmp_path / "id_ed25519"
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAA lab\n")
    monkeypatch.setattr(lab, "ssh_key", lambda: str(key))
    before = (lab.recipe_hash("bookworm"), lab.recipe_hash("bookworm-arm64"))
    real_open = open

    def open_(path, *a, **kw):  # the same arch.py with one more byte
        if str(path).endswith(os.path.join("lab", "arch.py")):
            return __import__("io").BytesIO(real_open(path, "rb").read() + b"#")
        return real_open(path, *a, **kw)
    monkeypatch.setattr("builtins.open", open_)
    after = (lab.recipe_hash("bookworm"), lab.recipe_hash("bookworm-arm64"))
    assert after[0] == before[0] and after[1] != before[1] and before[0] != before[1]


def test_inventory_groups_of_arm64_vms_have_no_dash(fake, tmp_path):
    add_vm(fake, "bookworm-1", port=2201)
    add_vm(fake, "bookworm-arm64-1", port=2202)
    fake.write_inventory()
    inv = ansible_inventory(tmp_path / "lab" / "inventory.yml")
    assert sorted(inv["lab"]["children"]) == ["bookworm", "bookworm_arm64"]
    assert inv["bookworm_arm64"]["hosts"] == ["bookworm-arm64-1"]
    assert inv["bookworm"]["hosts"] == ["bookworm-1"]


def test_a_new_image_drops_only_its_own_older_builds(monkeypatch, tmp_path):
    images = tmp_path / "images"
    for old in ("bookworm-0123456789abcdef", "arm64-bookworm-0123456789abcdef", "bookworm-backports-x"):
        (images / old).mkdir(parents=True)
        (images / old / "meta.json").write_text("{}")
    monkeypatch.setattr(lab, "CACHE", str(tmp_path))
    monkeypatch.setattr(lab, "recipe_hash", lambda release: "fedcba9876543210")
    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab, "_build_into", lambda release, work: None)
    lab.build_image("bookworm")
    assert sorted(os.listdir(str(images))) == [
        ".bookworm.lock", "arm64-bookworm-0123456789abcdef", "bookworm-backports-x", "bookworm-fedcba9876543210"]
    lab.build_image("bookworm-arm64")
    assert sorted(os.listdir(str(images))) == [
        ".arm64-bookworm.lock", ".bookworm.lock", "arm64-bookworm-fedcba9876543210", "bookworm-backports-x",
        "bookworm-fedcba9876543210"]
    # what lab.py before arm64 deletes when it builds bookworm: '<release>-*'; never an arm64 image
    assert not lab.image_dir("bookworm-arm64").split(os.sep)[-1].startswith("bookworm-")
