/**
 * Large lists in an ipset (provider/core/ipset.ts): the threshold, the lines as `ipset save`
 * prints them, and the planner's set changes (create, swap, destroy, rollback texts), checked by
 * planning again against the state each plan leaves. The real ipset and traffic:
 * test/host/ipset.lab.test.ts.
 */
import { execFileSync } from "child_process";
import fc from "fast-check";
import {
  SET_THRESHOLD,
  liveSetLines,
  parseIpsetSave,
  planAllowlist,
  renderChainRules,
  renderDesiredRules,
  renderSetLines,
  usesSet,
  validateAllowlist,
  verifyApplied,
  type AllowlistSpec,
  type LiveState,
} from "../../provider/core";
import { EXPAND_SETS_AWK } from "../../provider/host/scripts";
import { loadCase } from "./support/fixtures";
import { applyPayload } from "./support/simulate";

const T = '-m comment --comment "dpa:web"';

/** `n` distinct IPv4 sources: /32s from 10.1.0.0 on, then a few /24s. */
function sources(n: number, offset = 0): string[] {
  return Array.from({ length: n }, (_, i) =>
    i % 10 === 9
      ? `10.200.${(i + offset) % 256}.0/24`
      : `10.1.${((i + offset) >> 8) & 255}.${(i + offset) & 255}`,
  );
}

function spec(args: object): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, ...args }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

/** What `ipset save` prints for `lines` (renderSetLines): ipset's parameters added, elements in another order. */
function ipsetSave(lines: readonly string[]): string {
  if (lines.length === 0) return "";
  const [create, ...adds] = lines;
  return (
    [`${create} hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1234abcd`, ...adds.reverse()].join("\n") +
    "\n"
  );
}

/** The host after a plan: each family's payload applied, the sets as the plan leaves them. */
function applied(live: LiveState, s: AllowlistSpec | null): LiveState {
  const plan = planAllowlist(live, s, "web");
  const next = (f: "ipv4" | "ipv6") => {
    const fp = plan.families[f];
    return fp === undefined || live[f] === null ? live[f] : applyPayload(live[f]!, fp.payload, f);
  };
  const sets =
    s === null
      ? ""
      : ipsetSave(usesSet(s, "ipv4") ? renderSetLines(s, "ipv4") : []) +
        ipsetSave(usesSet(s, "ipv6") ? renderSetLines(s, "ipv6") : []);
  return { ipv4: next("ipv4"), ipv6: next("ipv6"), ipsets: sets };
}

const docker = loadCase("docker29").live;
const host: LiveState = { ipv4: docker.ipv4, ipv6: docker.ipv6, ipsets: "" };

