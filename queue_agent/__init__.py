"""The sdeks queue agent: SQS → runtime → S3 → SNS, with heartbeat, prefetch and failure classification.

Modules, in the order a task meets them: :mod:`settings`, :mod:`messages`
(parse, resolve claim checks), :mod:`fetch` (SSRF-safe inputs), :mod:`adapters`
(sdwebui, comfyui), :mod:`storage` (deterministic S3 keys), :mod:`events`
(completion events), :mod:`heartbeat`, :mod:`worker` (the loop), :mod:`metrics`,
:mod:`server` (health/metrics HTTP), :mod:`logs`.
"""
