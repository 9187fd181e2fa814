"""A Python grpcio client generated from proto/ drives a whole flow through the
gateway over native gRPC: register, upload (client streaming), start, watch
(server streaming), download (server streaming); and asks server reflection."""

import importlib
import subprocess
import sys
import tempfile
import unittest
import uuid
from pathlib import Path

import grpc

from atelier_server import ROOT, Atelier, is_image, png

PROTO = ROOT / "proto"
SERVER: Atelier
OUT: tempfile.TemporaryDirectory


def setUpModule() -> None:
    global SERVER, OUT
    OUT = tempfile.TemporaryDirectory(prefix="atelier-grpc-client-")
    files = [str(path.relative_to(PROTO)) for path in sorted(PROTO.rglob("*.proto"))]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={OUT.name}",
         f"--grpc_python_out={OUT.name}", *files],
        check=True,
    )
    sys.path.insert(0, OUT.name)
    SERVER = Atelier()


def tearDownModule() -> None:
    SERVER.stop()
    OUT.cleanup()


def stubs(package: str):
    messages = importlib.import_module(f"atelier.{package}.v1.{package}_pb2")
    services = importlib.import_module(f"atelier.{package}.v1.{package}_pb2_grpc")
    return messages, services


class GrpcClientFlow(unittest.TestCase):
    def setUp(self) -> None:
        self.channel = grpc.insecure_channel(SERVER.grpc_target)
        self.addCleanup(self.channel.close)

    def register(self) -> list[tuple[str, str]]:
        auth, auth_grpc = stubs("auth")
        reply = auth_grpc.AuthServiceStub(self.channel).Register(
            auth.RegisterRequest(email=f"grpc-{uuid.uuid4().hex[:12]}@example.com", password="a long enough password"),
            timeout=30,
        )
        self.assertEqual(reply.session.token_type, "Bearer")
        return [("authorization", f"Bearer {reply.session.access_token}")]

    def test_register_upload_start_watch_download(self) -> None:
        image, image_grpc = stubs("image")
        processing, processing_grpc = stubs("processing")
        token = self.register()
        images = image_grpc.ImageServiceStub(self.channel)
        jobs = processing_grpc.ProcessingServiceStub(self.channel)

        original = png(96, 64)
        chunks = [original[i : i + 1000] for i in range(0, len(original), 1000)]
        upload = [image.UploadImageRequest(metadata=image.UploadMetadata(filename="photo.png", mime_type="image/png", size_bytes=len(original)))]
        upload += [image.UploadImageRequest(chunk=chunk) for chunk in chunks]
        uploaded = images.UploadImage(iter(upload), metadata=token, timeout=60).image
        self.assertEqual((uploaded.width, uploaded.height, uploaded.mime_type), (96, 64, "image/png"))

        job = jobs.StartProcessing(
            processing.StartProcessingRequest(image_id=uploaded.id, workflow_id="rembg-background-removal"),
            metadata=token,
            timeout=30,
        ).job
        self.assertTrue(job.id)

        final = None
        for message in jobs.StreamJobEvents(processing.StreamJobEventsRequest(job_id=job.id), metadata=token, timeout=120):
            if message.event.status in (processing.JOB_STATUS_COMPLETED, processing.JOB_STATUS_FAILED, processing.JOB_STATUS_CANCELLED):
                final = message.event.status
                break
        self.assertEqual(final, processing.JOB_STATUS_COMPLETED)

        done = jobs.GetJob(processing.GetJobRequest(job_id=job.id), metadata=token, timeout=30).job
        self.assertEqual(done.status, processing.JOB_STATUS_COMPLETED)
        self.assertGreaterEqual(len(done.outputs), 1)

        info, data = None, b""
        for message in images.DownloadImage(image.DownloadImageRequest(image_id=done.outputs[0].image_id), metadata=token, timeout=60):
            if message.HasField("info"):
                info = message.info
            else:
                data += message.chunk
        self.assertIsNotNone(info)
        self.assertEqual(len(data), info.total_size)
        self.assertTrue(is_image(data), data[:16])

        # Another user's job and image are not found, not forbidden.
        stranger = self.register()
        with self.assertRaises(grpc.RpcError) as refused:
            jobs.GetJob(processing.GetJobRequest(job_id=job.id), metadata=stranger, timeout=30)
        self.assertEqual(refused.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as refused:
            list(images.DownloadImage(image.DownloadImageRequest(image_id=uploaded.id), metadata=stranger, timeout=30))
        self.assertEqual(refused.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_without_a_token_is_unauthenticated(self) -> None:
        processing, processing_grpc = stubs("processing")
        with self.assertRaises(grpc.RpcError) as refused:
            processing_grpc.ProcessingServiceStub(self.channel).ListJobs(processing.ListJobsRequest(), timeout=30)
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_internal_methods_are_not_routed(self) -> None:
        user, user_grpc = stubs("user")
        token = self.register()
        with self.assertRaises(grpc.RpcError) as refused:
            user_grpc.UserServiceStub(self.channel).SetSubscriptionTier(
                user.SetSubscriptionTierRequest(), metadata=token, timeout=30
            )
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_reflection_answers_v1alpha(self) -> None:
        # grpcio-reflection speaks v1alpha, as older grpcurl, Postman and evans do
        # (v1 is checked by the binary's tests).
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30)
        names = {service.name for reply in replies for service in reply.list_services_response.service}
        for expected in (
            "atelier.auth.v1.AuthService",
            "atelier.image.v1.ImageService",
            "atelier.processing.v1.ProcessingService",
            "atelier.user.v1.UserService",
            "atelier.workflow.v1.WorkflowService",
        ):
            self.assertIn(expected, names)
        # A service's file resolves too, as a tool needs it to build requests.
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="atelier.processing.v1.ProcessingService")]),
            timeout=30,
        )
        files = [blob for reply in replies for blob in reply.file_descriptor_response.file_descriptor_proto]
        self.assertTrue(files)

if __name__ == "__main__":
    unittest.main()
