"""The Kubernetes API endpoint: private by default, public only for the CIDRs the config names."""

from __future__ import annotations

import json

import pytest

from sdeks.config import parse_config
from tests.fixtures.infra import synth_config

pytestmark = pytest.mark.slow

PUBLIC_CONFIG = """
project: pubapi
cluster: {endpoint_public_cidrs: [203.0.113.0/24, 198.51.100.7/32]}
runtimes:
  - name: sd
"""


def _vpc_config(synth) -> dict:
    [cluster] = synth.resources("AWS::EKS::Cluster").values()
    return cluster["Properties"]["ResourcesVpcConfig"]


def _kubectl_handler_in_vpc(synth) -> bool:
    handlers = [v for k, v in synth.resources("AWS::Lambda::Function").items() if "KubectlProviderHandler" in k]
    return bool(handlers) and all("SubnetIds" in h["Properties"].get("VpcConfig", {}) for h in handlers)


def test_endpoint_is_private_by_default(synth_default):
    vpc = _vpc_config(synth_default)
    assert vpc["EndpointPrivateAccess"] is True and vpc["EndpointPublicAccess"] is False
    assert "PublicAccessCidrs" not in vpc
    assert _kubectl_handler_in_vpc(synth_default)  # CDK still reaches the private endpoint
    assert synth_default.synth_error is None


def test_public_endpoint_only_from_configured_cidrs(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "public.yaml"
    path.write_text(PUBLIC_CONFIG)
    synth = synth_config(path, tmp_path_factory.mktemp("cdk-public"))
    assert synth.synth_error is None, synth.synth_error
    vpc = _vpc_config(synth)
    assert vpc["EndpointPublicAccess"] is True and vpc["EndpointPrivateAccess"] is True
    assert vpc["PublicAccessCidrs"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert _kubectl_handler_in_vpc(synth)


@pytest.mark.parametrize(
    ("cidrs", "words"), [(["0.0.0.0/0"], "whole internet"), (["::/0"], "whole internet"), (["10.0.0.1/8"], "CIDR")]
)
def test_bad_public_cidrs_fail_with_a_clear_message(cidrs, words):
    with pytest.raises(ValueError, match=words):
        parse_config({"project": "p", "cluster": {"endpoint_public_cidrs": cidrs}, "runtimes": [{"name": "sd"}]})


def test_network_policies_are_enforced(synth_default):
    """The chart's NetworkPolicy only works where the CNI enforces it: the VPC CNI add-on has its agent on."""
    [cni] = [
        a for a in synth_default.resources("AWS::EKS::Addon").values() if a["Properties"]["AddonName"] == "vpc-cni"
    ]
    assert json.loads(cni["Properties"]["ConfigurationValues"]) == {"enableNetworkPolicy": "true"}
    assert cni["Properties"]["ResolveConflicts"] == "OVERWRITE"  # adopts the cluster's self-managed install
    releases = [
        r
        for r in synth_default.resources("Custom::AWSCDK-EKS-HelmChart").values()
        if "ChartAssetURL" in r["Properties"]  # the sd-on-eks releases (Karpenter and KEDA come from registries)
    ]
    [cni_id] = [
        lid
        for lid, a in synth_default.resources("AWS::EKS::Addon").items()
        if a["Properties"]["AddonName"] == "vpc-cni"
    ]
    assert releases and all(cni_id in r.get("DependsOn", []) for r in releases)
