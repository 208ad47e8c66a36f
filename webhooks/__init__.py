"""The webhook deliverer: completion events from the results topic to each task's receiver.

One core (:mod:`webhooks.deliver`) and two runners: an AWS Lambda with an SQS
event source (:mod:`webhooks.lambda_handler`) and a long-polling process for
local mode (``python -m webhooks``). Deliveries stay off the GPU path: a slow or
dead receiver delays nothing but its own retries.
"""
