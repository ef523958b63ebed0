"""The shared core: errors, file I/O and the untrusted-input boundary, findings, audit data, image
and text data, model-file checks, settings, output folders, scoring, prompt formats, metrics and
training loops.

It imports nothing of the project above it (targets, probes, the engine, commands, the CLI,
``defenses``, ``hyperbolic``, ``reports``); ``make test`` enforces that with the import-linter
contract in ``pyproject.toml`` (docs/architecture.md).
"""
