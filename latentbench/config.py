"""Study configuration: load, validate against the JSON schema, fill defaults.

The schema (``latentbench/schemas/config.schema.yaml``) is the single description of every
key and of its default; :func:`check_config` is the one validator (the Snakefile calls it at
parse time, before any job, and so does the CLI). Beyond the schema it checks what a JSON
schema cannot: each tokenizer's regulariser variant (Table 1 grammar), ``arch`` and
``latent_channels``, pretrained names, and that each backbone's patch size tiles the latent
grid of each tokenizer it is trained on. Errors are one line naming the key, e.g.
``config error at tokenizers.lcr.variant: unknown variant 'w0.5-thbad' for 'lcr'; ...``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from latentbench.errors import LatentbenchError

SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"


class ConfigError(LatentbenchError, ValueError):
    """A configuration problem, reported in one line."""


def load_schema() -> dict:
    """The study schema as a dict."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(validator_class):
    """A jsonschema validator that fills ``default`` values of absent properties first."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    # ``properties`` also runs inside ``additionalProperties`` sub-schemas, so every
    # tokenizer / backbone entry gets its defaults too.
    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def check_config(config: dict) -> dict:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError in one line."""
    schema = load_schema()
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), _where(e)))
    if errors:
        err = errors[0]
        if err.validator == "anyOf" and err.context:
            err = min(err.context, key=lambda e: len(list(e.absolute_path)))
        raise ConfigError(f"config error at {_where(err)}: {err.message}")
    unknown = sorted(set(config["ifid"]["gfid_t_backbones"]) - set(config["backbones"]))
    if unknown:
        raise ConfigError(f"config error at ifid.gfid_t_backbones: {', '.join(unknown)} not in backbones")
    primary = config["analysis"].get("primary_backbone")
    if primary is not None and primary not in config["backbones"]:
        raise ConfigError(f"config error at analysis.primary_backbone: {primary} not in backbones")
    for tok, spec in config["tokenizers"].items():
        unknown = sorted(set(spec.get("backbones") or ()) - set(config["backbones"]))
        if unknown:
            raise ConfigError(f"config error at tokenizers.{tok}.backbones: {', '.join(unknown)} not in backbones")
    _check_shards(config["sampling"])
    if config["data"]["kind"] == "imagefolder" and not config["data"].get("root"):
        raise ConfigError("config error at data.root: required when data.kind is imagefolder")
    for tok, spec in config["tokenizers"].items():
        latent_shape = _check_tokenizer(f"tokenizers.{tok}", spec)
        for bb in tokenizer_backbones(spec, config["backbones"]):
            _check_backbone(f"backbones.{bb}", config["backbones"][bb], tok, latent_shape)
    _check_seesaw(config)
    return config


