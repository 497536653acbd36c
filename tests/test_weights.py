"""resolve_weight / WeightMissing: local lookup order, Hugging Face cache layout, error text."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from latentbench.weights import WeightMissing, hf_hub_cache, resolve_weight, torch_hub_checkpoints

FILE = "net.pth"


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache variable at empty folders under tmp_path (never the real caches)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "TORCH_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def touch(path: Path, text: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def hub_snapshot(hub: Path, repo: str, revision: str, filename: str, main: bool = False) -> Path:
    """A file laid out like huggingface_hub's cache: snapshot entry = symlink into blobs/."""
    root = hub / f"models--{repo.replace('/', '--')}"
    blob = touch(root / "blobs" / f"{revision}-blob", revision)
    entry = root / "snapshots" / revision / filename
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.symlink_to(blob)
    if main:
        touch(root / "refs" / "main", revision)
    return entry


def test_weights_dir_first(tmp_path: Path) -> None:
    local = touch(tmp_path / "w" / FILE)
    hub_snapshot(hf_hub_cache(), "org/net", "abc", FILE)
    assert resolve_weight("net", FILE, tmp_path / "w") == local


def test_filename_with_subfolder(tmp_path: Path) -> None:
    local = touch(tmp_path / "w" / "vae" / FILE)
    assert resolve_weight("net", f"vae/{FILE}", tmp_path / "w") == local
    entry = hub_snapshot(hf_hub_cache(), "org/net", "abc", f"vae/{FILE}")
    assert resolve_weight("net", f"vae/{FILE}", tmp_path / "empty") == entry


def test_cache_locations_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    assert torch_hub_checkpoints() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hf_hub_cache() == tmp_path / "hf" / "hub"
    assert torch_hub_checkpoints() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hf_hub_cache() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))  # huggingface_hub: new name wins
    assert hf_hub_cache() == tmp_path / "new"


def test_hf_cache_lookup_and_repo_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    entry = hub_snapshot(tmp_path / "hf" / "hub", "org/net", "abc", FILE)
    assert resolve_weight("net", FILE, None) == entry
    assert resolve_weight("net", FILE, tmp_path / "empty", repo="org/net") == entry
    with pytest.raises(WeightMissing):
        resolve_weight("net", FILE, tmp_path / "empty", repo="org/other")


def test_hf_cache_prefers_main_revision_and_rejects_ambiguity(tmp_path: Path) -> None:
    hub = hf_hub_cache()
    hub_snapshot(hub, "org/net", "aaa", FILE)
    current = hub_snapshot(hub, "org/net", "bbb", FILE, main=True)
    assert resolve_weight("net", FILE, None) == current
    hub_snapshot(hub, "org/twin", "ccc", FILE, main=True)
    with pytest.raises(ValueError, match="several Hugging Face cache snapshots"):
        resolve_weight("net", FILE, None)
    assert resolve_weight("net", FILE, None, repo="org/net") == current


def test_torch_hub_checkpoints_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    ckpt = touch(tmp_path / "th" / "hub" / "checkpoints" / FILE)
    assert resolve_weight("net", FILE, tmp_path / "empty") == ckpt


def test_missing_weight_message(tmp_path: Path) -> None:
    with pytest.raises(WeightMissing) as info:
        resolve_weight("Net weights", FILE, tmp_path / "w", source="https://example.org/net.pth")
    err = info.value
    assert str(err).startswith(
        f"not run: needs Net weights ({FILE}) in {tmp_path / 'w'}; get it from https://example.org/net.pth"
    )
    assert str(hf_hub_cache()) in str(err) and str(torch_hub_checkpoints()) in str(err)
    assert (err.name, err.filename, err.source) == ("Net weights", FILE, "https://example.org/net.pth")
    assert isinstance(err, FileNotFoundError)
    clone = pickle.loads(pickle.dumps(err))  # crosses process boundaries intact
    assert type(clone) is WeightMissing and str(clone) == str(err)


def test_directory_with_same_name_is_not_a_weight(tmp_path: Path) -> None:
    (tmp_path / "w" / FILE).mkdir(parents=True)
    with pytest.raises(WeightMissing):
        resolve_weight("net", FILE, tmp_path / "w")


@pytest.mark.parametrize("bad", ["", "/abs/net.pth"])
def test_bad_filename(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="filename"):
        resolve_weight("net", bad, tmp_path)
