"""The prompt-table expectation suite, built and run with GX Core 1.x's own API.

`PromptSuite` holds one ephemeral data context with a pandas data source, a dataframe asset and a whole-dataframe
batch definition, the `ExpectationSuite` below, a `ValidationDefinition` and a `Checkpoint` whose
`UpdateDataDocsAction` writes Data Docs HTML to a given folder. `run(table)` validates a table and returns one
`Outcome` per expectation. Analytics are off (`GX_ANALYTICS_ENABLED=false` and the context's own flag) and progress
bars are off, so a stage never reaches for the network or floods its log.

The table it expects (built by `validate.py`): `prompt` (object dtype, so the type check runs per value), the
provenance columns, `split` ('train'/'eval'), `clip_tokens` (CLIP tokens incl. start/end; NaN for non-strings) and
`splits_per_prompt` (how many splits hold the prompt).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treegrpo.config.data import DataParams

REQUIRED_COLUMNS = ("prompt", "source", "style", "source_index", "split")
# C0 and C1 control characters (tab and newline included: ingestion turns them into spaces)
CONTROL_REGEX = r"[\x00-\x1f\x7f-\x9f]"
# signs of broken text: U+FFFD (what a failed decode leaves behind) and the Unicode noncharacters of the BMP
INVALID_UNICODE_REGEX = "[\ufffd\ufdd0-\ufdef\ufffe\uffff]"


@dataclass(frozen=True)
class Outcome:
    """One expectation's result. `rows` holds every offending row's table index (row-level expectations only)."""

    check: str
    expectation: str
    column: str | None
    success: bool
    row_level: bool
    unexpected_count: int | None
    element_count: int | None
    observed: Any
    rows: tuple[int, ...]
    error: str | None


def _expectations(params: DataParams) -> list:
    """The suite's expectations, each with the short description the summary and Data Docs show."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    prompt = "prompt"
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_COLUMNS), exact_match=False,
                                         description="required columns present"),
        gxe.ExpectColumnValuesToBeOfType(column=prompt, type_="str", description="prompts are strings"),
        gxe.ExpectColumnValuesToBeOfType(column="source", type_="str", description="sources are strings"),
        gxe.ExpectColumnValuesToBeInTypeList(column="source_index", type_list=["int64", "int32"],
                                             description="source indexes are integers"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "eval"],
                                        description="split is train or eval"),
        gxe.ExpectColumnValuesToNotBeNull(column=prompt, description="no null prompt"),
        gxe.ExpectColumnValuesToMatchRegex(column=prompt, regex=r"\S",
                                           description="no empty or whitespace-only prompt"),
        gxe.ExpectColumnValueLengthsToBeBetween(column=prompt, min_value=params.min_chars,
                                                max_value=params.max_chars,
                                                description=f"length in [{params.min_chars}, {params.max_chars}] "
                                                            "characters"),
        gxe.ExpectColumnValuesToBeBetween(column="clip_tokens", min_value=params.min_clip_tokens,
                                          max_value=params.max_clip_tokens,
                                          description=f"length in [{params.min_clip_tokens}, "
                                                      f"{params.max_clip_tokens}] CLIP tokens"),
        gxe.ExpectColumnValuesToNotMatchRegex(column=prompt, regex=CONTROL_REGEX,
                                              description="no control characters"),
        gxe.ExpectColumnValuesToNotMatchRegex(column=prompt, regex=INVALID_UNICODE_REGEX,
                                              description="no invalid Unicode (U+FFFD, noncharacters)"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", prompt],
                                            description="unique prompts within each split"),
        gxe.ExpectColumnValuesToBeBetween(column="splits_per_prompt", min_value=1, max_value=1,
                                          description="no prompt in both train and eval"),
        gxe.ExpectTableRowCountToBeBetween(min_value=params.min_train_prompts, max_value=params.max_train_prompts,
                                           row_condition=Column("split") == "train",
                                           description="train split size within bounds"),
        gxe.ExpectTableRowCountToBeBetween(min_value=params.min_eval_prompts, max_value=params.max_eval_prompts,
                                           row_condition=Column("split") == "eval",
                                           description="eval split size within bounds"),
    ]


class PromptSuite:
    """The suite, a checkpoint to run it and a Data Docs site in `docs_dir`, in one ephemeral GX context."""

    def __init__(self, params: DataParams, docs_dir: Path):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # read by GX when the context starts
        logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO lines drown the stage's log
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.docs_dir = docs_dir
        site = {  # GX wants an absolute folder here; params.yaml's are relative to the repository root
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs_dir.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            data_docs_sites={"prompts": site},
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ))
        batch = (context.data_sources.add_pandas("prompts").add_dataframe_asset("prompt_table")
                 .add_batch_definition_whole_dataframe("whole_table"))
        suite = context.suites.add(gx.ExpectationSuite(name="prompt_table"))
        for expectation in _expectations(params):
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="prompt_table", data=batch, suite=suite))
        self.checkpoint = context.checkpoints.add(gx.Checkpoint(
            name="prompts", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["prompts"])],
            result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
        ))

    @property
    def index_html(self) -> Path:
        return self.docs_dir / "index.html"

    def run(self, table, run_name: str) -> list[Outcome]:
        """Validate `table` (a pandas DataFrame with a 0..N-1 index); the Data Docs site gains this run's page."""
        from great_expectations.core.run_identifier import RunIdentifier

        result = self.checkpoint.run(batch_parameters={"dataframe": table}, run_id=RunIdentifier(run_name=run_name))
        (validation,) = result.run_results.values()
        return [_outcome(r) for r in validation.results]


def _outcome(r) -> Outcome:
    cfg, res = r.expectation_config, r.result or {}
    info = r.exception_info or {}
    error = info.get("exception_message") if info.get("raised_exception") else None
    kwargs = cfg.kwargs
    column = kwargs.get("column") or (", ".join(kwargs["column_list"]) if "column_list" in kwargs else None)
    return Outcome(
        check=cfg.description or cfg.type, expectation=cfg.type, column=column, success=bool(r.success),
        row_level="unexpected_index_list" in res, unexpected_count=res.get("unexpected_count"),
        element_count=res.get("element_count"), observed=res.get("observed_value"),
        rows=tuple(int(i) for i in res.get("unexpected_index_list") or ()), error=error,
    )
