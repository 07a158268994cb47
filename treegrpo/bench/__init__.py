"""`treegrpo bench`: how fast TreeGRPO and the baselines (GRPO, MixGRPO, DDPO) are, measured on one machine.

- `harness`: params at equal images per prompt, trainers, the iteration-cost measurement.
- `probe`: transformer-call counting, the bare-forward limit, peak memory, the device description.
- `learning`: the same wall-clock budget per algorithm, held-out reward vs time and images.
- `ablations`: tree shapes (paper Table 3) and window placements (Table 4).
- `gradient`: the policy gradient's signal-to-noise ratio per prompt group, per tree shape.
- `suite`: the parts as functions; `report`, `plots`: JSON, Markdown and PNG outputs.
- `sd35m`: SD3.5-Medium's architecture with random weights, for GPU timings without a download.
"""
