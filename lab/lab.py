#!/usr/bin/env python3
"""kprobes.fleet lab: a small fleet of real Debian kernels in QEMU (TCG) VMs.

    lab.py image RELEASE...        build (or reuse) cached images
    lab.py up [--releases FLEET]   boot the fleet, wait for SSH, write the inventory
    lab.py down                    stop every VM this lab directory started
    lab.py status                  list them
    lab.py kill NAME               pull a VM's plug (its disk is kept)
    lab.py start NAME [--wait]     power it on again, with its disk

VMs behave like machines: a reboot from inside (``reboot``, Ansible's reboot module)
resets the VM and boots the kernel the guest's /vmlinuz points to (so a kernel
upgraded inside a guest runs after its reboot, see recipe.BOOT_DEFAULT_KERNEL); a
power-off from inside or ``kill`` leaves it off with its disk, and ``up`` (same fleet)
or ``start`` powers it on again.

FLEET (``--releases`` or ``$LAB``) is a comma-separated list of VMs, one entry
per VM: ``release[:arg[:arg...]]``, e.g. ``bookworm,bookworm:lockdown=integrity``.
Each arg is one kernel command-line word, ``name`` or ``name=value``, made of
letters, digits and ``_ . -`` (a value may also hold ``/``); an arg containing
``,`` or ``:`` cannot be written per VM: put it in ``$LAB_KERNEL_ARGS``, which
is appended to the command line of every VM of the call (before the VM's own
args, so the VM's own args win). VMs are named ``<release>-<n>``; the inventory
has a group per release and one per distinct per-VM args list (see
``args_group``), and a ``lab_kernel_args`` hostvar on every host.

Images live in the cache (``$KPROBES_FLEET_LAB_CACHE`` or ~/.cache/kprobes-fleet/lab)
and are rebuilt only when ``recipe.py`` changes; every VM boots from its own
qcow2 overlay, so the base image is never written. Standard library only.
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import recipe  # noqa: E402
import arch  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("KPROBES_FLEET_LAB_CACHE", "~/.cache/kprobes-fleet/lab"))
QEMU = os.environ.get("LAB_QEMU")  # overrides the architecture's qemu-system-* (tests)
# Console lines after which a boot will never reach SSH: fail at once instead of timing out.
BOOT_FAILURES = ("Kernel panic", "Dropping to a shell", "Gave up waiting for root", "emergency mode")
# One per-VM kernel argument: "name" or "name=value". Conservative on purpose: no quotes, no
# spaces, and neither "," (separates VMs) nor ":" (separates a VM's args) can appear; a name
# starts with a letter or "_" (so no "--", and no bare "1" that the kernel would hand to init).
KERNEL_ARG = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*(=[A-Za-z0-9_./-]+)?")
# x86 COMMAND_LINE_SIZE is 2048 bytes, terminating NUL included.
MAX_CMDLINE = 2047
# Group names that a per-VM args group may not take.
RESERVED_GROUPS = {"all", "ungrouped", "lab"}


class LabError(Exception):
    pass


def log(msg):
    print("lab: %s" % msg, file=sys.stderr, flush=True)


def run(argv, **kw):
    kw.setdefault("check", True)
    return subprocess.run(argv, **kw)


# --------------------------------------------------------------------------- ssh key

def ssh_key():
    """The lab's SSH key pair (created once, baked into every image)."""
    keydir = os.path.join(CACHE, "ssh")
    key = os.path.join(keydir, "id_ed25519")
    if not os.path.exists(key):
        os.makedirs(keydir, mode=0o700, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kprobes-fleet-lab", "-f", key])
    return key


# --------------------------------------------------------------------------- images

def known(release):
    """A release the lab can build: a recipe release, or one with an architecture suffix."""
    base, _arch = arch.split(release)
    return base in recipe.KERNELS


def known_names():
    return "%s (each also as <release>-%s)" % (", ".join(recipe.KERNELS), "/-".join(arch.FOREIGN))


def recipe_hash(release):
    h = hashlib.sha256()
    with open(os.path.join(HERE, "recipe.py"), "rb") as f:
        h.update(f.read())
    with open(ssh_key() + ".pub", "rb") as f:
        h.update(f.read())
    h.update(release.encode())
    if arch.split(release)[1] != arch.DEFAULT_ARCH:  # x86-64 images keep their key
        with open(os.path.join(HERE, "arch.py"), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def image_dir(release):
    return os.path.join(CACHE, "images", "%s-%s" % (arch.image_name(release), recipe_hash(release)))


def build_image(release):
    """Return the directory of a ready image for release, building it if needed."""
    if not known(release):
        raise LabError("unknown release %r (known: %s)" % (release, known_names()))
    final = image_dir(release)
    if os.path.exists(os.path.join(final, "meta.json")):
        return final
    os.makedirs(os.path.join(CACHE, "images"), exist_ok=True)
    with open(os.path.join(CACHE, "images", ".%s.lock" % arch.image_name(release)), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another 'make lab' may be building it right now
        if os.path.exists(os.path.join(final, "meta.json")):
            return final
        if os.geteuid() != 0:
            raise LabError("building a lab image needs root (debootstrap, chroot); run as root or with sudo")
        work = final + ".build"
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        try:
            _build_into(release, work)
        except BaseException:
            unmount_under(work)  # an interrupted debootstrap can leave proc/sys/dev mounted
            shutil.rmtree(work, ignore_errors=True)
            raise
        # Drop images of older recipes for this release (not bookworm-arm64's for bookworm),
        # then publish atomically.
        mine = re.compile(re.escape(arch.image_name(release)) + r"-[0-9a-f]{16}(\.build)?")
        for old in os.listdir(os.path.join(CACHE, "images")):
            if mine.fullmatch(old) and old != os.path.basename(work):
                shutil.rmtree(os.path.join(CACHE, "images", old), ignore_errors=True)
        os.rename(work, final)
    return final


def unmount_under(path):
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(path + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def ensure_binfmt(name):
    """Foreign programs (the guest's, in debootstrap and chroot) run through qemu-user-static."""
    entry = os.path.join("/proc/sys/fs/binfmt_misc", name)
    if not os.path.exists(entry):
        if not os.path.exists("/proc/sys/fs/binfmt_misc/status"):
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=False)
        subprocess.run(["update-binfmts", "--enable", name], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(entry) as f:
            if f.readline().strip() == "enabled":
                return
    except OSError:
        pass
    raise LabError("binfmt_misc has no enabled %s entry: install qemu-user-static and binfmt-support, "
                   "then: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
                   "update-binfmts --enable %s" % (name, name))


def _build_into(release, work):
    t0 = time.time()
    root = os.path.join(work, "rootfs")
    base, cpu = arch.split(release)
    foreign = []
    if cpu != arch.DEFAULT_ARCH:
        ensure_binfmt(arch.ARCHES[cpu]["binfmt"])
        foreign = ["--arch=" + cpu]
    log("%s: debootstrap (minbase, %s kernel, %s) ..." % (release, recipe.KERNELS[base], cpu))
    with open(os.path.join(work, "debootstrap.log"), "w") as out:
        res = subprocess.run(
            ["debootstrap", "--variant=minbase"] + foreign
            + ["--include=" + ",".join(arch.packages(recipe.packages(base), cpu)), base, root],
            stdout=out, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        with open(os.path.join(work, "debootstrap.log")) as f:
            tail = f.read().splitlines()[-25:]
        raise LabError("debootstrap %s failed (rc=%d):\n%s" % (release, res.returncode, "\n".join(tail)))
    for rel, content in recipe.guest_files(base).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
    sshdir = os.path.join(root, "root", ".ssh")
    os.makedirs(sshdir, mode=0o700, exist_ok=True)
    shutil.copy(ssh_key() + ".pub", os.path.join(sshdir, "authorized_keys"))
    os.chmod(os.path.join(sshdir, "authorized_keys"), 0o600)
    for argv in recipe.CHROOT_COMMANDS:
        run(["chroot", root] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    boot = os.path.join(root, "boot")
    kernels = sorted(n for n in os.listdir(boot) if n.startswith("vmlinuz-"))
    if not kernels:
        raise LabError("%s: no kernel in %s" % (release, boot))
    kver = kernels[-1][len("vmlinuz-"):]
    shutil.copy(os.path.join(boot, "vmlinuz-" + kver), os.path.join(work, "vmlinuz"))
    shutil.copy(os.path.join(boot, "initrd.img-" + kver), os.path.join(work, "initrd.img"))
    with open(os.path.join(root, "etc/ssh/ssh_host_ed25519_key.pub")) as f:
        hostkey = " ".join(f.read().split()[:2])
    # stdout stays clean for 'up --json': mkfs prints "Creating regular file" even with -q
    run(["mkfs.ext4", "-q", "-F", "-d", root, "-L", "root", os.path.join(work, "root.img"), recipe.IMAGE_SIZE],
        stdout=sys.stderr)
    shutil.rmtree(root)
    meta = {"release": release, "arch": cpu, "kernel": kver, "hostkey": hostkey,
            "recipe": recipe_hash(release), "build_s": round(time.time() - t0, 1)}
    with open(os.path.join(work, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    log("%s: image ready (kernel %s) in %.0f s" % (release, kver, time.time() - t0))


# --------------------------------------------------------------------------- VMs

class Lab:
    def __init__(self, labdir):
        self.dir = os.path.abspath(labdir)
        self.vms = os.path.join(self.dir, "vms")

    # -- bookkeeping
    def names(self):
        if not os.path.isdir(self.vms):
            return []
        return sorted(os.listdir(self.vms))

    def vmdir(self, name):
        return os.path.join(self.vms, name)

    def meta(self, name):
        try:
            with open(os.path.join(self.vmdir(name), "vm.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def pid(self, name):
        """pid of the VM's qemu if it is running (and really is that qemu), else None."""
        try:
            with open(os.path.join(self.vmdir(name), "qemu.pid")) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except (OSError, ValueError):
            return None
        return pid if self.vmdir(name).encode() in cmd else None

    def strays(self):
        """qemu processes started from this lab directory, whatever their pid files say."""
        found = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and b"qemu-system" in cmd[0] and any(a.startswith(self.vms.encode() + b"/") for a in cmd):
                found.append(int(p))
        return found

    def ssh_argv(self, name, *cmd):
        m = self.meta(name)
        return ["ssh", "-F", "/dev/null", "-i", ssh_key(), "-p", str(m["port"]),
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "UserKnownHostsFile=" + os.path.join(self.dir, "known_hosts"),
                "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
                "root@127.0.0.1"] + list(cmd)

    # -- lifecycle
    @staticmethod
    def wanted(fleet):
        """[(name, release, args)] for a parsed fleet: names are <release>-<n>, whatever the args."""
        count, out = {}, []
        for release, args in fleet:
            count[release] = count.get(release, 0) + 1
            out.append(("%s-%d" % (release, count[release]), release, tuple(args)))
        return out

    def running_as(self, name):
        """(release, own args, common args) of a VM that is up and answered SSH, else None."""
        m = self.meta(name)
        if not (m and m.get("ready") and self.pid(name)):
            return None
        return (m.get("release"), tuple(m.get("kernel_args", ())), tuple(m.get("common_kernel_args", ())))

    def up(self, fleet, memory, smp, timeout, common=None):
        """Boot a fleet parsed by parse_fleet(); common: LAB_KERNEL_ARGS words (default: from the
        environment). A VM already up with the same release and args stays up; one whose args
        differ is restarted with the wanted ones (its overlay, like every VM's, starts clean)."""
        common = common_kernel_args() if common is None else tuple(common)
        for release, args in fleet:  # before booting anything (parse_fleet checked the syntax)
            kernel_cmdline(common, args, release)
        wanted = self.wanted(fleet)
        images = {r: build_image(r) for r in dict.fromkeys(r for r, _ in fleet)}
        os.makedirs(self.vms, exist_ok=True)
        wanted_names = {name for name, _, _ in wanted}
        for name in self.names():
            if name not in wanted_names:
                log("%s: not in this fleet, stopping it" % name)
                self.stop(name)
        if smp is None:
            smp = 2 if len(wanted) == 1 else 1
        booting = []
        for name, release, args in wanted:
            have = self.running_as(name)
            shown = ", kernel args: " + " ".join(common + args) if common + args else ""
            if have == (release, args, common):
                log("%s: already up (port %d)%s" % (name, self.meta(name)["port"], shown))
                continue
            if have is None and self.stopped_as(name) == (release, args, common, images[release]):
                # Powered off (killed, or shut down from inside): power it on, disk and all.
                self.start(name, memory, smp)
                booting.append(name)
                continue
            if have:
                log("%s: up with kernel args %r, wanted %r: restarting it"
                    % (name, " ".join(have[2] + have[1]), " ".join(common + args)))
            self.stop(name)
            self.boot(name, release, images[release], memory, smp, args, common)
            booting.append(name)
        self.write_known_hosts()
        errors = {}
        threads = [threading.Thread(target=self._wait, args=(n, timeout, errors)) for n in booting]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for name in errors:
                self.stop(name)
            raise LabError("\n\n".join(errors.values()))
        self.write_inventory()
        return [self.meta(n) for n, _, _ in wanted]

    def boot(self, name, release, image, memory, smp, args=(), common=()):
        d = self.vmdir(name)
        os.makedirs(d)
        with open(os.path.join(image, "meta.json")) as f:
            img = json.load(f)
        overlay = os.path.join(d, "overlay.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", os.path.join(image, "root.img"), overlay])
        port = free_port()
        cmdline = kernel_cmdline(common, args, release)
        # kernel_args: this VM's own (from its LAB entry); common_kernel_args: LAB_KERNEL_ARGS.
        meta = {"name": name, "release": release, "port": port, "host": "127.0.0.1",
                "hostkey": img["hostkey"], "image": image, "kernel": img["kernel"],
                "kernel_args": list(args), "common_kernel_args": list(common), "cmdline": cmdline,
                "ready": False}
        self.save(name, meta)
        log("%s: booting %s (port %d)%s" % (name, img["kernel"], port,
                                            ", kernel args: " + " ".join(common + args) if common + args else ""))
        self.launch(name, memory, smp)

    def launch(self, name, memory, smp):
        """Start the VM's qemu on its overlay. Like a real machine: a reboot from inside resets it
        (QEMU starts the image's kernel again; the guest's lab-boot-default-kernel unit then
        switches to the kernel /vmlinuz points to, see recipe.BOOT_DEFAULT_KERNEL); a power-off
        from inside, or 'lab.py kill', leaves it off with its disk, and 'up'/'start' powers it on."""
        d, m = self.vmdir(name), self.meta(name)
        image = m["image"]
        cpu = arch.ARCHES[arch.split(m["release"])[1]]
        argv = [QEMU or cpu["qemu"], "-name", "kfleet-" + name] + cpu["machine"] + [
                "-accel", "tcg,thread=multi", "-smp", str(smp), "-m", str(memory),
                "-kernel", os.path.join(image, "vmlinuz"), "-initrd", os.path.join(image, "initrd.img"),
                "-append", m["cmdline"],
                "-drive", "file=%s,if=virtio,format=qcow2" % os.path.join(d, "overlay.qcow2"),
                "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22" % m["port"],
                "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci",
                "-display", "none", "-monitor", "none",
                "-serial", "file:" + os.path.join(d, "console.log"),
                "-daemonize", "-pidfile", os.path.join(d, "qemu.pid")]
        m.update(ready=False, memory=memory, smp=smp)
        self.save(name, m)
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode != 0:
            raise LabError("%s: qemu failed to start: %s" % (name, res.stderr.strip()))

    def stopped_as(self, name):
        """(release, own args, common args, image) of a VM that is powered off with its disk, else None."""
        m = self.meta(name)
        if not m or self.pid(name) or not os.path.exists(os.path.join(self.vmdir(name), "overlay.qcow2")):
            return None
        return (m.get("release"), tuple(m.get("kernel_args", ())), tuple(m.get("common_kernel_args", ())),
                m.get("image"))

    def start(self, name, memory=None, smp=None):
        """Power on a VM that is off, keeping its disk (and its port, when still free)."""
        m = self.meta(name)
        if not m or not self.stopped_as(name):
            raise LabError("%s: no powered-off lab VM of that name in %s" % (name, self.vms))
        if not port_free(m["port"]):
            m["port"] = free_port()
            self.save(name, m)
        # The console log of the previous power cycle is kept, once, for the record.
        console = os.path.join(self.vmdir(name), "console.log")
        if os.path.exists(console):
            os.replace(console, console + ".previous")
        log("%s: powering on with its disk (port %d)" % (name, m["port"]))
        self.launch(name, memory or m.get("memory", 2048), smp or m.get("smp", 1))

    def kill(self, name):
        """Pull the plug: SIGKILL the VM's qemu (no shutdown), keep its disk for 'start'/'up'."""
        pid = self.pid(name)
        if not pid:
            raise LabError("%s: not running" % name)
        os.kill(pid, signal.SIGKILL)
        kill_wait(pid)
        m = self.meta(name)
        m["ready"] = False
        self.save(name, m)
        log("%s: killed (qemu pid %d), disk kept" % (name, pid))

    def _wait(self, name, timeout, errors):
        t0 = time.time()
        console = os.path.join(self.vmdir(name), "console.log")
        while True:
            if not self.pid(name):
                errors[name] = "%s: qemu exited during boot. Last console lines:\n%s" % (name, tail(console))
                return
            recent = tail(console, 60)
            for marker in BOOT_FAILURES:
                if marker in recent:
                    errors[name] = "%s: boot failed (%s). Last console lines:\n%s" % (name, marker, tail(console))
                    return
            if time.time() - t0 > timeout:
                errors[name] = "%s: no SSH after %d s. Last console lines:\n%s" % (name, timeout, tail(console))
                return
            res = subprocess.run(self.ssh_argv(name, "uname", "-r"), capture_output=True, text=True, check=False)
            if res.returncode == 0:
                meta = self.meta(name)
                meta.update(ready=True, uname_r=res.stdout.strip(), boot_s=round(time.time() - t0, 1))
                self.save(name, meta)
                log("%s: up, uname -r = %s (%.0f s)" % (name, meta["uname_r"], meta["boot_s"]))
                return
            time.sleep(3)

    def stop(self, name):
        pid = self.pid(name)
        if pid:
            kill_wait(pid)
        shutil.rmtree(self.vmdir(name), ignore_errors=True)

    def down(self):
        for name in self.names():
            log("%s: stopping" % name)
            self.stop(name)
        for pid in self.strays():
            log("stray qemu %d: stopping" % pid)
            kill_wait(pid)
        for f in ("inventory.yml", "known_hosts", "ssh_config"):
            try:
                os.unlink(os.path.join(self.dir, f))
            except FileNotFoundError:
                pass

    def save(self, name, meta):
        tmp = os.path.join(self.vmdir(name), "vm.json.tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp, os.path.join(self.vmdir(name), "vm.json"))

    # -- outputs
    def write_known_hosts(self):
        lines = ["[127.0.0.1]:%d %s\n" % (m["port"], m["hostkey"])
                 for m in map(self.meta, self.names()) if m]
        with open(os.path.join(self.dir, "known_hosts"), "w") as f:
            f.writelines(lines)

    def write_inventory(self):
        groups, arg_groups = {}, {}
        for name in self.names():
            m = self.meta(name)
            if m and m.get("ready"):
                groups.setdefault(arch.group(m["release"]), []).append(m)
                if m.get("kernel_args"):
                    arg_groups.setdefault(args_group(m["kernel_args"]), []).append(m)
        # ServerAlive: QEMU's user network never resets a connection whose guest rebooted under it
        # (a real host's new TCP stack would); without it an ssh session open across a reboot hangs.
        common = ("-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ServerAliveInterval=5 "
                  "-o ServerAliveCountMax=6" % os.path.join(self.dir, "known_hosts"))
        out = ["# Written by 'make lab' (lab/lab.py); rewritten on every run.",
               "all:", "  vars:", "    ansible_user: root",
               "    ansible_ssh_private_key_file: %s" % ssh_key(),
               "    ansible_ssh_common_args: %s" % json.dumps(common),
               "    ansible_python_interpreter: /usr/bin/python3",
               "  children:", "    lab:", "      children:"]
        for release in sorted(groups):
            out += ["        %s:" % release, "          hosts:"]
            for m in groups[release]:
                out.append("            %s: {ansible_host: 127.0.0.1, ansible_port: %d, lab_kernel_args: %s}"
                           % (m["name"], m["port"], json.dumps(vm_kernel_args(m))))
        # One group per distinct per-VM args list (LAB_KERNEL_ARGS, common to all, makes none).
        for group in sorted(arg_groups):
            out += ["        %s:" % json.dumps(group), "          hosts:"]
            out += ["            %s:" % m["name"] for m in arg_groups[group]]
        with open(os.path.join(self.dir, "inventory.yml"), "w") as f:
            f.write("\n".join(out) + "\n")
        ssh = []
        for name in self.names():
            m = self.meta(name)
            if m:
                ssh += ["Host %s" % name, "  HostName 127.0.0.1", "  Port %d" % m["port"], "  User root",
                        "  IdentityFile %s" % ssh_key(),
                        "  UserKnownHostsFile %s" % os.path.join(self.dir, "known_hosts"), ""]
        with open(os.path.join(self.dir, "ssh_config"), "w") as f:
            f.write("\n".join(ssh))

    def status(self):
        rows = []
        for name in self.names():
            m = self.meta(name) or {}
            rows.append({"name": name, "release": m.get("release"), "port": m.get("port"),
                         "pid": self.pid(name), "kernel": m.get("uname_r") or m.get("kernel"),
                         "ready": bool(m.get("ready")), "kernel_args": vm_kernel_args(m)})
        return rows


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def kill_wait(pid, grace=10):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _tick in range(grace * 10):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return "(no console log)"


def common_kernel_args():
    """LAB_KERNEL_ARGS as words: appended to every VM's command line, free-form (not checked)."""
    return tuple(os.environ.get("LAB_KERNEL_ARGS", "").split())


def vm_kernel_args(meta):
    """Everything a VM's command line has beyond the lab's own: LAB_KERNEL_ARGS, then its own args."""
    return list(meta.get("common_kernel_args", ())) + list(meta.get("kernel_args", ()))


def kernel_cmdline(common, args, release=None):
    """The -append string; LabError if the kernel would truncate it or its args would reach init."""
    if args and "--" in common:
        raise LabError("LAB_KERNEL_ARGS contains '--': the per-VM kernel args %s would go to init, "
                       "not to the kernel" % " ".join(args))
    base = arch.cmdline(recipe.KERNEL_CMDLINE, arch.split(release)[1] if release else arch.DEFAULT_ARCH)
    cmdline = " ".join((base,) + tuple(common) + tuple(args))
    if len(cmdline.encode()) > MAX_CMDLINE:
        raise LabError("kernel command line is %d bytes, more than the %d the kernel takes: %s"
                       % (len(cmdline.encode()), MAX_CMDLINE, cmdline))
    return cmdline


def args_group(args):
    """Inventory group of the VMs booted with these per-VM args: each arg with every character
    outside [A-Za-z0-9_] made '_', joined by '_' (lockdown=integrity -> lockdown_integrity;
    module.sig_enforce=1:lockdown=integrity -> module_sig_enforce_1_lockdown_integrity). As an
    arg starts with a letter or '_' (KERNEL_ARG), so does the group: a valid Ansible group name."""
    return "_".join(re.sub(r"[^A-Za-z0-9_]", "_", a) for a in args)


def parse_fleet(value):
    """Parse LAB / --releases: comma-separated entries release[:arg[:arg...]], one VM each.

    Returns [(release, (arg, ...)), ...]; the default fleet (no args) when value has no entry.
    Raises LabError, before anything boots, on an unknown release, an empty or malformed arg
    (see KERNEL_ARG), a parameter given twice in one entry, or two different args lists that
    would share an inventory group (or take a release's or a reserved group's name).
    """
    fleet = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        release, *args = [part.strip() for part in entry.split(":")]
        where = "LAB entry %r" % entry
        if not known(release):
            hint = ""
            if fleet and fleet[-1][1]:  # "bookworm:console=ttyS0,115200" splits at the comma
                hint = ("; if it belongs to the kernel argument before it (%s:%s): a ',' cannot be in a "
                        "per-VM argument, give that one to every VM in LAB_KERNEL_ARGS"
                        % (fleet[-1][0], ":".join(fleet[-1][1])))
            raise LabError("%s: unknown release %r (known: %s; an entry is release[:arg[:arg...]])%s"
                           % (where, release, known_names(), hint))
        params = {}
        for arg in args:
            if not arg:
                raise LabError("%s: empty kernel argument (an entry is release[:arg[:arg...]])" % where)
            if not KERNEL_ARG.fullmatch(arg):
                raise LabError(
                    "%s: kernel argument %r is not allowed per VM: write name or name=value, the name a "
                    "letter or '_' then letters, digits, '_', '.', '-', the value letters, digits, '_', "
                    "'.', '-', '/'. Any other argument (with ',', ':', '=', spaces, quotes ...) can only "
                    "be given to every VM, in LAB_KERNEL_ARGS"
                    % (where, arg))
            param = arg.split("=", 1)[0].replace("-", "_")  # the kernel reads - and _ alike in names
            if param in params:
                raise LabError("%s: kernel parameter %r given twice (%r, %r)" % (where, param, params[param], arg))
            params[param] = arg
        fleet.append((release, tuple(args)))
    groups = {}
    for release, args in fleet:
        if not args:
            continue
        group = args_group(args)
        if group in RESERVED_GROUPS or group in recipe.KERNELS or group.endswith(tuple("_" + a for a in arch.FOREIGN)):
            raise LabError("kernel args %r would make inventory group %r, which is taken"
                           % (":".join(args), group))
        if groups.setdefault(group, args) != args:
            raise LabError("kernel args %r and %r would share inventory group %r: write them alike"
                           % (":".join(groups[group]), ":".join(args), group))
    return fleet or [(r, ()) for r in recipe.DEFAULT_FLEET]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=os.environ.get("LAB_DIR", ".lab"), help="lab state directory")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("image")
    pi.add_argument("releases", nargs="*")
    pu = sub.add_parser("up")
    pu.add_argument("--releases", default=os.environ.get("LAB", ""), metavar="FLEET",
                    help="release[:arg[:arg...]],... one entry per VM (default: $LAB, else %s)"
                    % ",".join(recipe.DEFAULT_FLEET))
    pu.add_argument("--memory", type=int, default=int(os.environ.get("LAB_MEMORY", "2048")))
    pu.add_argument("--smp", type=int, default=int(os.environ["LAB_SMP"]) if os.environ.get("LAB_SMP") else None)
    pu.add_argument("--timeout", type=int, default=int(os.environ.get("LAB_BOOT_TIMEOUT", "600")))
    pu.add_argument("--json", action="store_true", help="print the VMs as JSON on stdout")
    sub.add_parser("down")
    sub.add_parser("status")
    for cmd, what in (("kill", "pull a VM's plug (SIGKILL qemu), keeping its disk"),
                      ("start", "power a killed or shut-down VM on again, with its disk")):
        pk = sub.add_parser(cmd, help=what)
        pk.add_argument("name")
        pk.add_argument("--wait", action="store_true", help="wait for SSH (start)")
        pk.add_argument("--timeout", type=int, default=int(os.environ.get("LAB_BOOT_TIMEOUT", "600")))
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run cleanups on 'kill'
    lab = Lab(args.dir)
    try:
        if args.cmd == "image":
            for r in dict.fromkeys(r for r, _ in parse_fleet(",".join(args.releases))):
                print(build_image(r))
        elif args.cmd == "up":
            t0 = time.time()
            vms = lab.up(parse_fleet(args.releases), args.memory, args.smp, args.timeout)
            if args.json:
                instances = [{"instance": m["name"], "address": "127.0.0.1", "user": "root",
                              "port": m["port"], "identity_file": ssh_key()} for m in vms]
                print(json.dumps({"vms": vms, "instances": instances, "ssh_key": ssh_key(),
                                  "known_hosts": os.path.join(lab.dir, "known_hosts")}))
            else:
                for m in vms:
                    args_shown = " ".join(vm_kernel_args(m))
                    print(("%-12s 127.0.0.1:%-5d %s  %s" % (m["name"], m["port"], m["uname_r"], args_shown)).rstrip())
                print("inventory: %s  (%.0f s)" % (os.path.join(lab.dir, "inventory.yml"), time.time() - t0))
        elif args.cmd == "down":
            lab.down()
        elif args.cmd == "kill":
            lab.kill(args.name)
        elif args.cmd == "start":
            lab.start(args.name)
            lab.write_known_hosts()
            if args.wait:
                errors = {}
                lab._wait(args.name, args.timeout, errors)
                if errors:
                    raise LabError(errors[args.name])
                lab.write_inventory()
        elif args.cmd == "status":
            rows = lab.status()
            if not rows:
                print("no lab VMs in %s" % lab.dir)
            for r in rows:
                state = "up" if r["pid"] and r["ready"] else ("booting" if r["pid"] else "down")
                print(("%-12s %-8s port %-5s pid %-7s %-20s %s" % (r["name"], state, r["port"], r["pid"] or "-",
                                                                   r["kernel"], " ".join(r["kernel_args"]))).rstrip())
    except LabError as e:
        log("ERROR: %s" % e)
        return 1
    except subprocess.CalledProcessError as e:
        log("ERROR: command failed (rc=%d): %s" % (e.returncode, " ".join(map(str, e.cmd))))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
