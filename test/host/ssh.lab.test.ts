/**
 * The SSH transport against real OpenSSH servers on loopback: authentication, host-key pinning,
 * retries with backoff, command timeouts, jump hosts, and that no secret leaks into errors.
 */
import { execFileSync, spawn } from "child_process";
import { readFileSync } from "fs";
import { join } from "path";
import { SshSession, expectedFingerprint, fingerprintOfKeyBlob } from "../../provider/host";
import { freePort, startLocalSshd, type LocalSshd } from "./sshd";
import { hostError } from "./support";

// Logins on a machine loaded by parallel labs can take seconds; jest's default 5 s is too tight.
jest.setTimeout(60_000);

let a: LocalSshd;
let b: LocalSshd;

beforeAll(async () => {
  [a, b] = await Promise.all([startLocalSshd(), startLocalSshd()]);
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

const fast = { retryBaseDelayMs: 100, retryMaxDelayMs: 400 };

describe("SshSession", () => {
  test("logs in with a key, runs commands and counts one connection and one round trip per exec", async () => {
    const s = await SshSession.open({
      host: "127.0.0.1",
      port: a.port,
      privateKey: a.clientKey,
      hostKey: a.hostKey,
    });
    try {
      const r = await s.exec("probe", "echo hello; echo oops >&2; exit 3");
      expect(r).toEqual({ code: 3, signal: undefined, stdout: "hello\n", stderr: "oops\n" });
      const r2 = await s.exec("cat", "cat", { stdin: "payload\n" });
      expect(r2.stdout).toBe("payload\n");
      expect(s.stats).toEqual({
        connections: 1,
        reusedConnections: 0,
        proxyConnections: 0,
        dialAttempts: 1,
        roundTrips: 2,
        commits: 0,
      });
    } finally {
      s.close();
    }
  });

  test("computes fingerprints exactly like ssh-keygen -lf, from a key line or a fingerprint pin", () => {
    const blob = Buffer.from(a.hostKey.split(" ")[1], "base64");
    expect(fingerprintOfKeyBlob(blob)).toBe(a.hostKeyFingerprint);
    expect(expectedFingerprint(a.hostKey, "h")).toBe(a.hostKeyFingerprint);
    expect(expectedFingerprint(a.hostKeyFingerprint, "h")).toBe(a.hostKeyFingerprint);
    expect(() => expectedFingerprint("MD5:aa:bb", "h")).toThrow(/neither an OpenSSH public key line/);
  });

  test("accepts a host pinned by its SHA256 fingerprint", async () => {
    const s = await SshSession.open({
      host: "127.0.0.1",
      port: a.port,
      privateKey: a.clientKey,
      hostKey: a.hostKeyFingerprint,
    });
    s.close();
    expect(s.stats.connections).toBe(1);
  });

  test("refuses a host presenting another key than the pinned one, at once, naming both fingerprints", async () => {
    const started = Date.now();
    const err = await hostError(
      SshSession.open(
        { host: "127.0.0.1", port: a.port, privateKey: a.clientKey, hostKey: b.hostKey, dialErrorLimit: 5 },
        fast,
      ),
    );
    expect(err.kind).toBe("host-key");
    expect(err.message).toContain(`expected ${b.hostKeyFingerprint}`);
    expect(err.message).toContain(`the host presented ${a.hostKeyFingerprint}`);
    expect(err.message).toMatch(/^host 127\.0\.0\.1: /);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  test("does not retry an authentication failure and never shows the password or key", async () => {
    const password = "s3cr3t-Pa55word";
    const err = await hostError(
      SshSession.open(
        {
          host: "127.0.0.1",
          port: a.port,
          password,
          privateKey: b.clientKey,
          hostKey: a.hostKey,
          dialErrorLimit: 5,
        },
        fast,
      ),
    );
    expect(err.kind).toBe("auth");
    expect(err.message).toMatch(/authentication failed for root@127\.0\.0\.1:\d+ with privateKey, password/);
    const everything = JSON.stringify({ m: err.message, s: err.stack, c: String(err.cause) });
    expect(everything).not.toContain(password);
    expect(everything).not.toContain(b.clientKey.split("\n")[1]);
  });

  test("reports an encrypted key with a wrong passphrase without echoing the passphrase", async () => {
    const dir = a.dir;
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "right-phrase", "-f", join(dir, "enc")]);
    const err = await hostError(
      SshSession.open({
        host: "127.0.0.1",
        port: a.port,
        privateKey: readFileSync(join(dir, "enc"), "utf8"),
        privateKeyPassword: "wrong-phrase-xyz",
        hostKey: a.hostKey,
      }),
    );
    expect(err.kind).toBe("auth");
    expect(err.message).toContain("connection.privateKey could not be used");
    expect(err.message).not.toContain("wrong-phrase-xyz");
  });

  test("retries an unreachable port with growing delays, bounded by dialErrorLimit", async () => {
    const port = await freePort();
    const started = Date.now();
    const err = await hostError(
      SshSession.open(
        { host: "127.0.0.1", port, privateKey: a.clientKey, dialErrorLimit: 4, perDialTimeout: 2 },
        { retryBaseDelayMs: 200, retryMaxDelayMs: 1000 },
      ),
    );
    const ms = Date.now() - started;
    expect(err.kind).toBe("connect");
    expect(err.message).toContain("after 4 attempt(s)");
    expect(err.message).toContain("ECONNREFUSED");
    // Delays 200, 400, 800 with jitter of up to -50%: at least 700 ms, and well under the timeouts.
    expect(ms).toBeGreaterThanOrEqual(700);
    expect(ms).toBeLessThan(5000);
  });

  test("kills a command that exceeds its timeout and says which one", async () => {
    const s = await SshSession.open({
      host: "127.0.0.1",
      port: a.port,
      privateKey: a.clientKey,
      hostKey: a.hostKey,
    });
    try {
      const started = Date.now();
      const err = await hostError(s.exec("dpa-sleep", "sleep 20", { timeoutMs: 500 }));
      expect(err.kind).toBe("timeout");
      expect(err.message).toBe('host 127.0.0.1: "dpa-sleep" did not finish within 0.5s\ncommand: dpa-sleep');
      expect(Date.now() - started).toBeLessThan(3000);
      // The connection stays usable after a timed-out command.
      expect((await s.exec("echo", "echo ok")).stdout).toBe("ok\n");
    } finally {
      s.close();
    }
  });

  test("reaches a host through a jump host (forwardOut), pinning both keys", async () => {
    const s = await SshSession.open({
      host: "127.0.0.1",
      port: b.port,
      privateKey: b.clientKey,
      hostKey: b.hostKey,
      proxy: { host: "127.0.0.1", port: a.port, privateKey: a.clientKey, hostKey: a.hostKey },
    });
    try {
      const r = await s.exec("who", "echo $SSH_CONNECTION");
      // The target sees the connection coming from the jump host's sshd, not from us directly.
      expect(r.stdout).toMatch(new RegExp(`^127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.1 ${b.port}\\n$`));
      expect(s.stats).toEqual({
        connections: 1,
        reusedConnections: 0,
        proxyConnections: 1,
        dialAttempts: 1,
        roundTrips: 1,
        commits: 0,
      });
    } finally {
      s.close();
    }
  });

  test("refuses a jump host with the wrong key before reaching the target", async () => {
    const err = await hostError(
      SshSession.open({
        host: "127.0.0.1",
        port: b.port,
        privateKey: b.clientKey,
        hostKey: b.hostKey,
        proxy: { host: "127.0.0.1", port: a.port, privateKey: a.clientKey, hostKey: b.hostKey },
      }),
    );
    expect(err.kind).toBe("host-key");
    expect(err.message).toContain(`the host presented ${a.hostKeyFingerprint}`);
  });

  test("warns when no host key is pinned", async () => {
    const warnings: string[] = [];
    const s = await SshSession.open(
      { host: "127.0.0.1", port: a.port, privateKey: a.clientKey },
      { warn: (m) => warnings.push(m) },
    );
    s.close();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^connection\.hostKey is not pinned for root@127\.0\.0\.1:\d+: /);
  });
});

/** A real ssh-agent holding `keyFile`, on its own socket; stopped by its pid. */
async function startAgent(dir: string, keyFile: string): Promise<{ sock: string; stop(): Promise<void> }> {
  const sock = join(dir, `agent-${process.pid}-${Date.now()}.sock`);
  const child = spawn("ssh-agent", ["-D", "-a", sock], { stdio: ["ignore", "pipe", "inherit"] });
  // With -D it prints "SSH_AUTH_SOCK=...; export ..." once the socket listens.
  await new Promise<void>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`ssh-agent exited with ${code}`)));
    child.stdout.once("data", () => resolve());
  });
  child.stdout.resume();
  execFileSync("ssh-add", ["-q", keyFile], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: "ignore" });
  return {
    sock,
    stop: async () => {
      if (child.exitCode !== null || child.pid === undefined) return;
      const exited = new Promise((r) => child.once("exit", r));
      process.kill(child.pid, "SIGTERM");
      await exited;
    },
  };
}