describe("the threshold", () => {
  test(`a family takes a set from ${SET_THRESHOLD} sources on, never with a /0`, () => {
    expect(usesSet(spec({ sources: sources(SET_THRESHOLD - 1) }), "ipv4")).toBe(false);
    expect(usesSet(spec({ sources: sources(SET_THRESHOLD) }), "ipv4")).toBe(true);
    expect(usesSet(spec({ sources: [...sources(SET_THRESHOLD)] }), "ipv6")).toBe(false);
    expect(usesSet(spec({ sources: [...sources(SET_THRESHOLD), "0.0.0.0/0"] }), "ipv4")).toBe(false);
  });

  test("one rule matches the set in place of a rule per source; the set lines are ipset save's", () => {
    const s = spec({ sources: [...sources(SET_THRESHOLD - 2), "2001:db8::7", "2001:db8:1::/48"] });
    expect(renderChainRules(s, "ipv4", ["docker0"])).toEqual([
      `-A DPA-web -m conntrack --ctstate RELATED,ESTABLISHED ${T} -j RETURN`,
      `-A DPA-web -i docker0 ${T} -j RETURN`,
      ...[...s.sources.ipv4].map(() => expect.stringMatching(/^-A DPA-web -s \S+ /)),
      `-A DPA-web ${T} -j DROP`,
    ]);
    const big = spec({ sources: [...sources(SET_THRESHOLD), "2001:db8::7"] });
    expect(renderChainRules(big, "ipv4", ["docker0"])).toEqual([
      `-A DPA-web -m conntrack --ctstate RELATED,ESTABLISHED ${T} -j RETURN`,
      `-A DPA-web -i docker0 ${T} -j RETURN`,
      `-A DPA-web -m set --match-set dpa4-web src ${T} -j RETURN`,
      `-A DPA-web ${T} -j DROP`,
    ]);
    const lines = renderSetLines(big, "ipv4");
    expect(lines[0]).toBe("create dpa4-web hash:net family inet");
    expect(lines).toContain("add dpa4-web 10.1.0.0"); // a /32 bare, as ipset save prints it
    expect(lines).toContain("add dpa4-web 10.200.9.0/24");
    expect(lines).toHaveLength(SET_THRESHOLD + 1);
    expect(renderSetLines(big, "ipv6")).toEqual([]);
    // The preview shows the set after the chain.
    expect(renderDesiredRules(big, "ipv4").slice(-lines.length)).toEqual(lines);
  });

  test("a list past ipset's default size names its maxelem", () => {
    const s = spec({
      sources: Array.from({ length: 70000 }, (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`),
    });
    expect(renderSetLines(s, "ipv4")[0]).toBe("create dpa4-web hash:net family inet maxelem 70000");
  });
});

describe("parseIpsetSave and liveSetLines", () => {
  test("ipset's parameters are dropped, elements kept; shown in render order", () => {
    const text =
      "create dpa4-web hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xa3e1963d\n" +
      "add dpa4-web 10.1.0.0/16\nadd dpa4-web 10.0.0.1\ncreate dpa6-web hash:net family inet6 hashsize 1024\n";
    expect(parseIpsetSave(text).get("dpa4-web")).toEqual({
      create: "create dpa4-web hash:net family inet",
      elements: ["10.1.0.0/16", "10.0.0.1"],
    });
    expect(liveSetLines(text, "web", "ipv4")).toEqual([
      "create dpa4-web hash:net family inet",
      "add dpa4-web 10.0.0.1",
      "add dpa4-web 10.1.0.0/16",
    ]);
    expect(liveSetLines(text, "web", "ipv6")).toEqual(["create dpa6-web hash:net family inet6"]);
    expect(liveSetLines(undefined, "web", "ipv4")).toEqual([]);
  });
});

describe("planning with sets", () => {
  const big = spec({ sources: sources(150) });

  test("create: the set is built before the rules (apply), destroyed by a rollback; in sync afterwards", () => {
    const plan = planAllowlist(host, big, "web");
    const sets = plan.families.ipv4!.sets!;
    expect(sets.apply.split("\n")[0]).toBe("create dpa4-web hash:net family inet");
    expect(sets.apply.split("\n").filter((l) => l.startsWith("add dpa4-web "))).toHaveLength(150);
    expect(sets.rollback).toBe("");
    expect(sets.rollbackDrop).toBe("destroy dpa4-web\n");
    expect(plan.changes).toContain(`+ [ipv4] -A DPA-web -m set --match-set dpa4-web src ${T} -j RETURN`);
    expect(plan.changes).toContain("+ [ipv4] create dpa4-web hash:net family inet");
    expect(plan.changes.filter((c) => c.startsWith("+ [ipv4] add dpa4-web "))).toHaveLength(150);
    expect(plan.changes.some((c) => / -s 10\.1\./.test(c))).toBe(false);
    const after = applied(host, big);
    const again = planAllowlist(after, big, "web");
    expect(again.changes).toEqual([]);
    expect(again.inSync).toBe(true);
    expect(verifyApplied(after.ipv4!, big, "web", "ipv4", undefined, after.ipsets)).toEqual([]);
  });

  test("update: only the changed elements are shown; the new list is built aside and swapped in", () => {
    const after = applied(host, big);
    const next = spec({ sources: [...sources(149), "192.0.2.9"] });
    const plan = planAllowlist(after, next, "web");
    expect(plan.changes).toEqual([
      "- [ipv4] add dpa4-web 10.200.149.0/24",
      "+ [ipv4] add dpa4-web 192.0.2.9",
    ]);
    const sets = plan.families.ipv4!.sets!;
    const apply = sets.apply.trim().split("\n");
    expect(apply[0]).toBe("destroy dpa4+web");
    expect(apply[1]).toBe("create dpa4+web hash:net family inet");
    expect(apply.slice(-2)).toEqual(["swap dpa4+web dpa4-web", "destroy dpa4+web"]);
    // The chain is not touched: its payload is an empty transaction.
    expect(plan.families.ipv4!.payload).toBe("*filter\nCOMMIT\n");
    // A rollback builds the old list aside and swaps it back, whatever the apply got to.
    const rb = sets.rollback.trim().split("\n");
    expect(rb.slice(0, 3)).toEqual([
      "destroy dpa4+web",
      "create dpa4-web hash:net family inet",
      "create dpa4+web hash:net family inet",
    ]);
    expect(rb.filter((l) => l.startsWith("add dpa4+web "))).toHaveLength(150);
    expect(rb.slice(-2)).toEqual(["swap dpa4+web dpa4-web", "destroy dpa4+web"]);
    expect(planAllowlist(applied(after, next), next, "web").inSync).toBe(true);
  });

  test("a set changed by hand is drift, a temporary set left by an interrupted run goes", () => {
    const after = applied(host, big);
    const edited = {
      ...after,
      ipsets: after.ipsets + "add dpa4-web 203.0.113.5\ncreate dpa4+web hash:net family inet\n",
    };
    const plan = planAllowlist(edited, big, "web");
    expect(plan.changes).toEqual([
      "- [ipv4] destroy dpa4+web (left by an interrupted run)",
      "- [ipv4] add dpa4-web 203.0.113.5",
    ]);
    const read = planAllowlist(edited, big, "web", { owner: undefined, operation: "read" });
    expect(read.inSync).toBe(false);
  });

  test("below the threshold again: rules per source, the set destroyed after them", () => {
    const after = applied(host, big);
    const small = spec({ sources: sources(SET_THRESHOLD - 1) });
    const plan = planAllowlist(after, small, "web");
    expect(plan.changes).toContain(`- [ipv4] -A DPA-web -m set --match-set dpa4-web src ${T} -j RETURN`);
    expect(plan.changes).toContain("- [ipv4] destroy dpa4-web");
    const sets = plan.families.ipv4!.sets!;
    expect(sets.apply).toBe("");
    expect(sets.drop).toBe("destroy dpa4-web\n");
    // A rollback first puts the set back as read, so the old rule that matches it can return.
    expect(sets.rollback.split("\n")[0]).toBe("create dpa4-web hash:net family inet");
    expect(planAllowlist(applied(after, small), small, "web").inSync).toBe(true);
  });

  test("delete: chain and jumps go, then the set", () => {
    const after = applied(host, big);
    const plan = planAllowlist(after, null, "web");
    expect(plan.families.ipv4!.sets!.drop).toBe("destroy dpa4-web\n");
    expect(plan.changes.filter((c) => c.startsWith("- [ipv4]")).at(-1)).toBe("- [ipv4] destroy dpa4-web");
    expect(planAllowlist(applied(after, null), null, "web").inSync).toBe(true);
  });

  test("a host without ipset keeps the rules per source and says what that costs", () => {
    const noIpset: LiveState = { ipv4: docker.ipv4, ipv6: docker.ipv6 };
    const plan = planAllowlist(noIpset, big, "web");
    expect(plan.changes.filter((c) => c.startsWith("+ [ipv4] -A DPA-web -s "))).toHaveLength(150);
    expect(plan.families.ipv4!.sets).toBeUndefined();
    const w = plan.findings.find((f) => f.code === "ipset-unavailable");
    expect(w?.severity).toBe("warning");
    expect(w?.message).toMatch(/150 ipv4 sources.*apt-get install ipset/);
  });

  test("property: any list size, created then changed, is in sync after each step", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: SET_THRESHOLD - 3, max: SET_THRESHOLD + 3 }),
        fc.integer({ min: SET_THRESHOLD - 3, max: SET_THRESHOLD + 3 }),
        fc.integer({ min: 0, max: 50 }),
        (n1, n2, shift) => {
          const a = spec({ sources: sources(n1) });
          const b = spec({ sources: sources(n2, shift) });
          const s1 = applied(host, a);
          expect(planAllowlist(s1, a, "web").inSync).toBe(true);
          const s2 = applied(s1, b);
          expect(planAllowlist(s2, b, "web").inSync).toBe(true);
          const s3 = applied(s2, null);
          expect(planAllowlist(s3, null, "web").inSync).toBe(true);
          expect(s3.ipv4).not.toMatch(/dpa4-web|DPA-web/);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe("EXPAND_SETS_AWK (the rules files)", () => {
  const save =
    "create dpa4-web hash:net family inet hashsize 1024\nadd dpa4-web 10.0.0.1\nadd dpa4-web 10.1.0.0/16\n" +
    "create dpa4-empty hash:net family inet\ncreate theirs hash:net family inet\nadd theirs 192.0.2.1\n";
  const rules = [
    "*filter",
    ":DPA-web - [0:0]",
    `-A DPA-web -m set --match-set dpa4-web src ${T} -j RETURN`,
    '-A DPA-empty -m set --match-set dpa4-empty src -m comment --comment "dpa:empty" -j RETURN',
    "-A INPUT -m set --match-set theirs src -j ACCEPT",
    "COMMIT",
  ];
  test.each(["mawk", "busybox"])("%s writes our set rules out one per source, nothing else", (awk) => {
    const dir = execFileSync("mktemp", ["-d"], { encoding: "utf8" }).trim();
    try {
      execFileSync("sh", ["-c", `cat > ${dir}/sets`], { input: save });
      const argv = [EXPAND_SETS_AWK, `${dir}/sets`, "phase=rules", "-"];
      const out = execFileSync(
        awk === "busybox" ? "busybox" : awk,
        awk === "busybox" ? ["awk", ...argv] : argv,
        {
          input: rules.join("\n") + "\n",
          encoding: "utf8",
        },
      );
      expect(out.trim().split("\n")).toEqual([
        "*filter",
        ":DPA-web - [0:0]",
        `-A DPA-web -s 10.0.0.1 ${T} -j RETURN`,
        `-A DPA-web -s 10.1.0.0/16 ${T} -j RETURN`,
        "-A INPUT -m set --match-set theirs src -j ACCEPT",
        "COMMIT",
      ]);
    } finally {
      execFileSync("rm", ["-rf", dir]);
    }
  });
});
