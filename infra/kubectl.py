"""The kubectl Lambda layer of each supported Kubernetes version.

The CDK's kubectl provider runs kubectl and helm from a layer that AWS publishes per
Kubernetes minor version as the pip distribution ``aws-cdk.lambda-layer-kubectl-v1N``
(module ``aws_cdk.lambda_layer_kubectl_v1N``, class ``KubectlV1NLayer``). The versions a
config may name are :data:`sdeks.config.KUBERNETES_VERSIONS`; each one's distribution is
pinned in requirements/cdk.txt (tests/infra/test_kubernetes_version.py checks both ways).
This module does not import aws_cdk at load time, so tools can ask for names cheaply.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_
    from constructs import Construct


def _minor(version: str) -> str:
    major, minor = version.split(".")
    if major != "1" or not minor.isdigit():
        raise ValueError(f"not a Kubernetes 1.x minor version: {version!r}")
    return minor


def layer_distribution(version: str) -> str:
    """``"1.36"`` → ``"aws-cdk.lambda-layer-kubectl-v36"`` (the pip name)."""
    return f"aws-cdk.lambda-layer-kubectl-v{_minor(version)}"


def kubectl_layer(scope: Construct, cid: str, version: str) -> lambda_.ILayerVersion:
    """The layer whose kubectl matches the cluster's ``version`` (kubectl supports ±1 minor)."""
    minor = _minor(version)
    try:
        module = importlib.import_module(f"aws_cdk.lambda_layer_kubectl_v{minor}")
    except ModuleNotFoundError:
        raise ValueError(
            f"Kubernetes {version}: {layer_distribution(version)} is not installed (make install-cdk)"
        ) from None
    return getattr(module, f"KubectlV{minor}Layer")(scope, cid)
