"""`dvit report`: one readable page from what validation, latency measurement and the engine build wrote.

    dvit report --validation V1.json [V2.json ...] [--latency L.json ...] [--engines DIR ...]
                [--reference REF.npz] --out DIR [--title TITLE]

writes, atomically (the directory appears complete or not at all):
  * DIR/report.html: one self-contained page (CSS inline, plots as inline SVG, pictures as PNG data URIs; no
    script, no font and no file outside it is loaded, so it opens offline and can be mailed as it is);
  * DIR/report.md: the summary and the key tables in Markdown;
  * DIR/report.json: everything the page was made from (the inputs as read, each with its sha256, and the
    figures derived from them), format "dvit-edge/report/v1".

Inputs
  * validation JSONs ("dvit-edge/validation/v2", `dvit validate --json`): one table row each (stage chain and
    fused graph); the first one is the headline. Each graph set's manifest is read where its directory still
    exists (keep ratio, checkpoint; its hash is compared with the one the validation recorded);
  * latency JSONs ("dvit-edge/latency/v1"): each pruned run beside the dense run it was paired with (same graph
    set, batch, backend and I/O variant: pipeline.results.latency, the rule `dvit latency` wrote its ratios by) and
    the ratio it wrote, the FLOPs ratio (the limit a pruned model's latency ratio tends to) beside it; backends that
    could not run are reported in place of their numbers;
  * engine graph sets (`dvit build` output, kind "engine"; hashes verified): backend, version, target, and the
    layer precisions from the layer reports beside the engines where present;
  * a recording (REF.npz from `dvit reference`): the first test images with the patches pruned at each stage
    greyed out. It must come from the model of one of the validated graph sets.
Several validations whose graph sets have different keep ratios add accuracy (and, with latency, the latency
ratio) against the keep ratio.

Imports neither torch, timm nor ModelOpt: a Jetson makes the report on the device. Bad input stops with one line
(pipeline.errors.DvitError).

This module is the command's front only. The report reads typed results (pipeline.results) and formats them:
inputs.py reads them, model.py builds report.json's content (with validation_rows.py, latency_table.py,
engines.py, graph_sets.py and token_masks.py), formats.py formats numbers and names, html.py, svg.py and
markdown.py render, make.py writes the directory. None of them imports this module back.
"""
from __future__ import annotations

import argparse

from .make import make_report
from .model import DEFAULT_IMAGES, FORMAT

__all__ = ["DEFAULT_IMAGES", "FORMAT", "configure", "main", "make_report"]


# ---------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--validation", nargs="+", default=[], metavar="V.json",
                   help="validation results written by 'dvit validate --json' (the first is the headline)")
    p.add_argument("--latency", nargs="+", default=[], metavar="L.json", help="latency results (pruned and dense, per backend)")
    p.add_argument("--engines", nargs="+", default=[], metavar="DIR",
                   help="engine graph sets written by 'dvit build' (provenance and layer precisions)")
    p.add_argument("--reference", default=None, metavar="REF.npz",
                   help="a recording made by 'dvit reference': pictures of the tokens pruned at each stage")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                   help=f"test images to picture from --reference (default {DEFAULT_IMAGES})")
    p.add_argument("--title", default=None, help="the page's title")
    p.add_argument("--out", required=True, metavar="DIR", help="where report.html, report.md and report.json go")


def main(args: argparse.Namespace) -> int:
    out = make_report(args.validation, args.out, latencies=args.latency, engines=args.engines, reference=args.reference,
                      title=args.title, images=args.images)
    print(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'report.json'}")
    return 0
