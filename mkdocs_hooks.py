"""MkDocs hook: the pages generated from the code, so the site cannot drift from it.

- ``probes/<name>.md``, one per registered probe, and ``probes/index.md``: title, goal, papers,
  the target kinds and data it needs, every setting with its default and valid range, the
  severity rule and the remediation, all read from the probe's class (``Probe.describe``), as
  garak generates its probe pages;
- ``commands/<command>.md`` and ``commands/index.md``: usage, help and options of every
  command, read from the Click commands themselves;
- ``reference/modules.md``: every module with the first line of its docstring, grouped by the
  layers of the import contract in ``pyproject.toml``;
- ``index.md``: the README, its links made relative to the site.

``mkdocs build --strict`` (``make docs``, checked by ``make test``) fails on a broken link or
anchor, in the written pages and in these.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import click
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent
PACKAGES = ("redteam", "defenses", "hyperbolic", "reports")


def on_files(files, config):
    pages = {"index.md": home_page(), **probe_pages(), **command_pages(), **module_pages()}
    for path, text in pages.items():
        files.append(File.generated(config, path, content=text))
    return files


def home_page() -> str:
    """The README, with its links made relative to the site: one text for both."""
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")


# --- probes ----------------------------------------------------------------------------------

def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def probe_page(cls) -> str:
    """One probe's page, from its class."""
    info = cls.describe()
    lines = [f"# {info['title']}", "", f"`{info['name']}` · suite `{info['suite']}` · "
             f"target kinds: {', '.join(f'`{k}`' for k in info['kinds'])} · "
             f"version {info['version']}", "",
             f"**Goal.** {info['goal'][0].upper()}{info['goal'][1:]}.", ""]
    if info["references"]:
        lines += ["**Papers.** " + "; ".join(info["references"]), ""]
    needs = "; ".join(f"{split}: {', '.join(f'`{f}`' for f in fields)}"
                      for split, fields in info["needs"].items())
    lines += [f"**Data it needs.** {needs or info['data'] or 'the target only'}", ""]
    if info["model_access"]:
        from redteam.core.served import MODEL_ACCESS

        uses = "; ".join(MODEL_ACCESS[name] for name in info["model_access"])
        lines += [f"**Model access.** {uses[0].upper()}{uses[1:]}: a [served model]"
                  "(../guides/served-models.md) that does not give it is skipped, naming "
                  "what is missing.", ""]
    if info["after"]:
        lines += [f"**Runs after** {', '.join(f'[`{a}`]({a}.md)' for a in info['after'])} "
                  "and reuses their results.", ""]
    if info["settings"]:
        lines += ["## Settings", "", f"Set in `audit.toml` under `[probes.\"{info['name']}\"]`"
                  " (`redteam audit --config audit.toml`); a bad value is refused before "
                  "anything loads.", "", "| setting | default | valid values |",
                  "|---|---|---|"]
        lines += [f"| `{name}` | `{_cell(info['defaults'].get(name))}` | {_cell(valid)} |"
                  for name, valid in info["settings"].items()]
        lines.append("")
    rule = info["severity_rule"]
    lines += ["## Verdict", "", f"{rule[0].upper()}{rule[1:].rstrip('.')}." if rule else
              "Fails when its metric passes the threshold (the settings above); the severity "
              "follows the policy ([severity](../reference/severity.md)).", ""]
    if cls.remediation:
        lines += ["## Remediation", "", cls.remediation, ""]
    if info["tags"]:
        lines += ["Tags: " + ", ".join(f"`{t}`" for t in info["tags"]), ""]
    return "\n".join(lines)


def probe_pages() -> dict[str, str]:
    from redteam.probes import REGISTRY

    pages = {f"probes/{name}.md": probe_page(cls) for name, cls in sorted(REGISTRY.items())}
    rows = ["# Probes", "", "Every probe, generated from its class. `redteam list` prints the "
            "same from the command line.", ""]
    for suite in sorted({cls.suite for cls in REGISTRY.values()}):
        rows += [f"## {suite}", "", "| probe | what it checks |", "|---|---|"]
        rows += [f"| [`{name}`]({name}.md) | {_cell(cls.title)} |"
                 for name, cls in sorted(REGISTRY.items()) if cls.suite == suite]
        rows.append("")
    pages["probes/index.md"] = "\n".join(rows)
    return pages


# --- commands --------------------------------------------------------------------------------

def _commands(group: click.Group, prefix: str = "redteam") -> list[tuple[str, click.Command]]:
    found = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if command.hidden:
            continue
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
    return found


def command_page(path: str, command: click.Command) -> str:
    ctx = click.Context(command, info_name=path)
    lines = [f"# `{path}`", "", "```", command.get_usage(ctx), "```", "",
             (command.help or "").replace("\b\n", ""), ""]
    options = [record for p in command.get_params(ctx)
               if (record := p.get_help_record(ctx)) is not None]
    if options:
        lines += ["## Options", "", "| option | what it does |", "|---|---|"]
        lines += [f"| `{_cell(flags)}` | {_cell(text)} |" for flags, text in options]
        lines.append("")
    return "\n".join(lines)


def command_pages() -> dict[str, str]:
    from redteam.cli import cli

    commands = _commands(cli)
    pages = {f"commands/{path.removeprefix('redteam ').replace(' ', '-')}.md":
             command_page(path, command) for path, command in commands}
    rows = ["# Commands", "", "Generated from the commands themselves (`redteam COMMAND "
            "--help` prints the same).", "", "| command | what it does |", "|---|---|"]
    rows += [f"| [`{path}`]({path.removeprefix('redteam ').replace(' ', '-')}.md) | "
             f"{_cell(command.get_short_help_str(limit=120))} |" for path, command in commands]
    pages["commands/index.md"] = "\n".join(rows) + "\n"
    return pages


# --- modules ---------------------------------------------------------------------------------

def _summary(file: Path) -> str:
    doc = ast.get_docstring(ast.parse(file.read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _layer(module: str, layers: list[list[str]]) -> int:
    for index, names in enumerate(layers):
        if any(module == n or module.startswith(n + ".") for n in names):
            return index
    return len(layers)


def module_pages() -> dict[str, str]:
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = [[n.strip() for n in layer.replace("|", ":").split(":")]
              for layer in contract["contracts"][0]["layers"]]
    modules = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            parts = file.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules.append((name, file))
    lines = ["# Modules", "", "Every module, with the first paragraph of its docstring, grouped "
             "by the layers of the import contract (`pyproject.toml`, `[tool.importlinter]`; "
             "checked by `lint-imports`). A module imports only from its layer and those below "
             "it. Generated at build time.", ""]
    for index, names in enumerate([*layers, ["(outside the layers)"]]):
        rows = [(name, file) for name, file in modules if _layer(name, layers) == index]
        if not rows:
            continue
        lines += [f"## {' · '.join(names)}", "", "| module | what it is |", "|---|---|"]
        lines += [f"| `{name}` | {_cell(_summary(file))} |" for name, file in rows]
        lines.append("")
    return {"reference/modules.md": "\n".join(lines)}
