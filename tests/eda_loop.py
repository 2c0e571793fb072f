"""The Event-Driven Ansible loop on a lab VM, for tests/vm/test_events.py and bench/events.

ansible-rulebook runs the collection's rulebook kprobes.fleet.disk_full on this machine, its webhook
on 127.0.0.1 only. In front of it a capture relay (also 127.0.0.1) records every request the
forwarder makes (arrival time, body) and hands it on unchanged, so a test sees every event that left
the host, not only the first of a burst the rule lets through. The VM reaches the relay only through
the lab's SSH connection: ``ssh -R 127.0.0.1:<vm port>:127.0.0.1:<relay port>``, the forwarder's URL
being ``http://127.0.0.1:<vm port>/kprobes-fleet`` on the VM. ENOSPC comes from ``dd`` on a small
tmpfs of the VM that is full.
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
VM_PORT = 5000
MOUNT = "/mnt/kprobes-fleet-eda"
URL = "http://127.0.0.1:%d/kprobes-fleet" % VM_PORT


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.3)
    return False


class Relay(object):
    """Records every POST (time, body) and passes it on to ``target``; answers with its status."""

    def __init__(self, target):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                headers = {"Content-Type": "application/json"}
                if self.headers.get("Authorization") is not None:  # the webhook authenticates the sender
                    headers["Authorization"] = self.headers["Authorization"]
                try:
                    req = urllib.request.Request(target, data=body, method="POST", headers=headers)
                    with urllib.request.urlopen(req, timeout=10) as res:
                        code = res.status
                except urllib.error.HTTPError as e:
                    code = e.code
                except OSError:
                    code = 502
                try:
                    parsed = json.loads(body or b"null")
                except ValueError:
                    parsed = None
                with outer.lock:
                    outer.requests.append({"at": at, "code": code, "body": parsed})
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self):
        """[(arrival time, event)] of every delivered request (2xx), in arrival order."""
        with self.lock:
            return [(r["at"], ev) for r in self.requests if 200 <= r["code"] < 300
                    for ev in (r["body"] or {}).get("events", [])]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Rulebook(object):
    """ansible-rulebook with kprobes.fleet.disk_full against an inventory, its webhook on 127.0.0.1:port,
    checking tokens against ``key_file`` (the deploy's kprobes_fleet_events.key_file)."""

    def __init__(self, inventory, workdir, key_file, burst_gap_s=60, port=None):
        self.port = port or free_port()
        self.log_path = os.path.join(workdir, "ansible-rulebook.log")
        varsfile = os.path.join(workdir, "rulebook-vars.yml")
        with open(varsfile, "w") as f:
            f.write("kprobes_fleet_eda_host: 127.0.0.1\nkprobes_fleet_eda_port: %d\nkprobes_fleet_eda_key_file: %s\n"
                    "kprobes_fleet_eda_burst_gap_s: %s\n" % (self.port, json.dumps(key_file), burst_gap_s))
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_FORCE_COLOR="0",
                   PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
        self.log = open(self.log_path, "w")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [os.path.join(BIN, "ansible-rulebook"), "-i", inventory, "-r", "kprobes.fleet.disk_full",
             "--vars", varsfile], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_port(self.port, 120) or self.proc.poll() is not None:
            self.close()
            raise RuntimeError("ansible-rulebook did not listen on 127.0.0.1:%d:\n%s" % (self.port, self.text()[-3000:]))

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def actions(self):
        """The reports of every run of the action playbook: {host, action_started, report_at, event, ...}."""
        text = self.text()
        out = []
        dec = json.JSONDecoder()
        for m in re.finditer(r"^ok: \[(\S+)\] => (?=\{)", text, re.M):
            try:
                obj, dummy = dec.raw_decode(text, m.end())
            except ValueError:
                continue
            msg = obj.get("msg")
            if isinstance(msg, dict) and "kprobes_fleet_disk_full" in msg:
                out.append(msg)
        return out

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Tunnel(object):
    """The VM's only way to the controller: a reverse forward over the lab's SSH connection."""

    def __init__(self, ssh_config, vm, local_port, vm_port=VM_PORT):
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            ["ssh", "-F", ssh_config, "-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
             "-o", "ServerAliveInterval=5", "-R", "127.0.0.1:%d:127.0.0.1:%d" % (vm_port, local_port), vm],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def ssh(ssh_config, vm, script, check=True, timeout=300):
    res = subprocess.run(["ssh", "-F", ssh_config, "-o", "BatchMode=yes", vm, script], capture_output=True,
                         text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError("%s: %r failed (rc=%d): %s" % (vm, script, res.returncode, res.stderr.strip()))
    return res.stdout


# A full tmpfs of 256 KiB; filling it fails once with ENOSPC (before the forwarder runs: not an event).
FILL = ("mkdir -p {m} && (mountpoint -q {m} || mount -t tmpfs -o size=256k kprobes-fleet-eda {m}) && "
        "(dd if=/dev/zero of={m}/fill bs=4k 2>/dev/null; true) && df -k {m} | tail -1").format(m=MOUNT)
# n writes to the full tmpfs: each dd fails with ENOSPC on its first write.
BURST = ("for i in $(seq {n}); do dd if=/dev/zero of=%s/fill bs=4k count=1 oflag=append conv=notrunc "
         "2>/dev/null; done; true") % MOUNT
UNMOUNT = "umount %s 2>/dev/null; rmdir %s 2>/dev/null; true" % (MOUNT, MOUNT)


# Posts made on the VM, as any local user could, to the tunnel's port, one per burst name, back to back:
# prints each HTTP status. argv: sender, token ('' = none), the events' host, burst names. Its events
# carry boot_id "forged" (never a real boot's).
POST = r"""python3 - "$@" <<'EOF'
import json, sys, urllib.error, urllib.request
sender, token, host = sys.argv[1:4]
for seq, burst in enumerate(sys.argv[4:]):
    ev = {"host": host, "probe": "disk_full", "function": "vfs_write", "ret": -28, "errno": "ENOSPC", "pid": 1,
          "comm": "forger", "ts": 1.0, "boot_id": "forged", "seq": seq, "burst": burst}
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    body = json.dumps({"kprobes_fleet": {"host": sender, "count": 1}, "events": [ev]}).encode()
    req = urllib.request.Request("%s", method="POST", headers=headers, data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            print(res.status)
    except urllib.error.HTTPError as e:
        print(e.code)
EOF""" % URL
FORGED_BOOT_ID = "forged"


def token_for(key, host):
    """A host's token as the deploy derives it (the rule of the event sources, spool.py)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "kprobes_fleet_spool", os.path.join(REPO, "extensions/eda/plugins/event_source/spool.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.token_for(key, host)


def forge(ssh_config, vm, sender, token, host, *bursts):
    """POST one event per burst name from the VM through the tunnel; the HTTP statuses the webhook answered."""
    import shlex
    script = "set -- %s\n%s" % (" ".join(shlex.quote(a) for a in (sender, token, host) + bursts), POST)
    return [int(line) for line in ssh(ssh_config, vm, script).split()]


def run_round(ssh_config, vm, rulebook, relay, n, timeout):
    """One burst of ``n`` ENOSPC; waits for the action of that burst. Returns the round's record."""
    before_events = len(relay.events())
    t_start = time.time()
    ssh(ssh_config, vm, BURST.format(n=n))
    t_done = time.time()
    end = t_start + timeout
    while True:
        # not by comm: tracefs names a process that has exited from the kernel's saved_cmdlines cache,
        # "<...>" once its slot is reused (README "Events")
        events = [(at, ev) for at, ev in relay.events()[before_events:] if ev.get("errno") == "ENOSPC"]
        bursts = sorted(set(ev["burst"] for dummy, ev in events))
        actions = [a for a in rulebook.actions() if a["event"].get("burst") in bursts]
        if actions or time.time() > end:
            break
        time.sleep(0.2)
    t_seen = time.time()
    first = actions[0] if actions else None
    return {
        "n": n, "t_start": t_start, "t_done": t_done, "t_seen": t_seen,
        "events": len(events), "seqs": [ev["seq"] for dummy, ev in events], "bursts": bursts,
        "t_first_event": events[0][0] if events else None,
        "actions": len(actions),
        "action_started": float(first["action_started"]) if first else None,
        "report_at": float(first["report_at"]) if first else None,
        "action_event_burst": first["event"].get("burst") if first else None,
        "action_host": first["kprobes_fleet_disk_full"] if first else None,
        "full_filesystems": first.get("full_filesystems") if first else None,
    }


def actions_of(rulebook, bursts):
    """How many actions ran for each of ``bursts`` (a late duplicate shows here)."""
    got = dict((b, 0) for b in bursts)
    for a in rulebook.actions():
        if a["event"].get("burst") in got:
            got[a["event"]["burst"]] += 1
    return got
