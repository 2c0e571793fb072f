# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe spec: validation, normalization, resolution and hashing.

Pure functions, standard library only (runs on the controller and on Python 3.9
targets). This is the template-injection boundary: every string that reaches the
rendered C source passes one of the patterns below. See docs/architecture.md.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import hashlib
import json
import re

from ansible_collections.kprobes.fleet.plugins.module_utils import names

NAME_PATTERN = r'^[a-z][a-z0-9_]{0,31}$'
FUNCTION_PATTERN = r'^[A-Za-z_][A-Za-z0-9_]{0,127}$'

# re.fullmatch with the anchors stripped: '$' alone would accept a trailing newline.
_NAME_RE = re.compile(NAME_PATTERN[1:-1])
_FUNCTION_RE = re.compile(FUNCTION_PATTERN[1:-1])

RETURNS = ('long', 'int', 'errptr')
REPORTS = ('negative', 'nonzero', 'any', 'errno')
MAX_FUNCTIONS = 8

# Totals. maxactive is the number of kretprobe instances of a probe. 4096 is the kernel's
# own ceiling for return probes made through tracefs (KRETPROBE_MAXACTIVE_MAX). Since 6.7 the
# instance pool (objpool) gives every possible CPU a ring of roundup_pow_of_two(maxactive)
# 8-byte slots: the sum below keeps that under 2 x 8192 x 8 B = 128 KiB per CPU for the whole
# spec (16 MiB on 128 CPUs) instead of 64 MiB per probe at 65536. Each probe is one more kprobe
# on a kernel function (and one more log budget): 32 covers every use we know of.
MAX_MAXACTIVE = 4096
MAX_TOTAL_MAXACTIVE = 8192
MAX_PROBES = 32

# field: (default, minimum, maximum, why)
_INT_FIELDS = {
    'maxactive': (64, 1, MAX_MAXACTIVE, "the kernel's own limit for return-probe events"),
    'log_burst': (100, 1, 100000, ''),
    'log_interval': (5, 1, 3600, 'seconds'),
}
_INPUT_KEYS = frozenset(('name', 'function', 'functions', 'returns', 'report', 'errnos',
                         'maxactive', 'log', 'log_burst', 'log_interval', 'args', 'latency', 'slower_than',
                         'filter', 'log_exempt'))

# In-kernel filters (module backend), applied before a return counts as a match; what they keep out
# is counted in ``filtered`` (``hits`` unaffected). ``comm``/``comm_not``: process names, exact or a
# prefix with a trailing ``*``; ``uid``/``uid_not``: user ids (initial user namespace). A probe matches
# when its report condition holds, its comm is in ``comm`` (when given) and not in ``comm_not``, and
# likewise for uid. The names go into the C source: a closed character set, refused otherwise.
FILTER_KEYS = ('comm', 'comm_not', 'uid', 'uid_not', 'args', 'args_not', 'cgroup', 'cgroup_not')
MAX_FILTER_VALUES = 16
# ``args``/``args_not``: {argument name: [values]} on the probe's own captured string arguments (string,
# ustring, filename, file: its path below its filesystem's root), each value the whole string or, with a
# trailing ``*``, a prefix of it; compared in the return handler with the bytes the entry handler read. A
# value is at most ARG_STR_MAX - 1 bytes (UTF-8) of text without control characters; a string that could
# not be read, or was cut, never equals a value (a cut one may still start with a prefix).
STRING_ARG_TYPES = ('string', 'ustring', 'filename', 'file')
# ``cgroup``/``cgroup_not``: paths on the cgroup v2 (default) hierarchy as /proc/<pid>/cgroup shows them from the
# host ("/system.slice/nginx.service"), each matching that cgroup and every cgroup below it (whole components:
# not /system.slice/nginx.service2). At most CGROUP_FILTER_MAX bytes and CGROUP_FILTER_DEPTH components.
CGROUP_FILTER_MAX = 255
CGROUP_FILTER_DEPTH = 32
_FILTER_TEXT_BAD = re.compile(u'[\x00-\x1f\x7f-\x9f\ud800-\udfff]')
COMM_PATTERN = r'^[A-Za-z0-9_.:@+-][A-Za-z0-9_.:@+ -]{0,14}\*?$'
_COMM_RE = re.compile(COMM_PATTERN[1:-1])
UID_MAX = 4294967294

# The log readers' exemption: processes whose matches are counted but never written to the kernel log.
# Logging the failures of the tasks that store the kernel log feeds back (journald opens files for
# every record it stores, which fails again, which we log...) until the whole log budget is theirs.
# ``kprobes_fleet_log_exempt`` (a public variable) sets the list for every probe, a probe's own
# ``log_exempt`` for that probe; names as in ``filter: comm`` (exact, or a prefix with a trailing
# ``*``), at most MAX_FILTER_VALUES, an empty list exempts nobody. What it keeps out of the log is
# counted in ``exempted`` (exact). Only the kernel log has the loop: the ring of probes with ``args``
# and the tracefs buffer exempt nobody.
LOG_EXEMPT_DEFAULT = ('systemd-journal', 'rsyslogd', 'syslog-ng', 'klogd')

