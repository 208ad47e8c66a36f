"""Operator tools over a running deployment (local or AWS): dead-letter queues and the live view."""
