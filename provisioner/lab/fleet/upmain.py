"""``python -m provisioner.lab.fleet.upmain [--profile FILE] ARGS...``: the real `provisioner` command.

The fleet harness starts `up` through this module so that one run can be profiled (cProfile, stats
written to FILE when the command ends) without changing the orchestrator; without ``--profile`` it
is exactly ``provisioner ARGS...``.
"""

from __future__ import annotations

import cProfile
import sys

from provisioner.cli import main as provisioner_main


def main(argv: list[str]) -> int:
    if argv[:1] == ["--profile"]:
        out, args = argv[1], argv[2:]
        prof = cProfile.Profile()
        try:
            return int(prof.runcall(provisioner_main, args))
        finally:
            prof.dump_stats(out)
    return provisioner_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
