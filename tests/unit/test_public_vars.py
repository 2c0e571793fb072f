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
