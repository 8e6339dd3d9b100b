// The API reference at /docs: Swagger UI from the assets installed with the service (no CDN), started here
// rather than in an inline script, so the page keeps a content policy without 'unsafe-inline' scripts.
"use strict";
window.addEventListener("load", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
