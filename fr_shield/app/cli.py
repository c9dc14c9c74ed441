"""``fr-shield`` / ``python -m fr_shield``: one entry point for the user-facing commands."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "protect": ("fr_shield.app.protect", "protect every face in photos or folders (--out DIR)"),
    "check": ("fr_shield.app.check", "check whether face recognition still matches protected photos"),
    "samples": ("fr_shield.app.samples", "fetch the sample photos; run the demo (protect + check)"),
    "weights": ("fr_shield.core.weights", "fetch, verify and list the pretrained weight files"),
    "models": ("fr_shield.app.models_cli", "list the models; measure LFW verification accuracy"),
    "tradeoff": ("fr_shield.study.tradeoff", "report of trade-off multirun folders (curves, tables)"),
}


def usage() -> str:
    lines = ["usage: fr-shield COMMAND [ARGS...]   (fr-shield COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:10s} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