# Latency (module backend): ``latency: true`` times every call from entry to return (ns,
# CLOCK_MONOTONIC); ``slower_than`` (a duration: 100ms, 2s, 500us, 250000ns, or an integer of ns)
# turns latency on and makes only slower calls matches. Normalized: latency bool, slower_than ns or None.
SLOWER_THAN_MIN = 1000                  # 1 us
SLOWER_THAN_MAX = 3600 * 10 ** 9        # 1 h
_DURATION_RE = re.compile(r'([0-9]{1,13})(ns|us|ms|s)')
_UNITS = {'ns': 1, 'us': 1000, 'ms': 10 ** 6, 's': 10 ** 9}

# Arguments read when the probed function is entered (kretprobe entry_handler, module backend),
# reported with the return value. ``arg`` is the 1-based parameter position (the first 6 are in
# registers on every architecture we build for). Strings are read with the kernel's fault-tolerant
# copy helpers, at most ARG_STR_MAX - 1 bytes (a longer one is cut and marked truncated). Every
# argument keeps a slot of at most ARG_SLOT bytes per call (kretprobe data_size; the template checks
# the size at build time) and the kernel keeps maxactive instances of a probe (pre-6.7 one list,
# since 6.7 spread over per-CPU rings, the same number in all), so maxactive x slots is what a
# probe's arguments cost, bounded by ARGS_MEMORY_MAX for the whole spec.
ARG_TYPES = ('int', 'long', 'ulong', 'string', 'ustring', 'filename', 'file')
ARG_STR_MAX = 256
ARG_SLOT = 320
MAX_ARGS = 4
MAX_ARG_POSITION = 6
ARGS_MEMORY_MAX = 8 * 1024 * 1024
ARG_NAME_PATTERN = r'^[a-z][a-z0-9_]{0,15}$'
_ARG_NAME_RE = re.compile(ARG_NAME_PATTERN[1:-1])
_ARG_KEYS = ('name', 'arg', 'type')

# Candidate lists cover Debian's 5.10, 6.1, 6.12 and 7.2 kernels (checked against their real
# kallsyms and BTF return types in tests/unit/fixtures/kernels): 7.x renamed do_filp_open to
# do_file_open (same struct file * return); do_sys_openat2 is there on all of them but returns
# long up to 6.x and int on 7.2, so it is read as int (fds and -errno fit in 32 bits).
PRESETS = {
    'open_failures': {
        'function': ['do_filp_open', 'do_file_open', {'function': 'do_sys_openat2', 'returns': 'int'}],
        'returns': 'errptr',
        'report': 'negative',
        'maxactive': 256,
        # Failing opens are common background noise (an Ansible module run alone fails ~140
        # opens while Python imports): a larger log budget keeps the interesting ones visible.
        'log_burst': 500,
    },
    'disk_full': {
        'function': ['vfs_write', 'ksys_write'],
        'returns': 'long',
        'report': {'errno': ['ENOSPC', 'EDQUOT']},
        'maxactive': 1024,
    },
}
DEFAULT_PRESETS = ('open_failures', 'disk_full')

