"""The top of the report: the reproduction summary, the claims table with its rule, each claim's
evidence (its comparisons and every run, one click from the verdict), and the compute used.

The numbers come from ``ckd_lib.report.claims`` (verdicts), ``ckd_lib.report.reproduction``
(the summary) and ``ckd_lib.report.compute``; this module only lays them out.
"""

from __future__ import annotations

from html import escape

from ckd_lib.report.claims import Comparison, Evidence, statistic_parts, statistic_text
from ckd_lib.report.collect import Study, relative_path
from ckd_lib.report.compute import ComputeRow, hours_text
from ckd_lib.report.html import links_html, num_html, section_html, table_html
from ckd_lib.report.reproduction import Summary
from ckd_lib.report.stats import TIER_RULE, VERDICT_RULE


def verdict_html(verdict: str) -> str:
    cls = "ckd-" + verdict.replace(" in this profile", "").replace(" ", "-")
    return f'<span class="ckd-verdict {cls}">{escape(verdict)}</span>'


def summary_html(summary: Summary, profile: str) -> str:
    """The reproduction summary, in the ML Reproducibility Challenge's sections."""
    def items(lines):
        return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"

    return ('<div class="ckd-report ckd-summary" id="ckd-summary">'
            f"<h3>Reproduction summary (profile {escape(profile)}; generated from the records)"
            "</h3>"
            f"<b>Scope.</b>{items(summary.scope)}"
            f"<b>Methodology.</b>{items(summary.methodology)}"
            f'<b>Results per claim</b> (<a href="#ckd-claims">claims table</a>).'
            f"{items(summary.results)}"
            f'<b>Compute used</b> (<a href="#ckd-compute">per table</a>).{items(summary.compute)}'
            f"<b>Departures from the paper's setting.</b>{items(summary.departures)}</div>")


def _run_links(study: Study, run_ids: list[str]) -> str:
    """Each run as a link to its record (the tables' own link format)."""
    known = [rid for rid in run_ids if (study.by_id.get(rid) or {}).get("_path")]
    return links_html(known, [relative_path(study.by_id[rid]["_path"], study.report_dir)
                              for rid in known])


def comparison_html(c: Comparison) -> str:
    """One comparison of a claim: what minus what, its budget, the estimate [95 % CI] and what
    it counts, and its own verdict."""
    estimate, detail = statistic_parts(c)
    budget = ""
    if c.budget:
        cls = "ckd-warn" if c.unequal_budget else ""
        budget = f'<div class="ckd-s {cls}">{escape(c.budget)}</div>'
    return (f'<div class="ckd-cmp"><div><b>{escape(c.label)}</b></div>{budget}'
            f'<div>{num_html(estimate)} <span class="ckd-s">{escape(detail)}</span> '
            f"{verdict_html(c.verdict.verdict)}</div></div>")


def claims_html(evidence: list[Evidence], study: Study) -> str:
    """One row per claim: the claim, each comparison that tests it (with its budget, statistic,
    95 % interval, seeds and verdict), the claim's verdict, and a link to its evidence below
    (every run of it, each linked to its record)."""
    rows = []
    for e in evidence:
        tests = "".join(comparison_html(c) for c in e.comparisons) or \
            '<div class="ckd-s ckd-ns">no runs of it in this profile</div>'
        runs = len(e.run_ids)
        evidence_link = (f'<a href="#ckd-claim-{escape(e.claim.key)}">{runs} run(s) ↓</a>'
                         if runs else "–")
        rows.append(
            f'<tr><td class="ckd-pair">{escape(e.claim.key)}</td>'
            f"<td>{escape(e.claim.statement)}"
            f'<div class="ckd-i">{escape(e.claim.paper_says)}</div></td>'
            f"<td>{tests}</td>"
            f"<td>{verdict_html(e.verdict.verdict)}"
            f'<div class="ckd-s">{escape(e.verdict.reason)}</div></td>'
            f"<td>{evidence_link}</td></tr>")
    head = ("<th>claim</th><th>what the paper claims</th><th>tested by: comparison, budget, "
            "statistic mean [95 % CI], seeds, verdict</th><th>verdict</th><th>evidence</th>")
    return (section_html("Claims: do they hold in these runs?")
            + '<div class="ckd-report" id="ckd-claims">'
            + f'<div class="ckd-rule"><b>Rule.</b> {escape(VERDICT_RULE)}</div>'
            + table_html(head, "".join(rows)) + "</div>")


def _comparison_rows(c: Comparison, study: Study) -> str:
    out = []
    for part in c.parts:
        sides = ""
        if part.a is not None and part.b is not None:
            sides = " − ".join(
                f"{escape(cell.method)} last {num_html(cell.last.text())} "
                f"({escape(cell.budget.steps_text())})" for cell in (part.a, part.b))
        out.append(f"<tr><td>{escape(part.what)}</td><td class=\"ckd-s\">{sides}</td>"
                   f"<td>{num_html(part.diff.text())} <span class=\"ckd-s\">n={part.diff.n}"
                   f"</span></td><td class=\"ckd-r\">{_run_links(study, part.run_ids)}</td></tr>")
    return "".join(out)


def evidence_html(evidence: list[Evidence], study: Study) -> str:
    """Each claim's comparisons, pair by pair, with every run linked to its record."""
    blocks = []
    for e in evidence:
        if not e.comparisons:
            continue
        parts = []
        for c in e.comparisons:
            head = ("<th>pair / setting</th><th>sides (mean ± sd over seeds, budget)</th>"
                    "<th>difference [95 % CI]</th><th>runs</th>")
            body = _comparison_rows(c, study) or \
                '<tr><td colspan="4" class="ckd-empty">no runs</td></tr>'
            parts.append(f'<div class="ckd-note"><b>{escape(c.label)}</b>: '
                         f"{escape(statistic_text(c))} — {verdict_html(c.verdict.verdict)} "
                         f"({escape(c.verdict.reason)})</div>" + table_html(head, body))
        blocks.append(f'<div class="ckd-report" id="ckd-claim-{escape(e.claim.key)}">'
                      f"<h4>{escape(e.claim.key)}: {escape(e.claim.statement)} — "
                      f"{verdict_html(e.verdict.verdict)}</h4>{''.join(parts)}</div>")
    if not blocks:
        return ""
    return ('<details class="ckd-report"><summary>Evidence of each claim: its comparisons, '
            "pair by pair, and every run</summary>" + "".join(blocks) + "</details>")


def compute_html(rows: list[ComputeRow]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(r.scope)}</td><td class=\"ckd-right\">{r.runs}</td>"
        f"<td>{num_html(hours_text(r.device_hours))}</td><td class=\"ckd-s\">{escape(r.devices)}"
        f"</td><td>{escape(r.per_device_batch)}</td><td class=\"ckd-s\">{escape(r.negatives)}"
        "</td></tr>" for r in rows)
    head = ("<th>table</th><th>runs</th><th>compute</th><th>devices</th>"
            "<th>batch per device</th><th>CKD negatives</th>")
    return (section_html("Compute used", level=3)
            + '<div class="ckd-report" id="ckd-compute"><div class="ckd-note">Device time from '
            "the records: each group's wall time (training, evaluation, data loading) times its "
            "devices, shared among the students trained together; a run shown in two tables "
            "counts in both, once in the total.</div>" + table_html(head, body) + "</div>")


def tier_rule_html() -> str:
    return f'<div class="ckd-rule"><b>Against the published numbers.</b> {escape(TIER_RULE)}</div>'
