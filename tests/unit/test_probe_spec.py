"""Unit tests for plugins/module_utils/probe_spec.py."""
import copy
import re

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec as ps


def probe(**kw):
    base = {'name': 'p', 'function': 'vfs_write'}
    base.update(kw)
    return base


NO_FILTER = dict((k, {} if k in ('args', 'args_not') else []) for k in ps.FILTER_KEYS)
EXEMPT = ['systemd-journal', 'rsyslogd', 'syslog-ng', 'klogd']


def error_of(probes):
    with pytest.raises(ps.ProbeSpecError) as info:
        ps.normalize(probes)
    return str(info.value)


# --- presets and shorthand forms -------------------------------------------------------

def test_default_presets():
    expected = [
        {'name': 'open_failures', 'functions': [{'function': 'do_filp_open', 'returns': 'errptr', 'args': []},
                                                {'function': 'do_file_open', 'returns': 'errptr', 'args': []},
                                                {'function': 'do_sys_openat2', 'returns': 'int', 'args': []}],
         'returns': 'errptr', 'args': [], 'latency': False, 'slower_than': None,
         'filter': NO_FILTER,
         'report': 'negative', 'errnos': [], 'maxactive': 256, 'log': True,
         'log_burst': 500, 'log_interval': 5, 'log_exempt': EXEMPT},
        {'name': 'disk_full', 'functions': [{'function': 'vfs_write', 'returns': 'long', 'args': []},
                                            {'function': 'ksys_write', 'returns': 'long', 'args': []}],
         'returns': 'long', 'args': [], 'latency': False, 'slower_than': None,
         'filter': NO_FILTER,
         'report': 'errno', 'errnos': ['EDQUOT', 'ENOSPC'], 'maxactive': 1024, 'log': True,
         'log_burst': 100, 'log_interval': 5, 'log_exempt': EXEMPT},
    ]
    assert ps.normalize(None) == expected
    assert ps.normalize([]) == expected
    assert ps.normalize(['open_failures', 'disk_full']) == expected


def test_preset_by_name_mixed_with_custom():
    result = ps.normalize(['disk_full', probe(name='mine')])
    assert [p['name'] for p in result] == ['disk_full', 'mine']


def test_presets_are_not_mutated():
    before = copy.deepcopy(ps.PRESETS)
    result = ps.normalize(None)
    result[1]['errnos'].append('EIO')
    result[0]['functions'].append({'function': 'x', 'returns': 'long', 'args': []})
    result[0]['functions'][0]['returns'] = 'int'
    assert ps.PRESETS == before
    assert ps.normalize(None)[1]['errnos'] == ['EDQUOT', 'ENOSPC']


def test_defaults_and_string_function():
    assert ps.normalize([probe()]) == [{
        'name': 'p', 'functions': [{'function': 'vfs_write', 'returns': 'long', 'args': []}], 'returns': 'long',
        'args': [], 'latency': False, 'slower_than': None,
        'filter': NO_FILTER,
        'report': 'negative',
        'errnos': [], 'maxactive': 64, 'log': True, 'log_burst': 100, 'log_interval': 5, 'log_exempt': EXEMPT}]


@pytest.mark.parametrize('report', [
    ['ENOSPC', 'EDQUOT'], {'errno': ['EDQUOT', 'ENOSPC', 'ENOSPC']}, ('ENOSPC', 'EDQUOT'),
    {'errno': ['ENOSPC', 'EDQUOT']},
])
def test_report_errno_forms(report):
    result = ps.normalize([probe(report=report)])[0]
    assert result['report'] == 'errno'
    assert result['errnos'] == ['EDQUOT', 'ENOSPC']


@pytest.mark.parametrize('word', ['negative', 'nonzero', 'any'])
def test_report_words(word):
    result = ps.normalize([probe(report=word)])[0]
    assert (result['report'], result['errnos']) == (word, [])


def test_errno_aliases_are_canonical():
    result = ps.normalize([probe(report=['EWOULDBLOCK', 'EAGAIN', 'ENOTSUP', 'EDEADLOCK'])])
    assert result[0]['errnos'] == ['EAGAIN', 'EDEADLK', 'EOPNOTSUPP']


def test_all_fields():
    raw = probe(name='fsync_err', function=['vfs_fsync_range', 'do_fsync'], returns='int',
                report=['EIO'], maxactive=4096, log=False, log_burst=1, log_interval=3600)
    assert ps.normalize([raw]) == [{
        'name': 'fsync_err', 'functions': [{'function': 'vfs_fsync_range', 'returns': 'int', 'args': []},
                                           {'function': 'do_fsync', 'returns': 'int', 'args': []}],
        'returns': 'int', 'args': [], 'latency': False, 'slower_than': None,
        'filter': NO_FILTER,
        'report': 'errno', 'errnos': ['EIO'], 'maxactive': 4096, 'log': False,
        'log_burst': 1, 'log_interval': 3600, 'log_exempt': EXEMPT}]


def test_normalize_is_idempotent():
    once = ps.normalize(None) + ps.normalize([probe(name='x', report='any')])
    assert ps.normalize(once) == once


