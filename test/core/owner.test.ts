/**
 * Owners (provider/core/owner.ts) and how the planner honours them: the owner line's text, its
 * round trip through iptables-save, the standing table (who may take over, hand over or must be
 * refused), and, over real fixture states, that a plan never changes another owner's chain.
 */
import fc from "fast-check";
import {
  chainName,
  ownerComment,
  ownerOf,
  parseFilterTable,
  parseOwnerComment,
  planAllowlist,
  renderChainRules,
  stackOf,
  standing,
  tagOf,
  validateAllowlist,
  type AllowlistSpec,
  type Claim,
  type Owner,
  type Plan,
} from "../../provider/core";
import { loadCase } from "./support/fixtures";
import { applyPayload } from "./support/simulate";

type Live = { ipv4: string | null; ipv6: string | null };

function spec(args: object = {}): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, sources: ["198.18.1.0/24"], ...args }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

function apply(live: Live, plan: Plan): Live {
  const out: Live = { ...live };
  for (const f of ["ipv4", "ipv6"] as const) {
    const fp = plan.families[f];
    if (fp !== undefined && live[f] !== null) out[f] = applyPayload(live[f]!, fp.payload, f);
  }
  return out;
}

/** The host after `owner` created `s` on `base`. */
function created(base: Live, s: AllowlistSpec, owner: Owner): Live {
  const plan = planAllowlist(base, s, s.ruleName, { owner, operation: "create" });
  expect(plan.blocked).toBe(false);
  return apply(base, plan);
}

const A = ownerOf("shop/prod", "web", "10.0.0.5", 22)!;
const A_OTHER_VIA = ownerOf("shop/prod", "web", "docker-1.lan", 22)!;
const A_SIBLING = ownerOf("shop/prod", "web-renamed", "10.0.0.5", 22)!;
const B = ownerOf("shop/staging", "web", "10.0.0.5", 22)!;

describe("ownerOf", () => {
  it("names project/stack/resource and host:port", () => {
    expect(A).toEqual({ name: "shop/prod/web", via: "10.0.0.5:22" });
    expect(ownerOf("p/s", "r", "2001:db8::5", 2222)).toEqual({ name: "p/s/r", via: "2001:db8::5:2222" });
  });

  it("is undefined for state written before owners existed (no stack)", () => {
    expect(ownerOf(undefined, "web", "h", 22)).toBeUndefined();
    expect(ownerOf("", "web", "h", 22)).toBeUndefined();
  });

  it("keeps names in an alphabet that needs no quoting, and apart by a hash when it rewrites them", () => {
    const spaced = ownerOf("my project/dev", 'web "one"', "h", 22)!;
    const other = ownerOf("my project/dev", 'web "two"', "h", 22)!;
    expect(spaced.name).toMatch(/^[A-Za-z0-9._/:@+~-]+$/);
    expect(spaced.name).not.toEqual(other.name);
    expect(spaced.name.startsWith("my_project/dev/web__one_")).toBe(true);
  });

  it("bounds long names, still unique", () => {
    const long = (c: string) => ownerOf("p/s", c.repeat(400), "h", 22)!.name;
    expect(long("a").length).toBeLessThanOrEqual(160);
    expect(long("a")).not.toEqual(long("b"));
  });

  it("round-trips through the owner comment for any names (property)", () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.string(),
        fc.string({ minLength: 1 }),
        fc.integer({ min: 1, max: 65535 }),
        (st, r, h, p) => {
          const o = ownerOf(`x/${st}`, r, h, p)!;
          expect(parseOwnerComment(ownerComment("dpa:web", o), "dpa:web")).toEqual(o);
          expect(parseOwnerComment(ownerComment("dpa:web", o), "dpa:api")).toBeUndefined();
        },
      ),
    );
  });

  it("stackOf gives project/stack back", () => {
    expect(stackOf(A.name)).toBe("shop/prod");
  });
});

describe("the owner line", () => {
  it("is the chain's last line, with no target, and iptables-save's parse reads it back", () => {
    const lines = renderChainRules(spec(), "ipv4", ["docker0"], A);
    expect(lines.at(-1)).toBe(
      '-A DPA-web -m comment --comment "dpa:web owner=shop/prod/web via=10.0.0.5:22"',
    );
    expect(lines.at(-2)).toMatch(/-j DROP$/);
    const table = parseFilterTable(
      ["*filter", ":DPA-web - [0:0]", ...lines, "COMMIT", ""].join("\n"),
      "ipv4",
    );
    const rule = table.chains.find((c) => c.name === "DPA-web")!.rules.at(-1)!;
    expect(rule.target).toBeUndefined();
    expect(parseOwnerComment(rule.comment, tagOf("web"))).toEqual(A);
  });
});

