"""The kustomize overlays, rendered with `kubectl kustomize` and checked offline: every
manifest against the Kubernetes schemas (strict), and the same topology as the Helm
chart (one Deployment per target, probes, restricted pods, NetworkPolicies, no secret
in a ConfigMap).

    python3 -m unittest discover -s k8s/tests -v      (make k8s-render)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "helm" / "tests"))
import kube  # noqa: E402

OVERLAYS = kube.ROOT / "k8s" / "overlays"
NAMESPACES = {"dev": "atelier-dev", "prod": "atelier"}
RENDERED: dict[str, list[dict]] = {}


def setUpModule() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl not found: `make k8s-render` renders the overlays with `kubectl kustomize`")
    for overlay in sorted(p.name for p in OVERLAYS.iterdir() if p.is_dir()):
        result = subprocess.run(
            [kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl kustomize k8s/overlays/{overlay} failed:\n{result.stderr}")
        RENDERED[overlay] = kube.load_documents(result.stdout)


def service_name(component: str) -> str:
    return f"atelier-{component}"


def secret_name(component: str) -> str:
    """The TLS Secret holding a component's service certificate."""
    return f"atelier-{component}-tls"


class KustomizeTest(unittest.TestCase):
    def each(self):
        for overlay, docs in RENDERED.items():
            with self.subTest(overlay=overlay):
                yield overlay, docs

    def assertNoProblems(self, problems: list[str]) -> None:
        self.assertFalse(problems, "\n" + "\n".join(problems))

    def test_dev_and_prod_exist(self):
        self.assertEqual(sorted(RENDERED), ["dev", "prod"])

    def test_manifests_match_kubernetes_schemas(self):
        for overlay, docs in self.each():
            errors, skipped = kube.validate(docs, f"k8s/overlays/{overlay}")
            self.assertNoProblems(errors)
            custom = kube.by_kind(docs, "ServiceMonitor") + kube.by_kind(docs, "Certificate") + kube.by_kind(docs, "Issuer")
            # Only ServiceMonitors and cert-manager's kinds are skipped, each one accounted
            # for; cert-manager's are checked against what cert-manager.io/v1 accepts.
            self.assertEqual(len(skipped), len(custom), skipped)
            self.assertNoProblems(kube.check_cert_manager(docs))

    def test_everything_in_the_overlay_namespace(self):
        for overlay, docs in self.each():
            for doc in docs:
                self.assertEqual(doc["metadata"].get("namespace"), NAMESPACES[overlay], doc["metadata"]["name"])

    def test_one_deployment_per_target(self):
        for overlay, docs in self.each():
            deployments = kube.deployments(docs)
            self.assertEqual(sorted(deployments), sorted(kube.COMPONENTS))
            for component, deployment in deployments.items():
                self.assertNoProblems(kube.check_deployment(component, deployment))

    def test_services_and_cluster_addresses(self):
        for overlay, docs in self.each():
            self.assertNoProblems(kube.check_services(docs, service_name))
            (config_map,) = kube.by_kind(docs, "ConfigMap")
            self.assertNoProblems(kube.check_cluster_addresses(config_map["data"], service_name))
            for deployment in kube.deployments(docs).values():
                container = deployment["spec"]["template"]["spec"]["containers"][0]
                self.assertEqual(container["envFrom"][0]["configMapRef"]["name"], config_map["metadata"]["name"])

    def test_gateway_serves_plain_http_only_behind_the_ingress(self):
        # The Ingress terminates TLS; the gateway refuses plain HTTP on 0.0.0.0 unless told.
        for overlay, docs in self.each():
            (config_map,) = kube.by_kind(docs, "ConfigMap")
            self.assertEqual(config_map["data"]["GATEWAY_PLAINTEXT"], "true")
            self.assertTrue(kube.by_kind(docs, "Ingress"), "an Ingress terminates TLS in front")

    def test_no_secrets_in_the_manifests(self):
        for overlay, docs in self.each():
            self.assertEqual(kube.by_kind(docs, "Secret"), [])
            self.assertNoProblems(kube.check_config_maps(docs))
            env = {
                component: kube.env_names(d["spec"]["template"]["spec"]["containers"][0])
                for component, d in kube.deployments(docs).items()
            }
            for component in ("auth", "image", "processing", "workflow", "user"):
                self.assertIn("secretKeyRef", env[component]["DATABASE_URL"]["valueFrom"])
            self.assertNotIn("DATABASE_URL", env["gateway"])

    def test_service_certificates(self):
        for overlay, docs in self.each():
            (config_map,) = kube.by_kind(docs, "ConfigMap")
            config = config_map["data"]
            self.assertNoProblems(kube.check_service_tls(docs, config, secret_name))
            self.assertNoProblems(kube.check_service_certificates(docs, config, service_name, secret_name))
            self.assertNoProblems(kube.check_ca_chain(docs))
            namespace = NAMESPACES[overlay]
            for certificate in kube.by_kind(docs, "Certificate"):
                spec = certificate["spec"]
                component = kube.component_of(certificate)
                if component in kube.COMPONENTS:
                    # The qualified names are the overlay's namespace.
                    self.assertEqual(
                        spec["dnsNames"][1:4],
                        [f"{service_name(component)}.{namespace}{suffix}" for suffix in ("", ".svc", ".svc.cluster.local")],
                    )
            (operator,) = [
                c["spec"] for c in kube.by_kind(docs, "Certificate") if c["spec"].get("uris") == [kube.spiffe_id("operator")]
            ]
            self.assertEqual(operator["secretName"], secret_name("operator"))
            self.assertNotIn("server auth", operator["usages"])

    def test_network_policies(self):
        for overlay, docs in self.each():
            self.assertNoProblems(kube.check_network_policies(docs))

    def test_migration_job(self):
        for overlay, docs in self.each():
            (job,) = kube.by_kind(docs, "Job")
            container = job["spec"]["template"]["spec"]["containers"][0]
            self.assertEqual(container["args"], ["migrate"])
            self.assertFalse(
                [v for v in job["spec"]["template"]["spec"].get("volumes", []) if "secret" in v],
                "migrate calls no service: no certificate",
            )
            self.assertNoProblems(kube.check_restricted(job["spec"]["template"]["spec"], "migration Job"))

    def test_prod_scales_with_budgets(self):
        docs = RENDERED["prod"]
        deployments = kube.deployments(docs)
        hpas = {kube.component_of(h): h for h in kube.by_kind(docs, "HorizontalPodAutoscaler")}
        for component in hpas:
            self.assertNotIn("replicas", deployments[component]["spec"], f"{component}: the HPA owns replicas")
        external = [m for m in hpas["processing"]["spec"]["metrics"] if m["type"] == "External"]
        self.assertEqual(external[0]["external"]["metric"]["name"], "atelier_queue_depth")
        pdbs = kube.by_kind(docs, "PodDisruptionBudget")
        for component, deployment in deployments.items():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            self.assertEqual(
                len([p for p in pdbs if kube.selects(p["spec"]["selector"], labels)]), 1, f"{component} has no PDB"
            )
        (ingress,) = kube.by_kind(docs, "Ingress")
        self.assertTrue(ingress["spec"]["tls"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
