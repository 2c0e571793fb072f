"""Filter kprobes.fleet.backend_choice: every branch, and the role's __kprobes_fleet_choice calling it."""
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.kprobes.fleet.plugins.filter.backend_choice import FilterModule, backend_choice

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NO_KPROBES = 'kprobes or kretprobes are not configured in this kernel'
DISABLED = 'module loading is disabled (kernel.modules_disabled=1)'
LOCKDOWN = 'lockdown=integrity refuses unsigned modules'
SIG = 'module.sig_enforce=1 refuses unsigned modules'
HINT = ' (signed modules need a key the kernel trusts; kprobes_fleet_backend=auto or tracefs needs none)'
UNSIGNED_OK = 'auto: an unsigned module loads here (no lockdown, no signature enforcement)'
SIGNED_OK = 'auto: the module is signed with kprobes_fleet_signing_cert (its trust is checked before loading)'
NO_TRACEFS = 'tracefs is not mounted'


def kernel(blockers=(), tracefs=True):
    """Kernel facts with the named blockers: kprobes, kretprobes, disabled, lockdown, sig."""
    facts = {'kprobes': 'kprobes' not in blockers, 'kretprobes': 'kretprobes' not in blockers,
             'modules_disabled': 'disabled' in blockers,
             'lockdown': 'integrity' if 'lockdown' in blockers else 'none', 'sig_enforce': 'sig' in blockers,
             'tracefs': {'usable': tracefs, 'reason': None if tracefs else NO_TRACEFS}}
    return facts


# (blockers, signed) -> the module blockers as the reasons list them
BLOCKERS = [
    ((), False, []),
    (('kprobes',), False, [NO_KPROBES]),
    (('kretprobes',), False, [NO_KPROBES]),
    (('kprobes', 'kretprobes'), False, [NO_KPROBES]),
    (('disabled',), False, [DISABLED]),
    (('lockdown',), False, [LOCKDOWN]),
    (('sig',), False, [SIG]),
    (('lockdown', 'sig'), False, [LOCKDOWN, SIG]),
    (('lockdown', 'sig'), True, []),
    (('kprobes', 'disabled', 'lockdown', 'sig'), False, [NO_KPROBES, DISABLED, LOCKDOWN, SIG]),
    (('kprobes', 'disabled', 'lockdown', 'sig'), True, [NO_KPROBES, DISABLED]),
]
HARD = (NO_KPROBES, DISABLED)


@pytest.mark.parametrize('blockers,signed,listed', BLOCKERS)
@pytest.mark.parametrize('tracefs', [True, False])
def test_module(blockers, signed, listed, tracefs):
    # any blocker stops the host before a build: the kernel (and probe_module) would refuse the load
    got = backend_choice(kernel(blockers, tracefs), 'module', signed=signed)
    if listed:
        assert got == ['none', 'kprobes_fleet_backend=module cannot run here: ' + ', '.join(listed) + HINT]
    else:
        assert got == ['module', 'kprobes_fleet_backend=module']


@pytest.mark.parametrize('blockers,signed,listed', BLOCKERS)
@pytest.mark.parametrize('tracefs', [True, False])
def test_tracefs(blockers, signed, listed, tracefs):
    got = backend_choice(kernel(blockers, tracefs), 'tracefs', signed=signed)
    if tracefs:
        assert got == ['tracefs', 'kprobes_fleet_backend=tracefs']
    else:
        assert got == ['none', 'kprobes_fleet_backend=tracefs cannot run here: ' + NO_TRACEFS]


@pytest.mark.parametrize('blockers,signed,listed', BLOCKERS)
@pytest.mark.parametrize('tracefs', [True, False])
def test_auto(blockers, signed, listed, tracefs):
    got = backend_choice(kernel(blockers, tracefs), 'auto', signed=signed)
    if not listed:
        assert got == ['module', SIGNED_OK if signed else UNSIGNED_OK]
    elif tracefs:
        assert got == ['tracefs', 'auto: ' + ', '.join(listed) + '; tracefs needs no module']
    else:
        assert got == ['none', 'neither backend can run here: module: ' + ', '.join(listed) + '; tracefs: ' + NO_TRACEFS]


def test_what_kernel_facts_leave_open():
    # unknown (null) kprobes, lockdown or sig_enforce block nothing, as in the Jinja this replaced
    facts = {'kprobes': None, 'kretprobes': None, 'modules_disabled': None, 'lockdown': None, 'sig_enforce': None,
             'tracefs': {'usable': True, 'reason': None}}
    assert backend_choice(facts, 'auto', signed=False) == ['module', UNSIGNED_OK]
    facts['lockdown'] = 'confidentiality'
    assert backend_choice(facts, 'auto') == ['tracefs', 'auto: lockdown=confidentiality refuses unsigned modules; '
                                                        'tracefs needs no module']
    del facts['tracefs']  # older facts without it
    assert backend_choice(facts, 'tracefs') == ['none', 'kprobes_fleet_backend=tracefs cannot run here: '
                                                        'kernel_facts reported no tracefs']


def test_filter_is_registered():
    assert FilterModule().filters() == {'backend_choice': backend_choice}


