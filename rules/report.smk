# Collect every per-job JSON into metrics.csv, correlate with gFID, render the HTML report.


rule collect:
    input:
        reconstruction=expand(f"{RESULTS}/metrics/{{tok}}/reconstruction.json", tok=TOKENIZERS),
        generation=expand_pairs(f"{RESULTS}/metrics/{{tok}}/{{backbone}}/generation.json"),
        latent_stats=expand(f"{RESULTS}/latents/{{tok}}/val/stats.json", tok=TOKENIZERS),
        latent=expand(f"{RESULTS}/metrics/{{tok}}/latent.json", tok=TOKENIZERS),
        baselines=expand(f"{RESULTS}/metrics/{{tok}}/baselines.json", tok=TOKENIZERS),
        trajectory=expand_pairs(f"{RESULTS}/metrics/{{tok}}/{{backbone}}/trajectory.json"),
        diffusion_loss=expand_pairs(f"{RESULTS}/metrics/{{tok}}/{{backbone}}/diffusion_loss.json"),
        drift=SEESAW_DRIFT,
        probes=SEESAW_PROBES,
    output:
        f"{RESULTS}/metrics.csv",
    params:
        tokenizers=as_json(config["tokenizers"]),
        metrics_dir=lambda w, input: parent(input.reconstruction[0], 2),
        latents_dir=lambda w, input: parent(input.latent_stats[0], 3),
        backbones=as_json(config["backbones"]),
    benchmark:
        f"{RESULTS}/benchmarks/collect.tsv"
    log:
        f"{RESULTS}/logs/collect.log",
    shell:
        "latentbench collect --metrics-dir {params.metrics_dir} --latents-dir {params.latents_dir} "
        "--tokenizers {params.tokenizers:q} "
        "--backbones {params.backbones:q} --out {output} > {log} 2>&1"


rule correlate:
    input:
        rules.collect.output,
    output:
        f"{RESULTS}/correlations.csv",
    params:
        settings=study_settings("analysis"),
    benchmark:
        f"{RESULTS}/benchmarks/correlate.tsv"
    log:
        f"{RESULTS}/logs/correlate.log",
    shell:
        "latentbench correlate --metrics {input} --settings {params.settings:q} --out {output} > {log} 2>&1"


rule report:
    input:
        metrics=rules.collect.output,
        correlations=rules.correlate.output,
        feature_net=rules.feature_net.output.summary,
        strips=expand(f"{RESULTS}/metrics/{{tok}}/interpolation.png", tok=TOKENIZERS),
        latent=rules.collect.input.latent,
        ifid_variants=expand(f"{RESULTS}/metrics/{{tok}}/ifid_variants.json", tok=TOKENIZERS),
        gfid_t=expand_pairs(f"{RESULTS}/metrics/{{tok}}/{{backbone}}/gfid_t.json", GFID_T_PAIRS),
        trajectory=rules.collect.input.trajectory,
        controlnet=SEESAW_CONTROLNET,
    output:
        f"{RESULTS}/report/index.html",
    params:
        config=as_json(config),
        results=lambda w, output: parent(output[0], 2),
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        "latentbench report --results {params.results} --config {params.config:q} --out {output} > {log} 2>&1"
