"""Command line: one subcommand per Snakemake rule, each with explicit input and output paths.

Each subcommand is declared once, by the typed signature of the function it runs (the table
``COMMANDS``): flags are the parameter names with dashes (``feature_net`` -> ``--feature-net``),
a parameter without a default is a required flag, a positional-only parameter is a positional
argument, and the help text is the function's docstring. Types follow the hints: ``dict`` and
``Mapping`` are JSON text (rules pass config fragments as ``--settings '{...}'``, so a job re-runs
exactly when the part of the config it depends on changes), lists take several values, ``bool``
is a switch, paths are plain strings. Every subcommand also takes ``--threads`` (torch threads of
the job). Snakemake redirects stdout and stderr to the rule's log file.

Errors: a :class:`latentbench.errors.LatentbenchError` (bad config key, missing or corrupt input,
missing weights, a diverged training run) is printed as one line ``latentbench <command>: error:
...`` with exit status 1; ``LATENTBENCH_DEBUG=1`` re-raises it with its traceback. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import collections.abc
import importlib
import inspect
import json
import logging
import os
import re
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Callable

# subcommand -> "module:function" whose signature is the subcommand's interface (imported lazily:
# a job imports only its own stage).
COMMANDS: dict[str, str] = {
    "validate-config": "latentbench.config:validate_config_file",
    "dataset": "latentbench.stages.data:make_dataset",
    "train-feature-net": "latentbench.stages.data:train_feature_net",
    "reference-stats": "latentbench.stages.data:reference_stats",
    "fdr6-reference-stats": "latentbench.stages.data:fdr6_reference_stats",
    "train-tokenizer": "latentbench.stages.tokenizers:train_tokenizer_job",
    "pretrained-tokenizer": "latentbench.stages.pretrained:pretrained_tokenizer",
    "encode": "latentbench.stages.latents:encode_split",
    "reconstruction-metrics": "latentbench.stages.metrics:reconstruction_metrics",
    "latent-metrics": "latentbench.stages.latent_metrics:latent_metrics",
    "baseline-metrics": "latentbench.stages.baselines:baseline_metrics",
    "ifid-variants": "latentbench.stages.metrics:ifid_variants",
    "gfid-t": "latentbench.stages.diffusion:gfid_t",
    "trajectory-metrics": "latentbench.stages.latent_metrics:trajectory",
    "train-diffusion": "latentbench.stages.diffusion:train_diffusion_job",
    "sample": "latentbench.stages.diffusion:sample",
    "generation-metrics": "latentbench.stages.diffusion:generation_metrics",
    "diffusion-loss": "latentbench.stages.diffusion:diffusion_loss",
    "collect": "latentbench.stages.report:collect",
    "correlate": "latentbench.stages.report:correlate_study",
    "report": "latentbench.report.render:render_report",
    "fetch-weights": "latentbench.stages.weights:fetch_weights",
    "dense-demo-net": "latentbench.stages.seesaw:dense_demo_net",
    "drift": "latentbench.stages.seesaw:drift_job",
    "probe": "latentbench.stages.seesaw:probe_job",
    "controlnet-train": "latentbench.stages.controlnet:controlnet_train",
    "controlnet-evaluate": "latentbench.stages.controlnet:controlnet_evaluate",
}
# Flag names that differ from the parameter name, for functions whose owners keep another name
# (the report stage's ``metrics_csv`` is ``--metrics`` in rules/report.smk).
FLAG_NAMES: dict[str, dict[str, str]] = {"correlate": {"metrics_csv": "metrics"}}


def resolve(name: str) -> Callable[..., Any]:
    """The function behind subcommand ``name``."""
    module, _, attr = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _strip_optional(hint: Any) -> Any:
    """``X | None`` -> ``X`` (the None default says the flag may be left out)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return hint


def _is_pathlike(hint: Any) -> bool:
    parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return all(p in (str, Path, os.PathLike) for p in parts)


_SEQUENCES = (list, tuple, collections.abc.Iterable, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)


