# Collect every per-job JSON into metrics.csv, correlate with gFID (and write the analysis tables
# the report formats), render the HTML report. Figures and tables are registered with report(),
# so `snakemake --report report.zip` builds Snakemake's own report archive as well.


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
        report(f"{RESULTS}/metrics.csv", caption="captions/metrics.rst", category="Tables"),
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
        correlations=report(
            f"{RESULTS}/correlations.csv", caption="captions/correlations.rst", category="Tables"
        ),
        stability=report(
            f"{RESULTS}/analysis/stability.csv", caption="captions/stability.rst", category="Tables"
        ),
        seesaw_fig2=report(
            f"{RESULTS}/analysis/seesaw_fig2.csv",
            caption="captions/seesaw_fig2.rst",
            category="Tables",
        ),
        seesaw_fig2_paper=report(
            f"{RESULTS}/analysis/seesaw_fig2_paper.csv",
            caption="captions/seesaw_fig2_paper.rst",
            category="Tables",
        ),
    params:
        settings=study_settings("analysis", "backbones"),
        tables_dir=lambda w, output: parent(output.stability, 1),
    benchmark:
        f"{RESULTS}/benchmarks/correlate.tsv"
    log:
        f"{RESULTS}/logs/correlate.log",
    shell:
        "latentbench correlate --metrics {input} --settings {params.settings:q} --out {output.correlations} "
        "--tables-dir {params.tables_dir} > {log} 2>&1"


rule report:
    input:
        metrics=rules.collect.output,
        correlations=rules.correlate.output.correlations,
        tables=[rules.correlate.output.stability, rules.correlate.output.seesaw_fig2, rules.correlate.output.seesaw_fig2_paper],
        feature_net=rules.feature_net.output.summary,
        strips=expand(f"{RESULTS}/metrics/{{tok}}/interpolation.png", tok=TOKENIZERS),
        latent=rules.collect.input.latent,
        ifid_variants=expand(f"{RESULTS}/metrics/{{tok}}/ifid_variants.json", tok=TOKENIZERS),
        gfid_t=expand_pairs(f"{RESULTS}/metrics/{{tok}}/{{backbone}}/gfid_t.json", GFID_T_PAIRS),
        trajectory=rules.collect.input.trajectory,
        controlnet=SEESAW_CONTROLNET,
    output:
        index=report(f"{RESULTS}/report/index.html", caption="captions/index.rst", category="HTML report"),
        overview=report(
            f"{RESULTS}/report/img/overview-ranked-proxies.png",
            caption="captions/overview.rst",
            category="Figures",
        ),
        seesaw=report(
            f"{RESULTS}/report/img/seesaw-fig2-paper.png",
            caption="captions/seesaw_fig2_paper.rst",
            category="Figures",
        ),
    params:
        config=as_json(config),
        results=lambda w, output: parent(output.index, 2),
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        "latentbench report --results {params.results} --config {params.config:q} --out {output.index} > {log} 2>&1"
