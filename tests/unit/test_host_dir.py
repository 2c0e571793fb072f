# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kprobes.fleet developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kprobes.fleet.host_dir takes, keeps and deletes only a directory that is ours.

Runs HostDir on the real file system below pytest's tmp_path. names.host_path refuses
anything below /tmp, so FORBIDDEN_TREES is emptied for these tests; the ancestor check
(check_parents) is tested on its own, since /tmp itself is world-writable (1777).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import stat
import time

import pytest

from ansible_collections.kprobes.fleet.plugins.module_utils import names
from ansible_collections.kprobes.fleet.plugins.modules import host_dir
from ansible_collections.kprobes.fleet.plugins.modules.host_dir import HostDir
from fakes import Failed, FakeModule

MARK = names.HOST_DIR_MARK


def make(path, state='present', subdirs=None, check_mode=False, stale_after=None):
    return HostDir(FakeModule({'path': str(path), 'state': state, 'subdirs': list(subdirs or []),
                               'stale_after': stale_after}, check_mode=check_mode))


def run(path, **kwargs):
    return make(path, **kwargs).apply()


def mode(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def snapshot(top):
    """Every path below ``top`` with its mode and (for files) content."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(str(top)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(p, 'rb') as f:
                    content = f.read()
            seen[os.path.relpath(p, str(top))] = (stat.S_IMODE(st.st_mode), content)
    return seen


@pytest.fixture
def base(tmp_path, monkeypatch):
    """A 0755 directory below tmp_path, allowed as a host path, ancestors not checked."""
    monkeypatch.setattr(names, 'FORBIDDEN_TREES', ())
    monkeypatch.setattr(HostDir, 'check_parents', lambda self: None)
    os.chmod(str(tmp_path), 0o755)
    d = tmp_path / 'host'
    d.mkdir()
    os.chmod(str(d), 0o755)
    return d


# -- present ----------------------------------------------------------------------------
def test_creates_a_new_directory_0700_with_mark_and_subdirs(base):
    path = base / 'kprobes-fleet'
    result = run(path, subdirs=['modules', 'state'])
    assert result['changed'] is True
    assert result['path'] == str(path)
    assert result['msg'] == 'created %s' % path
    assert mode(path) == 0o700
    mark = path / MARK
    assert mark.is_file() and not mark.is_symlink()
    assert mode(mark) == 0o600
    assert names.MARK in mark.read_text()
    for sub in ('modules', 'state'):
        assert (path / sub).is_dir()
        assert mode(path / sub) == 0o700
    assert sorted(os.listdir(str(path))) == sorted([MARK, 'modules', 'state'])


def test_adopts_an_existing_empty_directory(base):
    path = base / 'kf'
    path.mkdir()
    os.chmod(str(path), 0o700)  # and owned by root:root (the test's own ids when not run as root)
    result = run(path, subdirs=['state'])
    assert result['changed'] is True
    assert result['msg'] == 'adopted empty %s' % path
    assert mode(path) == 0o700
    assert (path / MARK).is_file()
    assert mode(path / 'state') == 0o700


def test_refuses_a_non_empty_directory_without_the_mark(base):
    path = base / 'theirs'
    path.mkdir()
    os.chmod(str(path), 0o755)
    (path / 'data').write_text('precious\n')
    before = snapshot(base)
    with pytest.raises(Failed) as e:
        run(path, subdirs=['state'])
    assert 'is not empty' in str(e.value) and MARK in str(e.value)
    assert 'refusing to touch it' in str(e.value)
    assert snapshot(base) == before  # no mark, no subdir, no chmod
    assert mode(path) == 0o755


def test_a_non_empty_unmarked_directory_is_refused_in_check_mode_too(base):
    path = base / 'theirs'
    path.mkdir()
    (path / 'data').write_text('precious\n')
    before = snapshot(base)
    with pytest.raises(Failed, match='is not empty'):
        run(path, check_mode=True)
    assert snapshot(base) == before


@pytest.mark.parametrize('state', ['present', 'absent'])
def test_refuses_a_symlink_even_to_our_own_directory(base, state):
    real = base / 'real'
    run(real)  # ours, marked
    (real / 'keep').write_text('x')
    os.chmod(str(real), 0o755)
    link = base / 'link'
    link.symlink_to(real)
    before = snapshot(base)
    with pytest.raises(Failed, match='symbolic link' if state == 'present' else 'not a directory'):
        run(link, state=state)
    assert snapshot(base) == before
    assert link.is_symlink()
    assert mode(real) == 0o755


def test_refuses_a_symlink_to_an_empty_directory(base):
    real = base / 'empty'
    real.mkdir()
    os.chmod(str(real), 0o755)
    link = base / 'link'
    link.symlink_to(real)
    with pytest.raises(Failed, match='symbolic link'):
        run(link, subdirs=['state'])
    assert os.listdir(str(real)) == []  # no mark written through the link
    assert mode(real) == 0o755


@pytest.mark.parametrize('state', ['present', 'absent'])
def test_refuses_a_regular_file(base, state):
    path = base / 'file'
    path.write_text('not a directory\n')
    os.chmod(str(path), 0o644)
    with pytest.raises(Failed, match='not a directory'):
        run(path, state=state)
    assert path.read_text() == 'not a directory\n'
    assert mode(path) == 0o644


def test_a_marked_directory_is_ours_and_a_rerun_changes_nothing(base):
    path = base / 'kf'
    assert run(path, subdirs=['modules', 'state'])['changed'] is True
    (path / 'state' / 'cursor').write_text('{}')
    before = snapshot(path)
    result = run(path, subdirs=['modules', 'state'])
    assert result['changed'] is False
    assert result['msg'] == '%s is ours' % path
    assert snapshot(path) == before
    assert make(path).inspect() == 'ours'


def test_a_marked_directory_with_content_is_ours(base):
    path = base / 'kf'
    path.mkdir()
    (path / MARK).write_text('x')
    (path / 'state').mkdir()
    (path / 'state' / 'old').write_text('kept')
    assert make(path).inspect() == 'ours'
    result = run(path, subdirs=['state', 'modules'])
    assert result['changed'] is True  # modules/ created, state/ chmod 0700
    assert (path / 'state' / 'old').read_text() == 'kept'
    assert mode(path / 'modules') == 0o700


def test_a_symlinked_mark_does_not_make_a_directory_ours(base):
    target = base / 'somefile'
    target.write_text('x')
    path = base / 'kf'
    path.mkdir()
    (path / MARK).symlink_to(target)
    with pytest.raises(Failed, match='is not empty'):
        run(path)
    with pytest.raises(Failed, match='not ours'):
        run(path, state='absent')
    assert path.is_dir() and target.read_text() == 'x'


def test_a_symlinked_subdir_is_refused_and_its_target_untouched(base):
    path = base / 'kf'
    run(path)
    elsewhere = base / 'elsewhere'
    elsewhere.mkdir()
    os.chmod(str(elsewhere), 0o755)
    (path / 'state').symlink_to(elsewhere)
    with pytest.raises(Failed, match='symbolic link'):
        run(path, subdirs=['state'])
    assert mode(elsewhere) == 0o755


def test_check_mode_creates_nothing(base):
    path = base / 'kf'
    result = run(path, subdirs=['state'], check_mode=True)
    assert result['changed'] is True
    assert result['msg'] == 'would create %s' % path
    assert not os.path.lexists(str(path))


def test_check_mode_does_not_adopt_an_empty_directory(base):
    path = base / 'kf'
    path.mkdir()
    os.chmod(str(path), 0o700)
    result = run(path, subdirs=['state'], check_mode=True)
    assert result['changed'] is True
    assert result['msg'] == 'would adopt empty %s' % path
    assert os.listdir(str(path)) == []
    assert mode(path) == 0o700


def test_check_mode_on_our_directory_reports_a_missing_subdir(base):
    path = base / 'kf'
    run(path)
    before = snapshot(path)
    assert run(path, subdirs=['state'], check_mode=True)['changed'] is True
    assert snapshot(path) == before
    assert run(path, check_mode=True)['changed'] is False


def test_check_mode_reports_a_mode_a_real_run_would_fix(base):
    path = base / 'kf'
    run(path, subdirs=['state'])
    os.chmod(str(path / 'state'), 0o777)
    assert run(path, subdirs=['state'], check_mode=True)['changed'] is True
    assert mode(path / 'state') == 0o777
    assert run(path, subdirs=['state'])['changed'] is True
    assert mode(path / 'state') == 0o700
    assert run(path, subdirs=['state'], check_mode=True)['changed'] is False


# -- never adopt someone else's directory (#20 item 3) -------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root to chown')


def empty_dir(base, dir_mode, owner=None):
    path = base / 'theirs'
    path.mkdir()
    os.chmod(str(path), dir_mode)
    if owner is not None:
        os.chown(str(path), *owner)
    return path


def assert_refused_untouched(base, path, words, state='present', check_mode=False):
    before = snapshot(base)
    st = os.lstat(str(path))
    with pytest.raises(Failed) as e:
        run(path, subdirs=['modules', 'state'], state=state, check_mode=check_mode)
    msg = str(e.value)
    assert msg.startswith('%s: ' % path) and msg.endswith('refusing to touch it'), msg
    for word in words:
        assert word in msg, msg
    after = os.lstat(str(path))
    assert snapshot(base) == before and os.listdir(str(path)) == []  # no mark, no subdir
    assert (after.st_mode, after.st_uid, after.st_gid) == (st.st_mode, st.st_uid, st.st_gid)
    return msg


@pytest.mark.parametrize('check_mode', [False, True])
@pytest.mark.parametrize('dir_mode,shown', [
    (0o755, '0755'),    # /run/sshd: root:root 0755, empty
    (0o730, '0730'),    # a group may write into it
    (0o1730, '1730'),   # /var/spool/cron/crontabs' mode
    (0o2700, '2700'),   # setgid: no other bits either
    (0o500, '0500'),
])
def test_an_empty_directory_with_another_mode_is_refused(base, dir_mode, shown, check_mode):
    path = empty_dir(base, dir_mode)
    msg = assert_refused_untouched(base, path, ['mode %s, not 0700' % shown, 'no .kprobes-fleet mark',
                                                'adopted only when it is empty'], check_mode=check_mode)
    assert 'owned by' not in msg.split('; ', maxsplit=1)[0]  # the owner is right: only what is wrong is named


@needs_root
@pytest.mark.parametrize('check_mode', [False, True])
def test_a_new_users_empty_home_is_refused(base, check_mode):
    path = empty_dir(base, 0o700, owner=(12345, 12345))
    assert_refused_untouched(base, path, ['owned by 12345:12345, not root:root'], check_mode=check_mode)


@needs_root
def test_a_crontabs_like_directory_is_refused_naming_owner_and_mode(base):
    path = empty_dir(base, 0o1730, owner=(0, 12345))  # root:crontab 1730
    msg = assert_refused_untouched(base, path, ['owned by root:12345, not root:root', 'mode 1730, not 0700'])
    assert msg.count('refusing') == 1


def test_an_empty_root_0700_directory_is_adopted_and_a_purge_deletes_only_it(base):
    path = empty_dir(base, 0o700)
    assert run(path, subdirs=['state'])['msg'] == 'adopted empty %s' % path
    assert (path / MARK).is_file()
    assert run(path, state='absent')['changed'] is True
    assert not os.path.lexists(str(path)) and base.is_dir()


@needs_root
def test_a_mark_someone_else_wrote_does_not_make_a_directory_ours(base):
    path = empty_dir(base, 0o700, owner=(12345, 12345))
    (path / MARK).write_text('kprobes.fleet\n')
    os.chown(str(path / MARK), 12345, 12345)
    before = snapshot(base)
    with pytest.raises(Failed, match='is not ours: it is owned by uid 12345, not by root'):
        run(path, subdirs=['state'])
    with pytest.raises(Failed, match='it is owned by uid 12345, not by root .*, so it is not ours'):
        run(path, state='absent')
    assert snapshot(base) == before and os.lstat(str(path)).st_uid == 12345


@needs_root
def test_a_mark_owned_by_another_user_in_a_root_directory_is_not_ours(base):
    path = empty_dir(base, 0o777)  # anyone may write into it
    (path / MARK).write_text('kprobes.fleet\n')
    os.chown(str(path / MARK), 12345, 12345)
    with pytest.raises(Failed, match='its .kprobes-fleet mark is owned by uid 12345'):
        run(path, state='absent')
    with pytest.raises(Failed, match='is not ours'):
        run(path)
    assert (path / MARK).is_file() and mode(path) == 0o777


def test_what_an_older_collect_left_is_refused_with_what_to_do(base):
    path = empty_dir(base, 0o700)
    (path / 'state').mkdir(mode=0o700)
    (path / 'state' / 'kprobes_fleet.kmsg-cursor').write_text('{"boot_id": "b", "next_seq": 3}\n')
    before = snapshot(base)
    with pytest.raises(Failed) as e:
        run(path, subdirs=SUBS)
    msg = str(e.value)
    assert 'has no .kprobes-fleet mark, so it is not ours' in msg
    assert 'an older kprobes.fleet collect left' in msg and 'rm -r %s' % path in msg
    assert snapshot(base) == before
    (path / 'state' / 'other').write_text('x')  # anything else in it: no such hint
    with pytest.raises(Failed) as e:
        run(path, subdirs=SUBS)
    assert 'older kprobes.fleet collect' not in str(e.value)


def test_missing_parents_are_created_0755_unmarked_and_a_purge_leaves_them(base):
    path = base / 'a' / 'b' / 'kf'
    old = os.umask(0o077)
    try:
        check = run(path, subdirs=['state'], check_mode=True)
        assert check['created_parents'] == [str(base / 'a'), str(base / 'a' / 'b')]
        assert not os.path.lexists(str(base / 'a'))
        result = run(path, subdirs=['state'])
    finally:
        os.umask(old)
    assert result['created_parents'] == [str(base / 'a'), str(base / 'a' / 'b')]
    assert result['msg'].startswith('created %s (and its missing parents %s, %s' % (path, base / 'a', base / 'a' / 'b'))
    for parent in (base / 'a', base / 'a' / 'b'):
        assert mode(parent) == 0o755 and not (parent / MARK).exists()
        assert (os.lstat(str(parent)).st_uid, os.lstat(str(parent)).st_gid) == \
            ((0, 0) if os.geteuid() == 0 else (os.geteuid(), os.getegid()))
    assert mode(path) == 0o700 and (path / MARK).is_file()
    assert run(path, subdirs=['state'])['created_parents'] == []
    run(path, state='absent')
    assert not os.path.lexists(str(path)) and (base / 'a' / 'b').is_dir()
    with pytest.raises(Failed, match='no .kprobes-fleet mark'):  # a parent we made is not ours to delete
        run(base / 'a' / 'b', state='absent')


# -- what a run that died left (stale_after) -------------------------------------------------
SUBS = ['modules', 'state', 'build']


def aged(path, seconds):
    t = time.time() - seconds
    os.utime(str(path), (t, t))


@pytest.fixture
def ours(base, monkeypatch):
    """Our directory as a deploy leaves it, on a host up for 10,000 s."""
    monkeypatch.setattr(host_dir, 'uptime', lambda: 10000.0)
    path = base / 'kf'
    run(path, subdirs=SUBS)
    return path


def test_stale_after_removes_transfer_copies_of_any_age(ours):
    ko = ours / 'modules' / 'kprobes_fleet.ko'
    ko.write_bytes(b'\x7fELF')
    result = run(ours, subdirs=SUBS, stale_after=4200)
    assert result['changed'] is True and result['removed'] == [str(ko)]
    assert not ko.exists()
    assert run(ours, subdirs=SUBS, stale_after=4200) == dict(result, changed=False, removed=[])


def test_stale_after_removes_old_build_dirs_and_keeps_a_live_build(ours):
    old, young = ours / 'build' / '0123456789abcdef', ours / 'build' / 'fedcba9876543210'
    for d in (old, young):
        d.mkdir()
        (d / 'kf.c').write_text('x')
    aged(old, 5000)
    aged(young, 60)  # a build host may be building it for another host now
    result = run(ours, subdirs=SUBS, stale_after=4200)
    assert result['removed'] == [str(old)]
    assert not old.exists() and (young / 'kf.c').exists()


def test_a_build_dir_from_before_this_boot_is_stale_whatever_stale_after(ours, monkeypatch):
    d = ours / 'build' / 'abcdef0123456789'
    d.mkdir()
    aged(d, 700)
    monkeypatch.setattr(host_dir, 'uptime', lambda: 600.0)  # rebooted 600 s ago
    assert run(ours, subdirs=SUBS, stale_after=86400)['removed'] == [str(d)]


def test_stale_after_leaves_what_does_not_match_or_is_a_link(ours, tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'keep').write_text('x')
    keep = [ours / 'modules' / 'notes.txt', ours / 'state' / 'x.ko', ours / 'build' / 'README']
    for f in keep:
        f.write_text('x')
        aged(f, 99999)
    os.mkdir(str(ours / 'modules' / 'dir.ko'))
    os.symlink(str(outside), str(ours / 'build' / 'abc'))  # a link with a hex name: the link is not a build
    os.symlink(str(outside / 'keep'), str(ours / 'modules' / 'link.ko'))
    old = time.time() - 99999  # the link and what it points to look stale: only the type keeps them
    os.utime(str(ours / 'build' / 'abc'), (old, old), follow_symlinks=False)
    aged(outside, 99999)
    assert run(ours, subdirs=SUBS, stale_after=60)['removed'] == []
    assert all(f.exists() for f in keep) and (outside / 'keep').exists()
    assert (ours / 'modules' / 'dir.ko').is_dir()


def test_a_symlinked_modules_dir_is_not_walked(base, monkeypatch, tmp_path):
    monkeypatch.setattr(host_dir, 'uptime', lambda: 10000.0)
    path = base / 'kf'
    run(path, subdirs=['state'])
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'precious.ko').write_text('x')
    os.symlink(str(elsewhere), str(path / 'modules'))
    with pytest.raises(Failed):
        run(path, subdirs=SUBS, stale_after=60)
    assert (elsewhere / 'precious.ko').exists()


@pytest.mark.parametrize('value', [0, -1, 59, 7 * 86400 + 1])
def test_a_stale_after_out_of_bounds_fails_before_anything_is_touched(ours, value):
    ko = ours / 'modules' / 'kprobes_fleet.ko'
    ko.write_text('x')
    with pytest.raises(Failed) as e:
        run(ours, subdirs=SUBS, stale_after=value)
    assert 'stale_after: must be between 60 and 604800' in str(e.value)
    assert ko.exists()


def test_stale_after_in_check_mode_reports_and_removes_nothing(ours):
    ko = ours / 'modules' / 'kprobes_fleet.ko'
    ko.write_text('x')
    result = run(ours, subdirs=SUBS, stale_after=4200, check_mode=True)
    assert result['changed'] is True and result['removed'] == [str(ko)]
    assert ko.exists()


def test_without_stale_after_nothing_is_removed(ours):
    ko = ours / 'modules' / 'kprobes_fleet.ko'
    ko.write_text('x')
    assert run(ours, subdirs=SUBS)['removed'] == [] and ko.exists()


def test_a_directory_that_is_not_ours_yet_is_not_cleaned(base, monkeypatch):
    monkeypatch.setattr(host_dir, 'uptime', lambda: 10000.0)
    path = base / 'kf'
    path.mkdir()
    os.chmod(str(path), 0o700)
    result = run(path, subdirs=SUBS, stale_after=60)
    assert result['removed'] == [] and result['msg'] == 'adopted empty %s' % path


# -- absent -----------------------------------------------------------------------------
def test_absent_deletes_a_marked_directory_with_its_content(base):
    path = base / 'kf'
    run(path, subdirs=['state'])
    (path / 'state' / 'cursor').write_text('{}')
    result = run(path, state='absent')
    assert result == {'changed': True, 'msg': 'deleted %s' % path, 'path': str(path), 'removed': [],
                      'created_parents': []}
    assert not os.path.lexists(str(path))
    assert base.is_dir()


def test_absent_refuses_an_unmarked_directory(base):
    path = base / 'theirs'
    path.mkdir()
    (path / 'data').write_text('precious\n')
    before = snapshot(base)
    with pytest.raises(Failed) as e:
        run(path, state='absent')
    assert 'not ours' in str(e.value) and MARK in str(e.value)
    assert snapshot(base) == before


def test_absent_refuses_an_empty_unmarked_directory(base):
    path = base / 'empty'
    path.mkdir()
    with pytest.raises(Failed, match='not ours'):
        run(path, state='absent')
    assert path.is_dir()


def test_absent_of_a_missing_directory_changes_nothing(base):
    path = base / 'gone'
    result = run(path, state='absent')
    assert result['changed'] is False
    assert 'does not exist' in result['msg']
    assert not os.path.lexists(str(path))


def test_absent_in_check_mode_deletes_nothing(base):
    path = base / 'kf'
    run(path, subdirs=['state'])
    before = snapshot(path)
    result = run(path, state='absent', check_mode=True)
    assert result['changed'] is True
    assert snapshot(path) == before


# -- arguments --------------------------------------------------------------------------
@pytest.mark.parametrize('path', ['/', '/var/lib', 'rel', '/a/../b', '/var/lib/', '', '/var/lib/kf/.',
                                  '/var/lib/kf\n', '/tmp/kf', '/tmp', '/proc/kf', '/etc'])
def test_invalid_paths_fail_at_construction(path):
    with pytest.raises(Failed) as e:
        make(path)
    assert e.value.kwargs['msg'].startswith('path: '), e.value.kwargs['msg']


@pytest.mark.parametrize('sub', ['../etc', '/etc', 'a/../../x', '.', ''])
def test_invalid_subdirs_fail_at_construction(sub):
    with pytest.raises(Failed) as e:
        make('/var/lib/kprobes-fleet', subdirs=[sub])
    assert e.value.kwargs['msg'].startswith('subdirs: '), e.value.kwargs['msg']


def test_a_valid_path_is_accepted():
    hd = make('/var/lib/kprobes-fleet', subdirs=['modules', 'state'])
    assert hd.path == '/var/lib/kprobes-fleet'


# -- ancestors --------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setattr(names, 'FORBIDDEN_TREES', ())
    os.chmod(str(tmp_path), 0o755)
    return tmp_path


def test_a_parent_writable_by_others_is_refused(tree):
    parent = tree / 'open'
    parent.mkdir()
    os.chmod(str(parent), 0o777)
    path = parent / 'kf'
    with pytest.raises(Failed) as e:
        make(path).check_parents()
    msg = str(e.value)
    assert 'its parent %s ' % parent in msg and 'writable by group or others' in msg, msg
    with pytest.raises(Failed, match='writable by group or others'):
        run(path)
    assert not os.path.lexists(str(path))


def test_a_parent_writable_by_its_group_is_refused(tree):
    parent = tree / 'group'
    parent.mkdir()
    os.chmod(str(parent), 0o775)
    with pytest.raises(Failed, match='its parent %s ' % parent):
        make(parent / 'kf').check_parents()


def test_a_parent_owned_by_another_user_is_refused(tree):
    if os.geteuid() != 0:
        pytest.skip('needs root to chown')
    parent = tree / 'theirs'
    parent.mkdir()
    os.chmod(str(parent), 0o755)
    os.chown(str(parent), 12345, 12345)
    with pytest.raises(Failed, match='its parent %s is not root-owned' % parent):
        make(parent / 'kf').check_parents()


def test_an_ancestor_that_is_not_a_directory_is_refused(tree):
    f = tree / 'file'
    f.write_text('x')
    with pytest.raises(Failed, match='%s is not a directory' % f):
        make(f / 'kf').check_parents()


def test_root_owned_0755_parents_pass_and_the_walk_goes_up_to_the_root(tree, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip('needs root-owned directories')
    parent = tree / 'a' / 'b'
    parent.mkdir(parents=True)
    for d in (tree / 'a', parent):
        os.chmod(str(d), 0o755)
    path = parent / 'kf'
    # For real, the walk passes our 0755 directories and stops at the first unsafe
    # ancestor above them: /tmp (1777) or whatever holds pytest's base temp directory.
    unsafe = None
    d = str(tree)
    while True:
        st = os.stat(d)
        if st.st_uid != 0 or st.st_mode & 0o022:
            unsafe = d
            break
        if d == '/':
            break
        d = os.path.dirname(d)
    if unsafe is not None:
        with pytest.raises(Failed) as e:
            make(path).check_parents()
        assert 'its parent %s ' % unsafe in str(e.value), str(e.value)
    # With everything above tmp_path made to look safe, the check passes.
    real_stat = os.stat
    top = str(tree)

    def fake_stat(p, *args, **kwargs):
        st = real_stat(p, *args, **kwargs)
        p = str(p)
        if p == top or p.startswith(top + os.sep):
            return st
        return os.stat_result((stat.S_IFDIR | 0o755, st.st_ino, st.st_dev, st.st_nlink, 0, 0,
                               st.st_size, 0, 0, 0))

    seen = []

    def spy_stat(p, *args, **kwargs):
        seen.append(str(p))
        return fake_stat(p, *args, **kwargs)

    monkeypatch.setattr(host_dir.os, 'stat', spy_stat)
    make(path).check_parents()
    monkeypatch.undo()
    assert seen[0] == str(parent) and seen[-1] == '/'
    assert str(path) not in seen
