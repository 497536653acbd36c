# latentbench: one DAG from images to the HTML report (see README.md and DESIGN.md).
from snakemake.utils import min_version

min_version("9.0")


# The demo study is the default; a study given with --configfile replaces it instead of
# being merged into it (--config key=value still overrides single keys).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/tokenizers.smk"
include: "rules/latents.smk"
include: "rules/diffusion.smk"
include: "rules/metrics.smk"
include: "rules/seesaw.smk"
include: "rules/report.smk"
include: "rules/weights.smk"


rule all:
    input:
        f"{RESULTS}/report/index.html",
    default_target: True


# A dry run of a study with a compute_estimate block prints its real-size GPU-hours per rule
# (latentbench/plan.py) before Snakemake's job table (issue 6). workflow.dryrun is only set after
# parsing; the output settings already know (Snakemake 9).
if getattr(workflow.output_settings, "dryrun", False):
    from latentbench.plan import print_estimate

    print_estimate(config, [r.name for r in workflow.rules])
