"""DVC stage fetch@<dataset>: bring the raw data set into data/raw/<dataset>/."""

from typing import Any

from facekeys.data.fetch import fetch_planned
from facekeys.data.source_plan import FetchSettings, plan_source
from facekeys.stage_runner import dataset_arg, run_stage


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    fetch = params.get("fetch", {})
    settings = FetchSettings.from_params(fetch)
    plan = plan_source(dataset, fetch.get("sources") or {}, settings)
    if plan.note:
        print(plan.note)
    fetch_planned(
        plan, f"data/raw/{dataset}", settings, "data/raw", f"data/raw/{dataset}.source.json"
    )
    print(f"data/raw/{dataset}: fetched from {plan.source} ({plan.origin})")


if __name__ == "__main__":
    run_stage("fetch", main)