# Linux errno names -> numbers, asm-generic numbering (x86, arm64, riscv, s390; powerpc
# differs only for EDEADLOCK). The rendered C uses the macro names, so the kernel's own
# numbering always applies; these numbers serve the controller (naming a logged ret=-N).
ERRNO = {
    'EPERM': 1, 'ENOENT': 2, 'ESRCH': 3, 'EINTR': 4, 'EIO': 5, 'ENXIO': 6, 'E2BIG': 7,
    'ENOEXEC': 8, 'EBADF': 9, 'ECHILD': 10, 'EAGAIN': 11, 'ENOMEM': 12, 'EACCES': 13,
    'EFAULT': 14, 'ENOTBLK': 15, 'EBUSY': 16, 'EEXIST': 17, 'EXDEV': 18, 'ENODEV': 19,
    'ENOTDIR': 20, 'EISDIR': 21, 'EINVAL': 22, 'ENFILE': 23, 'EMFILE': 24, 'ENOTTY': 25,
    'ETXTBSY': 26, 'EFBIG': 27, 'ENOSPC': 28, 'ESPIPE': 29, 'EROFS': 30, 'EMLINK': 31,
    'EPIPE': 32, 'EDOM': 33, 'ERANGE': 34, 'EDEADLK': 35, 'ENAMETOOLONG': 36, 'ENOLCK': 37,
    'ENOSYS': 38, 'ENOTEMPTY': 39, 'ELOOP': 40, 'ENOMSG': 42, 'EIDRM': 43, 'ECHRNG': 44,
    'EL2NSYNC': 45, 'EL3HLT': 46, 'EL3RST': 47, 'ELNRNG': 48, 'EUNATCH': 49, 'ENOCSI': 50,
    'EL2HLT': 51, 'EBADE': 52, 'EBADR': 53, 'EXFULL': 54, 'ENOANO': 55, 'EBADRQC': 56,
    'EBADSLT': 57, 'EBFONT': 59, 'ENOSTR': 60, 'ENODATA': 61, 'ETIME': 62, 'ENOSR': 63,
    'ENONET': 64, 'ENOPKG': 65, 'EREMOTE': 66, 'ENOLINK': 67, 'EADV': 68, 'ESRMNT': 69,
    'ECOMM': 70, 'EPROTO': 71, 'EMULTIHOP': 72, 'EDOTDOT': 73, 'EBADMSG': 74,
    'EOVERFLOW': 75, 'ENOTUNIQ': 76, 'EBADFD': 77, 'EREMCHG': 78, 'ELIBACC': 79,
    'ELIBBAD': 80, 'ELIBSCN': 81, 'ELIBMAX': 82, 'ELIBEXEC': 83, 'EILSEQ': 84,
    'ERESTART': 85, 'ESTRPIPE': 86, 'EUSERS': 87, 'ENOTSOCK': 88, 'EDESTADDRREQ': 89,
    'EMSGSIZE': 90, 'EPROTOTYPE': 91, 'ENOPROTOOPT': 92, 'EPROTONOSUPPORT': 93,
    'ESOCKTNOSUPPORT': 94, 'EOPNOTSUPP': 95, 'EPFNOSUPPORT': 96, 'EAFNOSUPPORT': 97,
    'EADDRINUSE': 98, 'EADDRNOTAVAIL': 99, 'ENETDOWN': 100, 'ENETUNREACH': 101,
    'ENETRESET': 102, 'ECONNABORTED': 103, 'ECONNRESET': 104, 'ENOBUFS': 105,
    'EISCONN': 106, 'ENOTCONN': 107, 'ESHUTDOWN': 108, 'ETOOMANYREFS': 109,
    'ETIMEDOUT': 110, 'ECONNREFUSED': 111, 'EHOSTDOWN': 112, 'EHOSTUNREACH': 113,
    'EALREADY': 114, 'EINPROGRESS': 115, 'ESTALE': 116, 'EUCLEAN': 117, 'ENOTNAM': 118,
    'ENAVAIL': 119, 'EISNAM': 120, 'EREMOTEIO': 121, 'EDQUOT': 122, 'ENOMEDIUM': 123,
    'EMEDIUMTYPE': 124, 'ECANCELED': 125, 'ENOKEY': 126, 'EKEYEXPIRED': 127,
    'EKEYREVOKED': 128, 'EKEYREJECTED': 129, 'EOWNERDEAD': 130, 'ENOTRECOVERABLE': 131,
    'ERFKILL': 132, 'EHWPOISON': 133,
    # aliases (normalize() maps them to the canonical name, see ERRNO_ALIASES)
    'EWOULDBLOCK': 11, 'EDEADLOCK': 35, 'ENOTSUP': 95,
    # kernel-internal (include/linux/errno.h, never seen by user space but returned by
    # kernel functions, e.g. vfs_write() -> -ERESTARTSYS on a signal)
    'ERESTARTSYS': 512, 'ERESTARTNOINTR': 513, 'ERESTARTNOHAND': 514, 'ENOIOCTLCMD': 515,
    'ERESTART_RESTARTBLOCK': 516, 'EPROBE_DEFER': 517, 'EOPENSTALE': 518, 'ENOPARAM': 519,
    'EBADHANDLE': 521, 'ENOTSYNC': 522, 'EBADCOOKIE': 523, 'ENOTSUPP': 524,
    'ETOOSMALL': 525, 'ESERVERFAULT': 526, 'EBADTYPE': 527, 'EJUKEBOX': 528,
    'EIOCBQUEUED': 529, 'ERECALLCONFLICT': 530, 'ENOGRACE': 531,
}
# ENOTSUP is a C library name only: the kernel has no such macro.
ERRNO_ALIASES = {'EWOULDBLOCK': 'EAGAIN', 'EDEADLOCK': 'EDEADLK', 'ENOTSUP': 'EOPNOTSUPP'}
# number -> canonical name, for turning a logged ret=-N into a name
ERRNO_NAMES = dict((num, name) for name, num in ERRNO.items() if name not in ERRNO_ALIASES)


class ProbeSpecError(names.InvalidValue):
    """A probe spec (or module name) is invalid; the message names probe and field."""


_type_name = names.type_name


def _str_list(value):
    """A string becomes a one-element list; a list is copied; anything else is None."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


class _Probe:
    """Error reporting context for one entry of the user's list."""

    def __init__(self, index, raw):
        name = raw.get('name') if isinstance(raw, dict) else None
        if isinstance(name, str):
            self.label = 'probe %s (#%d)' % (names.shown(name), index)
        else:
            self.label = 'probe #%d' % index

    def fail(self, field, msg):
        if field is None:
            raise ProbeSpecError('%s: %s' % (self.label, msg))
        raise ProbeSpecError("%s: field '%s': %s" % (self.label, field, msg))


def _check_name(ctx, value):
    if not isinstance(value, str):
        ctx.fail('name', 'must be a string, got %s' % _type_name(value))
    if not _NAME_RE.fullmatch(value):
        ctx.fail('name', 'must match %s (a C identifier in lower case)' % NAME_PATTERN)
    return str(value)


_CANDIDATE_KEYS = ('function', 'returns', 'args')

# The kernel log's own path. A probe that logs (log: true, no args) prints its line with
# vprintk_emit() from the return handler; on a function that runs while the log's lock is held
# (5.10: logbuf_lock around vprintk_store/vsnprintf; the console path on every kernel) that print
# waits for a lock its own CPU holds: the CPU hangs. Such probes are refused; with ``args`` (events
# go to the module's ring, no print) or ``log: false`` (counting only) they may run.
PRINTK_PATH_PREFIXES = ('printk', '_printk', '__printk', 'vprintk', 'console_', '__console_', 'log_store',
                        'log_output', 'prb_', 'irq_work', 'devkmsg_', 'wake_up_klogd', 'defer_console')
