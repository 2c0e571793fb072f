"""Tests and tools send traffic to loopback or to the lab's VMs only.

On these machines the documentation ranges are real: TEST-NET-1's .1 is the default gateway and
its .2 the machine itself, so an inventory or a URL naming them makes a test talk to real
hosts. Every address a test, a scenario, a bench or the lab names must be loopback; a URL's host
must be loopback or a name under .invalid (RFC 6761: never resolves), and inventories reach the
lab's VMs through the lab's own inventory (127.0.0.1 port forwards), never a literal address.
"""
import ipaddress
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("tests", "molecule", "bench", "lab", ".ci", "Makefile", "extensions")
SKIPPED = ("bench/results/", "tests/unit/fixtures/", "tests/unit/test_loopback_only.py")  # its samples are bad on purpose
IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^/\s@'\"]*@)?(\[[0-9a-fA-F:.]*\]|[^/\s:'\"<>)\\]*)")
HOST_VAR = re.compile(r"ansible_host\b['\"]?\s*[:=]\s*['\"]?([^\s,}'\"]+)")


def loopback(host):
    host = host.strip("[]").lower()
    if host in ("localhost", "") or host.endswith(".invalid"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def offences(text):
    """(line number, what) for every non-loopback address, URL host or inventory host in text."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue  # licence headers and prose
        for address in IPV4.findall(line):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                continue  # a version number such as 1.2.3.4000
            if not loopback(address):
                found.append((number, address))
        for host in URL.findall(line):
            if "{" in host or "%" in host:
                continue  # a template: the value is checked where it is made
            if not loopback(host):
                found.append((number, host))
        for host in HOST_VAR.findall(line):
            if "{" not in host and "%" not in host and not loopback(host):
                found.append((number, "ansible_host " + host))
    return found


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-z", "--"] + list(SCANNED), cwd=REPO, capture_output=True,
                         check=True).stdout.decode()
    return [p for p in out.split("\0") if p and not p.startswith(SKIPPED)]


# The samples are assembled at run time so that this file itself names no such address.
TEST_NET, PRIVATE, DOC_V6 = ".".join(["192", "0", "2"]), ".".join(["10", "0", "0"]), ":".join(["2001", "db8"])


@pytest.mark.parametrize("text", [
    'inv.write_text("all:\\n  hosts:\\n    ghost1: {ansible_host: %s.1}\\n")' % TEST_NET,
    "    ghost: {ansible_host: %s.5, ansible_port: 1}" % PRIVATE,
    "ansible_host=%s.20" % TEST_NET,
    '"<img src=\\"http://%s.1/x.png\\">"' % TEST_NET,
    "{'url': 'https://eda.example.com/hook'}",
    "{'url': 'http://[%s::1]:5000/x'}" % DOC_V6,
    "cfg = {'host': '%s.7'}" % TEST_NET,
])
def test_the_scanner_finds_addresses_that_are_not_loopback(text):
    assert offences(text), text


@pytest.mark.parametrize("text", [
    "    ghost1: {ansible_host: 127.0.0.1, ansible_port: 1}",
    "{'url': 'http://[::1]:5000/x'}",
    "{'url': 'http://localhost:5000/'}",
    "{'url': 'https://eda.example.invalid/hook'}",
    "# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)",
    "ansible_host: \"{{ lab_ip }}\"",
    "version 6.12.117",
])
def test_the_scanner_passes_loopback(text):
    assert offences(text) == [], text


def test_every_test_inventory_and_url_names_loopback_only():
    bad = []
    for path in tracked_files():
        try:
            with open(os.path.join(REPO, path), encoding="utf-8") as handle:
                text = handle.read()
        except (UnicodeDecodeError, IsADirectoryError):
            continue  # binary: images, compressed fixtures
        bad.extend("%s:%d: %s" % (path, number, what) for number, what in offences(text))
    assert bad == [], "names an address other than loopback (use tests/unit/unreachable.py):\n" + "\n".join(bad)
