"""Package names per OS family (roles/kernel_headers/vars/*.yml), rendered by Ansible's templar.

Only Debian is exercised on real kernels in the lab; the EL, SUSE and Ubuntu names are
checked here against the distributions' documented package naming.
"""
import os

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "roles", "kernel_headers")


def trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(v) for v in value]
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    return value


def packages(osfile, release, cc_version_text=""):
    variables = {"ansible_facts": {"kernel": release,
                                   "kprobes_fleet_kernel": {"cc_version_text": cc_version_text}},
                 "kprobes_fleet_headers_release": ""}
    loader = DataLoader()
    for name in ("defaults/main.yml", "vars/main.yml", "vars/%s.yml" % osfile):
        with open(os.path.join(ROLE, name)) as f:
            variables.update(trusted(yaml.safe_load(f) or {}))  # role files are trusted templates in a play
    templar = Templar(loader=loader, variables=variables)
    return templar.template(variables["__kprobes_fleet_headers_packages"])


def test_debian_exact_release():
    assert packages("Debian", "6.1.0-50-amd64") == ["linux-headers-6.1.0-50-amd64", "make"]


def test_ubuntu_adds_the_kernels_gcc():
    cc = "x86_64-linux-gnu-gcc-12 (Ubuntu 12.3.0-1ubuntu1~22.04) 12.3.0"
    assert packages("Ubuntu", "6.5.0-35-generic", cc) == ["linux-headers-6.5.0-35-generic", "make", "gcc-12"]


def test_ubuntu_without_compiler_info_falls_back_to_gcc():
    assert packages("Ubuntu", "5.15.0-91-generic")[-1] == "gcc"


def test_el_kernel_devel_not_kernel_headers():
    pk = packages("RedHat", "5.14.0-427.13.1.el9_4.x86_64")
    assert pk[0] == "kernel-devel-5.14.0-427.13.1.el9_4.x86_64"
    assert "kernel-headers" not in " ".join(pk)
    assert "elfutils-libelf-devel" in pk and "gcc" in pk


def test_every_os_file_defines_the_package_list():
    for name in os.listdir(os.path.join(ROLE, "vars")):
        with open(os.path.join(ROLE, "vars", name)) as f:
            data = yaml.safe_load(f)
        if name != "main.yml":
            assert "__kprobes_fleet_headers_packages" in data, name


def include_vars_task():
    with open(os.path.join(ROLE, "tasks", "main.yml")) as f:
        tasks = yaml.safe_load(f)
    for i, task in enumerate(tasks):
        if "ansible.builtin.include_vars" in task:
            return i, task, tasks
    raise AssertionError("no include_vars task in tasks/main.yml")


def os_vars_file(distribution, os_family):
    """The file first_found picks in vars/ for these facts (the role's candidates, in order)."""
    dummy, task, dummy2 = include_vars_task()
    candidates = task["vars"]["__kprobes_fleet_headers_candidates"]["files"]
    templar = Templar(loader=DataLoader(), variables={
        "ansible_facts": {"distribution": distribution, "os_family": os_family}})
    for name in candidates:
        name = templar.template(trusted(name))
        if os.path.isfile(os.path.join(ROLE, "vars", name)):
            return name
    return None  # first_found would raise: no sentence, a lookup error


def stops_before_installing(osfile):
    """Whether the task right after include_vars fails the host, with these OS vars loaded."""
    i, dummy, tasks = include_vars_task()
    stop = tasks[i + 1]
    assert "ansible.builtin.fail" in stop, stop.get("name")
    variables = {"ansible_facts": {"kernel": "6.6.32-1-lts"}, "kprobes_fleet_headers_release": ""}
    for name in ("defaults/main.yml", "vars/main.yml", "vars/%s" % osfile):
        with open(os.path.join(ROLE, name)) as f:
            variables.update(trusted(yaml.safe_load(f) or {}))
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.evaluate_conditional(trusted(stop["when"]))


@pytest.mark.parametrize("distribution,os_family", [
    ("Archlinux", "Archlinux"), ("Alpine", "Alpine"), ("Gentoo", "Gentoo"),
    # SUSE's package manager module is community.general.zypper, which is not a dependency
    ("SLES", "Suse"), ("openSUSE Leap", "Suse"),
])
def test_unknown_os_falls_back_to_default_and_stops(distribution, os_family):
    assert os_vars_file(distribution, os_family) == "default.yml"
    assert stops_before_installing("default.yml")


@pytest.mark.parametrize("distribution,os_family,osfile", [
    ("Debian", "Debian", "Debian.yml"), ("Ubuntu", "Debian", "Ubuntu.yml"),
    ("Linuxmint", "Debian", "Debian.yml"), ("Rocky", "RedHat", "RedHat.yml"),
])
def test_known_os_gets_its_file_and_goes_on(distribution, os_family, osfile):
    assert os_vars_file(distribution, os_family) == osfile
    assert not stops_before_installing(osfile)


def test_default_is_the_last_candidate():
    dummy, task, dummy2 = include_vars_task()
    assert task["vars"]["__kprobes_fleet_headers_candidates"]["files"][-1] == "default.yml"


def test_tasks_use_no_undeclared_collection():
    """galaxy.yml declares no dependencies: every task module is ansible.builtin or this collection's own
    (ansible.builtin.package on an OS whose package manager module lives elsewhere stops first, above)."""
    repo = os.path.dirname(os.path.dirname(ROLE))
    with open(os.path.join(repo, "galaxy.yml")) as f:
        assert not yaml.safe_load(f)["dependencies"]
    keywords = {"name", "when", "vars", "block", "rescue", "always", "loop", "loop_control", "register",
                "notify", "listen", "tags", "become", "become_user", "changed_when", "failed_when",
                "check_mode", "delegate_to", "delegate_facts", "run_once", "no_log", "ignore_errors",
                "ignore_unreachable", "environment", "args", "until", "retries", "delay", "throttle",
                "any_errors_fatal", "diff", "timeout", "module_defaults", "debugger", "connection"}
    used = set()

    def walk(tasks):
        for task in tasks or []:
            if not isinstance(task, dict):
                continue
            for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
                walk(task.get(key))
            used.update(k for k in task if "." in k and k not in keywords)

    files = []
    for top in ("roles", "playbooks"):
        for root, dummy, names in os.walk(os.path.join(repo, top)):
            if os.sep + "tasks" in root or os.sep + "handlers" in root or top == "playbooks":
                files += [os.path.join(root, n) for n in names if n.endswith(".yml")]
    for path in files:
        with open(path) as f:
            data = yaml.safe_load(f)
        if isinstance(data, list):
            walk(data)
    assert used and "ansible.builtin.package" in used
    assert sorted(m for m in used if not m.startswith(("ansible.builtin.", "kprobes.fleet."))) == []
