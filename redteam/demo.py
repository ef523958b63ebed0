"""``redteam demo``: build the embedded demo targets (cached) and audit every variant.

Each variant of the unlearning zoo is audited against the original (``--reference``) and the
model retrained without the forget authors (``--retrain``), as a reviewer would; the index puts
the variants side by side (rows: probes, columns: variants).
"""

from __future__ import annotations

from pathlib import Path

from redteam.engine import AuditRequest, ModelCache, run_audit
from redteam.findings import worst_severity

VARIANTS = {
    "original": "the model before unlearning (memorised every author)",
    "retrain": "gold standard: retrained from scratch without the forget authors",
    "ga": "unlearned from original by gradient ascent",
    "graddiff": "unlearned from original by gradient difference (GA + retain loss)",
    "npo": "unlearned from original by negative preference optimisation",
    "simnpo": "unlearned from original by SimNPO (reference-free, length-normalised NPO)",
    "salun-npo": "unlearned from original by NPO on SalUn's salient half of the weights",
}


def run_demo(out: Path = Path("reports/demo"), size: str = "demo", seed: int = 0,
             quiet: bool = False) -> Path:
    """Build what is missing, audit each variant into ``out/<variant>``, write the index."""
    from redteam.zoo import build_unlearning_zoo
    from reports.html import write_index

    zoo = build_unlearning_zoo(size=size, seed=seed, quiet=quiet)
    columns, cells, rows = [], {}, []
    cache = ModelCache()
    for variant, description in VARIANTS.items():
        result = run_audit(AuditRequest(
            model=zoo[variant], suite="unlearning", data=zoo["audit"],
            reference=zoo["original"], retrain=zoo["retrain"], out=out / variant,
            device="cpu", seed=seed, overwrite=True, quiet=quiet,
            command=["redteam", "audit", str(zoo[variant]), "--suite", "unlearning", "--data",
                     str(zoo["audit"]), "--reference", str(zoo["original"]), "--retrain",
                     str(zoo["retrain"]), "--out", str(out / variant)],
        ), cache)
        columns.append({"name": variant, "report": f"{variant}/report.html",
                        "exit_code": result.exit_code, "description": description,
                        "worst_severity": worst_severity(result.findings) or "none"})
        for finding in result.findings:
            if finding.probe not in rows:
                rows.append(finding.probe)
            metric = finding.metric
            cells[(finding.probe, variant)] = {
                "status": finding.status, "severity": finding.severity,
                "metric_name": metric.name if metric else "",
                "value": metric.value if metric else None,
                "threshold": metric.threshold if metric else None,
            }
    return write_index(out / "index.html", rows=rows, columns=columns, cells=cells,
                       title="redteam demo: unlearning audit of the embedded zoo")
