"""Orchestration: what the Prefect flows and ``scripts/orchestrate`` decide and run.

Owns the workspace lock, staleness from DVC, data-change checks, run reports, and the local
services (Prefect server, MLflow server, the serving process). ``flows/`` only wires these.

May import: ``facekeys.data``, ``facekeys.tracking`` and every wing below them; no tensors.
"""
