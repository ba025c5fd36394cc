"""Generator backends behind one interface (:mod:`worker.generators.base`).

``corpus`` is offline and the default: a run spends money only when asked to, with
``--backend anthropic`` or ``anthropic-batch`` (or ``$PHASE5_BACKEND``). A generator with a true
``batched`` attribute (``anthropic-batch``) is driven by a whole orchestrator at once
(:mod:`worker.batch_runner`) rather than basket by basket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from worker.course import Course
from worker.errors import Phase5Error
from worker.generators.base import GeneratedBasket, GenerationError, Generator, SpendLimitReached, Usage

BACKENDS = ("corpus", "anthropic", "anthropic-batch")
API_BACKENDS = frozenset({"anthropic", "anthropic-batch"})
DEFAULT_BACKEND = "corpus"
DEFAULT_MODEL = "claude-sonnet-5-5"  # what each model accepts: worker/data/models.json

__all__ = [
    "BACKENDS",
    "API_BACKENDS",
    "GeneratorOptions",
    "GeneratedBasket",
    "GenerationError",
    "SpendLimitReached",
    "Generator",
    "Usage",
    "make_generator",
    "default_backend",
    "require_api_key",
    "check_backend",
]


@dataclass(frozen=True)
class GeneratorOptions:
    """Options of the API backends (the corpus backend ignores them)."""

    model: str = DEFAULT_MODEL
    max_tokens: int | None = None  # None: room for the answer, plus for thinking on models that think by default
    temperature: float | None = None  # None: the model's default (models that refuse it are never sent one)
    timeout: float = 60.0
    max_retries: int = 4  # SDK retries of a failed request; for batches, resubmissions of an errored/expired one
    repair_rounds: int = 2
    poll_interval: float = 30.0  # seconds between looks at a Message Batch (anthropic-batch)
    #: After the phrases, one short request for the known side of the d windows alignment left
    #: without one (only when there are such windows), on the same cached prefix.
    fill_windows: bool = True
    max_in_flight: int = 64  # requests in flight at most per worker (the adaptive limit stays under it)


def default_backend() -> str:
    return os.environ.get("PHASE5_BACKEND") or DEFAULT_BACKEND


def require_api_key(backend: str) -> None:
    """One clear line and exit 2 before anything starts, when an API backend has no key."""
    if backend in API_BACKENDS and not os.environ.get("ANTHROPIC_API_KEY"):
        raise Phase5Error(
            f"backend {backend!r} needs ANTHROPIC_API_KEY in the environment (it is never read from"
            " a file or an option); or use --backend corpus, which is offline"
        )


def check_backend(backend: str, options: GeneratorOptions) -> None:
    """Everything an API backend needs before anything starts, each a one-line error (exit 2):
    the key, a model the model table knows, and options the model accepts."""
    if backend not in API_BACKENDS:
        return
    require_api_key(backend)
    from worker.generators.model_table import model_caps

    caps = model_caps(options.model)
    if options.temperature is not None and not caps.sampling_params:
        raise Phase5Error(
            f"--temperature: {options.model} refuses sampling parameters (the API answers 400); leave it out"
        )


def make_generator(backend: str, course: Course, options: GeneratorOptions | None = None) -> Generator:
    options = options or GeneratorOptions()
    if backend == "corpus":
        from worker.generators.corpus import CorpusGenerator

        return CorpusGenerator(course)
    if backend == "anthropic":
        require_api_key(backend)
        from worker.generators.anthropic_backend import AnthropicGenerator

        return AnthropicGenerator(course, options)
    if backend == "anthropic-batch":
        require_api_key(backend)
        from worker.generators.batch_backend import BatchGenerator

        return BatchGenerator(course, options)
    raise Phase5Error(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
