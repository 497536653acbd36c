"""latentbench.weights_fetch: the weights manifest, verification, and fetching without a network."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
from pathlib import Path

import pytest
import yaml

from latentbench import weights_fetch as wf
from latentbench.config import check_config
from latentbench.stages.weights import fetch_weights
from latentbench.weights_fetch import (
    WeightChecksumError,
    WeightEntry,
    WeightFetchError,
    fetch,
    load_manifest,
    locate,
    missing,
    required_weights,
    sha256_file,
    verify,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def empty_caches(tmp_path, monkeypatch):
    """Point the Hugging Face and torch.hub caches at empty folders: tests see only what they create."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)


def write_manifest(path: Path, weights: dict) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "weights": weights}))
    return path


def url_entry(name: str, data: bytes, **extra) -> dict:
    return {"file": f"{name}.bin", "url": f"https://example.org/{name}.bin", "used_by": "tests",
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), **extra}


# ------------------------------------------------------------------ the manifest


def test_package_manifest_loads_with_unique_files_and_sources():
    manifest = load_manifest()
    assert len(manifest) >= 15
    assert len({e.file for e in manifest.values()}) == len(manifest)
    for entry in manifest.values():
        assert entry.kind in ("url", "hf", "package") and entry.source and entry.used_by


def test_torch_hub_names_agree_with_recorded_hashes():
    # torch.hub file names end in the first 8 hex digits of the file's SHA-256
    for entry in load_manifest().values():
        m = re.search(r"-([0-9a-f]{8})\.(pth|pt)$", entry.file)
        if m and entry.kind == "url":
            assert (entry.sha256 or entry.sha256_prefix).startswith(m[1]), entry.name


def test_manifest_names_the_files_the_code_resolves():
    from latentbench.features import inception
    from latentbench.features.representations import REPRESENTATION_SPACES
    from latentbench.metrics import lpips

    manifest = load_manifest()
    assert manifest["inception-v3-fid"].file == inception.WEIGHTS_FILE
    assert manifest["lpips-alexnet-trunk"].file == lpips.ALEXNET_FILE
    by_repo = {e.hf_repo: e for e in manifest.values() if e.kind == "hf"}
    for space in REPRESENTATION_SPACES.values():
        entry = by_repo[space.repo]
        assert entry.file == f"{space.model}.safetensors" and entry.hf_filename == "model.safetensors"
    assert set(wf.FDR6_WEIGHTS) <= set(manifest)


def test_lpips_heads_in_the_installed_wheel_match_the_manifest():
    manifest = load_manifest()
    for name in ("lpips-alex-head", "lpips-vgg-head"):
        path = locate(manifest[name], None)
        assert path is not None and verify(path, manifest[name]) == manifest[name].sha256


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"file": "a.pth", "used_by": "x"}, "exactly one source"),
        ({"file": "a.pth", "used_by": "x", "url": "https://h/a", "hf": {"repo": "r", "filename": "f"}}, "exactly one source"),
        ({"file": "../a.pth", "used_by": "x", "url": "https://h/a"}, "relative name"),
        ({"file": "a.pth", "used_by": "x", "url": "ftp://h/a"}, "http"),
        ({"file": "a.pth", "used_by": "x", "url": "https://h/a", "sha256": "abc"}, "64 lower-case hex"),
        ({"file": "a.pth", "used_by": "x", "url": "https://h/a", "sha256_prefix": "XYZ"}, "sha256_prefix"),
        ({"file": "a.pth", "used_by": "x", "url": "https://h/a", "sha256": "0" * 64, "sha256_prefix": "12345678"}, "does not start"),
        ({"file": "a.pth", "used_by": "x", "hf": {"repo": "r"}}, "'hf' must be"),
        ({"file": "a.pth", "used_by": "x", "url": "https://h/a", "size": -1}, "'size'"),
        ({"file": "a.pth", "used_by": "x", "url": "https://h/a", "md5": "0"}, "unknown key"),
    ],
)
def test_bad_manifest_entries_name_the_entry(tmp_path, raw, message):
    path = write_manifest(tmp_path / "m.yaml", {"bad-entry": raw})
    with pytest.raises(ValueError, match=message) as info:
        load_manifest(path)
    assert "bad-entry" in str(info.value)


def test_manifest_rejects_two_entries_for_one_file(tmp_path):
    entry = {"file": "a.pth", "used_by": "x", "url": "https://h/a"}
    with pytest.raises(ValueError, match="same file: a.pth"):
        load_manifest(write_manifest(tmp_path / "m.yaml", {"one": entry, "two": entry}))


# ------------------------------------------------------------------ verification


