"""Make the checkout importable as ansible_collections.kprobes.fleet for unit tests."""
import hashlib
import os
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collection_root():
    # Inside an ansible_collections/kprobes/fleet tree already (ansible-test, molecule)?
    parts = REPO.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "kprobes"] and parts[-1] == "fleet":
        return os.sep.join(parts[:-3])
    # One tree per checkout: worktrees of this repository run their tests at the same time.
    root = os.path.join(tempfile.gettempdir(), "kprobes-fleet-unit-%d-%s" % (
        os.getuid(), hashlib.sha256(REPO.encode()).hexdigest()[:8]))
    link = os.path.join(root, "ansible_collections", "kprobes", "fleet")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.realpath(link) != REPO:
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(REPO, link)
    return root


sys.path.insert(0, _collection_root())


@pytest.fixture
def repo():
    return REPO
