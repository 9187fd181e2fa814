"""Offline checks shared by the chart tests (helm/tests) and the kustomize tests
(k8s/tests): schema validation of rendered manifests against the Kubernetes OpenAPI
schemas that kubernetes-validate ships, and the assertions both deployments must pass
(one Deployment per target, probes, the restricted security context, ...).

No cluster is contacted.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]

# The Kubernetes versions every manifest is validated against: the oldest the chart
# supports well (native gRPC probes are GA since 1.27; 1.31 is the oldest still served
# by the big clouds) and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())

# Custom resources have no schema among Kubernetes' own: these are skipped on purpose
# (and only these; any other unknown kind fails). cert-manager's get the structural
# check of check_cert_manager below instead.
SKIPPED_CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}

# The targets of `atelier serve --target`, each one Deployment.
COMPONENTS = ("gateway", "auth", "image", "processing", "workflow", "user")
# gRPC ports, as in libs/common/src/config.rs.
GRPC_PORTS = {"auth": 50051, "image": 50052, "processing": 50053, "workflow": 50054, "user": 50055}
GATEWAY_PORT = 8080
ADMIN_PORT = 9464

# Mutual TLS between services: every pod reads its certificate from
# SERVICE_TLS_DIR/<component>/ (tls.crt, tls.key, ca.crt: a TLS Secret mounted read-only)
# and names itself by the URI SAN spiffe://atelier/<component> (libs/common identity.rs).
SERVICE_TLS_DIR = "/etc/atelier/tls"
# Owner and group may read: the group is the pod's fsGroup, so the non-root user can.
SERVICE_TLS_MODE = 0o440


def spiffe_id(name: str) -> str:
    return f"spiffe://atelier/{name}"


# What cert-manager.io/v1 accepts (its CRDs: Certificate spec fields, key usages, private
# key options; issuer types), for a structural check of the rendered custom resources.
CERTIFICATE_SPEC_FIELDS = {
    "additionalOutputFormats", "commonName", "dnsNames", "duration", "emailAddresses",
    "encodeUsagesInRequest", "ipAddresses", "isCA", "issuerRef", "keystores",
    "literalSubject", "nameConstraints", "otherNames", "privateKey", "renewBefore",
    "renewBeforePercentage", "revisionHistoryLimit", "secretName", "secretTemplate",
    "signatureAlgorithm", "subject", "uris", "usages",
}
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment",
    "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
    "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
    "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
}
PRIVATE_KEY_FIELDS = {
    "algorithm": {"RSA", "ECDSA", "Ed25519"},
    "encoding": {"PKCS1", "PKCS8"},
    "rotationPolicy": {"Never", "Always"},
    "size": None,
}
ISSUER_TYPES = {"acme", "ca", "selfSigned", "vault", "venafi"}
# Go's time.ParseDuration, as cert-manager reads duration and renewBefore.
GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")

# Environment variables that hold secrets: never in a ConfigMap, only from Secrets.
SECRET_VARS = {
    "DATABASE_URL",
    "REDIS_URL",
    "FAL_KEY",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "URL_SIGNING_KEY",
}

# Who calls whom (DESIGN.md): the gateway calls every service; services call auth for
# its keys and session state; image calls processing (does a result's job exist) and
# user (quotas); processing calls image, workflow and user; user calls image,
# processing, workflow and auth (services/user/src/lib.rs).
REQUIRED_CALLS = {
    "gateway": {"auth", "image", "processing", "workflow", "user"},
    "image": {"auth", "processing", "user"},
    "workflow": {"auth"},
    "processing": {"auth", "image", "workflow", "user"},
    "user": {"auth", "image", "processing", "workflow"},
}


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate(docs: Iterable[dict[str, Any]], source: str) -> tuple[list[str], list[str]]:
    """Validates every document strictly (unknown fields are errors) against each of
    KUBE_VERSIONS. Returns (errors, skipped) as readable lines."""
    errors: list[str] = []
    skipped: list[str] = []
    for doc in docs:
        name = f"{source}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in SKIPPED_CRDS:
            skipped.append(f"{name} (custom resource {doc['apiVersion']}, no built-in schema)")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError as err:
                errors.append(f"{name}: {err.message}")
            except kubernetes_validate.ValidationError as err:
                path = "/".join(str(p) for p in err.absolute_path)
                errors.append(f"{name} (Kubernetes {version}) at /{path}: {err.message}")
    return errors, skipped


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def component_of(doc: dict[str, Any]) -> str | None:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {component_of(d): d for d in by_kind(docs, "Deployment")}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in match.items()) and not selector.get(
        "matchExpressions"
    )



def check_restricted(pod_spec: dict[str, Any], where: str) -> list[str]:
    """Pod Security "restricted" at pod and container level."""
    problems = []
    pod = pod_spec.get("securityContext", {})
    if pod.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    if pod.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    if pod.get("runAsUser", 1) == 0:
        problems.append(f"{where}: pod runs as root")
    if pod_spec.get("hostNetwork") or pod_spec.get("hostPID") or pod_spec.get("hostIPC"):
        problems.append(f"{where}: uses host namespaces")
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        sc = container.get("securityContext", {})
        cw = f"{where} container {container['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cw}: readOnlyRootFilesystem is not true")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{cw}: capabilities do not drop ALL")
        if sc.get("capabilities", {}).get("add"):
            problems.append(f"{cw}: adds capabilities")
        if sc.get("privileged"):
            problems.append(f"{cw}: privileged")
        if sc.get("runAsUser", 1) == 0:
            problems.append(f"{cw}: runs as root")
        if sc.get("runAsNonRoot") is False:
            problems.append(f"{cw}: runAsNonRoot is false")
    for volume in pod_spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"{where}: hostPath volume {volume['name']}")
    mounts = {m["mountPath"] for c in pod_spec["containers"] for m in c.get("volumeMounts", [])}
    if "/tmp" not in mounts:
        problems.append(f"{where}: no writable /tmp (read-only root filesystem)")
    return problems


def check_deployment(component: str, deploy: dict[str, Any]) -> list[str]:
    """One target's Deployment: `serve --target=<component>`, probes, resources,
    restricted security context."""
    where = f"Deployment {deploy['metadata']['name']}"
    problems = []
    spec = deploy["spec"]["template"]["spec"]
    containers = spec["containers"]
    # The image pods may carry a clamd sidecar (scanner.enabled); the target comes first.
    sidecars = [c["name"] for c in containers[1:]]
    if len(containers) < 1 or sidecars not in ([], ["clamd"] if component == "image" else []):
        return [f"{where}: expected one container (and clamd beside image), found {[c['name'] for c in containers]}"]
    container = containers[0]
    command = container.get("command", []) + container.get("args", [])
    if command != ["serve", f"--target={component}"]:
        problems.append(f"{where}: runs {command}, expected serve --target={component}")
    for probe in ("livenessProbe", "readinessProbe"):
        if probe not in container:
            problems.append(f"{where}: no {probe}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports.get("admin") != ADMIN_PORT:
        problems.append(f"{where}: admin port is {ports.get('admin')}, expected {ADMIN_PORT}")
    if component == "gateway":
        if ports.get("http") != GATEWAY_PORT:
            problems.append(f"{where}: http port is {ports.get('http')}")
        for probe in ("livenessProbe", "readinessProbe"):
            http = container.get(probe, {}).get("httpGet")
            if not http or http.get("path") not in ("/healthz", "/readyz"):
                problems.append(f"{where}: {probe} is not an HTTP probe on /healthz or /readyz")
    else:
        if ports.get("grpc") != GRPC_PORTS[component]:
            problems.append(f"{where}: grpc port is {ports.get('grpc')}, expected {GRPC_PORTS[component]}")
        # The gRPC port speaks TLS only and the kubelet's native gRPC probe cannot: the
        # probes ask the admin port, whose /readyz checks the gRPC listener over TLS.
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            if "grpc" in container.get(probe, {}):
                problems.append(f"{where}: {probe} is a native gRPC probe, which cannot speak TLS")
            http = container.get(probe, {}).get("httpGet")
            if not http or http.get("path") != path or http.get("port") not in ("admin", ADMIN_PORT):
                problems.append(f"{where}: {probe} is not an HTTP probe on {path} at the admin port")
    resources = container.get("resources", {})
    if not resources.get("requests", {}).get("cpu") or not resources.get("requests", {}).get("memory"):
        problems.append(f"{where}: no cpu and memory requests")
    if not resources.get("limits", {}).get("memory"):
        problems.append(f"{where}: no memory limit")
    problems += check_restricted(spec, where)
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: mounts a service account token it does not need")
    if not spec.get("topologySpreadConstraints") and deploy["spec"].get("replicas", 2) > 1:
        problems.append(f"{where}: no topology spread constraints")
    return problems


def env_names(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def check_config_maps(docs: list[dict[str, Any]], secret_values: Iterable[str] = ()) -> list[str]:
    """No secret variable and no secret value in any ConfigMap."""
    problems = []
    values = [v for v in secret_values if v]
    for cm in by_kind(docs, "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            if key in SECRET_VARS:
                problems.append(f"ConfigMap {cm['metadata']['name']} holds the secret {key}")
            if re.search(r"://[^/@\s]*:[^/@\s]+@", str(value)):
                problems.append(f"ConfigMap {cm['metadata']['name']} {key} has credentials in a URL")
            for secret in values:
                if secret in str(value):
                    problems.append(f"ConfigMap {cm['metadata']['name']} {key} holds a Secret's value")
    return problems


def check_cluster_addresses(config: dict[str, str], service_name) -> list[str]:
    """Every service binds 0.0.0.0:<port> and is reached at https://<service>:<port>
    (mutual TLS: plain http URLs are refused at start-up)."""
    problems = []
    for component, port in GRPC_PORTS.items():
        upper = component.upper()
        if config.get(f"{upper}_GRPC_ADDR") != f"0.0.0.0:{port}":
            problems.append(f"{upper}_GRPC_ADDR is {config.get(f'{upper}_GRPC_ADDR')!r}")
        expected = f"https://{service_name(component)}:{port}"
        if config.get(f"{upper}_URL") != expected:
            problems.append(f"{upper}_URL is {config.get(f'{upper}_URL')!r}, expected {expected!r}")
    if config.get("GATEWAY_ADDR") != f"0.0.0.0:{GATEWAY_PORT}":
        problems.append(f"GATEWAY_ADDR is {config.get('GATEWAY_ADDR')!r}")
    if config.get("ADMIN_ADDR") != f"0.0.0.0:{ADMIN_PORT}":
        problems.append(f"ADMIN_ADDR is {config.get('ADMIN_ADDR')!r}")
    if config.get("LOG_FORMAT") != "json":
        problems.append(f"LOG_FORMAT is {config.get('LOG_FORMAT')!r}, expected json")
    return problems


def check_services(docs: list[dict[str, Any]], service_name) -> list[str]:
    problems = []
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    for component in COMPONENTS:
        name = service_name(component)
        service = services.get(name)
        if service is None:
            problems.append(f"no Service {name}")
            continue
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        expected = GATEWAY_PORT if component == "gateway" else GRPC_PORTS[component]
        if expected not in ports.values():
            problems.append(f"Service {name} does not serve port {expected}")
        if ports.get("admin") != ADMIN_PORT:
            problems.append(f"Service {name} has no admin port {ADMIN_PORT}")
    return problems


def _peer_components(peers: list[dict[str, Any]]) -> set[str]:
    found = set()
    for peer in peers:
        labels = peer.get("podSelector", {}).get("matchLabels", {})
        if "app.kubernetes.io/component" in labels and "namespaceSelector" not in peer:
            found.add(labels["app.kubernetes.io/component"])
    return found


def check_network_policies(docs: list[dict[str, Any]]) -> list[str]:
    """A default deny, and the paths of the design allowed both ways."""
    problems = []
    policies = by_kind(docs, "NetworkPolicy")
    default_deny = [
        p
        for p in policies
        if set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        and "app.kubernetes.io/component" not in p["spec"]["podSelector"].get("matchLabels", {})
    ]
    if not default_deny:
        problems.append("no default-deny NetworkPolicy (Ingress and Egress, no rules, every pod)")
    per_component = {}
    for policy in policies:
        component = policy["spec"]["podSelector"].get("matchLabels", {}).get(
            "app.kubernetes.io/component"
        )
        if component:
            per_component[component] = policy
    for component in COMPONENTS:
        if component not in per_component:
            problems.append(f"no NetworkPolicy for {component}")
    if problems:
        return problems
    egress = {c: [] for c in COMPONENTS}
    ingress = {c: [] for c in COMPONENTS}
    for component in COMPONENTS:
        for rule in per_component[component]["spec"].get("egress", []):
            egress[component] += list(_peer_components(rule.get("to", [])))
        for rule in per_component[component]["spec"].get("ingress", []):
            ingress[component] += list(_peer_components(rule.get("from", [])))
    for caller, callees in REQUIRED_CALLS.items():
        for callee in callees:
            if callee not in egress[caller]:
                problems.append(f"{caller} may not connect to {callee}")
            if caller not in ingress[callee]:
                problems.append(f"{callee} does not accept {caller}")
    # Nobody but the gateway takes traffic from outside the release.
    for component in COMPONENTS:
        if component == "gateway":
            continue
        for rule in per_component[component]["spec"].get("ingress", []):
            ports = {str(p.get("port")) for p in rule.get("ports", [])}
            outside = [p for p in rule.get("from", []) if "podSelector" not in p or "namespaceSelector" in p]
            if outside and not ports <= {"admin", str(ADMIN_PORT)}:
                problems.append(f"{component} accepts traffic from outside the release on {ports}")
    # fal (HTTPS to the internet) only from processing and workflow.
    for component in COMPONENTS:
        internet = [
            rule
            for rule in per_component[component]["spec"].get("egress", [])
            for peer in rule.get("to", [])
            if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
            and any(p.get("port") == 443 for p in rule.get("ports", []))
        ]
        if component == "processing" and not internet:
            problems.append("processing may not reach fal on 443")
        if component in ("gateway", "auth", "user") and internet:
            problems.append(f"{component} may reach the internet on 443")
    # Every policy lets DNS through.
    for component in COMPONENTS:
        dns = any(
            p.get("port") == 53
            for rule in per_component[component]["spec"].get("egress", [])
            for p in rule.get("ports", [])
        )
        if not dns:
            problems.append(f"{component} may not resolve names (DNS)")
    return problems


def check_cert_manager(docs: list[dict[str, Any]]) -> list[str]:
    """The cert-manager resources kubernetes-validate has no schema for, checked against
    what cert-manager.io/v1 accepts: known Certificate fields, key usages, private key
    options and durations; an Issuer of exactly one known type."""
    problems = []
    for doc in docs:
        if doc.get("apiVersion") != "cert-manager.io/v1":
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = doc.get("spec") or {}
        if doc["kind"] == "Issuer":
            types = set(spec) & ISSUER_TYPES
            if len(types) != 1 or set(spec) - ISSUER_TYPES:
                problems.append(f"{name}: spec {sorted(spec)} is not one issuer type of {sorted(ISSUER_TYPES)}")
            if "ca" in spec and not spec["ca"].get("secretName"):
                problems.append(f"{name}: a CA issuer without ca.secretName")
            continue
        if doc["kind"] != "Certificate":
            problems.append(f"{name}: unexpected cert-manager kind")
            continue
        if unknown := set(spec) - CERTIFICATE_SPEC_FIELDS:
            problems.append(f"{name}: unknown fields {sorted(unknown)}")
        if not spec.get("secretName") or not spec.get("issuerRef", {}).get("name"):
            problems.append(f"{name}: secretName and issuerRef.name are required")
        if unknown := set(spec.get("issuerRef", {})) - {"name", "kind", "group"}:
            problems.append(f"{name}: unknown issuerRef fields {sorted(unknown)}")
        if unknown := set(spec.get("usages", [])) - KEY_USAGES:
            problems.append(f"{name}: unknown usages {sorted(unknown)}")
        for field, value in (spec.get("privateKey") or {}).items():
            if field not in PRIVATE_KEY_FIELDS:
                problems.append(f"{name}: unknown privateKey field {field}")
            elif PRIVATE_KEY_FIELDS[field] is not None and value not in PRIVATE_KEY_FIELDS[field]:
                problems.append(f"{name}: privateKey.{field} {value!r} is not one of {sorted(PRIVATE_KEY_FIELDS[field])}")
        for field in ("duration", "renewBefore"):
            if field in spec and not GO_DURATION.match(str(spec[field])):
                problems.append(f"{name}: {field} {spec[field]!r} is not a Go duration")
        for field in ("dnsNames", "ipAddresses", "uris", "usages"):
            if not isinstance(spec.get(field, []), list):
                problems.append(f"{name}: {field} is not a list")
        for address in spec.get("ipAddresses", []):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                problems.append(f"{name}: {address!r} is not an IP address")
    return problems


def check_service_tls(
    docs: list[dict[str, Any]], config: dict[str, str], secret_name: Callable[[str], str]
) -> list[str]:
    """Every Deployment mounts its component's certificate Secret (secret_name) read-only
    at SERVICE_TLS_DIR/<component>, readable by the pod's fsGroup; the ConfigMap points
    there, generates nothing and uses https URLs."""
    problems = []
    if config.get("SERVICE_TLS_DIR") != SERVICE_TLS_DIR:
        problems.append(f"SERVICE_TLS_DIR is {config.get('SERVICE_TLS_DIR')!r}, expected {SERVICE_TLS_DIR!r}")
    if config.get("SERVICE_TLS_GENERATE") != "false":
        problems.append(
            f"SERVICE_TLS_GENERATE is {config.get('SERVICE_TLS_GENERATE')!r}: each pod would make a CA of its own"
        )
    if not str(config.get("SERVICE_TLS_RELOAD_SECS", "")).isdigit():
        problems.append(f"SERVICE_TLS_RELOAD_SECS is {config.get('SERVICE_TLS_RELOAD_SECS')!r}")
    for key, value in config.items():
        if key.endswith("_URL") and key.removesuffix("_URL").lower() in GRPC_PORTS and not value.startswith("https://"):
            problems.append(f"{key} is {value!r}: services are reached over https only")
    for component, deploy in deployments(docs).items():
        where = f"Deployment {deploy['metadata']['name']}"
        spec = deploy["spec"]["template"]["spec"]
        path = f"{SERVICE_TLS_DIR}/{component}"
        mounts = [m for m in spec["containers"][0].get("volumeMounts", []) if m["mountPath"] == path]
        if len(mounts) != 1:
            problems.append(f"{where}: nothing mounted at {path}")
            continue
        if mounts[0].get("readOnly") is not True or mounts[0].get("subPath"):
            problems.append(f"{where}: {path} is not a whole read-only mount (a subPath never sees a renewal)")
        volume = next((v for v in spec.get("volumes", []) if v["name"] == mounts[0]["name"]), {})
        secret = volume.get("secret", {})
        if secret.get("secretName") != secret_name(component):
            problems.append(f"{where}: {path} is {volume}, expected the Secret {secret_name(component)}")
        if secret.get("defaultMode") != SERVICE_TLS_MODE or secret.get("items"):
            problems.append(f"{where}: the certificate Secret's mode is {secret.get('defaultMode')}, expected 0440")
        if not spec.get("securityContext", {}).get("fsGroup"):
            problems.append(f"{where}: no fsGroup: the non-root user cannot read its 0440 certificate")
    return problems


def check_service_certificates(
    docs: list[dict[str, Any]],
    config: dict[str, str],
    service_name: Callable[[str], str],
    secret_name: Callable[[str], str],
) -> list[str]:
    """One cert-manager Certificate per component, written to the Secret its Deployment
    mounts: named by its SPIFFE id, valid for the host of its *_URL (its Service) and for
    127.0.0.1 and localhost (readiness calls the pod's own listener), usable as server
    and client; every one from the same issuer, so peers trust each other."""
    problems = []
    certificates = {c["spec"]["secretName"]: c for c in by_kind(docs, "Certificate")}
    issuers = set()
    for component in COMPONENTS:
        certificate = certificates.get(secret_name(component))
        if certificate is None:
            problems.append(f"no Certificate writes the Secret {secret_name(component)}")
            continue
        where = f"Certificate {certificate['metadata']['name']}"
        spec = certificate["spec"]
        if spec.get("uris") != [spiffe_id(component)]:
            problems.append(f"{where}: uris {spec.get('uris')}, expected [{spiffe_id(component)}]")
        url = config.get(f"{component.upper()}_URL")
        host = urlsplit(url).hostname if url else service_name(component)
        for name in (host, service_name(component), "localhost"):
            if name not in spec.get("dnsNames", []):
                problems.append(f"{where}: not valid for {name} (dnsNames {spec.get('dnsNames')})")
        if "127.0.0.1" not in spec.get("ipAddresses", []):
            problems.append(f"{where}: not valid for 127.0.0.1, where the pod's readiness check calls")
        for usage in ("digital signature", "server auth", "client auth"):
            if usage not in spec.get("usages", []):
                problems.append(f"{where}: no {usage!r} usage")
        if spec.get("isCA"):
            problems.append(f"{where}: a service certificate is a CA")
        issuers.add(tuple(sorted(spec["issuerRef"].items())))
    if len(issuers) > 1:
        problems.append(f"the services' certificates come from several issuers: {sorted(issuers)}")
    return problems


def check_ca_chain(docs: list[dict[str, Any]]) -> list[str]:
    """The services' own CA: a self-signed Issuer signs a CA Certificate whose Secret a
    CA Issuer signs with, and that CA Issuer signs every service certificate."""
    problems = []
    issuers = {i["metadata"]["name"]: i["spec"] for i in by_kind(docs, "Issuer")}
    certificates = by_kind(docs, "Certificate")
    ca_certificates = [c for c in certificates if c["spec"].get("isCA")]
    if len(ca_certificates) != 1:
        return [f"expected one CA Certificate, found {len(ca_certificates)}"]
    ca = ca_certificates[0]["spec"]
    if "selfSigned" not in issuers.get(ca["issuerRef"]["name"], {}):
        problems.append(f"the CA Certificate is issued by {ca['issuerRef']['name']}, not a self-signed Issuer")
    ca_issuers = [name for name, spec in issuers.items() if spec.get("ca", {}).get("secretName") == ca["secretName"]]
    if len(ca_issuers) != 1:
        return problems + [f"expected one CA Issuer signing with {ca['secretName']}, found {ca_issuers}"]
    for certificate in certificates:
        if certificate["spec"].get("isCA"):
            continue
        ref = certificate["spec"]["issuerRef"]
        if (ref.get("name"), ref.get("kind", "Issuer"), ref.get("group", "cert-manager.io")) != (
            ca_issuers[0],
            "Issuer",
            "cert-manager.io",
        ):
            problems.append(f"Certificate {certificate['metadata']['name']} is not issued by the CA Issuer: {ref}")
    return problems
