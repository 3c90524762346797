import * as fc from "fast-check";

import { FleetError, planRollout, type RolloutArgs } from "../provider/fleet";

const hosts = (n: number) => Array.from({ length: n }, (_, i) => `h${i + 1}`);

describe("planRollout", () => {
  it.each<[string, string[], RolloutArgs | undefined, string[][]]>([
    ["no rollout: everything at once", hosts(4), undefined, [["h1", "h2", "h3", "h4"]]],
    ["batches of two", hosts(5), { batchSize: 2 }, [["h1", "h2"], ["h3", "h4"], ["h5"]]],
    [
      "one canary by name, then pairs",
      hosts(5),
      { canaries: ["h3"], batchSize: 2 },
      [["h3"], ["h1", "h2"], ["h4", "h5"]],
    ],
    [
      "canaries keep host order",
      hosts(4),
      { canaries: ["h4", "h2"] },
      [
        ["h2", "h4"],
        ["h1", "h3"],
      ],
    ],
    [
      "the first two hosts as canaries",
      hosts(4),
      { canaries: 2, batchSize: 1 },
      [["h1", "h2"], ["h3"], ["h4"]],
    ],
    ["every host a canary", hosts(2), { canaries: 2 }, [["h1", "h2"]]],
    ["zero canaries", hosts(2), { canaries: 0 }, [["h1", "h2"]]],
    ["no hosts", [], { batchSize: 3 }, []],
  ])("plans %s", (_what, names, rollout, expected) => {
    expect(planRollout(names, rollout)).toEqual(expected);
  });

  it.each<[string, string[], RolloutArgs, string]>([
    [
      "duplicate host names",
      ["a", "b", "a"],
      {},
      'host name "a" appears twice in hosts; every host needs a unique name. Rename one of them (names are used in resource names and in rollout.canaries).',
    ],
    [
      "an unknown canary",
      ["a", "b"],
      { canaries: ["c"] },
      'rollout.canaries names "c", which is not a host of this fleet; known hosts: a, b. Use one of those names.',
    ],
    [
      "a canary listed twice",
      ["a", "b"],
      { canaries: ["a", "a"] },
      'rollout.canaries lists "a" twice; list each canary host once.',
    ],
    [
      "too many canaries",
      ["a"],
      { canaries: 2 },
      'rollout.canaries is 2; as a number it means "the first N hosts" and must be a whole number from 0 to 1 (the number of hosts). Or list host names instead.',
    ],
    [
      "a fractional batch size",
      ["a"],
      { batchSize: 1.5 },
      "rollout.batchSize is 1.5; it must be a whole number of hosts, 1 or more. Leave it unset to change all non-canary hosts in one batch.",
    ],
  ])("refuses %s with a FleetError that says how to fix it", (_what, names, rollout, message) => {
    expect(() => planRollout(names, rollout)).toThrow(new FleetError(message));
  });

  // Arbitrary fleets: unique host names, canaries as a subset (by name) or a count, any batch size.
  const fleet = fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/), { maxLength: 40 }).chain((names) =>
    fc.record({
      names: fc.constant(names),
      canaries: fc.oneof(
        fc.constant(undefined),
        fc.integer({ min: 0, max: names.length }),
        fc.subarray(names).chain((s) => fc.shuffledSubarray(s, { minLength: s.length })),
      ),
      batchSize: fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined }),
    }),
  );

  const canaryNames = (names: string[], c: RolloutArgs["canaries"]): string[] =>
    c === undefined ? [] : typeof c === "number" ? names.slice(0, c) : names.filter((n) => c.includes(n));

  it("puts every host in exactly one batch and leaves no batch empty", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const flat = batches.flat();
        expect([...flat].sort()).toEqual([...names].sort());
        expect(new Set(flat).size).toBe(flat.length);
        for (const b of batches) expect(b.length).toBeGreaterThan(0);
      }),
    );
  });

  it("runs the canaries first, alone, in host order", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const expected = canaryNames(names, canaries);
        if (expected.length === 0) return;
        expect(batches[0]).toEqual(expected);
      }),
    );
  });

  it("respects the batch size: full batches, only the last may be smaller", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const rest = canaryNames(names, canaries).length > 0 ? batches.slice(1) : batches;
        const size = batchSize ?? rest.flat().length;
        rest.forEach((b, i) => {
          if (i < rest.length - 1) expect(b.length).toBe(size);
          else expect(b.length).toBeLessThanOrEqual(size);
        });
      }),
    );
  });

  it("keeps the hosts' list order and gives the same answer every time", () => {
    fc.assert(
      fc.property(fleet, ({ names, canaries, batchSize }) => {
        const batches = planRollout(names, { canaries, batchSize });
        const canary = new Set(canaryNames(names, canaries));
        const rest = batches.flat().filter((h) => !canary.has(h));
        expect(rest).toEqual(names.filter((n) => !canary.has(n)));
        expect(planRollout([...names], { canaries, batchSize })).toEqual(batches);
      }),
    );
  });
});
