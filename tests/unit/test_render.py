"""Render roles/probe_build/templates/*.j2 and check the C text; optionally compile it."""
import glob
import hashlib
import os
import re
import shutil
import subprocess

import jinja2
import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import probe_spec as ps

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(HERE)),
                         'roles', 'probe_build', 'templates')

CUSTOM = [
    {'name': 'open_int', 'function': ['do_sys_openat2', 'do_sys_open'], 'returns': 'int'},
    {'name': 'reads', 'function': 'vfs_read', 'report': 'any', 'log': False,
     'maxactive': 4096},
    {'name': 'fsync_err', 'function': 'vfs_fsync_range', 'returns': 'int',
     'report': ['EIO', 'ENOSPC', 'ENOTSUP'], 'log_burst': 7, 'log_interval': 60},
    {'name': 'any_error', 'function': 'vfs_fallocate', 'returns': 'int', 'report': 'nonzero'},
]


def template_sha():
    digest = hashlib.sha256()
    for name in ('Kbuild.j2', 'kprobes_fleet.c.j2'):
        with open(os.path.join(TEMPLATES, name), 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def spec(probes, module_name='kprobes_fleet'):
    normalized = ps.normalize(probes)
    resolved = ps.resolve(normalized, dict((p['name'], ps.candidate_symbols(p)[0]) for p in normalized))
    return {
        'module_name': module_name,
        'spec_hash': ps.spec_hash(module_name, resolved, template_sha()),
        'probes': resolved,
    }


def render(name, variables, lstrip_blocks=True):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True,
                             lstrip_blocks=lstrip_blocks, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(name).render(**variables)


def handler(c_text, probe_name):
    """The body of the return handler of one probe."""
    match = re.search(r'^static int kpf_ret_%s\(struct kretprobe_instance \*ri, '
                      r'struct pt_regs \*regs\)\n\{\n(.*?)^\}\n' % probe_name,
                      c_text, re.M | re.S)
    assert match, 'no handler for %s' % probe_name
    return match.group(1)


def function(c_text, name):
    """The body of the C function `name` (a definition starting in column 0)."""
    match = re.search(r'^(?:static |asmlinkage )[^;{}]*?\b%s\([^;{}]*\)\n\{\n(.*?)^\}\n'
                      % re.escape(name), c_text, re.M | re.S)
    assert match, 'no function %s' % name
    return match.group(1)


def code_only(c_text):
    """The C text without comments (they may name functions that must not be called)."""
    return re.sub(r'//[^\n]*|/\*.*?\*/', '', c_text, flags=re.S)


# printk and friends (not pr_fmt) that print to the consoles at once, or are not exported
DIRECT_PRINTK_RE = re.compile(r'\b(?:pr_(?!fmt\b)\w+|printk|_?printk_deferred|vprintk|_printk)\s*\(')
LOG_LINE = 'pr_fmt("probe=%s func=%s ret=%ld pid=%d comm=%s\\n")'
MARKER = 'kprobes.fleet'


@pytest.fixture(params=['presets', 'custom'])
def rendered(request):
    variables = spec(None if request.param == 'presets' else CUSTOM)
    return variables, render('kprobes_fleet.c.j2', variables)


def test_no_jinja_residue_and_balanced(rendered):
    dummy, c_text = rendered
    for token in ('{{', '}}', '{%', '%}', '{#', '#}'):
        assert token not in c_text
    assert c_text.count('{') == c_text.count('}')
    assert c_text.count('(') == c_text.count(')')
    assert c_text.startswith('// SPDX-License-Identifier: GPL-2.0\n')
    assert c_text.endswith(';\n') and '\n\n\n' not in c_text


def test_one_handler_per_probe(rendered):
    variables, c_text = rendered
    names = [p['name'] for p in variables['probes']]
    assert len(re.findall(r'^static int kpf_ret_\w+\(.*\)$', c_text, re.M)) == len(names)
    assert c_text.count('NOKPROBE_SYMBOL(kpf_ret_') == len(names)
    assert 'NOKPROBE_SYMBOL(kpf_match);' in c_text
    assert '#define KPF_NPROBES %d\n' % len(names) in c_text
    for index, p in enumerate(variables['probes']):
        body = handler(c_text, p['name'])
        assert 'this_cpu_inc(kpf_hits[%d]);' % index in body
        assert 'kpf_match(&kpf_probes[%d], ret);' % index in body
        assert ('[%d] = {\n\t\t.rp = {\n\t\t\t.kp = { .symbol_name = "%s" },\n'
                '\t\t\t.handler = kpf_ret_%s,\n\t\t\t.maxactive = %d,\n'
                % (index, p['function'], p['name'], p['maxactive'])) in c_text
        assert '\t\t.name = "%s",\n\t\t.func = "%s",\n' % (p['name'], p['function']) in c_text
        assert '\t\t.log = %s,\n' % ('true' if p['log'] else 'false') in c_text
        assert '\t\t.log_burst = %d,\n\t\t.log_interval = %d,\n' % (
            p['log_burst'], p['log_interval']) in c_text


def test_never_changes_return_value_and_no_version_branches(rendered):
    dummy, c_text = rendered
    for forbidden in ('get_kretprobe', 'ri->rp', 'sysfs_emit', 'LINUX_VERSION_CODE',
                      'regs->ax =', 'regs_set_return_value', 'entry_handler'):
        assert forbidden not in c_text


def test_presets_types_and_reports():
    variables = spec(None)
    c_text = render('kprobes_fleet.c.j2', variables)
    body = handler(c_text, 'open_failures')
    assert 'unsigned long raw = KPF_RAW_RETVAL(regs);' in body
    assert 'long ret = IS_ERR_VALUE(raw) ? (long)raw : 0;' in body
    assert '\tif (ret < 0)\n\t\tkpf_match(' in body
    body = handler(c_text, 'disk_full')
    assert 'long ret = (long)KPF_RAW_RETVAL(regs);' in body
    assert '\tif (ret == -EDQUOT || ret == -ENOSPC)\n\t\tkpf_match(' in body
    assert '.maxactive = 256,' in c_text and '.maxactive = 1024,' in c_text
    assert '.symbol_name = "do_filp_open"' in c_text
    assert '.symbol_name = "vfs_write"' in c_text


def test_custom_types_and_reports():
    c_text = render('kprobes_fleet.c.j2', spec(CUSTOM))
    body = handler(c_text, 'open_int')
    assert 'int ret = (int)KPF_RAW_RETVAL(regs);' in body
    assert 'long ret' not in body
    assert 'if (ret < 0)' in body
    body = handler(c_text, 'reads')
    assert 'long ret = (long)KPF_RAW_RETVAL(regs);' in body
    assert 'if (' not in body
    body = handler(c_text, 'fsync_err')
    assert 'int ret = (int)KPF_RAW_RETVAL(regs);' in body
    # ENOTSUP (a C library alias without a kernel macro) becomes EOPNOTSUPP
    assert 'if (ret == -EIO || ret == -ENOSPC || ret == -EOPNOTSUPP)' in body
    body = handler(c_text, 'any_error')
    assert 'if (ret != 0)' in body
    assert '.maxactive = 4096,' in c_text
    assert '.symbol_name = "do_sys_openat2"' in c_text


def test_logging_contract():
    c_text = render('kprobes_fleet.c.j2', spec(None))
    assert '#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt' in c_text
    # pr_fmt adds "<mod>: ": the collector parses "<mod>: probe=... comm=<comm>"
    assert ('\t\tkpf_printk_deferred(KERN_INFO %s,\n'
            '\t\t\t\t    p->name, p->func, ret, task_pid_nr(current), current->comm);\n'
            % LOG_LINE) in function(c_text, 'kpf_match')
    assert 'if (!kpf_is_log_reader() && __ratelimit(&p->rs))' in c_text
    # no feedback loop with the daemons that store the kernel log
    assert '"systemd-journal", "rsyslogd", "syslog-ng", "klogd",' in c_text
    assert 'this_cpu_inc(kpf_suppressed[i]);' in c_text
    assert 'ratelimit_state_init(&p->rs, p->log_interval * HZ, p->log_burst);' in c_text
    assert 'pr_err("register_kretprobe(%s) for probe %s failed: %d\\n",' in c_text
    assert 'pr_info("loaded spec_hash=%s probes=%d\\n", KPF_SPEC_HASH, KPF_NPROBES);' in c_text


def test_probe_context_logs_deferred(rendered):
    """Handlers never print to the consoles: printk there can deadlock (rq/console locks)."""
    variables, c_text = rendered
    code = code_only(c_text)
    match_body = function(code, 'kpf_match')
    assert 'kpf_printk_deferred(KERN_INFO %s,' % LOG_LINE in match_body
    assert DIRECT_PRINTK_RE.findall(match_body) == []
    assert DIRECT_PRINTK_RE.findall(function(code, 'kpf_is_log_reader')) == []
    for p in variables['probes']:
        body = function(code, 'kpf_ret_%s' % p['name'])
        assert DIRECT_PRINTK_RE.findall(body) == [], p['name']
        assert 'printk' not in body and 'pr_' not in body
    # printk_deferred() is _printk_deferred (printk_deferred before 5.15), not exported to
    # modules: the wrapper does what it does, with the exported vprintk_emit()
    assert 'static __printf(1, 2) void kpf_printk_deferred(const char *fmt, ...)\n' in code
    assert function(code, 'kpf_printk_deferred') == (
        '\tva_list args;\n\n\tva_start(args, fmt);\n'
        '\tvprintk_emit(0, LOGLEVEL_SCHED, NULL, fmt, args);\n\tva_end(args);\n')
    assert not re.search(r'\b_?printk_deferred\s*\(', code)
    # everything that runs in probe context is itself excluded from probing
    for name in ['kpf_is_log_reader', 'kpf_printk_deferred', 'kpf_match'] + [
            'kpf_ret_%s' % p['name'] for p in variables['probes']]:
        assert 'NOKPROBE_SYMBOL(%s);' % name in code
    # pr_info/pr_err only in init (process context); none in exit or sysfs show functions
    direct = DIRECT_PRINTK_RE.findall(code)
    in_init = (DIRECT_PRINTK_RE.findall(function(code, 'kpf_init'))
               + DIRECT_PRINTK_RE.findall(function(code, 'kpf_sysfs_create')))
    assert sorted(direct) == sorted(in_init) == ['pr_err(', 'pr_err(', 'pr_info(']
    assert 'static int __init kpf_init(void)' in code


def test_counters_are_per_cpu(rendered):
    """hits, matches and suppressed: per-CPU, incremented locally, summed when read."""
    variables, c_text = rendered
    code = code_only(c_text)
    assert 'atomic' not in code.lower()
    for counter in ('hits', 'matches', 'suppressed'):
        assert 'static DEFINE_PER_CPU(u64, kpf_%s[KPF_NPROBES]);\n' % counter in code
        assert '\nKPF_PCPU_SUM(%s)\n' % counter in code
        assert ('KPF_ATTR(%s, "%%llu", (unsigned long long)kpf_%s_sum(p));'
                % (counter, counter)) in code
    sum_macro = code.split('#define KPF_PCPU_SUM(_ctr)', 1)[1].split('\n\n', 1)[0]
    assert 'static u64 kpf_##_ctr##_sum(const struct kpf_probe *p)' in sum_macro
    assert 'int i = p - kpf_probes;' in sum_macro
    assert 'for_each_possible_cpu(cpu)' in sum_macro
    assert 'sum += per_cpu(kpf_##_ctr[i], cpu);' in sum_macro
    match_body = function(code, 'kpf_match')
    assert match_body.startswith('\tint i = p - kpf_probes;\n\n\tthis_cpu_inc(kpf_matches[i]);\n')
    assert '\telse\n\t\tthis_cpu_inc(kpf_suppressed[i]);\n' in match_body
    for index, p in enumerate(variables['probes']):
        body = handler(c_text, p['name'])
        assert body.count('this_cpu_inc(') == 1 and 'kpf_hits[%d]' % index in body
    struct = code.split('struct kpf_probe {\n', 1)[1].split('};', 1)[0]
    assert 'matches' not in struct and 'suppressed' not in struct


def test_ownership_marker(rendered):
    """/sys/kernel/<mod>/marker and modinfo "marker" say "kprobes.fleet": ours to unload."""
    dummy, c_text = rendered
    code = code_only(c_text)
    assert '#define KPF_MARKER "%s"\n' % MARKER in code
    assert function(code, 'kpf_marker_show') == (
        '\treturn scnprintf(buf, PAGE_SIZE, "%s\\n", KPF_MARKER);\n')
    assert '__ATTR(marker, 0444, kpf_marker_show, NULL)' in code
    # created next to spec_hash and removed with it: one group on /sys/kernel/<mod>
    root_attrs = code.split('static struct attribute *kpf_root_attrs[] = {\n', 1)[1]
    assert root_attrs.startswith('\t&kpf_attr_spec_hash.attr,\n\t&kpf_attr_marker.attr,\n'
                                 '\tNULL,\n};\n')
    create = function(code, 'kpf_sysfs_create')
    assert ('kpf_root_kobj = kobject_create_and_add(KBUILD_MODNAME, kernel_kobj);\n'
            '\tif (!kpf_root_kobj)\n\t\treturn -ENOMEM;\n'
            '\terr = sysfs_create_group(kpf_root_kobj, &kpf_root_group);\n') in create
    remove = function(code, 'kpf_sysfs_remove')
    assert ('\t\tsysfs_remove_group(kpf_root_kobj, &kpf_root_group);\n'
            '\t\tkobject_put(kpf_root_kobj);\n') in remove
    assert 'sysfs_create_file' not in code and 'sysfs_remove_file' not in code
    assert code.endswith('MODULE_INFO(marker, "%s");\n' % MARKER)


def test_sysfs_contract():
    c_text = render('kprobes_fleet.c.j2', spec(None))
    for attr in ('function', 'hits', 'matches', 'nmissed', 'kp_nmissed', 'maxactive',
                 'registered', 'reg_err', 'suppressed'):
        assert 'KPF_ATTR(%s, ' % attr in c_text
        assert '\t&kpf_attr_%s.attr,\n' % attr in c_text
    assert '__ATTR(spec_hash, 0444, kpf_spec_hash_show, NULL)' in c_text
    assert '__ATTR(marker, 0444, kpf_marker_show, NULL)' in c_text
    assert 'kobject_create_and_add(KBUILD_MODNAME, kernel_kobj)' in c_text
    assert 'kobject_create_and_add("probes", kpf_root_kobj)' in c_text
    assert 'scnprintf(buf, PAGE_SIZE' in c_text
    assert 'READ_ONCE(p->rp.nmissed)' in c_text and 'READ_ONCE(p->rp.kp.nmissed)' in c_text
    # exit: unregister first, then remove sysfs
    exit_body = c_text.split('static void __exit kpf_exit(void)\n{\n', 1)[1].split('}', 1)[0]
    assert exit_body == '\tkpf_unregister_all();\n\tkpf_sysfs_remove();\n'


def test_module_metadata():
    variables = spec(CUSTOM, module_name='kpf_test')
    c_text = render('kprobes_fleet.c.j2', variables)
    assert 'MODULE_LICENSE("GPL");' in c_text
    assert 'MODULE_VERSION("%s");' % variables['spec_hash'] in c_text
    assert 'MODULE_INFO(marker, "kprobes.fleet");' in c_text
    assert '#define KPF_SPEC_HASH "%s"' % variables['spec_hash'] in c_text
    assert ('MODULE_DESCRIPTION("kprobes.fleet kretprobe observer '
            '(open_int, reads, fsync_err, any_error)");') in c_text
    kbuild = render('Kbuild.j2', variables)
    assert re.search(r'^obj-m := kpf_test\.o$', kbuild, re.M)
    assert '{' not in kbuild


def test_same_output_without_lstrip_blocks():
    # ansible.builtin.template defaults to lstrip_blocks: false
    for probes in (None, CUSTOM):
        variables = spec(probes)
        assert (render('kprobes_fleet.c.j2', variables)
                == render('kprobes_fleet.c.j2', variables, lstrip_blocks=False))


def test_strict_undefined():
    variables = spec(None)
    del variables['spec_hash']
    with pytest.raises(jinja2.UndefinedError):
        render('kprobes_fleet.c.j2', variables)


def test_unsupported_values_fail_at_compile_time():
    variables = spec(None)
    variables['probes'][0]['returns'] = 'u8'
    variables['probes'][1]['report'] = 'sometimes'
    c_text = render('kprobes_fleet.c.j2', variables)
    assert '#error "kprobes.fleet: unsupported \'returns\' value"' in c_text
    assert '#error "kprobes.fleet: unsupported \'report\' value"' in c_text


# --- real kbuild against installed kernel headers ------------------------------------------

HEADERS = sorted(glob.glob('/usr/src/linux-headers-*-amd64'))
NO_BUILD_REASON = None
if not HEADERS:
    NO_BUILD_REASON = ('no /usr/src/linux-headers-*-amd64 (install linux-headers-amd64 '
                       'to run the compile test)')
elif not shutil.which('make'):
    NO_BUILD_REASON = 'make is not installed'

WARNING_RE = re.compile(r'warning|error', re.I)
HARMLESS = ('Skipping BTF generation',)


@pytest.mark.compile
@pytest.mark.skipif(NO_BUILD_REASON is not None, reason=NO_BUILD_REASON or '')
@pytest.mark.parametrize('headers', HEADERS or ['none'])
@pytest.mark.parametrize('which', ['presets', 'custom'])
def test_compile(tmp_path, headers, which):
    variables = spec(None if which == 'presets' else CUSTOM)
    build = tmp_path / variables['module_name']
    build.mkdir()
    (build / 'Kbuild').write_text(render('Kbuild.j2', variables))
    (build / (variables['module_name'] + '.c')).write_text(
        render('kprobes_fleet.c.j2', variables))
    proc = subprocess.run(['make', '-C', headers, 'M=%s' % build, 'modules'],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout
    complaints = [line for line in proc.stdout.splitlines()
                  if WARNING_RE.search(line) and not any(h in line for h in HARMLESS)]
    assert complaints == [], proc.stdout
    ko = build / (variables['module_name'] + '.ko')
    data = ko.read_bytes()
    assert b'version=' + variables['spec_hash'].encode() + b'\0' in data
    assert b'license=GPL\0' in data
    # modinfo -F marker <file>.ko
    assert b'\0marker=kprobes.fleet\0' in data


def test_the_handler_reads_the_chosen_candidates_type():
    """One spec, the C type follows the candidate the host resolved (resolve() sets returns)."""
    probes = [{'name': 'opens', 'returns': 'errptr',
               'function': ['do_file_open', {'function': 'do_sys_openat2', 'returns': 'int'}]}]
    normalized = ps.normalize(probes)
    for symbol, c_line in (('do_file_open', 'long ret = IS_ERR_VALUE(raw) ? (long)raw : 0;'),
                           ('do_sys_openat2', 'int ret = (int)KPF_RAW_RETVAL(regs);')):
        resolved = ps.resolve(normalized, {'opens': symbol})
        c_text = render('kprobes_fleet.c.j2', {'module_name': 'kprobes_fleet', 'probes': resolved,
                                               'spec_hash': ps.spec_hash('kprobes_fleet', resolved, 't')})
        body = handler(c_text, 'opens')
        assert c_line in body
        assert '.symbol_name = "%s"' % symbol in c_text
        assert '/* probe opens: %s, returns %s,' % (symbol, resolved[0]['returns']) in c_text
