// Share links over REST: create, list and revoke your own; read a shared image without a session.
import { api, publicApi, unwrap, type Schemas } from "./client";

export type ShareLink = Schemas["ShareLinkBody"];
export type CreatedShare = Schemas["CreatedShareBody"];
export type SharedView = Schemas["SharedBody"];
export type SharedImage = Schemas["SharedImageBody"];

export interface ShareOptions {
  expiresInSeconds: number;
  beforeAfter: boolean;
}

export async function createShare(imageId: string, options: ShareOptions): Promise<CreatedShare> {
  return unwrap(
    await api.POST("/api/images/{id}/shares", {
      params: { path: { id: imageId } },
      body: { expires_in_seconds: options.expiresInSeconds, before_after: options.beforeAfter },
    }),
  );
}

export async function listShares(pageToken?: string): Promise<Schemas["ShareList"]> {
  return unwrap(await api.GET("/api/shares", { params: { query: { page_size: 100, page_token: pageToken } } }));
}

export async function revokeShare(id: string): Promise<void> {
  const { response, error } = await api.DELETE("/api/shares/{id}", { params: { path: { id } } });
  unwrap({ data: undefined, error, response });
}

/** What a share link shows; the caller needs no session (and none is sent). */
export async function getShared(token: string): Promise<SharedView> {
  return unwrap(await publicApi.GET("/api/shared/{token}", { params: { path: { token } } }));
}
