# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deprecated: the event source kprobes.fleet.probe_events is kprobes.fleet.spool (spool.py, removed in 1.0.0).

ansible-rulebook releases that read extensions/eda/eda_runtime.yml redirect the old name there (with a
deprecation warning) and never run this file; older ones find a source only by its path, and run this one.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import logging
import os

_SPEC = importlib.util.spec_from_file_location(
    'kprobes_fleet_spool', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'spool.py'))
spool = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(spool)


async def main(queue, args):
    logging.getLogger(__name__).warning(
        'kprobes.fleet.probe_events is deprecated and will be removed in 1.0.0: use kprobes.fleet.spool (same arguments)')
    await spool.main(queue, args)
