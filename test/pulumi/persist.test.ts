/**
 * The provider's lifecycle on a host that cannot save its rules files, over REAL SSH (an ssh2
 * server on loopback whose execs run the real host scripts on a stub host whose rules directory
 * is mounted read-only): create and update record the live rules as `persisted: false`, and
 * `destroy` still succeeds, because the rules it owns are gone from the live host. What it could
 * not save is a warning on the provider's stderr, which the engine shows (Pulumi's delete returns
 * nothing else).
 */
import { readFileSync, writeFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { HostError } from "../../provider/host";
import { check, create, remove } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { CLIENT_KEY, stubHostOverSsh } from "./support/ssh2-stub";

jest.setTimeout(60_000);

const SAVE4 = readFileSync(
  join(__dirname, "..", "core", "fixtures", "docker29", "iptables-save.v4.txt"),
  "utf8",
);
const OLD = "# the rules saved before\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";

const env = stubHostOverSsh({ etc: "read-only" }, (stub) =>
  writeFileSync(join(stub.root, "etc", "rules.v4"), OLD),
);

/** The checked inputs of the allowlist "web", saved into the stub host's read-only etc/. */
function inputs(): Record<string, unknown> {
  const r = check(
    {},
    {
      resourceName: "web",
      port: 8080,
      sources: ["198.18.1.0/24"],
      ipv6: "off",
      rulesV4Path: join(env.stub.root, "etc", "rules.v4"),
      connection: { host: "127.0.0.1", port: env.server.port, privateKey: CLIENT_KEY },
    },
  );
  if (r.inputs === undefined) throw new Error(JSON.stringify(r.failures));
  return r.inputs;
}

/** SAVE4 with the allowlist applied: what the host holds after a create. */
function withAllowlist(): string {
  const spec = validateAllowlist({ ...inputs(), ruleName: "web" }, "web");
  if (!spec.ok) throw new Error(JSON.stringify(spec.failures));
  return applyPayload(
    SAVE4,
    planAllowlist({ ipv4: SAVE4, ipv6: null }, spec.spec, "web").families.ipv4!.payload,
    "ipv4",
  );
}

test("create on a host that cannot save: the rules are live and the resource is recorded as persisted: false", async () => {
  env.stub.write("save4", SAVE4);
  env.stub.write("next4", withAllowlist());
  let caught: unknown;
  await create(inputs()).catch((err: unknown) => (caught = err));
  const e = caught as Error & { properties?: { persisted?: boolean } };
  expect(e.message).toContain("is on a read-only filesystem. Fix: remount it read-write");
  expect(e.properties?.persisted).toBe(false);
  expect(HostError.isInstance(e.cause) && e.cause.kind).toBe("persist");
  expect(env.stub.read("save4")).toBe(withAllowlist());
});

test("destroy on a host that cannot save succeeds: the rules are gone, the failed save is a warning with the fix", async () => {
  env.stub.write("save4", withAllowlist());
  env.stub.write("next4", SAVE4); // where the delete's payload leads
  await expect(remove("id", inputs())).resolves.toBeUndefined();
  expect(env.stub.read("save4")).toBe(SAVE4);
  const warned = env.stderr.join("");
  expect(warned).toContain(
    'warning: DockerPortAllowlist "web" (delete): the rules were deleted from the live host, but the saved ' +
      "rules could not be updated: a saved copy that still holds them brings them back at the next boot.",
  );
  expect(warned).toContain(
    `${join(env.stub.root, "etc")} is on a read-only filesystem. Fix: remount it read-write`,
  );
  expect(warned).toContain("`netfilter-persistent save` (iptables-persistent)");
  expect(readFileSync(join(env.stub.root, "etc", "rules.v4"), "utf8")).toBe(OLD);

  // A destroy run again (the rules already gone, the file still stale) succeeds the same way.
  env.stderr.length = 0;
  await expect(remove("id", inputs())).resolves.toBeUndefined();
  expect(env.stderr.join("")).toContain("the rules were deleted from the live host");
});

test("destroy still fails when the delete itself fails: only a failed save is forgiven", async () => {
  env.stub.write("save4", withAllowlist());
  env.stub.write("restore4.fail.1", "iptables-restore: Resource busy");
  env.stub.write("next4", SAVE4);
  await expect(remove("id", inputs())).rejects.toThrow("applying the rules failed");
  expect(env.stub.read("save4")).toBe(withAllowlist());
});
