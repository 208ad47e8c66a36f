"""The sdeks queue agent: SQS → runtime → S3 → SNS, with heartbeat, prefetch and failure classification.

Modules, in the order a task meets them: :mod:`settings`, :mod:`consumer` (the SQS
side: receive, batched acknowledgements, release, visibility heartbeat),
:mod:`messages` (parse once, resolve claim checks), :mod:`cancel` (the cancellation
hook), :mod:`fetch` (SSRF-safe inputs), :mod:`lane` (two tasks in flight at the
runtime, timeouts), :mod:`adapters` (sdwebui, comfyui), :mod:`storage`
(deterministic S3 keys), :mod:`events` (completion events), :mod:`outcomes` (one
outcome per message, counted and logged in one place), :mod:`held` (a held message
and its verdict), :mod:`worker` (the state machine: receive, prepare, dispatch),
:mod:`finish` (store, announce, acknowledge or put back), :mod:`metrics`,
:mod:`server` (health/metrics HTTP), :mod:`logs`.
"""
