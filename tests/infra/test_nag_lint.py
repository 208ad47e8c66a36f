"""cdk-nag AwsSolutions and cfn-lint on the synthesized templates."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_cdk_nag_has_no_unacknowledged_findings(synth_any):
    violations = synth_any.nag_violations()
    lines = [
        f"{v['ruleName']} at {', '.join(c['constructPath'] for c in v.get('violatingConstructs', []))}"
        for v in violations
    ]
    assert not lines, "\n".join(lines)
    assert synth_any.synth_error is None, synth_any.synth_error


def test_every_acknowledgment_has_a_reason(synth_any):
    metadata = [
        r.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
        for r in synth_any.raw["Resources"].values()
    ]
    acks = [a for group in metadata for a in group]
    assert acks, "acknowledgments are written to the template metadata"
    for ack in acks:
        assert len(ack["reason"]) >= 30, ack


def test_cfn_lint_has_no_errors(synth_any):
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(synth_any.template_path, ManualArgs(regions=["us-east-1", "us-west-2"]))
    errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.severity == "error"]
    assert not errors, "\n".join(errors)


def test_nag_plugin_reports_findings(tmp_path):
    """The harness sees findings when there are some (so zero findings above means zero)."""
    import aws_cdk as cdk
    from aws_cdk import aws_sqs as sqs

    from infra.nag import apply_nag

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe")
    sqs.Queue(stack, "Plain")
    apply_nag(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    import json

    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-SQS3", "AwsSolutions-SQS4"} <= rules
