"""``python app.py`` end to end: a bad config fails cleanly; a good one synthesizes with validation on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run_app(tmp_path: Path, context: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("CDK_VALIDATION", "SDEKS_CONFIG")}
    environ.update(
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        CDK_OUTDIR=str(tmp_path / "cdk.out"),
        CDK_CONTEXT_JSON=json.dumps(context),
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "app.py"], cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_bad_config_names_the_key_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtimes:\n  - name: sd\n    scaling: {min_replicas: 0, max_replicas: 0}\n")
    proc = _run_app(tmp_path, {"config": str(bad)})
    assert proc.returncode != 0
    assert "runtimes[0].scaling.max_replicas" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "cdk.out" / "manifest.json").exists()


@pytest.mark.slow
def test_config_from_environment_variable(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("runtimes:\n  - name: sd\n    max_recieve_count: 3\n")
    proc = _run_app(tmp_path, {}, env={"SDEKS_CONFIG": str(bad)})
    assert proc.returncode != 0
    assert "runtimes[0].max_recieve_count" in proc.stderr
    assert "Traceback" not in proc.stderr


def _path_without_docker() -> str:
    """PATH with node (jsii) and this Python, and no docker client: what a machine without Docker has."""
    dirs = {str(Path(sys.executable).parent), str(Path(shutil.which("node")).parent)}
    assert not any(shutil.which("docker", path=d) for d in dirs), f"docker found in {dirs}"
    return os.pathsep.join(sorted(dirs))


@pytest.mark.slow
def test_default_config_synthesizes_with_cloudformation_validation(tmp_path):
    """The one synth with the CDK's built-in CloudFormation validation on (and cdk-nag), without Docker:
    the image assets are fingerprinted and staged at synth, built only by ``cdk deploy``."""
    proc = _run_app(tmp_path, {"config": "config/default.yaml"}, env={"PATH": _path_without_docker()})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "cdk.out"
    report = json.loads((out / "validation-report.json").read_text())
    failures = [p for p in report["pluginReports"] if p.get("violations")]
    assert not failures, json.dumps(failures, indent=1)[:4000]
    assert (out / "sdeks.template.json").is_file()
    images = json.loads((out / "sdeks.assets.json").read_text())["dockerImages"]
    assert {i["source"]["dockerFile"] for i in images.values()} == {"queue_agent/Dockerfile", "sd_runtime/Dockerfile"}
