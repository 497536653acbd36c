# Config validation, output layout and small helpers shared by every rule file.
import json
from pathlib import Path

from snakemake.utils import validate

from latentbench.config import SCHEMA_PATH, check_config
from latentbench.features import feature_weights_file
from latentbench.features.representations import fdr6_plan

# One readable line naming the bad key, before anything runs; then snakemake's own
# validation against the same schema (it also fills the defaults).
check_config(config)
validate(config, str(SCHEMA_PATH))


container: config["container"]


RESULTS = f"{config['results_dir']}/{config['study']}"
TOKENIZERS = sorted(config["tokenizers"])
BACKBONES = sorted(config["backbones"])
CFG_SCALES = [f"{w:g}" for w in config["sampling"]["cfg_scales"]]
SHARDS = [f"{i:03d}" for i in range(config["sampling"]["shards"])]
# The FID / IS feature network and its weights: the DAG-trained demo net, or an external file
# (found in weights_dir or the hub caches; else the path the fetch rule writes).
FID_NET = config["feature_net"]["name"]
FID_WEIGHTS = feature_weights_file(FID_NET, config["weights_dir"]) or f"{RESULTS}/features/demo-cnn.pt"


def reference_stats(split):
    """Reference feature statistics of a split, keyed by (split, feature net, image count)."""
    return f"{RESULTS}/features/{FID_NET}/stats-{split}-n{config['data'][split]}.npz"


# FDr6 (six representation spaces): their weight files, or why it cannot run ("not_run"); {} when
# the study does not ask for it. Only a runnable plan adds the FDr6 reference-statistics jobs.
FDR6 = fdr6_plan(config["weights_dir"]) if "fdr6" in config["metrics"] else {}


def fdr6_references(wildcards=None):
    """The FDr6 reference groups (train, and val for recomputed divisors), or none if FDr6 is not run."""
    if "spaces" not in FDR6:
        return []
    splits = ["train", "val"] if config["fdr6_divisors"] == "recomputed" else ["train"]
    return [f"{RESULTS}/features/fdr6/stats-{s}-n{config['data'][s]}.npz" for s in splits]


# The rule resource `gpu` of every inference job (a cluster profile turns it into a GPU request).
INFERENCE_GPUS = config["inference_gpus"]


wildcard_constraints:
    tok="|".join(TOKENIZERS),
    backbone="|".join(BACKBONES),
    split="train|val",
    scale="[0-9.]+",
    shard="[0-9]+",
    images="[0-9]+",


def as_json(obj):
    """A config fragment as one JSON string for a rule's params (a change re-runs the job)."""
    return json.dumps(obj, sort_keys=True)


def parent(path, levels=1):
    """The folder ``levels`` up from ``path`` (for params derived from outputs)."""
    return str(Path(path).parents[levels - 1])


def launcher(gpus):
    """The command that starts a training job: plain, or torchrun with one process per GPU (DDP)."""
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node={gpus} -m latentbench.cli"
    return "latentbench"


def study_settings(*keys):
    """The study-wide settings a job depends on, as JSON, keyed by section name."""
    return as_json({k: config.get(k) for k in ("seed", *keys)})
