"""kprobes.fleet.report and collect's kprobes_fleet_report through ansible-playbook.

The facts come from a jsonfile fact cache, as AWX keeps them ('Enable Fact Storage'); the hosts
are TEST-NET addresses that do not exist, so a task that reached one would be UNREACHABLE.
"""
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings
from ansible_collections.kprobes.fleet.plugins.module_utils import names

from report_fixtures import lab_fleet
from unreachable import inventory_yaml

BIN = os.path.dirname(sys.executable)


def inventory(tmp_path, hosts):
    inv = tmp_path / "inventory.yml"
    inv.write_text(inventory_yaml(hosts))
    return inv


SEED = """\
- name: Store each host's kprobes_fleet facts in the fact cache, as a collect job would
  hosts: all
  gather_facts: false
  tasks:
    - name: Cache the facts
      ansible.builtin.set_fact:
        kprobes_fleet: "{{ fleet[inventory_hostname] }}"
        cacheable: true
      when: fleet[inventory_hostname] is not none
"""


def fact_cache(repo, tmp_path, fleet):
    """A jsonfile fact cache written by Ansible itself (the format is Ansible's, not ours)."""
    cache = tmp_path / "facts"
    book = tmp_path / "seed.yml"
    book.write_text(SEED)
    rc, out = run(repo, tmp_path, str(book), sorted(fleet), {"fleet": fleet}, cache=cache)
    assert rc == 0, out
    return cache


def run(repo, tmp_path, book, hosts, extra, cache=None, check=False):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_TIMEOUT="2", HOME=str(tmp_path), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    if cache:
        env.update(ANSIBLE_CACHE_PLUGIN="ansible.builtin.jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(cache))
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory(tmp_path, hosts)),
            "-e", "@%s" % (tmp_path / "vars.json"), book] + (["--check"] if check else [])
    res = subprocess.run(argv, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    return res.returncode, res.stdout + res.stderr


def write_report(repo, tmp_path, fleet=None, path=None):
    """report.yml over the fact cache of ``fleet``; returns (rc, output, report path)."""
    fleet = lab_fleet() if fleet is None else fleet
    path = path or str(tmp_path / "fleet.html")
    rc, out = run(repo, tmp_path, os.path.join(repo, "playbooks", "report.yml"), sorted(fleet),
                  {"kprobes_fleet_report": path}, cache=fact_cache(repo, tmp_path, fleet))
    return rc, out, path


def test_report_from_the_fact_cache(repo, tmp_path):
    rc, out, path = write_report(repo, tmp_path)
    assert rc == 0, out
    assert "UNREACHABLE" not in out, out
    assert "kprobes.fleet report: %s" % path in out, out
    doc = open(path).read()
    assert settings.REPORT_MARK in doc
    fleet = lab_fleet()
    for host in fleet:
        assert 'id="h-%s"' % host in doc
    live = [f for f in fleet.values() if f]
    assert 'data-card="with facts"><b>%d<' % len(live) in doc
    assert 'data-card="matches"><b>%d<' % sum(p["matches"] for f in live for p in f["probes"].values()) in doc
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    # a second run replaces the report it wrote (and only that)
    os.utime(path, (0, 0))
    rc, out = run(repo, tmp_path, os.path.join(repo, "playbooks", "report.yml"), sorted(lab_fleet()),
                  {"kprobes_fleet_report": path}, cache=tmp_path / "facts")
    assert rc == 0 and os.stat(path).st_mtime > 0, out


def test_write_alone_does_not_skip_the_validation(repo, tmp_path):
    """tasks_from: write (what collect includes after its own validation) refuses to run unvalidated."""
    book = tmp_path / "write.yml"
    book.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.include_role:\n"
                    "        name: kprobes.fleet.fleet_report\n        tasks_from: write\n")
    path = tmp_path / "foreign.html"
    path.write_text("somebody's page")  # the validation would refuse it
    rc, out = run(repo, tmp_path, str(book), ["ghost1"], {"kprobes_fleet_report": str(path)})
    assert rc != 0 and "none were checked for this host" in out and "UNREACHABLE" not in out, out
    assert path.read_text() == "somebody's page" and "kprobes.fleet report:" not in out


def test_report_path_is_required(repo, tmp_path):
    rc, out = run(repo, tmp_path, os.path.join(repo, "playbooks", "report.yml"), ["ghost1"], {})
    assert rc != 0 and "kprobes_fleet_report" in out and "UNREACHABLE" not in out, out


def test_collect_refuses_an_unsafe_report_path_before_any_host_task(repo, tmp_path):
    rc, out = run(repo, tmp_path, os.path.join(repo, "playbooks", "collect.yml"), ["ghost1", "ghost2"],
                  {"kprobes_fleet_report": "/etc/passwd"})
    assert rc != 0 and "must be the path of an .html file" in out and "[ghost1, ghost2]" in out, out
    assert "UNREACHABLE" not in out, out


def test_collect_writes_the_report_with_the_hosts_that_failed(repo, tmp_path):
    """collect in check mode on this machine (read-only there) and on a host that does not exist."""
    path = str(tmp_path / "collect.html")
    inv = tmp_path / "inventory.yml"
    inv.write_text(inventory_yaml(["ghost1"], "    localhost:\n      ansible_connection: local\n"
                                  "      ansible_python_interpreter: %s\n" % sys.executable))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_TIMEOUT="2", HOME=str(tmp_path))
    res = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(inv), "--check", "-e",
                          "kprobes_fleet_report=%s" % path, os.path.join(repo, "playbooks", "collect.yml")],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "UNREACHABLE" in out, out   # ghost1
    assert "kprobes.fleet report: %s" % path in out, out
    doc = open(path).read()
    assert 'id="h-localhost"' in doc and 'id="h-ghost1"' in doc
    ghost = doc.split('id="h-ghost1"')[1].split("</details>")[0]
    assert "no facts" in ghost
    local = doc.split('id="h-localhost"')[1].split("</details>")[0]
    assert os.uname().release in local


