/**
 * Kill at every step (issue 9): the REAL sync script on a stub host (./stubhost.ts), stopped at
 * each of its pause points and then cut off from the client (the session destroyed: EOF on its
 * stdin, like a dropped SSH connection) or SIGKILLed (the pid its pause point wrote). Every case
 * ends in the old state or the new, verified one, with the foreign rules untouched, and the next
 * sync converges. What rolls back after a SIGKILL is the script's detached watchdog, which holds
 * the host lock until it is done; a rollback it cannot do at first (the xtables lock held by
 * another process) is retried, and one that keeps failing leaves the host's state reported as
 * unknown, with the command to inspect it, until a write succeeds.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist, type AllowlistSpec } from "../../provider/core";
import {
  PAUSE_POINTS,
  convergeOptions,
  inspectHost,
  syncHost,
  unknownStateFindings,
  type ConvergeHooks,
  type HostExec,
  type PausePoint,
} from "../../provider/host";
import { hostError } from "./support";
import { StubHost, until } from "./stubhost";

jest.setTimeout(30_000);

const FIXTURE = join(__dirname, "..", "core", "fixtures", "docker29");
const SAVE4 = readFileSync(join(FIXTURE, "iptables-save.v4.txt"), "utf8");
const SAVE6 = readFileSync(join(FIXTURE, "iptables-save.v6.txt"), "utf8");
const CONN = { host: "stubhost" };
const RULE = "kill";

function spec(): AllowlistSpec {
  const v = validateAllowlist(
    { port: 8080, protocols: ["tcp"], sources: ["198.18.1.0/24", "2001:db8:5::/48"], ruleName: RULE },
    RULE,
  );
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

let host: StubHost;
let pauseDir: string;
beforeEach(() => {
  host = new StubHost();
  host.write("save4", SAVE4);
  host.write("save6", SAVE6);
  pauseDir = join(host.root, "pause");
  mkdirSync(pauseDir);
});
afterEach(async () => {
  // The watchdog holds the host lock until it is done: never remove the host under it.
  await until(() => host.lockFree());
  host.remove();
});

const rulesV4Path = () => join(host.root, "etc", "rules.v4");
const marker = () => join(host.runDir, `unknown.${RULE}`);

/** Converges the stub host to spec(); `opened` sees the session. */
function sync(hooks: ConvergeHooks = {}, opened?: (s: HostExec) => void) {
  const target = {
    ruleName: RULE,
    rulesV4Path: rulesV4Path(),
    rulesV6Path: join(host.root, "etc", "rules.v6"),
  };
  const base = convergeOptions(spec(), target, { connect: host.connect(opened), ...hooks });
  return syncHost(CONN, { ...base, plan: host.leadsTo(base.plan) });
}

/** The pid the script wrote when it reached `point` (waits for it). */
async function reached(point: PausePoint): Promise<number> {
  const file = join(pauseDir, `${point}.reached`);
  // Written by `echo $$ >`: present once it holds a whole line.
  await until(() => existsSync(file) && readFileSync(file, "utf8").endsWith("\n"));
  return Number(readFileSync(file, "utf8").trim());
}

/** The lines of a save that are not ours (no DPA-kill in them): what nobody but us may change. */
function foreign(save: string): string[] {
  return save.split("\n").filter((l) => !l.includes(`DPA-${RULE}`) && !l.startsWith("#"));
}

/** The host is exactly as before (both families), or exactly the new verified state. */
function expectOldOrNew(expected: "old" | "new"): void {
  const now = { ipv4: host.read("save4"), ipv6: host.read("save6") };
  if (expected === "old") {
    expect(now).toEqual({ ipv4: SAVE4, ipv6: SAVE6 });
  } else {
    expect(planAllowlist(now, spec(), RULE).inSync).toBe(true);
    expect(foreign(now.ipv4)).toEqual(foreign(SAVE4));
    expect(foreign(now.ipv6)).toEqual(foreign(SAVE6));
  }
}

type How = "drop" | "sigkill";

/**
 * Each pause point, and what stands after a kill there: before the commit the change is undone
 * (by the script on EOF, or by its watchdog when the script itself died); after it, the new rules
 * stand (the watchdog never undoes a commit).
 */
const MATRIX: { point: PausePoint; how: How; ends: "old" | "new"; error: RegExp }[] = [
  { point: "before-apply", how: "drop", ends: "old", error: /SSH connection was lost/ },
  { point: "before-apply", how: "sigkill", ends: "old", error: /was killed .*before the commit/ },
  { point: "between-families", how: "drop", ends: "old", error: /SSH connection was lost/ },
  { point: "between-families", how: "sigkill", ends: "old", error: /was killed .*before the commit/ },
  { point: "awaiting-commit", how: "drop", ends: "old", error: /SSH connection was lost/ },
  { point: "awaiting-commit", how: "sigkill", ends: "old", error: /was killed .*before the commit/ },
  { point: "before-persist", how: "drop", ends: "new", error: /SSH connection was lost/ },
  {
    point: "before-persist",
    how: "sigkill",
    ends: "new",
    error: /committed and is live, but the sync script was killed/,
  },
];