def test_verify_full_hash_prefix_and_size(tmp_path):
    data = b"latentbench weights" * 1000
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == digest
    ok = WeightEntry("w", "w.bin", "tests", url="https://h/w", sha256=digest, size=len(data))
    assert verify(path, ok) == digest
    assert verify(path, WeightEntry("w", "w.bin", "tests", url="https://h/w", sha256_prefix=digest[:8])) == digest
    with pytest.raises(WeightChecksumError, match="does not start with"):
        verify(path, WeightEntry("w", "w.bin", "tests", url="https://h/w", sha256_prefix="0" * 8 if digest[0] != "0" else "f" * 8))
    with pytest.raises(WeightChecksumError, match="expected " + "1" * 64):
        verify(path, WeightEntry("w", "w.bin", "tests", url="https://h/w", sha256="1" * 64))
    with pytest.raises(WeightChecksumError, match="size"):
        verify(path, WeightEntry("w", "w.bin", "tests", url="https://h/w", size=len(data) + 1))
    # a hash the source declares is used when the manifest records none
    with pytest.raises(WeightChecksumError, match="expected " + "2" * 64):
        verify(path, WeightEntry("w", "w.bin", "tests", url="https://h/w"), expected_sha256="2" * 64)
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "absent.bin", ok)


def test_missing_looks_in_weights_dir_and_caches(tmp_path):
    a, b = b"a" * 10, b"b" * 10
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", {
        "in-dir": url_entry("in-dir", a),
        "in-torch-hub": url_entry("in-torch-hub", b),
        "in-hf-cache": {"file": "x.safetensors", "hf": {"repo": "org/model", "filename": "model.safetensors"}, "used_by": "t"},
        "nowhere": url_entry("nowhere", a),
    }))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "in-dir.bin").write_bytes(a)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "in-torch-hub.bin").write_bytes(b)
    snapshot = tmp_path / "hf" / "models--org--model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"st")
    assert [e.name for e in missing(None, weights, manifest)] == ["nowhere"]
    assert locate(manifest["in-hf-cache"], weights) == snapshot / "model.safetensors"
    assert [e.name for e in missing(["nowhere", "in-dir"], tmp_path / "other", manifest)] == ["nowhere", "in-dir"]
    with pytest.raises(ValueError, match="unknown weight"):
        missing(["bogus"], weights, manifest)


# ------------------------------------------------------------------ fetching


def test_fetch_fails_cleanly_without_network(tmp_path, monkeypatch):
    manifest = load_manifest()
    calls = []

    def offline(entry, dest):
        calls.append(entry.name)
        dest.write_bytes(b"partial")  # a half-written download must not survive
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(wf, "_download", offline)
    weights = tmp_path / "weights"
    names = ["inception-v3-fid", "fdr6-dinov2-large"]
    with pytest.raises(WeightFetchError) as info:
        fetch(names, weights, manifest)
    message = str(info.value)
    assert calls == names
    assert message.startswith(f"could not fetch 2 weight file(s) into {weights}")
    for name in names:
        entry = manifest[name]
        assert f"{name} ({entry.file}) from {entry.source}" in message
    assert "Temporary failure in name resolution" in message
    assert "--names inception-v3-fid fdr6-dinov2-large" in message  # the command to run where there is network
    assert list(weights.iterdir()) == []  # no partial or temporary files left


def test_fetch_downloads_verifies_and_renames_atomically(tmp_path):
    good, other = b"good weights" * 100, b"other" * 50
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", {"good": url_entry("good", good), "other": url_entry("other", other)}))
    weights = tmp_path / "weights"
    seen = []

    def downloader(entry, dest):
        assert dest.parent == weights and dest.name != entry.file  # a temporary name beside the target
        assert not (weights / entry.file).exists()
        seen.append(entry.name)
        dest.write_bytes({"good": good, "other": other}[entry.name])

    paths = fetch(None, weights, manifest, download=downloader)
    assert paths == {"good": weights / "good.bin", "other": weights / "other.bin"}
    assert (weights / "good.bin").read_bytes() == good and sorted(p.name for p in weights.iterdir()) == ["good.bin", "other.bin"]
    # present files are not downloaded again
    assert fetch(["good"], weights, manifest, download=downloader) == {"good": weights / "good.bin"} and seen == ["good", "other"]


