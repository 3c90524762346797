/**
 * The fingerprint the planner computes must be what the host computes with awk + sha256sum
 * (docs/DESIGN.md). Runs the exported awk program with the machine's awk (mawk on Debian) and,
 * when present, gawk and busybox awk, over every fixture.
 */
import { execFileSync } from "child_process";
import { createHash } from "crypto";
import { existsSync } from "fs";
import { FINGERPRINT_AWK, fingerprint, fingerprintLines } from "../../provider/core";
import { caseNames, loadCase } from "./support/fixtures";

const AWKS: string[][] = [["awk"]];
for (const gawk of ["/usr/bin/gawk"]) if (existsSync(gawk)) AWKS.push([gawk]);
if (existsSync("/bin/busybox")) AWKS.push(["/bin/busybox", "awk"]);

function hostFingerprint(awk: string[], saveText: string, ruleName: string): string {
  const out = execFileSync(awk[0], [...awk.slice(1), "-v", `chain=DPA-${ruleName}`, FINGERPRINT_AWK], {
    input: saveText,
    encoding: "utf8",
  });
  return createHash("sha256").update(out).digest("hex");
}

const inputs = caseNames().flatMap((name) => {
  const c = loadCase(name);
  return (["ipv4", "ipv6"] as const)
    .filter((f) => c.live[f] !== null)
    .map((f) => [`${name} ${f}`, c.live[f]!, c.ruleName] as const);
});

describe.each(AWKS.map((a) => [a.join(" "), a] as const))("with %s", (_label, awk) => {
  it.each(inputs)("agrees on %s", (_name, text, ruleName) => {
    expect(hostFingerprint(awk, text, ruleName)).toBe(fingerprint(text, ruleName));
  });

  it("agrees on text without a final newline, with leading tabs and counters", () => {
    const text =
      ":DOCKER-USER - [0:0]\n\t-A DOCKER-USER -j RETURN\n[1:2] -A DOCKER-USER -j DROP\n-A DPA-web  -j DROP";
    expect(hostFingerprint(awk, text, "web")).toBe(fingerprint(text, "web"));
  });
});

describe("fingerprint", () => {
  it("covers DOCKER-USER and our chain only, headers without policy or counters", () => {
    const text = [
      "*filter",
      ":FORWARD DROP [10:20]",
      ":DOCKER-USER - [5:6]",
      ":DPA-web - [0:0]",
      ":DPA-webx - [0:0]",
      "-A FORWARD -j DOCKER-USER",
      "-A DOCKER-USER -j RETURN",
      "-A DPA-webx -j DROP",
      "-A DPA-web -j DROP",
      "COMMIT",
    ].join("\n");
    expect(fingerprintLines(text, "web")).toEqual([
      ":DOCKER-USER",
      ":DPA-web",
      "-A DOCKER-USER -j RETURN",
      "-A DPA-web -j DROP",
    ]);
  });

  it("changes when a DOCKER-USER rule moves, and not when counters change", () => {
    const a = ":DOCKER-USER - [0:0]\n-A DOCKER-USER -s 198.18.0.1/32 -j DROP\n-A DOCKER-USER -j RETURN\n";
    const b = ":DOCKER-USER - [0:0]\n-A DOCKER-USER -j RETURN\n-A DOCKER-USER -s 198.18.0.1/32 -j DROP\n";
    expect(fingerprint(a, "web")).not.toBe(fingerprint(b, "web"));
    expect(fingerprint(a.replace("[0:0]", "[7:99]"), "web")).toBe(fingerprint(a, "web"));
  });
});
