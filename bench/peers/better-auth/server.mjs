// The Better Auth peer of bench/run: the same request as Gatehouse's API-key workload
// (GET /v1/me with a key in x-api-key), answered by Better Auth 1.7 with its api-key plugin
// on PostgreSQL (the pure-JS `pg` driver).
//
// The key is checked the way the plugin's documentation says a server checks one:
// `auth.api.verifyApiKey({ body: { key } })` (the server-only POST /api-key/verify endpoint),
// which answers { valid, error, key }. The plugin's defaults are kept, except that its
// per-key rate limit (10 requests a day by default) is raised out of the load's reach, as
// bench/run does for Gatehouse: every request is still counted and decided, and that
// bookkeeping is written to the database on every verification, which is how the plugin
// works (deferUpdates is off by default).
//
// Usage:
//   DATABASE_URL=postgres://… PORT=… BETTER_AUTH_SECRET=… node server.mjs setup
//       creates the tables (Better Auth's own migrations), a user and a key; prints the key
//   DATABASE_URL=postgres://… PORT=… BETTER_AUTH_SECRET=… node server.mjs serve
//       serves GET /v1/me on 127.0.0.1:PORT
import http from "node:http";
import pg from "pg";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { apiKey } from "@better-auth/api-key";

const databaseUrl = process.env.DATABASE_URL;
const port = Number(process.env.PORT || 8091);
if (!databaseUrl) {
  console.error("DATABASE_URL is required");
  process.exit(2);
}

const auth = betterAuth({
  baseURL: `http://127.0.0.1:${port}`,
  secret: process.env.BETTER_AUTH_SECRET,
  database: new pg.Pool({ connectionString: databaseUrl, max: 16 }),
  emailAndPassword: { enabled: true },
  telemetry: { enabled: false },
  plugins: [
    apiKey({
      rateLimit: { enabled: true, timeWindow: 1000, maxRequests: 1_000_000_000 },
    }),
  ],
});

const OK_BODY = JSON.stringify({ success: true, data: { kind: "api_key" } });
const UNAUTHORIZED_BODY = JSON.stringify({
  success: false,
  error: { code: "unauthorized", message: "invalid API key" },
});

async function setup() {
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
  const email = `bench-${Date.now()}@example.com`;
  const signedUp = await auth.api.signUpEmail({
    body: { email, password: "bench-password-not-secret", name: "bench" },
  });
  const created = await auth.api.createApiKey({
    body: { name: "bench", userId: signedUp.user.id },
  });
  if (!created?.key) throw new Error("createApiKey returned no key");
  process.stdout.write(`${created.key}\n`);
}

function serve() {
  const server = http.createServer(async (req, res) => {
    if (req.method !== "GET" || req.url !== "/v1/me") {
      res.writeHead(404).end();
      return;
    }
    const key = req.headers["x-api-key"];
    let ok = false;
    if (typeof key === "string" && key.length > 0) {
      try {
        const result = await auth.api.verifyApiKey({ body: { key } });
        ok = result?.valid === true;
      } catch (e) {
        console.error("verifyApiKey failed:", e);
      }
    }
    res.writeHead(ok ? 200 : 401, { "content-type": "application/json" });
    res.end(ok ? OK_BODY : UNAUTHORIZED_BODY);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port, "127.0.0.1", () => {
    console.error(`better-auth peer listening on 127.0.0.1:${port}`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

const mode = process.argv[2];
if (mode === "setup") {
  setup().then(
    () => process.exit(0),
    (e) => {
      console.error(e?.stack || String(e));
      process.exit(1);
    },
  );
} else if (mode === "serve") {
  serve();
} else {
  console.error("usage: node server.mjs setup|serve");
  process.exit(2);
}
