"""The Event-Driven Ansible loop on a real kernel (marker vm; LAB=bookworm, one VM; README "Events").

ansible-rulebook (kprobes.fleet.disk_full) on this machine, its webhook behind a capture relay, both on
127.0.0.1; the VM reaches them only through a reverse forward over the lab's SSH connection
(tests/eda_loop.py). The deploy turns the forwarder on (kprobes_fleet_events); ``dd`` on a full tmpfs
of the VM makes bursts of ENOSPC. Fails when an event is lost or duplicated on the way, when a burst
gets no action, or more than one, or its action starts later than BOUND_S after the burst began, when
the drop counter of a flood is missing from the facts, or when state=absent leaves a unit, a file or
a process of the forwarder behind. Forged posts from the VM through the tunnel (#20): without a token,
with a wrong one, with another host's, as the sender "all", the VM's own token with events of "all" or
of another host - all refused, no action; new burst names on every post with the VM's own token - one
action, not one per post.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import eda_loop  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [pytest.mark.vm]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LAB = [sys.executable, os.path.join(REPO, "lab", "lab.py")]
VM = "bookworm-1"
# make test-events runs it with EVENTS_BACKEND=tracefs (no headers, no build; 3 min idle, 6-9 min on a loaded 2-core
# machine) and EVENTS_BACKEND=module (kernel log records; headers and a build in the VM on top).
BACKEND = os.environ.get("EVENTS_BACKEND", "tracefs")
ROUNDS = int(os.environ.get("EVENTS_ROUNDS", "3"))
BURST = 4           # ENOSPC per round (dd runs)
BOUND_S = 30.0      # burst start (controller clock, before the ssh that runs dd) -> action playbook started
EVENTS = {"url": eda_loop.URL, "burst_gap_s": 2, "batch_wait_ms": 200, "queue_size": 8, "rate": 2, "spool": True}
FLOOD = "for i in $(seq 300); do printf x > /dev/full; done 2>/dev/null; true"  # 300 x ENOSPC from vfs_write


def ansible(labdir, tmp_path, *argv):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    res = subprocess.run([os.path.join(BIN, argv[0]), "-i", str(labdir / "inventory.yml")] + list(argv[1:])
                         + ["-e", "kprobes_fleet_cache_dir=%s" % (tmp_path / "cache")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    return res.returncode, res.stdout + res.stderr


def facts(labdir, tmp_path):
    rc, out = ansible(labdir, tmp_path, "ansible", VM, "-m", "kprobes.fleet.probe_facts", "-o")
    assert rc == 0, out
    return json.loads(re.search(r"SUCCESS => (\{.*\})$", out, re.M).group(1))["ansible_facts"]["kprobes_fleet"]


def test_probe_matches_drive_the_rulebook_once_per_burst(tmp_path):
    labdir = tmp_path / "lab"
    up = subprocess.run(LAB + ["--dir", str(labdir), "up"], capture_output=True, text=True, timeout=1800,
                        check=False, env=dict(os.environ, LAB="bookworm", LAB_KERNEL_ARGS=""))
    ssh_config = str(labdir / "ssh_config")
    relay = rulebook = tunnel = None
    try:
        assert up.returncode == 0, up.stderr
        os.makedirs(str(tmp_path / "cache"), mode=0o700)
        eda_loop.ssh(ssh_config, VM, eda_loop.FILL)
        key_file = str(tmp_path / "events.key")  # the deploy makes it; the rulebook's webhook reads it
        (tmp_path / "vars.json").write_text(json.dumps({"kprobes_fleet_events": dict(EVENTS, key_file=key_file),
                                                        "kprobes_fleet_probes": ["disk_full"],
                                                        "kprobes_fleet_backend": BACKEND}))
        rc, out = ansible(labdir, tmp_path, "ansible-playbook", os.path.join(REPO, "deploy-probes.yml"),
                          "-e", "@%s" % (tmp_path / "vars.json"))
        assert rc == 0, out
        rulebook = eda_loop.Rulebook(str(labdir / "inventory.yml"), str(tmp_path), key_file, EVENTS["burst_gap_s"])
        relay = eda_loop.Relay("http://127.0.0.1:%d/kprobes-fleet" % rulebook.port)
        tunnel = eda_loop.Tunnel(ssh_config, VM, relay.port)
        probe = "python3 -c \"import socket; socket.create_connection(('127.0.0.1', %d), 2)\"" % eda_loop.VM_PORT
        for dummy in range(30):
            if subprocess.run(["ssh", "-F", ssh_config, VM, probe], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(1)
        else:
            pytest.fail("the reverse forward never came up: %s" % tunnel.proc.stderr.read1().decode())

        rounds = []
        for dummy in range(ROUNDS):
            time.sleep(EVENTS["burst_gap_s"] + 1)  # a new burst
            # the action is seen when its report is printed (a minute or more on a loaded machine);
            # the bound is checked on when it started
            rounds.append(eda_loop.run_round(ssh_config, VM, rulebook, relay, BURST, BOUND_S + 240))
        time.sleep(5)  # a late duplicate action would show up now
        (tmp_path / "rounds.json").write_text(json.dumps(rounds, indent=1))
        for r in rounds:
            assert r["events"] == BURST, ("an event was lost or duplicated", r)
            assert len(r["bursts"]) == 1, ("one burst, one name", r)
            assert r["actions"] == 1 and r["action_host"] == VM, ("exactly one action per burst", r)
            assert r["action_event_burst"] == r["bursts"][0], r
            assert r["action_started"] - r["t_start"] <= BOUND_S, ("action too late", r)
            assert eda_loop.MOUNT in r["full_filesystems"], r  # the report is about the full tmpfs
        per_burst = eda_loop.actions_of(rulebook, [b for r in rounds for b in r["bursts"]])
        assert sorted(per_burst.values()) == [1] * ROUNDS, ("exactly one action per burst", per_burst)
        seqs = [ev["seq"] for dummy, ev in relay.events()]
        assert len(seqs) == len(set(seqs)), "an event was delivered twice"

        got = facts(labdir, tmp_path)
        assert got["backend"] == BACKEND, got
        f = got["forwarder"]
        assert f["running"] is True and f["dropped"] == 0 and f["lost"] == 0, f
        assert f["received"] == f["sent"] == ROUNDS * BURST, f

        # Forged posts from the VM through the tunnel (anyone on the VM can reach the port)
        with open(key_file) as fk:
            key = bytes.fromhex(fk.read().strip())
        actions_before = len(rulebook.actions())
        for sender, token, host, want in (
                (VM, "", VM, 401),                                                  # no token
                (VM, "not-the-token-0123456789abcdef", VM, 401),                    # a wrong one
                (VM, eda_loop.token_for(key, "another-host"), VM, 401),         # another host's
                ("another-host", eda_loop.token_for(key, "another-host"), VM, 403),  # ... for its own name
                ("all", eda_loop.token_for(key, "all"), "all", 400)):           # every host
            assert eda_loop.forge(ssh_config, VM, sender, token, host, "forged-x") == [want], (sender, host)
        own = json.loads(eda_loop.ssh(ssh_config, VM, "cat /var/lib/kprobes-fleet/state/kprobes_fleet.events.json"))
        own_token = own["config"]["token"]
        assert own_token == eda_loop.token_for(key, VM)  # the deploy gave the VM its own token
        for host, want in (("all", 400), ("another-host", 403), ("%s,all" % VM, 400)):  # root of the VM, others' events
            assert eda_loop.forge(ssh_config, VM, VM, own_token, host, "forged-y") == [want], host
        forged = ["forged-burst-%d" % i for i in range(6)]  # a new burst name on every post
        assert eda_loop.forge(ssh_config, VM, VM, own_token, VM, *forged) == [200] * len(forged)
        for dummy in range(240):
            if sum(eda_loop.actions_of(rulebook, forged).values()):
                break
            time.sleep(1)
        time.sleep(5)
        assert sum(eda_loop.actions_of(rulebook, forged).values()) == 1, eda_loop.actions_of(rulebook, forged)
        assert all(a["kprobes_fleet_disk_full"] == VM for a in rulebook.actions()[actions_before:])
        assert eda_loop.actions_of(rulebook, ["forged-x", "forged-y"]) == {"forged-x": 0, "forged-y": 0}

        # A flood: 300 ENOSPC (the module logs at most log_burst=100 of them per 5 s; tracefs all). The queue holds 8,
        # at most 2 requests a second leave: the rest is dropped, and counted in the facts.
        t0 = time.time()
        before = len(relay.requests)
        eda_loop.ssh(ssh_config, VM, FLOOD)
        time.sleep(8)
        f = facts(labdir, tmp_path)["forwarder"]
        assert f["dropped"] > 0 and f["dropped_why"].get("queue full") == f["dropped"], f
        assert f["received"] == f["sent"] + f["dropped"] + f["queued"], f
        ours = set(b for r in rounds for b in r["bursts"])
        flood = [ev for dummy, ev in relay.events() if ev["burst"] not in ours and ev["boot_id"] != eda_loop.FORGED_BOOT_ID]
        assert len(flood) == f["sent"] - ROUNDS * BURST, (len(flood), f)  # what was sent arrived, once
        assert len(relay.requests) - before <= 2 + 2 * (time.time() - t0), "a flood of requests"
        flood_bursts = sorted(set(ev["burst"] for ev in flood))
        assert len(flood_bursts) == 1, flood_bursts  # one burst
        for dummy in range(240):  # its action comes after the rounds' reports
            if eda_loop.actions_of(rulebook, flood_bursts)[flood_bursts[0]]:
                break
            time.sleep(1)
        time.sleep(3)
        assert eda_loop.actions_of(rulebook, flood_bursts) == {flood_bursts[0]: 1}, "the flood is one burst: one action"

        # state=absent: no unit, no file, no process of the forwarder
        rc, out = ansible(labdir, tmp_path, "ansible-playbook", os.path.join(REPO, "playbooks", "remove.yml"))
        assert rc == 0, out
        left = eda_loop.ssh(ssh_config, VM, (
            "ls /etc/systemd/system | grep -- '-events.service' ; "
            "ls /var/lib/kprobes-fleet/state /var/lib/kprobes-fleet/lib 2>/dev/null | grep -i event ; "
            "pgrep -af '[k]probes-fleet-events' ; systemctl list-units --all --no-legend 'kprobes-fleet-*' ; true"))
        assert left.strip() == "", left
    finally:
        for thing in (tunnel, relay, rulebook):
            if thing is not None:
                thing.close()
        if rulebook is not None:
            print(rulebook.text()[-4000:])
        eda_loop.ssh(ssh_config, VM, eda_loop.UNMOUNT, check=False) if os.path.exists(ssh_config) else None
        subprocess.run(LAB + ["--dir", str(labdir), "down"], capture_output=True, timeout=300, check=False)
