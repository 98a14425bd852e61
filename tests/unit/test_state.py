"""Atomic JSON state files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nixos_azure_publish import state


def test_default_state_dir_follows_xdg():
    assert state.default_state_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path(
        "/s/nixos-azure-publish"
    )
    # Relative XDG paths are invalid by the spec and ignored.
    for env in ({"HOME": "/h"}, {"XDG_STATE_HOME": "rel", "HOME": "/h"}):
        assert state.default_state_dir(env) == Path("/h/.local/state/nixos-azure-publish")


def test_write_then_read(tmp_path):
    path = tmp_path / "deep" / "er" / "state.json"
    state.write_json_atomic(path, {"a": [1, 2], "b": None})
    assert state.read_json(path) == {"a": [1, 2], "b": None}
    state.write_json_atomic(path, {"a": 3})
    assert json.loads(path.read_text()) == {"a": 3}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp files left


def test_missing_corrupt_or_non_object_reads_as_none(tmp_path, caplog):
    path = tmp_path / "s.json"
    assert state.read_json(path) is None
    path.write_text("{not json")
    assert state.read_json(path) is None
    path.write_text("[1, 2]")
    assert state.read_json(path) is None
    assert "corrupt" in caplog.text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "s.json"
    state.write_json_atomic(path, {"v": 1})
    with pytest.raises(TypeError):
        state.write_json_atomic(path, {"v": object()})
    assert state.read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_remove_is_idempotent(tmp_path):
    path = tmp_path / "s.json"
    state.write_json_atomic(path, {})
    state.remove(path)
    state.remove(path)
    assert not path.exists()
