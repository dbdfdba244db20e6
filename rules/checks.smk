# Checks that need the whole workflow parsed (included last). Nothing here imports torch: a SLURM job step parses
# it again for each job. The torch-needing pre-flight: rules/common.smk (preflight_checked).


# Every block under `resources` must name `default` or a rule that reads it, or a misspelt name would be ignored.
def _check_resource_rules():
    known = ["default", *sorted(RESOURCE_RULES)]
    rules = {r.name for r in workflow.rules}
    for name in config.get("resources", {}):
        if name in known:
            continue
        what = f"'{name}' takes no resources from the config" if name in rules else f"no rule is named '{name}'"
        sys.exit(f"Error: config key 'resources.{name}': {what}; use one of: {', '.join(known)}")


_check_resource_rules()
