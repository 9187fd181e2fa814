// Starts the real `atelier serve` (every service, the embedded fal simulator) on free
// loopback ports with a fresh data directory, serving the built web app.
import { spawn } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** The simulator's run-time knobs (PUT /_sim/knobs); an empty object restores the defaults. */
export interface Knobs {
  processing_time_ms?: number;
  queue_delay_ms?: number;
  hang?: boolean;
  error_rate?: number;
  error_type?: string;
}

export interface Atelier {
  /** The gateway's origin, e.g. http://127.0.0.1:41234. */
  base: string;
  knobs: (body: Knobs) => Promise<void>;
  /** `atelier admin grant EMAIL` against this server (its operator certificate). */
  grantAdmin: (email: string) => Promise<void>;
  stop: () => Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.unref();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => {
        done(port);
      });
    });
  });
}

/** $ATELIER_BIN, else the debug build under $CARGO_TARGET_DIR (or the repository's target/). */
export function atelierBinary(webRoot: string): string {
  if (process.env.ATELIER_BIN) return resolve(process.env.ATELIER_BIN);
  const target = process.env.CARGO_TARGET_DIR ?? join(webRoot, "..", "..", "target");
  return resolve(target, "debug", "atelier");
}

export async function startAtelier({ webRoot, logFile }: { webRoot: string; logFile: string }): Promise<Atelier> {
  const binary = atelierBinary(webRoot);
  if (!existsSync(binary)) throw new Error(`no atelier binary at ${binary}: build it (cargo build --workspace --bins) or set ATELIER_BIN`);
  const dataDir = await mkdtemp(join(tmpdir(), "atelier-e2e-"));
  const names = ["GATEWAY_ADDR", "ADMIN_ADDR", "AUTH_GRPC_ADDR", "IMAGE_GRPC_ADDR", "PROCESSING_GRPC_ADDR", "WORKFLOW_GRPC_ADDR", "USER_GRPC_ADDR", "FAL_SIM_ADDR"];
  const addrs: Record<string, string> = {};
  for (const name of names) addrs[name] = `127.0.0.1:${await freePort()}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...addrs,
    DATA_DIR: dataDir,
    // E2E_WEB_DIR=/nonexistent serves the copy built into the binary (gateway/src/web.rs).
    WEB_DIR: process.env.E2E_WEB_DIR ?? join(webRoot, "dist"),
    RUST_LOG: process.env.RUST_LOG ?? "warn",
    LOG_FORMAT: "json",
    RATE_LIMIT_PER_IP: "100000",
    RATE_LIMIT_PER_USER: "100000",
    RATE_LIMIT_PER_KEY: "100000",
    RATE_LIMIT_LOGIN_PER_IP: "10000",
    // Short-lived access tokens: the app refreshes a minute before expiry, so every test
    // runs through refreshes, and "stays signed in" sees one happen.
    ACCESS_TOKEN_TTL_SECS: "75",
    // A small daily job quota, so a refusal can be seen (no test user starts more).
    TIER_FREE_JOBS_PER_DAY: "3",
    // No storage limit, so the settings page shows a limit the plan does not have.
    TIER_FREE_STORAGE_BYTES: "unlimited",
  };
  for (const name of ["DATABASE_URL", "REDIS_URL", "S3_BUCKET", "S3_ENDPOINT", "FAL_KEY", "PUBLIC_URL"]) Reflect.deleteProperty(env, name);
  const log = createWriteStream(logFile);
  const child = spawn(binary, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const running = () => child.exitCode === null && child.signalCode === null;

  const stop = async () => {
    if (running()) {
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
      if (running()) child.kill("SIGKILL");
    }
    log.end();
    await rm(dataDir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 120_000;
  for (;;) {
    if (!running()) {
      await stop();
      throw new Error(`atelier serve exited (code ${child.exitCode ?? "none"}, signal ${child.signalCode ?? "none"}); see ${logFile}`);
    }
    try {
      const response = await fetch(`http://${addrs.ADMIN_ADDR ?? ""}/readyz`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`atelier serve not ready after 120 s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }

  const sim = `http://${addrs.FAL_SIM_ADDR ?? ""}`;
  return {
    base: `http://${addrs.GATEWAY_ADDR ?? ""}`,
    async knobs(body) {
      const response = await fetch(`${sim}/_sim/knobs`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) throw new Error(`knobs: ${response.status} ${await response.text()}`);
    },
    async grantAdmin(email) {
      const granted = spawn(binary, ["admin", "grant", email], { env, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      granted.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      granted.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
      const code = await new Promise<number | null>((done) => granted.once("exit", done));
      if (code !== 0) throw new Error(`atelier admin grant ${email}: exit ${code ?? "none"}: ${output}`);
    },
    stop,
  };
}
