"""The ``phase5`` command line: one module per command under :mod:`supervisor.commands`.

Commands load lazily (click's documented lazy-group pattern): a process imports only the module
of the command it runs, so a worker in a tmux window does not pay for libtmux, rich or the
supervisor, and ``status`` does not pay for the backends. ``phase5 --help`` loads them all.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import click

from worker.errors import Phase5Error, as_phase5_error
from worker.exitcodes import ExitCode
from worker.safetext import printable

#: command name -> the module of :mod:`supervisor.commands` that defines it (in its ``COMMANDS``).
#: A new command module adds its commands here (see :func:`_register`).
LAZY_COMMANDS: dict[str, str] = {}


class Phase5Group(click.Group):
    """Loads a command's module only when that command runs (or help lists it), and turns
    :class:`Phase5Error` (bad input, refused operations) and an :class:`OSError` (a file or folder
    that cannot be used: permissions, a folder in a file's place) into one line and exit 2 (5 for
    a full disk)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            command = self._load(cmd_name)
        return command

    def _load(self, cmd_name: str) -> click.Command:
        module = importlib.import_module(f"supervisor.commands.{LAZY_COMMANDS[cmd_name]}")
        for command in module.COMMANDS:  # a module may define several (merge-segment, merge-final)
            if command.name in LAZY_COMMANDS:
                self.add_command(command)
        command = self.commands.get(cmd_name)
        if command is None:  # pragma: no cover - a wrong LAZY_COMMANDS entry
            raise RuntimeError(f"supervisor.commands.{LAZY_COMMANDS[cmd_name]} defines no command {cmd_name!r}")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Phase5Error as exc:
            click.echo(f"phase5: error: {printable(exc)}", err=True)  # one line, whatever the input held
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            # The reader went away (`phase5 validate ... | head`): as any Unix tool, stop quietly;
            # standard output goes to /dev/null so that flushing it at exit cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(ExitCode.signalled(signal.SIGPIPE))
        except OSError as exc:  # a read-only or immutable folder, a folder where a file should be, a full disk
            error = as_phase5_error(exc)
            click.echo(f"phase5: error: {printable(error)}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=Phase5Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="phase5")
def main() -> None:
    """Generate practice baskets for every LEGO of a course, supervised in tmux windows.

    COURSE is a course folder path (anything with a /) or a course code looked up under
    --courses-dir (default $PHASE5_COURSES_DIR or ./vfs/courses).

    \b
    Typical run:  phase5 run examples/courses/spa_demo          (offline corpus backend)
    Watch it:     phase5 status examples/courses/spa_demo --watch
    """


def _register() -> None:
    """The commands and their modules (nothing is imported here)."""
    for module, names in (
        ("cost", ["cost"]),
        ("generate", ["generate"]),
        ("merge", ["merge-segment", "merge-final"]),
        ("prepare", ["prepare"]),
        ("validate", ["validate"]),
        ("worker", ["worker"]),
        ("run", ["run"]),
        ("status", ["status"]),
        ("attach", ["attach"]),
        ("stop", ["stop"]),
        ("estimate", ["estimate"]),
        ("redo", ["redo"]),
        ("show", ["show"]),
        ("report", ["report"]),
    ):
        for name in names:
            LAZY_COMMANDS[name] = module


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
