// The estimate of what Start would make and cost, asked again (debounced) as the selection and
// parameters change: POST /api/workflows/{id}/estimate.
import { useEffect, useRef, useState } from "react";
import { api, unwrap, type Schemas } from "@/api/client";
import type { JsonValue } from "@/lib/schemaForm";

export type Estimate = Schemas["EstimateResult"];

export interface EstimateState {
  data: Estimate | undefined;
  error: unknown;
  loading: boolean;
}

const DEBOUNCE_MS = 400;

export function useEstimate(workflowId: string | null, imageIds: string[], parameters: Record<string, JsonValue>, enabled: boolean): EstimateState {
  const [state, setState] = useState<EstimateState>({ data: undefined, error: null, loading: false });
  const key = JSON.stringify([workflowId, imageIds, parameters]);
  const latest = useRef(0);
  useEffect(() => {
    if (!workflowId || imageIds.length === 0 || !enabled) {
      setState({ data: undefined, error: null, loading: false });
      return;
    }
    const call = ++latest.current;
    setState((current) => ({ ...current, loading: true }));
    const timer = setTimeout(() => {
      api
        .POST("/api/workflows/{id}/estimate", { params: { path: { id: workflowId } }, body: { image_ids: imageIds, parameters } })
        .then((result) => {
          if (call === latest.current) setState({ data: unwrap(result), error: null, loading: false });
        })
        .catch((error: unknown) => {
          if (call === latest.current) setState({ data: undefined, error, loading: false });
        });
    }, DEBOUNCE_MS);
    return () => clearTimeout(timer);
    // `key` stands for the three inputs, compared by value.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, enabled]);
  return state;
}
