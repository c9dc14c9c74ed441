"""``fr-shield`` / ``python -m fr_shield``: one entry point for the user-facing commands."""

from __future__ import annotations

import sys

COMMANDS = {
    "weights": ("fr_shield.weights", "fetch, verify and list the pretrained weight files"),
    "models": ("fr_shield.models.__main__", "list the models; measure LFW verification accuracy"),
    "protect": ("fr_shield.protect", "protect every face in photos or folders (--out DIR)"),
    "check": ("fr_shield.check", "check whether face recognition still matches protected photos"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: fr-shield COMMAND [ARGS...]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:10s} {help_text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = __import__(COMMANDS[argv[0]][0], fromlist=["main"])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
