"""Images per second of the `composition` reward on one CPU thread, on the world's own renders.

    .venv/bin/python benchmarks/bench_composition.py              # 64 px and 256 px, every scene once
    .venv/bin/python benchmarks/bench_composition.py --sizes 512 --repeats 3

The images are rendered first (not timed), then scored through the reward's call (`Composition()(images, prompts)`,
a float tensor batch as the VAE decodes it); the figure is the best of `--repeats` passes. Also printed: the strict
accuracy on those clean renders (it should be 1.0).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from treegrpo.rewards.composition import Composition, CompositionAccuracy
    from treegrpo.world.grammar import all_scenes
    from treegrpo.world.render import render

    scenes = all_scenes()
    prompts = [s.prompt for s in scenes]
    for size in args.sizes:
        pixels = np.stack([np.asarray(render(s, size, i)) for i, s in enumerate(scenes)])  # (N, H, W, 3)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            Composition()(images, prompts)
            best = min(best, time.perf_counter() - start)
        accuracy = CompositionAccuracy()(images, prompts).mean().item()
        print(f"{size:4d} px: {len(scenes) / best:7.1f} images/s on one thread ({len(scenes)} images in "
              f"{best:.2f} s); strict accuracy on clean renders {accuracy:.3f}")


if __name__ == "__main__":
    main()
