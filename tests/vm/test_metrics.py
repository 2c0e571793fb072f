"""Metrics where operators look (#24), against the real thing (marker vm; LAB=bookworm,bookworm:lockdown=integrity).

Two VMs: the open one runs the module backend, the locked-down one tracefs (auto). Each gets Debian's
prometheus-node-exporter; the deploy turns on kprobes_fleet_metrics=textfile (refreshed every 2 s). Debian's
prometheus server runs on this machine, on 127.0.0.1, and scrapes both node exporters through SSH tunnels
on loopback, with the shipped alerting rules (extensions/prometheus). Three ENOSPC writes on each VM: the
counter in Prometheus (its HTTP API) rises by exactly 3 and the ENOSPC alert goes pending or firing, on
both backends. The facts and the textfile agree on the same counts. After a reboot the timer writes the
file again with the probes loaded, with no Ansible run; state=absent removes our units and our file and
leaves the other files of the directory alone.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "collections"))

from ansible_collections.kprobes.fleet.plugins.module_utils import metrics  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.vm
BIN = os.path.dirname(sys.executable)
LAB = [sys.executable, os.path.join(REPO, "lab", "lab.py")]
BACKENDS = {"bookworm-1": "module", "bookworm-2": "tracefs"}
TEXTFILE = "/var/lib/prometheus/node-exporter/kprobes-fleet-kprobes_fleet.prom"
OTHER = "/var/lib/prometheus/node-exporter/kpf-test-other.prom"
ENOSPC = "for i in 1 2 3; do printf x > /dev/full; done 2>/dev/null; true"  # exactly 3 ENOSPC from vfs_write
SERIES = 'kprobes_fleet_errno_total{probe="disk_full",errno="ENOSPC"}'
INTERVAL = 2          # the timer's refresh (s)
SCRAPE = 5            # Prometheus' scrape and rule evaluation interval (s)


def ansible(labdir, tmp_path, *argv):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    res = subprocess.run([os.path.join(BIN, argv[0]), "-i", str(labdir / "inventory.yml")] + list(argv[1:])
                         + ["-e", "kprobes_fleet_cache_dir=%s" % (tmp_path / "cache")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)
    return res.returncode, res.stdout + res.stderr


def ssh(ssh_config, vm, script):
    res = subprocess.run(["ssh", "-F", ssh_config, "-o", "BatchMode=yes", vm, script], capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, (vm, script, res.stderr)
    return res.stdout


def facts(labdir, tmp_path):
    rc, out = ansible(labdir, tmp_path, "ansible", "all", "-m", "kprobes.fleet.probe_facts", "-a", "advance_cursor=false", "-o")
    assert rc == 0, out
    return dict((m.group(1), json.loads(m.group(2))["ansible_facts"]["kprobes_fleet"])
                for m in re.finditer(r"^(\S+) \| SUCCESS => (\{.*\})$", out, re.M))


def both(per_vm):
    """``per_vm`` ({vm: value}) when it has every VM, else None (wait on)."""
    return per_vm if set(per_vm) == set(BACKENDS) else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus(object):
    """Debian's prometheus on 127.0.0.1, scraping the VMs' node exporters through local forwards."""

    def __init__(self, tmp_path, targets):
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "%ds" % SCRAPE, "scrape_timeout": "%ds" % SCRAPE, "evaluation_interval": "%ds" % SCRAPE},
            "rule_files": [os.path.join(REPO, "extensions", "prometheus", "kprobes-fleet.rules.yml")],
            # the textfile collector only (node_exporter's collect[] parameter): all collectors take 20 s
            # in a TCG guest, over any scrape timeout
            "scrape_configs": [{"job_name": "node", "params": {"collect[]": ["textfile"]}, "static_configs": [
                {"targets": ["127.0.0.1:%d" % port], "labels": {"instance": vm}} for vm, port in sorted(targets.items())]}]}))
        self.log = open(str(tmp_path / "prometheus.log"), "w")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [shutil.which("prometheus"), "--config.file=%s" % config, "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % self.port], stdout=self.log, stderr=subprocess.STDOUT)

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s?%s" % (self.port, path, urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)["data"]

    def values(self, query):
        """{instance: value} of an instant query."""
        try:
            return dict((s["metric"]["instance"], float(s["value"][1])) for s in self.api("query", query=query)["result"])
        except OSError:
            return {}

    def wait(self, what, check, timeout=180):
        last = None
        for dummy in range(timeout):
            last = check()
            if last:
                return last
            time.sleep(1)
        pytest.fail("%s: not after %d s (last %r)" % (what, timeout, last))

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def test_prometheus_scrapes_exact_counts_and_fires_the_enospc_alert_on_both_backends(tmp_path):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed (make test-metrics installs it: apt-get install prometheus)")
    labdir = tmp_path / "lab"
    up = subprocess.run(LAB + ["--dir", str(labdir), "up"], capture_output=True, text=True, timeout=1800, check=False,
                        env=dict(os.environ, LAB="bookworm,bookworm:lockdown=integrity", LAB_KERNEL_ARGS=""))
    ssh_config = str(labdir / "ssh_config")
    tunnels, prom = [], None
    try:
        assert up.returncode == 0, up.stderr
        os.makedirs(str(tmp_path / "cache"), mode=0o700)
        rc, out = ansible(labdir, tmp_path, "ansible", "all", "-m", "ansible.builtin.apt", "-a",
                          "name=prometheus-node-exporter install_recommends=false update_cache=true")
        assert rc == 0, out
        for vm in BACKENDS:  # a file of someone else's in the textfile directory
            ssh(ssh_config, vm, "printf 'kpf_test_other 1\\n' > %s" % OTHER)
        (tmp_path / "vars.json").write_text(json.dumps({"kprobes_fleet_metrics": "textfile",
                                                        "kprobes_fleet_metrics_interval": INTERVAL}))
        rc, out = ansible(labdir, tmp_path, "ansible-playbook", os.path.join(REPO, "deploy-probes.yml"),
                          "-e", "@%s" % (tmp_path / "vars.json"))
        assert rc == 0, out
        got = facts(labdir, tmp_path)
        assert dict((vm, got[vm]["backend"]) for vm in BACKENDS) == BACKENDS, got

        ports = {}
        for vm in BACKENDS:
            ports[vm] = free_port()
            tunnels.append(subprocess.Popen(  # pylint: disable=consider-using-with
                ["ssh", "-F", ssh_config, "-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                 "-L", "127.0.0.1:%d:127.0.0.1:9100" % ports[vm], vm], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        prom = Prometheus(tmp_path, ports)
        prom.wait("both hosts' probes scraped as loaded",
                  lambda: prom.values('kprobes_fleet_loaded{module="kprobes_fleet"}') == dict.fromkeys(BACKENDS, 1.0))
        before = prom.wait("the ENOSPC counter (0 until counted) on both hosts", lambda: both(prom.values(SERIES)))
        backends = dict((s["metric"]["instance"], s["metric"]["backend"])
                        for s in prom.api("query", query="kprobes_fleet_info")["result"])
        assert backends == BACKENDS, backends

        rc, out = ansible(labdir, tmp_path, "ansible", "all", "-m", "ansible.builtin.shell", "-a", ENOSPC)
        assert rc == 0, out
        want = dict((vm, before[vm] + 3) for vm in BACKENDS)
        prom.wait("the ENOSPC counter up by 3", lambda: prom.values(SERIES) == want)
        time.sleep(3 * SCRAPE)
        assert prom.values(SERIES) == want, "up by exactly 3, no more"
        firing = prom.wait("the ENOSPC alert on both hosts", lambda: both(dict(
            (a["labels"]["instance"], a["state"]) for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == "KprobesFleetENOSPC")))
        assert set(firing.values()) <= {"pending", "firing"}, firing

        # the facts and the metrics agree: textfile, then facts, then textfile again; counters only grow, so
        # each fact lies between the two readings, and the ones nothing moves (disk_full's matches, errnos) are equal
        first = dict((vm, metrics.parse(ssh(ssh_config, vm, "cat %s" % TEXTFILE))) for vm in BACKENDS)
        got = facts(labdir, tmp_path)
        second = dict((vm, metrics.parse(ssh(ssh_config, vm, "cat %s" % TEXTFILE))) for vm in BACKENDS)
        for vm in BACKENDS:
            for probe, p in got[vm]["probes"].items():
                labels = dict(module="kprobes_fleet", probe=probe, function=p["function"])
                for key, metric, dummy in metrics.PROBE_COUNTERS:
                    if p[key] is None:
                        continue
                    k = ("kprobes_fleet_" + metric, frozenset(labels.items()))
                    assert first[vm][k] <= p[key] <= second[vm][k], (vm, probe, key, first[vm][k], p[key], second[vm][k])
                for errno, n in (p["errnos"] or {}).items():
                    k = ("kprobes_fleet_errno_total", frozenset(dict(labels, errno=errno).items()))
                    assert first[vm][k] <= n <= second[vm][k], (vm, probe, errno)
            dp = got[vm]["probes"]["disk_full"]
            k = ("kprobes_fleet_errno_total", frozenset(dict(module="kprobes_fleet", probe="disk_full",
                                                             function=dp["function"], errno="ENOSPC").items()))
            assert first[vm][k] == dp["errnos"]["ENOSPC"] == second[vm][k] == want[vm], (vm, dp)

        # a reboot: the boot-time restore loads the module, the timer writes the file again - no Ansible run
        rc, out = ansible(labdir, tmp_path, "ansible", "bookworm-1", "-m", "ansible.builtin.reboot", "-a", "reboot_timeout=900")
        assert rc == 0, out
        for dummy in range(60):
            after = ssh(ssh_config, "bookworm-1", "cat %s; echo; cut -d. -f1 /proc/uptime; stat -c %%Y %s; date +%%s"
                        % (TEXTFILE, TEXTFILE))
            uptime, mtime, now = [int(x) for x in after.split()[-3:]]
            if mtime >= now - uptime and 'kprobes_fleet_loaded{module="kprobes_fleet"} 1' in after:
                break
            time.sleep(2)
        else:
            pytest.fail("no textfile with the probes loaded after the reboot: %s" % after)

        # state=absent: our units and our file go, the directory and the other files stay
        rc, out = ansible(labdir, tmp_path, "ansible-playbook", os.path.join(REPO, "playbooks", "remove.yml"))
        assert rc == 0, out
        for vm in BACKENDS:
            left = ssh(ssh_config, vm, "ls /etc/systemd/system | grep -- '-metrics\\.' ; "
                                       "systemctl list-units --all --no-legend 'kprobes-fleet-*' ; true")
            assert left.strip() == "", (vm, left)
            files = ssh(ssh_config, vm, "ls /var/lib/prometheus/node-exporter").split()
            assert os.path.basename(TEXTFILE) not in files and os.path.basename(OTHER) in files, (vm, files)
            assert ssh(ssh_config, vm, "cat %s" % OTHER) == "kpf_test_other 1\n"
    finally:
        if prom is not None:
            prom.close()
            print((tmp_path / "prometheus.log").read_text()[-3000:])
        for t in tunnels:
            t.terminate()
        subprocess.run(LAB + ["--dir", str(labdir), "down"], capture_output=True, timeout=600, check=False)
