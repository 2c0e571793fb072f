# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_state: the layout of the working directory (paths existing hosts already have), the options
that name it (host_dir, and the deprecated state_dir / lib_dir), the atomic writer."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import stat

import pytest

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.kprobes.fleet.plugins.module_utils import host_state, names, persist

HOST = '/var/lib/kprobes-fleet'


def test_the_paths_deployed_hosts_have_do_not_change():
    layout = host_state.Layout()
    assert (layout.host_dir, layout.state, layout.lib) == (HOST, HOST + '/state', HOST + '/lib')
    got = dict((what, layout.file('kpf', what)) for what in host_state.STATE_FILES)
    assert got == dict((what, HOST + '/state/kpf' + suffix) for what, suffix in (
        ('kmsg-cursor', '.kmsg-cursor'), ('loaded-ko', '.loaded.ko'), ('loading-ko', '.loading.ko'),
        ('ring-cursor', '.ring-cursor'), ('tracefs', '.tracefs.json'),
        ('tracefs-cursor', '.tracefs-cursor'), ('persist', '.persist.json'),
        ('persist-status', '.persist-status.json'), ('last-collect', '.last-collect'),
        ('events-config', '.events.json'), ('events-status', '.events-status.json'),
        ('events-cursor', '.events-cursor'), ('events-spool', '.events.jsonl'), ('metrics-config', '.metrics.json')))
    assert (host_state.MODULES, host_state.BUILD) == ('modules', 'build')


def test_host_dir_names_every_directory():
    layout = host_state.from_params({'host_dir': '/srv/kpf'})
    assert (layout.host_dir, layout.state, layout.lib) == ('/srv/kpf', '/srv/kpf/state', '/srv/kpf/lib')
    assert host_state.from_params({}).state == HOST + '/state'


def test_the_deprecated_options_each_replace_only_their_own_directory():
    """As before: state_dir and lib_dir were independent options, each with its own default."""
    layout = host_state.from_params({'host_dir': None, 'state_dir': '/srv/a/records'})
    assert (layout.state, layout.lib) == ('/srv/a/records', HOST + '/lib')
    layout = host_state.from_params({'state_dir': HOST + '/state', 'lib_dir': '/srv/b/lib'})
    assert (layout.state, layout.lib) == (HOST + '/state', '/srv/b/lib')


@pytest.mark.parametrize('params, field', [({'host_dir': '/tmp/x'}, 'host_dir'), ({'host_dir': '/'}, 'host_dir'),
                                           ({'host_dir': ''}, 'host_dir'), ({'state_dir': ''}, 'state_dir'),
                                           ({'state_dir': '/var/lib'}, 'state_dir'), ({'lib_dir': 'lib'}, 'lib_dir')])
def test_a_refused_path_names_its_option(params, field):
    with pytest.raises(names.InvalidValue) as e:
        host_state.from_params(params)
    assert str(e.value).startswith(field + ': ')


def validate(units, params):
    kwargs = host_state.module_kwargs({'name': {'type': 'str'}}, units=units)
    return ArgumentSpecValidator(kwargs['argument_spec'], mutually_exclusive=kwargs['mutually_exclusive']).validate(params)


@pytest.mark.parametrize('units', [False, True])
def test_host_dir_is_the_option_and_defaults_to_the_old_place(units):
    result = validate(units, {'name': 'kpf'})
    assert not result.error_messages
    assert result.validated_parameters['host_dir'] == HOST
    assert result.validated_parameters['state_dir'] is None
    assert ('unit_dir' in result.validated_parameters) is units


@pytest.mark.parametrize('old', ['state_dir', 'lib_dir'])
def test_the_old_options_still_work_deprecated_and_not_with_host_dir(old):
    result = validate(True, {old: '/srv/kpf/x'})
    assert not result.error_messages
    assert ["'%s' is deprecated" % old in d['msg'] for d in result._deprecations] == [True]
    assert all(d['version'] == '1.0.0' and d['collection_name'] == 'kprobes.fleet' for d in result._deprecations)
    result = validate(True, {old: '/srv/kpf/x', 'host_dir': '/srv/kpf'})
    assert any('mutually exclusive' in m for m in result.error_messages)


def test_the_program_copy_of_the_units_carries_the_layout():
    """The boot-time restore and the forwarder import host_state from <host_dir>/lib."""
    assert 'host_state' in persist.LIB_MODULES
    files = persist.lib_files(HOST + '/lib')
    assert any(path.endswith('/module_utils/host_state.py') for path in files)


def test_atomic_write_creates_root_only_dirs_and_replaces_whole_files(tmp_path):
    path = str(tmp_path / 'a' / 'b' / 'f')
    host_state.atomic_write(path, b'one')
    host_state.atomic_write(path, b'two', 0o640)
    with open(path, 'rb') as f:
        assert f.read() == b'two'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert os.listdir(os.path.dirname(path)) == ['f']
