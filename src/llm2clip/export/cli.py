"""`llm2clip export-onnx --model DIR --out DIR [--check-images FOLDER]`."""
from __future__ import annotations

import json


def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser("export-onnx", help="export the image side and the adaptor as ONNX (extra [onnx]), "
                              "checked with onnxruntime against PyTorch", description=__doc__)
    p.add_argument("--model", required=True, help="an LLM2CLIP model folder (stage 2's final/)")
    p.add_argument("--out", required=True, help="folder to write (replaced as a whole when the export succeeds)")
    p.add_argument("--check-images", help="a folder of real images to check the image side on (its first 8; "
                   "default: random-noise images)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |onnxruntime - PyTorch| (1e-4)")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    import math

    from ..output_paths import require_writable_folder
    from .onnx_export import export_onnx

    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ValueError(f"--tolerance must be a positive number, got {args.tolerance}")
    require_writable_folder(args.out, "--out")
    images = None
    if args.check_images:
        from ..search.sources import list_images, load_ref

        images = [load_ref(ref) for ref in list_images(args.check_images)[:8]]
    manifest = export_onnx(args.model, args.out, check_images=images, tolerance=args.tolerance)
    print(json.dumps({"out": args.out, "files": sorted(manifest["files"]), "check": manifest["check"]}, indent=2))
    return 0
