"""A small world of coloured shapes where following a prompt can be checked: a prompt grammar (`grammar`), a renderer
that draws what a prompt describes (`render`), and the fixed held-out split of compositions (`split`).

The `composition` reward (`treegrpo.rewards.composition`) parses prompts with this grammar and checks images against
it; `treegrpo world` writes the split's prompt files, which enter the pipeline through `treegrpo ingest`.
"""