# -- the role's vars: __kprobes_fleet_choice calls the filter with the checked values -----------

PLAY = """\
- hosts: all
  gather_facts: false
  vars_files:
    - %(vars)s
  tasks:
    - name: Kernel facts as kernel_facts sets them
      ansible.builtin.set_fact:
        kprobes_fleet_kernel: "{{ kernel }}"
        cacheable: true
    - name: The choice
      ansible.builtin.copy:
        content: "{{ __kprobes_fleet_choice | to_json }}"
        dest: "%(out)s/{{ inventory_hostname }}.json"
        mode: "0600"
"""

HOSTS = {
    'signed': (kernel(('lockdown',)), 'auto', '/c.pem', ['module', SIGNED_OK]),
    'unsigned': (kernel(('lockdown',)), 'auto', '', ['tracefs', 'auto: ' + LOCKDOWN + '; tracefs needs no module']),
    'forced': (kernel(('sig',)), 'module', '/c.pem', ['module', 'kprobes_fleet_backend=module']),
    'refused': (kernel(('sig',)), 'module', '', ['none', 'kprobes_fleet_backend=module cannot run here: '
                                                 + SIG + HINT]),
    'traced': (kernel((), False), 'tracefs', '', ['none', 'kprobes_fleet_backend=tracefs cannot run here: '
                                                  + NO_TRACEFS]),
    'capturing': (kernel(), 'tracefs', '', ['none', 'kprobes_fleet_backend=tracefs cannot run here: probe paths captures '
                                            'arguments (args), which the tracefs backend does not do; use '
                                            'kprobes_fleet_backend=module or auto']),
}


def test_role_vars_call_the_filter(tmp_path):
    hosts = {}
    for name, (facts, wanted, cert, dummy) in HOSTS.items():
        values = {'kprobes_fleet_backend': wanted, 'kprobes_fleet_signing_cert': cert,
                  'kprobes_fleet_probes': ARGS[:2] if name == 'capturing' else []}
        hosts[name] = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'kernel': facts,
                       '__kprobes_fleet_valid': {'values': values, 'errors': []}}
    (tmp_path / 'inventory.json').write_text(json.dumps({'all': {'hosts': hosts}}))
    (tmp_path / 'play.yml').write_text(PLAY % {'vars': os.path.join(REPO, 'roles/probe_deploy/vars/main.yml'),
                                               'out': tmp_path})
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1', HOME=str(tmp_path))
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(tmp_path / 'inventory.json'),
            str(tmp_path / 'play.yml')]
    res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    for name, (dummy, dummy, dummy, expected) in HOSTS.items():
        assert json.loads((tmp_path / (name + '.json')).read_text()) == expected, name


# -- probes that capture arguments (#22): the tracefs backend does not ------------------------

ARGS = [{'name': 'plain', 'args': [], 'functions': [{'function': 'f', 'args': []}]},
        {'name': 'paths', 'args': [{'name': 'path', 'arg': 2, 'type': 'ustring'}], 'functions': []},
        {'name': 'renamed', 'args': [], 'functions': [{'function': 'g', 'args': [{'name': 'n', 'arg': 1, 'type': 'int'}]}]}]


def test_auto_picks_the_module_for_arguments_and_says_so():
    backend, reason = backend_choice(kernel(), 'auto', probes=ARGS)
    assert backend == 'module'
    assert reason == UNSIGNED_OK + '; the module does what tracefs cannot (probes paths, renamed capture arguments ' \
                                   '(args), which the tracefs backend does not do)'


def test_latency_needs_the_module_too():
    probes = ARGS[1:2] + [{'name': 'slow', 'latency': True, 'slower_than': 10 ** 8, 'args': [], 'functions': []},
                          {'name': 'both', 'latency': True, 'args': [{'name': 'a'}], 'functions': []}]
    backend, reason = backend_choice(kernel(), 'tracefs', probes=probes)
    assert backend == 'none' and reason == (
        'kprobes_fleet_backend=tracefs cannot run here: probe paths captures arguments (args); probe slow times its '
        'calls (latency); probe both captures arguments (args) and times its calls (latency), which the tracefs '
        'backend does not do; use kprobes_fleet_backend=module or auto')


def test_no_module_and_arguments_means_neither_backend():
    backend, reason = backend_choice(kernel(['lockdown']), 'auto', probes=ARGS[:2])
    assert backend == 'none'
    assert reason == ('neither backend can run here: module: %s; tracefs: probe paths captures arguments (args), '
                      'which the tracefs backend does not do' % LOCKDOWN)


def test_forced_tracefs_refuses_arguments_in_one_sentence():
    backend, reason = backend_choice(kernel(), 'tracefs', probes=ARGS)
    assert backend == 'none'
    assert reason.startswith('kprobes_fleet_backend=tracefs cannot run here: probes paths, renamed capture')
    assert reason.endswith('; use kprobes_fleet_backend=module or auto')


def test_probes_without_arguments_choose_as_before():
    assert backend_choice(kernel(['lockdown']), 'auto', probes=ARGS[:1])[0] == 'tracefs'
    assert backend_choice(kernel(), 'tracefs', probes=ARGS[:1])[0] == 'tracefs'
