import react from "@vitejs/plugin-react";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";
import { VitePWA } from "vite-plugin-pwa";

// Same-origin API under the gateway: in `npm run dev`, proxy it to a running `atelier serve`.
const gateway = process.env.ATELIER_GATEWAY ?? "http://127.0.0.1:8080";

export default defineConfig({
  resolve: { alias: { "@": fileURLToPath(new URL("./src", import.meta.url)) } },
  server: {
    proxy: { "/api": gateway, "/files": gateway, "/.well-known": gateway },
  },
  build: {
    target: "es2022",
    sourcemap: false,
    // The API docs are copied in after the app is built (scripts/build-docs.mjs).
    emptyOutDir: true,
    manifest: true,
  },
  plugins: [
    react(),
    VitePWA({
      registerType: "autoUpdate",
      injectRegister: "script",
      includeAssets: ["icon.svg"],
      manifest: {
        name: "Atelier",
        short_name: "Atelier",
        description: "Run fal.ai workflows on your images",
        start_url: "/",
        scope: "/",
        display: "standalone",
        background_color: "#ffffff",
        theme_color: "#4338ca",
        icons: [
          { src: "/icon-192.png", sizes: "192x192", type: "image/png" },
          { src: "/icon-512.png", sizes: "512x512", type: "image/png" },
          { src: "/icon-512.png", sizes: "512x512", type: "image/png", purpose: "maskable" },
          { src: "/icon.svg", sizes: "any", type: "image/svg+xml" },
        ],
      },
      workbox: {
        globPatterns: ["**/*.{js,css,html,svg,png,webmanifest}"],
        globIgnores: ["api-docs/**"],
        navigateFallback: "/index.html",
        // The API, its docs, signed files and the admin endpoints are never the app.
        navigateFallbackDenylist: [/^\/api\//, /^\/files\//, /^\/\.well-known\//, /^\/(metrics|healthz|readyz)/],
        cleanupOutdatedCaches: true,
        runtimeCaching: [
          {
            // What was seen stays viewable offline: job status, history, images, the catalogue.
            urlPattern: ({ url, request }) =>
              request.method === "GET" &&
              /^\/api\/(processing\/[^/]+\/status|users\/(history|profile|settings)|images|workflows)/.test(
                url.pathname,
              ),
            handler: "NetworkFirst",
            options: {
              cacheName: "atelier-api",
              networkTimeoutSeconds: 4,
              expiration: { maxEntries: 300, maxAgeSeconds: 7 * 24 * 3600 },
              cacheableResponse: { statuses: [200] },
            },
          },
          {
            // Signed URLs change their query on every fetch; the path names one stored object.
            urlPattern: ({ url, request }) => request.method === "GET" && url.pathname.startsWith("/files/"),
            handler: "CacheFirst",
            options: {
              cacheName: "atelier-files",
              matchOptions: { ignoreSearch: true },
              expiration: { maxEntries: 400, maxAgeSeconds: 30 * 24 * 3600 },
              cacheableResponse: { statuses: [200] },
            },
          },
        ],
      },
    }),
  ],
});
