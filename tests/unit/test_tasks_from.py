"""Every task file of every role, imported alone (tasks_from) without a check first, stops with a
sentence before any host is touched: never Ansible's undefined-variable error, never a host task.

The hosts are 127.0.0.1 on a closed port (tests/unit/unreachable.py): a task that reached one
would say UNREACHABLE.
"""
import glob
import re
import os
import subprocess
import sys

import pytest

from unreachable import inventory_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
TASK_FILES = sorted(
    (path.split(os.sep)[-3], os.path.basename(path)[:-4])
    for path in glob.glob(os.path.join(REPO, "roles", "*", "tasks", "*.yml"))
    if not path.endswith(os.sep + "main.yml") and os.sep + "validate" + os.sep not in path)


def run(tmp_path, book, *extra):
    (tmp_path / "inventory.yml").write_text(inventory_yaml(["ghost1", "ghost2"]))
    (tmp_path / "play.yml").write_text(book)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_TIMEOUT="2", HOME=str(tmp_path), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    res = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                          str(tmp_path / "play.yml")] + list(extra), cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    return res.returncode, res.stdout + res.stderr


def test_every_task_file_is_covered():
    assert ("probe_deploy", "run") in TASK_FILES and ("probe_load", "present") in TASK_FILES
    assert ("probe_deploy", "remove") in TASK_FILES and ("fleet_report", "write") in TASK_FILES


@pytest.mark.parametrize("role,tasks", TASK_FILES)
def test_a_task_file_alone_stops_with_a_sentence(tmp_path, role, tasks):
    book = ("- hosts: all\n  gather_facts: false\n  tasks:\n    - name: Import alone\n"
            "      ansible.builtin.import_role:\n        name: kprobes.fleet.%s\n        tasks_from: %s\n"
            % (role, tasks))
    rc, out = run(tmp_path, book, "-e", "kprobes_fleet_host_dir=/", "-e", "kprobes_fleet_report=/etc/passwd")
    if tasks in ("remove",):  # a public entry that checks first: the bad host dir is refused
        assert rc != 0 and "shared system directory" in out, out
    else:
        assert rc != 0, out
        assert "nothing was changed" in out, out
    assert "UNREACHABLE" not in out, out
    assert "is undefined" not in out, out


def test_probe_load_alone_unloads_and_refuses_a_load_without_a_plan(tmp_path):
    """The role used alone: absent is a valid input and reaches the hosts; present needs the plan."""
    book = "- hosts: all\n  gather_facts: false\n  roles:\n    - role: kprobes.fleet.probe_load\n"
    rc, out = run(tmp_path, book, "-e", "kprobes_fleet_load_state=absent")
    assert rc != 0 and "UNREACHABLE" in out and "is undefined" not in out, out
    rc, out = run(tmp_path, book)
    assert rc != 0 and "needs __kprobes_fleet_load_plan" in out and "UNREACHABLE" not in out, out


@pytest.mark.parametrize("role,value", [
    ("probe_load", '{"kprobes_fleet_load_purge": [1, 2]}'),
    ("probe_build", '{"kprobes_fleet_build_keep_dir": {"a": 1}}'),
    ("kernel_headers", '{"kprobes_fleet_headers_update_cache": "perhaps"}'),
    ("probe_deploy", '{"kprobes_fleet_build_timeout": [60]}'),
])
def test_a_role_alone_answers_a_type_error_with_one_sentence(tmp_path, role, value):
    """Not Ansible's argument-spec dump (argument_spec_data, _AnsibleTaggedDict): the validator's line."""
    book = "- hosts: all\n  gather_facts: false\n  roles:\n    - role: kprobes.fleet.%s\n" % role
    rc, out = run(tmp_path, book, "-e", value)
    assert rc != 0 and "invalid variables, nothing was changed on any host" in out, out
    for noise in ("argument_spec_data", "_AnsibleTagged", "validate_args_context", "UNREACHABLE"):
        assert noise not in out, out


