"""DVC stage fetch@<dataset>: bring the raw data set into data/raw/<dataset>/."""

from typing import Any

from facekeys.errors import FacekeysError
from facekeys.fetch import FetchSettings, fetch_dataset, resolve_source
from facekeys.stagekit import dataset_arg, run_stage


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    fetch = params.get("fetch", {})
    configured = fetch.get("sources", {}).get(dataset)
    if not configured:
        raise FacekeysError(f"params.yaml: fetch.sources.{dataset} is not set")
    source, origin = resolve_source(dataset, configured)
    fetch_dataset(
        dataset,
        source,
        f"data/raw/{dataset}",
        FetchSettings.from_params(fetch),
        origin,
        source_record=f"data/raw/{dataset}.source.json",
    )
    print(f"data/raw/{dataset}: fetched from {source} ({origin})")


if __name__ == "__main__":
    run_stage("fetch", main)
