// Share links: a user shares a result (with its original beside it) from the job page, a fresh
// signed-out browser opens the link and sees the before/after view, the owner revokes it in
// Settings, and the link then shows its "expired or revoked" page.
import { axe, expect, expectNoProblems, finished, imagesLoaded, register, shot, startJob, test, uploadPng } from "./fixtures";

test("shares: a result shared from the job page opens signed out, until it is revoked", async ({ newPage }) => {
  const { page } = await newPage({ viewport: { width: 1280, height: 900 }, permissions: ["clipboard-read", "clipboard-write"] });
  await register(page);
  const input = await uploadPng(page, "private-name.png", 200, 150, 5);
  const jobId = await startJob(page, input.id, "canny-edges");
  const job = await finished(page, jobId);
  expect(job.status, JSON.stringify(job.error)).toBe("completed");

  await page.goto(`/jobs/${jobId}`);
  await page.getByTestId("share-open").click();
  const dialog = page.getByRole("dialog", { name: "Share a link" });
  await dialog.getByLabel("Expires after").selectOption({ label: "1 day" });
  await expect(dialog.getByTestId("share-before-after")).toBeChecked();
  await dialog.getByTestId("share-create").click();
  const url = await dialog.getByTestId("share-url").inputValue();
  expect(url).toMatch(/\/s\/[A-Za-z0-9_-]{43}$/);
  await dialog.getByTestId("share-copy").click();
  await expect(dialog.getByTestId("share-copy")).toHaveText("Copied");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(url);
  await axe(page, "share dialog");
  await shot(page, "shares-dialog");
  await dialog.getByRole("button", { name: "Done" }).click();

  // A fresh browser, signed out: the before/after view, a download, the expiry.
  const stranger = await newPage({ viewport: { width: 1280, height: 900 } });
  await stranger.page.goto(url);
  await expect(stranger.page.getByRole("heading", { name: "Before and after" })).toBeVisible();
  await imagesLoaded(stranger.page, "[data-testid=compare-after]");
  await imagesLoaded(stranger.page, "[data-testid=compare-before]");
  await expect(stranger.page.getByTestId("shared-expiry")).toContainText(/expires in (23|24) hours/);
  await expect(stranger.page.getByTestId("shared-download")).toHaveAttribute("download", "atelier-shared.png");
  await expect(stranger.page.getByText("private-name")).toHaveCount(0);
  await expect(stranger.page.getByRole("button", { name: "Sign out" })).toHaveCount(0);
  await axe(stranger.page, "shared page");
  await shot(stranger.page, "shares-public-view");
  expectNoProblems(stranger.page);

  // The owner revokes it in Settings.
  await page.goto("/settings");
  const links = page.getByTestId("share-links");
  const row = links.getByTestId("share-link").first();
  await expect(row).toHaveAttribute("data-state", "active");
  await expect(row).toContainText("1 view");
  await row.getByTestId("share-revoke").click();
  await page.getByRole("dialog", { name: "Revoke this link?" }).getByRole("button", { name: "Revoke" }).click();
  await expect(links.getByTestId("share-link").first()).toHaveAttribute("data-state", "revoked");
  await shot(page, "shares-settings-revoked");
  expectNoProblems(page);

  // The signed-out browser now gets the "expired or revoked" page.
  await stranger.page.reload();
  await expect(stranger.page.getByTestId("share-unavailable")).toBeVisible();
  await expect(stranger.page.getByRole("heading", { name: "This link has expired or was revoked" })).toBeVisible();
  await axe(stranger.page, "revoked share page");
  await shot(stranger.page, "shares-revoked");
  expectNoProblems(stranger.page);
});
