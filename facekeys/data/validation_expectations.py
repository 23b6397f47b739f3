"""Running the validation rules as a Great Expectations suite, with its Data Docs.

Great Expectations is imported in the background while the images decode (it takes seconds);
the suite runs on an ephemeral context over the row check columns, and reports each rule's
unexpected rows.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from facekeys.data.validation_rules import Rule


def import_gx_in_background() -> threading.Thread:
    """Starts importing Great Expectations (about 3 s) while the images decode.

    Image decoding releases the GIL, so on a multi-core machine the two overlap; a later plain
    ``import`` in the main thread waits on the module lock until this one has finished.
    """

    def work() -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        with contextlib.suppress(Exception):  # a real import error surfaces in the main thread
            import great_expectations.expectations  # noqa: F401

    thread = threading.Thread(target=work, name="import-great-expectations", daemon=True)
    thread.start()
    return thread


def run_suite(
    checks: pd.DataFrame, rules: list[Rule], suite_name: str, docs_dir: Path | None
) -> list[tuple[Rule, list[int], bool]]:
    """Runs the rules as a Great Expectations suite; returns each rule's unexpected row indices.

    Args:
        checks: The row check columns (one row per CSV record).
        rules: The rules, in the order they run and are reported.
        suite_name: Name of the suite, its validation definition and checkpoint.
        docs_dir: Where to build the Data Docs; None builds none.

    Returns:
        Per rule: the rule, its unexpected rows (0-based) and whether the expectation passed.

    Raises:
        RuntimeError: an expectation raised instead of judging the rows.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("keypoint_csv").add_dataframe_asset("rows")
    batch = asset.add_batch_definition_whole_dataframe("all_rows")
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for rule in rules:
        rule.expectation.meta = {"reason": rule.code, "kind": rule.kind}
        suite.add_expectation(rule.expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    actions = []
    if docs_dir is not None:
        _add_data_docs_site(context, docs_dir)
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs"))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": checks})
    (validation,) = result.run_results.values()
    return _unexpected_rows(validation, rules)


def _add_data_docs_site(context: Any, docs_dir: Path) -> None:
    """Adds a Data Docs site that writes its HTML into ``docs_dir``."""
    context.add_data_docs_site(
        site_name="facekeys",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),  # GX wants it absolute
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )


def _unexpected_rows(validation: Any, rules: list[Rule]) -> list[tuple[Rule, list[int], bool]]:
    """Each expectation's rule, unexpected row indices and success, in the suite's order."""
    by_code = {rule.code: rule for rule in rules}
    outcome = []
    for res in validation.results:
        rule = by_code[res.expectation_config.meta["reason"]]
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"Great Expectations failed on {rule.code}: "
                f"{res.exception_info.get('exception_message')}"
            )
        unexpected = [int(i) for i in (res.result.get("unexpected_index_list") or [])]
        outcome.append((rule, unexpected, bool(res.success)))
    return outcome
