"""doctor's report for people (a table per host, worst first, a verdict last) and for `jq` (one
document: ok, hosts, findings, errors, notes)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from overlayctl.doctor.model import DoctorReport
from overlayctl.text import plural, printable


def doctor_doc(report: DoctorReport, pairs: int) -> dict[str, Any]:
    return {
        "hosts": report.hosts,
        "pairs_probed": pairs,
        "findings": [f.to_doc() for f in report.sorted_findings()],
        "notes": report.notes,
    }


def doctor_text(report: DoctorReport, pairs: int) -> str:
    findings = report.sorted_findings()
    lines: list[str] = []
    number = 0
    for host in dict.fromkeys([*(f.host for f in findings)]):
        mine = [f for f in findings if f.host == host]
        rows, details = [], []
        for finding in mine:
            number += 1
            rows.append([f"#{number}", finding.severity.upper(), finding.check,
                         finding.peer or "-", finding.hop or "-", finding.message])  # fmt: skip
            if finding.evidence:
                details.append(f"  #{number} evidence: {finding.evidence}")
            if finding.fix:
                details.append(f"  #{number} fix: {finding.fix}")
        lines += [f"{host}:", tabulate(rows, headers=["", "severity", "check", "peer", "hop",
                                                      "problem"]), *details, ""]  # fmt: skip
    for error in report.errors:
        where = error.get("host") or error.get("phase") or "doctor"
        lines.append(f"{where}: not checked: {error.get('message')}")
    lines += [f"note: {note}" for note in report.notes]
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    looked = f"doctor: {plural(len(report.hosts), 'host')}, {plural(pairs, 'pair')} probed"
    if not findings and not report.errors:
        lines.append(f"{looked}: no problem found")
    else:
        counts = [plural(errors, "error"), plural(warnings, "warning")]
        if report.errors:
            counts.append(f"{len(report.errors)} not checked")
        verdict = "" if report.ok else " -- FAILED"
        lines.append(f"{looked}: {', '.join(counts)}{verdict}")
    return printable("\n".join(lines))
