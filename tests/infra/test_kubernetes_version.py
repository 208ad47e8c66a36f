"""Supported Kubernetes versions: the default is in EKS standard support, the kubectl layer follows the config."""

from __future__ import annotations

import importlib.metadata
import re

import pytest
import yaml

from infra.kubectl import layer_distribution
from sdeks.config import KUBERNETES_VERSIONS, Cluster, ConfigError, parse_config
from sdeks.config.helm_values import CHART_DIR
from tests.fixtures.infra import REPO_ROOT, synth_config

PINNED_LAYER = re.compile(r"^aws-cdk\.lambda-layer-kubectl-v(\d+)==(\S+)$", re.MULTILINE)


def test_every_supported_version_has_its_layer_pinned_and_installed_and_no_other():
    pinned = {
        f"1.{minor}": version
        for minor, version in PINNED_LAYER.findall((REPO_ROOT / "requirements" / "cdk.txt").read_text())
    }
    assert set(pinned) == set(KUBERNETES_VERSIONS)
    for k8s, version in pinned.items():
        assert importlib.metadata.version(layer_distribution(k8s)) == version


def test_default_is_the_newest_supported_version_and_the_chart_pins_the_same_bottlerocket():
    assert Cluster().kubernetes_version == max(KUBERNETES_VERSIONS, key=lambda v: int(v.split(".")[1]))
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["nodePool"]["amiAlias"] == Cluster().bottlerocket_alias


def test_unsupported_version_names_the_supported_ones():
    with pytest.raises(ConfigError) as info:
        parse_config({"runtimes": [{"name": "a"}], "cluster": {"kubernetes_version": "1.33"}}, "c.yaml", environ={})
    message = str(info.value)
    assert "cluster.kubernetes_version" in message
    assert f"supported: {', '.join(KUBERNETES_VERSIONS)}" in message


def _kubectl_layer(synth) -> dict:
    layers = [
        layer["Properties"]
        for lid, layer in synth.resources("AWS::Lambda::LayerVersion").items()
        if lid.startswith("ClusterKubectlLayer")
    ]
    assert len(layers) == 1
    return layers[0]


@pytest.mark.slow
def test_cluster_and_kubectl_layer_follow_the_configured_version(synth_default, tmp_path_factory):
    synths = {synth_default.config.cluster.kubernetes_version: synth_default}
    for version in KUBERNETES_VERSIONS:
        if version not in synths:
            path = tmp_path_factory.mktemp("k8s") / "config.yaml"
            path.write_text(yaml.safe_dump({"runtimes": [{"name": "sd"}], "cluster": {"kubernetes_version": version}}))
            synths[version] = synth_config(path, tmp_path_factory.mktemp(f"cdk-{version}"))
    for version, synth in synths.items():
        cluster = next(iter(synth.resources("AWS::EKS::Cluster").values()))["Properties"]
        assert cluster["Version"] == version
        assert f"/opt/kubectl/kubectl {version}." in _kubectl_layer(synth)["Description"]
