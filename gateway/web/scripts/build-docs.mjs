// Adds the API docs to the built app (run after `vite build`):
//   dist/api-docs/      Swagger UI at /api/docs/, reading /api/openapi.json
// No inline scripts or styles: the gateway's Content-Security-Policy forbids them.
import { copyFile, mkdir, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const apiDocs = join(root, "dist", "api-docs");
const require = createRequire(import.meta.url);
const swaggerDir = dirname(require.resolve("swagger-ui-dist/package.json"));
const swaggerVersion = require("swagger-ui-dist/package.json").version;

const DOCS_BASE = "/api/docs/";
const OPENAPI_URL = "/api/openapi.json";
const SWAGGER_FILES = [
  "swagger-ui.css",
  "swagger-ui-bundle.js",
  "swagger-ui-standalone-preset.js",
  "favicon-32x32.png",
];

const docsHtml = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Atelier API</title>
    <link rel="stylesheet" href="${DOCS_BASE}swagger-ui.css">
    <link rel="icon" type="image/png" href="${DOCS_BASE}favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${DOCS_BASE}swagger-ui-bundle.js"></script>
    <script src="${DOCS_BASE}swagger-ui-standalone-preset.js"></script>
    <script src="${DOCS_BASE}init.js"></script>
  </body>
</html>
`;

const docsInit = `window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: ${JSON.stringify(OPENAPI_URL)},
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
});
`;

await rm(apiDocs, { recursive: true, force: true });
await mkdir(apiDocs, { recursive: true });
await Promise.all(SWAGGER_FILES.map((f) => copyFile(join(swaggerDir, f), join(apiDocs, f))));
await Promise.all([
  writeFile(join(apiDocs, "index.html"), docsHtml),
  writeFile(join(apiDocs, "init.js"), docsInit),
]);
console.log(`web: API docs in ${apiDocs} (swagger-ui-dist ${swaggerVersion})`);
