/**
 * Golden fixtures: real `iptables-save` outputs (test/core/fixtures/<case>/) with the expected
 * parse model, findings and plan (human lines + payload) beside them.
 *
 * To rewrite the expected files after an intended change, run
 *   UPDATE_GOLDEN=1 npx jest test/core/golden.test.ts --selectProjects unit
 * and review the diff (git diff test/core/fixtures) before committing.
 */
import { existsSync, readFileSync, unlinkSync, writeFileSync } from "fs";
import { join } from "path";
import { parseFilterTable, planAllowlist, type Plan } from "../../provider/core";
import { applyPayload } from "./support/simulate";
import { caseNames, loadCase } from "./support/fixtures";

const UPDATE = process.env.UPDATE_GOLDEN === "1";

function renderPlan(plan: Plan): string {
  const out = [`inSync: ${plan.inSync}`, `blocked: ${plan.blocked}`, "", "# changes", ...plan.changes];
  for (const family of ["ipv4", "ipv6"] as const) {
    const f = plan.families[family];
    if (f === undefined) continue;
    out.push("", `# payload ${family} (fingerprint ${f.fingerprint})`, f.payload.replace(/\n$/, ""));
  }
  return `${out.join("\n")}\n`;
}

/** Compares `actual` with the golden file, or (UPDATE_GOLDEN=1) rewrites it. null = must not exist. */
function golden(path: string, actual: string | null): void {
  if (UPDATE) {
    if (actual === null) {
      if (existsSync(path)) unlinkSync(path);
    } else {
      writeFileSync(path, actual);
    }
    return;
  }
  if (actual === null) {
    expect(existsSync(path)).toBe(false);
    return;
  }
  if (!existsSync(path))
    throw new Error(`missing golden file ${path}; run with UPDATE_GOLDEN=1 and review it`);
  expect(actual).toEqual(readFileSync(path, "utf8"));
}

const json = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`;

describe.each(caseNames())("fixture %s", (name) => {
  const c = loadCase(name);
  const plan = planAllowlist(c.live, c.desired, c.ruleName);

  it("parses to the expected model", () => {
    golden(
      join(c.dir, "model.json"),
      json({
        ipv4: c.live.ipv4 === null ? null : parseFilterTable(c.live.ipv4, "ipv4"),
        ipv6: c.live.ipv6 === null ? null : parseFilterTable(c.live.ipv6, "ipv6"),
      }),
    );
  });

  it("reports the expected findings", () => {
    golden(join(c.dir, "findings.json"), json(plan.findings));
  });

  it("plans the expected change and payload", () => {
    golden(join(c.dir, "plan.txt"), renderPlan(plan));
    golden(join(c.dir, "payload.v4.txt"), plan.families.ipv4?.payload ?? null);
    golden(join(c.dir, "payload.v6.txt"), plan.families.ipv6?.payload ?? null);
  });

  it("leaves nothing to do once its payload is applied (simulated restore)", () => {
    if (plan.blocked) {
      expect(plan.families).toEqual({});
      return;
    }
    const after = {
      ipv4:
        c.live.ipv4 === null || !plan.families.ipv4
          ? c.live.ipv4
          : applyPayload(c.live.ipv4, plan.families.ipv4.payload, "ipv4"),
      ipv6:
        c.live.ipv6 === null || !plan.families.ipv6
          ? c.live.ipv6
          : applyPayload(c.live.ipv6, plan.families.ipv6.payload, "ipv6"),
    };
    const again = planAllowlist(after, c.desired, c.ruleName);
    expect(again.changes).toEqual([]);
    expect(again.inSync).toBe(true);
  });
});
