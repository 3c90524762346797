/**
 * Shared pieces of the host edge's tests: the options with which the provider drives
 * `syncHost` (the one `convergeOptions`), a way to await the HostError a call must end in, and
 * a live UDP flow from a lab client (for the conntrack cut).
 */
import { spawn, type ChildProcess } from "child_process";
import type { LabClient, LabHost } from "../../lab";
import { planAllowlist, type AllowlistSpec, type Plan } from "../../provider/core";
import { HostError, convergeOptions, type ApplyOptions, type ConvergeHooks } from "../../provider/host";

/** `syncHost` options that converge a host to `s`, or delete `s`'s rule name when `s` is a string. */
export function syncOptions(
  s: AllowlistSpec | string,
  extra: ConvergeHooks = {},
): ApplyOptions<Plan> & { requireDockerUser: boolean } {
  return typeof s === "string" ? convergeOptions(null, { ruleName: s }, extra) : convergeOptions(s, s, extra);
}

/** The HostError `p` rejects with; fails the test when it resolves or rejects with anything else. */
export async function hostError(p: Promise<unknown>): Promise<HostError> {
  try {
    await p;
  } catch (err) {
    if (HostError.isInstance(err)) return err;
    throw err;
  }
  throw new Error("expected a HostError");
}

/**
 * Records what the code under test writes to this process's stderr (where the provider prints
 * its warnings) instead of showing it; `jest.restoreAllMocks()` ends it.
 */
export function captureStderr(): string[] {
  const lines: string[] = [];
  jest.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  return lines;
}

/**
 * A planner that sends one rule more than the core planned (a RETURN for `extraSource` in the
 * allowlist's IPv4 chain): the read-back before the commit must catch it and roll back.
 */
export function planWithExtraRule(s: AllowlistSpec, extraSource: string) {
  return (live: { ipv4: string | null; ipv6: string | null }): Plan => {
    const p = planAllowlist(live, s, s.ruleName);
    const v4 = p.families.ipv4!;
    const tag = `-m comment --comment "dpa:${s.ruleName}"`;
    const extra = `-A DPA-${s.ruleName} -s ${extraSource} ${tag} -j RETURN\nCOMMIT`;
    return { ...p, families: { ipv4: { ...v4, payload: v4.payload.replace(/COMMIT\s*$/, extra + "\n") } } };
  };
}

/** A live flow from {@link udpFlow}: the answers so far, and its process (kill it when done). */
export interface UdpFlow {
  replies(): number;
  /**
   * Resolves once the client has handled every answer that reached it before this call (it
   * echoes a mark through the same stdout the answers take): what a test waits for after a
   * change, instead of a guessed drain time, before it counts what comes after.
   */
  settled(): Promise<void>;
  readonly process: ChildProcess;
}

/**
 * A UDP flow from one client source port to the host's published 5353, a datagram every 100 ms;
 * `replies()` counts the answers so far. One flow = one conntrack entry, ESTABLISHED once
 * answered, like a long-lived connection.
 */
export function udpFlow(client: LabClient, host: LabHost, sourcePort: number): UdpFlow {
  const script =
    `const s = require("dgram").createSocket("udp4");` +
    `s.on("message", () => process.stdout.write("r\\n"));` +
    `process.stdin.on("data", () => process.stdout.write("m\\n"));` +
    `s.bind(${sourcePort}, () => setInterval(() => s.send("x", 5353, ${JSON.stringify(host.ipv4)}), 100));`;
  const child = spawn("ip", ["netns", "exec", client.netns, process.execPath, "-e", script], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  let count = 0;
  let marks = 0;
  const waiting: { mark: number; resolve: () => void }[] = [];
  child.stdout!.on("data", (b: Buffer) => {
    for (const line of b.toString().split("\n")) {
      if (line === "r") count++;
      else if (line === "m") {
        marks++;
        for (const w of waiting.filter((x) => x.mark <= marks)) w.resolve();
      }
    }
  });
  let sent = 0;
  const settled = () =>
    new Promise<void>((resolve, reject) => {
      const mark = ++sent;
      waiting.push({ mark, resolve });
      child.once("exit", () => reject(new Error("the UDP flow's client exited")));
      child.stdin!.write("m\n");
    });
  return { replies: () => count, settled, process: child };
}

/** Replies that arrive within `ms` from now. */
export async function repliesDuring(flow: { replies(): number }, ms: number): Promise<number> {
  const before = flow.replies();
  await new Promise((r) => setTimeout(r, ms));
  return flow.replies() - before;
}