describe("standing", () => {
  const claim = (owner: Owner | undefined, operation: Claim["operation"], previous?: string): Claim =>
    previous === undefined ? { owner, operation } : { owner, operation, previous };

  test.each<[string, Owner | undefined, Claim, string]>([
    ["no owner line: anyone may act", undefined, claim(A, "update"), "own"],
    ["own chain", A, claim(A, "update"), "own"],
    ["own chain, delete", A, claim(A, "delete"), "own"],
    ["a replacement (same owner, other connection) takes over", A_OTHER_VIA, claim(A, "create"), "take-over"],
    ["the replaced resource's delete afterwards leaves it", A_OTHER_VIA, claim(A, "delete"), "handed-over"],
    ["a renamed resource of the same stack takes over, warned", A_SIBLING, claim(A, "create"), "take-over"],
    ["its old self's delete afterwards leaves it", A, claim(A_SIBLING, "delete"), "handed-over"],
    [
      "an update takes over what its previous state recorded",
      A_SIBLING,
      claim(A, "update", A_SIBLING.name),
      "take-over",
    ],
    ["an update does not take over a sibling it never was", A_SIBLING, claim(A, "update"), "foreign"],
    ["another stack: create refused", B, claim(A, "create"), "foreign"],
    ["another stack: update refused", B, claim(A, "update"), "foreign"],
    ["another stack: delete refused", B, claim(A, "delete"), "foreign"],
    ["another stack: read reports it", B, claim(A, "read"), "foreign"],
    [
      "state from before owners: a chain with an owner is not its own",
      A,
      claim(undefined, "update"),
      "foreign",
    ],
  ])("%s", (_name, held, c, kind) => {
    expect(standing(held, c).kind).toBe(kind);
  });

  it("warns only when a create takes over from another resource", () => {
    expect(standing(A_SIBLING, claim(A, "create"))).toMatchObject({ kind: "take-over", warn: true });
    expect(standing(A_OTHER_VIA, claim(A, "create"))).toMatchObject({ kind: "take-over", warn: false });
  });
});

