"""The recipes: a stage's work from setup to its files (training, evaluation, fetching the weights, the registry),
reporting through an injected `log_fn`; and the registered pyfunc (`serving`), the floor under the registry."""
