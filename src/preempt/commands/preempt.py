"""The `preempt` console script: `preempt protect INPUT_DIR OUTPUT_DIR [overrides]`, `preempt verify OUTPUT_DIR`."""

from __future__ import annotations

import sys

COMMANDS = {
    "protect": "protect a folder of images (preempt protect --help)",
    "verify": "check protected files against their originals' budget (preempt verify --help)",
}


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if not arguments or arguments[0] not in COMMANDS:
        listed = "\n".join(f"  {name:8} {text}" for name, text in COMMANDS.items())
        print(f"usage: preempt <command> [arguments]\n\ncommands:\n{listed}", file=sys.stderr)
        return 0 if arguments[:1] in (["-h"], ["--help"]) else 2
    command, rest = arguments[0], arguments[1:]
    if command == "protect":
        from preempt.commands.protect import main as protect

        return protect(rest)
    from preempt.commands.verify import main as verify

    return verify(rest)


if __name__ == "__main__":
    sys.exit(main())