PRINTK_PATH = frozenset(('vsnprintf', 'vscnprintf', 'snprintf', 'scnprintf', 'sprintf', 'vsprintf',
                         'format_decode', 'record_print_text', 'info_print_prefix', 'print_prefix',
                         'msg_add_dict_text', 'down_trylock', 'up', '___ratelimit', 'ktime_get_mono_fast_ns',
                         'local_clock', 'sched_clock', 'string', 'number', 'pointer'))


def on_printk_path(symbol):
    """Whether ``symbol`` runs on the kernel log's own path (see PRINTK_PATH)."""
    return symbol in PRINTK_PATH or symbol.startswith(PRINTK_PATH_PREFIXES)


def _check_returns(ctx, field, value, where=''):
    if not isinstance(value, str) or value not in RETURNS:
        got = names.shown(value) if isinstance(value, str) else _type_name(value)
        ctx.fail(field, '%smust be one of %s, got %s' % (where, ', '.join(RETURNS), got))
    return str(value)


def _check_args(ctx, value, where=''):
    """The argument list [{name, arg, type}] (at most MAX_ARGS), in the user's order."""
    if not isinstance(value, (list, tuple)):
        ctx.fail('args', '%smust be a list of {name, arg, type} mappings, got %s' % (where, _type_name(value)))
    if len(value) > MAX_ARGS:
        ctx.fail('args', '%sat most %d arguments per probe, got %d' % (where, MAX_ARGS, len(value)))
    result = []
    for item in value:
        if not isinstance(item, dict):
            ctx.fail('args', '%seach argument must be a {name, arg, type} mapping, got %s' % (where, _type_name(item)))
        unknown = sorted(str(k) for k in item if k not in _ARG_KEYS)
        if unknown:
            ctx.fail('args', '%sunknown key %s (an argument has name, arg and type)' % (where, names.shown(unknown[0])))
        for key in _ARG_KEYS:
            if key not in item:
                ctx.fail('args', '%san argument needs %s (got keys %s)' % (where, key, ', '.join(sorted(str(k) for k in item))))
        name, position, kind = item['name'], item['arg'], item['type']
        if not isinstance(name, str) or not _ARG_NAME_RE.fullmatch(name):
            ctx.fail('args', '%sargument name %s must match %s' % (
                where, names.shown(name) if isinstance(name, str) else _type_name(name), ARG_NAME_PATTERN))
        if name in [a['name'] for a in result]:
            ctx.fail('args', '%sargument %s is named twice' % (where, name))
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= MAX_ARG_POSITION:
            ctx.fail('args', '%sargument %s: arg must be the parameter position 1 to %d, got %s' % (
                where, name, MAX_ARG_POSITION, names.shown(position) if isinstance(position, str) else position))
        if not isinstance(kind, str) or kind not in ARG_TYPES:
            ctx.fail('args', '%sargument %s: type must be one of %s, got %s' % (
                where, name, ', '.join(ARG_TYPES), names.shown(kind) if isinstance(kind, str) else _type_name(kind)))
        result.append({'name': str(name), 'arg': int(position), 'type': str(kind)})
    return result


def data_size(args):
    """Bytes the kernel keeps per call for ``args`` at most (kretprobe data_size)."""
    return len(args) * ARG_SLOT


def _check_functions(ctx, value, returns, args=()):
    """The candidate list: [{function, returns, args}] in the user's order.

    A candidate is a symbol name (read with the probe's ``returns`` and ``args``) or a mapping
    ``{function: symbol, returns: type, args: [...]}`` for a function whose return type or
    parameters differ, e.g. on the kernels that have it (``returns`` and ``args`` optional there
    too, the probe's by default)."""
    funcs = value if isinstance(value, dict) else _str_list(value)
    if isinstance(funcs, dict):
        funcs = [funcs]
    if funcs is None:
        ctx.fail('function', 'must be a symbol name, a {function, returns} mapping or a list of '
                 'them, got %s' % _type_name(value))
    if not 1 <= len(funcs) <= MAX_FUNCTIONS:
        ctx.fail('function', 'must list 1 to %d candidate symbols, got %d'
                 % (MAX_FUNCTIONS, len(funcs)))
    result = []
    for func in funcs:
        own, own_args = returns, list(args)
        if isinstance(func, dict):
            unknown = sorted(str(k) for k in func if k not in _CANDIDATE_KEYS)
            if unknown:
                ctx.fail('function', 'candidate %s: unknown key %s (a candidate mapping has '
                         'function and returns)' % (_candidate_label(func), names.shown(unknown[0])))
            if 'function' not in func:
                ctx.fail('function', 'candidate %s: has no function (write {function: symbol, '
                         'returns: %s})' % (_candidate_label(func), '|'.join(RETURNS)))
            if 'returns' in func:
                own = _check_returns(ctx, 'function', func['returns'],
                                     'candidate %s: returns ' % _candidate_label(func))
            if 'args' in func:
                own_args = _check_args(ctx, func['args'], 'candidate %s: ' % _candidate_label(func))
            func = func['function']
        if not isinstance(func, str):
            ctx.fail('function', 'candidates must be symbol names or {function, returns} '
                     'mappings, got %s' % _type_name(func))
        if not _FUNCTION_RE.fullmatch(func):
            hint = ''
            if '.' in func:
                hint = ('; compiler clones (.isra/.part/.cold/.constprop) cannot be '
                        'probed, use the base name')
            ctx.fail('function', '%s must match %s (a kernel symbol name)%s'
                     % (names.shown(func), FUNCTION_PATTERN, hint))
        if func in [c['function'] for c in result]:
            ctx.fail('function', 'candidate %s is listed twice' % names.shown(func))
        result.append({'function': str(func), 'returns': own, 'args': own_args})
    return result