def argument_spec(param: inspect.Parameter, hint: Any) -> dict[str, Any]:
    """argparse keywords of one parameter from its type hint and default."""
    required = param.default is inspect.Parameter.empty
    hint = _strip_optional(hint)
    origin = typing.get_origin(hint) or hint
    kw: dict[str, Any] = {} if required else {"default": param.default}
    if hint is bool:
        if not required and param.default is True:
            return {**kw, "action": argparse.BooleanOptionalAction}
        return {"action": "store_true", "default": False}
    if origin in _MAPPINGS or hint is Any:
        kw.update(type=_json, metavar="JSON")
    elif origin in _SEQUENCES:
        (item,) = typing.get_args(hint)[:1] or (str,)
        kw.update(nargs="+" if required else "*", type=str if _is_pathlike(item) else item)
        if not required:
            kw["default"] = list(param.default)
    elif hint in (int, float):
        kw["type"] = hint
    elif _is_pathlike(hint):
        kw["metavar"] = "PATH"
    else:
        raise TypeError(f"{param.name}: no command-line form for type {hint!r}")
    if not kw.get("action") and required and param.kind is not inspect.Parameter.POSITIONAL_ONLY:
        kw["required"] = True
    return kw


def _param_help(doc: str, param: inspect.Parameter) -> str | None:
    """The docstring's ````name``: ...`` sentence for ``param``, plus its default."""
    match = re.search(rf"``{param.name}``:\s*(.+?)(?:\n\s*\n|\n``|$)", doc, re.S)
    text = " ".join(match.group(1).split()) if match else ""
    if param.default not in (inspect.Parameter.empty, None, False, (), []):
        text += f" (default: {param.default})"
    return text.strip() or None


def add_command(sub: argparse._SubParsersAction, name: str, fn: Callable[..., Any]) -> argparse.ArgumentParser:
    """A subparser whose arguments are ``fn``'s parameters (help from its docstring)."""
    doc = inspect.getdoc(fn) or ""
    summary = " ".join(doc.split("\n\n")[0].split())
    parser = sub.add_parser(name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(fn)
    renames = FLAG_NAMES.get(name, {})
    for param in inspect.signature(fn).parameters.values():
        kw = argument_spec(param, hints.get(param.name, str))
        kw["dest"] = param.name
        kw["help"] = _param_help(doc, param)
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            kw.pop("dest")
            kw["metavar"] = param.name.upper()
            parser.add_argument(param.name, **kw)
        else:
            parser.add_argument("--" + renames.get(param.name, param.name).replace("_", "-"), **kw)
    if "threads" not in inspect.signature(fn).parameters:
        parser.add_argument("--threads", type=int, default=1, dest="_threads", metavar="N", help="torch threads of this job")
    parser.set_defaults(_command=name, _fn=fn)
    return parser


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand (or only of ``only``: a job imports its own stage alone)."""
    parser = argparse.ArgumentParser(
        prog="latentbench", description=__doc__.split("\n")[0], epilog="LATENTBENCH_DEBUG=1 shows tracebacks of input errors too."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else [only]:
        add_command(sub, name, resolve(name))
    return parser


def _set_threads(threads: int) -> None:
    """Torch threads: the job's CPUs, shared among the processes torchrun starts on this node.
    Jobs whose stage does not use torch (collect, correlate, report) do not import it for this."""
    if "torch" not in sys.modules:
        return
    from latentbench.seeding import set_threads

    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    set_threads(max(1, threads // per_node))


STARTUP_MESSAGE = "startup %.2f s (process start to the %s call: interpreter, imports, arguments)"


def log_startup(name: str) -> None:
    """Log the job's fixed cost so far (bench/bench_demo.py sums these lines over a run's logs)."""
    import psutil

    elapsed = time.time() - psutil.Process().create_time()
    logging.getLogger("latentbench.cli").info(STARTUP_MESSAGE, elapsed, name)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latentbench`` command."""
    from latentbench.errors import LatentbenchError

    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    args = vars(build_parser(first if first in COMMANDS else None).parse_args(argv))
    name, fn = args.pop("_command"), args.pop("_fn")
    args.pop("command")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    _set_threads(args.pop("_threads", None) or args.get("threads", 1))
    if name != "validate-config":  # a command users type, not a DAG job
        log_startup(name)
    params = inspect.signature(fn).parameters.values()
    positional = [args.pop(p.name) for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    try:
        fn(*positional, **args)
    except LatentbenchError as exc:
        if os.environ.get("LATENTBENCH_DEBUG") == "1":
            raise
        print(f"latentbench {name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
