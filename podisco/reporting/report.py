"""``podisco report``: one self-contained HTML file for a discovery run, built from the archive (and sweep CSVs).

No network is needed to open it: figures are inline PNGs, the little script (table sorting, error capture) is
inline. Every string from the archive is escaped (``html.text`` / ``html.highlight``).
"""

from __future__ import annotations

import base64
import csv
import json
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from podisco.discovery.archive import Archive, Attempt, proposer_cost
from podisco.discovery.confirm import frontier_summary, verdict_lines
from podisco.reporting import run_figures
from podisco.reporting.html import highlight, text

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:4px 6px;text-align:left}
th{cursor:pointer;background:#f6f6f6;user-select:none} tr.attempt:hover{background:#fafafa}
.status-evaluated{color:#1f5fa8}.status-invalid{color:#b3261e}.status-failed{color:#b36b00}.status-duplicate{color:#666}
pre{background:#f7f7f9;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
.kw{color:#8250df;font-weight:600}.mod{color:#0550ae}.str{color:#0a3069}.num{color:#953800}.com{color:#6e7781}
img{max-width:100%} .facts td:first-child{color:#666;width:220px} .lineage li{margin:2px 0}
details summary{cursor:pointer} #js-errors:empty{display:none}
"""
_SCRIPT = """
window.podiscoErrors = [];
window.addEventListener('error', e => { window.podiscoErrors.push(String(e.message));
  document.getElementById('js-errors').textContent = window.podiscoErrors.join('\\n'); });
function sortTable(th) {
  const table = th.closest('table'), index = Array.from(th.parentNode.children).indexOf(th);
  const body = table.tBodies[0], rows = Array.from(body.querySelectorAll('tr.attempt'));
  const asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
  const key = r => { const v = r.children[index].dataset.sort ?? r.children[index].textContent;
    const n = parseFloat(v); return isNaN(n) ? v : n; };
  rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => { body.appendChild(r); body.appendChild(document.getElementById('detail-' + r.dataset.id)); });
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('#attempts th').forEach(th => th.addEventListener('click', () => sortTable(th)));
  document.querySelectorAll('#attempts tr.attempt').forEach(tr => tr.addEventListener('click', () => {
    const d = document.getElementById('detail-' + tr.dataset.id); d.hidden = !d.hidden; }));
});
"""


def _dpo_curve(beta: float):
    import numpy as np

    from podisco.losses.analysis import DEFAULT_RHO_RANGE, curve

    rho = np.linspace(*DEFAULT_RHO_RANGE, 121)
    f, g = curve("sigmoid", beta, rho)
    return rho, f, g


def _fitness(a: Attempt) -> str:
    if a.fitness is None:
        return "-"
    return f"{a.fitness:+.4f}" + (f" ± {1.96 * a.fitness_stderr:.4f}" if a.fitness_stderr else "")


def _short(error: str | None, limit: int = 90) -> str:
    first = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _table(attempts: Sequence[Attempt]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("id", "gen", "name", "status", "fitness (95% CI)", "parents", "error"))
    rows = []
    for a in attempts:
        sort_fitness = "" if a.fitness is None else f"{a.fitness:.6f}"
        rows.append(
            f'<tr class="attempt" data-id="{a.id}">'
            f"<td>{a.id}</td><td>{a.generation}</td><td>{text(a.name)}</td>"
            f'<td class="status-{text(a.status)}">{text(a.status)}</td>'
            f'<td data-sort="{sort_fitness or -1e9}">{_fitness(a)}</td>'
            f"<td>{text(', '.join(map(str, a.parents)))}</td><td>{text(_short(a.error or a.duplicate_of))}</td></tr>"
        )
        rows.append(
            f'<tr id="detail-{a.id}" class="detail" hidden><td colspan="7">'
            f"<p><b>Thought</b></p><pre>{text(a.thought)}</pre>"
            f'<p><b>Code</b></p><pre class="code">{highlight(a.code)}</pre>'
            + (f"<p><b>Error</b></p><pre>{text(a.error)}</pre>" if a.error else "")
            + _answers(a)
            + "</td></tr>"
        )
    return f'<table id="attempts"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _answers(a: Attempt, shown: int = 3) -> str:
    """A judged task's first answers (seed of the first row), so a score can be read against what was said."""
    rows = (a.metrics or {}).get("per_seed") or []
    answers = rows[0].get("answers") if rows else None
    if not answers:
        return ""
    items = "".join(
        f"<li><pre>{text(chr(10).join(x) if isinstance(x, list) else x)}</pre></li>" for x in answers[:shown]
    )
    title = f"Answers (seed {rows[0].get('seed')}, {min(shown, len(answers))} of {len(answers)})"
    return f"<p><b>{text(title)}</b></p><ol>{items}</ol>"


def _lineage(best: Attempt, by_id: dict[int, Attempt]) -> str:
    """The best candidate and its ancestors, breadth first."""
    items, queue, seen = [], [best.id], set()
    while queue:
        attempt = by_id.get(queue.pop(0))
        if attempt is None or attempt.id in seen:
            continue
        seen.add(attempt.id)
        parents = ", ".join(f"#{p}" for p in attempt.parents) or "none"
        items.append(
            f"<li>#{attempt.id} <b>{text(attempt.name)}</b> (gen {attempt.generation}, {_fitness(attempt)}) "
            f"&larr; {text(parents)}: <i>{text(_short(attempt.thought, 140))}</i></li>"
        )
        queue.extend(attempt.parents)
    return f'<ol class="lineage">{"".join(items)}</ol>'


def _frontier_figure(summary: dict[str, dict], title: str) -> str:
    from podisco.reporting.frontier_plot import plot_frontier

    with tempfile.TemporaryDirectory() as tmp:
        png = plot_frontier(summary, Path(tmp) / "f.png", title)
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    return f'<img class="chart" alt="{text(title)}" src="{uri}">'


def _frontier(sweep_csvs: Sequence[Path]) -> str:
    """An IMDb sweep's reward-vs-KL frontier, or a judged sweep's score against beta."""
    from podisco.reporting.frontier_plot import plot_scores
    from podisco.tasks.sweep_summary import summarise_frontier, summarise_scores

    parts = []
    for path in sweep_csvs:
        with Path(path).open() as f:
            rows = list(csv.DictReader(f))
        name = Path(path).name
        if rows and "score" in rows[0]:
            with tempfile.TemporaryDirectory() as tmp:
                png = plot_scores(summarise_scores(rows), Path(tmp) / "s.png", f"judged score ({name})", "score")
                uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
            parts.append(f'<img class="chart" alt="sweep of {text(name)}" src="{uri}">')
        else:
            rows = [{**r, **{k: float(r[k]) for k in ("beta", "reward", "kl")}} for r in rows]
            parts.append(_frontier_figure(summarise_frontier(rows), f"reward vs KL ({name})"))
    return "".join(parts)


def build_report(archive: Archive, run_id: str, sweep_csvs: Sequence[str | Path] = (), refresh_s: int = 0) -> str:
    """The page. Its Content-Security-Policy allows only its own nonce'd script and inline images, so even a
    string that escaped escaping could not run."""
    run = archive.run(run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r} in {archive.path}")
    attempts = archive.attempts(run_id)
    config = run["config"]
    beta = float(config.get("search", config).get("beta", 0.05))  # archives before nested configs: flat
    top = archive.best(run_id, 3)
    counts = {
        s: sum(a.status == s for a in attempts) for s in ("evaluated", "duplicate", "invalid", "failed", "proposed")
    }
    facts = {
        "run": run_id,
        "task": f"{run['task']} v{run['task_version']}",
        "isolation": run["isolation"],
        "state": "finished" if run["finished"] else "in progress",
        "attempts": ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        "LLM": proposer_cost(attempts) or "none (no LLM calls)",
        "config": json.dumps(config, sort_keys=True),
    }
    sections = []
    verdict = verdict_lines(run.get("verdict"))
    if verdict:  # what held up on held-out seeds, and against which baseline, before anything the search claims
        items = "".join(f"<li>{text(line.strip())}</li>" for line in verdict)
        sections += ["<h2>Verdict</h2>", f'<ul class="verdict">{items}</ul>']
    transfer = frontier_summary(run.get("verdict"))
    if transfer:  # the paper's IMDb figure: the best candidate and DPO over a wide β range, held-out seeds
        sections += ["<h2>β transfer: reward vs KL</h2>", _frontier_figure(transfer, "β transfer (held-out seeds)")]
    sections += [
        "<h2>Fitness per attempt</h2>",
        f'<img class="chart" id="fitness-chart" alt="fitness per attempt" '
        f'src="{run_figures.data_uri(run_figures.fitness_over_attempts(attempts))}">',
    ]
    if top and any(a.shape for a in top):  # preference losses: the worker archived their curves
        fig = run_figures.loss_curves(top, _dpo_curve(beta), beta)
        sections += [
            "<h2>Loss and gradient of the top candidates vs DPO</h2>",
            f'<img class="chart" alt="loss curves" src="{run_figures.data_uri(fig)}">',
        ]
        sections += [
            "<h2>Training curves of the top candidates</h2>",
            f'<img class="chart" alt="training curves" src="{run_figures.data_uri(run_figures.training_curves(top))}">',
        ]
    if top:
        sections += ["<h2>Lineage of the best candidate</h2>", _lineage(top[0], {a.id: a for a in attempts})]
    reevaluated = archive.reevaluations(run_id)
    if reevaluated:
        items = "".join(
            f"<li>{text(r['name'])}: {r['fitness']:+.4f} ± {1.96 * (r['fitness_stderr'] or 0):.4f}"
            f" over {len(r['seeds'])} seeds</li>"
            for r in reevaluated
        )
        heldout = any(r["metrics"].get("heldout") for r in reevaluated)
        title = "Held-out seeds (paired with the baseline)" if heldout else "Re-evaluated with more seeds"
        sections += [f"<h2>{title}</h2>", f"<ul>{items}</ul>"]
    if sweep_csvs:
        sections += ["<h2>Reward vs KL</h2>", _frontier([Path(p) for p in sweep_csvs])]
    sections += [
        "<h2>All attempts</h2>",
        "<p>Click a row for its thought and code; click a header to sort.</p>",
        _table(attempts),
    ]
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    nonce = secrets.token_urlsafe(16)
    policy = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'"
    fact_rows = "".join(f"<tr><td>{text(k)}</td><td>{text(v)}</td></tr>" for k, v in facts.items())
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        f'<title>podisco run {text(run_id)}</title><style>{_STYLE}</style><script nonce="{nonce}">{_SCRIPT}</script>'
        "</head><body>"
        f'<h1>podisco discovery run {text(run_id)}</h1><table class="facts">{fact_rows}</table>'
        f'{"".join(sections)}<pre id="js-errors"></pre></body></html>'
    )


def write_report(root: str | Path, run_id: str, out: str | Path, sweep_csvs: Sequence[str | Path] = ()) -> Path:
    archive = Archive(Path(root) / "archive.sqlite")
    try:
        page = build_report(archive, run_id, sweep_csvs)
    finally:
        archive.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
