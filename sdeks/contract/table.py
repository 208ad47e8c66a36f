"""Attribute names of the task status table, the row the API and the agent both write.

They live in the contract (not in ``sdeks.config``) because the row is shared wire state:
the API Lambda and the agent import them without loading the deployment config.
"""

from __future__ import annotations

TASK_TABLE_KEY = "id"
"""Partition key of the task table (string)."""

TASK_TABLE_TTL_ATTRIBUTE = "expires_at"
"""Epoch seconds after which DynamoDB's TTL deletes the row."""
