"""Developer tools of the CDK app (no AWS calls)."""
