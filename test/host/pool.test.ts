/**
 * The provider process's SSH connections (provider/host/pool.ts) against real SSH servers on
 * loopback (./ssh2host.ts, whose execs run `bash -c` here): operations on one host share one
 * connection, and only operations that would have dialed it identically; a failed dial is never
 * kept; a broken connection is dialed again once; at most `maxChannels` commands run on one
 * connection; an idle connection closes by itself and never keeps a process alive.
 */
import { spawn } from "child_process";
import { join } from "path";
import type { ConnectionArgs } from "../../provider/args";
import type { HostExec, SessionOptions } from "../../provider/host";
import { SshPool, poolKey } from "../../provider/host/pool";
import { ed25519, startSsh2Host, type Ssh2Host } from "./ssh2host";
import { hostError } from "./support";

jest.setTimeout(60_000);

const KEY = ed25519().private;
const OTHER_KEY = ed25519().private;
const ZERO = { connections: 0, reusedConnections: 0, proxyConnections: 0 };

let server: Ssh2Host;
let pool: SshPool;
const servers: Ssh2Host[] = [];

async function serve(opts: { maxSessions?: number } = {}): Promise<Ssh2Host> {
  const s = await startSsh2Host({ shell: { argv: ["bash", "-c"] }, ...opts });
  servers.push(s);
  return s;
}

beforeEach(async () => {
  server = await serve();
  pool = new SshPool({ idleMs: 60_000 });
});

