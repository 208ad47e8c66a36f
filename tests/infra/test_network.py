"""VPC endpoints (issue 14.6): S3 always through a gateway endpoint, ECR/STS interface endpoints on request."""

from __future__ import annotations

import json

import pytest

from tests.infra.helpers import as_list

pytestmark = pytest.mark.slow


def _endpoints(synth, kind: str) -> dict[str, dict]:
    return {
        json.dumps(e["Properties"]["ServiceName"]): e["Properties"]
        for e in synth.resources("AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType", "Gateway") == kind
    }


def _service(name: str) -> str:
    return json.dumps({"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, f".{name}"]]})


def _private_route_tables(synth) -> set[str]:
    private = {
        lid for lid, s in synth.resources("AWS::EC2::Subnet").items() if not s["Properties"].get("MapPublicIpOnLaunch")
    }
    return {
        a["Properties"]["RouteTableId"]["Ref"]
        for a in synth.resources("AWS::EC2::SubnetRouteTableAssociation").values()
        if a["Properties"]["SubnetId"]["Ref"] in private
    }


def test_s3_gateway_endpoint_serves_every_private_subnet(synth_any):
    gateways = _endpoints(synth_any, "Gateway")
    assert list(gateways) == [_service("s3")]
    s3 = gateways[_service("s3")]
    assert {t["Ref"] for t in s3["RouteTableIds"]} == _private_route_tables(synth_any)
    assert not _endpoints(synth_any, "Interface"), "interface endpoints are opt-in (cluster.interface_endpoints)"


def test_interface_endpoints_when_asked(synth_options):
    synth = synth_options
    interfaces = _endpoints(synth, "Interface")
    assert set(interfaces) == {_service("ecr.api"), _service("ecr.dkr"), _service("sts")}
    subnets = {
        lid for lid, s in synth.resources("AWS::EC2::Subnet").items() if not s["Properties"].get("MapPublicIpOnLaunch")
    }
    for endpoint in interfaces.values():
        assert endpoint["PrivateDnsEnabled"] is True
        assert {s["Ref"] for s in endpoint["SubnetIds"]} == subnets
        group_id = endpoint["SecurityGroupIds"][0]["Fn::GetAtt"][0]
        group = synth.raw["Resources"][group_id]["Properties"]
        ingress = as_list(group.get("SecurityGroupIngress", [])) + [
            r["Properties"]
            for r in synth.resources("AWS::EC2::SecurityGroupIngress").values()
            if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
        ]
        assert {(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in ingress} == {("tcp", 443, 443)}
        assert all("SourceSecurityGroupId" in r and "CidrIp" not in r for r in ingress), ingress
        assert len(ingress) == 2  # Karpenter nodes' group, the EKS cluster group (system nodes)
    assert list(_endpoints(synth, "Gateway")) == [_service("s3")]


def test_interface_endpoints_are_nag_clean(synth_options):
    assert not synth_options.nag_violations(), synth_options.nag_violations()


def test_interface_endpoints_pass_cfn_lint(synth_options):
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(synth_options.template_path, ManualArgs(regions=["us-east-1", "us-west-2"]))
    errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.severity == "error"]
    assert not errors, "\n".join(errors)