test("the matrix covers every pause point both ways", () => {
  expect(new Set(MATRIX.map((c) => c.point))).toEqual(new Set(PAUSE_POINTS));
  for (const p of PAUSE_POINTS)
    expect(MATRIX.filter((c) => c.point === p).map((c) => c.how)).toEqual(["drop", "sigkill"]);
});

test.each(MATRIX)(
  "$how at $point: the host ends $ends, and the next sync converges",
  async ({ point, how, ends, error }) => {
    writeFileSync(join(pauseDir, point), "");
    let session: HostExec | undefined;
    const strike = async () => {
      const pid = await reached(point);
      if (how === "drop") session!.destroy();
      else process.kill(pid, "SIGKILL");
      rmSync(join(pauseDir, point));
    };
    // At awaiting-commit the client strikes before it answers (else a commit may already wait in
    // the pipe for the script); at the other points the client is waiting for the host anyway.
    const hooks: ConvergeHooks =
      point === "awaiting-commit" ? { pauseDir, beforeCommit: () => strike() } : { pauseDir };
    const running = hostError(sync(hooks, (s) => (session = s)));
    if (point !== "awaiting-commit") await strike();
    const err = await running;
    expect(err.message).toMatch(error);

    await until(() => host.lockFree());
    expectOldOrNew(ends);
    expect(existsSync(marker())).toBe(false);
    // The rules file is replaced by a rename: the old one (none here) or a whole new one.
    if (existsSync(rulesV4Path())) expect(readFileSync(rulesV4Path(), "utf8")).toContain(`:DPA-${RULE} `);

    const next = await sync();
    expect(next.applied).toBe(ends === "old");
    expect(next.persisted).toBe(true);
    expectOldOrNew("new");
    expect(readFileSync(rulesV4Path(), "utf8")).toContain(`:DPA-${RULE} `);
  },
);

describe("a rollback that fails", () => {
  /** Syncs, and SIGKILLs the script while it waits for the commit, both families applied. */
  async function killAwaitingCommit(whileApplied: () => Promise<void>): Promise<void> {
    writeFileSync(join(pauseDir, "awaiting-commit"), "");
    const err = await hostError(
      sync({
        pauseDir,
        beforeCommit: async () => {
          const pid = await reached("awaiting-commit");
          await whileApplied();
          process.kill(pid, "SIGKILL");
        },
      }),
    );
    expect(err.message).toMatch(/was killed .*before the commit/);
  }

  test("is retried: the xtables lock held by another process for a while delays the rollback, then it goes through", async () => {
    let xtables: { release(): Promise<void> } | undefined;
    await killAwaitingCommit(async () => {
      xtables = await host.holdLock(host.xtablesLockPath);
    });
    // The watchdog's first try fails on the lock (newest family first: IPv6's restore, its 2nd).
    await until(() => host.has("restore6.locked.2"));
    expect(host.lockFree()).toBe(false);
    await xtables!.release();
    await until(() => host.lockFree());
    expectOldOrNew("old");
    expect(existsSync(marker())).toBe(false);
  });

  test("that keeps failing leaves the host's state reported as unknown, with the command to inspect it, until a write succeeds", async () => {
    let xtables: { release(): Promise<void> } | undefined;
    await killAwaitingCommit(async () => {
      xtables = await host.holdLock(host.xtablesLockPath);
    });
    try {
      // Done (the host lock is free) while the xtables lock is still held: every try failed.
      await until(() => host.lockFree());
    } finally {
      await xtables!.release();
    }
    expect(host.has("restore6.locked.4")).toBe(true);
    expect(host.has("restore6.locked.5")).toBe(false);
    expect(readFileSync(marker(), "utf8")).toMatch(/^rollback of families 6 4 failed 3 times at /);
    expect(readFileSync(marker(), "utf8")).toContain("Another app is currently holding the xtables lock");

    const { snapshot } = await inspectHost(
      CONN,
      { ruleName: RULE, persist: false },
      undefined,
      host.connect(),
    );
    const [finding] = unknownStateFindings(snapshot, RULE);
    expect(finding).toMatchObject({ code: "host-state-unknown", severity: "error" });
    expect(finding.message).toContain("The host's iptables state for DPA-kill is UNKNOWN");
    expect(finding.message).toContain(
      `Inspect: \`iptables-save -t filter | grep -n -- 'DPA-kill'; ip6tables-save -t filter | grep -n -- 'DPA-kill'; cat /run/docker-port-allowlist/unknown.kill\``,
    );
    expect(finding.message).toContain("holding the xtables lock");

    // The host kept the applied, uncommitted rules: in sync with the spec, but a write is still
    // made (the unknown state is drift), and its success clears the marker.
    const next = await sync();
    expect(next.applied).toBe(false);
    expect(existsSync(marker())).toBe(false);
    expectOldOrNew("new");
    const after = await inspectHost(CONN, { ruleName: RULE, persist: false }, undefined, host.connect());
    expect(unknownStateFindings(after.snapshot, RULE)).toEqual([]);
  });
});
