"""helm/sd-on-eks: lint, render for several value sets, validate every object, check the pod."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from sdeks.config import load_config, resource_layout
from sdeks.config.helm_values import CHART_DIR, helm_values
from tests.fixtures.helm import CHART_TEST_VALUES, REPO, run_helm

TWO_RUNTIMES = REPO / "config" / "two-runtimes.yaml"
DEFAULT_CONFIG = REPO / "config" / "default.yaml"


def cloud_values(config_path, runtime_name: str) -> dict[str, Any]:
    config = load_config(config_path, environ={})
    layout = resource_layout(config)
    runtime = config.runtime(runtime_name)
    queue = layout.queues_for(runtime_name)
    return helm_values(
        config,
        runtime,
        queue_url=f"https://sqs.eu-west-1.amazonaws.com/123456789012/{queue.queue_name}",
        output_bucket="sdeks-output-123456789012",
        results_topic_arn=f"arn:aws:sns:eu-west-1:123456789012:{layout.results_topic_name}",
        task_table=layout.task_table_name,
        region="eu-west-1",
        model_bucket="sdeks-models-123456789012",
        cluster_name="sdeks",
        node_role="sdeks-gpu-nodes",
        agent_image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/queue-agent:1.0",
        runtime_image="123456789012.dkr.ecr.eu-west-1.amazonaws.com/sd-runtime:1.0",
    )


def pod_spec(result) -> dict[str, Any]:
    return result.one("Deployment")["spec"]["template"]["spec"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert len(found) == 1
    return found[0]


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


UNVALIDATED = {"ServiceMonitor"}  # no Prometheus operator CRD vendored: test_service_monitor checks its shape


def assert_valid(result, manifest_validator) -> None:
    problems = [p for obj in result.objects if obj["kind"] not in UNVALIDATED for p in manifest_validator.errors(obj)]
    assert not problems, "\n".join(problems)


# -- lint ---------------------------------------------------------------------------------------


def test_lint_strict(helm_lint):
    result = helm_lint("--strict", "-f", str(CHART_TEST_VALUES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_lint_strict_two_runtimes(helm_lint):
    for name in ("sd15", "comfy"):
        result = helm_lint("--strict", values=cloud_values(TWO_RUNTIMES, name))
        assert result.returncode == 0, result.stdout + result.stderr


def test_lint_without_required_values_names_them(helm_lint):
    result = helm_lint()
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "missing properties 'queueUrl', 'outputBucket', 'resultsTopicArn', 'taskTable'" in out
    assert "missing property 'region'" in out


def test_chart_dir_constant_points_at_chart():
    assert (CHART_DIR / "Chart.yaml").exists()
    assert yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["name"] == "sd-on-eks"


# -- render + validate ---------------------------------------------------------------------------

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "emptydir-models": {"models": {"source": "emptyDir"}},
    "hostpath-models": {"models": {"source": "hostPath", "hostPath": "/data/models"}},
    "no-nodepool": {"nodePool": {"enabled": False}, "nodeSelector": {"node.kubernetes.io/instance-type": "g5.xlarge"}},
    "no-scaling": {"scaling": {"enabled": False}, "replicaCount": 2},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "comfyui-extras": {
        "runtime": {"type": "comfyui", "checkpoint": "sd15.safetensors", "extraEnv": [{"name": "X", "value": "1"}]},
        "agent": {"allowedInputBuckets": ["inputs-a", "inputs-b"], "allowedInputHosts": ["*.example.com"]},
        "serviceAccount": {"annotations": {"example.com/owner": "imaging"}},
        "nodePool": {"capacityTypes": ["on-demand"], "instanceFamilies": ["p4d"], "tags": {"team": "imaging"}},
        "podDisruptionBudget": {"enabled": False},
    },
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_render_validates(name, helm_template, manifest_validator):
    result = helm_template(VALUE_SETS[name])
    assert result.objects
    for obj in result.objects:
        if obj["kind"] in UNVALIDATED:
            continue
        assert manifest_validator.known(obj), f"no schema for {obj['apiVersion']} {obj['kind']}"
    assert_valid(result, manifest_validator)


def test_default_objects(helm_template):
    kinds = helm_template().kinds()
    assert kinds == sorted(
        [
            "Deployment",
            "EC2NodeClass",
            "NetworkPolicy",
            "NodePool",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "ScaledObject",
            "Service",
            "ServiceAccount",
            "TriggerAuthentication",
        ]
    )


@pytest.mark.parametrize("name", ["sd15", "comfy"])
def test_two_runtimes_from_config(name, helm_template, manifest_validator):
    values = cloud_values(TWO_RUNTIMES, name)
    config = load_config(TWO_RUNTIMES, environ={})
    runtime = config.runtime(name)
    result = helm_template(values, release=f"sdeks-{name}", base=False)
    assert_valid(result, manifest_validator)

    spec = pod_spec(result)
    agent = env(container(spec, "agent"))
    assert agent["SDEKS_RUNTIME_NAME"] == name
    assert agent["SDEKS_RUNTIME_TYPE"] == runtime.type
    assert agent["SDEKS_QUEUE_URL"].endswith(f"/sdeks-{name}")
    assert agent["SDEKS_TASK_TIMEOUT_S"] == str(runtime.task_timeout_s)
    assert agent["SDEKS_PREFETCH"] == str(runtime.prefetch)
    assert agent["SDEKS_INPUT_MAX_BYTES"] == str(config.inputs.max_bytes)
    assert agent["SDEKS_INPUT_TIMEOUT_S"] == "10"
    assert spec["terminationGracePeriodSeconds"] == runtime.shutdown_grace_s + 15 < SPOT_NOTICE_S
    assert agent["SDEKS_SHUTDOWN_GRACE_S"] == str(runtime.shutdown_grace_s)
    assert agent["SDEKS_STATUS_TTL_DAYS"] == str(config.output.expire_days)
    assert agent["SDEKS_PRESIGN_IMAGES"] == str(int(config.output.presign_images))
    assert agent["SDEKS_PRESIGN_EXPIRES_S"] == str(config.output.presign_expires_s)
    assert spec["serviceAccountName"] == f"sdeks-{name}"
    assert spec["nodeSelector"]["karpenter.sh/nodepool"] == f"sdeks-{name}"

    pool = result.one("NodePool", f"sdeks-{name}")
    reqs = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert reqs["karpenter.k8s.aws/instance-family"] == runtime.gpu.instance_families
    assert reqs["karpenter.sh/capacity-type"] == runtime.gpu.capacity_types
    assert pool["spec"]["limits"]["nvidia.com/gpu"] == str(runtime.gpu.max_gpus)
    nodeclass = result.one("EC2NodeClass", f"sdeks-{name}")
    assert nodeclass["spec"]["amiSelectorTerms"] == [{"alias": config.cluster.bottlerocket_alias}]
    assert nodeclass["spec"]["tags"]["team"] == "imaging"

    scaled = result.one("ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == runtime.scaling.max_replicas
    assert scaled["spec"]["triggers"][0]["metadata"]["queueLength"] == str(runtime.scaling.queue_length)

    pv = result.one("PersistentVolume")
    assert f"prefix {runtime.model.prefix}/" in pv["spec"]["mountOptions"]
    assert pv["spec"]["csi"]["volumeAttributes"]["bucketName"] == "sdeks-models-123456789012"


def test_two_runtimes_do_not_collide(helm_template):
    """Cluster-scoped objects (NodePool, EC2NodeClass, PV) of two releases have distinct names."""
    names: list[tuple[str, str]] = []
    for name in ("sd15", "comfy"):
        result = helm_template(cloud_values(TWO_RUNTIMES, name), release=f"sdeks-{name}", base=False)
        names += [(o["kind"], o["metadata"]["name"]) for o in result.objects if "namespace" not in o["metadata"]]
    assert len(names) == len(set(names)) == 6


def test_helm_values_rejects_foreign_runtime():
    config = load_config(TWO_RUNTIMES, environ={})
    other = load_config(DEFAULT_CONFIG, environ={}).runtimes[0]
    with pytest.raises(ValueError, match="not one of the config's runtimes"):
        helm_values(
            config,
            other,
            queue_url="q",
            output_bucket="b",
            results_topic_arn="t",
            task_table="t",
            region="r",
            model_bucket="m",
            cluster_name="c",
            node_role="n",
            agent_image="a",
            runtime_image="r",
        )


# -- the pod -------------------------------------------------------------------------------------


def test_runtime_is_native_sidecar_agent_is_main(helm_template):
    spec = pod_spec(helm_template())
    assert [c["name"] for c in spec["initContainers"]] == ["runtime"]
    assert [c["name"] for c in spec["containers"]] == ["agent"]
    runtime = spec["initContainers"][0]
    assert runtime["restartPolicy"] == "Always"
    assert runtime["command"] == ["python", "-m", "sd_runtime"]
    assert spec["containers"][0]["command"] == ["python", "-m", "queue_agent"]


def test_runtime_probes_keep_a_runtime_without_its_model_running(helm_template):
    """Startup and liveness probe the process (/livez), readiness the model (/healthz): a missing
    checkpoint makes the pod unready with a reason, never a restart loop on a GPU node."""
    runtime = container(pod_spec(helm_template()), "runtime")
    startup = runtime["startupProbe"]

    # the runtime listens on loopback only, so the kubelet probes it from inside the container
    def probe(path: str) -> list[str]:
        return ["python", "-c", f"import urllib.request as u; u.urlopen('http://127.0.0.1:8080{path}', timeout=4)"]

    assert startup["exec"]["command"] == probe("/livez")
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert runtime["readinessProbe"]["exec"]["command"] == probe("/healthz")
    assert runtime["livenessProbe"]["exec"]["command"] == probe("/livez")
    assert "ports" not in runtime  # nothing to reach from outside the pod


def test_runtime_env_and_gpu(helm_template):
    result = helm_template({"runtime": {"checkpoint": "v1-5-pruned-emaonly.safetensors"}})
    runtime = container(pod_spec(result), "runtime")
    values = env(runtime)
    assert values["SD_MODEL"] == "v1-5-pruned-emaonly.safetensors"
    assert values["SD_MODELS_DIR"] == "/models"
    assert values["SD_HOST"] == "127.0.0.1"
    assert values["SD_PORT"] == "8080"
    assert runtime["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert runtime["resources"]["requests"]["memory"] == "12Gi"
    mounts = {m["mountPath"]: m for m in runtime["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True


def test_runtime_type_sets_health_path(helm_template):
    spec = pod_spec(helm_template({"runtime": {"type": "comfyui"}}))
    runtime = container(spec, "runtime")
    assert "'http://127.0.0.1:8080/system_stats'" in runtime["readinessProbe"]["exec"]["command"][-1]
    for probe in ("startupProbe", "livenessProbe"):
        assert "'http://127.0.0.1:8080/livez'" in runtime[probe]["exec"]["command"][-1]
    assert "SDEKS_RUNTIME_HEALTH_PATH" not in env(container(spec, "agent"))


def test_runtime_command_and_health_override(helm_template):
    values = {
        "runtime": {
            "command": ["/start.sh"],
            "args": ["--port", "8080"],
            "healthPath": "/ping",
            "livenessPath": "/alive",
            "compile": True,
        }
    }
    spec = pod_spec(helm_template(values))
    runtime = container(spec, "runtime")
    assert runtime["command"] == ["/start.sh"]
    assert runtime["args"] == ["--port", "8080"]
    assert "'http://127.0.0.1:8080/ping'" in runtime["readinessProbe"]["exec"]["command"][-1]
    for probe in ("startupProbe", "livenessProbe"):
        assert "'http://127.0.0.1:8080/alive'" in runtime[probe]["exec"]["command"][-1]
    assert env(runtime)["SD_COMPILE"] == "1"
    assert env(container(spec, "agent"))["SDEKS_RUNTIME_HEALTH_PATH"] == "/ping"
    assert "command" not in container(pod_spec(helm_template({"runtime": {"command": []}})), "runtime")


def test_shutdown_grace_within_termination_grace(helm_template):
    spec = pod_spec(helm_template({"agent": {"taskTimeoutSeconds": 600, "shutdownGraceSeconds": 60}}))
    assert env(container(spec, "agent"))["SDEKS_SHUTDOWN_GRACE_S"] == "60"
    assert spec["terminationGracePeriodSeconds"] == 75


def test_no_checkpoint_leaves_sd_model_unset(helm_template):
    assert "SD_MODEL" not in env(container(pod_spec(helm_template()), "runtime"))


def test_agent_env_and_probes(helm_template):
    agent = container(pod_spec(helm_template({"agent": {"allowedInputBuckets": ["a-in", "b-in"]}})), "agent")
    values = env(agent)
    assert values == {
        "SDEKS_QUEUE_URL": "https://sqs.us-west-2.amazonaws.com/123456789012/sdeks-sdruntime",
        "SDEKS_RUNTIME_NAME": "sdruntime",
        "SDEKS_RUNTIME_TYPE": "sdwebui",
        "SDEKS_RUNTIME_URL": "http://127.0.0.1:8080",
        "SDEKS_OUTPUT_BUCKET": "sdeks-output-123456789012",
        "SDEKS_RESULTS_TOPIC_ARN": "arn:aws:sns:us-west-2:123456789012:sdeks-results",
        "SDEKS_TASK_TABLE": "sdeks-tasks",
        "SDEKS_ALLOWED_INPUT_BUCKETS": "a-in,b-in",
        "SDEKS_ALLOWED_INPUT_HOSTS": "",
        "SDEKS_INPUT_MAX_BYTES": "20971520",
        "SDEKS_INPUT_TIMEOUT_S": "10",
        "SDEKS_PREFETCH": "1",
        "SDEKS_TASK_TIMEOUT_S": "300",
        "SDEKS_SHUTDOWN_GRACE_S": "90",
        "SDEKS_PROJECT": "sdeks",
        "SDEKS_EMF_ENDPOINT": "tcp://cloudwatch-agent.amazon-cloudwatch:25888",
        "SDEKS_STATUS_TTL_DAYS": "30",
        "SDEKS_PRESIGN_IMAGES": "0",
        "SDEKS_PRESIGN_EXPIRES_S": "3600",
        "SDEKS_AGENT_PORT": "9095",
        "SDEKS_AGENT_HOST": "0.0.0.0",
        "AWS_REGION": "us-west-2",
        "AWS_DEFAULT_REGION": "us-west-2",
        "HOME": "/tmp",
    }
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


SPOT_NOTICE_S = 120


def test_termination_grace_fits_the_spot_notice_whatever_the_task_timeout(helm_template):
    """Issue 14.5: a pod on a reclaimed spot node must be done (task released) before the instance goes."""
    longest = {"shutdownGraceSeconds": 100, "terminationMarginSeconds": 15}
    for timeout in (60, 300, 3600):
        for agent in ({}, longest):
            result = helm_template({"agent": {"taskTimeoutSeconds": timeout, **agent}})
            spec = pod_spec(result)
            grace = int(env(container(spec, "agent"))["SDEKS_SHUTDOWN_GRACE_S"])
            assert grace < spec["terminationGracePeriodSeconds"] < SPOT_NOTICE_S
            assert env(container(spec, "agent"))["SDEKS_TASK_TIMEOUT_S"] == str(timeout)
            node_grace = result.one("NodePool")["spec"]["template"]["spec"]["terminationGracePeriod"]
            assert node_grace == f"{spec['terminationGracePeriodSeconds'] + 60}s"


def test_security_context(helm_template):
    spec = pod_spec(helm_template())
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["initContainers"] + spec["containers"]:
        sc = c["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}


def test_gpu_toleration_and_node_selection(helm_template):
    result = helm_template()
    spec = pod_spec(result)
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "sdeks-sdruntime"}
    pool = result.one("NodePool", "sdeks-sdruntime")
    assert pool["spec"]["template"]["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    ]


def test_nodepool_disabled(helm_template):
    result = helm_template({"nodePool": {"enabled": False}})
    assert "NodePool" not in result.kinds() and "EC2NodeClass" not in result.kinds()
    spec = pod_spec(result)
    assert "nodeSelector" not in spec
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_closed_runtime_network_policy_and_no_sa_token(helm_template, manifest_validator):
    result = helm_template()
    spec = pod_spec(result)
    assert spec["automountServiceAccountToken"] is False  # Pod Identity mounts its own token
    policy = result.one("NetworkPolicy")
    assert not manifest_validator.errors(policy)
    assert policy["spec"]["podSelector"]["matchLabels"] == result.one("Service")["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 9095, "protocol": "TCP"}]}]
    ports = {p["containerPort"] for c in spec["initContainers"] + spec["containers"] for p in c.get("ports", [])}
    assert ports == {9095}
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    scoped = helm_template({"networkPolicy": {"metricsFrom": [peer]}}).one("NetworkPolicy")
    assert scoped["spec"]["ingress"][0]["from"] == [peer] and not manifest_validator.errors(scoped)
    assert "NetworkPolicy" not in helm_template({"networkPolicy": {"enabled": False}}).kinds()


def test_service_account_for_pod_identity(helm_template):
    result = helm_template({"serviceAccount": {"name": "sd-runner"}})
    sa = result.one("ServiceAccount")
    assert sa["metadata"]["name"] == "sd-runner"
    assert sa["metadata"]["namespace"] == "sdeks"
    assert pod_spec(result)["serviceAccountName"] == "sd-runner"

    external = helm_template({"serviceAccount": {"create": False, "name": "existing"}})
    assert "ServiceAccount" not in external.kinds()
    assert pod_spec(external)["serviceAccountName"] == "existing"


# -- models volume -------------------------------------------------------------------------------


def test_models_from_s3(helm_template):
    result = helm_template({"models": {"s3": {"prefix": "models/sd15"}}})
    pv = result.one("PersistentVolume")
    pvc = result.one("PersistentVolumeClaim")
    assert pv["spec"]["csi"]["driver"] == "s3.csi.aws.com"
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert {"allow-other", "read-only", "region us-west-2", "prefix models/sd15/"} <= set(pv["spec"]["mountOptions"])
    assert pv["spec"]["claimRef"] == {"namespace": "sdeks", "name": pvc["metadata"]["name"]}
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    volumes = {v["name"]: v for v in pod_spec(result)["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"], "readOnly": True}


@pytest.mark.parametrize(
    ("source", "key"), [("emptyDir", "emptyDir"), ("hostPath", "hostPath")], ids=["emptyDir", "hostPath"]
)
def test_models_without_s3(source, key, helm_template):
    result = helm_template({"models": {"source": source}})
    assert "PersistentVolume" not in result.kinds()
    volumes = {v["name"]: v for v in pod_spec(result)["volumes"]}
    assert key in volumes["models"]


# -- scaling -------------------------------------------------------------------------------------


def test_keda_scaled_object(helm_template):
    result = helm_template({"scaling": {"maxReplicas": 7, "queueLength": 3, "cooldownSeconds": 120}})
    scaled = result.one("ScaledObject", "sdeks-sdruntime")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sdeks-sdruntime"}
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] == 7
    assert spec["cooldownPeriod"] == 120
    assert spec["pollingInterval"] == 15
    trigger = spec["triggers"][0]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"] == {
        "queueURL": "https://sqs.us-west-2.amazonaws.com/123456789012/sdeks-sdruntime",
        "queueLength": "3",
        "activationQueueLength": "0",
        "awsRegion": "us-west-2",
        "scaleOnInFlight": "true",
    }
    auth = result.one("TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["spec"] == {"podIdentity": {"provider": "aws", "identityOwner": "keda"}}
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 60
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    assert "replicas" not in result.one("Deployment")["spec"]


def test_scaling_disabled(helm_template):
    result = helm_template({"scaling": {"enabled": False}, "replicaCount": 3})
    assert "ScaledObject" not in result.kinds() and "TriggerAuthentication" not in result.kinds()
    assert result.one("Deployment")["spec"]["replicas"] == 3


def test_nodepool_parameters(helm_template):
    result = helm_template(
        {"nodePool": {"instanceFamilies": ["g6e"], "capacityTypes": ["spot"], "maxGpus": 3, "expireAfter": "168h"}}
    )
    pool = result.one("NodePool")["spec"]
    reqs = {r["key"]: r for r in pool["template"]["spec"]["requirements"]}
    assert reqs["karpenter.k8s.aws/instance-family"]["values"] == ["g6e"]
    assert reqs["karpenter.sh/capacity-type"]["values"] == ["spot"]
    assert pool["limits"] == {"nvidia.com/gpu": "3"}
    assert pool["disruption"]["consolidationPolicy"] == "WhenEmpty"
    assert reqs["karpenter.k8s.aws/instance-gpu-count"]["values"] == ["1"]
    assert pool["template"]["spec"]["expireAfter"] == "168h"
    assert pool["template"]["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": "sdeks-sdruntime",
    }
    nodeclass = result.one("EC2NodeClass")["spec"]
    assert nodeclass["role"] == "sdeks-gpu-node"
    discovery = [{"tags": {"karpenter.sh/discovery": "sdeks"}}]
    assert nodeclass["subnetSelectorTerms"] == discovery
    assert nodeclass["securityGroupSelectorTerms"] == discovery
    assert nodeclass["amiSelectorTerms"] == [{"alias": "bottlerocket@v1.66.0"}]


def test_service_monitor(helm_template):
    assert "ServiceMonitor" not in helm_template().kinds()
    result = helm_template({"metrics": {"serviceMonitor": {"enabled": True}}})
    monitor = result.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = result.one("Service")
    assert service["spec"]["ports"][0]["port"] == 9095
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())


# -- bad values ----------------------------------------------------------------------------------

BAD_VALUES = [
    ({"scaling": {"maxReplicas": "lots"}}, "at '/scaling/maxReplicas': got string, want integer"),
    ({"runtime": {"gpu": 1}}, "additional properties 'gpu' not allowed"),
    ({"sclaing": {}}, "additional properties 'sclaing' not allowed"),
    ({"runtime": {"type": "invokeai"}}, "/runtime/type"),
    ({"models": {"source": "nfs"}}, "/models/source"),
    ({"nodePool": {"capacityTypes": ["reserved"]}}, "/nodePool/capacityTypes/0"),
    ({"nodePool": {"instanceFamilies": ["m5"]}}, "/nodePool/instanceFamilies/0"),
    ({"nodePool": {"amiAlias": "al2023@latest"}}, "/nodePool/amiAlias"),
    ({"agent": {"taskTimeoutSeconds": 5}}, "/agent/taskTimeoutSeconds"),
    ({"agent": {"resultsTopicArn": "topic"}}, "/agent/resultsTopicArn"),
    ({"aws": {"region": "moon"}}, "/aws/region"),
    ({"nodePool": {"tags": {"kubernetes.io/cluster/x": "owned"}}}, "invalid propertyName 'kubernetes.io/cluster/x'"),
    ({"nodePool": {"tags": {"team": ""}}}, "/nodePool/tags/team"),
    ({"agent": {"shutdownGraceSeconds": 101}}, "/agent/shutdownGraceSeconds"),
    ({"agent": {"terminationMarginSeconds": 16}}, "/agent/terminationMarginSeconds"),
    ({"runtime": {"gpus": 0}}, "/runtime/gpus"),
    ({"nodePool": {"consolidationPolicy": "WhenUnderutilized"}}, "/nodePool/consolidationPolicy"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_rejected(values, message, helm_template):
    result = helm_template(values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_missing_queue_url_rejected(helm_template):
    values = yaml.safe_load(CHART_TEST_VALUES.read_text())
    del values["agent"]["queueUrl"]
    result = helm_template(values, base=False, check=False)
    assert result.returncode != 0
    assert "at '/agent': missing property 'queueUrl'" in result.stderr


def test_nodepool_needs_cluster_and_role(helm_template):
    values = yaml.safe_load(CHART_TEST_VALUES.read_text())
    del values["nodePool"]
    result = helm_template(values, base=False, check=False)
    assert "at '/nodePool': missing properties 'clusterName', 'nodeRole'" in result.stderr
    values["nodePool"] = {"enabled": False}
    assert helm_template(values, base=False).returncode == 0


def test_s3_models_need_bucket(helm_template):
    values = yaml.safe_load(CHART_TEST_VALUES.read_text())
    del values["models"]
    result = helm_template(values, base=False, check=False)
    assert "at '/models/s3': missing property 'bucket'" in result.stderr
    values["models"] = {"source": "emptyDir"}
    assert helm_template(values, base=False).returncode == 0


def test_max_below_min_rejected(helm_template):
    result = helm_template({"scaling": {"minReplicas": 3, "maxReplicas": 2}}, check=False)
    assert "scaling.maxReplicas (2) must be >= scaling.minReplicas (3)" in result.stderr


def test_validator_catches_bad_objects(helm_template, manifest_validator):
    """The offline validation itself rejects unknown fields and wrong types."""
    result = helm_template()
    deployment = result.one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    assert any("imagePullPolice" in e for e in manifest_validator.errors(deployment))
    pool = result.one("NodePool")
    pool["spec"]["disruption"]["consolidationPolicy"] = "Sometimes"
    assert manifest_validator.errors(pool)
    scaled = result.one("ScaledObject")
    scaled["spec"]["minReplicaCount"] = "zero"
    assert manifest_validator.errors(scaled)


def test_helm_values_match_chart_schema():
    """helm_values() output satisfies values.schema.json for every runtime of every example config."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for path in sorted((REPO / "config").glob("*.yaml")):
        config = load_config(path, environ={})
        for runtime in config.runtimes:
            values = cloud_values(path, runtime.name)
            errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(values)]
            assert not errors, f"{path.name} {runtime.name}: {errors}"


