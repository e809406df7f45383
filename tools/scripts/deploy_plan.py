"""The deploy's plan: which environment, which architecture, which parameters.

Reads infra/samconfig.toml (tomllib) and the record `make package` left beside its build
(paycycle-build.json), checks that every function's `bootstrap` is an ELF for that architecture
and that the build is of this template and commit, and prints the `--parameter-overrides` string
`sam deploy` gets: the environment's overrides, then `PARAMS` from the command line, then
`Architecture=<built>`, and `PgSchedulesState=DISABLED` when the stack does not exist yet (its PG
secret is a placeholder until README "Deploying" step 3). Any problem is one line on stderr and
exit status 2; nothing is deployed (tools/scripts/deploy.sh runs `sam deploy` only after this).

Whether the stack exists: CloudFormation's DescribeStacks (boto3, the SAM CLI's own dependency,
with the environment's region and your AWS credentials), or PAYCYCLE_STACK_EXISTS=yes|no.

usage: deploy_plan.py CONFIG ENV BUILD_DIR [Key=Value ...]
"""

import hashlib
import subprocess

import json
import os
import shlex
import sys
import tomllib

# ELF e_machine values (the System V ABI's registry): what Lambda's two architectures run.
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}
# Decided by the build (Architecture) or by the operator on the live stack (RenewScheduleState:
# samconfig must not reset it on every deploy; PARAMS may set it, as README step 4 does).
NOT_IN_SAMCONFIG = ("Architecture", "PgSchedulesState", "RenewScheduleState")
# infra/samconfig.toml ships placeholders; deploying one would send every Payple call with a
# Referer Payple does not know (AUTH0004/AUTH0007: every renewal unknown).
PLACEHOLDER_DOMAIN = "example.com"


def fail(message):
    print(f"deploy: {message}", file=sys.stderr)
    sys.exit(2)


def overrides(text):
    pairs = {}
    for item in shlex.split(text or ""):
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"parameter override {item!r} is not Key=Value")
        pairs[key] = value
    return pairs


def elf_machine(path):
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        fail(f"{path} is not an ELF executable")
    order = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], order)


def built_architecture(build_dir):
    record = os.path.join(build_dir, "paycycle-build.json")
    if not os.path.isfile(record):
        fail(f"no {record}: run `make package` (or ARCH=arm64 make package) first")
    with open(record) as f:
        built = json.load(f)
    arch = built.get("architecture")
    template = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "template.yaml")
    with open(template, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if built.get("template_sha256") not in (None, sha):
        fail("template.yaml changed since `make package` built this: run `make package` again")
    head = git_head()
    if built.get("commit") and head and built["commit"] != head:
        fail(f"the build is of commit {built['commit'][:12]}, the checkout is at {head[:12]}: run `make package` again")
    if arch not in ELF_MACHINES:
        fail(f"{record} names architecture {arch!r}; expected one of {sorted(ELF_MACHINES)}")
    bootstraps = sorted(
        os.path.join(build_dir, d, "bootstrap")
        for d in os.listdir(build_dir)
        if os.path.isfile(os.path.join(build_dir, d, "bootstrap"))
    )
    if not bootstraps:
        fail(f"{build_dir} holds no function bootstrap: run `make package` first")
    for path in bootstraps:
        machine = elf_machine(path)
        if machine != ELF_MACHINES[arch]:
            names = {v: k for k, v in ELF_MACHINES.items()}
            fail(f"{path} is built for {names.get(machine, hex(machine))}, the build record says {arch}: run `make package` again")
    return arch


def git_head():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def stack_exists(config, env, deploy):
    given = os.environ.get("PAYCYCLE_STACK_EXISTS")
    if given in ("yes", "no"):
        return given == "yes"
    region = deploy.get("region") or config.get(env, {}).get("global", {}).get("parameters", {}).get("region")
    try:
        import boto3
        from botocore.exceptions import ClientError

        boto3.client("cloudformation", region_name=region).describe_stacks(StackName=deploy["stack_name"])
        return True
    except ClientError as e:
        if "does not exist" in str(e):
            return False
        fail(f"could not ask CloudFormation whether {deploy['stack_name']} exists: {e}")
    except Exception as e:  # no credentials, no network: say so rather than guess
        fail(f"could not ask CloudFormation whether {deploy['stack_name']} exists: {e}")


def main(argv):
    if len(argv) < 4:
        fail("usage: deploy_plan.py CONFIG ENV BUILD_DIR [Key=Value ...]")
    config_path, env, build_dir, extra = argv[1], argv[2], argv[3], argv[4:]
    with open(config_path, "rb") as f:
        config = tomllib.load(f)
    envs = sorted(k for k, v in config.items() if isinstance(v, dict) and "deploy" in v)
    if env not in envs:
        fail(f"environment {env!r} is not in {config_path}; it has {', '.join(envs)}")
    deploy = config[env]["deploy"]["parameters"]
    params = overrides(deploy.get("parameter_overrides", ""))
    for key in NOT_IN_SAMCONFIG:
        if key in params:
            fail(f"{config_path} [{env}] names {key}; it must not (see the file's header)")
    for key, value in overrides(" ".join(shlex.quote(e) for e in extra)).items():
        if key == "Architecture":
            fail("Architecture comes from the build (ARCH=arm64 make package), not from PARAMS")
        params[key] = value
    for key, value in params.items():
        if PLACEHOLDER_DOMAIN in value:
            fail(f"{key}={value} is the placeholder from {config_path}: set your own (README \"Deploying\")")
    params["Architecture"] = built_architecture(build_dir)
    if "PgSchedulesState" not in params and not stack_exists(config, env, deploy):
        params["PgSchedulesState"] = "DISABLED"
    print(" ".join(f"{k}={shlex.quote(v)}" for k, v in params.items()))


if __name__ == "__main__":
    main(sys.argv)
