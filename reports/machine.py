"""The run's findings in the formats CI systems read: SARIF 2.1.0 and JUnit XML.

Both are rendered from the plain ``findings.json`` document, like the HTML report, so that
``redteam report RUN --format sarif,junit`` can produce them later. SARIF (OASIS) has one rule
per probe and one result per failing, erroring or inconclusive finding, with the model and data
files as artifacts and their SHA-256; JUnit has one testsuite per suite and one testcase per
finding (a failure, an error, or skipped for a skipped or inconclusive probe).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/redteam-ml/redteam"
# SARIF levels: what a CI annotation shows. A failing finding's level follows its severity.
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note",
          "info": "note"}


def reference_uri(reference: str) -> str | None:
    """A link for a paper reference ("arXiv:2401.06121 (TOFU)", "doi:10.1109/..."), if any."""
    arxiv = re.match(r"arXiv:(\d{4}\.\d{4,5})", reference)
    if arxiv:
        return f"https://arxiv.org/abs/{arxiv.group(1)}"
    doi = re.match(r"doi:(\S+)", reference)
    return f"https://doi.org/{doi.group(1)}" if doi else None


def _level(finding: Mapping[str, Any]) -> str:
    if finding["status"] == "error":
        return "error"
    if finding["status"] == "inconclusive":
        return "note"
    return LEVELS[finding["severity"]]


def _rule(finding: Mapping[str, Any]) -> dict[str, Any]:
    references = list(finding.get("references") or [])
    rule: dict[str, Any] = {
        "id": finding["probe"], "name": finding["probe"].replace(".", "/"),
        "shortDescription": {"text": finding["title"]},
        "help": {"text": finding.get("remediation") or finding["title"]},
        "properties": {"suite": finding["suite"], "references": references},
    }
    uri = next((u for u in map(reference_uri, references) if u), None)
    if uri:
        rule["helpUri"] = uri
    return rule


def _artifacts(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every hashed input: the target's files, then each comparison model's and the data's."""
    target = run.get("target") or {}
    groups = [(target.get("path", ""), target.get("files") or {})]
    groups += [(label, files) for label, files in (run.get("inputs") or {}).items()]
    artifacts = []
    for root, files in groups:
        for relative, digest in sorted(files.items()):
            uri = quote(f"{root.rstrip('/')}/{relative}" if root else relative)
            artifacts.append({"location": {"uri": uri}, "hashes": {"sha-256": digest}})
    return artifacts


def render_sarif(document: Mapping[str, Any]) -> dict[str, Any]:
    """The SARIF 2.1.0 log of a findings document."""
    run, findings = document["run"], document["findings"]
    rules: dict[str, dict] = {}
    for finding in findings:
        rules.setdefault(finding["probe"], _rule(finding))
    index = {probe: i for i, probe in enumerate(rules)}
    target_uri = quote(str((run.get("target") or {}).get("path", "")) or ".")
    results = []
    for finding in findings:
        if finding["status"] not in ("fail", "error", "inconclusive"):
            continue
        metric = finding.get("metric") or {}
        results.append({
            "ruleId": finding["probe"], "ruleIndex": index[finding["probe"]],
            "level": _level(finding),
            "message": {"text": finding["summary"] or finding["title"]},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": target_uri}}}],
            "properties": {"status": finding["status"], "severity": finding["severity"],
                           **({"metric": metric} if metric else {})},
        })
    invocation = {"executionSuccessful": True,
                  "commandLine": " ".join(run.get("command") or []),
                  "exitCode": run.get("exit_code") if run.get("exit_code") is not None else 0}
    for key, field in (("started", "startTimeUtc"), ("finished", "endTimeUtc")):
        if run.get(key):
            invocation[field] = run[key].replace("+00:00", "Z")
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "redteam", "version": str(run.get("tool_version", "")),
                            "informationUri": INFORMATION_URI, "rules": list(rules.values())}},
        "invocations": [invocation], "artifacts": _artifacts(run), "results": results,
        "properties": {"suite": run.get("suite", ""), "failOn": run.get("fail_on", "")}}]}


def render_junit(document: Mapping[str, Any]) -> str:
    """JUnit XML of a findings document: a testsuite per suite, a testcase per finding."""
    run, findings = document["run"], document["findings"]
    root = ElementTree.Element("testsuites", name="redteam")
    by_suite: dict[str, list[Mapping[str, Any]]] = {}
    for finding in findings:
        by_suite.setdefault(finding["suite"], []).append(finding)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for suite, members in by_suite.items():
        counts = {"tests": len(members),
                  "failures": sum(f["status"] == "fail" for f in members),
                  "errors": sum(f["status"] == "error" for f in members),
                  "skipped": sum(f["status"] in ("skipped", "inconclusive") for f in members),
                  "time": round(sum(float(f.get("duration_s") or 0) for f in members), 3)}
        element = ElementTree.SubElement(
            root, "testsuite", name=suite, timestamp=str(run.get("started", "")),
            **{k: str(v) for k, v in counts.items()})
        seen: dict[str, int] = {}
        for finding in members:
            _testcase(element, finding, seen)
        for key in totals:
            totals[key] += counts[key]
    root.attrib.update({k: str(round(v, 3) if isinstance(v, float) else v)
                        for k, v in totals.items()})
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _testcase(suite: ElementTree.Element, finding: Mapping[str, Any],
              seen: dict[str, int]) -> None:
    probe = finding["probe"]
    seen[probe] = seen.get(probe, 0) + 1
    name = probe if seen[probe] == 1 else f"{probe} #{seen[probe]}"
    case = ElementTree.SubElement(suite, "testcase", classname=f"redteam.{finding['suite']}",
                                  name=name, time=str(round(float(finding.get("duration_s")
                                                                  or 0), 3)))
    status, summary = finding["status"], finding["summary"] or finding["title"]
    message = f"{finding['severity']}: {summary}"
    if status == "fail":
        ElementTree.SubElement(case, "failure", message=message,
                               type=finding["severity"]).text = summary
    elif status == "error":
        ElementTree.SubElement(case, "error", message=summary).text = summary
    elif status in ("skipped", "inconclusive"):
        ElementTree.SubElement(case, "skipped", message=f"{status}: {summary}")


FORMATS = ("html", "json", "sarif", "junit")  # findings.json ("json") is always written
FILES = {"html": "report.html", "json": "findings.json", "sarif": "findings.sarif",
         "junit": "junit.xml"}


def parse_formats(text: str) -> tuple[str, ...]:
    """``"html,sarif"`` -> the formats in order, json always among them; ValueError naming an
    unknown one."""
    chosen = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a format (choose from {', '.join(FORMATS)})")
    return tuple(dict.fromkeys(["json", *chosen]))


def write_machine_formats(run_dir, document: Mapping[str, Any],
                          formats: tuple[str, ...]) -> list[str]:
    """Write the SARIF and JUnit files among ``formats`` into ``run_dir``, atomically; their
    names."""
    import json
    from pathlib import Path

    from redteam.core.fileio import atomic_write_text

    written = []
    if "sarif" in formats:
        atomic_write_text(Path(run_dir) / FILES["sarif"],
                          json.dumps(render_sarif(document), indent=2, ensure_ascii=False))
        written.append(FILES["sarif"])
    if "junit" in formats:
        atomic_write_text(Path(run_dir) / FILES["junit"], render_junit(document))
        written.append(FILES["junit"])
    return written
