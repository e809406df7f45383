#!/usr/bin/env bash
# make deploy ENV=dev|staging|prod [PARAMS="Key=Value ..."]: deploys what `make package` built,
# with the environment's settings from infra/samconfig.toml.
#   1. the checks: the template linters (cfn-lint, its serverless rules, `sam validate --lint`
#      with the environment's config, checkov);
#   2. the plan (tools/scripts/deploy_plan.py): the environment exists, every bootstrap is an ELF
#      for the architecture the build recorded, and that architecture is the one deployed;
#   3. `sam deploy` of .aws-sam/build/template.yaml with the environment's config.
# DRY_RUN=1 prints the `sam deploy` command instead of running it. Needs AWS credentials for the
# account (the standard chain: AWS_PROFILE, SSO, environment) only for step 3.
set -euo pipefail
cd "$(dirname "$0")/../.."
env_name="${1:-}"
shift || true
if [ -z "$env_name" ]; then
  echo "usage: make deploy ENV=dev|staging|prod [PARAMS=\"Key=Value ...\"]" >&2
  exit 2
fi
config="${PAYCYCLE_SAMCONFIG:-infra/samconfig.toml}"
build="${PAYCYCLE_BUILD_DIR:-.aws-sam/build}"
export SAM_CLI_TELEMETRY=0

if [ "${PAYCYCLE_DEPLOY_SKIP_CHECKS:-}" != 1 ]; then
  echo "==> deploy $env_name: checks"
  make --no-print-directory lint-template
  .venv/bin/sam validate --lint --template template.yaml --config-file "$config" --config-env "$env_name"
fi

echo "==> deploy $env_name: plan"
overrides=$(.venv/bin/python tools/scripts/deploy_plan.py "$config" "$env_name" "$build" "$@")
echo "parameters: $overrides"

cmd=(.venv/bin/sam deploy --config-file "$config" --config-env "$env_name"
  --template-file "$build/template.yaml" --parameter-overrides "$overrides")
if [ "${DRY_RUN:-}" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
echo "==> deploy $env_name: sam deploy"
"${cmd[@]}"
