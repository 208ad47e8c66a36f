#!/usr/bin/env bash
# Synthesize the CDK app with the pinned CDK CLI (3.x rejects this library's cloud assembly).
#   infra/synth.sh                      # config/default.yaml (or $SDEKS_CONFIG)
#   infra/synth.sh config/two-runtimes.yaml
# Extra arguments go to `cdk synth` (e.g. -q, -o DIR). No AWS credentials needed for synth.
set -euo pipefail
cd "$(dirname "$0")/.."
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
CDK_CLI="${CDK_CLI:-npx --yes aws-cdk@2.1148.1}"
config="${1:-${SDEKS_CONFIG:-config/default.yaml}}"
[[ $# -gt 0 ]] && shift
exec $CDK_CLI synth -c "config=$config" "$@"
