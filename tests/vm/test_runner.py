"""Deploy, then two scheduled collect jobs, run the way AWX runs them (marker: vm). LAB=bookworm.

Every job goes through ansible-runner's Python API (the engine AWX runs jobs with): a private data
dir, the job template's extra vars, an ident per job (AWX's job id) and runner's jsonfile fact cache
in ``artifacts/<ident>/fact_cache``, seeded before each job with the facts the previous job left, as
AWX does from its database ("Enable Fact Storage"). One VM, tracefs forced (no headers, no build).
Between the two collects the test causes a known number of ``disk_full`` matches: the second collect
must report exactly that many in ``delta.matches`` (in its job events, its set_stats summary and the
fact cache alike) and none of the first collect's events again. Then the fleet report is written
from the fact cache alone, and make demo's playbook runs on the same VM (its own delta check).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

ansible_runner = pytest.importorskip("ansible_runner")

pytestmark = pytest.mark.vm
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LAB = [sys.executable, os.path.join(REPO, "lab", "lab.py")]
HOST = "bookworm-1"
WRITES = 5  # failing write()s to /dev/full between the two collects: 5 disk_full matches, nothing else


class Awx:
    """Jobs in one private data dir, each with its own ident and a fact cache seeded from the last."""

    def __init__(self, tmp_path, inventory, extravars):
        self.pdd = tmp_path / "pdd"
        self.pdd.mkdir()
        self.inventory = str(inventory)
        self.extravars = extravars
        self.jobs = 0
        self.last_cache = None

    def run(self, playbook=None, extravars=None, **kwargs):
        self.jobs += 1
        ident = str(self.jobs)
        cache = self.pdd / "artifacts" / ident / "fact_cache"
        if self.last_cache is not None and self.last_cache.is_dir():
            shutil.copytree(self.last_cache, cache)
        if playbook is not None:
            kwargs["playbook"] = os.path.join(REPO, playbook)
        r = ansible_runner.run(
            private_data_dir=str(self.pdd), project_dir=REPO, ident=ident, inventory=self.inventory,
            extravars=dict(self.extravars, **(extravars or {})), fact_cache_type="jsonfile", quiet=True,
            # the venv's ansible-playbook / ansible, as an EE has them on its PATH
            envvars={"ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                     "PATH": BIN + os.pathsep + os.environ.get("PATH", "")},
            **kwargs)
        assert r.config.fact_cache == str(cache)  # where AWX reads the facts back from
        self.last_cache = cache
        return r


def stdout(r):
    with open(os.path.join(r.config.artifact_dir, "stdout")) as f:
        return f.read()


def events(r, name):
    return [e for e in r.events if e.get("event") == name]


def check_job(r):
    """A job that went well: successful, no failed or unreachable event; returns its events."""
    assert (r.status, r.rc) == ("successful", 0), stdout(r)[-6000:]
    bad = [e["event"] for e in r.events if e.get("event") in ("runner_on_failed", "runner_on_unreachable")
           and not e["event_data"].get("ignore_errors")]
    assert bad == [], stdout(r)[-6000:]
    return r.events


def collected(r):
    """The probe_facts results of a job (one runner_on_ok event per host), as facts."""
    oks = [e["event_data"] for e in events(r, "runner_on_ok")
           if e["event_data"].get("task_action") == "kprobes.fleet.probe_facts"]
    assert [e["host"] for e in oks] == [HOST], [e["event"] for e in r.events]
    return oks[0]["res"]["ansible_facts"]["kprobes_fleet"]


def summary(r):
    """set_stats of the job: artifact_data of its playbook_on_stats event."""
    stats = events(r, "playbook_on_stats")
    assert len(stats) == 1
    assert stats[0]["event_data"]["failures"] == {} and stats[0]["event_data"]["dark"] == {}
    return stats[0]["event_data"]["artifact_data"]["kprobes_fleet_summary"]


def cache_files(cache):
    """The hosts the jsonfile fact cache holds (ansible-core 2.19 names the files s1_<host>)."""
    return sorted(name.split("_", 1)[1] if name.startswith("s1_") else name for name in os.listdir(cache))


def canonical(facts):
    return json.dumps(facts, sort_keys=True)


def event_key(e):
    return (e["probe"], e["seq"], e["ts_usec"], e["pid"], e["ret"])


def test_deploy_and_two_scheduled_collects_through_ansible_runner(tmp_path):
    d = tmp_path / "lab"
    up = subprocess.run(LAB + ["--dir", str(d), "up"], capture_output=True, text=True, timeout=1800, check=False,
                        env=dict(os.environ, LAB="bookworm", LAB_KERNEL_ARGS=""))
    try:
        assert up.returncode == 0, up.stderr
        awx = Awx(tmp_path, d / "inventory.yml",
                  {"kprobes_fleet_backend": "tracefs", "kprobes_fleet_cache_dir": str(tmp_path / "cache")})

        # job 1: the deploy template (deploy + collect)
        deploy = awx.run("deploy-probes.yml")
        check_job(deploy)
        assert summary(deploy)[HOST]["backend"] == "tracefs"

        # job 2: the first scheduled collect
        c1 = awx.run("playbooks/collect.yml")
        check_job(c1)
        f1 = collected(c1)
        assert f1["backend"] == "tracefs" and f1["loaded"] is True
        assert cache_files(awx.last_cache) == [HOST]

        # exactly WRITES disk_full matches (ENOSPC from vfs_write), through runner's ad hoc path
        trig = awx.run(module="ansible.builtin.shell", host_pattern="all",
                       module_args="for i in $(seq %d); do printf x > /dev/full; done 2>/dev/null; true" % WRITES)
        check_job(trig)

        # job 4: the second scheduled collect
        c2 = awx.run("playbooks/collect.yml")
        check_job(c2)
        f2 = collected(c2)
        assert f2["boot_id"] == f1["boot_id"] and f2["previous_boot_id"] == f1["boot_id"]
        delta = f2["probes"]["disk_full"]["delta"]
        assert delta["reset"] is None, delta
        assert delta["matches"] == WRITES, delta
        assert delta["hits"] >= WRITES and delta["seconds"] > 0, delta
        assert f2["probes"]["disk_full"]["matches"] == f1["probes"]["disk_full"]["matches"] + WRITES
        # every match is an event on tracefs (no log budget): the five, and none of collect 1's again
        new = [e for e in f2["events"] if e["probe"] == "disk_full"]
        assert len(new) == WRITES and all(e["errno"] == "ENOSPC" for e in new), new
        assert not set(map(event_key, f1["events"])) & set(map(event_key, f2["events"]))
        if f1["events"]:
            assert min(e["seq"] for e in f2["events"]) > max(e["seq"] for e in f1["events"])
        assert f2["events_lost"] == 0 and f2["events_dropped"] == 0

        # the same collection in set_stats (the job's artifact) and in the fact cache AWX keeps
        s2 = summary(c2)
        assert sorted(s2) == [HOST]
        assert s2[HOST]["probes"]["disk_full"]["delta"]["matches"] == WRITES
        assert s2[HOST]["events"] == len(f2["events"])
        assert cache_files(awx.last_cache) == [HOST]
        # what the next job sees: the facts Ansible reads back from that cache (its format is its own)
        seen = awx.run(module="ansible.builtin.debug", module_args="var=ansible_facts.kprobes_fleet",
                       host_pattern="all")
        check_job(seen)
        oks = [e["event_data"] for e in events(seen, "runner_on_ok")]
        assert [e["host"] for e in oks] == [HOST]
        assert canonical(oks[0]["res"]["ansible_facts.kprobes_fleet"]) == canonical(f2)

        # job 6: the fleet report from the fact cache only (no host task runs)
        report = tmp_path / "report.html"
        rep = awx.run("playbooks/report.yml", extravars={"kprobes_fleet_report": str(report)})
        check_job(rep)
        actions = set(e["event_data"]["task_action"] for e in events(rep, "runner_on_ok"))
        assert "ansible.builtin.copy" in actions and actions <= {
            "kprobes.fleet.validate", "ansible.builtin.validate_argument_spec", "ansible.builtin.copy",
            "ansible.builtin.debug"}, actions
        assert HOST in report.read_text()

        # job 7: make demo's playbook on the same VM: its triggers, then its own exact delta check
        demo = awx.run("playbooks/demo.yml")
        check_job(demo)
        checks = [e for e in events(demo, "runner_on_ok")
                  if e["event_data"]["task"].startswith("Check that disk_full's delta")]
        assert [e["event_data"]["host"] for e in checks] == [HOST], stdout(demo)[-4000:]
    finally:
        subprocess.run(LAB + ["--dir", str(d), "down"], capture_output=True, timeout=300, check=False)
