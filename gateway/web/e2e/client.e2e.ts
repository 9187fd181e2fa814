// The web app's TypeScript API client (openapi-fetch over the types generated from the served
// OpenAPI document) drives a whole flow from Node, as a program would: register, upload, start,
// watch, download.
import { apiClient, unwrap } from "../src/api/client";
import { expect, test } from "./fixtures";
import { gradientPng } from "./png";

const FINAL = new Set(["completed", "failed", "cancelled"]);

test("the TypeScript client registers, uploads, starts, watches and downloads", async ({ server }) => {
  const client = apiClient(server.base);
  const email = `ts-client-${Date.now()}@example.com`;
  const session = unwrap(await client.POST("/api/auth/register", { body: { email, password: "a long enough password" } }));
  const headers = { authorization: `Bearer ${session.access_token}` };

  const form = new FormData();
  form.append("file", new Blob([new Uint8Array(gradientPng(160, 90))], { type: "image/png" }), "gradient.png");
  const image = unwrap(
    await client.POST("/api/images/upload", {
      headers,
      body: form as never,
      bodySerializer: (body: unknown) => body as FormData,
    }),
  );
  expect([image.width, image.height, image.kind]).toEqual([160, 90, "original"]);

  const started = unwrap(
    await client.POST("/api/processing/start", {
      headers,
      body: { image_id: image.id, workflow_id: "rembg-background-removal", parameters: {} },
    }),
  );
  expect(["pending", "queued"]).toContain(started.status);

  // Watch it: the status with its log lines (an array parameter, sent comma-separated).
  let job = unwrap(
    await client.GET("/api/processing/{job_id}/status", {
      headers,
      params: { path: { job_id: started.job_id }, query: { include: ["logs", "queue_position"] } },
    }),
  );
  for (let polls = 0; !FINAL.has(job.status) && polls < 600; polls += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    job = unwrap(await client.GET("/api/processing/{job_id}/status", { headers, params: { path: { job_id: started.job_id } } }));
  }
  expect(job.status).toBe("completed");
  expect(job.outputs.length).toBeGreaterThanOrEqual(1);

  const output = job.outputs[0];
  if (!output) throw new Error("a completed job has an output");
  const bytes = new Uint8Array(await (await fetch(new URL(output.url, server.base))).arrayBuffer());
  expect(bytes.length).toBe(output.file_size);
  expect(Array.from(bytes.slice(0, 4))).toEqual([0x89, 0x50, 0x4e, 0x47]);

  const zip = await client.GET("/api/processing/{job_id}/download", {
    headers,
    params: { path: { job_id: started.job_id } },
    parseAs: "arrayBuffer",
  });
  expect(zip.response.status).toBe(200);
  expect(Array.from(new Uint8Array(zip.data ?? new ArrayBuffer(0)).slice(0, 2))).toEqual([0x50, 0x4b]);

  const completed = unwrap(await client.GET("/api/processing/jobs", { headers, params: { query: { status: ["completed", "failed"] } } }));
  expect(completed.jobs.map((listed) => listed.job_id)).toEqual([started.job_id]);
});
