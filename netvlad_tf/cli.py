"""The `netvlad-tf` command line: `netvlad-tf COMMAND [--flags]`, each with `--help`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from absl import flags

USAGE = """usage: netvlad-tf COMMAND [--flag=value ...] [--flagfile=FILE]

commands:
{commands}

Run `netvlad-tf COMMAND --help` for a command's flags and an example."""


@dataclass(frozen=True)
class Command:
    summary: str
    example: str
    define_flags: Callable[[flags.FlagValues], None]
    run: Callable[[flags.FlagValues], int]


def _define_demo_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("output", "demo_output", "New folder for model.keras, results.json and plots.", flag_values=fv)
    flags.DEFINE_string(
        "weights", None,
        "VGG16 weights: unset for random weights, 'imagenet' to download Keras' ImageNet "
        "weights, or the path of a local VGG16 (include_top=False) weights file.",
        flag_values=fv,
    )
    flags.DEFINE_boolean("quick", False, "Small run (about a minute) for smoke tests and CI.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same results.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.", flag_values=fv)


def _run_demo(fv: flags.FlagValues) -> int:
    from netvlad_tf.demo import run_demo

    run_demo(fv.output, weights=fv.weights, quick=fv.quick, seed=fv.seed, overwrite=fv.overwrite)
    return 0


COMMANDS: dict[str, Command] = {
    "demo": Command(
        summary="NetVLAD vs MAC vs raw pixels on the bundled Nordland images (summer → winter).",
        example="netvlad-tf demo --output demo_output --quick",
        define_flags=_define_demo_flags,
        run=_run_demo,
    ),
}


def _usage() -> str:
    listing = "\n".join(f"  {name:<10}{command.summary}" for name, command in COMMANDS.items())
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
        print(f"netvlad-tf {name}: {command.summary}\n\nexample:\n  {command.example}\n\nflags:")
        print(flag_values.get_help())
        return 0
    try:
        unparsed = flag_values([f"netvlad-tf {name}", *argv[2:]])
    except flags.Error as error:
        print(f"netvlad-tf {name}: {error}\nSee `netvlad-tf {name} --help`.", file=sys.stderr)
        return 2
    if len(unparsed) > 1:
        print(f"netvlad-tf {name}: unexpected arguments {unparsed[1:]}.", file=sys.stderr)
        return 2
    try:
        return command.run(flag_values)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"netvlad-tf {name}: error: {error}", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
