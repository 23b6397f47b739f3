"""Prefect flows: wiring only (schedule, serialise and run `dvc repro`); the logic lives in
``facekeys``. The flows arrive with the orchestration issue."""
