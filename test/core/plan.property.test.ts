/**
 * Properties of the planner, over real fixture states plus random foreign rules, random
 * earlier versions of the allowlist and random specs (fast-check):
 * - applying a plan (simulated iptables-restore) converges: planning again is empty;
 * - foreign rules survive every plan, creation and deletion alike, in their order (also in
 *   INPUT, where the docker-proxy jumps live beside ufw-like jumps and plain rules);
 * - deleting after creating leaves DOCKER-USER, FORWARD and INPUT as they were;
 * - the order and duplication of declared sources do not change the plan;
 * - rendered rules parse back to themselves;
 * - the conntrack policy a plan carries (computed from the spec) is what the state after the
 *   apply implies (read back from it, as production did before the plan carried it);
 * - the rollback sent with a plan gives DOCKER-USER, INPUT and our chain back as they were.
 * The real-iptables counterpart is restore.lab.test.ts.
 */
import fc from "fast-check";
import {
  canonicalRule,
  conntrackPolicy,
  dockerBridges,
  getChain,
  FORWARD_TAG,
  parseFilterTable,
  planAllowlist,
  renderDesiredRules,
  renderRollback,
  tagOf,
  chainName,
  validateAllowlist,
  type AllowlistSpec,
  type Family,
  type Plan,
} from "../../provider/core";
import { loadCase } from "./support/fixtures";
import { applyPayload, SimulatedRestoreError } from "./support/simulate";

type Live = { ipv4: string | null; ipv6: string | null };

const BASES = [
  "docker20-fresh",
  "docker20-foreign",
  "docker28",
  "docker29",
  "docker20-usernets",
  "docker28-usernets",
  "docker29-usernets",
  "fail-open-missing",
  "fail-open-not-first",
  "damaged-duplicated",
  "foreign-precedes-jump",
  "in-sync",
  "hand-quirks",
  "legacy-backend",
  "ipv6-input-only",
].map((n) => loadCase(n).live);

const v4 = fc
  .tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 32 }))
  .map(([a, b, p]) => `198.${18 + (a % 2)}.${b}.${a}/${p}`);
const v6 = fc
  .tuple(
    fc.integer({ min: 0, max: 0xffff }),
    fc.integer({ min: 0, max: 0xffff }),
    fc.integer({ min: 0, max: 128 }),
  )
  .map(([a, b, p]) => `2001:db8:${a.toString(16)}::${b.toString(16)}/${p}`);

const argsArb = fc.record({
  port: fc.oneof(
    fc.integer({ min: 1, max: 65535 }),
    fc
      .tuple(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 0, max: 100 }))
      .map(([a, d]) => `${a}-${Math.min(65535, a + d)}`),
  ),
  protocols: fc.subarray(["tcp", "udp"], { minLength: 1 }),
  sources: fc.array(fc.oneof(v4, v6), { maxLength: 8 }),
  action: fc.constantFrom("DROP", "REJECT"),
  exemptDockerBridges: fc.boolean(),
  ipv6: fc.constantFrom("auto", "off"),
  ruleName: fc.constantFrom("web", "api", "x_1"),
});

/** Docker bridge names as `dockerBridges` returns them: valid names, sorted, no duplicates. */
const bridgesArb = fc
  .uniqueArray(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/), { maxLength: 4 })
  .map((names) => [...names].sort());

