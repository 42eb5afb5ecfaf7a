"""Readable tables (rich) of a `dvit validate` result; the JSON itself is written by pipeline.validate."""
from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _tokens(err: dict[str, Any]) -> str:
    """Tokens compared per image (mean) and their share of the reference's tokens; '-' in results written
    before the comparison counted them."""
    if err.get("tokens_per_image") is None:
        return "-"
    return f"{err['tokens_per_image']:.1f} ({100 * err['tokens_fraction']:.0f}%)"


def validation_tables(r: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    tables: list[Any] = []
    acc = Table(title="Top-1 on the test split", title_justify="left")
    for col in ("graphs", "top-1", "agreement with the reference", "logits max abs err", "logits mean abs err"):
        acc.add_column(col, justify="left" if col == "graphs" else "right")
    acc.add_row(f"reference: {r['reference']['name']}", _pct(r["reference"]["accuracy"]), "-", "-", "-")
    for key, label in (("chain", "stage chain"), ("fused", "fused")):
        x = r[key]
        acc.add_row(label, _pct(x["accuracy"]), _pct(x["agreement"]), _e(x["logits"]["max_abs"]), _e(x["logits"]["mean_abs"]))
    il = r["chain"].get("isolated_logits")
    if il:
        acc.add_row("last stage, reference input", "-", "-", _e(il["max_abs"]), _e(il["mean_abs"]))
    tables.append(acc)
    if not r["chain"]["boundaries"]:
        tables.append("[yellow]The reference holds no stage-boundary tokens: boundary and isolated-stage metrics are "
                      "left out (record with tokens to get them).[/yellow]")

    bnd = Table(title="Stage boundaries (tokens entering each stage graph, compared by patch position over the "
                "tokens both kept)", title_justify="left")
    # two-line headers: 150 columns hold the table without cutting the cosines
    for col in ("stage", "tensor", "chained\ntokens/img", "chained\nmax", "chained\nmean", "chained cos\nmean/min",
                "isolated\ntokens/img", "isolated\nmax", "isolated\nmean", "isolated cos\nmean/min"):
        bnd.add_column(col, justify="right")
    for b in r["chain"]["boundaries"]:
        c, i = b["chained"], b["isolated"]
        bnd.add_row(
            str(b["stage"]), b["tensor"], _tokens(c), _e(c["max_abs"]), _e(c["mean_abs"]),
            f"{_f(c['cosine_mean'], 6)}/{_f(c['cosine_min'], 6)}", _tokens(i), _e(i["max_abs"]), _e(i["mean_abs"]),
            f"{_f(i['cosine_mean'], 6)}/{_f(i['cosine_min'], 6)}",
        )
    if r["chain"]["boundaries"]:
        tables.append(bnd)

    kept = Table(title="Kept tokens vs the reference (IoU of kept patch sets per image)", title_justify="left")
    for col in ("pruning point", "k", "chain IoU mean", "chain IoU min", "chain identical", "fused IoU mean",
                "fused identical", "isolated IoU mean", "isolated identical"):
        kept.add_column(col, justify="right")
    isolated = r["chain"]["kept_isolated"] or [{"iou_mean": None, "identical": None}] * len(r["chain"]["kept"])
    for c, f, i in zip(r["chain"]["kept"], r["fused"]["kept"], isolated):
        kept.add_row(
            str(c["stage"]), str(c["keep_count"]), _f(c["iou_mean"]), _f(c["iou_min"]), _pct(c["identical"]),
            _f(f["iou_mean"]), _pct(f["identical"]), _f(i["iou_mean"]), _pct(i["identical"]),
        )
    tables.append(kept)

    cons = Table(title="Consistency", title_justify="left")
    for col in ("check", "logits max abs diff", "top-1 agreement", "kept ids identical (per pruning point)"):
        cons.add_column(col, justify="left" if col == "check" else "right")
    cf = r["chain_vs_fused"]
    cons.add_row("stage chain vs fused", _e(cf["logits_max_abs"]), _pct(cf["agreement"]),
                 " ".join(_pct(v) for v in cf["kept_identical"]))
    bc = r.get("batch_consistency")
    if bc:
        for key in ("chain", "fused"):
            x = bc[key]
            cons.add_row(f"{key} B={bc['batch_sizes'][0]} vs B=1 ({bc['samples']} images)", _e(x["logits_max_abs"]),
                         _pct(x["agreement"]), " ".join(_pct(v) for v in x["kept_identical"]))
    tables.append(cons)

    req = r["requirements"]
    title = f"{req['profile'].upper()} thresholds ({'enforced' if req['enforced'] else 'reported, not enforced'})"
    rt = Table(title=title, title_justify="left")
    for col in ("check", "value", "threshold", "ok"):
        rt.add_column(col, justify="left" if col == "check" else "right")
    for c in req["checks"]:
        v = c["value"]
        rt.add_row(c["name"], "-" if v is None else f"{v:.6g}", f"{c['op']} {c['threshold']:.6g}",
                   "[green]yes[/green]" if c["passed"] else "[red]NO[/red]")
    tables.append(rt)
    return tables


def print_validation(r: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=150)  # logs and CI: do not squeeze the tables into 80 columns
    ref = r["reference"]
    what = ref.get("checkpoint", {}).get("path") or ref["name"]
    console.print(
        f"[bold]{r['graphs_dir']}[/bold] ({r['manifest']['kind']}, precision {','.join(r['precision'])}) "
        f"vs {what}{'' if ref['matches_manifest'] else ' [yellow](not the checkpoint the manifest names)[/yellow]'}\n"
        f"{r['dataset']['samples']} {r['dataset']['split']} images of {r['dataset']['source']}, batch {r['batch_size']}, "
        f"{', '.join(r['providers'])}, {r['elapsed_s']:.1f} s"
    )
    for t in validation_tables(r):
        console.print(t)
