# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading small kernel files (sysfs, procfs) that may be missing or unreadable."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re


def read_text(path, default=None):
    """The file's text, or ``default`` when it cannot be read."""
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return default


def read_int(path):
    """The integer in the file, or None when it is missing or not a number."""
    text = read_text(path)
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        return None


def parse_lockdown(text):
    """The active mode of /sys/kernel/security/lockdown (its bracketed word), or None."""
    if text is None:
        return None
    m = re.search(r'\[([^\]]+)\]', text)
    return m.group(1) if m else None