describe("ssh-agent, like @pulumi/command", () => {
  const saved = process.env.SSH_AUTH_SOCK;
  afterEach(() => {
    if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
    else process.env.SSH_AUTH_SOCK = saved;
  });

  test("without agentSocketPath or a key, logs in with the agent in $SSH_AUTH_SOCK", async () => {
    const agent = await startAgent(a.dir, join(a.dir, "client"));
    try {
      process.env.SSH_AUTH_SOCK = agent.sock;
      const s = await SshSession.open({ host: "127.0.0.1", port: a.port, hostKey: a.hostKey });
      try {
        expect((await s.exec("probe", "echo in")).stdout).toBe("in\n");
      } finally {
        s.close();
      }
      // Without it there is nothing to log in with: the message says what was tried.
      delete process.env.SSH_AUTH_SOCK;
      const err = await hostError(
        SshSession.open({ host: "127.0.0.1", port: a.port, hostKey: a.hostKey, dialErrorLimit: 1 }, fast),
      );
      expect(err.kind).toBe("auth");
      expect(err.message).toContain("with no credentials");
    } finally {
      await agent.stop();
    }
  });

  test("agentSocketPath wins over $SSH_AUTH_SOCK", async () => {
    const agent = await startAgent(a.dir, join(a.dir, "client"));
    try {
      process.env.SSH_AUTH_SOCK = join(a.dir, "no-such-agent.sock");
      const s = await SshSession.open({
        host: "127.0.0.1",
        port: a.port,
        hostKey: a.hostKey,
        agentSocketPath: agent.sock,
      });
      s.close();
    } finally {
      await agent.stop();
    }
  });

  test("an agent that cannot be reached is named when nothing else logs in, and stops nothing that does", async () => {
    process.env.SSH_AUTH_SOCK = join(a.dir, "no-such-agent.sock");
    const s = await SshSession.open({
      host: "127.0.0.1",
      port: a.port,
      hostKey: a.hostKey,
      privateKey: a.clientKey,
    });
    s.close();
    const err = await hostError(
      SshSession.open(
        { host: "127.0.0.1", port: a.port, hostKey: a.hostKey, privateKey: b.clientKey, dialErrorLimit: 1 },
        fast,
      ),
    );
    expect(err.kind).toBe("auth");
    expect(err.message).toContain(`with privateKey, $SSH_AUTH_SOCK (${join(a.dir, "no-such-agent.sock")}: `);
  });
});
