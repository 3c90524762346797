/**
 * A real SSH server (ssh2's `Server`, mscdex's own way of testing) on 127.0.0.1 without root:
 * its own host key, any credential accepted (these tests are about host keys, not logins), each
 * exec run as a local command line (e.g. on a StubHost, so the real scripts answer), and
 * `direct-tcpip` forwarding, so it also serves as a jump host. A client that goes away closes its
 * command's stdio, as sshd does; `close()` kills the commands still running (each with the
 * processes it started) and waits for them. Restart it on the same port with another key to play
 * a re-installed host or a man in the middle. It counts the
 * connections it accepted and the users that logged in, refuses sessions beyond `maxSessions`
 * (OpenSSH's MaxSessions), and can drop a connection when a session is asked for (a connection
 * that broke between two commands).
 */
import { spawn, type ChildProcess } from "child_process";
import { connect as tcpConnect } from "net";
import type { Connection, ServerChannel } from "ssh2";
import { expectedFingerprint } from "../../provider/host";

export interface Ssh2Host {
  readonly port: number;
  /** The host key as an OpenSSH public key line. */
  readonly hostKey: string;
  /** Its `SHA256:` fingerprint. */
  readonly hostKeyFingerprint: string;
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** Connections open now. */
  readonly open: number;
  /** Session channels refused because of `maxSessions`. */
  readonly refusedSessions: number;
  /** The login user of each authenticated connection, in order. */
  readonly logins: readonly string[];
  /** The next `n` session requests end their connection instead of opening a channel. */
  dropSessions(n: number): void;
  /** Resolves once no connection is open (the client closed or lost them all). */
  allClosed(): Promise<void>;
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}

export interface Ssh2HostOptions {
  /** Listen on this port (a restart). @default - a free port */
  readonly port?: number;
  /** Runs an exec's command line: argv + the command as last word. @default - execs are refused */
  readonly shell?: { readonly argv: readonly string[]; readonly env?: NodeJS.ProcessEnv };
  /**
   * A hostile transport: wherever the command's stdout holds these bytes, it is sent as two
   * SSH data messages, the second only once the first was written out (e.g. a 4-byte UTF-8
   * character cut in half). @default - stdout is piped as it comes
   */
  readonly splitAfter?: Buffer;
  /** Session channels open at once per connection; more are refused. @default - no limit */
  readonly maxSessions?: number;
}

function runExec(
  channel: ServerChannel,
  command: string,
  shell: NonNullable<Ssh2HostOptions["shell"]>,
  splitAfter: Buffer | undefined,
  children: Set<ChildProcess>,
): () => void {
  const [file, ...args] = shell.argv;
  // Its own process group (the pid we start leads it), so close() ends what it started too.
  const child = spawn(file!, [...args, command], { env: shell.env, detached: true });
  children.add(child);
  channel.pipe(child.stdin);
  // Like sshd when the client goes: the command's stdin ends and its stdout and stderr are
  // closed, so it sees EOF and EPIPE (and ends by itself, as the real scripts do) instead of
  // blocking for ever on a write nobody reads; nothing is written to the closed channel.
  let open = true;
  const hangUp = () => {
    if (!open) return;
    open = false;
    child.stdout.unpipe();
    child.stderr.unpipe();
    child.stdout.destroy();
    child.stderr.destroy();
    child.stdin.end();
  };
  channel.on("error", () => undefined);
  channel.once("close", hangUp);
  let queue = Promise.resolve();
  if (splitAfter === undefined) {
    child.stdout.pipe(channel, { end: false });
  } else {
    // Each chunk in order; a chunk holding the marker goes out as two writes, the second after
    // the first was flushed into the SSH stream.
    const send = (b: Buffer) =>
      new Promise<void>((resolve) => (open ? channel.write(b, () => resolve()) : resolve()));
    child.stdout.on("data", (chunk: Buffer) => {
      child.stdout.pause();
      const at = chunk.indexOf(splitAfter);
      const parts =
        at === -1
          ? [chunk]
          : [chunk.subarray(0, at + splitAfter.length), chunk.subarray(at + splitAfter.length)];
      queue = queue.then(async () => {
        for (const p of parts) if (p.length > 0) await send(p);
        child.stdout.resume();
      });
    });
  }
  child.stderr.pipe(channel.stderr, { end: false });
  child.stdin.on("error", () => undefined);
  child.on("close", (code) => {
    children.delete(child);
    // After every stdout chunk queued above went out.
    void queue.then(() => {
      if (!open) return;
      channel.exit(code ?? 255);
      channel.end();
    });
  });
  return hangUp;
}

