"""The fleet report of a real lab in a real browser (markers: vm, browser). LAB=bookworm,bookworm.

Deploy (module on one VM, tracefs forced on the other: no build needed there), make probes fire,
collect with kprobes_fleet_report into a jsonfile fact cache as AWX keeps one, then open the page
in headless chromium: no console error, nothing fetched, and the hosts and counters shown are the
ones the same collection put in the facts.
"""
import json
import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from headless import Browser, find_chromium  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [pytest.mark.vm, pytest.mark.browser,
              pytest.mark.skipif(find_chromium() is None,
                                 reason="no chromium on PATH: the browser test needs Debian's chromium "
                                        "(apt-get install chromium; .ci/run installs it)")]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LAB = [sys.executable, os.path.join(REPO, "lab", "lab.py")]
TRIGGER = ("cat /nonexistent/kprobes-fleet-report-test 2>/dev/null; "
           "for i in 1 2 3; do printf x > /dev/full; done 2>/dev/null; true")


def ansible(labdir, tmp_path, *argv):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN="ansible.builtin.jsonfile",
               ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"))
    res = subprocess.run([os.path.join(BIN, argv[0]), "-i", str(labdir / "inventory.yml")] + list(argv[1:])
                         + ["-e", "kprobes_fleet_cache_dir=%s" % (tmp_path / "cache")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)
    return res.returncode, res.stdout + res.stderr


def test_lab_report_in_the_browser(tmp_path):
    d = tmp_path / "lab"
    up = subprocess.run(LAB + ["--dir", str(d), "up"], capture_output=True, text=True, timeout=1800, check=False,
                        env=dict(os.environ, LAB="bookworm,bookworm", LAB_KERNEL_ARGS=""))
    try:
        assert up.returncode == 0, up.stderr
        (tmp_path / "backend.yml").write_text("kprobes_fleet_backend: \"{{ 'tracefs' if inventory_hostname "
                                              "== 'bookworm-2' else 'auto' }}\"\n")
        rc, out = ansible(d, tmp_path, "ansible-playbook", os.path.join(REPO, "playbooks", "deploy.yml"),
                          "-e", "@%s" % (tmp_path / "backend.yml"))
        assert rc == 0, out
        rc, out = ansible(d, tmp_path, "ansible", "all", "-m", "ansible.builtin.shell", "-a", TRIGGER)
        assert rc == 0, out
        report = tmp_path / "report.html"
        rc, out = ansible(d, tmp_path, "ansible-playbook", os.path.join(REPO, "playbooks", "collect.yml"),
                          "-e", "kprobes_fleet_report=%s" % report)
        assert rc == 0, out
        assert "kprobes.fleet report: %s" % report in out, out
        # the facts of that collection, from the fact cache (read by Ansible: its format is its own)
        rc, out = ansible(d, tmp_path, "ansible", "all", "-m", "ansible.builtin.debug", "-a",
                          "var=ansible_facts.kprobes_fleet", "-o")
        assert rc == 0, out
        facts = dict((m.group(1), json.loads(m.group(2))["ansible_facts.kprobes_fleet"])
                     for m in re.finditer(r"^(\S+) \| SUCCESS => (\{.*\})$", out, re.M))
        assert sorted(facts) == ["bookworm-1", "bookworm-2"], out
        assert sorted(f["backend"] for f in facts.values()) == ["module", "tracefs"], facts
        with Browser() as browser:
            page = browser.open("file://%s" % report)
            assert page.errors == []
            assert page.requests == ["file://%s" % report]
            page.screenshot(str(tmp_path / "report.png"))
            cards = page.eval("Object.fromEntries([...document.querySelectorAll('[data-card]')]"
                              ".map(c => [c.dataset.card, c.querySelector('b').textContent]))")
            assert cards["hosts"] == "2" and cards["with facts"] == "2"
            assert cards["matches"] == "{:,}".format(sum(p["matches"] for f in facts.values()
                                                         for p in f["probes"].values()))
            assert cards["events"] == "{:,}".format(sum(len(f["events"]) for f in facts.values()))
            page.eval("document.querySelector('#hosts').open = true;"
                      "document.querySelectorAll('details.host').forEach(d => d.open = true)")
            for host, f in facts.items():
                rows = page.eval("[...document.querySelector('#h-%s table').rows].map(r => "
                                 "[...r.cells].map(c => c.innerText))" % host)
                shown = dict((r[0], dict(zip(rows[0], r))) for r in rows[1:])  # by column name
                assert sorted(shown) == sorted(f["probes"])
                for name, p in f["probes"].items():
                    assert shown[name]["hits"] == "{:,}".format(p["hits"]), (host, name, shown[name])
                    assert shown[name]["matches"] == "{:,}".format(p["matches"]), (host, name, shown[name])
                    delta = p.get("delta")
                    assert shown[name]["\u0394 matches"] == ("{:,}".format(delta["matches"]) if delta else "n/a"), shown[name]
                assert f["probes"]["disk_full"]["matches"] >= 3  # the three writes to /dev/full
    finally:
        subprocess.run(LAB + ["--dir", str(d), "down"], capture_output=True, timeout=300, check=False)