def _fifo(tmp_path):
    path = tmp_path / "fifo.html"
    os.mkfifo(str(path))
    return str(path)


def _symlink(tmp_path):
    target = tmp_path / "elsewhere.html"
    target.write_text(settings.REPORT_MARK)
    link = tmp_path / "link.html"
    link.symlink_to(target)
    return str(link)


def _foreign(tmp_path):
    path = tmp_path / "index.html"
    path.write_text("<html>somebody's page</html>")
    return str(path)


@pytest.mark.parametrize("make,words", [
    (lambda t: "report.html", "must be an absolute path"),
    (lambda t: "/etc/passwd", "must be the path of an .html file"),
    (lambda t: str(t) + "/", "must be the path of an .html file"),
    (lambda t: str(t / "nodir" / "r.html"), "does not exist on the controller"),
    (lambda t: str(t / "dir.html") if not os.mkdir(str(t / "dir.html")) else "", "is not a regular file"),
    (_fifo, "is not a regular file"),
    (_symlink, "is a symbolic link"),
    (_foreign, "is not a kprobes.fleet report"),
    (lambda t: ["a.html"], "got list"),
    (lambda t: "/x.html\n", "must be an absolute path"),
])
def test_unsafe_report_paths_are_refused(tmp_path, make, words):
    value = make(tmp_path)
    with pytest.raises(names.InvalidValue) as exc:
        settings._report("kprobes_fleet_report", value)
    assert words in str(exc.value) and str(exc.value).startswith("kprobes_fleet_report: ")


def test_safe_report_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings._report("kprobes_fleet_report", "") == ""
    assert settings._report("kprobes_fleet_report", None) == ""
    assert settings._report("kprobes_fleet_report", "~/r.HTML") == str(tmp_path / "r.HTML")
    assert settings._report("kprobes_fleet_report", str(tmp_path) + "/./x/../r.html") == str(tmp_path / "r.html")
    ours = tmp_path / "ours.html"
    ours.write_text("<!DOCTYPE html>\n" + settings.REPORT_MARK)
    assert settings._report("kprobes_fleet_report", str(ours)) == str(ours)
    empty = tmp_path / "empty.html"
    empty.write_text("")
    assert settings._report("kprobes_fleet_report", str(empty)) == str(empty)


# -- another user's file is never replaced, even one that carries our mark (#20 item 8) --------

def _theirs(tmp_path, uid):
    path = tmp_path / "theirs.html"
    path.write_text("<!DOCTYPE html>\n" + settings.REPORT_MARK + "\nsomebody else's report")
    os.chown(str(path), uid, -1)
    return path


def test_another_users_report_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "r.html"
    path.write_text("<!DOCTYPE html>\n" + settings.REPORT_MARK)
    me = os.geteuid()
    assert settings._report("kprobes_fleet_report", str(path)) == str(path)
    monkeypatch.setattr(settings.os, "geteuid", lambda: me + 1)  # the same file, seen by another user
    with pytest.raises(names.InvalidValue) as exc:
        settings._report("kprobes_fleet_report", str(path))
    assert str(exc.value) == (
        "kprobes_fleet_report: %s exists and belongs to uid %d, not to the user running Ansible (uid %d); another "
        "user's file is never replaced, even a kprobes.fleet report: choose another path" % (path, me, me + 1))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any directory")
def test_a_directory_we_cannot_write_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(names.InvalidValue, match="is not writable by the user running Ansible"):
        settings._report("kprobes_fleet_report", str(ro / "r.html"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_report_playbook_refuses_another_users_report(repo, tmp_path):
    theirs = _theirs(tmp_path, 65534)
    before = theirs.read_text()
    rc, out, dummy = write_report(repo, tmp_path, path=str(theirs))
    assert rc != 0 and "exists and belongs to uid 65534" in out and "UNREACHABLE" not in out, out
    assert theirs.read_text() == before and os.stat(str(theirs)).st_uid == 65534


RACE = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: kprobes.fleet.validate
      vars:
        __kprobes_fleet_validate_probes: false
    - name: After the check, another user's report appears at the path
      ansible.builtin.copy:
        content: "<!DOCTYPE html>\\n{{ mark }}\\nsomebody else's report"
        dest: "{{ kprobes_fleet_report }}"
        owner: "65534"
        mode: "0644"
      delegate_to: localhost
      run_once: true
    - ansible.builtin.include_role:
        name: kprobes.fleet.fleet_report
        tasks_from: write
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_write_checks_the_owner_again_right_before_writing(repo, tmp_path):
    book = tmp_path / "race.yml"
    book.write_text(RACE)
    path = tmp_path / "late.html"
    rc, out = run(repo, tmp_path, str(book), ["ghost1"], {"kprobes_fleet_report": str(path),
                                                          "mark": settings.REPORT_MARK})
    assert rc != 0 and "nothing was written: kprobes_fleet_report: %s exists and belongs to uid 65534" % path in out, out
    assert "somebody else's report" in path.read_text() and os.stat(str(path)).st_uid == 65534
    assert "Write the fleet report" not in out and "UNREACHABLE" not in out, out
