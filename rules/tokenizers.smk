# Tokenizers trained in the DAG (one job per config entry; checkpoints and resumes).


rule train_tokenizer:
    input:
        train=rules.dataset.output.train,
        weights=rules.feature_net.output.weights,
    output:
        f"{RESULTS}/tokenizers/{{tok}}/model.pt",
    params:
        spec=lambda w: as_json(model_spec(config["tokenizers"][w.tok])),
        settings=study_settings("tokenizer_training"),
        checkpoint=lambda w: f"{RESULTS}/tokenizers/{w.tok}/checkpoint.pt",
    threads: config["threads"]
    retries: 1
    resources:
        gpu=config["tokenizer_training"]["gpus"],
        runtime=60,
    benchmark:
        f"{RESULTS}/benchmarks/train_tokenizer-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/train_tokenizer-{{tok}}.log",
    shell:
        "latentbench train-tokenizer --name {wildcards.tok} --spec {params.spec:q} "
        "--settings {params.settings:q} --train {input.train} --feature-net {input.weights} "
        "--checkpoint {params.checkpoint} --threads {threads} --out {output} > {log} 2>&1"