afterEach(async () => {
  pool.closeAll();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function conn(extra: Partial<ConnectionArgs> = {}): ConnectionArgs {
  return { host: "127.0.0.1", port: server.port, hostKey: server.hostKey, privateKey: KEY, ...extra };
}

/** One operation: take the connection, run one command, give it back; its counters. */
async function operation(c: ConnectionArgs = conn(), options: SessionOptions = {}, command = "echo ok") {
  const s = await pool.connect(c, options);
  try {
    const r = await s.exec("op", command);
    expect(r).toMatchObject({ code: 0 });
    return { ...s.stats };
  } finally {
    s.close();
  }
}

const sum = (stats: { connections: number; reusedConnections: number }[]) => ({
  connections: stats.reduce((n, s) => n + s.connections, 0),
  reusedConnections: stats.reduce((n, s) => n + s.reusedConnections, 0),
});

describe("sharing", () => {
  test("three operations on one host at once run on one connection: one dials it, two reuse it", async () => {
    const stats = await Promise.all([operation(), operation(), operation()]);
    expect(server.connections).toBe(1);
    expect(sum(stats)).toEqual({ connections: 1, reusedConnections: 2 });
    for (const s of stats) expect(s).toMatchObject({ roundTrips: 1 });
    expect(pool.size).toBe(1);
  });

  test("operations one after the other reuse the connection while it is open", async () => {
    const first = await operation();
    const second = await operation();
    const third = await operation();
    expect(server.connections).toBe(1);
    expect([first, second, third]).toMatchObject([
      { ...ZERO, connections: 1, dialAttempts: 1 },
      { ...ZERO, reusedConnections: 1, dialAttempts: 0 },
      { ...ZERO, reusedConnections: 1, dialAttempts: 0 },
    ]);
  });

  test("another user, key, password, pin, recorded key or port never shares a connection", async () => {
    const other = await serve();
    const variants: [ConnectionArgs, SessionOptions][] = [
      [conn(), {}],
      [conn({ user: "deploy" }), {}],
      [conn({ privateKey: OTHER_KEY }), {}],
      [conn({ password: "x" }), {}],
      [conn({ hostKey: undefined }), {}],
      [conn({ hostKey: undefined }), { trustedHostKeys: { host: server.hostKeyFingerprint } }],
      [conn({ port: other.port, hostKey: other.hostKey }), {}],
    ];
    const stats = await Promise.all(variants.map(([c, o]) => operation(c, o)));
    expect(sum(stats)).toEqual({ connections: variants.length, reusedConnections: 0 });
    expect(server.connections + other.connections).toBe(variants.length);
    expect(new Set(variants.map(([c, o]) => poolKey(c, o))).size).toBe(variants.length);
    expect(server.logins).toContain("deploy");
  });

  test("what only changes the commands (sudo), or a recorded key under a pin, shares it", async () => {
    const stats = await Promise.all([
      operation(conn()),
      operation(conn({ sudo: false })),
      operation(conn(), { trustedHostKeys: { host: "SHA256:recorded-but-pinned-over" } }),
    ]);
    expect(sum(stats)).toEqual({ connections: 1, reusedConnections: 2 });
  });

  test("the pool's key is a hash: no credential in it", () => {
    const key = poolKey(conn({ password: "hunter2" }), {});
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(key).not.toBe(poolKey(conn({ password: "hunter3" }), {}));
  });

  test("an unpinned host is warned about by every operation, also one reusing the connection", async () => {
    const warnings: string[] = [];
    const warn = (m: string) => warnings.push(m);
    await operation(conn({ hostKey: undefined }), { warn });
    await operation(conn({ hostKey: undefined }), { warn });
    expect(server.connections).toBe(1);
    expect(warnings).toHaveLength(2);
    for (const w of warnings) expect(w).toContain("connection.hostKey is not pinned");
  });
});

describe("failures are not kept", () => {
  test("a refused host key fails every time, dialing again each time, and leaves nothing in the pool", async () => {
    const wrong = { trustedHostKeys: { host: "SHA256:" + "A".repeat(43) } };
    for (let i = 1; i <= 2; i++) {
      const err = await hostError(pool.connect(conn({ hostKey: undefined }), wrong));
      expect(err.kind).toBe("host-key");
      expect(server.connections).toBe(i);
      expect(pool.size).toBe(0);
    }
    // The right key afterwards is a fresh, working connection.
    expect(await operation(conn())).toMatchObject({ connections: 1 });
  });

  test("operations waiting for a dial that fails all get its error", async () => {
    const wrong = { trustedHostKeys: { host: "SHA256:" + "B".repeat(43) } };
    const errs = await Promise.all(
      [1, 2, 3].map(() => hostError(pool.connect(conn({ hostKey: undefined }), wrong))),
    );
    for (const e of errs) expect(e.kind).toBe("host-key");
    expect(server.connections).toBe(1);
    expect(pool.size).toBe(0);
  });
});

describe("broken connections", () => {
  test("a connection that broke between operations leaves the pool; the next operation dials a new one", async () => {
    const s = await pool.connect(conn(), {});
    await s.exec("op", "true");
    s.destroy(); // the TCP connection cut, no goodbye
    s.close();
    await server.allClosed();
    expect(pool.size).toBe(0);
    expect(await operation()).toMatchObject({ ...ZERO, connections: 1 });
    expect(server.connections).toBe(2);
  });

  test("a reused connection lost before the command started is dialed again once, and the command runs there", async () => {
    await operation();
    server.dropSessions(1);
    const stats = await operation();
    expect(stats).toMatchObject({ connections: 1, reusedConnections: 1, roundTrips: 1 });
    expect(server.connections).toBe(2);
  });

  test("only once: lost again on the new connection, the operation fails", async () => {
    await operation();
    server.dropSessions(2);
    const s = await pool.connect(conn(), {});
    try {
      const err = await hostError(s.exec("op", "echo never"));
      expect(err.kind).toBe("command");
      expect(err.message).toMatch(/connection|Not connected/);
    } finally {
      s.close();
    }
    expect(server.connections).toBe(2);
  });

  test("a command that started is never run again, even when its connection breaks", async () => {
    const s = await pool.connect(conn(), {});
    try {
      const err = await hostError(
        s.exec("op", "echo started; cat >/dev/null", {
          endStdin: false,
          onStdout: (out) => {
            if (out.includes("started")) s.destroy();
          },
        }),
      );
      expect(err.message).toContain("connection");
    } finally {
      s.close();
    }
    expect(server.connections).toBe(1);
  });
});

/**
 * Five operations at once, each running a command that ends only once another one runs too (a
 * pair at a time): what the pool may run at once on the connection decides whether they all do.
 */
async function fiveInPairs(): Promise<number[]> {
  const running: { end(): void }[] = [];
  let started = 0;
  const ops = [1, 2, 3, 4, 5].map(async () => {
    const s = await pool.connect(conn(), {});
    try {
      const r = await s.exec("op", "echo started; cat >/dev/null", {
        endStdin: false,
        onStdout: (out, channel) => {
          if (!out.includes("started")) return;
          running.push(channel);
          started++;
          if (running.length === 2 || started === 5) for (const c of running.splice(0)) c.end();
        },
      });
      expect(s.stats).toMatchObject({ roundTrips: 1 });
      return r.code ?? -1;
    } finally {
      s.close();
    }
  });
  return Promise.all(ops);
}

describe("channels on one connection", () => {
  test("at most maxChannels commands run at once; the others wait their turn", async () => {
    // The server refuses a third session at once, as sshd does beyond MaxSessions.
    server = await serve({ maxSessions: 2 });
    pool = new SshPool({ idleMs: 60_000, maxChannels: 2 });
    expect(await fiveInPairs()).toEqual([0, 0, 0, 0, 0]);
    expect(server.refusedSessions).toBe(0);
    expect(server.connections).toBe(1);
  });

  test("a host allowing fewer sessions than maxChannels: refused commands wait for a running one to end, then run", async () => {
    server = await serve({ maxSessions: 2 });
    expect(await fiveInPairs()).toEqual([0, 0, 0, 0, 0]);
    expect(server.refusedSessions).toBeGreaterThan(0);
    expect(server.connections).toBe(1);
  });

  test("a channel refused with nothing else running is the operation's error", async () => {
    server = await serve({ maxSessions: 0 });
    const s = await pool.connect(conn(), {});
    try {
      const err = await hostError(s.exec("op", "echo never"));
      expect(err.message).toContain('could not start "op": (SSH) Channel open failure');
    } finally {
      s.close();
    }
    expect(server.refusedSessions).toBe(1);
  });
});

describe("idle connections", () => {
  test("close by themselves after idleMs, and the next operation dials again", async () => {
    pool = new SshPool({ idleMs: 200 });
    await operation();
    await server.allClosed();
    expect(pool.size).toBe(0);
    expect(await operation()).toMatchObject({ connections: 1 });
  });

  test("a connection still in use is not closed as idle", async () => {
    pool = new SshPool({ idleMs: 50 });
    const a = await pool.connect(conn(), {});
    const b = await pool.connect(conn(), {});
    a.close();
    // b holds it: a command long after idleMs still runs on the same connection.
    await expect(b.exec("op", "sleep 0.3; echo ok")).resolves.toMatchObject({ code: 0, stdout: "ok\n" });
    b.close();
    expect(server.connections).toBe(1);
  });

  test("a process whose operations are done exits without closing the pool", async () => {
    // A plain node process, as the engine's provider host is, loading the pool from its source.
    const script = `
      const ts = require("typescript");
      const fs = require("fs");
      require.extensions[".ts"] = (m, file) =>
        m._compile(ts.transpileModule(fs.readFileSync(file, "utf8"), {
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
        }).outputText, file);
      const { SshPool } = require(${JSON.stringify(join(__dirname, "..", "..", "provider", "host", "pool.ts"))});
      const pool = new SshPool({ idleMs: 500 });
      (async () => {
        const s = await pool.connect(JSON.parse(process.argv[1]), {});
        const r = await s.exec("op", "echo ok");
        s.close();
        process.stdout.write("ran " + r.stdout);
      })();
    `;
    const child = spawn(process.execPath, ["-e", script, JSON.stringify(conn())], {
      cwd: join(__dirname, "..", ".."),
    });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (out += b.toString()));
    const code = await new Promise<number | string>((resolve) => {
      // Far above idleMs: a pool that kept the process alive fails here, not by jest's timeout.
      const bound = setTimeout(() => {
        child.kill("SIGKILL");
        resolve("still running after 20 s");
      }, 20_000);
      child.on("exit", (c) => {
        clearTimeout(bound);
        resolve(c ?? "signal");
      });
    });
    expect({ code, out }).toEqual({ code: 0, out: "ran ok\n" });
    expect(server.connections).toBe(1);
  });
});

/** The HostExec seam holds for a pooled operation: host, user and sudo are its own. */
test("each operation keeps its own user and sudo", async () => {
  const s: HostExec = await pool.connect(conn({ user: "deploy", sudo: false }), {});
  const t: HostExec = await pool.connect(conn({ user: "deploy", sudo: true }), {});
  expect([s.user, s.sudo, t.user, t.sudo]).toEqual(["deploy", false, "deploy", true]);
  expect(s.hostKeys).toEqual({ host: server.hostKeyFingerprint });
  s.close();
  t.close();
  expect(server.connections).toBe(1);
});
