"""EKS cluster: system node group, Pod Identity, Karpenter, KEDA, Mountpoint for S3, one sd-on-eks per runtime.

GPU capacity is not here: each runtime's chart brings its Karpenter NodePool/EC2NodeClass
(spot first, Bottlerocket pinned). This construct provides what those need: the node role
and its access entry, and subnets / a security group tagged ``karpenter.sh/discovery``.

NVIDIA device plugin: not installed. Karpenter launches the Bottlerocket NVIDIA variant on
GPU instance types, and that variant ships the device plugin (``nvidia.com/gpu`` resource).
"""

from __future__ import annotations

from typing import cast

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.images import Images
from infra.kubectl import kubectl_layer
from infra.messaging import Messaging
from infra.storage import Storage
from sdeks.config import Config, ResourceLayout
from sdeks.config.helm_values import CHART_DIR, helm_values

KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"
KARPENTER_VERSION = "1.14.1"
KARPENTER_NAMESPACE = "kube-system"
KARPENTER_SERVICE_ACCOUNT = "karpenter"
KEDA_REPOSITORY = "https://kedacore.github.io/charts"
KEDA_VERSION = "2.20.0"
KEDA_NAMESPACE = "keda"
KEDA_SERVICE_ACCOUNT = "keda-operator"
S3_CSI_SERVICE_ACCOUNT = "s3-csi-driver-sa"
DISCOVERY_TAG = "karpenter.sh/discovery"

# EventBridge events Karpenter handles from its interruption queue (drain before the node goes).
INTERRUPTION_EVENTS: dict[str, events.EventPattern] = {
    "ScheduledChange": events.EventPattern(source=["aws.health"], detail_type=["AWS Health Event"]),
    "SpotInterruption": events.EventPattern(source=["aws.ec2"], detail_type=["EC2 Spot Instance Interruption Warning"]),
    "Rebalance": events.EventPattern(source=["aws.ec2"], detail_type=["EC2 Instance Rebalance Recommendation"]),
    "StateChange": events.EventPattern(source=["aws.ec2"], detail_type=["EC2 Instance State-change Notification"]),
}


def pod_identity_role(scope: Construct, cid: str, description: str) -> iam.Role:
    """A role that EKS Pod Identity may hand to one service account."""
    role = iam.Role(scope, cid, assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com"), description=description)
    role.assume_role_policy.add_statements(
        iam.PolicyStatement(actions=["sts:TagSession"], principals=[iam.ServicePrincipal("pods.eks.amazonaws.com")])
    )
    return role


MAX_AZS = 3
"""More AZs, more spot capacity pools. An environment-agnostic synth (no account/region) shows 2."""

INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApiEndpoint": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDockerEndpoint": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "StsEndpoint": ec2.InterfaceVpcEndpointAwsService.STS,
}
"""Optional (``cluster.interface_endpoints``): image manifests/auth and credential calls without the NAT."""


KARPENTER_LAUNCHED_KINDS = (
    "fleet",
    "instance",
    "volume",
    "network-interface",
    "launch-template",
    "spot-instances-request",
)
"""EC2 resources Karpenter creates and tags (upstream controller policy)."""


NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
)
"""The EKS-documented managed policies of a node role (kubelet, VPC CNI, image pulls, SSM)."""


