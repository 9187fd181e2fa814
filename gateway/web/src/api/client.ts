// The one API client: typed from the gateway's OpenAPI document (schema.gen.ts is generated
// from ../openapi.json by `npm run gen:api`), with the caller's access token attached.
import createClient, { type Middleware } from "openapi-fetch";
import { ApiError } from "./problem";
import type { components, paths } from "./schema.gen";

export type Schemas = components["schemas"];
export type Job = Schemas["JobBody"];
export type JobStatus = Schemas["JobStatus"];
export type Image = Schemas["ImageBody"];
export type Workflow = Schemas["WorkflowBody"];
export type Batch = Schemas["BatchBody"];
export type TokenResponse = Schemas["TokenResponse"];

type TokenProvider = () => Promise<string | null>;
let tokenProvider: TokenProvider = () => Promise.resolve(null);
let onUnauthorized: () => void = () => {};

/** The auth store tells the client where tokens come from, and what to do on a 401. */
export function configureAuth(provider: TokenProvider, unauthorized: () => void): void {
  tokenProvider = provider;
  onUnauthorized = unauthorized;
}

export function currentToken(): Promise<string | null> {
  return tokenProvider();
}

const origin = typeof window === "undefined" ? "http://localhost" : window.location.origin;

const withToken: Middleware = {
  async onRequest({ request }) {
    const token = await tokenProvider();
    if (token && !request.headers.has("authorization")) {
      request.headers.set("authorization", `Bearer ${token}`);
    }
    return request;
  },
  onResponse({ response, request }) {
    if (response.status === 401 && request.headers.has("authorization")) onUnauthorized();
    return response;
  },
};

/** A client of the API at `baseUrl`. Arrays in a query are comma-separated
 * (`status=completed,failed`), as the API declares them. */
export function apiClient(baseUrl: string) {
  return createClient<paths>({ baseUrl, querySerializer: { array: { style: "form", explode: false } } });
}

/** Calls that need no session (sign in, register, refresh). */
export const publicApi = apiClient(origin);
/** Everything else. */
export const api = apiClient(origin);
api.use(withToken);

/** The data of an openapi-fetch result, or its problem as an ApiError. */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (!result.response.ok || result.error !== undefined) {
    throw new ApiError(result.response.status, result.error ?? {});
  }
  return result.data as T;
}

/** A fresh idempotency key per user action, so a retried request never starts twice. */
export function idempotencyKey(): string {
  return crypto.randomUUID();
}
