"""The `netvlad-tf` command line: `netvlad-tf COMMAND [--flags]`, each with `--help`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from netvlad_tf.commands import cluster, convert, demo, embed, evaluate, export, index, loops, pairs, pca, query, serve, train

USAGE = """usage: netvlad-tf COMMAND [--flag=value ...] [--flagfile=FILE]

commands:
{commands}

Run `netvlad-tf COMMAND --help` for a command's flags and an example."""


COMMANDS = {"demo": demo, "train": train, "evaluate": evaluate, "embed": embed, "index": index, "query": query,
            "loops": loops, "pairs": pairs, "export": export, "cluster": cluster, "pca": pca, "convert": convert,
            "serve": serve}


def _usage() -> str:
    listing = "\n".join(f"  {name:<10}{command.SUMMARY}" for name, command in COMMANDS.items())
    return USAGE.format(commands=listing)


def main(argv: Sequence[str]) -> int:
    """Runs `netvlad-tf` with `argv` (program name first); returns the exit status.

    Example:
    >>> main(["netvlad-tf", "no-such-command"])
    2
    """
    argv = list(argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in COMMANDS:
        print(f"netvlad-tf: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    flag_values = flags.FlagValues()
    command.define_flags(flag_values)
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv[2:]):
        print(f"netvlad-tf {name}: {command.SUMMARY}\n\nexample:\n  {command.EXAMPLE}\n\nflags:")
        print(flag_values.get_help())
        return 0
    try:
        unparsed = flag_values([f"netvlad-tf {name}", *argv[2:]])
    except flags.Error as error:
        print(f"netvlad-tf {name}: {error}\nSee `netvlad-tf {name} --help`.", file=sys.stderr)
        return 2
    arguments = unparsed[1:]
    takes_arguments = getattr(command, "TAKES_ARGUMENTS", False)
    if arguments and not takes_arguments:
        print(f"netvlad-tf {name}: unexpected arguments {arguments}.", file=sys.stderr)
        return 2
    try:
        return command.run(flag_values, arguments) if takes_arguments else command.run(flag_values)
    except (ValueError, OSError, ImportError) as error:  # ImportError: an optional extra that is not installed
        print(f"netvlad-tf {name}: error: {error}", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
