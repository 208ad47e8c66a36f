#!/usr/bin/env python3
"""CDK app: ``npx --yes aws-cdk@2.1148.1 deploy -c config=config/default.yaml``.

The config path comes from context ``-c config=PATH``, else ``$SDEKS_CONFIG``, else
config/default.yaml. A config that does not validate stops synth with a message
that names the key (no traceback).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def main() -> int:
    import aws_cdk as cdk

    from infra.stack import build_app, cdk_json_context
    from sdeks.config import ConfigError, load_config

    app = cdk.App(context=cdk_json_context())
    try:
        config = load_config(app.node.try_get_context("config") or None)
    except ConfigError as exc:
        print(f"sdeks: cannot synthesize: {exc}", file=sys.stderr)
        return 2

    build_app(app, config)
    try:
        app.synth()
    except RuntimeError as exc:  # policy validation (cdk-nag) failed: the report above says what
        if "ValidationFailed" not in str(exc):
            raise
        print(f"sdeks: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