def test_input_is_not_modified():
    raw = [probe(report={'errno': ['ENOSPC']})]
    before = copy.deepcopy(raw)
    ps.normalize(raw)
    assert raw == before


def test_errno_table():
    assert ps.ERRNO['EPERM'] == 1
    assert ps.ERRNO['ENOSPC'] == 28
    assert ps.ERRNO['EDQUOT'] == 122
    assert ps.ERRNO['EHWPOISON'] == 133
    assert ps.ERRNO['EWOULDBLOCK'] == ps.ERRNO['EAGAIN']
    assert ps.ERRNO['EDEADLOCK'] == ps.ERRNO['EDEADLK']
    assert ps.ERRNO['ENOTSUP'] == ps.ERRNO['EOPNOTSUPP']
    assert set(range(1, 134)) - set(ps.ERRNO.values()) == {41, 58}  # unused in asm-generic
    assert ps.ERRNO_NAMES[11] == 'EAGAIN'
    assert ps.ERRNO_NAMES[95] == 'EOPNOTSUPP'
    assert ps.ERRNO_NAMES[512] == 'ERESTARTSYS'


# --- bad cases: each names the probe and the field -------------------------------------

BAD = [
    # (probes, expected substrings)
    ([probe(name='disk full')], ["probe 'disk full' (#1)", "field 'name'", 'must match']),
    ([probe(name="it's")], ["field 'name'"]),
    ([probe(name='Upper')], ["field 'name'"]),
    ([probe(name='a' * 33)], ["field 'name'"]),
    ([probe(name='ok\n')], ["field 'name'"]),
    ([probe(name=7)], ['probe #1', "field 'name'", 'must be a string']),
    ([{'function': 'vfs_write'}], ['probe #1', "field 'name'", 'required']),
    ([probe(name='a'), probe(name='a')], ["probe 'a' (#2)", "field 'name'", 'duplicate', '#1']),
    (['disk_full', probe(name='disk_full')], ["(#2)", "field 'name'", 'duplicate']),
    ([probe(report=['ENOPE'])], ["probe 'p' (#1)", "field 'report'", "'ENOPE'"]),
    ([probe(report={'errno': ['enospc']})], ["field 'report'", 'unknown errno']),
    ([probe(report=[])], ["field 'report'", 'must not be empty']),
    ([probe(report={'errno': []})], ["field 'report'", 'must not be empty']),
    ([probe(report={'errno': ['ENOSPC'], 'x': 1})], ["field 'report'", 'exactly one key']),
    ([probe(report='errno')], ["field 'report'", 'needs a list']),
    ([probe(report='ENOSPC')], ["field 'report'", '[ENOSPC]']),
    ([probe(report='sometimes')], ["field 'report'", "'sometimes'"]),
    ([probe(report=5)], ["field 'report'"]),
    ([probe(report=None)], ["field 'report'"]),
    ([probe(report=[None])], ["field 'report'", 'unknown errno']),
    ([probe(errnos=['ENOSPC'], report='any')], ["field 'errnos'"]),
    ([probe(errnos=[])], ["field 'errnos'", 'must not be empty']),
    ([probe(returns='ssize_t')], ["field 'returns'", "'ssize_t'"]),
    ([probe(returns=None)], ["field 'returns'"]),
    ([probe(maxactive=-1)], ["field 'maxactive'", 'between 1 and 4096']),
    ([probe(maxactive=0)], ["field 'maxactive'", 'between 1 and 4096']),
    ([probe(maxactive=4097)], ["field 'maxactive'", 'between 1 and 4096', "kernel's own limit"]),
    ([probe(maxactive=65536)], ["field 'maxactive'", 'between 1 and 4096']),
    ([probe(maxactive='ten')], ["field 'maxactive'", "must be an integer, got string 'ten'"]),
    ([probe(maxactive=True)], ["field 'maxactive'", 'must be an integer, got boolean']),
    ([probe(maxactive=10.0)], ["field 'maxactive'", 'must be an integer']),
    ([probe(function='vfs_write;')], ["field 'function'", 'kernel symbol']),
    ([probe(function='vfs_write\n')], ["field 'function'"]),
    ([probe(function='a\nb')], ["field 'function'"]),
    ([probe(function='ext4_foo.isra.0')], ["field 'function'", 'base name']),
    ([probe(function=['ok', 'bad.part.1'])], ["field 'function'"]),
    ([probe(function='9abc')], ["field 'function'"]),
    ([probe(function='a' * 129)], ["field 'function'"]),
    ([probe(function='')], ["field 'function'"]),
    ([probe(function=[])], ["field 'function'", '1 to 8']),
    ([probe(function=['f%d' % i for i in range(9)])], ["field 'function'", '1 to 8']),
    ([probe(function=['a', 'a'])], ["field 'function'", 'twice']),
    ([probe(function=[1])], ["field 'function'", 'must be symbol names or {function, returns}']),
    ([probe(function={'a': 1})], ["field 'function'"]),
    ([probe(function=None)], ["field 'function'"]),
    ([{'name': 'p'}], ["field 'function'", 'required']),
    ([probe(functions=['x'])], ["field 'function'", 'not both']),
    ([probe(colour='red')], ["probe 'p' (#1)", "field 'colour'", 'unknown key']),
    ([probe(Function='x')], ["field 'Function'", 'unknown key']),
    ([probe(log='maybe')], ["field 'log'", "must be a boolean (true/false), got string 'maybe'"]),
    ([probe(log=2)], ["field 'log'", 'boolean', 'got integer']),
    ([probe(log=None)], ["field 'log'", 'boolean', 'got null']),
    ([probe(report={})], ["field 'report'", 'got an empty mapping']),
    ([probe(name=5)], ["field 'name'", 'must be a string, got integer']),
    ([probe(maxactive=[1])], ["field 'maxactive'", 'got list']),
    ([probe(maxactive={'a': 1})], ["field 'maxactive'", 'got mapping']),
    ([probe(log_burst=0)], ["field 'log_burst'", 'between 1 and 100000']),
    ([probe(log_burst=100001)], ["field 'log_burst'"]),
    ([probe(log_burst=True)], ["field 'log_burst'", 'got boolean']),
    ([probe(log_interval=0)], ["field 'log_interval'", 'between 1 and 3600']),
    ([probe(log_interval=3601)], ["field 'log_interval'"]),
    ([probe(log_interval='5s')], ["field 'log_interval'"]),
    ([probe(), 42], ['probe #2', 'must be a mapping']),
    ([None], ['probe #1', 'must be a mapping']),
    ([['vfs_write']], ['probe #1', 'must be a mapping']),
    (['no_such_preset'], ['probe #1', "'no_such_preset'", 'preset']),
    ({'name': 'p'}, ['probes', 'must be a list']),
    ('disk_full', ['probes', 'must be a list']),
]


