"""docs/cost.md is read off the template: its counts are the synthesized default stack's."""

from __future__ import annotations

import pytest

from infra.cluster import INTERFACE_ENDPOINTS, MAX_AZS
from tests.fixtures.infra import REPO_ROOT

pytestmark = pytest.mark.slow

COST = (REPO_ROOT / "docs" / "cost.md").read_text()


def test_idle_floor_counts_match_the_template(synth_default):
    config = synth_default.config
    assert len(synth_default.resources("AWS::EKS::Cluster")) == 1
    nats = len(synth_default.resources("AWS::EC2::NatGateway"))
    assert f"| {nats} NAT gateway |" in COST
    group = next(iter(synth_default.resources("AWS::EKS::Nodegroup").values()))["Properties"]
    assert group["ScalingConfig"]["DesiredSize"] == config.cluster.system_nodes
    assert f"{config.cluster.system_nodes} × {group['InstanceTypes'][0]}" in COST
    gateways = [
        e
        for e in synth_default.resources("AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType", "Gateway") == "Gateway"
    ]
    assert len(gateways) == 1 and "S3 gateway endpoint | 1 |" in COST


def test_optional_interface_endpoints_match_the_template(synth_options):
    synth = synth_options
    private = [
        s for s in synth.resources("AWS::EC2::Subnet").values() if not s["Properties"].get("MapPublicIpOnLaunch")
    ]
    interfaces = [
        e
        for e in synth.resources("AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    assert len(interfaces) == len(INTERFACE_ENDPOINTS)
    assert all(len(e["Properties"]["SubnetIds"]) == len(private) <= MAX_AZS for e in interfaces)
    monthly = len(interfaces) * MAX_AZS * 0.01 * 730  # deployed to a region, the VPC spans MAX_AZS zones
    assert f"{len(interfaces)} interface endpoints × {MAX_AZS} AZs" in COST
    assert f"${monthly:.2f}/month" in COST
