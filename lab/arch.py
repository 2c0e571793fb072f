"""Lab VMs of another architecture than the host's x86-64: ``<release>-arm64``.

What differs per architecture lives here, so ``recipe.py`` (whose hash keys every image)
stays the same for the x86-64 images: an arm64 image's key also covers this file. Standard
library only.
"""

# Suffix of a lab release name -> how to build and boot it. "amd64" is the plain release name.
ARCHES = {
    "amd64": {
        "kernel_package": "linux-image-amd64",
        "qemu": "qemu-system-x86_64",
        "machine": [],
        "console": "ttyS0",
        "binfmt": None,
    },
    "arm64": {
        "kernel_package": "linux-image-arm64",
        "qemu": "qemu-system-aarch64",
        # -cpu max boots Debian's arm64 kernels under TCG; pauth-impdef makes its pointer
        # authentication cheap to emulate (the architected algorithm is slow in TCG).
        "machine": ["-M", "virt", "-cpu", "max,pauth-impdef=on"],
        "console": "ttyAMA0",
        # debootstrap runs the guest's arm64 programs through qemu-user-static (binfmt_misc).
        "binfmt": "qemu-aarch64",
    },
}
DEFAULT_ARCH = "amd64"
FOREIGN = [a for a in ARCHES if a != DEFAULT_ARCH]


def split(name):
    """'bookworm-arm64' -> ('bookworm', 'arm64'); 'bookworm' -> ('bookworm', 'amd64')."""
    for arch in FOREIGN:
        if name.endswith("-" + arch):
            return name[:-len(arch) - 1], arch
    return name, DEFAULT_ARCH


def packages(base_packages, arch):
    """The recipe's package list with the kernel of ``arch``."""
    ours = ARCHES[arch]["kernel_package"]
    return [ours if p == ARCHES[DEFAULT_ARCH]["kernel_package"] else p for p in base_packages]


def cmdline(base, arch):
    """The recipe's kernel command line with the console of ``arch``."""
    return base.replace("console=" + ARCHES[DEFAULT_ARCH]["console"], "console=" + ARCHES[arch]["console"])


def image_name(name):
    """The image cache's name of a lab release: 'bookworm-arm64' -> 'arm64-bookworm'.

    The architecture comes first so that no image of another architecture starts with
    '<release>-': lab.py before arm64 deleted every '<release>-*' entry but the new one when it
    built a release's image, and the cache is shared by every checkout on the machine."""
    base, arch = split(name)
    return base if arch == DEFAULT_ARCH else "%s-%s" % (arch, base)


def group(name):
    """Inventory group of a lab release: 'bookworm-arm64' -> 'bookworm_arm64' (no '-' in groups)."""
    return name.replace("-", "_")
