# The two quick-start commands (README): `make demo` and `make test`.
# Both install what they need first: uv and the locked environment (uv.lock).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
SNAKEMAKE := $(UV) run --frozen snakemake

.PHONY: env demo test lint bench chromium slurm gpu-check

env:  ## uv + the locked Python environment in .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv==0.13.9
	$(UV) sync --frozen --compile-bytecode

demo: env  ## run the embedded demo study end to end -> results/demo/report/index.html
	$(SNAKEMAKE) --cores all

chromium:  ## headless Chromium for the report test (Debian packages; needs root)
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q --no-install-recommends chromium)

slurm:  ## single-node SLURM + munge for the cluster test (Debian packages; needs root)
	@command -v slurmctld >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q slurm-wlm munge)

test: env chromium slurm  ## the test suite: a tiny end-to-end DAG run, and a shallow one through a real SLURM
	$(UV) run --frozen pytest -q

lint: env
	$(SNAKEMAKE) --lint

bench: env  ## speed and memory benchmarks (prints numbers; see bench/)
	for b in bench/bench_*.py; do $(UV) run --frozen python $$b; done

gpu-check: env  ## on a GPU machine (< 8 min): bf16 vs fp32 agreement, faiss-gpu, SiT-XL/2 speed, NCCL DDP (bench/gpu_check.py)
	$(UV) run --frozen python bench/gpu_check.py
