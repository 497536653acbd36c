# The dataset, the demo feature network and the reference feature statistics.


rule dataset:
    output:
        train=f"{RESULTS}/data/train/manifest.json",
        val=f"{RESULTS}/data/val/manifest.json",
    params:
        settings=study_settings("data"),
        out_dir=lambda w, output: parent(output.train, 2),
    threads: config["threads"]
    benchmark:
        f"{RESULTS}/benchmarks/dataset.tsv"
    log:
        f"{RESULTS}/logs/dataset.log",
    shell:
        "latentbench dataset --settings {params.settings:q} --threads {threads} "
        "--out {params.out_dir} > {log} 2>&1"


rule feature_net:
    input:
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
    output:
        weights=f"{RESULTS}/features/demo-cnn.pt",
        summary=f"{RESULTS}/features/demo-cnn.json",
    params:
        settings=study_settings("feature_net"),
    threads: 2
    benchmark:
        f"{RESULTS}/benchmarks/feature_net.tsv"
    log:
        f"{RESULTS}/logs/feature_net.log",
    shell:
        "latentbench train-feature-net --settings {params.settings:q} --threads {threads} "
        "--train {input.train} --val {input.val} "
        "--out {output.weights} --summary {output.summary} > {log} 2>&1"


rule fdr6_reference_stats:
    input:
        split=f"{RESULTS}/data/{{split}}/manifest.json",
        weights=list(FDR6.get("spaces", {}).values()),
    output:
        f"{RESULTS}/features/fdr6/stats-{{split}}-n{{images}}.npz",
    params:
        plan=as_json(FDR6),
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/fdr6_reference_stats-{{split}}-n{{images}}.tsv"
    log:
        f"{RESULTS}/logs/fdr6_reference_stats-{{split}}-n{{images}}.log",
    shell:
        "latentbench fdr6-reference-stats --plan {params.plan:q} --split {input.split} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule reference_stats:
    input:
        split=f"{RESULTS}/data/{{split}}/manifest.json",
        weights=FID_WEIGHTS,
    output:
        f"{RESULTS}/features/{FID_NET}/stats-{{split}}-n{{images}}.npz",
    params:
        settings=study_settings("feature_net", "data"),
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/reference_stats-{{split}}-n{{images}}.tsv"
    log:
        f"{RESULTS}/logs/reference_stats-{{split}}-n{{images}}.log",
    shell:
        "latentbench reference-stats --settings {params.settings:q} --split {input.split} --weights {input.weights} "
        "--threads {threads} --out {output} > {log} 2>&1"
