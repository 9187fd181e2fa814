import { describe, expect, it } from "vitest";
import { addStep, errorsByStep, fromSaved, hasErrors, MAX_STEPS, moveStep, newStep, removeStep, setValue, setWorkflow } from "./pipelineDraft";

describe("pipeline drafts", () => {
  it("adds steps up to the limit, removes and moves them without touching the others", () => {
    let steps = [newStep("rembg"), newStep("esrgan", { scale: 2 })];
    steps = addStep(steps, "canny");
    expect(steps.map((s) => s.workflowId)).toEqual(["rembg", "esrgan", "canny"]);
    const moved = moveStep(steps, 2, -1);
    expect(moved.map((s) => s.workflowId)).toEqual(["rembg", "canny", "esrgan"]);
    expect(moved[2]?.values).toEqual({ scale: 2 });
    expect(moveStep(steps, 0, -1)).toBe(steps);
    expect(moveStep(steps, 2, 1)).toBe(steps);
    expect(removeStep(steps, 1).map((s) => s.workflowId)).toEqual(["rembg", "canny"]);
    let full = steps;
    for (let i = 0; i < 10; i++) full = addStep(full, "lineart");
    expect(full).toHaveLength(MAX_STEPS);
    expect(new Set(full.map((s) => s.key)).size).toBe(MAX_STEPS);
  });

  it("resets a step's values when its workflow changes, and sets one value at a time", () => {
    const steps = [newStep("esrgan", { scale: 2 })];
    expect(setWorkflow(steps, 0, "canny")[0]).toMatchObject({ workflowId: "canny", values: {} });
    expect(setValue(steps, 0, "scale", 4)[0]?.values).toEqual({ scale: 4 });
    expect(steps[0]?.values).toEqual({ scale: 2 });
  });

  it("reads saved steps", () => {
    const steps = fromSaved([{ workflow_id: "esrgan", parameters: { scale: 3 } }]);
    expect(steps[0]).toMatchObject({ workflowId: "esrgan", values: { scale: 3 } });
  });

  it("sorts violations onto the step and field they name", () => {
    const errors = errorsByStep(
      [
        { field: "steps[1].parameters.scale", detail: "must be at most 8" },
        { field: "steps[2].workflow_id", detail: "there is no workflow" },
        { field: "steps[0].parameters", detail: "is not an object" },
        { field: "steps", detail: "must list between 1 and 8 steps" },
        { field: "steps[7].workflow_id", detail: "beyond the draft" },
      ],
      3,
    );
    expect(errors.steps).toEqual([{ _step: "is not an object" }, { scale: "must be at most 8" }, { _step: "there is no workflow" }]);
    expect(errors.general).toEqual(["steps: must list between 1 and 8 steps", "steps[7].workflow_id: beyond the draft"]);
    expect(hasErrors(errors)).toBe(true);
    expect(hasErrors(errorsByStep([], 2))).toBe(false);
  });
});
