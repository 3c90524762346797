/**
 * A client that must stay out, knocking on a port all the time (lab/knocker.js in the client's
 * namespace: a new TCP connection every 100 ms), for tests that prove a change never opens the
 * port, not even for a moment: start it, run the change, `stop()` and count what got in.
 *
 *   const w = await watchPort(lab.clients[1], host.ipv4, 8080);
 *   await proj.up();
 *   expect(await w.stop()).toMatchObject({ opened: 0 });
 */
import { spawn } from "node:child_process";
import * as path from "node:path";
import type { LabClient } from "./index";

export interface WatchResult {
  /** Connection attempts made while watching. */
  readonly attempts: number;
  /** Attempts that connected. */
  readonly opened: number;
  /** When each of them connected, in ms after the start. */
  readonly openedAt: readonly number[];
}

export interface Watch {
  /** Stops knocking and says what got in. */
  stop(): Promise<WatchResult>;
}

/**
 * Starts knocking on `address`:`port` from `client`'s namespace every `intervalMs`; resolves
 * once the first attempt has ended (so the watch covers everything that happens afterwards).
 */
export function watchPort(
  client: LabClient,
  address: string,
  port: number,
  intervalMs = 100,
): Promise<Watch> {
  const child = spawn(
    "nsenter",
    [
      `--net=/run/netns/${client.netns}`,
      "--",
      process.execPath,
      path.join(__dirname, "knocker.js"),
      address,
      String(port),
      String(intervalMs),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  let err = "";
  const openedAt: number[] = [];
  const waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  let exited: string | undefined;
  const fail = (why: string) => {
    exited = why;
    for (const w of waiters.splice(0)) w.resolve(`exit ${why}`);
  };
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    out += chunk;
    let i;
    while ((i = out.indexOf("\n")) >= 0) {
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      if (line.startsWith("open ")) openedAt.push(Number(line.slice(5)));
      for (const w of waiters.filter((x) => x.match(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
  child.on("error", (e) => fail(e.message));
  child.on("exit", (code, signal) => fail(`code ${code} signal ${signal}: ${err.trim()}`));
  const next = (prefix: string) =>
    new Promise<string>((resolve) => {
      if (exited !== undefined) resolve(`exit ${exited}`);
      else waiters.push({ match: (l) => l.startsWith(prefix), resolve });
    });

  return next("ready").then((line) => {
    if (line !== "ready")
      throw new Error(`watch from ${client.name} to ${address}:${port} did not start: ${line}`);
    return {
      async stop() {
        const done = next("done ");
        child.kill("SIGTERM");
        const line = await done;
        if (!line.startsWith("done ")) throw new Error(`watch from ${client.name} ended badly: ${line}`);
        const { attempts, opened } = JSON.parse(line.slice(5)) as { attempts: number; opened: number };
        return { attempts, opened, openedAt };
      },
    };
  });
}