def _candidate_label(func):
    name = func.get('function')
    return names.shown(name) if isinstance(name, str) else names.shown(func)


def candidate_symbols(probe):
    """The candidate symbols of a normalized probe, in order of preference."""
    return [c['function'] for c in probe['functions']]


def _check_errnos(ctx, field, value):
    errnos = _str_list(value)
    if errnos is None:
        ctx.fail(field, 'the errno list must be a list of errno names, got %s'
                 % _type_name(value))
    if not errnos:
        ctx.fail(field, 'the errno list must not be empty')
    result = set()
    for name in errnos:
        if not isinstance(name, str) or name not in ERRNO:
            ctx.fail(field, 'unknown errno name %s (use Linux names such as ENOSPC, EDQUOT)'
                     % (names.shown(name),))
        result.add(ERRNO_ALIASES.get(name, str(name)))
    return sorted(result)


def _check_report(ctx, raw):
    """Return (report, errnos) from the 'report' and 'errnos' input keys."""
    value = raw.get('report', 'negative' if 'errnos' not in raw else 'errno')
    if 'errnos' in raw:
        if value == 'errno':
            return 'errno', _check_errnos(ctx, 'errnos', raw['errnos'])
        if not (isinstance(raw['errnos'], (list, tuple)) and not raw['errnos']):
            ctx.fail('errnos', 'is only allowed with report: errno')
    if isinstance(value, str):
        if value in ('negative', 'nonzero', 'any'):
            return str(value), []
        if value == 'errno':
            ctx.fail('report', "'errno' needs a list of errno names: "
                     "report: {errno: [ENOSPC, ...]}")
        if value in ERRNO:
            ctx.fail('report', 'must be negative, nonzero, any, a list of errno names '
                     'or {errno: [...]}; for one errno write [%s]' % value)
        ctx.fail('report', 'must be negative, nonzero, any, a list of errno names '
                 'or {errno: [...]}, got %s' % names.shown(value))
    if isinstance(value, dict):
        if list(value) != ['errno']:
            ctx.fail('report', 'a mapping must have exactly one key, errno, got %s'
                     % (', '.join(sorted(str(k) for k in value)) or 'an empty mapping'))
        return 'errno', _check_errnos(ctx, 'report', value['errno'])
    if isinstance(value, (list, tuple)):
        return 'errno', _check_errnos(ctx, 'report', value)
    ctx.fail('report', 'must be negative, nonzero, any, a list of errno names or '
             '{errno: [...]}, got %s' % _type_name(value))


def _check_int(ctx, raw, field):
    default, low, high, why = _INT_FIELDS[field]
    try:
        return names.as_int('x', raw.get(field, default), low, high, why)
    except names.InvalidValue as e:
        ctx.fail(field, str(e)[len('x: '):])


def _check_bool(ctx, raw, field, default):
    try:
        return names.as_bool('x', raw.get(field, default))
    except names.InvalidValue as e:
        ctx.fail(field, str(e)[len('x: '):])


def check_comm_list(value, what):
    """A list of process names (exact, or a prefix with a trailing ``*``) -> the list, duplicates dropped, in
    the user's order; ProbeSpecError ('<what>: ...') otherwise. A single name may be given as a string."""
    items = _str_list(value) if value is not None else None
    if items is None:
        raise ProbeSpecError('%s: must be a list of process names, got %s' % (what, _type_name(value)))
    if len(items) > MAX_FILTER_VALUES:
        raise ProbeSpecError('%s: at most %d process names, got %d' % (what, MAX_FILTER_VALUES, len(items)))
    out = []
    for item in items:
        if not isinstance(item, str) or not _COMM_RE.fullmatch(item):
            raise ProbeSpecError('%s: %s is not a process name (at most 15 characters of letters, digits, space and '
                                 '_.:@+-, a trailing * for a prefix)' % (
                                     what, names.shown(item) if isinstance(item, str) else _type_name(item)))
        if item not in out:
            out.append(str(item))
    return out


