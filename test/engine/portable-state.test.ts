/**
 * Portable state and trust on first use through the REAL Pulumi CLI against a REAL Docker host:
 * a project that installed the package in its own node_modules runs `up`, is moved to another
 * directory (its old path, captured in state, no longer exists), and `refresh` and `destroy` from
 * the new place still work, because the provider finds its implementation by package name from
 * the project directory. The connection pins no host key: `up` records the key it saw, and every
 * operation says from the provider side that the key is not pinned.
 */
import * as fs from "fs";
import * as path from "path";
import { comparableSave, startLab, type Lab, type LabHost } from "../../lab";
import { PulumiProject } from "./support";
import { DOCKER_PORT_ALLOWLIST_TYPE } from "../../provider/pulumi/resource";

jest.setTimeout(900_000);

let lab: Lab;
let proj: PulumiProject;
let h: LabHost;
let before4: string;

const PROGRAM = `import * as pulumi from "@pulumi/pulumi";
import { DockerPortAllowlist } from "docker-port-allowlist";

const config = new pulumi.Config();
const web = new DockerPortAllowlist("web", {
  connection: { host: config.require("host"), privateKey: config.requireSecret("privateKey") },
  port: 8080,
  sources: ["198.18.200.0/24"],
});
export const chain = web.chain;
export const hostKeyFingerprint = web.hostKeyFingerprint;
`;

async function filterTable(): Promise<string> {
  const r = await lab.hostExec(h, "iptables-save -t filter");
  expect(r.code).toBe(0);
  return comparableSave(r.stdout);
}

beforeAll(async () => {
  lab = await startLab({ docker: 1, light: 0, clients: 1 });
  h = lab.hosts[0];
  before4 = await filterTable();
  proj = await PulumiProject.create({
    program: PROGRAM,
    installPackage: true,
    config: { host: h.ipv4, privateKey: { value: lab.clientKey.privateKey, secret: true } },
  });
});

afterAll(async () => {
  await proj?.dispose();
  await lab?.down();
});

describe("state that outlives the project's directory", () => {
  let firstDir: string;

  test("up from the first directory applies, and records the host key it saw (trust on first use)", async () => {
    firstDir = proj.dir;
    const up = await proj.up();
    expect(up.stdout + up.stderr).toContain(`connection.hostKey is not pinned for root@${h.ipv4}:22`);
    expect(await proj.stackOutputs()).toMatchObject({
      chain: "DPA-web",
      hostKeyFingerprint: h.hostKeyFingerprint,
    });
    const [r] = await proj.resources(DOCKER_PORT_ALLOWLIST_TYPE);
    // The serialized provider in state carries the old absolute path (the fallback) ...
    expect(String(r.outputs?.__provider)).toContain(
      path.join(firstDir, "node_modules", "docker-port-allowlist", "bin", "provider", "pulumi"),
    );
    expect(await filterTable()).toContain(":DPA-web");
  });

  test("moved elsewhere, refresh and destroy find the package by name and leave the host clean", async () => {
    const moved = await proj.move();
    expect(fs.existsSync(firstDir)).toBe(false);
    expect(moved).not.toBe(firstDir);

    const refresh = await proj.refresh(["--expect-no-changes"]);
    const refreshText = refresh.stdout + refresh.stderr;
    expect(refreshText).not.toContain("Cannot find module");
    // Said by the provider itself: the program does not run in a refresh.
    expect(refreshText).toContain(`connection.hostKey is not pinned for root@${h.ipv4}:22`);
    expect(refreshText).toContain(h.hostKeyFingerprint);

    const destroy = await proj.destroy();
    expect(destroy.stdout + destroy.stderr).toContain(
      `connection.hostKey is not pinned for root@${h.ipv4}:22`,
    );
    expect(await proj.resources(DOCKER_PORT_ALLOWLIST_TYPE)).toEqual([]);
    const after = await filterTable();
    expect(after).not.toContain("dpa:");
    expect(after).toBe(before4);
  });
});