describe("the planner and owners", () => {
  const base = loadCase("docker20-fresh").live;
  const web = spec();

  it("writes the owner line, and a plan as the same owner is then empty", () => {
    const host = created(base, web, A);
    expect(host.ipv4).toContain('"dpa:web owner=shop/prod/web via=10.0.0.5:22"');
    const again = planAllowlist(host, web, "web", { owner: A, operation: "update" });
    expect(again.changes).toEqual([]);
    expect(again.inSync).toBe(true);
  });

  it("refuses another stack's chain, naming the holder and the fix, and changes nothing", () => {
    const host = created(base, web, A);
    for (const operation of ["create", "update"] as const) {
      const plan = planAllowlist(host, spec({ sources: ["203.0.113.9/32"] }), "web", { owner: B, operation });
      expect(plan.blocked).toBe(true);
      expect(plan.families).toEqual({});
      const f = plan.findings.find((x) => x.code === "owned-by-another")!;
      expect(f.severity).toBe("error");
      expect(f.message).toContain("held by shop/prod/web (via 10.0.0.5:22)");
      expect(f.message).toContain("another ruleName");
    }
    const del = planAllowlist(host, null, "web", { owner: B, operation: "delete" });
    expect(del.blocked).toBe(true);
    expect(del.families).toEqual({});
    expect(del.findings.find((x) => x.code === "owned-by-another")!.message).toContain("pulumi state delete");
  });

  it("a replacement under another connection takes the chain over; the old one's delete then leaves it", () => {
    const host = created(base, web, A);
    const taken = apply(host, planAllowlist(host, web, "web", { owner: A_OTHER_VIA, operation: "create" }));
    expect(taken.ipv4).toContain(`via=${A_OTHER_VIA.via}"`);
    const del = planAllowlist(taken, null, "web", { owner: A, operation: "delete" });
    expect(del.changes).toEqual([]);
    expect(del.families).toEqual({});
  });

  it("a renamed resource takes over with a warning; the old resource's delete leaves it", () => {
    const host = created(base, web, A);
    const plan = planAllowlist(host, web, "web", { owner: A_SIBLING, operation: "create" });
    expect(plan.blocked).toBe(false);
    expect(plan.findings.map((f) => f.code)).toContain("owner-taken-over");
    const taken = apply(host, plan);
    expect(planAllowlist(taken, null, "web", { owner: A, operation: "delete" }).families).toEqual({});
  });

  it("warns on both sides when two owners police one port", () => {
    const api = spec({ ruleName: "api" });
    const host = created(created(base, web, A), api, B);
    const fromB = planAllowlist(host, api, "api", { owner: B, operation: "update" });
    expect(fromB.findings.filter((f) => f.code === "overlapping-allowlist").map((f) => f.family)).toContain(
      "ipv4",
    );
    expect(fromB.findings.find((f) => f.code === "overlapping-allowlist")!.message).toContain("DPA-web");
    const fromA = planAllowlist(host, web, "web", { owner: A, operation: "read" });
    expect(fromA.findings.find((f) => f.code === "overlapping-allowlist")!.message).toContain("DPA-api");
    // Another port: no overlap.
    const other = created(created(base, web, A), spec({ ruleName: "api", port: 9090 }), B);
    expect(
      planAllowlist(other, web, "web", { owner: A, operation: "read" }).findings.map((f) => f.code),
    ).not.toContain("overlapping-allowlist");
  });

  it("a ruleName change of one resource overlaps only itself while both chains exist: no warning", () => {
    const host = created(base, web, A);
    const renamed = spec({ ruleName: "web2" });
    const plan = planAllowlist(host, renamed, "web2", { owner: A, operation: "create" });
    expect(plan.findings.map((f) => f.code)).not.toContain("overlapping-allowlist");
    // Refresh of the new one before the old one is gone: the chain left under the old name is an orphan.
    const both = apply(host, plan);
    const read = planAllowlist(both, renamed, "web2", { owner: A, operation: "read" });
    expect(read.findings.find((f) => f.code === "orphan-chain")!.message).toContain("DPA-web ");
  });

  it("refresh reports chains of ours without an owner line and chains nothing jumps to", () => {
    const legacy = apply(base, planAllowlist(base, spec({ ruleName: "old", port: 9000 }), "old"));
    const read = planAllowlist(created(legacy, web, A), web, "web", { owner: A, operation: "read" });
    expect(read.findings.find((f) => f.code === "orphan-chain")!.message).toContain(
      "DPA-old has no owner line",
    );
    const inert = legacy
      .ipv4!.split("\n")
      .filter((l) => !(l.includes("-j DPA-old") && !l.startsWith("-A DPA-old")));
    const read2 = planAllowlist(created({ ...legacy, ipv4: inert.join("\n") }, web, A), web, "web", {
      owner: A,
      operation: "read",
    });
    expect(read2.findings.find((f) => f.code === "orphan-chain" && f.family === "ipv4")!.message).toContain(
      "DPA-old has no jump into it",
    );
  });

  it("state from before owners (no claim owner) still manages a chain without owner line", () => {
    const legacy = apply(base, planAllowlist(base, web, "web"));
    const plan = planAllowlist(legacy, spec({ sources: ["198.18.2.0/24"] }), "web", {
      owner: undefined,
      operation: "update",
    });
    expect(plan.blocked).toBe(false);
    expect(plan.changes.length).toBeGreaterThan(0);
  });

  it("never changes another owner's chain, whatever it asks (property)", () => {
    const bases = ["docker20-fresh", "docker20-foreign", "docker28", "in-sync"].map((n) => loadCase(n).live);
    fc.assert(
      fc.property(
        fc.constantFrom(...bases),
        fc.constantFrom("create", "update", "delete", "read") as fc.Arbitrary<Claim["operation"]>,
        fc.boolean(),
        fc.array(
          fc.integer({ min: 0, max: 255 }).map((n) => `198.18.${n}.0/24`),
          { maxLength: 4 },
        ),
        (b, operation, del, sources) => {
          const host = created(b, web, A);
          const desired = del || operation === "delete" ? null : spec({ sources });
          const plan = planAllowlist(host, desired, "web", { owner: B, operation });
          expect(plan.blocked).toBe(true);
          expect(plan.families).toEqual({});
          expect(plan.findings.map((f) => f.code)).toContain("owned-by-another");
          // The holder's chain is intact.
          for (const f of ["ipv4", "ipv6"] as const) {
            if (host[f] === null) continue;
            const t = parseFilterTable(host[f]!, f);
            if (t.chains.some((c) => c.name === chainName("web")))
              expect(t.chains.find((c) => c.name === chainName("web"))!.rules.at(-1)!.comment).toBe(
                ownerComment(tagOf("web"), A),
              );
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
