# The latent cache: every split encoded once per tokenizer (posterior mean and std,
# memory-mapped .npy) plus per-channel normalisation statistics.


rule encode_latents:
    input:
        split=f"{RESULTS}/data/{{split}}/manifest.json",
        tokenizer=tokenizer_file,
    output:
        mean=f"{RESULTS}/latents/{{tok}}/{{split}}/mean.npy",
        std=f"{RESULTS}/latents/{{tok}}/{{split}}/std.npy",
        stats=f"{RESULTS}/latents/{{tok}}/{{split}}/stats.json",
    params:
        out_dir=lambda w: f"{RESULTS}/latents/{w.tok}/{w.split}",
    threads: config["threads"]
    resources:
        gpu=INFERENCE_GPUS,
    benchmark:
        f"{RESULTS}/benchmarks/encode_latents-{{tok}}-{{split}}.tsv"
    log:
        f"{RESULTS}/logs/encode_latents-{{tok}}-{{split}}.log",
    shell:
        "latentbench encode --tokenizer {input.tokenizer} --split {input.split} "
        "--threads {threads} --out-dir {params.out_dir} > {log} 2>&1"
