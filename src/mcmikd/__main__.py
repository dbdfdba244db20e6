"""`python -m mcmikd <command>`: the project's command line.

    python -m mcmikd compare RUN REFERENCE   does my run agree with yours, or with the paper? (mcmikd.compare)
    python -m mcmikd publish RESULTS DEST     keep a run's tables, figures, runs tables and machine (mcmikd.publish)
    python -m mcmikd recipe RUN... --config C the λ recipe rule over one or more runs of a λ sweep
    python -m mcmikd progress [WHERE]        one line per training job: state, epoch, accuracy, ETA (mcmikd.progress)
"""

from __future__ import annotations

import sys

COMMANDS = {"compare": "mcmikd.compare", "publish": "mcmikd.publish", "recipe": "mcmikd.experiments.lambda_sweep",
            "progress": "mcmikd.progress"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
