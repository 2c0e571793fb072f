"""The collection as users install it, and the execution environment AWX runs it in.

ansible-galaxy builds the tarball from a copy of the checkout (with tool leftovers planted where
build_ignore must keep them out), installs it into a temporary collections path, and playbooks run
from that copy with ANSIBLE_COLLECTIONS_PATH pointing there only (not the checkout's
collections/ symlink). ee/create runs 'ansible-builder create' offline on the same tarball.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

from report_fixtures import lab_fleet
from test_report_playbook import SEED
from unreachable import inventory_yaml

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GALAXY = yaml.safe_load(open(os.path.join(REPO, "galaxy.yml")))
TARBALL = "kprobes-fleet-%s.tar.gz" % GALAXY["version"]
# What must never reach users: lab and bench tooling, the dev venv and tool output.
PLANTED = [".venv/bin/python", ".lab/inventory.yml", ".lab-bench-1/x", ".ci/run", ".ansible/x", ".pytest_cache/v",
           "bench/x", "lab/lab.py", "build/x", "collections/x", "tests/output/x.txt", "molecule/x",
           "requirements.txt", "old/kprobes-fleet-0.0.1.tar.gz", "plugins/filter/__pycache__/x.pyc"]


def sh(argv, cwd, env=None, timeout=300):
    res = subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """(tarball, collections path) of the collection as ansible-galaxy builds and installs it."""
    top = tmp_path_factory.mktemp("dist")
    src = top / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if os.path.isfile(os.path.join(REPO, rel)) and not os.path.islink(os.path.join(REPO, rel)):
            dest = src / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(open(os.path.join(REPO, rel), "rb").read())
            os.chmod(str(dest), os.stat(os.path.join(REPO, rel)).st_mode & 0o777)
    for rel in PLANTED:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("planted\n")
    rc, out = sh([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(top), str(src)], top)
    assert rc == 0, out
    cols = top / "collections"
    # Without the checkout's configuration (make exports ANSIBLE_CONFIG): through its collections/
    # symlink, galaxy would find kprobes.fleet "already installed" and install nothing.
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))
    rc, out = sh([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p", str(cols),
                  str(top / TARBALL)], top, env=env)
    assert rc == 0, out
    assert (cols / "ansible_collections" / "kprobes" / "fleet" / "galaxy.yml").exists() or \
        (cols / "ansible_collections" / "kprobes" / "fleet" / "MANIFEST.json").exists(), out
    return top / TARBALL, cols


def installed_env(tmp_path, cols, **extra):
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\nhost_key_checking = True\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(cfg), ANSIBLE_COLLECTIONS_PATH=str(cols), ANSIBLE_NOCOLOR="1",
               ANSIBLE_TIMEOUT="2", HOME=str(tmp_path))
    env.update(extra)
    return env


def test_tarball_holds_the_collection_and_nothing_else(dist):
    tarball, dummy = dist
    with tarfile.open(str(tarball)) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["namespace"] == "kprobes" and manifest["collection_info"]["name"] == "fleet"
    for rel in ("plugins/filter/fleet_report.py", "playbooks/report.yml", "roles/fleet_report/tasks/main.yml",
                "meta/execution-environment.yml", "meta/ee-bindep.txt", "meta/runtime.yml",
                "changelogs/changelog.yaml", "CHANGELOG.rst"):
        assert rel in names, rel
    kept = ("plugins/", "old/", "tests/")  # planted below directories that are shipped
    prefixes = tuple(p.split("/", 1)[0] + "/" for p in PLANTED if "/" in p and not p.startswith(kept))
    leaked = [n for n in names if n.startswith(prefixes + ("tests/output/",)) or n == "requirements.txt"
              or n.endswith((".pyc", ".tar.gz")) or "__pycache__" in n]
    assert leaked == []


def test_installed_copy_is_not_the_checkout(dist):
    dummy, cols = dist
    path = cols / "ansible_collections" / "kprobes" / "fleet"
    assert path.is_dir() and not path.is_symlink()
    assert not os.path.realpath(str(path)).startswith(REPO + os.sep)


@pytest.mark.parametrize("book", ["deploy", "collect", "remove", "report"])
def test_playbooks_resolve_from_the_installed_copy(dist, tmp_path, book):
    dummy, cols = dist
    rc, out = sh([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-vvv", "--syntax-check",
                  "kprobes.fleet.%s" % book], tmp_path, env=installed_env(tmp_path, cols))
    assert rc == 0, out
    assert "playbook: %s/ansible_collections/kprobes/fleet/playbooks/%s.yml" % (cols, book) in out, out
    # nothing of the collection from the checkout (the venv may live in it: CI's clean clone)
    for part in ("collections", "playbooks", "roles", "plugins"):
        assert os.path.join(REPO, part) not in out, out


def test_deploy_from_the_installed_copy_validates_first(dist, tmp_path):
    """The action plugins and their plugin_utils import from the installed copy: a bad variable
    is refused on the controller before any host (these do not exist) is tried."""
    dummy, cols = dist
    inv = tmp_path / "inventory.yml"
    inv.write_text(inventory_yaml(["ghost1"]))
    rc, out = sh([os.path.join(BIN, "ansible-playbook"), "-i", str(inv), "kprobes.fleet.deploy",
                  "-e", "kprobes_fleet_host_dir=/var/lib"], tmp_path, env=installed_env(tmp_path, cols))
    assert rc != 0 and "shared system directory" in out and "UNREACHABLE" not in out, out


def test_report_from_the_installed_copy(dist, tmp_path):
    dummy, cols = dist
    fleet = lab_fleet()
    inv = tmp_path / "inventory.yml"
    inv.write_text(inventory_yaml(sorted(fleet)))
    env = installed_env(tmp_path, cols, ANSIBLE_CACHE_PLUGIN="ansible.builtin.jsonfile",
                        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"))
    (tmp_path / "seed.yml").write_text(SEED)
    (tmp_path / "fleet.json").write_text(json.dumps({"fleet": fleet}))
    rc, out = sh([os.path.join(BIN, "ansible-playbook"), "-i", str(inv), "-e", "@fleet.json", "seed.yml"],
                 tmp_path, env=env)
    assert rc == 0, out
    report = tmp_path / "fleet.html"
    rc, out = sh([os.path.join(BIN, "ansible-playbook"), "-i", str(inv), "-vvv", "kprobes.fleet.report",
                  "-e", "kprobes_fleet_report=%s" % report], tmp_path, env=env)
    assert rc == 0, out
    # the role and the filter came from the installed copy
    assert "%s/ansible_collections/kprobes/fleet/roles/fleet_report/tasks/main.yml" % cols in out, out
    assert 'id="h-trixie-1"' in report.read_text()


def test_ee_build_context_holds_the_collection(tmp_path):
    """ee/create: ansible-galaxy build + 'ansible-builder create', offline, no container."""
    ctx = tmp_path / "context"
    rc, out = sh([os.path.join(REPO, "ee", "create"), str(ctx)], REPO,
                 env=dict(os.environ, KPROBES_FLEET_BIN=BIN))
    assert rc == 0, out
    build = ctx / "_build"
    reqs = yaml.safe_load((build / "requirements.yml").read_text())
    assert reqs["collections"] == [{"name": "collections/kprobes-fleet.tar.gz", "type": "file"}]
    with tarfile.open(str(build / "collections" / "kprobes-fleet.tar.gz")) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
        names = tar.getnames()
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("kprobes", "fleet", GALAXY["version"])
    assert "plugins/filter/fleet_report.py" in names
    assert not any(n.startswith(("lab/", "bench/", ".venv/")) for n in names)
    containerfile = (ctx / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert "ansible-core==2.19.14" in containerfile
    assert "openssh-clients [platform:rpm]" in (build / "bindep.txt").read_text()
    # the pins of the EE are the ones CI tests with
    dev = open(os.path.join(REPO, "requirements.txt")).read()
    assert "ansible-core==2.19.14" in dev


def test_ee_introspection_sees_only_runtime_dependencies(dist):
    """What ansible-builder adds for this collection: an ssh client, none of the dev requirements."""
    dummy, cols = dist
    rc, out = sh([os.path.join(BIN, "ansible-builder"), "introspect", "--sanitize", str(cols)], cols)
    assert rc == 0, out
    deps = yaml.safe_load(out)
    assert deps["python"] == [], out  # not the development requirements.txt (molecule, pytest, ...)
    assert [line.split("#")[0].strip() for line in deps["system"]] == [
        "openssh-clients [platform:rpm]", "openssh-client [platform:dpkg]"], out


def test_changelog_is_generated_from_the_fragments(tmp_path):
    """changelogs/generate (make changelog): lint + release preview; CHANGELOG.rst is its output."""
    env = dict(os.environ, KPROBES_FLEET_BIN=BIN)
    out = tmp_path / "CHANGELOG.rst"
    rc, log = sh([os.path.join(REPO, "changelogs", "generate"), str(out)], REPO, env=env)
    assert rc == 0, log
    text = out.read_text()
    assert "v%s" % GALAXY["version"] in text and "kprobes.fleet.fleet_report" in text
    for name in os.listdir(os.path.join(REPO, "changelogs", "fragments")):
        fragment = yaml.safe_load(open(os.path.join(REPO, "changelogs", "fragments", name)))
        for section, entries in fragment.items():
            for entry in ([entries] if isinstance(entries, str) else entries):
                assert " ".join(entry.split())[:60] in " ".join(text.split()), (name, entry)
    # the committed CHANGELOG.rst is up to date ('make changelog' after adding a fragment)
    assert open(os.path.join(REPO, "CHANGELOG.rst")).read() == text


def test_changelog_generation_fails_on_a_bad_fragment(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for rel in ("galaxy.yml", "changelogs", "plugins", "roles", "meta", "playbooks"):
        src = os.path.join(REPO, rel)
        if os.path.isdir(src):
            shutil.copytree(src, str(copy / rel), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, str(copy / rel))
    (copy / "changelogs" / "fragments" / "bad.yml").write_text("minor_changes: [1, {x: y}]\nnosuchsection:\n  - z\n")
    rc, log = sh([str(copy / "changelogs" / "generate"), str(tmp_path / "out.rst")], copy,
                 env=dict(os.environ, KPROBES_FLEET_BIN=BIN))
    assert rc != 0 and "bad.yml" in log, log
    assert not (tmp_path / "out.rst").exists()
