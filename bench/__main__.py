"""`make bench`: run every benchmark; each prints readable lines and one JSON line per figure."""

from __future__ import annotations

import sys

from bench import bulk_import, campaign_tick, flows, nightly_pass, rule_evaluation, sender

BENCHMARKS = {
    "bulk_import": bulk_import.main,
    "rule_evaluation": rule_evaluation.main,
    "nightly_pass": nightly_pass.main,
    "campaign_tick": campaign_tick.main,
    "sender": sender.main,
    "flows": flows.main,
}


def main() -> int:
    """``python -m bench`` runs them all; ``python -m bench NAME [ARGS...]`` runs one with its own arguments."""
    if len(sys.argv) > 1:
        BENCHMARKS[sys.argv[1]](sys.argv[2:])
        return 0
    for run in BENCHMARKS.values():
        run([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
