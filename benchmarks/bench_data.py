"""Time and peak memory of `treegrpo ingest` and `treegrpo validate` on 103,700 generated prompts (HPDv2's train size).

    .venv/bin/python benchmarks/bench_data.py            # txt and HPDv2-shaped train.json, plus a 4x-repeated txt
    .venv/bin/python benchmarks/bench_data.py --n 20000  # quicker

Each measurement runs in a fresh child process so its peak RSS (VmHWM) is its own; "imports" is the RSS after the
imports it needs and before any work, so peak minus imports is what the work itself added. The 4x file holds every
prompt four times: four times the bytes with the same output, which shows ingestion memory does not grow with the file.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STYLES = ["anime", "concept-art", "paintings", "photo"]
SUBJECTS = ["a red fox", "an old lighthouse", "a paper boat", "a clockwork owl", "a mountain village", "a street cat",
            "a violin player", "a glass greenhouse", "a desert caravan", "a sleeping dragon", "a tram at night",
            "a koi pond", "a knight in silver armor", "a bowl of ramen", "a windmill", "a spaceship hangar",
            "a field of sunflowers", "a library tower", "a snow leopard", "a fishing harbor", "a treehouse",
            "a steam locomotive", "a jazz club", "a coral reef", "a ruined temple"]
SETTINGS = ["at dawn", "under heavy rain", "in thick fog", "at golden hour", "under a full moon", "in deep winter",
            "in early spring", "after a storm", "at noon", "under northern lights", "in a sandstorm", "by candlelight",
            "in autumn", "at twilight", "under cherry blossoms", "in a heatwave", "during a festival", "at midnight",
            "in the mist", "beside a waterfall"]
DETAILS = ["highly detailed", "soft pastel colors", "dramatic lighting", "wide angle", "shallow depth of field",
           "muted palette", "vivid colors", "cinematic composition", "minimalist", "intricate linework",
           "volumetric light", "high contrast", "film grain", "symmetrical", "loose brushwork", "sharp focus",
           "isometric view", "long exposure", "bird's eye view", "close-up", "hazy atmosphere", "warm tones",
           "cold tones", "backlit", "reflections on water", "textured paper", "matte finish"]


def generate(n: int) -> list[tuple[str, str]]:
    """`n` distinct (prompt, style) pairs from the template grid (4 * 25 * 20 * 27 = 54,000 per detail pair)."""
    rng = random.Random(0)
    out, seen = [], set()
    while len(out) < n:
        style, subject, setting = rng.choice(STYLES), rng.choice(SUBJECTS), rng.choice(SETTINGS)
        d1, d2 = rng.sample(DETAILS, 2)
        prompt = f"{style.replace('-', ' ')} of {subject} {setting}, {d1}, {d2}"
        if prompt not in seen:
            seen.add(prompt)
            out.append((prompt, style))
    return out


def write_inputs(root: Path, n: int) -> dict[str, Path]:
    pairs = generate(n)
    txt, txt4, js = root / "prompts.txt", root / "prompts_x4.txt", root / "train.json"
    lines = "\n".join(p for p, _ in pairs) + "\n"
    txt.write_text(lines)
    txt4.write_text(lines * 4)
    # HPDv2's annotation shape: records with a prompt and other fields
    records = [{"prompt": p, "category": s, "human_preference": [1, 0], "image_path": ["a.jpg", "b.jpg"]}
               for p, s in pairs]
    js.write_text(json.dumps(records))
    return {"txt": txt, "json (HPDv2 records)": js, "txt, every prompt x4": txt4}


def _data_params(path: Path, work: Path):
    import yaml

    from treegrpo.config import build
    from treegrpo.config.data import DataParams

    raw = yaml.safe_load((REPO / "params.yaml").read_text())["data"]
    raw.update(source="local", path=str(path), eval_source="split", ingested_dir=str(work / "ingested"),
               validated_dir=str(work / "validated"), min_train_prompts=1, min_eval_prompts=1,
               max_train_prompts=None, max_eval_prompts=None, on_failure="fail")
    return build(DataParams, raw, "data")


def _peak_mb() -> float:
    """This process's peak RSS. /proc's VmHWM starts afresh at exec; ru_maxrss would inherit the parent's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(phase: str, path: Path, work: Path) -> dict:
    """One measurement, in this (fresh) process."""
    params = _data_params(path, work)
    if phase == "ingest":
        import pyarrow.parquet  # noqa: F401

        from treegrpo.data.ingest import ingest_prompts

        imports = _peak_mb()
        start = time.perf_counter()
        stats = ingest_prompts(params)
        result = {"rows": stats.rows, "duplicates": stats.duplicates}
    else:
        import great_expectations  # noqa: F401  (timed apart: imports are a fixed cost)
        import open_clip.tokenizer  # noqa: F401

        from treegrpo.data.validate import validate_prompts

        imports = _peak_mb()
        start = time.perf_counter()
        outcome = validate_prompts(params)
        result = {"rows": outcome.rows, "status": outcome.status}
    return {**result, "seconds": time.perf_counter() - start, "imports_mb": imports, "peak_mb": _peak_mb()}


def run_child(phase: str, path: Path, work: Path) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", phase, str(path), str(work)], check=True,
                         capture_output=True, text=True).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "process_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=103_700, help="distinct prompts (default: HPDv2's 103,700)")
    parser.add_argument("--child", nargs=3, metavar=("PHASE", "PATH", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), Path(args.child[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = write_inputs(root, args.n)
        print(f"{args.n:,} distinct prompts; each line: wall time of the work, peak RSS, RSS after imports")
        for i, (form, path) in enumerate(inputs.items()):
            r = run_child("ingest", path, root / f"w{i}")
            rows = f"{r['rows']['train']:,} train / {r['rows']['eval']:,} eval"
            print(f"ingest   {form:24s} {path.stat().st_size / 2**20:7.1f} MB  {r['seconds']:6.2f} s  "
                  f"peak {r['peak_mb']:6.0f} MB  imports {r['imports_mb']:5.0f} MB  {rows}, "
                  f"{r['duplicates']:,} duplicates dropped")
        r = run_child("validate", inputs["txt"], root / "w0")
        print(f"validate {args.n:,} rows (GX suite + CLIP tokens)  {r['seconds']:6.2f} s  "
              f"peak {r['peak_mb']:6.0f} MB  imports {r['imports_mb']:5.0f} MB  status {r['status']}  "
              f"(process incl. imports {r['process_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