def test_remove_never_deploys_whatever_kprobes_fleet_state_says(tmp_path):
    """kprobes.fleet.remove with -e kprobes_fleet_state=present (an AWX survey, a shared vars file)
    removes. Run in check mode on this machine (local connection, read-only): the deploy tasks are
    skipped, the removal's run, and nothing of ours appears on this machine."""
    host_dir = "/var/lib/kprobes-fleet-unit-%s" % os.urandom(4).hex()  # /tmp is refused
    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n    localhost: {ansible_connection: local, ansible_python_interpreter: %s}\n"
        % sys.executable)
    run_dir_before = os.path.exists("/run/kprobes-fleet")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               HOME=str(tmp_path))
    res = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), "--check",
                          "-e", "kprobes_fleet_state=present", "-e", "kprobes_fleet_host_dir=%s" % host_dir,
                          os.path.join(REPO, "playbooks", "remove.yml")],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert "TASK [kprobes.fleet.probe_deploy : Deploy] ***" in out, out
    deploy = out.split("TASK [kprobes.fleet.probe_deploy : Deploy] ***", 1)[1].split("TASK [", 1)[0]
    assert "skipping: [localhost]" in deploy and "included" not in deploy, out
    assert "TASK [kprobes.fleet.probe_load : Unload the module (only if it carries our marker)]" in out, out
    assert "present.yml" not in out and "Plan the build" not in out, out
    assert not os.path.exists(host_dir), out
    assert os.path.exists("/run/kprobes-fleet") == run_dir_before, out  # a check run writes nothing


def test_tasks_read_only_the_checked_values():
    """After the check, tasks never read a public variable again: a template would render anew
    ("{{ '/etc' if __kprobes_fleet_valid is defined else ... }}" passes as one path, is used as
    another). Only the validate role reads them, to check them."""
    sys.path.insert(0, REPO)
    from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings
    public = "|".join(sorted(settings.PUBLIC, key=len, reverse=True))
    templates = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
    conditions = re.compile(r"^\s*-?\s*(?:when|that|changed_when|failed_when|until):.*$"
                            r"|^\s+- (?!name:).*$", re.M)  # bare expressions, and items of their lists
    raw = re.compile(r"(?<![\w'\"\[])(%s)\b" % public)
    files = [p for p in glob.glob(os.path.join(REPO, "roles", "*", "*", "*.yml"))
             if os.sep + "validate" + os.sep not in p and os.sep + "meta" + os.sep not in p
             and os.sep + "defaults" + os.sep not in p]
    files += glob.glob(os.path.join(REPO, "playbooks", "*.yml"))
    bad = []
    for path in files:
        with open(path) as handle:
            text = handle.read()
        text = re.sub(r"(?m)^\s*#.*$", "", text)
        for match in list(templates.finditer(text)) + list(conditions.finditer(text)):
            chunk = re.sub(r"'[^']*'|\"[^\"]*\"", "''", match.group(0))  # text inside quotes is prose
            for name in raw.findall(chunk):
                bad.append("%s: %s" % (os.path.relpath(path, REPO), name))
    assert bad == [], "\n".join(bad)


def test_a_template_is_used_as_the_value_it_was_checked_as(tmp_path):
    """A templated host dir that renders differently once the check has run ("/etc" afterwards) is
    used as the value checked: the purge's ownership check runs on the checked path, never on /etc.
    kprobes.fleet.remove in check mode on this machine (local connection, read-only)."""
    checked = "/var/lib/kprobes-fleet-unit-%s" % os.urandom(4).hex()
    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n    localhost: {ansible_connection: local, ansible_python_interpreter: %s}\n"
        % sys.executable)
    (tmp_path / "vars.yml").write_text(
        "kprobes_fleet_load_purge: true\n"
        "kprobes_fleet_host_dir: \"{{ '/etc' if __kprobes_fleet_valid is defined else '%s' }}\"\n" % checked)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               HOME=str(tmp_path))
    res = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), "--check",
                          "-e", "@%s" % (tmp_path / "vars.yml"), os.path.join(REPO, "playbooks", "remove.yml")],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "/etc" not in out.replace("/etc/systemd", ""), out
    assert not os.path.exists(checked), out
