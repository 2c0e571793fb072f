"""Inventories of hosts that answer nothing, on this machine only.

Every host is 127.0.0.1 on port 1: nothing listens there, so a task that reaches a host fails at
once with UNREACHABLE (connection refused), which is the signal the entry-point tests look for.
Never use another address here: on these machines the TEST-NET ranges (192.0.2.x ...) are real
(the default gateway, the machine itself). tests/unit/test_loopback_only.py enforces it.
"""

LOOPBACK = "127.0.0.1"
CLOSED_PORT = 1


def hosts_yaml(names):
    """The hosts: block of a YAML inventory, one line per name, all on loopback's closed port."""
    return "".join("    %s: {ansible_host: %s, ansible_port: %d}\n" % (name, LOOPBACK, CLOSED_PORT)
                   for name in names)


def inventory_yaml(names, extra=""):
    """A whole YAML inventory of these unreachable hosts (extra: more host lines, already indented)."""
    return "all:\n  hosts:\n" + hosts_yaml(names) + extra
