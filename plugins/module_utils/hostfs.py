# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading small host files (sysfs, procfs, our JSON state) that may be missing or unreadable."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json
import os
import re


def read_text(path, default=None):
    """The file's text, or ``default`` when it cannot be read."""
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return default


def read_json(path):
    """The JSON object in the file, or None when it is missing, unreadable or not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_sha256(path):
    """The file's sha256 (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def read_int(path):
    """The integer in the file, or None when it is missing or not a number."""
    text = read_text(path)
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        return None


def module_policy(root='/'):
    """What restricts loading modules, read below ``root``; None where a file is unreadable.

    ``modules_disabled``: /proc/sys/kernel/modules_disabled is set (until reboot);
    ``sig_enforce``: the module.sig_enforce parameter is on (unsigned modules rejected);
    ``lockdown``: the active lockdown mode (``none``, ``integrity``, ``confidentiality``)."""
    def text(rel):
        return read_text(os.path.join(root, rel))
    disabled = text('proc/sys/kernel/modules_disabled')
    sig = (text('sys/module/module/parameters/sig_enforce') or '').strip()
    return {
        'modules_disabled': None if disabled is None else disabled.strip() not in ('', '0'),
        'sig_enforce': sig in ('Y', '1') if sig in ('Y', 'N', '1', '0') else None,
        'lockdown': parse_lockdown(text('sys/kernel/security/lockdown')),
    }


def parse_lockdown(text):
    """The active mode of /sys/kernel/security/lockdown (its bracketed word), or None."""
    if text is None:
        return None
    m = re.search(r'\[([^\]]+)\]', text)
    return m.group(1) if m else None
