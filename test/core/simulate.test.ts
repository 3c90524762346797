/**
 * The strictness of the restore simulator (test/core/support/simulate.ts) the property and
 * golden tests rely on: it refuses what iptables-restore refuses.
 */
import { applyPayload, SimulatedRestoreError } from "./support/simulate";
import { TABLE } from "./support/fixtures";

describe("applyPayload (the simulator the property tests trust)", () => {
  const base = TABLE(["-A DOCKER-USER -j RETURN"], [":DOCKER-USER - [0:0]", ":DPA-web - [0:0]"]);
  const run = (...lines: string[]) =>
    applyPayload(base, ["*filter", ...lines, "COMMIT", ""].join("\n"), "ipv4");

  it.each([
    ["an insert position past the end", ["-I DOCKER-USER 3 -j DROP"], /index of insertion too big/],
    ["deleting a rule number that does not exist", ["-D DOCKER-USER 2"], /index of deletion too big/],
    ["deleting a rule that does not exist", ["-D DOCKER-USER -j DROP"], /bad rule/],
    ["a jump to a missing chain", ["-A DOCKER-USER -j NOPE"], /neither a target nor a chain/],
    ["deleting a chain still referenced", ["-A DOCKER-USER -j DPA-web", "-X DPA-web"], /still referenced/],
    ["deleting a chain with rules", ["-A DPA-web -j DROP", "-X DPA-web"], /not empty/],
    ["a rule for a missing chain", ["-A NOPE -j DROP"], /does not exist/],
  ])("refuses %s, like iptables-restore", (_name, lines, message) => {
    expect(() => run(...lines)).toThrow(SimulatedRestoreError);
    expect(() => run(...lines)).toThrow(message);
  });

  it("refuses a payload without COMMIT", () => {
    expect(() => applyPayload(base, "*filter\n-A DOCKER-USER -j DROP\n", "ipv4")).toThrow(/no COMMIT/);
  });

  it("flushes a declared user chain but only sets a built-in chain's policy", () => {
    const out = applyPayload(
      TABLE(["-A FORWARD -j DOCKER-USER", "-A DOCKER-USER -j RETURN"]),
      "*filter\n:DOCKER-USER - [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n",
      "ipv4",
    );
    expect(out).toContain(":FORWARD ACCEPT [0:0]");
    expect(out).toContain("-A FORWARD -j DOCKER-USER");
    expect(out).not.toContain("-A DOCKER-USER -j RETURN");
  });

  it("inserts, deletes by number and by spec", () => {
    const out = run(
      "-I DOCKER-USER 1 -s 198.18.0.1 -j DROP",
      "-I DOCKER-USER 2 -s 198.18.0.2/32 -j DROP",
      "-D DOCKER-USER 3",
      "-D DOCKER-USER -s 198.18.0.1/32 -j DROP",
    );
    expect(out.split("\n").filter((l) => l.startsWith("-A"))).toEqual([
      "-A DOCKER-USER -s 198.18.0.2/32 -j DROP",
    ]);
  });
});
