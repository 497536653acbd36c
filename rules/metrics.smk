# Per-tokenizer metrics: reconstruction + iFID from one latent pass, and the held-out
# diffusion loss per backbone.


rule reconstruction_metrics:
    input:
        tokenizer=tokenizer_file,
        val=rules.dataset.output.val,
        val_mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
        val_std=f"{RESULTS}/latents/{{tok}}/val/std.npy",
        ref_mean=f"{RESULTS}/latents/{{tok}}/train/mean.npy",
        ref_std=f"{RESULTS}/latents/{{tok}}/train/std.npy",
        val_stats_json=f"{RESULTS}/latents/{{tok}}/val/stats.json",
        ref_stats_json=f"{RESULTS}/latents/{{tok}}/train/stats.json",
        weights=FID_WEIGHTS,
        val_stats=reference_stats("val"),
    output:
        metrics=f"{RESULTS}/metrics/{{tok}}/reconstruction.json",
        strip=f"{RESULTS}/metrics/{{tok}}/interpolation.png",
        # the val reconstructions for the Seesaw drift job (uint8 memory map; removed once it ran)
        **({"reconstructions": temp(f"{RESULTS}/metrics/{{tok}}/val_reconstructions.npy")} if SEESAW else {}),
    params:
        settings=study_settings("ifid", "reconstruction", "metrics", "weights_dir", "feature_net"),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}",
        reconstructions=lambda w, output: f"--reconstructions {output.reconstructions}" if SEESAW else "",
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/reconstruction_metrics-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/reconstruction_metrics-{{tok}}.log",
    shell:
        "latentbench reconstruction-metrics --tokenizer {input.tokenizer} --val {input.val} "
        "--latents {params.latents} --feature-net {input.weights} "
        "--val-stats {input.val_stats} --settings {params.settings:q} --threads {threads} "
        "--out {output.metrics} --strip {output.strip} {params.reconstructions} > {log} 2>&1"


rule diffusion_loss:
    input:
        model=rules.train_diffusion.output,
        mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
        std=f"{RESULTS}/latents/{{tok}}/val/std.npy",
        stats=f"{RESULTS}/latents/{{tok}}/val/stats.json",
        val=rules.dataset.output.val,
    output:
        f"{RESULTS}/metrics/{{tok}}/{{backbone}}/diffusion_loss.json",
    params:
        settings=study_settings("metrics"),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}/val",
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/diffusion_loss-{{tok}}-{{backbone}}.tsv"
    log:
        f"{RESULTS}/logs/diffusion_loss-{{tok}}-{{backbone}}.log",
    shell:
        "latentbench diffusion-loss --model {input.model} --latents {params.latents} "
        "--labels {input.val} --settings {params.settings:q} --threads {threads} --out {output} > {log} 2>&1"


rule latent_metrics:
    input:
        tokenizer=tokenizer_file,
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        val_mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
        val_std=f"{RESULTS}/latents/{{tok}}/val/std.npy",
        train_mean=f"{RESULTS}/latents/{{tok}}/train/mean.npy",
        train_std=f"{RESULTS}/latents/{{tok}}/train/std.npy",
        val_stats_json=f"{RESULTS}/latents/{{tok}}/val/stats.json",
        train_stats_json=f"{RESULTS}/latents/{{tok}}/train/stats.json",
    output:
        f"{RESULTS}/metrics/{{tok}}/latent.json",
    params:
        settings=study_settings("latent_metrics", "metrics"),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}",
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/latent_metrics-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/latent_metrics-{{tok}}.log",
    shell:
        "latentbench latent-metrics --settings {params.settings:q} --tokenizer {input.tokenizer} "
        "--latents {params.latents} --train {input.train} --val {input.val} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule trajectory_metrics:
    input:
        model=rules.train_diffusion.output,
    output:
        f"{RESULTS}/metrics/{{tok}}/{{backbone}}/trajectory.json",
    params:
        settings=study_settings("latent_metrics", "metrics"),
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/trajectory_metrics-{{tok}}-{{backbone}}.tsv"
    log:
        f"{RESULTS}/logs/trajectory_metrics-{{tok}}-{{backbone}}.log",
    shell:
        "latentbench trajectory-metrics --settings {params.settings:q} --model {input.model} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule baseline_metrics:
    input:
        tokenizer=tokenizer_file,
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        weights=rules.feature_net.output.weights,
        val_mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
        train_mean=f"{RESULTS}/latents/{{tok}}/train/mean.npy",
        val_std=f"{RESULTS}/latents/{{tok}}/val/std.npy",
        train_std=f"{RESULTS}/latents/{{tok}}/train/std.npy",
        val_stats_json=f"{RESULTS}/latents/{{tok}}/val/stats.json",
        train_stats_json=f"{RESULTS}/latents/{{tok}}/train/stats.json",
    output:
        f"{RESULTS}/metrics/{{tok}}/baselines.json",
    params:
        settings=study_settings("baselines", "ifid", "metrics"),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}",
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/baseline_metrics-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/baseline_metrics-{{tok}}.log",
    shell:
        "latentbench baseline-metrics --settings {params.settings:q} --tokenizer {input.tokenizer} "
        "--latents {params.latents} --train {input.train} --val {input.val} --feature-net {input.weights} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule ifid_variants:
    input:
        tokenizer=tokenizer_file,
        val_mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
        train_mean=f"{RESULTS}/latents/{{tok}}/train/mean.npy",
        val_std=f"{RESULTS}/latents/{{tok}}/val/std.npy",
        train_std=f"{RESULTS}/latents/{{tok}}/train/std.npy",
        val_stats_json=f"{RESULTS}/latents/{{tok}}/val/stats.json",
        train_stats_json=f"{RESULTS}/latents/{{tok}}/train/stats.json",
        weights=FID_WEIGHTS,
        val_stats=reference_stats("val"),
    output:
        f"{RESULTS}/metrics/{{tok}}/ifid_variants.json",
    params:
        settings=study_settings("ifid", "feature_net", "metrics"),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}",
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/ifid_variants-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/ifid_variants-{{tok}}.log",
    shell:
        "latentbench ifid-variants --settings {params.settings:q} --tokenizer {input.tokenizer} "
        "--latents {params.latents} --feature-net {input.weights} --val-stats {input.val_stats} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule gfid_t:
    input:
        model=rules.train_diffusion.output,
        tokenizer=tokenizer_file,
        val_mean=f"{RESULTS}/latents/{{tok}}/val/mean.npy",
        val_std=f"{RESULTS}/latents/{{tok}}/val/std.npy",
        val_stats_json=f"{RESULTS}/latents/{{tok}}/val/stats.json",
        val=rules.dataset.output.val,
        weights=FID_WEIGHTS,
        val_stats=reference_stats("val"),
    output:
        f"{RESULTS}/metrics/{{tok}}/{{backbone}}/gfid_t.json",
    params:
        settings=study_settings("ifid", "sampling", "feature_net"),
        latents=lambda w: f"{RESULTS}/latents/{w.tok}/val",
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/gfid_t-{{tok}}-{{backbone}}.tsv"
    log:
        f"{RESULTS}/logs/gfid_t-{{tok}}-{{backbone}}.log",
    shell:
        "latentbench gfid-t --settings {params.settings:q} --model {input.model} --tokenizer {input.tokenizer} "
        "--latents {params.latents} --labels {input.val} --feature-net {input.weights} "
        "--val-stats {input.val_stats} --threads {threads} --out {output} > {log} 2>&1"
