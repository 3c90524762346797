/**
 * A real OpenSSH server on 127.0.0.1:<free port> for transport tests: its own host key, its own
 * authorized_keys, no system config. Stopped by its pid; its directory is removed.
 */
import { execFileSync, spawn, type ChildProcess } from "child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "fs";
import { createServer, connect } from "net";
import { tmpdir } from "os";
import { join } from "path";

export interface LocalSshd {
  readonly port: number;
  readonly hostKey: string;
  readonly hostKeyFingerprint: string;
  readonly clientKey: string;
  readonly dir: string;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === "object" && addr !== null ? resolve(addr.port) : reject(new Error("no port")),
      );
    });
  });
}

function keygen(path: string, comment: string): void {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path]);
}

async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen on ${port}`);
}

export async function startLocalSshd(extraOptions: string[] = []): Promise<LocalSshd> {
  const dir = mkdtempSync(join(tmpdir(), "dpa-sshd-"));
  mkdirSync("/run/sshd", { recursive: true });
  keygen(join(dir, "host"), "host");
  keygen(join(dir, "client"), "client");
  writeFileSync(join(dir, "authorized_keys"), readFileSync(join(dir, "client.pub")));
  const port = await freePort();
  const opts = [
    `ListenAddress=127.0.0.1:${port}`,
    `HostKey=${join(dir, "host")}`,
    `AuthorizedKeysFile=${join(dir, "authorized_keys")}`,
    `PidFile=none`,
    `StrictModes=no`,
    `PermitRootLogin=prohibit-password`,
    `UsePAM=no`,
    `AllowTcpForwarding=yes`,
    `LogLevel=ERROR`,
    ...extraOptions,
  ];
  const child = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", "/dev/null", ...opts.flatMap((o) => ["-o", o])], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  child.stderr?.resume();
  await waitForPort(port, child);
  const hostKey = readFileSync(join(dir, "host.pub"), "utf8").trim();
  const hostKeyFingerprint = execFileSync("ssh-keygen", ["-lf", join(dir, "host.pub")], {
    encoding: "utf8",
  }).split(" ")[1];
  return {
    port,
    hostKey,
    hostKeyFingerprint,
    clientKey: readFileSync(join(dir, "client"), "utf8"),
    dir,
    stop: async () => {
      if (child.exitCode === null && child.pid !== undefined) {
        const exited = new Promise((r) => child.once("exit", r));
        process.kill(child.pid, "SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