function toSpec(args: object): AllowlistSpec {
  const v = validateAllowlist(args, "prop");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

/**
 * Foreign rules someone else added: at the top or bottom of DOCKER-USER, FORWARD or INPUT, as
 * plain rules or (INPUT) as ufw-like jumps into a chain of their own.
 */
const noiseArb = fc.array(
  fc.tuple(
    fc.constantFrom(
      "-I DOCKER-USER 1",
      "-A DOCKER-USER",
      "-A FORWARD",
      "-I FORWARD 1",
      "-I INPUT 1",
      "-A INPUT",
    ),
    v4,
    fc.constantFrom("DROP", "ACCEPT", "RETURN", "ufw-before-input"),
  ),
  { maxLength: 5 },
);

function applyPlan(live: Live, plan: Plan): Live {
  const out: Live = { ...live };
  for (const f of ["ipv4", "ipv6"] as const) {
    const fp = plan.families[f];
    if (fp !== undefined && live[f] !== null) out[f] = applyPayload(live[f]!, fp.payload, f);
  }
  return out;
}

function addNoise(live: Live, noise: [string, string, string][]): Live {
  const out: Live = { ...live };
  for (const family of ["ipv4", "ipv6"] as const) {
    const text = live[family];
    if (text === null || noise.length === 0) continue;
    // Only where the chain exists; a host without DOCKER-USER has no place for such rules.
    const rules = noise.filter(([where]) => !where.includes("DOCKER-USER") || text.includes(":DOCKER-USER "));
    if (rules.length === 0) continue;
    const ufw = rules.some(([, , target]) => target === "ufw-before-input")
      ? [":ufw-before-input - [0:0]"]
      : [];
    // The same foreign rules in both families; IPv6 ones with a source of that family.
    const source = (v: string) =>
      family === "ipv4" ? v : `2001:db8:${v.split(".")[2]}::/${v.split("/")[1]}`;
    const lines = rules.map(([where, src, target]) =>
      target === "ufw-before-input" && !where.includes("INPUT")
        ? `${where} -s ${source(src)} -j DROP`
        : `${where} -s ${source(src)} -j ${target}`,
    );
    out[family] = applyPayload(text, ["*filter", ...ufw, ...lines, "COMMIT", ""].join("\n"), family);
  }
  return out;
}

/** Rules that belong to nobody we know, per chain, canonical and in order. */
function foreign(text: string | null, family: Family, ruleName: string): Record<string, string[]> {
  if (text === null) return {};
  const out: Record<string, string[]> = {};
  for (const c of parseFilterTable(text, family).chains) {
    if (c.name === chainName(ruleName)) continue;
    out[c.name] = c.rules
      .filter((r) => r.comment !== tagOf(ruleName) && r.comment !== FORWARD_TAG)
      .map((r) => r.canonical);
  }
  return out;
}

const scenario = fc.record({
  base: fc.constantFrom(...BASES),
  noise: noiseArb,
  earlier: fc.option(argsArb, { nil: undefined }),
  args: argsArb,
});

/** argsArb, sometimes limited to an original destination (and then to its family's sources). */
const withDestinationArb = fc
  .tuple(argsArb, fc.option(fc.constantFrom("198.18.0.10", "2001:db8::10"), { nil: undefined }))
  .map(([args, dst]) => {
    if (dst === undefined) return args;
    const v6 = dst.includes(":");
    return {
      ...args,
      originalDestination: dst,
      sources: args.sources.filter((s) => s.includes(":") === v6),
      ipv6: v6 ? "auto" : args.ipv6,
    };
  });

function setUp(s: {
  base: Live;
  noise: [string, string, string][];
  earlier?: object;
  args: { ruleName: string };
}): {
  state: Live;
  spec: AllowlistSpec;
} {
  const spec = toSpec(s.args);
  let state = addNoise(s.base, s.noise);
  if (s.earlier !== undefined) {
    // An earlier version of the same allowlist is already on the host.
    const earlier = toSpec({ ...s.earlier, ruleName: s.args.ruleName });
    const plan = planAllowlist(state, earlier, earlier.ruleName);
    if (!plan.blocked) state = applyPlan(state, plan);
  }
  return { state, spec };
}

describe("planner properties", () => {
  it("converges: after applying a plan, planning again is empty", () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const { state, spec } = setUp(s);
        const plan = planAllowlist(state, spec, spec.ruleName);
        fc.pre(!plan.blocked);
        const after = applyPlan(state, plan);
        const again = planAllowlist(after, spec, spec.ruleName);
        expect(again.changes).toEqual([]);
        expect(again.inSync).toBe(true);
        expect(again.families).toEqual({});
      }),
      { numRuns: 300 },
    );
  });

  it("never touches foreign rules, on create, update or delete", () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const { state, spec } = setUp(s);
        const plan = planAllowlist(state, spec, spec.ruleName);
        fc.pre(!plan.blocked);
        const after = applyPlan(state, plan);
        const gone = applyPlan(after, planAllowlist(after, null, spec.ruleName));
        for (const f of ["ipv4", "ipv6"] as const) {
          const before = foreign(state[f], f, spec.ruleName);
          for (const next of [foreign(after[f], f, spec.ruleName), foreign(gone[f], f, spec.ruleName)]) {
            for (const [chain, rules] of Object.entries(before))
              expect([chain, next[chain] ?? []]).toEqual([chain, rules]);
          }
          expect(gone[f] ?? "").not.toContain(`"${tagOf(spec.ruleName)}"`);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("keeps a foreign rule inserted at the top of DOCKER-USER or INPUT between the read and the apply, through the payload and its rollback", () => {
    fc.assert(
      fc.property(scenario, fc.constantFrom("DOCKER-USER", "INPUT"), fc.boolean(), (s, chain, del) => {
        const { state, spec } = setUp(s);
        const plan = planAllowlist(state, spec, spec.ruleName);
        fc.pre(!plan.blocked);
        const from = del ? applyPlan(state, plan) : state;
        const p = del ? planAllowlist(from, null, spec.ruleName) : plan;
        for (const f of ["ipv4", "ipv6"] as const) {
          const fp = p.families[f];
          if (fp === undefined || !from[f]!.includes(`:${chain} `)) continue;
          const src = f === "ipv4" ? "203.0.113.9/32" : "2001:db8:ffff::9/128";
          const racer = `-A ${chain} -s ${src} -j DROP`;
          const raced = applyPayload(from[f]!, `*filter\n-I ${chain} 1 -s ${src} -j DROP\nCOMMIT\n`, f);
          let applied: string;
          try {
            applied = applyPayload(raced, fp.payload, f);
          } catch (err) {
            // The racer in a chain the payload deletes (DOCKER-USER we made): the whole restore
            // fails, atomically, and the host keeps everything, the racer included.
            expect(err).toBeInstanceOf(SimulatedRestoreError);
            continue;
          }
          expect(applied.split("\n")).toContain(racer);
          const undone = applyPayload(applied, renderRollback(from[f]!, fp.payload, spec.ruleName, f), f);
          expect(undone.split("\n")).toContain(racer);
        }
      }),
      { numRuns: 200 },
    );
  });

  it("deleting after creating leaves DOCKER-USER, FORWARD and INPUT exactly as they were", () => {
    fc.assert(
      fc.property(fc.constantFrom(...BASES), noiseArb, argsArb, (base, noise, args) => {
        const spec = toSpec(args);
        const state = addNoise(base, noise);
        for (const f of ["ipv4", "ipv6"] as const) {
          // Only from states where this allowlist is absent and FORWARD already reaches DOCKER-USER.
          fc.pre(
            state[f] === null ||
              !parseFilterTable(state[f]!, f).chains.some((c) =>
                c.rules.some((r) => r.comment === tagOf(spec.ruleName)),
              ),
          );
        }
        const plan = planAllowlist(state, spec, spec.ruleName);
        fc.pre(!plan.blocked && !plan.changes.some((c) => c.includes("-I FORWARD 1")));
        const after = applyPlan(state, plan);
        const gone = applyPlan(after, planAllowlist(after, null, spec.ruleName));
        for (const f of ["ipv4", "ipv6"] as const) {
          if (state[f] === null) continue;
          const pick = (text: string) =>
            parseFilterTable(text, f)
              .chains.filter((c) => ["DOCKER-USER", "FORWARD", "INPUT"].includes(c.name))
              .map((c) => [c.name, c.rules.map((r) => r.canonical)]);
          expect(pick(gone[f]!)).toEqual(pick(state[f]!));
        }
      }),
      { numRuns: 200 },
    );
  });

  it("gives the same plan whatever the order and duplication of sources", () => {
    fc.assert(
      fc.property(scenario, fc.array(fc.nat()), (s, shuffleKeys) => {
        const { state, spec } = setUp(s);
        const sources = [...s.args.sources];
        const shuffled = sources
          .map((src, i) => [shuffleKeys[i] ?? i, src] as const)
          .sort((a, b) => a[0] - b[0])
          .map(([, src]) => src);
        const other = toSpec({ ...s.args, sources: [...shuffled, ...sources.slice(0, 3)] });
        expect(planAllowlist(state, other, other.ruleName)).toEqual(
          planAllowlist(state, spec, spec.ruleName),
        );
      }),
      { numRuns: 200 },
    );
  });

  it("exempts exactly Docker's bridges, whatever foreign rules name the host's own bridges", () => {
    fc.assert(
      fc.property(scenario, fc.constantFrom("br-lan", "br-ex", "eth0"), (s, uplink) => {
        const { state, spec } = setUp(s);
        fc.pre(spec.exemptDockerBridges);
        const noisy = addNoise(state, [
          ["-I FORWARD 1", "198.18.0.0/15", "ACCEPT"],
          ["-I INPUT 1", "198.18.0.0/15", "ACCEPT"],
        ]);
        const withUplink: Live = { ...noisy };
        for (const f of ["ipv4", "ipv6"] as const) {
          const text = noisy[f];
          if (text === null) continue;
          withUplink[f] = text.replace(/^(-A (?:FORWARD|INPUT) -s \S+)/gm, `$1 -i ${uplink}`);
        }
        const plan = planAllowlist(withUplink, spec, spec.ruleName);
        fc.pre(!plan.blocked);
        const after = applyPlan(withUplink, plan);
        for (const f of ["ipv4", "ipv6"] as const) {
          const text = after[f];
          if (text === null) continue;
          const table = parseFilterTable(text, f);
          const exempted = (getChain(table, chainName(spec.ruleName))?.rules ?? [])
            .map((r) => r.inInterface?.value)
            .filter((i) => i !== undefined);
          expect(exempted).not.toContain(uplink);
          if (exempted.length > 0) expect(exempted).toEqual(dockerBridges(table));
        }
      }),
      { numRuns: 200 },
    );
  });

  it("renders lines that parse back to themselves", () => {
    fc.assert(
      fc.property(argsArb, fc.constantFrom<Family>("ipv4", "ipv6"), bridgesArb, (args, family, bridges) => {
        const spec = toSpec(args);
        const lines = renderDesiredRules(spec, family, bridges);
        for (const line of lines) expect(canonicalRule(line, family)).toBe(line);
        const text = [
          "*filter",
          ":DOCKER-USER - [0:0]",
          ":INPUT ACCEPT [0:0]",
          `:${chainName(spec.ruleName)} - [0:0]`,
          ...lines,
          "COMMIT",
          "",
        ].join("\n");
        const parsed = parseFilterTable(text, family);
        const rules = parsed.chains.flatMap((c) => c.rules);
        // Rendered: DOCKER-USER jumps, INPUT jumps, our chain; the chain headers above say so too.
        expect(rules.map((r) => r.canonical)).toEqual(lines);
        expect(new Set(rules.map((r) => r.comment))).toEqual(
          new Set(lines.length > 0 ? [tagOf(spec.ruleName)] : []),
        );
        expect(parsed.unparsed).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it("carries the conntrack policy that the state after the apply implies", () => {
    // The plan's lines come from the spec; the oracle reads them back from the simulated state
    // after the apply. Compared as sets: CUT_AWK reads them as one, and a jump inserted above
    // one left in place puts the protocols of the state in another order than the spec's.
    const sorted = (lines: readonly string[]) => [...lines].sort();
    fc.assert(
      fc.property(scenario, withDestinationArb, (s, args) => {
        const { state, spec } = setUp({ ...s, args });
        const plan = planAllowlist(state, spec, spec.ruleName);
        fc.pre(!plan.blocked);
        const after = applyPlan(state, plan);
        const deleted = planAllowlist(after, null, spec.ruleName);
        for (const [from, p] of [
          [state, plan],
          [after, deleted],
        ] as const) {
          for (const f of ["ipv4", "ipv6"] as const) {
            const fp = p.families[f];
            if (fp === undefined) continue;
            const oracle = conntrackPolicy(applyPayload(from[f]!, fp.payload, f), spec.ruleName, f);
            expect(sorted(fp.conntrack)).toEqual(sorted(oracle));
          }
        }
        for (const f of ["ipv4", "ipv6"] as const) expect(deleted.families[f]?.conntrack ?? []).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it("rolls DOCKER-USER, INPUT and our chain back to the snapshot, on create, update and delete", () => {
    const owned = (text: string, family: Family, ruleName: string) =>
      parseFilterTable(text, family)
        .chains.filter((c) => ["DOCKER-USER", "INPUT", chainName(ruleName)].includes(c.name))
        .map((c) => [c.name, c.rules.map((r) => r.canonical)]);
    fc.assert(
      fc.property(scenario, (s) => {
        const { state, spec } = setUp(s);
        const plan = planAllowlist(state, spec, spec.ruleName);
        fc.pre(!plan.blocked);
        const after = applyPlan(state, plan);
        const deleted = planAllowlist(after, null, spec.ruleName);
        for (const [from, p] of [
          [state, plan],
          [after, deleted],
        ] as const) {
          for (const f of ["ipv4", "ipv6"] as const) {
            const fp = p.families[f];
            if (fp === undefined) continue;
            const applied = applyPayload(from[f]!, fp.payload, f);
            const undone = applyPayload(applied, renderRollback(from[f]!, fp.payload, spec.ruleName, f), f);
            expect(owned(undone, f, spec.ruleName)).toEqual(owned(from[f]!, f, spec.ruleName));
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
