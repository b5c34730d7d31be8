"""Task retry policy shared by the DAGs: bad input fails at once, anything else retries.

Why: an invalid trigger form (``InvalidOverrides``) or a workspace that cannot be made
fails the same way on every attempt, so retrying it only delays the alert by the whole
backoff (minutes); a stage that failed for a transient reason keeps its retries.
"""

from __future__ import annotations

from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

BAD_INPUT_FAILS_AT_ONCE = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=["pipelines.orchestration.InvalidOverrides", "pipelines.orchestration.WorkspaceError"],
            action=RetryAction.FAIL,
            reason="invalid parameters or workspace: retrying the same run cannot help",
        )
    ]
)
