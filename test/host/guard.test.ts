/**
 * The guard's host side: remote/guard.awk run by the machine's real awk over every fixture host,
 * after each way the host's life removes our rules (a flush of DOCKER-USER or of everything,
 * DOCKER-USER deleted by a firewalld reload, our jumps deleted or pushed below foreign rules,
 * FORWARD no longer reaching DOCKER-USER first), its payload applied by the restore simulator.
 * What it must do: leave the host where the planner has nothing to change, never touch a
 * foreign rule, and print nothing at all when everything is in place. Then the assembled guard
 * script (remote/guard.sh) on a stub host: one transaction per family, silence when in place,
 * the lock respected.
 */
import { execFileSync } from "child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import {
  dockerBridgesOf,
  ownerOf,
  planAllowlist,
  policedPaths,
  renderGuardCopy,
  renderGuardService,
  renderGuardTimer,
  renderGuardListener,
  validateAllowlist,
  type AllowlistSpec,
  type Claim,
  type Family,
} from "../../provider/core";
import {
  convergeOptions,
  guardFindingsOf,
  readHost,
  syncHost,
  type ConvergeHooks,
} from "../../provider/host";
import { GUARD_AWK, GUARD_SCRIPT } from "../../provider/host/scripts";
import { caseNames, loadCase } from "../core/support/fixtures";
import { applyPayload } from "../core/support/simulate";
import { StubHost } from "./stubhost";

const OWNER = ownerOf("shop/prod", "web", "198.18.0.10", 22);