@pytest.mark.parametrize('probes,expected', BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_spec(probes, expected):
    message = error_of(probes)
    for part in expected:
        assert part in message, message


def test_error_message_example():
    message = error_of([probe(name='ok'), probe(name='disk full')])
    assert message == ("probe 'disk full' (#2): field 'name': must match "
                       "^[a-z][a-z0-9_]{0,31}$ (a C identifier in lower case)")


def test_error_is_value_error():
    assert issubclass(ps.ProbeSpecError, ValueError)


# --- module name -----------------------------------------------------------------------

@pytest.mark.parametrize('name', ['kprobes_fleet', 'k', 'a' * 56, 'kpf_2'])
def test_module_name_ok(name):
    assert ps.validate_module_name(name) == name


@pytest.mark.parametrize('name', ['', 'Kprobes', 'kprobes-fleet', '1abc', 'a' * 57,
                                  'kp\n', 'a b', None, 5, True])
def test_module_name_bad(name):
    with pytest.raises(ps.ProbeSpecError) as info:
        ps.validate_module_name(name)
    assert 'module_name' in str(info.value)


# --- resolve ---------------------------------------------------------------------------

def test_resolve_adds_function():
    normalized = ps.normalize([probe(name='a', function=['x1', 'x2']), probe(name='b')])
    resolved = ps.resolve(normalized, {'a': 'x2', 'b': 'vfs_write', 'other': 'zz'})
    assert [p['function'] for p in resolved] == ['x2', 'vfs_write']
    assert 'function' not in normalized[0]
    for before, after in zip(normalized, resolved):
        assert {k: v for k, v in after.items() if k != 'function'} == before


@pytest.mark.parametrize('functions', [{}, None, {'a': None}, {'a': ''}])
def test_resolve_missing_symbol(functions):
    normalized = ps.normalize([probe(name='a', function=['x1', 'x2'])])
    with pytest.raises(ps.ProbeSpecError) as info:
        ps.resolve(normalized, functions)
    assert "probe 'a' (#1): field 'function'" in str(info.value)
    assert 'x1, x2' in str(info.value)


def test_resolve_revalidates_its_input():
    normalized = ps.normalize([probe(name='a')])
    normalized[0]['name'] = 'a"); evil("'
    with pytest.raises(ps.ProbeSpecError) as info:
        ps.resolve(normalized, {normalized[0]['name']: 'vfs_write'})
    assert "field 'name'" in str(info.value)
    assert ps.resolve([], {}) == []


def test_resolve_rejects_symbol_outside_candidates():
    normalized = ps.normalize([probe(name='a', function='x1')])
    with pytest.raises(ps.ProbeSpecError) as info:
        ps.resolve(normalized, {'a': 'x1"); evil("'})
    assert "field 'function'" in str(info.value)


# --- hashes ----------------------------------------------------------------------------

def resolved_presets():
    normalized = ps.normalize(None)
    return ps.resolve(normalized, dict((p['name'], ps.candidate_symbols(p)[0]) for p in normalized))


TEMPLATE_SHA = 'ab' * 32


def test_spec_hash_shape_and_stability():
    h = ps.spec_hash('kprobes_fleet', resolved_presets(), TEMPLATE_SHA)
    assert len(h) == 16 and int(h, 16) >= 0
    assert h == ps.spec_hash('kprobes_fleet', resolved_presets(), TEMPLATE_SHA)
    # key order inside the probe dicts does not matter (canonical JSON)
    shuffled = [dict(reversed(list(p.items()))) for p in resolved_presets()]
    assert h == ps.spec_hash('kprobes_fleet', shuffled, TEMPLATE_SHA)


def test_spec_hash_definition():
    import hashlib
    import json
    probes = resolved_presets()
    text = json.dumps({'module': 'm', 'probes': probes, 'template': 't'},
                      sort_keys=True, separators=(',', ':'))
    assert ps.spec_hash('m', probes, 't') == hashlib.sha256(text.encode()).hexdigest()[:16]
    text = json.dumps({'arch': 'x86_64', 'release': 'r', 'version': 'v', 'spec_hash': 'h'},
                      sort_keys=True, separators=(',', ':'))
    assert ps.build_key('x86_64', 'r', 'v', 'h') == hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize('field,value', [
    ('function', 'do_sys_openat2'), ('maxactive', 257), ('returns', 'long'),
    ('report', 'any'), ('errnos', ['ENOENT']), ('log', False), ('log_burst', 7),
    ('log_interval', 9), ('name', 'other'),
])
def test_spec_hash_sensitive_to_each_probe_field(field, value):
    base = resolved_presets()
    changed = copy.deepcopy(base)
    changed[0][field] = value
    assert ps.spec_hash('m', base, 't') != ps.spec_hash('m', changed, 't')


def test_spec_hash_sensitive_to_module_template_and_order():
    base = resolved_presets()
    h = ps.spec_hash('m', base, 't')
    assert h != ps.spec_hash('n', base, 't')
    assert h != ps.spec_hash('m', base, 'u')
    assert h != ps.spec_hash('m', list(reversed(base)), 't')


def test_build_key_sensitive_to_each_input():
    args = ('x86_64', '6.1.0-56-amd64', '#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2', 'h')
    key = ps.build_key(*args)
    assert len(key) == 16
    assert key == ps.build_key(*args)
    for i in range(4):
        changed = list(args)
        changed[i] = changed[i] + 'x'
        assert ps.build_key(*changed) != key


def test_one_rule_for_booleans_and_integers():
    """What ``-e var=value`` gives (strings) reads like YAML would, in every field."""
    got = ps.normalize([probe(log='yes', maxactive='10', log_burst=' 7 ', log_interval='5'),
                        probe(name='q', log='false'), probe(name='r', log=0)])
    assert [(p['log'], p['maxactive'], p['log_burst'], p['log_interval']) for p in got] == [
        (True, 10, 7, 5), (False, 64, 100, 5), (False, 64, 100, 5)]


def test_at_most_32_probes():
    ok = [probe(name='p%d' % i, maxactive=1) for i in range(ps.MAX_PROBES)]
    assert len(ps.normalize(ok)) == 32
    with pytest.raises(ps.ProbeSpecError, match='at most 32 probes'):
        ps.normalize(ok + [probe(name='one_more', maxactive=1)])


def test_maxactive_total_is_capped():
    two = [probe(name='a', maxactive=4096), probe(name='b', maxactive=4096)]
    assert sum(p['maxactive'] for p in ps.normalize(two)) == ps.MAX_TOTAL_MAXACTIVE
    with pytest.raises(ps.ProbeSpecError, match=r'adds up to 8193, at most 8192.*6\.7'):
        ps.normalize(two + [probe(name='c', maxactive=1)])


def test_type_names_are_what_a_user_writes_also_for_tagged_values():
    from ansible.template import trust_as_template  # 2.19 wraps template results in tagged types
    value = trust_as_template('x')
    assert type(value).__name__ != 'str'
    with pytest.raises(ps.ProbeSpecError) as exc:
        ps.normalize([probe(maxactive=value)])
    assert "got string 'x'" in str(exc.value) and 'Tagged' not in str(exc.value)


# --- a return type per candidate -------------------------------------------------------

def test_candidate_mapping_has_its_own_return_type():
    got = ps.normalize([probe(function=['do_filp_open', {'function': 'do_sys_openat2', 'returns': 'int', 'args': []},
                                        {'function': 'do_sys_open'}], returns='errptr')])[0]
    assert got['functions'] == [{'function': 'do_filp_open', 'returns': 'errptr', 'args': []},
                                {'function': 'do_sys_openat2', 'returns': 'int', 'args': []},
                                {'function': 'do_sys_open', 'returns': 'errptr', 'args': []}]
    assert got['returns'] == 'errptr'
    assert ps.candidate_symbols(got) == ['do_filp_open', 'do_sys_openat2', 'do_sys_open']


def test_one_candidate_mapping_alone():
    got = ps.normalize([probe(function={'function': 'vfs_fsync_range', 'returns': 'int', 'args': []})])[0]
    assert got['functions'] == [{'function': 'vfs_fsync_range', 'returns': 'int', 'args': []}]
    assert got['returns'] == 'long'


def test_plain_string_candidates_keep_the_probe_type():
    for returns in ps.RETURNS:
        got = ps.normalize([probe(function=['a', 'b'], returns=returns)])[0]
        assert [c['returns'] for c in got['functions']] == [returns, returns]


def test_normalized_candidates_keep_their_type_whatever_the_probe_type():
    once = ps.normalize([probe(function=['a', {'function': 'b', 'returns': 'int', 'args': []}], returns='errptr')])
    assert ps.normalize(once) == once
    changed = copy.deepcopy(once)
    changed[0]['returns'] = 'long'  # a normalized candidate carries its type: nothing else moves
    assert ps.normalize(changed)[0]['functions'] == once[0]['functions']


@pytest.mark.parametrize('chosen,returns', [('a', 'errptr'), ('b', 'int'), ('c', 'long')])
def test_resolve_takes_the_chosen_candidates_type(chosen, returns):
    candidates = ['a', {'function': 'b', 'returns': 'int', 'args': []}, {'function': 'c', 'returns': 'long', 'args': []}]
    normalized = ps.normalize([probe(function=candidates, returns='errptr')])
    resolved = ps.resolve(normalized, {'p': chosen})[0]
    assert (resolved['function'], resolved['returns']) == (chosen, returns)
    # what settings.check_plan and the tracefs backend do with a resolved list: same result again
    assert ps.check_resolved([resolved]) == [resolved]


def resolved_presets():
    return ps.resolve(ps.normalize(None), {'open_failures': 'do_file_open', 'disk_full': 'vfs_write'})


def test_check_resolved_returns_what_resolve_made():
    resolved = resolved_presets()
    assert ps.check_resolved(copy.deepcopy(resolved)) == resolved
    assert ps.check_resolved([]) == []
    # a candidate's type follows the chosen symbol, also when checked again
    assert [p['returns'] for p in ps.check_resolved(resolved)] == ['errptr', 'long']


@pytest.mark.parametrize('probes,words', [
    (None, 'probes: must be a list of resolved probes'),
    ({'name': 'p'}, 'probes: must be a list of resolved probes'),
    ([{'name': 'p', 'function': 'vfs_write'}, 'open_failures'], 'probes: item #2 must be a mapping'),
    ([{'name': 'p', 'functions': ['vfs_write']}], "field 'function': none of the candidates"),
    ([{'name': 'p', 'functions': ['vfs_write'], 'function': 'vfs_read'}], "resolved symbol 'vfs_read' is not one"),
    ([{'name': ['p'], 'functions': ['vfs_write'], 'function': 'vfs_write'}], "field 'name': must be a string"),
    ([{'name': 'p', 'functions': ['vfs_write'], 'function': 'vfs_write', 'x': 1}], "field 'x': unknown key"),
])
def test_check_resolved_refuses(probes, words):
    with pytest.raises(ps.ProbeSpecError) as info:
        ps.check_resolved(probes)
    assert words in str(info.value)


def test_spec_hash_follows_the_candidate_types():
    def hashed(candidates, chosen):
        normalized = ps.normalize([probe(function=candidates, returns='errptr')])
        return ps.spec_hash('m', ps.resolve(normalized, {'p': chosen}), 't')

    base = hashed(['a', {'function': 'b', 'returns': 'int', 'args': []}], 'b')
    assert base == hashed(['a', {'function': 'b', 'returns': 'int', 'args': []}], 'b')
    assert base != hashed(['a', {'function': 'b', 'returns': 'long', 'args': []}], 'b')  # the probed one's type
    assert base != hashed([{'function': 'a', 'returns': 'long', 'args': []}, {'function': 'b', 'returns': 'int', 'args': []}], 'b')
    assert base != hashed(['a', 'b'], 'b')


BAD_CANDIDATES = [
    ([{'function': 'a', 'type': 'int'}], ["field 'function'", "candidate 'a'", "unknown key 'type'"]),
    ([{'returns': 'int'}], ["field 'function'", 'has no function']),
    ([{'function': 'a', 'returns': 'ssize_t'}], ["field 'function'", "candidate 'a'", 'returns',
                                                 "'ssize_t'"]),
    ([{'function': 'a', 'returns': None}], ["candidate 'a'", 'returns', 'got null']),
    ([{'function': 5}], ["field 'function'", 'must be symbol names']),
    ([{'function': 'bad.isra.0'}], ["field 'function'", 'base name']),
    (['a', {'function': 'a', 'returns': 'int', 'args': []}], ["field 'function'", "'a' is listed twice"]),
    ([{'function': ['a', 'b']}], ["field 'function'", 'must be symbol names']),
]


@pytest.mark.parametrize('function,expected', BAD_CANDIDATES, ids=[str(i) for i in range(len(BAD_CANDIDATES))])
def test_bad_candidate(function, expected):
    message = error_of([probe(function=function)])
    for part in expected:
        assert part in message, message


# -- args (#22) ----------------------------------------------------------------------------------

def test_args_are_normalized_and_a_candidate_may_give_its_own():
    got = ps.normalize([probe(function=['vfs_write', {'function': 'ksys_write', 'args': [
        {'name': 'fd', 'arg': 1, 'type': 'int'}]}], args=[{'name': 'file', 'arg': 1, 'type': 'file'}])])[0]
    assert got['args'] == [{'name': 'file', 'arg': 1, 'type': 'file'}]
    assert [c['args'] for c in got['functions']] == [[{'name': 'file', 'arg': 1, 'type': 'file'}],
                                                     [{'name': 'fd', 'arg': 1, 'type': 'int'}]]
    resolved = ps.resolve([got], {'p': 'ksys_write'})[0]
    assert resolved['args'] == [{'name': 'fd', 'arg': 1, 'type': 'int'}]
    assert ps.normalize([got]) == [got]
    assert ps.module_only([got]) == [('p', 'captures arguments (args)')] and ps.module_only(ps.normalize(None)) == []


def test_args_change_the_spec_hash():
    plain = ps.resolve(ps.normalize([probe()]), {'p': 'vfs_write'})
    with_args = ps.resolve(ps.normalize([probe(args=[{'name': 'count', 'arg': 3, 'type': 'ulong'}])]), {'p': 'vfs_write'})
    assert ps.spec_hash('m', plain, 't') != ps.spec_hash('m', with_args, 't')


@pytest.mark.parametrize('args,message', [
    ('path', "field 'args': must be a list of {name, arg, type} mappings, got str"),
    ([{'name': 'a%d' % i, 'arg': 1, 'type': 'int'} for i in range(5)], 'at most 4 arguments per probe, got 5'),
    (['path'], 'each argument must be a {name, arg, type} mapping, got str'),
    ([{'name': 'p', 'arg': 1, 'type': 'int', 'fmt': 'x'}], "unknown key 'fmt'"),
    ([{'name': 'p', 'arg': 1}], 'an argument needs type'),
    ([{'name': 'Path', 'arg': 1, 'type': 'int'}], "argument name 'Path' must match"),
    ([{'name': 'p; x', 'arg': 1, 'type': 'int'}], "argument name 'p; x' must match"),
    ([{'name': 'p', 'arg': 0, 'type': 'int'}], 'arg must be the parameter position 1 to 6, got 0'),
    ([{'name': 'p', 'arg': '2', 'type': 'int'}], "arg must be the parameter position 1 to 6, got '2'"),
    ([{'name': 'p', 'arg': True, 'type': 'int'}], 'arg must be the parameter position 1 to 6'),
    ([{'name': 'p', 'arg': 1, 'type': 'char *'}], "type must be one of int, long, ulong, string, ustring, filename, file, got 'char *'"),
    ([{'name': 'p', 'arg': 1, 'type': 'int'}, {'name': 'p', 'arg': 2, 'type': 'int'}], 'argument p is named twice'),
])
def test_bad_args_are_refused_with_the_probe_and_field(args, message):
    with pytest.raises(ps.ProbeSpecError) as e:
        ps.normalize([probe(args=args)])
    assert str(e.value).startswith("probe 'p' (#1): field 'args': ")
    assert message in str(e.value)


def test_a_candidates_bad_args_name_the_candidate():
    with pytest.raises(ps.ProbeSpecError, match="candidate 'g': argument x: type must be one of"):
        ps.normalize([probe(function=[{'function': 'g', 'args': [{'name': 'x', 'arg': 1, 'type': 'float'}]}])])


def test_argument_memory_is_bounded():
    strings = [{'name': 's%d' % i, 'arg': i + 1, 'type': 'string'} for i in range(4)]
    ps.normalize([probe(args=strings, maxactive=4096)])  # 4 x 320 B x 4096 = 5 MiB
    with pytest.raises(ps.ProbeSpecError, match='captured arguments need 10485760 bytes of kernel memory'):
        ps.normalize([probe(args=strings, maxactive=4096), probe(name='q', args=strings, maxactive=4096)])


@pytest.mark.parametrize('symbol', ['vsnprintf', 'vprintk_store', 'vprintk_emit', 'console_unlock', 'log_store',
                                    'prb_reserve', 'irq_work_queue', '_printk', 'up'])
def test_the_kernel_logs_own_path_is_refused_for_a_probe_that_logs(symbol):
    with pytest.raises(ps.ProbeSpecError) as e:
        ps.normalize([probe(function=['vfs_write', symbol])])
    assert str(e.value) == (
        "probe 'p' (#1): field 'function': candidate '%s' runs on the kernel log's own path, where the line this "
        "probe logs (vprintk_emit from the return handler) can wait for a lock its own CPU holds and hang it; give "
        "the probe args (its events then go to the root-only ring, not the log) or log: false" % symbol)
    # counting only, or events through the ring: no print in the handler
    ps.normalize([probe(function=symbol, log=False)])
    ps.normalize([probe(function=symbol, args=[{'name': 'a', 'arg': 1, 'type': 'ulong'}])])


def test_names_that_only_look_alike_are_probed():
    for symbol in ('do_sys_openat2', 'vfs_write', 'update_console_cmdline', 'uprobe_register', 'up_read', 'xlog_write'):
        ps.normalize([probe(function=symbol)])


# -- latency (#23) -------------------------------------------------------------------------------

@pytest.mark.parametrize('value,ns', [('100ms', 10 ** 8), ('2s', 2 * 10 ** 9), ('500us', 500000), ('250000ns', 250000),
                                      (1000, 1000), (' 3s ', 3 * 10 ** 9)])
def test_slower_than_is_a_duration_in_ns_and_turns_latency_on(value, ns):
    got = ps.normalize([probe(slower_than=value)])[0]
    assert (got['latency'], got['slower_than']) == (True, ns)
    assert ps.normalize([got]) == [got]
    assert ps.module_only([got]) == [('p', 'times its calls (latency)')]


@pytest.mark.parametrize('value,message', [
    ('100 ms', "must be a duration such as 100ms, 2s, 500us or a number of ns, got '100 ms'"),
    ('1h', "got '1h'"), (True, 'got boolean'), (1.5, 'got float'), (999, 'must be from 1us to 3600s, got 999 ns'),
    ('3601s', 'must be from 1us to 3600s'),
])
def test_bad_slower_than_is_refused(value, message):
    with pytest.raises(ps.ProbeSpecError, match=re.escape(message)):
        ps.normalize([probe(slower_than=value)])


def test_slower_than_with_latency_false_is_a_contradiction():
    with pytest.raises(ps.ProbeSpecError, match="field 'latency': slower_than needs latency"):
        ps.normalize([probe(slower_than='1s', latency=False)])
    with pytest.raises(ps.ProbeSpecError, match="field 'latency': must be a boolean"):
        ps.normalize([probe(latency='sometimes')])
    assert ps.normalize([probe(latency=True)])[0]['slower_than'] is None


# -- filters (#23) ------------------------------------------------------------------------------

def test_filters_are_normalized_sorted_and_need_the_module():
    got = ps.normalize([probe(filter={'comm': ['postgres', 'nginx*', 'postgres'], 'uid_not': [0, '1000']})])[0]
    assert got['filter'] == dict(NO_FILTER, comm=['nginx*', 'postgres'], uid_not=[0, 1000])
    assert ps.normalize([got]) == [got]
    assert ps.module_only([got]) == [('p', 'filters in the kernel (filter)')]
    assert ps.normalize([probe()])[0]['filter'] == NO_FILTER
    assert ps.module_only(ps.normalize([probe()])) == []


@pytest.mark.parametrize('value,message', [
    ('postgres', 'must be a mapping with keys comm, comm_not, uid, uid_not, args, args_not, cgroup, cgroup_not, got string'),
    ({'pid': [1]}, "unknown key 'pid'"),
    ({'comm': ['a"); evil(']}, "comm: 'a\"); evil(' is not a process name"),
    ({'comm': ['back\\\\slash']}, 'is not a process name'),
    ({'comm': ['x' * 16]}, 'is not a process name'),
    ({'comm': ['*']}, "comm: '*' is not a process name"),
    ({'comm_not': [3]}, 'comm_not: integer is not a process name'),
    ({'uid': [-1]}, 'uid: -1 is not a user id (0 to 4294967294)'),
    ({'uid': ['root']}, "uid: 'root' is not a user id"),
    ({'uid': [True]}, 'is not a user id'),
    ({'uid': list(range(17))}, 'uid: at most 16 values, got 17'),
])
def test_bad_filters_are_refused_before_reaching_the_c_source(value, message):
    with pytest.raises(ps.ProbeSpecError) as e:
        ps.normalize([probe(filter=value)])
    assert "field 'filter'" in str(e.value) and message in str(e.value)


# --- the log readers' exemption (#23): an explicit default, the user's list -------------------------

def test_log_exempt_defaults_to_the_log_readers_and_takes_the_users_list():
    assert list(ps.LOG_EXEMPT_DEFAULT) == EXEMPT
    assert ps.normalize([probe()])[0]['log_exempt'] == EXEMPT
    assert ps.normalize([probe()], log_exempt=[])[0]['log_exempt'] == []
    assert ps.normalize([probe(log_exempt=['vector*', 'vector*', 'fluent-bit'])], log_exempt=[])[0]['log_exempt'] == [
        'vector*', 'fluent-bit']
    assert ps.normalize([probe(log_exempt='journald')])[0]['log_exempt'] == ['journald']
    once = ps.normalize([probe(), probe(name='q', log_exempt=[])], log_exempt=['x'])
    assert ps.normalize(once) == once  # idempotent: the spec keeps each probe's list


@pytest.mark.parametrize('value,message', [
    (['bad name!'], "is not a process name"),
    (['a' * 16], "is not a process name"),
    (['new\nline'], "is not a process name"),
    (['*'], "is not a process name"),
    (['mid*dle'], "is not a process name"),
    ([['x']], "is not a process name"),
    (None, "must be a list of process names"),
    ({'a': 1}, "must be a list of process names"),
    (['p%d' % i for i in range(17)], "at most 16 process names"),
])
def test_log_exempt_refuses_what_is_not_a_process_name(value, message):
    assert message in error_of([probe(log_exempt=value)])
    with pytest.raises(ps.ProbeSpecError) as info:
        ps.check_comm_list(value, 'kprobes_fleet_log_exempt')
    assert str(info.value).startswith('kprobes_fleet_log_exempt: ') and message in str(info.value)


# --- filters on captured args (#23) ------------------------------------------------------------------

def args_probe(**kw):
    return probe(function=[{'function': 'do_sys_openat2', 'returns': 'int'},
                           {'function': 'do_sys_open', 'returns': 'int',
                            'args': [{'name': 'path', 'arg': 2, 'type': 'filename'},
                                     {'name': 'flags', 'arg': 3, 'type': 'int'}]}],
                 args=[{'name': 'path', 'arg': 2, 'type': 'ustring'}, {'name': 'flags', 'arg': 3, 'type': 'int'}],
                 **kw)


def test_args_filter_is_normalized():
    got = ps.normalize([args_probe(filter={'args': {'path': ['/var/log/app.log', '/etc/*', '/etc/*']},
                                           'args_not': {'path': '/etc/shadow'}})])[0]['filter']
    assert got['args'] == {'path': ['/etc/*', '/var/log/app.log']} and got['args_not'] == {'path': ['/etc/shadow']}
    assert ps.normalize([probe()])[0]['filter']['args'] == {}
    assert ps.module_only([args_probe(filter={'args': {'path': ['/etc/*']}})]) == [
        ('p', 'captures arguments (args) and filters in the kernel (filter)')]
    long_ok = '/' + 'x' * 254
    assert ps.normalize([args_probe(filter={'args': {'path': [long_ok, long_ok + '*', 'caf\u00e9']}})])


@pytest.mark.parametrize('flt,message', [
    ({'args': {'nope': ['/x']}}, "candidate do_sys_openat2 captures no argument nope (its args: flags, path)"),
    ({'args': {'flags': ['1']}}, "argument flags of candidate do_sys_openat2 is of type int; only string, ustring, "
                                 "filename, file arguments can be filtered on"),
    ({'args': {'path': ['/' + 'x' * 255]}}, "a value is at most 255 bytes (what is captured of a string), got 256"),
    ({'args': {'path': ['/\u00e9' * 128]}}, "a value is at most 255 bytes"),
    ({'args': {'path': ['/a\nb']}}, "holds a control character"),
    ({'args': {'path': ['/a\x9bb']}}, "holds a control character"),
    ({'args': {'path': ['/a*b']}}, "has a * that is not at its end"),
    ({'args': {'path': ['*']}}, "matches every string"),
    ({'args': {'path': ['']}}, "matches every string"),
    ({'args': {'path': []}}, "args.path must be a list of 1 to 16 strings"),
    ({'args': {'path': [7]}}, "each value must be a string, got integer"),
    ({'args': {'path': ['/%d' % i for i in range(17)]}}, "at most 16 values, got 17"),
    ({'args': ['/etc/*']}, "args must be a mapping of argument names to values"),
    ({'args': {'Bad Name': ['/x']}}, "is not an argument name"),
    ({'args_not': {'nope': ['/x']}}, "args_not.nope: candidate do_sys_openat2 captures no argument nope"),
])
def test_args_filter_refuses_with_one_sentence(flt, message):
    err = error_of([args_probe(filter=flt)])
    assert message in err and "field 'filter'" in err and '\n' not in err


def test_args_filter_needs_the_argument_on_every_candidate():
    spec = args_probe(filter={'args': {'path': ['/etc/*']}})
    spec['function'][1]['args'] = [{'name': 'name', 'arg': 2, 'type': 'filename'}]
    assert 'candidate do_sys_open captures no argument path (its args: name)' in error_of([spec])
    assert 'captures no argument path (its args: none)' in error_of([probe(filter={'args': {'path': ['/x']}})])


# --- cgroup filters (#23) -------------------------------------------------------------------------

def test_cgroup_filter_is_normalized():
    got = ps.normalize([probe(filter={'cgroup': ['/system.slice/nginx.service/', '/user.slice', '/user.slice'],
                                      'cgroup_not': '/system.slice/nginx.service/debug'})])[0]['filter']
    assert got['cgroup'] == ['/system.slice/nginx.service', '/user.slice']
    assert got['cgroup_not'] == ['/system.slice/nginx.service/debug']
    assert ps.module_only([probe(filter={'cgroup': ['/a.slice']})]) == [('p', 'filters in the kernel (filter)')]


@pytest.mark.parametrize('value,message', [
    ('system.slice', "is not a cgroup path (it starts with /"),
    ('/', "/ is every process"),
    ('/a//b', "has an empty, . or .. component"),
    ('/a/../b', "has an empty, . or .. component"),
    ('/nginx*', "has a *; a cgroup path already matches every cgroup below it"),
    ('/a\nb', "holds a control character"),
    ('/' + 'x' * 255, "at most 255 bytes and 32 components, got 256 bytes"),
    ('/a' * 33, "got 66 bytes and 33"),
    (7, "is not a cgroup path"),
])
def test_cgroup_filter_refuses_with_one_sentence(value, message):
    err = error_of([probe(filter={'cgroup': [value]})])
    assert message in err and '\n' not in err
