# External weights (latentbench/weights_manifest.yaml). A rule whose input is a weight file that is
# neither in weights_dir nor in the Hugging Face / torch.hub caches (FID_WEIGHTS falls back to
# weights_dir/<file>) gets it from fetch_weights, which downloads it where there is network and
# fails with one message listing what is missing and where from where there is none.
# `snakemake weights` fetches every weight the study reads (latentbench.weights_fetch.required_weights).


rule fetch_weights:
    output:
        f"{WEIGHTS_DIR}/{{weight_file}}",
    log:
        f"{RESULTS}/logs/fetch_weights-{{weight_file}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_weights-{{weight_file}}.tsv"
    wildcard_constraints:
        weight_file="|".join(map(re.escape, WEIGHT_BY_FILE)),
    retries: 1
    localrule: True  # downloads run where Snakemake runs: cluster nodes often have no network
    params:
        name=lambda w: WEIGHT_BY_FILE[w.weight_file],
        weights_dir=lambda w, output: parent(output[0]),
    shell:
        "latentbench fetch-weights --weights-dir {params.weights_dir:q} --names {params.name} --into-dir > {log} 2>&1"


rule weights:
    input:
        study_weights,