class Cluster(Construct):
    """The cluster and what runs in it; each step below is one method, called in dependency order."""

    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: Config,
        layout: ResourceLayout,
        storage: Storage,
        messaging: Messaging,
        table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, cid)
        self.cluster_name = layout.cluster_name
        self._network(storage)
        self._control_plane(config, layout)
        self._interface_endpoints(enabled=config.cluster.interface_endpoints)
        self._karpenter(layout)
        self._keda(messaging)
        self._mountpoint(config, storage)
        self._runtime_releases(config, layout, storage=storage, messaging=messaging, table=table)
        self._outputs()

    def _network(self, storage: Storage) -> None:
        """3 AZs (more spot pools), one NAT gateway, S3 gateway endpoint (docs/cost.md), a group Karpenter discovers."""
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=MAX_AZS,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=18),
            ],
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_s3(storage.access_logs, "vpc-flow-logs/"),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )
        # Image layers (ECR keeps them in S3) and model reads are the big transfers: the free gateway
        # endpoint keeps them off the NAT gateway ($0.045/GB).
        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3Endpoint",
            service=ec2.GatewayVpcEndpointAwsService.S3,
            subnets=[ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)],
        )
        for subnet in self.vpc.private_subnets:
            cdk.Tags.of(subnet).add(DISCOVERY_TAG, self.cluster_name)
            cdk.Tags.of(subnet).add("kubernetes.io/role/internal-elb", "1")
        for subnet in self.vpc.public_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/elb", "1")

        # Karpenter nodes get this group (discovery tag); it is also attached to the control plane
        # ENIs, and it and the EKS cluster security group accept each other's traffic (kubelet,
        # webhooks, CoreDNS on the system nodes).
        self.node_security_group = ec2.SecurityGroup(
            self,
            "NodeSecurityGroup",
            vpc=self.vpc,
            description=f"{self.cluster_name}: control plane and Karpenter nodes",
            allow_all_outbound=True,
        )
        self.node_security_group.add_ingress_rule(
            self.node_security_group, ec2.Port.all_traffic(), "nodes and control plane among themselves"
        )
        cdk.Tags.of(self.node_security_group).add(DISCOVERY_TAG, self.cluster_name)

    def _control_plane(self, config: Config, layout: ResourceLayout) -> None:
        """EKS with node groups (not Auto Mode), security group links, admin access, system nodes, Pod Identity."""
        self.kubectl_layer = kubectl_layer(self, "KubectlLayer", config.cluster.kubernetes_version)
        self.cluster = eks.Cluster(
            self,
            "Eks",
            cluster_name=self.cluster_name,
            version=eks.KubernetesVersion.of(config.cluster.kubernetes_version),
            vpc=self.vpc,
            vpc_subnets=[ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)],
            security_group=self.node_security_group,
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            # Private unless the config names the networks that may reach the API from outside.
            endpoint_access=(
                eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*config.cluster.endpoint_public_cidrs)
                if config.cluster.endpoint_public_cidrs
                else eks.EndpointAccess.PRIVATE
            ),
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
            kubectl_provider_options=eks.KubectlProviderOptions(kubectl_layer=self.kubectl_layer),
        )
        ec2.CfnSecurityGroupIngress(
            self,
            "ClusterSgFromNodes",
            group_id=self.cluster.cluster_security_group_id,
            source_security_group_id=self.node_security_group.security_group_id,
            ip_protocol="-1",
            description="Karpenter nodes to the EKS cluster security group (system nodes, control plane)",
        )
        # A separate ingress resource: inline rules would make the group depend on the cluster (cycle).
        ec2.CfnSecurityGroupIngress(
            self,
            "NodesFromClusterSg",
            group_id=self.node_security_group.security_group_id,
            source_security_group_id=self.cluster.cluster_security_group_id,
            ip_protocol="-1",
            description="EKS cluster security group (system nodes, control plane) to Karpenter nodes",
        )
        admin = cdk.Stack.of(self).node.try_get_context("admin_principal_arn")
        if admin:
            self.cluster.grant_cluster_admin("WorkstationAdmin", admin)

        self.system_nodes = self.cluster.add_nodegroup_capacity(
            "System",
            nodegroup_name=layout.system_nodegroup_name,
            instance_types=[ec2.InstanceType(config.cluster.system_instance_type)],
            capacity_type=eks.CapacityType.ON_DEMAND,
            ami_type=eks.NodegroupAmiType.BOTTLEROCKET_X86_64,
            min_size=config.cluster.system_nodes,
            desired_size=config.cluster.system_nodes,
            max_size=config.cluster.system_nodes + 1,
            labels={"sdeks.io/pool": "system"},
        )
        self.pod_identity_agent = eks.Addon(
            self, "PodIdentityAgent", cluster=self.cluster, addon_name="eks-pod-identity-agent"
        )
        # The VPC CNI as a managed add-on with its network policy agent on, so the chart's NetworkPolicy
        # (only the agent's metrics port admitted) is enforced; OVERWRITE adopts the self-managed install.
        self.vpc_cni = eks.Addon(
            self,
            "VpcCni",
            cluster=self.cluster,
            addon_name="vpc-cni",
            configuration_values={"enableNetworkPolicy": "true"},
        )
        cast(cdk.CfnResource, self.vpc_cni.node.default_child).add_property_override("ResolveConflicts", "OVERWRITE")

    def _interface_endpoints(self, *, enabled: bool) -> None:
        """Optional ECR and STS endpoints in the private subnets, reachable on 443 from the nodes only."""
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        if not enabled:
            return
        group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description=f"{self.cluster_name}: interface endpoints, HTTPS from the nodes",
            allow_all_outbound=False,
        )
        group.add_ingress_rule(self.node_security_group, ec2.Port.tcp(443), "Karpenter nodes and control plane")
        group.add_ingress_rule(
            ec2.Peer.security_group_id(self.cluster.cluster_security_group_id),
            ec2.Port.tcp(443),
            "system nodes (EKS cluster security group)",
        )
        # Children of this construct, not of the VPC: the EKS cluster waits for the VPC's children, and
        # these wait for the cluster's security group (a cycle if they were the VPC's).
        for cid, service in INTERFACE_ENDPOINTS.items():
            self.interface_endpoints[cid] = ec2.InterfaceVpcEndpoint(
                self,
                cid,
                vpc=self.vpc,
                service=service,
                subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
                private_dns_enabled=True,
                security_groups=[group],
                open=False,
            )

    def _karpenter(self, layout: ResourceLayout) -> None:
        """GPU node role and access entry, interruption queue and its rules, controller role, the chart."""
        self.node_role = iam.Role(
            self,
            "KarpenterNodeRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"{self.cluster_name}: GPU nodes launched by Karpenter",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(n) for n in NODE_MANAGED_POLICIES],
        )
        eks.AccessEntry(
            self,
            "KarpenterNodeAccess",
            cluster=self.cluster,
            principal=self.node_role.role_arn,
            access_entry_type=eks.AccessEntryType.EC2_LINUX,
            access_policies=[],
        )
        self.interruption_queue = sqs.Queue(
            self,
            "KarpenterInterruptions",
            queue_name=layout.interruption_queue_name,
            retention_period=Duration.minutes(5),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        for rid, pattern in INTERRUPTION_EVENTS.items():
            events.Rule(
                self, f"Karpenter{rid}", event_pattern=pattern, targets=[targets.SqsQueue(self.interruption_queue)]
            )
        self.karpenter_role = pod_identity_role(
            self, "KarpenterControllerRole", f"{self.cluster_name}: Karpenter controller"
        )
        self.karpenter_policy = karpenter_controller_policy(
            self, cluster_name=self.cluster_name, interruption_queue=self.interruption_queue, node_role=self.node_role
        )
        self.karpenter_policy.attach_to_role(self.karpenter_role)
        self.karpenter_identity = self._associate(
            "KarpenterIdentity", KARPENTER_NAMESPACE, KARPENTER_SERVICE_ACCOUNT, self.karpenter_role
        )
        self.karpenter = self._system_chart(
            "Karpenter",
            identities=[self.karpenter_identity],
            chart="karpenter",
            repository=KARPENTER_CHART,
            version=KARPENTER_VERSION,
            namespace=KARPENTER_NAMESPACE,
            values={
                "serviceAccount": {"name": KARPENTER_SERVICE_ACCOUNT},
                "settings": {
                    "clusterName": self.cluster.cluster_name,
                    "clusterEndpoint": self.cluster.cluster_endpoint,
                    "interruptionQueue": self.interruption_queue.queue_name,
                },
                "controller": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
            },
        )

    def _keda(self, messaging: Messaging) -> None:
        """KEDA, whose operator identity may read the depth of the runtime queues and nothing else."""
        self.keda_role = pod_identity_role(self, "KedaOperatorRole", f"{self.cluster_name}: KEDA reads queue depth")
        self.keda_role.add_to_policy(
            iam.PolicyStatement(
                sid="QueueDepth",
                actions=["sqs:GetQueueAttributes"],
                resources=[rq.queue.queue_arn for rq in messaging.runtime_queues.values()],
            )
        )
        self.keda_identity = self._associate("KedaIdentity", KEDA_NAMESPACE, KEDA_SERVICE_ACCOUNT, self.keda_role)
        self.keda = self._system_chart(
            "Keda",
            identities=[self.keda_identity],
            chart="keda",
            repository=KEDA_REPOSITORY,
            version=KEDA_VERSION,
            namespace=KEDA_NAMESPACE,
            values={"serviceAccount": {"operator": {"name": KEDA_SERVICE_ACCOUNT}}},
        )

    def _mountpoint(self, config: Config, storage: Storage) -> None:
        """Mountpoint for S3 CSI driver (model volumes); its identity reads each runtime's model prefix."""
        self.s3_csi_role = pod_identity_role(self, "S3CsiRole", f"{self.cluster_name}: Mountpoint reads models")
        for runtime in config.runtimes:
            bucket = storage.model_bucket_for(config, runtime.name)
            self.s3_csi_role.add_to_policy(
                iam.PolicyStatement(
                    sid=f"ListModels{_sid(runtime.name)}", actions=["s3:ListBucket"], resources=[bucket.bucket_arn]
                )
            )
            self.s3_csi_role.add_to_policy(
                iam.PolicyStatement(
                    sid=f"ReadModels{_sid(runtime.name)}",
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(f"{runtime.model.prefix}/*")],
                )
            )
        self.s3_csi = eks.Addon(self, "S3Csi", cluster=self.cluster, addon_name="aws-mountpoint-s3-csi-driver")
        self.s3_csi_identity = self._associate("S3CsiIdentity", "kube-system", S3_CSI_SERVICE_ACCOUNT, self.s3_csi_role)
        # The driver's pods must not start without their identity (mounts would fail with the node's).
        self.s3_csi.node.add_dependency(self.system_nodes, self.s3_csi_identity)

    def _runtime_releases(
        self,
        config: Config,
        layout: ResourceLayout,
        *,
        storage: Storage,
        messaging: Messaging,
        table: dynamodb.ITable,
    ) -> None:
        """One ``helm/sd-on-eks`` release per runtime, each with its own Pod Identity role."""
        stack = cdk.Stack.of(self)
        self.chart_asset = s3_assets.Asset(self, "SdOnEksChart", path=str(CHART_DIR), exclude=["ci", "*.md"])
        self.images = Images(self, "Images", config=config)
        self.namespace = layout.namespace
        self.runtime_roles: dict[str, iam.Role] = {}
        self.runtime_releases: dict[str, eks.HelmChart] = {}
        for release_layout in layout.releases:
            runtime = release_layout.runtime
            name = runtime.name
            queue = messaging.runtime_queues[name].queue
            model_bucket = storage.model_bucket_for(config, name)
            role = pod_identity_role(self, f"{name}Role", f"{self.cluster_name}: runtime {name} (queue agent)")
            for statement in runtime_statements(
                config,
                runtime.name,
                queue_arn=queue.queue_arn,
                output_bucket=storage.output_bucket,
                results_topic_arn=messaging.results_topic.topic_arn,
                table_arn=table.table_arn,
                model_bucket=model_bucket,
            ):
                role.add_to_policy(statement)
            identity = self._associate(f"{name}Identity", self.namespace, release_layout.service_account, role)
            self.runtime_roles[name] = role
            release = eks.HelmChart(
                self,
                f"{name}Release",
                cluster=self.cluster,
                chart_asset=self.chart_asset,
                release=release_layout.release_name,
                namespace=self.namespace,
                create_namespace=True,
                wait=False,
                timeout=Duration.minutes(10),
                values=helm_values(
                    config,
                    runtime,
                    queue_url=queue.queue_url,
                    output_bucket=storage.output_bucket.bucket_name,
                    results_topic_arn=messaging.results_topic.topic_arn,
                    task_table=table.table_name,
                    region=stack.region,
                    model_bucket=model_bucket.bucket_name,
                    cluster_name=self.cluster.cluster_name,
                    node_role=self.node_role.role_name,
                    agent_image=self.images.agent,
                    runtime_image=self.images.runtime(runtime),
                ),
            )
            # CRDs (NodePool, EC2NodeClass, ScaledObject) and the CSI driver must exist first, and so must
            # every identity the release's pods use: its own (agent), KEDA's (scaling), the driver's (model
            # volume). Releases go one after another (they share the namespace the first one creates).
            release.node.add_dependency(self.karpenter, self.keda, self.s3_csi, self.vpc_cni)
            release.node.add_dependency(identity, self.keda_identity, self.s3_csi_identity)
            if self.runtime_releases:
                release.node.add_dependency(list(self.runtime_releases.values())[-1])
            self.runtime_releases[name] = release

    def _outputs(self) -> None:
        cdk.CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        cdk.CfnOutput(
            self,
            "KubeconfigCommand",
            value=f"aws eks update-kubeconfig --name {self.cluster.cluster_name} --region {cdk.Stack.of(self).region}",
        )

    def _system_chart(
        self,
        cid: str,
        *,
        namespace: str,
        values: dict,
        identities: list[eks.CfnPodIdentityAssociation],
        **chart: str,
    ) -> eks.HelmChart:
        """A cluster add-on chart: on the system nodes (never the GPU nodes it may manage), after Pod Identity.

        ``identities``: the associations its pods use. A pod that starts before its association runs with
        the node's role: Karpenter crash-loops, KEDA silently reads nothing and never scales.
        """
        release = eks.HelmChart(
            self,
            cid,
            cluster=self.cluster,
            release=chart["chart"],
            namespace=namespace,
            wait=True,
            timeout=Duration.minutes(10),
            values={**values, "nodeSelector": {"sdeks.io/pool": "system"}},
            **chart,
        )
        release.node.add_dependency(self.pod_identity_agent, self.system_nodes, *identities)
        return release

    def _associate(
        self, cid: str, namespace: str, service_account: str, role: iam.IRole
    ) -> eks.CfnPodIdentityAssociation:
        association = eks.CfnPodIdentityAssociation(
            self,
            cid,
            cluster_name=self.cluster.cluster_name,
            namespace=namespace,
            service_account=service_account,
            role_arn=role.role_arn,
        )
        association.node.add_dependency(self.pod_identity_agent)
        return association


