"""Every config key in the schema is read somewhere (a key no code reads is a silent promise).

Grep-based and exact about names: for each key path of the schema (``section.key``, with
``*`` for the entries of a map such as ``tokenizers.*``), the key's own name must appear as a
quoted string in latentbench/ or rules/ (outside the schema), and so must the name of the
section holding it, so a key that only exists in the schema fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path

from latentbench.config import load_schema

ROOT = Path(__file__).resolve().parents[2]
# Keys read under a computed name, or not yet read, each with the reason (keep this list short).
NOT_LITERAL = {
    "data.train_dir": 'read as data[f"{split}_dir"] (stages/data.py)',
    "data.val_dir": 'read as data[f"{split}_dir"] (stages/data.py)',
    "tokenizers.*.latent_norm": "pretrained entries: read once the DAG runs pretrained tokenizers (not yet wired)",
}


def _resolve(node: dict, schema: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        node = schema["$defs"][ref.rsplit("/", 1)[-1]]
    return node


def key_paths(node: dict, schema: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of every property of the schema (map entries as ``*``; if/then/else branches merged)."""
    node = _resolve(node, schema)
    paths = []
    branches = [node] + [_resolve(node[k], schema) for k in ("then", "else") if k in node]
    for branch in branches:
        for name, sub in branch.get("properties", {}).items():
            paths.append((*prefix, name))
            paths += key_paths(sub, schema, (*prefix, name))
        extra = branch.get("additionalProperties")
        if isinstance(extra, dict):
            paths += key_paths(extra, schema, (*prefix, "*"))
    return sorted(set(paths))


def _code() -> str:
    files = [*ROOT.glob("latentbench/**/*.py"), *ROOT.glob("rules/*.smk"), ROOT / "Snakefile"]
    return "\n".join(f.read_text() for f in files)


def _quoted(name: str, code: str) -> bool:
    return re.search(rf"""["']{re.escape(name)}["']""", code) is not None


def test_every_schema_key_is_read():
    schema = load_schema()
    code = _code()
    paths = key_paths(schema, schema)
    assert ("tokenizers", "*", "variant") in paths and ("sampling", "cfg_scales") in paths
    unread = []
    for path in paths:
        names = [p for p in path if p != "*"]
        if ".".join(path) not in NOT_LITERAL and not all(_quoted(n, code) for n in names[-2:]):
            unread.append(".".join(path))
    assert not unread, f"schema keys no code reads: {unread}"


def test_the_check_catches_an_unread_key():
    schema = load_schema()
    schema["properties"]["sampling"]["properties"]["never_read_knob"] = {"type": "integer", "default": 1}
    paths = key_paths(schema, schema)
    assert ("sampling", "never_read_knob") in paths and not _quoted("never_read_knob", _code())
