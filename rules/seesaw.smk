# The Tilted Seesaw jobs (latentbench/stages/seesaw.py, controlnet.py; spec metrics-ifid-seesaw
# §7-9): condition drift per tokenizer from the val reconstructions the reconstruction job wrote
# (no second decode), latent condition probes, ControlNet branches on the configured pairs.


rule dense_demo_net:
    input:
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
    output:
        weights=f"{RESULTS}/features/demo-dense.pt",
        summary=f"{RESULTS}/features/demo-dense.json",
    params:
        settings=seesaw_settings("dense_net"),
    threads: config["threads"]
    benchmark:
        f"{RESULTS}/benchmarks/dense_demo_net.tsv"
    log:
        f"{RESULTS}/logs/dense_demo_net.log",
    shell:
        "latentbench dense-demo-net --train {input.train} --val {input.val} --settings {params.settings:q} "
        "--threads {threads} --out {output.weights} --summary {output.summary} > {log} 2>&1"


rule drift:
    input:
        unpack(stand_in_inputs),
        val=rules.dataset.output.val,
        reconstructions=f"{RESULTS}/metrics/{{tok}}/val_reconstructions.npy",
    output:
        f"{RESULTS}/metrics/{{tok}}/drift.json",
    params:
        settings=seesaw_settings("conditions", "drift", "face_backend", "seg_input_order", sections=("weights_dir",)),
        stand_ins=stand_in_flags,
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/drift-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/drift-{{tok}}.log",
    shell:
        "latentbench drift --settings {params.settings:q} --val {input.val} "
        "--reconstructions {input.reconstructions} {params.stand_ins} --threads {threads} --out {output} > {log} 2>&1"


rule probe:
    input:
        unpack(stand_in_inputs),
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        train_mean=f"{RESULTS}/latents/{{tok}}/train/mean.npy",
        val_mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
    output:
        f"{RESULTS}/metrics/{{tok}}/probe_{{condition}}.json",
    params:
        settings=seesaw_settings("probe", "face_backend", "seg_input_order", sections=("weights_dir",)),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}",
        stand_ins=stand_in_flags,
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/probe-{{tok}}-{{condition}}.tsv"
    log:
        f"{RESULTS}/logs/probe-{{tok}}-{{condition}}.log",
    shell:
        "latentbench probe --settings {params.settings:q} --condition {wildcards.condition} "
        "--latents {params.latents} --train {input.train} --val {input.val} {params.stand_ins} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule controlnet_train:
    input:
        unpack(stand_in_inputs),
        model=rules.train_diffusion.output,
        tokenizer=tokenizer_file,
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        train_mean=f"{RESULTS}/latents/{{tok}}/train/mean.npy",
        train_std=f"{RESULTS}/latents/{{tok}}/train/std.npy",
        val_mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
    output:
        branch=f"{RESULTS}/controlnet/{{tok}}/{{backbone}}/{{condition}}/branch.pt",
        curves=f"{RESULTS}/metrics/{{tok}}/{{backbone}}/controlnet_{{condition}}_curves.json",
    params:
        settings=seesaw_settings("controlnet", "face_backend", "seg_input_order", sections=("weights_dir",)),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}",
        checkpoint=lambda w: f"{RESULTS}/controlnet/{w.tok}/{w.backbone}/{w.condition}/checkpoint.pt",
        stand_ins=stand_in_flags,
    threads: config["threads"]
    resources:
        gpu=config["seesaw"]["controlnet"]["gpus"],
    benchmark:
        f"{RESULTS}/benchmarks/controlnet_train-{{tok}}-{{backbone}}-{{condition}}.tsv"
    log:
        f"{RESULTS}/logs/controlnet_train-{{tok}}-{{backbone}}-{{condition}}.log",
    shell:
        "latentbench controlnet-train --settings {params.settings:q} --condition {wildcards.condition} "
        "--model {input.model} --tokenizer {input.tokenizer} --latents {params.latents} --train {input.train} "
        "--val {input.val} {params.stand_ins} --checkpoint {params.checkpoint} --threads {threads} "
        "--out {output.branch} --curves {output.curves} > {log} 2>&1"


rule controlnet_evaluate:
    input:
        unpack(stand_in_inputs),
        model=rules.train_diffusion.output,
        tokenizer=tokenizer_file,
        branch=rules.controlnet_train.output.branch,
        curves=rules.controlnet_train.output.curves,
        val=rules.dataset.output.val,
        feature_net=FID_WEIGHTS,
    output:
        metrics=f"{RESULTS}/metrics/{{tok}}/{{backbone}}/controlnet_{{condition}}.json",
        grid=f"{RESULTS}/metrics/{{tok}}/{{backbone}}/controlnet_{{condition}}.png",
    params:
        settings=seesaw_settings(
            "controlnet", "face_backend", "seg_input_order", sections=("weights_dir", "feature_net", "sampling")
        ),
        stand_ins=stand_in_flags,
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/controlnet_evaluate-{{tok}}-{{backbone}}-{{condition}}.tsv"
    log:
        f"{RESULTS}/logs/controlnet_evaluate-{{tok}}-{{backbone}}-{{condition}}.log",
    shell:
        "latentbench controlnet-evaluate --settings {params.settings:q} --condition {wildcards.condition} "
        "--model {input.model} --tokenizer {input.tokenizer} --branch {input.branch} --curves {input.curves} "
        "--val {input.val} --feature-net {input.feature_net} {params.stand_ins} --threads {threads} "
        "--out {output.metrics} --grid {output.grid} > {log} 2>&1"


# The Seesaw outputs the report reads (none when seesaw.enabled is off).
SEESAW_DRIFT = expand(f"{RESULTS}/metrics/{{tok}}/drift.json", tok=TOKENIZERS) if SEESAW else []
SEESAW_PROBES = expand(f"{RESULTS}/metrics/{{tok}}/probe_{{condition}}.json", tok=PROBE_TOKENIZERS, condition=PROBE_CONDITIONS)
SEESAW_CONTROLNET = [
    f"{RESULTS}/metrics/{tok}/{bb}/controlnet_{c}.{ext}"
    for tok, bb in CONTROLNET_PAIRS
    for c in CONTROLNET_CONDITIONS
    for ext in ("json", "png")
]