def karpenter_controller_policy(
    scope: Construct, *, cluster_name: str, interruption_queue: sqs.IQueue, node_role: iam.IRole
) -> iam.Policy:
    """Karpenter v1 controller policy (upstream getting-started CloudFormation), scoped to this cluster."""
    stack = cdk.Stack.of(scope)
    p, r, a = stack.partition, stack.region, stack.account
    name = cluster_name
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{name}": "owned", "aws:RequestTag/eks:eks-cluster-name": name}
    ec2_arn = f"arn:{p}:ec2:{r}"
    statements = [
        iam.PolicyStatement(
            sid="AllowScopedEC2InstanceAccessActions",
            actions=["ec2:RunInstances", "ec2:CreateFleet"],
            resources=[
                f"{ec2_arn}::image/*",
                f"{ec2_arn}::snapshot/*",
                f"{ec2_arn}:*:security-group/*",
                f"{ec2_arn}:*:subnet/*",
                f"{ec2_arn}:*:capacity-reservation/*",
            ],
        ),
        iam.PolicyStatement(
            sid="AllowScopedEC2LaunchTemplateAccessActions",
            actions=["ec2:RunInstances", "ec2:CreateFleet"],
            resources=[f"{ec2_arn}:*:launch-template/*"],
            conditions={
                "StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{name}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedEC2InstanceActionsWithTags",
            actions=["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            resources=[f"{ec2_arn}:*:{kind}/*" for kind in (*KARPENTER_LAUNCHED_KINDS, "capacity-reservation")],
            conditions={
                "StringEquals": owned,
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedResourceCreationTagging",
            actions=["ec2:CreateTags"],
            resources=[f"{ec2_arn}:*:{kind}/*" for kind in KARPENTER_LAUNCHED_KINDS],
            conditions={
                "StringEquals": {
                    **owned,
                    "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedResourceTagging",
            actions=["ec2:CreateTags"],
            resources=[f"{ec2_arn}:*:instance/*"],
            conditions={
                "StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{name}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": name},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                },
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedDeletion",
            actions=["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            resources=[f"{ec2_arn}:*:instance/*", f"{ec2_arn}:*:launch-template/*"],
            conditions={
                "StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{name}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowRegionalReadActions",
            actions=[
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeCapacityReservations",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets",
            ],
            resources=["*"],
            conditions={"StringEquals": {"aws:RequestedRegion": r}},
        ),
        iam.PolicyStatement(
            sid="AllowSSMReadActions",
            actions=["ssm:GetParameter"],
            resources=[f"arn:{p}:ssm:{r}::parameter/aws/service/*"],
        ),
        iam.PolicyStatement(sid="AllowPricingReadActions", actions=["pricing:GetProducts"], resources=["*"]),
        iam.PolicyStatement(
            sid="AllowInterruptionQueueActions",
            actions=["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            resources=[interruption_queue.queue_arn],
        ),
        iam.PolicyStatement(
            sid="AllowPassingInstanceRole",
            actions=["iam:PassRole"],
            resources=[node_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileCreationActions",
            actions=["iam:CreateInstanceProfile"],
            resources=[f"arn:{p}:iam::{a}:instance-profile/*"],
            conditions={
                "StringEquals": {**owned, "aws:RequestTag/topology.kubernetes.io/region": r},
                "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileTagActions",
            actions=["iam:TagInstanceProfile"],
            resources=[f"arn:{p}:iam::{a}:instance-profile/*"],
            conditions={
                "StringEquals": {
                    f"aws:ResourceTag/kubernetes.io/cluster/{name}": "owned",
                    "aws:ResourceTag/topology.kubernetes.io/region": r,
                    **owned,
                    "aws:RequestTag/topology.kubernetes.io/region": r,
                },
                "StringLike": {
                    "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                },
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileActions",
            actions=[
                "iam:AddRoleToInstanceProfile",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:DeleteInstanceProfile",
            ],
            resources=[f"arn:{p}:iam::{a}:instance-profile/*"],
            conditions={
                "StringEquals": {
                    f"aws:ResourceTag/kubernetes.io/cluster/{name}": "owned",
                    "aws:ResourceTag/topology.kubernetes.io/region": r,
                },
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowInstanceProfileReadActions",
            actions=["iam:GetInstanceProfile", "iam:ListInstanceProfiles"],
            resources=[f"arn:{p}:iam::{a}:instance-profile/*"],
        ),
        iam.PolicyStatement(
            sid="AllowAPIServerEndpointDiscovery",
            actions=["eks:DescribeCluster"],
            resources=[f"arn:{p}:eks:{r}:{a}:cluster/{name}"],
        ),
    ]
    return iam.Policy(scope, "KarpenterControllerPolicy", statements=statements)


def _sid(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def runtime_statements(
    config: Config,
    runtime_name: str,
    *,
    queue_arn: str,
    output_bucket,
    results_topic_arn: str,
    table_arn: str,
    model_bucket,
) -> list[iam.PolicyStatement]:
    """What one runtime's pod (queue agent) may do: its queue, outputs, results, task rows, models, inputs."""
    runtime = config.runtime(runtime_name)
    statements = [
        iam.PolicyStatement(
            sid="OwnQueue",
            actions=[
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
            ],
            resources=[queue_arn],
        ),
        iam.PolicyStatement(
            sid="WriteOutputs",
            actions=["s3:PutObject", "s3:GetObject"],
            resources=[output_bucket.arn_for_objects("*")],
        ),
        iam.PolicyStatement(sid="PublishResults", actions=["sns:Publish"], resources=[results_topic_arn]),
        iam.PolicyStatement(
            sid="TaskRows",
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            resources=[table_arn],
        ),
        iam.PolicyStatement(sid="ListModels", actions=["s3:ListBucket"], resources=[model_bucket.bucket_arn]),
        iam.PolicyStatement(
            sid="ReadModels",
            actions=["s3:GetObject"],
            resources=[model_bucket.arn_for_objects(f"{runtime.model.prefix}/*")],
        ),
    ]
    if config.inputs.allowed_buckets:
        statements.append(
            iam.PolicyStatement(
                sid="ReadAllowedInputs",
                actions=["s3:GetObject"],
                resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{b}/*" for b in config.inputs.allowed_buckets],
            )
        )
    return statements
