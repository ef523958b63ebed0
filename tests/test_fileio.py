"""The atomic writer: files it writes get the same permissions as a file made with open()."""

from __future__ import annotations

import os
import stat

import pytest

from redteam.core.fileio import atomic_write_bytes, atomic_write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
        atomic_write_json(tmp_path / "findings.json", {"a": 1})
        atomic_write_bytes(tmp_path / "sub" / "data.bin", b"x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert _mode(tmp_path / "plain.txt") == expected
    assert _mode(tmp_path / "findings.json") == expected
    assert _mode(tmp_path / "sub" / "data.bin") == expected
    # the temporary file was renamed, not left beside the result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.json", "plain.txt", "sub"]


def test_an_existing_file_is_replaced_whole(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old and longer")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
