"""Where regenerable files go: KFUSION_CACHE, else the project's /work/cache when writable, else ~/.cache."""

from __future__ import annotations

from engine.cache import CACHE_ENV, cache_dir, cache_root


def test_env_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir("eval", "videos") == tmp_path / "c" / "eval" / "videos"


def test_project_cache_when_it_is_there(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_root(project_cache=tmp_path) == tmp_path


def test_user_cache_on_other_machines(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(project_cache=tmp_path / "missing") == tmp_path / "xdg" / "kfusion"
