"""The prompt text the Claude backends read, shipped as package data: ``basket-generation-skill/``
(read with :mod:`importlib.resources` by :mod:`worker.generators.skill`)."""