def _check_arg_filter(ctx, key, value):
    """filter args/args_not: {argument name: [values, sorted]}; the names are checked against the probe's
    arguments later (_check_filter_args)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.fail('filter', '%s must be a mapping of argument names to values (args: {path: ["/etc/*"]}), got %s'
                 % (key, _type_name(value)))
    if len(value) > MAX_ARGS:
        ctx.fail('filter', '%s: at most %d arguments, got %d' % (key, MAX_ARGS, len(value)))
    out = {}
    for name, items in value.items():
        if not isinstance(name, str) or not _ARG_NAME_RE.fullmatch(name):
            ctx.fail('filter', '%s: %s is not an argument name (%s)' % (
                key, names.shown(name) if isinstance(name, str) else _type_name(name), ARG_NAME_PATTERN))
        items = _str_list(items)
        if not items:
            ctx.fail('filter', '%s.%s must be a list of 1 to %d strings' % (key, name, MAX_FILTER_VALUES))
        if len(items) > MAX_FILTER_VALUES:
            ctx.fail('filter', '%s.%s: at most %d values, got %d' % (key, name, MAX_FILTER_VALUES, len(items)))
        checked = []
        for item in items:
            if not isinstance(item, str):
                ctx.fail('filter', '%s.%s: each value must be a string, got %s' % (key, name, _type_name(item)))
            text = item[:-1] if item.endswith('*') else item
            if not text:
                ctx.fail('filter', '%s.%s: %s matches every string; give some text before the *' % (
                    key, name, names.shown(item)))
            if '*' in text:
                ctx.fail('filter', '%s.%s: %s has a * that is not at its end (a trailing * marks a prefix; there '
                         'are no other wildcards)' % (key, name, names.shown(item)))
            if _FILTER_TEXT_BAD.search(text):
                ctx.fail('filter', '%s.%s: %s holds a control character' % (key, name, names.shown(item)))
            if len(text.encode('utf-8')) > ARG_STR_MAX - 1:
                ctx.fail('filter', '%s.%s: a value is at most %d bytes (what is captured of a string), got %d' % (
                    key, name, ARG_STR_MAX - 1, len(text.encode('utf-8'))))
            if item not in checked:
                checked.append(str(item))
        out[str(name)] = sorted(checked)
    return out


def _check_cgroup_filter(ctx, key, value):
    """filter cgroup/cgroup_not: absolute cgroup paths, a trailing '/' dropped, sorted."""
    items = _str_list(value if value is not None else [])
    if items is None:
        ctx.fail('filter', '%s must be a list of cgroup paths such as /system.slice/nginx.service, got %s'
                 % (key, _type_name(value)))
    if len(items) > MAX_FILTER_VALUES:
        ctx.fail('filter', '%s: at most %d values, got %d' % (key, MAX_FILTER_VALUES, len(items)))
    out = []
    for item in items:
        if not isinstance(item, str) or not item.startswith('/'):
            ctx.fail('filter', '%s: %s is not a cgroup path (it starts with /, as in /proc/<pid>/cgroup: '
                     '/system.slice/nginx.service)' % (key, names.shown(item) if isinstance(item, str) else _type_name(item)))
        path = item.rstrip('/') if item != '/' else item
        comps = path.split('/')[1:]
        if path == '/':
            ctx.fail('filter', '%s: / is every process; name a cgroup below it' % key)
        if any(c in ('', '.', '..') for c in comps):
            ctx.fail('filter', '%s: %s has an empty, . or .. component' % (key, names.shown(item)))
        if '*' in path:
            ctx.fail('filter', '%s: %s has a *; a cgroup path already matches every cgroup below it (no wildcards)'
                     % (key, names.shown(item)))
        if _FILTER_TEXT_BAD.search(path):
            ctx.fail('filter', '%s: %s holds a control character' % (key, names.shown(item)))
        if len(path.encode('utf-8')) > CGROUP_FILTER_MAX or len(comps) > CGROUP_FILTER_DEPTH:
            ctx.fail('filter', '%s: a cgroup path is at most %d bytes and %d components, got %d bytes and %d' % (
                key, CGROUP_FILTER_MAX, CGROUP_FILTER_DEPTH, len(path.encode('utf-8')), len(comps)))
        if path not in out:
            out.append(str(path))
    return sorted(out)


def _check_filter_args(ctx, filters, functions):
    """Every argument a filter names is a string-like argument of every candidate (any may be chosen)."""
    for key in ('args', 'args_not'):
        for name in sorted(filters[key]):
            for cand in functions:
                kinds = dict((a['name'], a['type']) for a in cand['args'])
                if name not in kinds:
                    ctx.fail('filter', '%s.%s: candidate %s captures no argument %s (its args: %s)' % (
                        key, name, cand['function'], name, ', '.join(sorted(kinds)) or 'none'))
                if kinds[name] not in STRING_ARG_TYPES:
                    ctx.fail('filter', '%s.%s: argument %s of candidate %s is of type %s; only %s arguments can be '
                             'filtered on' % (key, name, name, cand['function'], kinds[name], ', '.join(STRING_ARG_TYPES)))


def _check_filter(ctx, value):
    """The filter mapping, normalized: {comm: [...], comm_not: [...], uid: [...], uid_not: [...] (sorted),
    args: {name: [...]}, args_not: {name: [...]}}."""
    if value is None:
        return dict((k, {} if k in ('args', 'args_not') else []) for k in FILTER_KEYS)
    if not isinstance(value, dict):
        ctx.fail('filter', 'must be a mapping with keys %s, got %s' % (', '.join(FILTER_KEYS), _type_name(value)))
    unknown = sorted(str(k) for k in value if k not in FILTER_KEYS)
    if unknown:
        ctx.fail('filter', 'unknown key %s (known: %s)' % (names.shown(unknown[0]), ', '.join(FILTER_KEYS)))
    out = {}
    for key in FILTER_KEYS:
        if key in ('args', 'args_not'):
            out[key] = _check_arg_filter(ctx, key, value.get(key))
            continue
        if key in ('cgroup', 'cgroup_not'):
            out[key] = _check_cgroup_filter(ctx, key, value.get(key))
            continue
        items = _str_list(value.get(key, [])) if key.startswith('comm') else value.get(key, [])
        if isinstance(items, (int, str)) and not isinstance(items, bool) and key.startswith('uid'):
            items = [items]
        if not isinstance(items, (list, tuple)):
            ctx.fail('filter', '%s must be a list, got %s' % (key, _type_name(value.get(key))))
        if len(items) > MAX_FILTER_VALUES:
            ctx.fail('filter', '%s: at most %d values, got %d' % (key, MAX_FILTER_VALUES, len(items)))
        checked = []
        for item in items:
            if key.startswith('comm'):
                if not isinstance(item, str) or not _COMM_RE.fullmatch(item):
                    ctx.fail('filter', '%s: %s is not a process name (at most 15 characters of letters, digits, '
                             'space and _.:@+-, a trailing * for a prefix)' % (
                                 key, names.shown(item) if isinstance(item, str) else _type_name(item)))
            else:
                try:
                    item = names.as_int('x', item, 0, UID_MAX, '')
                except names.InvalidValue:
                    ctx.fail('filter', '%s: %s is not a user id (0 to %d)' % (
                        key, names.shown(item) if isinstance(item, str) else item, UID_MAX))
            if item not in checked:
                checked.append(item)
        out[key] = sorted(checked)
    return out


def _check_duration(ctx, value):
    """slower_than as nanoseconds (None when absent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        ctx.fail('slower_than', 'must be a duration such as 100ms, 2s, 500us or a number of ns, got %s' % _type_name(value))
    if isinstance(value, str):
        m = _DURATION_RE.fullmatch(value.strip())
        if not m:
            ctx.fail('slower_than', 'must be a duration such as 100ms, 2s, 500us or a number of ns, got %s'
                     % names.shown(value))
        value = int(m.group(1)) * _UNITS[m.group(2)]
    if not SLOWER_THAN_MIN <= value <= SLOWER_THAN_MAX:
        ctx.fail('slower_than', 'must be from 1us to 3600s, got %d ns' % value)
    return int(value)


def _expand(index, raw):
    """A preset name becomes the preset's mapping; a mapping is returned as is."""
    if isinstance(raw, str):
        if raw not in PRESETS:
            raise ProbeSpecError('probe #%d: %s is not a preset name (known: %s)'
                                 % (index, names.shown(raw), ', '.join(sorted(PRESETS))))
        return preset(raw)
    if not isinstance(raw, dict):
        raise ProbeSpecError('probe #%d: must be a mapping or a preset name, got %s'
                             % (index, _type_name(raw)))
    return raw


def _normalize_one(index, raw, log_exempt=LOG_EXEMPT_DEFAULT):
    raw = _expand(index, raw)
    ctx = _Probe(index, raw)
    unknown = sorted(str(k) for k in raw if k not in _INPUT_KEYS)
    if unknown:
        ctx.fail(unknown[0], 'unknown key (allowed: %s)' % ', '.join(
            sorted(_INPUT_KEYS - set(['functions', 'errnos']))))
    if 'name' not in raw:
        ctx.fail('name', 'is required')
    name = _check_name(ctx, raw['name'])
    if 'function' in raw and 'functions' in raw:
        ctx.fail('function', "give either 'function' or 'functions', not both")
    if 'function' not in raw and 'functions' not in raw:
        ctx.fail('function', 'is required (a symbol name or a list of candidates)')
    returns = _check_returns(ctx, 'returns', raw.get('returns', 'long'))
    args = _check_args(ctx, raw.get('args', []))
    functions = _check_functions(ctx, raw.get('function', raw.get('functions')), returns, args)
    report, errnos = _check_report(ctx, raw)
    log = _check_bool(ctx, raw, 'log', True)
    slower_than = _check_duration(ctx, raw.get('slower_than'))
    latency = _check_bool(ctx, raw, 'latency', False)
    if slower_than is not None and 'latency' in raw and not latency:
        ctx.fail('latency', 'slower_than needs latency (it is on by default with slower_than; drop latency: false)')
    latency = latency or slower_than is not None
    filters = _check_filter(ctx, raw.get('filter'))
    _check_filter_args(ctx, filters, functions)
    try:
        exempt = check_comm_list(raw.get('log_exempt', log_exempt), 'log_exempt')
    except ProbeSpecError as e:
        ctx.fail('log_exempt', str(e)[len('log_exempt: '):])
    for cand in functions:
        if log and not cand['args'] and on_printk_path(cand['function']):
            ctx.fail('function', 'candidate %s runs on the kernel log\'s own path, where the line this probe logs '
                     '(vprintk_emit from the return handler) can wait for a lock its own CPU holds and hang it; give '
                     'the probe args (its events then go to the root-only ring, not the log) or log: false'
                     % names.shown(cand['function']))
    return {
        'name': name,
        'functions': functions,
        'returns': returns,
        'args': args,
        'latency': latency,
        'slower_than': slower_than,
        'filter': filters,
        'report': report,
        'errnos': errnos,
        'maxactive': _check_int(ctx, raw, 'maxactive'),
        'log': log,
        'log_burst': _check_int(ctx, raw, 'log_burst'),
        'log_interval': _check_int(ctx, raw, 'log_interval'),
        'log_exempt': exempt,
    }


def preset(name):
    """Return a fresh copy of preset ``name`` as a user-input mapping with its name."""
    result = {'name': name}
    result.update(copy.deepcopy(PRESETS[name]))
    return result


def normalize(probes, log_exempt=None):
    """Validate the user's probe list and return the normalized spec (architecture.md).

    ``None`` or an empty list means the default presets. Entries are mappings or preset
    names. Normalizing a normalized spec returns it unchanged. ``log_exempt`` (the checked
    ``kprobes_fleet_log_exempt``; None: LOG_EXEMPT_DEFAULT) is the ``log_exempt`` of every probe
    that does not give its own.
    """
    log_exempt = list(LOG_EXEMPT_DEFAULT) if log_exempt is None else log_exempt
    if probes is None or (isinstance(probes, (list, tuple)) and not probes):
        probes = list(DEFAULT_PRESETS)
    if not isinstance(probes, (list, tuple)):
        raise ProbeSpecError('probes: must be a list of probes, got %s' % _type_name(probes))
    if len(probes) > MAX_PROBES:
        raise ProbeSpecError('probes: at most %d probes per host, got %d (each one is a kprobe on a '
                             'kernel function and a log budget of its own)' % (MAX_PROBES, len(probes)))
    result = []
    seen = {}
    for index, raw in enumerate(probes, 1):
        probe = _normalize_one(index, raw, log_exempt)
        if probe['name'] in seen:
            _Probe(index, probe).fail('name', 'duplicate name, already used by probe #%d'
                                      % seen[probe['name']])
        seen[probe['name']] = index
        result.append(probe)
    total = sum(p['maxactive'] for p in result)
    if total > MAX_TOTAL_MAXACTIVE:
        raise ProbeSpecError('probes: maxactive adds up to %d, at most %d per host: since Linux 6.7 '
                             'every CPU keeps a ring of roundup_pow_of_two(maxactive) slots per '
                             'probe, so this bounds kernel memory (16 MiB on 128 CPUs); lower '
                             'maxactive of the probes that do not sleep'
                             % (total, MAX_TOTAL_MAXACTIVE))
    memory = sum(p['maxactive'] * max(data_size(c['args']) for c in p['functions']) for p in result)
    if memory > ARGS_MEMORY_MAX:
        raise ProbeSpecError('probes: captured arguments need %d bytes of kernel memory (maxactive x bytes per call, '
                             'summed over probes), at most %d: lower maxactive of the probes with args, or capture '
                             'fewer arguments (%d bytes each per call)' % (memory, ARGS_MEMORY_MAX, ARG_SLOT))
    return result


def module_only(probes):
    """[(probe name, what only the module backend does)] for the probes that need the module: captured
    arguments (args) and latency."""
    out = []
    for p in probes or []:
        if not isinstance(p, dict):
            continue
        needs = []
        if p.get('args') or any(isinstance(c, dict) and c.get('args') for c in p.get('functions') or []):
            needs.append('captures arguments (args)')
        if p.get('latency') or p.get('slower_than'):
            needs.append('times its calls (latency)')
        if any((p.get('filter') or {}).get(k) for k in FILTER_KEYS):
            needs.append('filters in the kernel (filter)')
        if needs:
            out.append((str(p.get('name')), ' and '.join(needs)))
    return out


def validate_module_name(name):
    """Return ``name`` if it is a valid kernel module name, else raise ProbeSpecError."""
    try:
        return names.module_name(name)
    except names.InvalidValue as e:
        raise ProbeSpecError(str(e))


def resolve(normalized, functions):
    """Add ``function`` (the symbol chosen on the host) to each normalized probe.

    ``functions`` maps probe name -> symbol. The spec is validated again (normalize()
    is idempotent) and the symbol must be one of the probe's candidates, so the result
    is always safe to render into C, whatever path it took to get here. ``returns`` of
    the result is the chosen candidate's: the template and the tracefs fetch type read
    the return value of the function that is probed, as that function declares it.
    """
    functions = functions or {}
    result = []
    for index, probe in enumerate(normalize(normalized) if normalized else [], 1):
        ctx = _Probe(index, probe)
        symbol = functions.get(probe['name'])
        candidates = candidate_symbols(probe)
        if not symbol:
            ctx.fail('function', 'none of the candidates is available on this host: %s'
                     % ', '.join(candidates))
        if symbol not in candidates:
            ctx.fail('function', 'resolved symbol %s is not one of the candidates %s'
                     % (names.shown(symbol), ', '.join(candidates)))
        resolved = copy.deepcopy(probe)
        resolved['function'] = str(symbol)
        resolved['returns'] = probe['functions'][candidates.index(symbol)]['returns']
        resolved['args'] = probe['functions'][candidates.index(symbol)]['args']
        result.append(resolved)
    return result


def check_resolved(probes):
    """A resolved probe list (resolve()'s output) from elsewhere, checked again with resolve().

    The one check of a resolved list, for every path that receives one (build plans on the
    controller, the tracefs backend on a host). Returns the list resolve() makes of it."""
    if not isinstance(probes, list):
        raise ProbeSpecError('probes: must be a list of resolved probes')
    for index, probe in enumerate(probes, 1):
        if not isinstance(probe, dict):
            raise ProbeSpecError('probes: item #%d must be a mapping' % index)
    functions = dict((p['name'], p.get('function')) for p in probes if isinstance(p.get('name'), str))
    return resolve([dict((k, v) for k, v in p.items() if k != 'function') for p in probes], functions)


def _digest(data):
    text = json.dumps(data, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def spec_hash(module, resolved_probes, template_sha):
    """First 16 hex of sha256 over canonical JSON {module, probes, template}."""
    return _digest({'module': module, 'probes': resolved_probes, 'template': template_sha})


def build_key(arch, release, version, spec_hash, signer=None):
    """First 16 hex of sha256 over canonical JSON {arch, release, version, spec_hash[, signer]}.

    ``signer`` (the sha256 of the signing cert, when modules are signed) enters the JSON only
    when given, so the key of an unsigned module is the same as before signing existed."""
    data = {'arch': arch, 'release': release, 'version': version, 'spec_hash': spec_hash}
    if signer:
        data['signer'] = signer
    return _digest(data)
