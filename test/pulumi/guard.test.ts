/**
 * The guard through the provider's lifecycle, over REAL SSH (an ssh2 server on loopback whose
 * execs run the real host scripts on a stub host without systemd): create installs it and says
 * that nothing runs it here; refresh reports a guard whose copy went missing as drift (inSync
 * false), the next update writes the copy back without touching the rules, and destroy removes
 * the guard with the last allowlist.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { check, create, diff, read, remove, update, type Outputs } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { CLIENT_KEY, stubHostOverSsh } from "./support/ssh2-stub";

jest.setTimeout(60_000);

const SAVE4 = readFileSync(
  join(__dirname, "..", "core", "fixtures", "docker28", "iptables-save.v4.txt"),
  "utf8",
);

const env = stubHostOverSsh();

function inputs(): Record<string, unknown> {
  const r = check(
    {},
    {
      resourceName: "web",
      stack: "shop/prod",
      port: 8080,
      sources: ["198.18.1.0/24"],
      ipv6: "off",
      persist: false,
      connection: { host: "127.0.0.1", port: env.server.port, privateKey: CLIENT_KEY },
    },
  );
  if (r.inputs === undefined) throw new Error(JSON.stringify(r.failures));
  return r.inputs;
}

/** SAVE4 with the allowlist created (its owner line names the stub's port): where the create's payload leads. */
function afterCreate(): string {
  const v = validateAllowlist({ ...inputs(), ruleName: "web" }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  const owner = { name: "shop/prod/web", via: `127.0.0.1:${env.server.port}` };
  const plan = planAllowlist({ ipv4: SAVE4, ipv6: null }, v.spec, "web", { owner, operation: "create" });
  return applyPayload(SAVE4, plan.families.ipv4!.payload, "ipv4");
}

test("create installs the guard, refresh finds a lost copy, update writes it back, destroy removes the guard", async () => {
  env.stub.write("save4", SAVE4);
  env.stub.write("next4", afterCreate());
  const created = await create(inputs());
  const outs = created.outs;
  expect(outs.lastOperation).toMatchObject({ roundTrips: 2, applied: true, findings: [] });
  const noSystemd = outs.hostFindings.filter((f) => f.includes("This host has no systemd"));
  expect(noSystemd).toHaveLength(1);
  expect(noSystemd[0]).toMatch(/^\[ipv4\] warning: This host has no systemd, so nothing runs the guard/);
  expect(noSystemd[0]).toContain("(persist is off)");
  const copy = join(env.stub.guardDir, "allowlists", "web.v4");
  expect(readFileSync(copy, "utf8")).toContain("owner=shop/prod/web via=127.0.0.1:");

  const fresh = await read(created.id, outs as unknown as Record<string, unknown>);
  expect(fresh.props.inSync).toBe(true);
  expect(fresh.props.hostFindings).toEqual(outs.hostFindings);

  rmSync(copy);
  const drifted = await read(created.id, fresh.props as unknown as Record<string, unknown>);
  expect(drifted.props.inSync).toBe(false);
  expect(drifted.props.hostFindings.join("\n")).toContain("The guard has no saved copy of this allowlist");
  const props = drifted.props as unknown as Record<string, unknown>;
  expect(diff(props, inputs()).changes).toBe(true);

  const u = await update(created.id, props, inputs());
  expect(u.outs.lastOperation).toMatchObject({ roundTrips: 2, applied: false });
  expect(existsSync(copy)).toBe(true);
  const after = await read(created.id, u.outs as unknown as Record<string, unknown>);
  expect(after.props.inSync).toBe(true);
  expect((after.props as Outputs).hostFindings).toEqual(u.outs.hostFindings);

  env.stub.write("next4", SAVE4);
  await remove(created.id, u.outs as unknown as Record<string, unknown>);
  expect(existsSync(env.stub.guardDir)).toBe(false);
});

test("a guard step that fails: the create succeeds (the rules are live), warns, and leaves the resource off plan for the next up", async () => {
  env.stub.write("save4", SAVE4);
  env.stub.write("next4", afterCreate());
  // A file where the copies' directory should be: nothing can be written there.
  mkdirSync(env.stub.guardDir, { recursive: true });
  writeFileSync(join(env.stub.guardDir, "allowlists"), "");
  const { outs } = await create(inputs());
  expect(outs.lastOperation.applied).toBe(true);
  expect(outs.lastOperation.findings.join("\n")).toContain(
    "[ipv4] warning: The rules are live, but the guard step failed (copy4): the guard's saved copy of this allowlist was removed",
  );
  expect(outs.inSync).toBe(false);
  expect(diff(outs as unknown as Record<string, unknown>, inputs()).changes).toBe(true);
});
