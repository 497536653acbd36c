# Config validation, output layout and small helpers shared by every rule file.
import json
import re
from pathlib import Path

from latentbench.config import check_config, model_pairs, model_spec, seesaw_stand_ins
from latentbench.tokenizers.pretrained import weights_path, zoo_row
from latentbench.features.representations import fdr6_plan
from latentbench.features.foundation import network_weights
from latentbench.weights_fetch import input_path, load_manifest, required_weights, uses_demo_net

# The one validator (latentbench.config.check_config): schema, defaults, variants, arch presets,
# pretrained names and backbone x latent-grid checks, one line naming the bad key, before any job.
check_config(config)


container: config["container"]


RESULTS = f"{config['results_dir']}/{config['study']}"
TOKENIZERS = sorted(config["tokenizers"])
BACKBONES = sorted(config["backbones"])
CFG_SCALES = [f"{w:g}" for w in config["sampling"]["cfg_scales"]]
GFID_T_BACKBONES = config["ifid"]["gfid_t_backbones"] or BACKBONES
# (tokenizer, backbone) of every diffusion model: a tokenizer's `backbones`, else all of them.
PAIRS = model_pairs(config)
GFID_T_PAIRS = model_pairs(config, GFID_T_BACKBONES)
SHARDS = [f"{i:03d}" for i in range(config["sampling"]["shards"])]
# The FID / IS feature network and its weights: the DAG-trained demo net, or an external file
# (found in weights_dir or the hub caches; else the path the fetch rule writes).
FID_NET = config["feature_net"]["name"]
# demo-cnn studies: the demo net is also the tokenizers' perceptual / alignment stand-in
DEMO_NET_STUDY = uses_demo_net(config)
WEIGHT_MANIFEST = load_manifest()  # external weights (latentbench/weights_manifest.yaml)
FID_WEIGHTS = (
    f"{RESULTS}/features/demo-cnn.pt"
    if FID_NET == "demo-cnn"
    else str(input_path(WEIGHT_MANIFEST["inception-v3-fid"], config["weights_dir"]))
)


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
    tok="|".join(map(re.escape, TOKENIZERS)),
    backbone="|".join(map(re.escape, BACKBONES)),
    split="train|val",
    scale="[0-9.]+",
    shard="[0-9]+",
    images="[0-9]+",
    condition="canny|depth",


def as_json(obj):
    """A config fragment as one JSON string for a rule's params (a change re-runs the job)."""
    return json.dumps(obj, sort_keys=True)


def expand_pairs(pattern, pairs=PAIRS):
    """``pattern`` filled with each (tok, backbone) pair."""
    return expand(pattern, zip, tok=[t for t, _ in pairs], backbone=[b for _, b in pairs])


def parent(path, levels=1):
    """The folder ``levels`` up from ``path`` (for params derived from outputs)."""
    return str(Path(path).parents[levels - 1])


def train_resources(section):
    """A training rule's GPU resources: `gpu` on one node; per-node gres, one task per node beyond.

    For the slurm executor plugin (profiles/slurm/README.md): `mpi` stops it from wrapping the job in
    a one-task srun, `tasks_per_gpu=0` from turning tasks into --ntasks-per-gpu, and `gres` is per
    node where --gpus would be a job total that SLURM may spread unevenly.
    """
    gpus, nodes = config[section]["gpus"], config[section].get("nodes", 1)
    if nodes == 1:
        return {"gpu": gpus}
    return {"nodes": nodes, "tasks": nodes, "tasks_per_gpu": 0, "mpi": "srun", "gres": f"gpu:{gpus}"}


def launcher(gpus, nodes=1, threads=1):
    """The command that starts a training job: plain, torchrun with one process per GPU (DDP), or
    on several nodes srun with one torchrun per node meeting at the first host (c10d rendezvous).

    The SLURM_* variables expand inside `bash -c` on each node: the executor plugin strips them
    from the job's own environment. `--no-python latentbench` runs the installed CLI (in a
    container: the image's code; `-m` would put the working directory first on sys.path).
    """
    if nodes > 1:
        run = (
            f"torchrun --nnodes=$SLURM_NNODES --nproc_per_node={gpus} --rdzv_id=$SLURM_JOB_ID "
            '--rdzv_backend=c10d --rdzv_endpoint=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
            ":$((29500 + SLURM_JOB_ID % 1000)) --no-python latentbench"
        )
        return (
            f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --cpus-per-task={threads} "
            f"--kill-on-bad-exit=1 bash -c 'exec {run} \"$@\"' torchrun"
        )
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node={gpus} --no-python latentbench"
    return "latentbench"