def _leaf_keys(node: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        if isinstance(value, dict) and value and key not in {"resources", "requests", "limits", "startupProbe"}:
            keys += _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_readme_documents_every_value():
    readme = (CHART_DIR / "README.md").read_text()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    required = ["agent.queueUrl", "agent.outputBucket", "agent.resultsTopicArn", "agent.taskTable", "aws.region"]
    required += ["models.s3.bucket", "nodePool.clusterName", "nodePool.nodeRole"]
    missing = []
    for key in [k for k in _leaf_keys(values) if k != "aws"] + required:
        last = key.rsplit(".", 1)[-1]
        if f"`{key}`" not in readme and f"`.{last}`" not in readme and f"`{last}`" not in readme:
            missing.append(key)
    assert not missing, f"README values table lacks {missing}"
    assert set(values) - {"aws"} <= set(schema["properties"])


def test_one_gpu_size_per_pod(helm_template):
    """Nodes come only in sizes with exactly the GPUs a pod requests (one pod per node, nothing idle)."""
    for gpus in (1, 4):
        result = helm_template({"runtime": {"gpus": gpus}})
        reqs = {r["key"]: r for r in result.one("NodePool")["spec"]["template"]["spec"]["requirements"]}
        assert reqs["karpenter.k8s.aws/instance-gpu-count"] == {
            "key": "karpenter.k8s.aws/instance-gpu-count",
            "operator": "In",
            "values": [str(gpus)],
        }
        runtime = container(pod_spec(result), "runtime")
        assert runtime["resources"]["limits"]["nvidia.com/gpu"] == gpus


def test_consolidation_can_be_opened_to_underutilized_nodes(helm_template):
    pool = helm_template({"nodePool": {"consolidationPolicy": "WhenEmptyOrUnderutilized"}}).one("NodePool")
    assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"


def test_a_failing_container_says_why(helm_template):
    """A runtime that exits (missing checkpoint, bad config) leaves its last log lines for `kubectl describe`."""
    spec = pod_spec(helm_template())
    for name in ("runtime", "agent"):
        assert container(spec, name)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_notes_name_the_model_location(helm_bin, tmp_path):
    """What `helm install` prints: where models are mounted from and how to check them."""
    result = run_helm(
        helm_bin,
        ["install", "sdeks-sdruntime", str(CHART_DIR), "-n", "sdeks", "--dry-run=client", "-f", str(CHART_TEST_VALUES)],
        {"runtime": {"checkpoint": "v1-5.safetensors"}},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "s3://sdeks-models-123456789012/models/ is mounted at /models" in notes
    assert "the runtime loads v1-5.safetensors" in notes
    assert "sdeks models list --runtime sdruntime --stack sdeks" in notes
