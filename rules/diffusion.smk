# Diffusion backbones trained on each tokenizer's cached latents, and sampling.


rule train_diffusion:
    input:
        mean=f"{RESULTS}/latents/{{tok}}/train/mean.npy",
        std=f"{RESULTS}/latents/{{tok}}/train/std.npy",
        stats=f"{RESULTS}/latents/{{tok}}/train/stats.json",
        labels=rules.dataset.output.train,
    output:
        f"{RESULTS}/diffusion/{{tok}}/{{backbone}}/model.pt",
    params:
        backbone=lambda w: as_json(config["backbones"][w.backbone]),
        settings=study_settings("diffusion_training"),
        checkpoint=lambda w: f"{RESULTS}/diffusion/{w.tok}/{w.backbone}/checkpoint.pt",
        latents=lambda w: f"{RESULTS}/latents/{w.tok}/train",
        launcher=lambda w, resources, threads: launcher(
            resources.get("gpu", config["diffusion_training"]["gpus"]),
            resources.get("nodes", 1),
            threads,
        ),
    threads: config["threads"] * max(1, config["diffusion_training"]["gpus"])
    resources:
        runtime=120,
        **train_resources("diffusion_training"),
    benchmark:
        f"{RESULTS}/benchmarks/train_diffusion-{{tok}}-{{backbone}}.tsv"
    log:
        f"{RESULTS}/logs/train_diffusion-{{tok}}-{{backbone}}.log",
    shell:
        "{params.launcher} train-diffusion --backbone {params.backbone:q} --settings {params.settings:q} "
        "--latents {params.latents} --labels {input.labels} "
        "--checkpoint {params.checkpoint} --threads {threads} --out {output} > {log} 2>&1"


rule sample:
    input:
        model=rules.train_diffusion.output,
        tokenizer=tokenizer_file,
        weights=FID_WEIGHTS,
    output:
        stats=f"{RESULTS}/samples/{{tok}}/{{backbone}}/cfg{{scale}}/shard-{{shard}}.npz",
        scores=f"{RESULTS}/samples/{{tok}}/{{backbone}}/cfg{{scale}}/shard-{{shard}}.is.npz",
        fdr6=f"{RESULTS}/samples/{{tok}}/{{backbone}}/cfg{{scale}}/shard-{{shard}}.fdr6.npz",
        grid=f"{RESULTS}/samples/{{tok}}/{{backbone}}/cfg{{scale}}/shard-{{shard}}.png",
    params:
        settings=study_settings("sampling", "feature_net"),
        fdr6=as_json(FDR6),
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/sample-{{tok}}-{{backbone}}-cfg{{scale}}-{{shard}}.tsv"
    log:
        f"{RESULTS}/logs/sample-{{tok}}-{{backbone}}-cfg{{scale}}-{{shard}}.log",
    shell:
        "latentbench sample --model {input.model} --tokenizer {input.tokenizer} "
        "--feature-net {input.weights} --settings {params.settings:q} --scale {wildcards.scale} "
        "--shard {wildcards.shard} --threads {threads} --out {output.stats} --scores {output.scores} "
        "--fdr6-plan {params.fdr6:q} --fdr6-out {output.fdr6} --grid {output.grid} > {log} 2>&1"


rule generation_metrics:
    input:
        shards=lambda w: expand(
            f"{RESULTS}/samples/{w.tok}/{w.backbone}/cfg{{scale}}/shard-{{shard}}.npz",
            scale=CFG_SCALES,
            shard=SHARDS,
        ),
        scores=lambda w: expand(
            f"{RESULTS}/samples/{w.tok}/{w.backbone}/cfg{{scale}}/shard-{{shard}}.is.npz",
            scale=CFG_SCALES,
            shard=SHARDS,
        ),
        fdr6_shards=lambda w: expand(
            f"{RESULTS}/samples/{w.tok}/{w.backbone}/cfg{{scale}}/shard-{{shard}}.fdr6.npz",
            scale=CFG_SCALES,
            shard=SHARDS,
        ),
        fdr6_references=fdr6_references,
        reference=reference_stats("train"),
    output:
        f"{RESULTS}/metrics/{{tok}}/{{backbone}}/generation.json",
    params:
        settings=study_settings("feature_net", "fdr6_divisors"),
        fdr6=as_json(FDR6),
    benchmark:
        f"{RESULTS}/benchmarks/generation_metrics-{{tok}}-{{backbone}}.tsv"
    log:
        f"{RESULTS}/logs/generation_metrics-{{tok}}-{{backbone}}.log",
    shell:
        "latentbench generation-metrics --settings {params.settings:q} --shards {input.shards} "
        "--scores {input.scores} --reference {input.reference} --fdr6-plan {params.fdr6:q} "
        "--fdr6-shards {input.fdr6_shards} --fdr6-references {input.fdr6_references} "
        "--out {output} > {log} 2>&1"
