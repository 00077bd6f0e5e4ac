# NAS-Bench-360 as one workflow: download -> shards -> search -> retrain -> evaluate -> tables and figures.
# Rules live in workflow/rules/ by stage; all logic lives in the nb360 package.
from snakemake.utils import min_version

min_version("9.27")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/nb201.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.tables.output,
        rules.figures.output,
        rules.cost.output,
        rules.architectures.output,
        rules.nb201_report.output if NB201_TASKS else [],
