"""What goes into a lab image, per Debian release.

Everything that decides the content of an image lives in this file: the image
cache key is the sha256 of this file (plus the release and the lab SSH key),
so editing the recipe rebuilds the images on the next ``make lab``.

No kernel headers and no compiler here: installing those is the collection's job.
"""

# Releases the lab knows; the default fleet is the first three.
KERNELS = {
    "bullseye": "5.10",
    "bookworm": "6.1",
    "trixie": "6.12",
    "sid": "newest",
}
DEFAULT_FLEET = ["bullseye", "bookworm", "trixie"]

BASE_PACKAGES = [
    "linux-image-amd64",
    "openssh-server",
    "systemd-sysv",
    "python3",
    "iproute2",
    "ifupdown",
    "kmod",
    "udev",
    # As on a real server: logind needs it, and shutdown/reboot (Ansible's reboot module) need logind.
    "dbus",
    # The lab's boot loader (see BOOT_DEFAULT_KERNEL): QEMU always starts the image's kernel.
    "kexec-tools",
]
# DHCP client for ifupdown's "dhcp" method: isc-dhcp-client is gone from sid.
DHCP_CLIENT = {"sid": "dhcpcd-base"}
DEFAULT_DHCP_CLIENT = "isc-dhcp-client"

IMAGE_SIZE = "4G"

# Files written into the root file system (path relative to the root -> content).
GUEST_FILES = {
    "etc/network/interfaces": (
        "auto lo\niface lo inet loopback\n\n"
        "auto eth0\niface eth0 inet dhcp\n"
    ),
    "etc/fstab": "/dev/vda / ext4 defaults 0 1\n",
    # Empty: systemd makes a fresh machine id on each VM's first boot (no clones).
    "etc/machine-id": "",
    # Guests are throw-away: no periodic apt jobs competing for the emulated CPU.
    "etc/apt/apt.conf.d/90kprobes-fleet-lab": (
        'APT::Periodic::Enable "0";\n'
        'Acquire::Languages "none";\n'
    ),
    "etc/ssh/sshd_config.d/kprobes-fleet-lab.conf": (
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
    ),
}
# Real machines boot the kernel their boot loader defaults to; Debian points /vmlinuz and
# /initrd.img at it. QEMU starts every lab VM (and restarts it on a guest reboot) with the image's
# kernel (-kernel), so a kernel upgraded inside a guest would never run. This unit closes the gap
# early in boot: when /vmlinuz is not the running kernel, it kexecs into it (one extra, short boot).
BOOT_DEFAULT_KERNEL = (
    "#!/bin/sh\n"
    "# Lab only (kprobes.fleet lab/recipe.py): boot the kernel /vmlinuz points to, as a boot loader would.\n"
    "set -eu\n"
    "want=$(readlink -f /vmlinuz) || exit 0\n"
    "[ -f \"$want\" ] || exit 0\n"
    "[ \"$want\" = \"$(readlink -f /boot/vmlinuz-$(uname -r))\" ] && exit 0\n"
    "echo \"lab: running $(uname -r), the default kernel is $want: kexec into it\"\n"
    "kexec -l \"$want\" --initrd=\"$(readlink -f /initrd.img)\" --reuse-cmdline\n"
    "systemctl --no-block kexec\n"
)
GUEST_FILES.update({
    "usr/local/sbin/lab-boot-default-kernel": BOOT_DEFAULT_KERNEL,
    "etc/systemd/system/lab-boot-default-kernel.service": (
        "[Unit]\n"
        "Description=Lab: boot the kernel /vmlinuz points to (a boot loader's job)\n"
        "DefaultDependencies=no\n"
        "After=local-fs.target\n"
        "Before=sysinit.target ssh.service\n"
        "ConditionPathExists=/vmlinuz\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        "ExecStart=/bin/sh /usr/local/sbin/lab-boot-default-kernel\n\n"
        "[Install]\n"
        "WantedBy=sysinit.target\n"
    ),
    # kexec-tools must not turn reboots into kexecs: a guest reboot is a real (emulated) reset.
    "etc/default/kexec": "LOAD_KEXEC=false\n",
    # A kernel installed inside a guest gets an initramfs of the modules this VM needs: under TCG,
    # "most" takes 15+ minutes to build, "dep" 4 (the image's own initramfs is built at debootstrap
    # time, with "most", before this file is written).
    "etc/initramfs-tools/conf.d/kprobes-fleet-lab.conf": "MODULES=dep\n",
})
# sid's InRelease can be past its Valid-Until date on the mirror.
EXTRA_GUEST_FILES = {
    "sid": {
        "etc/apt/apt.conf.d/91kprobes-fleet-valid-until": 'Acquire::Check-Valid-Until "false";\n',
    },
}
# Commands run in a chroot of the new root file system.
CHROOT_COMMANDS = [
    ["systemctl", "enable", "ssh"],
    ["systemctl", "enable", "lab-boot-default-kernel.service"],
    ["systemctl", "mask", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer"],
]

KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 loglevel=5"


def packages(release):
    return BASE_PACKAGES + [DHCP_CLIENT.get(release, DEFAULT_DHCP_CLIENT)]


def guest_files(release):
    files = dict(GUEST_FILES)
    files["etc/hostname"] = "lab-%s\n" % release
    files.update(EXTRA_GUEST_FILES.get(release, {}))
    return files
