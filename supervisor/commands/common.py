"""Options and helpers shared by the commands."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worker.course import Course, save_languages
from worker.paths import resolve_course
from worker.safetext import printable, printable_json

F = Callable[..., Any]

if TYPE_CHECKING:
    from worker.generators import GeneratorOptions


LANGUAGE_OPTIONS = "phase5.languages"


def course_argument(func: F) -> F:
    """``COURSE`` plus ``--courses-dir``, ``--target-language`` and ``--known-language`` (kept in
    the click context for :func:`load_course`, so every command takes them without a parameter)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
        return value

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        ctx.meta.setdefault(LANGUAGE_OPTIONS, {})[param.name] = value
        return value

    for side, example in (("known", "eng"), ("target", "spa, fra, cmn, jpn")):
        func = click.option(
            f"--{side}-language",
            default=None,
            metavar="CODE",
            expose_value=False,
            callback=remember,
            help=f"The course's {side} language (ISO 639-3, e.g. {example}) [default: from lego_pairs.json,"
            " seed_pairs.json or the course code <target>_for_<known>; run and prepare remember it].",
        )(func)
    func = click.option(
        "--courses-dir",
        envvar="PHASE5_COURSES_DIR",
        type=click.Path(file_okay=False),
        default=None,
        help="Where course codes are looked up [env PHASE5_COURSES_DIR; default ./vfs/courses].",
    )(func)
    return click.argument("course", callback=callback)(func)


def load_course(course: str, courses_dir: str | None, remember_languages: bool = False) -> Course:
    """The course named by ``COURSE``, in the languages the options give (else its own files').

    ``remember_languages`` (run, prepare): languages given as options are saved beside the plan,
    so the workers and every later command use them without the options."""
    ctx = click.get_current_context(silent=True)
    chosen = ctx.meta.get(LANGUAGE_OPTIONS, {}) if ctx is not None else {}
    loaded = Course.load(
        resolve_course(course, courses_dir), chosen.get("target_language"), chosen.get("known_language")
    )
    if remember_languages:
        save_languages(loaded)
    return loaded


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")(func)


def echo_json(data: Any) -> None:
    click.echo(printable_json(json.dumps(data, ensure_ascii=False, indent=2)))


def echo(text: str, err: bool = False) -> None:
    """Print ``text`` for people: what came from outside in it (paths, phrases, error texts)
    cannot act on the terminal (:func:`worker.safetext.printable`); line breaks stay."""
    click.echo(printable(text, keep_newlines=True), err=err)


def api_options(func: F) -> F:
    """Options of the API backends, shared by ``generate``, ``worker`` and ``run``; the command
    receives them as ``model, max_tokens, temperature, timeout, retries, repair_rounds,
    max_in_flight, poll_interval, d_windows``."""
    from worker.generators import GeneratorOptions

    d = GeneratorOptions()
    options = [
        click.option("--model", default=d.model, show_default=True, help="Model (API backends)."),
        click.option(
            "--max-tokens",
            type=click.IntRange(min=1),
            default=d.max_tokens,
            help="Max output tokens per request, thinking included (API backends) [default: 1024 for the answer,"
            " plus 8192 on models that think by default].",
        ),
        click.option(
            "--temperature",
            type=click.FloatRange(0, 1),
            default=d.temperature,
            help="Sampling temperature (API backends; only models that accept it) [default: the model's own].",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=d.timeout,
            show_default=True,
            help="Seconds per request (API backends).",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=d.max_retries,
            show_default=True,
            help="Retries of a failed request by the SDK (429, 5xx, timeouts; honours retry-after).",
        ),
        click.option(
            "--repair-rounds",
            type=click.IntRange(min=0),
            default=d.repair_rounds,
            show_default=True,
            help="Rounds that send failing phrases back with the validator's reasons (API backends).",
        ),
        click.option(
            "--max-in-flight",
            type=click.IntRange(min=1),
            default=d.max_in_flight,
            show_default=True,
            help="Requests in flight at most per worker (anthropic); the adaptive limit grows to it while"
            " answers succeed and the account's rate limits allow.",
        ),
        click.option(
            "--poll-interval",
            type=click.FloatRange(min=0.01),
            default=d.poll_interval,
            show_default=True,
            help="Seconds between looks at a Message Batch (anthropic-batch).",
        ),
        click.option(
            "--d-windows",
            type=click.Choice(["ask", "leave"]),
            default="ask" if d.fill_windows else "leave",
            show_default=True,
            help="API backends: d windows whose known side alignment cannot find in the e-phrase's translation:"
            " ask the model once per basket to point it out in its own translation (kept only as an unbroken"
            " piece of it), or leave them out (as offline).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def generator_options(values: Mapping[str, Any]) -> GeneratorOptions:
    """The :class:`GeneratorOptions` of the values :func:`api_options` collected."""
    from worker.generators import GeneratorOptions

    return GeneratorOptions(
        model=values["model"],
        max_tokens=values["max_tokens"],
        temperature=values["temperature"],
        timeout=values["timeout"],
        max_retries=values["retries"],
        repair_rounds=values["repair_rounds"],
        poll_interval=values["poll_interval"],
        fill_windows=values.get("d_windows", "ask") == "ask",
        max_in_flight=values.get("max_in_flight") or GeneratorOptions().max_in_flight,
    )


def prices_option(func: F) -> F:
    """``--prices FILE`` (env ``$PHASE5_PRICES``), received as ``prices``."""
    from worker.cost import PRICES_ENV

    return click.option(
        "--prices",
        type=click.Path(dir_okay=False),
        envvar=PRICES_ENV,
        default=None,
        help=f"A prices file overriding the built-in table [env {PRICES_ENV}].",
    )(func)


def baskets_option(func: F) -> F:
    """``--baskets FILE``, the basket file a command reads, received as ``baskets`` (a Path or None)."""
    return click.option(
        "--baskets",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The basket file to read [default: COURSE/lego_baskets.json].",
    )(func)


def budget_options(func: F) -> F:
    """``--max-cost USD`` and ``--prices FILE``, received as ``max_cost, prices``."""
    func = prices_option(func)
    return click.option(
        "--max-cost",
        type=click.FloatRange(min=0),
        default=None,
        metavar="USD",
        help="Start no new request once the run's recorded spend reaches USD (exit status 4; resumable).",
    )(func)
