"""The fetch-weights job (rules/weights.smk): external weights into the weights directory."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from latentbench.errors import InputError
from latentbench.io import atomic_path, write_json
from latentbench.weights_fetch import (
    fetch,
    load_manifest,
    locate,
    required_weights,
)
from latentbench.weights_fetch import (
    verify as verify_file,
)

log = logging.getLogger(__name__)


def fetch_weights(
    weights_dir: str | Path,
    names: Iterable[str] = (),
    settings: Mapping[str, Any] | None = None,
    into_dir: bool = False,
    verify: bool = False,
    stamp: str | Path | None = None,
) -> dict[str, Path]:
    """Fetch the named weights, plus those a study config (``settings``) requires; return name -> path.

    ``into_dir``: make each file exist as ``weights_dir/<file>`` (the path a rule declared as its
    output): a file found only in a Hugging Face / torch.hub cache is copied there, verified.
    ``verify``: also check files that were already on disk against the manifest.
    ``stamp``: write a JSON record {name: {path, sha256}} there when everything is in place.

    Raises InputError for unknown names and latentbench.weights_fetch.WeightFetchError (one message
    listing every file and its source) when something cannot be fetched.
    """
    manifest = load_manifest()
    wanted = list(dict.fromkeys([*names, *(required_weights(settings) if settings else [])]))
    if not wanted:
        raise InputError("names: nothing to fetch (give --names or --settings of a study that needs weights)")
    weights_dir = Path(weights_dir).expanduser()
    present = {n: locate(manifest[n], weights_dir) for n in wanted if n in manifest}
    paths = fetch(wanted, weights_dir, manifest)
    record = {}
    for name, path in paths.items():
        entry = manifest[name]
        digest = None
        if verify and present.get(name) is not None:
            digest = verify_file(path, entry)  # freshly fetched files were verified by fetch()
        if into_dir and entry.kind != "package" and path != weights_dir / entry.file:
            with atomic_path(weights_dir / entry.file) as tmp:
                shutil.copyfile(path, tmp)
                digest = verify_file(tmp, entry)
            log.info("%s: copied %s -> %s", name, path, weights_dir / entry.file)
            path = paths[name] = weights_dir / entry.file
        log.info("%s: %s", name, path)
        record[name] = {"path": str(path), "sha256": digest}
    if stamp is not None:
        write_json(stamp, record)
    return paths
