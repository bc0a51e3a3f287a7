"""report.md and a self-contained report.html linking every analysis' summary, tables and figures."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from toolkit.outputs import atomic_write_text


def _analysis_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "summary.json").exists() and not p.name.startswith("."))


def write_report(run_dir: str | Path, title: str = "Sweep analysis", status: dict[str, Any] | None = None) -> Path:
    """Write report.md and report.html for a run folder and return the HTML path."""
    from toolkit.secrets import scrub

    run_dir = Path(run_dir)
    status = status or {}
    title = scrub(title)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    if (status.get("publish") or {}).get("line"):  # where the results were published (toolkit.publish)
        md, body = md + [f"Results {status['publish']['line']}.", ""], body + [f"<p>Results {html.escape(status['publish']['line'])}.</p>"]
    if status.get("failed"):
        md += ["## Failed analyses", ""]
        body.append("<h2>Failed analyses</h2><ul>")
        for name, msg in status["failed"].items():
            md.append(f"- **{name}**: {msg}")
            body.append(f"<li><b>{html.escape(name)}</b>: {html.escape(msg)}</li>")
        md.append("")
        body.append("</ul>")
    if status.get("warnings"):
        md += ["## Input warnings", ""] + [f"- {w}" for w in status["warnings"]] + [""]
        body.append("<h2>Input warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in status["warnings"]) + "</ul>")
    for adir in _analysis_dirs(run_dir):
        name = adir.name
        summary = json.loads((adir / "summary.json").read_text())
        md += [f"## {name}", "", f"- [summary.json]({name}/summary.json)"]
        body.append(f"<h2>{html.escape(name)}</h2>")
        warnings = summary.get("warnings") or []
        if warnings:
            md += ["", "Warnings:"] + [f"- {w}" for w in warnings[:50]]
            if len(warnings) > 50:
                md.append(f"- ... and {len(warnings) - 50} more (see summary.json)")
            body.append("<ul>" + "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings[:50]) + "</ul>")
        short = {k: v for k, v in summary.items() if k != "warnings"}
        text = json.dumps(short, indent=2)
        if len(text) > 20000:
            text = text[:20000] + "\n... (truncated; see summary.json)"
        body.append(f"<details><summary>summary.json</summary><pre>{html.escape(text)}</pre></details>")
        for csv in sorted(adir.glob("*.csv")):
            md.append(f"- table: [{csv.name}]({name}/{csv.name})")
            body.append(f'<p>table: <a href="{name}/{csv.name}">{html.escape(csv.name)}</a></p>')
        for page in sorted(adir.glob("*.html")):
            md.append(f"- interactive: [{page.name}]({name}/{page.name})")
            body.append(f'<p>interactive: <a href="{name}/{page.name}">{html.escape(page.name)}</a></p>')
        md.append("")
        for png in sorted(adir.glob("*.png")):
            md += [f"![{png.stem}]({name}/{png.name})", ""]
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{png.stem}" style="max-width:100%" src="data:image/png;base64,{data}"/><figcaption>{html.escape(png.name)}</figcaption></figure>')
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}pre{background:#f6f6f6;padding:.5em;overflow:auto}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    atomic_write_text(run_dir / "report.md", "\n".join(md) + "\n")
    return atomic_write_text(run_dir / "report.html", page)