def study_settings(*keys):
    """The study-wide settings a job depends on, as JSON, keyed by section name."""
    return as_json({k: config.get(k) for k in ("seed", *keys)})


# External weights (latentbench/weights_manifest.yaml), fetched by rules/weights.smk.
WEIGHTS_DIR = config["weights_dir"]
# downloadable entries by their file name in weights_dir (package files ship with their wheel)
WEIGHT_BY_FILE = {
    e.file: e.name for e in WEIGHT_MANIFEST.values() if e.kind != "package"
}


def study_weights(wildcards):
    """Every downloadable weight the study reads: where it is found, else the path fetch_weights writes."""
    paths = []
    for name in required_weights(config):
        entry = WEIGHT_MANIFEST[name]
        if entry.kind != "package":
            paths.append(
                str(input_path(entry, WEIGHTS_DIR))
            )
    return paths


# The Tilted Seesaw jobs (rules/seesaw.smk), on with seesaw.enabled; the demo's stand-in
# projectors (dense net + demo-cnn) in demo-cnn studies (seesaw.projectors: auto).
SEESAW = config["seesaw"]["enabled"]
SEESAW_STAND_INS = seesaw_stand_ins(config)
PROBE_CONDITIONS = ["canny", "depth"] if SEESAW and config["seesaw"]["probe"]["enabled"] else []
PROBE_TOKENIZERS = sorted(config["seesaw"]["probe"]["tokenizers"] or TOKENIZERS)
CONTROLNET_PAIRS = [(p["tokenizer"], p["backbone"]) for p in config["seesaw"]["controlnet"]["pairs"]] if SEESAW else []
CONTROLNET_CONDITIONS = config["seesaw"]["controlnet"]["conditions"]


def stand_in_inputs(wildcards=None):
    """The demo stand-ins' weight files (dense net, demo-cnn), or none with the paper's projectors."""
    if not SEESAW_STAND_INS:
        return {}
    return {"dense": rules.dense_demo_net.output.weights, "demo_cnn": rules.feature_net.output.weights}


def stand_in_flags(wildcards, input):
    """The command-line flags naming the stand-ins' weights (empty with the paper's projectors)."""
    return f"--dense {input.dense} --demo-cnn {input.demo_cnn}" if SEESAW_STAND_INS else ""


def seesaw_settings(*parts, sections=()):
    """Like study_settings, with only the named ``seesaw`` keys (a job re-runs when those change;
    the ControlNet pairs list is left out: adding a pair re-runs no existing job)."""
    seesaw = {k: config["seesaw"][k] for k in ("projectors", *parts)}
    if "controlnet" in seesaw:
        seesaw["controlnet"] = {k: v for k, v in seesaw["controlnet"].items() if k != "pairs"}
    return as_json({"seed": config["seed"], "seesaw": seesaw, **{k: config.get(k) for k in sections}})


# Tokenizer inputs (rules/tokenizers.smk): frozen networks of trained ones, released files of pretrained ones.
def tokenizer_network_weights(wildcards):
    """The frozen networks' files a trainable tokenizer reads (LPIPS-VGG, its VF/REPA foundation
    encoder): found in weights_dir or the caches, else the path fetch_weights writes."""
    names = network_weights(config["tokenizers"][wildcards.tok], DEMO_NET_STUDY)
    return [str(input_path(WEIGHT_MANIFEST[n], WEIGHTS_DIR)) for n in names]
def pretrained_weights(tok):
    """A pretrained entry's weights: its `weights` path; none for `weights: null` (random init);
    without the key, the row's files in weights_dir (fetched by fetch_weights)."""
    spec = config["tokenizers"][tok]
    if "weights" in spec:
        return spec["weights"]
    return str(weights_path(spec["name"], WEIGHTS_DIR))
def weights_flag(weights):
    """``--weights <path>`` for a pretrained tokenizer's file or folder; nothing for random init."""
    return f"--weights {weights}" if weights else ""


def pretrained_inputs(wildcards):
    """The files a pretrained entry reads: its weights file or folder, or the row's manifest files."""
    spec = config["tokenizers"][wildcards.tok]
    if "weights" in spec:
        return [spec["weights"]] if spec["weights"] else []
    return [f"{WEIGHTS_DIR}/{WEIGHT_MANIFEST[n].file}" for n in zoo_row(spec["name"]).files]
def tokenizer_file(wildcards):
    """The file later jobs load a tokenizer from: the trained model, or a pretrained reference."""
    pretrained = config["tokenizers"][wildcards.tok]["family"] == "pretrained"
    return f"{RESULTS}/tokenizers/{wildcards.tok}/" + ("tokenizer.json" if pretrained else "model.pt")

