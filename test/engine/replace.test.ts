/**
 * Replacements never open the port, and owners keep stacks apart (issue 8, items 2 and 3),
 * through the REAL Pulumi CLI against a REAL Docker host, judged by real traffic: a client that
 * must stay out knocks on the published port every 100 ms (lab/watch.ts) through every
 * replacement Pulumi can make of an allowlist (a ruleName change, a renamed resource, the same
 * host reached under another address) and through a replacement whose create fails half way
 * (rules applied, their save failed); not one knock may get in. Then a second stack that
 * declares the same ruleName on the host is refused by name, and changes nothing.
 *
 * Before: `diff` asked for delete-before-replace, so the port was open to everyone between the
 * delete and the create (and stayed open when the create failed); and any stack rewrote or
 * deleted any other's chain of the same name.
 */
import { startLab, type Lab, type LabHost } from "../../lab";
import { watchPort, type Watch } from "../../lab/watch";
import { allowlistProject, buildPackage, PulumiCommandError, PulumiProject } from "./support";

jest.setTimeout(900_000);

let lab: Lab;
let h: LabHost;
let proj: PulumiProject;
let other: PulumiProject | undefined;
let watch: Watch | undefined;
let packageDir: string;

interface Declared {
  readonly name: string;
  readonly args: Record<string, unknown>;
}

function declare(name: string, args: Record<string, unknown> = {}): string {
  const [allowed] = lab.clients;
  const d: Declared = {
    name,
    args: { connection: { host: h.ipv4, hostKey: h.hostKey }, port: 8080, sources: [allowed.ipv4], ...args },
  };
  return JSON.stringify([d]);
}

/** `-A DPA-*` chain names and owner lines in iptables-save, in order. */
async function chains(): Promise<{ names: string[]; owners: string[] }> {
  const r = await lab.hostExec(h, "iptables-save -t filter");
  expect(r.code).toBe(0);
  const names = [...r.stdout.matchAll(/^:(DPA-\S+)/gm)].map((m) => m[1]);
  const owners = [...r.stdout.matchAll(/--comment "(dpa:\S+ owner=\S+ via=\S+)"/g)].map((m) => m[1]);
  return { names, owners };
}

beforeAll(async () => {
  packageDir = buildPackage();
  lab = await startLab({ docker: 1, light: 0, clients: 2, ipv6: true, dockerIpv6: false });
  h = lab.hosts[0];
  proj = await allowlistProject(lab, packageDir, declare("web"), { projectName: "shop", stack: "prod" });
});

afterAll(async () => {
  await watch?.stop().catch(() => undefined);
  await other?.dispose();
  await proj?.dispose();
  await lab?.down();
});

test("up: the allowed client gets in, the other is kept out, and the chain names its owner", async () => {
  const [allowed, outsider] = lab.clients;
  await proj.up();
  expect(await lab.probe(allowed, h, 8080, "tcp", 4)).toBe(true);
  expect(await lab.probe(outsider, h, 8080, "tcp", 4)).toBe(false);
  expect(await chains()).toEqual({
    names: ["DPA-web"],
    owners: [`dpa:web owner=shop/prod/web via=${h.ipv4}:22`],
  });
  watch = await watchPort(outsider, h.ipv4, 8080);
});

test("a ruleName change creates the new chain before the old one goes", async () => {
  await proj.setConfig("allowlists", declare("web", { ruleName: "web2" }));
  const preview = await proj.preview();
  expect(preview.stdout).toMatch(/\+-\S+: \(replace\)/);
  const up = await proj.up();
  // The engine's order, as it reports it: the replacement is created, then the old one deleted.
  expect(up.stdout).toMatch(/created replacement[\s\S]*deleted original/);
  expect(await chains()).toEqual({
    names: ["DPA-web2"],
    owners: [`dpa:web2 owner=shop/prod/web via=${h.ipv4}:22`],
  });
});

test("a renamed resource (same ruleName) takes the chain over; the old resource's delete leaves it", async () => {
  await proj.setConfig("allowlists", declare("site", { ruleName: "web2" }));
  const up = await proj.up();
  expect(up.stdout + up.stderr).toContain("takes it over");
  expect(await chains()).toEqual({
    names: ["DPA-web2"],
    owners: [`dpa:web2 owner=shop/prod/site via=${h.ipv4}:22`],
  });
});

test("the same host under another address: the replacement takes over, the old delete leaves it", async () => {
  await proj.setConfig(
    "allowlists",
    declare("site", { ruleName: "web2", connection: { host: h.ipv6, hostKey: h.hostKey } }),
  );
  await proj.up();
  expect(await chains()).toEqual({
    names: ["DPA-web2"],
    owners: [`dpa:web2 owner=shop/prod/site via=${h.ipv6}:22`],
  });
});

test("a replacement whose create fails half way (applied, save failed) leaves the port policed", async () => {
  await proj.setConfig(
    "allowlists",
    declare("site", { ruleName: "web3", rulesV4Path: "/etc/iptables/missing-dir/rules.v4" }),
  );
  const failed = await proj.up([], { check: false });
  expect(failed.code).not.toBe(0);
  expect(failed.stdout + failed.stderr).toContain("saving them for reboots failed");
  // Both chains police the port; the old one was never deleted.
  expect((await chains()).names.sort()).toEqual(["DPA-web2", "DPA-web3"]);
  // Fixed: the next up saves and removes the old allowlist.
  await proj.setConfig("allowlists", declare("site", { ruleName: "web3" }));
  await proj.up();
  expect((await chains()).names).toEqual(["DPA-web3"]);
});

test("not one knock of the outsider got in through all of it; the allowed client still does", async () => {
  const result = await watch!.stop();
  watch = undefined;
  process.stdout.write(`outsider knocks during the replacements: ${JSON.stringify(result)}\n`);
  expect(result.attempts).toBeGreaterThan(50);
  expect(result).toMatchObject({ opened: 0, openedAt: [] });
  expect(await lab.probe(lab.clients[0], h, 8080, "tcp", 4)).toBe(true);
});

test("another stack using the same ruleName on the host is refused by name and changes nothing", async () => {
  const [, outsider] = lab.clients;
  const rules = async () =>
    (await lab.hostExec(h, "iptables-save -t filter")).stdout
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .map((l) => l.replace(/ \[\d+:\d+\]$/, ""));
  const before = await rules();
  other = await allowlistProject(
    lab,
    packageDir,
    JSON.stringify([
      {
        name: "intruder",
        args: {
          connection: { host: h.ipv4, hostKey: h.hostKey },
          port: 8080,
          ruleName: "web3",
          sources: [outsider.ipv4],
        },
      },
    ]),
    { projectName: "shop", stack: "staging" },
  );
  let err: unknown;
  try {
    await other.up();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(PulumiCommandError);
  const out = (err as PulumiCommandError).result.stdout;
  expect(out).toContain(`iptables chain DPA-web3 on this host is held by shop/prod/site (via ${h.ipv4}:22)`);
  expect(out).toContain("Give this allowlist another ruleName");
  expect(await rules()).toEqual(before);
  expect(await lab.probe(outsider, h, 8080, "tcp", 4)).toBe(false);
  // Its destroy has nothing of its own to remove, and removes nothing of the other stack's.
  await other.destroy();
  expect((await chains()).names).toEqual(["DPA-web3"]);
});

test("destroy removes every chain of the stack", async () => {
  await proj.destroy();
  expect((await chains()).names).toEqual([]);
  expect(await lab.probe(lab.clients[1], h, 8080, "tcp", 4)).toBe(true);
});