def _check_shards(sampling: dict[str, Any]) -> None:
    """Every sampling shard draws at least one sample: shard i draws
    [i * ceil(n / shards), ...) of the n samples (stages/diffusion.sample), so too many shards
    leave the last ones empty, and an empty shard has no statistics to merge."""
    n, shards = sampling["num_samples"], sampling["shards"]

    def fills(s: int) -> bool:
        return (s - 1) * -(-n // s) < n

    if not fills(shards):
        most = max(s for s in range(1, shards) if fills(s))
        raise ConfigError(f"config error at sampling.shards: {shards} shards of {-(-n // shards)} of the "
                          f"{n} samples (sampling.num_samples) leave the last shard empty ({most} shards would not)")


def seesaw_stand_ins(config: dict[str, Any]) -> bool:
    """Whether the Seesaw jobs use the demo's stand-in projectors (``seesaw.projectors``; auto =
    demo-cnn studies)."""
    choice = config["seesaw"]["projectors"]
    return choice == "demo" or (choice == "auto" and config["feature_net"]["name"] == "demo-cnn")


def _check_seesaw(config: dict[str, Any]) -> None:
    """ControlNet pairs must be trained pairs; the stand-ins need demo-cnn and synthetic ground truth."""
    seesaw = config["seesaw"]
    pairs = set(model_pairs(config))
    for i, pair in enumerate(seesaw["controlnet"]["pairs"]):
        if (pair["tokenizer"], pair["backbone"]) not in pairs:
            raise ConfigError(f"config error at seesaw.controlnet.pairs[{i}]: ({pair['tokenizer']}, {pair['backbone']}) "
                              "is not a trained (tokenizer, backbone) pair of the study")
    unknown = sorted(set(seesaw["probe"]["tokenizers"] or ()) - set(config["tokenizers"]))
    if unknown:
        raise ConfigError(f"config error at seesaw.probe.tokenizers: {', '.join(unknown)} not in tokenizers")
    if seesaw["projectors"] == "demo" and (config["feature_net"]["name"] != "demo-cnn" or config["data"]["kind"] != "synthetic"):
        raise ConfigError("config error at seesaw.projectors: the demo stand-ins need feature_net demo-cnn and synthetic data")
    if seesaw_stand_ins(config) and seesaw["enabled"] and config["data"]["kind"] != "synthetic":
        raise ConfigError("config error at seesaw.projectors: auto picks the demo stand-ins (demo-cnn), which need "
                          "synthetic data's depth/seg ground truth; set seesaw.projectors: paper")


def _check_tokenizer(where: str, spec: dict[str, Any]) -> tuple[int, ...] | None:
    """Check a tokenizer entry beyond the schema; return its latent shape (None if unknown here)."""
    from latentbench.tokenizers import known_pretrained
    from latentbench.tokenizers.variants import parse_variant

    if spec["family"] == "pretrained":
        from latentbench.tokenizers.pretrained import zoo_row

        try:
            zoo_row(spec["name"])  # a registry name or an alias (IN-VAE, SD-VAE, ...)
        except ValueError:
            names = known_pretrained()
            raise ConfigError(f"config error at {where}.name: unknown pretrained tokenizer {spec['name']!r}; known: {', '.join(names)}") from None
        return None
    try:
        parse_variant(spec["regularizer"], spec["variant"])
    except ValueError as exc:
        raise ConfigError(f"config error at {where}.variant: {exc}") from None
    from latentbench.tokenizers.kl_base import validated_arch
    from latentbench.tokenizers.kl_vae import resolve_arch
    from latentbench.tokenizers.vit_vae import resolve_vit_arch

    resolve = {"conv_kl": resolve_arch, "trans_kl": resolve_vit_arch}[spec["family"]]
    try:
        arch = validated_arch(spec, resolve)
    except (ValueError, TypeError) as exc:
        key = "latent_channels" if "latent_channels" in str(exc) else "arch"
        raise ConfigError(f"config error at {where}.{key}: {exc}") from None
    return tuple(arch.latent_shape)


def _check_backbone(where: str, backbone: dict[str, Any], tok: str, latent_shape: tuple[int, ...] | None) -> None:
    """The backbone's size/recipe build a config and its patch size tiles the tokenizer's latent grid."""
    from latentbench.diffusion.recipes import backbone_config, resolve_patch_size

    if latent_shape is None:
        return
    patch = resolve_patch_size(backbone["patch_size"], latent_shape)
    grid = latent_shape[1:] if len(latent_shape) == 3 else latent_shape[:1]
    if any(g % patch for g in grid):
        raise ConfigError(
            f"config error at {where}.patch_size: {patch} does not tile the {'x'.join(map(str, grid))} latent grid "
            f"of tokenizer {tok}"
        )
    try:
        backbone_config(backbone["size"], backbone["recipe"], latent_shape, patch)
    except ValueError as exc:
        raise ConfigError(f"config error at {where}: {exc}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict:
    """Read a YAML study config, apply shallow overrides, validate and fill defaults."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    config.update(overrides or {})
    return check_config(config)


def validate_config_file(config: str | Path, /) -> None:
    """Check a study config against the schema (and the tokenizer variants) without running anything."""
    load_config(config)
    print(f"{config}: valid")


# Tokenizer keys that only place the tokenizer in the analyses; the model does not depend on them.
ANALYSIS_KEYS = ("label", "study_family", "backbones")


def model_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A tokenizer entry without its analysis-only keys: what training depends on (so relabelling
    or regrouping a tokenizer never retrains it)."""
    return {k: v for k, v in spec.items() if k not in ANALYSIS_KEYS}


def study_family(spec: dict[str, Any]) -> str:
    """The tokenizer family a config entry belongs to in the analyses (correlations are computed
    within one family, spec metrics-diffusability §13): its ``study_family``, else
    ``<conv|trans>-<arch preset>`` (+ ``-d<C>`` for a ``latent_channels`` override), the shape of
    the study's Table 1 labels (conv-f16d32, conv-f16d64, trans-f16d32)."""
    if spec.get("study_family"):
        return str(spec["study_family"])
    arch = spec.get("arch", "demo")
    label = f"{str(spec['family']).removesuffix('_kl')}-{arch if isinstance(arch, str) else 'custom'}"
    return label + (f"-d{spec['latent_channels']}" if spec.get("latent_channels") else "")


def tokenizer_backbones(spec: dict[str, Any], backbones: Iterable[str]) -> list[str]:
    """The diffusion backbones trained on a tokenizer entry: its ``backbones`` list, else all of
    the study's ``backbones`` (sorted)."""
    return sorted(spec.get("backbones") or backbones)


def model_pairs(config: dict[str, Any], backbones: list[str] | None = None) -> list[tuple[str, str]]:
    """(tokenizer, backbone) of every diffusion model the study trains, sorted; only ``backbones`` if given."""
    return [
        (tok, bb)
        for tok in sorted(config["tokenizers"])
        for bb in tokenizer_backbones(config["tokenizers"][tok], config["backbones"])
        if backbones is None or bb in backbones
    ]


def ordered_names(preferred: Iterable[str], present: Iterable[str]) -> list[str]:
    """``preferred`` names that are present, then the other present names in first-seen order."""
    present = list(dict.fromkeys(present))
    return [p for p in preferred if p in present] + [p for p in present if p not in preferred]


def most_trained_backbone(frame: Any, names: list[str]) -> str:
    """The backbone of ``names`` with rows for the most tokenizers in ``frame`` (a metrics.csv
    table with ``backbone`` and ``tokenizer`` columns); ties: the first in ``names``."""
    trained: dict[str, set] = {}
    for backbone, tok in zip(frame["backbone"].astype(str), frame["tokenizer"]):
        trained.setdefault(backbone, set()).add(tok)
    return max(names, key=lambda b: (len(trained.get(b, ())), -names.index(b)))


def backbone_order(config: dict[str, Any], frame: Any) -> list[str]:
    """The study's backbones in ``frame`` (metrics.csv), primary first: ``analysis.primary_backbone``
    if set, else the backbone trained on the most tokenizers (the paper's SiT-B: all 86), ties in
    config order; then the rest in config order. (The report's config arrives key-sorted, so dict
    order alone cannot say it.)"""
    names = ordered_names(list(config.get("backbones") or {}), frame["backbone"].astype(str).tolist())
    if not names:
        return names
    primary = (config.get("analysis") or {}).get("primary_backbone")
    if primary not in names:
        primary = most_trained_backbone(frame, names)
    return [primary, *(b for b in names if b != primary)]
