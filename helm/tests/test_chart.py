"""The Helm chart, linted and rendered offline with Helm's own Go library
(helm-python-sdk), every manifest validated against the Kubernetes schemas
(kubernetes-validate, strict), and the rendered output checked against the design.

    python3 -m unittest discover -s helm/tests -v      (make helm-lint)
"""

from __future__ import annotations

import base64
import copy
import sys
import unittest
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kube  # noqa: E402

CHART = kube.ROOT / "helm" / "atelier"
BAD_VALUES = Path(__file__).resolve().parent / "bad-values"
NAMESPACE = "atelier"

# Each rendering: release name and the values files applied in order (as `helm -f`).
CASES = {
    "default": ("atelier", []),
    "production": ("prod", [CHART / "values-production.yaml"]),
    **{
        path.name.removesuffix("-values.yaml"): ("ci", [path])
        for path in sorted((CHART / "ci").glob("*-values.yaml"))
    },
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(files: list[Path]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in files:
        values = deep_merge(values, yaml.safe_load(path.read_text()) or {})
    return values


class Rendered:
    """One rendering of the chart, parsed."""

    def __init__(self, release: str, values: dict[str, Any], is_upgrade: bool = False):
        self.release = release
        with helm.Chart.load(CHART) as chart:
            self.merged = chart.merge_values(values)
            self.files = chart.render(
                values=values,
                name=release,
                namespace=NAMESPACE,
                is_install=not is_upgrade,
                is_upgrade=is_upgrade,
            )
        self.notes = next((text for path, text in self.files.items() if path.endswith("NOTES.txt")), "")
        self.docs = [
            doc
            for path, text in sorted(self.files.items())
            if not path.endswith("NOTES.txt")
            for doc in kube.load_documents(text)
        ]
        self.fullname = release if "atelier" in release else f"{release}-atelier"

    def service_name(self, component: str) -> str:
        return f"{self.fullname}-{component}"

    def secret_name(self, component: str) -> str:
        """The TLS Secret holding a component's service certificate."""
        return f"{self.fullname}-{component}-tls"

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return kube.by_kind(self.docs, kind)

    def config(self) -> dict[str, str]:
        (config_map,) = [c for c in self.kind("ConfigMap") if c["metadata"]["name"] == self.fullname]
        return config_map["data"]

    def component_values(self, component: str) -> dict[str, Any]:
        return self.merged["imageService" if component == "image" else component]


RENDERED: dict[str, Rendered] = {}


def setUpModule() -> None:
    for case, (release, files) in CASES.items():
        RENDERED[case] = Rendered(release, load_values(files))


class ChartTest(unittest.TestCase):
    def each(self):
        for case, rendered in RENDERED.items():
            with self.subTest(case=case):
                yield case, rendered

    def assertNoProblems(self, problems: list[str]) -> None:
        self.assertFalse(problems, "\n" + "\n".join(problems))

    def test_cases_cover_production_and_minimal(self):
        self.assertIn("production", RENDERED)
        self.assertIn("minimal", RENDERED)
        self.assertGreaterEqual(len(RENDERED), 4)

    def test_lint_is_clean(self):
        for case, (_, files) in CASES.items():
            with self.subTest(case=case):
                report = helm.lint(
                    CHART, load_values(files) or None, strict=True, kube_version="v1.31.0"
                )
                serious = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertFalse(serious, f"{case}: {serious}")
                self.assertFalse(report["errors"], f"{case}: {report['errors']}")

    def test_manifests_match_kubernetes_schemas(self):
        for case, rendered in self.each():
            errors, skipped = kube.validate(rendered.docs, f"chart[{case}]")
            self.assertNoProblems(errors)
            custom = rendered.kind("ServiceMonitor") + rendered.kind("Certificate") + rendered.kind("Issuer")
            # Only ServiceMonitors and cert-manager's kinds are skipped, each one accounted
            # for; cert-manager's are checked against what cert-manager.io/v1 accepts.
            self.assertEqual(len(skipped), len(custom), skipped)
            self.assertNoProblems(kube.check_cert_manager(rendered.docs))

    def test_one_deployment_per_target(self):
        for case, rendered in self.each():
            deployments = kube.deployments(rendered.docs)
            self.assertEqual(sorted(deployments), sorted(kube.COMPONENTS))
            for component, deployment in deployments.items():
                self.assertNoProblems(kube.check_deployment(component, deployment))
                self.assertEqual(deployment["metadata"]["name"], rendered.service_name(component))

    def test_trial_backends_are_restricted_too(self):
        for case, rendered in self.each():
            for statefulset in rendered.kind("StatefulSet"):
                spec = statefulset["spec"]["template"]["spec"]
                problems = [
                    p for p in kube.check_restricted(spec, statefulset["metadata"]["name"]) if "/tmp" not in p
                ]
                self.assertNoProblems(problems)
                self.assertEqual(statefulset["metadata"]["annotations"].get("atelier.dev/trials-only"), "true")

    def test_services_and_cluster_addresses(self):
        for case, rendered in self.each():
            self.assertNoProblems(kube.check_services(rendered.docs, rendered.service_name))
            self.assertNoProblems(kube.check_cluster_addresses(rendered.config(), rendered.service_name))

    def test_no_secret_values_in_config_maps(self):
        for case, rendered in self.each():
            secret_values = [
                base64.b64decode(value).decode()
                for secret in rendered.kind("Secret")
                for value in (secret.get("data") or {}).values()
            ]
            self.assertNoProblems(kube.check_config_maps(rendered.docs, secret_values))

    def test_production_references_secrets_only(self):
        rendered = RENDERED["production"]
        self.assertEqual(rendered.kind("Secret"), [], "production renders no Secret of its own")
        env = {
            component: kube.env_names(d["spec"]["template"]["spec"]["containers"][0])
            for component, d in kube.deployments(rendered.docs).items()
        }
        for component in ("auth", "image", "processing", "workflow"):
            ref = env[component]["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            self.assertEqual((ref["name"], ref["key"]), ("atelier-database", "DATABASE_URL"))
        self.assertEqual(env["processing"]["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"], "atelier-redis")
        self.assertEqual(env["processing"]["FAL_KEY"]["valueFrom"]["secretKeyRef"]["name"], "atelier-fal")
        # Least privilege: the gateway holds no database or fal credentials; Redis it
        # needs, for rate limits shared by every replica and session announcements.
        for name in ("DATABASE_URL", "FAL_KEY"):
            self.assertNotIn(name, env["gateway"])
        self.assertEqual(env["gateway"]["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"], "atelier-redis")
        self.assertNotIn("FAL_KEY", env["auth"])
        # The JWT keys are files from the Secret, in JWT_KEYS_DIR, on auth only.
        auth = kube.deployments(rendered.docs)["auth"]["spec"]["template"]["spec"]
        keys_dir = env["auth"]["JWT_KEYS_DIR"]["value"]
        mount = [m for m in auth["containers"][0]["volumeMounts"] if m["mountPath"] == keys_dir]
        self.assertEqual(len(mount), 1)
        self.assertTrue(mount[0]["readOnly"])
        volume = [v for v in auth["volumes"] if v["name"] == mount[0]["name"]][0]
        self.assertEqual(volume["secret"]["secretName"], "atelier-jwt-keys")
        config = rendered.config()
        self.assertEqual(config["S3_BUCKET"], "atelier-images-prod")
        self.assertEqual(config["PUBLIC_URL"], "https://atelier.example.com")

    def test_scanner_is_a_clamd_sidecar_of_the_image_pods(self):
        for case, rendered in self.each():
            image = kube.deployments(rendered.docs)["image"]["spec"]["template"]["spec"]
            env = kube.env_names(image["containers"][0])
            names = [c["name"] for c in image["containers"]]
            if not rendered.merged["scanner"]["enabled"]:
                self.assertEqual(names, ["image"])
                self.assertNotIn("SCANNER", env)
                continue
            self.assertEqual(names, ["image", "clamd"])
            scanner = rendered.merged["scanner"]
            self.assertEqual(env["SCANNER"]["value"], "clamd")
            self.assertEqual(env["CLAMD_ADDRESS"]["value"], f"127.0.0.1:{scanner['port']}")
            self.assertEqual(env["SCAN_UNAVAILABLE"]["value"], scanner["onUnavailable"])
            clamd = image["containers"][1]
            self.assertEqual(clamd["image"], f"{scanner['image']['repository']}:{scanner['image']['tag']}")
            (config_map,) = [
                c for c in rendered.kind("ConfigMap") if c["metadata"]["name"] == f"{rendered.fullname}-clamd"
            ]
            conf = dict(
                line.split(" ", 1) for line in config_map["data"]["clamd.conf"].splitlines() if line.strip()
            )
            # clamd's limits hold the largest upload; it listens on the pod's loopback only.
            upload_bytes = int(rendered.config()["MAX_FILE_SIZE_MB"]) * 1024 * 1024
            for limit in ("StreamMaxLength", "MaxFileSize", "MaxScanSize"):
                self.assertGreaterEqual(int(conf[limit]), upload_bytes, limit)
            self.assertEqual(conf["TCPAddr"], "127.0.0.1")
            self.assertEqual(int(conf["TCPSocket"]), scanner["port"])
        self.assertTrue(RENDERED["scanner"].merged["scanner"]["enabled"], "a case renders the scanner on")

    def test_disruption_budgets_follow_replicas(self):
        for case, rendered in self.each():
            pdbs = rendered.kind("PodDisruptionBudget")
            for component, deployment in kube.deployments(rendered.docs).items():
                values = rendered.component_values(component)
                least = (
                    values["autoscaling"]["minReplicas"]
                    if values["autoscaling"]["enabled"]
                    else values["replicas"]
                )
                labels = deployment["spec"]["template"]["metadata"]["labels"]
                matching = [p for p in pdbs if kube.selects(p["spec"]["selector"], labels)]
                if least > 1:
                    self.assertEqual(len(matching), 1, f"{case}: {component} runs {least} pods but has no PDB")
                else:
                    self.assertEqual(matching, [], f"{case}: {component} runs one pod but has a PDB")

    def test_production_scales_and_spreads(self):
        rendered = RENDERED["production"]
        hpas = {kube.component_of(h): h for h in rendered.kind("HorizontalPodAutoscaler")}
        self.assertLessEqual({"gateway", "auth", "image", "processing"}, set(hpas))
        for component, hpa in hpas.items():
            self.assertNotIn("replicas", kube.deployments(rendered.docs)[component]["spec"])
            self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], rendered.service_name(component))
            cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
            self.assertEqual(cpu[0]["resource"]["name"], "cpu")
        external = [m for m in hpas["processing"]["spec"]["metrics"] if m["type"] == "External"]
        self.assertEqual(external[0]["external"]["metric"]["name"], "atelier_queue_depth")
        for component, deployment in kube.deployments(rendered.docs).items():
            keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
            self.assertEqual(keys, {"topology.kubernetes.io/zone", "kubernetes.io/hostname"})
        self.assertEqual(
            [h for h in RENDERED["default"].kind("HorizontalPodAutoscaler")], [], "no HPA unless enabled"
        )

    def test_migration_job_is_a_hook(self):
        expected = {"production": "pre-install,pre-upgrade", "default": "post-install,pre-upgrade"}
        for case, rendered in self.each():
            jobs = rendered.kind("Job")
            if not rendered.merged["migrations"]["enabled"]:
                self.assertEqual(jobs, [])
                continue
            self.assertEqual(len(jobs), 1)
            job = jobs[0]
            annotations = job["metadata"]["annotations"]
            hooks = set(annotations["helm.sh/hook"].split(","))
            self.assertIn("pre-upgrade", hooks)
            if case in expected:
                self.assertEqual(annotations["helm.sh/hook"], expected[case])
            self.assertIn("before-hook-creation", annotations["helm.sh/hook-delete-policy"])
            spec = job["spec"]["template"]["spec"]
            container = spec["containers"][0]
            self.assertEqual(container.get("command", []) + container["args"], ["migrate"])
            self.assertIn("DATABASE_URL", kube.env_names(container))
            self.assertNotIn("envFrom", container, "a pre-install hook cannot read the release's ConfigMap")
            self.assertNotIn("serviceAccountName", spec, "a pre-install hook runs before the chart's ServiceAccount exists")
            self.assertFalse(
                [v for v in spec.get("volumes", []) if "secret" in v], "migrate calls no service: no certificate"
            )
            self.assertNoProblems(kube.check_restricted(spec, "migration Job"))

    def test_network_policies(self):
        for case, rendered in self.each():
            if not rendered.merged["networkPolicy"]["enabled"]:
                self.assertEqual(rendered.kind("NetworkPolicy"), [])
                continue
            self.assertNoProblems(kube.check_network_policies(rendered.docs))

    def test_production_egress_uses_the_configured_ranges(self):
        rendered = RENDERED["production"]
        policies = {kube.component_of(p): p for p in rendered.kind("NetworkPolicy")}
        to_postgres = [
            rule
            for rule in policies["auth"]["spec"]["egress"]
            if any(p.get("port") == 5432 for p in rule.get("ports", []))
        ]
        self.assertEqual([p["ipBlock"]["cidr"] for p in to_postgres[0]["to"]], ["10.0.0.0/16"])
        gateway_in = policies["gateway"]["spec"]["ingress"][0]["from"]
        self.assertEqual(gateway_in, [{"ipBlock": {"cidr": "10.0.0.0/16"}}])

    def test_service_monitors_scrape_the_admin_port(self):
        for case, rendered in self.each():
            monitors = rendered.kind("ServiceMonitor")
            if not rendered.merged["serviceMonitor"]["enabled"]:
                self.assertEqual(monitors, [])
                continue
            self.assertEqual(sorted(kube.component_of(m) for m in monitors), sorted(kube.COMPONENTS))
            for monitor in monitors:
                self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "admin")
                self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")

    def test_gateway_is_probed_on_the_admin_port(self):
        for case, rendered in self.each():
            (gateway,) = [d for d in rendered.kind("Deployment") if kube.component_of(d) == "gateway"]
            (container,) = gateway["spec"]["template"]["spec"]["containers"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                self.assertEqual(container[probe]["httpGet"]["port"], "admin", probe)

    def test_client_address_comes_from_the_proxy_hops_in_front(self):
        self.assertEqual(RENDERED["default"].config()["TRUSTED_PROXY_HOPS"], "1")
        self.assertEqual(RENDERED["production"].config()["TRUSTED_PROXY_HOPS"], "2")
        for case, rendered in self.each():
            self.assertNotIn("TRUST_PROXY_HEADERS", rendered.config())
        ranges = Rendered("atelier", {"config": {"trustedProxies": ["10.0.0.0/8", "192.0.2.7"]}})
        self.assertEqual(ranges.config()["TRUSTED_PROXIES"], "10.0.0.0/8,192.0.2.7")

    def test_ingress_has_tls(self):
        for case in ("production", "trial-everything"):
            rendered = RENDERED[case]
            (ingress,) = rendered.kind("Ingress")
            self.assertTrue(ingress["spec"]["tls"])
            backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
            self.assertEqual(backend["name"], rendered.service_name("gateway"))
        self.assertEqual(
            RENDERED["production"].kind("Ingress")[0]["spec"]["ingressClassName"], "alb"
        )

    def gateway_and_image(self, rendered: Rendered):
        deployments = kube.deployments(rendered.docs)
        return tuple(
            (
                deployments[component]["spec"]["template"]["spec"],
                kube.env_names(deployments[component]["spec"]["template"]["spec"]["containers"][0]),
            )
            for component in ("gateway", "image")
        )

    def test_gateway_speaks_plain_http_only_to_the_ingress_unless_given_a_certificate(self):
        # By default the ingress terminates TLS, and the gateway says it may listen in
        # plain HTTP on the pod's every interface.
        for case, rendered in self.each():
            (_, env), _ = self.gateway_and_image(rendered)
            self.assertEqual(env["GATEWAY_PLAINTEXT"]["value"], "true")
            self.assertNotIn("GATEWAY_TLS_CERT_FILE", env)
            self.assertNotIn("GATEWAY_PLAINTEXT", rendered.config())
        # With gateway.tls.secretName, HTTPS on the gateway's port from the mounted Secret.
        rendered = Rendered("atelier", {"gateway": {"tls": {"secretName": "atelier-edge-tls", "reloadSecs": 60}}})
        self.assertNoProblems(kube.validate(rendered.docs, "chart[custom]")[0])
        (spec, env), _ = self.gateway_and_image(rendered)
        self.assertNotIn("GATEWAY_PLAINTEXT", env)
        cert, key = env["GATEWAY_TLS_CERT_FILE"]["value"], env["GATEWAY_TLS_KEY_FILE"]["value"]
        self.assertEqual(env["GATEWAY_TLS_RELOAD_SECS"]["value"], "60")
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if cert.startswith(m["mountPath"] + "/")]
        self.assertTrue(key.startswith(mount["mountPath"] + "/"))
        self.assertTrue(mount["readOnly"])
        self.assertNotIn("subPath", mount, "a renewed certificate shows up in place")
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        self.assertEqual(volume["secret"]["secretName"], "atelier-edge-tls")

    def test_local_objects_are_encrypted_with_a_mounted_key(self):
        _, (_, env) = self.gateway_and_image(RENDERED["default"])
        self.assertNotIn("STORAGE_ENCRYPTION_KEY_FILE", env)
        rendered = Rendered(
            "atelier", {"secrets": {"storageEncryptionKey": {"existingSecret": "atelier-storage-key", "key": "k"}}}
        )
        self.assertNoProblems(kube.validate(rendered.docs, "chart[custom]")[0])
        (_, gateway_env), (spec, env) = self.gateway_and_image(rendered)
        self.assertNotIn("STORAGE_ENCRYPTION_KEY_FILE", gateway_env)
        path = env["STORAGE_ENCRYPTION_KEY_FILE"]["value"]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        self.assertTrue(mount["readOnly"])
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        self.assertEqual(volume["secret"]["secretName"], "atelier-storage-key")
        self.assertEqual(mount["mountPath"] + "/" + volume["secret"]["items"][0]["path"], path)

    def test_s3_server_side_encryption_is_passed_on(self):
        self.assertNotIn("S3_SSE", RENDERED["default"].config(), "the binary's default: AES256")
        for sse in ("none", "aws:kms"):
            rendered = Rendered("atelier", {"config": {"s3": {"bucket": "images", "sse": sse}}})
            self.assertEqual(rendered.config()["S3_SSE"], sse)

    def test_trials_only_backends_off_in_production(self):
        self.assertEqual(RENDERED["production"].kind("StatefulSet"), [])
        self.assertEqual(
            sorted(kube.component_of(s) for s in RENDERED["default"].kind("StatefulSet")),
            ["postgresql", "redis"],
        )
        self.assertIn("TRIALS ONLY", RENDERED["default"].notes)

    def test_service_certificates_are_mounted(self):
        for case, rendered in self.each():
            self.assertNoProblems(kube.check_service_tls(rendered.docs, rendered.config(), rendered.secret_name))
            self.assertEqual(
                rendered.config()["SERVICE_TLS_RELOAD_SECS"], str(rendered.merged["serviceTls"]["reloadSecs"])
            )
            if rendered.merged["serviceTls"]["source"] == "certManager":
                self.assertNoProblems(
                    kube.check_service_certificates(
                        rendered.docs, rendered.config(), rendered.service_name, rendered.secret_name
                    )
                )

    def test_service_certificates_from_cert_manager(self):
        rendered = RENDERED["default"]
        tls = rendered.merged["serviceTls"]
        certificates = {c["spec"]["secretName"]: c["spec"] for c in rendered.kind("Certificate")}
        for component in kube.COMPONENTS:
            spec = certificates[rendered.secret_name(component)]
            service = rendered.service_name(component)
            self.assertEqual(
                spec["dnsNames"],
                [
                    service,
                    f"{service}.{NAMESPACE}",
                    f"{service}.{NAMESPACE}.svc",
                    f"{service}.{NAMESPACE}.svc.cluster.local",
                    "localhost",
                ],
            )
            self.assertEqual(spec["ipAddresses"], ["127.0.0.1", "::1"])
            self.assertEqual(
                spec["usages"], ["digital signature", "key encipherment", "server auth", "client auth"]
            )
            self.assertEqual(
                spec["privateKey"],
                {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
            )
            self.assertEqual((spec["duration"], spec["renewBefore"]), (tls["duration"], tls["renewBefore"]))
        # The chart's own CA: self-signed Issuer -> CA Certificate -> CA Issuer -> services.
        self.assertNoProblems(kube.check_ca_chain(rendered.docs))
        (ca,) = [c["spec"] for c in rendered.kind("Certificate") if c["spec"].get("isCA")]
        # Renewing the CA keeps its key, so certificates issued before and after trust each other.
        self.assertEqual(ca["privateKey"]["rotationPolicy"], "Never")
        self.assertEqual(ca["duration"], tls["caDuration"])

    def test_operator_certificate_is_for_administration_only(self):
        rendered = RENDERED["default"]
        operator = [c["spec"] for c in rendered.kind("Certificate") if c["spec"].get("uris") == [kube.spiffe_id("operator")]]
        self.assertEqual(len(operator), 1)
        self.assertEqual(operator[0]["secretName"], rendered.secret_name("operator"))
        self.assertIn("client auth", operator[0]["usages"])
        self.assertNotIn("server auth", operator[0]["usages"])
        self.assertNotIn("dnsNames", operator[0])
        for deployment in rendered.kind("Deployment"):
            secrets = [v["secret"]["secretName"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
            self.assertNotIn(rendered.secret_name("operator"), secrets, "no pod holds the operator identity")
        without = Rendered("atelier", {"serviceTls": {"operatorCertificate": False}})
        self.assertEqual(
            sorted(c["spec"]["secretName"] for c in without.kind("Certificate") if not c["spec"].get("isCA")),
            sorted(rendered.secret_name(c) for c in kube.COMPONENTS),
        )

    def test_a_given_issuer_replaces_the_chart_ca(self):
        rendered = Rendered(
            "atelier", {"serviceTls": {"issuerRef": {"name": "platform-ca", "kind": "ClusterIssuer"}}}
        )
        self.assertEqual(rendered.kind("Issuer"), [])
        self.assertFalse([c for c in rendered.kind("Certificate") if c["spec"].get("isCA")], "no CA of its own")
        for certificate in rendered.kind("Certificate"):
            self.assertEqual(
                certificate["spec"]["issuerRef"],
                {"name": "platform-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            )
        self.assertNoProblems(
            kube.check_service_certificates(rendered.docs, rendered.config(), rendered.service_name, rendered.secret_name)
        )
        self.assertNoProblems(kube.check_cert_manager(rendered.docs))

    def test_existing_secrets_need_no_cert_manager(self):
        rendered = Rendered("atelier", {"serviceTls": {"source": "existingSecrets"}})
        self.assertEqual([d for d in rendered.docs if d["apiVersion"].startswith("cert-manager.io/")], [])
        self.assertNoProblems(kube.check_service_tls(rendered.docs, rendered.config(), rendered.secret_name))
        for component in kube.COMPONENTS:
            self.assertIn(rendered.secret_name(component), rendered.notes)
        self.assertNotIn("cert-manager is required", rendered.notes)

    def test_notes_say_cert_manager_is_required(self):
        for case, rendered in self.each():
            if rendered.merged["serviceTls"]["source"] == "certManager":
                self.assertIn("cert-manager is required", rendered.notes)
        self.assertIn(RENDERED["default"].secret_name("operator"), RENDERED["default"].notes)

    def test_upgrade_renders_the_same_objects(self):
        install = RENDERED["production"]
        upgrade = Rendered("prod", load_values(CASES["production"][1]), is_upgrade=True)
        self.assertEqual(
            sorted((d["kind"], d["metadata"]["name"]) for d in install.docs),
            sorted((d["kind"], d["metadata"]["name"]) for d in upgrade.docs),
        )


class BadValuesTest(unittest.TestCase):
    """Each file in bad-values/ names, in an `# expect:` line, why it must be refused."""

    def test_bad_values_are_refused_for_the_expected_reason(self):
        files = sorted(BAD_VALUES.glob("*.yaml"))
        self.assertGreaterEqual(len(files), 8)
        with helm.Chart.load(CHART) as chart:
            for path in files:
                with self.subTest(values=path.name):
                    text = path.read_text()
                    expected = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:")]
                    self.assertEqual(len(expected), 1, f"{path.name} needs one '# expect:' line")
                    values = yaml.safe_load(text)
                    with self.assertRaises(helm.HelmError) as caught:
                        chart.validate_schema(values)
                        chart.render(values=values, name="bad", namespace=NAMESPACE, is_install=True)
                    self.assertIn(expected[0], str(caught.exception))

    def test_schema_refusals_come_from_the_schema(self):
        """The type, range, enum and unknown-key cases fail schema validation itself."""
        with helm.Chart.load(CHART) as chart:
            for name in ("negative-replicas", "unknown-top-level-key", "bad-log-format", "empty-image-tag", "secret-in-config"):
                with self.subTest(values=name):
                    values = yaml.safe_load((BAD_VALUES / f"{name}.yaml").read_text())
                    with self.assertRaises(helm.HelmValuesError):
                        chart.validate_schema(values)
                    with self.assertRaises(helm.HelmError):
                        chart.render(values=values, name="bad", namespace=NAMESPACE, is_install=True)


class DashboardTest(unittest.TestCase):
    """The Grafana dashboard of the analytics gauges and the spend settings."""

    def test_dashboard_is_a_labelled_config_map_only_when_asked(self):
        import json

        self.assertFalse([c for c in RENDERED["default"].kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")])
        rendered = RENDERED["trial-everything"]
        (dashboard,) = [c for c in rendered.kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
        self.assertEqual(dashboard["metadata"]["labels"]["grafana_dashboard"], "1")
        board = json.loads(dashboard["data"]["atelier.json"])
        exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
        self.assertTrue(exprs)
        for expr in exprs:
            # Every replica exports the same gauges: panels take max, never sum, over them.
            if "atelier_budget_" in expr:
                continue
            with self.subTest(expr=expr):
                self.assertIn("max without (instance, pod", expr)

    def test_spend_settings_reach_the_config(self):
        config = RENDERED["default"].config()
        self.assertEqual(config["BUDGET_ALERT_PERCENT"], "80")
        self.assertEqual(config["BUDGET_HARD_STOP"], "true")
        self.assertNotIn("PLATFORM_MONTHLY_BUDGET", config)
        trial = RENDERED["trial-everything"].config()
        self.assertEqual(trial["PLATFORM_MONTHLY_BUDGET"], "500")
        self.assertEqual(trial["BUDGET_ALERT_PERCENT"], "90")


if __name__ == "__main__":
    unittest.main(verbosity=2)
