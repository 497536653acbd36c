# Tokenizers trained in the DAG (one job per config entry; checkpoints and resumes).


rule train_tokenizer:
    input:
        train=rules.dataset.output.train,
        feature_net=rules.feature_net.output.weights if DEMO_NET_STUDY else [],
        networks=tokenizer_network_weights,
    output:
        f"{RESULTS}/tokenizers/{{tok}}/model.pt",
    params:
        spec=lambda w: as_json(model_spec(config["tokenizers"][w.tok])),
        settings=study_settings("tokenizer_training"),
        checkpoint=lambda w: f"{RESULTS}/tokenizers/{w.tok}/checkpoint.pt",
        feature_net=lambda w, input: f"--feature-net {input.feature_net}" if DEMO_NET_STUDY else "",
        weights_dir=WEIGHTS_DIR,
    threads: config["threads"]
    resources:
        gpu=config["tokenizer_training"]["gpus"],
        runtime=60,
    benchmark:
        f"{RESULTS}/benchmarks/train_tokenizer-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/train_tokenizer-{{tok}}.log",
    shell:
        "latentbench train-tokenizer --name {wildcards.tok} --spec {params.spec:q} "
        "--settings {params.settings:q} --train {input.train} {params.feature_net} --weights-dir {params.weights_dir:q} "
        "--checkpoint {params.checkpoint} --threads {threads} --out {output} > {log} 2>&1"




# Public autoencoders (family: pretrained, spec zoo.md): no training job; the released weights are
# the input, checked once (strict load, latent shape at the study's resolution) into a reference.
rule pretrained_tokenizer:
    input:
        pretrained_inputs,
    output:
        f"{RESULTS}/tokenizers/{{tok}}/tokenizer.json",
    params:
        spec=lambda w: as_json(config["tokenizers"][w.tok]),
        weights=lambda w: weights_flag(pretrained_weights(w.tok)),
        resolution=config["data"]["resolution"],
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/pretrained_tokenizer-{{tok}}.tsv"
    log:
        f"{RESULTS}/logs/pretrained_tokenizer-{{tok}}.log",
    shell:
        "latentbench pretrained-tokenizer --name {wildcards.tok} --spec {params.spec:q} {params.weights} "
        "--resolution {params.resolution} --threads {threads} --out {output} > {log} 2>&1"