const dir = mkdtempSync(join(tmpdir(), "dpa-guard-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** guard.awk over `copies` and `live`: the payload it prints and the lines it logs. */
function guardAwk(copies: Record<string, string>, live: string): { payload: string; log: string[] } {
  const files = Object.entries(copies).map(([name, text]) => {
    const f = join(dir, name);
    writeFileSync(f, text);
    return f;
  });
  const liveFile = join(dir, "live");
  const logFile = join(dir, "log");
  writeFileSync(liveFile, live);
  writeFileSync(logFile, "");
  const payload = execFileSync(
    "awk",
    ["-v", `logfile=${logFile}`, GUARD_AWK, ...files, "phase=live", liveFile],
    {
      encoding: "utf8",
    },
  );
  const log = execFileSync("cat", [logFile], { encoding: "utf8" }).split("\n").filter(Boolean);
  return { payload, log };
}

const lines = (text: string) => text.split("\n");
const isOurs = (l: string, rule: string) => l.includes('--comment "dpa:') || l.startsWith(`-A DPA-${rule} `);
/** Foreign rules, per chain in order: what the guard must leave exactly as it was. */
const foreign = (text: string, rule: string) =>
  lines(text).filter((l) => l.startsWith("-A ") && !isOurs(l, rule));

/** Ways the host's life removes our rules, as edits of a save text. */
const DAMAGES: Record<string, (text: string, rule: string) => string> = {
  "iptables -F DOCKER-USER (a dockerd restart re-creates it empty)": (t) =>
    lines(t)
      .filter((l) => !l.startsWith("-A DOCKER-USER "))
      .join("\n"),
  "our jumps deleted": (t, rule) =>
    lines(t)
      .filter((l) => !(l.endsWith(` -j DPA-${rule}`) && !l.startsWith(`-A DPA-${rule} `)))
      .join("\n"),
  "iptables -F (every chain flushed)": (t) =>
    lines(t)
      .filter((l) => !l.startsWith("-A "))
      .join("\n"),
  "DOCKER-USER deleted (firewall-cmd --reload)": (t) =>
    lines(t)
      .filter(
        (l) =>
          !l.startsWith(":DOCKER-USER ") && !l.startsWith("-A DOCKER-USER ") && !/-j DOCKER-USER$/.test(l),
      )
      .join("\n"),
  "our chain deleted with its jumps": (t, rule) =>
    lines(t)
      .filter(
        (l) =>
          !l.startsWith(`:DPA-${rule} `) &&
          !l.startsWith(`-A DPA-${rule} `) &&
          !l.endsWith(` -j DPA-${rule}`),
      )
      .join("\n"),
  "a foreign rule inserted above our jumps (ufw reload) and at the top of FORWARD": (t) =>
    t
      .replace(/^(-A DOCKER-USER .*)$/m, "-A DOCKER-USER -s 198.18.99.0/24 -j ACCEPT\n$1")
      .replace(/^(-A INPUT .*)$/m, "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n$1")
      .replace(/^(-A FORWARD .*)$/m, "-A FORWARD -s 198.18.98.0/24 -j ACCEPT\n$1"),
};

interface Setup {
  readonly name: string;
  readonly family: Family;
  readonly desired: AllowlistSpec;
  readonly after: string;
  readonly copy: string;
  readonly claim: Claim;
}

/** Every fixture host an allowlist can be applied to, per family, in the state the plan leaves. */
function setups(): Setup[] {
  const out: Setup[] = [];
  for (const name of caseNames()) {
    const c = loadCase(name);
    if (c.desired === null) continue;
    const claim: Claim = { owner: OWNER, operation: "update" };
    const plan = planAllowlist(c.live, c.desired, c.ruleName, { owner: OWNER, operation: "create" });
    if (plan.blocked) continue;
    for (const family of ["ipv4", "ipv6"] as const) {
      const before = c.live[family];
      if (before === null) continue;
      const fp = plan.families[family];
      const after = fp === undefined ? before : applyPayload(before, fp.payload, family);
      const copy = renderGuardCopy(
        c.desired,
        family,
        policedPaths(after, c.desired, family),
        dockerBridgesOf(after, family),
        OWNER,
      );
      if (copy === "") continue;
      out.push({ name: `${name} ${family}`, family, desired: c.desired, after, copy, claim });
    }
  }
  return out;
}

const SETUPS = setups();
const CASES = SETUPS.flatMap((s) => Object.keys(DAMAGES).map((d) => [s.name, d, s] as const));

describe("guard.awk", () => {
  test("covers hosts with and without the DOCKER-USER path", () => {
    expect(SETUPS.length).toBeGreaterThan(15);
    expect(SETUPS.some((s) => !s.copy.includes("DOCKER-USER"))).toBe(true);
  });

  test.each(SETUPS.map((s) => [s.name, s] as const))(
    "%s: prints nothing when every line is in place",
    (_n, s) => {
      expect(guardAwk({ "web.vX": s.copy }, s.after)).toEqual({ payload: "", log: [] });
    },
  );

  test.each(CASES)("%s, %s: puts our rules back and nothing else, in one transaction", (_n, damage, s) => {
    const rule = s.desired.ruleName;
    const damaged = DAMAGES[damage](s.after, rule);
    const { payload, log } = guardAwk({ [`${rule}.vX`]: s.copy }, damaged);
    if (damaged === s.after) return expect(payload).toBe("");
    expect(payload.match(/^\*filter$/gm)).toHaveLength(1);
    expect(payload).toMatch(/COMMIT\n$/);
    // Our rules only: every command names our chain, one of our jumps, or creates DOCKER-USER.
    for (const l of lines(payload).filter((x) => /^[-:]/.test(x))) {
      expect(l).toMatch(
        new RegExp(
          `^(:DPA-${rule} |:DOCKER-USER |-A DPA-${rule} |-[DI] (DOCKER-USER|INPUT|FORWARD) .*--comment "dpa:)`,
        ),
      );
    }
    expect(log.length).toBeGreaterThan(0);
    const guarded = applyPayload(damaged, payload, s.family);
    // A full flush empties Docker's own chains too, so its bridges cannot be read until dockerd
    // builds them again: the planner then only asks to drop their exemptions (closed, not open).
    const unread = s.desired.exemptDockerBridges
      ? dockerBridgesOf(s.after, s.family).filter((b) => !dockerBridgesOf(guarded, s.family).includes(b))
      : [];
    expect(
      planAllowlist({ ipv4: null, ipv6: null, [s.family]: guarded }, s.desired, rule, s.claim).changes,
    ).toEqual(
      unread.map(
        (b) => `- [${s.family}] -A DPA-${rule} -i ${b} -m comment --comment "dpa:${rule}" -j RETURN`,
      ),
    );
    expect(foreign(guarded, rule)).toEqual(foreign(damaged, rule));
    // And a second round finds everything in place.
    expect(guardAwk({ [`${rule}.vX`]: s.copy }, guarded).payload).toBe("");
  });

  test("restores several allowlists of a family in one transaction, each from its own copy", () => {
    const s = SETUPS.find((x) => x.name === "docker28 ipv4")!;
    const other = renderGuardCopy(
      { ...s.desired, ruleName: "api", ports: { from: 9000, to: 9000 } },
      "ipv4",
      {
        forward: true,
        input: true,
      },
      dockerBridgesOf(s.after, "ipv4"),
    );
    const { payload, log } = guardAwk(
      { "web.v4": s.copy, "api.v4": other },
      DAMAGES["iptables -F (every chain flushed)"](s.after, "web"),
    );
    expect(payload.match(/^\*filter$/gm)).toHaveLength(1);
    expect(payload).toContain(":DPA-api - [0:0]\n");
    expect(payload).toContain(":DPA-web - [0:0]\n");
    expect(payload.match(/^-I FORWARD 1 /gm)).toHaveLength(1);
    expect(log).toContain("chain DPA-api was missing: created with its 5 saved rules");
    expect(log).toContain("chain DPA-web was empty: filled with its 6 saved rules");
  });
});

describe("guard.sh on a stub host", () => {
  let host: StubHost;
  beforeEach(() => {
    host = new StubHost();
  });
  afterEach(() => host.remove());

  const s = () => SETUPS.find((x) => x.name === "docker28 ipv4")!;
  /** Installs the guard with one copy (web, IPv4) and runs it once; its output and exit code. */
  async function runOnce(live: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    host.write("save4", live);
    host.write("save6.fail", "ip6tables-save: IPv6 is off");
    execFileSync("mkdir", ["-p", join(host.guardDir, "allowlists")]);
    writeFileSync(join(host.guardDir, "guard.sh"), GUARD_SCRIPT);
    writeFileSync(join(host.guardDir, "allowlists", "web.v4"), s().copy);
    const session = host.exec();
    try {
      return await session.exec("dpa-guard", "bash /var/lib/docker-port-allowlist/guard.sh --once");
    } finally {
      session.close();
    }
  }

  test("everything in place: silent, and no restore at all", async () => {
    const r = await runOnce(s().after);
    expect(r).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(host.has("restore4.count")).toBe(false);
  });

  test("DOCKER-USER flushed: one restore of what guard.awk prints, and a log line per thing put back", async () => {
    const damaged = DAMAGES["iptables -F DOCKER-USER (a dockerd restart re-creates it empty)"](
      s().after,
      "web",
    );
    host.write("next4", applyPayload(damaged, guardAwk({ "web.v4": s().copy }, damaged).payload, "ipv4"));
    const r = await runOnce(damaged);
    expect(r.code).toBe(0);
    expect(host.read("restore4.count").trim()).toBe("1");
    expect(host.read("restore4.1")).toBe(guardAwk({ "web.v4": s().copy }, damaged).payload);
    const restored =
      "dpa-guard: restored (iptables): jump missing, inserted at the top of DOCKER-USER: -A DOCKER-USER";
    const jump = '-m conntrack --ctorigdstport 8080 -m comment --comment "dpa:web" -j DPA-web';
    expect(r.stdout).toBe(`${restored} -p tcp ${jump}\n${restored} -p udp ${jump}\n`);
  });

  test("a failed restore is reported and ends in exit 1", async () => {
    host.write("restore4.fail.1", "iptables-restore: line 3 failed");
    const r = await runOnce(DAMAGES["our jumps deleted"](s().after, "web"));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      "dpa-guard: iptables-restore failed, nothing of it applied: iptables-restore: line 3 failed",
    );
    expect(r.stderr).toContain("dpa-guard: not restored (iptables): jump missing");
  });

  test("skips the round while a pulumi operation holds the host lock", async () => {
    const lock = await host.holdLock();
    try {
      const r = await runOnce(DAMAGES["our jumps deleted"](s().after, "web"));
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("is held (a pulumi operation?); skipping this round");
      expect(host.has("restore4.count")).toBe(false);
    } finally {
      await lock.release();
    }
  });

  test("refuses an unknown mode", async () => {
    const r = await (async () => {
      const session = host.exec();
      try {
        execFileSync("mkdir", ["-p", host.guardDir]);
        writeFileSync(join(host.guardDir, "guard.sh"), GUARD_SCRIPT);
        return await session.exec("dpa-guard", "bash /var/lib/docker-port-allowlist/guard.sh --loop x");
      } finally {
        session.close();
      }
    })();
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("usage: ");
  });
});

describe("the sync script's guard step (one write installs, updates and removes the guard)", () => {
  const SAVE4 = readFileSync(
    join(__dirname, "..", "core", "fixtures", "docker28", "iptables-save.v4.txt"),
    "utf8",
  );
  let host: StubHost;
  let systemd = false;
  beforeEach(() => {
    host = new StubHost({ systemd });
    host.write("save4", SAVE4);
    host.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
  });
  afterEach(() => host.remove());

  const web = (() => {
    const v = validateAllowlist(
      { port: 8080, protocols: ["tcp"], sources: ["198.18.1.0/24"], ruleName: "web" },
      "web",
    );
    if (!v.ok) throw new Error(JSON.stringify(v.failures));
    return v.spec;
  })();
  const claim = (via: string): Claim => ({
    owner: ownerOf("shop/prod", "web", via, 22),
    operation: "create",
  });
  const copyPath = (fam: "4" | "6") => join(host.guardDir, "allowlists", `web.v${fam}`);

  function sync(desired: AllowlistSpec | null, hooks: ConvergeHooks = {}) {
    const target = { ruleName: "web", persist: false };
    const base = convergeOptions(desired, target, {
      connect: host.connect(),
      claim: claim("198.18.0.10"),
      ...hooks,
    });
    return syncHost({ host: "stubhost" }, { ...base, plan: host.leadsTo(base.plan) });
  }

  test("a create installs the script and the copy in its two round trips; the next run finds them current", async () => {
    const first = await sync(web);
    expect(first.stats).toMatchObject({ roundTrips: 2, commits: 1 });
    expect(first.guard).toMatchObject({ installed: "no-systemd", removed: false, failed: [] });
    expect(readFileSync(join(host.guardDir, "guard.sh"), "utf8")).toBe(GUARD_SCRIPT);
    const live = host.read("save4");
    expect(readFileSync(copyPath("4"), "utf8")).toBe(
      renderGuardCopy(
        web,
        "ipv4",
        policedPaths(live, web, "ipv4"),
        dockerBridgesOf(live, "ipv4"),
        claim("198.18.0.10").owner,
      ),
    );
    expect(existsSync(copyPath("6"))).toBe(false);

    const again = await sync(web);
    expect(again.stats).toMatchObject({ roundTrips: 1, commits: 0 });
    expect(again.guard).toEqual({ removed: false, failed: [] });
  });

  test("rules in sync but the copy gone: the copy alone is written, in the second exchange, nothing applied", async () => {
    await sync(web);
    rmSync(copyPath("4"));
    const o = await sync(web);
    expect(o.applied).toBe(false);
    expect(o.stats).toMatchObject({ roundTrips: 2, commits: 0 });
    expect(o.guard.sent).toEqual({ copies: { ipv4: expect.stringContaining("-A DPA-web ") } });
    expect(existsSync(copyPath("4"))).toBe(true);
    expect(host.has("restore4.2")).toBe(false);
  });

  test("the delete of the last allowlist removes its copy and the guard with it", async () => {
    await sync(web);
    const o = await sync(null);
    expect(o.guard).toMatchObject({ removed: true, failed: [] });
    expect(existsSync(host.guardDir)).toBe(false);
  });

  test("a delete leaves the guard for the other allowlists of the host", async () => {
    await sync(web);
    writeFileSync(join(host.guardDir, "allowlists", "api.v4"), "-A DPA-api -j DROP\n");
    const o = await sync(null);
    expect(o.guard).toMatchObject({ removed: false, installed: "no-systemd" });
    expect(existsSync(copyPath("4"))).toBe(false);
    expect(existsSync(join(host.guardDir, "guard.sh"))).toBe(true);
  });

  test("a delete after a replacement took the chain over leaves the replacement's copy", async () => {
    await sync(web, { claim: claim("198.18.0.99") });
    const o = await sync(null, { claim: { ...claim("198.18.0.10"), operation: "delete" } });
    expect(o.guard.sent).toBeUndefined();
    expect(readFileSync(copyPath("4"), "utf8")).toContain("via=198.18.0.99:22");
  });

  test("a guard step that fails does not fail the write (the rules are live): it says what failed", async () => {
    // A file where the copies' directory should be: nothing can be written there.
    mkdirSync(host.guardDir, { recursive: true });
    writeFileSync(join(host.guardDir, "allowlists"), "");
    const o = await sync(web);
    expect(o.applied).toBe(true);
    expect(o.guard.failed).toEqual(["directory", "copy4"]);
  });

  describe("on a host with systemd (a stub systemctl)", () => {
    beforeAll(() => (systemd = true));
    afterAll(() => (systemd = false));
    const unit = "docker-port-allowlist-guard";
    const calls = () => host.read("systemctl.calls").split("\n").filter(Boolean);
    const findings = async () => {
      const session = host.exec();
      try {
        const snapshot = await readHost(session, { ruleName: "web", persist: false });
        const owner = claim("198.18.0.10").owner;
        return guardFindingsOf(web, { ruleName: "web", persist: false }, snapshot, snapshot.guard, owner).map(
          (f) => f.code,
        );
      } finally {
        session.close();
      }
    };

    test("a create installs and enables the units; a refresh finds them current; the next run sends nothing", async () => {
      const first = await sync(web);
      expect(first.guard).toMatchObject({ installed: "systemd", failed: [] });
      expect(readFileSync(join(host.unitDir, `${unit}.service`), "utf8")).toBe(renderGuardService());
      expect(readFileSync(join(host.unitDir, `${unit}.timer`), "utf8")).toBe(renderGuardTimer());
      expect(readFileSync(join(host.unitDir, `${unit}-firewalld.service`), "utf8")).toBe(
        renderGuardListener(),
      );
      expect(calls()).toEqual(
        expect.arrayContaining([
          "daemon-reload",
          `enable ${unit}.service`,
          `enable --now ${unit}.timer`,
          `enable ${unit}-firewalld.service`,
          `restart ${unit}-firewalld.service`,
        ]),
      );
      expect(await findings()).toEqual([]);
      const again = await sync(web);
      expect(again.stats).toMatchObject({ roundTrips: 1 });
    });

    test("a firewalld listener someone disabled is reported by refresh and enabled again by the next write", async () => {
      await sync(web);
      host.write(`enabled.${unit}-firewalld.service`, "disabled\n");
      expect(await findings()).toEqual(["guard-not-enabled"]);
      await sync(web);
      expect(host.read(`enabled.${unit}-firewalld.service`)).toBe("enabled\n");
      expect(await findings()).toEqual([]);
    });

    test("a timer someone disabled is reported by refresh and enabled again by the next write", async () => {
      await sync(web);
      host.write(`enabled.${unit}.timer`, "disabled\n");
      expect(await findings()).toEqual(["guard-not-enabled"]);
      const o = await sync(web);
      expect(o.stats).toMatchObject({ roundTrips: 2, commits: 0 });
      expect(host.read(`enabled.${unit}.timer`)).toBe("enabled\n");
      expect(await findings()).toEqual([]);
    });

    test("the delete of the last allowlist disables and removes the units", async () => {
      await sync(web);
      const o = await sync(null);
      expect(o.guard).toMatchObject({ removed: true, failed: [] });
      expect(calls()).toContain(`disable --now ${unit}.timer ${unit}.service ${unit}-firewalld.service`);
      expect(existsSync(join(host.unitDir, `${unit}.service`))).toBe(false);
      expect(existsSync(join(host.unitDir, `${unit}-firewalld.service`))).toBe(false);
      expect(existsSync(join(host.unitDir, `${unit}.timer`))).toBe(false);
      expect(host.has(`enabled.${unit}.timer`)).toBe(false);
    });
  });
});
