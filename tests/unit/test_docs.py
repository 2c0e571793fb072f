"""ansible-doc renders every module and every role's argument spec."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules")) if f.endswith(".py"))
ROLES = sorted(os.listdir(os.path.join(REPO, "roles")))


def ansible_doc(*args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "collections"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc")] + list(args),
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize("module", MODULES)
def test_module_doc_renders(module):
    res = ansible_doc("kprobes.fleet." + module)
    assert res.returncode == 0, res.stderr
    assert "kprobes.fleet.%s" % module in res.stdout
    assert "[WARNING]" not in res.stderr, res.stderr


def test_the_old_module_name_redirects_with_a_deprecation():
    res = ansible_doc("kprobes.fleet.probe_events")
    assert res.returncode == 0, res.stderr
    assert "MODULE kprobes.fleet.tracefs_probes" in res.stdout
    assert "kprobes.fleet.probe_events has been deprecated" in res.stderr and "1.0.0" in res.stderr


@pytest.mark.parametrize("role", ROLES)
def test_role_argument_spec_renders(role):
    res = ansible_doc("-t", "role", "kprobes.fleet." + role)
    assert res.returncode == 0, res.stderr
    assert "OPTIONS" in res.stdout or "Options" in res.stdout, res.stdout


FILTERS = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "filter")) if f.endswith(".py"))


@pytest.mark.parametrize("name", FILTERS)
def test_filter_doc_renders(name):
    res = ansible_doc("-t", "filter", "kprobes.fleet." + name)
    assert res.returncode == 0, res.stderr
    assert "kprobes.fleet.%s" % name in res.stdout and "EXAMPLES" in res.stdout
    assert "[WARNING]" not in res.stderr, res.stderr