/**
 * An ed25519 key pair in OpenSSH format that ssh2 can parse back: its generator now and then
 * writes a private key its own parser calls malformed, so such a pair is made again.
 */
export function ed25519(): { private: string; public: string } {
  const { utils } = require("ssh2") as typeof import("ssh2");
  for (;;) {
    const keys = utils.generateKeyPairSync("ed25519");
    if (!(utils.parseKey(keys.private) instanceof Error)) return keys;
  }
}

export async function startSsh2Host(opts: Ssh2HostOptions = {}): Promise<Ssh2Host> {
  const { Server } = require("ssh2") as typeof import("ssh2");
  const keys = ed25519();
  const clients = new Set<Connection>();
  const children = new Set<ChildProcess>();
  let connections = 0;
  let drops = 0;
  let refusedSessions = 0;
  const logins: string[] = [];
  const closedWaiters: (() => void)[] = [];
  const server = new Server({ hostKeys: [keys.private] }, (client) => {
    clients.add(client);
    connections++;
    // The connection may go without closing its channels first (a killed client).
    const hangUps: (() => void)[] = [];
    client.on("close", () => {
      clients.delete(client);
      for (const hangUp of hangUps) hangUp();
      if (clients.size === 0) for (const w of closedWaiters.splice(0)) w();
    });
    client.on("error", () => undefined);
    client.on("authentication", (ctx) => {
      logins.push(ctx.username);
      ctx.accept();
    });
    let sessions = 0;
    client.on("ready", () => {
      client.on("session", (accept, rejectSession) => {
        if (drops > 0) {
          drops--;
          return client.end();
        }
        if (opts.maxSessions !== undefined && sessions >= opts.maxSessions) {
          refusedSessions++;
          return rejectSession();
        }
        sessions++;
        const session = accept();
        session.once("close", () => sessions--);
        session.on("exec", (acceptExec, reject, info) => {
          if (opts.shell === undefined) return reject();
          hangUps.push(runExec(acceptExec(), info.command, opts.shell, opts.splitAfter, children));
        });
      });
      client.on("tcpip", (accept, reject, info) => {
        const sock = tcpConnect(info.destPort, info.destIP);
        sock.once("error", () => reject());
        sock.once("connect", () => {
          const ch = accept();
          ch.pipe(sock).pipe(ch);
          ch.on("error", () => sock.destroy());
          sock.on("error", () => ch.close());
        });
      });
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => {
      const addr = server.address();
      if (typeof addr === "object" && addr !== null) resolve(addr.port);
      else reject(new Error("ssh2 server has no port"));
    });
  });
  return {
    port,
    hostKey: keys.public,
    hostKeyFingerprint: expectedFingerprint(keys.public, "ssh2host"),
    get connections() {
      return connections;
    },
    get open() {
      return clients.size;
    },
    get refusedSessions() {
      return refusedSessions;
    },
    logins,
    dropSessions: (n) => {
      drops += n;
    },
    allClosed: () =>
      clients.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => closedWaiters.push(resolve)),
    close: async () => {
      for (const c of clients) c.end();
      // A command still running (its client gone without waiting) is ended with every process it
      // started, by the group of the pid we started, and waited for: nothing outlives the test
      // or writes into its directories afterwards.
      const ended = [...children].map(
        (child) =>
          new Promise<void>((resolve) =>
            child.exitCode !== null ? resolve() : child.once("close", () => resolve()),
          ),
      );
      for (const child of children) {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          // The group is gone already.
        }
      }
      await Promise.all(ended);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
