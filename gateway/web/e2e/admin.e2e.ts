// The admin console: an administrator made with `atelier admin grant` sees the Admin entry and
// every tab of the console loads; a workflow disabled there disappears from the studio (and
// comes back when enabled); anyone else gets "page not found" at /admin and no Admin entry.
import { api, body, expect, expectNoProblems, register, test, type Workflow } from "./fixtures";

test("an administrator manages the platform from the console; others never see it", async ({ newPage, server }) => {
  // Someone who is not an administrator.
  const { page: user } = await newPage();
  expectNoProblems(user);
  await register(user);
  await expect(user.getByRole("link", { name: "Admin" })).toHaveCount(0);
  await user.goto("/admin");
  await expect(user.getByRole("heading", { name: "Page not found" })).toBeVisible();
  expect((await api(user, "/api/admin/workflows")).status).toBe(404);

  // An administrator, made with the CLI; the role arrives with the next sign-in.
  const { page } = await newPage();
  expectNoProblems(page);
  const email = await register(page);
  await server.grantAdmin(email);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill("correct horse battery staple");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Studio" }).waitFor();
  await page.getByRole("link", { name: "Admin" }).click();
  await expect(page.getByRole("heading", { name: "Admin console" })).toBeVisible();

  // Every tab loads.
  await expect(page.getByRole("cell", { name: email })).toBeVisible();
  for (const [tab, shown] of [
    ["Workflows", "Add a workflow from a fal endpoint"],
    ["Queue", "Dead letters"],
    ["fal", "Circuit breakers"],
    ["Audit log", "Action starts with"],
  ] as const) {
    await page.getByRole("button", { name: tab, exact: true }).click();
    await expect(page.getByText(shown).first()).toBeVisible();
  }
  await expect(page.getByRole("link", { name: "Analytics" })).toHaveAttribute("href", "/admin/analytics");

  // Disabled in the console: gone from the studio; enabled again: back.
  const catalogue = (body(await api(page, "/api/workflows")) as { workflows: Workflow[] }).workflows;
  const target = catalogue.find((workflow) => workflow.id === "lineart") ?? catalogue[0];
  if (!target) throw new Error("the catalogue is empty");
  await page.getByRole("button", { name: "Workflows", exact: true }).click();
  const row = page.locator(`tr[data-workflow="${target.id}"]`);
  try {
    await row.getByRole("button", { name: "Disable" }).click();
    await expect(row.getByRole("cell", { name: "disabled" })).toBeVisible();
    // The analytics figures show a dash until the platform has them.
    await expect(row.getByRole("cell", { name: "—" }).first()).toBeVisible();
    await user.goto("/");
    await user.getByRole("heading", { name: "Studio" }).waitFor();
    await expect(user.getByRole("radio", { name: new RegExp(target.name) })).toHaveCount(0);
  } finally {
    await row.getByRole("button", { name: "Enable" }).click();
    await expect(row.getByRole("cell", { name: "enabled" })).toBeVisible();
  }
  await user.goto("/");
  await expect(user.getByRole("radio", { name: new RegExp(target.name) }).first()).toBeVisible();

  // The changes are in the audit log.
  await page.getByRole("button", { name: "Audit log", exact: true }).click();
  await page.getByLabel("Action starts with").fill("workflow.");
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page.getByRole("cell", { name: "workflow.disabled" })).toBeVisible();
  await expect(page.getByRole("cell", { name: "workflow.enabled" })).toBeVisible();
});
