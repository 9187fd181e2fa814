"""A Python client generated from the OpenAPI document the gateway serves
(openapi-python-client) drives a whole flow: register, upload, start, watch (live
events), download; and meets a clear problem where it should."""

import importlib
import json
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import uuid
from io import BytesIO
from pathlib import Path

from atelier_server import Atelier, is_image, png

SERVER: Atelier
OUT: tempfile.TemporaryDirectory
PACKAGE = "atelier_api_client"


def setUpModule() -> None:
    global SERVER, OUT
    SERVER = Atelier()
    try:
        generate()
    except BaseException:
        SERVER.stop()
        raise


def generate() -> None:
    global OUT
    OUT = tempfile.TemporaryDirectory(prefix="atelier-rest-client-")
    spec = Path(OUT.name) / "openapi.json"
    with urllib.request.urlopen(f"{SERVER.base}/api/openapi.json", timeout=30) as reply:
        spec.write_bytes(reply.read())
    generated = subprocess.run(
        ["openapi-python-client", "generate", "--path", str(spec), "--meta", "none",
         "--config", str(Path(__file__).with_name("openapi-python-client.yaml")),
         "--output-path", str(Path(OUT.name) / PACKAGE)],
        capture_output=True,
        text=True,
    )
    if generated.returncode != 0 or "Warning" in generated.stdout + generated.stderr:
        raise RuntimeError(f"the served document does not generate cleanly:\n{generated.stdout}\n{generated.stderr}")
    sys.path.insert(0, OUT.name)


def tearDownModule() -> None:
    SERVER.stop()
    OUT.cleanup()


def generated(module: str):
    return importlib.import_module(f"{PACKAGE}.{module}")


class RestClientFlow(unittest.TestCase):
    def client(self):
        client = generated("client").Client(base_url=SERVER.base, raise_on_unexpected_status=True)
        self.addCleanup(client.get_httpx_client().close)
        return client

    def sign_up(self, raise_on_unexpected_status: bool = True):
        models = generated("models")
        register = generated("api.auth.register")
        session = register.sync(
            client=self.client(),
            body=models.Credentials(email=f"rest-{uuid.uuid4().hex[:12]}@example.com", password="a long enough password"),
        )
        self.assertIsInstance(session, models.TokenResponse)
        client = generated("client").AuthenticatedClient(
            base_url=SERVER.base, token=session.access_token, raise_on_unexpected_status=raise_on_unexpected_status
        )
        self.addCleanup(client.get_httpx_client().close)
        return client

    def test_register_upload_start_watch_download(self) -> None:
        models = generated("models")
        types = generated("types")
        me = self.sign_up()

        original = png(120, 80)
        uploaded = generated("api.images.upload_image").sync_detailed(
            client=me,
            body=models.UploadForm(file=types.File(payload=BytesIO(original), file_name="photo.png", mime_type="image/png")),
        )
        self.assertEqual(uploaded.status_code, 201)
        image = uploaded.parsed
        self.assertEqual((image.width, image.height, image.kind), (120, 80, models.ImageKind.ORIGINAL))

        started = generated("api.processing.start_job").sync_detailed(
            client=me,
            body=models.StartBody(image_id=image.id, workflow_id="rembg-background-removal"),
        )
        self.assertEqual(started.status_code, 202)
        job_id = uuid.UUID(started.parsed.job_id)

        # Watch it live: the event stream ends after the job finishes.
        statuses = []
        with me.get_httpx_client().stream("GET", f"/api/processing/{job_id}/events", timeout=120) as events:
            self.assertEqual(events.status_code, 200)
            self.assertTrue(events.headers["content-type"].startswith("text/event-stream"))
            for line in events.iter_lines():
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    if "status" in data:
                        statuses.append(data["status"])
        self.assertIn("completed", statuses)

        job = generated("api.processing.get_job_status").sync(client=me, job_id=job_id)
        self.assertEqual(job.status, models.JobStatus.COMPLETED)
        self.assertGreaterEqual(len(job.outputs), 1)
        output = job.outputs[0]
        downloaded = me.get_httpx_client().get(output.url, timeout=60)
        downloaded.close()
        self.assertEqual(downloaded.status_code, 200)
        self.assertTrue(is_image(downloaded.content))
        self.assertEqual(len(downloaded.content), output.file_size)

        listed = generated("api.processing.list_jobs").sync(client=me, status=[models.JobStatus.COMPLETED])
        self.assertEqual([listed_job.job_id for listed_job in listed.jobs], [str(job_id)])

        # Another user's job is not found, with a problem document.
        stranger = self.sign_up(raise_on_unexpected_status=False)
        hidden = generated("api.processing.get_job_status").sync_detailed(client=stranger, job_id=job_id)
        self.assertEqual(hidden.status_code, 404)
        self.assertEqual(hidden.parsed.status, 404)
        self.assertTrue(hidden.parsed.type_.endswith("/not-found"), hidden.parsed.type_)

    def test_invalid_input_is_a_problem_naming_the_field(self) -> None:
        models = generated("models")
        response = generated("api.auth.register").sync_detailed(
            client=self.client(),
            body=models.Credentials(email="not an email", password="short"),
        )
        self.assertEqual(response.status_code, 422)
        self.assertIsInstance(response.parsed, models.Problem)
        self.assertEqual({error.field for error in response.parsed.errors}, {"email", "password"})
        self.assertTrue(response.parsed.request_id)


if __name__ == "__main__":
    unittest.main()