def test_fetch_rejects_a_corrupt_download_and_leaves_nothing(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", {"good": url_entry("good", b"expected")}))
    weights = tmp_path / "weights"
    with pytest.raises(WeightFetchError, match="corrupt download") as info:
        fetch(["good"], weights, manifest, download=lambda entry, dest: dest.write_bytes(b"tampered") and None)
    assert "https://example.org/good.bin" in str(info.value)
    assert list(weights.iterdir()) == []


def test_fetch_checks_the_hash_the_source_declares(tmp_path):
    hf = {"file": "m.safetensors", "hf": {"repo": "org/m", "filename": "model.safetensors"}, "used_by": "t"}
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", {"m": hf}))
    data = b"safetensors bytes"
    ok = fetch(None, tmp_path / "w1", manifest, download=lambda e, dest: (dest.write_bytes(data), hashlib.sha256(data).hexdigest())[1])
    assert ok["m"].read_bytes() == data
    with pytest.raises(WeightFetchError, match="corrupt download"):
        fetch(None, tmp_path / "w2", manifest, download=lambda e, dest: (dest.write_bytes(data), "0" * 64)[1])


def test_package_files_are_not_downloaded(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path / "m.yaml", {
        "head": {"file": "h.pth", "package": {"name": "lpips", "path": "weights/v0.1/none.pth"}, "used_by": "t"}}))
    with pytest.raises(WeightFetchError, match="not in an installed lpips package"):
        fetch(None, tmp_path / "w", manifest, download=lambda e, d: pytest.fail("no download for package files"))


def test_url_downloader_streams_a_file(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(bytes(range(256)) * 5000)
    dest = tmp_path / "dest.bin"
    wf._download_url(source.as_uri(), dest)  # urllib with a file:// URL: the real code path, no network
    assert dest.read_bytes() == source.read_bytes()


def test_hf_downloader_moves_the_file_and_returns_the_lfs_hash(tmp_path, monkeypatch):
    import huggingface_hub

    data = b"weights from the hub"
    digest = hashlib.sha256(data).hexdigest()

    class Meta:
        etag = f'"{digest}"'

    def fake_download(repo, filename, revision=None, local_dir=None):
        path = Path(local_dir) / filename
        path.write_bytes(data)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url: Meta())
    dest = tmp_path / "out.safetensors"
    assert wf._download_hf("org/m", "model.safetensors", None, dest) == digest
    assert dest.read_bytes() == data and [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]
    Meta.etag = '"0123abcd"'  # a git blob id (non-LFS file) is not a SHA-256
    assert wf._download_hf("org/m", "model.safetensors", None, dest) is None


# ------------------------------------------------------------------ what a study needs; the job


def test_required_weights_follow_feature_net_and_metrics():
    demo = check_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    demo["metrics"] = ["rfid", "psnr"]
    assert required_weights(demo) == []
    demo["metrics"] = ["lpips"]
    assert required_weights(demo) == ["lpips-alexnet-trunk", "lpips-alex-head"]
    demo["feature_net"]["name"] = "inception-v3-compat"
    demo["metrics"] = ["fdr6"]
    # inception once, first; off the demo network, the tokenizers' perceptual term is LPIPS-VGG
    # ... and the Seesaw jobs switch from the demo's stand-ins to the paper's projectors
    seesaw = [*wf.SEESAW_PROJECTOR_WEIGHTS.values(), "insightface-buffalo-s"]
    assert required_weights(demo) == [*wf.FDR6_WEIGHTS, "lpips-vgg16-trunk", "lpips-vgg-head", *seesaw]


def test_fetch_weights_job_copies_a_cached_file_into_the_weights_dir(tmp_path):
    snapshot = tmp_path / "hf" / "models--timm--vit_large_patch16_224.mae" / "snapshots" / "rev1"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"mae weights")
    weights, stamp = tmp_path / "weights", tmp_path / "weights.json"
    paths = fetch_weights(weights, names=["fdr6-mae-large"], into_dir=True, stamp=stamp)
    target = weights / "vit_large_patch16_224.mae.safetensors"
    assert paths == {"fdr6-mae-large": target} and target.read_bytes() == b"mae weights"
    record = json.loads(stamp.read_text())
    assert record["fdr6-mae-large"] == {"path": str(target), "sha256": hashlib.sha256(b"mae weights").hexdigest()}
    with pytest.raises(ValueError, match="nothing to fetch"):
        fetch_weights(weights)


def test_seesaw_projector_weights_are_required_only_with_the_real_projectors():
    """`snakemake weights` fetches the paper's projectors for a Seesaw study; demo stand-ins need none."""
    from latentbench.config import load_config
    from latentbench.weights_fetch import load_manifest, required_weights

    seesaw = load_config(Path(__file__).resolve().parents[1] / "configs" / "seesaw.yaml")
    names = required_weights(seesaw)
    assert {"midas-dpt-hybrid", "uniformer-upernet-ade20k", "clip-vit-b32", "dinov2-base", "insightface-buffalo-s"} <= set(names)
    assert set(names) <= set(load_manifest())
    # ... and every released file of its autoencoders (weights_dir/zoo/<row>/...)
    assert {"zoo-vavae_f16d32", "zoo-vavae_f16d32-stats", "zoo-e2e-flux-vae-weights"} <= set(names)
    demo = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    assert not {"midas-dpt-hybrid", "insightface-buffalo-s"} & set(required_weights(demo))
