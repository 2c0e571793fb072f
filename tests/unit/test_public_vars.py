"""Every public variable (settings.PUBLIC) is handed to the validator, has a default and an
argument spec: a variable the validate role does not pass is silently replaced by its default."""
import os
import re

import pytest
import yaml

from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(*rel):
    with open(os.path.join(REPO, *rel)) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("name", sorted(settings.PUBLIC))
def test_the_validate_role_passes_it_as_given(name):
    task = load("roles", "validate", "tasks", "main.yml")[0]
    args = task["kprobes.fleet.validate"]
    assert name in args, "roles/validate/tasks/main.yml does not pass %s: its value would be ignored" % name
    assert re.fullmatch(r"\{\{ %s \| default\(omit\) \}\}" % name, args[name]), args[name]


@pytest.mark.parametrize("name", sorted(settings.PUBLIC))
def test_the_validate_role_documents_it(name):
    options = load("roles", "validate", "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert name in options


def test_nothing_passed_that_is_not_public():
    args = load("roles", "validate", "tasks", "main.yml")[0]["kprobes.fleet.validate"]
    assert set(a for a in args if a.startswith("kprobes_fleet_")) == set(settings.PUBLIC)


def role_defaults():
    for role in sorted(os.listdir(os.path.join(REPO, "roles"))):
        path = os.path.join(REPO, "roles", role, "defaults", "main.yml")
        if os.path.exists(path):
            for name, value in (load(path) or {}).items():
                yield role, name, value


@pytest.mark.parametrize("role,name,value", list(role_defaults()))
def test_a_role_default_is_the_validator_default(role, name, value):
    # kprobes.fleet.deploy validates in its first play (validate role: no defaults, the validator's)
    # and deploys in its second with probe_deploy's defaults, without validating again.
    assert name in settings.PUBLIC, "roles/%s/defaults: %s is not a public variable" % (role, name)
    assert value == settings.PUBLIC[name][0], "roles/%s/defaults: %s" % (role, name)


def test_deploy_validates_in_its_first_play_and_deploys_with_those_values():
    first, second = load("playbooks", "deploy.yml")
    assert [r["role"] for r in first["roles"]] == ["kprobes.fleet.validate"] and first["any_errors_fatal"] is True
    assert first["hosts"] == second["hosts"] and "vars" not in second and "roles" not in second
    task, = second["tasks"]
    assert task["ansible.builtin.import_role"] == {"name": "kprobes.fleet.probe_deploy", "tasks_from": "run"}
    main = load("roles", "probe_deploy", "tasks", "main.yml")
    assert main[0]["ansible.builtin.import_role"] == {"name": "kprobes.fleet.validate"}
    assert main[1]["ansible.builtin.import_tasks"] == "run.yml"


def test_log_exempt_is_checked_before_any_host_task_and_reaches_every_probe():
    result, errors, dummy = settings.check({"kprobes_fleet_probes": [{"name": "p", "function": "vfs_write"}],
                                            "kprobes_fleet_log_exempt": ["fluent-bit", "vector*"]}, "h1", ["h1"])
    assert errors == [] and result["kprobes_fleet_probes"][0]["log_exempt"] == ["fluent-bit", "vector*"]
    result, errors, dummy = settings.check({"kprobes_fleet_log_exempt": []}, "h1", ["h1"])
    assert errors == [] and all(p["log_exempt"] == [] for p in result["kprobes_fleet_probes"])
    assert settings.check({}, "h1", ["h1"])[0]["kprobes_fleet_log_exempt"] == [
        "systemd-journal", "rsyslogd", "syslog-ng", "klogd"]
    dummy, errors, dummy = settings.check({"kprobes_fleet_log_exempt": ["rm -rf /"]}, "h1", ["h1"])
    assert errors == ["kprobes_fleet_log_exempt: 'rm -rf /' is not a process name (at most 15 characters of letters, "
                      "digits, space and _.:@+-, a trailing * for a prefix)"]
