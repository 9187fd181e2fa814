// Pipelines in the studio: two steps built with the schema forms (one parameter refused inline,
// naming its step's field), saved under a name, run on the uploaded image with live per-step
// progress to the final result, and loaded again from the saved ones.
import { api, axe, body, expect, expectNoProblems, register, shot, test, uploadImage, type Image } from "./fixtures";

const DESKTOP = { viewport: { width: 1280, height: 900 } };

interface Run {
  id: string;
  status: string;
  result_image_id?: string | null;
  steps: { status: string; input_image_id?: string | null; result_image_id?: string | null }[];
}

test("pipelines: a two-step pipeline is built, saved and run in the studio", async ({ newPage }) => {
  const { page } = await newPage(DESKTOP);
  await register(page);
  const imageId = await uploadImage(page, "pipeline-in.png", 5);

  await page.getByRole("button", { name: "Pipeline", exact: true }).click();
  const builder = page.getByTestId("pipeline-builder");
  await builder.getByLabel("Step 1", { exact: true }).selectOption({ label: "Line art" });
  await builder.getByRole("button", { name: "Add step" }).click();
  const second = builder.getByTestId("pipeline-step-1");
  await second.getByLabel("Step 2", { exact: true }).selectOption({ label: "ESRGAN upscaler" });

  // A value the schema refuses is named beside its field, on its step.
  const tile = second.getByRole("spinbutton", { name: /Tile size/ });
  await tile.fill("-5");
  await expect(tile).toHaveAttribute("aria-invalid", "true");
  await expect(builder.getByTestId("run-pipeline")).toBeDisabled();
  await tile.fill("0");
  await expect(tile).not.toHaveAttribute("aria-invalid", "true");
  await expect(builder.getByTestId("run-pipeline")).toBeEnabled();

  // Reordering and removing a third step leaves the two.
  await builder.getByRole("button", { name: "Add step" }).click();
  await builder.getByRole("button", { name: "Move step 3 up" }).click();
  await builder.getByRole("button", { name: "Remove step 2" }).click();
  await expect(builder.getByTestId("pipeline-step-2")).toHaveCount(0);
  await expect(builder.getByLabel("Step 2", { exact: true })).toHaveValue("esrgan-upscale");

  await builder.getByLabel("Name").fill("Lines, then upscale");
  await builder.getByRole("button", { name: "Save pipeline" }).click();
  await expect(builder.getByText("Saved as “Lines, then upscale”.")).toBeVisible();
  await axe(page, "pipeline builder");
  await shot(page, "pipeline-builder");

  await builder.getByTestId("run-pipeline").click();
  await page.waitForURL(/\/pipeline-runs\//);
  const runId = page.url().split("/pipeline-runs/")[1] ?? "";
  await expect(page.getByTestId("run-status")).toHaveAttribute("data-status", "completed", { timeout: 60_000 });
  await expect(page.getByTestId("run-step-0")).toHaveAttribute("data-status", "completed");
  await expect(page.getByTestId("run-step-1")).toHaveAttribute("data-status", "completed");
  const run = body(await api(page, `/api/pipeline-runs/${runId}`)) as Run;
  expect(run.steps[0]?.input_image_id).toBe(imageId);
  expect(run.steps[1]?.input_image_id, "step 2 ran on step 1's result").toBe(run.steps[0]?.result_image_id);
  const result = body(await api(page, `/api/images/${run.result_image_id ?? ""}`)) as Image;
  expect([result.width, result.height], "96×64, then twice as large").toEqual([192, 128]);
  await axe(page, "pipeline run");
  await shot(page, "pipeline-run");

  // The saved pipeline loads back into the builder.
  await page.goto("/?mode=pipeline");
  const again = page.getByTestId("pipeline-builder");
  await again.getByLabel("Saved pipelines").selectOption({ label: "Lines, then upscale (2 steps)" });
  await expect(again.getByLabel("Step 1", { exact: true })).toHaveValue("lineart");
  await expect(again.getByLabel("Step 2", { exact: true })).toHaveValue("esrgan-upscale");
  await expect(again.getByLabel("Name")).toHaveValue("Lines, then upscale");
  expectNoProblems(page);
});
