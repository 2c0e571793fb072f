"""Shared helpers for the bench scripts: a lab of their own, ssh, ansible-playbook."""
import json
import os
import re
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, ".venv", "bin")
LAB = [sys.executable, os.path.join(REPO, "lab", "lab.py")]


def log(msg):
    print("bench: %s" % msg, file=sys.stderr, flush=True)


class BenchLab:
    def __init__(self, name):
        self.dir = os.path.join(REPO, ".lab-bench-" + name)

    def fresh(self, releases):
        """Clean VMs: stop whatever this bench started before, boot new overlays."""
        subprocess.run(LAB + ["--dir", self.dir, "down"], check=True)
        res = subprocess.run(LAB + ["--dir", self.dir, "up", "--json", "--releases", ",".join(releases)],
                             check=True, stdout=subprocess.PIPE, text=True)
        self.vms = json.loads(res.stdout)["vms"]
        return self.vms

    def down(self):
        subprocess.run(LAB + ["--dir", self.dir, "down"], check=True)

    @property
    def inventory(self):
        return os.path.join(self.dir, "inventory.yml")

    def ssh(self, name, script, check=True, stdin=None):
        """Run a shell script on a VM; ``stdin`` (text) is fed to it. Returns its stdout."""
        res = subprocess.run(["ssh", "-F", os.path.join(self.dir, "ssh_config"), "-o", "BatchMode=yes",
                              name, script], input=stdin if stdin is not None else "",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if check and res.returncode != 0:
            raise RuntimeError("%s: %s failed: %s" % (name, script, res.stderr.strip()))
        return res.stdout


def playbook(inventory, playbook_path, extra=None, log_path=None, limit=None):
    """Run ansible-playbook; return (seconds, {host: recap dict}, rc)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook_path]
    for k, v in (extra or {}).items():
        # a list or a mapping (a probe spec) as a JSON extra var, anything else as key=value
        argv += ["-e", json.dumps({k: v}) if isinstance(v, (list, dict)) else "%s=%s" % (k, v)]
    if limit:
        argv += ["--limit", ",".join(limit)]
    t0 = time.time()
    res = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    secs = time.time() - t0
    if log_path:
        with open(log_path, "w") as f:
            f.write(res.stdout)
    recap = {}
    for m in re.finditer(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", res.stdout, re.M):
        recap[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                             "unreachable": int(m.group(4)), "failed": int(m.group(5))}
    if res.returncode != 0:
        log("ansible-playbook failed (rc=%d), last lines:\n%s" % (res.returncode, "\n".join(res.stdout.splitlines()[-30:])))
    return secs, recap, res.returncode


def sliced_playbook(inventory, hosts, slices, playbook_path, extras, log_prefix):
    """Run the playbook as AWX job slicing does: `slices` concurrent runs, slice i getting
    hosts[i::slices]. extras[i] are slice i's extra vars. Returns (wall seconds, merged recap, rc)."""
    results = [None] * slices

    def run(i):
        results[i] = playbook(inventory, playbook_path, extras[i], "%s-slice%d.log" % (log_prefix, i + 1),
                              limit=hosts[i::slices])

    t0 = time.time()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(slices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recap = {}
    for _, r, _ in results:
        recap.update(r)
    return time.time() - t0, recap, max(rc for _, _, rc in results)
