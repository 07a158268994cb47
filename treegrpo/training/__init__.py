"""The recipes' helpers, one floor under them (like torchtune's `training/`): checkpoints, metrics files, sample grids,
reward curves, the MLflow run (`tracking`), what makes two runs the same (`run_identity`), the algorithms' shapes."""
