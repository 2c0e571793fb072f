"""settings.check_plan: the probes of a build plan pass probe_spec.check_resolved, then the plan's own rules."""

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import names, probe_spec
from ansible_collections.kprobes.fleet.plugins.plugin_utils import settings
from ansible_collections.kprobes.fleet.plugins.plugin_utils.module_cache import ModuleCache, template_sha

VALUES = {"kprobes_fleet_cache_dir": "/nonexistent/cache", "kprobes_fleet_module_name": "kprobes_fleet",
          "kprobes_fleet_signing_cert": ""}
KEY = "0123456789abcdef"


def plan():
    resolved = probe_spec.resolve(probe_spec.normalize(None), {"open_failures": "do_filp_open", "disk_full": "vfs_write"})
    cache = ModuleCache(VALUES["kprobes_fleet_cache_dir"], VALUES["kprobes_fleet_module_name"])
    return {"build_key": KEY, "spec_hash": probe_spec.spec_hash("kprobes_fleet", resolved, template_sha()),
            "probes": resolved, "ko": cache.ko(KEY), "staged": cache.staged(KEY, "h1"), "signer": None}


def refused(the_plan):
    with pytest.raises(names.InvalidValue) as info:
        settings.check_plan(the_plan, VALUES, "h1", for_load=False)
    return str(info.value)


def test_the_plan_build_plan_returns_passes():
    assert settings.check_plan(plan(), VALUES, "h1", for_load=False) is None


@pytest.mark.parametrize("probes", [None, [], "open_failures", [["open_failures"]], [{"name": "a"}, 5]])
def test_probes_that_are_no_resolved_list(probes):
    assert refused(dict(plan(), probes=probes)) == "build plan: probes must be the resolved probe list"


def test_probes_checked_with_the_spec_rules():
    bad = plan()
    bad["probes"][1]["function"] = "ksys_read"
    words = refused(bad)
    assert words.startswith("build plan: probe 'disk_full' (#2): field 'function': resolved symbol 'ksys_read'")
    bad = plan()
    bad["probes"][0]["name"] = ["open_failures"]  # unhashable: a clean refusal, not a TypeError
    assert "field 'name': must be a string" in refused(bad)


def test_probes_must_be_exactly_the_resolved_list():
    loose = plan()
    loose["probes"][1]["functions"] = ["vfs_write", "ksys_write"]  # valid input, not the normalized form
    assert "does not belong to these probes" in refused(loose)
    other = plan()
    other["probes"][1]["maxactive"] = 512
    assert "does not belong to these probes" in refused(other)
