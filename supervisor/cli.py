"""The ``phase5`` command line: one module per command under :mod:`supervisor.commands`."""

from __future__ import annotations

import sys
from typing import Any

import click

from worker.errors import Phase5Error


class Phase5Group(click.Group):
    """Turns :class:`Phase5Error` (bad input, refused operations) into one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Phase5Error as exc:
            click.echo(f"phase5: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


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
    from supervisor.commands import attach, cost, estimate, generate, merge, prepare, run, status, stop, validate, worker

    for module in (cost, generate, merge, prepare, validate, worker, run, status, attach, stop, estimate):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
