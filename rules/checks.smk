# Checks that need the whole workflow parsed (included last), and the torch-needing pre-flight on dry runs.
# Nothing here imports torch while the file is parsed: a SLURM job step parses it again for each job.


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


# A dry run makes the same torch-needing checks as `onstart` does before a real run (Snakemake runs no hook on a
# dry run, and whether a run is dry is known only once it executes): in the main process only, the workflow's
# `execute` is wrapped so a dry run calls mcmikd.checks.preflight first. Jobs (--exec-mode remote/subprocess)
# and parse-only commands (--lint, --dag, --list) never import torch.
def _dry_run_preflight(execute):
    def run(*args, **kwargs):
        plugin = kwargs.get("executor_plugin", args[0] if args else None)
        if getattr(getattr(plugin, "common_settings", None), "dryrun_exec", False):
            from mcmikd.checks import preflight

            try:
                print(preflight(GRID, dry_run=True), file=sys.stderr)
            except McmiError as err:
                sys.exit(f"Error: {err}")
        return execute(*args, **kwargs)

    return run


if workflow.is_main_process:
    workflow.execute = _dry_run_preflight(workflow.execute)
