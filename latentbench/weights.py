"""Find external weight files on local disk; never download (DESIGN.md "Weights and data").

A metric that needs pretrained weights asks :func:`resolve_weight` for one declared file.
The search is a plain directory lookup, in this order:

1. ``<weights_dir>/<filename>`` (the weights directory of the config);
2. the Hugging Face hub cache, ``snapshots/<revision>/<filename>`` of every cached model
   (or only of ``repo`` when given). Its location follows huggingface_hub's environment
   variables: ``HF_HUB_CACHE`` / ``HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``;
3. torch.hub's checkpoint cache, ``$TORCH_HOME/hub/checkpoints`` (default
   ``~/.cache/torch/hub/checkpoints``), where ``load_state_dict_from_url`` leaves
   torchvision and torch-fidelity weights on machines that have downloaded them.

If nothing matches, :class:`WeightMissing` names the file, where it was looked for and
where to get it, so the caller can report "not run: needs <weights>".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from latentbench.errors import LatentbenchError

__all__ = ["WeightMissing", "hf_hub_cache", "resolve_weight", "torch_hub_checkpoints"]


class WeightMissing(LatentbenchError, FileNotFoundError):
    """A declared weight file is not on this machine.

    ``str(err)`` reads "not run: needs <name> (<filename>) in <weights_dir>; get it from
    <source>", ready for a report cell or a log line.
    """

    def __init__(self, name: str, filename: str, source: str, searched: Sequence[str | Path] = ()) -> None:
        self.name, self.filename, self.source = name, filename, source
        self.searched = tuple(str(p) for p in searched)
        where = self.searched[0] if self.searched else "the weights directory"
        message = f"not run: needs {name} ({filename}) in {where}; get it from {source}"
        if len(self.searched) > 1:
            message += f" (also looked in: {', '.join(self.searched[1:])})"
        super().__init__(message)

    def __str__(self) -> str:  # OSError.__str__ would format errno/filename instead
        return str(self.args[0])

    def __reduce__(self):  # picklable across worker processes despite the custom signature
        return type(self), (self.name, self.filename, self.source, self.searched)


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, resolved from the environment like huggingface_hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def torch_hub_checkpoints() -> Path:
    """torch.hub's download directory for state dicts (``torch.hub.get_dir()/checkpoints``)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def resolve_weight(
    name: str,
    filename: str,
    weights_dir: str | Path | None,
    source: str = "its upstream release",
    repo: str | None = None,
) -> Path:
    """Path of ``filename`` (may contain sub-folders) from the places listed in the module doc.

    ``name`` is the human-readable weight name used in the error, ``source`` where to get
    the file (URL or release name), ``repo`` an optional Hugging Face repo id ("org/name")
    restricting the hub-cache search. Raises :class:`WeightMissing` if no file is found.
    """
    if not filename or Path(filename).is_absolute():
        raise ValueError(f"filename: expected a relative file name, got {filename!r}")
    searched: list[Path] = []
    if weights_dir is not None:
        weights_dir = Path(weights_dir).expanduser()
        searched.append(weights_dir)
        if (weights_dir / filename).is_file():
            return weights_dir / filename
    hub = hf_hub_cache()
    searched.append(hub)
    pattern = f"models--{repo.replace('/', '--')}" if repo else "models--*"
    hits = [h for h in sorted(hub.glob(f"{pattern}/snapshots/*/{filename}")) if h.is_file()]
    if len(hits) > 1:  # several revisions or repos: keep the revisions that refs/main points at
        hits = [h for h in hits if _is_main_revision(h, filename)] or hits
    if len(hits) > 1:
        raise ValueError(
            f"filename: {filename!r} is in several Hugging Face cache snapshots ({', '.join(map(str, hits))}); "
            f"pass repo= or put the intended file in the weights directory"
        )
    if hits:
        return hits[0]
    checkpoints = torch_hub_checkpoints()
    searched.append(checkpoints)
    if (checkpoints / filename).is_file():
        return checkpoints / filename
    raise WeightMissing(name, filename, source, searched)


def _is_main_revision(hit: Path, filename: str) -> bool:
    """Whether a hub-cache hit lies in the snapshot that its repo's ``refs/main`` names."""
    snapshot = hit
    for _ in Path(filename).parts:
        snapshot = snapshot.parent
    ref = snapshot.parent.parent / "refs" / "main"
    return ref.is_file() and ref.read_text().strip() == snapshot.name
