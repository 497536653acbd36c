"""Study configuration: load, validate against the JSON schema, fill defaults.

The schema (``latentbench/schemas/config.schema.yaml``) is the single description of every
key; the Snakefile validates with it (``snakemake.utils.validate``) and so does the CLI.
Errors are reported as one line naming the offending key, e.g.
``config error at tokenizers.baseline: Additional properties are not allowed ('foo' was unexpected)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"


class ConfigError(ValueError):
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
    if config["data"]["kind"] == "imagefolder" and not config["data"].get("root"):
        raise ConfigError("config error at data.root: required when data.kind is imagefolder")
    return config


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
